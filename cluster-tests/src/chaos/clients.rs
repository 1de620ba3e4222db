//! Concurrent clients doing real flows against a cluster, every operation recorded in a [`History`].
//!
//! Each client runs rounds until it is stopped, or its round or time budget is spent: a form login with code and
//! PKCE (authorize on one node, the form posted and resumed on the next; a failed attempt is retried from the start
//! after a pause, as a person pressing the button again would, at most `max_attempts` times), the code's
//! exchange (retried with the same code while the outcome is unknown), two refresh rotations, userinfo and client
//! credentials. Some rounds also replay their code, others reuse a rotated refresh token, on purpose (both must
//! be refused, and both revoke the family: once refused, the family's latest refresh token and access token are
//! presented again as [`OpKind::AfterRevocation`], and must be refused too), some log out (which ends the family too), and some keep their code
//! unredeemed for the after-run probe. What a client still holds at the end (held codes, the latest refresh token
//! of each live family) is answered by [`Workload::finish`], for [`super::run::probe`].
//!
//! A refresh whose outcome is unknown leaves its family in doubt (the token may have been rotated, and presenting
//! it again counts as a reuse): the client ends the round and hands the token to the probe, whose answer is
//! definite either way (accepted if the rotation never happened, refused as a reuse if it did). A code whose
//! exchange was never answered is handed to the probe the same way: every acknowledged record must get a definite
//! answer (I1).

use super::history::{fingerprint, shard_of_handle, History, Invocation, OpKind, Outcome, Produced};
use crate::browser::{Browser, OpError, OpResult, Rp, Tokens};
use crate::harness::config::{CLIENT_ID, PASSWORD, USERS};
use reqwest::header::COOKIE;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The nodes clients send requests to, as a load balancer's pool: a scenario removes a node it kills or stops
/// (a health check would), and adds it back once it is ready again.
#[derive(Clone, Default)]
pub struct Nodes(Arc<RwLock<Vec<String>>>);

impl Nodes {
    pub fn new(urls: Vec<String>) -> Self {
        Self(Arc::new(RwLock::new(urls)))
    }

    pub fn add(&self, url: &str) {
        let mut urls = self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !urls.iter().any(|kept| kept == url) {
            urls.push(url.to_string());
        }
    }

    pub fn remove(&self, url: &str) {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()).retain(|kept| kept != url);
    }

    pub fn all(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The `turn`-th node, round-robin (`None` when the pool is empty).
    pub fn pick(&self, turn: usize) -> Option<String> {
        let urls = self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        (!urls.is_empty()).then(|| urls[turn % urls.len()].clone())
    }
}

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub clients: usize,
    /// Rounds per client at most.
    pub max_rounds: u64,
    /// Time budget of the whole workload.
    pub max_time: Duration,
    /// Pause before a retry, and after a round with a failure.
    pub retry_pause: Duration,
    /// Attempts of one login or one exchange at most.
    pub max_attempts: u32,
    /// Every n-th login keeps its code unredeemed for the probe (0: never).
    pub hold_code_every: u64,
    /// Every n-th login replays its code, and every n-th (half a period later) reuses a rotated refresh token
    /// (0: never).
    pub replay_every: u64,
    /// Every n-th login logs out at the end of its round (0: never).
    pub logout_every: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            clients: 4,
            max_rounds: 1000,
            max_time: Duration::from_secs(60),
            retry_pause: Duration::from_secs(1),
            max_attempts: 4,
            hold_code_every: 5,
            replay_every: 4,
            logout_every: 7,
        }
    }
}

/// A code kept unredeemed, for the probe.
#[derive(Debug, Clone)]
pub struct HeldCode {
    pub login: u64,
    pub code: String,
    pub verifier: String,
}

/// The latest refresh token of a live family (the family is the login that started it).
#[derive(Debug, Clone)]
pub struct Family {
    pub login: u64,
    pub refresh: String,
}

/// What the clients still hold at the end: the records the probe must find.
#[derive(Debug, Clone, Default)]
pub struct Leftover {
    pub held_codes: Vec<HeldCode>,
    pub families: Vec<Family>,
    pub rounds: u64,
}

/// How long [`Workload::finish`] waits for the clients' current rounds; then the rest are aborted.
pub const FINISH_WITHIN: Duration = Duration::from_secs(60);

/// Running clients. Dropping it (a scenario that failed half-way) stops and aborts them.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What the clients hold, handed over at the end of every round (so an aborted client's records are kept).
    leftover: Arc<Mutex<Leftover>>,
    history: History,
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Workload {
    /// Starts `options.clients` clients; client `n` logs in as `user-{n % USERS}`.
    pub fn start(rp: &Rp, nodes: &Nodes, history: &History, options: ClientOptions) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let logins = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + options.max_time;
        let leftover = Arc::new(Mutex::new(Leftover::default()));
        let tasks = (0..options.clients)
            .map(|index| {
                let client = Client {
                    index,
                    user: format!("user-{}", index % USERS),
                    rp: rp.clone(),
                    nodes: nodes.clone(),
                    history: history.clone(),
                    options: options.clone(),
                    logins: logins.clone(),
                    turn: AtomicUsize::new(index),
                };
                let (stop, leftover) = (stop.clone(), leftover.clone());
                tokio::spawn(async move { client.run(stop, deadline, leftover).await })
            })
            .collect();
        Self { stop, tasks, leftover, history: history.clone() }
    }

    /// Stops the clients after their current round and collects what they hold, within [`FINISH_WITHIN`]: a client
    /// still busy then is aborted, and its operations still pending are recorded as unknown (`abandoned`).
    pub async fn finish(self) -> Leftover {
        self.finish_within(FINISH_WITHIN).await
    }

    pub async fn finish_within(mut self, within: Duration) -> Leftover {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + within;
        let mut timed_out = false;
        for task in &mut self.tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                timed_out = true;
                break;
            }
        }
        if timed_out {
            for task in &self.tasks {
                task.abort();
            }
            let abandoned = self.history.abandon_pending();
            println!("chaos: clients still busy {within:?} after the stop were aborted ({abandoned} operations)");
        }
        std::mem::take(&mut *self.leftover.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// How a failed step is recorded: a 4xx is a definite refusal, anything unanswered or 5xx is unknown.
pub fn outcome_of(error: &OpError) -> Outcome {
    match error {
        OpError::Status { status, error } if *status < 500 => {
            Outcome::Fail(error.clone().unwrap_or_else(|| format!("http_{status}")))
        }
        OpError::Protocol(what) => Outcome::Fail(format!("protocol_{what}")),
        other => Outcome::Unknown(other.kind()),
    }
}

/// Names the login step that refused (`login: http_400`), so a history says which one did.
fn at_step(step: &'static str) -> impl Fn(OpError) -> OpError {
    move |error| match error {
        OpError::Status { status, error } => {
            let what = error.unwrap_or_else(|| format!("http_{status}"));
            OpError::Status { status, error: Some(format!("{step}: {what}")) }
        }
        other => other,
    }
}

/// A refusal of a step retried after an unanswered first try is ambiguous (the first try may have committed, and a
/// login POST or resume is accepted once): it counts as unknown, so the login restarts from `/authorize`; a refusal
/// of a first try stays definite (a lost pending authorization, I5).
fn after_unknown(error: OpError) -> OpError {
    match error {
        OpError::Status { status, error } if status < 500 => {
            let what = error.unwrap_or_else(|| format!("http_{status}"));
            OpError::Transport(format!("{what}_after_unknown"))
        }
        OpError::Protocol(what) => OpError::Transport(format!("protocol_{what}_after_unknown")),
        other => other,
    }
}

fn produced_by(tokens: &Tokens) -> Produced {
    let mut signed = vec![tokens.access_token.clone()];
    signed.extend(tokens.id_token.clone());
    Produced { code: None, refresh_out: tokens.refresh_token.as_deref().map(fingerprint), tokens: signed }
}

/// Runs one step and records it: the invocation before, the outcome and what it produced after.
pub async fn recorded<T, Fut>(
    history: &History,
    client: usize,
    kind: OpKind,
    node: &str,
    invocation: Invocation,
    step: Fut,
    produced: impl FnOnce(&T) -> Produced,
) -> OpResult<T>
where
    Fut: Future<Output = OpResult<T>>,
{
    let id = history.invoke(client, kind, node, invocation);
    let result = step.await;
    match &result {
        Ok(value) => history.complete(id, Outcome::Ok, produced(value)),
        Err(error) => history.complete(id, outcome_of(error), Produced::default()),
    }
    result
}

/// Runs `$call` with `$node` bound to `$first`; a request that could not even connect (nothing was sent: a node
/// that just died and is still in the pool) is sent once more to the next node, as a load balancer does. Both
/// tries are one operation of the history.
macro_rules! resend_on_connect {
    ($client:expr, $node:ident = $first:expr, $call:expr) => {{
        let mut $node = $first;
        let mut result = $call;
        if matches!(&result, Err(OpError::Transport(kind)) if kind == "connect") {
            $node = $client.next_node();
            result = $call;
        }
        result
    }};
}

struct Client {
    index: usize,
    user: String,
    rp: Rp,
    nodes: Nodes,
    history: History,
    options: ClientOptions,
    logins: Arc<AtomicU64>,
    turn: AtomicUsize,
}

/// Why a step gave nothing: refused (`No`), or never answered (`Yes`: its effect is unknown).
enum InDoubt {
    Yes,
    No,
}

/// A completed login: its browser (SSO cookie), code and PKCE verifier.
struct LoggedIn {
    browser: Browser,
    code: String,
    verifier: String,
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>, deadline: Instant, shared: Arc<Mutex<Leftover>>) {
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) && rounds < self.options.max_rounds && Instant::now() < deadline {
            rounds += 1;
            let failures_before = self.failures();
            let mut leftover = Leftover::default();
            self.round(&mut leftover).await;
            {
                let mut shared = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                shared.held_codes.extend(leftover.held_codes);
                shared.families.extend(leftover.families);
                shared.rounds += 1;
            }
            if self.failures() > failures_before {
                tokio::time::sleep(self.options.retry_pause).await;
            }
        }
    }

    fn failures(&self) -> usize {
        self.history.failures_of(self.index)
    }

    fn next_node(&self) -> String {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) + 1;
        self.nodes.pick(turn).unwrap_or_else(|| "http://127.0.0.1:9".into())
    }

    fn every(login: u64, period: u64, phase: u64) -> bool {
        period > 0 && login % period == phase % period
    }

    async fn round(&mut self, leftover: &mut Leftover) {
        let login = self.logins.fetch_add(1, Ordering::Relaxed);
        let Some(logged_in) = self.login(login).await else { return };
        if Self::every(login, self.options.hold_code_every, 1) {
            leftover.held_codes.push(HeldCode { login, code: logged_in.code, verifier: logged_in.verifier });
            return;
        }
        let tokens = match self.exchange(login, &logged_in.code, &logged_in.verifier).await {
            Ok(tokens) => tokens,
            Err(InDoubt::Yes) => {
                // Never answered: the probe must get a definite answer for the code.
                leftover.held_codes.push(HeldCode { login, code: logged_in.code, verifier: logged_in.verifier });
                return;
            }
            Err(InDoubt::No) => return,
        };
        let Some(first) = tokens.refresh_token.clone() else { return };
        let mut latest = Some(first.clone());
        let mut access = tokens.access_token.clone();
        for _ in 0..2 {
            let Some(token) = latest.take() else { break };
            match self.present_refresh(OpKind::Refresh, login, &token).await {
                Ok(rotated) => {
                    access = rotated.access_token.clone();
                    latest = rotated.refresh_token;
                }
                Err(error) if matches!(outcome_of(&error), Outcome::Unknown(_)) => {
                    // In doubt: the probe presents the token again, and either answer is definite.
                    leftover.families.push(Family { login, refresh: token });
                    return;
                }
                Err(_) => {}
            }
        }
        self.userinfo(OpKind::Userinfo, login, &access).await;
        self.client_credentials().await;
        let reuse = Self::every(login, self.options.replay_every, self.options.replay_every / 2) && latest.is_some();
        let refused =
            |result: &OpResult<Tokens>| matches!(result, Err(error) if matches!(outcome_of(error), Outcome::Fail(_)));
        let revoked = if Self::every(login, self.options.replay_every, 0) {
            // The code again: refused, and it revokes what the code gave (I2).
            let replay = self.spend_code(OpKind::ReplayCode, login, &logged_in.code, &logged_in.verifier).await;
            refused(&replay)
        } else if reuse {
            // A rotated token again: refused, and it revokes the whole family (I3).
            let reuse = self.present_refresh(OpKind::ReuseRefresh, login, &first).await;
            refused(&reuse)
        } else {
            if let Some(refresh) = latest {
                if Self::every(login, self.options.logout_every, 3) {
                    self.logout(login, &logged_in.browser, tokens.id_token.as_deref()).await;
                } else {
                    leftover.families.push(Family { login, refresh });
                }
            }
            return;
        };
        if revoked {
            // The refusal revoked the family: its latest refresh token and access token must be refused now.
            if let Some(refresh) = &latest {
                let _ = self.present_refresh(OpKind::AfterRevocation, login, refresh).await;
            }
            self.userinfo(OpKind::AfterRevocation, login, &access).await;
        }
    }

    /// A browser login, each attempt from the start on the next nodes; `None` when every attempt failed.
    async fn login(&mut self, login: u64) -> Option<LoggedIn> {
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(self.options.retry_pause).await;
            }
            let (form_node, post_node) = (self.next_node(), self.next_node());
            let mut browser = Browser::new();
            let (rp, user, client) = (self.rp.clone(), self.user.clone(), &*self);
            let steps = async {
                let form = resend_on_connect!(client, node = form_node.clone(), {
                    rp.login_form(&node, &mut browser, true).await
                })
                .map_err(at_step("authorize"))?;
                // A step left unanswered is retried once, same browser and form, on the next node (a person
                // pressing the button again); only then is the login restarted from /authorize.
                let mut posted = resend_on_connect!(client, node = post_node.clone(), {
                    rp.post_login(&node, &mut browser, &form, &user, PASSWORD).await
                });
                if posted.as_ref().is_err_and(|error| matches!(outcome_of(error), Outcome::Unknown(_))) {
                    tokio::time::sleep(client.options.retry_pause).await;
                    let node = client.next_node();
                    posted = rp.post_login(&node, &mut browser, &form, &user, PASSWORD).await.map_err(after_unknown);
                }
                let resume = posted.map_err(at_step("login"))?;
                let mut resumed = resend_on_connect!(client, node = post_node.clone(), {
                    rp.resume(&node, &mut browser, &resume).await
                });
                if resumed.as_ref().is_err_and(|error| matches!(outcome_of(error), Outcome::Unknown(_))) {
                    tokio::time::sleep(client.options.retry_pause).await;
                    let node = client.next_node();
                    resumed = rp.resume(&node, &mut browser, &resume).await.map_err(after_unknown);
                }
                let code = resumed.map_err(at_step("resume"))?;
                Ok((code, form.verifier))
            };
            let invocation = Invocation { login: Some(login), attempt, ..Invocation::default() };
            let node = format!("{form_node}→{post_node}");
            let result = recorded(&self.history, self.index, OpKind::Login, &node, invocation, steps, |done| {
                Produced { code: Some(fingerprint(&done.0)), ..Produced::default() }
            })
            .await;
            match result {
                Ok((code, verifier)) => return Some(LoggedIn { browser, code, verifier }),
                Err(error) if matches!(outcome_of(&error), Outcome::Fail(_)) => return None,
                Err(_) => {}
            }
        }
        None
    }

    /// The code's exchange, retried with the same code while the outcome is unknown; `Err(InDoubt::Yes)` when no
    /// attempt was answered.
    async fn exchange(&mut self, login: u64, code: &str, verifier: &str) -> Result<Tokens, InDoubt> {
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(self.options.retry_pause).await;
            }
            match self.spend_code(OpKind::Exchange, login, code, verifier).await {
                Ok(tokens) => return Ok(tokens),
                Err(error) if matches!(outcome_of(&error), Outcome::Fail(_)) => return Err(InDoubt::No),
                Err(_) => {}
            }
        }
        Err(InDoubt::Yes)
    }

    async fn spend_code(&mut self, kind: OpKind, login: u64, code: &str, verifier: &str) -> OpResult<Tokens> {
        let node = self.next_node();
        let invocation = Invocation {
            login: Some(login),
            code: Some(fingerprint(code)),
            shard: shard_of_handle(code),
            ..Invocation::default()
        };
        let step =
            async { resend_on_connect!(self, node = node.clone(), self.rp.exchange(&node, code, verifier).await) };
        recorded(&self.history, self.index, kind, &node, invocation, step, produced_by).await
    }

    async fn present_refresh(&mut self, kind: OpKind, login: u64, refresh: &str) -> OpResult<Tokens> {
        let node = self.next_node();
        let invocation = Invocation {
            login: Some(login),
            refresh_in: Some(fingerprint(refresh)),
            shard: shard_of_handle(refresh),
            ..Invocation::default()
        };
        let step = async { resend_on_connect!(self, node = node.clone(), self.rp.refresh(&node, refresh).await) };
        recorded(&self.history, self.index, kind, &node, invocation, step, produced_by).await
    }

    async fn userinfo(&mut self, kind: OpKind, login: u64, access: &str) {
        let node = self.next_node();
        let invocation = Invocation { login: Some(login), ..Invocation::default() };
        let step = async { resend_on_connect!(self, node = node.clone(), self.rp.userinfo(&node, access).await) };
        let _ = recorded(&self.history, self.index, kind, &node, invocation, step, |_| Produced::default()).await;
    }

    async fn client_credentials(&mut self) {
        let node = self.next_node();
        let step = async { resend_on_connect!(self, node = node.clone(), self.rp.client_credentials(&node).await) };
        let kind = OpKind::ClientCredentials;
        let _ = recorded(&self.history, self.index, kind, &node, Invocation::default(), step, produced_by).await;
    }

    /// RP-initiated logout with the session's cookie and ID token: ends the session and revokes its grants.
    async fn logout(&mut self, login: u64, browser: &Browser, id_token: Option<&str>) {
        let node = self.next_node();
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("client_id", CLIENT_ID);
            if let Some(id_token) = id_token {
                query.append_pair("id_token_hint", id_token);
            }
            query.finish()
        };
        let request = self.rp.http().get(format!("{node}/logout?{query}")).header(COOKIE, browser.cookie_header());
        let step = async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            if status < 400 {
                Ok(())
            } else {
                Err(OpError::Status { status, error: None })
            }
        };
        let invocation = Invocation { login: Some(login), ..Invocation::default() };
        let _ =
            recorded(&self.history, self.index, OpKind::Logout, &node, invocation, step, |_| Produced::default()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_definite_and_the_rest_unknown() {
        let refused = OpError::Status { status: 400, error: Some("invalid_grant".into()) };
        assert_eq!(outcome_of(&refused), Outcome::Fail("invalid_grant".into()));
        assert_eq!(outcome_of(&OpError::Status { status: 401, error: None }), Outcome::Fail("http_401".into()));
        assert_eq!(
            outcome_of(&OpError::Status { status: 503, error: Some("temporarily_unavailable".into()) }),
            Outcome::Unknown("http_503".into())
        );
        assert_eq!(outcome_of(&OpError::Transport("timeout".into())), Outcome::Unknown("timeout".into()));
        assert_eq!(outcome_of(&OpError::Protocol("no_form")), Outcome::Fail("protocol_no_form".into()));
    }

    #[test]
    fn a_refused_retry_after_an_unknown_try_is_unknown() {
        let refused = OpError::Status { status: 400, error: Some("invalid_request".into()) };
        assert_eq!(outcome_of(&refused), Outcome::Fail("invalid_request".into()));
        assert_eq!(outcome_of(&after_unknown(refused)), Outcome::Unknown("invalid_request_after_unknown".into()));
        let unavailable = OpError::Status { status: 503, error: None };
        assert_eq!(outcome_of(&after_unknown(unavailable)), Outcome::Unknown("http_503".into()));
        assert!(matches!(outcome_of(&after_unknown(OpError::Protocol("no_form"))), Outcome::Unknown(_)));
    }

    #[test]
    fn the_pool_picks_round_robin_and_follows_removals() {
        let nodes = Nodes::new(vec!["a".into(), "b".into()]);
        assert_eq!(
            (nodes.pick(0), nodes.pick(1), nodes.pick(2)),
            (Some("a".into()), Some("b".into()), Some("a".into()))
        );
        nodes.remove("a");
        nodes.add("b");
        assert_eq!(nodes.all(), ["b"]);
        nodes.remove("b");
        assert_eq!(nodes.pick(0), None);
    }

    #[tokio::test]
    async fn finish_is_bounded_and_pending_operations_become_unknown() {
        // A node that accepts connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nodes = Nodes::new(vec![format!("http://{}", silent.local_addr().unwrap())]);
        let rp = Rp::new("client", "secret", Duration::from_secs(120)).unwrap();
        let history = History::new();
        let workload = Workload::start(&rp, &nodes, &history, ClientOptions { clients: 2, ..Default::default() });
        let bounded = Instant::now();
        for _ in 0..200 {
            if history.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let leftover = workload.finish_within(Duration::from_millis(300)).await;
        assert!(bounded.elapsed() < Duration::from_secs(60), "finish did not wait for the 120 s request timeout");
        assert_eq!(leftover.rounds, 0, "no round ended");
        let entries = history.snapshot();
        assert!(!entries.is_empty());
        assert!(entries.iter().all(|entry| entry.outcome == Outcome::Unknown("abandoned".into())), "{entries:?}");
    }

    #[test]
    fn periods_pick_one_login_in_n() {
        let picked: Vec<u64> = (0..10).filter(|login| Client::every(*login, 4, 1)).collect();
        assert_eq!(picked, [1, 5, 9]);
        assert!(!(0..10).any(|login| Client::every(login, 0, 0)), "0 means never");
    }
}
