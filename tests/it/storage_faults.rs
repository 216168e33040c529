//! The journal cannot commit: the answer is AR (CE in enhanced mode) with
//! ERR 207, never AA, and the gateway recovers by itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchboard::app::Gateway;
use switchboard::clock::Clock;
use switchboard::journal::{
    Committed, MessageQuery, MessageSummary, NewMessage, OutboxItem, OutboxState, SqliteStorage,
    Storage, StorageError,
};

use crate::support::*;

/// Storage whose commits fail while `fault` holds an error: ENOSPC / EIO
/// injected at the storage layer.
struct Faulty {
    inner: SqliteStorage,
    fault: Arc<Mutex<Option<&'static str>>>,
}

impl Faulty {
    fn check(&self) -> Result<(), StorageError> {
        match *self.fault.lock().unwrap() {
            Some("ENOSPC") => Err(StorageError::Full),
            Some(other) => Err(StorageError::Io(other.to_string())),
            None => Ok(()),
        }
    }
}

impl Storage for Faulty {
    fn commit(
        &mut self,
        b: &[NewMessage],
        now: DateTime<Utc>,
        w: Duration,
    ) -> Result<Vec<Committed>, StorageError> {
        self.check()?;
        self.inner.commit(b, now, w)
    }
    fn messages(&mut self, q: &MessageQuery) -> Result<Vec<MessageSummary>, StorageError> {
        self.inner.messages(q)
    }
    fn outbox_due(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StorageError> {
        self.inner.outbox_due(now, limit)
    }
    fn outbox_next_due(&mut self) -> Result<Option<DateTime<Utc>>, StorageError> {
        self.inner.outbox_next_due()
    }
    fn outbox_update(
        &mut self,
        id: i64,
        s: OutboxState,
        at: DateTime<Utc>,
        e: Option<&str>,
    ) -> Result<(), StorageError> {
        self.inner.outbox_update(id, s, at, e)
    }
    fn probe(&mut self) -> Result<(), StorageError> {
        self.check()?;
        self.inner.probe()
    }
    switchboard::delegate_admin_storage!(inner);
}

async fn faulty_gateway(fault: Arc<Mutex<Option<&'static str>>>) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let now = Clock::system().now_utc();
    let protection = switchboard::journal::protection(&cfg, now).unwrap();
    let inner = SqliteStorage::open(&cfg.journal_path(), protection, now).unwrap();
    let gw = Gateway::start_with(cfg, Box::new(Faulty { inner, fault }), Clock::system())
        .await
        .unwrap();
    (gw, dir)
}

#[tokio::test]
async fn disk_full_and_io_error_answer_ar_207_never_aa_then_recover() {
    let fault = Arc::new(Mutex::new(None));
    let (gw, dir) = faulty_gateway(fault.clone()).await;
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("OK1")).await), "AA");
    for kind in ["ENOSPC", "EIO"] {
        *fault.lock().unwrap() = Some(kind);
        for i in 0..5 {
            let ack = c.roundtrip(&oru(&format!("{kind}{i}"))).await;
            assert_eq!(ack_code(&ack), "AR", "{kind}: {ack:?}");
            assert_eq!(err_code(&ack), "207");
            assert_eq!(field(&ack, "MSA", 2), format!("{kind}{i}"));
        }
        // Enhanced mode: CE 207.
        let m = oru("ENH1").replace("|ENH1|P|2.5.1\r", "|ENH1|P|2.5.1|||AL|NE\r");
        let ack = c.roundtrip(&m).await;
        assert_eq!(ack_code(&ack), "CE");
        assert_eq!(err_code(&ack), "207");
        *fault.lock().unwrap() = None;
        // Recovers by itself: the same messages resent are accepted.
        let mut ok = false;
        for _ in 0..50 {
            let ack = c.roundtrip(&oru(&format!("{kind}0"))).await;
            if ack_code(&ack) == "AA" {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "gateway did not recover after {kind}");
    }
    let path = dir.path().join("data").join("journal.sqlite3");
    assert_eq!(
        journal_rows(&path, "ENOSPC1").len(),
        0,
        "nothing answered AR was stored"
    );
    assert_eq!(journal_rows(&path, "ENOSPC0").len(), 1);
    gw.shutdown().await;
}

/// A real full filesystem: a 2 MiB tmpfs as the data directory.
#[tokio::test]
async fn real_full_filesystem_answers_ar_207_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("data");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        note(
            "cannot mount a tmpfs here (needs root): skipping the real full-filesystem test; the injected-fault test covers the behaviour",
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let cfg = config(dir.path(), "");
    let gw = Gateway::start(cfg).await.unwrap();
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("FS0")).await), "AA");
    // Fill the filesystem.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut saw_207 = false;
    let big = "X".repeat(60_000);
    for i in 1..200 {
        let m = oru(&format!("FS{i}")).replace("||6.9|", &format!("||6.9|{big}|"));
        let m = m.replace(&format!("|{big}|mmol/L"), "|mmol/L");
        let ack = c.roundtrip(&format!("{m}NTE|1||{big}\r")).await;
        match ack_code(&ack).as_str() {
            "AA" => continue,
            "AR" => {
                assert_eq!(err_code(&ack), "207");
                saw_207 = true;
                break;
            }
            other => panic!("unexpected {other}: never anything but AA or AR 207"),
        }
    }
    assert!(saw_207, "a full disk must produce AR 207");
    std::fs::remove_file(&filler).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if ack_code(&c.roundtrip(&oru("FSAFTER")).await) == "AA" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "gateway recovers once space returns");
    gw.shutdown().await;
}
