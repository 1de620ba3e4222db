//! `idp-node`: the `idp` server. Configuration, the OpenID Connect and OAuth endpoints, the login and consent
//! pages, the cluster (membership, shard ownership, forwarding), wired to the actors of `idp-actors`.

pub mod admin;
pub mod admin_api;
pub mod admin_cli;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod federation;
pub mod oauth;
pub mod pages;
pub mod password;
pub mod probe;
pub mod registration;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod user_sessions;
