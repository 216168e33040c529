//! Replays the saved fuzz corpus (`fuzz/corpus/<target>/`) and every crash
//! or hang input cargo-fuzz saved (`fuzz/artifacts/<target>/`) through the
//! same harness functions the fuzz targets run, on stable `cargo test`.
//! Each input must run without a panic, with every invariant holding.

#[path = "../../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn fuzz_corpus_and_artifacts_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (name, run) in harness::TARGETS {
        let mut files = inputs(&root.join("corpus").join(name));
        assert!(!files.is_empty(), "no seed corpus for fuzz target {name}");
        files.extend(inputs(&root.join("artifacts").join(name)));
        for f in files {
            let data = std::fs::read(&f).expect("read corpus file");
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "fuzz target {name} panics on {}", f.display());
            total += 1;
        }
    }
    assert!(total > 0);
}

/// Regression for a bug found by the `ack_roundtrip` fuzzer: for a message
/// declaring `MSH-18 = 8859/n`, the ACK was sent as UTF-8 bytes while
/// echoing `8859/n`, so a sender decoding its own charset read an MSA-2
/// that differed from the MSH-10 it sent. The ACK is now encoded in the
/// declared character set.
#[test]
fn ack_bytes_match_declared_charset() {
    use switchboard::listener::ack::{self, AckCode, AckOptions};
    use switchboard::parse::{Charset, Header, decode_frame, split};
    let msg =
        b"MSH|^~\\&|LAB|HOSP|SB|HOSP|20261123120000||ADT^A01|CTRL\xe9|P|2.5||||||8859/1\rEVN|A01\r";
    let d = decode_frame(msg, Charset::Utf8).expect("decodes as 8859/1");
    let sp = split(&d.text).expect("splits");
    let h = Header::parse(sp.messages[0]).expect("MSH parses");
    let now = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    let bytes = ack::build(&h, AckCode::AA, None, now, "A1", AckOptions::default());
    let back = decode_frame(&bytes, Charset::Utf8).expect("ACK decodes");
    let msa = back
        .text
        .split('\r')
        .find(|s| s.starts_with("MSA"))
        .and_then(|s| s.split('|').nth(2))
        .unwrap_or("")
        .to_string();
    assert_eq!(
        msa, h.control_id,
        "MSA-2 as the sender decodes it != MSH-10"
    );
}
