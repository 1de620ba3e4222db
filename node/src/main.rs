//! The `idp` binary: `idp dev`, `idp serve --config FILE`, `idp hash-password`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use idp_node::config::Config;
use idp_node::server::{build_state, load_kek, serve, NodeDeps};
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::HashPassword => hash_password(),
        Command::Serve { config } => {
            let config = Config::load(Some(&config), std::env::vars()).map_err(|error| anyhow::anyhow!("{error}"))?;
            run(config, false)
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

fn init_logging(config: &Config) {
    let filter = std::env::var("IDP_LOG").unwrap_or_else(|_| config.log.level.clone());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(config: Config, dev: bool) -> anyhow::Result<()> {
    init_logging(&config);
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let listener = TcpListener::bind(&config.http.listen).with_context(|| format!("binding {}", config.http.listen))?;
    let kek = load_kek(&config, std::env::var("IDP_KEK").ok())?;
    actix_web::rt::System::new().block_on(async move {
        let state = build_state(config, NodeDeps::embedded(kek)).await?;
        let node = serve(state, listener)?;
        if dev {
            print_dev_banner(&node.state.issuer);
        } else {
            tracing::info!(address = %node.address, issuer = %node.state.issuer, "idp serving");
        }
        node.server.await?;
        Ok(())
    })
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
