//! The tables' schemas: one table per output stream, typed columns that follow the output
//! records of schema v1 (`schemas/v1/*.schema.json`) field for field, nested where the
//! record nests (`bundle`, `source`, `timings`), so that a row is the record and a reader
//! needs no JSON parsing except for the two free-form fields kept as JSON text
//! (`attributes`, the moderation `signals`).
//!
//! Partitioned by day of `timings.received_at` (dead letters: of `failed_at`).
//!
//! **Evolution**: a column this code has and the table lacks is added (optional) when the
//! sink opens the table; a column the table has and this code lacks stays, null in new rows;
//! a type never changes in place (a new column name instead). Field ids are the catalog's.

use fusionstream_core::record::Stream;
use iceberg::spec::{
    ListType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Transform, Type,
    UnboundPartitionField, UnboundPartitionSpec,
};

/// Fields kept as JSON text, per stream (`attributes` of every record; the moderation
/// record's `signals`).
pub fn json_text_fields(stream: Stream) -> &'static [&'static str] {
    match stream {
        Stream::Moderation => &["attributes", "signals"],
        Stream::DeadLetters => &[],
        _ => &["attributes"],
    }
}

/// The timestamp column the table is partitioned by (its day).
pub fn partition_source(stream: Stream) -> &'static [&'static str] {
    match stream {
        Stream::DeadLetters => &["failed_at"],
        _ => &["timings", "received_at"],
    }
}

/// Hands out field ids in order.
struct Ids(i32);

impl Ids {
    fn next(&mut self) -> i32 {
        self.0 += 1;
        self.0
    }
    fn opt(&mut self, name: &str, ty: Type) -> NestedFieldRef {
        NestedField::optional(self.next(), name, ty).into()
    }
    fn req(&mut self, name: &str, ty: Type) -> NestedFieldRef {
        NestedField::required(self.next(), name, ty).into()
    }
    fn list(&mut self, element: Type) -> Type {
        Type::List(ListType {
            element_field: NestedField::list_element(self.next(), element, false).into(),
        })
    }
}

fn p(t: PrimitiveType) -> Type {
    Type::Primitive(t)
}

fn string() -> Type {
    p(PrimitiveType::String)
}

fn bundle(ids: &mut Ids) -> Type {
    Type::Struct(StructType::new(vec![
        ids.opt("id", string()),
        ids.opt("version", string()),
    ]))
}

fn source(ids: &mut Ids) -> Type {
    Type::Struct(StructType::new(vec![
        ids.opt("kind", string()),
        ids.opt("stream", string()),
        ids.opt("partition", p(PrimitiveType::Int)),
        ids.opt("offset", p(PrimitiveType::Long)),
    ]))
}

fn pair(ids: &mut Ids, a: &str, b: &str) -> Type {
    let st = Type::Struct(StructType::new(vec![
        ids.opt(a, string()),
        ids.opt(b, string()),
    ]));
    ids.list(st)
}

/// The fields every record but a dead letter carries (`RecordMeta`).
fn meta(ids: &mut Ids) -> Vec<NestedFieldRef> {
    let double = || p(PrimitiveType::Double);
    let bundle = bundle(ids);
    let source = source(ids);
    let timings = Type::Struct(StructType::new(vec![
        ids.opt("received_at", p(PrimitiveType::Timestamptz)),
        ids.opt("fetch_ms", double()),
        ids.opt("preprocess_ms", double()),
        ids.opt("queue_ms", double()),
        ids.opt("model_ms", double()),
        ids.opt("total_ms", double()),
    ]));
    let degraded = pair(ids, "modality", "reason");
    let skipped = pair(ids, "task", "reason");
    vec![
        ids.req("event_id", string()),
        ids.opt("schema_version", p(PrimitiveType::Long)),
        ids.opt("bundle", bundle),
        ids.opt("source", source),
        ids.opt("timings", timings),
        ids.opt("degraded", degraded),
        ids.opt("skipped", skipped),
        ids.opt("tenant", string()),
        ids.opt("attributes", string()),
    ]
}

/// The fields of `stream`'s own record after the meta fields.
fn own(ids: &mut Ids, stream: Stream) -> Vec<NestedFieldRef> {
    let float = || p(PrimitiveType::Float);
    match stream {
        Stream::Captions => vec![ids.opt("caption", string())],
        Stream::Answers => vec![ids.opt("question", string()), ids.opt("answer", string())],
        Stream::Embeddings => {
            let image = ids.list(float());
            let text = ids.list(float());
            let fused = ids.list(float());
            let pdq = Type::Struct(StructType::new(vec![
                ids.opt("hash", string()),
                ids.opt("quality", p(PrimitiveType::Int)),
            ]));
            vec![
                ids.opt("dim", p(PrimitiveType::Int)),
                ids.opt("image_embedding", image),
                ids.opt("text_embedding", text),
                ids.opt("fused_embedding", fused),
                ids.opt("match_score", float()),
                ids.opt("pdq", pdq),
            ]
        }
        Stream::Tags => {
            let tag = Type::Struct(StructType::new(vec![
                ids.opt("label", string()),
                ids.opt("score", float()),
                ids.opt("source", string()),
            ]));
            let tags = ids.list(tag);
            vec![ids.opt("tags", tags)]
        }
        Stream::Moderation => {
            let rule = Type::Struct(StructType::new(vec![
                ids.opt("rule", string()),
                ids.opt("source", string()),
                ids.opt("score", float()),
                ids.opt("threshold", float()),
                ids.opt("action", string()),
                ids.opt("evidence", string()),
            ]));
            let rules = ids.list(rule);
            vec![
                ids.opt("decision", string()),
                ids.opt("rules", rules),
                ids.opt("signals", string()),
                ids.opt("policy", string()),
            ]
        }
        Stream::DeadLetters => Vec::new(),
    }
}

/// The dead-letter record's fields.
fn dead_letter(ids: &mut Ids) -> Vec<NestedFieldRef> {
    let bundle = bundle(ids);
    let source = source(ids);
    let degraded = pair(ids, "modality", "reason");
    vec![
        ids.opt("event_id", string()),
        ids.opt("schema_version", p(PrimitiveType::Long)),
        ids.req("reason", string()),
        ids.opt("detail", string()),
        ids.opt("payload", string()),
        ids.opt("payload_truncated", p(PrimitiveType::Boolean)),
        ids.opt("source", source),
        ids.opt("bundle", bundle),
        ids.opt("degraded", degraded),
        ids.opt("failed_at", p(PrimitiveType::Timestamptz)),
        ids.opt("attempts", p(PrimitiveType::Int)),
    ]
}

/// The schema of `stream`'s table.
pub fn table_schema(stream: Stream) -> iceberg::Result<Schema> {
    let mut ids = Ids(0);
    let fields = match stream {
        Stream::DeadLetters => dead_letter(&mut ids),
        s => {
            let mut f = meta(&mut ids);
            f.extend(own(&mut ids, s));
            f
        }
    };
    Schema::builder().with_fields(fields).build()
}

/// Day of the partition timestamp, as spec 0 of a new table (the catalog wants the spec and
/// field ids spelled out).
pub fn partition_spec(schema: &Schema, stream: Stream) -> iceberg::Result<UnboundPartitionSpec> {
    let name = partition_source(stream).join(".");
    let source = schema.field_by_name(&name).ok_or_else(|| {
        iceberg::Error::new(
            iceberg::ErrorKind::DataInvalid,
            format!("no column {name} to partition by"),
        )
    })?;
    let field = UnboundPartitionField::builder()
        .source_id(source.id)
        .field_id(1000)
        .name(format!(
            "{}_day",
            partition_source(stream).last().copied().unwrap_or("at")
        ))
        .transform(Transform::Day)
        .build();
    Ok(UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_fields([field])?
        .build())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_has_a_schema_and_a_day_partition() {
        for s in Stream::ALL {
            let schema = table_schema(s).unwrap();
            assert!(schema.field_by_name("event_id").is_some(), "{s:?}");
            let spec = partition_spec(&schema, s).unwrap();
            assert_eq!(spec.fields().len(), 1);
            for f in json_text_fields(s) {
                let field = schema.field_by_name(f).unwrap();
                assert_eq!(*field.field_type, string(), "{s:?}.{f} is JSON text");
            }
        }
        let e = table_schema(Stream::Embeddings).unwrap();
        assert!(e.field_by_name("image_embedding.element").is_some());
        assert!(e.field_by_name("timings.received_at").is_some());
    }
}
