//! The randomized soak behind `scripts/chaos --minutes N` (`idp-chaos`): one proxied cluster, client load all the
//! time, and cycle after cycle a random fault on a random node, the cluster restored to health, and the checker
//! over that cycle's history. A seed (printed at start, `--seed` to replay) fixes the sequence of faults and
//! victims; timing on a shared machine still varies from run to run.

use super::checker::{Bounds, Report};
use super::clients::ClientOptions;
use super::run::ChaosRun;
use crate::harness::redis::RedisClient;
use crate::harness::{leases, Cluster, ClusterOptions, Link, NodeState};
use anyhow::Context;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The faults a cycle draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Kill,
    Stop,
    PartitionPeers,
    PartitionRedis,
    Drain,
    RotateKeysDuringKill,
    ScaleOutIn,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Kill,
        Fault::Stop,
        Fault::PartitionPeers,
        Fault::PartitionRedis,
        Fault::Drain,
        Fault::RotateKeysDuringKill,
        Fault::ScaleOutIn,
    ];
}

/// A small deterministic generator (SplitMix64): the same seed gives the same faults and victims.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// What the soak found.
#[derive(Debug, Default)]
pub struct SoakSummary {
    pub cycles: usize,
    pub operations: usize,
    /// Recovery figures by fault.
    pub recovery: BTreeMap<Fault, Vec<Duration>>,
    /// Violated reports, with the cycle and fault.
    pub violations: Vec<(usize, Fault, Report)>,
    /// Cycles that could not be run or restored (harness errors), with the error.
    pub errors: Vec<(usize, Fault, String)>,
}

impl SoakSummary {
    pub fn print(&self, seed: u64, elapsed: Duration) {
        println!("\nidp-chaos summary (seed {seed}, {:.1} min)", elapsed.as_secs_f64() / 60.0);
        println!("  cycles: {}, client operations checked: {}", self.cycles, self.operations);
        for (fault, figures) in &self.recovery {
            let mut sorted = figures.clone();
            sorted.sort();
            let median = sorted[sorted.len() / 2];
            let max = sorted[sorted.len() - 1];
            println!(
                "  {fault:?}: {} cycle(s), recovery median {} ms, max {} ms",
                sorted.len(),
                median.as_millis(),
                max.as_millis()
            );
        }
        println!("  cycles with violations: {}", self.violations.len());
        for (cycle, fault, report) in &self.violations {
            println!("  cycle {cycle} ({fault:?}):\n{report}");
        }
        println!("  cycles with harness errors: {}", self.errors.len());
        for (cycle, fault, error) in &self.errors {
            println!("  cycle {cycle} ({fault:?}): {error}");
        }
    }
}

/// Runs cycles until `minutes` are spent.
pub async fn soak(seed: u64, minutes: f64, nodes: usize, clients: usize) -> anyhow::Result<SoakSummary> {
    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut rng = Rng::new(seed);
    let options = ClusterOptions { nodes, proxied: true, ..ClusterOptions::default() };
    let mut cluster = Cluster::start(options).await.context("starting the cluster")?;
    println!("idp-chaos: cluster of {nodes} nodes in {}", cluster.dir().display());
    let mut summary = SoakSummary::default();
    // A cycle takes about 20 s; none starts that close to the deadline.
    while Instant::now() + Duration::from_secs(25) < deadline {
        summary.cycles += 1;
        let cycle = summary.cycles;
        let fault = Fault::ALL[rng.below(Fault::ALL.len())];
        let victim = rng.below(nodes);
        println!("idp-chaos: cycle {cycle}: {fault:?} on node-{}", victim + 1);
        let client_options = ClientOptions { clients, max_time: Duration::from_secs(120), ..Default::default() };
        let outcome = run_cycle(&mut cluster, cycle, fault, victim, client_options).await;
        if let Err(error) = restore(&mut cluster, nodes).await {
            summary.errors.push((cycle, fault, format!("restoring the cluster: {error:#}")));
            break;
        }
        match outcome {
            Ok(report) => {
                summary.operations += report.operations;
                if let Some((_, figure)) = report.recovery.first() {
                    summary.recovery.entry(fault).or_default().push(*figure);
                }
                println!("idp-chaos: cycle {cycle}: {}", report.summary());
                if !report.is_clean() {
                    println!("{report}");
                    summary.violations.push((cycle, fault, report));
                }
            }
            Err(error) => summary.errors.push((cycle, fault, format!("{error:#}"))),
        }
    }
    Ok(summary)
}

fn bounds() -> Bounds {
    Bounds { max_login_retries: 1, recovery: Duration::from_secs(10), ..Bounds::default() }
}

async fn run_cycle(
    cluster: &mut Cluster,
    cycle: usize,
    fault: Fault,
    victim: usize,
    options: ClientOptions,
) -> anyhow::Result<Report> {
    // A rotation during a kill is meant for the key ring's owner: the drawn victim stands in only when no node holds
    // the ring's lease.
    let victim = match fault {
        Fault::RotateKeysDuringKill => keyring_owner(cluster).await.unwrap_or(victim),
        _ => victim,
    };
    let mut run = ChaosRun::start(cluster, &format!("cycle-{cycle}"), options).await?;
    run.run_for(Duration::from_secs(2)).await;
    let url = cluster.url(victim);
    let victim_id = cluster.node(victim).id.clone();
    let label = format!("{fault:?} node-{}", victim + 1);
    // The shards the victim holds: after the recovery, operations on them must succeed (I7).
    let held = leases::shards_held_by(cluster.redis().address(), &victim_id).await.unwrap_or_default();
    match fault {
        Fault::Kill => {
            run.fault_on(label, held.clone());
            cluster.kill(victim)?;
            run.run_for(Duration::from_secs(1)).await;
            run.nodes.remove(&url);
            run.run_for(Duration::from_secs(5)).await;
        }
        Fault::Stop => {
            run.nodes.remove(&url);
            run.fault_on(label, held.clone());
            cluster.stop(victim)?;
            wait_moved(cluster, &victim_id).await?;
            run.fault(format!("SIGCONT node-{}", victim + 1));
            cluster.cont(victim)?;
            cluster.wait_ready(victim).await?;
            run.nodes.add(&url);
            run.run_for(Duration::from_secs(4)).await;
        }
        Fault::PartitionPeers | Fault::PartitionRedis => {
            let link = if fault == Fault::PartitionPeers { Link::Peers } else { Link::Redis };
            run.fault_on(label, held.clone());
            cluster.partition(victim, link)?;
            run.run_for(Duration::from_secs(1)).await;
            run.nodes.remove(&url);
            run.run_for(Duration::from_secs(4)).await;
            run.fault(format!("heal node-{}", victim + 1));
            cluster.heal(victim)?;
            cluster.wait_ready(victim).await?;
            run.nodes.add(&url);
            run.run_for(Duration::from_secs(4)).await;
        }
        Fault::Drain => {
            run.nodes.remove(&url);
            tokio::time::sleep(Duration::from_millis(500)).await;
            run.fault_on(label, held.clone());
            cluster.drain(victim, Duration::from_secs(20)).await?;
            cluster.restart(victim).await?;
            run.nodes.add(&url);
            run.run_for(Duration::from_secs(4)).await;
        }
        Fault::RotateKeysDuringKill => {
            run.fault_on(label, held.clone());
            cluster.kill(victim)?;
            run.nodes.remove(&url);
            let survivor = (victim + 1) % cluster.len();
            let config = cluster.node(survivor).config_path.to_string_lossy().into_owned();
            rotate_keys(cluster, &config).await?;
            run.run_for(Duration::from_secs(4)).await;
        }
        Fault::ScaleOutIn => {
            run.fault("a node joins".to_string());
            let joined = cluster.add_node().await?;
            let joined_url = cluster.url(joined);
            run.nodes.add(&joined_url);
            run.run_for(Duration::from_secs(3)).await;
            run.nodes.remove(&joined_url);
            tokio::time::sleep(Duration::from_millis(500)).await;
            run.fault("the joined node drains".to_string());
            cluster.drain(joined, Duration::from_secs(20)).await?;
            run.run_for(Duration::from_secs(3)).await;
        }
    }
    let report = run.finish(cluster, bounds()).await?;
    Ok(report)
}

/// The index of the node holding the key ring's lease.
async fn keyring_owner(cluster: &Cluster) -> Option<usize> {
    let redis = cluster.redis().address();
    let read = move || leases::read_lease(&mut RedisClient::connect(redis)?, "keyring");
    let lease = tokio::task::spawn_blocking(read).await.ok()?.ok()??;
    cluster.index_of(&lease.node_id)
}

async fn wait_moved(cluster: &Cluster, victim_id: &str) -> anyhow::Result<()> {
    leases::wait_shards_moved(cluster.redis().address(), victim_id, Duration::from_secs(20)).await
}

/// `idp admin rotate-keys`, retried while refused (the `next` key not yet published long enough), within 30 s.
async fn rotate_keys(cluster: &Cluster, config: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let args = ["admin", "rotate-keys", "--config", config, "--timeout", "45s"];
        match cluster.run_idp(&args, Duration::from_secs(60)).await {
            Ok(_) => return Ok(()),
            Err(error) if error.to_string().contains("refused") && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Brings the first `nodes` nodes back to running and ready, and heals every link.
async fn restore(cluster: &mut Cluster, nodes: usize) -> anyhow::Result<()> {
    for index in 0..nodes {
        cluster.heal(index)?;
        match cluster.node(index).state() {
            NodeState::Stopped => {
                cluster.cont(index)?;
                cluster.wait_ready(index).await?;
            }
            NodeState::Gone => cluster.restart(index).await?,
            NodeState::Running => cluster.wait_ready(index).await?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20).map(|_| (Fault::ALL[rng.below(Fault::ALL.len())], rng.below(3))).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        let mut rng = Rng::new(7);
        let drawn: std::collections::BTreeSet<usize> = (0..200).map(|_| rng.below(Fault::ALL.len())).collect();
        assert_eq!(drawn.len(), Fault::ALL.len(), "every fault is drawn");
    }
}
