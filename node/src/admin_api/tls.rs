//! HTTPS on the admin listener (`admin.tls`), and mutual TLS: with `admin.tls.client_ca`, a client certificate
//! chained to that CA authenticates the caller. The certificate is optional at the handshake (a caller may use a
//! Bearer token instead); a connection that presented a verified one carries its [`PeerCertificate`].

use crate::config::AdminTlsConfig;
use crate::tls::{read_certificates, read_private_key};
use actix_web::dev::Extensions;
use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::any::Any;
use std::sync::Arc;

/// The verified client certificate of a connection, named by the SHA-256 of its DER (hex).
#[derive(Clone, Debug)]
pub struct PeerCertificate {
    pub fingerprint: String,
}

/// The admin listener's server config: its certificate, and the client certificate verifier when `client_ca` is
/// set (certificates optional, verified when presented).
pub fn admin_server_config(tls: &AdminTlsConfig) -> anyhow::Result<ServerConfig> {
    let chain = read_certificates(&tls.cert).context("admin.tls.cert")?;
    let key = read_private_key(&tls.key).context("admin.tls.key")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("admin tls: protocol versions")?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(ca).context("admin.tls.client_ca")? {
                roots
                    .add(certificate)
                    .with_context(|| format!("admin.tls.client_ca {}: unusable certificate", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("admin tls: client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).context("admin tls: certificate and key")
}

/// The `on_connect` hook of the admin listener: records a verified client certificate on the connection.
pub fn record_peer_certificate(connection: &dyn Any, extensions: &mut Extensions) {
    type TlsStream = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(stream) = connection.downcast_ref::<TlsStream>() else {
        return;
    };
    if let Some(leaf) = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()) {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
        let fingerprint = digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
        extensions.insert(PeerCertificate { fingerprint });
    }
}
