//! Redis metrics without touching the replica: a wrapper around any [`Replica`] + [`Leases`] that times every
//! call (`idp_redis_command_duration_seconds{op}`), counts errors by kind, fence rejections, and lease renewals.

use super::metrics as m;
use futures::FutureExt;
use idp_actors::replica::lease::Takeover;
use idp_actors::replica::{Acquired, Epoch, LeaseName, Leases, RecordWrite, Replica, ReplicaError, ReplicaFuture};
use idp_proto::records::RecordKey;
use idp_proto::ShardId;
use std::sync::Arc;
use std::time::Instant;

/// The replica and leases of a cluster node, measured.
pub struct Measured<R> {
    inner: Arc<R>,
}

impl<R> Measured<R> {
    pub fn new(inner: Arc<R>) -> Arc<Self> {
        Arc::new(Self { inner })
    }
}

/// The error label of a result.
pub fn error_label<T>(result: &Result<T, ReplicaError>) -> &'static str {
    match result {
        Ok(_) => "none",
        Err(ReplicaError::Fenced { .. }) => "fenced",
        Err(ReplicaError::Unavailable(_)) => "unavailable",
        Err(ReplicaError::Corrupt(_)) => "corrupt",
    }
}

fn measure<T: Send + 'static>(op: &'static str, call: ReplicaFuture<T>) -> ReplicaFuture<T> {
    let started = Instant::now();
    call.map(move |result| {
        let error = error_label(&result);
        m::redis_command(op, error, started.elapsed());
        if error == "fenced" {
            m::fence_rejection();
        }
        result
    })
    .boxed()
}

impl<R: Replica> Replica for Measured<R> {
    fn write_records(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> ReplicaFuture<()> {
        measure("write_records", self.inner.write_records(shard, epoch, writes))
    }

    fn read_records(&self, shard: ShardId, keys: Vec<RecordKey>) -> ReplicaFuture<Vec<Option<Vec<u8>>>> {
        measure("read_records", self.inner.read_records(shard, keys))
    }

    fn read_document(&self, name: &str) -> ReplicaFuture<Option<Vec<u8>>> {
        measure("read_document", self.inner.read_document(name))
    }

    fn write_document(&self, name: &str, value: Vec<u8>) -> ReplicaFuture<()> {
        measure("write_document", self.inner.write_document(name, value))
    }

    fn write_document_fenced(&self, name: &str, value: Vec<u8>, lease: LeaseName, epoch: Epoch) -> ReplicaFuture<()> {
        measure("write_document_fenced", self.inner.write_document_fenced(name, value, lease, epoch))
    }
}

impl<R: Leases> Leases for Measured<R> {
    fn acquire_with(
        &self,
        names: Vec<LeaseName>,
        node: &str,
        live: Vec<String>,
        takeover: Takeover,
    ) -> ReplicaFuture<Vec<Acquired>> {
        measure("lease_acquire", self.inner.acquire_with(names, node, live, takeover))
    }

    fn renew(&self, leases: Vec<(LeaseName, Epoch)>, node: &str, ttl_ms: u64) -> ReplicaFuture<Vec<bool>> {
        let count = leases.len();
        measure("lease_renew", self.inner.renew(leases, node, ttl_ms))
            .map(move |result| {
                match &result {
                    Ok(renewed) => {
                        let kept = renewed.iter().filter(|kept| **kept).count();
                        m::lease_renewals("renewed", kept);
                        m::lease_renewals("lost", renewed.len() - kept);
                    }
                    Err(_) => m::lease_renewals("failed", count),
                }
                result
            })
            .boxed()
    }

    fn release(&self, leases: Vec<(LeaseName, Epoch)>, node: &str) -> ReplicaFuture<()> {
        measure("lease_release", self.inner.release(leases, node))
    }

    fn holder(&self, name: LeaseName) -> ReplicaFuture<Option<(String, Epoch)>> {
        measure("lease_holder", self.inner.holder(name))
    }
}
