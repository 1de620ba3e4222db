//! The shards a node owns, spread over one arbiter per core so state work uses every core.
//!
//! Single-node today: the node owns every shard. The cluster's `ShardManager` will start and stop actors as
//! ownership moves, behind the same `execute` call.

use crate::clock::SharedClock;
use crate::replica::SharedReplica;
use crate::shard::model::{ShardError, ShardOp, ShardResult};
use crate::shard::{Execute, ResidentCount, Restart, ShardActor};
use actix::{Addr, Arbiter, Supervisor};
use idp_proto::ShardId;

pub struct LocalShards {
    actors: Vec<Addr<ShardActor>>,
    _arbiters: Vec<Arbiter>,
}

impl LocalShards {
    /// Starts one supervised `ShardActor` per shard, round-robin over `arbiter_count` new arbiters.
    pub fn start(shard_count: u16, arbiter_count: usize, replica: SharedReplica, clock: SharedClock) -> Self {
        let arbiters: Vec<Arbiter> = (0..arbiter_count.max(1)).map(|_| Arbiter::new()).collect();
        let actors = (0..shard_count)
            .map(|shard| {
                let arbiter = arbiters[usize::from(shard) % arbiters.len()].handle();
                let (replica, clock) = (replica.clone(), clock.clone());
                Supervisor::start_in_arbiter(&arbiter, move |_ctx| ShardActor::new(ShardId(shard), 1, replica, clock))
            })
            .collect();
        Self { actors, _arbiters: arbiters }
    }

    pub fn shard_count(&self) -> u16 {
        self.actors.len() as u16
    }

    /// Runs an operation on the shard's actor and waits for its reply.
    pub async fn execute<O: ShardOp>(&self, shard: ShardId, op: O) -> ShardResult<O::Output> {
        let actor = self.actors.get(usize::from(shard.0)).ok_or(ShardError::NotFound)?;
        match actor.send(Execute(op)).await {
            Ok(reply) => reply,
            Err(error) => Err(ShardError::Unavailable(format!("shard actor unreachable: {error}"))),
        }
    }

    /// Restarts every shard actor: in-memory state is dropped and reloads from the replica alone.
    pub async fn restart_all(&self) {
        for actor in &self.actors {
            let _ = actor.send(Restart).await;
        }
    }

    /// Records resident in memory over all shards.
    pub async fn resident_records(&self) -> usize {
        let mut total = 0;
        for actor in &self.actors {
            total += actor.send(ResidentCount).await.unwrap_or(0);
        }
        total
    }
}

impl Drop for LocalShards {
    fn drop(&mut self) {
        for arbiter in &self._arbiters {
            arbiter.stop();
        }
    }
}
