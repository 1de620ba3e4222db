//! Audit events: who did what, for a SIEM. Every event is one JSON line with a stable, versioned schema
//! (`docs/audit.md`), written to stdout or a file and, when configured, appended to a Redis stream.
//!
//! Emitting never blocks and never fails a request: [`Audit::emit`] puts the event on a bounded queue; a writer
//! thread drains it. When the queue is full the event is dropped and counted (`idp_audit_events_dropped_total`).
//! Events carry no secret and no raw subject: users appear as a keyed hash ([`SubjectHasher`]).

mod sink;
mod time;

use crate::config::Config;
use crate::telemetry::metrics as m;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idp_actors::keyring::kek::Kek;
use idp_actors::replica::RedisTarget;
use serde::Serialize;
use std::sync::Arc;

/// Version of the record schema; bumped only on a change that could break a consumer (a field removed or retyped).
pub const SCHEMA_VERSION: u32 = 1;

/// What happened. Serialized with the variant's snake_case name as `event` and its fields beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A user proved who they are (`method`: `pwd`, or `upstream:<provider>` for a brokered login).
    LoginSucceeded { client_id: String, subject: String, method: String },
    /// A login attempt failed; `reason` is one of `bad_credentials`, `locked`, `unavailable`, `upstream_error`.
    LoginFailed { client_id: String, reason: String },
    /// A user granted scopes to a client on the consent page.
    ConsentGranted { client_id: String, subject: String, scopes: Vec<String> },
    /// The token endpoint (or the authorization endpoint, for implicit/hybrid responses) issued tokens.
    TokenIssued {
        client_id: String,
        grant_type: String,
        /// The user's hashed subject; absent for `client_credentials`.
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// `access_token`, `id_token`, `refresh_token`.
        tokens: Vec<String>,
        scopes: Vec<String>,
    },
    /// A token was revoked at `/revoke` (`token_kind`: `access_token` or `refresh_token`).
    TokenRevoked { client_id: String, token_kind: String },
    /// Invariant I2: a consumed authorization code was presented again; its grant was revoked.
    CodeReplayDetected { client_id: String },
    /// Invariant I3: a rotated refresh token was presented again; its family was revoked.
    RefreshReuseDetected { client_id: String },
    /// A logout (`outcome`: `session_ended`, `no_session`, `rejected`).
    Logout {
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        outcome: String,
    },
    /// A signing key was generated (it is published as `next`).
    KeyGenerated { kid: String, alg: String },
    /// A signing key became `current` (it signs from now on).
    KeyActivated { kid: String, alg: String },
    /// A signing key left the JWKS.
    KeyRetired { kid: String, alg: String },
    /// An operator changed something through the admin API: `actor` (the admin client or certificate subject),
    /// `action` (e.g. `client.create`), `target` (e.g. the client id).
    AdminChange { actor: String, action: String, target: String },
    /// This node took (`acquired`) or gave up (`released`, `lost`) a shard's lease.
    ShardMoved { shard: u16, direction: String, epoch: u64 },
}

impl AuditEvent {
    /// The `event` field: the variant's snake_case name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LoginSucceeded { .. } => "login_succeeded",
            Self::LoginFailed { .. } => "login_failed",
            Self::ConsentGranted { .. } => "consent_granted",
            Self::TokenIssued { .. } => "token_issued",
            Self::TokenRevoked { .. } => "token_revoked",
            Self::CodeReplayDetected { .. } => "code_replay_detected",
            Self::RefreshReuseDetected { .. } => "refresh_reuse_detected",
            Self::Logout { .. } => "logout",
            Self::KeyGenerated { .. } => "key_generated",
            Self::KeyActivated { .. } => "key_activated",
            Self::KeyRetired { .. } => "key_retired",
            Self::AdminChange { .. } => "admin_change",
            Self::ShardMoved { .. } => "shard_moved",
        }
    }
}

/// One written record: the envelope (schema version, time, node, request id) and the event.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    /// The node that emitted it.
    pub node: Arc<str>,
    /// The HTTP request it belongs to (`X-Request-Id`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl AuditRecord {
    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Keyed hash of a subject identifier, for audit records and log lines that need to correlate a user without
/// naming them. Keyed by a key derived from the KEK, so it cannot be reversed by hashing guessed identifiers.
#[derive(Clone)]
pub struct SubjectHasher {
    key: Arc<hmac::Key>,
}

impl SubjectHasher {
    pub fn new(kek: &Kek) -> Self {
        Self { key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &kek.derive("audit-subject"))) }
    }

    /// 128 bits of HMAC-SHA-256 of the subject, base64url: stable for one KEK, unlinkable without it.
    pub fn hash(&self, subject: &str) -> String {
        let tag = hmac::sign(&self.key, subject.as_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
    }
}

/// The handle every part of a node emits audit events through. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    queue_tx: Option<tokio::sync::mpsc::Sender<AuditRecord>>,
    node: Arc<str>,
    subjects: SubjectHasher,
}

impl Audit {
    /// Starts the writer as `config.audit` says. `redis` is the cluster's Redis, for `audit.redis_stream`.
    pub fn start(config: &Config, kek: &Kek, node: &str, redis: Option<RedisTarget>) -> anyhow::Result<Self> {
        let subjects = SubjectHasher::new(kek);
        let sinks = sink::Sinks::open(&config.audit, redis)?;
        if sinks.is_empty() {
            return Ok(Self { queue_tx: None, node: node.into(), subjects });
        }
        let (queue_tx, queue_rx) = tokio::sync::mpsc::channel(config.audit.queue_capacity);
        sinks.spawn(queue_rx)?;
        Ok(Self { queue_tx: Some(queue_tx), node: node.into(), subjects })
    }

    /// An audit that writes nothing (tests of other parts).
    pub fn disabled(kek: &Kek) -> Self {
        Self { queue_tx: None, node: "test".into(), subjects: SubjectHasher::new(kek) }
    }

    /// Queues the event; never blocks. A full queue drops it and counts the drop.
    pub fn emit(&self, event: AuditEvent) {
        m::audit_event(event.kind());
        let Some(queue_tx) = &self.queue_tx else { return };
        let record = AuditRecord {
            v: SCHEMA_VERSION,
            time: time::rfc3339_millis(std::time::SystemTime::now()),
            node: self.node.clone(),
            request_id: crate::telemetry::request_id::current(),
            event,
        };
        if queue_tx.try_send(record).is_err() {
            m::audit_dropped();
        }
    }

    /// The keyed hash of a subject, as audit records and logs show it.
    pub fn subject(&self, subject: &str) -> String {
        self.subjects.hash(subject)
    }

    pub fn subjects(&self) -> &SubjectHasher {
        &self.subjects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_object_with_the_envelope_and_the_event_fields() {
        let record = AuditRecord {
            v: SCHEMA_VERSION,
            time: "2026-11-23T17:00:00.000Z".into(),
            node: "node-1".into(),
            request_id: Some("req-1".into()),
            event: AuditEvent::AdminChange {
                actor: "ops".into(),
                action: "client.create".into(),
                target: "app".into(),
            },
        };
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "time": "2026-11-23T17:00:00.000Z", "node": "node-1", "request_id": "req-1",
                "event": "admin_change", "actor": "ops", "action": "client.create", "target": "app"})
        );
    }

    #[test]
    fn kind_is_the_serialized_event_name() {
        let events = [
            AuditEvent::LoginSucceeded { client_id: "c".into(), subject: "s".into(), method: "pwd".into() },
            AuditEvent::LoginFailed { client_id: "c".into(), reason: "locked".into() },
            AuditEvent::ConsentGranted { client_id: "c".into(), subject: "s".into(), scopes: vec![] },
            AuditEvent::TokenIssued {
                client_id: "c".into(),
                grant_type: "g".into(),
                subject: None,
                tokens: vec![],
                scopes: vec![],
            },
            AuditEvent::TokenRevoked { client_id: "c".into(), token_kind: "access_token".into() },
            AuditEvent::CodeReplayDetected { client_id: "c".into() },
            AuditEvent::RefreshReuseDetected { client_id: "c".into() },
            AuditEvent::Logout { client_id: None, subject: None, outcome: "no_session".into() },
            AuditEvent::KeyGenerated { kid: "k".into(), alg: "RS256".into() },
            AuditEvent::KeyActivated { kid: "k".into(), alg: "RS256".into() },
            AuditEvent::KeyRetired { kid: "k".into(), alg: "RS256".into() },
            AuditEvent::AdminChange { actor: "a".into(), action: "b".into(), target: "c".into() },
            AuditEvent::ShardMoved { shard: 3, direction: "acquired".into(), epoch: 7 },
        ];
        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["event"], event.kind());
        }
    }

    #[test]
    fn subject_hashes_are_stable_per_kek_and_differ_across_keks() {
        let kek = Kek::random();
        let hasher = SubjectHasher::new(&kek);
        assert_eq!(hasher.hash("alice"), hasher.hash("alice"));
        assert_ne!(hasher.hash("alice"), hasher.hash("bob"));
        assert_ne!(hasher.hash("alice"), SubjectHasher::new(&Kek::random()).hash("alice"));
        assert!(!hasher.hash("alice").contains("alice"));
        assert_eq!(hasher.hash("alice").len(), 22);
    }

    #[test]
    fn a_disabled_audit_accepts_events_without_a_writer() {
        let audit = Audit::disabled(&Kek::random());
        audit.emit(AuditEvent::CodeReplayDetected { client_id: "c".into() });
    }
}
