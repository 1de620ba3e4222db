//! The federation's metrics, recorded with the `metrics` facade (the node installs the exporter). Labels are the
//! upstream's configured id, a step or a reason from a fixed list: never a user, a code or a token.
//!
//! - `idp_federation_attempts_total{upstream}`: browsers sent to the upstream.
//! - `idp_federation_successes_total{upstream}`: callbacks that signed a user in.
//! - `idp_federation_failures_total{upstream, reason}`: callbacks that did not; `reason` is one of `unavailable`,
//!   `timeout`, `error_response`, `invalid_token`, `misconfigured`, `bad_state` (unknown, used or expired
//!   `state`), `other_browser`, `refused` (no linked account and provisioning off), `directory` (the account
//!   could not be stored).
//! - `idp_federation_upstream_duration_seconds{upstream, step}` (histogram): each request to the upstream;
//!   `step` is `discovery`, `jwks`, `token`, `userinfo` or `emails`.
//! - `idp_federation_callback_duration_seconds{upstream}` (histogram): a successful callback, from its arrival to
//!   the session: the broker hop's own latency.

use std::time::Duration;

pub fn attempt(upstream: &str) {
    metrics::counter!("idp_federation_attempts_total", "upstream" => upstream.to_string()).increment(1);
}

pub fn success(upstream: &str, callback: Duration) {
    metrics::counter!("idp_federation_successes_total", "upstream" => upstream.to_string()).increment(1);
    metrics::histogram!("idp_federation_callback_duration_seconds", "upstream" => upstream.to_string())
        .record(callback.as_secs_f64());
}

pub fn failure(upstream: &str, reason: &'static str) {
    metrics::counter!("idp_federation_failures_total", "upstream" => upstream.to_string(), "reason" => reason)
        .increment(1);
}

pub fn upstream_call(upstream: &str, step: &'static str, took: Duration) {
    metrics::histogram!("idp_federation_upstream_duration_seconds", "upstream" => upstream.to_string(), "step" => step)
        .record(took.as_secs_f64());
}
