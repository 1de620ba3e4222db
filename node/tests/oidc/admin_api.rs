//! The admin API on an in-process admin listener: authorization (401/403/200), the OpenAPI document against the
//! routes, every resource's CRUD, validation errors with field and reason, 404/409, nothing half-written, changes
//! taking effect at the token, login and userinfo endpoints, and key rotation.

use crate::client::*;
use crate::harness::*;
use actix_web::dev::ServerHandle;
use idp_node::admin::serve_admin;
use idp_node::admin_api::{route_table, AdminApi, OPENAPI_DOCUMENT};
use idp_node::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Arc;

pub const OPS: (&str, &str) = ("ops", "ops-secret");
pub const READER: (&str, &str) = ("reader", "reader-secret");

/// A test node with its admin listener, and two machine clients: `ops` (may ask `idp:admin`) and `reader`.
pub struct AdminNode {
    pub node: TestNode,
    pub admin_url: String,
    handle: ServerHandle,
}

/// Adds the `ops` and `reader` machine clients to a configuration.
pub fn add_machine_clients(config: &mut Config) {
    for ((client_id, secret), scopes) in [(OPS, vec!["idp:admin", "read"]), (READER, vec!["read"])] {
        let mut client = demo_like_client(config, client_id, "RS256");
        client.client_secret = Some(secret.into());
        client.grant_types = vec!["client_credentials".into()];
        client.response_types = Vec::new();
        client.redirect_uris = Vec::new();
        client.post_logout_redirect_uris = Vec::new();
        client.scopes = scopes.into_iter().map(str::to_string).collect();
        config.clients.push(client);
    }
}

/// Serves the admin API of `node` on a new listener: its URL, and the handle that stops it.
pub fn serve_admin_api(node: &TestNode) -> (String, ServerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if node.state.config.admin.tls.is_some() { "https" } else { "http" };
    let admin_url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let api = AdminApi::new(node.state.clone(), None);
    let server = serve_admin(listener, Arc::new(|| true), Some(api)).expect("serving the admin listener");
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (admin_url, handle)
}

impl AdminNode {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(customize: impl FnOnce(&mut Config)) -> Self {
        let node = TestNode::start_with(|config| {
            add_machine_clients(config);
            customize(config);
        })
        .await;
        let (admin_url, handle) = serve_admin_api(&node);
        Self { node, admin_url, handle }
    }

    /// A client_credentials token of `client` asking `scope`.
    pub async fn token_of(&self, (client_id, secret): (&'static str, &'static str), scope: &str) -> String {
        let reply = must_token(
            &self.node,
            &ClientAuth::Basic(client_id, secret),
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
        .await;
        reply.str("access_token")
    }

    pub async fn admin_token(&self) -> String {
        self.token_of(OPS, "idp:admin").await
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = api().request(method, format!("{}{path}", self.admin_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("admin API request")).await
    }

    /// A call that must answer `status`.
    pub async fn must(&self, status: u16, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        let reply = self.call(method.clone(), path, Some(token), body).await;
        assert_eq!(reply.status.as_u16(), status, "{method} {path}: {}", reply.text);
        reply
    }
}

impl Drop for AdminNode {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

fn operations_of_document() -> BTreeSet<(String, String)> {
    let document: Value = serde_json::from_str(OPENAPI_DOCUMENT).expect("the OpenAPI document is JSON");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

/// Every route the server registers is in the served document, and every operation of the document is served
/// (each answers 401 without credentials, not 404 or 405; the document itself needs none).
#[actix_web::test]
async fn the_openapi_document_describes_exactly_the_served_routes() {
    let registered: BTreeSet<(String, String)> =
        route_table().into_iter().map(|(method, path, _)| (method.to_string(), path.to_string())).collect();
    assert_eq!(registered, operations_of_document());
    let admin = AdminNode::start().await;
    let served = admin.call(Method::GET, "/admin/openapi.json", None, None).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.json, serde_json::from_str::<Value>(OPENAPI_DOCUMENT).unwrap());
    for (method, path) in operations_of_document() {
        if path == "/admin/openapi.json" {
            continue;
        }
        let path = path
            .replace("{client_id}", "demo")
            .replace("{user_id}", "alice")
            .replace("{sid}", "x")
            .replace("{upstream_id}", "x");
        let reply = admin.call(Method::from_bytes(method.as_bytes()).unwrap(), &path, None, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}: {}", reply.text);
    }
    let reply = admin.call(Method::PATCH, "/admin/clients", None, None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// RFC 6750 §3: 401 with a challenge without or with a bad token, 403 with a valid token lacking `idp:admin`, 200
/// with it; a token of a client that lost the scope is refused at once.
#[actix_web::test]
async fn admin_api_authorization() {
    let admin = AdminNode::start().await;
    let none = admin.call(Method::GET, "/admin/clients", None, None).await;
    none.must_fail(401, "unauthorized");
    assert_eq!(none.header("www-authenticate"), Some("Bearer realm=\"idp-admin\""));
    let forged = admin.call(Method::GET, "/admin/clients", Some("not.a.token"), None).await;
    forged.must_fail(401, "unauthorized");
    assert!(forged.header("www-authenticate").unwrap().contains("invalid_token"));
    let reader = admin.token_of(READER, "read").await;
    let refused = admin.call(Method::GET, "/admin/clients", Some(&reader), None).await;
    refused.must_fail(403, "forbidden");
    assert!(refused.header("www-authenticate").unwrap().contains("insufficient_scope"));
    // A client that does not list idp:admin cannot even get a token for it.
    let reply = token(
        &admin.node,
        &ClientAuth::Basic(READER.0, READER.1),
        &[("grant_type", "client_credentials"), ("scope", "idp:admin")],
    )
    .await;
    reply.must_fail(400, "invalid_scope");
    // Nor may a client without a scope list (it may ask every supported scope, which idp:admin is not).
    let reply = token(&admin.node, &DEMO_AUTH, &[("grant_type", "client_credentials"), ("scope", "idp:admin")]).await;
    reply.must_fail(400, "invalid_scope");
    let ops = admin.token_of(OPS, "read").await;
    admin.call(Method::GET, "/admin/clients", Some(&ops), None).await.must_fail(403, "forbidden");

    let token = admin.admin_token().await;
    let list = admin.must(200, Method::GET, "/admin/clients", &token, None).await;
    assert!(list.json["clients"].as_array().unwrap().iter().any(|client| client["client_id"] == "demo"));
    // A revoked token stops working at once.
    let revoked = admin.admin_token().await;
    let reply = post_form(&admin.node, "/revoke", &ClientAuth::Basic(OPS.0, OPS.1), &[("token", &revoked)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    admin.call(Method::GET, "/admin/clients", Some(&revoked), None).await.must_fail(401, "unauthorized");
    // Taking idp:admin from ops ends the access of the tokens it holds.
    let mut ops_client = admin.must(200, Method::GET, "/admin/clients/ops", &token, None).await.json;
    ops_client["scopes"] = json!(["read"]);
    let other = admin.admin_token().await;
    admin.must(200, Method::PUT, "/admin/clients/ops", &token, Some(strip_view(ops_client))).await;
    admin.call(Method::GET, "/admin/clients", Some(&other), None).await.must_fail(403, "forbidden");
}

/// RFC 8707: a token `ops` minted for another resource server (with `resource`) is refused by the admin API (401),
/// though it carries `idp:admin`; the same client's token for the default audience (the issuer) is accepted.
#[actix_web::test]
async fn admin_api_refuses_tokens_minted_for_another_resource() {
    let admin = AdminNode::start_with(|config| {
        let ops = config.clients.iter_mut().find(|client| client.client_id == OPS.0).unwrap();
        ops.audiences = vec!["https://api.example.com".into()];
    })
    .await;
    let bound = must_token(
        &admin.node,
        &ClientAuth::Basic(OPS.0, OPS.1),
        &[("grant_type", "client_credentials"), ("scope", "idp:admin"), ("resource", "https://api.example.com")],
    )
    .await
    .str("access_token");
    let refused = admin.call(Method::GET, "/admin/clients", Some(&bound), None).await;
    refused.must_fail(401, "unauthorized");
    assert!(refused.header("www-authenticate").unwrap().contains("invalid_token"));
    let token = admin.admin_token().await;
    admin.must(200, Method::GET, "/admin/clients", &token, None).await;
}

/// The read-only fields of a client view, removed so that the view can be sent back as an update.
fn strip_view(mut view: Value) -> Value {
    view.as_object_mut().unwrap().remove("has_client_secret");
    view
}

fn client_body(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "name": "Orders",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "first_party": true,
    })
}

async fn client_credentials_status(node: &TestNode, client_id: &'static str, secret: &str) -> u16 {
    let secret: &'static str = Box::leak(secret.to_string().into_boxed_str());
    token(node, &ClientAuth::Basic(client_id, secret), &[("grant_type", "client_credentials")]).await.status.as_u16()
}

/// Create (secret shown once) → the client works at /token; read, list, update (secret kept), rotate (old secret
/// refused, new accepted), delete (gone, 404 after); 409 on a taken id; 404 on unknown ids.
#[actix_web::test]
async fn clients_lifecycle() {
    let admin = AdminNode::start().await;
    let token = admin.admin_token().await;
    let created = admin.must(201, Method::POST, "/admin/clients", &token, Some(client_body("orders"))).await;
    assert_eq!(created.header("location"), Some("/admin/clients/orders"));
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let secret = created.str("client_secret");
    assert_eq!(created.json["has_client_secret"], true);
    assert!(created.json.get("client_secret_hmac").is_none());
    assert_eq!(client_credentials_status(&admin.node, "orders", &secret).await, 200);
    assert_eq!(client_credentials_status(&admin.node, "orders", "wrong").await, 401);

    let read = admin.must(200, Method::GET, "/admin/clients/orders", &token, None).await;
    assert_eq!(read.json["name"], "Orders");
    assert!(read.json.get("client_secret").is_none(), "the secret is shown once");
    let list = admin.must(200, Method::GET, "/admin/clients", &token, None).await;
    let ids: Vec<&str> =
        list.json["clients"].as_array().unwrap().iter().map(|c| c["client_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"orders") && ids.contains(&"demo"), "{ids:?}");

    admin
        .must(409, Method::POST, "/admin/clients", &token, Some(client_body("orders")))
        .await
        .must_fail(409, "conflict");

    let mut update = client_body("orders");
    update["name"] = "Orders v2".into();
    let updated = admin.must(200, Method::PUT, "/admin/clients/orders", &token, Some(update)).await;
    assert_eq!(updated.json["name"], "Orders v2");
    assert!(updated.json.get("client_secret").is_none());
    assert_eq!(client_credentials_status(&admin.node, "orders", &secret).await, 200, "the secret is kept");

    let rotated = admin.must(200, Method::POST, "/admin/clients/orders/secret", &token, None).await;
    let new_secret = rotated.str("client_secret");
    assert_ne!(new_secret, secret);
    assert_eq!(client_credentials_status(&admin.node, "orders", &secret).await, 401);
    assert_eq!(client_credentials_status(&admin.node, "orders", &new_secret).await, 200);

    admin.must(204, Method::DELETE, "/admin/clients/orders", &token, None).await;
    assert_eq!(client_credentials_status(&admin.node, "orders", &new_secret).await, 401);
    for (method, path) in [
        (Method::GET, "/admin/clients/orders"),
        (Method::DELETE, "/admin/clients/orders"),
        (Method::POST, "/admin/clients/orders/secret"),
    ] {
        admin.must(404, method, path, &token, None).await.must_fail(404, "not_found");
    }
    admin.must(404, Method::PUT, "/admin/clients/orders", &token, Some(client_body("orders"))).await;
    // A public client has no secret to rotate.
    admin.must(409, Method::POST, "/admin/clients/demo-public/secret", &token, None).await;
}

/// Bad input: 400 naming the field and the reason, and nothing written.
#[actix_web::test]
async fn client_validation_errors_name_the_field_and_write_nothing() {
    let admin = AdminNode::start().await;
    let token = admin.admin_token().await;
    let before = admin.must(200, Method::GET, "/admin/clients", &token, None).await.json;
    let cases = [
        (json!({"client_id": "x", "redirect_uris": ["https://app.example/cb#frag"]}), "redirect_uris[0]"),
        (json!({"client_id": "x", "redirect_uris": ["http://app.example/cb"]}), "redirect_uris[0]"),
        (json!({"client_id": "x", "grant_types": ["password"]}), "grant_types[0]"),
        (json!({"client_id": "x", "token_endpoint_auth_method": "private_key_jwt"}), "jwks"),
        (json!({"client_id": "x", "redirect_uris": "https://app.example/cb"}), "redirect_uris"),
        (json!({"client_id": "x", "colour": "blue"}), "colour"),
        (json!({"client_id": "x", "client_secret": "chosen"}), "client_secret"),
    ];
    for (body, field) in cases {
        let reply = admin.must(400, Method::POST, "/admin/clients", &token, Some(body.clone())).await;
        reply.must_fail(400, "invalid_request");
        let got = reply.json.get("field").and_then(Value::as_str).unwrap_or_default();
        assert_eq!(got, field, "{body}: {}", reply.text);
        let reason = reply.json["reason"].as_str().unwrap();
        assert!(!reason.is_empty());
        if field == "colour" {
            assert!(reason.starts_with("unknown field `colour`"), "{reason}");
        }
    }
    let raw = api()
        .post(format!("{}/admin/clients", admin.admin_url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let after = admin.must(200, Method::GET, "/admin/clients", &token, None).await.json;
    assert_eq!(before, after, "a refused request writes nothing");
    assert!(admin.node.state.directory().client("x").is_none());
}

/// Create a user with a password → it logs in; update, reset password, disable (login refused, its access tokens
/// dead at /userinfo), enable, delete; 409 on a taken username, 404 on unknown ids.
#[actix_web::test]
async fn users_lifecycle() {
    let admin = AdminNode::start().await;
    let token = admin.admin_token().await;
    let body = json!({"username": "bob", "id": "u-bob", "password": "bob-password", "email": "bob@example.com"});
    let created = admin.must(201, Method::POST, "/admin/users", &token, Some(body)).await;
    assert!(created.json.get("password_hash").is_none() && created.json.get("password").is_none());
    assert_eq!(created.json["id"], "u-bob");
    assert!(logs_in(&admin.node, "bob", "bob-password").await);

    let taken = json!({"username": "BOB", "id": "u-bob-2", "password": "another-password"});
    admin.must(409, Method::POST, "/admin/users", &token, Some(taken)).await.must_fail(409, "conflict");
    let short = json!({"username": "carol", "password": "short"});
    let reply = admin.must(400, Method::POST, "/admin/users", &token, Some(short)).await;
    assert_eq!(reply.json["field"], "password");
    let bad_email = json!({"username": "carol", "password": "carol-password", "email": "no-at-sign"});
    assert_eq!(admin.must(400, Method::POST, "/admin/users", &token, Some(bad_email)).await.json["field"], "email");
    admin.must(404, Method::GET, "/admin/users/carol", &token, None).await;

    let update = json!({"username": "bobby", "email": "bobby@example.com", "name": "Bob B."});
    let updated = admin.must(200, Method::PUT, "/admin/users/u-bob", &token, Some(update)).await;
    assert_eq!((updated.json["username"].as_str(), updated.json["name"].as_str()), (Some("bobby"), Some("Bob B.")));
    assert!(logs_in(&admin.node, "bobby", "bob-password").await, "the password is kept by an update");

    admin
        .must(200, Method::POST, "/admin/users/u-bob/password", &token, Some(json!({"password": "new-password"})))
        .await;
    assert!(!logs_in(&admin.node, "bobby", "bob-password").await);
    assert!(logs_in(&admin.node, "bobby", "new-password").await);

    let users = admin.must(200, Method::GET, "/admin/users", &token, None).await;
    assert!(users.json["users"].as_array().unwrap().iter().all(|user| user.get("password_hash").is_none()));
    admin.must(204, Method::DELETE, "/admin/users/u-bob", &token, None).await;
    assert!(!logs_in(&admin.node, "bobby", "new-password").await);
    admin.must(404, Method::DELETE, "/admin/users/u-bob", &token, None).await;
    admin.must(404, Method::POST, "/admin/users/u-bob/disable", &token, None).await;
}

/// Disabling alice ends her access tokens at /userinfo and her logins; enabling her restores logins.
#[actix_web::test]
async fn disabling_a_user_ends_its_tokens_and_logins() {
    let admin = AdminNode::start().await;
    let token = admin.admin_token().await;
    let tokens = must_login_tokens(&admin.node, "openid profile").await;
    let access_token = tokens.str("access_token");
    assert_eq!(userinfo(&admin.node, &access_token).await.status, StatusCode::OK);
    let disabled = admin.must(200, Method::POST, "/admin/users/alice/disable", &token, None).await;
    assert_eq!(disabled.json["disabled"], true);
    assert_eq!(userinfo(&admin.node, &access_token).await.status, StatusCode::UNAUTHORIZED);
    assert!(!logs_in(&admin.node, ALICE.0, ALICE.1).await);
    admin.must(200, Method::POST, "/admin/users/alice/enable", &token, None).await;
    assert!(logs_in(&admin.node, ALICE.0, ALICE.1).await);
}

/// Whether `username` logs in through `demo` (a fresh browser).
async fn logs_in(node: &TestNode, username: &str, password: &str) -> bool {
    let browser = Browser::new();
    let login = browser.authorize(node, &AuthParams::demo("code")).await;
    assert!(login.is_login_form());
    let page = browser.submit_login(node, &login, username, password).await;
    let page = if page.status == 303 { browser.follow(node, page).await } else { page };
    page.is_response_to(REDIRECT_URI) && page.param("code").is_some()
}

/// Keys: listed; a rotation before `next` was published long enough is refused with 409 (nothing changes), and
/// after it succeeds: the former `next` key signs, and tokens keep verifying.
#[actix_web::test]
async fn keys_list_and_rotate_through_the_api() {
    let admin = AdminNode::start().await;
    let token = admin.admin_token().await;
    let current_kids = |keys: &Value| -> BTreeSet<String> {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|key| key["state"] == "current")
            .map(|key| key["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let next_kids = |keys: &Value| -> BTreeSet<String> {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|key| key["state"] == "next")
            .map(|key| key["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let before = admin.must(200, Method::GET, "/admin/keys", &token, None).await.json;
    assert_eq!(current_kids(&before).len(), 3, "one current key per algorithm: {before}");
    let refused = admin.must(409, Method::POST, "/admin/keys/rotate", &token, None).await;
    assert!(refused.json["reason"].as_str().unwrap().contains("retry in"), "{}", refused.text);
    assert_eq!(admin.must(200, Method::GET, "/admin/keys", &token, None).await.json, before);

    admin.node.advance_secs(86_400 + 1);
    let token = admin.admin_token().await;
    let after = admin.must(200, Method::POST, "/admin/keys/rotate", &token, None).await.json;
    assert_eq!(current_kids(&after), next_kids(&before), "the next keys sign now");
    // The token endpoint signs with the new key, and the new token verifies (it authorizes this call).
    let fresh = admin.admin_token().await;
    let (header, _) = jwt_parts(&fresh);
    assert!(current_kids(&after).contains(header["kid"].as_str().unwrap()));
    admin.must(200, Method::GET, "/admin/keys", &fresh, None).await;
    // The embedded node has no cluster.
    admin.must(404, Method::GET, "/admin/cluster/members", &fresh, None).await;
}

#[derive(clap::Parser)]
struct AdminCli {
    #[command(flatten)]
    admin: idp_node::admin_cli::AdminArgs,
}

/// Runs `idp admin ARGS` in-process; its output.
async fn run_cli(args: &[&str]) -> anyhow::Result<String> {
    use clap::Parser;
    let cli = AdminCli::try_parse_from(std::iter::once("idp-admin").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    idp_node::admin_cli::run(&cli.admin, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

/// `idp admin` over the API: tables by default, JSON on request, a token fetched with the admin client's
/// credentials, and a clear failure without credentials or with a refused change.
#[actix_web::test]
async fn cli_prints_tables_and_json() {
    let admin = AdminNode::start().await;
    let token = admin.admin_token().await;
    let url = admin.admin_url.as_str();
    let table = run_cli(&["--url", url, "--token", &token, "clients", "list"]).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("CLIENT_ID") && lines[0].contains("TOKEN_ENDPOINT_AUTH_METHOD"), "{table}");
    assert!(lines.iter().any(|line| line.starts_with("demo ") && line.contains("client_secret_basic")), "{table}");

    let issuer = admin.node.issuer.as_str();
    let credentials = ["--url", url, "--client-id", OPS.0, "--client-secret", OPS.1, "--issuer", issuer];
    let body = r#"{"client_id": "cli-made", "redirect_uris": ["https://app.example/cb"]}"#;
    let created = run_cli(&[&credentials[..], &["--output", "json", "clients", "create", "--json", body]].concat())
        .await
        .unwrap();
    let created: Value = serde_json::from_str(&created).expect("JSON output");
    assert_eq!(created["client_id"], "cli-made");
    assert_eq!(created["client_secret"].as_str().unwrap().len(), 43);

    let keys = run_cli(&["--url", url, "--token", &token, "keys", "list"]).await.unwrap();
    assert!(keys.starts_with("KID") && keys.lines().filter(|line| line.contains(" current ")).count() == 3, "{keys}");
    let one = run_cli(&["--url", url, "--token", &token, "users", "get", "alice"]).await.unwrap();
    assert!(one.lines().any(|line| line.starts_with("username") && line.ends_with("alice")), "{one}");

    let error = run_cli(&["--url", url, "clients", "list"]).await.unwrap_err().to_string();
    assert!(error.contains("no credentials"), "{error}");
    let error =
        run_cli(&["--url", url, "--token", &token, "clients", "create", "--json", body]).await.unwrap_err().to_string();
    assert!(error.contains("409") && error.contains("already exists"), "{error}");
}

/// Alice's sessions are listed by sid (never by handle); ending one kills the tokens issued in it and only those;
/// ending all kills the rest, refresh tokens included.
#[actix_web::test]
async fn sessions_are_listed_and_revoked_through_the_api() {
    let admin = AdminNode::start().await;
    let token = admin.admin_token().await;
    let first = must_login_tokens(&admin.node, "openid offline_access").await;
    let second = must_login_tokens(&admin.node, "openid offline_access").await;
    let sid_of = |reply: &Reply| jwt_parts(&reply.str("id_token")).1["sid"].as_str().unwrap().to_string();
    let (first_sid, second_sid) = (sid_of(&first), sid_of(&second));
    let listed = admin.must(200, Method::GET, "/admin/users/alice/sessions", &token, None).await;
    let sids: BTreeSet<String> =
        listed.json["sessions"].as_array().unwrap().iter().map(|s| s["sid"].as_str().unwrap().to_string()).collect();
    assert_eq!(sids, BTreeSet::from([first_sid.clone(), second_sid.clone()]), "{}", listed.text);
    assert!(listed.json["sessions"].as_array().unwrap().iter().all(|s| s["grants"] == 1 && s.get("handle").is_none()));

    let one = admin.must(200, Method::DELETE, &format!("/admin/users/alice/sessions/{first_sid}"), &token, None).await;
    assert_eq!((one.json["revoked_sessions"].as_u64(), one.json["revoked_grants"].as_u64()), (Some(1), Some(1)));
    assert_eq!(userinfo(&admin.node, &first.str("access_token")).await.status, StatusCode::UNAUTHORIZED);
    refresh(&admin.node, &DEMO_AUTH, &first.str("refresh_token")).await.must_fail(400, "invalid_grant");
    assert_eq!(
        userinfo(&admin.node, &second.str("access_token")).await.status,
        StatusCode::OK,
        "the other session lives"
    );
    admin.must(404, Method::DELETE, &format!("/admin/users/alice/sessions/{first_sid}"), &token, None).await;

    let all = admin.must(200, Method::DELETE, "/admin/users/alice/sessions", &token, None).await;
    assert_eq!(all.json["revoked_sessions"], 1);
    assert_eq!(userinfo(&admin.node, &second.str("access_token")).await.status, StatusCode::UNAUTHORIZED);
    refresh(&admin.node, &DEMO_AUTH, &second.str("refresh_token")).await.must_fail(400, "invalid_grant");
    let listed = admin.must(200, Method::GET, "/admin/users/alice/sessions", &token, None).await;
    assert_eq!(listed.json["sessions"], json!([]));
    admin.must(404, Method::GET, "/admin/users/nobody/sessions", &token, None).await;
    // The index survives the shard actors' restart (it is a replica record like the sessions).
    let third = must_login_tokens(&admin.node, "openid").await;
    admin.node.restart_shard_actors().await;
    let listed = admin.must(200, Method::GET, "/admin/users/alice/sessions", &token, None).await;
    assert_eq!(listed.json["sessions"][0]["sid"].as_str().unwrap(), sid_of(&third));
}

/// Every admin change is an `admin_change` audit event naming who (the admin client), what and which entry; a user
/// is named by the audit's keyed hash, never by its id.
#[actix_web::test]
async fn admin_changes_are_audit_events() {
    let path = std::env::temp_dir().join(format!("idp-admin-audit-{}.jsonl", rand::random::<u64>()));
    let file = path.clone();
    let admin = AdminNode::start_with(move |config| {
        config.audit.sink = "file".into();
        config.audit.file = Some(file);
    })
    .await;
    let token = admin.admin_token().await;
    admin.must(201, Method::POST, "/admin/clients", &token, Some(client_body("audited"))).await;
    admin.must(200, Method::POST, "/admin/users/alice/disable", &token, None).await;
    admin.must(204, Method::DELETE, "/admin/clients/audited", &token, None).await;
    admin.must(201, Method::POST, "/admin/upstreams", &token, Some(upstream_body("audited-up", "s"))).await;
    admin.must(200, Method::PUT, "/admin/upstreams/audited-up", &token, Some(upstream_body("audited-up", "t"))).await;
    admin.must(204, Method::DELETE, "/admin/upstreams/audited-up", &token, None).await;
    let expected = [
        ("client.create", "audited".to_string()),
        ("user.disable", format!("user:{}", admin.node.state.audit.subject("alice"))),
        ("client.delete", "audited".to_string()),
        ("upstream.create", "audited-up".to_string()),
        ("upstream.update", "audited-up".to_string()),
        ("upstream.delete", "audited-up".to_string()),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let changes = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let changes: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|record| record["event"] == "admin_change")
            .collect();
        if changes.len() >= expected.len() || std::time::Instant::now() > deadline {
            break changes;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let _ = std::fs::remove_file(&path);
    assert_eq!(changes.len(), expected.len(), "{changes:#?}");
    for (record, (action, target)) in changes.iter().zip(expected) {
        let fields = if record.get("data").is_some() { &record["data"] } else { record };
        assert_eq!(fields["actor"], "client:ops", "{record}");
        assert_eq!(fields["action"], action, "{record}");
        assert_eq!(fields["target"], target.as_str(), "{record}");
        assert!(!record.to_string().contains("\"alice\""), "the user id is not in the record: {record}");
    }
}

/// Test PKI files in a temporary folder, removed on drop.
struct Pki {
    folder: std::path::PathBuf,
}

impl Pki {
    fn new() -> Self {
        let folder = std::env::temp_dir().join(format!("idp-admin-pki-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&folder).unwrap();
        Self { folder }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.folder.join(name)
    }

    fn ca(&self, name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), ca.pem()).unwrap();
        ca
    }

    /// A leaf certificate (server or client) from `ca`, written as NAME.pem and NAME.key.
    fn leaf(&self, name: &str, names: Vec<String>, client: bool, ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let usage = if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth };
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, ca).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn identity(&self, name: &str) -> reqwest::Identity {
        let mut pem = std::fs::read(self.path(&format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(self.path(&format!("{name}.key"))).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    }

    fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.path("server-ca.pem")).unwrap()).unwrap();
        let builder = reqwest::Client::builder().tls_certs_only([ca]);
        let builder = match identity {
            Some(name) => builder.identity(self.identity(name)),
            None => builder,
        };
        builder.build().unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// Mutual TLS on the admin listener: a client certificate of `admin.tls.client_ca` is an admin without a token; a
/// caller without one still may use a token; a certificate of another CA is refused at the handshake. The CLI
/// authenticates with `--cert`/`--key` and trusts `--ca`.
#[actix_web::test]
async fn mutual_tls_authenticates_admin_callers() {
    let pki = Pki::new();
    let server_ca = pki.ca("server-ca");
    let admin_ca = pki.ca("admin-ca");
    let rogue_ca = pki.ca("rogue-ca");
    pki.leaf("server", vec!["127.0.0.1".into()], false, &server_ca);
    pki.leaf("operator", vec![], true, &admin_ca);
    pki.leaf("rogue", vec![], true, &rogue_ca);
    let tls = idp_node::config::AdminTlsConfig {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: Some(pki.path("admin-ca.pem")),
    };
    let admin = AdminNode::start_with(move |config| config.admin.tls = Some(tls)).await;
    assert!(admin.admin_url.starts_with("https://"));
    let clients = format!("{}/admin/clients", admin.admin_url);

    let with_certificate = pki.client(Some("operator")).get(&clients).send().await.unwrap();
    assert_eq!(with_certificate.status(), StatusCode::OK);
    let without = pki.client(None).get(&clients).send().await.unwrap();
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    let token = admin.admin_token().await;
    let with_token = pki.client(None).get(&clients).bearer_auth(&token).send().await.unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    // A certificate does not excuse a bad token sent along.
    let both = pki.client(Some("operator")).get(&clients).bearer_auth("forged").send().await.unwrap();
    assert_eq!(both.status(), StatusCode::UNAUTHORIZED);
    assert!(pki.client(Some("rogue")).get(&clients).send().await.is_err(), "another CA's certificate is refused");
    assert_eq!(
        pki.client(None).get(format!("{}/readyz", admin.admin_url)).send().await.unwrap().status(),
        StatusCode::OK
    );

    let (cert, key, ca) = (pki.path("operator.pem"), pki.path("operator.key"), pki.path("server-ca.pem"));
    let args = ["--url", &admin.admin_url, "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()];
    let output = run_cli(&[&args[..], &["--ca", ca.to_str().unwrap(), "users", "list"]].concat()).await.unwrap();
    assert!(output.lines().any(|line| line.starts_with("alice")), "{output}");
}

/// The configured upstream providers are listed (read-only) without their client secrets.
#[actix_web::test]
async fn upstreams_are_listed_without_secrets() {
    let text = "id = \"github\"\nkind = \"oauth2\"\nauthorize_url = \"https://github.com/login/oauth/authorize\"\n\
        token_url = \"https://github.com/login/oauth/access_token\"\nuserinfo_url = \"https://api.github.com/user\"\n\
        client_id = \"broker\"\nclient_secret = \"upstream-secret-value\"\n\
        claims = { subject = \"id\", username = \"login\", name = \"name\" }";
    let upstream: idp_node::config::UpstreamConfig = toml::from_str(text).expect("an upstream config");
    let admin = AdminNode::start_with(move |config| config.upstreams = vec![upstream]).await;
    let token = admin.admin_token().await;
    let list = admin.must(200, Method::GET, "/admin/upstreams", &token, None).await;
    assert_eq!(list.json["upstreams"][0]["id"], "github");
    assert_eq!(list.json["upstreams"][0]["has_client_secret"], true);
    assert!(!list.text.contains("upstream-secret-value"), "{}", list.text);
    let one = admin.must(200, Method::GET, "/admin/upstreams/github", &token, None).await;
    assert_eq!((one.json["kind"].as_str(), one.json["source"].as_str()), (Some("oauth2"), Some("config")));
    admin.must(404, Method::GET, "/admin/upstreams/google", &token, None).await;
    let table = run_cli(&["--url", &admin.admin_url, "--token", &token, "upstreams", "list"]).await.unwrap();
    assert!(table.starts_with("ID") && table.lines().any(|line| line.starts_with("github  oauth2")), "{table}");
}

/// An upstream body for the API (an `oidc` upstream of `issuer`).
fn upstream_body(id: &str, secret: &str) -> Value {
    json!({
        "id": id, "kind": "oidc", "name": format!("Upstream {id}"), "issuer": "https://login.acme.example",
        "client_id": "broker", "client_secret": secret, "timeout": "3s",
    })
}

/// Upstreams are created, read, listed, updated and deleted through the API (the config's one is listed as
/// `source: config`); bad ones are refused with their field and nothing is written; the secret is write-only, kept
/// by an update that omits it, and sealed in the store; the CLI drives the same routes.
#[actix_web::test]
async fn upstreams_lifecycle_validation_and_write_only_secrets() {
    let admin = AdminNode::start().await;
    let token = admin.admin_token().await;
    let created =
        admin.must(201, Method::POST, "/admin/upstreams", &token, Some(upstream_body("acme", "s3cret-one"))).await;
    assert!(!created.text.contains("s3cret-one"), "{}", created.text);
    assert_eq!(
        (created.json["has_client_secret"].clone(), created.json["source"].clone()),
        (json!(true), json!("api"))
    );
    assert_eq!(created.json["timeout"], "3s");
    let directory = admin.node.state.directory();
    let served = directory.upstreams().iter().find(|upstream| upstream.id == "acme").expect("served at once");
    assert_eq!(served.client_secret.as_deref(), Some("s3cret-one"), "the runtime gets the secret");
    assert!(admin.node.state.federation.upstream("acme").is_some(), "the federation table follows the directory");
    let stored =
        admin.node.state.directory_store.replica().read_document("directory:upstreams").await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("s3cret-one"), "the stored secret is sealed");

    admin.must(409, Method::POST, "/admin/upstreams", &token, Some(upstream_body("acme", "x"))).await;
    let cases = [
        (json!({"id": "Bad Id!"}), "id"),
        (json!({"kind": "saml"}), "kind"),
        (json!({"issuer": "http://login.acme.example"}), "issuer"),
        (json!({"client_secret": null}), "client_secret"),
        (json!({"token_endpoint_auth_method": "private_key_jwt", "client_secret": null}), "private_key_file"),
        (json!({"timeout": "10m"}), "timeout"),
        (json!({"frobnicate": true}), "frobnicate"),
        (json!({"kind": "oauth2"}), "authorize_url"),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "client_secret": null,
                   "private_key_file": "/nonexistent/key.pem"}),
            "private_key_file",
        ),
    ];
    for (change, field) in cases {
        let mut body = upstream_body("other", "s");
        for (key, value) in change.as_object().unwrap() {
            body[key] = value.clone();
        }
        let reply = admin.must(400, Method::POST, "/admin/upstreams", &token, Some(body)).await;
        assert_eq!(reply.json["field"], field, "{change}: {}", reply.text);
    }
    let list = admin.must(200, Method::GET, "/admin/upstreams", &token, None).await;
    let ids: Vec<&str> = list.json["upstreams"].as_array().unwrap().iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids, ["acme"], "nothing of the refused ones was written");

    // An update without a secret keeps it; with one, replaces it; never shown.
    let mut body = upstream_body("acme", "");
    body.as_object_mut().unwrap().remove("client_secret");
    body["name"] = json!("Acme Corp");
    let updated = admin.must(200, Method::PUT, "/admin/upstreams/acme", &token, Some(body)).await;
    assert_eq!(
        (updated.json["name"].as_str(), updated.json["has_client_secret"].as_bool()),
        (Some("Acme Corp"), Some(true))
    );
    let kept = admin.node.state.federation.upstream("acme").expect("still served");
    assert_eq!((kept.config.display_name(), kept.config.client_secret.as_deref()), ("Acme Corp", Some("s3cret-one")));
    admin.must(200, Method::PUT, "/admin/upstreams/acme", &token, Some(upstream_body("acme", "s3cret-two"))).await;
    let replaced = admin.node.state.federation.upstream("acme").unwrap();
    assert_eq!(replaced.config.client_secret.as_deref(), Some("s3cret-two"));
    let one = admin.must(200, Method::GET, "/admin/upstreams/acme", &token, None).await;
    assert!(!one.text.contains("s3cret"), "{}", one.text);
    let mut saml = upstream_body("acme", "s3cret-three");
    saml["kind"] = json!("saml");
    let reply = admin.must(400, Method::PUT, "/admin/upstreams/acme", &token, Some(saml)).await;
    assert_eq!(reply.json["field"], "kind");
    let unchanged = admin.node.state.federation.upstream("acme").unwrap();
    assert_eq!(unchanged.config.client_secret.as_deref(), Some("s3cret-two"), "a refused update writes nothing");
    let reply = admin.must(400, Method::PUT, "/admin/upstreams/acme", &token, Some(upstream_body("zzz", "s"))).await;
    assert_eq!(reply.json["field"], "id");
    admin.must(404, Method::PUT, "/admin/upstreams/ghost", &token, Some(upstream_body("ghost", "s"))).await;
    admin.must(404, Method::GET, "/admin/upstreams/ghost", &token, None).await;
    assert_eq!(admin.call(Method::GET, "/admin/upstreams", None, None).await.status, StatusCode::UNAUTHORIZED);

    // The CLI: create from JSON, list as a table, delete.
    let body = upstream_body("cli-made", "cli-secret").to_string();
    let base = ["--url", admin.admin_url.as_str(), "--token", token.as_str()];
    let output = run_cli(&[&base[..], &["upstreams", "create", "--json", &body]].concat()).await.unwrap();
    assert!(output.contains("cli-made") && !output.contains("cli-secret"), "{output}");
    let table = run_cli(&[&base[..], &["upstreams", "list"]].concat()).await.unwrap();
    assert!(table.lines().any(|line| line.starts_with("cli-made") && line.ends_with("api")), "{table}");
    run_cli(&[&base[..], &["upstreams", "delete", "cli-made"]].concat()).await.unwrap();
    admin.must(204, Method::DELETE, "/admin/upstreams/acme", &token, None).await;
    admin.must(404, Method::DELETE, "/admin/upstreams/acme", &token, None).await;
    assert!(admin.node.state.federation.upstreams().is_empty(), "deleted upstreams are no longer offered");
    let list = admin.must(200, Method::GET, "/admin/upstreams", &token, None).await;
    assert_eq!(list.json["upstreams"], json!([]));
}
