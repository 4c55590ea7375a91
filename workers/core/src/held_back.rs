//! Exactly-once delivery: which finished outputs may go into the open transaction.
//!
//! A transaction commits output records together with input offsets. After a crash the
//! worker replays from the committed offsets, so a committed transaction must never hold an
//! output of an event at or past the offset it commits for that event's partition: that
//! event would run again and its outputs be written twice. Events finish out of order, so
//! the rule is: **an event's outputs are released into the open transaction only once its
//! offset is below the partition's committable position** (the end of the contiguous done
//! prefix, [`PositionTracker::committable`]). Until then they are held back here.
//!
//! Together with "a transaction commits the committable position of every partition it has
//! outputs for" this gives: the records of committed transactions are exactly the outputs of
//! the events below the committed offsets. Events below it are released (so written and
//! committed, once, in this or an earlier transaction); events at or past it have nothing
//! committed (held, or in an aborted transaction), and replay. Outputs of one partition are
//! released in offset order.
//!
//! Memory is bounded by the in-flight window: an event holds its permit until its
//! transaction commits.

use std::collections::BTreeMap;

use crate::position::{PartitionId, PositionTracker};

/// Outputs held back per partition and offset, in arrival order within an event.
#[derive(Debug)]
pub struct HeldBack<T> {
    held: BTreeMap<PartitionId, BTreeMap<u64, Vec<T>>>,
    items: usize,
}

impl<T> Default for HeldBack<T> {
    fn default() -> Self {
        Self {
            held: BTreeMap::new(),
            items: 0,
        }
    }
}

impl<T> HeldBack<T> {
    /// Nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hold `item`, an output of the event at `offset` of `partition`.
    pub fn hold(&mut self, partition: PartitionId, offset: u64, item: T) {
        self.held
            .entry(partition)
            .or_default()
            .entry(offset)
            .or_default()
            .push(item);
        self.items += 1;
    }

    /// Every held item whose event is below its partition's committable position, in offset
    /// order per partition (partitions the tracker does not know keep theirs).
    pub fn release(&mut self, tracker: &PositionTracker) -> Vec<T> {
        let mut out = Vec::new();
        for (partition, events) in &mut self.held {
            let Some(end) = tracker.committable(*partition) else {
                continue;
            };
            let keep = events.split_off(&end);
            let released = std::mem::replace(events, keep);
            for (_, items) in released {
                self.items -= items.len();
                out.extend(items);
            }
        }
        self.held.retain(|_, events| !events.is_empty());
        out
    }

    /// Drop what is held for `partition` (revoked: its events replay at the new owner).
    pub fn revoke(&mut self, partition: PartitionId) -> usize {
        let dropped: usize = self
            .held
            .remove(&partition)
            .map_or(0, |e| e.values().map(Vec::len).sum());
        self.items -= dropped;
        dropped
    }

    /// Drop what is held for one event (it was abandoned: its offset is no longer pending).
    pub fn forget(&mut self, partition: PartitionId, offset: u64) -> usize {
        let Some(events) = self.held.get_mut(&partition) else {
            return 0;
        };
        let dropped = events.remove(&offset).map_or(0, |v| v.len());
        if events.is_empty() {
            self.held.remove(&partition);
        }
        self.items -= dropped;
        dropped
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.items
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn outputs_past_a_gap_wait_for_it() {
        let mut t = PositionTracker::new();
        let mut h = HeldBack::new();
        for o in 10..13 {
            t.track(0, o).expect("in order");
        }
        t.complete(0, 11).expect("pending");
        h.hold(0, 11, "b");
        assert!(h.release(&t).is_empty(), "10 is not done");
        assert_eq!(h.len(), 1);
        t.complete(0, 10).expect("pending");
        h.hold(0, 10, "a");
        assert_eq!(h.release(&t), vec!["a", "b"], "in offset order");
        assert!(h.is_empty());
        h.hold(0, 12, "c1");
        assert!(h.release(&t).is_empty(), "12 has more pieces to come");
        t.complete(0, 12).expect("pending");
        h.hold(0, 12, "c2");
        assert_eq!(h.release(&t), vec!["c1", "c2"]);
    }

    #[test]
    fn a_revoke_drops_what_is_held_for_the_partition() {
        let mut t = PositionTracker::new();
        let mut h = HeldBack::new();
        for p in 0..2 {
            t.track(p, 0).expect("first");
            t.track(p, 1).expect("next");
            t.complete(p, 1).expect("pending");
            h.hold(p, 1, p);
        }
        assert_eq!(h.revoke(0), 1);
        assert_eq!(h.forget(1, 1), 1);
        assert_eq!(h.forget(1, 1), 0);
        assert!(h.is_empty());
    }

    proptest! {
        /// Any completion order over several partitions: at every step each released item's
        /// offset is below the committable position, every done event below it has been
        /// released, and per partition items come out in offset order; at the end nothing
        /// is held.
        #[test]
        fn releases_exactly_the_done_prefix(
            events in proptest::collection::vec((0u32..3, 1u64..3), 1..100),
            seed in any::<u64>(),
        ) {
            let (mut t, all, _) =
                crate::position::testing::tracked_in_random_order(&events, seed);
            let mut h = HeldBack::new();
            let mut released: Vec<(u32, u64)> = Vec::new();
            for (p, o) in &all {
                t.complete(*p, *o).expect("pending once");
                h.hold(*p, *o, (*p, *o));
                let out = h.release(&t);
                for (q, x) in &out {
                    let c = t.committable(*q).expect("tracked");
                    prop_assert!(*x < c, "released {x} at or past the committable {c}");
                    if let Some((_, last)) = released.iter().rev().find(|(r, _)| r == q) {
                        prop_assert!(x > last, "out of order on partition {q}");
                    }
                }
                released.extend(out);
                for (q, x) in &all {
                    let below = t.committable(*q).is_some_and(|c| *x < c);
                    let done = !t.is_pending(*q, *x);
                    prop_assert_eq!(
                        below && done,
                        released.contains(&(*q, *x)),
                        "event {}/{} below the prefix iff released", q, x
                    );
                }
            }
            prop_assert!(h.is_empty());
            prop_assert_eq!(released.len(), all.len());
        }
    }
}
