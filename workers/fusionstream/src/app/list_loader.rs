//! Loading the known lists of `[matching]` (hash lists and embedding lists) — a file, or every object under an
//! `s3://bucket/prefix` (concatenated in key order: a big list can be split over objects) — and
//! reloading each when it changes, checked every `matching.reload_interval` (a file: size and
//! modification time; S3: the keys, ETags and sizes under the prefix). A list that fails to
//! load at start stops the start; a new version that fails to read or parse keeps the list
//! loaded before, with a warning naming the line, until it changes again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use fusionstream_core::embedlist::{EmbeddingKind, EmbeddingList};
use fusionstream_core::event::split_s3_url;
use fusionstream_core::hashlist::HashList;
use fusionstream_core::moderation::Action;
use fusionstream_io::s3::{ObjectVersion, S3Media};
use tokio_util::sync::CancellationToken;

use crate::config::MatchingConfig;
use fusionstream_engine::known_lists::{KnownLists, ListBody, LoadedList};
use fusionstream_engine::{Report, Reporter};

/// Where a list is.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// What identifies a version of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stamp {
    File(u64, Option<SystemTime>),
    S3(Vec<ObjectVersion>),
}

/// What a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hashes,
    Embeddings(EmbeddingKind),
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Hashes => "hash_lists",
            Kind::Embeddings(_) => "embedding_lists",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Hashes => "hash list",
            Kind::Embeddings(_) => "embedding list",
        }
    }
}

/// The lists and how to reach them.
struct Sources {
    lists: Vec<(String, Source, Action, Kind)>,
    s3: Option<S3Media>,
}

impl Sources {
    async fn new(c: &MatchingConfig, s3: fusionstream_io::s3::S3Settings) -> anyhow::Result<Self> {
        let mut lists = Vec::new();
        let hashes = c.hash_lists.iter().map(|(id, l)| (id, l, Kind::Hashes));
        let embeddings = c
            .embedding_lists
            .iter()
            .map(|(id, l)| (id, l, Kind::Embeddings(l.kind.unwrap_or_default())));
        for (id, l, kind) in hashes.chain(embeddings) {
            let text = l.path.to_string_lossy();
            let source = if text.starts_with("s3://") {
                let (bucket, prefix) = split_s3_url(&text).with_context(|| {
                    format!(
                        "matching.{}.{id}.path {text:?}: expected s3://bucket/prefix",
                        kind.key()
                    )
                })?;
                Source::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                }
            } else {
                Source::File(l.path.clone())
            };
            lists.push((id.clone(), source, l.action, kind));
        }
        let s3 = if lists
            .iter()
            .any(|(_, s, _, _)| matches!(s, Source::S3 { .. }))
        {
            Some(S3Media::new(s3).await)
        } else {
            None
        };
        Ok(Sources { lists, s3 })
    }

    async fn stamp(&self, source: &Source) -> anyhow::Result<Stamp> {
        Ok(match source {
            Source::File(p) => {
                let m = std::fs::metadata(p).with_context(|| p.display().to_string())?;
                Stamp::File(m.len(), m.modified().ok())
            }
            Source::S3 { bucket, prefix } => Stamp::S3(
                self.s3()?
                    .objects_under(bucket, prefix)
                    .await
                    .with_context(|| format!("s3://{bucket}/{prefix}"))?,
            ),
        })
    }

    fn s3(&self) -> anyhow::Result<&S3Media> {
        self.s3.as_ref().context("no S3 client")
    }

    /// Read and parse a list (parsing on the blocking pool).
    async fn read(&self, source: &Source, stamp: &Stamp, kind: Kind) -> anyhow::Result<ListBody> {
        let (text, name) = match (source, stamp) {
            (Source::File(p), _) => (
                std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
                p.display().to_string(),
            ),
            (Source::S3 { bucket, prefix }, Stamp::S3(objects)) => {
                let mut text = String::new();
                for o in objects {
                    let bytes = self
                        .s3()?
                        .fetch(bucket, &o.key)
                        .await
                        .with_context(|| format!("s3://{bucket}/{}", o.key))?;
                    text.push_str(
                        &String::from_utf8(bytes)
                            .with_context(|| format!("s3://{bucket}/{}: not UTF-8", o.key))?,
                    );
                    text.push('\n');
                }
                if objects.is_empty() {
                    anyhow::bail!("s3://{bucket}/{prefix}: no object under the prefix");
                }
                (text, format!("s3://{bucket}/{prefix}"))
            }
            (Source::S3 { .. }, Stamp::File(..)) => anyhow::bail!("stamp of another source"),
        };
        tokio::task::spawn_blocking(move || match kind {
            Kind::Hashes => HashList::parse(&text)
                .map(ListBody::Hashes)
                .map_err(|e| anyhow::anyhow!("{name}: {e}")),
            Kind::Embeddings(k) => EmbeddingList::parse(&text, k)
                .map(ListBody::Embeddings)
                .map_err(|e| anyhow::anyhow!("{name}: {e}")),
        })
        .await?
    }
}

/// Load every list, then reload changed ones until `cancel` fires; `None` when there are
/// none. `s3` reaches the lists on S3 (the operator's buckets: no media limits).
pub async fn load_and_watch(
    c: &MatchingConfig,
    s3: fusionstream_io::s3::S3Settings,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> anyhow::Result<Option<Arc<KnownLists>>> {
    if c.hash_lists.is_empty() && c.embedding_lists.is_empty() {
        return Ok(None);
    }
    let sources = Sources::new(c, s3).await?;
    let mut loaded = Vec::new();
    let mut seen = Vec::new();
    for (id, source, action, kind) in &sources.lists {
        let at = || format!("matching.{}.{id}", kind.key());
        let stamp = sources.stamp(source).await.with_context(at)?;
        let list = sources.read(source, &stamp, *kind).await.with_context(at)?;
        tracing::info!(list = %id, entries = list.len(), "{} loaded", kind.noun());
        loaded.push(LoadedList {
            id: id.clone(),
            action: *action,
            list,
        });
        seen.push(stamp);
    }
    let lists = Arc::new(KnownLists::new(
        loaded,
        c.max_distance,
        c.min_quality,
        c.min_similarity,
    ));
    let interval = c.reload_interval;
    let watched = lists.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            for (i, (id, source, action, kind)) in sources.lists.iter().enumerate() {
                let now = match sources.stamp(source).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(list = %id, error = format!("{e:#}"), "{} not reachable; the loaded version stays", kind.noun());
                        continue;
                    }
                };
                if now == seen[i] {
                    continue;
                }
                match sources.read(source, &now, *kind).await {
                    Ok(list) => {
                        tracing::info!(list = %id, entries = list.len(), "{} reloaded", kind.noun());
                        watched.replace(LoadedList {
                            id: id.clone(),
                            action: *action,
                            list,
                        });
                    }
                    Err(e) => {
                        reporter.report(Report::ListReloadFailed);
                        tracing::warn!(
                            list = %id,
                            error = format!("{e:#}"),
                            "{} changed but could not be loaded; the previous version stays",
                            kind.noun()
                        )
                    }
                }
                seen[i] = now;
            }
        }
    });
    Ok(Some(lists))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::HashListConfig;
    use fusionstream_core::moderation::Action;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Duration;

    /// Counts the reloads that failed.
    #[derive(Debug, Default)]
    struct ReloadFailures(AtomicU64);

    impl Reporter for ReloadFailures {
        fn report(&self, r: Report<'_>) {
            if matches!(r, Report::ListReloadFailed) {
                self.0.fetch_add(1, Relaxed);
            }
        }
    }

    /// The item ids of the first list now.
    fn items(l: &KnownLists) -> Vec<String> {
        match &l.snapshot()[0].list {
            ListBody::Hashes(h) => h.entries().iter().map(|e| e.item.clone()).collect(),
            ListBody::Embeddings(e) => e.entries().iter().map(|e| e.item.clone()).collect(),
        }
    }

    fn line(hex_digit: char, item: &str) -> String {
        format!("{} {item}\n", hex_digit.to_string().repeat(64))
    }

    #[tokio::test]
    async fn an_embedding_list_is_matched_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("removed.jsonl");
        let entry = |item: &str, v: [f32; 2]| {
            format!(
                "{}\n",
                serde_json::json!({"item": item, "label": "removed", "embedding": v})
            )
        };
        std::fs::write(&path, entry("x", [1.0, 0.0])).unwrap();
        let c = MatchingConfig {
            hash_lists: Default::default(),
            embedding_lists: [(
                "removed".to_owned(),
                HashListConfig {
                    path: path.clone(),
                    action: Action::Block,
                    kind: None,
                },
            )]
            .into(),
            max_distance: 31,
            min_quality: 50,
            min_similarity: 0.9,
            reload_interval: Duration::from_millis(20),
        };
        let cancel = CancellationToken::new();
        let stats = Arc::new(ReloadFailures::default());
        let lists = load_and_watch(&c, Default::default(), stats.clone(), cancel.clone())
            .await
            .unwrap()
            .unwrap();
        let clip = EmbeddingKind::ImageEmbedding;
        assert!(lists.has_embedding_lists(clip));
        assert!(!lists.has_embedding_lists(EmbeddingKind::PhotoEmbedding));
        let hits = lists.embedding_matches(&[0.95, 0.05], clip);
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (hits[0].item.as_str(), hits[0].action),
            ("x", Action::Block)
        );
        assert!(hits[0].similarity > 0.99);
        // A list of CLIP embeddings is not matched with photo embeddings.
        assert!(lists
            .embedding_matches(&[0.95, 0.05], EmbeddingKind::PhotoEmbedding)
            .is_empty());
        assert!(
            lists.embedding_matches(&[0.5, 0.5], clip).is_empty(),
            "cosine 0.71 < 0.9"
        );
        std::fs::write(&path, entry("x", [1.0, 0.0]) + &entry("y", [0.0, 1.0])).unwrap();
        for _ in 0..200 {
            if items(&lists).len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(items(&lists), ["x", "y"]);
        std::fs::write(&path, entry("z", [1.0, 0.0]) + "{\"item\": \"w\"}\n").unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            items(&lists),
            ["x", "y"],
            "a broken file keeps the old list"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_changed_list_is_reloaded_and_a_broken_one_keeps_the_old() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("list.txt");
        std::fs::write(&path, line('a', "one")).unwrap();
        let c = MatchingConfig {
            hash_lists: [(
                "l".to_owned(),
                HashListConfig {
                    path: path.clone(),
                    action: Action::Review,
                    kind: None,
                },
            )]
            .into(),
            max_distance: 31,
            min_quality: 50,
            embedding_lists: Default::default(),
            min_similarity: 0.9,
            reload_interval: Duration::from_millis(20),
        };
        let cancel = CancellationToken::new();
        let stats = Arc::new(ReloadFailures::default());
        let lists = load_and_watch(&c, Default::default(), stats.clone(), cancel.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(items(&lists), ["one"]);
        let wait_for = |want: &'static [&'static str]| {
            let lists = lists.clone();
            async move {
                for _ in 0..200 {
                    if items(&lists) == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        std::fs::write(&path, line('a', "one") + &line('b', "two")).unwrap();
        assert!(wait_for(&["one", "two"]).await, "reloaded");
        std::fs::write(&path, "not a list line\n").unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            items(&lists),
            ["one", "two"],
            "a broken file keeps the old list"
        );
        assert_eq!(stats.0.load(Relaxed), 1, "the broken version counted once");
        std::fs::write(&path, line('c', "three")).unwrap();
        assert!(wait_for(&["three"]).await, "fixed file reloaded");
        cancel.cancel();
        // A list that cannot be read stops the start.
        std::fs::write(&path, "bad\n").unwrap();
        let err = load_and_watch(
            &c,
            Default::default(),
            Arc::new(fusionstream_engine::Discard),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("matching.hash_lists.l"),
            "{err:#}"
        );
    }

    /// A list split over objects under an `s3://` prefix of the dev MinIO
    /// (`FUSIONSTREAM_TEST_S3_ENDPOINT`; skipped without it unless
    /// `FUSIONSTREAM_REQUIRE_SERVICES=1`): loaded whole, reloaded when an object changes.
    #[tokio::test]
    async fn a_list_on_s3_loads_from_every_object_and_reloads() {
        let Ok(endpoint) = std::env::var("FUSIONSTREAM_TEST_S3_ENDPOINT") else {
            assert!(
                std::env::var("FUSIONSTREAM_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "FUSIONSTREAM_REQUIRE_SERVICES=1 but FUSIONSTREAM_TEST_S3_ENDPOINT is not set"
            );
            eprintln!("skipped: no FUSIONSTREAM_TEST_S3_ENDPOINT");
            return;
        };
        let settings = fusionstream_io::s3::S3Settings {
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            force_path_style: true,
            allowed_buckets: Vec::new(),
            max_bytes: u64::MAX,
        };
        let s3 = S3Media::new(settings.clone()).await;
        let bucket = format!(
            "lists-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        s3.client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let put = |key: &'static str, body: String| {
            let (s3, bucket) = (s3.clone(), bucket.clone());
            async move {
                s3.client()
                    .put_object()
                    .bucket(&bucket)
                    .key(key)
                    .body(body.into_bytes().into())
                    .send()
                    .await
                    .unwrap();
            }
        };
        put("known/part-1.txt", line('a', "one")).await;
        put("known/part-2.txt", line('b', "two")).await;
        let c = MatchingConfig {
            hash_lists: [(
                "s3list".to_owned(),
                HashListConfig {
                    path: PathBuf::from(format!("s3://{bucket}/known/")),
                    action: Action::Block,
                    kind: None,
                },
            )]
            .into(),
            max_distance: 31,
            min_quality: 50,
            embedding_lists: Default::default(),
            min_similarity: 0.9,
            reload_interval: Duration::from_millis(50),
        };
        let cancel = CancellationToken::new();
        let lists = load_and_watch(
            &c,
            settings,
            Arc::new(fusionstream_engine::Discard),
            cancel.clone(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(items(&lists), ["one", "two"]);
        put("known/part-2.txt", line('b', "two") + &line('c', "three")).await;
        let mut reloaded = false;
        for _ in 0..200 {
            if items(&lists) == ["one", "two", "three"] {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        assert!(reloaded, "{:?}", items(&lists));
    }
}
