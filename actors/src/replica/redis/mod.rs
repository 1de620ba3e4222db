//! The cluster's replica: Redis (a master with replicas, behind Sentinel), with fenced Lua scripts and leases.
//!
//! Connections (each a [`connection::Link`] that follows a failover):
//! - `WRITERS` writer connections, chosen by shard, each sending its queued record writes as one pipeline
//!   ([`writer`]);
//! - one control connection for leases and documents (their `WAIT`s do not hold up record writes);
//! - one read connection (`MGET`, `GET`, `PING`, `CONFIG GET`), which a `WAIT` never blocks.
//!
//! With `min_replicas_ack > 0`, every record write, document write and lease acquisition is followed by
//! `WAIT min_replicas_ack wait_timeout` in the same round trip, and fails closed (`Unavailable`) when fewer replicas
//! acknowledged: a write only the master holds could be lost by a failover.

mod connection;
pub mod keys;
mod writer;

pub use connection::connect_master;

use crate::replica::lease::{parse_lease_value, Takeover};
use crate::replica::{Acquired, Epoch, LeaseName, Leases, RecordWrite, Replica, ReplicaError, ReplicaFuture};
use crate::testing::TestingSwitches;
use connection::{Link, Master, RESPONSE_TIMEOUT};
use futures::FutureExt;
use idp_proto::records::RecordKey;
use idp_proto::ShardId;
use redis::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use writer::{fenced_reply, FencedReplyError, WriteJob, Writer, Writers};

const WRITE_DOCUMENT_LUA: &str = include_str!("lua/write_document.lua");
const ACQUIRE_LUA: &str = include_str!("lua/acquire.lua");
const RENEW_LUA: &str = include_str!("lua/renew.lua");
const RELEASE_LUA: &str = include_str!("lua/release.lua");

/// Writer connections: enough for several pipelines in flight, few enough that batches stay large.
const WRITERS: usize = 4;
/// How long `ping` waits for the master.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, e.g. `redis://127.0.0.1:6379` (no failover).
    Url(String),
    /// The master named `master_name`, as the Sentinels (`host:port`) report it; followed across failovers.
    Sentinel { sentinels: Vec<String>, master_name: String },
}

/// For logs: never the password a URL may carry.
impl fmt::Display for RedisTarget {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(url) => formatter.write_str(&redact_url(url)),
            Self::Sentinel { sentinels, master_name } => {
                write!(formatter, "master {master_name} via sentinels {}", sentinels.join(","))
            }
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "RedisTarget({self})")
    }
}

/// `redis://user:secret@host/` → `redis://***@host/`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub target: RedisTarget,
    /// Replicas that must acknowledge each write (`WAIT`) before it counts; 0 for none.
    pub min_replicas_ack: u32,
    /// How long `WAIT` waits for them.
    pub wait_timeout: Duration,
    /// Test-only switches (`unfenced_writes`, `ack_without_write`); all off in production.
    pub testing: TestingSwitches,
}

/// `WAIT replicas timeout`, and what its answer means.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplicaWait {
    replicas: u32,
    timeout: Duration,
}

impl ReplicaWait {
    fn from_settings(settings: &RedisSettings) -> Option<Self> {
        (settings.min_replicas_ack > 0)
            .then_some(Self { replicas: settings.min_replicas_ack, timeout: settings.wait_timeout })
    }

    pub(crate) fn command(self) -> redis::Cmd {
        // WAIT 0 means forever: at least one millisecond.
        let timeout_ms = self.timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
        let mut command = redis::cmd("WAIT");
        command.arg(self.replicas).arg(timeout_ms);
        command
    }

    /// The error every write of the round trip reports when too few replicas acknowledged (fail closed).
    pub(crate) fn shortfall(self, reply: &Value) -> Option<ReplicaError> {
        match reply {
            Value::Int(acknowledged) if *acknowledged >= i64::from(self.replicas) => None,
            Value::Int(acknowledged) => Some(ReplicaError::Unavailable(format!(
                "write not durable: {acknowledged} of {} required replicas acknowledged",
                self.replicas
            ))),
            other => Some(ReplicaError::Unavailable(format!("unexpected redis reply to WAIT: {other:?}"))),
        }
    }
}

/// The Redis replica. Cheap to share (`Arc`); every call is one round trip on one of its connections.
pub struct RedisReplica {
    settings: RedisSettings,
    wait: Option<ReplicaWait>,
    writers: Arc<Writers>,
    control: Arc<Link>,
    read: Arc<Link>,
    /// The runtime the connections live on: calls from other runtimes (actix arbiters) run their I/O there.
    runtime: tokio::runtime::Handle,
}

impl RedisReplica {
    /// Connects (resolving the master through the Sentinels if configured) and starts the writer tasks on the
    /// current tokio runtime, which must outlive the replica.
    pub async fn connect(settings: RedisSettings) -> Result<Arc<Self>, ReplicaError> {
        let runtime = tokio::runtime::Handle::current();
        let master = Master::new(settings.target.clone());
        let wait = ReplicaWait::from_settings(&settings);
        let write_timeout = RESPONSE_TIMEOUT + wait.map(|wait| wait.timeout).unwrap_or_default();
        let read = Arc::new(Link::new(master.clone(), RESPONSE_TIMEOUT));
        // Fail now rather than at the first write when Redis is unreachable.
        read.get().await?;
        let control = Arc::new(Link::new(master.clone(), write_timeout));
        let writers =
            (0..WRITERS).map(|_| Writer::spawn(&runtime, Link::new(master.clone(), write_timeout), wait)).collect();
        tracing::info!(redis = %master.target(), min_replicas_ack = settings.min_replicas_ack, "redis replica connected");
        Ok(Arc::new(Self { settings, wait, writers: Writers::new(writers), control, read, runtime }))
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Refuses a Redis that may evict keys: records carry TTLs, so even `volatile-*` policies would evict live
    /// sessions and codes (and forget consumed markers, allowing a replay). When `CONFIG` is disabled (a managed
    /// Redis), warns and accepts: the operator must have set `noeviction`.
    pub async fn check_eviction_policy(&self) -> Result<(), ReplicaError> {
        let mut pipeline = pipeline();
        pipeline.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        let reply = single(self.round_trip(&self.read, pipeline, "redis CONFIG GET failed").await?)?;
        let policy = match &reply {
            Value::ServerError(error) => {
                tracing::warn!(%error, "cannot read the redis maxmemory-policy (CONFIG disabled?); it must be noeviction");
                return Ok(());
            }
            Value::Array(pair) => match pair.as_slice() {
                [_, Value::BulkString(policy)] => String::from_utf8_lossy(policy).into_owned(),
                _ => return Err(unexpected("CONFIG GET maxmemory-policy", &reply)),
            },
            _ => return Err(unexpected("CONFIG GET maxmemory-policy", &reply)),
        };
        if policy != "noeviction" {
            return Err(ReplicaError::Unavailable(format!(
                "redis maxmemory-policy is {policy}: set it to noeviction, or redis will evict live records \
                 (sessions, codes, consumed markers) under memory pressure"
            )));
        }
        Ok(())
    }

    /// Whether the master answers, as master: a node that cannot reach Redis declares itself not live. A server
    /// that answers as a replica (a master demoted by a failover) makes every connection re-resolve the master.
    pub async fn ping(&self) -> bool {
        let link = self.read.clone();
        let ping = async move {
            let mut connected = link.get().await.ok()?;
            let role: Result<Value, _> = redis::cmd("ROLE").query_async(&mut connected.connection).await;
            let role = match role {
                Ok(role) => role,
                Err(error) => {
                    link.check(&connected, &error);
                    return None;
                }
            };
            let is_master = matches!(&role, Value::Array(items)
                if matches!(items.first(), Some(Value::BulkString(name)) if name.as_slice() == b"master"));
            if !is_master {
                tracing::warn!(redis = %link.target(), "redis answers as a replica; re-resolving the master");
                link.demoted(&connected);
            }
            Some(is_master)
        };
        let ping = self.runtime.spawn(tokio::time::timeout(PING_TIMEOUT, ping));
        matches!(ping.await, Ok(Ok(Some(true))))
    }

    /// Sends one pipeline on `link`, from the replica's runtime: one round trip. A lost connection is dropped (the
    /// next call reconnects); the call itself fails, never retried. Per-command errors come back as
    /// `Value::ServerError`.
    fn round_trip(
        &self,
        link: &Arc<Link>,
        pipeline: redis::Pipeline,
        context: &'static str,
    ) -> ReplicaFuture<Vec<Value>> {
        let link = link.clone();
        let task = self.runtime.spawn(async move {
            let mut connected = link.get().await?;
            let replies: Vec<Value> = pipeline
                .query_async(&mut connected.connection)
                .await
                .map_err(|error| link.failed(&connected, context, &error))?;
            for reply in &replies {
                if let Value::ServerError(error) = reply {
                    link.check(&connected, &error.clone().into());
                }
            }
            Ok(replies)
        });
        async move {
            task.await.unwrap_or_else(|error| Err(ReplicaError::Unavailable(format!("redis task failed: {error}"))))
        }
        .boxed()
    }

    /// Appends `WAIT` when replicas must acknowledge.
    fn with_wait(&self, pipeline: &mut redis::Pipeline) {
        if let Some(wait) = self.wait {
            pipeline.add_command(wait.command());
        }
    }
}

/// A pipeline whose per-command errors are values, so one failing command does not hide the others' replies.
fn pipeline() -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    pipeline
}

fn ready<T: Send + 'static>(value: T) -> ReplicaFuture<T> {
    futures::future::ready(Ok(value)).boxed()
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "simple string",
        Value::Okay => "OK",
        _ => "other",
    }
}

fn unexpected(what: &str, reply: &Value) -> ReplicaError {
    match reply {
        Value::ServerError(error) => ReplicaError::Unavailable(format!("redis refused {what}: {error}")),
        // The reply's kind only: a value may be a stored record (tokens, sessions) and must not reach a log.
        _ => ReplicaError::Unavailable(format!("unexpected redis reply to {what}: {}", value_kind(reply))),
    }
}

fn single(replies: Vec<Value>) -> Result<Value, ReplicaError> {
    let count = replies.len();
    let mut replies = replies.into_iter();
    match (replies.next(), count) {
        (Some(reply), 1) => Ok(reply),
        _ => Err(ReplicaError::Unavailable(format!("redis answered {count} replies to one command"))),
    }
}

/// Splits the replies of `[command, WAIT?]`, failing closed when too few replicas acknowledged.
fn waited(replies: Vec<Value>, wait: Option<ReplicaWait>) -> Result<Value, ReplicaError> {
    let expected = 1 + usize::from(wait.is_some());
    if replies.len() != expected {
        return Err(ReplicaError::Unavailable(format!(
            "redis answered {} replies to {expected} commands",
            replies.len()
        )));
    }
    let mut replies = replies.into_iter();
    let reply = replies.next().unwrap_or_default();
    match (wait, replies.next()) {
        (Some(wait), Some(wait_reply)) => match wait.shortfall(&wait_reply) {
            Some(shortfall) => Err(shortfall),
            None => Ok(reply),
        },
        _ => Ok(reply),
    }
}

fn bytes(value: &Value) -> Option<Option<Vec<u8>>> {
    match value {
        Value::Nil => Some(None),
        Value::BulkString(bytes) => Some(Some(bytes.clone())),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

fn epoch(value: &Value) -> Option<Epoch> {
    text(value)?.parse().ok()
}

/// Reads one entry of `acquire.lua`'s reply.
fn acquired(value: &Value) -> Option<Acquired> {
    let Value::Array(items) = value else { return None };
    match items.as_slice() {
        [Value::Int(1), granted] => Some(Acquired::Granted { epoch: epoch(granted)? }),
        [Value::Int(0), holder, held, Value::Int(remaining)] => Some(Acquired::HeldBy {
            node: text(holder)?.to_string(),
            epoch: epoch(held)?,
            // PTTL: -1 without expiry.
            expires_in_ms: u64::try_from(*remaining).ok(),
        }),
        _ => None,
    }
}

/// Maps the reply of a fenced script.
fn fenced_result(reply: &Value, lease: LeaseName, attempted: Epoch, what: &str) -> Result<(), ReplicaError> {
    match fenced_reply(reply) {
        Ok(None) => Ok(()),
        Ok(Some(current)) => Err(ReplicaError::Fenced { lease, current, attempted }),
        Err(FencedReplyError::Server(_) | FencedReplyError::Unexpected) => Err(unexpected(what, reply)),
    }
}

impl Replica for RedisReplica {
    fn write_records(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> ReplicaFuture<()> {
        if self.settings.testing.ack_without_write {
            // Test-only (I1 negative control): acknowledged, never written.
            return ready(());
        }
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        let unfenced = self.settings.testing.unfenced_writes;
        self.writers.enqueue(WriteJob { shard, epoch, writes, ack_tx, unfenced });
        async move { ack_rx.await.unwrap_or_else(|_| Err(ReplicaError::Unavailable("redis writer stopped".into()))) }
            .boxed()
    }

    fn read_records(&self, shard: ShardId, keys: Vec<RecordKey>) -> ReplicaFuture<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return ready(Vec::new());
        }
        let mut pipeline = pipeline();
        let command = pipeline.cmd("MGET");
        for key in &keys {
            command.arg(keys::record_key(shard, key));
        }
        let round_trip = self.round_trip(&self.read, pipeline, "redis read failed");
        async move {
            let reply = single(round_trip.await?)?;
            match &reply {
                Value::Array(values) if values.len() == keys.len() => {
                    values.iter().map(bytes).collect::<Option<Vec<_>>>().ok_or_else(|| unexpected("MGET", &reply))
                }
                _ => Err(unexpected("MGET", &reply)),
            }
        }
        .boxed()
    }

    fn read_document(&self, name: &str) -> ReplicaFuture<Option<Vec<u8>>> {
        let mut pipeline = pipeline();
        pipeline.cmd("GET").arg(keys::document_key(name));
        let round_trip = self.round_trip(&self.read, pipeline, "redis read failed");
        async move {
            let reply = single(round_trip.await?)?;
            bytes(&reply).ok_or_else(|| unexpected("GET", &reply))
        }
        .boxed()
    }

    /// `INCR` of [`keys::BARRIER_KEY`] then `WAIT`, on the control connection: Redis replicates in one ordered
    /// stream, so replicas that acknowledged the increment hold every write that preceded it, whichever
    /// connection wrote it and whatever was read before.
    fn durable_barrier(&self) -> ReplicaFuture<()> {
        if self.wait.is_none() {
            return ready(());
        }
        let mut pipeline = pipeline();
        pipeline.cmd("INCR").arg(keys::BARRIER_KEY);
        self.with_wait(&mut pipeline);
        let (round_trip, wait) = (self.round_trip(&self.control, pipeline, "redis barrier failed"), self.wait);
        async move {
            match waited(round_trip.await?, wait)? {
                Value::Int(_) => Ok(()),
                reply => Err(unexpected("INCR", &reply)),
            }
        }
        .boxed()
    }

    fn write_document(&self, name: &str, value: Vec<u8>) -> ReplicaFuture<()> {
        let mut pipeline = pipeline();
        pipeline.cmd("SET").arg(keys::document_key(name)).arg(value);
        self.with_wait(&mut pipeline);
        let (round_trip, wait) = (self.round_trip(&self.control, pipeline, "redis write failed"), self.wait);
        async move {
            match waited(round_trip.await?, wait)? {
                Value::Okay => Ok(()),
                reply => Err(unexpected("SET", &reply)),
            }
        }
        .boxed()
    }

    fn write_document_fenced(&self, name: &str, value: Vec<u8>, lease: LeaseName, epoch: Epoch) -> ReplicaFuture<()> {
        let mut pipeline = pipeline();
        pipeline
            .cmd("EVAL")
            .arg(WRITE_DOCUMENT_LUA)
            .arg(2)
            .arg(keys::epoch_key(&lease))
            .arg(keys::document_key(name))
            .arg(epoch)
            .arg(value);
        self.with_wait(&mut pipeline);
        let (round_trip, wait) = (self.round_trip(&self.control, pipeline, "redis write failed"), self.wait);
        async move { fenced_result(&waited(round_trip.await?, wait)?, lease, epoch, "a fenced document write") }.boxed()
    }
}

impl Leases for RedisReplica {
    fn acquire_with(
        &self,
        names: Vec<LeaseName>,
        node: &str,
        live: Vec<String>,
        takeover: Takeover,
    ) -> ReplicaFuture<Vec<Acquired>> {
        if names.is_empty() {
            return ready(Vec::new());
        }
        let mut pipeline = pipeline();
        let command = pipeline.cmd("EVAL").arg(ACQUIRE_LUA).arg(names.len() * 2);
        for name in &names {
            command.arg(keys::lease_key(name)).arg(keys::epoch_key(name));
        }
        command.arg(node).arg(takeover.ttl_ms.max(1)).arg(takeover.silence_ms).arg(live);
        // The epoch bump must survive a failover, or a new master could hand out the same epoch twice.
        self.with_wait(&mut pipeline);
        let (round_trip, wait, count) =
            (self.round_trip(&self.control, pipeline, "redis lease acquisition failed"), self.wait, names.len());
        async move {
            let reply = waited(round_trip.await?, wait)?;
            match &reply {
                Value::Array(entries) if entries.len() == count => entries
                    .iter()
                    .map(acquired)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| unexpected("lease acquisition", &reply)),
                _ => Err(unexpected("lease acquisition", &reply)),
            }
        }
        .boxed()
    }

    fn renew(&self, leases: Vec<(LeaseName, Epoch)>, node: &str, ttl_ms: u64) -> ReplicaFuture<Vec<bool>> {
        if leases.is_empty() {
            return ready(Vec::new());
        }
        let mut pipeline = pipeline();
        let command = pipeline.cmd("EVAL").arg(RENEW_LUA).arg(leases.len());
        for (name, _) in &leases {
            command.arg(keys::lease_key(name));
        }
        command.arg(node).arg(ttl_ms.max(1));
        for (_, epoch) in &leases {
            command.arg(*epoch);
        }
        let (round_trip, count) =
            (self.round_trip(&self.control, pipeline, "redis lease renewal failed"), leases.len());
        async move {
            let reply = single(round_trip.await?)?;
            match &reply {
                Value::Array(flags) if flags.len() == count => flags
                    .iter()
                    .map(|flag| match flag {
                        Value::Int(flag) => Some(*flag == 1),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| unexpected("lease renewal", &reply)),
                _ => Err(unexpected("lease renewal", &reply)),
            }
        }
        .boxed()
    }

    fn release(&self, leases: Vec<(LeaseName, Epoch)>, node: &str) -> ReplicaFuture<()> {
        if leases.is_empty() {
            return ready(());
        }
        let mut pipeline = pipeline();
        let command = pipeline.cmd("EVAL").arg(RELEASE_LUA).arg(leases.len());
        for (name, _) in &leases {
            command.arg(keys::lease_key(name));
        }
        command.arg(node);
        for (_, epoch) in &leases {
            command.arg(*epoch);
        }
        let round_trip = self.round_trip(&self.control, pipeline, "redis lease release failed");
        async move {
            match single(round_trip.await?)? {
                Value::Int(1) => Ok(()),
                reply => Err(unexpected("lease release", &reply)),
            }
        }
        .boxed()
    }

    fn holder(&self, name: LeaseName) -> ReplicaFuture<Option<(String, Epoch)>> {
        let mut pipeline = pipeline();
        pipeline.cmd("GET").arg(keys::lease_key(&name));
        let round_trip = self.round_trip(&self.read, pipeline, "redis read failed");
        async move {
            let reply = single(round_trip.await?)?;
            let stored = bytes(&reply).ok_or_else(|| unexpected("GET", &reply))?;
            let stored = stored.map(|stored| String::from_utf8_lossy(&stored).into_owned());
            Ok(stored.as_deref().and_then(parse_lease_value).map(|(node, epoch)| (node.to_string(), epoch)))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_credentials() {
        assert_eq!(redact_url("redis://:secret@redis:6379/0"), "redis://***@redis:6379/0");
        assert_eq!(redact_url("redis://user:p@ss@host"), "redis://***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("rediss://host/a@b"), "rediss://host/a@b");
        let target = RedisTarget::Sentinel { sentinels: vec!["a:1".into(), "b:2".into()], master_name: "idp".into() };
        assert_eq!(target.to_string(), "master idp via sentinels a:1,b:2");
    }

    #[test]
    fn wait_fails_closed_below_the_required_replicas() {
        let wait = ReplicaWait { replicas: 2, timeout: Duration::from_millis(500) };
        assert!(wait.shortfall(&Value::Int(2)).is_none());
        assert!(wait.shortfall(&Value::Int(3)).is_none());
        let shortfall = wait.shortfall(&Value::Int(1));
        assert!(
            matches!(&shortfall, Some(ReplicaError::Unavailable(reason)) if reason.contains("1 of 2")),
            "{shortfall:?}"
        );
        assert!(wait.shortfall(&Value::Nil).is_some());
    }
}

#[cfg(test)]
mod redis_tests;
