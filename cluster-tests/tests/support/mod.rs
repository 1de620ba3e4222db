//! Shared steps of the cluster scenarios: one cluster at a time, logins that land in a chosen node's shards,
//! retries bounded in count and time, and a load loop whose every failure is kept.

pub mod federation;

use idp_cluster_tests::browser::{Browser, LoginForm, OpError, Rp, Tokens};
use idp_cluster_tests::harness::config::PASSWORD;
use idp_cluster_tests::harness::{Cluster, ClusterOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Recovery bound of every scenario (the target is under 2 s; tests stay far from flaking).
pub const RECOVERY: Duration = Duration::from_secs(10);
/// Per-request timeout: above the nodes' forward timeout plus failure detection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Logins tried to land a record in a given node's shards (one in three does with three nodes).
pub const PLACEMENT_TRIES: usize = 40;
pub const USER: &str = "alice";

/// One cluster at a time: the machine has two cores, and two clusters at once would starve each other's gossip.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// A started cluster of `nodes` nodes with the test timings.
pub async fn must_start(nodes: usize) -> Cluster {
    match Cluster::start(ClusterOptions { nodes, ..ClusterOptions::default() }).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("cluster did not start: {error:#}"),
    }
}

pub fn must_rp(cluster: &Cluster) -> Rp {
    cluster.rp(REQUEST_TIMEOUT).expect("http client")
}

/// The other node indexes, in order.
pub fn others(cluster: &Cluster, index: usize) -> Vec<usize> {
    (0..cluster.len()).filter(|other| *other != index).collect()
}

/// A login form shown by a node that owns the form's pending authorization (its shard's lease): killing that node
/// really moves the login. Answers the node, the browser and the form.
pub async fn must_form_owned_by_its_node(cluster: &Cluster, rp: &Rp) -> (usize, Browser, LoginForm) {
    for attempt in 0..PLACEMENT_TRIES {
        let node = attempt % cluster.len();
        let mut browser = Browser::new();
        let form = rp.login_form(&cluster.url(node), &mut browser, false).await.expect("login form");
        if cluster.owner_of_handle(&form.pending).expect("lease of the pending shard") == Some(node) {
            return (node, browser, form);
        }
    }
    panic!("no login form landed in its own node's shards after {PLACEMENT_TRIES} tries");
}

/// A code not yet redeemed, from a login through `node`, and its PKCE verifier.
pub async fn must_code(cluster: &Cluster, rp: &Rp, node: usize, user: &str) -> (String, String) {
    let url = cluster.url(node);
    let mut browser = Browser::new();
    let form = rp.login_form(&url, &mut browser, false).await.expect("login form");
    let code = rp.sign_in(&url, &mut browser, &form, user, PASSWORD).await.expect("login");
    (code, form.verifier)
}

/// A code not yet redeemed whose shard `owner` holds.
pub async fn must_code_owned_by(cluster: &Cluster, rp: &Rp, owner: usize) -> (String, String) {
    for attempt in 0..PLACEMENT_TRIES {
        let (code, verifier) = must_code(cluster, rp, attempt % cluster.len(), USER).await;
        if cluster.owner_of_handle(&code).expect("lease of the code's shard") == Some(owner) {
            return (code, verifier);
        }
    }
    panic!("no code landed in node {}'s shards after {PLACEMENT_TRIES} tries", owner + 1);
}

/// Tokens with a refresh token whose shard `owner` holds.
pub async fn must_refresh_token_owned_by(cluster: &Cluster, rp: &Rp, owner: usize) -> Tokens {
    for attempt in 0..PLACEMENT_TRIES {
        let tokens = rp.login(&cluster.url(attempt % cluster.len()), USER, PASSWORD, true).await.expect("login");
        let refresh = tokens.refresh_token.as_deref().expect("offline_access gives a refresh token");
        if cluster.owner_of_handle(refresh).expect("lease of the refresh token's shard") == Some(owner) {
            return tokens;
        }
    }
    panic!("no refresh token landed in node {}'s shards after {PLACEMENT_TRIES} tries", owner + 1);
}

/// Whether a failure may be retried: the request was not answered, or answered 5xx (the provider's
/// `temporarily_unavailable`). A 4xx is an answer and is never retried.
pub fn retryable(error: &OpError) -> bool {
    match error {
        OpError::Status { status, .. } => *status >= 500,
        OpError::Transport(_) => true,
        OpError::Protocol(_) => false,
    }
}

/// The outcome of a step retried within [`RECOVERY`].
pub struct Retried<T> {
    pub value: T,
    /// Failed attempts before the success.
    pub failures: Vec<OpError>,
    /// From `since` to the success.
    pub elapsed: Duration,
}

/// Runs `step` until it succeeds, retrying retryable failures after `pause`, within [`RECOVERY`] of `since`.
pub async fn must_retry<T, F, Fut>(what: &str, since: Instant, pause: Duration, mut step: F) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OpError>>,
{
    let mut failures = Vec::new();
    loop {
        match step().await {
            Ok(value) => return Retried { value, failures, elapsed: since.elapsed() },
            Err(error) if retryable(&error) && since.elapsed() + pause < RECOVERY => {
                failures.push(error);
                tokio::time::sleep(pause).await;
            }
            Err(error) => panic!(
                "{what}: {error} after {:?} and {} earlier failure(s): {failures:?}",
                since.elapsed(),
                failures.len()
            ),
        }
    }
}

/// The nodes a load loop sends requests to, as a load balancer's pool: a test adds a node once it is ready and
/// removes one before it drains it.
#[derive(Clone, Default)]
pub struct Pool(Arc<RwLock<Vec<String>>>);

impl Pool {
    pub fn new(urls: Vec<String>) -> Self {
        Self(Arc::new(RwLock::new(urls)))
    }

    pub fn add(&self, url: String) {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push(url);
    }

    pub fn remove(&self, url: &str) {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()).retain(|kept| kept != url);
    }

    /// The `turn`-th node, round-robin.
    pub fn pick(&self, turn: usize) -> String {
        let urls = self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        urls[turn % urls.len()].clone()
    }
}

/// What a load worker did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub requests: u64,
    pub rounds: u64,
    pub failures: Vec<String>,
}

/// Closed-loop workers, each logging in as its own user: every round is a login whose steps go to different nodes
/// (form, post and resume, exchange), a refresh on another node and a client-credentials token on another.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts `workers` workers; each stops by itself after `max_rounds` rounds or `max_time`.
    pub fn start(rp: &Rp, pool: &Pool, workers: usize, max_rounds: u64, max_time: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + max_time;
        let workers = (0..workers)
            .map(|worker| {
                let (rp, pool, stop) = (rp.clone(), pool.clone(), stop.clone());
                tokio::spawn(async move { load_worker(worker, rp, pool, stop, max_rounds, deadline).await })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops the workers and adds up their reports.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for worker in self.workers {
            let report = worker.await.expect("load worker panicked");
            total.requests += report.requests;
            total.rounds += report.rounds;
            total.failures.extend(report.failures);
        }
        total
    }
}

async fn load_worker(
    worker: usize,
    rp: Rp,
    pool: Pool,
    stop: Arc<AtomicBool>,
    max_rounds: u64,
    deadline: Instant,
) -> LoadReport {
    let user = format!("user-{worker}");
    let mut report = LoadReport::default();
    let mut turn = worker;
    while !stop.load(Ordering::Relaxed) && report.rounds < max_rounds && Instant::now() < deadline {
        report.rounds += 1;
        // Like a load balancer: each step goes to a node of the pool as it is now, and a one-request step that could
        // not even connect (nothing was sent: a node that just left) is sent once more to the next node.
        let mut next = || {
            turn += 1;
            pool.pick(turn)
        };
        macro_rules! step {
            ($name:expr, |$node:ident| $call:expr) => {{
                let mut $node = next();
                let mut result = $call;
                if matches!(&result, Err(OpError::Transport(kind)) if kind == "connect") {
                    $node = next();
                    result = $call;
                }
                result.map_err(|error| ($name, $node.clone(), error))
            }};
        }
        let mut browser = Browser::new();
        let mut requests = 0;
        let outcome: Result<(), (&str, String, OpError)> = async {
            requests += 1;
            let form = step!("authorize", |node| rp.login_form(&node, &mut browser, true).await)?;
            requests += 2;
            // Two requests (the form post, then the resume it redirects to): not resent, the post may have counted.
            let login_node = next();
            let code = rp
                .sign_in(&login_node, &mut browser, &form, &user, PASSWORD)
                .await
                .map_err(|error| ("login", login_node.clone(), error))?;
            requests += 1;
            let tokens = step!("exchange", |node| rp.exchange(&node, &code, &form.verifier).await)?;
            let refresh =
                tokens.refresh_token.ok_or(("exchange", String::new(), OpError::Protocol("no_refresh_token")))?;
            requests += 1;
            step!("refresh", |node| rp.refresh(&node, &refresh).await)?;
            requests += 1;
            step!("client_credentials", |node| rp.client_credentials(&node).await)?;
            Ok(())
        }
        .await;
        report.requests += requests;
        if let Err((step, on, error)) = outcome {
            report.failures.push(format!("worker {worker} round {} {step} on {on}: {error}", report.rounds));
        }
    }
    report
}
