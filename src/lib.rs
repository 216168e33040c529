//! # Switchboard
//!
//! An edge gateway that receives hospital HL7 v2 (MLLP) and FHIR R4 feeds,
//! durably records each message *before* acknowledging it, turns events into
//! clinical alerts, finds who is on call, and tracks acknowledgement.
//!
//! ## The flow
//!
//! ```text
//! sender --MLLP--> listener::codec --> listener::intake --> parse --> journal
//!                      ^                                               |
//!                      +------------ ACK (only after the commit) <-----+
//! ```
//!
//! ## Layout
//!
//! - [`app`]: wires the stages, owns graceful shutdown.
//! - [`cli`]: `serve`, `check`, `messages`.
//! - [`config`]: `switchboard.toml` -> validated [`config::Config`].
//! - [`console`]: the web console (`/console/`), assets compiled in.
//! - [`listener`]: MLLP framing, TLS, intake, acknowledgements, HTTP health.
//! - [`parse`]: HL7 v2 bytes -> text -> header -> [`event::ClinicalEvent`].
//! - [`event`]: the one internal currency.
//! - [`journal`]: the durable store (SQLite, group commit, duplicates, outbox).
//! - [`seal`]: encryption at rest: data keys per category and day, wrapped
//!   by a key-encryption key kept apart from the database.
//! - [`audit`]: the hash-chained audit trail, signed checkpoints, verifier.
//! - [`retention`]: retention schedules, crypto-erase, legal holds.
//! - [`roster`]: on-call rosters in IANA time zones: who is on call, gaps, DST.
//! - [`rules`]: mapping rules: event -> routes (target, priority, escalation policy).
//! - [`clock`]: the one injected clock.
//! - [`telemetry`]: tracing and counters; never logs PHI.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alert;
pub mod api;
pub mod app;
pub mod audit;
pub mod census;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod event;
pub mod failpoint;
pub mod journal;
pub mod listener;
pub mod live;
pub mod operator;
pub mod parse;
pub mod redact;
pub mod retention;
pub mod roster;
pub mod rules;
pub mod seal;
pub mod status;
pub mod telemetry;
