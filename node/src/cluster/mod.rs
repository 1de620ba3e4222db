//! What makes several nodes one cluster.

pub mod rpc;
