//! The history of a chaos run: every client operation as it was invoked and how it ended (ok, a definite refusal,
//! or unknown), with monotonic timestamps, the node it went to, and its inputs and outputs.
//!
//! Secrets stay out of printed histories: codes and refresh tokens are kept as short hashes ([`fingerprint`]);
//! issued tokens are kept whole (the checker verifies their signatures) but never printed.

use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum OpKind {
    /// One attempt at a browser login: `/authorize`, `POST /login`, `/authorize/resume`; its output is a code.
    Login,
    /// `grant_type=authorization_code`.
    Exchange,
    /// `grant_type=refresh_token` with the family's latest token.
    Refresh,
    ClientCredentials,
    Userinfo,
    /// `/logout` of the SSO session.
    Logout,
    /// A deliberate second redemption of a code already redeemed: must be refused (I2).
    ReplayCode,
    /// A deliberate reuse of a rotated refresh token: must be refused, and revokes the family (I3).
    ReuseRefresh,
    /// After the run: a record acknowledged during it, read back (I1).
    Probe,
    /// After a refused [`OpKind::ReplayCode`] or [`OpKind::ReuseRefresh`]: the family's latest refresh token
    /// (`refresh_in` set) or latest access token at `/userinfo` (`refresh_in` unset), presented again; must be
    /// refused, since the refusal revoked the family (I2, I3).
    AfterRevocation,
}

impl OpKind {
    /// Deliberate replays: their refusal is the expected outcome, not a failure of the service.
    pub fn is_replay(self) -> bool {
        matches!(self, Self::ReplayCode | Self::ReuseRefresh)
    }

    /// Operations whose refusal is the expected outcome: deliberate replays and presentations after a revocation.
    pub fn expects_refusal(self) -> bool {
        self.is_replay() || self == Self::AfterRevocation
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Not answered yet (still in the history when the run ended: the checker treats it as unknown).
    Pending,
    Ok,
    /// A definite refusal: a 4xx with its OAuth `error` (or the HTTP status when the body had none).
    Fail(String),
    /// The effect is unknown: a timeout, a broken connection, a 5xx.
    Unknown(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }

    /// Whether the operation may have taken effect (an ok, or an unknown outcome).
    pub fn may_have_happened(&self) -> bool {
        !matches!(self, Self::Fail(_))
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: u64,
    pub client: usize,
    pub kind: OpKind,
    /// The node (base URL or name) the request went to.
    pub node: String,
    /// Since the history's start.
    pub invoked: Duration,
    pub completed: Option<Duration>,
    pub outcome: Outcome,
    /// The login this operation belongs to (a login, its code's exchange, its family's refreshes).
    pub login: Option<u64>,
    /// Retry number of a login attempt (0 for the first try).
    pub attempt: u32,
    /// Fingerprint of the code spent (exchange, replay) or issued (login).
    pub code: Option<String>,
    /// Fingerprint of the refresh token presented.
    pub refresh_in: Option<String>,
    /// Fingerprint of the refresh token issued.
    pub refresh_out: Option<String>,
    /// The shard of the handle presented (the code spent, or the refresh token presented), from its prefix.
    pub shard: Option<u16>,
    /// Signed tokens issued (access and ID tokens): kept for the signature checks, never printed.
    #[serde(skip)]
    pub tokens: Vec<String>,
}

impl Entry {
    /// When the operation ended, or `invoked` if it never did.
    pub fn ended(&self) -> Duration {
        self.completed.unwrap_or(self.invoked)
    }

    /// One line, secrets left out.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "#{} {:>8.3}s..{} client {} {:?} on {} → {:?}",
            self.id,
            self.invoked.as_secs_f64(),
            self.completed.map_or("?".to_string(), |at| format!("{:.3}s", at.as_secs_f64())),
            self.client,
            self.kind,
            self.node,
            self.outcome
        );
        let mut field = |name: &str, value: &Option<String>| {
            if let Some(value) = value {
                line.push_str(&format!(" {name}={value}"));
            }
        };
        field("login", &self.login.map(|login| format!("{login}/try{}", self.attempt)));
        field("code", &self.code);
        field("refresh_in", &self.refresh_in);
        field("refresh_out", &self.refresh_out);
        field("shard", &self.shard.map(|shard| shard.to_string()));
        if !self.tokens.is_empty() {
            line.push_str(&format!(" tokens={}", self.tokens.len()));
        }
        line
    }
}

/// What an operation is about, given at its invocation.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub login: Option<u64>,
    pub attempt: u32,
    pub code: Option<String>,
    pub refresh_in: Option<String>,
    /// The shard of the handle presented ([`shard_of_handle`]).
    pub shard: Option<u16>,
}

/// The shard a handle (a code, a refresh token) lives in, from its prefix; `None` for what is not a handle.
pub fn shard_of_handle(handle: &str) -> Option<u16> {
    crate::harness::leases::shard_of(handle, u16::MAX).ok()
}

/// What an operation produced, given at its completion.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    pub code: Option<String>,
    pub refresh_out: Option<String>,
    pub tokens: Vec<String>,
}

/// A short, stable fingerprint of a secret (the first 12 hex digits of its SHA-256): enough to tell codes and tokens
/// apart in a history, useless to spend.
pub fn fingerprint(secret: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    digest.as_ref()[..6].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The shared, append-only recorder of a run; cheap to clone into every client task.
#[derive(Clone)]
pub struct History {
    started: Instant,
    entries: Arc<Mutex<Vec<Entry>>>,
    /// Per client: operations that did not succeed, deliberate replays left out.
    failures: Arc<Mutex<Vec<usize>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        Self { started: Instant::now(), entries: Arc::default(), failures: Arc::default() }
    }

    /// The history's origin: every timestamp is measured from it.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Now, on the history's clock.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records an invocation; answers its id for [`History::complete`].
    pub fn invoke(&self, client: usize, kind: OpKind, node: &str, invocation: Invocation) -> u64 {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = entries.len() as u64;
        entries.push(Entry {
            id,
            client,
            kind,
            node: node.to_string(),
            invoked: self.started.elapsed(),
            completed: None,
            outcome: Outcome::Pending,
            login: invocation.login,
            attempt: invocation.attempt,
            code: invocation.code,
            refresh_in: invocation.refresh_in,
            refresh_out: None,
            shard: invocation.shard,
            tokens: Vec::new(),
        });
        id
    }

    /// Records how operation `id` ended.
    pub fn complete(&self, id: u64, outcome: Outcome, produced: Produced) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = entries.get_mut(id as usize) {
            if !outcome.is_ok() && !entry.kind.expects_refusal() && entry.kind != OpKind::Probe {
                let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if failures.len() <= entry.client {
                    failures.resize(entry.client + 1, 0);
                }
                failures[entry.client] += 1;
            }
            entry.completed = Some(self.started.elapsed());
            entry.outcome = outcome;
            if produced.code.is_some() {
                entry.code = produced.code;
            }
            entry.refresh_out = produced.refresh_out;
            entry.tokens = produced.tokens;
        }
    }

    /// Records every operation still pending as unknown (`abandoned`: its client was aborted); answers how many.
    pub fn abandon_pending(&self) -> usize {
        let pending: Vec<u64> = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|entry| entry.outcome == Outcome::Pending)
            .map(|entry| entry.id)
            .collect();
        for id in &pending {
            self.complete(*id, Outcome::Unknown("abandoned".into()), Produced::default());
        }
        pending.len()
    }

    /// A copy of every entry so far, in invocation order.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Operations of `client` that did not succeed so far (deliberate replays left out).
    pub fn failures_of(&self, client: usize) -> usize {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(client).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_and_completions_are_recorded_in_order() {
        let history = History::new();
        let first = history.invoke(0, OpKind::Login, "n1", Invocation { login: Some(7), ..Invocation::default() });
        let second = history.invoke(1, OpKind::ClientCredentials, "n2", Invocation::default());
        history.complete(first, Outcome::Ok, Produced { code: Some(fingerprint("code")), ..Produced::default() });
        let entries = history.snapshot();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].id, entries[1].id), (first, second));
        assert_eq!(entries[0].outcome, Outcome::Ok);
        assert_eq!(entries[0].code.as_deref(), Some(fingerprint("code").as_str()));
        assert!(entries[0].completed.unwrap() >= entries[0].invoked);
        assert_eq!(entries[1].outcome, Outcome::Pending);
        assert_eq!(entries[1].ended(), entries[1].invoked);
        history.complete(second, Outcome::Unknown("timeout".into()), Produced::default());
        let replay = history.invoke(1, OpKind::ReplayCode, "n2", Invocation::default());
        history.complete(replay, Outcome::Fail("invalid_grant".into()), Produced::default());
        assert_eq!((history.failures_of(0), history.failures_of(1), history.failures_of(9)), (0, 1, 0));
    }

    #[test]
    fn fingerprints_are_short_stable_and_distinct() {
        assert_eq!(fingerprint("abc"), fingerprint("abc"));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
        assert_eq!(fingerprint("abc").len(), 12);
        // SHA-256("abc") starts ba7816bf8f01.
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
    }

    #[test]
    fn descriptions_leave_tokens_out() {
        let history = History::new();
        let id =
            history.invoke(2, OpKind::Exchange, "n3", Invocation { code: Some("c0ffee".into()), ..Default::default() });
        history.complete(id, Outcome::Ok, Produced { tokens: vec!["secret.jwt.value".into()], ..Default::default() });
        let line = history.snapshot()[0].describe();
        assert!(line.contains("Exchange on n3"), "{line}");
        assert!(line.contains("code=c0ffee"), "{line}");
        assert!(line.contains("tokens=1"), "{line}");
        assert!(!line.contains("secret.jwt.value"), "{line}");
        assert!(Outcome::Unknown("timeout".into()).may_have_happened());
        assert!(!Outcome::Fail("invalid_grant".into()).may_have_happened());
    }
}
