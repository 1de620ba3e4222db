//! Everything a request handler needs, built once at start and shared by every HTTP worker.

use crate::config::Config;
use crate::directory::Directory;
use crate::oauth::browser::BrowserBinding;
use crate::pages::Pages;
use crate::password::PasswordVerifier;
use actix::Addr;
use arc_swap::ArcSwap;
use idp_actors::clock::SharedClock;
use idp_actors::keyring::{KeyRingActor, KeyRingHandle};
use idp_actors::shards::LocalShards;
use std::sync::Arc;

pub struct AppState {
    pub config: Arc<Config>,
    /// The issuer without a trailing slash; every endpoint URL starts with it.
    pub issuer: String,
    pub directory: ArcSwap<Directory>,
    pub shards: Arc<LocalShards>,
    pub keys: KeyRingHandle,
    pub key_ring: Addr<KeyRingActor>,
    pub pages: Arc<Pages>,
    pub passwords: PasswordVerifier,
    pub browser: BrowserBinding,
    pub clock: SharedClock,
    /// Pre-serialized discovery document (served at the rate of a static route).
    pub discovery_json: actix_web::web::Bytes,
    /// Key for throttling and consent record ids (so they cannot be computed from outside).
    pub record_key: aws_lc_rs::hmac::Key,
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
