//! The lease decisions as pure functions: what [`super::Leases`] does given what is stored.
//!
//! A lease is stored as `"<node> <epoch>"` with a time to live. The Redis scripts (`redis/lua/*.lua`) mirror these
//! functions line for line, and an integration test runs both over the same cases; [`super::MemoryReplica`] calls
//! them directly.

use super::{Acquired, Epoch};

/// Epochs are at most this many decimal digits, so every stored epoch fits a `u64` (and Lua's doubles stay exact
/// far beyond any epoch a cluster reaches).
pub const MAX_EPOCH_DIGITS: usize = 18;

/// The stored form of a lease.
pub fn lease_value(node: &str, epoch: Epoch) -> String {
    format!("{node} {epoch}")
}

/// Splits a stored lease into holder and epoch; `None` when it is not `"<node> <digits>"` (the node may contain
/// spaces: the epoch is after the last one).
pub fn parse_lease_value(value: &str) -> Option<(&str, Epoch)> {
    let (node, epoch) = value.rsplit_once(' ')?;
    let well_formed =
        !epoch.is_empty() && epoch.len() <= MAX_EPOCH_DIGITS && epoch.bytes().all(|byte| byte.is_ascii_digit());
    if !well_formed {
        return None;
    }
    Some((node, epoch.parse().ok()?))
}

/// When a lease whose holder gossip declares dead may be taken over: once its holder has been silent (not renewed
/// it) for `silence_ms`, judged from the lease's remaining time to live against the full `ttl_ms` every renewal
/// sets. A silence of 0 takes over as soon as gossip agrees (the rule before partitions were considered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub ttl_ms: u64,
    pub silence_ms: u64,
}

impl Takeover {
    /// Takeover as soon as gossip declares the holder dead.
    pub const fn on_gossip(ttl_ms: u64) -> Self {
        Self { ttl_ms, silence_ms: 0 }
    }

    /// Whether a lease with `remaining_ms` left (`None`: no expiry) shows its holder silent long enough. A lease
    /// renewed with a longer TTL than ours looks fresh until it has aged past our TTL.
    pub fn holder_silent(&self, remaining_ms: Option<u64>) -> bool {
        self.silence_ms == 0
            || remaining_ms.is_none_or(|remaining| self.ttl_ms.saturating_sub(remaining) >= self.silence_ms)
    }
}

/// What acquiring one lease does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquireDecision {
    /// Increment the epoch and store the lease for the caller.
    Take,
    /// Leave it: a live node holds it, or a node declared dead that renewed it too recently (it may be cut off from
    /// this node only, not from Redis).
    Leave { node: String, epoch: Epoch },
}

/// Decides an acquisition from the stored lease (`None`: free or expired) and its remaining time to live
/// (`remaining_ms`, `None`: no expiry).
///
/// The caller takes the lease when it is free, unreadable, already its own (a restarted node takes its shards back,
/// under a new epoch that fences its previous incarnation), or held by a node gossip no longer lists as live and
/// that stopped renewing it ([`Takeover`]): a takeover before the dead node's lease expires, safe because the new
/// epoch fences the old owner. A holder missing from gossip but still renewing is alive and cut off from the
/// caller only (a partition): taking its lease would start a tug of war, so the lease is left.
pub fn decide_acquire(
    stored: Option<&str>,
    remaining_ms: Option<u64>,
    node: &str,
    live: &[String],
    takeover: Takeover,
) -> AcquireDecision {
    match stored.and_then(parse_lease_value) {
        Some((holder, epoch))
            if holder != node
                && (live.iter().any(|member| member == holder) || !takeover.holder_silent(remaining_ms)) =>
        {
            AcquireDecision::Leave { node: holder.to_string(), epoch }
        }
        _ => AcquireDecision::Take,
    }
}

impl AcquireDecision {
    /// The outcome reported to the caller, `granted_epoch` being the incremented epoch when taken, and
    /// `remaining_ms` the stored lease's remaining time to live (`None`: no expiry) when left.
    pub fn outcome(self, granted_epoch: Epoch, remaining_ms: Option<u64>) -> Acquired {
        match self {
            Self::Take => Acquired::Granted { epoch: granted_epoch },
            Self::Leave { node, epoch } => Acquired::HeldBy { node, epoch, expires_in_ms: remaining_ms },
        }
    }
}

/// Whether the stored lease is exactly `node`'s at `epoch`: what renewing and releasing require.
pub fn holds(stored: Option<&str>, node: &str, epoch: Epoch) -> bool {
    stored == Some(lease_value(node, epoch).as_str())
}

/// One case of the decision tests: the stored lease, its remaining time to live (`None`: no expiry), the caller,
/// its live members and the takeover rule.
#[cfg(test)]
pub(crate) type DecisionCase = (Option<&'static str>, Option<u64>, &'static str, Vec<String>, Takeover);

/// The TTL of the decision cases.
#[cfg(test)]
pub(crate) const CASE_TTL_MS: u64 = 5_000;

/// The stored leases the decision tests run over (and the Redis script test replays against Lua). The remaining
/// times are far from the silence bound, so that the milliseconds a script run takes cannot change a decision.
#[cfg(test)]
pub(crate) fn decision_cases() -> Vec<DecisionCase> {
    let gossip = Takeover::on_gossip(CASE_TTL_MS);
    let silence = Takeover { ttl_ms: CASE_TTL_MS, silence_ms: 1_000 };
    let mut cases: Vec<DecisionCase> =
        gossip_cases().into_iter().map(|(stored, node, live)| (stored, None, node, live, gossip)).collect();
    let live = |members: &[&str]| members.iter().map(|member| member.to_string()).collect::<Vec<_>>();
    cases.extend([
        // A dead holder that renewed 100 ms ago is cut off, not dead: leave it.
        (Some("b 7"), Some(4_900), "a", live(&["a"]), silence),
        // Silent for 2 s (two renewals of 1 s missed): take it.
        (Some("b 7"), Some(3_000), "a", live(&["a"]), silence),
        // No expiry at all: silent forever.
        (Some("b 7"), None, "a", live(&["a"]), silence),
        // A live holder is left however stale its lease looks.
        (Some("b 7"), Some(100), "a", live(&["a", "b"]), silence),
        // The caller's own lease and an unreadable one are taken however fresh.
        (Some("a 3"), Some(4_900), "a", live(&[]), silence),
        (Some("b x"), Some(4_900), "a", live(&[]), silence),
        // A holder whose TTL is longer than ours looks fresh until it aged past ours.
        (Some("b 7"), Some(9_000), "a", live(&["a"]), silence),
        // Without a silence rule, gossip alone decides.
        (Some("b 7"), Some(4_900), "a", live(&["a"]), gossip),
    ]);
    cases
}

#[cfg(test)]
fn gossip_cases() -> Vec<(Option<&'static str>, &'static str, Vec<String>)> {
    let live = |members: &[&str]| members.iter().map(|member| member.to_string()).collect::<Vec<_>>();
    vec![
        // Free.
        (None, "a", live(&["a", "b"])),
        (None, "a", live(&[])),
        // Held by the caller (a restart), whether or not the caller lists itself.
        (Some("a 3"), "a", live(&["a", "b"])),
        (Some("a 3"), "a", live(&["b"])),
        // Held by a live node.
        (Some("b 7"), "a", live(&["a", "b"])),
        (Some("b 7"), "a", live(&["b"])),
        // Held by a node declared dead: takeover.
        (Some("b 7"), "a", live(&["a", "c"])),
        (Some("b 7"), "a", live(&[])),
        // A node id that is a prefix of another is another node.
        (Some("ab 2"), "a", live(&["a", "ab"])),
        (Some("ab 2"), "a", live(&["a", "abc"])),
        // Node ids with spaces: the epoch follows the last space.
        (Some("node b 4"), "a", live(&["node b"])),
        (Some("node b 4"), "node b", live(&[])),
        // An empty node id is a node id.
        (Some(" 5"), "a", live(&[""])),
        // Unreadable leases are free.
        (Some("b"), "a", live(&["b"])),
        (Some("b x"), "a", live(&["b"])),
        (Some("b +5"), "a", live(&["b"])),
        (Some("b 5 "), "a", live(&["b", "b 5"])),
        (Some("b "), "a", live(&["b"])),
        (Some(""), "a", live(&[""])),
        (Some("b 1234567890123456789"), "a", live(&["b"])),
        (Some("b 123456789012345678"), "a", live(&["b"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_round_trip() {
        assert_eq!(lease_value("node-1", 42), "node-1 42");
        assert_eq!(parse_lease_value("node-1 42"), Some(("node-1", 42)));
        assert_eq!(parse_lease_value("a b 0"), Some(("a b", 0)));
        assert_eq!(parse_lease_value(" 5"), Some(("", 5)));
        for malformed in ["", "node", "node ", "node x", "node +5", "node -5", "node 5 ", "node 1e3"] {
            assert_eq!(parse_lease_value(malformed), None, "{malformed:?}");
        }
        assert_eq!(parse_lease_value("n 123456789012345678"), Some(("n", 123_456_789_012_345_678)));
        assert_eq!(parse_lease_value("n 1234567890123456789"), None);
    }

    #[test]
    fn acquisition_takes_free_own_and_dead_leases_and_leaves_live_ones() {
        let leave = |node: &str, epoch| AcquireDecision::Leave { node: node.into(), epoch };
        let expected = [
            AcquireDecision::Take,
            AcquireDecision::Take,
            AcquireDecision::Take,
            AcquireDecision::Take,
            leave("b", 7),
            leave("b", 7),
            AcquireDecision::Take,
            AcquireDecision::Take,
            leave("ab", 2),
            AcquireDecision::Take,
            leave("node b", 4),
            AcquireDecision::Take,
            leave("", 5),
            AcquireDecision::Take,
            AcquireDecision::Take,
            AcquireDecision::Take,
            AcquireDecision::Take,
            AcquireDecision::Take,
            AcquireDecision::Take,
            AcquireDecision::Take,
            leave("b", 123_456_789_012_345_678),
            // The silence cases.
            leave("b", 7),
            AcquireDecision::Take,
            AcquireDecision::Take,
            leave("b", 7),
            AcquireDecision::Take,
            AcquireDecision::Take,
            leave("b", 7),
            AcquireDecision::Take,
        ];
        let cases = decision_cases();
        assert_eq!(cases.len(), expected.len());
        for ((stored, remaining, node, live, takeover), expected) in cases.into_iter().zip(expected) {
            let case = format!("{stored:?} {remaining:?} {node:?} {live:?} {takeover:?}");
            assert_eq!(decide_acquire(stored, remaining, node, &live, takeover), expected, "{case}");
        }
    }

    #[test]
    fn a_dead_holder_is_silent_once_its_lease_aged_by_the_silence() {
        let rule = Takeover { ttl_ms: 3_000, silence_ms: 500 };
        assert!(!rule.holder_silent(Some(3_000)));
        assert!(!rule.holder_silent(Some(2_501)));
        assert!(rule.holder_silent(Some(2_500)));
        assert!(rule.holder_silent(Some(0)));
        assert!(rule.holder_silent(None));
        assert!(!rule.holder_silent(Some(10_000)), "a longer TTL than ours is not silence");
        assert!(Takeover::on_gossip(3_000).holder_silent(Some(3_000)));
    }

    #[test]
    fn only_the_exact_holder_and_epoch_hold_a_lease() {
        assert!(holds(Some("a 3"), "a", 3));
        assert!(!holds(Some("a 3"), "a", 2));
        assert!(!holds(Some("a 3"), "a", 4));
        assert!(!holds(Some("a 3"), "b", 3));
        assert!(!holds(Some("ab 3"), "a", 3));
        assert!(!holds(None, "a", 3));
        assert!(holds(Some("a b 3"), "a b", 3));
    }

    #[test]
    fn outcomes_report_the_new_epoch_or_the_holder() {
        assert_eq!(AcquireDecision::Take.outcome(8, Some(100)), Acquired::Granted { epoch: 8 });
        let leave = AcquireDecision::Leave { node: "b".into(), epoch: 7 };
        assert_eq!(
            leave.clone().outcome(8, Some(100)),
            Acquired::HeldBy { node: "b".into(), epoch: 7, expires_in_ms: Some(100) }
        );
        assert_eq!(leave.outcome(8, None), Acquired::HeldBy { node: "b".into(), epoch: 7, expires_in_ms: None });
    }
}
