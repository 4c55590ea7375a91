//! [`run`]: the stages started over bounded channels, the wait for the source's end or for
//! shutdown, the drain, and the last commit.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use fusionstream_core::lock;
use fusionstream_core::position::{PartitionId, PositionTracker};
use fusionstream_core::record::BundleRef;
use fusionstream_io::metrics::AdapterMetrics;
use fusionstream_io::ports::{
    Committer, Handover, OutputSink, Source, SourceContext, Transactions,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::emitter::{Emitter, Taken};
use crate::scheduler::{ModelQueue, ToModel};
use crate::window::Load;
use crate::{
    assemble, batching, commit, intake, model_thread, sink, transaction, window, Parts, Report,
    Reporter, RunEnd, Settings,
};

type Task<T> = JoinHandle<anyhow::Result<T>>;
/// How a task ended: its result, or how it failed to finish (a panic, an abort).
type Joined<T> = Result<anyhow::Result<T>, tokio::task::JoinError>;

/// Positions and their committer, shared by the source (assignments), the sink (completed
/// positions, periodic commits) and the drain (the last commit).
struct Positions<C> {
    tracker: Arc<Mutex<PositionTracker>>,
    committer: Arc<Mutex<C>>,
    /// The committer keeps crash-guard marks: the last commit marks partitions clean.
    mark_clean: bool,
    /// Exactly-once: the sink's transactions (positions commit with the outputs).
    txns: Option<Arc<dyn Transactions>>,
}

/// The model's input: the priority scheduler's queue, or the FIFO batcher and its channel.
struct ModelInput {
    to_model: ToModel,
    jobs: model_thread::Jobs,
    batcher: Option<Task<()>>,
    queue: Option<Arc<ModelQueue>>,
}

/// The running stages but the sink (the run waits on it).
struct Stages {
    source: Task<bool>,
    window: JoinHandle<()>,
    intake: JoinHandle<()>,
    batcher: Option<Task<()>>,
    queue: Option<Arc<ModelQueue>>,
    assemble: Task<()>,
    model_thread: std::thread::JoinHandle<()>,
}

/// Run the engine until the source ends or `cancel` fires; what happens goes to `reporter`.
pub async fn run<S: Source, K: OutputSink, C: Committer>(
    parts: Parts<S, K, C>,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> anyhow::Result<RunEnd> {
    let settings = parts.settings.clone();
    let stopping = parts.stopping.clone();
    let (stages, sink, positions) = start(parts, &reporter, &cancel)?;
    // Wait for the sink to see every event through, or for shutdown and the drain.
    let (sink, timed_out) = wait_or_drain(sink, &cancel, &stopping, &settings).await;
    if matches!(&sink, Some(Err(_) | Ok(Err(_)))) {
        // The sink failed for good (fenced, a fatal store error): nothing more can be
        // acknowledged, so the source stops reading and the run ends with the error.
        cancel.cancel();
    }
    let checked = stop(stages, sink, timed_out).await;
    let end = match checked {
        Err(e) => Err(e),
        Ok(_) if timed_out => {
            // Commit the done prefix; the rest replays on the next start. Exactly-once: the
            // done prefix's outputs may be in the aborted sink's open transaction, so nothing
            // is committed outside it: the transaction is aborted and all of it replays.
            let p = &positions;
            let timeout = settings.commit_timeout;
            match &p.txns {
                None => {
                    commit::final_commit(
                        &p.tracker,
                        &p.committer,
                        &*reporter,
                        timeout,
                        p.mark_clean,
                    )
                    .await
                }
                Some(t) => {
                    let t = t.clone();
                    let _ = tokio::task::spawn_blocking(move || t.abort(timeout)).await;
                }
            }
            let abandoned = lock(&positions.tracker).in_flight();
            Ok(RunEnd::DrainTimedOut { abandoned })
        }
        Ok(finished_source) if finished_source && !cancel.is_cancelled() => Ok(RunEnd::Completed),
        Ok(_) => Ok(RunEnd::Drained),
    };
    // Nothing more is committed: the committer lets go of what it shares with the source (a
    // consumer leaves its group now, whatever the outcome, instead of at its session timeout).
    let closing = positions.committer.clone();
    let _ = tokio::task::spawn_blocking(move || lock(&closing).close()).await;
    end
}

/// Start every stage, from the sink back to the source; the sink's task apart. Long: the
/// wiring of every stage in one place, each channel's two ends side by side.
fn start<S: Source, K: OutputSink, C: Committer>(
    parts: Parts<S, K, C>,
    reporter: &Arc<dyn Reporter>,
    cancel: &CancellationToken,
) -> anyhow::Result<(Stages, Task<()>, Positions<C>)> {
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
    reporter.report(Report::LanesConfigured {
        max_items: settings.lanes.map(|l| l.max_items),
    });
    let tracker = Arc::new(Mutex::new(PositionTracker::new()));
    for (p, start) in source.partitions() {
        lock(&tracker).assign(p, start);
    }
    let guard = committer.crash_guard();
    let positions = Positions {
        tracker,
        mark_clean: guard.is_some(),
        committer: Arc::new(Mutex::new(committer)),
        txns: sink.transactions(),
    };
    let cap = settings.channel_capacity;
    let load = Arc::new(Load::default());
    let (taken_tx, taken_rx) = mpsc::channel::<Taken>(cap);
    let (done_tx, done_rx) = mpsc::channel(settings.model_queue + 1);
    let (fin_tx, fin_rx) = mpsc::channel(cap);
    let input = model_input(&settings, reporter);
    let (sink, handover) = match positions.txns.clone() {
        None => {
            let acks = acks(&settings, &positions, &adapter_metrics, reporter, &load);
            (tokio::spawn(sink::run(fin_rx, sink, acks)), None)
        }
        Some(txns) => {
            let (tx, handovers) = mpsc::unbounded_channel();
            let after_commit = txns.informs_committer().then(|| {
                let committer = positions.committer.clone();
                Box::new(move |p: &[(PartitionId, u64)]| {
                    if let Err(e) = lock(&committer).commit(p) {
                        tracing::debug!(error = format!("{e:#}"), "informational commit failed");
                    }
                }) as transaction::AfterCommit
            });
            let parts = transaction::TxnParts {
                after_commit,
                tracker: positions.tracker.clone(),
                txns,
                timing: transaction::TxnTiming {
                    interval: settings.transactions.interval,
                    max_events: settings.transactions.max_events,
                    call_timeout: settings.transactions.call_timeout,
                    final_timeout: settings.commit_timeout,
                },
                reporter: reporter.clone(),
                load: load.clone(),
                handovers,
            };
            let handover: Arc<dyn Handover> = Arc::new(transaction::EngineHandover { tx });
            (
                tokio::spawn(transaction::run(fin_rx, sink, parts)),
                Some(handover),
            )
        }
    };
    let assemble = tokio::spawn(assemble::run(
        done_rx,
        fin_tx.clone(),
        reporter.clone(),
        load.clone(),
        cancel.clone(),
    ));
    let test_faults = settings.test_faults;
    let model_thread =
        model_thread::spawn(backend, input.jobs, done_tx, reporter.clone(), test_faults)?;
    let manifest = model.manifest();
    let bundle = BundleRef {
        id: manifest.id.clone(),
        version: manifest.version.clone(),
    };
    let shared = Arc::new(intake::Shared {
        source_kind: source.kind(),
        fetch_slots: Arc::new(Semaphore::new(settings.fetch_concurrency)),
        cpu_slots: Arc::new(Semaphore::new(settings.preprocess_threads)),
        settings: settings.clone(),
        model,
        media,
        bundle,
        to_model: input.to_model,
        to_sink: fin_tx,
        reporter: reporter.clone(),
    });
    let intake = tokio::spawn(intake::run(taken_rx, shared));
    // The read-ahead starts at its floor and follows the model's capacity.
    let permits = Arc::new(Semaphore::new(settings.min_in_flight));
    let window = tokio::spawn(window::run(
        permits.clone(),
        settings.min_in_flight,
        settings.max_in_flight,
        settings.latency_target,
        load,
        reporter.clone(),
    ));
    let emitter = Emitter {
        cx: SourceContext {
            positions: positions.tracker.clone(),
            metrics: adapter_metrics,
            guard,
            shutdown: cancel.clone(),
            stopping,
            max_event_bytes: settings.limits.max_event_bytes,
            handover,
        },
        permits,
        tx: taken_tx,
        reporter: reporter.clone(),
    };
    let source = tokio::spawn(source.run(emitter));
    let stages = Stages {
        source,
        window,
        intake,
        batcher: input.batcher,
        queue: input.queue,
        assemble,
        model_thread,
    };
    Ok((stages, sink, positions))
}

/// What the sink needs to acknowledge and commit.
fn acks<C: Committer>(
    settings: &Settings,
    positions: &Positions<C>,
    adapter_metrics: &Arc<AdapterMetrics>,
    reporter: &Arc<dyn Reporter>,
    load: &Arc<Load>,
) -> sink::Acks<C> {
    sink::Acks {
        tracker: positions.tracker.clone(),
        committer: positions.committer.clone(),
        commits: commit::Commits::new(
            settings.commit_interval,
            adapter_metrics.clone(),
            reporter.clone(),
        ),
        timing: commit::CommitTiming {
            interval: settings.commit_interval,
            final_timeout: settings.commit_timeout,
            mark_clean: positions.mark_clean,
        },
        reporter: reporter.clone(),
        load: load.clone(),
    }
}

/// The priority scheduler's queue, or the FIFO batcher task and its channels.
fn model_input(settings: &Settings, reporter: &Arc<dyn Reporter>) -> ModelInput {
    match settings.scheduler {
        Some(policy) => {
            let q = ModelQueue::new(policy, reporter.clone());
            ModelInput {
                to_model: ToModel::Scheduled(q.clone()),
                jobs: model_thread::Jobs::Scheduled(q.clone()),
                batcher: None,
                queue: Some(q),
            }
        }
        None => {
            let cap = settings.channel_capacity;
            let (part_tx, part_rx) = mpsc::channel(cap);
            let (job_tx, job_rx) = mpsc::channel(settings.model_queue);
            let r = reporter.clone();
            let task = tokio::spawn(batching::run(part_rx, job_tx, settings.lanes, r));
            ModelInput {
                to_model: ToModel::Fifo(part_tx),
                jobs: model_thread::Jobs::Fifo(job_rx),
                batcher: Some(task),
                queue: None,
            }
        }
    }
}

/// The sink's result once every event is through; on shutdown, once the in-flight events
/// drained (`None` and `true` when the drain timed out and the sink was aborted). Readiness
/// goes away (`stopping`) as soon as either happens.
async fn wait_or_drain(
    mut sink: Task<()>,
    cancel: &CancellationToken,
    stopping: &CancellationToken,
    settings: &Settings,
) -> (Option<Joined<()>>, bool) {
    let done = tokio::select! {
        r = &mut sink => Some(r),
        _ = cancel.cancelled() => None,
    };
    // From here on nothing new starts (a consumer closing later does not wait for events
    // that can no longer finish).
    stopping.cancel();
    if let Some(r) = done {
        return (Some(r), false);
    }
    match tokio::time::timeout(settings.drain_timeout, &mut sink).await {
        Ok(r) => (Some(r), false),
        Err(_) => {
            sink.abort();
            (None, true)
        }
    }
}

/// Stop the stages (aborting what cannot finish after a timed-out drain) and return the
/// first error in order of causality (the model, then the sink, then the source), or whether
/// the source read to its end.
async fn stop(stages: Stages, sink: Option<Joined<()>>, timed_out: bool) -> anyhow::Result<bool> {
    let source = stages.source.await;
    stages.window.abort();
    stages.intake.abort();
    let batcher = match stages.batcher {
        None => Ok(Ok(())),
        Some(t) if timed_out => {
            t.abort();
            Ok(Ok(()))
        }
        Some(t) => t.await,
    };
    if let (Some(q), true) = (&stages.queue, timed_out) {
        q.abandon();
    }
    let assemble = if timed_out {
        stages.assemble.abort();
        Ok(Ok(()))
    } else {
        stages.assemble.await
    };
    if !timed_out {
        // The model thread ends once its queue is closed and drained.
        let thread = stages.model_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    assemble.context("assembler task")??;
    batcher.context("batcher task")??;
    if let Some(r) = sink {
        r.context("sink task")??;
    }
    source.context("source task")?
}
