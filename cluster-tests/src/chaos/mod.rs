//! The fault-injection suite's pieces: the [`history`] of every client operation, the concurrent [`clients`] that
//! make it with real flows, the Redis command stream as evidence ([`redis_log`]), the invariant [`checker`], and
//! the [`run`] helpers that gather the facts after a run (every node's JWKS, probes of acknowledged records).
//! `docs/chaos.md` describes the suite.

pub mod checker;
pub mod clients;
pub mod history;
pub mod redis_log;
pub mod run;
pub mod soak;
