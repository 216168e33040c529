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

/// One ORU^R01 whose MSH-18 is `charset` and whose patient name ends in é,
/// encoded as that character set would (`latin1`: the single byte 0xE9).
fn oru_in(id: &str, charset: &str, latin1: bool) -> Vec<u8> {
    let text = oru(id)
        .replace("|P|2.5.1\r", &format!("|P|2.5.1||||||{charset}\r"))
        .replace("ZZCANARY^PHI", "ZZCANARY^REN\u{e9}");
    if latin1 {
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).expect("Latin-1 text"))
            .collect()
    } else {
        text.into_bytes()
    }
}

/// Reads one MLLP frame's payload as raw bytes (the answer to a Latin-1
/// message is Latin-1, not UTF-8).
async fn recv_raw(c: &mut Mllp) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(start) = got.iter().position(|b| *b == SB)
            && let Some(end) = got[start..].windows(2).position(|w| w == [EB, CR])
        {
            return got[start + 1..start + end].to_vec();
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline, c.stream.read(&mut chunk))
            .await
            .expect("an acknowledgement batch within 10 s")
            .expect("read");
        assert!(n > 0, "connection closed without an answer");
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Regression: only the first MSH-18 of a batch decoded the whole frame, so
/// a second message in ISO-8859-1 was refused as invalid UTF-8 (and UTF-8
/// after a Latin-1 first message would have become mojibake).
#[tokio::test]
async fn batch_messages_are_decoded_in_their_own_msh18_charset() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let mut batch = b"BHS|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||||BCS\r".to_vec();
    batch.extend(oru_in("BCS1", "UNICODE UTF-8", false));
    batch.extend(oru_in("BCS2\u{e9}", "8859/1", true));
    batch.extend(oru_in("BCS3", "", false));
    batch.extend_from_slice(b"BTS|3\r");
    c.send_raw(&frame(&batch)).await;
    let ack = recv_raw(&mut c).await;

    let segs: Vec<&[u8]> = ack.split(|b| *b == CR).filter(|s| !s.is_empty()).collect();
    let msas: Vec<&[u8]> = segs
        .iter()
        .filter(|s| s.starts_with(b"MSA"))
        .copied()
        .collect();
    assert_eq!(
        msas,
        [
            &b"MSA|AA|BCS1"[..],
            &b"MSA|AA|BCS2\xE9"[..],
            &b"MSA|AA|BCS3"[..]
        ],
        "each message accepted; MSA-2 echoes the Latin-1 MSH-10 in Latin-1: {}",
        String::from_utf8_lossy(&ack)
    );
    let ack_msh18: Vec<String> = segs
        .iter()
        .filter(|s| s.starts_with(b"MSH"))
        .map(|s| {
            let s = String::from_utf8_lossy(s);
            field(&s, "MSH", 18)
        })
        .collect();
    assert_eq!(ack_msh18, ["UNICODE UTF-8", "8859/1", ""]);

    // Journaled under the decoded control id, not refused or garbled.
    for id in ["BCS1", "BCS2\u{e9}", "BCS3"] {
        let rows = journal_rows(&gw.journal_path(), id);
        assert_eq!(rows.len(), 1, "{id}: {rows:?}");
        assert_eq!(rows[0].fate.as_str(), "accepted", "{id}: {rows:?}");
    }
}
