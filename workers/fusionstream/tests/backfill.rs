//! Backfills against the dev MinIO (`fusionstream backfill s3://bucket/prefix` once, then the
//! same wiring in the test process): every wanted object of
//! the prefix gets its outputs (captions equal to the transformers reference), objects
//! outside the prefix or with other suffixes are left alone, two shards split the prefix
//! with neither loss nor overlap, and a stopped backfill resumes from its checkpoint without
//! redoing or losing an object. Also: bad backfill settings are refused with every error, and
//! a bucket outside the allowed list is refused before anything is listed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::in_process;
use fusionstream::app::Summary;
use fusionstream::config::{BackfillOverrides, Overrides};
use serde_json::Value;

/// Fixture scenes whose greedy captions the transformers reference holds.
const SCENES: usize = 8;
/// Copies of each scene under the prefix.
const COPIES: usize = 3;

fn backfill(endpoint: &str, args: &[&str], out: &Path) -> Output {
    common::bin()
        .arg("backfill")
        .args(args)
        .arg("--json")
        .arg("--out")
        .arg(out)
        .env("FUSIONSTREAM__S3__ENDPOINT", endpoint)
        .env("FUSIONSTREAM__S3__FORCE_PATH_STYLE", "true")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap()
}

/// The same backfill in the test process (`app::run`): shard `shard` of `shards`, only
/// `tasks` if given, stopping after `max_events`.
async fn backfill_in_process(
    endpoint: &str,
    prefix: &str,
    shard: Option<(u32, u32)>,
    tasks: Option<&[&str]>,
    max_events: Option<u64>,
    out: &Path,
) -> Summary {
    let overrides = Overrides {
        out: Some(out.to_owned()),
        backfill: Some(BackfillOverrides {
            prefix: prefix.to_owned(),
            shard: shard.map(|s| s.0),
            shards: shard.map(|s| s.1),
            tasks: tasks.map(|t| t.iter().map(|t| (*t).to_owned()).collect()),
            sink: None,
        }),
        ..Overrides::default()
    };
    let pairs = [
        ("FUSIONSTREAM__S3__ENDPOINT", endpoint),
        ("FUSIONSTREAM__S3__FORCE_PATH_STYLE", "true"),
    ];
    let c = in_process::config(&[], &pairs, &overrides);
    in_process::start_with(c, max_events).finish().await
}

fn ids(out: &Path, stream: &str) -> Vec<String> {
    common::read_records(out, stream)
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn key(i: usize) -> String {
    format!("photos/img-{i:02}.png")
}

/// The bucket: SCENES × COPIES scenes and one truncated PNG under `photos/`, plus objects the
/// backfill must leave alone (another suffix, a folder marker, another prefix).
async fn upload(endpoint: &str, bucket: &str) {
    let s3 = common::s3_client(endpoint);
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let mut objects: Vec<(String, Vec<u8>)> = (0..SCENES * COPIES)
        .map(|i| {
            let scene = common::root().join(format!(
                "models/fixtures/shapes/images/scene{}.png",
                i % SCENES
            ));
            (key(i), std::fs::read(scene).unwrap())
        })
        .collect();
    // A PNG cut short: its header reads, its pixels do not.
    let cut = objects[0].1[..200].to_vec();
    objects.push(("photos/broken.png".into(), cut));
    objects.push(("photos/notes.txt".into(), b"hello".to_vec()));
    objects.push(("photos/empty-folder/".into(), vec![]));
    objects.push(("elsewhere/img-00.png".into(), objects[0].1.clone()));
    for (k, body) in objects {
        s3.put_object()
            .bucket(bucket)
            .key(k)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
}

fn wanted() -> BTreeSet<String> {
    (0..SCENES * COPIES).map(key).collect()
}

fn summary(o: &Output) -> Value {
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_once_across_shards_and_after_a_resume() {
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    let bucket = format!("backfill-{}", std::process::id());
    upload(&endpoint, &bucket).await;
    let prefix = format!("s3://{bucket}/photos/");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("models/fixtures/shapes/reference.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = common::validator(common::schema_of_stream("captions"));
    let tmp = tempfile::tempdir().unwrap();

    // One shard, all of it: the command itself.
    let all = tmp.path().join("all");
    let o = backfill(&endpoint, &[&prefix], &all);
    assert!(String::from_utf8_lossy(&o.stderr).contains("fusionstream backfill: completed"));
    let s = summary(&o);
    assert_eq!(s["read"], (SCENES * COPIES + 1) as u64, "{s}");
    let captions = common::read_records(&all, "captions");
    assert_eq!(
        captions
            .iter()
            .map(|r| r["event_id"].as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>(),
        wanted()
    );
    assert_eq!(captions.len(), SCENES * COPIES, "each object once");
    for r in &captions {
        let id = r["event_id"].as_str().unwrap();
        let i: usize = id["photos/img-".len()..id.len() - 4].parse().unwrap();
        assert_eq!(
            r["caption"],
            reference["caption_greedy"][i % SCENES],
            "{id}"
        );
        assert_eq!(r["source"]["kind"], "s3");
        assert_eq!(r["source"]["stream"], prefix.as_str());
        let errors = common::errors(&validator, r);
        assert!(errors.is_empty(), "{errors:?}");
    }
    assert_eq!(ids(&all, "embeddings").len(), SCENES * COPIES);
    assert_eq!(ids(&all, "tags").len(), SCENES * COPIES);
    assert!(ids(&all, "answers").is_empty());
    let dead = common::read_records(&all, "dead_letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event_id"], "photos/broken.png");
    assert_eq!(dead[0]["reason"], "image_corrupt");
    let cp: Value =
        serde_json::from_str(&std::fs::read_to_string(all.join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(
        cp["backfill"]["start_after"],
        key(SCENES * COPIES - 1).as_str()
    );
    assert_eq!(cp["backfill"]["done"], (SCENES * COPIES + 1) as u64);
    // Again, from here on in the test process: the checkpoint covers everything.
    let again = backfill_in_process(&endpoint, &prefix, None, None, None, &all).await;
    assert_eq!(again.stats.read, 0);

    // Two shards: a split with neither loss nor overlap.
    let mut seen = Vec::new();
    for shard in [0, 1] {
        let out = tmp.path().join(format!("shard{shard}"));
        let s = backfill_in_process(&endpoint, &prefix, Some((shard, 2)), None, None, &out).await;
        assert!(s.stats.read > 0, "shard {shard} took nothing");
        seen.extend(ids(&out, "captions"));
    }
    assert_eq!(seen.len(), SCENES * COPIES, "no object in both shards");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), wanted());

    // Stopped after 10 objects, then resumed: every object exactly once over both runs.
    let part = tmp.path().join("part");
    let caption = Some(&["caption"][..]);
    let first = backfill_in_process(&endpoint, &prefix, None, caption, Some(10), &part).await;
    let done: u64 = {
        let cp: Value =
            serde_json::from_str(&std::fs::read_to_string(part.join("checkpoint.json")).unwrap())
                .unwrap();
        cp["backfill"]["done"].as_u64().unwrap()
    };
    assert!(done >= 10, "{first:?}");
    assert_eq!(first.stats.finished, done, "drained stop commits all");
    let second = backfill_in_process(&endpoint, &prefix, None, caption, None, &part).await;
    assert_eq!(
        second.stats.read,
        (SCENES * COPIES + 1) as u64 - done,
        "the resumed run reads exactly what was left"
    );
    let mut captions = ids(&part, "captions");
    assert_eq!(captions.len(), SCENES * COPIES, "no object twice");
    captions.sort();
    assert_eq!(captions.into_iter().collect::<BTreeSet<_>>(), wanted());
    assert!(
        ids(&part, "embeddings").is_empty(),
        "only the tasks asked for"
    );
}

#[test]
fn bad_backfill_settings_are_refused_with_every_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = common::bin()
        .args([
            "backfill", "photos/", "--shards", "2", "--shard", "2", "--tasks", "answer", "--out",
        ])
        .arg(tmp.path())
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{log}");
    for expected in [
        "backfill.prefix",
        "backfill.shard 2 of backfill.shards 2",
        "backfill.tasks",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in {log}");
    }
    // A bucket outside s3.allowed_buckets: refused before anything is listed.
    let o = common::bin()
        .args(["backfill", "s3://private/photos/", "--out"])
        .arg(tmp.path())
        .env("FUSIONSTREAM__S3__ALLOWED_BUCKETS", "[\"media\"]")
        .env("FUSIONSTREAM__S3__ENDPOINT", "http://127.0.0.1:9")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("listing s3://private/photos/") && log.contains("not in s3.allowed_buckets"),
        "{log}"
    );
    // The shard comes from an indexed Job's JOB_COMPLETION_INDEX when not given.
    let o = common::bin()
        .args(["backfill", "photos/", "--shards", "2", "--out"])
        .arg(tmp.path())
        .env("JOB_COMPLETION_INDEX", "5")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("backfill.shard 5 of backfill.shards 2"),
        "{log}"
    );
}
