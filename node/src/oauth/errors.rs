//! Error responses of the direct (back-channel) endpoints: a JSON body `{error, error_description}` with the
//! status of the error code (RFC 6749 §5.2, RFC 6750 §3), never cached.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use idp_proto::ErrorCode;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// `WWW-Authenticate` challenge, e.g. `Basic realm="idp"` or `Bearer error="invalid_token"`.
    pub challenge: Option<String>,
    /// Seconds for `Retry-After` (throttling, unavailable state).
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self { code, description: description.into(), challenge: None, retry_after: None }
    }

    pub fn with_challenge(mut self, challenge: impl Into<String>) -> Self {
        self.challenge = Some(challenge.into());
        self
    }

    pub fn response(&self) -> HttpResponse {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            error_description: &'a str,
        }
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CACHE_CONTROL, "no-store")).insert_header((header::PRAGMA, "no-cache"));
        if let Some(challenge) = &self.challenge {
            response.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
        }
        if let Some(seconds) = self.retry_after.or((self.code == ErrorCode::TemporarilyUnavailable).then_some(1)) {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(Body { error: self.code.as_str(), error_description: &self.description })
    }
}

impl From<crate::oauth::params::ParamError> for OAuthError {
    fn from(error: crate::oauth::params::ParamError) -> Self {
        Self::new(error.code, error.description)
    }
}

impl From<idp_actors::shard::model::ShardError> for OAuthError {
    fn from(error: idp_actors::shard::model::ShardError) -> Self {
        use idp_actors::shard::model::ShardError;
        let description = match &error {
            // The replica's own message stays in the logs.
            ShardError::Unavailable(detail) => {
                tracing::warn!(%detail, "state unavailable");
                "state temporarily unavailable, retry".to_string()
            }
            other => other.to_string(),
        };
        Self::new(error.error_code(), description)
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.code, self.description)
    }
}

pub type OAuthResult<T> = Result<T, OAuthError>;
