//! The multi-process harness of the cluster tests: a real `redis-server` ([`redis`]), `idp serve` processes around
//! it ([`cluster`]) with their config files ([`config`]), POSIX signals and logs ([`process`]), partitions through
//! network namespaces as root ([`netns`]) or fault-injecting forwarders otherwise ([`proxy`]), ownership read from
//! Redis ([`leases`]) and token checks against a node's JWKS ([`tokens`]).
//!
//! Every process is killed by its PID when its handle drops, also while a failing test unwinds; every wait is
//! bounded, and polls a condition instead of sleeping a fixed time.

pub mod cluster;
pub mod config;
pub mod leases;
pub mod netns;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod tokens;

pub use cluster::{Cluster, ClusterOptions, Link, NodeState};

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `probe` every 25 ms until it answers `Some`, at most `within`; the error names `what` was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_answers_the_first_value_or_times_out() {
        let mut calls = 0;
        let value = wait_for("three calls", Duration::from_secs(5), || {
            calls += 1;
            let answer = (calls == 3).then_some(calls);
            async move { answer }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
        let error = wait_for("nothing", Duration::from_millis(60), || async { None::<()> }).await.unwrap_err();
        assert!(error.to_string().contains("waiting for nothing"));
    }
}
