//! Starting `idp` nodes for a run (`--spawn`): a configuration with bench clients and users, the process, and its
//! cleanup. The `idp` binary is found beside the bench's own executable.

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

/// The bench configuration: ES256 and RS256 first-party clients for every grant, and `BENCH_USERS` users.
pub fn bench_config(port: u16, password_hash: &str) -> String {
    let mut config = format!(
        "issuer = \"http://127.0.0.1:{port}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[log]\nlevel = \"warn\"\n\n[login]\nmax_failures = 1000000\n"
    );
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

/// A cluster started for a run: a redis-server and `count` nodes, all stopped when dropped.
pub struct SpawnedCluster {
    pub nodes: Vec<SpawnedNode>,
    _redis: crate::harness::redis::RedisServer,
    _dir: TempDir,
}

/// Starts redis-server and `count` cluster nodes on loopback with the bench configuration (one issuer, a shared
/// KEK, node 1 as the gossip seed), and waits until every node's `/readyz` answers 200.
pub async fn spawn_cluster(count: usize) -> anyhow::Result<SpawnedCluster> {
    use base64::Engine;
    let idp = idp_binary()?;
    let redis = crate::harness::redis::RedisServer::start()?;
    let dir = TempDir::new("bench-cluster")?;
    let password_hash = hash_password(&idp, BENCH_PASSWORD)?;
    let kek = base64::engine::general_purpose::STANDARD.encode(rand_bytes());
    let ports: Vec<[u16; 4]> = (0..count)
        .map(|_| Ok([free_port()?, free_port()?, free_port()?, free_port()?]))
        .collect::<anyhow::Result<_>>()?;
    let issuer_port = ports[0][0];
    let seed = format!("127.0.0.1:{}", ports[0][1]);
    let mut nodes = Vec::new();
    for (index, [http, gossip, rpc, admin]) in ports.iter().copied().enumerate() {
        let base = bench_config(http, &password_hash).replacen(
            &format!("issuer = \"http://127.0.0.1:{http}\""),
            &format!("issuer = \"http://127.0.0.1:{issuer_port}\""),
            1,
        );
        let seeds = if index == 0 { String::new() } else { format!("\"{seed}\"") };
        let cluster = format!(
            "\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[node]\nid = \"bench-{n}\"\ngossip = \"127.0.0.1:{gossip}\"\n\
             rpc = \"127.0.0.1:{rpc}\"\nseeds = [{seeds}]\n\n[redis]\nurl = \"{url}\"\n",
            n = index + 1,
            url = redis.url()
        );
        // The cluster sections go before the first table array, where TOML tables may still open.
        let split = base.find("\n[[clients]]").unwrap_or(base.len());
        let config = format!("{}{}{}", &base[..split], cluster, &base[split..]);
        let config_path = dir.0.join(format!("node-{}.toml", index + 1));
        std::fs::write(&config_path, config)?;
        let child = Command::new(&idp)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("IDP_KEK", &kek)
            .stdin(Stdio::null())
            .spawn()?;
        nodes.push(SpawnedNode { url: format!("http://127.0.0.1:{http}"), child, _dir: TempDir::new("bench-node")? });
        wait_url(&format!("http://127.0.0.1:{admin}/readyz"), Duration::from_secs(30)).await?;
    }
    for [_, _, _, admin] in &ports {
        wait_url(&format!("http://127.0.0.1:{admin}/readyz"), Duration::from_secs(30)).await?;
    }
    Ok(SpawnedCluster { nodes, _redis: redis, _dir: dir })
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes
}

/// Waits until `url` answers 200, within a bound.
async fn wait_url(url: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let client = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not answer 200 within {within:?}")
}
