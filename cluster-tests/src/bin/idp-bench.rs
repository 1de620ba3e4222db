//! `idp-bench`: load on a running cluster (`--nodes`) or on nodes it starts itself (`--spawn 1`).

use anyhow::{bail, Context};
use clap::Parser;
use idp_cluster_tests::bench::ops::{Op, Workload};
use idp_cluster_tests::bench::spawn::{spawn_cluster, spawn_node, BENCH_PASSWORD, BENCH_SECRET, BENCH_USERS};
use idp_cluster_tests::bench::{run, RunPlan};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "idp-bench", about = "Load and latency figures for idp nodes")]
struct Cli {
    /// Node base URLs, comma-separated (round-robin).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Start this many nodes instead of --nodes: 1 is a single in-memory node; more is a cluster with a redis-server.
    #[arg(long)]
    spawn: Option<usize>,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent closed-loop workers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Operations and weights: login, sso, cc, refresh, userinfo, introspect, discovery, jwks, healthz.
    /// Phases separated by `/` run one after another against the same nodes (e.g. `healthz=1/discovery=1`).
    #[arg(long, default_value = "cc=1")]
    mix: String,
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
    /// Instead of a run: measure the argon2id bound (verifications per second on every core, OWASP parameters),
    /// the ceiling of password logins on this machine.
    #[arg(long)]
    calibrate: bool,
}

fn parse_mix(text: &str) -> anyhow::Result<Vec<(Op, u32)>> {
    text.split(',')
        .map(|part| {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let op = Op::parse(name.trim()).with_context(|| format!("unknown operation {name:?}"))?;
            Ok((op, weight.trim().parse().with_context(|| format!("bad weight in {part:?}"))?))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.calibrate {
        let seconds = cli.duration.min(30);
        let (threads, rate) = idp_cluster_tests::bench::calibrate::argon2_bound(Duration::from_secs(seconds))?;
        println!("argon2id bound: {rate:.1} verifications/s on {threads} thread(s) over {seconds} s");
        return Ok(());
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads.max(1)).enable_all().build()?;
    runtime.block_on(async move {
        let phases = cli.mix.split('/').map(parse_mix).collect::<anyhow::Result<Vec<_>>>()?;
        let mut spawned = Vec::new();
        let mut spawned_cluster = None;
        let nodes = match cli.spawn {
            Some(1) => {
                let node = spawn_node().await?;
                let url = node.url.clone();
                spawned.push(node);
                vec![url]
            }
            Some(count) if count > 1 => {
                let cluster = spawn_cluster(count).await?;
                let urls = cluster.nodes.iter().map(|node| node.url.clone()).collect();
                spawned_cluster = Some(cluster);
                urls
            }
            Some(_) => bail!("--spawn needs at least 1 node"),
            None if cli.nodes.is_empty() => bail!("give --nodes URL,... or --spawn 1"),
            None => cli.nodes.clone(),
        };
        for mix in phases {
            let workload = Workload {
                client_id: cli.client.clone(),
                client_secret: cli.secret.clone(),
                user_prefix: cli.user.clone(),
                user_count: cli.users,
                password: cli.password.clone(),
                needs_login: false,
            }
            .for_mix(&mix);
            eprintln!("idp-bench: {} worker(s) for {} s against {}", cli.concurrency, cli.duration, nodes.join(","));
            let duration = Duration::from_secs(cli.duration);
            let plan = RunPlan { nodes: nodes.clone(), mix, duration, concurrency: cli.concurrency, workload };
            let report = run(plan).await?;
            print!("{}", report.table());
            if let Some(path) = &cli.json {
                std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)?;
            }
        }
        drop(spawned);
        drop(spawned_cluster);
        Ok(())
    })
}
