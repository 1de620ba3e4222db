//! The operations a bench worker performs against the nodes, each a real protocol exchange: browser-style logins
//! (authorize, login form, code exchange), SSO re-authorizations, client credentials, refresh rotation, userinfo,
//! introspection, discovery and JWKS.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::header::{HeaderMap, AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

pub const REDIRECT_URI: &str = "http://127.0.0.1:8081/callback";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Login,
    Sso,
    ClientCredentials,
    Refresh,
    Userinfo,
    Introspect,
    Discovery,
    Jwks,
    Healthz,
}

impl Op {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "login" => Self::Login,
            "sso" => Self::Sso,
            "cc" => Self::ClientCredentials,
            "refresh" => Self::Refresh,
            "userinfo" => Self::Userinfo,
            "introspect" => Self::Introspect,
            "discovery" => Self::Discovery,
            "jwks" => Self::Jwks,
            "healthz" => Self::Healthz,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Sso => "sso",
            Self::ClientCredentials => "cc",
            Self::Refresh => "refresh",
            Self::Userinfo => "userinfo",
            Self::Introspect => "introspect",
            Self::Discovery => "discovery",
            Self::Jwks => "jwks",
            Self::Healthz => "healthz",
        }
    }

    /// Operations that need a logged-in user set up before the run.
    fn needs_login(self) -> bool {
        matches!(self, Self::Sso | Self::Refresh | Self::Userinfo | Self::Introspect)
    }
}

/// Why an operation failed, grouped for the report.
#[derive(Debug)]
pub enum OpError {
    Status(u16),
    Transport(String),
    Protocol(&'static str),
}

impl OpError {
    pub fn kind(&self) -> String {
        match self {
            Self::Status(status) => format!("http_{status}"),
            Self::Transport(kind) => kind.clone(),
            Self::Protocol(what) => format!("protocol_{what}"),
        }
    }
}

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

type OpResult<T> = Result<T, OpError>;

/// Who the workers are: the clients and users the nodes know.
#[derive(Clone, Debug)]
pub struct Workload {
    pub client_id: String,
    pub client_secret: String,
    pub user_prefix: String,
    pub user_count: usize,
    pub password: String,
    pub needs_login: bool,
}

impl Workload {
    pub fn for_mix(mut self, mix: &[(Op, u32)]) -> Self {
        self.needs_login = mix.iter().any(|(op, _)| op.needs_login());
        self
    }

    /// A worker's session: its own connection pool, user, and (when needed) a login done up front.
    pub async fn session(&self, worker: usize, nodes: &[String]) -> anyhow::Result<Session> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let username = if self.user_count == 0 {
            self.user_prefix.clone()
        } else {
            format!("{}{}", self.user_prefix, worker % self.user_count)
        };
        let mut session = Session {
            http,
            nodes: nodes.to_vec(),
            next_node: worker,
            workload: self.clone(),
            username,
            cookies: String::new(),
            refresh_token: None,
            access_token: None,
        };
        if self.needs_login {
            session.login(true).await.map_err(|error| anyhow::anyhow!("setup login failed: {}", error.kind()))?;
        }
        Ok(session)
    }
}

pub struct Session {
    http: reqwest::Client,
    nodes: Vec<String>,
    next_node: usize,
    workload: Workload,
    username: String,
    /// `name=value; name=value` of the browser cookies (binding and SSO session).
    cookies: String,
    refresh_token: Option<String>,
    access_token: Option<String>,
}

impl Session {
    /// The next node, round-robin.
    fn node(&mut self) -> String {
        self.next_node = self.next_node.wrapping_add(1);
        self.nodes[self.next_node % self.nodes.len()].clone()
    }

    fn basic(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{}:{}", self.workload.client_id, self.workload.client_secret)))
    }

    pub async fn run(&mut self, op: Op) -> OpResult<()> {
        match op {
            Op::Login => self.login(false).await,
            Op::Sso => self.sso().await,
            Op::ClientCredentials => self.client_credentials().await,
            Op::Refresh => self.refresh().await,
            Op::Userinfo => self.userinfo().await,
            Op::Introspect => self.introspect().await,
            Op::Discovery => self.get("/.well-known/openid-configuration").await,
            Op::Jwks => self.get("/jwks").await,
            Op::Healthz => self.get("/healthz").await,
        }
    }

    async fn get(&mut self, path: &str) -> OpResult<()> {
        let url = format!("{}{path}", self.node());
        let response = self.http.get(url).send().await?;
        expect(response.status(), StatusCode::OK)?;
        response.bytes().await?;
        Ok(())
    }

    async fn client_credentials(&mut self) -> OpResult<()> {
        let node = self.node();
        let response = self
            .http
            .post(format!("{node}/token"))
            .header(AUTHORIZATION, self.basic())
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await?;
        expect(response.status(), StatusCode::OK)?;
        let body: Value = response.json().await?;
        body.get("access_token").and_then(Value::as_str).ok_or(OpError::Protocol("no_access_token"))?;
        Ok(())
    }

    /// A full browser login: `/authorize` (form), `POST /login`, resume, code exchange.
    pub async fn login(&mut self, offline: bool) -> OpResult<()> {
        let node = self.node();
        self.cookies.clear();
        let (verifier, challenge) = pkce_pair();
        let page = self.http.get(authorize_url(&node, &self.workload.client_id, &challenge, offline)).send().await?;
        expect(page.status(), StatusCode::OK)?;
        self.keep_cookies(page.headers());
        let html = page.text().await?;
        let (csrf, pending) = (input(&html, "csrf")?, input(&html, "pending")?);
        let form = [
            ("username", self.username.as_str()),
            ("password", &self.workload.password),
            ("csrf", &csrf),
            ("pending", &pending),
        ];
        let posted = self.http.post(format!("{node}/login")).header(COOKIE, &self.cookies).form(&form).send().await?;
        expect(posted.status(), StatusCode::SEE_OTHER)?;
        self.keep_cookies(posted.headers());
        let resume = location(posted.headers())?;
        let answered = self.http.get(resume).header(COOKIE, &self.cookies).send().await?;
        expect(answered.status(), StatusCode::SEE_OTHER)?;
        let code = code_of(&location(answered.headers())?)?;
        self.exchange(&node, &code, &verifier).await
    }

    /// An SSO re-authorization: `/authorize` with the session cookie answers with a code at once; exchange it.
    async fn sso(&mut self) -> OpResult<()> {
        let node = self.node();
        let (verifier, challenge) = pkce_pair();
        let url = authorize_url(&node, &self.workload.client_id, &challenge, false);
        let answered = self.http.get(url).header(COOKIE, &self.cookies).send().await?;
        expect(answered.status(), StatusCode::SEE_OTHER)?;
        let location = location(answered.headers())?;
        // A session holds a bounded number of live grants (512): a browser that reaches it logs in again, and
        // that login counts in this operation's latency.
        if location.contains("error=login_required") {
            return self.login(false).await;
        }
        let code = code_of(&location)?;
        self.exchange(&node, &code, &verifier).await
    }

    async fn exchange(&mut self, node: &str, code: &str, verifier: &str) -> OpResult<()> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ];
        let response =
            self.http.post(format!("{node}/token")).header(AUTHORIZATION, self.basic()).form(&form).send().await?;
        expect(response.status(), StatusCode::OK)?;
        self.keep_tokens(response.json().await?)
    }

    async fn refresh(&mut self) -> OpResult<()> {
        let node = self.node();
        let token = self.refresh_token.clone().ok_or(OpError::Protocol("no_refresh_token"))?;
        let form = [("grant_type", "refresh_token"), ("refresh_token", token.as_str())];
        let response =
            self.http.post(format!("{node}/token")).header(AUTHORIZATION, self.basic()).form(&form).send().await?;
        expect(response.status(), StatusCode::OK)?;
        self.keep_tokens(response.json().await?)
    }

    async fn userinfo(&mut self) -> OpResult<()> {
        let node = self.node();
        let token = self.access_token.clone().ok_or(OpError::Protocol("no_access_token"))?;
        let response = self.http.get(format!("{node}/userinfo")).bearer_auth(token).send().await?;
        expect(response.status(), StatusCode::OK)?;
        response.bytes().await?;
        Ok(())
    }

    async fn introspect(&mut self) -> OpResult<()> {
        let node = self.node();
        let token = self.access_token.clone().ok_or(OpError::Protocol("no_access_token"))?;
        let response = self
            .http
            .post(format!("{node}/introspect"))
            .header(AUTHORIZATION, self.basic())
            .form(&[("token", token.as_str())])
            .send()
            .await?;
        expect(response.status(), StatusCode::OK)?;
        let body: Value = response.json().await?;
        if body.get("active") != Some(&Value::Bool(true)) {
            return Err(OpError::Protocol("inactive"));
        }
        Ok(())
    }

    fn keep_tokens(&mut self, body: Value) -> OpResult<()> {
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
        self.access_token = Some(text("access_token").ok_or(OpError::Protocol("no_access_token"))?);
        if let Some(refresh) = text("refresh_token") {
            self.refresh_token = Some(refresh);
        }
        Ok(())
    }

    /// Keeps `name=value` of every cookie set (the bench's cookie jar: one browser, one issuer).
    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let Some(pair) = value.to_str().ok().and_then(|text| text.split(';').next()) else { continue };
            let Some((name, _)) = pair.split_once('=') else { continue };
            let mut kept: Vec<&str> = self
                .cookies
                .split("; ")
                .filter(|cookie| !cookie.is_empty() && !cookie.starts_with(&format!("{name}=")))
                .collect();
            kept.push(pair);
            self.cookies = kept.join("; ");
        }
    }
}

fn expect(status: StatusCode, expected: StatusCode) -> OpResult<()> {
    if status == expected {
        Ok(())
    } else {
        Err(OpError::Status(status.as_u16()))
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

fn location(headers: &HeaderMap) -> OpResult<String> {
    headers
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .ok_or(OpError::Protocol("no_location"))
}

fn code_of(location: &str) -> OpResult<String> {
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

fn pkce_pair() -> (String, String) {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}
