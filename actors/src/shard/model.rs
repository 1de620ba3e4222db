//! The state of one shard as plain data, and every state change as a pure function over it.
//!
//! Each operation is a message type (`RedeemCode`, `RotateRefresh`, ...) implementing [`ShardOp`]: it names the
//! records it reads ([`ShardOp::keys`]) and decides, from those records and the time, the writes it needs and the
//! reply it gives once they are durable ([`Decision`]). No I/O and no clock here: `ShardActor` fetches missing
//! records, applies the writes, waits for the replica, then replies.

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idp_proto::records::{
    AuthCode, Authentication, AuthorizationRequest, Consent, Grant, LoginThrottle, PendingAuthorization, PendingStage,
    Record, RecordKey, RecordKind, RefreshToken, RevokedToken, Session, SessionGrant,
};
use idp_proto::{ErrorCode, RecordId};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;

/// Why a shard operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ShardError {
    /// The record does not exist, expired, or was already used up (a finished pending authorization).
    #[error("not found or expired")]
    NotFound,
    /// The grant failed a check (client, redirect URI, PKCE, revoked); the text is safe to show the client.
    #[error("{0}")]
    InvalidGrant(Cow<'static, str>),
    /// Invariant I2: a consumed code was presented again; the grant issued from it is revoked.
    #[error("authorization code was already used")]
    CodeReplayed,
    /// Invariant I3: a rotated refresh token was presented again; its whole family is revoked.
    #[error("refresh token was already used")]
    RefreshReused,
    #[error("requested scope exceeds the granted scope")]
    InvalidScope,
    /// The session behind the request ended, or authenticated too long ago (`max_age`).
    #[error("login required")]
    LoginRequired,
    /// Too many failed logins for this username.
    #[error("too many attempts, try again later")]
    Locked { retry_after_ms: u64 },
    /// The replica did not acknowledge; the change may or may not be stored.
    #[error("state temporarily unavailable: {0}")]
    Unavailable(String),
    /// This node no longer owns the shard (its lease moved, or a write was fenced); nothing was changed, and the
    /// router retries on the new owner.
    #[error("shard moved to another node")]
    Moved,
}

impl ShardError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::NotFound | Self::InvalidGrant(_) | Self::CodeReplayed | Self::RefreshReused => {
                ErrorCode::InvalidGrant
            }
            Self::InvalidScope => ErrorCode::InvalidScope,
            Self::LoginRequired => ErrorCode::LoginRequired,
            Self::Locked { .. } => ErrorCode::SlowDown,
            Self::Unavailable(_) | Self::Moved => ErrorCode::TemporarilyUnavailable,
        }
    }
}

pub type ShardResult<T> = Result<T, ShardError>;

/// Cached absences kept at most; beyond it they are all forgotten (random well-formed handles cost a replica read
/// each, never memory without bound).
pub const MAX_CACHED_ABSENCES: usize = 8192;

/// Records resident in memory; an entry of `None` records that the replica has no such record.
#[derive(Debug, Default)]
pub struct ShardState {
    records: HashMap<RecordKey, Option<Record>>,
    /// Upper bound of the `None` entries (counted when inserted, reset when they are dropped).
    absences: usize,
}

impl ShardState {
    /// A live record, or `None` when absent or expired.
    pub fn get(&self, key: &RecordKey, now_ms: u64) -> Option<&Record> {
        self.records.get(key)?.as_ref().filter(|record| record.expires_at_ms() > now_ms)
    }

    /// Keys whose presence or absence is not known in memory yet.
    pub fn missing(&self, keys: &[RecordKey]) -> Vec<RecordKey> {
        keys.iter().filter(|key| !self.records.contains_key(key)).copied().collect()
    }

    /// Records what the replica said about keys that were missing; never overwrites a resident entry.
    pub fn hydrate(&mut self, keys: Vec<RecordKey>, values: Vec<Option<Record>>) {
        self.bound_absences();
        for (key, value) in keys.into_iter().zip(values) {
            self.absences += usize::from(value.is_none());
            self.records.entry(key).or_insert(value);
        }
    }

    pub fn apply(&mut self, writes: &[(RecordKey, Option<Record>)]) {
        self.bound_absences();
        for (key, value) in writes {
            self.absences += usize::from(value.is_none());
            self.records.insert(*key, value.clone());
        }
    }

    /// Forgets every cached absence once there are too many (a later read asks the replica again).
    fn bound_absences(&mut self) {
        if self.absences >= MAX_CACHED_ABSENCES {
            self.records.retain(|_, value| value.is_some());
            self.absences = 0;
        }
    }

    /// Forgets expired records and cached absences (the replica expires its own copies).
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let before = self.records.len();
        self.records.retain(|_, value| value.as_ref().is_some_and(|record| record.expires_at_ms() > now_ms));
        self.absences = 0;
        before - self.records.len()
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.absences = 0;
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What an operation decided: writes to make durable, then the reply.
#[derive(Debug)]
pub struct Decision<T> {
    pub writes: Vec<(RecordKey, Option<Record>)>,
    pub reply: ShardResult<T>,
}

impl<T> Decision<T> {
    fn reply(reply: ShardResult<T>) -> Self {
        Self { writes: Vec::new(), reply }
    }

    fn write(writes: Vec<(RecordKey, Option<Record>)>, reply: ShardResult<T>) -> Self {
        Self { writes, reply }
    }
}

/// One state change of a shard, decided purely from the records it names.
pub trait ShardOp: Send + 'static {
    type Output: Send + 'static;

    /// The records the decision reads.
    fn keys(&self) -> Vec<RecordKey>;

    /// Records named by the records of [`ShardOp::keys`] (a code's grant); asked again after each fetch.
    fn dependent_keys(&self, _state: &ShardState, _now_ms: u64) -> Vec<RecordKey> {
        Vec::new()
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Self::Output>;
}

fn key(kind: RecordKind, id: RecordId) -> RecordKey {
    RecordKey::new(kind, id)
}

macro_rules! typed_getter {
    ($name:ident, $variant:ident, $type:ty, $kind:ident) => {
        fn $name(state: &ShardState, id: RecordId, now_ms: u64) -> Option<$type> {
            match state.get(&key(RecordKind::$kind, id), now_ms) {
                Some(Record::$variant(record)) => Some(record.clone()),
                _ => None,
            }
        }
    };
}

typed_getter!(pending_of, Pending, PendingAuthorization, Pending);
typed_getter!(session_of, Session, Session, Session);
typed_getter!(code_of, Code, AuthCode, Code);
typed_getter!(grant_of, Grant, Grant, Grant);
typed_getter!(refresh_of, Refresh, RefreshToken, Refresh);
typed_getter!(throttle_of, Throttle, LoginThrottle, Throttle);
typed_getter!(consent_of, Consent, Consent, Consent);

// ---------------------------------------------------------------------------------------------------------------
// Pending authorizations and sessions
// ---------------------------------------------------------------------------------------------------------------

/// Stores an `/authorize` request that waits for login or consent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatePending {
    pub id: RecordId,
    pub pending: PendingAuthorization,
}

impl ShardOp for CreatePending {
    type Output = ();

    fn keys(&self) -> Vec<RecordKey> {
        Vec::new()
    }

    fn decide(self, _state: &ShardState, _now_ms: u64) -> Decision<()> {
        Decision::write(vec![(key(RecordKind::Pending, self.id), Some(Record::Pending(self.pending)))], Ok(()))
    }
}

/// Reads a live pending authorization.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetPending {
    pub id: RecordId,
}

impl ShardOp for GetPending {
    type Output = PendingAuthorization;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Pending, self.id)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<PendingAuthorization> {
        let open = pending_of(state, self.id, now_ms).filter(|pending| !pending.is_finished());
        Decision::reply(open.ok_or(ShardError::NotFound))
    }
}

/// The user proved who they are for a pending authorization: start (or refresh) the SSO session beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthenticatePending {
    pub pending: RecordId,
    /// The browser's current session in this shard, refreshed when it belongs to the same user.
    pub existing_session: Option<RecordId>,
    /// The id of a new session otherwise.
    pub new_session: RecordId,
    pub new_sid: String,
    pub authentication: Authentication,
    pub session_expires_at_ms: u64,
}

/// The session a pending authorization is now bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authenticated {
    pub session: RecordId,
    pub sid: String,
}

impl ShardOp for AuthenticatePending {
    type Output = Authenticated;

    fn keys(&self) -> Vec<RecordKey> {
        let mut keys = vec![key(RecordKind::Pending, self.pending)];
        keys.extend(self.existing_session.map(|id| key(RecordKind::Session, id)));
        keys
    }

    /// The session this very request created, when a router retries it after its first attempt committed.
    fn dependent_keys(&self, state: &ShardState, now_ms: u64) -> Vec<RecordKey> {
        match pending_of(state, self.pending, now_ms).map(|pending| pending.stage) {
            Some(PendingStage::Authenticated { session }) if session == self.new_session => {
                vec![key(RecordKind::Session, session)]
            }
            _ => Vec::new(),
        }
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Authenticated> {
        // A successful login POST is accepted once: a replay finds the pending authorization past this stage.
        let Some(mut pending) = pending_of(state, self.pending, now_ms) else {
            return Decision::reply(Err(ShardError::NotFound));
        };
        if let PendingStage::Authenticated { session: bound } = pending.stage {
            // The same request again: a router retried it on this owner after its first attempt committed on an
            // owner that then died or was cut off. The same answer. Its session is the new one (its id is drawn
            // per request), or the browser's that it reused, which carries this request's authentication (its
            // time and methods).
            let retried = session_of(state, bound, now_ms).filter(|session| {
                bound == self.new_session
                    || (Some(bound) == self.existing_session && session.authentication == self.authentication)
            });
            if let Some(session) = retried {
                return Decision::reply(Ok(Authenticated { session: bound, sid: session.sid.clone() }));
            }
        }
        if pending.stage != PendingStage::AwaitingLogin {
            return Decision::reply(Err(ShardError::NotFound));
        }
        let reusable = self.existing_session.and_then(|id| {
            let session = session_of(state, id, now_ms)?;
            (session.authentication.user_id == self.authentication.user_id).then_some((id, session))
        });
        let (session_id, session) = match reusable {
            Some((id, mut session)) => {
                session.authentication = self.authentication;
                session.expires_at_ms = session.expires_at_ms.max(self.session_expires_at_ms);
                (id, session)
            }
            None => (
                self.new_session,
                Session {
                    authentication: self.authentication,
                    sid: self.new_sid,
                    grants: Vec::new(),
                    created_at_ms: now_ms,
                    expires_at_ms: self.session_expires_at_ms,
                },
            ),
        };
        pending.stage = PendingStage::Authenticated { session: session_id };
        let reply = Authenticated { session: session_id, sid: session.sid.clone() };
        Decision::write(
            vec![
                (key(RecordKind::Session, session_id), Some(Record::Session(session))),
                (key(RecordKind::Pending, self.pending), Some(Record::Pending(pending))),
            ],
            Ok(reply),
        )
    }
}

/// Ends a pending authorization without issuing anything (consent denied): one request gets one answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CancelPending {
    pub pending: RecordId,
    /// The browser's session: must be the one the pending authorization was authenticated in.
    pub session: RecordId,
    /// Drawn per request: a router's retry of this request after its first attempt committed gets the same answer.
    /// Random when absent (a forward from a node of an older version: no retry recognised, as before).
    #[serde(default = "RecordId::random")]
    pub by: RecordId,
}

impl ShardOp for CancelPending {
    type Output = AuthorizationRequest;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Pending, self.pending)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<AuthorizationRequest> {
        match pending_of(state, self.pending, now_ms) {
            Some(pending) if pending.stage == (PendingStage::Finished { by: self.by }) => {
                Decision::reply(Ok(pending.request))
            }
            Some(pending) if pending.stage == (PendingStage::Authenticated { session: self.session }) => {
                let request = pending.request.clone();
                Decision::write(vec![finish_pending(self.pending, pending, self.by, now_ms)], Ok(request))
            }
            _ => Decision::reply(Err(ShardError::NotFound)),
        }
    }
}

/// How long a finished pending authorization is kept for a retry of the request that finished it: far longer
/// than any router retries (`cluster.forward_timeout`), far shorter than a pending authorization lives.
pub const FINISHED_PENDING_KEPT_MS: u64 = 60_000;

/// The write that marks a pending authorization answered by the request `by`, kept only for that request's retry.
pub fn finish_pending(
    id: RecordId,
    mut pending: PendingAuthorization,
    by: RecordId,
    now_ms: u64,
) -> (RecordKey, Option<Record>) {
    pending.stage = PendingStage::Finished { by };
    pending.expires_at_ms = pending.expires_at_ms.min(now_ms + FINISHED_PENDING_KEPT_MS);
    (key(RecordKind::Pending, id), Some(Record::Pending(pending)))
}

/// Reads a live session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetSession {
    pub id: RecordId,
}

impl ShardOp for GetSession {
    type Output = Session;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Session, self.id)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Session> {
        Decision::reply(session_of(state, self.id, now_ms).ok_or(ShardError::NotFound))
    }
}

/// How to issue a grant (and maybe a code) at the end of an authorization.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantIssue {
    pub grant: RecordId,
    /// A code to issue with the grant (response types with `code`).
    pub code: Option<RecordId>,
    pub code_expires_at_ms: u64,
    pub grant_expires_at_ms: u64,
    /// Whether refresh tokens issued from this grant survive logout (`offline_access`).
    pub offline: bool,
}

/// What an authorization issued: the grant, and the request and authentication it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub request: AuthorizationRequest,
    pub authentication: Authentication,
    pub sid: String,
}

/// Ends a pending authorization whose user authenticated (and consented, when asked): issues its grant and code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishPending {
    pub pending: RecordId,
    /// The browser's session: must be the one the pending authorization was authenticated in.
    pub session: RecordId,
    pub issue: GrantIssue,
}

impl ShardOp for FinishPending {
    type Output = Issued;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Pending, self.pending), key(RecordKind::Session, self.session)]
    }

    /// The grant this very request issued, when a router retries it after its first attempt committed.
    fn dependent_keys(&self, state: &ShardState, now_ms: u64) -> Vec<RecordKey> {
        match pending_of(state, self.pending, now_ms).map(|pending| pending.stage) {
            Some(PendingStage::Finished { by }) if by == self.issue.grant => vec![key(RecordKind::Grant, by)],
            _ => Vec::new(),
        }
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Issued> {
        let Some(pending) = pending_of(state, self.pending, now_ms) else {
            return Decision::reply(Err(ShardError::NotFound));
        };
        if pending.stage == (PendingStage::Finished { by: self.issue.grant }) {
            // The same request again (its grant id is drawn per request), after its first attempt committed on an
            // owner that then died or was cut off: the same answer, from the grant it issued.
            let issued = issued_before(state, &self.issue, self.session, pending.request, now_ms);
            return Decision::reply(issued.ok_or(ShardError::NotFound));
        }
        if pending.stage != (PendingStage::Authenticated { session: self.session }) {
            return Decision::reply(Err(ShardError::NotFound));
        }
        let Some(session) = session_of(state, self.session, now_ms) else {
            return Decision::reply(Err(ShardError::LoginRequired));
        };
        if !has_room_for_a_grant(&session, now_ms) {
            return Decision::reply(Err(ShardError::LoginRequired));
        }
        let mut writes = vec![finish_pending(self.pending, pending.clone(), self.issue.grant, now_ms)];
        let issued = issue_grant(&mut writes, self.session, session, pending.request, self.issue, now_ms);
        Decision::write(writes, Ok(issued))
    }
}

/// Issues a grant (and maybe a code) to a browser whose live session needs no interaction (SSO).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssueForSession {
    pub session: RecordId,
    pub request: AuthorizationRequest,
    /// `max_age`: the session must have authenticated at or after this Unix second.
    pub authenticated_since: Option<u64>,
    pub issue: GrantIssue,
}

impl ShardOp for IssueForSession {
    type Output = Issued;

    /// The grant too: it exists only when a router retries this very request after its first attempt committed.
    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Session, self.session), key(RecordKind::Grant, self.issue.grant)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Issued> {
        if let Some(issued) = issued_before(state, &self.issue, self.session, self.request.clone(), now_ms) {
            return Decision::reply(Ok(issued));
        }
        let Some(session) = session_of(state, self.session, now_ms) else {
            return Decision::reply(Err(ShardError::LoginRequired));
        };
        if self.authenticated_since.is_some_and(|since| session.authentication.auth_time < since) {
            return Decision::reply(Err(ShardError::LoginRequired));
        }
        if !has_room_for_a_grant(&session, now_ms) {
            return Decision::reply(Err(ShardError::LoginRequired));
        }
        let mut writes = Vec::new();
        let issued = issue_grant(&mut writes, self.session, session, self.request, self.issue, now_ms);
        Decision::write(writes, Ok(issued))
    }
}

/// What a grant issued by an earlier attempt of the same request answered (its id is drawn per request): `None`
/// when there is no such grant in that session, or it was revoked since.
fn issued_before(
    state: &ShardState,
    issue: &GrantIssue,
    session: RecordId,
    request: AuthorizationRequest,
    now_ms: u64,
) -> Option<Issued> {
    let grant =
        grant_of(state, issue.grant, now_ms).filter(|grant| !grant.revoked && grant.session == Some(session))?;
    Some(Issued { request, authentication: grant.authentication, sid: grant.sid.unwrap_or_default() })
}

/// Live grants one session may hold; a session at the limit must log in again (a new session) rather than
/// forget grants a logout would then fail to revoke.
pub const MAX_SESSION_GRANTS: usize = 512;

/// Whether the session has room for one more grant, after forgetting its expired ones.
fn has_room_for_a_grant(session: &Session, now_ms: u64) -> bool {
    session.grants.iter().filter(|grant| grant.expires_at_ms > now_ms).count() < MAX_SESSION_GRANTS
}

/// Writes a new grant (and code) beside the session and links it to the session for logout.
fn issue_grant(
    writes: &mut Vec<(RecordKey, Option<Record>)>,
    session_id: RecordId,
    mut session: Session,
    request: AuthorizationRequest,
    issue: GrantIssue,
    now_ms: u64,
) -> Issued {
    let grant = Grant {
        client_id: request.client_id.clone(),
        authentication: session.authentication.clone(),
        scopes: request.scopes.clone(),
        nonce: request.nonce.clone(),
        session: Some(session_id),
        sid: Some(session.sid.clone()),
        resource: request.resource.clone(),
        offline: issue.offline,
        revoked: false,
        created_at_ms: now_ms,
        expires_at_ms: issue.grant_expires_at_ms,
    };
    writes.push((key(RecordKind::Grant, issue.grant), Some(Record::Grant(grant))));
    if let Some(code_id) = issue.code {
        let code = AuthCode {
            grant: issue.grant,
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            consumed: false,
            redeemed_with: None,
            expires_at_ms: issue.code_expires_at_ms,
        };
        writes.push((key(RecordKind::Code, code_id), Some(Record::Code(code))));
    }
    session.grants.retain(|grant| grant.expires_at_ms > now_ms && grant.id != issue.grant);
    session.grants.push(SessionGrant { id: issue.grant, expires_at_ms: issue.grant_expires_at_ms });
    let issued = Issued { request, authentication: session.authentication.clone(), sid: session.sid.clone() };
    writes.push((key(RecordKind::Session, session_id), Some(Record::Session(session))));
    issued
}

/// RP-initiated logout: ends the session and revokes the grants issued in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndSession {
    pub session: RecordId,
    /// `offline_access` grants survive when this is set (`logout.keep_offline_tokens`).
    pub keep_offline: bool,
}

impl ShardOp for EndSession {
    type Output = usize;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Session, self.session)]
    }

    fn dependent_keys(&self, state: &ShardState, now_ms: u64) -> Vec<RecordKey> {
        let grants = session_of(state, self.session, now_ms).map(|session| session.grants).unwrap_or_default();
        grants.into_iter().map(|grant| key(RecordKind::Grant, grant.id)).collect()
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<usize> {
        let Some(session) = session_of(state, self.session, now_ms) else {
            return Decision::reply(Ok(0));
        };
        let mut writes = vec![(key(RecordKind::Session, self.session), None)];
        for grant_id in session.grants.iter().map(|grant| grant.id) {
            let Some(mut grant) = grant_of(state, grant_id, now_ms) else { continue };
            if grant.revoked || (self.keep_offline && grant.offline) {
                continue;
            }
            grant.revoked = true;
            writes.push((key(RecordKind::Grant, grant_id), Some(Record::Grant(grant))));
        }
        let revoked = writes.len() - 1;
        Decision::write(writes, Ok(revoked))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Codes, grants and refresh tokens
// ---------------------------------------------------------------------------------------------------------------

/// A grant as redeemed or refreshed: what the token endpoint mints tokens from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTokens {
    pub grant_id: RecordId,
    pub grant: Grant,
    /// The new refresh token, when one is issued.
    pub refresh: Option<RecordId>,
    /// The scopes of the access token (narrower than the grant's after a narrowing refresh).
    pub scopes: Vec<String>,
}

/// Token request with `grant_type=authorization_code` (RFC 6749 §4.1.3).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RedeemCode {
    pub code: RecordId,
    pub client_id: String,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    /// Issue a refresh token (the client may use `refresh_token` and the grant holds `offline_access`).
    pub client_may_refresh: bool,
    pub new_refresh: RecordId,
}

impl ShardOp for RedeemCode {
    type Output = GrantTokens;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Code, self.code)]
    }

    fn dependent_keys(&self, state: &ShardState, now_ms: u64) -> Vec<RecordKey> {
        code_of(state, self.code, now_ms).map(|code| key(RecordKind::Grant, code.grant)).into_iter().collect()
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<GrantTokens> {
        let Some(mut code) = code_of(state, self.code, now_ms) else {
            return Decision::reply(Err(ShardError::InvalidGrant(Cow::Borrowed(
                "authorization code is invalid or expired",
            ))));
        };
        let grant = grant_of(state, code.grant, now_ms);
        if code.consumed && code.redeemed_with == Some(self.new_refresh) {
            // The same request again: a router retried it on this owner after its first attempt committed on an
            // owner that then died or was cut off before replying. Not a replay: the same answer.
            return match grant.filter(|grant| !grant.revoked) {
                Some(grant) => {
                    let refresh = (self.client_may_refresh
                        && grant.scopes.iter().any(|scope| scope == "offline_access"))
                    .then_some(self.new_refresh);
                    let scopes = grant.scopes.clone();
                    Decision::reply(Ok(GrantTokens { grant_id: code.grant, grant, refresh, scopes }))
                }
                None => Decision::reply(Err(ShardError::InvalidGrant(Cow::Borrowed(
                    "authorization code is invalid or expired",
                )))),
            };
        }
        if code.consumed {
            // Invariant I2 and RFC 6749 §4.1.2: a replay revokes every token issued from the code.
            let writes = revoke_grant_write(code.grant, grant);
            return Decision::write(writes, Err(ShardError::CodeReplayed));
        }
        if let Err(reason) = check_code(&code, &self) {
            return Decision::reply(Err(ShardError::InvalidGrant(Cow::Borrowed(reason))));
        }
        let Some(grant) = grant.filter(|grant| !grant.revoked) else {
            return Decision::reply(Err(ShardError::InvalidGrant(Cow::Borrowed(
                "authorization code is invalid or expired",
            ))));
        };
        code.consumed = true;
        code.redeemed_with = Some(self.new_refresh);
        let mut writes = vec![(key(RecordKind::Code, self.code), Some(Record::Code(code.clone())))];
        let refresh = (self.client_may_refresh && grant.scopes.iter().any(|scope| scope == "offline_access"))
            .then(|| push_refresh(&mut writes, self.new_refresh, code.grant, &grant));
        let scopes = grant.scopes.clone();
        Decision::write(writes, Ok(GrantTokens { grant_id: code.grant, grant, refresh, scopes }))
    }
}

/// The checks of RFC 6749 §4.1.3 and RFC 7636 §4.6 for a code that was not used yet.
fn check_code(code: &AuthCode, request: &RedeemCode) -> Result<(), &'static str> {
    if code.client_id != request.client_id {
        return Err("authorization code was issued to another client");
    }
    if request.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
        return Err("redirect_uri does not match the authorization request");
    }
    match (&code.code_challenge, &request.code_verifier) {
        (Some(challenge), Some(verifier)) => verify_pkce(challenge, verifier),
        (Some(_), None) => Err("code_verifier is required"),
        // RFC 9700 §2.1.1: a verifier without a challenge is a downgrade attempt.
        (None, Some(_)) => Err("code_verifier sent but no code_challenge was"),
        (None, None) => Ok(()),
    }
}

/// RFC 7636 §4.1 (verifier syntax) and §4.6 (S256 comparison).
pub fn verify_pkce(challenge: &str, verifier: &str) -> Result<(), &'static str> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte));
    if !well_formed {
        return Err("code_verifier is malformed");
    }
    let computed = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    if idp_proto::secret::constant_time_eq(computed.as_bytes(), challenge.as_bytes()) {
        Ok(())
    } else {
        Err("code_verifier does not match the code_challenge")
    }
}

fn revoke_grant_write(grant_id: RecordId, grant: Option<Grant>) -> Vec<(RecordKey, Option<Record>)> {
    match grant {
        Some(mut grant) if !grant.revoked => {
            grant.revoked = true;
            vec![(key(RecordKind::Grant, grant_id), Some(Record::Grant(grant)))]
        }
        _ => Vec::new(),
    }
}

fn push_refresh(
    writes: &mut Vec<(RecordKey, Option<Record>)>,
    refresh_id: RecordId,
    grant_id: RecordId,
    grant: &Grant,
) -> RecordId {
    let token = RefreshToken {
        grant: grant_id,
        client_id: grant.client_id.clone(),
        used: false,
        rotated_to: None,
        expires_at_ms: grant.expires_at_ms,
    };
    writes.push((key(RecordKind::Refresh, refresh_id), Some(Record::Refresh(token))));
    refresh_id
}

/// Token request with `grant_type=refresh_token` (RFC 6749 §6), rotating the token (RFC 9700 §4.14.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RotateRefresh {
    pub refresh: RecordId,
    pub client_id: String,
    /// A narrower scope for the new access token (RFC 6749 §6); `None` keeps the grant's.
    pub scopes: Option<Vec<String>>,
    pub new_refresh: RecordId,
}

impl ShardOp for RotateRefresh {
    type Output = GrantTokens;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Refresh, self.refresh)]
    }

    fn dependent_keys(&self, state: &ShardState, now_ms: u64) -> Vec<RecordKey> {
        refresh_grant_key(state, self.refresh, now_ms)
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<GrantTokens> {
        let Some(mut token) = refresh_of(state, self.refresh, now_ms) else {
            return Decision::reply(Err(ShardError::InvalidGrant(Cow::Borrowed(
                "refresh token is invalid or expired",
            ))));
        };
        if token.client_id != self.client_id {
            return Decision::reply(Err(ShardError::InvalidGrant(Cow::Borrowed(
                "refresh token was issued to another client",
            ))));
        }
        let grant = grant_of(state, token.grant, now_ms);
        // The same request again (a router retried it after its first attempt committed on an owner that then
        // died or was cut off before replying): answered again below, without a second rotation.
        let retried = token.used && token.rotated_to == Some(self.new_refresh);
        if token.used && !retried {
            // Invariant I3: no grace window; a reuse revokes the whole family at once.
            return Decision::write(revoke_grant_write(token.grant, grant), Err(ShardError::RefreshReused));
        }
        let Some(grant) = grant.filter(|grant| !grant.revoked) else {
            return Decision::reply(Err(ShardError::InvalidGrant(Cow::Borrowed("refresh token was revoked"))));
        };
        let scopes = match self.scopes {
            Some(asked) if asked.iter().any(|scope| !grant.scopes.contains(scope)) => {
                return Decision::reply(Err(ShardError::InvalidScope));
            }
            Some(asked) => asked,
            None => grant.scopes.clone(),
        };
        if retried {
            let refresh = Some(self.new_refresh);
            return Decision::reply(Ok(GrantTokens { grant_id: token.grant, grant, refresh, scopes }));
        }
        token.used = true;
        token.rotated_to = Some(self.new_refresh);
        let mut writes = vec![(key(RecordKind::Refresh, self.refresh), Some(Record::Refresh(token.clone())))];
        let refresh = Some(push_refresh(&mut writes, self.new_refresh, token.grant, &grant));
        Decision::write(writes, Ok(GrantTokens { grant_id: token.grant, grant, refresh, scopes }))
    }
}

fn refresh_grant_key(state: &ShardState, refresh: RecordId, now_ms: u64) -> Vec<RecordKey> {
    refresh_of(state, refresh, now_ms).map(|token| key(RecordKind::Grant, token.grant)).into_iter().collect()
}

/// Reads the grant behind a refresh token, for introspection and revocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetRefresh {
    pub refresh: RecordId,
}

impl ShardOp for GetRefresh {
    type Output = (RefreshToken, Option<Grant>);

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Refresh, self.refresh)]
    }

    fn dependent_keys(&self, state: &ShardState, now_ms: u64) -> Vec<RecordKey> {
        refresh_grant_key(state, self.refresh, now_ms)
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Self::Output> {
        let Some(token) = refresh_of(state, self.refresh, now_ms) else {
            return Decision::reply(Err(ShardError::NotFound));
        };
        let grant = grant_of(state, token.grant, now_ms);
        Decision::reply(Ok((token, grant)))
    }
}

/// Revokes a grant (`/revoke`, or a revoked access token), if it belongs to the client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevokeGrant {
    pub grant: RecordId,
    /// The client asking; `None` for the provider itself.
    pub client_id: Option<String>,
}

impl ShardOp for RevokeGrant {
    type Output = bool;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Grant, self.grant)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<bool> {
        let grant = grant_of(state, self.grant, now_ms)
            .filter(|grant| self.client_id.as_ref().is_none_or(|client_id| *client_id == grant.client_id));
        let writes = revoke_grant_write(self.grant, grant);
        let revoked = !writes.is_empty();
        Decision::write(writes, Ok(revoked))
    }
}

/// Reads a grant that is live and not revoked (userinfo, introspection).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckGrant {
    pub grant: RecordId,
}

impl ShardOp for CheckGrant {
    type Output = Grant;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Grant, self.grant)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Grant> {
        let grant = grant_of(state, self.grant, now_ms).filter(|grant| !grant.revoked);
        Decision::reply(grant.ok_or(ShardError::NotFound))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Revoked access tokens without a grant, consents, login throttling
// ---------------------------------------------------------------------------------------------------------------

/// Remembers a revoked access token (by `jti`) until it would have expired.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevokeToken {
    pub jti: RecordId,
    pub expires_at_ms: u64,
}

impl ShardOp for RevokeToken {
    type Output = ();

    fn keys(&self) -> Vec<RecordKey> {
        Vec::new()
    }

    fn decide(self, _state: &ShardState, _now_ms: u64) -> Decision<()> {
        let record = Record::RevokedToken(RevokedToken { expires_at_ms: self.expires_at_ms, used_by: None });
        Decision::write(vec![(key(RecordKind::RevokedToken, self.jti), Some(record))], Ok(()))
    }
}

/// Whether an access token (by `jti`) was revoked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IsTokenRevoked {
    pub jti: RecordId,
}

impl ShardOp for IsTokenRevoked {
    type Output = bool;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::RevokedToken, self.jti)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<bool> {
        Decision::reply(Ok(state.get(&key(RecordKind::RevokedToken, self.jti), now_ms).is_some()))
    }
}

/// Accepts an identifier once (a client assertion's `jti`, RFC 7523 §3): a second use within its lifetime fails.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UseOnce {
    pub id: RecordId,
    pub expires_at_ms: u64,
    /// Drawn per request: a router's retry of this request after its first attempt committed is accepted again.
    /// Random when absent (a forward from a node of an older version).
    #[serde(default = "RecordId::random")]
    pub by: RecordId,
}

impl ShardOp for UseOnce {
    type Output = ();

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::RevokedToken, self.id)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<()> {
        match state.get(&key(RecordKind::RevokedToken, self.id), now_ms) {
            Some(Record::RevokedToken(used)) if used.used_by == Some(self.by) => return Decision::reply(Ok(())),
            Some(_) => return Decision::reply(Err(ShardError::InvalidGrant(Cow::Borrowed("identifier already used")))),
            None => {}
        }
        let record = Record::RevokedToken(RevokedToken { expires_at_ms: self.expires_at_ms, used_by: Some(self.by) });
        Decision::write(vec![(key(RecordKind::RevokedToken, self.id), Some(record))], Ok(()))
    }
}

/// Reads the consent of a user to a client (keyed by a hash of both).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetConsent {
    pub id: RecordId,
}

impl ShardOp for GetConsent {
    type Output = Option<Consent>;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Consent, self.id)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Option<Consent>> {
        Decision::reply(Ok(consent_of(state, self.id, now_ms)))
    }
}

/// Stores a consent, merging the scopes with any earlier consent of the same user to the same client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantConsent {
    pub id: RecordId,
    pub consent: Consent,
}

impl ShardOp for GrantConsent {
    type Output = ();

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Consent, self.id)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<()> {
        let mut consent = self.consent;
        if let Some(earlier) = consent_of(state, self.id, now_ms) {
            for scope in earlier.scopes {
                if !consent.scopes.contains(&scope) {
                    consent.scopes.push(scope);
                }
            }
        }
        Decision::write(vec![(key(RecordKind::Consent, self.id), Some(Record::Consent(consent)))], Ok(()))
    }
}

/// The throttling policy of failed logins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottlePolicy {
    pub delay_after: u32,
    pub delay_step_ms: u64,
    pub max_delay_ms: u64,
    pub max_failures: u32,
    pub lockout_ms: u64,
}

/// May this attempt proceed, and after what delay?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptAllowed {
    pub delay_ms: u64,
}

/// Starts a login attempt for a username (existing or not). The attempt counts as a failure until
/// [`LoginSucceeded`] clears it, so concurrent attempts cannot exceed the limit (exact, cluster-wide: one shard).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeginLoginAttempt {
    pub id: RecordId,
    pub policy: ThrottlePolicy,
    /// Drawn per attempt: a router's retry of this attempt after its first try committed is not counted twice.
    /// Random when absent (a forward from a node of an older version).
    #[serde(default = "RecordId::random")]
    pub attempt: RecordId,
}

impl ShardOp for BeginLoginAttempt {
    type Output = AttemptAllowed;

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Throttle, self.id)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<AttemptAllowed> {
        let mut throttle = throttle_of(state, self.id, now_ms).unwrap_or_default();
        if let Some((attempt, delay_ms)) = throttle.last_attempt {
            if attempt == self.attempt {
                return Decision::reply(Ok(AttemptAllowed { delay_ms }));
            }
        }
        if throttle.locked_until_ms > now_ms {
            return Decision::reply(Err(ShardError::Locked { retry_after_ms: throttle.locked_until_ms - now_ms }));
        }
        if throttle.locked_until_ms != 0 {
            // The lockout was served: start counting afresh.
            throttle = LoginThrottle::default();
        }
        let policy = self.policy;
        let earlier_failures = throttle.failures;
        throttle.failures += 1;
        throttle.last_failure_ms = now_ms;
        if throttle.failures >= policy.max_failures {
            throttle.locked_until_ms = now_ms + policy.lockout_ms;
        }
        throttle.expires_at_ms = throttle.locked_until_ms.max(now_ms) + policy.lockout_ms;
        let over = u64::from(earlier_failures.saturating_sub(policy.delay_after.saturating_sub(1)));
        let delay_ms = if earlier_failures >= policy.delay_after {
            (over * policy.delay_step_ms).min(policy.max_delay_ms)
        } else {
            0
        };
        throttle.last_attempt = Some((self.attempt, delay_ms));
        let writes = vec![(key(RecordKind::Throttle, self.id), Some(Record::Throttle(throttle)))];
        Decision::write(writes, Ok(AttemptAllowed { delay_ms }))
    }
}

/// A login attempt succeeded: the username's failure count is reset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginSucceeded {
    pub id: RecordId,
}

impl ShardOp for LoginSucceeded {
    type Output = ();

    fn keys(&self) -> Vec<RecordKey> {
        vec![key(RecordKind::Throttle, self.id)]
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<()> {
        if throttle_of(state, self.id, now_ms).is_none() {
            return Decision::reply(Ok(()));
        }
        Decision::write(vec![(key(RecordKind::Throttle, self.id), None)], Ok(()))
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
