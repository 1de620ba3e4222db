//! What the provider knows of a browser: its SSO session cookie, and the binding cookie that CSRF tokens of the
//! login, consent and logout forms are tied to.
//!
//! Every cookie is HttpOnly, SameSite=Lax, `Path=/`, and Secure when the issuer is https.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::HttpRequest;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idp_proto::{Handle, RecordId};

pub const SESSION_COOKIE: &str = "idp_session";
pub const BROWSER_COOKIE: &str = "idp_browser";

/// Signs and checks CSRF tokens; the key is shared by every node (derived from the key-encryption key).
pub struct BrowserBinding {
    key: hmac::Key,
    secure: bool,
}

impl BrowserBinding {
    pub fn new(key: [u8; 32], secure: bool) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, &key), secure }
    }

    /// The browser's binding value, and the cookie to set when it had none.
    pub fn browser_id(&self, request: &HttpRequest) -> (String, Option<Cookie<'static>>) {
        match request.cookie(BROWSER_COOKIE).map(|cookie| cookie.value().to_string()) {
            Some(value) if is_token(&value) => (value, None),
            _ => {
                let value = RecordId::random().to_base64();
                let cookie = self.cookie(BROWSER_COOKIE, value.clone(), None);
                (value, Some(cookie))
            }
        }
    }

    /// A CSRF token for a form about `subject` (a pending authorization's handle, or "logout").
    pub fn csrf_token(&self, browser_id: &str, subject: &str) -> String {
        let tag = hmac::sign(&self.key, format!("csrf\0{browser_id}\0{subject}").as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether a posted CSRF token was issued to this browser for this subject.
    pub fn check_csrf(&self, request: &HttpRequest, subject: &str, token: Option<&str>) -> bool {
        let (Some(cookie), Some(token)) = (request.cookie(BROWSER_COOKIE), token) else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        let message = format!("csrf\0{}\0{subject}", cookie.value());
        hmac::verify(&self.key, message.as_bytes(), &tag).is_ok()
    }

    pub fn session_cookie(&self, session: Handle, max_age_secs: u64) -> Cookie<'static> {
        self.cookie(SESSION_COOKIE, session.encode(), Some(max_age_secs))
    }

    pub fn clear_session_cookie(&self) -> Cookie<'static> {
        self.cookie(SESSION_COOKIE, String::new(), Some(0))
    }

    fn cookie(&self, name: &'static str, value: String, max_age_secs: Option<u64>) -> Cookie<'static> {
        let mut cookie =
            Cookie::build(name, value).path("/").http_only(true).same_site(SameSite::Lax).secure(self.secure);
        if let Some(seconds) = max_age_secs {
            cookie = cookie.max_age(CookieDuration::seconds(seconds.min(i64::MAX as u64) as i64));
        }
        cookie.finish()
    }
}

/// The browser's SSO session handle, when it sent a well-formed one.
pub fn session_handle(request: &HttpRequest, shard_count: u16) -> Option<Handle> {
    let cookie = request.cookie(SESSION_COOKIE)?;
    Handle::decode(cookie.value(), shard_count).ok()
}

/// Whether a request came without any of the provider's cookies. Every one is SameSite=Lax, so this is what a
/// browser sends on a cross-site POST even when it has a live session and a binding.
pub fn carries_no_cookie(request: &HttpRequest) -> bool {
    request.cookie(SESSION_COOKIE).is_none() && request.cookie(BROWSER_COOKIE).is_none()
}

fn is_token(value: &str) -> bool {
    value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
