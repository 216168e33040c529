//! Compliance commands: `audit verify|export`, `keys rotate`,
//! `retention status|purge`, `hold place|release|list`. Each change is
//! audited by the journal in the same transaction as the change.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::ConfigArg;
use crate::audit::Signer;
use crate::clock::Clock;
use crate::config::Config;
use crate::journal::{HoldSubject, Protection, SqliteStorage, Storage, StorageError};
use crate::seal::{KeyDir, Keyring, LocalKek};

/// `switchboard audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the chain and every checkpoint; report the first bad record.
    Verify {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Off-box checkpoint directory (default: `[audit] checkpoint_dir`).
        #[arg(long, value_name = "DIR")]
        checkpoints: Option<PathBuf>,
    },
    /// Print the checkpoint verifier key, to pin it as `[audit] trusted_key`
    /// (and keep a copy off the box).
    Key {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print records as JSON lines (for a SIEM).
    Export {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// `jsonl` or `syslog` (RFC 5424 lines).
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

/// `switchboard keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new key-encryption key and re-wrap every data key with it
    /// (payloads untouched); the old key file is deleted after the commit.
    Rotate {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Who is rotating (recorded in the audit trail).
        #[arg(long)]
        by: Option<String>,
    },
}

/// `switchboard retention ...`
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// What is kept, held, due and erased, per category and day.
    Status {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Crypto-erase every due day now (held days are skipped).
    Purge {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Who is purging (recorded in the audit trail).
        #[arg(long)]
        by: Option<String>,
    },
}

/// `switchboard hold ...`
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a legal hold: it suspends purges of the data it covers.
    Place {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Hold everything.
        #[arg(long, conflicts_with_all = ["sender", "patient"])]
        global: bool,
        /// Hold everything from this configured sender.
        #[arg(long)]
        sender: Option<String>,
        /// Hold everything about this patient identifier (with --authority).
        #[arg(long, requires = "authority")]
        patient: Option<String>,
        /// Assigning authority of --patient (CX.4), as in the messages.
        #[arg(long)]
        authority: Option<String>,
        /// Why (case or matter number; no PHI).
        #[arg(long)]
        reason: String,
        /// Who places it.
        #[arg(long)]
        by: Option<String>,
    },
    /// Release a hold.
    Release {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Hold id.
        id: i64,
        /// Who releases it.
        #[arg(long)]
        by: Option<String>,
    },
    /// List active holds.
    List {
        /// Configuration.
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `user:<name>` from `--by` or `$USER`.
pub(super) fn actor(by: Option<String>) -> String {
    match by.or_else(|| std::env::var("USER").ok()) {
        Some(name) => format!("user:{name}"),
        None => "user:unknown".to_string(),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchboard: {e}");
    ExitCode::FAILURE
}

/// Loads the keys that must already exist (never generates any).
pub(super) fn existing_protection(cfg: &Config) -> Result<Protection, StorageError> {
    let keys_err = |e: crate::seal::SealError| StorageError::Keys(e.to_string());
    let (key_dir, keyring) = match &cfg.keys.env {
        Some(var) => {
            let kek = LocalKek::from_env(var).map_err(keys_err)?;
            (None, Keyring::new(std::sync::Arc::new(kek), Vec::new()))
        }
        None => {
            let dir = KeyDir::load(&cfg.keys.dir).map_err(keys_err)?;
            let keyring = Keyring::from_dir(&dir).map_err(keys_err)?;
            (Some(dir), keyring)
        }
    };
    let signer = Signer::load(&cfg.audit.signing_key, &cfg.audit.origin)
        .map_err(|e| StorageError::Audit(e.to_string()))?;
    Ok(Protection {
        key_dir,
        keyring,
        signer,
        checkpoint_dir: cfg.audit.checkpoint_dir.clone(),
        checkpoint_every: cfg.audit.checkpoint_every,
        checkpoint_interval: cfg.audit.checkpoint_interval,
    })
}

/// The journal opened for an operator change (keys must exist).
pub(super) fn admin(cfg: &Config) -> Result<SqliteStorage, StorageError> {
    SqliteStorage::open_admin(&cfg.journal_path(), existing_protection(cfg)?)
}

fn with_config(arg: &ConfigArg) -> Result<Config, ExitCode> {
    super::load(arg)
}

/// `switchboard audit ...`
pub(super) fn audit(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify {
            config,
            checkpoints,
        } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut storage = match SqliteStorage::open_read_only(&cfg.journal_path(), None) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let external = checkpoints.or(cfg.audit.checkpoint_dir.clone());
            match storage.audit_verify(
                external.as_deref(),
                &cfg.audit.origin,
                cfg.audit.trusted_key.as_ref(),
            ) {
                Ok(report) => {
                    println!("{report}");
                    if report.ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(e),
            }
        }
        AuditCommand::Key { config } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match Signer::load(&cfg.audit.signing_key, &cfg.audit.origin) {
                Ok(s) => {
                    println!("{}", s.verifier_key());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        AuditCommand::Export {
            config,
            after,
            format,
        } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut storage = match SqliteStorage::open_read_only(&cfg.journal_path(), None) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "switchboard".into());
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut after = after;
            let result: Result<(), String> = loop {
                let records = match storage.audit_records(after, 10_000) {
                    Ok(r) => r,
                    Err(e) => break Err(e.to_string()),
                };
                let Some(last) = records.last().map(|r| r.seq) else {
                    break Ok(());
                };
                for r in &records {
                    let line = match format.as_str() {
                        "jsonl" => serde_json::to_string(r).map_err(|e| e.to_string()),
                        "syslog" => Ok(crate::audit::format_syslog(r, &host, "switchboard")),
                        other => {
                            eprintln!("switchboard: unknown format `{other}` (jsonl, syslog)");
                            return ExitCode::from(super::EXIT_CONFIG);
                        }
                    };
                    match line {
                        Ok(l) => {
                            if writeln!(out, "{l}").is_err() {
                                return ExitCode::FAILURE;
                            }
                        }
                        Err(e) => return fail(e),
                    }
                }
                after = last;
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

/// `switchboard keys ...`
pub(super) fn keys(cmd: KeysCommand) -> ExitCode {
    match cmd {
        KeysCommand::Rotate { config, by } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut storage = match admin(&cfg) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match storage.rotate_keys(Clock::system().now_utc(), &actor(by)) {
                Ok(r) => {
                    println!(
                        "new key-encryption key {} ({}); {} data keys re-wrapped; retired: {}",
                        r.new_kek_id,
                        r.new_key_file.display(),
                        r.rewrapped,
                        if r.deleted.is_empty() {
                            "none".to_string()
                        } else {
                            r.deleted.join(", ")
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// `switchboard retention ...`
pub(super) fn retention(cmd: RetentionCommand) -> ExitCode {
    match cmd {
        RetentionCommand::Status { config, json } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut storage = match SqliteStorage::open_read_only(&cfg.journal_path(), None) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let now = Clock::system().now_utc();
            let (status, holds) = match (
                storage.retention_status(&cfg.retention, now),
                storage.holds(),
            ) {
                (Ok(s), Ok(h)) => (s, h),
                (Err(e), _) | (_, Err(e)) => return fail(e),
            };
            if json {
                let v = serde_json::json!({ "periods": status, "holds": holds });
                println!("{v:#}");
                return ExitCode::SUCCESS;
            }
            println!(
                "{:<9}  {:<10}  {:>7}  state",
                "category", "day (UTC)", "rows"
            );
            for p in &status {
                let state = match &p.state {
                    crate::retention::PeriodState::Kept => "kept".to_string(),
                    crate::retention::PeriodState::Due => "due".to_string(),
                    crate::retention::PeriodState::Erased => "erased".to_string(),
                    crate::retention::PeriodState::Held(ids) => format!(
                        "held ({})",
                        ids.iter()
                            .map(|i| format!("hold {i}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                println!(
                    "{:<9}  {:<10}  {:>7}  {state}",
                    p.category, p.period, p.rows
                );
            }
            println!("active holds: {}", holds.len());
            for h in &holds {
                println!(
                    "  hold {}: {} {} — {} (by {} at {})",
                    h.id, h.scope, h.subject, h.reason, h.placed_by, h.placed_at
                );
            }
            ExitCode::SUCCESS
        }
        RetentionCommand::Purge { config, by } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut storage = match admin(&cfg) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match storage.purge(&cfg.retention, Clock::system().now_utc(), &actor(by)) {
                Ok(r) => {
                    for (c, p, rows) in &r.erased {
                        println!("erased {c} {p}: {rows} rows, key destroyed");
                    }
                    for (c, p, ids) in &r.held {
                        println!("held {c} {p}: by holds {ids:?}");
                    }
                    if r.erased.is_empty() && r.held.is_empty() {
                        println!("nothing due");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// `switchboard hold ...`
pub(super) fn hold(cmd: HoldCommand) -> ExitCode {
    let now = Clock::system().now_utc();
    match cmd {
        HoldCommand::Place {
            config,
            global,
            sender,
            patient,
            authority,
            reason,
            by,
        } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let subject = match (global, sender, patient) {
                (true, None, None) => HoldSubject::Global,
                (false, Some(s), None) => {
                    if cfg.sender(&s).is_none() {
                        eprintln!("switchboard: no configured sender named `{s}`");
                        return ExitCode::from(super::EXIT_CONFIG);
                    }
                    HoldSubject::Sender(s)
                }
                (false, None, Some(id)) => HoldSubject::Patient {
                    authority: authority.unwrap_or_default(),
                    id,
                },
                _ => {
                    eprintln!("switchboard: give exactly one of --global, --sender, --patient");
                    return ExitCode::from(super::EXIT_CONFIG);
                }
            };
            let mut storage = match admin(&cfg) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match storage.place_hold(subject, &reason, &actor(by), now) {
                Ok(id) => {
                    println!("hold {id} placed");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        HoldCommand::Release { config, id, by } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut storage = match admin(&cfg) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match storage.release_hold(id, &actor(by), now) {
                Ok(()) => {
                    println!("hold {id} released");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        HoldCommand::List { config } => {
            let cfg = match with_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut storage = match SqliteStorage::open_read_only(&cfg.journal_path(), None) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match storage.holds() {
                Ok(holds) => {
                    for h in holds {
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            h.id, h.scope, h.subject, h.placed_by, h.reason
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
