//! `[registration]`: dynamic client registration (RFC 7591, managed per RFC 7592) on the public listener.

use super::validate::ensure;
use super::ConfigError;
use serde::{Deserialize, Serialize};

/// Who may register clients at `/register`. Off unless `enabled`; then each request needs one of the initial
/// access tokens (RFC 7591 §3), unless `open` explicitly allows anyone.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Serve `/register` and advertise `registration_endpoint` in discovery.
    #[serde(default)]
    pub enabled: bool,
    /// Accept registrations without an initial access token (anyone may register a client). Registered clients
    /// are never first-party (consent is always asked) and may ask only the standard scopes.
    #[serde(default)]
    pub open: bool,
    /// Initial access tokens, as `sha256:<64 hex digits>` of the token (`printf %s TOKEN | sha256sum`): the tokens
    /// themselves never appear in the file.
    #[serde(default)]
    pub initial_access_tokens: Vec<String>,
}

pub(super) fn validate_registration(registration: &RegistrationConfig) -> Result<(), ConfigError> {
    for (index, hash) in registration.initial_access_tokens.iter().enumerate() {
        let hex = hash.strip_prefix("sha256:").unwrap_or_default();
        let valid = hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit());
        ensure(
            valid,
            || format!("registration.initial_access_tokens[{index}]"),
            || "must be `sha256:` and the 64 hex digits of the token's SHA-256".into(),
        )?;
    }
    let gated = registration.open || !registration.initial_access_tokens.is_empty();
    ensure(
        !registration.enabled || gated,
        || "registration.initial_access_tokens".into(),
        || "registration is enabled: list initial access tokens, or set registration.open = true".into(),
    )
}
