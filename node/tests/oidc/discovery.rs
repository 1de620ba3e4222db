//! OpenID Connect Discovery 1.0 §3-§4 metadata and the JWKS (RFC 7517).

use crate::harness::*;
use serde_json::Value;

async fn must_get_json(node: &TestNode, path: &str) -> (reqwest::header::HeaderMap, Value) {
    let response = reqwest::get(node.url(path)).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let headers = response.headers().clone();
    (headers, response.json().await.unwrap())
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().unwrap_or_else(|| panic!("an array: {value}")).iter().map(|item| item.as_str().unwrap()).collect()
}

/// OIDC Discovery 1.0 §3 and §4.3: every REQUIRED member, the issuer identical to the node's, every endpoint under
/// it, and the capabilities the issue names (no request objects, S256 only, RFC 9207 `iss`).
#[actix_web::test]
async fn discovery_document_is_complete() {
    let node = TestNode::start().await;
    let (headers, metadata) = must_get_json(&node, "/.well-known/openid-configuration").await;
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(metadata["issuer"], node.issuer.as_str(), "§4.3: issuer identical to the one queried");
    for (member, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
        ("introspection_endpoint", "/introspect"),
        ("revocation_endpoint", "/revoke"),
        ("end_session_endpoint", "/logout"),
    ] {
        assert_eq!(metadata[member], node.url(path).as_str(), "{member}");
    }
    let response_types = strings(&metadata["response_types_supported"]);
    for response_type in ["code", "id_token", "id_token token", "code id_token", "code token", "code id_token token"] {
        assert!(response_types.contains(&response_type), "{response_type}");
    }
    assert!(!response_types.contains(&"token"), "RFC 9700 §2.1.2: no plain implicit grant");
    assert_eq!(strings(&metadata["response_modes_supported"]), ["query", "fragment", "form_post"]);
    assert_eq!(strings(&metadata["subject_types_supported"]), ["public"]);
    let algorithms = strings(&metadata["id_token_signing_alg_values_supported"]);
    for alg in ["RS256", "ES256", "EdDSA"] {
        assert!(algorithms.contains(&alg), "{alg}");
    }
    assert!(!algorithms.contains(&"none"));
    let scopes = strings(&metadata["scopes_supported"]);
    for scope in ["openid", "profile", "email", "offline_access"] {
        assert!(scopes.contains(&scope), "{scope}");
    }
    let grants = strings(&metadata["grant_types_supported"]);
    for grant in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(grants.contains(&grant), "{grant}");
    }
    let auth_methods = strings(&metadata["token_endpoint_auth_methods_supported"]);
    for method in ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"] {
        assert!(auth_methods.contains(&method), "{method}");
    }
    assert_eq!(metadata["request_parameter_supported"], false);
    assert_eq!(metadata["request_uri_parameter_supported"], false);
    assert_eq!(strings(&metadata["code_challenge_methods_supported"]), ["S256"]);
    assert_eq!(metadata["authorization_response_iss_parameter_supported"], true);
    let claims = strings(&metadata["claims_supported"]);
    for claim in ["sub", "iss", "auth_time", "email", "email_verified", "name"] {
        assert!(claims.contains(&claim), "{claim}");
    }
    let prompts = strings(&metadata["prompt_values_supported"]);
    for prompt in ["none", "login", "consent"] {
        assert!(prompts.contains(&prompt), "{prompt}");
    }
}

/// RFC 7517 §4-§5 and RFC 7518 §6: the JWKS holds a signing key for each of RS256, ES256 and EdDSA, each with
/// `kid`, `use: sig`, `alg` and only public members; the relying party accepts it.
#[actix_web::test]
async fn jwks_has_public_keys_for_every_algorithm_and_no_private_members() {
    let node = TestNode::start().await;
    let (headers, jwks) = must_get_json(&node, "/jwks").await;
    assert!(headers["content-type"].to_str().unwrap().contains("json"));
    let keys = jwks["keys"].as_array().expect("a keys array");
    for (alg, kty) in [("RS256", "RSA"), ("ES256", "EC"), ("EdDSA", "OKP")] {
        assert!(keys.iter().any(|key| key["alg"] == alg && key["kty"] == kty), "a {alg} key");
    }
    let mut kids = Vec::new();
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(key.get(private).is_none(), "private member {private} in {key}");
        }
        assert_eq!(key["use"], "sig");
        let kid = key["kid"].as_str().expect("a kid").to_string();
        assert!(!kids.contains(&kid), "kids are unique");
        kids.push(kid);
    }
    let metadata = crate::client::must_discover(&node).await;
    assert_eq!(metadata.jwks().keys().len(), keys.len(), "the relying party parses every key");
}

/// RFC 9110 §9.3.2: the cacheable documents answer HEAD like GET (caches and monitors probe with it).
#[actix_web::test]
async fn discovery_and_jwks_answer_head_requests() {
    let node = TestNode::start().await;
    let http = reqwest::Client::new();
    for path in ["/.well-known/openid-configuration", "/jwks"] {
        let response = http.head(node.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers()["content-type"].to_str().unwrap().contains("json"), "{path}");
        assert!(response.bytes().await.unwrap().is_empty(), "{path}: HEAD carries no body");
    }
}
