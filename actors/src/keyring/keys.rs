//! Private signing keys, parsed once and kept (DEPENDENCIES.md trap 10: parsing a key per signature halves the
//! RS256 rate), their public JWK (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2) and the JWT signer (RFC 7515 §5.1).

use crate::jwt::{self, Algorithm, VerifyingKey};
use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idp_proto::Secret;
use serde::Serialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::fmt;

/// Errors of key generation, parsing and sealing; none carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate a {0} key")]
    Generate(Algorithm),
    #[error("invalid {alg} private key {kid}: {reason}")]
    InvalidPrivateKey { kid: String, alg: Algorithm, reason: &'static str },
    #[error("could not encode the {alg} private key {kid}")]
    Encode { kid: String, alg: Algorithm },
    #[error("jwt claims do not serialize to json")]
    Claims,
    #[error("signing with key {0} failed")]
    Sign(String),
    #[error("the key-encryption key is not base64")]
    KekNotBase64,
    #[error("the key-encryption key must decode to 32 bytes, got {0}")]
    KekLength(usize),
    /// Wrong key-encryption key, wrong associated data, or corrupt data: AES-GCM cannot tell them apart.
    #[error("a sealed value could not be opened: wrong key-encryption key or corrupt data")]
    Unseal,
}

/// Longest signature we produce: RSA-8192 (the largest modulus `from_pkcs8` accepts).
const MAX_SIGNATURE_LEN: usize = 1024;

/// `typ` values whose encoded header is computed once per key (OIDC Core §2 ID tokens, RFC 9068 §2.1).
const CACHED_TYPES: [&str; 2] = ["JWT", "at+jwt"];

enum KeyPair {
    Rsa(rsa::KeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private signing key: `kid` and `alg` are read-only by convention (the cached headers carry them).
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    key_pair: KeyPair,
    public_jwk: Value,
    verifying_key: VerifyingKey,
    /// Base64url-encoded JOSE headers for [`CACHED_TYPES`], in that order.
    cached_headers: Vec<String>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key: RSA-2048 for RS256, P-256 for ES256, Ed25519 for EdDSA; its `kid` is its RFC 7638 thumbprint.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let key_pair = match alg {
            Algorithm::RS256 => rsa::KeyPair::generate(rsa::KeySize::Rsa2048).map(KeyPair::Rsa),
            Algorithm::ES256 => EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).map(KeyPair::Ec),
            Algorithm::EdDSA => Ed25519KeyPair::generate().map(KeyPair::Ed),
        }
        .map_err(|_| KeyError::Generate(alg))?;
        let members = public_members(&key_pair);
        let kid = thumbprint(&members).ok_or(KeyError::Generate(alg))?;
        Self::assemble(kid, alg, key_pair, members)
    }

    /// A stored key: an unencrypted PKCS#8 document (RFC 5208 / RFC 5958) of the algorithm's key type.
    pub fn from_pkcs8(kid: String, alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let key_pair = match alg {
            Algorithm::RS256 => rsa::KeyPair::from_pkcs8(der).map(KeyPair::Rsa),
            Algorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der).map(KeyPair::Ec)
            }
            Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8(der).map(KeyPair::Ed),
        };
        let key_pair = key_pair.map_err(|rejected| KeyError::InvalidPrivateKey {
            kid: kid.clone(),
            alg,
            reason: rejected.description_(),
        })?;
        let members = public_members(&key_pair);
        Self::assemble(kid, alg, key_pair, members)
    }

    fn assemble(kid: String, alg: Algorithm, key_pair: KeyPair, members: Value) -> Result<Self, KeyError> {
        let mut public_jwk = json!({"kty": members["kty"], "kid": kid, "use": "sig", "alg": alg.as_str()});
        for (name, value) in members.as_object().into_iter().flatten() {
            public_jwk[name] = value.clone();
        }
        let verifying_key = jwt::verifying_key_from_jwk(&public_jwk)
            .ok()
            .flatten()
            .ok_or_else(|| KeyError::InvalidPrivateKey { kid: kid.clone(), alg, reason: "unusable public key" })?;
        let cached_headers = CACHED_TYPES.iter().map(|typ| encode_header(alg, &kid, typ)).collect();
        Ok(Self { kid, alg, key_pair, public_jwk, verifying_key, cached_headers })
    }

    /// The private key as PKCS#8 DER, for sealed storage only (v1 for RSA and P-256, v2 with the public key for
    /// Ed25519, RFC 5958).
    pub fn to_pkcs8(&self) -> Result<Secret<Vec<u8>>, KeyError> {
        let der = match &self.key_pair {
            KeyPair::Rsa(key_pair) => AsDer::<Pkcs8V1Der>::as_der(key_pair).map(|der| der.as_ref().to_vec()),
            KeyPair::Ec(key_pair) => key_pair.to_pkcs8v1().map(|document| document.as_ref().to_vec()),
            KeyPair::Ed(key_pair) => key_pair.to_pkcs8().map(|document| document.as_ref().to_vec()),
        };
        der.map(Secret::new).map_err(|_| KeyError::Encode { kid: self.kid.clone(), alg: self.alg })
    }

    /// The public JWK: `kty`, `kid`, `use: sig`, `alg` and the public members; never a private member.
    pub fn public_jwk(&self) -> Value {
        self.public_jwk.clone()
    }

    /// The public half, parsed, for verifying our own tokens.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying_key.clone()
    }

    /// Signs a JWT (RFC 7515 §5.1, compact serialization §7.1): header `{"alg","kid","typ"}` (`typ` "JWT" for ID
    /// tokens, "at+jwt" for RFC 9068 access tokens), the claims as JSON. One allocation for the claims' JSON, one for
    /// the token.
    ///
    /// # Panics
    /// If `claims` fails to serialize (a map with non-string keys: a programming error) or the signer fails (an
    /// aws-lc-rs internal error); use [`SigningKey::try_sign_jwt`] to get these as errors.
    pub fn sign_jwt<C: Serialize + ?Sized>(&self, typ: &str, claims: &C) -> String {
        match self.try_sign_jwt(typ, claims) {
            Ok(token) => token,
            Err(error) => panic!("signing a jwt failed: {error}"),
        }
    }

    /// [`SigningKey::sign_jwt`], with failures as errors.
    pub fn try_sign_jwt<C: Serialize + ?Sized>(&self, typ: &str, claims: &C) -> Result<String, KeyError> {
        let header = self.encoded_header(typ);
        let claims_json = serde_json::to_vec(claims).map_err(|_| KeyError::Claims)?;
        let capacity = header.len() + encoded_len(claims_json.len()) + encoded_len(self.signature_len()) + 2;
        let mut token = String::with_capacity(capacity);
        token.push_str(&header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
        let mut signature = [0u8; MAX_SIGNATURE_LEN];
        let signature_len = self.sign_into(token.as_bytes(), &mut signature)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature[..signature_len], &mut token);
        Ok(token)
    }

    fn encoded_header(&self, typ: &str) -> Cow<'_, str> {
        match CACHED_TYPES.iter().position(|cached| *cached == typ) {
            Some(index) => Cow::Borrowed(&self.cached_headers[index]),
            None => Cow::Owned(encode_header(self.alg, &self.kid, typ)),
        }
    }

    /// Length of a signature: the modulus for RSA (RFC 7518 §3.3), 64 for ES256 (§3.4), 64 for Ed25519.
    fn signature_len(&self) -> usize {
        match &self.key_pair {
            KeyPair::Rsa(key_pair) => key_pair.public_modulus_len(),
            KeyPair::Ec(_) | KeyPair::Ed(_) => 64,
        }
    }

    /// Signs `message` into `out`, returning the signature's length.
    fn sign_into(&self, message: &[u8], out: &mut [u8; MAX_SIGNATURE_LEN]) -> Result<usize, KeyError> {
        let failed = || KeyError::Sign(self.kid.clone());
        let length = self.signature_len();
        let target = out.get_mut(..length).ok_or_else(failed)?;
        match &self.key_pair {
            KeyPair::Rsa(key_pair) => key_pair
                .sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), message, target)
                .map_err(|_| failed())?,
            KeyPair::Ec(key_pair) => {
                let signed = key_pair.sign(&SystemRandom::new(), message).map_err(|_| failed())?;
                copy_exact(signed.as_ref(), target).ok_or_else(failed)?;
            }
            KeyPair::Ed(key_pair) => copy_exact(key_pair.sign(message).as_ref(), target).ok_or_else(failed)?,
        }
        Ok(length)
    }

    /// The raw signature of `message` (tests forge tokens with it).
    #[cfg(test)]
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = [0u8; MAX_SIGNATURE_LEN];
        let length = self.sign_into(message, &mut signature).unwrap();
        signature[..length].to_vec()
    }
}

fn copy_exact(source: &[u8], target: &mut [u8]) -> Option<()> {
    (source.len() == target.len()).then(|| target.copy_from_slice(source))
}

fn encoded_len(bytes: usize) -> usize {
    base64::encoded_len(bytes, false).unwrap_or(0)
}

/// The JOSE header (RFC 7515 §4.1.1 `alg`, §4.1.4 `kid`, §4.1.9 `typ`), base64url-encoded.
fn encode_header(alg: Algorithm, kid: &str, typ: &str) -> String {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'static str,
        kid: &'a str,
        typ: &'a str,
    }
    let json = serde_json::to_vec(&Header { alg: alg.as_str(), kid, typ }).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The key type and public members of a key (RFC 7518 §6.3.1 RSA, §6.2.1 EC, RFC 8037 §2 OKP).
fn public_members(key_pair: &KeyPair) -> Value {
    let encode = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    match key_pair {
        KeyPair::Rsa(key_pair) => {
            let public_key = key_pair.public_key();
            // §6.3.1.1, §6.3.1.2: big-endian, the minimum number of octets.
            json!({
                "kty": "RSA",
                "n": encode(public_key.modulus().big_endian_without_leading_zero()),
                "e": encode(public_key.exponent().big_endian_without_leading_zero()),
            })
        }
        KeyPair::Ec(key_pair) => {
            // SEC 1 §2.3.3 uncompressed point: 0x04 || X || Y, each coordinate the full 32 octets (§6.2.1.2).
            let point = key_pair.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "x": encode(&point[1..33]), "y": encode(&point[33..65])})
        }
        KeyPair::Ed(key_pair) => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": encode(key_pair.public_key().as_ref())})
        }
    }
}

/// The RFC 7638 JWK thumbprint (SHA-256, base64url) of a public JWK: the required members only, in lexicographic
/// order, without whitespace (§3.2, §3.3; RFC 8037 §2 for OKP). `None` for a key type we do not know.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let canonical = match member("kty")? {
        "RSA" => json!({"e": member("e")?, "kty": "RSA", "n": member("n")?}),
        "EC" => json!({"crv": member("crv")?, "kty": "EC", "x": member("x")?, "y": member("y")?}),
        "OKP" => json!({"crv": member("crv")?, "kty": "OKP", "x": member("x")?}),
        _ => return None,
    };
    // serde_json's map is ordered by key and its compact output has no whitespace: exactly §3.3's form.
    let text = serde_json::to_string(&canonical).ok()?;
    Some(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use std::sync::OnceLock;

    fn key(alg: Algorithm) -> &'static SigningKey {
        static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
        &KEYS.get_or_init(|| Algorithm::ALL.iter().map(|alg| SigningKey::generate(*alg).unwrap()).collect())
            [alg.index()]
    }

    fn decoded(jwk: &Value, member: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(jwk[member].as_str().unwrap()).unwrap()
    }

    fn member_names(jwk: &Value) -> Vec<&str> {
        jwk.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn rsa_jwk_has_minimal_big_endian_modulus_and_exponent() {
        let jwk = key(Algorithm::RS256).public_jwk();
        assert_eq!(member_names(&jwk), ["alg", "e", "kid", "kty", "n", "use"]);
        assert_eq!((&jwk["kty"], &jwk["alg"], &jwk["use"]), (&json!("RSA"), &json!("RS256"), &json!("sig")));
        let modulus = decoded(&jwk, "n");
        assert_eq!(modulus.len(), 256, "2048 bits without a leading zero byte");
        assert_ne!(modulus[0], 0);
        assert!(modulus[0] & 0x80 != 0, "a 2048-bit modulus has its top bit set");
        assert_eq!(decoded(&jwk, "e"), [1, 0, 1], "65537");
    }

    #[test]
    fn ec_and_okp_jwks_have_full_length_coordinates() {
        let ec = key(Algorithm::ES256).public_jwk();
        assert_eq!(member_names(&ec), ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!((&ec["kty"], &ec["crv"], &ec["alg"]), (&json!("EC"), &json!("P-256"), &json!("ES256")));
        assert_eq!((decoded(&ec, "x").len(), decoded(&ec, "y").len()), (32, 32));
        let okp = key(Algorithm::EdDSA).public_jwk();
        assert_eq!(member_names(&okp), ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!((&okp["kty"], &okp["crv"], &okp["alg"]), (&json!("OKP"), &json!("Ed25519"), &json!("EdDSA")));
        assert_eq!(decoded(&okp, "x").len(), 32);
    }

    #[test]
    fn kid_is_the_rfc_7638_thumbprint() {
        for alg in Algorithm::ALL {
            let signing_key = key(alg);
            assert_eq!(signing_key.public_jwk()["kid"], json!(signing_key.kid));
            assert_eq!(thumbprint(&signing_key.public_jwk()).as_deref(), Some(signing_key.kid.as_str()));
            assert_eq!(signing_key.kid.len(), 43);
        }
    }

    #[test]
    fn thumbprint_matches_the_rfc_7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX\
                 jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8\
                 KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_x\
                 BniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = json!({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
        assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert_eq!(thumbprint(&json!({"kty": "oct", "k": "AA"})), None);
    }

    #[test]
    fn public_jwk_has_no_private_members() {
        for alg in Algorithm::ALL {
            let jwk = key(alg).public_jwk();
            for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                assert!(jwk.get(private).is_none(), "{alg}: {private}");
            }
        }
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_key() {
        for alg in Algorithm::ALL {
            let original = key(alg);
            let der = original.to_pkcs8().unwrap();
            let restored = SigningKey::from_pkcs8(original.kid.clone(), alg, der.expose()).unwrap();
            assert_eq!(restored.public_jwk(), original.public_jwk());
            let token = restored.sign_jwt("JWT", &json!({"sub": "alice"}));
            assert!(jwt::verify(&token, &[original.verifying_key()]).is_ok());
        }
    }

    #[test]
    fn pkcs8_of_another_algorithm_or_garbage_is_refused() {
        let ec_der = key(Algorithm::ES256).to_pkcs8().unwrap();
        for alg in [Algorithm::RS256, Algorithm::EdDSA] {
            let refused = SigningKey::from_pkcs8("k".into(), alg, ec_der.expose()).unwrap_err();
            assert!(matches!(refused, KeyError::InvalidPrivateKey { alg: refused_alg, .. } if refused_alg == alg));
        }
        assert!(SigningKey::from_pkcs8("k".into(), Algorithm::ES256, b"not der").is_err());
    }

    #[test]
    fn header_carries_alg_kid_and_typ() {
        for typ in ["JWT", "at+jwt", "logout+jwt"] {
            let signing_key = key(Algorithm::EdDSA);
            let token = signing_key.sign_jwt(typ, &Map::new());
            let (header, claims) = jwt::decode_unverified(&token).unwrap();
            assert_eq!((header.alg.as_str(), header.typ.as_deref()), ("EdDSA", Some(typ)));
            assert_eq!(header.kid.as_deref(), Some(signing_key.kid.as_str()));
            assert!(claims.is_empty());
            let header_json = URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
            let expected = format!(r#"{{"alg":"EdDSA","kid":"{}","typ":"{typ}"}}"#, signing_key.kid);
            assert_eq!(String::from_utf8(header_json).unwrap(), expected);
        }
    }

    #[test]
    fn signatures_have_the_algorithm_length_and_capacity_is_exact() {
        for (alg, length) in [(Algorithm::RS256, 256), (Algorithm::ES256, 64), (Algorithm::EdDSA, 64)] {
            let token = key(alg).sign_jwt("JWT", &json!({"sub": "alice", "n": 1}));
            let signature = URL_SAFE_NO_PAD.decode(token.rsplit('.').next().unwrap()).unwrap();
            assert_eq!(signature.len(), length);
        }
    }

    #[test]
    fn claims_that_do_not_serialize_are_an_error() {
        let mut claims = std::collections::BTreeMap::new();
        claims.insert(vec![1u8], 1);
        assert_eq!(key(Algorithm::ES256).try_sign_jwt("JWT", &claims).unwrap_err(), KeyError::Claims);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let signing_key = key(Algorithm::ES256);
        let debug = format!("{signing_key:?}");
        assert!(debug.contains(&signing_key.kid));
        let der = signing_key.to_pkcs8().unwrap();
        assert!(!debug.contains(&URL_SAFE_NO_PAD.encode(der.expose())));
        assert_eq!(format!("{der:?}"), "Secret([redacted])");
    }
}
