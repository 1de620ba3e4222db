//! The admin listener (`admin.listen`, off unless set): `/healthz` (the process answers) and `/readyz` (the node
//! should receive traffic: a ready cluster member hosting every shard it owns, Redis reachable, key ring loaded,
//! not draining). Load balancers and orchestrators probe it; the public listener keeps its own `/healthz`.
//! `/metrics` serves the Prometheus text of every metric (`docs/operations.md`).

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;

/// Whether the node is ready, asked on every `/readyz`.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Starts the admin listener on a bound listener. Call inside an actix System.
pub fn serve_admin(listener: TcpListener, ready: Readiness) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        let ready = ready.clone();
        App::new()
            .route("/metrics", web::get().to(metrics_route))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
            .route(
                "/readyz",
                web::get().to(move || {
                    let ready = ready();
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
    })
    .workers(1)
    // The binary handles SIGTERM: during a drain `/readyz` must keep answering (503) until the node exits.
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}

async fn metrics_route() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::metrics::render())
}
