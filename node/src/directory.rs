//! Directory data: clients and users, read-mostly, cached on every node.
//!
//! Client secrets are kept as HMAC-SHA-256 under a key of the node (never in plain text) and compared in constant
//! time: a slow password hash there would cap the token endpoint at the hash rate (DESIGN.md).

use crate::config::{ClientConfig, Config, UserConfig};
use aws_lc_rs::hmac;
use idp_actors::jwt::{verifying_keys_from_jwks, Algorithm, VerifyingKey};
use idp_proto::records::ResponseType;
use idp_proto::Secret;
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
    secret_mac: Option<hmac::Tag>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: GrantTypes,
    pub response_types: Vec<ResponseType>,
    pub auth_method: AuthMethod,
    pub id_token_alg: Algorithm,
    pub first_party: bool,
    pub jwks: Vec<VerifyingKey>,
    pub scopes: Vec<String>,
    pub default_audience: String,
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
}

/// Clients by id; users by id and by username (case-insensitive).
pub struct Directory {
    clients: HashMap<String, Arc<Client>>,
    users_by_id: HashMap<String, Arc<User>>,
    users_by_name: HashMap<String, Arc<User>>,
    secret_key: hmac::Key,
}

impl Directory {
    /// Builds the directory from the (validated) configuration; `secret_key` keys the client-secret MACs.
    pub fn from_config(config: &Config, secret_key: [u8; 32]) -> Result<Self, DirectoryError> {
        let secret_key = hmac::Key::new(hmac::HMAC_SHA256, &secret_key);
        let mut directory =
            Self { clients: HashMap::new(), users_by_id: HashMap::new(), users_by_name: HashMap::new(), secret_key };
        for client in &config.clients {
            let client = directory.build_client(client)?;
            directory.clients.insert(client.client_id.clone(), Arc::new(client));
        }
        for user in &config.users {
            directory.insert_user(user);
        }
        Ok(directory)
    }

    fn build_client(&self, config: &ClientConfig) -> Result<Client, DirectoryError> {
        let invalid = |reason: String| DirectoryError::Client { client_id: config.client_id.clone(), reason };
        let jwks = match &config.jwks {
            Some(jwks) => verifying_keys_from_jwks(jwks).map_err(|error| invalid(format!("jwks: {error}")))?,
            None => Vec::new(),
        };
        let has = |grant: &str| config.grant_types.iter().any(|granted| granted == grant);
        let mut response_types: Vec<ResponseType> = config
            .response_types
            .iter()
            .map(|text| ResponseType::parse(text).ok_or_else(|| invalid(format!("unknown response type {text:?}"))))
            .collect::<Result<_, _>>()?;
        // A code is useless to a client that may not redeem it.
        response_types.retain(|response_type| !response_type.code || has("authorization_code"));
        Ok(Client {
            client_id: config.client_id.clone(),
            name: config.name.clone().unwrap_or_else(|| config.client_id.clone()),
            secret_mac: config.client_secret.as_ref().map(|secret| hmac::sign(&self.secret_key, secret.as_bytes())),
            redirect_uris: config.redirect_uris.clone(),
            post_logout_redirect_uris: config.post_logout_redirect_uris.clone(),
            grant_types: GrantTypes {
                authorization_code: has("authorization_code"),
                refresh_token: has("refresh_token"),
                client_credentials: has("client_credentials"),
            },
            response_types,
            auth_method: AuthMethod::parse(&config.token_endpoint_auth_method)
                .ok_or_else(|| invalid("unknown token_endpoint_auth_method".into()))?,
            id_token_alg: Algorithm::parse(&config.id_token_signed_response_alg)
                .ok_or_else(|| invalid("unknown id_token_signed_response_alg".into()))?,
            first_party: config.first_party,
            jwks,
            scopes: config.scopes.clone(),
            default_audience: config.default_audience.clone().unwrap_or_else(|| config.client_id.clone()),
        })
    }

    fn insert_user(&mut self, config: &UserConfig) {
        let user = Arc::new(User {
            id: config.id.clone().unwrap_or_else(|| config.username.clone()),
            username: config.username.clone(),
            password_hash: Arc::from(config.password_hash.as_str()),
            email: config.email.clone(),
            email_verified: config.email_verified,
            name: config.name.clone(),
            given_name: config.given_name.clone(),
            family_name: config.family_name.clone(),
        });
        self.users_by_name.insert(config.username.to_lowercase(), user.clone());
        self.users_by_id.insert(user.id.clone(), user);
    }

    pub fn client(&self, client_id: &str) -> Option<&Arc<Client>> {
        self.clients.get(client_id)
    }

    pub fn user_by_id(&self, id: &str) -> Option<&Arc<User>> {
        self.users_by_id.get(id)
    }

    pub fn user_by_name(&self, username: &str) -> Option<&Arc<User>> {
        self.users_by_name.get(&username.to_lowercase())
    }

    /// Checks a presented client secret against the stored MAC in constant time.
    pub fn verify_client_secret(&self, client: &Client, presented: &Secret<String>) -> bool {
        match &client.secret_mac {
            Some(tag) => hmac::verify(&self.secret_key, presented.expose().as_bytes(), tag.as_ref()).is_ok(),
            None => false,
        }
    }
}
