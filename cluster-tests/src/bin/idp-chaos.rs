//! `idp-chaos`: the randomized soak of `scripts/chaos --minutes N` (see `idp_cluster_tests::chaos::soak`).

use anyhow::bail;
use clap::Parser;
use idp_cluster_tests::chaos::soak::soak;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(name = "idp-chaos", about = "Random faults under client load, the invariant checker after each")]
struct Cli {
    /// Minutes to run (cycles of about 20 s each).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seed of the fault sequence; printed at start, give it again to replay the same faults and victims.
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes of the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.nodes < 2 || cli.minutes <= 0.0 {
        bail!("--nodes must be at least 2 and --minutes above 0");
    }
    let seed = cli
        .seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |since| since.as_nanos() as u64));
    println!("idp-chaos: seed {seed} (replay with --seed {seed}), {} minutes", cli.minutes);
    let started = Instant::now();
    let summary = soak(seed, cli.minutes, cli.nodes, cli.clients).await?;
    summary.print(seed, started.elapsed());
    if !summary.violations.is_empty() || !summary.errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
