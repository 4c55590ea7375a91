//! Per event: decode the payload, apply the degradation matrix, fetch and preprocess media,
//! and hand lane parts to the model's queue (with the event's priority and deadline) or a
//! dead letter to the sink (the fetch itself, with its retries, is `fetch.rs`; the CPU work,
//! `preprocess.rs`).
//!
//! Long (~470 lines) because it is one event's path from payload to lane parts, read top to
//! bottom, with every exit that dead-letters on the way; the steps with a life of their own
//! (fetch, preprocess, the queue) are already their own files.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fusionstream_core::batch::Cost;
use fusionstream_core::degrade::{decide, Availability, Decision, Degradation, Modality, Plan};
use fusionstream_core::event::{parse_event, Event, Input};
use fusionstream_core::moderation::TextSource;
use fusionstream_core::record::{BundleRef, DeadLetterRecord, SourcePosition, Stream};
use fusionstream_core::{Lane, ReasonCode, Task};
use fusionstream_model::tokenize::Tokens;
use fusionstream_model::{FusionModel, Prepared, PreparedImage};
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument as _;

use super::envelope::{rfc3339, EventCtx, Finished, ModerationCtx, Part};
use super::fetch::fetch;
use super::preprocess::{availability, degradations, degradations_of, prepare, Preprocessed};
use super::report::{Outcome, Report, Reporter, Stage};
use super::scheduler::ToModel;
use fusionstream_io::stores::Media;

use super::{Settings, Taken};

/// What every event task shares.
pub(crate) struct Shared {
    pub source_kind: &'static str,
    pub settings: Settings,
    pub model: Arc<FusionModel>,
    pub media: Media,
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

/// Send a dead letter for `t`: the original payload, the reason, the source position.
async fn send_dead_letter(
    shared: &Shared,
    t: Taken,
    event_id: Option<String>,
    reason: ReasonCode,
    detail: String,
    degraded: Vec<Degradation>,
) {
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

async fn process(shared: Arc<Shared>, t: Taken) {
    let s = &shared.settings;
    if let Some(attempts) = t.refused {
        // Set aside by the crash guard: nothing of it runs again, not even its parsing.
        let detail = format!(
            "the worker died {attempts} time(s) while this event was processed alone; it is \
             not run again (the payload is kept: replay it once the cause is fixed)"
        );
        return send_dead_letter(
            &shared,
            t,
            None,
            ReasonCode::PoisonSuspected,
            detail,
            vec![],
        )
        .await;
    }
    if t.rec.oversized {
        let detail = format!("event longer than {} bytes", s.limits.max_event_bytes);
        return send_dead_letter(&shared, t, None, ReasonCode::EventTooLarge, detail, vec![]).await;
    }
    let mut event = match parse_event(&t.rec.payload, &s.limits) {
        Ok(e) => {
            t.span.record("event.id", e.id.as_str());
            e
        }
        Err(r) => {
            let code = r.reason.code();
            return send_dead_letter(&shared, t, r.event_id, code, r.detail, vec![]).await;
        }
    };
    if s.enforce_deadlines {
        if let Some(d) = event.deadline {
            if d < SystemTime::now() {
                let detail = format!("deadline {} passed", rfc3339(d));
                let id = Some(event.id.clone());
                return send_dead_letter(
                    &shared,
                    t,
                    id,
                    ReasonCode::DeadlineExceeded,
                    detail,
                    vec![],
                )
                .await;
            }
        }
    }
    if !event.tasks_named && s.moderate_unnamed {
        event.tasks.insert(Task::Moderate);
    }
    let rule = s.policy.for_tenant(event.tenant.as_deref());
    let (text, question) = (availability(&event.text), availability(&event.question));
    // Decide once before fetching: if the event cannot produce anything even with its
    // image, do not fetch it.
    if let Decision::DeadLetter { reason, detail } = decide(
        event.tasks,
        &availability(&event.image),
        &text,
        &question,
        rule,
    ) {
        let degraded = degradations(&event);
        let id = Some(event.id.clone());
        return send_dead_letter(&shared, t, id, reason, detail, degraded).await;
    }

    // Fetch. The media slot is held until the bytes are decoded: at most
    // `media.concurrency` encoded images are in memory, fetched or waiting for a CPU.
    let media_slot = match &event.image {
        Input::Present(_) => match shared.fetch_slots.clone().acquire_owned().await {
            Ok(p) => Some(p),
            Err(_) => return,
        },
        _ => None,
    };
    let fetch_start = Instant::now();
    let image_bytes = match &event.image {
        Input::Present(src) => {
            let r = fetch(&shared.media, &shared.settings, &*shared.reporter, src)
                .instrument(tracing::info_span!(
                    "fetch",
                    otel.name = "fusionstream.fetch"
                ))
                .await;
            shared.reporter.report(Report::StageTimed {
                stage: Stage::Fetch,
                took: fetch_start.elapsed(),
            });
            Some(r)
        }
        _ => None,
    };
    let fetch_ms = ms(fetch_start.elapsed());

    // Preprocess on the CPU pool.
    let pre_start = Instant::now();
    let prepared = {
        let Ok(_slot) = shared.cpu_slots.acquire().await else {
            return;
        };
        let model = shared.model.clone();
        let moderate = event.tasks.contains(Task::Moderate);
        let hash = event.tasks.contains(Task::Hash);
        let lists = s.lists.clone();
        let text = event.text.present().cloned();
        let question = event.question.present().cloned();
        let span = tracing::info_span!("preprocess", otel.name = "fusionstream.preprocess");
        let fault = super::faults::fault_for(s.test_faults, &event.id);
        tokio::task::spawn_blocking(move || {
            if fault == Some(super::faults::Fault::PreprocessPanic) {
                panic!("injected preprocess panic");
            }
            span.in_scope(|| {
                prepare(
                    &model,
                    image_bytes,
                    text,
                    question,
                    moderate,
                    hash,
                    lists.as_deref(),
                )
            })
        })
        .await
    };
    drop(media_slot);
    let prep = match prepared {
        Ok(p) => p,
        Err(e) => {
            // A panic in decoding or tokenising: this event's dead letter, never a stuck
            // position.
            let msg = if e.is_panic() {
                super::model_thread::panic_message(e.into_panic().as_ref())
            } else {
                "preprocessing task cancelled".to_owned()
            };
            shared.reporter.report(Report::IntakePanicked);
            tracing::error!(event_id = %event.id, panic = %msg, "preprocessing panicked");
            let (id, detail) = (
                Some(event.id.clone()),
                format!("preprocessing panicked: {msg}"),
            );
            let degraded = degradations(&event);
            return send_dead_letter(&shared, t, id, ReasonCode::InternalError, detail, degraded)
                .await;
        }
    };
    let preprocess_ms = ms(pre_start.elapsed());
    shared.reporter.report(Report::StageTimed {
        stage: Stage::Preprocess,
        took: pre_start.elapsed(),
    });

    let image = match (&event.image, &prep.image) {
        (Input::Present(_), Ok(Some(_))) => Availability::Usable,
        (Input::Present(_), Err(code)) => Availability::Unusable(*code),
        (other, _) => availability(other),
    };
    let text = match (&text, &prep.text) {
        (Availability::Usable, Err(code)) => Availability::Unusable(*code),
        (a, _) => a.clone(),
    };
    let question = match (&question, &prep.question) {
        (Availability::Usable, Err(code)) => Availability::Unusable(*code),
        (a, _) => a.clone(),
    };
    let plan = match decide(event.tasks, &image, &text, &question, rule) {
        Decision::Process(p) => p,
        Decision::DeadLetter { reason, detail } => {
            let degraded = degradations_of(&image, &text, &question);
            let id = Some(event.id.clone());
            return send_dead_letter(&shared, t, id, reason, detail, degraded).await;
        }
    };
    enqueue(&shared, t, event, plan, prep, fetch_ms, preprocess_ms).await;
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

async fn enqueue(
    shared: &Shared,
    t: Taken,
    event: Event,
    mut plan: Plan,
    prep: Preprocessed,
    fetch_ms: f64,
    preprocess_ms: f64,
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
    let mut moderation = prep.moderation;
    let mut matches = prep.matches;
    let lanes: Vec<Lane> = Lane::ALL
        .into_iter()
        .filter(|l| !plan.tasks.in_lane(*l).is_empty())
        .collect();
    let position = position(shared, &t);
    let priority =
        shared
            .settings
            .priorities
            .resolve(event.priority, event.tenant.as_deref(), &t.rec.stream);
    // The deadline on the worker's clock (the scheduler makes an item urgent near it).
    let deadline = event.deadline.map(|d| {
        let now = (Instant::now(), SystemTime::now());
        match d.duration_since(now.1) {
            Ok(left) => now.0 + left,
            Err(_) => now.0,
        }
    });
    let ctx = Arc::new(EventCtx::new(
        t,
        &event,
        position,
        shared.bundle.clone(),
        plan.clone(),
        fetch_ms,
        preprocess_ms,
        lanes.len(),
        shared.settings.max_dead_letter_payload,
        moderation_ctx(
            &shared.settings,
            &event,
            &plan,
            std::mem::take(&mut matches),
        ),
        priority,
    ));
    for lane in lanes {
        let tasks = plan.tasks.in_lane(lane);
        let prepared = match lane {
            Lane::Encode => Prepared {
                image: image.clone(),
                text: text.clone(),
                question: None,
                tasks,
                moderation: if tasks.contains(Task::Moderate) {
                    moderation.take()
                } else {
                    None
                },
                pdq: prep
                    .pdq
                    .filter(|_| tasks.contains(Task::Hash) && image.is_some()),
            },
            Lane::Generate => Prepared {
                image: image.clone(),
                text: None,
                question: question.clone(),
                tasks,
                moderation: None,
                pdq: None,
            },
        };
        let cost = Cost {
            pixels: prepared
                .image
                .as_ref()
                .map_or(0, PreparedImage::pixel_count),
            tokens: (prepared.text.as_ref().map_or(0, Vec::len)
                + prepared.question.as_ref().map_or(0, Vec::len)) as u64,
        };
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
