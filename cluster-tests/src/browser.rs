//! A relying party and its user's browser, one protocol step at a time: `/authorize` (login form), `POST /login`,
//! `/authorize/resume`, then the code exchange, refresh rotation and client credentials at the token endpoint.
//!
//! Each step names the node it goes to, so a scenario can show the form on one node, post it to a second and redeem
//! the code through a third. The provider's redirects name the issuer (one shared name for the whole cluster); the
//! browser follows them on the node it was told to use, as a load balancer in front of the issuer would.
//! The `idp-bench` workloads and the cluster tests both drive logins through this module.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::header::{HeaderMap, AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// Where the provider sends the browser back: a loopback callback that nothing needs to serve, since the browser
/// stops at the redirect and reads the code from its `Location`.
pub const REDIRECT_URI: &str = "http://127.0.0.1:8081/callback";

/// Why a step failed, grouped for reports and assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// An unexpected HTTP status; `error` is the OAuth `error` of a JSON error body, when there is one.
    Status {
        status: u16,
        error: Option<String>,
    },
    Transport(String),
    Protocol(&'static str),
}

impl OpError {
    /// A short label: `http_503`, `connect`, `protocol_no_form`.
    pub fn kind(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("http_{status}"),
            Self::Transport(kind) => kind.clone(),
            Self::Protocol(what) => format!("protocol_{what}"),
        }
    }

    /// The HTTP status of a refused step.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The OAuth `error` code of a refused step (`invalid_grant`).
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            Self::Status { error, .. } => error.as_deref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status { status, error: Some(error) } => write!(formatter, "HTTP {status} ({error})"),
            Self::Status { status, error: None } => write!(formatter, "HTTP {status}"),
            Self::Transport(kind) => write!(formatter, "transport error: {kind}"),
            Self::Protocol(what) => write!(formatter, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for OpError {}

impl From<reqwest::Error> for OpError {
    fn from(error: reqwest::Error) -> Self {
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connect"
        } else {
            "transport"
        };
        Self::Transport(kind.into())
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// What the token endpoint answered.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
}

impl Tokens {
    fn from_body(body: &Value) -> OpResult<Self> {
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
        Ok(Self {
            access_token: text("access_token").ok_or(OpError::Protocol("no_access_token"))?,
            refresh_token: text("refresh_token"),
            id_token: text("id_token"),
        })
    }
}

/// A browser's cookies for the one issuer (binding and SSO session): `name=value; name=value`.
#[derive(Debug, Clone, Default)]
pub struct Browser {
    cookies: String,
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.cookies.clear();
    }

    /// The `Cookie` header value the browser sends (empty before the first cookie).
    pub fn cookie_header(&self) -> &str {
        &self.cookies
    }

    /// Keeps `name=value` of every cookie set, replacing an older one of the same name.
    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let Some(pair) = value.to_str().ok().and_then(|text| text.split(';').next()) else { continue };
            let Some((name, _)) = pair.split_once('=') else { continue };
            let prefix = format!("{name}=");
            let mut kept: Vec<&str> =
                self.cookies.split("; ").filter(|cookie| !cookie.is_empty() && !cookie.starts_with(&prefix)).collect();
            kept.push(pair);
            self.cookies = kept.join("; ");
        }
    }
}

/// The login form `/authorize` showed, and the PKCE verifier of its request.
#[derive(Debug, Clone)]
pub struct LoginForm {
    pub pending: String,
    pub csrf: String,
    pub verifier: String,
}

/// How `/authorize` answered: a login form, or at once a redirect (SSO code, or an error such as `login_required`).
#[derive(Debug, Clone)]
pub enum Authorization {
    Form(LoginForm),
    Redirect { location: String, verifier: String },
}

/// A confidential client (HTTP Basic at the token endpoint) with its HTTP connection pool.
#[derive(Clone)]
pub struct Rp {
    http: reqwest::Client,
    client_id: String,
    client_secret: String,
}

impl Rp {
    /// A client that never follows redirects (each step reads them) and gives up on a request after `timeout`.
    pub fn new(client_id: &str, client_secret: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .timeout(timeout)
            .build()?;
        Ok(Self { http, client_id: client_id.into(), client_secret: client_secret.into() })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn basic(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{}:{}", self.client_id, self.client_secret)))
    }

    /// `GET /authorize` (code flow, PKCE S256) on `node`.
    pub async fn authorize(&self, node: &str, browser: &mut Browser, offline: bool) -> OpResult<Authorization> {
        let (verifier, challenge) = pkce_pair();
        let mut request = self.http.get(authorize_url(node, &self.client_id, &challenge, offline));
        if !browser.cookies.is_empty() {
            request = request.header(COOKIE, &browser.cookies);
        }
        let page = request.send().await?;
        browser.keep_cookies(page.headers());
        match page.status() {
            StatusCode::OK => {
                let html = page.text().await?;
                Ok(Authorization::Form(LoginForm {
                    pending: input(&html, "pending")?,
                    csrf: input(&html, "csrf")?,
                    verifier,
                }))
            }
            StatusCode::SEE_OTHER | StatusCode::FOUND => {
                Ok(Authorization::Redirect { location: location(page.headers())?, verifier })
            }
            status => Err(OpError::Status { status: status.as_u16(), error: None }),
        }
    }

    /// `GET /authorize` that must show the login form.
    pub async fn login_form(&self, node: &str, browser: &mut Browser, offline: bool) -> OpResult<LoginForm> {
        match self.authorize(node, browser, offline).await? {
            Authorization::Form(form) => Ok(form),
            Authorization::Redirect { .. } => Err(OpError::Protocol("no_form")),
        }
    }

    /// `POST /login` on `node`: answers the `/authorize/resume` address to follow next.
    pub async fn post_login(
        &self,
        node: &str,
        browser: &mut Browser,
        form: &LoginForm,
        username: &str,
        password: &str,
    ) -> OpResult<String> {
        let fields = [("username", username), ("password", password), ("csrf", &form.csrf), ("pending", &form.pending)];
        let posted =
            self.http.post(format!("{node}/login")).header(COOKIE, &browser.cookies).form(&fields).send().await?;
        expect(posted.status(), StatusCode::SEE_OTHER)?;
        browser.keep_cookies(posted.headers());
        location(posted.headers())
    }

    /// Follows a provider redirect (`/authorize/resume?…`) on `node`: answers the authorization code.
    pub async fn resume(&self, node: &str, browser: &mut Browser, resume: &str) -> OpResult<String> {
        let answered = self.http.get(on_node(node, resume)?).header(COOKIE, &browser.cookies).send().await?;
        expect(answered.status(), StatusCode::SEE_OTHER)?;
        browser.keep_cookies(answered.headers());
        code_of(&location(answered.headers())?)
    }

    /// Posts the form on `node` and follows the redirect there too: answers the code.
    pub async fn sign_in(
        &self,
        node: &str,
        browser: &mut Browser,
        form: &LoginForm,
        username: &str,
        password: &str,
    ) -> OpResult<String> {
        let resume = self.post_login(node, browser, form, username, password).await?;
        self.resume(node, browser, &resume).await
    }

    /// A whole login through one node: form, credentials, code, exchange. Answers the tokens.
    pub async fn login(&self, node: &str, username: &str, password: &str, offline: bool) -> OpResult<Tokens> {
        let mut browser = Browser::new();
        let form = self.login_form(node, &mut browser, offline).await?;
        let code = self.sign_in(node, &mut browser, &form, username, password).await?;
        self.exchange(node, &code, &form.verifier).await
    }

    /// `grant_type=authorization_code` on `node`.
    pub async fn exchange(&self, node: &str, code: &str, verifier: &str) -> OpResult<Tokens> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ];
        self.token(node, &form).await
    }

    /// `grant_type=refresh_token` on `node`: answers the rotated tokens.
    pub async fn refresh(&self, node: &str, refresh_token: &str) -> OpResult<Tokens> {
        self.token(node, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    /// `grant_type=client_credentials` on `node`.
    pub async fn client_credentials(&self, node: &str) -> OpResult<Tokens> {
        self.token(node, &[("grant_type", "client_credentials")]).await
    }

    async fn token(&self, node: &str, form: &[(&str, &str)]) -> OpResult<Tokens> {
        let response =
            self.http.post(format!("{node}/token")).header(AUTHORIZATION, self.basic()).form(form).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != StatusCode::OK {
            let error = body.get("error").and_then(Value::as_str).map(str::to_string);
            return Err(OpError::Status { status: status.as_u16(), error });
        }
        Tokens::from_body(&body)
    }

    /// `POST /introspect` on `node`: whether the token is active.
    pub async fn introspect(&self, node: &str, token: &str) -> OpResult<bool> {
        let response = self
            .http
            .post(format!("{node}/introspect"))
            .header(AUTHORIZATION, self.basic())
            .form(&[("token", token)])
            .send()
            .await?;
        expect(response.status(), StatusCode::OK)?;
        let body: Value = response.json().await?;
        Ok(body.get("active") == Some(&Value::Bool(true)))
    }

    /// `GET /userinfo` on `node` with a bearer token.
    pub async fn userinfo(&self, node: &str, access_token: &str) -> OpResult<Value> {
        let response = self.http.get(format!("{node}/userinfo")).bearer_auth(access_token).send().await?;
        expect(response.status(), StatusCode::OK)?;
        Ok(response.json().await?)
    }

    /// `GET {node}{path}` that must answer 200: its body.
    pub async fn get(&self, node: &str, path: &str) -> OpResult<Vec<u8>> {
        let response = self.http.get(format!("{node}{path}")).send().await?;
        expect(response.status(), StatusCode::OK)?;
        Ok(response.bytes().await?.to_vec())
    }

    /// `GET {node}{path}` that must answer 200 with JSON.
    pub async fn get_json(&self, node: &str, path: &str) -> OpResult<Value> {
        serde_json::from_slice(&self.get(node, path).await?).map_err(|_| OpError::Protocol("bad_json"))
    }
}

fn expect(status: StatusCode, expected: StatusCode) -> OpResult<()> {
    if status == expected {
        Ok(())
    } else {
        Err(OpError::Status { status: status.as_u16(), error: None })
    }
}

fn authorize_url(node: &str, client_id: &str, challenge: &str, offline: bool) -> String {
    let scope = if offline { "openid profile offline_access" } else { "openid profile" };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("state", "bench")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("{node}/authorize?{query}")
}

/// The same path and query on `node` (a base URL such as `http://127.0.0.1:8080`), whatever host `location` names.
pub fn on_node(node: &str, location: &str) -> OpResult<String> {
    let base = url::Url::parse(node).map_err(|_| OpError::Protocol("bad_node_url"))?;
    let mut target = base.join(location).map_err(|_| OpError::Protocol("bad_location"))?;
    target.set_scheme(base.scheme()).map_err(|_| OpError::Protocol("bad_location"))?;
    target.set_host(base.host_str()).map_err(|_| OpError::Protocol("bad_location"))?;
    target.set_port(base.port()).map_err(|_| OpError::Protocol("bad_location"))?;
    Ok(target.to_string())
}

fn location(headers: &HeaderMap) -> OpResult<String> {
    headers
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .ok_or(OpError::Protocol("no_location"))
}

/// The `code` of a redirect to the client.
pub fn code_of(location: &str) -> OpResult<String> {
    let url = url::Url::parse(location).map_err(|_| OpError::Protocol("bad_location"))?;
    let code = url.query_pairs().find(|(name, _)| name == "code").map(|(_, value)| value.into_owned());
    code.ok_or(OpError::Protocol("no_code"))
}

/// The value of `<input name="NAME" value="…">` in a page.
fn input(html: &str, name: &str) -> OpResult<String> {
    let needle = format!("name=\"{name}\"");
    let tag = html
        .split('<')
        .find(|tag| tag.starts_with("input") && tag.contains(&needle))
        .ok_or(OpError::Protocol("no_form"))?;
    let start = tag.find("value=\"").ok_or(OpError::Protocol("no_form"))? + 7;
    let end = tag[start..].find('"').ok_or(OpError::Protocol("no_form"))? + start;
    Ok(tag[start..end].replace("&#x2f;", "/").replace("&amp;", "&"))
}

/// A PKCE verifier and its S256 challenge (RFC 7636 §4.1, §4.2).
fn pkce_pair() -> (String, String) {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_followed_on_the_chosen_node() {
        let moved = on_node("http://127.0.0.1:9002", "http://127.0.0.1:9001/authorize/resume?pending=abc").unwrap();
        assert_eq!(moved, "http://127.0.0.1:9002/authorize/resume?pending=abc");
        let relative = on_node("http://127.0.0.1:9002", "/authorize/resume?pending=abc").unwrap();
        assert_eq!(relative, "http://127.0.0.1:9002/authorize/resume?pending=abc");
    }

    #[test]
    fn form_inputs_are_read_and_unescaped() {
        let html =
            r#"<form><input type="hidden" name="csrf" value="a&#x2f;b"><input name="pending" value="p&amp;q"></form>"#;
        assert_eq!(input(html, "csrf").unwrap(), "a/b");
        assert_eq!(input(html, "pending").unwrap(), "p&q");
        assert_eq!(input(html, "other"), Err(OpError::Protocol("no_form")));
    }

    #[test]
    fn cookies_replace_older_ones_of_the_same_name() {
        let mut browser = Browser::new();
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, "a=1; Path=/; HttpOnly".parse().unwrap());
        headers.append(SET_COOKIE, "b=2".parse().unwrap());
        browser.keep_cookies(&headers);
        let mut again = HeaderMap::new();
        again.append(SET_COOKIE, "a=3; Path=/".parse().unwrap());
        browser.keep_cookies(&again);
        assert_eq!(browser.cookies, "b=2; a=3");
    }

    #[test]
    fn codes_are_read_from_the_callback() {
        assert_eq!(code_of("http://127.0.0.1:8081/callback?code=xyz&state=s").unwrap(), "xyz");
        assert_eq!(code_of("http://127.0.0.1:8081/callback?error=login_required"), Err(OpError::Protocol("no_code")));
    }

    #[test]
    fn pkce_challenge_is_the_hash_of_the_verifier() {
        let (verifier, challenge) = pkce_pair();
        assert_eq!(verifier.len(), 43);
        let expected =
            URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()));
        assert_eq!(challenge, expected);
    }
}
