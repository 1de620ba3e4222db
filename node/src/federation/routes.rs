//! The browser's side of a brokered login: the start (button or `idp_hint`), the callback (GET, and POST for
//! upstreams that answer with `form_post`), and the way back to the relying party after an upstream failure.
//!
//! # Binding the upstream `state` to the browser
//! The [`UpstreamLogin`](idp_proto::records::UpstreamLogin) record holds a keyed hash of the browser binding cookie
//! (`idp_browser`) of the browser that was sent to the upstream, and the callback must come with the same cookie.
//! That cookie is SameSite=Lax: a GET callback (a top-level navigation) carries it, a cross-site `form_post` from
//! the upstream (Apple) does not. Such a POST is answered with a small self-submitting page that posts the same
//! fields to the same callback URL, from our own origin, where the browser attaches its cookies; the second post
//! carries `relayed=1`, so a POST without cookies is relayed once and refused the second time. The cookie stays
//! SameSite=Lax (no SameSite=None cookie is needed, so nothing of ours is sent on other cross-site requests).

use super::account::{identity_from_claims, AccountDecision};
use super::metrics;
use super::upstream::{checked_auth_time, LoginDemand, LoginSecrets, Upstream, UpstreamError};
use crate::oauth::browser::BROWSER_COOKIE;
use crate::oauth::flow::{keyed_id, target_of};
use crate::oauth::observe;
use crate::oauth::params::{content_type, Params};
use crate::oauth::respond::{error_page, see_other, unavailable_page, AuthorizationReply};
use crate::pages::{html_response, FormPostView, UpstreamButton};
use crate::state::AppState;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use idp_actors::shard::model::ShardError;
use idp_actors::shard::upstream::{AbandonPending, BeginUpstreamLogin, TakeUpstreamLogin, OTHER_BROWSER};
use idp_proto::records::UpstreamLogin;
use idp_proto::{ErrorCode, Handle, RecordId};
use std::time::{Duration, Instant};

/// How long the browser may stay at the upstream (the shard caps it at the pending authorization's own expiry).
const UPSTREAM_LOGIN_TTL: Duration = Duration::from_secs(600);
const EXPIRED: &str =
    "This sign-in request has expired or was already completed. Return to the application and try again.";
const BAD_STATE: &str = "This sign-in response is unknown, expired or was already used. Return to the application \
     and try again.";

/// `{issuer}/federation/{id}/callback`: the redirect URI registered at the upstream.
pub fn callback_url(state: &AppState, upstream: &str) -> String {
    state.endpoint(&format!("/federation/{upstream}/callback"))
}

/// The login page's "Sign in with X" buttons for a pending authorization, each with a CSRF token of the browser.
pub fn buttons(state: &AppState, pending: &str, browser_id: &str) -> Vec<UpstreamButton> {
    state
        .federation
        .upstreams()
        .iter()
        .map(|upstream| {
            let id = upstream.id();
            let csrf = state.browser.csrf_token(browser_id, &start_subject(id, pending));
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("pending", pending)
                .append_pair("csrf", &csrf)
                .finish();
            UpstreamButton {
                name: upstream.config.display_name().to_string(),
                icon_url: upstream.config.icon_url.clone(),
                href: format!("/federation/{id}/start?{query}"),
            }
        })
        .collect()
}

fn start_subject(upstream: &str, pending: &str) -> String {
    format!("upstream-start\0{upstream}\0{pending}")
}

fn cancel_subject(upstream: &str, pending: &str, error: &str) -> String {
    format!("upstream-cancel\0{upstream}\0{pending}\0{error}")
}

/// The keyed hash of a browser binding value kept in the upstream-login record.
fn browser_hash(state: &AppState, browser_id: &str) -> String {
    keyed_id(state, "upstream-browser", &[browser_id]).to_base64()
}

/// The subject id of a user provisioned from an upstream account: derived from both, so that two nodes
/// provisioning the same first sign-in at once write the same entry.
fn provisioned_user_id(state: &AppState, upstream: &str, subject: &str) -> String {
    let tag = keyed_id(state, "upstream-user", &[upstream, subject]).to_base64();
    format!("{upstream}-{}", &tag[..22])
}

fn browser_cookie(request: &HttpRequest) -> String {
    request.cookie(BROWSER_COOKIE).map(|cookie| cookie.value().to_string()).unwrap_or_default()
}

fn query_params(request: &HttpRequest, state: &AppState) -> Option<Params> {
    Params::parse(request.query_string().as_bytes(), state.config.http.param_limit).ok()
}

fn page(state: &AppState, status: StatusCode, title: &str, message: &str) -> HttpResponse {
    error_page(state, status, title, message)
}

fn unknown_upstream(state: &AppState) -> HttpResponse {
    page(state, StatusCode::NOT_FOUND, "Unknown provider", "This sign-in provider is not configured.")
}

/// `GET /federation/{id}/start?pending=…&csrf=…`: the login page's button.
pub async fn start_route(request: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let id = path.into_inner();
    let Some(upstream) = state.federation.upstream(&id) else { return unknown_upstream(&state) };
    let Some(params) = query_params(&request, &state) else {
        return page(&state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED);
    };
    let Some(pending) = params.get("pending") else {
        return page(&state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED);
    };
    if !state.browser.check_csrf(&request, &start_subject(&id, pending), params.get("csrf")) {
        let message = "This link was not issued to this browser. Go back and try again.";
        return page(&state, StatusCode::FORBIDDEN, "Request refused", message);
    }
    let Ok(pending) = Handle::decode(pending, state.shard_count()) else {
        return page(&state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED);
    };
    begin(&state, &upstream, pending, &browser_cookie(&request)).await
}

/// Sends the browser to the upstream for a pending authorization that waits for a login (button or `idp_hint`).
/// The record is stored first: the shard copies the pending authorization's demand for a fresh login into it and
/// answers its request, whose `prompt=login`, `max_age` and `login_hint` go to the upstream.
pub async fn begin(state: &AppState, upstream: &Upstream, pending: Handle, browser_id: &str) -> HttpResponse {
    metrics::attempt(upstream.id());
    let login_handle = Handle::random_in(pending.shard);
    let (state_text, nonce, verifier) =
        (login_handle.encode(), RecordId::random().to_base64(), RecordId::random().to_base64());
    let now_ms = state.clock.now_ms();
    let login = UpstreamLogin {
        upstream: upstream.id().to_string(),
        pending: pending.id,
        nonce: nonce.clone(),
        pkce_verifier: verifier.clone(),
        browser: browser_hash(state, browser_id),
        created_at_ms: now_ms,
        expires_at_ms: now_ms + UPSTREAM_LOGIN_TTL.as_millis() as u64,
        taken_by: None,
        force_login: false,
        max_age: None,
        client_id: String::new(),
    };
    let request = match state.shards.execute(pending.shard, BeginUpstreamLogin { id: login_handle.id, login }).await {
        Ok(request) => request,
        Err(ShardError::NotFound) => return page(state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED),
        Err(_) => return unavailable_page(state),
    };
    let demand = LoginDemand {
        force_login: request.prompt.login || request.max_age == Some(0),
        max_age: request.max_age,
        login_hint: request.login_hint.as_deref(),
    };
    let secrets = LoginSecrets { state: &state_text, nonce: &nonce, pkce_verifier: &verifier };
    match upstream.authorization_url(&callback_url(state, upstream.id()), &secrets, &demand).await {
        Ok(location) => see_other(&location),
        Err(error) => failure(state, upstream, pending, browser_id, &error),
    }
}

/// `GET` and `POST /federation/{id}/callback`: the upstream's answer.
pub async fn callback_route(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let id = path.into_inner();
    let Some(upstream) = state.federation.upstream(&id) else { return unknown_upstream(&state) };
    let is_post = request.method() == actix_web::http::Method::POST;
    let params = match is_post {
        true => Params::parse_form(content_type(&request), &body, state.config.http.param_limit),
        false => Params::parse(request.query_string().as_bytes(), state.config.http.param_limit),
    };
    let Ok(params) = params else {
        metrics::failure(&id, "bad_state");
        return page(&state, StatusCode::BAD_REQUEST, "Sign-in failed", BAD_STATE);
    };
    if is_post && request.cookie(BROWSER_COOKIE).is_none() && !params.contains("relayed") {
        return relay(&state, &id, &body);
    }
    let browser_id = browser_cookie(&request);
    let (login, pending) = match take_login(&state, &id, &params, &browser_id).await {
        Ok(taken) => taken,
        Err(response) => return response,
    };
    let secrets = LoginSecrets { state: "", nonce: &login.nonce, pkce_verifier: &login.pkce_verifier };
    let (user_id, auth_time) = match sign_in(&state, &upstream, &params, &secrets, &login).await {
        Ok(signed_in) => signed_in,
        Err(error) => {
            observe::brokered_login_failed(&state, &login.client_id);
            return match error {
                SignInError::Upstream(error) => failure(&state, &upstream, pending, &browser_id, &error),
                SignInError::Refused => refused(&state, &upstream, pending, &browser_id),
                SignInError::Directory => {
                    metrics::failure(&id, "directory");
                    unavailable_page(&state)
                }
            };
        }
    };
    observe::brokered_login_succeeded(&state, &login.client_id, &user_id, &id);
    let amr = vec!["fed".into()];
    let response = crate::oauth::login::authenticate_at(&request, &state, pending, user_id, amr, auth_time).await;
    // From the callback's arrival to the session written.
    metrics::success(&id, started.elapsed());
    response
}

/// A cross-site `form_post` came without our cookies: post the same fields again from our own origin.
fn relay(state: &AppState, upstream: &str, body: &[u8]) -> HttpResponse {
    let mut fields: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    fields.push(("relayed".into(), "1".into()));
    let action = callback_url(state, upstream);
    let view = FormPostView { action: &action, fields: &fields };
    html_response(StatusCode::OK, state.pages.form_post(&view), view.form_action_source().as_deref())
}

/// Takes the upstream-login record named by `state` (single use) and checks that it belongs to this upstream and
/// this browser; the record and the pending authorization's handle.
async fn take_login(
    state: &AppState,
    upstream: &str,
    params: &Params,
    browser_id: &str,
) -> Result<(UpstreamLogin, Handle), HttpResponse> {
    let refuse = |status, reason: &'static str, message: &str| {
        metrics::failure(upstream, reason);
        page(state, status, "Sign-in failed", message)
    };
    let Some(handle) = params.get("state").and_then(|text| Handle::decode(text, state.shard_count()).ok()) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "bad_state", BAD_STATE));
    };
    let take = TakeUpstreamLogin {
        id: handle.id,
        upstream: upstream.to_string(),
        browser: browser_hash(state, browser_id),
        request: RecordId::random(),
    };
    match state.shards.execute(handle.shard, take).await {
        Ok(login) => {
            let pending = Handle { shard: handle.shard, id: login.pending };
            Ok((login, pending))
        }
        Err(ShardError::InvalidGrant(reason)) if reason == OTHER_BROWSER => {
            let message = "This sign-in was started in another browser. Start again from the application.";
            Err(refuse(StatusCode::FORBIDDEN, "other_browser", message))
        }
        Err(ShardError::NotFound | ShardError::InvalidGrant(_)) => {
            Err(refuse(StatusCode::BAD_REQUEST, "bad_state", BAD_STATE))
        }
        Err(_) => Err(unavailable_page(state)),
    }
}

enum SignInError {
    Upstream(UpstreamError),
    Refused,
    Directory,
}

impl From<UpstreamError> for SignInError {
    fn from(error: UpstreamError) -> Self {
        Self::Upstream(error)
    }
}

/// The upstream's answer to a local user id and `auth_time`: error response, RFC 9207 `iss`, code exchange and
/// validation, the upstream's `auth_time` against the relying party's demand, claim mapping, then linking or
/// provisioning.
async fn sign_in(
    state: &AppState,
    upstream: &Upstream,
    params: &Params,
    secrets: &LoginSecrets<'_>,
    login: &UpstreamLogin,
) -> Result<(String, u64), SignInError> {
    if let Some(error) = params.get("error") {
        return Err(UpstreamError::ErrorResponse(error.chars().take(64).collect()).into());
    }
    // RFC 9207 §2.4: an `iss` that is not the upstream's own is a mix-up attack (simple string comparison; the
    // configured issuer is exactly the discovered one, which discovery checks).
    if let (Some(iss), Some(issuer)) = (params.get("iss"), upstream.config.issuer.as_deref()) {
        if iss != issuer {
            return Err(UpstreamError::Invalid("the answer names another issuer".into()).into());
        }
    }
    if params.get("iss").is_none() && upstream.requires_iss().await? {
        return Err(UpstreamError::Invalid("the answer lacks the iss the upstream announces (RFC 9207)".into()).into());
    }
    let Some(code) = params.get("code") else {
        return Err(UpstreamError::Invalid("the answer has no code".into()).into());
    };
    let claims = upstream.claims(code, &callback_url(state, upstream.id()), secrets).await?;
    let upstream_auth_time = claims.get("auth_time").and_then(serde_json::Value::as_u64);
    let sent_at_secs = login.created_at_ms / 1000;
    let auth_time =
        checked_auth_time(upstream_auth_time, login.force_login, login.max_age, sent_at_secs, state.clock.now_secs())?;
    let identity = identity_from_claims(&upstream.config.claims, &claims)
        .map_err(|reason| UpstreamError::Invalid(reason.into()))?;
    let new_user_id = provisioned_user_id(state, upstream.id(), &identity.subject);
    match state.federation.account(&upstream.config, &identity, &new_user_id).await {
        Ok(AccountDecision::Linked { user_id }) => Ok((user_id, auth_time)),
        Ok(AccountDecision::LinkByEmail { user } | AccountDecision::Provision { user }) => Ok((user.id, auth_time)),
        Ok(AccountDecision::Refused) => Err(SignInError::Refused),
        // The entry would break the directory (a name or link another user holds): retrying cannot help.
        Err(error @ crate::directory::store::DirectoryStoreError::Directory(_)) => {
            tracing::warn!(upstream = upstream.id(), %error, "a brokered account would break the directory");
            Err(SignInError::Refused)
        }
        Err(error) => {
            tracing::warn!(upstream = upstream.id(), %error, "storing a brokered account failed");
            Err(SignInError::Directory)
        }
    }
}

/// The page of a failed upstream sign-in: what happened, a link to try again, and a link back to the application,
/// which then gets `temporarily_unavailable` (the upstream was down or slow) or `access_denied` (it refused, or its
/// answer was invalid).
fn failure(
    state: &AppState,
    upstream: &Upstream,
    pending: Handle,
    browser_id: &str,
    error: &UpstreamError,
) -> HttpResponse {
    metrics::failure(upstream.id(), error.reason());
    tracing::info!(upstream = upstream.id(), reason = error.reason(), %error, "brokered sign-in failed");
    let (status, message, code) = match error {
        UpstreamError::Timeout => {
            (StatusCode::GATEWAY_TIMEOUT, "did not answer in time", ErrorCode::TemporarilyUnavailable)
        }
        UpstreamError::Unavailable(_) => {
            (StatusCode::BAD_GATEWAY, "cannot be reached", ErrorCode::TemporarilyUnavailable)
        }
        // RFC 6749 §4.1.2.1: the upstream's own "try later".
        UpstreamError::ErrorResponse(code) if upstream_is_unavailable(code) => {
            (StatusCode::BAD_GATEWAY, "is unavailable", ErrorCode::TemporarilyUnavailable)
        }
        UpstreamError::ErrorResponse(_) => (StatusCode::BAD_GATEWAY, "refused the sign-in", ErrorCode::AccessDenied),
        UpstreamError::NotFresh(_) => {
            let message = "could not confirm the fresh sign-in the application asked for";
            let failure =
                Failure { status: StatusCode::FORBIDDEN, message, code: ErrorCode::LoginRequired, retry: false };
            return failure_page(state, upstream, pending, browser_id, failure);
        }
        UpstreamError::Invalid(_) => (StatusCode::BAD_GATEWAY, "gave an invalid answer", ErrorCode::AccessDenied),
        UpstreamError::Config(_) => {
            (StatusCode::BAD_GATEWAY, "is misconfigured here", ErrorCode::TemporarilyUnavailable)
        }
    };
    let retry = !matches!(error, UpstreamError::Config(_));
    let mut response = failure_page(state, upstream, pending, browser_id, Failure { status, message, code, retry });
    if code == ErrorCode::TemporarilyUnavailable {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    response
}

/// An upstream error code that means "try later" (RFC 6749 §4.1.2.1).
fn upstream_is_unavailable(code: &str) -> bool {
    matches!(code, "temporarily_unavailable" | "server_error")
}

/// The broker itself refused (no linked account and provisioning off, or a disabled user): counted once as
/// `refused`, said as the broker's refusal, and no "Try again" (it would be refused again).
fn refused(state: &AppState, upstream: &Upstream, pending: Handle, browser_id: &str) -> HttpResponse {
    metrics::failure(upstream.id(), "refused");
    tracing::info!(upstream = upstream.id(), "brokered sign-in refused: no usable local account");
    let message = "signed you in, but no account here may be used with it";
    let failure = Failure { status: StatusCode::FORBIDDEN, message, code: ErrorCode::AccessDenied, retry: false };
    failure_page(state, upstream, pending, browser_id, failure)
}

/// What a failure page says: `message` follows the upstream's name; `code` is what "Back to the application"
/// answers the relying party; `retry` offers "Try again" (a new upstream login for the same pending authorization).
struct Failure<'a> {
    status: StatusCode,
    message: &'a str,
    code: ErrorCode,
    retry: bool,
}

fn failure_page(
    state: &AppState,
    upstream: &Upstream,
    pending: Handle,
    browser_id: &str,
    Failure { status, message, code, retry }: Failure<'_>,
) -> HttpResponse {
    let id = upstream.id();
    let pending_text = pending.encode();
    let start_csrf = state.browser.csrf_token(browser_id, &start_subject(id, &pending_text));
    let cancel_csrf = state.browser.csrf_token(browser_id, &cancel_subject(id, &pending_text, code.as_str()));
    let retry_link = format!(
        "/federation/{id}/start?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("pending", &pending_text)
            .append_pair("csrf", &start_csrf)
            .finish()
    );
    let retry_link = match retry {
        true => {
            format!("<a class=\"button button-primary\" id=\"retry\" href=\"{}\">Try again</a> ", escape(&retry_link))
        }
        false => String::new(),
    };
    let cancel = format!(
        "/federation/{id}/cancel?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("pending", &pending_text)
            .append_pair("error", code.as_str())
            .append_pair("csrf", &cancel_csrf)
            .finish()
    );
    let name = escape(upstream.config.display_name());
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign-in failed</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head>\
         <body><main><h1>Sign-in failed</h1><p class=\"alert\" role=\"alert\">{name} {message}.</p>\
         <p class=\"muted\">Error code: <code>{code}</code></p>\
         <p>{retry_link}<a class=\"button button-secondary\" id=\"cancel\" href=\"{cancel}\">Back to the application</a></p>\
         </main></body></html>\n",
        code = code.as_str(),
        cancel = escape(&cancel),
    );
    html_response(status, body, None)
}

/// `GET /federation/{id}/cancel?pending=…&error=…&csrf=…`: the user gives up after an upstream failure; the
/// pending authorization ends and the relying party gets the error (OIDC Core §3.1.2.6).
pub async fn cancel_route(request: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let id = path.into_inner();
    let Some(params) = query_params(&request, &state) else {
        return page(&state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED);
    };
    let (Some(pending), Some(error)) = (params.get("pending"), params.get("error")) else {
        return page(&state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED);
    };
    let code = match error {
        "access_denied" => ErrorCode::AccessDenied,
        "temporarily_unavailable" => ErrorCode::TemporarilyUnavailable,
        "login_required" => ErrorCode::LoginRequired,
        _ => return page(&state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED),
    };
    if !state.browser.check_csrf(&request, &cancel_subject(&id, pending, error), params.get("csrf")) {
        let message = "This link was not issued to this browser. Go back and try again.";
        return page(&state, StatusCode::FORBIDDEN, "Request refused", message);
    }
    let Ok(pending) = Handle::decode(pending, state.shard_count()) else {
        return page(&state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED);
    };
    match state.shards.execute(pending.shard, AbandonPending { pending: pending.id, by: RecordId::random() }).await {
        Ok(authorization) => {
            let description = match code {
                ErrorCode::AccessDenied => "the sign-in through the upstream provider was refused",
                ErrorCode::LoginRequired => "the upstream provider could not confirm a fresh sign-in",
                _ => "the upstream provider is unavailable",
            };
            AuthorizationReply::error(&target_of(&authorization), code, description).render(&state)
        }
        Err(ShardError::NotFound) => page(&state, StatusCode::BAD_REQUEST, "Invalid request", EXPIRED),
        Err(_) => unavailable_page(&state),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#x27;")
}
