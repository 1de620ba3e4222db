//! Shard operations by name, for the internal RPC: a node that does not host a shard sends the operation, encoded
//! with serde, to the node that does; that node decodes it by name and runs it on its actor.
//!
//! Every [`ShardOp`] the node uses is listed once in [`named_ops!`], which gives it its wire name and the decoding
//! arm of [`run_named`]; an operation missing from the list cannot be forwarded (it does not compile).

use super::model::*;
use super::upstream::{AbandonPending, BeginUpstreamLogin, TakeUpstreamLogin};
use super::user_sessions::{ForgetUserSessions, GetUserSessions, IndexUserSessions};
use futures::future::BoxFuture;
use idp_proto::ShardId;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An operation that can cross the internal RPC.
pub trait NamedOp: ShardOp + Clone + Serialize + DeserializeOwned
where
    Self::Output: Serialize + DeserializeOwned,
{
    /// The operation's name on the wire: stable across versions of the node.
    const NAME: &'static str;
}

/// Where a received operation runs: `None` when the shard is not hosted here (the sender retries elsewhere).
pub trait OpRunner: Sync {
    fn run<O: NamedOp>(&self, shard: ShardId, op: O) -> BoxFuture<'_, Option<ShardResult<O::Output>>>
    where
        O::Output: Serialize + DeserializeOwned;
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoteOpError {
    #[error("unknown shard operation `{0}`")]
    UnknownOp(String),
    #[error("malformed shard operation `{op}`: {reason}")]
    Malformed { op: String, reason: String },
}

/// Encodes an operation for the wire.
pub fn encode_op<O: NamedOp>(op: &O) -> Vec<u8>
where
    O::Output: Serialize + DeserializeOwned,
{
    serde_json::to_vec(op).expect("shard operations serialize")
}

/// Encodes an operation's result for the wire.
pub fn encode_result<T: Serialize>(result: &ShardResult<T>) -> Vec<u8> {
    serde_json::to_vec(result).expect("shard results serialize")
}

/// Decodes an operation's result from the wire.
pub fn decode_result<T: DeserializeOwned>(bytes: &[u8]) -> ShardResult<T> {
    serde_json::from_slice(bytes).unwrap_or_else(|error| {
        Err(ShardError::Unavailable(format!("malformed reply from the shard's owner: {error}")))
    })
}

macro_rules! named_ops {
    ($($op:ident),* $(,)?) => {
        $(impl NamedOp for $op {
            const NAME: &'static str = stringify!($op);
        })*

        /// Every operation name, for tests and diagnostics.
        pub const OP_NAMES: &[&str] = &[$(stringify!($op)),*];

        /// Decodes the operation `name` from `body` and runs it; the encoded result, or `None` when not hosted.
        pub async fn run_named<R: OpRunner>(
            runner: &R,
            shard: ShardId,
            name: &str,
            body: &[u8],
        ) -> Result<Option<Vec<u8>>, RemoteOpError> {
            match name {
                $(stringify!($op) => {
                    // The position only: serde's message can quote a field (a code, a token).
                    let op: $op = serde_json::from_slice(body).map_err(|error| RemoteOpError::Malformed {
                        op: name.to_string(),
                        reason: format!("{:?} error at line {} column {}", error.classify(), error.line(), error.column()),
                    })?;
                    Ok(runner.run(shard, op).await.map(|result| encode_result(&result)))
                })*
                _ => Err(RemoteOpError::UnknownOp(name.chars().take(64).collect())),
            }
        }
    };
}

named_ops!(
    CreatePending,
    IndexUserSessions,
    GetUserSessions,
    ForgetUserSessions,
    GetPending,
    AuthenticatePending,
    CancelPending,
    GetSession,
    FinishPending,
    IssueForSession,
    EndSession,
    RedeemCode,
    RotateRefresh,
    GetRefresh,
    RevokeGrant,
    CheckGrant,
    RevokeToken,
    IsTokenRevoked,
    UseOnce,
    GetConsent,
    GrantConsent,
    BeginLoginAttempt,
    LoginSucceeded,
    BeginUpstreamLogin,
    TakeUpstreamLogin,
    AbandonPending,
);

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use idp_proto::RecordId;

    /// Runs nothing: answers as if every operation found nothing, to test the decoding.
    struct Echo;

    impl OpRunner for Echo {
        fn run<O: NamedOp>(&self, shard: ShardId, _op: O) -> BoxFuture<'_, Option<ShardResult<O::Output>>>
        where
            O::Output: Serialize + DeserializeOwned,
        {
            async move { (shard.0 != 7).then_some(Err(ShardError::NotFound)) }.boxed()
        }
    }

    /// A node of an older version forwards these operations without their request ids: they still decode (with a
    /// random id, so no retry is recognised, as before).
    #[test]
    fn request_ids_added_later_default_when_absent() {
        use crate::shard::model::{BeginLoginAttempt, CancelPending, ThrottlePolicy, UseOnce};
        use crate::shard::upstream::AbandonPending;
        fn without<T: Serialize + DeserializeOwned>(op: &T, field: &str) -> T {
            let mut value = serde_json::to_value(op).unwrap();
            assert!(value.as_object_mut().unwrap().remove(field).is_some(), "{field}");
            serde_json::from_value(value).unwrap()
        }
        let id = RecordId([1; 32]);
        let cancel = without(&CancelPending { pending: id, session: id, by: id }, "by");
        assert_ne!(cancel.by, id);
        assert_ne!(without(&UseOnce { id, expires_at_ms: 1, by: id }, "by").by, id);
        assert_ne!(without(&AbandonPending { pending: id, by: id }, "by").by, id);
        let policy =
            ThrottlePolicy { delay_after: 1, delay_step_ms: 1, max_delay_ms: 1, max_failures: 2, lockout_ms: 1 };
        assert_ne!(without(&BeginLoginAttempt { id, policy, attempt: id }, "attempt").attempt, id);
    }

    #[test]
    fn names_are_unique() {
        let mut names = OP_NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), OP_NAMES.len());
    }

    #[actix_rt::test]
    async fn an_operation_crosses_the_wire_and_back() {
        let op = GetSession { id: RecordId([3; 32]) };
        let body = encode_op(&op);
        let reply = run_named(&Echo, ShardId(1), GetSession::NAME, &body).await.unwrap().unwrap();
        assert_eq!(decode_result::<idp_proto::records::Session>(&reply), Err(ShardError::NotFound));
        assert_eq!(run_named(&Echo, ShardId(7), GetSession::NAME, &body).await, Ok(None));
    }

    #[actix_rt::test]
    async fn unknown_and_malformed_operations_are_refused() {
        let unknown = run_named(&Echo, ShardId(1), "DropEverything", b"{}").await;
        assert_eq!(unknown, Err(RemoteOpError::UnknownOp("DropEverything".into())));
        let malformed = run_named(&Echo, ShardId(1), RedeemCode::NAME, b"{\"code\": 5}").await;
        assert!(matches!(malformed, Err(RemoteOpError::Malformed { .. })), "{malformed:?}");
    }

    #[test]
    fn every_error_survives_the_wire() {
        let errors = [
            ShardError::NotFound,
            ShardError::InvalidGrant("refresh token was revoked".into()),
            ShardError::CodeReplayed,
            ShardError::RefreshReused,
            ShardError::InvalidScope,
            ShardError::LoginRequired,
            ShardError::Locked { retry_after_ms: 1500 },
            ShardError::Unavailable("replica down".into()),
            ShardError::Moved,
        ];
        for error in errors {
            let bytes = encode_result::<()>(&Err(error.clone()));
            assert_eq!(decode_result::<()>(&bytes), Err(error));
        }
        assert!(matches!(decode_result::<()>(b"garbage"), Err(ShardError::Unavailable(_))));
    }
}
