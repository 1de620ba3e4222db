//! The signing key ring (DESIGN.md "Key ring"): the [`KeyRingActor`] owns the keys and rotates them; every HTTP
//! worker signs and serves the JWKS from an immutable [`KeySet`] snapshot read lock-free through a [`KeyRingHandle`].
//!
//! The ring is stored as one replica document, [`DOCUMENT_NAME`]: format version `v`, a generation counter, the
//! fingerprint of the key-encryption key, the metadata of every key and its PKCS#8 private key sealed with the
//! [`Kek`] (associated data: the kid). A change is planned by the pure [`model`], written, and published only once
//! the replica acknowledged the write: no key signs, and no key leaves the JWKS, before the change is durable.
//!
//! One writer: in a cluster the actor runs on the holder of the key ring's lease only; other nodes read the document
//! ([`load_key_set`]) and publish it with [`KeyRingHandle::publish_if_newer`]. They must reload more often than
//! `publish_ahead` so that they know a next key before anybody signs with it (invariant I4).

pub mod kek;
pub mod keys;
pub mod model;

pub use kek::Kek;
pub use keys::{KeyError, SigningKey};
pub use model::{KeyAction, KeyMeta, KeyRingModel, KeyState, RotationPolicy};

use crate::clock::SharedClock;
use crate::jwt::{self, Algorithm, Claims, JwtError, JwtHeader, VerifyingKey};
use crate::replica::{Epoch, LeaseName, Replica, ReplicaError, SharedReplica};
use actix::prelude::*;
use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use idp_proto::ErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The replica document holding the ring.
pub const DOCUMENT_NAME: &str = "keyring";
/// The format version this build writes; it reads this one and every older one.
pub const DOCUMENT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("key ring replica: {0}")]
    Replica(#[from] ReplicaError),
    #[error(
        "the stored key ring was sealed with another key-encryption key (fingerprint {stored}, configured \
         {configured}); refusing to start rather than replace the keys"
    )]
    WrongKek { stored: String, configured: String },
    #[error("the stored key ring is corrupt: {0}")]
    Corrupt(String),
    #[error("the stored key ring has format version {0}; this build reads versions up to {DOCUMENT_VERSION}")]
    UnsupportedVersion(u32),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("rotation refused: the next {alg} key must be published for {retry_in_ms} ms more before it signs")]
    RotationNotReady { alg: Algorithm, retry_in_ms: u64 },
    #[error("key ring configuration: {0}")]
    Config(&'static str),
}

impl KeyRingError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Replica(_) | Self::RotationNotReady { .. } => ErrorCode::TemporarilyUnavailable,
            _ => ErrorCode::ServerError,
        }
    }
}

#[derive(Clone, Debug)]
pub struct KeyRingConfig {
    /// The algorithms to keep a current key for (RS256 is mandatory for OpenID Connect).
    pub algorithms: Vec<Algorithm>,
    pub policy: RotationPolicy,
    /// How often the actor checks whether a rotation or a drop is due.
    pub check_every: Duration,
}

impl Default for KeyRingConfig {
    fn default() -> Self {
        Self {
            algorithms: Algorithm::ALL.to_vec(),
            policy: RotationPolicy::default(),
            check_every: Duration::from_secs(60),
        }
    }
}

impl KeyRingConfig {
    pub fn validate(&self) -> Result<(), KeyRingError> {
        if self.algorithms.is_empty() {
            return Err(KeyRingError::Config("at least one signing algorithm is needed"));
        }
        if self.check_every.is_zero() {
            return Err(KeyRingError::Config("check_every must be longer than zero"));
        }
        self.policy.validate().map_err(KeyRingError::Config)
    }
}

/// An immutable snapshot of the ring: the signing keys, every published key, and the JWKS, serialized once.
pub struct KeySet {
    generation: u64,
    signers: [Option<Arc<SigningKey>>; 3],
    verifying_keys: Vec<VerifyingKey>,
    keys: Vec<KeyMeta>,
    jwks_json: Bytes,
    jwks_etag: String,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("KeySet").field("generation", &self.generation).field("keys", &self.keys).finish()
    }
}

impl KeySet {
    fn new(generation: u64, model: &KeyRingModel, private_keys: &BTreeMap<String, Arc<SigningKey>>) -> Self {
        let mut signers = [None, None, None];
        let mut published = Vec::with_capacity(model.keys.len());
        for meta in &model.keys {
            let Some(key) = private_keys.get(&meta.kid) else {
                continue;
            };
            if meta.state == KeyState::Current {
                signers[meta.alg.index()] = Some(key.clone());
            }
            published.push(key);
        }
        // RFC 7517 §5: {"keys": [...]}, in the model's canonical order (deterministic on every node).
        let jwks = serde_json::json!({"keys": published.iter().map(|key| key.public_jwk()).collect::<Vec<_>>()});
        let jwks_json = Bytes::from(serde_json::to_vec(&jwks).unwrap_or_default());
        let hash = digest::digest(&digest::SHA256, &jwks_json);
        Self {
            generation,
            signers,
            verifying_keys: published.iter().map(|key| key.verifying_key()).collect(),
            keys: model.keys.clone(),
            jwks_etag: format!("\"{}\"", URL_SAFE_NO_PAD.encode(&hash.as_ref()[..16])),
            jwks_json,
        }
    }

    /// The current key of `alg`; `None` when `alg` is not configured.
    pub fn signer(&self, alg: Algorithm) -> Option<&SigningKey> {
        self.signers[alg.index()].as_deref()
    }

    /// The algorithms this set can sign with, in [`Algorithm::ALL`] order (discovery's
    /// `id_token_signing_alg_values_supported`).
    pub fn signing_algorithms(&self) -> Vec<Algorithm> {
        Algorithm::ALL.into_iter().filter(|alg| self.signers[alg.index()].is_some()).collect()
    }

    /// `{"keys":[...]}` with the next, current and previous keys of every algorithm, serialized once.
    pub fn jwks_json(&self) -> &Bytes {
        &self.jwks_json
    }

    /// A strong HTTP entity tag of [`KeySet::jwks_json`] (RFC 9110 §8.8.3), quoted.
    pub fn jwks_etag(&self) -> &str {
        &self.jwks_etag
    }

    /// Verifies one of our tokens against every published key (see [`jwt::verify`]).
    pub fn verify(&self, token: &str) -> Result<(JwtHeader, Claims), JwtError> {
        jwt::verify(token, &self.verifying_keys)
    }

    pub fn verifying_keys(&self) -> &[VerifyingKey] {
        &self.verifying_keys
    }

    /// The metadata of every published key, in JWKS order.
    pub fn keys(&self) -> &[KeyMeta] {
        &self.keys
    }

    /// Increases with every stored change of the ring.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The published [`KeySet`], swapped atomically; cheap to clone and to read from any thread.
#[derive(Clone)]
pub struct KeyRingHandle(Arc<ArcSwap<KeySet>>);

impl fmt::Debug for KeyRingHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_tuple("KeyRingHandle").field(&self.load().generation).finish()
    }
}

impl KeyRingHandle {
    pub fn new(key_set: KeySet) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(key_set)))
    }

    /// The current snapshot, without touching a reference count; do not hold it across an `.await`.
    pub fn load(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.0.load()
    }

    /// The current snapshot, to keep.
    pub fn load_full(&self) -> Arc<KeySet> {
        self.0.load_full()
    }

    /// Publishes `key_set` unless the published one is as new; returns whether it was published.
    pub fn publish_if_newer(&self, key_set: KeySet) -> bool {
        let generation = key_set.generation;
        let new = Arc::new(key_set);
        let previous =
            self.0.rcu(|published| if published.generation < generation { new.clone() } else { published.clone() });
        previous.generation < generation
    }
}

/// The ring as the actor holds it: metadata and the parsed private keys.
#[derive(Clone, Default)]
struct RingState {
    generation: u64,
    model: KeyRingModel,
    private_keys: BTreeMap<String, Arc<SigningKey>>,
}

/// The stored document, format version 1.
#[derive(Serialize, Deserialize)]
struct StoredRingV1 {
    v: u32,
    generation: u64,
    kek_fingerprint: String,
    keys: Vec<StoredKeyV1>,
}

#[derive(Serialize, Deserialize)]
struct StoredKeyV1 {
    #[serde(flatten)]
    meta: KeyMeta,
    /// base64url(nonce || AES-256-GCM(PKCS#8) || tag), associated data: the kid.
    sealed_pkcs8: String,
}

impl RingState {
    fn encode(&self, kek: &Kek) -> Result<Vec<u8>, KeyRingError> {
        let mut keys = Vec::with_capacity(self.model.keys.len());
        for meta in &self.model.keys {
            let private_key = self.private_keys.get(&meta.kid).ok_or_else(|| missing_key(&meta.kid))?;
            let sealed = kek.seal(private_key.to_pkcs8()?.expose(), meta.kid.as_bytes());
            keys.push(StoredKeyV1 { meta: meta.clone(), sealed_pkcs8: URL_SAFE_NO_PAD.encode(sealed) });
        }
        let stored =
            StoredRingV1 { v: DOCUMENT_VERSION, generation: self.generation, kek_fingerprint: kek.fingerprint(), keys };
        serde_json::to_vec(&stored).map_err(|error| KeyRingError::Corrupt(error.to_string()))
    }

    /// Reads any known format version (the migration path starts here when a version 2 exists).
    fn decode(document: &[u8], kek: &Kek) -> Result<Self, KeyRingError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version = serde_json::from_slice(document).map_err(corrupt)?;
        match version.v {
            1 => Self::decode_v1(serde_json::from_slice(document).map_err(corrupt)?, kek),
            other => Err(KeyRingError::UnsupportedVersion(other)),
        }
    }

    fn decode_v1(stored: StoredRingV1, kek: &Kek) -> Result<Self, KeyRingError> {
        let configured = kek.fingerprint();
        if stored.kek_fingerprint != configured {
            return Err(KeyRingError::WrongKek { stored: stored.kek_fingerprint, configured });
        }
        let mut state = RingState { generation: stored.generation, ..RingState::default() };
        for StoredKeyV1 { meta, sealed_pkcs8 } in stored.keys {
            let sealed = URL_SAFE_NO_PAD.decode(&sealed_pkcs8).map_err(corrupt)?;
            let der = kek.open(&sealed, meta.kid.as_bytes()).map_err(|_| unsealable(&meta.kid))?;
            let private_key = SigningKey::from_pkcs8(meta.kid.clone(), meta.alg, &der)?;
            state.private_keys.insert(meta.kid.clone(), Arc::new(private_key));
            state.model.keys.push(meta);
        }
        Ok(state)
    }

    /// The ring after the changes due at `now_ms`, with their keys generated; `None` when nothing is due.
    fn planned(&self, config: &KeyRingConfig, now_ms: u64, force: bool) -> Result<Option<RingState>, KeyRingError> {
        let actions = model::plan(&self.model, &config.algorithms, &config.policy, now_ms, force);
        if actions.is_empty() {
            return Ok(None);
        }
        let mut changed = RingState { generation: self.generation + 1, ..self.clone() };
        for action in &actions {
            tracing::info!(?action, "key ring change planned");
            model::apply(&mut changed.model, action, now_ms, |alg| {
                let key = SigningKey::generate(alg)?;
                let kid = key.kid.clone();
                changed.private_keys.insert(kid.clone(), Arc::new(key));
                Ok::<_, KeyError>(kid)
            })?;
        }
        changed.private_keys.retain(|kid, _| changed.model.get(kid).is_some());
        let violations = model::invariant_violations(&changed.model, &config.algorithms);
        debug_assert!(violations.is_empty(), "{violations:?}");
        Ok(Some(changed))
    }

    fn key_set(&self) -> KeySet {
        KeySet::new(self.generation, &self.model, &self.private_keys)
    }
}

fn corrupt(error: impl fmt::Display) -> KeyRingError {
    KeyRingError::Corrupt(error.to_string())
}

fn missing_key(kid: &str) -> KeyRingError {
    KeyRingError::Corrupt(format!("no private key for kid {kid}"))
}

fn unsealable(kid: &str) -> KeyRingError {
    KeyRingError::Corrupt(format!("the private key of kid {kid} does not open with the configured key-encryption key"))
}

/// Reads the stored ring (for nodes that do not own it); `None` when no ring was stored yet.
pub async fn load_key_set(replica: &dyn Replica, kek: &Kek) -> Result<Option<KeySet>, KeyRingError> {
    let Some(document) = replica.read_document(DOCUMENT_NAME).await? else {
        return Ok(None);
    };
    Ok(Some(decode_key_set(&document, kek)?))
}

/// The key set of a stored ring document (unsealed with the KEK, keys parsed).
pub fn decode_key_set(document: &[u8], kek: &Kek) -> Result<KeySet, KeyRingError> {
    Ok(RingState::decode(document, kek)?.key_set())
}

/// Loads the ring from the replica (or bootstraps a new one), brings it up to date with `config`, stores it, and
/// starts the actor that rotates it. Call from inside an actix `System`. Fails, rather than replace the keys, when
/// the stored ring was sealed with another KEK or cannot be read.
pub async fn start_key_ring(
    replica: SharedReplica,
    clock: SharedClock,
    kek: Kek,
    config: KeyRingConfig,
) -> Result<(Addr<KeyRingActor>, KeyRingHandle), KeyRingError> {
    start_fenced_key_ring(replica, clock, kek, config, None, None).await
}

/// [`start_key_ring`] for a cluster: every write carries the key ring lease's epoch (`fence`), so a node that lost
/// the lease cannot overwrite the ring, and an existing `handle` (the one the node signs with) is kept.
pub async fn start_fenced_key_ring(
    replica: SharedReplica,
    clock: SharedClock,
    kek: Kek,
    config: KeyRingConfig,
    fence: Option<(LeaseName, Epoch)>,
    handle: Option<KeyRingHandle>,
) -> Result<(Addr<KeyRingActor>, KeyRingHandle), KeyRingError> {
    config.validate()?;
    let mut state = match replica.read_document(DOCUMENT_NAME).await? {
        Some(document) => RingState::decode(&document, &kek)?,
        None => RingState::default(),
    };
    if let Some(changed) = state.planned(&config, clock.now_ms(), false)? {
        write_ring(&replica, changed.encode(&kek)?, fence.clone()).await?;
        state = changed;
    }
    tracing::info!(generation = state.generation, keys = state.model.keys.len(), "key ring loaded");
    let handle = match handle {
        Some(handle) => {
            handle.publish_if_newer(state.key_set());
            handle
        }
        None => KeyRingHandle::new(state.key_set()),
    };
    let actor =
        KeyRingActor { replica, clock, kek, config, state, handle: handle.clone(), resync: false, dirty: false, fence };
    Ok((actor.start(), handle))
}

/// Owns the ring: plans on a timer and on demand, stores, then publishes.
pub struct KeyRingActor {
    replica: SharedReplica,
    clock: SharedClock,
    kek: Kek,
    config: KeyRingConfig,
    state: RingState,
    handle: KeyRingHandle,
    /// A write failed: it may or may not have happened, so the stored ring is read back before the next change.
    resync: bool,
    /// The stored ring is missing or older than ours: store ours even when nothing is due.
    dirty: bool,
    /// The key ring lease and its epoch, in a cluster: writes are refused once another node took the lease.
    fence: Option<(LeaseName, Epoch)>,
}

/// Stores the ring, fenced by the key ring lease when there is one.
fn write_ring(
    replica: &SharedReplica,
    document: Vec<u8>,
    fence: Option<(LeaseName, Epoch)>,
) -> crate::replica::ReplicaFuture<()> {
    match fence {
        Some((lease, epoch)) => replica.write_document_fenced(DOCUMENT_NAME, document, lease, epoch),
        None => replica.write_document(DOCUMENT_NAME, document),
    }
}

/// Stops the actor (its node lost or handed over the key ring lease).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopKeyRing;

impl Handler<StopKeyRing> for KeyRingActor {
    type Result = ();

    fn handle(&mut self, _: StopKeyRing, context: &mut Self::Context) {
        context.stop();
    }
}

impl Actor for KeyRingActor {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        context.run_interval(self.config.check_every, |_, context| context.notify(CheckRotation));
    }
}

type RingResult = Result<Vec<KeyMeta>, KeyRingError>;

/// Rotates now (`idp admin rotate-keys`): next becomes current for every algorithm, unless a next key has not been
/// published for `publish_ahead` yet ([`KeyRingError::RotationNotReady`]). Replies with the keys after rotation.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<KeyMeta>, KeyRingError>")]
pub struct RotateKeys;

/// Lists the keys of the ring.
#[derive(Debug, Message)]
#[rtype(result = "Vec<KeyMeta>")]
pub struct ListKeys;

/// The timer: applies what is due.
#[derive(Message)]
#[rtype(result = "()")]
struct CheckRotation;

impl KeyRingActor {
    /// Reads the stored ring back if a write failed, then plans, stores and publishes.
    fn run(&mut self, force: bool) -> ResponseActFuture<Self, RingResult> {
        let read_opt = self.resync.then(|| self.replica.read_document(DOCUMENT_NAME));
        let read = async move {
            match read_opt {
                Some(read) => Some(read.await),
                None => None,
            }
        };
        Box::pin(read.into_actor(self).then(move |read_opt, actor, _| {
            if let Some(Err(error)) = read_opt.map(|read| actor.adopt(read)) {
                return Box::pin(fut::ready(Err(error))) as ResponseActFuture<Self, RingResult>;
            }
            actor.change(force)
        }))
    }

    /// Takes the stored ring after a failed write, if it is at least as new as ours.
    fn adopt(&mut self, read: Result<Option<Vec<u8>>, ReplicaError>) -> Result<(), KeyRingError> {
        match read? {
            Some(document) => {
                let stored = RingState::decode(&document, &self.kek)?;
                if stored.generation >= self.state.generation {
                    self.handle.publish_if_newer(stored.key_set());
                    self.state = stored;
                } else {
                    self.dirty = true;
                }
            }
            None => self.dirty = true,
        }
        self.resync = false;
        Ok(())
    }

    fn change(&mut self, force: bool) -> ResponseActFuture<Self, RingResult> {
        let now_ms = self.clock.now_ms();
        let changed = match self.changed(now_ms, force) {
            Ok(Some(changed)) => changed,
            Ok(None) => return Box::pin(fut::ready(Ok(self.state.model.keys.clone()))),
            Err(error) => return Box::pin(fut::ready(Err(error))),
        };
        let document = match changed.encode(&self.kek) {
            Ok(document) => document,
            Err(error) => return Box::pin(fut::ready(Err(error))),
        };
        let write = write_ring(&self.replica, document, self.fence.clone());
        Box::pin(write.into_actor(self).map(move |written, actor, _| actor.commit(changed, written)))
    }

    fn changed(&self, now_ms: u64, force: bool) -> Result<Option<RingState>, KeyRingError> {
        let config = &self.config;
        if force {
            let blockers = model::rotation_blockers(&self.state.model, &config.algorithms, &config.policy, now_ms);
            if let Some((alg, retry_in_ms)) = blockers.into_iter().max_by_key(|(_, wait_ms)| *wait_ms) {
                return Err(KeyRingError::RotationNotReady { alg, retry_in_ms });
            }
        }
        match self.state.planned(config, now_ms, force)? {
            Some(changed) => Ok(Some(changed)),
            None if self.dirty => Ok(Some(RingState { generation: self.state.generation + 1, ..self.state.clone() })),
            None => Ok(None),
        }
    }

    /// Publishes a change once the replica acknowledged it; a failed write is never published.
    fn commit(&mut self, changed: RingState, written: Result<(), ReplicaError>) -> RingResult {
        if let Err(error) = written {
            tracing::error!(%error, "key ring write failed; the stored ring is read back before the next change");
            self.resync = true;
            return Err(error.into());
        }
        self.state = changed;
        self.dirty = false;
        self.handle.publish_if_newer(self.state.key_set());
        tracing::info!(generation = self.state.generation, "key ring stored and published");
        Ok(self.state.model.keys.clone())
    }
}

impl Handler<RotateKeys> for KeyRingActor {
    type Result = AtomicResponse<Self, RingResult>;

    fn handle(&mut self, _: RotateKeys, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.run(true))
    }
}

impl Handler<ListKeys> for KeyRingActor {
    type Result = MessageResult<ListKeys>;

    fn handle(&mut self, _: ListKeys, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.model.keys.clone())
    }
}

impl Handler<CheckRotation> for KeyRingActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: CheckRotation, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(Box::pin(self.run(false).map(|result, _, _| {
            if let Err(error) = result {
                tracing::warn!(%error, "scheduled key ring check failed");
            }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::replica::{Epoch, MemoryReplica, RecordWrite, ReplicaFuture};
    use futures::FutureExt;
    use idp_proto::records::RecordKey;
    use idp_proto::ShardId;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

    const HOUR: u64 = 60 * 60 * 1000;
    const POLICY: RotationPolicy =
        RotationPolicy { rotate_every_ms: 10 * HOUR, publish_ahead_ms: 2 * HOUR, retain_after_ms: 3 * HOUR };

    /// How [`FlakyReplica`] treats document writes.
    const WRITES_SUCCEED: u8 = 0;
    const WRITES_FAIL: u8 = 1;
    /// The write happens but its acknowledgement is lost.
    const WRITES_LOSE_ACK: u8 = 2;

    /// The in-memory replica, with document writes that can fail (a write that may or may not have happened).
    struct FlakyReplica {
        inner: MemoryReplica,
        mode: AtomicU8,
        /// Reads find no document (a replica that lost it).
        hide_document: AtomicBool,
    }

    impl Replica for FlakyReplica {
        fn write_records(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> ReplicaFuture<()> {
            self.inner.write_records(shard, epoch, writes)
        }

        fn read_records(&self, shard: ShardId, keys: Vec<RecordKey>) -> ReplicaFuture<Vec<Option<Vec<u8>>>> {
            self.inner.read_records(shard, keys)
        }

        fn read_document(&self, name: &str) -> ReplicaFuture<Option<Vec<u8>>> {
            if self.hide_document.load(Ordering::SeqCst) {
                return futures::future::ready(Ok(None)).boxed();
            }
            self.inner.read_document(name)
        }

        fn write_document(&self, name: &str, value: Vec<u8>) -> ReplicaFuture<()> {
            let mode = self.mode.load(Ordering::SeqCst);
            if mode == WRITES_SUCCEED {
                return self.inner.write_document(name, value);
            }
            if mode == WRITES_LOSE_ACK {
                drop(self.inner.write_document(name, value));
            }
            futures::future::ready(Err(ReplicaError::Unavailable("injected".into()))).boxed()
        }
    }

    struct Fixture {
        clock: ManualClock,
        replica: Arc<FlakyReplica>,
        kek: Kek,
    }

    impl Fixture {
        fn new() -> Self {
            let clock = ManualClock::new(1_000_000);
            let inner = MemoryReplica::new(Arc::new(clock.clone()));
            Self {
                clock,
                replica: Arc::new(FlakyReplica {
                    inner,
                    mode: AtomicU8::new(WRITES_SUCCEED),
                    hide_document: AtomicBool::new(false),
                }),
                kek: Kek::random(),
            }
        }

        async fn start(&self, algorithms: &[Algorithm]) -> Result<(Addr<KeyRingActor>, KeyRingHandle), KeyRingError> {
            self.start_with(self.kek.clone(), algorithms).await
        }

        async fn start_with(
            &self,
            kek: Kek,
            algorithms: &[Algorithm],
        ) -> Result<(Addr<KeyRingActor>, KeyRingHandle), KeyRingError> {
            let config = KeyRingConfig {
                algorithms: algorithms.to_vec(),
                policy: POLICY,
                check_every: Duration::from_secs(3600),
            };
            start_key_ring(self.replica.clone(), Arc::new(self.clock.clone()), kek, config).await
        }

        async fn must_start(&self, algorithms: &[Algorithm]) -> (Addr<KeyRingActor>, KeyRingHandle) {
            self.start(algorithms).await.unwrap()
        }

        async fn stored_document(&self) -> serde_json::Value {
            let document = self.replica.read_document(DOCUMENT_NAME).await.unwrap().unwrap();
            serde_json::from_slice(&document).unwrap()
        }

        async fn store_document(&self, document: &[u8]) {
            self.replica.write_document(DOCUMENT_NAME, document.to_vec()).await.unwrap();
        }

        fn set_writes(&self, mode: u8) {
            self.replica.mode.store(mode, Ordering::SeqCst);
        }
    }

    fn kid_of(key_set: &KeySet, alg: Algorithm) -> String {
        key_set.signer(alg).unwrap().kid.clone()
    }

    fn next_kid(keys: &[KeyMeta], alg: Algorithm) -> String {
        keys.iter().find(|key| key.alg == alg && key.state == KeyState::Next).unwrap().kid.clone()
    }

    fn sign(handle: &KeyRingHandle, alg: Algorithm) -> String {
        handle.load().signer(alg).unwrap().sign_jwt("JWT", &json!({"sub": "alice"}))
    }

    #[actix_rt::test]
    async fn bootstrap_stores_sealed_keys_and_a_restart_serves_the_same_jwks() {
        let fixture = Fixture::new();
        let (_, handle) = fixture.must_start(&Algorithm::ALL).await;
        let key_set = handle.load_full();
        assert_eq!(key_set.signing_algorithms(), Algorithm::ALL);
        let jwks: serde_json::Value = serde_json::from_slice(key_set.jwks_json()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 6, "a current and a next key per algorithm");
        assert_eq!(jwt::verifying_keys_from_jwks(&jwks).unwrap().len(), 6);
        for alg in Algorithm::ALL {
            assert!(key_set.verify(&sign(&handle, alg)).is_ok());
        }
        let document = fixture.stored_document().await;
        assert_eq!((document["v"].as_u64(), document["generation"].as_u64()), (Some(1), Some(1)));
        for (stored, meta) in document["keys"].as_array().unwrap().iter().zip(key_set.keys()) {
            assert_eq!(stored["kid"], json!(meta.kid));
            let sealed = URL_SAFE_NO_PAD.decode(stored["sealed_pkcs8"].as_str().unwrap()).unwrap();
            let plaintext = fixture.kek.open(&sealed, meta.kid.as_bytes()).unwrap();
            assert!(!document.to_string().contains(&URL_SAFE_NO_PAD.encode(&plaintext)), "never stored in plain text");
        }
        let (_, restarted) = fixture.must_start(&Algorithm::ALL).await;
        assert_eq!(restarted.load().jwks_json(), key_set.jwks_json());
        assert_eq!(restarted.load().jwks_etag(), key_set.jwks_etag());
        assert_eq!(restarted.load().generation(), 1, "nothing was due, nothing was written");
    }

    #[actix_rt::test]
    async fn a_ring_sealed_with_another_kek_is_refused_not_replaced() {
        let fixture = Fixture::new();
        fixture.must_start(&[Algorithm::EdDSA]).await;
        let before = fixture.stored_document().await;
        let refused = fixture.start_with(Kek::random(), &[Algorithm::EdDSA]).await.unwrap_err();
        assert!(matches!(refused, KeyRingError::WrongKek { .. }), "{refused}");
        assert!(refused.to_string().contains("another key-encryption key"));
        assert_eq!(fixture.stored_document().await, before);
    }

    #[actix_rt::test]
    async fn corrupt_and_future_documents_are_refused() {
        let fixture = Fixture::new();
        fixture.store_document(b"not json").await;
        assert!(matches!(fixture.start(&[Algorithm::EdDSA]).await.unwrap_err(), KeyRingError::Corrupt(_)));
        fixture.store_document(br#"{"v": 2, "keys": []}"#).await;
        let refused = fixture.start(&[Algorithm::EdDSA]).await.unwrap_err();
        assert!(matches!(refused, KeyRingError::UnsupportedVersion(2)), "{refused}");
    }

    #[actix_rt::test]
    async fn a_swapped_sealed_key_is_reported_as_corrupt() {
        let fixture = Fixture::new();
        fixture.must_start(&[Algorithm::EdDSA]).await;
        let mut document = fixture.stored_document().await;
        let first_sealed = document["keys"][0]["sealed_pkcs8"].clone();
        document["keys"][1]["sealed_pkcs8"] = first_sealed; // sealed under another kid: the aad does not match
        fixture.store_document(&serde_json::to_vec(&document).unwrap()).await;
        assert!(matches!(fixture.start(&[Algorithm::EdDSA]).await.unwrap_err(), KeyRingError::Corrupt(_)));
    }

    #[actix_rt::test]
    async fn rotate_keys_promotes_next_and_earlier_tokens_still_verify() {
        let fixture = Fixture::new();
        let (actor, handle) = fixture.must_start(&[Algorithm::RS256, Algorithm::ES256]).await;
        let before = handle.load_full();
        let expected_current = next_kid(before.keys(), Algorithm::RS256);
        let refused = actor.send(RotateKeys).await.unwrap().unwrap_err();
        assert!(matches!(refused, KeyRingError::RotationNotReady { retry_in_ms, .. } if retry_in_ms == 2 * HOUR));
        assert_eq!(handle.load().generation(), before.generation());
        fixture.clock.advance_ms(2 * HOUR);
        let tokens: Vec<String> = [Algorithm::RS256, Algorithm::ES256].map(|alg| sign(&handle, alg)).into();
        let keys = actor.send(RotateKeys).await.unwrap().unwrap();
        let after = handle.load_full();
        assert_eq!(kid_of(&after, Algorithm::RS256), expected_current);
        assert_eq!(after.generation(), before.generation() + 1);
        assert_eq!(after.keys(), keys.as_slice());
        assert_eq!(actor.send(ListKeys).await.unwrap(), keys);
        let previous = keys.iter().find(|key| key.kid == kid_of(&before, Algorithm::RS256)).unwrap();
        assert_eq!(previous.state, KeyState::Previous);
        for token in &tokens {
            assert!(after.verify(token).is_ok(), "I4: a token signed before the rotation verifies after it");
        }
        let (_, restarted) = fixture.must_start(&[Algorithm::RS256, Algorithm::ES256]).await;
        assert_eq!(restarted.load().jwks_json(), after.jwks_json());
    }

    #[actix_rt::test]
    async fn dropped_keys_leave_the_jwks_and_their_tokens_fail() {
        let fixture = Fixture::new();
        let (actor, handle) = fixture.must_start(&[Algorithm::ES256]).await;
        fixture.clock.advance_ms(2 * HOUR);
        let token = sign(&handle, Algorithm::ES256);
        let old_kid = kid_of(&handle.load(), Algorithm::ES256);
        actor.send(RotateKeys).await.unwrap().unwrap();
        fixture.clock.advance_ms(3 * HOUR - 1);
        actor.send(CheckRotation).await.unwrap();
        assert!(handle.load().verify(&token).is_ok(), "K3: kept for retain_after");
        fixture.clock.advance_ms(1);
        actor.send(CheckRotation).await.unwrap();
        let key_set = handle.load_full();
        assert!(key_set.keys().iter().all(|key| key.kid != old_kid));
        assert!(!String::from_utf8_lossy(key_set.jwks_json()).contains(&old_kid));
        assert_eq!(key_set.verify(&token).unwrap_err(), JwtError::UnknownKey);
    }

    #[actix_rt::test]
    async fn the_timer_rotates_after_rotate_every() {
        let fixture = Fixture::new();
        let (actor, handle) = fixture.must_start(&[Algorithm::EdDSA]).await;
        let expected_current = next_kid(handle.load().keys(), Algorithm::EdDSA);
        fixture.clock.advance_ms(10 * HOUR - 1);
        actor.send(CheckRotation).await.unwrap();
        assert_eq!(handle.load().generation(), 1);
        fixture.clock.advance_ms(1);
        actor.send(CheckRotation).await.unwrap();
        assert_eq!(kid_of(&handle.load(), Algorithm::EdDSA), expected_current);
    }

    #[actix_rt::test]
    async fn a_failed_write_is_never_published_and_the_stored_ring_is_read_back() {
        let fixture = Fixture::new();
        let (actor, handle) = fixture.must_start(&[Algorithm::EdDSA]).await;
        let before = handle.load_full();
        fixture.clock.advance_ms(2 * HOUR);
        fixture.set_writes(WRITES_FAIL);
        assert!(matches!(actor.send(RotateKeys).await.unwrap(), Err(KeyRingError::Replica(_))));
        fixture.set_writes(WRITES_LOSE_ACK);
        assert!(matches!(actor.send(RotateKeys).await.unwrap(), Err(KeyRingError::Replica(_))));
        let unpublished = handle.load_full();
        assert_eq!(unpublished.generation(), before.generation(), "a key is never used before it is stored");
        assert_eq!(kid_of(&unpublished, Algorithm::EdDSA), kid_of(&before, Algorithm::EdDSA));
        fixture.set_writes(WRITES_SUCCEED);
        actor.send(CheckRotation).await.unwrap();
        let adopted = handle.load_full();
        assert_eq!(adopted.generation(), before.generation() + 1, "the write that lost its ack is adopted");
        assert_eq!(kid_of(&adopted, Algorithm::EdDSA), next_kid(before.keys(), Algorithm::EdDSA));
        let (_, restarted) = fixture.must_start(&[Algorithm::EdDSA]).await;
        assert_eq!(restarted.load().jwks_json(), adopted.jwks_json());
    }

    #[actix_rt::test]
    async fn a_ring_missing_from_the_replica_after_a_failed_write_is_stored_again() {
        let fixture = Fixture::new();
        let (actor, handle) = fixture.must_start(&[Algorithm::EdDSA]).await;
        let before = handle.load_full();
        fixture.clock.advance_ms(2 * HOUR);
        fixture.set_writes(WRITES_FAIL);
        assert!(actor.send(RotateKeys).await.unwrap().is_err());
        fixture.set_writes(WRITES_SUCCEED);
        fixture.replica.hide_document.store(true, Ordering::SeqCst); // the replica lost it
        actor.send(CheckRotation).await.unwrap();
        fixture.replica.hide_document.store(false, Ordering::SeqCst);
        let stored = fixture.stored_document().await;
        assert_eq!(stored["generation"], json!(2), "stored again although nothing was due");
        assert_eq!(handle.load().keys(), before.keys());
        assert_eq!(handle.load().generation(), 2);
    }

    #[actix_rt::test]
    async fn a_newly_configured_algorithm_is_bootstrapped_on_restart() {
        let fixture = Fixture::new();
        let (_, handle) = fixture.must_start(&[Algorithm::RS256]).await;
        let token = sign(&handle, Algorithm::RS256);
        let (_, restarted) = fixture.must_start(&[Algorithm::RS256, Algorithm::EdDSA]).await;
        let key_set = restarted.load_full();
        assert_eq!(key_set.signing_algorithms(), [Algorithm::RS256, Algorithm::EdDSA]);
        assert_eq!(kid_of(&key_set, Algorithm::RS256), kid_of(&handle.load(), Algorithm::RS256));
        assert!(key_set.verify(&token).is_ok());
    }

    #[actix_rt::test]
    async fn followers_load_the_stored_ring_and_publish_only_newer_sets() {
        let fixture = Fixture::new();
        assert!(load_key_set(fixture.replica.as_ref(), &fixture.kek).await.unwrap().is_none());
        let (actor, handle) = fixture.must_start(&[Algorithm::ES256]).await;
        let follower = KeyRingHandle::new(load_key_set(fixture.replica.as_ref(), &fixture.kek).await.unwrap().unwrap());
        assert_eq!(follower.load().jwks_json(), handle.load().jwks_json());
        fixture.clock.advance_ms(2 * HOUR);
        actor.send(RotateKeys).await.unwrap().unwrap();
        let stale = load_key_set(fixture.replica.as_ref(), &fixture.kek).await.unwrap().unwrap();
        assert!(follower.publish_if_newer(stale));
        assert_eq!(follower.load().jwks_json(), handle.load().jwks_json());
        let same = load_key_set(fixture.replica.as_ref(), &fixture.kek).await.unwrap().unwrap();
        assert!(!follower.publish_if_newer(same));
    }

    #[test]
    fn configuration_is_validated() {
        let valid = KeyRingConfig::default();
        assert!(valid.validate().is_ok());
        let no_algorithms = KeyRingConfig { algorithms: vec![], ..KeyRingConfig::default() };
        assert!(matches!(no_algorithms.validate(), Err(KeyRingError::Config(_))));
        let no_interval = KeyRingConfig { check_every: Duration::ZERO, ..KeyRingConfig::default() };
        assert!(no_interval.validate().is_err());
        let policy = RotationPolicy { rotate_every_ms: 0, ..RotationPolicy::default() };
        assert!(KeyRingConfig { policy, ..KeyRingConfig::default() }.validate().is_err());
    }
}
