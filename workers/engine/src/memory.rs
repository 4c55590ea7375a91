//! The worker's memory bound, derived from its configuration: what each bounded hop of the
//! pipeline can hold at most, added up over the limits (in flight × per-event limits), on
//! top of what the process holds once its model is loaded.
//!
//! | term | what | at most |
//! |---|---|---|
//! | model | the process after loading the bundle (measured at start), plus an allowance for the forward passes' working memory | RSS at start × 1.5 |
//! | events in flight | each event's payload (kept for its dead letter), its decoded inline image, its preprocessed pixels, its output records | `pipeline.max_in_flight` × (`source.max_event_bytes` + `events.max_inline_image_bytes` + the bundle's prepared-image bytes + 64 KiB) |
//! | encoded images | fetched and waiting for (or in) decoding: a slot of `media.concurrency` is held from the fetch until the decode ends | `media.concurrency` × `media.max_bytes` |
//! | decoding | per preprocessing thread, the decoded image and its RGB copy | `preprocess.threads` × `image.max_pixels` × 7 bytes |
//! | source buffers | Kafka: librdkafka's pre-fetch queue (16 MiB) and one fetch response (`fetch.max.bytes`, 50 MiB); local: one line | 66 MiB, or `source.max_event_bytes` |
//!
//! Every term is a worst case at the same time, so the bound is generous: a CI test floods a
//! worker with maximum-size events and images and asserts its peak RSS stays under it
//! (`tests/memory.rs`), and the chaos soak reports the peak beside it.

use super::Settings;

/// Output records of one event (embeddings as JSON, captions, tags): an allowance.
const OUTPUTS_PER_EVENT: u64 = 64 << 10;
/// librdkafka's pre-fetch queue (`queued.max.messages.kbytes`, set by the Kafka source).
const KAFKA_QUEUE: u64 = 16 << 20;
/// One fetch response (`fetch.max.bytes`, librdkafka's default).
const KAFKA_FETCH: u64 = 50 << 20;

/// Where the source reads from (its buffers differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceBuffers {
    /// A Kafka consumer.
    Kafka,
    /// A local file or a backfill listing.
    Local,
}

/// The bound, term by term (bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBound {
    /// `(term, bytes)` in the order of the table above.
    pub terms: Vec<(&'static str, u64)>,
}

impl MemoryBound {
    /// The bound for a worker with these settings whose process held `rss_at_start` bytes
    /// once its model was loaded; `prepared_image_bytes` from the model.
    pub fn new(
        s: &Settings,
        source: SourceBuffers,
        rss_at_start: u64,
        prepared_image_bytes: u64,
        activations: u64,
    ) -> Self {
        let l = &s.limits;
        let per_event = l.max_event_bytes as u64
            + l.max_inline_image_bytes as u64
            + prepared_image_bytes
            + OUTPUTS_PER_EVENT;
        let terms = vec![
            ("model", rss_at_start.saturating_mul(3) / 2),
            // What the model's runtime allocates for its largest input beyond the weights
            // measured at start (the OCR detector's activations: its inputs vary in size).
            ("model activations", activations),
            (
                "events in flight",
                (s.max_in_flight as u64).saturating_mul(per_event),
            ),
            (
                "encoded images",
                (s.fetch_concurrency as u64).saturating_mul(s.max_image_bytes),
            ),
            (
                "decoding",
                (s.preprocess_threads as u64)
                    .saturating_mul(s.max_image_pixels)
                    .saturating_mul(7),
            ),
            (
                "source buffers",
                match source {
                    SourceBuffers::Kafka => KAFKA_QUEUE + KAFKA_FETCH,
                    SourceBuffers::Local => l.max_event_bytes as u64,
                },
            ),
        ];
        Self { terms }
    }

    /// The whole bound.
    pub fn total(&self) -> u64 {
        self.terms.iter().map(|(_, b)| *b).sum()
    }

    /// `total MiB (term MiB, …)` for a log line.
    pub fn describe(&self) -> String {
        let mib = |b: u64| b / (1 << 20);
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|(t, b)| format!("{t} {} MiB", mib(*b)))
            .collect();
        format!("{} MiB ({})", mib(self.total()), terms.join(", "))
    }
}

/// The process's resident set now and its peak so far (bytes; Linux `/proc/self/status`),
/// `None` elsewhere.
pub fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
