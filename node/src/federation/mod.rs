//! Federated login brokering: users sign in through upstream providers (`[[upstreams]]`), and the relying parties
//! get this provider's own tokens.
//!
//! The flow (see `docs/architecture.md`, "Federation"):
//! 1. The login page's button (or `idp_hint` on `/authorize`) begins an upstream login: an [`UpstreamLogin`]
//!    record (nonce, PKCE verifier, the pending authorization, the browser binding) is stored in the pending
//!    authorization's shard, and its handle is the `state` sent to the upstream.
//! 2. `{issuer}/federation/{id}/callback` takes the record (once), checks the browser binding, exchanges the code
//!    and validates the answer ([`upstream`]), maps the claims and links or provisions the account
//!    ([`account`]), then authenticates the pending authorization exactly like the password form does.
//!
//! [`UpstreamLogin`]: idp_proto::records::UpstreamLogin

pub mod account;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod upstream;

use crate::config::UpstreamConfig;
use crate::directory::store::{DirectoryStore, DirectoryStoreError};
use crate::directory::{Directory, StoredUser};
use anyhow::Context;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use upstream::Upstream;

/// The configured upstreams, and where the accounts they create are stored.
pub struct Federation {
    upstreams: Vec<Arc<Upstream>>,
    by_id: HashMap<String, Arc<Upstream>>,
    store: Arc<DirectoryStore>,
    directory: Arc<ArcSwap<Directory>>,
}

impl Federation {
    /// Loads every upstream (a `private_key_jwt` key that does not load fails here, at start).
    pub fn new(
        configs: &[UpstreamConfig],
        store: Arc<DirectoryStore>,
        directory: Arc<ArcSwap<Directory>>,
    ) -> anyhow::Result<Self> {
        let mut upstreams = Vec::new();
        if !configs.is_empty() {
            // Built only when needed: it reads the system's trusted roots (rustls-platform-verifier).
            let pool = http::UpstreamHttp::pool().context("building the HTTP client of the upstreams")?;
            for config in configs {
                let upstream =
                    Upstream::new(config.clone(), pool.clone()).with_context(|| format!("upstream `{}`", config.id))?;
                upstreams.push(Arc::new(upstream));
            }
        }
        let by_id = upstreams.iter().map(|upstream| (upstream.id().to_string(), upstream.clone())).collect();
        Ok(Self { upstreams, by_id, store, directory })
    }

    pub fn upstream(&self, id: &str) -> Option<&Arc<Upstream>> {
        self.by_id.get(id)
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Stores a provisioned or newly linked user cluster-wide, then serves the new directory on this node at once
    /// (the others pick it up at their next poll).
    pub async fn save_user(&self, user: StoredUser) -> Result<(), DirectoryStoreError> {
        self.store.put_stored_user(user).await?;
        self.refresh_directory().await
    }

    /// Makes sure this node's directory knows `user_id` when the stored one does: a user provisioned by a
    /// sign-in on another node a moment ago may not have reached this node's cache yet (it polls every 250 ms).
    /// Costs nothing for a known user; an unknown one costs one read of the version document.
    pub async fn ensure_user(&self, user_id: &str) {
        if self.directory.load().user_by_id(user_id).is_some() {
            return;
        }
        if let Err(error) = self.refresh_directory().await {
            tracing::warn!(%error, "directory refresh for an unknown user failed");
        }
    }

    /// Reads the stored directory again when it changed (a user another node provisioned a moment ago).
    pub async fn refresh_directory(&self) -> Result<(), DirectoryStoreError> {
        if let Some(fresh) = self.store.refresh().await? {
            self.directory.store(Arc::new(fresh));
        }
        Ok(())
    }
}
