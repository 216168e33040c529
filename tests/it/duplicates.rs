//! Duplicate resends, control-id reuse, and rejected messages resent.

use crate::support::*;

#[tokio::test]
async fn resend_of_accepted_message_gets_byte_identical_ack_and_no_new_row() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let first = c.roundtrip(&oru("DUP1")).await;
    let mut c2 = gw.connect().await;
    let second = c2.roundtrip(&oru("DUP1")).await;
    assert_eq!(first, second, "stored ACK must be re-sent byte for byte");
    let rows = journal_rows(&gw.journal_path(), "DUP1");
    assert_eq!(rows.len(), 1, "a duplicate adds no row");
    assert_eq!(rows[0].resends, 1);
    assert_eq!(rows[0].events, 1);
}

#[tokio::test]
async fn resend_with_lf_endings_is_still_a_duplicate() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let first = c.roundtrip(&oru("DUPLF")).await;
    let second = c.roundtrip(&oru("DUPLF").replace('\r', "\n")).await;
    assert_eq!(first, second);
    assert_eq!(journal_rows(&gw.journal_path(), "DUPLF").len(), 1);
}

#[tokio::test]
async fn same_control_id_with_different_body_is_accepted_as_reuse() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let a = c.roundtrip(&oru("REUSE1")).await;
    let b = c.roundtrip(&oru("REUSE1").replace("6.9", "7.1")).await;
    assert_eq!(ack_code(&b), "AA");
    assert_ne!(a, b, "a new message gets a new ACK");
    let rows = journal_rows(&gw.journal_path(), "REUSE1");
    assert_eq!(rows.len(), 2);
    assert!(rows[0].control_id_reuse, "newest row is flagged");
    assert!(!rows[1].control_id_reuse);
    let reuses = gw
        .gateway
        .metrics()
        .control_id_reuses
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reuses, 1);
}

#[tokio::test]
async fn resend_of_rejected_message_is_processed_afresh() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let bad = oru("FIXED1").replace("PID|1||MRNFIXED1^^^HOSP^MR|", "PID|1|||");
    assert_eq!(ack_code(&c.roundtrip(&bad).await), "AE");
    assert_eq!(ack_code(&c.roundtrip(&bad).await), "AE");
    assert_eq!(ack_code(&c.roundtrip(&oru("FIXED1")).await), "AA");
    let rows = journal_rows(&gw.journal_path(), "FIXED1");
    assert_eq!(rows.len(), 3, "each attempt is journaled");
    assert_eq!(rows[0].fate.as_str(), "accepted");
}

#[tokio::test]
async fn same_control_id_from_another_sender_is_not_a_duplicate() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    c.roundtrip(&oru("SHARED1")).await;
    let other = oru("SHARED1").replace("|LAB|HOSP|", "|LAB|OTHERHOSP|");
    let ack = c.roundtrip(&other).await;
    assert_eq!(ack_code(&ack), "AA");
    assert_eq!(journal_rows(&gw.journal_path(), "SHARED1").len(), 2);
}
