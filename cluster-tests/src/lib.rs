//! `idp-cluster-tests`: drives built `idp` processes from outside, as an operator would: the `idp-bench` load tool
//! today, fault-injection scenarios later.

pub mod bench;
