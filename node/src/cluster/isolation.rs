//! Stepping aside when this node is cut off from the other nodes but not from Redis.
//!
//! Such a node sees every other node dead, and every other node sees it dead. Leases settle who serves what:
//! a lease is taken over only once its holder stopped renewing it (`replica::lease::Takeover`), so nobody steals
//! a lease that is still renewed. That alone is a stand-off: the cut-off node keeps its shards, which the others
//! cannot reach. The tie is broken by counting: a node that is refused leases by more live nodes it cannot see
//! than it can see (itself included) is the minority side of a partition. When that persists for the patience, it
//! steps aside: it reports itself not ready, which releases its shards to the others, and takes no lease. It steps
//! back in when it sees more members than when it stepped aside (the partition healed), or after a review period
//! in any case: if it is still cut off, it is refused again and steps aside again; if the nodes it could not see
//! died meanwhile, their leases went silent and it takes them over. Taking no lease while aside matters: a node of
//! the majority that stalls for two renewals must not lose its shards to the one node that cannot serve them to
//! anyone.
//!
//! **Only a holder proven alive counts** ([`RenewalWatch`]). A holder gossip declares dead refuses its lease for a
//! while even when it did die: its lease looks fresh until it has gone unrenewed for the takeover silence. Counting
//! such refusals would send the survivor of a real double failure aside, unless the patience outlasted the silence
//! (as it once did: 4 renewal intervals, 1 s). Instead, a refusing holder counts once one of its leases was renewed
//! after this node first found it refusing: its remaining time to live, read again, ends later than it could have
//! as first read. A holder renews every interval, so the proof takes one interval; a dead node never gives it,
//! since this node loses sight of a node only after it died. So the patience is a mere filter against a view
//! that flapped (one renewal interval), and a partitioned node steps aside after the view's loss of its peers
//! plus about two renewal intervals.
//!
//! A node that merely missed a few gossip rounds of a peer never steps aside: one unseen node against two seen.
//! With two nodes split one against one, neither side steps aside (one is not more than one): each keeps the shards
//! it holds, and neither steals the other's.
//!
//! Counting only the nodes that refuse is not enough: a peer that stalls (a pause, a SIGSTOP) while this node is
//! cut off renews nothing, so this node takes its silent leases as after a death; from then on only the other
//! peer refuses it, one against one, and it would keep shards the majority can neither serve nor take back. So a
//! node is also in the minority when it is refused by someone and sees less than half of the members it knew
//! lately ([`KnownMembers`]: seen live and ready within the review period, forgetting a member as soon as it is
//! seen not ready, as a draining node is). A survivor of real deaths is refused by nobody, so it never steps aside.
//! The healthy peer of the stalled one sees the same (one of three, refused by the cut-off node) and may step aside
//! too while the stall lasts; it steps back in as soon as it sees the stalled peer again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

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
    /// Distinct nodes absent from the view proven alive lately: they refused a lease this node asked for and
    /// renewed it since ([`RenewalWatch`]).
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

/// How long the minority must persist before a node steps aside, how long it then stays aside at most before it
/// tries again although it sees no more members, and how long a proof of life counts ([`RenewalWatch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience {
    pub step_aside: Duration,
    pub review: Duration,
    pub proof_memory: Duration,
}

impl Isolation {
    /// Records one round's observation at `now`; answers whether the node is aside after it.
    /// While aside the node asks for no lease, so only `observation.seen` counts then.
    pub fn observe(&mut self, now: Instant, observation: Observation, patience: Patience) -> bool {
        if let Some(aside) = self.aside {
            let review = now.duration_since(aside.since) >= patience.review;
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
        if now.duration_since(since) >= patience.step_aside {
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

/// One lease refused by a holder missing from this node's view, as an acquisition round read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub shard: u16,
    pub holder: String,
    pub epoch: u64,
    /// The lease's remaining time to live when read (`None`: no expiry, which proves nothing).
    pub expires_in: Option<Duration>,
}

/// Which unseen holders are proven alive: a holder is, once a lease it holds was renewed after this node first
/// found it refusing that lease. Each refused lease is remembered with an anchor: the latest time it could expire
/// as read (answer time plus remaining time to live) plus a margin. A later reading whose earliest possible expiry
/// (request time plus remaining time) ends after the anchor proves a renewal in between, and moves the anchor, so
/// that every further proof needs a further renewal. A renewal moves the expiry by about one renewal interval;
/// the margin (half an interval) absorbs what else could move it: the time to live rounding down to the
/// millisecond, the two clocks running at slightly different rates (Redis measures time to live by its wall
/// clock, this node by its monotonic one), a small step of Redis's clock. Only the leases refused in the latest
/// round are remembered: a lease taken, released or held by a node seen again is forgotten, and a new epoch is a
/// new lease.
///
/// A holder once proven stays proven while it is unseen, for a short memory ([`RenewalWatch::alive_unseen`]),
/// even after it stopped refusing: a node of the other side that stepped aside released its leases, which says it
/// is alive, not that it died. Without that memory, two nodes that each see one of three members (the third
/// stalled) race to step aside, and the one that does hands its shards to the other, which then sees nobody
/// refusing and keeps every shard, although the stalled member, back, sides with the one that stepped aside. The
/// memory is kept short (the takeover silence plus an interval: long enough for the other side to finish its own
/// step aside) because a proof outlives its holder: a node proven alive that dies counts for that long.
#[derive(Clone, Debug)]
pub struct RenewalWatch {
    margin: Duration,
    anchors: HashMap<u16, (String, u64, Instant)>,
    /// When each holder was last proven alive.
    proven_at: HashMap<String, Instant>,
}

impl RenewalWatch {
    /// `margin`: how much further than first read a lease's expiry must have moved to count as renewed.
    pub fn new(margin: Duration) -> Self {
        Self { margin, anchors: HashMap::new(), proven_at: HashMap::new() }
    }

    /// Records the refusals by unseen holders of one round, whose request was sent at `sent` and answered at
    /// `answered`; answers the holders this round proved alive.
    pub fn observe(&mut self, sent: Instant, answered: Instant, refusals: &[Refusal]) -> BTreeSet<String> {
        let mut anchors = HashMap::with_capacity(refusals.len());
        let mut proven = BTreeSet::new();
        for refusal in refusals {
            let Some(expires_in) = refusal.expires_in else { continue };
            let anchor = self
                .anchors
                .remove(&refusal.shard)
                .filter(|(holder, epoch, _)| *holder == refusal.holder && *epoch == refusal.epoch)
                .map(|(_, _, anchor)| anchor);
            let renewed = anchor.is_some_and(|anchor| sent + expires_in > anchor);
            if renewed {
                proven.insert(refusal.holder.clone());
            }
            let anchor = match anchor {
                Some(anchor) if !renewed => anchor,
                _ => answered + expires_in + self.margin,
            };
            anchors.insert(refusal.shard, (refusal.holder.clone(), refusal.epoch, anchor));
        }
        self.anchors = anchors;
        for holder in &proven {
            self.proven_at.insert(holder.clone(), answered);
        }
        proven
    }

    /// A round that asked for no lease: no refusal was read, so every first reading is forgotten (the proofs are
    /// kept, for their memory).
    pub fn no_refusals(&mut self) {
        self.anchors.clear();
    }

    /// How many holders were proven alive within `memory` before `now` and are not in `live` (this node's view); a
    /// holder seen again is forgotten, so that losing sight of it again needs a new proof.
    pub fn alive_unseen(&mut self, now: Instant, live: &[String], memory: Duration) -> usize {
        self.proven_at.retain(|holder, at| now.duration_since(*at) < memory && !live.contains(holder));
        self.proven_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(250);
    const REVIEW: Duration = Duration::from_secs(10);
    const PATIENCE: Patience =
        Patience { step_aside: STEP, review: REVIEW, proof_memory: Duration::from_millis(1_000) };

    /// A watch with the default timings' margin (half of a 250 ms interval).
    fn new_watch() -> RenewalWatch {
        RenewalWatch::new(ms(125))
    }

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
        assert!(!isolation.observe(start + STEP - Duration::from_millis(1), seen(1, 2), PATIENCE));
        assert!(isolation.observe(start + STEP, seen(1, 2), PATIENCE));
        assert!(isolation.is_aside());
        // Aside, it asks for no lease: nobody refuses it, and it stays aside while it sees nobody more.
        assert!(isolation.observe(start + STEP * 5, seen(1, 0), PATIENCE), "stays aside while cut off");
    }

    #[test]
    fn an_aside_node_steps_back_in_when_it_sees_more_members_or_at_the_review() {
        let start = Instant::now();
        let aside = |isolation: &mut Isolation| {
            isolation.observe(start, seen(1, 2), PATIENCE);
            assert!(isolation.observe(start + STEP, seen(1, 2), PATIENCE));
        };
        let mut healed = Isolation::default();
        aside(&mut healed);
        assert!(!healed.observe(start + STEP * 2, seen(2, 0), PATIENCE), "a peer is seen again");
        assert_eq!(healed, Isolation::default());
        assert!(!healed.is_cut_off());

        let mut reviewed = Isolation::default();
        aside(&mut reviewed);
        let review = start + STEP + REVIEW;
        assert!(reviewed.observe(review - Duration::from_millis(1), seen(1, 0), PATIENCE));
        assert!(!reviewed.observe(review, seen(1, 0), PATIENCE), "tries again at the review");
        // Still cut off: refused again, aside again after the patience.
        assert!(!reviewed.observe(review + STEP / 2, seen(1, 2), PATIENCE));
        assert!(reviewed.observe(review + STEP * 2, seen(1, 2), PATIENCE));
    }

    #[test]
    fn the_majority_side_and_an_even_split_never_step_aside() {
        let start = Instant::now();
        for observation in [seen(2, 1), seen(1, 1), seen(2, 2), seen(3, 0), seen(1, 0)] {
            let mut isolation = Isolation::default();
            for step in 0..10 {
                assert!(!isolation.observe(start + STEP * step, observation, PATIENCE), "{observation:?}");
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
        assert!(isolation.observe(start + STEP, alone, PATIENCE), "aside after the patience");
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
        let memory = REVIEW;
        let start = Instant::now();
        let mut known = KnownMembers::default();
        assert_eq!(known.count(start, memory), 1, "at least this node");
        known.observe(start, [("a", true), ("b", true), ("c", true)]);
        assert_eq!(known.count(start, memory), 3);
        // b and c vanish from the view: still known until the memory runs out.
        known.observe(start + STEP, [("a", true)]);
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
        // The refusals stopped before the patience ran out (the peers died after all, and their leases went
        // silent): no step aside.
        assert!(!isolation.observe(start + STEP / 2, seen(1, 0), PATIENCE));
        assert!(!isolation.observe(start + STEP, seen(1, 2), PATIENCE), "the patience starts again");
        assert!(isolation.observe(start + STEP * 2, seen(1, 2), PATIENCE));
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn refusal(shard: u16, holder: &str, epoch: u64, expires_in_ms: Option<u64>) -> Refusal {
        Refusal { shard, holder: holder.into(), epoch, expires_in: expires_in_ms.map(ms) }
    }

    /// A round at `at` ms after `start`, answered `rtt` ms later, that reads leases expiring at the given absolute
    /// times (ms after `start`; Redis reads them somewhere within the round trip and rounds down to the ms).
    fn round(
        watch: &mut RenewalWatch,
        start: Instant,
        at: u64,
        rtt: u64,
        read_after: u64,
        leases: &[(u16, &str, u64, u64)],
    ) -> BTreeSet<String> {
        let read_at = at + read_after.min(rtt);
        let refusals: Vec<Refusal> = leases
            .iter()
            .map(|(shard, holder, epoch, expires_at)| refusal(*shard, holder, *epoch, Some(expires_at - read_at)))
            .collect();
        watch.observe(start + ms(at), start + ms(at + rtt), &refusals)
    }

    #[test]
    fn a_holder_that_renews_after_the_first_refusal_is_proven_alive_and_a_dead_one_never() {
        let start = Instant::now();
        let mut watch = new_watch();
        // b renews every 250 ms (expiry = renewal + 5 s); c died at 0 ms (its lease expires at 5 000 ms).
        let b_expiry = |at: u64| (at / 250) * 250 + 5_000;
        for at in (1_000..3_000).step_by(50) {
            let proven = round(&mut watch, start, at, 3, 1, &[(1, "b", 7, b_expiry(at)), (2, "c", 4, 5_000)]);
            // Each renewal of b proves it once: the reading right after it.
            let just_renewed = at > 1_000 && at % 250 == 0;
            assert_eq!(proven.contains("b"), just_renewed, "at {at} ms: {proven:?}");
            assert!(!proven.contains("c"), "a dead holder is never proven alive (at {at} ms)");
            let alive = watch.alive_unseen(start + ms(at + 3), &[], PATIENCE.proof_memory);
            assert_eq!(alive, usize::from(at >= 1_250), "b stays proven between its renewals (at {at} ms)");
        }
    }

    #[test]
    fn an_expiry_must_move_by_more_than_the_margin() {
        let start = Instant::now();
        for (moved, proves) in [(0, false), (1, false), (100, false), (124, false), (130, true), (250, true)] {
            let mut watch = new_watch();
            round(&mut watch, start, 0, 2, 1, &[(1, "b", 1, 4_000)]);
            // The same round trip and read point as the first reading: only the move counts, less 2 ms of rtt.
            let proven = round(&mut watch, start, 300, 2, 1, &[(1, "b", 1, 4_000 + moved)]);
            assert_eq!(!proven.is_empty(), proves, "expiry moved by {moved} ms");
        }
    }

    #[test]
    fn no_round_trip_timing_makes_a_dead_holder_look_renewed() {
        let start = Instant::now();
        // Every combination of round trip (0 to 40 ms) and of where within it Redis read the lease, the first
        // reading and the later ones drawn independently: a fixed expiry is never mistaken for a renewal.
        for first_rtt in [0, 1, 7, 40] {
            for first_read in [0, 1, 7, 40] {
                for rtt in [0, 1, 7, 40] {
                    for read in [0, 1, 7, 40] {
                        let mut watch = new_watch();
                        round(&mut watch, start, 100, first_rtt, first_read, &[(1, "b", 7, 4_000)]);
                        for at in [150, 400, 2_000, 3_900] {
                            let proven = round(&mut watch, start, at, rtt, read, &[(1, "b", 7, 4_000)]);
                            assert!(proven.is_empty(), "{first_rtt} {first_read} {rtt} {read} at {at}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_new_epoch_a_new_holder_a_lease_not_refused_or_without_expiry_starts_over() {
        let start = Instant::now();
        let first = |watch: &mut RenewalWatch| round(watch, start, 0, 1, 0, &[(1, "b", 7, 4_000)]);
        let renewed = [(1, "b", 7, 4_500)];
        // The lease taken again under a new epoch, or by another holder: a new lease, not a renewal.
        for later in [(1, "b", 8, 4_500), (1, "d", 7, 4_500)] {
            let mut watch = new_watch();
            first(&mut watch);
            assert!(round(&mut watch, start, 300, 1, 0, &[later]).is_empty(), "{later:?}");
            assert!(!round(&mut watch, start, 600, 1, 0, &[(later.0, later.1, later.2, 4_900)]).is_empty());
        }
        // A round that does not refuse the lease (taken, or its holder seen again) forgets it.
        let mut watch = new_watch();
        first(&mut watch);
        assert!(round(&mut watch, start, 300, 1, 0, &[]).is_empty());
        assert!(round(&mut watch, start, 350, 1, 0, &renewed).is_empty(), "a first reading again");
        // So does a round that asked for no lease.
        let mut watch = new_watch();
        first(&mut watch);
        watch.no_refusals();
        assert!(round(&mut watch, start, 350, 1, 0, &renewed).is_empty(), "a first reading again");
        // A lease without expiry proves nothing, ever.
        let mut watch = new_watch();
        for at in [0, 300, 600] {
            assert!(watch.observe(start + ms(at), start + ms(at + 1), &[refusal(1, "b", 7, None)]).is_empty());
        }
        // Each proof needs a further renewal: the same expiry read again proves nothing more.
        let mut watch = new_watch();
        first(&mut watch);
        assert_eq!(round(&mut watch, start, 300, 1, 0, &renewed).len(), 1);
        assert!(round(&mut watch, start, 350, 1, 0, &renewed).is_empty());
        assert_eq!(round(&mut watch, start, 550, 1, 0, &[(1, "b", 7, 4_750)]).len(), 1);
    }

    #[test]
    fn holders_are_proven_one_by_one_by_any_of_their_leases() {
        let start = Instant::now();
        let mut watch = new_watch();
        round(&mut watch, start, 0, 1, 0, &[(1, "b", 1, 4_000), (2, "b", 1, 4_000), (3, "c", 1, 4_000)]);
        let proven = round(&mut watch, start, 300, 1, 0, &[(1, "b", 1, 4_000), (2, "b", 1, 4_250), (3, "c", 1, 4_000)]);
        assert_eq!(proven, BTreeSet::from(["b".to_string()]));
    }

    #[test]
    fn a_proven_holder_stays_alive_while_unseen_until_the_memory_runs_out_or_it_is_seen() {
        let start = Instant::now();
        let memory = ms(10_000);
        let mut watch = new_watch();
        round(&mut watch, start, 0, 1, 0, &[(1, "b", 1, 4_000), (2, "c", 1, 4_000)]);
        assert_eq!(watch.alive_unseen(start + ms(1), &[], memory), 0, "nothing proven yet");
        round(&mut watch, start, 300, 1, 0, &[(1, "b", 1, 4_250), (2, "c", 1, 4_250)]);
        // b released its lease (it stepped aside): no refusal any more, yet still alive.
        round(&mut watch, start, 350, 1, 0, &[]);
        assert_eq!(watch.alive_unseen(start + ms(351), &[], memory), 2);
        // c is seen again: forgotten.
        assert_eq!(watch.alive_unseen(start + ms(400), &["a".to_string(), "c".to_string()], memory), 1);
        assert_eq!(watch.alive_unseen(start + ms(450), &[], memory), 1, "c needs a new proof");
        assert_eq!(watch.alive_unseen(start + ms(301) + memory - ms(1), &[], memory), 1);
        assert_eq!(watch.alive_unseen(start + ms(301) + memory, &[], memory), 0, "b's proof is too old");
    }
}
