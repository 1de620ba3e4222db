//! Checking tokens as a relying party does: the signature against the JWKS a node serves, and the issuer.

use anyhow::Context;
use idp_actors::jwt::{self, Claims, JwtHeader};
use serde_json::Value;

/// Verifies `token` with the keys of `jwks` (a JWK Set as a node serves it) and checks `iss`. Answers the header
/// (for its `kid`) and the claims.
pub fn verify(token: &str, jwks: &Value, issuer: &str) -> anyhow::Result<(JwtHeader, Claims)> {
    let keys = jwt::verifying_keys_from_jwks(jwks).context("parsing the jwks")?;
    let (header, claims) = jwt::verify(token, &keys).map_err(|error| anyhow::anyhow!("{error}"))?;
    let iss = claims.get("iss").and_then(Value::as_str);
    anyhow::ensure!(iss == Some(issuer), "token issuer {iss:?} is not {issuer}");
    Ok((header, claims))
}

/// The `kid` of a token's header, unverified (to say which key signed it).
pub fn kid_of(token: &str) -> Option<String> {
    jwt::decode_unverified(token).ok().and_then(|(header, _)| header.kid)
}

/// The `kid`s a JWK Set publishes, sorted.
pub fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(|key| key.get("kid").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default();
    kids.sort();
    kids
}
