//! Audit trail: appending records, and `verify` over a 100,000-record log
//! with a checkpoint every 1,000 records (target: at least 100,000 records
//! verified per second).
//!
//! `cargo bench --bench audit`

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard::audit::{self, AuditRecord, Chain, Signer};

const RECORDS: u64 = 100_000;

fn build(path: &std::path::Path) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .unwrap();
    conn.execute_batch(audit::SCHEMA).unwrap();
    let signer = Signer::generate("bench.switchboard/audit").unwrap();
    let mut chain = Chain::default();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let tx = conn.transaction().unwrap();
    for i in 1..=RECORDS {
        let rec = AuditRecord::new(
            t0 + chrono::Duration::milliseconds(i as i64),
            "sender:lab",
            "message.received",
            format!("message:{i}"),
            "127.0.0.1:5000",
            "AA",
        );
        chain.append(&tx, &rec).unwrap();
        if i % 1000 == 0 {
            audit::checkpoint(&tx, &mut chain, &signer).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn bench_verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite3");
    build(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut g = c.benchmark_group("audit_verify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("100k_records", |b| {
        b.iter(|| {
            let report = audit::verify(&conn, None, "bench.switchboard/audit").unwrap();
            assert!(report.ok(), "{report}");
            black_box(report)
        })
    });
    g.finish();
}

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("a.sqlite3")).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .unwrap();
    conn.execute_batch(audit::SCHEMA).unwrap();
    let mut chain = Chain::default();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut n = 0u64;
    let mut g = c.benchmark_group("audit_append");
    g.throughput(Throughput::Elements(100));
    g.bench_function("100_records_one_transaction", |b| {
        b.iter(|| {
            let tx = conn.transaction().unwrap();
            for _ in 0..100 {
                n += 1;
                let rec = AuditRecord::new(
                    t0,
                    "sender:lab",
                    "message.received",
                    format!("message:{n}"),
                    "peer",
                    "AA",
                );
                chain.append(&tx, &rec).unwrap();
            }
            tx.commit().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench_verify, bench_append);
criterion_main!(benches);
