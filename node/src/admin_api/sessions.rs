//! `/admin/users/{user_id}/sessions`: a user's live browser sessions (listed by their public `sid`, never by the
//! handle, which is the cookie's credential), and ending them: all, or one by `sid`. Ending a session revokes the
//! grants issued in it, so their access tokens fail at `/userinfo` and `/introspect` and their refresh tokens at
//! `/token` at once. See [`crate::user_sessions`] for the index behind it.

use super::error::{ApiError, ApiResult};
use super::users::{stored_user, user_target};
use super::{audit_change, json_ok, AdminApi, Caller};
use actix_web::{web, HttpResponse};
use idp_actors::shard::model::ShardError;
use serde_json::json;

fn shard_error(error: ShardError) -> ApiError {
    ApiError::unavailable(format!("session index: {error}; retry"))
}

pub async fn list_route(_: Caller, api: web::Data<AdminApi>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let user = stored_user(&api, &path).await?;
    let sessions = crate::user_sessions::list_sessions(&api.state, &user.id).await.map_err(shard_error)?;
    let now_ms = api.state.clock.now_ms();
    let views: Vec<_> = sessions
        .iter()
        .map(|(_, session)| {
            let grants = session.grants.iter().filter(|grant| grant.expires_at_ms > now_ms).count();
            json!({
                "sid": session.sid,
                "auth_time": session.authentication.auth_time,
                "amr": session.authentication.amr,
                "created_at_ms": session.created_at_ms,
                "expires_at_ms": session.expires_at_ms,
                "grants": grants,
            })
        })
        .collect();
    json_ok(&json!({ "sessions": views }))
}

pub async fn revoke_all_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let user = stored_user(&api, &path).await?;
    let ended = crate::user_sessions::end_sessions(&api.state, &user.id, None).await.map_err(shard_error)?;
    audit_change(&api.state, &caller.0, "user.sessions.revoke", &user_target(&api.state, &user.id));
    json_ok(&json!({ "revoked_sessions": ended.sessions, "revoked_grants": ended.grants }))
}

pub async fn revoke_one_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user_id, sid) = path.into_inner();
    let user = stored_user(&api, &user_id).await?;
    let ended = crate::user_sessions::end_sessions(&api.state, &user.id, Some(&sid)).await.map_err(shard_error)?;
    if ended.sessions == 0 {
        return Err(ApiError::not_found(format!("session `{sid}` of user `{user_id}`")));
    }
    audit_change(&api.state, &caller.0, "user.session.revoke", &user_target(&api.state, &user.id));
    json_ok(&json!({ "revoked_sessions": ended.sessions, "revoked_grants": ended.grants }))
}
