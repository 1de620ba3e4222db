//! Protocol tests: a real node on a loopback port, driven by the `openidconnect` relying party and by a browser
//! that keeps cookies and submits the login and consent forms.

mod admin_api;
mod authorize_errors;
mod bad_input;
mod client;
mod client_credentials;
mod codes;
mod discovery;
mod federation;
mod flows;
mod fuzz;
mod harness;
mod login;
mod logout;
mod probe;
mod refresh;
mod registration;
mod response_types;
mod restart;
mod sessions;
mod telemetry;
mod token_info;
