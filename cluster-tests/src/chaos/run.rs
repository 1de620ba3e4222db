//! Around a chaos run: the Redis command stream recorded while it runs ([`Monitor`]), the after-run probes of
//! every record the clients were acknowledged and still hold ([`probe`]), and the facts the checker needs
//! ([`gather_facts`]).

use super::checker::{check, last_disturbed, Bounds, Facts, JwksSample, Report};
use super::clients::{recorded, ClientOptions, HeldCode, Leftover, Nodes, Workload};
use super::history::{fingerprint, shard_of_handle, History, Invocation, OpKind, Outcome, Produced};
use super::redis_log::{self, Command};
use crate::browser::{OpResult, Rp, Tokens};
use crate::harness::process::Process;
use crate::harness::redis::{RedisClient, Resp};
use crate::harness::{wait_for, Cluster};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Probes running at once.
const PROBES_IN_FLIGHT: usize = 8;
/// How long one probe is retried while its outcome is unknown (a shard moving after a fault takes seconds).
const PROBE_BUDGET: Duration = Duration::from_secs(20);
/// Pause between two attempts of one probe.
const PROBE_PAUSE: Duration = Duration::from_millis(500);
/// Attempts of one probe at most (the budget bounds them first, unless attempts answer at once).
const PROBE_ATTEMPTS: u32 = 60;

/// `redis-cli MONITOR` against the cluster's Redis, writing every command Redis runs to a file; killed on drop.
pub struct Monitor {
    process: Process,
    path: PathBuf,
    /// Every shard's epoch read right after MONITOR attached: the replay's starting point.
    epochs: BTreeMap<u16, u64>,
}

impl Monitor {
    /// Starts monitoring the cluster's Redis and waits until Redis confirmed it (`OK` on the first line).
    pub async fn start(cluster: &Cluster, label: &str) -> anyhow::Result<Self> {
        Self::start_on(cluster.redis().address(), cluster.dir(), label).await
    }

    /// Starts monitoring the Redis at `redis` (a promoted replica), writing into `dir`.
    pub async fn start_on(redis: SocketAddr, dir: &std::path::Path, label: &str) -> anyhow::Result<Self> {
        let path = dir.join(format!("redis-monitor-{label}.log"));
        let mut command = std::process::Command::new("redis-cli");
        command.args(["-h", &redis.ip().to_string(), "-p", &redis.port().to_string(), "monitor"]);
        let process = Process::spawn("redis-cli monitor", command, &path)?;
        let file = path.clone();
        wait_for("redis-cli monitor to attach", Duration::from_secs(10), || {
            let started = std::fs::read_to_string(&file).is_ok_and(|text| text.starts_with("OK"));
            async move { started.then_some(()) }
        })
        .await?;
        let epochs = tokio::task::spawn_blocking(move || shard_epochs(redis)).await??;
        Ok(Self { process, path, epochs })
    }

    /// Whether `redis-cli monitor` still runs (a stream cut short judges only part of the run).
    pub fn alive(&mut self) -> bool {
        self.process.exited().is_none()
    }

    /// Every command seen so far.
    pub fn commands(&self) -> anyhow::Result<Vec<Command>> {
        let bytes = std::fs::read(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        Ok(redis_log::parse(&String::from_utf8_lossy(&bytes)))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// Every shard's epoch (`idp:epoch:shard:<n>`): one SCAN, one MGET.
fn shard_epochs(address: SocketAddr) -> anyhow::Result<BTreeMap<u16, u64>> {
    let mut redis = RedisClient::connect(address)?;
    let keys = redis.scan("idp:epoch:shard:*")?;
    let mut epochs = BTreeMap::new();
    if keys.is_empty() {
        return Ok(epochs);
    }
    let mut command = vec!["MGET"];
    command.extend(keys.iter().map(String::as_str));
    let reply = redis.command(&command)?;
    let Resp::Array(Some(values)) = reply else { anyhow::bail!("unexpected MGET reply {reply:?}") };
    for (key, value) in keys.iter().zip(values) {
        let shard = key.strip_prefix("idp:epoch:shard:").and_then(|number| number.parse::<u16>().ok());
        let epoch = value.text()?.and_then(|text| text.parse::<u64>().ok());
        if let (Some(shard), Some(epoch)) = (shard, epoch) {
            epochs.insert(shard, epoch);
        }
    }
    Ok(epochs)
}

/// Spends every held code and rotates the latest token of every live family, through the pool, recording each
/// attempt as [`OpKind::Probe`]: retried on the next node while unknown, for [`PROBE_BUDGET`] (the checker reports
/// a record no probe got a definite answer for). An empty pool is an error: nothing could be probed.
pub async fn probe(rp: &Rp, nodes: &Nodes, history: &History, leftover: &Leftover) -> anyhow::Result<()> {
    let jobs = leftover.held_codes.len() + leftover.families.len();
    anyhow::ensure!(jobs == 0 || !nodes.all().is_empty(), "no node in the pool to probe {jobs} records with");
    let mut jobs: Vec<Job> = leftover.held_codes.iter().cloned().map(Job::Code).collect();
    jobs.extend(leftover.families.iter().map(|family| Job::Refresh(family.login, family.refresh.clone())));
    let mut running = tokio::task::JoinSet::new();
    for (turn, job) in jobs.into_iter().enumerate() {
        if running.len() >= PROBES_IN_FLIGHT {
            running.join_next().await;
        }
        let (rp, nodes, history) = (rp.clone(), nodes.clone(), history.clone());
        running.spawn(async move { job.run(&rp, &nodes, &history, turn).await });
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

enum Job {
    Code(HeldCode),
    Refresh(u64, String),
}

impl Job {
    async fn run(self, rp: &Rp, nodes: &Nodes, history: &History, turn: usize) {
        let deadline = tokio::time::Instant::now() + PROBE_BUDGET;
        for attempt in 0..PROBE_ATTEMPTS {
            // The pool was checked before the probes started, and nothing changes it after the run.
            let Some(node) = nodes.pick(turn + attempt as usize) else { return };
            let outcome = self.attempt(rp, &node, history).await;
            if !matches!(outcome, Err(Outcome::Unknown(_))) || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(PROBE_PAUSE).await;
        }
    }

    async fn attempt(&self, rp: &Rp, node: &str, history: &History) -> Result<(), Outcome> {
        let produced = |tokens: &Tokens| Produced {
            refresh_out: tokens.refresh_token.as_deref().map(fingerprint),
            tokens: std::iter::once(tokens.access_token.clone()).chain(tokens.id_token.clone()).collect(),
            ..Produced::default()
        };
        let result: OpResult<Tokens> = match self {
            Self::Code(held) => {
                let invocation = Invocation {
                    login: Some(held.login),
                    code: Some(fingerprint(&held.code)),
                    shard: shard_of_handle(&held.code),
                    ..Invocation::default()
                };
                let step = rp.exchange(node, &held.code, &held.verifier);
                recorded(history, usize::MAX, OpKind::Probe, node, invocation, step, produced).await
            }
            Self::Refresh(login, refresh) => {
                let invocation = Invocation {
                    login: Some(*login),
                    refresh_in: Some(fingerprint(refresh)),
                    shard: shard_of_handle(refresh),
                    ..Invocation::default()
                };
                let step = rp.refresh(node, refresh);
                recorded(history, usize::MAX, OpKind::Probe, node, invocation, step, produced).await
            }
        };
        result.map(|_| ()).map_err(|error| super::clients::outcome_of(&error))
    }
}

/// The facts after a run: every running node's JWKS, the Redis streams of `monitors`, the faults.
pub async fn gather_facts(
    cluster: &Cluster,
    rp: &Rp,
    monitors: &[Monitor],
    faults: Vec<(Duration, String)>,
    bounds: Bounds,
) -> anyhow::Result<Facts> {
    let mut jwks = Vec::new();
    for index in cluster.running() {
        let url = cluster.url(index);
        let served = rp.get_json(&url, "/jwks").await.map_err(|error| anyhow::anyhow!("jwks of {url}: {error}"))?;
        jwks.push((cluster.node(index).id.clone(), served));
    }
    let redis_streams = monitors.iter().map(Monitor::commands).collect::<anyhow::Result<_>>()?;
    let redis_epochs = monitors.iter().map(|monitor| monitor.epochs.clone()).collect();
    Ok(Facts {
        issuer: cluster.issuer().to_string(),
        jwks,
        faults,
        redis_streams,
        redis_epochs,
        bounds,
        victim_shards: BTreeMap::new(),
        jwks_samples: Vec::new(),
    })
}

/// One chaos run against a started cluster: clients under way, the Redis stream recorded, faults noted.
pub struct ChaosRun {
    pub history: History,
    pub nodes: Nodes,
    pub rp: Rp,
    monitors: Vec<Monitor>,
    /// The first monitors whose Redis was killed on purpose: their streams may end before the run.
    monitors_lost: usize,
    workload: Option<Workload>,
    faults: Vec<(Duration, String)>,
    victim_shards: BTreeMap<usize, BTreeSet<u16>>,
    sampler: JwksSampler,
}

/// Fetches the JWKS of every node in the pool every [`JWKS_EVERY`] while the run lasts (I4 at every moment);
/// stopped on drop.
struct JwksSampler {
    samples: Arc<Mutex<Vec<JwksSample>>>,
    task: tokio::task::JoinHandle<()>,
}

/// How often the sampler fetches every node's JWKS.
pub const JWKS_EVERY: Duration = Duration::from_millis(200);

impl JwksSampler {
    fn start(rp: &Rp, nodes: &Nodes, history: &History) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (rp, nodes, history, shared) = (rp.clone(), nodes.clone(), history.clone(), samples.clone());
        let task = tokio::spawn(async move {
            loop {
                for node in nodes.all() {
                    let sent = history.now();
                    let fetched = tokio::time::timeout(JWKS_EVERY * 5, rp.get_json(&node, "/jwks")).await;
                    if let Ok(Ok(jwks)) = fetched {
                        let mut samples = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        JwksSample::record(&mut samples, &node, sent, jwks);
                    }
                }
                tokio::time::sleep(JWKS_EVERY).await;
            }
        });
        Self { samples, task }
    }

    fn samples(&self) -> Vec<JwksSample> {
        self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Drop for JwksSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChaosRun {
    /// Starts recording Redis, then the clients, every running node in the pool.
    pub async fn start(cluster: &Cluster, label: &str, options: ClientOptions) -> anyhow::Result<Self> {
        let monitor = Monitor::start(cluster, label).await?;
        let rp = cluster.rp(Duration::from_secs(10))?;
        let nodes = Nodes::new(cluster.running().into_iter().map(|index| cluster.url(index)).collect());
        let history = History::new();
        let workload = Some(Workload::start(&rp, &nodes, &history, options));
        let sampler = JwksSampler::start(&rp, &nodes, &history);
        Ok(Self {
            history,
            nodes,
            rp,
            monitors: vec![monitor],
            monitors_lost: 0,
            workload,
            faults: Vec::new(),
            victim_shards: BTreeMap::new(),
            sampler,
        })
    }

    /// Also records the Redis at `redis` from now on (a replica promoted after a failover); its stream is judged
    /// on its own.
    pub async fn monitor_also(&mut self, cluster: &Cluster, redis: SocketAddr, label: &str) -> anyhow::Result<()> {
        self.monitors.push(Monitor::start_on(redis, cluster.dir(), label).await?);
        Ok(())
    }

    /// Notes that the Redis every monitor so far watches was killed: their streams end there, and are judged up to
    /// that point (any other monitor that exits before the run's end is an error: I6 evidence cut short).
    pub fn redis_monitored_so_far_lost(&mut self) {
        self.monitors_lost = self.monitors.len();
    }

    /// Notes that a fault is injected now.
    pub fn fault(&mut self, label: impl Into<String>) {
        self.faults.push((self.history.now(), label.into()));
    }

    /// Notes that a fault is injected now on a node holding `shards` (read just before): after the recovery, the
    /// checker demands successful operations on handles of those shards (I7).
    pub fn fault_on(&mut self, label: impl Into<String>, shards: BTreeSet<u16>) {
        self.victim_shards.insert(self.faults.len(), shards);
        self.fault(label);
    }

    /// Lets the clients run on for `duration`.
    pub async fn run_for(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Stops the clients, probes what they hold, gathers the facts and checks every invariant.
    pub async fn finish(mut self, cluster: &Cluster, bounds: Bounds) -> anyhow::Result<Report> {
        let leftover = match self.workload.take() {
            Some(workload) => workload.finish().await,
            None => Leftover::default(),
        };
        probe(&self.rp, &self.nodes, &self.history, &leftover).await?;
        for (index, monitor) in self.monitors.iter_mut().enumerate().skip(self.monitors_lost) {
            anyhow::ensure!(
                monitor.alive(),
                "redis-cli monitor {index} ({}) exited during the run: the I6 evidence is cut short",
                monitor.path().display()
            );
        }
        let mut facts = gather_facts(cluster, &self.rp, &self.monitors, self.faults.clone(), bounds).await?;
        facts.victim_shards = self.victim_shards.clone();
        facts.jwks_samples = self.sampler.samples();
        let history = self.history.snapshot();
        let report = check(&history, &facts);
        if report.is_clean() {
            // The streams are large; a violated run keeps them as evidence.
            for monitor in &self.monitors {
                let _ = std::fs::remove_file(monitor.path());
            }
        }
        if let Some((first_fault, _)) = self.faults.first() {
            for entry in last_disturbed(&history, *first_fault, 5) {
                println!("chaos: last disturbed: {}", entry.describe());
            }
        }
        println!(
            "chaos: {} rounds, {} held codes, {} live families probed; {}",
            leftover.rounds,
            leftover.held_codes.len(),
            leftover.families.len(),
            report.summary()
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::clients::Family;

    #[tokio::test]
    async fn probing_with_an_empty_pool_is_an_error_not_a_pass() {
        let rp = Rp::new("client", "secret", Duration::from_secs(1)).unwrap();
        let history = History::new();
        let leftover = Leftover { families: vec![Family { login: 1, refresh: "r".into() }], ..Leftover::default() };
        let error = probe(&rp, &Nodes::default(), &history, &leftover).await.unwrap_err();
        assert!(error.to_string().contains("no node in the pool"), "{error}");
        assert!(history.is_empty(), "nothing was recorded as probed");
        // Nothing to probe needs no node.
        probe(&rp, &Nodes::default(), &history, &Leftover::default()).await.unwrap();
    }
}
