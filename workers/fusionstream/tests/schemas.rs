//! The JSON Schemas of `schemas/v1`: the examples beside them validate, invalid examples do
//! not, and the event parser agrees with the event schema on every example.
#![allow(clippy::unwrap_used)]

use crate::common;

use fusionstream_core::event::{parse_event, EventLimits};
use serde_json::Value;

fn examples(dir: &str) -> Vec<(String, Value)> {
    let mut v: Vec<_> = std::fs::read_dir(common::root().join("schemas/v1/examples").join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn event_examples_validate_and_parse() {
    let schema = common::validator("event.schema.json");
    let good = examples("event");
    assert!(good.len() >= 4);
    for (name, v) in &good {
        assert!(
            common::errors(&schema, v).is_empty(),
            "{name}: {:?}",
            common::errors(&schema, v)
        );
        parse_event(v.to_string().as_bytes(), &EventLimits::default())
            .unwrap_or_else(|e| panic!("{name} rejected by the parser: {e}"));
    }
}

#[test]
fn invalid_event_examples_fail_schema_and_parser() {
    let schema = common::validator("event.schema.json");
    let bad = examples("event-invalid");
    assert!(bad.len() >= 6);
    for (name, v) in &bad {
        assert!(!schema.is_valid(v), "{name} passed the schema");
        assert!(
            parse_event(v.to_string().as_bytes(), &EventLimits::default()).is_err(),
            "{name} passed the parser"
        );
    }
}

#[test]
fn output_examples_validate() {
    let all = examples("");
    let mut seen = std::collections::BTreeSet::new();
    for (name, v) in &all {
        let kind = name.split(['.', '-']).next().unwrap();
        let file = format!("{kind}.schema.json");
        let schema = common::validator(&file);
        assert!(
            common::errors(&schema, v).is_empty(),
            "{name}: {:?}",
            common::errors(&schema, v)
        );
        seen.insert(kind.to_owned());
    }
    for kind in [
        "caption",
        "answer",
        "embedding",
        "tags",
        "moderation",
        "dead_letter",
    ] {
        assert!(seen.contains(kind), "no example for {kind}");
    }
}

#[test]
fn schemas_catch_broken_records() {
    let caption = common::validator("caption.schema.json");
    let mut v: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("schemas/v1/examples/caption.json")).unwrap(),
    )
    .unwrap();
    v.as_object_mut().unwrap().remove("bundle");
    assert!(!caption.is_valid(&v), "missing bundle accepted");
    let mut v2: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("schemas/v1/examples/caption.json")).unwrap(),
    )
    .unwrap();
    v2["surprise"] = Value::Bool(true);
    assert!(!caption.is_valid(&v2), "unknown field accepted");
    v2.as_object_mut().unwrap().remove("surprise");
    v2["skipped"] = serde_json::json!([{"task": "caption", "reason": "tired"}]);
    assert!(!caption.is_valid(&v2), "unknown skip reason accepted");
}

#[test]
fn configuration_reference_is_generated_from_the_defaults() {
    let doc = std::fs::read_to_string(common::root().join("docs/configuration.md")).unwrap();
    assert_eq!(
        doc,
        fusionstream::config::markdown_reference(),
        "docs/configuration.md is stale: regenerate with `fusionstream config --markdown > docs/configuration.md`"
    );
    // Every key of the defaults appears in the reference, and every section parses.
    let table: toml::Table = toml::from_str(fusionstream::config::DEFAULT_TOML).unwrap();
    for (section, keys) in &table {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                doc.contains(&format!("`{section}.{key}`")),
                "{section}.{key} undocumented"
            );
        }
        assert!(fusionstream::config::SECTIONS.contains(&section.as_str()));
    }
}

fn enum_of(file: &str, pointer: &str) -> Vec<String> {
    let path = common::root().join("schemas/v1").join(file);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    schema
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{file}{pointer} is not an enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The schemas list exactly the reason codes the worker can write (every code on a dead
/// letter, the unusable- and truncated-modality codes on a degradation), and the architecture page
/// documents every one of them.
#[test]
fn schemas_and_docs_list_every_reason_code() {
    use fusionstream_core::reason::{ReasonCode, ReasonKind};
    let codes = |keep: &dyn Fn(ReasonKind) -> bool| -> Vec<String> {
        ReasonCode::ALL
            .iter()
            .filter(|c| keep(c.kind()))
            .map(|c| c.as_str().to_owned())
            .collect()
    };
    assert_eq!(
        enum_of("dead_letter.schema.json", "/properties/reason/enum"),
        codes(&|_| true)
    );
    assert_eq!(
        enum_of(
            "common.schema.json",
            "/$defs/degradation/properties/reason/enum"
        ),
        codes(&|k| matches!(k, ReasonKind::Unusable | ReasonKind::Truncated))
    );
    let docs = std::fs::read_to_string(common::root().join("docs/architecture.md")).unwrap();
    for c in ReasonCode::ALL {
        assert!(
            docs.contains(&format!("`{c}`")),
            "docs/architecture.md does not document `{c}`"
        );
    }
}
