//! Minting ID tokens (OIDC Core §2, §3.1.3.6, §3.3.2.11) and JWT access tokens (RFC 9068), signed locally with
//! the key ring's `current` key of the client's algorithm.

use crate::directory::{Client, User};
use crate::state::AppState;
use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idp_actors::jwt::Algorithm;
use idp_proto::records::Authentication;
use idp_proto::Handle;
use serde::Serialize;
use serde_json::{Map, Value};

/// Whom an access token speaks for, and under which grant it can be revoked.
pub struct AccessTokenSpec<'a> {
    pub client: &'a Client,
    /// The user's subject, or the client id for `client_credentials`.
    pub subject: &'a str,
    pub scopes: &'a [String],
    pub audience: &'a str,
    pub authentication: Option<&'a Authentication>,
    pub sid: Option<&'a str>,
    /// The grant the token was issued from (it dies with it); `None` for `client_credentials`.
    pub grant: Option<Handle>,
    /// The grant's own expiry (Unix ms): the token's `exp` never passes it, since the token dies with its grant.
    pub not_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct AccessTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: String,
    client_id: &'a str,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amr: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    /// The grant handle: `/userinfo` and `/introspect` check it is still live.
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<String>,
}

/// Signs an access token; returns it with its lifetime in seconds.
pub fn access_token(state: &AppState, spec: &AccessTokenSpec<'_>) -> Result<(String, u64), MintError> {
    let now = state.clock.now_secs();
    let configured = state.config.tokens.access_token_ttl.as_secs();
    let grant_left = spec.not_after_ms.map(|not_after_ms| (not_after_ms / 1000).saturating_sub(now));
    let lifetime = grant_left.map_or(configured, |left| left.min(configured));
    // The jti is a handle: a revoked token without a grant is remembered in the jti's shard.
    let jti = match spec.grant {
        Some(grant) => Handle::random_in(grant.shard).encode(),
        None => Handle::random(state.shards.shard_count()).encode(),
    };
    let claims = AccessTokenClaims {
        iss: &state.issuer,
        sub: spec.subject,
        aud: spec.audience,
        exp: now + lifetime,
        iat: now,
        jti,
        client_id: &spec.client.client_id,
        scope: spec.scopes.join(" "),
        auth_time: spec.authentication.map(|authentication| authentication.auth_time),
        acr: spec.authentication.and_then(|authentication| authentication.acr.as_deref()),
        amr: spec.authentication.map(|authentication| authentication.amr.as_slice()),
        sid: spec.sid,
        gid: spec.grant.map(|grant| grant.encode()),
    };
    let token = sign(state, spec.client.id_token_alg, "at+jwt", &claims)?;
    Ok((token, lifetime))
}

/// What an ID token is about.
pub struct IdTokenSpec<'a> {
    pub client: &'a Client,
    pub user: &'a User,
    pub authentication: &'a Authentication,
    pub scopes: &'a [String],
    pub nonce: Option<&'a str>,
    pub sid: Option<&'a str>,
    /// Codes and access tokens issued beside it, for `c_hash` and `at_hash`.
    pub code: Option<&'a str>,
    pub access_token: Option<&'a str>,
}

pub fn id_token(state: &AppState, spec: &IdTokenSpec<'_>) -> Result<String, MintError> {
    let now = state.clock.now_secs();
    let alg = spec.client.id_token_alg;
    let mut claims = Map::new();
    let mut put = |name: &str, value: Value| {
        claims.insert(name.to_string(), value);
    };
    put("iss", state.issuer.as_str().into());
    put("sub", spec.user.id.as_str().into());
    put("aud", spec.client.client_id.as_str().into());
    put("exp", (now + state.config.tokens.id_token_ttl.as_secs()).into());
    put("iat", now.into());
    put("auth_time", spec.authentication.auth_time.into());
    put("azp", spec.client.client_id.as_str().into());
    put("amr", spec.authentication.amr.clone().into());
    if let Some(acr) = &spec.authentication.acr {
        put("acr", acr.as_str().into());
    }
    if let Some(nonce) = spec.nonce {
        put("nonce", nonce.into());
    }
    if let Some(sid) = spec.sid {
        put("sid", sid.into());
    }
    if let Some(code) = spec.code {
        put("c_hash", half_hash(alg, code).into());
    }
    if let Some(access_token) = spec.access_token {
        put("at_hash", half_hash(alg, access_token).into());
    }
    for (name, value) in user_claims(spec.user, spec.scopes) {
        claims.entry(name).or_insert(value);
    }
    sign(state, alg, "JWT", &claims)
}

/// Claims released for the granted scopes (OIDC Core §5.4).
pub fn user_claims(user: &User, scopes: &[String]) -> Map<String, Value> {
    let mut claims = Map::new();
    let has = |scope: &str| scopes.iter().any(|granted| granted == scope);
    if has("profile") {
        claims.insert("preferred_username".into(), user.username.as_str().into());
        for (name, value) in
            [("name", &user.name), ("given_name", &user.given_name), ("family_name", &user.family_name)]
        {
            if let Some(value) = value {
                claims.insert(name.into(), value.as_str().into());
            }
        }
    }
    if has("email") {
        if let Some(email) = &user.email {
            claims.insert("email".into(), email.as_str().into());
            claims.insert("email_verified".into(), user.email_verified.into());
        }
    }
    claims
}

/// `at_hash` / `c_hash`: the left half of the hash of the ASCII value, with the hash of the signing algorithm
/// (OIDC Core §3.1.3.6; SHA-512 for Ed25519).
pub fn half_hash(alg: Algorithm, value: &str) -> String {
    let algorithm = match alg {
        Algorithm::EdDSA => &digest::SHA512,
        Algorithm::RS256 | Algorithm::ES256 => &digest::SHA256,
    };
    let hash = digest::digest(algorithm, value.as_bytes());
    let bytes = hash.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no current signing key for {0:?}")]
    NoKey(Algorithm),
    #[error("signing failed: {0}")]
    Sign(#[from] idp_actors::keyring::keys::KeyError),
}

fn sign<C: Serialize>(state: &AppState, alg: Algorithm, typ: &str, claims: &C) -> Result<String, MintError> {
    if state.config.testing.switches().unpublished_signing_key {
        // Test-only (I4 negative control): a fresh key, published nowhere.
        return Ok(idp_actors::keyring::keys::SigningKey::generate(alg)?.try_sign_jwt(typ, claims)?);
    }
    let keys = state.keys.load();
    let signer = keys.signer(alg).ok_or(MintError::NoKey(alg))?;
    Ok(signer.try_sign_jwt(typ, claims)?)
}
