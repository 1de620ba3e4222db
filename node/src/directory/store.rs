//! The directory shared by a cluster: stored in the replica's cluster-wide documents (Redis keys `idp:doc:<name>`,
//! see [`stored`](super::stored) for the format), seeded from the config file by every node at start, changed by the
//! admin API, and cached on every node as an immutable [`Directory`] swapped in when the stored one changes.
//!
//! Seeding is idempotent: the config's entries win for the ids they declare, the others (made by the admin API) are
//! kept, and nothing is written unless the result differs from what is stored. Three nodes started with the same
//! file therefore agree and do not fight: the first writes, the others find nothing to change. An entry removed from
//! the file stays stored (nobody can tell it from one the admin API made): delete it with [`DirectoryStore::delete_client`],
//! [`DirectoryStore::delete_user`] or [`DirectoryStore::delete_upstream`]. The upstream providers are entries too
//! (their secrets sealed, see [`upstreams`](super::upstreams)). An admin change to an entry the file declares lasts until a node restarts.
//!
//! # Propagation: polling a version document
//! Every change rewrites [`VERSION_DOCUMENT`] after the entries, and every node reads it every `every` (250 ms in
//! production): one small GET per node per poll, and the whole directory is read only when the version moved. This
//! was chosen over Redis pub/sub because:
//! - there is no subscription connection to re-establish after a Sentinel failover or a dropped connection, and no
//!   window in which a message published while a node was (re)subscribing is lost for good: the next poll that
//!   reaches Redis sees the change, whatever happened before;
//! - staleness is bounded by construction: a node serves a directory at most one poll interval plus one read older
//!   than the store, as long as it reaches Redis.
//!
//! Each version value is unique (a counter and a random nonce), and a reader reads the version before the entries
//! while a writer writes it after them: whatever a reader missed was written before a version value it has not seen
//! yet, so it reads again at its next poll. Even two writers racing on the counter write different values.
//!
//! # Concurrent writers
//! The replica offers no compare-and-set on documents, so a change is a read-modify-write of one document: changes
//! on one node are serialised, but two admin calls changing the same document at the same moment on two nodes may
//! lose one of them (last writer wins). Seeds do not lose anything in practice: every node writes the same entries.

use super::stored::{
    decode_clients, decode_users, decode_version, encode_clients, encode_users, encode_version, key_fingerprint,
    FormatError, VersionV1, CLIENTS_DOCUMENT, USERS_DOCUMENT, VERSION_DOCUMENT,
};
use super::upstreams::{decode_upstreams, encode_upstreams, StoredUpstream, UpstreamSealer, UPSTREAMS_DOCUMENT};
use super::{secret_mac_key, Directory, DirectoryError, StoredClient, StoredUser};
use crate::config::{ClientConfig, Config, ConfigError, KeysConfig, UpstreamConfig, UserConfig};
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idp_actors::replica::{ReplicaError, SharedReplica};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How often nodes poll the version document in production.
pub const DEFAULT_REFRESH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum DirectoryStoreError {
    #[error("directory replica: {0}")]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("stored document `{0}` is missing although the directory was stored before")]
    Missing(&'static str),
    /// An entry the admin API was given breaks a rule of the config file; nothing was written.
    #[error("{entry}: {reason}")]
    Invalid { entry: String, reason: String },
    /// The entries would not make a sound directory (e.g. two users with one username); nothing was written.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A create named an id that is taken; nothing was written.
    #[error("{0} already exists")]
    Exists(String),
    /// An update or delete named an id that is not stored; nothing was written.
    #[error("{0} does not exist")]
    NotFound(String),
}

/// The stored entries, by client id and by subject id (sorted, so that equal entries encode to equal bytes).
#[derive(Clone, Debug, Default, PartialEq)]
struct Entries {
    clients: BTreeMap<String, StoredClient>,
    users: BTreeMap<String, StoredUser>,
    /// The upstream providers by id (absent document: none, as in stores written before they were stored).
    upstreams: BTreeMap<String, StoredUpstream>,
}

/// What was read from the replica: the version document (bytes and value) and the entries.
struct Snapshot {
    version: Option<(Vec<u8>, VersionV1)>,
    entries: Entries,
}

/// The directory in the replica, for one node. Share it in an `Arc`; see the module documentation.
pub struct DirectoryStore {
    replica: SharedReplica,
    secret_key: [u8; 32],
    mac_key: hmac::Key,
    sealer: UpstreamSealer,
    fingerprint: String,
    issuer: String,
    /// `keys.algorithms` of the config, for the validation of new clients; set by [`DirectoryStore::seed`].
    algorithms: Mutex<Vec<String>>,
    /// Serialises this node's read-modify-write cycles.
    writing: tokio::sync::Mutex<()>,
    /// The version document of the directory this node serves last (refresh compares bytes).
    seen_version: Mutex<Option<Vec<u8>>>,
}

impl DirectoryStore {
    /// `secret_key` keys the client-secret MACs (the KEK's `client-secrets` key: the same on every node); `issuer`
    /// is the default audience of clients that name none.
    pub fn new(replica: SharedReplica, secret_key: [u8; 32], issuer: String) -> Self {
        let mac_key = secret_mac_key(secret_key);
        Self {
            replica,
            secret_key,
            fingerprint: key_fingerprint(&mac_key),
            sealer: UpstreamSealer::new(secret_key),
            mac_key,
            issuer: issuer.trim_end_matches('/').to_string(),
            algorithms: Mutex::new(KeysConfig::default().algorithms),
            writing: tokio::sync::Mutex::new(()),
            seen_version: Mutex::new(None),
        }
    }

    /// Merges the config's clients and users into the stored directory (the config wins for the ids it declares;
    /// other stored entries are kept), writes only if that changed anything, and returns the resulting directory.
    /// A stored user whose username is that of a declared user with another id is removed (the config wins).
    /// Stored documents that cannot be read fail the seed: overwriting them would lose the admin API's entries.
    pub async fn seed(&self, config: &Config) -> Result<Directory, DirectoryStoreError> {
        *self.algorithms.lock() = config.keys.algorithms.clone();
        let _writing = self.writing.lock().await;
        let snapshot = self.read(false).await?;
        let declared_clients = config.clients.iter().map(|client| StoredClient::from_config(client, &self.mac_key));
        let declared_users = config.users.iter().map(StoredUser::from_config).collect();
        let mut merged = merge_declared(&snapshot.entries, declared_clients.collect(), declared_users);
        for upstream in &config.upstreams {
            merged.upstreams.insert(upstream.id.clone(), self.sealer.store(upstream));
        }
        let directory = self.build(&merged)?;
        let version = if merged == snapshot.entries {
            snapshot.version.map(|(bytes, _)| bytes)
        } else {
            tracing::info!(clients = merged.clients.len(), users = merged.users.len(), "directory seeded from config");
            Some(self.write(&snapshot, &merged).await?)
        };
        *self.seen_version.lock() = version;
        Ok(directory)
    }

    /// Adds or replaces a client (by id). Checked with the config file's rules first; `Ok(false)` when the stored
    /// client was already this one (nothing written).
    pub async fn put_client(&self, client: ClientConfig) -> Result<bool, DirectoryStoreError> {
        self.validate(Some(&client), None)?;
        let entry = StoredClient::from_config(&client, &self.mac_key);
        self.change(|entries| {
            entries.clients.insert(entry.client_id.clone(), entry);
        })
        .await
    }

    /// Adds or replaces a user (by subject id: `id`, else the username). Checked with the config file's rules and
    /// against the other users' usernames and ids; `Ok(false)` when nothing changed.
    pub async fn put_user(&self, user: UserConfig) -> Result<bool, DirectoryStoreError> {
        self.validate(None, Some(&user))?;
        let entry = StoredUser::from_config(&user);
        self.change(|entries| {
            entries.users.insert(entry.id.clone(), entry);
        })
        .await
    }

    /// Adds a client whose id is not taken (else [`DirectoryStoreError::Exists`]), checked like
    /// [`DirectoryStore::put_client`].
    pub async fn create_client(&self, client: ClientConfig) -> Result<StoredClient, DirectoryStoreError> {
        self.create_registered_client(client, None).await
    }

    /// [`DirectoryStore::create_client`] for a client registered at `/register`, with the hash of its registration
    /// access token.
    pub async fn create_registered_client(
        &self,
        client: ClientConfig,
        registration_access_token_hash: Option<String>,
    ) -> Result<StoredClient, DirectoryStoreError> {
        self.validate(Some(&client), None)?;
        let mut entry = StoredClient::from_config(&client, &self.mac_key);
        entry.registration_access_token_hash = registration_access_token_hash;
        let stored = entry.clone();
        self.change_checked(|entries| {
            if entries.clients.contains_key(&entry.client_id) {
                return Err(DirectoryStoreError::Exists(format!("client `{}`", entry.client_id)));
            }
            entries.clients.insert(entry.client_id.clone(), entry);
            Ok(())
        })
        .await?;
        Ok(stored)
    }

    /// Replaces a stored client (else [`DirectoryStoreError::NotFound`]). With `keep_secret` the stored secret MAC
    /// is kept (the `client_secret` given is a placeholder that only lets the rules check the entry).
    /// `registration_hash_opt` replaces the hash of a registered client's registration access token (RFC 7592);
    /// `None` keeps the stored one.
    pub async fn update_client(
        &self,
        client: ClientConfig,
        keep_secret: bool,
        registration_hash_opt: Option<String>,
    ) -> Result<StoredClient, DirectoryStoreError> {
        self.validate(Some(&client), None)?;
        let mut entry = StoredClient::from_config(&client, &self.mac_key);
        let mut stored = None;
        self.change_checked(|entries| {
            let Some(previous) = entries.clients.get(&entry.client_id) else {
                return Err(DirectoryStoreError::NotFound(format!("client `{}`", entry.client_id)));
            };
            if keep_secret {
                entry.client_secret_hmac = previous.client_secret_hmac.clone();
            }
            entry.registration_access_token_hash =
                registration_hash_opt.or_else(|| previous.registration_access_token_hash.clone());
            stored = Some(entry.clone());
            entries.clients.insert(entry.client_id.clone(), entry);
            Ok(())
        })
        .await?;
        stored.ok_or(DirectoryStoreError::Missing(CLIENTS_DOCUMENT))
    }

    /// Adds a user whose subject id is not taken (else [`DirectoryStoreError::Exists`]); a username taken by
    /// another user fails as [`DirectoryStoreError::Directory`].
    pub async fn create_user(&self, user: UserConfig) -> Result<StoredUser, DirectoryStoreError> {
        self.validate(None, Some(&user))?;
        let entry = StoredUser::from_config(&user);
        let stored = entry.clone();
        self.change_checked(|entries| {
            if entries.users.contains_key(&entry.id) {
                return Err(DirectoryStoreError::Exists(format!("user `{}`", entry.id)));
            }
            entries.users.insert(entry.id.clone(), entry);
            Ok(())
        })
        .await?;
        Ok(stored)
    }

    /// Replaces a stored user by subject id (else [`DirectoryStoreError::NotFound`]).
    pub async fn update_user(&self, user: UserConfig) -> Result<StoredUser, DirectoryStoreError> {
        self.validate(None, Some(&user))?;
        let mut entry = StoredUser::from_config(&user);
        let mut stored = None;
        self.change_checked(|entries| {
            let Some(previous) = entries.users.get(&entry.id) else {
                return Err(DirectoryStoreError::NotFound(format!("user `{}`", entry.id)));
            };
            // The config's shape has no upstream links: an admin change keeps the user's.
            entry.links = previous.links.clone();
            stored = Some(entry.clone());
            entries.users.insert(entry.id.clone(), entry);
            Ok(())
        })
        .await?;
        stored.ok_or(DirectoryStoreError::Missing(USERS_DOCUMENT))
    }

    /// The stored clients and users, sorted by id, whatever this node serves (the admin API reads its writes).
    pub async fn entries(&self) -> Result<(Vec<StoredClient>, Vec<StoredUser>), DirectoryStoreError> {
        let entries = self.read(false).await?.entries;
        Ok((entries.clients.into_values().collect(), entries.users.into_values().collect()))
    }

    /// The stored upstream providers, sorted by id, as they are stored (secrets sealed), whatever this node serves.
    pub async fn upstreams(&self) -> Result<Vec<StoredUpstream>, DirectoryStoreError> {
        Ok(self.read(false).await?.entries.upstreams.into_values().collect())
    }

    /// One stored upstream with its secret opened (an update that keeps the secret needs it).
    pub async fn upstream_config(&self, id: &str) -> Result<UpstreamConfig, DirectoryStoreError> {
        let entries = self.read(false).await?.entries;
        let stored =
            entries.upstreams.get(id).ok_or_else(|| DirectoryStoreError::NotFound(format!("upstream `{id}`")))?;
        Ok(self.sealer.open(stored)?)
    }

    /// Adds an upstream whose id is not taken (else [`DirectoryStoreError::Exists`]), checked with the config
    /// file's rules first.
    pub async fn create_upstream(&self, upstream: UpstreamConfig) -> Result<StoredUpstream, DirectoryStoreError> {
        self.validate_upstream(&upstream)?;
        let entry = self.sealer.store(&upstream);
        let stored = entry.clone();
        self.change_checked(|entries| {
            if entries.upstreams.contains_key(entry.id()) {
                return Err(DirectoryStoreError::Exists(format!("upstream `{}`", entry.id())));
            }
            entries.upstreams.insert(entry.id().to_string(), entry);
            Ok(())
        })
        .await?;
        Ok(stored)
    }

    /// Replaces a stored upstream (else [`DirectoryStoreError::NotFound`]), checked with the config file's rules.
    pub async fn update_upstream(&self, upstream: UpstreamConfig) -> Result<StoredUpstream, DirectoryStoreError> {
        self.validate_upstream(&upstream)?;
        let entry = self.sealer.store(&upstream);
        let stored = entry.clone();
        self.change_checked(|entries| {
            if !entries.upstreams.contains_key(entry.id()) {
                return Err(DirectoryStoreError::NotFound(format!("upstream `{}`", entry.id())));
            }
            entries.upstreams.insert(entry.id().to_string(), entry);
            Ok(())
        })
        .await?;
        Ok(stored)
    }

    /// Removes an upstream; `Ok(false)` when there was none with this id. The links users have to it are kept
    /// (an upstream created again with the same id finds its users again).
    pub async fn delete_upstream(&self, id: &str) -> Result<bool, DirectoryStoreError> {
        self.change(|entries| {
            entries.upstreams.remove(id);
        })
        .await
    }

    /// The replica the directory is stored in.
    pub fn replica(&self) -> &SharedReplica {
        &self.replica
    }

    /// A read-modify-write of one user against the stored users as they are now (federation: linking or
    /// provisioning at a sign-in). `decide` sees the fresh entries and returns the entry to add or replace, if any,
    /// and its answer; nothing of this node's cached directory is written back, so a user disabled, deleted or
    /// changed on another node stays so. The directory's own checks (unique username, id and links) still apply.
    pub async fn change_user<T>(
        &self,
        decide: impl FnOnce(&BTreeMap<String, StoredUser>) -> (Option<StoredUser>, T),
    ) -> Result<T, DirectoryStoreError> {
        let mut answer = None;
        self.change_checked(|entries| {
            let (entry, decided) = decide(&entries.users);
            if let Some(entry) = entry {
                entries.users.insert(entry.id.clone(), entry);
            }
            answer = Some(decided);
            Ok(())
        })
        .await?;
        answer.ok_or(DirectoryStoreError::Missing(USERS_DOCUMENT))
    }

    /// Removes a client; `Ok(false)` when there was none with this id.
    pub async fn delete_client(&self, client_id: &str) -> Result<bool, DirectoryStoreError> {
        self.change(|entries| {
            entries.clients.remove(client_id);
        })
        .await
    }

    /// Removes a user by subject id; `Ok(false)` when there was none.
    pub async fn delete_user(&self, user_id: &str) -> Result<bool, DirectoryStoreError> {
        self.change(|entries| {
            entries.users.remove(user_id);
        })
        .await
    }

    /// Reads the stored directory, whatever this node serves.
    pub async fn load(&self) -> Result<Directory, DirectoryStoreError> {
        self.build(&self.read(false).await?.entries)
    }

    /// One poll: `Some` with a freshly built directory when the version document changed since the directory this
    /// node serves was read, `None` otherwise. On error the caller keeps its directory; the next poll tries again.
    pub async fn refresh(&self) -> Result<Option<Directory>, DirectoryStoreError> {
        let version = self.replica.read_document(VERSION_DOCUMENT).await?;
        let seen = self.seen_version.lock().clone();
        let version = match (version, seen) {
            (Some(version), Some(seen)) if version == seen => return Ok(None),
            (Some(version), _) => version,
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err(DirectoryStoreError::Missing(VERSION_DOCUMENT)),
        };
        decode_version(&version)?;
        let entries = self.read_entries(true).await?;
        let directory = self.build(&entries)?;
        *self.seen_version.lock() = Some(version);
        Ok(Some(directory))
    }

    /// Polls every `every` ([`DEFAULT_REFRESH_EVERY`] in production) and hands each new directory to `publish`
    /// (e.g. `move |directory| state.directory.store(Arc::new(directory))`). A document that cannot be read or
    /// built keeps the current directory and logs a warning (once per distinct error); the task never panics. It
    /// runs until aborted through the returned handle.
    pub fn spawn_refresh<F>(self: Arc<Self>, every: Duration, publish: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Directory) + Send + 'static,
    {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing: Option<String> = None;
            loop {
                ticks.tick().await;
                match self.refresh().await {
                    Ok(changed) => {
                        if failing.take().is_some() {
                            tracing::info!("directory refresh works again");
                        }
                        if let Some(directory) = changed {
                            let (clients, users) = (directory.client_count(), directory.user_count());
                            publish(directory);
                            tracing::info!(clients, users, "directory refreshed from the replica");
                        }
                    }
                    Err(error) => {
                        let text = error.to_string();
                        if failing.as_deref() != Some(text.as_str()) {
                            tracing::warn!(%error, "directory refresh failed; keeping the current directory");
                            failing = Some(text);
                        }
                    }
                }
            }
        })
    }

    /// Applies `edit` to the stored entries and writes the result if it changed and makes a sound directory.
    async fn change(&self, edit: impl FnOnce(&mut Entries)) -> Result<bool, DirectoryStoreError> {
        let _writing = self.writing.lock().await;
        let snapshot = self.read(false).await?;
        let mut entries = snapshot.entries.clone();
        edit(&mut entries);
        if entries == snapshot.entries {
            return Ok(false);
        }
        self.build(&entries)?;
        self.write(&snapshot, &entries).await?;
        Ok(true)
    }

    /// Like [`DirectoryStore::change`], but `edit` may refuse the change (nothing is written then).
    async fn change_checked(
        &self,
        edit: impl FnOnce(&mut Entries) -> Result<(), DirectoryStoreError>,
    ) -> Result<bool, DirectoryStoreError> {
        let _writing = self.writing.lock().await;
        let snapshot = self.read(false).await?;
        let mut entries = snapshot.entries.clone();
        edit(&mut entries)?;
        if entries == snapshot.entries {
            return Ok(false);
        }
        self.build(&entries)?;
        self.write(&snapshot, &entries).await?;
        Ok(true)
    }

    /// Reads the version before the entries (see the module documentation for why the order matters).
    async fn read(&self, require_documents: bool) -> Result<Snapshot, DirectoryStoreError> {
        let version = match self.replica.read_document(VERSION_DOCUMENT).await? {
            Some(bytes) => {
                let version = decode_version(&bytes)?;
                Some((bytes, version))
            }
            None => None,
        };
        let entries = self.read_entries(require_documents && version.is_some()).await?;
        Ok(Snapshot { version, entries })
    }

    /// An absent document reads as empty unless `require_documents` (a version exists, so they were written).
    async fn read_entries(&self, require_documents: bool) -> Result<Entries, DirectoryStoreError> {
        let mut entries = Entries::default();
        match self.replica.read_document(CLIENTS_DOCUMENT).await? {
            Some(bytes) => {
                let clients = decode_clients(&bytes, &self.fingerprint)?;
                entries.clients = clients.into_iter().map(|client| (client.client_id.clone(), client)).collect();
            }
            None if require_documents => return Err(DirectoryStoreError::Missing(CLIENTS_DOCUMENT)),
            None => {}
        }
        match self.replica.read_document(USERS_DOCUMENT).await? {
            Some(bytes) => {
                entries.users = decode_users(&bytes)?.into_iter().map(|user| (user.id.clone(), user)).collect()
            }
            None if require_documents => return Err(DirectoryStoreError::Missing(USERS_DOCUMENT)),
            None => {}
        }
        // Absent in stores written before upstreams were stored: none then, whatever `require_documents` says.
        if let Some(bytes) = self.replica.read_document(UPSTREAMS_DOCUMENT).await? {
            let upstreams = decode_upstreams(&bytes, &self.fingerprint)?;
            entries.upstreams = upstreams.into_iter().map(|upstream| (upstream.id().to_string(), upstream)).collect();
        }
        Ok(entries)
    }

    /// Writes the documents that differ from `before`, then a new version; returns the version's bytes.
    async fn write(&self, before: &Snapshot, after: &Entries) -> Result<Vec<u8>, DirectoryStoreError> {
        if after.clients != before.entries.clients {
            let clients: Vec<StoredClient> = after.clients.values().cloned().collect();
            self.replica.write_document(CLIENTS_DOCUMENT, encode_clients(&clients, &self.fingerprint)).await?;
        }
        if after.users != before.entries.users {
            let users: Vec<StoredUser> = after.users.values().cloned().collect();
            self.replica.write_document(USERS_DOCUMENT, encode_users(&users)).await?;
        }
        if after.upstreams != before.entries.upstreams {
            let upstreams: Vec<StoredUpstream> = after.upstreams.values().cloned().collect();
            self.replica.write_document(UPSTREAMS_DOCUMENT, encode_upstreams(&upstreams, &self.fingerprint)).await?;
        }
        let changes = before.version.as_ref().map_or(0, |(_, version)| version.n);
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>());
        let version = encode_version(&VersionV1::new(changes + 1, nonce));
        self.replica.write_document(VERSION_DOCUMENT, version.clone()).await?;
        Ok(version)
    }

    fn build(&self, entries: &Entries) -> Result<Directory, DirectoryStoreError> {
        let clients: Vec<StoredClient> = entries.clients.values().cloned().collect();
        let users: Vec<StoredUser> = entries.users.values().cloned().collect();
        let upstreams =
            entries.upstreams.values().map(|upstream| self.sealer.open(upstream)).collect::<Result<_, _>>()?;
        Ok(Directory::from_entries(&clients, &users, self.secret_key, &self.issuer)?.with_upstreams(upstreams))
    }

    /// The config file's rules for `[[upstreams]]`, applied to one upstream; the field names drop `upstreams[0].`.
    fn validate_upstream(&self, upstream: &UpstreamConfig) -> Result<(), DirectoryStoreError> {
        let invalid =
            |reason: String| DirectoryStoreError::Invalid { entry: format!("upstream `{}`", upstream.id), reason };
        let mut config: Config = serde_json::from_value(serde_json::json!({ "issuer": "https://idp.invalid" }))
            .map_err(|error| invalid(format!("cannot build a configuration to check it: {error}")))?;
        config.upstreams = vec![upstream.clone()];
        config.validate().map_err(|error| match error {
            ConfigError::Key { key, reason, .. } => {
                let field = key.strip_prefix("upstreams[0].").unwrap_or(&key);
                invalid(format!("{field}: {reason}"))
            }
            other => invalid(other.to_string()),
        })
    }

    /// The config file's rules (`Config::validate`), applied to one new entry in an otherwise default config.
    fn validate(&self, client: Option<&ClientConfig>, user: Option<&UserConfig>) -> Result<(), DirectoryStoreError> {
        let (entry, prefix) = match (client, user) {
            (Some(client), _) => (format!("client `{}`", client.client_id), "clients[0]."),
            (None, Some(user)) => (format!("user `{}`", user.username), "users[0]."),
            (None, None) => return Ok(()),
        };
        let invalid = |reason: String| DirectoryStoreError::Invalid { entry: entry.clone(), reason };
        // Only the entry is checked: the issuer is a placeholder, every other section keeps its defaults.
        let mut config: Config = serde_json::from_value(serde_json::json!({ "issuer": "https://idp.invalid" }))
            .map_err(|error| invalid(format!("cannot build a configuration to check it: {error}")))?;
        config.keys.algorithms = self.algorithms.lock().clone();
        config.clients = client.cloned().into_iter().collect();
        config.users = user.cloned().into_iter().collect();
        config.validate().map_err(|error| match error {
            ConfigError::Key { key, reason, .. } => {
                let field = key.strip_prefix(prefix).unwrap_or(&key);
                invalid(format!("{field}: {reason}"))
            }
            other => invalid(other.to_string()),
        })
    }
}

/// The stored entries with the declared ones in their place: same ids replaced, others kept. A kept user whose
/// username (ignoring case) is a declared user's is dropped: the config wins, and the directory needs it unique.
fn merge_declared(stored: &Entries, clients: Vec<StoredClient>, users: Vec<StoredUser>) -> Entries {
    let mut merged = stored.clone();
    for client in clients {
        merged.clients.insert(client.client_id.clone(), client);
    }
    let declared_names: HashMap<String, String> =
        users.iter().map(|user| (user.username.to_lowercase(), user.id.clone())).collect();
    merged.users.retain(|id, user| match declared_names.get(&user.username.to_lowercase()) {
        Some(declared_id) if declared_id != id => {
            tracing::warn!("a stored user has the username of a user the config declares; removing it"); // no subject id in logs
            false
        }
        _ => true,
    });
    for mut user in users {
        // Upstream links are made at sign-in, never declared: a declared user keeps the links it has.
        if let Some(stored) = merged.users.get(&user.id) {
            user.links = stored.links.clone();
        }
        merged.users.insert(user.id.clone(), user);
    }
    merged
}

#[cfg(test)]
mod tests;
