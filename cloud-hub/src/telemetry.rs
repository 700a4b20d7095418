//! Logs and traces of the hub process.
//!
//! `tracing` events go to standard output, as text or JSON lines (`[log] json`). Spans —
//! one per API request (`http`: method, route, status) and one per ingest commit
//! (`commit_events`: tenant, store, events, inserted) — are exported over OTLP/HTTP
//! (protobuf) when `[log] otlp_endpoint` (or `STORESYNC_HUB_OTLP_ENDPOINT`) names a
//! collector, e.g. `http://localhost:4318`; off by default. The exporter batches spans on
//! its own thread and drops them when the collector is slow, so it never holds a request
//! up. It speaks plain HTTP: run a collector beside the hub, or put TLS in front of it.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogConfig;

/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`init`] set up; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The OTLP/HTTP traces URL for a collector address: `…/v1/traces` is added unless given.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Installs the global subscriber: the filter (`RUST_LOG`, else `[log] filter`, else
/// `info`), the text or JSON log layer and, when configured, the OTLP span exporter.
///
/// Call it outside an async runtime: the exporter owns a blocking HTTP client.
pub fn init(config: &LogConfig) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(config.filter.as_deref().unwrap_or("info"))
    });
    let logs = if config.json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let provider = match &config.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_url(endpoint))
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| anyhow::anyhow!("OTLP exporter for {endpoint}: {e}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        Resource::builder()
                            .with_service_name("storesync-hub")
                            .build(),
                    )
                    .build(),
            )
        }
    };
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("storesync-hub"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(endpoint = %traces_url(endpoint), "exporting spans over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Flushes and stops the exporter (outside an async runtime).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("storesync-hub: flushing spans: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn collector_address_gets_the_traces_path_once() {
        assert_eq!(
            traces_url("http://localhost:4318"),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://otel:4318/"),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://otel:4318/v1/traces"),
            "http://otel:4318/v1/traces"
        );
    }
}
