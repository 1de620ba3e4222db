//! The invariant checker: a pure function of a run's [`History`](super::history::History) entries and the facts
//! gathered after it (every node's final JWKS, the Redis command stream, the faults' times). Each invariant of
//! DESIGN.md has one function here; [`check`] runs them all and answers every violation with the entries that
//! show it.
//!
//! | invariant | what the checker demands |
//! |---|---|
//! | I1 | a code acknowledged by a login is accepted at its first redemption; a refresh token acknowledged by the token endpoint is accepted at its first presentation (unless its family was deliberately revoked first); every acknowledged code or refresh token not spent during the run is spent by an after-run [`OpKind::Probe`]; every acknowledged record of a family not revoked on purpose gets a definite answer (ok or refusal) from one of its presentations, probes included (else: inconclusive, a violation) |
//! | I2 | at most one `ok` per code (exchanges, deliberate replays, probes); nothing of a family accepted (rotation, probe, [`OpKind::AfterRevocation`]) after a deliberate code replay was refused |
//! | I3 | at most one `ok` per refresh token; nothing of a family accepted after a deliberate reuse was refused |
//! | I4 | every token of every `ok` verifies against every node's final JWKS, and against every JWKS sampled from any node (about every 200 ms) after the token was issued |
//! | I5 | every login completes, within `1 + max_login_retries` attempts |
//! | I6 | the Redis command stream shows no record written with a stale epoch ([`redis_log::stale_writes`]) |
//! | I7 | after each fault, the end of the last 100 ms window with a failed or slow (> 1 s) operation is within `recovery`; after that recovery, at least `min_ok_after_recovery` operations succeed, `min_ok_on_victim_shards` of them exchanges or rotations of handles in the shards the victim held |

use super::history::{Entry, OpKind, Outcome};
use super::redis_log::{self, Command, Judgement};
use crate::harness::tokens;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// The window of the recovery figure (DESIGN.md I7, `rto_ms`).
pub const WINDOW: Duration = Duration::from_millis(100);
/// An operation slower than this counts as failed for the recovery figure.
pub const SLOW: Duration = Duration::from_secs(1);

/// What was learned after the run, besides the history.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The cluster's issuer (`iss` of every token).
    pub issuer: String,
    /// The final JWKS of every running node, by node name.
    pub jwks: Vec<(String, Value)>,
    /// When each fault was injected (history clock), with a label.
    pub faults: Vec<(Duration, String)>,
    /// The Redis command streams of the run (MONITOR of each primary in turn, judged one by one); none leaves I6
    /// unjudged.
    pub redis_streams: Vec<Vec<Command>>,
    /// Per stream: every shard's epoch (`idp:epoch:shard:<n>`) read right after its MONITOR attached.
    pub redis_epochs: Vec<BTreeMap<u16, u64>>,
    pub bounds: Bounds,
    /// By fault (its index in `faults`): the shards the victim held when it was injected.
    pub victim_shards: BTreeMap<usize, BTreeSet<u16>>,
    /// Every node's JWKS as sampled during the run (about every 200 ms), consecutive equal samples merged.
    pub jwks_samples: Vec<JwksSample>,
}

/// One node's JWKS, served unchanged to every request sent from `first` to `last` (history clock).
#[derive(Debug, Clone, PartialEq)]
pub struct JwksSample {
    pub node: String,
    pub first: Duration,
    pub last: Duration,
    pub jwks: Value,
}

/// How long a relying party may keep a JWKS it fetched (`Cache-Control: max-age` of `/jwks`): a token must verify
/// against every JWKS served from its issue until then.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

impl JwksSample {
    /// Adds a JWKS served by `node` to a request sent at `at`, merging it into the node's last sample when equal.
    pub fn record(samples: &mut Vec<JwksSample>, node: &str, at: Duration, jwks: Value) {
        if let Some(last) = samples.iter_mut().rev().find(|sample| sample.node == node) {
            if last.jwks == jwks {
                last.last = last.last.max(at);
                return;
            }
        }
        samples.push(JwksSample { node: node.to_string(), first: at, last: at, jwks });
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Retries a login may need (DESIGN.md: at most one).
    pub max_login_retries: u32,
    /// Largest recovery time accepted after a fault.
    pub recovery: Duration,
    /// Successful operations demanded after each fault's recovery (so that a recovery of 0 means the service
    /// worked, not that nothing ran).
    pub min_ok_after_recovery: usize,
    /// Of them, successful exchanges or rotations on handles of the shards the fault's victim held.
    pub min_ok_on_victim_shards: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_login_retries: 1,
            recovery: Duration::from_secs(10),
            min_ok_after_recovery: 20,
            min_ok_on_victim_shards: 3,
        }
    }
}

/// One violated invariant and the part of the history that shows it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: &'static str,
    pub what: String,
    pub entries: Vec<Entry>,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "{} violated: {}", self.invariant, self.what)?;
        for entry in &self.entries {
            writeln!(formatter, "    {}", entry.describe())?;
        }
        Ok(())
    }
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// Recovery time after each fault (label, figure).
    pub recovery: Vec<(String, Duration)>,
    pub operations: usize,
    pub ok: usize,
    pub tokens_verified: usize,
    /// What the I6 replay judged (its stale writes are in `violations`), summed over the streams.
    pub i6: Judgement,
    /// Logins that completed only after a restart from `/authorize` (their first attempt failed even after its step
    /// was retried once): within I5's bound, but shown apart.
    pub logins_restarted: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The invariants violated, each once, sorted.
    pub fn violated(&self) -> BTreeSet<&'static str> {
        self.violations.iter().map(|violation| violation.invariant).collect()
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let recovery: Vec<String> =
            self.recovery.iter().map(|(label, took)| format!("{label}: {} ms", took.as_millis())).collect();
        format!(
            "{} operations, {} ok, {} token signatures verified, I6: {} record writes of {} shards judged, {} stale \
             attempts ({} refused), {} logins restarted from /authorize, recovery [{}], violations {:?}",
            self.operations,
            self.ok,
            self.tokens_verified,
            self.i6.writes_judged,
            self.i6.shards_judged,
            self.i6.stale_attempts,
            self.i6.stale_attempts_refused,
            self.logins_restarted,
            recovery.join(", "),
            self.violated()
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "{}", self.summary())?;
        for violation in &self.violations {
            write!(formatter, "{violation}")?;
        }
        Ok(())
    }
}

/// Checks every invariant.
pub fn check(history: &[Entry], facts: &Facts) -> Report {
    let mut violations = Vec::new();
    violations.extend(check_i1(history));
    violations.extend(check_i2(history));
    violations.extend(check_i3(history));
    let (verified, i4) = check_i4(history, facts);
    violations.extend(i4);
    violations.extend(check_i4_sampled(history, &facts.jwks_samples, &facts.issuer));
    violations.extend(check_i5(history, facts.bounds.max_login_retries));
    let mut i6 = Judgement::default();
    for (index, stream) in facts.redis_streams.iter().enumerate() {
        let seed = facts.redis_epochs.get(index).cloned().unwrap_or_default();
        let judged = redis_log::judge(stream, &seed);
        violations.extend(i6_violations(&judged.stale));
        i6.shards_judged += judged.shards_judged;
        i6.writes_judged += judged.writes_judged;
        i6.stale_attempts += judged.stale_attempts;
        i6.stale_attempts_refused += judged.stale_attempts_refused;
    }
    let (recovery, i7) = check_i7(history, &facts.faults, facts.bounds.recovery);
    violations.extend(i7);
    violations.extend(check_i7_progress(history, &facts.faults, &recovery, &facts.victim_shards, &facts.bounds));
    Report {
        violations,
        recovery,
        operations: history.len(),
        ok: history.iter().filter(|entry| entry.outcome.is_ok()).count(),
        tokens_verified: verified,
        i6,
        logins_restarted: logins_restarted(history),
    }
}

fn violation(invariant: &'static str, what: String, entries: Vec<&Entry>) -> Violation {
    Violation { invariant, what, entries: entries.into_iter().cloned().collect() }
}

/// Families (logins) deliberately ended, with the time it was invoked: a refresh token reused (I3), a code replayed
/// (I2: the replay revokes what the code gave), whatever they answered; a logout (it revokes the session's grants)
/// that may have happened.
fn revoked_families(history: &[Entry]) -> BTreeMap<u64, Duration> {
    let mut revoked = BTreeMap::new();
    let ends_family =
        |entry: &&Entry| entry.kind.is_replay() || (entry.kind == OpKind::Logout && entry.outcome.may_have_happened());
    for entry in history.iter().filter(ends_family) {
        if let Some(login) = entry.login {
            let at = revoked.entry(login).or_insert(entry.invoked);
            *at = (*at).min(entry.invoked);
        }
    }
    revoked
}

/// Whether an outcome is a definite answer (an ok or a refusal), as opposed to an unknown one.
fn definite(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Ok | Outcome::Fail(_))
}

/// I1: acknowledged codes and refresh tokens are accepted when first spent, none is left unspent, and each one
/// not deliberately revoked got a definite answer (an ok or a refusal) from at least one presentation: a record
/// whose every presentation, probes included, went unanswered or answered 5xx may be lost, and is reported as
/// inconclusive.
pub fn check_i1(history: &[Entry]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let revoked = revoked_families(history);
    // Acknowledged codes: issued by an ok login.
    for issued in history.iter().filter(|entry| entry.kind == OpKind::Login && entry.outcome.is_ok()) {
        let Some(code) = &issued.code else { continue };
        let mut spends: Vec<&Entry> = history
            .iter()
            .filter(|entry| matches!(entry.kind, OpKind::Exchange | OpKind::Probe) && entry.code.as_ref() == Some(code))
            .collect();
        spends.sort_by_key(|entry| entry.invoked);
        let revoked_family = issued.login.is_some_and(|login| revoked.contains_key(&login));
        match spends.first() {
            None => violations.push(violation(
                "I1",
                format!("acknowledged code {code} was never spent nor probed"),
                vec![issued],
            )),
            Some(first) if matches!(first.outcome, Outcome::Fail(_)) => violations.push(violation(
                "I1",
                format!("acknowledged code {code} refused at its first redemption"),
                vec![issued, first],
            )),
            Some(_) if !revoked_family && !spends.iter().any(|entry| definite(&entry.outcome)) => {
                let mut shown = vec![issued];
                shown.extend(spends.iter().copied());
                violations.push(violation(
                    "I1",
                    format!("acknowledged code {code}: inconclusive, no presentation (probes included) was answered"),
                    shown,
                ));
            }
            Some(_) => {}
        }
    }
    // Acknowledged refresh tokens: issued by an ok exchange or rotation.
    let issuers = history.iter().filter(|entry| {
        matches!(entry.kind, OpKind::Exchange | OpKind::Refresh | OpKind::Probe) && entry.outcome.is_ok()
    });
    for issued in issuers {
        let Some(token) = &issued.refresh_out else { continue };
        let revoked_at = issued.login.and_then(|login| revoked.get(&login)).copied();
        let mut presentations: Vec<&Entry> = history
            .iter()
            .filter(|entry| {
                matches!(entry.kind, OpKind::Refresh | OpKind::Probe) && entry.refresh_in.as_ref() == Some(token)
            })
            .collect();
        presentations.sort_by_key(|entry| entry.invoked);
        match (presentations.first(), revoked_at) {
            // A probe rotates the token it spends: its successor needs no probe.
            (None, _) if issued.kind == OpKind::Probe => {}
            (None, Some(_)) => {}
            (None, None) => violations.push(violation(
                "I1",
                format!("acknowledged refresh token {token} was never presented nor probed"),
                vec![issued],
            )),
            (Some(first), revoked_at) => {
                let revoked_before = revoked_at.is_some_and(|at| at <= first.invoked);
                if matches!(first.outcome, Outcome::Fail(_)) && !revoked_before {
                    violations.push(violation(
                        "I1",
                        format!("acknowledged refresh token {token} refused at its first presentation"),
                        vec![issued, first],
                    ));
                } else if revoked_at.is_none() && !presentations.iter().any(|entry| definite(&entry.outcome)) {
                    let mut shown = vec![issued];
                    shown.extend(presentations.iter().copied());
                    violations.push(violation(
                        "I1",
                        format!(
                            "acknowledged refresh token {token}: inconclusive, no presentation (probes included) was \
                             answered"
                        ),
                        shown,
                    ));
                }
            }
        }
    }
    violations
}

/// I2: at most one ok per code, and nothing the code gave is accepted after its replay was refused (the replay
/// revokes every token issued from the code).
pub fn check_i2(history: &[Entry]) -> Vec<Violation> {
    let spends =
        history.iter().filter(|entry| matches!(entry.kind, OpKind::Exchange | OpKind::ReplayCode | OpKind::Probe));
    let mut by_code: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in spends {
        if let Some(code) = &entry.code {
            by_code.entry(code).or_default().push(entry);
        }
    }
    let mut violations: Vec<Violation> = by_code
        .into_iter()
        .filter(|(_, entries)| entries.iter().filter(|entry| entry.outcome.is_ok()).count() > 1)
        .map(|(code, entries)| violation("I2", format!("code {code} redeemed more than once"), entries))
        .collect();
    let refused_replays =
        history.iter().filter(|entry| entry.kind == OpKind::ReplayCode && matches!(entry.outcome, Outcome::Fail(_)));
    for replay in refused_replays {
        for accepted in accepted_after(history, replay) {
            violations.push(violation(
                "I2",
                "a token issued from a replayed code is still accepted (the refused replay did not revoke it)".into(),
                vec![replay, accepted],
            ));
        }
    }
    violations
}

/// Ok presentations of the family of `refusal` (a refused deliberate replay) invoked after it completed: rotations,
/// probes, and the deliberate presentations after the revocation.
fn accepted_after<'a>(history: &'a [Entry], refusal: &'a Entry) -> impl Iterator<Item = &'a Entry> + 'a {
    let revoked_at = refusal.completed.unwrap_or(Duration::MAX);
    history.iter().filter(move |entry| {
        let presents_family = match entry.kind {
            OpKind::Refresh | OpKind::Probe => entry.refresh_in.is_some(),
            OpKind::AfterRevocation => true,
            _ => false,
        };
        presents_family
            && refusal.login.is_some()
            && entry.login == refusal.login
            && entry.invoked > revoked_at
            && entry.outcome.is_ok()
    })
}

/// I3: at most one ok per refresh token, and no ok rotation in a family after a refused deliberate reuse.
pub fn check_i3(history: &[Entry]) -> Vec<Violation> {
    let presentations = history.iter().filter(|entry| {
        matches!(entry.kind, OpKind::Refresh | OpKind::ReuseRefresh | OpKind::Probe | OpKind::AfterRevocation)
    });
    let mut by_token: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in presentations {
        if let Some(token) = &entry.refresh_in {
            by_token.entry(token).or_default().push(entry);
        }
    }
    let mut violations: Vec<Violation> = by_token
        .into_iter()
        .filter(|(_, entries)| entries.iter().filter(|entry| entry.outcome.is_ok()).count() > 1)
        .map(|(token, entries)| violation("I3", format!("refresh token {token} accepted more than once"), entries))
        .collect();
    let refused_reuses =
        history.iter().filter(|entry| entry.kind == OpKind::ReuseRefresh && matches!(entry.outcome, Outcome::Fail(_)));
    for reuse in refused_reuses {
        for accepted in accepted_after(history, reuse) {
            violations.push(violation(
                "I3",
                "a family whose reuse was refused still rotates (the reuse did not revoke it)".into(),
                vec![reuse, accepted],
            ));
        }
    }
    violations
}

/// I4: every token of every ok operation verifies against every node's JWKS. Answers the signatures verified.
pub fn check_i4(history: &[Entry], facts: &Facts) -> (usize, Vec<Violation>) {
    let mut verified = 0;
    let mut violations = Vec::new();
    for entry in history.iter().filter(|entry| entry.outcome.is_ok()) {
        for (index, token) in entry.tokens.iter().enumerate() {
            for (node, jwks) in &facts.jwks {
                match tokens::verify(token, jwks, &facts.issuer) {
                    Ok(_) => verified += 1,
                    Err(error) => violations.push(violation(
                        "I4",
                        format!(
                            "token {index} (kid {:?}) does not verify against {node}'s JWKS {:?}: {error}",
                            tokens::kid_of(token),
                            tokens::kids(jwks)
                        ),
                        vec![entry],
                    )),
                }
            }
        }
    }
    (verified, violations)
}

/// I4 at every moment: every token of every ok operation verifies against every JWKS a node served to a request
/// sent after the operation completed (the token existed) and within [`JWKS_MAX_AGE`] of it.
pub fn check_i4_sampled(history: &[Entry], samples: &[JwksSample], issuer: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    for entry in history.iter().filter(|entry| entry.outcome.is_ok() && !entry.tokens.is_empty()) {
        let Some(issued) = entry.completed else { continue };
        for (index, token) in entry.tokens.iter().enumerate() {
            let kid = tokens::kid_of(token);
            // The keys this token was verified with already: equal keys need no second verification.
            let mut verified: Vec<&Value> = Vec::new();
            for sample in samples.iter().filter(|sample| sample.last >= issued && sample.first <= issued + JWKS_MAX_AGE)
            {
                let key = sample.jwks["keys"]
                    .as_array()
                    .and_then(|keys| keys.iter().find(|key| key["kid"].as_str() == kid.as_deref()));
                let outcome = match key {
                    None => Err(anyhow::anyhow!("its key is not published")),
                    Some(key) if verified.contains(&key) => Ok(()),
                    Some(key) => {
                        tokens::verify(token, &serde_json::json!({ "keys": [key] }), issuer).map(|_| verified.push(key))
                    }
                };
                if let Err(error) = outcome {
                    violations.push(violation(
                        "I4",
                        format!(
                            "token {index} (kid {kid:?}) issued at {} ms does not verify against the JWKS {} served \
                             between {} and {} ms {:?}: {error}",
                            issued.as_millis(),
                            sample.node,
                            sample.first.as_millis(),
                            sample.last.as_millis(),
                            tokens::kids(&sample.jwks)
                        ),
                        vec![entry],
                    ));
                    // One violation per token is enough to show it.
                    break;
                }
            }
        }
    }
    violations
}

/// Logins whose first ok attempt is not their first attempt.
pub fn logins_restarted(history: &[Entry]) -> usize {
    let mut first_ok: BTreeMap<u64, u32> = BTreeMap::new();
    for entry in history.iter().filter(|entry| entry.kind == OpKind::Login && entry.outcome.is_ok()) {
        if let Some(login) = entry.login {
            let attempt = first_ok.entry(login).or_insert(entry.attempt);
            *attempt = (*attempt).min(entry.attempt);
        }
    }
    first_ok.values().filter(|attempt| **attempt > 0).count()
}

/// I5: every login ends with an ok attempt, within `1 + max_retries` attempts.
pub fn check_i5(history: &[Entry], max_retries: u32) -> Vec<Violation> {
    let mut by_login: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
    for entry in history.iter().filter(|entry| entry.kind == OpKind::Login) {
        if let Some(login) = entry.login {
            by_login.entry(login).or_default().push(entry);
        }
    }
    let mut violations = Vec::new();
    for (login, attempts) in by_login {
        match attempts.iter().filter(|entry| entry.outcome.is_ok()).map(|entry| entry.attempt).min() {
            None => violations.push(violation("I5", format!("login {login} never completed"), attempts)),
            Some(retries) if retries > max_retries => violations.push(violation(
                "I5",
                format!("login {login} needed {retries} retries (at most {max_retries} allowed)"),
                attempts,
            )),
            Some(_) => {}
        }
    }
    violations
}

/// I6: no record written with a stale epoch, from the Redis command stream.
pub fn check_i6(commands: Option<&[Command]>) -> Vec<Violation> {
    let Some(commands) = commands else { return Vec::new() };
    i6_violations(&redis_log::stale_writes(commands))
}

fn i6_violations(stale: &[redis_log::StaleWrite]) -> Vec<Violation> {
    if stale.is_empty() {
        return Vec::new();
    }
    let shown: Vec<String> = stale
        .iter()
        .take(10)
        .map(|write| {
            format!(
                "line {}: {} of shard {} written by {} carrying epoch {:?} while the shard was at {}",
                write.line, write.key, write.shard, write.client, write.carried, write.current
            )
        })
        .collect();
    let what = format!("{} record write(s) committed by a fenced owner:\n    {}", stale.len(), shown.join("\n    "));
    vec![Violation { invariant: "I6", what, entries: Vec::new() }]
}

/// The last `count` disturbed operations that ended at or after `since`: what the recovery figure is made of.
pub fn last_disturbed(history: &[Entry], since: Duration, count: usize) -> Vec<&Entry> {
    let mut disturbed: Vec<&Entry> =
        history.iter().filter(|entry| disturbed(entry) && entry.ended() >= since).collect();
    disturbed.sort_by_key(|entry| entry.ended());
    disturbed.split_off(disturbed.len().saturating_sub(count))
}

/// Whether an entry counts against recovery: an unexpected failure or unknown outcome, or an operation over [`SLOW`].
fn disturbed(entry: &Entry) -> bool {
    let failed = match &entry.outcome {
        Outcome::Ok => false,
        Outcome::Fail(_) => !entry.kind.expects_refusal(),
        Outcome::Unknown(_) | Outcome::Pending => true,
    };
    entry.kind != OpKind::Probe && (failed || entry.ended().saturating_sub(entry.invoked) > SLOW)
}

/// I7: per fault, from the fault to the end of the last [`WINDOW`] holding a disturbed operation that ended after
/// the fault and was invoked before the next one; a violation when over `bound`.
pub fn check_i7(
    history: &[Entry],
    faults: &[(Duration, String)],
    bound: Duration,
) -> (Vec<(String, Duration)>, Vec<Violation>) {
    let mut figures = Vec::new();
    let mut violations = Vec::new();
    for (index, (at, label)) in faults.iter().enumerate() {
        let until = faults.get(index + 1).map_or(Duration::MAX, |(next, _)| *next);
        // An operation belongs to the fault in force when it was invoked (one spanning the next fault still
        // shows this one's damage).
        let disturbed: Vec<&Entry> =
            history.iter().filter(|entry| disturbed(entry) && entry.ended() >= *at && entry.invoked < until).collect();
        let last_window_end = disturbed
            .iter()
            .map(|entry| {
                let window = entry.ended().as_millis() / WINDOW.as_millis();
                Duration::from_millis(((window + 1) * WINDOW.as_millis()) as u64)
            })
            .max();
        let recovery = last_window_end.map_or(Duration::ZERO, |end| end.saturating_sub(*at));
        figures.push((label.clone(), recovery));
        if recovery > bound {
            let mut last: Vec<&Entry> = disturbed;
            last.sort_by_key(|entry| entry.ended());
            let shown = last.split_off(last.len().saturating_sub(10));
            violations.push(violation(
                "I7",
                format!("recovery after {label} took {} ms (bound {} ms)", recovery.as_millis(), bound.as_millis()),
                shown,
            ));
        }
    }
    (figures, violations)
}

/// I7, not vacuously: after each fault's recovery (`figures`, from [`check_i7`]), until the end of the run, at
/// least `min_ok_after_recovery` operations succeeded, and at least `min_ok_on_victim_shards` exchanges or rotations
/// of handles in the shards the fault's victim held (when known).
pub fn check_i7_progress(
    history: &[Entry],
    faults: &[(Duration, String)],
    figures: &[(String, Duration)],
    victim_shards: &BTreeMap<usize, BTreeSet<u16>>,
    bounds: &Bounds,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (index, ((at, label), (_, recovery))) in faults.iter().zip(figures).enumerate() {
        let recovered = *at + *recovery;
        let ok_after: Vec<&Entry> = history
            .iter()
            .filter(|entry| {
                entry.kind != OpKind::Probe
                    && !entry.kind.expects_refusal()
                    && entry.outcome.is_ok()
                    && entry.invoked >= recovered
            })
            .collect();
        if ok_after.len() < bounds.min_ok_after_recovery {
            violations.push(violation(
                "I7",
                format!(
                    "only {} operations succeeded after the recovery from {label} (at {} ms; at least {} demanded)",
                    ok_after.len(),
                    recovered.as_millis(),
                    bounds.min_ok_after_recovery
                ),
                ok_after.clone(),
            ));
        }
        let Some(shards) = victim_shards.get(&index).filter(|shards| !shards.is_empty()) else { continue };
        let on_victim = ok_after
            .iter()
            .filter(|entry| {
                matches!(entry.kind, OpKind::Exchange | OpKind::Refresh)
                    && entry.shard.is_some_and(|shard| shards.contains(&shard))
            })
            .count();
        if on_victim < bounds.min_ok_on_victim_shards {
            violations.push(violation(
                "I7",
                format!(
                    "only {on_victim} exchanges or rotations succeeded on the {} shards the victim of {label} held, \
                     after its recovery (at least {} demanded)",
                    shards.len(),
                    bounds.min_ok_on_victim_shards
                ),
                Vec::new(),
            ));
        }
    }
    violations
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
