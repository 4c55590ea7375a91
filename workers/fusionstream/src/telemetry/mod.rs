//! What the worker shows operators, and what it counts to show it.
//!
//! | module | owns |
//! |---|---|
//! | [`stats`] | the counters, gauges and histograms every stage updates; the run summary's numbers |
//! | [`health`] | control state apart from the counters: model loaded, shutdown begun |
//! | [`metrics`] | the Prometheus catalogue over stats, health and the adapters' counters (`docs/metrics.md`) |
//! | [`server`] | `/metrics`, `/healthz`, `/readyz` |
//! | [`traces`] | logs and OpenTelemetry traces, W3C trace context through Kafka headers |

pub mod health;
pub mod metrics;
pub mod server;
pub mod stats;
pub mod traces;
