//! Mutual TLS for the internal RPC: every node holds a certificate from the cluster's own CA, presents it both as a
//! server and as a client, and accepts only peers with a certificate from that CA.
//!
//! Node certificates need the peer address the others dial (an IP address or DNS name of `rpc_advertise`) as a
//! subject alternative name, and must allow both server and client authentication (both extended key usages, or
//! none). TLS 1.3 only: both ends are this program. Always the aws-lc-rs provider, never the process default.

use crate::tls::{read_certificates, read_private_key};
use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// The server config (requires a client certificate chained to `ca`) and the client config (verifies the server
/// against `ca` under the name the peer was dialled by, presents `cert`) of one node.
pub fn cluster_tls(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<(Arc<ServerConfig>, Arc<ClientConfig>)> {
    let chain = read_certificates(cert).context("cluster.tls.cert")?;
    let key_der = read_private_key(key).context("cluster.tls.key")?;
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(ca).context("cluster.tls.ca")? {
        roots
            .add(certificate)
            .with_context(|| format!("cluster tls ca file {}: unusable certificate", ca.display()))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .context("cluster tls: client certificate verifier")?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("cluster tls: protocol versions")?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key_der.clone_key())
        .with_context(|| format!("cluster tls: certificate {} with key {}", cert.display(), key.display()))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("cluster tls: protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .with_context(|| format!("cluster tls: certificate {} with key {}", cert.display(), key.display()))?;
    Ok((Arc::new(server), Arc::new(client)))
}
