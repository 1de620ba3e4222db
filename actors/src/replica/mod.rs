//! The replica: where owned state is written through before a reply, and read back after a move or restart; and the
//! leases that say which node may write which shard.
//!
//! Two implementations: [`MemoryReplica`] (the embedded single node and unit tests) and [`RedisReplica`] (the
//! cluster). Both implement [`Replica`] and [`Leases`], so no handler or actor changes with the one behind them.
//!
//! Fencing (invariant I6): taking a lease increments the epoch of its name; every write of a shard carries the epoch
//! its owner got with the shard's lease, and the replica refuses it once the epoch moved on. Writes of a shard are
//! fenced by the epoch of [`LeaseName::Shard`]; a singleton's document (the key ring) by the epoch of its
//! [`LeaseName::Singleton`].

pub mod lease;
mod memory;
pub mod redis;
#[cfg(any(test, feature = "test-redis"))]
pub mod testing;

pub use self::redis::{connect_master, RedisReplica, RedisSettings, RedisTarget};
pub use memory::MemoryReplica;

use futures::future::BoxFuture;
use idp_proto::records::RecordKey;
use idp_proto::ShardId;
use std::fmt;
use std::sync::Arc;

pub type ReplicaFuture<T> = BoxFuture<'static, Result<T, ReplicaError>>;
pub type SharedReplica = Arc<dyn Replica>;
pub type SharedLeases = Arc<dyn Leases>;

/// The ownership epoch of a lease: every write carries it, and the replica refuses it once the lease moved on (Redis:
/// any epoch but the current one; the memory replica: an older one).
pub type Epoch = u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// The write's epoch is not the lease's: another node took the lease since (invariant I6). Nothing was written.
    #[error("write fenced: {lease} is at epoch {current}, write carried {attempted}")]
    Fenced { lease: LeaseName, current: Epoch, attempted: Epoch },
    /// The replica did not answer or answered with an error: the write may or may not have happened.
    #[error("replica unavailable: {0}")]
    Unavailable(String),
    #[error("replica holds a corrupt value: {0}")]
    Corrupt(String),
}

/// One record write: a new stored value, or a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordWrite {
    pub key: RecordKey,
    /// The encoded `StoredRecord`, or `None` to delete.
    pub value: Option<Vec<u8>>,
    /// Unix milliseconds after which the replica may forget the record (a TTL in Redis).
    pub expires_at_ms: u64,
}

pub trait Replica: Send + Sync + 'static {
    /// Applies a batch of writes of one shard atomically, if `epoch` is still the epoch of the shard's lease.
    /// Batches of one shard are applied in the order of the calls (the call enqueues; awaiting only collects the ack).
    fn write_records(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> ReplicaFuture<()>;

    /// Reads records of one shard; an expired or absent record reads as `None`.
    fn read_records(&self, shard: ShardId, keys: Vec<RecordKey>) -> ReplicaFuture<Vec<Option<Vec<u8>>>>;

    /// Reads a cluster-wide document (key ring, directory).
    fn read_document(&self, name: &str) -> ReplicaFuture<Option<Vec<u8>>>;

    /// Succeeds once everything read so far is as durable as an acknowledged write: with replicas that must
    /// acknowledge writes (`WAIT`), once they hold it. A read may see a write whose `WAIT` fell short (its writer
    /// was told it failed); an answer built on such a read must wait for this. Nothing to wait for by default.
    fn durable_barrier(&self) -> ReplicaFuture<()> {
        Box::pin(futures::future::ready(Ok(())))
    }

    /// Writes a cluster-wide document.
    fn write_document(&self, name: &str, value: Vec<u8>) -> ReplicaFuture<()>;

    /// Writes a cluster-wide document if `epoch` is still the epoch of `lease` (the key ring's owner writes its
    /// document so); refused with [`ReplicaError::Fenced`] otherwise.
    ///
    /// The default refuses every write: a wrapper that does not forward it must not write unfenced.
    fn write_document_fenced(&self, name: &str, value: Vec<u8>, lease: LeaseName, epoch: Epoch) -> ReplicaFuture<()> {
        let _ = (value, lease, epoch);
        let reason = format!("this replica does not implement fenced writes (document {name})");
        Box::pin(futures::future::ready(Err(ReplicaError::Unavailable(reason))))
    }
}

/// What a lease is for: one shard, or a cluster-wide singleton such as the key ring.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeaseName {
    Shard(ShardId),
    Singleton(&'static str),
}

/// The name as stored: `shard:<n>` or the singleton's name (`idp:lease:<name>`, `idp:epoch:<name>` in Redis).
impl fmt::Display for LeaseName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shard(shard) => write!(formatter, "shard:{}", shard.0),
            Self::Singleton(name) => formatter.write_str(name),
        }
    }
}

/// The outcome of [`Leases::acquire`] for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The caller holds the lease now, at this new epoch.
    Granted { epoch: Epoch },
    /// Another node holds it: a live one, or one declared dead that still renews it. `expires_in_ms`: the lease's
    /// remaining time to live when read (`None`: no expiry). Two readings tell whether the holder renewed it in
    /// between, which proves it alive although cut off from the caller (see the node's step-aside rule).
    HeldBy { node: String, epoch: Epoch, expires_in_ms: Option<u64> },
}

/// Time-limited, fenced leases: a node serves a shard (or runs a singleton) only while it holds its lease.
pub trait Leases: Send + Sync + 'static {
    /// For each name: takes the lease for `node` when it is free, already held by `node` (a restarted node), or held
    /// by a node not in `live` (gossip declared it dead: takeover). Taking always increments the epoch and sets the
    /// lease to `"<node> <epoch>"` for `ttl_ms`. One round trip for the whole batch; the decision is
    /// [`lease::decide_acquire`].
    fn acquire(
        &self,
        names: Vec<LeaseName>,
        node: &str,
        live: Vec<String>,
        ttl_ms: u64,
    ) -> ReplicaFuture<Vec<Acquired>> {
        self.acquire_with(names, node, live, lease::Takeover::on_gossip(ttl_ms))
    }

    /// [`Leases::acquire`], where a lease held by a node not in `live` is taken over only once its holder stopped
    /// renewing it for `takeover.silence_ms` (a holder cut off from this node but not from Redis keeps it).
    fn acquire_with(
        &self,
        names: Vec<LeaseName>,
        node: &str,
        live: Vec<String>,
        takeover: lease::Takeover,
    ) -> ReplicaFuture<Vec<Acquired>>;

    /// For each (name, epoch): if the lease is still `"<node> <epoch>"`, extends it to `ttl_ms` from now and answers
    /// true; else false (lost: stop serving). One round trip.
    fn renew(&self, leases: Vec<(LeaseName, Epoch)>, node: &str, ttl_ms: u64) -> ReplicaFuture<Vec<bool>>;

    /// Deletes each lease still `"<node> <epoch>"` (graceful hand-over); the epoch stays, so the next owner's is
    /// higher.
    fn release(&self, leases: Vec<(LeaseName, Epoch)>, node: &str) -> ReplicaFuture<()>;

    /// The current holder and epoch, if the lease is held (tests, admin).
    fn holder(&self, name: LeaseName) -> ReplicaFuture<Option<(String, Epoch)>>;
}
