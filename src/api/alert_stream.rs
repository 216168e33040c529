//! `GET /api/v1/alerts/stream` (`alerts:read`): the open alerts as
//! server-sent events, for the console's live board.
//!
//! Guarantees:
//! - Authorisation is checked before anything is sent: 401 / 403 exactly as
//!   for `GET /api/v1/alerts`; a journal that cannot be read at that moment
//!   answers 503 instead of an empty board.
//! - The first event is `event: snapshot` whose data is the body of
//!   `GET /api/v1/alerts` (`{"alerts": [...]}`, one line of JSON). Another
//!   snapshot follows each run of the alert desk (`Shared::alerts_changed`),
//!   only when it differs from the last one sent.
//! - Bounded: each stream holds one snapshot and reads the journal at most
//!   every [`MIN_INTERVAL`] (a burst of changes is coalesced into one
//!   read); the writers bump a watch channel and never wait, so a slow or
//!   stalled client only delays itself.
//! - A comment (`: keep-alive`) every 15 s keeps proxies and the browser's
//!   idle detection from closing a quiet stream. While the journal cannot
//!   be read, an `event: unavailable` is sent and the read is retried every
//!   few seconds. The stream ends when the gateway stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use super::alerts::open_alerts_json;
use super::{ApiError, operator};
use crate::config::Permission;
use crate::listener::connection::Shared;
use crate::listener::intake::PeerInfo;

/// How often a quiet stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The shortest time between two reads of one stream (the reads run on
/// the journal's thread: a busy desk must not turn into a busy console).
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// How soon a failed read is tried again.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(2);

pub(super) async fn stream(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    operator(&shared, &headers, &peer, Permission::AlertsRead)?;
    // Subscribe before the first read: a change committed in between is
    // then seen as a change, never lost.
    let mut changes = shared.alerts_changed.subscribe();
    changes.mark_unchanged();
    let first = open_alerts_json(&shared).await?;
    let feed = Feed {
        shared,
        changes,
        last: first.clone(),
        read_at: tokio::time::Instant::now(),
        retry: false,
    };
    let events = futures_util::stream::once(async move { Ok(snapshot(first)) })
        .chain(futures_util::stream::unfold(feed, Feed::next));
    Ok(sse(events))
}

/// The SSE response around `events`, with the keep-alive comment.
pub(crate) fn sse<S>(events: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

/// A `snapshot` event carrying `json` (one line).
fn snapshot(json: String) -> Event {
    Event::default().event("snapshot").data(json)
}

/// One stream's position: what it sent last and what it waits on.
struct Feed {
    shared: Arc<Shared>,
    changes: watch::Receiver<u64>,
    last: String,
    /// When the journal was last read for this stream.
    read_at: tokio::time::Instant,
    /// The last read failed: read again after [`RETRY_UNAVAILABLE`] even
    /// without a change.
    retry: bool,
}

impl Feed {
    /// The next event, or `None` when the gateway stops.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Feed)> {
        loop {
            let stopping = self.shared.stopping.clone();
            tokio::select! {
                r = self.changes.changed() => r.ok()?,
                _ = tokio::time::sleep(RETRY_UNAVAILABLE), if self.retry => {}
                _ = stopping.cancelled() => return None,
            }
            tokio::select! {
                _ = tokio::time::sleep_until(self.read_at + MIN_INTERVAL) => {}
                _ = stopping.cancelled() => return None,
            }
            self.changes.mark_unchanged();
            self.read_at = tokio::time::Instant::now();
            match open_alerts_json(&self.shared).await {
                Ok(json) => {
                    self.retry = false;
                    if json != self.last {
                        self.last.clone_from(&json);
                        return Some((Ok(snapshot(json)), self));
                    }
                }
                Err(_) if self.retry => {}
                Err(_) => {
                    self.retry = true;
                    let e = Event::default()
                        .event("unavailable")
                        .data(r#"{"error":"the journal cannot be read now; retrying"}"#);
                    return Some((Ok(e), self));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn frame(body: &mut axum::body::Body) -> String {
        let f = body.frame().await.unwrap().unwrap();
        String::from_utf8(f.into_data().unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_snapshot_is_one_sse_event_of_one_json_line() {
        let json = r#"{"alerts":[{"id":1,"rule":"critical-potassium"}]}"#.to_string();
        let events = futures_util::stream::iter([Ok(snapshot(json.clone()))]);
        let r = sse(events);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut body = r.into_body();
        assert_eq!(
            frame(&mut body).await,
            format!("event: snapshot\ndata: {json}\n\n")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_sends_a_keep_alive_comment_every_15_s() {
        let r = sse(futures_util::stream::pending());
        let mut body = r.into_body();
        let t = tokio::time::Instant::now();
        assert_eq!(frame(&mut body).await, ": keep-alive\n\n");
        assert_eq!(t.elapsed(), KEEP_ALIVE);
        assert_eq!(frame(&mut body).await, ": keep-alive\n\n");
        assert_eq!(t.elapsed(), KEEP_ALIVE * 2);
    }
}
