//! The model thread: batches in, one result per item out, forward passes off the async
//! runtime — and the failure isolation around each forward pass.
//!
//! Rules (also in `docs/architecture.md`, "Failure isolation"):
//! - every call runs under `catch_unwind`: a panic is a failure of that call, never of the
//!   thread;
//! - a failed batch is bisected ([`fusionstream_core::isolate`]) until the items that fail
//!   alone are found; the others get their outputs, each failed item becomes its event's
//!   dead letter (`model_error`, or `internal_error` for a panic) with the error text;
//! - out-of-memory is the same search: smaller batches first, an item too big alone fails
//!   alone;
//! - an output holding a NaN or an infinity is that item's `model_error` (it could not be
//!   written as JSON and would mean nothing);
//! - an error only the runtime can cause (a load-time error, a lost device) is fatal at once,
//!   as is a batch in which every item failed alone when a *canary* (an item the model ran
//!   before) now fails too: the runtime, not the batch, is broken. Without a canary yet, 32
//!   items failing in a row with no success between them are fatal.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use fusionstream_core::isolate::{isolate, Failure, Isolated};
use fusionstream_core::{Lane, ReasonCode};
use fusionstream_model::{Backend, InferOutput, ModelError, Prepared};
use tokio::sync::mpsc;

use super::envelope::{EventCtx, ItemFailure, ItemResult, ModelDone, Part};
use super::faults::{fault_for, Fault};
use super::report::{Report, Reporter};
use super::scheduler::ModelQueue;

/// Items failing alone in a row, with no success between them and no canary to tell a
/// broken runtime from bad items, before the worker stops.
const MAX_FAILURE_STREAK: usize = 32;

/// A batch for the model thread.
pub(crate) struct ModelJob {
    pub lane: Lane,
    pub parts: Vec<Part>,
}

/// Where the model thread takes its batches.
pub(crate) enum Jobs {
    /// `fifo`: batches closed by the batcher task, in the order they closed.
    Fifo(mpsc::Receiver<ModelJob>),
    /// `priority`: the scheduler picks each batch when the thread is free.
    Scheduled(Arc<ModelQueue>),
}

impl Jobs {
    /// The next batch; `None` when no more come.
    fn next(&mut self, reporter: &dyn Reporter) -> Option<ModelJob> {
        match self {
            Jobs::Fifo(rx) => {
                let job = rx.blocking_recv()?;
                reporter.report(Report::BatchTaken);
                Some(job)
            }
            Jobs::Scheduled(q) => q.take().map(|b| ModelJob {
                lane: b.lane,
                parts: b.items,
            }),
        }
    }

    /// Report a batch's time (the scheduler's time slices use it).
    fn observe(&self, lane: Lane, items: usize, took: std::time::Duration) {
        if let Jobs::Scheduled(q) = self {
            q.observe(lane, items, took);
        }
    }
}

/// A failed call.
#[derive(Debug)]
enum CallError {
    Model(ModelError),
    Panic(String),
}

impl CallError {
    fn failure(&self) -> Failure {
        match self {
            CallError::Model(e) => e.batch_failure(),
            CallError::Panic(_) => Failure::Item,
        }
    }
}

/// What the thread remembers between batches to tell bad items from a broken runtime.
#[derive(Default)]
struct Guard {
    /// An item the model ran successfully, alone or in a batch.
    canary: Option<Prepared>,
    /// Items failed alone since the last success.
    streak: usize,
}

/// Start the model thread.
pub(crate) fn spawn(
    model: Arc<dyn Backend>,
    mut jobs: Jobs,
    tx: mpsc::Sender<ModelDone>,
    reporter: Arc<dyn Reporter>,
    test_faults: bool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fusionstream-model".into())
        .spawn(move || {
            let mut guard = Guard::default();
            while let Some(job) = jobs.next(&*reporter) {
                // One span per batch, a root linked to the span of every event it serves
                // (the OpenTelemetry pattern for batch work).
                let span = tracing::info_span!(
                    parent: None,
                    "model_batch",
                    otel.name = "fusionstream.model_batch",
                    lane = job.lane.name(),
                    items = job.parts.len(),
                );
                for p in &job.parts {
                    super::trace_context::link(&span, &p.ctx.span);
                }
                // Empty unless the test hook is on: nothing extra per batch in production.
                let faults: Vec<Option<Fault>> = if test_faults {
                    job.parts
                        .iter()
                        .map(|p| {
                            fault_for(true, p.ctx.event_id()).filter(|f| {
                                !matches!(f, Fault::SlowGenerate(_)) || job.lane == Lane::Generate
                            })
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let (prepared, parts): (Vec<_>, Vec<_>) = job
                    .parts
                    .into_iter()
                    .map(|p| (p.prepared, (p.ctx, p.enqueued)))
                    .unzip();
                let started = Instant::now();
                let result = span.in_scope(|| {
                    run_isolated(
                        &*model, job.lane, &prepared, &faults, &parts, &mut guard, &*reporter,
                    )
                });
                drop(span);
                let took = started.elapsed();
                jobs.observe(job.lane, prepared.len(), took);
                drop(prepared);
                let done = ModelDone {
                    lane: job.lane,
                    parts,
                    started,
                    took,
                    result,
                };
                if tx.blocking_send(done).is_err() {
                    return;
                }
            }
        })
}

/// One forward pass under `catch_unwind`, with the injected test faults of its items.
fn call(
    model: &dyn Backend,
    items: &[Prepared],
    faults: &[Option<Fault>],
) -> Result<Vec<InferOutput>, CallError> {
    let injected = |msg: &str| {
        Err(CallError::Model(ModelError::OnnxRun {
            graph: "test fault".into(),
            reason: msg.into(),
        }))
    };
    let run = || {
        for f in faults.iter().flatten() {
            match f {
                Fault::ModelError => return injected("injected model fault"),
                Fault::ModelPanic => panic!("injected model panic"),
                Fault::OutOfMemory if items.len() > 1 => {
                    return injected("CUDA_ERROR_OUT_OF_MEMORY: out of memory (injected)")
                }
                Fault::DeviceLost => return injected("CUDA_ERROR_ILLEGAL_ADDRESS (injected)"),
                Fault::SlowGenerate(secs) => {
                    std::thread::sleep(std::time::Duration::from_secs(*secs))
                }
                Fault::Abort => {
                    // What a segfault in a native kernel or the OOM killer does: no unwinding.
                    tracing::error!("injected abort: the process dies now");
                    std::process::abort()
                }
                _ => {}
            }
        }
        let mut outs = model.infer_batch(items).map_err(CallError::Model)?;
        for (o, f) in outs.iter_mut().zip(faults) {
            if *f == Some(Fault::NanOutput) {
                o.fused_embedding = Some(vec![f32::NAN; 4]);
            }
        }
        Ok(outs)
    };
    match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(payload) => Err(CallError::Panic(panic_message(payload.as_ref()))),
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}

/// Run a batch, isolating failing items; `Err` when the runtime itself is broken.
fn run_isolated(
    model: &dyn Backend,
    lane: Lane,
    prepared: &[Prepared],
    faults: &[Option<Fault>],
    parts: &[(Arc<EventCtx>, Instant)],
    guard: &mut Guard,
    reporter: &dyn Reporter,
) -> anyhow::Result<Vec<ItemResult>> {
    let n = prepared.len();
    let isolated = isolate(
        n,
        |idx: &[usize]| {
            if idx.len() == n {
                call(model, prepared, faults)
            } else {
                let sub: Vec<Prepared> = idx.iter().map(|i| prepared[*i].clone()).collect();
                let f: Vec<Option<Fault>> = idx
                    .iter()
                    .map(|i| faults.get(*i).copied().flatten())
                    .collect();
                call(model, &sub, &f)
            }
        },
        CallError::failure,
    )
    .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    if isolated.splits > 0 {
        reporter.report(Report::BatchSplit {
            splits: isolated.splits,
        });
    }
    if isolated.oom_splits > 0 {
        tracing::warn!(
            lane = lane.name(),
            items = n,
            splits = isolated.oom_splits,
            "out of memory on a batch: ran it in smaller batches"
        );
    }
    guard.after(model, prepared, &isolated)?;
    let results = isolated.results.into_iter().zip(parts);
    Ok(results
        .map(|(r, (ctx, _))| item_result(lane, ctx.event_id(), r, reporter))
        .collect())
}

impl Guard {
    /// After a batch: remember an item that ran (the canary), and tell a broken runtime from
    /// bad items when nothing ran: the canary failing too, or a long streak of failures with
    /// no success ever, is fatal.
    fn after(
        &mut self,
        model: &dyn Backend,
        prepared: &[Prepared],
        isolated: &Isolated<InferOutput, CallError>,
    ) -> anyhow::Result<()> {
        let failures = isolated.failures();
        if failures == 0 {
            self.streak = 0;
            if self.canary.is_none() {
                self.canary = prepared.first().cloned();
            }
            return Ok(());
        }
        if failures < prepared.len() {
            self.streak = 0;
            if let Some(i) = isolated.results.iter().position(Result::is_ok) {
                self.canary = Some(prepared[i].clone());
            }
            return Ok(());
        }
        // Nothing ran: bad items, or a runtime that no longer runs anything?
        if let Some(c) = &self.canary {
            if let Err(e) = call(model, std::slice::from_ref(c), &[None]) {
                anyhow::bail!(
                    "the model fails on an item it ran before, so the runtime is broken: {}",
                    describe(&e)
                );
            }
            return Ok(());
        }
        self.streak += failures;
        if self.streak >= MAX_FAILURE_STREAK {
            let last = isolated.results.iter().rev();
            anyhow::bail!(
                "{} items failed in a row and none has ever succeeded: the runtime is broken; \
                 last error: {}",
                self.streak,
                last.into_iter()
                    .find_map(|r| r.as_ref().err().map(describe))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }
}

/// One item's result: its outputs, or its event's failure (the model failed on it alone, or
/// its outputs are not finite), reported and logged.
fn item_result(
    lane: Lane,
    id: &str,
    r: Result<InferOutput, CallError>,
    reporter: &dyn Reporter,
) -> ItemResult {
    if let Ok(out) = &r {
        if let Some(field) = non_finite(out) {
            // A NaN or infinity cannot be written as JSON and means nothing: the item's
            // outputs are dropped and its event dead-lettered.
            let detail = format!(
                "{} lane: non-finite model output (NaN or infinity) in {field}",
                lane.name()
            );
            reporter.report(Report::ItemFailed { panicked: false });
            tracing::error!(event_id = %id, error = %detail, "model output not finite");
            return Err(ItemFailure {
                reason: ReasonCode::ModelError,
                detail,
            });
        }
    }
    r.map_err(|e| {
        let (reason, panicked) = match &e {
            CallError::Panic(_) => (ReasonCode::InternalError, true),
            CallError::Model(_) => (ReasonCode::ModelError, false),
        };
        let detail = format!("{} lane: {}", lane.name(), describe(&e));
        reporter.report(Report::ItemFailed { panicked });
        tracing::error!(event_id = %id, %reason, error = %detail, "model failed on an item alone");
        ItemFailure { reason, detail }
    })
}

/// The first output field holding a NaN or an infinity.
fn non_finite(o: &InferOutput) -> Option<&'static str> {
    let bad = |v: &Option<Vec<f32>>| v.as_ref().is_some_and(|v| v.iter().any(|x| !x.is_finite()));
    if bad(&o.image_embedding) {
        Some("image_embedding")
    } else if bad(&o.text_embedding) {
        Some("text_embedding")
    } else if bad(&o.fused_embedding) {
        Some("fused_embedding")
    } else if o.match_score.is_some_and(|m| !m.is_finite()) {
        Some("match_score")
    } else if o
        .tags
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| !t.score.is_finite()))
    {
        Some("tags")
    } else {
        None
    }
}

fn describe(e: &CallError) -> String {
    match e {
        CallError::Model(e) => e.to_string(),
        CallError::Panic(m) => format!("panicked: {m}"),
    }
}
