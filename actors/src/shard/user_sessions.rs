//! The per-user session index: which sessions (handles) a user may have, so that an operator can list and end them
//! (sessions are sharded records addressed by handle, with no lookup by user).
//!
//! # Consistency
//! The index of a user is one record ([`UserSessions`]) in the shard of a keyed hash of the user id, written like
//! any record (fenced by the shard's epoch, acknowledged by Redis before the reply). The login flow indexes a
//! session **before** the operation that creates it, so whatever node dies in between, the index is a superset of
//! the user's sessions: it may name a session that was never created, or one a browser then bound to another user;
//! readers fetch each session and keep those of the user. A failover moves the index like any record (the new owner
//! reads it from Redis), so nothing a failover does can hide a session from a revocation.
//!
//! The index holds at most [`MAX_INDEXED_SESSIONS`] live entries: beyond it, those that expire first are dropped
//! (a user with more live sessions than that is not a browser user; the limit bounds the record's size).

use super::model::{Decision, ShardOp, ShardState};
use idp_proto::records::{IndexedSession, Record, RecordKey, RecordKind, UserSessions};
use idp_proto::RecordId;
use serde::{Deserialize, Serialize};

/// Live entries an index keeps at most.
pub const MAX_INDEXED_SESSIONS: usize = 256;

fn index_key(id: RecordId) -> RecordKey {
    RecordKey::new(RecordKind::UserSessions, id)
}

fn index_of(state: &ShardState, id: RecordId, now_ms: u64) -> UserSessions {
    match state.get(&index_key(id), now_ms) {
        Some(Record::UserSessions(index)) => index.clone(),
        _ => UserSessions::default(),
    }
}

/// The index with `entries` added (or their expiry raised), expired entries pruned, and at most
/// [`MAX_INDEXED_SESSIONS`] kept (the latest-expiring ones). Pure.
pub fn with_sessions(mut index: UserSessions, entries: &[IndexedSession], now_ms: u64) -> UserSessions {
    for entry in entries {
        match index.sessions.iter_mut().find(|known| known.shard == entry.shard && known.id == entry.id) {
            Some(known) => known.expires_at_ms = known.expires_at_ms.max(entry.expires_at_ms),
            None => index.sessions.push(*entry),
        }
    }
    index.sessions.retain(|entry| entry.expires_at_ms > now_ms);
    if index.sessions.len() > MAX_INDEXED_SESSIONS {
        index.sessions.sort_by_key(|entry| std::cmp::Reverse(entry.expires_at_ms));
        index.sessions.truncate(MAX_INDEXED_SESSIONS);
    }
    index.expires_at_ms = index.sessions.iter().map(|entry| entry.expires_at_ms).max().unwrap_or(0);
    index
}

/// The write of an index: the record, or its deletion when nothing live is left.
fn write_of(id: RecordId, index: UserSessions, now_ms: u64) -> (RecordKey, Option<Record>) {
    let record = (index.expires_at_ms > now_ms).then_some(Record::UserSessions(index));
    (index_key(id), record)
}

/// Adds sessions to a user's index (before they are created; see the module documentation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexUserSessions {
    pub index: RecordId,
    pub sessions: Vec<IndexedSession>,
}

impl ShardOp for IndexUserSessions {
    type Output = ();

    fn keys(&self) -> Vec<RecordKey> {
        vec![index_key(self.index)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<()> {
        let before = index_of(state, self.index, now_ms);
        let after = with_sessions(before.clone(), &self.sessions, now_ms);
        if after == before {
            return Decision { writes: Vec::new(), reply: Ok(()) };
        }
        Decision { writes: vec![write_of(self.index, after, now_ms)], reply: Ok(()) }
    }
}

/// The live entries of a user's index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetUserSessions {
    pub index: RecordId,
}

impl ShardOp for GetUserSessions {
    type Output = Vec<IndexedSession>;

    fn keys(&self) -> Vec<RecordKey> {
        vec![index_key(self.index)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Vec<IndexedSession>> {
        let index = with_sessions(index_of(state, self.index, now_ms), &[], now_ms);
        Decision { writes: Vec::new(), reply: Ok(index.sessions) }
    }
}

/// Removes entries from a user's index (after their sessions ended).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForgetUserSessions {
    pub index: RecordId,
    /// (shard, id) of the sessions to forget.
    pub sessions: Vec<(u16, RecordId)>,
}

impl ShardOp for ForgetUserSessions {
    type Output = usize;

    fn keys(&self) -> Vec<RecordKey> {
        vec![index_key(self.index)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<usize> {
        let before = index_of(state, self.index, now_ms);
        let mut after = before.clone();
        after.sessions.retain(|entry| !self.sessions.contains(&(entry.shard, entry.id)));
        let forgotten = before.sessions.len() - after.sessions.len();
        if forgotten == 0 {
            return Decision { writes: Vec::new(), reply: Ok(0) };
        }
        let after = with_sessions(after, &[], now_ms);
        Decision { writes: vec![write_of(self.index, after, now_ms)], reply: Ok(forgotten) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(shard: u16, byte: u8, expires_at_ms: u64) -> IndexedSession {
        IndexedSession { shard, id: RecordId([byte; 32]), expires_at_ms }
    }

    fn state_with(id: RecordId, index: UserSessions) -> ShardState {
        let mut state = ShardState::default();
        state.apply(&[(index_key(id), Some(Record::UserSessions(index)))]);
        state
    }

    #[test]
    fn entries_are_added_once_raised_pruned_and_capped() {
        let index = with_sessions(UserSessions::default(), &[entry(1, 1, 100), entry(2, 2, 50)], 10);
        assert_eq!((index.sessions.len(), index.expires_at_ms), (2, 100));
        let index = with_sessions(index, &[entry(1, 1, 70), entry(1, 1, 300)], 10);
        assert_eq!(index.sessions, vec![entry(1, 1, 300), entry(2, 2, 50)], "one entry per session, latest expiry");
        let index = with_sessions(index, &[], 60);
        assert_eq!((index.sessions.clone(), index.expires_at_ms), (vec![entry(1, 1, 300)], 300), "expired pruned");
        // Same id in another shard is another session.
        assert_eq!(with_sessions(index, &[entry(9, 1, 300)], 60).sessions.len(), 2);
        let many: Vec<IndexedSession> =
            (0..=MAX_INDEXED_SESSIONS as u16).map(|n| entry(n, 0, 1_000 + u64::from(n))).collect();
        let capped = with_sessions(UserSessions::default(), &many, 0);
        assert_eq!(capped.sessions.len(), MAX_INDEXED_SESSIONS);
        assert!(!capped.sessions.contains(&entry(0, 0, 1_000)), "the first to expire is dropped");
    }

    #[test]
    fn ops_index_list_and_forget() {
        let id = RecordId([7; 32]);
        let decision =
            IndexUserSessions { index: id, sessions: vec![entry(3, 1, 500)] }.decide(&ShardState::default(), 0);
        assert_eq!(decision.writes.len(), 1);
        let mut state = ShardState::default();
        state.apply(&decision.writes);
        let listed = GetUserSessions { index: id }.decide(&state, 0).reply.unwrap();
        assert_eq!(listed, vec![entry(3, 1, 500)]);
        let again = IndexUserSessions { index: id, sessions: vec![entry(3, 1, 400)] }.decide(&state, 0);
        assert!(again.writes.is_empty(), "nothing new: no write");
        let state = state_with(id, with_sessions(UserSessions::default(), &[entry(3, 1, 500), entry(4, 2, 600)], 0));
        let forget = ForgetUserSessions { index: id, sessions: vec![(3, RecordId([1; 32]))] }.decide(&state, 0);
        assert_eq!(forget.reply.unwrap(), 1);
        match &forget.writes[..] {
            [(_, Some(Record::UserSessions(index)))] => assert_eq!(index.sessions, vec![entry(4, 2, 600)]),
            other => panic!("unexpected writes {other:?}"),
        }
        let last = ForgetUserSessions { index: id, sessions: vec![(3, RecordId([1; 32])), (4, RecordId([2; 32]))] };
        let last = last.decide(&state, 0);
        assert_eq!((last.reply.unwrap(), last.writes[0].1.is_none()), (2, true), "an empty index is deleted");
        assert!(GetUserSessions { index: id }.decide(&state, 700).reply.unwrap().is_empty(), "expired");
    }
}
