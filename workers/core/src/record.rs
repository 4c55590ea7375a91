//! Output records, schema v1 (`schemas/v1/*.schema.json`): one record per output stream an
//! event produces, all keyed by the event id and carrying the bundle id and version, the
//! source position, stage timings, the degradation flags and skipped tasks, so that
//! downstream consumers can join, audit and deduplicate what a replay repeats.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::degrade::Degradation;
use crate::reason::ReasonCode;
use crate::task::Skipped;

/// Schema version of the records this crate writes.
pub const OUTPUT_SCHEMA_VERSION: u64 = 1;

/// The output streams (Kafka topics, local JSONL files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Captions.
    Captions,
    /// Answers.
    Answers,
    /// Embeddings and match scores.
    Embeddings,
    /// Zero-shot tags.
    Tags,
    /// Moderation signals and decisions.
    Moderation,
    /// Dead letters.
    DeadLetters,
}

impl Stream {
    /// How many streams there are (the length of per-stream arrays).
    pub const COUNT: usize = Stream::ALL.len();

    /// Every stream.
    pub const ALL: [Stream; 6] = [
        Stream::Captions,
        Stream::Answers,
        Stream::Embeddings,
        Stream::Tags,
        Stream::Moderation,
        Stream::DeadLetters,
    ];

    /// Lower-case name (the local file stem, the default topic suffix).
    pub fn name(self) -> &'static str {
        match self {
            Stream::Captions => "captions",
            Stream::Answers => "answers",
            Stream::Embeddings => "embeddings",
            Stream::Tags => "tags",
            Stream::Moderation => "moderation",
            Stream::DeadLetters => "dead_letters",
        }
    }

    /// Index for per-stream arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which model produced a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    /// Bundle id.
    pub id: String,
    /// Bundle version.
    pub version: String,
}

/// Where the event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// `local` or `kafka`.
    pub kind: String,
    /// Topic, or file path relative to the source root.
    pub stream: String,
    /// Partition (0 for a local file).
    pub partition: u32,
    /// Offset (line number, from 0, for a local file).
    pub offset: u64,
}

/// Time spent per stage, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// When the worker read the event (RFC 3339).
    pub received_at: String,
    /// Fetching media.
    pub fetch_ms: f64,
    /// Decoding, resizing, tokenising.
    pub preprocess_ms: f64,
    /// Waiting for a batch and for the model.
    pub queue_ms: f64,
    /// Model forward passes of the batches that served the event.
    pub model_ms: f64,
    /// From read to output.
    pub total_ms: f64,
}

/// Fields every output record carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Output schema version.
    pub schema_version: u64,
    /// The event id (also the record key).
    pub event_id: String,
    /// The model.
    pub bundle: BundleRef,
    /// The source position.
    pub source: SourcePosition,
    /// Stage timings.
    pub timings: Timings,
    /// Modalities that were present but unusable.
    pub degraded: Vec<Degradation>,
    /// Requested tasks that produced nothing, with reasons.
    pub skipped: Vec<Skipped>,
    /// Tenant of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Attributes of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}

/// A caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionRecord {
    /// Common fields.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// The caption.
    pub caption: String,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// Common fields.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// The question asked.
    pub question: String,
    /// The answer.
    pub answer: String,
}

/// Embeddings (L2-normalised) and the image–text match score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRecord {
    /// Common fields.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Dimension of the bundle's vectors (image, text, fused).
    pub dim: usize,
    /// Image embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_embedding: Option<Vec<f32>>,
    /// Text embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_embedding: Option<Vec<f32>>,
    /// Fused embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fused_embedding: Option<Vec<f32>>,
    /// Cosine similarity of image and text, in [-1, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_score: Option<f32>,
    /// The image's PDQ perceptual hash (task `hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdq: Option<PdqRecord>,
    /// The photo pack's embedding of the image (unit length, the pack's own dimension: 1280
    /// for `photo_embedding`), when the worker loads one (`[embeddings] photo_pack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_embedding: Option<Vec<f32>>,
}

/// A PDQ hash in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdqRecord {
    /// 64 hex digits (the reference's format).
    pub hash: String,
    /// 0–100.
    pub quality: u32,
}

/// One tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagScore {
    /// Label.
    pub label: String,
    /// Score in [0, 1].
    pub score: f32,
    /// `image` or `text`.
    pub source: String,
}

/// Zero-shot tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagRecord {
    /// Common fields.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Tags at or above the threshold, best first (may be empty).
    pub tags: Vec<TagScore>,
}

/// Moderation: every signal measured, the policy's decision and the rules that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationRecord {
    /// Common fields.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// `allow`, `review` or `block`.
    pub decision: crate::moderation::Action,
    /// The rules that fired, most severe first.
    pub rules: Vec<crate::moderation::FiredRule>,
    /// What the models measured.
    pub signals: crate::moderation::Signals,
    /// The policy applied: `default`, or the tenant whose override applied.
    pub policy: String,
}

/// A dead letter: the original payload, why, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    /// Output schema version.
    pub schema_version: u64,
    /// The event id, when the payload had one.
    pub event_id: Option<String>,
    /// Reason code.
    pub reason: ReasonCode,
    /// Detail for people.
    pub detail: String,
    /// The original payload when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The original payload, base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Whether the payload was cut to the dead-letter size limit.
    pub payload_truncated: bool,
    /// Where it came from.
    pub source: SourcePosition,
    /// The model of the worker that refused it.
    pub bundle: BundleRef,
    /// Modalities that were unusable, when the event was parsed.
    pub degraded: Vec<Degradation>,
    /// When it was refused (RFC 3339).
    pub failed_at: String,
    /// `poison_suspected`: how many times the worker died while the event ran alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl DeadLetterRecord {
    /// A dead letter without its payload yet (see [`DeadLetterRecord::with_payload`]).
    pub fn new(
        event_id: Option<String>,
        reason: ReasonCode,
        detail: String,
        source: SourcePosition,
        bundle: BundleRef,
        degraded: Vec<Degradation>,
        failed_at: String,
    ) -> Self {
        Self {
            schema_version: OUTPUT_SCHEMA_VERSION,
            event_id,
            reason,
            detail,
            payload: None,
            payload_base64: None,
            payload_truncated: false,
            source,
            bundle,
            degraded,
            failed_at,
            attempts: None,
        }
    }

    /// Attach `payload`, cut to `limit` bytes.
    pub fn with_payload(mut self, payload: &[u8], limit: usize) -> Self {
        let truncated = payload.len() > limit;
        let kept = &payload[..payload.len().min(limit)];
        match std::str::from_utf8(kept) {
            Ok(s) => self.payload = Some(s.to_owned()),
            Err(e) if truncated && e.error_len().is_none() => {
                // The cut fell inside a character: keep the valid prefix.
                self.payload = Some(String::from_utf8_lossy(&kept[..e.valid_up_to()]).into());
            }
            Err(_) => {
                use base64::Engine as _;
                self.payload_base64 = Some(base64::engine::general_purpose::STANDARD.encode(kept));
            }
        }
        self.payload_truncated = truncated;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl() -> DeadLetterRecord {
        DeadLetterRecord {
            schema_version: OUTPUT_SCHEMA_VERSION,
            event_id: None,
            reason: ReasonCode::MalformedJson,
            detail: String::new(),
            payload: None,
            payload_base64: None,
            payload_truncated: false,
            source: SourcePosition {
                kind: "local".into(),
                stream: "a.jsonl".into(),
                partition: 0,
                offset: 3,
            },
            bundle: BundleRef {
                id: "shapes".into(),
                version: "1".into(),
            },
            degraded: vec![],
            failed_at: String::new(),
            attempts: None,
        }
    }

    #[test]
    fn payloads_keep_text_or_fall_back_to_base64() {
        let r = dl().with_payload(b"{\"id\":", 100);
        assert_eq!(r.payload.as_deref(), Some("{\"id\":"));
        assert!(!r.payload_truncated);
        let r = dl().with_payload(&[0xff, 0xfe, b'a'], 100);
        assert_eq!(r.payload_base64.as_deref(), Some("//5h"));
        let r = dl().with_payload("héllo".as_bytes(), 2);
        assert_eq!(
            (r.payload.as_deref(), r.payload_truncated),
            (Some("h"), true)
        );
    }
}
