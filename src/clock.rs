//! The one injected clock.
//!
//! Timers use `tokio::time` (tests pause and advance it); wall-clock UTC is
//! derived from the same source: `base_utc + (tokio::time::Instant::now() -
//! base_instant)`. So when a test advances tokio's paused clock by an hour,
//! roster lookups and receive times move by an hour too, and a test can start
//! the world at any UTC instant. Nothing else in the crate may read the
//! system clock.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Source of "now" for timers and timestamps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_instant: Instant,
    base_utc: DateTime<Utc>,
}

impl Clock {
    /// The real clock: UTC now, advancing with tokio's clock.
    #[allow(clippy::disallowed_methods)]
    pub fn system() -> Self {
        Clock {
            base_instant: Instant::now(),
            base_utc: Utc::now(),
        }
    }

    /// A clock that reads `utc` now and advances with tokio's clock (pause it
    /// in tests to control time completely).
    pub fn starting_at(utc: DateTime<Utc>) -> Self {
        Clock {
            base_instant: Instant::now(),
            base_utc: utc,
        }
    }

    /// The current instant on tokio's clock.
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// The current UTC time.
    pub fn now_utc(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.base_instant);
        self.base_utc + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn utc_follows_paused_tokio_time() {
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 5, 55, 0).unwrap();
        let clock = Clock::starting_at(start);
        assert_eq!(clock.now_utc(), start);
        tokio::time::advance(Duration::from_secs(15 * 60)).await;
        assert_eq!(
            clock.now_utc(),
            Utc.with_ymd_and_hms(2026, 11, 1, 6, 10, 0).unwrap()
        );
    }
}
