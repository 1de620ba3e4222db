//! Everything a request handler needs, built once at start and shared by every HTTP worker.

use crate::audit::Audit;
use crate::cluster::router::ShardRouter;
use crate::config::Config;
use crate::directory::Directory;
use crate::oauth::browser::BrowserBinding;
use crate::pages::Pages;
use crate::password::PasswordVerifier;
use actix::Addr;
use arc_swap::ArcSwap;
use idp_actors::clock::SharedClock;
use idp_actors::keyring::{KeyRingActor, KeyRingHandle};
use std::sync::Arc;

pub struct AppState {
    pub config: Arc<Config>,
    /// The issuer without a trailing slash; every endpoint URL starts with it.
    pub issuer: String,
    /// Clients and users; in a cluster, swapped when another node changes them.
    pub directory: Arc<ArcSwap<Directory>>,
    /// Where the directory is stored (the replica: Redis in a cluster, memory in the embedded node); the admin API
    /// and dynamic registration change it here.
    pub directory_store: Arc<crate::directory::store::DirectoryStore>,
    /// Runs shard operations here or on the shard's owner.
    pub shards: Arc<ShardRouter>,
    /// The signing keys (the key ring's `current`, `next` and `previous`).
    pub keys: KeyRingHandle,
    /// The key ring actor when this node runs it for good (the embedded node); a cluster node's ring moves.
    pub key_ring: Option<Addr<KeyRingActor>>,
    pub pages: Arc<Pages>,
    pub passwords: PasswordVerifier,
    pub browser: BrowserBinding,
    pub clock: SharedClock,
    /// Pre-serialized discovery document (served at the rate of a static route).
    pub discovery_json: actix_web::web::Bytes,
    /// Key for throttling and consent record ids (so they cannot be computed from outside).
    pub record_key: aws_lc_rs::hmac::Key,
    /// Audit events (`audit.*`): `state.audit.emit(AuditEvent::...)` never blocks.
    pub audit: Audit,
    /// The upstream providers users may sign in through.
    pub federation: Arc<crate::federation::Federation>,
}

impl AppState {
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    pub fn shard_count(&self) -> u16 {
        self.shards.shard_count()
    }

    pub fn directory(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.directory.load()
    }
}
