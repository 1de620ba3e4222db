//! Gossip membership over chitchat: which nodes are alive, where their RPC listens, whether they are ready to own
//! shards and whether they reach Redis.
//!
//! Each node publishes three chitchat keys about itself: `rpc` (its RPC advertise address), `ready` (`true`/`false`)
//! and `redis` (`ok`/`down`). A member is *live* when chitchat's failure detector believes it alive **and** its `redis`
//! key is `ok`: a node that cannot reach Redis could not keep its leases anyway, so it must stop attracting shards.
//! The same rule is applied to the node itself, so a node whose Redis is down drops out of its own view too and never
//! counts itself as an owner while the others have already moved on.
//!
//! The [`View`] (live members, sorted by id) is recomputed by a background task and published on a watch channel only
//! when it changes, so the shard manager can react to each change without polling.
//!
//! # What chitchat does (0.13), and why the view is computed here
//! - `Chitchat::live_nodes()` always includes the node itself and does not apply the `extra_liveness_predicate`; only
//!   the live-nodes watch channel applies it (to self too). The view is therefore computed from `live_nodes()` and the
//!   node states with our own predicate, the same function that is installed in chitchat.
//! - The live-nodes watch channel is updated once per gossip round, when the set of live nodes or the `max_version`
//!   of one of them changed (a key change bumps `max_version`), so it does wake on key changes; the periodic refresh
//!   is a safety net, and changes of our own keys are published at once by the setters.
//! - A restarted node is a new `ChitchatId` (same node id, higher generation) while the old generation is still alive
//!   for the failure detector until its timeout. Only the newest generation known for a node id counts, so the old
//!   process's keys (e.g. `ready=true`) stop counting as soon as the new generation is heard of.
//! - Dropping a `ChitchatHandle` closes its command channel, which ends chitchat's server loop: dropping a
//!   [`Membership`] stops gossip too, without waiting. [`Membership::shutdown`] stops it and waits.
//!
//! # Failure detection
//! See [`failure_detector_config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use chitchat::transport::UdpTransport;
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
    ProtocolVersion,
};
use tokio::sync::{oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::warn;

/// Default gossip round period.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
/// Default phi threshold: with the default interval, a silent node is declared dead after about a second.
pub const DEFAULT_PHI_THRESHOLD: f64 = 8.0;

const KEY_RPC: &str = "rpc";
const KEY_READY: &str = "ready";
const KEY_REDIS: &str = "redis";
const REDIS_OK: &str = "ok";
const REDIS_DOWN: &str = "down";

/// How long chitchat keeps the state of a dead node (then forgets it). Long, so that a node that was partitioned or
/// paused for minutes is recognised when it comes back rather than treated as new, and so that a lagging peer cannot
/// gossip a forgotten node back to life. The cost is a few hundred bytes per dead generation (one per restart).
const DEAD_NODE_GRACE_PERIOD: Duration = Duration::from_secs(60 * 60);

/// How long chitchat keeps a deleted key's tombstone. We never delete keys (we overwrite them), so this only has to
/// be comfortably longer than any gossip lag; the same hour as dead nodes keeps one notion of "long ago".
const MARKED_FOR_DELETION_GRACE_PERIOD: Duration = Duration::from_secs(60 * 60);

/// Settings of a node's membership, from the `[node]` and `[cluster]` sections of the configuration.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's id, unique in the cluster and stable across restarts (it names lease holders).
    pub node_id: String,
    /// Chitchat cluster id: nodes of other clusters are refused.
    pub cluster_id: String,
    /// UDP address the gossip socket binds.
    pub gossip_listen: SocketAddr,
    /// UDP address the peers gossip to (differs from `gossip_listen` behind NAT or with a wildcard bind).
    pub gossip_advertise: SocketAddr,
    /// Gossip addresses (`host:port`) of a few nodes to join through; host names are re-resolved every minute.
    pub seeds: Vec<String>,
    /// Address the peers use for the internal RPC, gossiped as the `rpc` key.
    pub rpc_advertise: String,
    /// Period of gossip rounds (see [`failure_detector_config`]).
    pub gossip_interval: Duration,
    /// Silence, in mean heartbeat intervals, after which a node is declared dead (see [`failure_detector_config`]).
    pub phi_threshold: f64,
}

impl MembershipConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if self.node_id.is_empty() || self.node_id.chars().any(char::is_whitespace) {
            bail!("node id {:?} must be non-empty and without whitespace", self.node_id);
        }
        if self.gossip_interval.is_zero() {
            bail!("gossip interval must be positive");
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold >= 1.0) {
            bail!("phi threshold {} must be a finite number of at least 1", self.phi_threshold);
        }
        Ok(())
    }
}

/// A live member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// Its RPC advertise address.
    pub rpc: String,
    /// Whether it is ready to own shards.
    pub ready: bool,
}

/// The live members as one node sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Live members, including this node when it is live, sorted by id.
    pub members: Vec<Member>,
}

impl View {
    /// Ids of the live members that are ready: the candidates for shard ownership, sorted.
    pub fn ready_ids(&self) -> Vec<&str> {
        self.members.iter().filter(|member| member.ready).map(|member| member.id.as_str()).collect()
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.binary_search_by(|member| member.id.as_str().cmp(id)).ok().map(|index| &self.members[index])
    }

    pub fn is_live(&self, id: &str) -> bool {
        self.member(id).is_some()
    }

    /// Ids of all live members, ready or not, sorted.
    pub fn live_ids(&self) -> Vec<String> {
        self.members.iter().map(|member| member.id.clone()).collect()
    }

    /// The view from candidate members with their chitchat generation: `newest_generation` gives, per node id, the
    /// newest generation known (live or not); a candidate of an older generation is a restarted process's ghost and
    /// does not count.
    fn from_candidates(
        candidates: impl IntoIterator<Item = (u64, Member)>,
        newest_generation: &BTreeMap<&str, u64>,
    ) -> View {
        let mut members: Vec<Member> = candidates
            .into_iter()
            .filter(|(generation, member)| newest_generation.get(member.id.as_str()) == Some(generation))
            .map(|(_, member)| member)
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.dedup_by(|a, b| a.id == b.id);
        View { members }
    }
}

/// A node's membership of the cluster: its gossip server and the view derived from it.
pub struct Membership {
    node_id: String,
    handle: ChitchatHandle,
    view_tx: Arc<watch::Sender<Arc<View>>>,
    stop_tx: oneshot::Sender<()>,
    refresh_task: JoinHandle<()>,
}

impl Membership {
    /// Binds the gossip socket and starts gossiping, with `ready=false` and `redis=down`: the node is in nobody's view,
    /// its own included, until [`Membership::set_redis_reachable`] says it reaches Redis, and owns nothing until
    /// [`Membership::set_ready`].
    pub async fn start(config: MembershipConfig) -> anyhow::Result<Membership> {
        config.validate()?;
        let chitchat_id = ChitchatId::new(config.node_id.clone(), next_generation(), config.gossip_advertise);
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.gossip_listen,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: failure_detector_config(config.gossip_interval, config.phi_threshold),
            marked_for_deletion_grace_period: MARKED_FOR_DELETION_GRACE_PERIOD,
            catchup_callback: None,
            extra_liveness_predicate: Some(Box::new(is_live_state)),
            // V1 only compresses digests, which matters for clusters of hundreds of nodes; V0 is understood by every
            // chitchat version, which keeps rolling upgrades of chitchat simple.
            protocol_version: ProtocolVersion::V0,
        };
        let initial_keys = vec![
            (KEY_RPC.to_string(), config.rpc_advertise.clone()),
            (KEY_READY.to_string(), false.to_string()),
            (KEY_REDIS.to_string(), REDIS_DOWN.to_string()),
        ];
        let handle = spawn_chitchat(chitchat_config, initial_keys, &UdpTransport)
            .await
            .with_context(|| format!("cannot start gossip on {}", config.gossip_listen))?;
        let chitchat = handle.chitchat();
        let (view_tx, _) = watch::channel(Arc::new(View::default()));
        let view_tx = Arc::new(view_tx);
        publish(&view_tx, view_of(&*chitchat.lock().await));
        let (stop_tx, stop_rx) = oneshot::channel();
        let refresh_task = tokio::spawn(refresh_view(chitchat, view_tx.clone(), config.gossip_interval, stop_rx));
        Ok(Membership { node_id: config.node_id, handle, view_tx, stop_tx, refresh_task })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The latest view.
    pub fn view(&self) -> Arc<View> {
        self.view_tx.borrow().clone()
    }

    /// A receiver notified on each change of the view (and only then). It closes when the membership stops.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view_tx.subscribe()
    }

    /// Publishes whether this node is ready to own shards; this node's view reflects it at once.
    pub async fn set_ready(&self, ready: bool) {
        self.set_self_key(KEY_READY, if ready { "true" } else { "false" }).await;
    }

    /// Publishes whether this node reaches Redis. While it does not, the node is not live: in no view, its own
    /// included.
    pub async fn set_redis_reachable(&self, reachable: bool) {
        self.set_self_key(KEY_REDIS, if reachable { REDIS_OK } else { REDIS_DOWN }).await;
    }

    /// The current failure-detection timeout of each live peer: the silence after which it would be declared dead
    /// (plus up to one gossip interval until the next liveness check). For diagnostics.
    pub async fn failure_detection_timeouts(&self) -> Vec<(String, Duration)> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        let mut timeouts: Vec<(String, Duration)> = chitchat
            .live_nodes()
            .filter_map(|id| Some((id.node_id.to_string(), chitchat.failure_detection_timeout(id)?)))
            .collect();
        timeouts.sort();
        timeouts
    }

    /// Stops gossiping and waits until the gossip socket is closed. The peers notice by failure detection.
    pub async fn shutdown(self) {
        let Membership { handle, stop_tx, refresh_task, .. } = self;
        let _ = stop_tx.send(());
        let _ = refresh_task.await;
        if let Err(error) = handle.shutdown().await {
            warn!(%error, "gossip server ended with an error");
        }
    }

    async fn set_self_key(&self, key: &str, value: &str) {
        let chitchat = self.handle.chitchat();
        let mut chitchat = chitchat.lock().await;
        chitchat.self_node_state().set(key, value);
        // Published under the lock, so a refresh computed before this change cannot overwrite it.
        publish(&self.view_tx, view_of(&chitchat));
    }
}

/// The failure-detector settings for a gossip interval and phi threshold: a silent node is declared dead after
/// about `phi_threshold` gossip intervals (0.83 to 1 times that, plus up to one interval until the next check).
///
/// How chitchat 0.13 decides (read from its `failure_detector.rs`, `lib.rs`, `server.rs`): every node increments its
/// own heartbeat counter at each gossip round *and* at each gossip message it handles. Every Syn and SynAck carries a
/// digest with the heartbeat of every node the sender knows, and whenever a digest shows a node's heartbeat higher
/// than last seen, that counts as a heartbeat arrival for that node, whoever relayed it. Phi is then simply
/// `time since the last arrival / mean interval between arrivals`, where the mean is smoothed with a prior:
/// `(sum of the last sampling_window_size intervals + 5 × initial_interval) / (count + 5)`. A node is declared dead
/// when phi exceeds the threshold at a liveness check, done after each gossip round.
///
/// Arrivals come faster than gossip rounds, since fresh heartbeats of a peer are relayed by several messages per
/// round: measured on loopback with three nodes, the mean arrival interval is about 0.45 gossip interval. With
/// chitchat's default window (1000 samples, the prior soon negligible), a threshold of 8 therefore declared a node
/// dead after 3.6 gossip intervals of silence (360 ms at 100 ms, detection 0.4–0.5 s), and a burst of fast arrivals
/// shortens that further, which is how phi detectors flap. The number of relays, hence the mean, also changes with
/// the cluster size, so a threshold would mean different silences in different clusters.
///
/// So the settings make the prior dominate and pin the meaning of the threshold to gossip intervals:
/// - `initial_interval` = one gossip interval: the prior of the mean, weighted as five samples.
/// - `sampling_window_size` = 1: the mean is `(last interval + 5 × gossip interval) / 6`, between 0.83 and 1 gossip
///   interval while arrivals are at least as frequent as rounds. The timeout thus never falls below 0.83 ×
///   `phi_threshold` gossip intervals, whatever the cluster size or a burst of arrivals, and a slow last arrival (a
///   stalled peer that recovered) lengthens it for a while.
/// - `max_interval` = `phi_threshold` gossip intervals: a longer interval is dropped from the mean. No live node can
///   be silent that long without being declared dead, so this only drops the interval spanning a death and a return
///   (chitchat clears the samples on death but keeps the last arrival time), which would otherwise inflate the mean.
/// - `dead_node_grace_period`: see [`DEAD_NODE_GRACE_PERIOD`].
///
/// Measured detection times (time from a node's shutdown until it left both other views) are in the doc of the
/// `detection_times` test of this module: about 0.9 s at the defaults.
pub fn failure_detector_config(gossip_interval: Duration, phi_threshold: f64) -> FailureDetectorConfig {
    FailureDetectorConfig {
        phi_threshold,
        sampling_window_size: 1,
        max_interval: gossip_interval.mul_f64(phi_threshold),
        initial_interval: gossip_interval,
        dead_node_grace_period: DEAD_NODE_GRACE_PERIOD,
    }
}

/// The liveness predicate on top of the failure detector, for peers and self alike: the node reaches Redis and has
/// published where its RPC listens.
fn is_live_state(node_state: &NodeState) -> bool {
    node_state.get(KEY_REDIS) == Some(REDIS_OK) && node_state.get(KEY_RPC).is_some()
}

fn member_of(node_id: &str, node_state: &NodeState) -> Option<Member> {
    if !is_live_state(node_state) {
        return None;
    }
    Some(Member {
        id: node_id.to_string(),
        rpc: node_state.get(KEY_RPC)?.to_string(),
        ready: node_state.get(KEY_READY) == Some("true"),
    })
}

/// The view from chitchat's state: the nodes alive for the failure detector (self always), in their newest
/// generation, that satisfy [`is_live_state`].
fn view_of(chitchat: &Chitchat) -> View {
    let mut newest_generation: BTreeMap<&str, u64> = BTreeMap::new();
    for id in chitchat.node_states().keys() {
        let newest = newest_generation.entry(&id.node_id).or_insert(id.generation_id);
        *newest = (*newest).max(id.generation_id);
    }
    let candidates = chitchat.live_nodes().filter_map(|id| {
        let member = member_of(&id.node_id, chitchat.node_state(id)?)?;
        Some((id.generation_id, member))
    });
    View::from_candidates(candidates, &newest_generation)
}

/// Replaces the published view if it differs; returns whether it did.
fn publish(view_tx: &watch::Sender<Arc<View>>, view: View) -> bool {
    view_tx.send_if_modified(|current| {
        if **current == view {
            return false;
        }
        *current = Arc::new(view);
        true
    })
}

/// Recomputes the view when chitchat reports a change of live nodes, and at every gossip interval in case a change
/// did not wake the watcher, until `stop_rx` fires or its sender is dropped.
async fn refresh_view(
    chitchat: Arc<Mutex<Chitchat>>,
    view_tx: Arc<watch::Sender<Arc<View>>>,
    interval: Duration,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let mut live_nodes_rx = chitchat.lock().await.live_nodes_watcher();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop_rx => return,
            changed = live_nodes_rx.changed() => if changed.is_err() { return },
            _ = ticker.tick() => {}
        }
        publish(&view_tx, view_of(&*chitchat.lock().await));
    }
}

/// The chitchat generation of a start: unix milliseconds, so it increases across restarts of the process, and
/// strictly increasing within a process (several starts in one millisecond, as tests do). A clock set back by more
/// than the downtime would break this; the node would then be ignored until its old generation is forgotten.
fn next_generation() -> u64 {
    static LAST_GENERATION: AtomicU64 = AtomicU64::new(0);
    let now_millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
    let previous = LAST_GENERATION
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now_millis.max(last + 1)))
        .unwrap_or_else(|last| last);
    now_millis.max(previous + 1)
}

#[cfg(test)]
mod tests;
