//! Per event: decode the payload, apply the degradation matrix, fetch and preprocess media,
//! and hand lane parts to the model's queue (with the event's priority and deadline) or a
//! dead letter to the sink (the fetch itself, with its retries, is `fetch.rs`; the CPU work,
//! `preprocess.rs`).
//!
//! Long because it is one event's path from payload to lane parts, read top to bottom
//! (`process` and the steps it calls, in order), with every exit that dead-letters on the
//! way; the steps with a life of their own (fetch, preprocess, the queue) are their own files.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fusionstream_core::batch::Cost;
use fusionstream_core::degrade::{
    plan_event, Availability, Decision, Degradation, Modality, OnImageFailure, Plan,
};
use fusionstream_core::event::{parse_event, Event, Input};
use fusionstream_core::moderation::TextSource;
use fusionstream_core::record::{BundleRef, DeadLetterRecord, SourcePosition, Stream};
use fusionstream_core::{Lane, ReasonCode, Task};
use fusionstream_model::moderation::ModerationInput;
use fusionstream_model::pdq::Pdq;
use fusionstream_model::photo::PhotoInput;
use fusionstream_model::tokenize::Tokens;
use fusionstream_model::{FusionModel, Prepared, PreparedImage};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

use super::envelope::{rfc3339, EventCtx, Finished, ModerationCtx, Part};
use super::fetch::fetch;
use super::modalities::{availability, degradations, degradations_of, prepare, Preprocessed};
use super::report::{Outcome, Report, Reporter, Stage};
use super::scheduler::ToModel;
use fusionstream_io::media::MediaStores;

use super::{Settings, Taken};

/// An event's image as fetched: `None` without one, the bytes or why they could not be had.
type FetchedImage = Option<Result<Vec<u8>, ReasonCode>>;

/// What every event task shares.
pub(crate) struct Shared {
    pub source_kind: &'static str,
    pub settings: Settings,
    pub model: Arc<FusionModel>,
    pub media: MediaStores,
    pub bundle: BundleRef,
    pub fetch_slots: Arc<Semaphore>,
    pub cpu_slots: Arc<Semaphore>,
    pub to_model: ToModel,
    pub to_sink: mpsc::Sender<Finished>,
    pub reporter: Arc<dyn Reporter>,
}

/// Take records until the source closes; each event runs as its own task (their number is
/// bounded by the in-flight permits).
pub(crate) async fn run(mut rx: mpsc::Receiver<Taken>, shared: Arc<Shared>) {
    while let Some(t) = rx.recv().await {
        let span = t.span.clone();
        tokio::spawn(contained(shared.clone(), t).instrument(span));
    }
}

/// Run [`process`] so that a panic in it still finishes the event: an `internal_error` dead
/// letter at its position (without the payload, which went down with the task: the source
/// position says where to read it), a counter, an error log with the event's position.
async fn contained(shared: Arc<Shared>, t: Taken) {
    let rec = &t.rec;
    let (partition, offset, stream) = (rec.partition, rec.offset, rec.stream.clone());
    let traceparent = rec.traceparent.clone();
    let (span, started) = (t.span.clone(), t.started);
    let Err(e) = tokio::spawn(process(shared.clone(), t).in_current_span()).await else {
        return;
    };
    if !e.is_panic() {
        // Cancelled with the runtime: the worker is stopping, the event replays.
        return;
    }
    let msg = super::model_thread::panic_message(e.into_panic().as_ref());
    shared.reporter.report(Report::IntakePanicked);
    tracing::error!(%stream, partition, offset, panic = %msg, "event processing panicked");
    let mut rec = DeadLetterRecord::new(
        None,
        ReasonCode::InternalError,
        format!("processing panicked: {msg} (payload not kept: read it at the source position)"),
        SourcePosition {
            kind: shared.source_kind.to_owned(),
            stream,
            partition,
            offset,
        },
        shared.bundle.clone(),
        vec![],
        rfc3339(SystemTime::now()),
    )
    .with_payload(&[], 0);
    rec.payload_truncated = true;
    let f = Finished {
        partition,
        offset,
        key: String::new(),
        records: vec![(
            Stream::DeadLetters,
            serde_json::to_vec(&rec).unwrap_or_default(),
        )],
        outcome: Some(Outcome::DeadLetter(ReasonCode::InternalError)),
        lane: None,
        started,
        latency: started.elapsed(),
        permit: None,
        traceparent: super::trace_context::traceparent_for(&span, traceparent.as_deref()),
        span,
    };
    let _ = shared.to_sink.send(f).await;
}

fn position(shared: &Shared, t: &Taken) -> SourcePosition {
    SourcePosition {
        kind: shared.source_kind.to_owned(),
        stream: t.rec.stream.clone(),
        partition: t.rec.partition,
        offset: t.rec.offset,
    }
}

/// Why an event goes to the dead letters instead of on.
struct Refused {
    event_id: Option<String>,
    reason: ReasonCode,
    detail: String,
    degraded: Vec<Degradation>,
}

impl Refused {
    fn new(event_id: Option<&str>, reason: ReasonCode, detail: String) -> Self {
        Self {
            event_id: event_id.map(str::to_owned),
            reason,
            detail,
            degraded: Vec::new(),
        }
    }

    fn degraded(self, degraded: Vec<Degradation>) -> Self {
        Self { degraded, ..self }
    }
}

/// Send a dead letter for `t`: the original payload, the reason, the source position.
async fn send_dead_letter(shared: &Shared, t: Taken, why: Refused) {
    let Refused {
        event_id,
        reason,
        detail,
        degraded,
    } = why;
    let mut rec = DeadLetterRecord::new(
        event_id.clone(),
        reason,
        detail,
        position(shared, &t),
        shared.bundle.clone(),
        degraded,
        rfc3339(SystemTime::now()),
    )
    .with_payload(&t.rec.payload, shared.settings.max_dead_letter_payload);
    // A payload cut by the source was already incomplete.
    rec.payload_truncated |= t.rec.oversized;
    rec.attempts = t.refused;
    let traceparent = super::trace_context::traceparent_for(&t.span, t.rec.traceparent.as_deref());
    let f = Finished {
        partition: t.rec.partition,
        offset: t.rec.offset,
        key: event_id.unwrap_or_default(),
        records: vec![(
            Stream::DeadLetters,
            serde_json::to_vec(&rec).unwrap_or_default(),
        )],
        outcome: Some(Outcome::DeadLetter(reason)),
        lane: None,
        started: t.started,
        latency: t.started.elapsed(),
        permit: Some(t.permit),
        span: t.span,
        traceparent,
    };
    // A closed sink means the worker is stopping; the event is not acknowledged and replays.
    let _ = shared.to_sink.send(f).await;
}

/// One event's path: admit it, decide whether it can produce anything, fetch its image,
/// preprocess, decide again with what is usable, and hand its lane parts to the model's
/// queue; every refusal on the way is the event's dead letter. Returns early without one
/// only when the worker is stopping (a semaphore closed): the event replays.
async fn process(shared: Arc<Shared>, t: Taken) {
    let mut event = match admit(&shared.settings, &t) {
        Ok(e) => e,
        Err(why) => return send_dead_letter(&shared, t, why).await,
    };
    if !event.tasks_named && shared.settings.moderate_unnamed {
        event.tasks.insert(Task::Moderate);
    }
    let rule = shared.settings.policy.for_tenant(event.tenant.as_deref());
    let declared = [
        availability(&event.image),
        availability(&event.text),
        availability(&event.question),
    ];
    // Decide once before fetching: if the event cannot produce anything even with its
    // image, do not fetch it.
    if let Decision::DeadLetter { reason, detail } =
        plan_event(event.tasks, &declared[0], &declared[1], &declared[2], rule)
    {
        let why = Refused::new(Some(&event.id), reason, detail).degraded(degradations(&event));
        return send_dead_letter(&shared, t, why).await;
    }
    // The media slot is held until the bytes are decoded: at most `media.concurrency`
    // encoded images are in memory, fetched or waiting for a CPU.
    let Some((media_slot, image_bytes, fetch_ms)) = fetch_image(&shared, &event).await else {
        return;
    };
    let pre_start = Instant::now();
    let prepared = preprocess(&shared, &event, image_bytes).await;
    drop(media_slot);
    let prep = match prepared {
        None => return,
        Some(Ok(p)) => p,
        Some(Err(why)) => return send_dead_letter(&shared, t, why).await,
    };
    let preprocess_ms = ms(pre_start.elapsed());
    shared.reporter.report(Report::StageTimed {
        stage: Stage::Preprocess,
        took: pre_start.elapsed(),
    });
    let plan = match plan_with(&event, &declared, &prep, rule) {
        Ok(p) => p,
        Err(why) => return send_dead_letter(&shared, t, why).await,
    };
    let times = (fetch_ms, preprocess_ms);
    enqueue(&shared, t, event, plan, prep, times).await;
}

/// The event, unless the crash guard set it aside, it is too large, it does not parse or
/// its deadline passed (with `pipeline.enforce_deadlines`).
fn admit(s: &Settings, t: &Taken) -> Result<Event, Refused> {
    if let Some(attempts) = t.refused {
        // Set aside by the crash guard: nothing of it runs again, not even its parsing.
        let detail = format!(
            "the worker died {attempts} time(s) while this event was processed alone; it is \
             not run again (the payload is kept: replay it once the cause is fixed)"
        );
        return Err(Refused::new(None, ReasonCode::PoisonSuspected, detail));
    }
    if t.rec.oversized {
        let detail = format!("event longer than {} bytes", s.limits.max_event_bytes);
        return Err(Refused::new(None, ReasonCode::EventTooLarge, detail));
    }
    let event = match parse_event(&t.rec.payload, &s.limits) {
        Ok(e) => e,
        Err(r) => {
            let (id, code) = (r.event_id.as_deref(), r.reason.code());
            return Err(Refused::new(id, code, r.detail));
        }
    };
    t.span.record("event.id", event.id.as_str());
    match event.deadline {
        Some(d) if s.enforce_deadlines && d < SystemTime::now() => {
            let detail = format!("deadline {} passed", rfc3339(d));
            let code = ReasonCode::DeadlineExceeded;
            Err(Refused::new(Some(&event.id), code, detail))
        }
        _ => Ok(event),
    }
}

/// The event's image fetched (with its media slot, and how long the fetch took in ms);
/// `None` bytes without an image, `None` altogether when the worker is stopping.
async fn fetch_image(
    shared: &Shared,
    event: &Event,
) -> Option<(Option<OwnedSemaphorePermit>, FetchedImage, f64)> {
    let Input::Present(src) = &event.image else {
        return Some((None, None, 0.0));
    };
    let slot = shared.fetch_slots.clone().acquire_owned().await.ok()?;
    let started = Instant::now();
    let span = tracing::info_span!("fetch", otel.name = "fusionstream.fetch");
    let r = fetch(&shared.media, &shared.settings, &*shared.reporter, src)
        .instrument(span)
        .await;
    shared.reporter.report(Report::StageTimed {
        stage: Stage::Fetch,
        took: started.elapsed(),
    });
    Some((Some(slot), Some(r), ms(started.elapsed())))
}

/// Preprocess on the CPU pool (under a CPU slot); a panic in decoding or tokenising is this
/// event's dead letter, never a stuck position. `None` when the worker is stopping.
async fn preprocess(
    shared: &Shared,
    event: &Event,
    image_bytes: FetchedImage,
) -> Option<Result<Preprocessed, Refused>> {
    let s = &shared.settings;
    let _slot = shared.cpu_slots.acquire().await.ok()?;
    let model = shared.model.clone();
    let tasks = event.tasks;
    let lists = s.lists.clone();
    let text = event.text.present().cloned();
    let question = event.question.present().cloned();
    let span = tracing::info_span!("preprocess", otel.name = "fusionstream.preprocess");
    let fault = super::faults::fault_for(s.test_faults, &event.id);
    let joined = tokio::task::spawn_blocking(move || {
        if fault == Some(super::faults::Fault::PreprocessPanic) {
            panic!("injected preprocess panic");
        }
        span.in_scope(|| {
            let lists = lists.as_deref();
            prepare(&model, image_bytes, text, question, tasks, lists)
        })
    })
    .await;
    Some(joined.map_err(|e| {
        let msg = if e.is_panic() {
            super::model_thread::panic_message(e.into_panic().as_ref())
        } else {
            "preprocessing task cancelled".to_owned()
        };
        shared.reporter.report(Report::IntakePanicked);
        tracing::error!(event_id = %event.id, panic = %msg, "preprocessing panicked");
        let detail = format!("preprocessing panicked: {msg}");
        Refused::new(Some(&event.id), ReasonCode::InternalError, detail)
            .degraded(degradations(event))
    }))
}

/// Decide again with what preprocessing found usable: the plan, or the dead letter.
fn plan_with(
    event: &Event,
    declared: &[Availability; 3],
    prep: &Preprocessed,
    rule: OnImageFailure,
) -> Result<Plan, Refused> {
    let image = match (&event.image, &prep.image) {
        (Input::Present(_), Ok(Some(_))) => Availability::Usable,
        (Input::Present(_), Err(code)) => Availability::Unusable(*code),
        (other, _) => availability(other),
    };
    let usable = |declared: &Availability, prepared: &Result<Option<Tokens>, ReasonCode>| match (
        declared, prepared,
    ) {
        (Availability::Usable, Err(code)) => Availability::Unusable(*code),
        (a, _) => a.clone(),
    };
    let text = usable(&declared[1], &prep.text);
    let question = usable(&declared[2], &prep.question);
    match plan_event(event.tasks, &image, &text, &question, rule) {
        Decision::Process(p) => Ok(p),
        Decision::DeadLetter { reason, detail } => {
            let degraded = degradations_of(&image, &text, &question);
            Err(Refused::new(Some(&event.id), reason, detail).degraded(degraded))
        }
    }
}

/// The policies and the exact terms of the event's text, when it is moderated.
fn moderation_ctx(
    s: &Settings,
    event: &Event,
    plan: &Plan,
    matches: Vec<fusionstream_core::moderation::ListMatch>,
) -> Option<ModerationCtx> {
    let policies = s.moderation.as_ref()?;
    if !plan.tasks.contains(Task::Moderate) {
        return None;
    }
    let (policy, _) = policies.for_tenant(event.tenant.as_deref());
    let terms = match (plan.text, event.text.present()) {
        (true, Some(t)) => policy.find_terms(t, TextSource::EventText),
        _ => Vec::new(),
    };
    Some(ModerationCtx {
        policies: policies.clone(),
        terms,
        // Matched only when the image is usable (the plan may have dropped it).
        matches: if plan.image { matches } else { Vec::new() },
        lists: s.lists.clone().filter(|_| plan.image),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The event's lane parts on the model's queue, with its context (plan, priority,
/// deadline, moderation) shared by them.
async fn enqueue(
    shared: &Shared,
    t: Taken,
    event: Event,
    mut plan: Plan,
    prep: Preprocessed,
    (fetch_ms, preprocess_ms): (f64, f64),
) {
    let image = if plan.image {
        prep.image.ok().flatten()
    } else {
        None
    };
    // A text or question cut to the model's positions is used as cut, and says so.
    let mut take = |used: bool, tokens: Result<Option<Tokens>, ReasonCode>, modality, reason| {
        let tokens = tokens.ok().flatten().filter(|_| used)?;
        if tokens.truncated {
            plan.degraded.push(Degradation { modality, reason });
        }
        Some(tokens.ids)
    };
    let text = take(
        plan.text,
        prep.text,
        Modality::Text,
        ReasonCode::TextTruncated,
    );
    let question = take(
        plan.question,
        prep.question,
        Modality::Question,
        ReasonCode::QuestionTruncated,
    );
    let lanes: Vec<Lane> = Lane::ALL
        .into_iter()
        .filter(|l| !plan.tasks.in_lane(*l).is_empty())
        .collect();
    let position = position(shared, &t);
    let s = &shared.settings;
    let priority = s
        .priorities
        .resolve(event.priority, event.tenant.as_deref(), &t.rec.stream);
    let deadline = event.deadline.map(on_our_clock);
    let moderation = moderation_ctx(s, &event, &plan, prep.matches);
    let ctx = Arc::new(EventCtx::new(
        t,
        &event,
        position,
        shared.bundle.clone(),
        plan.clone(),
        fetch_ms,
        preprocess_ms,
        lanes.len(),
        s.max_dead_letter_payload,
        moderation,
        priority,
    ));
    let inputs = LaneInputs {
        image,
        text,
        question,
        moderation: prep.moderation,
        photo: prep.photo,
        pdq: prep.pdq,
    };
    for (lane, prepared) in inputs.split(&plan, &lanes) {
        let cost = cost_of(&prepared);
        let part = Part {
            ctx: ctx.clone(),
            prepared,
            enqueued: Instant::now(),
        };
        if !shared.to_model.send(lane, part, cost, deadline).await {
            return;
        }
    }
}

/// A deadline on the worker's clock (the scheduler makes an item urgent near it).
fn on_our_clock(d: SystemTime) -> Instant {
    let now = (Instant::now(), SystemTime::now());
    match d.duration_since(now.1) {
        Ok(left) => now.0 + left,
        Err(_) => now.0,
    }
}

/// What a part costs a batch: its pixels and its tokens.
fn cost_of(p: &Prepared) -> Cost {
    Cost {
        pixels: p.image.as_ref().map_or(0, PreparedImage::pixel_count),
        tokens: (p.text.as_ref().map_or(0, Vec::len) + p.question.as_ref().map_or(0, Vec::len))
            as u64,
    }
}

/// The event's usable inputs, before they are split by lane.
struct LaneInputs {
    image: Option<PreparedImage>,
    text: Option<Vec<u32>>,
    question: Option<Vec<u32>>,
    moderation: Option<ModerationInput>,
    photo: Option<PhotoInput>,
    pdq: Option<Pdq>,
}

impl LaneInputs {
    /// One prepared item per lane: encode gets the image, the text, the moderation and photo
    /// packs' inputs and the hash; generate gets the image and the question.
    fn split(mut self, plan: &Plan, lanes: &[Lane]) -> Vec<(Lane, Prepared)> {
        let mut out = Vec::with_capacity(lanes.len());
        for &lane in lanes {
            let tasks = plan.tasks.in_lane(lane);
            let prepared = match lane {
                Lane::Encode => Prepared {
                    image: self.image.clone(),
                    text: self.text.clone(),
                    question: None,
                    tasks,
                    moderation: if tasks.contains(Task::Moderate) {
                        self.moderation.take()
                    } else {
                        None
                    },
                    pdq: self
                        .pdq
                        .filter(|_| tasks.contains(Task::Hash) && self.image.is_some()),
                    photo: self.photo.take(),
                },
                Lane::Generate => Prepared {
                    image: self.image.clone(),
                    text: None,
                    question: self.question.clone(),
                    tasks,
                    moderation: None,
                    pdq: None,
                    photo: None,
                },
            };
            out.push((lane, prepared));
        }
        out
    }
}
