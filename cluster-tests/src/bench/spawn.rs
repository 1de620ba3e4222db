//! Starting `idp` nodes for a run (`--spawn`): one in-memory node of its own (`--spawn 1`), or a cluster through
//! the test harness (`--spawn N`, N ≥ 2), with the bench's clients and users. The `idp` binary is found beside the
//! bench's own executable.

use crate::harness::{Cluster, ClusterOptions};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BENCH_SECRET: &str = "bench-secret";
pub const BENCH_PASSWORD: &str = "bench-password";
pub const BENCH_USERS: usize = 256;

/// A node process, killed when dropped.
pub struct SpawnedNode {
    pub url: String,
    child: Child,
    _dir: TempDir,
}

impl Drop for SpawnedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("idp-{label}-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or(0)
}

/// The `idp` binary beside this executable (same cargo profile).
pub fn idp_binary() -> anyhow::Result<PathBuf> {
    let own = std::env::current_exe()?;
    let directory = own.parent().context("executable has no directory")?;
    let candidates = [directory.join("idp"), directory.join("../idp")];
    candidates
        .into_iter()
        .find(|path| path.exists())
        .context("no idp binary beside idp-bench: build it (cargo build --release -p idp-node)")
}

/// A free loopback port (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn hash_password(idp: &Path, password: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new(idp).arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    child.stdin.take().context("stdin")?.write_all(format!("{password}\n").as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("idp hash-password failed");
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// The single node's configuration: an in-memory replica, the bench clients and users.
pub fn bench_config(port: u16, password_hash: &str) -> String {
    let config = format!(
        "issuer = \"http://127.0.0.1:{port}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[log]\nlevel = \"warn\"\n\n[login]\nmax_failures = 1000000\n"
    );
    config + &bench_clients_and_users(password_hash)
}

/// Starts one single-node `idp serve` with the bench configuration and waits until it answers.
pub async fn spawn_node() -> anyhow::Result<SpawnedNode> {
    let idp = idp_binary()?;
    let dir = TempDir::new("bench")?;
    let port = free_port()?;
    let config_path = dir.0.join("idp.toml");
    std::fs::write(&config_path, bench_config(port, &hash_password(&idp, BENCH_PASSWORD)?))?;
    let child = Command::new(&idp).arg("serve").arg("--config").arg(&config_path).stdin(Stdio::null()).spawn()?;
    let node = SpawnedNode { url: format!("http://127.0.0.1:{port}"), child, _dir: dir };
    wait_ready(&node.url, Duration::from_secs(30)).await?;
    Ok(node)
}

/// Waits until `/healthz` answers, within a bound.
pub async fn wait_ready(url: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let client = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{url}/healthz")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("node {url} did not become ready within {within:?}")
}

/// The bench's clients (`bench-es256`, `bench-rs256`, `bench-eddsa`: first party, every grant) and users
/// (`bench-0` … `bench-{BENCH_USERS-1}`, password [`BENCH_PASSWORD`] hashed as `password_hash`), as TOML table arrays.
pub fn bench_clients_and_users(password_hash: &str) -> String {
    let mut config = String::new();
    for alg in ["ES256", "RS256", "EdDSA"] {
        config += &format!(
            "\n[[clients]]\nclient_id = \"bench-{}\"\nclient_secret = \"{BENCH_SECRET}\"\nfirst_party = true\n\
             grant_types = [\"authorization_code\", \"refresh_token\", \"client_credentials\"]\n\
             redirect_uris = [\"{}\"]\nid_token_signed_response_alg = \"{alg}\"\n",
            alg.to_lowercase(),
            super::ops::REDIRECT_URI
        );
    }
    for user in 0..BENCH_USERS {
        config += &format!("\n[[users]]\nusername = \"bench-{user}\"\npassword_hash = \"{password_hash}\"\n");
    }
    config
}

/// Starts a cluster for a run through the test harness: a redis-server and `count` nodes (their `idp` found beside
/// this executable) with the bench's clients and users, and waits until every node is ready. `proxied` puts every
/// gossip, RPC and Redis link behind the harness's fault proxies (for `--fault partition`); `sentinels` adds a
/// Redis replica and that many Sentinels (for `--fault redis-failover`).
pub async fn spawn_cluster(count: usize, proxied: bool, sentinels: usize) -> anyhow::Result<Cluster> {
    let idp = idp_binary()?;
    let password_hash = hash_password(&idp, BENCH_PASSWORD)?;
    let options = ClusterOptions {
        nodes: count,
        proxied,
        sentinels,
        log_level: "warn".into(),
        extra_config: bench_clients_and_users(&password_hash),
        ..ClusterOptions::default()
    };
    Cluster::start(options).await
}
