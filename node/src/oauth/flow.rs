//! The browser side of an authorization: decide between answering at once (SSO), the login form and the consent
//! form, and finish with the authorization response. Used by `/authorize`, the login and consent posts, and
//! `/authorize/resume`.

use crate::directory::{Client, User};
use crate::oauth::browser::session_handle;
use crate::oauth::mint::{self, AccessTokenSpec, IdTokenSpec, MintError};
use crate::oauth::respond::{error_page, unavailable_page, AuthorizationReply, Target};
use crate::oauth::{consent_record_id, record_shard};
use crate::pages::{html_response, ConsentView, LoginView};
use crate::state::AppState;
use actix_web::cookie::Cookie;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use idp_actors::shard::model::{
    CreatePending, GetConsent, GetSession, GrantIssue, IssueForSession, Issued, ShardError,
};
use idp_proto::records::{AuthorizationRequest, PendingAuthorization, PendingStage, Session};
use idp_proto::{ErrorCode, Handle, RecordId};
use std::sync::Arc;

/// What a request says about its browser: the CSRF binding and the SSO session, if any.
pub struct Browser {
    pub id: String,
    /// The binding cookie to set, when the browser had none.
    pub new_cookie: Option<Cookie<'static>>,
    pub session: Option<Handle>,
}

impl Browser {
    pub fn from_request(request: &HttpRequest, state: &AppState) -> Self {
        let (id, new_cookie) = state.browser.browser_id(request);
        Self { id, new_cookie, session: session_handle(request, state.shard_count()) }
    }

    /// Adds the binding cookie to a response when it is new.
    pub fn attach(&self, mut response: HttpResponse) -> HttpResponse {
        if let Some(cookie) = &self.new_cookie {
            let _ = response.add_cookie(cookie);
        }
        response
    }
}

/// Answers a validated authorization request.
pub async fn start(
    state: &AppState,
    client: Arc<Client>,
    request: AuthorizationRequest,
    browser: Browser,
) -> HttpResponse {
    let target = target_of(&request);
    if let Some(handle) = browser.session {
        match state.shards.execute(handle.shard, GetSession { id: handle.id }).await {
            Ok(session) => return with_session(state, &client, request, browser, handle, session).await,
            Err(ShardError::NotFound) => {}
            Err(_) => return unavailable_page(state),
        }
    }
    // OIDC Core §3.1.2.6: no interaction allowed and nobody logged in.
    if request.prompt.none {
        return AuthorizationReply::error(&target, ErrorCode::LoginRequired, "no active session").render(state);
    }
    let shard = Handle::random(state.shard_count()).shard;
    new_pending(state, &client, request, PendingStage::AwaitingLogin, shard, &browser).await
}

/// A browser with a live session: answer at once unless login or consent must be asked.
async fn with_session(
    state: &AppState,
    client: &Client,
    request: AuthorizationRequest,
    browser: Browser,
    handle: Handle,
    session: Session,
) -> HttpResponse {
    let target = target_of(&request);
    let now = state.clock.now_secs();
    // OIDC Core §3.1.2.1: older than `max_age` seconds logs in again, and `max_age=0` is `prompt=login`.
    let too_old = request
        .max_age
        .is_some_and(|max_age| max_age == 0 || now.saturating_sub(session.authentication.auth_time) > max_age);
    state.federation.ensure_user(&session.authentication.user_id).await;
    let user = state.directory().user_by_id(&session.authentication.user_id).cloned();
    let Some(user) = user.filter(|_| !request.prompt.login && !too_old) else {
        if request.prompt.none {
            return AuthorizationReply::error(&target, ErrorCode::LoginRequired, "re-authentication required")
                .render(state);
        }
        return new_pending(state, client, request, PendingStage::AwaitingLogin, handle.shard, &browser).await;
    };
    match needs_consent(state, client, &user, &request).await {
        Err(_) => return unavailable_page(state),
        Ok(true) if request.prompt.none => {
            return AuthorizationReply::error(&target, ErrorCode::ConsentRequired, "consent required").render(state);
        }
        Ok(true) => {
            let stage = PendingStage::Authenticated { session: handle.id };
            return new_pending(state, client, request, stage, handle.shard, &browser).await;
        }
        Ok(false) => {}
    }
    let authenticated_since = request.max_age.map(|max_age| now.saturating_sub(max_age));
    let (issue, grant, code) = grant_issue(state, client, &request, handle.shard);
    let op = IssueForSession { session: handle.id, request, authenticated_since, issue };
    match state.shards.execute(handle.shard, op).await {
        Ok(issued) => finish(state, client, &user, issued, grant, code),
        Err(ShardError::LoginRequired | ShardError::NotFound) => {
            AuthorizationReply::error(&target, ErrorCode::LoginRequired, "session ended").render(state)
        }
        Err(_) => unavailable_page(state),
    }
}

/// Whether the user must be asked (OIDC Core §3.1.2.4): always on `prompt=consent`, never otherwise for
/// first-party clients, and otherwise when an earlier consent does not cover every requested scope.
pub async fn needs_consent(
    state: &AppState,
    client: &Client,
    user: &User,
    request: &AuthorizationRequest,
) -> Result<bool, ShardError> {
    // `prompt=consent` asks even a first-party client's user (OIDC Core §3.1.2.1).
    if request.prompt.consent {
        return Ok(true);
    }
    if client.first_party {
        return Ok(false);
    }
    let id = consent_record_id(state, &user.id, &client.client_id);
    let consent = state.shards.execute(record_shard(state, &id), GetConsent { id }).await?;
    let covered = consent.is_some_and(|consent| request.scopes.iter().all(|scope| consent.scopes.contains(scope)));
    Ok(!covered)
}

/// Stores a pending authorization, then shows the login or the consent form.
async fn new_pending(
    state: &AppState,
    client: &Client,
    request: AuthorizationRequest,
    stage: PendingStage,
    shard: idp_proto::ShardId,
    browser: &Browser,
) -> HttpResponse {
    let now_ms = state.clock.now_ms();
    let handle = Handle::random_in(shard);
    let pending = PendingAuthorization {
        request,
        stage,
        created_at_ms: now_ms,
        expires_at_ms: now_ms + state.config.tokens.pending_ttl.as_millis() as u64,
    };
    let request = pending.request.clone();
    let stage = pending.stage.clone();
    if state.shards.execute(shard, CreatePending { id: handle.id, pending }).await.is_err() {
        return unavailable_page(state);
    }
    let response = match stage {
        PendingStage::AwaitingLogin if hinted_upstream(state, &request).is_some() => {
            let upstream = hinted_upstream(state, &request).expect("checked just above").clone();
            crate::federation::routes::begin(state, &upstream, handle, &browser.id).await
        }
        PendingStage::AwaitingLogin => {
            let pending = handle.encode();
            let username = request.login_hint.as_deref();
            let form = LoginForm { client, pending: &pending, browser_id: &browser.id, username, error: None };
            login_page(state, &form, StatusCode::OK)
        }
        PendingStage::Authenticated { session } => {
            let user_id = match state.shards.execute(shard, GetSession { id: session }).await {
                Ok(session) => session.authentication.user_id,
                Err(_) => return unavailable_page(state),
            };
            let directory = state.directory();
            let Some(user) = directory.user_by_id(&user_id) else {
                return error_page(state, StatusCode::BAD_REQUEST, "Sign-in failed", "The account is not available.");
            };
            consent_page(state, client, user, &request, &handle.encode(), &browser.id)
        }
        // Never created finished; answered like a pending authorization that is gone.
        PendingStage::Finished { .. } => {
            error_page(state, StatusCode::BAD_REQUEST, "Sign-in failed", "The sign-in request has already ended.")
        }
    };
    browser.attach(response)
}

/// The upstream an `idp_hint` names (federation), when it is configured; an unknown hint shows the login page.
fn hinted_upstream(
    state: &AppState,
    request: &AuthorizationRequest,
) -> Option<Arc<crate::federation::upstream::Upstream>> {
    state.federation.upstream(request.idp_hint.as_deref()?)
}

/// What the login form shows besides its CSRF token.
pub struct LoginForm<'a> {
    pub client: &'a Client,
    /// Handle of the pending authorization.
    pub pending: &'a str,
    /// The browser binding the CSRF token is tied to.
    pub browser_id: &'a str,
    /// Prefilled username (from `login_hint`, or after a failed attempt).
    pub username: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// The login form; `429 Too Many Requests` shows it locked.
pub fn login_page(state: &AppState, form: &LoginForm<'_>, status: StatusCode) -> HttpResponse {
    let csrf = state.browser.csrf_token(form.browser_id, form.pending);
    let view = LoginView {
        lang: "en",
        client_name: &form.client.name,
        pending: form.pending,
        csrf: &csrf,
        username: form.username,
        error: form.error,
        locked: status == StatusCode::TOO_MANY_REQUESTS,
        upstreams: &crate::federation::routes::buttons(state, form.pending, form.browser_id),
    };
    html_response(status, state.pages.login(&view), None)
}

pub fn consent_page(
    state: &AppState,
    client: &Client,
    user: &User,
    request: &AuthorizationRequest,
    pending: &str,
    browser_id: &str,
) -> HttpResponse {
    let csrf = state.browser.csrf_token(browser_id, pending);
    let view = ConsentView {
        lang: "en",
        client_name: &client.name,
        username: &user.username,
        scopes: &request.scopes,
        pending,
        csrf: &csrf,
    };
    html_response(StatusCode::OK, state.pages.consent(&view), None)
}

/// The grant (and code) to issue for a request, allocated in the session's shard.
pub fn grant_issue(
    state: &AppState,
    client: &Client,
    request: &AuthorizationRequest,
    shard: idp_proto::ShardId,
) -> (GrantIssue, Handle, Option<Handle>) {
    let now_ms = state.clock.now_ms();
    let tokens = &state.config.tokens;
    let grant = Handle::random_in(shard);
    let code = request.response_type.code.then(|| Handle::random_in(shard));
    let offline = request.has_scope("offline_access") && client.grant_types.refresh_token;
    let code_expires_at_ms = now_ms + tokens.code_ttl.as_millis() as u64;
    // A grant lives as long as what it can still issue: refresh tokens, or the code and its access token.
    let grant_lifetime = if offline { tokens.refresh_token_ttl } else { tokens.code_ttl + tokens.access_token_ttl };
    let issue = GrantIssue {
        grant: grant.id,
        code: code.map(|code| code.id),
        code_expires_at_ms,
        grant_expires_at_ms: now_ms + grant_lifetime.as_millis() as u64,
        offline,
    };
    (issue, grant, code)
}

/// The successful authorization response: code, ID token and access token as the response type asks.
pub fn finish(
    state: &AppState,
    client: &Client,
    user: &User,
    issued: Issued,
    grant: Handle,
    code: Option<Handle>,
) -> HttpResponse {
    let target = target_of(&issued.request);
    match response_params(state, client, user, &issued, grant, code) {
        Ok(params) => AuthorizationReply::success(&target, params).render(state),
        Err(_) => AuthorizationReply::error(&target, ErrorCode::ServerError, "signing failed").render(state),
    }
}

/// The parameters of a successful response (OAuth 2.0 Multiple Response Types §3): the ID token comes last, as it
/// carries the hashes of the code and the access token (OIDC Core §3.3.2.11).
fn response_params(
    state: &AppState,
    client: &Client,
    user: &User,
    issued: &Issued,
    grant: Handle,
    code: Option<Handle>,
) -> Result<Vec<(String, String)>, MintError> {
    let response_type = issued.request.response_type;
    let code = code.map(|code| code.encode());
    let mut params: Vec<(String, String)> = code.iter().map(|code| ("code".to_string(), code.clone())).collect();
    let mut access_token = None;
    if response_type.token {
        access_token = Some(front_channel_access_token(state, client, user, issued, grant, &mut params)?);
    }
    if response_type.id_token {
        let spec = IdTokenSpec {
            client,
            user,
            authentication: &issued.authentication,
            scopes: &issued.request.scopes,
            nonce: issued.request.nonce.as_deref(),
            sid: Some(&issued.sid),
            code: code.as_deref(),
            access_token: access_token.as_deref(),
        };
        params.push(("id_token".into(), mint::id_token(state, &spec)?));
    }
    if response_type.token || response_type.id_token {
        let issued_tokens = crate::oauth::observe::Issued {
            client_id: &client.client_id,
            grant_type: if code.is_some() { "hybrid" } else { "implicit" },
            user_id: Some(&user.id),
            scopes: &issued.request.scopes,
            access_token: response_type.token,
            id_token: response_type.id_token,
            refresh_token: false,
        };
        crate::oauth::observe::tokens_issued(state, &issued_tokens);
    }
    Ok(params)
}

/// Signs the access token of a `token` response type and adds it to the response (RFC 6749 §4.2.2).
fn front_channel_access_token(
    state: &AppState,
    client: &Client,
    user: &User,
    issued: &Issued,
    grant: Handle,
    params: &mut Vec<(String, String)>,
) -> Result<String, MintError> {
    let request = &issued.request;
    let spec = AccessTokenSpec {
        client,
        subject: &user.id,
        scopes: &request.scopes,
        audience: request.resource.as_deref().unwrap_or(&client.default_audience),
        authentication: Some(&issued.authentication),
        sid: Some(&issued.sid),
        grant: Some(grant),
        // A front-channel grant outlives its access token (code lifetime + access-token lifetime).
        not_after_ms: None,
    };
    let (token, expires_in) = mint::access_token(state, &spec)?;
    params.push(("access_token".into(), token.clone()));
    params.push(("token_type".into(), "Bearer".into()));
    params.push(("expires_in".into(), expires_in.to_string()));
    params.push(("scope".into(), request.scopes.join(" ")));
    Ok(token)
}

pub fn target_of(request: &AuthorizationRequest) -> Target {
    Target { redirect_uri: request.redirect_uri.clone(), mode: request.response_mode, state: request.state.clone() }
}

/// A record id for a shard-routed record that is not addressed by a handle.
pub fn keyed_id(state: &AppState, label: &str, parts: &[&str]) -> RecordId {
    let mut message = label.as_bytes().to_vec();
    for part in parts {
        message.push(0);
        message.extend_from_slice(part.as_bytes());
    }
    let tag = aws_lc_rs::hmac::sign(&state.record_key, &message);
    let mut id = [0u8; 32];
    id.copy_from_slice(tag.as_ref());
    RecordId(id)
}
