//! One test per client rule, each checking the exact error text.

use super::super::validate::tests::{error_of, valid};
use super::super::Config;
use super::*;
use idp_actors::jwt::Algorithm;
use idp_actors::keyring::keys::SigningKey;
use serde_json::json;

fn client() -> ClientConfig {
    valid().clients.remove(0)
}

fn with_clients(clients: Vec<ClientConfig>) -> Config {
    Config { clients, ..valid() }
}

fn error_with(change: impl FnOnce(&mut ClientConfig)) -> String {
    let mut changed = client();
    change(&mut changed);
    error_of(&with_clients(vec![client_with_id("first"), changed]))
}

fn client_with_id(client_id: &str) -> ClientConfig {
    ClientConfig { client_id: client_id.into(), ..client() }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| value.to_string()).collect()
}

#[test]
fn client_ids_are_non_empty_printable_and_unique() {
    assert_eq!(error_with(|client| client.client_id.clear()), "config key `clients[1].client_id`: must not be empty");
    let printable = "config key `clients[1].client_id`: must be printable ASCII";
    assert_eq!(error_with(|client| client.client_id = "tab\there".into()), printable);
    assert_eq!(error_with(|client| client.client_id = "café".into()), printable);
    let duplicate = "config key `clients[1].client_id`: `first` is used by an earlier client";
    assert_eq!(error_with(|client| client.client_id = "first".into()), duplicate);
}

#[test]
fn redirect_uris_are_absolute_without_fragment() {
    let expected =
        "config key `clients[1].redirect_uris[0]`: must be an absolute http(s) URL without a fragment (or a \
                    native app's custom-scheme URI)";
    for uri in ["/callback", "https://app.example.com/cb#frag", "", "app.example.com/cb"] {
        assert_eq!(error_with(|client| client.redirect_uris = strings(&[uri])), expected, "{uri}");
    }
}

#[test]
fn redirect_uris_may_be_https_loopback_http_or_a_custom_scheme() {
    let mut accepted = client();
    accepted.redirect_uris = strings(&[
        "http://localhost:8081/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:8081/cb",
        "com.example.app:/cb",
        "https://a.example/cb?x=1",
    ]);
    accepted.post_logout_redirect_uris = strings(&["http://127.0.0.1:8081/", "https://a.example/"]);
    with_clients(vec![accepted]).validate().unwrap();
}

/// RFC 9700 §2.1 and RFC 8252 §8.3: a code (or token) sent over plain http to another host can be read on the way;
/// http is for loopback redirects of native apps and development only. Post-logout URIs follow the same rule.
#[test]
fn http_redirect_uris_are_loopback_only() {
    let reason = "must use https: plain http is allowed only on a loopback host (127.0.0.1, [::1] or localhost)";
    for uri in ["http://app.example.com/cb", "http://10.0.0.5/cb", "http://0.0.0.0:8081/cb", "http://localhost.evil/cb"]
    {
        let expected = format!("config key `clients[1].redirect_uris[1]`: {reason}");
        let uris = strings(&["https://app.example.com/cb", uri]);
        assert_eq!(error_with(|client| client.redirect_uris = uris), expected, "{uri}");
    }
    let expected = format!("config key `clients[1].post_logout_redirect_uris[0]`: {reason}");
    let uris = strings(&["http://app.example.com/"]);
    assert_eq!(error_with(|client| client.post_logout_redirect_uris = uris), expected);
}

#[test]
fn redirect_uris_never_run_script() {
    let expected = "config key `clients[1].redirect_uris[1]`: must not use the `javascript` scheme";
    let uris = strings(&["https://app.example.com/cb", "javascript:alert(1)"]);
    assert_eq!(error_with(|client| client.redirect_uris = uris), expected);
}

#[test]
fn post_logout_redirect_uris_follow_the_same_rules() {
    let expected = "config key `clients[1].post_logout_redirect_uris[0]`: must be an absolute http(s) URL without a \
                    fragment (or a native app's custom-scheme URI)";
    assert_eq!(error_with(|client| client.post_logout_redirect_uris = strings(&["/bye"])), expected);
}

#[test]
fn grant_types_are_supported_ones() {
    let expected = "config key `clients[1].grant_types[1]`: unsupported grant type `password` (expected one of: \
                    authorization_code, refresh_token, client_credentials)";
    assert_eq!(error_with(|client| client.grant_types = strings(&["authorization_code", "password"])), expected);
}

#[test]
fn response_types_are_supported_ones() {
    let expected = "config key `clients[1].response_types[0]`: unsupported response type `token` (expected one of: \
                    code, id_token, id_token token, code id_token, code token, code id_token token)";
    assert_eq!(error_with(|client| client.response_types = strings(&["token"])), expected);
    let mut every = client();
    every.response_types = strings(SUPPORTED_RESPONSE_TYPES);
    with_clients(vec![every]).validate().unwrap();
}

#[test]
fn auth_methods_are_supported_ones() {
    let expected = "config key `clients[1].token_endpoint_auth_method`: unsupported method `tls_client_auth` \
                    (expected one of: client_secret_basic, client_secret_post, private_key_jwt, none)";
    assert_eq!(error_with(|client| client.token_endpoint_auth_method = "tls_client_auth".into()), expected);
}

#[test]
fn secret_methods_need_a_secret() {
    let expected = "config key `clients[1].client_secret`: is required for token_endpoint_auth_method \
                    `client_secret_post`";
    let error = error_with(|client| {
        client.token_endpoint_auth_method = "client_secret_post".into();
        client.client_secret = None;
    });
    assert_eq!(error, expected);
    let empty = "config key `clients[1].client_secret`: must not be empty";
    assert_eq!(error_with(|client| client.client_secret = Some(String::new())), empty);
}

fn public(client: &mut ClientConfig) {
    client.token_endpoint_auth_method = "none".into();
    client.client_secret = None;
}

#[test]
fn public_clients_have_no_secret() {
    let expected = "config key `clients[1].client_secret`: must be absent for a public client \
                    (token_endpoint_auth_method `none`)";
    let error = error_with(|client| {
        public(client);
        client.client_secret = Some("web-secret".into());
    });
    assert_eq!(error, expected);
    assert!(!error.contains("web-secret"));
}

#[test]
fn public_clients_may_not_use_client_credentials() {
    let expected = "config key `clients[1].grant_types`: a public client (token_endpoint_auth_method `none`) may \
                    not use client_credentials";
    let error = error_with(|client| {
        public(client);
        client.grant_types = strings(&["authorization_code", "client_credentials"]);
    });
    assert_eq!(error, expected);
}

fn private_key_jwt(client: &mut ClientConfig) {
    client.token_endpoint_auth_method = "private_key_jwt".into();
    client.client_secret = None;
    client.jwks = Some(json!({"keys": [public_jwk(Algorithm::ES256)]}));
}

fn public_jwk(alg: Algorithm) -> serde_json::Value {
    SigningKey::generate(alg).unwrap().public_jwk()
}

/// An RSA public key of `bits` bits (the modulus is not a real one: keys under 2048 bits are skipped unparsed).
fn rsa_jwk_of(bits: usize) -> serde_json::Value {
    use base64::Engine;
    let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xc1; bits / 8]);
    json!({"kty": "RSA", "alg": "RS256", "n": modulus, "e": "AQAB"})
}

#[test]
fn private_key_jwt_needs_a_jwk_set() {
    let expected = "config key `clients[1].jwks`: private_key_jwt needs a JWK Set: an object with a non-empty \
                    `keys` array of keys";
    for jwks in [None, Some(json!({"keys": []})), Some(json!([{"kty": "EC"}])), Some(json!({"keys": ["x"]}))] {
        let error = error_with(|client| {
            private_key_jwt(client);
            client.jwks = jwks.clone();
        });
        assert_eq!(error, expected, "{jwks:?}");
    }
    let mut accepted = client();
    private_key_jwt(&mut accepted);
    with_clients(vec![accepted]).validate().unwrap();
}

/// A JWK Set whose keys the token endpoint would all skip (a shared HMAC secret, RSA under 2048 bits, an
/// encryption key, another curve) would make every request of the client fail: it is refused at start.
#[test]
fn private_key_jwt_needs_a_usable_signing_key() {
    let expected = "config key `clients[1].jwks`: no usable signing key (RS256 with RSA ≥ 2048 bits, ES256 P-256, \
                    or EdDSA Ed25519)";
    let mut encryption_key = public_jwk(Algorithm::ES256);
    encryption_key["use"] = json!("enc");
    let unusable = [
        json!({"kty": "oct", "alg": "HS256", "k": "c2VjcmV0LXNoYXJlZC13aXRoLXRoZS1jbGllbnQ"}),
        rsa_jwk_of(1024),
        encryption_key,
        json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
    ];
    for key in &unusable {
        let error = error_with(|client| {
            private_key_jwt(client);
            client.jwks = Some(json!({"keys": [key]}));
        });
        assert_eq!(error, expected, "{key}");
    }
    let all_unusable = error_with(|client| {
        private_key_jwt(client);
        client.jwks = Some(json!({ "keys": unusable }));
    });
    assert_eq!(all_unusable, expected);
    // One usable key among unusable ones is enough: the others are skipped, as at the token endpoint.
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let mut accepted = client();
        private_key_jwt(&mut accepted);
        accepted.jwks = Some(json!({"keys": [rsa_jwk_of(1024), public_jwk(alg)]}));
        with_clients(vec![accepted]).validate().unwrap();
    }
}

#[test]
fn private_key_jwt_keys_are_well_formed() {
    let expected = "config key `clients[1].jwks`: invalid jwk set: p-256 coordinates must be 32 bytes";
    let error = error_with(|client| {
        private_key_jwt(client);
        client.jwks = Some(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}));
    });
    assert_eq!(error, expected);
}

#[test]
fn private_key_jwt_has_no_secret() {
    let expected = "config key `clients[1].client_secret`: must be absent for token_endpoint_auth_method \
                    `private_key_jwt`";
    let error = error_with(|client| {
        private_key_jwt(client);
        client.client_secret = Some("web-secret".into());
    });
    assert_eq!(error, expected);
}

#[test]
fn browser_flows_need_a_redirect_uri() {
    let expected = "config key `clients[1].redirect_uris`: at least one is required for the authorization_code \
                    grant or an implicit response type";
    assert_eq!(error_with(|client| client.redirect_uris.clear()), expected);
    let error = error_with(|client| {
        client.redirect_uris.clear();
        client.grant_types = strings(&["client_credentials"]);
        client.response_types = strings(&["id_token"]);
    });
    assert_eq!(error, expected, "an implicit response type answers at a redirect URI");
    // The default `response_types = ["code"]` is unusable without the authorization_code grant: no URI needed.
    let mut service = client();
    service.redirect_uris.clear();
    service.grant_types = strings(&["client_credentials"]);
    service.response_types = strings(&["code"]);
    with_clients(vec![service]).validate().unwrap();
}

/// RFC 8707 §2: `audiences` and `default_audience` are compared exactly with what a request names; an empty one
/// is a mistake, never a wildcard.
#[test]
fn audiences_are_non_empty() {
    let expected = "config key `clients[1].audiences[1]`: must not be empty";
    let audiences = strings(&["https://api.example.com", ""]);
    assert_eq!(error_with(|client| client.audiences = audiences), expected);
    let expected = "config key `clients[1].default_audience`: must not be empty";
    assert_eq!(error_with(|client| client.default_audience = Some(String::new())), expected);
    let mut accepted = client();
    accepted.audiences = strings(&["https://api.example.com", "inventory-api", "urn:example:orders"]);
    accepted.default_audience = Some("https://api.example.com".into());
    with_clients(vec![accepted]).validate().unwrap();
}

#[test]
fn id_token_algorithm_is_a_configured_one() {
    let expected = "config key `clients[1].id_token_signed_response_alg`: `ES256` is not one of keys.algorithms \
                    (RS256)";
    let mut config = with_clients(vec![client_with_id("first"), client()]);
    config.keys.algorithms = strings(&["RS256"]);
    config.clients[1].id_token_signed_response_alg = "ES256".into();
    assert_eq!(error_of(&config), expected);
}
