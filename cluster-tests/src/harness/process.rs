//! Child processes of a test: free loopback ports, a working directory, a process whose output goes to a file,
//! POSIX signals by PID, and the tail of a log for failure reports.
//!
//! Every process is killed by its PID when its handle is dropped, which also happens while a failing test unwinds.
//! A test process that is itself killed (SIGKILL, a CI timeout) unwinds nothing: so every child is started through
//! `setpriv --pdeathsig KILL` (util-linux) when it is installed, and the kernel kills it when the thread that started
//! it dies. Signals other than SIGKILL go through the `kill` program (procps), since the workspace forbids `unsafe`
//! and so `libc::kill` and `prctl`.

use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports this test process already handed out: the kernel may offer a released port again, and two nodes of one
/// test must never be given the same one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback TCP port that is free now (bound, then released) and was never handed out by this process.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    free_port(|| Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))
}

/// A loopback UDP port (gossip) that is free now and was never handed out by this process.
pub fn free_udp_port() -> anyhow::Result<u16> {
    free_port(|| Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()))
}

fn free_port(bind: impl Fn() -> std::io::Result<u16>) -> anyhow::Result<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..64 {
        let port = bind().context("binding a loopback port")?;
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    bail!("no fresh loopback port after 64 tries")
}

/// A directory for one test's files (configs, logs). Removed when dropped, except while a test fails (the path is
/// printed so the logs can be read) or when `IDP_KEEP_TEST_DIRS` is set.
#[derive(Debug)]
pub struct Workdir {
    path: PathBuf,
}

impl Workdir {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        let path = std::env::temp_dir().join(format!("idp-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("IDP_KEEP_TEST_DIRS").is_some() {
            eprintln!("harness: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `command` run through `setpriv --pdeathsig KILL` (which sets the death signal, then executes it: the PID stays
/// the program's), when `setpriv` is installed; else `command` itself.
fn with_death_signal(command: Command) -> Command {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let setpriv = SETPRIV
        .get_or_init(|| ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().map(PathBuf::from).find(|path| path.exists()));
    let Some(setpriv) = setpriv else { return command };
    let mut wrapped = Command::new(setpriv);
    wrapped.args(["--pdeathsig", "KILL", "--"]).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// A running child process whose standard output and error go to one log file. Killed (SIGKILL, by PID) and reaped
/// when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` with no standard input and its output appended to `log`.
    pub fn spawn(name: &str, command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = with_death_signal(command);
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self { name: name.into(), child, log: log.to_path_buf(), exit: None })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status, once the process has exited (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// SIGKILL, then reap. Harmless when the process already exited.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) with `kill -s NAME PID`.
    pub fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        if let Some(status) = self.exited() {
            bail!("{} (pid {}) already exited ({status}): cannot send SIG{signal}", self.name, self.pid());
        }
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .context("running `kill` (procps) to send a signal")?;
        if !status.success() {
            bail!("kill -s {signal} {} failed ({status})", self.pid());
        }
        Ok(())
    }

    /// Waits until the process exits, at most `within`; polls, since `Child` has no timed wait.
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} (pid {}) still running after {within:?}", self.name, self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else { return format!("(no log at {})", path.display()) };
    let length = file.metadata().map_or(0, |metadata| metadata.len());
    let start = length.saturating_sub(64 * 1024);
    let mut text = String::new();
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    text.push_str(&String::from_utf8_lossy(&bytes));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child outlives its handle only as long as the thread that started it: when that thread dies without
    /// dropping the handle (as when the whole test process is killed), the kernel kills the child.
    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        assert!(Path::new("/usr/bin/setpriv").exists() || Path::new("/bin/setpriv").exists(), "setpriv (util-linux)");
        let dir = Workdir::new("deathsig").unwrap();
        let log = dir.path().join("sleep.log");
        let pid = std::thread::spawn(move || {
            let mut command = Command::new("sleep");
            command.arg("60");
            let process = Process::spawn("sleep", command, &log).unwrap();
            let pid = process.pid();
            std::mem::forget(process); // no Drop: only the kernel can end it now
                                       // Wait until setpriv set the signal and executed sleep (a parent gone before that goes unnoticed).
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default().starts_with(b"sleep\0") {
                assert!(Instant::now() < deadline, "sleep never started");
                std::thread::sleep(Duration::from_millis(5));
            }
            pid
        })
        .join()
        .unwrap();
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).unwrap_or("gone").to_string()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(state().as_str(), "Z" | "gone") {
            assert!(Instant::now() < deadline, "sleep (pid {pid}) still running: state {}", state());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_tcp_port().unwrap()).collect();
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        let udp = free_udp_port().unwrap();
        assert!(!ports.contains(&udp));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = Workdir::new("tail-test").unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, (1..=10).map(|line| format!("line {line}\n")).collect::<String>()).unwrap();
        assert_eq!(tail(&path, 2), "line 9\nline 10");
        assert_eq!(tail(&path, 100).lines().count(), 10);
        assert!(tail(&dir.path().join("missing"), 3).starts_with("(no log"));
    }

    #[test]
    fn signals_stop_continue_and_end_a_process() {
        let dir = Workdir::new("signal-test").unwrap();
        let mut command = Command::new("sleep");
        command.arg("30");
        let mut process = Process::spawn("sleep", command, &dir.path().join("sleep.log")).unwrap();
        process.signal("STOP").unwrap();
        process.signal("CONT").unwrap();
        assert!(process.exited().is_none());
        process.signal("TERM").unwrap();
        let status = process.wait_exit(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
        assert!(process.signal("TERM").is_err(), "no signal to an exited process");
    }

    #[test]
    fn dropping_a_process_kills_it_by_pid() {
        let dir = Workdir::new("drop-test").unwrap();
        let mut command = Command::new("sleep");
        command.arg("30");
        let process = Process::spawn("sleep", command, &dir.path().join("sleep.log")).unwrap();
        let pid = process.pid();
        drop(process);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} still exists after drop");
    }
}
