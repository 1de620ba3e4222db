//! RP-Initiated Logout 1.0: `GET`/`POST /logout` with `id_token_hint`, `post_logout_redirect_uri` (exactly
//! registered), `state` and `client_id`. Ends the SSO session and revokes the grants issued in it (offline ones
//! too unless `logout.keep_offline_tokens`). Without a hint that matches the session, the user confirms first. A POST
//! without any of our cookies (cross-site, so SameSite=Lax left them out) is sent on as the equivalent GET.

use crate::directory::Client;
use crate::oauth::browser::{carries_no_cookie, session_handle};
use crate::oauth::observe;
use crate::oauth::params::Params;
use crate::oauth::respond::{error_page, see_other, see_other_as_get, unavailable_page};
use crate::pages::{html_response, ErrorView, LoggedOutView, LogoutConfirmView};
use crate::state::AppState;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use idp_actors::jwt::{Claims, JwtHeader};
use idp_actors::shard::model::{EndSession, GetSession, ShardError};
use idp_proto::Handle;
use serde_json::Value;
use std::sync::Arc;

const PASSED_THROUGH: [&str; 5] = ["id_token_hint", "post_logout_redirect_uri", "state", "client_id", "ui_locales"];

/// What a valid `id_token_hint` says: the client and the session it was issued in.
struct Hint {
    client_id: String,
    subject: String,
    sid: Option<String>,
}

/// A logout request once its hint, client and redirect are checked.
struct Logout {
    hint: Option<Hint>,
    client: Option<Arc<Client>>,
    return_url: Option<String>,
}

pub async fn logout_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let is_post = request.method() == Method::POST;
    let Some(params) = logout_params(&request, &body, &state) else {
        observe::logout(&state, None, None, "rejected");
        return invalid(&state, "The logout request is malformed.");
    };
    // A cross-site POST (an RP's logout form) carries no SameSite=Lax cookie, so it could end nothing here; the
    // top-level GET it becomes carries the session cookie. Our own confirmation form has the binding cookie.
    if is_post && carries_no_cookie(&request) {
        return see_other_as_get(&state, "/logout", passed_through(&params));
    }
    let logout = match check_request(&state, &params) {
        Ok(logout) => logout,
        Err(message) => {
            observe::logout(&state, None, None, "rejected");
            return invalid(&state, message);
        }
    };
    if is_post && params.get("decision").is_some_and(|decision| decision != "logout") {
        return cancelled_page(&state);
    }
    let session = session_handle(&request, state.shard_count());
    let confirmed = is_post
        && params.get("decision") == Some("logout")
        && state.browser.check_csrf(&request, "logout", params.get("csrf"));
    if !confirmed && session.is_some() && !hint_matches_session(&state, session, logout.hint.as_ref()).await {
        return confirm_page(&request, &state, &params, logout.client.as_deref());
    }
    let client_id = logout.client.as_ref().map(|client| client.client_id.as_str());
    end_session(&state, session, logout.return_url.as_deref(), client_id).await
}

fn logout_params(request: &HttpRequest, body: &[u8], state: &AppState) -> Option<Params> {
    Params::parse_request(request, body, state.config.http.param_limit).ok()
}

/// The logout parameters this provider reads, as given.
fn passed_through(params: &Params) -> impl Iterator<Item = (&'static str, &str)> {
    PASSED_THROUGH.into_iter().filter_map(|name| params.get(name).map(|value| (name, value)))
}

/// Reads the hint, the client (named by the hint or by `client_id`, which must agree) and the return URL.
fn check_request(state: &AppState, params: &Params) -> Result<Logout, &'static str> {
    let hint = match params.get("id_token_hint") {
        Some(token) => {
            Some(read_hint(state, token).ok_or("The id_token_hint is not a valid ID token of this provider.")?)
        }
        None => None,
    };
    let client_id = match (&hint, params.get("client_id")) {
        (Some(hint), Some(named)) if hint.client_id != named => {
            return Err("client_id does not match the id_token_hint.")
        }
        (Some(hint), _) => Some(hint.client_id.as_str()),
        (None, named) => named,
    };
    let client = client_id.and_then(|id| state.directory().client(id).cloned());
    let return_url = return_url(params, client.as_ref())?;
    Ok(Logout { hint, client, return_url })
}

fn cancelled_page(state: &AppState) -> HttpResponse {
    let view =
        ErrorView { lang: "en", title: "Sign-out cancelled", message: "You are still signed in.", error_code: None };
    html_response(StatusCode::OK, state.pages.error(&view), None)
}

/// Ends the browser's session (revoking its grants), clears the cookie, and redirects or shows the logged-out page.
async fn end_session(
    state: &AppState,
    session: Option<Handle>,
    return_url: Option<&str>,
    client_id: Option<&str>,
) -> HttpResponse {
    if let Some(session) = session {
        // The subject only for the audit record (hashed); a session already gone ends nothing.
        let user_id = match state.shards.execute(session.shard, GetSession { id: session.id }).await {
            Ok(found) => Some(found.authentication.user_id),
            Err(_) => None,
        };
        let op = EndSession { session: session.id, keep_offline: state.config.logout.keep_offline_tokens };
        if state.shards.execute(session.shard, op).await.is_err() {
            return unavailable_page(state);
        }
        let outcome = if user_id.is_some() { "session_ended" } else { "no_session" };
        observe::logout(state, client_id, user_id.as_deref(), outcome);
    } else {
        observe::logout(state, client_id, None, "no_session");
    }
    let mut response = match return_url {
        Some(url) => see_other(url),
        None => {
            html_response(StatusCode::OK, state.pages.logged_out(&LoggedOutView { lang: "en", return_url: None }), None)
        }
    };
    let _ = response.add_cookie(&state.browser.clear_session_cookie());
    response
}

fn invalid(state: &AppState, message: &str) -> HttpResponse {
    error_page(state, StatusCode::BAD_REQUEST, "Sign-out failed", message)
}

/// Verifies the hint's signature, issuer and kind; an expired ID token is still a valid hint.
fn read_hint(state: &AppState, token: &str) -> Option<Hint> {
    let (header, claims) = state.keys.load().verify(token).ok()?;
    if !is_id_token(&header, &claims) || claims.get("iss").and_then(Value::as_str) != Some(state.issuer.as_str()) {
        return None;
    }
    let client_id = match claims.get("aud")? {
        Value::String(aud) => aud.clone(),
        Value::Array(auds) => {
            claims.get("azp").and_then(Value::as_str).or(auds.first().and_then(Value::as_str))?.to_string()
        }
        _ => return None,
    };
    let subject = claims.get("sub").and_then(Value::as_str)?.to_string();
    let sid = claims.get("sid").and_then(Value::as_str).map(str::to_string);
    Some(Hint { client_id, subject, sid })
}

/// RFC 8725 §3.11: the key ring also signs access tokens (RFC 9068 `typ: at+jwt`, with `client_id` and `scope`,
/// `client_credentials` ones included); only an ID token (`typ` absent or `JWT`, `aud` the client) is a hint.
fn is_id_token(header: &JwtHeader, claims: &Claims) -> bool {
    let typ_ok = header.typ.as_deref().is_none_or(|typ| typ.eq_ignore_ascii_case("JWT"));
    typ_ok && !claims.contains_key("client_id") && !claims.contains_key("scope")
}

/// The redirect after logout: only a URI registered for the client, with `state` appended.
fn return_url(params: &Params, client: Option<&Arc<Client>>) -> Result<Option<String>, &'static str> {
    let Some(uri) = params.get("post_logout_redirect_uri") else { return Ok(None) };
    let client = client.ok_or("post_logout_redirect_uri needs id_token_hint or client_id.")?;
    if !client.post_logout_redirect_uris.iter().any(|registered| registered == uri) {
        return Err("The post_logout_redirect_uri is not registered for this application.");
    }
    let Some(client_state) = params.get("state") else { return Ok(Some(uri.to_string())) };
    let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("state", client_state).finish();
    let separator = if uri.contains('?') { '&' } else { '?' };
    Ok(Some(format!("{uri}{separator}{query}")))
}

/// Whether the hint was issued in the browser's current session (then no confirmation is needed).
async fn hint_matches_session(state: &AppState, session: Option<Handle>, hint: Option<&Hint>) -> bool {
    let (Some(session), Some(hint)) = (session, hint) else { return false };
    match state.shards.execute(session.shard, GetSession { id: session.id }).await {
        Ok(record) => {
            record.authentication.user_id == hint.subject && hint.sid.as_deref().is_none_or(|sid| sid == record.sid)
        }
        // An ended session has nothing to confirm.
        Err(ShardError::NotFound) => true,
        Err(_) => false,
    }
}

fn confirm_page(request: &HttpRequest, state: &AppState, params: &Params, client: Option<&Client>) -> HttpResponse {
    let (browser_id, new_cookie) = state.browser.browser_id(request);
    let csrf = state.browser.csrf_token(&browser_id, "logout");
    let fields: Vec<(String, String)> =
        passed_through(params).map(|(name, value)| (name.to_string(), value.to_string())).collect();
    let view = LogoutConfirmView {
        lang: "en",
        csrf: &csrf,
        client_name: client.map(|client| client.name.as_str()),
        fields: &fields,
    };
    let mut response = html_response(StatusCode::OK, state.pages.logout_confirm(&view), None);
    if let Some(cookie) = new_cookie {
        let _ = response.add_cookie(&cookie);
    }
    response
}
