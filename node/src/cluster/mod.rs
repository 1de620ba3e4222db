//! The cluster: gossip membership, shard ownership and leases, forwarding between nodes, and the key ring and
//! directory shared by every node. See docs/architecture.md for the request path and the failover timeline.

pub mod admin;
pub mod forward;
pub mod isolation;
pub mod keys;
pub mod manager;
pub mod membership;
pub mod node;
pub mod ownership;
pub mod plan;
pub mod router;
pub mod rpc;
