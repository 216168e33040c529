//! Bounds: frame size, partial-frame and idle timeouts.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn oversized_frame_is_answered_ae_104_and_connection_closed() {
    let gw = start_gateway_with("max_frame_bytes = 65536").await;
    let mut c = gw.connect().await;
    let mut bytes = vec![SB];
    bytes.extend_from_slice(oru("BIG1").as_bytes());
    c.send_raw(&bytes).await;
    // Keep sending far more than the limit, with no end block.
    let filler = vec![b'x'; 16 * 1024];
    let mut sent = 0;
    let ack = loop {
        if sent < 8 * 1024 * 1024 && c.stream.try_write(&filler).is_ok() {
            sent += filler.len();
        }
        if let Some(a) = c.try_recv(Duration::from_millis(20)).await {
            break a;
        }
        assert!(sent < 64 * 1024 * 1024, "no answer to an oversized frame");
    };
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "104");
    assert_eq!(field(&ack, "MSA", 2), "BIG1");
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "connection closed after the answer"
    );
    let row = &journal_rows(&gw.journal_path(), "BIG1")[0];
    assert_eq!(row.error_code, Some(104));
}

#[tokio::test]
async fn partial_frame_times_out_and_nothing_is_journaled() {
    let gw = start_gateway_with("frame_timeout_secs = 1").await;
    let mut c = gw.connect().await;
    let text = oru("SLOW1");
    c.send_raw(&[SB]).await;
    c.send_raw(&text.as_bytes()[..40]).await;
    let started = std::time::Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "partial frame must be closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(journal_rows(&gw.journal_path(), "SLOW1").is_empty());
    assert_eq!(
        gw.gateway
            .metrics()
            .frame_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn slowloris_bytes_do_not_extend_the_frame_deadline() {
    let gw = start_gateway_with("frame_timeout_secs = 2").await;
    let mut c = gw.connect().await;
    c.send_raw(&[SB]).await;
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in b"MSH|^~\\&|LAB|HOSP|" {
        if c.stream.try_write(&[*b]).is_err() {
            closed = true;
            break;
        }
        if c.closed_within(Duration::from_millis(300)).await {
            closed = true;
            break;
        }
    }
    assert!(closed || c.closed_within(Duration::from_secs(5)).await);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "closed near frame_timeout"
    );
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let gw = start_gateway_with("idle_timeout_secs = 1").await;
    let mut c = gw.connect().await;
    assert_eq!(ack_code(&c.roundtrip(&oru("IDLE1")).await), "AA");
    assert!(c.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_a_permit_is_free() {
    let gw = start_gateway_with("max_connections = 2").await;
    let mut a = gw.connect().await;
    let mut b = gw.connect().await;
    assert_eq!(ack_code(&a.roundtrip(&oru("CAP1")).await), "AA");
    assert_eq!(ack_code(&b.roundtrip(&oru("CAP2")).await), "AA");
    let mut third = gw.connect().await;
    third.send(&oru("CAP3")).await;
    assert!(
        third.try_recv(Duration::from_millis(500)).await.is_none(),
        "third connection is not served while two are open"
    );
    drop(a);
    let ack = third.recv().await;
    assert_eq!(field(&ack, "MSA", 2), "CAP3");
    drop(b);
}
