//! Connections: kept connections with a window of pipelined messages, and
//! one connection per message. Every answer is checked: one MLLP frame per
//! message, in order, MSA-2 equal to the message's MSH-10.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use switchboard::listener::codec::{Frame, MllpCodec, frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::ledger::LedgerTx;
use crate::messages::Template;
use crate::report::Tally;

/// Any byte stream: TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS client settings.
pub struct Tls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

/// Everything the connections share.
pub struct Plan {
    pub addr: String,
    pub tls: Option<Tls>,
    pub template: Template,
    pub run_id: String,
    pub window: usize,
    pub timeout: Duration,
    pub max_frame_bytes: usize,
    pub ledger: Option<LedgerTx>,
    /// Wall-clock time at `epoch`, for ledger timestamps.
    pub wall_epoch: SystemTime,
    pub epoch: Instant,
    /// Messages per second over all connections (open loop); `None`: as
    /// fast as the window allows.
    pub rate: Option<f64>,
    /// End-to-end run: the receiver that notes each alert's arrival.
    pub e2e: Option<Arc<crate::e2e::E2e>>,
}

impl Plan {
    /// MSH-10 of message `n`.
    pub fn control_id(&self, n: u64) -> String {
        format!("{}-{n:07}", self.run_id)
    }

    fn sender(&self) -> String {
        format!(
            "{}^{}",
            self.template.sending_app, self.template.sending_facility
        )
    }

    fn record(&self, id: &str, code: &str, at: Instant) {
        if let Some(tx) = &self.ledger {
            let when = self.wall_epoch + at.saturating_duration_since(self.epoch);
            let when: chrono::DateTime<chrono::Utc> = when.into();
            let line = format!(
                "{}\t{id}\t{code}\t{}\n",
                self.sender(),
                when.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            );
            let _ = tx.send(line);
        }
    }

    /// Opens one connection (TCP, then TLS when configured).
    pub async fn connect(&self) -> Result<Box<dyn Io>, String> {
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| format!("connect to {}: timed out", self.addr))?
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => {
                let hs = tls.connector.connect(tls.server_name.clone(), tcp);
                let s = tokio::time::timeout(self.timeout, hs)
                    .await
                    .map_err(|_| "TLS handshake: timed out".to_string())?
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                Ok(Box::new(s))
            }
        }
    }
}

/// Hands out message numbers `[next, end)` to whichever connection is ready.
pub struct Counter {
    start: u64,
    next: AtomicU64,
    end: u64,
    /// When the first number was handed out (the pacing origin).
    t0: std::sync::OnceLock<Instant>,
}

impl Counter {
    pub fn new(start: u64, count: u64) -> Counter {
        Counter {
            start,
            next: AtomicU64::new(start),
            end: start + count,
            t0: std::sync::OnceLock::new(),
        }
    }

    fn claim(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.t0.get_or_init(Instant::now);
        (n < self.end).then_some(n)
    }

    /// When message `n` is due at `rate` messages per second.
    fn due(&self, n: u64, rate: f64) -> Instant {
        let t0 = *self.t0.get_or_init(Instant::now);
        t0 + Duration::from_secs_f64((n - self.start) as f64 / rate)
    }
}

/// MSA-1 and MSA-2 of an acknowledgement.
pub fn msa(ack: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(ack);
    let sep = if text.starts_with("MSH") {
        text.chars().nth(3).unwrap_or('|')
    } else {
        '|'
    };
    let seg = text
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSA") && s[3..].starts_with(sep))?;
    let mut fields = seg.split(sep).skip(1);
    let code = fields.next().unwrap_or("").to_string();
    let id = fields.next().unwrap_or("").to_string();
    Some((code, id))
}

/// Checks one answer against the control id it must carry; true when it
/// answers that message (accepted or rejected).
fn check(plan: &Plan, tally: &mut Tally, expected: &str, ack: &[u8], at: Instant) -> bool {
    match msa(ack) {
        None => {
            tally.unreadable += 1;
            tally.problem(format!("answer for {expected} has no MSA segment"));
            false
        }
        Some((code, id)) if id == expected => {
            tally.code(&code);
            if code != "AA" && code != "CA" {
                tally.problem(format!("{expected}: MSA-1 {code}"));
            }
            plan.record(&id, &code, at);
            true
        }
        Some((code, id)) => {
            tally.mismatched += 1;
            tally.problem(format!(
                "expected MSA-2 {expected}, got {id:?} (MSA-1 {code})"
            ));
            false
        }
    }
}

fn payload(f: Frame) -> bytes::Bytes {
    match f {
        Frame::Message(b) | Frame::Oversized(b) => b,
    }
}

/// One kept connection: up to `window` messages in flight; a writer task
/// sends, this task reads and checks. Latencies are recorded when `measure`.
pub async fn kept(
    plan: Arc<Plan>,
    counter: Arc<Counter>,
    stream: Box<dyn Io>,
    measure: bool,
) -> Tally {
    let (mut rd, wr) = tokio::io::split(stream);
    let window = Arc::new(Semaphore::new(plan.window));
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let abort = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        plan.clone(),
        counter,
        wr,
        window.clone(),
        tx,
        abort.clone(),
    ));

    let mut tally = Tally::default();
    let mut codec = MllpCodec::new(plan.max_frame_bytes, false);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut expected: VecDeque<String> = VecDeque::new();
    // Receipt time of each answer, in order; None when it did not answer
    // the message expected.
    let mut answers: Vec<Option<Instant>> = Vec::new();
    let mut writer_done = false;
    let mut deadline = Instant::now() + plan.timeout;
    'conn: loop {
        loop {
            let f = match codec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tally.connection_errors += 1;
                    tally.problem(format!("framing: {e}"));
                    break 'conn;
                }
            };
            let at = Instant::now();
            deadline = at + plan.timeout;
            let next = match expected.pop_front() {
                Some(id) => Some(id),
                None => rx.try_recv().ok(),
            };
            match next {
                Some(id) => {
                    let ok = check(&plan, &mut tally, &id, &payload(f), at);
                    answers.push(ok.then_some(at));
                    window.add_permits(1);
                }
                None => {
                    tally.extra += 1;
                    tally.problem("an answer arrived with no message waiting for one".into());
                }
            }
        }
        // `writer_done` means the queue is closed and drained.
        if writer_done && expected.is_empty() {
            break;
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => {
                    if !(writer_done && expected.is_empty()) {
                        tally.connection_errors += 1;
                        tally.problem("the server closed the connection".into());
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tally.connection_errors += 1;
                    tally.problem(format!("read: {e}"));
                    break;
                }
            },
            id = rx.recv(), if !writer_done => match id {
                Some(id) => {
                    expected.push_back(id);
                    deadline = Instant::now() + plan.timeout;
                }
                None => writer_done = true,
            },
            _ = tokio::time::sleep_until(deadline) => {
                tally.connection_errors += 1;
                tally.problem(format!(
                    "no answer for {} s ({} waiting)",
                    plan.timeout.as_secs(),
                    expected.len()
                ));
                break;
            }
        }
    }
    abort.cancel();
    window.close();
    let sent = writer.await.unwrap_or_default();
    tally.sent = sent.len() as u64;
    tally.unanswered = tally.sent.saturating_sub(answers.len() as u64);
    if measure {
        for (t0, t1) in sent.iter().zip(&answers) {
            if let Some(t1) = t1 {
                tally
                    .latencies_ns
                    .push(t1.saturating_duration_since(*t0).as_nanos() as u64);
            }
        }
    }
    tally
}

/// Sends messages while the window allows; each control id is queued for
/// the reader before its bytes are written. Returns the time each
/// message's last byte was written.
async fn write_loop(
    plan: Arc<Plan>,
    counter: Arc<Counter>,
    mut wr: tokio::io::WriteHalf<Box<dyn Io>>,
    window: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<String>,
    abort: CancellationToken,
) -> Vec<Instant> {
    let mut sent = Vec::new();
    loop {
        let permit = tokio::select! {
            p = window.acquire() => p,
            _ = abort.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        permit.forget();
        let Some(n) = counter.claim() else { break };
        if let Some(rate) = plan.rate {
            tokio::select! {
                _ = tokio::time::sleep_until(counter.due(n, rate)) => {}
                _ = abort.cancelled() => break,
            }
        }
        let id = plan.control_id(n);
        let bytes = frame(plan.template.message(n, &id).as_bytes());
        if tx.send(id).is_err() {
            break;
        }
        let write = async {
            wr.write_all(&bytes).await?;
            wr.flush().await
        };
        let done = tokio::select! {
            r = write => r.is_ok(),
            _ = abort.cancelled() => false,
        };
        if !done {
            // The reader sees the failure too and counts it.
            break;
        }
        let at = Instant::now();
        if let Some(e2e) = &plan.e2e {
            e2e.sent(n, at);
        }
        sent.push(at);
    }
    sent
}

/// One connection per message (for servers that mishandle kept
/// connections). Latency excludes connect and handshake.
pub async fn one_per_connection(plan: Arc<Plan>, counter: Arc<Counter>, measure: bool) -> Tally {
    let mut tally = Tally::default();
    while let Some(n) = counter.claim() {
        let id = plan.control_id(n);
        let stream = match plan.connect().await {
            Ok(s) => s,
            Err(e) => {
                tally.connection_errors += 1;
                tally.problem(format!("{id}: {e}"));
                continue;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        let bytes = frame(plan.template.message(n, &id).as_bytes());
        if let Err(e) = async {
            wr.write_all(&bytes).await?;
            wr.flush().await
        }
        .await
        {
            tally.connection_errors += 1;
            tally.problem(format!("{id}: write: {e}"));
            continue;
        }
        let t0 = Instant::now();
        tally.sent += 1;
        let mut codec = MllpCodec::new(plan.max_frame_bytes, false);
        let mut buf = BytesMut::with_capacity(4096);
        let deadline = t0 + plan.timeout;
        let answer = loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => break Ok(payload(f)),
                Ok(None) => {}
                Err(e) => break Err(format!("framing: {e}")),
            }
            match tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await {
                Ok(Ok(0)) => break Err("closed before answering".to_string()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break Err(format!("read: {e}")),
                Err(_) => break Err(format!("no answer in {} s", plan.timeout.as_secs())),
            }
        };
        let at = Instant::now();
        match answer {
            Ok(ack) => {
                if check(&plan, &mut tally, &id, &ack, at) && measure {
                    tally
                        .latencies_ns
                        .push(at.saturating_duration_since(t0).as_nanos() as u64);
                }
            }
            Err(e) => {
                tally.unanswered += 1;
                tally.problem(format!("{id}: {e}"));
            }
        }
        // A second frame in the same read is a second answer to one message.
        if !buf.is_empty()
            && let Ok(Some(_)) = codec.decode(&mut buf)
        {
            tally.extra += 1;
            tally.problem(format!("{id}: more than one answer"));
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msa_fields_are_read_with_the_message_separator() {
        let ack = b"MSH|^~\\&|SB|HOSP|LAB|HOSP|20261123120000||ACK^R01^ACK|X1|P|2.5.1\rMSA|AA|R-0000001\r";
        assert_eq!(msa(ack), Some(("AA".into(), "R-0000001".into())));
        let ack = b"MSH#^~\\&#SB\rMSA#AE#R-2#bad\r";
        assert_eq!(msa(ack), Some(("AE".into(), "R-2".into())));
        assert_eq!(msa(b"MSH|^~\\&|SB\rMSAX|AA|1\r"), None);
        assert_eq!(msa(b""), None);
        let ack = b"MSH|^~\\&|SB\nMSA|CA|Z9\n";
        assert_eq!(msa(ack), Some(("CA".into(), "Z9".into())));
    }

    #[test]
    fn counter_hands_out_each_number_once() {
        let c = Counter::new(5, 3);
        assert_eq!(
            (c.claim(), c.claim(), c.claim(), c.claim()),
            (Some(5), Some(6), Some(7), None)
        );
    }
}
