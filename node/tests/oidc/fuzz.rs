//! A bounded, seeded random sweep: soups of known and unknown parameters with odd values, methods, content types,
//! credentials and cookies against every endpoint. The node must never answer 5xx and must keep answering.

use crate::client::api;
use crate::harness::*;
use reqwest::Method;

/// SplitMix64: a tiny deterministic generator, so a failure replays from its seed.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn pick<'a, T: ?Sized>(&mut self, choices: &[&'a T]) -> &'a T {
        choices[self.below(choices.len())]
    }
}

/// Every endpoint with the method it serves (the sweep mostly uses it, sometimes another).
const ENDPOINTS: [(&str, &str); 14] = [
    ("/authorize", "GET"),
    ("/authorize", "POST"),
    ("/authorize/resume", "GET"),
    ("/login", "POST"),
    ("/consent", "POST"),
    ("/token", "POST"),
    ("/userinfo", "GET"),
    ("/userinfo", "POST"),
    ("/introspect", "POST"),
    ("/revoke", "POST"),
    ("/logout", "GET"),
    ("/logout", "POST"),
    ("/jwks", "GET"),
    ("/.well-known/openid-configuration", "GET"),
];

const NAMES: [&str; 40] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "prompt",
    "max_age",
    "login_hint",
    "ui_locales",
    "acr_values",
    "code_challenge",
    "code_challenge_method",
    "request",
    "request_uri",
    "resource",
    "audience",
    "grant_type",
    "code",
    "code_verifier",
    "refresh_token",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "token",
    "token_type_hint",
    "access_token",
    "username",
    "password",
    "csrf",
    "pending",
    "decision",
    "id_token_hint",
    "post_logout_redirect_uri",
    "claims",
    "display",
    "registration",
    "x",
    "%00",
];

/// Values from the plausible to the hostile.
fn value(rng: &mut Seeded, handle: &str) -> String {
    let fixed: [&str; 30] = [
        "demo",
        "demo-public",
        REDIRECT_URI,
        "code",
        "id_token token",
        "code id_token token",
        "token",
        "openid",
        "openid profile email offline_access",
        "query",
        "fragment",
        "form_post",
        "none",
        "login consent",
        "0",
        "-1",
        "18446744073709551616",
        "S256",
        "plain",
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "allow",
        "deny",
        "logout",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.e30.",
        "eyJ!!.eyJ!!.!!",
        "%FF%FE",
        "<script>alert(1)</script>",
    ];
    match rng.below(8) {
        0 => handle.to_string(),
        1 => "x".repeat(rng.below(6000)),
        2 => (0..rng.below(40)).map(|_| char::from_u32(rng.below(0x3000) as u32).unwrap_or('?')).collect(),
        _ => rng.pick(&fixed).to_string(),
    }
}

fn soup(rng: &mut Seeded, handle: &str) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for _ in 0..rng.below(12) {
        let name = rng.pick(&NAMES).to_string();
        serializer.append_pair(&name, &value(rng, handle));
    }
    serializer.finish()
}

async fn random_request(node: &TestNode, http: &reqwest::Client, rng: &mut Seeded, handle: &str) -> u16 {
    let (path, served) = ENDPOINTS[rng.below(ENDPOINTS.len())];
    let method = match rng.below(10) {
        0 => Method::PUT,
        1 => Method::OPTIONS,
        2 => Method::GET,
        _ => Method::from_bytes(served.as_bytes()).unwrap(),
    };
    let mut query = soup(rng, handle);
    if rng.below(2) == 0 {
        // A known client and redirect URI, so the soup reaches the checks behind them.
        let known = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", "demo")
            .append_pair("redirect_uri", REDIRECT_URI)
            .finish();
        query = format!("{known}&{query}");
    }
    let mut request = http.request(method, node.url(&format!("{path}?{query}")));
    let content_type = rng.pick(&[
        "application/x-www-form-urlencoded",
        "application/json",
        "text/plain",
        "",
        "application/x-www-form-urlencoded; charset=ISO-8859-1",
    ]);
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    let authorization =
        rng.pick(&["", "Basic ZGVtbzpkZW1vLXNlY3JldA==", "Basic ZGVtbzp3cm9uZw==", "Bearer a.b.c", "Basic", "Bearer"]);
    if !authorization.is_empty() {
        request = request.header("authorization", authorization);
    }
    if rng.below(3) == 0 {
        request = request.header(
            "cookie",
            format!("idp_session={}; idp_browser={}", value(rng, handle), value(rng, handle))
                .replace([';', '\u{7f}'], ""),
        );
    }
    let body = match rng.below(4) {
        0 => Vec::new(),
        1 => (0..rng.below(512)).map(|_| rng.next() as u8).collect(),
        _ => soup(rng, handle).into_bytes(),
    };
    match request.body(body).send().await {
        Ok(response) => response.status().as_u16(),
        // A header value the client refuses to send is not a server failure.
        Err(error) if error.is_builder() => 400,
        Err(error) => panic!("the node stopped answering: {error}"),
    }
}

/// The "Bad input": 300 seeded random requests (random endpoint, method, parameter soup, content type,
/// credentials and cookies) never get a 5xx, and the node answers normally afterwards.
#[actix_web::test]
async fn random_parameter_soups_never_get_a_5xx() {
    let node = TestNode::start().await;
    let handle = idp_proto::Handle::random(node.state.shard_count()).encode();
    let http = api();
    let mut rng = Seeded(0x1D9_2024);
    for index in 0..300 {
        let seed = rng.0;
        let status = random_request(&node, &http, &mut rng, &handle).await;
        assert!(status < 500, "request {index} (generator state {seed:#x}) got {status}");
    }
    node.must_be_healthy().await;
    let browser = Browser::new();
    assert!(browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await.param("code").is_some());
}
