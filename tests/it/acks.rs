//! Every row of the README's acknowledgement table, over real TCP.

use std::time::Duration;

use crate::support::*;

fn msh(id: &str, ty: &str, processing: &str, version: &str) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||{ty}|{id}|{processing}|{version}\r"
    )
}

#[tokio::test]
async fn accepted_message_gets_aa_with_exact_header_echo() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c.roundtrip(&oru("ACC1")).await;
    let segs = segments(&ack);
    assert_eq!(segs.len(), 2, "MSH and MSA only: {ack:?}");
    assert!(
        ack.starts_with("MSH|^~\\&|SWITCHBOARD|HOSP|LAB|HOSP|"),
        "{ack}"
    );
    assert_eq!(field(&ack, "MSH", 9), "ACK^R01^ACK");
    assert_eq!(field(&ack, "MSH", 11), "P");
    assert_eq!(field(&ack, "MSH", 12), "2.5.1");
    assert!(!field(&ack, "MSH", 10).is_empty());
    assert!(field(&ack, "MSH", 7).ends_with("+0000"));
    assert_eq!(segs[1], "MSA|AA|ACC1");
    let rows = journal_rows(&gw.journal_path(), "ACC1");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].fate.as_str(), "accepted");
    assert_eq!(rows[0].events, 1);
    assert_eq!(rows[0].sender.as_deref(), Some("lab"));
}

#[tokio::test]
async fn junk_before_start_block_is_discarded_and_counted() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let mut bytes = b"\r\n garbage ".to_vec();
    bytes.extend(frame(oru("JUNK1").as_bytes()));
    c.send_raw(&bytes).await;
    assert_eq!(ack_code(&c.recv().await), "AA");
    let junk = gw
        .gateway
        .metrics()
        .junk_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(junk, 11);
}

#[tokio::test]
async fn lf_crlf_endings_and_bom_are_accepted() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let lf = oru("LF1").replace('\r', "\n");
    assert_eq!(ack_code(&c.roundtrip(&lf).await), "AA");
    let crlf = oru("CRLF1").replace('\r', "\r\n");
    assert_eq!(ack_code(&c.roundtrip(&crlf).await), "AA");
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(oru("BOM1").as_bytes());
    c.send_raw(&frame(&bom)).await;
    let ack = c.recv().await;
    assert_eq!(ack_code(&ack), "AA");
    assert_eq!(field(&ack, "MSA", 2), "BOM1");
    for id in ["LF1", "CRLF1", "BOM1"] {
        assert_eq!(journal_rows(&gw.journal_path(), id)[0].events, 1, "{id}");
    }
}

#[tokio::test]
async fn empty_frame_is_ae_100_with_empty_msa2() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    c.send_raw(&[SB, EB, CR]).await;
    let ack = c.recv().await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(field(&ack, "MSA", 2), "");
    assert_eq!(err_code(&ack), "100");
    assert_eq!(field(&ack, "ERR", 4), "E");
}

#[tokio::test]
async fn first_segment_not_msh_is_ae_100() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c
        .roundtrip("PID|1||X\rMSH|^~\\&|LAB|HOSP|||20261123||ADT^A01|NOTMSH|P|2.5\r")
        .await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "100");
}

#[tokio::test]
async fn bad_encoding_characters_are_ae_199_at_msh_2() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c
        .roundtrip("MSH|^^|LAB|HOSP|||20261123||ADT^A01|BADENC|P|2.5\rPID|1||X\r")
        .await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "199");
    assert_eq!(field(&ack, "ERR", 2), "MSH^1^2");
}

#[tokio::test]
async fn missing_control_id_is_ae_101_at_msh_10() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c
        .roundtrip(&oru("")) // MSH-10 empty
        .await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(field(&ack, "MSA", 2), "");
    assert_eq!(err_code(&ack), "101");
    assert_eq!(field(&ack, "ERR", 2), "MSH^1^10");
}

#[tokio::test]
async fn unrouted_type_and_trigger_are_filtered_with_aa() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c
        .roundtrip(&format!(
            "{}PID|1||X^^^H^MR\r",
            msh("ZZZ1", "ZZZ^Z01", "P", "2.5")
        ))
        .await;
    assert_eq!(ack_code(&ack), "AA");
    let ack = c
        .roundtrip(&format!(
            "{}PID|1||X^^^H^MR\r",
            msh("A99", "ADT^A99", "P", "2.5")
        ))
        .await;
    assert_eq!(ack_code(&ack), "AA");
    assert_eq!(
        journal_rows(&gw.journal_path(), "ZZZ1")[0].fate.as_str(),
        "filtered"
    );
    assert_eq!(
        journal_rows(&gw.journal_path(), "A99")[0].fate.as_str(),
        "filtered"
    );
}

#[tokio::test]
async fn unrouted_type_and_trigger_are_ar_200_201_in_reject_mode() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let m = format!("{}PID|1||X^^^H^MR\r", msh("RZ1", "ZZZ^Z01", "P", "2.5"))
        .replace("|LAB|", "|STRICT|");
    let ack = c.roundtrip(&m).await;
    assert_eq!(ack_code(&ack), "AR");
    assert_eq!(err_code(&ack), "200");
    let m = format!("{}PID|1||X^^^H^MR\r", msh("RZ2", "ADT^A99", "P", "2.5"))
        .replace("|LAB|", "|STRICT|");
    let ack = c.roundtrip(&m).await;
    assert_eq!(ack_code(&ack), "AR");
    assert_eq!(err_code(&ack), "201");
    assert_eq!(
        journal_rows(&gw.journal_path(), "RZ1")[0].fate.as_str(),
        "rejected"
    );
}

#[tokio::test]
async fn processing_id_not_allowed_is_ar_202() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c.roundtrip(&oru("PD1").replace("|PD1|P|", "|PD1|D|")).await;
    assert_eq!(ack_code(&ack), "AR");
    assert_eq!(err_code(&ack), "202");
    assert_eq!(field(&ack, "ERR", 2), "MSH^1^11");
    assert_eq!(field(&ack, "MSH", 11), "D");
}

#[tokio::test]
async fn training_message_is_accepted_and_marked() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c.roundtrip(&oru("PT1").replace("|PT1|P|", "|PT1|T|")).await;
    assert_eq!(ack_code(&ack), "AA");
    let row = &journal_rows(&gw.journal_path(), "PT1")[0];
    assert_eq!(row.processing_id, "T");
}

#[tokio::test]
async fn unsupported_version_is_ar_203() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c.roundtrip(&oru("V20").replace("|P|2.5.1", "|P|2.0")).await;
    assert_eq!(ack_code(&ack), "AR");
    // A pre-2.5 sender gets the ERR-1 layout of its own version.
    assert_eq!(
        field(&ack, "ERR", 1),
        "MSH^1^12^203&Unsupported version id&HL70357"
    );
    assert_eq!(field(&ack, "MSH", 12), "2.0");
}

#[tokio::test]
async fn result_without_obr_is_ae_100_at_obr() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let m: String = oru("NOOBR")
        .split('\r')
        .filter(|s| !s.starts_with("OBR"))
        .collect::<Vec<_>>()
        .join("\r");
    let ack = c.roundtrip(&m).await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "100");
    assert_eq!(field(&ack, "ERR", 2), "OBR^1");
}

#[tokio::test]
async fn empty_patient_id_is_ae_101_at_pid_3() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c
        .roundtrip(&oru("NOPID3").replace("PID|1||MRNNOPID3^^^HOSP^MR|", "PID|1|||"))
        .await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "101");
    assert_eq!(field(&ack, "ERR", 2), "PID^1^3");
    let row = &journal_rows(&gw.journal_path(), "NOPID3")[0];
    assert_eq!(row.fate.as_str(), "rejected");
    assert_eq!(row.error_code, Some(101));
    assert_eq!(row.error_location.as_deref(), Some("PID^1^3"));
}

#[tokio::test]
async fn data_type_errors_are_ae_102() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c.roundtrip(&oru("NMFOO").replace("||6.9|", "||FOO|")).await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "102");
    assert_eq!(field(&ack, "ERR", 2), "OBX^1^5");
    let ack = c
        .roundtrip(&oru("BADTS").replace("|20261123120000||ORU", "|20261345||ORU"))
        .await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "102");
    assert_eq!(field(&ack, "ERR", 2), "MSH^1^7");
}

#[tokio::test]
async fn unknown_patient_class_is_ae_103() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c
        .roundtrip(&adt_a01("PV1Q").replace("PV1|1|I|", "PV1|1|Q|"))
        .await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "103");
    assert_eq!(field(&ack, "ERR", 2), "PV1^1^2");
}

#[tokio::test]
async fn invalid_utf8_is_ae_102_and_unknown_charset_is_ar_203() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let m = oru("UTF8BAD").replace("|P|2.5.1\r", "|P|2.5.1||||||UNICODE UTF-8\r");
    let mut bytes = m.into_bytes();
    let pos = bytes.windows(8).position(|w| w == b"ZZCANARY").unwrap();
    bytes[pos] = 0xFF;
    c.send_raw(&frame(&bytes)).await;
    let ack = c.recv().await;
    assert_eq!(ack_code(&ack), "AE", "{ack:?}");
    assert_eq!(err_code(&ack), "102", "{ack:?}");
    assert_eq!(field(&ack, "MSA", 2), "UTF8BAD");
    assert_eq!(field(&ack, "MSH", 18), "UNICODE UTF-8", "{ack:?}");
    let m = oru("CSBAD").replace("|P|2.5.1\r", "|P|2.5.1||||||KLINGON\r");
    let ack = c.roundtrip(&m).await;
    assert_eq!(ack_code(&ack), "AR");
    assert_eq!(err_code(&ack), "203");
    assert_eq!(field(&ack, "ERR", 2), "MSH^1^18");
}

#[tokio::test]
async fn latin1_message_is_decoded_and_charset_echoed() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let m = oru("L1")
        .replace("|P|2.5.1\r", "|P|2.5.1||||||8859/1\r")
        .replace("ZZCANARY", "ZZCAN\u{e9}RY");
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&m);
    c.send_raw(&frame(&bytes)).await;
    let ack = c.recv().await;
    assert_eq!(ack_code(&ack), "AA", "{ack:?}");
    assert_eq!(field(&ack, "MSH", 18), "8859/1");
}

#[tokio::test]
async fn unauthorised_source_is_ar_with_err() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let ack = c.roundtrip(&oru("REM1").replace("|LAB|", "|REMOTE|")).await;
    assert_eq!(ack_code(&ack), "AR");
    assert_eq!(err_code(&ack), "199");
    assert_eq!(field(&ack, "ERR", 5), "UNAUTHORIZED-SOURCE");
    assert_eq!(field(&ack, "ERR", 2), "MSH^1^3");
    assert_eq!(
        journal_rows(&gw.journal_path(), "REM1")[0].fate.as_str(),
        "rejected"
    );
}

#[tokio::test]
async fn unknown_sender_is_ar_with_err() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\ndata_dir = \"{}\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[senders]]\nname = \"lab\"\nmsh3 = [\"LAB\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.1\"]\n",
        dir.path().join("data").display()
    );
    let path = dir.path().join("s.toml");
    std::fs::write(&path, text).unwrap();
    let gw = switchboard::app::Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap();
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    let ack = c.roundtrip(&oru("UNK1").replace("|LAB|", "|WHO|")).await;
    assert_eq!(ack_code(&ack), "AR");
    assert_eq!(field(&ack, "ERR", 5), "UNKNOWN-SENDER");
    assert_eq!(ack_code(&c.roundtrip(&oru("KNOWN1")).await), "AA");
    gw.shutdown().await;
}

#[tokio::test]
async fn older_versions_get_the_v2_4_err_layout() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let m = oru("OLD1")
        .replace("|P|2.5.1", "|P|2.3")
        .replace("PID|1||MRNOLD1^^^HOSP^MR|", "PID|1|||");
    let ack = c.roundtrip(&m).await;
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(field(&ack, "MSA", 3), "Required field missing");
    assert_eq!(
        field(&ack, "ERR", 1),
        "PID^1^3^101&Required field missing&HL70357"
    );
}

#[tokio::test]
async fn pipelined_messages_are_answered_in_order_one_ack_each() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let mut bytes = Vec::new();
    for i in 0..200 {
        bytes.extend(frame(oru(&format!("PIPE{i}")).as_bytes()));
    }
    c.send_raw(&bytes).await;
    for i in 0..200 {
        let ack = c.recv().await;
        assert_eq!(field(&ack, "MSA", 2), format!("PIPE{i}"));
        assert_eq!(ack_code(&ack), "AA");
    }
    assert!(
        c.try_recv(Duration::from_millis(300)).await.is_none(),
        "exactly one ACK per message"
    );
    // Journal order follows arrival order.
    let ids: Vec<i64> = (0..200)
        .map(|i| journal_rows(&gw.journal_path(), &format!("PIPE{i}"))[0].id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn many_connections_interleaved_each_get_their_own_acks() {
    let gw = start_gateway().await;
    let mut tasks = Vec::new();
    for conn in 0..8 {
        let addr = gw.addr();
        tasks.push(tokio::spawn(async move {
            let mut c = Mllp::connect(addr).await;
            for i in 0..50 {
                let id = format!("C{conn}M{i}");
                let ack = c.roundtrip(&adt_a01(&id)).await;
                assert_eq!(field(&ack, "MSA", 2), id);
                assert_eq!(ack_code(&ack), "AA");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
