//! W3C trace context through the engine: an event's span is parented to the `traceparent`
//! of its record, each model batch's span is linked to the spans of the events it serves,
//! and the outputs carry the `traceparent` of their event's span. Only the OpenTelemetry API
//! (through `tracing-opentelemetry`): whether and where spans are exported is the binary's
//! choice (its telemetry installs the exporter); without one, incoming contexts pass through.

use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

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
