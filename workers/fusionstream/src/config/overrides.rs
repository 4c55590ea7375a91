//! The command line's layer: typed values over the defaults, the files and the environment.
//! They are applied before validation, so an override is checked like any other value (a
//! `fusionstream backfill` without `s3.endpoint` is refused with every other error at once).

use std::path::PathBuf;

use super::{Config, SinkKind, SourceKind};

/// What a command line sets (each `None` leaves the layers below as they are).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Events: a JSONL file or a folder of them (`source.path`).
    pub events: Option<PathBuf>,
    /// Output folder (`sink.dir`; the checkpoint, `checkpoint.json`, goes with it).
    pub out: Option<PathBuf>,
    /// Model bundle (`model.bundle`).
    pub model: Option<PathBuf>,
    /// A backfill: the source is the objects under its prefix.
    pub backfill: Option<BackfillOverrides>,
}

/// What `fusionstream backfill` sets. The command implies `source.kind = "backfill"` and
/// `s3.enabled = true`.
#[derive(Debug, Clone, Default)]
pub struct BackfillOverrides {
    /// `s3://bucket/prefix` (`backfill.prefix`).
    pub prefix: String,
    /// This job's shard (`backfill.shard`).
    pub shard: Option<u32>,
    /// Number of shards (`backfill.shards`).
    pub shards: Option<u32>,
    /// Tasks asked of every object (`backfill.tasks`).
    pub tasks: Option<Vec<String>>,
    /// Where the outputs go (`sink.kind`).
    pub sink: Option<SinkKind>,
}

impl Overrides {
    /// Set what is given on `c`.
    pub fn apply(&self, c: &mut Config) {
        if let Some(e) = &self.events {
            c.source.path.clone_from(e);
        }
        if let Some(o) = &self.out {
            c.checkpoint.path = o.join("checkpoint.json");
            c.sink.dir.clone_from(o);
        }
        if let Some(m) = &self.model {
            c.model.bundle.clone_from(m);
        }
        if let Some(b) = &self.backfill {
            c.source.kind = SourceKind::Backfill;
            c.s3.enabled = true;
            c.backfill.prefix.clone_from(&b.prefix);
            if let Some(s) = b.shard {
                c.backfill.shard = s;
            }
            if let Some(n) = b.shards {
                c.backfill.shards = n;
            }
            if let Some(t) = &b.tasks {
                c.backfill.tasks.clone_from(t);
            }
            if let Some(k) = b.sink {
                c.sink.kind = k;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn overrides_win_over_the_environment_and_are_validated() {
        let env = vec![
            ("FUSIONSTREAM__BACKFILL__SHARDS".to_owned(), "4".to_owned()),
            (
                "FUSIONSTREAM__MODEL__BUNDLE".to_owned(),
                "env-model".to_owned(),
            ),
        ];
        let o = Overrides {
            out: Some("run-out".into()),
            backfill: Some(BackfillOverrides {
                prefix: "s3://bucket/images/".into(),
                shard: Some(3),
                shards: None,
                tasks: Some(vec!["embed".into()]),
                sink: None,
            }),
            ..Overrides::default()
        };
        let c = Config::load_with(&[], env.clone(), &o).unwrap();
        assert_eq!(c.source.kind, SourceKind::Backfill);
        assert!(c.s3.enabled);
        assert_eq!(c.backfill.prefix, "s3://bucket/images/");
        assert_eq!((c.backfill.shard, c.backfill.shards), (3, 4));
        assert_eq!(c.backfill.tasks, ["embed"]);
        assert_eq!(c.sink.dir, PathBuf::from("run-out"));
        assert_eq!(c.checkpoint.path, PathBuf::from("run-out/checkpoint.json"));
        assert_eq!(c.model.bundle, PathBuf::from("env-model"), "not overridden");

        // Validation sees the overrides: shard 4 of 4 and an unknown task are refused.
        let bad = Overrides {
            backfill: Some(BackfillOverrides {
                prefix: "not-a-url".into(),
                shard: Some(4),
                tasks: Some(vec!["paint".into()]),
                ..BackfillOverrides::default()
            }),
            ..Overrides::default()
        };
        let errors = Config::load_with(&[], env, &bad).unwrap_err().to_string();
        for part in ["backfill.prefix", "backfill.shard 4", "backfill.tasks"] {
            assert!(errors.contains(part), "{part} in {errors}");
        }
    }
}
