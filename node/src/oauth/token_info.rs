//! Endpoints that read tokens: `/userinfo` (OIDC Core §5.3, RFC 6750), `/introspect` (RFC 7662) and `/revoke`
//! (RFC 7009). An access token is valid only while its grant is: revoking the grant (code replay, refresh reuse,
//! `/revoke`, logout) makes its tokens fail here at once.

use crate::oauth::client_auth::{authenticate_client, strip_scheme};
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::mint::user_claims;
use crate::oauth::observe;
use crate::oauth::params::Params;
use crate::oauth::token::no_store_json;
use crate::state::AppState;
use crate::telemetry::metrics as m;
use actix_web::{web, HttpRequest, HttpResponse};
use idp_actors::shard::model::{CheckGrant, GetRefresh, IsTokenRevoked, RevokeGrant, RevokeToken, ShardError};
use idp_proto::{ErrorCode, Handle};
use serde_json::{json, Map, Value};

/// The claims of an access token that verifies, is unexpired, and whose grant (or `jti`) is not revoked.
pub async fn check_access_token(state: &AppState, token: &str) -> Result<Map<String, Value>, AccessTokenError> {
    let (header, claims) = state.keys.load().verify(token).map_err(|_| AccessTokenError::Invalid)?;
    let typ_ok = header
        .typ
        .as_deref()
        .is_some_and(|typ| typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"));
    let iss_ok = claims.get("iss").and_then(Value::as_str) == Some(state.issuer.as_str());
    let exp_ok = claims.get("exp").and_then(Value::as_u64).is_some_and(|exp| exp > state.clock.now_secs());
    if !(typ_ok && iss_ok && exp_ok) {
        return Err(AccessTokenError::Invalid);
    }
    let handle = |name: &str| claim_handle(&claims, name, state.shard_count());
    let live = match (handle("gid"), handle("jti")) {
        (Some(grant), _) => match state.shards.execute(grant.shard, CheckGrant { grant: grant.id }).await {
            Ok(_) => true,
            Err(ShardError::NotFound) => false,
            Err(_) => return Err(AccessTokenError::Unavailable),
        },
        (None, Some(jti)) => match state.shards.execute(jti.shard, IsTokenRevoked { jti: jti.id }).await {
            Ok(revoked) => !revoked,
            Err(_) => return Err(AccessTokenError::Unavailable),
        },
        (None, None) => false,
    };
    if live {
        Ok(claims)
    } else {
        Err(AccessTokenError::Invalid)
    }
}

/// A claim that names a handle (`gid`, `jti`), when it is one of this cluster.
fn claim_handle(claims: &Map<String, Value>, name: &str, shard_count: u16) -> Option<Handle> {
    claims.get(name).and_then(Value::as_str).and_then(|text| Handle::decode(text, shard_count).ok())
}

#[derive(Debug)]
pub enum AccessTokenError {
    Invalid,
    Unavailable,
}

fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|scope| scope.split(' ').map(str::to_string).collect())
        .unwrap_or_default()
}

fn invalid_token(description: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidToken, description)
        .with_challenge(format!("Bearer realm=\"idp\", error=\"invalid_token\", error_description=\"{description}\""))
}

/// `GET`/`POST /userinfo` with a Bearer token in the header (RFC 6750 §2.1) or a POST form body (§2.2).
pub async fn userinfo_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    match userinfo(&request, &body, &state).await {
        Ok(claims) => no_store_json(&claims),
        Err(error) => error.response(),
    }
}

async fn userinfo(request: &HttpRequest, body: &[u8], state: &AppState) -> OAuthResult<Map<String, Value>> {
    let header_token = request
        .headers()
        .get("authorization")
        .map(|value| value.to_str().ok().and_then(|text| strip_scheme(text, "Bearer")).map(str::trim));
    let body_token = if body.is_empty() {
        None
    } else {
        let params = Params::parse_request_form(request, body, state.config.http.param_limit)?;
        params.get("access_token").map(str::to_string)
    };
    let token = match (header_token, body_token) {
        (Some(_), Some(_)) => return Err(OAuthError::new(ErrorCode::InvalidRequest, "more than one access token")),
        (Some(Some(token)), None) => token.to_string(),
        (None, Some(token)) => token,
        (Some(None), None) => return Err(invalid_token("malformed Authorization header")),
        (None, None) => {
            return Err(OAuthError::new(ErrorCode::InvalidToken, "an access token is required")
                .with_challenge("Bearer realm=\"idp\""));
        }
    };
    let claims = match check_access_token(state, &token).await {
        Ok(claims) => claims,
        Err(AccessTokenError::Invalid) => {
            m::token_validation_error("userinfo", "invalid");
            return Err(invalid_token("the access token is invalid, expired or revoked"));
        }
        Err(AccessTokenError::Unavailable) => {
            m::token_validation_error("userinfo", "unavailable");
            return Err(OAuthError::new(ErrorCode::TemporarilyUnavailable, "retry"));
        }
    };
    let scopes = scopes_of(&claims);
    if !scopes.iter().any(|scope| scope == "openid") {
        m::token_validation_error("userinfo", "insufficient_scope");
        let challenge = "Bearer realm=\"idp\", error=\"insufficient_scope\", scope=\"openid\"";
        return Err(
            OAuthError::new(ErrorCode::InsufficientScope, "the openid scope is required").with_challenge(challenge)
        );
    }
    let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    let directory = state.directory();
    let user = directory.user_by_id(subject).ok_or_else(|| invalid_token("the account is no longer available"))?;
    let mut response = Map::new();
    response.insert("sub".into(), user.id.as_str().into());
    response.extend(user_claims(user, &scopes));
    Ok(response)
}

/// `POST /introspect` (RFC 7662 §2): authenticated clients only.
pub async fn introspect_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    match introspect(&request, &body, &state).await {
        Ok(answer) => no_store_json(&answer),
        Err(error) => error.response(),
    }
}

async fn introspect(request: &HttpRequest, body: &[u8], state: &AppState) -> OAuthResult<Value> {
    let params = Params::parse_request_form(request, body, state.config.http.param_limit)?;
    let client = authenticate_client(request, &params, state, false).await?;
    let token = params.require("token")?;
    let inactive = json!({ "active": false });
    if token.contains('.') {
        return match check_access_token(state, token).await {
            Ok(claims) => {
                let mut answer = Map::new();
                answer.insert("active".into(), true.into());
                answer.insert("token_type".into(), "Bearer".into());
                for name in ["scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti", "auth_time", "sid"] {
                    if let Some(value) = claims.get(name) {
                        answer.insert(name.into(), value.clone());
                    }
                }
                Ok(Value::Object(answer))
            }
            Err(AccessTokenError::Invalid) => {
                m::token_validation_error("introspect", "inactive");
                Ok(inactive)
            }
            Err(AccessTokenError::Unavailable) => {
                m::token_validation_error("introspect", "unavailable");
                Err(OAuthError::new(ErrorCode::TemporarilyUnavailable, "retry"))
            }
        };
    }
    let Ok(handle) = Handle::decode(token, state.shard_count()) else {
        m::token_validation_error("introspect", "inactive");
        return Ok(inactive);
    };
    match state.shards.execute(handle.shard, GetRefresh { refresh: handle.id }).await {
        // A refresh token is described only to the client it was issued to.
        Ok((refresh, Some(grant))) if !refresh.used && !grant.revoked && refresh.client_id == client.client_id => {
            Ok(json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": refresh.client_id,
                "sub": grant.authentication.user_id,
                "scope": grant.scopes.join(" "),
                "exp": refresh.expires_at_ms / 1000,
                "iat": grant.created_at_ms / 1000,
                "iss": state.issuer,
            }))
        }
        Ok(_) | Err(ShardError::NotFound) => {
            m::token_validation_error("introspect", "inactive");
            Ok(inactive)
        }
        Err(error) => Err(error.into()),
    }
}

/// `POST /revoke` (RFC 7009 §2): revokes the grant behind a refresh or access token; 200 for unknown tokens.
pub async fn revoke_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    match revoke(&request, &body, &state).await {
        Ok(()) => HttpResponse::Ok().insert_header(("cache-control", "no-store")).finish(),
        Err(error) => error.response(),
    }
}

async fn revoke(request: &HttpRequest, body: &[u8], state: &AppState) -> OAuthResult<()> {
    let params = Params::parse_request_form(request, body, state.config.http.param_limit)?;
    let client = authenticate_client(request, &params, state, true).await?;
    let token = params.require("token")?;
    let client_id = Some(client.client_id.clone());
    if token.contains('.') {
        // Expired or not, a token of ours names what to revoke; someone else's token is ignored.
        let Ok((_, claims)) = state.keys.load().verify(token) else { return Ok(()) };
        if claims.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
            return Ok(());
        }
        let handle = |name: &str| claim_handle(&claims, name, state.shard_count());
        if let Some(grant) = handle("gid") {
            state.shards.execute(grant.shard, RevokeGrant { grant: grant.id, client_id }).await?;
        } else if let Some(jti) = handle("jti") {
            let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
            state.shards.execute(jti.shard, RevokeToken { jti: jti.id, expires_at_ms: (exp + 1) * 1000 }).await?;
        } else {
            return Ok(());
        }
        observe::token_revoked(state, &client.client_id, "access_token");
        return Ok(());
    }
    let Ok(handle) = Handle::decode(token, state.shard_count()) else { return Ok(()) };
    match state.shards.execute(handle.shard, GetRefresh { refresh: handle.id }).await {
        Ok((refresh, _)) if refresh.client_id == client.client_id => {
            state.shards.execute(handle.shard, RevokeGrant { grant: refresh.grant, client_id }).await?;
            observe::token_revoked(state, &client.client_id, "refresh_token");
            Ok(())
        }
        Ok(_) | Err(ShardError::NotFound) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
