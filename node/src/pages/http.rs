//! The HTTP side of the pages: security headers of every HTML response, and the static files they use.

use super::Pages;
use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use std::sync::Arc;

/// The policy of every HTML page. No inline script or style anywhere and nothing from another origin. `form-action`
/// stays open because browsers (Chrome, Safari) check it against the redirect that follows a form submission too
/// (w3c/webappsec-csp#8), and the login, consent and logout forms end in a redirect to the client.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; frame-ancestors 'none'; form-action *";

const STYLE_CSS: &str = include_str!("../../static/style.css");
const FORM_POST_JS: &str = include_str!("../../static/form-post.js");
const CSS_CONTENT_TYPE: &str = "text/css; charset=utf-8";
const JS_CONTENT_TYPE: &str = "text/javascript; charset=utf-8";
const STATIC_CACHE_CONTROL: &str = "public, max-age=3600";
/// Disarms any script of an SVG logo opened on its own, on our origin.
const LOGO_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// An HTML response with every security header of the pages. `form_action_origin`: one more source allowed in the
/// CSP `form-action` (see [`form_action_source`]); anything that is not a plain source expression is ignored.
pub fn html_response(status: StatusCode, body: String, form_action_origin: Option<&str>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, content_security_policy(form_action_origin)))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .body(body)
}

/// [`CONTENT_SECURITY_POLICY`], with `form_action_origin` added to its last directive, `form-action`.
pub fn content_security_policy(form_action_origin: Option<&str>) -> String {
    match form_action_origin {
        Some(source) if is_csp_source(source) => format!("{CONTENT_SECURITY_POLICY} {source}"),
        Some(source) => {
            tracing::warn!(source, "form-action source refused: not a plain origin");
            CONTENT_SECURITY_POLICY.to_owned()
        }
        None => CONTENT_SECURITY_POLICY.to_owned(),
    }
}

/// The CSP source that allows a form to post to `action`: its origin (`https://rp.example:8443`), or its scheme
/// (`com.example.app:`) for a URL without one, such as a native app's redirect URI. `None` for a relative or invalid
/// URL.
pub fn form_action_source(action: &str) -> Option<String> {
    let url = url::Url::parse(action).ok()?;
    let origin = url.origin();
    let source = if origin.is_tuple() { origin.ascii_serialization() } else { format!("{}:", url.scheme()) };
    is_csp_source(&source).then_some(source)
}

/// A source expression that cannot end the directive or start another: no space, `;`, `,` or quote.
fn is_csp_source(source: &str) -> bool {
    !source.is_empty()
        && source
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.' | b':' | b'/' | b'[' | b']'))
}

fn static_response(content_type: &'static str, body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, STATIC_CACHE_CONTROL))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

impl Pages {
    /// Registers GET `/static/style.css`, `/static/brand.css`, `/static/form-post.js` and `/static/logo` (404 when
    /// no logo is configured), cacheable for an hour, with their content types and `nosniff`.
    pub fn configure_static(self: &Arc<Self>, config: &mut web::ServiceConfig) {
        let brand_css = self.brand.css.clone();
        let logo_opt = self.brand.logo_opt.clone();
        config
            .route(
                "/static/style.css",
                web::get().to(|| async { static_response(CSS_CONTENT_TYPE, Bytes::from_static(STYLE_CSS.as_bytes())) }),
            )
            .route(
                "/static/form-post.js",
                web::get()
                    .to(|| async { static_response(JS_CONTENT_TYPE, Bytes::from_static(FORM_POST_JS.as_bytes())) }),
            )
            .route(
                "/static/brand.css",
                web::get().to(move || {
                    let brand_css = brand_css.clone();
                    async move { static_response(CSS_CONTENT_TYPE, brand_css) }
                }),
            )
            .route(
                "/static/logo",
                web::get().to(move || {
                    let logo_opt = logo_opt.clone();
                    async move { logo_response(logo_opt) }
                }),
            );
    }
}

fn logo_response(logo_opt: Option<super::branding::Logo>) -> HttpResponse {
    match logo_opt {
        Some(logo) => {
            let mut response = static_response(logo.content_type, logo.bytes);
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(LOGO_CONTENT_SECURITY_POLICY),
            );
            response
        }
        None => HttpResponse::NotFound().insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff")).finish(),
    }
}
