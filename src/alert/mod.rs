//! Alerts: who gets told, and the lifecycle that makes sure someone acts.

pub mod desk;
pub mod engine;
pub mod model;
pub mod recipients;
#[cfg(test)]
mod tests;
