//! Configuration: one serde struct, loaded from TOML, overridden by `IDP_SECTION__KEY` environment variables,
//! validated once at start (a bad file fails with the key and the reason, never at the first request).
//!
//! The doc comment of each field is the reference; `docs/configuration.md` repeats it with the environment
//! variable names and an example. Submodules: `load` ([`Config::load`]: file, environment, serde errors as key
//! paths), `env` (the `IDP_*` overrides), `validate` and `clients` ([`Config::validate`]), `dev` ([`Config::dev`]),
//! `duration` (`90s`, `15m`, ...).

mod clients;
mod cluster;
mod dev;
mod duration;
mod env;
mod error;
mod load;
mod registration;
mod telemetry;
mod testing;
mod upstreams;
mod validate;

pub use clients::{SUPPORTED_AUTH_METHODS, SUPPORTED_GRANT_TYPES, SUPPORTED_RESPONSE_TYPES};
pub use cluster::{
    AdminConfig, AdminTlsConfig, ClusterConfig, ClusterTlsConfig, NodeAddresses, NodeConfig, RedisConfig,
};
pub use duration::{format_duration, parse_duration};
pub use env::NON_CONFIG_VARIABLES;
pub use error::ConfigError;
pub use registration::RegistrationConfig;
pub use telemetry::{AuditConfig, TelemetryConfig, AUDIT_SINKS};
pub use testing::TestingConfig;
pub use upstreams::{ClaimMapping, UpstreamConfig, UPSTREAM_AUTH_METHODS, UPSTREAM_KINDS};
pub use validate::SUPPORTED_ALGORITHMS;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The issuer identifier (OIDC Core §2): an https URL, or http on a loopback host; no path, query or fragment
    /// (every endpoint is served at the root of the origin).
    pub issuer: String,
    /// Number of shards of the cluster; fixed when the cluster is created.
    #[serde(default = "defaults::shards")]
    pub shards: u16,
    /// The public HTTP listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// Serve HTTPS on `http.listen` with this certificate; absent means plain HTTP (behind a TLS proxy).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Signing keys: algorithms, rotation, and the key-encryption key.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Lifetimes of codes, tokens, sessions and consents.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// Password login throttling.
    #[serde(default)]
    pub login: LoginConfig,
    /// What a logout ends.
    #[serde(default)]
    pub logout: LogoutConfig,
    /// Look of the login, consent and logout pages.
    #[serde(default)]
    pub branding: BrandingConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// This node in the cluster: id, gossip and RPC addresses, seeds, drain timeout.
    #[serde(default)]
    pub node: NodeConfig,
    /// Membership, leases, forwarding and the internal RPC's TLS.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The Redis holding the cluster's state; setting `url` or `sentinels` turns cluster mode on.
    #[serde(default)]
    pub redis: RedisConfig,
    /// The admin listener (health and readiness); off unless `admin.listen` is set.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Dynamic client registration (RFC 7591/7592) at `/register`; off unless `registration.enabled`.
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// Audit events: where they are written (`docs/audit.md`).
    #[serde(default)]
    pub audit: AuditConfig,
    /// Trace export (OpenTelemetry OTLP, with the `otel` build feature).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The registered relying parties (`[[clients]]`).
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// The users who can log in with a password (`[[users]]`).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// The upstream providers users may sign in through (`[[upstreams]]`, federation).
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// TEST ONLY: the chaos suite's switches that break guarantees on purpose; refused unless `enabled`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub testing: TestingConfig,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The public HTTP listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the public listener.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// HTTP worker threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Largest request body accepted, in bytes.
    #[serde(default = "defaults::body_limit")]
    pub body_limit: usize,
    /// Longest value accepted for any single request parameter, in bytes.
    #[serde(default = "defaults::param_limit")]
    pub param_limit: usize,
}

/// The certificate and key of the HTTPS listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Signing keys and their rotation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// File holding the key-encryption key: 32 random bytes, base64; `IDP_KEK` overrides it. Without either a
    /// random one is made at start (fine for `idp dev`; keys and browser cookies do not survive a restart).
    #[serde(default)]
    pub kek_file: Option<PathBuf>,
    /// Signing algorithms the key ring holds keys for.
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<String>,
    /// How often `current` is replaced by `next`.
    #[serde(default = "defaults::rotate_every", with = "duration::text")]
    pub rotate_every: Duration,
    /// How long `next` is published in the JWKS before it signs anything.
    #[serde(default = "defaults::publish_ahead", with = "duration::text")]
    pub publish_ahead: Duration,
    /// How long `previous` stays published after it stopped signing.
    #[serde(default = "defaults::retain_after", with = "duration::text")]
    pub retain_after: Duration,
}

/// Lifetimes of what the provider issues.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// Access token lifetime.
    #[serde(default = "defaults::access_token_ttl", with = "duration::text")]
    pub access_token_ttl: Duration,
    /// ID token lifetime.
    #[serde(default = "defaults::id_token_ttl", with = "duration::text")]
    pub id_token_ttl: Duration,
    /// Authorization code lifetime; at most 60 s.
    #[serde(default = "defaults::code_ttl", with = "duration::text")]
    pub code_ttl: Duration,
    /// Lifetime of a refresh token family (a grant), counted from the code redemption.
    #[serde(default = "defaults::refresh_token_ttl", with = "duration::text")]
    pub refresh_token_ttl: Duration,
    /// Lifetime of a browser SSO session.
    #[serde(default = "defaults::session_ttl", with = "duration::text")]
    pub session_ttl: Duration,
    /// How long an authorization may wait for login and consent.
    #[serde(default = "defaults::pending_ttl", with = "duration::text")]
    pub pending_ttl: Duration,
    /// How long a consent is remembered.
    #[serde(default = "defaults::consent_ttl", with = "duration::text")]
    pub consent_ttl: Duration,
}

/// Password login throttling and the password hashing pool.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Consecutive failures after which each further attempt is delayed.
    #[serde(default = "defaults::delay_after")]
    pub delay_after: u32,
    /// Delay added per failure beyond `delay_after` (capped at 5 s).
    #[serde(default = "defaults::delay_step", with = "duration::text")]
    pub delay_step: Duration,
    /// Consecutive failures after which the username is locked out.
    #[serde(default = "defaults::max_failures")]
    pub max_failures: u32,
    /// How long a locked-out username is refused (HTTP 429).
    #[serde(default = "defaults::lockout", with = "duration::text")]
    pub lockout: Duration,
    /// Password hashes verified at once; further logins queue. 0 means one per core.
    #[serde(default)]
    pub hash_concurrency: usize,
}

/// What a logout ends.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutConfig {
    /// Keep `offline_access` refresh tokens alive when their session logs out.
    #[serde(default)]
    pub keep_offline_tokens: bool,
}

/// Look of the pages.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrandingConfig {
    /// Product name in page titles and headings.
    #[serde(default)]
    pub product_name: Option<String>,
    /// Logo file (PNG, SVG, JPEG or WebP) served at `/static/logo`.
    #[serde(default)]
    pub logo: Option<PathBuf>,
    /// Accent colour (`#rgb` or `#rrggbb`).
    #[serde(default)]
    pub primary_color: Option<String>,
    /// Background colour (`#rgb` or `#rrggbb`).
    #[serde(default)]
    pub background_color: Option<String>,
    /// Folder whose `*.html` templates override the built-in ones of the same name.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
}

/// Logging.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `idp_node=debug,info`.
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// `pretty` or `json`.
    #[serde(default = "defaults::log_format")]
    pub format: String,
}

/// A registered relying party (OAuth client). `Debug` never shows `client_secret`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client identifier: unique, non-empty, printable ASCII (RFC 6749 Appendix A.1).
    pub client_id: String,
    /// Human-readable name shown on the consent page.
    #[serde(default)]
    pub name: Option<String>,
    /// Required for `client_secret_basic` and `client_secret_post`, absent otherwise.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Registered redirect URIs, compared exactly: absolute, no fragment; https, http on a loopback host only
    /// (127.0.0.1, [::1], localhost), or a native app's custom scheme.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser back to; same rules as `redirect_uris`.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Grants the client may use: `authorization_code`, `refresh_token`, `client_credentials`.
    #[serde(default = "defaults::grant_types")]
    pub grant_types: Vec<String>,
    /// Response types the client may ask for: `code`, `id_token`, `id_token token`, `code id_token`,
    /// `code token`, `code id_token token`.
    #[serde(default = "defaults::response_types")]
    pub response_types: Vec<String>,
    /// `client_secret_basic` (default), `client_secret_post`, `private_key_jwt` or `none` (public client).
    #[serde(default = "defaults::token_endpoint_auth_method")]
    pub token_endpoint_auth_method: String,
    /// `RS256` (default), `ES256` or `EdDSA`.
    #[serde(default = "defaults::id_token_signed_response_alg")]
    pub id_token_signed_response_alg: String,
    /// First-party clients skip the consent page.
    #[serde(default)]
    pub first_party: bool,
    /// The client's public keys (a JWK Set) for `private_key_jwt`.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Scopes the client may ask for; empty means every supported scope.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Audience of access tokens when no `resource`/`audience` parameter names one; defaults to the issuer (the
    /// provider is the resource server of `/userinfo`), never to the client id, so an access token is never
    /// mistaken for an ID token (RFC 9068 §4, RFC 8725 §3.12).
    #[serde(default)]
    pub default_audience: Option<String>,
    /// Resources (RFC 8707 `resource`, an absolute URI) and audiences (`audience`, any string) the client may ask
    /// tokens for, compared exactly; anything else but `default_audience` is refused with `invalid_target`.
    #[serde(default)]
    pub audiences: Vec<String>,
}

/// A user who logs in with a password. `Debug` never shows `password_hash`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name: non-empty, unique ignoring case (logins ignore case).
    pub username: String,
    /// Stable subject identifier (`sub`); defaults to the username. The effective id (this or the username) is
    /// unique among users.
    #[serde(default)]
    pub id: Option<String>,
    /// argon2id PHC string, as printed by `idp hash-password`.
    pub password_hash: String,
    /// The `email` claim; must contain `@`.
    #[serde(default)]
    pub email: Option<String>,
    /// The `email_verified` claim.
    #[serde(default)]
    pub email_verified: bool,
    /// The `name` claim (full name).
    #[serde(default)]
    pub name: Option<String>,
    /// The `given_name` claim.
    #[serde(default)]
    pub given_name: Option<String>,
    /// The `family_name` claim.
    #[serde(default)]
    pub family_name: Option<String>,
    /// A disabled user cannot log in, and its sessions, refresh tokens and access tokens stop working.
    #[serde(default)]
    pub disabled: bool,
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for ClientConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientConfig")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("client_secret", &self.client_secret.as_ref().map(|_| REDACTED))
            .field("redirect_uris", &self.redirect_uris)
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .field("grant_types", &self.grant_types)
            .field("response_types", &self.response_types)
            .field("token_endpoint_auth_method", &self.token_endpoint_auth_method)
            .field("id_token_signed_response_alg", &self.id_token_signed_response_alg)
            .field("first_party", &self.first_party)
            .field("jwks", &self.jwks)
            .field("scopes", &self.scopes)
            .field("default_audience", &self.default_audience)
            .field("audiences", &self.audiences)
            .finish()
    }
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("UserConfig")
            .field("username", &self.username)
            .field("id", &self.id)
            .field("password_hash", &REDACTED)
            .field("email", &self.email)
            .field("email_verified", &self.email_verified)
            .field("name", &self.name)
            .field("given_name", &self.given_name)
            .field("family_name", &self.family_name)
            .finish()
    }
}

mod defaults {
    use std::time::Duration;

    pub fn listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn shards() -> u16 {
        idp_proto::DEFAULT_SHARD_COUNT
    }
    pub fn body_limit() -> usize {
        64 * 1024
    }
    pub fn param_limit() -> usize {
        4096
    }
    pub fn algorithms() -> Vec<String> {
        vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
    }
    pub fn rotate_every() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn publish_ahead() -> Duration {
        Duration::from_secs(86_400)
    }
    pub fn retain_after() -> Duration {
        Duration::from_secs(86_400)
    }
    pub fn access_token_ttl() -> Duration {
        Duration::from_secs(600)
    }
    pub fn id_token_ttl() -> Duration {
        Duration::from_secs(600)
    }
    pub fn code_ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn refresh_token_ttl() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn session_ttl() -> Duration {
        Duration::from_secs(14 * 86_400)
    }
    pub fn pending_ttl() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn consent_ttl() -> Duration {
        Duration::from_secs(365 * 86_400)
    }
    pub fn delay_after() -> u32 {
        3
    }
    pub fn delay_step() -> Duration {
        Duration::from_millis(500)
    }
    pub fn max_failures() -> u32 {
        10
    }
    pub fn lockout() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn log_format() -> String {
        "pretty".into()
    }
    pub fn grant_types() -> Vec<String> {
        vec!["authorization_code".into()]
    }
    pub fn response_types() -> Vec<String> {
        vec!["code".into()]
    }
    pub fn token_endpoint_auth_method() -> String {
        "client_secret_basic".into()
    }
    pub fn id_token_signed_response_alg() -> String {
        "RS256".into()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            workers: 0,
            body_limit: defaults::body_limit(),
            param_limit: defaults::param_limit(),
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            kek_file: None,
            algorithms: defaults::algorithms(),
            rotate_every: defaults::rotate_every(),
            publish_ahead: defaults::publish_ahead(),
            retain_after: defaults::retain_after(),
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            access_token_ttl: defaults::access_token_ttl(),
            id_token_ttl: defaults::id_token_ttl(),
            code_ttl: defaults::code_ttl(),
            refresh_token_ttl: defaults::refresh_token_ttl(),
            session_ttl: defaults::session_ttl(),
            pending_ttl: defaults::pending_ttl(),
            consent_ttl: defaults::consent_ttl(),
        }
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            delay_after: defaults::delay_after(),
            delay_step: defaults::delay_step(),
            max_failures: defaults::max_failures(),
            lockout: defaults::lockout(),
            hash_concurrency: 0,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: defaults::log_level(), format: defaults::log_format() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_client_secrets_or_password_hashes() {
        let config = Config::dev("127.0.0.1:8080", None);
        let debug = format!("{config:?}");
        assert!(!debug.contains("demo-secret"));
        assert!(!debug.contains("$argon2id$"));
        assert!(debug.contains(r#"client_secret: Some("[redacted]")"#));
        assert!(debug.contains("password_hash: \"[redacted]\""));
    }
}
