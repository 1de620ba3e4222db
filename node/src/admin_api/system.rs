//! `/admin/keys` (list, rotate now) and `/admin/cluster` (members, shard map with owners and epochs).
//!
//! Rotation reaches the key ring where it runs: the local [`KeyRingActor`](idp_actors::keyring::KeyRingActor) of
//! the embedded node, or, in a cluster, the lease holder of the singleton key ring, through the request and result
//! documents it polls (the way `idp admin rotate-keys --config` always reached it), so any node's API can rotate.

use super::error::{ApiError, ApiResult};
use super::{audit_change, json_ok, AdminApi, Caller};
use crate::cluster::keys::{RotateRequest, RotateResult, KEY_RING_LEASE, ROTATE_REQUEST, ROTATE_RESULT};
use crate::cluster::ownership::owner;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use idp_actors::keyring::{KeyRingError, RotateKeys};
use idp_actors::replica::{LeaseName, Replica};
use idp_proto::ShardId;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Longest wait for a cluster's key ring holder to answer a rotation.
pub const ROTATE_TIMEOUT: Duration = Duration::from_secs(30);

fn key_list(api: &AdminApi) -> Value {
    let keys = api.state.keys.load();
    json!({ "generation": keys.generation(), "keys": keys.keys() })
}

pub async fn keys_route(_: Caller, api: web::Data<AdminApi>) -> ApiResult<HttpResponse> {
    json_ok(&key_list(&api))
}

/// Rotates now: every `next` key becomes `current`. 409 while a `next` key has not been published for
/// `keys.publish_ahead` yet (verifiers may not have it), with the wait in `retry_in_ms`.
pub async fn rotate_keys_route(caller: Caller, api: web::Data<AdminApi>) -> ApiResult<HttpResponse> {
    let before = api.state.keys.load().generation();
    match &api.state.key_ring {
        Some(actor) => match actor.send(RotateKeys).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(rotation_error(&error)),
            Err(_) => return Err(ApiError::unavailable("the key ring is not running")),
        },
        None => request_rotation(api.state.directory_store.replica().as_ref(), ROTATE_TIMEOUT).await?,
    }
    // The ring publishes to every node through the replica; wait (bounded) until this node serves it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.state.keys.load().generation() == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    audit_change(&api.state, &caller.0, "keys.rotate", "keyring");
    json_ok(&key_list(&api))
}

fn rotation_error(error: &KeyRingError) -> ApiError {
    match error {
        KeyRingError::RotationNotReady { alg, retry_in_ms } => ApiError {
            field: None,
            ..ApiError::conflict(format!(
                "the next {} key has not been published long enough (keys.publish_ahead); retry in {retry_in_ms} ms",
                alg.as_str()
            ))
        },
        other => ApiError::unavailable(format!("key ring: {other}")),
    }
}

/// Stores a rotation request for the key ring's holder and waits for its result (polling, bounded by `timeout`).
pub async fn request_rotation(replica: &dyn Replica, timeout: Duration) -> ApiResult<()> {
    let id = idp_proto::RecordId::random().to_base64();
    let requested_at_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let request = serde_json::to_vec(&RotateRequest { id: id.clone(), requested_at_ms }).expect("requests serialize");
    let unavailable = |error: idp_actors::replica::ReplicaError| ApiError::unavailable(format!("replica: {error}"));
    replica.write_document(ROTATE_REQUEST, request).await.map_err(unavailable)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(bytes) = replica.read_document(ROTATE_RESULT).await.map_err(unavailable)? else {
            continue;
        };
        match serde_json::from_slice::<RotateResult>(&bytes) {
            Ok(result) if result.id == id && result.ok => return Ok(()),
            Ok(result) if result.id == id => {
                let reason = result.error.unwrap_or_else(|| "no reason given".into());
                return Err(ApiError::conflict(format!("rotation refused: {reason}")));
            }
            _ => continue,
        }
    }
    Err(ApiError::unavailable(format!("no answer from the key ring's holder within {} s", timeout.as_secs())))
}

fn cluster_of(api: &AdminApi) -> ApiResult<&crate::cluster::node::ClusterNode> {
    api.cluster.as_deref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "this node runs alone (no cluster): see /admin/keys")
    })
}

/// The live members as this node's gossip sees them; the key ring's expected holder among them.
pub async fn members_route(_: Caller, api: web::Data<AdminApi>) -> ApiResult<HttpResponse> {
    let cluster = cluster_of(&api)?;
    let view = cluster.membership.view();
    let ready = view.ready_ids();
    let key_ring = crate::cluster::ownership::singleton_owner(KEY_RING_LEASE, &ready);
    let members: Vec<Value> =
        view.members.iter().map(|member| json!({"id": member.id, "rpc": member.rpc, "ready": member.ready})).collect();
    json_ok(&json!({"node": cluster.membership.node_id(), "members": members, "key_ring_owner": key_ring}))
}

/// Per shard: the owner by rendezvous hashing over the ready members, and the lease's holder and epoch in Redis
/// (they differ while a shard moves).
pub async fn shards_route(_: Caller, api: web::Data<AdminApi>) -> ApiResult<HttpResponse> {
    let cluster = cluster_of(&api)?;
    let view = cluster.membership.view();
    let ready = view.ready_ids();
    let count = api.state.shard_count();
    let names: Vec<LeaseName> = (0..count).map(|shard| LeaseName::Shard(ShardId(shard))).collect();
    let holders = futures::future::join_all(names.into_iter().map(|name| cluster.leases.holder(name))).await;
    let mut shards = Vec::with_capacity(usize::from(count));
    for (shard, holder) in (0..count).zip(holders) {
        let (holder, epoch) = match holder {
            Ok(Some((node, epoch))) => (Some(node), Some(epoch)),
            Ok(None) => (None, None),
            Err(error) => return Err(ApiError::unavailable(format!("lease table: {error}"))),
        };
        let owner = owner(ShardId(shard), &ready);
        shards.push(json!({"shard": shard, "owner": owner, "lease_holder": holder, "epoch": epoch}));
    }
    json_ok(&json!({"shard_count": count, "shards": shards}))
}
