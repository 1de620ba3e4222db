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

/// What acquiring one lease does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquireDecision {
    /// Increment the epoch and store the lease for the caller.
    Take,
    /// Leave it: a live node holds it.
    Leave { node: String, epoch: Epoch },
}

/// Decides an acquisition from the stored lease (`None`: free or expired).
///
/// The caller takes the lease when it is free, unreadable, already its own (a restarted node takes its shards back,
/// under a new epoch that fences its previous incarnation), or held by a node gossip no longer lists as live
/// (a takeover before the dead node's lease expires, safe because the new epoch fences the old owner).
pub fn decide_acquire(stored: Option<&str>, node: &str, live: &[String]) -> AcquireDecision {
    match stored.and_then(parse_lease_value) {
        Some((holder, epoch)) if holder != node && live.iter().any(|member| member == holder) => {
            AcquireDecision::Leave { node: holder.to_string(), epoch }
        }
        _ => AcquireDecision::Take,
    }
}

impl AcquireDecision {
    /// The outcome reported to the caller, `granted_epoch` being the incremented epoch when taken.
    pub fn outcome(self, granted_epoch: Epoch) -> Acquired {
        match self {
            Self::Take => Acquired::Granted { epoch: granted_epoch },
            Self::Leave { node, epoch } => Acquired::HeldBy { node, epoch },
        }
    }
}

/// Whether the stored lease is exactly `node`'s at `epoch`: what renewing and releasing require.
pub fn holds(stored: Option<&str>, node: &str, epoch: Epoch) -> bool {
    stored == Some(lease_value(node, epoch).as_str())
}

/// The stored leases the decision tests run over (and the Redis script test replays against Lua).
#[cfg(test)]
pub(crate) fn decision_cases() -> Vec<(Option<&'static str>, &'static str, Vec<String>)> {
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
        ];
        let cases = decision_cases();
        assert_eq!(cases.len(), expected.len());
        for ((stored, node, live), expected) in cases.into_iter().zip(expected) {
            assert_eq!(decide_acquire(stored, node, &live), expected, "{stored:?} {node:?} {live:?}");
        }
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
        assert_eq!(AcquireDecision::Take.outcome(8), Acquired::Granted { epoch: 8 });
        let leave = AcquireDecision::Leave { node: "b".into(), epoch: 7 };
        assert_eq!(leave.outcome(8), Acquired::HeldBy { node: "b".into(), epoch: 7 });
    }
}
