//! SSO sessions and consent (OIDC Core §3.1.2.1 `prompt` and `max_age`, §3.1.2.3-§3.1.2.4, §3.1.2.6): a live
//! session skips the login form; `prompt` and `max_age` force it; `demo-public` asks consent; cookies are HttpOnly
//! and SameSite.

use crate::client::*;
use crate::harness::*;
use serde_json::Value;

/// The `auth_time` of the ID token a code redeems to.
async fn auth_time_of(node: &TestNode, page: &Page) -> Value {
    let tokens = must_redeem(node, &page.must_param("code"), None).await;
    jwt_parts(&tokens.str("id_token")).1["auth_time"].clone()
}

/// OIDC Core §3.1.2.3: with a live SSO session, a second authorization (even for another response type) is answered
/// without the login form, and its ID token carries the original `auth_time`.
#[actix_web::test]
async fn second_authorization_with_a_live_session_skips_the_login_form() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let first = browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let first_auth_time = auth_time_of(&node, &first).await;
    node.advance_secs(30);
    let second = browser.must_authorize_silently(&node, &AuthParams::demo("code")).await;
    assert_eq!(auth_time_of(&node, &second).await, first_auth_time);
    let hybrid = browser.must_authorize_silently(&node, &AuthParams::demo("code id_token")).await;
    assert!(hybrid.param("id_token").is_some());
    // Another browser has no session.
    assert!(Browser::new().authorize(&node, &AuthParams::demo("code")).await.is_login_form());
}

/// OIDC Core §3.1.2.1 `prompt=login`: the user is asked to log in again even with a live session, and the new
/// `auth_time` is the time of that login.
#[actix_web::test]
async fn prompt_login_forces_the_login_form_again() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let first = browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let first_auth_time = auth_time_of(&node, &first).await;
    node.advance_secs(30);
    let again = browser.must_authorize_and_login(&node, &AuthParams::demo("code").set("prompt", "login")).await;
    let new_auth_time = auth_time_of(&node, &again).await;
    assert_eq!(new_auth_time.as_u64().unwrap(), first_auth_time.as_u64().unwrap() + 30);
}

/// OIDC Core §3.1.2.1 `max_age`: a session authenticated longer ago than `max_age` seconds must log in again;
/// `max_age=0` is equivalent to `prompt=login`; a younger session is answered silently.
#[actix_web::test]
async fn max_age_forces_the_login_form_for_older_sessions() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    node.advance_secs(10);
    browser.must_authorize_silently(&node, &AuthParams::demo("code").set("max_age", "60")).await;
    let page = browser.authorize(&node, &AuthParams::demo("code").set("max_age", "5")).await;
    assert!(page.is_login_form(), "a session older than max_age logs in again");
    let page = browser.must_log_in(&node, &page).await;
    assert!(page.param("code").is_some());
    let page = browser.authorize(&node, &AuthParams::demo("code").set("max_age", "0")).await;
    assert!(page.is_login_form(), "max_age=0 is prompt=login");
    // prompt=none cannot show the form: login_required (OIDC Core §3.1.2.6).
    node.advance_secs(10);
    let page = browser.authorize(&node, &AuthParams::demo("code").set("max_age", "5").set("prompt", "none")).await;
    assert_eq!(page.param("error").as_deref(), Some("login_required"));
    assert_eq!(page.param("code"), None);
}

/// OIDC Core §3.1.2.6: `prompt=none` without a session cannot show a form: `login_required` goes back to the client
/// with the state echoed; with a session it answers silently.
#[actix_web::test]
async fn prompt_none_without_a_session_is_login_required() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("code").set("prompt", "none")).await;
    assert!(page.is_response_to(REDIRECT_URI));
    assert_eq!(page.param("error").as_deref(), Some("login_required"));
    assert_eq!(page.param("state").as_deref(), Some("state-Ω &=?"));
    assert_eq!(page.param("iss").as_deref(), Some(node.issuer.as_str()));
    assert_eq!(page.param("code"), None);
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let page = browser.must_authorize_silently(&node, &AuthParams::demo("id_token").set("prompt", "none")).await;
    assert!(page.param("id_token").is_some());
    // OIDC Core §3.1.2.1: `none` with any other value is an error.
    let page = browser.authorize(&node, &AuthParams::demo("code").set("prompt", "none login")).await;
    assert_eq!(page.param("error").as_deref(), Some("invalid_request"));
}

/// OIDC Core §3.1.2.4: a client that is not first party asks the user's consent (a form whose submit is named
/// `decision`); a denial is `access_denied` back to the client, with the state and never a code.
#[actix_web::test]
async fn third_party_client_asks_consent_and_deny_is_access_denied() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (_, challenge) = pkce_pair();
    let login = browser.authorize(&node, &AuthParams::public(&challenge).set("scope", "openid email")).await;
    let consent = browser.must_log_in(&node, &login).await;
    assert!(consent.is_consent_form(), "{}", consent.body);
    assert!(consent.body.contains("value=\"allow\"") && consent.body.contains("value=\"deny\""));
    assert!(consent.body.contains("Demo public client"));
    let denied = browser.submit_consent(&node, &consent, "deny").await;
    assert!(denied.is_response_to(REDIRECT_URI));
    assert_eq!(denied.param("error").as_deref(), Some("access_denied"));
    assert_eq!(denied.param("state").as_deref(), Some("state-Ω &=?"));
    assert_eq!(denied.param("code"), None);
    // Denied is not remembered: the next request asks again.
    let again = browser.authorize(&node, &AuthParams::public(&challenge).set("scope", "openid email")).await;
    assert!(again.is_consent_form());
}

/// One request, one answer (OIDC Core §3.1.2.4, RFC 6749 §4.1.2.1): a denial uses up the pending authorization, so
/// the same consent form posted again with `allow` (same pending handle and CSRF token) is refused with a page and
/// never yields a code.
#[actix_web::test]
async fn denied_consent_cannot_be_allowed_afterwards() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (_, challenge) = pkce_pair();
    let login = browser.authorize(&node, &AuthParams::public(&challenge)).await;
    let consent = browser.must_log_in(&node, &login).await;
    assert!(consent.is_consent_form(), "{}", consent.body);
    let denied = browser.submit_consent(&node, &consent, "deny").await;
    assert_eq!(denied.param("error").as_deref(), Some("access_denied"));
    let allowed = browser.submit_consent(&node, &consent, "allow").await;
    assert_eq!(allowed.status, 400, "{:?} {}", allowed.location, allowed.body);
    assert!(allowed.location.is_none());
    assert_eq!(allowed.param("code"), None);
    let denied_again = browser.submit_consent(&node, &consent, "deny").await;
    assert_eq!(denied_again.status, 400, "a second answer of either kind is refused");
}

/// OIDC Core §3.1.2.4: a consent is remembered for the scopes it covered; `prompt=consent` asks again, and so does
/// a request for a scope not consented to yet.
#[actix_web::test]
async fn consent_is_remembered_and_prompt_consent_forces_it() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (_, challenge) = pkce_pair();
    let params = AuthParams::public(&challenge).set("scope", "openid email");
    let page = browser.must_authorize_and_login(&node, &params).await;
    assert!(page.param("code").is_some());
    browser.must_authorize_silently(&node, &params).await;
    assert!(browser.authorize(&node, &params.clone().set("prompt", "consent")).await.is_consent_form());
    let wider = browser.authorize(&node, &params.clone().set("scope", "openid email profile")).await;
    assert!(wider.is_consent_form(), "a new scope needs consent");
    let page = browser.submit_consent(&node, &wider, "allow").await;
    assert!(page.param("code").is_some());
    browser.must_authorize_silently(&node, &params.set("scope", "openid profile")).await;
}

/// OIDC Core §3.1.2.6: `prompt=none` when consent would be needed is `consent_required`.
#[actix_web::test]
async fn prompt_none_when_consent_is_needed_is_consent_required() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let (_, challenge) = pkce_pair();
    let page = browser.authorize(&node, &AuthParams::public(&challenge).set("prompt", "none")).await;
    assert_eq!(page.param("error").as_deref(), Some("consent_required"));
    assert_eq!(page.param("state").as_deref(), Some("state-Ω &=?"));
    assert_eq!(page.param("code"), None);
}

/// OIDC Core §11: offline access needs consent, except for a first-party client: `demo` gets its refresh token
/// without a consent page; `demo-public` is asked first.
#[actix_web::test]
async fn first_party_client_gets_offline_access_without_a_consent_page() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let login = browser.authorize(&node, &AuthParams::demo("code").set("scope", "openid offline_access")).await;
    let page = browser.must_log_in(&node, &login).await;
    assert!(page.is_response_to(REDIRECT_URI), "no consent page for the first-party client");
    assert!(must_redeem(&node, &page.must_param("code"), None).await.json.get("refresh_token").is_some());
    let (_, challenge) = pkce_pair();
    let consent = browser.authorize(&node, &AuthParams::public(&challenge).set("scope", "openid offline_access")).await;
    assert!(consent.is_consent_form());
    let description = idp_node::pages::scope_description("offline_access").unwrap();
    assert!(consent.body.contains(description), "the consent page names offline access: {}", consent.body);
}

/// The cookie rules (and RFC 6265bis §4.1.2.7 / OWASP session management): every cookie the server sets is
/// HttpOnly with SameSite Lax or Strict; the SSO session cookie is SameSite=Lax so the redirect back from a client
/// carries it. A forged session cookie is simply no session.
#[actix_web::test]
async fn every_cookie_is_http_only_and_same_site() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (_, challenge) = pkce_pair();
    let mut cookies = Vec::new();
    let login = browser.authorize(&node, &AuthParams::public(&challenge)).await;
    cookies.extend(login.set_cookies());
    let posted = browser.submit_login(&node, &login, ALICE.0, ALICE.1).await;
    cookies.extend(posted.set_cookies());
    let consent = browser.follow(&node, posted).await;
    cookies.extend(consent.set_cookies());
    cookies.extend(browser.submit_consent(&node, &consent, "allow").await.set_cookies());
    cookies.extend(browser.get(&node.url("/logout")).await.set_cookies());
    assert!(cookies.iter().any(|cookie| cookie.starts_with("idp_session=")), "{cookies:?}");
    assert!(cookies.iter().any(|cookie| cookie.starts_with("idp_browser=")), "{cookies:?}");
    for cookie in &cookies {
        let lower = cookie.to_lowercase();
        assert!(lower.contains("; httponly"), "{cookie}");
        assert!(lower.contains("samesite=lax") || lower.contains("samesite=strict"), "{cookie}");
        assert!(lower.contains("path=/"), "{cookie}");
    }
    let session = cookies.iter().find(|cookie| cookie.starts_with("idp_session=")).unwrap();
    assert!(session.to_lowercase().contains("samesite=lax"));

    let forged = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let handle = idp_proto::Handle::random(node.state.shard_count()).encode();
    for value in [handle.as_str(), "garbage", ""] {
        let response = forged
            .get(node.url(&format!("/authorize?{}", AuthParams::demo("code").query())))
            .header("cookie", format!("idp_session={value}"))
            .send()
            .await
            .unwrap();
        assert!(Page::read(response).await.is_login_form(), "a forged session cookie is no session");
    }
}

/// The issue: under TLS (an https issuer) every cookie is also `Secure`, so it never travels in clear text.
#[actix_web::test]
async fn cookies_are_secure_when_the_issuer_is_https() {
    let node = TestNode::start_with(|config| config.issuer = config.issuer.replace("http://", "https://")).await;
    let plain_url =
        node.url(&format!("/authorize?{}", AuthParams::demo("code").query())).replace("https://", "http://");
    let page = Browser::new().get(&plain_url).await;
    assert!(page.is_login_form());
    let cookies = page.set_cookies();
    assert!(!cookies.is_empty());
    for cookie in cookies {
        assert!(cookie.to_lowercase().contains("; secure"), "{cookie}");
    }
}

/// OIDC Core §3.1.2.1 (POST to the authorization endpoint) with SameSite=Lax cookies: a form POSTed from the
/// client's site carries neither the session nor the binding cookie. Once its parameters parse, it answers 303 to
/// `GET /authorize` with the same parameters (a top-level GET carries Lax cookies), sets no cookie (other tabs'
/// CSRF tokens stay valid), and the GET answers from the live session, `prompt=none` included. Bad input is refused
/// as usual; a same-site POST, with the cookies, is handled at once.
#[actix_web::test]
async fn cross_site_authorize_post_becomes_a_get_that_sees_the_session() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let params = AuthParams::demo("code id_token").set("prompt", "none").set("login_hint", "alice & bob");
    let posted = browser.post_cross_site(&node.url("/authorize"), &params.pairs()).await;
    assert_eq!(posted.status, 303, "{}", posted.body);
    assert!(posted.set_cookies().is_empty(), "no new binding cookie: {:?}", posted.set_cookies());
    let location = posted.location.clone().expect("a redirect");
    let (path, query) = location.split_once('?').expect("a query");
    assert_eq!(path, node.url("/authorize"));
    let mut replayed: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut sent: Vec<(String, String)> =
        params.pairs().into_iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    replayed.sort();
    sent.sort();
    assert_eq!(replayed, sent, "the same parameters");
    let answer = browser.get(&location).await;
    assert!(answer.is_response_to(REDIRECT_URI), "{}", answer.body);
    assert!(answer.param("code").is_some() && answer.param("id_token").is_some(), "{:?}", answer.location);

    let unknown_client = params.clone().set("client_id", "nobody");
    let refused = browser.post_cross_site(&node.url("/authorize"), &unknown_client.pairs()).await;
    assert_eq!(refused.status, 400, "an unknown client is an error page, not a redirect");
    let refused =
        browser.post_cross_site(&node.url("/authorize"), &params.clone().set("prompt", "bogus").pairs()).await;
    assert_eq!(refused.param("error").as_deref(), Some("invalid_request"), "{:?}", refused.location);

    let same_site = browser.authorize_post(&node, &params).await;
    assert!(same_site.is_response_to(REDIRECT_URI), "answered at once: {:?}", same_site.location);
    assert!(same_site.param("code").is_some());
}

/// OIDC Core §3.1.2.1: `prompt=consent` asks the user even for a first-party client, which otherwise never sees
/// the consent page.
#[actix_web::test]
async fn prompt_consent_asks_even_for_a_first_party_client() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("code").set("prompt", "consent")).await;
    let page = browser.submit_login(&node, &page, ALICE.0, ALICE.1).await;
    let page = browser.follow(&node, page).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("name=\"decision\""), "the consent form: {}", page.body);
    let page = browser.submit_consent(&node, &page, "allow").await;
    let page = browser.follow(&node, page).await;
    assert!(page.is_response_to(REDIRECT_URI));
    assert!(page.param("code").is_some());
}
