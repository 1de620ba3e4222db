//! One `idp-bench` invocation: start the nodes (or take `--nodes`), run each phase of the mix, inject the faults
//! on time, and write the figures: the table, `--json`, and with a fault the timeline as CSV and SVG.

use super::balance::Balance;
use super::fault::{self, FaultKind, FaultSpec};
use super::mix::Mix;
use super::ops::Workload;
use super::spawn::{spawn_cluster, spawn_node, SpawnedNode};
use super::timeline::{self, Mark, Row};
use super::{run, Pace, RunOutcome, RunPlan};
use crate::harness::{Cluster, Link};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Everything the command line says.
pub struct Options {
    pub nodes: Vec<String>,
    pub spawn: Option<usize>,
    pub duration: Duration,
    pub pace: Pace,
    pub phases: Vec<Mix>,
    pub balance: Balance,
    pub faults: Vec<FaultSpec>,
    pub workload: Workload,
    pub json: Option<PathBuf>,
    /// Where the timeline goes (`<prefix>.csv`, `<prefix>.svg`).
    pub timeline: Option<PathBuf>,
    pub progress: bool,
}

/// What a fault did.
#[derive(Clone, Debug)]
pub struct Injected {
    pub spec: FaultSpec,
    /// When it was injected, since the start of the run.
    pub at: Duration,
    /// Redis failover: how long until Sentinel named another primary (polled every 20 ms).
    pub sentinel_failover: Option<Duration>,
    pub error: Option<String>,
}

/// The nodes a run drives.
enum Nodes {
    External(Vec<String>),
    Single(SpawnedNode),
    Cluster(Box<Cluster>),
}

impl Nodes {
    fn urls(&self) -> Vec<String> {
        match self {
            Self::External(urls) => urls.clone(),
            Self::Single(node) => vec![node.url.clone()],
            Self::Cluster(cluster) => (0..cluster.len()).map(|index| cluster.url(index)).collect(),
        }
    }

    fn health_urls(&self) -> Vec<Option<String>> {
        match self {
            Self::External(urls) => urls.iter().map(|_| None).collect(),
            Self::Single(node) => vec![Some(format!("{}/healthz", node.url))],
            Self::Cluster(cluster) => {
                (0..cluster.len()).map(|index| Some(format!("{}/readyz", cluster.node(index).admin_url()))).collect()
            }
        }
    }
}

pub async fn drive(options: Options) -> anyhow::Result<()> {
    if !options.faults.is_empty() {
        let Some(count) = options.spawn.filter(|count| *count >= 2) else {
            bail!("--fault needs --spawn N with N ≥ 2 (the bench injects faults into the nodes it started)");
        };
        fault::validate(&options.faults, count, options.duration)?;
        if options.phases.len() > 1 {
            bail!("--fault needs a single phase in --mix (no `/`)");
        }
    }
    let mut nodes = start_nodes(&options).await?;
    let urls = nodes.urls();
    let mut results = Vec::new();
    for mix in &options.phases {
        eprintln!(
            "idp-bench: {} for {} s against {}",
            describe_pace(options.pace),
            options.duration.as_secs_f64(),
            urls.join(",")
        );
        let plan = RunPlan {
            nodes: urls.clone(),
            health_urls: nodes.health_urls(),
            mix: mix.clone(),
            duration: options.duration,
            pace: options.pace,
            balance: options.balance,
            workload: options.workload.clone().for_mix(mix),
            progress: options.progress,
        };
        let redis_before = redis_command_counts(&nodes);
        let (started_tx, started_rx) = oneshot::channel();
        let (outcome, injected) = match &mut nodes {
            Nodes::Cluster(cluster) if !options.faults.is_empty() => {
                tokio::join!(run(plan, Some(started_tx)), inject(cluster, &options.faults, started_rx))
            }
            _ => (run(plan, Some(started_tx)).await, Vec::new()),
        };
        let outcome = outcome?;
        let mut value = report(&options, &outcome, &injected)?;
        if let (Some(before), Some(after)) = (redis_before, redis_command_counts(&nodes)) {
            value["redis_commands"] = redis_delta(&before, &after, outcome.report.successes());
        }
        results.push(value);
    }
    if let Some(path) = &options.json {
        let value = if results.len() == 1 { results.remove(0) } else { json!({ "phases": results }) };
        std::fs::write(path, serde_json::to_string_pretty(&value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(nodes);
    Ok(())
}

/// `INFO commandstats` of a spawned cluster's Redis primary: calls per command (`None` without one, or when the
/// primary does not answer, e.g. after a failover).
fn redis_command_counts(nodes: &Nodes) -> Option<BTreeMap<String, u64>> {
    let Nodes::Cluster(cluster) = nodes else { return None };
    let info = cluster.redis_client().ok()?.command(&["INFO", "commandstats"]).ok()?.text().ok()??;
    Some(parse_commandstats(&info))
}

/// `cmdstat_eval:calls=1605,usec=...` lines → `{"eval": 1605}`.
pub fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields.split(',').find_map(|field| field.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// The commands Redis ran during the run (background work included: lease renewals, directory and key ring
/// polls, pings), in all and per successful operation; printed and answered as JSON.
fn redis_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, operations: u64) -> Value {
    let delta: BTreeMap<&String, u64> = after
        .iter()
        .map(|(name, calls)| (name, calls.saturating_sub(before.get(name).copied().unwrap_or(0))))
        .filter(|(name, calls)| *calls > 0 && name.as_str() != "info")
        .collect();
    let total: u64 = delta.values().sum();
    let per_operation = total as f64 / operations.max(1) as f64;
    let listed: Vec<String> = delta.iter().map(|(name, calls)| format!("{name}={calls}")).collect();
    println!(
        "redis: {total} commands during the run, {per_operation:.2} per successful operation ({})",
        listed.join(", ")
    );
    json!({ "total": total, "per_operation": per_operation, "by_command": delta })
}

fn describe_pace(pace: Pace) -> String {
    match pace {
        Pace::Closed { concurrency } => format!("{concurrency} closed-loop worker(s)"),
        Pace::Open { rate, concurrency } => format!("{rate} operations/s open loop (at most {concurrency} in flight)"),
    }
}

async fn start_nodes(options: &Options) -> anyhow::Result<Nodes> {
    match options.spawn {
        None if options.nodes.is_empty() => bail!("give --nodes URL,... or --spawn N"),
        None => Ok(Nodes::External(options.nodes.clone())),
        Some(0) => bail!("--spawn needs at least 1 node"),
        Some(1) => Ok(Nodes::Single(spawn_node().await?)),
        Some(count) => {
            let proxied = options.faults.iter().any(|fault| fault.kind == FaultKind::Partition);
            let sentinels =
                if options.faults.iter().any(|fault| fault.kind == FaultKind::RedisFailover) { 3 } else { 0 };
            eprintln!(
                "idp-bench: starting redis-server{} and {count} nodes{}",
                if sentinels > 0 { ", a replica and 3 Sentinels" } else { "" },
                if proxied { " that can be partitioned" } else { "" }
            );
            Ok(Nodes::Cluster(Box::new(spawn_cluster(count, proxied, sentinels).await?)))
        }
    }
}

/// Injects each fault at its time after the run's start.
async fn inject(cluster: &mut Cluster, faults: &[FaultSpec], started_rx: oneshot::Receiver<Instant>) -> Vec<Injected> {
    let Ok(started) = started_rx.await else { return Vec::new() };
    let mut ordered = faults.to_vec();
    ordered.sort_by_key(|fault| fault.at);
    let mut injected = Vec::new();
    for spec in ordered {
        tokio::time::sleep_until((started + spec.at).into()).await;
        let primary_before = (spec.kind == FaultKind::RedisFailover).then(|| cluster.sentinel_primary().ok()).flatten();
        let at = started.elapsed();
        let outcome = match spec.kind {
            FaultKind::Kill => cluster.kill(spec.index()),
            FaultKind::Stop => cluster.stop(spec.index()),
            FaultKind::Partition => cluster.partition(spec.index(), Link::Peers),
            FaultKind::RedisFailover => cluster.kill_redis_primary(),
        };
        let error = outcome.err().map(|error| format!("{error:#}"));
        let sentinel_failover = match (&primary_before, &error) {
            (Some(before), None) => wait_sentinel_switch(cluster, before, Duration::from_secs(30)).await,
            _ => None,
        };
        injected.push(Injected { spec, at, sentinel_failover, error });
    }
    injected
}

/// Polls the Sentinels every 20 ms until they name a primary other than `before`; answers how long it took.
async fn wait_sentinel_switch(cluster: &Cluster, before: &str, within: Duration) -> Option<Duration> {
    let since = Instant::now();
    while since.elapsed() < within {
        if matches!(cluster.sentinel_primary(), Ok(primary) if primary != before) {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Prints the table and the recovery figures; writes the timeline files; answers the JSON of the phase.
fn report(options: &Options, outcome: &RunOutcome, injected: &[Injected]) -> anyhow::Result<Value> {
    print!("{}", outcome.report.table());
    let mut value = outcome.report.to_json();
    value["pace"] = match options.pace {
        Pace::Closed { concurrency } => json!({ "closed_loop_workers": concurrency }),
        Pace::Open { rate, concurrency } => json!({ "rate": rate, "max_in_flight": concurrency }),
    };
    if outcome.backlog > 0 {
        println!(
            "open loop: {} arrivals not started when the run ended (the nodes could not keep up)",
            outcome.backlog
        );
    }
    value["backlog"] = json!(outcome.backlog);
    if injected.is_empty() {
        return Ok(value);
    }
    let rows = outcome.timeline.rows(outcome.elapsed);
    let end_ms = outcome.elapsed.as_millis() as u64;
    let marks = marks(&rows, injected, end_ms);
    let mut faults_json = Vec::new();
    for (fault, mark) in injected.iter().zip(&marks) {
        let sentinel = fault
            .sentinel_failover
            .map(|elapsed| format!(" (Sentinel's own failover: {} ms)", elapsed.as_millis()))
            .unwrap_or_default();
        match &fault.error {
            Some(error) => {
                println!("fault {} at {:.2} s FAILED to inject: {error}", mark.label, fault.at.as_secs_f64())
            }
            None => {
                let rto = timeline::describe_rto(mark.rto_ms);
                println!("fault {} at {:.2} s: {rto}{sentinel}", mark.label, fault.at.as_secs_f64())
            }
        }
        // No recovery time for a fault that was not injected.
        let rto_ms = mark.rto_ms.filter(|_| fault.error.is_none());
        faults_json.push(json!({
            "kind": fault.spec.kind.name(),
            "node": fault.spec.node,
            "at_ms": mark.at_ms,
            "rto_ms": rto_ms,
            "recovered": mark.rto_ms.is_some(),
            "sentinel_failover_ms": fault.sentinel_failover.map(|elapsed| elapsed.as_millis() as u64),
            "error": fault.error,
        }));
    }
    // The first fault's: null when it could not be injected or the traffic had not recovered by the next fault
    // (or the end of the run).
    let first_injected = injected.first().is_some_and(|fault| fault.error.is_none());
    value["rto_ms"] = json!(marks.first().and_then(|mark| mark.rto_ms).filter(|_| first_injected));
    value["faults"] = Value::Array(faults_json);
    let prefix = timeline_prefix(options);
    let (csv_path, svg_path) = (prefix.with_extension("csv"), prefix.with_extension("svg"));
    std::fs::write(&csv_path, timeline::csv(&rows)).with_context(|| format!("writing {}", csv_path.display()))?;
    let title = format!(
        "idp-bench: {} nodes, {}, {}",
        options.spawn.unwrap_or(options.nodes.len()),
        describe_pace(options.pace),
        marks.iter().map(|mark| mark.label.as_str()).collect::<Vec<_>>().join(", ")
    );
    std::fs::write(&svg_path, timeline::svg(&rows, &marks, &title))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    println!("timeline: {} and {}", csv_path.display(), svg_path.display());
    value["timeline_csv"] = json!(csv_path.display().to_string());
    value["timeline_svg"] = json!(svg_path.display().to_string());
    Ok(value)
}

/// Each fault's mark: its recovery counted until the next fault (or the end of the run).
fn marks(rows: &[Row], injected: &[Injected], end_ms: u64) -> Vec<Mark> {
    injected
        .iter()
        .enumerate()
        .map(|(index, fault)| {
            let at_ms = fault.at.as_millis() as u64;
            let until_ms = injected.get(index + 1).map_or(end_ms, |next| next.at.as_millis() as u64);
            Mark { label: fault.spec.label(), at_ms, rto_ms: timeline::rto_ms(rows, at_ms, until_ms) }
        })
        .collect()
}

fn timeline_prefix(options: &Options) -> PathBuf {
    match (&options.timeline, &options.json) {
        (Some(prefix), _) => prefix.clone(),
        (None, Some(json)) => json.with_extension(""),
        (None, None) => PathBuf::from("idp-bench-timeline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_lines_give_calls_per_command() {
        let info = "# Commandstats\r\ncmdstat_eval:calls=1605,usec=9000,usec_per_call=5.61,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_ping:calls=12,usec=3,usec_per_call=0.25\r\ncmdstat_broken\r\n";
        let counts = parse_commandstats(info);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts["eval"], 1605);
        assert_eq!(counts["ping"], 12);
        let before = BTreeMap::from([("eval".to_string(), 5), ("info".to_string(), 1)]);
        let after = BTreeMap::from([("eval".to_string(), 25), ("info".to_string(), 3), ("get".to_string(), 10)]);
        let delta = redis_delta(&before, &after, 10);
        assert_eq!(delta["total"], 30, "INFO itself is not counted");
        assert_eq!(delta["per_operation"], 3.0);
        assert_eq!(delta["by_command"]["get"], 10);
    }
}
