//! The pipeline's settings, taken from a validated configuration.

use std::time::Duration;

use fusionstream_core::backoff::Backoff;
use fusionstream_core::batch::LanePolicy;
use fusionstream_core::crash_guard::GuardSettings;
use fusionstream_core::degrade::Policy;
use fusionstream_core::event::EventLimits;
use fusionstream_core::schedule::{PriorityDefaults, SchedulePolicy};

use super::faults;
use crate::config::{Config, LaneConfig, SchedulerMode, SourceKind};

/// Pipeline settings, from the configuration.
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
    /// Drain budget at shutdown.
    pub drain_timeout: Duration,
    /// The crash-loop guard, when on.
    pub crash_guard: Option<GuardSettings>,
    /// Moderation policies, when the worker serves `moderate`.
    pub moderation: Option<std::sync::Arc<fusionstream_core::moderation::Policies>>,
    /// Add `moderate` to events that name no tasks.
    pub moderate_unnamed: bool,
    /// Known-hash lists `moderate` matches images against (loaded by the app; none here).
    pub lists: Option<std::sync::Arc<super::lists::KnownLists>>,
    /// Test-only fault injection ([`faults`]): `FUSIONSTREAM_TEST_FAULTS=1`.
    pub test_faults: bool,
}

fn lane(c: &LaneConfig) -> LanePolicy {
    LanePolicy {
        max_items: c.max_items,
        max_wait: c.max_wait,
        max_pixels: c.max_pixels,
        max_tokens: c.max_tokens,
    }
}

impl Settings {
    /// From a validated configuration.
    pub fn from_config(c: &Config) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            limits: EventLimits {
                max_event_bytes: c.source.max_event_bytes,
                max_text_bytes: c.events.max_text_bytes,
                max_question_bytes: c.events.max_question_bytes,
                max_inline_image_bytes: c.events.max_inline_image_bytes,
            },
            max_dead_letter_payload: c.sink.max_dead_letter_payload_bytes,
            fetch_concurrency: c.media.concurrency,
            max_image_bytes: c.media.max_bytes,
            max_image_pixels: c.image.max_pixels,
            fetch_timeout: c.media.timeout,
            fetch_backoff: Backoff {
                initial: c.media.backoff_initial,
                max: c.media.backoff_max,
                retries: c.media.retries,
            },
            preprocess_threads: if c.preprocess.threads == 0 {
                cores
            } else {
                c.preprocess.threads
            },
            lanes: [lane(&c.encode_lane), lane(&c.generate_lane)],
            max_in_flight: c.pipeline.max_in_flight,
            min_in_flight: c.pipeline.min_in_flight.min(c.pipeline.max_in_flight),
            latency_target: c.pipeline.latency_target,
            scheduler: (c.scheduler.mode == SchedulerMode::Priority).then(|| SchedulePolicy {
                lanes: [lane(&c.encode_lane), lane(&c.generate_lane)],
                latency_target: [c.encode_lane.latency_target, c.generate_lane.latency_target],
                aging: c.scheduler.aging,
            }),
            priorities: PriorityDefaults {
                default: if c.source.kind == SourceKind::Backfill {
                    c.backfill.priority
                } else {
                    c.scheduler.default_priority
                },
                tenants: c.scheduler.tenants.clone(),
                topics: c.scheduler.topics.clone(),
            },
            channel_capacity: c.pipeline.channel_capacity,
            model_queue: c.model.queue,
            enforce_deadlines: c.pipeline.enforce_deadlines,
            policy: Policy {
                on_image_failure: c.degradation.on_image_failure,
                tenants: c.degradation.tenants.clone(),
            },
            commit_interval: c.checkpoint.interval,
            commit_timeout: c.checkpoint.commit_timeout,
            drain_timeout: c.shutdown.drain_timeout,
            crash_guard: c.crash_guard.enabled.then(|| GuardSettings {
                suspect_events: match c.crash_guard.suspect_events {
                    0 => u32::try_from(c.pipeline.max_in_flight).unwrap_or(u32::MAX),
                    n => n,
                },
                max_attempts: c.crash_guard.max_attempts,
            }),
            moderation: if c.moderation.enabled {
                // Validated with the configuration.
                c.moderation.policies().ok().map(std::sync::Arc::new)
            } else {
                None
            },
            moderate_unnamed: c.moderation.enabled && c.moderation.moderate_unnamed,
            lists: None,
            test_faults: faults::from_env(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusionstream_core::Priority;

    #[test]
    fn backfill_events_default_to_low_and_fifo_turns_the_scheduler_off() {
        let mut c = Config::load(&[], Vec::new()).expect("defaults");
        let s = Settings::from_config(&c);
        assert_eq!(s.priorities.default, Priority::Normal);
        assert!(s.scheduler.is_some());
        c.source.kind = SourceKind::Backfill;
        c.scheduler.mode = SchedulerMode::Fifo;
        c.pipeline.min_in_flight = 1000;
        let s = Settings::from_config(&c);
        assert_eq!(s.priorities.default, Priority::Low);
        assert!(s.scheduler.is_none());
        assert_eq!(
            s.min_in_flight, s.max_in_flight,
            "the floor is at most the bound"
        );
    }
}
