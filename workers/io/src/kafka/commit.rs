//! The Kafka committer: the done prefix as consumer-group offsets, asynchronous while
//! running (confirmed by the commit callback of `consumer.rs`'s group context), synchronous and
//! bounded at shutdown; with the crash-loop guard on, every commit carries the guard's mark in
//! its metadata, and the guard reads and writes marks there ([`KafkaMarks`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fusionstream_core::crash_guard::{GuardSettings, Mark};
use fusionstream_core::position::PartitionId;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::{set_mark, GroupContext, KafkaShared};
use crate::crash_marks::{CrashGuard, MarkStore};
use crate::ports::{CommitAck, Committer};

/// Commits the done prefix as consumer-group offsets.
#[derive(Debug)]
pub struct KafkaCommitter {
    shared: KafkaShared,
    guard: Option<Arc<CrashGuard>>,
}

impl KafkaCommitter {
    /// A committer for the consumer of `shared`; with `guard`, the crash-loop guard keeps
    /// its marks in the commits' metadata.
    pub fn new(shared: KafkaShared, guard: Option<GuardSettings>) -> Self {
        let guard = guard.map(|s| {
            CrashGuard::new(
                s,
                KafkaMarks {
                    shared: shared.clone(),
                },
            )
        });
        Self { shared, guard }
    }

    fn list(
        &self,
        positions: &[(PartitionId, u64)],
        clean: bool,
    ) -> anyhow::Result<TopicPartitionList> {
        offsets_list(&self.shared, self.guard.as_deref(), positions, |_| clean)
    }
}

/// `positions` as a list of offsets, each carrying the crash guard's mark (`clean(p)`: the
/// partition is left in order by this commit).
pub(super) fn offsets_list(
    shared: &KafkaShared,
    guard: Option<&CrashGuard>,
    positions: &[(PartitionId, u64)],
    clean: impl Fn(PartitionId) -> bool,
) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (id, next) in positions {
        if let Some((topic, p)) = shared.map.get(*id) {
            tpl.add_partition_offset(&topic, p, Offset::Offset(*next as i64))?;
            if let Some(g) = guard {
                set_mark(&mut tpl, &topic, p, g.mark_for(*id, *next, clean(*id)));
            }
        }
    }
    Ok(tpl)
}

/// How long a mark's read or write may wait for the group coordinator.
const MARK_TIMEOUT: Duration = Duration::from_secs(10);

/// The crash guard's marks in the metadata of the group's offset commits.
#[derive(Debug)]
struct KafkaMarks {
    shared: KafkaShared,
}

impl KafkaMarks {
    fn partition(&self, id: PartitionId) -> anyhow::Result<(String, i32)> {
        self.shared.map.get(id).context("unknown partition")
    }

    fn consumer(&self) -> anyhow::Result<Arc<StreamConsumer<GroupContext>>> {
        self.shared.consumer().context("no consumer yet")
    }
}

impl MarkStore for KafkaMarks {
    fn read(&self, partition: PartitionId) -> anyhow::Result<Option<Mark>> {
        let (topic, p) = self.partition(partition)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, p);
        let got = self
            .consumer()?
            .committed_offsets(tpl, MARK_TIMEOUT)
            .context("reading the committed offset")?;
        let Some(e) = got.find_partition(&topic, p) else {
            return Ok(None);
        };
        Ok(mark_of(&e))
    }

    fn write(&self, partition: PartitionId, next: u64, mark: Mark) -> anyhow::Result<()> {
        let (topic, p) = self.partition(partition)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Offset(next as i64))?;
        set_mark(&mut tpl, &topic, p, mark);
        commit_within(self.consumer()?, tpl, MARK_TIMEOUT)
    }
}

/// A synchronous commit on a helper thread, given up after `timeout` (librdkafka defers a
/// commit while no group coordinator is reachable, without a bound of its own).
fn commit_within(
    consumer: Arc<StreamConsumer<GroupContext>>,
    tpl: TopicPartitionList,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("fusionstream-commit".into())
        .spawn(move || {
            let _ = tx.send(consumer.commit(&tpl, CommitMode::Sync));
        })
        .context("starting the commit thread")?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r.context("committing offsets"),
        Err(_) => anyhow::bail!("no answer from the group coordinator within {timeout:?}"),
    }
}

impl Committer for KafkaCommitter {
    /// An asynchronous commit: confirmed by the commit callback when the broker answers.
    fn commit(&mut self, positions: &[(PartitionId, u64)]) -> anyhow::Result<CommitAck> {
        let Some(consumer) = self.shared.consumer() else {
            anyhow::bail!("no consumer yet");
        };
        let tpl = self.list(positions, false)?;
        if tpl.count() > 0 {
            consumer
                .commit(&tpl, CommitMode::Async)
                .context("sending the offset commit")?;
        }
        Ok(CommitAck::Sent)
    }

    /// The last commit of a clean stop (marks `clean`), bounded by `timeout`.
    fn commit_and_wait(
        &mut self,
        positions: &[(PartitionId, u64)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let Some(consumer) = self.shared.consumer() else {
            anyhow::bail!("no consumer");
        };
        let mut tpl = self.list(positions, true)?;
        if self.guard.is_some() {
            for (topic, p, next) in drained_idle_partitions(&consumer, &tpl, timeout / 2) {
                tpl.add_partition_offset(&topic, p, Offset::Offset(next))?;
                set_mark(
                    &mut tpl,
                    &topic,
                    p,
                    Mark {
                        clean: true,
                        attempt: None,
                    },
                );
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        commit_within(consumer, tpl, timeout)
    }

    fn crash_guard(&self) -> Option<Arc<CrashGuard>> {
        self.guard.clone()
    }

    /// The consumer leaves the group now (see `KafkaShared::close`).
    fn close(&mut self) {
        self.shared.close();
    }
}

/// The mark in a committed offset's metadata. rdkafka's accessor panics on metadata that is
/// not UTF-8 (written by another tool): that is no mark.
fn mark_of(e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>) -> Option<Mark> {
    let text = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.metadata().to_owned()))
        .unwrap_or_default();
    Mark::decode(&text)
}

/// Partitions assigned to this worker that it read nothing from, marked `running` by a
/// previous owner, with nothing left to read (committed offset at the high watermark): a
/// clean stop may mark them clean, since no event of theirs is unprocessed. One with events
/// left keeps its `running` mark (a killer may be among them), one with an attempt keeps it.
pub(super) fn drained_idle_partitions(
    consumer: &StreamConsumer<GroupContext>,
    tracked: &TopicPartitionList,
    timeout: Duration,
) -> Vec<(String, i32, i64)> {
    let Ok(assigned) = consumer.assignment() else {
        return Vec::new();
    };
    let mut ask = TopicPartitionList::new();
    for e in assigned.elements() {
        if tracked.find_partition(e.topic(), e.partition()).is_none() {
            ask.add_partition(e.topic(), e.partition());
        }
    }
    if ask.count() == 0 {
        return Vec::new();
    }
    let Ok(got) = consumer.committed_offsets(ask, timeout) else {
        return Vec::new();
    };
    got.elements()
        .iter()
        .filter_map(|e| {
            let Offset::Offset(at) = e.offset() else {
                return None;
            };
            if mark_of(e) != Some(Mark::RUNNING) {
                return None;
            }
            let (_, high) = consumer
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .ok()?;
            (at >= high).then(|| (e.topic().to_owned(), e.partition(), at))
        })
        .collect()
}
