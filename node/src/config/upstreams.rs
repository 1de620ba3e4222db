//! `[[upstreams]]`: the providers users may sign in through (federation). Plain data, like `[[clients]]`, so that
//! an admin API can store them the same way.

use super::validate::ensure;
use super::{duration, ConfigError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// The kinds of upstream providers.
pub const UPSTREAM_KINDS: &[&str] = &["oidc", "oauth2"];
/// How the broker authenticates at an upstream's token endpoint.
pub const UPSTREAM_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "private_key_jwt"];

/// One upstream provider. `Debug` never shows `client_secret`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Identifier in URLs (`/federation/{id}/callback`, `idp_hint={id}`): 1 to 64 of `a-z`, `0-9`, `-`, `_`.
    pub id: String,
    /// `oidc` (any OpenID provider, by discovery of `issuer`) or `oauth2` (OAuth2-only, e.g. GitHub: the
    /// endpoints and the claim mapping are configured).
    pub kind: String,
    /// Name on the login page's button ("Sign in with {name}"); defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Icon of the button: a path on this provider (the pages' CSP, `default-src 'self'`, blocks images from
    /// other origins).
    #[serde(default)]
    pub icon_url: Option<String>,
    /// `oidc`: the upstream's issuer; its discovery document and JWKS are fetched from it (and the JWKS again when
    /// an ID token names an unknown `kid`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// `oauth2`: the authorization endpoint.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// `oauth2`: the token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// `oauth2`: the endpoint returning the user's claims as JSON, called with the access token.
    #[serde(default)]
    pub userinfo_url: Option<String>,
    /// `oauth2`: an endpoint listing the user's addresses (GitHub's `/user/emails`: `[{"email", "primary",
    /// "verified"}]`), asked at every sign-in: the claimed email is verified only when the list says so, and
    /// without a claimed email the primary verified one is taken.
    #[serde(default)]
    pub emails_url: Option<String>,
    /// The broker's client id at the upstream.
    pub client_id: String,
    /// The broker's client secret (`client_secret_basic` or `client_secret_post`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// `client_secret_basic` (default), `client_secret_post` or `private_key_jwt` (RFC 7523).
    #[serde(default = "defaults::auth_method")]
    pub token_endpoint_auth_method: String,
    /// `private_key_jwt`: PEM private key (PKCS#8 RSA ≥ 2048 bits for RS256, or P-256 for ES256).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// `private_key_jwt`: the `kid` of the key, as registered at the upstream; default: the key's RFC 7638
    /// thumbprint.
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// Scopes asked of the upstream; default `openid profile email` for `oidc`, none for `oauth2`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Which upstream claims become the local account's attributes.
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Link a first login to an existing local account with the same email, when the upstream says the email is
    /// verified (and the local one is verified too). Off by default: linking on an unverified email hands the
    /// account to whoever registers that address upstream.
    #[serde(default)]
    pub link_by_email: bool,
    /// Believe the upstream's `email_verified` (implied by `link_by_email`). Off by default: a provisioned user's
    /// email is then stored unverified, so it never links accounts and this provider's ID tokens never say
    /// `email_verified: true` for an address nobody trusted checked.
    #[serde(default)]
    pub trust_email: bool,
    /// Create a local account at the first login of an unknown upstream user (just in time); when off, only
    /// linked users may sign in.
    #[serde(default = "defaults::enabled")]
    pub provision: bool,
    /// Ask the upstream to answer with `response_mode=form_post` (a cross-site POST to the callback).
    #[serde(default)]
    pub form_post: bool,
    /// Longest wait for any one request to the upstream (discovery, JWKS, token, userinfo).
    #[serde(default = "defaults::timeout", with = "duration::text")]
    pub timeout: Duration,
}

/// Upstream claim names (top-level JSON members) for the local account's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    /// The upstream's stable user id (`sub`; GitHub: `id`, a number). Links are by this value.
    #[serde(default = "defaults::subject")]
    pub subject: String,
    /// Preferred username (`preferred_username`; GitHub: `login`).
    #[serde(default = "defaults::username")]
    pub username: String,
    #[serde(default = "defaults::email")]
    pub email: String,
    /// A boolean claim; an absent one means unverified.
    #[serde(default = "defaults::email_verified")]
    pub email_verified: String,
    #[serde(default = "defaults::name")]
    pub name: String,
    #[serde(default = "defaults::given_name")]
    pub given_name: String,
    #[serde(default = "defaults::family_name")]
    pub family_name: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: defaults::subject(),
            username: defaults::username(),
            email: defaults::email(),
            email_verified: defaults::email_verified(),
            name: defaults::name(),
            given_name: defaults::given_name(),
            family_name: defaults::family_name(),
        }
    }
}

impl UpstreamConfig {
    pub fn is_oidc(&self) -> bool {
        self.kind == "oidc"
    }

    /// The scopes to ask for (configured, or the kind's default).
    pub fn effective_scopes(&self) -> Vec<String> {
        match &self.scopes {
            Some(scopes) => scopes.clone(),
            None if self.is_oidc() => ["openid", "profile", "email"].map(String::from).to_vec(),
            None => Vec::new(),
        }
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("UpstreamConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("token_endpoint_auth_method", &self.token_endpoint_auth_method)
            .finish_non_exhaustive()
    }
}

mod defaults {
    use std::time::Duration;

    pub fn auth_method() -> String {
        "client_secret_basic".into()
    }
    pub fn enabled() -> bool {
        true
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn subject() -> String {
        "sub".into()
    }
    pub fn username() -> String {
        "preferred_username".into()
    }
    pub fn email() -> String {
        "email".into()
    }
    pub fn email_verified() -> String {
        "email_verified".into()
    }
    pub fn name() -> String {
        "name".into()
    }
    pub fn given_name() -> String {
        "given_name".into()
    }
    pub fn family_name() -> String {
        "family_name".into()
    }
}

type Checked = Result<(), ConfigError>;

/// Unique well-formed ids; per kind the endpoints it needs; credentials for the authentication method.
pub(super) fn validate_upstreams(upstreams: &[UpstreamConfig]) -> Checked {
    let mut seen = std::collections::HashSet::new();
    for (index, upstream) in upstreams.iter().enumerate() {
        let key = |field: &str| format!("upstreams[{index}].{field}");
        let id = upstream.id.as_str();
        let well_formed = (1..=64).contains(&id.len())
            && id.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-_".contains(&byte));
        ensure(well_formed, || key("id"), || "must be 1 to 64 of a-z, 0-9, `-`, `_`".into())?;
        ensure(seen.insert(id), || key("id"), || format!("another upstream has the id `{id}`"))?;
        let kind_known = UPSTREAM_KINDS.contains(&upstream.kind.as_str());
        ensure(kind_known, || key("kind"), || format!("must be one of: {}", UPSTREAM_KINDS.join(", ")))?;
        ensure(!upstream.client_id.is_empty(), || key("client_id"), || "must not be empty".into())?;
        if upstream.is_oidc() {
            validate_url(upstream.issuer.as_deref(), &key("issuer"), "is required for kind `oidc`")?;
        } else {
            for (field, value) in [
                ("authorize_url", &upstream.authorize_url),
                ("token_url", &upstream.token_url),
                ("userinfo_url", &upstream.userinfo_url),
            ] {
                validate_url(value.as_deref(), &key(field), "is required for kind `oauth2`")?;
            }
            if upstream.emails_url.is_some() {
                validate_url(upstream.emails_url.as_deref(), &key("emails_url"), "")?;
            }
        }
        validate_credentials(upstream, &key)?;
        let timeout_ok = upstream.timeout >= Duration::from_millis(100) && upstream.timeout <= Duration::from_secs(120);
        ensure(timeout_ok, || key("timeout"), || "must be between 100ms and 120s".into())?;
        ensure(!upstream.claims.subject.is_empty(), || key("claims.subject"), || "must not be empty".into())?;
    }
    Ok(())
}

/// https, or http on a loopback host (development and tests), without a fragment.
fn validate_url(value: Option<&str>, key: &str, missing: &str) -> Checked {
    let Some(text) = value else { return Err(ConfigError::key(key, missing)) };
    let Ok(url) = Url::parse(text) else { return Err(ConfigError::key(key, format!("`{text}` is not a URL"))) };
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    ensure(scheme_ok, || key.into(), || "must be https (http only on a loopback host)".into())?;
    ensure(url.fragment().is_none(), || key.into(), || "must not have a fragment".into())
}

fn validate_credentials(upstream: &UpstreamConfig, key: &dyn Fn(&str) -> String) -> Checked {
    let method = upstream.token_endpoint_auth_method.as_str();
    let known = UPSTREAM_AUTH_METHODS.contains(&method);
    let reason = || format!("must be one of: {}", UPSTREAM_AUTH_METHODS.join(", "));
    ensure(known, || key("token_endpoint_auth_method"), reason)?;
    if method == "private_key_jwt" {
        let reason = || "is required for token_endpoint_auth_method `private_key_jwt`".into();
        ensure(upstream.private_key_file.is_some(), || key("private_key_file"), reason)?;
        let reason = || "must be absent for token_endpoint_auth_method `private_key_jwt`".into();
        ensure(upstream.client_secret.is_none(), || key("client_secret"), reason)
    } else {
        let has_secret = upstream.client_secret.as_deref().is_some_and(|secret| !secret.is_empty());
        ensure(has_secret, || key("client_secret"), || format!("is required for token_endpoint_auth_method `{method}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc() -> UpstreamConfig {
        toml::from_str(
            r#"id = "acme"
kind = "oidc"
issuer = "https://login.acme.example"
client_id = "broker"
client_secret = "s3cret""#,
        )
        .unwrap()
    }

    fn github() -> UpstreamConfig {
        toml::from_str(
            r#"id = "github"
kind = "oauth2"
authorize_url = "https://github.com/login/oauth/authorize"
token_url = "https://github.com/login/oauth/access_token"
userinfo_url = "https://api.github.com/user"
emails_url = "https://api.github.com/user/emails"
client_id = "Iv1.abc"
client_secret = "s3cret"
scopes = ["read:user", "user:email"]
claims = { subject = "id", username = "login" }"#,
        )
        .unwrap()
    }

    fn error_of(upstream: UpstreamConfig) -> String {
        validate_upstreams(&[upstream]).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_safe_and_complete() {
        let upstream = oidc();
        validate_upstreams(&[upstream.clone(), github()]).unwrap();
        assert!(!upstream.link_by_email, "email linking is off unless asked for");
        assert!(upstream.provision);
        assert_eq!(upstream.effective_scopes(), ["openid", "profile", "email"]);
        assert_eq!(upstream.claims, ClaimMapping::default());
        assert_eq!(upstream.timeout, Duration::from_secs(10));
        let github = github();
        assert_eq!((github.claims.subject.as_str(), github.claims.username.as_str()), ("id", "login"));
        assert_eq!(github.claims.email, "email");
        assert!(!format!("{github:?}").contains("s3cret"));
    }

    #[test]
    fn broken_upstreams_are_refused_with_their_key() {
        type Breaking = Box<dyn Fn(&mut UpstreamConfig)>;
        let cases: Vec<(Breaking, &str)> = vec![
            (Box::new(|u| u.id = "Acme!".into()), "upstreams[0].id"),
            (Box::new(|u| u.kind = "saml".into()), "upstreams[0].kind"),
            (Box::new(|u| u.issuer = None), "upstreams[0].issuer"),
            (Box::new(|u| u.issuer = Some("http://login.acme.example".into())), "upstreams[0].issuer"),
            (Box::new(|u| u.client_secret = None), "upstreams[0].client_secret"),
            (Box::new(|u| u.token_endpoint_auth_method = "private_key_jwt".into()), "upstreams[0].private_key_file"),
            (Box::new(|u| u.timeout = Duration::from_secs(600)), "upstreams[0].timeout"),
            (
                Box::new(|u| {
                    u.kind = "oauth2".into();
                }),
                "upstreams[0].authorize_url",
            ),
        ];
        for (breaking, key) in cases {
            let mut upstream = oidc();
            breaking(&mut upstream);
            let error = error_of(upstream);
            assert!(error.contains(key), "{key}: {error}");
        }
        let error = validate_upstreams(&[oidc(), oidc()]).unwrap_err().to_string();
        assert!(error.contains("upstreams[1].id"), "{error}");
    }
}
