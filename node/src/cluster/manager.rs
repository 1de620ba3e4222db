//! `ShardManager`: starts and retires this node's shard actors as ownership moves, holding a Redis lease for each.
//!
//! Every round (on a membership change, a fenced write, and every 50 ms) it computes the shards rendezvous hashing
//! gives this node over the ready members, and [`plan`] says what to do: take the leases of new shards (a lease
//! held by a node gossip declares dead is taken over once it went unrenewed for the takeover silence; fencing
//! makes that safe), retire and release the
//! shards that moved to another node (after their in-flight writes settled, so the new owner sees them), and drop
//! at once the shards whose lease could not be renewed in time. Gossip liveness is never the source of truth for
//! ownership: the lease and its epoch are.

use super::isolation::{Isolation, KnownMembers, Observation, Patience, Refusal, RenewalWatch};
use super::membership::Membership;
use super::ownership::owned_shards;
use super::plan::{plan, LeaseBook};
use crate::audit::{Audit, AuditEvent};
use crate::telemetry::metrics as m;
use futures::future::join_all;
use idp_actors::replica::lease::Takeover;
use idp_actors::replica::{Acquired, LeaseName, Leases};
use idp_actors::shard::ShardEvent;
use idp_actors::shards::LocalShards;
use idp_proto::ShardId;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// How often the manager looks again when nothing woke it (pending acquisitions are retried at this pace).
const ROUND_EVERY: Duration = Duration::from_millis(50);

/// Lease timings (`cluster.lease_ttl`, `cluster.lease_renew_every`).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTimings {
    pub ttl: Duration,
    pub renew_every: Duration,
    /// TEST ONLY (`testing.takeover_after`, the I5/I7 negative control): a longer takeover silence.
    pub slowed_takeover: Option<Duration>,
}

impl LeaseTimings {
    /// How long a lease taken or renewed by a request sent at `t` is this node's alone: until `t` plus the takeover
    /// silence (no other node may take it before it has gone unrenewed that long, judged by Redis from the moment
    /// the renewal ran, which is after `t`), or its expiry if that comes first.
    pub fn held_for(&self) -> Duration {
        self.takeover_silence().min(self.ttl)
    }

    /// A shard is dropped when less than this remains of [`Self::held_for`]: half a renewal interval plus a
    /// manager round, so that a renewal that is merely late drops nothing, and a node whose renewals fail (cut from
    /// Redis, paused) stops serving reads from memory before another node may take the shard over.
    fn margin(&self) -> Duration {
        self.renew_every / 2 + ROUND_EVERY
    }

    /// The silence after which a lease whose holder gossip declares dead is taken over: three renewal intervals.
    /// One missed renewal may be a slow round trip; three mean the holder stopped (or is cut off from Redis too).
    /// A holder that still renews is alive and merely cut off from this node; its lease stays with it.
    fn takeover_silence(&self) -> Duration {
        self.slowed_takeover.unwrap_or(self.renew_every * 3)
    }

    pub fn takeover(&self) -> Takeover {
        Takeover { ttl_ms: self.ttl.as_millis() as u64, silence_ms: self.takeover_silence().as_millis() as u64 }
    }

    /// How long this node must be refused leases by a majority it cannot see, proven alive, before it steps aside
    /// (one renewal interval: a filter against a view that flapped); how long it then stays aside at most before
    /// it tries again, which is also how long a member it saw ready counts as known (10 × (takeover silence + one
    /// interval): 10 s by default); and how long a node proven alive counts once it stops refusing (the takeover
    /// silence plus one interval: long enough for the other side of a split to finish its own step aside).
    pub fn patience(&self) -> Patience {
        let proof_memory = self.takeover_silence() + self.renew_every;
        Patience { step_aside: self.renew_every, review: proof_memory * 10, proof_memory }
    }

    /// How much further a refused lease's expiry must have moved to prove its holder renewed it: half an interval
    /// (a renewal moves it by one).
    fn renewal_margin(&self) -> Duration {
        self.renew_every / 2
    }
}

pub struct ShardManager {
    me: String,
    shard_count: u16,
    shards: Arc<LocalShards>,
    leases: Arc<dyn Leases>,
    membership: Arc<Membership>,
    timings: LeaseTimings,
    draining: AtomicBool,
    /// Every shard this node should own is hosted (readiness).
    settled: AtomicBool,
    book: Mutex<LeaseBook>,
    /// Whether this node stepped aside, cut off from a majority of renewing nodes (see [`super::isolation`]).
    isolation: Mutex<Isolation>,
    /// The members seen live and ready lately, for the step-aside rule's majority.
    known: Mutex<KnownMembers>,
    /// Which unseen holders that refuse this node a lease are proven alive.
    renewals: Mutex<RenewalWatch>,
    /// [`Isolation::is_cut_off`], for the router.
    cut_off: Arc<AtomicBool>,
    wake: Notify,
    stop: Notify,
    /// Shard moves are audited once the node's audit writer exists.
    audit: OnceLock<Audit>,
}

impl ShardManager {
    pub fn new(
        shards: Arc<LocalShards>,
        leases: Arc<dyn Leases>,
        membership: Arc<Membership>,
        timings: LeaseTimings,
    ) -> Arc<Self> {
        Arc::new(Self {
            me: membership.node_id().to_string(),
            shard_count: shards.shard_count(),
            shards,
            leases,
            membership,
            timings,
            draining: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            book: Mutex::new(LeaseBook::default()),
            isolation: Mutex::new(Isolation::default()),
            known: Mutex::new(KnownMembers::default()),
            renewals: Mutex::new(RenewalWatch::new(timings.renewal_margin())),
            cut_off: Arc::new(AtomicBool::new(false)),
            wake: Notify::new(),
            stop: Notify::new(),
            audit: OnceLock::new(),
        })
    }

    /// Audits shard moves from now on.
    pub fn set_audit(&self, audit: Audit) {
        let _ = self.audit.set(audit);
    }

    /// Metrics and audit of a lease taken (`acquired`), handed over (`released`) or lost (`lost`).
    fn moved(&self, direction: &'static str, shard: ShardId, epoch: u64) {
        m::shard_move(direction, 1);
        if let Some(audit) = self.audit.get() {
            audit.emit(AuditEvent::ShardMoved { shard: shard.0, direction: direction.into(), epoch });
        }
    }

    /// The membership and ownership gauges.
    fn publish_gauges(&self) {
        let view = self.membership.view();
        m::cluster_members(view.live_ids().len(), view.ready_ids().len());
        m::shards_owned(self.book.lock().shards().count());
    }

    /// Runs the manager until [`ShardManager::shutdown`]; `events` carries fenced writes from the shard actors.
    pub fn spawn(self: &Arc<Self>, mut events: mpsc::UnboundedReceiver<ShardEvent>) -> tokio::task::JoinHandle<()> {
        let manager = self.clone();
        tokio::spawn(async move {
            let mut views = manager.membership.watch();
            let mut next_renewal = Instant::now() + manager.timings.renew_every;
            loop {
                tokio::select! {
                    _ = manager.stop.notified() => break,
                    _ = views.changed() => {}
                    Some(event) = events.recv() => manager.on_event(event).await,
                    _ = manager.wake.notified() => {}
                    _ = tokio::time::sleep(ROUND_EVERY) => {}
                }
                if Instant::now() >= next_renewal {
                    next_renewal = Instant::now() + manager.timings.renew_every;
                    manager.renew().await;
                }
                manager.round().await;
                manager.publish_gauges();
            }
        })
    }

    /// Shards hosted here with their lease epochs.
    pub fn hosted(&self) -> Vec<(ShardId, u64)> {
        self.shards.hosted()
    }

    /// Whether every shard this node should own is hosted (and it is not draining).
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Graceful drain: leave the ready set, hand every shard over, and wait (at most `timeout`) until none is left.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        self.membership.set_ready(false).await;
        self.wake.notify_one();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.book.lock().is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Raised while this node is cut off from a majority that still renews its leases.
    pub fn cut_off_flag(&self) -> Arc<AtomicBool> {
        self.cut_off.clone()
    }

    pub fn shutdown(&self) {
        self.stop.notify_one();
    }

    async fn on_event(&self, event: ShardEvent) {
        match event {
            ShardEvent::Fenced { shard, epoch } => {
                tracing::warn!(shard = shard.0, epoch, "lease lost (write fenced); shard retired");
                self.moved("lost", shard, epoch);
                self.book.lock().forget(shard);
                self.shards.retire_epoch(shard, epoch).await;
            }
        }
    }

    /// The shards this node should own now (none while draining or aside), and the live members.
    fn desired(&self) -> (BTreeSet<ShardId>, Vec<String>) {
        let view = self.membership.view();
        let live = view.live_ids();
        let members = view.members.iter().map(|member| (member.id.as_str(), member.ready));
        self.known.lock().observe(Instant::now(), members);
        if self.is_draining() || self.isolation.lock().is_aside() {
            return (BTreeSet::new(), live);
        }
        let ready = view.ready_ids();
        if !ready.contains(&self.me.as_str()) {
            return (BTreeSet::new(), live);
        }
        (owned_shards(&self.me, &ready, self.shard_count).into_iter().collect(), live)
    }

    async fn round(&self) {
        let (desired, live) = self.desired();
        let plan = {
            let book = self.book.lock();
            plan(&desired, &book, Instant::now(), self.timings.margin())
        };
        if plan.is_empty() {
            self.settled.store(!desired.is_empty(), Ordering::SeqCst);
            self.renewals.lock().no_refusals();
            self.observe(&live).await;
            return;
        }
        self.settled.store(false, Ordering::SeqCst);
        for shard in &plan.drop {
            tracing::warn!(shard = shard.0, "lease not renewed in time; shard dropped");
            self.moved("lost", *shard, self.shards.hosted_epoch(*shard).unwrap_or(0));
            self.book.lock().forget(*shard);
            self.shards.retire(*shard).await;
        }
        if !plan.release.is_empty() {
            self.release(&plan.release).await;
        }
        if plan.acquire.is_empty() {
            self.renewals.lock().no_refusals();
        } else {
            self.acquire(&plan.acquire, &live).await;
        }
        self.observe(&live).await;
    }

    /// Feeds one round's outcome to the step-aside state; on a change, leaves or rejoins the ready set (leaving it
    /// hands every shard over to the nodes that can see each other).
    async fn observe(&self, live: &[String]) {
        if self.is_draining() {
            return;
        }
        let patience = self.timings.patience();
        let seen = live.len();
        let known = self.known.lock().count(Instant::now(), patience.review);
        let unseen_renewing = self.renewals.lock().alive_unseen(Instant::now(), live, patience.proof_memory);
        let observation = Observation { seen: seen.max(1), unseen_renewing, known };
        let (was_aside, aside) = {
            let mut isolation = self.isolation.lock();
            let was_aside = isolation.is_aside();
            let aside = isolation.observe(Instant::now(), observation, patience);
            self.cut_off.store(isolation.is_cut_off(), Ordering::Relaxed);
            (was_aside, aside)
        };
        if aside != was_aside {
            if aside {
                tracing::warn!(
                    seen,
                    unseen_renewing,
                    known,
                    "cut off from a majority that still renews its leases; stepping aside"
                );
            } else {
                tracing::info!(seen, "no longer cut off; rejoining");
            }
            self.membership.set_ready(!aside).await;
            self.wake.notify_one();
        }
    }

    /// Retires the actors (their in-flight writes settle first), then releases the leases.
    async fn release(&self, shards: &[ShardId]) {
        let epochs: Vec<(LeaseName, u64)> = shards
            .iter()
            .filter_map(|shard| Some((LeaseName::Shard(*shard), self.shards.hosted_epoch(*shard)?)))
            .collect();
        join_all(shards.iter().map(|shard| self.shards.retire(*shard))).await;
        if let Err(error) = self.leases.release(epochs.clone(), &self.me).await {
            // The leases expire on their own; the new owner waits for that or takes over once gossip agrees.
            tracing::warn!(%error, "releasing shard leases failed");
        }
        for (name, epoch) in &epochs {
            if let LeaseName::Shard(shard) = name {
                self.moved("released", *shard, *epoch);
            }
        }
        let mut book = self.book.lock();
        for shard in shards {
            book.forget(*shard);
        }
        drop(book);
        tracing::info!(count = shards.len(), "shards handed over");
    }

    /// Takes what it can of the leases of `shards`, and feeds the refusals by nodes missing from `live` to the
    /// [`RenewalWatch`] (a refusing node that renews is cut off from this node, not dead).
    async fn acquire(&self, shards: &[ShardId], live: &[String]) {
        let names = shards.iter().map(|shard| LeaseName::Shard(*shard)).collect();
        let sent_at = Instant::now();
        let results = match self.leases.acquire_with(names, &self.me, live.to_vec(), self.timings.takeover()).await {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(%error, "taking shard leases failed");
                return;
            }
        };
        let answered = Instant::now();
        let mut taken = 0;
        let mut refusals = Vec::new();
        for (shard, result) in shards.iter().zip(results) {
            match result {
                Acquired::Granted { epoch } => {
                    self.shards.host(*shard, epoch);
                    self.book.lock().confirm(*shard, sent_at, self.timings.held_for());
                    self.moved("acquired", *shard, epoch);
                    taken += 1;
                }
                Acquired::HeldBy { node, epoch, expires_in_ms } if !live.contains(&node) => {
                    let expires_in = expires_in_ms.map(Duration::from_millis);
                    refusals.push(Refusal { shard: shard.0, holder: node, epoch, expires_in });
                }
                Acquired::HeldBy { .. } => {}
            }
        }
        if taken > 0 {
            tracing::info!(taken, wanted = shards.len(), "shard leases taken");
        }
        self.renewals.lock().observe(sent_at, answered, &refusals);
    }

    async fn renew(&self) {
        let held: Vec<(ShardId, u64)> = {
            let book = self.book.lock();
            book.shards().filter_map(|shard| Some((shard, self.shards.hosted_epoch(shard)?))).collect()
        };
        if held.is_empty() {
            return;
        }
        let leases = held.iter().map(|(shard, epoch)| (LeaseName::Shard(*shard), *epoch)).collect();
        let sent_at = Instant::now();
        match self.leases.renew(leases, &self.me, self.timings.ttl.as_millis() as u64).await {
            Ok(still_ours) => {
                for ((shard, epoch), ours) in held.into_iter().zip(still_ours) {
                    if ours {
                        self.book.lock().confirm(shard, sent_at, self.timings.held_for());
                    } else {
                        tracing::warn!(shard = shard.0, epoch, "lease lost; shard retired");
                        self.moved("lost", shard, epoch);
                        self.book.lock().forget(shard);
                        self.shards.retire_epoch(shard, epoch).await;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "renewing shard leases failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(ttl_ms: u64, renew_ms: u64) -> LeaseTimings {
        LeaseTimings {
            ttl: Duration::from_millis(ttl_ms),
            renew_every: Duration::from_millis(renew_ms),
            slowed_takeover: None,
        }
    }

    /// Safety: the holder stops serving a shard (at `held_for − margin` after its last successful renewal request)
    /// before any other node may take it over (the takeover silence after that renewal ran, or the lease's expiry).
    /// Liveness: between two renewals (one interval apart) plus a late answer, nothing is dropped.
    #[test]
    fn a_holder_stops_serving_before_a_takeover_and_not_between_renewals() {
        for (ttl, renew) in [(5_000, 250), (5_000, 1_000), (3_000, 250), (2_000, 1_000), (1_000, 200), (600, 250)] {
            let timings = timings(ttl, renew);
            let takeover = timings.takeover();
            let stops_at = timings.held_for() - timings.margin();
            let taken_at = Duration::from_millis(takeover.silence_ms.min(takeover.ttl_ms));
            assert!(
                stops_at + ROUND_EVERY <= taken_at,
                "ttl {ttl} renew {renew}: stops {stops_at:?}, taken {taken_at:?}"
            );
            assert!(
                stops_at > timings.renew_every + timings.renew_every / 4,
                "ttl {ttl} renew {renew}: a renewal late by a quarter interval would drop shards ({stops_at:?})"
            );
        }
    }
}
