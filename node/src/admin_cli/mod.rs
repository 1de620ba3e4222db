//! `idp admin ...`: the admin API from the command line, with `--output table` (default) or `--output json`.
//!
//! Credentials, in order: `--token` (an access token with `idp:admin`), `--client-id`/`--client-secret` (a
//! `client_credentials` token is fetched from the issuer's token endpoint, found by discovery at `--issuer`), or a
//! client certificate (`--cert`/`--key`, for an admin listener with `admin.tls.client_ca`). `--ca` names the CA of
//! an HTTPS admin listener. Every flag has an `IDP_ADMIN_*` environment variable, so secrets stay out of `ps`.

pub mod table;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Base URL of the admin listener (`admin.listen`), e.g. http://127.0.0.1:9090.
    #[arg(long, env = "IDP_ADMIN_URL", global = true)]
    pub url: Option<String>,
    /// An access token with the `idp:admin` scope.
    #[arg(long, env = "IDP_ADMIN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// An admin client's id: a token is fetched with client_credentials (needs --client-secret and --issuer).
    #[arg(long, env = "IDP_ADMIN_CLIENT_ID", global = true)]
    pub client_id: Option<String>,
    #[arg(long, env = "IDP_ADMIN_CLIENT_SECRET", global = true, hide_env_values = true)]
    pub client_secret: Option<String>,
    /// The issuer whose token endpoint issues the admin token.
    #[arg(long, env = "IDP_ADMIN_ISSUER", global = true)]
    pub issuer: Option<String>,
    /// PEM client certificate for mutual TLS (with --key).
    #[arg(long, env = "IDP_ADMIN_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "IDP_ADMIN_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s) the admin listener's certificate chains to (else the system's roots).
    #[arg(long, env = "IDP_ADMIN_CA", global = true)]
    pub ca: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// OAuth clients.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// A user's browser sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Upstream providers (federation).
    #[command(subcommand)]
    Upstreams(UpstreamsCommand),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Cluster membership and shards.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Rotate the signing keys now (`keys rotate`). Without --url, `--config FILE` reaches the key ring through
    /// the cluster's Redis directly, as before the admin API.
    RotateKeys {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Longest wait for the key ring's owner (the direct Redis path).
        #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
        timeout: Duration,
    },
}

/// A JSON body: inline, or `@FILE` (`@-` for standard input).
#[derive(Args, Debug, Clone)]
pub struct Body {
    /// The JSON body, or @FILE, or @- for standard input.
    #[arg(long)]
    pub json: String,
}

/// The client a command names is `id`: `client_id` is the global `--client-id` (the admin client), and clap would
/// take one for the other.
#[derive(Subcommand, Debug, Clone)]
pub enum ClientsCommand {
    List,
    Get {
        #[arg(value_name = "CLIENT_ID")]
        id: String,
    },
    /// Create a client from JSON (the fields of a `[[clients]]` entry, without client_secret); prints the
    /// generated secret once.
    Create(Body),
    /// Replace a client's metadata (its secret is kept).
    Update {
        #[arg(value_name = "CLIENT_ID")]
        id: String,
        #[command(flatten)]
        body: Body,
    },
    Delete {
        #[arg(value_name = "CLIENT_ID")]
        id: String,
    },
    /// Generate a new secret (printed once); the old one stops working.
    RotateSecret {
        #[arg(value_name = "CLIENT_ID")]
        id: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum UsersCommand {
    List,
    Get {
        user_id: String,
    },
    /// Create a user; the password is read from standard input (one line) unless the JSON has one.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        email_verified: bool,
        #[arg(long)]
        name: Option<String>,
    },
    /// Replace a user's profile from JSON (the password is kept).
    Update {
        user_id: String,
        #[command(flatten)]
        body: Body,
    },
    Delete {
        user_id: String,
    },
    Disable {
        user_id: String,
    },
    Enable {
        user_id: String,
    },
    /// Set a new password, read from standard input (one line).
    ResetPassword {
        user_id: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum SessionsCommand {
    /// The live sessions of a user.
    List { user_id: String },
    /// End every session of a user and revoke the grants issued in them.
    Revoke { user_id: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum UpstreamsCommand {
    List,
    Get {
        #[arg(value_name = "UPSTREAM_ID")]
        id: String,
    },
    /// Create an upstream from JSON (the fields of an `[[upstreams]]` entry, `id` included; `client_secret` is
    /// write-only).
    Create(Body),
    /// Replace an upstream's configuration (without `client_secret` the stored one is kept).
    Update {
        #[arg(value_name = "UPSTREAM_ID")]
        id: String,
        #[command(flatten)]
        body: Body,
    },
    Delete {
        #[arg(value_name = "UPSTREAM_ID")]
        id: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeysCommand {
    List,
    Rotate,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    Members,
    Shards,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text).map_err(|error| error.to_string())
}

/// One admin API call: method, path, body.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: reqwest::Method,
    pub path: String,
    pub body: Option<Value>,
}

impl Call {
    fn new(method: reqwest::Method, path: impl Into<String>, body: Option<Value>) -> Self {
        Self { method, path: path.into(), body }
    }
}

/// The call a command makes (`stdin` gives passwords and `@-` bodies).
pub fn call_of(command: &AdminCommand, stdin: &mut dyn FnMut() -> anyhow::Result<String>) -> anyhow::Result<Call> {
    use reqwest::Method;
    let call = match command {
        AdminCommand::Clients(command) => match command {
            ClientsCommand::List => Call::new(Method::GET, "/admin/clients", None),
            ClientsCommand::Get { id: client_id } => {
                Call::new(Method::GET, format!("/admin/clients/{}", seg(client_id)), None)
            }
            ClientsCommand::Create(body) => Call::new(Method::POST, "/admin/clients", Some(read_body(body, stdin)?)),
            ClientsCommand::Update { id: client_id, body } => {
                Call::new(Method::PUT, format!("/admin/clients/{}", seg(client_id)), Some(read_body(body, stdin)?))
            }
            ClientsCommand::Delete { id: client_id } => {
                Call::new(Method::DELETE, format!("/admin/clients/{}", seg(client_id)), None)
            }
            ClientsCommand::RotateSecret { id: client_id } => {
                Call::new(Method::POST, format!("/admin/clients/{}/secret", seg(client_id)), None)
            }
        },
        AdminCommand::Users(command) => match command {
            UsersCommand::List => Call::new(Method::GET, "/admin/users", None),
            UsersCommand::Get { user_id } => Call::new(Method::GET, format!("/admin/users/{}", seg(user_id)), None),
            UsersCommand::Create { username, id, email, email_verified, name } => {
                let password = stdin().context("reading the password from standard input")?;
                let body = serde_json::json!({
                    "username": username, "id": id, "email": email, "email_verified": email_verified, "name": name,
                    "password": password,
                });
                Call::new(Method::POST, "/admin/users", Some(body))
            }
            UsersCommand::Update { user_id, body } => {
                Call::new(Method::PUT, format!("/admin/users/{}", seg(user_id)), Some(read_body(body, stdin)?))
            }
            UsersCommand::Delete { user_id } => {
                Call::new(Method::DELETE, format!("/admin/users/{}", seg(user_id)), None)
            }
            UsersCommand::Disable { user_id } => {
                Call::new(Method::POST, format!("/admin/users/{}/disable", seg(user_id)), None)
            }
            UsersCommand::Enable { user_id } => {
                Call::new(Method::POST, format!("/admin/users/{}/enable", seg(user_id)), None)
            }
            UsersCommand::ResetPassword { user_id } => {
                let password = stdin().context("reading the password from standard input")?;
                let body = serde_json::json!({ "password": password });
                Call::new(Method::POST, format!("/admin/users/{}/password", seg(user_id)), Some(body))
            }
        },
        AdminCommand::Sessions(command) => match command {
            SessionsCommand::List { user_id } => {
                Call::new(Method::GET, format!("/admin/users/{}/sessions", seg(user_id)), None)
            }
            SessionsCommand::Revoke { user_id } => {
                Call::new(Method::DELETE, format!("/admin/users/{}/sessions", seg(user_id)), None)
            }
        },
        AdminCommand::Upstreams(UpstreamsCommand::List) => Call::new(Method::GET, "/admin/upstreams", None),
        AdminCommand::Upstreams(UpstreamsCommand::Get { id }) => {
            Call::new(Method::GET, format!("/admin/upstreams/{}", seg(id)), None)
        }
        AdminCommand::Upstreams(UpstreamsCommand::Create(body)) => {
            Call::new(Method::POST, "/admin/upstreams", Some(read_body(body, stdin)?))
        }
        AdminCommand::Upstreams(UpstreamsCommand::Update { id, body }) => {
            Call::new(Method::PUT, format!("/admin/upstreams/{}", seg(id)), Some(read_body(body, stdin)?))
        }
        AdminCommand::Upstreams(UpstreamsCommand::Delete { id }) => {
            Call::new(Method::DELETE, format!("/admin/upstreams/{}", seg(id)), None)
        }
        AdminCommand::Keys(KeysCommand::List) => Call::new(Method::GET, "/admin/keys", None),
        AdminCommand::Keys(KeysCommand::Rotate) | AdminCommand::RotateKeys { .. } => {
            Call::new(Method::POST, "/admin/keys/rotate", None)
        }
        AdminCommand::Cluster(ClusterCommand::Members) => Call::new(Method::GET, "/admin/cluster/members", None),
        AdminCommand::Cluster(ClusterCommand::Shards) => Call::new(Method::GET, "/admin/cluster/shards", None),
    };
    Ok(call)
}

/// A path segment, percent-encoded (ids may hold any printable character).
fn seg(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

fn read_body(body: &Body, stdin: &mut dyn FnMut() -> anyhow::Result<String>) -> anyhow::Result<Value> {
    let text = match body.json.strip_prefix('@') {
        Some("-") => stdin()?,
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => body.json.clone(),
    };
    serde_json::from_str(&text).context("the body is not JSON")
}

/// How a response prints as a table: the list field and its columns, or one object.
fn render_table(call: &Call, body: &Value) -> String {
    let list = |field: &str, columns: &[&str]| {
        table::render(columns, body.get(field).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default())
    };
    match (call.method.as_str(), call.path.as_str()) {
        ("GET", "/admin/clients") => {
            list("clients", &["client_id", "name", "token_endpoint_auth_method", "grant_types", "redirect_uris"])
        }
        ("GET", "/admin/users") => list("users", &["id", "username", "email", "disabled"]),
        ("GET", "/admin/upstreams") => list("upstreams", &["id", "kind", "name", "issuer", "client_id", "source"]),
        (_, "/admin/keys") | (_, "/admin/keys/rotate") => {
            list("keys", &["kid", "alg", "state", "created_at_ms", "activated_at_ms", "retired_at_ms"])
        }
        (_, "/admin/cluster/members") => list("members", &["id", "rpc", "ready"]),
        (_, "/admin/cluster/shards") => list("shards", &["shard", "owner", "lease_holder", "epoch"]),
        (_, path) if path.ends_with("/sessions") && body.get("sessions").is_some() => {
            list("sessions", &["sid", "auth_time", "created_at_ms", "expires_at_ms", "grants"])
        }
        _ => table::render_object(body),
    }
}

/// Runs one admin command, printing its result to `out`.
pub async fn run(args: &AdminArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if let AdminCommand::RotateKeys { config: Some(path), timeout } = &args.command {
        if args.url.is_none() {
            let config = crate::config::Config::load(Some(path), std::env::vars())
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let keys = crate::cluster::admin::rotate_keys(&config, *timeout).await?;
            writeln!(out, "keys rotated:")?;
            for key in keys {
                writeln!(out, "  {key}")?;
            }
            return Ok(());
        }
    }
    let url = args.url.as_deref().context("--url (or IDP_ADMIN_URL) names the admin listener")?;
    let mut stdin = || -> anyhow::Result<String> {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let call = call_of(&args.command, &mut stdin)?;
    let http = http_client(args)?;
    let token = match (&args.token, &args.client_id) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(client_id)) => Some(fetch_token(&http, args, client_id).await?),
        (None, None) => None,
    };
    if token.is_none() && args.cert.is_none() {
        bail!("no credentials: give --token, --client-id with --client-secret and --issuer, or --cert with --key");
    }
    let mut request = http.request(call.method.clone(), format!("{}{}", url.trim_end_matches('/'), call.path));
    if let Some(token) = &token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    let response = request.send().await.with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value =
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    if !status.is_success() {
        let reason =
            body.get("error_description").and_then(Value::as_str).map(str::to_string).unwrap_or(body.to_string());
        bail!("{} {}: {status}: {reason}", call.method, call.path);
    }
    match (args.output, &body) {
        (_, Value::Null) => writeln!(out, "done")?,
        (Output::Json, body) => writeln!(out, "{}", serde_json::to_string_pretty(body)?)?,
        (Output::Table, body) => write!(out, "{}", render_table(&call, body))?,
    }
    Ok(())
}

fn http_client(args: &AdminArgs) -> anyhow::Result<reqwest::Client> {
    let mut builder =
        reqwest::Client::builder().timeout(Duration::from_secs(60)).redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem).context("--ca: PEM certificates")? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let mut pem = std::fs::read(cert).with_context(|| format!("reading --cert {}", cert.display()))?;
            pem.extend(std::fs::read(key).with_context(|| format!("reading --key {}", key.display()))?);
            builder = builder.identity(reqwest::Identity::from_pem(&pem).context("--cert/--key: PEM identity")?);
        }
        (None, None) => {}
        _ => bail!("--cert and --key go together"),
    }
    builder.build().context("building the HTTP client")
}

/// A `client_credentials` token with `idp:admin` from the issuer's token endpoint (found by discovery).
async fn fetch_token(http: &reqwest::Client, args: &AdminArgs, client_id: &str) -> anyhow::Result<String> {
    let issuer = args.issuer.as_deref().context("--client-id needs --issuer (or IDP_ADMIN_ISSUER)")?;
    let secret =
        args.client_secret.as_deref().context("--client-id needs --client-secret (or IDP_ADMIN_CLIENT_SECRET)")?;
    let discovery = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let metadata: Value = http.get(&discovery).send().await?.error_for_status()?.json().await.context("discovery")?;
    let endpoint = token_endpoint_of(&metadata, issuer)?;
    let response = http
        .post(endpoint)
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", crate::admin_api::auth::ADMIN_SCOPE)])
        .send()
        .await
        .context("token request")?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("token endpoint: {status}: {}", body.get("error").and_then(Value::as_str).unwrap_or("no error code"));
    }
    body["access_token"].as_str().map(str::to_string).context("token response without access_token")
}

/// The token endpoint the client secret may be sent to: the discovery document must be the issuer's own (OIDC
/// Discovery §4.3: its `issuer` is exactly `--issuer`), and the endpoint https, or http on a loopback host only.
fn token_endpoint_of(metadata: &Value, issuer: &str) -> anyhow::Result<url::Url> {
    let issuer = issuer.trim_end_matches('/');
    let named = metadata["issuer"].as_str().unwrap_or_default();
    if named != issuer {
        bail!("discovery names issuer {named:?}, not {issuer:?} (OIDC Discovery §4.3): the secret is not sent");
    }
    let text = metadata["token_endpoint"].as_str().context("discovery names no token_endpoint")?;
    let endpoint = url::Url::parse(text).with_context(|| format!("token_endpoint {text:?} is not a URL"))?;
    let loopback = match endpoint.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match endpoint.scheme() {
        "https" => Ok(endpoint),
        "http" if loopback => Ok(endpoint),
        _ => bail!("token_endpoint {text} is neither https nor loopback http: the secret is not sent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_secret_goes_only_to_the_issuers_own_safe_token_endpoint() {
        let issuer = "https://idp.example.com";
        let metadata = |iss: &str, endpoint: &str| serde_json::json!({"issuer": iss, "token_endpoint": endpoint});
        let ok = token_endpoint_of(&metadata(issuer, "https://idp.example.com/token"), "https://idp.example.com/");
        assert_eq!(ok.unwrap().as_str(), "https://idp.example.com/token");
        for (iss, endpoint) in [
            ("https://evil.example", "https://idp.example.com/token"),
            ("https://idp.example.com/", "https://idp.example.com/token"),
            (issuer, "http://idp.example.com/token"),
            (issuer, "ftp://idp.example.com/token"),
            (issuer, "not a url"),
            (issuer, "http://127.0.0.1.evil.example/token"),
        ] {
            assert!(token_endpoint_of(&metadata(iss, endpoint), issuer).is_err(), "{iss} {endpoint}");
        }
        assert!(token_endpoint_of(&serde_json::json!({"issuer": issuer}), issuer).is_err(), "no endpoint");
        for loopback in ["http://127.0.0.1:8080/token", "http://[::1]:8080/token", "http://localhost:8080/token"] {
            let local = "http://127.0.0.1:8080";
            assert!(token_endpoint_of(&metadata(local, loopback), local).is_ok(), "{loopback}");
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    fn parse(args: &[&str]) -> AdminArgs {
        Cli::try_parse_from(std::iter::once("idp-admin").chain(args.iter().copied())).unwrap().admin
    }

    #[test]
    fn commands_map_to_api_calls() {
        let mut stdin = || Ok("s3cret-password".to_string());
        let call = |args: &[&str], stdin: &mut dyn FnMut() -> anyhow::Result<String>| {
            call_of(&parse(args).command, stdin).unwrap()
        };
        assert_eq!(call(&["clients", "list"], &mut stdin).path, "/admin/clients");
        let rotate = call(&["clients", "rotate-secret", "a b/c"], &mut stdin);
        assert_eq!((rotate.method.as_str(), rotate.path.as_str()), ("POST", "/admin/clients/a%20b%2Fc/secret"));
        let create = call(&["clients", "create", "--json", r#"{"client_id": "x"}"#], &mut stdin);
        assert_eq!(create.body, Some(serde_json::json!({"client_id": "x"})));
        let reset = call(&["users", "reset-password", "bob"], &mut stdin);
        assert_eq!(reset.body, Some(serde_json::json!({"password": "s3cret-password"})));
        assert_eq!(call(&["rotate-keys"], &mut stdin).path, "/admin/keys/rotate");
        assert_eq!(call(&["sessions", "revoke", "bob"], &mut stdin).method, reqwest::Method::DELETE);
        let mut json_stdin = || Ok(r#"{"kind": "oidc"}"#.to_string());
        let update = call(&["upstreams", "update", "corp", "--json", "@-"], &mut json_stdin);
        assert_eq!((update.method.as_str(), update.path.as_str()), ("PUT", "/admin/upstreams/corp"));
        assert_eq!(update.body, Some(serde_json::json!({"kind": "oidc"})));
        let create = call(&["upstreams", "create", "--json", r#"{"id": "corp"}"#], &mut stdin);
        assert_eq!((create.method.as_str(), create.path.as_str()), ("POST", "/admin/upstreams"));
        let delete = call(&["upstreams", "delete", "corp"], &mut stdin);
        assert_eq!((delete.method.as_str(), delete.path.as_str()), ("DELETE", "/admin/upstreams/corp"));
        // The client named by a command is not the admin client of --client-id.
        let args = parse(&["--client-id", "ops", "clients", "get", "orders"]);
        assert_eq!(args.client_id.as_deref(), Some("ops"));
        assert_eq!(call_of(&args.command, &mut stdin).unwrap().path, "/admin/clients/orders");
        let args = parse(&["clients", "rotate-secret", "orders", "--client-id", "ops"]);
        assert_eq!(args.client_id.as_deref(), Some("ops"));
        let args = parse(&["--output", "json", "--url", "http://127.0.0.1:1", "keys", "list"]);
        assert_eq!((args.output, args.url.as_deref()), (Output::Json, Some("http://127.0.0.1:1")));
        assert!(call_of(&parse(&["clients", "create", "--json", "{not json"]).command, &mut stdin).is_err());
    }
}
