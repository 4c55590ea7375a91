//! The input event, schema v1 (`schemas/v1/event.schema.json`): parsing, validation and
//! per-field limits.
//!
//! A payload that cannot be an event at all (not JSON, unknown schema version, no id, a
//! field of the wrong type, an unknown field) is rejected with a reason code and goes to
//! the dead-letter stream. A field that is well-formed but unusable (text over its limit,
//! invalid base64, an unsupported image reference) only makes that modality unusable: the
//! degradation matrix then decides what the event still gets.
//!
//! Long because every field's parsing and its rejection
//! codes read as one table; the tests cover each code.

use std::path::PathBuf;
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::reason::ReasonCode;
use crate::schedule::Priority;
use crate::task::{Task, TaskSet};

/// Schema version this crate reads.
pub const SCHEMA_VERSION: u64 = 1;

/// Fields of a v1 event.
pub const FIELDS: [&str; 12] = [
    "schema_version",
    "id",
    "image",
    "image_base64",
    "text",
    "question",
    "tasks",
    "tenant",
    "attributes",
    "timestamp",
    "deadline",
    "priority",
];

/// Size limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Largest payload accepted, bytes.
    pub max_event_bytes: usize,
    /// Longest usable text, bytes.
    pub max_text_bytes: usize,
    /// Longest usable question, bytes.
    pub max_question_bytes: usize,
    /// Largest inline image after base64 decoding, bytes.
    pub max_inline_image_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_event_bytes: 8 << 20,
            max_text_bytes: 16 << 10,
            max_question_bytes: 1 << 10,
            max_inline_image_bytes: 4 << 20,
        }
    }
}

/// Longest event id.
pub const MAX_ID_BYTES: usize = 256;

/// Where the image of an event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `s3://bucket/key`.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A local path (`file://` or a plain path, relative to the media root).
    Local(PathBuf),
    /// Bytes carried in the event (`image_base64`).
    Inline(Vec<u8>),
}

/// A modality of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<T> {
    /// Not in the event.
    Absent,
    /// Present and usable so far.
    Present(T),
    /// Present but unusable; the reason code.
    Unusable(ReasonCode),
}

impl<T> Input<T> {
    /// The value when present.
    pub fn present(&self) -> Option<&T> {
        match self {
            Input::Present(v) => Some(v),
            _ => None,
        }
    }
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Producer-chosen id (outputs are keyed by it).
    pub id: String,
    /// The image.
    pub image: Input<ImageSource>,
    /// Text to embed, match and tag.
    pub text: Input<String>,
    /// Question about the image.
    pub question: Input<String>,
    /// Requested tasks (when the event names none: every task of the bundle, see
    /// [`TaskSet::unnamed`]).
    pub tasks: TaskSet,
    /// Whether the event named its tasks.
    pub tasks_named: bool,
    /// Tenant, for policy and accounting.
    pub tenant: Option<String>,
    /// Free-form attributes, copied to every output.
    pub attributes: Option<Map<String, Value>>,
    /// When the producer created the event.
    pub timestamp: Option<SystemTime>,
    /// After this instant the event is not worth processing.
    pub deadline: Option<SystemTime>,
    /// How urgent it is, when the event says (otherwise the worker's default for its tenant,
    /// topic or source applies).
    pub priority: Option<Priority>,
}

/// Why a payload is not an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Larger than `max_event_bytes`.
    EventTooLarge,
    /// No bytes at all (a Kafka tombstone, an empty line).
    EmptyPayload,
    /// Not JSON (or not UTF-8).
    MalformedJson,
    /// JSON, but not an object.
    NotAnObject,
    /// A `schema_version` this worker does not read.
    UnsupportedSchemaVersion,
    /// No `id`.
    MissingId,
    /// A field of the wrong type or value.
    InvalidField,
    /// A field the schema does not have (a typo would otherwise pass silently).
    UnknownField,
}

impl RejectReason {
    /// Stable reason code.
    pub fn code(self) -> ReasonCode {
        match self {
            RejectReason::EventTooLarge => ReasonCode::EventTooLarge,
            RejectReason::EmptyPayload => ReasonCode::EmptyPayload,
            RejectReason::MalformedJson => ReasonCode::MalformedJson,
            RejectReason::NotAnObject => ReasonCode::NotAnObject,
            RejectReason::UnsupportedSchemaVersion => ReasonCode::UnsupportedSchemaVersion,
            RejectReason::MissingId => ReasonCode::MissingId,
            RejectReason::InvalidField => ReasonCode::InvalidField,
            RejectReason::UnknownField => ReasonCode::UnknownField,
        }
    }
}

/// A rejected payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.code())]
pub struct Rejection {
    /// Reason.
    pub reason: RejectReason,
    /// Human-readable detail.
    pub detail: String,
    /// The id, when the payload had a usable one.
    pub event_id: Option<String>,
}

fn reject(reason: RejectReason, detail: impl Into<String>, id: Option<&str>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
        event_id: id.map(str::to_owned),
    }
}

/// Parse and validate one payload: its size, its JSON, its id, its schema, then each field.
pub fn parse_event(payload: &[u8], limits: &EventLimits) -> Result<Event, Rejection> {
    let obj = json_object(payload, limits)?;
    let id = event_id(&obj)?;
    let f = Fields { obj: &obj, id: &id };
    f.check_schema()?;
    let text = bounded_text(
        f.string("text")?,
        limits.max_text_bytes,
        ReasonCode::TextTooLong,
    );
    let question = bounded_text(
        f.string("question")?,
        limits.max_question_bytes,
        ReasonCode::QuestionTooLong,
    );
    // Checked in the order of the schema: the first bad field is the one reported.
    let image = f.image(limits)?;
    let tasks = f.tasks()?;
    let tenant = f.string("tenant")?.map(str::to_owned);
    let attributes = f.attributes()?;
    let priority = f.priority()?;
    Ok(Event {
        priority,
        timestamp: f.time("timestamp")?,
        deadline: f.time("deadline")?,
        image,
        text,
        question,
        tasks_named: !matches!(obj.get("tasks"), None | Some(Value::Null)),
        tasks,
        tenant,
        attributes,
        id,
    })
}

/// The payload as a JSON object, unless it is too large, empty, not JSON or not an object.
fn json_object(payload: &[u8], limits: &EventLimits) -> Result<Map<String, Value>, Rejection> {
    if payload.len() > limits.max_event_bytes {
        return Err(reject(
            RejectReason::EventTooLarge,
            format!("{} bytes, limit {}", payload.len(), limits.max_event_bytes),
            None,
        ));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(reject(
            RejectReason::EmptyPayload,
            "no payload (a tombstone or an empty record)",
            None,
        ));
    }
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| reject(RejectReason::MalformedJson, e.to_string(), None))?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(reject(
            RejectReason::NotAnObject,
            format!("expected an object, got {}", kind(&other)),
            None,
        )),
    }
}

/// The event's `id`: a non-empty string of at most [`MAX_ID_BYTES`].
fn event_id(obj: &Map<String, Value>) -> Result<String, Rejection> {
    match obj.get("id") {
        None | Some(Value::Null) => Err(reject(RejectReason::MissingId, "no \"id\"", None)),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_ID_BYTES => Ok(s.clone()),
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => Err(reject(
            RejectReason::InvalidField,
            format!("\"id\" is {} bytes, limit {MAX_ID_BYTES}", s.len()),
            None,
        )),
        Some(v) => Err(reject(
            RejectReason::InvalidField,
            format!("\"id\" must be a non-empty string, got {}", kind(v)),
            None,
        )),
    }
}

/// The fields of an event whose id is known (rejections carry it).
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    id: &'a str,
}

impl<'a> Fields<'a> {
    fn bad(&self, detail: String) -> Rejection {
        reject(RejectReason::InvalidField, detail, Some(self.id))
    }

    /// A `schema_version` this worker reads (or none), and no field the schema lacks.
    fn check_schema(&self) -> Result<(), Rejection> {
        match self.obj.get("schema_version") {
            None => {}
            Some(Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION) => {}
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                return Err(reject(
                    RejectReason::UnsupportedSchemaVersion,
                    format!("schema_version {n}; this worker reads {SCHEMA_VERSION}"),
                    Some(self.id),
                ))
            }
            Some(v) => {
                return Err(self.bad(format!(
                    "\"schema_version\" must be a positive integer, got {}",
                    kind(v)
                )))
            }
        }
        let unknown: Vec<&str> = self
            .obj
            .keys()
            .map(String::as_str)
            .filter(|k| !FIELDS.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(reject(
                RejectReason::UnknownField,
                format!("unknown field(s) {unknown:?}"),
                Some(self.id),
            ));
        }
        Ok(())
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>, Rejection> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.bad(format!("\"{name}\" must be a string, got {}", kind(v)))),
        }
    }

    /// `image` (a reference) or `image_base64` (inline bytes), at most one of them.
    fn image(&self, limits: &EventLimits) -> Result<Input<ImageSource>, Rejection> {
        Ok(
            match (self.string("image")?, self.string("image_base64")?) {
                (Some(_), Some(_)) => {
                    return Err(
                        self.bad("\"image\" and \"image_base64\" are exclusive; give one".into())
                    )
                }
                (Some(r), None) => image_ref(r),
                (None, Some(b)) => inline_image(b, limits.max_inline_image_bytes),
                (None, None) => Input::Absent,
            },
        )
    }

    /// The named tasks (non-empty), or every task the worker serves when none are named.
    fn tasks(&self) -> Result<TaskSet, Rejection> {
        match self.obj.get("tasks") {
            None | Some(Value::Null) => Ok(TaskSet::unnamed()),
            Some(Value::Array(a)) => {
                let mut set = TaskSet::default();
                for v in a {
                    let t = v.as_str().ok_or_else(|| {
                        self.bad(format!("\"tasks\" holds {}, not a task name", kind(v)))
                    })?;
                    set.insert(t.parse::<Task>().map_err(|e| self.bad(e))?);
                }
                if set.is_empty() {
                    return Err(self.bad("\"tasks\" is empty".into()));
                }
                Ok(set)
            }
            Some(v) => Err(self.bad(format!("\"tasks\" must be an array, got {}", kind(v)))),
        }
    }

    fn attributes(&self) -> Result<Option<Map<String, Value>>, Rejection> {
        match self.obj.get("attributes") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(v) => Err(self.bad(format!("\"attributes\" must be an object, got {}", kind(v)))),
        }
    }

    fn time(&self, name: &str) -> Result<Option<SystemTime>, Rejection> {
        self.string(name)?
            .map(|s| {
                humantime::parse_rfc3339_weak(s)
                    .map_err(|e| self.bad(format!("\"{name}\" is not an RFC 3339 time: {e}")))
            })
            .transpose()
    }

    /// `high`, `normal`, `low`, or the levels 0 to 2.
    fn priority(&self) -> Result<Option<Priority>, Rejection> {
        match self.obj.get("priority") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.parse::<Priority>().map_err(|e| self.bad(e))?)),
            Some(Value::Number(n)) => {
                let level = n.as_u64().and_then(Priority::from_level);
                let why = || {
                    self.bad(format!(
                        "\"priority\" {n}: expected 0 (high), 1 (normal) or 2 (low)"
                    ))
                };
                Ok(Some(level.ok_or_else(why)?))
            }
            Some(v) => Err(self.bad(format!(
                "\"priority\" must be high, normal, low or 0-2, got {}",
                kind(v)
            ))),
        }
    }
}

fn bounded_text(s: Option<&str>, max: usize, code: ReasonCode) -> Input<String> {
    match s {
        None => Input::Absent,
        Some(s) if s.trim().is_empty() => Input::Absent,
        Some(s) if s.len() > max => Input::Unusable(code),
        Some(s) => Input::Present(s.to_owned()),
    }
}

/// Bucket and key (or key prefix, possibly empty) of an `s3://bucket/…` URL; `None` when it
/// is not one or names no bucket.
pub fn split_s3_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key))
}

fn image_ref(r: &str) -> Input<ImageSource> {
    if r.starts_with("s3://") {
        return match split_s3_url(r) {
            Some((bucket, key)) if !key.is_empty() => Input::Present(ImageSource::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            _ => Input::Unusable(ReasonCode::ImageRefInvalid),
        };
    }
    if let Some(path) = r.strip_prefix("file://") {
        return if path.is_empty() {
            Input::Unusable(ReasonCode::ImageRefInvalid)
        } else {
            Input::Present(ImageSource::Local(PathBuf::from(path)))
        };
    }
    if r.trim().is_empty() {
        return Input::Absent;
    }
    if r.contains("://") {
        return Input::Unusable(ReasonCode::ImageRefUnsupported);
    }
    Input::Present(ImageSource::Local(PathBuf::from(r)))
}

fn inline_image(b: &str, max: usize) -> Input<ImageSource> {
    // Accept a data URI as well as bare base64.
    let data = match b.split_once(";base64,") {
        Some((head, data)) if head.starts_with("data:") => data,
        _ => b,
    };
    // Refuse from the encoded length, before decoding anything.
    if data.len() / 4 * 3 > max + 2 {
        return Input::Unusable(ReasonCode::ImageTooLarge);
    }
    match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
        Ok(bytes) if bytes.len() > max => Input::Unusable(ReasonCode::ImageTooLarge),
        Ok(bytes) => Input::Present(ImageSource::Inline(bytes)),
        Err(_) => Input::Unusable(ReasonCode::ImageInvalidBase64),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Event, Rejection> {
        parse_event(
            s.as_bytes(),
            &EventLimits {
                max_event_bytes: 4096,
                max_text_bytes: 20,
                max_question_bytes: 10,
                max_inline_image_bytes: 8,
            },
        )
    }

    fn code(s: &str) -> &'static str {
        parse(s).expect_err("rejected").reason.code().as_str()
    }

    #[test]
    fn full_event() {
        let e = parse(
            r#"{"schema_version":1,"id":"e1","image":"s3://b/k/x.jpg","text":"a red circle",
                "question":"what?","tasks":["caption","embed"],"tenant":"t","attributes":{"a":1},
                "timestamp":"2026-11-27T10:00:00Z","deadline":"2026-11-27T10:05:00.5Z",
                "priority":"high"}"#,
        )
        .expect("valid");
        assert_eq!(e.id, "e1");
        assert_eq!(
            e.image,
            Input::Present(ImageSource::S3 {
                bucket: "b".into(),
                key: "k/x.jpg".into()
            })
        );
        assert_eq!(e.text, Input::Present("a red circle".into()));
        assert_eq!(e.tasks, TaskSet::parse_list("embed,caption").expect("ok"));
        assert!(e.deadline > e.timestamp);
        assert_eq!(e.priority, Some(Priority::High));
        let level = |s: &str| parse(s).expect("valid").priority;
        assert_eq!(
            level(r#"{"id":"x","text":"t","priority":2}"#),
            Some(Priority::Low)
        );
        assert_eq!(level(r#"{"id":"x","text":"t"}"#), None);
    }

    #[test]
    fn minimal_event_asks_for_everything() {
        let e = parse(r#"{"id":"x","text":"hi"}"#).expect("valid");
        assert_eq!(e.tasks, TaskSet::unnamed());
        assert!(!e.tasks_named);
        assert_eq!(e.image, Input::Absent);
        assert_eq!(e.question, Input::Absent);
    }

    #[test]
    fn rejections_have_reason_codes() {
        assert_eq!(code(""), "empty_payload");
        assert_eq!(code(" \n"), "empty_payload");
        assert_eq!(code("{\"id\":"), "malformed_json");
        assert_eq!(code("\u{1}"), "malformed_json");
        assert_eq!(code("[1,2]"), "not_an_object");
        assert_eq!(code(r#"{"text":"x"}"#), "missing_id");
        assert_eq!(code(r#"{"id":7}"#), "invalid_field");
        assert_eq!(code(r#"{"id":""}"#), "invalid_field");
        assert_eq!(
            code(r#"{"id":"a","schema_version":2}"#),
            "unsupported_schema_version"
        );
        assert_eq!(code(r#"{"id":"a","schema_version":"1"}"#), "invalid_field");
        assert_eq!(code(r#"{"id":"a","text":5}"#), "invalid_field");
        assert_eq!(code(r#"{"id":"a","tasks":"embed"}"#), "invalid_field");
        assert_eq!(code(r#"{"id":"a","tasks":["paint"]}"#), "invalid_field");
        assert_eq!(code(r#"{"id":"a","tasks":[]}"#), "invalid_field");
        assert_eq!(
            code(r#"{"id":"a","timestamp":"yesterday"}"#),
            "invalid_field"
        );
        assert_eq!(
            code(r#"{"id":"a","image":"x","image_base64":"AA=="}"#),
            "invalid_field"
        );
        assert_eq!(code(r#"{"id":"a","priority":"urgent"}"#), "invalid_field");
        assert_eq!(code(r#"{"id":"a","priority":3}"#), "invalid_field");
        assert_eq!(code(r#"{"id":"a","priority":-1}"#), "invalid_field");
        assert_eq!(code(r#"{"id":"a","priority":[1]}"#), "invalid_field");
        assert_eq!(code(r#"{"id":"a","qestion":"typo"}"#), "unknown_field");
        let big = format!(r#"{{"id":"a","text":"{}"}}"#, "x".repeat(5000));
        assert_eq!(code(&big), "event_too_large");
        // The id survives in rejections that come after it is read.
        assert_eq!(
            parse(r#"{"id":"keep","text":5}"#)
                .expect_err("bad")
                .event_id
                .as_deref(),
            Some("keep")
        );
    }

    #[test]
    fn unusable_fields_only_disable_their_modality() {
        let e =
            parse(r#"{"id":"a","text":"this text is longer than twenty bytes","question":"ok?"}"#)
                .expect("valid");
        assert_eq!(e.text, Input::Unusable(ReasonCode::TextTooLong));
        assert_eq!(e.question, Input::Present("ok?".into()));
        let e = parse(r#"{"id":"a","image_base64":"not base64!!"}"#).expect("valid");
        assert_eq!(e.image, Input::Unusable(ReasonCode::ImageInvalidBase64));
        let e = parse(r#"{"id":"a","image_base64":"AAAAAAAAAAAAAAAAAAAA"}"#).expect("valid");
        assert_eq!(e.image, Input::Unusable(ReasonCode::ImageTooLarge));
        let e = parse(r#"{"id":"a","image_base64":"data:image/png;base64,AAEC"}"#).expect("valid");
        assert_eq!(e.image, Input::Present(ImageSource::Inline(vec![0, 1, 2])));
        let e = parse(r#"{"id":"a","image":"https://x/y.png"}"#).expect("valid");
        assert_eq!(e.image, Input::Unusable(ReasonCode::ImageRefUnsupported));
        let e = parse(r#"{"id":"a","image":"s3://bucket-only"}"#).expect("valid");
        assert_eq!(e.image, Input::Unusable(ReasonCode::ImageRefInvalid));
        let e = parse(r#"{"id":"a","image":"media/a.png","text":"  "}"#).expect("valid");
        assert_eq!(
            e.image,
            Input::Present(ImageSource::Local("media/a.png".into()))
        );
        assert_eq!(e.text, Input::Absent);
    }
}
