//! `ShardRouter`: runs a shard operation wherever its shard lives.
//!
//! The embedded node hosts every shard. In a cluster the router asks the local table first; a shard hosted
//! elsewhere goes, over the internal RPC, to the owner that rendezvous hashing names in the current membership view.
//! A forward that fails because the owner died or moved the shard (connection refused or lost, `NotOwner`, `Moved`)
//! is retried on the owner of the next view, until `cluster.forward_timeout`: a request in flight during a
//! failover still succeeds (invariant I5). Only a timeout, or this node being cut off from the others, gives up:
//! then the router answers what the replica's records settle without an owner (a read, or the same request again
//! after the owner committed it and the answer was lost with the link), and `Unavailable` (HTTP 503) otherwise.

use super::membership::Membership;
use super::ownership::owner;
use super::rpc::{RpcClient, RpcError};
use crate::telemetry::metrics as m;
use idp_actors::shard::model::{ShardError, ShardResult};
use idp_actors::shard::remote::{decode_result, encode_op, NamedOp};
use idp_actors::shards::LocalShards;
use idp_proto::rpc::{RpcCall, RpcReply};
use idp_proto::ShardId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pause between attempts when the view has not changed (a new owner is taking the lease).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How long the router asks Redis what it settles, once it gave up on the owner, before it answers 503: a node cut
/// off from Redis too, or a Redis that is slow, must not hold the answer up.
const SETTLE_WITHIN: Duration = Duration::from_millis(250);

/// How the router reaches shards hosted by other nodes.
pub struct Routing {
    pub membership: Arc<Membership>,
    pub rpc: RpcClient,
    pub forward_timeout: Duration,
    /// Set while this node is cut off from a majority that still renews its leases (see
    /// [`super::isolation`]): a shard it cannot reach is not held until `forward_timeout`; it is answered at once
    /// with what Redis settles, or `Unavailable`, so that the client's retry goes to a node that can serve it.
    pub cut_off: Arc<AtomicBool>,
}

pub struct ShardRouter {
    local: Arc<LocalShards>,
    cluster: Option<Routing>,
}

impl ShardRouter {
    /// Every shard hosted here (the embedded node).
    pub fn local(local: Arc<LocalShards>) -> Self {
        Self { local, cluster: None }
    }

    pub fn cluster(local: Arc<LocalShards>, routing: Routing) -> Self {
        Self { local, cluster: Some(routing) }
    }

    pub fn shard_count(&self) -> u16 {
        self.local.shard_count()
    }

    pub fn local_shards(&self) -> &Arc<LocalShards> {
        &self.local
    }

    /// Restarts every hosted shard actor (tests: state reloads from the replica).
    pub async fn restart_all(&self) {
        self.local.restart_all().await;
    }

    /// Runs `op` on the shard's owner and returns its reply.
    pub async fn execute<O: NamedOp>(&self, shard: ShardId, op: O) -> ShardResult<O::Output>
    where
        O::Output: Serialize + DeserializeOwned,
    {
        let Some(routing) = &self.cluster else {
            return self.local.execute(shard, op).await;
        };
        if shard.0 >= self.shard_count() {
            return Err(ShardError::NotFound);
        }
        let deadline = Instant::now() + routing.forward_timeout;
        let mut views = routing.membership.watch();
        let mut body: Option<Vec<u8>> = None;
        loop {
            let attempt = match self.local.try_execute(shard, op.clone()).await {
                Some(reply) => Some(reply),
                None => self.forward(routing, shard, &op, &mut body, deadline).await,
            };
            match attempt {
                Some(Err(ShardError::Moved)) | None => {}
                Some(reply) => return reply,
            }
            let gave_up = if routing.cut_off.load(Ordering::Relaxed) {
                Some("this node is cut off from the other nodes")
            } else {
                (Instant::now() >= deadline).then_some("no node could serve the shard in time")
            };
            if let Some(reason) = gave_up {
                // What Redis settles needs no owner: a read, or this very request after the owner committed it
                // and its answer was lost with the link.
                let settled = tokio::time::timeout(SETTLE_WITHIN, self.local.settled_by_replica(shard, op.clone()));
                if let Ok(Some(reply)) = settled.await {
                    m::forward_settled_by_replica();
                    return reply;
                }
                return Err(ShardError::Unavailable(reason.into()));
            }
            let now = Instant::now();
            // Wake on a view change, or retry shortly (the owner may be taking the lease).
            let pause = RETRY_PAUSE.min(deadline.saturating_duration_since(now));
            let _ = tokio::time::timeout(pause, views.changed()).await;
        }
    }

    /// One attempt at the owner named by the current view; `None` when it should be retried.
    async fn forward<O: NamedOp>(
        &self,
        routing: &Routing,
        shard: ShardId,
        op: &O,
        body: &mut Option<Vec<u8>>,
        deadline: Instant,
    ) -> Option<ShardResult<O::Output>>
    where
        O::Output: Serialize + DeserializeOwned,
    {
        let view = routing.membership.view();
        let ready = view.ready_ids();
        let owner_id = owner(shard, &ready)?;
        if owner_id == routing.membership.node_id() {
            // This node owns it but has not taken the lease yet.
            return None;
        }
        let peer = view.member(owner_id)?.rpc.clone();
        let body = body.get_or_insert_with(|| encode_op(op)).clone();
        let call = match crate::telemetry::request_id::current() {
            Some(request_id) => RpcCall::TracedShard { request_id, shard: shard.0, op: O::NAME.to_string(), body },
            None => RpcCall::Shard { shard: shard.0, op: O::NAME.to_string(), body },
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let owner_id = owner_id.to_string();
        let started = Instant::now();
        let reply = tokio::select! {
            reply = routing.rpc.call(&peer, call, remaining) => reply,
            // A frozen owner (SIGSTOP) keeps its connection open and never answers: give up on it once gossip
            // declares it dead. If it wakes and runs the call later, its write is fenced. A live owner that hands
            // the shard over (join, drain) is waited for: it finishes the call before it releases the lease.
            _ = owner_dies(routing.membership.watch(), &owner_id) => {
                m::forward("owner_died", started.elapsed());
                routing.rpc.forget(&peer);
                return None;
            }
        };
        m::forward(forward_outcome(&reply), started.elapsed());
        match reply {
            Ok(RpcReply::Shard(bytes)) => Some(decode_result(&bytes)),
            Ok(RpcReply::NotOwner) => None,
            Ok(RpcReply::Error(reason)) => Some(Err(ShardError::Unavailable(reason))),
            Ok(other) => Some(Err(ShardError::Unavailable(format!("unexpected reply {other:?}")))),
            Err(RpcError::Connect(_)) | Err(RpcError::Closed) => None,
            // The call ran out the deadline: the owner may have committed it. The loop settles it from Redis, or
            // answers 503.
            Err(RpcError::Timeout) => None,
            Err(RpcError::Encode(error)) => Some(Err(ShardError::Unavailable(error.to_string()))),
        }
    }
}

/// The `outcome` label of a forward's answer.
fn forward_outcome(reply: &Result<RpcReply, RpcError>) -> &'static str {
    match reply {
        Ok(RpcReply::Shard(_)) => "ok",
        Ok(RpcReply::NotOwner) => "not_owner",
        Ok(_) => "error",
        Err(RpcError::Timeout) => "timeout",
        Err(RpcError::Connect(_) | RpcError::Closed) => "unreachable",
        Err(RpcError::Encode(_)) => "error",
    }
}

/// Resolves when a view no longer has `owner_id` among its live members.
async fn owner_dies(mut views: tokio::sync::watch::Receiver<Arc<super::membership::View>>, owner_id: &str) {
    loop {
        if views.changed().await.is_err() {
            return futures::future::pending().await;
        }
        if !views.borrow_and_update().is_live(owner_id) {
            return;
        }
    }
}
