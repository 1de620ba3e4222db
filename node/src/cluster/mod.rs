//! Cluster mode: gossip membership and shard ownership.

pub mod membership;
pub mod ownership;
