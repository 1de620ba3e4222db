//! JSON Web Tokens: the compact JWS serialization (RFC 7515), JWK Sets (RFC 7517) and the three signature
//! algorithms we support (RFC 7518 §3.3 RS256, §3.4 ES256; RFC 8037 §3.1 EdDSA with Ed25519).
//!
//! Signing lives beside the private keys in [`crate::keyring::keys::SigningKey`]; this module verifies, for our own
//! tokens (through [`crate::keyring::KeySet::verify`]) and for tokens that clients sign with keys from their
//! registered JWKS (`private_key_jwt` client authentication, request objects later).
//!
//! The verifier never takes a key from the token itself (`jwk`, `jku`, `x5u`, `x5c` are ignored) and accepts only
//! the algorithms listed in [`Algorithm`], so neither `alg: none` nor an HMAC algorithm keyed with a public key can
//! get through (RFC 8725 §2.1, §3.1).

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Claims of a JWT: a JSON object (RFC 7519 §7.2 step 10).
pub type Claims = Map<String, Value>;

/// The signature algorithms we sign and verify with (RFC 7518 §3.1 names, RFC 8037 §3.1 for EdDSA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3); mandatory in OpenID Connect Core §15.1.
    RS256,
    /// ECDSA on P-256 with SHA-256, signature `R || S` (RFC 7518 §3.4).
    ES256,
    /// EdDSA with Ed25519 (RFC 8037 §3.1).
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm, in the order the JWKS lists them.
    pub const ALL: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

    /// The JOSE `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    /// Parses a JOSE `alg` value (case-sensitive, RFC 7515 §4.1.1); `None` for anything we do not support.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|algorithm| algorithm.as_str() == text)
    }

    /// The position of the algorithm in [`Algorithm::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::RS256 => 0,
            Self::ES256 => 1,
            Self::EdDSA => 2,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The JOSE header members the provider looks at (RFC 7515 §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtHeader {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// The header as read off the wire: `crit` is kept only to refuse it.
#[derive(Deserialize)]
struct WireHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, or a header or payload that is not a JSON object.
    #[error("malformed token")]
    Malformed,
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
    /// The `alg` is not one of [`Algorithm::ALL`] (this includes `none` and every HMAC algorithm).
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The header names critical extensions (RFC 7515 §4.1.11); we understand none.
    #[error("unsupported critical header parameters")]
    UnsupportedCritical,
    /// No key has the token's `kid` (or, without `kid`, no key has the token's `alg`).
    #[error("no key matches the token's key id and algorithm")]
    UnknownKey,
    /// The key named by `kid` is a key for another algorithm.
    #[error("the token's algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("bad signature")]
    BadSignature,
    /// A JWK Set that does not have the shape of RFC 7517 §5 and §4, or a key member of the wrong size.
    #[error("invalid jwk set: {0}")]
    InvalidJwks(&'static str),
}

/// A public key to verify with (from our own key ring or from a client's registered JWKS), parsed once.
#[derive(Clone)]
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    key: ParsedPublicKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("VerifyingKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

impl VerifyingKey {
    /// An RSA key from its modulus and exponent, big-endian (RFC 7518 §6.3.1); leading zero bytes are tolerated.
    pub fn rsa(kid: Option<String>, modulus: &[u8], exponent: &[u8]) -> Result<Self, JwtError> {
        let components = RsaPublicKeyComponents { n: strip_leading_zeros(modulus), e: strip_leading_zeros(exponent) };
        let key = components
            .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
            .map_err(|_| JwtError::InvalidJwks("invalid rsa key"))?;
        Ok(Self { kid, alg: Algorithm::RS256, key })
    }

    /// A P-256 key from its coordinates, 32 bytes each (RFC 7518 §6.2.1.2, §6.2.1.3).
    pub fn ec_p256(kid: Option<String>, x: &[u8], y: &[u8]) -> Result<Self, JwtError> {
        if x.len() != 32 || y.len() != 32 {
            return Err(JwtError::InvalidJwks("p-256 coordinates must be 32 bytes"));
        }
        let mut point = Vec::with_capacity(65);
        point.push(0x04); // SEC 1 §2.3.3 uncompressed point
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let key = ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .map_err(|_| JwtError::InvalidJwks("p-256 point not on the curve"))?;
        Ok(Self { kid, alg: Algorithm::ES256, key })
    }

    /// An Ed25519 key from its 32 public bytes (RFC 8037 §2).
    pub fn ed25519(kid: Option<String>, x: &[u8]) -> Result<Self, JwtError> {
        if x.len() != 32 {
            return Err(JwtError::InvalidJwks("ed25519 public key must be 32 bytes"));
        }
        let key =
            ParsedPublicKey::new(&signature::ED25519, x).map_err(|_| JwtError::InvalidJwks("invalid ed25519 key"))?;
        Ok(Self { kid, alg: Algorithm::EdDSA, key })
    }

    /// Checks a signature over `message`.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }

    /// Whether this key may verify a token whose header carries `kid_opt`: a key without a `kid` matches any.
    fn matches_kid(&self, kid_opt: Option<&str>) -> bool {
        match (kid_opt, self.kid.as_deref()) {
            (Some(wanted), Some(ours)) => wanted == ours,
            _ => true,
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first_nonzero = bytes.iter().position(|byte| *byte != 0).unwrap_or(bytes.len());
    &bytes[first_nonzero..]
}

/// Bit length of a big-endian unsigned integer without leading zeros.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// Parses a JWK Set (RFC 7517 §5): RSA (`n`, `e`; `alg` RS256 or absent), EC P-256 (`x`, `y`; ES256) and OKP Ed25519
/// (`x`; EdDSA). Keys meant for another use (`use` other than `sig`, RFC 7517 §4.2; `key_ops` without `verify`, §4.3),
/// of another type, curve or algorithm, or RSA keys outside 2048–8192 bits are skipped; a set or key of the wrong
/// shape is an error.
pub fn verifying_keys_from_jwks(jwks: &Value) -> Result<Vec<VerifyingKey>, JwtError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwtError::InvalidJwks("a jwk set is an object with a \"keys\" array"))?;
    let mut verifying_keys = Vec::with_capacity(keys.len());
    for jwk in keys {
        if let Some(key) = verifying_key_from_jwk(jwk)? {
            verifying_keys.push(key);
        }
    }
    Ok(verifying_keys)
}

/// Parses one JWK (RFC 7517 §4); `Ok(None)` for a key we do not use (see [`verifying_keys_from_jwks`]).
pub fn verifying_key_from_jwk(jwk: &Value) -> Result<Option<VerifyingKey>, JwtError> {
    let jwk = jwk.as_object().ok_or(JwtError::InvalidJwks("a jwk is an object"))?;
    let kty = required_string(jwk, "kty")?;
    let kid = optional_string(jwk, "kid")?.map(str::to_string);
    if !is_for_signature_verification(jwk)? {
        return Ok(None);
    }
    let alg_opt = optional_string(jwk, "alg")?;
    let alg_is = |expected: Algorithm| alg_opt.is_none_or(|alg| alg == expected.as_str());
    let curve_opt = optional_string(jwk, "crv")?;
    match (kty, curve_opt) {
        ("RSA", _) if alg_is(Algorithm::RS256) => rsa_from_jwk(jwk, kid),
        ("EC", Some("P-256")) if alg_is(Algorithm::ES256) => {
            let (x, y) = (required_base64(jwk, "x")?, required_base64(jwk, "y")?);
            VerifyingKey::ec_p256(kid, &x, &y).map(Some)
        }
        ("OKP", Some("Ed25519")) if alg_is(Algorithm::EdDSA) => {
            VerifyingKey::ed25519(kid, &required_base64(jwk, "x")?).map(Some)
        }
        _ => Ok(None),
    }
}

fn rsa_from_jwk(jwk: &Map<String, Value>, kid: Option<String>) -> Result<Option<VerifyingKey>, JwtError> {
    let modulus = required_base64(jwk, "n")?;
    let exponent = required_base64(jwk, "e")?;
    let bits = bit_length(strip_leading_zeros(&modulus));
    if !(2048..=8192).contains(&bits) {
        tracing::debug!(bits, "skipping an rsa jwk outside 2048 to 8192 bits");
        return Ok(None);
    }
    VerifyingKey::rsa(kid, &modulus, &exponent).map(Some)
}

/// RFC 7517 §4.2 `use` and §4.3 `key_ops`: absent means any use.
fn is_for_signature_verification(jwk: &Map<String, Value>) -> Result<bool, JwtError> {
    if optional_string(jwk, "use")?.is_some_and(|key_use| key_use != "sig") {
        return Ok(false);
    }
    match jwk.get("key_ops") {
        None => Ok(true),
        Some(Value::Array(operations)) => Ok(operations.iter().any(|operation| operation == "verify")),
        Some(_) => Err(JwtError::InvalidJwks("key_ops must be an array")),
    }
}

fn optional_string<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<Option<&'a str>, JwtError> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(JwtError::InvalidJwks("a jwk member that must be a string is not")),
    }
}

fn required_string<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, JwtError> {
    optional_string(jwk, name)?.ok_or(JwtError::InvalidJwks("a required jwk member is missing"))
}

fn required_base64(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(required_string(jwk, name)?)
        .map_err(|_| JwtError::InvalidJwks("a jwk member is not base64url without padding"))
}

/// The three parts of a compact JWS (RFC 7515 §7.1), still encoded.
struct CompactParts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`: the JWS Signing Input (RFC 7515 §5.2 step 8), exactly as received.
    signing_input: &'a str,
}

fn split_compact(token: &str) -> Result<CompactParts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(CompactParts { header, payload, signature, signing_input })
}

fn decode_part(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed)
}

/// A JSON text that is an object: serde would also read a struct from an array, RFC 7515 §4 wants an object.
fn starts_as_object(json: &[u8]) -> bool {
    json.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{')
}

/// RFC 7515 §5.2 steps 2–4: the header is a base64url-encoded JSON object.
fn decode_header(encoded: &str) -> Result<(JwtHeader, Algorithm), JwtError> {
    let json = decode_part(encoded)?;
    if !starts_as_object(&json) {
        return Err(JwtError::Malformed);
    }
    let wire: WireHeader = serde_json::from_slice(&json).map_err(|_| JwtError::Malformed)?;
    let algorithm = Algorithm::parse(&wire.alg).ok_or_else(|| JwtError::UnsupportedAlgorithm(truncate(&wire.alg)))?;
    if wire.crit.is_some() {
        return Err(JwtError::UnsupportedCritical);
    }
    Ok((JwtHeader { alg: wire.alg, kid: wire.kid, typ: wire.typ }, algorithm))
}

/// An attacker-chosen `alg` is echoed in errors; keep it short.
fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
}

fn parse_claims(json: &[u8]) -> Result<Claims, JwtError> {
    serde_json::from_slice(json).map_err(|_| JwtError::Malformed)
}

/// Verifies a compact JWS (RFC 7515 §5.2) and returns its header and claims.
///
/// The token must have exactly three base64url parts without padding and be at most [`MAX_TOKEN_LEN`] bytes; the
/// header must be a JSON object whose `alg` is one of [`Algorithm::ALL`]. The key is chosen by `kid` when the header
/// has one (keys without a `kid` are tried too), else every key of the token's `alg` is tried; the key's algorithm
/// must be the token's. The payload must be a JSON object. `exp`, `iss`, `aud` and `typ` are the caller's to check.
pub fn verify(token: &str, keys: &[VerifyingKey]) -> Result<(JwtHeader, Claims), JwtError> {
    let parts = split_compact(token)?;
    let (header, algorithm) = decode_header(parts.header)?;
    let payload = decode_part(parts.payload)?;
    let signature = decode_part(parts.signature)?;
    let mut candidates = keys.iter().filter(|key| key.matches_kid(header.kid.as_deref())).peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::UnknownKey);
    }
    let mut candidates = candidates.filter(|key| key.alg == algorithm).peekable();
    if candidates.peek().is_none() {
        return Err(match header.kid {
            Some(_) => JwtError::AlgorithmMismatch,
            None => JwtError::UnknownKey,
        });
    }
    if !candidates.any(|key| key.verify_signature(parts.signing_input.as_bytes(), &signature)) {
        return Err(JwtError::BadSignature);
    }
    Ok((header, parse_claims(&payload)?))
}

/// Reads the header and claims without verifying anything: for error messages and hints only, never for a decision.
pub fn decode_unverified(token: &str) -> Result<(JwtHeader, Claims), JwtError> {
    let parts = split_compact(token)?;
    let json = decode_part(parts.header)?;
    if !starts_as_object(&json) {
        return Err(JwtError::Malformed);
    }
    let header: JwtHeader = serde_json::from_slice(&json).map_err(|_| JwtError::Malformed)?;
    decode_part(parts.signature)?;
    Ok((header, parse_claims(&decode_part(parts.payload)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::keys::SigningKey;
    use aws_lc_rs::hmac;
    use serde_json::json;
    use std::sync::OnceLock;

    /// One key per algorithm for the whole test module (RSA generation is slow in debug builds).
    fn key(algorithm: Algorithm) -> &'static SigningKey {
        static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
        let keys = KEYS.get_or_init(|| Algorithm::ALL.iter().map(|alg| SigningKey::generate(*alg).unwrap()).collect());
        &keys[algorithm.index()]
    }

    fn claims() -> Value {
        json!({"iss": "https://idp.example", "sub": "alice", "exp": 2_000_000_000u64})
    }

    fn encode(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
    }

    fn replace_part(token: &str, index: usize, replacement: &str) -> String {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[index] = replacement;
        parts.join(".")
    }

    #[test]
    fn algorithm_names_round_trip_through_serde_and_parse() {
        for algorithm in Algorithm::ALL {
            assert_eq!(serde_json::to_string(&algorithm).unwrap(), format!("\"{}\"", algorithm.as_str()));
            assert_eq!(Algorithm::parse(algorithm.as_str()), Some(algorithm));
            assert_eq!(Algorithm::ALL[algorithm.index()], algorithm);
        }
        for refused in ["none", "HS256", "rs256", "RS384", "PS256", "ES384", "Ed25519", ""] {
            assert_eq!(Algorithm::parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn tokens_of_every_algorithm_verify_with_their_key() {
        for algorithm in Algorithm::ALL {
            let signing_key = key(algorithm);
            let token = signing_key.sign_jwt("JWT", &claims());
            let (header, claims) = verify(&token, &[signing_key.verifying_key()]).unwrap();
            assert_eq!(
                header,
                JwtHeader {
                    alg: algorithm.as_str().into(),
                    kid: Some(signing_key.kid.clone()),
                    typ: Some("JWT".into())
                }
            );
            assert_eq!(Value::Object(claims), super::tests::claims());
            assert_eq!(decode_unverified(&token).unwrap().0, header);
        }
    }

    #[test]
    fn keys_are_chosen_by_kid_or_else_by_algorithm() {
        let keys: Vec<VerifyingKey> = Algorithm::ALL.iter().map(|alg| key(*alg).verifying_key()).collect();
        for algorithm in Algorithm::ALL {
            let token = key(algorithm).sign_jwt("at+jwt", &claims());
            assert!(verify(&token, &keys).is_ok());
            // RFC 7515 §4.1.4: without kid, every key of the token's alg is a candidate.
            let header = json!({"alg": algorithm.as_str()});
            let without_kid = replace_part(&token, 0, &encode(&header));
            assert_eq!(verify(&without_kid, &keys).unwrap_err(), JwtError::BadSignature);
            let mut anonymous = key(algorithm).verifying_key();
            anonymous.kid = None;
            let signed_without_kid = sign_raw(key(algorithm), &header, &claims());
            assert!(verify(&signed_without_kid, &[anonymous.clone()]).is_ok());
            assert!(verify(&token, &[anonymous]).is_ok(), "a key without kid matches any kid");
        }
    }

    /// Signs an arbitrary header and payload with a key of ours (for the refusal tests).
    fn sign_raw(signing_key: &SigningKey, header: &Value, payload: &Value) -> String {
        let signing_input = format!("{}.{}", encode(header), encode(payload));
        let signature = signing_key.sign_bytes(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    #[test]
    fn alg_none_and_hmac_with_the_public_key_are_refused() {
        let signing_key = key(Algorithm::RS256);
        let keys = [signing_key.verifying_key()];
        let header = json!({"alg": "none", "kid": signing_key.kid});
        let unsigned = format!("{}.{}.", encode(&header), encode(&claims()));
        assert_eq!(verify(&unsigned, &keys).unwrap_err(), JwtError::UnsupportedAlgorithm("none".into()));
        // RFC 8725 §2.1: HS256 keyed with the published key must not verify.
        let header = json!({"alg": "HS256", "kid": signing_key.kid});
        let signing_input = format!("{}.{}", encode(&header), encode(&claims()));
        let secret = serde_json::to_vec(&signing_key.public_jwk()).unwrap();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), signing_input.as_bytes());
        let forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(verify(&forged, &keys).unwrap_err(), JwtError::UnsupportedAlgorithm("HS256".into()));
    }

    #[test]
    fn wrong_kid_and_algorithm_mismatch_are_refused() {
        let rsa = key(Algorithm::RS256);
        let ec = key(Algorithm::ES256);
        let token = rsa.sign_jwt("JWT", &claims());
        assert_eq!(verify(&token, &[ec.verifying_key()]).unwrap_err(), JwtError::UnknownKey);
        // A token claiming ES256 under the RSA key's kid.
        let header = json!({"alg": "ES256", "kid": rsa.kid});
        let confused = sign_raw(ec, &header, &claims());
        let keys = [rsa.verifying_key(), ec.verifying_key()];
        assert_eq!(verify(&confused, &keys).unwrap_err(), JwtError::AlgorithmMismatch);
        // Without kid and without a key of its alg.
        let header = json!({"alg": "EdDSA"});
        let orphan = sign_raw(key(Algorithm::EdDSA), &header, &claims());
        assert_eq!(verify(&orphan, &keys).unwrap_err(), JwtError::UnknownKey);
        assert_eq!(verify(&token, &[]).unwrap_err(), JwtError::UnknownKey);
    }

    #[test]
    fn tampered_payload_and_signature_are_refused() {
        for algorithm in Algorithm::ALL {
            let signing_key = key(algorithm);
            let keys = [signing_key.verifying_key()];
            let token = signing_key.sign_jwt("JWT", &claims());
            let forged_claims = json!({"iss": "https://idp.example", "sub": "mallory", "exp": 2_000_000_000u64});
            let tampered = replace_part(&token, 1, &encode(&forged_claims));
            assert_eq!(verify(&tampered, &keys).unwrap_err(), JwtError::BadSignature);
            let signature_part = token.rsplit('.').next().unwrap();
            let mut signature = URL_SAFE_NO_PAD.decode(signature_part).unwrap();
            signature[10] ^= 0x01;
            let tampered = replace_part(&token, 2, &URL_SAFE_NO_PAD.encode(&signature));
            assert_eq!(verify(&tampered, &keys).unwrap_err(), JwtError::BadSignature);
            let truncated = replace_part(&token, 2, &URL_SAFE_NO_PAD.encode(&signature[..signature.len() - 1]));
            assert_eq!(verify(&truncated, &keys).unwrap_err(), JwtError::BadSignature);
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let signing_key = key(Algorithm::ES256);
        let keys = [signing_key.verifying_key()];
        let token = signing_key.sign_jwt("JWT", &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let malformed = [
            format!("{}.{}", parts[0], parts[1]),
            format!("{token}.{}", parts[2]),
            format!("{token}="),
            format!("{}.{}.{}", parts[0], parts[1].replace(|_: char| true, "*"), parts[2]),
            format!("{}.{}.{}", &parts[0][..parts[0].len() - 1], parts[1], parts[2]),
            format!("{}.{}.{}", encode(&json!(["ES256"])), parts[1], parts[2]),
            format!("{}.{}.{}", encode(&json!({"kid": signing_key.kid})), parts[1], parts[2]),
            String::new(),
            "..".into(),
        ];
        for token in &malformed {
            assert_eq!(verify(token, &keys).unwrap_err(), JwtError::Malformed, "{token}");
            assert!(decode_unverified(token).is_err(), "{token}");
        }
        let oversized = signing_key.sign_jwt("JWT", &json!({"padding": "x".repeat(MAX_TOKEN_LEN)}));
        assert_eq!(verify(&oversized, &keys).unwrap_err(), JwtError::TooLarge);
        assert_eq!(decode_unverified(&oversized).unwrap_err(), JwtError::TooLarge);
    }

    #[test]
    fn payloads_that_are_not_objects_are_refused() {
        let signing_key = key(Algorithm::EdDSA);
        let keys = [signing_key.verifying_key()];
        for payload in [json!([1, 2]), json!("text"), json!(null), json!(7)] {
            let token = signing_key.sign_jwt("JWT", &payload);
            assert_eq!(verify(&token, &keys).unwrap_err(), JwtError::Malformed, "{payload}");
        }
    }

    #[test]
    fn critical_headers_are_refused() {
        let signing_key = key(Algorithm::EdDSA);
        let header = json!({"alg": "EdDSA", "kid": signing_key.kid, "crit": ["exp"], "exp": 1});
        let token = sign_raw(signing_key, &header, &claims());
        assert_eq!(verify(&token, &[signing_key.verifying_key()]).unwrap_err(), JwtError::UnsupportedCritical);
    }

    #[test]
    fn jwks_parse_what_public_jwk_emits() {
        let jwks = json!({"keys": Algorithm::ALL.iter().map(|alg| key(*alg).public_jwk()).collect::<Vec<_>>()});
        let keys = verifying_keys_from_jwks(&jwks).unwrap();
        assert_eq!(keys.len(), 3);
        for algorithm in Algorithm::ALL {
            let token = key(algorithm).sign_jwt("JWT", &claims());
            let (header, _) = verify(&token, &keys).unwrap();
            assert_eq!(header.kid.as_deref(), Some(key(algorithm).kid.as_str()));
        }
    }

    #[test]
    fn jwks_skip_keys_for_other_uses_types_and_algorithms() {
        let rsa = key(Algorithm::RS256).public_jwk();
        let with = |member: &str, value: Value| {
            let mut jwk = rsa.clone();
            jwk[member] = value;
            jwk
        };
        let skipped = [
            with("use", json!("enc")),
            with("alg", json!("PS256")),
            with("key_ops", json!(["encrypt"])),
            with("kty", json!("oct")),
            json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xC1; 128]), "e": "AQAB"}),
        ];
        let jwks = json!({"keys": skipped});
        assert!(verifying_keys_from_jwks(&jwks).unwrap().is_empty());
        let kept = [with("use", json!("sig")), with("key_ops", json!(["verify"])), with("kid", json!("other"))];
        assert_eq!(verifying_keys_from_jwks(&json!({"keys": kept})).unwrap().len(), 3);
    }

    #[test]
    fn jwks_of_the_wrong_shape_are_errors() {
        let ec = key(Algorithm::ES256).public_jwk();
        let with = |member: &str, value: Value| {
            let mut jwk = ec.clone();
            jwk[member] = value;
            json!({"keys": [jwk]})
        };
        let invalid = [
            json!([]),
            json!({"keys": {}}),
            json!({"keys": ["text"]}),
            json!({"keys": [{"crv": "P-256"}]}),
            with("x", json!(12)),
            with("x", json!("not base64!")),
            with("x", json!(URL_SAFE_NO_PAD.encode([1u8; 31]))),
            with("y", json!(URL_SAFE_NO_PAD.encode([1u8; 32]))),
            with("kid", json!(3)),
            with("key_ops", json!("verify")),
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}),
        ];
        for jwks in invalid {
            assert!(matches!(verifying_keys_from_jwks(&jwks), Err(JwtError::InvalidJwks(_))), "{jwks}");
        }
    }

    #[test]
    fn rsa_modulus_with_a_leading_zero_byte_is_accepted() {
        let signing_key = key(Algorithm::RS256);
        let mut jwk = signing_key.public_jwk();
        let mut modulus = vec![0u8];
        modulus.extend(URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap());
        jwk["n"] = json!(URL_SAFE_NO_PAD.encode(modulus));
        let keys = verifying_keys_from_jwks(&json!({"keys": [jwk]})).unwrap();
        assert!(verify(&signing_key.sign_jwt("JWT", &claims()), &keys).is_ok());
    }
}
