//! The model thread's scheduler: which batch runs next, across the lanes and the priorities
//! (pure: the pipeline owns the clock and runs the model).
//!
//! Long because the rules, the argument that they never starve an item and the property
//! tests that check that argument read best side by side.
//!
//! The rules (also in `docs/architecture.md`, "Scheduling"):
//!
//! 1. **Urgency.** A queued item has a *level*: its event's [`Priority`] (high 0, normal 1,
//!    low 2), one less for every `aging` it has waited, and 0 once its event's deadline is
//!    nearer than its lane's latency target. It is *due* at its arrival plus its lane's latency
//!    target. Items compare by `(level, due)`: the lower level first, then the earlier due
//!    (within a lane: the older; across lanes, an embedding due before a caption goes first).
//! 2. **Work-conserving.** Asked when the model is free, the scheduler runs a batch at once if
//!    a lane is *ready*: it holds `max_items`, its queued items fill a pixel or token budget,
//!    it holds a level-0 item, or its oldest item has waited `max_wait` (the linger that lets a
//!    lightly loaded lane gather company). Otherwise it says when to ask again. A
//!    high-priority item never waits for a batch to form; under load the queue fills while
//!    the model is busy, so batches grow with the arrival rate × the batch time (continuous
//!    batching at the granularity of a batch).
//! 3. **Lane.** Among the ready lanes, the one whose most urgent item is the more urgent.
//! 4. **Fill.** That lane's items in urgency order, up to `max_items` and the budgets (an item
//!    over a whole budget runs alone), and — while the other lane has items waiting — no more
//!    than its measured time per item fits into half of the other lane's latency target (the
//!    *time slice*: an embedding does not wait behind a long generation batch). Items of every
//!    priority share a batch when there is room: that is throughput for free.
//! 5. **No starvation.** An item is at level 0 at the latest `2 × aging` after it arrived.
//!    From then on, every batch the scheduler starts without it holds an item before it in
//!    the urgency order, that is at level 0 and due earlier (proof: if its own lane runs, the
//!    fill takes items in urgency order; if the other lane runs, that lane's most urgent item
//!    beat it). Only items that arrived before it, or within the difference of the two
//!    lanes' targets after it, can be due earlier, so it runs within `2 × aging` plus one
//!    batch per such item. The property tests below check the invariant and the bound on
//!    random workloads.
//!
//! The time per item is what the caller reports with [`Scheduler::observe`] after each batch
//! (an exponentially weighted mean per lane); before the first report there is no slice.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::batch::{Cost, LanePolicy};
use crate::task::Lane;

/// How urgent an event is; events v1 carry it in `priority` (`"high"`, `"normal"`, `"low"`,
/// or the level `0`, `1`, `2`: lower is more urgent, as Triton's priority levels).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served first (a flagged upload, an interactive request).
    High,
    /// The default.
    #[default]
    Normal,
    /// Bulk work (backfills).
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The level: 0 (high) to 2 (low).
    pub fn level(self) -> u8 {
        self as u8
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The priority of a level (`0`–`2`).
    pub fn from_level(level: u64) -> Option<Priority> {
        Priority::ALL.get(usize::try_from(level).ok()?).copied()
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Priority::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown priority {s:?}: expected high, normal or low"))
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The priority of events that give none: per tenant, then per input topic, then the
/// source's default (a backfill's is `low`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorityDefaults {
    /// When nothing else applies.
    pub default: Priority,
    /// Per tenant.
    pub tenants: std::collections::BTreeMap<String, Priority>,
    /// Per input topic (the source's stream name).
    pub topics: std::collections::BTreeMap<String, Priority>,
}

impl PriorityDefaults {
    /// The priority of an event: its own, else its tenant's, else its topic's, else the
    /// default.
    pub fn resolve(&self, given: Option<Priority>, tenant: Option<&str>, topic: &str) -> Priority {
        given
            .or_else(|| tenant.and_then(|t| self.tenants.get(t).copied()))
            .or_else(|| self.topics.get(topic).copied())
            .unwrap_or(self.default)
    }
}

/// The read-ahead window by Little's law: events in flight = the model's capacity × the
/// latency wanted, within `[min, max]`. The capacity is the events finished per second of
/// model time (`finished_per_s / busy_fraction`), which a window too small to keep the model
/// busy does not hide. `None` while the model did nothing (nothing to learn from: keep the
/// window).
pub fn read_ahead(
    finished_per_s: f64,
    busy_fraction: f64,
    target: Duration,
    min: usize,
    max: usize,
) -> Option<usize> {
    if !(finished_per_s > 0.0 && busy_fraction > 0.0) {
        return None;
    }
    // A busy fraction under 5% is mostly noise; clamp so one odd sample cannot explode it.
    let capacity = finished_per_s / busy_fraction.clamp(0.05, 1.0);
    let w = (capacity * target.as_secs_f64()).ceil();
    Some((w.min(max as f64) as usize).clamp(min.min(max), max))
}

/// The scheduler's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulePolicy {
    /// `[encode, generate]` batch limits; `max_wait` is the linger of a lane that is not ready.
    pub lanes: [LanePolicy; 2],
    /// `[encode, generate]` latency targets: the time slice of the other lane, and how near
    /// an event's deadline makes its items urgent.
    pub latency_target: [Duration; 2],
    /// Waiting this long raises an item one level (> 0).
    pub aging: Duration,
}

/// Why the chosen lane was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ready {
    /// It held `max_items`.
    Full,
    /// Its queued items filled a budget.
    Budget,
    /// It held a level-0 item.
    Urgent,
    /// Its oldest item had waited `max_wait`.
    Waited,
    /// The input ended: everything runs.
    Drain,
}

impl Ready {
    /// Every reason, in metric order.
    pub const ALL: [Ready; 5] = [
        Ready::Full,
        Ready::Budget,
        Ready::Urgent,
        Ready::Waited,
        Ready::Drain,
    ];

    /// Lower-case name (a metric label).
    pub fn name(self) -> &'static str {
        match self {
            Ready::Full => "full",
            Ready::Budget => "budget",
            Ready::Urgent => "urgent",
            Ready::Waited => "waited",
            Ready::Drain => "drain",
        }
    }
}

/// A batch to run now.
#[derive(Debug)]
pub struct Scheduled<T> {
    /// The lane.
    pub lane: Lane,
    /// Items, most urgent first.
    pub items: Vec<T>,
    /// Their total cost.
    pub cost: Cost,
    /// Why the lane was ready.
    pub ready: Ready,
    /// Whether the time slice cut the batch short.
    pub sliced: bool,
}

/// What to do when the model is free.
#[derive(Debug)]
pub enum Next<T> {
    /// Run this batch.
    Run(Scheduled<T>),
    /// Nothing is ready: ask again at this instant, or when an item arrives.
    WaitUntil(Instant),
    /// Nothing is queued.
    Idle,
}

#[derive(Debug)]
struct Entry<T> {
    item: T,
    priority: Priority,
    cost: Cost,
    arrived: Instant,
    /// When its event's deadline makes it urgent.
    urgent_at: Option<Instant>,
    /// Arrival order (ties of `arrived`).
    seq: u64,
}

/// An item's place in the urgency order: level, due time, arrival sequence.
type Key = (u8, Instant, u64);

/// The scheduler: queued items per lane, and the measured time per item.
#[derive(Debug)]
pub struct Scheduler<T> {
    policy: SchedulePolicy,
    queues: [Vec<Entry<T>>; 2],
    per_item: [Option<Duration>; 2],
    seq: u64,
}

/// The level of an item at `now` (rule 1).
pub fn level(
    priority: Priority,
    arrived: Instant,
    urgent_at: Option<Instant>,
    aging: Duration,
    now: Instant,
) -> u8 {
    if urgent_at.is_some_and(|u| u <= now) {
        return 0;
    }
    let waited = now.saturating_duration_since(arrived).as_nanos();
    let steps = waited / aging.as_nanos().max(1);
    priority
        .level()
        .saturating_sub(u8::try_from(steps).unwrap_or(u8::MAX))
}

impl<T> Scheduler<T> {
    /// A scheduler with these settings (`max_items` at least 1, `aging` at least 1 ns).
    pub fn new(mut policy: SchedulePolicy) -> Self {
        for l in &mut policy.lanes {
            l.max_items = l.max_items.max(1);
        }
        policy.aging = policy.aging.max(Duration::from_nanos(1));
        Self {
            policy,
            queues: [Vec::new(), Vec::new()],
            per_item: [None, None],
            seq: 0,
        }
    }

    /// Queue an item. `deadline` is its event's deadline, if any.
    pub fn push(
        &mut self,
        lane: Lane,
        item: T,
        priority: Priority,
        cost: Cost,
        deadline: Option<Instant>,
        now: Instant,
    ) {
        let target = self.policy.latency_target[lane.index()];
        self.seq += 1;
        self.queues[lane.index()].push(Entry {
            item,
            priority,
            cost,
            arrived: now,
            urgent_at: deadline.map(|d| d.checked_sub(target).unwrap_or(d)),
            seq: self.seq,
        });
    }

    /// Items queued.
    pub fn pending(&self) -> usize {
        self.queues.iter().map(Vec::len).sum()
    }

    /// Items queued in `lane`.
    pub fn pending_in(&self, lane: Lane) -> usize {
        self.queues[lane.index()].len()
    }

    /// Report a batch the model ran: `items` items in `took`.
    pub fn observe(&mut self, lane: Lane, items: usize, took: Duration) {
        if items == 0 {
            return;
        }
        let x = took / u32::try_from(items).unwrap_or(u32::MAX);
        let m = &mut self.per_item[lane.index()];
        *m = Some(match *m {
            None => x,
            // Weight 1/4 for the newest batch.
            Some(m) => (m * 3 + x) / 4,
        });
    }

    /// The measured time per item of `lane`.
    pub fn per_item(&self, lane: Lane) -> Option<Duration> {
        self.per_item[lane.index()]
    }

    /// Urgency order (rule 1): level, then the arrival plus the lane's latency target (within
    /// a lane: arrival order; across lanes: earliest target first), then arrival order.
    fn key(&self, lane: Lane, e: &Entry<T>, now: Instant) -> Key {
        (
            level(e.priority, e.arrived, e.urgent_at, self.policy.aging, now),
            e.arrived + self.policy.latency_target[lane.index()],
            e.seq,
        )
    }

    /// The model is free: the batch to run now, or when to ask again. With `draining` every
    /// lane with items is ready.
    pub fn next(&mut self, now: Instant, draining: bool) -> Next<T> {
        let mut best: Option<(Lane, Ready, Key)> = None;
        let mut wake: Option<Instant> = None;
        for lane in Lane::ALL {
            let q = &self.queues[lane.index()];
            let Some(head) = q.iter().map(|e| self.key(lane, e, now)).min() else {
                continue;
            };
            let p = self.policy.lanes[lane.index()];
            let oldest = q.iter().map(|e| e.arrived).min().unwrap_or(now);
            let total = q.iter().fold(Cost::default(), |c, e| Cost {
                pixels: c.pixels + e.cost.pixels,
                tokens: c.tokens + e.cost.tokens,
            });
            let ready = if draining {
                Some(Ready::Drain)
            } else if q.len() >= p.max_items {
                Some(Ready::Full)
            } else if total.pixels >= p.max_pixels || total.tokens >= p.max_tokens {
                Some(Ready::Budget)
            } else if head.0 == 0 {
                Some(Ready::Urgent)
            } else if now.saturating_duration_since(oldest) >= p.max_wait {
                Some(Ready::Waited)
            } else {
                None
            };
            match ready {
                Some(r) => {
                    if best.as_ref().is_none_or(|(_, _, k)| head < *k) {
                        best = Some((lane, r, head));
                    }
                }
                None => {
                    // It becomes ready when its oldest item has lingered, or when an item
                    // ages or turns urgent.
                    let mut t = oldest + p.max_wait;
                    for e in q {
                        if let Some(u) = e.urgent_at {
                            t = t.min(u);
                        }
                        let lvl = self.key(lane, e, now).0;
                        if lvl > 0 {
                            let steps = (now.saturating_duration_since(e.arrived).as_nanos()
                                / self.policy.aging.as_nanos())
                                as u32;
                            t = t.min(e.arrived + self.policy.aging * (steps + 1));
                        }
                    }
                    wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
                }
            }
        }
        let Some((lane, ready, _)) = best else {
            return match wake {
                Some(t) => Next::WaitUntil(t),
                None => Next::Idle,
            };
        };
        Next::Run(self.take(lane, ready, now))
    }

    /// Fill a batch from `lane` (rule 4).
    fn take(&mut self, lane: Lane, ready: Ready, now: Instant) -> Scheduled<T> {
        let p = self.policy.lanes[lane.index()];
        let other = match lane {
            Lane::Encode => Lane::Generate,
            Lane::Generate => Lane::Encode,
        };
        let mut limit = p.max_items;
        let mut slice_limit = usize::MAX;
        if !self.queues[other.index()].is_empty() {
            if let Some(per) = self.per_item[lane.index()].filter(|d| !d.is_zero()) {
                let slice = self.policy.latency_target[other.index()] / 2;
                let n = (slice.as_nanos() / per.as_nanos()).max(1);
                slice_limit = usize::try_from(n).unwrap_or(usize::MAX);
                limit = limit.min(slice_limit);
            }
        }
        let mut order: Vec<(usize, Key)> = self.queues[lane.index()]
            .iter()
            .enumerate()
            .map(|(i, e)| (i, self.key(lane, e, now)))
            .collect();
        order.sort_by_key(|(_, k)| *k);
        let q = &self.queues[lane.index()];
        let mut chosen = Vec::new();
        let mut cost = Cost::default();
        for (i, _) in &order {
            if chosen.len() >= limit {
                break;
            }
            let c = q[*i].cost;
            let next = Cost {
                pixels: cost.pixels + c.pixels,
                tokens: cost.tokens + c.tokens,
            };
            if !chosen.is_empty() && (next.pixels > p.max_pixels || next.tokens > p.max_tokens) {
                break;
            }
            chosen.push(*i);
            cost = next;
        }
        let sliced = chosen.len() == slice_limit && slice_limit < p.max_items.min(q.len());
        // Take the chosen entries out, keeping the rest in arrival order.
        let mut marks = vec![false; q.len()];
        for i in &chosen {
            marks[*i] = true;
        }
        let queue = std::mem::take(&mut self.queues[lane.index()]);
        let mut picked: Vec<Option<Entry<T>>> = Vec::new();
        picked.resize_with(queue.len(), || None);
        for (i, e) in queue.into_iter().enumerate() {
            if marks[i] {
                picked[i] = Some(e);
            } else {
                self.queues[lane.index()].push(e);
            }
        }
        let items = chosen
            .iter()
            .filter_map(|i| picked[*i].take().map(|e| e.item))
            .collect();
        Scheduled {
            lane,
            items,
            cost,
            ready,
            sliced,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn lane_policy(max_items: usize, wait_ms: u64) -> LanePolicy {
        LanePolicy {
            max_items,
            max_wait: Duration::from_millis(wait_ms),
            max_pixels: 1000,
            max_tokens: 1000,
        }
    }

    fn policy(max_items: usize, wait_ms: u64, aging_ms: u64) -> SchedulePolicy {
        SchedulePolicy {
            lanes: [
                lane_policy(max_items, wait_ms),
                lane_policy(max_items, wait_ms),
            ],
            latency_target: [Duration::from_millis(100), Duration::from_millis(400)],
            aging: Duration::from_millis(aging_ms),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn run<T: std::fmt::Debug>(n: Next<T>) -> Scheduled<T> {
        match n {
            Next::Run(b) => b,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn priorities_parse_from_names_and_levels() {
        assert_eq!("high".parse::<Priority>(), Ok(Priority::High));
        assert!("urgent".parse::<Priority>().is_err());
        assert_eq!(Priority::from_level(2), Some(Priority::Low));
        assert_eq!(Priority::from_level(3), None);
        assert!(Priority::High < Priority::Low);
    }

    #[test]
    fn the_read_ahead_follows_capacity_times_target() {
        let t = ms(250);
        // 100 events/s with the model busy a third of the time: capacity 300/s → 75.
        assert_eq!(read_ahead(100.0, 1.0 / 3.0, t, 8, 256), Some(75));
        assert_eq!(read_ahead(10_000.0, 1.0, t, 8, 256), Some(256));
        assert_eq!(read_ahead(4.0, 1.0, t, 8, 256), Some(8));
        assert_eq!(read_ahead(0.0, 0.0, t, 8, 256), None);
        assert_eq!(read_ahead(f64::NAN, 1.0, t, 8, 256), None);
    }

    #[test]
    fn an_events_own_priority_wins_then_tenant_then_topic() {
        let d = PriorityDefaults {
            default: Priority::Low,
            tenants: [("t".to_owned(), Priority::High)].into(),
            topics: [("flagged".to_owned(), Priority::Normal)].into(),
        };
        assert_eq!(
            d.resolve(Some(Priority::Low), Some("t"), "flagged"),
            Priority::Low
        );
        assert_eq!(d.resolve(None, Some("t"), "flagged"), Priority::High);
        assert_eq!(d.resolve(None, Some("u"), "flagged"), Priority::Normal);
        assert_eq!(d.resolve(None, None, "bulk"), Priority::Low);
    }

    #[test]
    fn a_high_item_runs_at_once_and_first() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(policy(8, 50, 1000));
        let c = Cost::default();
        s.push(Lane::Encode, "n1", Priority::Normal, c, None, t0);
        s.push(Lane::Encode, "l1", Priority::Low, c, None, t0);
        // Nothing urgent, nothing full: linger until the oldest has waited 50 ms.
        match s.next(t0 + ms(1), false) {
            Next::WaitUntil(t) => assert_eq!(t, t0 + ms(50)),
            other => panic!("{other:?}"),
        }
        s.push(Lane::Encode, "h1", Priority::High, c, None, t0 + ms(2));
        let b = run(s.next(t0 + ms(2), false));
        assert_eq!(b.ready, Ready::Urgent);
        // Most urgent first; the others share the batch.
        assert_eq!(b.items, vec!["h1", "n1", "l1"]);
        assert!(matches!(s.next(t0 + ms(3), false), Next::Idle));
    }

    #[test]
    fn the_lane_with_the_more_urgent_item_goes_first() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(policy(2, 10, 1000));
        let c = Cost::default();
        s.push(Lane::Generate, "g1", Priority::Normal, c, None, t0);
        s.push(Lane::Generate, "g2", Priority::Normal, c, None, t0);
        s.push(Lane::Encode, "e1", Priority::Low, c, None, t0 + ms(1));
        s.push(Lane::Encode, "e2", Priority::Low, c, None, t0 + ms(2));
        // Both full; the captions are normal, the embeddings low.
        assert_eq!(run(s.next(t0 + ms(3), false)).lane, Lane::Generate);
        s.push(Lane::Generate, "g3", Priority::Normal, c, None, t0 + ms(3));
        s.push(Lane::Generate, "g4", Priority::Normal, c, None, t0 + ms(3));
        s.push(Lane::Encode, "e3", Priority::High, c, None, t0 + ms(4));
        let b = run(s.next(t0 + ms(4), false));
        assert_eq!((b.lane, b.items), (Lane::Encode, vec!["e3", "e1"]));
        // Same level: the earlier due goes first (encode target 100 ms, generate 400 ms).
        s.push(Lane::Encode, "e4", Priority::Normal, c, None, t0 + ms(200));
        s.push(Lane::Encode, "e5", Priority::Normal, c, None, t0 + ms(200));
        let b = run(s.next(t0 + ms(200), false));
        assert_eq!((b.lane, b.items), (Lane::Encode, vec!["e4", "e5"]));
    }

    #[test]
    fn low_items_age_into_urgency() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(policy(4, 10_000, 100));
        s.push(Lane::Encode, 1, Priority::Low, Cost::default(), None, t0);
        assert_eq!(level(Priority::Low, t0, None, ms(100), t0 + ms(150)), 1);
        match s.next(t0 + ms(150), false) {
            Next::WaitUntil(t) => assert_eq!(t, t0 + ms(200), "the next aging step"),
            other => panic!("{other:?}"),
        }
        assert_eq!(run(s.next(t0 + ms(200), false)).ready, Ready::Urgent);
    }

    #[test]
    fn a_near_deadline_is_urgent() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(policy(4, 10_000, 10_000));
        // Encode target 100 ms: a deadline 300 ms out is urgent from 200 ms on.
        s.push(
            Lane::Encode,
            1,
            Priority::Low,
            Cost::default(),
            Some(t0 + ms(300)),
            t0,
        );
        match s.next(t0 + ms(10), false) {
            Next::WaitUntil(t) => assert_eq!(t, t0 + ms(200)),
            other => panic!("{other:?}"),
        }
        assert_eq!(run(s.next(t0 + ms(200), false)).ready, Ready::Urgent);
    }

    #[test]
    fn generation_is_sliced_while_embeddings_wait() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(policy(32, 0, 1000));
        // 10 ms per caption; the encode target is 100 ms: 5 captions fit in half of it.
        s.observe(Lane::Generate, 4, ms(40));
        let c = Cost::default();
        for i in 0..20 {
            s.push(Lane::Generate, i, Priority::Normal, c, None, t0);
        }
        // Due at 450 ms, after the captions (due at 400 ms: the generate target).
        s.push(Lane::Encode, 100, Priority::Normal, c, None, t0 + ms(350));
        let b = run(s.next(t0 + ms(350), false));
        assert_eq!((b.lane, b.items.len(), b.sliced), (Lane::Generate, 5, true));
        // The captions are still due first, in slices, then the embedding.
        for _ in 0..3 {
            let b = run(s.next(t0 + ms(400), false));
            assert_eq!((b.lane, b.items.len()), (Lane::Generate, 5));
        }
        assert_eq!(run(s.next(t0 + ms(400), false)).lane, Lane::Encode);
        // Alone, generation takes a whole batch.
        for i in 0..20 {
            s.push(Lane::Generate, i, Priority::Normal, c, None, t0 + ms(400));
        }
        let b = run(s.next(t0 + ms(400), false));
        assert_eq!((b.items.len(), b.sliced), (20, false));
    }

    #[test]
    fn budgets_cut_batches_and_an_oversized_item_runs_alone() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(policy(8, 0, 1000));
        let px = |p| Cost {
            pixels: p,
            tokens: 0,
        };
        s.push(Lane::Encode, 1, Priority::Normal, px(600), None, t0);
        s.push(Lane::Encode, 2, Priority::Normal, px(600), None, t0);
        s.push(Lane::Encode, 3, Priority::Normal, px(5000), None, t0);
        let b = run(s.next(t0, false));
        assert_eq!((b.items, b.ready), (vec![1], Ready::Budget));
        assert_eq!(run(s.next(t0, false)).items, vec![2]);
        assert_eq!(run(s.next(t0, false)).items, vec![3]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// lane, priority, pixels, deadline in ms from now, ms since the last op
        Push(bool, u8, u64, Option<u64>, u64),
        /// The model is free: run what is next; the batch takes this many ms.
        Free(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any::<bool>(), 0u8..3, 0u64..400, proptest::option::weighted(0.2, 0u64..500), 0u64..20)
                .prop_map(|(g, p, px, d, dt)| Op::Push(g, p, px, d, dt)),
            2 => (0u64..80).prop_map(Op::Free),
        ]
    }

    struct Item {
        lane: Lane,
        priority: Priority,
        arrived: Instant,
        urgent_at: Option<Instant>,
    }

    proptest! {
        /// Every item runs exactly once; batches keep their limits; the scheduler never
        /// idles while a lane is ready; and the no-starvation invariant of rule 5: a batch
        /// started while a queued item not in it is at level 0 holds an item that arrived
        /// before that one.
        #[test]
        fn scheduling_conserves_items_and_never_starves(
            ops in proptest::collection::vec(op(), 1..250),
            max_items in 1usize..6, wait in 0u64..30, aging in 1u64..200,
            per_item_ms in proptest::option::of(1u64..30),
        ) {
            let pol = SchedulePolicy {
                lanes: [lane_policy(max_items, wait), lane_policy(max_items, wait)],
                latency_target: [ms(50), ms(200)],
                aging: ms(aging),
            };
            let mut s = Scheduler::new(pol);
            if let Some(p) = per_item_ms {
                s.observe(Lane::Generate, 1, ms(p));
                s.observe(Lane::Encode, 1, ms(p));
            }
            let t0 = Instant::now();
            let mut now = t0;
            let mut items: BTreeMap<u64, Item> = BTreeMap::new();
            let mut queued: std::collections::BTreeSet<u64> = Default::default();
            let mut ran: Vec<u64> = Vec::new();
            let mut next_id = 0u64;
            let check = |b: Scheduled<u64>, now: Instant, queued: &mut std::collections::BTreeSet<u64>,
                             items: &BTreeMap<u64, Item>, ran: &mut Vec<u64>| -> Result<(), TestCaseError> {
                prop_assert!(!b.items.is_empty());
                prop_assert!(b.items.len() <= max_items);
                if b.items.len() > 1 {
                    prop_assert!(b.cost.pixels <= 1000);
                }
                for id in &b.items {
                    prop_assert!(queued.remove(id), "item {} ran twice or was never queued", id);
                    prop_assert_eq!(items[id].lane, b.lane);
                }
                // Rule 5: every waiting level-0 item has an item due before it in this batch.
                let due = |id: &u64| {
                    let it = &items[id];
                    (it.arrived + pol.latency_target[it.lane.index()], *id)
                };
                for w in queued.iter() {
                    let it = &items[w];
                    if level(it.priority, it.arrived, it.urgent_at, pol.aging, now) == 0 {
                        prop_assert!(
                            b.items.iter().any(|id| due(id) < due(w)),
                            "item {} at level 0 was passed over by a batch of items due later {:?}", w, b.items
                        );
                    }
                }
                ran.extend(b.items);
                Ok(())
            };
            for o in ops {
                match o {
                    Op::Push(g, p, px, d, dt) => {
                        now += ms(dt);
                        let lane = if g { Lane::Generate } else { Lane::Encode };
                        let priority = Priority::from_level(u64::from(p)).unwrap();
                        let deadline = d.map(|d| now + ms(d));
                        let target = pol.latency_target[lane.index()];
                        items.insert(next_id, Item {
                            lane, priority, arrived: now,
                            urgent_at: deadline.map(|d| d.checked_sub(target).unwrap_or(d)),
                        });
                        queued.insert(next_id);
                        s.push(lane, next_id, priority, Cost { pixels: px, tokens: 1 }, deadline, now);
                        next_id += 1;
                    }
                    Op::Free(took) => match s.next(now, false) {
                        Next::Run(b) => {
                            let n = b.items.len();
                            let lane = b.lane;
                            check(b, now, &mut queued, &items, &mut ran)?;
                            now += ms(took);
                            s.observe(lane, n, ms(took));
                        }
                        Next::WaitUntil(t) => {
                            prop_assert!(t > now);
                            // Work-conserving: nothing queued is urgent or has lingered.
                            for w in &queued {
                                let it = &items[w];
                                prop_assert!(level(it.priority, it.arrived, it.urgent_at, pol.aging, now) > 0);
                                prop_assert!(now.duration_since(it.arrived) < ms(wait));
                            }
                            now = t;
                        }
                        Next::Idle => prop_assert!(queued.is_empty()),
                    },
                }
                prop_assert_eq!(s.pending(), queued.len());
            }
            loop {
                match s.next(now, true) {
                    Next::Run(b) => check(b, now, &mut queued, &items, &mut ran)?,
                    Next::Idle => break,
                    Next::WaitUntil(_) => prop_assert!(false, "draining never waits"),
                }
            }
            prop_assert!(queued.is_empty());
            ran.sort_unstable();
            prop_assert_eq!(ran, (0..next_id).collect::<Vec<_>>());
        }

        /// An item waits at most 2 × aging plus one batch per item that can be due before it
        /// (at most all of them) plus the linger: the bound of rule 5, on a model asked again
        /// as soon as each batch ends while items keep arriving.
        #[test]
        fn every_item_runs_within_the_starvation_bound(
            arrivals in proptest::collection::vec((any::<bool>(), 0u8..3, 0u64..5), 1..120),
            max_items in 1usize..4, aging in 1u64..100, batch_ms in 1u64..20,
        ) {
            let pol = policy(max_items, 5, aging);
            let mut s = Scheduler::new(pol);
            let t0 = Instant::now();
            let mut at = t0;
            let mut pending: std::collections::VecDeque<(usize, Instant, Lane, Priority)> = arrivals
                .iter()
                .enumerate()
                .map(|(id, (g, p, dt))| {
                    at += ms(*dt);
                    let lane = if *g { Lane::Generate } else { Lane::Encode };
                    (id, at, lane, Priority::from_level(u64::from(*p)).unwrap())
                })
                .collect();
            let mut arrived_at = BTreeMap::new();
            let bound = ms(2 * aging) + ms(batch_ms) * (arrivals.len() as u32 + 1) + ms(5);
            let mut now = t0;
            let mut served = 0;
            while served < arrivals.len() {
                while pending.front().is_some_and(|(_, t, _, _)| *t <= now) {
                    let (id, t, lane, p) = pending.pop_front().unwrap();
                    s.push(lane, id, p, Cost::default(), None, t);
                    arrived_at.insert(id, t);
                }
                let next_arrival = pending.front().map(|(_, t, _, _)| *t);
                match s.next(now, false) {
                    Next::Run(b) => {
                        for id in &b.items {
                            prop_assert!(now.duration_since(arrived_at[id]) <= bound);
                        }
                        served += b.items.len();
                        now += ms(batch_ms);
                    }
                    Next::WaitUntil(t) => now = next_arrival.map_or(t, |a| a.min(t)),
                    Next::Idle => now = next_arrival.expect("items left to arrive"),
                }
            }
        }
    }
}
