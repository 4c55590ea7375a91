//! The model queue of the `priority` scheduler: the intake pushes lane parts into the pure
//! [`Scheduler`] of `fusionstream_core::schedule`, and the model thread, whenever it is free,
//! takes the batch the scheduler picks (or sleeps until one is due or a part arrives).
//!
//! Unlike the `fifo` path (`batching.rs`: batches close on a timer and queue for the model in
//! the order they closed), nothing is decided before the model can run it: the batch is
//! chosen at the last moment, from everything then waiting. The queue is bounded by the
//! in-flight permits (an event has at most one part per lane).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fusionstream_core::batch::Cost;
use fusionstream_core::lock;
use fusionstream_core::schedule::{Next, SchedulePolicy, Scheduled, Scheduler};
use fusionstream_core::Lane;

use super::envelope::Part;
use super::report::{Report, Reporter};

struct State {
    scheduler: Scheduler<Part>,
    /// No more parts will come: what is queued drains, then the thread ends.
    closed: bool,
    /// The worker gave up (drain timeout): nothing more runs.
    abandoned: bool,
}

/// The queue between the intake and the model thread.
pub(crate) struct ModelQueue {
    state: Mutex<State>,
    wake: Condvar,
    reporter: Arc<dyn Reporter>,
}

impl ModelQueue {
    pub(crate) fn new(policy: SchedulePolicy, reporter: Arc<dyn Reporter>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                scheduler: Scheduler::new(policy),
                closed: false,
                abandoned: false,
            }),
            wake: Condvar::new(),
            reporter,
        })
    }

    /// Queue a lane part.
    fn push(&self, lane: Lane, part: Part, cost: Cost, deadline: Option<Instant>) {
        let priority = part.ctx.priority;
        let mut s = lock(&self.state);
        s.scheduler
            .push(lane, part, priority, cost, deadline, Instant::now());
        let waiting = s.scheduler.pending();
        drop(s);
        self.reporter.report(Report::PartsWaiting(waiting));
        self.wake.notify_one();
    }

    /// No more parts: drain what is queued.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    /// Drop what is queued and stop the thread (the drain timed out: those events replay).
    pub(crate) fn abandon(&self) {
        lock(&self.state).abandoned = true;
        self.wake.notify_all();
    }

    /// The next batch to run, waiting as the scheduler says; `None` once closed and empty, or
    /// abandoned.
    pub(crate) fn take(&self) -> Option<Scheduled<Part>> {
        let mut s = lock(&self.state);
        loop {
            if s.abandoned {
                return None;
            }
            let now = Instant::now();
            let draining = s.closed;
            match s.scheduler.next(now, draining) {
                Next::Run(b) => {
                    self.reporter
                        .report(Report::PartsWaiting(s.scheduler.pending()));
                    self.reporter.report(Report::BatchScheduled {
                        lane: b.lane,
                        ready: b.ready,
                        sliced: b.sliced,
                    });
                    return Some(b);
                }
                Next::WaitUntil(t) => {
                    let wait = t
                        .saturating_duration_since(now)
                        .max(Duration::from_micros(50));
                    s = self
                        .wake
                        .wait_timeout(s, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                Next::Idle if draining => return None,
                Next::Idle => {
                    s = self
                        .wake
                        .wait(s)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
    }

    /// Report a batch's time to the scheduler (its time slices use it).
    pub(crate) fn observe(&self, lane: Lane, items: usize, took: Duration) {
        lock(&self.state).scheduler.observe(lane, items, took);
    }
}

/// Where the intake sends lane parts: the `fifo` batcher's channel, or the scheduler's queue.
/// Dropping it (with the intake's shared state, once every event task is done) tells the
/// model side that no more parts come.
pub(crate) enum ToModel {
    /// `scheduler.mode = "fifo"`.
    Fifo(tokio::sync::mpsc::Sender<(Lane, Part, Cost)>),
    /// `scheduler.mode = "priority"`.
    Scheduled(Arc<ModelQueue>),
}

impl ToModel {
    /// Hand a part over; `false` when the model side is gone (the worker is stopping).
    pub(crate) async fn send(
        &self,
        lane: Lane,
        part: Part,
        cost: Cost,
        deadline: Option<Instant>,
    ) -> bool {
        match self {
            ToModel::Fifo(tx) => tx.send((lane, part, cost)).await.is_ok(),
            ToModel::Scheduled(q) => {
                q.push(lane, part, cost, deadline);
                true
            }
        }
    }
}

impl Drop for ToModel {
    fn drop(&mut self) {
        if let ToModel::Scheduled(q) = self {
            q.close();
        }
    }
}
