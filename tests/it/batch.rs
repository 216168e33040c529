//! Batches: FHS/BHS/BTS/FTS envelopes and several MSH in one frame are
//! split, each message journaled, answered with one acknowledgement batch.

use crate::support::*;

fn body(id: &str) -> String {
    oru(id)
}

#[tokio::test]
async fn fhs_bhs_batch_is_split_and_answered_with_one_ack_batch() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let batch = format!(
        "FHS|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||||F1\rBHS|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||||B1\r{}{}{}BTS|3\rFTS|1\r",
        body("B1M1"),
        body("B1M2").replace("||6.9|", "||FOO|"),
        adt_a01("B1M3")
    );
    let ack = c.roundtrip(&batch).await;
    let segs = segments(&ack);
    let names: Vec<&str> = segs.iter().map(|s| &s[..3]).collect();
    assert_eq!(
        names,
        vec![
            "FHS", "BHS", "MSH", "MSA", "MSH", "MSA", "ERR", "MSH", "MSA", "BTS", "FTS"
        ],
        "{ack:?}"
    );
    assert!(segs[0].starts_with("FHS|^~\\&|SWITCHBOARD|HOSP|LAB|HOSP|"));
    assert_eq!(
        field(&ack, "BHS", 11),
        "B1",
        "BHS-12 echoes the batch control id"
    );
    assert_eq!(segs[9], "BTS|3");
    let msas: Vec<&str> = segs
        .iter()
        .filter(|s| s.starts_with("MSA"))
        .copied()
        .collect();
    assert_eq!(msas, vec!["MSA|AA|B1M1", "MSA|AE|B1M2", "MSA|AA|B1M3"]);
    assert!(
        c.try_recv(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "one answer for the batch"
    );
    assert_eq!(
        journal_rows(&gw.journal_path(), "B1M1")[0].fate.as_str(),
        "accepted"
    );
    assert_eq!(
        journal_rows(&gw.journal_path(), "B1M2")[0].fate.as_str(),
        "rejected"
    );
    assert_eq!(
        journal_rows(&gw.journal_path(), "B1M3")[0].fate.as_str(),
        "accepted"
    );
}

#[tokio::test]
async fn several_msh_in_one_frame_get_one_ack_batch() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let frame_text = format!("{}{}", body("MM1"), body("MM2"));
    let ack = c.roundtrip(&frame_text).await;
    let segs = segments(&ack);
    assert!(
        segs[0].starts_with("BHS|^~\\&|SWITCHBOARD|HOSP|LAB|HOSP|"),
        "{ack:?}"
    );
    assert_eq!(segs.last().copied(), Some("BTS|2"));
    let msas: Vec<&str> = segs
        .iter()
        .filter(|s| s.starts_with("MSA"))
        .copied()
        .collect();
    assert_eq!(msas, vec!["MSA|AA|MM1", "MSA|AA|MM2"]);
}

#[tokio::test]
async fn resent_batch_returns_the_stored_acks() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let batch = format!(
        "BHS|^~\\&|LAB|HOSP|||20261123||||B2\r{}{}BTS|2\r",
        body("B2M1"),
        body("B2M2")
    );
    let first = c.roundtrip(&batch).await;
    let second = c.roundtrip(&batch).await;
    let msgs = |a: &str| -> Vec<String> {
        a.split("MSH|")
            .skip(1)
            .map(|m| m.split("BTS").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        msgs(&first),
        msgs(&second),
        "inner ACKs are the stored ones"
    );
    assert_eq!(journal_rows(&gw.journal_path(), "B2M1").len(), 1);
}
