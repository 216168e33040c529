//! Integration tests: one binary, real TCP on loopback, raw MLLP bytes in,
//! exact acknowledgement bytes asserted.

mod support;

mod acks;
mod batch;
mod certs;
mod cli;
mod corpus;
mod crash;
mod duplicates;
mod enhanced;
mod interop;
mod limits;
mod storage_faults;
mod tls;
