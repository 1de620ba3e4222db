//! The relying party's side: back-channel requests (token, userinfo, introspection, revocation), the HTTP client
//! adapter of the `openidconnect` crate, ID token verification against the served JWKS, and JWT helpers.

use crate::harness::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreIdTokenVerifier, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, AuthorizationCodeHash, ClientId, IssuerUrl, Nonce,
};
use reqwest::header::HeaderMap;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::Value;
use std::str::FromStr;

/// How a back-channel request authenticates its client.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// `client_secret_basic` (RFC 6749 §2.3.1).
    Basic(&'static str, &'static str),
    /// `client_secret_post`.
    Post(&'static str, &'static str),
    /// A public client: its `client_id` only.
    Public(&'static str),
    /// `private_key_jwt` (RFC 7523): the assertion.
    Assertion(String),
    Nothing,
}

pub const DEMO_AUTH: ClientAuth = ClientAuth::Basic(DEMO.0, DEMO.1);

/// A back-channel answer.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self { status, headers, text, json }
    }

    /// The OAuth `error` code of a JSON error body.
    pub fn error(&self) -> Option<&str> {
        self.json.get("error").and_then(Value::as_str)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an error with this status and `error` code.
    pub fn must_fail(&self, status: u16, error: &str) {
        assert_eq!((self.status.as_u16(), self.error()), (status, Some(error)), "unexpected answer: {}", self.text);
    }

    pub fn str(&self, name: &str) -> String {
        self.json.get(name).and_then(Value::as_str).unwrap_or_else(|| panic!("no {name} in {}", self.text)).to_string()
    }
}

/// A back-channel HTTP client (no cookies, no redirects).
pub fn api() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// POSTs a form to an endpoint with the client's authentication.
pub async fn post_form(node: &TestNode, path: &str, auth: &ClientAuth, form: &[(&str, &str)]) -> Reply {
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    let mut request = api().post(node.url(path));
    match auth {
        ClientAuth::Basic(id, secret) => request = request.basic_auth(id, Some(secret)),
        ClientAuth::Post(id, secret) => fields.extend([("client_id", *id), ("client_secret", *secret)]),
        ClientAuth::Public(id) => fields.push(("client_id", id)),
        ClientAuth::Assertion(assertion) => fields.extend([
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
        ]),
        ClientAuth::Nothing => {}
    }
    Reply::read(request.form(&fields).send().await.expect("back-channel POST")).await
}

pub async fn token(node: &TestNode, auth: &ClientAuth, form: &[(&str, &str)]) -> Reply {
    post_form(node, "/token", auth, form).await
}

/// A token request that must succeed; `Cache-Control: no-store` is checked on every one (RFC 6749 §5.1).
pub async fn must_token(node: &TestNode, auth: &ClientAuth, form: &[(&str, &str)]) -> Reply {
    let reply = token(node, auth, form).await;
    assert_eq!(reply.status, StatusCode::OK, "token request failed: {}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.str("token_type"), "Bearer");
    reply
}

/// The `demo` client redeems a code issued for `REDIRECT_URI`.
pub async fn redeem(node: &TestNode, code: &str, verifier: Option<&str>) -> Reply {
    let mut form = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT_URI)];
    form.extend(verifier.map(|verifier| ("code_verifier", verifier)));
    token(node, &DEMO_AUTH, &form).await
}

pub async fn must_redeem(node: &TestNode, code: &str, verifier: Option<&str>) -> Reply {
    let reply = redeem(node, code, verifier).await;
    assert_eq!(reply.status, StatusCode::OK, "code redemption failed: {}", reply.text);
    reply
}

pub async fn refresh(node: &TestNode, auth: &ClientAuth, refresh_token: &str) -> Reply {
    token(node, auth, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
}

/// Alice's code through `demo`'s code flow with PKCE and `scope`, logging in unless the browser has a session;
/// returns the code and its verifier.
pub async fn must_code(node: &TestNode, browser: &Browser, scope: &str) -> (String, String) {
    let (verifier, challenge) = pkce_pair();
    let params = AuthParams::demo("code")
        .set("scope", scope)
        .set("code_challenge", &challenge)
        .set("code_challenge_method", "S256");
    let page = browser.authorize(node, &params).await;
    let page = if page.is_login_form() { browser.must_log_in(node, &page).await } else { page };
    assert!(page.is_response_to(REDIRECT_URI), "a response to the client expected ({}): {}", page.status, page.body);
    (page.must_param("code"), verifier)
}

/// A fresh login of alice through `demo`, redeemed: the token response.
pub async fn must_login_tokens(node: &TestNode, scope: &str) -> Reply {
    let browser = Browser::new();
    let (code, verifier) = must_code(node, &browser, scope).await;
    must_redeem(node, &code, Some(&verifier)).await
}

/// `GET /userinfo` with the token in the Authorization header (RFC 6750 §2.1).
pub async fn userinfo(node: &TestNode, access_token: &str) -> Reply {
    Reply::read(api().get(node.url("/userinfo")).bearer_auth(access_token).send().await.expect("userinfo")).await
}

/// `POST /introspect` by `demo` (RFC 7662).
pub async fn introspect(node: &TestNode, token: &str) -> Reply {
    let reply = post_form(node, "/introspect", &DEMO_AUTH, &[("token", token)]).await;
    assert_eq!(reply.status, StatusCode::OK, "introspection failed: {}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    reply
}

pub async fn is_active(node: &TestNode, token: &str) -> bool {
    introspect(node, token).await.json["active"].as_bool().expect("active is a boolean")
}

/// An access token that works: userinfo answers and introspection says active.
pub async fn must_be_live(node: &TestNode, access_token: &str) {
    assert_eq!(userinfo(node, access_token).await.status, StatusCode::OK);
    assert!(is_active(node, access_token).await);
}

/// An access token that is dead everywhere at once: userinfo 401 with a Bearer challenge, introspection inactive.
pub async fn must_be_dead(node: &TestNode, access_token: &str) {
    let reply = userinfo(node, access_token).await;
    reply.must_fail(401, "invalid_token");
    assert!(reply.header("www-authenticate").is_some_and(|challenge| challenge.starts_with("Bearer")));
    assert!(!is_active(node, access_token).await);
}

/// Header and claims of a compact JWT, unverified.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS has three parts: {token}");
    let decode =
        |part: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON");
    (decode(parts[0]), decode(parts[1]))
}

/// A compact JWT with these parts and no signature (`alg: none` forgeries).
pub fn unsigned_jwt(header: &Value, claims: &Value) -> String {
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());
    format!("{}.{}.", encode(header), encode(claims))
}

/// The HTTP client of the `openidconnect` relying party, over reqwest.
pub async fn rp_http(request: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = api().request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
    let mut builder = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    Ok(builder.body(response.bytes().await?.to_vec()).expect("response parts are valid"))
}

/// Discovery and the JWKS, fetched and parsed by the relying party.
pub async fn must_discover(node: &TestNode) -> CoreProviderMetadata {
    let issuer = IssuerUrl::new(node.issuer.clone()).unwrap();
    CoreProviderMetadata::discover_async(issuer, &rp_http).await.expect("discovery and JWKS")
}

pub fn core_alg(alg: &str) -> CoreJwsSigningAlgorithm {
    match alg {
        "RS256" => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        "ES256" => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        "EdDSA" => CoreJwsSigningAlgorithm::EdDsa,
        other => panic!("unexpected alg {other}"),
    }
}

/// The relying party's verifier of `client_id`'s ID tokens: issuer, audience, expiry and the signature against the
/// served JWKS, accepting only `alg` (OIDC Core §3.1.3.7).
pub fn id_token_verifier<'a>(
    node: &TestNode,
    metadata: &CoreProviderMetadata,
    client_id: &str,
    alg: &str,
) -> CoreIdTokenVerifier<'a> {
    let issuer = IssuerUrl::new(node.issuer.clone()).unwrap();
    CoreIdTokenVerifier::new_public_client(ClientId::new(client_id.into()), issuer, metadata.jwks().clone())
        .set_allowed_algs([core_alg(alg)])
}

/// What an ID token carried beside itself.
#[derive(Default)]
pub struct Companions<'a> {
    pub nonce: Option<&'a str>,
    pub code: Option<&'a str>,
    pub access_token: Option<&'a str>,
}

/// Verifies an ID token as the relying party would, then its `c_hash` and `at_hash` (OIDC Core §3.3.2.11): each
/// present exactly when its companion is, and equal to the hash the relying party computes.
pub fn must_verify_id_token(
    node: &TestNode,
    metadata: &CoreProviderMetadata,
    client_id: &str,
    alg: &str,
    text: &str,
    with: &Companions,
) -> CoreIdTokenClaims {
    let id_token = CoreIdToken::from_str(text).expect("an ID token");
    let verifier = id_token_verifier(node, metadata, client_id, alg);
    let claims = match with.nonce {
        Some(nonce) => id_token.claims(&verifier, &Nonce::new(nonce.into())),
        None => id_token
            .claims(&verifier, |nonce: Option<&Nonce>| nonce.map_or(Ok(()), |_| Err("unexpected nonce".to_string()))),
    }
    .unwrap_or_else(|error| panic!("ID token does not verify: {error}"))
    .clone();
    let signing_alg = id_token.signing_alg().unwrap().clone();
    let key = id_token.signing_key(&verifier).expect("the signing key is in the JWKS");
    let expected_c_hash = with
        .code
        .map(|code| AuthorizationCodeHash::from_code(&AuthorizationCode::new(code.into()), &signing_alg, key).unwrap());
    assert_eq!(claims.code_hash(), expected_c_hash.as_ref(), "c_hash");
    if let Some(access_token) = with.access_token {
        let expected = AccessTokenHash::from_token(&AccessToken::new(access_token.into()), &signing_alg, key).unwrap();
        assert_eq!(claims.access_token_hash(), Some(&expected), "at_hash");
    }
    claims
}
