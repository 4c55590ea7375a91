//! Layered, validated configuration.
//!
//! Layers, later wins: `config/default.toml` (embedded in the binary, every key documented)
//! → files given with `--config` → `FUSIONSTREAM__SECTION__KEY` environment variables →
//! the command line's typed [`Overrides`].
//! Unknown keys are errors; every error of every section is reported at once; durations
//! are humantime strings (`"20ms"`); secrets print as `***`.
//!
//! | file | owns |
//! |---|---|
//! | `sections.rs` | one struct per `[section]`, with its helpers |
//! | `load.rs` | the layers, the per-section extraction, validation, derived settings |
//! | `lake.rs` | validation of `[lake]` |
//! | `overrides.rs` | the command line's layer (`--events`, `--out`, `--model`, backfill's flags) |
//! | `reference.rs` | `docs/configuration.md`, generated from the defaults' comments |

mod lake;
mod load;
mod overrides;
mod reference;
mod sections;

use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use overrides::{BackfillOverrides, Overrides};
pub use reference::markdown_reference;
pub use sections::*;

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../../../../config/default.toml");

/// Environment variable prefix (sections and keys are separated by `__`).
pub const ENV_PREFIX: &str = "FUSIONSTREAM__";

macro_rules! sections {
    ($($field:ident : $ty:ty),* $(,)?) => {
        /// The whole configuration.
        #[derive(Debug, Clone, Serialize)]
        pub struct Config {
            $(
                #[allow(missing_docs)]
                pub $field: $ty,
            )*
        }

        /// Names of the sections.
        pub const SECTIONS: &[&str] = &[$(stringify!($field)),*];

        fn extract_all(fig: &Figment, errors: &mut Vec<String>) -> Option<Config> {
            $( let $field = section::<$ty>(fig, stringify!($field), errors); )*
            Some(Config { $( $field: $field?, )* })
        }
    };
}

sections! {
    source: SourceConfig,
    events: EventsConfig,
    media: MediaConfig,
    s3: S3Config,
    image: ImageConfig,
    model: ModelConfig,
    preprocess: PreprocessConfig,
    encode_lane: LaneConfig,
    generate_lane: LaneConfig,
    pipeline: PipelineConfig,
    scheduler: SchedulerConfig,
    degradation: DegradationConfig,
    moderation: ModerationConfig,
    tags: TagsConfig,
    embeddings: EmbeddingsConfig,
    matching: MatchingConfig,
    index: IndexConfig,
    sink: SinkConfig,
    lake: LakeConfig,
    kafka: KafkaConfig,
    backfill: BackfillConfig,
    checkpoint: CheckpointConfig,
    crash_guard: CrashGuardConfig,
    shutdown: ShutdownConfig,
    telemetry: TelemetryConfig,
}

fn section<T: DeserializeOwned>(fig: &Figment, name: &str, errors: &mut Vec<String>) -> Option<T> {
    match fig.extract_inner::<T>(name) {
        Ok(v) => Some(v),
        Err(e) => {
            for e in e {
                errors.push(format!("[{name}] {e}"));
            }
            None
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration ({} error(s)):\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use fusionstream_core::degrade::OnImageFailure;
    use serde::Deserialize;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let c = Config::load(&[], env(&[])).expect("defaults are valid");
        assert_eq!(c.encode_lane.max_wait, Duration::from_millis(10));
        assert_eq!(c.source.path, PathBuf::from("examples/events"));
        assert_eq!(c.degradation.on_image_failure, OnImageFailure::Degrade);
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.toml");
        std::fs::write(&f, "[encode_lane]\nmax_items = 4\nmax_wait = \"2ms\"\n[degradation]\ntenants = { strict = \"dead_letter\" }\n").expect("w");
        let c = Config::load(
            &[f],
            env(&[
                ("FUSIONSTREAM__ENCODE_LANE__MAX_ITEMS", "7"),
                ("FUSIONSTREAM__MEDIA__TIMEOUT", "250ms"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.encode_lane.max_items, 7, "env beats file");
        assert_eq!(
            c.encode_lane.max_wait,
            Duration::from_millis(2),
            "file beats default"
        );
        assert_eq!(c.media.timeout, Duration::from_millis(250));
        assert_eq!(c.degradation.tenants["strict"], OnImageFailure::DeadLetter);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("bad.toml");
        std::fs::write(
            &f,
            "[media]\ntimeout = \"soon\"\n[encode_lane]\nmax_items = 0\n[sink]\ncolour = \"red\"\n[nonsense]\na = 1\n",
        )
        .expect("w");
        let e = Config::load(
            &[f, dir.path().join("missing.toml")],
            env(&[("FUSIONSTREAM__MODEL__DTYPE", "f8")]),
        )
        .expect_err("invalid");
        let text = e.to_string();
        for needle in ["[media]", "soon", "colour", "nonsense", "missing.toml"] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        // Semantic checks need the sections to parse; they are reported together too.
        let e = Config::load(
            &[],
            env(&[
                ("FUSIONSTREAM__ENCODE_LANE__MAX_ITEMS", "0"),
                ("FUSIONSTREAM__MODEL__DTYPE", "f8"),
                ("FUSIONSTREAM__MEDIA__BACKOFF_INITIAL", "1h"),
            ]),
        )
        .expect_err("invalid");
        assert_eq!(e.0.len(), 3, "{e}");
    }

    #[test]
    fn kafka_settings_are_checked_and_the_password_masked() {
        let e = Config::load(
            &[],
            env(&[
                ("FUSIONSTREAM__SOURCE__KIND", "kafka"),
                ("FUSIONSTREAM__KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
                ("FUSIONSTREAM__KAFKA__SASL_MECHANISM", "GSSAPI"),
            ]),
        )
        .expect_err("invalid");
        // The mechanism, and TLS in a build without it.
        let expected = if cfg!(feature = "kafka-ssl") { 1 } else { 2 };
        assert_eq!(e.0.len(), expected, "{e}");
        let scram = Config::load(
            &[],
            env(&[
                ("FUSIONSTREAM__SINK__KIND", "kafka"),
                ("FUSIONSTREAM__KAFKA__SECURITY_PROTOCOL", "sasl_plaintext"),
                ("FUSIONSTREAM__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512"),
            ]),
        );
        if cfg!(feature = "kafka-ssl") {
            assert!(scram.is_ok());
        } else {
            let e = scram.expect_err("SCRAM needs the kafka-ssl build");
            assert!(e.to_string().contains("--features kafka-ssl"), "{e}");
        }
        let c = Config::load(
            &[],
            env(&[
                ("FUSIONSTREAM__SINK__KIND", "kafka"),
                ("FUSIONSTREAM__KAFKA__SECURITY_PROTOCOL", "sasl_plaintext"),
                ("FUSIONSTREAM__KAFKA__SASL_MECHANISM", "PLAIN"),
                ("FUSIONSTREAM__KAFKA__SASL_PASSWORD", "hunter2"),
            ]),
        )
        .expect("valid");
        assert!(!c.to_toml().contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", c.kafka.connection()).contains("hunter2"));
        assert_eq!(c.kafka.connection().properties["sasl.password"], "hunter2");
    }

    #[test]
    fn secrets_never_print() {
        #[derive(Debug, Serialize, Deserialize)]
        struct WithSecret {
            password: Secret,
        }
        let s: WithSecret = toml::from_str("password = \"hunter2\"").expect("parse");
        assert_eq!(s.password.expose(), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!toml::to_string(&s).expect("toml").contains("hunter2"));
        assert_eq!(s.password.to_string(), "***");
    }
}
