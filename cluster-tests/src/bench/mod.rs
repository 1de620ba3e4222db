//! The load tool behind `idp-bench`: workloads (`ops`), the mix (`mix`), the load balancer it plays (`balance`),
//! faults (`fault`), the per-100 ms timeline and its chart (`timeline`), node spawning (`spawn`), figures
//! (`report`).
//!
//! Two paces: a closed loop (`--concurrency N` workers, each starting its next operation when the last one ended)
//! or an open loop (`--rate R`: operations arrive at fixed times, k / R seconds after the start, whatever the
//! cluster does; a pool of workers serves them in order, and each latency is counted from the arrival time, so a
//! stalled cluster shows as latency instead of fewer operations: no coordinated omission).

pub mod balance;
pub mod calibrate;
pub mod drive;
pub mod fault;
pub mod mix;
pub mod ops;
pub mod report;
pub mod spawn;
pub mod timeline;

use balance::{Balance, Balancer, Health};
use mix::{pick, Draws, Mix};
use ops::{Op, OpError, OpResult, Session, Workload};
use report::{OpStats, Report};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timeline::Timeline;
use tokio::sync::{mpsc, oneshot, Mutex};

/// How operations are started.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// `concurrency` closed-loop workers.
    Closed { concurrency: usize },
    /// `rate` arrivals per second, served by at most `concurrency` operations in flight.
    Open { rate: f64, concurrency: usize },
}

impl Pace {
    fn workers(&self) -> usize {
        match self {
            Self::Closed { concurrency } | Self::Open { concurrency, .. } => (*concurrency).max(1),
        }
    }
}

/// A run: which nodes, which operations in which proportions, for how long, at which pace.
pub struct RunPlan {
    pub nodes: Vec<String>,
    /// Per node, a readiness URL the balancer polls (`None`: passive ejection only).
    pub health_urls: Vec<Option<String>>,
    pub mix: Mix,
    pub duration: Duration,
    pub pace: Pace,
    pub balance: Balance,
    pub workload: Workload,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

/// What a run measured.
pub struct RunOutcome {
    pub report: Report,
    pub timeline: Timeline,
    pub elapsed: Duration,
    /// Open loop: arrivals not started when the run ended (the cluster could not keep up).
    pub backlog: u64,
}

/// Counters the progress bar reads.
#[derive(Default)]
struct Progress {
    ok: AtomicU64,
    failed_attempts: AtomicU64,
    errors: AtomicU64,
}

struct Shared {
    plan: RunPlan,
    balancer: Balancer,
    progress: Progress,
    stop: AtomicBool,
}

/// A worker's own figures, merged at the end.
struct Tally {
    stats: Vec<OpStats>,
    timeline: Timeline,
}

/// Runs the plan: sets every worker up (a login when the mix needs one), sends the start instant on `started`
/// (faults are scheduled from it), runs for the duration, and answers the figures.
pub async fn run(plan: RunPlan, started_tx: Option<oneshot::Sender<Instant>>) -> anyhow::Result<RunOutcome> {
    let workers = plan.pace.workers();
    let balancer = Balancer::new(plan.nodes.len(), plan.balance);
    let shared = Arc::new(Shared { plan, balancer, progress: Progress::default(), stop: AtomicBool::new(false) });
    let mut sessions = Vec::with_capacity(workers);
    for worker in 0..workers {
        sessions.push(shared.plan.workload.session(worker, &shared.plan.nodes).await?);
    }
    let started = Instant::now();
    if let Some(started_tx) = started_tx {
        let _ = started_tx.send(started);
    }
    let checkers = spawn_health_checks(&shared);
    let progress = shared.plan.progress.then(|| tokio::spawn(draw_progress(shared.clone(), started)));
    let (arrivals_rx, dispatcher) = match shared.plan.pace {
        Pace::Closed { .. } => (None, None),
        Pace::Open { rate, .. } => {
            let (arrivals_tx, arrivals_rx) = mpsc::unbounded_channel();
            let dispatcher = tokio::spawn(dispatch(rate, started, shared.plan.duration, arrivals_tx));
            (Some(Arc::new(Mutex::new(arrivals_rx))), Some(dispatcher))
        }
    };
    let handles: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(worker, session)| {
            let (shared, arrivals_rx) = (shared.clone(), arrivals_rx.clone());
            tokio::spawn(async move { worker_loop(worker, session, shared, started, arrivals_rx).await })
        })
        .collect();
    tokio::time::sleep_until((started + shared.plan.duration).into()).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut stats: Vec<OpStats> = shared.plan.mix.iter().map(|(op, _)| OpStats::new(*op)).collect();
    let mut timeline = Timeline::default();
    for handle in handles {
        let tally = handle.await?;
        for (index, worker_stats) in tally.stats.into_iter().enumerate() {
            stats[index].merge(worker_stats);
        }
        timeline.merge(tally.timeline);
    }
    let elapsed = started.elapsed().min(shared.plan.duration.max(Duration::from_millis(1)));
    let backlog = match (dispatcher, arrivals_rx) {
        (Some(dispatcher), Some(arrivals_rx)) => {
            dispatcher.abort();
            let mut arrivals_rx = arrivals_rx.lock().await;
            let mut left = 0;
            while arrivals_rx.try_recv().is_ok() {
                left += 1;
            }
            left
        }
        _ => 0,
    };
    for checker in checkers {
        checker.abort();
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    Ok(RunOutcome { report: Report::new(stats, elapsed), timeline, elapsed, backlog })
}

/// Sends the arrival instants `started + k / rate` until the duration is over.
async fn dispatch(rate: f64, started: Instant, duration: Duration, arrivals_tx: mpsc::UnboundedSender<Instant>) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut arrival = started;
    while arrival < started + duration {
        tokio::time::sleep_until(arrival.into()).await;
        if arrivals_tx.send(arrival).is_err() {
            return;
        }
        arrival += interval;
    }
}

async fn worker_loop(
    worker: usize,
    mut session: Session,
    shared: Arc<Shared>,
    started: Instant,
    arrivals_rx: Option<Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>>,
) -> Tally {
    let plan = &shared.plan;
    let mut tally =
        Tally { stats: plan.mix.iter().map(|(op, _)| OpStats::new(*op)).collect(), timeline: Timeline::default() };
    let mut draws = Draws::new(worker as u64 ^ 0x5EED);
    while !shared.stop.load(Ordering::Relaxed) {
        let scheduled = match &arrivals_rx {
            None => Instant::now(),
            Some(arrivals_rx) => {
                let next =
                    tokio::time::timeout(Duration::from_millis(100), async { arrivals_rx.lock().await.recv().await });
                match next.await {
                    Ok(Some(arrival)) => arrival,
                    Ok(None) => break,
                    Err(_) => continue,
                }
            }
        };
        one_operation(&shared, &mut session, &mut tally, &mut draws, started, scheduled).await;
    }
    tally
}

/// One operation as a client behind a load balancer with one retry sees it.
async fn one_operation(
    shared: &Shared,
    session: &mut Session,
    tally: &mut Tally,
    draws: &mut Draws,
    started: Instant,
    scheduled: Instant,
) {
    let plan = &shared.plan;
    let index = pick(&plan.mix, draws.next_u64());
    let op = plan.mix[index].0;
    let first = shared.balancer.pick(None, draws);
    let mut outcome = attempt(shared, session, op, first).await;
    if let Err(error) = &outcome {
        note_failed_attempt(shared, tally, index, first, error, started);
        let second = shared.balancer.pick(Some(first), draws);
        outcome = attempt(shared, session, op, second).await;
        if let Err(error) = &outcome {
            note_failed_attempt(shared, tally, index, second, error, started);
        }
    }
    let latency = scheduled.elapsed();
    let at = started.elapsed();
    match outcome {
        Ok(()) => {
            tally.stats[index].record(latency, None);
            tally.timeline.record_success(at, latency);
            shared.progress.ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            tally.stats[index].record(latency, Some(error.kind()));
            tally.timeline.record_failure(at, latency);
            shared.progress.errors.fetch_add(1, Ordering::Relaxed);
            let node = shared.balancer.pick(None, draws);
            session.recover(&plan.nodes[node]).await;
        }
    }
}

/// One attempt of `op` on `node`, abandoned (as a transport failure) when the node is marked down meanwhile.
async fn attempt(shared: &Shared, session: &mut Session, op: Op, node: usize) -> OpResult<()> {
    let attempt = session.run_on(op, &shared.plan.nodes[node]);
    match shared.balancer.unless_marked_down(node, attempt).await {
        Some(outcome) => outcome,
        None => Err(OpError::Transport("marked_down".into())),
    }
}

fn note_failed_attempt(
    shared: &Shared,
    tally: &mut Tally,
    index: usize,
    node: usize,
    error: &OpError,
    started: Instant,
) {
    tally.stats[index].record_failed_attempt(node + 1, error.kind());
    tally.timeline.record_failed_attempt(started.elapsed());
    shared.progress.failed_attempts.fetch_add(1, Ordering::Relaxed);
    if matches!(error, OpError::Transport(_)) {
        shared.balancer.eject(node);
    }
}

/// Polls each node's readiness URL every 100 ms (250 ms timeout), as a load balancer's active health check.
fn spawn_health_checks(shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_millis(250)).build() else { return Vec::new() };
    shared
        .plan
        .health_urls
        .iter()
        .enumerate()
        .filter_map(|(node, url)| url.clone().map(|url| (node, url)))
        .map(|(node, url)| {
            let (shared, http) = (shared.clone(), http.clone());
            tokio::spawn(async move {
                while !shared.stop.load(Ordering::Relaxed) {
                    let health = match http.get(&url).send().await {
                        Ok(response) if response.status().is_success() => Health::Ready,
                        Ok(_) => Health::NotReady,
                        Err(_) => Health::Unreachable,
                    };
                    shared.balancer.set_health(node, health);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect()
}

/// `[=====>    ] 4.2/10 s  ok 12345  failed attempts 3  errors 0  nodes up 3/3`, redrawn 4 times a second.
async fn draw_progress(shared: Arc<Shared>, started: Instant) {
    const WIDTH: usize = 30;
    let total = shared.plan.duration.as_secs_f64().max(0.001);
    loop {
        let elapsed = started.elapsed().as_secs_f64().min(total);
        let filled = ((elapsed / total) * WIDTH as f64) as usize;
        let bar: String = (0..WIDTH)
            .map(|cell| {
                if cell < filled {
                    '='
                } else if cell == filled {
                    '>'
                } else {
                    ' '
                }
            })
            .collect();
        let progress = &shared.progress;
        eprint!(
            "\r[{bar}] {elapsed:.1}/{total:.0} s  ok {}  failed attempts {}  errors {}  nodes up {}/{}   ",
            progress.ok.load(Ordering::Relaxed),
            progress.failed_attempts.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed),
            shared.balancer.up_count(),
            shared.plan.nodes.len()
        );
        let _ = std::io::stderr().flush();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
