//! Logs and traces: the `tracing` subscriber (text or JSON logs on stderr) and, when
//! `telemetry.otlp_endpoint` is set, an OpenTelemetry layer exporting spans over OTLP/HTTP.
//!
//! Trace context travels in W3C `traceparent` headers: an event's span is parented to the
//! context of its Kafka record, and its outputs carry the event span's context, so a
//! consumer of the outputs continues the producer's trace.

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
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

/// The trace context of a W3C `traceparent` value (invalid or absent: an empty context).
pub fn context_of(traceparent: Option<&str>) -> opentelemetry::Context {
    let Some(sc) = traceparent.and_then(parse_traceparent) else {
        return opentelemetry::Context::new();
    };
    opentelemetry::Context::new().with_remote_span_context(sc)
}

/// Parse `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
pub fn parse_traceparent(v: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// The `traceparent` to write on the outputs of the event whose span is `span`: the span's
/// own context when spans are exported, else the event's incoming value unchanged when it is
/// a valid W3C trace context (a malformed one is dropped, never passed on).
pub fn traceparent_for(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        Some(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ))
    } else {
        incoming
            .filter(|v| parse_traceparent(v).is_some())
            .map(|v| v.trim().to_owned())
    }
}

/// Link `span` (a model batch) to the span of an event it served.
pub fn link(span: &tracing::Span, event: &tracing::Span) {
    let cx = event.context();
    let sc = cx.span().span_context().clone();
    span.add_link(sc);
}

/// Parent `span` to the trace context of an incoming `traceparent`.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if traceparent.is_some() {
        // Without the OpenTelemetry layer (no export configured) there is nothing to parent.
        let _ = span.set_parent(context_of(traceparent));
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

    #[test]
    fn traceparent_parsing_follows_w3c() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(ok).expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
        // A later version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more")
                .is_some()
        );
    }

    #[test]
    fn without_export_the_incoming_traceparent_passes_through() {
        let span = tracing::info_span!("event");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent_for(&span, Some(tp)).as_deref(), Some(tp));
        assert_eq!(traceparent_for(&span, None), None);
        // Garbage is dropped, not passed on to the outputs.
        assert_eq!(traceparent_for(&span, Some("not-a-trace-context")), None);
        assert_eq!(
            traceparent_for(
                &span,
                Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
            ),
            None
        );
    }
}
