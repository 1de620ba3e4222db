//! Operator commands that act on a running cluster through Redis (`idp admin ...`). The admin API of a later
//! issue takes them over; until then the cluster's configuration file is the credential (it names the Redis).

use super::keys::{RotateRequest, RotateResult, ROTATE_REQUEST, ROTATE_RESULT};
use crate::config::Config;
use anyhow::Context;
use idp_actors::replica::redis::{RedisReplica, RedisSettings, RedisTarget};
use idp_actors::replica::Replica;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Connects to the cluster's Redis as the configuration names it.
pub async fn connect(config: &Config) -> anyhow::Result<std::sync::Arc<RedisReplica>> {
    anyhow::ensure!(config.redis.is_configured(), "the configuration names no Redis (redis.url or redis.sentinels)");
    let target = match &config.redis.url {
        Some(url) => RedisTarget::Url(url.clone()),
        None => RedisTarget::Sentinel {
            sentinels: config.redis.sentinels.clone(),
            master_name: config.redis.master_name.clone(),
        },
    };
    let settings = RedisSettings {
        target,
        min_replicas_ack: config.redis.min_replicas_ack,
        wait_timeout: config.redis.wait_timeout,
        testing: config.testing.switches(),
    };
    RedisReplica::connect(settings).await.context("connecting to Redis")
}

/// Asks the key ring's owner to rotate now and waits for its answer: the keys after rotation.
pub async fn rotate_keys(config: &Config, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let redis = connect(config).await?;
    let id = idp_proto::RecordId::random().to_base64();
    let requested_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let request = serde_json::to_vec(&RotateRequest { id: id.clone(), requested_at_ms })?;
    redis.write_document(ROTATE_REQUEST, request).await.context("storing the rotation request")?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(bytes) = redis.read_document(ROTATE_RESULT).await.context("reading the rotation result")? else {
            continue;
        };
        let Ok(result) = serde_json::from_slice::<RotateResult>(&bytes) else {
            continue;
        };
        if result.id != id {
            continue;
        }
        if result.ok {
            return Ok(result.keys);
        }
        anyhow::bail!("rotation refused: {}", result.error.unwrap_or_else(|| "no reason given".into()));
    }
    anyhow::bail!("no answer from the key ring's owner within {timeout:?}: is a cluster node running?")
}
