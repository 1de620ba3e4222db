use super::*;
use crate::directory::stored::FORMAT_VERSION;
use arc_swap::ArcSwap;
use futures::FutureExt;
use idp_actors::clock::SystemClock;
use idp_actors::replica::{Epoch, MemoryReplica, RecordWrite, Replica, ReplicaFuture};
use idp_proto::records::RecordKey;
use idp_proto::{Secret, ShardId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

const SECRET_KEY: [u8; 32] = [7; 32];
const ISSUER: &str = "http://127.0.0.1:8080";
const DOCUMENTS: [&str; 3] = [CLIENTS_DOCUMENT, USERS_DOCUMENT, VERSION_DOCUMENT];

/// A [`MemoryReplica`] that counts document writes and yields before every document call, so that concurrent
/// seeds interleave at each read and write as they would against Redis.
#[derive(Clone)]
struct TestReplica {
    inner: MemoryReplica,
    document_writes: Arc<AtomicUsize>,
}

impl TestReplica {
    fn new() -> Self {
        Self { inner: MemoryReplica::new(Arc::new(SystemClock::default())), document_writes: Arc::default() }
    }

    fn writes(&self) -> usize {
        self.document_writes.load(Ordering::SeqCst)
    }

    async fn document(&self, name: &str) -> Option<Vec<u8>> {
        self.inner.read_document(name).await.unwrap()
    }

    /// Writes a document behind the stores' back (a corrupt or foreign value).
    async fn force(&self, name: &str, value: &[u8]) {
        self.inner.write_document(name, value.to_vec()).await.unwrap();
    }

    /// A new version value, as a writer would leave after changing the entries.
    async fn bump(&self, nonce: &str) {
        self.force(VERSION_DOCUMENT, &encode_version(&VersionV1::new(1000, nonce.into()))).await;
    }

    fn store(&self) -> Arc<DirectoryStore> {
        self.store_with_key(SECRET_KEY)
    }

    fn store_with_key(&self, secret_key: [u8; 32]) -> Arc<DirectoryStore> {
        Arc::new(DirectoryStore::new(Arc::new(self.clone()), secret_key, ISSUER.into()))
    }
}

impl Replica for TestReplica {
    fn write_records(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> ReplicaFuture<()> {
        self.inner.write_records(shard, epoch, writes)
    }

    fn read_records(&self, shard: ShardId, keys: Vec<RecordKey>) -> ReplicaFuture<Vec<Option<Vec<u8>>>> {
        self.inner.read_records(shard, keys)
    }

    fn read_document(&self, name: &str) -> ReplicaFuture<Option<Vec<u8>>> {
        let read = self.inner.read_document(name);
        async move {
            tokio::task::yield_now().await;
            read.await
        }
        .boxed()
    }

    fn write_document(&self, name: &str, value: Vec<u8>) -> ReplicaFuture<()> {
        let (inner, name, writes) = (self.inner.clone(), name.to_string(), self.document_writes.clone());
        async move {
            tokio::task::yield_now().await;
            writes.fetch_add(1, Ordering::SeqCst);
            inner.write_document(&name, value).await
        }
        .boxed()
    }
}

/// The dev config, built once: each build hashes alice's password with a new salt.
fn config() -> Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config::dev("127.0.0.1:8080", None)).clone()
}

fn admin_client(client_id: &str, secret: &str) -> ClientConfig {
    let mut client = config().clients[0].clone();
    client.client_id = client_id.into();
    client.name = Some("Made by the admin API".into());
    client.client_secret = Some(secret.into());
    client
}

fn admin_user(username: &str, id: &str) -> UserConfig {
    let mut user = config().users[0].clone();
    (user.username, user.id, user.email) = (username.into(), Some(id.into()), None);
    user
}

fn client_ids(directory: &Directory) -> Vec<String> {
    let mut ids: Vec<String> = directory.clients.keys().cloned().collect();
    ids.sort();
    ids
}

fn user_ids(directory: &Directory) -> Vec<String> {
    let mut ids: Vec<String> = directory.users_by_id.keys().cloned().collect();
    ids.sort();
    ids
}

fn secret(text: &str) -> Secret<String> {
    Secret::new(text.into())
}

async fn stored_version(replica: &TestReplica) -> u64 {
    decode_version(&replica.document(VERSION_DOCUMENT).await.unwrap()).unwrap().n
}

async fn wait_for(condition: impl Fn() -> bool, timeout: Duration) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "condition not met within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// A node that seeded from the replica and publishes every refresh into `target`.
async fn refreshing_node(replica: &TestReplica) -> (Arc<ArcSwap<Directory>>, tokio::task::JoinHandle<()>) {
    let store = replica.store();
    let target = Arc::new(ArcSwap::from_pointee(store.seed(&config()).await.unwrap()));
    let published = target.clone();
    let task = store.spawn_refresh(Duration::from_millis(20), move |directory| published.store(Arc::new(directory)));
    (target, task)
}

#[tokio::test]
async fn seeding_twice_with_the_same_config_writes_once() {
    let replica = TestReplica::new();
    let first = replica.store().seed(&config()).await.unwrap();
    assert_eq!(replica.writes(), 3, "clients, users, version");
    assert_eq!(stored_version(&replica).await, 1);
    let again = replica.store().seed(&config()).await.unwrap();
    replica.store().seed(&config()).await.unwrap();
    assert_eq!(replica.writes(), 3, "the second and third node write nothing");
    assert_eq!(stored_version(&replica).await, 1);
    assert_eq!((client_ids(&again), user_ids(&again)), (client_ids(&first), user_ids(&first)));
    assert_eq!(client_ids(&first), ["demo", "demo-public"]);
}

#[tokio::test]
async fn three_nodes_seeding_at_once_agree() {
    let replica = TestReplica::new();
    let stores = [replica.store(), replica.store(), replica.store()];
    let config = config();
    let (a, b, c) = tokio::join!(stores[0].seed(&config), stores[1].seed(&config), stores[2].seed(&config));
    let stored = replica.store().load().await.unwrap();
    for directory in [a.unwrap(), b.unwrap(), c.unwrap(), stored] {
        assert_eq!(client_ids(&directory), ["demo", "demo-public"]);
        assert_eq!(user_ids(&directory), ["alice"]);
        assert!(directory.verify_client_secret(directory.client("demo").unwrap(), &secret("demo-secret")));
    }
    // Whichever version won, every node converges on the same stored entries.
    for store in &stores {
        if let Some(directory) = store.refresh().await.unwrap() {
            assert_eq!(client_ids(&directory), ["demo", "demo-public"]);
        }
    }
}

#[tokio::test]
async fn the_config_wins_for_its_ids_and_admin_entries_are_kept() {
    let replica = TestReplica::new();
    let store = replica.store();
    let mut without_users = config();
    without_users.users.clear();
    store.seed(&without_users).await.unwrap();
    let mut renamed = config().clients[0].clone();
    renamed.name = Some("Renamed by an admin".into());
    assert!(store.put_client(renamed).await.unwrap());
    assert!(store.put_client(admin_client("reports", "reports-secret")).await.unwrap());
    assert!(store.put_user(admin_user("ALICE", "alice-by-admin")).await.unwrap());
    assert!(store.put_user(admin_user("bob", "bob")).await.unwrap());

    let directory = replica.store().seed(&config()).await.unwrap();
    assert_eq!(directory.client("demo").unwrap().name, "Demo application", "the config's demo replaces the stored one");
    assert_eq!(client_ids(&directory), ["demo", "demo-public", "reports"], "the admin's client is kept");
    assert_eq!(user_ids(&directory), ["alice", "bob"], "the stored ALICE gives way to the config's alice");
    assert_eq!(user_ids(&store.load().await.unwrap()), ["alice", "bob"], "and the merge was written");
}

#[tokio::test]
async fn a_change_on_one_node_is_seen_by_another_within_a_second() {
    let replica = TestReplica::new();
    let (target, task) = refreshing_node(&replica).await;
    let writer = replica.store();
    writer.seed(&config()).await.unwrap();
    assert!(writer.put_client(admin_client("reports", "reports-secret")).await.unwrap());
    let elapsed = wait_for(|| target.load().client("reports").is_some(), Duration::from_secs(5)).await;
    assert!(elapsed <= Duration::from_secs(1), "seen after {elapsed:?}");
    assert!(writer.delete_client("reports").await.unwrap());
    assert!(!writer.delete_client("reports").await.unwrap(), "already gone: nothing written");
    let elapsed = wait_for(|| target.load().client("reports").is_none(), Duration::from_secs(5)).await;
    assert!(elapsed <= Duration::from_secs(1), "deletion seen after {elapsed:?}");
    task.abort();
}

#[tokio::test]
async fn stored_documents_hold_no_plaintext_secret() {
    let replica = TestReplica::new();
    let store = replica.store();
    store.seed(&config()).await.unwrap();
    store.put_client(admin_client("reports", "an-admin-made-secret")).await.unwrap();
    for name in DOCUMENTS {
        let document = replica.document(name).await.unwrap();
        for plaintext in [&b"demo-secret"[..], b"an-admin-made-secret", b"alice-password"] {
            let found = document.windows(plaintext.len()).any(|window| window == plaintext);
            assert!(!found, "{name} holds {}", String::from_utf8_lossy(plaintext));
        }
    }
    let clients = String::from_utf8(replica.document(CLIENTS_DOCUMENT).await.unwrap()).unwrap();
    assert!(clients.contains("client_secret_hmac"), "{clients}");
}

#[tokio::test]
async fn a_client_authenticates_through_a_directory_rebuilt_from_the_store() {
    let replica = TestReplica::new();
    let store = replica.store();
    store.seed(&config()).await.unwrap();
    store.put_client(admin_client("reports", "reports-secret")).await.unwrap();
    let rebuilt = replica.store().load().await.unwrap();
    let (demo, reports) = (rebuilt.client("demo").unwrap(), rebuilt.client("reports").unwrap());
    assert!(rebuilt.verify_client_secret(demo, &secret("demo-secret")));
    assert!(rebuilt.verify_client_secret(reports, &secret("reports-secret")));
    assert!(!rebuilt.verify_client_secret(reports, &secret("demo-secret")));
    assert!(!rebuilt.verify_client_secret(rebuilt.client("demo-public").unwrap(), &secret("")), "public: no secret");
    let alice = rebuilt.user_by_name("Alice").unwrap();
    assert_eq!(&*alice.password_hash, config().users[0].password_hash.as_str());
}

#[tokio::test]
async fn a_corrupt_document_keeps_the_old_directory() {
    let replica = TestReplica::new();
    let (target, task) = refreshing_node(&replica).await;
    let good_clients = replica.document(CLIENTS_DOCUMENT).await.unwrap();
    replica.force(CLIENTS_DOCUMENT, b"{\"v\":1,\"clients\":[{\"client_id\":").await;
    replica.bump("corrupt").await;
    let error = replica.store().refresh().await.unwrap_err().to_string();
    assert!(error.starts_with("stored document `directory:clients` is corrupt"), "{error}");
    // Several polls see the corrupt document; the node keeps serving what it had.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client_ids(&target.load()), ["demo", "demo-public"]);
    assert!(!task.is_finished(), "the refresh task survives");

    replica.force(CLIENTS_DOCUMENT, &good_clients).await;
    replica.store().put_user(admin_user("bob", "bob")).await.unwrap();
    wait_for(|| target.load().user_by_id("bob").is_some(), Duration::from_secs(5)).await;
    task.abort();
}

#[tokio::test]
async fn an_unknown_stored_version_is_refused() {
    let replica = TestReplica::new();
    replica.force(CLIENTS_DOCUMENT, br#"{"v": 2, "clients": [], "something": "new"}"#).await;
    let error = replica.store().seed(&config()).await.err().unwrap().to_string();
    assert_eq!(
        error,
        format!(
            "stored document `directory:clients` has format version 2; this build reads version {FORMAT_VERSION} only"
        )
    );
    assert_eq!(replica.writes(), 0, "nothing overwritten");

    let replica = TestReplica::new();
    let store = replica.store();
    store.seed(&config()).await.unwrap();
    replica.force(VERSION_DOCUMENT, br#"{"v": 9, "n": 2}"#).await;
    let error = store.refresh().await.unwrap_err().to_string();
    assert!(error.contains("`directory:version` has format version 9"), "{error}");
}

#[tokio::test]
async fn another_kek_is_refused() {
    let replica = TestReplica::new();
    replica.store().seed(&config()).await.unwrap();
    let error = replica.store_with_key([8; 32]).seed(&config()).await.err().unwrap().to_string();
    assert!(error.starts_with("the stored client secrets were keyed with another key-encryption key"), "{error}");
    assert_eq!(replica.writes(), 3, "nothing rewritten");
}

#[tokio::test]
async fn bad_input_is_refused_with_the_config_rules_and_nothing_is_written() {
    let replica = TestReplica::new();
    let store = replica.store();
    store.seed(&config()).await.unwrap();
    let writes = replica.writes();

    let mut plain_http = admin_client("reports", "reports-secret");
    plain_http.redirect_uris = vec!["http://reports.example.com/callback".into()];
    let error = store.put_client(plain_http).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "client `reports`: redirect_uris[0]: must use https: plain http is allowed only on a loopback host \
         (127.0.0.1, [::1] or localhost)"
    );
    let mut no_secret = admin_client("reports", "x");
    no_secret.client_secret = None;
    let error = store.put_client(no_secret).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "client `reports`: client_secret: is required for token_endpoint_auth_method `client_secret_basic`"
    );
    let mut es256 = admin_client("reports", "reports-secret");
    es256.id_token_signed_response_alg = "HS256".into();
    let error = store.put_client(es256).await.unwrap_err().to_string();
    assert!(error.starts_with("client `reports`: id_token_signed_response_alg: `HS256` is not one of"), "{error}");

    let mut no_hash = admin_user("bob", "bob");
    no_hash.password_hash = "plain-text".into();
    let error = store.put_user(no_hash).await.unwrap_err().to_string();
    assert!(error.starts_with("user `bob`: password_hash: must be an argon2id PHC string"), "{error}");
    let error = store.put_user(admin_user("Alice", "alice-2")).await.unwrap_err().to_string();
    assert_eq!(error, "user `Alice`: another user has the same username (usernames ignore case)");

    assert_eq!(replica.writes(), writes, "nothing written");
    assert!(!store.put_user(config().users[0].clone()).await.unwrap(), "the same user again: nothing to write");
    assert_eq!(replica.writes(), writes);
}

#[test]
fn a_serde_error_does_not_quote_stored_values() {
    let misplaced = br#"{"v":1,"users":[{"id":"bob","username":"bob","email_verified":"$argon2id$v=19$m=1"}]}"#;
    let error = decode_users(misplaced).unwrap_err().to_string();
    let expected = "stored document `directory:users` is corrupt: a value of the wrong type or form at line 1, column";
    assert!(error.starts_with(expected) && !error.contains("argon2id"), "{error}");
    let error = decode_users(br#"{"v":1,"users":[{"id":"bob"}]}"#).unwrap_err().to_string();
    assert!(error.contains("missing field `username`"), "{error}");
}

fn upstream(id: &str, secret: &str) -> UpstreamConfig {
    serde_json::from_value(serde_json::json!({
        "id": id, "kind": "oidc", "issuer": "https://login.example", "client_id": "broker", "client_secret": secret,
    }))
    .unwrap()
}

fn upstream_ids(directory: &Directory) -> Vec<&str> {
    directory.upstreams().iter().map(|upstream| upstream.id.as_str()).collect()
}

/// Upstreams are seeded like clients (idempotently, the config winning for its ids, the admin's kept), stored
/// with their secret sealed, opened again on another node, and changes reach the other nodes' refresh.
#[tokio::test]
async fn upstreams_are_seeded_stored_sealed_and_refreshed() {
    let replica = TestReplica::new();
    let mut with_upstream = config();
    with_upstream.upstreams = vec![upstream("corp", "corp-secret")];
    let first = replica.store().seed(&with_upstream).await.unwrap();
    assert_eq!(upstream_ids(&first), ["corp"]);
    let writes = replica.writes();
    assert_eq!(writes, 4, "clients, users, upstreams, version");
    replica.store().seed(&with_upstream).await.unwrap();
    assert_eq!(replica.writes(), writes, "a second node seeding the same upstream writes nothing");
    let stored = replica.document(UPSTREAMS_DOCUMENT).await.unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("corp-secret"), "sealed in the store");

    let (target, task) = refreshing_node(&replica).await;
    let store = replica.store();
    store.seed(&with_upstream).await.unwrap();
    let made = store.create_upstream(upstream("made", "made-secret")).await.unwrap();
    assert!(made.has_secret() && made.config.client_secret.is_none());
    assert!(matches!(store.create_upstream(upstream("made", "x")).await, Err(DirectoryStoreError::Exists(_))));
    let mut changed = upstream("corp", "changed-secret");
    changed.name = Some("Changed by an admin".into());
    store.update_upstream(changed).await.unwrap();
    wait_for(|| target.load().upstreams().iter().any(|u| u.name.is_some()), Duration::from_secs(5)).await;
    let seen = target.load();
    assert_eq!(upstream_ids(&seen), ["corp", "made"]);
    assert_eq!(seen.upstreams()[0].client_secret.as_deref(), Some("changed-secret"), "opened on the other node");
    assert_eq!(store.upstream_config("made").await.unwrap().client_secret.as_deref(), Some("made-secret"));

    let mut bad = upstream("bad", "s");
    bad.kind = "saml".into();
    let before = replica.writes();
    match store.create_upstream(bad).await {
        Err(DirectoryStoreError::Invalid { reason, .. }) => assert!(reason.starts_with("kind: "), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(store.update_upstream(upstream("ghost", "s")).await, Err(DirectoryStoreError::NotFound(_))));
    assert_eq!(replica.writes(), before, "refused changes write nothing");

    // A restart with the file: the config's corp replaces the admin's change, the admin's `made` is kept.
    let restarted = replica.store().seed(&with_upstream).await.unwrap();
    assert_eq!(upstream_ids(&restarted), ["corp", "made"]);
    assert_eq!(restarted.upstreams()[0].client_secret.as_deref(), Some("corp-secret"));
    assert_eq!(restarted.upstreams()[0].name, None);

    assert!(store.delete_upstream("made").await.unwrap());
    assert!(!store.delete_upstream("made").await.unwrap(), "already gone: nothing written");
    wait_for(|| upstream_ids(&target.load()) == ["corp"], Duration::from_secs(5)).await;
    assert!(replica.store_with_key([9; 32]).seed(&with_upstream).await.is_err(), "another KEK is refused");
    task.abort();
}
