//! The answering side: accepts connections from other nodes and runs each call through the [`RpcHandler`].
//!
//! Per connection, a reader hands each call to the handler on a task of its own, and the connection's writer sends
//! replies as they complete, in whatever order. A slow operation does not hold up the ones behind it.

use super::wire::{server_preamble, write_frames, FrameReader, Outbox};
use super::RpcHandler;
use idp_proto::rpc::{Frame, RpcCall, RpcReply};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Bound on a new connection's TLS handshake and preamble: a client that stalls there does not hold a socket.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of file descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A running RPC server. Dropping it stops everything at once (connections close, calls in flight on them fail on
/// the caller's side with `Closed`); [`RpcServer::shutdown`] stops gracefully.
pub struct RpcServer {
    local_addr: SocketAddr,
    stop: CancellationToken,
    accept_task: Option<JoinHandle<()>>,
    accepted: Arc<AtomicU64>,
}

impl RpcServer {
    /// Serves `listener` on the current tokio runtime: TLS with `tls` (see [`super::cluster_tls`]; it should
    /// require client certificates), plain TCP without.
    pub fn start(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, handler: Arc<dyn RpcHandler>) -> Self {
        let local_addr = listener.local_addr().expect("a bound listener has a local address");
        let stop = CancellationToken::new();
        let accepted = Arc::new(AtomicU64::new(0));
        let server = Server { acceptor: tls.map(TlsAcceptor::from), handler, stop: stop.clone() };
        let accept_task = tokio::spawn(server.accept_loop(listener, accepted.clone()));
        tracing::info!(%local_addr, "rpc server listening");
        Self { local_addr, stop, accept_task: Some(accept_task), accepted }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections accepted since start (for tests and metrics).
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops accepting, stops reading new calls, lets the calls already read finish and their replies go out, then
    /// closes every connection. Calls a client had sent but this server had not read yet fail there with `Closed`.
    /// Bound it with a timeout if handlers may hang: dropping this future stops everything at once.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(accept_task) = self.accept_task.as_mut() {
            let _ = accept_task.await;
        }
        self.accept_task = None;
        tracing::info!(local_addr = %self.local_addr, "rpc server stopped");
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task, which drops the sockets.
        if let Some(accept_task) = self.accept_task.take() {
            accept_task.abort();
        }
    }
}

/// What every connection task needs.
#[derive(Clone)]
struct Server {
    acceptor: Option<TlsAcceptor>,
    handler: Arc<dyn RpcHandler>,
    /// Cancelled by a graceful shutdown.
    stop: CancellationToken,
}

impl Server {
    async fn accept_loop(self, listener: TcpListener, accepted: Arc<AtomicU64>) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                result = listener.accept() => match result {
                    Ok((tcp, remote)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        connections.spawn(self.clone().serve(tcp, remote));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "rpc accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        while connections.join_next().await.is_some() {}
    }

    async fn serve(self, tcp: TcpStream, remote: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let outcome = match self.acceptor.clone() {
            None => self.serve_stream(tcp).await,
            Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => self.serve_stream(tls).await,
                Ok(Err(error)) => Err(format!("tls handshake failed: {error}")),
                Err(_) => Err("tls handshake timed out".into()),
            },
        };
        match outcome {
            Ok(reason) => tracing::debug!(%remote, reason, "rpc connection closed"),
            Err(reason) => tracing::warn!(%remote, reason, "rpc connection failed"),
        }
    }

    /// Serves one connection until the client closes it, it fails, or the server shuts down; then waits for the
    /// calls already read and sends their replies before closing.
    async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S) -> Result<&'static str, String> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, server_preamble(&mut stream)).await {
            Ok(Ok(_version)) => {}
            Ok(Err(error)) => return Err(format!("preamble: {error}")),
            Err(_) => return Err("preamble timed out".into()),
        }
        let (read_half, write_half) = tokio::io::split(stream);
        let outbox = Arc::new(Outbox::new());
        let mut writing = pin!(write_frames(write_half, &outbox));
        let reading = async {
            tokio::select! {
                () = self.stop.cancelled() => Ok("server shutting down"),
                result = self.read_calls(FrameReader::new(read_half), &outbox) => result.map(|()| "closed by client"),
            }
        };
        tokio::select! {
            result = reading => {
                outbox.finish();
                let written = tokio::select! {
                    written = writing => written,
                    () = outbox.overflowed() => Err(std::io::Error::other("client not reading")),
                };
                let reason = result?;
                written.map(|()| reason).map_err(|error| format!("write failed: {error}"))
            }
            result = &mut writing => Err(match result {
                Ok(()) => "writer stopped early".to_owned(),
                Err(error) => format!("write failed: {error}"),
            }),
            () = outbox.overflowed() => Err("client not reading: too many bytes queued".into()),
        }
    }

    /// Hands every call to the handler on a task of its own; `Ping` is answered here.
    async fn read_calls<R: AsyncRead + Unpin>(
        &self,
        mut reader: FrameReader<R>,
        outbox: &Arc<Outbox>,
    ) -> Result<(), String> {
        loop {
            match reader.next().await.map_err(|error| error.to_string())? {
                Some(Frame::Call { id, call: RpcCall::Ping }) => {
                    outbox.begin_call();
                    outbox.push_reply(id, RpcReply::Pong);
                }
                Some(Frame::Call { id, call }) => {
                    let reply = self.handler.handle(call);
                    let slot = ReplySlot::new(outbox.clone(), id);
                    tokio::spawn(async move { slot.send(reply.await) });
                }
                Some(Frame::Reply { .. }) => return Err("client sent a reply frame".into()),
                None => return Ok(()),
            }
        }
    }
}

/// The promise of one reply. If the handler's task ends without one (it panicked, or was aborted), dropping the
/// slot sends an error, so the caller does not wait for its timeout and the connection does not wait forever.
struct ReplySlot {
    outbox: Arc<Outbox>,
    id: u64,
    sent: bool,
}

impl ReplySlot {
    fn new(outbox: Arc<Outbox>, id: u64) -> Self {
        outbox.begin_call();
        Self { outbox, id, sent: false }
    }

    fn send(mut self, reply: RpcReply) {
        self.sent = true;
        self.outbox.push_reply(self.id, reply);
    }
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        if !self.sent {
            self.outbox.push_reply(self.id, RpcReply::Error("handler failed".into()));
        }
    }
}
