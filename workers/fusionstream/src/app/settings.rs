//! The engine's settings from the worker's configuration: which limits, lanes, scheduler,
//! commit timing and policies the engine runs with.

use fusionstream_core::backoff::Backoff;
use fusionstream_core::batch::LanePolicy;
use fusionstream_core::crash_guard::GuardSettings;
use fusionstream_core::degrade::Policy;
use fusionstream_core::event::EventLimits;
use fusionstream_core::schedule::{PriorityDefaults, SchedulePolicy};

use crate::config::{Config, LaneConfig, SchedulerMode, SinkKind, SourceKind};
use fusionstream_engine::{faults, Settings, TransactionTiming};

fn lane(c: &LaneConfig) -> LanePolicy {
    LanePolicy {
        max_items: c.max_items,
        max_wait: c.max_wait,
        max_pixels: c.max_pixels,
        max_tokens: c.max_tokens,
    }
}

/// The engine's settings from a validated configuration. Long because it is one struct
/// literal, field by field from the sections it reads.
pub fn engine_settings(c: &Config) -> Settings {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Settings {
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
        transactions: if c.sink.kind == SinkKind::Lake {
            TransactionTiming {
                interval: c.lake.commit_interval,
                max_events: c.lake.commit_max_events,
                ..TransactionTiming::default()
            }
        } else {
            TransactionTiming {
                interval: c.kafka.transaction_interval,
                max_events: c.kafka.transaction_max_events,
                ..TransactionTiming::default()
            }
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use fusionstream_core::Priority;

    #[test]
    fn backfill_events_default_to_low_and_fifo_turns_the_scheduler_off() {
        let mut c = Config::load(&[], Vec::new()).expect("defaults");
        let s = engine_settings(&c);
        assert_eq!(s.priorities.default, Priority::Normal);
        assert!(s.scheduler.is_some());
        c.source.kind = SourceKind::Backfill;
        c.scheduler.mode = SchedulerMode::Fifo;
        c.pipeline.min_in_flight = 1000;
        let s = engine_settings(&c);
        assert_eq!(s.priorities.default, Priority::Low);
        assert!(s.scheduler.is_none());
        assert_eq!(
            s.min_in_flight, s.max_in_flight,
            "the floor is at most the bound"
        );
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_memory_bound_adds_every_term_and_grows_with_each_limit() {
        use fusionstream_engine::memory::{rss, MemoryBound, SourceBuffers};
        let c = Config::load(&[], Vec::new()).unwrap();
        let s = engine_settings(&c);
        let b = MemoryBound::new(&s, SourceBuffers::Kafka, 400 << 20, 1 << 20, 0);
        assert_eq!(b.total(), b.terms.iter().map(|t| t.1).sum::<u64>());
        assert_eq!(b.terms[0].1, 600 << 20);
        let mut more = s.clone();
        more.max_in_flight *= 2;
        let b2 = MemoryBound::new(&more, SourceBuffers::Kafka, 400 << 20, 1 << 20, 0);
        assert_eq!(b2.terms[2].1, 2 * b.terms[2].1);
        let local = MemoryBound::new(&s, SourceBuffers::Local, 400 << 20, 1 << 20, 0);
        let ocr = MemoryBound::new(&s, SourceBuffers::Local, 400 << 20, 1 << 20, 700 << 20);
        assert_eq!(ocr.total(), local.total() + (700 << 20));
        assert!(local.total() < b.total());
        assert!(
            b.describe().contains("events in flight"),
            "{}",
            b.describe()
        );
        let (now, peak) = rss().unwrap();
        assert!(now > 0 && peak >= now);
    }
}
