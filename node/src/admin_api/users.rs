//! `/admin/users`: create, read, list, update, delete, disable/enable, reset password. Passwords are hashed with
//! argon2id off the event loop; the hash never leaves the node (views omit it). A disabled user stays stored (its
//! username and id stay taken) but is found by no lookup: it cannot log in, and its sessions, refresh tokens and
//! access tokens stop working at the next request on every node that refreshed its directory.

use super::error::{parse_body, ApiError, ApiResult};
use super::{json_created, json_ok, AdminApi, Caller};
use crate::config::UserConfig;
use crate::directory::StoredUser;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

/// A user as the API shows it: the stored entry without the password hash.
pub fn user_view(user: &StoredUser) -> Value {
    let mut value = serde_json::to_value(user).expect("users serialize");
    let object = value.as_object_mut().expect("a user is an object");
    object.remove("password_hash");
    object.insert("disabled".into(), user.disabled.into());
    value
}

/// The body of a create or an update. `password` (hashed here) or `password_hash` (an argon2id PHC string, as
/// `idp hash-password` prints) on create; neither on update (use the password route).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub username: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub family_name: Option<String>,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordInput {
    password: String,
}

impl UserInput {
    fn into_config(self, password_hash: String) -> UserConfig {
        UserConfig {
            username: self.username,
            id: self.id,
            password_hash,
            email: self.email,
            email_verified: self.email_verified,
            name: self.name,
            given_name: self.given_name,
            family_name: self.family_name,
            disabled: self.disabled,
        }
    }
}

/// Minimum length of a password set through the API (NIST SP 800-63B §5.1.1.2: at least 8 characters).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (argon2 hashes any length; this bounds the work a request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

pub fn check_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid("password", format!("must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid("password", format!("must have at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

async fn hash(password: String) -> ApiResult<String> {
    check_password(&password)?;
    let hashed = web::block(move || crate::password::hash_password(&password)).await;
    match hashed {
        Ok(Ok(hash)) => Ok(hash),
        _ => Err(ApiError::unavailable("hashing the password failed")),
    }
}

/// What the audit trail names a user by: the audit's keyed hash of its id (as every audit event), never the id.
pub fn user_target(state: &AppState, user_id: &str) -> String {
    format!("user:{}", state.audit.subject(user_id))
}

pub async fn stored_user(api: &AdminApi, user_id: &str) -> ApiResult<StoredUser> {
    let (_, users) = api.state.directory_store.entries().await?;
    users.into_iter().find(|user| user.id == user_id).ok_or_else(|| ApiError::not_found(format!("user `{user_id}`")))
}

pub async fn list_route(_: Caller, api: web::Data<AdminApi>) -> ApiResult<HttpResponse> {
    let (_, users) = api.state.directory_store.entries().await?;
    json_ok(&serde_json::json!({ "users": users.iter().map(user_view).collect::<Vec<_>>() }))
}

pub async fn get_route(_: Caller, api: web::Data<AdminApi>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    json_ok(&user_view(&stored_user(&api, &path).await?))
}

pub async fn create_route(caller: Caller, api: web::Data<AdminApi>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let mut input: UserInput = parse_body(&body)?;
    let password_hash = match (input.password.take(), input.password_hash.take()) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("password", "give password or password_hash, not both")),
        (Some(password), None) => hash(password).await?,
        (None, Some(hash)) => hash,
        (None, None) => return Err(ApiError::invalid("password", "a password or a password_hash is required")),
    };
    let stored = api.state.directory_store.create_user(input.into_config(password_hash)).await?;
    api.directory_changed(&caller.0, "user.create", &user_target(&api.state, &stored.id)).await;
    json_created(format!("/admin/users/{}", stored.id), &user_view(&stored))
}

/// Replaces the profile (username, claims, disabled); the password is kept. The id is the path's.
pub async fn update_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let input: UserInput = parse_body(&body)?;
    if input.password.is_some() || input.password_hash.is_some() {
        return Err(ApiError::invalid("password", "set a password with POST /admin/users/{user_id}/password"));
    }
    if input.id.as_deref().is_some_and(|id| id != path.as_str()) {
        return Err(ApiError::invalid("id", "differs from the user id of the path (a subject id never changes)"));
    }
    let current = stored_user(&api, &path).await?;
    let user = UserInput { id: Some(current.id.clone()), ..input }.into_config(current.password_hash);
    let stored = api.state.directory_store.update_user(user).await?;
    api.directory_changed(&caller.0, "user.update", &user_target(&api.state, &stored.id)).await;
    json_ok(&user_view(&stored))
}

pub async fn delete_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    if !api.state.directory_store.delete_user(&path).await? {
        return Err(ApiError::not_found(format!("user `{path}`")));
    }
    api.directory_changed(&caller.0, "user.delete", &user_target(&api.state, &path)).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn set_disabled(
    caller: Caller,
    api: web::Data<AdminApi>,
    user_id: &str,
    disabled: bool,
) -> ApiResult<HttpResponse> {
    let mut user = stored_user(&api, user_id).await?;
    user.disabled = disabled;
    let stored = api.state.directory_store.update_user(user.to_config()).await?;
    let action = if disabled { "user.disable" } else { "user.enable" };
    api.directory_changed(&caller.0, action, &user_target(&api.state, user_id)).await;
    json_ok(&user_view(&stored))
}

pub async fn disable_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_disabled(caller, api, &path, true).await
}

pub async fn enable_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_disabled(caller, api, &path, false).await
}

pub async fn reset_password_route(
    caller: Caller,
    api: web::Data<AdminApi>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let input: PasswordInput = parse_body(&body)?;
    let mut user = stored_user(&api, &path).await?;
    user.password_hash = hash(input.password).await?;
    let stored = api.state.directory_store.update_user(user.to_config()).await?;
    api.directory_changed(&caller.0, "user.reset_password", &user_target(&api.state, &path)).await;
    json_ok(&user_view(&stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules() {
        assert_eq!(check_password("short").unwrap_err().field.as_deref(), Some("password"));
        assert!(check_password("eight ch").is_ok());
        assert!(check_password("ééééééééé").is_ok(), "characters, not bytes");
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn the_view_never_shows_the_hash() {
        let user = StoredUser {
            id: "u1".into(),
            username: "bob".into(),
            password_hash: "$argon2id$v=19$...".into(),
            email: None,
            email_verified: false,
            name: None,
            given_name: None,
            family_name: None,
            disabled: false,
            links: Vec::new(),
        };
        let view = user_view(&user);
        assert!(view.get("password_hash").is_none());
        assert_eq!(view["disabled"], false);
        assert_eq!(view["username"], "bob");
    }
}
