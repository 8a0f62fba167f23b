//! Logs and traces. Logs go to stderr (text or JSON, filtered by `RUST_LOG`). Traces are
//! exported over OTLP/gRPC when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and
//! `OTEL_SERVICE_NAME` names the service, `iot-authz` by default); the caller's W3C
//! `traceparent` becomes the parent of each check's span, so authorization shows up inside
//! the caller's trace. Spans carry the decision, reason kind, action, scope and revision,
//! never a token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported; when not, handlers create no spans at all.
pub fn enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans with a bounded wait.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter, waiting at most a few seconds (a missing collector
    /// must not hold up shutdown).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(3))
        {
            tracing::warn!(error = %e, "trace exporter did not flush");
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs logging, and tracing when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Must run
/// inside a Tokio runtime (the OTLP exporter uses it).
pub fn init(log_format: LogFormat) -> Telemetry {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<_> + Send + Sync> = if log_format == LogFormat::Json {
        Box::new(fmt.json().with_filter(filter()))
    } else {
        Box::new(fmt.with_filter(filter()))
    };
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    let mut telemetry = Telemetry::default();
    let otel = if endpoint.is_empty() {
        None
    } else {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                let service = std::env::var("OTEL_SERVICE_NAME")
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "iot-authz".to_owned());
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(service)
                            .build(),
                    )
                    .build();
                opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
                let tracer = provider.tracer("iot-authz");
                telemetry.provider = Some(provider);
                TRACING.store(true, Ordering::Relaxed);
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(
                            tracing_subscriber::filter::Targets::new()
                                .with_target("iot_authz", tracing::Level::INFO),
                        ),
                )
            }
            Err(e) => {
                eprintln!("warning: traces disabled, OTLP exporter failed: {e}");
                None
            }
        }
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    telemetry
}

/// A span for one authorization request, child of the caller's trace, or `None` when
/// tracing is off. `lookup` reads the caller's headers or gRPC metadata.
pub fn check_span<'a>(api: &'static str, lookup: impl Fn(&str) -> Option<&'a str>) -> Option<Span> {
    if !enabled() {
        return None;
    }
    let span = tracing::info_span!(
        "authz.check",
        otel.kind = "server",
        api,
        decision = tracing::field::Empty,
        reason = tracing::field::Empty,
        action = tracing::field::Empty,
        scope = tracing::field::Empty,
        revision = tracing::field::Empty,
        checks = tracing::field::Empty,
    );
    let carrier: std::collections::HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), lookup(k)?.to_owned())))
        .collect();
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(parent);
    Some(span)
}

/// Records a BatchCheck on its span: how many checks it answered, on which revision (the
/// decisions themselves are counted in metrics and, when enabled, in the decision log).
pub fn record_batch(span: &Option<Span>, checks: usize, revision: &str) {
    if let Some(span) = span {
        span.record("checks", checks);
        span.record("revision", revision);
    }
}

/// Records a decision on a check span.
pub fn record(
    span: &Option<Span>,
    decision: &str,
    reason: &str,
    action: Option<&str>,
    scope: Option<&str>,
    revision: &str,
) {
    if let Some(span) = span {
        span.record("decision", decision);
        span.record("reason", reason);
        if let Some(a) = action {
            span.record("action", a);
        }
        if let Some(s) = scope {
            span.record("scope", s);
        }
        span.record("revision", revision);
    }
}
