//! The messages an event travels in between the stages, defined apart from the stages that
//! build and read them (intake builds an [`EventCtx`] and its [`Part`]s, the model thread
//! answers with a [`ModelDone`], assemble turns it into a [`Finished`] for the sink), so that
//! no stage imports another.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fusionstream_core::degrade::Plan;
use fusionstream_core::event::Event;
use fusionstream_core::moderation::{Policies, TermHit};
use fusionstream_core::record::{BundleRef, SourcePosition, Stream};
use fusionstream_core::{Lane, Priority, ReasonCode};
use fusionstream_model::{InferOutput, Prepared};
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::report::Outcome;
use super::Taken;

/// An event on its way through the model, possibly in two lanes at once.
pub(crate) struct EventCtx {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) event_id: String,
    pub(crate) question: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) attributes: Option<Map<String, Value>>,
    pub(crate) position: SourcePosition,
    pub(crate) bundle: BundleRef,
    pub(crate) plan: Plan,
    pub(crate) received_at: SystemTime,
    pub(crate) started: Instant,
    pub(crate) fetch_ms: f64,
    pub(crate) preprocess_ms: f64,
    /// The payload, cut to the dead-letter limit, for the rare event that ends with no
    /// output; `(bytes, cut by the source)`.
    pub(crate) payload: (Vec<u8>, bool),
    pub(crate) dead_letter_limit: usize,
    /// The event's span (see [`Taken`]) and the record's incoming `traceparent`.
    pub span: tracing::Span,
    pub(crate) traceparent: Option<String>,
    pub(crate) partial: Mutex<Partial>,
    /// How urgent the event is (its own, or the default of its tenant, topic or source).
    pub(crate) priority: Priority,
    /// What the `moderate` task needs besides the models' signals.
    pub(crate) moderation: Option<ModerationCtx>,
}

/// The policies and the exact terms found in the event's text (pure work, done at intake).
pub(crate) struct ModerationCtx {
    pub(crate) policies: Arc<Policies>,
    pub(crate) terms: Vec<TermHit>,
    /// Known-hash list entries the image matched (matched while preprocessing).
    pub(crate) matches: Vec<fusionstream_core::moderation::ListMatch>,
    /// The known lists, for matching the image's embedding once the model has it (none
    /// without a usable image).
    pub(crate) lists: Option<Arc<super::known_lists::KnownLists>>,
}

pub(crate) struct Partial {
    pub(crate) remaining: usize,
    /// Tasks the model skipped in the lanes done so far.
    pub(crate) skipped: Vec<fusionstream_core::Skipped>,
    /// Streams already handed to the sink (by lanes done before).
    pub(crate) published: Vec<Stream>,
    pub(crate) queue_ms: f64,
    pub(crate) model_ms: f64,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// The first lane part the model failed on alone: the event is dead-lettered with it.
    pub(crate) failure: Option<ItemFailure>,
}

impl EventCtx {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        t: Taken,
        event: &Event,
        position: SourcePosition,
        bundle: BundleRef,
        plan: Plan,
        fetch_ms: f64,
        preprocess_ms: f64,
        parts: usize,
        dead_letter_limit: usize,
        moderation: Option<ModerationCtx>,
        priority: Priority,
    ) -> Self {
        let traceparent = t.rec.traceparent;
        let mut payload = t.rec.payload;
        // One byte over the limit keeps the "truncated" flag right.
        payload.truncate(dead_letter_limit.saturating_add(1));
        payload.shrink_to_fit();
        Self {
            partition: t.rec.partition,
            offset: t.rec.offset,
            event_id: event.id.clone(),
            question: event.question.present().cloned(),
            tenant: event.tenant.clone(),
            attributes: event.attributes.clone(),
            position,
            bundle,
            plan,
            received_at: t.received_at,
            started: t.started,
            fetch_ms,
            preprocess_ms,
            payload: (payload, t.rec.oversized),
            dead_letter_limit,
            span: t.span,
            traceparent,
            partial: Mutex::new(Partial {
                remaining: parts,
                skipped: Vec::new(),
                published: Vec::new(),
                queue_ms: 0.0,
                model_ms: 0.0,
                permit: Some(t.permit),
                failure: None,
            }),
            moderation,
            priority,
        }
    }

    /// The event's id.
    pub(crate) fn event_id(&self) -> &str {
        &self.event_id
    }
}

/// One lane's share of an event.
pub(crate) struct Part {
    pub ctx: Arc<EventCtx>,
    pub prepared: Prepared,
    pub enqueued: Instant,
}

/// Results of one model batch.
pub(crate) struct ModelDone {
    pub lane: Lane,
    pub parts: Vec<(Arc<EventCtx>, Instant)>,
    pub started: Instant,
    pub took: Duration,
    /// One result per part; `Err` when the runtime itself failed (fatal).
    pub result: anyhow::Result<Vec<ItemResult>>,
}

/// Records of an event ready for the sink: all of them, or one lane's as soon as that lane is
/// done (outputs go out per stream as soon as they exist). Only the event's last piece
/// carries its outcome and its permit, and only its acknowledgement completes the position:
/// earlier pieces are acknowledged before it (the sink keeps their order).
pub(crate) struct Finished {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub records: Vec<(Stream, Vec<u8>)>,
    /// The event's outcome, on its last piece; `None` on an earlier one.
    pub outcome: Option<Outcome>,
    /// The lane whose outputs these are, and the event's priority (per-lane latency).
    pub lane: Option<(Lane, Priority)>,
    /// When the event was read.
    pub started: Instant,
    pub latency: Duration,
    pub permit: Option<OwnedSemaphorePermit>,
    /// The event's span: it ends when this is dropped, after the acknowledgement.
    pub span: tracing::Span,
    /// Trace context for the output headers.
    pub traceparent: Option<String>,
}

/// Why one item of a batch has no output.
#[derive(Debug, Clone)]
pub(crate) struct ItemFailure {
    /// Dead-letter reason code: `model_error` or `internal_error` (a panic).
    pub reason: ReasonCode,
    /// The error, with the lane.
    pub detail: String,
}

/// One item's result.
pub(crate) type ItemResult = Result<InferOutput, ItemFailure>;

/// A timestamp as the records write it (RFC 3339, milliseconds).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
