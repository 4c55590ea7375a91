//! What the worker shows operators: logs and OpenTelemetry traces ([`traces`]), Prometheus
//! metrics ([`metrics`], catalogue in `docs/metrics.md`) and the HTTP endpoints that serve
//! them with the health checks ([`server`]).

pub mod metrics;
pub mod server;
pub mod traces;
