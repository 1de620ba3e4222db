//! An in-memory replica: serves `idp dev` and unit tests; never a stand-in for Redis in a replication test.

use super::{Epoch, RecordWrite, Replica, ReplicaError, ReplicaFuture};
use crate::clock::SharedClock;
use futures::FutureExt;
use idp_proto::records::RecordKey;
use idp_proto::ShardId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
struct Inner {
    records: HashMap<(ShardId, RecordKey), (Vec<u8>, u64)>,
    epochs: HashMap<ShardId, Epoch>,
    documents: HashMap<String, Vec<u8>>,
    writes_since_sweep: usize,
}

/// Records in a map, with expiry and epoch fencing like the Redis replica.
#[derive(Clone)]
pub struct MemoryReplica {
    inner: Arc<Mutex<Inner>>,
    clock: SharedClock,
}

/// Expired records are dropped from memory every this many writes.
const SWEEP_EVERY_WRITES: usize = 4096;

impl MemoryReplica {
    pub fn new(clock: SharedClock) -> Self {
        Self { inner: Arc::default(), clock }
    }

    /// Raises a shard's epoch, as a new owner taking the lease would; older writers are fenced from then on.
    pub fn bump_epoch(&self, shard: ShardId) -> Epoch {
        let mut inner = self.inner.lock();
        let epoch = inner.epochs.entry(shard).or_insert(0);
        *epoch += 1;
        *epoch
    }

    /// Number of live records held (tests and metrics).
    pub fn record_count(&self) -> usize {
        let now_ms = self.clock.now_ms();
        self.inner.lock().records.values().filter(|(_, expires_at_ms)| *expires_at_ms > now_ms).count()
    }

    fn apply(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> Result<(), ReplicaError> {
        let now_ms = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let current = inner.epochs.get(&shard).copied().unwrap_or(0);
        if epoch < current {
            return Err(ReplicaError::Fenced { shard, current, attempted: epoch });
        }
        for write in writes {
            match write.value {
                Some(value) if write.expires_at_ms > now_ms => {
                    inner.records.insert((shard, write.key), (value, write.expires_at_ms));
                }
                _ => {
                    inner.records.remove(&(shard, write.key));
                }
            }
            inner.writes_since_sweep += 1;
        }
        if inner.writes_since_sweep >= SWEEP_EVERY_WRITES {
            inner.writes_since_sweep = 0;
            inner.records.retain(|_, (_, expires_at_ms)| *expires_at_ms > now_ms);
        }
        Ok(())
    }
}

impl Replica for MemoryReplica {
    fn write_records(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> ReplicaFuture<()> {
        futures::future::ready(self.apply(shard, epoch, writes)).boxed()
    }

    fn read_records(&self, shard: ShardId, keys: Vec<RecordKey>) -> ReplicaFuture<Vec<Option<Vec<u8>>>> {
        let now_ms = self.clock.now_ms();
        let inner = self.inner.lock();
        let values = keys
            .iter()
            .map(|key| {
                inner
                    .records
                    .get(&(shard, *key))
                    .filter(|(_, expires_at_ms)| *expires_at_ms > now_ms)
                    .map(|(value, _)| value.clone())
            })
            .collect();
        futures::future::ready(Ok(values)).boxed()
    }

    fn read_document(&self, name: &str) -> ReplicaFuture<Option<Vec<u8>>> {
        let value = self.inner.lock().documents.get(name).cloned();
        futures::future::ready(Ok(value)).boxed()
    }

    fn write_document(&self, name: &str, value: Vec<u8>) -> ReplicaFuture<()> {
        self.inner.lock().documents.insert(name.to_string(), value);
        futures::future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use idp_proto::records::RecordKind;
    use idp_proto::RecordId;

    fn key(byte: u8) -> RecordKey {
        RecordKey::new(RecordKind::Code, RecordId([byte; 32]))
    }

    fn write(byte: u8, expires_at_ms: u64) -> RecordWrite {
        RecordWrite { key: key(byte), value: Some(vec![byte]), expires_at_ms }
    }

    #[test]
    fn records_expire_and_deletes_remove() {
        let clock = ManualClock::new(1_000);
        let replica = MemoryReplica::new(Arc::new(clock.clone()));
        let shard = ShardId(1);
        replica.write_records(shard, 0, vec![write(1, 2_000), write(2, 5_000)]).now_or_never().unwrap().unwrap();
        let read = |keys| replica.read_records(shard, keys).now_or_never().unwrap().unwrap();
        assert_eq!(read(vec![key(1), key(2), key(3)]), vec![Some(vec![1]), Some(vec![2]), None]);
        clock.set_ms(2_000);
        assert_eq!(read(vec![key(1), key(2)]), vec![None, Some(vec![2])]);
        let delete = RecordWrite { key: key(2), value: None, expires_at_ms: 0 };
        replica.write_records(shard, 0, vec![delete]).now_or_never().unwrap().unwrap();
        assert_eq!(read(vec![key(2)]), vec![None]);
    }

    #[test]
    fn writes_from_an_older_epoch_are_fenced() {
        let replica = MemoryReplica::new(Arc::new(ManualClock::new(0)));
        let shard = ShardId(9);
        assert_eq!(replica.bump_epoch(shard), 1);
        let fenced = replica.write_records(shard, 0, vec![write(1, 10)]).now_or_never().unwrap();
        assert_eq!(fenced, Err(ReplicaError::Fenced { shard, current: 1, attempted: 0 }));
        assert!(replica.write_records(shard, 1, vec![write(1, 10)]).now_or_never().unwrap().is_ok());
        assert!(replica.write_records(ShardId(8), 0, vec![write(1, 10)]).now_or_never().unwrap().is_ok());
    }
}
