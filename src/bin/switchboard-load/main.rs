//! `switchboard-load`: drives any MLLP server with a realistic synthetic
//! HL7 v2 mix and checks every answer.
//!
//! N messages (ORU^R01 with a critical potassium, ADT^A01/A08, ORM^O01 STAT,
//! ORU^R40 alarms; names `ZZTEST^LOAD`, never real data), each with a unique
//! MSH-10 (`<run id>-<counter>`), go over K concurrent connections, W in
//! flight per connection (or one connection per message). Each answer must
//! be exactly one MLLP frame, in order, with MSA-2 equal to the message's
//! MSH-10; MSA-1 `AA`/`CA` counts as accepted, anything else as rejected.
//! Any mismatch, extra, unreadable or missing answer is an error, and the
//! tool exits 1 when there is any.
//!
//! Reported: msg/s (answers / seconds from the first send to the last
//! answer) and ACK latency p50/p99/p99.9/max, from the write of a message's
//! last byte to the read of its answer's end block; as text or, with
//! `--json`, one JSON object on stdout.
//!
//! With `--rate R` messages are paced at R per second over all connections
//! (open loop). With `--e2e-listen ADDR` every message is a critical result
//! for its own patient and room, the tool listens there as the gateway's
//! webhook backend, and reports end-to-end latency (last byte written →
//! alert received) and any alert missing or delivered twice (errors).
//!
//! Exit codes: 0 no errors, 1 errors (or a runtime failure), 64 usage.

#![forbid(unsafe_code)]

mod conn;
mod e2e;
mod ledger;
mod messages;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::task::JoinSet;
use tokio::time::Instant;

use conn::{Counter, Plan, Tls};
use messages::Template;
use report::{Report, Tally};

/// Load generator and answer checker for MLLP servers.
#[derive(Parser, Debug)]
#[command(
    name = "switchboard-load",
    version,
    about = "Load generator and answer checker for MLLP servers (HL7 v2)",
    long_about = None
)]
struct Args {
    /// MLLP server to drive (host:port).
    #[arg(long, default_value = "127.0.0.1:2575")]
    addr: String,
    /// Messages to send and measure.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Messages in flight per connection (1: send, wait for the answer, send).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// A new connection for every message (for servers that misbehave on
    /// kept connections); the window is then 1.
    #[arg(long)]
    one_per_connection: bool,
    /// Messages sent first, on their own connections, and not measured
    /// (their answers are still checked and their errors counted).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Longest wait for any progress (connect, handshake, next answer).
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Prefix of every MSH-10 (default: derived from the clock, 7 characters).
    #[arg(long)]
    run_id: Option<String>,
    /// MSH-3 of every message.
    #[arg(long, default_value = "LOADGEN")]
    sending_app: String,
    /// MSH-4 of every message.
    #[arg(long, default_value = "HOSP")]
    sending_facility: String,
    /// MSH-11 of every message.
    #[arg(long, default_value = "P")]
    processing_id: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Append one fsync'd line per answer: `MSH-3^MSH-4 TAB MSH-10 TAB MSA-1 TAB time`.
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Connect with TLS (1.2 or 1.3).
    #[arg(long)]
    tls: bool,
    /// PEM bundle of the CA(s) to trust for the server certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// Name to verify in the server certificate (default: the host of --addr).
    #[arg(long, requires = "tls")]
    server_name: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Largest answer frame accepted.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_frame_bytes: usize,
    /// Messages per second over all connections (default: as fast as the
    /// window allows).
    #[arg(long)]
    rate: Option<f64>,
    /// Listen here as the gateway's webhook backend and measure end to end
    /// (every message a critical result in its own room).
    #[arg(long, value_name = "ADDR")]
    e2e_listen: Option<std::net::SocketAddr>,
    /// After the last ACK, how long to wait for the last alerts.
    #[arg(long, default_value_t = 30)]
    e2e_wait_secs: u64,
}

const USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = validate(&args) {
        eprintln!("switchboard-load: {e}");
        return ExitCode::from(USAGE);
    }
    let tls = match args.tls.then(|| tls(&args)).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchboard-load: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard-load: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let ledger = match &args.ledger {
        None => None,
        Some(path) => match ledger::Ledger::open(path) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("switchboard-load: ledger {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
    };
    let (ledger, ledger_tx) = match ledger {
        Some((l, tx)) => (Some(l), Some(tx)),
        None => (None, None),
    };
    let wall = wall_clock();
    let plan = Plan {
        addr: args.addr.clone(),
        tls,
        template: Template {
            sending_app: args.sending_app.clone(),
            sending_facility: args.sending_facility.clone(),
            timestamp: hl7_timestamp(wall),
            processing_id: args.processing_id.clone(),
            critical_only: args.e2e_listen.is_some(),
        },
        run_id: args.run_id.clone().unwrap_or_else(|| default_run_id(wall)),
        window: if args.one_per_connection {
            1
        } else {
            args.window
        },
        timeout: Duration::from_secs(args.timeout_secs),
        max_frame_bytes: args.max_frame_bytes,
        ledger: ledger_tx,
        wall_epoch: wall,
        epoch: runtime.block_on(async { Instant::now() }),
        rate: args.rate,
        e2e: None,
    };
    let mut plan = plan;
    if let Some(addr) = args.e2e_listen {
        let e2e = Arc::new(e2e::E2e::default());
        if let Err(e) = runtime.block_on(e2e::listen(addr, e2e.clone())) {
            eprintln!("switchboard-load: {e}");
            return ExitCode::from(1);
        }
        plan.e2e = Some(e2e);
    }
    let plan = Arc::new(plan);
    let mut report = runtime.block_on(run(&args, plan.clone()));
    if let Some(e2e) = &plan.e2e {
        runtime.block_on(async {
            let until = Instant::now() + Duration::from_secs(args.e2e_wait_secs);
            while !e2e.complete() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        report.e2e = Some(e2e.figures());
    }
    // The plan holds the ledger's sender: the ledger only finishes once
    // every sender is gone (keeping it alive here hung every --ledger run).
    drop(plan);
    drop(runtime);
    if let Some(l) = ledger
        && let Err(e) = l.finish()
    {
        eprintln!("switchboard-load: ledger: {e}");
        return ExitCode::from(1);
    }
    for p in &report.tally.problems {
        eprintln!("switchboard-load: {p}");
    }
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn validate(a: &Args) -> Result<(), String> {
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if a.window == 0 {
        return Err("--window must be at least 1".into());
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    if (a.rate.is_some() || a.e2e_listen.is_some()) && a.one_per_connection {
        return Err("--rate and --e2e-listen work on kept connections".into());
    }
    if a.timeout_secs == 0 {
        return Err("--timeout-secs must be at least 1".into());
    }
    if a.tls && a.ca.is_none() {
        return Err("--tls needs --ca FILE".into());
    }
    if a.cert.is_some() && !a.tls {
        return Err("--cert/--key need --tls".into());
    }
    if let Some(r) = &a.run_id
        && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err("--run-id must be letters, digits and '-'".into());
    }
    for (name, v) in [
        ("--sending-app", &a.sending_app),
        ("--sending-facility", &a.sending_facility),
        ("--processing-id", &a.processing_id),
    ] {
        if v.bytes().any(|b| b"|^~\\&\r\n".contains(&b)) {
            return Err(format!("{name} must not contain HL7 delimiters"));
        }
    }
    Ok(())
}

/// The rustls client configuration (ring provider, TLS 1.3 and 1.2).
fn tls(a: &Args) -> Result<Tls, String> {
    let ca = a.ca.as_ref().ok_or("--tls needs --ca FILE")?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate found", ca.display()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots);
    let config = match (&a.cert, &a.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = match &a.server_name {
        Some(n) => n.clone(),
        None => host_of(&a.addr).to_string(),
    };
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| format!("invalid server name {name:?}"))?;
    Ok(Tls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// `host` of `host:port` / `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The one read of the wall clock: MSH-7 of every message, the default run
/// id and the base of ledger timestamps.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

fn hl7_timestamp(t: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = t.into();
    t.format("%Y%m%d%H%M%S+0000").to_string()
}

/// `L` and six base-36 digits of the current second (unique for ~25 days).
fn default_run_id(t: SystemTime) -> String {
    let mut s = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 36u64.pow(6);
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(s % 36) as usize];
        s /= 36;
    }
    format!("L{}", String::from_utf8_lossy(&digits))
}

/// Warm-up (not measured), then the measured phase.
async fn run(args: &Args, plan: Arc<Plan>) -> Report {
    let mut tally = Tally::default();
    let mut unsent = 0;
    if args.warmup > 0 {
        let counter = Arc::new(Counter::new(0, args.warmup));
        let (warm, _, warm_unsent) = phase(args, &plan, counter, args.warmup, false).await;
        unsent += warm_unsent;
        // Only errors of the warm-up count; its answers are not the run's.
        tally.mismatched += warm.mismatched;
        tally.extra += warm.extra;
        tally.unreadable += warm.unreadable;
        tally.unanswered += warm.unanswered;
        tally.connection_errors += warm.connection_errors;
        for p in warm.problems {
            tally.problem(format!("warm-up: {p}"));
        }
    }
    let counter = Arc::new(Counter::new(args.warmup, args.messages));
    let (measured, elapsed, measured_unsent) =
        phase(args, &plan, counter, args.messages, true).await;
    unsent += measured_unsent;
    tally.merge(measured);
    Report {
        target: args.addr.clone(),
        tls: args.tls,
        mode: if args.one_per_connection {
            "one connection per message"
        } else {
            "kept connections"
        },
        run_id: plan.run_id.clone(),
        messages: args.messages,
        connections: args.connections,
        window: plan.window,
        threads: args.threads.max(1),
        warmup: args.warmup,
        elapsed,
        tally,
        unsent,
        e2e: None,
    }
}

/// Runs `count` messages over the configured connections; the tally, the
/// time from the first send to the last answer, and how many were never
/// sent.
async fn phase(
    args: &Args,
    plan: &Arc<Plan>,
    counter: Arc<Counter>,
    count: u64,
    measure: bool,
) -> (Tally, Duration, u64) {
    let mut tally = Tally::default();
    let mut tasks = JoinSet::new();
    let start;
    if args.one_per_connection {
        start = Instant::now();
        for _ in 0..args.connections {
            tasks.spawn(conn::one_per_connection(
                plan.clone(),
                counter.clone(),
                measure,
            ));
        }
    } else {
        // Connect every connection first: the clock measures messages, not
        // handshakes.
        let mut connecting = JoinSet::new();
        for _ in 0..args.connections {
            let plan = plan.clone();
            connecting.spawn(async move { plan.connect().await });
        }
        let mut streams = Vec::new();
        while let Some(r) = connecting.join_next().await {
            match r {
                Ok(Ok(s)) => streams.push(s),
                Ok(Err(e)) => {
                    tally.connection_errors += 1;
                    tally.problem(e);
                }
                Err(e) => {
                    tally.connection_errors += 1;
                    tally.problem(format!("connect task: {e}"));
                }
            }
        }
        start = Instant::now();
        for s in streams {
            tasks.spawn(conn::kept(plan.clone(), counter.clone(), s, measure));
        }
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(t) => tally.merge(t),
            Err(e) => {
                tally.connection_errors += 1;
                tally.problem(format!("connection task: {e}"));
            }
        }
    }
    let elapsed = start.elapsed();
    let unsent = count.saturating_sub(tally.sent);
    (tally, elapsed, unsent)
}
