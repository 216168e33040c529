//! The keyring: DEKs per (category, period), sealing and opening values,
//! the blind index, and the database-side key operations (re-wrap, erase).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::format::{self, dek_aad, meta_aad};
use super::kek::random_key;
use super::{Category, KeyDir, KeyEncryptionKey, PeriodLength, SealError, is_valid_period};

/// `seal_meta.key` of the blind-index key.
const BLIND_INDEX_KEY: &str = "blind_index";

/// A key unwrapped earlier, with the row it came from: reused only while the
/// row still says the same (so a rollback, a re-wrap or an erase is noticed).
struct CachedKey {
    kek_id: String,
    wrapped: Vec<u8>,
    key: Zeroizing<[u8; 32]>,
}

impl CachedKey {
    fn matches(&self, kek_id: &str, wrapped: &[u8]) -> bool {
        self.kek_id == kek_id && self.wrapped == wrapped
    }
}

/// KEKs (current first) and a cache of unwrapped DEKs. Owned by the thread
/// that owns the journal's write connection; `Send`, not shared.
pub struct Keyring {
    keks: Vec<Arc<dyn KeyEncryptionKey>>,
    period_length: PeriodLength,
    cache: HashMap<i64, CachedKey>,
    index_key: Option<CachedKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keks", &self.kek_ids())
            .field("period_length", &self.period_length)
            .field("cached_keys", &self.cache.len())
            .finish()
    }
}

fn what_dek(id: i64, category: &str, period: &str) -> String {
    format!("data key {id} ({category} {period})")
}

fn what_meta(key: &str) -> String {
    format!("seal_meta key {key}")
}

impl Keyring {
    /// A keyring that wraps new keys with `current` and can unwrap keys
    /// wrapped by `current` or any of `older`.
    pub fn new(
        current: Arc<dyn KeyEncryptionKey>,
        older: Vec<Arc<dyn KeyEncryptionKey>>,
    ) -> Keyring {
        let mut keks = vec![current];
        for k in older {
            if !keks.iter().any(|have| have.id() == k.id()) {
                keks.push(k);
            }
        }
        Keyring {
            keks,
            period_length: PeriodLength::Day,
            cache: HashMap::new(),
            index_key: None,
        }
    }

    /// A keyring over the KEKs of a key directory (the newest is current).
    pub fn from_dir(dir: &KeyDir) -> Result<Keyring, SealError> {
        let mut keks = dir
            .keks()
            .iter()
            .map(|k| k.clone() as Arc<dyn KeyEncryptionKey>);
        let current = keks.next().ok_or_else(|| SealError::KeyDir {
            path: dir.path().to_path_buf(),
            problem: "no key-encryption key".into(),
        })?;
        Ok(Keyring::new(current, keks.collect()))
    }

    /// Uses one DEK per `length` instead of per day.
    pub fn with_period_length(mut self, length: PeriodLength) -> Keyring {
        self.period_length = length;
        self
    }

    /// The id of the KEK that wraps new keys.
    pub fn current_kek_id(&self) -> &str {
        self.keks[0].id()
    }

    /// Ids of every loaded KEK, current first.
    pub fn kek_ids(&self) -> Vec<&str> {
        self.keks.iter().map(|k| k.id()).collect()
    }

    fn kek(&self, id: &str) -> Option<&Arc<dyn KeyEncryptionKey>> {
        self.keks.iter().find(|k| k.id() == id)
    }

    /// Unwraps a key with the KEK its row names.
    fn unwrap_with(
        &self,
        kek_id: &str,
        wrapped: &[u8],
        aad: &[u8],
        what: impl Fn() -> String,
    ) -> Result<Zeroizing<[u8; 32]>, SealError> {
        let kek = self.kek(kek_id).ok_or_else(|| SealError::MissingKek {
            kek_id: kek_id.to_string(),
            key: what(),
        })?;
        kek.unwrap(wrapped, aad).map_err(|e| match e {
            SealError::Unwrap { kek_id, .. } => SealError::Unwrap {
                kek_id,
                key: what(),
            },
            other => other,
        })
    }

    /// The DEK `id` from its row, through the cache.
    fn dek(
        &mut self,
        id: i64,
        category: &str,
        period: &str,
        kek_id: String,
        wrapped: Vec<u8>,
    ) -> Result<&[u8; 32], SealError> {
        let fresh = self
            .cache
            .get(&id)
            .is_some_and(|c| c.matches(&kek_id, &wrapped));
        if !fresh {
            let aad = dek_aad(&kek_id, id, category, period);
            let key =
                self.unwrap_with(&kek_id, &wrapped, &aad, || what_dek(id, category, period))?;
            self.cache.insert(
                id,
                CachedKey {
                    kek_id,
                    wrapped,
                    key,
                },
            );
        }
        Ok(&self.cache[&id].key)
    }

    /// Refuses to wrap a new key when live keys name a KEK this keyring does
    /// not have: after a rotation a keyring not rebuilt would otherwise wrap
    /// new DEKs with a KEK whose file was just deleted.
    fn check_not_stale(&self, conn: &Connection) -> Result<(), SealError> {
        let mut st = conn.prepare_cached(
            "SELECT kek_id FROM data_keys WHERE wrapped IS NOT NULL
             UNION SELECT kek_id FROM seal_meta",
        )?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let kek_id: String = row.get(0)?;
            if self.kek(&kek_id).is_none() {
                return Err(SealError::StaleKeyring { kek_id });
            }
        }
        Ok(())
    }

    /// Creates the DEK of (category, period), wrapped by the current KEK, in
    /// a savepoint (inside the caller's transaction when one is open).
    fn create_dek(
        &mut self,
        conn: &Connection,
        category: Category,
        period: &str,
        at: DateTime<Utc>,
    ) -> Result<i64, SealError> {
        self.check_not_stale(conn)?;
        let kek = self.keks[0].clone();
        let key = random_key();
        conn.execute_batch("SAVEPOINT seal_new_key")?;
        let made = (|| {
            // The row id is part of the wrapping context, so insert first.
            conn.execute(
                "INSERT INTO data_keys (category, period, kek_id, wrapped, created_at)
                 VALUES (?1, ?2, ?3, X'', ?4)",
                params![category.as_str(), period, kek.id(), at.timestamp_micros()],
            )?;
            let id = conn.last_insert_rowid();
            let wrapped = kek.wrap(&key, &dek_aad(kek.id(), id, category.as_str(), period))?;
            conn.execute(
                "UPDATE data_keys SET wrapped = ?1 WHERE id = ?2",
                params![wrapped, id],
            )?;
            Ok::<_, SealError>((id, wrapped))
        })();
        match made {
            Ok((id, wrapped)) => {
                conn.execute_batch("RELEASE seal_new_key")?;
                self.cache.insert(
                    id,
                    CachedKey {
                        kek_id: kek.id().to_string(),
                        wrapped,
                        key,
                    },
                );
                Ok(id)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK TO seal_new_key; RELEASE seal_new_key");
                Err(e)
            }
        }
    }

    /// Seals `plaintext` under the DEK of (`category`, the period of `at`),
    /// bound to `aad` (e.g. `b"messages.raw\0"` + row id). The DEK is
    /// created (random, wrapped by the current KEK, inserted) inside the
    /// caller's open transaction when missing. Sealing into a period whose
    /// DEK was destroyed fails with [`SealError::Erased`].
    pub fn seal(
        &mut self,
        conn: &Connection,
        category: Category,
        at: DateTime<Utc>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let period = self.period_length.period_of(at);
        let row: Option<(i64, String, Option<Vec<u8>>)> = conn
            .prepare_cached(
                "SELECT id, kek_id, wrapped FROM data_keys WHERE category = ?1 AND period = ?2",
            )?
            .query_row(params![category.as_str(), period], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let id = match row {
            None => self.create_dek(conn, category, &period, at)?,
            Some((dek_id, _, None)) => {
                self.cache.remove(&dek_id);
                return Err(SealError::Erased {
                    dek_id,
                    category: category.as_str().into(),
                    period,
                });
            }
            Some((id, kek_id, Some(wrapped))) => {
                self.dek(id, category.as_str(), &period, kek_id, wrapped)?;
                id
            }
        };
        format::seal_value(id, &self.cache[&id].key, plaintext, aad)
    }

    /// Opens a sealed value with the context it was sealed with.
    /// [`SealError::Erased`] when its DEK was destroyed; any other mismatch
    /// is an error too, never a panic.
    pub fn open(
        &mut self,
        conn: &Connection,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let dek_id = format::sealed_dek_id(sealed)?;
        let row: Option<(String, String, String, Option<Vec<u8>>)> = conn
            .prepare_cached(
                "SELECT category, period, kek_id, wrapped FROM data_keys WHERE id = ?1",
            )?
            .query_row([dek_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (category, period, kek_id, wrapped) = row.ok_or(SealError::UnknownDek { dek_id })?;
        let Some(wrapped) = wrapped else {
            // Wipe the key from memory too.
            self.cache.remove(&dek_id);
            return Err(SealError::Erased {
                dek_id,
                category,
                period,
            });
        };
        let key = self.dek(dek_id, &category, &period, kek_id, wrapped)?;
        format::open_value(key, sealed, aad)
    }

    /// Keyed blind index of `value`: HMAC-SHA256 truncated to 16 bytes, for
    /// finding rows by a PHI value (e.g. a patient key) without storing it.
    /// The key is random, created on first use (in the caller's
    /// transaction) and stored wrapped in `seal_meta`; it survives KEK
    /// rotation, so indexes stay stable. Prefix `value` with a namespace
    /// when indexing different kinds of values.
    pub fn blind_index(&mut self, conn: &Connection, value: &[u8]) -> Result<[u8; 16], SealError> {
        let row: Option<(String, Vec<u8>)> = conn
            .prepare_cached("SELECT kek_id, wrapped FROM seal_meta WHERE key = ?1")?
            .query_row([BLIND_INDEX_KEY], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((kek_id, wrapped)) => {
                if !self
                    .index_key
                    .as_ref()
                    .is_some_and(|c| c.matches(&kek_id, &wrapped))
                {
                    let key = self.unwrap_with(
                        &kek_id,
                        &wrapped,
                        &meta_aad(&kek_id, BLIND_INDEX_KEY),
                        || what_meta(BLIND_INDEX_KEY),
                    )?;
                    self.index_key = Some(CachedKey {
                        kek_id,
                        wrapped,
                        key,
                    });
                }
            }
            None => {
                self.check_not_stale(conn)?;
                let kek = self.keks[0].clone();
                let key = random_key();
                let wrapped = kek.wrap(&key, &meta_aad(kek.id(), BLIND_INDEX_KEY))?;
                conn.execute(
                    "INSERT INTO seal_meta (key, kek_id, wrapped) VALUES (?1, ?2, ?3)",
                    params![BLIND_INDEX_KEY, kek.id(), wrapped],
                )?;
                self.index_key = Some(CachedKey {
                    kek_id: kek.id().to_string(),
                    wrapped,
                    key,
                });
            }
        }
        let key = &self.index_key.as_ref().expect("index key just loaded").key;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key[..])
            .expect("HMAC takes a key of any length");
        mac.update(value);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        Ok(out)
    }

    /// Forgets cached keys (after a rollback or an erase; never needed for
    /// correctness, since every use checks the row).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.index_key = None;
    }

    /// Unwraps every live key in the database (start-up check): fails with
    /// [`SealError::MissingKek`] naming the KEK when a key file is missing,
    /// or [`SealError::Unwrap`] when a key does not open. Returns how many
    /// keys were checked.
    pub fn verify(&self, conn: &Connection) -> Result<usize, SealError> {
        let live = live_keys(conn)?;
        for k in &live {
            self.unwrap_with(&k.kek_id, &k.wrapped, &k.aad(&k.kek_id), || k.what())?;
        }
        Ok(live.len())
    }
}

/// A wrapped key row: a DEK or a `seal_meta` entry.
struct LiveKey {
    row: KeyRow,
    kek_id: String,
    wrapped: Vec<u8>,
}

enum KeyRow {
    Dek {
        id: i64,
        category: String,
        period: String,
    },
    Meta {
        key: String,
    },
}

impl LiveKey {
    fn aad(&self, kek_id: &str) -> Vec<u8> {
        match &self.row {
            KeyRow::Dek {
                id,
                category,
                period,
            } => dek_aad(kek_id, *id, category, period),
            KeyRow::Meta { key } => meta_aad(kek_id, key),
        }
    }

    fn what(&self) -> String {
        match &self.row {
            KeyRow::Dek {
                id,
                category,
                period,
            } => what_dek(*id, category, period),
            KeyRow::Meta { key } => what_meta(key),
        }
    }
}

fn live_keys(conn: &Connection) -> Result<Vec<LiveKey>, SealError> {
    let mut out = Vec::new();
    let mut st = conn.prepare(
        "SELECT id, category, period, kek_id, wrapped FROM data_keys
         WHERE wrapped IS NOT NULL ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(LiveKey {
            row: KeyRow::Dek {
                id: r.get(0)?,
                category: r.get(1)?,
                period: r.get(2)?,
            },
            kek_id: r.get(3)?,
            wrapped: r.get(4)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    let mut st = conn.prepare("SELECT key, kek_id, wrapped FROM seal_meta ORDER BY key")?;
    let rows = st.query_map([], |r| {
        Ok(LiveKey {
            row: KeyRow::Meta { key: r.get(0)? },
            kek_id: r.get(1)?,
            wrapped: r.get(2)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

/// Re-wraps every live key not yet under `new`, inside the caller's
/// transaction. Returns how many were re-wrapped.
pub(super) fn rewrap_in(
    conn: &Connection,
    keyring: &Keyring,
    new: &dyn KeyEncryptionKey,
) -> Result<usize, SealError> {
    let mut n = 0;
    for k in live_keys(conn)? {
        if k.kek_id == new.id() {
            continue;
        }
        let key = keyring.unwrap_with(&k.kek_id, &k.wrapped, &k.aad(&k.kek_id), || k.what())?;
        let new_aad = k.aad(new.id());
        let wrapped = new.wrap(&key, &new_aad)?;
        // Never store a wrapping that does not open.
        let check = new.unwrap(&wrapped, &new_aad)?;
        if *check != *key {
            return Err(SealError::Kek {
                kek_id: new.id().to_string(),
                problem: format!("re-wrapped {} does not round-trip", k.what()),
            });
        }
        match &k.row {
            KeyRow::Dek { id, .. } => conn.execute(
                "UPDATE data_keys SET kek_id = ?1, wrapped = ?2 WHERE id = ?3",
                params![new.id(), wrapped, id],
            )?,
            KeyRow::Meta { key } => conn.execute(
                "UPDATE seal_meta SET kek_id = ?1, wrapped = ?2 WHERE key = ?3",
                params![new.id(), wrapped, key],
            )?,
        };
        n += 1;
    }
    Ok(n)
}

/// KEK rotation, step 2: re-wraps every live DEK and `seal_meta` entry with
/// `new`, in ONE immediate transaction (payloads untouched). `keyring` must
/// hold every KEK the rows name. Returns the number re-wrapped (keys
/// already under `new` are skipped, so a re-run is harmless).
pub fn rewrap_all(
    conn: &mut Connection,
    keyring: &Keyring,
    new: &dyn KeyEncryptionKey,
) -> Result<usize, SealError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = rewrap_in(&tx, keyring, new)?;
    tx.commit()?;
    Ok(n)
}

/// Crypto-erase: destroys the DEK of (`category`, `period`): `wrapped =
/// NULL`, `destroyed_at = now`. Every value sealed under it is unreadable
/// from then on ([`SealError::Erased`]). Run it in the transaction that
/// deletes the period's rows and writes the audit record. Returns false when
/// the period has no live DEK. For the old bytes to leave the file too, the
/// journal should run with `PRAGMA secure_delete=ON` and checkpoint the WAL
/// (`wal_checkpoint(TRUNCATE)`) after the erase.
pub fn destroy_key(
    conn: &Connection,
    category: Category,
    period: &str,
    now: DateTime<Utc>,
) -> Result<bool, SealError> {
    if !is_valid_period(period) {
        return Err(SealError::InvalidPeriod(period.chars().take(32).collect()));
    }
    let n = conn.execute(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?1
         WHERE category = ?2 AND period = ?3 AND wrapped IS NOT NULL",
        params![now.timestamp_micros(), category.as_str(), period],
    )?;
    Ok(n > 0)
}

/// The periods of `category` that have a DEK, oldest first, with whether it
/// was destroyed.
pub fn periods(conn: &Connection, category: Category) -> Result<Vec<(String, bool)>, SealError> {
    let mut st = conn.prepare(
        "SELECT period, wrapped IS NULL FROM data_keys WHERE category = ?1 ORDER BY period",
    )?;
    let rows = st.query_map([category.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

/// True when a live key is still wrapped by `kek_id`.
pub(super) fn kek_in_use(conn: &Connection, kek_id: &str) -> Result<bool, SealError> {
    let n: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM data_keys WHERE kek_id = ?1 AND wrapped IS NOT NULL)
              + (SELECT count(*) FROM seal_meta WHERE kek_id = ?1)",
        [kek_id],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}
