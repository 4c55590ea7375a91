//! Joining the lane parts of an event back together and turning the model's outputs into
//! output records.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fusionstream_core::embedlist::EmbeddingKind;
use fusionstream_core::moderation::{verdict, TextSource};
use fusionstream_core::record::{
    AnswerRecord, CaptionRecord, DeadLetterRecord, EmbeddingRecord, ModerationRecord, PdqRecord,
    RecordMeta, Stream, TagRecord, TagScore, Timings, OUTPUT_SCHEMA_VERSION,
};
use fusionstream_core::{Lane, ReasonCode, SkipReason};
use fusionstream_model::runtime::TagSource;
use fusionstream_model::InferOutput;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::envelope::{
    rfc3339, EventCtx, Finished, ItemFailure, ModelDone, ModerationCtx, Partial,
};
use super::report::{Outcome, Report, Reporter, Stage};
use super::window::Load;
use fusionstream_core::lock;

/// Turn batch results into records: each lane's outputs go to the sink as soon as that lane
/// is done with the event (its embedding does not wait for its caption); the event's last
/// piece carries its outcome. An item the model failed on alone dead-letters its event (the
/// outputs of a lane done before stay published: duplicates on a replay, never a loss); a
/// failure of the runtime itself is fatal: the worker stops and nothing unfinished is
/// acknowledged.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<ModelDone>,
    to_sink: mpsc::Sender<Finished>,
    reporter: Arc<dyn Reporter>,
    load: Arc<Load>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(done) = rx.recv().await {
        let outputs = match done.result {
            Ok(o) => o,
            Err(e) => {
                cancel.cancel();
                return Err(e.context(format!(
                    "model batch of {} items in lane {} failed",
                    done.parts.len(),
                    done.lane.name()
                )));
            }
        };
        load.model_ns.fetch_add(
            done.took.as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        reporter.report(Report::BatchRan {
            lane: done.lane,
            items: done.parts.len(),
            took: done.took,
        });
        for ((ctx, enqueued), out) in done.parts.into_iter().zip(outputs) {
            let waited = done.started.saturating_duration_since(enqueued);
            reporter.report(Report::QueueWaited {
                lane: done.lane,
                priority: ctx.priority,
                waited,
            });
            let piece = {
                let mut p = lock(&ctx.partial);
                let fresh = match out {
                    Ok(out) => Some(out),
                    Err(f) => {
                        p.failure.get_or_insert(f);
                        None
                    }
                };
                p.queue_ms = p.queue_ms.max(waited.as_secs_f64() * 1e3);
                p.model_ms += done.took.as_secs_f64() * 1e3;
                p.remaining -= 1;
                if p.remaining == 0 {
                    reporter.report(Report::StageTimed {
                        stage: Stage::Queue,
                        took: ms_duration(p.queue_ms),
                    });
                    reporter.report(Report::StageTimed {
                        stage: Stage::Model,
                        took: ms_duration(p.model_ms),
                    });
                    // The batch work itself is in the linked model_batch spans.
                    ctx.span.record("event.queue_ms", round(p.queue_ms));
                    ctx.span.record("event.model_ms", round(p.model_ms));
                }
                piece(&ctx, &mut p, fresh, done.lane, &*reporter)
            };
            if let Some(f) = piece {
                if to_sink.send(f).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// The records of one lane's outputs for an event (`None` when there is nothing to send
/// yet), and on its last lane the event's outcome.
fn piece(
    ctx: &EventCtx,
    p: &mut Partial,
    out: Option<InferOutput>,
    lane: Lane,
    reporter: &dyn Reporter,
) -> Option<Finished> {
    let last = p.remaining == 0;
    let latency = ctx.started.elapsed();
    let mut records = Vec::new();
    if let (Some(out), None) = (out, &p.failure) {
        p.skipped.extend(out.skipped.iter().copied());
        records = outputs(ctx, p, out, reporter);
    }
    p.published.extend(records.iter().map(|(s, _)| *s));
    let span = ctx.span.clone();
    let traceparent = super::trace_context::traceparent_for(&span, ctx.traceparent.as_deref());
    let mut finished = Finished {
        partition: ctx.partition,
        offset: ctx.offset,
        key: ctx.event_id.clone(),
        records,
        outcome: None,
        lane: Some((lane, ctx.priority)),
        started: ctx.started,
        latency,
        permit: None,
        span,
        traceparent,
    };
    if !last {
        return (!finished.records.is_empty()).then_some(finished);
    }
    finished.permit = p.permit.take();
    let failure = p.failure.take();
    if p.published.is_empty() || failure.is_some() {
        let (reason, record) = dead_letter(ctx, p, failure, &finished.records);
        finished.records = vec![(Stream::DeadLetters, record)];
        finished.outcome = Some(Outcome::DeadLetter(reason));
        return Some(finished);
    }
    finished.outcome = Some(Outcome::Processed {
        degraded: ctx.plan.degraded.iter().map(|d| d.reason).collect(),
        skipped: skipped(ctx, p)
            .iter()
            .map(|s| format!("{}:{}", s.task, s.reason.code()))
            .collect(),
    });
    Some(finished)
}

/// The event's dead letter when the model failed on one of its parts alone (the dead letter
/// is the event's replay unit; outputs of a lane done before it stay published, and it says
/// which), or when every runnable task was skipped by the model (e.g. the bundle lacks the
/// part): nothing may vanish silently.
fn dead_letter(
    ctx: &EventCtx,
    p: &Partial,
    failure: Option<ItemFailure>,
    this_piece: &[(Stream, Vec<u8>)],
) -> (ReasonCode, Vec<u8>) {
    let skipped = skipped(ctx, p);
    let (reason, mut detail) = match failure {
        Some(f) => (f.reason, f.detail),
        None => (
            skipped
                .iter()
                .find(|s| s.reason == SkipReason::ModelAbsent)
                .or(skipped.first())
                .map_or(ReasonCode::NoOutput, |s| s.reason.into()),
            "no requested output could be produced".to_owned(),
        ),
    };
    let before: Vec<&str> = p
        .published
        .iter()
        .filter(|s| !this_piece.iter().any(|(r, _)| r == *s))
        .map(|s| s.name())
        .collect();
    if !before.is_empty() {
        detail.push_str(&format!(" (already published: {})", before.join(", ")));
    }
    let dl = DeadLetterRecord::new(
        Some(ctx.event_id.clone()),
        reason,
        detail,
        ctx.position.clone(),
        ctx.bundle.clone(),
        ctx.plan.degraded.clone(),
        rfc3339(SystemTime::now()),
    )
    .with_payload(&ctx.payload.0, ctx.dead_letter_limit);
    (reason, serde_json::to_vec(&dl).unwrap_or_default())
}

/// The tasks skipped so far: by the plan, and by the model in the lanes done.
fn skipped(ctx: &EventCtx, p: &Partial) -> Vec<fusionstream_core::Skipped> {
    let mut skipped = ctx.plan.skipped.clone();
    skipped.extend(p.skipped.iter().copied());
    skipped.sort_by_key(|s| s.task);
    skipped
}

/// What every output record of the event says about it.
fn record_meta(ctx: &EventCtx, p: &Partial) -> RecordMeta {
    RecordMeta {
        schema_version: OUTPUT_SCHEMA_VERSION,
        event_id: ctx.event_id.clone(),
        bundle: ctx.bundle.clone(),
        source: ctx.position.clone(),
        timings: Timings {
            received_at: rfc3339(ctx.received_at),
            fetch_ms: round(ctx.fetch_ms),
            preprocess_ms: round(ctx.preprocess_ms),
            queue_ms: round(p.queue_ms),
            model_ms: round(p.model_ms),
            total_ms: round(ctx.started.elapsed().as_secs_f64() * 1e3),
        },
        degraded: ctx.plan.degraded.clone(),
        skipped: skipped(ctx, p),
        tenant: ctx.tenant.clone(),
        attributes: ctx.attributes.clone(),
    }
}

/// The output records of one lane's outputs.
fn outputs(
    ctx: &EventCtx,
    p: &Partial,
    mut out: InferOutput,
    reporter: &dyn Reporter,
) -> Vec<(Stream, Vec<u8>)> {
    let meta = record_meta(ctx, p);
    let mut records = Vec::new();
    let mut push = |stream: Stream, v: Result<Vec<u8>, serde_json::Error>| {
        if let Ok(json) = v {
            records.push((stream, json));
        }
    };
    if let Some(r) = embedding_record(&meta, &mut out) {
        push(Stream::Embeddings, serde_json::to_vec(&r));
    }
    if let Some(caption) = out.caption {
        let meta = meta.clone();
        push(
            Stream::Captions,
            serde_json::to_vec(&CaptionRecord { meta, caption }),
        );
    }
    if let Some(answer) = out.answer {
        let question = ctx.question.clone().unwrap_or_default();
        let meta = meta.clone();
        let r = AnswerRecord {
            meta,
            question,
            answer,
        };
        push(Stream::Answers, serde_json::to_vec(&r));
    }
    if out.tags.is_some() || out.pack_tags.is_some() {
        // The bundle's tags, then the photo pack's labels (source: the pack's name).
        let mut tags: Vec<TagScore> = out.tags.into_iter().flatten().map(tag_score).collect();
        tags.extend(out.pack_tags.into_iter().flatten().map(|t| TagScore {
            label: t.label,
            score: t.score,
            source: t.source,
        }));
        let meta = meta.clone();
        push(Stream::Tags, serde_json::to_vec(&TagRecord { meta, tags }));
    }
    if let (Some(signals), Some(m)) = (out.moderation, &ctx.moderation) {
        let embeddings = ListEmbeddings {
            image: out.list_embedding.as_deref(),
            photo: out.list_photo_embedding.as_deref(),
        };
        let r = moderation_record(ctx, m, meta, signals, embeddings, reporter);
        push(Stream::Moderation, serde_json::to_vec(&r));
    }
    records
}

/// The embeddings record: the embeddings, the match score and the PDQ hash the lane
/// produced, if any.
fn embedding_record(meta: &RecordMeta, out: &mut InferOutput) -> Option<EmbeddingRecord> {
    let dim = [
        &out.image_embedding,
        &out.text_embedding,
        &out.fused_embedding,
    ]
    .iter()
    .find_map(|e| e.as_ref().map(Vec::len));
    let pdq = out.pdq.map(|p| PdqRecord {
        hash: p.hash.to_hex(),
        quality: p.quality,
    });
    if dim.is_none() && out.match_score.is_none() && pdq.is_none() && out.photo_embedding.is_none()
    {
        return None;
    }
    Some(EmbeddingRecord {
        meta: meta.clone(),
        dim: dim.unwrap_or(0),
        image_embedding: out.image_embedding.take(),
        text_embedding: out.text_embedding.take(),
        fused_embedding: out.fused_embedding.take(),
        match_score: out.match_score,
        pdq,
        photo_embedding: out.photo_embedding.take(),
    })
}

fn tag_score(t: fusionstream_model::Tag) -> TagScore {
    TagScore {
        label: t.label,
        score: t.score,
        source: match t.source {
            TagSource::Image => "image",
            TagSource::Text => "text",
        }
        .to_owned(),
    }
}

/// An image's embeddings for the known-embedding lists, by kind.
struct ListEmbeddings<'a> {
    image: Option<&'a [f32]>,
    photo: Option<&'a [f32]>,
}

/// The moderation record: the models' signals with the event's own (its text's terms, its
/// image's list matches, matches of its embedding), the tenant's policy's verdict.
fn moderation_record(
    ctx: &EventCtx,
    m: &ModerationCtx,
    meta: RecordMeta,
    mut signals: fusionstream_core::moderation::Signals,
    embeddings: ListEmbeddings<'_>,
    reporter: &dyn Reporter,
) -> ModerationRecord {
    signals.terms.extend(m.terms.iter().cloned());
    signals.matches.extend(m.matches.iter().cloned());
    if let Some(lists) = &m.lists {
        let kinds = [
            (embeddings.image, EmbeddingKind::ImageEmbedding),
            (embeddings.photo, EmbeddingKind::PhotoEmbedding),
        ];
        for (e, kind) in kinds {
            if let Some(e) = e {
                signals
                    .embedding_matches
                    .extend(lists.embedding_matches(e, kind));
            }
        }
        signals
            .embedding_matches
            .sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    }
    let hits = signals.matches.iter().map(|h| &h.list);
    for list in hits.chain(signals.embedding_matches.iter().map(|h| &h.list)) {
        reporter.report(Report::ListMatched { list });
    }
    let (policy, name) = m.policies.for_tenant(ctx.tenant.as_deref());
    if let Some(text) = &signals.image_text {
        let found = policy.find_terms(text, TextSource::ImageText);
        signals.terms.extend(found);
    }
    let verdict = verdict(policy, &signals);
    reporter.report(Report::ModerationDecided {
        action: verdict.action,
    });
    ModerationRecord {
        meta,
        decision: verdict.action,
        rules: verdict.rules,
        signals,
        policy: name.to_owned(),
    }
}

fn ms_duration(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(0.0) / 1e3)
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
