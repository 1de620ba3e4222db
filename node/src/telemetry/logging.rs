//! Log set-up: `log.level` (or `IDP_LOG`) as the filter, `log.format` `pretty` or `json`, on stderr; with the
//! `otel` build feature and `telemetry.otlp_endpoint`, spans are also exported over OTLP.
//!
//! What is logged is the callers' business, with one rule: no token, code, password, secret or raw subject
//! identifier in any line (a keyed hash of the subject where correlation is needed, see `audit::SubjectHasher`).

use crate::config::Config;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Installs the global subscriber. Returns what must live until exit (the OTLP exporter, when there is one).
pub fn init(config: &Config) -> anyhow::Result<Guard> {
    let filter = std::env::var("IDP_LOG").unwrap_or_else(|_| config.log.level.clone());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt_layer = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt_layer = if config.log.format == "json" { fmt_layer.json().boxed() } else { fmt_layer.boxed() };
    let (otel_layer, guard) = otel::layer(config)?;
    // The filter is global: it applies to the exporter below it too.
    tracing_subscriber::registry().with(otel_layer).with(EnvFilter::new(filter)).with(fmt_layer).try_init().ok();
    Ok(guard)
}

pub use otel::Guard;

/// The exporter layer, on the bare registry.
type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

#[cfg(not(feature = "otel"))]
mod otel {
    use crate::config::Config;

    /// Nothing to flush without the `otel` feature.
    pub struct Guard;

    pub fn layer(_config: &Config) -> anyhow::Result<(Option<super::BoxedLayer>, Guard)> {
        Ok((None, Guard))
    }
}

#[cfg(feature = "otel")]
#[path = "otel.rs"]
mod otel;
