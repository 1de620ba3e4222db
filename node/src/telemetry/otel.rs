//! OpenTelemetry trace export (build feature `otel`): every `tracing` span (one per HTTP request, with its
//! request id) goes to `telemetry.otlp_endpoint` over OTLP/HTTP (protobuf), batched on a background thread.

use crate::config::Config;
use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Flushes and stops the exporter when dropped (at exit).
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

pub fn layer(config: &Config) -> anyhow::Result<(Option<super::BoxedLayer>, Guard)> {
    let Some(endpoint) = &config.telemetry.otlp_endpoint else { return Ok((None, Guard(None))) };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.as_str())
        .build()
        .context("telemetry.otlp_endpoint")?;
    let service_name = config.telemetry.service_name.clone().unwrap_or_else(|| "idp".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build();
    let tracer = provider.tracer("idp");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((Some(Box::new(layer)), Guard(Some(provider))))
}
