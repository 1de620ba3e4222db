//! The login and consent forms' posts, and the resumption of an authorization after login.
//!
//! A login POST is accepted once: the pending authorization moves past `AwaitingLogin` atomically, so a replayed
//! successful POST yields no second code. A successful credential POST answers 303 to `/authorize/resume`.

use crate::directory::{Client, User};
use crate::oauth::browser::session_handle;
use crate::oauth::flow::{self, consent_page, grant_issue, login_page, target_of, LoginForm};
use crate::oauth::observe::{self, LoginFailure};
use crate::oauth::params::Params;
use crate::oauth::respond::{error_page, see_other, unavailable_page, AuthorizationReply};
use crate::oauth::{consent_record_id, record_shard, throttle_record_id};
use crate::state::AppState;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use idp_actors::shard::model::{
    AuthenticatePending, BeginLoginAttempt, CancelPending, FinishPending, GetPending, GetSession, GrantConsent,
    LoginSucceeded, ShardError, ThrottlePolicy,
};
use idp_proto::records::{Authentication, Consent, PendingAuthorization, PendingStage};
use idp_proto::{ErrorCode, Handle, RecordId, Secret, ShardId};
use std::sync::Arc;
use std::time::Duration;

const EXPIRED: &str =
    "This sign-in request has expired or was already completed. Return to the application and try again.";
const BAD_CREDENTIALS: &str = "Incorrect username or password.";
const LOCKED: &str = "Too many attempts, try again later.";

fn form(request: &HttpRequest, body: &[u8], state: &AppState) -> Option<Params> {
    Params::parse_request_form(request, body, state.config.http.param_limit).ok()
}

fn bad_request(state: &AppState, message: &str) -> HttpResponse {
    error_page(state, StatusCode::BAD_REQUEST, "Invalid request", message)
}

fn forbidden(state: &AppState) -> HttpResponse {
    error_page(
        state,
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form was not issued to this browser. Go back and try again.",
    )
}

/// Loads the pending authorization a form names, after checking the form's CSRF token.
async fn pending_of(
    request: &HttpRequest,
    params: &Params,
    state: &AppState,
) -> Result<(Handle, PendingAuthorization), HttpResponse> {
    let Some(text) = params.get("pending") else { return Err(bad_request(state, "The form is incomplete.")) };
    if !state.browser.check_csrf(request, text, params.get("csrf")) {
        return Err(forbidden(state));
    }
    let Ok(handle) = Handle::decode(text, state.shard_count()) else { return Err(bad_request(state, EXPIRED)) };
    match state.shards.execute(handle.shard, GetPending { id: handle.id }).await {
        Ok(pending) => Ok((handle, pending)),
        Err(ShardError::NotFound) => Err(bad_request(state, EXPIRED)),
        Err(_) => Err(unavailable_page(state)),
    }
}

/// `POST /login`: `username`, `password`, `csrf`, `pending`.
pub async fn login_post_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let Some(params) = form(&request, &body, &state) else { return bad_request(&state, "The form is malformed.") };
    let (handle, client) = match awaiting_login(&request, &params, &state).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let (pending, browser_id) = (handle.encode(), browser_id(&request));
    let mut form =
        LoginForm { client: &client, pending: &pending, browser_id: &browser_id, username: None, error: None };
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        form.username = params.get("username");
        form.error = Some(BAD_CREDENTIALS);
        observe::login_failed(&state, &client.client_id, LoginFailure::MissingCredentials);
        return login_page(&state, &form, StatusCode::OK);
    };
    form.username = Some(username);
    let outcome = check_credentials(&state, username, Secret::new(password.to_string())).await;
    match &outcome {
        Ok(Some(user_id)) => observe::login_succeeded(&state, &client.client_id, user_id),
        Ok(None) => observe::login_failed(&state, &client.client_id, LoginFailure::BadCredentials),
        Err(ShardError::Locked { .. }) => observe::login_failed(&state, &client.client_id, LoginFailure::Locked),
        Err(_) => observe::login_failed(&state, &client.client_id, LoginFailure::Unavailable),
    }
    match outcome {
        Ok(Some(user_id)) => authenticate(&request, &state, handle, user_id, vec!["pwd".into()]).await,
        Ok(None) => login_page(&state, &LoginForm { error: Some(BAD_CREDENTIALS), ..form }, StatusCode::OK),
        Err(ShardError::Locked { retry_after_ms }) => locked_page(&state, form, retry_after_ms),
        Err(_) => unavailable_page(&state),
    }
}

/// The pending authorization a login form names, when it still waits for a login, and its client.
async fn awaiting_login(
    request: &HttpRequest,
    params: &Params,
    state: &AppState,
) -> Result<(Handle, Arc<Client>), HttpResponse> {
    let (handle, pending) = pending_of(request, params, state).await?;
    if pending.stage != PendingStage::AwaitingLogin {
        return Err(bad_request(state, EXPIRED));
    }
    match state.directory().client(&pending.request.client_id) {
        Some(client) => Ok((handle, client.clone())),
        None => Err(bad_request(state, EXPIRED)),
    }
}

/// The login form of a locked-out username: 429 with `Retry-After`.
fn locked_page(state: &AppState, form: LoginForm<'_>, retry_after_ms: u64) -> HttpResponse {
    let mut response = login_page(state, &LoginForm { error: Some(LOCKED), ..form }, StatusCode::TOO_MANY_REQUESTS);
    let seconds = retry_after_ms.div_ceil(1000).max(1).to_string();
    if let Ok(value) = header::HeaderValue::from_str(&seconds) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The browser binding value of a request whose CSRF token was checked (so the cookie is present).
fn browser_id(request: &HttpRequest) -> String {
    request.cookie(crate::oauth::browser::BROWSER_COOKIE).map(|cookie| cookie.value().to_string()).unwrap_or_default()
}

/// Throttle, then verify the password off the event loop. `Ok(None)` for wrong credentials.
async fn check_credentials(
    state: &AppState,
    username: &str,
    password: Secret<String>,
) -> Result<Option<String>, ShardError> {
    // A saturated hashing pool turns the login away (503, retry) before it is counted as a failure.
    if state.passwords.is_saturated() {
        return Err(ShardError::Unavailable("password verification saturated".into()));
    }
    let throttle = throttle_record_id(state, username);
    let shard = record_shard(state, &throttle);
    let login = &state.config.login;
    let policy = ThrottlePolicy {
        delay_after: login.delay_after,
        delay_step_ms: login.delay_step.as_millis() as u64,
        max_delay_ms: 5_000,
        max_failures: login.max_failures,
        lockout_ms: login.lockout.as_millis() as u64,
    };
    let allowed =
        state.shards.execute(shard, BeginLoginAttempt { id: throttle, policy, attempt: RecordId::random() }).await?;
    if allowed.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(allowed.delay_ms)).await;
    }
    // A user provisioned by an upstream sign-in has no password: verified like an unknown one (same time).
    let user = state.directory().user_by_name(username).filter(|user| user.has_password()).cloned();
    let verified = state
        .passwords
        .try_verify(user.as_ref().map(|user| user.password_hash.clone()), password)
        .await
        .map_err(|busy| ShardError::Unavailable(busy.to_string()))?;
    match user {
        Some(user) if verified => {
            state.shards.execute(shard, LoginSucceeded { id: throttle }).await?;
            Ok(Some(user.id.clone()))
        }
        _ => Ok(None),
    }
}

/// Binds the pending authorization to a (new or refreshed) session and sends the browser on (303). `amr`: how the
/// user authenticated (`pwd`, or `fed` for a sign-in through an upstream provider).
pub(crate) async fn authenticate(
    request: &HttpRequest,
    state: &AppState,
    pending: Handle,
    user_id: String,
    amr: Vec<String>,
) -> HttpResponse {
    authenticate_at(request, state, pending, user_id, amr, state.clock.now_secs()).await
}

/// [`authenticate`] with the time the user authenticated (`auth_time`, seconds): a brokered login's is the
/// upstream's.
pub(crate) async fn authenticate_at(
    request: &HttpRequest,
    state: &AppState,
    pending: Handle,
    user_id: String,
    amr: Vec<String>,
    auth_time: u64,
) -> HttpResponse {
    let existing_session = session_handle(request, state.shard_count())
        .filter(|session| session.shard == pending.shard)
        .map(|session| session.id);
    let tokens = &state.config.tokens;
    let op = AuthenticatePending {
        pending: pending.id,
        existing_session,
        new_session: RecordId::random(),
        new_sid: RecordId::random().to_base64(),
        authentication: Authentication { user_id, auth_time, amr, acr: None },
        session_expires_at_ms: state.clock.now_ms() + tokens.session_ttl.as_millis() as u64,
    };
    // Indexed before it exists, so the user's index lists every session of the user (admin API).
    let candidates: Vec<RecordId> = std::iter::once(op.new_session).chain(existing_session).collect();
    let (user_id, expires_at_ms) = (&op.authentication.user_id, op.session_expires_at_ms);
    if crate::user_sessions::index_sessions(state, user_id, pending.shard, &candidates, expires_at_ms).await.is_err() {
        return unavailable_page(state);
    }
    match state.shards.execute(pending.shard, op).await {
        Ok(authenticated) => {
            let session = Handle { shard: pending.shard, id: authenticated.session };
            let mut response =
                see_other(&format!("{}?pending={}", state.endpoint("/authorize/resume"), pending.encode()));
            let _ = response.add_cookie(&state.browser.session_cookie(session, tokens.session_ttl.as_secs()));
            response
        }
        Err(ShardError::NotFound) => bad_request(state, EXPIRED),
        Err(_) => unavailable_page(state),
    }
}

/// `GET /authorize/resume?pending=…`: after login, ask consent or answer the client.
pub async fn resume_route(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Ok(params) = Params::parse(request.query_string().as_bytes(), state.config.http.param_limit) else {
        return bad_request(&state, EXPIRED);
    };
    let Some(handle) = params.get("pending").and_then(|text| Handle::decode(text, state.shard_count()).ok()) else {
        return bad_request(&state, EXPIRED);
    };
    let pending = match state.shards.execute(handle.shard, GetPending { id: handle.id }).await {
        Ok(pending) => pending,
        Err(ShardError::NotFound) => return bad_request(&state, EXPIRED),
        Err(_) => return unavailable_page(&state),
    };
    let Some(session) = bound_session(&request, &state, handle, &pending) else { return forbidden(&state) };
    let (client, user) = match parties(&state, handle.shard, &pending, session).await {
        Ok(parties) => parties,
        Err(response) => return response,
    };
    match flow::needs_consent(&state, &client, &user, &pending.request).await {
        Ok(true) => {
            let browser = flow::Browser::from_request(&request, &state);
            let response = consent_page(&state, &client, &user, &pending.request, &handle.encode(), &browser.id);
            browser.attach(response)
        }
        Ok(false) => finish_pending(&state, &client, &user, handle, session, &pending).await,
        Err(_) => unavailable_page(&state),
    }
}

/// The browser's session, when it is the one the pending authorization was authenticated in.
fn bound_session(
    request: &HttpRequest,
    state: &AppState,
    handle: Handle,
    pending: &PendingAuthorization,
) -> Option<RecordId> {
    let session = session_handle(request, state.shard_count())?;
    let bound = pending.stage == (PendingStage::Authenticated { session: session.id }) && session.shard == handle.shard;
    bound.then_some(session.id)
}

/// The client of a pending authorization and the user of its session.
async fn parties(
    state: &AppState,
    shard: ShardId,
    pending: &PendingAuthorization,
    session: RecordId,
) -> Result<(Arc<Client>, Arc<User>), HttpResponse> {
    let user_id = match state.shards.execute(shard, GetSession { id: session }).await {
        Ok(session) => session.authentication.user_id,
        Err(ShardError::NotFound) => return Err(bad_request(state, EXPIRED)),
        Err(_) => return Err(unavailable_page(state)),
    };
    state.federation.ensure_user(&user_id).await;
    let directory = state.directory();
    match (directory.client(&pending.request.client_id), directory.user_by_id(&user_id)) {
        (Some(client), Some(user)) => Ok((client.clone(), user.clone())),
        _ => Err(bad_request(state, EXPIRED)),
    }
}

async fn finish_pending(
    state: &AppState,
    client: &Client,
    user: &User,
    handle: Handle,
    session: RecordId,
    pending: &PendingAuthorization,
) -> HttpResponse {
    let (issue, grant, code) = grant_issue(state, client, &pending.request, handle.shard);
    match state.shards.execute(handle.shard, FinishPending { pending: handle.id, session, issue }).await {
        Ok(issued) => flow::finish(state, client, user, issued, grant, code),
        Err(ShardError::NotFound | ShardError::LoginRequired) => bad_request(state, EXPIRED),
        Err(_) => unavailable_page(state),
    }
}

/// `POST /consent`: `decision=allow|deny`, `csrf`, `pending`.
pub async fn consent_post_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let Some(params) = form(&request, &body, &state) else { return bad_request(&state, "The form is malformed.") };
    let (handle, pending) = match pending_of(&request, &params, &state).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(session) = bound_session(&request, &state, handle, &pending) else { return forbidden(&state) };
    let (client, user) = match parties(&state, handle.shard, &pending, session).await {
        Ok(parties) => parties,
        Err(response) => return response,
    };
    match params.get("decision") {
        Some("allow") => {}
        Some("deny") => return deny(&state, handle, session).await,
        _ => return bad_request(&state, "The form is incomplete."),
    }
    let id = consent_record_id(&state, &user.id, &client.client_id);
    let consent = Consent {
        user_id: user.id.clone(),
        client_id: client.client_id.clone(),
        scopes: pending.request.scopes.clone(),
        expires_at_ms: state.clock.now_ms() + state.config.tokens.consent_ttl.as_millis() as u64,
    };
    if state.shards.execute(record_shard(&state, &id), GrantConsent { id, consent }).await.is_err() {
        return unavailable_page(&state);
    }
    observe::consent_granted(&state, &client.client_id, &user.id, &pending.request.scopes);
    finish_pending(&state, &client, &user, handle, session, &pending).await
}

/// A denied consent uses up the pending authorization (one request, one answer), then tells the client
/// `access_denied` (OIDC Core §3.1.2.6).
async fn deny(state: &AppState, handle: Handle, session: RecordId) -> HttpResponse {
    match state
        .shards
        .execute(handle.shard, CancelPending { pending: handle.id, session, by: RecordId::random() })
        .await
    {
        Ok(request) => {
            AuthorizationReply::error(&target_of(&request), ErrorCode::AccessDenied, "the user denied the request")
                .render(state)
        }
        Err(ShardError::NotFound) => bad_request(state, EXPIRED),
        Err(_) => unavailable_page(state),
    }
}
