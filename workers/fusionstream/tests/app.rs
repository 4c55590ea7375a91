//! The worker as one in-process call (`fusionstream::app::run`): the embedded default's
//! configuration, wired exactly as the binary wires it, without spawning the binary; a second
//! call resumes from the checkpoint the first one left, and a cancelled call drains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use fusionstream::app;
use fusionstream::config::Config;
use tokio_util::sync::CancellationToken;

fn embedded_default(out: &std::path::Path) -> Config {
    let root = common::root();
    let mut c = Config::load(&[], Vec::new()).unwrap();
    c.source.path = root.join("examples/events");
    c.media.root = root.join("examples");
    c.model.bundle = root.join("models/shapes");
    c.sink.dir = out.to_owned();
    c.checkpoint.path = out.join("checkpoint.json");
    c.telemetry.progress = fusionstream::config::Progress::Never;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_runs_in_process_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let c = embedded_default(tmp.path());
    let s = app::run(&c, CancellationToken::new(), None).await.unwrap();
    assert_eq!(s.end, "completed");
    assert_eq!(
        (
            s.stats.read,
            s.stats.finished,
            s.stats.dead_lettered,
            s.stats.degraded
        ),
        (36, 36, 13, 9),
        "the same figures as `fusionstream run` (tests/run_cli.rs)"
    );
    assert!(s.memory_bound_bytes > 0);
    for stream in ["captions", "answers", "embeddings", "tags", "dead_letters"] {
        assert!(
            tmp.path().join(format!("{stream}.jsonl")).is_file(),
            "{stream}"
        );
    }
    let again = app::run(&c, CancellationToken::new(), None).await.unwrap();
    assert_eq!(again.stats.read, 0, "resumed from the checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_drains_and_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let c = embedded_default(tmp.path());
    let cancel = CancellationToken::new();
    cancel.cancel();
    let s = app::run(&c, cancel, None).await.unwrap();
    assert_eq!(s.end, "stopped (drained)");
    assert_eq!(
        s.stats.read, 0,
        "nothing is read once shutdown is asked for"
    );
}
