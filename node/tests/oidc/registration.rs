//! Dynamic client registration (RFC 7591) and its management (RFC 7592): the initial access token policy,
//! metadata errors, the read/update/delete lifecycle with a rotating registration access token, and a registered
//! client completing a code flow.

use crate::client::*;
use crate::harness::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const INITIAL_TOKEN: &str = "initial-token-for-tests";
async fn node_with(open: bool) -> TestNode {
    TestNode::start_with(|config| {
        config.registration.enabled = true;
        config.registration.open = open;
        config.registration.initial_access_tokens = vec![initial_token_hash()];
    })
    .await
}

fn initial_token_hash() -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, INITIAL_TOKEN.as_bytes());
    format!("sha256:{}", digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect::<String>())
}

async fn send(request: reqwest::RequestBuilder, token: Option<&str>, body: Option<&Value>) -> Reply {
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    Reply::read(request.send().await.expect("registration request")).await
}

async fn register(node: &TestNode, token: Option<&str>, metadata: &Value) -> Reply {
    send(api().post(node.url("/register")), token, Some(metadata)).await
}

fn web_client() -> Value {
    json!({"client_name": "Registered", "redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid profile"})
}

/// `registration_endpoint` is advertised only when registration is on; off, `/register` does not exist.
#[actix_web::test]
async fn discovery_advertises_registration_only_when_enabled() {
    let off = TestNode::start().await;
    let metadata: Value =
        reqwest::get(off.url("/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    assert!(metadata.get("registration_endpoint").is_none());
    assert_eq!(register(&off, None, &web_client()).await.status, StatusCode::NOT_FOUND);
    let on = node_with(false).await;
    let metadata: Value =
        reqwest::get(on.url("/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    assert_eq!(metadata["registration_endpoint"], on.url("/register"));
}

/// RFC 7591 §3: without, or with a wrong, initial access token: 401 `invalid_token` with a challenge; with one of
/// the configured tokens: 201; with open registration, no token is needed (but a wrong one is still refused).
#[actix_web::test]
async fn the_initial_access_token_policy() {
    let node = node_with(false).await;
    let missing = register(&node, None, &web_client()).await;
    missing.must_fail(401, "invalid_token");
    assert!(missing.header("www-authenticate").unwrap().starts_with("Bearer"));
    register(&node, Some("wrong-token"), &web_client()).await.must_fail(401, "invalid_token");
    let created = register(&node, Some(INITIAL_TOKEN), &web_client()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.header("cache-control"), Some("no-store"));

    let open = node_with(true).await;
    assert_eq!(register(&open, None, &web_client()).await.status, StatusCode::CREATED);
    register(&open, Some("wrong-token"), &web_client()).await.must_fail(401, "invalid_token");
}

/// RFC 7591 §3.2.2: `invalid_redirect_uri` for redirect URI rules, `invalid_client_metadata` for the rest; nothing
/// is registered.
#[actix_web::test]
async fn metadata_errors_use_the_spec_codes() {
    let node = node_with(true).await;
    let clients_before = node.state.directory().client_count();
    let cases = [
        (json!({"redirect_uris": ["https://app.example/cb#fragment"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["http://app.example/cb"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (json!({"redirect_uris": [REDIRECT_URI], "grant_types": ["password"]}), "invalid_client_metadata"),
        (json!({"redirect_uris": [REDIRECT_URI], "response_types": ["code id_token"]}), "invalid_client_metadata"),
        (json!({"redirect_uris": [REDIRECT_URI], "scope": "openid idp:admin"}), "invalid_client_metadata"),
        (
            json!({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (json!({"redirect_uris": [REDIRECT_URI], "jwks_uri": "https://app.example/jwks"}), "invalid_client_metadata"),
        (json!({"redirect_uris": [REDIRECT_URI], "id_token_signed_response_alg": "none"}), "invalid_client_metadata"),
        (json!(["not", "an", "object"]), "invalid_client_metadata"),
    ];
    for (metadata, code) in cases {
        let reply = register(&node, None, &metadata).await;
        assert_eq!((reply.status.as_u16(), reply.error()), (400, Some(code)), "{metadata}: {}", reply.text);
        assert!(!reply.json["error_description"].as_str().unwrap().is_empty());
    }
    assert_eq!(node.state.directory().client_count(), clients_before, "nothing registered");
}

/// RFC 7592: read, update and delete with the registration access token, which rotates on each read and update;
/// an old or wrong token and an unknown client are 401.
#[actix_web::test]
async fn the_rfc_7592_lifecycle() {
    let node = node_with(false).await;
    let created = register(&node, Some(INITIAL_TOKEN), &web_client()).await;
    let client_uri = created.str("registration_client_uri");
    let client_id = created.str("client_id");
    assert_eq!(client_uri, node.url(&format!("/register/{client_id}")));
    assert_eq!(created.json["client_secret_expires_at"], 0);
    assert_eq!(created.json["scope"], "openid profile");
    let first_token = created.str("registration_access_token");

    send(api().get(&client_uri), Some(INITIAL_TOKEN), None).await.must_fail(401, "invalid_token");
    let read = send(api().get(&client_uri), Some(&first_token), None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!((read.json["client_name"].as_str(), read.json.get("client_secret")), (Some("Registered"), None));
    let second_token = read.str("registration_access_token");
    assert_ne!(second_token, first_token);
    send(api().get(&client_uri), Some(&first_token), None).await.must_fail(401, "invalid_token");

    let mut update = web_client();
    update["client_id"] = client_id.clone().into();
    update["client_name"] = "Renamed".into();
    update["client_secret"] = "not-the-secret".into();
    send(api().put(&client_uri), Some(&second_token), Some(&update)).await.must_fail(400, "invalid_request");
    update["client_secret"] = created.str("client_secret").into();
    let updated = send(api().put(&client_uri), Some(&second_token), Some(&update)).await;
    assert_eq!(
        (updated.status, updated.json["client_name"].as_str()),
        (StatusCode::OK, Some("Renamed")),
        "{}",
        updated.text
    );
    assert!(updated.json.get("client_secret").is_none(), "the secret is kept, not reissued");
    let third_token = updated.str("registration_access_token");
    let secret: &'static str = Box::leak(created.str("client_secret").into_boxed_str());
    let id: &'static str = Box::leak(client_id.clone().into_boxed_str());
    let auth = ClientAuth::Basic(id, secret);
    // The secret still authenticates the client (its grants forbid client_credentials: unauthorized_client).
    token(&node, &auth, &[("grant_type", "client_credentials")]).await.must_fail(400, "unauthorized_client");

    let unknown = node.url("/register/no-such-client");
    send(api().get(&unknown), Some(&third_token), None).await.must_fail(401, "invalid_token");
    let deleted = send(api().delete(&client_uri), Some(&third_token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    send(api().get(&client_uri), Some(&third_token), None).await.must_fail(401, "invalid_token");
    token(&node, &auth, &[("grant_type", "client_credentials")]).await.must_fail(401, "invalid_client");
}

/// A registered client (not first-party: consent is asked) completes the code flow with PKCE.
#[actix_web::test]
async fn a_registered_client_completes_a_code_flow() {
    let node = node_with(true).await;
    let created = register(&node, None, &web_client()).await;
    let id: &'static str = Box::leak(created.str("client_id").into_boxed_str());
    let secret: &'static str = Box::leak(created.str("client_secret").into_boxed_str());
    let (verifier, challenge) = pkce_pair();
    let params = AuthParams::demo("code")
        .set("client_id", id)
        .set("scope", "openid profile")
        .set("code_challenge", &challenge)
        .set("code_challenge_method", "S256");
    let browser = Browser::new();
    let login = browser.authorize(&node, &params).await;
    let consent = browser.must_log_in(&node, &login).await;
    assert!(consent.is_consent_form(), "a registered client is never first-party: {}", consent.body);
    let page = browser.submit_consent(&node, &consent, "allow").await;
    let callback = browser.follow(&node, page).await;
    let code = callback.must_param("code");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens = must_token(&node, &ClientAuth::Basic(id, secret), &form).await;
    let (_, claims) = jwt_parts(&tokens.str("id_token"));
    assert_eq!((claims["aud"].as_str(), claims["sub"].as_str()), (Some(id), Some("alice")));
    assert_eq!(userinfo(&node, &tokens.str("access_token")).await.status, StatusCode::OK);
    // Registered clients share the `dynamic` label: anyone registering cannot add metric series.
    let metrics = idp_node::telemetry::metrics::render();
    assert!(!metrics.contains(id), "a registered client's id is a label value:\n{metrics}");
    let dynamic = r#"client_id="dynamic""#;
    assert!(metrics.lines().any(|line| line.starts_with("idp_tokens_issued_total{") && line.contains(dynamic)));
}
