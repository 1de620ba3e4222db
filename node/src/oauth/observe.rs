//! What the endpoints report: the metric and, where it matters, the audit event of each outcome. Handlers call
//! one function per outcome; names live in `telemetry::metrics`, event shapes in `audit`.

use crate::audit::AuditEvent;
use crate::oauth::errors::OAuthError;
use crate::state::AppState;
use crate::telemetry::metrics as m;
use idp_actors::shard::model::ShardError;
use idp_proto::ErrorCode;
use std::time::Duration;

/// Why a login failed, as the metric label and the audit `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginFailure {
    BadCredentials,
    MissingCredentials,
    Locked,
    Unavailable,
}

impl LoginFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadCredentials => "bad_credentials",
            Self::MissingCredentials => "missing_credentials",
            Self::Locked => "locked",
            Self::Unavailable => "unavailable",
        }
    }
}

pub fn login_succeeded(state: &AppState, client_id: &str, user_id: &str) {
    m::authentication("pwd", "ok");
    state.audit.emit(AuditEvent::LoginSucceeded {
        client_id: client_id.to_string(),
        subject: state.audit.subject(user_id),
        method: "pwd".into(),
    });
}

pub fn login_failed(state: &AppState, client_id: &str, failure: LoginFailure) {
    m::authentication("pwd", failure.as_str());
    state.audit.emit(AuditEvent::LoginFailed { client_id: client_id.to_string(), reason: failure.as_str().into() });
}

/// A sign-in through an upstream provider succeeded: method `fed` in the metric, `upstream:<id>` in the audit
/// record (upstream ids come from the directory, a bounded set).
pub fn brokered_login_succeeded(state: &AppState, client_id: &str, user_id: &str, upstream: &str) {
    m::authentication("fed", "ok");
    state.audit.emit(AuditEvent::LoginSucceeded {
        client_id: client_id.to_string(),
        subject: state.audit.subject(user_id),
        method: format!("upstream:{upstream}"),
    });
}

/// A sign-in through an upstream provider failed (the upstream's failure, or the broker's refusal): reason
/// `upstream_error` in the metric and the audit record; the per-upstream reason is in
/// `idp_federation_failures_total`.
pub fn brokered_login_failed(state: &AppState, client_id: &str) {
    m::authentication("fed", "upstream_error");
    state.audit.emit(AuditEvent::LoginFailed { client_id: client_id.to_string(), reason: "upstream_error".into() });
}

pub fn consent_granted(state: &AppState, client_id: &str, user_id: &str, scopes: &[String]) {
    state.audit.emit(AuditEvent::ConsentGranted {
        client_id: client_id.to_string(),
        subject: state.audit.subject(user_id),
        scopes: scopes.to_vec(),
    });
}

/// The grant type label: one of the supported grants, else `unsupported` (the value is never echoed).
pub fn grant_label(grant_type: Option<&str>) -> &'static str {
    match grant_type {
        Some("authorization_code") => "authorization_code",
        Some("refresh_token") => "refresh_token",
        Some("client_credentials") => "client_credentials",
        _ => "unsupported",
    }
}

/// Tokens handed out by the token endpoint or the authorization endpoint (`grant_type` `implicit`/`hybrid`).
pub struct Issued<'a> {
    pub client_id: &'a str,
    pub grant_type: &'static str,
    pub user_id: Option<&'a str>,
    pub scopes: &'a [String],
    pub access_token: bool,
    pub id_token: bool,
    pub refresh_token: bool,
}

pub fn tokens_issued(state: &AppState, issued: &Issued<'_>) {
    let kinds =
        [(issued.access_token, "access_token"), (issued.id_token, "id_token"), (issued.refresh_token, "refresh_token")];
    let mut tokens = Vec::with_capacity(3);
    // Anyone may register a client where registration is open: those share one label value, so that the series
    // stay bounded by the clients an operator declared.
    let dynamic = state.directory().client(issued.client_id).is_some_and(|client| client.is_dynamically_registered());
    let label = if dynamic { m::DYNAMIC_CLIENT } else { issued.client_id };
    for (_, kind) in kinds.iter().filter(|(given, _)| *given) {
        m::tokens_issued(kind, issued.grant_type, label);
        tokens.push((*kind).to_string());
    }
    state.audit.emit(AuditEvent::TokenIssued {
        client_id: issued.client_id.to_string(),
        grant_type: issued.grant_type.into(),
        subject: issued.user_id.map(|user_id| state.audit.subject(user_id)),
        tokens,
        scopes: issued.scopes.to_vec(),
    });
}

/// The outcome of one token request.
pub fn token_request(grant_type: &'static str, error: Option<&OAuthError>, elapsed: Duration) {
    let code = error.map_or("none", |error| error.code.as_str());
    m::token_request(grant_type, code, elapsed);
    if error.is_some_and(|error| error.code == ErrorCode::InvalidScope) {
        m::scope_rejection("token");
    }
}

/// A shard refused a code redemption or refresh: replay and reuse detections, refresh failure reasons.
pub fn grant_refused(state: &AppState, grant_type: &'static str, client_id: &str, error: &ShardError) {
    match error {
        ShardError::CodeReplayed => {
            m::code_replay();
            state.audit.emit(AuditEvent::CodeReplayDetected { client_id: client_id.to_string() });
        }
        ShardError::RefreshReused => {
            m::refresh_reuse();
            m::refresh_failure("reuse");
            state.audit.emit(AuditEvent::RefreshReuseDetected { client_id: client_id.to_string() });
        }
        _ if grant_type == "refresh_token" => m::refresh_failure(refresh_reason(error)),
        _ => {}
    }
}

/// Why a refresh was refused, from the shard's answer.
pub fn refresh_reason(error: &ShardError) -> &'static str {
    match error {
        ShardError::RefreshReused => "reuse",
        ShardError::NotFound => "expired",
        ShardError::InvalidGrant(reason) if reason.contains("revoked") => "revoked",
        ShardError::InvalidScope => "scope",
        ShardError::Unavailable(_) | ShardError::Moved => "unavailable",
        _ => "invalid",
    }
}

pub fn token_revoked(state: &AppState, client_id: &str, token_kind: &'static str) {
    state.audit.emit(AuditEvent::TokenRevoked { client_id: client_id.to_string(), token_kind: token_kind.into() });
}

/// `session_ended`, `no_session` or `rejected`.
pub fn logout(state: &AppState, client_id: Option<&str>, user_id: Option<&str>, outcome: &'static str) {
    m::logout(outcome);
    state.audit.emit(AuditEvent::Logout {
        client_id: client_id.map(str::to_string),
        subject: user_id.map(|user_id| state.audit.subject(user_id)),
        outcome: outcome.into(),
    });
}

/// An authorization request refused: `error` is the OAuth code sent back, or `unknown_client`,
/// `redirect_uri_mismatch`, `malformed` for the ones shown as a page.
pub fn authorize_error(error: &'static str) {
    m::authorize_error(error);
    if error == ErrorCode::InvalidScope.as_str() {
        m::scope_rejection("authorize");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn refresh_failures_are_classified_by_the_shards_answer() {
        assert_eq!(refresh_reason(&ShardError::RefreshReused), "reuse");
        assert_eq!(refresh_reason(&ShardError::NotFound), "expired");
        assert_eq!(refresh_reason(&ShardError::InvalidGrant(Cow::Borrowed("refresh token was revoked"))), "revoked");
        assert_eq!(refresh_reason(&ShardError::InvalidGrant(Cow::Borrowed("client mismatch"))), "invalid");
        assert_eq!(refresh_reason(&ShardError::InvalidScope), "scope");
        assert_eq!(refresh_reason(&ShardError::Moved), "unavailable");
    }

    #[test]
    fn grant_labels_never_echo_the_request() {
        assert_eq!(grant_label(Some("refresh_token")), "refresh_token");
        assert_eq!(grant_label(Some("password")), "unsupported");
        assert_eq!(grant_label(None), "unsupported");
    }
}
