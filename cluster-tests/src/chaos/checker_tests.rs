//! The checker on synthetic histories: for each invariant, histories that pass and histories that must fail.

use super::*;
use idp_actors::jwt::Algorithm;
use idp_actors::keyring::keys::SigningKey;
use serde_json::json;

const ISSUER: &str = "http://127.0.0.1:9000";

/// Builds entries with consecutive ids; times in milliseconds.
#[derive(Default)]
struct Script(Vec<Entry>);

impl Script {
    fn op(&mut self, kind: OpKind, at_ms: u64, took_ms: u64, outcome: Outcome) -> &mut Entry {
        let id = self.0.len() as u64;
        self.0.push(Entry {
            id,
            client: 0,
            kind,
            node: "node-1".into(),
            invoked: Duration::from_millis(at_ms),
            completed: Some(Duration::from_millis(at_ms + took_ms)),
            outcome,
            login: None,
            attempt: 0,
            code: None,
            refresh_in: None,
            refresh_out: None,
            shard: None,
            tokens: Vec::new(),
        });
        self.0.last_mut().unwrap()
    }

    /// A login (attempt 0) of `login` giving `code`, its exchange giving refresh token `r0`, at `at_ms`.
    fn login_and_exchange(&mut self, login: u64, code: &str, refresh: &str, at_ms: u64) {
        let issued = self.op(OpKind::Login, at_ms, 10, Outcome::Ok);
        issued.login = Some(login);
        issued.code = Some(code.into());
        let exchanged = self.op(OpKind::Exchange, at_ms + 20, 10, Outcome::Ok);
        exchanged.login = Some(login);
        exchanged.code = Some(code.into());
        exchanged.refresh_out = Some(refresh.into());
    }

    fn refresh(&mut self, kind: OpKind, login: u64, from: &str, to: Option<&str>, at_ms: u64, outcome: Outcome) {
        let entry = self.op(kind, at_ms, 10, outcome);
        entry.login = Some(login);
        entry.refresh_in = Some(from.into());
        entry.refresh_out = to.map(str::to_string);
    }

    fn code_spend(&mut self, kind: OpKind, login: u64, code: &str, at_ms: u64, outcome: Outcome) {
        let entry = self.op(kind, at_ms, 10, outcome);
        entry.login = Some(login);
        entry.code = Some(code.into());
    }
}

fn refused() -> Outcome {
    Outcome::Fail("invalid_grant".into())
}

fn invariants(violations: &[Violation]) -> Vec<&'static str> {
    violations.iter().map(|violation| violation.invariant).collect()
}

// ---- I1 ----

#[test]
fn i1_passes_when_every_acknowledged_record_is_spent_or_probed() {
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 100, Outcome::Ok);
    script.refresh(OpKind::Probe, 1, "r2", Some("r3"), 900, Outcome::Ok);
    // A held-back code, redeemed by the probe after the run.
    let held = script.op(OpKind::Login, 200, 10, Outcome::Ok);
    held.login = Some(2);
    held.code = Some("c2".into());
    script.code_spend(OpKind::Probe, 2, "c2", 950, Outcome::Ok);
    assert!(check_i1(&script.0).is_empty(), "{:?}", check_i1(&script.0));
}

#[test]
fn i1_fails_when_an_acknowledged_code_is_refused_at_its_first_redemption() {
    let mut script = Script::default();
    let issued = script.op(OpKind::Login, 0, 10, Outcome::Ok);
    issued.login = Some(1);
    issued.code = Some("c1".into());
    script.code_spend(OpKind::Exchange, 1, "c1", 50, refused());
    let violations = check_i1(&script.0);
    assert_eq!(invariants(&violations), ["I1"]);
    assert!(violations[0].what.contains("refused at its first redemption"));
    assert_eq!(violations[0].entries.len(), 2, "the login and the refused exchange are shown");
}

#[test]
fn i1_fails_when_an_acknowledged_refresh_token_is_refused_or_never_probed() {
    let mut lost = Script::default();
    lost.login_and_exchange(1, "c1", "r1", 0);
    lost.refresh(OpKind::Probe, 1, "r1", None, 500, refused());
    assert_eq!(invariants(&check_i1(&lost.0)), ["I1"]);

    let mut unprobed = Script::default();
    unprobed.login_and_exchange(1, "c1", "r1", 0);
    let violations = check_i1(&unprobed.0);
    assert_eq!(invariants(&violations), ["I1"]);
    assert!(violations[0].what.contains("never presented nor probed"));

    let mut code_unprobed = Script::default();
    let issued = code_unprobed.op(OpKind::Login, 0, 10, Outcome::Ok);
    issued.code = Some("c9".into());
    assert_eq!(invariants(&check_i1(&code_unprobed.0)), ["I1"]);
}

#[test]
fn i1_fails_when_a_record_never_got_a_definite_answer() {
    // A held code whose probes all timed out.
    let mut script = Script::default();
    let issued = script.op(OpKind::Login, 0, 10, Outcome::Ok);
    issued.login = Some(1);
    issued.code = Some("c1".into());
    script.code_spend(OpKind::Probe, 1, "c1", 900, Outcome::Unknown("timeout".into()));
    script.code_spend(OpKind::Probe, 1, "c1", 1900, Outcome::Unknown("http_503".into()));
    let violations = check_i1(&script.0);
    assert_eq!(invariants(&violations), ["I1"]);
    assert!(violations[0].what.contains("inconclusive"), "{}", violations[0].what);
    assert_eq!(violations[0].entries.len(), 3, "the login and both probes are shown");
    // A refresh token presented once in doubt, then probed without an answer.
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.refresh(OpKind::Refresh, 1, "r1", None, 100, Outcome::Unknown("transport".into()));
    script.refresh(OpKind::Probe, 1, "r1", None, 900, Outcome::Pending);
    let violations = check_i1(&script.0);
    assert_eq!(invariants(&violations), ["I1"]);
    assert!(violations[0].what.contains("inconclusive"), "{}", violations[0].what);
    // The same with one definite answer among the presentations passes (a refusal after an unknown rotation is
    // the reuse of a token that rotation may have spent).
    script.refresh(OpKind::Probe, 1, "r1", None, 1900, refused());
    assert!(check_i1(&script.0).is_empty(), "{:?}", check_i1(&script.0));
    // An exchange answered only by unknowns, then probed ok.
    let mut script = Script::default();
    let issued = script.op(OpKind::Login, 0, 10, Outcome::Ok);
    issued.login = Some(2);
    issued.code = Some("c2".into());
    script.code_spend(OpKind::Exchange, 2, "c2", 50, Outcome::Unknown("http_503".into()));
    assert_eq!(invariants(&check_i1(&script.0)), ["I1"]);
    script.code_spend(OpKind::Probe, 2, "c2", 900, Outcome::Ok);
    assert!(check_i1(&script.0).is_empty(), "{:?}", check_i1(&script.0));
}

#[test]
fn i1_excuses_families_revoked_on_purpose_and_unacknowledged_records() {
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 100, Outcome::Ok);
    script.refresh(OpKind::ReuseRefresh, 1, "r1", None, 200, refused());
    script.refresh(OpKind::Probe, 1, "r2", None, 900, refused());
    // A replayed code revokes the family it gave; so does a logout.
    script.login_and_exchange(2, "c2", "r20", 0);
    script.code_spend(OpKind::ReplayCode, 2, "c2", 50, refused());
    script.refresh(OpKind::Refresh, 2, "r20", None, 60, refused());
    script.login_and_exchange(3, "c3", "r30", 0);
    let logout = script.op(OpKind::Logout, 70, 5, Outcome::Ok);
    logout.login = Some(3);
    // A login whose outcome is unknown acknowledged nothing.
    let unknown = script.op(OpKind::Login, 300, 10, Outcome::Unknown("timeout".into()));
    unknown.code = Some("c3".into());
    // A retry after an unknown exchange may be refused: only the first redemption counts.
    let issued = script.op(OpKind::Login, 400, 10, Outcome::Ok);
    issued.code = Some("c4".into());
    script.code_spend(OpKind::Exchange, 4, "c4", 420, Outcome::Unknown("http_503".into()));
    script.code_spend(OpKind::Exchange, 4, "c4", 1500, refused());
    assert!(check_i1(&script.0).is_empty(), "{:?}", check_i1(&script.0));
}

// ---- I2 ----

#[test]
fn i2_passes_when_replays_are_refused() {
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.code_spend(OpKind::ReplayCode, 1, "c1", 100, refused());
    script.code_spend(OpKind::ReplayCode, 1, "c1", 200, Outcome::Unknown("timeout".into()));
    assert!(check_i2(&script.0).is_empty());
}

#[test]
fn i2_fails_when_a_code_is_redeemed_twice() {
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.code_spend(OpKind::ReplayCode, 1, "c1", 100, Outcome::Ok);
    let violations = check_i2(&script.0);
    assert_eq!(invariants(&violations), ["I2"]);
    assert_eq!(violations[0].entries.len(), 2);
    // Two concurrent exchanges both answered ok count the same.
    let mut racing = Script::default();
    racing.code_spend(OpKind::Exchange, 1, "c7", 0, Outcome::Ok);
    racing.code_spend(OpKind::Exchange, 1, "c7", 0, Outcome::Ok);
    racing.code_spend(OpKind::Exchange, 1, "c8", 0, Outcome::Ok);
    assert_eq!(invariants(&check_i2(&racing.0)), ["I2"]);
}

/// A presentation of login `login`'s family after a revocation: its refresh token, or (`None`) its access token at
/// `/userinfo`.
fn after_revocation(script: &mut Script, login: u64, refresh: Option<&str>, at_ms: u64, outcome: Outcome) {
    let entry = script.op(OpKind::AfterRevocation, at_ms, 10, outcome);
    entry.login = Some(login);
    entry.refresh_in = refresh.map(str::to_string);
}

#[test]
fn i2_passes_when_a_refused_replay_revoked_what_the_code_gave() {
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 100, Outcome::Ok);
    script.code_spend(OpKind::ReplayCode, 1, "c1", 200, refused());
    after_revocation(&mut script, 1, Some("r2"), 300, refused());
    after_revocation(&mut script, 1, None, 310, Outcome::Fail("invalid_token".into()));
    // Another family, untouched by the replay, still rotates.
    script.login_and_exchange(2, "c2", "s1", 0);
    script.refresh(OpKind::Refresh, 2, "s1", Some("s2"), 400, Outcome::Ok);
    script.refresh(OpKind::Probe, 2, "s2", Some("s3"), 900, Outcome::Ok);
    assert!(check_i2(&script.0).is_empty(), "{:?}", check_i2(&script.0));
    assert!(check(&script.0, &Facts::default()).violated().is_empty());
}

#[test]
fn i2_fails_when_a_refused_replay_left_the_family_alive() {
    for refresh in [Some("r2"), None] {
        let mut script = Script::default();
        script.login_and_exchange(1, "c1", "r1", 0);
        script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 100, Outcome::Ok);
        script.code_spend(OpKind::ReplayCode, 1, "c1", 200, refused());
        after_revocation(&mut script, 1, refresh, 300, Outcome::Ok);
        let violations = check_i2(&script.0);
        assert_eq!(invariants(&violations), ["I2"], "{refresh:?}");
        assert!(violations[0].what.contains("did not revoke"));
        assert_eq!(violations[0].entries.len(), 2);
    }
    // A probe rotating the family after the refused replay is the same violation.
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.code_spend(OpKind::ReplayCode, 1, "c1", 200, refused());
    script.refresh(OpKind::Probe, 1, "r1", Some("r2"), 900, Outcome::Ok);
    assert_eq!(invariants(&check_i2(&script.0)), ["I2"]);
    // An unanswered replay may not have reached the store: nothing is demanded after it.
    let mut unknown = Script::default();
    unknown.login_and_exchange(1, "c1", "r1", 0);
    unknown.code_spend(OpKind::ReplayCode, 1, "c1", 200, Outcome::Unknown("timeout".into()));
    after_revocation(&mut unknown, 1, Some("r1"), 300, Outcome::Ok);
    assert!(check_i2(&unknown.0).is_empty());
}

// ---- I3 ----

#[test]
fn i3_passes_for_a_rotation_chain_with_a_refused_reuse() {
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 100, Outcome::Ok);
    script.refresh(OpKind::Refresh, 1, "r2", Some("r3"), 200, Outcome::Ok);
    script.refresh(OpKind::ReuseRefresh, 1, "r1", None, 300, refused());
    script.refresh(OpKind::Refresh, 1, "r3", None, 400, refused());
    assert!(check_i3(&script.0).is_empty(), "{:?}", check_i3(&script.0));
}

#[test]
fn i3_fails_when_a_refresh_token_is_accepted_twice() {
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 100, Outcome::Ok);
    script.refresh(OpKind::ReuseRefresh, 1, "r1", Some("r2b"), 200, Outcome::Ok);
    let violations = check_i3(&script.0);
    assert_eq!(invariants(&violations), ["I3"]);
    assert!(violations[0].what.contains("accepted more than once"));
}

#[test]
fn i3_fails_when_a_refused_reuse_did_not_revoke_the_family() {
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 100, Outcome::Ok);
    script.refresh(OpKind::ReuseRefresh, 1, "r1", None, 200, refused());
    script.refresh(OpKind::Refresh, 1, "r2", Some("r3"), 300, Outcome::Ok);
    let violations = check_i3(&script.0);
    assert_eq!(invariants(&violations), ["I3"]);
    assert!(violations[0].what.contains("still rotates"));
    // The deliberate presentation after the reuse, answered ok, shows the same.
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 100, Outcome::Ok);
    script.refresh(OpKind::ReuseRefresh, 1, "r1", None, 200, refused());
    after_revocation(&mut script, 1, None, 300, Outcome::Ok);
    assert_eq!(invariants(&check_i3(&script.0)), ["I3"]);
}

// ---- I4 ----

fn signed(key: &SigningKey, issuer: &str) -> String {
    key.sign_jwt("JWT", &json!({ "iss": issuer, "sub": "alice", "exp": 4_000_000_000u64 }))
}

fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| key.public_jwk()).collect::<Vec<_>>() })
}

#[test]
fn i4_passes_when_every_token_verifies_against_every_jwks() {
    let current = SigningKey::generate(Algorithm::ES256).unwrap();
    let next = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut script = Script::default();
    script.op(OpKind::ClientCredentials, 0, 5, Outcome::Ok).tokens = vec![signed(&current, ISSUER)];
    script.op(OpKind::Exchange, 10, 5, Outcome::Ok).tokens = vec![signed(&next, ISSUER), signed(&current, ISSUER)];
    // Tokens of operations that did not succeed are not the provider's promise.
    script.op(OpKind::ClientCredentials, 20, 5, Outcome::Unknown("timeout".into())).tokens = vec!["junk".into()];
    let facts = Facts {
        issuer: ISSUER.into(),
        jwks: vec![("node-1".into(), jwks(&[&current, &next])), ("node-2".into(), jwks(&[&next, &current]))],
        ..Facts::default()
    };
    let (verified, violations) = check_i4(&script.0, &facts);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(verified, 6);
}

#[test]
fn i4_fails_for_an_unpublished_key_a_missing_key_on_one_node_or_a_foreign_issuer() {
    let published = SigningKey::generate(Algorithm::ES256).unwrap();
    let unpublished = SigningKey::generate(Algorithm::ES256).unwrap();
    let facts = |jwks: Vec<(String, Value)>| Facts { issuer: ISSUER.into(), jwks, ..Facts::default() };

    let mut script = Script::default();
    script.op(OpKind::ClientCredentials, 0, 5, Outcome::Ok).tokens = vec![signed(&unpublished, ISSUER)];
    let (_, violations) = check_i4(&script.0, &facts(vec![("node-1".into(), jwks(&[&published]))]));
    assert_eq!(invariants(&violations), ["I4"]);
    assert!(violations[0].what.contains("node-1"));

    let mut script = Script::default();
    script.op(OpKind::ClientCredentials, 0, 5, Outcome::Ok).tokens = vec![signed(&published, ISSUER)];
    let lagging = vec![("node-1".into(), jwks(&[&published])), ("node-2".into(), jwks(&[&unpublished]))];
    let (verified, violations) = check_i4(&script.0, &facts(lagging));
    assert_eq!((verified, invariants(&violations)), (1, vec!["I4"]));
    assert!(violations[0].what.contains("node-2"));

    let mut script = Script::default();
    script.op(OpKind::ClientCredentials, 0, 5, Outcome::Ok).tokens = vec![signed(&published, "http://evil")];
    let (_, violations) = check_i4(&script.0, &facts(vec![("node-1".into(), jwks(&[&published]))]));
    assert_eq!(invariants(&violations), ["I4"]);
}

// ---- I5 ----

#[test]
fn i4_sampled_fails_for_a_key_used_before_every_node_published_it() {
    let old = SigningKey::generate(Algorithm::ES256).unwrap();
    let early = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut script = Script::default();
    script.op(OpKind::ClientCredentials, 1000, 10, Outcome::Ok).tokens = vec![signed(&old, ISSUER)];
    script.op(OpKind::ClientCredentials, 2000, 10, Outcome::Ok).tokens = vec![signed(&early, ISSUER)];
    // Consecutive equal samples merge; node-2 publishes the early key only from 3 s on, node-1 from 1.5 s.
    let mut samples = Vec::new();
    for at in [0, 200, 400, 1200, 1400] {
        JwksSample::record(&mut samples, "node-1", Duration::from_millis(at), jwks(&[&old]));
    }
    for at in [1600, 1800, 5000] {
        JwksSample::record(&mut samples, "node-1", Duration::from_millis(at), jwks(&[&old, &early]));
    }
    for at in [0, 2200, 2800] {
        JwksSample::record(&mut samples, "node-2", Duration::from_millis(at), jwks(&[&old]));
    }
    JwksSample::record(&mut samples, "node-2", Duration::from_millis(3000), jwks(&[&old, &early]));
    assert_eq!(samples.len(), 4, "{samples:?}");
    assert_eq!((samples[0].first, samples[0].last), (Duration::ZERO, Duration::from_millis(1400)));
    // The final JWKS of both nodes has both keys: the check after the run sees nothing.
    let facts = Facts {
        issuer: ISSUER.into(),
        jwks: vec![("node-1".into(), jwks(&[&old, &early])), ("node-2".into(), jwks(&[&old, &early]))],
        ..Facts::default()
    };
    assert!(check_i4(&script.0, &facts).1.is_empty());
    // The samples do: node-2 served a JWKS without the early key at 2.2 s and 2.8 s, after the token's issue.
    let violations = check_i4_sampled(&script.0, &samples, ISSUER);
    assert_eq!(invariants(&violations), ["I4"]);
    assert!(violations[0].what.contains("node-2 served between 0 and 2800 ms"), "{}", violations[0].what);
    assert!(violations[0].what.contains("not published"), "{}", violations[0].what);
    // Had node-2 published it before the token was issued, nothing is reported.
    let mut published = samples.clone();
    published[2].last = Duration::from_millis(1900);
    assert!(check_i4_sampled(&script.0, &published, ISSUER).is_empty());
    // A sample with the kid but another key is a violation too.
    let impostor = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut forged = jwks(&[&impostor]);
    forged["keys"][0]["kid"] = json!(tokens::kid_of(&script.0[0].tokens[0]).unwrap());
    let mut forged_samples = Vec::new();
    JwksSample::record(&mut forged_samples, "node-3", Duration::from_millis(1500), forged);
    assert_eq!(invariants(&check_i4_sampled(&script.0, &forged_samples, ISSUER)), ["I4"]);
}

fn login_attempt(script: &mut Script, login: u64, attempt: u32, at_ms: u64, outcome: Outcome) {
    let entry = script.op(OpKind::Login, at_ms, 10, outcome);
    entry.login = Some(login);
    entry.attempt = attempt;
}

#[test]
fn i5_passes_for_logins_completed_within_one_retry() {
    let mut script = Script::default();
    login_attempt(&mut script, 1, 0, 0, Outcome::Ok);
    login_attempt(&mut script, 2, 0, 0, Outcome::Unknown("connect".into()));
    login_attempt(&mut script, 2, 1, 1000, Outcome::Ok);
    assert!(check_i5(&script.0, 1).is_empty());
}

#[test]
fn logins_restarted_from_authorize_are_counted_apart() {
    let mut script = Script::default();
    login_attempt(&mut script, 1, 0, 0, Outcome::Ok);
    login_attempt(&mut script, 2, 0, 0, Outcome::Unknown("timeout".into()));
    login_attempt(&mut script, 2, 1, 100, Outcome::Ok);
    login_attempt(&mut script, 3, 0, 0, Outcome::Unknown("timeout".into()));
    assert_eq!(logins_restarted(&script.0), 1);
    assert_eq!(check(&script.0, &Facts::default()).logins_restarted, 1);
}

#[test]
fn i5_fails_for_a_login_that_never_completed_or_needed_two_retries() {
    let mut script = Script::default();
    login_attempt(&mut script, 1, 0, 0, Outcome::Unknown("connect".into()));
    login_attempt(&mut script, 1, 1, 1000, Outcome::Fail("http_400".into()));
    login_attempt(&mut script, 2, 0, 0, Outcome::Unknown("timeout".into()));
    login_attempt(&mut script, 2, 1, 1000, Outcome::Unknown("timeout".into()));
    login_attempt(&mut script, 2, 2, 2000, Outcome::Ok);
    let violations = check_i5(&script.0, 1);
    assert_eq!(invariants(&violations), ["I5", "I5"]);
    assert!(violations[0].what.contains("never completed"));
    assert!(violations[1].what.contains("needed 2 retries"));
    assert!(check_i5(&script.0[2..], 2).is_empty(), "a looser bound accepts the second login");
}

// ---- I6 ----

#[test]
fn i6_is_judged_on_the_redis_stream_when_there_is_one() {
    let client = "1.0 [0 127.0.0.1:5000]";
    let lua = "1.0 [0 lua]";
    let taken =
        |node: &str, epoch: u64| format!("{lua} \"SET\" \"idp:lease:shard:3\" \"{node} {epoch}\" \"PX\" \"3000\"\n");
    let write = |epoch: u64| {
        format!(
            "{client} \"evalsha\" \"x\" \"2\" \"idp:epoch:shard:3\" \"idp:r:3:cQ\" \"{epoch}\" \"1\" \"v\"\n\
             {lua} \"GET\" \"idp:epoch:shard:3\"\n{lua} \"SET\" \"idp:r:3:cQ\" \"v\" \"PXAT\" \"1\"\n"
        )
    };
    let clean = redis_log::parse(&[taken("node-1", 1), write(1), taken("node-2", 2), write(2)].concat());
    assert!(check_i6(Some(&clean)).is_empty());
    assert!(check_i6(None).is_empty(), "no stream, no judgement");
    let stale = redis_log::parse(&[taken("node-1", 1), taken("node-2", 2), write(1)].concat());
    let violations = check_i6(Some(&stale));
    assert_eq!(invariants(&violations), ["I6"]);
    assert!(violations[0].what.contains("carrying epoch Some(1) while the shard was at 2"), "{}", violations[0]);
}

// ---- I7 ----

#[test]
fn i7_measures_from_the_fault_to_the_end_of_the_last_disturbed_window() {
    let mut script = Script::default();
    script.op(OpKind::ClientCredentials, 900, 50, Outcome::Unknown("connect".into())); // before the fault
    script.op(OpKind::ClientCredentials, 1000, 30, Outcome::Unknown("connect".into()));
    script.op(OpKind::Refresh, 1500, 230, Outcome::Fail("temporarily_unavailable".into())); // ends 1730
    script.op(OpKind::ReplayCode, 2500, 10, refused()); // expected refusal: not a disturbance
    script.op(OpKind::ClientCredentials, 2600, 10, Outcome::Ok);
    let faults = vec![(Duration::from_millis(1000), "kill node-2".to_string())];
    let (figures, violations) = check_i7(&script.0, &faults, Duration::from_secs(2));
    assert!(violations.is_empty());
    assert_eq!(figures, vec![("kill node-2".to_string(), Duration::from_millis(800))]);
}

#[test]
fn i7_counts_slow_operations_and_fails_over_the_bound() {
    let mut script = Script::default();
    script.op(OpKind::Userinfo, 1000, 3000, Outcome::Ok); // ends at 4000 after 3 s: slow
    script.op(OpKind::Userinfo, 6000, 5, Outcome::Unknown("timeout".into())); // after the second fault
    script.op(OpKind::Refresh, 4900, 200, Outcome::Unknown("timeout".into())); // spans it: counts for the first
    let faults =
        vec![(Duration::from_millis(1000), "stop".to_string()), (Duration::from_millis(5000), "kill".to_string())];
    let (figures, violations) = check_i7(&script.0, &faults, Duration::from_millis(2500));
    assert_eq!(figures[0].1, Duration::from_millis(4200));
    assert_eq!(figures[1].1, Duration::from_millis(1100));
    assert_eq!(invariants(&violations), ["I7"]);
    assert!(violations[0].what.contains("after stop took 4200 ms"));
    let (figures, _) = check_i7(&[], &faults, Duration::from_secs(1));
    assert!(figures.iter().all(|(_, took)| took.is_zero()), "no disturbance, no recovery time");
}

#[test]
fn i7_demands_successes_after_the_recovery_including_on_the_victims_shards() {
    let faults = vec![(Duration::from_millis(1000), "kill node-2".to_string())];
    let bounds = Bounds { min_ok_after_recovery: 4, min_ok_on_victim_shards: 2, ..Bounds::default() };
    let victim = BTreeMap::from([(0, BTreeSet::from([7, 9]))]);
    let mut script = Script::default();
    // Load before the fault does not count.
    for at in [0, 100, 200, 300, 400] {
        script.op(OpKind::ClientCredentials, at, 10, Outcome::Ok);
    }
    script.op(OpKind::Refresh, 1000, 500, Outcome::Unknown("timeout".into())); // recovery: 600 ms
    let figures = check_i7(&script.0, &faults, Duration::from_secs(2)).0;
    assert_eq!(figures[0].1, Duration::from_millis(600));
    // Nothing ran after the fault: a recovery of 600 ms proves nothing.
    let violations = check_i7_progress(&script.0, &faults, &figures, &victim, &bounds);
    assert_eq!(invariants(&violations), ["I7", "I7"]);
    assert!(violations[0].what.contains("only 0 operations succeeded"), "{}", violations[0].what);
    assert!(violations[1].what.contains("only 0 exchanges or rotations"), "{}", violations[1].what);
    // Successes after it, but none on the victim's shards (a refused replay and a probe count for nothing).
    for (at, shard) in [(1700, 1), (1800, 2), (1900, 3)] {
        script.op(OpKind::Refresh, at, 10, Outcome::Ok).shard = Some(shard);
    }
    script.op(OpKind::ReplayCode, 1950, 10, refused()).shard = Some(7);
    script.op(OpKind::Probe, 5000, 10, Outcome::Ok).shard = Some(7);
    script.op(OpKind::Exchange, 2000, 10, Outcome::Ok).shard = Some(7);
    let violations = check_i7_progress(&script.0, &faults, &figures, &victim, &bounds);
    assert_eq!(invariants(&violations), ["I7"]);
    assert!(violations[0].what.contains("only 1 exchanges or rotations succeeded on the 2 shards"));
    // One more on the victim's shards: enough.
    script.op(OpKind::Refresh, 2100, 10, Outcome::Ok).shard = Some(9);
    assert!(check_i7_progress(&script.0, &faults, &figures, &victim, &bounds).is_empty());
    // Without known victim shards only the count is demanded.
    assert!(check_i7_progress(&script.0, &faults, &figures, &BTreeMap::new(), &bounds).is_empty());
}

// ---- the whole ----

#[test]
fn check_reports_every_violation_and_prints_the_offending_history() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let other = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut script = Script::default();
    script.login_and_exchange(1, "c1", "r1", 0);
    script.0[1].tokens = vec![signed(&other, ISSUER)];
    script.code_spend(OpKind::ReplayCode, 1, "c1", 100, Outcome::Ok);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2"), 200, Outcome::Ok);
    script.refresh(OpKind::Refresh, 1, "r1", Some("r2b"), 300, Outcome::Ok);
    script.refresh(OpKind::Probe, 1, "r2", None, 900, refused());
    login_attempt(&mut script, 5, 0, 500, refused());
    script.op(OpKind::Login, 600, 10, Outcome::Ok).code = Some("c9".into());
    let facts = Facts {
        issuer: ISSUER.into(),
        jwks: vec![("node-1".into(), jwks(&[&key]))],
        faults: vec![(Duration::ZERO, "kill".into())],
        bounds: Bounds { max_login_retries: 1, recovery: Duration::from_millis(100), ..Bounds::default() },
        redis_streams: Vec::new(),
        redis_epochs: Vec::new(),
        victim_shards: BTreeMap::new(),
        jwks_samples: Vec::new(),
    };
    let report = check(&script.0, &facts);
    assert!(!report.is_clean());
    assert_eq!(report.violated().into_iter().collect::<Vec<_>>(), ["I1", "I2", "I3", "I4", "I5", "I7"]);
    let printed = report.to_string();
    assert!(printed.contains("I2 violated: code c1 redeemed more than once"), "{printed}");
    assert!(printed.contains("ReplayCode on node-1"), "{printed}");
    assert!(!printed.contains(&script.0[1].tokens[0]), "tokens are never printed");

    let mut clean = Script::default();
    clean.login_and_exchange(1, "c1", "r1", 0);
    clean.0[1].tokens = vec![signed(&key, ISSUER)];
    clean.refresh(OpKind::Probe, 1, "r1", Some("r2"), 900, Outcome::Ok);
    let report = check(&clean.0, &Facts { faults: Vec::new(), ..facts });
    assert!(report.is_clean(), "{report}");
    assert_eq!((report.operations, report.ok, report.tokens_verified), (3, 3, 1));
}
