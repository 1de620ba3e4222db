//! Operations surface of a node: the audit events of real flows (file sink), the counters they move on the admin
//! listener's `/metrics`, the request id, and the rule that no log line carries a token, a code, a password or a
//! raw subject identifier (debug logging captured for the whole test binary).

use crate::client::*;
use crate::harness::*;
use idp_actors::keyring::RotateKeys;
use serde_json::Value;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const OFFLINE: &str = "openid profile email offline_access";

/// Every log line of this test process, at debug level (server crates; the test's HTTP client is left out).
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let filter = "debug,reqwest=off,hyper=off,hyper_util=off,cookie_store=off,h2=off";
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || LogWriter(logs))
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this binary");
        logs
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A file removed when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn audit_records(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|line| serde_json::from_str(line).expect("every audit line is one JSON object")).collect()
}

/// Waits (bounded) until the audit file holds an event of every kind in `kinds`.
async fn must_see_events(path: &std::path::Path, kinds: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = audit_records(path);
        let missing: Vec<&&str> = kinds.iter().filter(|kind| !records.iter().any(|r| r["event"] == **kind)).collect();
        if missing.is_empty() {
            return records;
        }
        assert!(Instant::now() < deadline, "audit events missing: {missing:?}; got {records:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample of the Prometheus text (`name{labels}` exactly as rendered, labels sorted by the test).
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

async fn scrape(admin: &str) -> String {
    let response = reqwest::get(format!("{admin}/metrics")).await.expect("/metrics answers");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The audit list, produced by real flows of one node: login succeeded and failed (with the reason),
/// consent granted, tokens issued, revoked, a code replay and a refresh reuse detected, a logout, keys generated,
/// activated and retired by a rotation; an admin change through the audit handle (the admin API emits it). Each
/// record carries the schema version, time, node and the request id of its HTTP request, and users only as a
/// keyed hash. The counters of these flows move on `/metrics` of the admin listener, and no captured log line holds
/// a token, a code, the password or the raw subject.
///
/// The metrics recorder and the log subscriber are process-wide, shared with every test of this binary running in
/// parallel: the test runs itself alone in a child process of this binary ([`ISOLATED`] set), so that every counter
/// it checks moved by its own flows only, and the exact counts hold.
#[actix_web::test]
async fn real_flows_emit_every_audit_event_move_the_counters_and_log_no_secret() {
    if std::env::var_os(ISOLATED).is_none() {
        return run_alone("telemetry::real_flows_emit_every_audit_event_move_the_counters_and_log_no_secret");
    }
    let logs = captured_logs();
    let file = TempFile(std::env::temp_dir().join(format!("idp-audit-{}.jsonl", rand::random::<u64>())));
    let path = file.0.clone();
    let node = TestNode::start_with(|config| {
        config.audit.sink = "file".into();
        config.audit.file = Some(path.clone());
    })
    .await;
    let admin_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    let drain = idp_node::telemetry::health::Drain::default();
    let readiness = idp_node::telemetry::health::embedded_readiness(node.state.keys.clone(), drain.clone());
    let admin_server = idp_node::admin::serve_admin(admin_listener, readiness, None).unwrap();
    let admin_handle = admin_server.handle();
    actix_web::rt::spawn(admin_server);
    let _stop_admin = StopOnDrop(admin_handle);
    let before = scrape(&admin).await;
    let mut secrets: Vec<String> = vec![ALICE.1.to_string(), DEMO.1.to_string()];

    // A failed then a successful login, a code replay, a refresh reuse, a revocation.
    let browser = Browser::new();
    let login = browser.authorize(&node, &AuthParams::demo("code").set("scope", OFFLINE)).await;
    let refused = browser.submit_login(&node, &login, ALICE.0, "not-the-password").await;
    assert_eq!(refused.status, 200, "a wrong password shows the form again");
    let (code, verifier) = must_code(&node, &browser, OFFLINE).await;
    let tokens = must_redeem(&node, &code, Some(&verifier)).await;
    assert!(tokens.header("x-request-id").is_some_and(|id| id.len() == 32), "a generated request id is returned");
    let rotated = refresh(&node, &DEMO_AUTH, &tokens.str("refresh_token")).await;
    refresh(&node, &DEMO_AUTH, &tokens.str("refresh_token")).await.must_fail(400, "invalid_grant");
    let (replayed_code, replayed_verifier) = must_code(&node, &Browser::new(), "openid").await;
    must_redeem(&node, &replayed_code, Some(&replayed_verifier)).await;
    redeem(&node, &replayed_code, Some(&replayed_verifier)).await.must_fail(400, "invalid_grant");
    secrets.push(replayed_code);
    let machine = must_token(&node, &DEMO_AUTH, &[("grant_type", "client_credentials")]).await;
    let revoked = api()
        .post(node.url("/revoke"))
        .basic_auth(DEMO.0, Some(DEMO.1))
        .header("x-request-id", "ops-trace-42")
        .form(&[("token", machine.str("access_token"))])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(revoked.headers().get("x-request-id").unwrap(), "ops-trace-42", "a sane incoming id is kept");
    userinfo(&node, &machine.str("access_token")).await;
    secrets.extend([code, verifier, machine.str("access_token")]);
    for reply in [&tokens, &rotated] {
        for name in ["access_token", "id_token", "refresh_token"] {
            secrets.push(reply.str(name));
        }
    }

    // Consent (demo-public is not first party), then a logout of alice's first session.
    let (public_verifier, challenge) = pkce_pair();
    let consenting = Browser::new();
    let consented = consenting.must_authorize_and_login(&node, &AuthParams::public(&challenge)).await;
    secrets.extend([consented.must_param("code"), public_verifier]);
    let logout = browser.get(&node.url(&format!("/logout?id_token_hint={}", tokens.str("id_token")))).await;
    assert_eq!(logout.status, 200, "{}", logout.body);
    let insane = api().get(node.url("/healthz")).header("x-request-id", "a b\"c").send().await.unwrap();
    assert_ne!(insane.headers().get("x-request-id").unwrap(), "a b\"c", "an unsafe incoming id is replaced");

    // Discovery, JWKS, introspection, a scope refused, a redirect URI refused, readiness.
    for path in ["/.well-known/openid-configuration", "/jwks"] {
        assert_eq!(api().get(node.url(path)).send().await.unwrap().status(), 200);
    }
    assert!(!is_active(&node, &machine.str("access_token")).await, "the revoked token is inactive");
    token(&node, &DEMO_AUTH, &[("grant_type", "client_credentials"), ("scope", "openid")])
        .await
        .must_fail(400, "invalid_scope");
    let mismatch =
        Browser::new().authorize(&node, &AuthParams::demo("code").set("redirect_uri", "https://evil.example/cb")).await;
    assert_eq!(mismatch.status, 400);
    let readyz = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200);
    let admin_request_id = readyz.headers().get("x-request-id").and_then(|id| id.to_str().ok());
    assert!(admin_request_id.is_some_and(|id| id.len() == 32), "the admin listener returns a request id");
    must_read_gauge(&admin, "idp_ready", 1.0).await;

    // A key rotation, once `next` was published long enough.
    node.advance_secs(node.state.config.keys.publish_ahead.as_secs() + 1);
    node.state.key_ring.as_ref().expect("the embedded node runs its key ring").send(RotateKeys).await.unwrap().unwrap();
    node.state.audit.emit(idp_node::audit::AuditEvent::AdminChange {
        actor: "ops".into(),
        action: "client.update".into(),
        target: "demo".into(),
    });

    let kinds = [
        "login_succeeded",
        "login_failed",
        "consent_granted",
        "token_issued",
        "token_revoked",
        "code_replay_detected",
        "refresh_reuse_detected",
        "logout",
        "key_generated",
        "key_activated",
        "key_retired",
        "admin_change",
    ];
    let records = must_see_events(&path, &kinds).await;
    let subject_hash = node.state.audit.subject(ALICE.0);
    for record in &records {
        assert_eq!(record["v"], 1, "{record}");
        assert_eq!(record["node"], "embedded");
        assert!(record["time"].as_str().is_some_and(|time| time.ends_with('Z') && time.len() == 24), "{record}");
        if let Some(subject) = record.get("subject") {
            assert_eq!(subject, &Value::from(subject_hash.clone()), "users appear as the keyed hash only");
        }
    }
    let failed = records.iter().find(|record| record["event"] == "login_failed").unwrap();
    assert_eq!(failed["reason"], "bad_credentials");
    assert_eq!(failed["client_id"], "demo");
    let logged_out = records.iter().find(|record| record["event"] == "logout").unwrap();
    assert_eq!(logged_out["outcome"], "session_ended");
    let revocation = records.iter().find(|record| record["event"] == "token_revoked").unwrap();
    assert_eq!(revocation["request_id"], "ops-trace-42");
    let issued = records.iter().find(|record| record["event"] == "token_issued").unwrap();
    assert!(issued["request_id"].as_str().is_some_and(|id| id.len() == 32), "{issued}");

    let after = scrape(&admin).await;
    let moved = |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    let expectations: &[(&str, &[(&str, &str)])] = &[
        ("idp_authentication_attempts_total", &[("outcome", "success")]),
        ("idp_authentication_attempts_total", &[("reason", "bad_credentials")]),
        ("idp_token_requests_total", &[("grant_type", "authorization_code"), ("outcome", "success")]),
        ("idp_token_requests_total", &[("grant_type", "refresh_token"), ("error", "invalid_grant")]),
        ("idp_token_request_duration_seconds_count", &[("grant_type", "client_credentials")]),
        ("idp_tokens_issued_total", &[("kind", "id_token"), ("client_id", "demo")]),
        ("idp_code_replays_total", &[]),
        ("idp_refresh_reuses_total", &[]),
        ("idp_refresh_failures_total", &[("reason", "reuse")]),
        ("idp_token_validation_errors_total", &[("endpoint", "userinfo")]),
        ("idp_logouts_total", &[("outcome", "session_ended")]),
        ("idp_key_rotations_total", &[]),
        ("idp_http_requests_total", &[("endpoint", "token"), ("status", "200")]),
        ("idp_http_request_duration_seconds_count", &[("endpoint", "authorize")]),
        ("idp_audit_events_total", &[("event", "token_issued")]),
    ];
    for (name, labels) in expectations {
        assert!(moved(name, labels) >= 1.0, "{name}{labels:?} did not move:\n{after}");
    }
    // Exact counts: one replayed code, one reused refresh token, one logout, one refused redirect URI, one refused
    // scope; a rotation activates one key per algorithm, as many as the audit records.
    for (name, labels) in [
        ("idp_code_replays_total", &[][..]),
        ("idp_refresh_reuses_total", &[]),
        ("idp_refresh_failures_total", &[("reason", "reuse")]),
        ("idp_logouts_total", &[("outcome", "session_ended")]),
        ("idp_authorize_errors_total", &[("error", "redirect_uri_mismatch")]),
        ("idp_scope_rejections_total", &[("endpoint", "token")]),
    ] {
        assert_eq!(moved(name, labels), 1.0, "{name}{labels:?}:\n{after}");
    }
    let activated = records.iter().filter(|record| record["event"] == "key_activated").count();
    assert_eq!(activated, node.state.config.keys.algorithms.len(), "one activation per algorithm");
    assert_eq!(moved("idp_key_rotations_total", &[]), activated as f64, "rotations counted once each");
    let next_keys = sample(&after, "idp_signing_keys", &[("status", "next")]);
    assert_eq!(next_keys, activated as f64, "one next key per algorithm");
    assert!(moved("idp_http_requests_total", &[("endpoint", "admin"), ("status", "200")]) >= 2.0, "admin requests");
    // Nothing was dropped or failed to be written, and the counters that say so are exported (at 0).
    for name in ["idp_audit_events_dropped_total", "idp_audit_write_failures_total", "idp_fence_rejections_total"] {
        assert!(after.lines().any(|line| line.starts_with(name)), "{name} is not exported:\n{after}");
        assert_eq!(sample(&after, name, &[]), 0.0, "{name}");
    }

    // Every metric the dashboards and alert rules query is in the scrape, but those only a cluster node or a
    // failure produces.
    let cluster_or_failure_only = [
        "idp_cluster_members",
        "idp_shards_owned",
        "idp_shard_moves_total",
        "idp_lease_renewals_total",
        "idp_forward_requests_total",
        "idp_forward_duration_seconds",
        "idp_redis_command_duration_seconds",
        "idp_redis_errors_total",
    ];
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut queried = String::new();
    for file in ["prometheus/rules.yml", "grafana/dashboards/executive.json", "grafana/dashboards/on-call.json"] {
        queried.push_str(&std::fs::read_to_string(deploy.join(file)).unwrap());
    }
    queried.push_str(&std::fs::read_to_string(deploy.join("grafana/dashboards/debug.json")).unwrap());
    let scraped = idp_node::telemetry::metrics::referenced_names(&after);
    for name in idp_node::telemetry::metrics::referenced_names(&queried) {
        if !cluster_or_failure_only.contains(&name.as_str()) {
            assert!(scraped.contains(&name), "{name} is queried by a dashboard or rule but not scraped");
        }
    }

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("ops-trace-42"), "request spans carry the request id");
    assert!(logs.matches("request handled").count() >= 20, "debug logging of every request was captured");
    let audit_text = std::fs::read_to_string(&path).unwrap();
    for secret in &secrets {
        assert!(!secret.is_empty());
        assert!(!logs.contains(secret.as_str()), "a log line holds a secret ({} bytes)", secret.len());
        assert!(!audit_text.contains(secret.as_str()), "an audit record holds a secret ({} bytes)", secret.len());
    }
    for raw_subject in [format!("\"{}\"", ALICE.0), format!("={}", ALICE.0), format!("sub={}", ALICE.0)] {
        assert!(!logs.contains(&raw_subject), "a log line names the subject: {raw_subject}");
        assert!(!audit_text.contains(&raw_subject), "an audit record names the subject: {raw_subject}");
    }

    // A drain turns readiness off at once, and `idp_ready` follows within its period, unprobed.
    drain.start();
    must_read_gauge(&admin, "idp_ready", 0.0).await;
    assert_eq!(reqwest::get(format!("{admin}/readyz")).await.unwrap().status(), 503);
}

/// Set in the child process that runs a test alone.
const ISOLATED: &str = "IDP_TEST_ISOLATED";

/// Runs test `name` of this binary alone in a child process (bounded to two minutes, killed on timeout or when
/// this test fails), and fails with its output if it fails.
fn run_alone(name: &str) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ISOLATED, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the test alone");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("waiting for the child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} alone did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("the child's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} failed alone:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Stops an admin listener when dropped.
struct StopOnDrop(actix_web::dev::ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let handle = self.0.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

/// Waits (bounded) until the unlabelled gauge `name` reads `value` on the admin listener.
async fn must_read_gauge(admin: &str, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(admin).await;
        if text.lines().any(|line| line == format!("{name} {value}")) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is not {value}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
