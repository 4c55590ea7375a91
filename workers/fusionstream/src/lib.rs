//! fusionstream worker: configuration, the pipeline and its wiring. The binary (`main.rs`,
//! `cli/`) is a thin layer over this library; integration tests drive the library directly.
//!
//! | module | owns |
//! |---|---|
//! | [`app`] | the worker as one call: `app::run(config, shutdown, max_events) -> Summary`; `app::model` loads the model for every command |
//! | [`config`] | layered, validated configuration (`config/default.toml` embedded; the command line's typed `Overrides` on top) |
//! | [`indexer`] | the live vector index's process (`fusionstream index`): feeds, snapshots, `/search` |
//! | [`pipeline`] | source → fetch → preprocess → batcher → model thread → sink → acknowledge |
//! | [`telemetry`] | logs, OpenTelemetry traces, Prometheus metrics, `/healthz` `/readyz` |

pub mod app;
pub mod config;
pub mod indexer;
pub mod pipeline;
pub mod telemetry;
