//! The shard model as pure state changes: exhaustive where the state space is small (code redemption, PKCE,
//! throttling), a seeded random walk where it is not (refresh rotation), and short scenarios for the rest.
//!
//! Each test decides an operation against a [`ShardState`] built from records, then applies the writes the way the
//! actor does once the replica acknowledged them ([`run`]).

use super::*;
use idp_proto::records::{Prompt, ResponseMode, ResponseType};
use std::collections::HashSet;

const NOW: u64 = 1_750_000_000_000;
const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

const CLIENT: &str = "client-a";
const OTHER_CLIENT: &str = "client-b";
const REDIRECT_URI: &str = "https://rp.example/callback";
const USER: &str = "user-alice";
const OTHER_USER: &str = "user-bob";

/// RFC 7636 Appendix B: a code verifier, the SHA-256 octets of its ASCII, and their base64url (the S256 challenge).
const RFC7636_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const RFC7636_CHALLENGE_OCTETS: [u8; 32] = [
    19, 211, 30, 150, 26, 26, 216, 236, 47, 22, 177, 12, 76, 152, 46, 8, 118, 168, 120, 173, 109, 241, 68, 86, 110,
    225, 137, 74, 203, 112, 249, 195,
];
const RFC7636_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

// Record ids of the fixtures.
const PENDING: u64 = 1;
const SESSION: u64 = 2;
const OTHER_SESSION: u64 = 3;
const NEW_SESSION: u64 = 4;
const GRANT: u64 = 5;
const CODE: u64 = 6;
const REFRESH: u64 = 7;
const NEW_REFRESH: u64 = 8;
const THROTTLE: u64 = 9;
const CONSENT: u64 = 10;
const JTI: u64 = 11;

// ---------------------------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------------------------

fn id(number: u64) -> RecordId {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&number.to_be_bytes());
    RecordId(bytes)
}

fn scopes(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn authentication(user_id: &str, auth_time: u64) -> Authentication {
    Authentication { user_id: user_id.into(), auth_time, amr: vec!["pwd".into()], acr: None }
}

fn authorization_request(scope_names: &[&str]) -> AuthorizationRequest {
    AuthorizationRequest {
        client_id: CLIENT.into(),
        redirect_uri: REDIRECT_URI.into(),
        response_type: ResponseType { code: true, id_token: false, token: false },
        response_mode: ResponseMode::Query,
        scopes: scopes(scope_names),
        state: Some("af0ifjsldkj".into()),
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: Some(RFC7636_CHALLENGE.into()),
        prompt: Prompt::default(),
        max_age: None,
        login_hint: None,
        idp_hint: None,
        ui_locales: None,
        acr_values: None,
        resource: Some("https://api.example".into()),
    }
}

fn pending(stage: PendingStage) -> PendingAuthorization {
    PendingAuthorization {
        request: authorization_request(&["openid", "offline_access"]),
        stage,
        created_at_ms: NOW,
        expires_at_ms: NOW + 10 * MINUTE,
    }
}

fn session(user_id: &str, grants: Vec<RecordId>) -> Session {
    Session {
        authentication: authentication(user_id, NOW / SECOND - 600),
        sid: format!("sid-of-{user_id}"),
        grants: grants.into_iter().map(|id| SessionGrant { id, expires_at_ms: NOW + HOUR }).collect(),
        created_at_ms: NOW - HOUR,
        expires_at_ms: NOW + HOUR,
    }
}

fn grant_ids(session: &Session) -> Vec<RecordId> {
    session.grants.iter().map(|grant| grant.id).collect()
}

fn grant(client_id: &str, scope_names: &[&str]) -> Grant {
    Grant {
        client_id: client_id.into(),
        authentication: authentication(USER, NOW / SECOND - 60),
        scopes: scopes(scope_names),
        nonce: Some("n-0S6_WzA2Mj".into()),
        session: Some(id(SESSION)),
        sid: Some(format!("sid-of-{USER}")),
        resource: None,
        offline: scope_names.contains(&"offline_access"),
        revoked: false,
        created_at_ms: NOW - MINUTE,
        expires_at_ms: NOW + 30 * DAY,
    }
}

fn code(grant_id: RecordId, challenge: Option<&str>) -> AuthCode {
    AuthCode {
        grant: grant_id,
        client_id: CLIENT.into(),
        redirect_uri: REDIRECT_URI.into(),
        code_challenge: challenge.map(str::to_string),
        consumed: false,
        redeemed_with: None,
        expires_at_ms: NOW + MINUTE,
    }
}

fn refresh_token(grant_id: RecordId, grant: &Grant) -> RefreshToken {
    RefreshToken {
        grant: grant_id,
        client_id: grant.client_id.clone(),
        used: false,
        rotated_to: None,
        expires_at_ms: grant.expires_at_ms,
    }
}

/// A record under its id, for [`state_with`].
fn entry(record_id: u64, record: Record) -> (RecordKey, Record) {
    (key(record.kind(), id(record_id)), record)
}

fn write(record_id: u64, record: Record) -> (RecordKey, Option<Record>) {
    (key(record.kind(), id(record_id)), Some(record))
}

fn delete(kind: RecordKind, record_id: u64) -> (RecordKey, Option<Record>) {
    (key(kind, id(record_id)), None)
}

fn state_with(records: Vec<(RecordKey, Record)>) -> ShardState {
    let writes: Vec<_> = records.into_iter().map(|(record_key, record)| (record_key, Some(record))).collect();
    let mut state = ShardState::default();
    state.apply(&writes);
    state
}

/// Decides, then applies the writes as the actor does once the replica acknowledged them.
fn run<O: ShardOp>(state: &mut ShardState, op: O, now_ms: u64) -> Decision<O::Output> {
    let decision = op.decide(state, now_ms);
    state.apply(&decision.writes);
    decision
}

fn must_run<O: ShardOp>(state: &mut ShardState, op: O, now_ms: u64) -> O::Output {
    match run(state, op, now_ms).reply {
        Ok(output) => output,
        Err(error) => panic!("{} was refused: {error:?}", std::any::type_name::<O>()),
    }
}

fn must_grant(state: &ShardState, grant_id: RecordId, now_ms: u64) -> Grant {
    grant_of(state, grant_id, now_ms).expect("the grant is live")
}

fn must_refresh(state: &ShardState, refresh_id: RecordId, now_ms: u64) -> RefreshToken {
    refresh_of(state, refresh_id, now_ms).expect("the refresh token is live")
}

// ---------------------------------------------------------------------------------------------------------------
// Code redemption: every combination of the conditions of RFC 6749 §4.1.3 and RFC 7636 §4.6
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeCondition {
    Unknown,
    Expired,
    Fresh,
    Consumed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RedirectCondition {
    Same,
    Absent,
    Different,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VerifierCondition {
    Absent,
    Valid,
    Wrong,
    TooShort,
    TooLong,
    BadCharacters,
}

impl VerifierCondition {
    const ALL: [Self; 6] = [Self::Absent, Self::Valid, Self::Wrong, Self::TooShort, Self::TooLong, Self::BadCharacters];

    fn verifier(self) -> Option<String> {
        match self {
            Self::Absent => None,
            Self::Valid => Some(RFC7636_VERIFIER.into()),
            // Well formed (43 unreserved characters), but not the one behind the challenge.
            Self::Wrong => Some("A".repeat(43)),
            Self::TooShort => Some(RFC7636_VERIFIER[..42].into()),
            Self::TooLong => Some("a".repeat(129)),
            Self::BadCharacters => Some(RFC7636_VERIFIER.replacen('-', "+", 1)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Redemption {
    code: CodeCondition,
    same_client: bool,
    redirect: RedirectCondition,
    challenge: bool,
    verifier: VerifierCondition,
    grant_revoked: bool,
    offline_scope: bool,
    client_may_refresh: bool,
}

const BOOLS: [bool; 2] = [false, true];

impl Redemption {
    fn all() -> Vec<Self> {
        let mut cases = Vec::new();
        for code in [CodeCondition::Unknown, CodeCondition::Expired, CodeCondition::Fresh, CodeCondition::Consumed] {
            for same_client in BOOLS {
                for redirect in [RedirectCondition::Same, RedirectCondition::Absent, RedirectCondition::Different] {
                    for challenge in BOOLS {
                        for verifier in VerifierCondition::ALL {
                            for grant_revoked in BOOLS {
                                for offline_scope in BOOLS {
                                    for client_may_refresh in BOOLS {
                                        cases.push(Self {
                                            code,
                                            same_client,
                                            redirect,
                                            challenge,
                                            verifier,
                                            grant_revoked,
                                            offline_scope,
                                            client_may_refresh,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        cases
    }

    fn state(&self) -> ShardState {
        let scope_names: &[&str] =
            if self.offline_scope { &["openid", "offline_access"] } else { &["openid", "profile"] };
        let mut stored_grant = grant(CLIENT, scope_names);
        stored_grant.revoked = self.grant_revoked;
        let mut records = vec![entry(GRANT, Record::Grant(stored_grant))];
        let mut stored_code = code(id(GRANT), self.challenge.then_some(RFC7636_CHALLENGE));
        match self.code {
            CodeCondition::Unknown => {}
            CodeCondition::Expired => stored_code.expires_at_ms = NOW,
            CodeCondition::Fresh => {}
            CodeCondition::Consumed => stored_code.consumed = true,
        }
        if self.code != CodeCondition::Unknown {
            records.push(entry(CODE, Record::Code(stored_code)));
        }
        state_with(records)
    }

    fn request(&self) -> RedeemCode {
        RedeemCode {
            code: id(CODE),
            client_id: if self.same_client { CLIENT } else { OTHER_CLIENT }.into(),
            redirect_uri: match self.redirect {
                RedirectCondition::Same => Some(REDIRECT_URI.into()),
                RedirectCondition::Absent => None,
                RedirectCondition::Different => Some("https://rp.example/other".into()),
            },
            code_verifier: self.verifier.verifier(),
            client_may_refresh: self.client_may_refresh,
            new_refresh: id(NEW_REFRESH),
        }
    }
}

/// The correct request for the code of a case: its client, its redirect URI, the verifier of its challenge.
fn correct_redemption(challenge: bool) -> RedeemCode {
    RedeemCode {
        code: id(CODE),
        client_id: CLIENT.into(),
        redirect_uri: Some(REDIRECT_URI.into()),
        code_verifier: challenge.then(|| RFC7636_VERIFIER.into()),
        client_may_refresh: true,
        new_refresh: id(NEW_REFRESH + 1),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Tokens { refresh: bool },
    Refused(&'static str),
    Replayed { revokes_grant: bool },
}

const INVALID_CODE: &str = "authorization code is invalid or expired";

/// What the specs ask for, worked out from the case alone.
fn expected_outcome(case: &Redemption) -> Outcome {
    match case.code {
        CodeCondition::Unknown | CodeCondition::Expired => return Outcome::Refused(INVALID_CODE),
        // I2, RFC 6749 §4.1.2: a second use is refused and revokes what the code issued.
        CodeCondition::Consumed => return Outcome::Replayed { revokes_grant: !case.grant_revoked },
        CodeCondition::Fresh => {}
    }
    // RFC 6749 §4.1.3: the code was issued to the authenticated client.
    if !case.same_client {
        return Outcome::Refused("authorization code was issued to another client");
    }
    // RFC 6749 §4.1.3: redirect_uri was in the authorization request (OIDC Core §3.1.2.1 requires it): identical.
    if case.redirect != RedirectCondition::Same {
        return Outcome::Refused("redirect_uri does not match the authorization request");
    }
    let pkce = match (case.challenge, case.verifier) {
        (true, VerifierCondition::Valid) | (false, VerifierCondition::Absent) => None,
        // RFC 7636 §4.5: a code issued with a challenge needs the verifier.
        (true, VerifierCondition::Absent) => Some("code_verifier is required"),
        // RFC 7636 §4.1: 43 to 128 unreserved characters.
        (true, VerifierCondition::TooShort | VerifierCondition::TooLong | VerifierCondition::BadCharacters) => {
            Some("code_verifier is malformed")
        }
        // RFC 7636 §4.6: BASE64URL(SHA256(verifier)) == challenge.
        (true, VerifierCondition::Wrong) => Some("code_verifier does not match the code_challenge"),
        // RFC 9700 §2.1.1: a verifier for a code issued without a challenge is a downgrade attempt.
        (false, _) => Some("code_verifier sent but no code_challenge was"),
    };
    if let Some(reason) = pkce {
        return Outcome::Refused(reason);
    }
    if case.grant_revoked {
        return Outcome::Refused(INVALID_CODE);
    }
    // OIDC Core §11: a refresh token only for offline_access, and only to a client allowed to refresh.
    Outcome::Tokens { refresh: case.offline_scope && case.client_may_refresh }
}

fn expected_writes(case: &Redemption, outcome: Outcome, state: &ShardState) -> Vec<(RecordKey, Option<Record>)> {
    let stored_grant = must_grant(state, id(GRANT), NOW);
    match outcome {
        Outcome::Tokens { refresh } => {
            let mut consumed = code(id(GRANT), case.challenge.then_some(RFC7636_CHALLENGE));
            consumed.consumed = true;
            consumed.redeemed_with = Some(id(NEW_REFRESH));
            let mut writes = vec![write(CODE, Record::Code(consumed))];
            if refresh {
                let token = refresh_token(id(GRANT), &stored_grant);
                writes.push(write(NEW_REFRESH, Record::Refresh(token)));
            }
            writes
        }
        Outcome::Refused(_) | Outcome::Replayed { revokes_grant: false } => Vec::new(),
        Outcome::Replayed { revokes_grant: true } => {
            let revoked = Grant { revoked: true, ..stored_grant };
            vec![write(GRANT, Record::Grant(revoked))]
        }
    }
}

fn expected_reply(outcome: Outcome, state: &ShardState) -> ShardResult<GrantTokens> {
    let stored_grant = must_grant(state, id(GRANT), NOW);
    match outcome {
        Outcome::Tokens { refresh } => Ok(GrantTokens {
            grant_id: id(GRANT),
            scopes: stored_grant.scopes.clone(),
            grant: stored_grant,
            refresh: refresh.then_some(id(NEW_REFRESH)),
        }),
        Outcome::Refused(reason) => Err(ShardError::InvalidGrant(reason.into())),
        Outcome::Replayed { .. } => Err(ShardError::CodeReplayed),
    }
}

/// After the first decision: a redeemed code is never redeemed again (I2), a refused one was not consumed.
fn check_what_follows(case: &Redemption, outcome: Outcome, state: &mut ShardState) {
    let again = run(state, correct_redemption(case.challenge), NOW + 1);
    match outcome {
        Outcome::Tokens { refresh } => {
            assert_eq!(again.reply, Err(ShardError::CodeReplayed), "{case:?}");
            assert!(must_grant(state, id(GRANT), NOW).revoked, "{case:?}");
            if refresh {
                let rotate = RotateRefresh {
                    refresh: id(NEW_REFRESH),
                    client_id: CLIENT.into(),
                    scopes: None,
                    new_refresh: id(NEW_REFRESH + 2),
                };
                let refused = Err(ShardError::InvalidGrant("refresh token was revoked".into()));
                assert_eq!(run(state, rotate, NOW + 2).reply, refused, "{case:?}");
            }
        }
        Outcome::Refused(_) if case.code == CodeCondition::Fresh && !case.grant_revoked => {
            assert!(again.reply.is_ok(), "a refused attempt consumed the code: {case:?}");
        }
        Outcome::Refused(_) | Outcome::Replayed { .. } => {
            assert!(again.reply.is_err(), "{case:?}");
        }
    }
}

#[test]
fn every_redemption_case_gives_exactly_the_expected_reply_and_writes() {
    let cases = Redemption::all();
    assert_eq!(cases.len(), 4 * 2 * 3 * 2 * 6 * 2 * 2 * 2);
    for case in &cases {
        let mut state = case.state();
        let outcome = expected_outcome(case);
        let writes = expected_writes(case, outcome, &state);
        let reply = expected_reply(outcome, &state);
        let decision = run(&mut state, case.request(), NOW);
        assert_eq!(decision.reply, reply, "{case:?}");
        assert_eq!(decision.writes, writes, "{case:?}");
        check_what_follows(case, outcome, &mut state);
    }
}

#[test]
fn a_code_is_redeemed_at_most_once_and_a_replay_revokes_what_it_issued() {
    // I2, RFC 6749 §4.1.2
    let stored_grant = grant(CLIENT, &["openid", "offline_access"]);
    let mut state = state_with(vec![
        entry(GRANT, Record::Grant(stored_grant)),
        entry(CODE, Record::Code(code(id(GRANT), Some(RFC7636_CHALLENGE)))),
    ]);
    let tokens = must_run(&mut state, correct_redemption(true), NOW);
    assert_eq!(tokens.refresh, Some(id(NEW_REFRESH + 1)));
    assert!(code_of(&state, id(CODE), NOW).unwrap().consumed);

    // A replay is another token request, with its own refresh-token id (the handler draws one per request).
    let replay = run(&mut state, another_redemption(true, 5), NOW + SECOND);
    assert_eq!(replay.reply, Err(ShardError::CodeReplayed));
    assert!(matches!(&replay.writes[..], [(written, Some(Record::Grant(revoked)))]
        if *written == key(RecordKind::Grant, id(GRANT)) && revoked.revoked));

    // The refresh token of the first redemption dies with the grant; a further replay writes nothing more.
    let rotate = RotateRefresh {
        refresh: id(NEW_REFRESH + 1),
        client_id: CLIENT.into(),
        scopes: None,
        new_refresh: id(NEW_REFRESH + 2),
    };
    assert_eq!(
        run(&mut state, rotate, NOW + 2 * SECOND).reply,
        Err(ShardError::InvalidGrant("refresh token was revoked".into()))
    );
    let third = run(&mut state, another_redemption(true, 6), NOW + 3 * SECOND);
    assert_eq!(third.reply, Err(ShardError::CodeReplayed));
    assert!(third.writes.is_empty());
    // Not even the first request itself passes once the grant is revoked.
    let first_again = run(&mut state, correct_redemption(true), NOW + 4 * SECOND);
    assert_eq!(first_again.reply, Err(ShardError::InvalidGrant(INVALID_CODE.into())));
    assert!(first_again.writes.is_empty());
}

/// [`correct_redemption`] as another token request would send it: its own refresh-token id.
fn another_redemption(challenge: bool, offset: u64) -> RedeemCode {
    RedeemCode { new_refresh: id(NEW_REFRESH + offset), ..correct_redemption(challenge) }
}

#[test]
fn the_same_redemption_retried_by_a_router_is_answered_again_not_taken_for_a_replay() {
    // A router retries the very request (same refresh-token id) on the shard's new owner when the old owner
    // committed it and then died or was cut off before replying: the same answer, nothing written, nothing revoked.
    let stored_grant = grant(CLIENT, &["openid", "offline_access"]);
    let mut state = state_with(vec![
        entry(GRANT, Record::Grant(stored_grant)),
        entry(CODE, Record::Code(code(id(GRANT), Some(RFC7636_CHALLENGE)))),
    ]);
    let first = must_run(&mut state, correct_redemption(true), NOW);
    assert_eq!(code_of(&state, id(CODE), NOW).unwrap().redeemed_with, Some(id(NEW_REFRESH + 1)));
    let retried = run(&mut state, correct_redemption(true), NOW + SECOND);
    assert!(retried.writes.is_empty());
    assert_eq!(retried.reply, Ok(first.clone()));
    assert!(!must_grant(&state, id(GRANT), NOW).revoked);
    // Any other request for the code is still a replay (I2), and revokes.
    assert_eq!(run(&mut state, another_redemption(true, 7), NOW + SECOND).reply, Err(ShardError::CodeReplayed));
    assert!(must_grant(&state, id(GRANT), NOW).revoked);
}

#[test]
fn the_same_rotation_retried_by_a_router_is_answered_again_not_taken_for_a_reuse() {
    let mut state = refresh_family(&FULL_SCOPES);
    let first = must_run(&mut state, rotate(REFRESH, NEW_REFRESH), NOW);
    assert_eq!(must_refresh(&state, id(REFRESH), NOW).rotated_to, Some(id(NEW_REFRESH)));
    let retried = run(&mut state, rotate(REFRESH, NEW_REFRESH), NOW + SECOND);
    assert!(retried.writes.is_empty(), "no second successor, nothing revoked");
    assert_eq!(retried.reply, Ok(first));
    assert!(!must_grant(&state, id(GRANT), NOW).revoked);
    // The successor it answered again is the one stored, and rotates once.
    must_run(&mut state, rotate(NEW_REFRESH, NEW_REFRESH + 1), NOW + SECOND);
    // Any other request with the old token is a reuse (I3), and revokes the family.
    assert_eq!(run(&mut state, rotate(REFRESH, NEW_REFRESH + 2), NOW + SECOND).reply, Err(ShardError::RefreshReused));
    assert!(must_grant(&state, id(GRANT), NOW).revoked);
    let after = run(&mut state, rotate(REFRESH, NEW_REFRESH), NOW + SECOND);
    let revoked = Err(ShardError::InvalidGrant("refresh token was revoked".into()));
    assert_eq!(after.reply, revoked, "not even the retried request once the family is revoked");
    assert!(after.writes.is_empty());
}

#[test]
fn a_refresh_token_is_issued_only_with_offline_access_and_a_client_allowed_to_refresh() {
    // OIDC Core §11
    for (scope_names, client_may_refresh, issued) in [
        (&["openid", "offline_access"][..], true, true),
        (&["openid", "offline_access"][..], false, false),
        (&["openid", "profile"][..], true, false),
        (&["openid", "profile"][..], false, false),
    ] {
        let mut state = state_with(vec![
            entry(GRANT, Record::Grant(grant(CLIENT, scope_names))),
            entry(CODE, Record::Code(code(id(GRANT), None))),
        ]);
        let request = RedeemCode { client_may_refresh, code_verifier: None, ..correct_redemption(false) };
        let tokens = must_run(&mut state, request, NOW);
        assert_eq!(tokens.refresh.is_some(), issued, "{scope_names:?} {client_may_refresh}");
        let stored = refresh_of(&state, id(NEW_REFRESH + 1), NOW);
        assert_eq!(stored.is_some(), issued);
    }
}

#[test]
fn a_code_whose_grant_expired_is_refused_and_not_consumed() {
    let mut expired_grant = grant(CLIENT, &["openid"]);
    expired_grant.expires_at_ms = NOW;
    let mut state =
        state_with(vec![entry(GRANT, Record::Grant(expired_grant)), entry(CODE, Record::Code(code(id(GRANT), None)))]);
    let decision = run(&mut state, correct_redemption(false), NOW);
    assert_eq!(decision.reply, Err(ShardError::InvalidGrant(INVALID_CODE.into())));
    assert!(decision.writes.is_empty());
    assert!(!code_of(&state, id(CODE), NOW).unwrap().consumed);
}

#[test]
fn pkce_s256_accepts_the_rfc7636_appendix_b_vector() {
    // RFC 7636 §4.6, Appendix B
    assert_eq!(URL_SAFE_NO_PAD.encode(RFC7636_CHALLENGE_OCTETS), RFC7636_CHALLENGE);
    assert_eq!(verify_pkce(RFC7636_CHALLENGE, RFC7636_VERIFIER), Ok(()));
    // A challenge that differs from the RFC's in its second half does not match.
    let altered = "E9Melhoa2OwvFrEMTJguCHaoeK1zntS-M6J0SXB_W3M";
    let mismatch = Err("code_verifier does not match the code_challenge");
    assert_eq!(verify_pkce(altered, RFC7636_VERIFIER), mismatch);
}

#[test]
fn pkce_refuses_plain_wrong_and_malformed_verifiers() {
    const MISMATCH: Result<(), &str> = Err("code_verifier does not match the code_challenge");
    const MALFORMED: Result<(), &str> = Err("code_verifier is malformed");
    // `plain` is not S256: the verifier itself is not its challenge.
    assert_eq!(verify_pkce(RFC7636_VERIFIER, RFC7636_VERIFIER), MISMATCH);
    // RFC 7636 §4.1: 43 and 128 characters are well formed, 42 and 129 are not.
    for (verifier, expected) in [
        ("a".repeat(43), MISMATCH),
        ("a".repeat(128), MISMATCH),
        ("-._~".repeat(11), MISMATCH),
        (String::new(), MALFORMED),
        ("a".repeat(42), MALFORMED),
        ("a".repeat(129), MALFORMED),
    ] {
        assert_eq!(verify_pkce(RFC7636_CHALLENGE, &verifier), expected, "{verifier:?}");
    }
    // Only unreserved characters: ALPHA / DIGIT / "-" / "." / "_" / "~".
    for bad in ['+', '/', '=', ' ', '%', '\n', 'é'] {
        let verifier = format!("{}{bad}", &RFC7636_VERIFIER[..42]);
        assert_eq!(verify_pkce(RFC7636_CHALLENGE, &verifier), MALFORMED, "{bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Refresh rotation: RFC 6749 §6, RFC 9700 §4.14.2, invariant I3
// ---------------------------------------------------------------------------------------------------------------

fn refresh_family(scope_names: &[&str]) -> ShardState {
    let stored_grant = grant(CLIENT, scope_names);
    let token = refresh_token(id(GRANT), &stored_grant);
    state_with(vec![entry(GRANT, Record::Grant(stored_grant)), entry(REFRESH, Record::Refresh(token))])
}

fn rotate(refresh: u64, new_refresh: u64) -> RotateRefresh {
    RotateRefresh { refresh: id(refresh), client_id: CLIENT.into(), scopes: None, new_refresh: id(new_refresh) }
}

const FULL_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

#[test]
fn rotation_issues_a_fresh_token_and_marks_the_old_one_used() {
    let mut state = refresh_family(&FULL_SCOPES);
    let tokens = must_run(&mut state, rotate(REFRESH, NEW_REFRESH), NOW);
    assert_eq!(tokens.refresh, Some(id(NEW_REFRESH)));
    assert_eq!(tokens.grant_id, id(GRANT));
    assert_eq!(tokens.scopes, scopes(&FULL_SCOPES));
    assert!(must_refresh(&state, id(REFRESH), NOW).used);
    let fresh = must_refresh(&state, id(NEW_REFRESH), NOW);
    assert_eq!(fresh, refresh_token(id(GRANT), &grant(CLIENT, &FULL_SCOPES)));
}

#[test]
fn reusing_a_rotated_token_revokes_the_whole_family_without_grace() {
    // I3, RFC 9700 §4.14.2: the reuse comes in the same millisecond as the rotation.
    let mut state = refresh_family(&FULL_SCOPES);
    must_run(&mut state, rotate(REFRESH, NEW_REFRESH), NOW);
    let reuse = run(&mut state, rotate(REFRESH, NEW_REFRESH + 1), NOW);
    assert_eq!(reuse.reply, Err(ShardError::RefreshReused));
    assert_eq!(reuse.writes.len(), 1);
    assert!(must_grant(&state, id(GRANT), NOW).revoked);
    assert_eq!(refresh_of(&state, id(NEW_REFRESH + 1), NOW), None);
    // The newest token of the family, never used, is refused from now on; so is every later reuse.
    assert_eq!(
        run(&mut state, rotate(NEW_REFRESH, NEW_REFRESH + 2), NOW).reply,
        Err(ShardError::InvalidGrant("refresh token was revoked".into()))
    );
    let second_reuse = run(&mut state, rotate(REFRESH, NEW_REFRESH + 3), NOW + HOUR);
    assert_eq!(second_reuse.reply, Err(ShardError::RefreshReused));
    assert!(second_reuse.writes.is_empty());
}

#[test]
fn a_token_presented_by_another_client_is_refused_without_revoking() {
    let mut state = refresh_family(&FULL_SCOPES);
    must_run(&mut state, rotate(REFRESH, NEW_REFRESH), NOW);
    for presented in [REFRESH, NEW_REFRESH] {
        let request = RotateRefresh { client_id: OTHER_CLIENT.into(), ..rotate(presented, NEW_REFRESH + 1) };
        let decision = run(&mut state, request, NOW);
        let reason = "refresh token was issued to another client";
        assert_eq!(decision.reply, Err(ShardError::InvalidGrant(reason.into())));
        assert!(decision.writes.is_empty());
    }
    assert!(!must_grant(&state, id(GRANT), NOW).revoked);
    must_run(&mut state, rotate(NEW_REFRESH, NEW_REFRESH + 2), NOW);
}

#[test]
fn a_revoked_grant_refuses_its_refresh_tokens() {
    let mut state = refresh_family(&FULL_SCOPES);
    let revoke = RevokeGrant { grant: id(GRANT), client_id: Some(CLIENT.into()) };
    assert!(must_run(&mut state, revoke, NOW));
    let decision = run(&mut state, rotate(REFRESH, NEW_REFRESH), NOW);
    assert_eq!(decision.reply, Err(ShardError::InvalidGrant("refresh token was revoked".into())));
    assert!(decision.writes.is_empty());
}

#[test]
fn an_expired_refresh_token_is_refused() {
    let mut state = refresh_family(&FULL_SCOPES);
    let expiry = must_refresh(&state, id(REFRESH), NOW).expires_at_ms;
    let decision = run(&mut state, rotate(REFRESH, NEW_REFRESH), expiry);
    assert_eq!(decision.reply, Err(ShardError::InvalidGrant("refresh token is invalid or expired".into())));
    assert!(decision.writes.is_empty());
}

#[test]
fn a_narrower_scope_narrows_the_access_token_and_keeps_the_grant() {
    // RFC 6749 §6: the new refresh token keeps the scope of the grant.
    let mut state = refresh_family(&FULL_SCOPES);
    let narrowed = RotateRefresh { scopes: Some(scopes(&["openid", "email"])), ..rotate(REFRESH, NEW_REFRESH) };
    let tokens = must_run(&mut state, narrowed, NOW);
    assert_eq!(tokens.scopes, scopes(&["openid", "email"]));
    assert_eq!(tokens.grant.scopes, scopes(&FULL_SCOPES));
    assert_eq!(must_grant(&state, id(GRANT), NOW).scopes, scopes(&FULL_SCOPES));
    let next = must_run(&mut state, rotate(NEW_REFRESH, NEW_REFRESH + 1), NOW);
    assert_eq!(next.scopes, scopes(&FULL_SCOPES));
}

#[test]
fn a_wider_scope_is_refused_and_leaves_the_token_usable() {
    // RFC 6749 §6: "MUST NOT include any scope not originally granted".
    let mut state = refresh_family(&["openid", "offline_access"]);
    let widened = RotateRefresh { scopes: Some(scopes(&["openid", "admin"])), ..rotate(REFRESH, NEW_REFRESH) };
    let decision = run(&mut state, widened, NOW);
    assert_eq!(decision.reply, Err(ShardError::InvalidScope));
    assert!(decision.writes.is_empty());
    must_run(&mut state, rotate(REFRESH, NEW_REFRESH), NOW);
}

/// A small deterministic generator for the random walk (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// The walk's own picture of a refresh-token family.
struct Family {
    grant: RecordId,
    chain: Vec<RecordId>,
    revoked: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum RotationOutcome {
    Accepted,
    Reused,
    Refused(std::borrow::Cow<'static, str>),
}

fn start_family(state: &mut ShardState, next_id: &mut u64) -> Family {
    let (grant_id, token_id) = (id(*next_id), id(*next_id + 1));
    *next_id += 2;
    let stored_grant = grant(CLIENT, &FULL_SCOPES);
    let token = refresh_token(grant_id, &stored_grant);
    state.apply(&[
        (key(RecordKind::Grant, grant_id), Some(Record::Grant(stored_grant))),
        (key(RecordKind::Refresh, token_id), Some(Record::Refresh(token))),
    ]);
    Family { grant: grant_id, chain: vec![token_id], revoked: false }
}

/// I3 as the walk expects it: only the newest token of a live family, from its client, is accepted.
fn expected_rotation(family: &Family, token: RecordId, client_id: &str) -> RotationOutcome {
    if client_id != CLIENT {
        RotationOutcome::Refused("refresh token was issued to another client".into())
    } else if Some(&token) != family.chain.last() {
        RotationOutcome::Reused
    } else if family.revoked {
        RotationOutcome::Refused("refresh token was revoked".into())
    } else {
        RotationOutcome::Accepted
    }
}

#[test]
fn a_random_walk_of_rotations_and_reuses_never_accepts_a_token_twice() {
    // I3
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut state = ShardState::default();
    let mut next_id = 1_000;
    let mut families = vec![start_family(&mut state, &mut next_id)];
    let mut accepted = HashSet::new();
    let (mut reuses, mut acceptances) = (0, 0);
    for step in 0..20_000u64 {
        if rng.below(25) == 0 {
            families.push(start_family(&mut state, &mut next_id));
        }
        let family_index = rng.below(families.len());
        let family = &mut families[family_index];
        let (token, client_id) = match rng.below(10) {
            0..=5 => (*family.chain.last().unwrap(), CLIENT),
            6..=8 => (family.chain[rng.below(family.chain.len())], CLIENT),
            _ => (family.chain[rng.below(family.chain.len())], OTHER_CLIENT),
        };
        let expected = expected_rotation(family, token, client_id);
        let new_refresh = id(next_id);
        next_id += 1;
        let request = RotateRefresh { refresh: token, client_id: client_id.into(), scopes: None, new_refresh };
        let reply = run(&mut state, request, NOW + step).reply;
        let outcome = match reply {
            Ok(tokens) => {
                assert!(accepted.insert(token), "I3: a token was accepted twice at step {step}");
                assert_eq!((tokens.grant_id, tokens.refresh), (family.grant, Some(new_refresh)));
                family.chain.push(new_refresh);
                acceptances += 1;
                RotationOutcome::Accepted
            }
            Err(ShardError::RefreshReused) => {
                family.revoked = true;
                reuses += 1;
                RotationOutcome::Reused
            }
            Err(ShardError::InvalidGrant(reason)) => RotationOutcome::Refused(reason),
            Err(other) => panic!("unexpected refusal at step {step}: {other:?}"),
        };
        assert_eq!(outcome, expected, "step {step}");
        assert_eq!(must_grant(&state, family.grant, NOW).revoked, family.revoked);
    }
    // The walk exercised both sides.
    assert!(acceptances > 1_000 && reuses > 100, "{acceptances} {reuses}");
}

// ---------------------------------------------------------------------------------------------------------------
// Pending authorizations and sessions
// ---------------------------------------------------------------------------------------------------------------

fn authenticate(existing_session: Option<u64>, user_id: &str) -> AuthenticatePending {
    AuthenticatePending {
        pending: id(PENDING),
        existing_session: existing_session.map(id),
        new_session: id(NEW_SESSION),
        new_sid: "sid-new".into(),
        authentication: authentication(user_id, NOW / SECOND),
        session_expires_at_ms: NOW + 2 * HOUR,
    }
}

fn grant_issue(with_code: bool) -> GrantIssue {
    GrantIssue {
        grant: id(GRANT),
        code: with_code.then(|| id(CODE)),
        code_expires_at_ms: NOW + MINUTE,
        grant_expires_at_ms: NOW + 30 * DAY,
        offline: true,
    }
}

fn finish(session_id: u64, with_code: bool) -> FinishPending {
    FinishPending { pending: id(PENDING), session: id(session_id), issue: grant_issue(with_code) }
}

fn awaiting_login() -> ShardState {
    state_with(vec![entry(PENDING, Record::Pending(pending(PendingStage::AwaitingLogin)))])
}

fn authenticated_in(session_id: u64) -> ShardState {
    let stage = PendingStage::Authenticated { session: id(session_id) };
    state_with(vec![
        entry(PENDING, Record::Pending(pending(stage))),
        entry(session_id, Record::Session(session(USER, Vec::new()))),
    ])
}

#[test]
fn a_login_authenticates_a_pending_authorization_once() {
    let mut state = awaiting_login();
    let decision = run(&mut state, authenticate(None, USER), NOW);
    let expected = Authenticated { session: id(NEW_SESSION), sid: "sid-new".into() };
    assert_eq!(decision.reply, Ok(expected));
    let new_session = session_of(&state, id(NEW_SESSION), NOW).unwrap();
    assert_eq!(new_session.authentication, authentication(USER, NOW / SECOND));
    assert_eq!((new_session.created_at_ms, new_session.expires_at_ms), (NOW, NOW + 2 * HOUR));
    assert_eq!(
        pending_of(&state, id(PENDING), NOW).unwrap().stage,
        PendingStage::Authenticated { session: id(NEW_SESSION) }
    );
    // A replayed successful login POST (another request: the handler draws its new session id per request)
    // yields no second code.
    let replay = run(
        &mut state,
        AuthenticatePending { new_session: id(NEW_SESSION + 1), ..authenticate(None, USER) },
        NOW + SECOND,
    );
    assert_eq!(replay.reply, Err(ShardError::NotFound));
    assert!(replay.writes.is_empty());
}

#[test]
fn the_same_login_retried_by_a_router_is_answered_again() {
    // A router retries the very request on the shard's new owner after the old owner committed it and died
    // before replying: the same answer, nothing written; the pending authorization stays bound to that session.
    let mut state = awaiting_login();
    let first = must_run(&mut state, authenticate(None, USER), NOW);
    let retried = run(&mut state, authenticate(None, USER), NOW + SECOND);
    assert_eq!(retried.reply, Ok(first));
    assert!(retried.writes.is_empty());
    assert_eq!(
        pending_of(&state, id(PENDING), NOW).unwrap().stage,
        PendingStage::Authenticated { session: id(NEW_SESSION) }
    );
    // The op names that session for rehydration on a new owner.
    let op = authenticate(None, USER);
    assert!(op.dependent_keys(&state, NOW).contains(&key(RecordKind::Session, id(NEW_SESSION))));
    let other = AuthenticatePending { new_session: id(NEW_SESSION + 1), ..authenticate(None, USER) };
    assert!(other.dependent_keys(&state, NOW).is_empty());
}

#[test]
fn the_same_login_retried_is_answered_again_when_it_reused_the_browsers_session() {
    // The browser already had a session of the same user: the login rebinds it instead of creating one, so the
    // retry is recognised by the authentication it wrote there (its time and methods), not by a new session id.
    let mut state = state_with(vec![
        entry(PENDING, Record::Pending(pending(PendingStage::AwaitingLogin))),
        entry(SESSION, Record::Session(session(USER, Vec::new()))),
    ]);
    let login = AuthenticatePending {
        authentication: authentication(USER, NOW / SECOND + 5),
        ..authenticate(Some(SESSION), USER)
    };
    let first = must_run(&mut state, login.clone(), NOW);
    assert_eq!(first.session, id(SESSION));
    let retried = run(&mut state, login.clone(), NOW + SECOND);
    assert_eq!(retried.reply, Ok(first));
    assert!(retried.writes.is_empty());
    // Another login POST (another time of authentication) is a replay, as before.
    let other = AuthenticatePending { authentication: authentication(USER, NOW / SECOND + 7), ..login };
    let replay = run(&mut state, other, NOW + 2 * SECOND);
    assert_eq!(replay.reply, Err(ShardError::NotFound));
    assert!(replay.writes.is_empty());
}

#[test]
fn a_login_for_an_unknown_or_expired_pending_authorization_is_not_found() {
    for (mut state, now_ms) in [(ShardState::default(), NOW), (awaiting_login(), NOW + 10 * MINUTE)] {
        let decision = run(&mut state, authenticate(None, USER), now_ms);
        assert_eq!(decision.reply, Err(ShardError::NotFound));
        assert!(decision.writes.is_empty());
    }
}

#[test]
fn an_authorization_request_is_stored_awaiting_login() {
    let mut state = ShardState::default();
    let request = CreatePending { id: id(PENDING), pending: pending(PendingStage::AwaitingLogin) };
    assert!(request.keys().is_empty());
    must_run(&mut state, request, NOW);
    let stored = must_run(&mut state, GetPending { id: id(PENDING) }, NOW);
    assert_eq!(stored, pending(PendingStage::AwaitingLogin));
}

#[test]
fn the_browser_session_is_refreshed_for_the_same_user() {
    let mut state = awaiting_login();
    let mut existing = session(USER, vec![id(GRANT)]);
    existing.expires_at_ms = NOW + 5 * HOUR;
    state.apply(&[write(SESSION, Record::Session(existing.clone()))]);
    let reply = must_run(&mut state, authenticate(Some(SESSION), USER), NOW);
    assert_eq!(reply, Authenticated { session: id(SESSION), sid: existing.sid.clone() });
    let refreshed = session_of(&state, id(SESSION), NOW).unwrap();
    let expected = Session {
        authentication: authentication(USER, NOW / SECOND),
        // Never shortened by a login that asks for less.
        expires_at_ms: NOW + 5 * HOUR,
        ..existing
    };
    assert_eq!(refreshed, expected);
    assert_eq!(session_of(&state, id(NEW_SESSION), NOW), None);
}

#[test]
fn another_users_or_an_expired_browser_session_is_not_reused() {
    for (user_id, session_expires_at_ms) in [(OTHER_USER, NOW + HOUR), (USER, NOW)] {
        let mut existing = session(user_id, vec![id(GRANT)]);
        existing.expires_at_ms = session_expires_at_ms;
        let mut state = awaiting_login();
        state.apply(&[write(SESSION, Record::Session(existing))]);
        let decision = run(&mut state, authenticate(Some(SESSION), USER), NOW);
        assert_eq!(decision.reply.unwrap().session, id(NEW_SESSION));
        let written: Vec<RecordKey> = decision.writes.iter().map(|(written, _)| *written).collect();
        assert!(!written.contains(&key(RecordKind::Session, id(SESSION))));
        let new_session = session_of(&state, id(NEW_SESSION), NOW).unwrap();
        assert_eq!((new_session.sid.as_str(), new_session.grants.len()), ("sid-new", 0));
    }
}

#[test]
fn finishing_requires_the_session_the_login_happened_in() {
    let mut state = authenticated_in(SESSION);
    state.apply(&[write(OTHER_SESSION, Record::Session(session(USER, Vec::new())))]);
    let decision = run(&mut state, finish(OTHER_SESSION, true), NOW);
    assert_eq!(decision.reply, Err(ShardError::NotFound));
    assert!(decision.writes.is_empty());

    let mut not_logged_in = awaiting_login();
    not_logged_in.apply(&[write(SESSION, Record::Session(session(USER, Vec::new())))]);
    let decision = run(&mut not_logged_in, finish(SESSION, true), NOW);
    assert_eq!(decision.reply, Err(ShardError::NotFound));
    assert!(decision.writes.is_empty());
}

#[test]
fn finishing_issues_a_grant_and_code_linked_to_the_session_and_ends_the_pending_authorization() {
    let mut state = authenticated_in(SESSION);
    let request = authorization_request(&["openid", "offline_access"]);
    let issued = must_run(&mut state, finish(SESSION, true), NOW);
    let stored_session = session(USER, Vec::new());
    assert_eq!(
        issued,
        Issued {
            request: request.clone(),
            authentication: stored_session.authentication.clone(),
            sid: stored_session.sid.clone(),
        }
    );
    // Answered: kept a minute, marked with the grant, for a retry of this request only; gone for everything else.
    let finished = pending_of(&state, id(PENDING), NOW).unwrap();
    assert_eq!(finished.stage, PendingStage::Finished { by: id(GRANT) });
    assert_eq!(finished.expires_at_ms, NOW + FINISHED_PENDING_KEPT_MS);
    assert_eq!(run(&mut state, GetPending { id: id(PENDING) }, NOW).reply, Err(ShardError::NotFound));
    assert_eq!(grant_ids(&session_of(&state, id(SESSION), NOW).unwrap()), vec![id(GRANT)]);
    let expected_grant = Grant {
        client_id: CLIENT.into(),
        authentication: stored_session.authentication,
        scopes: request.scopes.clone(),
        nonce: request.nonce.clone(),
        session: Some(id(SESSION)),
        sid: Some(stored_session.sid),
        resource: request.resource.clone(),
        offline: true,
        revoked: false,
        created_at_ms: NOW,
        expires_at_ms: NOW + 30 * DAY,
    };
    assert_eq!(must_grant(&state, id(GRANT), NOW), expected_grant);
    let expected_code = AuthCode {
        grant: id(GRANT),
        client_id: CLIENT.into(),
        redirect_uri: REDIRECT_URI.into(),
        code_challenge: Some(RFC7636_CHALLENGE.into()),
        consumed: false,
        redeemed_with: None,
        expires_at_ms: NOW + MINUTE,
    };
    assert_eq!(code_of(&state, id(CODE), NOW), Some(expected_code));
    // Single use: another request (its own grant id) finds the pending authorization gone.
    let mut again = finish(SESSION, true);
    again.issue.grant = id(GRANT + 100);
    let again = run(&mut state, again, NOW);
    assert_eq!(again.reply, Err(ShardError::NotFound));
    assert!(again.writes.is_empty());
    assert_eq!(run(&mut state, finish(SESSION, true), NOW + FINISHED_PENDING_KEPT_MS).reply, Err(ShardError::NotFound));
}

#[test]
fn the_same_finish_retried_by_a_router_is_answered_again() {
    let mut state = authenticated_in(SESSION);
    let first = must_run(&mut state, finish(SESSION, true), NOW);
    let op = finish(SESSION, true);
    assert_eq!(op.dependent_keys(&state, NOW), vec![key(RecordKind::Grant, id(GRANT))], "rehydrated on a new owner");
    let retried = run(&mut state, op, NOW + SECOND);
    assert_eq!(retried.reply, Ok(first));
    assert!(retried.writes.is_empty());
    assert_eq!(code_of(&state, id(CODE), NOW).map(|code| code.consumed), Some(false));
    // Once the grant is revoked (the code was replayed, or the user logged out), the retry is answered no more.
    must_run(&mut state, RevokeGrant { grant: id(GRANT), client_id: None }, NOW + SECOND);
    assert_eq!(run(&mut state, finish(SESSION, true), NOW + SECOND).reply, Err(ShardError::NotFound));
}

#[test]
fn the_same_single_sign_on_retried_by_a_router_is_answered_again_without_a_second_code() {
    let mut state = state_with(vec![entry(SESSION, Record::Session(session(USER, Vec::new())))]);
    let first = must_run(&mut state, issue_for_session(None), NOW);
    let redeemed = RedeemCode { code: id(CODE), ..correct_redemption(true) };
    assert!(run(&mut state, redeemed, NOW + SECOND).reply.is_ok());
    let retried = run(&mut state, issue_for_session(None), NOW + SECOND);
    assert_eq!(retried.reply, Ok(first));
    assert!(retried.writes.is_empty(), "the redeemed code is not written again as unused");
    let linked = grant_ids(&session_of(&state, id(SESSION), NOW).unwrap());
    assert_eq!(linked, vec![id(GRANT)]);
}

#[test]
fn finishing_writes_a_code_only_when_asked() {
    let mut state = authenticated_in(SESSION);
    let decision = run(&mut state, finish(SESSION, false), NOW);
    assert!(decision.reply.is_ok());
    let kinds: Vec<RecordKind> = decision.writes.iter().map(|(written, _)| written.kind).collect();
    assert_eq!(kinds, [RecordKind::Pending, RecordKind::Grant, RecordKind::Session]);
    assert_eq!(code_of(&state, id(CODE), NOW), None);
}

#[test]
fn finishing_after_the_session_ended_requires_a_login_and_keeps_the_pending_authorization() {
    let mut state = authenticated_in(SESSION);
    must_run(&mut state, EndSession { session: id(SESSION), keep_offline: false }, NOW);
    let decision = run(&mut state, finish(SESSION, true), NOW);
    assert_eq!(decision.reply, Err(ShardError::LoginRequired));
    assert!(decision.writes.is_empty());
    assert!(pending_of(&state, id(PENDING), NOW).is_some());
}

fn issue_for_session(authenticated_since: Option<u64>) -> IssueForSession {
    IssueForSession {
        session: id(SESSION),
        request: authorization_request(&["openid"]),
        authenticated_since,
        issue: grant_issue(true),
    }
}

#[test]
fn single_sign_on_honours_max_age() {
    // OIDC Core §3.1.2.1 max_age: auth_time must be at or after now - max_age.
    let auth_time = session(USER, Vec::new()).authentication.auth_time;
    for (since, allowed) in
        [(None, true), (Some(auth_time - 1), true), (Some(auth_time), true), (Some(auth_time + 1), false)]
    {
        let mut state = state_with(vec![entry(SESSION, Record::Session(session(USER, Vec::new())))]);
        let decision = run(&mut state, issue_for_session(since), NOW);
        if allowed {
            assert_eq!(decision.reply.unwrap().sid, format!("sid-of-{USER}"));
            assert!(code_of(&state, id(CODE), NOW).is_some());
            let linked = grant_ids(&session_of(&state, id(SESSION), NOW).unwrap());
            assert_eq!(linked, vec![id(GRANT)]);
        } else {
            assert_eq!(decision.reply, Err(ShardError::LoginRequired));
            assert!(decision.writes.is_empty());
        }
    }
}

#[test]
fn single_sign_on_without_a_live_session_requires_a_login() {
    let expired = state_with(vec![entry(SESSION, Record::Session(session(USER, Vec::new())))]);
    for (mut state, now_ms) in [(ShardState::default(), NOW), (expired, NOW + HOUR)] {
        let decision = run(&mut state, issue_for_session(None), now_ms);
        assert_eq!(decision.reply, Err(ShardError::LoginRequired));
        assert!(decision.writes.is_empty());
    }
}

#[test]
fn pending_authorizations_and_sessions_are_read_until_they_expire() {
    let mut state = authenticated_in(SESSION);
    let stage = PendingStage::Authenticated { session: id(SESSION) };
    assert_eq!(must_run(&mut state, GetPending { id: id(PENDING) }, NOW).stage, stage);
    assert_eq!(must_run(&mut state, GetSession { id: id(SESSION) }, NOW), session(USER, Vec::new()));
    let pending_expiry = NOW + 10 * MINUTE;
    let expired = run(&mut state, GetPending { id: id(PENDING) }, pending_expiry);
    assert_eq!(expired.reply, Err(ShardError::NotFound));
    let expired = run(&mut state, GetSession { id: id(SESSION) }, NOW + HOUR);
    assert_eq!(expired.reply, Err(ShardError::NotFound));
}

// ---------------------------------------------------------------------------------------------------------------
// Logout, revocation, grant checks
// ---------------------------------------------------------------------------------------------------------------

const ONLINE_GRANT: u64 = 20;
const OFFLINE_GRANT: u64 = 21;
const REVOKED_GRANT: u64 = 22;
const FORGOTTEN_GRANT: u64 = 23;

/// A session with an online grant, an offline grant, an already revoked grant and one that is gone.
fn session_with_grants() -> ShardState {
    let grant_ids = [ONLINE_GRANT, OFFLINE_GRANT, REVOKED_GRANT, FORGOTTEN_GRANT];
    let mut revoked = grant(CLIENT, &["openid"]);
    revoked.revoked = true;
    state_with(vec![
        entry(SESSION, Record::Session(session(USER, grant_ids.map(id).to_vec()))),
        entry(ONLINE_GRANT, Record::Grant(grant(CLIENT, &["openid"]))),
        entry(OFFLINE_GRANT, Record::Grant(grant(CLIENT, &["openid", "offline_access"]))),
        entry(REVOKED_GRANT, Record::Grant(revoked)),
    ])
}

fn revoked_grant_ids(state: &ShardState) -> Vec<u64> {
    [ONLINE_GRANT, OFFLINE_GRANT, REVOKED_GRANT]
        .into_iter()
        .filter(|grant_id| must_grant(state, id(*grant_id), NOW).revoked)
        .collect()
}

#[test]
fn logout_needs_the_grants_of_the_session() {
    let state = session_with_grants();
    let end = EndSession { session: id(SESSION), keep_offline: false };
    let grant_keys = [ONLINE_GRANT, OFFLINE_GRANT, REVOKED_GRANT, FORGOTTEN_GRANT]
        .map(|grant_id| key(RecordKind::Grant, id(grant_id)));
    assert_eq!(end.dependent_keys(&state, NOW), grant_keys);
    assert!(end.dependent_keys(&ShardState::default(), NOW).is_empty());
}

#[test]
fn logout_revokes_the_grants_of_the_session_and_deletes_it_once() {
    let mut state = session_with_grants();
    let end = || EndSession { session: id(SESSION), keep_offline: false };
    let decision = run(&mut state, end(), NOW);
    assert_eq!(decision.reply, Ok(2));
    assert_eq!(decision.writes[0], delete(RecordKind::Session, SESSION));
    assert_eq!(session_of(&state, id(SESSION), NOW), None);
    assert_eq!(revoked_grant_ids(&state), [ONLINE_GRANT, OFFLINE_GRANT, REVOKED_GRANT]);
    let again = run(&mut state, end(), NOW);
    assert_eq!(again.reply, Ok(0));
    assert!(again.writes.is_empty());
}

#[test]
fn logout_keeps_offline_grants_when_configured() {
    let mut state = session_with_grants();
    let end = EndSession { session: id(SESSION), keep_offline: true };
    assert_eq!(must_run(&mut state, end, NOW), 1);
    assert_eq!(revoked_grant_ids(&state), [ONLINE_GRANT, REVOKED_GRANT]);
}

fn revoke(client_id: Option<&str>) -> RevokeGrant {
    RevokeGrant { grant: id(GRANT), client_id: client_id.map(str::to_string) }
}

#[test]
fn a_client_cannot_revoke_another_clients_grant() {
    // RFC 7009 §2.1: the token must have been issued to the client making the request.
    let mut state = state_with(vec![entry(GRANT, Record::Grant(grant(CLIENT, &["openid"])))]);
    let decision = run(&mut state, revoke(Some(OTHER_CLIENT)), NOW);
    assert_eq!(decision.reply, Ok(false));
    assert!(decision.writes.is_empty());
    assert!(!must_grant(&state, id(GRANT), NOW).revoked);
}

#[test]
fn a_grant_is_revoked_once_by_its_client_or_by_the_provider() {
    for revoker in [Some(CLIENT), None] {
        let mut state = state_with(vec![entry(GRANT, Record::Grant(grant(CLIENT, &["openid"])))]);
        assert!(must_run(&mut state, revoke(revoker), NOW));
        assert!(must_grant(&state, id(GRANT), NOW).revoked);
        let again = run(&mut state, revoke(revoker), NOW);
        assert_eq!(again.reply, Ok(false));
        assert!(again.writes.is_empty());
    }
    let unknown = run(&mut ShardState::default(), revoke(None), NOW);
    assert_eq!(unknown.reply, Ok(false));
}

#[test]
fn check_grant_refuses_revoked_and_expired_grants() {
    let live = grant(CLIENT, &["openid"]);
    let mut state = state_with(vec![entry(GRANT, Record::Grant(live.clone()))]);
    let check = || CheckGrant { grant: id(GRANT) };
    assert_eq!(run(&mut state, check(), NOW).reply, Ok(live.clone()));
    let expired = run(&mut state, check(), live.expires_at_ms);
    assert_eq!(expired.reply, Err(ShardError::NotFound));
    must_run(&mut state, revoke(None), NOW);
    assert_eq!(run(&mut state, check(), NOW).reply, Err(ShardError::NotFound));
}

#[test]
fn get_refresh_reads_the_token_and_its_grant() {
    let mut state = refresh_family(&FULL_SCOPES);
    let (token, grant_opt) = must_run(&mut state, GetRefresh { refresh: id(REFRESH) }, NOW);
    assert_eq!(grant_opt, Some(grant(CLIENT, &FULL_SCOPES)));
    assert_eq!(token, must_refresh(&state, id(REFRESH), NOW));
    let unknown = run(&mut state, GetRefresh { refresh: id(CODE) }, NOW);
    assert_eq!(unknown.reply, Err(ShardError::NotFound));
}

// ---------------------------------------------------------------------------------------------------------------
// Login throttling
// ---------------------------------------------------------------------------------------------------------------

const POLICY: ThrottlePolicy = ThrottlePolicy {
    delay_after: 3,
    delay_step_ms: 500,
    max_delay_ms: 5_000,
    max_failures: 10,
    lockout_ms: 15 * MINUTE,
};

fn begin(state: &mut ShardState, policy: ThrottlePolicy, now_ms: u64) -> ShardResult<u64> {
    let attempt = BeginLoginAttempt { id: id(THROTTLE), policy, attempt: RecordId::random() };
    run(state, attempt, now_ms).reply.map(|allowed| allowed.delay_ms)
}

fn must_begin(state: &mut ShardState, policy: ThrottlePolicy, now_ms: u64) -> u64 {
    begin(state, policy, now_ms).expect("the attempt is allowed")
}

#[test]
fn failed_logins_are_delayed_after_three_and_the_eleventh_is_locked() {
    let mut state = ShardState::default();
    let delays: Vec<u64> = (0..10).map(|_| must_begin(&mut state, POLICY, NOW)).collect();
    assert_eq!(delays, [0, 0, 0, 500, 1_000, 1_500, 2_000, 2_500, 3_000, 3_500]);
    assert_eq!(begin(&mut state, POLICY, NOW), Err(ShardError::Locked { retry_after_ms: 15 * MINUTE }));
    assert_eq!(begin(&mut state, POLICY, NOW + 5 * MINUTE), Err(ShardError::Locked { retry_after_ms: 10 * MINUTE }));
    assert_eq!(ShardError::Locked { retry_after_ms: 1 }.error_code(), ErrorCode::SlowDown);
}

#[test]
fn delays_grow_by_the_step_and_stop_at_the_maximum() {
    let patient = ThrottlePolicy { max_failures: 100, ..POLICY };
    let mut state = ShardState::default();
    for attempt in 1..=40u64 {
        let expected = attempt.saturating_sub(3).saturating_mul(500).min(5_000);
        assert_eq!(must_begin(&mut state, patient, NOW), expected, "attempt {attempt}");
    }
}

#[test]
fn a_served_lockout_starts_the_count_afresh() {
    let mut state = ShardState::default();
    for _ in 0..10 {
        must_begin(&mut state, POLICY, NOW);
    }
    let lockout_end = NOW + 15 * MINUTE;
    assert_eq!(begin(&mut state, POLICY, lockout_end - 1), Err(ShardError::Locked { retry_after_ms: 1 }));
    let delays: Vec<u64> = (0..5).map(|_| must_begin(&mut state, POLICY, lockout_end)).collect();
    assert_eq!(delays, [0, 0, 0, 500, 1_000]);
}

#[test]
fn a_successful_login_resets_the_count() {
    let mut state = ShardState::default();
    for _ in 0..9 {
        must_begin(&mut state, POLICY, NOW);
    }
    let success = run(&mut state, LoginSucceeded { id: id(THROTTLE) }, NOW);
    assert_eq!(success.writes, [delete(RecordKind::Throttle, THROTTLE)]);
    assert_eq!(throttle_of(&state, id(THROTTLE), NOW), None);
    let delays: Vec<u64> = (0..4).map(|_| must_begin(&mut state, POLICY, NOW)).collect();
    assert_eq!(delays, [0, 0, 0, 500]);
    // Nothing to reset: nothing written.
    let nothing = run(&mut ShardState::default(), LoginSucceeded { id: id(THROTTLE) }, NOW);
    assert!(nothing.writes.is_empty());
}

#[test]
fn failures_are_forgotten_after_a_quiet_lockout_window() {
    let mut state = ShardState::default();
    for _ in 0..5 {
        must_begin(&mut state, POLICY, NOW);
    }
    assert_eq!(must_begin(&mut state, POLICY, NOW + 15 * MINUTE), 0);
}

#[test]
fn concurrent_attempts_never_exceed_max_failures_before_the_lock() {
    // Attempts begun together are decided one after the other by the shard; none has succeeded yet.
    for max_failures in 1..=12 {
        let policy = ThrottlePolicy { max_failures, ..POLICY };
        let mut state = ShardState::default();
        let replies: Vec<_> = (0..50u64).map(|spread| begin(&mut state, policy, NOW + spread)).collect();
        let allowed = replies.iter().take_while(|reply| reply.is_ok()).count();
        assert_eq!(allowed, max_failures as usize);
        let locked = replies[allowed..].iter().all(|reply| matches!(reply, Err(ShardError::Locked { .. })));
        assert!(locked, "max_failures {max_failures}: {replies:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Consents and revoked access tokens
// ---------------------------------------------------------------------------------------------------------------

fn consent(scope_names: &[&str], expires_at_ms: u64) -> Consent {
    Consent { user_id: USER.into(), client_id: CLIENT.into(), scopes: scopes(scope_names), expires_at_ms }
}

fn grant_consent(scope_names: &[&str]) -> GrantConsent {
    GrantConsent { id: id(CONSENT), consent: consent(scope_names, NOW + 2 * DAY) }
}

#[test]
fn a_consent_adds_to_the_scopes_consented_earlier() {
    let mut state = state_with(vec![entry(CONSENT, Record::Consent(consent(&["openid", "profile"], NOW + DAY)))]);
    must_run(&mut state, grant_consent(&["openid", "email"]), NOW);
    let merged = must_run(&mut state, GetConsent { id: id(CONSENT) }, NOW);
    assert_eq!(merged, Some(consent(&["openid", "email", "profile"], NOW + 2 * DAY)));
}

#[test]
fn an_expired_consent_is_neither_read_nor_merged() {
    let mut state = state_with(vec![entry(CONSENT, Record::Consent(consent(&["openid", "profile"], NOW)))]);
    assert_eq!(must_run(&mut state, GetConsent { id: id(CONSENT) }, NOW), None);
    must_run(&mut state, grant_consent(&["openid"]), NOW);
    let fresh = must_run(&mut state, GetConsent { id: id(CONSENT) }, NOW);
    assert_eq!(fresh, Some(consent(&["openid"], NOW + 2 * DAY)));
}

#[test]
fn a_revoked_access_token_is_remembered_until_it_would_have_expired() {
    let mut state = ShardState::default();
    let is_revoked = || IsTokenRevoked { jti: id(JTI) };
    assert!(!must_run(&mut state, is_revoked(), NOW));
    let revoke_token = RevokeToken { jti: id(JTI), expires_at_ms: NOW + HOUR };
    must_run(&mut state, revoke_token, NOW);
    assert!(must_run(&mut state, is_revoked(), NOW));
    assert!(must_run(&mut state, is_revoked(), NOW + HOUR - 1));
    assert!(!must_run(&mut state, is_revoked(), NOW + HOUR));
}

#[test]
fn an_identifier_is_used_once_but_a_router_retry_of_that_use_is_accepted() {
    let mut state = ShardState::default();
    let (by, other_by) = (id(JTI + 1), id(JTI + 2));
    let use_once = |by| UseOnce { id: id(JTI), expires_at_ms: NOW + MINUTE, by };
    assert_eq!(run(&mut state, use_once(by), NOW).reply, Ok(()));
    let retried = run(&mut state, use_once(by), NOW + SECOND);
    assert_eq!((retried.reply, retried.writes.len()), (Ok(()), 0));
    let replayed = run(&mut state, use_once(other_by), NOW + SECOND);
    assert!(matches!(replayed.reply, Err(ShardError::InvalidGrant(_))), "{:?}", replayed.reply);
    // A revoked token's record (no user) never counts as this request's use.
    must_run(&mut state, RevokeToken { jti: id(JTI + 3), expires_at_ms: NOW + HOUR }, NOW);
    let on_revoked = UseOnce { id: id(JTI + 3), expires_at_ms: NOW + MINUTE, by };
    assert!(run(&mut state, on_revoked, NOW).reply.is_err());
    assert_eq!(run(&mut state, use_once(other_by), NOW + MINUTE).reply, Ok(()), "usable again once expired");
}

#[test]
fn a_login_attempt_retried_by_a_router_is_counted_once() {
    let mut state = ShardState::default();
    let attempt = BeginLoginAttempt { id: id(THROTTLE), policy: POLICY, attempt: id(THROTTLE + 1) };
    for _ in 0..POLICY.delay_after + 3 {
        let retried = run(&mut state, attempt.clone(), NOW);
        assert_eq!(retried.reply, Ok(AttemptAllowed { delay_ms: 0 }));
    }
    assert_eq!(throttle_of(&state, id(THROTTLE), NOW).unwrap().failures, 1);
    // The next attempt (a new id) counts.
    must_begin(&mut state, POLICY, NOW + SECOND);
    assert_eq!(throttle_of(&state, id(THROTTLE), NOW).unwrap().failures, 2);
}

// ---------------------------------------------------------------------------------------------------------------
// ShardState: residency, lazy hydration, sweeping
// ---------------------------------------------------------------------------------------------------------------

fn revoked_token(expires_at_ms: u64) -> Record {
    Record::RevokedToken(RevokedToken { expires_at_ms, used_by: None })
}

fn token_key(record_id: u64) -> RecordKey {
    key(RecordKind::RevokedToken, id(record_id))
}

#[test]
fn sweep_drops_expired_records_and_cached_absences() {
    let mut state = state_with(vec![entry(1, revoked_token(NOW + 1)), entry(2, revoked_token(NOW))]);
    state.hydrate(vec![token_key(3)], vec![None]);
    assert_eq!(state.len(), 3);
    assert_eq!(state.sweep(NOW), 2);
    assert_eq!(state.len(), 1);
    assert_eq!(state.get(&token_key(1), NOW), Some(&revoked_token(NOW + 1)));
    assert_eq!(state.missing(&[token_key(2), token_key(3)]).len(), 2);
    assert_eq!(state.sweep(NOW + 1), 1);
    assert!(state.is_empty());
}

#[test]
fn only_keys_unknown_in_memory_are_missing() {
    let mut state = state_with(vec![entry(1, revoked_token(NOW + 1)), entry(2, revoked_token(NOW))]);
    state.hydrate(vec![token_key(3)], vec![None]);
    // Live, expired, and known-absent records are all known; only 4 must be asked of the replica.
    let asked = [token_key(1), token_key(2), token_key(3), token_key(4)];
    assert_eq!(state.missing(&asked), [token_key(4)]);
    assert_eq!(state.get(&token_key(2), NOW), None);
    assert_eq!(state.get(&token_key(3), NOW), None);
}

#[test]
fn hydrate_never_overwrites_resident_entries() {
    let mut state = state_with(vec![entry(1, revoked_token(NOW + HOUR))]);
    state.apply(&[(token_key(2), None)]);
    state.hydrate(
        vec![token_key(1), token_key(2), token_key(3), token_key(4)],
        vec![Some(revoked_token(NOW + 1)), Some(revoked_token(NOW + 1)), Some(revoked_token(NOW + 1)), None],
    );
    assert_eq!(state.get(&token_key(1), NOW), Some(&revoked_token(NOW + HOUR)));
    assert_eq!(state.get(&token_key(2), NOW), None);
    assert_eq!(state.get(&token_key(3), NOW), Some(&revoked_token(NOW + 1)));
    assert!(state.missing(&[token_key(4)]).is_empty());
    assert_eq!(state.len(), 4);
}

// ---------------------------------------------------------------------------------------------------------------
// What operations read, and how refusals reach the client
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn operations_name_the_grant_they_depend_on_once_its_holder_is_known() {
    let state = state_with(vec![
        entry(GRANT, Record::Grant(grant(CLIENT, &["openid"]))),
        entry(CODE, Record::Code(code(id(GRANT), None))),
        entry(REFRESH, Record::Refresh(refresh_token(id(GRANT), &grant(CLIENT, &["openid"])))),
    ]);
    let grant_key = [key(RecordKind::Grant, id(GRANT))];
    let redeem = correct_redemption(false);
    assert_eq!(redeem.keys(), [key(RecordKind::Code, id(CODE))]);
    assert_eq!(redeem.dependent_keys(&state, NOW), grant_key);
    assert!(redeem.dependent_keys(&ShardState::default(), NOW).is_empty());
    let rotation = rotate(REFRESH, NEW_REFRESH);
    assert_eq!(rotation.keys(), [key(RecordKind::Refresh, id(REFRESH))]);
    assert_eq!(rotation.dependent_keys(&state, NOW), grant_key);
    let read = GetRefresh { refresh: id(REFRESH) };
    assert_eq!(read.dependent_keys(&state, NOW), grant_key);
}

#[test]
fn refusals_map_to_their_oauth_error_codes() {
    // RFC 6749 §5.2, OIDC Core §3.1.2.6
    for (error, code) in [
        (ShardError::NotFound, ErrorCode::InvalidGrant),
        (ShardError::InvalidGrant(INVALID_CODE.into()), ErrorCode::InvalidGrant),
        (ShardError::CodeReplayed, ErrorCode::InvalidGrant),
        (ShardError::RefreshReused, ErrorCode::InvalidGrant),
        (ShardError::InvalidScope, ErrorCode::InvalidScope),
        (ShardError::LoginRequired, ErrorCode::LoginRequired),
        (ShardError::Locked { retry_after_ms: 1 }, ErrorCode::SlowDown),
        (ShardError::Unavailable("down".into()), ErrorCode::TemporarilyUnavailable),
    ] {
        assert_eq!(error.error_code(), code, "{error:?}");
    }
}

/// One request, one answer: a denied consent uses up the pending authorization, so a later "allow" finds nothing.
#[test]
fn cancel_pending_uses_up_the_request_once() {
    let (pending_id, session_id) = (RecordId([41; 32]), RecordId([42; 32]));
    let mut pending = sample_pending_for_cancel();
    pending.stage = PendingStage::Authenticated { session: session_id };
    let mut state = ShardState::default();
    state.apply(&[(RecordKey::new(RecordKind::Pending, pending_id), Some(Record::Pending(pending.clone())))]);
    let (by, other_by) = (RecordId([44; 32]), RecordId([45; 32]));
    let cancel = |session, by| CancelPending { pending: pending_id, session, by };
    let other_session = cancel(RecordId([43; 32]), by).decide(&state, 1_000);
    assert_eq!(other_session.reply, Err(ShardError::NotFound), "another browser's session cannot cancel it");
    assert!(other_session.writes.is_empty());
    let decision = cancel(session_id, by).decide(&state, 1_000);
    assert_eq!(decision.reply, Ok(pending.request.clone()));
    let finished = PendingAuthorization { stage: PendingStage::Finished { by }, ..pending.clone() };
    assert_eq!(
        decision.writes,
        vec![(RecordKey::new(RecordKind::Pending, pending_id), Some(Record::Pending(finished)))]
    );
    state.apply(&decision.writes);
    let retried = cancel(session_id, by).decide(&state, 1_000);
    assert_eq!((retried.reply, retried.writes), (Ok(pending.request.clone()), Vec::new()), "a router's retry");
    let again = cancel(session_id, other_by).decide(&state, 1_000);
    assert_eq!(again.reply, Err(ShardError::NotFound));
    let finish = GetPending { id: pending_id }.decide(&state, 1_000);
    assert_eq!(finish.reply, Err(ShardError::NotFound), "nothing left to finish");
}

fn sample_pending_for_cancel() -> PendingAuthorization {
    PendingAuthorization {
        request: AuthorizationRequest {
            client_id: "demo-public".into(),
            redirect_uri: "http://127.0.0.1:8081/callback".into(),
            response_type: idp_proto::records::ResponseType { code: true, id_token: false, token: false },
            response_mode: idp_proto::records::ResponseMode::Query,
            scopes: vec!["openid".into()],
            state: Some("s".into()),
            nonce: None,
            code_challenge: None,
            prompt: Default::default(),
            max_age: None,
            login_hint: None,
            idp_hint: None,
            ui_locales: None,
            acr_values: None,
            resource: None,
        },
        stage: PendingStage::AwaitingLogin,
        created_at_ms: 0,
        expires_at_ms: 60_000,
    }
}

/// A session forgets its expired grants on every write, and one at `MAX_SESSION_GRANTS` live grants must log in
/// again (a new session) instead of growing without bound or forgetting grants a logout must revoke.
#[test]
fn session_grant_lists_stay_bounded() {
    let mut full = session(USER, Vec::new());
    full.grants = (0..MAX_SESSION_GRANTS)
        .map(|index| SessionGrant { id: RecordId([index as u8; 32]), expires_at_ms: NOW + HOUR + index as u64 })
        .collect();
    let mut state = state_with(vec![entry(SESSION, Record::Session(full.clone()))]);
    let decision = run(&mut state, issue_for_session(None), NOW);
    assert_eq!(decision.reply.map(|_| ()), Err(ShardError::LoginRequired), "full: log in again");
    assert!(decision.writes.is_empty());

    // The same grants, all expired: they are pruned, and the new grant is the only one left.
    full.grants.iter_mut().for_each(|grant| grant.expires_at_ms = NOW - 1);
    let mut state = state_with(vec![entry(SESSION, Record::Session(full))]);
    let decision = run(&mut state, issue_for_session(None), NOW);
    assert!(decision.reply.is_ok());
    assert_eq!(grant_ids(&session_of(&state, id(SESSION), NOW).unwrap()), vec![id(GRANT)]);
}

/// Probing random well-formed handles caches absences, but never more than `MAX_CACHED_ABSENCES` of them.
#[test]
fn cached_absences_stay_bounded() {
    let mut state = ShardState::default();
    for round in 0..3 * MAX_CACHED_ABSENCES as u32 {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&round.to_be_bytes());
        state.hydrate(vec![RecordKey::new(RecordKind::Code, RecordId(bytes))], vec![None]);
        assert!(state.len() <= MAX_CACHED_ABSENCES + 1, "{} entries at round {round}", state.len());
    }
    // Live records are never dropped with the absences.
    let mut state = state_with(vec![entry(SESSION, Record::Session(session(USER, Vec::new())))]);
    for round in 0..2 * MAX_CACHED_ABSENCES as u32 {
        let mut bytes = [1u8; 32];
        bytes[..4].copy_from_slice(&round.to_be_bytes());
        state.hydrate(vec![RecordKey::new(RecordKind::Code, RecordId(bytes))], vec![None]);
    }
    assert!(session_of(&state, id(SESSION), NOW).is_some());
}
