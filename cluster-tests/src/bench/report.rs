//! Figures of a run: throughput and latency percentiles per operation, errors by kind; as a table and as JSON
//! (`ops.<name>.{count, errors, rps, p50_ms, p95_ms, p99_ms, max_ms, errors_by_kind, failed_attempts,
//! failed_attempts_by_node}`).
//!
//! `count` is the operations that succeeded (at the first attempt or at the client's one retry on another node),
//! `errors` those that failed both, `failed_attempts` every attempt that failed (a retried success included), and
//! `failed_attempts_by_node` the same by node (numbered from 1) and kind, to tell what a failed attempt met.
//! Latencies are from the operation's scheduled start (open loop: its arrival time) to its success.

use super::ops::Op;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub struct OpStats {
    pub op: Op,
    latencies_us: Vec<u32>,
    errors_by_kind: BTreeMap<String, u64>,
    pub failed_attempts: u64,
    /// Failed attempts by node (numbered from 1) and kind.
    failed_attempts_by_node: BTreeMap<usize, BTreeMap<String, u64>>,
}

impl OpStats {
    pub fn new(op: Op) -> Self {
        Self {
            op,
            latencies_us: Vec::new(),
            errors_by_kind: BTreeMap::new(),
            failed_attempts: 0,
            failed_attempts_by_node: BTreeMap::new(),
        }
    }

    /// Records one failed attempt on node `node` (numbered from 1), of kind `kind`.
    pub fn record_failed_attempt(&mut self, node: usize, kind: String) {
        self.failed_attempts += 1;
        *self.failed_attempts_by_node.entry(node).or_default().entry(kind).or_default() += 1;
    }

    /// Records one operation: its latency, and its error kind when it failed.
    pub fn record(&mut self, latency: Duration, error: Option<String>) {
        match error {
            None => self.latencies_us.push(latency.as_micros().min(u128::from(u32::MAX)) as u32),
            Some(kind) => *self.errors_by_kind.entry(kind).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: OpStats) {
        self.failed_attempts += other.failed_attempts;
        self.latencies_us.extend(other.latencies_us);
        for (kind, count) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += count;
        }
        for (node, kinds) in other.failed_attempts_by_node {
            for (kind, count) in kinds {
                *self.failed_attempts_by_node.entry(node).or_default().entry(kind).or_default() += count;
            }
        }
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }
}

pub struct Report {
    stats: Vec<OpStats>,
    elapsed: Duration,
}

/// The latency at a quantile (nearest rank), in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], quantile: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((quantile * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

impl Report {
    pub fn new(mut stats: Vec<OpStats>, elapsed: Duration) -> Self {
        for stat in &mut stats {
            stat.latencies_us.sort_unstable();
        }
        Self { stats, elapsed }
    }

    /// Operations that succeeded, all kinds together.
    pub fn successes(&self) -> u64 {
        self.stats.iter().map(|stat| stat.latencies_us.len() as u64).sum()
    }

    pub fn to_json(&self) -> Value {
        let mut ops = Map::new();
        for stat in &self.stats {
            let sorted = &stat.latencies_us;
            ops.insert(
                stat.op.name().into(),
                json!({
                    "count": sorted.len(),
                    "errors": stat.errors(),
                    "rps": sorted.len() as f64 / self.elapsed.as_secs_f64(),
                    "p50_ms": percentile_ms(sorted, 0.50),
                    "p95_ms": percentile_ms(sorted, 0.95),
                    "p99_ms": percentile_ms(sorted, 0.99),
                    "max_ms": percentile_ms(sorted, 1.0),
                    "errors_by_kind": stat.errors_by_kind,
                    "failed_attempts": stat.failed_attempts,
                    "failed_attempts_by_node": stat
                        .failed_attempts_by_node
                        .iter()
                        .map(|(node, kinds)| (node.to_string(), json!(kinds)))
                        .collect::<Map<String, Value>>(),
                }),
            );
        }
        json!({ "duration_s": self.elapsed.as_secs_f64(), "ops": ops })
    }

    pub fn table(&self) -> String {
        let mut text = format!(
            "{:<12} {:>9} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
            "op", "count", "errors", "retried", "rps", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for stat in &self.stats {
            let sorted = &stat.latencies_us;
            text += &format!(
                "{:<12} {:>9} {:>7} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                stat.op.name(),
                sorted.len(),
                stat.errors(),
                stat.failed_attempts,
                sorted.len() as f64 / self.elapsed.as_secs_f64(),
                percentile_ms(sorted, 0.50),
                percentile_ms(sorted, 0.95),
                percentile_ms(sorted, 0.99),
                percentile_ms(sorted, 1.0),
            );
            for (kind, count) in &stat.errors_by_kind {
                text += &format!("    error {kind}: {count}\n");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn json_report_has_the_documented_shape() {
        let mut stats = OpStats::new(Op::ClientCredentials);
        stats.record(Duration::from_millis(2), None);
        stats.record(Duration::from_millis(4), Some("http_500".into()));
        let mut other = OpStats::new(Op::ClientCredentials);
        other.record_failed_attempt(2, "http_503".into());
        other.record_failed_attempt(2, "http_503".into());
        other.record_failed_attempt(3, "connect".into());
        stats.merge(other);
        let report = Report::new(vec![stats], Duration::from_secs(1)).to_json();
        let cc = &report["ops"]["cc"];
        assert_eq!(cc["count"], 1);
        assert_eq!(cc["errors"], 1);
        assert_eq!(cc["errors_by_kind"]["http_500"], 1);
        assert_eq!(cc["p50_ms"], 2.0);
        assert!(cc["count"].is_u64() && cc["errors"].is_u64(), "integers: {cc}");
        for key in ["rps", "p95_ms", "p99_ms", "max_ms"] {
            assert!(cc[key].is_f64(), "{key}: {cc}");
        }
        assert_eq!(cc["failed_attempts"], 3);
        assert_eq!(cc["failed_attempts_by_node"], json!({ "2": { "http_503": 2 }, "3": { "connect": 1 } }));
    }
}
