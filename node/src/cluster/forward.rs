//! The receiving side of forwarding: runs an operation another node sent, if this node hosts its shard.
//!
//! A node that rendezvous hashing names as the owner but that has not taken the lease yet (a join, a failover
//! in progress) holds the call for up to [`WAIT_FOR_LEASE`] rather than bouncing it; anything else answers
//! `NotOwner`, and the sender retries on the owner of its next view. A received call is never forwarded again,
//! so two nodes with different views cannot bounce a call between them.

use super::membership::Membership;
use super::ownership::owner;
use super::rpc::RpcHandler;
use futures::future::{BoxFuture, FutureExt};
use idp_actors::shard::model::{ShardError, ShardResult};
use idp_actors::shard::remote::{run_named, NamedOp, OpRunner};
use idp_actors::shards::LocalShards;
use idp_proto::rpc::{RpcCall, RpcReply};
use idp_proto::ShardId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Longest time a call waits for this node to take the lease of a shard it owns.
const WAIT_FOR_LEASE: Duration = Duration::from_millis(1500);

#[derive(Clone)]
pub struct ForwardHandler {
    pub shards: Arc<LocalShards>,
    pub membership: Arc<Membership>,
}

impl RpcHandler for ForwardHandler {
    fn handle(&self, call: RpcCall) -> BoxFuture<'static, RpcReply> {
        let handler = self.clone();
        match call {
            RpcCall::Ping => async { RpcReply::Pong }.boxed(),
            RpcCall::Shard { shard, op, body } => async move { handler.run_call(shard, &op, &body).await }.boxed(),
            // The sender's request id: this node's log lines and audit events of the operation carry it too.
            RpcCall::TracedShard { request_id, shard, op, body } => {
                let span = tracing::info_span!("forwarded", request_id = %request_id, shard, op = %op);
                let run = async move { handler.run_call(shard, &op, &body).await }.instrument(span);
                crate::telemetry::request_id::scope(request_id, run).boxed()
            }
        }
    }
}

impl ForwardHandler {
    async fn run_call(&self, shard: u16, op: &str, body: &[u8]) -> RpcReply {
        if shard >= self.shards.shard_count() {
            return RpcReply::Error(format!("no shard {shard}"));
        }
        tracing::debug!(shard, op, "running a forwarded call");
        match run_named(self, ShardId(shard), op, body).await {
            Ok(Some(reply)) => RpcReply::Shard(reply),
            Ok(None) => RpcReply::NotOwner,
            Err(error) => RpcReply::Error(error.to_string()),
        }
    }
}

impl OpRunner for ForwardHandler {
    fn run<O: NamedOp>(&self, shard: ShardId, op: O) -> BoxFuture<'_, Option<ShardResult<O::Output>>>
    where
        O::Output: Serialize + DeserializeOwned,
    {
        async move {
            let deadline = Instant::now() + WAIT_FOR_LEASE;
            loop {
                match self.shards.try_execute(shard, op.clone()).await {
                    Some(Err(ShardError::Moved)) => return None,
                    Some(reply) => return Some(reply),
                    None => {}
                }
                let view = self.membership.view();
                let owns = owner(shard, &view.ready_ids()) == Some(self.membership.node_id());
                if !owns || Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        .boxed()
    }
}
