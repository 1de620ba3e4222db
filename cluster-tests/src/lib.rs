//! `idp-cluster-tests`: drives built `idp` processes from outside, as an operator would: the `idp-bench` load tool,
//! the step-by-step browser and relying party both use (`browser`), and the multi-process harness of the cluster
//! tests (`harness`: redis-server, nodes, signals, leases).

pub mod bench;
pub mod browser;
pub mod chaos;
pub mod harness;
