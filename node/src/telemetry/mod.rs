//! Observability: metrics (names and recording helpers), request ids and the per-request span, log set-up.

pub mod health;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod replica;
pub mod request_id;
