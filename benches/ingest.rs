//! Hot paths of ingest: MLLP frame decode, HL7 decode + header + events per
//! message type, and a durable journal commit (group of 1 and of 64).
//!
//! `cargo bench --bench ingest`

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use switchboard::journal::{DedupKey, Fate, NewMessage, Protection, SqliteStorage, Storage};
use switchboard::listener::codec::MllpCodec;
use switchboard::parse::{self, Charset, EventContext, Header};
use tokio_util::codec::Decoder;

const ORU: &str = "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||ORU^R01^ORU_R01|B1|P|2.5.1\r\
PID|1||MRN1^^^HOSP^MR||ZZTEST^BENCH||19700101|F\r\
PV1|1|I|ICU^101^A^HOSP\r\
ORC|RE|PL1|FL1||CM||^^^^^S\r\
OBR|1|PL1|FL1|24323-8^Comprehensive metabolic panel^LN|||20261123115500\r\
OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r\
OBX|2|NM|2951-2^Sodium^LN||139|mmol/L|135-145|N|||F\r\
OBX|3|NM|2075-0^Chloride^LN||101|mmol/L|98-107|N|||F\r\
OBX|4|NM|2028-9^CO2^LN||24|mmol/L|22-29|N|||F\r\
OBX|5|NM|3094-0^BUN^LN||18|mg/dL|7-20|N|||F\r\
OBX|6|NM|2160-0^Creatinine^LN||1.1|mg/dL|0.6-1.2|N|||F\r\
OBX|7|NM|2345-7^Glucose^LN||250|mg/dL|70-99|H|||F\r\
NTE|1||Synthetic benchmark message\r";

const ADT: &str = "MSH|^~\\&|ADT|HOSP|SWITCHBOARD|HOSP|20261123120000||ADT^A01^ADT_A01|B2|P|2.5.1\r\
EVN|A01|20261123120000\r\
PID|1||MRN2^^^HOSP^MR||ZZTEST^BENCH||19700101|F\r\
PV1|1|I|ICU^101^A^HOSP||||1234^ZZDOC^ATTENDING^^^^^^NPI\r";

fn frame(payload: &str) -> Vec<u8> {
    let mut v = vec![0x0B];
    v.extend_from_slice(payload.as_bytes());
    v.extend_from_slice(&[0x1C, 0x0D]);
    v
}

fn bench_codec(c: &mut Criterion) {
    let mut stream = Vec::new();
    for _ in 0..64 {
        stream.extend(frame(ORU));
    }
    c.bench_function("mllp_decode_64_frames", |b| {
        b.iter(|| {
            let mut codec = MllpCodec::new(4 * 1024 * 1024, false);
            let mut buf = BytesMut::from(&stream[..]);
            let mut n = 0;
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                black_box(f);
                n += 1;
            }
            assert_eq!(n, 64);
        })
    });
}

fn bench_parse(c: &mut Criterion) {
    for (name, msg) in [("oru_r01_7_obx", ORU), ("adt_a01", ADT)] {
        let bytes = frame(msg);
        let bytes = &bytes[1..bytes.len() - 2];
        c.bench_function(&format!("parse_{name}"), |b| {
            b.iter(|| {
                let d = parse::decode_frame(black_box(bytes), Charset::Utf8).unwrap();
                let split = parse::split(&d.text).unwrap();
                let h = Header::parse(split.messages[0]).unwrap();
                let ctx = EventContext {
                    sender: "lab",
                    timezone: chrono_tz::America::New_York,
                };
                black_box(parse::events(split.messages[0], &h, &ctx).unwrap())
            })
        });
    }
}

fn message(i: u64) -> NewMessage {
    NewMessage {
        received_at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
        peer: "127.0.0.1:5000".into(),
        sender: Some("lab".into()),
        key: DedupKey {
            msh3: "LAB".into(),
            msh4: "HOSP".into(),
            control_id: format!("C{i}"),
        },
        message_type: "ORU".into(),
        trigger: "R01".into(),
        processing_id: "P".into(),
        raw: ORU.as_bytes().to_vec(),
        raw_charset: "frame".into(),
        body_sha256: [7; 32],
        fate: Fate::Accepted,
        reason: None,
        error_code: None,
        error_location: None,
        events: vec![],
        ack_code: Some("AA".into()),
        ack: b"MSH|^~\\&|SWITCHBOARD|HOSP|LAB|HOSP|20261123120000||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|C1\r".to_vec(),
        app_ack: None,
        batch_ref: None,
    }
}

fn bench_journal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let protection = Protection::ephemeral("bench/audit").unwrap();
    let mut storage =
        SqliteStorage::open(&dir.path().join("bench.sqlite3"), protection, now).unwrap();
    let window = Duration::from_secs(3600);
    let mut next = 0u64;
    let mut g = c.benchmark_group("journal_commit_fsync");
    g.sample_size(20);
    for size in [1u64, 64] {
        g.bench_function(format!("batch_{size}"), |b| {
            b.iter(|| {
                let batch: Vec<NewMessage> = (0..size).map(|k| message(next + k)).collect();
                next += size;
                black_box(storage.commit(&batch, now, window).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_codec, bench_parse, bench_journal);
criterion_main!(benches);
