//! The `idp` binary: `idp dev`, `idp serve --config FILE`, `idp hash-password`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use idp_actors::keyring::kek::Kek;
use idp_node::admin::serve_admin;
use idp_node::admin_api::AdminApi;
use idp_node::cluster::node::start_cluster_node;
use idp_node::config::Config;
use idp_node::server::{build_state, load_kek, serve, NodeDeps};
use idp_node::telemetry::health::{cluster_readiness, embedded_readiness, Drain};
use idp_node::telemetry::logging;
use std::io::BufRead;
use std::net::TcpListener;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "idp", version, about = "A highly available OpenID Connect identity provider")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node with an in-memory replica and demo seeds (no Redis needed).
    Dev {
        /// Address of the public listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Issuer URL (default: http://LISTEN).
        #[arg(long)]
        issuer: Option<String>,
        /// A configuration file used instead of the dev defaults; the demo clients and user are added unless it
        /// declares a client or user with the same id.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a node from a configuration file (TOML; every key can be overridden with IDP_SECTION__KEY).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read one password from standard input and print its argon2id PHC string.
    HashPassword,
    /// Run one synthetic login against a deployment and print each step's latency; exits 1 at a failed step.
    Probe(Box<idp_node::probe::ProbeArgs>),
    /// The admin API from the command line (clients, users, sessions, keys, cluster).
    Admin(Box<idp_node::admin_cli::AdminArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::HashPassword => hash_password(),
        Command::Serve { config } => {
            let config = Config::load(Some(&config), std::env::vars()).map_err(|error| anyhow::anyhow!("{error}"))?;
            if config.redis.is_configured() {
                run_cluster(config)
            } else {
                run(config, false)
            }
        }
        Command::Probe(args) => {
            rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let report = runtime.block_on(idp_node::probe::run(&args));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
            if report.failed_step().is_some() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Admin(args) => {
            rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(idp_node::admin_cli::run(&args, &mut std::io::stdout()))
        }
        Command::Dev { listen, issuer, config } => run(dev_config(&listen, issuer.as_deref(), config)?, true),
    }
}

/// The dev configuration: the demo seeds, merged into the given file's configuration when there is one.
fn dev_config(listen: &str, issuer: Option<&str>, file: Option<PathBuf>) -> anyhow::Result<Config> {
    let seeds = Config::dev(listen, issuer);
    let Some(path) = file else {
        seeds.validate().map_err(|error| anyhow::anyhow!("{error}"))?;
        return Ok(seeds);
    };
    let mut config = Config::load(Some(&path), std::env::vars()).map_err(|error| anyhow::anyhow!("{error}"))?;
    for client in seeds.clients {
        if !config.clients.iter().any(|declared| declared.client_id == client.client_id) {
            config.clients.push(client);
        }
    }
    for user in seeds.users {
        if !config.users.iter().any(|declared| declared.username == user.username) {
            config.users.push(user);
        }
    }
    config.validate().map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(config)
}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    println!("{}", idp_node::password::hash_password(password)?);
    Ok(())
}

fn run(config: Config, dev: bool) -> anyhow::Result<()> {
    let (listener, admin, kek, _telemetry) = prepare(&config)?;
    actix_web::rt::System::new().block_on(async move {
        let state = build_state(config, NodeDeps::embedded(kek)).await?;
        let node = serve(state, listener)?;
        let drain = Drain::default();
        let readiness = embedded_readiness(node.state.keys.clone(), drain.clone());
        let api = AdminApi::new(node.state.clone(), None);
        let admin = admin.map(|listener| serve_admin(listener, readiness, Some(api))).transpose()?.map(spawn_server);
        if dev {
            print_dev_banner(&node.state.issuer);
        } else {
            tracing::info!(address = %node.address, issuer = %node.state.issuer, "idp serving");
        }
        let handle = node.handle.clone();
        let mut server = actix_web::rt::spawn(node.server);
        tokio::select! {
            result = &mut server => result??,
            _ = shutdown_signal() => {
                drain.start();
                tracing::info!("stopping");
                handle.stop(true).await;
                server.await??;
            }
        }
        if let Some(admin) = admin {
            admin.stop(false).await;
        }
        Ok(())
    })
}

/// A cluster node: joins, serves, and on SIGTERM (or Ctrl-C) drains: leaves the ready set, hands its shards over,
/// finishes in-flight requests, then exits, all within `node.drain_timeout`.
fn run_cluster(config: Config) -> anyhow::Result<()> {
    let (listener, admin, kek, _telemetry) = prepare(&config)?;
    let drain_timeout = config.node.drain_timeout;
    actix_web::rt::System::new().block_on(async move {
        let (state, cluster) = start_cluster_node(config, kek).await?;
        let node = serve(state, listener)?;
        let drain = Drain::default();
        let readiness = cluster_readiness(cluster.clone(), drain.clone());
        let api = AdminApi::new(node.state.clone(), Some(cluster.clone()));
        let admin = admin.map(|listener| serve_admin(listener, readiness, Some(api))).transpose()?.map(spawn_server);
        tracing::info!(address = %node.address, issuer = %node.state.issuer, "idp serving");
        let handle = node.handle.clone();
        let mut server = actix_web::rt::spawn(node.server);
        tokio::select! {
            result = &mut server => result??,
            _ = shutdown_signal() => {
                let started = std::time::Instant::now();
                drain.start();
                tracing::info!("draining: handing shards over");
                let handed_over = cluster.hand_over(drain_timeout).await;
                tracing::info!(handed_over, elapsed_ms = started.elapsed().as_millis() as u64, "shards handed over; finishing requests");
                let remaining = drain_timeout.saturating_sub(started.elapsed()).max(std::time::Duration::from_millis(100));
                if tokio::time::timeout(remaining, handle.stop(true)).await.is_err() {
                    tracing::warn!("in-flight requests still running at the end of the drain");
                }
                cluster.shutdown().await;
                tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained");
            }
        }
        if let Some(admin) = admin {
            admin.stop(false).await;
        }
        Ok(())
    })
}

/// Runs a server in the background (a server runs only while polled); its handle stops it.
fn spawn_server(server: actix_web::dev::Server) -> actix_web::dev::ServerHandle {
    let handle = server.handle();
    actix_web::rt::spawn(server);
    handle
}

/// What every way of running a node does first: logging, the crypto provider, the listeners (so a taken port
/// fails before anything starts) and the key-encryption key.
fn prepare(config: &Config) -> anyhow::Result<(TcpListener, Option<TcpListener>, Kek, logging::Guard)> {
    let telemetry = logging::init(config)?;
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let listener = TcpListener::bind(&config.http.listen).with_context(|| format!("binding {}", config.http.listen))?;
    let admin = bind_admin(config)?;
    let kek = load_kek(config, std::env::var("IDP_KEK").ok())?;
    Ok((listener, admin, kek, telemetry))
}

fn bind_admin(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    config
        .admin
        .listen
        .as_ref()
        .map(|address| TcpListener::bind(address).with_context(|| format!("binding admin.listen {address}")))
        .transpose()
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn print_dev_banner(issuer: &str) {
    let redirect = "http%3A%2F%2F127.0.0.1%3A8081%2Fcallback";
    println!("idp dev: one node, in-memory state (nothing survives a restart)");
    println!("  issuer      {issuer}");
    println!("  discovery   {issuer}/.well-known/openid-configuration");
    println!("  clients     demo / demo-secret (confidential, first-party), demo-public (public, PKCE S256)");
    println!("  user        alice / alice-password");
    println!("  try a login: open {issuer}/authorize?client_id=demo&response_type=code&scope=openid%20profile%20email&redirect_uri={redirect}&state=try-me");
    println!("  try a token: curl -s -u demo:demo-secret -d grant_type=client_credentials {issuer}/token");
}
