//! A worker inside the test process: `fusionstream::app::run` on a task of the test's
//! runtime, configured from the same `FUSIONSTREAM__SECTION__KEY` pairs (and files) a spawned
//! worker would read, with relative paths taken from the repository root as the binary's
//! tests run it. Stopping it is cancelling its token (what SIGTERM does in the binary); its
//! end is the run's [`Summary`], not a log to parse.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use fusionstream::app::{self, Summary};
use fusionstream::config::{Config, Overrides, Progress};
use tokio_util::sync::CancellationToken;

use super::root;

/// The configuration of `files` and `pairs` (environment entries) over the defaults, with
/// the command line's `overrides`; paths relative to the repository root.
pub fn config(files: &[PathBuf], pairs: &[(&str, &str)], overrides: &Overrides) -> Config {
    let env = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    let mut c = Config::load_with(files, env, overrides).unwrap();
    let root = root();
    for p in [
        &mut c.model.bundle,
        &mut c.media.root,
        &mut c.source.path,
        &mut c.sink.dir,
        &mut c.checkpoint.path,
    ] {
        *p = root.join(&*p);
    }
    let lists = c.matching.hash_lists.values_mut();
    for l in lists.chain(c.matching.embedding_lists.values_mut()) {
        if !l.path.to_string_lossy().starts_with("s3://") {
            l.path = root.join(&l.path);
        }
    }
    c.telemetry.progress = Progress::Never;
    c
}

/// A running in-process worker.
pub struct Worker {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<Summary>>,
}

/// Start `c` on the current runtime.
pub fn start(c: Config) -> Worker {
    start_with(c, None)
}

/// Start `c`, stopping by itself once `max_events` have finished (`--max-events`).
pub fn start_with(c: Config, max_events: Option<u64>) -> Worker {
    init_logs();
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let task = tokio::spawn(async move { app::run(&c, token, max_events).await });
    Worker { cancel, task }
}

/// The workers' logs go to the test's captured output (shown when it fails), at the level
/// of `FUSIONSTREAM_TEST_LOG` (default `info`).
fn init_logs() {
    let filter = std::env::var("FUSIONSTREAM_TEST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

impl Worker {
    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Ask it to stop (drain, commit, leave), wait for its end and return its summary.
    pub async fn stop(self) -> Summary {
        self.cancel.cancel();
        self.finish().await
    }

    /// Wait for it to end by itself (its source ended) and return its summary.
    pub async fn finish(self) -> Summary {
        self.task
            .await
            .expect("the worker task panicked")
            .expect("the worker failed")
    }
}
