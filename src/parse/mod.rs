//! Parse: HL7 v2 bytes -> text -> header -> `ClinicalEvent`s.
//!
//! Stages, each usable on its own so the listener can answer even when a
//! later stage fails:
//! 1. [`decode_frame`]: bytes to UTF-8 text per MSH-18 (BOM stripped, CR/LF/CRLF
//!    segment ends normalised to CR).
//! 2. [`split`]: a frame into messages (FHS/BHS/BTS/FTS batches, or several MSH).
//! 3. [`Header::parse`]: MSH fields needed to acknowledge and to authorise
//!    ([`Header::sniff`] when it fails, to still echo what is readable).
//! 4. [`support`] then [`events`]: the whole message into events, or a
//!    [`ParseError`] with an HL7 table 0357 code and ERR-2 location.
//!
//! Invariants: no error produced here carries message content, and no input
//! makes any stage panic.

mod batch;
mod charset;
mod error;
pub mod fhir;
mod header;
mod hl7;

#[cfg(test)]
mod tests;

pub use batch::{BatchHeader, Split, split};
pub use charset::{Charset, DecodedFrame, decode_frame};
pub use error::{ErrorCode, ErrorLocation, ParseError};
pub use header::Header;
pub use hl7::{EventContext, Support, events, support};
