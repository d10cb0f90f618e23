//! Alerting: rules ([`rule`]), anomaly detectors ([`anomaly`]), the engine
//! that turns signal values into alert transitions ([`engine`]) and the
//! notifier that delivers them ([`notify`]).

pub mod anomaly;
pub mod engine;
pub mod notify;
pub mod rule;
