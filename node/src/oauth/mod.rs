//! The OpenID Connect and OAuth 2.0 endpoints. Handlers are thin: parse, call the shard actors, render.

pub mod authorize;
pub mod browser;
pub mod client_auth;
pub mod discovery;
pub mod errors;
pub mod flow;
pub mod login;
pub mod logout;
pub mod mint;
pub mod observe;
pub mod params;
pub mod respond;
pub mod token;
pub mod token_info;

use crate::state::AppState;
use idp_proto::{shard_for_key, RecordId, ShardId};

/// Scopes every client may ask for unless its registration narrows them.
pub const SUPPORTED_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The record id of a user's consent to a client.
pub fn consent_record_id(state: &AppState, user_id: &str, client_id: &str) -> RecordId {
    flow::keyed_id(state, "consent", &[user_id, client_id])
}

/// The record id of a username's failed-login counter (existing user or not, case-insensitive).
pub fn throttle_record_id(state: &AppState, username: &str) -> RecordId {
    flow::keyed_id(state, "throttle", &[&username.to_lowercase()])
}

/// The shard of a record addressed by a keyed id.
pub fn record_shard(state: &AppState, id: &RecordId) -> ShardId {
    shard_for_key(&id.0, state.shard_count())
}
