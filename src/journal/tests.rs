use super::*;
use crate::config::StorageConfig;
use chrono::{TimeZone, Utc};
use std::sync::Mutex;
use std::time::Duration;

fn storage(dir: &std::path::Path) -> SqliteStorage {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    SqliteStorage::open(
        &dir.join("journal.sqlite3"),
        Protection::ephemeral("test/audit").unwrap(),
        now,
    )
    .unwrap()
}

fn open_journal(dir: &std::path::Path) -> Journal {
    Journal::start(Box::new(storage(dir)), &config(dir))
}

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        dedup_window: Duration::from_secs(3600),
        commit_batch_max: 64,
        commit_queue: 128,
    }
}

fn message(control_id: &str, body: &str, fate: Fate) -> NewMessage {
    use sha2::Digest;
    NewMessage {
        received_at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
        peer: "127.0.0.1:5000".into(),
        sender: Some("lab".into()),
        key: DedupKey {
            msh3: "LAB".into(),
            msh4: "HOSP".into(),
            control_id: control_id.into(),
        },
        message_type: "ORU".into(),
        trigger: "R01".into(),
        processing_id: "P".into(),
        raw: body.as_bytes().to_vec(),
        raw_charset: "frame".into(),
        body_sha256: sha2::Sha256::digest(body.as_bytes()).into(),
        fate,
        reason: None,
        error_code: None,
        error_location: None,
        events: vec![],
        ack_code: Some("AA".into()),
        ack: format!("ACK for {control_id} {body}").into_bytes(),
        app_ack: None,
        batch_ref: None,
    }
}

#[test]
fn journal_uses_wal_and_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = storage(dir.path());
    let (mode, sync) = s.durability_settings().unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous must be FULL");
}

#[tokio::test]
async fn resend_of_accepted_message_returns_stored_ack_and_adds_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let j = open_journal(dir.path());
    let first = j
        .commit(message("1", "body", Fate::Accepted))
        .await
        .unwrap();
    assert!(!first.is_duplicate());
    let mut again = message("1", "body", Fate::Accepted);
    again.ack = b"a different ack that must not be sent".to_vec();
    let second = j.commit(again).await.unwrap();
    assert!(second.is_duplicate());
    assert_eq!(second.ack(), first.ack());
    assert_eq!(second.message_id(), first.message_id());
    let rows = j
        .with_storage(|s| {
            s.messages(&MessageQuery {
                limit: 10,
                ..Default::default()
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].resends, 1);
}

#[tokio::test]
async fn same_control_id_with_other_body_is_a_control_id_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let j = open_journal(dir.path());
    j.commit(message("7", "one", Fate::Accepted)).await.unwrap();
    let r = j.commit(message("7", "two", Fate::Accepted)).await.unwrap();
    assert!(!r.is_duplicate());
    assert!(r.is_control_id_reuse());
}

#[tokio::test]
async fn resend_of_rejected_message_is_processed_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let j = open_journal(dir.path());
    let a = j.commit(message("9", "x", Fate::Rejected)).await.unwrap();
    let b = j.commit(message("9", "x", Fate::Rejected)).await.unwrap();
    let c = j.commit(message("9", "x", Fate::Accepted)).await.unwrap();
    assert!(!a.is_duplicate() && !b.is_duplicate() && !c.is_duplicate());
    assert!(a.message_id() < b.message_id() && b.message_id() < c.message_id());
}

#[tokio::test]
async fn duplicates_outside_the_window_are_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let j = open_journal(dir.path());
    j.commit(message("5", "x", Fate::Accepted)).await.unwrap();
    let mut later = message("5", "x", Fate::Accepted);
    later.received_at += chrono::Duration::hours(2);
    let r = j.commit(later).await.unwrap();
    assert!(!r.is_duplicate());
}

#[tokio::test]
async fn concurrent_commits_are_grouped_and_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let j = open_journal(dir.path());
    let mut tasks = Vec::new();
    for i in 0..400 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            j.commit(message(&i.to_string(), "b", Fate::Accepted))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let h = j.health();
    assert_eq!(h.committed.load(Ordering::Relaxed), 400);
    assert!(h.batches.load(Ordering::Relaxed) <= 400);
    drop(j);
    // Reopen: everything is there.
    let mut s = SqliteStorage::open_read_only(&dir.path().join("journal.sqlite3"), None).unwrap();
    let rows = s
        .messages(&MessageQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 400);
}

/// Storage that fails while `failing` is set: stands for ENOSPC / EIO.
struct Faulty {
    inner: SqliteStorage,
    failing: Arc<Mutex<Option<StorageError>>>,
}

impl Storage for Faulty {
    fn commit(
        &mut self,
        batch: &[NewMessage],
        now: chrono::DateTime<Utc>,
        w: Duration,
    ) -> Result<Vec<Committed>, StorageError> {
        let mut failing = self.failing.lock().unwrap();
        if let Some(e) = failing.take() {
            *failing = Some(match &e {
                StorageError::Full => StorageError::Full,
                _ => StorageError::Io("EIO".into()),
            });
            return Err(e);
        }
        drop(failing);
        self.inner.commit(batch, now, w)
    }
    fn messages(&mut self, q: &MessageQuery) -> Result<Vec<MessageSummary>, StorageError> {
        self.inner.messages(q)
    }
    fn outbox_due(
        &mut self,
        now: chrono::DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StorageError> {
        self.inner.outbox_due(now, limit)
    }
    fn outbox_next_due(&mut self) -> Result<Option<chrono::DateTime<Utc>>, StorageError> {
        self.inner.outbox_next_due()
    }
    fn outbox_update(
        &mut self,
        id: i64,
        state: OutboxState,
        at: chrono::DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<(), StorageError> {
        self.inner.outbox_update(id, state, at, error)
    }
    fn probe(&mut self) -> Result<(), StorageError> {
        if self.failing.lock().unwrap().is_some() {
            return Err(StorageError::Full);
        }
        self.inner.probe()
    }
    crate::delegate_admin_storage!(inner);
}

#[tokio::test]
async fn failed_commit_is_unavailable_and_journal_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(Mutex::new(Some(StorageError::Full)));
    let storage = Faulty {
        inner: storage(dir.path()),
        failing: failing.clone(),
    };
    let j = Journal::start(Box::new(storage), &config(dir.path()));
    assert_eq!(
        j.commit(message("1", "x", Fate::Accepted)).await,
        Err(JournalError::Unavailable)
    );
    assert!(!j.health().is_healthy());
    assert!(!j.probe().await);
    *failing.lock().unwrap() = None;
    assert!(j.probe().await);
    assert!(j.health().is_healthy());
    let r = j.commit(message("1", "x", Fate::Accepted)).await.unwrap();
    assert!(!r.is_duplicate(), "the failed commit stored nothing");
}
