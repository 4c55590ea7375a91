//! The engine's settings: what it needs to know of the worker's configuration, as plain
//! values (the binary's `app` builds them from its validated `Config`).

use std::time::Duration;

use fusionstream_core::backoff::Backoff;
use fusionstream_core::batch::LanePolicy;
use fusionstream_core::crash_guard::GuardSettings;
use fusionstream_core::degrade::Policy;
use fusionstream_core::event::EventLimits;
use fusionstream_core::schedule::{PriorityDefaults, SchedulePolicy};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Event limits.
    pub limits: EventLimits,
    /// Largest payload kept in a dead letter.
    pub max_dead_letter_payload: usize,
    /// Fetches in flight (and encoded images held until decoded).
    pub fetch_concurrency: usize,
    /// Largest image fetched (`media.max_bytes`).
    pub max_image_bytes: u64,
    /// Largest image decoded (`image.max_pixels`).
    pub max_image_pixels: u64,
    /// Per-attempt fetch timeout.
    pub fetch_timeout: Duration,
    /// Fetch retries.
    pub fetch_backoff: Backoff,
    /// Preprocessing threads.
    pub preprocess_threads: usize,
    /// `[encode, generate]` lane limits.
    pub lanes: [LanePolicy; 2],
    /// Events in flight, at most.
    pub max_in_flight: usize,
    /// Events in flight, at least (the adaptive read-ahead's floor; = max: fixed).
    pub min_in_flight: usize,
    /// Read-to-acknowledged time the adaptive read-ahead is sized for.
    pub latency_target: std::time::Duration,
    /// The `priority` scheduler's settings; `None`: `fifo`.
    pub scheduler: Option<SchedulePolicy>,
    /// Priorities of events that give none.
    pub priorities: PriorityDefaults,
    /// Channel capacity.
    pub channel_capacity: usize,
    /// Batches waiting for the model.
    pub model_queue: usize,
    /// Dead-letter events past their deadline.
    pub enforce_deadlines: bool,
    /// Degradation policy.
    pub policy: Policy,
    /// How often positions are committed.
    pub commit_interval: Duration,
    /// How long the last commit at shutdown may keep trying for a confirmation.
    pub commit_timeout: Duration,
    /// Exactly-once transactions' timing (used when the sink is transactional).
    pub transactions: TransactionTiming,
    /// Drain budget at shutdown.
    pub drain_timeout: Duration,
    /// The crash-loop guard, when on.
    pub crash_guard: Option<GuardSettings>,
    /// Moderation policies, when the worker serves `moderate`.
    pub moderation: Option<std::sync::Arc<fusionstream_core::moderation::Policies>>,
    /// Add `moderate` to events that name no tasks.
    pub moderate_unnamed: bool,
    /// Known-hash lists `moderate` matches images against (loaded by the app; none here).
    pub lists: Option<std::sync::Arc<super::known_lists::KnownLists>>,
    /// Test-only fault injection ([`super::faults`]): `FUSIONSTREAM_TEST_FAULTS=1`.
    pub test_faults: bool,
}

/// When an exactly-once sink's transactions commit.
#[derive(Debug, Clone, Copy)]
pub struct TransactionTiming {
    /// Between commits (`kafka.transaction_interval`).
    pub interval: Duration,
    /// Commit early once this many events wait in the open transaction.
    pub max_events: usize,
    /// Bound on one transactional call, retries included (below `max.poll.interval.ms`).
    pub call_timeout: Duration,
}

impl Default for TransactionTiming {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            max_events: 1000,
            call_timeout: Duration::from_secs(30),
        }
    }
}
