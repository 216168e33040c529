//! The Matrix backend: each notification is one `m.room.message`
//! (`m.text`, body = the rendered redacted text and nothing else) in an
//! end-to-end encrypted room, through the Matrix Rust SDK (Olm/Megolm).
//! A member's handle is a user (`@alice:hs`: a direct room with them,
//! created on first use and remembered) or a room (`!id:hs`, `#alias:hs`:
//! the room of a role, joined on first use).
//!
//! Guarantees:
//! - **Never a plaintext page.** A room that is not end-to-end encrypted is
//!   refused (permanent failure: dead-letter, then escalation), checked
//!   against the server's room state before every send.
//! - **A retry is never a second page.** The notification's idempotency key
//!   is the transaction id; the device and its access token survive a
//!   restart, so the homeserver answers a resend (also after a crash) with
//!   the first event id.
//! - **Same device across restarts.** Device keys, Olm/Megolm sessions and
//!   the SDK's room state live in SQLite stores under
//!   `<data_dir>/matrix/<backend>/` (0700), encrypted with the store
//!   passphrase; the session (user, device, access token), the rooms of the
//!   handles and the sync position in a sealed state file beside them
//!   ([`state`]). The password is used for the first login only (and if the
//!   homeserver revokes the token: a new login as the same device).
//! - **Answers come back.** A sync task per backend ([`sync::run`]) turns
//!   reactions, replies and read receipts on our events into
//!   acknowledgements ([`replies`]) and persists its position after
//!   applying them; a replay after a crash is recognised by event id.
//! - **Errors carry status, error code and ids**, never message content.
//!   Transport errors, timeouts, 429 (with its retry delay) and 5xx are
//!   retried; 403, 404 and other refusals are permanent.

mod errors;
pub mod replies;
pub mod state;
pub mod sync;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, RoomAliasId, RoomId, RoomOrAliasId, UserId};
use matrix_sdk::{Client, Room, RoomState};

use super::{Backend, Outcome, Outgoing};
use crate::config::{BackendConfig, MatrixSettings};
pub use errors::classify;
use errors::{http_why, kind_of};
use state::{Saved, StateFile};

/// One Matrix backend's connection: the logged-in client (made on first
/// use, shared by the delivery worker and the sync task) and its state.
pub struct Link {
    name: String,
    contact: String,
    settings: MatrixSettings,
    ca: Option<PathBuf>,
    timeout: Duration,
    dir: PathBuf,
    conn: tokio::sync::Mutex<Option<(Client, Arc<Store>)>>,
}

/// The sealed state in memory, written through on every change.
pub struct Store {
    file: Arc<StateFile>,
    saved: std::sync::Mutex<Saved>,
    writing: tokio::sync::Mutex<()>,
}

impl Store {
    /// Reads from the state.
    pub fn get<T>(&self, f: impl FnOnce(&Saved) -> T) -> T {
        f(&self.saved.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the state and writes it durably (in order: the last change
    /// is the one on disk).
    pub async fn update(&self, f: impl FnOnce(&mut Saved)) -> Result<(), String> {
        let _w = self.writing.lock().await;
        let snapshot = {
            let mut s = self.saved.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut s);
            s.clone()
        };
        let file = self.file.clone();
        match tokio::task::spawn_blocking(move || file.save(&snapshot)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("state writer stopped".into()),
        }
    }
}

impl Link {
    /// The link of a `kind = "matrix"` backend, its store folder
    /// `<data_dir>/matrix/<name>/` created (0700). Nothing is sent yet.
    pub fn new(cfg: &BackendConfig, data_dir: &Path) -> Result<Link, String> {
        let settings = cfg
            .matrix
            .clone()
            .ok_or_else(|| format!("backend {}: matrix settings missing", cfg.name))?;
        let parent = data_dir.join("matrix");
        let dir = parent.join(&cfg.name);
        state::private_dir(&dir)
            .and_then(|()| state::private_dir(&parent))
            .map_err(|e| format!("backend {}: {e}", cfg.name))?;
        Ok(Link {
            name: cfg.name.clone(),
            contact: cfg.contact.clone(),
            settings,
            ca: cfg.ca.clone(),
            timeout: cfg.timeout,
            dir,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The roster contact kind it serves.
    pub fn contact(&self) -> &str {
        &self.contact
    }

    /// The logged-in client, logging in or restoring the session first.
    pub async fn connected(&self) -> Result<(Client, Arc<Store>), String> {
        let mut conn = self.conn.lock().await;
        if let Some((c, s)) = conn.as_ref() {
            return Ok((c.clone(), s.clone()));
        }
        let (client, store) = self.connect().await?;
        *conn = Some((client.clone(), store.clone()));
        Ok((client, store))
    }

    /// Forgets the client (the homeserver refused its token): the next use
    /// restores or logs in again.
    pub async fn reset(&self) {
        *self.conn.lock().await = None;
    }

    async fn connect(&self) -> Result<(Client, Arc<Store>), String> {
        let s = &self.settings;
        let passphrase = zeroize::Zeroizing::new(
            std::env::var(&s.store_passphrase_env)
                .ok()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    format!("store passphrase ${} is not set", s.store_passphrase_env)
                })?,
        );
        let file = Arc::new(StateFile::new(&self.dir, &self.name, &passphrase));
        let f = file.clone();
        let saved = tokio::task::spawn_blocking(move || f.load())
            .await
            .map_err(|_| "state reader stopped".to_string())?
            .map_err(|e| e.to_string())?;
        let store = Arc::new(Store {
            file,
            saved: std::sync::Mutex::new(saved),
            writing: tokio::sync::Mutex::new(()),
        });
        let client = self.build(&passphrase).await?;
        if let Some(session) = store.get(|s| s.session.clone()) {
            client
                .restore_session(session)
                .await
                .map_err(|e| format!("restoring the session: {}", kind_of(&e)))?;
            match client.whoami().await {
                Ok(_) => {
                    tracing::info!(backend = %self.name, device = %client.device_id().map(|d| d.to_string()).unwrap_or_default(), "matrix session restored");
                    return Ok((client, store));
                }
                Err(e)
                    if e.as_client_api_error()
                        .is_some_and(|a| a.status_code.as_u16() == 401) =>
                {
                    tracing::warn!(backend = %self.name, "matrix access token refused; logging in again as the same device");
                }
                Err(e) => {
                    return Err(format!("checking the session: {}", http_why(&e)));
                }
            }
            drop(client);
            let client = self.build(&passphrase).await?;
            self.login(&client, &store).await?;
            return Ok((client, store));
        }
        self.login(&client, &store).await?;
        Ok((client, store))
    }

    async fn build(&self, passphrase: &str) -> Result<Client, String> {
        let mut builder = Client::builder()
            .homeserver_url(&self.settings.homeserver)
            .sqlite_store(self.dir.join("sdk"), Some(passphrase))
            // The delivery worker owns retries and backoff.
            .request_config(RequestConfig::new().timeout(self.timeout).retry_limit(1));
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("ca {}: {e}", ca.display()))?;
            let certs = matrix_sdk::reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| format!("ca {}: not a PEM certificate bundle", ca.display()))?;
            builder = builder.add_root_certificates(certs);
        }
        builder
            .build()
            .await
            .map_err(|e| format!("opening the matrix store: {e}"))
    }

    /// First login (or a new token): as the device id chosen and saved
    /// before, so the store's keys stay this device's.
    async fn login(&self, client: &Client, store: &Store) -> Result<(), String> {
        let s = &self.settings;
        let password = zeroize::Zeroizing::new(
            std::env::var(&s.password_env)
                .ok()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("password ${} is not set", s.password_env))?,
        );
        let device = match store.get(|s| s.device_id.clone()) {
            Some(d) => d,
            None => {
                let d = new_device_id();
                let id = d.clone();
                store.update(move |s| s.device_id = Some(id)).await?;
                d
            }
        };
        client
            .matrix_auth()
            .login_username(&s.user, &password)
            .device_id(&device)
            .initial_device_display_name(&s.device_name)
            .send()
            .await
            .map_err(|e| format!("login: {}", kind_of(&e)))?;
        let session = client
            .matrix_auth()
            .session()
            .ok_or_else(|| "login: no session".to_string())?;
        store.update(move |s| s.session = Some(session)).await?;
        tracing::info!(backend = %self.name, device = %device, "matrix: logged in");
        Ok(())
    }

    /// Sends one notification.
    pub async fn send(&self, out: &Outgoing<'_>) -> Outcome {
        let (client, store) = match self.connected().await {
            Ok(x) => x,
            Err(why) => {
                return Outcome::Retry {
                    why,
                    retry_after: None,
                };
            }
        };
        let room = match self.room_for(&client, &store, &out.row.handle).await {
            Ok(r) => r,
            Err(e) => return self.failed(e, out.now).await,
        };
        match room.latest_encryption_state().await {
            Ok(s) if s.is_encrypted() => {}
            Ok(_) => {
                return Outcome::Permanent(format!(
                    "room {} is not end-to-end encrypted: not sent",
                    room.room_id()
                ));
            }
            Err(e) => return self.failed(Failure::Sdk(e), out.now).await,
        }
        let content = RoomMessageEventContent::text_plain(out.text);
        match room
            .send(content)
            .with_transaction_id(out.row.idempotency_key.clone().into())
            .await
        {
            Ok(r) => Outcome::Delivered {
                status: 200,
                remote_ref: Some(r.response.event_id.to_string()),
            },
            Err(e) => self.failed(Failure::Sdk(e), out.now).await,
        }
    }

    async fn failed(&self, f: Failure, now: DateTime<Utc>) -> Outcome {
        match f {
            Failure::Permanent(why) => Outcome::Permanent(why),
            Failure::Sdk(e) => {
                let outcome = classify(&e, now);
                if e.as_client_api_error()
                    .is_some_and(|a| a.status_code.as_u16() == 401)
                {
                    self.reset().await;
                }
                outcome
            }
        }
    }

    /// The room a handle is notified in (created or joined on first use).
    async fn room_for(
        &self,
        client: &Client,
        store: &Store,
        handle: &str,
    ) -> Result<Room, Failure> {
        let handle = handle.trim();
        let saved = store.get(|s| s.rooms.get(handle).cloned());
        match handle.chars().next() {
            Some('@') => {
                let user = UserId::parse(handle).map_err(|_| {
                    Failure::Permanent("handle is not a valid Matrix user id".into())
                })?;
                if client.user_id() == Some(user.as_ref()) {
                    return Err(Failure::Permanent(
                        "handle is the gateway's own Matrix user".into(),
                    ));
                }
                if let Some(id) = saved.as_deref().and_then(|r| RoomId::parse(r).ok())
                    && let Some(room) = joined(client, &id).await?
                    && recipient_in(&room, &user).await?
                {
                    return Ok(room);
                }
                let room = match client.get_dm_room(&user) {
                    Some(r) if recipient_in(&r, &user).await? => r,
                    _ => client.create_dm(&user).await.map_err(Failure::Sdk)?,
                };
                self.remember(store, handle, room.room_id().to_owned())
                    .await;
                Ok(room)
            }
            Some('!') => {
                let id = RoomId::parse(handle).map_err(|_| {
                    Failure::Permanent("handle is not a valid Matrix room id".into())
                })?;
                match joined(client, &id).await? {
                    Some(r) => Ok(r),
                    None => client.join_room_by_id(&id).await.map_err(Failure::Sdk),
                }
            }
            Some('#') => {
                let alias = RoomAliasId::parse(handle).map_err(|_| {
                    Failure::Permanent("handle is not a valid Matrix room alias".into())
                })?;
                if let Some(id) = saved.as_deref().and_then(|r| RoomId::parse(r).ok())
                    && let Some(room) = joined(client, &id).await?
                {
                    return Ok(room);
                }
                let target = RoomOrAliasId::parse(alias.as_str()).map_err(|_| {
                    Failure::Permanent("handle is not a valid Matrix room alias".into())
                })?;
                let room = client
                    .join_room_by_id_or_alias(&target, &[])
                    .await
                    .map_err(Failure::Sdk)?;
                self.remember(store, handle, room.room_id().to_owned())
                    .await;
                Ok(room)
            }
            _ => Err(Failure::Permanent(
                "handle is not a Matrix user id (@), room id (!) or alias (#)".into(),
            )),
        }
    }

    async fn remember(&self, store: &Store, handle: &str, room: OwnedRoomId) {
        let h = handle.to_string();
        if let Err(e) = store
            .update(move |s| {
                s.rooms.insert(h, room.to_string());
            })
            .await
        {
            tracing::warn!(backend = %self.name, error = %e, "matrix: the room of a handle could not be saved");
        }
    }
}

/// The room if we are joined to it (joining it again if we were invited).
async fn joined(client: &Client, id: &RoomId) -> Result<Option<Room>, Failure> {
    match client.get_room(id) {
        Some(r) if r.state() == RoomState::Joined => Ok(Some(r)),
        Some(r) if r.state() == RoomState::Invited => {
            r.join().await.map_err(Failure::Sdk)?;
            Ok(client.get_room(id))
        }
        _ => Ok(None),
    }
}

/// True when `user` is joined to or invited into `room` (a direct room
/// they left is not used again).
async fn recipient_in(room: &Room, user: &UserId) -> Result<bool, Failure> {
    let member = room.get_member(user).await.map_err(Failure::Sdk)?;
    Ok(member.is_some_and(|m| {
        matches!(
            m.membership(),
            MembershipState::Join | MembershipState::Invite
        )
    }))
}

/// Why a send did not happen.
enum Failure {
    /// Refused before asking the homeserver.
    Permanent(String),
    /// The SDK or the homeserver said no.
    Sdk(matrix_sdk::Error),
}

/// Delivers one notification (the worker's entry point).
pub async fn deliver(b: &Backend, out: &Outgoing<'_>) -> Outcome {
    match &b.matrix {
        Some(link) => link.send(out).await,
        None => Outcome::Retry {
            why: "matrix backend not started".into(),
            retry_after: None,
        },
    }
}

/// A device id of our own: `SB` and ten capital letters.
fn new_device_id() -> String {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 10];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let tail: String = bytes.iter().map(|b| char::from(b'A' + (b % 26))).collect();
    format!("SB{tail}")
}

#[cfg(test)]
mod tests;
