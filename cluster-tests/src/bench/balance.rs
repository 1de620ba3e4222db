//! The load balancer in front of the nodes, as the bench plays it: round-robin or random over the nodes it
//! believes healthy, a failed attempt retried once on another node, a node taken out of rotation when its health
//! check fails (`/readyz`, every 100 ms, when the bench knows the admin URLs) or when an attempt on it failed to
//! connect or lost its connection (for a second, or until its next good health check).
//!
//! A node whose health check goes unanswered (timeout, connection refused or lost) [`MARK_DOWN_AFTER`] times in a
//! row is marked down: the attempts in flight on it are abandoned and retried elsewhere at once (HAProxy's
//! `on-marked-down shutdown-sessions`), instead of waiting for their own timeout on a node that froze. A node that
//! answers "not ready" (draining, or stepping aside when cut off from its peers) is only taken out of rotation: it
//! is alive and finishes what it has in flight, and abandoning those attempts would turn a committed refresh
//! rotation into a reuse on the retry.

use super::mix::Draws;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

/// Consecutive unanswered health checks that mark a node down and end the attempts in flight on it (HAProxy's
/// `fall`).
pub const MARK_DOWN_AFTER: u32 = 2;

/// What a health check saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Answered, but not ready: out of rotation, its attempts in flight left to finish.
    NotReady,
    /// No answer in time, or no connection.
    Unreachable,
}

pub struct Balancer {
    balance: Balance,
    /// Per node: out of rotation until this many ms after `epoch` (`u64::MAX`: until a good health check).
    down_until_ms: Vec<AtomicU64>,
    /// Per node: consecutive unanswered health checks.
    failed_checks: Vec<AtomicU32>,
    /// Per node: how many times it was marked down; attempts in flight watch it.
    marked_down: Vec<watch::Sender<u64>>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Balancer {
    pub fn new(nodes: usize, balance: Balance) -> Self {
        Self {
            balance,
            down_until_ms: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            failed_checks: (0..nodes).map(|_| AtomicU32::new(0)).collect(),
            marked_down: (0..nodes).map(|_| watch::channel(0).0).collect(),
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

    /// The outcome of a health check of `node`: out of rotation unless ready, marked down (attempts in flight
    /// abandoned) at the [`MARK_DOWN_AFTER`]th unanswered check in a row.
    pub fn set_health(&self, node: usize, health: Health) {
        let up = health == Health::Ready;
        self.down_until_ms[node].store(if up { 0 } else { u64::MAX }, Ordering::Relaxed);
        if health != Health::Unreachable {
            self.failed_checks[node].store(0, Ordering::Relaxed);
        } else if self.failed_checks[node].fetch_add(1, Ordering::Relaxed) + 1 == MARK_DOWN_AFTER {
            self.marked_down[node].send_modify(|times| *times += 1);
        }
    }

    /// Runs `attempt` on `node` unless the node is marked down meanwhile: then `None`, at once.
    pub async fn unless_marked_down<T>(&self, node: usize, attempt: impl Future<Output = T>) -> Option<T> {
        let mut marks = self.marked_down[node].subscribe();
        tokio::select! {
            outcome = attempt => Some(outcome),
            _ = marks.changed() => None,
        }
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
        balancer.set_health(1, Health::Unreachable);
        assert!((0..6).all(|_| balancer.pick(None, &mut draws) != 1));
        assert!((0..6).all(|_| balancer.pick(Some(0), &mut draws) == 2), "a retry avoids the failed node");
        balancer.set_health(2, Health::NotReady);
        assert!((0..6).all(|_| balancer.pick(Some(0), &mut draws) != 0), "none healthy: any other node");
        balancer.set_health(1, Health::Ready);
        assert_eq!(balancer.up_count(), 2);
    }

    #[test]
    fn a_passive_ejection_lasts_a_second_and_a_good_health_check_ends_it() {
        let balancer = Balancer::new(2, Balance::Random);
        balancer.eject(0);
        assert!(!balancer.is_up(0) && balancer.is_up(1));
        let mut draws = Draws::new(5);
        assert!((0..20).all(|_| balancer.pick(None, &mut draws) == 1));
        balancer.set_health(0, Health::Ready);
        assert!(balancer.is_up(0));
        let picked: std::collections::BTreeSet<usize> = (0..50).map(|_| balancer.pick(None, &mut draws)).collect();
        assert_eq!(picked.len(), 2, "random reaches every healthy node");
    }

    #[tokio::test]
    async fn the_second_unanswered_check_in_a_row_ends_the_attempts_in_flight_on_that_node_only() {
        let balancer = Balancer::new(2, Balance::RoundRobin);
        let frozen = std::future::pending::<()>;
        let on_0 = balancer.unless_marked_down(0, frozen());
        let on_1 = balancer.unless_marked_down(1, async { "answered" });
        let marking = async {
            balancer.set_health(0, Health::Unreachable);
            balancer.set_health(0, Health::Ready);
            balancer.set_health(0, Health::Unreachable);
            balancer.set_health(0, Health::NotReady); // alive: the count starts again
            balancer.set_health(0, Health::Unreachable);
            tokio::task::yield_now().await;
            assert!(!balancer.is_up(0));
            balancer.set_health(0, Health::Unreachable); // the second in a row
        };
        let (on_0, on_1, ()) = tokio::join!(on_0, on_1, marking);
        assert_eq!((on_0, on_1), (None, Some("answered")));
        assert_eq!(balancer.unless_marked_down(0, async { 7 }).await, Some(7), "only attempts in flight end");
    }

    #[tokio::test]
    async fn a_node_answering_not_ready_keeps_its_attempts_in_flight() {
        let balancer = Balancer::new(2, Balance::RoundRobin);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<&str>();
        let draining = balancer.unless_marked_down(0, async { done_rx.await.unwrap() });
        let checks = async {
            for _ in 0..5 {
                balancer.set_health(0, Health::NotReady);
                tokio::task::yield_now().await;
            }
            assert!(!balancer.is_up(0), "out of rotation");
            done_tx.send("finished").unwrap();
        };
        let (outcome, ()) = tokio::join!(draining, checks);
        assert_eq!(outcome, Some("finished"));
    }

    #[test]
    fn a_single_node_is_always_the_answer() {
        let balancer = Balancer::new(1, Balance::RoundRobin);
        balancer.set_health(0, Health::Unreachable);
        let mut draws = Draws::new(0);
        assert_eq!(balancer.pick(None, &mut draws), 0);
        assert_eq!(balancer.pick(Some(0), &mut draws), 0);
        assert!(Balance::parse("random").is_ok() && Balance::parse("least-conn").is_err());
    }
}
