//! Every response type in every response mode (OIDC Core §3, OAuth 2.0 Multiple Response Types, Form Post
//! Response Mode), for the `demo` client, answered from an SSO session.

use crate::client::*;
use crate::harness::*;
use openidconnect::core::CoreProviderMetadata;

const RESPONSE_TYPES: [&str; 6] =
    ["code", "id_token", "id_token token", "code id_token", "code token", "code id_token token"];

/// Where the parameters of a response travelled.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Carried {
    Query,
    Fragment,
    FormPost,
}

fn carried(page: &Page) -> Carried {
    match &page.location {
        None => Carried::FormPost,
        Some(location) => {
            let url = url::Url::parse(location).unwrap();
            match (url.query(), url.fragment()) {
                (Some(_), None) => Carried::Query,
                (None, Some(_)) => Carried::Fragment,
                other => panic!("parameters in both or neither of query and fragment: {other:?}"),
            }
        }
    }
}

/// Checks one successful authorization response against what its response type promises.
async fn check_success(node: &TestNode, metadata: &CoreProviderMetadata, response_type: &str, page: &Page) {
    let words: Vec<&str> = response_type.split(' ').collect();
    assert!(page.is_response_to(REDIRECT_URI), "{response_type}: {} {}", page.status, page.body);
    assert_eq!(page.param("error"), None, "{response_type}");
    // RFC 6749 §4.1.2: state echoed exactly; RFC 9207: iss names the issuer.
    assert_eq!(page.param("state").as_deref(), Some("state-Ω &=?"), "{response_type}");
    assert_eq!(page.param("iss").as_deref(), Some(node.issuer.as_str()), "{response_type}");
    let code = page.param("code");
    let access_token = page.param("access_token");
    let id_token = page.param("id_token");
    // OAuth 2.0 Multiple Response Types §3-§5: exactly what the response type names, nothing more.
    assert_eq!(code.is_some(), words.contains(&"code"), "{response_type}: code");
    assert_eq!(access_token.is_some(), words.contains(&"token"), "{response_type}: access_token");
    assert_eq!(id_token.is_some(), words.contains(&"id_token"), "{response_type}: id_token");
    if let Some(access_token) = &access_token {
        assert_eq!(page.param("token_type").as_deref(), Some("Bearer"));
        assert!(page.param("expires_in").is_some_and(|seconds| seconds.parse::<u64>().unwrap() > 0));
        must_be_live(node, access_token).await;
    }
    if let Some(id_token) = &id_token {
        let with = Companions { nonce: Some("nonce-1"), code: code.as_deref(), access_token: access_token.as_deref() };
        let claims = must_verify_id_token(node, metadata, "demo", "RS256", id_token, &with);
        // OIDC Core §3.3.2.11: at_hash only beside an access token; §3.2.2.10 it is required there.
        assert_eq!(claims.access_token_hash().is_some(), access_token.is_some(), "{response_type}: at_hash");
        assert_eq!(claims.subject().as_str(), "alice");
        assert!(claims.auth_time().is_some());
    }
    if let Some(code) = &code {
        // The code of every response type redeems once at the token endpoint, with the nonce of the request.
        let tokens = must_redeem(node, code, None).await;
        let with = Companions { nonce: Some("nonce-1"), ..Companions::default() };
        must_verify_id_token(node, metadata, "demo", "RS256", &tokens.str("id_token"), &with);
    }
}

/// OIDC Core §3.1.2.5, §3.2.2.5, §3.3.2.5 with RFC 6749 §4.1.2 and Form Post Response Mode §2: every response type
/// in every response mode it may use, and the default mode of each (query for `code`, fragment otherwise).
#[actix_web::test]
async fn every_response_type_in_every_allowed_mode_carries_exactly_its_parameters() {
    let node = TestNode::start().await;
    let metadata = must_discover(&node).await;
    let browser = Browser::new();
    let first = browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    check_success(&node, &metadata, "code", &first).await;
    for response_type in RESPONSE_TYPES {
        let tokens_in_front = response_type != "code";
        let default_mode = if tokens_in_front { Carried::Fragment } else { Carried::Query };
        let mut modes =
            vec![(None, default_mode), (Some("fragment"), Carried::Fragment), (Some("form_post"), Carried::FormPost)];
        if !tokens_in_front {
            modes.push((Some("query"), Carried::Query));
        }
        for (mode, expected) in modes {
            let mut params = AuthParams::demo(response_type);
            if let Some(mode) = mode {
                params = params.set("response_mode", mode);
            }
            let page = browser.must_authorize_silently(&node, &params).await;
            assert_eq!(carried(&page), expected, "{response_type} {mode:?}");
            if expected == Carried::FormPost {
                // Form Post Response Mode §2: an auto-submitting form to the redirect URI, allowed by the CSP.
                let csp = page.header("content-security-policy").unwrap();
                assert!(csp.contains("form-action") && csp.contains("http://127.0.0.1:8081"), "{csp}");
                assert!(page.body.contains("method=\"post\""));
            }
            check_success(&node, &metadata, response_type, &page).await;
        }
    }
}

/// OIDC Core §3.2.2.1 and §3.3.2.11: `nonce` is REQUIRED whenever an ID token is returned from the authorization
/// endpoint (replay protection of front-channel ID tokens). The refusal goes back to the client, never with a token.
#[actix_web::test]
async fn front_channel_id_token_without_nonce_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    for response_type in ["id_token", "id_token token", "code id_token", "code id_token token"] {
        let page = browser.authorize(&node, &AuthParams::demo(response_type).without("nonce")).await;
        assert!(page.is_response_to(REDIRECT_URI), "{response_type}");
        assert_eq!(carried(&page), Carried::Fragment);
        assert_eq!(page.param("error").as_deref(), Some("invalid_request"), "{response_type}");
        assert_eq!(page.param("state").as_deref(), Some("state-Ω &=?"));
        for leaked in ["code", "id_token", "access_token"] {
            assert_eq!(page.param(leaked), None, "{response_type} leaked {leaked}");
        }
    }
    // The code flow alone may omit it (OIDC Core §3.1.2.1: OPTIONAL).
    let page = browser.authorize(&node, &AuthParams::demo("code").without("nonce")).await;
    assert!(page.param("code").is_some());
}

/// OIDC Core §3.3.2.11: `nonce` is REQUIRED for every hybrid flow, `code token` included (no ID token comes from
/// the authorization endpoint, but the one from the token endpoint carries it). The refusal goes back to the client
/// without a code or token. Without `openid` the request is plain OAuth 2.0 and needs none.
#[actix_web::test]
async fn code_token_without_nonce_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let page = browser.authorize(&node, &AuthParams::demo("code token").without("nonce")).await;
    assert!(page.is_response_to(REDIRECT_URI));
    assert_eq!(carried(&page), Carried::Fragment);
    assert_eq!(page.param("error").as_deref(), Some("invalid_request"));
    assert_eq!(page.param("state").as_deref(), Some("state-Ω &=?"));
    assert!(page.param("code").is_none() && page.param("access_token").is_none());
    let plain_oauth = AuthParams::demo("code token").without("nonce").set("scope", "profile");
    let page = browser.must_authorize_silently(&node, &plain_oauth).await;
    assert!(page.param("code").is_some() && page.param("access_token").is_some(), "{:?}", page.location);
}

/// OAuth 2.0 Multiple Response Types §5 and RFC 9700 §4.3: tokens must never travel in a query string (they leak
/// through logs and Referer). `response_mode=query` with a token response type is refused, and the error itself
/// goes in the fragment.
#[actix_web::test]
async fn query_mode_is_refused_for_responses_carrying_tokens() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    for response_type in ["id_token", "id_token token", "code id_token", "code token", "code id_token token"] {
        let page = browser.authorize(&node, &AuthParams::demo(response_type).set("response_mode", "query")).await;
        assert_eq!(page.status, 303, "{response_type}");
        assert_eq!(carried(&page), Carried::Fragment, "{response_type}: nothing in the query");
        assert_eq!(page.param("error").as_deref(), Some("invalid_request"), "{response_type}");
        assert_eq!(page.param("iss").as_deref(), Some(node.issuer.as_str()));
        assert!(
            page.param("access_token").is_none() && page.param("id_token").is_none() && page.param("code").is_none()
        );
    }
}

/// OIDC Core §3.1.2.1: an ID token is only issued for an OpenID request (`openid` scope); without it an
/// `id_token` response type is an `invalid_scope` error, not a token.
#[actix_web::test]
async fn id_token_response_without_openid_scope_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("id_token").set("scope", "profile")).await;
    assert_eq!(page.param("error").as_deref(), Some("invalid_scope"));
    assert_eq!(page.param("id_token"), None);
}

/// Form Post Response Mode §5 (and OWASP XSS rules): the auto-submitted form's values are HTML-escaped, so an
/// attacker-chosen `state` cannot inject markup into the provider's origin; the client still gets it exactly.
#[actix_web::test]
async fn form_post_escapes_the_values_it_carries() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let hostile = "\"><script>alert(1)</script><input name=\"code\" value=\"forged";
    let page = browser
        .must_authorize_silently(
            &node,
            &AuthParams::demo("code").set("response_mode", "form_post").set("state", hostile),
        )
        .await;
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert_eq!(page.param("state").as_deref(), Some(hostile));
    assert_eq!(page.response_params().iter().filter(|(name, _)| name == "code").count(), 1);
}

/// OIDC Core §3.1.2.1: without the `openid` scope the request is plain OAuth 2.0: the code redeems to an access
/// token only (no ID token), and that token gets 403 `insufficient_scope` at userinfo (§5.3.3).
#[actix_web::test]
async fn code_flow_without_openid_is_plain_oauth() {
    let node = TestNode::start().await;
    let page = Browser::new().must_authorize_and_login(&node, &AuthParams::demo("code").set("scope", "profile")).await;
    let tokens = must_redeem(&node, &page.must_param("code"), None).await;
    assert!(tokens.json.get("id_token").is_none());
    assert_eq!(tokens.str("scope"), "profile");
    userinfo(&node, &tokens.str("access_token")).await.must_fail(403, "insufficient_scope");
}
