//! Traces: W3C `traceparent` read from requests, and each answered inference
//! exported over OTLP/HTTP (protobuf) as a server span with one child span per
//! stage. The server span opens when the request arrives, so that its ids are
//! known to the shadow copies run on its behalf (each becomes a child span
//! when it has run); the stage spans are built after the answer from the
//! durations already measured, with their real start and end times. A request
//! pays for opening one span and a few allocations; the SDK's batch processor
//! exports from its own thread, dropping (never waiting) when its queue is full.

use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use std::time::{Duration, SystemTime};
use vigil_runtime::{ShadowObserver, ShadowRun, TraceIds};

/// A caller's trace position, from `traceparent`
/// (`00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 16 / 2],
    pub sampled: bool,
}

impl TraceParent {
    /// `None` for anything that is not a valid version-00 header (or a later
    /// version's first four fields, as the spec asks); an invalid header is
    /// ignored, never an error, as W3C Trace Context says.
    pub fn parse(header: &str) -> Option<TraceParent> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let version = u8::from_str_radix(version, 16).ok().filter(|_| version.len() == 2)?;
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !(lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok().filter(|_| flags.len() == 2)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

/// Exports spans to an OTLP/HTTP collector.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// A traced request's server span, open from the request's start so that
/// its ids are known to what runs on its behalf (shadow copies).
pub struct RequestTrace {
    span: opentelemetry_sdk::trace::Span,
    pub ids: TraceIds,
}

/// One answered request, as a trace sees it.
pub struct RequestSpan {
    pub trace: RequestTrace,
    pub attributes: Vec<KeyValue>,
    /// Preprocess, queue, inference, postprocess, total (as in `Server-Timing`).
    pub stages: [Duration; 5],
    pub error: Option<String>,
}

impl Traces {
    /// `endpoint` is the collector's base URL (`http://collector:4318`), to
    /// which `/v1/traces` is added, or the full URL of its traces path.
    /// Traces a caller did not sample stay unsampled; others are sampled at
    /// `sample_ratio`.
    pub fn new(endpoint: &str, sample_ratio: f64) -> Result<Traces, String> {
        let url = match endpoint.trim_end_matches('/') {
            e if e.matches('/').count() <= 2 => format!("{e}/v1/traces"),
            e => e.to_owned(),
        };
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(10))
            .with_headers(Default::default())
            .build()
            .map_err(|e| format!("otlp_endpoint {url}: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("vigil")
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        // Exported every second (the SDK's default is five), so that a trace
        // shows up while the person who sent the request is still looking.
        let batches = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_secs(1))
            .build();
        let processor =
            opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(sample_ratio.clamp(0.0, 1.0)))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("vigil");
        tracing::info!(url, sample_ratio, "exporting traces over OTLP/HTTP");
        Ok(Traces { provider, tracer })
    }

    /// Opens a request's server span (`infer`), under the caller's span when
    /// it sent `traceparent`; `None` when sampling leaves the request out
    /// (the caller's decision when it made one, else `sample_ratio`).
    pub fn start(&self, parent: Option<TraceParent>) -> Option<RequestTrace> {
        let parent = match parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(p.trace_id),
                SpanId::from_bytes(p.span_id),
                if p.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() },
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let span =
            self.tracer.span_builder("infer").with_kind(SpanKind::Server).start_with_context(&self.tracer, &parent);
        let context = span.span_context();
        if !context.is_sampled() {
            return None;
        }
        let ids = TraceIds { trace_id: context.trace_id().to_bytes(), span_id: context.span_id().to_bytes() };
        Some(RequestTrace { span, ids })
    }

    /// Ends a request's server span with its attributes, and a child per
    /// stage laid end to end up to now.
    pub fn record(&self, request: RequestSpan) {
        let end = SystemTime::now();
        let start = end.checked_sub(request.stages[4]).unwrap_or(end);
        let RequestTrace { mut span, ids } = request.trace;
        span.set_attributes(request.attributes);
        if let Some(error) = request.error {
            span.set_status(Status::error(error));
        }
        let context = remote(ids.trace_id, ids.span_id);
        let mut at = start;
        for (name, took) in crate::metrics::STAGES.iter().zip(&request.stages[..4]) {
            let mut child = self
                .tracer
                .span_builder(*name)
                .with_kind(SpanKind::Internal)
                .with_start_time(at)
                .start_with_context(&self.tracer, &context);
            at += *took;
            child.end_with_timestamp(at.min(end));
        }
        span.end_with_timestamp(end);
    }

    /// Sends what is buffered (at shutdown); blocks, so call it off the runtime.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }
}

/// A sampled span of another process (or of this one, already ended) as a parent.
fn remote(trace_id: [u8; 16], span_id: [u8; 8]) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// A shadow copy of a traced request is a span under the request's span.
impl ShadowObserver for Traces {
    fn shadow_ran(&self, run: &ShadowRun<'_>) {
        let mut span = self
            .tracer
            .span_builder("shadow")
            .with_kind(SpanKind::Internal)
            .with_start_time(run.started)
            .with_attributes([
                KeyValue::new("vigil.endpoint", run.endpoint.to_owned()),
                KeyValue::new("vigil.version", run.version.to_owned()),
                KeyValue::new("vigil.shadow.outcome", run.outcome),
            ])
            .start_with_context(&self.tracer, &remote(run.trace.trace_id, run.trace.span_id));
        if run.outcome == "failed" {
            span.set_status(Status::error("the shadow version failed to answer"));
        }
        span.end_with_timestamp(run.started + run.took);
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    #[test]
    fn reads_a_version_00_header() {
        let p = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(p.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p.span_id), "00f067aa0ba902b7");
        assert!(p.sampled);
        let unsampled = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.expect("valid").sampled);
    }

    #[test]
    fn ignores_hostile_and_invalid_headers() {
        let long = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(10_000));
        for bad in [
            "",
            "-",
            "---",
            "00-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bé-01",
            &long,
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:.60}");
        }
        // A later version may add fields after the four it shares with 00.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }
}
