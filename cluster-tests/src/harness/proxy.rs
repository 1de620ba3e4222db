//! Fault-injecting forwarders on loopback: every link a node uses to reach its peers (gossip over UDP, RPC over
//! TCP) and Redis goes through one, so a test can cut a node off and heal it without root (the partitions'
//! backend unless the tests run as root, see [`super::netns`]).
//!
//! A forwarder stands in front of one destination. It knows which node sends by the source IP of a datagram or a
//! connection: in a proxied cluster each node has its own loopback address (`127.0.0.N`), binds its gossip socket
//! to it and opens its outgoing RPC connections from it. Cutting a link drops every datagram that crosses it from
//! then on, refuses new connections and closes the open ones at once; healing lets traffic pass again.
//!
//! The forwarders run on a runtime of their own, so a test's runtime (often a current-thread one) never starves
//! them; dropping the [`Proxies`] stops them all.

use anyhow::Context;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::AbortHandle;

/// Which links of a node a partition cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Link {
    /// Gossip (UDP, both ways) and RPC (TCP, both ways) with every other node.
    Peers,
    /// The node's connections to Redis.
    Redis,
}

/// What one datagram or connection crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// From node `from` (`None`: not a node of the cluster, e.g. a test client) to node `to`.
    Peer { from: Option<usize>, to: usize },
    /// Between node `node` and Redis.
    Redis { node: usize },
}

/// The links cut now, by node index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cuts {
    peers: BTreeSet<usize>,
    redis: BTreeSet<usize>,
}

impl Cuts {
    pub fn cut(&mut self, node: usize, link: Link) {
        match link {
            Link::Peers => self.peers.insert(node),
            Link::Redis => self.redis.insert(node),
        };
    }

    /// Restores every link of `node`.
    pub fn heal(&mut self, node: usize) {
        self.peers.remove(&node);
        self.redis.remove(&node);
    }

    /// Whether traffic on `route` is dropped: a peer link is cut when either end is cut off from its peers.
    pub fn blocks(&self, route: Route) -> bool {
        match route {
            Route::Peer { from, to } => self.peers.contains(&to) || from.is_some_and(|from| self.peers.contains(&from)),
            Route::Redis { node } => self.redis.contains(&node),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.redis.is_empty()
    }
}

/// The loopback address of node `index` (0-based) in a proxied cluster: `127.0.0.{index + 2}` (`127.0.0.1` stays
/// the address of everything that is not a node).
pub fn node_ip(index: usize) -> anyhow::Result<IpAddr> {
    let last = u8::try_from(index + 2).ok().filter(|last| *last < 255).context("at most 253 proxied nodes")?;
    Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

#[derive(Default)]
struct State {
    cuts: Cuts,
    /// Source IP → node index.
    nodes: HashMap<IpAddr, usize>,
    /// Open TCP connections and their routes; aborting the task closes both sides.
    connections: Vec<(Route, AbortHandle)>,
    /// The cuts are black holes ([`Proxies::black_hole`]): nothing is closed or refused, bytes just vanish.
    black_hole: bool,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<State>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn node_of(&self, ip: IpAddr) -> Option<usize> {
        self.lock().nodes.get(&ip).copied()
    }

    fn blocks(&self, route: Route) -> bool {
        self.lock().cuts.blocks(route)
    }
}

/// The forwarders of one cluster.
pub struct Proxies {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Shared,
}

impl Proxies {
    pub fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("harness-proxy")
            .enable_io()
            .enable_time()
            .build()
            .context("starting the proxies' runtime")?;
        Ok(Self { runtime: Some(runtime), shared: Shared::default() })
    }

    /// Names the node whose traffic comes from `ip`.
    pub fn register_node(&self, index: usize, ip: IpAddr) {
        self.shared.lock().nodes.insert(ip, index);
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// A TCP forwarder on a free loopback port in front of node `to`'s listener at `target`; answers its address.
    pub fn tcp_to_node(&self, to: usize, target: SocketAddr) -> anyhow::Result<SocketAddr> {
        self.tcp(target, move |shared, from| Route::Peer { from: shared.node_of(from), to })
    }

    /// A TCP forwarder in front of Redis at `target`, used by node `node` only.
    pub fn tcp_to_redis(&self, node: usize, target: SocketAddr) -> anyhow::Result<SocketAddr> {
        self.tcp(target, move |_, _| Route::Redis { node })
    }

    fn tcp(
        &self,
        target: SocketAddr,
        route_of: impl Fn(&Shared, IpAddr) -> Route + Send + 'static,
    ) -> anyhow::Result<SocketAddr> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a TCP proxy")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let shared = self.shared.clone();
        self.runtime().spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else { return };
            while let Ok((inbound, from)) = listener.accept().await {
                accept_tcp(&shared, inbound, target, route_of(&shared, from.ip()));
            }
        });
        Ok(address)
    }

    /// A UDP forwarder on a free loopback port in front of node `to`'s gossip socket at `target`. Each sender gets
    /// its own upstream socket, so the node's replies (sent to where a datagram came from) find their way back.
    pub fn udp_to_node(&self, to: usize, target: SocketAddr) -> anyhow::Result<SocketAddr> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a UDP proxy")?;
        socket.set_nonblocking(true)?;
        let address = socket.local_addr()?;
        let shared = self.shared.clone();
        self.runtime().spawn(async move {
            let Ok(socket) = UdpSocket::from_std(socket) else { return };
            forward_udp(Arc::new(socket), target, to, shared).await;
        });
        Ok(address)
    }

    /// Black-holes `link` of node `index`: from now on nothing crosses it, but nothing is closed or refused either
    /// (open connections stall, new ones are accepted and never answered, datagrams vanish), as a silent network
    /// failure looks: the far end learns of it only from its own timeouts.
    pub fn black_hole(&self, index: usize, link: Link) {
        let mut state = self.shared.lock();
        state.black_hole = true;
        state.cuts.cut(index, link);
    }

    /// Cuts `link` of node `index`: from now on nothing crosses it, and its open connections are closed.
    pub fn cut(&self, index: usize, link: Link) {
        let mut state = self.shared.lock();
        state.black_hole = false;
        state.cuts.cut(index, link);
        let cuts = state.cuts.clone();
        state.connections.retain(|(route, task)| {
            let closing = cuts.blocks(*route);
            if closing {
                task.abort();
            }
            !closing && !task.is_finished()
        });
    }

    /// Restores every link of node `index`.
    pub fn heal(&self, index: usize) {
        self.shared.lock().cuts.heal(index);
    }

    pub fn cuts(&self) -> Cuts {
        self.shared.lock().cuts.clone()
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Allowed inside an async context, unlike dropping the runtime.
            runtime.shutdown_background();
        }
    }
}

/// Refuses `inbound` when its route is cut (closed at once), otherwise forwards it to `target` in a task that a
/// later cut aborts. The check and the registration happen under one lock, so no connection slips past a cut.
fn accept_tcp(shared: &Shared, inbound: TcpStream, target: SocketAddr, route: Route) {
    let mut state = shared.lock();
    if state.cuts.blocks(route) {
        if state.black_hole {
            // Accepted and never answered, until healed (then closed: the peer reconnects).
            let holder = shared.clone();
            let task = tokio::spawn(async move {
                let _held = inbound;
                while holder.blocks(route) {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            });
            state.connections.push((route, task.abort_handle()));
        }
        return;
    }
    let forwarding = shared.clone();
    let task = tokio::spawn(async move {
        let mut inbound = inbound;
        let Ok(mut outbound) = TcpStream::connect(target).await else { return };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        forward_tcp(&mut inbound, &mut outbound, &forwarding, route).await;
    });
    state.connections.retain(|(_, task)| !task.is_finished());
    state.connections.push((route, task.abort_handle()));
}

/// Copies both ways until either side closes; while the route is cut (a black hole: a fail-fast cut aborts this
/// task instead) the bytes read are dropped.
async fn forward_tcp(inbound: &mut TcpStream, outbound: &mut TcpStream, shared: &Shared, route: Route) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut in_read, mut in_write) = inbound.split();
    let (mut out_read, mut out_write) = outbound.split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            read = in_read.read(&mut up) => {
                let Ok(length @ 1..) = read else { return };
                if !shared.blocks(route) && out_write.write_all(&up[..length]).await.is_err() {
                    return;
                }
            }
            read = out_read.read(&mut down) => {
                let Ok(length @ 1..) = read else { return };
                if !shared.blocks(route) && in_write.write_all(&down[..length]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn forward_udp(socket: Arc<UdpSocket>, target: SocketAddr, to: usize, shared: Shared) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buffer = vec![0u8; 65_536];
    while let Ok((length, from)) = socket.recv_from(&mut buffer).await {
        let route = Route::Peer { from: shared.node_of(from.ip()), to };
        if shared.blocks(route) {
            continue;
        }
        let upstream = match upstreams.get(&from) {
            Some(upstream) => upstream.clone(),
            None => {
                let Ok(upstream) = UdpSocket::bind("127.0.0.1:0").await else { continue };
                let upstream = Arc::new(upstream);
                upstreams.insert(from, upstream.clone());
                tokio::spawn(relay_replies(upstream.clone(), socket.clone(), from, route, shared.clone()));
                upstream
            }
        };
        let _ = upstream.send_to(&buffer[..length], target).await;
    }
}

/// Sends what the node answers on `upstream` back to the original sender, unless the link is cut now.
async fn relay_replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    sender: SocketAddr,
    route: Route,
    shared: Shared,
) {
    let mut buffer = vec![0u8; 65_536];
    while let Ok(length) = upstream.recv(&mut buffer).await {
        if !shared.blocks(route) {
            let _ = socket.send_to(&buffer[..length], sender).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(2);

    #[test]
    fn a_cut_node_is_cut_from_every_peer_both_ways_and_healing_restores_it() {
        let mut cuts = Cuts::default();
        let peer = |from, to| Route::Peer { from: Some(from), to };
        assert!(!cuts.blocks(peer(0, 1)) && cuts.is_empty());
        cuts.cut(1, Link::Peers);
        assert!(cuts.blocks(peer(0, 1)) && cuts.blocks(peer(1, 0)) && cuts.blocks(peer(1, 2)));
        assert!(!cuts.blocks(peer(0, 2)) && !cuts.blocks(peer(2, 0)));
        assert!(cuts.blocks(Route::Peer { from: None, to: 1 }));
        assert!(!cuts.blocks(Route::Peer { from: None, to: 0 }));
        assert!(!cuts.blocks(Route::Redis { node: 1 }), "peers only");
        cuts.cut(2, Link::Redis);
        assert!(cuts.blocks(Route::Redis { node: 2 }) && !cuts.blocks(peer(2, 0)));
        cuts.heal(1);
        assert!(!cuts.blocks(peer(0, 1)) && cuts.blocks(Route::Redis { node: 2 }));
        cuts.heal(2);
        assert!(cuts.is_empty());
    }

    #[test]
    fn node_ips_are_distinct_loopback_addresses() {
        assert_eq!(node_ip(0).unwrap().to_string(), "127.0.0.2");
        assert_eq!(node_ip(252).unwrap().to_string(), "127.0.0.254");
        assert!(node_ip(253).is_err());
        assert!((0..10).all(|index| node_ip(index).unwrap().is_loopback()));
    }

    /// An echo server on `127.0.0.1`, one thread per connection.
    fn tcp_echo() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 1024];
                    while let Ok(length @ 1..) = stream.read(&mut buffer) {
                        if stream.write_all(&buffer[..length]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    /// Sends `text`, answers what came back (empty: closed).
    fn round_trip(stream: &mut std::net::TcpStream, text: &[u8]) -> Vec<u8> {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        if stream.write_all(text).is_err() {
            return Vec::new();
        }
        let mut buffer = vec![0u8; text.len()];
        let mut read = 0;
        while read < buffer.len() {
            match stream.read(&mut buffer[read..]) {
                Ok(0) | Err(_) => break,
                Ok(length) => read += length,
            }
        }
        buffer.truncate(read);
        buffer
    }

    /// A std TCP connection leaving from `source` (bound before connecting), through tokio's socket builder.
    fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            let stream = socket.connect(to).await?;
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            Ok(stream)
        })
    }

    /// Whether a connection through the proxy is closed by the far end within [`WAIT`].
    fn closed(stream: &mut std::net::TcpStream) -> bool {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut buffer = [0u8; 16];
        matches!(stream.read(&mut buffer), Ok(0) | Err(_))
    }

    #[test]
    fn tcp_bytes_pass_a_cut_closes_open_connections_and_refuses_new_ones_and_heal_restores() {
        let proxies = Proxies::new().unwrap();
        let (node_1, node_2) = (node_ip(0).unwrap(), node_ip(1).unwrap());
        proxies.register_node(0, node_1);
        proxies.register_node(1, node_2);
        let to_node_2 = proxies.tcp_to_node(1, tcp_echo()).unwrap();
        let to_redis = proxies.tcp_to_redis(0, tcp_echo()).unwrap();

        let mut from_node_1 = connect_from(node_1, to_node_2).unwrap();
        assert_eq!(round_trip(&mut from_node_1, b"hello"), b"hello");
        let mut redis_of_node_1 = connect_from(node_1, to_redis).unwrap();
        assert_eq!(round_trip(&mut redis_of_node_1, b"PING"), b"PING");

        proxies.cut(0, Link::Peers);
        assert!(closed(&mut from_node_1), "an open connection of the cut node is closed");
        let mut again = connect_from(node_1, to_node_2).unwrap();
        assert!(round_trip(&mut again, b"x").is_empty(), "a new connection is refused");
        assert_eq!(round_trip(&mut redis_of_node_1, b"PING"), b"PING", "its Redis link still works");
        let mut stranger = connect_from("127.0.0.1".parse().unwrap(), to_node_2).unwrap();
        assert_eq!(round_trip(&mut stranger, b"other"), b"other", "links between other ends pass");

        proxies.cut(0, Link::Redis);
        assert!(closed(&mut redis_of_node_1));
        proxies.heal(0);
        assert!(proxies.cuts().is_empty());
        let mut healed = connect_from(node_1, to_node_2).unwrap();
        assert_eq!(round_trip(&mut healed, b"back"), b"back");
        let mut redis_again = connect_from(node_1, to_redis).unwrap();
        assert_eq!(round_trip(&mut redis_again, b"PING"), b"PING");
    }

    /// Whether a connection through the proxy stays open and silent for [`WAIT`] (a read times out).
    fn silent(stream: &mut std::net::TcpStream) -> bool {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut buffer = [0u8; 16];
        matches!(stream.read(&mut buffer), Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    }

    #[test]
    fn a_black_hole_neither_closes_nor_answers_until_healed() {
        let proxies = Proxies::new().unwrap();
        let node_1 = node_ip(0).unwrap();
        proxies.register_node(0, node_1);
        let to_redis = proxies.tcp_to_redis(0, tcp_echo()).unwrap();
        let mut open = connect_from(node_1, to_redis).unwrap();
        assert_eq!(round_trip(&mut open, b"PING"), b"PING");

        proxies.black_hole(0, Link::Redis);
        open.write_all(b"lost").unwrap();
        assert!(silent(&mut open), "an open connection stalls: no answer, not closed");
        let mut new = connect_from(node_1, to_redis).expect("a new connection is accepted");
        new.write_all(b"lost too").unwrap();
        assert!(silent(&mut new), "and never answered");

        proxies.heal(0);
        assert!(proxies.cuts().is_empty());
        let mut healed = connect_from(node_1, to_redis).unwrap();
        assert_eq!(round_trip(&mut healed, b"back"), b"back");
        // A fail-fast cut after a black hole closes again.
        proxies.cut(0, Link::Redis);
        assert!(closed(&mut healed), "a cut closes open connections");
    }

    #[test]
    fn udp_datagrams_and_replies_pass_until_cut_and_again_after_heal() {
        let proxies = Proxies::new().unwrap();
        let (node_1, node_2) = (node_ip(0).unwrap(), node_ip(1).unwrap());
        proxies.register_node(0, node_1);
        proxies.register_node(1, node_2);
        // Node 2's "gossip socket" answers every datagram to where it came from, as chitchat does.
        let echo = std::net::UdpSocket::bind(SocketAddr::new(node_2, 0)).unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            while let Ok((length, from)) = echo.recv_from(&mut buffer) {
                let _ = echo.send_to(&buffer[..length], from);
            }
        });
        let to_node_2 = proxies.udp_to_node(1, target).unwrap();
        let node_1_socket = std::net::UdpSocket::bind(SocketAddr::new(node_1, 0)).unwrap();
        node_1_socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let exchange = |text: &[u8]| -> Option<Vec<u8>> {
            // Datagrams may be lost even on loopback: a few tries, each with its own payload.
            for attempt in 0..5u8 {
                let payload = [text, &[attempt]].concat();
                node_1_socket.send_to(&payload, to_node_2).ok()?;
                let mut buffer = [0u8; 1500];
                while let Ok((length, from)) = node_1_socket.recv_from(&mut buffer) {
                    if from == to_node_2 && buffer[..length] == payload[..] {
                        return Some(payload);
                    }
                }
            }
            None
        };
        assert!(exchange(b"syn").is_some(), "a datagram and its reply pass");
        proxies.cut(1, Link::Peers);
        assert!(exchange(b"cut").is_none(), "nothing passes to a cut node");
        proxies.heal(1);
        proxies.cut(0, Link::Peers);
        assert!(exchange(b"cut-sender").is_none(), "nothing passes from a cut node");
        proxies.cut(1, Link::Redis);
        proxies.heal(0);
        assert!(exchange(b"healed").is_some(), "healing restores the link; a Redis cut does not touch gossip");
    }
}
