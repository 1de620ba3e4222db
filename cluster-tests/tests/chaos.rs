//! Chaos scenarios: real `idp serve` processes around a real `redis-server` on loopback, concurrent clients doing
//! real flows (`idp_cluster_tests::chaos::clients`), one fault injected under that load, then the invariant
//! checker over the recorded history, every node's final JWKS and the Redis command stream (docs/chaos.md).
//!
//! The negative controls start one node with a test-only `[testing]` switch that breaks one guarantee on purpose,
//! and show that the checker then reports the matching invariant: a checker that cannot fail proves nothing.
//!
//! Each scenario is short (about 15 s of load); bounds are generous (recovery within 20 s, 3 login retries) so they
//! never flake on a loaded machine. The figures are printed (`--nocapture`).

use idp_cluster_tests::chaos::checker::{Bounds, Report};
use idp_cluster_tests::chaos::clients::ClientOptions;
use idp_cluster_tests::chaos::run::ChaosRun;
use idp_cluster_tests::harness::config::Timings;
use idp_cluster_tests::harness::{leases, wait_for, Cluster, ClusterOptions, Link};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// One cluster at a time: two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Load before the fault, and after it.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(8);
/// How long the clients' load balancer takes to notice a dead node.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

async fn must_start(nodes: usize, extra_config: Vec<String>) -> Cluster {
    match Cluster::start(ClusterOptions { nodes, node_extra_config: extra_config, ..ClusterOptions::default() }).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("cluster did not start: {error:#}"),
    }
}

/// Clients retry a failed login or exchange after 1.5 s (a person pressing again), up to 8 times, so that a login
/// that cannot complete at all is told apart from one that needed a few tries on a loaded machine.
fn clients() -> ClientOptions {
    ClientOptions {
        clients: 4,
        max_time: Duration::from_secs(120),
        retry_pause: Duration::from_millis(1500),
        max_attempts: 8,
        ..Default::default()
    }
}

/// Generous bounds, so that the suite never flakes on this shared 2-core machine (at a load average of 12 a Redis
/// failover took 11 s to serve logins again, and a SIGKILL disturbed requests for 12 s): DESIGN.md's targets (one
/// retry, recovery under 2 s) are measured by the soak (`scripts/chaos`) and `idp-bench`, and printed here.
fn bounds() -> Bounds {
    Bounds { max_login_retries: 3, recovery: Duration::from_secs(20), ..Bounds::default() }
}

/// The shards node `index` holds now (for I7's demand of successes on them after the recovery).
async fn held_by(cluster: &Cluster, index: usize) -> BTreeSet<u16> {
    let held = leases::shards_held_by(cluster.redis().address(), &cluster.node(index).id).await;
    held.expect("the shard leases are readable")
}

/// SIGKILLs node `victim` under the clients' load (I7 then demands successes on the shards it held); the load
/// balancer's health check notices a second later, and until then clients retry on connection errors.
async fn kill_under_load(cluster: &mut Cluster, run: &mut ChaosRun, victim: usize) {
    run.fault_on(format!("SIGKILL node-{}", victim + 1), held_by(cluster, victim).await);
    cluster.kill(victim).unwrap();
    run.run_for(HEALTH_CHECK).await;
    run.nodes.remove(&cluster.url(victim));
}

async fn must_run(cluster: &Cluster, label: &str) -> ChaosRun {
    let run = ChaosRun::start(cluster, label, clients()).await.expect("chaos run starts");
    run.run_for(BEFORE).await;
    run
}

async fn must_finish(run: ChaosRun, cluster: &Cluster) -> Report {
    let report = run.finish(cluster, bounds()).await.expect("facts gathered");
    assert!(report.operations >= 40, "the clients ran ({} operations)", report.operations);
    assert!(report.tokens_verified > 0, "tokens were checked against the JWKS");
    assert!(report.i6.writes_judged > 0, "the Redis stream judged record writes: {}", report.summary());
    report
}

fn assert_clean(report: &Report) {
    assert!(report.is_clean(), "invariants violated:\n{report}");
}

/// I1, I5, I7 under a SIGKILL: the load balancer drops the dead node; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_node_under_load() {
    let _serial = SERIAL.lock().await;
    let mut cluster = must_start(3, Vec::new()).await;
    let mut run = must_run(&cluster, "sigkill").await;
    kill_under_load(&mut cluster, &mut run, 1).await;
    run.run_for(AFTER).await;
    assert_clean(&must_finish(run, &cluster).await);
}

/// I6 under a gray failure: a node is SIGSTOPped until its shards moved, then SIGCONTed; the Redis stream shows
/// no write committed with its stale epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_and_sigcont_under_load() {
    let _serial = SERIAL.lock().await;
    let mut cluster = must_start(3, Vec::new()).await;
    let mut run = must_run(&cluster, "sigstop").await;
    let victim = 2;
    let victim_id = cluster.node(victim).id.clone();
    run.nodes.remove(&cluster.url(victim));
    run.fault_on("SIGSTOP node-3", held_by(&cluster, victim).await);
    cluster.stop(victim).unwrap();
    leases::wait_shards_moved(cluster.redis().address(), &victim_id, Duration::from_secs(20))
        .await
        .expect("every shard of the stopped node has a new owner");
    run.fault("SIGCONT node-3");
    cluster.cont(victim).unwrap();
    cluster.wait_ready(victim).await.expect("the woken node is ready again");
    run.nodes.add(&cluster.url(victim));
    run.run_for(AFTER).await;
    assert_clean(&must_finish(run, &cluster).await);
}

/// Every node in turn drained (SIGTERM) and restarted under load, taken out of the pool before its drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load() {
    let _serial = SERIAL.lock().await;
    let mut cluster = must_start(3, Vec::new()).await;
    let mut run = must_run(&cluster, "rolling").await;
    for node in 0..cluster.len() {
        let url = cluster.url(node);
        run.nodes.remove(&url);
        tokio::time::sleep(Duration::from_millis(500)).await;
        run.fault_on(format!("SIGTERM node-{}", node + 1), held_by(&cluster, node).await);
        let (status, took) = cluster.drain(node, Duration::from_secs(20)).await.expect("the node drains");
        assert!(status.success(), "a drained node exits 0, got {status}");
        println!("figure: node-{} drained in {took:?}", node + 1);
        cluster.restart(node).await.expect("the node comes back");
        run.nodes.add(&url);
        run.run_for(Duration::from_secs(2)).await;
    }
    run.run_for(Duration::from_secs(2)).await;
    assert_clean(&must_finish(run, &cluster).await);
}

/// A fourth node joins under load, then another node drains and leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_then_in_under_load() {
    let _serial = SERIAL.lock().await;
    let mut cluster = must_start(3, Vec::new()).await;
    let mut run = must_run(&cluster, "scale").await;
    run.fault("node-4 joins");
    let joined = cluster.add_node().await.expect("a fourth node joins");
    run.nodes.add(&cluster.url(joined));
    run.run_for(Duration::from_secs(4)).await;
    let leaving = 0;
    run.nodes.remove(&cluster.url(leaving));
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.fault_on("node-1 drains", held_by(&cluster, leaving).await);
    let (status, _) = cluster.drain(leaving, Duration::from_secs(20)).await.expect("the node drains");
    assert!(status.success(), "a drained node exits 0, got {status}");
    run.run_for(AFTER).await;
    assert_clean(&must_finish(run, &cluster).await);
}

/// I4 across a key rotation (`idp admin rotate-keys`) while the key ring's owner is SIGKILLed: every token issued
/// before, during and after verifies against every surviving node's JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_during_a_kill() {
    let _serial = SERIAL.lock().await;
    let mut cluster = must_start(3, Vec::new()).await;
    let keyring = wait_for("the key ring's lease", Duration::from_secs(10), || async {
        leases::read_lease(&mut cluster.redis_client().ok()?, "keyring").ok()?
    })
    .await
    .expect("the key ring is leased");
    let mut run = must_run(&cluster, "rotation").await;
    let victim = cluster.index_of(&keyring.node_id).expect("the key ring's owner is a node");
    let survivor = (victim + 1) % cluster.len();
    run.nodes.remove(&cluster.url(victim));
    run.fault_on(format!("SIGKILL key ring owner node-{}", victim + 1), held_by(&cluster, victim).await);
    cluster.kill(victim).unwrap();
    let config = cluster.node(survivor).config_path.to_string_lossy().into_owned();
    let started = Instant::now();
    loop {
        let args = ["admin", "rotate-keys", "--config", &config, "--timeout", "45s"];
        match cluster.run_idp(&args, Duration::from_secs(60)).await {
            Ok(output) => {
                println!("idp admin rotate-keys after {:?}: {}", started.elapsed(), output.trim());
                break;
            }
            Err(error) if error.to_string().contains("refused") && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => panic!("idp admin rotate-keys: {error:#}"),
        }
    }
    run.run_for(AFTER).await;
    assert_clean(&must_finish(run, &cluster).await);
}

/// Every node's file gets `[testing]` with `enabled = true` and `switches` (`name = value` lines).
fn testing_on(nodes: usize, switches: &str) -> Vec<String> {
    vec![format!("[testing]\nenabled = true\n{switches}\n"); nodes]
}

/// A node whose clock runs 20 s behind the others serves its share of the load, and a SIGKILL of another node
/// moves shards to it: no invariant breaks (record expiries are far longer than the skew; leases live in Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_skewed_clock_under_a_kill() {
    let _serial = SERIAL.lock().await;
    let skewed = vec![String::new(), String::new(), "[testing]\nenabled = true\nclock_skew = \"-20s\"\n".to_string()];
    let mut cluster = must_start(3, skewed).await;
    assert!(cluster.log(2).contains("clock_skew=-20s"), "the skewed node warns about its switch");
    let metrics = |index: usize| {
        let url = format!("{}/metrics", cluster.node(index).admin_url());
        async move { reqwest::get(url).await.expect("/metrics answers").text().await.expect("/metrics text") }
    };
    let skewed_metrics = metrics(2).await;
    assert!(skewed_metrics.contains("idp_testing_switch{name=\"clock_skew\"} 1"), "{skewed_metrics}");
    assert!(!metrics(0).await.contains("idp_testing_switch"), "a node without switches exports none");
    let mut run = must_run(&cluster, "skew").await;
    kill_under_load(&mut cluster, &mut run, 0).await;
    run.run_for(AFTER).await;
    assert_clean(&must_finish(run, &cluster).await);
}

/// Runs the clients for `load`, then checks: the report must name each of `invariants`.
async fn must_violate(cluster: &Cluster, run: ChaosRun, load: Duration, invariants: &[&str]) {
    run.run_for(load).await;
    let report = run.finish(cluster, bounds()).await.expect("facts gathered");
    println!("negative control: {}", report.summary());
    for invariant in invariants {
        assert!(report.violated().contains(invariant), "the checker must report {invariant} here:\n{report}");
        let shown = report.violations.iter().find(|violation| violation.invariant == *invariant).unwrap();
        println!("as expected:\n{shown}");
    }
}

/// Negative control for I2: nodes that forget redemptions let a replayed code through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_i2_a_code_store_that_forgets() {
    let _serial = SERIAL.lock().await;
    let cluster = must_start(3, testing_on(3, "forget_redemptions = true")).await;
    let run = ChaosRun::start(&cluster, "i2", clients()).await.unwrap();
    must_violate(&cluster, run, Duration::from_secs(3), &["I2"]).await;
}

/// Negative control for I3: nodes that forget rotations accept a rotated refresh token again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_i3_a_refresh_store_that_forgets() {
    let _serial = SERIAL.lock().await;
    let cluster = must_start(3, testing_on(3, "forget_rotations = true")).await;
    let run = ChaosRun::start(&cluster, "i3", clients()).await.unwrap();
    must_violate(&cluster, run, Duration::from_secs(3), &["I3"]).await;
}

/// Negative control for the "revokes" half of I2 and I3: nodes that refuse a replayed code or a reused refresh
/// token but leave its family alive; the family's latest tokens, presented after the refusal, are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_i2_i3_a_store_that_refuses_replays_without_revoking() {
    let _serial = SERIAL.lock().await;
    let cluster = must_start(3, testing_on(3, "no_family_revocation = true")).await;
    let run = ChaosRun::start(&cluster, "revocation", clients()).await.unwrap();
    must_violate(&cluster, run, Duration::from_secs(4), &["I2"]).await;
}

/// Negative control for I4: one node signs with a key no JWKS publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_i4_a_node_signing_with_an_unpublished_key() {
    let _serial = SERIAL.lock().await;
    let mut extra = vec![String::new(); 2];
    extra.extend(testing_on(1, "unpublished_signing_key = true"));
    let cluster = must_start(3, extra).await;
    let run = ChaosRun::start(&cluster, "i4", clients()).await.unwrap();
    must_violate(&cluster, run, Duration::from_secs(3), &["I4"]).await;
}

/// Negative control for I1: a replica that acknowledges writes without making them; a SIGKILL then loses the
/// killed node's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_i1_a_replica_that_acknowledges_before_writing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = must_start(3, testing_on(3, "ack_without_write = true")).await;
    let mut run = must_run(&cluster, "i1").await;
    run.nodes.remove(&cluster.url(1));
    run.fault("SIGKILL node-2");
    cluster.kill(1).unwrap();
    must_violate(&cluster, run, Duration::from_secs(4), &["I1"]).await;
}

/// Negative control for I5 and I7: survivors that may take a dead node's shards over only after 25 s (its leases
/// live that long) leave them unserved past I7's bound (20 s), so logins on them exhaust their retries and the
/// traffic on them recovers too late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_i5_i7_a_takeover_that_never_comes() {
    let _serial = SERIAL.lock().await;
    let options = ClusterOptions {
        nodes: 3,
        // A 1 s forward timeout: a client tries a stalled shard about every 2.5 s (its pause included), more times
        // than I5 allows before the takeover.
        timings: Timings { lease_ttl: "25s".into(), forward_timeout: "1s".into(), ..Timings::default() },
        node_extra_config: testing_on(3, "takeover_after = \"25s\""),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(options).await.expect("cluster starts");
    assert!(cluster.log(0).contains("takeover_after=25s"), "the nodes warn about their switch");
    let mut run = must_run(&cluster, "i5-i7").await;
    kill_under_load(&mut cluster, &mut run, 1).await;
    must_violate(&cluster, run, Duration::from_secs(12), &["I5", "I7"]).await;
}

/// Negative control for I6: without the fence, a SIGSTOPped owner woken after its shards moved commits the
/// writes its queued requests make; the Redis stream shows them carrying its stale epoch. A cycle in which the
/// woken node learns of its lost leases before it writes shows nothing, so up to four cycles are tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_i6_writes_without_fencing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = must_start(3, testing_on(3, "unfenced_writes = true")).await;
    let victim = 2;
    let victim_id = cluster.node(victim).id.clone();
    for cycle in 1..=4 {
        let mut run = must_run(&cluster, &format!("i6-{cycle}")).await;
        run.fault("SIGSTOP node-3");
        cluster.stop(victim).unwrap();
        leases::wait_shards_moved(cluster.redis().address(), &victim_id, Duration::from_secs(20))
            .await
            .expect("every shard of the stopped node has a new owner");
        run.fault("SIGCONT node-3");
        cluster.cont(victim).unwrap();
        run.run_for(Duration::from_secs(2)).await;
        let report = run.finish(&cluster, bounds()).await.expect("facts gathered");
        println!("negative control, cycle {cycle}: {}", report.summary());
        if report.violated().contains("I6") {
            println!("as expected:\n{}", report.violations.iter().find(|v| v.invariant == "I6").unwrap());
            return;
        }
        cluster.wait_ready(victim).await.expect("the woken node is ready again");
    }
    panic!("four SIGSTOP cycles without fencing and the checker never reported I6");
}

async fn must_start_proxied(nodes: usize) -> Cluster {
    match Cluster::start(ClusterOptions { nodes, proxied: true, ..ClusterOptions::default() }).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("proxied cluster did not start: {error:#}"),
    }
}

/// A node cut from its peers (gossip and RPC, through the harness's proxies) under load: clients keep reaching it
/// until its readiness fails, then the partition heals and it rejoins. The checker sees the whole episode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_from_peers_under_load() {
    must_partition(Link::Peers, "peers", false).await;
}

/// A node cut from Redis under load: it can no longer write or renew, its shards pass to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_from_redis_under_load() {
    must_partition(Link::Redis, "redis", false).await;
}

/// A node whose Redis link turns into a black hole under load (nothing closed, nothing answered): it learns of it
/// only from its own timeouts, and its shards pass to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_to_redis_under_load() {
    must_partition(Link::Redis, "redis-black-hole", true).await;
}

async fn must_partition(link: Link, label: &str, black_hole: bool) {
    let _serial = SERIAL.lock().await;
    let mut cluster = must_start_proxied(3).await;
    let mut run = must_run(&cluster, &format!("partition-{label}")).await;
    let cut = 1;
    run.fault_on(format!("node-2 cut from {label}"), held_by(&cluster, cut).await);
    if black_hole {
        cluster.black_hole(cut, link).unwrap();
    } else {
        cluster.partition(cut, link).unwrap();
    }
    run.run_for(HEALTH_CHECK).await;
    let url = cluster.url(cut);
    let unready = wait_for("the cut node to report itself not ready", Duration::from_secs(20), || {
        let cluster = &cluster;
        async move { (!cluster.is_ready(cut).await).then_some(()) }
    })
    .await;
    run.nodes.remove(&url);
    if let Err(error) = unready {
        println!("note: the node cut from {label} still reports itself ready: {error}");
    }
    run.run_for(Duration::from_secs(4)).await;
    run.fault(format!("node-2 healed from {label}"));
    cluster.heal(cut).unwrap();
    cluster.wait_ready(cut).await.expect("the healed node is ready again");
    run.nodes.add(&url);
    run.run_for(Duration::from_secs(4)).await;
    assert_clean(&must_finish(run, &cluster).await);
}

/// I1 across a Redis failover: the primary is SIGKILLed under load, Sentinel promotes a replica, the nodes find it
/// through the Sentinels. With `redis.min_replicas_ack = 1` every acknowledged write was on a replica, so nothing
/// acknowledged is lost; the promoted primary's command stream is judged for I6 on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_primary_failover_under_load() {
    let _serial = SERIAL.lock().await;
    // Sentinel pings every second, or every `down-after-milliseconds` when shorter. At exactly 1 s, a Sentinel that
    // has just switched to the promoted primary may see no answer within the bound and fail over a second time
    // (seen once: the promoted primary demoted 1.2 s later, which ended the monitor of its command stream).
    let sentinel_down_after = Duration::from_millis(1500);
    let options = ClusterOptions {
        nodes: 3,
        min_replicas_ack: 1,
        sentinels: 3,
        sentinel_down_after,
        ..ClusterOptions::default()
    };
    let mut cluster = match Cluster::start(options).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("cluster with sentinels did not start: {error:#}"),
    };
    let mut run = must_run(&cluster, "failover").await;
    let old_primary = cluster.redis().address();
    run.fault("SIGKILL of the Redis primary");
    let killed = Instant::now();
    cluster.kill_redis_primary().expect("a cluster with Sentinels");
    run.redis_monitored_so_far_lost();
    let promoted = wait_for("Sentinel to promote a replica", Duration::from_secs(30), || {
        let address = cluster
            .sentinel_primary()
            .ok()
            .and_then(|primary| primary.parse::<std::net::SocketAddr>().ok())
            .filter(|address| *address != old_primary);
        async move { address }
    })
    .await
    .expect("a replica is promoted");
    println!("figure: Redis primary SIGKILL → Sentinel named the promoted replica after {:?}", killed.elapsed());
    run.monitor_also(&cluster, promoted, "failover-promoted").await.expect("monitor the promoted primary");
    run.run_for(AFTER).await;
    let report = run.finish(&cluster, Bounds { recovery: Duration::from_secs(30), ..bounds() }).await.unwrap();
    assert!(report.operations >= 40, "the clients ran ({} operations)", report.operations);
    assert!(report.i6.writes_judged > 0, "the Redis streams judged record writes: {}", report.summary());
    assert_clean(&report);
}
