//! fusionstream worker: configuration, telemetry and the wiring of the engine
//! (`fusionstream_engine`) to its adapters (`fusionstream_io`). The binary (`main.rs`,
//! `cli/`) is a thin layer over this library; integration tests drive the library directly.
//!
//! | module | owns |
//! |---|---|
//! | [`app`] | the worker as one call: `app::run_recorded(config, recorder, shutdown, max_events) -> Summary`: adapters chosen by the configuration, the engine run over them; `app::model` loads the model for every command |
//! | [`config`] | layered, validated configuration (`config/default.toml` embedded; the command line's typed `Overrides` on top) |
//! | [`indexer`] | the live vector index's process (`fusionstream index`): feeds, snapshots, `/search` |
//! | [`telemetry`] | logs, OpenTelemetry traces, Prometheus metrics, `/healthz` `/readyz` |

pub mod app;
pub mod config;
pub mod indexer;
pub mod telemetry;
