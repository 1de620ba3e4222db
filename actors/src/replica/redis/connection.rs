//! Reaching the Redis master, and reaching it again after a failover.
//!
//! A multiplexed connection stays pinned to the server it connected to: after a Sentinel failover it keeps talking
//! to the old master (or fails). So every connection of the replica is a [`Link`] that reconnects after an error
//! that says "wrong or lost server" (I/O, timeout, `READONLY`), re-resolving the master through the Sentinels. One
//! such error on any link makes every link reconnect (a shared generation), so reads do not stay on a demoted
//! master. The operation that met the error is never retried here: a write may have happened.

use super::RedisTarget;
use crate::replica::ReplicaError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long connecting may take, Sentinel lookup included.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a reply may take before the connection is considered lost (plus the `WAIT` timeout where one applies).
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the master of `target` (resolved through the Sentinels when there are some), for other users of
/// Redis such as the directory store. The connection does not follow a failover: reconnect on errors.
pub async fn connect_master(target: &RedisTarget) -> Result<MultiplexedConnection, ReplicaError> {
    connect(target, RESPONSE_TIMEOUT).await
}

async fn connect(target: &RedisTarget, response_timeout: Duration) -> Result<MultiplexedConnection, ReplicaError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    let connecting = async {
        let client = master_client(target).await?;
        client.get_multiplexed_async_connection_with_config(&config).await
    };
    // The Sentinel lookup has its own per-sentinel timeouts; this bounds the whole.
    match tokio::time::timeout(CONNECT_TIMEOUT * 3, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(unavailable(&format!("cannot connect to the redis master ({target})"), &error)),
        Err(_) => Err(ReplicaError::Unavailable(format!("cannot connect to the redis master ({target}): timed out"))),
    }
}

async fn master_client(target: &RedisTarget) -> Result<Client, RedisError> {
    match target {
        RedisTarget::Url(url) => Client::open(url.as_str()),
        RedisTarget::Sentinel { sentinels, master_name } => {
            let urls: Vec<String> = sentinels.iter().map(|address| sentinel_url(address)).collect();
            let mut sentinel = redis::sentinel::Sentinel::build(urls)?;
            // Asks the Sentinels for the master's address and checks that it considers itself master.
            sentinel.async_master_for(master_name, None).await
        }
    }
}

/// Sentinels are configured as `host:port`; a full `redis://` URL is accepted too.
fn sentinel_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("redis://{address}")
    }
}

/// Whether an error means the connection is lost or talks to a server that is no longer the master.
pub(crate) fn needs_reconnect(error: &RedisError) -> bool {
    match error.kind() {
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading) => {
            true
        }
        // Errors from a script's `redis.call` may carry the original error in their text only.
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType | ErrorKind::Parse => {
            let text = error.to_string();
            error.code() == Some("READONLY") || text.contains("READONLY") || text.contains("read only replica")
        }
        _ => true,
    }
}

pub(crate) fn unavailable(context: &str, error: &RedisError) -> ReplicaError {
    ReplicaError::Unavailable(format!("{context}: {error}"))
}

/// What all links share: the target, and the generation of the master they should be connected to.
pub(crate) struct Master {
    target: RedisTarget,
    generation: AtomicU64,
}

impl Master {
    pub(crate) fn new(target: RedisTarget) -> Arc<Self> {
        Arc::new(Self { target, generation: AtomicU64::new(0) })
    }

    pub(crate) fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Every link reconnects (re-resolving the master) before its next use; only once per lost generation, so
    /// answers true for the first report only.
    pub(crate) fn lost(&self, generation: u64) -> bool {
        self.generation.compare_exchange(generation, generation + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

/// One connection to the master, re-established on demand.
pub(crate) struct Link {
    master: Arc<Master>,
    response_timeout: Duration,
    connection: tokio::sync::Mutex<Option<(MultiplexedConnection, u64)>>,
}

/// A connection handed out by a [`Link`], with the generation to report when it fails.
pub(crate) struct Connected {
    pub(crate) connection: MultiplexedConnection,
    generation: u64,
}

impl Link {
    pub(crate) fn new(master: Arc<Master>, response_timeout: Duration) -> Self {
        Self { master, response_timeout, connection: tokio::sync::Mutex::new(None) }
    }

    /// The current connection, connecting first when there is none or the master may have changed.
    pub(crate) async fn get(&self) -> Result<Connected, ReplicaError> {
        let mut slot = self.connection.lock().await;
        let generation = self.master.generation.load(Ordering::SeqCst);
        if let Some((connection, connected_generation)) = slot.as_ref() {
            if *connected_generation == generation {
                return Ok(Connected { connection: connection.clone(), generation });
            }
        }
        *slot = None;
        let connection = connect(&self.master.target, self.response_timeout).await?;
        *slot = Some((connection.clone(), generation));
        Ok(Connected { connection, generation })
    }

    /// Turns an error of a connection from [`Link::get`] into a replica error, dropping the connection when it is
    /// lost or points at a demoted master.
    pub(crate) fn failed(&self, connected: &Connected, context: &str, error: &RedisError) -> ReplicaError {
        self.check(connected, error);
        unavailable(context, error)
    }

    /// Drops the connection (of every link) if `error` says it is lost or points at a demoted master.
    pub(crate) fn check(&self, connected: &Connected, error: &RedisError) {
        if needs_reconnect(error) && self.master.lost(connected.generation) {
            tracing::warn!(redis = %self.master.target, %error, "redis connection lost; reconnecting on next use");
        }
    }

    pub(crate) fn target(&self) -> &RedisTarget {
        self.master.target()
    }

    /// Marks the master lost, when an answer shows the connection is no longer to the master.
    pub(crate) fn demoted(&self, connected: &Connected) {
        let _ = self.master.lost(connected.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_and_failover_errors_reconnect() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(needs_reconnect(&io));
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(needs_reconnect(&timeout));
        let read_only =
            redis::make_extension_error("READONLY".into(), Some("You can't write against a replica".into()));
        assert!(needs_reconnect(&read_only));
        let script = redis::make_extension_error("ERR".into(), Some("Error running script".into()));
        assert!(!needs_reconnect(&script));
    }

    #[test]
    fn sentinel_addresses_become_urls() {
        assert_eq!(sentinel_url("127.0.0.1:26379"), "redis://127.0.0.1:26379");
        assert_eq!(sentinel_url("redis://sentinel:26379"), "redis://sentinel:26379");
    }
}
