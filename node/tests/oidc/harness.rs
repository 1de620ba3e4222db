//! An in-process node on a random loopback port, and a browser that keeps cookies and submits forms.

use actix_web::dev::ServerHandle;
use idp_actors::clock::{Clock, ManualClock, SharedClock};
use idp_actors::keyring::kek::Kek;
use idp_actors::replica::MemoryReplica;
use idp_node::config::{ClientConfig, Config};
use idp_node::server::{build_state, serve, NodeDeps, RunningNode};
use idp_node::state::AppState;
use reqwest::redirect::Policy;
use reqwest::{Response, StatusCode};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub const REDIRECT_URI: &str = "http://127.0.0.1:8081/callback";
/// The other redirect URI registered for both demo clients.
pub const OTHER_REDIRECT_URI: &str = "http://localhost:8081/callback";
pub const POST_LOGOUT_URI: &str = "http://127.0.0.1:8081/";
pub const ALICE: (&str, &str) = ("alice", "alice-password");
pub const DEMO: (&str, &str) = ("demo", "demo-secret");

/// A node serving the dev configuration, with a clock the test moves.
pub struct TestNode {
    pub issuer: String,
    pub clock: ManualClock,
    pub state: actix_web::web::Data<AppState>,
    handle: ServerHandle,
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a node whose dev configuration `customize` may change first.
    pub async fn start_with(customize: impl FnOnce(&mut Config)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        Self::start_on(listener, customize).await
    }

    /// Starts a node on a listener bound already (its address is needed before the node starts).
    pub async fn start_on(listener: TcpListener, customize: impl FnOnce(&mut Config)) -> Self {
        let address = listener.local_addr().unwrap();
        let mut config = Config::dev(&address.to_string(), None);
        config.shards = 64;
        config.http.workers = 2;
        // Audit lines would flood the test output; the audit tests turn a file sink on.
        config.audit.sink = "off".into();
        customize(&mut config);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let clock = ManualClock::new(now_ms);
        let shared_clock: SharedClock = Arc::new(clock.clone());
        let replica = Arc::new(MemoryReplica::new(shared_clock.clone()));
        let deps = NodeDeps { replica, clock: shared_clock, kek: Kek::random() };
        let state = build_state(config, deps).await.expect("building the node");
        let RunningNode { state, handle, server, .. } = serve(state, listener).expect("serving");
        actix_web::rt::spawn(server);
        Self { issuer: state.issuer.clone(), clock, state, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    /// Restarts every shard actor: in-memory state is dropped and reloads from the replica alone.
    pub async fn restart_shard_actors(&self) {
        self.state.shards.restart_all().await;
    }

    /// The node's clock, in Unix seconds.
    pub fn now_secs(&self) -> u64 {
        self.clock.now_secs()
    }

    /// Moves the node's clock forward.
    pub fn advance_secs(&self, seconds: u64) {
        self.clock.advance_ms(seconds * 1000);
    }

    /// The node still answers (after a burst of bad input, for instance).
    pub async fn must_be_healthy(&self) {
        let response = reqwest::get(self.url("/healthz")).await.expect("the node answers");
        assert_eq!(response.status(), StatusCode::OK);
        let discovery = reqwest::get(self.url("/.well-known/openid-configuration")).await.expect("discovery answers");
        assert_eq!(discovery.status(), StatusCode::OK);
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

/// A client registered like `demo` (confidential, first party, every grant and response type) under another id,
/// signing its ID tokens with `alg`.
pub fn demo_like_client(config: &Config, client_id: &str, alg: &str) -> ClientConfig {
    let mut client = config.clients.iter().find(|client| client.client_id == "demo").expect("the demo client").clone();
    client.client_id = client_id.to_string();
    client.name = Some(format!("Client {client_id}"));
    client.id_token_signed_response_alg = alg.to_string();
    client
}

/// The parameters of an authorization request, starting from a valid one of the `demo` client.
#[derive(Clone, Debug)]
pub struct AuthParams(Vec<(String, String)>);

impl AuthParams {
    /// `demo`, `REDIRECT_URI`, scope `openid profile email`, a state and a nonce.
    pub fn demo(response_type: &str) -> Self {
        Self(Vec::new())
            .set("client_id", "demo")
            .set("redirect_uri", REDIRECT_URI)
            .set("response_type", response_type)
            .set("scope", "openid profile email")
            .set("state", "state-Ω &=?")
            .set("nonce", "nonce-1")
    }

    /// `demo-public` (code flow) with this S256 challenge.
    pub fn public(challenge: &str) -> Self {
        Self::demo("code")
            .set("client_id", "demo-public")
            .set("code_challenge", challenge)
            .set("code_challenge_method", "S256")
    }

    /// Sets (or replaces) a parameter.
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.0.retain(|(key, _)| key != name);
        self.0.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a parameter even when it is present already (to duplicate it).
    pub fn add(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_string(), value.to_string()));
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.0.retain(|(key, _)| key != name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The parameters as form fields.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect()
    }

    pub fn query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.0).finish()
    }
}

/// A browser: keeps cookies, never follows redirects by itself.
pub struct Browser {
    pub http: reqwest::Client,
}

/// A page or redirect as the browser saw it.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub async fn read(response: Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let location = headers.get("location").and_then(|value| value.to_str().ok()).map(str::to_string);
        let body = response.text().await.unwrap_or_default();
        Self { status, location, headers, body }
    }

    /// The value of a form input, e.g. the hidden `csrf` or `pending` field.
    pub fn input(&self, name: &str) -> Option<String> {
        input_value(&self.body, name)
    }

    pub fn must_input(&self, name: &str) -> String {
        self.input(name).unwrap_or_else(|| panic!("no input {name} in page ({}): {}", self.status, self.body))
    }

    pub fn is_login_form(&self) -> bool {
        self.status == StatusCode::OK && self.input("pending").is_some() && self.body.contains("name=\"password\"")
    }

    pub fn is_consent_form(&self) -> bool {
        self.status == StatusCode::OK
            && self.body.contains("name=\"decision\"")
            && self.form_action().as_deref() == Some("/consent")
    }

    /// A redirect or a form_post page addressed to the client's redirect URI.
    pub fn is_response_to(&self, redirect_uri: &str) -> bool {
        match &self.location {
            Some(location) => location.starts_with(redirect_uri),
            None => self.status == StatusCode::OK && self.form_action().as_deref() == Some(redirect_uri),
        }
    }

    /// The (unescaped) `action` of the page's first form.
    pub fn form_action(&self) -> Option<String> {
        let start = self.body.find("<form")?;
        let tag = &self.body[start..start + self.body[start..].find('>')?];
        let value_start = tag.find("action=\"")? + 8;
        let value_end = tag[value_start..].find('"')? + value_start;
        Some(unescape(&tag[value_start..value_end]))
    }

    /// Parameters of a redirect to the client (query or fragment), or of a form_post page.
    pub fn response_params(&self) -> Vec<(String, String)> {
        if let Some(location) = &self.location {
            let url = url::Url::parse(location).expect("absolute location");
            let text = url.fragment().map(str::to_string).or(url.query().map(str::to_string)).unwrap_or_default();
            return url::form_urlencoded::parse(text.as_bytes()).into_owned().collect();
        }
        form_fields(&self.body)
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.response_params().into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
    }

    pub fn must_param(&self, name: &str) -> String {
        self.param(name)
            .unwrap_or_else(|| panic!("no {name} in response {:?} {:?} {}", self.status, self.location, self.body))
    }

    /// The `Set-Cookie` headers of the response.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|value| value.to_str().ok()).map(str::to_string).collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        let http = reqwest::Client::builder().cookie_store(true).redirect(Policy::none()).build().unwrap();
        Self { http }
    }

    pub async fn get(&self, url: &str) -> Page {
        Page::read(self.http.get(url).send().await.expect("GET")).await
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        Page::read(self.http.post(url).form(form).send().await.expect("POST")).await
    }

    /// Follows redirects within the issuer until one leaves it (to the client) or a page is shown.
    pub async fn follow(&self, node: &TestNode, mut page: Page) -> Page {
        for _ in 0..5 {
            match &page.location {
                Some(location) if location.starts_with(&node.issuer) => page = self.get(location).await,
                _ => return page,
            }
        }
        page
    }

    /// Opens `/authorize` with these parameters.
    pub async fn authorize(&self, node: &TestNode, params: &AuthParams) -> Page {
        self.get(&node.url(&format!("/authorize?{}", params.query()))).await
    }

    /// POSTs `/authorize` with these parameters as a form body (OIDC Core §3.1.2.1).
    pub async fn authorize_post(&self, node: &TestNode, params: &AuthParams) -> Page {
        let request = self
            .http
            .post(node.url("/authorize"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(params.query());
        Page::read(request.send().await.expect("POST")).await
    }

    /// A form POST from another site's page: the browser's cookies are SameSite=Lax, so none goes with it.
    pub async fn post_cross_site(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let without_cookies = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        Page::read(without_cookies.post(url).form(form).send().await.expect("POST")).await
    }

    /// Submits the login form of `page` with these credentials.
    pub async fn submit_login(&self, node: &TestNode, page: &Page, username: &str, password: &str) -> Page {
        let (csrf, pending) = (page.must_input("csrf"), page.must_input("pending"));
        let form = [("username", username), ("password", password), ("csrf", &csrf), ("pending", &pending)];
        self.post(&node.url("/login"), &form).await
    }

    /// Submits the consent form of `page` with `allow` or `deny`.
    pub async fn submit_consent(&self, node: &TestNode, page: &Page, decision: &str) -> Page {
        let (csrf, pending) = (page.must_input("csrf"), page.must_input("pending"));
        self.post(&node.url("/consent"), &[("decision", decision), ("csrf", &csrf), ("pending", &pending)]).await
    }

    /// Submits the login form with alice's password and follows to the next page (client response or consent).
    pub async fn must_log_in(&self, node: &TestNode, login: &Page) -> Page {
        assert!(login.is_login_form(), "login page expected ({}): {}", login.status, login.body);
        let page = self.submit_login(node, login, ALICE.0, ALICE.1).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "a successful credential POST answers 303: {}", page.body);
        self.follow(node, page).await
    }

    /// Logs alice in from an authorization request, consenting when asked, until the response to the client.
    pub async fn must_authorize_and_login(&self, node: &TestNode, params: &AuthParams) -> Page {
        let login = self.authorize(node, params).await;
        let page = self.must_log_in(node, &login).await;
        if page.is_consent_form() {
            let page = self.submit_consent(node, &page, "allow").await;
            return self.follow(node, page).await;
        }
        page
    }

    /// An authorization answered at once from the SSO session (no form), followed to the client.
    pub async fn must_authorize_silently(&self, node: &TestNode, params: &AuthParams) -> Page {
        let page = self.authorize(node, params).await;
        let redirect_uri = params.get("redirect_uri").unwrap_or(REDIRECT_URI);
        assert!(
            page.is_response_to(redirect_uri),
            "an answer without interaction expected ({}): {}",
            page.status,
            page.body
        );
        page
    }
}

/// Reads `<input … name="NAME" … value="VALUE">` from HTML, in either attribute order.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    for tag in html.split('<').filter(|tag| tag.starts_with("input") || tag.starts_with("button")) {
        if tag.contains(&needle) {
            let start = tag.find("value=\"")? + 7;
            let end = tag[start..].find('"')? + start;
            return Some(unescape(&tag[start..end]));
        }
    }
    None
}

/// Every named input of the first form of a page, e.g. a form_post response.
pub fn form_fields(html: &str) -> Vec<(String, String)> {
    html.split('<')
        .filter(|tag| tag.starts_with("input"))
        .filter_map(|tag| {
            let start = tag.find("name=\"")? + 6;
            let end = tag[start..].find('"')? + start;
            let name = unescape(&tag[start..end]);
            Some((name.clone(), input_value(&format!("<{tag}"), &name).unwrap_or_default()))
        })
        .collect()
}

pub fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

/// A PKCE pair (RFC 7636): a verifier and its S256 challenge.
pub fn pkce_pair() -> (String, String) {
    use base64::Engine;
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

pub fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    bytes
}
