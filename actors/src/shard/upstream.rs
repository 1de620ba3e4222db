//! Shard operations of brokered logins (federation): the upstream-login record beside its pending authorization.
//!
//! The upstream `state` is the handle of an [`UpstreamLogin`] record allocated in the shard of the pending
//! authorization, so the callback can land on any node (the record is in the replica like every other one) and the
//! pending authorization and its upstream login are decided by one actor. A record is taken once: the callback
//! marks it taken (by its request id) before it talks to the upstream, so a replayed callback is refused, while a
//! router's retry of the same take gets the same answer (I5).

use super::model::{finish_pending, Decision, ShardError, ShardOp, ShardState};
use idp_proto::records::{
    AuthorizationRequest, PendingAuthorization, PendingStage, Record, RecordKey, RecordKind, UpstreamLogin,
};
use idp_proto::RecordId;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

fn pending_key(id: RecordId) -> RecordKey {
    RecordKey::new(RecordKind::Pending, id)
}

fn login_key(id: RecordId) -> RecordKey {
    RecordKey::new(RecordKind::UpstreamLogin, id)
}

/// The pending authorization when it is live and still waits for a login.
fn awaiting_login(state: &ShardState, pending: RecordId, now_ms: u64) -> Option<&PendingAuthorization> {
    match state.get(&pending_key(pending), now_ms) {
        Some(Record::Pending(found)) if found.stage == PendingStage::AwaitingLogin => Some(found),
        _ => None,
    }
}

/// Records an upstream login for a pending authorization that still waits for a login; the record expires with
/// the pending authorization at the latest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeginUpstreamLogin {
    /// The record's id: the `state` sent to the upstream.
    pub id: RecordId,
    pub login: UpstreamLogin,
}

impl ShardOp for BeginUpstreamLogin {
    /// The pending authorization's request (its `prompt`, `max_age` and `login_hint` go to the upstream).
    type Output = AuthorizationRequest;

    fn keys(&self) -> Vec<RecordKey> {
        vec![pending_key(self.login.pending)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<AuthorizationRequest> {
        let Some(pending) = awaiting_login(state, self.login.pending, now_ms) else {
            return Decision { writes: Vec::new(), reply: Err(ShardError::NotFound) };
        };
        let login = UpstreamLogin {
            // Never beyond the pending authorization's own expiry.
            expires_at_ms: self.login.expires_at_ms.min(pending.expires_at_ms),
            // OIDC Core §3.1.2.1: `max_age=0` is `prompt=login`.
            force_login: pending.request.prompt.login || pending.request.max_age == Some(0),
            max_age: pending.request.max_age,
            client_id: pending.request.client_id.clone(),
            ..self.login
        };
        Decision {
            writes: vec![(login_key(self.id), Some(Record::UpstreamLogin(login)))],
            reply: Ok(pending.request.clone()),
        }
    }
}

/// The callback's check of `state`: the record must exist, be untaken, belong to this upstream and to this
/// browser. Taking it marks it with the request's id (single use: any other take is then refused as a replay; the
/// same request, retried by a router after its first attempt committed on an owner that died, gets the same
/// answer). Presented at another upstream's callback, it is deleted (a mix-up: the login is spoiled). Presented by
/// another browser, it is refused and kept, so the browser it belongs to can still finish.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TakeUpstreamLogin {
    pub id: RecordId,
    /// The upstream whose callback received the `state`.
    pub upstream: String,
    /// The keyed hash of the browser binding cookie the callback came with.
    pub browser: String,
    /// A fresh random id per callback request (the same in a router's retries of this operation).
    pub request: RecordId,
}

/// Why an upstream login was refused (in [`ShardError::InvalidGrant`]).
pub const OTHER_BROWSER: &str = "the sign-in was started in another browser";
pub const OTHER_UPSTREAM: &str = "the sign-in was started with another provider";

impl ShardOp for TakeUpstreamLogin {
    type Output = UpstreamLogin;

    fn keys(&self) -> Vec<RecordKey> {
        vec![login_key(self.id)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<UpstreamLogin> {
        let Some(Record::UpstreamLogin(login)) = state.get(&login_key(self.id), now_ms) else {
            return Decision { writes: Vec::new(), reply: Err(ShardError::NotFound) };
        };
        if let Some(taken_by) = login.taken_by {
            if taken_by == self.request && login.upstream == self.upstream {
                // The same request again (a router's retry): not a replay, the same answer.
                return Decision { writes: Vec::new(), reply: Ok(login.clone()) };
            }
            return Decision { writes: Vec::new(), reply: Err(ShardError::NotFound) };
        }
        let delete = vec![(login_key(self.id), None)];
        if login.upstream != self.upstream {
            return Decision { writes: delete, reply: Err(ShardError::InvalidGrant(Cow::Borrowed(OTHER_UPSTREAM))) };
        }
        if !idp_proto::secret::constant_time_eq(login.browser.as_bytes(), self.browser.as_bytes()) {
            return Decision { writes: Vec::new(), reply: Err(ShardError::InvalidGrant(Cow::Borrowed(OTHER_BROWSER))) };
        }
        let taken = UpstreamLogin { taken_by: Some(self.request), ..login.clone() };
        Decision { writes: vec![(login_key(self.id), Some(Record::UpstreamLogin(taken.clone())))], reply: Ok(taken) }
    }
}

/// Ends a pending authorization that still waits for a login, without issuing anything (the user gave up after an
/// upstream failure): one request, one answer, then the client is told why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AbandonPending {
    pub pending: RecordId,
    /// Drawn per request: a router's retry of this request after its first attempt committed gets the same answer.
    /// Random when absent (a forward from a node of an older version).
    #[serde(default = "RecordId::random")]
    pub by: RecordId,
}

impl ShardOp for AbandonPending {
    type Output = AuthorizationRequest;

    fn keys(&self) -> Vec<RecordKey> {
        vec![pending_key(self.pending)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<AuthorizationRequest> {
        match state.get(&pending_key(self.pending), now_ms) {
            Some(Record::Pending(pending)) if pending.stage == (PendingStage::Finished { by: self.by }) => {
                Decision { writes: Vec::new(), reply: Ok(pending.request.clone()) }
            }
            Some(Record::Pending(pending)) if pending.stage == PendingStage::AwaitingLogin => {
                let write = finish_pending(self.pending, pending.clone(), self.by, now_ms);
                Decision { writes: vec![write], reply: Ok(pending.request.clone()) }
            }
            _ => Decision { writes: Vec::new(), reply: Err(ShardError::NotFound) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_proto::records::{Prompt, ResponseMode, ResponseType};

    const NOW: u64 = 1_000_000;
    const PENDING: RecordId = RecordId([1; 32]);
    const LOGIN: RecordId = RecordId([2; 32]);
    const REQUEST: RecordId = RecordId([4; 32]);

    fn request() -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: "demo".into(),
            redirect_uri: "https://rp.example/cb".into(),
            response_type: ResponseType { code: true, id_token: false, token: false },
            response_mode: ResponseMode::Query,
            scopes: vec!["openid".into()],
            state: Some("s".into()),
            nonce: None,
            code_challenge: None,
            prompt: Prompt::default(),
            max_age: None,
            login_hint: None,
            idp_hint: None,
            ui_locales: None,
            acr_values: None,
            resource: None,
        }
    }

    fn pending(stage: PendingStage) -> Record {
        Record::Pending(PendingAuthorization {
            request: request(),
            stage,
            created_at_ms: NOW,
            expires_at_ms: NOW + 600_000,
        })
    }

    fn login() -> UpstreamLogin {
        UpstreamLogin {
            upstream: "acme".into(),
            pending: PENDING,
            nonce: "n".into(),
            pkce_verifier: "v".repeat(43),
            browser: "b1".into(),
            created_at_ms: NOW,
            expires_at_ms: NOW + 300_000,
            taken_by: None,
            force_login: false,
            max_age: None,
            client_id: request().client_id,
        }
    }

    fn state_with(records: Vec<(RecordKey, Option<Record>)>) -> ShardState {
        let mut state = ShardState::default();
        state.apply(&records);
        state
    }

    fn take(upstream: &str, browser: &str) -> TakeUpstreamLogin {
        TakeUpstreamLogin { id: LOGIN, upstream: upstream.into(), browser: browser.into(), request: REQUEST }
    }

    #[test]
    fn an_upstream_login_begins_only_for_a_pending_authorization_awaiting_login() {
        let awaiting = state_with(vec![(pending_key(PENDING), Some(pending(PendingStage::AwaitingLogin)))]);
        let decision = BeginUpstreamLogin { id: LOGIN, login: login() }.decide(&awaiting, NOW);
        assert_eq!(decision.reply, Ok(request()));
        assert_eq!(decision.writes, vec![(login_key(LOGIN), Some(Record::UpstreamLogin(login())))]);

        let long = UpstreamLogin { expires_at_ms: NOW + 900_000, ..login() };
        let capped = BeginUpstreamLogin { id: LOGIN, login: long.clone() }.decide(&awaiting, NOW);
        let expected = UpstreamLogin { expires_at_ms: NOW + 600_000, ..long };
        assert_eq!(capped.writes, vec![(login_key(LOGIN), Some(Record::UpstreamLogin(expected)))], "pending's expiry");

        let expired = BeginUpstreamLogin { id: LOGIN, login: login() }.decide(&awaiting, NOW + 600_000);
        assert_eq!(expired.reply, Err(ShardError::NotFound));
        assert!(expired.writes.is_empty());

        let done = PendingStage::Authenticated { session: RecordId([3; 32]) };
        let authenticated = state_with(vec![(pending_key(PENDING), Some(pending(done)))]);
        let absent = state_with(vec![(pending_key(PENDING), None)]);
        for state in [authenticated, absent] {
            let decision = BeginUpstreamLogin { id: LOGIN, login: login() }.decide(&state, NOW);
            assert_eq!(decision.reply, Err(ShardError::NotFound));
            assert!(decision.writes.is_empty());
        }
    }

    #[test]
    fn the_login_carries_the_pending_authorizations_demand_for_a_fresh_login() {
        for (login_prompt, max_age, force) in [(true, None, true), (false, Some(0), true), (false, Some(60), false)] {
            let Record::Pending(mut found) = pending(PendingStage::AwaitingLogin) else { unreachable!() };
            (found.request.prompt.login, found.request.max_age) = (login_prompt, max_age);
            let client_id = found.request.client_id.clone();
            let state = state_with(vec![(pending_key(PENDING), Some(Record::Pending(found)))]);
            let unnamed = UpstreamLogin { client_id: String::new(), ..login() };
            let decision = BeginUpstreamLogin { id: LOGIN, login: unnamed }.decide(&state, NOW);
            let Some((_, Some(Record::UpstreamLogin(stored)))) = decision.writes.first() else { panic!("a login") };
            assert_eq!((stored.force_login, stored.max_age), (force, max_age));
            assert!(!client_id.is_empty());
            assert_eq!(stored.client_id, client_id, "the relying party is copied from the pending authorization");
        }
    }

    #[test]
    fn an_upstream_login_is_taken_once() {
        let state = state_with(vec![(login_key(LOGIN), Some(Record::UpstreamLogin(login())))]);
        let decision = take("acme", "b1").decide(&state, NOW);
        let taken = UpstreamLogin { taken_by: Some(REQUEST), ..login() };
        assert_eq!(decision.reply, Ok(taken.clone()));
        assert_eq!(decision.writes, vec![(login_key(LOGIN), Some(Record::UpstreamLogin(taken)))], "kept, marked");
        let after = state_with(decision.writes);
        let replay = TakeUpstreamLogin { request: RecordId([5; 32]), ..take("acme", "b1") };
        let decision = replay.decide(&after, NOW);
        assert_eq!(decision.reply, Err(ShardError::NotFound), "another request is a replay");
        assert!(decision.writes.is_empty());
        let decision = TakeUpstreamLogin { request: RecordId([5; 32]), ..take("evil", "b1") }.decide(&after, NOW);
        assert_eq!(decision.reply, Err(ShardError::NotFound));
        assert_eq!(take("acme", "b1").decide(&after, NOW + 300_000).reply, Err(ShardError::NotFound), "expired");
    }

    /// I5: the router retries the same operation (same request id) on the shard's new owner after the first
    /// attempt committed on an owner that died before replying; the retry must get the login, not "already used".
    #[test]
    fn a_routers_retry_of_a_committed_take_gets_the_same_answer() {
        let state = state_with(vec![(login_key(LOGIN), Some(Record::UpstreamLogin(login())))]);
        let first = take("acme", "b1").decide(&state, NOW);
        let rehydrated = state_with(first.writes.clone());
        let retry = take("acme", "b1").decide(&rehydrated, NOW);
        assert_eq!(retry.reply, first.reply);
        assert!(retry.writes.is_empty());
        assert_eq!(retry.reply.unwrap().pkce_verifier, login().pkce_verifier);
    }

    #[test]
    fn another_browser_is_refused_and_the_login_kept_for_its_own() {
        let state = state_with(vec![(login_key(LOGIN), Some(Record::UpstreamLogin(login())))]);
        let decision = take("acme", "b2").decide(&state, NOW);
        assert_eq!(decision.reply, Err(ShardError::InvalidGrant(Cow::Borrowed(OTHER_BROWSER))));
        assert!(decision.writes.is_empty());
        assert_eq!(take("acme", "").decide(&state, NOW).reply, Err(ShardError::InvalidGrant(OTHER_BROWSER.into())));
    }

    #[test]
    fn another_upstream_spoils_the_login() {
        let state = state_with(vec![(login_key(LOGIN), Some(Record::UpstreamLogin(login())))]);
        let decision = take("evil", "b1").decide(&state, NOW);
        assert_eq!(decision.reply, Err(ShardError::InvalidGrant(Cow::Borrowed(OTHER_UPSTREAM))));
        assert_eq!(decision.writes, vec![(login_key(LOGIN), None)]);
    }

    #[test]
    fn an_expired_upstream_login_is_not_found() {
        let state = state_with(vec![(login_key(LOGIN), Some(Record::UpstreamLogin(login())))]);
        assert_eq!(take("acme", "b1").decide(&state, NOW + 300_000).reply, Err(ShardError::NotFound));
    }

    #[test]
    fn abandoning_ends_only_a_pending_authorization_awaiting_login_and_answers_its_retry() {
        const BY: RecordId = RecordId([5; 32]);
        let mut state = state_with(vec![(pending_key(PENDING), Some(pending(PendingStage::AwaitingLogin)))]);
        let decision = AbandonPending { pending: PENDING, by: BY }.decide(&state, NOW);
        assert_eq!(decision.reply, Ok(request()));
        let [(written_key, Some(Record::Pending(finished)))] = &decision.writes[..] else { panic!("{decision:?}") };
        assert_eq!((*written_key, &finished.stage), (pending_key(PENDING), &PendingStage::Finished { by: BY }));
        state.apply(&decision.writes);
        let retried = AbandonPending { pending: PENDING, by: BY }.decide(&state, NOW + 1);
        assert_eq!((retried.reply, retried.writes), (Ok(request()), Vec::new()), "a retry gets the same answer");
        let other = AbandonPending { pending: PENDING, by: RecordId([6; 32]) }.decide(&state, NOW + 1);
        assert_eq!((other.reply, other.writes), (Err(ShardError::NotFound), Vec::new()), "another request does not");

        let done = PendingStage::Authenticated { session: RecordId([3; 32]) };
        let state = state_with(vec![(pending_key(PENDING), Some(pending(done)))]);
        let decision = AbandonPending { pending: PENDING, by: BY }.decide(&state, NOW);
        assert_eq!(decision.reply, Err(ShardError::NotFound));
        assert!(decision.writes.is_empty());
    }
}
