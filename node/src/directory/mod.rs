//! Directory data: clients and users, read-mostly, cached on every node.
//!
//! Client secrets are kept as HMAC-SHA-256 under a key of the node (never in plain text) and compared in constant
//! time: a slow password hash there would cap the token endpoint at the hash rate (DESIGN.md).
//!
//! A [`Directory`] is an immutable snapshot built from entries ([`StoredClient`], [`StoredUser`]): from the config
//! file ([`Directory::from_config`], the embedded single node) or from the cluster-wide copy in the replica
//! ([`store::DirectoryStore`], cluster mode), which every node caches and refreshes.

pub mod store;
pub mod stored;
pub mod upstreams;

pub use stored::{StoredClient, StoredUser, UpstreamLink};

use crate::config::Config;
use crate::oauth::params::ParamError;
use aws_lc_rs::hmac;
use idp_actors::jwt::{verifying_keys_from_jwks, Algorithm, VerifyingKey};
use idp_proto::records::ResponseType;
use idp_proto::{ErrorCode, Secret};
use std::collections::HashMap;
use std::sync::Arc;

/// How a client authenticates at the token, introspection and revocation endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    None,
}

impl AuthMethod {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            "private_key_jwt" => Some(Self::PrivateKeyJwt),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantTypes {
    pub authorization_code: bool,
    pub refresh_token: bool,
    pub client_credentials: bool,
}

pub struct Client {
    pub client_id: String,
    pub name: String,
    /// HMAC-SHA-256 of the secret under the directory's key.
    secret_mac: Option<[u8; SECRET_MAC_LEN]>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: GrantTypes,
    pub response_types: Vec<ResponseType>,
    pub auth_method: AuthMethod,
    pub id_token_alg: Algorithm,
    pub first_party: bool,
    pub jwks: Vec<VerifyingKey>,
    pub scopes: Vec<String>,
    /// Audience of access tokens when the request names none: `default_audience`, else the issuer.
    pub default_audience: String,
    /// The other audiences the client may ask for (RFC 8707), compared exactly.
    pub audiences: Vec<String>,
    /// SHA-256 (base64url) of the registration access token of a dynamically registered client (RFC 7592).
    pub registration_access_token_hash: Option<String>,
}

impl Client {
    /// Public clients (`none`) hold no secret and must use PKCE.
    pub fn is_public(&self) -> bool {
        self.auth_method == AuthMethod::None
    }

    pub fn allows_response_type(&self, response_type: ResponseType) -> bool {
        self.response_types.contains(&response_type)
    }

    /// Whether the client may ask for a scope (its list, or every supported scope when it has none).
    pub fn allows_scope(&self, scope: &str) -> bool {
        if self.scopes.is_empty() {
            crate::oauth::SUPPORTED_SCOPES.contains(&scope)
        } else {
            self.scopes.iter().any(|allowed| allowed == scope)
        }
    }

    /// RFC 8707 §2: the audience of the access tokens for a request naming `requested` (from
    /// [`requested_audience`]), or the default one; an audience the client may not ask for is `invalid_target`.
    pub fn resolve_audience(&self, requested: Option<&str>) -> Result<String, ParamError> {
        match requested {
            None => Ok(self.default_audience.clone()),
            Some(audience)
                if audience == self.default_audience || self.audiences.iter().any(|allowed| allowed == audience) =>
            {
                Ok(audience.to_string())
            }
            Some(_) => {
                Err(ParamError::new(ErrorCode::InvalidTarget, "the client may not ask tokens for this audience"))
            }
        }
    }
}

/// The audience a request names: `resource` (RFC 8707 §2: an absolute URI without a fragment, else
/// `invalid_target`) or `audience` (a plain string); naming both is ambiguous (`invalid_request`).
pub fn requested_audience<'a>(
    resource: Option<&'a str>,
    audience: Option<&'a str>,
) -> Result<Option<&'a str>, ParamError> {
    match (resource, audience) {
        (Some(_), Some(_)) => Err(ParamError::invalid("give resource or audience, not both")),
        (Some(resource), None) => {
            let absolute = url::Url::parse(resource).is_ok_and(|url| url.fragment().is_none());
            if absolute {
                Ok(Some(resource))
            } else {
                Err(ParamError::new(ErrorCode::InvalidTarget, "resource must be an absolute URI without a fragment"))
            }
        }
        (None, audience) => Ok(audience),
    }
}

impl Client {
    /// Registered through `/register` (RFC 7591), not by the config or the admin API.
    pub fn is_dynamically_registered(&self) -> bool {
        self.registration_access_token_hash.is_some()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Client").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: Arc<str>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// Kept for uniqueness, never found by the lookups: a disabled user cannot log in or use its tokens.
    pub disabled: bool,
    /// Upstream accounts linked to this user (federation).
    pub links: Vec<UpstreamLink>,
}

impl User {
    /// A user created by a sign-in through an upstream provider has no password (an empty hash never verifies).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }

    /// The stored form of this user (federation edits users by rewriting their entries).
    pub fn to_stored(&self) -> StoredUser {
        StoredUser {
            id: self.id.clone(),
            username: self.username.clone(),
            password_hash: self.password_hash.to_string(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            name: self.name.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            links: self.links.clone(),
            disabled: self.disabled,
        }
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("User").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("client `{client_id}`: {reason}")]
    Client { client_id: String, reason: String },
    #[error("user `{username}`: {reason}")]
    User { username: String, reason: String },
}

/// Length of a client-secret MAC (HMAC-SHA-256).
pub const SECRET_MAC_LEN: usize = 32;

/// The key of the client-secret MACs: the same on every node sharing the key-encryption key.
pub(crate) fn secret_mac_key(secret_key: [u8; 32]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, &secret_key)
}

/// Clients by id; users by id and by username (case-insensitive).
pub struct Directory {
    clients: HashMap<String, Arc<Client>>,
    users_by_id: HashMap<String, Arc<User>>,
    users_by_name: HashMap<String, Arc<User>>,
    /// Users by linked upstream account.
    users_by_link: HashMap<UpstreamLink, Arc<User>>,
    /// Users whose email is verified, by lowercased email (federation's linking by email); `None` when several
    /// users share one, so that no sign-in picks one of them at random.
    users_by_verified_email: HashMap<String, Option<Arc<User>>>,
    secret_key: hmac::Key,
    /// The upstream providers (federation), sorted by id, secrets opened; see [`Directory::with_upstreams`].
    upstreams: Vec<crate::config::UpstreamConfig>,
}

impl Directory {
    /// Builds the directory from the (validated) configuration; `secret_key` keys the client-secret MACs. Refuses
    /// again, at start, what would mix accounts up or fail every request of a client.
    pub fn from_config(config: &Config, secret_key: [u8; 32]) -> Result<Self, DirectoryError> {
        let mac_key = secret_mac_key(secret_key);
        let clients: Vec<StoredClient> =
            config.clients.iter().map(|client| StoredClient::from_config(client, &mac_key)).collect();
        let users: Vec<StoredUser> = config.users.iter().map(StoredUser::from_config).collect();
        let mut upstreams = config.upstreams.clone();
        upstreams.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Self::from_entries(&clients, &users, secret_key, &config.issuer)?.with_upstreams(upstreams))
    }

    /// Builds the directory from entries whose client secrets are already MACs (the replica's copy, or the config
    /// converted by [`StoredClient::from_config`]). `secret_key` must be the key those MACs were made with; the
    /// checks are those of [`Directory::from_config`].
    pub fn from_entries(
        clients: &[StoredClient],
        users: &[StoredUser],
        secret_key: [u8; 32],
        issuer: &str,
    ) -> Result<Self, DirectoryError> {
        let secret_key = secret_mac_key(secret_key);
        let mut directory = Self {
            clients: HashMap::new(),
            users_by_id: HashMap::new(),
            users_by_name: HashMap::new(),
            users_by_link: HashMap::new(),
            users_by_verified_email: HashMap::new(),
            secret_key,
            upstreams: Vec::new(),
        };
        // The provider is the resource server of /userinfo (RFC 9068 §3: `aud` names the resource server).
        let issuer = issuer.trim_end_matches('/');
        for client in clients {
            let client = build_client(client, issuer)?;
            directory.clients.insert(client.client_id.clone(), Arc::new(client));
        }
        for user in users {
            directory.insert_user(user)?;
        }
        Ok(directory)
    }

    /// The directory with these upstream providers (the store's, with their secrets opened).
    pub fn with_upstreams(mut self, upstreams: Vec<crate::config::UpstreamConfig>) -> Self {
        self.upstreams = upstreams;
        self
    }

    /// The upstream providers users may sign in through, sorted by id.
    pub fn upstreams(&self) -> &[crate::config::UpstreamConfig] {
        &self.upstreams
    }

    /// Usernames are looked up lowercased and ids become `sub`: a second user with either would take the first's
    /// place (validation refuses it with the key path; this keeps the directory sound on its own).
    fn insert_user(&mut self, entry: &StoredUser) -> Result<(), DirectoryError> {
        let user = Arc::new(User {
            id: entry.id.clone(),
            username: entry.username.clone(),
            password_hash: Arc::from(entry.password_hash.as_str()),
            email: entry.email.clone(),
            email_verified: entry.email_verified,
            name: entry.name.clone(),
            given_name: entry.given_name.clone(),
            family_name: entry.family_name.clone(),
            disabled: entry.disabled,
            links: entry.links.clone(),
        });
        let invalid = |reason: &str| DirectoryError::User { username: entry.username.clone(), reason: reason.into() };
        let name = entry.username.to_lowercase();
        if self.users_by_name.contains_key(&name) {
            return Err(invalid("another user has the same username (usernames ignore case)"));
        }
        if self.users_by_id.contains_key(&user.id) {
            return Err(invalid("another user has the same subject id"));
        }
        for link in &user.links {
            if self.users_by_link.insert(link.clone(), user.clone()).is_some() {
                return Err(invalid("another user is linked to the same upstream account"));
            }
        }
        if let (Some(email), true) = (&user.email, user.email_verified) {
            self.users_by_verified_email
                .entry(email.to_lowercase())
                .and_modify(|found| *found = None)
                .or_insert_with(|| Some(user.clone()));
        }
        self.users_by_name.insert(name, user.clone());
        self.users_by_id.insert(user.id.clone(), user);
        Ok(())
    }

    /// The user linked to an upstream account.
    pub fn user_by_link(&self, upstream: &str, subject: &str) -> Option<&Arc<User>> {
        let link = UpstreamLink { upstream: upstream.to_string(), subject: subject.to_string() };
        self.users_by_link.get(&link)
    }

    /// The one user whose verified email this is (ignoring case); `None` when none or several.
    pub fn user_by_verified_email(&self, email: &str) -> Option<&Arc<User>> {
        self.users_by_verified_email.get(&email.to_lowercase())?.as_ref()
    }

    pub fn client(&self, client_id: &str) -> Option<&Arc<Client>> {
        self.clients.get(client_id)
    }

    /// The user with this subject id, disabled or not (to keep a disabled user disabled).
    pub fn user_entry_by_id(&self, id: &str) -> Option<&Arc<User>> {
        self.users_by_id.get(id)
    }

    /// The enabled user with this subject id.
    pub fn user_by_id(&self, id: &str) -> Option<&Arc<User>> {
        self.users_by_id.get(id).filter(|user| !user.disabled)
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn user_count(&self) -> usize {
        self.users_by_id.len()
    }

    /// The enabled user with this username (ignoring case).
    pub fn user_by_name(&self, username: &str) -> Option<&Arc<User>> {
        self.users_by_name.get(&username.to_lowercase()).filter(|user| !user.disabled)
    }

    /// Checks a presented client secret against the stored MAC in constant time.
    pub fn verify_client_secret(&self, client: &Client, presented: &Secret<String>) -> bool {
        match &client.secret_mac {
            Some(mac) => hmac::verify(&self.secret_key, presented.expose().as_bytes(), mac).is_ok(),
            None => false,
        }
    }
}

/// Counts only: the MACs and password hashes stay out of logs.
impl std::fmt::Debug for Directory {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Directory")
            .field("clients", &self.clients.len())
            .field("users", &self.users_by_id.len())
            .finish_non_exhaustive()
    }
}

fn build_client(entry: &StoredClient, issuer: &str) -> Result<Client, DirectoryError> {
    let invalid = |reason: String| DirectoryError::Client { client_id: entry.client_id.clone(), reason };
    let jwks = match &entry.jwks {
        Some(jwks) => verifying_keys_from_jwks(jwks).map_err(|error| invalid(format!("jwks: {error}")))?,
        None => Vec::new(),
    };
    let auth_method = AuthMethod::parse(&entry.token_endpoint_auth_method)
        .ok_or_else(|| invalid("unknown token_endpoint_auth_method".into()))?;
    if auth_method == AuthMethod::PrivateKeyJwt && jwks.is_empty() {
        let reason = "jwks: no usable signing key (RS256 with RSA ≥ 2048 bits, ES256 P-256, or EdDSA Ed25519)";
        return Err(invalid(reason.into()));
    }
    let has = |grant: &str| entry.grant_types.iter().any(|granted| granted == grant);
    let mut response_types: Vec<ResponseType> = entry
        .response_types
        .iter()
        .map(|text| ResponseType::parse(text).ok_or_else(|| invalid(format!("unknown response type {text:?}"))))
        .collect::<Result<_, _>>()?;
    // A code is useless to a client that may not redeem it.
    response_types.retain(|response_type| !response_type.code || has("authorization_code"));
    Ok(Client {
        client_id: entry.client_id.clone(),
        name: entry.name.clone().unwrap_or_else(|| entry.client_id.clone()),
        secret_mac: entry.secret_mac().map_err(|reason| invalid(reason.into()))?,
        redirect_uris: entry.redirect_uris.clone(),
        post_logout_redirect_uris: entry.post_logout_redirect_uris.clone(),
        grant_types: GrantTypes {
            authorization_code: has("authorization_code"),
            refresh_token: has("refresh_token"),
            client_credentials: has("client_credentials"),
        },
        response_types,
        auth_method,
        id_token_alg: Algorithm::parse(&entry.id_token_signed_response_alg)
            .ok_or_else(|| invalid("unknown id_token_signed_response_alg".into()))?,
        first_party: entry.first_party,
        jwks,
        scopes: entry.scopes.clone(),
        default_audience: entry.default_audience.clone().unwrap_or_else(|| issuer.to_string()),
        audiences: entry.audiences.clone(),
        registration_access_token_hash: entry.registration_access_token_hash.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn directory_of(config: &Config) -> Result<Directory, DirectoryError> {
        Directory::from_config(config, [7; 32])
    }

    fn dev() -> Config {
        Config::dev("127.0.0.1:8080", None)
    }

    /// RFC 9068 §4 and RFC 8725 §3.12: an access token whose `aud` is the client id would pass a careless RP's ID
    /// token checks; by default the audience is the provider itself, the resource server of /userinfo.
    #[test]
    fn default_audience_is_the_issuer_not_the_client_id() {
        let directory = directory_of(&dev()).unwrap();
        let demo = directory.client("demo").unwrap();
        assert_eq!(demo.default_audience, "http://127.0.0.1:8080");
        assert_eq!(demo.resolve_audience(None).unwrap(), "http://127.0.0.1:8080");
        let mut config = dev();
        config.clients[0].default_audience = Some("https://orders.example.com".into());
        let directory = directory_of(&config).unwrap();
        assert_eq!(directory.client("demo").unwrap().resolve_audience(None).unwrap(), "https://orders.example.com");
    }

    /// RFC 8707 §2: only the registered audiences and the default one are granted; anything else is
    /// `invalid_target`, compared exactly (no prefix, no normalisation).
    #[test]
    fn resolve_audience_grants_only_registered_audiences() {
        let directory = directory_of(&dev()).unwrap();
        let demo = directory.client("demo").unwrap();
        assert_eq!(demo.resolve_audience(Some("https://api.example.com")).unwrap(), "https://api.example.com");
        assert_eq!(demo.resolve_audience(Some("http://127.0.0.1:8080")).unwrap(), "http://127.0.0.1:8080");
        for refused in ["https://api.example.com/", "https://api.example.com/orders", "demo", "https://evil.example"] {
            let error = demo.resolve_audience(Some(refused)).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidTarget, "{refused}");
        }
        let public = directory.client("demo-public").unwrap();
        let error = public.resolve_audience(Some("https://api.example.com")).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidTarget, "another client's audience");
    }

    /// RFC 8707 §2: `resource` is an absolute URI without a fragment; `audience` is any string; not both.
    #[test]
    fn requested_audience_checks_the_resource_form() {
        assert_eq!(requested_audience(None, None).unwrap(), None);
        assert_eq!(requested_audience(Some("urn:example:api"), None).unwrap(), Some("urn:example:api"));
        assert_eq!(requested_audience(None, Some("inventory-api")).unwrap(), Some("inventory-api"));
        for malformed in ["not a uri", "/relative", "https://api.example.com/#fragment"] {
            let error = requested_audience(Some(malformed), None).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidTarget, "{malformed}");
        }
        let both = requested_audience(Some("https://api.example.com"), Some("inventory-api")).unwrap_err();
        assert_eq!(both.code, ErrorCode::InvalidRequest);
    }

    /// The mallory/bob account mix-up, refused at start even when validation was skipped.
    #[test]
    fn users_sharing_a_subject_id_or_a_username_are_refused() {
        let mut config = dev();
        let mut mallory = config.users[0].clone();
        (mallory.username, mallory.id) = ("mallory".into(), Some("alice".into()));
        config.users.push(mallory);
        let error = directory_of(&config).err().unwrap().to_string();
        assert_eq!(error, "user `mallory`: another user has the same subject id");
        let mut config = dev();
        let mut shouting = config.users[0].clone();
        (shouting.username, shouting.id) = ("ALICE".into(), Some("alice-2".into()));
        config.users.push(shouting);
        let error = directory_of(&config).err().unwrap().to_string();
        assert_eq!(error, "user `ALICE`: another user has the same username (usernames ignore case)");
        assert!(directory_of(&dev()).unwrap().user_by_name("Alice").is_some_and(|alice| alice.id == "alice"));
    }

    #[test]
    fn private_key_jwt_without_a_usable_key_is_refused() {
        let mut config = dev();
        let client = &mut config.clients[0];
        (client.token_endpoint_auth_method, client.client_secret) = ("private_key_jwt".into(), None);
        client.jwks = Some(json!({"keys": [{"kty": "oct", "alg": "HS256", "k": "c2VjcmV0"}]}));
        let error = directory_of(&config).err().unwrap().to_string();
        assert_eq!(
            error,
            "client `demo`: jwks: no usable signing key (RS256 with RSA ≥ 2048 bits, ES256 P-256, or EdDSA Ed25519)"
        );
    }
}
