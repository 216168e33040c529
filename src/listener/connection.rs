//! One MLLP connection: read frames, prepare, commit, answer — in order.
//!
//! Frames are read ahead up to `max_in_flight` (pipelining); each frame's
//! messages are queued to the journal in arrival order, and answers are
//! written in the same order, exactly one acknowledgement (or one
//! acknowledgement batch) per frame, each only after the journal's receipt
//! for it. A frame that does not complete within `frame_timeout` from its
//! start block, or a connection idle for `idle_timeout`, is closed; pending
//! answers are still written first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::ack::{self, AckIds};
use super::codec::{self, Frame, MllpCodec};
use super::intake::{Intake, PeerInfo, PreparedFrame, storage_failure_ack};
use crate::clock::Clock;
use crate::config::Config;
use crate::journal::Journal;
use crate::telemetry::Metrics;

/// What every connection shares.
pub struct Shared {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The journal.
    pub journal: Journal,
    /// Acknowledgement ids.
    pub ids: AckIds,
    /// The injected clock.
    pub clock: Clock,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Wakes the application-acknowledgement outbox.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// The patient census, kept from the journal.
    pub census: Arc<crate::live::LiveCensus>,
    /// Rosters and mappings, reloadable.
    pub routing: Arc<crate::live::LiveRouting>,
    /// The alert desk (used on the committer thread).
    pub desk: Arc<std::sync::Mutex<crate::alert::desk::Desk>>,
    /// Wakes the alert router (new events committed).
    pub alert_wake: Arc<tokio::sync::Notify>,
    /// Wakes the alert timer (a deadline may have moved earlier).
    pub timer_wake: Arc<tokio::sync::Notify>,
    /// Wakes the delivery workers (new notifications).
    pub delivery_wake: Arc<tokio::sync::Notify>,
    /// Operator alarms (their own channel).
    pub alarms: Arc<crate::operator::Alarms>,
    /// Bumped after every run of the alert desk (`app::alerts::with_desk`);
    /// live views (the console's alert stream) re-read then. A watch
    /// channel: the writers never wait for a reader.
    pub alerts_changed: tokio::sync::watch::Sender<u64>,
    /// Cancelled when the gateway stops: long-lived responses end then.
    pub stopping: CancellationToken,
}

type Answer = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// An answer and when its frame was read (for the ACK latency histogram).
type TimedAnswer = Pin<Box<dyn Future<Output = (Vec<u8>, Instant)> + Send>>;

/// Serves one connection until the peer closes, a timeout, a framing error,
/// or shutdown.
pub async fn serve<S>(stream: S, peer: PeerInfo, shared: Arc<Shared>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.config.mllp;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut codec = MllpCodec::new(cfg.max_frame_bytes, cfg.strict_framing);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut pending: FuturesOrdered<TimedAnswer> = FuturesOrdered::new();
    let mut closing = false;
    let mut last_read = Instant::now();
    let mut reported_junk = 0;
    loop {
        // Take every complete frame already buffered (up to the in-flight bound).
        while !closing && pending.len() < cfg.max_in_flight {
            match codec.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(frame)) => match on_frame(&shared, &peer, frame).await {
                    (Some(answer), close) => {
                        let read_at = Instant::now();
                        pending.push_back(Box::pin(async move { (answer.await, read_at) }));
                        closing |= close;
                    }
                    (None, _) => closing = true,
                },
                Err(e) => {
                    tracing::info!(peer = %peer.addr, error = %e, "framing error; closing");
                    closing = true;
                }
            }
        }
        let junk = codec.junk_bytes();
        if junk > reported_junk {
            shared
                .metrics
                .junk_bytes
                .fetch_add(junk - reported_junk, std::sync::atomic::Ordering::Relaxed);
            reported_junk = junk;
        }
        if closing && pending.is_empty() {
            break;
        }
        let deadline = match codec.frame_started() {
            Some(start) => start + cfg.frame_timeout,
            None => last_read + cfg.idle_timeout,
        };
        tokio::select! {
            biased;
            Some((answer, read_at)) = pending.next(), if !pending.is_empty() => {
                if answer.is_empty() {
                    continue;
                }
                if let Err(e) = wr.write_all(&codec::frame(&answer)).await {
                    tracing::debug!(peer = %peer.addr, error = %e, "write failed; closing");
                    return;
                }
                shared.metrics.ack_latency.0.observe(read_at.elapsed());
            }
            _ = shutdown.cancelled(), if !closing => closing = true,
            read = read_some(&mut rd, &mut buf), if !closing && pending.len() < cfg.max_in_flight => {
                match read {
                    Ok(0) => closing = true,
                    Ok(_) => last_read = Instant::now(),
                    Err(e) => {
                        tracing::debug!(peer = %peer.addr, error = %e, "read failed; closing");
                        closing = true;
                    }
                }
            }
            _ = sleep_until(deadline), if !closing && pending.is_empty() => {
                if codec.frame_started().is_some() {
                    Metrics::inc(&shared.metrics.frame_timeouts);
                    tracing::info!(peer = %peer.addr, "partial frame timed out; closing, nothing journaled");
                } else {
                    Metrics::inc(&shared.metrics.idle_timeouts);
                    tracing::debug!(peer = %peer.addr, "idle timeout; closing");
                }
                closing = true;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK);
    rd.read_buf(buf).await
}

/// Handles one decoded frame: the answer's future, and whether the
/// connection must close after it.
async fn on_frame(shared: &Arc<Shared>, peer: &PeerInfo, frame: Frame) -> (Option<Answer>, bool) {
    Metrics::inc(&shared.metrics.frames);
    match frame {
        Frame::Message(bytes) => {
            let prepared = intake(shared, peer).frame(&bytes);
            (submit(shared, prepared).await, false)
        }
        Frame::Oversized(head) => {
            Metrics::inc(&shared.metrics.oversized_frames);
            tracing::warn!(peer = %peer.addr, max = shared.config.mllp.max_frame_bytes, "frame exceeds max_frame_bytes; answering AE 104 and closing");
            let prepared = intake(shared, peer).oversized(&head);
            (submit(shared, prepared).await, true)
        }
    }
}

fn intake<'a>(shared: &'a Shared, peer: &'a PeerInfo) -> Intake<'a> {
    Intake {
        senders: &shared.config.senders,
        now: shared.clock.now_utc(),
        ids: &shared.ids,
        peer,
    }
}

/// Queues every message of the frame (in order) and returns the future of
/// its answer. `None` when the journal has shut down.
async fn submit(shared: &Arc<Shared>, prepared: PreparedFrame) -> Option<Answer> {
    let mut waits = Vec::with_capacity(prepared.items.len());
    for item in &prepared.items {
        match shared.journal.submit(item.message.clone()).await {
            Ok(p) => waits.push(Some(p)),
            Err(_) => waits.push(None),
        }
    }
    if waits.iter().all(Option::is_none) && shutdown_like(shared) {
        return None;
    }
    let shared = shared.clone();
    Some(Box::pin(async move {
        let mut acks: Vec<Vec<u8>> = Vec::with_capacity(waits.len());
        for (item, wait) in prepared.items.iter().zip(waits) {
            let result = match wait {
                Some(p) => p.await,
                None => Err(crate::journal::JournalError::Closed),
            };
            let m = &shared.metrics;
            match result {
                Ok(receipt) => {
                    if receipt.is_duplicate() {
                        Metrics::inc(&m.duplicates);
                        tracing::info!(
                            journal_id = receipt.message_id(),
                            "duplicate resend answered with the stored acknowledgement"
                        );
                    }
                    if receipt.is_control_id_reuse() {
                        Metrics::inc(&m.control_id_reuses);
                        tracing::warn!(
                            journal_id = receipt.message_id(),
                            "control id reused with a different body; accepted as new"
                        );
                    }
                    let accepted = matches!(receipt.ack_code(), Some("AA" | "CA") | None);
                    Metrics::inc(if accepted {
                        &m.messages_accepted
                    } else {
                        &m.messages_rejected
                    });
                    m.feed(
                        item.message.sender.as_deref(),
                        &item.message.message_type,
                        accepted,
                    );
                    if item.message.app_ack.is_some() && !receipt.is_duplicate() {
                        shared.outbox_wake.notify_one();
                    }
                    acks.push(receipt.ack().to_vec());
                }
                Err(_) => {
                    Metrics::inc(&m.storage_failures);
                    acks.push(storage_failure_ack(
                        item,
                        shared.clock.now_utc(),
                        &shared.ids,
                    ));
                }
            }
        }
        match &prepared.envelope {
            None => acks.pop().unwrap_or_default(),
            Some((file, batch)) => {
                let parts: Vec<&[u8]> = acks
                    .iter()
                    .filter(|a| !a.is_empty())
                    .map(Vec::as_slice)
                    .collect();
                ack::build_batch(
                    file.as_ref(),
                    batch,
                    &parts,
                    shared.clock.now_utc(),
                    &shared.ids,
                )
            }
        }
    }))
}

fn shutdown_like(shared: &Shared) -> bool {
    shared.journal.is_closed()
}
