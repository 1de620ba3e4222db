//! The per-user session index of the node: where a user's index lives (a keyed hash of the user id, so its shard
//! and id cannot be computed from outside), indexing at login, and listing and ending a user's sessions for the
//! admin API. The index's rules and why it stays a superset of the user's sessions across failover are in
//! [`idp_actors::shard::user_sessions`].

use crate::oauth::flow::keyed_id;
use crate::oauth::record_shard;
use crate::state::AppState;
use idp_actors::shard::model::{EndSession, GetSession, ShardError};
use idp_actors::shard::user_sessions::{ForgetUserSessions, GetUserSessions, IndexUserSessions};
use idp_proto::records::{IndexedSession, Session};
use idp_proto::{Handle, RecordId, ShardId};

fn index_id(state: &AppState, user_id: &str) -> RecordId {
    keyed_id(state, "user-sessions", &[user_id])
}

/// Indexes sessions of `user_id` in `shard` that a login is about to create or extend (call before creating them).
pub async fn index_sessions(
    state: &AppState,
    user_id: &str,
    shard: ShardId,
    sessions: &[RecordId],
    expires_at_ms: u64,
) -> Result<(), ShardError> {
    let index = index_id(state, user_id);
    let sessions = sessions.iter().map(|id| IndexedSession { shard: shard.0, id: *id, expires_at_ms }).collect();
    state.shards.execute(record_shard(state, &index), IndexUserSessions { index, sessions }).await
}

/// The live sessions of `user_id`: each indexed session read from its shard, kept when it is the user's.
pub async fn list_sessions(state: &AppState, user_id: &str) -> Result<Vec<(Handle, Session)>, ShardError> {
    let index = index_id(state, user_id);
    let entries = state.shards.execute(record_shard(state, &index), GetUserSessions { index }).await?;
    let reads = entries.iter().map(|entry| state.shards.execute(ShardId(entry.shard), GetSession { id: entry.id }));
    let mut sessions = Vec::new();
    for (entry, read) in entries.iter().zip(futures::future::join_all(reads).await) {
        match read {
            Ok(session) if session.authentication.user_id == user_id => {
                sessions.push((Handle { shard: ShardId(entry.shard), id: entry.id }, session));
            }
            Ok(_) | Err(ShardError::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(sessions)
}

/// What ending sessions did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ended {
    pub sessions: usize,
    pub grants: usize,
}

/// Ends the user's sessions (all, or the one whose `sid` is given), revoking every grant issued in them (their
/// access and refresh tokens stop working), then forgets them in the index.
pub async fn end_sessions(state: &AppState, user_id: &str, sid: Option<&str>) -> Result<Ended, ShardError> {
    let sessions = list_sessions(state, user_id).await?;
    let chosen: Vec<&(Handle, Session)> =
        sessions.iter().filter(|(_, session)| sid.is_none_or(|sid| session.sid == sid)).collect();
    let mut ended = Ended::default();
    for (handle, _) in &chosen {
        ended.grants +=
            state.shards.execute(handle.shard, EndSession { session: handle.id, keep_offline: false }).await?;
        ended.sessions += 1;
    }
    if !chosen.is_empty() {
        let index = index_id(state, user_id);
        let forget = chosen.iter().map(|(handle, _)| (handle.shard.0, handle.id)).collect();
        state.shards.execute(record_shard(state, &index), ForgetUserSessions { index, sessions: forget }).await?;
    }
    Ok(ended)
}
