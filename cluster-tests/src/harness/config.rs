//! The configuration file of one test node: the cluster's shared issuer, the node's own listeners, Redis, timings
//! short enough for tests, one confidential first-party client and a few users.
//!
//! All nodes share one issuer (the name in every token, node 1's public URL: `http://127.0.0.1:<http port>`, or
//! node 1's own address in network namespaces); a test reaches each node at its own `http.listen`, as a load
//! balancer in front of the issuer would.

use crate::browser::REDIRECT_URI;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

/// The test relying party: confidential, first party (no consent page), every grant the tests use.
pub const CLIENT_ID: &str = "cluster-rp";
pub const CLIENT_SECRET: &str = "cluster-rp-secret";
/// The admin client: client_credentials with the `idp:admin` scope, for the admin API (`/admin/...`).
pub const ADMIN_CLIENT_ID: &str = "cluster-admin";
pub const ADMIN_CLIENT_SECRET: &str = "cluster-admin-secret";
/// Every test user has this password.
pub const PASSWORD: &str = "cluster-password";
/// The Redis stream every node appends its audit events to.
pub const AUDIT_STREAM: &str = "idp:audit";
/// Users `user-0` … `user-{USERS-1}`: load workers each log in as their own.
pub const USERS: usize = 8;

/// Cluster timings, as the config's duration strings.
#[derive(Debug, Clone)]
pub struct Timings {
    pub gossip_interval: String,
    pub lease_ttl: String,
    pub lease_renew_every: String,
    pub forward_timeout: String,
    pub drain_timeout: String,
    /// `keys.publish_ahead`: short, so `idp admin rotate-keys` (refused until the `next` key has been published
    /// that long) works seconds after the cluster starts.
    pub key_publish_ahead: String,
}

impl Default for Timings {
    /// Fast failure detection (a dead node is declared within about a second) and leases a few renewals long.
    fn default() -> Self {
        Self {
            gossip_interval: "100ms".into(),
            lease_ttl: "3s".into(),
            lease_renew_every: "250ms".into(),
            forward_timeout: "5s".into(),
            drain_timeout: "10s".into(),
            key_publish_ahead: "2s".into(),
        }
    }
}

/// Ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub http: u16,
    /// UDP.
    pub gossip: u16,
    pub rpc: u16,
    pub admin: u16,
}

/// A node of a proxied cluster: it listens for gossip and RPC on its own loopback address (and sends from it),
/// and its peers reach it through the forwarders at `gossip` and `rpc` (its advertised addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxied {
    pub ip: IpAddr,
    pub gossip: SocketAddr,
    pub rpc: SocketAddr,
}

/// Everything a node's file says.
#[derive(Debug, Clone)]
pub struct NodeConfig<'a> {
    pub issuer: &'a str,
    pub node_id: &'a str,
    /// The address every listener binds (`127.0.0.1`; the node's own address in its network namespace), except
    /// gossip and RPC in a proxied cluster (`proxied`).
    pub listen_ip: IpAddr,
    pub ports: Ports,
    /// Gossip addresses (`host:port`) of the other nodes.
    pub seeds: &'a [String],
    pub redis_url: &'a str,
    pub min_replicas_ack: u32,
    pub shards: Option<u16>,
    pub timings: &'a Timings,
    pub log_level: &'a str,
    /// argon2id PHC string of [`PASSWORD`].
    pub password_hash: &'a str,
    /// Own loopback address and advertised proxy addresses, in a proxied cluster.
    pub proxied: Option<Proxied>,
    /// Sentinel addresses (`host:port`): when not empty, the node finds the primary through them (master name
    /// [`MASTER_NAME`]) instead of `redis_url`.
    pub sentinels: &'a [String],
    /// TOML appended to the file (more `[[clients]]` and `[[users]]`).
    pub extra: &'a str,
}

/// The Sentinel master name of a cluster with Sentinels.
pub const MASTER_NAME: &str = "idp";

/// A TOML basic string (JSON string escapes are valid TOML ones).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|item| quoted(item)).collect::<Vec<_>>().join(", "))
}

impl NodeConfig<'_> {
    /// The TOML text of the file.
    pub fn render(&self) -> String {
        let ports = self.ports;
        let timings = self.timings;
        let mut text = format!("issuer = {}\n", quoted(self.issuer));
        if let Some(shards) = self.shards {
            let _ = writeln!(text, "shards = {shards}");
        }
        let _ = write!(
            text,
            "\n[http]\nlisten = \"{listen}:{http}\"\n\
             \n[admin]\nlisten = \"{listen}:{admin}\"\n\
             \n[node]\nid = {id}\ngossip = \"{ip}:{gossip}\"\nseeds = {seeds}\nrpc = \"{ip}:{rpc}\"\n{advertise}\
             drain_timeout = {drain}\n\
             \n[cluster]\ngossip_interval = {gossip_interval}\nlease_ttl = {lease_ttl}\n\
             lease_renew_every = {renew}\nforward_timeout = {forward}\n\
             \n[redis]\n{redis}\nmin_replicas_ack = {acks}\n\
             \n[keys]\npublish_ahead = {publish_ahead}\n\
             \n[log]\nlevel = {level}\nformat = \"pretty\"\n\
             \n[login]\nmax_failures = 1000000\n\
             \n[audit]\nredis_stream = {audit_stream}\n",
            listen = self.listen_ip,
            http = ports.http,
            admin = ports.admin,
            id = quoted(self.node_id),
            ip = self.proxied.map_or(self.listen_ip, |proxied| proxied.ip),
            gossip = ports.gossip,
            advertise = self.proxied.map_or(String::new(), |proxied| format!(
                "gossip_advertise = \"{}\"\nrpc_advertise = \"{}\"\n",
                proxied.gossip, proxied.rpc
            )),
            seeds = list(self.seeds),
            rpc = ports.rpc,
            drain = quoted(&timings.drain_timeout),
            gossip_interval = quoted(&timings.gossip_interval),
            lease_ttl = quoted(&timings.lease_ttl),
            renew = quoted(&timings.lease_renew_every),
            forward = quoted(&timings.forward_timeout),
            redis = if self.sentinels.is_empty() {
                format!("url = {}", quoted(self.redis_url))
            } else {
                format!("sentinels = {}\nmaster_name = {}", list(self.sentinels), quoted(MASTER_NAME))
            },
            acks = self.min_replicas_ack,
            publish_ahead = quoted(&timings.key_publish_ahead),
            level = quoted(self.log_level),
            audit_stream = quoted(AUDIT_STREAM),
        );
        let _ = write!(
            text,
            "\n[[clients]]\nclient_id = {id}\nclient_secret = {secret}\nfirst_party = true\n\
             grant_types = [\"authorization_code\", \"refresh_token\", \"client_credentials\"]\n\
             redirect_uris = [{redirect}]\n",
            id = quoted(CLIENT_ID),
            secret = quoted(CLIENT_SECRET),
            redirect = quoted(REDIRECT_URI),
        );
        let _ = write!(
            text,
            "\n[[clients]]\nclient_id = {id}\nclient_secret = {secret}\ngrant_types = [\"client_credentials\"]\n\
             response_types = []\nscopes = [\"idp:admin\"]\n",
            id = quoted(ADMIN_CLIENT_ID),
            secret = quoted(ADMIN_CLIENT_SECRET),
        );
        for username in usernames() {
            let _ = write!(
                text,
                "\n[[users]]\nusername = {name}\npassword_hash = {hash}\n",
                name = quoted(&username),
                hash = quoted(self.password_hash)
            );
        }
        text.push_str(self.extra);
        text
    }
}

/// `alice`, then `user-0` … `user-{USERS-1}`.
pub fn usernames() -> Vec<String> {
    std::iter::once("alice".to_string()).chain((0..USERS).map(|user| format!("user-{user}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(timings: &Timings) -> String {
        let seeds = ["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
        NodeConfig {
            issuer: "http://127.0.0.1:9000",
            node_id: "node-2",
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            ports: Ports { http: 9001, gossip: 7003, rpc: 9101, admin: 9201 },
            seeds: &seeds,
            redis_url: "redis://127.0.0.1:6390",
            min_replicas_ack: 0,
            shards: Some(64),
            timings,
            log_level: "info",
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            proxied: None,
            sentinels: &[],
            extra: "",
        }
        .render()
    }

    #[test]
    fn a_node_file_names_its_listeners_peers_and_redis() {
        let text = sample(&Timings::default());
        for expected in [
            "issuer = \"http://127.0.0.1:9000\"\nshards = 64\n",
            "[http]\nlisten = \"127.0.0.1:9001\"",
            "[admin]\nlisten = \"127.0.0.1:9201\"",
            "id = \"node-2\"\ngossip = \"127.0.0.1:7003\"\nseeds = [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\nrpc = \"127.0.0.1:9101\"",
            "gossip_interval = \"100ms\"",
            "drain_timeout = \"10s\"",
            "[keys]\npublish_ahead = \"2s\"",
            "[redis]\nurl = \"redis://127.0.0.1:6390\"\nmin_replicas_ack = 0",
            "client_id = \"cluster-rp\"",
            "redirect_uris = [\"http://127.0.0.1:8081/callback\"]",
            "username = \"alice\"",
            "username = \"user-7\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(text.matches("[[users]]").count(), USERS + 1);
        assert!(text.contains("password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\""));
    }

    #[test]
    fn a_node_file_is_valid_toml() {
        let parsed: toml::Table = toml::from_str(&sample(&Timings::default())).unwrap();
        assert_eq!(parsed["node"]["seeds"].as_array().unwrap().len(), 2);
        let clients = parsed["clients"].as_array().unwrap();
        assert_eq!(clients.len(), 2, "the relying party and the admin client");
        assert_eq!(clients[0]["client_id"].as_str(), Some(CLIENT_ID));
        assert_eq!(clients[1]["client_id"].as_str(), Some(ADMIN_CLIENT_ID));
        assert_eq!(clients[1]["scopes"].as_array().unwrap()[0].as_str(), Some("idp:admin"));
        assert_eq!(parsed["cluster"]["lease_renew_every"].as_str(), Some("250ms"));
    }

    #[test]
    fn a_proxied_node_listens_on_its_own_address_and_advertises_its_proxies() {
        let seeds = ["127.0.0.1:7001".to_string()];
        let sentinels = ["127.0.0.1:26379".to_string(), "127.0.0.1:26380".to_string()];
        let proxied = Proxied {
            ip: "127.0.0.3".parse().unwrap(),
            gossip: "127.0.0.1:7101".parse().unwrap(),
            rpc: "127.0.0.1:7102".parse().unwrap(),
        };
        let text = NodeConfig {
            issuer: "http://127.0.0.1:9000",
            node_id: "node-2",
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            ports: Ports { http: 9001, gossip: 7003, rpc: 9101, admin: 9201 },
            seeds: &seeds,
            redis_url: "redis://127.0.0.1:6391",
            min_replicas_ack: 0,
            shards: None,
            timings: &Timings::default(),
            log_level: "info",
            password_hash: "x",
            proxied: Some(proxied),
            sentinels: &sentinels,
            extra: "\n[[users]]\nusername = \"extra\"\npassword_hash = \"y\"\n",
        }
        .render();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let node = &parsed["node"];
        assert_eq!(node["gossip"].as_str(), Some("127.0.0.3:7003"));
        assert_eq!(node["rpc"].as_str(), Some("127.0.0.3:9101"));
        assert_eq!(node["gossip_advertise"].as_str(), Some("127.0.0.1:7101"));
        assert_eq!(node["rpc_advertise"].as_str(), Some("127.0.0.1:7102"));
        assert_eq!(parsed["http"]["listen"].as_str(), Some("127.0.0.1:9001"), "clients reach the node directly");
        let redis = &parsed["redis"];
        assert_eq!(redis.get("url"), None, "Sentinels instead of a URL");
        assert_eq!(redis["sentinels"].as_array().unwrap().len(), 2);
        assert_eq!(redis["master_name"].as_str(), Some(MASTER_NAME));
        assert_eq!(parsed["users"].as_array().unwrap().last().unwrap()["username"].as_str(), Some("extra"));
    }

    #[test]
    fn a_node_in_a_network_namespace_listens_and_advertises_its_own_address() {
        let seeds = ["10.213.7.130:7001".to_string()];
        let text = NodeConfig {
            issuer: "http://10.213.7.129:9000",
            node_id: "node-1",
            listen_ip: "10.213.7.129".parse().unwrap(),
            ports: Ports { http: 9000, gossip: 7000, rpc: 9100, admin: 9200 },
            seeds: &seeds,
            redis_url: "redis://10.213.7.2:6390",
            min_replicas_ack: 0,
            shards: None,
            timings: &Timings::default(),
            log_level: "info",
            password_hash: "x",
            proxied: None,
            sentinels: &[],
            extra: "",
        }
        .render();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["http"]["listen"].as_str(), Some("10.213.7.129:9000"));
        assert_eq!(parsed["admin"]["listen"].as_str(), Some("10.213.7.129:9200"));
        assert_eq!(parsed["node"]["gossip"].as_str(), Some("10.213.7.129:7000"));
        assert_eq!(parsed["node"]["rpc"].as_str(), Some("10.213.7.129:9100"));
        assert_eq!(parsed["node"].get("rpc_advertise"), None, "peers reach the listener itself");
        assert_eq!(parsed["redis"]["url"].as_str(), Some("redis://10.213.7.2:6390"));
    }

    #[test]
    fn strings_are_escaped_as_toml() {
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(list(&[]), "[]");
    }
}
