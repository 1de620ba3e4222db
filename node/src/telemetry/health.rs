//! What `/readyz` asks. A cluster node: a ready member hosting every shard it owns, Redis reachable, key ring
//! loaded, not draining. The embedded node: key ring loaded, not draining. The drain flag is set first thing on
//! SIGTERM, so load balancers stop sending before the node hands anything over.

use crate::admin::Readiness;
use crate::cluster::node::ClusterNode;
use idp_actors::keyring::KeyRingHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set once the node starts draining; readiness is false from then on.
#[derive(Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn embedded_readiness(keys: KeyRingHandle, drain: Drain) -> Readiness {
    Arc::new(move || !drain.is_draining() && !keys.load().keys().is_empty())
}

pub fn cluster_readiness(cluster: Arc<ClusterNode>, drain: Drain) -> Readiness {
    Arc::new(move || !drain.is_draining() && cluster.is_ready())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_is_one_way() {
        let drain = Drain::default();
        assert!(!drain.is_draining());
        drain.clone().start();
        assert!(drain.is_draining());
    }
}
