//! Output records (JSON, schema v1) as table rows: each record is prepared once when it is
//! written (its free-form fields turned into JSON text, its partition day read), staged per
//! (stream, day), and decoded column by column into an Arrow batch of the table's schema
//! when a batch fills or the transaction flushes. Pure: no I/O.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema as ArrowSchema;
use fusionstream_core::record::Stream;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::schema::{json_text_fields, partition_source};

/// Why a record cannot become a row (a record this worker wrote: a bug, never input).
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// Not a JSON object.
    #[error("a {0} record is not a JSON object: {1}")]
    NotAnObject(&'static str, String),
    /// Its partition timestamp is missing or not RFC 3339.
    #[error("a {stream} record has no valid {field} (RFC 3339): {value}")]
    NoTimestamp {
        /// The stream.
        stream: &'static str,
        /// The field.
        field: String,
        /// What it held.
        value: String,
    },
    /// The rows do not decode into the table's schema.
    #[error("{0} rows do not fit the table's schema: {1}")]
    Decode(&'static str, String),
}

/// One record ready to decode: its partition day and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Days since 1970-01-01 of the partition timestamp.
    pub day: i32,
    /// The record with its free-form fields as JSON text.
    pub json: Vec<u8>,
    /// Its event's source position (`source.partition`, `source.offset`).
    pub at: Option<(u32, u64)>,
}

/// What [`prepare`] reads of a record without building it: the partition timestamp, the
/// source position, and whether a free-form field needs turning into JSON text. (Skipping
/// the rest, embeddings included, costs a scan, not a tree.)
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    timings: Option<TimingsProbe<'a>>,
    #[serde(borrow, default)]
    failed_at: Option<Cow<'a, str>>,
    #[serde(default)]
    source: Option<SourceProbe>,
    #[serde(default)]
    attributes: Option<Free>,
    #[serde(default)]
    signals: Option<Free>,
}

#[derive(serde::Deserialize)]
struct TimingsProbe<'a> {
    #[serde(borrow, default)]
    received_at: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct SourceProbe {
    partition: Option<u64>,
    offset: Option<u64>,
}

/// A free-form field: already text (or null), or a structure to write as JSON text.
enum Free {
    Text,
    Structured,
}

impl<'de> serde::Deserialize<'de> for Free {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Free;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, _: &str) -> Result<Free, E> {
                Ok(Free::Text)
            }
            fn visit_unit<E>(self) -> Result<Free, E> {
                Ok(Free::Text)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Free, E> {
                Ok(Free::Structured)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Free, E> {
                Ok(Free::Structured)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Free, E> {
                Ok(Free::Structured)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Free, E> {
                Ok(Free::Structured)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Free, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Free::Structured)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Free, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Free::Structured)
            }
        }
        d.deserialize_any(V)
    }
}

/// Prepare `json`, a record of `stream`, as a row.
pub fn prepare(stream: Stream, json: &[u8]) -> Result<Row, RowError> {
    let probe: Probe<'_> = serde_json::from_slice(json)
        .map_err(|e| RowError::NotAnObject(stream.name(), e.to_string()))?;
    let structured = |f: &Option<Free>| matches!(f, Some(Free::Structured));
    let rewrite = json_text_fields(stream).iter().any(|f| match *f {
        "attributes" => structured(&probe.attributes),
        "signals" => structured(&probe.signals),
        _ => false,
    });
    if rewrite {
        return prepare_rewritten(stream, json);
    }
    let text = match stream {
        Stream::DeadLetters => probe.failed_at.as_deref(),
        _ => probe
            .timings
            .as_ref()
            .and_then(|t| t.received_at.as_deref()),
    }
    .unwrap_or("");
    let day = day_of(text).ok_or_else(|| no_timestamp(stream, text))?;
    let at = probe
        .source
        .and_then(|s| Some((u32::try_from(s.partition?).ok()?, s.offset?)));
    Ok(Row {
        day,
        json: json.to_vec(),
        at,
    })
}

fn no_timestamp(stream: Stream, text: &str) -> RowError {
    RowError::NoTimestamp {
        stream: stream.name(),
        field: partition_source(stream).join("."),
        value: text.chars().take(40).collect(),
    }
}

/// [`prepare`] for a record whose free-form fields must become JSON text: built, changed
/// and written again.
fn prepare_rewritten(stream: Stream, json: &[u8]) -> Result<Row, RowError> {
    let mut v: Value = serde_json::from_slice(json)
        .map_err(|e| RowError::NotAnObject(stream.name(), e.to_string()))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(RowError::NotAnObject(stream.name(), "not an object".into()));
    };
    let mut changed = false;
    for f in json_text_fields(stream) {
        if let Some(x) = obj.get_mut(*f) {
            if !x.is_string() && !x.is_null() {
                *x = Value::String(x.to_string());
                changed = true;
            }
        }
    }
    let path = partition_source(stream);
    let at = path.iter().try_fold(&v, |v, k| v.get(*k));
    let text = at.and_then(Value::as_str).unwrap_or("");
    let day = day_of(text).ok_or_else(|| no_timestamp(stream, text))?;
    let at = v.get("source").and_then(|s| {
        let p = u32::try_from(s.get("partition")?.as_u64()?).ok()?;
        Some((p, s.get("offset")?.as_u64()?))
    });
    let json = if changed {
        serde_json::to_vec(&v).map_err(|e| RowError::NotAnObject(stream.name(), e.to_string()))?
    } else {
        json.to_vec()
    };
    Ok(Row { day, json, at })
}

/// Days since 1970-01-01 of the date an RFC 3339 timestamp starts with (`YYYY-MM-DD…`, in UTC
/// as this worker writes them).
pub fn day_of(rfc3339: &str) -> Option<i32> {
    let d = rfc3339.get(..10)?;
    let b = d.as_bytes();
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let y: i64 = d.get(..4)?.parse().ok()?;
    let m: i64 = d.get(5..7)?.parse().ok()?;
    let dd: i64 = d.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) {
        return None;
    }
    // Days from civil (proleptic Gregorian), after H. Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

/// `YYYY-MM-DD` of a day number (the Hive-style `dt=` of the Parquet mode).
pub fn date_of(day: i32) -> String {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Decode `rows` (of `stream`) into one batch of `schema`. Fields the schema lacks are left
/// out; fields a row lacks are null.
pub fn decode(
    stream: Stream,
    schema: &Arc<ArrowSchema>,
    rows: &[Row],
) -> Result<RecordBatch, RowError> {
    let err = |e: arrow_schema::ArrowError| RowError::Decode(stream.name(), e.to_string());
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .with_strict_mode(false)
        .build_decoder()
        .map_err(err)?;
    for r in rows {
        let mut used = 0;
        while used < r.json.len() {
            let n = decoder.decode(&r.json[used..]).map_err(err)?;
            if n == 0 {
                break;
            }
            used += n;
        }
        decoder.decode(b"\n").map_err(err)?;
    }
    Ok(decoder
        .flush()
        .map_err(err)?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array as _;
    use proptest::prelude::*;

    use crate::schema::table_schema;

    fn arrow(stream: Stream) -> Arc<ArrowSchema> {
        Arc::new(iceberg::arrow::schema_to_arrow_schema(&table_schema(stream).unwrap()).unwrap())
    }

    const META: &str = r#""schema_version":1,"event_id":"e1","bundle":{"id":"shapes","version":"1.4.0"},
        "source":{"kind":"s3","stream":"s3://b/p/","partition":0,"offset":7},
        "timings":{"received_at":"2026-12-07T17:01:53.123456Z","fetch_ms":1.5,"preprocess_ms":2.0,
        "queue_ms":0.5,"model_ms":3.25,"total_ms":8.0},
        "degraded":[{"modality":"image","reason":"image_corrupt"}],"skipped":[],
        "attributes":{"k":[1,2]}"#;

    #[test]
    fn an_embedding_record_decodes_into_typed_columns() {
        let json = format!(
            r#"{{{META},"dim":3,"image_embedding":[0.5,-1.0,2.0],"text_embedding":null,
            "pdq":{{"hash":"ab","quality":90}}}}"#
        );
        let row = prepare(Stream::Embeddings, json.as_bytes()).unwrap();
        assert_eq!(row.day, day_of("2026-12-07").unwrap());
        assert_eq!(row.at, Some((0, 7)));
        let b = decode(Stream::Embeddings, &arrow(Stream::Embeddings), &[row]).unwrap();
        assert_eq!(b.num_rows(), 1);
        let emb = b
            .column_by_name("image_embedding")
            .unwrap()
            .as_list::<i32>();
        let v = emb.value(0);
        let f = v.as_primitive::<arrow_array::types::Float32Type>();
        assert_eq!(f.values().to_vec(), vec![0.5, -1.0, 2.0]);
        assert!(b.column_by_name("text_embedding").unwrap().is_null(0));
        let attrs = b.column_by_name("attributes").unwrap().as_string::<i32>();
        assert_eq!(attrs.value(0), r#"{"k":[1,2]}"#);
        let t = b.column_by_name("timings").unwrap().as_struct();
        let at = t.column_by_name("received_at").unwrap();
        let at = at.as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        assert_eq!(at.value(0) % 1_000_000, 123_456);
    }

    #[test]
    fn moderation_signals_and_tags_decode() {
        let m = format!(
            r#"{{{META},"decision":"review","rules":[{{"rule":"nsfw","score":0.9,"threshold":0.8,
            "action":"review"}}],"signals":{{"nsfw":0.9,"similarity":[]}},"policy":"default"}}"#
        );
        let row = prepare(Stream::Moderation, m.as_bytes()).unwrap();
        let b = decode(Stream::Moderation, &arrow(Stream::Moderation), &[row]).unwrap();
        let s = b.column_by_name("signals").unwrap().as_string::<i32>();
        assert_eq!(s.value(0), r#"{"nsfw":0.9,"similarity":[]}"#);
        let t =
            format!(r#"{{{META},"tags":[{{"label":"circle","score":0.7,"source":"zero_shot"}}]}}"#);
        let row = prepare(Stream::Tags, t.as_bytes()).unwrap();
        let b = decode(Stream::Tags, &arrow(Stream::Tags), &[row.clone(), row]).unwrap();
        assert_eq!(b.num_rows(), 2);
    }

    #[test]
    fn a_record_without_free_form_fields_is_kept_as_it_is() {
        let meta = META.split(r#""attributes""#).next().unwrap().trim_end();
        let meta = meta.trim_end_matches(',');
        let json = format!(r#"{{{meta},"caption":"a red circle"}}"#);
        let row = prepare(Stream::Captions, json.as_bytes()).unwrap();
        assert_eq!(row.json, json.as_bytes(), "not rewritten");
        assert_eq!(
            (row.day, row.at),
            (day_of("2026-12-07").unwrap(), Some((0, 7)))
        );
        // The same as the rewriting path reads.
        let slow = prepare_rewritten(Stream::Captions, json.as_bytes()).unwrap();
        assert_eq!((slow.day, slow.at), (row.day, row.at));
        let b = decode(Stream::Captions, &arrow(Stream::Captions), &[row]).unwrap();
        assert!(b.column_by_name("attributes").unwrap().is_null(0));
    }

    #[test]
    fn a_record_without_its_timestamp_is_refused() {
        let e = prepare(Stream::Captions, br#"{"event_id":"x","caption":"c"}"#).unwrap_err();
        assert!(matches!(e, RowError::NoTimestamp { .. }), "{e}");
        assert!(prepare(Stream::Captions, b"[1]").is_err());
        let dl =
            br#"{"event_id":null,"reason":"no_usable_input","failed_at":"2026-01-02T00:00:00Z"}"#;
        assert_eq!(
            prepare(Stream::DeadLetters, dl).unwrap().day,
            day_of("2026-01-02").unwrap()
        );
    }

    #[test]
    fn a_row_missing_a_required_column_does_not_decode() {
        let row = Row {
            day: 0,
            json: br#"{"caption":"no event id"}"#.to_vec(),
            at: None,
        };
        assert!(decode(Stream::Captions, &arrow(Stream::Captions), &[row]).is_err());
    }

    #[test]
    fn known_days() {
        assert_eq!(day_of("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(day_of("2000-03-01"), Some(11_017));
        assert_eq!(day_of("2026-13-01"), None);
        assert_eq!(day_of("20261201"), None);
        assert_eq!(date_of(0), "1970-01-01");
    }

    proptest! {
        #[test]
        fn dates_and_days_round_trip(day in -200_000i32..200_000) {
            prop_assert_eq!(day_of(&date_of(day)), Some(day));
        }
    }
}
