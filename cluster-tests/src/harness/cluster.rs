//! A cluster of real `idp serve` processes on loopback around one real `redis-server`.
//!
//! Each node gets its own config file and log in the cluster's working directory, free ports for its public,
//! gossip (UDP), RPC and admin listeners, and the shared key-encryption key in `IDP_KEK`. A test addresses a node
//! by index; signals (SIGKILL, SIGSTOP, SIGCONT, SIGTERM) go to its PID. Dropping the cluster kills every process
//! it started, and when a test is failing it first prints the tail of every log.
//!
//! A cluster started with `proxied` can be partitioned: through network namespaces when the process is root
//! ([`super::netns`]: every node in a namespace of its own, Redis on the cluster's own address), else through
//! fault-injecting forwarders on loopback ([`super::proxy`]); [`super::netns::choose`] picks, `IDP_TEST_NETWORK`
//! forces one, and the start prints which on standard error.

use super::config::{NodeConfig, Ports, Proxied, Timings, CLIENT_ID, CLIENT_SECRET, MASTER_NAME, PASSWORD};
use super::leases::{self, Lease};
use super::netns::{self, Backend, Cut, Netns, TcpForwarder};
use super::process::{free_tcp_port, free_udp_port, Process, Workdir};
pub use super::proxy::Link;
use super::proxy::{node_ip, Proxies};
use super::redis::{RedisClient, RedisServer, LOOPBACK};
use super::wait_for;
use crate::browser::Rp;
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::net::{IpAddr, SocketAddr};
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
    /// Every gossip, RPC and Redis link of every node can be cut ([`Cluster::partition`],
    /// [`Cluster::black_hole`]): through network namespaces when the tests run as root (each node in its own
    /// namespace with its own address, Redis on the cluster's address), else through fault-injecting forwarders
    /// (each node then listens for gossip and RPC on its own loopback address, `127.0.0.N`). See
    /// [`netns::choose`].
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
    /// The address of its HTTP and admin listeners (`127.0.0.1`, or its own in a network namespace).
    pub ip: IpAddr,
    pub ports: Ports,
    pub config_path: PathBuf,
    /// Own address and proxies, in a proxied cluster.
    pub proxied: Option<Proxied>,
    log_path: PathBuf,
    process: Option<Process>,
    state: NodeState,
}

impl NodeProcess {
    /// The node's public base URL (`http://<ip>:<http port>`).
    pub fn url(&self) -> String {
        format!("http://{}", SocketAddr::new(self.ip, self.ports.http))
    }

    /// The node's admin base URL (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", SocketAddr::new(self.ip, self.ports.admin))
    }

    /// The gossip address peers use (its forwarder, in a cluster partitioned through proxies).
    pub fn gossip_address(&self) -> String {
        match self.proxied {
            Some(proxied) => proxied.gossip.to_string(),
            None => SocketAddr::new(self.ip, self.ports.gossip).to_string(),
        }
    }

    /// The address of its RPC listener (as peers reach it, without forwarders).
    pub fn rpc_address(&self) -> SocketAddr {
        SocketAddr::new(self.proxied.map_or(self.ip, |proxied| proxied.ip), self.ports.rpc)
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

/// How the links of a cluster started with `proxied` are cut.
enum Partitions {
    Proxies(Proxies),
    Namespaces(Netns),
}

/// A Redis server and the nodes around it.
pub struct Cluster {
    // Fields drop in order: nodes first, then Redis, then the partitions' forwarders or namespaces (no process of
    // the cluster is left in them or on their addresses), then the directory (kept when a test fails).
    nodes: Vec<NodeProcess>,
    sentinels: Vec<RedisServer>,
    /// Kept for its process: the replica the promoted one still has after a failover.
    _second_replica: Option<RedisServer>,
    redis_replica: Option<RedisServer>,
    redis: RedisServer,
    /// In network namespaces, the issuer's address in front of node 1.
    issuer_forwarder: Option<TcpForwarder>,
    partitions: Option<Partitions>,
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
        let backend = if options.proxied { Some(netns::choose()?) } else { None };
        // Declared before every server: on an early return, the servers drop first, then the namespaces.
        let namespaces = match backend {
            Some(Backend::Namespaces) => Some(Netns::create()?),
            _ => None,
        };
        match (backend, &namespaces) {
            (Some(Backend::Namespaces), Some(namespaces)) => {
                eprintln!("partitions: network namespaces ({})", namespaces.subnet())
            }
            (Some(Backend::Proxies), _) => eprintln!("partitions: proxies"),
            _ => {}
        }
        let host = namespaces.as_ref().map_or(LOOPBACK, Netns::redis_ip);
        let redis = RedisServer::start_in(dir.path(), "redis", host, None)?;
        let redis_replica = match (options.min_replicas_ack, options.sentinels) {
            (0, 0) => None,
            _ => {
                let replica = RedisServer::start_in(dir.path(), "redis-replica", host, Some(&redis))?;
                replica.wait_replica_synced(Duration::from_secs(10))?;
                Some(replica)
            }
        };
        // With Sentinels and acknowledged writes, a second replica: the promoted one then still has a replica to
        // acknowledge writes (`redis.min_replicas_ack`) after the primary dies.
        let second_replica = match (options.min_replicas_ack, options.sentinels) {
            (0, _) | (_, 0) => None,
            _ => {
                let replica = RedisServer::start_in(dir.path(), "redis-replica-2", host, Some(&redis))?;
                replica.wait_replica_synced(Duration::from_secs(10))?;
                Some(replica)
            }
        };
        let password_hash = hash_password(&idp, PASSWORD)?;
        let mut kek_bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut kek_bytes).map_err(|_| anyhow::anyhow!("no system randomness"))?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let partitions = match (backend, namespaces) {
            (_, Some(namespaces)) => Some(Partitions::Namespaces(namespaces)),
            (Some(Backend::Proxies), None) => Some(Partitions::Proxies(Proxies::new()?)),
            _ => None,
        };
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
            partitions,
            sentinels,
            _second_replica: second_replica,
            redis_replica,
            redis,
            issuer_forwarder: None,
            issuer: String::new(),
            kek: STANDARD.encode(kek_bytes),
            password_hash,
            http,
            idp,
            options,
            dir,
        };
        let ports: Vec<Ports> = (0..cluster.options.nodes).map(|_| allocate_ports()).collect::<anyhow::Result<_>>()?;
        let networks: Vec<(IpAddr, Option<Proxied>)> = ports
            .iter()
            .enumerate()
            .map(|(index, ports)| cluster.node_network(index, *ports))
            .collect::<anyhow::Result<_>>()?;
        // The issuer is node 1's URL on loopback (a node accepts http only there); in network namespaces the test
        // client reaches it through a forwarder to node 1's own address.
        let (first_ip, _) = networks.first().context("a cluster has at least one node")?;
        let issuer = SocketAddr::new(LOOPBACK, ports[0].http);
        if !first_ip.is_loopback() {
            let node_1 = SocketAddr::new(*first_ip, ports[0].http);
            cluster.issuer_forwarder = Some(TcpForwarder::start(issuer, node_1)?);
        }
        cluster.issuer = format!("http://{issuer}");
        let gossip: Vec<String> = ports
            .iter()
            .zip(&networks)
            .map(|(ports, (ip, proxied))| {
                proxied.map_or(SocketAddr::new(*ip, ports.gossip), |proxied| proxied.gossip).to_string()
            })
            .collect();
        for ((index, ports), (ip, proxied)) in ports.into_iter().enumerate().zip(networks) {
            let seeds: Vec<String> =
                gossip.iter().enumerate().filter(|(other, _)| *other != index).map(|(_, seed)| seed.clone()).collect();
            cluster.add_node_process(ports, &seeds, ip, proxied)?;
        }
        for index in 0..cluster.nodes.len() {
            cluster.wait_ready(index).await?;
        }
        Ok(cluster)
    }

    /// Where node `index` listens, and its forwarders: in network namespaces, its own namespace (created now) and
    /// address; through proxies, `127.0.0.1` for HTTP and admin, and forwarders in front of its gossip and RPC
    /// listeners on its own loopback address; otherwise `127.0.0.1` for everything.
    fn node_network(&self, index: usize, ports: Ports) -> anyhow::Result<(IpAddr, Option<Proxied>)> {
        match &self.partitions {
            Some(Partitions::Namespaces(namespaces)) => Ok((namespaces.add_node(index)?, None)),
            Some(Partitions::Proxies(proxies)) => {
                let ip = node_ip(index)?;
                proxies.register_node(index, ip);
                let gossip = proxies.udp_to_node(index, SocketAddr::new(ip, ports.gossip))?;
                let rpc = proxies.tcp_to_node(index, SocketAddr::new(ip, ports.rpc))?;
                Ok((LOOPBACK, Some(Proxied { ip, gossip, rpc })))
            }
            None => Ok((LOOPBACK, None)),
        }
    }

    /// The Redis URL node `index` uses: its own forwarder in a cluster partitioned through proxies (without
    /// Sentinels: the nodes find the primary's real address through them), else the primary's.
    fn redis_url_of(&self, index: usize) -> anyhow::Result<String> {
        match &self.partitions {
            Some(Partitions::Proxies(proxies)) if self.sentinels.is_empty() => {
                Ok(format!("redis://{}", proxies.tcp_to_redis(index, self.redis.address())?))
            }
            _ => Ok(self.redis.url()),
        }
    }

    /// Writes the node's config and starts it (without waiting for readiness).
    fn add_node_process(
        &mut self,
        ports: Ports,
        seeds: &[String],
        ip: IpAddr,
        proxied: Option<Proxied>,
    ) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let id = format!("node-{}", index + 1);
        let config_path = self.dir.path().join(format!("{id}.toml"));
        let redis_url = self.redis_url_of(index)?;
        let sentinels: Vec<String> = self.sentinels.iter().map(|sentinel| sentinel.address().to_string()).collect();
        let text = NodeConfig {
            issuer: &self.issuer,
            node_id: &id,
            listen_ip: ip,
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
        let mut node =
            NodeProcess { id, ip, ports, config_path, proxied, log_path, process: None, state: NodeState::Gone };
        self.spawn(index, &mut node)?;
        self.nodes.push(node);
        Ok(index)
    }

    /// Starts node `index`'s process: `idp serve`, in its network namespace when the cluster has them (`ip netns
    /// exec` execs `idp`, so the PID signalled is the node's own).
    fn spawn(&self, index: usize, node: &mut NodeProcess) -> anyhow::Result<()> {
        let command = match &self.partitions {
            Some(Partitions::Namespaces(namespaces)) => namespaces.command(index, &self.idp),
            _ => Command::new(&self.idp),
        };
        let mut command = self.with_cluster_env(command);
        command.arg("serve").arg("--config").arg(&node.config_path);
        node.process = Some(Process::spawn(&node.id, command, &node.log_path)?);
        node.state = NodeState::Running;
        Ok(())
    }

    /// `idp` with the cluster's environment: the shared KEK, and none of the caller's `IDP_*` variables (a node
    /// refuses unknown ones) except `IDP_LOG`.
    pub fn idp_command(&self) -> Command {
        self.with_cluster_env(Command::new(&self.idp))
    }

    fn with_cluster_env(&self, mut command: Command) -> Command {
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
        let (ip, proxied) = self.node_network(self.nodes.len(), ports)?;
        let index = self.add_node_process(ports, &seeds, ip, proxied)?;
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
        let spawned = self.spawn(index, &mut node);
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

    /// Cuts every link between node `index` and the others (gossip UDP both ways, RPC TCP both ways), or between
    /// the node and Redis, failing fast: open connections are closed and new ones fail at once. Needs a cluster
    /// started with `proxied`. Through proxies a connection is accepted by the forwarder and closed; in network
    /// namespaces `connect` fails with "Network is unreachable" and open sockets are destroyed (`ss -K`). In both,
    /// gossip datagrams vanish and the test client still reaches the node's HTTP and admin listeners.
    pub fn partition(&self, index: usize, link: Link) -> anyhow::Result<()> {
        match self.must_partitions(index, Some(link))? {
            Partitions::Proxies(proxies) => proxies.cut(index, link),
            Partitions::Namespaces(namespaces) => namespaces.cut(index, link, Cut::FailFast)?,
        }
        Ok(())
    }

    /// Like [`Cluster::partition`], but a black hole: nothing crosses `link` and nothing is closed or refused
    /// either (the ends learn of it only from their own timeouts). Through proxies a new connection is accepted
    /// and never answered; in network namespaces the router drops every packet, so a new connection hangs in
    /// SYN-SENT, and open connections resume after [`Cluster::heal`] (TCP retransmits) where the proxies drop the
    /// bytes and close them.
    pub fn black_hole(&self, index: usize, link: Link) -> anyhow::Result<()> {
        match self.must_partitions(index, Some(link))? {
            Partitions::Proxies(proxies) => proxies.black_hole(index, link),
            Partitions::Namespaces(namespaces) => namespaces.cut(index, link, Cut::Silent)?,
        }
        Ok(())
    }

    /// Restores all links of node `index`.
    pub fn heal(&self, index: usize) -> anyhow::Result<()> {
        match self.must_partitions(index, None)? {
            Partitions::Proxies(proxies) => proxies.heal(index),
            Partitions::Namespaces(namespaces) => namespaces.heal(index)?,
        }
        Ok(())
    }

    /// How this cluster's links are cut (`None`: not started `proxied`).
    pub fn partitions(&self) -> Option<Backend> {
        match self.partitions {
            Some(Partitions::Proxies(_)) => Some(Backend::Proxies),
            Some(Partitions::Namespaces(_)) => Some(Backend::Namespaces),
            None => None,
        }
    }

    /// The cluster's network namespaces, when its partitions go through them.
    pub fn namespaces(&self) -> Option<&Netns> {
        match &self.partitions {
            Some(Partitions::Namespaces(namespaces)) => Some(namespaces),
            _ => None,
        }
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

    /// The partitions, for cutting `link` (`None`: healing) of node `index`.
    fn must_partitions(&self, index: usize, link: Option<Link>) -> anyhow::Result<&Partitions> {
        if index >= self.nodes.len() {
            bail!("no node {} in a cluster of {}", index + 1, self.nodes.len());
        }
        let partitions =
            self.partitions.as_ref().context("partitions need a cluster started with `ClusterOptions::proxied`")?;
        if matches!(partitions, Partitions::Proxies(_)) && link == Some(Link::Redis) && !self.sentinels.is_empty() {
            bail!(
                "a Redis partition through proxies needs a cluster without Sentinels (the nodes reach the primary \
                 directly)"
            );
        }
        Ok(partitions)
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
        ip: LOOPBACK,
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
