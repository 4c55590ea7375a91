//! The worker's integration tests, one test binary: each file of this folder is a module
//! here (`faults.rs`, which stops and starts the dev services, stays a binary of its own so
//! that its outages never overlap another test). As separate binaries each took ~2 minutes
//! to compile, most of it the same instantiations of the dependencies over again, and as
//! long to link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

#[path = "app.rs"]
mod app;
#[path = "backfill.rs"]
mod backfill;
#[path = "crash_guard.rs"]
mod crash_guard;
#[path = "exactly_once.rs"]
mod exactly_once;
#[path = "index.rs"]
mod index;
#[path = "infer_cli.rs"]
mod infer_cli;
#[path = "isolation.rs"]
mod isolation;
#[path = "kafka.rs"]
mod kafka;
#[path = "kafka_records.rs"]
mod kafka_records;
#[path = "lake.rs"]
mod lake;
#[path = "matching.rs"]
mod matching;
#[path = "memory.rs"]
mod memory;
#[path = "moderation.rs"]
mod moderation;
#[path = "photos.rs"]
mod photos;
#[path = "pipeline.rs"]
mod pipeline;
#[path = "run_cli.rs"]
mod run_cli;
#[path = "scheduling.rs"]
mod scheduling;
#[path = "schemas.rs"]
mod schemas;
