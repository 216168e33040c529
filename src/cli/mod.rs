//! The command line: `serve`, `check`, `messages`, and the compliance
//! commands `audit`, `keys`, `retention`, `hold`. Exit codes: 0 success,
//! 64 bad configuration or usage (before any port is bound), 1 runtime
//! failure (for `audit verify`: the log failed verification).

mod compliance;
mod messages;
mod rosters;
mod routing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigErrors};
use crate::journal::{Fate, MessageQuery};

/// Exit code for a configuration or usage error (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Switchboard: HL7 v2 / FHIR clinical alert-routing gateway.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration comes from.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file (default: ./switchboard.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Overrides `[storage] data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Overrides `[mllp] listen`.
        #[arg(long, value_name = "ADDR")]
        mllp: Option<SocketAddr>,
        /// Overrides `[http] listen`.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
    /// Validate the configuration and exit (64 when invalid).
    Check {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List journaled messages (no PHI unless --show-content).
    Messages {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this fate: accepted, filtered, rejected.
        #[arg(long)]
        fate: Option<String>,
        /// Only this configured sender.
        #[arg(long)]
        sender: Option<String>,
        /// Only this MSH-10.
        #[arg(long)]
        control_id: Option<String>,
        /// Only this type: ORU or ORU^R01.
        #[arg(long = "type")]
        message_type: Option<String>,
        /// At most this many (newest first).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Include the raw message (PHI; needs the key-encryption key).
        /// Every message shown is recorded in the audit trail.
        #[arg(long)]
        show_content: bool,
        /// Who is viewing (default: $USER), for the audit trail.
        #[arg(long)]
        by: Option<String>,
    },
    /// The audit trail: verify it, export it.
    Audit {
        /// What to do.
        #[command(subcommand)]
        action: compliance::AuditCommand,
    },
    /// Key-encryption keys: rotate.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: compliance::KeysCommand,
    },
    /// Retention: what is kept, held, due and erased; purge now.
    Retention {
        /// What to do.
        #[command(subcommand)]
        action: compliance::RetentionCommand,
    },
    /// Legal holds: place, release, list.
    Hold {
        /// What to do.
        #[command(subcommand)]
        action: compliance::HoldCommand,
    },
    /// Console-managed rosters: list, export, import, history, retire.
    Rosters {
        /// What to do.
        #[command(subcommand)]
        action: rosters::RostersCommand,
    },
    /// Who is on call for a role (at an instant; default now).
    Oncall {
        /// Role, scope, time, output.
        #[command(flatten)]
        args: routing::OncallArgs,
    },
    /// Show how messages would be routed, without sending or storing anything.
    Route {
        /// Files, time, sender, output.
        #[command(flatten)]
        args: routing::RouteArgs,
    },
}

/// Parses arguments and runs.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init_tracing();
    match cli.command {
        Command::Serve { config, mllp, http } => {
            let mut cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(a) = mllp {
                cfg.mllp.listen = a;
            }
            if let Some(a) = http {
                cfg.http.listen = a;
            }
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("switchboard: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(crate::app::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} sender{}{})",
                    cfg.source.display(),
                    cfg.senders.len(),
                    if cfg.senders.len() == 1 { "" } else { "s" },
                    if cfg.demo { ", DEMO" } else { "" }
                );
                let now = crate::clock::Clock::system().now_utc();
                let horizon = now + chrono::Duration::days(14);
                let console = cfg
                    .rosters
                    .rosters()
                    .iter()
                    .filter(|r| crate::live::is_console(r))
                    .count();
                println!(
                    "rosters: {} ({} from {}, {console} console-managed); mapping rules: {}",
                    cfg.rosters.rosters().len(),
                    cfg.rosters.rosters().len() - console,
                    cfg.rosters_dir.display(),
                    cfg.rules.rules().len()
                );
                let gaps = cfg.rosters.coverage_gaps(now, horizon);
                if gaps.is_empty() {
                    println!("coverage: no gap in the next 14 days");
                }
                for g in &gaps {
                    println!("coverage gap (failsafe will be paged): {g}");
                }
                for d in cfg.rosters.dst_adjustments(now, horizon) {
                    println!("daylight saving: {d}");
                }
                for s in &cfg.senders {
                    if s.return_destination.is_none() {
                        println!(
                            "note: sender `{}` has no return_address: application acknowledgements it asks for (MSH-16) cannot be delivered",
                            s.name
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Messages {
            config,
            json,
            fate,
            sender,
            control_id,
            message_type,
            limit,
            show_content,
            by,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let fate = match fate.as_deref().map(|f| (f, Fate::parse(f))) {
                None => None,
                Some((_, Some(f))) => Some(f),
                Some((f, None)) => {
                    eprintln!("switchboard: unknown fate `{f}` (accepted, filtered, rejected)");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let query = MessageQuery {
                fate,
                sender,
                control_id,
                message_type,
                since: None,
                limit,
                include_raw: show_content,
                viewer: show_content.then(|| crate::journal::Viewer {
                    actor: compliance::actor(by),
                    at: crate::clock::Clock::system().now_utc(),
                }),
            };
            messages::list(&cfg, &query, json)
        }
        Command::Audit { action } => compliance::audit(action),
        Command::Keys { action } => compliance::keys(action),
        Command::Retention { action } => compliance::retention(action),
        Command::Hold { action } => compliance::hold(action),
        Command::Rosters { action } => rosters::run(action),
        Command::Oncall { args } => routing::oncall(args),
        Command::Route { args } => routing::route(args),
    }
}

pub(crate) fn load(arg: &ConfigArg) -> Result<Config, ExitCode> {
    let path = arg
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_FILE));
    if !path.is_file() {
        eprintln!(
            "switchboard: no configuration file at {} — pass --config FILE (the repository's switchboard.toml is a loopback-only demo)",
            path.display()
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    match config::load(&path) {
        Ok(mut c) => {
            if let Some(d) = &arg.data_dir {
                c.storage.data_dir = d.clone();
            }
            Ok(c)
        }
        Err(ConfigErrors(errors)) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "switchboard: {} problem{} in the configuration",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}
