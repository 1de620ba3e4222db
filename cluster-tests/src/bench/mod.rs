//! The load tool behind `idp-bench`: workloads (`ops`), node spawning (`spawn`), figures (`report`).

pub mod calibrate;
pub mod ops;
pub mod report;
pub mod spawn;

use ops::{Op, Workload};
use report::{OpStats, Report};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A run: which nodes, which operations in which proportions, for how long, at which concurrency.
pub struct RunPlan {
    pub nodes: Vec<String>,
    pub mix: Vec<(Op, u32)>,
    pub duration: Duration,
    pub concurrency: usize,
    pub workload: Workload,
}

/// Runs the plan with `concurrency` closed-loop workers; each stops by itself when the duration is over.
pub async fn run(plan: RunPlan) -> anyhow::Result<Report> {
    let plan = Arc::new(plan);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..plan.concurrency {
        let (plan, stop) = (plan.clone(), stop.clone());
        workers.push(tokio::spawn(async move { worker_loop(worker, plan, stop).await }));
    }
    tokio::time::sleep(plan.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut stats: Vec<OpStats> = plan.mix.iter().map(|(op, _)| OpStats::new(*op)).collect();
    for worker in workers {
        for (index, worker_stats) in worker.await??.into_iter().enumerate() {
            stats[index].merge(worker_stats);
        }
    }
    Ok(Report::new(stats, started.elapsed()))
}

async fn worker_loop(worker: usize, plan: Arc<RunPlan>, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<OpStats>> {
    let mut session = plan.workload.session(worker, &plan.nodes).await?;
    let mut stats: Vec<OpStats> = plan.mix.iter().map(|(op, _)| OpStats::new(*op)).collect();
    let total: u32 = plan.mix.iter().map(|(_, weight)| weight).sum();
    let mut turn: u64 = worker as u64;
    while !stop.load(Ordering::Relaxed) {
        turn = turn.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut pick = ((turn >> 33) % u64::from(total.max(1))) as u32;
        let index = plan
            .mix
            .iter()
            .position(|(_, weight)| {
                pick < *weight || {
                    pick -= weight;
                    false
                }
            })
            .unwrap_or(0);
        let op = plan.mix[index].0;
        let started = Instant::now();
        let outcome = session.run(op).await;
        stats[index].record(started.elapsed(), outcome.err().map(|error| error.kind()));
    }
    Ok(stats)
}
