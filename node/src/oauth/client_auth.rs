//! Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3, OIDC Core §9):
//! `client_secret_basic`, `client_secret_post`, `private_key_jwt` (RFC 7523) and `none` for public clients.

use crate::directory::{AuthMethod, Client};
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::flow::keyed_id;
use crate::oauth::params::Params;
use crate::oauth::record_shard;
use crate::state::AppState;
use actix_web::HttpRequest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use idp_actors::jwt;
use idp_actors::shard::model::{ShardError, UseOnce};
use idp_proto::{ErrorCode, RecordId, Secret};
use serde_json::Value;
use std::sync::Arc;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest accepted lifetime of a client assertion.
const MAX_ASSERTION_LIFETIME_SECS: u64 = 600;

fn invalid_client(basic: bool) -> OAuthError {
    let error = OAuthError::new(ErrorCode::InvalidClient, "client authentication failed");
    if basic {
        error.with_challenge("Basic realm=\"idp\"")
    } else {
        error
    }
}

/// Authenticates the client of a back-channel request; `allow_public` admits a public client by its id alone.
pub async fn authenticate_client(
    request: &HttpRequest,
    params: &Params,
    state: &AppState,
    allow_public: bool,
) -> OAuthResult<Arc<Client>> {
    let basic = basic_credentials(request)?;
    let methods = [basic.is_some(), params.contains("client_secret"), params.contains("client_assertion")];
    // RFC 6749 §2.3: a client uses one authentication method per request.
    if methods.iter().filter(|present| **present).count() > 1 {
        return Err(OAuthError::new(ErrorCode::InvalidRequest, "more than one client authentication method"));
    }
    if let Some((client_id, secret)) = basic {
        if params.get("client_id").is_some_and(|named| named != client_id) {
            return Err(OAuthError::new(ErrorCode::InvalidRequest, "client_id does not match the credentials"));
        }
        return check_secret(state, &client_id, &secret).ok_or_else(|| invalid_client(true));
    }
    if let Some(secret) = params.get("client_secret") {
        let client_id = params.get("client_id").ok_or_else(|| invalid_client(false))?;
        return check_secret(state, client_id, &Secret::new(secret.to_string())).ok_or_else(|| invalid_client(false));
    }
    if let Some(assertion) = params.get("client_assertion") {
        if params.get("client_assertion_type") != Some(JWT_BEARER) {
            return Err(OAuthError::new(ErrorCode::InvalidRequest, "unsupported client_assertion_type"));
        }
        return check_assertion(state, assertion, params.get("client_id")).await;
    }
    let client_id = params.get("client_id").ok_or_else(|| invalid_client(false))?;
    let client = state.directory().client(client_id).cloned().ok_or_else(|| invalid_client(false))?;
    if allow_public && client.is_public() {
        Ok(client)
    } else {
        Err(invalid_client(false))
    }
}

/// `Authorization: Basic` with form-encoded id and secret (RFC 6749 §2.3.1).
fn basic_credentials(request: &HttpRequest) -> OAuthResult<Option<(String, Secret<String>)>> {
    let Some(header) = request.headers().get("authorization") else { return Ok(None) };
    let malformed = || {
        OAuthError::new(ErrorCode::InvalidClient, "malformed Basic credentials").with_challenge("Basic realm=\"idp\"")
    };
    let text = header.to_str().map_err(|_| malformed())?;
    let Some(encoded) = strip_scheme(text, "Basic") else {
        return Err(malformed());
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let decode = |text: &str| {
        url::form_urlencoded::parse(format!("x={text}").as_bytes()).next().map(|(_, value)| value.into_owned())
    };
    let (id, secret) = (decode(id).ok_or_else(malformed)?, decode(secret).ok_or_else(malformed)?);
    if id.is_empty() {
        return Err(malformed());
    }
    Ok(Some((id, Secret::new(secret))))
}

/// The credentials after an `Authorization` scheme, whose name is case-insensitive (RFC 9110 §11.1).
pub fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (name, credentials) = header.split_once(' ')?;
    name.eq_ignore_ascii_case(scheme).then_some(credentials)
}

fn check_secret(state: &AppState, client_id: &str, secret: &Secret<String>) -> Option<Arc<Client>> {
    let directory = state.directory();
    let client = directory.client(client_id)?;
    let uses_secret = matches!(client.auth_method, AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost);
    (uses_secret && directory.verify_client_secret(client, secret)).then(|| client.clone())
}

/// RFC 7523 §3: `iss` = `sub` = client id, `aud` names us, unexpired, short-lived, and its `jti` used once.
async fn check_assertion(state: &AppState, assertion: &str, named_client: Option<&str>) -> OAuthResult<Arc<Client>> {
    let (_, unverified) = jwt::decode_unverified(assertion).map_err(|_| invalid_client(false))?;
    let client_id = unverified.get("sub").and_then(Value::as_str).ok_or_else(|| invalid_client(false))?;
    if named_client.is_some_and(|named| named != client_id) {
        return Err(invalid_client(false));
    }
    let client = state.directory().client(client_id).cloned().ok_or_else(|| invalid_client(false))?;
    if client.auth_method != AuthMethod::PrivateKeyJwt {
        return Err(invalid_client(false));
    }
    let (_, claims) = jwt::verify(assertion, &client.jwks).map_err(|_| invalid_client(false))?;
    let now = state.clock.now_secs();
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let exp = claims.get("exp").and_then(Value::as_u64).ok_or_else(|| invalid_client(false))?;
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => accepted_audience(state, aud.as_str()),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(|aud| accepted_audience(state, aud)),
        _ => false,
    };
    let valid = text("iss") == Some(client_id) && audience_ok && exp > now && exp <= now + MAX_ASSERTION_LIFETIME_SECS;
    let jti = text("jti").filter(|jti| !jti.is_empty() && jti.len() <= 256);
    let (true, Some(jti)) = (valid, jti) else { return Err(invalid_client(false)) };
    let id = keyed_id(state, "assertion", &[client_id, jti]);
    let once = UseOnce { id, expires_at_ms: (exp + 1) * 1000, by: RecordId::random() };
    match state.shards.execute(record_shard(state, &id), once).await {
        Ok(()) => Ok(client),
        Err(ShardError::Unavailable(_)) => Err(OAuthError::new(ErrorCode::TemporarilyUnavailable, "retry")),
        Err(_) => Err(invalid_client(false)),
    }
}

fn accepted_audience(state: &AppState, audience: &str) -> bool {
    audience == state.issuer || audience == state.endpoint("/token")
}
