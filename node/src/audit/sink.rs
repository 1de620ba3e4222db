//! Where audit records go: a line sink (stdout or a file) and a Redis stream, fed by one writer thread that
//! drains the queue in batches (one write and one flush, one pipelined round trip per batch).

use super::AuditRecord;
use crate::config::AuditConfig;
use crate::telemetry::metrics as m;
use anyhow::Context;
use idp_actors::replica::{connect_master, RedisTarget};
use redis::aio::MultiplexedConnection;
use std::io::Write;
use tokio::sync::mpsc::Receiver;

/// Records written per batch at most.
const BATCH: usize = 256;

pub(super) struct Sinks {
    lines: Option<Box<dyn Write + Send>>,
    stream: Option<StreamSink>,
}

struct StreamSink {
    target: RedisTarget,
    key: String,
    maxlen: u64,
    connection: Option<MultiplexedConnection>,
}

impl Sinks {
    pub fn open(config: &AuditConfig, redis: Option<RedisTarget>) -> anyhow::Result<Self> {
        let lines: Option<Box<dyn Write + Send>> = match (config.sink.as_str(), &config.file) {
            ("stdout", _) => Some(Box::new(std::io::stdout())),
            ("file", Some(path)) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening audit.file {}", path.display()))?;
                Some(Box::new(std::io::BufWriter::new(file)))
            }
            _ => None,
        };
        let stream = match (&config.redis_stream, redis) {
            (Some(key), Some(target)) => {
                Some(StreamSink { target, key: key.clone(), maxlen: config.redis_maxlen, connection: None })
            }
            _ => None,
        };
        // The failure counters of the configured sinks exist from the start, at 0 (in the recorder: installed now).
        m::install();
        if lines.is_some() {
            m::audit_write_failed("lines", 0);
        }
        if stream.is_some() {
            m::audit_write_failed("redis", 0);
        }
        Ok(Self { lines, stream })
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_none() && self.stream.is_none()
    }

    /// Runs the writer on its own thread (and its own small runtime for Redis) until every sender is gone.
    pub fn spawn(mut self, mut queue_rx: Receiver<AuditRecord>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("idp-audit".into()).spawn(move || {
            runtime.block_on(async move {
                let mut batch = Vec::with_capacity(BATCH);
                while queue_rx.recv_many(&mut batch, BATCH).await > 0 {
                    let lines: Vec<String> = batch.drain(..).map(|record| record.to_json()).collect();
                    self.write_lines(&lines);
                    if let Some(stream) = &mut self.stream {
                        stream.append(&lines).await;
                    }
                }
            });
        })?;
        Ok(())
    }

    fn write_lines(&mut self, lines: &[String]) {
        let Some(out) = &mut self.lines else { return };
        let mut text = String::with_capacity(lines.iter().map(|line| line.len() + 1).sum());
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            m::audit_write_failed("lines", lines.len());
            tracing::warn!(%error, "writing audit events failed");
        }
    }
}

impl StreamSink {
    /// `XADD key MAXLEN ~ maxlen * v 1 event JSON`, pipelined; on an error the batch is counted as lost and the
    /// connection is dropped (the next batch reconnects, re-resolving the master through the Sentinels).
    async fn append(&mut self, lines: &[String]) {
        if self.connection.is_none() {
            match connect_master(&self.target).await {
                Ok(connection) => self.connection = Some(connection),
                Err(error) => {
                    m::audit_write_failed("redis", lines.len());
                    tracing::warn!(%error, "audit stream: cannot reach redis");
                    return;
                }
            }
        }
        let Some(connection) = &mut self.connection else { return };
        let mut pipeline = redis::pipe();
        for line in lines {
            pipeline
                .cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*")
                .arg("v")
                .arg(super::SCHEMA_VERSION)
                .arg("record")
                .arg(line)
                .ignore();
        }
        if let Err(error) = pipeline.query_async::<()>(connection).await {
            m::audit_write_failed("redis", lines.len());
            tracing::warn!(%error, "audit stream: XADD failed");
            self.connection = None;
        }
    }
}
