//! The worker pipeline: source → decode event → fetch media → preprocess → micro-batcher →
//! model thread → assemble → sink → acknowledge.
//!
//! Every hop is a bounded channel or a semaphore, and a permit per in-flight event (at most
//! `pipeline.max_in_flight`) is taken before the source reads the next event and returned
//! only when that event's outputs are acknowledged: memory is bounded and back-pressure
//! reaches the source. Image decoding runs on the blocking pool under a CPU semaphore, the
//! model on its own OS thread; tokio worker threads only move data.
//!
//! Positions are acknowledged by the [`PositionTracker`]: the contiguous done prefix per
//! partition, so completions in any order never skip an event. Shutdown (the cancel token):
//! the source stops, in-flight events drain within `shutdown.drain_timeout`, what is done is
//! committed.
//!
//! The engine knows its source, sink and committer only by their ports
//! (`fusionstream_io::ports`); the adapters are in `fusionstream_io`. It keeps no counters for
//! others: what happens is reported to the caller's [`Reporter`].
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`run`]: the stages wired by bounded channels, the drain |
//! | `settings.rs` | the engine's settings (plain values; the app derives them from its configuration) |
//! | `report.rs` | what the engine reports as it runs ([`Report`], one variant per thing that happens) and where reports go ([`Reporter`]) |
//! | `trace_context.rs` | W3C trace context: event spans parented to their records, batch spans linked, outputs' `traceparent` |
//! | `envelope.rs` | the messages between stages (event context, parts, finished events) |
//! | `emitter.rs` | the engine's [`fusionstream_io::ports::SourceHandle`]: permits, crash guard, tracking |
//! | `intake.rs` | one task per event: decode, validate, fetch, preprocess, degrade or dead-letter |
//! | `fetch.rs` | an image fetch with per-attempt timeout and retries |
//! | `preprocess.rs` | modalities prepared for the model, or why each is unusable |
//! | `scheduler.rs` | the `priority` scheduler's queue: the intake pushes, the model thread takes the batch `core::schedule` picks |
//! | `batching.rs` | the `fifo` micro-batcher task over `core::batch` |
//! | `model_thread.rs` | the model's OS thread, failure isolation around each call |
//! | `window.rs` | the adaptive read-ahead (in-flight permits sized by Little's law) |
//! | `assemble.rs` | each lane's outputs as records, as soon as the lane is done; the event's outcome |
//! | `sink.rs` | writing and acknowledging outputs, completing positions |
//! | `commit.rs` | the commit schedule: interval, backoff while failing, the last commit |
//! | `lists.rs` | known-hash lists: the snapshot, swapped on reload, and an image's matches |
//! | `oversize.rs` | records too large for the broker: cut dead letters, `output_too_large` |
//! | `memory.rs` | the worker's memory bound, computed from the configuration |
//! | `faults.rs` | faults injected for tests (`FUSIONSTREAM_TEST_FAULTS`) |

mod assemble;
mod batching;
mod commit;
mod emitter;
mod envelope;
pub mod faults;
mod fetch;
mod intake;
pub mod lists;
pub mod memory;
mod model_thread;
mod oversize;
mod preprocess;
pub mod report;
mod scheduler;
mod settings;
mod sink;
pub mod trace_context;
mod window;

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use fusionstream_core::lock;
use fusionstream_core::position::PositionTracker;
use fusionstream_core::record::BundleRef;
use fusionstream_io::metrics::AdapterMetrics;
use fusionstream_io::ports::{Committer, OutputSink, Source, SourceContext};
use fusionstream_io::stores::Media;
use fusionstream_model::{Backend, FusionModel};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

pub(crate) use emitter::Taken;
pub use emitter::{Emitter, Slot};
pub use report::{Discard, Outcome, Report, Reporter, Stage};
pub use settings::Settings;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The source was read to its end and everything finished.
    Completed,
    /// Shutdown was requested; in-flight events drained.
    Drained,
    /// Shutdown was requested and the drain timed out; unfinished events were abandoned
    /// (not acknowledged: they run again on the next start).
    DrainTimedOut {
        /// Events abandoned.
        abandoned: usize,
    },
}

/// Everything the pipeline needs.
#[derive(Debug)]
pub struct Parts<S, K, C> {
    /// Settings.
    pub settings: Settings,
    /// The model: its manifest, and preprocessing for the intake.
    pub model: Arc<FusionModel>,
    /// What runs the batches on the model thread: the model itself in production, any
    /// [`Backend`] in tests.
    pub backend: Arc<dyn Backend>,
    /// Media stores.
    pub media: Media,
    /// Source.
    pub source: S,
    /// Sink.
    pub sink: K,
    /// Committer.
    pub committer: C,
    /// What the source and committer adapters count (shared with them through their
    /// context; the engine reads the commit failures the store reports late).
    pub adapter_metrics: Arc<AdapterMetrics>,
    /// Cancelled by the engine when its drain begins: readiness goes away, and sources stop
    /// waiting for in-flight events that can no longer finish.
    pub stopping: CancellationToken,
}

/// Run the pipeline until the source ends or `cancel` fires.
pub async fn run<S: Source, K: OutputSink, C: Committer>(
    parts: Parts<S, K, C>,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> anyhow::Result<RunEnd> {
    let Parts {
        settings,
        model,
        backend,
        media,
        source,
        sink,
        committer,
        adapter_metrics,
        stopping,
    } = parts;
    let load = Arc::new(window::Load::default());
    reporter.report(Report::LanesConfigured {
        max_items: settings.lanes.map(|l| l.max_items),
    });
    let cap = settings.channel_capacity;
    let tracker = Arc::new(Mutex::new(PositionTracker::new()));
    for (p, start) in source.partitions() {
        lock(&tracker).assign(p, start);
    }
    let guard = committer.crash_guard();
    let committer = Arc::new(Mutex::new(committer));
    let manifest = model.manifest();
    let bundle = BundleRef {
        id: manifest.id.clone(),
        version: manifest.version.clone(),
    };

    let (taken_tx, taken_rx) = mpsc::channel::<Taken>(cap);
    let (done_tx, done_rx) = mpsc::channel(settings.model_queue + 1);
    // The model's input: the priority scheduler's queue, or the FIFO batcher and its channel.
    let (to_model, jobs, batch_task, queue) = match settings.scheduler {
        Some(policy) => {
            let q = scheduler::ModelQueue::new(policy, reporter.clone());
            (
                scheduler::ToModel::Scheduled(q.clone()),
                model_thread::Jobs::Scheduled(q.clone()),
                None,
                Some(q),
            )
        }
        None => {
            let (part_tx, part_rx) = mpsc::channel(cap);
            let (job_tx, job_rx) = mpsc::channel(settings.model_queue);
            let task = tokio::spawn(batching::run(
                part_rx,
                job_tx,
                settings.lanes,
                reporter.clone(),
            ));
            (
                scheduler::ToModel::Fifo(part_tx),
                model_thread::Jobs::Fifo(job_rx),
                Some(task),
                None,
            )
        }
    };
    let (fin_tx, fin_rx) = mpsc::channel(cap);

    let sink_task = tokio::spawn(sink::run(
        fin_rx,
        sink,
        sink::Acks {
            tracker: tracker.clone(),
            committer: committer.clone(),
            commits: commit::Commits::new(
                settings.commit_interval,
                adapter_metrics.clone(),
                reporter.clone(),
            ),
            timing: commit::CommitTiming {
                interval: settings.commit_interval,
                final_timeout: settings.commit_timeout,
                mark_clean: guard.is_some(),
            },
            reporter: reporter.clone(),
            load: load.clone(),
        },
    ));
    let assemble_task = tokio::spawn(assemble::run(
        done_rx,
        fin_tx.clone(),
        reporter.clone(),
        load.clone(),
        cancel.clone(),
    ));
    let model_thread = model_thread::spawn(
        backend,
        jobs,
        done_tx,
        reporter.clone(),
        settings.test_faults,
    )?;
    let shared = Arc::new(intake::Shared {
        source_kind: source.kind(),
        fetch_slots: Arc::new(Semaphore::new(settings.fetch_concurrency)),
        cpu_slots: Arc::new(Semaphore::new(settings.preprocess_threads)),
        settings: settings.clone(),
        model,
        media,
        bundle,
        to_model,
        to_sink: fin_tx,
        reporter: reporter.clone(),
    });
    let intake_task = tokio::spawn(intake::run(taken_rx, shared));
    // The read-ahead starts at its floor and follows the model's capacity.
    let permits = Arc::new(Semaphore::new(settings.min_in_flight));
    let window_task = tokio::spawn(window::run(
        permits.clone(),
        settings.min_in_flight,
        settings.max_in_flight,
        settings.latency_target,
        load,
        reporter.clone(),
    ));
    let emitter = Emitter {
        cx: SourceContext {
            positions: tracker.clone(),
            metrics: adapter_metrics,
            guard: guard.clone(),
            shutdown: cancel.clone(),
            stopping: stopping.clone(),
            max_event_bytes: settings.limits.max_event_bytes,
        },
        permits: permits.clone(),
        tx: taken_tx,
        reporter: reporter.clone(),
    };
    let source_task = tokio::spawn(source.run(emitter));

    // Wait for the sink to see every event through, or for shutdown and the drain.
    let mut sink_task = sink_task;
    let sink_result = tokio::select! {
        r = &mut sink_task => Some(r),
        _ = cancel.cancelled() => None,
    };
    // Readiness goes away while draining; and from here on nothing new starts (a consumer
    // closing later does not wait for events that can no longer finish).
    stopping.cancel();
    let (sink_result, timed_out) = match sink_result {
        Some(r) => (Some(r), false),
        None => match tokio::time::timeout(settings.drain_timeout, &mut sink_task).await {
            Ok(r) => (Some(r), false),
            Err(_) => {
                sink_task.abort();
                (None, true)
            }
        },
    };
    let source_result = source_task.await;
    window_task.abort();
    intake_task.abort();
    let batch_result = match batch_task {
        None => Ok(Ok(())),
        Some(t) if timed_out => {
            t.abort();
            Ok(Ok(()))
        }
        Some(t) => t.await,
    };
    if let (Some(q), true) = (&queue, timed_out) {
        q.abandon();
    }
    let assemble_result = if timed_out {
        assemble_task.abort();
        Ok(Ok(()))
    } else {
        assemble_task.await
    };
    if !timed_out {
        // The model thread ends once its queue is closed and drained.
        let _ = tokio::task::spawn_blocking(move || model_thread.join()).await;
    }

    // Errors in order of causality: the model, then the sink, then the source.
    let checked = (|| -> anyhow::Result<bool> {
        assemble_result.context("assembler task")??;
        batch_result.context("batcher task")??;
        if let Some(r) = sink_result {
            r.context("sink task")??;
        }
        source_result.context("source task")?
    })();
    let end = match checked {
        Err(e) => Err(e),
        Ok(_) if timed_out => {
            // Commit the done prefix; the rest replays on the next start.
            let clean = guard.is_some();
            commit::final_commit(
                &tracker,
                &committer,
                &*reporter,
                settings.commit_timeout,
                clean,
            )
            .await;
            let abandoned = lock(&tracker).in_flight();
            Ok(RunEnd::DrainTimedOut { abandoned })
        }
        Ok(finished_source) => Ok(if finished_source && !cancel.is_cancelled() {
            RunEnd::Completed
        } else {
            RunEnd::Drained
        }),
    };
    // Nothing more is committed: the committer lets go of what it shares with the source (a
    // consumer leaves its group now, whatever the outcome, instead of at its session timeout).
    let closing = committer.clone();
    let _ = tokio::task::spawn_blocking(move || lock(&closing).close()).await;
    end
}
