//! The micro-batching policy, as a pure state machine (the pipeline owns the clock).
//!
//! Each lane (see [`Lane`]) fills its own batch. A batch is emitted when it holds
//! `max_items`, when the next item would break its pixel or token budget, or when its
//! first item has waited `max_wait`. An item larger than a whole budget still runs, alone.

use std::time::{Duration, Instant};

use crate::task::Lane;

/// What an item costs a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Image pixels after preprocessing (all vision models of the item).
    pub pixels: u64,
    /// Text and question tokens.
    pub tokens: u64,
}

impl Cost {
    fn add(self, o: Cost) -> Cost {
        Cost {
            pixels: self.pixels + o.pixels,
            tokens: self.tokens + o.tokens,
        }
    }
}

/// Limits of one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanePolicy {
    /// Most items per batch (≥ 1).
    pub max_items: usize,
    /// Longest time the first item of a batch waits for company.
    pub max_wait: Duration,
    /// Pixel budget per batch.
    pub max_pixels: u64,
    /// Token budget per batch.
    pub max_tokens: u64,
}

/// Why a batch was closed (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// It reached `max_items`.
    Full,
    /// The next item would have broken a budget.
    Budget,
    /// Its first item waited `max_wait`.
    Timeout,
    /// The input ended or the worker is draining.
    Flush,
}

/// A batch ready for the model.
#[derive(Debug)]
pub struct Batch<T> {
    /// The lane.
    pub lane: Lane,
    /// Items in arrival order.
    pub items: Vec<T>,
    /// Their total cost.
    pub cost: Cost,
    /// Why it closed.
    pub reason: CloseReason,
    /// When its first item arrived.
    pub opened_at: Instant,
}

#[derive(Debug)]
struct Open<T> {
    items: Vec<T>,
    cost: Cost,
    opened_at: Instant,
}

/// Micro-batcher over the lanes.
#[derive(Debug)]
pub struct Batcher<T> {
    policies: [LanePolicy; 2],
    open: [Option<Open<T>>; 2],
}

impl<T> Batcher<T> {
    /// A batcher with a policy per lane (`[encode, generate]`).
    pub fn new(policies: [LanePolicy; 2]) -> Self {
        Self {
            policies: policies.map(|mut p| {
                p.max_items = p.max_items.max(1);
                p
            }),
            open: [None, None],
        }
    }

    /// Add an item; returns the batches this closes (0, 1 or 2, oldest first).
    pub fn push(&mut self, lane: Lane, item: T, cost: Cost, now: Instant) -> Vec<Batch<T>> {
        let policy = self.policies[lane.index()];
        let slot = &mut self.open[lane.index()];
        let mut out = Vec::new();
        if let Some(open) = slot.as_ref() {
            let c = open.cost.add(cost);
            if c.pixels > policy.max_pixels || c.tokens > policy.max_tokens {
                if let Some(o) = slot.take() {
                    out.push(close(lane, o, CloseReason::Budget));
                }
            }
        }
        let open = slot.get_or_insert_with(|| Open {
            items: Vec::with_capacity(policy.max_items),
            cost: Cost::default(),
            opened_at: now,
        });
        open.items.push(item);
        open.cost = open.cost.add(cost);
        if open.items.len() >= policy.max_items {
            if let Some(o) = slot.take() {
                out.push(close(lane, o, CloseReason::Full));
            }
        }
        out
    }

    /// Batches whose wait is over at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Batch<T>> {
        let mut out = Vec::new();
        for lane in Lane::ALL {
            let wait = self.policies[lane.index()].max_wait;
            let slot = &mut self.open[lane.index()];
            if slot
                .as_ref()
                .is_some_and(|o| now.saturating_duration_since(o.opened_at) >= wait)
            {
                if let Some(o) = slot.take() {
                    out.push(close(lane, o, CloseReason::Timeout));
                }
            }
        }
        out
    }

    /// The earliest time a lane times out, if any lane is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        Lane::ALL
            .iter()
            .filter_map(|l| {
                self.open[l.index()]
                    .as_ref()
                    .map(|o| o.opened_at + self.policies[l.index()].max_wait)
            })
            .min()
    }

    /// Close every open batch.
    pub fn flush(&mut self) -> Vec<Batch<T>> {
        Lane::ALL
            .iter()
            .filter_map(|l| {
                self.open[l.index()]
                    .take()
                    .map(|o| close(*l, o, CloseReason::Flush))
            })
            .collect()
    }

    /// Items waiting in open batches.
    pub fn pending(&self) -> usize {
        self.open.iter().flatten().map(|o| o.items.len()).sum()
    }
}

fn close<T>(lane: Lane, o: Open<T>, reason: CloseReason) -> Batch<T> {
    Batch {
        lane,
        items: o.items,
        cost: o.cost,
        reason,
        opened_at: o.opened_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(max_items: usize, wait_ms: u64, max_pixels: u64, max_tokens: u64) -> LanePolicy {
        LanePolicy {
            max_items,
            max_wait: Duration::from_millis(wait_ms),
            max_pixels,
            max_tokens,
        }
    }

    #[test]
    fn lanes_fill_and_time_out_independently() {
        let t0 = Instant::now();
        let mut b = Batcher::new([
            policy(2, 10, u64::MAX, u64::MAX),
            policy(8, 50, u64::MAX, u64::MAX),
        ]);
        let c = Cost::default();
        assert!(b.push(Lane::Generate, "g1", c, t0).is_empty());
        assert!(b.push(Lane::Encode, "e1", c, t0).is_empty());
        let full = b.push(Lane::Encode, "e2", c, t0 + Duration::from_millis(1));
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].items, vec!["e1", "e2"]);
        assert_eq!(full[0].reason, CloseReason::Full);
        // The slow lane's wait is its own.
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(50)));
        assert!(b.poll(t0 + Duration::from_millis(49)).is_empty());
        let due = b.poll(t0 + Duration::from_millis(50));
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].lane, due[0].reason),
            (Lane::Generate, CloseReason::Timeout)
        );
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn budget_closes_before_overflow_and_oversized_items_run_alone() {
        let t0 = Instant::now();
        let mut b = Batcher::new([policy(10, 10, 100, 1000), policy(1, 1, 1, 1)]);
        let px = |p| Cost {
            pixels: p,
            tokens: 1,
        };
        assert!(b.push(Lane::Encode, 1, px(60), t0).is_empty());
        let out = b.push(Lane::Encode, 2, px(60), t0);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].items.clone(), out[0].reason),
            (vec![1], CloseReason::Budget)
        );
        let out = b.push(Lane::Encode, 3, px(500), t0);
        assert_eq!(out[0].items, vec![2]);
        let out = b.flush();
        assert_eq!(out[0].items, vec![3], "oversized item still runs, alone");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(bool, u64, u64, u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any::<bool>(), 0u64..300, 0u64..40, 0u64..5).prop_map(|(g, p, t, dt)| Op::Push(g, p, t, dt)),
            1 => (0u64..30).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Every item comes out exactly once, in arrival order within its lane; no batch
        /// breaks its limits unless it holds a single item; no batch leaves before its
        /// wait unless full or over budget; after a poll nothing has waited past max_wait.
        #[test]
        fn batches_conserve_order_and_respect_limits(
            ops in proptest::collection::vec(op(), 1..200),
            max_items in 1usize..6, wait in 1u64..20, max_px in 50u64..600, max_tok in 10u64..80,
        ) {
            let pol = policy(max_items, wait, max_px, max_tok);
            let mut b = Batcher::new([pol, pol]);
            let t0 = Instant::now();
            let mut now = t0;
            let mut next_id = 0u64;
            let mut sent: [Vec<u64>; 2] = [vec![], vec![]];
            let mut got: [Vec<u64>; 2] = [vec![], vec![]];
            let check = |batches: Vec<Batch<u64>>, now: Instant, got: &mut [Vec<u64>; 2]| -> Result<(), TestCaseError> {
                for bt in batches {
                    prop_assert!(!bt.items.is_empty());
                    prop_assert!(bt.items.len() <= max_items);
                    if bt.items.len() > 1 {
                        prop_assert!(bt.cost.pixels <= max_px && bt.cost.tokens <= max_tok);
                    }
                    if bt.reason == CloseReason::Timeout {
                        prop_assert!(now.duration_since(bt.opened_at) >= pol.max_wait);
                    }
                    got[bt.lane.index()].extend(bt.items);
                }
                Ok(())
            };
            for o in ops {
                match o {
                    Op::Push(g, p, t, dt) => {
                        now += Duration::from_millis(dt);
                        let due = b.poll(now);
                        check(due, now, &mut got)?;
                        let lane = if g { Lane::Generate } else { Lane::Encode };
                        sent[lane.index()].push(next_id);
                        let out = b.push(lane, next_id, Cost { pixels: p, tokens: t }, now);
                        check(out, now, &mut got)?;
                        next_id += 1;
                    }
                    Op::Advance(dt) => {
                        now += Duration::from_millis(dt);
                        let due = b.poll(now);
                        check(due, now, &mut got)?;
                        if let Some(d) = b.next_deadline() {
                            prop_assert!(d > now, "an overdue batch survived a poll");
                        }
                    }
                }
            }
            let rest = b.flush();
            check(rest, now, &mut got)?;
            prop_assert_eq!(b.pending(), 0);
            prop_assert_eq!(&got, &sent);
        }
    }
}
