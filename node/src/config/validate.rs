//! The rules a configuration must meet before the node starts. The first broken rule is reported, with its key.

use super::{
    clients, format_duration, BrandingConfig, Config, ConfigError, HttpConfig, KeysConfig, LogConfig, TlsConfig,
    TokensConfig, UserConfig,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use url::{Host, Url};

/// Signing algorithms the key ring supports. RS256 is mandatory (OIDC Core §15.1).
pub const SUPPORTED_ALGORITHMS: &[&str] = &["RS256", "ES256", "EdDSA"];

const MAX_SHARDS: u16 = 16_384;
const MIN_BODY_LIMIT: usize = 1024;
const MIN_PARAM_LIMIT: usize = 256;
const MAX_CODE_TTL: Duration = Duration::from_secs(60);
const LOG_FORMATS: &[&str] = &["pretty", "json"];

type Checked = Result<(), ConfigError>;

/// `Err` with `key` and `reason` unless `condition` holds.
pub(super) fn ensure(condition: bool, key: impl FnOnce() -> String, reason: impl FnOnce() -> String) -> Checked {
    if condition {
        Ok(())
    } else {
        Err(ConfigError::key(key(), reason()))
    }
}

impl Config {
    /// Checks every rule; the error names the first key that breaks one, and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_issuer(&self.issuer)?;
        let shards_in_range = (1..=MAX_SHARDS).contains(&self.shards);
        ensure(shards_in_range, || "shards".into(), || format!("must be between 1 and {MAX_SHARDS}"))?;
        validate_http(&self.http)?;
        self.tls.as_ref().map_or(Ok(()), validate_tls)?;
        validate_keys(&self.keys, &self.tokens)?;
        validate_tokens(&self.tokens)?;
        let max_failures = self.login.max_failures;
        ensure(max_failures >= 1, || "login.max_failures".into(), || "must be at least 1".into())?;
        validate_branding(&self.branding)?;
        validate_log(&self.log)?;
        super::telemetry::validate_audit(&self.audit, self.redis.is_configured())?;
        super::telemetry::validate_telemetry(&self.telemetry)?;
        if self.redis.is_configured() {
            super::cluster::validate_cluster(&self.node, &self.cluster, &self.redis)?;
        }
        if let Some(listen) = &self.admin.listen {
            let valid = listen.parse::<SocketAddr>().is_ok();
            ensure(valid, || "admin.listen".into(), || format!("`{listen}` is not an ip:port address"))?;
        }
        super::registration::validate_registration(&self.registration)?;
        clients::validate_clients(&self.clients, &self.keys.algorithms)?;
        super::upstreams::validate_upstreams(&self.upstreams)?;
        self.testing.validate()?;
        validate_users(&self.users)
    }
}

/// OIDC Core §2 and Discovery §3: https, no query, no fragment; http only for a loopback host (development).
fn validate_issuer(issuer: &str) -> Checked {
    let fail = |reason: &str| Err(ConfigError::key("issuer", reason));
    let Ok(url) = Url::parse(issuer) else {
        return fail("must be an absolute https URL");
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return fail("must use https (http is allowed only on localhost or a loopback address)"),
        _ => return fail("must be an absolute https URL"),
    }
    if url.query().is_some() {
        return fail("must not have a query");
    }
    if url.fragment().is_some() {
        return fail("must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return fail("must not contain a user name or password");
    }
    ensure(!issuer.ends_with('/'), || "issuer".into(), || "must not end with a slash".into())?;
    // Every route is mounted at the root: with a path, discovery would advertise endpoints that answer 404.
    let root_reason = || "must have no path: serve the provider at the root of its origin".into();
    ensure(url.path() == "/", || "issuer".into(), root_reason)
}

/// A URL whose host is `localhost` or a loopback IP address (127.0.0.0/8, `[::1]`).
pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(address)) => address.is_loopback(),
        Some(Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

fn validate_http(http: &HttpConfig) -> Checked {
    let listen_parses = http.listen.parse::<SocketAddr>().is_ok();
    ensure(listen_parses, || "http.listen".into(), || "must be a socket address such as 127.0.0.1:8080".into())?;
    let body_reason = || format!("must be at least {MIN_BODY_LIMIT} bytes");
    ensure(http.body_limit >= MIN_BODY_LIMIT, || "http.body_limit".into(), body_reason)?;
    let param_reason = || format!("must be at least {MIN_PARAM_LIMIT} bytes");
    ensure(http.param_limit >= MIN_PARAM_LIMIT, || "http.param_limit".into(), param_reason)
}

fn validate_tls(tls: &TlsConfig) -> Checked {
    require_file(&tls.cert, "tls.cert")?;
    require_file(&tls.key, "tls.key")
}

fn require_file(path: &Path, key: &str) -> Checked {
    ensure(path.is_file(), || key.into(), || format!("file {} does not exist or is not a file", path.display()))
}

fn validate_keys(keys: &KeysConfig, tokens: &TokensConfig) -> Checked {
    validate_algorithms(&keys.algorithms)?;
    let rotation_reason = || "must be longer than keys.publish_ahead".to_string();
    ensure(keys.rotate_every > keys.publish_ahead, || "keys.rotate_every".into(), rotation_reason)?;
    let longest_token = tokens.access_token_ttl.max(tokens.id_token_ttl);
    let retain_reason = || {
        let longest = format_duration(longest_token);
        format!(
            "must be at least the longest token lifetime ({longest}, from tokens.access_token_ttl and \
             tokens.id_token_ttl)"
        )
    };
    ensure(keys.retain_after >= longest_token, || "keys.retain_after".into(), retain_reason)
}

fn validate_algorithms(algorithms: &[String]) -> Checked {
    ensure(!algorithms.is_empty(), || "keys.algorithms".into(), || "must not be empty".into())?;
    for (index, algorithm) in algorithms.iter().enumerate() {
        let key = || format!("keys.algorithms[{index}]");
        let supported = SUPPORTED_ALGORITHMS.contains(&algorithm.as_str());
        ensure(supported, key, || format!("unsupported algorithm `{algorithm}` (expected RS256, ES256 or EdDSA)"))?;
        let first = algorithms.iter().position(|other| other == algorithm) == Some(index);
        ensure(first, key, || format!("`{algorithm}` is listed twice"))?;
    }
    let has_rs256 = algorithms.iter().any(|algorithm| algorithm == "RS256");
    ensure(has_rs256, || "keys.algorithms".into(), || "must include RS256 (mandatory in OpenID Connect)".into())
}

fn validate_tokens(tokens: &TokensConfig) -> Checked {
    let code_ttl_in_range = tokens.code_ttl >= Duration::from_secs(1) && tokens.code_ttl <= MAX_CODE_TTL;
    ensure(code_ttl_in_range, || "tokens.code_ttl".into(), || "must be between 1s and 60s".into())?;
    let lifetimes = [
        ("access_token_ttl", tokens.access_token_ttl),
        ("id_token_ttl", tokens.id_token_ttl),
        ("refresh_token_ttl", tokens.refresh_token_ttl),
        ("session_ttl", tokens.session_ttl),
        ("pending_ttl", tokens.pending_ttl),
        ("consent_ttl", tokens.consent_ttl),
    ];
    for (name, lifetime) in lifetimes {
        let at_least_a_second = lifetime >= Duration::from_secs(1);
        ensure(at_least_a_second, || format!("tokens.{name}"), || "must be at least 1s".into())?;
    }
    Ok(())
}

fn validate_branding(branding: &BrandingConfig) -> Checked {
    let colors = [("primary_color", &branding.primary_color), ("background_color", &branding.background_color)];
    for (name, color) in colors {
        let valid = color.as_deref().is_none_or(is_hex_color);
        ensure(valid, || format!("branding.{name}"), || "must be a colour such as #rgb or #rrggbb".into())?;
    }
    if let Some(logo) = &branding.logo {
        require_file(logo, "branding.logo")?;
    }
    let templates_dir_exists = branding.templates_dir.as_deref().is_none_or(Path::is_dir);
    ensure(templates_dir_exists, || "branding.templates_dir".into(), || "must be an existing folder".into())
}

fn is_hex_color(color: &str) -> bool {
    let digits = color.strip_prefix('#').unwrap_or("");
    matches!(digits.len(), 3 | 6) && digits.chars().all(|digit| digit.is_ascii_hexdigit())
}

fn validate_log(log: &LogConfig) -> Checked {
    let filter_reason = |error: tracing_subscriber::filter::ParseError| format!("not a tracing filter: {error}");
    tracing_subscriber::EnvFilter::try_new(&log.level)
        .map_err(|error| ConfigError::key("log.level", filter_reason(error)))?;
    let known_format = LOG_FORMATS.contains(&log.format.as_str());
    ensure(known_format, || "log.format".into(), || "must be `pretty` or `json`".into())
}

fn validate_users(users: &[UserConfig]) -> Checked {
    let mut identities = UserIdentities::default();
    for (index, user) in users.iter().enumerate() {
        let key = |name: &str| format!("users[{index}].{name}");
        ensure(!user.username.is_empty(), || key("username"), || "must not be empty".into())?;
        identities.insert(index, user)?;
        let hash_reason = || "must be an argon2id PHC string ($argon2id$v=19$...), as printed by `idp hash-password`";
        ensure(is_argon2id_phc(&user.password_hash), || key("password_hash"), || hash_reason().into())?;
        let email_valid = user.email.as_deref().is_none_or(|email| email.contains('@'));
        ensure(email_valid, || key("email"), || "must contain '@'".into())?;
    }
    Ok(())
}

/// The usernames (lowercased) and effective ids seen so far, each with the index of its user. Logins look a
/// username up lowercased and tokens carry the effective id (`id`, else the username) as `sub`: two users sharing
/// either would log in as one another (`Directory::user_by_name`, `Directory::user_by_id`).
#[derive(Default)]
struct UserIdentities<'a> {
    usernames: HashMap<String, usize>,
    ids: HashMap<&'a str, usize>,
}

impl<'a> UserIdentities<'a> {
    fn insert(&mut self, index: usize, user: &'a UserConfig) -> Checked {
        let key = |name: &str| format!("users[{index}].{name}");
        if let Some(earlier) = self.usernames.insert(user.username.to_lowercase(), index) {
            let reason = format!("`{}` is the username of users[{earlier}] (usernames ignore case)", user.username);
            return Err(ConfigError::key(key("username"), reason));
        }
        let (id_key, id) = match &user.id {
            Some(id) => ("id", id.as_str()),
            None => ("username", user.username.as_str()),
        };
        ensure(!id.is_empty(), || key(id_key), || "must not be empty".into())?;
        match self.ids.insert(id, index) {
            Some(earlier) => Err(ConfigError::key(
                key(id_key),
                format!("`{id}` is the subject id of users[{earlier}] (a user without `id` has its username as id)"),
            )),
            None => Ok(()),
        }
    }
}

/// A PHC string of argon2id with a salt, a hash and parameters argon2 accepts.
fn is_argon2id_phc(phc: &str) -> bool {
    let Ok(hash) = argon2::PasswordHash::new(phc) else {
        return false;
    };
    hash.algorithm.as_str() == "argon2id"
        && hash.salt.is_some()
        && hash.hash.is_some()
        && argon2::Params::try_from(&hash).is_ok()
}

#[cfg(test)]
pub(super) mod tests;
