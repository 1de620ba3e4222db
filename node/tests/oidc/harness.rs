//! An in-process node on a random loopback port, a browser that keeps cookies and submits forms, and the HTTP
//! client adapter the `openidconnect` relying party uses.

use idp_actors::clock::{ManualClock, SharedClock};
use idp_actors::keyring::kek::Kek;
use idp_actors::replica::MemoryReplica;
use idp_node::config::Config;
use actix_web::dev::ServerHandle;
use idp_node::server::{build_state, serve, NodeDeps, RunningNode};
use idp_node::state::AppState;
use reqwest::redirect::Policy;
use reqwest::{Response, StatusCode};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub const REDIRECT_URI: &str = "http://127.0.0.1:8081/callback";
pub const ALICE: (&str, &str) = ("alice", "alice-password");

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
        let address = listener.local_addr().unwrap();
        let mut config = Config::dev(&address.to_string(), None);
        config.shards = 64;
        customize(&mut config);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let clock = ManualClock::new(now_ms);
        let shared_clock: SharedClock = Arc::new(clock.clone());
        let deps = NodeDeps { replica: Arc::new(MemoryReplica::new(shared_clock.clone())), clock: shared_clock, kek: Kek::random() };
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
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
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
    async fn read(response: Response) -> Self {
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
        self.param(name).unwrap_or_else(|| panic!("no {name} in response {:?} {:?} {}", self.status, self.location, self.body))
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
    pub async fn authorize(&self, node: &TestNode, params: &[(&str, &str)]) -> Page {
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        self.get(&node.url(&format!("/authorize?{query}"))).await
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

    /// Logs in from an authorization request, consenting when asked, until the response to the client.
    pub async fn must_authorize_and_login(&self, node: &TestNode, params: &[(&str, &str)], user: (&str, &str)) -> Page {
        let page = self.authorize(node, params).await;
        assert_eq!(page.status, StatusCode::OK, "login page expected: {}", page.body);
        let page = self.submit_login(node, &page, user.0, user.1).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "login must answer 303: {}", page.body);
        let page = self.follow(node, page).await;
        if page.status == StatusCode::OK && page.input("decision").is_some() || page.body.contains("name=\"decision\"") {
            let page = self.submit_consent(node, &page, "allow").await;
            return self.follow(node, page).await;
        }
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

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#x27;", "'").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&#x2f;", "/").replace("&#x2F;", "/").replace("&amp;", "&")
}

/// A PKCE pair (RFC 7636): a verifier and its S256 challenge.
pub fn pkce_pair() -> (String, String) {
    use base64::Engine;
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    bytes
}

/// The HTTP client of the `openidconnect` relying party, over reqwest 0.13.
pub async fn rp_http(request: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let client = reqwest::Client::builder().redirect(Policy::none()).build()?;
    let (parts, body) = request.into_parts();
    let response = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
    let mut builder = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    Ok(builder.body(response.bytes().await?.to_vec()).expect("response parts are valid"))
}

/// A back-channel client of the node (token, introspection, revocation, userinfo).
pub fn api() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}
