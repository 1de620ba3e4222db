//! Cluster tests: real `idp serve` processes around a real `redis-server` on loopback, failures injected with
//! POSIX signals (SIGKILL, SIGSTOP/SIGCONT, SIGTERM). They need `redis-server` on the PATH and the `idp` binary of
//! the same profile (`cargo build -p idp-node --bin idp`); without either they fail with a message saying so.
//!
//! Invariants (../shared/DESIGN.md): I1 no acknowledged write lost to a SIGKILL, I2 a code redeemed at most once,
//! I3 a refresh token accepted at most once, I4 every token verifies against every node's JWKS, I5 a login in
//! flight on a dying node completes elsewhere with at most one retry, I6 a stale owner cannot commit, I7 recovery.
//! Bounds are generous (recovery within 10 s); the measured figures are printed (`--nocapture`).

mod operations;
mod support;

use idp_cluster_tests::browser::OpError;
use idp_cluster_tests::harness::config::{Timings, PASSWORD};
use idp_cluster_tests::harness::leases::{self, Lease};
use idp_cluster_tests::harness::netns::Netns;
use idp_cluster_tests::harness::{tokens, wait_for, Cluster, ClusterOptions, Link};
use std::time::{Duration, Instant};
use support::*;

/// Pause between a client's retries after a failure (a person pressing the button again).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// I5: a login form shown by node A, A SIGKILLed, the form posted to node B: the login completes, and the code is
/// redeemed through node C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_shown_by_a_killed_node_completes_on_another() {
    let _serial = serial().await;
    let mut cluster = must_start(3).await;
    let rp = must_rp(&cluster);
    let (a, mut browser, form) = must_form_owned_by_its_node(&cluster, &rp).await;
    let (b, c) = (others(&cluster, a)[0], others(&cluster, a)[1]);
    let (b_url, c_url) = (cluster.url(b), cluster.url(c));

    let killed = Instant::now();
    cluster.kill(a).unwrap();
    let posted = must_retry("login form posted to a survivor", killed, RETRY_PAUSE, || {
        let mut attempt = browser.clone();
        let (rp, form, b_url) = (&rp, &form, &b_url);
        async move {
            let resume = rp.post_login(b_url, &mut attempt, form, USER, PASSWORD).await?;
            Ok((resume, attempt))
        }
    })
    .await;
    println!(
        "figure: SIGKILL of the login's owner → form accepted by a survivor in {:?} ({} failed attempt(s))",
        posted.elapsed,
        posted.failures.len()
    );
    assert!(posted.failures.len() <= 1, "I5: at most one retry, got {:?}", posted.failures);
    let (resume, answered) = posted.value;
    browser = answered;
    let code = rp.resume(&b_url, &mut browser, &resume).await.expect("resume on a survivor");
    let tokens = rp.exchange(&c_url, &code, &form.verifier).await.expect("code redeemed through a third node");
    let jwks = rp.get_json(&c_url, "/jwks").await.expect("jwks");
    let id_token = tokens.id_token.expect("an id token");
    tokens::verify(&id_token, &jwks, cluster.issuer()).expect("the id token verifies");
}

/// I1: a code issued before its owner's SIGKILL is redeemed after it through a survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_issued_before_a_kill_is_redeemed_after_it() {
    let _serial = serial().await;
    let mut cluster = must_start(3).await;
    let rp = must_rp(&cluster);
    let owner = 0;
    let (code, verifier) = must_code_owned_by(&cluster, &rp, owner).await;
    let survivor = cluster.url(others(&cluster, owner)[0]);

    let killed = Instant::now();
    cluster.kill(owner).unwrap();
    let redeemed = must_retry("code redeemed through a survivor", killed, RETRY_PAUSE, || {
        rp.exchange(&survivor, &code, &verifier)
    })
    .await;
    println!(
        "figure: SIGKILL of a code's owner → code redeemed through a survivor in {:?} ({} failed attempt(s))",
        redeemed.elapsed,
        redeemed.failures.len()
    );
    assert!(redeemed.failures.len() <= 1, "at most one retry, got {:?}", redeemed.failures);
    let access = redeemed.value.access_token;
    assert!(
        rp.introspect(&cluster.url(others(&cluster, owner)[1]), &access).await.unwrap(),
        "the access token is active"
    );
    let replay = rp.exchange(&survivor, &code, &verifier).await.expect_err("I2: a code is redeemed once");
    assert_eq!(replay.oauth_error(), Some("invalid_grant"), "replay answered {replay}");
}

/// I1, I3: a refresh token whose owner was SIGKILLed rotates through a survivor, its successor through the other;
/// reusing the first one afterwards revokes the family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_rotates_after_its_owner_is_killed() {
    let _serial = serial().await;
    let mut cluster = must_start(3).await;
    let rp = must_rp(&cluster);
    let owner = 1;
    let first = must_refresh_token_owned_by(&cluster, &rp, owner).await.refresh_token.unwrap();
    let (b, c) = (cluster.url(others(&cluster, owner)[0]), cluster.url(others(&cluster, owner)[1]));

    let killed = Instant::now();
    cluster.kill(owner).unwrap();
    let rotated = must_retry("refresh through a survivor", killed, RETRY_PAUSE, || rp.refresh(&b, &first)).await;
    println!(
        "figure: SIGKILL of a refresh token's owner → rotation through a survivor in {:?} ({} failed attempt(s))",
        rotated.elapsed,
        rotated.failures.len()
    );
    assert!(rotated.failures.len() <= 1, "at most one retry, got {:?}", rotated.failures);
    let second = rotated.value.refresh_token.expect("a rotated refresh token");
    let third = rp.refresh(&c, &second).await.expect("the successor rotates through the other survivor");
    let third = third.refresh_token.expect("a rotated refresh token");

    let reuse = rp.refresh(&c, &first).await.expect_err("I3: a refresh token is accepted once");
    assert_eq!(reuse.oauth_error(), Some("invalid_grant"), "reuse answered {reuse}");
    let after_reuse = rp.refresh(&b, &third).await.expect_err("I3: a reuse revokes the whole family");
    assert_eq!(after_reuse.oauth_error(), Some("invalid_grant"), "latest token after reuse answered {after_reuse}");
}

/// I2: one code redeemed at the same moment through all three nodes: exactly one success, the others
/// `invalid_grant`, and the replay revokes what the success got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_redeemed_through_three_nodes_at_once_succeeds_once() {
    let _serial = serial().await;
    let cluster = must_start(3).await;
    let rp = must_rp(&cluster);
    for round in 0..6 {
        let (code, verifier) = must_code(&cluster, &rp, round % 3, USER).await;
        let attempts: Vec<_> = (0..3)
            .map(|node| {
                let (rp, url, code, verifier) = (rp.clone(), cluster.url(node), code.clone(), verifier.clone());
                tokio::spawn(async move { rp.exchange(&url, &code, &verifier).await })
            })
            .collect();
        let mut successes = Vec::new();
        for (node, attempt) in attempts.into_iter().enumerate() {
            match attempt.await.unwrap() {
                Ok(tokens) => successes.push((node, tokens)),
                Err(error) => {
                    assert_eq!(error.oauth_error(), Some("invalid_grant"), "round {round} node {}: {error}", node + 1)
                }
            }
        }
        assert_eq!(successes.len(), 1, "round {round}: I2 exactly one redemption, got {}", successes.len());
        let access = successes.remove(0).1.access_token;
        let url = cluster.url(round % 3);
        wait_for("I2: the replay revokes the tokens of the code", RECOVERY, || {
            let (rp, url, access) = (&rp, &url, &access);
            async move { (!rp.introspect(url, access).await.unwrap_or(true)).then_some(()) }
        })
        .await
        .unwrap();
    }
}

/// I6: the owner of a shard is SIGSTOPped until a new owner holds the shard's lease, then SIGCONTed. Its stale
/// epoch never comes back, and a code and a refresh token of that shard, each spent at once through the woken node
/// and another node, succeed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_owner_is_fenced_after_a_new_owner_takes_its_shard() {
    let _serial = serial().await;
    let mut cluster = must_start(3).await;
    let rp = must_rp(&cluster);
    let owner = 2;
    let other = cluster.url(0);
    let (code, verifier) = must_code_owned_by(&cluster, &rp, owner).await;
    let shard = leases::shard_of(&code, cluster.shards()).unwrap();
    let (spare_code, spare_verifier) = must_code_owned_by(&cluster, &rp, owner).await;
    let refresh = must_refresh_token_owned_by(&cluster, &rp, owner).await.refresh_token.unwrap();
    let stale = cluster.shard_lease(shard).unwrap().expect("the shard is leased");
    assert_eq!(cluster.index_of(&stale.node_id), Some(owner));

    let stopped = Instant::now();
    cluster.stop(owner).unwrap();
    let taken =
        cluster.wait_new_owner(shard, &stale, RECOVERY).await.expect("a new owner takes the stopped node's shard");
    println!(
        "figure: SIGSTOP → shard {shard} leased by {} at epoch {} in {:?}",
        taken.node_id,
        taken.epoch,
        stopped.elapsed()
    );
    // Every shard of the stopped node moved with this one: a code in another of them is served by its new owner.
    let spent = rp.exchange(&other, &spare_code, &spare_verifier).await;
    assert!(spent.is_ok(), "the new owners serve the stopped node's shards: {spent:?}");

    // Requests reach the frozen node first (they wait in its socket backlog), then it wakes believing it owns the
    // shard, and the same code and token are spent through another node at once.
    let woken = cluster.url(owner);
    let racers = |via: String| {
        let (rp, code, verifier, refresh) = (rp.clone(), code.clone(), verifier.clone(), refresh.clone());
        let (rp2, via2) = (rp.clone(), via.clone());
        let spent_code = tokio::spawn(async move { rp.exchange(&via, &code, &verifier).await.map(|_| ()) });
        let spent_refresh = tokio::spawn(async move { rp2.refresh(&via2, &refresh).await.map(|_| ()) });
        (spent_code, spent_refresh)
    };
    let through_woken = racers(woken);
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.cont(owner).unwrap();
    let through_other = racers(other.clone());
    let (woken_code, woken_refresh) = (through_woken.0.await.unwrap(), through_woken.1.await.unwrap());
    let (other_code, other_refresh) = (through_other.0.await.unwrap(), through_other.1.await.unwrap());
    assert_exactly_one("code", &[&woken_code, &other_code]);
    assert_exactly_one("refresh token", &[&woken_refresh, &other_refresh]);

    // The stale (node, epoch) never holds the lease again; any later holder has a higher epoch.
    let watch_until = Instant::now() + Duration::from_secs(3);
    let mut seen = vec![taken.clone()];
    while Instant::now() < watch_until {
        if let Some(lease) = cluster.shard_lease(shard).unwrap() {
            assert!(lease != stale, "I6: the stale owner's lease came back: {lease:?}");
            assert!(lease.epoch >= taken.epoch, "epochs only grow: {lease:?} after {taken:?}");
            if seen.last() != Some(&lease) {
                seen.push(lease);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!("leases of shard {shard} after the wake: {}", describe(&seen));
    // The woken node learned it lost its shards from Redis (a failed renewal or a fenced write), not from luck.
    let woken_log = cluster.log(owner);
    assert!(
        ["lease lost", "write fenced", "lease not renewed in time"].iter().any(|event| woken_log.contains(event)),
        "the woken owner never saw its lease lost or a write fenced:\n{}",
        cluster.log_tail(owner)
    );
    cluster.wait_ready(owner).await.expect("the woken node is a ready member again");
    let (code, verifier) = must_code(&cluster, &rp, owner, USER).await;
    rp.exchange(&other, &code, &verifier).await.expect("the cluster serves logins through the woken node");
}

/// Exactly one of the attempts succeeded; the other was refused as spent (`invalid_grant`) or failed closed (5xx,
/// a stale owner whose write the fence refused: the client's retry would then be refused as spent).
fn assert_exactly_one(what: &str, outcomes: &[&Result<(), OpError>]) {
    let successes = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(successes, 1, "I6: one {what} spent through two nodes must succeed exactly once: {outcomes:?}");
    for outcome in outcomes {
        if let Err(error) = outcome {
            let closed = error.status().is_some_and(|status| status >= 500);
            assert!(error.oauth_error() == Some("invalid_grant") || closed, "the losing {what} answered {error}");
            println!("the losing {what} answered {error}");
        }
    }
}

fn describe(leases: &[Lease]) -> String {
    leases.iter().map(|lease| format!("{}@{}", lease.node_id, lease.epoch)).collect::<Vec<_>>().join(" → ")
}

/// A fourth node joins under load, then a node drains (SIGTERM) and leaves: no request fails. The load balancer
/// (the test's pool) adds the new node once it is ready and removes the draining one just before its SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_a_drain_under_load_fail_no_request() {
    let _serial = serial().await;
    let mut cluster = must_start(3).await;
    let rp = must_rp(&cluster);
    let pool = Pool::new((0..3).map(|node| cluster.url(node)).collect());
    let load = Load::start(&rp, &pool, 3, 400, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let joining = Instant::now();
    let fourth = cluster.add_node().await.expect("a fourth node joins");
    pool.add(cluster.url(fourth));
    let fourth_id = cluster.node(fourth).id.clone();
    wait_for("the fourth node to hold shards", RECOVERY, || {
        let counts = cluster.redis_client().and_then(|mut redis| leases::shard_leases(&mut redis));
        let holds = counts
            .ok()
            .map(|leases| leases::shards_per_node(&leases))
            .and_then(|per_node| per_node.get(&fourth_id).copied());
        async move { holds.filter(|count| *count > 0) }
    })
    .await
    .expect("shards move to the new node");
    println!("figure: fourth node ready and holding shards {:?} after its start", joining.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let leaving = 1;
    let leaving_id = cluster.node(leaving).id.clone();
    pool.remove(&cluster.url(leaving));
    // A load balancer deregisters a node before it is stopped (a pre-stop delay): steps already sent to it finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drain = Instant::now();
    cluster.send_term(leaving).unwrap();
    let status = cluster
        .wait_exit(leaving, Duration::from_secs(20))
        .await
        .expect("the drained node exits within its drain timeout");
    println!("figure: SIGTERM → drained node exited in {:?} ({status})", drain.elapsed());
    assert!(status.success(), "a drained node exits 0, got {status}");
    wait_for("the drained node's leases to pass on", RECOVERY, || {
        let leases = cluster.redis_client().and_then(|mut redis| leases::shard_leases(&mut redis));
        let gone = leases.ok().filter(|leases| leases.values().all(|lease| lease.node_id != leaving_id));
        async move { gone.map(|_| ()) }
    })
    .await
    .expect("no lease left with the drained node");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let report = load.finish().await;
    println!("load: {} rounds, {} requests, {} failed", report.rounds, report.requests, report.failures.len());
    assert!(report.rounds >= 3, "the load loop ran ({} rounds)", report.rounds);
    assert!(
        report.failures.is_empty(),
        "no request may fail across a join and a drain:\n{}",
        report.failures.join("\n")
    );
}

/// I4: tokens issued before, during and after a key rotation that happens while a node (the key ring's owner) is
/// killed verify against every node's JWKS, the killed one included once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verify_everywhere_across_a_rotation_during_a_kill() {
    let _serial = serial().await;
    let mut cluster = must_start(3).await;
    let rp = must_rp(&cluster);
    let mut issued = Vec::new();
    for node in 0..3 {
        issued.push(("before", rp.client_credentials(&cluster.url(node)).await.expect("token").access_token));
    }
    let login = rp.login(&cluster.url(0), USER, PASSWORD, false).await.expect("login");
    issued.push(("before", login.id_token.expect("id token")));
    let before_kid = tokens::kid_of(&issued[0].1).expect("tokens carry a kid");

    // The node that created the ring hands it to its rendezvous owner within a duty round (500 ms).
    let keyring = wait_for("the key ring's lease", RECOVERY, || async {
        leases::read_lease(&mut cluster.redis_client().ok()?, "keyring").ok()?
    })
    .await
    .expect("the key ring is leased");
    let victim = cluster.index_of(&keyring.node_id).expect("the key ring's owner is a node");
    let survivors = others(&cluster, victim);
    cluster.kill(victim).unwrap();
    let config = cluster.node(survivors[0]).config_path.to_string_lossy().into_owned();
    let rotation = must_rotate_keys(&cluster, &config);
    let during = async {
        let mut tokens = Vec::new();
        for round in 0..10 {
            let url = cluster.url(survivors[round % 2]);
            let issued = must_retry("token while the key ring moves", Instant::now(), RETRY_PAUSE, || {
                rp.client_credentials(&url)
            })
            .await;
            tokens.push(issued.value.access_token);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokens
    };
    let (rotated, during) = tokio::join!(rotation, during);
    println!("idp admin rotate-keys: {}", rotated.trim());
    issued.extend(during.into_iter().map(|token| ("during", token)));
    // Every node reloads the stored ring within DUTY_EVERY (500 ms) of the owner's answer.
    for node in &survivors {
        let url = cluster.url(*node);
        let after = wait_for("the node to sign with the rotated key", RECOVERY, || async {
            let token = rp.client_credentials(&url).await.ok()?.access_token;
            (tokens::kid_of(&token)? != before_kid).then_some(token)
        })
        .await
        .expect("rotation gave a new signing key on every node");
        issued.push(("after", after));
    }
    let after_kid = tokens::kid_of(&issued.last().unwrap().1).unwrap();

    cluster.restart(victim).await.expect("the killed node comes back");
    issued.push(("after", rp.client_credentials(&cluster.url(victim)).await.expect("token").access_token));
    let first_jwks = rp.get_json(&cluster.url(0), "/jwks").await.unwrap();
    wait_for("every node to serve the same JWKS", RECOVERY, || {
        let rp = &rp;
        let urls: Vec<String> = (0..3).map(|node| cluster.url(node)).collect();
        let expected = tokens::kids(&first_jwks);
        async move {
            for url in &urls {
                if tokens::kids(&rp.get_json(url, "/jwks").await.ok()?) != expected {
                    return None;
                }
            }
            Some(())
        }
    })
    .await
    .expect("identical JWKS");
    for node in 0..3 {
        let jwks = rp.get_json(&cluster.url(node), "/jwks").await.unwrap();
        for (when, token) in &issued {
            if let Err(error) = tokens::verify(token, &jwks, cluster.issuer()) {
                panic!("I4: a token issued {when} the rotation fails against node {}'s JWKS: {error:#}", node + 1);
            }
        }
    }
    println!("verified {} tokens against 3 JWKS (kid {before_kid} → {after_kid})", issued.len());
}

/// `idp admin rotate-keys` through the cluster's Redis; retried while the owner refuses because the `next` key
/// has not been published for `keys.publish_ahead` yet (2 s in the tests), within a bound.
async fn must_rotate_keys(cluster: &idp_cluster_tests::harness::Cluster, config: &str) -> String {
    let started = Instant::now();
    loop {
        let args = ["admin", "rotate-keys", "--config", config, "--timeout", "45s"];
        match cluster.run_idp(&args, Duration::from_secs(60)).await {
            Ok(output) => return output,
            Err(error) if error.to_string().contains("refused") && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => panic!("idp admin rotate-keys: {error:#}"),
        }
    }
}

/// Figures for the notes, not a check (run with `--ignored --nocapture`): ten SIGKILLs of the owner of live refresh
/// tokens, each followed by rotations through the survivors until they succeed; the window is from the kill to
/// the last token's first success. The killed node is restarted between rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn failover_window_over_ten_kills() {
    let _serial = serial().await;
    let mut cluster = must_start(3).await;
    let rp = must_rp(&cluster);
    let mut windows = Vec::new();
    let mut failed_requests = 0;
    for round in 0..10 {
        let victim = round % 3;
        let mut refresh_tokens = Vec::new();
        for _ in 0..3 {
            refresh_tokens.push(must_refresh_token_owned_by(&cluster, &rp, victim).await.refresh_token.unwrap());
        }
        let survivors = others(&cluster, victim);
        let killed = Instant::now();
        cluster.kill(victim).unwrap();
        let attempts = refresh_tokens.iter().enumerate().map(|(index, token)| {
            let (rp, url, token) = (rp.clone(), cluster.url(survivors[index % 2]), token.clone());
            tokio::spawn(async move {
                must_retry("refresh after a kill", killed, Duration::from_millis(20), || rp.refresh(&url, &token)).await
            })
        });
        let mut window = Duration::ZERO;
        for attempt in attempts.collect::<Vec<_>>() {
            let retried = attempt.await.unwrap();
            window = window.max(retried.elapsed);
            failed_requests += retried.failures.len();
        }
        println!("kill {}: node {} → window {window:?}", round + 1, victim + 1);
        windows.push(window);
        cluster.restart(victim).await.expect("restart");
    }
    windows.sort();
    println!(
        "figure: failover window over {} kills: median {:?}, max {:?}; failed requests {failed_requests}",
        windows.len(),
        windows[windows.len() / 2],
        windows[windows.len() - 1]
    );
}

/// The harness kills every process it started when a test fails: a panicking scope drops the cluster, and no
/// node or redis-server PID survives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_kills_its_processes_when_a_test_fails() {
    let _serial = serial().await;
    let cluster = must_start(1).await;
    let redis = cluster.redis().address();
    let node_pid = cluster.node(0).pid().unwrap();
    let outcome = std::thread::spawn(move || {
        let _owned = cluster;
        panic!("a failing test");
    })
    .join();
    assert!(outcome.is_err());
    assert!(!std::path::Path::new(&format!("/proc/{node_pid}")).exists(), "node {node_pid} outlived the failing test");
    assert!(std::net::TcpStream::connect(redis).is_err(), "redis-server outlived the failing test");
}

/// A client created through the admin API of node 1 works at node 2's token endpoint (within its directory
/// refresh), and a client deleted through node 2's admin API stops working on node 1; node 2's admin API accepts
/// the admin token node 1 issued (one key ring, one directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_created_through_the_admin_api_of_one_node_works_on_another() {
    use idp_cluster_tests::harness::config::{ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET};
    let _serial = serial().await;
    let cluster = must_start(2).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let token_reply = http
        .post(format!("{}/token", cluster.url(0)))
        .basic_auth(ADMIN_CLIENT_ID, Some(ADMIN_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", "idp:admin")])
        .send()
        .await
        .unwrap();
    let admin_token: serde_json::Value = token_reply.json().await.unwrap();
    let admin_token = admin_token["access_token"].as_str().expect("an admin token").to_string();
    let body = serde_json::json!({
        "client_id": "made-on-node-1",
        "grant_types": ["client_credentials"],
        "response_types": [],
    });
    let created = http
        .post(format!("{}/admin/clients", cluster.node(0).admin_url()))
        .bearer_auth(&admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let created: serde_json::Value = created.json().await.unwrap();
    let secret = created["client_secret"].as_str().unwrap().to_string();
    let token_status = |node: usize| {
        let (http, url, secret) = (http.clone(), cluster.url(node), secret.clone());
        async move {
            let reply = http
                .post(format!("{url}/token"))
                .basic_auth("made-on-node-1", Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .ok()?;
            Some(reply.status().as_u16())
        }
    };
    let started = Instant::now();
    wait_for("node 2 to know the client", Duration::from_secs(10), || async {
        (token_status(1).await == Some(200)).then_some(())
    })
    .await
    .expect("the client created on node 1 works on node 2");
    println!("client visible on node 2 after {} ms", started.elapsed().as_millis());

    let deleted = http
        .delete(format!("{}/admin/clients/made-on-node-1", cluster.node(1).admin_url()))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT, "node 2 accepts node 1's admin token");
    wait_for("node 1 to forget the client", Duration::from_secs(10), || async {
        (token_status(0).await == Some(401)).then_some(())
    })
    .await
    .expect("the client deleted on node 2 stops working on node 1");

    // An upstream provider created on node 1 (no config file declares it) is offered on node 2's login page.
    let upstream = serde_json::json!({
        "id": "made-on-node-1", "kind": "oidc", "name": "Made on node 1", "issuer": "http://127.0.0.1:9",
        "client_id": "broker", "client_secret": "upstream-secret",
    });
    let created = http
        .post(format!("{}/admin/upstreams", cluster.node(0).admin_url()))
        .bearer_auth(&admin_token)
        .json(&upstream)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let login_page = |node: usize| {
        let (http, url) = (http.clone(), cluster.url(node));
        async move {
            let query = [
                ("response_type", "code"),
                ("client_id", idp_cluster_tests::harness::config::CLIENT_ID),
                ("redirect_uri", idp_cluster_tests::browser::REDIRECT_URI),
                ("scope", "openid"),
                ("state", "upstream-check"),
                ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
                ("code_challenge_method", "S256"),
            ];
            let reply = http.get(format!("{url}/authorize")).query(&query).send().await.ok()?;
            reply.text().await.ok()
        }
    };
    let button = "&#x2f;federation&#x2f;made-on-node-1&#x2f;start";
    let started = Instant::now();
    wait_for("node 2 to offer the upstream", Duration::from_secs(10), || async {
        login_page(1).await.filter(|page| page.contains(button)).map(|_| ())
    })
    .await
    .expect("the upstream created on node 1 is offered on node 2");
    println!("upstream offered on node 2 after {} ms", started.elapsed().as_millis());
    let listed = http
        .get(format!("{}/admin/upstreams/made-on-node-1", cluster.node(1).admin_url()))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("\"source\":\"api\"") && !listed.contains("upstream-secret"), "{listed}");

    // The cluster resources: both members, and every shard with its lease holder and epoch.
    let get = |node: usize, path: &'static str| {
        let (http, url, token) = (http.clone(), cluster.node(node).admin_url(), admin_token.clone());
        async move {
            let reply = http.get(format!("{url}{path}")).bearer_auth(token).send().await.unwrap();
            assert_eq!(reply.status(), reqwest::StatusCode::OK, "{path}");
            reply.json::<serde_json::Value>().await.unwrap()
        }
    };
    let members = get(1, "/admin/cluster/members").await;
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");
    let shards = get(1, "/admin/cluster/shards").await;
    let shards = shards["shards"].as_array().unwrap();
    assert_eq!(shards.len(), usize::from(cluster.shards()));
    assert!(shards.iter().all(|shard| shard["lease_holder"].is_string() && shard["epoch"].as_u64() >= Some(1)));

    // Key rotation through node 2's API reaches the key ring's lease holder, wherever it runs: refused (409) until
    // the `next` keys were published for keys.publish_ahead, then done, and every node signs with a new key.
    let current = |keys: &serde_json::Value| -> Vec<String> {
        let keys = keys["keys"].as_array().unwrap().iter();
        keys.filter(|key| key["state"] == "current").map(|key| key["kid"].as_str().unwrap().to_string()).collect()
    };
    let before = current(&get(0, "/admin/keys").await);
    let rotated = wait_for("a rotation through the admin API", Duration::from_secs(30), || async {
        let url = format!("{}/admin/keys/rotate", cluster.node(1).admin_url());
        let reply = http.post(url).bearer_auth(&admin_token).send().await.ok()?;
        match reply.status().as_u16() {
            200 => Some(reply.json::<serde_json::Value>().await.ok()?),
            409 => None,
            other => panic!("rotation answered {other}: {}", reply.text().await.unwrap_or_default()),
        }
    })
    .await
    .expect("the rotation succeeds once the next keys are old enough");
    assert!(current(&rotated).iter().all(|kid| !before.contains(kid)), "{rotated}");
    wait_for("node 1 to sign with a rotated key", Duration::from_secs(10), || async {
        let keys = get(0, "/admin/keys").await;
        (current(&keys) == current(&rotated)).then_some(())
    })
    .await
    .expect("every node serves the rotated ring");
}

/// Federation (I5 for brokered logins): node A sends the browser to the upstream provider (an `idp serve` process)
/// and is SIGKILLed while the user signs in there; the upstream's callback lands on node B, which finds the
/// upstream-login record (state, nonce, PKCE verifier) through the shard's new owner and completes the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brokered_login_completes_after_the_redirecting_node_is_killed() {
    let _serial = serial().await;
    let upstream_port = idp_cluster_tests::harness::process::free_tcp_port().unwrap();
    let upstream_issuer = format!("http://127.0.0.1:{upstream_port}");
    let extra_config = format!(
        "\n[[upstreams]]\nid = \"up\"\nkind = \"oidc\"\nissuer = \"{upstream_issuer}\"\nclient_id = \"broker\"\n\
         client_secret = \"broker-secret\"\ntimeout = \"5s\"\n"
    );
    let options = idp_cluster_tests::harness::ClusterOptions { nodes: 3, extra_config, ..Default::default() };
    let mut cluster = idp_cluster_tests::harness::Cluster::start(options).await.expect("cluster");
    let upstream = federation::must_start_upstream(&cluster, upstream_port).await;
    let broker = federation::browser();

    // A redirect to the upstream whose upstream-login record lives in the redirecting node's own shards.
    let (a, to_upstream, verifier) = federation::must_redirect_owned_by_its_node(&cluster, &broker).await;
    let (b, c) = (others(&cluster, a)[0], others(&cluster, a)[1]);
    cluster.kill(a).unwrap();
    let killed = Instant::now();

    let callback = federation::must_sign_in_upstream(&upstream, &to_upstream).await;
    // The load balancer sends the callback to a survivor.
    let callback = idp_cluster_tests::browser::on_node(&cluster.url(b), &callback).unwrap();
    let answered = must_retry("callback on a survivor", killed, RETRY_PAUSE, || {
        let (broker, callback) = (&broker, &callback);
        async move {
            let page = broker.get(callback).send().await.map_err(OpError::from)?;
            match page.status().as_u16() {
                303 => Ok(page.headers()["location"].to_str().unwrap().to_string()),
                status => Err(OpError::Status { status, error: None }),
            }
        }
    })
    .await;
    println!(
        "figure: SIGKILL of the redirecting node → upstream callback accepted by a survivor in {:?} ({} failed \
         attempt(s))",
        answered.elapsed,
        answered.failures.len()
    );
    assert!(answered.failures.len() <= 1, "I5: at most one retry, got {:?}", answered.failures);
    let resume = idp_cluster_tests::browser::on_node(&cluster.url(b), &answered.value).unwrap();
    let to_client = broker.get(&resume).send().await.expect("resume");
    assert_eq!(to_client.status(), 303);
    let code = idp_cluster_tests::browser::code_of(to_client.headers()["location"].to_str().unwrap()).unwrap();
    let rp = must_rp(&cluster);
    // Through a third node, which may not have polled the directory since B provisioned the account.
    let tokens = rp.exchange(&cluster.url(c), &code, &verifier).await.expect("the code redeemed");
    let jwks = rp.get_json(&cluster.url(c), "/jwks").await.expect("jwks");
    let (_, claims) =
        tokens::verify(&tokens.id_token.expect("an id token"), &jwks, cluster.issuer()).expect("verifies");
    let subject = claims["sub"].as_str().unwrap();
    assert!(subject.starts_with("up-"), "a brokered account: {subject}");
}

/// Every shard lease, or an empty map while Redis cannot be read.
fn lease_map(cluster: &Cluster) -> std::collections::BTreeMap<u16, Lease> {
    cluster.redis_client().and_then(|mut redis| leases::shard_leases(&mut redis)).unwrap_or_default()
}

/// Waits until every shard is held, each by a node that `allowed` accepts (by id), at most `within`.
async fn wait_every_shard_held(
    cluster: &Cluster,
    what: &str,
    within: Duration,
    allowed: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    wait_for(what, within, || {
        let leases = lease_map(cluster);
        let held =
            leases.len() == usize::from(cluster.shards()) && leases.values().all(|lease| allowed(&lease.node_id));
        async move { held.then_some(()) }
    })
    .await
}

/// Waits until every shard is held, none by node `cut` (its shards passed to the others), at most `within`.
async fn wait_shards_left(cluster: &Cluster, cut: usize, what: &str, within: Duration) -> anyhow::Result<()> {
    let cut_id = cluster.node(cut).id.clone();
    wait_every_shard_held(cluster, what, within, |holder| holder != cut_id).await
}

/// Waits until node `cut`, healed, is ready and owns shards again.
async fn wait_rejoined(cluster: &Cluster, cut: usize) -> anyhow::Result<()> {
    let cut_id = cluster.node(cut).id.clone();
    wait_for("the healed node to be ready and own shards again", RECOVERY, || {
        let owns = lease_map(cluster).values().any(|lease| lease.node_id == cut_id);
        async move { (owns && cluster.is_ready(cut).await).then_some(()) }
    })
    .await
}

/// A node cut from its peers but not from Redis sees every other node dead. It must not steal their leases (they
/// are still renewed), nor keep its own: it steps aside, the two others take its shards and serve every request
/// through themselves, no lease changes hands while the partition lasts, and once healed the node rejoins and owns
/// shards again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_from_its_peers_steps_aside_and_rejoins_when_healed() {
    let _serial = serial().await;
    let options = ClusterOptions { nodes: 3, proxied: true, shards: Some(128), ..ClusterOptions::default() };
    let cluster = must_start_with(options).await;
    let rp = must_rp(&cluster);
    let cut = 1;
    let cut_id = cluster.node(cut).id.clone();
    let survivors = others(&cluster, cut);
    let pool = Pool::new(survivors.iter().map(|node| cluster.url(*node)).collect());
    assert!(lease_map(&cluster).values().any(|lease| lease.node_id == cut_id), "the node owns shards before");

    // Load through the two other nodes across the cut (a load balancer no longer sends to the cut node).
    let across = Load::start(&rp, &pool, 2, 10_000, Duration::from_secs(60));
    let before_cut = rp.login(&cluster.url(survivors[0]), "user-0", PASSWORD, true).await.expect("a login");
    let refresh = before_cut.refresh_token.clone().expect("a refresh token");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let partitioned = Instant::now();
    cluster.partition(cut, Link::Peers).unwrap();
    wait_shards_left(&cluster, cut, "the partitioned node's shards to pass to the others", RECOVERY)
        .await
        .expect("the others take the partitioned node's shards");
    let moved_after = partitioned.elapsed();
    let across = across.finish().await;
    println!(
        "figure: partition from peers → every shard held by the others after {moved_after:?}; {} of {} requests \
         failed across the cut:\n{}",
        across.failures.len(),
        across.requests,
        across.failures.join("\n")
    );
    assert!(!cluster.is_ready(cut).await, "the partitioned node reports itself not ready");
    // The cut node answers what Redis settles without an owner (a read), and nothing that would write.
    let cut_url = cluster.url(cut);
    assert_eq!(rp.introspect(&cut_url, &refresh).await.ok(), Some(true), "a read through the cut node");
    let rotation = rp.refresh(&cut_url, &refresh).await.expect_err("a rotation needs the owner");
    assert_eq!(rotation.status(), Some(503), "{rotation:?}");
    rp.refresh(&cluster.url(survivors[1]), &refresh).await.expect("the token still rotates once, elsewhere");

    // While the partition lasts: every request through the others succeeds, and no lease changes hands.
    let before = lease_map(&cluster);
    let during = Load::start(&rp, &pool, 2, 10_000, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = during.finish().await;
    let after = lease_map(&cluster);
    assert_eq!(describe_changes(&before, &after), "", "leases flapped during the partition");
    assert!(during.rounds >= 2, "the load ran ({} rounds)", during.rounds);
    assert!(during.failures.is_empty(), "requests failed through the others:\n{}", during.failures.join("\n"));

    cluster.heal(cut).unwrap();
    let healed = Instant::now();
    wait_rejoined(&cluster, cut).await.expect("the healed node rejoins");
    println!("figure: heal → node ready and owning shards again after {:?}", healed.elapsed());
    let everyone = Pool::new((0..3).map(|node| cluster.url(node)).collect());
    let rejoined = Load::start(&rp, &everyone, 2, 10_000, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rejoined = rejoined.finish().await;
    assert!(rejoined.failures.is_empty(), "requests failed after the heal:\n{}", rejoined.failures.join("\n"));
}

/// The shards whose holder or epoch differ between two snapshots.
fn describe_changes(
    before: &std::collections::BTreeMap<u16, Lease>,
    after: &std::collections::BTreeMap<u16, Lease>,
) -> String {
    let shards: std::collections::BTreeSet<&u16> = before.keys().chain(after.keys()).collect();
    shards
        .into_iter()
        .filter(|shard| before.get(shard) != after.get(shard))
        .map(|shard| format!("shard {shard}: {:?} → {:?}\n", before.get(shard), after.get(shard)))
        .collect()
}

/// `idp-bench --spawn 3 --fault kill:2@2`, short: it starts its own cluster through the harness, kills node 2 under
/// load, and writes the JSON figures (every operation's integer `count` and `errors`, `rps`, `p50_ms`, `p99_ms`,
/// `max_ms`, `errors_by_kind`, and the top-level `rto_ms`) and the timeline as CSV and SVG. No speed is asserted:
/// the figures go to docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_bench_kills_a_node_under_load_and_reports_the_recovery() {
    let _serial = serial().await;
    let dir = idp_cluster_tests::harness::process::Workdir::new("bench-smoke").unwrap();
    let json_path = dir.path().join("kill.json");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_idp-bench"));
    command
        .args(["--spawn", "3", "--duration", "5", "--concurrency", "4", "--fault", "kill:2@2", "--quiet"])
        .args(["--mix", "login=1,cc=2,refresh=1"])
        .arg("--json")
        .arg(&json_path);
    let log = dir.path().join("idp-bench.log");
    let mut bench = idp_cluster_tests::harness::process::Process::spawn("idp-bench", command, &log).unwrap();
    let status = bench.wait_exit(Duration::from_secs(180)).expect("idp-bench ends");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "idp-bench failed ({status}):\n{output}");
    assert!(output.contains("fault kill node 2 at"), "{output}");

    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for op in ["login", "cc", "refresh"] {
        let stats = &figures["ops"][op];
        assert!(stats["count"].as_u64().is_some_and(|count| count > 0), "{op}: {stats}");
        assert!(stats["errors"].is_u64(), "{op}: {stats}");
        for key in ["rps", "p50_ms", "p99_ms", "max_ms"] {
            assert!(stats[key].is_number(), "{op}.{key}: {stats}");
        }
        assert!(stats["errors_by_kind"].is_object(), "{op}: {stats}");
    }
    assert!(figures["rto_ms"].is_u64(), "rto_ms: {figures}");
    assert_eq!(figures["faults"][0]["kind"], "kill");
    assert_eq!(figures["faults"][0]["node"], 2);
    let csv = std::fs::read_to_string(dir.path().join("kill.csv")).unwrap();
    assert!(csv.starts_with("t_ms,successes,failed_attempts,slow,p99_ms\n"));
    assert!(csv.lines().count() >= 50, "one line per 100 ms of a 5 s run:\n{csv}");
    let svg = std::fs::read_to_string(dir.path().join("kill.svg")).unwrap();
    assert!(svg.contains("kill node 2 at") && svg.trim_end().ends_with("</svg>"));
    println!("figure (debug build, smoke run): {}", figures["faults"][0]);
}

/// A peer stalls (SIGSTOP, 1.5 s) just as a node is cut off from its peers: the cut node may take the stalled
/// peer's silent leases, after which only one peer refuses it a lease, but it sees one of the three members it knew
/// lately, so it still steps aside and hands every shard to the two nodes that see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_hands_over_even_the_shards_of_a_peer_that_stalled() {
    let _serial = serial().await;
    let options = ClusterOptions { nodes: 3, proxied: true, shards: Some(128), ..ClusterOptions::default() };
    let mut cluster = must_start_with(options).await;
    let (cut, stalled) = (1, 2);
    let started = Instant::now();
    cluster.partition(cut, Link::Peers).unwrap();
    cluster.stop(stalled).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.cont(stalled).unwrap();
    wait_shards_left(&cluster, cut, "every shard held by the two nodes that see each other", RECOVERY * 2)
        .await
        .expect("the cut-off node hands every shard over, the stalled peer's included");
    println!("figure: cut + stalled peer → every shard held by the majority after {:?}", started.elapsed());
    assert!(!cluster.is_ready(cut).await, "the cut-off node reports itself not ready");
    cluster.heal(cut).unwrap();
    wait_rejoined(&cluster, cut).await.expect("the healed node rejoins");
}

/// Two nodes SIGKILLed at once. The survivor sees both dead, but their leases look fresh until they have gone
/// unrenewed for the takeover silence (3 renewal intervals of 1 s here), so it is refused them for longer than the
/// step-aside patience (one interval), one node against two, as if it were cut off. It must not step aside: a
/// dead node never renews after the survivor lost sight of it, so no refusal counts. A node aside takes no lease
/// before its review (ten times the silence plus an interval: 40 s here), so taking every shard within
/// [`RECOVERY`] shows it never stepped aside; then it serves logins alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_of_two_simultaneous_kills_takes_every_shard_without_stepping_aside() {
    let _serial = serial().await;
    let timings = Timings { lease_ttl: "5s".into(), lease_renew_every: "1s".into(), ..Timings::default() };
    let options = ClusterOptions { nodes: 3, shards: Some(128), timings, ..ClusterOptions::default() };
    let mut cluster = must_start_with(options).await;
    let rp = must_rp(&cluster);
    let survivor = 0;
    let survivor_id = cluster.node(survivor).id.clone();
    let killed = Instant::now();
    cluster.kill(1).unwrap();
    cluster.kill(2).unwrap();
    wait_every_shard_held(&cluster, "every shard held by the survivor", RECOVERY, |holder| holder == survivor_id)
        .await
        .expect("the survivor takes every shard, never stepping aside");
    println!("figure: two nodes killed → every shard held by the survivor after {:?}", killed.elapsed());
    wait_for("the survivor to be ready", RECOVERY, || async { cluster.is_ready(survivor).await.then_some(()) })
        .await
        .expect("the survivor is ready");
    let alone = Load::start(&rp, &Pool::new(vec![cluster.url(survivor)]), 2, 10_000, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alone = alone.finish().await;
    assert!(alone.rounds >= 2, "the load ran ({} rounds)", alone.rounds);
    assert!(alone.failures.is_empty(), "requests failed through the survivor:\n{}", alone.failures.join("\n"));
}

/// A node cut from Redis (not from its peers) can neither renew nor write: it reports Redis down in gossip, leaves
/// the ready set, and the two others take its shards once its leases went silent; requests through them succeed,
/// and once healed the node owns shards again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_from_redis_hands_its_shards_over_and_rejoins_when_healed() {
    let _serial = serial().await;
    let options = ClusterOptions { nodes: 3, proxied: true, shards: Some(128), ..ClusterOptions::default() };
    let cluster = must_start_with(options).await;
    let rp = must_rp(&cluster);
    let cut = 2;
    let cut_id = cluster.node(cut).id.clone();
    let pool = Pool::new(others(&cluster, cut).iter().map(|node| cluster.url(*node)).collect());
    assert!(lease_map(&cluster).values().any(|lease| lease.node_id == cut_id), "the node owns shards before");

    let partitioned = Instant::now();
    cluster.partition(cut, Link::Redis).unwrap();
    wait_shards_left(&cluster, cut, "the cut node's shards to pass to the others", RECOVERY)
        .await
        .expect("the others take the shards of the node cut from Redis");
    println!("figure: partition from Redis → every shard held by the others after {:?}", partitioned.elapsed());
    assert!(!cluster.is_ready(cut).await, "a node without Redis reports itself not ready");

    let during = Load::start(&rp, &pool, 2, 10_000, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = during.finish().await;
    assert!(during.rounds >= 2, "the load ran ({} rounds)", during.rounds);
    assert!(during.failures.is_empty(), "requests failed through the others:\n{}", during.failures.join("\n"));

    cluster.heal(cut).unwrap();
    wait_rejoined(&cluster, cut).await.expect("the node reconnects to Redis and rejoins");
}

/// What a TCP connect from inside a node's network namespace met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Connected,
    /// Failed at once ("Network is unreachable", refused).
    Failed,
    /// Neither connected nor failed within 2 s (a black hole).
    Hung,
}

/// A TCP connect from node `from`'s namespace to `to` (`bash`'s `/dev/tcp` under `timeout 2`).
async fn reach(namespaces: &Netns, from: usize, to: std::net::SocketAddr) -> Reach {
    let mut command = namespaces.command(from, "timeout");
    command.args(["2", "bash", "-c", &format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port())]);
    let status = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("timeout and bash run");
    match status.status.code() {
        Some(0) => Reach::Connected,
        Some(124) => Reach::Hung,
        _ => Reach::Failed,
    }
}

/// In network namespaces (the tests run as root), a partition is a real cut in the kernel: a connect from the cut
/// node's namespace to a peer's RPC listener fails at once (and from the peer's to the cut node's), a black hole
/// swallows it, Redis stays reachable unless its link is cut, the test client always reaches the node, healing
/// restores everything, and dropping the cluster deletes every namespace and link it made. The nodes run in their
/// namespaces under their own PIDs. Skipped, saying why, where the cluster would be partitioned through proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_in_network_namespaces_cut_real_links() {
    use idp_cluster_tests::harness::netns::{self, Backend};
    let _serial = serial().await;
    match netns::choose() {
        Ok(Backend::Namespaces) => {}
        other => {
            let why = netns::usable().err().unwrap_or_else(|| format!("{}=proxy", netns::ENV));
            println!("skipped: partitions go through proxies here ({other:?}): {why}");
            return;
        }
    }
    let cluster = must_start_with(ClusterOptions { nodes: 2, proxied: true, ..ClusterOptions::default() }).await;
    assert_eq!(cluster.partitions(), Some(Backend::Namespaces));
    let namespaces = cluster.namespaces().expect("network namespaces");
    let (hub, root_link, owner_file) = (namespaces.hub(), namespaces.root_link(), namespaces.owner_file());
    assert!(owner_file.is_file(), "the cluster records its owner");

    // `ip netns exec` execs idp: the PID the harness signals is the node's, in another network namespace.
    let idp = std::fs::canonicalize(idp_cluster_tests::harness::cluster::idp_binary().unwrap()).unwrap();
    for index in 0..2 {
        let pid = cluster.node(index).pid().unwrap();
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(), idp, "node {} is idp itself", index + 1);
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(), own, "in its own namespace");
    }

    let redis = cluster.redis().address();
    let rpc = |index: usize| cluster.node(index).rpc_address();
    assert!(rpc(0).ip().to_string().starts_with("10.213."), "{}", rpc(0));
    let test_client_reaches = |index: usize| {
        let url = format!("{}/healthz", cluster.node(index).admin_url());
        let rpc = rpc(index);
        async move {
            let http = reqwest::get(url).await.is_ok_and(|response| response.status().is_success());
            let tcp = std::net::TcpStream::connect_timeout(&rpc, Duration::from_secs(2)).is_ok();
            http && tcp
        }
    };
    assert_eq!(reach(namespaces, 0, rpc(1)).await, Reach::Connected);
    assert_eq!(reach(namespaces, 1, rpc(0)).await, Reach::Connected);
    assert_eq!(reach(namespaces, 0, redis).await, Reach::Connected);
    let discovery = format!("{}/.well-known/openid-configuration", cluster.issuer());
    let served = reqwest::get(&discovery).await.expect("the issuer is reachable").json::<serde_json::Value>().await;
    assert_eq!(served.expect("discovery")["issuer"].as_str(), Some(cluster.issuer()), "one issuer, node 1 behind it");

    cluster.partition(0, Link::Peers).unwrap();
    assert_eq!(reach(namespaces, 0, rpc(1)).await, Reach::Failed, "cut from its peer");
    assert_eq!(reach(namespaces, 1, rpc(0)).await, Reach::Failed, "and its peer from it");
    assert_eq!(reach(namespaces, 0, redis).await, Reach::Connected, "a peer partition leaves Redis");
    assert!(test_client_reaches(0).await, "the test client still reaches the cut node");
    cluster.heal(0).unwrap();
    assert_eq!(reach(namespaces, 0, rpc(1)).await, Reach::Connected, "healed");
    assert_eq!(reach(namespaces, 1, rpc(0)).await, Reach::Connected, "healed both ways");

    cluster.partition(0, Link::Redis).unwrap();
    assert_eq!(reach(namespaces, 0, redis).await, Reach::Failed, "cut from Redis");
    assert_eq!(reach(namespaces, 1, redis).await, Reach::Connected, "the other node is not");
    assert_eq!(reach(namespaces, 0, rpc(1)).await, Reach::Connected, "a Redis partition leaves the peers");
    cluster.heal(0).unwrap();
    assert_eq!(reach(namespaces, 0, redis).await, Reach::Connected);

    cluster.black_hole(0, Link::Redis).unwrap();
    assert_eq!(reach(namespaces, 0, redis).await, Reach::Hung, "a black hole neither connects nor fails");
    cluster.black_hole(1, Link::Peers).unwrap();
    assert_eq!(reach(namespaces, 0, rpc(1)).await, Reach::Hung);
    assert_eq!(reach(namespaces, 1, rpc(0)).await, Reach::Hung);
    assert!(test_client_reaches(1).await, "the test client still reaches the black-holed node");
    cluster.heal(0).unwrap();
    cluster.heal(1).unwrap();
    assert_eq!(reach(namespaces, 0, redis).await, Reach::Connected);
    assert_eq!(reach(namespaces, 0, rpc(1)).await, Reach::Connected);

    let node_namespaces: Vec<String> = (0..2).map(|index| namespaces.namespace(index)).collect();
    drop(cluster);
    let listed = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for name in node_namespaces.iter().chain([&hub]) {
        assert!(!listed.lines().any(|line| line.split_whitespace().next() == Some(name)), "{name} left: {listed}");
    }
    let link = std::process::Command::new("ip").args(["link", "show", &root_link]).output().unwrap();
    assert!(!link.status.success(), "{root_link} left behind");
    assert!(!owner_file.exists(), "{} left behind", owner_file.display());
}
