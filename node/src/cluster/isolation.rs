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
//!
//! Counting only the nodes that refuse is not enough: a peer that stalls (a pause, a SIGSTOP) while this node is
//! cut off renews nothing, so this node takes its silent leases as after a death; from then on only the other
//! peer refuses it, one against one, and it would keep shards the majority can neither serve nor take back. So a
//! node is also in the minority when it is refused by someone and sees less than half of the members it knew
//! lately ([`KnownMembers`]: seen live and ready within the last [`REVIEW_AFTER_PATIENCES`] patience periods,
//! forgetting a member as soon as it is seen not ready, as a draining node is). A survivor of real deaths is
//! refused by nobody, so it never steps aside.

use std::collections::HashMap;
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
    /// Members seen live and ready lately, itself included ([`KnownMembers::count`]).
    pub known: usize,
}

impl Observation {
    /// Refused by more renewing nodes it cannot see than it sees, or refused by any while it sees less than half of
    /// the members it knew lately.
    pub fn in_minority(&self) -> bool {
        self.unseen_renewing > self.seen || (self.unseen_renewing > 0 && self.seen * 2 < self.known)
    }
}

/// The members a node saw live and ready lately, by id: the cluster a majority is counted against.
#[derive(Clone, Debug, Default)]
pub struct KnownMembers {
    last_ready: HashMap<String, Instant>,
}

impl KnownMembers {
    /// Records a view at `now` (`(id, ready)` of each live member): ready members are stamped, members seen not ready
    /// (draining, aside) are forgotten at once.
    pub fn observe<'a>(&mut self, now: Instant, members: impl IntoIterator<Item = (&'a str, bool)>) {
        for (id, ready) in members {
            if ready {
                self.last_ready.insert(id.to_string(), now);
            } else {
                self.last_ready.remove(id);
            }
        }
    }

    /// Members seen ready within `memory` before `now`, at least 1 (this node); older ones are forgotten.
    pub fn count(&mut self, now: Instant, memory: Duration) -> usize {
        self.last_ready.retain(|_, seen| now.duration_since(*seen) < memory);
        self.last_ready.len().max(1)
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

    /// An observation where the members known lately are exactly those seen or refusing.
    fn seen(seen: usize, unseen_renewing: usize) -> Observation {
        Observation { seen, unseen_renewing, known: seen + unseen_renewing }
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
    fn refused_while_seeing_less_than_half_of_the_known_members_is_the_minority() {
        // Cut off from two peers, one of which stalled so that this node took its silent leases: only the other
        // refuses now, one against one, but this node sees one of the three it knew.
        let alone = Observation { seen: 1, unseen_renewing: 1, known: 3 };
        assert!(alone.in_minority());
        let start = Instant::now();
        let mut isolation = Isolation::default();
        assert!(!isolation.observe(start, alone, PATIENCE));
        assert!(isolation.observe(start + PATIENCE, alone, PATIENCE), "aside after the patience");
        // Refused by nobody (the others really died): never the minority, however few it sees.
        assert!(!Observation { seen: 1, unseen_renewing: 0, known: 3 }.in_minority());
        // Half or more of the known members seen: not the minority (the majority side, or an even split of two).
        for (seen, unseen_renewing, known) in [(2, 1, 3), (1, 1, 2), (2, 2, 4), (3, 2, 5)] {
            assert!(!Observation { seen, unseen_renewing, known }.in_minority(), "{seen} {unseen_renewing} {known}");
        }
        assert!(Observation { seen: 2, unseen_renewing: 1, known: 5 }.in_minority(), "two of five");
    }

    #[test]
    fn known_members_are_those_seen_ready_lately_and_a_member_seen_not_ready_is_forgotten() {
        let memory = PATIENCE * REVIEW_AFTER_PATIENCES;
        let start = Instant::now();
        let mut known = KnownMembers::default();
        assert_eq!(known.count(start, memory), 1, "at least this node");
        known.observe(start, [("a", true), ("b", true), ("c", true)]);
        assert_eq!(known.count(start, memory), 3);
        // b and c vanish from the view: still known until the memory runs out.
        known.observe(start + PATIENCE, [("a", true)]);
        assert_eq!(known.count(start + memory - Duration::from_millis(1), memory), 3);
        assert_eq!(known.count(start + memory, memory), 1);
        // A member seen not ready (draining, or aside) no longer counts.
        known.observe(start + memory, [("a", true), ("b", true)]);
        known.observe(start + memory, [("a", true), ("b", false)]);
        assert_eq!(known.count(start + memory, memory), 1);
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
