//! Listeners: MLLP (framing, TLS, intake, acknowledgement after commit) and
//! HTTP (health now; FHIR later).
//!
//! Invariants:
//! - every acknowledgement that says AA/CA is written only after the
//!   journal's receipt for its message ([`connection`]);
//! - exactly one acknowledgement (or one acknowledgement batch) per frame,
//!   in arrival order;
//! - bounded: frame size, connections (over the cap: closed at once), in-flight
//!   frames per connection, idle and partial-frame timeouts.

pub mod ack;
pub mod app_ack;
pub mod codec;
pub mod connection;
pub mod fhir;
pub mod http;
pub mod intake;
pub mod server;
pub mod tls;
