//! Authorization responses (RFC 6749 §4.1.2, OAuth 2.0 Multiple Response Types, Form Post Response Mode) and the
//! provider's own error pages.

use crate::pages::{html_response, ErrorView, FormPostView};
use crate::state::AppState;
use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use idp_proto::records::ResponseMode;
use idp_proto::ErrorCode;

/// Where an authorization response goes: a registered redirect URI, in a response mode.
#[derive(Clone, Debug)]
pub struct Target {
    pub redirect_uri: String,
    pub mode: ResponseMode,
    pub state: Option<String>,
}

/// The parameters of an authorization response, success or error.
pub struct AuthorizationReply {
    target: Target,
    params: Vec<(String, String)>,
}

impl AuthorizationReply {
    pub fn success(target: &Target, params: Vec<(String, String)>) -> Self {
        Self { target: target.clone(), params }
    }

    /// An error response: `error`, `error_description`, `state` echoed exactly; never a code.
    pub fn error(target: &Target, code: ErrorCode, description: &str) -> Self {
        let params = vec![
            ("error".to_string(), code.as_str().to_string()),
            ("error_description".to_string(), description.to_string()),
        ];
        Self { target: target.clone(), params }
    }

    pub fn render(mut self, state: &AppState) -> HttpResponse {
        if let Some(client_state) = &self.target.state {
            self.params.push(("state".into(), client_state.clone()));
        }
        // RFC 9207: the issuer identifies which provider answered.
        self.params.push(("iss".into(), state.issuer.clone()));
        match self.target.mode {
            ResponseMode::FormPost => self.form_post(state),
            ResponseMode::Query | ResponseMode::Fragment => self.redirect(),
        }
    }

    fn redirect(self) -> HttpResponse {
        let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.params).finish();
        let location = match self.target.mode {
            ResponseMode::Fragment => format!("{}#{encoded}", self.target.redirect_uri),
            _ if self.target.redirect_uri.contains('?') => format!("{}&{encoded}", self.target.redirect_uri),
            _ => format!("{}?{encoded}", self.target.redirect_uri),
        };
        see_other(&location)
    }

    fn form_post(self, state: &AppState) -> HttpResponse {
        let origin = crate::pages::form_action_source(&self.target.redirect_uri);
        let body = state.pages.form_post(&FormPostView { action: &self.target.redirect_uri, fields: &self.params });
        html_response(StatusCode::OK, body, origin.as_deref())
    }
}

/// A 303 redirect (never 307: a credential POST must not be replayed to the target).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// A 303 to `GET path?<params>` on this provider. A cross-site POST carries no SameSite=Lax cookie, while the
/// top-level GET navigation it becomes does: the GET sees the browser's session and binding.
pub fn see_other_as_get<K: AsRef<str>, V: AsRef<str>>(
    state: &AppState,
    path: &str,
    params: impl IntoIterator<Item = (K, V)>,
) -> HttpResponse {
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    see_other(&format!("{}?{query}", state.endpoint(path)))
}

/// The provider's own error page, with a 4xx or 5xx status.
pub fn error_page(state: &AppState, status: StatusCode, title: &str, message: &str) -> HttpResponse {
    let body = state.pages.error(&ErrorView { lang: "en", title, message, error_code: None });
    let mut response = html_response(status, body, None);
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// The page for a state the replica could not confirm: retry later, as a 503.
pub fn unavailable_page(state: &AppState) -> HttpResponse {
    error_page(state, StatusCode::SERVICE_UNAVAILABLE, "Temporarily unavailable", "Please try again in a moment.")
}
