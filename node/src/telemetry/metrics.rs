//! Every metric the node exports, named once here (`docs/operations.md` has the table), with the helpers that
//! record them. Handlers and the cluster code call the helpers; the pure logic records nothing.
//!
//! Prometheus conventions: the `idp_` prefix, `_total` counters, `_seconds` histograms. Labels take values from
//! small fixed sets (endpoints, grant types, reasons); `client_id` appears only on the per-client counters and only
//! for clients that authenticated, dynamically registered ones all as `dynamic` (so its values are bounded by the
//! clients an operator declared). Never a secret, never a
//! user identifier.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

// HTTP, every request of the public listener (middleware).
pub const HTTP_REQUESTS: &str = "idp_http_requests_total";
pub const HTTP_DURATION: &str = "idp_http_request_duration_seconds";
// Authentication.
pub const AUTH_ATTEMPTS: &str = "idp_authentication_attempts_total";
pub const PASSWORD_QUEUE: &str = "idp_password_hash_queue_depth";
// Token endpoint.
pub const TOKEN_REQUESTS: &str = "idp_token_requests_total";
pub const TOKEN_DURATION: &str = "idp_token_request_duration_seconds";
pub const TOKENS_ISSUED: &str = "idp_tokens_issued_total";
pub const REFRESH_FAILURES: &str = "idp_refresh_failures_total";
pub const CODE_REPLAYS: &str = "idp_code_replays_total";
pub const REFRESH_REUSES: &str = "idp_refresh_reuses_total";
pub const SCOPE_REJECTIONS: &str = "idp_scope_rejections_total";
pub const AUTHORIZE_ERRORS: &str = "idp_authorize_errors_total";
// Userinfo, introspection, revocation, logout, discovery.
pub const TOKEN_VALIDATION_ERRORS: &str = "idp_token_validation_errors_total";
pub const INTROSPECTION_DURATION: &str = "idp_introspection_duration_seconds";
pub const LOGOUTS: &str = "idp_logouts_total";
pub const DISCOVERY_REQUESTS: &str = "idp_discovery_requests_total";
pub const JWKS_REQUESTS: &str = "idp_jwks_requests_total";
// Keys.
pub const KEY_ROTATIONS: &str = "idp_key_rotations_total";
pub const KEY_AGE: &str = "idp_signing_key_age_seconds";
pub const SIGNING_KEYS: &str = "idp_signing_keys";
// Cluster.
pub const CLUSTER_MEMBERS: &str = "idp_cluster_members";
pub const SHARDS_OWNED: &str = "idp_shards_owned";
pub const SHARD_MOVES: &str = "idp_shard_moves_total";
pub const LEASE_RENEWALS: &str = "idp_lease_renewals_total";
pub const FENCE_REJECTIONS: &str = "idp_fence_rejections_total";
pub const FORWARDS: &str = "idp_forward_requests_total";
pub const FORWARD_DURATION: &str = "idp_forward_duration_seconds";
pub const READY: &str = "idp_ready";
// Redis.
pub const REDIS_DURATION: &str = "idp_redis_command_duration_seconds";
pub const REDIS_ERRORS: &str = "idp_redis_errors_total";
// Audit.
pub const AUDIT_EVENTS: &str = "idp_audit_events_total";
pub const AUDIT_DROPPED: &str = "idp_audit_events_dropped_total";
pub const AUDIT_WRITE_FAILURES: &str = "idp_audit_write_failures_total";
pub const BUILD_INFO: &str = "idp_build_info";
/// 1 for each test-only `[testing]` switch that is on (a production node shows none).
pub const TESTING_SWITCH: &str = "idp_testing_switch";

/// Every exported name (histograms by their base name), for the documentation and dashboard checks.
pub const ALL: &[&str] = &[
    HTTP_REQUESTS,
    HTTP_DURATION,
    AUTH_ATTEMPTS,
    PASSWORD_QUEUE,
    TOKEN_REQUESTS,
    TOKEN_DURATION,
    TOKENS_ISSUED,
    REFRESH_FAILURES,
    CODE_REPLAYS,
    REFRESH_REUSES,
    SCOPE_REJECTIONS,
    AUTHORIZE_ERRORS,
    TOKEN_VALIDATION_ERRORS,
    INTROSPECTION_DURATION,
    LOGOUTS,
    DISCOVERY_REQUESTS,
    JWKS_REQUESTS,
    KEY_ROTATIONS,
    KEY_AGE,
    SIGNING_KEYS,
    CLUSTER_MEMBERS,
    SHARDS_OWNED,
    SHARD_MOVES,
    LEASE_RENEWALS,
    FENCE_REJECTIONS,
    FORWARDS,
    FORWARD_DURATION,
    READY,
    REDIS_DURATION,
    REDIS_ERRORS,
    AUDIT_EVENTS,
    AUDIT_DROPPED,
    AUDIT_WRITE_FAILURES,
    BUILD_INFO,
    TESTING_SWITCH,
];

/// The counters without labels, registered at 0 by [`install`].
const UNLABELLED_COUNTERS: &[&str] = &[CODE_REPLAYS, REFRESH_REUSES, FENCE_REJECTIONS, AUDIT_DROPPED];

/// Latency buckets (seconds) of every `_seconds` histogram: 0.5 ms (a cached read) to 10 s (a stuck forward).
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Histogram samples are folded into buckets at this interval (the exporter keeps raw samples until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once (several in-process nodes share it) and returns the handle
/// that renders `/metrics`. A thread folds histogram samples every few seconds.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("static non-empty buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only this exporter's view");
            }
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("idp-metrics-upkeep".into()).spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // The unlabelled counters exist from the start at 0: a series that never appeared breaks `increase`
            // and the sums of the alert rules.
            for name in UNLABELLED_COUNTERS {
                counter!(*name).increment(0);
            }
            handle
        })
        .clone()
}

/// Sets `idp_testing_switch{name}` to 1 for each `[testing]` switch on (`clock_skew=-20s` is named `clock_skew`).
pub fn testing_switches(on: &[String]) {
    for switch in on {
        let name = switch.split('=').next().unwrap_or_default().to_string();
        gauge!(TESTING_SWITCH, "name" => name).set(1.0);
    }
}

/// The Prometheus text of every metric of this process.
pub fn render() -> String {
    install().render()
}

/// The status label: the exact code for the ones an operator alerts on, else its class.
pub fn status_label(status: u16) -> &'static str {
    exact_status(status).unwrap_or(match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    })
}

fn exact_status(status: u16) -> Option<&'static str> {
    match status {
        200 => Some("200"),
        201 => Some("201"),
        204 => Some("204"),
        302 => Some("302"),
        303 => Some("303"),
        304 => Some("304"),
        400 => Some("400"),
        401 => Some("401"),
        403 => Some("403"),
        404 => Some("404"),
        405 => Some("405"),
        413 => Some("413"),
        429 => Some("429"),
        500 => Some("500"),
        502 => Some("502"),
        503 => Some("503"),
        504 => Some("504"),
        _ => None,
    }
}

/// Per-request metrics, through handles cached per thread (no label allocation, no registry lookup).
pub fn http_request(endpoint: &'static str, status: u16, elapsed: Duration) {
    let status = status_label(status);
    hot::increment(HTTP_REQUESTS, &[("endpoint", endpoint), ("status", status)]);
    hot::record(HTTP_DURATION, &[("endpoint", endpoint)], elapsed);
    match endpoint {
        "discovery" => hot::increment(DISCOVERY_REQUESTS, &[("status", status)]),
        "jwks" => hot::increment(JWKS_REQUESTS, &[("status", status)]),
        "introspect" => hot::record(INTROSPECTION_DURATION, &[], elapsed),
        _ => {}
    }
}

/// A login attempt: `method` `pwd`; `reason` `ok` on success.
pub fn authentication(method: &'static str, reason: &'static str) {
    let outcome = if reason == "ok" { "success" } else { "failure" };
    counter!(AUTH_ATTEMPTS, "method" => method, "outcome" => outcome, "reason" => reason).increment(1);
}

pub fn password_queue_depth(depth: usize) {
    gauge!(PASSWORD_QUEUE).set(depth as f64);
}

/// One token request: `error` is the OAuth error code, `none` on success.
pub fn token_request(grant_type: &'static str, error: &'static str, elapsed: Duration) {
    let outcome = if error == "none" { "success" } else { "error" };
    hot::increment(TOKEN_REQUESTS, &[("grant_type", grant_type), ("outcome", outcome), ("error", error)]);
    hot::record(TOKEN_DURATION, &[("grant_type", grant_type)], elapsed);
}

/// The `client_id` label value of every dynamically registered client.
pub const DYNAMIC_CLIENT: &str = "dynamic";

/// Tokens handed out, per kind, grant type and client: its id for a declared client, [`DYNAMIC_CLIENT`] for one
/// registered through `/register`.
pub fn tokens_issued(kind: &'static str, grant_type: &'static str, client_id: &str) {
    hot::increment_for_client(TOKENS_ISSUED, [("kind", kind), ("grant_type", grant_type)], client_id);
}

/// Handles of the per-request metrics, cached per thread: the first use of a label set registers it, later uses
/// are a hash lookup of a few static strings. Handles come from the recorder installed at start ([`install`]).
mod hot {
    use metrics::{Counter, Histogram, Label};
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::time::Duration;

    type Key = (&'static str, [&'static str; 3]);

    thread_local! {
        static COUNTERS: RefCell<HashMap<Key, Counter>> = RefCell::new(HashMap::new());
        static HISTOGRAMS: RefCell<HashMap<Key, Histogram>> = RefCell::new(HashMap::new());
        static CLIENT_COUNTERS: RefCell<HashMap<Key, HashMap<String, Counter>>> = RefCell::new(HashMap::new());
    }

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let mut values = [""; 3];
        for (slot, (_, value)) in values.iter_mut().zip(labels) {
            *slot = value;
        }
        (name, values)
    }

    fn owned(labels: &[(&'static str, &'static str)]) -> Vec<Label> {
        labels.iter().map(|(name, value)| Label::from_static_parts(name, value)).collect()
    }

    pub fn increment(name: &'static str, labels: &[(&'static str, &'static str)]) {
        COUNTERS.with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.entry(key(name, labels)).or_insert_with(|| metrics::counter!(name, owned(labels))).increment(1);
        });
    }

    pub fn record(name: &'static str, labels: &[(&'static str, &'static str)], elapsed: Duration) {
        HISTOGRAMS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let histogram = cache.entry(key(name, labels)).or_insert_with(|| metrics::histogram!(name, owned(labels)));
            histogram.record(elapsed.as_secs_f64());
        });
    }

    /// A counter with a `client_id` label besides static ones (the client's id is only copied the first time).
    pub fn increment_for_client(name: &'static str, labels: [(&'static str, &'static str); 2], client_id: &str) {
        CLIENT_COUNTERS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let per_client = cache.entry(key(name, &labels)).or_default();
            if let Some(counter) = per_client.get(client_id) {
                return counter.increment(1);
            }
            let mut all = owned(&labels);
            all.push(Label::new("client_id", client_id.to_string()));
            let counter = metrics::counter!(name, all);
            counter.increment(1);
            per_client.insert(client_id.to_string(), counter);
        });
    }
}

/// A refused refresh: `reuse`, `expired`, `revoked`, `invalid` (wrong client, malformed) or `scope`.
pub fn refresh_failure(reason: &'static str) {
    counter!(REFRESH_FAILURES, "reason" => reason).increment(1);
}

pub fn code_replay() {
    counter!(CODE_REPLAYS).increment(1);
}

pub fn refresh_reuse() {
    counter!(REFRESH_REUSES).increment(1);
}

/// A request refused for its scope (`invalid_scope`), at `authorize` or `token`.
pub fn scope_rejection(endpoint: &'static str) {
    counter!(SCOPE_REJECTIONS, "endpoint" => endpoint).increment(1);
}

/// An authorization request refused (`error`: OAuth code or page reason, a fixed set).
pub fn authorize_error(error: &'static str) {
    counter!(AUTHORIZE_ERRORS, "error" => error).increment(1);
}

/// A bearer token refused at `userinfo` or `introspect` (an inactive token at introspection counts too).
pub fn token_validation_error(endpoint: &'static str, reason: &'static str) {
    counter!(TOKEN_VALIDATION_ERRORS, "endpoint" => endpoint, "reason" => reason).increment(1);
}

/// A logout: `session_ended`, `no_session`, `rejected`.
pub fn logout(outcome: &'static str) {
    counter!(LOGOUTS, "outcome" => outcome).increment(1);
}

/// A key started signing (`alg` is one of the few supported algorithms).
pub fn key_rotation(alg: &str) {
    counter!(KEY_ROTATIONS, "alg" => alg.to_string()).increment(1);
}

/// Published signing keys by algorithm and status (`next`, `current`, `previous`), 0 included.
pub fn signing_keys(alg: &'static str, status: &'static str, count: usize) {
    gauge!(SIGNING_KEYS, "alg" => alg, "status" => status).set(count as f64);
}

/// Age of the oldest signing key by algorithm and status (`next`, `current`, `previous`); 0 without such a key.
pub fn key_age(alg: &'static str, status: &'static str, age: Duration) {
    gauge!(KEY_AGE, "alg" => alg, "status" => status).set(age.as_secs_f64());
}

/// Members of the view by state: `live` and `ready`.
pub fn cluster_members(live: usize, ready: usize) {
    gauge!(CLUSTER_MEMBERS, "state" => "live").set(live as f64);
    gauge!(CLUSTER_MEMBERS, "state" => "ready").set(ready as f64);
}

pub fn shards_owned(count: usize) {
    gauge!(SHARDS_OWNED).set(count as f64);
}

/// A lease taken (`acquired`), handed over (`released`) or lost (`lost`: renewal refused or write fenced).
pub fn shard_move(direction: &'static str, count: usize) {
    counter!(SHARD_MOVES, "direction" => direction).increment(count as u64);
}

/// Lease renewals: `renewed` or `lost`; `failed` when the round trip itself failed.
pub fn lease_renewals(outcome: &'static str, count: usize) {
    counter!(LEASE_RENEWALS, "outcome" => outcome).increment(count as u64);
}

pub fn fence_rejection() {
    counter!(FENCE_REJECTIONS).increment(1);
}

/// One forwarded shard operation: `ok`, `not_owner` (the shard moved: retried), `unreachable`, `timeout`,
/// `owner_died` (gossip declared the owner dead mid-call: retried), `error`.
pub fn forward(outcome: &'static str, elapsed: Duration) {
    counter!(FORWARDS, "outcome" => outcome).increment(1);
    histogram!(FORWARD_DURATION).record(elapsed.as_secs_f64());
}

/// A shard operation the router gave up forwarding but answered from what Redis settles (outcome
/// `settled_by_replica`; no duration, nothing was forwarded).
pub fn forward_settled_by_replica() {
    counter!(FORWARDS, "outcome" => "settled_by_replica").increment(1);
}

pub fn ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// One Redis call of the replica or the leases (`op`); `error` is `none`, `unavailable`, `fenced`, `corrupt`.
pub fn redis_command(op: &'static str, error: &'static str, elapsed: Duration) {
    histogram!(REDIS_DURATION, "op" => op).record(elapsed.as_secs_f64());
    if error != "none" {
        counter!(REDIS_ERRORS, "op" => op, "error" => error).increment(1);
    }
}

pub fn audit_event(kind: &'static str) {
    counter!(AUDIT_EVENTS, "event" => kind).increment(1);
}

pub fn audit_dropped() {
    counter!(AUDIT_DROPPED).increment(1);
}

pub fn audit_write_failed(sink: &'static str, count: usize) {
    counter!(AUDIT_WRITE_FAILURES, "sink" => sink).increment(count as u64);
}

/// The metric names a dashboard or rule file refers to (`idp_...`), histogram series (`_bucket`, `_count`,
/// `_sum` of a `_seconds` histogram) folded into their base name. Recording rules (`idp:...`) are not metrics.
pub fn referenced_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("idp_") {
        let start = at + found;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |length| start + length);
        if boundary {
            let name = &text[start..end];
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|base| base.ends_with("_seconds")))
                .unwrap_or(name);
            names.insert(base.to_string());
        }
        at = end;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn repository_file(path: &str) -> String {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{}: {error}", full.display()))
    }

    /// Every metric the dashboards and alert rules query is one this node exports, and every exported metric is
    /// documented in the table of `docs/operations.md`; the recording rules the dashboards use are defined.
    #[test]
    fn dashboards_and_rules_query_only_exported_and_documented_metrics() {
        let rules = repository_file("deploy/prometheus/rules.yml");
        let mut used = referenced_names(&rules);
        for dashboard in ["executive", "on-call", "debug"] {
            let text = repository_file(&format!("deploy/grafana/dashboards/{dashboard}.json"));
            let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
            assert_eq!(json["panels"].as_array().map(|panels| panels.is_empty()), Some(false), "{dashboard}");
            used.extend(referenced_names(&text));
            for recorded in text.split('"').flat_map(|part| part.split(' ')).filter(|word| word.starts_with("idp:")) {
                assert!(rules.contains(&format!("record: {recorded}")), "{dashboard} uses undefined {recorded}");
            }
        }
        assert!(used.len() >= 25, "the dashboards and rules cover the SLIs: {used:?}");
        for name in &used {
            assert!(ALL.contains(&name.as_str()), "{name} is queried but not exported");
        }
        let operations = repository_file("docs/operations.md");
        for name in ALL {
            assert!(operations.contains(&format!("`{name}`")), "{name} is not documented in docs/operations.md");
        }
    }

    #[test]
    fn referenced_names_fold_histogram_series_and_skip_recording_rules() {
        let text = r#"rate(idp_http_request_duration_seconds_bucket{le="0.25"}[5m]) / idp_http_requests_total
            idp:slo_token_errors:ratio_rate5m xidp_not_ours idp_tokens_issued_total"#;
        let names: Vec<String> = referenced_names(text).into_iter().collect();
        assert_eq!(names, ["idp_http_request_duration_seconds", "idp_http_requests_total", "idp_tokens_issued_total"]);
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for name in ALL {
            assert!(name.starts_with("idp_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
        }
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len(), "a name is listed twice");
    }

    #[test]
    fn unlabelled_counters_are_exported_at_zero_before_any_increment() {
        let text = render();
        for name in UNLABELLED_COUNTERS {
            assert!(text.lines().any(|line| line.starts_with(&format!("{name} "))), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn status_labels_are_exact_for_alerting_codes_and_classes_otherwise() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(503), "503");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(299), "2xx");
        assert_eq!(status_label(599), "5xx");
    }
}
