//! Records the broker refuses as too large: a dead letter is sent again with its payload cut
//! (flagged `payload_truncated`), an output record is replaced by an `output_too_large` dead
//! letter of its event. Pure rewriting of record JSON; the sink decides when
//! (`sink::publish_each`).

use std::time::SystemTime;

use fusionstream_core::degrade::Degradation;
use fusionstream_core::record::{BundleRef, DeadLetterRecord, SourcePosition, Stream};
use fusionstream_core::ReasonCode;
use serde::Deserialize;

/// The fields of an output record's metadata a dead letter needs.
#[derive(Deserialize)]
struct Meta {
    event_id: String,
    source: SourcePosition,
    bundle: BundleRef,
    #[serde(default)]
    degraded: Vec<Degradation>,
}

/// The dead letter that stands for an output record of `stream` the broker refused; `None`
/// when the record is not an output record (it cannot be: the pipeline wrote it).
pub(crate) fn output_too_large(stream: Stream, json: &[u8]) -> Option<Vec<u8>> {
    let meta: Meta = serde_json::from_slice(json).ok()?;
    let mut dl = DeadLetterRecord::new(
        Some(meta.event_id),
        ReasonCode::OutputTooLarge,
        format!(
            "the {} record ({} bytes) is larger than the broker accepts; the event's other \
             outputs were published; its payload is at the source position",
            stream.name(),
            json.len()
        ),
        meta.source,
        meta.bundle,
        meta.degraded,
        super::envelope::rfc3339(SystemTime::now()),
    )
    .with_payload(&[], 0);
    dl.payload_truncated = true;
    serde_json::to_vec(&dl).ok()
}

/// The dead letter `json` with its payload cut to half its length (flagged); `None` when
/// there is no payload left to cut.
pub(crate) fn shrink_dead_letter(json: &[u8]) -> Option<Vec<u8>> {
    let mut dl: DeadLetterRecord = serde_json::from_slice(json).ok()?;
    if let Some(p) = dl.payload.as_mut().filter(|p| !p.is_empty()) {
        let mut cut = p.len() / 2;
        while !p.is_char_boundary(cut) {
            cut -= 1;
        }
        p.truncate(cut);
    } else if let Some(b) = dl.payload_base64.as_mut().filter(|b| !b.is_empty()) {
        // Whole 4-character groups: still valid base64, of a prefix of the bytes.
        b.truncate(b.len() / 2 / 4 * 4);
    } else {
        return None;
    }
    dl.payload_truncated = true;
    serde_json::to_vec(&dl).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn position() -> SourcePosition {
        SourcePosition {
            kind: "kafka".into(),
            stream: "events".into(),
            partition: 2,
            offset: 41,
        }
    }

    fn bundle() -> BundleRef {
        BundleRef {
            id: "shapes".into(),
            version: "1.2.0".into(),
        }
    }

    #[test]
    fn a_refused_output_becomes_its_events_dead_letter() {
        let out = serde_json::json!({
            "schema_version": 1, "event_id": "ev-9", "source": position(), "bundle": bundle(),
            "degraded": [], "skipped": [], "timings": {}, "dim": 3,
            "image_embedding": [0.1, 0.2, 0.3],
        });
        let json = serde_json::to_vec(&out).unwrap();
        let dl: Value =
            serde_json::from_slice(&output_too_large(Stream::Embeddings, &json).unwrap()).unwrap();
        assert_eq!(dl["reason"], "output_too_large");
        assert_eq!(dl["event_id"], "ev-9");
        assert_eq!(dl["source"]["offset"], 41);
        assert_eq!(dl["payload_truncated"], true);
        assert!(dl["detail"].as_str().unwrap().contains("embeddings record"));
        assert!(output_too_large(Stream::Captions, b"not json").is_none());
    }

    #[test]
    fn dead_letter_payloads_are_halved_until_nothing_is_left() {
        let dl = DeadLetterRecord::new(
            Some("ev-1".into()),
            ReasonCode::MalformedJson,
            "x".into(),
            position(),
            bundle(),
            vec![],
            "2026-11-30T00:00:00Z".into(),
        )
        .with_payload("é".repeat(100).as_bytes(), 10_000);
        let mut json = serde_json::to_vec(&dl).unwrap();
        let mut lens = vec![];
        while let Some(next) = shrink_dead_letter(&json) {
            let v: Value = serde_json::from_slice(&next).unwrap();
            assert_eq!(v["payload_truncated"], true);
            lens.push(v["payload"].as_str().unwrap().len());
            json = next;
        }
        assert_eq!(
            lens.first(),
            Some(&100),
            "half of 200 bytes, on a character boundary"
        );
        assert_eq!(lens.last(), Some(&0));
        assert!(lens.windows(2).all(|w| w[1] < w[0]));

        let bin = DeadLetterRecord::new(
            None,
            ReasonCode::ModelError,
            "d".into(),
            position(),
            bundle(),
            vec![],
            "t".into(),
        )
        .with_payload(&[0xff; 64], 1000);
        let cut: Value = serde_json::from_slice(
            &shrink_dead_letter(&serde_json::to_vec(&bin).unwrap()).unwrap(),
        )
        .unwrap();
        let b64 = cut["payload_base64"].as_str().unwrap();
        assert_eq!(b64.len() % 4, 0);
        use base64::Engine as _;
        assert!(base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_ok());
    }
}
