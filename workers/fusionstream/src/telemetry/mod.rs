//! What the worker shows operators, and how it turns the engine's reports into it.
//!
//! | module | owns |
//! |---|---|
//! | [`recorder`] | the engine's reports as counters, gauges and histograms; the run summary's numbers |
//! | [`health`] | control state apart from the counters: model loaded, shutdown begun |
//! | [`metrics`] | the Prometheus catalogue over the recorder, health and the adapters' counters (`docs/metrics.md`) |
//! | [`server`] | `/metrics`, `/healthz`, `/readyz` |
//! | [`traces`] | the log subscriber and the OpenTelemetry span exporter (trace context itself is the engine's) |

pub mod health;
pub mod metrics;
pub mod recorder;
pub mod server;
pub mod traces;

pub use recorder::{Recorder, Snapshot};
