//! The authorization endpoint (RFC 6749 §4.1.1, OIDC Core §3.1.2): validate, then log in, ask consent, or answer.
//!
//! Until the client and an exactly registered redirect URI are known, every error is a page and never a redirect
//! (RFC 6749 §4.1.2.1, RFC 9700 §4.1: no open redirector). After that, errors go back to the client in the
//! requested response mode, with `state` echoed exactly and `iss` (RFC 9207), never with a code.

use crate::directory::Client;
use crate::oauth::browser::carries_no_cookie;
use crate::oauth::flow::{self, Browser};
use crate::oauth::params::{content_type, is_form, parse_scope, ParamError, Params};
use crate::oauth::respond::{error_page, see_other_as_get, AuthorizationReply, Target};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use idp_proto::records::{AuthorizationRequest, Prompt, ResponseMode, ResponseType};
use idp_proto::ErrorCode;
use std::sync::Arc;

/// `GET /authorize` and `POST /authorize` (OIDC Core §3.1.2.1: both must be supported).
pub async fn authorize_route(request: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let max_len = state.config.http.param_limit;
    let (params, encoded) = if request.method() == actix_web::http::Method::POST {
        let content_type = content_type(&request);
        (Params::parse_form(content_type, &body, max_len), is_form(content_type).then_some(&body[..]))
    } else {
        (Params::parse(request.query_string().as_bytes(), max_len), Some(request.query_string().as_bytes()))
    };
    let params = match params {
        Ok(params) => params,
        Err(error) => return refuse_unparsed(&state, encoded, &error),
    };
    let directory = state.directory();
    let (client, target) = match identify_client(&params, &directory) {
        Ok(found) => found,
        Err(message) => {
            crate::oauth::observe::authorize_error(page_error_label(message));
            return error_page(&state, StatusCode::BAD_REQUEST, "Invalid request", message);
        }
    };
    let authorization = match validate(&params, &client, &target) {
        Ok(authorization) => authorization,
        Err(error) => {
            crate::oauth::observe::authorize_error(error.code.as_str());
            return AuthorizationReply::error(&target, error.code, &error.description).render(&state);
        }
    };
    drop(directory);
    // A cross-site POST carries no SameSite=Lax cookie: the equivalent top-level GET sees the session and keeps
    // the binding (no new cookie overwrites the one other tabs' CSRF tokens are tied to).
    if request.method() == actix_web::http::Method::POST && carries_no_cookie(&request) {
        return see_other_as_get(&state, "/authorize", url::form_urlencoded::parse(&body));
    }
    let browser = Browser::from_request(&request, &state);
    flow::start(&state, client, authorization, browser).await
}

/// The metric label of a request refused with a page (the client or its redirect URI cannot be trusted).
fn page_error_label(message: &str) -> &'static str {
    if message == REDIRECT_MISMATCH {
        "redirect_uri_mismatch"
    } else if message == UNKNOWN_CLIENT {
        "unknown_client"
    } else {
        "invalid_request"
    }
}

const UNKNOWN_CLIENT: &str = "The application is not registered.";
const REDIRECT_MISMATCH: &str = "The redirect_uri is not registered for this application.";

/// A request whose parameters do not parse (one repeated or too long): `invalid_request` back to the client when
/// its id and redirect URI are each given once and registered (RFC 6749 §4.1.2.1), else a page.
fn refuse_unparsed(state: &AppState, encoded: Option<&[u8]>, error: &ParamError) -> HttpResponse {
    let unique = encoded.map(|encoded| Params::parse_unique(encoded, state.config.http.param_limit));
    let found = unique.as_ref().map(|params| identify_client(params, &state.directory()));
    match found {
        Some(Ok((_, target))) => AuthorizationReply::error(&target, error.code, &error.description).render(state),
        _ => error_page(state, StatusCode::BAD_REQUEST, "Invalid request", &error.description),
    }
}

/// Finds the client and its exactly registered redirect URI, or says why not (shown as a page).
fn identify_client(
    params: &Params,
    directory: &crate::directory::Directory,
) -> Result<(Arc<Client>, Target), &'static str> {
    let client_id = params.get("client_id").ok_or("The request has no client_id.")?;
    let client = directory.client(client_id).ok_or(UNKNOWN_CLIENT)?.clone();
    let redirect_uri = params.get("redirect_uri").ok_or("The request has no redirect_uri.")?;
    // Exact string comparison (RFC 9700 §4.1.3): no prefix, no normalisation.
    if !client.redirect_uris.iter().any(|registered| registered == redirect_uri) {
        return Err(REDIRECT_MISMATCH);
    }
    let response_type = params.get("response_type").and_then(ResponseType::parse);
    let default_mode = match response_type {
        Some(response_type) if response_type.is_front_channel_token() => ResponseMode::Fragment,
        _ => ResponseMode::Query,
    };
    let mode = match params.get("response_mode").and_then(ResponseMode::parse) {
        // Tokens never travel in a query string (OAuth Multiple Response Types §5).
        Some(ResponseMode::Query) if default_mode == ResponseMode::Fragment => default_mode,
        Some(mode) => mode,
        None => default_mode,
    };
    let target =
        Target { redirect_uri: redirect_uri.to_string(), mode, state: params.get("state").map(str::to_string) };
    Ok((client, target))
}

/// Validates everything but the client and redirect URI; errors go back to the client.
fn validate(params: &Params, client: &Client, target: &Target) -> Result<AuthorizationRequest, ParamError> {
    // OIDC Core §6: request objects are not supported yet.
    if params.contains("request") {
        return Err(ParamError::new(ErrorCode::RequestNotSupported, "request objects are not supported"));
    }
    if params.contains("request_uri") {
        return Err(ParamError::new(ErrorCode::RequestUriNotSupported, "request_uri is not supported"));
    }
    let response_type_text = params.require("response_type")?;
    let response_type = ResponseType::parse(response_type_text)
        .ok_or_else(|| ParamError::new(ErrorCode::UnsupportedResponseType, "unsupported response_type"))?;
    if !client.allows_response_type(response_type) {
        return Err(ParamError::new(ErrorCode::UnauthorizedClient, "response_type not allowed for this client"));
    }
    if let Some(mode) = params.get("response_mode") {
        match ResponseMode::parse(mode) {
            None => return Err(ParamError::invalid("unsupported response_mode")),
            Some(ResponseMode::Query) if response_type.is_front_channel_token() => {
                return Err(ParamError::invalid("response_mode query cannot carry tokens"));
            }
            Some(_) => {}
        }
    }
    let mut scopes =
        parse_scope(params.get("scope").ok_or_else(|| ParamError::new(ErrorCode::InvalidScope, "scope is required"))?)?;
    if let Some(unknown) = scopes.iter().find(|scope| !client.allows_scope(scope)) {
        return Err(ParamError::new(ErrorCode::InvalidScope, format!("scope {unknown} is not allowed")));
    }
    let openid = scopes.iter().any(|scope| scope == "openid");
    if response_type.id_token && !openid {
        return Err(ParamError::new(ErrorCode::InvalidScope, "id_token responses need the openid scope"));
    }
    // OIDC Core §11: offline_access is ignored unless a code is issued (and with it a refresh token).
    if !response_type.code || !openid {
        scopes.retain(|scope| scope != "offline_access");
    }
    let nonce = params.get("nonce").map(str::to_string);
    // OIDC Core §3.2.2.1, §3.3.2.11: nonce is required by the implicit and every hybrid flow (`code token` too);
    // the code flow alone may omit it (§3.1.2.1).
    if openid && (response_type.id_token || response_type.token) && nonce.is_none() {
        return Err(ParamError::invalid("nonce is required for this response_type"));
    }
    let code_challenge = validate_pkce(params, client, response_type)?;
    let prompt = parse_prompt(params.get("prompt"))?;
    let max_age = match params.get("max_age") {
        Some(text) => {
            Some(text.parse::<u64>().map_err(|_| ParamError::invalid("max_age must be a non-negative integer"))?)
        }
        None => None,
    };
    // RFC 8707 §2: a resource the client may not ask for is `invalid_target`; none means the client's default.
    let requested = crate::directory::requested_audience(params.get("resource"), params.get("audience"))?;
    let resource = requested.map(|audience| client.resolve_audience(Some(audience))).transpose()?;
    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri: target.redirect_uri.clone(),
        response_type,
        response_mode: target.mode,
        scopes,
        state: target.state.clone(),
        nonce,
        code_challenge,
        prompt,
        max_age,
        login_hint: params.get("login_hint").map(str::to_string),
        idp_hint: params.get("idp_hint").map(str::to_string),
        ui_locales: params.get("ui_locales").map(str::to_string),
        acr_values: params.get("acr_values").map(str::to_string),
        resource,
    })
}

/// RFC 7636 §4.3: S256 only (`plain` refused); required for public clients using a code.
fn validate_pkce(params: &Params, client: &Client, response_type: ResponseType) -> Result<Option<String>, ParamError> {
    let challenge = params.get("code_challenge");
    let method = params.get("code_challenge_method");
    match (challenge, method) {
        (None, Some(_)) => Err(ParamError::invalid("code_challenge_method without code_challenge")),
        (None, None) if client.is_public() && response_type.code => {
            Err(ParamError::invalid("PKCE (code_challenge with S256) is required for public clients"))
        }
        (None, None) => Ok(None),
        (Some(_), None) | (Some(_), Some("plain")) => Err(ParamError::invalid("code_challenge_method must be S256")),
        (Some(_), Some(other)) if other != "S256" => Err(ParamError::invalid("unsupported code_challenge_method")),
        (Some(challenge), Some(_)) => {
            // An S256 challenge is the base64url of 32 bytes: 43 characters.
            let well_formed =
                challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if well_formed {
                Ok(Some(challenge.to_string()))
            } else {
                Err(ParamError::invalid("code_challenge is malformed"))
            }
        }
    }
}

/// OIDC Core §3.1.2.1: `none` stands alone.
fn parse_prompt(text: Option<&str>) -> Result<Prompt, ParamError> {
    let mut prompt = Prompt::default();
    let Some(text) = text else { return Ok(prompt) };
    for value in text.split(' ') {
        match value {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            "select_account" => prompt.select_account = true,
            _ => return Err(ParamError::invalid("unsupported prompt value")),
        }
    }
    if prompt.none && (prompt.login || prompt.consent || prompt.select_account) {
        return Err(ParamError::invalid("prompt=none cannot be combined with other values"));
    }
    Ok(prompt)
}
