//! `client_credentials` (RFC 6749 §4.4) with RFC 9068 JWT access tokens, and client authentication at the token
//! endpoint: `client_secret_basic`, `client_secret_post` and `private_key_jwt` (RFC 7523, OIDC Core §9).

use crate::client::*;
use crate::harness::*;
use idp_actors::jwt::{self, Algorithm};
use idp_actors::keyring::keys::SigningKey;
use serde_json::{json, Value};

const CLIENT_CREDENTIALS: (&str, &str) = ("grant_type", "client_credentials");
const JWT_CLIENT: &str = "jwt-client";

/// An access token verified against the served JWKS: its header and claims.
async fn must_verify_access_token(node: &TestNode, token: &str) -> (Value, Value) {
    let jwks: Value = reqwest::get(node.url("/jwks")).await.unwrap().json().await.unwrap();
    let keys = jwt::verifying_keys_from_jwks(&jwks).expect("a usable JWKS");
    let (header, claims) = jwt::verify(token, &keys).expect("the access token verifies against the JWKS");
    // RFC 7515 §4.1.4: the token names its key, so verifiers need not try every key.
    assert!(header.kid.is_some(), "the access token header names its key");
    (jwt_parts(token).0, Value::Object(claims))
}

/// RFC 9068 §2.1-§2.2: header `typ: at+jwt`, and claims `iss exp aud sub client_id iat jti`; for
/// `client_credentials` the subject is the client itself (§2.2 note on `sub`). RFC 6749 §4.4.3: no refresh token.
#[actix_web::test]
async fn client_credentials_issues_an_rfc9068_jwt_access_token() {
    let node = TestNode::start().await;
    let reply = must_token(&node, &DEMO_AUTH, &[CLIENT_CREDENTIALS]).await;
    assert!(reply.json.get("refresh_token").is_none(), "RFC 6749 §4.4.3: no refresh token");
    assert!(reply.json.get("id_token").is_none(), "no user, no ID token");
    assert!(reply.json["expires_in"].as_u64().unwrap() > 0);
    let (header, claims) = must_verify_access_token(&node, &reply.str("access_token")).await;
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["iss"], node.issuer.as_str());
    assert_eq!(claims["sub"], "demo");
    assert_eq!(claims["client_id"], "demo");
    // RFC 9068 §4, RFC 8725 §3.12: the default audience is the provider (the resource server of /userinfo), never
    // the client id, which would make the access token pass for an ID token at a careless RP.
    assert_eq!(claims["aud"], node.issuer.as_str(), "the default audience is the issuer");
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert_eq!(iat, node.now_secs());
    assert_eq!(exp - iat, reply.json["expires_in"].as_u64().unwrap());
    assert!(claims["jti"].as_str().is_some_and(|jti| jti.len() >= 32), "a unique jti");
    let second = must_token(&node, &DEMO_AUTH, &[CLIENT_CREDENTIALS]).await;
    let (_, second_claims) = must_verify_access_token(&node, &second.str("access_token")).await;
    assert_ne!(claims["jti"], second_claims["jti"]);
    // The token is live at introspection (RFC 7662 §2.2) with the same claims.
    let introspection = introspect(&node, &reply.str("access_token")).await;
    assert_eq!(introspection.json["active"], true);
    assert_eq!(introspection.json["client_id"], "demo");
}

/// RFC 8707 §2 (`resource`) and the common `audience` parameter name the token's audience among those registered
/// for the client (`audiences`, or its default); without either the client's default audience applies (RFC 9068
/// §3): `default_audience`, else the issuer.
#[actix_web::test]
async fn client_credentials_audience_comes_from_resource_audience_or_the_default() {
    let node = TestNode::start_with(|config| {
        let mut orders = demo_like_client(config, "orders-worker", "ES256");
        orders.default_audience = Some("https://orders.example.com/".into());
        orders.audiences = vec!["https://api.example.com".into(), "inventory-api".into()];
        config.clients.push(orders);
    })
    .await;
    const ORDERS: ClientAuth = ClientAuth::Basic("orders-worker", "demo-secret");
    let cases = [
        (DEMO_AUTH, Some(("resource", "https://api.example.com")), "https://api.example.com"),
        (DEMO_AUTH, Some(("audience", "https://api.example.com")), "https://api.example.com"),
        (DEMO_AUTH, Some(("resource", node.issuer.as_str())), node.issuer.as_str()),
        (DEMO_AUTH, None, node.issuer.as_str()),
        (ORDERS, Some(("audience", "inventory-api")), "inventory-api"),
        (ORDERS, Some(("resource", "https://orders.example.com/")), "https://orders.example.com/"),
        (ORDERS, None, "https://orders.example.com/"),
    ];
    for (auth, extra, audience) in cases {
        let mut form = vec![CLIENT_CREDENTIALS];
        form.extend(extra);
        let reply = must_token(&node, &auth, &form).await;
        let (header, claims) = must_verify_access_token(&node, &reply.str("access_token")).await;
        assert_eq!(claims["aud"], audience, "{extra:?}");
        assert_eq!(header["typ"], "at+jwt");
    }
}

/// RFC 8707 §2: a client gets tokens only for the audiences registered for it; any other `resource` or `audience`
/// (a prefix or a variant of a registered one, another client's, the client's own id) is `invalid_target`, and no
/// token is issued.
#[actix_web::test]
async fn client_credentials_refuses_an_unregistered_audience_with_invalid_target() {
    let node = TestNode::start_with(|config| {
        let mut inventory = demo_like_client(config, "inventory-worker", "ES256");
        inventory.audiences = vec!["inventory-api".into()];
        config.clients.push(inventory);
    })
    .await;
    let refused = [
        ("resource", "https://evil.example.com"),
        ("resource", "https://api.example.com/"),
        ("resource", "https://api.example.com/orders"),
        ("resource", "HTTPS://API.EXAMPLE.COM"),
        ("audience", "inventory-api"),
        ("audience", "demo"),
        ("audience", "anything"),
    ];
    for extra in refused {
        let reply = token(&node, &DEMO_AUTH, &[CLIENT_CREDENTIALS, extra]).await;
        reply.must_fail(400, "invalid_target");
        assert!(reply.json.get("access_token").is_none(), "{extra:?}");
    }
    let inventory = ClientAuth::Basic("inventory-worker", "demo-secret");
    let reply = must_token(&node, &inventory, &[CLIENT_CREDENTIALS, ("audience", "inventory-api")]).await;
    assert_eq!(jwt_parts(&reply.str("access_token")).1["aud"], "inventory-api");
}

/// RFC 8707 §2: `resource` must be an absolute URI without a fragment; anything else is `invalid_target` ("the
/// requested resource is invalid ... or malformed"), not a token. Naming both `resource` and `audience` is
/// ambiguous: `invalid_request`.
#[actix_web::test]
async fn client_credentials_refuses_a_malformed_resource() {
    let node = TestNode::start().await;
    for resource in ["not a uri", "/relative", "https://api.example.com#section"] {
        token(&node, &DEMO_AUTH, &[CLIENT_CREDENTIALS, ("resource", resource)]).await.must_fail(400, "invalid_target");
    }
    let both = [CLIENT_CREDENTIALS, ("resource", "https://api.example.com"), ("audience", "https://api.example.com")];
    token(&node, &DEMO_AUTH, &both).await.must_fail(400, "invalid_request");
}

/// RFC 6749 §2.3.1: `client_secret_basic` and `client_secret_post` both authenticate `demo`; a wrong secret is
/// `invalid_client` (401, with a `WWW-Authenticate` challenge for Basic, §5.2).
#[actix_web::test]
async fn client_secret_basic_and_post_authenticate_and_wrong_secrets_do_not() {
    let node = TestNode::start().await;
    must_token(&node, &DEMO_AUTH, &[CLIENT_CREDENTIALS]).await;
    must_token(&node, &ClientAuth::Post(DEMO.0, DEMO.1), &[CLIENT_CREDENTIALS]).await;
    let basic = token(&node, &ClientAuth::Basic("demo", "wrong-secret"), &[CLIENT_CREDENTIALS]).await;
    basic.must_fail(401, "invalid_client");
    assert!(basic.header("www-authenticate").is_some_and(|challenge| challenge.starts_with("Basic")));
    token(&node, &ClientAuth::Post("demo", "wrong-secret"), &[CLIENT_CREDENTIALS])
        .await
        .must_fail(401, "invalid_client");
    token(&node, &ClientAuth::Basic("nobody", "demo-secret"), &[CLIENT_CREDENTIALS])
        .await
        .must_fail(401, "invalid_client");
    token(&node, &ClientAuth::Nothing, &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
}

/// RFC 6749 §2.3: a client must not use more than one authentication method in a request.
#[actix_web::test]
async fn two_client_authentication_methods_at_once_are_refused() {
    let node = TestNode::start().await;
    let form = [CLIENT_CREDENTIALS, ("client_id", "demo"), ("client_secret", "demo-secret")];
    token(&node, &DEMO_AUTH, &form).await.must_fail(400, "invalid_request");
    // A body client_id naming another client than the Basic credentials is a contradiction, not a choice.
    token(&node, &DEMO_AUTH, &[CLIENT_CREDENTIALS, ("client_id", "demo-public")])
        .await
        .must_fail(400, "invalid_request");
}

/// RFC 6749 §4.4 and §2.1: only confidential clients may use `client_credentials`; a public client (no
/// authentication at all) is refused.
#[actix_web::test]
async fn public_client_cannot_use_client_credentials() {
    let node = TestNode::start().await;
    token(&node, &ClientAuth::Public("demo-public"), &[CLIENT_CREDENTIALS]).await.must_fail(400, "unauthorized_client");
}

/// A node with a `private_key_jwt` client whose JWKS holds the public half of `key`.
async fn node_with_jwt_client(key: &SigningKey) -> TestNode {
    let jwks = json!({ "keys": [key.public_jwk()] });
    TestNode::start_with(move |config| {
        let mut client = demo_like_client(config, JWT_CLIENT, "ES256");
        client.client_secret = None;
        client.token_endpoint_auth_method = "private_key_jwt".into();
        client.jwks = Some(jwks);
        config.clients.push(client);
    })
    .await
}

/// RFC 7523 §3 claims of a client assertion for the node's token endpoint, valid for a minute from the node's now.
fn assertion_claims(node: &TestNode) -> Value {
    let now = node.now_secs();
    let jti = base64_random();
    json!({"iss": JWT_CLIENT, "sub": JWT_CLIENT, "aud": node.url("/token"), "iat": now, "exp": now + 60, "jti": jti})
}

fn base64_random() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes())
}

fn assertion(key: &SigningKey, claims: &Value) -> ClientAuth {
    ClientAuth::Assertion(key.sign_jwt("JWT", claims))
}

/// RFC 7523 §2.2 and §3, OIDC Core §9 `private_key_jwt`: an assertion signed with a key of the client's JWKS
/// authenticates it; the token it gets is the client's.
#[actix_web::test]
async fn private_key_jwt_authenticates_with_a_registered_key() {
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let key = SigningKey::generate(alg).unwrap();
        let node = node_with_jwt_client(&key).await;
        let reply = must_token(&node, &assertion(&key, &assertion_claims(&node)), &[CLIENT_CREDENTIALS]).await;
        let (_, claims) = must_verify_access_token(&node, &reply.str("access_token")).await;
        assert_eq!(claims["client_id"], JWT_CLIENT, "{alg}");
        // `aud` may also be the issuer (RFC 7523 §3 point 3).
        let mut claims = assertion_claims(&node);
        claims["aud"] = json!([node.issuer]);
        must_token(&node, &assertion(&key, &claims), &[CLIENT_CREDENTIALS]).await;
    }
}

/// RFC 7523 §3 point 7 and RFC 9700 §2.5: an assertion's `jti` is used once; a replayed (e.g. intercepted)
/// assertion is refused.
#[actix_web::test]
async fn replayed_client_assertion_is_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let node = node_with_jwt_client(&key).await;
    let auth = assertion(&key, &assertion_claims(&node));
    must_token(&node, &auth, &[CLIENT_CREDENTIALS]).await;
    token(&node, &auth, &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
}

/// RFC 7523 §3 point 3: the assertion's audience must identify this server; one made for another server (a
/// malicious RP relaying it) is refused.
#[actix_web::test]
async fn client_assertion_for_another_audience_is_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let node = node_with_jwt_client(&key).await;
    for audience in [json!("https://other-idp.example.com/token"), json!(node.url("/userinfo")), json!([]), Value::Null]
    {
        let mut claims = assertion_claims(&node);
        claims["aud"] = audience;
        token(&node, &assertion(&key, &claims), &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
    }
}

/// RFC 7523 §3 point 4: an expired assertion is refused (here: made valid for a minute, presented two minutes
/// later); so is one living unreasonably long.
#[actix_web::test]
async fn expired_or_long_lived_client_assertion_is_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let node = node_with_jwt_client(&key).await;
    let auth = assertion(&key, &assertion_claims(&node));
    node.advance_secs(120);
    token(&node, &auth, &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
    let mut claims = assertion_claims(&node);
    claims["exp"] = json!(node.now_secs() + 30 * 86_400);
    token(&node, &assertion(&key, &claims), &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
}

/// RFC 7523 §3 point 9 and RFC 8725 §3.1: only a signature by a registered key counts: another key, an
/// `alg: none` assertion, `iss` differing from `sub`, or a missing `jti` are all refused.
#[actix_web::test]
async fn forged_client_assertions_are_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let node = node_with_jwt_client(&key).await;
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    token(&node, &assertion(&stranger, &assertion_claims(&node)), &[CLIENT_CREDENTIALS])
        .await
        .must_fail(401, "invalid_client");
    let unsigned = unsigned_jwt(&json!({"alg": "none", "typ": "JWT"}), &assertion_claims(&node));
    token(&node, &ClientAuth::Assertion(unsigned), &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
    let mut claims = assertion_claims(&node);
    claims["iss"] = json!("demo");
    token(&node, &assertion(&key, &claims), &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
    let mut claims = assertion_claims(&node);
    claims.as_object_mut().unwrap().remove("jti");
    token(&node, &assertion(&key, &claims), &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
    // A client registered for secrets cannot switch to an assertion, nor the JWT client to a secret.
    let mut claims = assertion_claims(&node);
    (claims["iss"], claims["sub"]) = (json!("demo"), json!("demo"));
    token(&node, &assertion(&key, &claims), &[CLIENT_CREDENTIALS]).await.must_fail(401, "invalid_client");
    token(&node, &ClientAuth::Post(JWT_CLIENT, "demo-secret"), &[CLIENT_CREDENTIALS])
        .await
        .must_fail(401, "invalid_client");
    // RFC 7521 §4.2: the assertion type must be the JWT bearer one.
    let form = [CLIENT_CREDENTIALS, ("client_assertion_type", "urn:example:other"), ("client_assertion", "a.b.c")];
    token(&node, &ClientAuth::Nothing, &form).await.must_fail(400, "invalid_request");
}

/// RFC 9110 §11.1 with RFC 6749 §2.3.1: the `Basic` scheme name is case-insensitive.
#[actix_web::test]
async fn basic_scheme_is_case_insensitive() {
    let node = TestNode::start().await;
    for scheme in ["Basic", "basic", "BASIC"] {
        let response = api()
            .post(node.url("/token"))
            .header("authorization", format!("{scheme} ZGVtbzpkZW1vLXNlY3JldA=="))
            .form(&[CLIENT_CREDENTIALS])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
}
