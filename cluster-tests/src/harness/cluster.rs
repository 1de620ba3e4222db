//! A cluster of real `idp serve` processes on loopback around one real `redis-server`.
//!
//! Each node gets its own config file and log in the cluster's working directory, free ports for its public,
//! gossip (UDP), RPC and admin listeners, and the shared key-encryption key in `IDP_KEK`. A test addresses a node
//! by index; signals (SIGKILL, SIGSTOP, SIGCONT, SIGTERM) go to its PID. Dropping the cluster kills every process
//! it started, and when a test is failing it first prints the tail of every log.

use super::config::{NodeConfig, Ports, Proxied, Timings, CLIENT_ID, CLIENT_SECRET, MASTER_NAME, PASSWORD};
use super::leases::{self, Lease};
use super::process::{free_tcp_port, free_udp_port, Process, Workdir};
pub use super::proxy::Link;
use super::proxy::{node_ip, Proxies};
use super::redis::{RedisClient, RedisServer};
use super::wait_for;
use crate::browser::Rp;
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Lines of each log printed when a test fails.
const TAIL_LINES: usize = 60;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub timings: Timings,
    /// `redis.min_replicas_ack`; with a value above 0 a Redis replica is started too.
    pub min_replicas_ack: u32,
    /// `shards`, when not the default (1024).
    pub shards: Option<u16>,
    /// The nodes' `log.level` (`IDP_LOG` of the test's environment replaces it).
    pub log_level: String,
    /// How long a node may take to become ready (`/readyz` 200).
    pub ready_within: Duration,
    /// TOML appended to node `i`'s file (by index; nodes beyond the list get nothing): the chaos suite's
    /// `[testing]` switches.
    pub node_extra_config: Vec<String>,
    /// Every gossip, RPC and Redis link of every node goes through a fault-injecting forwarder, so that
    /// [`Cluster::partition`] can cut it (each node then listens on its own loopback address, `127.0.0.N`).
    pub proxied: bool,
    /// Sentinels to start (with a Redis replica); the nodes then find the primary through them, and
    /// [`Cluster::kill_redis_primary`] makes them fail over. 0: the nodes use the primary's URL.
    pub sentinels: usize,
    /// Sentinel's `down-after-milliseconds`.
    pub sentinel_down_after: Duration,
    /// TOML appended to every node's file (more clients and users).
    pub extra_config: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            timings: Timings::default(),
            min_replicas_ack: 0,
            shards: None,
            log_level: "info".into(),
            ready_within: Duration::from_secs(30),
            node_extra_config: Vec::new(),
            proxied: false,
            sentinels: 0,
            sentinel_down_after: Duration::from_secs(1),
            extra_config: String::new(),
        }
    }
}

/// Where a node is in a test's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// SIGSTOPped: the process exists but does nothing.
    Stopped,
    /// Killed, drained or crashed.
    Gone,
}

/// One `idp serve` process and everything needed to restart it as the same node.
#[derive(Debug)]
pub struct NodeProcess {
    pub id: String,
    pub ports: Ports,
    pub config_path: PathBuf,
    /// Own address and proxies, in a proxied cluster.
    pub proxied: Option<Proxied>,
    log_path: PathBuf,
    process: Option<Process>,
    state: NodeState,
}

impl NodeProcess {
    /// The node's public base URL (`http://127.0.0.1:<http port>`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http)
    }

    /// The node's admin base URL (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.admin)
    }

    /// The gossip address peers use (its proxy, in a proxied cluster).
    pub fn gossip_address(&self) -> String {
        match self.proxied {
            Some(proxied) => proxied.gossip.to_string(),
            None => format!("127.0.0.1:{}", self.ports.gossip),
        }
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    fn process(&mut self) -> anyhow::Result<&mut Process> {
        self.process.as_mut().with_context(|| format!("{} has no process", self.id))
    }
}

/// A Redis server and the nodes around it.
pub struct Cluster {
    // Fields drop in order: nodes first, then Redis, then the directory (kept when a test fails).
    nodes: Vec<NodeProcess>,
    proxies: Option<Proxies>,
    sentinels: Vec<RedisServer>,
    /// Kept for its process: the replica the promoted one still has after a failover.
    _second_replica: Option<RedisServer>,
    redis_replica: Option<RedisServer>,
    redis: RedisServer,
    options: ClusterOptions,
    idp: PathBuf,
    issuer: String,
    kek: String,
    password_hash: String,
    http: reqwest::Client,
    dir: Workdir,
}

impl Cluster {
    /// Starts Redis and `options.nodes` nodes and waits until every node is ready.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let idp = idp_binary()?;
        let dir = Workdir::new("cluster")?;
        let redis = RedisServer::start_in(dir.path(), "redis", None)?;
        let redis_replica = match (options.min_replicas_ack, options.sentinels) {
            (0, 0) => None,
            _ => {
                let replica = RedisServer::start_in(dir.path(), "redis-replica", Some(&redis))?;
                replica.wait_replica_synced(Duration::from_secs(10))?;
                Some(replica)
            }
        };
        // With Sentinels and acknowledged writes, a second replica: the promoted one then still has a replica to
        // acknowledge writes (`redis.min_replicas_ack`) after the primary dies.
        let second_replica = match (options.min_replicas_ack, options.sentinels) {
            (0, _) | (_, 0) => None,
            _ => {
                let replica = RedisServer::start_in(dir.path(), "redis-replica-2", Some(&redis))?;
                replica.wait_replica_synced(Duration::from_secs(10))?;
                Some(replica)
            }
        };
        let password_hash = hash_password(&idp, PASSWORD)?;
        let mut kek_bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut kek_bytes).map_err(|_| anyhow::anyhow!("no system randomness"))?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let proxies = if options.proxied { Some(Proxies::new()?) } else { None };
        let quorum = options.sentinels / 2 + 1;
        let sentinels = (0..options.sentinels)
            .map(|index| {
                let name = format!("sentinel-{}", index + 1);
                let down_after = options.sentinel_down_after;
                RedisServer::start_sentinel_in(dir.path(), &name, &redis, MASTER_NAME, quorum, down_after)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut cluster = Self {
            nodes: Vec::new(),
            proxies,
            sentinels,
            _second_replica: second_replica,
            redis_replica,
            redis,
            issuer: String::new(),
            kek: STANDARD.encode(kek_bytes),
            password_hash,
            http,
            idp,
            options,
            dir,
        };
        let ports: Vec<Ports> = (0..cluster.options.nodes).map(|_| allocate_ports()).collect::<anyhow::Result<_>>()?;
        let first_http = ports.first().context("a cluster has at least one node")?.http;
        cluster.issuer = format!("http://127.0.0.1:{first_http}");
        let proxied: Vec<Option<Proxied>> = ports
            .iter()
            .enumerate()
            .map(|(index, ports)| cluster.proxy_node(index, *ports))
            .collect::<anyhow::Result<_>>()?;
        let gossip: Vec<String> = ports
            .iter()
            .zip(&proxied)
            .map(|(ports, proxied)| {
                proxied.map_or(format!("127.0.0.1:{}", ports.gossip), |proxied| proxied.gossip.to_string())
            })
            .collect();
        for ((index, ports), proxied) in ports.into_iter().enumerate().zip(proxied) {
            let seeds: Vec<String> =
                gossip.iter().enumerate().filter(|(other, _)| *other != index).map(|(_, seed)| seed.clone()).collect();
            cluster.add_node_process(ports, &seeds, proxied)?;
        }
        for index in 0..cluster.nodes.len() {
            cluster.wait_ready(index).await?;
        }
        Ok(cluster)
    }

    /// In a proxied cluster, the forwarders in front of node `index`'s gossip and RPC listeners (on its own
    /// loopback address); `None` otherwise.
    fn proxy_node(&self, index: usize, ports: Ports) -> anyhow::Result<Option<Proxied>> {
        let Some(proxies) = &self.proxies else { return Ok(None) };
        let ip = node_ip(index)?;
        proxies.register_node(index, ip);
        let gossip = proxies.udp_to_node(index, std::net::SocketAddr::new(ip, ports.gossip))?;
        let rpc = proxies.tcp_to_node(index, std::net::SocketAddr::new(ip, ports.rpc))?;
        Ok(Some(Proxied { ip, gossip, rpc }))
    }

    /// The Redis URL node `index` uses: its own forwarder in a proxied cluster (without Sentinels: the nodes find
    /// the primary's real address through them).
    fn redis_url_of(&self, index: usize) -> anyhow::Result<String> {
        match &self.proxies {
            Some(proxies) if self.sentinels.is_empty() => {
                let target = std::net::SocketAddr::from(([127, 0, 0, 1], self.redis.port()));
                Ok(format!("redis://{}", proxies.tcp_to_redis(index, target)?))
            }
            _ => Ok(self.redis.url()),
        }
    }

    /// Writes the node's config and starts it (without waiting for readiness).
    fn add_node_process(&mut self, ports: Ports, seeds: &[String], proxied: Option<Proxied>) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let id = format!("node-{}", index + 1);
        let config_path = self.dir.path().join(format!("{id}.toml"));
        let redis_url = self.redis_url_of(index)?;
        let sentinels: Vec<String> =
            self.sentinels.iter().map(|sentinel| format!("127.0.0.1:{}", sentinel.port())).collect();
        let text = NodeConfig {
            issuer: &self.issuer,
            node_id: &id,
            ports,
            seeds,
            redis_url: &redis_url,
            min_replicas_ack: self.options.min_replicas_ack,
            shards: self.options.shards,
            timings: &self.options.timings,
            log_level: &self.options.log_level,
            password_hash: &self.password_hash,
            proxied,
            sentinels: &sentinels,
            extra: &self.options.extra_config,
        }
        .render();
        let text = match self.options.node_extra_config.get(index) {
            Some(extra) => format!("{text}\n{extra}\n"),
            None => text,
        };
        std::fs::write(&config_path, text).with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = self.dir.path().join(format!("{id}.log"));
        let mut node = NodeProcess { id, ports, config_path, proxied, log_path, process: None, state: NodeState::Gone };
        self.spawn(&mut node)?;
        self.nodes.push(node);
        Ok(index)
    }

    fn spawn(&self, node: &mut NodeProcess) -> anyhow::Result<()> {
        let mut command = self.idp_command();
        command.arg("serve").arg("--config").arg(&node.config_path);
        node.process = Some(Process::spawn(&node.id, command, &node.log_path)?);
        node.state = NodeState::Running;
        Ok(())
    }

    /// `idp` with the cluster's environment: the shared KEK, and none of the caller's `IDP_*` variables (a node
    /// refuses unknown ones) except `IDP_LOG`.
    pub fn idp_command(&self) -> Command {
        let mut command = Command::new(&self.idp);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("IDP_") && name != "IDP_LOG" {
                command.env_remove(name.as_ref());
            }
        }
        command.env("IDP_KEK", &self.kek);
        command
    }

    /// Starts one more node, seeded with every other node's gossip address, and waits until it is ready.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let seeds: Vec<String> = self.nodes.iter().map(NodeProcess::gossip_address).collect();
        let ports = allocate_ports()?;
        let proxied = self.proxy_node(self.nodes.len(), ports)?;
        let index = self.add_node_process(ports, &seeds, proxied)?;
        self.wait_ready(index).await?;
        Ok(index)
    }

    /// Starts a killed or drained node again, as the same node on the same ports, and waits until it is ready.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let mut node = std::mem::replace(&mut self.nodes[index], placeholder());
        if node.state != NodeState::Gone {
            self.nodes[index] = node;
            bail!("node {} is still running: kill or drain it first", index + 1);
        }
        let spawned = self.spawn(&mut node);
        self.nodes[index] = node;
        spawned?;
        self.wait_ready(index).await
    }

    /// Polls the node's `/readyz` until 200, within `options.ready_within`; fails at once if the process exited.
    pub async fn wait_ready(&mut self, index: usize) -> anyhow::Result<()> {
        let within = self.options.ready_within;
        let deadline = Instant::now() + within;
        let url = format!("{}/readyz", self.nodes[index].admin_url());
        loop {
            let process = self.nodes[index].process()?;
            if let Some(status) = process.exited() {
                self.nodes[index].state = NodeState::Gone;
                bail!("{} exited before it was ready ({status}):\n{}", self.nodes[index].id, self.log_tail(index));
            }
            if let Ok(response) = self.http.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("{} not ready within {within:?}:\n{}", self.nodes[index].id, self.log_tail(index));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the node's `/readyz` answers 200 now.
    pub async fn is_ready(&self, index: usize) -> bool {
        let url = format!("{}/readyz", self.nodes[index].admin_url());
        matches!(self.http.get(url).send().await, Ok(response) if response.status().is_success())
    }

    /// SIGKILL.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        node.process()?.kill();
        node.state = NodeState::Gone;
        Ok(())
    }

    /// SIGSTOP: the process freezes, holding its sockets, believing it still owns its shards.
    pub fn stop(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        node.process()?.signal("STOP")?;
        node.state = NodeState::Stopped;
        Ok(())
    }

    /// SIGCONT.
    pub fn cont(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        node.process()?.signal("CONT")?;
        node.state = NodeState::Running;
        Ok(())
    }

    /// SIGTERM (graceful drain), then waits for the exit, at most `within`. Answers the exit status and how long
    /// the drain took.
    pub fn terminate(&mut self, index: usize, within: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        let node = &mut self.nodes[index];
        let process = node.process()?;
        process.signal("TERM")?;
        let status = process.wait_exit(within);
        node.state = NodeState::Gone;
        Ok((status?, started.elapsed()))
    }

    /// Sends SIGTERM without waiting ([`Cluster::wait_exit`] collects the exit).
    pub fn send_term(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes[index].process()?.signal("TERM")
    }

    /// Waits for a node's exit (after [`Cluster::send_term`]), at most `within`, polling without blocking the runtime.
    pub async fn wait_exit(&mut self, index: usize, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let node = &mut self.nodes[index];
            if let Some(status) = node.process()?.exited() {
                node.state = NodeState::Gone;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} still running {within:?} after SIGTERM:\n{}", self.nodes[index].id, self.log_tail(index));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (graceful drain), then waits for the exit without blocking the runtime, at most `within`. Answers the
    /// exit status and how long the drain took (the async counterpart of [`Cluster::terminate`]).
    pub async fn drain(&mut self, index: usize, within: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        self.send_term(index)?;
        let status = self.wait_exit(index, within).await?;
        Ok((status, started.elapsed()))
    }

    /// Cuts every link between node `index` and the others (gossip UDP both ways, RPC TCP both ways, open
    /// connections too), or between the node and Redis. Needs a cluster started with `proxied`.
    pub fn partition(&self, index: usize, link: Link) -> anyhow::Result<()> {
        if link == Link::Redis && !self.sentinels.is_empty() {
            bail!("a Redis partition needs a cluster without Sentinels (the nodes reach the primary directly)");
        }
        self.must_proxies(index)?.cut(index, link);
        Ok(())
    }

    /// Like [`Cluster::partition`], but a black hole: nothing crosses `link` and nothing is closed or refused
    /// either (connections stall until the ends' own timeouts fire).
    pub fn black_hole(&self, index: usize, link: Link) -> anyhow::Result<()> {
        if link == Link::Redis && !self.sentinels.is_empty() {
            bail!("a Redis partition needs a cluster without Sentinels (the nodes reach the primary directly)");
        }
        self.must_proxies(index)?.black_hole(index, link);
        Ok(())
    }

    /// Restores all links of node `index`.
    pub fn heal(&self, index: usize) -> anyhow::Result<()> {
        self.must_proxies(index)?.heal(index);
        Ok(())
    }

    /// SIGKILLs the Redis primary (a cluster with Sentinels promotes the replica).
    pub fn kill_redis_primary(&mut self) -> anyhow::Result<()> {
        if self.sentinels.is_empty() {
            bail!("a Redis failover needs a cluster started with `ClusterOptions::sentinels`");
        }
        self.redis.process().kill();
        Ok(())
    }

    /// The primary (`host:port`) the first Sentinel that answers names now.
    pub fn sentinel_primary(&self) -> anyhow::Result<String> {
        let mut last_error = anyhow::anyhow!("no Sentinel in this cluster");
        for sentinel in &self.sentinels {
            match sentinel.sentinel_primary(MASTER_NAME) {
                Ok(primary) => return Ok(primary),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    fn must_proxies(&self, index: usize) -> anyhow::Result<&Proxies> {
        if index >= self.nodes.len() {
            bail!("no node {} in a cluster of {}", index + 1, self.nodes.len());
        }
        self.proxies.as_ref().context("partitions need a cluster started with `ClusterOptions::proxied`")
    }

    pub fn node(&self, index: usize) -> &NodeProcess {
        &self.nodes[index]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Public base URL of node `index`.
    pub fn url(&self, index: usize) -> String {
        self.nodes[index].url()
    }

    /// Indexes of the running (not stopped, not gone) nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|index| self.nodes[*index].state == NodeState::Running).collect()
    }

    /// The node index of a node id (`node-2` → 1).
    pub fn index_of(&self, node_id: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.id == node_id)
    }

    /// The one issuer of every node.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn shards(&self) -> u16 {
        self.options.shards.unwrap_or(idp_proto::DEFAULT_SHARD_COUNT)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn redis(&self) -> &RedisServer {
        &self.redis
    }

    /// Sends a signal (`STOP`, `CONT`) to the Redis primary: Redis unreachable without losing its data.
    pub fn signal_redis(&mut self, signal: &str) -> anyhow::Result<()> {
        self.redis.process().signal(signal)
    }

    pub fn redis_replica(&self) -> Option<&RedisServer> {
        self.redis_replica.as_ref()
    }

    pub fn redis_client(&self) -> anyhow::Result<RedisClient> {
        self.redis.client()
    }

    /// The test relying party (confidential, first party), with a request timeout.
    pub fn rp(&self, timeout: Duration) -> anyhow::Result<Rp> {
        Rp::new(CLIENT_ID, CLIENT_SECRET, timeout)
    }

    /// The holder of shard `shard`'s lease.
    pub fn shard_lease(&self, shard: u16) -> anyhow::Result<Option<Lease>> {
        leases::shard_lease(&mut self.redis_client()?, shard)
    }

    /// The node index holding the lease of the shard a handle lives in.
    pub fn owner_of_handle(&self, handle: &str) -> anyhow::Result<Option<usize>> {
        let shard = leases::shard_of(handle, self.shards())?;
        Ok(self.shard_lease(shard)?.and_then(|lease| self.index_of(&lease.node_id)))
    }

    /// Waits until the lease of `shard` is held by a node other than `previous`, at a higher epoch. Answers the
    /// new lease.
    pub async fn wait_new_owner(&self, shard: u16, previous: &Lease, within: Duration) -> anyhow::Result<Lease> {
        wait_for(&format!("a new holder of shard {shard} after {previous:?}"), within, || async {
            self.shard_lease(shard)
                .ok()
                .flatten()
                .filter(|lease| lease.node_id != previous.node_id && lease.epoch > previous.epoch)
        })
        .await
    }

    /// Runs `idp <args>` with the cluster's environment, at most `within`; fails with its output unless it exits 0.
    pub async fn run_idp(&self, args: &[&str], within: Duration) -> anyhow::Result<String> {
        let mut command = self.idp_command();
        command.args(args);
        let log = self.dir.path().join(format!("idp-{}-{}.log", args.first().unwrap_or(&"cmd"), nanos()));
        let mut process = Process::spawn("idp", command, &log)?;
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = process.exited() {
                break status;
            }
            if Instant::now() >= deadline {
                bail!("idp {} still running after {within:?}:\n{}", args.join(" "), process.log_tail(TAIL_LINES));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        if !status.success() {
            bail!("idp {} failed ({status}):\n{output}", args.join(" "));
        }
        Ok(output)
    }

    /// A node's whole log so far.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.nodes[index].log_path).unwrap_or_default()
    }

    /// The last lines of a node's log.
    pub fn log_tail(&self, index: usize) -> String {
        super::process::tail(&self.nodes[index].log_path, TAIL_LINES)
    }

    /// Prints the tail of every log (nodes, Redis) to standard error.
    pub fn print_logs(&self) {
        for (index, node) in self.nodes.iter().enumerate() {
            eprintln!(
                "----- {} ({:?}, {}) last {TAIL_LINES} lines -----",
                node.id,
                node.state,
                node.log_path.display()
            );
            eprintln!("{}", self.log_tail(index));
        }
        eprintln!("----- redis -----\n{}", self.redis.log_tail(20));
        if let Some(replica) = &self.redis_replica {
            eprintln!("----- redis replica -----\n{}", replica.log_tail(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // A stopped process still dies of SIGKILL; every node is killed by PID and reaped before Redis goes.
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                process.kill();
            }
        }
    }
}

fn placeholder() -> NodeProcess {
    NodeProcess {
        id: String::new(),
        ports: Ports { http: 0, gossip: 0, rpc: 0, admin: 0 },
        config_path: PathBuf::new(),
        proxied: None,
        log_path: PathBuf::new(),
        process: None,
        state: NodeState::Gone,
    }
}

fn allocate_ports() -> anyhow::Result<Ports> {
    Ok(Ports { http: free_tcp_port()?, gossip: free_udp_port()?, rpc: free_tcp_port()?, admin: free_tcp_port()? })
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos())
}

/// The `idp` binary of the same cargo profile: beside this executable (`target/<profile>/`), or one level up from
/// a test executable (`target/<profile>/deps/`).
pub fn idp_binary() -> anyhow::Result<PathBuf> {
    let own = std::env::current_exe()?;
    let directory = own.parent().context("executable has no directory")?;
    let candidates = [directory.join("idp"), directory.join("../idp")];
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    let profile = if directory.ends_with("deps") { directory.parent().unwrap_or(directory) } else { directory };
    let release = if profile.ends_with("release") { " --release" } else { "" };
    bail!(
        "no idp binary in {}: build it first with `cargo build{release} -p idp-node --bin idp` (scripts/test does)",
        profile.display()
    )
}

/// `idp hash-password` of `password`: the argon2id PHC string every test user gets.
pub fn hash_password(idp: &Path, password: &str) -> anyhow::Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(idp)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} hash-password", idp.display()))?;
    child.stdin.take().context("stdin")?.write_all(format!("{password}\n").as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("idp hash-password failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}
