//! Tracing set-up and the gateway's counters. Logs carry ids, kinds and
//! counts — never message content — and metrics labels are configuration
//! names (sender names), never field values.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The filter without `RUST_LOG`: `info`, but only warnings and errors
/// from the Matrix SDK and its crypto (their info and debug lines name
/// rooms, devices and event types at a rate no operator needs, and must
/// never be a way for content to reach a log). Its HTTP client's error
/// lines (every refused request, with the server's message) and the key
/// backup's "no backup key" warning (we keep no server-side backup) are
/// off: the gateway logs each failed delivery and sync itself.
pub const DEFAULT_FILTER: &str = "info,matrix_sdk=warn,matrix_sdk_base=warn,matrix_sdk_crypto=warn,\
matrix_sdk_sqlite=warn,matrix_sdk_common=warn,ruma=warn,ruma_common=warn,vodozemac=warn,\
matrix_sdk::http_client=off,matrix_sdk_crypto::backups=error";

/// Installs the tracing subscriber (`RUST_LOG` filters; default
/// [`DEFAULT_FILTER`]).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Counters of the MLLP listener.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections currently open.
    pub connections_open: AtomicU64,
    /// MLLP connections closed at once because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// HTTP connections closed at once (503 on plain HTTP) because
    /// `[http] max_connections` were open.
    pub http_connections_refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: AtomicU64,
    /// Refused TLS handshakes not written to the audit trail one by one
    /// (rate limit per peer); they are counted in a summary record.
    pub tls_refusal_audits_suppressed: AtomicU64,
    /// Frames received.
    pub frames: AtomicU64,
    /// Bytes discarded outside frames.
    pub junk_bytes: AtomicU64,
    /// Frames larger than the limit.
    pub oversized_frames: AtomicU64,
    /// Connections closed because a frame did not complete in time.
    pub frame_timeouts: AtomicU64,
    /// Connections closed for idleness.
    pub idle_timeouts: AtomicU64,
    /// Messages answered AA/CA (or with no accept ack), by fate accepted/filtered.
    pub messages_accepted: AtomicU64,
    /// Messages answered with an error.
    pub messages_rejected: AtomicU64,
    /// Duplicates answered from the journal.
    pub duplicates: AtomicU64,
    /// Control-id reuses.
    pub control_id_reuses: AtomicU64,
    /// Answers AR/CE 207 because the journal could not commit.
    pub storage_failures: AtomicU64,
    /// Application acknowledgements delivered.
    pub app_acks_delivered: AtomicU64,
    /// Application acknowledgement delivery attempts that failed.
    pub app_ack_failures: AtomicU64,
    /// Gaps detected in FHIR subscription event numbers.
    pub fhir_subscription_gaps: AtomicU64,
    /// Gaps recovered with `$events`.
    pub fhir_gaps_recovered: AtomicU64,
    /// Notifications delivered by a backend.
    pub deliveries_sent: AtomicU64,
    /// Delivery attempts that will be retried.
    pub deliveries_retried: AtomicU64,
    /// Notifications dead-lettered.
    pub deliveries_dead: AtomicU64,
    /// Messages per (sender, message type): accepted and rejected.
    pub feeds: dashmap::DashMap<(String, String), FeedCounts>,
    /// When each configured sender's last message arrived (tokio's clock).
    pub feed_seen: dashmap::DashMap<String, tokio::time::Instant>,
    /// Operator alarms raised.
    pub operator_alarms_raised: AtomicU64,
    /// MLLP: from a frame's end block read to its acknowledgement written.
    pub ack_latency: AckLatency,
    /// From an alert's creation to its acceptance, per alert priority.
    pub time_to_accept: dashmap::DashMap<String, Histogram>,
}

/// A Prometheus histogram with fixed upper bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending, seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The series lines (`_bucket` cumulative, `_sum`, `_count`) of
    /// `name` with `labels` (`key="value",...` or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        if labels.is_empty() {
            let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        } else {
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}"
            );
        }
    }
}

/// Upper bounds of the ACK latency histogram (seconds).
pub const ACK_LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the time-to-accept histogram (seconds).
pub const TIME_TO_ACCEPT_BOUNDS: &[f64] = &[
    15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// The MLLP ACK latency histogram.
#[derive(Debug)]
pub struct AckLatency(pub Histogram);

impl Default for AckLatency {
    fn default() -> Self {
        AckLatency(Histogram::new(ACK_LATENCY_BOUNDS))
    }
}

/// Messages of one sender and type.
#[derive(Debug, Default)]
pub struct FeedCounts {
    /// Answered AA/CA (or accepted with no acknowledgement asked).
    pub accepted: AtomicU64,
    /// Answered with an error.
    pub rejected: AtomicU64,
}

impl Metrics {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one message of `sender` (unconfigured senders are counted as
    /// `-`) and `message_type`, and notes that the sender is alive.
    pub fn feed(&self, sender: Option<&str>, message_type: &str, accepted: bool) {
        let s = sender.unwrap_or("-");
        let t = if message_type.is_empty() {
            "-"
        } else {
            message_type
        };
        let key = (s.to_string(), t.to_string());
        let counts = self.feeds.entry(key).or_default();
        Self::inc(if accepted {
            &counts.accepted
        } else {
            &counts.rejected
        });
        if let Some(s) = sender {
            self.feed_seen
                .insert(s.to_string(), tokio::time::Instant::now());
        }
    }

    /// Records the time from an alert's creation to its acceptance.
    pub fn accepted_after(&self, priority: &str, d: Duration) {
        self.time_to_accept
            .entry(priority.to_string())
            .or_insert_with(|| Histogram::new(TIME_TO_ACCEPT_BOUNDS))
            .observe(d);
    }

    /// The histograms in the Prometheus text format.
    pub fn render_histograms(&self) -> String {
        let mut out = String::from("# TYPE switchboard_mllp_ack_latency_seconds histogram\n");
        self.ack_latency
            .0
            .render(&mut out, "switchboard_mllp_ack_latency_seconds", "");
        out.push_str("# TYPE switchboard_alert_time_to_accept_seconds histogram\n");
        let mut rows: Vec<_> = self
            .time_to_accept
            .iter()
            .map(|e| e.key().clone())
            .collect();
        rows.sort();
        for p in rows {
            if let Some(h) = self.time_to_accept.get(&p) {
                h.render(
                    &mut out,
                    "switchboard_alert_time_to_accept_seconds",
                    &format!("priority=\"{}\"", label(&p)),
                );
            }
        }
        out
    }

    /// The per-feed counters in the Prometheus text format.
    pub fn render_feeds(&self) -> String {
        let mut rows: Vec<(String, String, u64, u64)> = self
            .feeds
            .iter()
            .map(|e| {
                (
                    e.key().0.clone(),
                    e.key().1.clone(),
                    e.value().accepted.load(Ordering::Relaxed),
                    e.value().rejected.load(Ordering::Relaxed),
                )
            })
            .collect();
        rows.sort();
        let mut out = String::from("# TYPE switchboard_feed_messages_total counter\n");
        for (sender, ty, acc, rej) in rows {
            let (sender, ty) = (label(&sender), label(&ty));
            let _ = writeln!(
                out,
                "switchboard_feed_messages_total{{sender=\"{sender}\",type=\"{ty}\",result=\"accepted\"}} {acc}\n\
                 switchboard_feed_messages_total{{sender=\"{sender}\",type=\"{ty}\",result=\"rejected\"}} {rej}"
            );
        }
        out
    }

    /// Renders the counters in the Prometheus text format.
    pub fn render(&self, extra: &[(&str, &str, u64)]) -> String {
        let rows: [(&str, &str, &AtomicU64); 23] = [
            (
                "switchboard_deliveries_sent_total",
                "counter",
                &self.deliveries_sent,
            ),
            (
                "switchboard_deliveries_retried_total",
                "counter",
                &self.deliveries_retried,
            ),
            (
                "switchboard_deliveries_dead_total",
                "counter",
                &self.deliveries_dead,
            ),
            (
                "switchboard_mllp_connections_accepted_total",
                "counter",
                &self.connections_accepted,
            ),
            (
                "switchboard_mllp_connections_open",
                "gauge",
                &self.connections_open,
            ),
            (
                "switchboard_mllp_connections_refused_total",
                "counter",
                &self.connections_refused,
            ),
            (
                "switchboard_http_connections_refused_total",
                "counter",
                &self.http_connections_refused,
            ),
            (
                "switchboard_mllp_tls_handshake_failures_total",
                "counter",
                &self.tls_handshake_failures,
            ),
            (
                "switchboard_mllp_tls_refusal_audits_suppressed_total",
                "counter",
                &self.tls_refusal_audits_suppressed,
            ),
            ("switchboard_mllp_frames_total", "counter", &self.frames),
            (
                "switchboard_mllp_junk_bytes_total",
                "counter",
                &self.junk_bytes,
            ),
            (
                "switchboard_mllp_oversized_frames_total",
                "counter",
                &self.oversized_frames,
            ),
            (
                "switchboard_mllp_frame_timeout_total",
                "counter",
                &self.frame_timeouts,
            ),
            (
                "switchboard_mllp_idle_timeout_total",
                "counter",
                &self.idle_timeouts,
            ),
            (
                "switchboard_messages_accepted_total",
                "counter",
                &self.messages_accepted,
            ),
            (
                "switchboard_messages_rejected_total",
                "counter",
                &self.messages_rejected,
            ),
            (
                "switchboard_messages_duplicate_total",
                "counter",
                &self.duplicates,
            ),
            (
                "switchboard_messages_control_id_reuse_total",
                "counter",
                &self.control_id_reuses,
            ),
            (
                "switchboard_journal_unavailable_answers_total",
                "counter",
                &self.storage_failures,
            ),
            (
                "switchboard_app_acks_delivered_total",
                "counter",
                &self.app_acks_delivered,
            ),
            (
                "switchboard_app_ack_failures_total",
                "counter",
                &self.app_ack_failures,
            ),
            (
                "switchboard_fhir_subscription_gaps_total",
                "counter",
                &self.fhir_subscription_gaps,
            ),
            (
                "switchboard_fhir_gaps_recovered_total",
                "counter",
                &self.fhir_gaps_recovered,
            ),
        ];
        let mut out = String::new();
        for (name, kind, v) in rows {
            let _ = writeln!(
                out,
                "# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, kind, v) in extra {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
        }
        out
    }
}

/// A Prometheus label value: quotes, backslashes and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Rate limit for a log line about a repeated event (a connection flood, a
/// handshake flood): at most one line per `interval`, carrying the number
/// of events since the previous line, so a flood cannot flood the log.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl LogThrottle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            last: None,
            pending: 0,
        }
    }

    /// Records one event at `now`. `Some(n)` when a line should be written
    /// now, `n` being the events since the last line (this one included);
    /// `None` when the event is only counted.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.pending))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_count_and_labels() {
        let m = Metrics::default();
        m.ack_latency.0.observe(Duration::from_micros(300));
        m.ack_latency.0.observe(Duration::from_millis(3));
        m.ack_latency.0.observe(Duration::from_secs(9));
        m.accepted_after("stat", Duration::from_secs(45));
        let t = m.render_histograms();
        assert!(
            t.contains("switchboard_mllp_ack_latency_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("switchboard_mllp_ack_latency_seconds_bucket{le=\"0.005\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("switchboard_mllp_ack_latency_seconds_bucket{le=\"2.5\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("switchboard_mllp_ack_latency_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("switchboard_mllp_ack_latency_seconds_count 3\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "switchboard_alert_time_to_accept_seconds_bucket{priority=\"stat\",le=\"30\"} 0\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "switchboard_alert_time_to_accept_seconds_bucket{priority=\"stat\",le=\"60\"} 1\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("switchboard_alert_time_to_accept_seconds_count{priority=\"stat\"} 1\n"),
            "{t}"
        );
    }

    #[test]
    fn log_throttle_admits_one_line_per_interval_with_the_count() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = LogThrottle::new(Duration::from_secs(1));
        assert_eq!(t.hit(ms(0)), Some(1));
        let hits: Vec<_> = (1..=999).map(|i| t.hit(ms(i))).collect();
        assert!(hits.iter().all(Option::is_none), "within the second");
        assert_eq!(t.hit(ms(1000)), Some(1000), "999 suppressed + this one");
        assert_eq!(t.hit(ms(1500)), None);
        assert_eq!(t.hit(ms(5000)), Some(2));
    }

    #[test]
    fn refusal_counters_are_rendered() {
        let m = Metrics::default();
        Metrics::inc(&m.connections_refused);
        Metrics::inc(&m.http_connections_refused);
        Metrics::inc(&m.http_connections_refused);
        let text = m.render(&[]);
        assert!(text.contains("\nswitchboard_mllp_connections_refused_total 1\n"));
        assert!(text.contains("\nswitchboard_http_connections_refused_total 2\n"));
        assert!(text.contains("switchboard_mllp_tls_refusal_audits_suppressed_total 0"));
    }
}
