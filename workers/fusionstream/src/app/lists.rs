//! Loading the known-hash lists of `[matching]` and reloading each when its file changes
//! (size or modification time), every `matching.reload_interval`. A list that fails to load at
//! start stops the start; a new version that fails to read or parse keeps the list loaded
//! before, with a warning naming the line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use fusionstream_core::hashlist::HashList;
use tokio_util::sync::CancellationToken;

use crate::config::MatchingConfig;
use crate::pipeline::lists::{KnownLists, LoadedList};

/// What identifies a version of a file.
type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok((m.len(), m.modified().ok()))
}

fn read(path: &Path) -> anyhow::Result<HashList> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    HashList::parse(&text)
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("{}", path.display()))
}

/// Load every list; `None` when there are none.
pub fn load(c: &MatchingConfig) -> anyhow::Result<Option<Arc<KnownLists>>> {
    if c.hash_lists.is_empty() {
        return Ok(None);
    }
    let mut lists = Vec::new();
    for (id, l) in &c.hash_lists {
        let list = read(&l.path).with_context(|| format!("matching.hash_lists.{id}"))?;
        tracing::info!(list = %id, entries = list.len(), path = %l.path.display(), "hash list loaded");
        lists.push(LoadedList {
            id: id.clone(),
            action: l.action,
            list,
        });
    }
    Ok(Some(Arc::new(KnownLists::new(
        lists,
        c.max_distance,
        c.min_quality,
    ))))
}

/// Reload changed lists until `cancel` fires.
pub fn spawn_reload(lists: Arc<KnownLists>, c: &MatchingConfig, cancel: CancellationToken) {
    let sources: Vec<(String, PathBuf, fusionstream_core::moderation::Action)> = c
        .hash_lists
        .iter()
        .map(|(id, l)| (id.clone(), l.path.clone(), l.action))
        .collect();
    let interval = c.reload_interval;
    // The versions loaded (taken now, right after the load at start).
    let mut seen: Vec<Option<Stamp>> = sources.iter().map(|(_, p, _)| stamp(p).ok()).collect();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            for (i, (id, path, action)) in sources.iter().enumerate() {
                let now = stamp(path).ok();
                if now.is_none() || now == seen[i] {
                    continue;
                }
                seen[i] = now;
                let p = path.clone();
                match tokio::task::spawn_blocking(move || read(&p)).await {
                    Ok(Ok(list)) => {
                        tracing::info!(list = %id, entries = list.len(), "hash list reloaded");
                        lists.replace(LoadedList {
                            id: id.clone(),
                            action: *action,
                            list,
                        });
                    }
                    Ok(Err(e)) => tracing::warn!(
                        list = %id,
                        error = format!("{e:#}"),
                        "hash list changed but could not be loaded; the previous version stays"
                    ),
                    Err(e) => tracing::warn!(list = %id, error = %e, "hash list reload failed"),
                }
            }
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::HashListConfig;
    use fusionstream_core::moderation::Action;
    use std::time::Duration;

    fn line(hex_digit: char, item: &str) -> String {
        format!("{} {item}\n", hex_digit.to_string().repeat(64))
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
                },
            )]
            .into(),
            max_distance: 31,
            min_quality: 50,
            reload_interval: Duration::from_millis(20),
        };
        let lists = load(&c).unwrap().unwrap();
        let items = |l: &KnownLists| -> Vec<String> {
            l.snapshot()[0]
                .list
                .entries()
                .iter()
                .map(|e| e.item.clone())
                .collect()
        };
        assert_eq!(items(&lists), ["one"]);
        let cancel = CancellationToken::new();
        spawn_reload(lists.clone(), &c, cancel.clone());
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
        std::fs::write(&path, line('c', "three")).unwrap();
        assert!(wait_for(&["three"]).await, "fixed file reloaded");
        cancel.cancel();
        // A list that cannot be read stops the start.
        std::fs::write(&path, "bad\n").unwrap();
        assert!(load(&c)
            .unwrap_err()
            .to_string()
            .contains("matching.hash_lists.l"));
    }
}
