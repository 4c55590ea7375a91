//! Every reason code the worker writes: why a modality was unusable (a record's `degraded`
//! entries), why an event was dead-lettered (a dead letter's `reason`), and the labels of the
//! `fusionstream_dead_letters_total` / `fusionstream_degraded_total` metrics. One enum, so a
//! code cannot be misspelt at one call site, and the schemas and `docs/bad-inputs.md` are
//! checked against [`ReasonCode::ALL`].

use serde::{Deserialize, Serialize};

use crate::task::SkipReason;

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $kind:ident; )*) => {
        /// A stable, machine-readable reason code (`snake_case` on the wire).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum ReasonCode {
            $( $(#[$doc])* #[serde(rename = $code)] $variant, )*
        }

        impl ReasonCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant,)*];

            /// The code as written in records and metric labels.
            pub const fn as_str(self) -> &'static str {
                match self { $(ReasonCode::$variant => $code,)* }
            }

            /// What the code is about.
            pub const fn kind(self) -> ReasonKind {
                match self { $(ReasonCode::$variant => ReasonKind::$kind,)* }
            }
        }
    };
}

/// What a reason code is about: it tells where it can appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// The payload is not a valid event: dead letter only.
    Rejected,
    /// A modality is unusable: a `degraded` entry, or the dead letter's reason when nothing
    /// else serves the event (or the policy dead-letters image failures).
    Unusable,
    /// A modality was longer than the model takes and was cut to fit: a `degraded` entry on
    /// outputs computed from what fits (never a dead letter's reason).
    Truncated,
    /// A requested task had no input: a `skipped` entry, or the dead letter's reason when no
    /// output could be produced at all.
    Skipped,
    /// The event could not be processed: dead letter only.
    Failed,
}

reason_codes! {
    /// Larger than `source.max_event_bytes`.
    EventTooLarge = "event_too_large", Rejected;
    /// No bytes at all (a Kafka tombstone, an empty line).
    EmptyPayload = "empty_payload", Rejected;
    /// Not JSON (or not UTF-8).
    MalformedJson = "malformed_json", Rejected;
    /// JSON, but not an object.
    NotAnObject = "not_an_object", Rejected;
    /// A `schema_version` this worker does not read.
    UnsupportedSchemaVersion = "unsupported_schema_version", Rejected;
    /// No `id`.
    MissingId = "missing_id", Rejected;
    /// A field of the wrong type or value.
    InvalidField = "invalid_field", Rejected;
    /// A field the schema does not have.
    UnknownField = "unknown_field", Rejected;
    /// `text` longer than `limits.max_text_bytes`.
    TextTooLong = "text_too_long", Unusable;
    /// `question` longer than `limits.max_text_bytes`.
    QuestionTooLong = "question_too_long", Unusable;
    /// `text` the tokenizer cannot encode.
    TextUntokenizable = "text_untokenizable", Unusable;
    /// `question` the tokenizer cannot encode.
    QuestionUntokenizable = "question_untokenizable", Unusable;
    /// `text` of more tokens than the model's positions: cut to fit, used as cut.
    TextTruncated = "text_truncated", Truncated;
    /// `question` of more tokens than the model's positions: cut to fit, used as cut.
    QuestionTruncated = "question_truncated", Truncated;
    /// An image reference that is not a path, an `s3://` URL or inline base64.
    ImageRefInvalid = "image_ref_invalid", Unusable;
    /// An image reference of a scheme this worker does not fetch.
    ImageRefUnsupported = "image_ref_unsupported", Unusable;
    /// `image_base64` that is not base64.
    ImageInvalidBase64 = "image_invalid_base64", Unusable;
    /// A local path outside the media root.
    ImageRefForbidden = "image_ref_forbidden", Unusable;
    /// An `s3://` reference on a worker without an S3 store.
    ImageStoreUnconfigured = "image_store_unconfigured", Unusable;
    /// No such object or file.
    ImageNotFound = "image_not_found", Unusable;
    /// The store refused access.
    ImageAccessDenied = "image_access_denied", Unusable;
    /// Larger than `media.max_bytes`.
    ImageTooLarge = "image_too_large", Unusable;
    /// Every fetch attempt timed out.
    ImageFetchTimeout = "image_fetch_timeout", Unusable;
    /// Every fetch attempt failed with a retryable error.
    ImageFetchFailed = "image_fetch_failed", Unusable;
    /// Zero bytes.
    ImageEmpty = "image_empty", Unusable;
    /// More pixels than `preprocess.max_pixels`.
    ImageTooManyPixels = "image_too_many_pixels", Unusable;
    /// Not a format the worker decodes.
    ImageUnsupportedFormat = "image_unsupported_format", Unusable;
    /// Claims a format but does not decode.
    ImageCorrupt = "image_corrupt", Unusable;
    /// The task needs an image and the event has none.
    ImageAbsent = "image_absent", Skipped;
    /// The task needs text and the event has none.
    TextAbsent = "text_absent", Skipped;
    /// The task needs a question and the event has none.
    QuestionAbsent = "question_absent", Skipped;
    /// The bundle has no part for the task.
    ModelAbsent = "model_absent", Skipped;
    /// No image, text or question at all.
    NoUsableInput = "no_usable_input", Failed;
    /// No requested task can run on the modalities given.
    NoServableTask = "no_servable_task", Failed;
    /// The event's `deadline` passed before it ran.
    DeadlineExceeded = "deadline_exceeded", Failed;
    /// Tasks ran but none produced an output.
    NoOutput = "no_output", Failed;
    /// The model failed on this event alone.
    ModelError = "model_error", Failed;
    /// A panic while this event was decoded, preprocessed or run alone.
    InternalError = "internal_error", Failed;
    /// The worker died every time this event ran alone (crash-loop guard).
    PoisonSuspected = "poison_suspected", Failed;
    /// An output record the broker refuses even after cutting.
    OutputTooLarge = "output_too_large", Failed;
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compare with a code as written (`code == "image_not_found"`), for tests and filters.
impl PartialEq<&str> for ReasonCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<ReasonCode> for &str {
    fn eq(&self, other: &ReasonCode) -> bool {
        *self == other.as_str()
    }
}

impl From<SkipReason> for ReasonCode {
    fn from(r: SkipReason) -> Self {
        match r {
            SkipReason::ImageAbsent => ReasonCode::ImageAbsent,
            SkipReason::TextAbsent => ReasonCode::TextAbsent,
            SkipReason::QuestionAbsent => ReasonCode::QuestionAbsent,
            SkipReason::ModelAbsent => ReasonCode::ModelAbsent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &c in ReasonCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{s}"
            );
            let json = serde_json::to_string(&c).expect("serialises");
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<ReasonCode>(&json).ok(), Some(c));
        }
    }

    #[test]
    fn skip_reasons_keep_their_codes() {
        for r in [
            SkipReason::ImageAbsent,
            SkipReason::TextAbsent,
            SkipReason::QuestionAbsent,
            SkipReason::ModelAbsent,
        ] {
            assert_eq!(ReasonCode::from(r).as_str(), r.code());
        }
    }
}
