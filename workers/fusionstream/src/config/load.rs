//! Loading: the layers (defaults → files → environment), per-section extraction with every
//! error collected, validation, and the settings derived from a loaded configuration.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Provider as _};
use fusionstream_core::{Task, TaskSet};
use fusionstream_model::{BackendChoice, Precision};

use super::*;

impl Config {
    /// Defaults → `files` → environment (`env`: name/value pairs, normally `std::env::vars()`).
    pub fn load<I>(files: &[PathBuf], env: I) -> Result<Self, ConfigErrors>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        Self::load_with(files, env, &Overrides::default())
    }

    /// [`Config::load`] with a command line's `overrides` on top, validated with the rest.
    pub fn load_with<I>(
        files: &[PathBuf],
        env: I,
        overrides: &Overrides,
    ) -> Result<Self, ConfigErrors>
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
        let mut cfg = extract_all(&fig, &mut errors);
        if let Some(c) = &mut cfg {
            overrides.apply(c);
            c.validate(&mut errors);
        }
        match cfg {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// Every check of every section; `errors` collects what is wrong, all at once.
    fn validate(&self, errors: &mut Vec<String>) {
        self.validate_limits(errors);
        self.validate_model(errors);
        self.validate_backfill(errors);
        self.validate_kafka(errors);
        self.validate_lake(errors);
        self.validate_matching(errors);
        self.validate_photo_packs(errors);
        self.validate_index(errors);
        self.validate_telemetry(errors);
    }

    /// Sizes, counts and durations of the pipeline, media, lanes and scheduler.
    fn validate_limits(&self, errors: &mut Vec<String>) {
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
        positive("pipeline.min_in_flight", self.pipeline.min_in_flight as u64);
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
        for (name, d) in [
            ("pipeline.latency_target", self.pipeline.latency_target),
            (
                "encode_lane.latency_target",
                self.encode_lane.latency_target,
            ),
            (
                "generate_lane.latency_target",
                self.generate_lane.latency_target,
            ),
            ("scheduler.aging", self.scheduler.aging),
        ] {
            if d.is_zero() {
                errors.push(format!("{name} must be more than 0"));
            }
        }
        if self.media.timeout.is_zero() {
            errors.push("media.timeout must be more than 0".into());
        }
        if self.media.backoff_initial > self.media.backoff_max {
            errors.push("media.backoff_initial must not exceed media.backoff_max".into());
        }
    }

    /// The model: device, dtype, precision against the backend.
    fn validate_model(&self, errors: &mut Vec<String>) {
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
    }

    /// The backfill source, when it is the source.
    fn validate_backfill(&self, errors: &mut Vec<String>) {
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
    }

    /// Kafka, when the source or the sink is Kafka.
    fn validate_kafka(&self, errors: &mut Vec<String>) {
        let uses_kafka = self.source.kind == SourceKind::Kafka || self.sink.kind == SinkKind::Kafka;
        if uses_kafka {
            let k = &self.kafka;
            if k.bootstrap_servers.trim().is_empty() {
                errors.push("kafka.bootstrap_servers is empty".into());
            }
            if k.delivery == Delivery::ExactlyOnce {
                if self.source.kind != SourceKind::Kafka || self.sink.kind != SinkKind::Kafka {
                    errors.push(
                        "kafka.delivery = \"exactly_once\" needs source.kind and sink.kind \
                         \"kafka\" (offsets commit inside the output transaction)"
                            .into(),
                    );
                }
                if k.transaction_interval.is_zero() || k.transaction_max_events == 0 {
                    errors.push(
                        "kafka.transaction_interval and kafka.transaction_max_events must be > 0"
                            .into(),
                    );
                }
                if k.transaction_timeout <= k.transaction_interval {
                    errors.push(
                        "kafka.transaction_timeout must be longer than kafka.transaction_interval"
                            .into(),
                    );
                }
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
    }

    /// Moderation policies and the known lists of `[matching]`.
    fn validate_matching(&self, errors: &mut Vec<String>) {
        if let Err(e) = self.moderation.policies() {
            errors.extend(e);
        }
        let m = &self.matching;
        if m.max_distance > 255 {
            errors.push("matching.max_distance must be at most 255".into());
        }
        if m.min_quality > 100 {
            errors.push("matching.min_quality must be at most 100".into());
        }
        if m.reload_interval.is_zero() {
            errors.push("matching.reload_interval must be more than 0".into());
        }
        let all_lists = || m.hash_lists.iter().chain(&m.embedding_lists);
        for (id, l) in all_lists() {
            if l.action == fusionstream_core::moderation::Action::Allow {
                errors.push(format!("matching lists: {id}'s action is review or block"));
            }
            if m.hash_lists.contains_key(id) && m.embedding_lists.contains_key(id) {
                errors.push(format!(
                    "matching: {id} names a hash list and an embedding list (one namespace: the rule is list:{id})"
                ));
            }
        }
        if !(-1.0..=1.0).contains(&m.min_similarity) {
            errors.push("matching.min_similarity must be between -1 and 1".into());
        }
        for (id, l) in &m.hash_lists {
            if l.kind.is_some() {
                errors.push(format!(
                    "matching.hash_lists.{id}: kind is for embedding lists"
                ));
            }
        }
        let photo = Some(fusionstream_core::embedlist::EmbeddingKind::PhotoEmbedding);
        for (id, l) in &m.embedding_lists {
            if l.kind == photo && self.embeddings.photo_pack.trim().is_empty() {
                errors.push(format!(
                    "matching.embedding_lists.{id} lists photo embeddings: set embeddings.photo_pack"
                ));
            }
        }
        if all_lists().next().is_some() && !self.moderation.enabled {
            errors.push(
                "matching.hash_lists and embedding_lists are matched by the moderate task: set moderation.enabled = true"
                    .into(),
            );
        }
    }

    /// `[tags]` and `[embeddings]`: the photo packs.
    fn validate_photo_packs(&self, errors: &mut Vec<String>) {
        let t = &self.tags;
        if t.packs.len() > 1 {
            errors.push(format!(
                "tags.packs names {} packs: one image_classifier pack at most",
                t.packs.len()
            ));
        }
        if t.packs.iter().any(|p| p.trim().is_empty()) {
            errors.push("tags.packs: a pack name is empty".into());
        }
        if t.top_k == 0 {
            errors.push("tags.top_k must be at least 1".into());
        }
        for c in &self.moderation.categories {
            if !c.labels.is_empty() && t.packs.is_empty() {
                errors.push(format!(
                    "moderation.categories[{}] names image labels: set tags.packs (e.g. [\"imagenet\"])",
                    c.name
                ));
            }
        }
        if !(0.0..=1.0).contains(&t.min_score) {
            errors.push("tags.min_score must be between 0 and 1".into());
        }
    }

    /// The live index.
    fn validate_index(&self, errors: &mut Vec<String>) {
        let ix = &self.index;
        if let Err(e) = ix.params().validate() {
            errors.push(format!("index: {e}"));
        }
        if ix.kinds.is_empty() {
            errors.push("index.kinds must name at least one of image, text, fused".into());
        }
        if ix.snapshot_interval.is_zero() || ix.snapshot_records == 0 {
            errors.push(
                "index.snapshot_interval and index.snapshot_records must be more than 0".into(),
            );
        }
        if ix.max_k == 0 {
            errors.push("index.max_k must be at least 1".into());
        }
        if !ix.listen.is_empty() && ix.listen.parse::<std::net::SocketAddr>().is_err() {
            errors.push(format!("index.listen {:?} is not host:port", ix.listen));
        }
    }

    /// Logs, metrics and traces.
    fn validate_telemetry(&self, errors: &mut Vec<String>) {
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
                        (use embed, caption, tag, hash)"
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
