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
use crate::directory::Directory;
use account::AccountDecision;
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

    /// The account of a brokered sign-in: the linked user from this node's directory when there is one, else the
    /// linking policy ([`account::decide_account`]) run inside the store's checked change against the stored
    /// users as they are now; a new link or user is stored cluster-wide, then served on this node at once (the
    /// others pick it up at their next poll).
    pub async fn account(
        &self,
        upstream: &UpstreamConfig,
        identity: &account::UpstreamIdentity,
        new_user_id: &str,
    ) -> Result<AccountDecision, DirectoryStoreError> {
        if let Some(user_id) = account::linked_user(&self.directory.load(), &upstream.id, &identity.subject) {
            return Ok(AccountDecision::Linked { user_id });
        }
        let decision = self
            .store
            .change_user(|users| {
                let decision = account::decide_account(users, upstream, identity, new_user_id);
                let entry = match &decision {
                    AccountDecision::LinkByEmail { user } | AccountDecision::Provision { user } => Some(user.clone()),
                    AccountDecision::Linked { .. } | AccountDecision::Refused => None,
                };
                (entry, decision)
            })
            .await?;
        if let Err(error) = self.refresh_directory().await {
            // Stored: the next poll serves it, and a node that does not know the user yet reads again.
            tracing::warn!(%error, "directory refresh after a brokered sign-in failed");
        }
        Ok(decision)
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

#[cfg(test)]
mod tests {
    use super::account::UpstreamIdentity;
    use super::*;
    use crate::config::{Config, UserConfig};
    use idp_actors::clock::SystemClock;
    use idp_actors::replica::MemoryReplica;

    /// Another node deletes one user and disables another while this node's cache still has both: a sign-in here
    /// that links by email or provisions must act on the stored users, never write the cached entries back.
    #[tokio::test]
    async fn a_sign_in_never_writes_a_stale_cached_user_back() {
        let config = Config::dev("127.0.0.1:8080", None);
        let replica = Arc::new(MemoryReplica::new(Arc::new(SystemClock::default())));
        let store = Arc::new(DirectoryStore::new(replica.clone(), [7; 32], config.issuer.clone()));
        let mut bob: UserConfig = config.users[0].clone();
        (bob.username, bob.id, bob.email) = ("bob".into(), Some("bob".into()), Some("bob@example.com".into()));
        let seeded = store.seed(&config).await.unwrap();
        let cache = Arc::new(ArcSwap::from_pointee(seeded));
        store.create_user(bob.clone()).await.unwrap();
        cache.store(Arc::new(store.load().await.unwrap()));
        // Elsewhere: alice deleted, bob disabled. This node's cache has not seen it.
        let other_node = DirectoryStore::new(replica, [7; 32], config.issuer.clone());
        assert!(other_node.delete_user("alice").await.unwrap());
        bob.disabled = true;
        other_node.update_user(bob).await.unwrap();
        assert!(cache.load().user_by_id("alice").is_some() && cache.load().user_by_id("bob").is_some());

        let federation = Federation::new(&[], store.clone(), cache.clone()).unwrap();
        let mut upstream: UpstreamConfig = toml::from_str(
            "id = \"acme\"\nkind = \"oidc\"\nissuer = \"https://acme.example\"\nclient_id = \"b\"\nclient_secret = \"s\"",
        )
        .unwrap();
        upstream.link_by_email = true;
        let identity = |subject: &str, email: &str| UpstreamIdentity {
            subject: subject.into(),
            username: Some(subject.into()),
            email: Some(email.into()),
            email_verified: true,
            name: None,
            given_name: None,
            family_name: None,
        };
        let decision = federation.account(&upstream, &identity("u-bob", "bob@example.com"), "acme-bob").await.unwrap();
        assert_eq!(decision, AccountDecision::Refused, "bob is disabled in the store");
        let decision = federation.account(&upstream, &identity("u-al", "alice@example.com"), "acme-al").await.unwrap();
        assert!(matches!(&decision, AccountDecision::Provision { user } if user.id == "acme-al"), "{decision:?}");
        let (_, users) = store.entries().await.unwrap();
        let ids: Vec<(&str, bool)> = users.iter().map(|user| (user.id.as_str(), user.disabled)).collect();
        assert_eq!(ids, vec![("acme-al", false), ("bob", true)], "alice stays deleted, bob disabled");
        assert!(cache.load().user_by_id("acme-al").is_some(), "the writing node serves the new user at once");
    }
}
