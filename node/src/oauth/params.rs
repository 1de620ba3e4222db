//! Request parameters: form or query encoded, each at most once (RFC 6749 §3.1), each within the length limit.

use idp_proto::ErrorCode;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub code: ErrorCode,
    pub description: String,
}

impl ParamError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self { code, description: description.into() }
    }

    pub fn invalid(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }
}

/// The parameters of one request. They carry secrets (passwords, client secrets, codes, tokens): `Debug` shows
/// the names only.
#[derive(Default, Clone)]
pub struct Params {
    values: HashMap<String, String>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.values.keys().map(String::as_str).collect();
        names.sort_unstable();
        formatter.debug_struct("Params").field("names", &names).finish_non_exhaustive()
    }
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` text. Empty values count as absent (RFC 6749 §3.1); a parameter
    /// given twice, or longer than `max_len` bytes, is an `invalid_request`.
    pub fn parse(encoded: &[u8], max_len: usize) -> Result<Self, ParamError> {
        let mut values = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(encoded) {
            if name.len() > 128 || value.len() > max_len {
                return Err(ParamError::invalid(format!("parameter {} is too long", printable(&name))));
            }
            if value.is_empty() {
                continue;
            }
            if values.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(ParamError::invalid(format!("parameter {} is repeated", printable(&name))));
            }
        }
        Ok(Self { values })
    }

    /// The parameters given exactly once and within the limits, the others left out: what a request that
    /// [`Params::parse`] refuses still says about where to report that error (RFC 6749 §4.1.2.1).
    pub fn parse_unique(encoded: &[u8], max_len: usize) -> Self {
        let mut seen: HashMap<String, Option<String>> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(encoded) {
            if value.is_empty() {
                continue;
            }
            let usable = name.len() <= 128 && value.len() <= max_len;
            let first = !seen.contains_key(name.as_ref());
            seen.insert(name.into_owned(), (first && usable).then(|| value.into_owned()));
        }
        Self { values: seen.into_iter().filter_map(|(name, value)| Some((name, value?))).collect() }
    }

    /// Parses a POST body after checking its content type is a form.
    pub fn parse_form(content_type: Option<&str>, body: &[u8], max_len: usize) -> Result<Self, ParamError> {
        if !is_form(content_type) {
            return Err(ParamError::invalid("the body must be application/x-www-form-urlencoded"));
        }
        Self::parse(body, max_len)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn require(&self, name: &str) -> Result<&str, ParamError> {
        self.get(name).ok_or_else(|| ParamError::invalid(format!("missing parameter {name}")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The parameters of a GET (query string) or POST (form body) request.
    pub fn parse_request(request: &actix_web::HttpRequest, body: &[u8], max_len: usize) -> Result<Self, ParamError> {
        if request.method() == actix_web::http::Method::POST {
            Self::parse_request_form(request, body, max_len)
        } else {
            Self::parse(request.query_string().as_bytes(), max_len)
        }
    }

    /// Parses the form body of a POST request (its `Content-Type` must say so).
    pub fn parse_request_form(
        request: &actix_web::HttpRequest,
        body: &[u8],
        max_len: usize,
    ) -> Result<Self, ParamError> {
        Self::parse_form(content_type(request), body, max_len)
    }
}

/// The `Content-Type` of a request, when it is readable text.
pub fn content_type(request: &actix_web::HttpRequest) -> Option<&str> {
    request.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|value| value.to_str().ok())
}

/// Whether a `Content-Type` names `application/x-www-form-urlencoded`.
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// A parameter name safe to echo in an error description.
fn printable(name: &str) -> String {
    let cleaned: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect();
    if cleaned.is_empty() {
        "(unnamed)".into()
    } else {
        cleaned
    }
}

/// Space-separated scope list (RFC 6749 §3.3): `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn parse_scope(text: &str) -> Result<Vec<String>, ParamError> {
    let mut scopes: Vec<String> = Vec::new();
    for token in text.split(' ') {
        let valid = !token.is_empty()
            && token.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(ParamError::new(ErrorCode::InvalidScope, "scope is malformed"));
        }
        if !scopes.iter().any(|scope| scope == token) {
            scopes.push(token.to_string());
        }
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_oversized_parameters_are_refused() {
        assert!(Params::parse(b"a=1&b=2", 10).is_ok());
        let repeated = Params::parse(b"a=1&a=2", 10).unwrap_err();
        assert_eq!(repeated.code, ErrorCode::InvalidRequest);
        assert!(repeated.description.contains("repeated"));
        assert!(Params::parse(b"a=12345678901", 10).unwrap_err().description.contains("too long"));
    }

    #[test]
    fn unique_parsing_leaves_out_repeated_and_oversized_parameters() {
        let params = Params::parse_unique(b"a=1&b=2&b=3&c=12345678901&d=4&b=5", 10);
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("b"), None);
        assert_eq!(params.get("c"), None);
        assert_eq!(params.get("d"), Some("4"));
    }

    #[test]
    fn empty_values_count_as_absent() {
        let params = Params::parse(b"a=&b=x&a=", 10).unwrap();
        assert_eq!(params.get("a"), None);
        assert_eq!(params.get("b"), Some("x"));
    }

    #[test]
    fn form_bodies_need_the_form_content_type() {
        assert!(Params::parse_form(Some("application/x-www-form-urlencoded; charset=UTF-8"), b"a=1", 9).is_ok());
        assert!(Params::parse_form(Some("application/json"), b"{}", 9).is_err());
        assert!(Params::parse_form(None, b"a=1", 9).is_err());
    }

    #[test]
    fn scopes_are_deduplicated_and_validated() {
        assert_eq!(parse_scope("openid email openid").unwrap(), vec!["openid", "email"]);
        assert!(parse_scope("openid  email").is_err());
        assert!(parse_scope("open\"id").is_err());
        assert!(parse_scope("").is_err());
    }

    #[test]
    fn error_descriptions_never_echo_raw_names() {
        let error = Params::parse(b"%3Cscript%3E=1&%3Cscript%3E=2", 10).unwrap_err();
        assert!(!error.description.contains('<'));
    }
}
