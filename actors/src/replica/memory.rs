//! An in-memory replica: serves `idp dev` and unit tests; never a stand-in for Redis in a replication test.

use super::lease::{decide_acquire, holds, lease_value, AcquireDecision, Takeover};
use super::{Acquired, Epoch, LeaseName, Leases, RecordWrite, Replica, ReplicaError, ReplicaFuture};
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
    /// The epoch of every lease name ever taken; shard writes are fenced by `LeaseName::Shard`'s.
    epochs: HashMap<LeaseName, Epoch>,
    /// Stored leases (`"<node> <epoch>"`) with their expiry in Unix milliseconds.
    leases: HashMap<LeaseName, (String, u64)>,
    documents: HashMap<String, Vec<u8>>,
    writes_since_sweep: usize,
}

impl Inner {
    /// Fencing: unlike Redis, which accepts only the current epoch, the memory replica also accepts a newer one.
    /// It cannot lose an epoch (no failover), and the single node (`idp dev`) writes at epoch 1 without leases.
    fn check_epoch(&self, lease: LeaseName, attempted: Epoch) -> Result<(), ReplicaError> {
        let current = self.epochs.get(&lease).copied().unwrap_or(0);
        if attempted < current {
            return Err(ReplicaError::Fenced { lease, current, attempted });
        }
        Ok(())
    }

    /// The stored lease, unless expired.
    fn lease(&self, name: &LeaseName, now_ms: u64) -> Option<&str> {
        self.leases.get(name).filter(|(_, expires_at_ms)| *expires_at_ms > now_ms).map(|(value, _)| value.as_str())
    }
}

/// Records in a map, with expiry, leases and epoch fencing like the Redis replica.
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
        let epoch = inner.epochs.entry(LeaseName::Shard(shard)).or_insert(0);
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
        inner.check_epoch(LeaseName::Shard(shard), epoch)?;
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

    fn write_document_fenced(&self, name: &str, value: Vec<u8>, lease: LeaseName, epoch: Epoch) -> ReplicaFuture<()> {
        let mut inner = self.inner.lock();
        let result = inner.check_epoch(lease, epoch).map(|()| {
            inner.documents.insert(name.to_string(), value);
        });
        futures::future::ready(result).boxed()
    }
}

impl Leases for MemoryReplica {
    fn acquire_with(
        &self,
        names: Vec<LeaseName>,
        node: &str,
        live: Vec<String>,
        takeover: Takeover,
    ) -> ReplicaFuture<Vec<Acquired>> {
        let ttl_ms = takeover.ttl_ms;
        let now_ms = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let outcomes = names
            .into_iter()
            .map(|name| {
                let remaining_ms =
                    inner.leases.get(&name).map(|(_, expires_at_ms)| expires_at_ms.saturating_sub(now_ms));
                let decision = decide_acquire(inner.lease(&name, now_ms), remaining_ms, node, &live, takeover);
                if decision != AcquireDecision::Take {
                    return decision.outcome(0, remaining_ms);
                }
                let epoch = inner.epochs.entry(name.clone()).or_insert(0);
                *epoch += 1;
                let epoch = *epoch;
                inner.leases.insert(name, (lease_value(node, epoch), now_ms.saturating_add(ttl_ms)));
                decision.outcome(epoch, None)
            })
            .collect();
        futures::future::ready(Ok(outcomes)).boxed()
    }

    fn renew(&self, leases: Vec<(LeaseName, Epoch)>, node: &str, ttl_ms: u64) -> ReplicaFuture<Vec<bool>> {
        let now_ms = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let renewed = leases
            .into_iter()
            .map(|(name, epoch)| {
                let held = holds(inner.lease(&name, now_ms), node, epoch);
                if let Some((_, expires_at_ms)) = inner.leases.get_mut(&name).filter(|_| held) {
                    *expires_at_ms = now_ms.saturating_add(ttl_ms);
                }
                held
            })
            .collect();
        futures::future::ready(Ok(renewed)).boxed()
    }

    fn release(&self, leases: Vec<(LeaseName, Epoch)>, node: &str) -> ReplicaFuture<()> {
        let now_ms = self.clock.now_ms();
        let mut inner = self.inner.lock();
        for (name, epoch) in leases {
            if holds(inner.lease(&name, now_ms), node, epoch) {
                inner.leases.remove(&name);
            }
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn holder(&self, name: LeaseName) -> ReplicaFuture<Option<(String, Epoch)>> {
        let now_ms = self.clock.now_ms();
        let inner = self.inner.lock();
        let holder = inner
            .lease(&name, now_ms)
            .and_then(super::lease::parse_lease_value)
            .map(|(node, epoch)| (node.to_string(), epoch));
        futures::future::ready(Ok(holder)).boxed()
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
        assert_eq!(fenced, Err(ReplicaError::Fenced { lease: LeaseName::Shard(shard), current: 1, attempted: 0 }));
        assert!(replica.write_records(shard, 1, vec![write(1, 10)]).now_or_never().unwrap().is_ok());
        assert!(replica.write_records(ShardId(8), 0, vec![write(1, 10)]).now_or_never().unwrap().is_ok());
    }

    fn live(members: &[&str]) -> Vec<String> {
        members.iter().map(|member| member.to_string()).collect()
    }

    fn now<T>(future: ReplicaFuture<T>) -> T {
        future.now_or_never().expect("memory operations are immediate").expect("memory operations succeed")
    }

    #[test]
    fn leases_are_granted_renewed_released_and_taken_over() {
        let clock = ManualClock::new(1_000);
        let replica = MemoryReplica::new(Arc::new(clock.clone()));
        let shard = LeaseName::Shard(ShardId(3));
        let keyring = LeaseName::Singleton("keyring");
        let granted = now(replica.acquire(vec![shard.clone(), keyring.clone()], "a", live(&["a", "b"]), 5_000));
        assert_eq!(granted, vec![Acquired::Granted { epoch: 1 }, Acquired::Granted { epoch: 1 }]);
        // A live holder keeps it; the holder itself takes it again under a new epoch (a restart).
        clock.set_ms(1_200);
        let refused = now(replica.acquire(vec![shard.clone()], "b", live(&["a", "b"]), 5_000));
        assert_eq!(refused, vec![Acquired::HeldBy { node: "a".into(), epoch: 1, expires_in_ms: Some(4_800) }]);
        assert_eq!(
            now(replica.acquire(vec![shard.clone()], "a", live(&["a"]), 5_000)),
            [Acquired::Granted { epoch: 2 }]
        );
        assert_eq!(now(replica.holder(shard.clone())), Some(("a".to_string(), 2)));

        // Renewal needs the exact epoch, and extends the lease past its first expiry.
        clock.set_ms(5_000);
        assert_eq!(now(replica.renew(vec![(shard.clone(), 2), (keyring.clone(), 2)], "a", 5_000)), [true, false]);
        clock.set_ms(9_000);
        assert_eq!(now(replica.holder(shard.clone())), Some(("a".to_string(), 2)));
        assert_eq!(now(replica.holder(keyring.clone())), None, "the key ring lease was not renewed and expired");

        // Takeover once gossip declares the holder dead; the old holder can neither renew nor release it.
        let taken = now(replica.acquire(vec![shard.clone()], "b", live(&["b"]), 5_000));
        assert_eq!(taken, [Acquired::Granted { epoch: 3 }]);
        assert_eq!(now(replica.renew(vec![(shard.clone(), 2)], "a", 5_000)), [false]);
        now(replica.release(vec![(shard.clone(), 2)], "a"));
        assert_eq!(now(replica.holder(shard.clone())), Some(("b".to_string(), 3)));
        now(replica.release(vec![(shard.clone(), 3)], "b"));
        assert_eq!(now(replica.holder(shard.clone())), None);
        // The epoch survives the release.
        assert_eq!(now(replica.acquire(vec![shard], "a", live(&["a", "b"]), 5_000)), [Acquired::Granted { epoch: 4 }]);
    }

    #[test]
    fn a_dead_holder_still_renewing_keeps_its_lease_until_it_falls_silent() {
        let clock = ManualClock::new(0);
        let replica = MemoryReplica::new(Arc::new(clock.clone()));
        let shard = LeaseName::Shard(ShardId(4));
        let rule = Takeover { ttl_ms: 3_000, silence_ms: 500 };
        assert_eq!(
            now(replica.acquire_with(vec![shard.clone()], "a", live(&["a"]), rule)),
            [Acquired::Granted { epoch: 1 }]
        );
        // "b" no longer sees "a" (a partition) while "a" keeps renewing: no takeover.
        for at_ms in [250, 500, 750, 1_000] {
            clock.set_ms(at_ms);
            assert_eq!(now(replica.renew(vec![(shard.clone(), 1)], "a", 3_000)), [true]);
            clock.set_ms(at_ms + 200);
            let refused = now(replica.acquire_with(vec![shard.clone()], "b", live(&["b"]), rule));
            // The remaining time to live shows the renewal: the holder is alive, though unseen.
            let held = Acquired::HeldBy { node: "a".into(), epoch: 1, expires_in_ms: Some(2_800) };
            assert_eq!(refused, [held], "at {at_ms} ms");
        }
        // "a" falls silent at 1 000 ms: taken 500 ms later, long before the lease would expire.
        clock.set_ms(1_499);
        assert!(matches!(
            now(replica.acquire_with(vec![shard.clone()], "b", live(&["b"]), rule))[0],
            Acquired::HeldBy { .. }
        ));
        clock.set_ms(1_500);
        assert_eq!(now(replica.acquire_with(vec![shard], "b", live(&["b"]), rule)), [Acquired::Granted { epoch: 2 }]);
    }

    #[test]
    fn shard_writes_and_fenced_documents_follow_the_lease_epochs() {
        let replica = MemoryReplica::new(Arc::new(ManualClock::new(0)));
        let shard = ShardId(2);
        let granted = now(replica.acquire(vec![LeaseName::Shard(shard)], "a", live(&["a"]), 5_000));
        assert_eq!(granted, [Acquired::Granted { epoch: 1 }]);
        assert_eq!(replica.bump_epoch(shard), 2);
        let fenced = replica.write_records(shard, 1, vec![write(1, 10)]).now_or_never().unwrap();
        assert_eq!(fenced, Err(ReplicaError::Fenced { lease: LeaseName::Shard(shard), current: 2, attempted: 1 }));

        let keyring = LeaseName::Singleton("keyring");
        now(replica.acquire(vec![keyring.clone()], "a", live(&["a"]), 5_000));
        now(replica.acquire(vec![keyring.clone()], "b", live(&["b"]), 5_000));
        let stale = replica.write_document_fenced("keyring", vec![1], keyring.clone(), 1).now_or_never().unwrap();
        assert_eq!(stale, Err(ReplicaError::Fenced { lease: keyring.clone(), current: 2, attempted: 1 }));
        assert_eq!(now(replica.read_document("keyring")), None);
        now(replica.write_document_fenced("keyring", vec![2], keyring, 2));
        assert_eq!(now(replica.read_document("keyring")), Some(vec![2]));
    }
}
