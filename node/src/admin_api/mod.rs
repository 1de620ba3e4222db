//! The admin API on the admin listener (`admin.listen`): clients, users and their sessions, upstream providers
//! (read-only), signing keys, and the
//! cluster's members and shard map, described by the OpenAPI document it serves at [`OPENAPI_PATH`].
//!
//! Every route but the document needs credentials ([`auth`]): a Bearer access token with the `idp:admin` scope
//! from `client_credentials` at this issuer's token endpoint, or a client certificate (mutual TLS, `admin.tls`).
//! Changes go through the [`DirectoryStore`](crate::directory::store::DirectoryStore): Redis in a cluster (every
//! node sees them within its directory refresh), the in-memory replica in the embedded node; the node that made a
//! change serves it at once. Input is checked in full before anything is written (the config file's rules), so a
//! refused request changes nothing.

pub mod auth;
pub mod clients;
pub mod error;
pub mod sessions;
pub mod system;
pub mod tls;
pub mod upstreams;
pub mod users;

use crate::cluster::node::ClusterNode;
use crate::oauth::token_info::{check_access_token, AccessTokenError};
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, Route};
use auth::{decide, Actor, Authorization, Presented, TokenCheck, ADMIN_SCOPE};
use error::{ApiError, ApiResult};
use futures::future::LocalBoxFuture;
use std::sync::Arc;

/// Where the OpenAPI document is served (without credentials).
pub const OPENAPI_PATH: &str = "/admin/openapi.json";

/// The OpenAPI 3 document, checked in beside this module; a test holds it equal to [`route_table`].
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

/// What the admin API's handlers share: the node's state, and its cluster parts on a cluster node.
#[derive(Clone)]
pub struct AdminApi {
    pub state: web::Data<AppState>,
    pub cluster: Option<Arc<ClusterNode>>,
}

impl AdminApi {
    pub fn new(state: web::Data<AppState>, cluster: Option<Arc<ClusterNode>>) -> Self {
        Self { state, cluster }
    }

    /// Registers every route of [`route_table`] (call in the admin listener's `App`).
    pub fn configure(&self, config: &mut web::ServiceConfig) {
        config.app_data(web::Data::new(self.clone())).app_data(web::PayloadConfig::new(1 << 20));
        let mut table = route_table();
        table.sort_by(|left, right| left.1.cmp(right.1));
        // One resource per path with its methods; other methods get 405.
        while let Some(path) = table.first().map(|(_, path, _)| *path) {
            let mut resource = web::resource(path).default_service(web::to(method_not_allowed));
            while table.first().is_some_and(|(_, first, _)| *first == path) {
                let (method, _, route) = table.remove(0);
                resource = resource.route(route.method(method));
            }
            config.service(resource);
        }
    }

    /// After a change of the stored directory by `actor`: publishes it on this node at once (other nodes see it at
    /// their refresh), then writes the audit record of `action` on `target`.
    pub async fn directory_changed(&self, actor: &Actor, action: &str, target: &str) {
        publish_directory(&self.state).await;
        audit_change(&self.state, actor, action, target);
    }
}

/// Serves the stored directory on this node at once after a change (other nodes see it at their refresh).
pub async fn publish_directory(state: &AppState) {
    match state.directory_store.refresh().await {
        Ok(Some(directory)) => state.directory.store(Arc::new(directory)),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "reading the directory back after a change failed"),
    }
}

/// Every route of the admin API: method, path (actix and OpenAPI share the `{name}` syntax) and handler.
pub fn route_table() -> Vec<(Method, &'static str, Route)> {
    vec![
        (Method::GET, OPENAPI_PATH, web::route().to(openapi_route)),
        (Method::GET, "/admin/clients", web::route().to(clients::list_route)),
        (Method::POST, "/admin/clients", web::route().to(clients::create_route)),
        (Method::GET, "/admin/clients/{client_id}", web::route().to(clients::get_route)),
        (Method::PUT, "/admin/clients/{client_id}", web::route().to(clients::update_route)),
        (Method::DELETE, "/admin/clients/{client_id}", web::route().to(clients::delete_route)),
        (Method::POST, "/admin/clients/{client_id}/secret", web::route().to(clients::rotate_secret_route)),
        (Method::GET, "/admin/users", web::route().to(users::list_route)),
        (Method::POST, "/admin/users", web::route().to(users::create_route)),
        (Method::GET, "/admin/users/{user_id}", web::route().to(users::get_route)),
        (Method::PUT, "/admin/users/{user_id}", web::route().to(users::update_route)),
        (Method::DELETE, "/admin/users/{user_id}", web::route().to(users::delete_route)),
        (Method::POST, "/admin/users/{user_id}/disable", web::route().to(users::disable_route)),
        (Method::POST, "/admin/users/{user_id}/enable", web::route().to(users::enable_route)),
        (Method::POST, "/admin/users/{user_id}/password", web::route().to(users::reset_password_route)),
        (Method::GET, "/admin/users/{user_id}/sessions", web::route().to(sessions::list_route)),
        (Method::DELETE, "/admin/users/{user_id}/sessions", web::route().to(sessions::revoke_all_route)),
        (Method::DELETE, "/admin/users/{user_id}/sessions/{sid}", web::route().to(sessions::revoke_one_route)),
        (Method::GET, "/admin/upstreams", web::route().to(upstreams::list_route)),
        (Method::POST, "/admin/upstreams", web::route().to(upstreams::create_route)),
        (Method::GET, "/admin/upstreams/{upstream_id}", web::route().to(upstreams::get_route)),
        (Method::PUT, "/admin/upstreams/{upstream_id}", web::route().to(upstreams::update_route)),
        (Method::DELETE, "/admin/upstreams/{upstream_id}", web::route().to(upstreams::delete_route)),
        (Method::GET, "/admin/keys", web::route().to(system::keys_route)),
        (Method::POST, "/admin/keys/rotate", web::route().to(system::rotate_keys_route)),
        (Method::GET, "/admin/cluster/members", web::route().to(system::members_route)),
        (Method::GET, "/admin/cluster/shards", web::route().to(system::shards_route)),
    ]
}

async fn openapi_route() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI_DOCUMENT)
}

async fn method_not_allowed() -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::new(actix_web::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed")
        .error_response()
}

/// An authenticated caller of the admin API: a handler taking it runs only for a caller [`auth::decide`] lets in.
pub struct Caller(pub Actor);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let api = request.app_data::<web::Data<AdminApi>>().cloned();
        let certificate = request.conn_data::<tls::PeerCertificate>().map(|peer| peer.fingerprint.clone());
        let header = request.headers().get(header::AUTHORIZATION).map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| crate::oauth::client_auth::strip_scheme(text, "Bearer"))
                .map(|token| token.trim().to_string())
        });
        Box::pin(async move {
            let api = api.ok_or_else(|| ApiError::unavailable("the admin API is not configured"))?;
            let authorization = match header {
                None => Authorization::None,
                Some(None) => Authorization::Malformed,
                Some(Some(token)) => Authorization::Bearer(check_admin_token(&api.state, &token).await),
            };
            decide(&Presented { certificate, authorization }).map(Caller)
        })
    }
}

/// An access token of this issuer (checked as introspection does) issued to a client for itself
/// (`client_credentials`: `sub` is the client id), whose client still exists and still lists `idp:admin`: deleting
/// the client or taking the scope from it ends its access before its tokens expire.
async fn check_admin_token(state: &AppState, token: &str) -> TokenCheck {
    let claims = match check_access_token(state, token).await {
        Ok(claims) => claims,
        Err(AccessTokenError::Invalid) => return TokenCheck::Invalid,
        Err(AccessTokenError::Unavailable) => return TokenCheck::Unavailable,
    };
    if !audience_includes(claims.get("aud"), &state.issuer) {
        // RFC 8707 / RFC 9068 §4: a token minted for another resource server is not a token for this API.
        return TokenCheck::Invalid;
    }
    let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
    let (client_id, subject) = (text("client_id"), text("sub"));
    let scopes: Vec<String> = text("scope").split(' ').filter(|scope| !scope.is_empty()).map(str::to_string).collect();
    let client_may = state
        .directory()
        .client(&client_id)
        .is_some_and(|client| client.scopes.iter().any(|scope| scope == ADMIN_SCOPE));
    let scopes = if client_id == subject && client_may {
        scopes
    } else {
        // A token for a user, or of a client that lost the scope: valid, but never an admin's.
        scopes.into_iter().filter(|scope| scope != ADMIN_SCOPE).collect()
    };
    TokenCheck::Valid { client_id, scopes }
}

/// Whether the `aud` claim (a string or an array of strings, RFC 7519 §4.1.3) names `issuer`: the default
/// audience of this provider's own tokens, and the only one the admin API accepts.
fn audience_includes(aud: Option<&serde_json::Value>, issuer: &str) -> bool {
    match aud {
        Some(serde_json::Value::String(audience)) => audience == issuer,
        Some(serde_json::Value::Array(audiences)) => audiences.iter().any(|audience| audience.as_str() == Some(issuer)),
        _ => false,
    }
}

/// The audit trail of admin changes (who, what, which entry): an `admin_change` audit event (`docs/audit.md`).
pub fn audit_change(state: &AppState, actor: &Actor, action: &str, target: &str) {
    let event = crate::audit::AuditEvent::AdminChange {
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
    };
    state.audit.emit(event);
}

/// A `200` JSON response that no cache keeps.
pub fn json_ok(body: &impl serde::Serialize) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(body))
}

/// 201 with the new resource's `Location` and its view (never cached: it may show a secret once).
pub fn json_created(location: String, body: &impl serde::Serialize) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}

#[cfg(test)]
mod tests {
    use super::audience_includes;
    use serde_json::json;

    #[test]
    fn only_tokens_naming_the_issuer_in_aud_reach_the_admin_api() {
        let issuer = "https://idp.example.com";
        assert!(audience_includes(Some(&json!(issuer)), issuer));
        assert!(audience_includes(Some(&json!(["https://api.example.com", issuer])), issuer));
        for other in [json!("https://api.example.com"), json!([]), json!(["ops"]), json!(7), json!(null)] {
            assert!(!audience_includes(Some(&other), issuer), "{other}");
        }
        assert!(!audience_includes(None, issuer));
        assert!(!audience_includes(Some(&json!("https://idp.example.com/")), issuer), "compared exactly");
    }
}
