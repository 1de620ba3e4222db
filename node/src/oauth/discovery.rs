//! OpenID Connect Discovery 1.0 §3 metadata and the JWKS, both pre-serialized.

use crate::oauth::SUPPORTED_SCOPES;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use idp_proto::records::ResponseType;
use serde_json::json;

/// The discovery document of an issuer whose key ring holds `algorithms`.
pub fn discovery_document(issuer: &str, algorithms: &[String]) -> serde_json::Value {
    let endpoint = |path: &str| format!("{issuer}{path}");
    json!({
        "issuer": issuer,
        "authorization_endpoint": endpoint("/authorize"),
        "token_endpoint": endpoint("/token"),
        "userinfo_endpoint": endpoint("/userinfo"),
        "jwks_uri": endpoint("/jwks"),
        "introspection_endpoint": endpoint("/introspect"),
        "revocation_endpoint": endpoint("/revoke"),
        "end_session_endpoint": endpoint("/logout"),
        "scopes_supported": SUPPORTED_SCOPES,
        "response_types_supported": ResponseType::ALL,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", "implicit"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": algorithms,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash", "c_hash", "acr",
            "amr", "sid", "name", "given_name", "family_name", "preferred_username", "email", "email_verified"],
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "require_request_uri_registration": false,
        "authorization_response_iss_parameter_supported": true,
        "prompt_values_supported": ["none", "login", "consent"],
        "ui_locales_supported": ["en"],
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": false,
    })
}

pub async fn discovery_route(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(state.discovery_json.clone())
}

pub async fn jwks_route(state: web::Data<AppState>) -> HttpResponse {
    let keys = state.keys.load();
    // Short max-age: a `next` key is published `publish_ahead` before it signs, far longer than this.
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/jwk-set+json"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(keys.jwks_json().clone())
}
