//! The operations surface of real node processes: `/readyz` through start, a stopped Redis and a drain; the
//! counters on `/metrics` after real flows; the audit events in the Redis stream a SIEM reads.

use crate::support::*;
use idp_cluster_tests::browser::REDIRECT_URI;
use idp_cluster_tests::harness::config::{AUDIT_STREAM, CLIENT_ID, CLIENT_SECRET, PASSWORD};
use idp_cluster_tests::harness::redis::Resp;
use idp_cluster_tests::harness::{wait_for, Cluster, ClusterOptions};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Longest wait for a readiness transition: two failed Redis pings (500 ms apart, 2 s reply timeout each).
const TRANSITION: Duration = Duration::from_secs(15);

async fn readyz(cluster: &Cluster, index: usize) -> Option<u16> {
    let url = format!("{}/readyz", cluster.node(index).admin_url());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    client.get(url).send().await.ok().map(|response| response.status().as_u16())
}

async fn must_reach_readiness(cluster: &Cluster, index: usize, ready: bool) {
    let want = if ready { 200 } else { 503 };
    wait_for(&format!("node {} /readyz {want}", index + 1), TRANSITION, || async move {
        (readyz(cluster, index).await == Some(want)).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}\n{}", cluster.log_tail(index)));
}

async fn scrape(cluster: &Cluster, index: usize) -> String {
    let url = format!("{}/metrics", cluster.node(index).admin_url());
    let response = reqwest::get(url).await.expect("/metrics answers");
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics text")
}

/// Sum of the samples of `name` whose labels include every pair of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name && labels.iter().all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap_or(0.0))
        .sum()
}

/// The audit records in the Redis stream (each entry: `v`, `record` = the JSON line).
fn stream_records(cluster: &Cluster) -> Vec<Value> {
    let mut redis = cluster.redis_client().expect("redis client");
    let Ok(Resp::Array(Some(entries))) = redis.command(&["XRANGE", AUDIT_STREAM, "-", "+"]) else { return vec![] };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Resp::Array(Some(parts)) => match parts.get(1) {
                Some(Resp::Array(Some(fields))) => fields
                    .chunks(2)
                    .find(|pair| pair[0].text().ok().flatten().as_deref() == Some("record"))
                    .and_then(|pair| pair[1].text().ok().flatten())
                    .and_then(|text| serde_json::from_str(&text).ok()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Readiness transitions with real processes: both nodes ready at start; Redis stopped (SIGSTOP) makes them not
/// ready, Redis back (SIGCONT) makes them ready again; a SIGTERM flips the draining node's `/readyz` to 503 while
/// it still runs (before it exits). Meanwhile real flows move the cluster, token and Redis counters of
/// `/metrics`, and the audit events (shard moves, login, tokens) reach the Redis stream with the schema version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_and_the_drain_and_events_reach_metrics_and_the_audit_stream() {
    let _serial = serial().await;
    // The forwarding module logs each forwarded call at debug: the owner's line shows the caller's request id.
    let log_level = "info,idp_node::cluster::forward=debug".to_string();
    let mut cluster = Cluster::start(ClusterOptions { nodes: 2, log_level, ..ClusterOptions::default() })
        .await
        .expect("a two-node cluster starts");
    let rp = must_rp(&cluster);
    for node in 0..2 {
        assert_eq!(readyz(&cluster, node).await, Some(200), "ready after start");
    }

    // A code whose shard node 2 holds, redeemed through node 1 with a request id: a forward hop that carries it.
    let (code, verifier) = must_code_owned_by(&cluster, &rp, 1).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", verifier.as_str()),
    ];
    let redeemed = rp
        .http()
        .post(format!("{}/token", cluster.url(0)))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .header("x-request-id", "trace-forward-7")
        .form(&form)
        .send()
        .await
        .expect("token request");
    assert_eq!(redeemed.status(), 200, "redeemed through the other node");
    assert_eq!(redeemed.headers().get("x-request-id").unwrap(), "trace-forward-7");
    wait_for("the owner's log to show the caller's request id", TRANSITION, || {
        let seen = cluster.log(1).lines().any(|line| line.contains("trace-forward-7") && line.contains("forwarded"));
        async move { seen.then_some(()) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}\n{}", cluster.log_tail(1)));
    rp.login(&cluster.url(1), USER, PASSWORD, false).await.expect("a login through node 2");
    let metrics = scrape(&cluster, 0).await;
    let at_least_one = [
        ("idp_cluster_members", vec![("state", "ready")]),
        ("idp_shards_owned", vec![]),
        ("idp_shard_moves_total", vec![("direction", "acquired")]),
        ("idp_forward_requests_total", vec![("outcome", "ok")]),
        ("idp_forward_duration_seconds_count", vec![]),
        ("idp_redis_command_duration_seconds_count", vec![("op", "lease_acquire")]),
        ("idp_tokens_issued_total", vec![("grant_type", "authorization_code")]),
        ("idp_token_request_duration_seconds_count", vec![("grant_type", "authorization_code")]),
        ("idp_ready", vec![]),
    ];
    for (name, labels) in &at_least_one {
        assert!(sample(&metrics, name, labels) >= 1.0, "{name}{labels:?} not counted:\n{metrics}");
    }
    assert_eq!(sample(&metrics, "idp_cluster_members", &[("state", "ready")]), 2.0);
    wait_for("a lease renewal to be counted", TRANSITION, || {
        let cluster = &cluster;
        async move {
            let metrics = scrape(cluster, 0).await;
            (sample(&metrics, "idp_lease_renewals_total", &[("outcome", "renewed")]) >= 1.0).then_some(())
        }
    })
    .await
    .expect("lease renewals counted");

    wait_for("the audit stream to hold the flows' events", TRANSITION, || {
        let records = stream_records(&cluster);
        let kinds = ["shard_moved", "login_succeeded", "token_issued"];
        let all = kinds.iter().all(|kind| records.iter().any(|record| record["event"] == *kind));
        async move { all.then_some(()) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}: {:#?}", stream_records(&cluster)));
    let records = stream_records(&cluster);
    assert!(records.iter().all(|record| record["v"] == 1 && record["node"].as_str().is_some()));
    let moved = records.iter().find(|record| record["event"] == "shard_moved").unwrap();
    assert_eq!(moved["direction"], "acquired");
    assert!(
        records.iter().filter_map(|record| record.get("subject")).all(|subject| subject != USER),
        "no raw subject in the stream"
    );

    // Redis unreachable: both nodes leave readiness; back: both return.
    cluster.signal_redis("STOP").expect("SIGSTOP redis-server");
    for node in 0..2 {
        must_reach_readiness(&cluster, node, false).await;
    }
    let stalled = scrape(&cluster, 0).await;
    cluster.signal_redis("CONT").expect("SIGCONT redis-server");
    assert_eq!(sample(&stalled, "idp_ready", &[]), 0.0, "the gauge follows /readyz");
    for node in 0..2 {
        must_reach_readiness(&cluster, node, true).await;
    }
    assert!(sample(&scrape(&cluster, 0).await, "idp_redis_errors_total", &[]) >= 1.0, "Redis errors counted");

    // Drain: /readyz answers 503 while the node still runs, first thing after SIGTERM.
    cluster.send_term(1).expect("SIGTERM");
    let started = Instant::now();
    let mut saw_not_ready = false;
    while started.elapsed() < Duration::from_secs(10) {
        match readyz(&cluster, 1).await {
            Some(503) => {
                saw_not_ready = true;
                break;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            None => break,
        }
    }
    assert!(saw_not_ready, "the draining node answered 503 before it stopped listening");
    let status = cluster.wait_exit(1, Duration::from_secs(20)).await.expect("the drained node exits");
    assert!(status.success(), "a drained node exits 0, got {status}");
}
