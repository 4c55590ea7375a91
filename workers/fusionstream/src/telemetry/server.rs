//! The worker's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the
//! process is alive and serving) and `/readyz` (the model is loaded, a consumer-group worker
//! has partitions assigned, and shutdown has not begun).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::recorder::Recorder;

/// How often the recent throughput is sampled.
const THROUGHPUT_SAMPLE: Duration = Duration::from_secs(5);

struct Endpoints {
    recorder: Arc<Recorder>,
    health: Arc<Health>,
    registry: Registry,
}

/// Bind `addr` and serve until `stop` fires; also samples the throughput for the
/// "seconds to drain" gauge. Returns the bound address (port 0 picks a free one).
pub async fn spawn(
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics server to {addr}"))?;
    let bound = listener.local_addr()?;
    let state = Arc::new(Endpoints {
        registry: super::metrics::registry(recorder.clone(), health.clone()),
        recorder: recorder.clone(),
        health,
    });
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let sampler_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(THROUGHPUT_SAMPLE);
        loop {
            tokio::select! {
                _ = tick.tick() => recorder.sample_throughput(Instant::now()),
                _ = sampler_stop.cancelled() => return,
            }
        }
    });
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /healthz, /readyz");
    Ok(bound)
}

async fn metrics(State(s): State<Arc<Endpoints>>) -> impl IntoResponse {
    openmetrics(&s.registry)
}

/// `registry` rendered as a `/metrics` response (the worker's and the index's servers).
pub(crate) fn openmetrics(registry: &Registry) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        super::metrics::render(registry),
    )
}

async fn readyz(State(s): State<Arc<Endpoints>>) -> impl IntoResponse {
    match s.health.not_ready(&s.recorder.adapter()) {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
