//! The calling side: one persistent, multiplexed connection per peer.
//!
//! A peer's connection is opened by the first call that needs it (concurrent callers share that attempt), kept
//! while it works, and replaced by the next call after it breaks. Calls register a reply slot under a fresh request
//! id, queue their frame in the connection's outbox and wait; the connection's reader completes slots as replies
//! arrive, in any order. When the connection breaks, every slot is dropped at once, so each waiting call fails with
//! [`RpcError::Closed`] right away instead of at its timeout.

use super::wire::{client_preamble, write_frames, FrameReader, Outbox};
use super::RpcError;
use futures::future::{BoxFuture, FutureExt, Shared};
use idp_proto::rpc::{Frame, FrameError, RpcCall, RpcReply};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// Default bound on opening a connection (TCP connect, TLS handshake, preamble exchange). Short: a dead peer must
/// fail fast so that the caller can look up the new owner and retry there.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// How many times a call picks another connection when the one it got closed before the call was queued.
const MAX_CONNECTION_ATTEMPTS: usize = 3;

/// Client of the internal RPC; cheap to clone, all clones share the connections.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    connector: Option<TlsConnector>,
    connect_timeout: Duration,
    /// Local address outgoing connections bind before connecting (the IP of this node's RPC listener), so that a
    /// peer or a proxy in between sees which node connects; `None`: the system chooses.
    source_ip: Option<IpAddr>,
    peers: Mutex<HashMap<String, PeerState>>,
    /// Peers that answered in protocol version 1 (a node not yet upgraded): offered version 1 from then on, until
    /// [`RpcClient::forget`] (the peer left or restarted).
    version_one_peers: Mutex<std::collections::HashSet<String>>,
    next_attempt: AtomicU64,
    /// Where connection tasks run: the runtime that created the client, not the caller's (an HTTP worker's runtime
    /// stops with its worker, and would take the connection down with it).
    runtime: tokio::runtime::Handle,
}

/// A peer without an entry has no connection and no attempt under way.
enum PeerState {
    Connecting { attempt: u64, outcome: SharedConnect },
    Connected(Arc<Connection>),
}

type SharedConnect = Shared<BoxFuture<'static, Result<Arc<Connection>, String>>>;

impl RpcClient {
    /// A client speaking TLS with `tls` (see [`super::cluster_tls`]), or plain TCP without.
    /// Call from inside the runtime that should run the connections.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self::with_connect_timeout(tls, DEFAULT_CONNECT_TIMEOUT)
    }

    pub fn with_connect_timeout(tls: Option<Arc<rustls::ClientConfig>>, connect_timeout: Duration) -> Self {
        let inner = ClientInner {
            connector: tls.map(TlsConnector::from),
            connect_timeout,
            source_ip: None,
            peers: Mutex::new(HashMap::new()),
            version_one_peers: Mutex::new(std::collections::HashSet::new()),
            next_attempt: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Makes outgoing connections leave from `ip` (this node's own RPC address) when it is a specific address:
    /// an unspecified one (`0.0.0.0`, `::`) leaves the choice to the system. Call before the first call.
    pub fn with_source_ip(mut self, ip: IpAddr) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.source_ip = (!ip.is_unspecified()).then_some(ip);
        }
        self
    }

    /// Sends `call` to `peer` (`host:port`) and waits for its reply, at most `timeout` in all (connecting included).
    ///
    /// Errors: [`RpcError::Connect`] when no connection could be opened, [`RpcError::Closed`] when the connection
    /// broke with the call sent (it may or may not have run), [`RpcError::Timeout`], and [`RpcError::Encode`] when
    /// the call does not fit in a frame (nothing sent).
    pub async fn call(&self, peer: &str, call: RpcCall, timeout: Duration) -> Result<RpcReply, RpcError> {
        tokio::time::timeout(timeout, self.call_without_deadline(peer, call)).await.unwrap_or(Err(RpcError::Timeout))
    }

    /// Closes the connection to `peer` if there is one (calls in flight on it fail with `Closed`); the next call
    /// opens a new one. For a peer that left the cluster or was declared dead.
    pub fn forget(&self, peer: &str) {
        self.inner.version_one_peers.lock().remove(peer);
        if let Some(PeerState::Connected(connection)) = self.inner.peers.lock().remove(peer) {
            connection.close();
        }
    }

    /// Whether a working connection to `peer` is open now.
    pub fn is_connected(&self, peer: &str) -> bool {
        matches!(self.inner.peers.lock().get(peer), Some(PeerState::Connected(connection)) if connection.is_open())
    }

    async fn call_without_deadline(&self, peer: &str, mut call: RpcCall) -> Result<RpcReply, RpcError> {
        for _ in 0..MAX_CONNECTION_ATTEMPTS {
            let connection = self.connection(peer).await?;
            // A version-1 peer does not know traced calls: it gets the call without its request id.
            if connection.version < 2 {
                call = call.untraced();
            }
            match connection.start(call) {
                Ok(pending) => return pending.reply().await,
                // The connection closed between the lookup and the registration: nothing was sent, try a new one.
                Err(Start::Closed(returned)) => call = returned,
                Err(Start::Invalid(error)) => return Err(RpcError::Encode(error)),
            }
        }
        Err(RpcError::Closed)
    }

    /// The open connection to `peer`, or the outcome of the attempt to open one (started here if none is under way).
    async fn connection(&self, peer: &str) -> Result<Arc<Connection>, RpcError> {
        let outcome = {
            let mut peers = self.inner.peers.lock();
            match peers.get(peer) {
                Some(PeerState::Connected(connection)) if connection.is_open() => return Ok(connection.clone()),
                Some(PeerState::Connecting { outcome, .. }) => outcome.clone(),
                _ => {
                    let attempt = self.inner.next_attempt.fetch_add(1, Ordering::Relaxed);
                    let outcome = self.start_connecting(peer, attempt);
                    peers.insert(peer.to_owned(), PeerState::Connecting { attempt, outcome: outcome.clone() });
                    outcome
                }
            }
        };
        outcome.await.map_err(RpcError::Connect)
    }

    /// Spawns the attempt, so that it runs to its end even if every caller waiting on it gives up, and records its
    /// outcome in the peer table before the callers see it.
    fn start_connecting(&self, peer: &str, attempt: u64) -> SharedConnect {
        let client = Arc::downgrade(&self.inner);
        let (peer, connector, limit) = (peer.to_owned(), self.inner.connector.clone(), self.inner.connect_timeout);
        let source_ip = self.inner.source_ip;
        let offer = if self.inner.version_one_peers.lock().contains(&peer) { 1 } else { 2 };
        let task = self.inner.runtime.spawn(async move {
            let outcome = match tokio::time::timeout(limit, open(&peer, source_ip, connector, offer)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no rpc answer from {peer} within {} ms", limit.as_millis())),
            };
            if let (Some(client), Ok(connection)) = (client.upgrade(), &outcome) {
                if connection.version < offer {
                    client.version_one_peers.lock().insert(peer.clone());
                }
            }
            record_outcome(&client, &peer, attempt, &outcome);
            outcome
        });
        async move { task.await.unwrap_or_else(|error| Err(format!("connect task failed: {error}"))) }.boxed().shared()
    }
}

/// Stores a new connection (or clears a failed attempt) unless the peer was forgotten or the client dropped since;
/// a connection nobody wants any more is closed.
fn record_outcome(client: &Weak<ClientInner>, peer: &str, attempt: u64, outcome: &Result<Arc<Connection>, String>) {
    let still_wanted = client.upgrade().is_some_and(|client| {
        let mut peers = client.peers.lock();
        let current =
            matches!(peers.get(peer), Some(PeerState::Connecting { attempt: current, .. }) if *current == attempt);
        if current {
            match outcome {
                Ok(connection) => peers.insert(peer.to_owned(), PeerState::Connected(connection.clone())),
                Err(_) => peers.remove(peer),
            };
        }
        current
    });
    match outcome {
        Ok(connection) if !still_wanted => connection.close(),
        Ok(_) => {}
        Err(error) => tracing::debug!(peer, %error, "rpc connect failed"),
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        for state in self.peers.get_mut().values() {
            if let PeerState::Connected(connection) = state {
                connection.close();
            }
        }
    }
}

/// Opens a connection: TCP (no Nagle: frames are small and latency-bound), TLS if configured, preambles; then
/// spawns its reader and writer.
async fn open(
    peer: &str,
    source_ip: Option<IpAddr>,
    connector: Option<TlsConnector>,
    offer: u8,
) -> Result<Arc<Connection>, String> {
    let tcp = connect_from(peer, source_ip).await.map_err(|error| format!("connect to {peer}: {error}"))?;
    tcp.set_nodelay(true).map_err(|error| format!("set TCP_NODELAY: {error}"))?;
    match connector {
        None => start_connection(tcp, peer, offer).await,
        Some(connector) => {
            let tls = connector
                .connect(server_name(peer)?, tcp)
                .await
                .map_err(|error| format!("tls handshake with {peer}: {error}"))?;
            start_connection(tls, peer, offer).await
        }
    }
}

/// TCP connection to `peer`, leaving from `source_ip` when given and of the same kind as the peer's address
/// (a loopback source cannot reach another host, nor an IPv4 source an IPv6 peer: those connect unbound).
async fn connect_from(peer: &str, source_ip: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source_ip) = source_ip else {
        return TcpStream::connect(peer).await;
    };
    let mut last_error = None;
    for address in tokio::net::lookup_host(peer).await? {
        let compatible =
            address.is_ipv4() == source_ip.is_ipv4() && address.ip().is_loopback() == source_ip.is_loopback();
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if compatible {
            socket.bind(SocketAddr::new(source_ip, 0))?;
        }
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))
}

/// The name the peer's certificate must carry: the host part of `host:port`, an IP address or a DNS name.
fn server_name(peer: &str) -> Result<ServerName<'static>, String> {
    let host = peer.rsplit_once(':').map_or(peer, |(host, _port)| host);
    let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|error| format!("{peer}: not a valid server name: {error}"))
}

async fn start_connection<S>(mut stream: S, peer: &str, offer: u8) -> Result<Arc<Connection>, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // With TLS 1.3 a refused client certificate shows up here, as the server's alert instead of its preamble.
    let version =
        client_preamble(&mut stream, offer).await.map_err(|error| format!("rpc preamble with {peer}: {error}"))?;
    let connection = Arc::new(Connection::new(version));
    tokio::spawn(run_connection(stream, connection.clone(), peer.to_owned()));
    Ok(connection)
}

/// Reads replies and writes calls until either side fails or the connection is closed locally; then fails every
/// call still waiting. Dropping the stream closes the socket.
async fn run_connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, connection: Arc<Connection>, peer: String) {
    let (read_half, write_half) = tokio::io::split(stream);
    let reason = tokio::select! {
        () = connection.stop.cancelled() => "closed locally".to_owned(),
        () = connection.outbox.overflowed() => "peer not reading: too many bytes queued".to_owned(),
        result = read_replies(FrameReader::new(read_half), &connection) => result.err().unwrap_or_else(|| "closed by peer".into()),
        result = write_frames(write_half, &connection.outbox) => match result {
            Ok(()) => "writer finished".to_owned(),
            Err(error) => format!("write failed: {error}"),
        },
    };
    connection.close();
    tracing::debug!(peer, reason, "rpc connection closed");
}

/// Hands each reply to its call. `Ok` when the peer closed cleanly, `Err` with the reason otherwise.
async fn read_replies<R: AsyncRead + Unpin>(mut reader: FrameReader<R>, connection: &Connection) -> Result<(), String> {
    loop {
        match reader.next().await.map_err(|error| error.to_string())? {
            Some(Frame::Reply { id, reply }) => connection.complete(id, reply),
            Some(Frame::Call { .. }) => return Err("peer sent a call on a client connection".into()),
            None => return Ok(()),
        }
    }
}

/// One connection to one peer, shared by every call to it.
struct Connection {
    outbox: Outbox,
    calls: Mutex<Calls>,
    next_id: AtomicU64,
    /// Cancelled when the connection is closed, from either side.
    stop: CancellationToken,
    /// Protocol version spoken (2 carries request ids).
    version: u8,
}

#[derive(Default)]
struct Calls {
    waiting: HashMap<u64, oneshot::Sender<RpcReply>>,
    closed: bool,
}

/// Why a call was not queued on a connection.
enum Start {
    /// The connection is closed; the call is handed back untouched.
    Closed(RpcCall),
    Invalid(FrameError),
}

impl Connection {
    fn new(version: u8) -> Self {
        Self {
            outbox: Outbox::new(),
            calls: Mutex::new(Calls::default()),
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
            version,
        }
    }

    fn is_open(&self) -> bool {
        !self.stop.is_cancelled()
    }

    /// Registers a reply slot, then queues the call's frame.
    fn start(self: &Arc<Self>, call: RpcCall) -> Result<PendingCall, Start> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut calls = self.calls.lock();
            if calls.closed {
                return Err(Start::Closed(call));
            }
            calls.waiting.insert(id, reply_tx);
        }
        let pending = PendingCall { connection: self.clone(), id, reply_rx, answered: false };
        self.outbox.push(&Frame::Call { id, call }).map_err(Start::Invalid)?;
        Ok(pending)
    }

    fn complete(&self, id: u64, reply: RpcReply) {
        // No slot: the call timed out and left; its late reply is dropped.
        if let Some(reply_tx) = self.calls.lock().waiting.remove(&id) {
            let _ = reply_tx.send(reply);
        }
    }

    /// Marks the connection closed and drops every reply slot: their calls fail with `Closed` now.
    fn close(&self) {
        self.stop.cancel();
        let waiting = {
            let mut calls = self.calls.lock();
            calls.closed = true;
            std::mem::take(&mut calls.waiting)
        };
        drop(waiting);
    }
}

/// A call queued on a connection. Dropped before its reply (timeout, cancelled caller), it frees its slot.
struct PendingCall {
    connection: Arc<Connection>,
    id: u64,
    reply_rx: oneshot::Receiver<RpcReply>,
    answered: bool,
}

impl PendingCall {
    async fn reply(mut self) -> Result<RpcReply, RpcError> {
        let reply = (&mut self.reply_rx).await.map_err(|_| RpcError::Closed);
        self.answered = true;
        reply
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.answered {
            self.connection.calls.lock().waiting.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_peer_address() {
        let name = |peer| server_name(peer).map(|name| name.to_str().into_owned());
        assert_eq!(name("127.0.0.1:7000").unwrap(), "127.0.0.1");
        assert_eq!(name("[::1]:7000").unwrap(), "::1");
        assert_eq!(name("node-2.idp.internal:7000").unwrap(), "node-2.idp.internal");
        assert!(name("bad name:7000").is_err());
    }
}
