//! The stored form of the upstream providers (federation): the replica document [`UPSTREAMS_DOCUMENT`],
//! `{"v":1,"key_fingerprint":"…","upstreams":[StoredUpstream…]}`, sorted by id.
//!
//! Unlike a client's secret, an upstream's `client_secret` is the broker's own credential: every node must present
//! it to the upstream's token endpoint, so a one-way MAC will not do. It is stored sealed (AES-256-GCM) under a key
//! derived from the directory's key (itself derived from the KEK, the same on every node), with the upstream id as
//! associated data, so a sealed secret copied onto another upstream does not open. Redis, its backups and the admin
//! API's readers never see it; only a node holding the KEK does.
//!
//! The nonce is derived (HMAC of the id and the secret under a second derived key) rather than random, so that
//! every node seals a configured secret to the same bytes and seeding stays idempotent (nothing is written when
//! nothing changed). A nonce repeats only for the same id and secret, that is for the same plaintext and associated
//! data, which reveals only that the secret did not change (the deterministic-AEAD bound, as with AES-GCM-SIV).

use super::stored::{decode, same_key, FormatError, FORMAT_VERSION};
use crate::config::UpstreamConfig;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The replica document of the upstream providers.
pub const UPSTREAMS_DOCUMENT: &str = "directory:upstreams";

const SEALING_LABEL: &[u8] = b"idp directory: upstream client-secret sealing key";
const NONCE_LABEL: &[u8] = b"idp directory: upstream client-secret nonce key";

/// An upstream as stored: its configuration without `client_secret` (always `None` here), and the secret sealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredUpstream {
    pub config: UpstreamConfig,
    /// base64url (no padding) of `nonce || ciphertext || tag`; never the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_sealed: Option<String>,
}

impl StoredUpstream {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn has_secret(&self) -> bool {
        self.client_secret_sealed.is_some()
    }
}

/// Seals and opens upstream secrets; built from the directory's 32-byte key.
pub struct UpstreamSealer {
    sealing: LessSafeKey,
    nonces: hmac::Key,
}

impl UpstreamSealer {
    pub fn new(secret_key: [u8; 32]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, &secret_key);
        let sealing_bytes = hmac::sign(&root, SEALING_LABEL);
        let nonce_bytes = hmac::sign(&root, NONCE_LABEL);
        let unbound = UnboundKey::new(&AES_256_GCM, sealing_bytes.as_ref()).expect("a 32-byte AES-256 key");
        Self { sealing: LessSafeKey::new(unbound), nonces: hmac::Key::new(hmac::HMAC_SHA256, nonce_bytes.as_ref()) }
    }

    /// The stored form of a configured upstream: the secret sealed and dropped from the configuration.
    pub fn store(&self, config: &UpstreamConfig) -> StoredUpstream {
        let mut config = config.clone();
        let sealed = config.client_secret.take().map(|secret| self.seal(&config.id, &secret));
        StoredUpstream { config, client_secret_sealed: sealed }
    }

    /// The configuration back, with its secret opened.
    pub fn open(&self, stored: &StoredUpstream) -> Result<UpstreamConfig, FormatError> {
        let mut config = stored.config.clone();
        config.client_secret = match &stored.client_secret_sealed {
            Some(sealed) => Some(self.open_secret(&config.id, sealed)?),
            None => None,
        };
        Ok(config)
    }

    fn seal(&self, id: &str, secret: &str) -> String {
        let mut input = Vec::with_capacity(id.len() + 1 + secret.len());
        input.extend_from_slice(id.as_bytes());
        input.push(0);
        input.extend_from_slice(secret.as_bytes());
        let tag = hmac::sign(&self.nonces, &input);
        let nonce: [u8; NONCE_LEN] = tag.as_ref()[..NONCE_LEN].try_into().expect("HMAC-SHA-256 is 32 bytes");
        let mut in_out = secret.as_bytes().to_vec();
        self.sealing
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut in_out)
            .expect("AES-GCM seals any input this small");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    fn open_secret(&self, id: &str, sealed: &str) -> Result<String, FormatError> {
        let corrupt = |reason: &str| FormatError::Corrupt {
            document: UPSTREAMS_DOCUMENT,
            reason: format!("upstream `{id}`: {reason}"),
        };
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| corrupt("client_secret_sealed is not base64url"))?;
        if bytes.len() < NONCE_LEN {
            return Err(corrupt("client_secret_sealed is too short"));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt("bad nonce"))?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .sealing
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut in_out)
            .map_err(|_| corrupt("client_secret_sealed does not open with this node's key"))?;
        String::from_utf8(plain.to_vec()).map_err(|_| corrupt("the client secret is not UTF-8"))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamsV1 {
    v: u64,
    key_fingerprint: String,
    upstreams: Vec<StoredUpstream>,
}

pub fn encode_upstreams(upstreams: &[StoredUpstream], fingerprint: &str) -> Vec<u8> {
    let document =
        UpstreamsV1 { v: FORMAT_VERSION, key_fingerprint: fingerprint.into(), upstreams: upstreams.to_vec() };
    serde_json::to_vec(&document).expect("a directory document serializes")
}

/// Refuses a document sealed under another KEK (its secrets would not open).
pub fn decode_upstreams(bytes: &[u8], fingerprint: &str) -> Result<Vec<StoredUpstream>, FormatError> {
    let document: UpstreamsV1 = decode(UPSTREAMS_DOCUMENT, bytes)?;
    same_key(document.key_fingerprint, fingerprint)?;
    Ok(document.upstreams)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(secret: Option<&str>) -> UpstreamConfig {
        let mut config: UpstreamConfig = serde_json::from_value(serde_json::json!({
            "id": "acme", "kind": "oidc", "issuer": "https://login.acme.example", "client_id": "broker",
        }))
        .unwrap();
        config.client_secret = secret.map(String::from);
        config
    }

    #[test]
    fn a_secret_is_sealed_deterministically_and_opens_only_with_its_key_and_id() {
        let sealer = UpstreamSealer::new([7; 32]);
        let stored = sealer.store(&acme(Some("s3cret")));
        assert_eq!(stored.config.client_secret, None);
        let sealed = stored.client_secret_sealed.clone().unwrap();
        assert!(!sealed.contains("s3cret"));
        let encoded = String::from_utf8(encode_upstreams(std::slice::from_ref(&stored), "fp")).unwrap();
        assert!(!encoded.contains("s3cret"), "{encoded}");
        assert_eq!(sealer.store(&acme(Some("s3cret"))), stored, "same input, same bytes: seeding is idempotent");
        assert_ne!(sealer.store(&acme(Some("other"))).client_secret_sealed, stored.client_secret_sealed);
        assert_eq!(sealer.open(&stored).unwrap(), acme(Some("s3cret")));

        let other_key = UpstreamSealer::new([8; 32]);
        assert!(matches!(other_key.open(&stored), Err(FormatError::Corrupt { .. })));
        let mut moved = stored.clone();
        moved.config.id = "evil".into();
        assert!(sealer.open(&moved).is_err(), "a sealed secret is bound to its upstream's id");
        let mut tampered = stored.clone();
        tampered.client_secret_sealed = Some("AAAA".into());
        assert!(sealer.open(&tampered).is_err());
        tampered.client_secret_sealed = Some("not base64!".into());
        assert!(sealer.open(&tampered).is_err());

        let without = sealer.store(&acme(None));
        assert_eq!(without.client_secret_sealed, None);
        assert_eq!(sealer.open(&without).unwrap(), acme(None));
    }

    #[test]
    fn the_document_round_trips_and_refuses_another_key() {
        let sealer = UpstreamSealer::new([7; 32]);
        let stored = vec![sealer.store(&acme(Some("s3cret")))];
        let bytes = encode_upstreams(&stored, "fp");
        assert_eq!(decode_upstreams(&bytes, "fp").unwrap(), stored);
        assert!(matches!(decode_upstreams(&bytes, "other"), Err(FormatError::WrongKey { .. })));
        assert!(decode_upstreams(b"{\"v\":1,\"key_fingerprint\":\"fp\",\"upstreams\":[],\"x\":1}", "fp").is_err());
        assert!(matches!(
            decode_upstreams(b"{\"v\":2,\"key_fingerprint\":\"fp\",\"upstreams\":[]}", "fp"),
            Err(FormatError::UnsupportedVersion { .. })
        ));
    }
}
