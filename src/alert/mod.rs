//! Alerts: who gets told, and the lifecycle that makes sure someone acts.

pub mod desk;
#[cfg(test)]
mod desk_tests;
pub mod engine;
pub mod model;
pub mod recipients;
#[cfg(test)]
mod tests;
