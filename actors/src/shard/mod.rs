//! `ShardActor`: owns the records of one shard.
//!
//! For each operation it (1) fetches from the replica the records the operation names that are not resident
//! (lazy rehydration after a restart or a move), holding its mailbox meanwhile so decisions stay sequential,
//! (2) decides with the pure [`model`], (3) applies the writes in memory and hands them to the replica, and
//! (4) replies only after the replica acknowledged them, and every write before them.
//!
//! Two kinds of failure (STYLE.md): a refused operation is an ordinary reply; a replica failure means a write may
//! or may not have happened, so the actor does not guess: it replies `Unavailable` and stops, and its supervisor
//! restarts it empty, to reload from the replica.

pub mod model;
pub mod remote;
pub mod upstream;
pub mod user_sessions;

use crate::clock::SharedClock;
use crate::replica::{Epoch, RecordWrite, ReplicaError, SharedReplica};
use crate::testing::TestingSwitches;
use actix::prelude::*;
use futures::future::{BoxFuture, FutureExt, Shared};
use idp_proto::records::{Record, RecordKey, StoredRecord};
use idp_proto::ShardId;
use model::{ShardError, ShardOp, ShardResult, ShardState};
use std::time::Duration;

/// Rounds of dependent-key fetching before an operation gives up (a code names a grant: two rounds).
const MAX_FETCH_ROUNDS: usize = 3;
/// How often expired records are dropped from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

type WriteAck = Shared<BoxFuture<'static, Result<(), ReplicaError>>>;

/// What a shard actor tells its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardEvent {
    /// A write carrying `epoch` was refused by the fence: another node took the shard's lease.
    Fenced { shard: ShardId, epoch: Epoch },
}

pub type ShardEvents = tokio::sync::mpsc::UnboundedSender<ShardEvent>;

pub struct ShardActor {
    shard: ShardId,
    epoch: Epoch,
    /// Set once the shard moved away (lease released or fenced): every operation answers `Moved`, so the router
    /// retries it on the new owner; nothing is decided from memory any more.
    retired: bool,
    events: Option<ShardEvents>,
    state: ShardState,
    replica: SharedReplica,
    clock: SharedClock,
    /// Acknowledgement of the latest write: every reply waits for it, so no reply reveals an unacknowledged write.
    last_write: WriteAck,
    /// Test-only switches (chaos negative controls); all off in production.
    testing: TestingSwitches,
}

impl ShardActor {
    pub fn new(shard: ShardId, epoch: Epoch, replica: SharedReplica, clock: SharedClock) -> Self {
        Self {
            shard,
            epoch,
            retired: false,
            events: None,
            state: ShardState::default(),
            replica,
            clock,
            last_write: acknowledged(),
            testing: TestingSwitches::default(),
        }
    }

    /// Test-only: breaks a guarantee on purpose (`crate::testing`).
    pub fn with_testing(mut self, testing: TestingSwitches) -> Self {
        self.testing = testing;
        self
    }

    /// Reports fenced writes to the shard's host (the cluster's shard manager).
    pub fn with_events(mut self, events: ShardEvents) -> Self {
        self.events = Some(events);
        self
    }

    /// Stops deciding: state forgotten, every later operation answers `Moved`.
    fn retire(&mut self) {
        self.retired = true;
        self.state.clear();
    }

    /// Decides with resident records, applies, and returns the reply future that resolves after the replica's ack.
    fn execute<O: ShardOp>(&mut self, op: O, ctx: &mut Context<Self>) -> BoxFuture<'static, ShardResult<O::Output>> {
        if self.retired {
            return futures::future::ready(Err(ShardError::Moved)).boxed();
        }
        let now_ms = self.clock.now_ms();
        // Test-only (forget_redemptions, forget_rotations): the operation's own record is not written.
        let forgotten = self.testing.forgets_own_record(std::any::type_name::<O>()).then(|| op.keys());
        let mut decision = op.decide(&self.state, now_ms);
        if let Some(forgotten) = forgotten {
            decision.writes.retain(|(key, _)| !forgotten.contains(key));
        }
        // Test-only (no_family_revocation): a refused replay leaves the grant it should revoke alive.
        let refused_replay = matches!(decision.reply, Err(ShardError::CodeReplayed | ShardError::RefreshReused));
        if self.testing.keeps_family_after(refused_replay) {
            decision.writes.clear();
        }
        if !decision.writes.is_empty() {
            let writes = decision.writes.iter().map(|(key, value)| record_write(*key, value.as_ref())).collect();
            self.state.apply(&decision.writes);
            let previous = self.last_write.clone();
            let write = self.replica.write_records(self.shard, self.epoch, writes);
            self.last_write = async move {
                previous.await?;
                write.await
            }
            .boxed()
            .shared();
        }
        let ack = self.last_write.clone();
        let address = ctx.address();
        let reply = decision.reply;
        async move {
            match ack.await {
                Ok(()) => reply,
                Err(ReplicaError::Fenced { .. }) => {
                    // Nothing of this batch was committed: the new owner decides the operation afresh.
                    address.do_send(Fenced);
                    Err(ShardError::Moved)
                }
                Err(error) => {
                    address.do_send(ReplicaFailed);
                    Err(ShardError::Unavailable(error.to_string()))
                }
            }
        }
        .boxed()
    }

    /// Keys the operation needs that are neither resident nor known absent.
    fn missing_keys<O: ShardOp>(&self, op: &O) -> Vec<RecordKey> {
        missing_keys(&self.state, op, self.clock.now_ms())
    }

    /// Fetches missing records (mailbox held), then executes; the reply comes through `reply_tx`.
    fn fetch_then_execute<O: ShardOp>(
        &mut self,
        op: O,
        missing: Vec<RecordKey>,
        round: usize,
        reply_tx: tokio::sync::oneshot::Sender<BoxFuture<'static, ShardResult<O::Output>>>,
        ctx: &mut Context<Self>,
    ) {
        // A read must not overtake an earlier write of this shard still in flight (a consumed marker, a delete):
        // it is issued only once every earlier write has settled.
        let earlier_writes = self.last_write.clone();
        let (replica, shard, keys) = (self.replica.clone(), self.shard, missing.clone());
        let read = async move {
            let _ = earlier_writes.await;
            replica.read_records(shard, keys).await
        };
        ctx.wait(read.into_actor(self).map(move |result, actor, ctx| {
            let values = result.and_then(decode_all);
            match values {
                Ok(values) => actor.state.hydrate(missing, values),
                Err(error) => {
                    let _ =
                        reply_tx.send(futures::future::ready(Err(ShardError::Unavailable(error.to_string()))).boxed());
                    return;
                }
            }
            let still_missing = actor.missing_keys(&op);
            if still_missing.is_empty() || round + 1 >= MAX_FETCH_ROUNDS {
                let _ = reply_tx.send(actor.execute(op, ctx));
            } else {
                actor.fetch_then_execute(op, still_missing, round + 1, reply_tx, ctx);
            }
        }));
    }
}

/// What the stored records alone settle for `op`, on a node that does not host its shard: the reply of a decision
/// that writes nothing, over the op's records as the replica has them (a read, or the same request again after its
/// write committed). `None` when the decision would write (only the shard's owner may), or when the records could
/// not be read, did not settle within [`MAX_FETCH_ROUNDS`], or are not yet as durable as an acknowledged write
/// ([`crate::replica::Replica::durable_barrier`]).
///
/// A node cut off from the shard's owner answers this way what it can: above all the forward whose request
/// reached the owner just as the link was cut, so that the owner committed it and the answer was lost. The
/// client would retry a failure, and its retry (a new request) would find the code redeemed or the refresh token
/// rotated and take it for a replay. The owner acknowledges only what the replica holds, so the replica settles
/// whether that request committed.
pub async fn settled_by_replica<O: ShardOp>(
    replica: &SharedReplica,
    now_ms: u64,
    shard: ShardId,
    op: O,
) -> Option<ShardResult<O::Output>> {
    let mut state = ShardState::default();
    for round in 0..=MAX_FETCH_ROUNDS {
        let missing = missing_keys(&state, &op, now_ms);
        if missing.is_empty() {
            break;
        }
        if round == MAX_FETCH_ROUNDS {
            return None;
        }
        let values = replica.read_records(shard, missing.clone()).await.and_then(decode_all).ok()?;
        state.hydrate(missing, values);
    }
    let decision = op.decide(&state, now_ms);
    if !decision.writes.is_empty() {
        return None;
    }
    // What was read may include a write whose replicas fell short (its owner answered that it failed): answer
    // only once it is as durable as an acknowledged one.
    replica.durable_barrier().await.ok()?;
    Some(decision.reply)
}

/// The keys `op` needs (its own, and those its records lead to) that `state` neither holds nor knows absent.
fn missing_keys<O: ShardOp>(state: &ShardState, op: &O, now_ms: u64) -> Vec<RecordKey> {
    let mut keys = op.keys();
    keys.extend(op.dependent_keys(state, now_ms));
    state.missing(&keys)
}

fn acknowledged() -> WriteAck {
    futures::future::ready(Ok(())).boxed().shared()
}

fn record_write(key: RecordKey, value: Option<&Record>) -> RecordWrite {
    RecordWrite {
        key,
        value: value.map(StoredRecord::encode),
        expires_at_ms: value.map(Record::expires_at_ms).unwrap_or(0),
    }
}

fn decode_all(values: Vec<Option<Vec<u8>>>) -> Result<Vec<Option<Record>>, ReplicaError> {
    values
        .into_iter()
        .map(|value| value.map(|bytes| StoredRecord::decode(&bytes)).transpose())
        .collect::<Result<_, _>>()
        .map_err(|error| ReplicaError::Corrupt(error.to_string()))
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_INTERVAL, |actor, ctx| {
            if actor.retired {
                // Ends for good once no address is left (the supervisor restarts it while one is).
                ctx.stop();
                return;
            }
            let now_ms = actor.clock.now_ms();
            actor.state.sweep(now_ms);
        });
    }
}

impl Supervised for ShardActor {
    /// Restarted after a replica failure or on request: forget everything, reload lazily from the replica.
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        tracing::info!(shard = self.shard.0, "shard actor restarting; state reloads from the replica");
        self.state.clear();
        // Writes still in flight are not forgotten: later reads and replies wait until they settle. Their outcome
        // was already reported to their callers, so the restarted actor starts from an acknowledged chain.
        let in_flight = self.last_write.clone();
        self.last_write = async move {
            let _ = in_flight.await;
            Ok(())
        }
        .boxed()
        .shared();
    }
}

/// Wraps a model operation as an actor message.
pub struct Execute<O: ShardOp>(pub O);

impl<O: ShardOp> Message for Execute<O> {
    type Result = ShardResult<O::Output>;
}

impl<O: ShardOp> Handler<Execute<O>> for ShardActor {
    type Result = ResponseFuture<ShardResult<O::Output>>;

    fn handle(&mut self, Execute(op): Execute<O>, ctx: &mut Self::Context) -> Self::Result {
        if self.retired {
            return Box::pin(futures::future::ready(Err(ShardError::Moved)));
        }
        let missing = self.missing_keys(&op);
        if missing.is_empty() {
            return self.execute(op, ctx);
        }
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        self.fetch_then_execute(op, missing, 0, reply_tx, ctx);
        Box::pin(async move {
            match reply_rx.await {
                Ok(reply) => reply.await,
                Err(_) => Err(ShardError::Unavailable("shard actor stopped".into())),
            }
        })
    }
}

/// A write was not acknowledged: stop, to be restarted empty.
#[derive(Message)]
#[rtype(result = "()")]
struct ReplicaFailed;

impl Handler<ReplicaFailed> for ShardActor {
    type Result = ();

    fn handle(&mut self, _message: ReplicaFailed, ctx: &mut Self::Context) {
        tracing::warn!(shard = self.shard.0, "replica write not acknowledged; restarting shard actor");
        ctx.stop();
    }
}

/// A write was fenced: the shard belongs to another node now.
#[derive(Message)]
#[rtype(result = "()")]
struct Fenced;

impl Handler<Fenced> for ShardActor {
    type Result = ();

    fn handle(&mut self, _message: Fenced, _ctx: &mut Self::Context) {
        if self.retired {
            return;
        }
        tracing::warn!(shard = self.shard.0, epoch = self.epoch, "write fenced: another node owns the shard now");
        self.retire();
        if let Some(events) = &self.events {
            let _ = events.send(ShardEvent::Fenced { shard: self.shard, epoch: self.epoch });
        }
    }
}

/// The shard moves away: stop deciding, and resolve once every write already handed to the replica settled (so
/// the lease is released only after them). Later operations answer `Moved`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for ShardActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _message: Retire, _ctx: &mut Self::Context) -> Self::Result {
        self.retire();
        let in_flight = self.last_write.clone();
        Box::pin(async move {
            let _ = in_flight.await;
        })
    }
}

/// Drops all in-memory state; the supervisor restarts the actor, which reloads from the replica on demand.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart;

impl Handler<Restart> for ShardActor {
    type Result = ();

    fn handle(&mut self, _message: Restart, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// How many records are resident (tests, metrics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ResidentCount;

impl Handler<ResidentCount> for ShardActor {
    type Result = usize;

    fn handle(&mut self, _message: ResidentCount, _ctx: &mut Self::Context) -> usize {
        self.state.len()
    }
}

#[cfg(test)]
mod actor_tests;
