//! One test per client rule, each checking the exact error text.

use super::super::validate::tests::{error_of, valid};
use super::super::Config;
use super::*;
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
fn redirect_uris_may_be_http_or_a_custom_scheme() {
    let mut accepted = client();
    accepted.redirect_uris = strings(&["http://localhost:8081/cb", "com.example.app:/cb", "https://a.example/cb?x=1"]);
    with_clients(vec![accepted]).validate().unwrap();
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
    client.jwks = Some(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}));
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

#[test]
fn id_token_algorithm_is_a_configured_one() {
    let expected = "config key `clients[1].id_token_signed_response_alg`: `ES256` is not one of keys.algorithms \
                    (RS256)";
    let mut config = with_clients(vec![client_with_id("first"), client()]);
    config.keys.algorithms = strings(&["RS256"]);
    config.clients[1].id_token_signed_response_alg = "ES256".into();
    assert_eq!(error_of(&config), expected);
}
