//! `idp-bench`: load on a running cluster (`--nodes`) or on nodes it starts itself (`--spawn N`), with faults
//! injected on time (`--fault`), and the figures as a table, JSON and (with a fault) a timeline chart.

use anyhow::bail;
use clap::Parser;
use idp_cluster_tests::bench::balance::Balance;
use idp_cluster_tests::bench::drive::{drive, Options};
use idp_cluster_tests::bench::fault::FaultSpec;
use idp_cluster_tests::bench::mix::parse_phases;
use idp_cluster_tests::bench::ops::Workload;
use idp_cluster_tests::bench::spawn::{BENCH_PASSWORD, BENCH_SECRET, BENCH_USERS};
use idp_cluster_tests::bench::Pace;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "idp-bench", about = "Load, latency and recovery figures for idp nodes")]
struct Cli {
    /// Node base URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Start this many nodes instead of --nodes (the `idp` binary beside this one): 1 is a single node with its
    /// in-memory replica; 2 or more is a cluster around a redis-server started here too.
    #[arg(long)]
    spawn: Option<usize>,
    /// Seconds of load (a fraction is allowed).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Closed loop: this many workers, each starting its next operation when its last one ended.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: this many operations per second, arriving at fixed times whatever the nodes do; latency counts
    /// from the arrival time. --concurrency then bounds the operations in flight (default 256).
    #[arg(long)]
    rate: Option<f64>,
    /// Operations and weights: login, sso, cc, refresh, userinfo, introspect, jwks, discovery (and healthz).
    /// Phases separated by `/` run one after another against the same nodes (e.g. `login=1/cc=1`).
    #[arg(long, default_value = "cc=1")]
    mix: String,
    /// How the load balancer picks a node: round-robin or random (among the nodes it believes healthy).
    #[arg(long, default_value = "round-robin")]
    balance: String,
    /// KIND:NODE@SECONDS, KIND one of kill, stop, partition, redis-failover; nodes numbered from 1; repeatable.
    /// Needs --spawn 2 or more.
    #[arg(long)]
    fault: Vec<String>,
    /// Bound of one attempt (each HTTP request), in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Client for tokens and logins (the spawned config has bench-es256, bench-rs256, bench-eddsa).
    #[arg(long, default_value = "bench-es256")]
    client: String,
    #[arg(long, default_value = BENCH_SECRET)]
    secret: String,
    /// Username, or a prefix completed with the worker number when --users is above 0.
    #[arg(long, default_value = "bench-")]
    user: String,
    #[arg(long, default_value_t = BENCH_USERS)]
    users: usize,
    #[arg(long, default_value = BENCH_PASSWORD)]
    password: String,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With a fault: the timeline's path without extension (`.csv` and `.svg` are written); default: the --json
    /// path without its extension, else `idp-bench-timeline`.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// No progress bar on standard error.
    #[arg(long)]
    quiet: bool,
    /// Instead of a run: measure the argon2id bound (verifications per second on every core, OWASP parameters),
    /// the ceiling of password logins on this machine.
    #[arg(long)]
    calibrate: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.calibrate {
        let seconds = cli.duration.clamp(1.0, 30.0);
        let (threads, rate) = idp_cluster_tests::bench::calibrate::argon2_bound(Duration::from_secs_f64(seconds))?;
        println!("argon2id bound: {rate:.1} verifications/s on {threads} thread(s) over {seconds} s");
        return Ok(());
    }
    if !cli.duration.is_finite() || cli.duration <= 0.0 {
        bail!("--duration must be a positive number of seconds");
    }
    let pace = match cli.rate {
        None => Pace::Closed { concurrency: cli.concurrency.max(1) },
        Some(rate) if rate.is_finite() && rate > 0.0 => {
            let explicit = std::env::args().any(|arg| arg == "--concurrency" || arg.starts_with("--concurrency="));
            Pace::Open { rate, concurrency: if explicit { cli.concurrency.max(1) } else { 256 } }
        }
        Some(_) => bail!("--rate must be a positive number of operations per second"),
    };
    let options = Options {
        nodes: cli.nodes,
        spawn: cli.spawn,
        duration: Duration::from_secs_f64(cli.duration),
        pace,
        phases: parse_phases(&cli.mix)?,
        balance: Balance::parse(&cli.balance)?,
        faults: cli.fault.iter().map(|text| FaultSpec::parse(text)).collect::<anyhow::Result<_>>()?,
        workload: Workload {
            client_id: cli.client,
            client_secret: cli.secret,
            user_prefix: cli.user,
            user_count: cli.users,
            password: cli.password,
            needs_login: false,
            timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        },
        json: cli.json,
        timeline: cli.timeline,
        progress: !cli.quiet,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads.max(1)).enable_all().build()?;
    // On Ctrl-C or SIGTERM the run's future is dropped, and with it every process it started (nodes, redis-server,
    // Sentinels are killed by PID when their handles drop).
    runtime.block_on(async {
        tokio::select! {
            outcome = drive(options) => outcome,
            signal = interrupted() => bail!("interrupted by {signal}; the processes this run started were stopped"),
        }
    })
}

async fn interrupted() -> &'static str {
    let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
