//! Ownership as Redis records it: `idp:lease:<lease>` holds `"<node-id> <epoch>"` (a shard's lease is
//! `shard:<n>`, the key ring's `keyring`), and every handle starts with its two-byte shard number, so a test can
//! tell which node owns a code, a refresh token or a pending login.

use super::redis::{RedisClient, Resp};
use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Who holds a lease, at which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node_id: String,
    pub epoch: u64,
}

impl Lease {
    /// Parses `"<node-id> <epoch>"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (node_id, epoch) = text.trim().rsplit_once(' ')?;
        Some(Self { node_id: node_id.to_string(), epoch: epoch.parse().ok()? })
    }
}

/// The Redis key of a shard's lease.
pub fn shard_lease_key(shard: u16) -> String {
    format!("idp:lease:shard:{shard}")
}

/// The current holder of `idp:lease:<name>`, if any node holds it.
pub fn read_lease(redis: &mut RedisClient, name: &str) -> anyhow::Result<Option<Lease>> {
    let Some(text) = redis.get(&format!("idp:lease:{name}"))? else { return Ok(None) };
    Lease::parse(&text).map(Some).with_context(|| format!("malformed lease idp:lease:{name}: {text:?}"))
}

/// The holder of a shard's lease.
pub fn shard_lease(redis: &mut RedisClient, shard: u16) -> anyhow::Result<Option<Lease>> {
    read_lease(redis, &format!("shard:{shard}"))
}

/// Every held shard lease: one SCAN, then one MGET of the keys found.
pub fn shard_leases(redis: &mut RedisClient) -> anyhow::Result<BTreeMap<u16, Lease>> {
    let keys = redis.scan("idp:lease:shard:*")?;
    let mut leases = BTreeMap::new();
    if keys.is_empty() {
        return Ok(leases);
    }
    let mut command = vec!["MGET"];
    command.extend(keys.iter().map(String::as_str));
    let reply = redis.command(&command)?;
    let Resp::Array(Some(values)) = reply else { bail!("unexpected MGET reply {reply:?}") };
    for (key, value) in keys.iter().zip(values) {
        let Some(shard) = key.strip_prefix("idp:lease:shard:").and_then(|number| number.parse::<u16>().ok()) else {
            continue;
        };
        // A lease that expired between the SCAN and the MGET is nil: nobody holds it.
        let Some(text) = value.text()? else { continue };
        let lease = Lease::parse(&text).with_context(|| format!("malformed lease {key}: {text:?}"))?;
        leases.insert(shard, lease);
    }
    Ok(leases)
}

/// [`shard_leases`] of the Redis at `redis`, off the async runtime (the client is blocking).
pub async fn shard_leases_on(redis: SocketAddr) -> anyhow::Result<BTreeMap<u16, Lease>> {
    tokio::task::spawn_blocking(move || shard_leases(&mut RedisClient::connect(redis)?)).await?
}

/// The shards `node_id` holds, from [`shard_leases_on`].
pub async fn shards_held_by(redis: SocketAddr, node_id: &str) -> anyhow::Result<BTreeSet<u16>> {
    let leases = shard_leases_on(redis).await?;
    Ok(leases.into_iter().filter(|(_, lease)| lease.node_id == node_id).map(|(shard, _)| shard).collect())
}

/// Waits until `node_id` holds no shard lease (in the Redis at `redis`), polling every 200 ms off the runtime, at
/// most `within`.
pub async fn wait_shards_moved(redis: SocketAddr, node_id: &str, within: std::time::Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let leases = shard_leases_on(redis).await;
        if leases.as_ref().is_ok_and(|leases| leases.values().all(|lease| lease.node_id != node_id)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for the shards of {node_id} to move (last read: {leases:?})");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// How many shard leases each node holds.
pub fn shards_per_node(leases: &BTreeMap<u16, Lease>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for lease in leases.values() {
        *counts.entry(lease.node_id.clone()).or_default() += 1;
    }
    counts
}

/// The shard a handle (code, refresh token, session cookie, pending id) lives in: its first two bytes, big-endian.
pub fn shard_of(handle: &str, shards: u16) -> anyhow::Result<u16> {
    let prefix = handle.get(..4).context("a handle is longer than four characters")?;
    let bytes = URL_SAFE_NO_PAD.decode(prefix).context("a handle is base64url")?;
    let shard = u16::from_be_bytes([bytes[0], bytes[1]]);
    if shard >= shards {
        bail!("handle names shard {shard} of a cluster with {shards} shards");
    }
    Ok(shard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_proto::handle::{Handle, ShardId, DEFAULT_SHARD_COUNT};

    #[test]
    fn leases_parse_as_holder_and_epoch() {
        assert_eq!(Lease::parse("node-2 17"), Some(Lease { node_id: "node-2".into(), epoch: 17 }));
        assert_eq!(Lease::parse("node 2 17\n"), Some(Lease { node_id: "node 2".into(), epoch: 17 }));
        assert_eq!(Lease::parse("node-2"), None);
        assert_eq!(Lease::parse("node-2 x"), None);
    }

    #[test]
    fn the_shard_of_a_handle_is_its_prefix() {
        for shard in [0, 1, 255, 256, 1023] {
            let handle = Handle::random_in(ShardId(shard)).encode();
            assert_eq!(shard_of(&handle, DEFAULT_SHARD_COUNT).unwrap(), shard);
        }
        assert!(shard_of(&Handle::random_in(ShardId(900)).encode(), 64).is_err());
        assert!(shard_of("ab", 64).is_err());
    }

    #[test]
    fn shards_are_counted_per_node() {
        let leases = BTreeMap::from([
            (0, Lease { node_id: "a".into(), epoch: 1 }),
            (1, Lease { node_id: "b".into(), epoch: 1 }),
            (2, Lease { node_id: "a".into(), epoch: 3 }),
        ]);
        assert_eq!(shards_per_node(&leases), BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)]));
    }
}
