//! One test per rule, each checking the exact error text.

use super::*;
use std::sync::LazyLock;

/// A real argon2id hash, computed once for the whole test binary.
pub(crate) static PHC: LazyLock<String> = LazyLock::new(|| crate::password::hash_password("pw").unwrap());

/// A valid configuration with one confidential client and one user.
pub(crate) fn valid() -> Config {
    let text = format!(
        r#"
        issuer = "https://idp.example.com"
        [[clients]]
        client_id = "web"
        client_secret = "web-secret"
        redirect_uris = ["https://app.example.com/cb"]
        [[users]]
        username = "alice"
        password_hash = "{}"
        "#,
        *PHC
    );
    Config::from_toml_str(&text, Vec::new()).unwrap()
}

pub(crate) fn error_of(config: &Config) -> String {
    config.validate().unwrap_err().to_string()
}

fn issuer_error(issuer: &str) -> String {
    error_of(&Config { issuer: issuer.into(), ..valid() })
}

#[test]
fn the_base_configuration_is_valid() {
    valid().validate().unwrap();
}

#[test]
fn issuer_must_be_an_absolute_https_url() {
    assert_eq!(issuer_error("idp.example.com"), "config key `issuer`: must be an absolute https URL");
    assert_eq!(issuer_error("ftp://idp.example.com"), "config key `issuer`: must be an absolute https URL");
    let http = "config key `issuer`: must use https (http is allowed only on localhost or a loopback address)";
    assert_eq!(issuer_error("http://idp.example.com"), http);
    assert_eq!(issuer_error("http://0.0.0.0:8080"), http);
}

#[test]
fn issuer_may_use_http_on_loopback_hosts() {
    for issuer in ["http://localhost:8080", "http://127.0.0.1:8080", "http://127.1.2.3", "http://[::1]:8080"] {
        Config { issuer: issuer.into(), ..valid() }.validate().unwrap();
    }
}

/// Every route is mounted at the root of the origin: an issuer with a path would make discovery advertise
/// endpoints that answer 404.
#[test]
fn issuer_has_no_path() {
    let expected = "config key `issuer`: must have no path: serve the provider at the root of its origin";
    assert_eq!(issuer_error("http://127.0.0.1:18092/idp"), expected);
    assert_eq!(issuer_error("https://idp.example.com/tenant-a"), expected);
    Config { issuer: "https://idp.example.com:8443".into(), ..valid() }.validate().unwrap();
}

#[test]
fn issuer_has_no_query_fragment_credentials_or_trailing_slash() {
    assert_eq!(issuer_error("https://idp.example.com?a=b"), "config key `issuer`: must not have a query");
    assert_eq!(issuer_error("https://idp.example.com#top"), "config key `issuer`: must not have a fragment");
    assert_eq!(issuer_error("https://idp.example.com/"), "config key `issuer`: must not end with a slash");
    assert_eq!(issuer_error("https://idp.example.com/a/"), "config key `issuer`: must not end with a slash");
    let credentials = "config key `issuer`: must not contain a user name or password";
    assert_eq!(issuer_error("https://user:pw@idp.example.com"), credentials);
}

#[test]
fn shards_are_between_1_and_16384() {
    let expected = "config key `shards`: must be between 1 and 16384";
    assert_eq!(error_of(&Config { shards: 0, ..valid() }), expected);
    assert_eq!(error_of(&Config { shards: 16_385, ..valid() }), expected);
    Config { shards: 16_384, ..valid() }.validate().unwrap();
}

#[test]
fn http_listen_is_a_socket_address() {
    let mut config = valid();
    config.http.listen = "localhost".into();
    assert_eq!(error_of(&config), "config key `http.listen`: must be a socket address such as 127.0.0.1:8080");
}

#[test]
fn http_limits_have_floors() {
    let mut config = valid();
    config.http.body_limit = 1023;
    assert_eq!(error_of(&config), "config key `http.body_limit`: must be at least 1024 bytes");
    let mut config = valid();
    config.http.param_limit = 255;
    assert_eq!(error_of(&config), "config key `http.param_limit`: must be at least 256 bytes");
}

#[test]
fn tls_files_must_exist() {
    let mut config = valid();
    config.tls = Some(TlsConfig { cert: "/nonexistent/cert.pem".into(), key: "/nonexistent/key.pem".into() });
    assert_eq!(error_of(&config), "config key `tls.cert`: file /nonexistent/cert.pem does not exist or is not a file");
    let existing = std::env::current_exe().unwrap();
    config.tls = Some(TlsConfig { cert: existing.clone(), key: "/nonexistent/key.pem".into() });
    assert_eq!(error_of(&config), "config key `tls.key`: file /nonexistent/key.pem does not exist or is not a file");
    config.tls = Some(TlsConfig { cert: existing.clone(), key: existing });
    config.validate().unwrap();
}

fn with_algorithms(algorithms: &[&str]) -> Config {
    let mut config = valid();
    config.keys.algorithms = algorithms.iter().map(|algorithm| algorithm.to_string()).collect();
    config
}

#[test]
fn algorithms_are_a_non_empty_subset_including_rs256() {
    assert_eq!(error_of(&with_algorithms(&[])), "config key `keys.algorithms`: must not be empty");
    let unsupported = "config key `keys.algorithms[1]`: unsupported algorithm `HS256` (expected RS256, ES256 or EdDSA)";
    assert_eq!(error_of(&with_algorithms(&["RS256", "HS256"])), unsupported);
    let twice = "config key `keys.algorithms[1]`: `RS256` is listed twice";
    assert_eq!(error_of(&with_algorithms(&["RS256", "RS256"])), twice);
    let mandatory = "config key `keys.algorithms`: must include RS256 (mandatory in OpenID Connect)";
    assert_eq!(error_of(&with_algorithms(&["ES256", "EdDSA"])), mandatory);
    with_algorithms(&["RS256"]).validate().unwrap();
}

#[test]
fn rotation_is_longer_than_publication_ahead() {
    let mut config = valid();
    config.keys.publish_ahead = config.keys.rotate_every;
    assert_eq!(error_of(&config), "config key `keys.rotate_every`: must be longer than keys.publish_ahead");
}

#[test]
fn retired_keys_outlive_the_tokens_they_signed() {
    let mut config = valid();
    config.tokens.id_token_ttl = Duration::from_secs(2 * 86_400);
    assert_eq!(
        error_of(&config),
        "config key `keys.retain_after`: must be at least the longest token lifetime (2d, from \
         tokens.access_token_ttl and tokens.id_token_ttl)"
    );
    config.keys.retain_after = Duration::from_secs(2 * 86_400);
    config.validate().unwrap();
}

#[test]
fn code_ttl_is_between_1s_and_60s() {
    let expected = "config key `tokens.code_ttl`: must be between 1s and 60s";
    for code_ttl in [Duration::from_millis(999), Duration::from_secs(61)] {
        let mut config = valid();
        config.tokens.code_ttl = code_ttl;
        assert_eq!(error_of(&config), expected);
    }
    let mut config = valid();
    config.tokens.code_ttl = Duration::from_secs(1);
    config.validate().unwrap();
}

#[test]
fn token_lifetimes_are_at_least_a_second() {
    let mut config = valid();
    config.tokens.session_ttl = Duration::ZERO;
    assert_eq!(error_of(&config), "config key `tokens.session_ttl`: must be at least 1s");
}

#[test]
fn login_allows_at_least_one_failure() {
    let mut config = valid();
    config.login.max_failures = 0;
    assert_eq!(error_of(&config), "config key `login.max_failures`: must be at least 1");
}

#[test]
fn branding_colours_are_hex() {
    let mut config = valid();
    config.branding.primary_color = Some("#12345".into());
    assert_eq!(error_of(&config), "config key `branding.primary_color`: must be a colour such as #rgb or #rrggbb");
    config.branding.primary_color = Some("#1f6feb".into());
    config.branding.background_color = Some("red;}body{".into());
    assert_eq!(error_of(&config), "config key `branding.background_color`: must be a colour such as #rgb or #rrggbb");
    config.branding.background_color = Some("#FFF".into());
    config.validate().unwrap();
}

#[test]
fn branding_files_must_exist() {
    let mut config = valid();
    config.branding.logo = Some("/nonexistent/logo.svg".into());
    let expected = "config key `branding.logo`: file /nonexistent/logo.svg does not exist or is not a file";
    assert_eq!(error_of(&config), expected);
    let mut config = valid();
    config.branding.templates_dir = Some("/nonexistent/templates".into());
    assert_eq!(error_of(&config), "config key `branding.templates_dir`: must be an existing folder");
}

#[test]
fn log_format_is_pretty_or_json() {
    let mut config = valid();
    config.log.format = "xml".into();
    assert_eq!(error_of(&config), "config key `log.format`: must be `pretty` or `json`");
}

#[test]
fn log_level_is_a_tracing_filter() {
    let mut config = valid();
    config.log.level = "idp_node=loud".into();
    assert!(error_of(&config).starts_with("config key `log.level`: not a tracing filter: "));
}

fn with_users(users: Vec<UserConfig>) -> Config {
    Config { users, ..valid() }
}

fn user(username: &str) -> UserConfig {
    let mut user = valid().users.remove(0);
    user.username = username.into();
    user
}

fn user_with_id(username: &str, id: &str) -> UserConfig {
    UserConfig { id: Some(id.into()), ..user(username) }
}

#[test]
fn usernames_are_non_empty_and_unique() {
    assert_eq!(error_of(&with_users(vec![user("")])), "config key `users[0].username`: must not be empty");
    let duplicate = "config key `users[1].username`: `bob` is the username of users[0] (usernames ignore case)";
    assert_eq!(error_of(&with_users(vec![user("bob"), user("bob")])), duplicate);
}

/// Logins look usernames up lowercased (`Directory::user_by_name`): `Bob` and `bob` would be one login for two
/// accounts, even with distinct ids.
#[test]
fn usernames_are_unique_ignoring_case() {
    let expected = "config key `users[2].username`: `Bob` is the username of users[1] (usernames ignore case)";
    let users = vec![user("alice"), user_with_id("bob", "u-1"), user_with_id("Bob", "u-2")];
    assert_eq!(error_of(&with_users(users)), expected);
}

#[test]
fn user_ids_are_non_empty_and_unique() {
    let users = vec![user_with_id("a", "u-1"), user_with_id("b", "u-1")];
    let expected = "config key `users[1].id`: `u-1` is the subject id of users[0] (a user without `id` has its \
                    username as id)";
    assert_eq!(error_of(&with_users(users)), expected);
    assert_eq!(error_of(&with_users(vec![user_with_id("a", "")])), "config key `users[0].id`: must not be empty");
}

/// The account mix-up of a valid-looking file: `mallory` with `id = "bob"` and a user `bob` without an id would
/// both be `sub = bob`, so logging in as mallory would speak for bob. The effective id (`id`, else the username) is
/// what must be unique, whichever of the two comes first.
#[test]
fn effective_user_ids_are_unique() {
    let expected = "config key `users[1].username`: `bob` is the subject id of users[0] (a user without `id` has \
                    its username as id)";
    assert_eq!(error_of(&with_users(vec![user_with_id("mallory", "bob"), user("bob")])), expected);
    let expected = "config key `users[1].id`: `bob` is the subject id of users[0] (a user without `id` has its \
                    username as id)";
    assert_eq!(error_of(&with_users(vec![user("bob"), user_with_id("mallory", "bob")])), expected);
    // Ids are compared exactly (`sub` is case-sensitive, OIDC Core §5.7): `Bob` is another subject than `bob`.
    with_users(vec![user("bob"), user_with_id("mallory", "Bob")]).validate().unwrap();
}

#[test]
fn password_hashes_are_argon2id_phc_strings() {
    let expected = "config key `users[0].password_hash`: must be an argon2id PHC string ($argon2id$v=19$...), as \
                    printed by `idp hash-password`";
    let argon2i = PHC.replacen("$argon2id$", "$argon2i$", 1);
    for hash in ["plaintext-password", "", "$argon2id$v=19$m=19456,t=2,p=1$", argon2i.as_str()] {
        let mut alice = user("alice");
        alice.password_hash = hash.into();
        let error = error_of(&with_users(vec![alice]));
        assert_eq!(error, expected);
        assert!(hash.is_empty() || !error.contains(hash), "the hash must not be echoed");
    }
}

#[test]
fn emails_contain_an_at_sign() {
    let mut alice = user("alice");
    alice.email = Some("alice.example.com".into());
    assert_eq!(error_of(&with_users(vec![alice])), "config key `users[0].email`: must contain '@'");
}
