//! The index's HTTP server: `/search` (GET with `text=`, POST with JSON), `/metrics`,
//! `/healthz`.
//!
//! ```text
//! GET  /search?text=a+red+circle&k=5[&kinds=image,text]
//! POST /search  {"text": "…", "image_base64": "…", "k": 5, "kinds": ["image"]}
//! ```
//!
//! Both answer [`super::query::SearchResults`] as JSON; a bad query is a 400 with
//! `{"error": "…"}`. Queries are embedded by the bundle on a blocking thread, one at a time
//! (the model is small next to the index; searches themselves run in parallel).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use base64::Engine as _;
use fusionstream_index::Kind;
use fusionstream_model::FusionModel;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::ingest::{Ingest, Refused};
use super::query;
use crate::telemetry::metrics::{counter, gauge};

/// Counters of the index process.
#[derive(Debug, Default)]
pub struct IndexStats {
    /// Records read.
    pub records: AtomicU64,
    /// Vectors added under new event ids.
    pub added: AtomicU64,
    /// Vectors replaced (replays).
    pub replaced: AtomicU64,
    /// Records refused, by [`Refused`].
    pub refused: [AtomicU64; 3],
    /// Snapshots written.
    pub snapshots: AtomicU64,
    /// Bytes of the last snapshot.
    pub snapshot_bytes: AtomicU64,
    /// Milliseconds the last snapshot took.
    pub snapshot_ms: AtomicU64,
    /// Searches answered.
    pub searches: AtomicU64,
    /// Snapshots that could not be copied to S3.
    pub push_failures: AtomicU64,
}

impl IndexStats {
    /// Count a refused record.
    pub fn refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }
}

/// What the server reads.
pub struct Shared {
    /// The index.
    pub ingest: Arc<RwLock<Ingest>>,
    /// The model that embeds queries.
    pub model: Arc<Mutex<FusionModel>>,
    /// Counters.
    pub stats: Arc<IndexStats>,
    /// Largest k.
    pub max_k: usize,
    search_seconds: Histogram,
    registry: Registry,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("max_k", &self.max_k)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The server's state.
    pub fn new(
        ingest: Arc<RwLock<Ingest>>,
        model: Arc<Mutex<FusionModel>>,
        stats: Arc<IndexStats>,
        max_k: usize,
    ) -> Arc<Shared> {
        let (registry, search_seconds) = registry(ingest.clone(), stats.clone());
        Arc::new(Shared {
            ingest,
            model,
            stats,
            max_k,
            search_seconds,
            registry,
        })
    }

    /// Embed and search (blocking).
    pub fn search(
        &self,
        text: Option<&str>,
        image: Option<&[u8]>,
        k: usize,
        kinds: &[Kind],
    ) -> anyhow::Result<query::SearchResults> {
        anyhow::ensure!(
            (1..=self.max_k).contains(&k),
            "k must be between 1 and {}",
            self.max_k
        );
        let started = std::time::Instant::now();
        let vectors = {
            let model = self.model.lock().unwrap_or_else(|p| p.into_inner());
            let bundle = self
                .ingest
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .meta
                .bundle
                .clone();
            query::check_space(&model, bundle.as_deref())?;
            query::embed(&model, text, image)?
        };
        let ingest = self.ingest.read().unwrap_or_else(|p| p.into_inner());
        let r = query::search(
            &ingest.index,
            ingest.meta.bundle.as_deref(),
            &vectors,
            kinds,
            k,
        )?;
        drop(ingest);
        self.search_seconds.observe(started.elapsed().as_secs_f64());
        self.stats.searches.fetch_add(1, Relaxed);
        Ok(r)
    }
}

/// The index's metrics (names prefixed `fusionstream_index_`) and its search-time histogram.
fn registry(ingest: Arc<RwLock<Ingest>>, stats: Arc<IndexStats>) -> (Registry, Histogram) {
    let search_seconds =
        Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]);
    let mut registry = Registry::with_prefix("fusionstream_index");
    registry.register_with_unit(
        "search",
        "Time to answer a search: embedding the query and searching",
        Unit::Seconds,
        search_seconds.clone(),
    );
    registry.register_collector(Box::new(IndexCollector { ingest, stats }));
    (registry, search_seconds)
}

#[derive(Debug)]
struct IndexCollector {
    ingest: Arc<RwLock<Ingest>>,
    stats: Arc<IndexStats>,
}

impl Collector for IndexCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = &self.stats;
        counter(
            &mut e,
            "records",
            "Embeddings records read",
            s.records.load(Relaxed),
        )?;
        counter(
            &mut e,
            "added",
            "Vectors added under a new event id",
            s.added.load(Relaxed),
        )?;
        counter(
            &mut e,
            "replaced",
            "Vectors that replaced their event's earlier one (replays)",
            s.replaced.load(Relaxed),
        )?;
        {
            let mut f = e.encode_descriptor(
                "refused",
                "Records not indexed, by reason",
                None,
                MetricType::Counter,
            )?;
            for why in [Refused::Malformed, Refused::OtherBundle, Refused::BadVector] {
                let labels = [("reason", why.name())];
                ConstCounter::new(s.refused[why as usize].load(Relaxed))
                    .encode(f.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "snapshots",
            "Snapshots written",
            s.snapshots.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "snapshot_bytes",
            "Size of the last snapshot",
            s.snapshot_bytes.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "snapshot_milliseconds",
            "Time the last snapshot took to write",
            s.snapshot_ms.load(Relaxed) as i64,
        )?;
        counter(
            &mut e,
            "searches",
            "Searches answered",
            s.searches.load(Relaxed),
        )?;
        let ingest = self.ingest.read().unwrap_or_else(|p| p.into_inner());
        {
            let mut f = e.encode_descriptor(
                "entries",
                "Vectors in the index, by kind",
                None,
                MetricType::Gauge,
            )?;
            for kind in Kind::ALL {
                let labels = [("kind", kind.name())];
                ConstGauge::new(ingest.index.len(kind) as i64).encode(f.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "memory_bytes",
            "Memory the graphs and ids hold",
            ingest.index.memory_bytes() as i64,
        )?;
        Ok(())
    }
}

/// Serve on `addr` until `stop`; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the index's server to {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/search", get(search_get).post(search_post))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(shared);
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "index server stopped");
        }
    });
    tracing::info!(address = %bound, "serving /search, /metrics, /healthz");
    Ok(bound)
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    crate::telemetry::server::openmetrics(&s.registry)
}

#[derive(Debug, Deserialize)]
struct GetQuery {
    text: Option<String>,
    k: Option<usize>,
    kinds: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostQuery {
    text: Option<String>,
    image_base64: Option<String>,
    k: Option<usize>,
    #[serde(default)]
    kinds: Vec<Kind>,
}

const DEFAULT_K: usize = 10;

async fn search_get(State(s): State<Arc<Shared>>, Query(q): Query<GetQuery>) -> Response {
    let kinds = match q.kinds.as_deref().map(parse_kinds).transpose() {
        Ok(k) => k.unwrap_or_default(),
        Err(e) => return bad_request(e),
    };
    run_search(s, q.text, None, q.k.unwrap_or(DEFAULT_K), kinds).await
}

async fn search_post(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let q: PostQuery = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => return bad_request(anyhow::anyhow!("request body: {e}")),
    };
    let image = match q
        .image_base64
        .as_deref()
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
    {
        None => None,
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(e)) => return bad_request(anyhow::anyhow!("image_base64: {e}")),
    };
    run_search(s, q.text, image, q.k.unwrap_or(DEFAULT_K), q.kinds).await
}

/// Kinds from a comma-separated list.
pub fn parse_kinds(s: &str) -> anyhow::Result<Vec<Kind>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| Kind::parse(p.trim()).map_err(anyhow::Error::from))
        .collect()
}

async fn run_search(
    s: Arc<Shared>,
    text: Option<String>,
    image: Option<Vec<u8>>,
    k: usize,
    kinds: Vec<Kind>,
) -> Response {
    let r =
        tokio::task::spawn_blocking(move || s.search(text.as_deref(), image.as_deref(), k, &kinds))
            .await;
    match r {
        Ok(Ok(results)) => Json(results).into_response(),
        Ok(Err(e)) => bad_request(e),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

fn bad_request(e: anyhow::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"error": format!("{e:#}")})),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use fusionstream_index::{Params, SnapshotMeta, VectorIndex};

    use super::*;

    /// Every metric the index exposes is described in docs/metrics.md.
    #[test]
    fn metrics_catalogue_is_complete() {
        let ingest = Ingest::new(
            VectorIndex::new(Params::default()).unwrap(),
            SnapshotMeta::default(),
            vec![Kind::Image],
        );
        let (registry, _) = registry(Arc::new(RwLock::new(ingest)), Arc::default());
        let text = crate::telemetry::metrics::render(&registry);
        let doc = include_str!("../../../../docs/metrics.md");
        let mut seen = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let name = ["_bucket", "_sum", "_count", "_created"]
                .iter()
                .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in docs/metrics.md"
            );
            seen += 1;
        }
        assert!(seen >= 11, "{text}");
    }
}
