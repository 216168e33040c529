//! The ack ledger (RELIABILITY.md, common harness): one line per
//! acknowledgement received, `sender<TAB>MSH-10<TAB>MSA-1<TAB>time`, where
//! sender is `MSH-3^MSH-4` of the message and time is the receipt time in
//! UTC (RFC 3339, microseconds).
//!
//! Lines are written by one thread and made durable in groups: whatever
//! arrived while the previous group was being synced is written, flushed
//! and `fdatasync`ed together, so the ledger never slows the connections by
//! one fsync per ACK, and every line is on disk before the tool exits.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The writing side handed to connections.
pub type LedgerTx = mpsc::Sender<String>;

/// A running ledger writer.
pub struct Ledger {
    thread: JoinHandle<std::io::Result<u64>>,
}

impl Ledger {
    /// Opens (appends to) `path` and starts the writer thread.
    pub fn open(path: &Path) -> std::io::Result<(Ledger, LedgerTx)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel::<String>();
        let thread = std::thread::Builder::new()
            .name("ack-ledger".into())
            .spawn(move || write_loop(file, rx))?;
        Ok((Ledger { thread }, tx))
    }

    /// Waits until every sender is gone and every line is synced; the
    /// number of lines written.
    pub fn finish(self) -> std::io::Result<u64> {
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("ledger thread panicked"))?
    }
}

fn write_loop(file: File, rx: mpsc::Receiver<String>) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut lines = 0u64;
    while let Ok(first) = rx.recv() {
        out.write_all(first.as_bytes())?;
        lines += 1;
        while let Ok(more) = rx.try_recv() {
            out.write_all(more.as_bytes())?;
            lines += 1;
        }
        out.flush()?;
        out.get_ref().sync_data()?;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_written_before_finish_returns() {
        let dir = std::env::temp_dir().join(format!("sb-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.tsv");
        let _ = std::fs::remove_file(&path);
        let (ledger, tx) = Ledger::open(&path).unwrap();
        for i in 0..1000 {
            tx.send(format!("LOADGEN^HOSP\tR-{i}\tAA\t2026-11-23T12:00:00Z\n"))
                .unwrap();
        }
        drop(tx);
        assert_eq!(ledger.finish().unwrap(), 1000);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert!(text.lines().all(|l| l.split('\t').count() == 4));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
