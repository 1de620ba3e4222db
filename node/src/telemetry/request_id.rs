//! The request id: taken from `X-Request-Id` when it is sane, else generated; returned in the response, attached to
//! the request's `tracing` span and to audit events, and carried over the internal RPC hop. The middleware here
//! also records the HTTP metrics of every request.

use super::metrics as m;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use std::time::Instant;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";
/// Longest accepted incoming id.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `future` as part of request `id` (the RPC server does this for a forwarded operation).
pub async fn scope<F: std::future::Future>(id: String, future: F) -> F::Output {
    REQUEST_ID.scope(id, future).await
}

/// An incoming id is kept when it is 1 to 128 characters of `[A-Za-z0-9._:-]` (no spaces, no control characters,
/// nothing a log parser could trip on); anything else is replaced.
pub fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'))
}

/// A fresh id: 128 random bits, hex.
pub fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The endpoint label of a path: a fixed set, so no request can add a label value.
pub fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/.well-known/openid-configuration" => "discovery",
        "/jwks" => "jwks",
        "/authorize" => "authorize",
        "/authorize/resume" => "authorize_resume",
        "/login" => "login",
        "/consent" => "consent",
        "/token" => "token",
        "/userinfo" => "userinfo",
        "/introspect" => "introspect",
        "/revoke" => "revoke",
        "/logout" => "logout",
        "/healthz" => "healthz",
        _ if path.starts_with("/static/") => "static",
        _ if path == "/register" || path.starts_with("/register/") => "register",
        _ => "other",
    }
}

/// Middleware of the public listener: request id, span, metrics.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let endpoint = endpoint_of(request.path());
    observe(request, next, endpoint).await
}

/// Middleware of the admin listener: the same, every path under the one endpoint label `admin`.
pub async fn admin_middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    observe(request, next, "admin").await
}

async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
    endpoint: &'static str,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let incoming = request.headers().get(HEADER).and_then(|value| value.to_str().ok()).filter(|id| is_sane(id));
    let id = incoming.map_or_else(generate, str::to_string);
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), endpoint);
    let started = Instant::now();
    let header_value = HeaderValue::from_str(&id).ok();
    let handled = async move {
        let result = next.call(request).await;
        let status = match &result {
            Ok(response) => response.status().as_u16(),
            Err(error) => error.as_response_error().status_code().as_u16(),
        };
        let elapsed = started.elapsed();
        m::http_request(endpoint, status, elapsed);
        tracing::debug!(status, elapsed_us = elapsed.as_micros() as u64, "request handled");
        result
    };
    let mut response = REQUEST_ID.scope(id, handled.instrument(span)).await?;
    if let Some(value) = header_value {
        response.headers_mut().insert(HeaderName::from_static(HEADER), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_short_and_of_safe_characters() {
        assert!(is_sane("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(is_sane("req-1.a_b:c"));
        for bad in ["", "a b", "a\nb", "é", "a\"b", "{}", &"x".repeat(MAX_LEN + 1)] {
            assert!(!is_sane(bad), "{bad:?}");
        }
        assert!(is_sane(&"x".repeat(MAX_LEN)));
    }

    #[test]
    fn generated_ids_are_sane_and_distinct() {
        let (first, second) = (generate(), generate());
        assert!(is_sane(&first) && first.len() == 32);
        assert_ne!(first, second);
    }

    #[test]
    fn endpoints_are_a_fixed_set() {
        assert_eq!(endpoint_of("/token"), "token");
        assert_eq!(endpoint_of("/.well-known/openid-configuration"), "discovery");
        assert_eq!(endpoint_of("/static/logo"), "static");
        assert_eq!(endpoint_of("/token/../x"), "other");
        assert_eq!(endpoint_of("/anything-else"), "other");
    }

    #[actix_web::test]
    async fn the_current_id_is_visible_inside_the_scope_only() {
        assert_eq!(current(), None);
        let seen = scope("abc".into(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("abc"));
    }
}
