//! What the shard manager should do, as a pure function of what it hosts, what it should own, and the time.
//!
//! The manager's loop feeds it the membership view and its lease bookkeeping; everything it decides (which
//! leases to take, which shards to hand over, which to drop because their lease could not be renewed in time)
//! is decided here and tested here.

use idp_proto::ShardId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The changes a manager makes in one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shards this node should own but does not host: take their leases.
    pub acquire: Vec<ShardId>,
    /// Shards this node hosts but no longer owns (another member joined, or this node drains): retire their
    /// actors, then release their leases so the new owner takes them at once.
    pub release: Vec<ShardId>,
    /// Shards whose lease may have expired before it was renewed: stop serving them at once, without releasing
    /// (another node may hold the lease already).
    pub drop: Vec<ShardId>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.acquire.is_empty() && self.release.is_empty() && self.drop.is_empty()
    }
}

/// Until when each hosted shard's lease is known to be ours.
#[derive(Clone, Debug, Default)]
pub struct LeaseBook {
    valid_until: BTreeMap<ShardId, Instant>,
}

impl LeaseBook {
    /// A lease taken or renewed by a request sent at `sent_at`: it is ours alone until `sent_at + held_for` at least
    /// (the takeover silence, or the lease's time to live if shorter).
    pub fn confirm(&mut self, shard: ShardId, sent_at: Instant, held_for: Duration) {
        self.valid_until.insert(shard, sent_at + held_for);
    }

    pub fn forget(&mut self, shard: ShardId) {
        self.valid_until.remove(&shard);
    }

    pub fn contains(&self, shard: ShardId) -> bool {
        self.valid_until.contains_key(&shard)
    }

    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.valid_until.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.valid_until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.valid_until.is_empty()
    }
}

/// One round's decision.
///
/// `desired` is what rendezvous hashing gives this node over the ready members (empty while the node is not a
/// ready member, e.g. draining). A shard is dropped when less than `margin` remains of its lease: the node stops
/// serving reads from memory before another node may legitimately take the shard (writes are fenced anyway).
pub fn plan(desired: &BTreeSet<ShardId>, hosted: &LeaseBook, now: Instant, margin: Duration) -> Plan {
    let drop: Vec<ShardId> =
        hosted.valid_until.iter().filter(|(_, until)| now + margin >= **until).map(|(shard, _)| *shard).collect();
    let release = hosted.shards().filter(|shard| !desired.contains(shard) && !drop.contains(shard)).collect();
    let acquire = desired.iter().filter(|shard| !hosted.contains(**shard)).copied().collect();
    Plan { acquire, release, drop }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);
    const MARGIN: Duration = Duration::from_secs(1);

    fn shards(ids: &[u16]) -> BTreeSet<ShardId> {
        ids.iter().map(|id| ShardId(*id)).collect()
    }

    fn book(now: Instant, ids: &[u16]) -> LeaseBook {
        let mut book = LeaseBook::default();
        for id in ids {
            book.confirm(ShardId(*id), now, TTL);
        }
        book
    }

    #[test]
    fn a_new_node_acquires_what_it_owns() {
        let now = Instant::now();
        let plan = plan(&shards(&[1, 2, 3]), &LeaseBook::default(), now, MARGIN);
        assert_eq!(plan, Plan { acquire: vec![ShardId(1), ShardId(2), ShardId(3)], ..Plan::default() });
    }

    #[test]
    fn a_stable_node_does_nothing() {
        let now = Instant::now();
        assert!(plan(&shards(&[1, 2]), &book(now, &[1, 2]), now, MARGIN).is_empty());
    }

    #[test]
    fn shards_that_moved_away_are_released_and_new_ones_acquired() {
        let now = Instant::now();
        let plan = plan(&shards(&[2, 3]), &book(now, &[1, 2]), now, MARGIN);
        assert_eq!(plan, Plan { acquire: vec![ShardId(3)], release: vec![ShardId(1)], drop: vec![] });
    }

    #[test]
    fn a_draining_node_releases_everything() {
        let now = Instant::now();
        let plan = plan(&BTreeSet::new(), &book(now, &[4, 5]), now, MARGIN);
        assert_eq!(plan.release, vec![ShardId(4), ShardId(5)]);
        assert!(plan.acquire.is_empty() && plan.drop.is_empty());
    }

    #[test]
    fn a_lease_not_renewed_in_time_is_dropped_before_it_expires() {
        let start = Instant::now();
        let hosted = book(start, &[7, 8]);
        assert!(plan(&shards(&[7, 8]), &hosted, start + TTL - MARGIN - Duration::from_millis(1), MARGIN).is_empty());
        let late = plan(&shards(&[7, 8]), &hosted, start + TTL - MARGIN, MARGIN);
        assert_eq!(late.drop, vec![ShardId(7), ShardId(8)]);
        assert!(late.release.is_empty(), "a dropped lease is not released: another node may hold it");
        assert!(late.acquire.is_empty(), "still hosted until dropped");
    }

    #[test]
    fn renewal_extends_validity() {
        let start = Instant::now();
        let mut hosted = book(start, &[1]);
        hosted.confirm(ShardId(1), start + Duration::from_secs(3), TTL);
        assert!(plan(&shards(&[1]), &hosted, start + TTL, MARGIN).is_empty());
    }
}
