//! Layered, validated configuration.
//!
//! Layers, later wins: `config/default.toml` (embedded in the binary, every key documented)
//! → files given with `--config` → `FUSIONSTREAM__SECTION__KEY` environment variables.
//! Unknown keys are errors; every error of every section is reported at once; durations
//! are humantime strings (`"20ms"`); secrets print as `***`.
//!
//! Long because every `[section]` of the configuration, its validation and the generated
//! reference live together (one source of truth); the restructuring issue splits it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Provider as _};
use fusionstream_core::degrade::OnImageFailure;
use fusionstream_core::{Task, TaskSet};
use fusionstream_model::{BackendChoice, OnnxOptions, Precision, RuntimeOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Environment variable prefix (sections and keys are separated by `__`).
pub const ENV_PREFIX: &str = "FUSIONSTREAM__";

/// A secret value: never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// `[source]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `local`.
    pub kind: SourceKind,
    /// File or folder of JSONL events.
    pub path: PathBuf,
    /// Longest event line.
    pub max_event_bytes: usize,
}

/// Source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Local JSONL files.
    Local,
    /// A Kafka consumer group.
    Kafka,
    /// The objects under an S3 prefix (`[backfill]`).
    Backfill,
}

/// `[backfill]`: the objects under an S3 prefix as image events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// `s3://bucket/prefix`.
    pub prefix: String,
    /// This shard's index.
    pub shard: u32,
    /// Number of shards.
    pub shards: u32,
    /// Key suffixes taken.
    pub include_suffixes: Vec<String>,
    /// Tasks asked of every object.
    pub tasks: Vec<String>,
    /// Keys per listing request.
    pub list_page: u32,
}

impl BackfillConfig {
    /// Bucket and key prefix of `prefix`, if it is an `s3://` URL with a bucket.
    pub fn bucket_and_prefix(&self) -> Option<(&str, &str)> {
        fusionstream_core::event::split_s3_url(&self.prefix)
    }
}

/// `[events]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Longest usable text.
    pub max_text_bytes: usize,
    /// Longest usable question.
    pub max_question_bytes: usize,
    /// Largest inline image.
    pub max_inline_image_bytes: usize,
}

/// `[media]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Root of relative image paths.
    pub root: PathBuf,
    /// Largest object.
    pub max_bytes: u64,
    /// Fetches in flight.
    pub concurrency: usize,
    /// Per-attempt timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff ceiling.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Largest backoff.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

/// `[s3]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Serve s3:// references.
    pub enabled: bool,
    /// Endpoint override.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Allowed buckets.
    pub allowed_buckets: Vec<String>,
}

/// `[image]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Largest decoded image, pixels.
    pub max_pixels: u64,
    /// Reduced-scale JPEG decoding.
    pub jpeg_dct_scaling: bool,
}

/// `[model]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Bundle folder.
    pub bundle: PathBuf,
    /// Cache of bundles downloaded from S3 ("" = the user's cache folder).
    pub cache_dir: PathBuf,
    /// Device.
    pub device: String,
    /// Dtype.
    pub dtype: String,
    /// Which library runs the parts: auto, candle or onnx.
    pub backend: BackendChoice,
    /// Precision of the ONNX graphs: f32, int8 or f16.
    pub precision: Precision,
    /// ONNX Runtime shared library ("" = `ORT_DYLIB_PATH`).
    pub onnxruntime_library: PathBuf,
    /// ONNX Runtime threads per operator (0 = one per physical core).
    pub intra_op_threads: usize,
    /// Whether ONNX Runtime's operator threads spin while waiting for work.
    pub intra_op_spinning: bool,
    /// Most generated tokens (0 = bundle's).
    pub max_new_tokens: usize,
    /// Beam width (0 = bundle's).
    pub num_beams: usize,
    /// Batches waiting for the model thread.
    pub queue: usize,
    /// When to run a synthetic item through the model before reporting ready.
    pub warm_up: WarmUp,
}

impl ModelConfig {
    /// The CUDA device of `device` (`cuda` = 0), or `None` for the CPU.
    fn cuda_ordinal(&self) -> anyhow::Result<Option<i32>> {
        match self.device.as_str() {
            "cpu" => Ok(None),
            "cuda" => Ok(Some(0)),
            s => match s.strip_prefix("cuda:").map(str::parse::<i32>) {
                Some(Ok(n)) if n >= 0 => Ok(Some(n)),
                _ => anyhow::bail!("device {s:?} (expected cpu, cuda or cuda:N)"),
            },
        }
    }

    /// candle's device. With `backend = "onnx"` candle only runs the fusion head, on the CPU,
    /// and the device names the CUDA execution provider's GPU instead.
    fn runtime_device(&self) -> anyhow::Result<fusionstream_model::Device> {
        self.cuda_ordinal()?;
        if self.backend == BackendChoice::Onnx {
            return Ok(fusionstream_model::Device::Cpu);
        }
        Ok(fusionstream_model::device(&self.device)?)
    }

    /// Runtime options of the model (decode limits and generation come from elsewhere).
    pub fn runtime_options(&self) -> anyhow::Result<RuntimeOptions> {
        let cuda = self.cuda_ordinal()?;
        Ok(RuntimeOptions {
            device: self.runtime_device()?,
            dtype: fusionstream_model::dtype(&self.dtype)?,
            backend: self.backend,
            onnx: OnnxOptions {
                library: (!self.onnxruntime_library.as_os_str().is_empty())
                    .then(|| self.onnxruntime_library.clone()),
                precision: self.precision,
                intra_threads: self.intra_op_threads,
                cuda_device: cuda,
                spinning: self.intra_op_spinning,
            },
            ..RuntimeOptions::default()
        })
    }
}

/// When the worker warms the model up at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmUp {
    /// On a GPU, where the first use of each kernel compiles it.
    Auto,
    /// Always, on any device.
    Always,
    /// Never.
    Never,
}

/// `[preprocess]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    /// CPU threads (0 = cores).
    pub threads: usize,
}

/// `[encode_lane]`, `[generate_lane]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    /// Most items per batch.
    pub max_items: usize,
    /// Longest wait of a batch's first item.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Pixel budget.
    pub max_pixels: u64,
    /// Token budget.
    pub max_tokens: u64,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Events in flight.
    pub max_in_flight: usize,
    /// Channel capacity between stages.
    pub channel_capacity: usize,
    /// Dead-letter events past their deadline.
    pub enforce_deadlines: bool,
}

/// `[degradation]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradationConfig {
    /// Default rule.
    pub on_image_failure: OnImageFailure,
    /// Per-tenant rules.
    pub tenants: BTreeMap<String, OnImageFailure>,
}

/// `[sink]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `local`.
    pub kind: SinkKind,
    /// Output folder.
    pub dir: PathBuf,
    /// Largest payload kept in a dead letter.
    pub max_dead_letter_payload_bytes: usize,
}

/// Sink kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Local JSONL files.
    Local,
    /// Kafka topics.
    Kafka,
}

/// `[kafka]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub bootstrap_servers: String,
    /// Client id.
    pub client_id: String,
    /// Consumer group.
    pub group_id: String,
    /// Input topics.
    pub input_topics: Vec<String>,
    /// Captions topic.
    pub captions_topic: String,
    /// Answers topic.
    pub answers_topic: String,
    /// Embeddings topic.
    pub embeddings_topic: String,
    /// Tags topic.
    pub tags_topic: String,
    /// Dead letters topic.
    pub dead_letters_topic: String,
    /// `security.protocol`.
    pub security_protocol: String,
    /// `sasl.mechanisms`.
    pub sasl_mechanism: String,
    /// `sasl.username`.
    pub sasl_username: String,
    /// `sasl.password`.
    pub sasl_password: Secret,
    /// `ssl.ca.location`.
    pub ssl_ca_location: String,
    /// Bound on finishing a revoked partition's in-flight events.
    #[serde(with = "humantime_serde")]
    pub revoke_timeout: Duration,
    /// Pause the partitions after waiting this long for an in-flight slot.
    #[serde(with = "humantime_serde")]
    pub pause_after: Duration,
    /// librdkafka statistics interval (0 = off).
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    /// The consumer's `session.timeout.ms`: how soon the group gives a dead worker's
    /// partitions to the others.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
}

impl KafkaConfig {
    /// Output topics in [`fusionstream_core::record::Stream`] order.
    pub fn output_topics(&self) -> [String; 5] {
        [
            self.captions_topic.clone(),
            self.answers_topic.clone(),
            self.embeddings_topic.clone(),
            self.tags_topic.clone(),
            self.dead_letters_topic.clone(),
        ]
    }

    /// Connection settings for the clients.
    pub fn connection(&self) -> fusionstream_io::kafka::KafkaConnection {
        let mut properties = BTreeMap::new();
        properties.insert(
            "security.protocol".to_owned(),
            self.security_protocol.clone(),
        );
        if self.security_protocol.starts_with("sasl") {
            properties.insert("sasl.mechanisms".to_owned(), self.sasl_mechanism.clone());
            properties.insert("sasl.username".to_owned(), self.sasl_username.clone());
            properties.insert(
                "sasl.password".to_owned(),
                self.sasl_password.expose().to_owned(),
            );
        }
        if !self.ssl_ca_location.is_empty() {
            properties.insert("ssl.ca.location".to_owned(), self.ssl_ca_location.clone());
        }
        fusionstream_io::kafka::KafkaConnection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            client_id: self.client_id.clone(),
            properties,
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoint file.
    pub path: PathBuf,
    /// Write interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Bound on the last commit's confirmation at shutdown.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
}

/// `[crash_guard]`: what a worker does after an unclean exit (see
/// `fusionstream_core::crash_guard`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashGuardConfig {
    /// Keep marks beside the committed positions and run a dead owner's next events alone.
    pub enabled: bool,
    /// Events per partition run alone after an unclean exit (0 = `pipeline.max_in_flight`).
    pub suspect_events: u32,
    /// Runs alone that an event may end with the process before it is dead-lettered
    /// (`poison_suspected`).
    pub max_attempts: u32,
}

/// `[shutdown]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Drain budget.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// `[telemetry]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log filter.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Progress line.
    pub progress: Progress,
    /// Listen address of /metrics, /healthz, /readyz ("" = off).
    pub metrics_listen: String,
    /// OTLP/HTTP base URL ("" = off).
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Root sampling ratio.
    pub trace_sample_ratio: f64,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// When to show the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// When stderr is a terminal.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

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
    degradation: DegradationConfig,
    sink: SinkConfig,
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

impl Config {
    /// Defaults → `files` → environment (`env`: name/value pairs, normally `std::env::vars()`).
    pub fn load<I>(files: &[PathBuf], env: I) -> Result<Self, ConfigErrors>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut errors = Vec::new();
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        for f in files {
            // A file that cannot be read or parsed is one error, not one per section.
            match std::fs::read_to_string(f) {
                Err(e) => errors.push(format!("config file {}: {e}", f.display())),
                Ok(text) => match toml::from_str::<toml::Table>(&text) {
                    Err(e) => errors.push(format!("config file {}: {e}", f.display())),
                    Ok(_) => fig = fig.merge(Toml::file_exact(f)),
                },
            }
        }
        // Environment: FUSIONSTREAM__SECTION__KEY=value, values parsed like TOML scalars.
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_lowercase().replace("__", ".");
            let value: figment::value::Value = value.parse().unwrap_or_else(|_| value.into());
            fig = fig.merge(Serialized::global(&key, value));
        }
        // Unknown top-level keys (sections).
        match fig.data() {
            Ok(data) => {
                for dict in data.values() {
                    for key in dict.keys() {
                        if !SECTIONS.contains(&key.as_str()) {
                            errors.push(format!(
                                "unknown section or key `{key}` (sections: {})",
                                SECTIONS.join(", ")
                            ));
                        }
                    }
                }
            }
            Err(e) => errors.extend(e.into_iter().map(|e| e.to_string())),
        }
        let cfg = extract_all(&fig, &mut errors);
        if let Some(c) = &cfg {
            c.validate(&mut errors);
        }
        match cfg {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errors)),
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        let mut positive = |name: &str, v: u64| {
            if v == 0 {
                errors.push(format!("{name} must be at least 1"));
            }
        };
        positive("source.max_event_bytes", self.source.max_event_bytes as u64);
        positive("media.max_bytes", self.media.max_bytes);
        positive("media.concurrency", self.media.concurrency as u64);
        positive("image.max_pixels", self.image.max_pixels);
        positive("model.queue", self.model.queue as u64);
        positive("pipeline.max_in_flight", self.pipeline.max_in_flight as u64);
        positive(
            "crash_guard.max_attempts",
            self.crash_guard.max_attempts as u64,
        );
        positive(
            "pipeline.channel_capacity",
            self.pipeline.channel_capacity as u64,
        );
        for (name, lane) in [
            ("encode_lane", &self.encode_lane),
            ("generate_lane", &self.generate_lane),
        ] {
            positive(&format!("{name}.max_items"), lane.max_items as u64);
            positive(&format!("{name}.max_pixels"), lane.max_pixels);
            positive(&format!("{name}.max_tokens"), lane.max_tokens);
        }
        if self.media.timeout.is_zero() {
            errors.push("media.timeout must be more than 0".into());
        }
        if self.media.backoff_initial > self.media.backoff_max {
            errors.push("media.backoff_initial must not exceed media.backoff_max".into());
        }
        if let Err(e) = self.model.runtime_device() {
            errors.push(format!("model.device: {e}"));
        }
        if self.model.precision != Precision::F32 && self.model.backend == BackendChoice::Candle {
            errors.push(format!(
                "model.precision = \"{}\" needs ONNX graphs: set model.backend to onnx or auto",
                self.model.precision
            ));
        }
        if let Err(e) = fusionstream_model::dtype(&self.model.dtype) {
            errors.push(format!("model.dtype: {e}"));
        }
        if self.source.kind == SourceKind::Backfill {
            let b = &self.backfill;
            if b.bucket_and_prefix().is_none() {
                errors.push(format!(
                    "backfill.prefix {:?}: expected s3://bucket/prefix",
                    b.prefix
                ));
            }
            if !self.s3.enabled {
                errors.push("source.kind = \"backfill\" needs s3.enabled = true".into());
            }
            if b.shards == 0 || b.shard >= b.shards {
                errors.push(format!(
                    "backfill.shard {} of backfill.shards {}: expected 0 <= shard < shards",
                    b.shard, b.shards
                ));
            }
            if b.list_page == 0 || b.list_page > 1000 {
                errors.push("backfill.list_page must be between 1 and 1000".into());
            }
            if let Err(e) = self.backfill_tasks() {
                errors.push(format!("backfill.tasks: {e}"));
            }
        }
        let uses_kafka = self.source.kind == SourceKind::Kafka || self.sink.kind == SinkKind::Kafka;
        if uses_kafka {
            let k = &self.kafka;
            if k.bootstrap_servers.trim().is_empty() {
                errors.push("kafka.bootstrap_servers is empty".into());
            }
            if self.source.kind == SourceKind::Kafka && k.input_topics.is_empty() {
                errors.push("kafka.input_topics is empty".into());
            }
            if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]
                .contains(&k.security_protocol.as_str())
            {
                errors.push(format!(
                    "kafka.security_protocol {:?}: expected plaintext, ssl, sasl_plaintext or sasl_ssl",
                    k.security_protocol
                ));
            }
            if k.security_protocol.starts_with("sasl")
                && !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&k.sasl_mechanism.as_str())
            {
                errors.push(format!(
                    "kafka.sasl_mechanism {:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    k.sasl_mechanism
                ));
            }
            // TLS and SCRAM need librdkafka built with OpenSSL (the `kafka-ssl` feature).
            let needs_ssl = k.security_protocol.ends_with("ssl")
                || (k.security_protocol.starts_with("sasl")
                    && k.sasl_mechanism.starts_with("SCRAM"));
            if needs_ssl && !cfg!(feature = "kafka-ssl") {
                errors.push(format!(
                    "kafka.security_protocol {:?} with sasl_mechanism {:?} needs TLS/SCRAM support: \
                     this binary was built without it (cargo build --features kafka-ssl, needs OpenSSL headers)",
                    k.security_protocol, k.sasl_mechanism
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level) {
            errors.push(format!("telemetry.log_level: {e}"));
        }
        let t = &self.telemetry;
        if !t.metrics_listen.is_empty() && t.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            errors.push(format!(
                "telemetry.metrics_listen {:?}: expected host:port, e.g. \"0.0.0.0:9464\"",
                t.metrics_listen
            ));
        }
        // The exporter is built without TLS: collectors run beside the worker (sidecar or
        // node agent), reached over plain HTTP.
        if !t.otlp_endpoint.is_empty() && !t.otlp_endpoint.starts_with("http://") {
            errors.push(format!(
                "telemetry.otlp_endpoint {:?}: expected an http:// URL (no TLS to the collector)",
                t.otlp_endpoint
            ));
        }
        if !(0.0..=1.0).contains(&t.trace_sample_ratio) {
            errors.push(format!(
                "telemetry.trace_sample_ratio {} is not between 0 and 1",
                t.trace_sample_ratio
            ));
        }
    }

    /// The tasks asked of every backfilled object.
    pub fn backfill_tasks(&self) -> Result<TaskSet, String> {
        let tasks = TaskSet::parse_list(&self.backfill.tasks.join(","))?;
        if tasks.is_empty() {
            return Err("no task".into());
        }
        if tasks.contains(Task::Match) || tasks.contains(Task::Answer) {
            return Err(
                "match and answer need a text or question, which an object has not \
                        (use embed, caption, tag)"
                    .into(),
            );
        }
        Ok(tasks)
    }

    /// Settings of the S3 media store, when enabled.
    pub fn s3_settings(&self) -> Option<fusionstream_io::s3::S3Settings> {
        self.s3.enabled.then(|| fusionstream_io::s3::S3Settings {
            endpoint: (!self.s3.endpoint.is_empty()).then(|| self.s3.endpoint.clone()),
            region: self.s3.region.clone(),
            force_path_style: self.s3.force_path_style,
            allowed_buckets: self.s3.allowed_buckets.clone(),
            max_bytes: self.media.max_bytes,
        })
    }

    /// S3 client settings for model bundles: the `[s3]` endpoint, region and addressing,
    /// whether or not media come from S3 (the bundle's bucket is the operator's choice, not
    /// an event's, so the allowed-bucket list does not apply).
    pub fn bundle_s3_settings(&self) -> fusionstream_io::s3::S3Settings {
        fusionstream_io::s3::S3Settings {
            endpoint: (!self.s3.endpoint.is_empty()).then(|| self.s3.endpoint.clone()),
            region: self.s3.region.clone(),
            force_path_style: self.s3.force_path_style,
            allowed_buckets: Vec::new(),
            max_bytes: u64::MAX,
        }
    }

    /// Folder of bundles downloaded from S3.
    pub fn bundle_cache_dir(&self) -> PathBuf {
        if !self.model.cache_dir.as_os_str().is_empty() {
            return self.model.cache_dir.clone();
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".cache/fusionstream/bundles")
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }

    /// Resolve a path of the configuration against `base` (when relative).
    pub fn resolve(base: &Path, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    }
}

/// The configuration reference (`docs/configuration.md`), generated from the comments of
/// `config/default.toml`: a table per section with every key, its default and its meaning.
pub fn markdown_reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from `config/default.toml` by `fusionstream config --markdown` (a test keeps \
         the two identical). Layers, later wins: the embedded defaults, files given with \
         `--config`, then environment variables `FUSIONSTREAM__SECTION__KEY` (for example \
         `FUSIONSTREAM__ENCODE_LANE__MAX_WAIT=5ms`). Unknown keys are errors, every error is \
         reported at once, durations are written like `\"20ms\"`, secrets print as `***`.\n",
    );
    let mut comment: Vec<String> = Vec::new();
    let mut header_done = false;
    let mut section = String::new();
    for line in DEFAULT_TOML.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            comment.push(c.trim().to_owned());
        } else if t.is_empty() {
            if !header_done {
                // The file's own preamble is replaced by the text above.
                comment.clear();
                header_done = true;
            }
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            header_done = true;
            out.push_str(&format!("\n## `[{name}]`\n\n"));
            if !comment.is_empty() {
                out.push_str(&comment.join(" "));
                out.push_str("\n\n");
                comment.clear();
            }
            out.push_str("| key | default | meaning |\n|---|---|---|\n");
            section = name.to_owned();
        } else if let Some((key, value)) = t.split_once('=') {
            out.push_str(&format!(
                "| `{}.{}` | `{}` | {} |\n",
                section,
                key.trim(),
                value.trim().replace('|', "\\|"),
                comment.join(" ").replace('|', "\\|")
            ));
            comment.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
