//! The token endpoint (RFC 6749 §3.2): `authorization_code` (§4.1.3), `refresh_token` (§6, rotated) and
//! `client_credentials` (§4.4, RFC 9068 JWT access tokens). Every response carries `Cache-Control: no-store`.

use crate::directory::{requested_audience, Client};
use crate::oauth::client_auth::authenticate_client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::mint::{self, AccessTokenSpec, IdTokenSpec};
use crate::oauth::observe::{self, Issued};
use crate::oauth::params::{parse_scope, Params};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use idp_actors::shard::model::{GrantTokens, RedeemCode, RotateRefresh};
use idp_proto::{ErrorCode, Handle, RecordId, ShardId};
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// `POST /token`.
pub async fn token_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let started = std::time::Instant::now();
    let mut grant = "unsupported";
    let result = token(&request, &body, &state, &mut grant).await;
    observe::token_request(grant, result.as_ref().err(), started.elapsed());
    match result {
        Ok(response) => no_store_json(&response),
        Err(error) => error.response(),
    }
}

pub fn no_store_json<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

/// `grant` is set to the grant type's label as soon as it is known (metrics).
async fn token(
    request: &HttpRequest,
    body: &[u8],
    state: &AppState,
    grant: &mut &'static str,
) -> OAuthResult<TokenResponse> {
    let params = Params::parse_request_form(request, body, state.config.http.param_limit)?;
    let grant_type = params.require("grant_type")?;
    *grant = observe::grant_label(Some(grant_type));
    if !matches!(grant_type, "authorization_code" | "refresh_token" | "client_credentials") {
        return Err(OAuthError::new(ErrorCode::UnsupportedGrantType, "unsupported grant_type"));
    }
    let client = authenticate_client(request, &params, state, true).await?;
    match grant_type {
        "authorization_code" => authorization_code(state, &client, &params).await,
        "refresh_token" => refresh_token(state, &client, &params).await,
        _ => client_credentials(state, &client, &params),
    }
}

fn unauthorized(grant_type: &str) -> OAuthError {
    OAuthError::new(ErrorCode::UnauthorizedClient, format!("the client may not use {grant_type}"))
}

fn decode_handle(state: &AppState, text: &str, what: &str) -> OAuthResult<Handle> {
    Handle::decode(text, state.shard_count())
        .map_err(|_| OAuthError::new(ErrorCode::InvalidGrant, format!("{what} is invalid or expired")))
}

async fn authorization_code(state: &AppState, client: &Arc<Client>, params: &Params) -> OAuthResult<TokenResponse> {
    if !client.grant_types.authorization_code {
        return Err(unauthorized("authorization_code"));
    }
    let code = decode_handle(state, params.require("code")?, "authorization code")?;
    let op = RedeemCode {
        code: code.id,
        client_id: client.client_id.clone(),
        redirect_uri: params.get("redirect_uri").map(str::to_string),
        code_verifier: params.get("code_verifier").map(str::to_string),
        client_may_refresh: client.grant_types.refresh_token,
        new_refresh: RecordId::random(),
    };
    let tokens = state.shards.execute(code.shard, op).await.inspect_err(|error| {
        observe::grant_refused(state, "authorization_code", &client.client_id, error);
    })?;
    state.federation.ensure_user(&tokens.grant.authentication.user_id).await;
    respond_with_grant(state, client, code.shard, tokens, true)
}

async fn refresh_token(state: &AppState, client: &Arc<Client>, params: &Params) -> OAuthResult<TokenResponse> {
    if !client.grant_types.refresh_token {
        return Err(unauthorized("refresh_token"));
    }
    let refresh = decode_handle(state, params.require("refresh_token")?, "refresh token")?;
    let scopes = params.get("scope").map(parse_scope).transpose()?;
    let op = RotateRefresh {
        refresh: refresh.id,
        client_id: client.client_id.clone(),
        scopes,
        new_refresh: RecordId::random(),
    };
    let tokens = state.shards.execute(refresh.shard, op).await.inspect_err(|error| {
        observe::grant_refused(state, "refresh_token", &client.client_id, error);
    })?;
    state.federation.ensure_user(&tokens.grant.authentication.user_id).await;
    respond_with_grant(state, client, refresh.shard, tokens, false)
}

/// Mints the access token, the ID token (with the `openid` scope) and hands out the refresh token of a grant.
fn respond_with_grant(
    state: &AppState,
    client: &Client,
    shard: ShardId,
    tokens: GrantTokens,
    with_nonce: bool,
) -> OAuthResult<TokenResponse> {
    let grant = &tokens.grant;
    let directory = state.directory();
    let user = directory
        .user_by_id(&grant.authentication.user_id)
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidGrant, "the account is no longer available"))?;
    let audience = grant.resource.as_deref().unwrap_or(&client.default_audience);
    let spec = AccessTokenSpec {
        client,
        subject: &user.id,
        scopes: &tokens.scopes,
        audience,
        authentication: Some(&grant.authentication),
        sid: grant.sid.as_deref(),
        grant: Some(Handle { shard, id: tokens.grant_id }),
        not_after_ms: Some(grant.expires_at_ms),
    };
    let (access_token, expires_in) = mint::access_token(state, &spec).map_err(signing_failed)?;
    let id_token = if tokens.scopes.iter().any(|scope| scope == "openid") {
        let spec = IdTokenSpec {
            client,
            user,
            authentication: &grant.authentication,
            scopes: &tokens.scopes,
            // OIDC Core §12.2: a refreshed ID token carries no nonce.
            nonce: if with_nonce { grant.nonce.as_deref() } else { None },
            sid: grant.sid.as_deref(),
            code: None,
            access_token: Some(&access_token),
        };
        Some(mint::id_token(state, &spec).map_err(signing_failed)?)
    } else {
        None
    };
    observe::tokens_issued(
        state,
        &Issued {
            client_id: &client.client_id,
            grant_type: if with_nonce { "authorization_code" } else { "refresh_token" },
            user_id: Some(&user.id),
            scopes: &tokens.scopes,
            access_token: true,
            id_token: id_token.is_some(),
            refresh_token: tokens.refresh.is_some(),
        },
    );
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
        scope: tokens.scopes.join(" "),
        id_token,
        refresh_token: tokens.refresh.map(|id| Handle { shard, id }.encode()),
    })
}

fn signing_failed(error: mint::MintError) -> OAuthError {
    tracing::error!(%error, "token signing failed");
    OAuthError::new(ErrorCode::ServerError, "token signing failed")
}

/// RFC 6749 §4.4 with RFC 8707 `resource` (or `audience`) for the token's audience.
fn client_credentials(state: &AppState, client: &Arc<Client>, params: &Params) -> OAuthResult<TokenResponse> {
    if !client.grant_types.client_credentials || client.is_public() {
        return Err(unauthorized("client_credentials"));
    }
    // User-facing scopes make no sense without a user.
    let machine_scope = |scope: &String| !matches!(scope.as_str(), "openid" | "offline_access" | "profile" | "email");
    let scopes = match params.get("scope") {
        Some(text) => {
            let asked = parse_scope(text)?;
            if let Some(refused) = asked.iter().find(|scope| !machine_scope(scope) || !client.scopes.contains(scope)) {
                return Err(OAuthError::new(ErrorCode::InvalidScope, format!("scope {refused} is not allowed")));
            }
            asked
        }
        None => client.scopes.iter().filter(|scope| machine_scope(scope)).cloned().collect(),
    };
    // RFC 8707 §2: only an audience registered for the client (or its default) is granted.
    let requested = requested_audience(params.get("resource"), params.get("audience"))?;
    let audience = client.resolve_audience(requested)?;
    let spec = AccessTokenSpec {
        client,
        subject: &client.client_id,
        scopes: &scopes,
        audience: &audience,
        authentication: None,
        sid: None,
        grant: None,
        not_after_ms: None,
    };
    let (access_token, expires_in) = mint::access_token(state, &spec).map_err(signing_failed)?;
    observe::tokens_issued(
        state,
        &Issued {
            client_id: &client.client_id,
            grant_type: "client_credentials",
            user_id: None,
            scopes: &scopes,
            access_token: true,
            id_token: false,
            refresh_token: false,
        },
    );
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
        scope: scopes.join(" "),
        id_token: None,
        refresh_token: None,
    })
}
