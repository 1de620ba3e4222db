//! Partitions through Linux network namespaces, when the tests run as root: each node in a namespace of its own,
//! every link a real IP link through a router namespace, and cuts made by the kernel's routing.
//!
//! [`choose`] picks the backend of a partitionable (`proxied`) cluster once per process: this one when the process
//! is root and a probe namespace can be created and deleted, else the forwarders of [`super::proxy`].
//! `IDP_TEST_NETWORK=proxy|netns` forces one; forcing `netns` where it cannot work is an error that says why, never
//! a silent fallback.
//!
//! # Topology of one cluster
//!
//! Each cluster takes a number `X` (1..=250) and the subnet `10.213.X.0/24`:
//!
//! ```text
//!   root namespace                    idp{X}h (router)                idp{X}n{i} (node i)
//!   idpr{X}: 10.213.X.1 test client   idpr{X}p ┐          ┌ n0 ───── eth0: 10.213.X.129  idp serve
//!            10.213.X.2 Redis,        lo: .3   ├ routes ──┼ n1 ───── eth0: 10.213.X.130  idp serve
//!            replicas, Sentinels               ┘          └ n2 ───── eth0: 10.213.X.131  idp serve
//! ```
//!
//! The hub namespace `idp{X}h` routes (IP forwarding on, one veth per node, `/32` routes) rather than bridges, so
//! that a cut can be made on the path between two ends, where the kernel drops packets silently. Every other end
//! reaches the whole subnet through the hub (`10.213.X.0/24 via 10.213.X.3 onlink`), so no ARP tricks are needed.
//! Node `i` listens on `10.213.X.(129 + i)` for everything (HTTP, admin, RPC, gossip) and advertises it; Redis,
//! its replicas and the Sentinels listen on `10.213.X.2` in the root namespace (distinct ports); the test client
//! connects from `10.213.X.1`. Nodes run as `ip netns exec idp{X}n{i} idp serve ...`: `ip` execs the program, so
//! the PID the harness signals is the node's own.
//!
//! # Cuts
//!
//! tc cannot drop packets on this kernel (no `netem` or `prio` qdisc, no gact action, no `flower`), so links are
//! cut with routing instead:
//!
//! - The hub holds one policy rule per direction: `from 10.213.X.(129+i) to 10.213.X.128/25 blackhole` and back
//!   for [`Link::Peers`] (every node, also one added later), `from <node> to 10.213.X.2 blackhole` and back for
//!   [`Link::Redis`]. A router drops such packets silently: that alone is a black hole ([`Cut::Silent`]): open
//!   connections stall, new connections hang in SYN-SENT, datagrams vanish, and the ends learn of it only from
//!   their own timeouts.
//! - A fail-fast cut ([`Cut::FailFast`], as the proxies' `partition`) adds `unreachable` policy rules for TCP at
//!   the ends (`to <address> ipproto tcp unreachable`, in the cut node's namespace for each peer's address and in
//!   each peer's for the cut node's, or for Redis's address): new connections fail at once with "Network is
//!   unreachable". Then `ss -K` destroys the TCP sockets that cross the cut at both ends (in the root namespace
//!   only Redis's sockets to the cut node's address), so open connections fail at once too. Gossip datagrams are
//!   still sent and vanish in the hub, as the proxies drop them (an unreachable route would fail every `sendto`
//!   of the gossip loop instead).
//! - Healing removes the node's rules and routes (those that another cut node still needs stay). Connections
//!   that stalled in a black hole resume (TCP retransmits), unlike through the proxies, which drop the bytes.
//!
//! The test client (`10.213.X.1`) always reaches every node: no cut names it.
//!
//! # Ownership and leftovers
//!
//! `X` is claimed atomically by creating the root-side veth `idpr{X}` (it fails when the name exists); whoever
//! holds that link owns every `idp{X}*` name, and deletes leftover namespaces of that name before building. The
//! owner writes its PID and start time to `/tmp/idp-netns/{X}.pid`. Dropping a [`Netns`] deletes the namespaces,
//! the root link and the file, also while a failing test unwinds. A process that died without that (SIGKILL, a
//! test timeout) leaves them behind: before claiming, every owner file whose process is gone is taken by renaming
//! it (one reaper wins) and that `X`'s namespaces and link are deleted. Nothing else is ever deleted: a link
//! `idpr{X}` without an owner file (a claim under way, or a crash between the claim and the file) is left alone.

use super::proxy::Link;
use anyhow::{bail, Context};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The environment variable that forces a backend: `proxy` or `netns`.
pub const ENV: &str = "IDP_TEST_NETWORK";
/// Where owners record themselves.
const OWNERS: &str = "/tmp/idp-netns";
/// The first two octets of every cluster's subnet.
const NET: [u8; 2] = [10, 213];
/// The last octet of node 0's address; nodes fill `10.213.X.128/25`.
const FIRST_NODE: u8 = 129;
/// Nodes of one cluster at most (`.129` to `.254`).
pub const MAX_NODES: usize = 126;
/// The priority of the hub's blackhole rules and of the ends' unreachable rules (before `main` at 32766).
const RULE_PREF: &str = "1000";

/// How a partitionable cluster's links are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Fault-injecting forwarders on loopback ([`super::proxy`]); needs no privilege.
    Proxies,
    /// Network namespaces, veth links and routes (this module); needs root.
    Namespaces,
}

/// How a cut fails the traffic that crosses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// New connections fail at once and open ones are closed (`Cluster::partition`).
    FailFast,
    /// Nothing is refused or closed, packets vanish (`Cluster::black_hole`).
    Silent,
}

/// The programs the backend runs (iproute2's `ip` and `ss`, procps' `sysctl`).
#[derive(Debug, Clone)]
struct Tools {
    ip: PathBuf,
    ss: PathBuf,
    sysctl: PathBuf,
}

/// The backend of a partitionable cluster: [`ENV`] when set, else namespaces when [`usable`], else proxies.
pub fn choose() -> anyhow::Result<Backend> {
    let forced = std::env::var(ENV).ok();
    choose_from(forced.as_deref(), usable())
}

fn choose_from(forced: Option<&str>, usable: Result<(), String>) -> anyhow::Result<Backend> {
    match forced.map(str::trim) {
        Some("proxy") => Ok(Backend::Proxies),
        Some("netns") => match usable {
            Ok(()) => Ok(Backend::Namespaces),
            Err(reason) => bail!("{ENV}=netns, but network namespaces are unusable here: {reason}"),
        },
        None | Some("") => Ok(if usable.is_ok() { Backend::Namespaces } else { Backend::Proxies }),
        Some(other) => bail!("{ENV}={other:?}: expected `proxy` or `netns`"),
    }
}

/// Whether this process can build namespaces (probed once: root, the programs, a probe namespace with a veth
/// pair, a blackhole rule and a TCP-only unreachable rule, then deleted); the error says why not.
pub fn usable() -> Result<(), String> {
    tools().map(|_| ())
}

fn tools() -> Result<&'static Tools, String> {
    static PROBE: OnceLock<Result<Tools, String>> = OnceLock::new();
    PROBE.get_or_init(probe).as_ref().map_err(Clone::clone)
}

fn probe() -> Result<Tools, String> {
    let uid = effective_uid().map_err(|error| format!("cannot read the effective uid: {error:#}"))?;
    if uid != 0 {
        return Err(format!("not root (effective uid {uid}); namespaces, links and routes need root"));
    }
    let tools = Tools {
        ip: find_program("ip", "iproute2")?,
        ss: find_program("ss", "iproute2")?,
        sysctl: find_program("sysctl", "procps")?,
    };
    let name = format!("idpprobe{}", std::process::id());
    // A namespace of this name can only be a leftover of a dead process that had this PID.
    let _ = run(&tools.ip, ["netns", "del", &name]);
    run(&tools.ip, ["netns", "add", &name]).map_err(|error| format!("{error:#}"))?;
    let checked = [
        vec!["-n", &name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
        vec!["-n", &name, "rule", "add", "pref", RULE_PREF, "from", "10.213.0.1", "to", "10.213.0.2", "blackhole"],
        vec!["-n", &name, "rule", "add", "pref", "1001", "to", "10.213.0.2/32", "ipproto", "tcp", "unreachable"],
    ]
    .iter()
    .try_for_each(|args| run(&tools.ip, args).map(|_| ()));
    let deleted = run(&tools.ip, ["netns", "del", &name]);
    checked.and(deleted).map_err(|error| format!("{error:#}"))?;
    Ok(tools)
}

/// The effective uid, from `/proc/self/status` (the workspace forbids `unsafe`, so no `geteuid`).
fn effective_uid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find_map(|line| line.strip_prefix("Uid:")).context("no Uid line")?;
    Ok(line.split_whitespace().nth(1).context("no effective uid")?.parse()?)
}

/// `name` on the PATH or in the usual system directories (root's PATH may lack `/usr/sbin`).
fn find_program(name: &str, package: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let system = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(system)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("no `{name}` program (Debian package {package})"))
}

/// Runs a program to its end; fails with its standard error unless it exits 0. Answers its standard output.
fn run<I, S>(program: &Path, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let output =
        Command::new(program).args(&args).output().with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        let line: Vec<String> = args.iter().map(|arg| arg.as_ref().to_string_lossy().into_owned()).collect();
        bail!(
            "`{} {}` failed ({}): {}",
            program.display(),
            line.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Prefix(Ipv4Addr, u8);

impl Prefix {
    fn host(address: Ipv4Addr) -> Self {
        Self(address, 32)
    }

    fn contains(&self, other: &Prefix) -> bool {
        let mask = if self.1 == 0 { 0 } else { u32::MAX << (32 - u32::from(self.1)) };
        self.1 <= other.1 && u32::from(self.0) & mask == u32::from(other.0) & mask
    }

    fn overlaps(&self, other: &Prefix) -> bool {
        self.contains(other) || other.contains(self)
    }

    fn parse(text: &str) -> Option<Self> {
        let (address, length) = text.split_once('/').unwrap_or((text, "32"));
        let length: u8 = length.parse().ok().filter(|length| *length <= 32)?;
        Some(Self(address.parse().ok()?, length))
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.0, self.1)
    }
}

/// The addresses of cluster `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    x: u8,
}

impl Plan {
    fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], self.x, last)
    }

    fn subnet(&self) -> Prefix {
        Prefix(self.address(0), 24)
    }

    fn client(&self) -> Ipv4Addr {
        self.address(1)
    }

    fn redis(&self) -> Ipv4Addr {
        self.address(2)
    }

    fn hub_address(&self) -> Ipv4Addr {
        self.address(3)
    }

    fn nodes(&self) -> Prefix {
        Prefix(self.address(128), 25)
    }

    fn node(&self, index: usize) -> anyhow::Result<Ipv4Addr> {
        if index >= MAX_NODES {
            bail!("at most {MAX_NODES} nodes in a cluster in network namespaces");
        }
        Ok(self.address(FIRST_NODE + index as u8))
    }

    fn hub(&self) -> String {
        format!("idp{}h", self.x)
    }

    fn namespace(&self, index: usize) -> String {
        format!("idp{}n{index}", self.x)
    }

    fn root_link(&self) -> String {
        format!("idpr{}", self.x)
    }

    /// The hub's end of the root link (created in the root namespace, then moved).
    fn root_link_peer(&self) -> String {
        format!("idpr{}p", self.x)
    }

    /// Whether a namespace name is one of this cluster's (`idp{X}h`, `idp{X}n{i}`).
    fn owns_namespace(&self, name: &str) -> bool {
        name == self.hub()
            || name
                .strip_prefix(&format!("idp{}n", self.x))
                .is_some_and(|index| !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit()))
    }

    fn owner_file(&self) -> PathBuf {
        Path::new(OWNERS).join(format!("{}.pid", self.x))
    }
}

/// A blackhole rule in the hub: packets from `from` to `to` are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    from: Prefix,
    to: Prefix,
}

/// An `unreachable` rule for TCP in node `node`'s namespace to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Unreachable {
    node: usize,
    to: Ipv4Addr,
}

/// The rules and routes the cuts need, for nodes `nodes`.
fn wanted(
    plan: Plan,
    nodes: &BTreeSet<usize>,
    cuts: &BTreeMap<(usize, Link), Cut>,
) -> anyhow::Result<(BTreeSet<Rule>, BTreeSet<Unreachable>)> {
    let mut rules = BTreeSet::new();
    let mut routes = BTreeSet::new();
    let fail_fast = |node: usize, link: Link| cuts.get(&(node, link)) == Some(&Cut::FailFast);
    for &(node, link) in cuts.keys() {
        let own = Prefix::host(plan.node(node)?);
        let far = match link {
            Link::Peers => plan.nodes(),
            Link::Redis => Prefix::host(plan.redis()),
        };
        rules.insert(Rule { from: own, to: far });
        rules.insert(Rule { from: far, to: own });
    }
    for &node in nodes {
        for &other in nodes {
            if other != node && (fail_fast(node, Link::Peers) || fail_fast(other, Link::Peers)) {
                routes.insert(Unreachable { node, to: plan.node(other)? });
            }
        }
        if fail_fast(node, Link::Redis) {
            routes.insert(Unreachable { node, to: plan.redis() });
        }
    }
    Ok((rules, routes))
}

#[derive(Debug, Default)]
struct State {
    /// Node namespaces created.
    nodes: BTreeSet<usize>,
    cuts: BTreeMap<(usize, Link), Cut>,
    /// What is installed now.
    rules: BTreeSet<Rule>,
    routes: BTreeSet<Unreachable>,
}

/// The namespaces, links and routes of one cluster; all deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    tools: Tools,
    plan: Plan,
    state: Mutex<State>,
}

impl Netns {
    /// Claims a free `X`, reaping the leftovers of dead owners first, and builds the hub and the root link.
    pub fn create() -> anyhow::Result<Self> {
        let tools = tools().map_err(|reason| anyhow::anyhow!("network namespaces are unusable here: {reason}"))?;
        std::fs::create_dir_all(OWNERS).with_context(|| format!("creating {OWNERS}"))?;
        reap(tools);
        let taken = routed_prefixes(tools)?;
        let start = std::process::id() % 250;
        for offset in 0..250 {
            let plan = Plan { x: (1 + (start + offset) % 250) as u8 };
            if taken.iter().any(|prefix| prefix.1 >= 16 && prefix.overlaps(&plan.subnet())) {
                continue;
            }
            let claim = run(
                &tools.ip,
                ["link", "add", &plan.root_link(), "type", "veth", "peer", "name", &plan.root_link_peer()],
            );
            match claim {
                Ok(_) => {
                    // From here on, dropping `netns` undoes whatever was built.
                    let netns = Self { tools: tools.clone(), plan, state: Mutex::new(State::default()) };
                    write_owner(&plan.owner_file())?;
                    netns.build()?;
                    return Ok(netns);
                }
                Err(error) if error.to_string().contains("File exists") => continue,
                Err(error) => return Err(error.context("claiming a subnet for a cluster")),
            }
        }
        bail!("no free 10.213.X.0/24 for a cluster (X in 1..=250 all claimed or routed)")
    }

    fn ip<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&self.tools.ip, args)
    }

    fn build(&self) -> anyhow::Result<()> {
        let plan = self.plan;
        let (hub, peer, root) = (plan.hub(), plan.root_link_peer(), plan.root_link());
        for leftover in namespaces(&self.tools)?.into_iter().filter(|name| plan.owns_namespace(name)) {
            self.ip(["netns", "del", &leftover])?;
        }
        let (hub_address, client, redis) =
            (plan.hub_address().to_string(), plan.client().to_string(), plan.redis().to_string());
        self.ip(["netns", "add", &hub])?;
        self.ip(["link", "set", &peer, "netns", &hub])?;
        let mut forwarding = Command::new(&self.tools.ip);
        forwarding.args(["netns", "exec", &hub]).arg(&self.tools.sysctl).args(["-qw", "net.ipv4.ip_forward=1"]);
        let status = forwarding.status().context("running sysctl in the hub namespace")?;
        anyhow::ensure!(status.success(), "{forwarding:?} failed ({status})");
        self.ip(["-n", &hub, "link", "set", "lo", "up"])?;
        self.ip(["-n", &hub, "addr", "add", &format!("{hub_address}/32"), "dev", "lo"])?;
        self.ip(["-n", &hub, "link", "set", &peer, "up"])?;
        for address in [&client, &redis] {
            self.ip(["-n", &hub, "route", "add", &format!("{address}/32"), "dev", &peer, "src", &hub_address])?;
        }
        for address in [&client, &redis] {
            self.ip(["addr", "add", &format!("{address}/32"), "dev", &root])?;
        }
        self.ip(["link", "set", &root, "up"])?;
        let subnet = plan.subnet().to_string();
        self.ip(["route", "add", &subnet, "via", &hub_address, "dev", &root, "onlink", "src", &client])?;
        Ok(())
    }

    /// The subnet, `10.213.X.0/24`.
    pub fn subnet(&self) -> String {
        self.plan.subnet().to_string()
    }

    /// The root namespace's address for Redis, its replicas and the Sentinels (`10.213.X.2`).
    pub fn redis_ip(&self) -> IpAddr {
        IpAddr::V4(self.plan.redis())
    }

    /// The test client's address (`10.213.X.1`).
    pub fn client_ip(&self) -> IpAddr {
        IpAddr::V4(self.plan.client())
    }

    /// Node `index`'s address (`10.213.X.(129 + index)`).
    pub fn node_ip(&self, index: usize) -> anyhow::Result<IpAddr> {
        Ok(IpAddr::V4(self.plan.node(index)?))
    }

    /// Node `index`'s namespace (`idp{X}n{index}`).
    pub fn namespace(&self, index: usize) -> String {
        self.plan.namespace(index)
    }

    /// The router namespace (`idp{X}h`).
    pub fn hub(&self) -> String {
        self.plan.hub()
    }

    /// The root namespace's link (`idpr{X}`).
    pub fn root_link(&self) -> String {
        self.plan.root_link()
    }

    /// The owner file (`/tmp/idp-netns/{X}.pid`).
    pub fn owner_file(&self) -> PathBuf {
        self.plan.owner_file()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates node `index`'s namespace, linked to the hub, and applies the cuts in force to it. Answers its
    /// address.
    pub fn add_node(&self, index: usize) -> anyhow::Result<IpAddr> {
        let plan = self.plan;
        let address = plan.node(index)?;
        let mut state = self.lock();
        if state.nodes.contains(&index) {
            return Ok(IpAddr::V4(address));
        }
        let (hub, namespace, hub_link) = (plan.hub(), plan.namespace(index), format!("n{index}"));
        let hub_address = plan.hub_address().to_string();
        self.ip(["netns", "add", &namespace])?;
        state.nodes.insert(index);
        self.ip(["-n", &namespace, "link", "set", "lo", "up"])?;
        self.ip(["-n", &hub, "link", "add", &hub_link, "type", "veth", "peer", "name", "eth0", "netns", &namespace])?;
        self.ip(["-n", &hub, "link", "set", &hub_link, "up"])?;
        self.ip(["-n", &hub, "route", "add", &format!("{address}/32"), "dev", &hub_link, "src", &hub_address])?;
        self.ip(["-n", &namespace, "addr", "add", &format!("{address}/32"), "dev", "eth0"])?;
        self.ip(["-n", &namespace, "link", "set", "eth0", "up"])?;
        let subnet = plan.subnet().to_string();
        let source = address.to_string();
        self.ip([
            "-n",
            &namespace,
            "route",
            "add",
            &subnet,
            "via",
            &hub_address,
            "dev",
            "eth0",
            "onlink",
            "src",
            &source,
        ])?;
        self.sync(&mut state)?;
        Ok(IpAddr::V4(address))
    }

    /// `program` to be run in node `index`'s namespace: `ip netns exec idp{X}n{index} program` (`ip` execs it, so
    /// the child's PID is the program's).
    pub fn command(&self, index: usize, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(&self.tools.ip);
        command.arg("netns").arg("exec").arg(self.plan.namespace(index)).arg(program);
        command
    }

    /// Cuts `link` of node `index` (replacing a cut of another kind on it).
    pub fn cut(&self, index: usize, link: Link, cut: Cut) -> anyhow::Result<()> {
        let mut state = self.lock();
        if !state.nodes.contains(&index) {
            bail!("node {} has no namespace", index + 1);
        }
        state.cuts.insert((index, link), cut);
        self.sync(&mut state)
    }

    /// Restores every link of node `index`.
    pub fn heal(&self, index: usize) -> anyhow::Result<()> {
        let mut state = self.lock();
        state.cuts.retain(|(node, _), _| *node != index);
        self.sync(&mut state)
    }

    /// Installs what the cuts need and removes what they no longer need: the hub's rules first, then the ends'
    /// (and `ss -K` at both ends of each newly cut fail-fast pair); on healing, the ends' first, then the hub's.
    fn sync(&self, state: &mut State) -> anyhow::Result<()> {
        let plan = self.plan;
        let hub = plan.hub();
        let (rules, routes) = wanted(plan, &state.nodes, &state.cuts)?;
        for rule in rules.difference(&state.rules).copied().collect::<Vec<_>>() {
            let (from, to) = (rule.from.to_string(), rule.to.to_string());
            self.ip(["-n", &hub, "rule", "add", "pref", RULE_PREF, "from", &from, "to", &to, "blackhole"])?;
            state.rules.insert(rule);
        }
        let added: Vec<Unreachable> = routes.difference(&state.routes).copied().collect();
        for route in &added {
            let to = Prefix::host(route.to).to_string();
            let namespace = plan.namespace(route.node);
            self.ip(["-n", &namespace, "rule", "add", "pref", RULE_PREF, "to", &to, "ipproto", "tcp", "unreachable"])?;
            state.routes.insert(*route);
        }
        for route in &added {
            let to = route.to.to_string();
            run(&self.tools.ss, ["-N", &plan.namespace(route.node), "-K", "-t", "-n", "dst", &to])?;
            if route.to == plan.redis() {
                // Redis's ends of the node's connections, in the root namespace: only sockets on this cluster's
                // Redis address to this node's address match.
                let node = plan.node(route.node)?.to_string();
                run(&self.tools.ss, ["-K", "-t", "-n", "src", &to, "dst", &node])?;
            }
        }
        for route in state.routes.difference(&routes).copied().collect::<Vec<_>>() {
            let to = Prefix::host(route.to).to_string();
            let namespace = plan.namespace(route.node);
            self.ip(["-n", &namespace, "rule", "del", "pref", RULE_PREF, "to", &to, "ipproto", "tcp", "unreachable"])?;
            state.routes.remove(&route);
        }
        for rule in state.rules.difference(&rules).copied().collect::<Vec<_>>() {
            let (from, to) = (rule.from.to_string(), rule.to.to_string());
            self.ip(["-n", &hub, "rule", "del", "pref", RULE_PREF, "from", &from, "to", &to, "blackhole"])?;
            state.rules.remove(&rule);
        }
        Ok(())
    }
}

impl Drop for Netns {
    /// Deletes the node namespaces, the hub (its links go with it) and the root link, then the owner file. The
    /// processes in the namespaces were killed before (the cluster's nodes drop first).
    fn drop(&mut self) {
        let plan = self.plan;
        let existing = namespaces(&self.tools).unwrap_or_default();
        // Node namespaces first, the hub last.
        let mut own: Vec<&String> = existing.iter().filter(|name| plan.owns_namespace(name)).collect();
        own.sort_by_key(|name| **name == plan.hub());
        for name in own {
            if let Err(error) = self.ip(["netns", "del", name]) {
                eprintln!("harness: {error:#}");
            }
        }
        // Usually gone with the hub already (a veth pair dies with either end).
        let _ = self.ip(["link", "del", &plan.root_link()]);
        let _ = std::fs::remove_file(plan.owner_file());
    }
}

/// A TCP forwarder in the root namespace from `listen` to `target`, on threads of its own: the issuer's address
/// (`http://127.0.0.1:<port>`: a node accepts an http issuer only on a loopback host) in front of node 1's
/// listener in its namespace, as it is node 1's own listener without namespaces. Stops accepting when dropped;
/// open connections end with their ends.
#[derive(Debug)]
pub struct TcpForwarder {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TcpForwarder {
    pub fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::Builder::new().name("harness-forwarder".into()).spawn(move || {
            for inbound in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(inbound) = inbound {
                    std::thread::spawn(move || relay(inbound, target));
                }
            }
        })?;
        Ok(Self { address, stop })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for TcpForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
    }
}

/// Copies both ways until either end closes.
fn relay(inbound: TcpStream, target: SocketAddr) {
    let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else { return };
    let (Ok(mut inbound_read), Ok(mut outbound_write)) = (inbound.try_clone(), outbound.try_clone()) else { return };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut inbound_read, &mut outbound_write);
        let _ = outbound_write.shutdown(Shutdown::Write);
    });
    let (mut outbound_read, mut inbound_write) = (outbound, inbound);
    let _ = std::io::copy(&mut outbound_read, &mut inbound_write);
    let _ = inbound_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// The names of every network namespace (`ip netns list`).
fn namespaces(tools: &Tools) -> anyhow::Result<Vec<String>> {
    Ok(run(&tools.ip, ["netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The IPv4 prefixes of every route of the root namespace (every table), to avoid a subnet already in use.
fn routed_prefixes(tools: &Tools) -> anyhow::Result<Vec<Prefix>> {
    Ok(parse_routes(&run(&tools.ip, ["-4", "-o", "route", "show", "table", "all"])?))
}

fn parse_routes(text: &str) -> Vec<Prefix> {
    const TYPES: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
    ];
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let destination = if TYPES.contains(&first) { words.next()? } else { first };
            Prefix::parse(destination)
        })
        .collect()
}

/// `"<pid> <start time>"` of this process, the owner of a claimed `X`.
fn write_owner(path: &Path) -> anyhow::Result<()> {
    let pid = std::process::id();
    let start = start_time(pid).with_context(|| format!("reading the start time of process {pid}"))?;
    std::fs::write(path, format!("{pid} {start}\n")).with_context(|| format!("writing {}", path.display()))
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot): a PID and its start time name one
/// process, even when the PID is reused.
fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces; fields 3.. follow the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the owner an owner file names still runs (an unreadable file names nobody alive).
fn owner_alive(text: &str) -> bool {
    let mut words = text.split_whitespace();
    let (Some(pid), Some(start)) = (words.next().and_then(|pid| pid.parse().ok()), words.next()) else {
        return false;
    };
    start_time(pid).is_some_and(|running| running.to_string() == start)
}

/// What a file of [`OWNERS`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerFile {
    /// `{X}.pid`.
    Owner(u8),
    /// `{X}.reaping.{pid}`: a reaper took `X`'s owner file.
    Reaping(u8, u32),
}

fn parse_owner_file(name: &str) -> Option<OwnerFile> {
    if let Some(x) = name.strip_suffix(".pid") {
        return x.parse().ok().map(OwnerFile::Owner);
    }
    let (x, reaper) = name.split_once(".reaping.")?;
    Some(OwnerFile::Reaping(x.parse().ok()?, reaper.parse().ok()?))
}

/// Deletes the namespaces and root link of every `X` whose owner is dead (see the module documentation).
fn reap(tools: &Tools) {
    let Ok(entries) = std::fs::read_dir(OWNERS) else { return };
    let me = std::process::id();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file) = parse_owner_file(&entry.file_name().to_string_lossy()) else { continue };
        let x = match file {
            OwnerFile::Owner(x) => {
                if owner_alive(&std::fs::read_to_string(&path).unwrap_or_default()) {
                    continue;
                }
                x
            }
            OwnerFile::Reaping(x, reaper) => {
                if reaper == me || Path::new(&format!("/proc/{reaper}")).exists() {
                    continue;
                }
                x
            }
        };
        // Renaming is atomic: one reaper wins; the others find no file.
        let taken = path.with_file_name(format!("{x}.reaping.{me}"));
        if std::fs::rename(&path, &taken).is_err() {
            continue;
        }
        if matches!(file, OwnerFile::Owner(_)) && owner_alive(&std::fs::read_to_string(&taken).unwrap_or_default()) {
            // A new owner wrote the file between the read and the rename: it is alive, give it back.
            let _ = std::fs::rename(&taken, &path);
            continue;
        }
        if let Err(error) = teardown(tools, Plan { x }) {
            eprintln!("harness: reaping the network namespaces of a dead test process: {error:#}");
        }
        let _ = std::fs::remove_file(&taken);
    }
}

/// Deletes `X`'s namespaces and root link, when the link still exists (else `X` may be claimed again already, and
/// whoever claims it deletes the leftover namespaces).
fn teardown(tools: &Tools, plan: Plan) -> anyhow::Result<()> {
    if run(&tools.ip, ["link", "show", &plan.root_link()]).is_err() {
        return Ok(());
    }
    eprintln!("harness: deleting {} and the namespaces idp{}*, left by a dead test process", plan.root_link(), plan.x);
    for name in namespaces(tools)?.into_iter().filter(|name| plan.owns_namespace(name)) {
        run(&tools.ip, ["netns", "del", &name])?;
    }
    let _ = run(&tools.ip, ["link", "del", &plan.root_link()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_backend_wins_and_forcing_unusable_namespaces_is_an_error() {
        let root = || Ok(());
        let not_root = || Err("not root (effective uid 1000)".to_string());
        assert_eq!(choose_from(None, root()).unwrap(), Backend::Namespaces);
        assert_eq!(choose_from(None, not_root()).unwrap(), Backend::Proxies);
        assert_eq!(choose_from(Some("proxy"), root()).unwrap(), Backend::Proxies);
        assert_eq!(choose_from(Some("netns"), root()).unwrap(), Backend::Namespaces);
        let error = choose_from(Some("netns"), not_root()).unwrap_err().to_string();
        assert!(error.contains("IDP_TEST_NETWORK=netns") && error.contains("not root"), "{error}");
        assert!(choose_from(Some("tun"), root()).is_err());
    }

    #[test]
    fn names_fit_interface_limits_and_addresses_stay_in_the_subnet() {
        let plan = Plan { x: 250 };
        assert_eq!(
            (plan.root_link(), plan.root_link_peer(), plan.hub()),
            ("idpr250".into(), "idpr250p".into(), "idp250h".into())
        );
        assert!(plan.root_link_peer().len() <= 15 && format!("n{}", MAX_NODES - 1).len() <= 15);
        assert_eq!(plan.namespace(3), "idp250n3");
        assert_eq!(plan.node(0).unwrap(), Ipv4Addr::new(10, 213, 250, 129));
        assert_eq!(plan.node(MAX_NODES - 1).unwrap(), Ipv4Addr::new(10, 213, 250, 254));
        assert!(plan.node(MAX_NODES).is_err());
        assert!((0..MAX_NODES).all(|index| plan.nodes().contains(&Prefix::host(plan.node(index).unwrap()))));
        for other in [plan.client(), plan.redis(), plan.hub_address()] {
            assert!(plan.subnet().contains(&Prefix::host(other)) && !plan.nodes().contains(&Prefix::host(other)));
        }
    }

    #[test]
    fn only_this_clusters_namespaces_are_its_own() {
        let plan = Plan { x: 1 };
        assert!(plan.owns_namespace("idp1h") && plan.owns_namespace("idp1n0") && plan.owns_namespace("idp1n12"));
        for other in ["idp12h", "idp12n0", "idp1n", "idp1nx", "idp1hub", "idpprobe1", "idp1n0x", "other"] {
            assert!(!plan.owns_namespace(other), "{other}");
        }
    }

    #[test]
    fn a_peer_cut_is_symmetric_a_redis_cut_one_node_and_only_fail_fast_adds_routes() {
        let plan = Plan { x: 7 };
        let nodes: BTreeSet<usize> = [0, 1, 2].into();
        let node = |index| plan.node(index).unwrap();
        let mut cuts = BTreeMap::from([((1, Link::Peers), Cut::Silent)]);
        let (rules, routes) = wanted(plan, &nodes, &cuts).unwrap();
        let own = Prefix::host(node(1));
        assert_eq!(rules, [Rule { from: own, to: plan.nodes() }, Rule { from: plan.nodes(), to: own }].into());
        assert!(routes.is_empty(), "a black hole drops in the hub only");

        cuts.insert((1, Link::Peers), Cut::FailFast);
        cuts.insert((2, Link::Redis), Cut::FailFast);
        let (rules, routes) = wanted(plan, &nodes, &cuts).unwrap();
        assert_eq!(rules.len(), 4);
        assert!(rules.contains(&Rule { from: Prefix::host(node(2)), to: Prefix::host(plan.redis()) }));
        assert!(rules.contains(&Rule { from: Prefix::host(plan.redis()), to: Prefix::host(node(2)) }));
        let expected: BTreeSet<Unreachable> = [
            Unreachable { node: 1, to: node(0) },
            Unreachable { node: 1, to: node(2) },
            Unreachable { node: 0, to: node(1) },
            Unreachable { node: 2, to: node(1) },
            Unreachable { node: 2, to: plan.redis() },
        ]
        .into();
        assert_eq!(routes, expected, "node 0 and node 2 still reach each other");
    }

    #[test]
    fn prefixes_parse_and_overlap() {
        let subnet = Plan { x: 9 }.subnet();
        assert_eq!(subnet.to_string(), "10.213.9.0/24");
        assert!(Prefix::parse("10.213.0.0/16").unwrap().overlaps(&subnet));
        assert!(Prefix::parse("10.213.9.77").unwrap().overlaps(&subnet));
        assert!(!Prefix::parse("10.213.10.0/24").unwrap().overlaps(&subnet));
        assert!(Prefix::parse("0.0.0.0/0").unwrap().overlaps(&subnet));
        assert_eq!(Prefix::parse("10.1.2.3/33"), None);
        let routes = parse_routes(
            "default via 192.0.2.1 dev eth0\n192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2\n\
             local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1\n\
             broadcast 192.0.2.255 dev eth0 table local\nunreachable 10.213.5.0/24\n",
        );
        let shown: Vec<String> = routes.iter().map(Prefix::to_string).collect();
        assert_eq!(shown, ["192.0.2.0/24", "127.0.0.0/8", "192.0.2.255/32", "10.213.5.0/24"]);
    }

    #[test]
    fn the_forwarder_relays_both_ways_until_dropped() {
        use std::io::{Read, Write};
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in echo.incoming().flatten() {
                let mut stream = stream;
                let mut buffer = [0u8; 64];
                while let Ok(length @ 1..) = stream.read(&mut buffer) {
                    let _ = stream.write_all(&buffer[..length]);
                }
            }
        });
        let forwarder = TcpForwarder::start("127.0.0.1:0".parse().unwrap(), target).unwrap();
        let mut client = TcpStream::connect(forwarder.address()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.write_all(b"issuer").unwrap();
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"issuer");
        let address = forwarder.address();
        drop(forwarder);
        let refused = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            TcpStream::connect(address).is_err()
        });
        assert!(refused, "a dropped forwarder stops listening");
    }

    #[test]
    fn owner_files_name_a_process_and_its_start() {
        assert_eq!(parse_owner_file("7.pid"), Some(OwnerFile::Owner(7)));
        assert_eq!(parse_owner_file("7.reaping.123"), Some(OwnerFile::Reaping(7, 123)));
        assert_eq!(parse_owner_file("x.pid"), None);
        assert_eq!(parse_owner_file("300.pid"), None);
        assert_eq!(
            parse_start_time("42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20"),
            Some(987654)
        );
        let me = std::process::id();
        assert!(owner_alive(&format!("{me} {}\n", start_time(me).unwrap())));
        assert!(!owner_alive(&format!("{me} 1")), "same PID, another start: another process");
        assert!(!owner_alive("garbage"));
    }

    /// A dead process's PID (a child that ran and was reaped).
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn the_leftovers_of_a_dead_owner_are_reaped_and_a_live_owners_are_kept() {
        let Ok(tools) = tools() else {
            eprintln!("skipped: network namespaces are unusable here: {}", usable().unwrap_err());
            return;
        };
        let live = Netns::create().unwrap();
        live.add_node(0).unwrap();
        let dead = Netns::create().unwrap();
        dead.add_node(0).unwrap();
        let (dead_link, dead_namespace) = (dead.root_link(), dead.namespace(0));
        // The owner of `dead` "crashed": its file names a process that is gone.
        std::fs::write(dead.owner_file(), format!("{} 1\n", dead_pid())).unwrap();
        reap(tools);
        let names = namespaces(tools).unwrap();
        assert!(!names.contains(&dead_namespace) && !names.contains(&dead.hub()), "{names:?}");
        assert!(run(&tools.ip, ["link", "show", &dead_link]).is_err(), "the dead owner's root link is gone");
        assert!(!dead.owner_file().exists());
        assert!(names.contains(&live.namespace(0)) && names.contains(&live.hub()), "a live owner's stay: {names:?}");
        assert!(run(&tools.ip, ["link", "show", &live.root_link()]).is_ok());
        // The dead one's handle drops harmlessly, and its X can be claimed again.
        let x = dead.plan.x;
        drop(dead);
        let again = Netns::create().unwrap();
        assert_eq!(again.plan.x, x, "the reaped X is the first free one again");
        drop(again);
        let (hub, link) = (live.hub(), live.root_link());
        drop(live);
        assert!(!namespaces(tools).unwrap().contains(&hub));
        assert!(run(&tools.ip, ["link", "show", &link]).is_err(), "dropping removes the root link");
    }
}
