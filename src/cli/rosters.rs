//! `switchboard rosters ...`: console-managed rosters from the command line.
//!
//! `list` shows every roster with who manages it; `export NAME` writes a
//! console-managed roster's current text (to hand it to file management:
//! export, `retire`, then put the file in the roster folder); `import FILE`
//! saves a file's text as a new console-managed revision after validating
//! it with the roster folder, the other console rosters and the mappings;
//! `history NAME` lists the revisions; `retire NAME` ends console
//! management. Changes are audited; a running gateway picks them up on its
//! next reload (SIGHUP, file change or the API).

use std::path::PathBuf;
use std::process::ExitCode;

use super::compliance::{actor, admin};
use super::{ConfigArg, EXIT_CONFIG};
use crate::config::Config;
use crate::journal::{RosterRevision, SqliteStorage, Storage, StorageError};
use crate::live::{is_console, validate};

/// `switchboard rosters` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RostersCommand {
    /// Every roster in force: name, managed by file or console, revision.
    List {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print (or write) a console-managed roster as a file.
    Export {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Roster name.
        name: String,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// This revision instead of the current one.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Save a roster file as a new console-managed revision.
    Import {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// The roster file (its `name` names the roster).
        file: PathBuf,
        /// Why (shown in the history).
        #[arg(long, default_value = "")]
        comment: String,
        /// Who (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Revisions of a console-managed roster.
    History {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Roster name.
        name: String,
    },
    /// End console management of a roster.
    Retire {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Roster name.
        name: String,
        /// Who (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchboard: {e}");
    ExitCode::FAILURE
}

fn current(cfg: &Config) -> Result<Vec<RosterRevision>, StorageError> {
    if !cfg.journal_path().is_file() {
        return Ok(Vec::new());
    }
    SqliteStorage::open_read_only(&cfg.journal_path(), None)?.rosters_current()
}

fn history(cfg: &Config, name: &str) -> Result<Vec<RosterRevision>, StorageError> {
    if !cfg.journal_path().is_file() {
        return Ok(Vec::new());
    }
    SqliteStorage::open_read_only(&cfg.journal_path(), None)?.roster_revisions(name)
}

/// Validates the folders with `console`; prints the errors.
fn check(cfg: &Config, console: &[RosterRevision]) -> Result<crate::live::Candidate, ExitCode> {
    validate(&cfg.rosters_dir, &cfg.mappings_dir, console).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!(
            "switchboard: refused: {} problem{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Runs a `rosters` subcommand.
pub(super) fn run(cmd: RostersCommand) -> ExitCode {
    let (RostersCommand::List { config }
    | RostersCommand::Export { config, .. }
    | RostersCommand::Import { config, .. }
    | RostersCommand::History { config, .. }
    | RostersCommand::Retire { config, .. }) = &cmd;
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let console = match current(&cfg) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match cmd {
        RostersCommand::List { .. } => {
            let set = match check(&cfg, &console) {
                Ok(s) => s,
                Err(code) => return code,
            };
            for r in set.rosters.rosters() {
                if is_console(r) {
                    let rev = set
                        .console
                        .iter()
                        .find(|(n, _)| *n == r.name)
                        .map_or(0, |(_, v)| *v);
                    println!("{}\tconsole\trevision {rev}", r.name);
                } else {
                    println!("{}\tfile\t{}", r.name, r.source.display());
                }
            }
            ExitCode::SUCCESS
        }
        RostersCommand::Export {
            name,
            out,
            revision,
            ..
        } => {
            let text = match revision {
                None => console.into_iter().find(|c| c.name == name).map(|c| c.text),
                Some(v) => match history(&cfg, &name) {
                    Ok(h) => h
                        .into_iter()
                        .find(|c| c.revision == v && !c.retired)
                        .map(|c| c.text),
                    Err(e) => return fail(e),
                },
            };
            let Some(text) = text else {
                return fail(format!(
                    "no console-managed roster `{name}`{}",
                    revision.map_or(String::new(), |v| format!(" at revision {v}"))
                ));
            };
            match out {
                None => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Some(p) => match std::fs::write(&p, text) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(format!("cannot write {}: {e}", p.display())),
                },
            }
        }
        RostersCommand::Import {
            file, comment, by, ..
        } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
            };
            let name = match toml::from_str::<toml::Table>(&text)
                .ok()
                .and_then(|t| t.get("name").and_then(|n| n.as_str()).map(str::to_string))
            {
                Some(n) => n,
                None => {
                    // Let the validator name the line and field.
                    let _ = check(
                        &cfg,
                        &[RosterRevision {
                            name: String::new(),
                            revision: 0,
                            at: chrono::DateTime::UNIX_EPOCH,
                            actor: String::new(),
                            comment: String::new(),
                            retired: false,
                            text,
                        }],
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mut next: Vec<RosterRevision> =
                console.into_iter().filter(|c| c.name != name).collect();
            let now = crate::clock::Clock::system().now_utc();
            let who = actor(by);
            next.push(RosterRevision {
                name: name.clone(),
                revision: 0,
                at: now,
                actor: who.clone(),
                comment: comment.clone(),
                retired: false,
                text: text.clone(),
            });
            if let Err(code) = check(&cfg, &next) {
                return code;
            }
            let saved = admin(&cfg)
                .and_then(|mut s| s.roster_save(&name, Some(&text), &who, &comment, now));
            match saved {
                Ok(rev) => {
                    println!(
                        "{name}: saved as console-managed revision {rev}; reload the gateway (SIGHUP) to serve it"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        RostersCommand::History { name, .. } => match history(&cfg, &name) {
            Ok(h) if h.is_empty() => fail(format!("no console-managed revisions of `{name}`")),
            Ok(h) => {
                for r in h {
                    println!(
                        "{}\t{}\t{}\t{}{}",
                        r.revision,
                        r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        r.actor,
                        if r.retired { "[retired] " } else { "" },
                        r.comment
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        RostersCommand::Retire { name, by, .. } => {
            if !console.iter().any(|c| c.name == name) {
                return fail(format!("no console-managed roster `{name}`"));
            }
            let rest: Vec<RosterRevision> =
                console.into_iter().filter(|c| c.name != name).collect();
            if let Err(code) = check(&cfg, &rest) {
                return code;
            }
            let now = crate::clock::Clock::system().now_utc();
            match admin(&cfg)
                .and_then(|mut s| s.roster_save(&name, None, &actor(by), "retired", now))
            {
                Ok(rev) => {
                    println!("{name}: retired at revision {rev}; reload the gateway (SIGHUP)");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
