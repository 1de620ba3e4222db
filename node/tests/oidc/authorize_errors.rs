//! Errors at the authorization endpoint (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6, RFC 9700 §4.1 and §4.11) and the
//! security headers of every HTML page.

use crate::harness::*;

/// The security headers the issue asks of every HTML page (CSP with `frame-ancestors 'none'` against
/// clickjacking, no sniffing, no Referer leak of codes, never cached).
fn must_have_page_headers(page: &Page, what: &str) {
    let csp = page.header("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: {csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(page.header("cache-control"), Some("no-store"), "{what}");
    assert!(page.header("content-type").is_some_and(|value| value.starts_with("text/html")), "{what}");
}

/// An error page of the provider: 4xx, no redirect, the page headers, and the attacker's URI not reflected.
fn must_be_error_page(page: &Page, what: &str) {
    assert!(page.status.is_client_error(), "{what}: {}", page.status);
    assert!(page.location.is_none(), "{what}: must never redirect, got {:?}", page.location);
    assert!(!page.body.contains("attacker.example"), "{what}: reflects the URI");
    must_have_page_headers(page, what);
}

/// RFC 6749 §4.1.2.1 and §10.15, RFC 9700 §4.1 and §4.11.2 (open redirector): with an unknown or missing client,
/// or a redirect URI that is missing or not an exact string match of a registered one (prefix, path, port, case,
/// query, fragment variations included), the OP shows an error page and never redirects, whatever else is wrong.
#[actix_web::test]
async fn unknown_client_or_unregistered_redirect_uri_shows_a_page_and_never_redirects() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let base = AuthParams::demo("code");
    let cases = [
        base.clone().set("client_id", "unknown-client"),
        base.clone().without("client_id"),
        base.clone().without("redirect_uri"),
        base.clone().set("redirect_uri", "https://attacker.example/callback"),
        base.clone().set("redirect_uri", "http://127.0.0.1:8081/callback/../../attacker.example"),
        base.clone().set("redirect_uri", "http://127.0.0.1:8081/callback/"),
        base.clone().set("redirect_uri", "http://127.0.0.1:8081/callback?next=https://attacker.example"),
        base.clone().set("redirect_uri", "http://127.0.0.1:8081/callback#attacker.example"),
        base.clone().set("redirect_uri", "http://127.0.0.1:8082/callback"),
        base.clone().set("redirect_uri", "HTTP://127.0.0.1:8081/callback"),
        base.clone().set("redirect_uri", "http://127.0.0.1:8081/CALLBACK"),
        base.clone().set("redirect_uri", "http://127.0.0.1:8081@attacker.example/callback"),
        base.clone().set("redirect_uri", "https://attacker.example/callback").set("response_type", "token"),
        base.clone().set("redirect_uri", "https://attacker.example/callback").set("prompt", "none"),
        base.clone().add("client_id", "demo"),
        base.clone().add("redirect_uri", "https://attacker.example/callback"),
    ];
    for params in cases {
        let page = browser.authorize(&node, &params).await;
        must_be_error_page(&page, &format!("GET {params:?}"));
        let posted = browser.authorize_post(&node, &params).await;
        must_be_error_page(&posted, &format!("POST {params:?}"));
    }
}

/// RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6 and §6, RFC 9207: once the client and its redirect URI are known, errors
/// go back to the client in its response mode, with `state` echoed exactly, `iss`, and never a code or token.
#[actix_web::test]
async fn errors_with_a_known_client_go_back_with_state_and_never_a_code() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let base = AuthParams::demo("code");
    let cases = [
        (base.clone().set("response_type", "token"), "unsupported_response_type"),
        (base.clone().set("response_type", "code code"), "unsupported_response_type"),
        (base.clone().set("response_type", "device_code"), "unsupported_response_type"),
        (base.clone().without("response_type"), "invalid_request"),
        (base.clone().set("scope", "openid admin"), "invalid_scope"),
        (base.clone().set("scope", "openid\u{7f}"), "invalid_scope"),
        (base.clone().set("request", "eyJhbGciOiJub25lIn0.e30."), "request_not_supported"),
        (base.clone().set("request_uri", "https://client.example/request.jwt"), "request_uri_not_supported"),
        (base.clone().set("response_mode", "web_message"), "invalid_request"),
        (base.clone().set("prompt", "sometimes"), "invalid_request"),
        (base.clone().set("max_age", "-1"), "invalid_request"),
        // RFC 8707 §2: a malformed resource, or one not registered for the client, is `invalid_target`.
        (base.clone().set("resource", "not-absolute"), "invalid_target"),
        (base.clone().set("resource", "https://evil.example.com"), "invalid_target"),
        (base.clone().set("audience", "https://api.example.com/orders"), "invalid_target"),
        (base.clone().set("client_id", "demo-public").set("response_type", "id_token"), "unauthorized_client"),
        // RFC 6749 §4.1.2.1 `invalid_request`: "includes a parameter more than once".
        (base.clone().add("scope", "openid"), "invalid_request"),
        (base.clone().add("response_type", "code"), "invalid_request"),
        (base.clone().add("nonce", "again"), "invalid_request"),
    ];
    for (params, error) in cases {
        let page = browser.authorize(&node, &params).await;
        assert!(page.is_response_to(REDIRECT_URI), "{params:?}: {} {}", page.status, page.body);
        assert_eq!(page.status, 303);
        assert_eq!(page.param("error").as_deref(), Some(error), "{params:?}");
        assert_eq!(page.param("state").as_deref(), Some("state-Ω &=?"), "{params:?}");
        assert_eq!(page.param("iss").as_deref(), Some(node.issuer.as_str()));
        for leaked in ["code", "access_token", "id_token"] {
            assert_eq!(page.param(leaked), None, "{params:?}");
        }
    }
    // A duplicated state cannot be echoed exactly: the error goes back without one.
    let page = browser.authorize(&node, &base.clone().add("state", "other")).await;
    assert_eq!(page.param("error").as_deref(), Some("invalid_request"));
    assert_eq!(page.param("state"), None);
}

/// The issue and RFC 9700 §4.11: `/authorize` sends no CORS headers, so no script of another origin reads its
/// answers (codes, error details).
#[actix_web::test]
async fn authorize_sends_no_cors_headers() {
    let node = TestNode::start().await;
    let http = api_with_cookies();
    let url = node.url(&format!("/authorize?{}", AuthParams::demo("code").query()));
    for method in [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::OPTIONS] {
        let response =
            http.request(method.clone(), &url).header("origin", "https://attacker.example").send().await.unwrap();
        assert!(response.status().as_u16() < 500, "{method}");
        for header in
            ["access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods"]
        {
            assert!(response.headers().get(header).is_none(), "{method}: {header}");
        }
    }
}

fn api_with_cookies() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// OIDC Core §3.1.2.1: the authorization endpoint supports POST with a form body as well as GET, and accepts
/// `login_hint`, `ui_locales`, `acr_values` and `max_age` without complaint.
#[actix_web::test]
async fn authorize_accepts_post_and_the_optional_parameters() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code")
        .set("login_hint", "alice")
        .set("ui_locales", "fr-CA en")
        .set("acr_values", "urn:mace:incommon:iap:silver")
        .set("max_age", "3600");
    // A browser without cookies is sent on to the equivalent GET (see `sessions.rs`).
    let page = browser.follow(&node, browser.authorize_post(&node, &params).await).await;
    assert!(page.is_login_form(), "{} {}", page.status, page.body);
    let page = browser.must_log_in(&node, &page).await;
    assert_eq!(page.param("state").as_deref(), Some("state-Ω &=?"));
    assert!(page.param("code").is_some());
}

/// The page rules: login, consent, logout confirmation, logged-out, form_post and error pages all carry the
/// security headers; error pages answer 4xx.
#[actix_web::test]
async fn every_html_page_carries_the_security_headers() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (_, challenge) = pkce_pair();
    let login = browser.authorize(&node, &AuthParams::public(&challenge)).await;
    must_have_page_headers(&login, "login");
    let failed = browser.submit_login(&node, &login, "alice", "wrong").await;
    must_have_page_headers(&failed, "failed login");
    let posted = browser.submit_login(&node, &failed, ALICE.0, ALICE.1).await;
    let consent = browser.follow(&node, posted).await;
    assert!(consent.is_consent_form());
    must_have_page_headers(&consent, "consent");
    let form_post = browser.authorize(&node, &AuthParams::demo("code").set("response_mode", "form_post")).await;
    must_have_page_headers(&form_post, "form_post");
    let confirm = browser.get(&node.url("/logout")).await;
    assert_eq!(confirm.status, 200);
    must_have_page_headers(&confirm, "logout confirmation");
    let logged_out = Browser::new().get(&node.url("/logout")).await;
    must_have_page_headers(&logged_out, "logged out");
    must_be_error_page(
        &browser.authorize(&node, &AuthParams::demo("code").set("client_id", "nobody")).await,
        "unknown client",
    );
    let forbidden = Browser::new().post(&node.url("/login"), &[("csrf", "x"), ("pending", "y")]).await;
    assert_eq!(forbidden.status, 403);
    must_be_error_page(&forbidden, "csrf refusal");
    must_be_error_page(&browser.get(&node.url("/authorize/resume?pending=garbage")).await, "bad resume");
}

/// RFC 6749 §4.1.2.1 `unauthorized_client`: a client without the authorization_code grant (here, one registered
/// for client_credentials only, with a redirect URI and the default `response_types = ["code"]`) is never issued a
/// code it could not redeem.
#[actix_web::test]
async fn a_client_without_the_code_grant_gets_no_code() {
    let node = TestNode::start_with(|config| {
        let mut service = demo_like_client(config, "service", "ES256");
        service.grant_types = vec!["client_credentials".into()];
        service.response_types = vec!["code".into()];
        config.clients.push(service);
    })
    .await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("code").set("client_id", "service")).await;
    assert!(page.is_response_to(REDIRECT_URI), "{} {}", page.status, page.body);
    assert_eq!(page.param("error").as_deref(), Some("unauthorized_client"));
    assert_eq!(page.param("code"), None);
}
