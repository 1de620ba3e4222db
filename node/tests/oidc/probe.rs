//! `idp probe` against an in-process node: a full login succeeds step by step, and a failure names its step.

use crate::harness::*;
use idp_node::probe::{run, ProbeArgs, Report};
use std::time::Duration;

fn args(node: &TestNode, client: (&str, Option<&str>), password: &str) -> ProbeArgs {
    ProbeArgs {
        issuer: node.issuer.clone(),
        client_id: client.0.into(),
        client_secret: client.1.map(str::to_string),
        redirect_uri: REDIRECT_URI.into(),
        username: ALICE.0.into(),
        password: password.into(),
        scope: "openid profile".into(),
        refresh: true,
        timeout: Duration::from_secs(10),
        ca: None,
        json: false,
    }
}

fn names(report: &Report) -> Vec<&str> {
    report.steps.iter().map(|step| step.name).collect()
}

#[actix_web::test]
async fn probe_runs_a_full_login() {
    let node = TestNode::start().await;
    let report = run(&args(&node, (DEMO.0, Some(DEMO.1)), ALICE.1)).await;
    assert!(report.failed_step().is_none(), "{}", report.render_text());
    assert_eq!(names(&report), ["discovery", "jwks", "authorize", "login", "token", "id_token", "userinfo", "refresh"]);
    assert!(report.steps.iter().all(|step| step.ms > 0.0));
    assert!(report.render_text().ends_with("probe succeeded\n"));
    // A public client with PKCE only.
    let mut public = args(&node, ("demo-public", None), ALICE.1);
    public.refresh = false;
    let report = run(&public).await;
    assert!(report.failed_step().is_none(), "{}", report.render_text());
}

#[actix_web::test]
async fn probe_names_the_failing_step() {
    let node = TestNode::start().await;
    let wrong_password = run(&args(&node, (DEMO.0, Some(DEMO.1)), "not-her-password")).await;
    let failed = wrong_password.failed_step().expect("a failure");
    assert_eq!(failed.name, "login", "{}", wrong_password.render_text());
    assert_eq!(names(&wrong_password).last(), Some(&"login"), "no step runs after a failure");

    let wrong_secret = run(&args(&node, (DEMO.0, Some("wrong")), ALICE.1)).await;
    let failed = wrong_secret.failed_step().unwrap();
    assert_eq!(failed.name, "token");
    assert!(failed.error.as_deref().unwrap().contains("invalid_client"), "{}", wrong_secret.render_text());

    let mut unknown_redirect = args(&node, (DEMO.0, Some(DEMO.1)), ALICE.1);
    unknown_redirect.redirect_uri = "https://elsewhere.example/cb".into();
    assert_eq!(run(&unknown_redirect).await.failed_step().unwrap().name, "authorize");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut nobody = args(&node, (DEMO.0, Some(DEMO.1)), ALICE.1);
    nobody.issuer = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    assert_eq!(run(&nobody).await.failed_step().unwrap().name, "discovery");
}
