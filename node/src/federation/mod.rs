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

/// The upstreams of the directory this node serves, and where the accounts they create are stored.
///
/// The upstreams are directory entries (seeded from `[[upstreams]]`, changed by the admin API): the table follows
/// the directory this node serves. Whenever that directory was swapped (a refresh, on any node within a poll) the
/// next look-up rebuilds the table, keeping the [`Upstream`] (and its discovery cache) of every upstream whose
/// configuration did not change.
pub struct Federation {
    table: ArcSwap<Table>,
    /// Serialises rebuilds; holds the shared HTTP client once one was needed.
    pool: parking_lot::Mutex<Option<reqwest::Client>>,
    store: Arc<DirectoryStore>,
    directory: Arc<ArcSwap<Directory>>,
}

/// The upstreams built for one directory.
struct Table {
    /// The directory they were built from (compared by address: a refresh swaps in a new one).
    source: Arc<Directory>,
    upstreams: Arc<Vec<Arc<Upstream>>>,
    by_id: HashMap<String, Arc<Upstream>>,
}

impl Federation {
    /// Loads every configured upstream now (a `private_key_jwt` key that does not load fails here, at start), then
    /// serves those of the directory.
    pub fn new(
        configs: &[UpstreamConfig],
        store: Arc<DirectoryStore>,
        directory: Arc<ArcSwap<Directory>>,
    ) -> anyhow::Result<Self> {
        let mut pool = None;
        let mut built = Vec::new();
        for config in configs {
            let client = pool_of(&mut pool).context("building the HTTP client of the upstreams")?;
            let upstream =
                Upstream::new(config.clone(), client).with_context(|| format!("upstream `{}`", config.id))?;
            built.push(Arc::new(upstream));
        }
        let source = directory.load_full();
        let table = build_table(source, &built, &mut pool);
        Ok(Self { table: ArcSwap::from_pointee(table), pool: parking_lot::Mutex::new(pool), store, directory })
    }

    pub fn upstream(&self, id: &str) -> Option<Arc<Upstream>> {
        self.table().by_id.get(id).cloned()
    }

    /// The upstreams, sorted by id.
    pub fn upstreams(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.table().upstreams.clone()
    }

    /// An upstream's configuration as this node would load it: `Err` with the reason when it cannot (e.g. a
    /// `private_key_jwt` key file that does not load here). The admin API checks new upstreams with it.
    pub fn check(&self, config: &UpstreamConfig) -> Result<(), String> {
        let client = pool_of(&mut self.pool.lock()).map_err(|error| format!("HTTP client: {error}"))?;
        Upstream::new(config.clone(), client).map(|_| ()).map_err(|error| error.to_string())
    }

    /// The table of the directory served now, rebuilt first when the directory changed since.
    fn table(&self) -> Arc<Table> {
        let current = self.table.load_full();
        let served = self.directory.load();
        if Arc::ptr_eq(&current.source, &served) {
            return current;
        }
        let mut pool = self.pool.lock();
        let current = self.table.load_full();
        let served = self.directory.load_full();
        if Arc::ptr_eq(&current.source, &served) {
            return current;
        }
        let table = Arc::new(build_table(served, &current.upstreams, &mut pool));
        self.table.store(table.clone());
        table
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

fn pool_of(pool: &mut Option<reqwest::Client>) -> Result<reqwest::Client, reqwest::Error> {
    if let Some(client) = pool {
        return Ok(client.clone());
    }
    // Built only when needed: it reads the system's trusted roots (rustls-platform-verifier).
    let client = http::UpstreamHttp::pool()?;
    *pool = Some(client.clone());
    Ok(client)
}

/// The upstreams of `source`: those of `previous` whose configuration is unchanged are kept as they are (with their
/// discovery caches), the others built anew. One that cannot be built on this node (its key file does not load)
/// is left out with a warning: the others keep working.
fn build_table(source: Arc<Directory>, previous: &[Arc<Upstream>], pool: &mut Option<reqwest::Client>) -> Table {
    let mut upstreams = Vec::new();
    for config in source.upstreams() {
        if let Some(kept) = previous.iter().find(|upstream| upstream.config == *config) {
            upstreams.push(kept.clone());
            continue;
        }
        let built = pool_of(pool)
            .map_err(|error| format!("HTTP client: {error}"))
            .and_then(|client| Upstream::new(config.clone(), client).map_err(|error| error.to_string()));
        match built {
            Ok(upstream) => upstreams.push(Arc::new(upstream)),
            Err(error) => tracing::warn!(upstream = %config.id, %error, "an upstream cannot be loaded on this node"),
        }
    }
    let by_id = upstreams.iter().map(|upstream| (upstream.id().to_string(), upstream.clone())).collect();
    Table { source, upstreams: Arc::new(upstreams), by_id }
}

#[cfg(test)]
mod tests {
    use super::account::UpstreamIdentity;
    use super::*;
    use crate::config::{Config, UserConfig};
    use idp_actors::clock::SystemClock;
    use idp_actors::replica::MemoryReplica;

    fn upstream(id: &str, secret: &str) -> UpstreamConfig {
        serde_json::from_value(serde_json::json!({
            "id": id, "kind": "oidc", "issuer": "https://login.example", "client_id": "broker",
            "client_secret": secret,
        }))
        .unwrap()
    }

    fn directory_with(upstreams: Vec<UpstreamConfig>) -> Arc<Directory> {
        let directory = Directory::from_entries(&[], &[], [1; 32], "https://idp.example").unwrap();
        Arc::new(directory.with_upstreams(upstreams))
    }

    #[tokio::test]
    async fn the_table_follows_the_served_directory_and_keeps_unchanged_upstreams() {
        let replica = Arc::new(MemoryReplica::new(Arc::new(SystemClock::default())));
        let store = Arc::new(DirectoryStore::new(replica, [1; 32], "https://idp.example".into()));
        let configured = vec![upstream("a", "one"), upstream("b", "one")];
        let served = Arc::new(ArcSwap::new(directory_with(configured.clone())));
        let federation = Federation::new(&configured, store, served.clone()).unwrap();
        let (a, b) = (federation.upstream("a").unwrap(), federation.upstream("b").unwrap());
        assert!(federation.upstream("c").is_none());
        assert!(Arc::ptr_eq(&a, &federation.upstream("a").unwrap()), "no rebuild while the directory stays");

        // A refresh: `a` unchanged, `b`'s secret changed, `c` new.
        served.store(directory_with(vec![upstream("a", "one"), upstream("b", "two"), upstream("c", "one")]));
        let ids: Vec<String> = federation.upstreams().iter().map(|upstream| upstream.id().to_string()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(Arc::ptr_eq(&a, &federation.upstream("a").unwrap()), "an unchanged upstream keeps its caches");
        let new_b = federation.upstream("b").unwrap();
        assert!(!Arc::ptr_eq(&b, &new_b));
        assert_eq!(new_b.config.client_secret.as_deref(), Some("two"));

        // One that cannot load here (its key file) is left out; the others stay.
        let mut broken = upstream("d", "x");
        (broken.token_endpoint_auth_method, broken.client_secret) = ("private_key_jwt".into(), None);
        broken.private_key_file = Some("/nonexistent/idp-test-key.pem".into());
        assert!(federation.check(&broken).is_err());
        served.store(directory_with(vec![upstream("a", "one"), broken]));
        let ids: Vec<String> = federation.upstreams().iter().map(|upstream| upstream.id().to_string()).collect();
        assert_eq!(ids, ["a"]);
        assert!(federation.upstream("b").is_none(), "a deleted upstream is gone");
    }

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
