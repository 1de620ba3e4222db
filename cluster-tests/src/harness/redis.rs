//! A real `redis-server` on a free port of `127.0.0.1` (or of the address a cluster in network namespaces gives
//! it, see [`super::netns`]; Debian's package), and a tiny blocking RESP client to read what the nodes wrote
//! (leases, epochs) without depending on `redis-cli`.
//!
//! The server runs without persistence (`--save '' --appendonly no`) and with `maxmemory-policy noeviction`, the only
//! policy a node accepts. It is killed by PID when dropped, even while a failing test unwinds.

use super::process::{free_tcp_port, Process, Workdir};
use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a fresh redis-server may take to answer PING.
const START_WITHIN: Duration = Duration::from_secs(10);
/// Where a server listens unless told otherwise.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A `redis-server` child process.
pub struct RedisServer {
    process: Process,
    host: IpAddr,
    port: u16,
    _own_dir: Option<Workdir>,
}

impl RedisServer {
    /// A primary in a directory of its own.
    pub fn start() -> anyhow::Result<Self> {
        let dir = Workdir::new("redis")?;
        let mut server = Self::start_in(dir.path(), "redis", LOOPBACK, None)?;
        server._own_dir = Some(dir);
        Ok(server)
    }

    /// A server named `name` (its log is `<dir>/<name>.log`) listening on `host` only, a replica of `replica_of`
    /// when given. Retries on a new port when another process took the chosen one first.
    pub fn start_in(dir: &Path, name: &str, host: IpAddr, replica_of: Option<&RedisServer>) -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            match Self::try_start(dir, name, host, replica_of) {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn try_start(dir: &Path, name: &str, host: IpAddr, replica_of: Option<&RedisServer>) -> anyhow::Result<Self> {
        let binary = redis_server_binary()?;
        let port = free_tcp_port()?;
        let mut command = Command::new(binary);
        command
            .args(["--port", &port.to_string(), "--bind", &host.to_string()])
            .args(["--protected-mode", protected_mode(host)])
            .args(["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"])
            .args(["--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(dir);
        if let Some(primary) = replica_of {
            command.args(["--replicaof", &primary.host.to_string(), &primary.port.to_string()]);
        }
        let mut process = Process::spawn(name, command, &dir.join(format!("{name}.log")))?;
        let deadline = Instant::now() + START_WITHIN;
        while Instant::now() < deadline {
            if let Some(status) = process.exited() {
                bail!("{name} exited at start ({status}):\n{}", process.log_tail(20));
            }
            let address = SocketAddr::new(host, port);
            if RedisClient::connect(address).and_then(|mut client| client.command(&["PING"])).is_ok() {
                return Ok(Self { process, host, port, _own_dir: None });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("{name} did not answer PING on {host}:{port} within {START_WITHIN:?}:\n{}", process.log_tail(20))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// `redis://<host>:<port>`, the nodes' `redis.url`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address())
    }

    pub fn client(&self) -> anyhow::Result<RedisClient> {
        RedisClient::connect(self.address())
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Waits until this replica's link to its primary is up and the first sync is done.
    pub fn wait_replica_synced(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let info = self.client().and_then(|mut client| client.command(&["INFO", "replication"]));
            if let Ok(Resp::Bulk(Some(text))) = info {
                if String::from_utf8_lossy(&text).contains("master_link_status:up") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("replica on {} not in sync within {within:?}", self.address())
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// A Sentinel (`redis-server <conf> --sentinel`) named `name` on the primary's host, monitoring `primary` as
    /// `master_name` with `quorum`, declaring it down after `down_after`.
    pub fn start_sentinel_in(
        dir: &Path,
        name: &str,
        primary: &RedisServer,
        master_name: &str,
        quorum: usize,
        down_after: Duration,
    ) -> anyhow::Result<Self> {
        let binary = redis_server_binary()?;
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_tcp_port()?;
            let config_path = dir.join(format!("{name}.conf"));
            let host = primary.host;
            let config = format!(
                "port {port}\nbind {host}\nprotected-mode {protected}\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {master_name} {host} {primary} {quorum}\n\
                 sentinel down-after-milliseconds {master_name} {down_after_ms}\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir = dir.display(),
                protected = protected_mode(host),
                primary = primary.port,
                down_after_ms = down_after.as_millis(),
            );
            std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
            let mut command = Command::new(&binary);
            command.arg(&config_path).arg("--sentinel");
            let mut process = Process::spawn(name, command, &dir.join(format!("{name}.log")))?;
            let deadline = Instant::now() + START_WITHIN;
            let mut answered = false;
            while Instant::now() < deadline && process.exited().is_none() {
                if RedisClient::connect(SocketAddr::new(host, port))
                    .and_then(|mut client| client.command(&["PING"]))
                    .is_ok()
                {
                    answered = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if answered {
                return Ok(Self { process, host, port, _own_dir: None });
            }
            last_error = Some(anyhow::anyhow!("{name} did not start on port {port}:\n{}", process.log_tail(20)));
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
    }

    /// `host:port` of the primary this Sentinel names for `master_name` now.
    pub fn sentinel_primary(&self, master_name: &str) -> anyhow::Result<String> {
        match self.client()?.command(&["SENTINEL", "get-master-addr-by-name", master_name])? {
            Resp::Array(Some(items)) if items.len() == 2 => {
                let text = |item: &Resp| match item {
                    Resp::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(bytes).to_string()),
                    other => bail!("unexpected {other:?}"),
                };
                Ok(format!("{}:{}", text(&items[0])?, text(&items[1])?))
            }
            other => bail!("SENTINEL get-master-addr-by-name {master_name}: {other:?}"),
        }
    }
}

/// Protected mode (without a password, only loopback clients) on loopback; off on a cluster's own address in
/// network namespaces, which only its nodes and the test client reach.
fn protected_mode(host: IpAddr) -> &'static str {
    if host.is_loopback() {
        "yes"
    } else {
        "no"
    }
}

/// `redis-server` on the PATH, or an error that says how to get it (the tests never skip for want of it).
pub fn redis_server_binary() -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("redis-server")).find(|candidate| candidate.is_file()).context(
        "redis-server is not on the PATH: the cluster tests need a real Redis \
         (`apt-get install redis-server`; scripts/test installs it)",
    )
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The text of a simple or bulk string; `None` for a nil bulk string.
    pub fn text(&self) -> anyhow::Result<Option<String>> {
        match self {
            Resp::Simple(text) => Ok(Some(text.clone())),
            Resp::Bulk(Some(bytes)) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
            Resp::Bulk(None) => Ok(None),
            Resp::Error(error) => bail!("redis error: {error}"),
            other => bail!("expected a string reply, got {other:?}"),
        }
    }
}

/// A blocking connection speaking RESP2, with short timeouts (it only talks to a local server).
pub struct RedisClient {
    reader: BufReader<TcpStream>,
}

impl RedisClient {
    pub fn connect(address: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        Ok(Self { reader: BufReader::new(stream) })
    }

    /// Sends one command and reads its reply (an error reply is a `Resp::Error`, not an `Err`).
    pub fn command(&mut self, args: &[&str]) -> anyhow::Result<Resp> {
        self.reader.get_mut().write_all(&encode(args))?;
        parse(&mut self.reader)
    }

    /// `GET key` as text.
    pub fn get(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        self.command(&["GET", key])?.text()
    }

    /// Keys matching a pattern (SCAN, so a large keyspace never blocks the server).
    pub fn scan(&mut self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = self.command(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])?;
            let Resp::Array(Some(parts)) = reply else { bail!("unexpected SCAN reply {reply:?}") };
            let [next, Resp::Array(Some(batch))] = &parts[..] else { bail!("unexpected SCAN reply {parts:?}") };
            for key in batch {
                keys.extend(key.text()?);
            }
            cursor = next.text()?.unwrap_or_default();
            if cursor == "0" {
                return Ok(keys);
            }
        }
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        bytes.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        bytes.extend_from_slice(arg.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

/// Reads one RESP2 reply.
fn parse(reader: &mut impl BufRead) -> anyhow::Result<Resp> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("redis closed the connection");
    }
    let line = line.strip_suffix("\r\n").context("a RESP line ends with CRLF")?;
    let (kind, rest) = line.split_at_checked(1).context("empty RESP line")?;
    Ok(match kind {
        "+" => Resp::Simple(rest.into()),
        "-" => Resp::Error(rest.into()),
        ":" => Resp::Integer(rest.parse()?),
        "$" => match rest.parse::<i64>()? {
            -1 => Resp::Bulk(None),
            length => {
                let mut bytes = vec![0; usize::try_from(length)? + 2];
                reader.read_exact(&mut bytes)?;
                bytes.truncate(bytes.len() - 2);
                Resp::Bulk(Some(bytes))
            }
        },
        "*" => match rest.parse::<i64>()? {
            -1 => Resp::Array(None),
            count => Resp::Array(Some((0..count).map(|_| parse(reader)).collect::<anyhow::Result<_>>()?)),
        },
        other => bail!("unknown RESP type {other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(encode(&["GET", "idp:lease:shard:7"]), b"*2\r\n$3\r\nGET\r\n$17\r\nidp:lease:shard:7\r\n");
        assert_eq!(encode(&["SET", "k", ""]), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_reply_type_parses() {
        let mut input: &[u8] = b"+OK\r\n-ERR no\r\n:42\r\n$5\r\nhe\r\no\r\n$-1\r\n*2\r\n:1\r\n$1\r\nx\r\n*-1\r\n";
        assert_eq!(parse(&mut input).unwrap(), Resp::Simple("OK".into()));
        assert_eq!(parse(&mut input).unwrap(), Resp::Error("ERR no".into()));
        assert_eq!(parse(&mut input).unwrap(), Resp::Integer(42));
        assert_eq!(parse(&mut input).unwrap(), Resp::Bulk(Some(b"he\r\no".to_vec())));
        assert_eq!(parse(&mut input).unwrap(), Resp::Bulk(None));
        assert_eq!(
            parse(&mut input).unwrap(),
            Resp::Array(Some(vec![Resp::Integer(1), Resp::Bulk(Some(b"x".to_vec()))]))
        );
        assert_eq!(parse(&mut input).unwrap(), Resp::Array(None));
        assert!(parse(&mut input).is_err(), "end of stream");
    }

    #[test]
    fn a_real_server_starts_answers_replicates_and_dies_with_its_handle() {
        let primary = RedisServer::start().expect("redis-server must be installed for the cluster tests");
        let mut client = primary.client().unwrap();
        assert_eq!(client.command(&["SET", "idp:lease:shard:3", "node-1 7"]).unwrap(), Resp::Simple("OK".into()));
        assert_eq!(client.get("idp:lease:shard:3").unwrap().as_deref(), Some("node-1 7"));
        assert_eq!(client.get("idp:missing").unwrap(), None);
        assert_eq!(client.scan("idp:lease:*").unwrap(), vec!["idp:lease:shard:3".to_string()]);
        let policy = client.command(&["CONFIG", "GET", "maxmemory-policy"]).unwrap();
        assert_eq!(
            policy,
            Resp::Array(Some(vec![
                Resp::Bulk(Some(b"maxmemory-policy".to_vec())),
                Resp::Bulk(Some(b"noeviction".to_vec()))
            ]))
        );

        let dir = Workdir::new("redis-replica-test").unwrap();
        let replica = RedisServer::start_in(dir.path(), "replica", LOOPBACK, Some(&primary)).unwrap();
        replica.wait_replica_synced(Duration::from_secs(10)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while replica.client().unwrap().get("idp:lease:shard:3").unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(replica.client().unwrap().get("idp:lease:shard:3").unwrap().as_deref(), Some("node-1 7"));

        let (primary_pid, replica_pid) = (primary.process.pid(), replica.process.pid());
        drop(replica);
        drop(primary);
        for pid in [primary_pid, replica_pid] {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "redis-server {pid} outlived its handle");
        }
    }
}
