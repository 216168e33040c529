//! State the running gateway keeps in memory and changes while it runs:
//! the patient census ([`LiveCensus`], fed by the journal committer after
//! each commit and by journaled API changes) and the routing set
//! ([`LiveRouting`]: rosters and mappings, reloaded on SIGHUP, on a file
//! change or through the API; a broken file is refused and the previous
//! set serves on).

mod census;
mod routing;

pub use census::LiveCensus;
pub use routing::{
    Candidate, LiveRouting, ReloadOutcome, RoutingSet, console_path, is_console, validate, watch,
};
