//! The stored form of the directory: three replica documents, each JSON with a format version `v`.
//!
//! - [`CLIENTS_DOCUMENT`]: `{"v":1,"key_fingerprint":"…","clients":[StoredClient…]}`, sorted by client id.
//! - [`USERS_DOCUMENT`]: `{"v":1,"users":[StoredUser…]}`, sorted by subject id.
//! - [`VERSION_DOCUMENT`]: `{"v":1,"n":7,"nonce":"…"}`, rewritten after every change (nodes poll it).
//! - `directory:upstreams` (the upstream providers, their secrets sealed): see [`upstreams`](super::upstreams).
//!
//! A client secret is never stored: only its HMAC-SHA-256 under the key derived from the key-encryption key, which
//! every node shares, so every node computes the same MAC from the same config file and the seed is idempotent.
//! `key_fingerprint` names that key (a MAC of a fixed label, which reveals nothing of it): a node with another KEK
//! would compute other MACs and rewrite every client at each start, so it is refused instead.
//!
//! The entries are their own types, not the config structs, so that a new config field cannot change the stored
//! format by accident; a reader refuses a field it does not know (`deny_unknown_fields`) rather than drop it.

use crate::config::{ClientConfig, UserConfig};
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The replica document of the clients.
pub const CLIENTS_DOCUMENT: &str = "directory:clients";
/// The replica document of the users.
pub const USERS_DOCUMENT: &str = "directory:users";
/// The replica document rewritten after every change of the other two.
pub const VERSION_DOCUMENT: &str = "directory:version";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

const FINGERPRINT_LABEL: &[u8] = b"idp directory: client-secret key fingerprint";

/// Why a stored document cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("stored document `{document}` is corrupt: {reason}")]
    Corrupt { document: &'static str, reason: String },
    #[error("stored document `{document}` has format version {found}; this build reads version {FORMAT_VERSION} only")]
    UnsupportedVersion { document: &'static str, found: u64 },
    #[error(
        "the stored client secrets were keyed with another key-encryption key (fingerprint {stored}, this node \
         {configured}); every node of a cluster needs the same KEK"
    )]
    WrongKey { stored: String, configured: String },
}

/// A client as stored: the config's fields, with the secret replaced by its MAC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredClient {
    pub client_id: String,
    pub name: Option<String>,
    /// base64url (no padding) of HMAC-SHA-256(secret) under the client-secret key; never the secret.
    pub client_secret_hmac: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub id_token_signed_response_alg: String,
    pub first_party: bool,
    pub jwks: Option<serde_json::Value>,
    pub scopes: Vec<String>,
    pub default_audience: Option<String>,
    pub audiences: Vec<String>,
    /// A client registered at `/register` (RFC 7591): base64url SHA-256 of its registration access token
    /// (RFC 7592), absent for other clients and in documents written before registration existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token_hash: Option<String>,
}

impl StoredClient {
    /// The stored form of a configured client; its secret is MACed under `mac_key` and dropped.
    pub fn from_config(config: &ClientConfig, mac_key: &hmac::Key) -> Self {
        let client_secret_hmac = config
            .client_secret
            .as_ref()
            .map(|secret| URL_SAFE_NO_PAD.encode(hmac::sign(mac_key, secret.as_bytes()).as_ref()));
        Self {
            client_id: config.client_id.clone(),
            name: config.name.clone(),
            client_secret_hmac,
            redirect_uris: config.redirect_uris.clone(),
            post_logout_redirect_uris: config.post_logout_redirect_uris.clone(),
            grant_types: config.grant_types.clone(),
            response_types: config.response_types.clone(),
            token_endpoint_auth_method: config.token_endpoint_auth_method.clone(),
            id_token_signed_response_alg: config.id_token_signed_response_alg.clone(),
            first_party: config.first_party,
            jwks: config.jwks.clone(),
            scopes: config.scopes.clone(),
            default_audience: config.default_audience.clone(),
            audiences: config.audiences.clone(),
            registration_access_token_hash: None,
        }
    }

    /// The decoded secret MAC, if the client has a secret.
    pub fn secret_mac(&self) -> Result<Option<[u8; super::SECRET_MAC_LEN]>, &'static str> {
        let Some(encoded) = &self.client_secret_hmac else {
            return Ok(None);
        };
        let reason = "client_secret_hmac is not a base64url HMAC-SHA-256";
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| reason)?;
        bytes.try_into().map(Some).map_err(|_| reason)
    }
}

/// A user as stored: the config's fields, with the effective subject id spelled out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredUser {
    /// The subject id (`sub`): the config's `id`, else its username.
    pub id: String,
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// Absent (false) in documents written before users could be disabled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Upstream accounts linked to this user (federation); absent when none, so a user without links is stored
    /// exactly as before links existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<UpstreamLink>,
}

/// An account at an upstream provider, linked to a local user: sign-ins through `upstream` whose subject is
/// `subject` are this user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLink {
    pub upstream: String,
    pub subject: String,
}

impl StoredUser {
    pub fn from_config(config: &UserConfig) -> Self {
        Self {
            id: config.id.clone().unwrap_or_else(|| config.username.clone()),
            username: config.username.clone(),
            password_hash: config.password_hash.clone(),
            email: config.email.clone(),
            email_verified: config.email_verified,
            name: config.name.clone(),
            given_name: config.given_name.clone(),
            family_name: config.family_name.clone(),
            disabled: config.disabled,
            links: Vec::new(),
        }
    }

    /// Back to the config's shape, for the config's validation rules.
    pub fn to_config(&self) -> UserConfig {
        UserConfig {
            username: self.username.clone(),
            id: Some(self.id.clone()),
            password_hash: self.password_hash.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            name: self.name.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            disabled: self.disabled,
        }
    }
}

/// The fingerprint of the client-secret key: the first 8 bytes of a MAC of a fixed label, base64url.
pub fn key_fingerprint(mac_key: &hmac::Key) -> String {
    URL_SAFE_NO_PAD.encode(&hmac::sign(mac_key, FINGERPRINT_LABEL).as_ref()[..8])
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsV1 {
    v: u64,
    key_fingerprint: String,
    clients: Vec<StoredClient>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersV1 {
    v: u64,
    users: Vec<StoredUser>,
}

/// The version document: `n` counts changes (for people reading Redis), `nonce` makes every write unique.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionV1 {
    v: u64,
    pub n: u64,
    pub nonce: String,
}

impl VersionV1 {
    pub fn new(n: u64, nonce: String) -> Self {
        Self { v: FORMAT_VERSION, n, nonce }
    }
}

pub fn encode_clients(clients: &[StoredClient], fingerprint: &str) -> Vec<u8> {
    let document = ClientsV1 { v: FORMAT_VERSION, key_fingerprint: fingerprint.into(), clients: clients.to_vec() };
    serde_json::to_vec(&document).expect("a directory document serializes")
}

/// Reads the clients document, refusing it when its MACs were made with another key than `fingerprint`'s.
pub fn decode_clients(bytes: &[u8], fingerprint: &str) -> Result<Vec<StoredClient>, FormatError> {
    let document: ClientsV1 = decode(CLIENTS_DOCUMENT, bytes)?;
    same_key(document.key_fingerprint, fingerprint)?;
    Ok(document.clients)
}

pub fn encode_users(users: &[StoredUser]) -> Vec<u8> {
    let document = UsersV1 { v: FORMAT_VERSION, users: users.to_vec() };
    serde_json::to_vec(&document).expect("a directory document serializes")
}

pub fn decode_users(bytes: &[u8]) -> Result<Vec<StoredUser>, FormatError> {
    decode::<UsersV1>(USERS_DOCUMENT, bytes).map(|document| document.users)
}

pub fn encode_version(version: &VersionV1) -> Vec<u8> {
    serde_json::to_vec(version).expect("a directory document serializes")
}

pub fn decode_version(bytes: &[u8]) -> Result<VersionV1, FormatError> {
    decode(VERSION_DOCUMENT, bytes)
}

/// Refuses a keyed document whose MACs or seals were made with another key than the configured one's.
pub(super) fn same_key(stored: String, configured: &str) -> Result<(), FormatError> {
    if stored != configured {
        return Err(FormatError::WrongKey { stored, configured: configured.into() });
    }
    Ok(())
}

/// Checks `v` first, so that a newer format is reported as such rather than as corrupt (the migration path starts
/// here when a version 2 exists).
pub(super) fn decode<T: serde::de::DeserializeOwned>(document: &'static str, bytes: &[u8]) -> Result<T, FormatError> {
    #[derive(Deserialize)]
    struct Version {
        v: u64,
    }
    let corrupt = |error: serde_json::Error| FormatError::Corrupt { document, reason: describe(&error) };
    let Version { v } = serde_json::from_slice(bytes).map_err(corrupt)?;
    if v != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion { document, found: v });
    }
    serde_json::from_slice(bytes).map_err(corrupt)
}

/// A serde error without the values it may quote (a password hash has no place in a log line): the names of
/// missing, unknown or repeated fields are kept, any other data error becomes its position.
fn describe(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let names_a_field =
        ["missing field", "unknown field", "duplicate field"].iter().any(|start| message.starts_with(start));
    if !error.is_data() || names_a_field {
        message
    } else {
        format!("a value of the wrong type or form at line {}, column {}", error.line(), error.column())
    }
}
