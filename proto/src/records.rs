//! Sharded records: what a `ShardActor` owns and its replica stores.
//!
//! Every record lives in one shard, named by a [`RecordKey`] (its kind and 256-bit id). The records of one login
//! share a shard: the pending authorization picks it at random, and the session, codes, grants and refresh tokens
//! born from it are allocated beside it, so code redemption, refresh rotation and logout are single-shard, atomic
//! state changes.
//!
//! Stored form: [`StoredRecord`] carries a format version (`v`); [`StoredRecord::decode`] migrates older versions.

use crate::handle::RecordId;
use serde::{Deserialize, Serialize};

/// The current stored-format version of [`StoredRecord`]. Version 2: a session lists its grants with their expiry.
pub const RECORD_FORMAT_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Pending,
    Session,
    Code,
    Grant,
    Refresh,
    Consent,
    Throttle,
    RevokedToken,
    UserSessions,
    UpstreamLogin,
}

impl RecordKind {
    pub const ALL: [RecordKind; 10] = [
        Self::Pending,
        Self::Session,
        Self::Code,
        Self::Grant,
        Self::Refresh,
        Self::Consent,
        Self::Throttle,
        Self::RevokedToken,
        Self::UserSessions,
        Self::UpstreamLogin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Session => "session",
            Self::Code => "code",
            Self::Grant => "grant",
            Self::Refresh => "refresh",
            Self::Consent => "consent",
            Self::Throttle => "throttle",
            Self::RevokedToken => "revoked",
            Self::UserSessions => "user_sessions",
            Self::UpstreamLogin => "upstream_login",
        }
    }
}

/// The name of a record inside its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordKey {
    pub kind: RecordKind,
    pub id: RecordId,
}

impl RecordKey {
    pub fn new(kind: RecordKind, id: RecordId) -> Self {
        Self { kind, id }
    }
}

/// `response_type` of an authorization request (OAuth 2.0 Multiple Response Type Encoding Practices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseType {
    pub code: bool,
    pub id_token: bool,
    pub token: bool,
}

impl ResponseType {
    /// Parses a space-separated response type; `None` for an unknown or empty combination.
    pub fn parse(text: &str) -> Option<Self> {
        let mut response_type = Self::default();
        for word in text.split(' ') {
            let flag = match word {
                "code" => &mut response_type.code,
                "id_token" => &mut response_type.id_token,
                "token" => &mut response_type.token,
                _ => return None,
            };
            if *flag {
                return None;
            }
            *flag = true;
        }
        // `token` alone is the OAuth implicit grant, which RFC 9700 §2.1.2 says not to use: not offered.
        let valid = response_type.code || response_type.id_token;
        valid.then_some(response_type)
    }

    /// The canonical spelling, as listed in discovery and client registrations.
    pub fn as_str(self) -> &'static str {
        match (self.code, self.id_token, self.token) {
            (true, false, false) => "code",
            (false, true, false) => "id_token",
            (false, true, true) => "id_token token",
            (true, true, false) => "code id_token",
            (true, false, true) => "code token",
            (true, true, true) => "code id_token token",
            _ => "token",
        }
    }

    /// Whether the response carries anything other than a code (and so defaults to the fragment).
    pub fn is_front_channel_token(self) -> bool {
        self.id_token || self.token
    }

    pub const ALL: [&'static str; 6] =
        ["code", "id_token", "id_token token", "code id_token", "code token", "code id_token token"];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

impl ResponseMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "query" => Some(Self::Query),
            "fragment" => Some(Self::Fragment),
            "form_post" => Some(Self::FormPost),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Fragment => "fragment",
            Self::FormPost => "form_post",
        }
    }
}

/// `prompt` values of OIDC Core §3.1.2.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
    pub select_account: bool,
}

/// A validated authorization request, kept while the user logs in or consents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub response_type: ResponseType,
    pub response_mode: ResponseMode,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// PKCE S256 challenge (RFC 7636 §4.2); `plain` is refused before a request gets here.
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
    /// The upstream provider to sign in through at once, skipping the login page (`idp_hint`, federation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_hint: Option<String>,
    pub ui_locales: Option<String>,
    pub acr_values: Option<String>,
    /// RFC 8707 resource indicator, which becomes the access token's audience.
    pub resource: Option<String>,
}

impl AuthorizationRequest {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted == scope)
    }
}

/// Where a pending authorization stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum PendingStage {
    /// Waiting for the login form.
    AwaitingLogin,
    /// The user authenticated in this session (same shard); consent or completion is next.
    Authenticated { session: RecordId },
    /// Answered (a grant issued, consent denied, or the login abandoned) by the request whose id is `by`: the
    /// record stays a short while so that a router's retry of that request, after its first attempt committed on an
    /// owner that then died, gets the same answer. Every other use finds it gone.
    Finished { by: RecordId },
}

/// An `/authorize` call waiting for login or consent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub request: AuthorizationRequest,
    pub stage: PendingStage,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

impl PendingAuthorization {
    /// Already answered: kept only for a retry of the request that finished it.
    pub fn is_finished(&self) -> bool {
        matches!(self.stage, PendingStage::Finished { .. })
    }
}

/// How the user authenticated, for `auth_time`, `amr` and `acr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authentication {
    pub user_id: String,
    /// Unix seconds (OIDC Core §2 `auth_time`).
    pub auth_time: u64,
    pub amr: Vec<String>,
    pub acr: Option<String>,
}

/// A browser SSO session; its cookie is the session's handle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub authentication: Authentication,
    /// The public session id of the `sid` claim; unlike the handle it is not a credential.
    pub sid: String,
    /// Grants issued in this session (same shard), revoked at logout; expired ones are pruned on every write.
    pub grants: Vec<SessionGrant>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// A grant issued in a session, with its expiry so the session can forget it once it is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    pub id: RecordId,
    pub expires_at_ms: u64,
}

/// An authorization code; the grant it names holds everything issued from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    pub grant: RecordId,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    /// Single-use marker (invariant I2): set on the first redemption, kept until expiry to detect replays.
    pub consumed: bool,
    /// The refresh-token id the redeeming request chose (its `new_refresh`): the same request, retried by a router
    /// whose first attempt committed on an owner that then died or was cut off, gets the same answer instead of
    /// being taken for a replay. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeemed_with: Option<RecordId>,
    pub expires_at_ms: u64,
}

/// One authorization of a client by a user: what codes, access tokens and refresh tokens are issued from.
/// Revoking it (code replay, refresh reuse, `/revoke`, logout) invalidates all of them at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    pub authentication: Authentication,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    /// The session it was issued in (same shard), if any.
    pub session: Option<RecordId>,
    pub sid: Option<String>,
    /// Audience of its access tokens (RFC 8707 resource), when one was asked for.
    pub resource: Option<String>,
    /// Issued refresh tokens survive logout (`offline_access`, unless configured otherwise).
    pub offline: bool,
    pub revoked: bool,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// One refresh token of a grant's rotation chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub grant: RecordId,
    pub client_id: String,
    /// Single-use marker (invariant I3): set when rotated; kept so that a reuse revokes the family.
    pub used: bool,
    /// The successor's id, chosen by the rotating request (its `new_refresh`): the same request retried by a router
    /// after its first attempt committed is answered again, not taken for a reuse. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<RecordId>,
    pub expires_at_ms: u64,
}

/// A user's consent to a client's scopes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub user_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at_ms: u64,
}

/// Consecutive failed logins for one username (existing or not).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginThrottle {
    pub failures: u32,
    pub last_failure_ms: u64,
    pub locked_until_ms: u64,
    pub expires_at_ms: u64,
    /// The last attempt counted and the delay it was given: a router's retry of that attempt is not counted twice.
    /// Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<(RecordId, u64)>,
}

/// The sessions of one user (the index the admin API lists and revokes by), in the shard of a keyed hash of the
/// user id. Written before the session it names, so it lists every session of the user (and perhaps sessions that
/// were never created, or belong to another user: readers check each session).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSessions {
    pub sessions: Vec<IndexedSession>,
    pub expires_at_ms: u64,
}

/// A session handle (its shard and id) and its expiry, as indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedSession {
    pub shard: u16,
    pub id: RecordId,
    pub expires_at_ms: u64,
}

/// A revoked access token (by `jti`) that no grant covers, kept until the token would have expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    pub expires_at_ms: u64,
    /// For an identifier used once (a client assertion's `jti`): the request that used it, whose router retry is
    /// accepted again. Absent for revoked tokens and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<RecordId>,
}

/// A brokered login in flight at an upstream provider (federation): what the callback needs to check the answer.
/// Its id is the upstream `state` (a handle in the shard of the pending authorization it belongs to), so the
/// callback can land on any node; it is used once (taken, then kept marked until it expires) and lives a few
/// minutes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamLogin {
    /// The upstream's configured `id`.
    pub upstream: String,
    /// The pending authorization (same shard) the login finishes.
    pub pending: RecordId,
    /// The `nonce` sent to the upstream (OIDC Core §3.1.2.1), checked in its ID token.
    pub nonce: String,
    /// The PKCE verifier (RFC 7636 §4.1) of the challenge sent to the upstream.
    pub pkce_verifier: String,
    /// A keyed hash of the browser binding cookie of the browser that was sent to the upstream.
    pub browser: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// The request id of the callback that took the record (single use). The record is kept, marked, until it
    /// expires, so that a router retrying the same take on a new owner (after the first attempt committed on an
    /// owner that then died) gets the same answer, while any other take is a replay. Absent until taken, and in
    /// records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<RecordId>,
    /// Copied by the shard from the pending authorization: the relying party asked for a fresh login
    /// (`prompt=login`) or one at most `max_age` seconds old, which the upstream's `auth_time` must then honour.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_login: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// Copied by the shard from the pending authorization: the relying party the login is for (audit and
    /// metrics of the sign-in). Empty in records written before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
}

/// The nonce, the verifier and the browser binding stay out of logs.
impl std::fmt::Debug for UpstreamLogin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("UpstreamLogin")
            .field("upstream", &self.upstream)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Pending(PendingAuthorization),
    Session(Session),
    Code(AuthCode),
    Grant(Grant),
    Refresh(RefreshToken),
    Consent(Consent),
    Throttle(LoginThrottle),
    RevokedToken(RevokedToken),
    UserSessions(UserSessions),
    UpstreamLogin(UpstreamLogin),
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Self::Pending(_) => RecordKind::Pending,
            Self::Session(_) => RecordKind::Session,
            Self::Code(_) => RecordKind::Code,
            Self::Grant(_) => RecordKind::Grant,
            Self::Refresh(_) => RecordKind::Refresh,
            Self::Consent(_) => RecordKind::Consent,
            Self::Throttle(_) => RecordKind::Throttle,
            Self::RevokedToken(_) => RecordKind::RevokedToken,
            Self::UserSessions(_) => RecordKind::UserSessions,
            Self::UpstreamLogin(_) => RecordKind::UpstreamLogin,
        }
    }

    /// When the record may be forgotten (it becomes a TTL in the replica).
    pub fn expires_at_ms(&self) -> u64 {
        match self {
            Self::Pending(record) => record.expires_at_ms,
            Self::Session(record) => record.expires_at_ms,
            Self::Code(record) => record.expires_at_ms,
            Self::Grant(record) => record.expires_at_ms,
            Self::Refresh(record) => record.expires_at_ms,
            Self::Consent(record) => record.expires_at_ms,
            Self::Throttle(record) => record.expires_at_ms,
            Self::RevokedToken(record) => record.expires_at_ms,
            Self::UserSessions(record) => record.expires_at_ms,
            Self::UpstreamLogin(record) => record.expires_at_ms,
        }
    }
}

/// The stored form of a record: its format version beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub v: u32,
    pub record: Record,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("stored record has unknown format version {0}")]
    UnknownVersion(u32),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl StoredRecord {
    pub fn encode(record: &Record) -> Vec<u8> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            v: u32,
            record: &'a Record,
        }
        serde_json::to_vec(&Borrowed { v: RECORD_FORMAT_VERSION, record })
            .expect("records serialize infallibly: plain data with string keys")
    }

    /// Decodes a stored record, migrating older format versions.
    pub fn decode(bytes: &[u8]) -> Result<Record, FormatError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        let version: VersionOnly = serde_json::from_slice(bytes)?;
        match version.v {
            RECORD_FORMAT_VERSION => Ok(serde_json::from_slice::<StoredRecord>(bytes)?.record),
            1 => Self::migrate_v1(serde_json::from_slice(bytes)?),
            other => Err(FormatError::UnknownVersion(other)),
        }
    }

    /// Version 1 listed a session's grants as bare ids: each gets the session's own expiry (an upper bound, so
    /// nothing a logout must revoke is forgotten early).
    fn migrate_v1(mut stored: serde_json::Value) -> Result<Record, FormatError> {
        let record = &mut stored["record"];
        if record["kind"] == "session" {
            let expires_at_ms = record["expires_at_ms"].clone();
            if let Some(grants) = record["grants"].as_array_mut() {
                for grant in grants.iter_mut() {
                    *grant = serde_json::json!({ "id": grant.take(), "expires_at_ms": expires_at_ms });
                }
            }
        }
        Ok(serde_json::from_value(stored["record"].take())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 session (grants as bare ids) reads as a version-2 one, each grant with the session's expiry.
    #[test]
    fn version_1_sessions_migrate() {
        let grant = RecordId([9; 32]);
        let v1 = serde_json::json!({"v": 1, "record": {"kind": "session",
            "authentication": {"user_id": "alice", "auth_time": 5, "amr": ["pwd"], "acr": null},
            "sid": "s", "grants": [grant], "created_at_ms": 1, "expires_at_ms": 777}});
        let Record::Session(session) = StoredRecord::decode(v1.to_string().as_bytes()).unwrap() else {
            panic!("a session")
        };
        assert_eq!(session.grants, vec![SessionGrant { id: grant, expires_at_ms: 777 }]);
        let v1_code = serde_json::json!({"v": 1, "record": {"kind": "revoked_token", "expires_at_ms": 3}});
        assert_eq!(
            StoredRecord::decode(v1_code.to_string().as_bytes()).unwrap(),
            Record::RevokedToken(RevokedToken { expires_at_ms: 3, used_by: None })
        );
    }

    /// Fields added for router retries are optional: records written before them still read, and a finished
    /// pending authorization and a throttle with its last attempt round-trip.
    #[test]
    fn retry_fields_are_optional_and_round_trip() {
        let old = serde_json::json!({"v": RECORD_FORMAT_VERSION, "record": {"kind": "throttle", "failures": 2,
            "last_failure_ms": 5, "locked_until_ms": 0, "expires_at_ms": 9}});
        let Record::Throttle(throttle) = StoredRecord::decode(old.to_string().as_bytes()).unwrap() else {
            panic!("a throttle")
        };
        assert_eq!((throttle.failures, throttle.last_attempt), (2, None));
        let with_attempt = Record::Throttle(LoginThrottle { last_attempt: Some((RecordId([3; 32]), 500)), ..throttle });
        assert_eq!(StoredRecord::decode(&StoredRecord::encode(&with_attempt)).unwrap(), with_attempt);
        let stage = PendingStage::Finished { by: RecordId([4; 32]) };
        let text = serde_json::to_string(&stage).unwrap();
        assert!(text.contains(r#""stage":"finished""#), "{text}");
        assert_eq!(serde_json::from_str::<PendingStage>(&text).unwrap(), stage);
    }

    #[test]
    fn response_types_parse_every_listed_combination() {
        for text in ResponseType::ALL {
            let parsed = ResponseType::parse(text).unwrap();
            assert_eq!(parsed.as_str(), text);
        }
        // Order does not matter (OAuth Multiple Response Types §5).
        assert_eq!(ResponseType::parse("token id_token").unwrap().as_str(), "id_token token");
    }

    #[test]
    fn response_types_refuse_unknown_duplicated_and_bare_token() {
        for text in ["", "token", "code code", "code  id_token", "Code", "device_code", "none"] {
            assert_eq!(ResponseType::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn stored_records_round_trip_and_reject_unknown_versions() {
        let record = Record::Refresh(RefreshToken {
            grant: RecordId([7; 32]),
            client_id: "demo".into(),
            used: false,
            rotated_to: None,
            expires_at_ms: 42,
        });
        let bytes = StoredRecord::encode(&record);
        assert_eq!(StoredRecord::decode(&bytes).unwrap(), record);
        let future = String::from_utf8(bytes).unwrap().replace("\"v\":2", "\"v\":99");
        assert!(matches!(StoredRecord::decode(future.as_bytes()), Err(FormatError::UnknownVersion(99))));
        assert!(matches!(StoredRecord::decode(b"{not json"), Err(FormatError::Corrupt(_))));
    }
}
