//! The internal RPC between nodes: a node that does not own a record's shard forwards the operation to the owner
//! and relays the reply. It sits on the login path, so it is built for latency first.
//!
//! - One persistent TCP connection per peer ([`RpcClient`]), opened lazily, replaced after a failure, with many
//!   calls in flight at once matched by request id; replies come back in completion order.
//! - Frames (see `idp_proto::rpc`) are batched: one write and one flush carry every frame queued meanwhile.
//!   TCP_NODELAY, since frames are small and waiting for more would only add latency.
//! - Failures are fast: connecting is bounded by a short timeout, and when a connection breaks every call in flight
//!   on it fails at once with [`RpcError::Closed`]. Callers then look up the shard's owner again and retry.
//! - Optional mutual TLS ([`cluster_tls`]): nodes accept only peers with a certificate from the cluster CA.

mod client;
mod server;
mod tls;
mod wire;

#[cfg(test)]
mod tests;

pub use client::{RpcClient, DEFAULT_CONNECT_TIMEOUT};
pub use idp_proto::rpc::{FrameError, RpcCall, RpcReply, MAX_FRAME_LEN};
pub use server::RpcServer;
pub use tls::cluster_tls;

use futures::future::BoxFuture;

/// Runs the calls a node receives. Ping is answered by the server itself and never reaches the handler.
///
/// `handle` is called on the connection's reader, so it should only build the future; the work happens when the
/// server polls that future, on a task of its own.
pub trait RpcHandler: Send + Sync + 'static {
    fn handle(&self, call: RpcCall) -> BoxFuture<'static, RpcReply>;
}

/// Why a call got no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No connection to the peer could be opened (refused, unreachable, no answer within the connect timeout, TLS
    /// refused). The call was not sent.
    #[error("rpc connect failed: {0}")]
    Connect(String),
    /// The connection was lost with the call in flight: it may or may not have run.
    #[error("rpc connection lost with the call in flight")]
    Closed,
    /// No reply within the call's timeout: it may or may not have run.
    #[error("rpc call timed out")]
    Timeout,
    /// The call cannot be put in a frame (larger than [`MAX_FRAME_LEN`], operation name too long). Nothing was sent.
    #[error("rpc call not sent: {0}")]
    Encode(FrameError),
}
