//! Backfill over an object-store prefix: which listed objects a shard takes, and the event
//! each object becomes. The listing and the pipeline are elsewhere; this is the pure part.
//!
//! Sharding is by a stable hash of the key (FNV-1a 64), not by listing position, so the
//! shards of an indexed Kubernetes Job split any prefix without coordinating, and a resumed
//! shard takes exactly the keys it took before.

use crate::event::MAX_ID_BYTES;
use crate::task::TaskSet;

/// FNV-1a, 64 bits: stable across platforms, versions and runs.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether shard `shard` of `shards` takes `key`. Every key belongs to exactly one shard.
pub fn in_shard(key: &str, shard: u32, shards: u32) -> bool {
    shards <= 1 || fnv1a64(key.as_bytes()) % u64::from(shards) == u64::from(shard)
}

/// Whether `key` is an object to process: not a folder marker, and ending in one of
/// `suffixes` (ASCII case-insensitive); an empty list takes every object.
pub fn wanted(key: &str, suffixes: &[String]) -> bool {
    if key.is_empty() || key.ends_with('/') {
        return false;
    }
    suffixes.is_empty()
        || suffixes.iter().any(|s| {
            key.len() >= s.len()
                && key.is_char_boundary(key.len() - s.len())
                && key[key.len() - s.len()..].eq_ignore_ascii_case(s)
        })
}

/// The event id of an object: its key, or for a key longer than the id limit its first
/// bytes, `#` and the key's hash (still unique per key, still readable).
pub fn event_id(key: &str) -> String {
    if key.len() <= MAX_ID_BYTES {
        return key.to_owned();
    }
    let mut cut = MAX_ID_BYTES - 17;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}#{:016x}", &key[..cut], fnv1a64(key.as_bytes()))
}

/// The input event (v1 JSON) for `s3://bucket/key`, asking for `tasks`.
pub fn object_event(bucket: &str, key: &str, tasks: TaskSet) -> Vec<u8> {
    let tasks: Vec<&str> = tasks.iter().map(|t| t.name()).collect();
    let event = serde_json::json!({
        "schema_version": 1,
        "id": event_id(key),
        "image": format!("s3://{bucket}/{key}"),
        "tasks": tasks,
    });
    event.to_string().into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::event::{parse_event, EventLimits};
    use proptest::prelude::*;

    #[test]
    fn fnv_matches_the_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn suffixes_are_case_insensitive_and_folders_are_skipped() {
        let s = vec![".jpg".to_owned(), ".png".to_owned()];
        assert!(wanted("a/b/cat.JPG", &s));
        assert!(wanted("x.png", &s));
        assert!(!wanted("notes.txt", &s));
        assert!(!wanted("photos/", &s));
        assert!(!wanted("jpg", &s));
        assert!(wanted("anything", &[]));
        assert!(!wanted("dir/", &[]));
        assert!(!wanted("é", &["xé".to_owned()]));
    }

    #[test]
    fn object_events_parse_as_image_events_with_their_tasks() {
        let tasks = TaskSet::parse_list("caption,embed").unwrap();
        let e = parse_event(
            &object_event("media", "cats/1.jpg", tasks),
            &EventLimits::default(),
        )
        .unwrap();
        assert_eq!(e.id, "cats/1.jpg");
        assert_eq!(e.tasks, tasks);
        assert!(matches!(
            e.image.present(),
            Some(crate::event::ImageSource::S3 { bucket, key }) if bucket == "media" && key == "cats/1.jpg"
        ));
        assert!(e.text.present().is_none());
    }

    #[test]
    fn long_keys_get_a_short_unique_id() {
        let a = format!("{}a", "k".repeat(400));
        let b = format!("{}b", "k".repeat(400));
        assert!(event_id(&a).len() <= MAX_ID_BYTES);
        assert_ne!(event_id(&a), event_id(&b));
        let wide = "é".repeat(200);
        assert!(event_id(&wide).len() <= MAX_ID_BYTES);
    }

    proptest! {
        #[test]
        fn every_key_is_in_exactly_one_shard(key in ".{0,64}", shards in 1u32..16) {
            let owners = (0..shards).filter(|&s| in_shard(&key, s, shards)).count();
            prop_assert_eq!(owners, 1);
        }

        #[test]
        fn ids_fit_the_event_limit(key in ".{1,400}") {
            prop_assert!(event_id(&key).len() <= MAX_ID_BYTES);
            prop_assert!(!event_id(&key).trim().is_empty() || key.trim().is_empty());
        }
    }
}
