//! The sync task of a Matrix backend: long-polls `/sync` from the saved
//! position, hands every room's decrypted timeline and receipts to
//! [`super::replies`], applies what answers one of our notifications, and
//! saves the position once the whole response is applied.
//!
//! Guarantees:
//! - **Only the notified recipient answers for themselves.** In a direct
//!   room the answer must come from the notified user; in a role's room
//!   (handle `!room`/`#alias`) anyone in that room may answer, and an
//!   acceptance is recorded as on behalf of the notified member, by
//!   `matrix:@user`. An answer in another room than the notification's, or
//!   from our own user, is ignored.
//! - **At least once, never twice.** The position is saved only after the
//!   response is applied (a crash replays it); each applied event id (and
//!   receipt) is saved, so a replay applies nothing twice.
//! - **Invites are joined only for configured rooms** (a room id or alias
//!   that is some member's handle of this backend's contact kind).
//! - Logs carry backend, room, event and alert ids; never a body.

use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::UInt;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::{OwnedRoomId, RoomAliasId};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, RoomState};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::replies::{self, Found};
use super::{Link, Store};
use crate::delivery::{Reply, ReplyError};
use crate::listener::connection::Shared;

/// How long one `/sync` waits on the homeserver for something new.
const POLL: Duration = Duration::from_secs(25);
/// Longest pause between failed attempts.
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// Timeline events per room and sync (a gap larger than this is not
/// back-filled).
const TIMELINE_LIMIT: u32 = 100;

/// Syncs until `shutdown`.
pub async fn run(shared: Arc<Shared>, link: Arc<Link>, shutdown: CancellationToken) {
    let mut pause = Duration::from_secs(1);
    loop {
        let got = tokio::select! {
            r = link.connected() => r,
            _ = shutdown.cancelled() => return,
        };
        let (client, store) = match got {
            Ok(x) => x,
            Err(why) => {
                tracing::warn!(backend = %link.name(), why = %why, retry_in_secs = pause.as_secs(), "matrix: not connected; retrying");
                if wait(&shutdown, &mut pause).await {
                    return;
                }
                continue;
            }
        };
        let mut settings = SyncSettings::new().timeout(POLL).filter(filter());
        if let Some(since) = store.get(|s| s.since.clone()) {
            settings = settings.token(since);
        }
        let response = tokio::select! {
            r = client.sync_once(settings) => r,
            _ = shutdown.cancelled() => return,
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                if e.as_client_api_error()
                    .is_some_and(|a| a.status_code.as_u16() == 401)
                {
                    link.reset().await;
                }
                let why = match super::classify(&e, shared.clock.now_utc()) {
                    super::Outcome::Retry { why, .. } | super::Outcome::Permanent(why) => why,
                    super::Outcome::Delivered { .. } => String::new(),
                };
                tracing::warn!(backend = %link.name(), why = %why, retry_in_secs = pause.as_secs(), "matrix: sync failed; retrying");
                if wait(&shutdown, &mut pause).await {
                    return;
                }
                continue;
            }
        };
        pause = Duration::from_secs(1);
        if !apply(&shared, &link, &client, &store, &response).await {
            // The journal could not take an answer: sync this response
            // again (what was applied is skipped by id).
            if wait(&shutdown, &mut Duration::from_secs(1)).await {
                return;
            }
            continue;
        }
        let next = response.next_batch.clone();
        if let Err(e) = store.update(move |s| s.since = Some(next)).await {
            tracing::warn!(backend = %link.name(), error = %e, "matrix: sync position not saved");
        }
    }
}

/// Sleeps `pause` (doubling it for next time); true on shutdown.
async fn wait(shutdown: &CancellationToken, pause: &mut Duration) -> bool {
    let d = *pause;
    *pause = (*pause * 2).min(MAX_PAUSE);
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}

fn filter() -> Filter {
    let mut def = FilterDefinition::default();
    def.room.timeline.limit = Some(UInt::from(TIMELINE_LIMIT));
    Filter::FilterDefinition(def)
}

/// Applies one sync response; false when the journal was unavailable.
async fn apply(
    shared: &Arc<Shared>,
    link: &Link,
    client: &Client,
    store: &Store,
    response: &SyncResponse,
) -> bool {
    let own = client.user_id().map(|u| u.to_string()).unwrap_or_default();
    if !response.rooms.invited.is_empty() {
        join_configured(shared, link, client, store, response.rooms.invited.keys()).await;
    }
    for (room_id, update) in &response.rooms.joined {
        if update.timeline.limited {
            tracing::debug!(backend = %link.name(), room = %room_id, "matrix: timeline gap in this sync");
        }
        for event in &update.timeline.events {
            let Ok(v) = serde_json::from_str::<Value>(event.raw().json().get()) else {
                continue;
            };
            if v.get("sender").and_then(Value::as_str) == Some(own.as_str()) {
                continue;
            }
            match replies::from_event(&v) {
                Some(found) => {
                    let key = found.event_id.clone();
                    if !answer(shared, link, store, room_id, &found, key).await {
                        return false;
                    }
                }
                None => {
                    if v.get("type").and_then(Value::as_str) == Some("m.room.encrypted") {
                        let id = v.get("event_id").and_then(Value::as_str).unwrap_or("");
                        tracing::debug!(backend = %link.name(), room = %room_id, event = %id, "matrix: event could not be decrypted");
                    }
                }
            }
        }
        for raw in &update.ephemeral {
            let Ok(v) = serde_json::from_str::<Value>(raw.json().get()) else {
                continue;
            };
            for (target, reader) in replies::read_receipts(&v) {
                if reader == own {
                    continue;
                }
                let found = Found {
                    event_id: format!("receipt:{target}:{reader}"),
                    target,
                    sender: reader,
                    reply: Reply::Read,
                };
                let key = found.event_id.clone();
                if !answer(shared, link, store, room_id, &found, key).await {
                    return false;
                }
            }
        }
    }
    true
}

/// Applies one answer if it answers one of our notifications, in that
/// notification's room, from someone who may; false when the journal was
/// unavailable.
async fn answer(
    shared: &Arc<Shared>,
    link: &Link,
    store: &Store,
    room: &OwnedRoomId,
    found: &Found,
    key: String,
) -> bool {
    if store.get(|s| s.was_applied(&key)) {
        return true;
    }
    let (contact, target) = (link.contact().to_string(), found.target.clone());
    let row = match shared
        .journal
        .with_storage(move |s| s.notification_by_ref(&contact, &target))
        .await
    {
        Ok(Ok(Some(row))) => row,
        Ok(Ok(None)) => {
            tracing::debug!(backend = %link.name(), room = %room, event = %found.target, "matrix: answer matches no notification");
            return true;
        }
        _ => return false,
    };
    let handle = row.handle.trim();
    let expected = if handle.starts_with('!') {
        Some(handle.to_string())
    } else {
        store.get(|s| s.rooms.get(handle).cloned())
    };
    if expected.as_deref() != Some(room.as_str()) {
        tracing::debug!(backend = %link.name(), room = %room, notification = row.id, "matrix: answer in another room than the notification's; ignored");
        return true;
    }
    let result = if handle.starts_with('@') {
        if found.sender != handle {
            tracing::debug!(backend = %link.name(), room = %room, notification = row.id, "matrix: answer not from the notified user; ignored");
            return true;
        }
        crate::delivery::apply_reply(
            shared,
            link.contact(),
            &found.target,
            Some(&found.sender),
            found.reply,
        )
        .await
    } else {
        let by = format!("matrix:{}", found.sender);
        crate::delivery::apply_reply_by(
            shared,
            link.contact(),
            &found.target,
            None,
            Some(&by),
            found.reply,
        )
        .await
    };
    match &result {
        Ok(a) => {
            tracing::info!(backend = %link.name(), alert = a.id, notification = row.id, reply = ?found.reply, "matrix: answer applied");
        }
        Err(ReplyError::Journal) => return false,
        Err(e) => {
            tracing::debug!(backend = %link.name(), alert = row.alert_id, notification = row.id, reply = ?found.reply, why = %e, "matrix: answer not applied");
        }
    }
    if let Err(e) = store.update(move |s| s.mark_applied(key)).await {
        tracing::warn!(backend = %link.name(), error = %e, "matrix: applied answer not recorded");
    }
    true
}

/// Joins the invites to rooms that are some member's handle here.
async fn join_configured<'a>(
    shared: &Arc<Shared>,
    link: &Link,
    client: &Client,
    store: &Store,
    invited: impl Iterator<Item = &'a OwnedRoomId>,
) {
    let set = shared.routing.current();
    let handles: Vec<String> = set
        .rosters
        .rosters()
        .iter()
        .flat_map(|r| r.members.iter())
        .filter_map(|m| m.contacts.get(link.contact()))
        .filter(|h| h.starts_with('!') || h.starts_with('#'))
        .cloned()
        .collect();
    for room_id in invited {
        let mut wanted = handles.iter().any(|h| h == room_id.as_str())
            || store.get(|s| s.rooms.values().any(|r| r == room_id.as_str()));
        if !wanted {
            for alias in handles.iter().filter(|h| h.starts_with('#')) {
                let Ok(alias) = RoomAliasId::parse(alias) else {
                    continue;
                };
                if let Ok(r) = client.resolve_room_alias(&alias).await
                    && r.room_id == *room_id
                {
                    wanted = true;
                    break;
                }
            }
        }
        if !wanted {
            tracing::debug!(backend = %link.name(), room = %room_id, "matrix: invite to a room no member is notified in; left pending");
            continue;
        }
        if let Some(room) = client.get_room(room_id)
            && room.state() == RoomState::Invited
        {
            match room.join().await {
                Ok(()) => {
                    tracing::info!(backend = %link.name(), room = %room_id, "matrix: joined a configured room")
                }
                Err(e) => {
                    tracing::warn!(backend = %link.name(), room = %room_id, why = %super::kind_of(&e), "matrix: could not join a configured room")
                }
            }
        }
    }
}
