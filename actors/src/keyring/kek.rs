//! The key-encryption key (KEK): 32 bytes the operator provides (file or environment), never stored by us.
//!
//! Private signing keys are sealed with AES-256-GCM (NIST SP 800-38D) under a key derived from the KEK, with a random
//! 96-bit nonce prepended: `nonce (12) || ciphertext || tag (16)`. Other cluster-wide secrets (CSRF and cookie keys)
//! are derived from the KEK by label. Every use goes through HKDF-SHA256 (RFC 5869) with its own `info`, so no two
//! purposes ever share a key.

use super::keys::KeyError;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use aws_lc_rs::hkdf;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use idp_proto::Secret;
use std::fmt;

/// Base64 with or without padding: operators paste keys from `openssl rand -base64 32` as well as from url-safe tools.
const ANY_PADDING: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ANY_PADDING);
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ANY_PADDING);

/// HKDF salt: fixed, names the scheme (RFC 5869 §3.1 allows a non-secret constant).
const HKDF_SALT: &[u8] = b"idp key-encryption key v1";
const SEAL_INFO: &[u8] = b"idp seal: aes-256-gcm";
const DERIVE_INFO_PREFIX: &[u8] = b"idp derive: ";
const FINGERPRINT_INFO: &[u8] = b"idp fingerprint";
const TAG_LEN: usize = 16;

/// The key-encryption key. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Kek {
    bytes: Secret<[u8; Kek::LEN]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Kek([redacted])")
    }
}

impl Kek {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; Kek::LEN]) -> Self {
        Self { bytes: Secret::new(bytes) }
    }

    /// Reads a KEK as the operator writes it: surrounding whitespace trimmed, standard or url-safe base64, padded or
    /// not, exactly 32 bytes once decoded. Errors never repeat the text.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let decoded = STANDARD_ANY_PADDING
            .decode(text)
            .or_else(|_| URL_SAFE_ANY_PADDING.decode(text))
            .map_err(|_| KeyError::KekNotBase64)?;
        let bytes: [u8; Kek::LEN] = decoded.as_slice().try_into().map_err(|_| KeyError::KekLength(decoded.len()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// A fresh random KEK (`idp dev`, tests, and `idp` printing one for an operator to keep).
    ///
    /// # Panics
    /// If the system random generator fails.
    pub fn random() -> Self {
        let mut bytes = [0u8; Kek::LEN];
        fill_random(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// The KEK as url-safe base64 without padding, for an operator to store.
    pub fn to_base64(&self) -> Secret<String> {
        Secret::new(URL_SAFE_NO_PAD.encode(self.bytes.expose()))
    }

    /// A short public identifier of the KEK (a one-way derivation): tells which KEK sealed a document, and lets
    /// operators compare the KEKs of two nodes without showing them.
    pub fn fingerprint(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.expand(&[FINGERPRINT_INFO])[..12])
    }

    /// A 32-byte secret for `label` (e.g. "csrf", "cookie"), the same on every node with the same KEK.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        self.expand(&[DERIVE_INFO_PREFIX, label.as_bytes()])
    }

    /// Encrypts and authenticates `plaintext`, binding `aad` (e.g. the key id) to it: `nonce || ciphertext || tag`.
    ///
    /// # Panics
    /// If the system random generator fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        let mut in_out = plaintext.to_vec();
        self.sealing_key()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
            .expect("aes-gcm seals any input shorter than 64 GiB");
        sealed.extend_from_slice(&in_out);
        sealed
    }

    /// Decrypts what [`Kek::seal`] produced with the same KEK and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::Unseal);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Unseal)?;
        let mut in_out = ciphertext.to_vec();
        let plaintext_len =
            self.sealing_key().open_in_place(nonce, Aad::from(aad), &mut in_out).map_err(|_| KeyError::Unseal)?.len();
        in_out.truncate(plaintext_len);
        Ok(in_out)
    }

    fn sealing_key(&self) -> LessSafeKey {
        let key = self.expand(&[SEAL_INFO]);
        LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &key).expect("a 32-byte key suits aes-256-gcm"))
    }

    /// HKDF-SHA256 (RFC 5869 §2.2 extract, §2.3 expand) of the KEK to 32 bytes.
    fn expand(&self, info: &[&[u8]]) -> [u8; 32] {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(self.bytes.expose());
        let mut output = [0u8; 32];
        prk.expand(info, hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut output))
            .expect("hkdf-sha256 expands to 32 bytes");
        output
    }
}

fn fill_random(destination: &mut [u8]) {
    aws_lc_rs::rand::fill(destination).expect("the system random generator works");
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    #[test]
    fn seal_and_open_round_trip() {
        let kek = Kek::random();
        let sealed = kek.seal(b"private key", b"kid-1");
        assert_eq!(sealed.len(), NONCE_LEN + b"private key".len() + TAG_LEN);
        assert_eq!(kek.open(&sealed, b"kid-1").unwrap(), b"private key");
        assert_ne!(kek.seal(b"private key", b"kid-1"), sealed, "a fresh nonce every time");
        assert_eq!(kek.open(&kek.seal(b"", b""), b"").unwrap(), b"");
    }

    #[test]
    fn wrong_kek_wrong_aad_and_tampering_fail_to_open() {
        let kek = Kek::random();
        let sealed = kek.seal(b"private key", b"kid-1");
        assert_eq!(Kek::random().open(&sealed, b"kid-1").unwrap_err(), KeyError::Unseal);
        assert_eq!(kek.open(&sealed, b"kid-2").unwrap_err(), KeyError::Unseal);
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert_eq!(kek.open(&tampered, b"kid-1").unwrap_err(), KeyError::Unseal);
        assert_eq!(kek.open(&sealed[..NONCE_LEN + TAG_LEN - 1], b"kid-1").unwrap_err(), KeyError::Unseal);
    }

    #[test]
    fn from_base64_accepts_every_usual_spelling_and_trims_whitespace() {
        let bytes: [u8; 32] = std::array::from_fn(|index| (index as u8).wrapping_mul(37).wrapping_add(0xF0));
        let reference = Kek::from_bytes(bytes);
        for text in [
            STANDARD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            STANDARD.encode(bytes).trim_end_matches('=').to_string(),
            format!("  {}\n", STANDARD.encode(bytes)),
            format!("\t{}\r\n", URL_SAFE_NO_PAD.encode(bytes)),
        ] {
            let kek = Kek::from_base64(&text).unwrap();
            assert_eq!(kek.fingerprint(), reference.fingerprint(), "{text:?}");
        }
        assert_eq!(Kek::from_base64(reference.to_base64().expose()).unwrap().derive("x"), reference.derive("x"));
    }

    #[test]
    fn from_base64_refuses_other_lengths_and_non_base64() {
        assert_eq!(Kek::from_base64(&STANDARD.encode([7u8; 31])).unwrap_err(), KeyError::KekLength(31));
        assert_eq!(Kek::from_base64(&STANDARD.encode([7u8; 33])).unwrap_err(), KeyError::KekLength(33));
        assert_eq!(Kek::from_base64(&STANDARD.encode([7u8; 16])).unwrap_err(), KeyError::KekLength(16));
        assert_eq!(Kek::from_base64("   ").unwrap_err(), KeyError::KekLength(0));
        assert_eq!(Kek::from_base64("not base64 at all!").unwrap_err(), KeyError::KekNotBase64);
        let error = Kek::from_base64("c2VjcmV0LXNlY3JldA").unwrap_err().to_string();
        assert!(!error.contains("c2VjcmV0"), "errors never repeat the text: {error}");
    }

    #[test]
    fn derivations_are_stable_distinct_and_independent_of_the_sealing_key() {
        let kek = Kek::from_bytes([1; 32]);
        assert_eq!(kek.derive("csrf"), Kek::from_bytes([1; 32]).derive("csrf"));
        assert_ne!(kek.derive("csrf"), kek.derive("cookie"));
        assert_ne!(kek.derive("csrf"), Kek::from_bytes([2; 32]).derive("csrf"));
        assert_ne!(kek.derive("csrf"), [1; 32]);
        assert_ne!(kek.fingerprint(), Kek::from_bytes([2; 32]).fingerprint());
        assert_eq!(kek.fingerprint().len(), 16);
    }

    #[test]
    fn debug_is_redacted() {
        let kek = Kek::from_bytes([0xAB; 32]);
        assert_eq!(format!("{kek:?}"), "Kek([redacted])");
    }
}
