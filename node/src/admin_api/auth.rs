//! Who may call the admin API: a client certificate chained to `admin.tls.client_ca` (mutual TLS on the admin
//! listener), or a Bearer access token of this issuer carrying the [`ADMIN_SCOPE`] scope.
//!
//! A client gets that scope only when its `scopes` list names it: `idp:admin` is not among the scopes a client
//! without a list may ask for, and `client_credentials` grants only scopes the client lists. The token is checked as
//! introspection checks it (signature against the key ring, `typ` `at+jwt`, issuer, expiry, grant or `jti` not
//! revoked), so revoking it at `/revoke` ends its admin access at once.

use super::error::ApiError;
use actix_web::http::StatusCode;

/// The scope an access token needs for the admin API.
pub const ADMIN_SCOPE: &str = "idp:admin";

/// What a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The SHA-256 fingerprint (hex) of a verified client certificate.
    pub certificate: Option<String>,
    pub authorization: Authorization,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    None,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    Bearer(TokenCheck),
}

/// The outcome of checking a Bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid {
        client_id: String,
        scopes: Vec<String>,
    },
    Invalid,
    /// The token's grant could not be looked up (its shard is moving): retry.
    Unavailable,
}

/// Who made an admin change, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Client(String),
    Certificate(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(client_id) => write!(formatter, "client:{client_id}"),
            Self::Certificate(fingerprint) => write!(formatter, "mtls:sha256:{fingerprint}"),
        }
    }
}

const CHALLENGE: &str = "Bearer realm=\"idp-admin\"";

/// RFC 6750 §3: 401 with a challenge without (or with bad) credentials, 403 `insufficient_scope` with a valid token
/// lacking the scope. A verified certificate is enough on its own; a Bearer token sent along must then still be
/// valid (a caller that sends a bad token is told so rather than silently let in by its certificate).
pub fn decide(presented: &Presented) -> Result<Actor, ApiError> {
    let unauthorized = |reason: &str, challenge: String| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).with_challenge(challenge)
    };
    let invalid_token = || {
        unauthorized("the access token is invalid, expired or revoked", format!("{CHALLENGE}, error=\"invalid_token\""))
    };
    match (&presented.certificate, &presented.authorization) {
        (_, Authorization::Malformed) => Err(unauthorized(
            "the Authorization header must be `Bearer <token>`",
            format!("{CHALLENGE}, error=\"invalid_request\""),
        )),
        (_, Authorization::Bearer(TokenCheck::Invalid)) => Err(invalid_token()),
        (_, Authorization::Bearer(TokenCheck::Unavailable)) => Err(ApiError::unavailable("retry")),
        (Some(fingerprint), _) => Ok(Actor::Certificate(fingerprint.clone())),
        (None, Authorization::None) => Err(unauthorized("credentials are required", CHALLENGE.into())),
        (None, Authorization::Bearer(TokenCheck::Valid { client_id, scopes })) => {
            if scopes.iter().any(|scope| scope == ADMIN_SCOPE) {
                Ok(Actor::Client(client_id.clone()))
            } else {
                let challenge = format!("{CHALLENGE}, error=\"insufficient_scope\", scope=\"{ADMIN_SCOPE}\"");
                Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("the {ADMIN_SCOPE} scope is required"))
                    .with_challenge(challenge))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(certificate: Option<&str>, authorization: Authorization) -> Presented {
        Presented { certificate: certificate.map(str::to_string), authorization }
    }

    fn token(scopes: &[&str]) -> Authorization {
        Authorization::Bearer(TokenCheck::Valid {
            client_id: "ops".into(),
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        })
    }

    #[test]
    fn every_combination_of_credentials() {
        let status = |presented: Presented| decide(&presented).map_err(|error| error.status);
        assert_eq!(status(presented(None, Authorization::None)), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(status(presented(None, Authorization::Malformed)), Err(StatusCode::UNAUTHORIZED));
        let invalid = Authorization::Bearer(TokenCheck::Invalid);
        assert_eq!(status(presented(None, invalid.clone())), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(status(presented(Some("ab"), invalid)), Err(StatusCode::UNAUTHORIZED));
        let unavailable = Authorization::Bearer(TokenCheck::Unavailable);
        assert_eq!(status(presented(None, unavailable)), Err(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(status(presented(None, token(&["read"]))), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(presented(None, token(&[]))), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(presented(None, token(&["read", "idp:admin"]))), Ok(Actor::Client("ops".into())));
        assert_eq!(status(presented(Some("ab"), Authorization::None)), Ok(Actor::Certificate("ab".into())));
        assert_eq!(status(presented(Some("ab"), token(&[]))), Ok(Actor::Certificate("ab".into())));
        // Prefix or case variants of the scope are other scopes.
        assert_eq!(status(presented(None, token(&["idp:admin:read", "IDP:ADMIN"]))), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let missing = decide(&presented(None, Authorization::None)).unwrap_err();
        assert_eq!(missing.challenge.as_deref(), Some("Bearer realm=\"idp-admin\""));
        let forbidden = decide(&presented(None, token(&[]))).unwrap_err();
        assert_eq!(
            forbidden.challenge.as_deref(),
            Some("Bearer realm=\"idp-admin\", error=\"insufficient_scope\", scope=\"idp:admin\"")
        );
        let invalid = decide(&presented(None, Authorization::Bearer(TokenCheck::Invalid))).unwrap_err();
        assert!(invalid.challenge.unwrap().ends_with("error=\"invalid_token\""));
    }
}
