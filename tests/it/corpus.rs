//! Every message of `../shared/corpus/hl7v2` over real TCP, with the exact
//! acknowledgement asserted.

use std::collections::BTreeMap;

use crate::support::*;

/// Files whose answer is not AA, with the expected MSA-1 and ERR-3 and why.
/// Each was checked by hand against the message.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

fn msh_fields(text: &str) -> Vec<String> {
    let first = text
        .trim_start_matches('\u{feff}')
        .split(['\r', '\n'])
        .next()
        .unwrap_or("");
    let sep = first.chars().nth(3).unwrap_or('|');
    first.split(sep).map(str::to_string).collect()
}

#[tokio::test]
async fn every_corpus_message_gets_the_exact_acknowledgement() {
    let Some(dir) = corpus_dir() else { return };
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    assert!(files.len() >= 100, "corpus has {} files", files.len());
    let exceptions: BTreeMap<&str, (&str, &str)> =
        EXCEPTIONS.iter().map(|(f, a, e)| (*f, (*a, *e))).collect();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let msh = msh_fields(&text);
        // Files may repeat a control id: make each unique so none is a duplicate.
        let control_id = msh.get(9).cloned().unwrap_or_default();
        // Enhanced mode (MSH-15/16): the accept acknowledgement follows MSH-15.
        let accept = msh
            .get(14)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let app = msh
            .get(15)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let enhanced = !accept.is_empty() || !app.is_empty();
        c.send_raw(&frame(&bytes)).await;
        if accept == "NE" || accept == "ER" {
            // No accept ACK on success: the next answer on the connection
            // must be the sentinel's (exactly one answer per frame, in order).
            let sentinel = format!("S-{name}");
            c.send(&oru(&sentinel)).await;
            let ack = c.recv().await;
            if field(&ack, "MSA", 2) != sentinel {
                failures.push(format!(
                    "{name}: MSH-15 {accept} but an accept ACK was sent: {ack:?}"
                ));
            }
            let rows = journal_rows(&gw.journal_path(), &control_id);
            if rows.iter().all(|r| r.fate.as_str() == "rejected") {
                failures.push(format!(
                    "{name}: not accepted: {:?}",
                    rows.first().map(|r| (&r.reason, &r.error_location))
                ));
            }
            continue;
        }
        let ack = c.recv().await;
        let code = ack_code(&ack);
        let default = if enhanced { ("CA", "") } else { ("AA", "") };
        let (want_code, want_err) = exceptions.get(name.as_str()).copied().unwrap_or(default);
        let mut problems = Vec::new();
        if code != want_code {
            problems.push(format!(
                "MSA-1 {code} (ERR {:?}), want {want_code}",
                ack.split('\r').find(|s| s.starts_with("ERR"))
            ));
        }
        if !want_err.is_empty() && err_code(&ack) != want_err {
            problems.push(format!("ERR-3 {}, want {want_err}", err_code(&ack)));
        }
        if field(&ack, "MSA", 2) != control_id {
            problems.push("MSA-2 is not MSH-10".into());
        }
        let trigger = msh
            .get(8)
            .map(|t| t.split('^').nth(1).unwrap_or("").to_string())
            .unwrap_or_default();
        if field(&ack, "MSH", 9) != format!("ACK^{trigger}^ACK") {
            problems.push(format!("MSH-9 {}", field(&ack, "MSH", 9)));
        }
        for (ack_f, msg_f) in [(3, 4), (4, 5), (5, 2), (6, 3)] {
            if field(&ack, "MSH", ack_f) != msh.get(msg_f).cloned().unwrap_or_default() {
                problems.push(format!(
                    "MSH-{ack_f} does not echo the sender's MSH-{}",
                    msg_f + 1
                ));
            }
        }
        if field(&ack, "MSH", 12) != msh.get(11).cloned().unwrap_or_default() {
            problems.push("MSH-12 not echoed".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus files answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
