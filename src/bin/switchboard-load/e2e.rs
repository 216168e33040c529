//! End-to-end measurement: a webhook receiver that the gateway's webhook
//! backend delivers to. Every message of an end-to-end run is a critical
//! result in its own room (PV1-3.2 = the message number), so the `room`
//! field of the delivered alert (it leaves under the `limited` profile)
//! names the message; latency is from the write of the message's last byte
//! to the arrival of its alert. A second delivery of the same alert is
//! counted (it would be a second page).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::time::Instant;

/// What the receiver saw.
#[derive(Debug, Default)]
pub struct E2e {
    sent: Mutex<HashMap<u64, Instant>>,
    seen: Mutex<HashMap<u64, u32>>,
    latencies_ns: Mutex<Vec<u64>>,
    unmatched: Mutex<u64>,
}

/// The figures of a run.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub sent: u64,
    pub received: u64,
    pub missing: u64,
    pub repeated: u64,
    pub unmatched: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl E2e {
    /// Notes that message `n` was written at `at`.
    pub fn sent(&self, n: u64, at: Instant) {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, at);
    }

    fn arrived(&self, n: u64, at: Instant) {
        let t0 = self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&n)
            .copied();
        let Some(t0) = t0 else {
            *self.unmatched.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let count = seen.entry(n).or_default();
        *count += 1;
        if *count == 1 {
            self.latencies_ns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(at.saturating_duration_since(t0).as_nanos() as u64);
        }
    }

    /// True when every sent message's alert arrived.
    pub fn complete(&self) -> bool {
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner()).len();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        seen >= sent
    }

    /// The figures now.
    pub fn figures(&self) -> Figures {
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let received = seen.len() as u64;
        let repeated = seen.values().map(|c| u64::from(c.saturating_sub(1))).sum();
        let mut lat = self
            .latencies_ns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        lat.sort_unstable();
        let pick = |q: f64| -> Duration {
            if lat.is_empty() {
                return Duration::ZERO;
            }
            let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
            Duration::from_nanos(lat[i])
        };
        Figures {
            sent,
            received,
            missing: sent.saturating_sub(received),
            repeated,
            unmatched: *self.unmatched.lock().unwrap_or_else(|p| p.into_inner()),
            p50: pick(0.50),
            p99: pick(0.99),
            max: lat
                .last()
                .map_or(Duration::ZERO, |n| Duration::from_nanos(*n)),
        }
    }
}

async fn receive(State(e2e): State<Arc<E2e>>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let room = &v["fields"]["room"];
    let n = room
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .or_else(|| room.as_u64());
    match n {
        Some(n) => e2e.arrived(n, at),
        None => *e2e.unmatched.lock().unwrap_or_else(|p| p.into_inner()) += 1,
    }
    StatusCode::OK
}

/// Starts the receiver on `addr`.
pub async fn listen(addr: SocketAddr, e2e: Arc<E2e>) -> Result<SocketAddr, String> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--e2e-listen {addr}: {e}"))?;
    let bound = l.local_addr().map_err(|e| e.to_string())?;
    let app = axum::Router::new().fallback(receive).with_state(e2e);
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn latency_is_counted_once_and_repeats_and_strangers_are_reported() {
        let e = E2e::default();
        let t0 = Instant::now();
        e.sent(1, t0);
        e.sent(2, t0);
        e.arrived(1, t0 + Duration::from_millis(5));
        e.arrived(1, t0 + Duration::from_millis(9));
        e.arrived(7, t0);
        let f = e.figures();
        assert_eq!(
            (f.sent, f.received, f.missing, f.repeated, f.unmatched),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(f.max, Duration::from_millis(5));
        assert!(!e.complete());
    }
}
