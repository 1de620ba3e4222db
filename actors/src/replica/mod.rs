//! The replica: where owned state is written through before a reply, and read back after a move or restart.
//!
//! Today: [`MemoryReplica`] (the embedded single node and unit tests). The cluster's Redis replica implements the
//! same trait, so no handler or actor changes when it slots in.

mod memory;

pub use memory::MemoryReplica;

use futures::future::BoxFuture;
use idp_proto::records::RecordKey;
use idp_proto::ShardId;
use std::sync::Arc;

pub type ReplicaFuture<T> = BoxFuture<'static, Result<T, ReplicaError>>;
pub type SharedReplica = Arc<dyn Replica>;

/// The ownership epoch of a shard: every write carries it, and a replica refuses a write from an older epoch.
pub type Epoch = u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// The write's epoch is older than the shard's: another node owns the shard now (invariant I6).
    #[error("write fenced: shard {shard} is at epoch {current}, write carried {attempted}")]
    Fenced { shard: ShardId, current: Epoch, attempted: Epoch },
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
    /// Applies a batch of writes of one shard atomically, if `epoch` is still the shard's epoch.
    /// Batches of one shard are applied in the order of the calls.
    fn write_records(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> ReplicaFuture<()>;

    /// Reads records of one shard; an expired or absent record reads as `None`.
    fn read_records(&self, shard: ShardId, keys: Vec<RecordKey>) -> ReplicaFuture<Vec<Option<Vec<u8>>>>;

    /// Reads a cluster-wide document (key ring, directory).
    fn read_document(&self, name: &str) -> ReplicaFuture<Option<Vec<u8>>>;

    /// Writes a cluster-wide document.
    fn write_document(&self, name: &str, value: Vec<u8>) -> ReplicaFuture<()>;
}
