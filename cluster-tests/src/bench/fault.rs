//! `--fault KIND:NODE@SECONDS`: a fault injected into a spawned cluster during a run. Nodes are numbered from 1.
//! KIND is `kill` (SIGKILL), `stop` (SIGSTOP, the node stays stopped: a gray failure), `partition` (the node cut
//! from every other node, gossip and RPC, not from Redis) or `redis-failover` (the Redis primary is killed and
//! Sentinel promotes the replica; NODE is not used, write 1).

use anyhow::{bail, Context};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Kill,
    Stop,
    Partition,
    RedisFailover,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Partition => "partition",
            Self::RedisFailover => "redis-failover",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// 1-based, as on the command line.
    pub node: usize,
    pub at: Duration,
}

impl FaultSpec {
    /// Parses `kill:2@5` (seconds may have a fraction: `stop:1@2.5`).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (kind, rest) = text.split_once(':').with_context(|| format!("--fault {text:?}: KIND:NODE@SECONDS"))?;
        let (node, seconds) = rest.split_once('@').with_context(|| format!("--fault {text:?}: KIND:NODE@SECONDS"))?;
        let kind = match kind.trim() {
            "kill" => FaultKind::Kill,
            "stop" => FaultKind::Stop,
            "partition" => FaultKind::Partition,
            "redis-failover" => FaultKind::RedisFailover,
            other => bail!("--fault {text:?}: unknown kind {other:?} (kill, stop, partition, redis-failover)"),
        };
        let node: usize = node.trim().parse().with_context(|| format!("--fault {text:?}: NODE is a number from 1"))?;
        if node == 0 {
            bail!("--fault {text:?}: nodes are numbered from 1");
        }
        let seconds: f64 = seconds.trim().parse().with_context(|| format!("--fault {text:?}: SECONDS is a number"))?;
        if !seconds.is_finite() || seconds < 0.0 {
            bail!("--fault {text:?}: SECONDS must be 0 or more");
        }
        Ok(Self { kind, node, at: Duration::from_secs_f64(seconds) })
    }

    /// The 0-based index of the node.
    pub fn index(&self) -> usize {
        self.node - 1
    }

    pub fn label(&self) -> String {
        match self.kind {
            FaultKind::RedisFailover => "redis-failover".to_string(),
            kind => format!("{} node {}", kind.name(), self.node),
        }
    }
}

/// Checks a run's faults against the cluster: nodes exist, faults fall inside the run, one fault per node.
pub fn validate(faults: &[FaultSpec], nodes: usize, duration: Duration) -> anyhow::Result<()> {
    for fault in faults {
        if fault.kind != FaultKind::RedisFailover && fault.node > nodes {
            bail!("--fault {}: there are only {nodes} node(s)", fault.label());
        }
        if fault.at >= duration {
            bail!("--fault {} at {:?} is not inside the run ({duration:?})", fault.label(), fault.at);
        }
    }
    for (index, fault) in faults.iter().enumerate() {
        let twice = faults[..index].iter().any(|other| {
            (other.kind == FaultKind::RedisFailover) == (fault.kind == FaultKind::RedisFailover)
                && (fault.kind == FaultKind::RedisFailover || other.node == fault.node)
        });
        if twice {
            bail!("--fault {}: one fault per node (and one Redis failover) per run", fault.label());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_kind_node_and_seconds() {
        let kill = FaultSpec::parse("kill:2@5").unwrap();
        assert_eq!(kill, FaultSpec { kind: FaultKind::Kill, node: 2, at: Duration::from_secs(5) });
        assert_eq!(kill.index(), 1);
        assert_eq!(kill.label(), "kill node 2");
        assert_eq!(FaultSpec::parse("stop:1@2.5").unwrap().at, Duration::from_millis(2500));
        assert_eq!(FaultSpec::parse("partition:3@0").unwrap().kind, FaultKind::Partition);
        let failover = FaultSpec::parse("redis-failover:1@4").unwrap();
        assert_eq!((failover.kind, failover.label().as_str()), (FaultKind::RedisFailover, "redis-failover"));
    }

    #[test]
    fn bad_fault_specs_are_refused_with_a_reason() {
        for (text, reason) in [
            ("kill", "KIND:NODE@SECONDS"),
            ("kill:2", "KIND:NODE@SECONDS"),
            ("reboot:2@1", "unknown kind"),
            ("kill:0@1", "numbered from 1"),
            ("kill:x@1", "NODE is a number"),
            ("kill:1@soon", "SECONDS is a number"),
            ("kill:1@-1", "0 or more"),
            ("kill:1@inf", "0 or more"),
        ] {
            let error = FaultSpec::parse(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn faults_must_name_existing_nodes_inside_the_run_once() {
        let run = Duration::from_secs(10);
        let parse = |texts: &[&str]| texts.iter().map(|text| FaultSpec::parse(text).unwrap()).collect::<Vec<_>>();
        assert!(validate(&parse(&["kill:3@2", "stop:1@4", "redis-failover:1@6"]), 3, run).is_ok());
        assert!(validate(&parse(&["kill:4@2"]), 3, run).unwrap_err().to_string().contains("only 3"));
        assert!(validate(&parse(&["kill:1@10"]), 3, run).unwrap_err().to_string().contains("not inside"));
        assert!(validate(&parse(&["kill:1@1", "stop:1@2"]), 3, run).unwrap_err().to_string().contains("one fault"));
        let failovers = parse(&["redis-failover:1@1", "redis-failover:2@2"]);
        assert!(validate(&failovers, 3, run).is_err());
        assert!(validate(&parse(&["redis-failover:9@1"]), 3, run).is_ok(), "NODE is not used by a failover");
    }
}
