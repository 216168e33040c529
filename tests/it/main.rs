//! Integration tests: one binary, real TCP on loopback, raw MLLP bytes in,
//! exact acknowledgement bytes asserted.

// Tests measure real elapsed time for tolerances; the gateway itself may
// only read time through its injected clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod support;

mod acks;
mod alarm_status;
mod alerts;
mod batch;
mod census;
mod certs;
mod cli;
mod console;
mod corpus;
mod crash;
mod crash_alerts;
mod delivery;
mod delivery_mtls;
mod duplicates;
mod enhanced;
mod failpoints;
mod fhir;
mod fhir_backend;
mod fhir_crash;
mod fhir_more;
mod floods;
mod fuzz_replay;
mod interop;
mod limits;
mod live_reload;
mod load;
mod matrix;
mod operator_alarms;
mod ordering;
mod outage;
mod redaction;
mod rosters_console;
mod routing;
mod sealed;
mod storage_faults;
mod tls;
mod wctp;
