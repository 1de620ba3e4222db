//! The embedded configuration of `idp dev`: one confidential and one public demo client, and the user `alice`.
//! Token lifetimes keep their defaults, so dev behaves like production.

use super::{defaults, ClientConfig, Config, HttpConfig, TestingConfig, UserConfig};
use crate::password;

const DEMO_REDIRECT_URIS: &[&str] = &["http://127.0.0.1:8081/callback", "http://localhost:8081/callback"];
const DEMO_POST_LOGOUT_REDIRECT_URIS: &[&str] = &["http://127.0.0.1:8081/", "http://localhost:8081/"];
/// The resource server the confidential demo client may ask tokens for (RFC 8707).
const DEMO_AUDIENCES: &[&str] = &["https://api.example.com"];
const DEMO_PASSWORD: &str = "alice-password";

impl Config {
    /// The `idp dev` configuration, listening on `listen`, with issuer `http://{listen}` unless `issuer` is given.
    /// Hashes alice's password, so it takes one argon2 hash (tens of milliseconds).
    pub fn dev(listen: &str, issuer: Option<&str>) -> Config {
        Config {
            issuer: issuer.map_or_else(|| format!("http://{listen}"), str::to_string),
            shards: defaults::shards(),
            http: HttpConfig { listen: listen.to_string(), ..HttpConfig::default() },
            tls: None,
            keys: Default::default(),
            tokens: Default::default(),
            login: Default::default(),
            logout: Default::default(),
            branding: Default::default(),
            log: Default::default(),
            node: Default::default(),
            cluster: Default::default(),
            redis: Default::default(),
            admin: Default::default(),
            registration: Default::default(),
            audit: Default::default(),
            telemetry: Default::default(),
            clients: vec![demo_client(), demo_public_client()],
            users: vec![alice()],
            upstreams: Vec::new(),
            testing: TestingConfig::default(),
        }
    }
}

/// Confidential, first party, every grant and response type, and tokens for `https://api.example.com`. The token
/// endpoint also accepts its secret by `client_secret_post`.
fn demo_client() -> ClientConfig {
    ClientConfig {
        client_id: "demo".into(),
        name: Some("Demo application".into()),
        client_secret: Some("demo-secret".into()),
        grant_types: super::SUPPORTED_GRANT_TYPES.iter().map(|grant| grant.to_string()).collect(),
        response_types: super::SUPPORTED_RESPONSE_TYPES.iter().map(|response| response.to_string()).collect(),
        token_endpoint_auth_method: "client_secret_basic".into(),
        first_party: true,
        audiences: to_strings(DEMO_AUDIENCES),
        ..demo_client_base()
    }
}

/// Public (PKCE, no secret), third party: it sees the consent page.
fn demo_public_client() -> ClientConfig {
    ClientConfig {
        client_id: "demo-public".into(),
        name: Some("Demo public client".into()),
        client_secret: None,
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        response_types: vec!["code".into()],
        token_endpoint_auth_method: "none".into(),
        first_party: false,
        ..demo_client_base()
    }
}

fn demo_client_base() -> ClientConfig {
    ClientConfig {
        client_id: String::new(),
        name: None,
        client_secret: None,
        redirect_uris: to_strings(DEMO_REDIRECT_URIS),
        post_logout_redirect_uris: to_strings(DEMO_POST_LOGOUT_REDIRECT_URIS),
        grant_types: defaults::grant_types(),
        response_types: defaults::response_types(),
        token_endpoint_auth_method: defaults::token_endpoint_auth_method(),
        id_token_signed_response_alg: defaults::id_token_signed_response_alg(),
        first_party: false,
        jwks: None,
        scopes: Vec::new(),
        default_audience: None,
        audiences: Vec::new(),
    }
}

fn alice() -> UserConfig {
    UserConfig {
        username: "alice".into(),
        id: None,
        // Fails only if the operating system has no random numbers, and then nothing else could start either.
        password_hash: password::hash_password(DEMO_PASSWORD).expect("hash the dev user's password"),
        email: Some("alice@example.com".into()),
        email_verified: true,
        name: Some("Alice Liddell".into()),
        given_name: Some("Alice".into()),
        family_name: Some("Liddell".into()),
        disabled: false,
    }
}

fn to_strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| value.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokensConfig;

    #[test]
    fn dev_config_is_valid_and_uses_the_listen_address_as_issuer() {
        let config = Config::dev("127.0.0.1:8080", None);
        config.validate().unwrap();
        assert_eq!(config.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.http.listen, "127.0.0.1:8080");
    }

    #[test]
    fn dev_config_takes_a_given_issuer() {
        let config = Config::dev("0.0.0.0:8080", Some("https://idp.example.com"));
        config.validate().unwrap();
        assert_eq!(config.issuer, "https://idp.example.com");
    }

    #[test]
    fn dev_clients_are_the_confidential_and_the_public_demo() {
        let config = Config::dev("127.0.0.1:8080", None);
        let [demo, public] = &config.clients[..] else { panic!("two clients") };
        assert_eq!((demo.client_id.as_str(), demo.client_secret.as_deref()), ("demo", Some("demo-secret")));
        assert!(demo.first_party);
        assert_eq!(demo.grant_types.len(), 3);
        assert_eq!(demo.response_types.len(), 6);
        assert_eq!(demo.redirect_uris, DEMO_REDIRECT_URIS);
        assert_eq!(demo.post_logout_redirect_uris, DEMO_POST_LOGOUT_REDIRECT_URIS);
        assert_eq!(demo.audiences, ["https://api.example.com"]);
        assert_eq!(public.client_id, "demo-public");
        assert_eq!(public.token_endpoint_auth_method, "none");
        assert_eq!(public.client_secret, None);
        assert!(!public.first_party);
        assert_eq!(public.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(public.response_types, ["code"]);
        assert_eq!(public.name.as_deref(), Some("Demo public client"));
        assert!(public.audiences.is_empty());
    }

    #[test]
    fn dev_user_alice_logs_in_with_her_password() {
        let config = Config::dev("127.0.0.1:8080", None);
        let alice = &config.users[0];
        assert_eq!(alice.username, "alice");
        assert!(password::verify_password(&alice.password_hash, DEMO_PASSWORD));
        assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
        assert!(alice.email_verified);
        assert_eq!(alice.name.as_deref(), Some("Alice Liddell"));
        assert_eq!((alice.given_name.as_deref(), alice.family_name.as_deref()), (Some("Alice"), Some("Liddell")));
    }

    #[test]
    fn dev_keeps_the_default_token_lifetimes() {
        let config = Config::dev("127.0.0.1:8080", None);
        let defaults = TokensConfig::default();
        assert_eq!(config.tokens.access_token_ttl, defaults.access_token_ttl);
        assert_eq!(config.tokens.refresh_token_ttl, defaults.refresh_token_ttl);
        assert_eq!(config.tokens.session_ttl, defaults.session_ttl);
    }
}
