//! The admin listener (`admin.listen`, off unless set): `/healthz` (the process answers) and `/readyz` (the node
//! should receive traffic: a ready cluster member hosting every shard it owns, Redis reachable, key ring loaded,
//! not draining). Load balancers and orchestrators probe it; the public listener keeps its own `/healthz`.
//! With an [`AdminApi`], the admin API's routes too (`/admin/...`), over HTTPS with `admin.tls`.
//! `/metrics` serves the Prometheus text of every metric (`docs/operations.md`).

use crate::admin_api::AdminApi;
use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;

/// Whether the node is ready, asked on every `/readyz`.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Starts the admin listener on a bound listener. Call inside an actix System.
pub fn serve_admin(listener: TcpListener, ready: Readiness, api: Option<AdminApi>) -> anyhow::Result<Server> {
    let tls = api.as_ref().and_then(|api| api.state.config.admin.tls.clone());
    // `idp_ready` follows readiness every second, probed or not; the timer ends with the listener.
    let alive = Arc::new(());
    actix_web::rt::spawn(track_readiness(ready.clone(), Arc::downgrade(&alive)));
    let server = HttpServer::new(move || {
        let _alive = &alive;
        let ready = ready.clone();
        let api = api.clone();
        App::new()
            .wrap(actix_web::middleware::from_fn(crate::telemetry::request_id::admin_middleware))
            .route("/metrics", web::get().to(metrics_route))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
            .route(
                "/readyz",
                web::get().to(move || {
                    let ready = ready();
                    // A probe also refreshes the gauge at once (the timer may be up to a second behind).
                    crate::telemetry::metrics::ready(ready);
                    async move {
                        if ready {
                            HttpResponse::Ok().body("ready")
                        } else {
                            HttpResponse::ServiceUnavailable().body("not ready")
                        }
                    }
                }),
            )
            .configure(move |config| {
                if let Some(api) = &api {
                    api.configure(config);
                }
            })
    })
    .on_connect(crate::admin_api::tls::record_peer_certificate)
    .workers(1)
    // The binary handles SIGTERM: during a drain `/readyz` must keep answering (503) until the node exits.
    .disable_signals()
    .shutdown_timeout(1);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, crate::admin_api::tls::admin_server_config(&tls)?)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// How often `idp_ready` is recomputed.
const READY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets `idp_ready` from `ready` every [`READY_EVERY`] until the listener that owns `alive` is gone.
async fn track_readiness(ready: Readiness, alive: std::sync::Weak<()>) {
    while alive.strong_count() > 0 {
        crate::telemetry::metrics::ready(ready());
        actix_web::rt::time::sleep(READY_EVERY).await;
    }
}

async fn metrics_route() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::metrics::render())
}
