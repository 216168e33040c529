//! Named crash points for tests (RELIABILITY §(a′)): built only with the
//! `failpoints` feature (the integration tests enable it; release builds do
//! not have it). With it, `hit(name)` aborts the process at once — no
//! unwinding, no cleanup, like a power cut — when the environment variable
//! `SWITCHBOARD_FAILPOINT` names that point. Without the feature it compiles
//! to nothing.
//!
//! Points: `journal.after-commit` (the batch is durable, no answer
//! released), `alerts.after-write` (alerts and notifications written, the
//! delivery workers not woken), `delivery.after-send` (the backend answered
//! 2xx, the attempt not yet recorded).

/// Aborts here when the `failpoints` feature is on and
/// `SWITCHBOARD_FAILPOINT` names `name`.
#[inline]
pub fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    {
        use std::sync::OnceLock;
        static ARMED: OnceLock<Option<String>> = OnceLock::new();
        let armed = ARMED.get_or_init(|| std::env::var("SWITCHBOARD_FAILPOINT").ok());
        if armed
            .as_deref()
            .is_some_and(|a| a.split(',').any(|x| x.trim() == name))
        {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
