//! `/admin/upstreams`: the upstream providers users may sign in through (federation), read-only. They come from the
//! configuration file's `[[upstreams]]` (every node of a cluster runs the same file); changing them at run time
//! through the API is not built yet (they are not in the directory store). Secrets are never shown.

use super::error::{ApiError, ApiResult};
use super::{json_ok, AdminApi, Caller};
use crate::config::UpstreamConfig;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

/// An upstream as the API shows it: its configuration without the client secret, with whether it has one.
pub fn upstream_view(upstream: &UpstreamConfig) -> Value {
    let mut value = serde_json::to_value(upstream).expect("upstreams serialize");
    if let Some(object) = value.as_object_mut() {
        let has_secret = object.remove("client_secret").is_some_and(|secret| !secret.is_null());
        object.insert("has_client_secret".into(), has_secret.into());
        object.insert("source".into(), "config".into());
    }
    value
}

pub async fn list_route(_: Caller, api: web::Data<AdminApi>) -> ApiResult<HttpResponse> {
    let views: Vec<Value> = api.state.config.upstreams.iter().map(upstream_view).collect();
    json_ok(&json!({ "upstreams": views }))
}

pub async fn get_route(_: Caller, api: web::Data<AdminApi>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let upstream = api.state.config.upstreams.iter().find(|upstream| upstream.id == path.as_str());
    let upstream = upstream.ok_or_else(|| ApiError::not_found(format!("upstream `{path}`")))?;
    json_ok(&upstream_view(upstream))
}
