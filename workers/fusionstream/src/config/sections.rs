//! One struct per `[section]` of the configuration, in the order of `config/default.toml`
//! (whose comments are the documentation of every key).
//!
//! Long because it is the whole configuration surface, one small struct per
//! section; splitting it further would scatter a table that reads top to bottom.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use fusionstream_core::degrade::OnImageFailure;
use fusionstream_core::Priority;
use fusionstream_model::{BackendChoice, OnnxOptions, Precision, RuntimeOptions};
use serde::{Deserialize, Serialize};

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
    /// Priority of backfill events.
    pub priority: Priority,
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
    pub(super) fn runtime_device(&self) -> anyhow::Result<fusionstream_model::Device> {
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
    /// Latency target of the lane (scheduler).
    #[serde(with = "humantime_serde")]
    pub latency_target: Duration,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Events in flight, at most.
    pub max_in_flight: usize,
    /// Events in flight, at least (the adaptive window's floor).
    pub min_in_flight: usize,
    /// Read-to-acknowledged time the read-ahead is sized for.
    #[serde(with = "humantime_serde")]
    pub latency_target: Duration,
    /// Channel capacity between stages.
    pub channel_capacity: usize,
    /// Dead-letter events past their deadline.
    pub enforce_deadlines: bool,
}

/// `[scheduler]`: which batch the model runs next, and the events' default priorities.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// `priority` or `fifo`.
    pub mode: SchedulerMode,
    /// Waiting this long raises an item one level.
    #[serde(with = "humantime_serde")]
    pub aging: Duration,
    /// Priority of events that give none.
    pub default_priority: Priority,
    /// Per-tenant defaults.
    pub tenants: BTreeMap<String, Priority>,
    /// Per-input-topic defaults.
    pub topics: BTreeMap<String, Priority>,
}

/// `[matching]`: known lists (PDQ hashes, image embeddings) matched by the `moderate` task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingConfig {
    /// Lists by id.
    pub hash_lists: BTreeMap<String, HashListConfig>,
    /// Embedding lists by id (ids shared with the hash lists: one namespace).
    pub embedding_lists: BTreeMap<String, HashListConfig>,
    /// Least cosine similarity of an image's embedding and a listed one that matches.
    pub min_similarity: f32,
    /// Most bits apart that match.
    pub max_distance: u32,
    /// Least hash quality matched.
    pub min_quality: u32,
    /// How often list files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// One known list (of hashes or of embeddings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashListConfig {
    /// The list file.
    pub path: PathBuf,
    /// What a match asks for.
    pub action: fusionstream_core::moderation::Action,
    /// Embedding lists: which embedding they hold (`image_embedding`, the default: the
    /// bundle's CLIP image embedding; `photo_embedding`: the photo pack's). Not for hash lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<fusionstream_core::embedlist::EmbeddingKind>,
}

/// `[tags]`: labels of an image-classifier pack among the tags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsConfig {
    /// `image_classifier` packs whose labels join the tags (at most one).
    pub packs: Vec<String>,
    /// Labels kept per image, most probable first.
    pub top_k: usize,
    /// Least probability of a label kept.
    pub min_score: f32,
}

impl TagsConfig {
    /// The photo packs' options ([`Config::photo_options`] adds the embedder).
    fn classifier(&self) -> Option<String> {
        self.packs.first().map(|p| p.trim().to_owned())
    }
}

impl super::Config {
    /// What the model loader needs for the photo packs (`None`: neither `[tags] packs` nor
    /// `[embeddings] photo_pack` is set). Packs are installed in `moderation.packs_dir`.
    pub fn photo_options(&self) -> Option<fusionstream_model::photo::PhotoOptions> {
        let embedder = Some(self.embeddings.photo_pack.trim().to_owned()).filter(|p| !p.is_empty());
        let classifier = self.tags.classifier();
        (classifier.is_some() || embedder.is_some()).then(|| {
            fusionstream_model::photo::PhotoOptions {
                packs_dir: self.moderation.packs_dir(),
                classifier,
                top_k: self.tags.top_k,
                min_score: self.tags.min_score,
                embedder,
            }
        })
    }
}

/// `[embeddings]`: the photo pack's embedding on the embeddings record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// `image_embedding` pack written as `photo_embedding` ("" = none).
    pub photo_pack: String,
}

/// `[index]`: the live vector index (`fusionstream index`, `fusionstream search`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Snapshot folder, or `s3://bucket/prefix`.
    pub dir: PathBuf,
    /// The local working folder when `dir` is on S3.
    pub cache_dir: PathBuf,
    /// Embeddings indexed.
    pub kinds: Vec<fusionstream_index::Kind>,
    /// Vector storage.
    pub storage: fusionstream_index::Storage,
    /// HNSW M.
    pub connectivity: usize,
    /// HNSW efConstruction.
    pub expansion_add: usize,
    /// HNSW efSearch.
    pub expansion_search: usize,
    /// Time between snapshots (when something changed).
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Records between snapshots.
    pub snapshot_records: u64,
    /// Consumer group of the index's commits.
    pub group_id: String,
    /// HTTP listen address ("" = none).
    pub listen: String,
    /// Largest k.
    pub max_k: usize,
}

impl IndexConfig {
    /// The HNSW parameters.
    pub fn params(&self) -> fusionstream_index::Params {
        fusionstream_index::Params {
            storage: self.storage,
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            expansion_search: self.expansion_search,
        }
    }
}

/// Scheduler modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerMode {
    /// `fusionstream_core::schedule`.
    Priority,
    /// Batches in the order they close.
    Fifo,
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

/// `[moderation]`: the `moderate` task — packs, policy, per-tenant overrides.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationConfig {
    /// Serve `moderate` (load the packs at start).
    pub enabled: bool,
    /// Folder of installed packs ("" = `$FUSIONSTREAM_PACKS` or the cache default).
    pub packs_dir: PathBuf,
    /// NSFW pack ("" = none).
    pub nsfw_pack: String,
    /// Sentence-embedding pack ("" = none).
    pub text_pack: String,
    /// OCR pack ("" = none).
    pub ocr_pack: String,
    /// Add `moderate` to events that name no tasks.
    pub moderate_unnamed: bool,
    /// NSFW thresholds of the default policy.
    pub nsfw: fusionstream_core::moderation::Thresholds,
    /// Text categories of the default policy.
    pub categories: Vec<fusionstream_core::moderation::Category>,
    /// Per-tenant overrides.
    pub tenants: BTreeMap<String, fusionstream_core::moderation::PolicyOverride>,
}

impl ModerationConfig {
    /// The pack folder in use.
    pub fn packs_dir(&self) -> PathBuf {
        if self.packs_dir.as_os_str().is_empty() {
            fusionstream_model::moderation::default_packs_dir()
        } else {
            self.packs_dir.clone()
        }
    }

    /// The default policy.
    pub fn policy(&self) -> fusionstream_core::moderation::Policy {
        fusionstream_core::moderation::Policy {
            nsfw: self.nsfw,
            categories: self.categories.clone(),
        }
    }

    /// The policies: the default and one per tenant with its override applied.
    pub fn policies(&self) -> Result<fusionstream_core::moderation::Policies, Vec<String>> {
        let policy = self.policy();
        let mut errors = policy.validate("moderation");
        let mut tenants = BTreeMap::new();
        for (t, o) in &self.tenants {
            match policy.with_override(o) {
                Ok(p) => {
                    errors.extend(p.validate(&format!("moderation.tenants.{t}")));
                    tenants.insert(t.clone(), p);
                }
                Err(e) => errors.push(format!("moderation.tenants.{t}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(fusionstream_core::moderation::Policies {
                default: policy,
                tenants,
            })
        } else {
            Err(errors)
        }
    }

    /// What the model loader needs.
    pub fn options(
        &self,
        onnx: fusionstream_model::OnnxOptions,
    ) -> fusionstream_model::moderation::ModerationOptions {
        let name = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        fusionstream_model::moderation::ModerationOptions {
            packs_dir: self.packs_dir(),
            nsfw_pack: name(&self.nsfw_pack),
            text_pack: name(&self.text_pack),
            ocr_pack: name(&self.ocr_pack),
            phrases: self
                .categories
                .iter()
                .filter(|c| !c.phrases.is_empty())
                .map(|c| (c.name.clone(), c.phrases.clone()))
                .collect(),
            onnx,
        }
    }
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
    /// Tables on S3 (`[lake]`).
    Lake,
}

/// `[lake]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// `iceberg` or `parquet`.
    pub format: fusionstream_lake::LakeFormat,
    /// Iceberg REST catalog.
    pub catalog_uri: String,
    /// `s3://bucket/prefix`.
    pub warehouse: String,
    /// Namespace (folder).
    pub namespace: String,
    /// Data file size to roll at.
    pub target_file_bytes: u64,
    /// Row group size.
    pub row_group_bytes: u64,
    /// Rows decoded at once.
    pub batch_rows: usize,
    /// Between commits.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Events per commit at most.
    pub commit_max_events: usize,
    /// Writer name (empty: derived).
    pub writer: String,
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
    /// Moderation topic.
    pub moderation_topic: String,
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
    /// At-least-once or exactly-once (Kafka transactions).
    pub delivery: Delivery,
    /// Exactly-once: the worker's `transactional.id` ("" = `<group_id>-<hostname>`).
    pub transactional_id: String,
    /// Exactly-once: between transaction commits.
    #[serde(with = "humantime_serde")]
    pub transaction_interval: Duration,
    /// Exactly-once: commit early once this many events wait in the open transaction.
    pub transaction_max_events: usize,
    /// Exactly-once: `transaction.timeout.ms`.
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
}

/// How outputs and offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Outputs acknowledged, then offsets committed: duplicates possible, never a loss.
    AtLeastOnce,
    /// Outputs and offsets in one Kafka transaction.
    ExactlyOnce,
}

impl KafkaConfig {
    /// The `transactional.id`: the configured one, or `<group_id>-<hostname>` (under a
    /// StatefulSet the hostname is the pod's stable name).
    pub fn transactional_id(&self) -> String {
        if !self.transactional_id.is_empty() {
            return self.transactional_id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| "fusionstream".to_owned());
        format!("{}-{host}", self.group_id)
    }

    /// Output topics in [`fusionstream_core::record::Stream`] order.
    pub fn output_topics(&self) -> [String; fusionstream_core::record::Stream::COUNT] {
        [
            self.captions_topic.clone(),
            self.answers_topic.clone(),
            self.embeddings_topic.clone(),
            self.tags_topic.clone(),
            self.moderation_topic.clone(),
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
