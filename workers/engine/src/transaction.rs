//! The exactly-once sink task: finished events' outputs and the input offsets of the done
//! prefix committed together in one transaction of the sink ([`Transactions`]).
//!
//! Long because it is one state machine (held, kept and written records, the open
//! transaction) whose steps — stage, commit, abort, recover, hand over, finish — all share
//! that state.
//!
//! - **Held back**: an event's pieces wait ([`HeldBack`]) until its offset is below the
//!   partition's committable position; then they are released into the open transaction
//!   (written at once) and kept until it commits. A commit carries the committable position
//!   of every partition, so committed outputs are exactly those of the events below the
//!   committed offsets (the argument: `fusionstream_core::held_back`, `docs/architecture.md`).
//! - **Commit** every `interval`, or once `max_events` events wait in the open transaction, or
//!   as soon as nothing else is in flight (a quiet stream; an event run alone by the crash
//!   guard, which waits for everything before it to be committed), and at the end (every
//!   partition marked clean). Only then is an event acknowledged: its
//!   permit returns, its latency (read to committed) is reported.
//! - **Abort** (a delivery failed, the transaction needs aborting): the kept records are
//!   written again into a new transaction with the same offsets — what a replay from the
//!   committed offsets would write, without running the model again. A record refused as too
//!   large is found by writing the records one at a time and replaced (`sink::replace_too_large`).
//! - **Fatal** (unknown producer id; a commit whose answer never came): the producer is
//!   recreated; the group's committed offsets tell whether the transaction committed before.
//! - **Fenced** (a newer worker with the same transactional id): the task stops with an error,
//!   writing nothing more.
//! - **Handover** (a revoke): the open transaction is committed with the revoked partitions'
//!   done prefix (marked clean), or aborted; their held and kept outputs are dropped and the
//!   partitions forgotten, before the source gives them up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fusionstream_core::backoff::Backoff;
use fusionstream_core::held_back::HeldBack;
use fusionstream_core::lock;
use fusionstream_core::position::{PartitionId, PositionTracker};
use fusionstream_io::ports::{Handover, OutputSink, PublishError, Transactions, TxnError};
use fusionstream_io::retry::jitter;
use tokio::sync::mpsc;

use super::envelope::Finished;
use super::report::{Report, Reporter};
use super::sink::{acknowledged, replace_too_large};
use super::window::Load;

/// Delays between attempts to commit a transaction that failed.
const RETRY: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
    retries: u32::MAX,
};

/// When transactions commit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxnTiming {
    /// Between commits.
    pub interval: Duration,
    /// Commit early once this many events wait in the open transaction.
    pub max_events: usize,
    /// Bound on one transactional call (below `max.poll.interval.ms`).
    pub call_timeout: Duration,
    /// Bound on the last commit at the end.
    pub final_timeout: Duration,
}

/// A revoke's request to settle the open transaction and forget `partitions`.
#[derive(Debug)]
pub(crate) struct HandoverRequest {
    partitions: Vec<PartitionId>,
    reply: std::sync::mpsc::Sender<anyhow::Result<()>>,
}

/// The engine's [`Handover`]: asks the transaction task and waits for its answer.
#[derive(Debug)]
pub(crate) struct EngineHandover {
    pub tx: mpsc::UnboundedSender<HandoverRequest>,
}

impl Handover for EngineHandover {
    fn hand_over(&self, partitions: &[PartitionId], timeout: Duration) -> anyhow::Result<()> {
        let (reply, answer) = std::sync::mpsc::channel();
        let req = HandoverRequest {
            partitions: partitions.to_vec(),
            reply,
        };
        if self.tx.send(req).is_err() {
            // The sink has ended: everything done was committed (or aborted) at its end.
            return Ok(());
        }
        answer
            .recv_timeout(timeout)
            .map_err(|_| anyhow::anyhow!("the transaction was not settled within {timeout:?}"))?
    }
}

/// Records a committed transaction's positions elsewhere, for information
/// ([`Transactions::informs_committer`]).
pub(crate) type AfterCommit = Box<dyn Fn(&[(PartitionId, u64)]) + Send + Sync>;

/// What the transaction task shares with the run.
pub(crate) struct TxnParts {
    pub after_commit: Option<AfterCommit>,
    pub tracker: Arc<Mutex<PositionTracker>>,
    pub txns: Arc<dyn Transactions>,
    pub timing: TxnTiming,
    pub reporter: Arc<dyn Reporter>,
    pub load: Arc<Load>,
    pub handovers: mpsc::UnboundedReceiver<HandoverRequest>,
}

/// How a commit attempt failed.
enum Failed {
    /// Try again (after the transaction was aborted or the producer recreated).
    Retry(anyhow::Error),
    /// Stop the worker (fenced; a record no store limit lets through).
    Stop(anyhow::Error),
}

/// The task's state.
struct Txn<K> {
    sink: K,
    parts: TxnParts,
    held: HeldBack<Finished>,
    /// Released pieces in the open transaction, kept until it commits.
    open: Vec<Finished>,
    /// Events (last pieces) among them.
    open_events: usize,
    /// The kept pieces' records are written into the producer's open transaction (false after
    /// an abort: they are written again before the next commit).
    written: bool,
    /// A write failed: nothing more is written until the transaction is aborted.
    broken: bool,
}

pub(crate) async fn run<K: OutputSink>(
    mut rx: mpsc::Receiver<Finished>,
    sink: K,
    parts: TxnParts,
) -> anyhow::Result<()> {
    let interval = parts.timing.interval;
    let max_events = parts.timing.max_events;
    let mut t = Txn {
        sink,
        parts,
        held: HeldBack::new(),
        open: Vec::new(),
        open_events: 0,
        written: true,
        broken: false,
    };
    let mut next_commit = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            f = rx.recv() => match f {
                Some(f) => t.stage(f).await?,
                None => break,
            },
            Some(h) = t.parts.handovers.recv() => {
                let r = t.hand_over(&h.partitions).await;
                let stop = matches!(r, Err(Failed::Stop(_)));
                let _ = h.reply.send(match r {
                    Ok(()) => Ok(()),
                    Err(Failed::Retry(e) | Failed::Stop(e)) => Err(e),
                });
                if stop {
                    anyhow::bail!("the transactional producer cannot go on (see the log)");
                }
            }
            _ = tokio::time::sleep_until(next_commit) => {
                t.settle_or_stop(&[]).await?;
                next_commit = tokio::time::Instant::now() + interval;
            }
        }
        // Commit early when the open transaction is full, or when nothing else is in flight
        // (nothing would join it before the timer: a quiet stream, or an event the crash
        // guard runs alone, which waits for this commit).
        let idle = !t.open.is_empty() && lock(&t.parts.tracker).in_flight() == 0;
        if t.open_events() >= max_events || idle {
            t.settle_or_stop(&[]).await?;
            next_commit = tokio::time::Instant::now() + interval;
        }
    }
    t.finish().await
}

impl<K: OutputSink> Txn<K> {
    fn reporter(&self) -> &dyn Reporter {
        &*self.parts.reporter
    }

    /// Events (last pieces) in the open transaction.
    fn open_events(&self) -> usize {
        self.open_events
    }

    /// Keep a released piece until its transaction commits.
    fn keep(&mut self, f: Finished) {
        self.open_events += usize::from(f.outcome.is_some());
        self.open.push(f);
    }

    /// A piece arrived: hold it, and release what the done prefix now covers (an error: a
    /// record no limit lets through, the worker stops).
    async fn stage(&mut self, f: Finished) -> anyhow::Result<()> {
        let (p, o) = (f.partition, f.offset);
        let ours = {
            let mut t = lock(&self.parts.tracker);
            if f.outcome.is_some() {
                t.complete(p, o).is_ok()
            } else {
                t.is_pending(p, o)
            }
        };
        if !ours {
            // Revoked while in flight: the new owner replays it; nothing of it is written.
            self.held.forget(p, o);
            tracing::debug!(
                partition = p,
                offset = o,
                "outputs of a revoked position dropped"
            );
            return Ok(());
        }
        self.held.hold(p, o, f);
        let released = self.held.release(&lock(&self.parts.tracker));
        self.reporter().report(Report::HeldBack(self.held.len()));
        for mut f in released {
            if self.written && !self.broken {
                match write_records(&mut self.sink, &mut f, &*self.parts.reporter).await {
                    Ok(()) if self.parts.txns.release_on_write() => drop(f.permit.take()),
                    Ok(()) => {}
                    Err(Failed::Retry(e)) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "writing into the transaction failed"
                        );
                        self.broken = true;
                    }
                    Err(Failed::Stop(e)) => return Err(e),
                }
            }
            self.keep(f);
        }
        Ok(())
    }

    /// Settle on the timer or the size bound; stop the worker on a fatal failure, log and go
    /// on (retried at the next interval) otherwise.
    async fn settle_or_stop(&mut self, clean: &[PartitionId]) -> anyhow::Result<()> {
        match self.settle(clean).await {
            Ok(()) => Ok(()),
            Err(Failed::Retry(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    events = self.open_events(),
                    "transaction not committed; its records are sent again in the next one"
                );
                Ok(())
            }
            Err(Failed::Stop(e)) => Err(e),
        }
    }

    /// Commit the open transaction with every partition's committable position (what is
    /// done and not yet committed), retried within one call timeout.
    async fn settle(&mut self, clean: &[PartitionId]) -> Result<(), Failed> {
        self.settle_marked(clean, false).await
    }

    /// [`Txn::settle`]; `last`: the clean stop's transaction (see [`Transactions::commit`]).
    async fn settle_marked(&mut self, clean: &[PartitionId], last: bool) -> Result<(), Failed> {
        let deadline = Instant::now() + self.parts.timing.call_timeout;
        let mut attempt = 0;
        loop {
            let positions = to_commit(&lock(&self.parts.tracker), clean);
            if self.open.is_empty() && positions.is_empty() && !last {
                return Ok(());
            }
            match self.attempt(&positions, clean, last).await {
                Ok(()) => return Ok(()),
                Err(Failed::Stop(e)) => return Err(Failed::Stop(e)),
                Err(Failed::Retry(e)) => {
                    let delay = RETRY.delay(attempt, jitter()).unwrap_or(RETRY.max);
                    if Instant::now() + delay >= deadline {
                        return Err(Failed::Retry(e));
                    }
                    tracing::debug!(error = format!("{e:#}"), attempt, "transaction retried");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One commit attempt: write the kept records again if needed, wait for their delivery,
    /// commit with `positions`.
    async fn attempt(
        &mut self,
        positions: &[(PartitionId, u64)],
        clean: &[PartitionId],
        last: bool,
    ) -> Result<(), Failed> {
        let started = Instant::now();
        if self.broken {
            self.abort().await?;
        }
        if !self.written {
            self.write_all().await?;
        }
        match self.sink.flush().await {
            Ok(()) => {}
            Err(PublishError::TooLarge(_)) => {
                self.abort().await?;
                self.find_too_large().await?;
            }
            Err(e) => {
                self.abort().await?;
                return Err(Failed::Retry(
                    anyhow::Error::new(e).context("delivery failed"),
                ));
            }
        }
        let txns = self.parts.txns.clone();
        let timeout = self.parts.timing.call_timeout;
        let (p, c) = (positions.to_vec(), clean.to_vec());
        let r = blocking(move || txns.commit(&p, &c, last, timeout)).await;
        match r {
            Ok(()) => {}
            Err(TxnError::Abortable(e)) => {
                self.abort().await?;
                return Err(Failed::Retry(anyhow::anyhow!(e).context("commit")));
            }
            Err(TxnError::Fatal(e)) => {
                if !self.recover_and_check(positions).await? {
                    return Err(Failed::Retry(anyhow::anyhow!(e).context("commit")));
                }
            }
            Err(TxnError::Fenced(e)) => return Err(self.fenced(e)),
        }
        self.committed(positions, started.elapsed());
        Ok(())
    }

    /// The transaction committed: confirm its positions, acknowledge its events.
    fn committed(&mut self, positions: &[(PartitionId, u64)], took: Duration) {
        {
            let mut t = lock(&self.parts.tracker);
            for (p, o) in positions {
                t.confirm(*p, *o);
            }
        }
        if let Some(inform) = &self.parts.after_commit {
            inform(positions);
        }
        let records = self.open.iter().map(|f| f.records.len()).sum();
        let events = self.open_events();
        self.reporter().report(Report::TransactionCommitted {
            events,
            records,
            took,
        });
        self.open_events = 0;
        for mut f in self.open.drain(..) {
            // Read to committed: the moment its outputs became visible.
            f.latency = f.started.elapsed();
            acknowledged(f, &*self.parts.reporter, &self.parts.load);
        }
        self.reporter().report(Report::UncommittedPartitions(
            lock(&self.parts.tracker).pending_commits().len(),
        ));
    }

    /// Write every kept record into a new transaction.
    async fn write_all(&mut self) -> Result<(), Failed> {
        for f in &mut self.open {
            if let Err(e) = write_records(&mut self.sink, f, &*self.parts.reporter).await {
                self.broken = true;
                return Err(e);
            }
        }
        self.written = true;
        Ok(())
    }

    /// After a too-large refusal: write the kept records one at a time, replacing each that
    /// is refused (every replacement aborts and starts over: the refusal spoiled the
    /// transaction). Leaves them all written in the open transaction.
    async fn find_too_large(&mut self) -> Result<(), Failed> {
        'again: loop {
            for i in 0..self.open.len() {
                for j in 0..self.open[i].records.len() {
                    let reporter = self.parts.reporter.clone();
                    if let Err(e) =
                        write_one(&mut self.sink, &mut self.open[i], j, &*reporter).await
                    {
                        self.abort().await?;
                        return Err(e);
                    }
                    match self.sink.flush().await {
                        Ok(()) => {}
                        Err(PublishError::TooLarge(_)) => {
                            self.abort().await?;
                            let f = &self.open[i];
                            let (stream, json) = &f.records[j];
                            let rep = replace_too_large(*stream, json, &f.key, self.reporter())
                                .map_err(Failed::Stop)?;
                            self.open[i].records[j] = rep;
                            continue 'again;
                        }
                        Err(e) => {
                            self.abort().await?;
                            return Err(Failed::Retry(anyhow::Error::new(e)));
                        }
                    }
                }
            }
            self.written = true;
            return Ok(());
        }
    }

    /// Abort the open transaction: its kept records must be written again.
    async fn abort(&mut self) -> Result<(), Failed> {
        let txns = self.parts.txns.clone();
        let timeout = self.parts.timing.call_timeout;
        let r = blocking(move || txns.abort(timeout)).await;
        self.reporter().report(Report::TransactionAborted);
        self.written = false;
        self.broken = false;
        match r {
            Ok(()) => Ok(()),
            Err(TxnError::Fenced(e)) => Err(self.fenced(e)),
            Err(TxnError::Abortable(e) | TxnError::Fatal(e)) => {
                tracing::warn!(error = %e, "abort failed: recreating the producer");
                self.recover().await
            }
        }
    }

    async fn recover(&mut self) -> Result<(), Failed> {
        let txns = self.parts.txns.clone();
        let timeout = self.parts.timing.call_timeout;
        let r = blocking(move || txns.recover(timeout)).await;
        self.written = false;
        self.broken = false;
        match r {
            Ok(()) => {
                self.reporter().report(Report::ProducerRecovered);
                Ok(())
            }
            Err(TxnError::Fenced(e)) => Err(self.fenced(e)),
            Err(TxnError::Abortable(e) | TxnError::Fatal(e)) => Err(Failed::Retry(
                anyhow::anyhow!(e).context("recreating the producer"),
            )),
        }
    }

    /// A commit's outcome is unknown: recreate the producer (its init finishes or aborts the
    /// old transaction), then read the group's offsets: the transaction committed iff every
    /// partition's committed offset reached what it carried.
    async fn recover_and_check(
        &mut self,
        positions: &[(PartitionId, u64)],
    ) -> Result<bool, Failed> {
        self.recover().await?;
        if positions.is_empty() {
            return Ok(false);
        }
        let txns = self.parts.txns.clone();
        let timeout = self.parts.timing.call_timeout;
        let ids: Vec<PartitionId> = positions.iter().map(|(p, _)| *p).collect();
        let got = tokio::task::spawn_blocking(move || txns.committed(&ids, timeout))
            .await
            .context("reading the committed offsets")
            .and_then(|r| r)
            .map_err(Failed::Retry)?;
        let committed = positions.iter().all(|(p, next)| {
            got.iter()
                .any(|(q, at)| q == p && at.is_some_and(|at| at >= *next))
        });
        tracing::warn!(
            committed,
            "a transaction's commit had no answer; its outcome read back"
        );
        Ok(committed)
    }

    fn fenced(&self, e: fusionstream_io::ports::BoxError) -> Failed {
        self.reporter().report(Report::Fenced);
        tracing::error!(
            error = %e,
            "fenced: a newer worker with the same kafka.transactional_id took over; this one \
             stops without writing anything more"
        );
        Failed::Stop(anyhow::anyhow!(e).context("fenced by a newer worker"))
    }

    /// A revoke: settle the open transaction with the revoked partitions marked clean (abort
    /// it when that fails), then drop what is held or kept for them and forget them.
    async fn hand_over(&mut self, partitions: &[PartitionId]) -> Result<(), Failed> {
        let r = self.settle(partitions).await;
        if let Err(Failed::Retry(_)) = &r {
            self.abort().await?;
        }
        let mut t = lock(&self.parts.tracker);
        for p in partitions {
            t.revoke(*p);
            self.held.revoke(*p);
        }
        self.open.retain(|f| !partitions.contains(&f.partition));
        self.open_events = self.open.iter().filter(|f| f.outcome.is_some()).count();
        self.reporter().report(Report::HeldBack(self.held.len()));
        r
    }

    /// The end: everything is through; the last transaction commits every partition's
    /// position marked clean (or is aborted: those events replay on the next start).
    async fn finish(mut self) -> anyhow::Result<()> {
        let all: Vec<PartitionId> = lock(&self.parts.tracker).snapshot().into_keys().collect();
        let deadline = Instant::now() + self.parts.timing.final_timeout;
        loop {
            match self.settle_marked(&all, true).await {
                Ok(()) => return Ok(()),
                Err(Failed::Stop(e)) => return Err(e),
                Err(Failed::Retry(e)) if Instant::now() >= deadline => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "last transaction not committed within checkpoint.commit_timeout; \
                         those events replay on the next start"
                    );
                    let _ = self.abort().await;
                    return Ok(());
                }
                Err(Failed::Retry(_)) => {}
            }
        }
    }
}

/// What a transaction commits: every partition whose done prefix is past its last commit,
/// and every `clean` one (its mark changes) even if not.
fn to_commit(t: &PositionTracker, clean: &[PartitionId]) -> Vec<(PartitionId, u64)> {
    let mut positions = t.pending_commits();
    for p in clean {
        if let Some(c) = t.committable(*p) {
            if !positions.iter().any(|(q, _)| q == p) {
                positions.push((*p, c));
            }
        }
    }
    positions
}

/// Write one piece's records into the open transaction. A record the sink refuses before
/// producing it (over the topic's limit) is replaced (`sink::replace_too_large`) and the
/// replacement written: nothing was produced, the transaction is intact.
async fn write_records<K: OutputSink>(
    sink: &mut K,
    f: &mut Finished,
    reporter: &dyn Reporter,
) -> Result<(), Failed> {
    for j in 0..f.records.len() {
        write_one(sink, f, j, reporter).await?;
    }
    Ok(())
}

/// Write record `j` of `f`, replacing it while the sink refuses it as too large.
async fn write_one<K: OutputSink>(
    sink: &mut K,
    f: &mut Finished,
    j: usize,
    reporter: &dyn Reporter,
) -> Result<(), Failed> {
    loop {
        let (stream, json) = &f.records[j];
        match sink
            .write(*stream, &f.key, json, f.traceparent.as_deref())
            .await
        {
            Ok(()) => return Ok(()),
            Err(PublishError::TooLarge(_)) => {
                f.records[j] =
                    replace_too_large(*stream, json, &f.key, reporter).map_err(Failed::Stop)?;
            }
            Err(e) => {
                return Err(Failed::Retry(
                    anyhow::Error::new(e).context("writing into the transaction"),
                ))
            }
        }
    }
}

/// A blocking transactional call off the async runtime (a call that panicked counts as one
/// whose producer can no longer be trusted).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TxnError> + Send + 'static,
) -> Result<T, TxnError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(TxnError::Fatal(
            format!("transaction call failed: {e}").into(),
        ))
    })
}
