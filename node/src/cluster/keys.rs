//! The key ring in a cluster: one node at a time runs the `KeyRingActor` (the holder of the `keyring` lease, which
//! rendezvous hashing assigns like a shard), and every node reloads the stored ring and signs with its `current`
//! key. The owner's writes carry the lease epoch, so a node that lost the lease cannot overwrite the ring.
//!
//! A ring is published in the JWKS by the owner, stored, and only then loaded by the others (within
//! [`DUTY_EVERY`]); `next` keys are published `keys.publish_ahead` before they sign, which is far longer, so every
//! token verifies against every node's JWKS during a rotation (invariant I4).
//!
//! `idp admin rotate-keys` asks for a rotation through two documents: it writes a request with a fresh id, the
//! owner rotates and writes the result with the same id.

use super::manager::LeaseTimings;
use super::membership::Membership;
use super::ownership::singleton_owner;
use crate::config::Config;
use actix::Addr;
use anyhow::Context;
use idp_actors::clock::SharedClock;
use idp_actors::keyring::kek::Kek;
use idp_actors::keyring::{
    decode_key_set, load_key_set, start_fenced_key_ring, KeyRingActor, KeyRingConfig, KeyRingError, KeyRingHandle,
    RotateKeys, StopKeyRing, DOCUMENT_NAME,
};
use idp_actors::replica::{Acquired, Epoch, LeaseName, Leases, ReplicaError, SharedReplica};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The key ring's lease.
pub const KEY_RING_LEASE: &str = "keyring";
/// How often every node reloads the stored ring, and the owner checks its lease and rotation requests.
pub const DUTY_EVERY: Duration = Duration::from_millis(500);
/// Longest wait at start for a stored ring (another node is creating it).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Documents of `idp admin rotate-keys`.
pub const ROTATE_REQUEST: &str = "keyring:rotate-request";
pub const ROTATE_RESULT: &str = "keyring:rotate-result";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateRequest {
    pub id: String,
    pub requested_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateResult {
    pub id: String,
    pub ok: bool,
    /// Why the rotation was refused (e.g. `next` not published long enough).
    pub error: Option<String>,
    /// Key ids and states after the rotation.
    pub keys: Vec<String>,
}

/// The running key ring actor of the lease holder.
struct Duty {
    actor: Addr<KeyRingActor>,
    epoch: Epoch,
    valid_until: Instant,
}

pub struct ClusterKeyRing {
    me: String,
    handle: KeyRingHandle,
    replica: SharedReplica,
    leases: Arc<dyn Leases>,
    membership: Arc<Membership>,
    clock: SharedClock,
    kek: Kek,
    config: KeyRingConfig,
    lease_ttl: Duration,
    lease_renew_every: Duration,
    duty: tokio::sync::Mutex<Option<Duty>>,
    stepping_down: AtomicBool,
    stop: Notify,
    /// The ring document last published, to skip decoding an unchanged one.
    last_document: parking_lot::Mutex<Vec<u8>>,
}

impl ClusterKeyRing {
    /// Loads the stored ring (creating it if this node is the first to take the lease), then keeps it current.
    pub async fn start(
        config: &Config,
        replica: SharedReplica,
        leases: Arc<dyn Leases>,
        membership: Arc<Membership>,
        clock: SharedClock,
        kek: Kek,
    ) -> anyhow::Result<Arc<Self>> {
        let key_config = crate::server::key_ring_config(config);
        let me = membership.node_id().to_string();
        let lease_ttl = config.cluster.lease_ttl;
        let deadline = Instant::now() + START_TIMEOUT;
        let (handle, duty) = loop {
            if let Some(key_set) = load_key_set(&*replica, &kek).await? {
                break (KeyRingHandle::new(key_set), None);
            }
            let live = membership.view().live_ids();
            let sent_at = Instant::now();
            let takeover =
                LeaseTimings { ttl: lease_ttl, renew_every: config.cluster.lease_renew_every, slowed_takeover: None }
                    .takeover();
            let acquired = leases.acquire_with(vec![lease()], &me, live, takeover).await?;
            if let Some(Acquired::Granted { epoch }) = acquired.into_iter().next() {
                let fence = Some((lease(), epoch));
                let started =
                    start_fenced_key_ring(replica.clone(), clock.clone(), kek.clone(), key_config.clone(), fence, None)
                        .await;
                match started {
                    Ok((actor, handle)) => {
                        break (handle, Some(Duty { actor, epoch, valid_until: sent_at + lease_ttl }));
                    }
                    // Another node took the lease meanwhile (and may have stored its ring): start over.
                    Err(KeyRingError::Replica(ReplicaError::Fenced { .. })) => continue,
                    Err(error) => return Err(error).context("creating the key ring"),
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no key ring stored and its lease stays held by another node");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let ring = Arc::new(Self {
            me,
            handle,
            replica,
            leases,
            membership,
            clock,
            kek,
            config: key_config,
            lease_ttl,
            lease_renew_every: config.cluster.lease_renew_every,
            duty: tokio::sync::Mutex::new(duty),
            stepping_down: AtomicBool::new(false),
            stop: Notify::new(),
            last_document: parking_lot::Mutex::new(Vec::new()),
        });
        let worker = ring.clone();
        // On the System's thread: taking the lease starts an actor there.
        actix::spawn(async move {
            loop {
                tokio::select! {
                    _ = worker.stop.notified() => break,
                    _ = tokio::time::sleep(DUTY_EVERY) => worker.round().await,
                }
            }
        });
        Ok(ring)
    }

    pub fn handle(&self) -> KeyRingHandle {
        self.handle.clone()
    }

    pub fn is_loaded(&self) -> bool {
        !self.handle.load().keys().is_empty()
    }

    /// Drain: stop rotating and release the lease so the next owner takes it at once.
    pub async fn step_down(&self) {
        self.stepping_down.store(true, Ordering::SeqCst);
        self.resign().await;
    }

    pub fn shutdown(&self) {
        self.stop.notify_one();
    }

    async fn round(&self) {
        let view = self.membership.view();
        let ready = view.ready_ids();
        let mine = singleton_owner(KEY_RING_LEASE, &ready) == Some(self.me.as_str())
            && !self.stepping_down.load(Ordering::SeqCst);
        if mine {
            self.hold(view.live_ids()).await;
            self.serve_rotation_request().await;
        } else {
            self.resign().await;
        }
        self.reload().await;
    }

    /// Publishes the stored ring when its document changed since the last reload: unsealing and parsing the keys
    /// is skipped when the bytes are the same (every node reads the document every round).
    async fn reload(&self) {
        let document = match self.replica.read_document(DOCUMENT_NAME).await {
            Ok(Some(document)) => document,
            Ok(None) => return tracing::warn!("no key ring stored"),
            Err(error) => return tracing::warn!(%error, "reloading the key ring failed"),
        };
        let mut last = self.last_document.lock();
        if *last == document {
            return;
        }
        match decode_key_set(&document, &self.kek) {
            Ok(key_set) => {
                if self.handle.publish_if_newer(key_set) {
                    tracing::info!(generation = self.handle.load().generation(), "key ring reloaded");
                }
                *last = document;
            }
            Err(error) => tracing::warn!(%error, "reloading the key ring failed"),
        }
    }

    /// Takes or renews the lease, and runs the actor while it is held.
    async fn hold(&self, live: Vec<String>) {
        let mut duty = self.duty.lock().await;
        let ttl_ms = self.lease_ttl.as_millis() as u64;
        let sent_at = Instant::now();
        if let Some(current) = duty.as_mut() {
            if current.valid_until > sent_at + self.lease_ttl - self.lease_renew_every {
                return;
            }
            match self.leases.renew(vec![(lease(), current.epoch)], &self.me, ttl_ms).await {
                Ok(ours) if ours.first() == Some(&true) => current.valid_until = sent_at + self.lease_ttl,
                Ok(_) => {
                    tracing::warn!("key ring lease lost");
                    if let Some(lost) = duty.take() {
                        lost.actor.do_send(StopKeyRing);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "renewing the key ring lease failed");
                    if current.valid_until <= Instant::now() + self.lease_renew_every {
                        if let Some(lost) = duty.take() {
                            lost.actor.do_send(StopKeyRing);
                        }
                    }
                }
            }
            return;
        }
        let takeover =
            LeaseTimings { ttl: self.lease_ttl, renew_every: self.lease_renew_every, slowed_takeover: None }.takeover();
        let acquired = match self.leases.acquire_with(vec![lease()], &self.me, live, takeover).await {
            Ok(acquired) => acquired,
            Err(error) => return tracing::warn!(%error, "taking the key ring lease failed"),
        };
        let Some(Acquired::Granted { epoch }) = acquired.into_iter().next() else {
            return;
        };
        let fence = Some((lease(), epoch));
        let started = start_fenced_key_ring(
            self.replica.clone(),
            self.clock.clone(),
            self.kek.clone(),
            self.config.clone(),
            fence,
            Some(self.handle.clone()),
        )
        .await;
        match started {
            Ok((actor, _)) => {
                tracing::info!(epoch, "key ring owner");
                *duty = Some(Duty { actor, epoch, valid_until: sent_at + self.lease_ttl });
            }
            Err(error) => {
                tracing::error!(%error, "starting the key ring failed");
                let _ = self.leases.release(vec![(lease(), epoch)], &self.me).await;
            }
        }
    }

    async fn resign(&self) {
        let Some(duty) = self.duty.lock().await.take() else {
            return;
        };
        duty.actor.do_send(StopKeyRing);
        if let Err(error) = self.leases.release(vec![(lease(), duty.epoch)], &self.me).await {
            tracing::warn!(%error, "releasing the key ring lease failed");
        }
        tracing::info!("key ring handed over");
    }

    /// Rotates when `idp admin rotate-keys` left a request that has no result yet.
    async fn serve_rotation_request(&self) {
        let actor = match self.duty.lock().await.as_ref() {
            Some(duty) => duty.actor.clone(),
            None => return,
        };
        let Some(request) = read_json::<RotateRequest>(&self.replica, ROTATE_REQUEST).await else {
            return;
        };
        let answered = read_json::<RotateResult>(&self.replica, ROTATE_RESULT).await;
        if answered.is_some_and(|result| result.id == request.id) {
            return;
        }
        let result = match actor.send(RotateKeys).await {
            Ok(Ok(keys)) => RotateResult {
                id: request.id,
                ok: true,
                error: None,
                keys: keys.iter().map(|key| format!("{} {:?} {}", key.kid, key.state, key.alg.as_str())).collect(),
            },
            Ok(Err(error)) => RotateResult { id: request.id, ok: false, error: Some(error.to_string()), keys: vec![] },
            Err(error) => RotateResult { id: request.id, ok: false, error: Some(error.to_string()), keys: vec![] },
        };
        tracing::info!(ok = result.ok, "key rotation requested by an operator");
        let document = serde_json::to_vec(&result).expect("results serialize");
        if let Err(error) = self.replica.write_document(ROTATE_RESULT, document).await {
            tracing::warn!(%error, "storing the rotation result failed");
        }
    }
}

fn lease() -> LeaseName {
    LeaseName::Singleton(KEY_RING_LEASE)
}

async fn read_json<T: serde::de::DeserializeOwned>(replica: &SharedReplica, name: &str) -> Option<T> {
    let bytes = replica.read_document(name).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}
