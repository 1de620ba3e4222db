//! Protocol tests: a real node on a loopback port, driven by the `openidconnect` relying party and by a browser
//! that keeps cookies and submits the login and consent forms.

mod harness;
mod flows;
