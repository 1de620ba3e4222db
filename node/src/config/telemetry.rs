//! The `[audit]` and `[telemetry]` sections: where audit events go, and the OpenTelemetry exporter.

use super::validate::ensure;
use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Audit sinks `audit.sink` accepts.
pub const AUDIT_SINKS: &[&str] = &["stdout", "file", "off"];

/// Audit events (`docs/audit.md`): JSON lines to stdout or a file, and optionally a Redis stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `stdout` (default), `file` (appends to `audit.file`) or `off`.
    #[serde(default = "defaults::sink")]
    pub sink: String,
    /// The JSON-lines file of `sink = "file"`; opened for appending, created if missing.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Also append every event to this Redis stream (XADD, on the cluster's Redis); absent means no stream.
    #[serde(default)]
    pub redis_stream: Option<String>,
    /// Approximate length the Redis stream is trimmed to (`XADD ... MAXLEN ~`).
    #[serde(default = "defaults::redis_maxlen")]
    pub redis_maxlen: u64,
    /// Events waiting to be written; when full, new events are dropped and counted
    /// (`idp_audit_events_dropped_total`), never blocking a request.
    #[serde(default = "defaults::queue_capacity")]
    pub queue_capacity: usize,
}

/// Traces exported to an OpenTelemetry collector (needs the `otel` build feature).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint of the collector, e.g. `http://127.0.0.1:4317`; absent means no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[serde(default)]
    pub service_name: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sink: defaults::sink(),
            file: None,
            redis_stream: None,
            redis_maxlen: defaults::redis_maxlen(),
            queue_capacity: defaults::queue_capacity(),
        }
    }
}

mod defaults {
    pub fn sink() -> String {
        "stdout".into()
    }
    pub fn redis_maxlen() -> u64 {
        1_000_000
    }
    pub fn queue_capacity() -> usize {
        16_384
    }
}

pub(super) fn validate_audit(audit: &AuditConfig, redis_configured: bool) -> Result<(), ConfigError> {
    let known = AUDIT_SINKS.contains(&audit.sink.as_str());
    ensure(known, || "audit.sink".into(), || "must be `stdout`, `file` or `off`".into())?;
    let file_given = audit.sink != "file" || audit.file.is_some();
    ensure(file_given, || "audit.file".into(), || "is required when audit.sink is `file`".into())?;
    ensure(audit.queue_capacity >= 1, || "audit.queue_capacity".into(), || "must be at least 1".into())?;
    if let Some(stream) = &audit.redis_stream {
        ensure(!stream.is_empty(), || "audit.redis_stream".into(), || "must not be empty".into())?;
        ensure(redis_configured, || "audit.redis_stream".into(), || "needs redis.url or redis.sentinels".into())?;
        ensure(audit.redis_maxlen >= 1, || "audit.redis_maxlen".into(), || "must be at least 1".into())?;
    }
    Ok(())
}

pub(super) fn validate_telemetry(telemetry: &TelemetryConfig) -> Result<(), ConfigError> {
    if let Some(endpoint) = &telemetry.otlp_endpoint {
        let valid = url::Url::parse(endpoint).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
        ensure(valid, || "telemetry.otlp_endpoint".into(), || "must be an http or https URL".into())?;
        let built = cfg!(feature = "otel");
        ensure(built, || "telemetry.otlp_endpoint".into(), || "this build has no `otel` feature".into())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_audit_config_is_valid_and_writes_to_stdout() {
        let audit = AuditConfig::default();
        assert_eq!(audit.sink, "stdout");
        validate_audit(&audit, false).unwrap();
    }

    #[test]
    fn audit_rules_name_the_key_at_fault() {
        let key_of = |audit: AuditConfig, redis: bool| validate_audit(&audit, redis).unwrap_err().to_string();
        let unknown = AuditConfig { sink: "syslog".into(), ..AuditConfig::default() };
        assert!(key_of(unknown, false).contains("audit.sink"));
        let no_file = AuditConfig { sink: "file".into(), ..AuditConfig::default() };
        assert!(key_of(no_file, false).contains("audit.file"));
        let stream = AuditConfig { redis_stream: Some("idp:audit".into()), ..AuditConfig::default() };
        assert!(key_of(stream.clone(), false).contains("audit.redis_stream"));
        validate_audit(&stream, true).unwrap();
        let empty_queue = AuditConfig { queue_capacity: 0, ..AuditConfig::default() };
        assert!(key_of(empty_queue, false).contains("audit.queue_capacity"));
    }

    #[test]
    fn an_otlp_endpoint_must_be_an_http_url() {
        let bad = TelemetryConfig { otlp_endpoint: Some("localhost:4317".into()), service_name: None };
        assert!(validate_telemetry(&bad).unwrap_err().to_string().contains("telemetry.otlp_endpoint"));
        validate_telemetry(&TelemetryConfig::default()).unwrap();
    }
}
