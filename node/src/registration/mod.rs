//! Dynamic client registration: `POST /register` (RFC 7591) and the client configuration endpoint
//! `/register/{client_id}` (RFC 7592: read, update, delete with the registration access token).
//!
//! - Registration needs an initial access token listed (as a SHA-256) in `registration.initial_access_tokens`,
//!   unless `registration.open`; a missing or unknown one is 401 `invalid_token` (RFC 6750 §3).
//! - Registered clients live where the admin API's clients live (the directory store): every node serves them.
//! - The registration access token is 256 bits from the CSPRNG, stored as its SHA-256 only; it is rotated on every
//!   read and update (RFC 7592 §2.1, §2.2 allow it; Keycloak does the same), so each response carries the one to use
//!   next. A client secret, likewise stored as a MAC, is returned only when it is issued.

pub mod metadata;

use crate::admin_api::clients::{generate_client_id, generate_secret, needs_secret};
use crate::admin_api::publish_directory;
use crate::directory::store::DirectoryStoreError;
use crate::directory::StoredClient;
use crate::oauth::client_auth::strip_scheme;
use crate::state::AppState;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use metadata::{client_from_metadata, metadata_of, MetadataError};
use serde_json::{json, Map, Value};

/// Registers the routes when `registration.enabled`.
pub fn configure(config: &mut web::ServiceConfig, enabled: bool) {
    if !enabled {
        return;
    }
    config.service(web::resource("/register").route(web::post().to(register_route))).service(
        web::resource("/register/{client_id}")
            .route(web::get().to(read_route))
            .route(web::put().to(update_route))
            .route(web::delete().to(delete_route)),
    );
}

/// Adds `registration_endpoint` to a discovery document when registration is on.
pub fn advertise(discovery: &mut Value, issuer: &str, enabled: bool) {
    if enabled {
        discovery["registration_endpoint"] = format!("{issuer}/register").into();
    }
}

fn error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, format!("Bearer realm=\"idp\", error=\"{code}\"")));
    }
    response.json(json!({"error": code, "error_description": description}))
}

fn invalid_token() -> HttpResponse {
    error(StatusCode::UNAUTHORIZED, "invalid_token", "the access token is missing, invalid or revoked")
}

fn metadata_error(failure: &MetadataError) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, failure.code(), failure.description())
}

fn store_error(failure: DirectoryStoreError) -> HttpResponse {
    match failure {
        DirectoryStoreError::Invalid { reason, .. } => {
            let (field, reason) = reason.split_once(": ").unwrap_or(("", reason.as_str()));
            metadata_error(&MetadataError::for_field(field, reason))
        }
        DirectoryStoreError::Exists(_) | DirectoryStoreError::Directory(_) => {
            error(StatusCode::BAD_REQUEST, "invalid_client_metadata", "the client clashes with another one")
        }
        DirectoryStoreError::NotFound(_) => invalid_token(),
        other => {
            tracing::warn!(error = %other, "client registration failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "retry")
        }
    }
}

/// An `admin_change` audit event of the registration endpoint (the actor is the registration endpoint: the
/// initial or registration access token it was given is a bearer credential that names nobody).
fn audit_registration(state: &AppState, action: &str, client_id: &str) {
    let event = crate::audit::AuditEvent::AdminChange {
        actor: "registration".into(),
        action: action.into(),
        target: client_id.into(),
    };
    state.audit.emit(event);
}

/// A refusal already rendered (boxed: a response is large).
type Refused = Box<HttpResponse>;

fn bearer(request: &HttpRequest) -> Option<String> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    strip_scheme(value, "Bearer").map(|token| token.trim().to_string())
}

fn sha256(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes()).as_ref().to_vec()
}

/// Constant-time equality of two digests.
fn same(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Whether the request may register: an initial access token of the configuration, or open registration.
fn may_register(state: &AppState, request: &HttpRequest) -> bool {
    let registration = &state.config.registration;
    match bearer(request) {
        Some(token) => {
            let presented = sha256(&token);
            registration.initial_access_tokens.iter().any(|listed| {
                let hex = listed.strip_prefix("sha256:").unwrap_or_default();
                let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
                    .map(|index| u8::from_str_radix(&hex[2 * index..2 * index + 2], 16).ok())
                    .collect();
                bytes.is_some_and(|bytes| same(&bytes, &presented))
            })
        }
        None => registration.open,
    }
}

fn parse_metadata(body: &[u8]) -> Result<Map<String, Value>, Refused> {
    serde_json::from_slice(body).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "the body must be a JSON object of client metadata",
        ))
    })
}

/// A fresh registration access token and its stored hash.
fn new_registration_token() -> (String, String) {
    let token = generate_secret();
    let hash = URL_SAFE_NO_PAD.encode(sha256(&token));
    (token, hash)
}

fn response_body(state: &AppState, client: &StoredClient, secret: Option<&str>, token: &str) -> Value {
    let mut body = metadata_of(client);
    if let Some(secret) = secret {
        body["client_secret"] = secret.into();
        body["client_secret_expires_at"] = 0.into();
    }
    body["registration_access_token"] = token.into();
    body["registration_client_uri"] = state.endpoint(&format!("/register/{}", client.client_id)).into();
    body
}

fn no_store(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status).insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}

/// RFC 7591 §3.1: registers a client; 201 with its metadata, secret and registration access token.
pub async fn register_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    if !may_register(&state, &request) {
        return invalid_token();
    }
    let metadata = match parse_metadata(&body) {
        Ok(metadata) => metadata,
        Err(response) => return *response,
    };
    let method = metadata.get("token_endpoint_auth_method").and_then(Value::as_str).unwrap_or("client_secret_basic");
    let secret = needs_secret(method).then(generate_secret);
    let client = match client_from_metadata(&metadata, generate_client_id(), secret.clone()) {
        Ok(client) => client,
        Err(failure) => return metadata_error(&failure),
    };
    let (token, hash) = new_registration_token();
    match state.directory_store.create_registered_client(client, Some(hash)).await {
        Ok(stored) => {
            publish_directory(&state).await;
            audit_registration(&state, "client.register", &stored.client_id);
            let mut body = response_body(&state, &stored, secret.as_deref(), &token);
            body["client_id_issued_at"] = state.clock.now_secs().into();
            no_store(StatusCode::CREATED, &body)
        }
        Err(failure) => store_error(failure),
    }
}

/// The registered client the registration access token of the request belongs to (RFC 7592 §3: an unknown client
/// and a wrong token are both 401).
async fn authorized_client(state: &AppState, request: &HttpRequest, client_id: &str) -> Result<StoredClient, Refused> {
    let refused = || Box::new(invalid_token());
    let token = bearer(request).ok_or_else(refused)?;
    // The served directory turns away ids that are not registered clients without a Redis read; the store is read
    // for a registered client only (its token rotates on every read and update, maybe on another node just now).
    let registered = state.directory().client(client_id).is_some_and(|client| client.is_dynamically_registered());
    if !registered {
        return Err(refused());
    }
    let (clients, _) = state.directory_store.entries().await.map_err(|failure| Box::new(store_error(failure)))?;
    let client = clients.into_iter().find(|client| client.client_id == client_id).ok_or_else(refused)?;
    let stored = client.registration_access_token_hash.as_deref().and_then(|hash| URL_SAFE_NO_PAD.decode(hash).ok());
    match stored {
        Some(stored) if same(&stored, &sha256(&token)) => Ok(client),
        _ => Err(refused()),
    }
}

/// Rotates the registration access token of `client` (metadata unchanged); the new token.
async fn rotate_token(state: &AppState, client: &StoredClient) -> Result<(StoredClient, String), Refused> {
    let (token, hash) = new_registration_token();
    let config =
        crate::admin_api::clients::to_config(client, client.client_secret_hmac.as_ref().map(|_| "kept".into()));
    let keep = client.client_secret_hmac.is_some();
    let stored = state
        .directory_store
        .update_client(config, keep, Some(hash))
        .await
        .map_err(|failure| Box::new(store_error(failure)))?;
    Ok((stored, token))
}

/// RFC 7592 §2.1: the client's current metadata.
pub async fn read_route(request: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let client = match authorized_client(&state, &request, &path).await {
        Ok(client) => client,
        Err(response) => return *response,
    };
    match rotate_token(&state, &client).await {
        Ok((stored, token)) => no_store(StatusCode::OK, &response_body(&state, &stored, None, &token)),
        Err(response) => *response,
    }
}

/// RFC 7592 §2.2: replaces the client's metadata; `client_id` must match, a `client_secret` sent must be the
/// current one (the secret is kept; one is issued when a secret-based method replaces a secretless one).
pub async fn update_route(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let client = match authorized_client(&state, &request, &path).await {
        Ok(client) => client,
        Err(response) => return *response,
    };
    let metadata = match parse_metadata(&body) {
        Ok(metadata) => metadata,
        Err(response) => return *response,
    };
    if metadata.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "client_id must be the registered client's");
    }
    for read_only in
        ["registration_access_token", "registration_client_uri", "client_secret_expires_at", "client_id_issued_at"]
    {
        if metadata.contains_key(read_only) {
            return error(StatusCode::BAD_REQUEST, "invalid_request", &format!("{read_only} may not be sent"));
        }
    }
    let directory = state.directory();
    if let Some(Value::String(secret)) = metadata.get("client_secret") {
        let matches = directory
            .client(&client.client_id)
            .is_some_and(|current| directory.verify_client_secret(current, &idp_proto::Secret::new(secret.clone())));
        if !matches {
            return error(StatusCode::BAD_REQUEST, "invalid_request", "client_secret is not the client's secret");
        }
    }
    let method = metadata.get("token_endpoint_auth_method").and_then(Value::as_str).unwrap_or("client_secret_basic");
    let keep = needs_secret(method) && client.client_secret_hmac.is_some();
    let issued = (needs_secret(method) && !keep).then(generate_secret);
    let secret = if keep { Some("kept".to_string()) } else { issued.clone() };
    let config = match client_from_metadata(&metadata, client.client_id.clone(), secret) {
        Ok(config) => config,
        Err(failure) => return metadata_error(&failure),
    };
    let (token, hash) = new_registration_token();
    match state.directory_store.update_client(config, keep, Some(hash)).await {
        Ok(stored) => {
            publish_directory(&state).await;
            audit_registration(&state, "client.update", &stored.client_id);
            no_store(StatusCode::OK, &response_body(&state, &stored, issued.as_deref(), &token))
        }
        Err(failure) => store_error(failure),
    }
}

/// RFC 7592 §2.3: deletes the client (its tokens stop working: the client is unknown).
pub async fn delete_route(request: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let client = match authorized_client(&state, &request, &path).await {
        Ok(client) => client,
        Err(response) => return *response,
    };
    match state.directory_store.delete_client(&client.client_id).await {
        Ok(_) => {
            publish_directory(&state).await;
            audit_registration(&state, "client.delete", &client.client_id);
            HttpResponse::NoContent().insert_header((header::CACHE_CONTROL, "no-store")).finish()
        }
        Err(failure) => store_error(failure),
    }
}
