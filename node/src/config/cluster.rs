//! The cluster sections: `[node]` (this node's addresses), `[cluster]` (gossip, leases, forwarding, RPC TLS),
//! `[redis]` (the replica) and `[admin]` (the optional admin listener).
//!
//! A node runs in cluster mode when `redis.url` or `redis.sentinels` is set; otherwise it is the embedded single
//! node and these sections are ignored. Every key but the node's own listen addresses has a default, and no
//! optional listener binds a fixed port by default, so several nodes can share a host.

use super::duration;
use super::validate::ensure;
use super::ConfigError;
use serde::{Deserialize, Deserializer, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// This node's identity and addresses in the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique, stable name of the node (shard ownership hashes it); defaults to its RPC advertise address.
    #[serde(default)]
    pub id: Option<String>,
    /// UDP address the gossip (chitchat) binds; required in cluster mode.
    #[serde(default)]
    pub gossip: Option<String>,
    /// Gossip address peers reach, when it differs from `gossip` (NAT, containers, `0.0.0.0`).
    #[serde(default)]
    pub gossip_advertise: Option<String>,
    /// Gossip addresses (`host:port`) of some other nodes; a list, or one comma-separated string.
    #[serde(default, deserialize_with = "string_list")]
    pub seeds: Vec<String>,
    /// TCP address of the internal RPC (request forwarding) listener; required in cluster mode.
    #[serde(default)]
    pub rpc: Option<String>,
    /// RPC address peers reach, when it differs from `rpc`.
    #[serde(default)]
    pub rpc_advertise: Option<String>,
    /// Longest graceful drain on SIGTERM: hand the shards over, finish in-flight requests, exit.
    #[serde(default = "defaults::drain_timeout", with = "duration::text")]
    pub drain_timeout: Duration,
}

/// Membership, leases and forwarding.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Name of the cluster: gossip from another cluster id is ignored.
    #[serde(default = "defaults::cluster_id")]
    pub id: String,
    /// Interval between gossip rounds. A silent node is declared dead after about `phi_threshold` intervals.
    #[serde(default = "defaults::gossip_interval", with = "duration::text")]
    pub gossip_interval: Duration,
    /// Suspicion level (phi accrual) at which a node is declared dead; about that many silent gossip intervals.
    #[serde(default = "defaults::phi_threshold")]
    pub phi_threshold: f64,
    /// Lifetime of a shard lease in Redis: a node that cannot renew stops serving before it ends, and a new owner
    /// takes the shard at the latest when it ends.
    #[serde(default = "defaults::lease_ttl", with = "duration::text")]
    pub lease_ttl: Duration,
    /// How often held leases are renewed; well under `lease_ttl`.
    #[serde(default = "defaults::lease_renew_every", with = "duration::text")]
    pub lease_renew_every: Duration,
    /// Longest time a request waits for a shard's owner (forward retries across a failover) before it fails
    /// with 503 `temporarily_unavailable`.
    #[serde(default = "defaults::forward_timeout", with = "duration::text")]
    pub forward_timeout: Duration,
    /// Mutual TLS for the internal RPC: all three files, or none.
    #[serde(default)]
    pub tls: Option<ClusterTlsConfig>,
}

/// Certificates of the internal RPC: every node presents `cert` and accepts only peers chained to `ca`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// PEM certificate chain of this node (its SAN must name the host of `node.rpc_advertise`).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM certificate(s) of the cluster's certificate authority.
    pub ca: PathBuf,
}

/// The Redis that holds the cluster's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` of the primary (without Sentinel).
    #[serde(default)]
    pub url: Option<String>,
    /// Sentinel addresses (`host:port`); the primary is resolved through them, and again after errors.
    #[serde(default, deserialize_with = "string_list")]
    pub sentinels: Vec<String>,
    /// The Sentinel master name.
    #[serde(default = "defaults::master_name")]
    pub master_name: String,
    /// Redis replicas that must confirm (`WAIT`) every epoch bump and single-use marker before it is
    /// acknowledged; when fewer confirm, the request fails closed with 503. 0 turns `WAIT` off.
    #[serde(default)]
    pub min_replicas_ack: u32,
    /// How long `WAIT` waits for the replicas.
    #[serde(default = "defaults::wait_timeout", with = "duration::text")]
    pub wait_timeout: Duration,
}

/// The admin listener: health and readiness (metrics and the admin API later).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; off unless set.
    #[serde(default)]
    pub listen: Option<String>,
    /// Serve the admin listener over HTTPS; with `client_ca`, a client certificate chained to it authenticates an
    /// admin API caller (mutual TLS) as an `idp:admin` token does.
    #[serde(default)]
    pub tls: Option<AdminTlsConfig>,
}

/// The admin listener's certificate, and the CA of the admin client certificates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    /// PEM certificate chain of the admin listener.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates of admin clients; a verified client certificate is an admin. Absent: Bearer tokens only.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl RedisConfig {
    /// Whether the node runs as a cluster member (Redis configured).
    pub fn is_configured(&self) -> bool {
        self.url.is_some() || !self.sentinels.is_empty()
    }
}

/// The resolved addresses of a cluster node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddresses {
    pub id: String,
    pub gossip: SocketAddr,
    pub gossip_advertise: SocketAddr,
    pub rpc: SocketAddr,
    pub rpc_advertise: String,
}

impl NodeConfig {
    /// The addresses of a cluster node, or the key that is missing or malformed.
    pub fn addresses(&self) -> Result<NodeAddresses, ConfigError> {
        let gossip = socket_address("node.gossip", self.gossip.as_deref())?;
        let rpc = socket_address("node.rpc", self.rpc.as_deref())?;
        let gossip_advertise = match &self.gossip_advertise {
            Some(text) => resolve("node.gossip_advertise", text)?,
            None => advertised(gossip, "node.gossip")?,
        };
        let rpc_advertise = match &self.rpc_advertise {
            Some(text) => {
                resolve("node.rpc_advertise", text)?;
                text.clone()
            }
            None => advertised(rpc, "node.rpc")?.to_string(),
        };
        let id = self.id.clone().unwrap_or_else(|| rpc_advertise.clone());
        Ok(NodeAddresses { id, gossip, gossip_advertise, rpc, rpc_advertise })
    }
}

fn socket_address(key: &str, text: Option<&str>) -> Result<SocketAddr, ConfigError> {
    let text =
        text.ok_or_else(|| ConfigError::key(key, "is required in cluster mode (redis.url or redis.sentinels)"))?;
    resolve(key, text)
}

/// `host:port`, resolved once (a DNS name in containers).
fn resolve(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|error| ConfigError::key(key, format!("`{text}` is not host:port ({error})")))?;
    addresses.next().ok_or_else(|| ConfigError::key(key, format!("`{text}` resolves to no address")))
}

/// `host:port` with a numeric port, not resolved.
fn host_port(key: &str, text: &str) -> Result<(), ConfigError> {
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    ensure(valid, || key.into(), || format!("`{text}` is not host:port"))
}

/// A bind address is what peers reach, unless it is the unspecified address.
fn advertised(bind: SocketAddr, key: &str) -> Result<SocketAddr, ConfigError> {
    if bind.ip().is_unspecified() {
        return Err(ConfigError::key(
            format!("{key}_advertise"),
            format!("is required when {key} binds every interface ({bind})"),
        ));
    }
    Ok(bind)
}

/// Checks the cluster sections; only called in cluster mode.
pub(super) fn validate_cluster(
    node: &NodeConfig,
    cluster: &ClusterConfig,
    redis: &RedisConfig,
) -> Result<(), ConfigError> {
    let addresses = node.addresses()?;
    ensure(!addresses.id.trim().is_empty(), || "node.id".into(), || "must not be empty".into())?;
    // Seeds and sentinels are names resolved when they are contacted (a peer container may not exist yet).
    for seed in &node.seeds {
        host_port("node.seeds", seed)?;
    }
    ensure(!cluster.id.is_empty(), || "cluster.id".into(), || "must not be empty".into())?;
    let interval_ok = (Duration::from_millis(10)..=Duration::from_secs(10)).contains(&cluster.gossip_interval);
    ensure(interval_ok, || "cluster.gossip_interval".into(), || "must be between 10ms and 10s".into())?;
    let phi_ok = (1.0..=100.0).contains(&cluster.phi_threshold);
    ensure(phi_ok, || "cluster.phi_threshold".into(), || "must be between 1 and 100".into())?;
    ensure(
        cluster.lease_ttl >= Duration::from_millis(500),
        || "cluster.lease_ttl".into(),
        || "must be at least 500ms".into(),
    )?;
    ensure(
        cluster.lease_renew_every * 2 <= cluster.lease_ttl && !cluster.lease_renew_every.is_zero(),
        || "cluster.lease_renew_every".into(),
        || "must be above zero and at most half of cluster.lease_ttl".into(),
    )?;
    // A router's retries end within the forward timeout; a finished pending authorization is kept for them a minute.
    ensure(
        !cluster.forward_timeout.is_zero() && cluster.forward_timeout <= Duration::from_secs(30),
        || "cluster.forward_timeout".into(),
        || "must be above zero and at most 30s".into(),
    )?;
    if let Some(tls) = &cluster.tls {
        for (key, path) in [("cluster.tls.cert", &tls.cert), ("cluster.tls.key", &tls.key), ("cluster.tls.ca", &tls.ca)]
        {
            ensure(path.is_file(), || key.into(), || format!("{} is not a readable file", path.display()))?;
        }
    }
    if let Some(url) = &redis.url {
        ensure(
            url.starts_with("redis://") || url.starts_with("unix://") || url.starts_with("redis+unix://"),
            || "redis.url".into(),
            || "must be a redis:// URL (TLS to Redis is not supported yet)".into(),
        )?;
        ensure(
            redis.sentinels.is_empty(),
            || "redis.sentinels".into(),
            || "set redis.url or redis.sentinels, not both".into(),
        )?;
    }
    for sentinel in &redis.sentinels {
        host_port("redis.sentinels", sentinel)?;
    }
    ensure(!redis.master_name.is_empty(), || "redis.master_name".into(), || "must not be empty".into())?;
    ensure(!redis.wait_timeout.is_zero(), || "redis.wait_timeout".into(), || "must be above zero".into())
}

/// A list of strings, or one comma-separated string (`IDP_NODE__SEEDS=a:7946,b:7946`).
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(list) => list,
        OneOrMany::One(text) => {
            text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(String::from).collect()
        }
    })
}

mod defaults {
    use std::time::Duration;

    pub fn drain_timeout() -> Duration {
        Duration::from_secs(20)
    }
    pub fn cluster_id() -> String {
        "idp".into()
    }
    pub fn gossip_interval() -> Duration {
        Duration::from_millis(100)
    }
    pub fn phi_threshold() -> f64 {
        8.0
    }
    pub fn lease_ttl() -> Duration {
        Duration::from_secs(5)
    }
    pub fn lease_renew_every() -> Duration {
        Duration::from_millis(250)
    }
    pub fn forward_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn master_name() -> String {
        "mymaster".into()
    }
    pub fn wait_timeout() -> Duration {
        Duration::from_millis(500)
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            gossip: None,
            gossip_advertise: None,
            seeds: Vec::new(),
            rpc: None,
            rpc_advertise: None,
            drain_timeout: defaults::drain_timeout(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            id: defaults::cluster_id(),
            gossip_interval: defaults::gossip_interval(),
            phi_threshold: defaults::phi_threshold(),
            lease_ttl: defaults::lease_ttl(),
            lease_renew_every: defaults::lease_renew_every(),
            forward_timeout: defaults::forward_timeout(),
            tls: None,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            sentinels: Vec::new(),
            master_name: defaults::master_name(),
            min_replicas_ack: 0,
            wait_timeout: defaults::wait_timeout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    const CLUSTER: &str = r#"
issuer = "https://idp.example.com"
[node]
gossip = "127.0.0.1:7946"
rpc = "127.0.0.1:7001"
[redis]
url = "redis://127.0.0.1:6379"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    fn error(text: &str, variables: &[(&str, &str)]) -> String {
        let loaded = Config::from_toml_str(text, env(variables));
        let config = match loaded {
            Ok(config) => config,
            Err(error) => return error.to_string(),
        };
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_cluster_node_needs_only_its_addresses_and_redis() {
        let config = Config::from_toml_str(CLUSTER, env(&[])).unwrap();
        config.validate().unwrap();
        assert!(config.redis.is_configured());
        let addresses = config.node.addresses().unwrap();
        assert_eq!(addresses.id, "127.0.0.1:7001");
        assert_eq!(addresses.rpc_advertise, "127.0.0.1:7001");
        assert_eq!(addresses.gossip_advertise, "127.0.0.1:7946".parse().unwrap());
        assert_eq!(config.cluster.gossip_interval, Duration::from_millis(100));
        assert_eq!(config.cluster.lease_ttl, Duration::from_secs(5));
        assert_eq!(config.redis.min_replicas_ack, 0);
        assert_eq!(config.admin.listen, None);
    }

    #[test]
    fn without_redis_the_cluster_sections_are_not_required() {
        let config = Config::from_toml_str(r#"issuer = "https://idp.example.com""#, env(&[])).unwrap();
        config.validate().unwrap();
        assert!(!config.redis.is_configured());
    }

    #[test]
    fn environment_variables_set_cluster_keys_and_lists() {
        let variables = [
            ("IDP_NODE__SEEDS", "127.0.0.1:7947, 127.0.0.1:7948"),
            ("IDP_NODE__ID", "idp-1"),
            ("IDP_REDIS__MIN_REPLICAS_ACK", "1"),
            ("IDP_CLUSTER__GOSSIP_INTERVAL", "50ms"),
        ];
        let config = Config::from_toml_str(CLUSTER, env(&variables)).unwrap();
        config.validate().unwrap();
        assert_eq!(config.node.seeds, ["127.0.0.1:7947", "127.0.0.1:7948"]);
        assert_eq!(config.node.addresses().unwrap().id, "idp-1");
        assert_eq!(config.redis.min_replicas_ack, 1);
        assert_eq!(config.cluster.gossip_interval, Duration::from_millis(50));
    }

    #[test]
    fn broken_cluster_keys_are_named() {
        let no_gossip = CLUSTER.replace("gossip = \"127.0.0.1:7946\"\n", "");
        assert!(error(&no_gossip, &[]).contains("node.gossip"), "{}", error(&no_gossip, &[]));
        let everywhere = CLUSTER.replace("rpc = \"127.0.0.1:7001\"", "rpc = \"0.0.0.0:7001\"");
        assert!(error(&everywhere, &[]).contains("node.rpc_advertise"));
        let renew = error(CLUSTER, &[("IDP_CLUSTER__LEASE_RENEW_EVERY", "3s")]);
        assert!(renew.contains("cluster.lease_renew_every"), "{renew}");
        let forward = error(CLUSTER, &[("IDP_CLUSTER__FORWARD_TIMEOUT", "31s")]);
        assert!(forward.contains("cluster.forward_timeout") && forward.contains("at most 30s"), "{forward}");
        let both = error(CLUSTER, &[("IDP_REDIS__SENTINELS", "127.0.0.1:26379")]);
        assert!(both.contains("redis.sentinels"), "{both}");
        let scheme = error(CLUSTER, &[("IDP_REDIS__URL", "http://127.0.0.1:6379")]);
        assert!(scheme.contains("redis.url"), "{scheme}");
        let admin = error(CLUSTER, &[("IDP_ADMIN__LISTEN", "localhost")]);
        assert!(admin.contains("admin.listen"), "{admin}");
        let tls = error(&format!("{CLUSTER}\n[cluster.tls]\ncert = \"/nonexistent/c\"\nkey = \"/nonexistent/k\"\nca = \"/nonexistent/a\"\n"), &[]);
        assert!(tls.contains("cluster.tls.cert"), "{tls}");
    }
}
