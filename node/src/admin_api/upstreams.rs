//! `/admin/upstreams`: the upstream providers users may sign in through (federation): create, read, list, update,
//! delete. They are directory entries like clients (seeded from the config file's `[[upstreams]]`, the file winning
//! for the ids it declares at every start), and every node serves a change within a directory refresh.
//!
//! `client_secret` is write-only: it is stored sealed under the KEK (see `directory::upstreams`), never returned
//! (`has_client_secret` says whether there is one), and an update that omits it keeps the stored one.

use super::error::{parse_body, ApiError, ApiResult};
use super::{json_created, json_ok, AdminApi, Caller};
use crate::config::UpstreamConfig;
use crate::directory::upstreams::StoredUpstream;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

/// Fields the views add; a body may carry them back (a GET edited and PUT), they are ignored.
const READ_ONLY: &[&str] = &["has_client_secret", "source"];

/// An upstream as the API shows it: its configuration without the client secret, with whether it has one and
/// whether the config file declares it (`source`: `config`, else `api`).
pub fn upstream_view(upstream: &StoredUpstream, declared: bool) -> Value {
    let mut value = serde_json::to_value(&upstream.config).expect("upstreams serialize");
    if let Some(object) = value.as_object_mut() {
        object.remove("client_secret");
        object.insert("has_client_secret".into(), upstream.has_secret().into());
        object.insert("source".into(), if declared { "config" } else { "api" }.into());
    }
    value
}

/// Turns a request body into an upstream: the id comes from the path on an update (a different one in the body is
/// refused); without `client_secret`, `kept_secret` (the stored one) is used.
pub fn upstream_from_body(
    body: &[u8],
    path_id: Option<&str>,
    kept_secret: Option<String>,
) -> ApiResult<UpstreamConfig> {
    let mut object: Map<String, Value> = parse_body(body)?;
    for read_only in READ_ONLY {
        object.remove(*read_only);
    }
    match (path_id, object.get("id")) {
        (Some(path_id), Some(Value::String(body_id))) if body_id != path_id => {
            return Err(ApiError::invalid("id", "differs from the upstream id of the path"));
        }
        (Some(path_id), _) => {
            object.insert("id".into(), path_id.into());
        }
        (None, None) => return Err(ApiError::invalid("id", "is required")),
        (None, Some(_)) => {}
    }
    if matches!(object.get("client_secret"), None | Some(Value::Null)) {
        let method = object.get("token_endpoint_auth_method").and_then(Value::as_str);
        let secret_based = method != Some("private_key_jwt");
        match kept_secret {
            Some(secret) if secret_based => {
                object.insert("client_secret".into(), secret.into());
            }
            _ => {
                object.remove("client_secret");
            }
        }
    }
    parse_body(&serde_json::to_vec(&object).expect("JSON serializes"))
}

fn declared(api: &AdminApi, id: &str) -> bool {
    api.state.config.upstreams.iter().any(|upstream| upstream.id == id)
}

/// Refuses an upstream this node could not load (a `private_key_jwt` key file missing or unreadable here).
fn check_loadable(api: &AdminApi, upstream: &UpstreamConfig) -> ApiResult<()> {
    if upstream.token_endpoint_auth_method != "private_key_jwt" || upstream.private_key_file.is_none() {
        return Ok(());
    }
    api.state.federation.check(upstream).map_err(|reason| ApiError::invalid("private_key_file", &reason))
}

pub async fn list_route(_: Caller, api: web::Data<AdminApi>) -> ApiResult<HttpResponse> {
    let upstreams = api.state.directory_store.upstreams().await?;
    let views: Vec<Value> =
        upstreams.iter().map(|upstream| upstream_view(upstream, declared(&api, upstream.id()))).collect();
    json_ok(&json!({ "upstreams": views }))
}

async fn stored_upstream(api: &AdminApi, id: &str) -> ApiResult<StoredUpstream> {
    let upstreams = api.state.directory_store.upstreams().await?;
    upstreams
        .into_iter()
        .find(|upstream| upstream.id() == id)
        .ok_or_else(|| ApiError::not_found(format!("upstream `{id}`")))
}

pub async fn get_route(_: Caller, api: web::Data<AdminApi>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let upstream = stored_upstream(&api, &path).await?;
    json_ok(&upstream_view(&upstream, declared(&api, &path)))
}

pub async fn create_route(caller: Caller, api: web::Data<AdminApi>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let upstream = upstream_from_body(&body, None, None)?;
    check_loadable(&api, &upstream)?;
    let stored = api.state.directory_store.create_upstream(upstream).await?;
    api.directory_changed(&caller.0, "upstream.create", stored.id()).await;
    let view = upstream_view(&stored, declared(&api, stored.id()));
    json_created(format!("/admin/upstreams/{}", stored.id()), &view)
}

/// Replaces the upstream's configuration; its secret is kept when the body has none and the method uses one.
pub async fn update_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let current = api.state.directory_store.upstream_config(&path).await?;
    let upstream = upstream_from_body(&body, Some(&path), current.client_secret)?;
    check_loadable(&api, &upstream)?;
    let stored = api.state.directory_store.update_upstream(upstream).await?;
    api.directory_changed(&caller.0, "upstream.update", stored.id()).await;
    json_ok(&upstream_view(&stored, declared(&api, stored.id())))
}

/// Removes the upstream: its button and callback stop working on every node within a refresh. The users' links
/// to it are kept (created again with the same id, it finds its users again).
pub async fn delete_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    if !api.state.directory_store.delete_upstream(&path).await? {
        return Err(ApiError::not_found(format!("upstream `{path}`")));
    }
    api.directory_changed(&caller.0, "upstream.delete", &path).await;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::upstreams::UpstreamSealer;

    const BODY: &[u8] = br#"{"id": "acme", "kind": "oidc", "issuer": "https://login.acme.example",
        "client_id": "broker", "client_secret": "s3cret", "has_client_secret": false, "source": "api"}"#;

    #[test]
    fn the_view_never_shows_the_secret() {
        let upstream = upstream_from_body(BODY, None, None).unwrap();
        assert_eq!(upstream.client_secret.as_deref(), Some("s3cret"));
        let stored = UpstreamSealer::new([3; 32]).store(&upstream);
        let view = upstream_view(&stored, false);
        assert!(!view.to_string().contains("s3cret"), "{view}");
        assert!(view.get("client_secret").is_none() && view.get("client_secret_sealed").is_none());
        assert_eq!((view["has_client_secret"].clone(), view["source"].clone()), (json!(true), json!("api")));
        assert_eq!(upstream_view(&stored, true)["source"], "config");
    }

    #[test]
    fn an_update_keeps_the_secret_unless_given_one_and_takes_the_id_of_the_path() {
        let body = br#"{"kind": "oidc", "issuer": "https://login.acme.example", "client_id": "broker"}"#;
        let kept = upstream_from_body(body, Some("acme"), Some("old".into())).unwrap();
        assert_eq!((kept.id.as_str(), kept.client_secret.as_deref()), ("acme", Some("old")));
        let replaced = upstream_from_body(BODY, Some("acme"), Some("old".into())).unwrap();
        assert_eq!(replaced.client_secret.as_deref(), Some("s3cret"));
        let body = br#"{"kind": "oidc", "issuer": "https://i.example", "client_id": "b",
            "token_endpoint_auth_method": "private_key_jwt", "private_key_file": "/k.pem"}"#;
        let jwt = upstream_from_body(body, Some("acme"), Some("old".into())).unwrap();
        assert_eq!(jwt.client_secret, None, "a private_key_jwt upstream drops the old secret");
        let error = upstream_from_body(BODY, Some("other"), None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("id"));
        let error = upstream_from_body(br#"{"kind": "oidc"}"#, None, None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("id"));
        let error = upstream_from_body(br#"{"id": "a", "kind": "oidc", "client_id": "b", "bogus": 1}"#, None, None)
            .unwrap_err();
        assert!(error.field.is_some(), "{error:?}");
    }
}
