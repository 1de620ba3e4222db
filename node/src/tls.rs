//! TLS for the public listener: a rustls 0.23 `ServerConfig` from a PEM certificate chain and a PEM private key,
//! always on the aws-lc-rs provider (never the process default), TLS 1.2 and 1.3.
//!
//! ALPN is left empty: actix-web's `bind_rustls_0_23` adds `http/1.1` (and `h2` when its `http2` feature is on)
//! to whatever the config lists.

use crate::config::TlsConfig;
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the TLS certificate or key cannot be used. Messages name the file and never print key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls certificate file {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("tls key file {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("tls key file {} does not match certificate file {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("tls configuration: {0}")]
    Rustls(#[source] rustls::Error),
}

/// The server config for `tls`: reads both files, checks that the key matches the certificate.
pub fn load_server_config(tls: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let certificates = read_certificates(&tls.cert)?;
    let key = read_private_key(&tls.key)?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| single_cert_error(error, tls))
}

/// Every `CERTIFICATE` section of the file, leaf first.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Certificate { path: path.to_path_buf(), reason };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| fail(describe(&error)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| fail(describe(&error)))?;
    if certificates.is_empty() {
        return Err(fail("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certificates)
}

/// The first private key of the file: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
pub(crate) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| {
        let reason = match error {
            pem::Error::NoItemsFound => "no PEM private key found (expected PKCS#8, PKCS#1 or SEC1)".into(),
            other => describe(&other),
        };
        TlsError::Key { path: path.to_path_buf(), reason }
    })
}

/// A PEM error in words, without the bytes some variants carry (they may be key material).
fn describe(error: &pem::Error) -> String {
    match error {
        pem::Error::Io(error) => format!("cannot read: {error}"),
        pem::Error::NoItemsFound => "no PEM section found".into(),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => "not valid PEM".into(),
    }
}

fn single_cert_error(error: rustls::Error, tls: &TlsConfig) -> TlsError {
    match error {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch { cert: tls.cert.clone(), key: tls.key.clone() },
        rustls::Error::General(reason) => TlsError::Key { path: tls.key.clone(), reason },
        rustls::Error::InvalidCertificate(error) => {
            TlsError::Certificate { path: tls.cert.clone(), reason: format!("invalid certificate: {error}") }
        }
        other => TlsError::Rustls(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use base64::Engine;
    use rcgen::{CertificateParams, KeyPair};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

    /// A folder of its own per test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let path = std::env::temp_dir().join(format!("idp-tls-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }

        fn tls(&self, cert_pem: &str, key_pem: &str) -> TlsConfig {
            TlsConfig { cert: self.write("cert.pem", cert_pem), key: self.write("key.pem", key_pem) }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn self_signed(key_pair: &KeyPair) -> String {
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(key_pair).unwrap().pem()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    /// The content of the first OCTET STRING inside a DER SEQUENCE: the inner key of a PKCS#8 document.
    fn pkcs8_inner_key(pkcs8: &[u8]) -> Vec<u8> {
        fn read(der: &[u8]) -> (u8, &[u8], &[u8]) {
            let (tag, first) = (der[0], der[1] as usize);
            let (length, header) = match first {
                short if short < 0x80 => (short, 2),
                long => {
                    let count = long & 0x7f;
                    (der[2..2 + count].iter().fold(0, |length, byte| length << 8 | *byte as usize), 2 + count)
                }
            };
            (tag, &der[header..header + length], &der[header + length..])
        }
        let (_, mut members, _) = read(pkcs8);
        loop {
            let (tag, content, rest) = read(members);
            if tag == 0x04 {
                return content.to_vec();
            }
            members = rest;
        }
    }

    /// Completes a handshake in memory with a client that trusts `cert_pem`; returns the negotiated version.
    fn handshake(
        server: ServerConfig,
        cert_pem: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ProtocolVersion {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
        let mut server = ServerConnection::new(Arc::new(server)).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut bytes.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            bytes.clear();
            server.write_tls(&mut bytes).unwrap();
            client.read_tls(&mut bytes.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        client.protocol_version().unwrap()
    }

    #[test]
    fn pkcs8_key_serves_tls_1_3_and_1_2() {
        let scratch = Scratch::new("pkcs8");
        let key_pair = KeyPair::generate().unwrap();
        let cert_pem = self_signed(&key_pair);
        let config = load_server_config(&scratch.tls(&cert_pem, &key_pair.serialize_pem())).unwrap();
        assert!(config.alpn_protocols.is_empty(), "actix-web adds its own ALPN protocols");
        let version = handshake(config.clone(), &cert_pem, &[&rustls::version::TLS13]);
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
        let version = handshake(config, &cert_pem, &[&rustls::version::TLS12]);
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    }

    #[test]
    fn sec1_key_loads() {
        let scratch = Scratch::new("sec1");
        let key_pair = KeyPair::generate().unwrap();
        let signing = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &key_pair.serialize_der(),
        )
        .unwrap();
        let sec1 = signing.private_key().as_der().unwrap();
        let cert_pem = self_signed(&key_pair);
        let config = load_server_config(&scratch.tls(&cert_pem, &pem("EC PRIVATE KEY", sec1.as_ref()))).unwrap();
        handshake(config, &cert_pem, &[&rustls::version::TLS13]);
    }

    #[test]
    fn pkcs1_rsa_key_loads() {
        let scratch = Scratch::new("pkcs1");
        let key_pair = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let pkcs1 = pkcs8_inner_key(&key_pair.serialize_der());
        let cert_pem = self_signed(&key_pair);
        let config = load_server_config(&scratch.tls(&cert_pem, &pem("RSA PRIVATE KEY", &pkcs1))).unwrap();
        handshake(config, &cert_pem, &[&rustls::version::TLS13]);
    }

    #[test]
    fn missing_files_are_named() {
        let scratch = Scratch::new("missing");
        let tls = TlsConfig { cert: scratch.0.join("absent.pem"), key: scratch.0.join("key.pem") };
        let error = load_server_config(&tls).unwrap_err().to_string();
        let expected = format!("tls certificate file {}: cannot read: ", tls.cert.display());
        assert!(error.starts_with(&expected), "{error}");
    }

    #[test]
    fn a_file_without_a_key_says_so() {
        let scratch = Scratch::new("nokey");
        let cert_pem = self_signed(&KeyPair::generate().unwrap());
        let tls = scratch.tls(&cert_pem, &cert_pem);
        let error = load_server_config(&tls).unwrap_err().to_string();
        let expected =
            format!("tls key file {}: no PEM private key found (expected PKCS#8, PKCS#1 or SEC1)", tls.key.display());
        assert_eq!(error, expected);
    }

    #[test]
    fn a_file_without_a_certificate_says_so() {
        let scratch = Scratch::new("nocert");
        let key_pem = KeyPair::generate().unwrap().serialize_pem();
        let tls = scratch.tls(&key_pem, &key_pem);
        let error = load_server_config(&tls).unwrap_err().to_string();
        let expected = format!(
            "tls certificate file {}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
            tls.cert.display()
        );
        assert_eq!(error, expected);
    }

    #[test]
    fn broken_pem_is_described_without_its_bytes() {
        let scratch = Scratch::new("broken");
        let cert_pem = self_signed(&KeyPair::generate().unwrap());
        let tls = scratch.tls(&cert_pem, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0!!!\n-----END PRIVATE KEY-----\n");
        let error = load_server_config(&tls).unwrap_err().to_string();
        assert_eq!(error, format!("tls key file {}: a PEM section is not valid base64", tls.key.display()));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let scratch = Scratch::new("mismatch");
        let cert_pem = self_signed(&KeyPair::generate().unwrap());
        let other_key = KeyPair::generate().unwrap().serialize_pem();
        let tls = scratch.tls(&cert_pem, &other_key);
        let error = load_server_config(&tls).unwrap_err().to_string();
        let expected =
            format!("tls key file {} does not match certificate file {}", tls.key.display(), tls.cert.display());
        assert_eq!(error, expected);
    }
}
