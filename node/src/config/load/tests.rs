use super::*;
use crate::password;
use std::time::Duration;

const MINIMAL: &str = r#"issuer = "https://idp.example.com""#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

fn load_error(text: &str, variables: &[(&str, &str)]) -> String {
    Config::from_toml_str(text, env(variables)).unwrap_err().to_string()
}

#[test]
fn a_minimal_file_takes_every_default() {
    let config = Config::from_toml_str(MINIMAL, env(&[])).unwrap();
    assert_eq!(config.issuer, "https://idp.example.com");
    assert_eq!(config.shards, idp_proto::DEFAULT_SHARD_COUNT);
    assert_eq!(config.http.listen, "127.0.0.1:8080");
    assert_eq!(config.keys.algorithms, ["RS256", "ES256", "EdDSA"]);
    assert_eq!(config.login.delay_step, Duration::from_millis(500));
    assert!(config.clients.is_empty() && config.users.is_empty());
}

#[test]
fn load_reads_the_file() {
    let path = std::env::temp_dir().join(format!("idp-config-load-{}.toml", std::process::id()));
    std::fs::write(&path, "issuer = \"https://idp.example.com\"\n[http]\nlisten = \"0.0.0.0:9000\"\n").unwrap();
    let config = Config::load(Some(&path), env(&[]));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(config.unwrap().http.listen, "0.0.0.0:9000");
}

#[test]
fn a_missing_file_is_named() {
    let path = Path::new("/nonexistent/idp.toml");
    let error = Config::load(Some(path), env(&[])).unwrap_err().to_string();
    assert!(error.starts_with("cannot read config file /nonexistent/idp.toml: "), "{error}");
}

#[test]
fn without_a_file_the_environment_is_enough() {
    let config = Config::load(None, env(&[("IDP_ISSUER", "https://idp.example.com")])).unwrap();
    assert_eq!(config.issuer, "https://idp.example.com");
    assert_eq!(Config::load(None, env(&[])).unwrap_err().to_string(), "config key `issuer`: is required");
}

#[test]
fn syntax_errors_give_line_and_column_but_not_the_line() {
    let text = "issuer = \"https://idp.example.com\"\n[[clients]]\nclient_secret = \"hunter2\n";
    let error = load_error(text, &[]);
    assert!(error.starts_with("config: TOML syntax error at line 3, column "), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn line_and_column_count_characters() {
    assert_eq!(line_and_column("a = 1\nbé = ?", 10), (2, 4));
    assert_eq!(line_and_column("x", 0), (1, 1));
}

#[test]
fn unknown_keys_are_named() {
    let error = load_error(&format!("{MINIMAL}\n[http]\nlistn = \"127.0.0.1:1\""), &[]);
    assert_eq!(error, "config key `http.listn`: unknown key");
    let error = load_error(&format!("{MINIMAL}\nshard = 4"), &[]);
    assert_eq!(error, "config key `shard`: unknown key");
    let error = load_error(&format!("{MINIMAL}\n[[clients]]\nclient_id = \"a\"\nsecret = \"x\""), &[]);
    assert_eq!(error, "config key `clients[0].secret`: unknown key");
}

#[test]
fn missing_keys_are_named() {
    let error = load_error(&format!("{MINIMAL}\n[[clients]]\nname = \"A\""), &[]);
    assert_eq!(error, "config key `clients[0].client_id`: is required");
    let error = load_error(&format!("{MINIMAL}\n[tls]\ncert = \"/etc/idp/cert.pem\""), &[]);
    assert_eq!(error, "config key `tls.key`: is required");
}

#[test]
fn type_errors_are_named() {
    let text = format!("{MINIMAL}\n[[clients]]\nclient_id = \"a\"\ngrant_types = \"authorization_code\"");
    let error = load_error(&text, &[]);
    assert_eq!(
        error,
        "config key `clients[0].grant_types`: invalid type: string \"authorization_code\", expected a sequence"
    );
    let error = load_error(&format!("{MINIMAL}\nshards = 70000"), &[]);
    assert_eq!(error, "config key `shards`: invalid value: integer `70000`, expected u16");
}

#[test]
fn duration_errors_are_named() {
    let error = load_error(&format!("{MINIMAL}\n[tokens]\ncode_ttl = \"a minute\""), &[]);
    assert_eq!(error, "config key `tokens.code_ttl`: invalid duration \"a minute\" (expected e.g. 90s, 15m, 12h, 30d)");
    let error = load_error(&format!("{MINIMAL}\n[tokens]\ncode_ttl = -5"), &[]);
    assert_eq!(error, "config key `tokens.code_ttl`: a duration cannot be negative");
    let error = load_error(&format!("{MINIMAL}\n[tokens]\ncode_ttl = true"), &[]);
    assert_eq!(
        error,
        "config key `tokens.code_ttl`: invalid type: boolean `true`, expected a duration such as 90s, 15m, 12h, 30d, \
         250ms, or a number of seconds"
    );
}

#[test]
fn type_errors_about_secrets_do_not_show_the_value() {
    let text = format!("{MINIMAL}\n[[clients]]\nclient_id = \"a\"\nclient_secret = 987654321");
    let error = load_error(&text, &[]);
    assert_eq!(
        error,
        "config key `clients[0].client_secret`: invalid value (not shown: it is a secret); expected a string"
    );
    let text = format!("{MINIMAL}\n[[users]]\nusername = \"a\"\npassword_hash = 987654321");
    assert!(!load_error(&text, &[]).contains("987654321"));
}

#[test]
fn environment_overrides_the_file() {
    let variables = [
        ("IDP_HTTP__LISTEN", "0.0.0.0:8443"),
        ("IDP_SHARDS", "64"),
        ("IDP_LOGOUT__KEEP_OFFLINE_TOKENS", "true"),
        ("IDP_KEYS__ALGORITHMS", r#"["RS256","ES256"]"#),
        ("IDP_TOKENS__CODE_TTL", "30s"),
        ("IDP_TOKENS__ACCESS_TOKEN_TTL", "300"),
        ("IDP_LOG__FORMAT", "json"),
    ];
    let config =
        Config::from_toml_str(&format!("{MINIMAL}\n[http]\nlisten = \"127.0.0.1:1\""), env(&variables)).unwrap();
    assert_eq!(config.http.listen, "0.0.0.0:8443");
    assert_eq!(config.shards, 64);
    assert!(config.logout.keep_offline_tokens);
    assert_eq!(config.keys.algorithms, ["RS256", "ES256"]);
    assert_eq!(config.tokens.code_ttl, Duration::from_secs(30));
    assert_eq!(config.tokens.access_token_ttl, Duration::from_secs(300));
    assert_eq!(config.log.format, "json");
}

#[test]
fn a_variable_that_reads_as_a_number_is_text_where_text_is_wanted() {
    let config = Config::from_toml_str(MINIMAL, env(&[("IDP_BRANDING__PRODUCT_NAME", "2024")])).unwrap();
    assert_eq!(config.branding.product_name.as_deref(), Some("2024"));
}

#[test]
fn variables_that_name_no_key_fail_at_start() {
    let error = load_error(MINIMAL, &[("IDP_HTTP__LISTN", "127.0.0.1:1")]);
    assert_eq!(error, "config key `http.listn` (from environment variable `IDP_HTTP__LISTN`): unknown key");
    let error = load_error(MINIMAL, &[("IDP_ISSUR", "https://idp.example.com")]);
    assert_eq!(error, "config key `issur` (from environment variable `IDP_ISSUR`): unknown key");
}

#[test]
fn the_allow_listed_variables_are_not_keys() {
    let variables = [("IDP_KEK", "AAAA"), ("IDP_LOG", "debug"), ("HOME", "/root")];
    Config::from_toml_str(MINIMAL, env(&variables)).unwrap();
}

#[test]
fn errors_name_the_variable_that_set_the_key() {
    let error = load_error(MINIMAL, &[("IDP_SHARDS", "lots")]);
    assert_eq!(
        error,
        "config key `shards` (from environment variable `IDP_SHARDS`): invalid type: string \"lots\", expected u16"
    );
    let error = load_error(MINIMAL, &[("IDP_ISSUER", "ftp://idp.example.com")]);
    assert_eq!(error, "config key `issuer` (from environment variable `IDP_ISSUER`): must be an absolute https URL");
    let error = load_error(MINIMAL, &[("IDP_TLS__CERT", "/etc/idp/cert.pem")]);
    assert_eq!(error, "config key `tls.key`: is required");
}

#[test]
fn a_whole_array_of_tables_can_come_from_the_environment() {
    let clients =
        r#"[{ client_id = "svc", client_secret = "s", grant_types = ["client_credentials"], response_types = [] }]"#;
    let config = Config::from_toml_str(MINIMAL, env(&[("IDP_CLIENTS", clients)])).unwrap();
    assert_eq!(config.clients[0].client_id, "svc");
}

#[test]
fn validation_runs_after_loading() {
    let error = load_error(&format!("{MINIMAL}\n[tokens]\ncode_ttl = \"5m\""), &[]);
    assert_eq!(error, "config key `tokens.code_ttl`: must be between 1s and 60s");
}

#[test]
fn is_within_respects_segment_boundaries() {
    assert!(is_within("http.listen", "http"));
    assert!(is_within("clients[0].client_id", "clients"));
    assert!(is_within("shards", "shards"));
    assert!(!is_within("http_extra", "http"));
}

/// docs/example-config.toml must always load: only its password hash placeholder is replaced.
#[test]
fn the_documented_example_file_loads() {
    let text = include_str!("../../../../docs/example-config.toml");
    let hash = password::hash_password("alice-password").unwrap();
    let text = text.replace("REPLACE-WITH-THE-OUTPUT-OF-idp-hash-password", &hash);
    let config = Config::from_toml_str(&text, env(&[])).unwrap();
    assert_eq!(config.clients.len(), 3);
    assert_eq!(config.users.len(), 1);
    assert!(password::verify_password(&config.users[0].password_hash, "alice-password"));
}

#[test]
fn the_documented_example_file_refuses_its_placeholder() {
    let text = include_str!("../../../../docs/example-config.toml");
    let error = Config::from_toml_str(text, env(&[])).unwrap_err().to_string();
    assert!(error.starts_with("config key `users[0].password_hash`: must be an argon2id PHC string"), "{error}");
}

#[test]
fn a_section_may_leave_out_any_key() {
    let config = Config::from_toml_str(&format!("{MINIMAL}\n[http]\nworkers = 4"), env(&[])).unwrap();
    assert_eq!((config.http.listen.as_str(), config.http.workers), ("127.0.0.1:8080", 4));
}

#[test]
fn a_malformed_clients_variable_is_not_echoed() {
    let clients = r#"[{ client_id = "svc", client_secret = "s3cr3t-value" "#;
    let error = load_error(MINIMAL, &[("IDP_CLIENTS", clients)]);
    assert_eq!(
        error,
        "config key `clients` (from environment variable `IDP_CLIENTS`): invalid type: a string (not shown), \
         expected a sequence"
    );
}
