//! The shards a node hosts, spread over one arbiter per core so state work uses every core.
//!
//! The embedded single node hosts every shard from the start ([`LocalShards::start`]). In a cluster the shard
//! manager starts a shard's actor when the node takes its lease ([`LocalShards::host`]) and retires it when the
//! lease moves away ([`LocalShards::retire`]); the router asks [`LocalShards::try_execute`] first and forwards what
//! is not hosted here.

use crate::clock::SharedClock;
use crate::replica::{Epoch, SharedReplica};
use crate::shard::model::{ShardError, ShardOp, ShardResult};
use crate::shard::{Execute, ResidentCount, Restart, Retire, ShardActor, ShardEvents};
use crate::testing::TestingSwitches;
use actix::{Addr, Arbiter, Supervisor};
use idp_proto::ShardId;
use parking_lot::RwLock;

/// A hosted shard: its actor and the lease epoch its writes carry.
#[derive(Clone)]
struct Slot {
    epoch: Epoch,
    actor: Addr<ShardActor>,
}

pub struct LocalShards {
    slots: Vec<RwLock<Option<Slot>>>,
    arbiters: Vec<Arbiter>,
    replica: SharedReplica,
    clock: SharedClock,
    events: Option<ShardEvents>,
    testing: TestingSwitches,
}

impl LocalShards {
    /// A table of `shard_count` empty slots, with `arbiter_count` new arbiters to run actors on.
    pub fn new(
        shard_count: u16,
        arbiter_count: usize,
        replica: SharedReplica,
        clock: SharedClock,
        events: Option<ShardEvents>,
    ) -> Self {
        let arbiters = (0..arbiter_count.max(1)).map(|_| Arbiter::new()).collect();
        let slots = (0..shard_count).map(|_| RwLock::new(None)).collect();
        Self { slots, arbiters, replica, clock, events, testing: TestingSwitches::default() }
    }

    /// Test-only: every shard actor started from now on breaks a guarantee on purpose (`crate::testing`).
    pub fn with_testing(mut self, testing: TestingSwitches) -> Self {
        self.testing = testing;
        self
    }

    /// The embedded single node: hosts every shard at epoch 1.
    pub fn start(shard_count: u16, arbiter_count: usize, replica: SharedReplica, clock: SharedClock) -> Self {
        let shards = Self::new(shard_count, arbiter_count, replica, clock, None);
        for shard in 0..shard_count {
            shards.host(ShardId(shard), 1);
        }
        shards
    }

    pub fn shard_count(&self) -> u16 {
        self.slots.len() as u16
    }

    /// Starts hosting a shard whose lease this node took at `epoch` (replacing an older actor, if any).
    pub fn host(&self, shard: ShardId, epoch: Epoch) {
        let Some(slot) = self.slots.get(usize::from(shard.0)) else {
            return;
        };
        let arbiter = self.arbiters[usize::from(shard.0) % self.arbiters.len()].handle();
        let (replica, clock, events) = (self.replica.clone(), self.clock.clone(), self.events.clone());
        let testing = self.testing;
        let actor = Supervisor::start_in_arbiter(&arbiter, move |_ctx| {
            let actor = ShardActor::new(shard, epoch, replica, clock).with_testing(testing);
            match events {
                Some(events) => actor.with_events(events),
                None => actor,
            }
        });
        if let Some(previous) = slot.write().replace(Slot { epoch, actor }) {
            previous.actor.do_send(Retire);
        }
    }

    /// Stops hosting a shard; resolves once every write its actor handed to the replica settled. Operations that
    /// reached the actor meanwhile answer `Moved`.
    pub async fn retire(&self, shard: ShardId) {
        let Some(slot) = self.slots.get(usize::from(shard.0)).and_then(|slot| slot.write().take()) else {
            return;
        };
        let _ = slot.actor.send(Retire).await;
    }

    /// Retires the shard only if it is still hosted at `epoch` (a fenced actor reports its epoch).
    pub async fn retire_epoch(&self, shard: ShardId, epoch: Epoch) {
        let taken = self.slots.get(usize::from(shard.0)).and_then(|slot| {
            let mut slot = slot.write();
            match &*slot {
                Some(hosted) if hosted.epoch == epoch => slot.take(),
                _ => None,
            }
        });
        if let Some(slot) = taken {
            let _ = slot.actor.send(Retire).await;
        }
    }

    /// The epoch of a hosted shard.
    pub fn hosted_epoch(&self, shard: ShardId) -> Option<Epoch> {
        self.slots.get(usize::from(shard.0))?.read().as_ref().map(|slot| slot.epoch)
    }

    /// Every hosted shard with its epoch.
    pub fn hosted(&self) -> Vec<(ShardId, Epoch)> {
        (0..self.shard_count()).filter_map(|shard| Some((ShardId(shard), self.hosted_epoch(ShardId(shard))?))).collect()
    }

    /// Runs an operation on a hosted shard; `None` when the shard is not hosted here.
    pub async fn try_execute<O: ShardOp>(&self, shard: ShardId, op: O) -> Option<ShardResult<O::Output>> {
        let actor = self.slots.get(usize::from(shard.0))?.read().as_ref()?.actor.clone();
        Some(match actor.send(Execute(op)).await {
            Ok(reply) => reply,
            Err(error) => Err(ShardError::Unavailable(format!("shard actor unreachable: {error}"))),
        })
    }

    /// What the replica's records alone settle for `op` (see [`crate::shard::settled_by_replica`]), for a shard
    /// this node cannot reach.
    pub async fn settled_by_replica<O: ShardOp>(&self, shard: ShardId, op: O) -> Option<ShardResult<O::Output>> {
        crate::shard::settled_by_replica(&self.replica, self.clock.now_ms(), shard, op).await
    }

    /// Runs an operation on the shard's actor and waits for its reply (`Moved` when not hosted here).
    pub async fn execute<O: ShardOp>(&self, shard: ShardId, op: O) -> ShardResult<O::Output> {
        if usize::from(shard.0) >= self.slots.len() {
            return Err(ShardError::NotFound);
        }
        self.try_execute(shard, op).await.unwrap_or(Err(ShardError::Moved))
    }

    fn actors(&self) -> Vec<Addr<ShardActor>> {
        self.slots.iter().filter_map(|slot| slot.read().as_ref().map(|slot| slot.actor.clone())).collect()
    }

    /// Restarts every shard actor: in-memory state is dropped and reloads from the replica alone.
    pub async fn restart_all(&self) {
        for actor in self.actors() {
            let _ = actor.send(Restart).await;
        }
    }

    /// Records resident in memory over all shards.
    pub async fn resident_records(&self) -> usize {
        let mut total = 0;
        for actor in self.actors() {
            total += actor.send(ResidentCount).await.unwrap_or(0);
        }
        total
    }
}

impl Drop for LocalShards {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
