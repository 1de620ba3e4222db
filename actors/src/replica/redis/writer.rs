//! Pipelined, fenced record writes.
//!
//! `write_records` enqueues its job at call time, on the writer of its shard (`shard % WRITERS`), so call order is
//! execution order for every shard. Each writer owns one connection and sends everything queued while its previous
//! round trip was in flight as ONE pipeline of fenced scripts (plus a trailing `WAIT` when replicas must
//! acknowledge), so concurrent writes share a round trip; several writers keep several pipelines in flight.
//!
//! A batch is sent only after the previous one of its writer settled, so a later batch never lands before an
//! earlier one, even across a reconnection.

use super::connection::{Connected, Link};
use super::keys::{epoch_key, record_key};
use super::ReplicaWait;
use crate::replica::{Epoch, LeaseName, RecordWrite, ReplicaError};
use idp_proto::ShardId;
use redis::Value;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

const WRITE_RECORDS_LUA: &str = include_str!("lua/write_records.lua");
/// Test-only (`unfenced_writes`, the I6 negative control): the same writes without the epoch check.
const WRITE_RECORDS_UNFENCED_LUA: &str = include_str!("lua/write_records_unfenced.lua");

/// Most jobs in one pipeline; the rest waits for the next round trip.
const MAX_BATCH_JOBS: usize = 1024;

pub(crate) struct WriteJob {
    pub(crate) shard: ShardId,
    pub(crate) epoch: Epoch,
    pub(crate) writes: Vec<RecordWrite>,
    pub(crate) ack_tx: oneshot::Sender<Result<(), ReplicaError>>,
    /// Test-only: skip the epoch check.
    pub(crate) unfenced: bool,
}

/// The queue of one writer task; dropping it ends the task once the queue is drained.
pub(crate) struct Writer {
    jobs_tx: mpsc::UnboundedSender<WriteJob>,
}

impl Writer {
    pub(crate) fn spawn(runtime: &tokio::runtime::Handle, link: Link, wait: Option<ReplicaWait>) -> Self {
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        runtime.spawn(run(link, jobs_rx, wait));
        Self { jobs_tx }
    }

    /// Enqueues now; the job's acknowledgement arrives on its `ack_tx`.
    pub(crate) fn enqueue(&self, job: WriteJob) {
        if let Err(mpsc::error::SendError(job)) = self.jobs_tx.send(job) {
            let _ = job.ack_tx.send(Err(ReplicaError::Unavailable("redis writer stopped".into())));
        }
    }
}

async fn run(link: Link, mut jobs_rx: mpsc::UnboundedReceiver<WriteJob>, wait: Option<ReplicaWait>) {
    while let Some(first) = jobs_rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_JOBS {
            match jobs_rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = execute(&link, &batch, wait).await;
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.ack_tx.send(result);
        }
    }
}

/// Sends one batch as one pipeline; one result per job.
async fn execute(link: &Link, batch: &[WriteJob], wait: Option<ReplicaWait>) -> Vec<Result<(), ReplicaError>> {
    let all_failed = |error: ReplicaError| batch.iter().map(|_| Err(error.clone())).collect();
    let mut connected = match link.get().await {
        Ok(connected) => connected,
        Err(error) => return all_failed(error),
    };
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    for job in batch {
        pipeline.add_command(script_call(job));
    }
    if let Some(wait) = wait {
        pipeline.add_command(wait.command());
    }
    let replies: Vec<Value> = match pipeline.query_async(&mut connected.connection).await {
        Ok(replies) => replies,
        Err(error) => return all_failed(link.failed(&connected, "redis write failed", &error)),
    };
    if replies.len() != batch.len() + usize::from(wait.is_some()) {
        return all_failed(ReplicaError::Unavailable("redis answered a pipeline with the wrong count".into()));
    }
    let shortfall = wait.and_then(|wait| wait.shortfall(&replies[batch.len()]));
    batch
        .iter()
        .zip(&replies)
        .map(|(job, reply)| match (job_result(link, &connected, job, reply), &shortfall) {
            (Ok(()), Some(shortfall)) => Err(shortfall.clone()),
            (result, _) => result,
        })
        .collect()
}

/// `EVAL write_records.lua`: the epoch key, the record keys; the epoch, then expiry and value per record.
fn script_call(job: &WriteJob) -> redis::Cmd {
    let mut command = redis::cmd("EVAL");
    command
        .arg(if job.unfenced { WRITE_RECORDS_UNFENCED_LUA } else { WRITE_RECORDS_LUA })
        .arg(job.writes.len() + 1)
        .arg(epoch_key(&LeaseName::Shard(job.shard)));
    for write in &job.writes {
        command.arg(record_key(job.shard, &write.key));
    }
    command.arg(job.epoch);
    for write in &job.writes {
        match &write.value {
            // PXAT must be positive; an expiry in the past stores nothing (Redis deletes the key at once).
            Some(value) => command.arg(write.expires_at_ms.max(1)).arg(value.as_slice()),
            None => command.arg(0).arg(""),
        };
    }
    command
}

fn job_result(link: &Link, connected: &Connected, job: &WriteJob, reply: &Value) -> Result<(), ReplicaError> {
    let lease = LeaseName::Shard(job.shard);
    match fenced_reply(reply) {
        Ok(None) => Ok(()),
        Ok(Some(current)) => Err(ReplicaError::Fenced { lease, current, attempted: job.epoch }),
        Err(FencedReplyError::Server(error)) => Err(link.failed(connected, "redis write failed", &error)),
        Err(FencedReplyError::Unexpected) => {
            Err(ReplicaError::Unavailable(format!("unexpected redis reply to a write: {reply:?}")))
        }
    }
}

pub(crate) enum FencedReplyError {
    Server(redis::RedisError),
    Unexpected,
}

/// Reads the reply of a fenced script: `{1}` applied (`None`), `{0, current}` fenced (`Some(current)`).
pub(crate) fn fenced_reply(reply: &Value) -> Result<Option<Epoch>, FencedReplyError> {
    match reply {
        Value::ServerError(error) => Err(FencedReplyError::Server(error.clone().into())),
        Value::Array(items) => match items.as_slice() {
            [Value::Int(1)] => Ok(None),
            [Value::Int(0), Value::BulkString(current)] => std::str::from_utf8(current)
                .ok()
                .and_then(|current| current.parse().ok())
                .map(Some)
                .ok_or(FencedReplyError::Unexpected),
            _ => Err(FencedReplyError::Unexpected),
        },
        _ => Err(FencedReplyError::Unexpected),
    }
}

/// Shared by the writers: one per connection, chosen by shard.
pub(crate) struct Writers {
    writers: Vec<Writer>,
}

impl Writers {
    pub(crate) fn new(writers: Vec<Writer>) -> Arc<Self> {
        Arc::new(Self { writers })
    }

    pub(crate) fn enqueue(&self, job: WriteJob) {
        let index = usize::from(job.shard.0) % self.writers.len();
        self.writers[index].enqueue(job);
    }
}
