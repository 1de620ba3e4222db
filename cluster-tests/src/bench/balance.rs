//! The load balancer in front of the nodes, as the bench plays it: round-robin or random over the nodes it
//! believes healthy, a failed attempt retried once on another node, a node taken out of rotation when its health
//! check fails (`/readyz`, every 100 ms, when the bench knows the admin URLs) or when an attempt on it failed to
//! connect or lost its connection (for a second, or until its next good health check).

use super::mix::Draws;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
}

impl Balance {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "round-robin" | "rr" => Ok(Self::RoundRobin),
            "random" => Ok(Self::Random),
            other => anyhow::bail!("--balance {other:?}: round-robin or random"),
        }
    }
}

/// How long a node is out of rotation after an attempt on it failed at the transport level, when no health check
/// brings it back earlier.
pub const PASSIVE_EJECTION: Duration = Duration::from_secs(1);

pub struct Balancer {
    balance: Balance,
    /// Per node: out of rotation until this many ms after `epoch` (`u64::MAX`: until a good health check).
    down_until_ms: Vec<AtomicU64>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Balancer {
    pub fn new(nodes: usize, balance: Balance) -> Self {
        Self {
            balance,
            down_until_ms: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_up(&self, node: usize) -> bool {
        self.now_ms() >= self.down_until_ms[node].load(Ordering::Relaxed)
    }

    /// The node for an attempt: a healthy one other than `avoid` (the node whose attempt just failed); when none
    /// is healthy, any other; with a single node, that one.
    pub fn pick(&self, avoid: Option<usize>, draws: &mut Draws) -> usize {
        let count = self.down_until_ms.len();
        let others = || (0..count).filter(move |node| Some(*node) != avoid);
        let mut candidates: Vec<usize> = others().filter(|node| self.is_up(*node)).collect();
        if candidates.is_empty() {
            candidates = others().collect();
        }
        if candidates.is_empty() {
            return avoid.unwrap_or(0);
        }
        let turn = match self.balance {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
            Balance::Random => draws.next_u64() as usize,
        };
        candidates[turn % candidates.len()]
    }

    /// An attempt on `node` could not connect or lost its connection.
    pub fn eject(&self, node: usize) {
        let until = self.now_ms() + PASSIVE_EJECTION.as_millis() as u64;
        self.down_until_ms[node].fetch_max(until, Ordering::Relaxed);
    }

    /// The outcome of a health check of `node`.
    pub fn set_health(&self, node: usize, up: bool) {
        self.down_until_ms[node].store(if up { 0 } else { u64::MAX }, Ordering::Relaxed);
    }

    pub fn up_count(&self) -> usize {
        (0..self.down_until_ms.len()).filter(|node| self.is_up(*node)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_nodes_out_of_rotation_and_the_failed_one() {
        let balancer = Balancer::new(3, Balance::RoundRobin);
        let mut draws = Draws::new(1);
        let picks: Vec<usize> = (0..6).map(|_| balancer.pick(None, &mut draws)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        balancer.set_health(1, false);
        assert!((0..6).all(|_| balancer.pick(None, &mut draws) != 1));
        assert!((0..6).all(|_| balancer.pick(Some(0), &mut draws) == 2), "a retry avoids the failed node");
        balancer.set_health(2, false);
        assert!((0..6).all(|_| balancer.pick(Some(0), &mut draws) != 0), "none healthy: any other node");
        balancer.set_health(1, true);
        assert_eq!(balancer.up_count(), 2);
    }

    #[test]
    fn a_passive_ejection_lasts_a_second_and_a_good_health_check_ends_it() {
        let balancer = Balancer::new(2, Balance::Random);
        balancer.eject(0);
        assert!(!balancer.is_up(0) && balancer.is_up(1));
        let mut draws = Draws::new(5);
        assert!((0..20).all(|_| balancer.pick(None, &mut draws) == 1));
        balancer.set_health(0, true);
        assert!(balancer.is_up(0));
        let picked: std::collections::BTreeSet<usize> = (0..50).map(|_| balancer.pick(None, &mut draws)).collect();
        assert_eq!(picked.len(), 2, "random reaches every healthy node");
    }

    #[test]
    fn a_single_node_is_always_the_answer() {
        let balancer = Balancer::new(1, Balance::RoundRobin);
        balancer.set_health(0, false);
        let mut draws = Draws::new(0);
        assert_eq!(balancer.pick(None, &mut draws), 0);
        assert_eq!(balancer.pick(Some(0), &mut draws), 0);
        assert!(Balance::parse("random").is_ok() && Balance::parse("least-conn").is_err());
    }
}
