//! Which source positions may be acknowledged: per partition, the end of the contiguous
//! prefix of completed work.
//!
//! Work completes out of order (a text-only event overtakes an image fetch; one micro-batch
//! finishes before another). A position is acknowledged (a Kafka offset committed, a local
//! checkpoint written) only when it and every tracked position before it are done, so a
//! restart replays whatever was not finished and never skips anything.

use std::collections::{BTreeMap, BTreeSet};

/// A partition of a source: a Kafka partition, or one local file.
pub type PartitionId = u32;

/// Tracker misuse (a bug in the caller, reported rather than hidden).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    /// Positions of one partition must be tracked in increasing order.
    #[error("position {offset} tracked after {last} on partition {partition}")]
    OutOfOrder {
        /// Partition.
        partition: PartitionId,
        /// Offending position.
        offset: u64,
        /// Last position tracked.
        last: u64,
    },
    /// Completing a position that is not pending (never tracked, done twice, or revoked).
    #[error("position {offset} of partition {partition} is not pending")]
    NotPending {
        /// Partition.
        partition: PartitionId,
        /// Position.
        offset: u64,
    },
}

/// One partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionPositions {
    pending: BTreeSet<u64>,
    /// One past the last tracked position, or the start position.
    next: u64,
    committed: u64,
}

impl PartitionPositions {
    /// Start at `start` (the position that will be read next).
    pub fn starting_at(start: u64) -> Self {
        Self {
            pending: BTreeSet::new(),
            next: start,
            committed: start,
        }
    }

    /// The position to acknowledge: everything before it is done.
    pub fn committable(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.next)
    }

    /// Positions taken and not yet done.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

/// Positions of every partition of a source.
#[derive(Debug, Clone, Default)]
pub struct PositionTracker {
    partitions: BTreeMap<PartitionId, PartitionPositions>,
}

impl PositionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begin tracking `partition` from `start` (after an assignment or from a checkpoint).
    pub fn assign(&mut self, partition: PartitionId, start: u64) {
        self.partitions
            .insert(partition, PartitionPositions::starting_at(start));
    }

    /// Stop tracking `partition` (revoked); returns its last committable position.
    pub fn revoke(&mut self, partition: PartitionId) -> Option<u64> {
        self.partitions.remove(&partition).map(|p| p.committable())
    }

    /// A position was taken from the source. Positions may have gaps (Kafka offsets do).
    pub fn track(&mut self, partition: PartitionId, offset: u64) -> Result<(), TrackError> {
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionPositions::starting_at(offset));
        if offset < p.next {
            return Err(TrackError::OutOfOrder {
                partition,
                offset,
                last: p.next.saturating_sub(1),
            });
        }
        p.pending.insert(offset);
        p.next = offset + 1;
        Ok(())
    }

    /// All work of a position is done (outputs acknowledged, or its dead letter).
    pub fn complete(&mut self, partition: PartitionId, offset: u64) -> Result<(), TrackError> {
        let removed = self
            .partitions
            .get_mut(&partition)
            .is_some_and(|p| p.pending.remove(&offset));
        if removed {
            Ok(())
        } else {
            Err(TrackError::NotPending { partition, offset })
        }
    }

    /// Whether `offset` of `partition` is tracked and not yet done.
    pub fn is_pending(&self, partition: PartitionId, offset: u64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|p| p.pending.contains(&offset))
    }

    /// The committable position of one partition.
    pub fn committable(&self, partition: PartitionId) -> Option<u64> {
        self.partitions.get(&partition).map(|p| p.committable())
    }

    /// Partitions whose committable position is past their last *confirmed* commit, with
    /// that position: what to commit now. Nothing is marked: a commit that fails, or whose
    /// confirmation never comes, is still pending at the next call, so it is retried.
    pub fn pending_commits(&self) -> Vec<(PartitionId, u64)> {
        self.partitions
            .iter()
            .filter_map(|(id, p)| {
                let c = p.committable();
                (c > p.committed).then_some((*id, c))
            })
            .collect()
    }

    /// The store (the broker, the checkpoint file) confirmed `offset` as the partition's
    /// commit. A late or repeated confirmation never moves it back; one for a partition no
    /// longer assigned is ignored.
    pub fn confirm(&mut self, partition: PartitionId, offset: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.committed = p.committed.max(offset);
        }
    }

    /// The last confirmed commit of a partition.
    pub fn confirmed(&self, partition: PartitionId) -> Option<u64> {
        self.partitions.get(&partition).map(|p| p.committed)
    }

    /// Committable position of every partition.
    pub fn snapshot(&self) -> BTreeMap<PartitionId, u64> {
        self.partitions
            .iter()
            .map(|(id, p)| (*id, p.committable()))
            .collect()
    }

    /// Positions of `partition` taken and not yet done.
    pub fn in_flight_of(&self, partition: PartitionId) -> usize {
        self.partitions.get(&partition).map_or(0, |p| p.in_flight())
    }

    /// Positions taken and not yet done, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight()).sum()
    }
}

/// What the property tests of the tracker and of its users share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A tracker with positions on partitions 0–2, each `(partition, gap)` placing the next
    /// position `gap - 1` after the previous one, and every position in an order shuffled
    /// deterministically from `seed`; with one past the last position per partition.
    pub(crate) fn tracked_in_random_order(
        gaps: &[(u32, u64)],
        seed: u64,
    ) -> (PositionTracker, Vec<(u32, u64)>, [u64; 3]) {
        let mut t = PositionTracker::new();
        let mut next = [0u64; 3];
        let mut all = Vec::new();
        for (p, gap) in gaps {
            let o = next[*p as usize] + gap - 1;
            t.track(*p, o).expect("increasing");
            next[*p as usize] = o + 1;
            all.push((*p, o));
        }
        let mut rng = seed | 1;
        for i in (1..all.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            all.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        (t, all, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_the_contiguous_prefix_only() {
        let mut t = PositionTracker::new();
        t.assign(0, 10);
        for o in [10, 11, 13, 14] {
            t.track(0, o).expect("increasing");
        }
        assert_eq!(t.committable(0), Some(10));
        t.complete(0, 11).expect("pending");
        t.complete(0, 13).expect("pending");
        assert_eq!(t.committable(0), Some(10), "10 is not done");
        t.complete(0, 10).expect("pending");
        assert_eq!(t.committable(0), Some(14), "gap 12 was never an event");
        assert_eq!(t.pending_commits(), vec![(0, 14)]);
        assert_eq!(
            t.pending_commits(),
            vec![(0, 14)],
            "pending until confirmed"
        );
        t.confirm(0, 14);
        assert_eq!(t.pending_commits(), vec![]);
        assert_eq!(t.confirmed(0), Some(14));
        t.complete(0, 14).expect("pending");
        assert_eq!(t.committable(0), Some(15));
        assert_eq!(
            t.complete(0, 14),
            Err(TrackError::NotPending {
                partition: 0,
                offset: 14
            })
        );
        assert!(matches!(t.track(0, 3), Err(TrackError::OutOfOrder { .. })));
    }

    #[test]
    fn a_commit_is_pending_until_confirmed_and_never_moves_back() {
        let mut t = PositionTracker::new();
        t.assign(0, 0);
        t.assign(1, 100);
        for o in 0..4 {
            t.track(0, o).expect("in order");
            t.complete(0, o).expect("in order");
        }
        // Attempted (not confirmed): still pending, so a quiet stream retries it.
        assert_eq!(t.pending_commits(), vec![(0, 4)]);
        t.track(0, 4).expect("in order");
        t.complete(0, 4).expect("in order");
        // A late confirmation of the earlier attempt leaves the newer position pending.
        t.confirm(0, 4);
        assert_eq!(t.pending_commits(), vec![(0, 5)]);
        t.confirm(0, 5);
        t.confirm(0, 3);
        assert_eq!(t.confirmed(0), Some(5), "never moves back");
        assert_eq!(t.pending_commits(), vec![]);
        t.confirm(7, 9);
        assert_eq!(t.confirmed(7), None, "not assigned: ignored");
    }

    #[test]
    fn revoke_forgets_the_partition() {
        let mut t = PositionTracker::new();
        t.track(2, 5).expect("first");
        t.track(2, 6).expect("next");
        t.complete(2, 5).expect("pending");
        assert_eq!(t.revoke(2), Some(6));
        assert!(t.complete(2, 6).is_err());
        assert_eq!(t.in_flight(), 0);
    }

    proptest! {
        /// Any completion order over several partitions, with gaps between positions:
        /// the committable position never passes an unfinished position, never moves
        /// back, and reaches the end once everything is done.
        #[test]
        fn never_skips_in_any_completion_order(
            gaps in proptest::collection::vec((0u32..3, 1u64..4), 1..120),
            seed in any::<u64>(),
        ) {
            let (mut t, all, next) = testing::tracked_in_random_order(&gaps, seed);
            let mut done = std::collections::BTreeSet::new();
            let mut last = [0u64; 3];
            for (p, o) in &all {
                t.complete(*p, *o).expect("pending once");
                done.insert((*p, *o));
                for part in 0..3u32 {
                    if let Some(c) = t.committable(part) {
                        // Every tracked position below c is done.
                        for (q, x) in gaps_positions(&gaps) {
                            if q == part && x < c {
                                prop_assert!(done.contains(&(q, x)), "committed past {x}");
                            }
                        }
                        prop_assert!(c >= last[part as usize], "moved back");
                        last[part as usize] = c;
                    }
                }
            }
            for part in 0..3u32 {
                if let Some(c) = t.committable(part) {
                    prop_assert_eq!(c, next[part as usize]);
                }
            }
            prop_assert_eq!(t.in_flight(), 0);
        }
    }

    fn gaps_positions(gaps: &[(u32, u64)]) -> Vec<(u32, u64)> {
        let mut next = [0u64; 3];
        gaps.iter()
            .map(|(p, gap)| {
                let o = next[*p as usize] + gap - 1;
                next[*p as usize] = o + 1;
                (*p, o)
            })
            .collect()
    }
}
