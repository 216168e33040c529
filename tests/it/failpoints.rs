//! The real binary aborted at named crash points (the `failpoints` feature,
//! enabled for tests): after the journal commit and before any answer;
//! after alerts are written and before delivery is woken; after a backend
//! accepted a notification and before the attempt was recorded. Each time
//! the restart loses nothing, creates nothing twice, and a redelivery
//! carries the same idempotency key.

use std::path::Path;
use std::time::Duration;

use crate::delivery::{Receiver, free_port, oru, rows, setup, wait_until};
use crate::support::{Mllp, ack_code, field};

async fn serve(config: &Path, mllp: u16, failpoint: Option<&str>) -> tokio::process::Child {
    let http = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("SB_TEST_HOOK_SECRET", "webhook-secret-for-tests")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(f) = failpoint {
        cmd.env("SWITCHBOARD_FAILPOINT", f);
    }
    let child = cmd.spawn().unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", mllp))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child
}

fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

async fn exited(child: &mut tokio::process::Child) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(20), child.wait()).await, Ok(Ok(s)) if !s.success())
}

#[tokio::test]
async fn abort_after_commit_before_the_ack_then_the_resend_gets_the_stored_answer() {
    let rx = Receiver::default();
    let port = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), port);
    let db = dir.path().join("data/journal.sqlite3");
    let mllp = free_port();
    let msg = oru("FP1", "ICU");
    let mut child = serve(&config, mllp, Some("journal.after-commit")).await;
    let mut c = Mllp::connect(format!("127.0.0.1:{mllp}").parse().unwrap()).await;
    c.send(&msg).await;
    assert!(
        c.try_recv(Duration::from_secs(10)).await.is_none(),
        "no ACK from a dead gateway"
    );
    assert!(
        exited(&mut child).await,
        "the failpoint aborted the process"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM messages"),
        1,
        "committed before the crash"
    );
    // Restarted: the sender resends (it never got an ACK).
    let _child = serve(&config, mllp, None).await;
    let mut c = Mllp::connect(format!("127.0.0.1:{mllp}").parse().unwrap()).await;
    let ack = c.roundtrip(&msg).await;
    assert_eq!(ack_code(&ack), "AA");
    assert_eq!(field(&ack, "MSA", 2), "FP1");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM messages"), 1, "no new row");
    assert_eq!(count(&db, "SELECT resends FROM messages"), 1);
    // The routing that the crash interrupted happens once, after restart.
    wait_until("alert after restart", 30, || {
        count(&db, "SELECT COUNT(*) FROM alerts") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM alerts"), 1);
}

#[tokio::test]
async fn abort_after_alerts_are_written_then_delivery_resumes_once() {
    let rx = Receiver::default();
    let port = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), port);
    let db = dir.path().join("data/journal.sqlite3");
    let mllp = free_port();
    let mut child = serve(&config, mllp, Some("alerts.after-write")).await;
    let mut c = Mllp::connect(format!("127.0.0.1:{mllp}").parse().unwrap()).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("FP2", "ICU")).await), "AA");
    assert!(exited(&mut child).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM alerts"), 1);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM notifications WHERE state = 'pending'"
        ),
        1
    );
    let _child = serve(&config, mllp, None).await;
    wait_until("delivered after restart", 30, || {
        rows(&db).first().is_some_and(|r| r.1 == "delivered")
    })
    .await;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM alerts"),
        1,
        "not routed twice"
    );
    assert_eq!(rx.seen().len(), 1, "one page");
}

#[tokio::test]
async fn abort_after_a_backend_accepted_then_the_redelivery_carries_the_same_key() {
    let rx = Receiver::default();
    let port = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), port);
    let db = dir.path().join("data/journal.sqlite3");
    let mllp = free_port();
    let mut child = serve(&config, mllp, Some("delivery.after-send")).await;
    let mut c = Mllp::connect(format!("127.0.0.1:{mllp}").parse().unwrap()).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("FP3", "ICU")).await), "AA");
    assert!(exited(&mut child).await);
    assert_eq!(rx.seen().len(), 1, "the backend got it before the crash");
    assert_eq!(rows(&db)[0].1, "pending", "the attempt was never recorded");
    let _child = serve(&config, mllp, None).await;
    wait_until("redelivered", 30, || {
        rows(&db).first().is_some_and(|r| r.1 == "delivered")
    })
    .await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "delivered again after the restart");
    assert_eq!(
        seen[0].header("Idempotency-Key"),
        seen[1].header("Idempotency-Key"),
        "the receiver can tell it is the same page"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM alerts"), 1);
}
