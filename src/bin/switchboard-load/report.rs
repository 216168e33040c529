//! Tallies, latency percentiles, the text and JSON reports.

use std::time::Duration;

/// What one connection (or one worker of one-per-connection mode) saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Messages whose last byte was written.
    pub sent: u64,
    /// Answers with the right MSA-2 and MSA-1 `AA` or `CA`.
    pub accepted: u64,
    /// Answers with the right MSA-2 and any other MSA-1.
    pub rejected: u64,
    /// Answers whose MSA-2 was not the MSH-10 expected next.
    pub mismatched: u64,
    /// Frames with no message waiting for them.
    pub extra: u64,
    /// Answers that are not a readable acknowledgement (no MSA).
    pub unreadable: u64,
    /// Messages sent but never answered.
    pub unanswered: u64,
    /// Connections that failed (connect, TLS, read or write error, timeout).
    pub connection_errors: u64,
    /// MSA-1 values other than AA/CA, with counts.
    pub other_codes: Vec<(String, u64)>,
    /// ACK latencies in nanoseconds (answered messages, measured phase).
    pub latencies_ns: Vec<u64>,
    /// Up to a few problem descriptions (control ids and codes, no content).
    pub problems: Vec<String>,
}

/// Descriptions kept per tally.
const MAX_PROBLEMS: usize = 10;

impl Tally {
    /// Records a problem description (bounded).
    pub fn problem(&mut self, what: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(what);
        }
    }

    /// Counts an answer's MSA-1.
    pub fn code(&mut self, code: &str) {
        if code == "AA" || code == "CA" {
            self.accepted += 1;
            return;
        }
        self.rejected += 1;
        match self.other_codes.iter_mut().find(|(c, _)| c == code) {
            Some((_, n)) => *n += 1,
            None => self.other_codes.push((code.to_string(), 1)),
        }
    }

    /// Errors of any kind.
    pub fn errors(&self) -> u64 {
        self.mismatched + self.extra + self.unreadable + self.unanswered + self.connection_errors
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, mut other: Tally) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.mismatched += other.mismatched;
        self.extra += other.extra;
        self.unreadable += other.unreadable;
        self.unanswered += other.unanswered;
        self.connection_errors += other.connection_errors;
        for (c, n) in other.other_codes {
            match self.other_codes.iter_mut().find(|(k, _)| *k == c) {
                Some((_, m)) => *m += n,
                None => self.other_codes.push((c, n)),
            }
        }
        self.latencies_ns.append(&mut other.latencies_ns);
        for p in other.problems {
            self.problem(p);
        }
    }
}

/// Nearest-rank percentile of sorted values, in milliseconds.
pub fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite rounding.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1e6
}

/// The final report.
#[derive(Debug)]
pub struct Report {
    pub target: String,
    pub tls: bool,
    pub mode: &'static str,
    pub run_id: String,
    pub messages: u64,
    pub connections: usize,
    pub window: usize,
    pub threads: usize,
    pub warmup: u64,
    pub elapsed: Duration,
    pub tally: Tally,
    /// Messages of the measured phase never sent (all connections gone).
    pub unsent: u64,
    /// End-to-end figures (alert arrivals at the receiver), when measured.
    pub e2e: Option<crate::e2e::Figures>,
}

impl Report {
    /// Errors of any kind, including unsent messages.
    pub fn errors(&self) -> u64 {
        self.tally.errors() + self.unsent + self.e2e.as_ref().map_or(0, |e| e.missing + e.repeated)
    }

    fn figures(&mut self) -> (f64, f64, f64, f64, f64, f64) {
        self.tally.latencies_ns.sort_unstable();
        let l = &self.tally.latencies_ns;
        let secs = self.elapsed.as_secs_f64();
        let answered = (self.tally.accepted + self.tally.rejected) as f64;
        let rate = if secs > 0.0 { answered / secs } else { 0.0 };
        (
            secs,
            rate,
            percentile_ms(l, 50.0),
            percentile_ms(l, 99.0),
            percentile_ms(l, 99.9),
            l.last().map(|v| *v as f64 / 1e6).unwrap_or(0.0),
        )
    }

    /// One JSON object.
    pub fn json(&mut self) -> serde_json::Value {
        let (secs, rate, p50, p99, p999, max) = self.figures();
        let codes: serde_json::Map<String, serde_json::Value> = self
            .tally
            .other_codes
            .iter()
            .map(|(c, n)| (c.clone(), serde_json::Value::from(*n)))
            .collect();
        serde_json::json!({
            "target": self.target,
            "messages": self.messages,
            "connections": self.connections,
            "window": self.window,
            "seconds": round3(secs),
            "msgs_per_sec": round3(rate),
            "p50_ms": round3(p50),
            "p99_ms": round3(p99),
            "p999_ms": round3(p999),
            "max_ms": round3(max),
            "accepted": self.tally.accepted,
            "rejected": self.tally.rejected,
            "errors": self.errors(),
            "mode": self.mode,
            "tls": self.tls,
            "run_id": self.run_id,
            "threads": self.threads,
            "warmup": self.warmup,
            "sent": self.tally.sent,
            "rejected_codes": codes,
            "error_detail": {
                "mismatched": self.tally.mismatched,
                "extra": self.tally.extra,
                "unreadable": self.tally.unreadable,
                "unanswered": self.tally.unanswered,
                "connection_errors": self.tally.connection_errors,
                "unsent": self.unsent,
            },
            "e2e": self.e2e.as_ref().map(|e| serde_json::json!({
                "sent": e.sent,
                "received": e.received,
                "missing": e.missing,
                "repeated": e.repeated,
                "unmatched": e.unmatched,
                "p50_ms": round3(e.p50.as_secs_f64() * 1e3),
                "p99_ms": round3(e.p99.as_secs_f64() * 1e3),
                "max_ms": round3(e.max.as_secs_f64() * 1e3),
            })),
        })
    }

    /// Human-readable lines.
    pub fn text(&mut self) -> String {
        let (secs, rate, p50, p99, p999, max) = self.figures();
        let mut s = format!(
            "target      {} ({}{}, {} connection(s), window {}, {} thread(s), run id {})\n",
            self.target,
            if self.tls { "TLS, " } else { "" },
            self.mode,
            self.connections,
            self.window,
            self.threads,
            self.run_id,
        );
        s.push_str(&format!(
            "throughput  {} messages in {:.3} s = {:.0} msg/s (after {} warm-up)\n",
            self.messages, secs, rate, self.warmup
        ));
        s.push_str(&format!(
            "ACK latency p50 {p50:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms  max {max:.3} ms\n"
        ));
        s.push_str(&format!(
            "answers     accepted {}  rejected {}{}\n",
            self.tally.accepted,
            self.tally.rejected,
            if self.tally.other_codes.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = self
                    .tally
                    .other_codes
                    .iter()
                    .map(|(c, n)| format!("{c}={n}"))
                    .collect();
                format!(" ({})", list.join(", "))
            }
        ));
        s.push_str(&format!(
            "errors      {} (mismatched {}, extra {}, unreadable {}, unanswered {}, connection {}, unsent {})\n",
            self.errors(),
            self.tally.mismatched,
            self.tally.extra,
            self.tally.unreadable,
            self.tally.unanswered,
            self.tally.connection_errors,
            self.unsent,
        ));
        if let Some(e) = &self.e2e {
            s.push_str(&format!(
                "end to end  {} of {} alerts arrived (missing {}, repeated {}, unmatched {}); p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
                e.received,
                e.sent,
                e.missing,
                e.repeated,
                e.unmatched,
                e.p50.as_secs_f64() * 1e3,
                e.p99.as_secs_f64() * 1e3,
                e.max.as_secs_f64() * 1e3,
            ));
        }
        s
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).map(|i| i * 1_000_000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 500.0);
        assert_eq!(percentile_ms(&v, 99.0), 990.0);
        assert_eq!(percentile_ms(&v, 99.9), 999.0);
        assert_eq!(percentile_ms(&v, 100.0), 1000.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
        assert_eq!(percentile_ms(&[7_000_000], 99.9), 7.0);
    }

    #[test]
    fn codes_other_than_aa_ca_are_rejections() {
        let mut t = Tally::default();
        for c in ["AA", "CA", "AE", "AR", "AE"] {
            t.code(c);
        }
        assert_eq!((t.accepted, t.rejected), (2, 3));
        assert_eq!(
            t.other_codes,
            vec![("AE".to_string(), 2), ("AR".to_string(), 1)]
        );
    }
}
