//! The admin API's error body: `{"error": "...", "error_description": "...", "field": "...", "reason": "..."}`.
//! `error` is a stable machine-readable kind; `field` (a JSON path such as `redirect_uris[0]`) and `reason` say what
//! is wrong with the input when the input is at fault (400).

use crate::directory::store::DirectoryStoreError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// `invalid_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `unavailable`, `server_error`.
    pub error: &'static str,
    pub field: Option<String>,
    pub reason: String,
    /// The `WWW-Authenticate` value of a 401 or 403.
    pub challenge: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        Self { status, error, field: None, reason: reason.into(), challenge: None }
    }

    /// 400: `field` is wrong for `reason`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: Some(field.into()), ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", reason) }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{} does not exist", what.into()))
    }

    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", reason)
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason)
    }

    pub fn with_challenge(mut self, challenge: impl Into<String>) -> Self {
        self.challenge = Some(challenge.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(formatter, "{}: {field}: {}", self.error, self.reason),
            None => write!(formatter, "{}: {}", self.error, self.reason),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"error": self.error, "error_description": self.to_string(), "reason": self.reason});
        if let Some(field) = &self.field {
            body["field"] = field.as_str().into();
        }
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(challenge) = &self.challenge {
            response.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
        }
        response.json(body)
    }
}

/// Maps a directory store error: the config rules' "field: reason" to 400, taken ids and clashing usernames to
/// 409, unknown ids to 404, the replica's failures to 503.
impl From<DirectoryStoreError> for ApiError {
    fn from(error: DirectoryStoreError) -> Self {
        match error {
            DirectoryStoreError::Invalid { reason, .. } => match reason.split_once(": ") {
                Some((field, reason)) if !field.contains(' ') => Self::invalid(field, reason),
                _ => Self::invalid("", reason),
            },
            DirectoryStoreError::Exists(what) => Self::conflict(format!("{what} already exists")),
            DirectoryStoreError::NotFound(what) => Self::not_found(what),
            DirectoryStoreError::Directory(error) => Self::conflict(error.to_string()),
            DirectoryStoreError::Replica(error) => Self::unavailable(format!("directory store: {error}")),
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", other.to_string()),
        }
    }
}

/// Parses a JSON body, naming the field at fault (`serde_path_to_error`).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::invalid("", "a JSON body is required"));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { String::new() } else { path };
        let inner = error.into_inner();
        // The message names unknown or missing fields; values are not echoed beyond serde's own short quote.
        let reason = inner.to_string();
        let reason = reason.split(" at line ").next().unwrap_or_default().to_string();
        ApiError::invalid(field, reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        uris: Vec<String>,
    }

    #[test]
    fn parse_errors_name_the_field() {
        let error = parse_body::<Body>(br#"{"name": "x", "uris": ["a", 3]}"#).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.field.as_deref(), Some("uris[1]"));
        assert!(error.reason.starts_with("invalid type: integer"), "{}", error.reason);
        let error = parse_body::<Body>(br#"{"name": "x", "uris": [], "colour": 1}"#).unwrap_err();
        assert!(error.reason.starts_with("unknown field `colour`"), "{}", error.reason);
        let error = parse_body::<Body>(br#"{"uris": []}"#).unwrap_err();
        assert_eq!(error.reason, "missing field `name`");
        assert_eq!(parse_body::<Body>(b"").unwrap_err().reason, "a JSON body is required");
        assert_eq!(parse_body::<Body>(b"{not json").unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn store_errors_map_to_rest_statuses() {
        let invalid = DirectoryStoreError::Invalid {
            entry: "client `x`".into(),
            reason: "redirect_uris[0]: must be an absolute URL without a fragment".into(),
        };
        let error = ApiError::from(invalid);
        assert_eq!((error.status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("redirect_uris[0]")));
        assert_eq!(error.reason, "must be an absolute URL without a fragment");
        assert_eq!(ApiError::from(DirectoryStoreError::Exists("client `x`".into())).status, StatusCode::CONFLICT);
        assert_eq!(ApiError::from(DirectoryStoreError::NotFound("user `y`".into())).status, StatusCode::NOT_FOUND);
    }
}
