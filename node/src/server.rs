//! Building a node: state, actors and the HTTP server. The server takes its listener (tests bind port 0) and can
//! be stopped through its handle.

use crate::audit::Audit;
use crate::cluster::router::ShardRouter;
use crate::config::Config;
use crate::directory::store::DirectoryStore;
use crate::directory::Directory;
use crate::federation;
use crate::federation::Federation;
use crate::oauth::browser::BrowserBinding;
use crate::oauth::{authorize, discovery, login, logout, token, token_info};
use crate::pages::Pages;
use crate::password::PasswordVerifier;
use crate::state::AppState;
use actix::Addr;
use actix_web::dev::{Server, ServerHandle, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use arc_swap::ArcSwap;
use idp_actors::clock::{SharedClock, SystemClock};
use idp_actors::jwt::Algorithm;
use idp_actors::keyring::kek::Kek;
use idp_actors::keyring::model::RotationPolicy;
use idp_actors::keyring::{start_key_ring, KeyRingActor, KeyRingConfig, KeyRingHandle};
use idp_actors::replica::{MemoryReplica, SharedReplica};
use idp_actors::shards::LocalShards;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Everything a node runs on besides its configuration.
pub struct NodeDeps {
    pub replica: SharedReplica,
    pub clock: SharedClock,
    pub kek: Kek,
}

impl NodeDeps {
    /// The embedded single node: an in-memory replica and the system clock.
    pub fn embedded(kek: Kek) -> Self {
        let clock: SharedClock = Arc::new(SystemClock::default());
        Self { replica: Arc::new(MemoryReplica::new(clock.clone())), clock, kek }
    }
}

/// A running node.
pub struct RunningNode {
    pub address: SocketAddr,
    pub state: web::Data<AppState>,
    pub handle: ServerHandle,
    pub server: Server,
}

/// Number of cores, the default of worker and arbiter counts.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(2)
}

/// The key ring's settings from the configuration.
pub fn key_ring_config(config: &Config) -> KeyRingConfig {
    KeyRingConfig {
        algorithms: config.keys.algorithms.iter().filter_map(|alg| Algorithm::parse(alg)).collect(),
        policy: RotationPolicy {
            rotate_every_ms: config.keys.rotate_every.as_millis() as u64,
            publish_ahead_ms: config.keys.publish_ahead.as_millis() as u64,
            retain_after_ms: config.keys.retain_after.as_millis() as u64,
        },
        check_every: Duration::from_secs(60),
    }
}

/// Builds the shared state of the embedded single node: every shard hosted here, key ring loaded (or created)
/// before anything is served. Call inside an actix System.
pub async fn build_state(config: Config, deps: NodeDeps) -> anyhow::Result<web::Data<AppState>> {
    let (key_ring, keys) =
        start_key_ring(deps.replica.clone(), deps.clock.clone(), deps.kek.clone(), key_ring_config(&config))
            .await
            .context("loading the signing key ring")?;
    // The directory lives in the (in-memory) replica like a cluster's, so accounts that federation provisions
    // are stored the same way.
    let store =
        Arc::new(DirectoryStore::new(deps.replica.clone(), deps.kek.derive("client-secrets"), config.issuer.clone()));
    let directory = store.seed(&config).await.context("building the directory")?;
    let shards = LocalShards::start(config.shards, cores(), deps.replica.clone(), deps.clock.clone());
    let router = ShardRouter::local(Arc::new(shards));
    let directory = Arc::new(ArcSwap::from_pointee(directory));
    let audit = Audit::start(&config, &deps.kek, "embedded", None).context("starting the audit writer")?;
    crate::telemetry::keys::watch_key_events(keys.clone(), deps.clock.clone(), audit.clone(), || true);
    assemble_state(config, deps.kek, deps.clock, router, (keys, Some(key_ring)), (directory, store), audit)
}

/// The state shared by every HTTP worker, from the parts the embedded node or a cluster node built.
pub fn assemble_state(
    config: Config,
    kek: Kek,
    clock: SharedClock,
    shards: ShardRouter,
    (keys, key_ring): (KeyRingHandle, Option<Addr<KeyRingActor>>),
    (directory, directory_store): (Arc<ArcSwap<Directory>>, Arc<DirectoryStore>),
    audit: Audit,
) -> anyhow::Result<web::Data<AppState>> {
    crate::telemetry::metrics::install();
    let federation = Federation::new(&config.upstreams, directory_store.clone(), directory.clone())
        .context("loading the upstreams")?;
    let issuer = config.issuer.trim_end_matches('/').to_string();
    let pages = Pages::new(&config.branding).context("loading page templates")?;
    let mut discovery = discovery::discovery_document(&issuer, &config.keys.algorithms);
    crate::registration::advertise(&mut discovery, &issuer, config.registration.enabled);
    let discovery_json = serde_json::to_vec(&discovery)?;
    let secure = issuer.starts_with("https://");
    Ok(web::Data::new(AppState {
        passwords: PasswordVerifier::new(config.login.hash_concurrency).context("starting the password verifier")?,
        browser: BrowserBinding::new(kek.derive("browser-binding"), secure),
        record_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &kek.derive("record-ids")),
        issuer,
        directory,
        directory_store,
        shards: Arc::new(shards),
        keys,
        key_ring,
        pages: Arc::new(pages),
        clock,
        discovery_json: discovery_json.into(),
        audit,
        federation: Arc::new(federation),
        config: Arc::new(config),
    }))
}

/// Registers every route of the public listener.
pub fn routes(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        let body_limit = state.config.http.body_limit;
        let pages = state.pages.clone();
        crate::registration::configure(config, state.config.registration.enabled);
        config
            .app_data(state)
            .app_data(web::PayloadConfig::new(body_limit))
            .service(
                resource("/.well-known/openid-configuration")
                    .route(web::get().to(discovery::discovery_route))
                    .route(web::head().to(discovery::discovery_route)),
            )
            .service(
                resource("/jwks")
                    .route(web::get().to(discovery::jwks_route))
                    .route(web::head().to(discovery::jwks_route)),
            )
            .service(
                resource("/authorize")
                    .route(web::get().to(authorize::authorize_route))
                    .route(web::post().to(authorize::authorize_route)),
            )
            .service(resource("/authorize/resume").route(web::get().to(login::resume_route)))
            .service(resource("/login").route(web::post().to(login::login_post_route)))
            .service(resource("/consent").route(web::post().to(login::consent_post_route)))
            .service(resource("/token").route(web::post().to(token::token_route)))
            .service(
                resource("/userinfo")
                    .route(web::get().to(token_info::userinfo_route))
                    .route(web::post().to(token_info::userinfo_route)),
            )
            .service(resource("/introspect").route(web::post().to(token_info::introspect_route)))
            .service(resource("/revoke").route(web::post().to(token_info::revoke_route)))
            .service(
                resource("/logout")
                    .route(web::get().to(logout::logout_route))
                    .route(web::post().to(logout::logout_route)),
            )
            .service(resource("/federation/{id}/start").route(web::get().to(federation::routes::start_route)))
            .service(
                resource("/federation/{id}/callback")
                    .route(web::get().to(federation::routes::callback_route))
                    .route(web::post().to(federation::routes::callback_route)),
            )
            .service(resource("/federation/{id}/cancel").route(web::get().to(federation::routes::cancel_route)))
            .service(resource("/healthz").route(web::get().to(|| async { HttpResponse::Ok().body("ok") })));
        pages.configure_static(config);
    }
}

/// A resource that answers 405 to methods it has no route for.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        HttpResponse::MethodNotAllowed()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"error": "invalid_request", "error_description": "method not allowed"}))
    }))
}

/// A body over `http.body_limit`: the endpoint's own kind of error (OAuth JSON, or an HTML page for the browser
/// endpoints) instead of the framework's plain text, still with status 413.
fn body_too_large<B>(response: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (request, _) = response.into_parts();
    let browser = matches!(request.path(), "/authorize" | "/login" | "/consent" | "/logout");
    let replacement = match request.app_data::<web::Data<AppState>>() {
        Some(state) if browser => {
            let message = "The request is too large.";
            let mut page =
                crate::oauth::respond::error_page(state, StatusCode::BAD_REQUEST, "Invalid request", message);
            *page.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            page
        }
        _ => {
            let error =
                crate::oauth::errors::OAuthError::new(idp_proto::ErrorCode::InvalidRequest, "request body too large");
            let mut response = error.response();
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            response
        }
    };
    let response = ServiceResponse::new(request, replacement).map_into_boxed_body().map_into_right_body();
    Ok(ErrorHandlerResponse::Response(response))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"error": "not_found"}))
}

/// Starts serving on a bound listener (TLS when configured). Call inside an actix System.
pub fn serve(state: web::Data<AppState>, listener: TcpListener) -> anyhow::Result<RunningNode> {
    let address = listener.local_addr()?;
    let workers = match state.config.http.workers {
        0 => cores(),
        workers => workers,
    };
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(crate::telemetry::request_id::middleware))
            .wrap(ErrorHandlers::new().handler(StatusCode::PAYLOAD_TOO_LARGE, body_too_large))
            .configure(routes(app_state.clone()))
            .default_service(web::to(not_found))
    })
    .workers(workers)
    // The binary handles SIGTERM itself: a cluster node hands its shards over before it stops serving.
    .disable_signals()
    .shutdown_timeout(5);
    let server = match &state.config.tls {
        Some(tls) => server.listen_rustls_0_23(listener, crate::tls::load_server_config(tls)?)?,
        None => server.listen(listener)?,
    }
    .run();
    Ok(RunningNode { address, handle: server.handle(), server, state })
}

/// The key-encryption key: `IDP_KEK`, else `keys.kek_file`, else a random one (keys then die with the process).
pub fn load_kek(config: &Config, env_kek: Option<String>) -> anyhow::Result<Kek> {
    if let Some(text) = env_kek {
        return Kek::from_base64(&text).context("IDP_KEK");
    }
    if let Some(path) = &config.keys.kek_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading keys.kek_file {}", path.display()))?;
        return Kek::from_base64(&text).with_context(|| format!("keys.kek_file {}", path.display()));
    }
    tracing::warn!("no key-encryption key configured (IDP_KEK or keys.kek_file): using a random one; keys and sessions do not survive a restart");
    Ok(Kek::random())
}
