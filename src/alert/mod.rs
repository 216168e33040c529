//! Alerts: who gets told, and the lifecycle that makes sure someone acts.

pub mod recipients;
