//! Redis Sentinels for the failover scenarios: `redis-server --sentinel` processes on loopback that watch the
//! cluster's primary (master name [`MASTER_NAME`]) and promote a replica when it dies. Each gets its own config
//! file (Sentinel rewrites it) in the cluster's directory; every process is killed by PID on drop.

use super::process::{free_tcp_port, Process};
use super::redis::{redis_server_binary, RedisClient, Resp};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub const MASTER_NAME: &str = "idp";
/// A primary silent this long is subjectively down; two Sentinels agreeing make it objectively down.
const DOWN_AFTER_MS: u64 = 1000;

pub struct Sentinels {
    processes: Vec<Process>,
    ports: Vec<u16>,
}

impl Sentinels {
    /// Starts `count` Sentinels (quorum 2) watching the primary on `primary_port`, and waits until each answers.
    pub fn start(dir: &Path, primary_port: u16, count: usize) -> anyhow::Result<Self> {
        let binary = redis_server_binary()?;
        let mut sentinels = Self { processes: Vec::new(), ports: Vec::new() };
        for index in 0..count {
            let port = free_tcp_port()?;
            let config = dir.join(format!("sentinel-{}.conf", index + 1));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n"
            );
            std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
            let mut command = Command::new(&binary);
            command.arg(&config).arg("--sentinel");
            let name = format!("sentinel-{}", index + 1);
            let process = Process::spawn(&name, command, &dir.join(format!("{name}.log")))?;
            sentinels.processes.push(process);
            sentinels.ports.push(port);
        }
        for port in sentinels.ports.clone() {
            sentinels.wait_answering(port, Duration::from_secs(10))?;
        }
        Ok(sentinels)
    }

    fn wait_answering(&mut self, port: u16, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if RedisClient::connect(port).and_then(|mut client| client.command(&["PING"])).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("sentinel on port {port} did not answer within {within:?}")
    }

    /// `127.0.0.1:<port>` of every Sentinel (the nodes' `redis.sentinels`).
    pub fn addresses(&self) -> Vec<String> {
        self.ports.iter().map(|port| format!("127.0.0.1:{port}")).collect()
    }

    /// The primary's port as the first answering Sentinel sees it.
    pub fn primary_port(&self) -> anyhow::Result<u16> {
        for port in &self.ports {
            let Ok(mut client) = RedisClient::connect(*port) else { continue };
            let Ok(reply) = client.command(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]) else { continue };
            let Resp::Array(Some(parts)) = reply else { continue };
            if let Some(port) = parts.get(1).and_then(|part| part.text().ok().flatten()?.parse().ok()) {
                return Ok(port);
            }
        }
        bail!("no sentinel named the primary")
    }
}
