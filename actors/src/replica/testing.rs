//! Throwaway `redis-server` processes for tests: a master, replicas, a Sentinel, each on a free loopback port in
//! its own temporary directory, killed (by PID) and cleaned up on drop, even when the test fails.
//!
//! `redis-server` must be on `PATH`; if it is not, the test fails with a message saying so (it never skips).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a replica may take to finish its first sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(10);

static NEXT_DIRECTORY: AtomicUsize = AtomicUsize::new(0);

/// A `redis-server` process (a master, a replica or a Sentinel).
pub struct TestRedis {
    child: Child,
    port: u16,
    directory: PathBuf,
    log: PathBuf,
}

impl TestRedis {
    /// A master without persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A master with extra `--option value` arguments (e.g. `["--maxmemory-policy", "allkeys-lru"]`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::spawn_server(|port, directory| server_args(port, directory, extra_args))
    }

    /// A replica of `master`, returned once it acknowledges the master's writes (`WAIT` counts it). Right after
    /// its first sync a replica can be listed online and still not acknowledge for a while: the probe is a write.
    pub fn start_replica_of(master: &TestRedis) -> Self {
        let master_port = master.port.to_string();
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &master_port]);
        master.wait_until("the replica to acknowledge writes", SYNC_TIMEOUT, |connection| {
            let _: i64 = redis::cmd("INCR").arg("idp-test:replication-probe").query(connection).ok()?;
            let acknowledged: i64 = redis::cmd("WAIT").arg(1).arg(100).query(connection).ok()?;
            (acknowledged >= 1).then_some(())
        });
        replica
    }

    /// A Sentinel monitoring `master` as `master_name` (quorum 1), declaring it down after `down_after`.
    pub fn start_sentinel(master_name: &str, master: &TestRedis, down_after: Duration) -> Self {
        Self::spawn_server(|port, directory| {
            let config = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
                 sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {master_name} {down_after_ms}\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir = directory.display(),
                log = directory.join("redis.log").display(),
                master_port = master.port,
                down_after_ms = down_after.as_millis(),
            );
            let config_path = directory.join("sentinel.conf");
            std::fs::write(&config_path, config).expect("cannot write the sentinel configuration");
            vec![config_path.display().to_string(), "--sentinel".to_string()]
        })
    }

    fn spawn_server(args: impl Fn(u16, &Path) -> Vec<String>) -> Self {
        for _attempt in 0..5 {
            let port = free_port();
            let directory = std::env::temp_dir().join(format!(
                "idp-test-redis-{}-{}",
                std::process::id(),
                NEXT_DIRECTORY.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&directory).expect("cannot create a temporary directory");
            let log = directory.join("redis.log");
            let child = match Command::new("redis-server")
                .args(args(port, &directory))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(error) => panic!("cannot start redis-server ({error}): install it (apt-get install redis-server)"),
            };
            let mut server = Self { child, port, directory, log };
            if server.wait_until_started() {
                return server;
            }
            // Most likely the port was taken between choosing and binding it: try another.
            server.kill();
        }
        panic!("redis-server did not start; see its log in the temporary directory")
    }

    fn wait_until_started(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_exited)) = self.child.try_wait() {
                return false;
            }
            // The server on the port must be this process: another test's server may have taken the port first.
            let process_id = format!("process_id:{}\r\n", self.child.id());
            let info = self
                .try_connection()
                .and_then(|mut connection| redis::cmd("INFO").arg("server").query::<String>(&mut connection).ok());
            match info {
                Some(info) if info.contains(&process_id) => return true,
                Some(_) => return false,
                None => {}
            }
            std::thread::sleep(POLL_EVERY);
        }
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        client.get_connection_with_timeout(Duration::from_secs(1)).ok()
    }

    /// A blocking connection, to inspect or change the server from a test.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection().unwrap_or_else(|| panic!("cannot connect to the test redis at {}", self.address()))
    }

    /// Runs one command and returns its reply; panics on error.
    pub fn query<T: redis::FromRedisValue>(&self, command: &mut redis::Cmd) -> T {
        command.query(&mut self.connection()).unwrap_or_else(|error| panic!("test redis command failed: {error}"))
    }

    /// Polls `probe` until it returns `Some`, or panics after `timeout` naming `what`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&mut redis::Connection) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = self.try_connection().and_then(|mut connection| probe(&mut connection)) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what} ({})", self.address());
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Kills the server now (SIGKILL); idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if let Ok(log) = std::fs::File::open(&self.log) {
                let lines: Vec<String> = BufReader::new(log).lines().map_while(Result::ok).collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                eprintln!("--- last lines of the redis log on port {} ---\n{tail}", self.port);
            }
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn server_args(port: u16, directory: &Path, extra_args: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &directory.display().to_string(),
        "--logfile",
        &directory.join("redis.log").display().to_string(),
        // Replicas sync at once, without an RDB file on disk.
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(extra_args.iter().map(|arg| arg.to_string()));
    args
}

/// A loopback port free a moment ago (the server retries on another one if it was taken meanwhile).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port");
    listener.local_addr().expect("bound socket has an address").port()
}
