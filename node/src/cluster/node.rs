//! Starting and stopping a cluster node: Redis replica, gossip membership, shard manager, internal RPC, key ring,
//! directory, in that order; the reverse on a graceful drain.

use super::forward::ForwardHandler;
use super::keys::ClusterKeyRing;
use super::manager::{LeaseTimings, ShardManager};
use super::membership::{Membership, MembershipConfig};
use super::router::{Routing, ShardRouter};
use super::rpc::{cluster_tls, RpcClient, RpcServer};
use crate::audit::Audit;
use crate::config::Config;
use crate::directory::store::{DirectoryStore, DEFAULT_REFRESH_EVERY};
use crate::server::{assemble_state, cores};
use crate::state::AppState;
use actix_web::web;
use anyhow::Context;
use arc_swap::ArcSwap;
use idp_actors::clock::{SharedClock, SystemClock};
use idp_actors::keyring::kek::Kek;
use idp_actors::replica::redis::RedisReplica;
use idp_actors::replica::{LeaseName, Leases, SharedReplica};
use idp_actors::shards::LocalShards;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often Redis is pinged for the membership's liveness flag.
const REDIS_CHECK_EVERY: Duration = Duration::from_millis(500);
/// Consecutive failed pings before the node declares itself unable to reach Redis.
const REDIS_FAILURES_TO_LEAVE: u32 = 2;

/// The running cluster parts of a node, kept for readiness and the drain.
pub struct ClusterNode {
    pub membership: Arc<Membership>,
    pub manager: Arc<ShardManager>,
    pub key_ring: Arc<ClusterKeyRing>,
    pub redis_reachable: Arc<AtomicBool>,
    /// The lease table (shard owners and epochs, for the admin API's shard map).
    pub leases: Arc<dyn Leases>,
    rpc_server: parking_lot::Mutex<Option<RpcServer>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ClusterNode {
    /// Ready: a ready member that hosts every shard it owns, with Redis reachable and the key ring loaded.
    pub fn is_ready(&self) -> bool {
        let me = self.membership.node_id();
        let view = self.membership.view();
        let member_ready = view.member(me).is_some_and(|member| member.ready);
        member_ready
            && self.manager.is_settled()
            && self.redis_reachable.load(Ordering::SeqCst)
            && self.key_ring.is_loaded()
    }

    /// Graceful drain, first half: leave the ready set and hand every shard over (bounded by `timeout`).
    pub async fn hand_over(&self, timeout: Duration) -> bool {
        self.key_ring.step_down().await;
        self.manager.drain(timeout).await
    }

    /// Graceful drain, second half (after in-flight HTTP requests finished): stop RPC, leases, gossip.
    pub async fn shutdown(&self) {
        let server = self.rpc_server.lock().take();
        if let Some(server) = server {
            // Calls other nodes sent before they saw the drain finish here; bounded, the drain budget is spent.
            if tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await.is_err() {
                tracing::warn!("internal RPC calls still running at exit");
            }
        }
        self.manager.shutdown();
        self.key_ring.shutdown();
        for task in &self.tasks {
            task.abort();
        }
        // Gossip stops with the process; peers already route around it (it left the ready set first).
    }
}

/// Connects to Redis, joins the cluster, and builds the shared state. Call inside an actix System.
pub async fn start_cluster_node(config: Config, kek: Kek) -> anyhow::Result<(web::Data<AppState>, Arc<ClusterNode>)> {
    let addresses = config.node.addresses().map_err(|error| anyhow::anyhow!("{error}"))?;
    let clock: SharedClock = Arc::new(SystemClock { offset_ms: config.testing.clock_skew_ms() });
    let testing = config.testing.describe();
    if !testing.is_empty() {
        tracing::warn!(switches = ?testing, "TEST ONLY [testing] switches are on: this node breaks guarantees on purpose");
    }
    let redis = super::admin::connect(&config).await?;
    redis.check_eviction_policy().await.context("checking Redis")?;
    crate::telemetry::metrics::install();
    crate::telemetry::metrics::testing_switches(&testing);
    let measured = crate::telemetry::replica::Measured::new(redis.clone());
    let replica: SharedReplica = measured.clone();
    let leases: Arc<dyn Leases> = measured;
    release_previous_leases(&*leases, &addresses.id, config.shards).await;

    let membership = Arc::new(
        Membership::start(MembershipConfig {
            node_id: addresses.id.clone(),
            cluster_id: config.cluster.id.clone(),
            gossip_listen: addresses.gossip,
            gossip_advertise: addresses.gossip_advertise,
            seeds: config.node.seeds.clone(),
            rpc_advertise: addresses.rpc_advertise.clone(),
            gossip_interval: config.cluster.gossip_interval,
            phi_threshold: config.cluster.phi_threshold,
        })
        .await
        .context("starting gossip")?,
    );
    membership.set_redis_reachable(true).await;
    // Take no lease before gossip showed the cluster: a node that saw nobody yet would take every lease from
    // holders it merely had not heard of (a takeover is allowed from nodes missing from the view).
    converge(&membership, config.cluster.gossip_interval, config.cluster.phi_threshold, !config.node.seeds.is_empty())
        .await;

    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let shards = LocalShards::new(config.shards, cores(), replica.clone(), clock.clone(), Some(events_tx));
    let shards = Arc::new(shards.with_testing(config.testing.switches()));
    let (server_tls, client_tls) = match &config.cluster.tls {
        Some(tls) => {
            let (server, client) = cluster_tls(&tls.cert, &tls.key, &tls.ca).context("cluster.tls")?;
            (Some(server), Some(client))
        }
        None => (None, None),
    };
    let rpc_listener = tokio::net::TcpListener::bind(addresses.rpc)
        .await
        .with_context(|| format!("binding node.rpc {}", addresses.rpc))?;
    let handler = ForwardHandler { shards: shards.clone(), membership: membership.clone() };
    let rpc_server = RpcServer::start(rpc_listener, server_tls, Arc::new(handler));

    let key_ring =
        ClusterKeyRing::start(&config, replica.clone(), leases.clone(), membership.clone(), clock.clone(), kek.clone())
            .await
            .context("loading the signing key ring")?;

    let store = Arc::new(DirectoryStore::new(replica.clone(), kek.derive("client-secrets"), config.issuer.clone()));
    let directory = store.seed(&config).await.context("seeding the directory")?;
    let directory = Arc::new(ArcSwap::from_pointee(directory));
    let cache = directory.clone();
    let refresh = store.clone().spawn_refresh(DEFAULT_REFRESH_EVERY, move |fresh| cache.store(Arc::new(fresh)));

    let timings = LeaseTimings {
        ttl: config.cluster.lease_ttl,
        renew_every: config.cluster.lease_renew_every,
        slowed_takeover: config.testing.takeover_after(),
    };
    let manager = ShardManager::new(shards.clone(), leases.clone(), membership.clone(), timings);
    let cut_off = manager.cut_off_flag();
    let manager_task = manager.spawn(events_rx);
    let routing = Routing {
        membership: membership.clone(),
        rpc: RpcClient::new(client_tls).with_source_ip(addresses.rpc.ip()),
        forward_timeout: config.cluster.forward_timeout,
        cut_off,
    };
    let router = ShardRouter::cluster(shards, routing);

    let redis_reachable = Arc::new(AtomicBool::new(true));
    let health = tokio::spawn(watch_redis(redis.clone(), membership.clone(), redis_reachable.clone()));
    let audit = Audit::start(&config, &kek, &addresses.id, Some(redis.settings().target.clone()))
        .context("starting the audit writer")?;
    manager.set_audit(audit.clone());
    let ring_membership = membership.clone();
    let me = addresses.id.clone();
    crate::telemetry::keys::watch_key_events(key_ring.handle(), clock.clone(), audit.clone(), move || {
        super::ownership::singleton_owner(super::keys::KEY_RING_LEASE, &ring_membership.view().ready_ids())
            == Some(me.as_str())
    });
    let state =
        assemble_state(config, kek, clock, router, (key_ring.handle(), None), (directory, store.clone()), audit)?;
    membership.set_ready(true).await;
    tracing::info!(node = %addresses.id, rpc = %addresses.rpc_advertise, gossip = %addresses.gossip_advertise, "cluster member ready");
    let node = ClusterNode {
        membership,
        manager,
        key_ring,
        redis_reachable,
        leases,
        rpc_server: parking_lot::Mutex::new(Some(rpc_server)),
        tasks: vec![manager_task, health, refresh],
    };
    Ok((state, Arc::new(node)))
}

/// Releases the leases an earlier run of this node left behind (a crash and a restart faster than gossip could
/// declare it dead): the other nodes see this id live again, so without this its shards would wait for the new run
/// to be ready, or for the leases to expire, instead of moving at once.
async fn release_previous_leases(leases: &dyn Leases, me: &str, shard_count: u16) {
    let mut names: Vec<LeaseName> = (0..shard_count).map(|shard| LeaseName::Shard(idp_proto::ShardId(shard))).collect();
    names.push(LeaseName::Singleton(super::keys::KEY_RING_LEASE));
    let holders = futures::future::join_all(names.iter().map(|name| leases.holder(name.clone()))).await;
    let ours: Vec<(LeaseName, u64)> = names
        .into_iter()
        .zip(holders)
        .filter_map(|(name, holder)| match holder {
            Ok(Some((node, epoch))) if node == me => Some((name, epoch)),
            _ => None,
        })
        .collect();
    if ours.is_empty() {
        return;
    }
    let count = ours.len();
    match leases.release(ours, me).await {
        Ok(()) => tracing::info!(count, "released the leases of this node's previous run"),
        Err(error) => tracing::warn!(%error, "releasing the leases of a previous run failed; they expire on their own"),
    }
}

/// Waits until the view shows another member and then a few more gossip rounds passed, or, for a node without
/// seeds or a cluster nobody else runs yet, for twice the failure-detection time.
async fn converge(membership: &Membership, gossip_interval: Duration, phi_threshold: f64, has_seeds: bool) {
    let detection = gossip_interval.mul_f64(phi_threshold);
    let deadline = std::time::Instant::now() + (detection * 2).max(Duration::from_secs(1));
    let settle = gossip_interval * 3;
    let mut seen_others_at = None;
    while std::time::Instant::now() < deadline {
        if membership.view().members.len() > 1 {
            let since = *seen_others_at.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= settle {
                return;
            }
        }
        tokio::time::sleep(gossip_interval / 2).await;
    }
    if has_seeds {
        tracing::warn!("no other cluster member seen through the seeds; starting alone");
    }
}

/// Publishes whether Redis answers: a node that cannot reach it stops being live in gossip, so its shards move to
/// nodes that can serve them.
async fn watch_redis(redis: Arc<RedisReplica>, membership: Arc<Membership>, reachable: Arc<AtomicBool>) {
    let mut failures = 0;
    loop {
        tokio::time::sleep(REDIS_CHECK_EVERY).await;
        if redis.ping().await {
            failures = 0;
            if !reachable.swap(true, Ordering::SeqCst) {
                tracing::info!("Redis reachable again");
                membership.set_redis_reachable(true).await;
            }
        } else {
            failures += 1;
            if failures >= REDIS_FAILURES_TO_LEAVE && reachable.swap(false, Ordering::SeqCst) {
                tracing::warn!("Redis unreachable; leaving the live set until it answers");
                membership.set_redis_reachable(false).await;
            }
        }
    }
}
