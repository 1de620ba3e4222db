//! The rules of `[[clients]]`. Messages name the client's keys and never its secret.

use super::validate::{ensure, is_loopback};
use super::{ClientConfig, ConfigError};
use idp_actors::jwt::verifying_keys_from_jwks;
use std::collections::HashSet;
use url::Url;

/// Grants a client may be registered for (RFC 6749 §4.1, §4.4, §6).
pub const SUPPORTED_GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];

/// Response types a client may be registered for (OAuth 2.0 Multiple Response Type Encoding Practices §5).
pub const SUPPORTED_RESPONSE_TYPES: &[&str] =
    &["code", "id_token", "id_token token", "code id_token", "code token", "code id_token token"];

/// Token endpoint client authentication methods (OIDC Core §9).
pub const SUPPORTED_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "private_key_jwt", "none"];

/// Schemes a redirect may never use: they would run or read content in the provider's page.
const FORBIDDEN_REDIRECT_SCHEMES: &[&str] = &["javascript", "data", "vbscript", "file", "blob"];

const REDIRECT_URI_REASON: &str =
    "must be an absolute http(s) URL without a fragment (or a native app's custom-scheme URI)";

const HTTP_REDIRECT_REASON: &str =
    "must use https: plain http is allowed only on a loopback host (127.0.0.1, [::1] or localhost)";

const NO_USABLE_KEY_REASON: &str = "no usable signing key (RS256 with RSA ≥ 2048 bits, ES256 P-256, or EdDSA Ed25519)";

type Checked = Result<(), ConfigError>;

pub(super) fn validate_clients(clients: &[ClientConfig], algorithms: &[String]) -> Checked {
    let mut client_ids = HashSet::new();
    for (index, client) in clients.iter().enumerate() {
        let key = |name: &str| format!("clients[{index}].{name}");
        validate_client_id(&client.client_id, &key)?;
        let unique = client_ids.insert(client.client_id.as_str());
        let duplicate = || format!("`{}` is used by an earlier client", client.client_id);
        ensure(unique, || key("client_id"), duplicate)?;
        validate_client(client, algorithms, &key)?;
    }
    Ok(())
}

fn validate_client(client: &ClientConfig, algorithms: &[String], key: &dyn Fn(&str) -> String) -> Checked {
    validate_uris(&client.redirect_uris, &key("redirect_uris"))?;
    validate_uris(&client.post_logout_redirect_uris, &key("post_logout_redirect_uris"))?;
    validate_members(&client.grant_types, SUPPORTED_GRANT_TYPES, "grant type", &key("grant_types"))?;
    validate_members(&client.response_types, SUPPORTED_RESPONSE_TYPES, "response type", &key("response_types"))?;
    validate_authentication(client, key)?;
    validate_audiences(client, key)?;
    // A response type with `code` is usable only with the authorization_code grant (the directory drops it
    // otherwise), so the default `response_types = ["code"]` of a client_credentials-only client needs no URI.
    let code_grant = client.grant_types.iter().any(|grant| grant == "authorization_code");
    let needs_redirect =
        code_grant || client.response_types.iter().any(|response_type| !response_type.contains("code"));
    let redirect_reason =
        || "at least one is required for the authorization_code grant or an implicit response type".into();
    ensure(!needs_redirect || !client.redirect_uris.is_empty(), || key("redirect_uris"), redirect_reason)?;
    let algorithm = &client.id_token_signed_response_alg;
    let configured = algorithms.contains(algorithm);
    let algorithm_reason = || format!("`{algorithm}` is not one of keys.algorithms ({})", algorithms.join(", "));
    ensure(configured, || key("id_token_signed_response_alg"), algorithm_reason)
}

/// RFC 6749 Appendix A.1: client_id = *VSCHAR (printable ASCII, %x20-7E); we also refuse the empty one.
fn validate_client_id(client_id: &str, key: &dyn Fn(&str) -> String) -> Checked {
    ensure(!client_id.is_empty(), || key("client_id"), || "must not be empty".into())?;
    let printable = client_id.bytes().all(|byte| (0x20..=0x7e).contains(&byte));
    ensure(printable, || key("client_id"), || "must be printable ASCII".into())
}

/// RFC 6749 §3.1.2: absolute, no fragment. RFC 8252 §7.1: native apps may use a private-use scheme.
fn validate_uris(uris: &[String], key: &str) -> Checked {
    for (index, uri) in uris.iter().enumerate() {
        let key = || format!("{key}[{index}]");
        let parsed = Url::parse(uri).ok().filter(|url| url.fragment().is_none());
        let Some(url) = parsed else {
            return Err(ConfigError::key(key(), REDIRECT_URI_REASON));
        };
        let scheme = url.scheme();
        let allowed = !FORBIDDEN_REDIRECT_SCHEMES.contains(&scheme);
        ensure(allowed, key, || format!("must not use the `{scheme}` scheme"))?;
        // RFC 9700 §2.1 and RFC 8252 §8.3: a code in clear text may be read on the way; only loopback is safe.
        let loopback_if_http = scheme != "http" || is_loopback(&url);
        ensure(loopback_if_http, key, || HTTP_REDIRECT_REASON.into())?;
    }
    Ok(())
}

/// RFC 8707 §2: the audiences a client may ask tokens for are exact strings; an empty one could never be asked.
fn validate_audiences(client: &ClientConfig, key: &dyn Fn(&str) -> String) -> Checked {
    let default_given = client.default_audience.as_deref().is_none_or(|audience| !audience.is_empty());
    ensure(default_given, || key("default_audience"), || "must not be empty".into())?;
    for (index, audience) in client.audiences.iter().enumerate() {
        ensure(!audience.is_empty(), || key(&format!("audiences[{index}]")), || "must not be empty".into())?;
    }
    Ok(())
}

fn validate_members(values: &[String], supported: &[&str], what: &str, key: &str) -> Checked {
    for (index, value) in values.iter().enumerate() {
        let known = supported.contains(&value.as_str());
        let reason = || format!("unsupported {what} `{value}` (expected one of: {})", supported.join(", "));
        ensure(known, || format!("{key}[{index}]"), reason)?;
    }
    Ok(())
}

/// OIDC Core §9 and RFC 6749 §2.1: what each token endpoint authentication method needs.
fn validate_authentication(client: &ClientConfig, key: &dyn Fn(&str) -> String) -> Checked {
    let method = client.token_endpoint_auth_method.as_str();
    let known = SUPPORTED_AUTH_METHODS.contains(&method);
    let unknown_reason =
        || format!("unsupported method `{method}` (expected one of: {})", SUPPORTED_AUTH_METHODS.join(", "));
    ensure(known, || key("token_endpoint_auth_method"), unknown_reason)?;
    let has_secret = client.client_secret.is_some();
    match method {
        "client_secret_basic" | "client_secret_post" => {
            let reason = || format!("is required for token_endpoint_auth_method `{method}`");
            ensure(has_secret, || key("client_secret"), reason)?;
            let non_empty = client.client_secret.as_deref().is_some_and(|secret| !secret.is_empty());
            ensure(non_empty, || key("client_secret"), || "must not be empty".into())
        }
        "none" => validate_public_client(client, key),
        _ => {
            let reason = || format!("must be absent for token_endpoint_auth_method `{method}`");
            ensure(!has_secret, || key("client_secret"), reason)?;
            validate_jwks(client.jwks.as_ref(), key)
        }
    }
}

/// A public client (RFC 6749 §2.1) has no secret, so it cannot use the client_credentials grant (§4.4).
fn validate_public_client(client: &ClientConfig, key: &dyn Fn(&str) -> String) -> Checked {
    let reason = || "must be absent for a public client (token_endpoint_auth_method `none`)".into();
    ensure(client.client_secret.is_none(), || key("client_secret"), reason)?;
    let uses_client_credentials = client.grant_types.iter().any(|grant| grant == "client_credentials");
    let grant_reason = || "a public client (token_endpoint_auth_method `none`) may not use client_credentials".into();
    ensure(!uses_client_credentials, || key("grant_types"), grant_reason)
}

/// RFC 7517 §5: a JWK Set is a JSON object whose `keys` member is an array of keys; at least one of them must
/// verify an assertion we accept, or every request of the client would fail.
fn validate_jwks(jwks: Option<&serde_json::Value>, key: &dyn Fn(&str) -> String) -> Checked {
    let keys = jwks.and_then(|jwks| jwks.get("keys")).and_then(|keys| keys.as_array());
    let valid = keys.is_some_and(|keys| !keys.is_empty() && keys.iter().all(serde_json::Value::is_object));
    let reason = || "private_key_jwt needs a JWK Set: an object with a non-empty `keys` array of keys".into();
    ensure(valid, || key("jwks"), reason)?;
    match jwks.map(verifying_keys_from_jwks) {
        Some(Ok(usable)) => ensure(!usable.is_empty(), || key("jwks"), || NO_USABLE_KEY_REASON.into()),
        Some(Err(error)) => Err(ConfigError::key(key("jwks"), error.to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
