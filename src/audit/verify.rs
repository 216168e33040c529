//! The verifier: recomputes the chain from genesis, checks every checkpoint
//! (local and off-box) and every key rotation, and names the first bad seq.
//!
//! What each check catches:
//!
//! | check | catches |
//! | --- | --- |
//! | record hash recomputed at its seq | a changed byte (`content hash mismatch`) |
//! | `prev` = hash of the row before | an edited `prev` (`chain break`) |
//! | seq 1, 2, 3 … | a deleted row (`missing`) |
//! | a failing row that verifies at another seq | swapped rows (`order`), renumbering after an insert (`inserted`) or a delete (`missing`) |
//! | record `size` = root of each signed checkpoint | a consistently rewritten chain (`chain break` at the checkpoint) |
//! | checkpoint signature by the key valid at its size | an edited checkpoint, a re-signed history (`checkpoint signature`) |
//! | checkpoint origin | a checkpoint from another site (`checkpoint origin`) |
//! | checkpoint size ≤ log size | truncation below a checkpoint (`log shorter than checkpoint n`) |
//! | off-box checkpoint ≤ log size, same root | a restored older copy (`rollback`) or a forked history |
//! | key *n* endorsed by key *n − 1*, its rotation record in the chain | a forged key rotation |
//!
//! Records after the newest checkpoint cannot be proven complete: they are
//! reported as `WARN: m records unanchored`, never silently. An uncommitted
//! transaction (a crash mid-write) never becomes visible, so a crash leaves
//! nothing to fail on; the `audit.recovered` record written after it is
//! reported as a `NOTE`.
//!
//! The verifier reads every column by type and never panics on any content:
//! an unexpected type is a `malformed` finding.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::checkpoint::LATEST_FILE;
use super::note::{self, MAX_NOTE_BYTES, VerifierKey};
use super::record::{ZERO_HASH, hash32, leaf_hash};
use super::{ACTION_KEY_ROTATED, ACTION_RECOVERED, AuditError};

/// At most this many failures are kept (the rest are counted).
const MAX_FINDINGS: usize = 1000;
/// At most this many notices are kept.
const MAX_NOTICES: usize = 100;
/// Full-table look-ups for "which record is this?" (each one scans `audit`).
const MAX_LOOKUPS: u32 = 32;
/// At most this many external checkpoint files are read.
const MAX_EXTERNAL_FILES: usize = 100_000;

/// What to verify against.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The expected origin (checkpoint first line, key name).
    pub origin: &'a str,
    /// The off-box checkpoint directory, when available.
    pub external: Option<&'a Path>,
    /// The genesis verifier key as known off the box; without it the keys in
    /// the database are trusted as far as the external checkpoints confirm.
    pub trusted_key: Option<&'a VerifierKey>,
}

/// What kind of problem a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// A record's hash does not match its content.
    ContentHash,
    /// A record does not link to the one before, or differs from a signed
    /// checkpoint of its size.
    ChainBreak,
    /// Records are missing (gap in seq, or deleted and renumbered).
    Missing,
    /// A record sits at another record's seq.
    Order,
    /// Records were inserted (later records renumbered).
    Inserted,
    /// A row or column has an unexpected type or range.
    Malformed,
    /// The log ends before a checkpoint or key rotation proves it reached.
    LogShorter,
    /// A checkpoint's signature is missing or invalid.
    CheckpointSignature,
    /// A checkpoint (or key) belongs to another origin.
    CheckpointOrigin,
    /// A checkpoint note cannot be parsed or contradicts its row.
    CheckpointMalformed,
    /// A checkpoint exported off the box is missing locally.
    CheckpointMissing,
    /// The off-box checkpoint is newer than the log.
    Rollback,
    /// The off-box checkpoint has another root at its size.
    ExternalMismatch,
    /// A key not endorsed by its predecessor, or a rotation record without
    /// its key.
    ForgedKeyRotation,
    /// The genesis key is not the trusted one.
    UntrustedKey,
}

impl FindingKind {
    fn text(self) -> &'static str {
        match self {
            FindingKind::ContentHash => "content hash mismatch",
            FindingKind::ChainBreak => "chain break",
            FindingKind::Missing => "missing",
            FindingKind::Order => "order",
            FindingKind::Inserted => "inserted",
            FindingKind::Malformed => "malformed",
            FindingKind::LogShorter => "log shorter than",
            FindingKind::CheckpointSignature => "checkpoint signature",
            FindingKind::CheckpointOrigin => "checkpoint origin",
            FindingKind::CheckpointMalformed => "checkpoint malformed",
            FindingKind::CheckpointMissing => "checkpoint missing",
            FindingKind::Rollback => "rollback",
            FindingKind::ExternalMismatch => "external checkpoint mismatch",
            FindingKind::ForgedKeyRotation => "forged key rotation",
            FindingKind::UntrustedKey => "untrusted key",
        }
    }

    /// Kinds about one record print as `FAIL seq=k: …`; the others as `FAIL: …`.
    fn per_record(self) -> bool {
        matches!(
            self,
            FindingKind::ContentHash
                | FindingKind::ChainBreak
                | FindingKind::Missing
                | FindingKind::Order
                | FindingKind::Inserted
                | FindingKind::Malformed
        )
    }
}

/// One failure: its kind, the first bad seq it concerns, and a line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The first bad seq (for log-level findings: the checkpoint size, the
    /// first missing seq or the rotation seq), when there is one.
    pub seq: Option<u64>,
    /// The kind.
    pub kind: FindingKind,
    /// Details after the kind (ids and sizes only).
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind.per_record(), self.seq) {
            (true, Some(seq)) => write!(f, "FAIL seq={seq}: {}", self.kind.text())?,
            _ => write!(f, "FAIL: {}", self.kind.text())?,
        }
        if self.detail.is_empty() {
            Ok(())
        } else if self.kind == FindingKind::LogShorter || self.kind == FindingKind::Rollback {
            // "log shorter than checkpoint n", "rollback, external checkpoint n > local m"
            write!(f, "{}", self.detail)
        } else {
            write!(f, " ({})", self.detail)
        }
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Rows in `audit`.
    pub records: u64,
    /// Valid local checkpoints.
    pub checkpoints: u64,
    /// Valid distinct off-box checkpoints.
    pub external_checkpoints: u64,
    /// Rows in `audit_keys`.
    pub keys: u64,
    /// Failures, first bad seq first.
    pub failures: Vec<Finding>,
    /// Failures beyond the first 1,000, not listed.
    pub suppressed: u64,
    /// `WARN: …` lines (unanchored records, no off-box checkpoint).
    pub warnings: Vec<String>,
    /// `NOTE …` lines (recoveries, key rotations).
    pub notices: Vec<String>,
}

impl VerifyReport {
    /// True when nothing failed (warnings and notices allowed).
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && self.suppressed == 0
    }

    /// The first failure (lowest seq).
    pub fn first(&self) -> Option<&Finding> {
        self.failures.first()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "audit: {} records, {} checkpoints, {} external checkpoints, {} keys: {}",
            self.records,
            self.checkpoints,
            self.external_checkpoints,
            self.keys,
            if self.ok() { "OK" } else { "FAIL" }
        )?;
        for x in &self.failures {
            writeln!(f, "{x}")?;
        }
        if self.suppressed > 0 {
            writeln!(f, "FAIL: {} more failures not listed", self.suppressed)?;
        }
        for w in &self.warnings {
            writeln!(f, "{w}")?;
        }
        for n in &self.notices {
            writeln!(f, "{n}")?;
        }
        Ok(())
    }
}

/// Verifies the audit trail in `conn` for `origin`, with the off-box
/// checkpoints in `external` when given. See [`verify_with`].
pub fn verify(
    conn: &Connection,
    external: Option<&Path>,
    origin: &str,
) -> Result<VerifyReport, AuditError> {
    verify_with(
        conn,
        &VerifyOptions {
            origin,
            external,
            trusted_key: None,
        },
    )
}

/// Verifies chain, checkpoints, keys and off-box checkpoints. An `Err` means
/// the verification could not run (tables missing, I/O); any content
/// problem is a [`Finding`]. Read-only; run it on a read-only connection or
/// inside a read transaction for a consistent snapshot.
pub fn verify_with(
    conn: &Connection,
    opts: &VerifyOptions<'_>,
) -> Result<VerifyReport, AuditError> {
    let mut v = Verifier {
        opts,
        report: VerifyReport::default(),
        keys: Vec::new(),
        rotations: HashMap::new(),
        anchors: Vec::new(),
        local_sizes: BTreeSet::new(),
        runs: Vec::new(),
        lookups: 0,
    };
    let local_max: i64 =
        conn.query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |r| r.get(0))?;
    let local_max = u64::try_from(local_max).unwrap_or(0);
    v.load_keys(conn, local_max)?;
    v.load_checkpoints(conn, local_max)?;
    if let Some(dir) = opts.external {
        v.load_external(dir, local_max)?;
    }
    v.walk(conn)?;
    v.finish(local_max);
    Ok(v.report)
}

struct Key {
    id: u64,
    valid_from: u64,
    vk: Option<VerifierKey>,
    trusted: bool,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    size: u64,
    root: [u8; 32],
    external: bool,
}

/// Positions `start..=end` hold records `start + delta ..= end + delta`.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    end: u64,
    delta: i64,
}

struct Verifier<'a> {
    opts: &'a VerifyOptions<'a>,
    report: VerifyReport,
    keys: Vec<Key>,
    /// valid_from_seq → (expected object of its `audit.key-rotated` record,
    /// whether the key is endorsed).
    rotations: HashMap<u64, (String, bool)>,
    anchors: Vec<Anchor>,
    local_sizes: BTreeSet<u64>,
    runs: Vec<Run>,
    lookups: u32,
}

fn fail(seq: Option<u64>, kind: FindingKind, detail: impl Into<String>) -> Finding {
    Finding {
        seq,
        kind,
        detail: detail.into(),
    }
}

/// A short, printable rendering of untrusted text.
fn shown(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    s.escape_debug().to_string()
}

fn as_u64(v: ValueRef<'_>) -> Option<u64> {
    match v {
        ValueRef::Integer(i) => u64::try_from(i).ok(),
        _ => None,
    }
}

fn as_text(v: ValueRef<'_>) -> Option<&[u8]> {
    match v {
        ValueRef::Text(t) => Some(t),
        _ => None,
    }
}

fn as_hash(v: ValueRef<'_>) -> Option<[u8; 32]> {
    match v {
        ValueRef::Blob(b) => hash32(b),
        _ => None,
    }
}

impl Verifier<'_> {
    fn push(&mut self, f: Finding) {
        if self.report.failures.len() < MAX_FINDINGS {
            self.report.failures.push(f);
        } else {
            self.report.suppressed += 1;
        }
    }

    fn notice(&mut self, text: String) {
        if self.report.notices.len() < MAX_NOTICES {
            self.report.notices.push(text);
        }
    }

    fn load_keys(&mut self, conn: &Connection, local_max: u64) -> Result<(), AuditError> {
        let origin = self.opts.origin;
        let mut stmt = conn.prepare(
            "SELECT id, name, public_key, valid_from_seq, endorsement FROM audit_keys ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        let mut index = 0u64;
        while let Some(row) = rows.next()? {
            index += 1;
            self.report.keys += 1;
            let id = as_u64(row.get_ref(0)?);
            let name = as_text(row.get_ref(1)?);
            let public = match row.get_ref(2)? {
                ValueRef::Blob(b) => <[u8; 32]>::try_from(b)
                    .ok()
                    .and_then(|b| VerifyingKey::from_bytes(&b).ok()),
                _ => None,
            };
            let valid_from = as_u64(row.get_ref(3)?);
            let endorsement = row.get_ref(4)?;
            let kind = if index == 1 {
                FindingKind::UntrustedKey
            } else {
                FindingKind::ForgedKeyRotation
            };
            let seq = if index == 1 { Some(1) } else { valid_from };
            let mut problem: Option<String> = None;
            if id != Some(index) {
                problem = Some(format!("key table row {index} has id {id:?}"));
            } else if name != Some(origin.as_bytes()) {
                problem = Some(format!(
                    "key {index} is named {:?}",
                    name.map(shown).unwrap_or_default()
                ));
            } else if public.is_none() {
                problem = Some(format!("key {index} is not an Ed25519 public key"));
            }
            let vk = public.map(|key| VerifierKey {
                name: origin.to_string(),
                key,
            });
            let prev_trusted = self
                .keys
                .last()
                .filter(|k| k.trusted)
                .and_then(|k| k.vk.clone());
            let prev_from = self.keys.last().map(|k| k.valid_from);
            if problem.is_none() {
                if index == 1 {
                    if valid_from != Some(1) {
                        problem = Some("genesis key must be valid from seq 1".into());
                    } else if !matches!(endorsement, ValueRef::Null) {
                        problem = Some("genesis key carries an endorsement".into());
                    } else if let Some(pin) = self.opts.trusted_key
                        && vk.as_ref() != Some(pin)
                    {
                        problem = Some("genesis key differs from the pinned verifier key".into());
                    }
                } else {
                    match (valid_from, prev_from, &vk) {
                        // Key 2 may start at seq 1 (rotation as the first record).
                        (Some(from), Some(before), Some(vk))
                            if from > before || (index == 2 && from == 1) =>
                        {
                            let body = note::endorsement_body(origin, index, &vk.key, from);
                            let endorsed = as_text(endorsement)
                                .and_then(|t| std::str::from_utf8(t).ok())
                                .and_then(note::parse)
                                .is_some_and(|n| {
                                    n.body == body
                                        && prev_trusted.as_ref().is_some_and(|p| n.verified_by(p))
                                });
                            if !endorsed {
                                problem = Some(format!(
                                    "key {index} is not endorsed by key {}",
                                    index - 1
                                ));
                            }
                        }
                        _ => {
                            problem = Some(format!(
                                "key {index}: valid_from_seq missing or not after key {}",
                                index - 1
                            ))
                        }
                    }
                }
            }
            let trusted = problem.is_none();
            if let Some(p) = problem {
                self.push(fail(seq, kind, p));
            }
            if let (Some(from), Some(vk)) = (valid_from, &vk)
                && index > 1
            {
                self.rotations.insert(
                    from,
                    (
                        format!("audit-key:{index}:{}", note::fingerprint(&vk.key)),
                        trusted,
                    ),
                );
                if from > local_max {
                    self.push(fail(
                        Some(local_max + 1),
                        FindingKind::LogShorter,
                        format!(" key rotation at seq {from} (local size {local_max})"),
                    ));
                }
            }
            if let Some(from) = valid_from {
                self.keys.push(Key {
                    id: index,
                    valid_from: from,
                    vk,
                    trusted,
                });
            }
        }
        Ok(())
    }

    /// The key that must have signed a checkpoint of `size`.
    fn key_for(&self, size: u64) -> Option<&Key> {
        self.keys.iter().rev().find(|k| k.valid_from <= size)
    }

    /// Checks a checkpoint note; `Ok` with the parsed checkpoint when valid,
    /// otherwise the finding to report. `label` names it in messages.
    fn check_note(
        &self,
        text: &[u8],
        label: &str,
        seq: Option<u64>,
        local_max: u64,
    ) -> Result<note::Checkpoint, Finding> {
        let malformed = |what: &str| {
            fail(
                seq,
                FindingKind::CheckpointMalformed,
                format!("{label}: {what}"),
            )
        };
        let text = std::str::from_utf8(text).map_err(|_| malformed("not UTF-8"))?;
        let parsed = note::parse(text).ok_or_else(|| malformed("not a signed note"))?;
        let cp =
            note::parse_checkpoint(parsed.body).ok_or_else(|| malformed("not a checkpoint"))?;
        let seq = seq.or(Some(cp.size));
        if cp.origin != self.opts.origin {
            return Err(fail(
                seq,
                FindingKind::CheckpointOrigin,
                format!("{label} is for \"{}\"", shown(cp.origin.as_bytes())),
            ));
        }
        let key = self.key_for(cp.size);
        let ok = key
            .filter(|k| k.trusted)
            .and_then(|k| k.vk.as_ref())
            .is_some_and(|vk| parsed.verified_by(vk));
        if ok {
            return Ok(cp);
        }
        // Beyond the local end the signing key may be one this (older)
        // database never saw: any trusted key will do there.
        if cp.size > local_max
            && self
                .keys
                .iter()
                .filter(|k| k.trusted)
                .filter_map(|k| k.vk.as_ref())
                .any(|vk| parsed.verified_by(vk))
        {
            return Ok(cp);
        }
        let why = match key {
            None => "no key registered for its size".to_string(),
            Some(k) if !k.trusted => format!("signed with untrusted key {}", k.id),
            Some(k) => format!("not signed by key {}", k.id),
        };
        Err(fail(
            seq,
            FindingKind::CheckpointSignature,
            format!("{label} of size {}: {why}", cp.size),
        ))
    }

    fn load_checkpoints(&mut self, conn: &Connection, local_max: u64) -> Result<(), AuditError> {
        let mut stmt = conn.prepare("SELECT size, note FROM audit_checkpoints ORDER BY size")?;
        let mut rows = stmt.query([])?;
        let mut shorter: Option<u64> = None;
        while let Some(row) = rows.next()? {
            let size = as_u64(row.get_ref(0)?).filter(|s| *s >= 1);
            let Some(size) = size else {
                self.push(fail(
                    None,
                    FindingKind::CheckpointMalformed,
                    "checkpoint row with a size below 1",
                ));
                continue;
            };
            self.local_sizes.insert(size);
            let Some(text) = as_text(row.get_ref(1)?) else {
                self.push(fail(
                    Some(size),
                    FindingKind::CheckpointMalformed,
                    format!("checkpoint {size}: note is not text"),
                ));
                continue;
            };
            match self.check_note(text, "checkpoint", Some(size), local_max) {
                Err(f) => self.push(f),
                Ok(cp) if cp.size != size => self.push(fail(
                    Some(size),
                    FindingKind::CheckpointMalformed,
                    format!("checkpoint row {size} holds a note for size {}", cp.size),
                )),
                Ok(cp) => {
                    self.report.checkpoints += 1;
                    if size > local_max {
                        shorter = Some(size);
                    } else {
                        self.anchors.push(Anchor {
                            size,
                            root: cp.root,
                            external: false,
                        });
                    }
                }
            }
        }
        if let Some(n) = shorter {
            self.push(fail(
                Some(local_max + 1),
                FindingKind::LogShorter,
                format!(" checkpoint {n} (local size {local_max})"),
            ));
        }
        Ok(())
    }

    fn load_external(&mut self, dir: &Path, local_max: u64) -> Result<(), AuditError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.report
                    .warnings
                    .push("WARN: no external checkpoint directory".into());
                return Ok(());
            }
            Err(e) => return Err(AuditError::io("read", dir, e)),
        };
        let mut files: Vec<(String, Option<u64>)> = Vec::new();
        for entry in entries.take(MAX_EXTERNAL_FILES) {
            let entry = entry.map_err(|e| AuditError::io("read", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == LATEST_FILE {
                files.push((name, None));
            } else if let Some(n) = name
                .strip_prefix(LATEST_FILE)
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                files.push((name, Some(n)));
            }
        }
        files.sort();
        if files.is_empty() {
            self.report
                .warnings
                .push("WARN: no external checkpoint".into());
            return Ok(());
        }
        let mut seen: HashMap<Vec<u8>, ()> = HashMap::new();
        let mut rollback: Option<(u64, bool)> = None;
        for (name, named_size) in files {
            let path = dir.join(&name);
            let text = match read_limited(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.push(fail(
                        named_size,
                        FindingKind::CheckpointMalformed,
                        format!("external checkpoint file {name}: {e}"),
                    ));
                    continue;
                }
            };
            if seen.insert(text.clone(), ()).is_some() {
                continue;
            }
            let label = format!("external checkpoint file {name}");
            match self.check_note(&text, &label, named_size, local_max) {
                Err(f) => match f.seq {
                    // Beyond the local end the key may be one this (older)
                    // copy never saw: unverifiable, but it claims the log
                    // was longer, which fails either way.
                    Some(n) if n > local_max && f.kind == FindingKind::CheckpointSignature => {
                        rollback = rollback.max(Some((n, false)));
                    }
                    _ => self.push(f),
                },
                Ok(cp) if named_size.is_some_and(|n| n != cp.size) => self.push(fail(
                    named_size,
                    FindingKind::CheckpointMalformed,
                    format!("{label} holds a note for size {}", cp.size),
                )),
                Ok(cp) => {
                    self.report.external_checkpoints += 1;
                    if cp.size > local_max {
                        rollback = rollback.max(Some((cp.size, true)));
                    } else {
                        if !self.local_sizes.contains(&cp.size) {
                            self.push(fail(
                                Some(cp.size),
                                FindingKind::CheckpointMissing,
                                format!(
                                    "checkpoint {} was exported but is not in the log",
                                    cp.size
                                ),
                            ));
                        }
                        self.anchors.push(Anchor {
                            size: cp.size,
                            root: cp.root,
                            external: true,
                        });
                    }
                }
            }
        }
        if let Some((n, verified)) = rollback {
            self.push(fail(
                Some(local_max + 1),
                FindingKind::Rollback,
                format!(
                    ", external checkpoint {n} > local {local_max}{}",
                    if verified {
                        ""
                    } else {
                        " (signed by a key this log does not know)"
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Which record is this row really? Tries the neighbours, then looks up
    /// the row whose hash is this row's `prev`.
    fn identify(
        &mut self,
        conn: &Connection,
        seq: u64,
        prev: &[u8; 32],
        at: i64,
        fields: [&[u8]; 5],
        stored: &[u8; 32],
    ) -> Result<Option<u64>, AuditError> {
        let matches = |cand: u64| leaf_hash(cand, prev, at, fields) == *stored;
        for cand in [seq.checked_sub(1), seq.checked_add(1)]
            .into_iter()
            .flatten()
        {
            if cand >= 1 && matches(cand) {
                return Ok(Some(cand));
            }
        }
        if *prev == ZERO_HASH {
            return Ok((seq != 1 && matches(1)).then_some(1));
        }
        if self.lookups >= MAX_LOOKUPS {
            return Ok(None);
        }
        self.lookups += 1;
        let mut stmt = conn.prepare_cached("SELECT seq FROM audit WHERE hash = ?1 LIMIT 4")?;
        let mut rows = stmt.query([&prev[..]])?;
        while let Some(r) = rows.next()? {
            if let Some(cand) = as_u64(r.get_ref(0)?).and_then(|s| s.checked_add(1))
                && cand != seq
                && matches(cand)
            {
                return Ok(Some(cand));
            }
        }
        Ok(None)
    }

    fn moved(&mut self, pos: u64, record: u64) {
        let delta = record as i128 - pos as i128;
        let Ok(delta) = i64::try_from(delta) else {
            return;
        };
        if let Some(last) = self.runs.last_mut()
            && last.end + 1 == pos
            && last.delta == delta
        {
            last.end = pos;
            return;
        }
        if self.runs.len() < MAX_FINDINGS {
            self.runs.push(Run {
                start: pos,
                end: pos,
                delta,
            });
        } else {
            self.report.suppressed += 1;
        }
    }

    fn walk(&mut self, conn: &Connection) -> Result<(), AuditError> {
        self.anchors.sort_by_key(|a| (a.size, a.external));
        let anchors = std::mem::take(&mut self.anchors);
        let mut next_anchor = 0usize;
        let mut expected: u64 = 1;
        let mut link: Option<[u8; 32]> = Some(ZERO_HASH);
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, action, object, source, outcome, prev, hash
             FROM audit ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            self.report.records += 1;
            let raw_seq = match row.get_ref(0)? {
                ValueRef::Integer(i) => i,
                _ => -1,
            };
            let Some(seq) = u64::try_from(raw_seq).ok().filter(|s| *s >= 1) else {
                self.push(fail(
                    None,
                    FindingKind::Malformed,
                    format!("row with seq {raw_seq}"),
                ));
                link = None;
                continue;
            };
            if seq > expected {
                let detail = if seq - expected == 1 {
                    String::new()
                } else {
                    format!("seq {expected}..{} missing", seq - 1)
                };
                self.push(fail(Some(expected), FindingKind::Missing, detail));
                link = None;
            }
            expected = seq.saturating_add(1);
            while next_anchor < anchors.len() && anchors[next_anchor].size < seq {
                next_anchor += 1; // that record is missing: already reported
            }

            let at = match row.get_ref(1)? {
                ValueRef::Integer(i) => Some(i),
                _ => None,
            };
            let texts = [
                as_text(row.get_ref(2)?),
                as_text(row.get_ref(3)?),
                as_text(row.get_ref(4)?),
                as_text(row.get_ref(5)?),
                as_text(row.get_ref(6)?),
            ];
            let prev = as_hash(row.get_ref(7)?);
            let stored = as_hash(row.get_ref(8)?);
            let (Some(at), [Some(a), Some(b), Some(c), Some(d), Some(e)], Some(prev), Some(stored)) =
                (at, texts, prev, stored)
            else {
                self.push(fail(
                    Some(seq),
                    FindingKind::Malformed,
                    "a column has the wrong type or length",
                ));
                link = None;
                continue;
            };
            let fields = [a, b, c, d, e];
            let good = if leaf_hash(seq, &prev, at, fields) != stored {
                match self.identify(conn, seq, &prev, at, fields, &stored)? {
                    Some(record) => self.moved(seq, record),
                    None => self.push(fail(Some(seq), FindingKind::ContentHash, "")),
                }
                false
            } else if link.is_some_and(|l| l != prev) {
                self.push(fail(
                    Some(seq),
                    FindingKind::ChainBreak,
                    "prev is not the hash of the record before",
                ));
                false
            } else {
                true
            };
            link = good.then_some(stored);

            while next_anchor < anchors.len() && anchors[next_anchor].size == seq {
                let a = anchors[next_anchor];
                next_anchor += 1;
                if good && a.root != stored {
                    link = None;
                    if a.external {
                        self.push(fail(
                            Some(seq),
                            FindingKind::ExternalMismatch,
                            format!("record {seq} differs from the external checkpoint {seq}"),
                        ));
                    } else {
                        self.push(fail(
                            Some(seq),
                            FindingKind::ChainBreak,
                            format!("record {seq} differs from signed checkpoint {seq}"),
                        ));
                    }
                }
            }
            if good {
                self.check_special(seq, fields[1], fields[2]);
            }
        }
        // Anchors are consumed; keep the valid ones at existing records for
        // the "unanchored" count.
        self.anchors = anchors;
        Ok(())
    }

    fn check_special(&mut self, seq: u64, action: &[u8], object: &[u8]) {
        if action == ACTION_RECOVERED.as_bytes() {
            self.notice(format!(
                "NOTE seq={seq}: recovered after an unclean shutdown ({})",
                shown(object)
            ));
        }
        let expected = self.rotations.remove(&seq);
        if action == ACTION_KEY_ROTATED.as_bytes() {
            match expected {
                Some((obj, trusted)) if obj.as_bytes() == object => {
                    if trusted {
                        self.notice(format!("NOTE seq={seq}: checkpoint key rotated"));
                    }
                }
                Some(_) => self.push(fail(
                    Some(seq),
                    FindingKind::ForgedKeyRotation,
                    format!("the rotation record at seq {seq} names another key"),
                )),
                None => self.push(fail(
                    Some(seq),
                    FindingKind::ForgedKeyRotation,
                    format!("rotation record at seq {seq} without a registered key"),
                )),
            }
        } else if expected.is_some() {
            self.push(fail(
                Some(seq),
                FindingKind::ForgedKeyRotation,
                format!("a key is registered from seq {seq} but that is no rotation record"),
            ));
        }
    }

    fn finish(&mut self, local_max: u64) {
        // Rotations whose record never showed up (and that are not beyond
        // the end, which is reported as "log shorter").
        let mut left: Vec<u64> = self
            .rotations
            .keys()
            .copied()
            .filter(|s| *s <= local_max)
            .collect();
        left.sort_unstable();
        for s in left {
            self.push(fail(
                Some(s),
                FindingKind::ForgedKeyRotation,
                format!("no rotation record at seq {s}"),
            ));
        }

        self.classify_runs(local_max);

        let anchored = self
            .anchors
            .iter()
            .map(|a| a.size)
            .filter(|s| *s <= local_max)
            .max()
            .unwrap_or(0);
        if local_max > anchored {
            self.report.warnings.push(format!(
                "WARN: {} records unanchored (seq {}..{} after the newest checkpoint {anchored})",
                local_max - anchored,
                anchored + 1,
                local_max
            ));
        }
        if self.opts.external.is_none() && local_max > 0 {
            self.report.warnings.push(
                "WARN: no external checkpoint directory given (rollback undetectable)".into(),
            );
        }
        self.report
            .failures
            .sort_by_key(|f| f.seq.unwrap_or(u64::MAX));
    }

    /// Turns runs of records found at other positions into findings:
    /// a constant shift up to the end of the log is a renumbering after a
    /// delete (`missing`) or an insert (`inserted`); anything else is `order`.
    fn classify_runs(&mut self, last: u64) {
        let runs = std::mem::take(&mut self.runs);
        let moved_at = |pos: u64| runs.iter().any(|r| r.start <= pos && pos <= r.end);
        for r in &runs {
            let to_end = r.end == last;
            let first_record = r.start as i128 + r.delta as i128;
            if to_end && r.delta > 0 {
                let d = r.delta as u64;
                self.push(fail(
                    Some(r.start),
                    FindingKind::Missing,
                    format!(
                        "{d} record(s) deleted, records {}..{} renumbered",
                        r.start + d,
                        r.end + d
                    ),
                ));
            } else if to_end
                && r.delta < 0
                && first_record >= 1
                && !(first_record as u64..r.start).any(moved_at)
            {
                let at = first_record as u64;
                self.push(fail(
                    Some(at),
                    FindingKind::Inserted,
                    format!(
                        "{} record(s) inserted at seq {at}, records {at}..{} renumbered",
                        r.start - at,
                        (r.end as i128 + r.delta as i128)
                    ),
                ));
            } else {
                let detail = if r.start == r.end {
                    format!("holds record {first_record}")
                } else {
                    format!(
                        "seq {}..{} hold records {first_record}..{}",
                        r.start,
                        r.end,
                        r.end as i128 + r.delta as i128
                    )
                };
                self.push(fail(Some(r.start), FindingKind::Order, detail));
            }
        }
    }
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_NOTE_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > MAX_NOTE_BYTES {
        return Err(std::io::Error::other("larger than a checkpoint note"));
    }
    Ok(buf)
}
