//! `switchboard messages`: the message browser on the command line.

use std::process::ExitCode;

use crate::config::Config;
use crate::journal::{MessageQuery, SqliteStorage, Storage};

/// Prints the message browser.
pub(super) fn list(cfg: &Config, query: &MessageQuery, json: bool) -> ExitCode {
    // Content needs the keys, and every view is audited: open writable.
    let opened = if query.include_raw {
        super::compliance::admin(cfg)
    } else {
        SqliteStorage::open_read_only(&cfg.journal_path(), None)
    };
    let mut storage = match opened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = match storage.messages(query) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("switchboard: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "{:>8}  {:<24}  {:<12}  {:<9}  {:<20}  {:<9}  {:<4}  detail",
        "id", "received (UTC)", "sender", "type", "control id", "fate", "ack"
    );
    for r in &rows {
        let detail = match (&r.error_code, &r.error_location, &r.reason) {
            (Some(c), Some(l), Some(why)) => format!("{c} at {l}: {why}"),
            (Some(c), None, Some(why)) => format!("{c}: {why}"),
            (_, _, Some(why)) => why.clone(),
            _ => format!("{} event(s)", r.events),
        };
        let extra = if r.resends > 0 {
            format!(" (resent {}x)", r.resends)
        } else {
            String::new()
        };
        println!(
            "{:>8}  {:<24}  {:<12}  {:<9}  {:<20}  {:<9}  {:<4}  {detail}{extra}",
            r.id,
            r.received_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            r.sender.as_deref().unwrap_or("-"),
            r.message_type,
            r.control_id,
            r.fate.as_str(),
            r.ack_code.as_deref().unwrap_or("-"),
        );
        if let Some(raw) = &r.raw {
            for line in raw.lines() {
                println!("          {line}");
            }
        }
    }
    ExitCode::SUCCESS
}
