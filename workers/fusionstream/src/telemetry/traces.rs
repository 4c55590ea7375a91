//! Logs and traces: the `tracing` subscriber (text or JSON logs on stderr) and, when
//! `telemetry.otlp_endpoint` is set, an OpenTelemetry layer exporting spans over OTLP/HTTP.
//!
//! Trace context travels in W3C `traceparent` headers (the engine's `trace_context`): an
//! event's span is parented to the context of its Kafka record, and its outputs carry the
//! event span's context, so a consumer of the outputs continues the producer's trace.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps the span exporter alive; dropping it flushes the spans still queued.
#[derive(Debug)]
#[must_use = "dropping the guard stops the span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: flushing spans at exit failed: {e}");
            }
        }
    }
}

/// Install the global subscriber. Call outside any async runtime (the OTLP exporter uses a
/// blocking HTTP client on its own thread).
pub fn init(c: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let export = !c.otlp_endpoint.is_empty();
    // One global filter for both layers. Per-layer filters (a `Targets` on the OpenTelemetry
    // layer) lost spans: now and then an event span was recorded by the log layer but not
    // by the exporter, its fetch and preprocess spans became roots of new traces. With
    // export on, the pipeline's own spans are enabled at info whatever the log level.
    let filter = EnvFilter::try_new(log_directives(&c.log_level, export))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match c.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (otel, provider) = if !export {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!(
                "{}/v1/traces",
                c.otlp_endpoint.trim_end_matches('/')
            ))
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                c.trace_sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(c.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("fusionstream");
        (
            Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            Some(provider),
        )
    };
    // A second init in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(otel)
        .try_init();
    Ok(TelemetryGuard { provider })
}

/// The filter directives: the configured log level, plus the pipeline's own spans at info
/// when spans are exported (unless the configuration says something of `fusionstream`).
fn log_directives(log_level: &str, export: bool) -> String {
    if export && !log_level.contains("fusionstream") {
        format!("{log_level},fusionstream=info")
    } else {
        log_level.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_pipeline_spans_do_not_depend_on_the_log_level() {
        assert_eq!(log_directives("warn", false), "warn");
        assert_eq!(log_directives("warn", true), "warn,fusionstream=info");
        assert_eq!(
            log_directives("info,fusionstream=debug", true),
            "info,fusionstream=debug"
        );
        for d in ["warn", "info,h2=off"] {
            assert!(EnvFilter::try_new(log_directives(d, true)).is_ok());
        }
    }
}
