//! Stepping aside when this node is cut off from the other nodes but not from Redis.
//!
//! Such a node sees every other node dead, and every other node sees it dead. Leases settle who serves what:
//! a lease is taken over only once its holder stopped renewing it (`replica::lease::Takeover`), so nobody steals
//! a lease that is still renewed. That alone is a stand-off: the cut-off node keeps its shards, which the others
//! cannot reach. The tie is broken by counting: a node that is refused leases by more renewing nodes it cannot see
//! than it can see (itself included) is the minority side of a partition. When that persists longer than a dead
//! node's lease can look fresh, it steps aside: it reports itself not ready, which releases its shards to the
//! others, and takes no lease. It steps back in when it sees more members than when it stepped aside (the
//! partition healed), or after a review period in any case: if it is still cut off, it is refused again and
//! steps aside again after the patience; if the nodes it could not see died meanwhile, their leases went silent
//! and it takes them over. Taking no lease while aside matters: a node of the majority that stalls for two
//! renewals must not lose its shards to the one node that cannot serve them to anyone.
//!
//! A node that merely missed a few gossip rounds of a peer never steps aside: one unseen node against two seen.
//! With two nodes split one against one, neither side steps aside (one is not more than one): each keeps the shards
//! it holds, and neither steals the other's.

use std::time::{Duration, Instant};

/// How many patience periods a node stays aside before it tries again although it sees no more members.
pub const REVIEW_AFTER_PATIENCES: u32 = 10;

/// The step-aside state of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    /// Since when every observation showed this node in the minority.
    minority_since: Option<Instant>,
    aside: Option<Aside>,
}

/// When a node stepped aside, and how many members it saw then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Aside {
    since: Instant,
    seen: usize,
}

/// What one acquisition round showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Live members in this node's view, itself included.
    pub seen: usize,
    /// Distinct nodes absent from the view that still renew a lease this node asked for.
    pub unseen_renewing: usize,
}

impl Observation {
    pub fn in_minority(&self) -> bool {
        self.unseen_renewing > self.seen
    }
}

impl Isolation {
    /// Records one round's observation at `now`; answers whether the node is aside after it. `patience`: how long
    /// the minority must persist (longer than a dead holder's lease can look fresh, so a real death of the other
    /// nodes never sends the survivor aside).
    /// While aside the node asks for no lease, so only `observation.seen` counts then.
    pub fn observe(&mut self, now: Instant, observation: Observation, patience: Duration) -> bool {
        if let Some(aside) = self.aside {
            let review = now.duration_since(aside.since) >= patience * REVIEW_AFTER_PATIENCES;
            if observation.seen > aside.seen || review {
                *self = Self::default();
                return false;
            }
            return true;
        }
        if !observation.in_minority() {
            self.minority_since = None;
            return false;
        }
        let since = *self.minority_since.get_or_insert(now);
        if now.duration_since(since) >= patience {
            self.aside = Some(Aside { since: now, seen: observation.seen });
        }
        self.aside.is_some()
    }

    pub fn is_aside(&self) -> bool {
        self.aside.is_some()
    }

    /// In the minority now (patience running) or aside: the shards this node cannot reach fail fast.
    pub fn is_cut_off(&self) -> bool {
        self.minority_since.is_some() || self.aside.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(1);

    fn seen(seen: usize, unseen_renewing: usize) -> Observation {
        Observation { seen, unseen_renewing }
    }

    #[test]
    fn a_node_alone_against_two_renewing_peers_steps_aside_after_the_patience() {
        let start = Instant::now();
        let mut isolation = Isolation::default();
        assert!(!isolation.observe(start, seen(1, 2), PATIENCE));
        assert!(isolation.is_cut_off(), "cut off from the first observation, before stepping aside");
        assert!(!isolation.observe(start + PATIENCE - Duration::from_millis(1), seen(1, 2), PATIENCE));
        assert!(isolation.observe(start + PATIENCE, seen(1, 2), PATIENCE));
        assert!(isolation.is_aside());
        // Aside, it asks for no lease: nobody refuses it, and it stays aside while it sees nobody more.
        assert!(isolation.observe(start + PATIENCE * 5, seen(1, 0), PATIENCE), "stays aside while cut off");
    }

    #[test]
    fn an_aside_node_steps_back_in_when_it_sees_more_members_or_at_the_review() {
        let start = Instant::now();
        let aside = |isolation: &mut Isolation| {
            isolation.observe(start, seen(1, 2), PATIENCE);
            assert!(isolation.observe(start + PATIENCE, seen(1, 2), PATIENCE));
        };
        let mut healed = Isolation::default();
        aside(&mut healed);
        assert!(!healed.observe(start + PATIENCE * 2, seen(2, 0), PATIENCE), "a peer is seen again");
        assert_eq!(healed, Isolation::default());
        assert!(!healed.is_cut_off());

        let mut reviewed = Isolation::default();
        aside(&mut reviewed);
        let review = start + PATIENCE + PATIENCE * REVIEW_AFTER_PATIENCES;
        assert!(reviewed.observe(review - Duration::from_millis(1), seen(1, 0), PATIENCE));
        assert!(!reviewed.observe(review, seen(1, 0), PATIENCE), "tries again at the review");
        // Still cut off: refused again, aside again after the patience.
        assert!(!reviewed.observe(review + PATIENCE / 2, seen(1, 2), PATIENCE));
        assert!(reviewed.observe(review + PATIENCE * 2, seen(1, 2), PATIENCE));
    }

    #[test]
    fn the_majority_side_and_an_even_split_never_step_aside() {
        let start = Instant::now();
        for observation in [seen(2, 1), seen(1, 1), seen(2, 2), seen(3, 0), seen(1, 0)] {
            let mut isolation = Isolation::default();
            for step in 0..10 {
                assert!(!isolation.observe(start + PATIENCE * step, observation, PATIENCE), "{observation:?}");
            }
        }
    }

    #[test]
    fn one_round_out_of_the_minority_resets_the_patience_and_brings_the_node_back() {
        let start = Instant::now();
        let mut isolation = Isolation::default();
        isolation.observe(start, seen(1, 2), PATIENCE);
        // The peers' leases went silent (they really died) before the patience ran out: no step aside.
        assert!(!isolation.observe(start + PATIENCE / 2, seen(1, 0), PATIENCE));
        assert!(!isolation.observe(start + PATIENCE, seen(1, 2), PATIENCE), "the patience starts again");
        assert!(isolation.observe(start + PATIENCE * 2, seen(1, 2), PATIENCE));
    }
}
