//! RP-Initiated Logout 1.0: `id_token_hint`, a registered `post_logout_redirect_uri` and `state`; the session
//! ends and the refresh tokens issued in it are revoked (offline ones unless `logout.keep_offline_tokens`).

use crate::client::*;
use crate::harness::*;
use idp_actors::jwt::Algorithm;
use idp_actors::keyring::keys::SigningKey;
use serde_json::json;

/// Alice logged in through `demo` with offline access in `browser`: the token response.
async fn must_session_tokens(node: &TestNode, browser: &Browser) -> Reply {
    let (code, verifier) = must_code(node, browser, "openid offline_access").await;
    must_redeem(node, &code, Some(&verifier)).await
}

fn logout_query(params: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
}

async fn must_still_be_signed_in(node: &TestNode, browser: &Browser) {
    browser.must_authorize_silently(node, &AuthParams::demo("code")).await;
}

/// RP-Initiated Logout 1.0 §2-§3: with a valid `id_token_hint` and a registered `post_logout_redirect_uri`, the
/// OP ends the session and answers 303 to that URI with `state`; the next authorization shows the login form; the
/// session's refresh tokens (offline ones included by default) and their access tokens are revoked at once.
#[actix_web::test]
async fn logout_with_a_hint_redirects_with_state_and_ends_the_session() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let tokens = must_session_tokens(&node, &browser).await;
    let query = logout_query(&[
        ("id_token_hint", &tokens.str("id_token")),
        ("post_logout_redirect_uri", POST_LOGOUT_URI),
        ("state", "bye &1"),
    ]);
    let page = browser.get(&node.url(&format!("/logout?{query}"))).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some(format!("{POST_LOGOUT_URI}?state=bye+%261").as_str()));
    assert!(page
        .set_cookies()
        .iter()
        .any(|cookie| cookie.starts_with("idp_session=;") || cookie.starts_with("idp_session=\"\"")));
    assert!(browser.authorize(&node, &AuthParams::demo("code")).await.is_login_form(), "the session ended");
    refresh(&node, &DEMO_AUTH, &tokens.str("refresh_token")).await.must_fail(400, "invalid_grant");
    must_be_dead(&node, &tokens.str("access_token")).await;
}

/// The issue's `logout.keep_offline_tokens = true`: offline refresh tokens survive the logout of their session,
/// while the grants without `offline_access` issued in it are revoked.
#[actix_web::test]
async fn logout_keeps_offline_tokens_when_configured() {
    let node = TestNode::start_with(|config| config.logout.keep_offline_tokens = true).await;
    let browser = Browser::new();
    let offline = must_session_tokens(&node, &browser).await;
    let (code, verifier) = must_code(&node, &browser, "openid").await;
    let online = must_redeem(&node, &code, Some(&verifier)).await;
    let query =
        logout_query(&[("id_token_hint", &online.str("id_token")), ("post_logout_redirect_uri", POST_LOGOUT_URI)]);
    assert_eq!(browser.get(&node.url(&format!("/logout?{query}"))).await.status, 303);
    must_be_dead(&node, &online.str("access_token")).await;
    let refreshed = refresh(&node, &DEMO_AUTH, &offline.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert!(browser.authorize(&node, &AuthParams::demo("code")).await.is_login_form());
}

/// RP-Initiated Logout 1.0 §3 and RFC 9700 §4.11 (open redirector): a `post_logout_redirect_uri` that is not
/// registered for the client shows an error page (400) and never redirects; the session stays.
#[actix_web::test]
async fn unregistered_post_logout_redirect_uri_is_an_error_page() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let tokens = must_session_tokens(&node, &browser).await;
    for uri in ["https://attacker.example/", "http://127.0.0.1:8081/other", "http://127.0.0.1:8081"] {
        let query = logout_query(&[
            ("id_token_hint", &tokens.str("id_token")),
            ("post_logout_redirect_uri", uri),
            ("state", "s"),
        ]);
        let page = browser.get(&node.url(&format!("/logout?{query}"))).await;
        assert_eq!(page.status, 400, "{uri}");
        assert!(page.location.is_none(), "{uri}: no redirect");
    }
    // Without a hint or client_id the URI cannot be checked against any client: refused too.
    let query = logout_query(&[("post_logout_redirect_uri", POST_LOGOUT_URI)]);
    assert_eq!(browser.get(&node.url(&format!("/logout?{query}"))).await.status, 400);
    must_still_be_signed_in(&node, &browser).await;
}

/// OIDC Core §3.1.3.7 step 6 and RFC 8725 §3.1: an `id_token_hint` whose `alg` is `none`, or signed by a key that
/// is not ours, or naming another issuer, is refused (400 page), never trusted to log anyone out or to pick a
/// redirect.
#[actix_web::test]
async fn forged_id_token_hints_are_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let tokens = must_session_tokens(&node, &browser).await;
    let (header, claims) = jwt_parts(&tokens.str("id_token"));
    let mut none_header = header.clone();
    none_header["alg"] = json!("none");
    let alg_none = unsigned_jwt(&none_header, &claims);
    let stranger = SigningKey::generate(Algorithm::RS256).unwrap().sign_jwt("JWT", &claims);
    let mut foreign_claims = claims.clone();
    foreign_claims["iss"] = json!("https://evil.example");
    let foreign_issuer = unsigned_jwt(&header, &foreign_claims);
    // Signed with the node's own current key: only the issuer is wrong.
    let own_key_foreign_issuer =
        node.state.keys.load().signer(Algorithm::RS256).expect("a current RS256 key").sign_jwt("JWT", &foreign_claims);
    let hints = [
        alg_none.as_str(),
        stranger.as_str(),
        foreign_issuer.as_str(),
        own_key_foreign_issuer.as_str(),
        "garbage",
        "a.b.c",
    ];
    for hint in hints {
        let query =
            logout_query(&[("id_token_hint", hint), ("post_logout_redirect_uri", POST_LOGOUT_URI), ("state", "s")]);
        let page = browser.get(&node.url(&format!("/logout?{query}"))).await;
        assert_eq!(page.status, 400, "{hint}");
        assert!(page.location.is_none());
    }
    must_still_be_signed_in(&node, &browser).await;
}

/// RP-Initiated Logout 1.0 §2 and §6 (logout CSRF): without a hint the OP asks the user to confirm; a GET alone
/// ends nothing; a POST of the confirmation form with its CSRF token and `decision=logout` ends the session; a
/// cancel or a missing token does not.
#[actix_web::test]
async fn logout_without_a_hint_asks_confirmation_and_the_csrf_post_ends_the_session() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let query = logout_query(&[("client_id", "demo"), ("post_logout_redirect_uri", POST_LOGOUT_URI), ("state", "s1")]);
    let confirm = browser.get(&node.url(&format!("/logout?{query}"))).await;
    assert_eq!(confirm.status, 200);
    assert_eq!(confirm.form_action().as_deref(), Some("/logout"));
    assert!(confirm.body.contains("value=\"logout\""));
    must_still_be_signed_in(&node, &browser).await;

    let fields = form_fields(&confirm.body);
    let mut form: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let without_csrf: Vec<(&str, &str)> =
        form.iter().copied().filter(|(name, _)| *name != "csrf").chain([("decision", "logout")]).collect();
    let refused = browser.post(&node.url("/logout"), &without_csrf).await;
    assert_eq!(refused.status, 200, "asks again");
    assert!(refused.location.is_none());
    let cancel: Vec<(&str, &str)> = form.iter().copied().chain([("decision", "cancel")]).collect();
    assert!(browser.post(&node.url("/logout"), &cancel).await.location.is_none());
    must_still_be_signed_in(&node, &browser).await;
    // Another browser's confirmation token does not fit this browser.
    let other = Browser::new();
    other.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let other_confirm = other.get(&node.url(&format!("/logout?{query}"))).await;
    let foreign_csrf = other_confirm.must_input("csrf");
    let foreign = browser.post(&node.url("/logout"), &[("csrf", &foreign_csrf), ("decision", "logout")]).await;
    assert!(foreign.location.is_none());
    must_still_be_signed_in(&node, &browser).await;

    form.push(("decision", "logout"));
    let done = browser.post(&node.url("/logout"), &form).await;
    assert_eq!(done.status, 303);
    assert_eq!(done.location.as_deref(), Some(format!("{POST_LOGOUT_URI}?state=s1").as_str()));
    assert!(browser.authorize(&node, &AuthParams::demo("code")).await.is_login_form());
}

/// Logout CSRF: a valid hint from another session (an attacker's own ID token for the same user) does not log
/// the victim's browser out silently; it asks for confirmation.
#[actix_web::test]
async fn hint_from_another_session_asks_confirmation() {
    let node = TestNode::start().await;
    let (victim, attacker) = (Browser::new(), Browser::new());
    victim.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let attacker_tokens = must_session_tokens(&node, &attacker).await;
    let query = logout_query(&[
        ("id_token_hint", &attacker_tokens.str("id_token")),
        ("post_logout_redirect_uri", POST_LOGOUT_URI),
    ]);
    let page = victim.get(&node.url(&format!("/logout?{query}"))).await;
    assert_eq!(page.status, 200, "a confirmation page");
    assert!(page.location.is_none());
    must_still_be_signed_in(&node, &victim).await;
}

/// RP-Initiated Logout 1.0 §2 with the revocation rule: a code issued in the session but not yet redeemed
/// dies with the session (its grant is revoked), so a code intercepted before logout is worthless after it.
#[actix_web::test]
async fn code_issued_before_logout_cannot_be_redeemed_after_it() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let tokens = must_session_tokens(&node, &browser).await;
    let (code, verifier) = must_code(&node, &browser, "openid").await;
    let query = logout_query(&[("id_token_hint", &tokens.str("id_token"))]);
    let page = browser.get(&node.url(&format!("/logout?{query}"))).await;
    assert_eq!(page.status, 200, "the logged-out page");
    redeem(&node, &code, Some(&verifier)).await.must_fail(400, "invalid_grant");
}

/// RFC 8725 §3.11 and OIDC Core §2 (an ID token's `aud` is the client): a JWT the key ring signed that is not an ID
/// token is no `id_token_hint`. The user's own access token (RFC 9068 `typ: at+jwt`, with `client_id` and `scope`)
/// and a `client_credentials` token are refused with an error page; nobody is logged out, nothing redirects.
#[actix_web::test]
async fn access_tokens_are_refused_as_id_token_hints() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let tokens = must_session_tokens(&node, &browser).await;
    let service_token = must_token(&node, &DEMO_AUTH, &[("grant_type", "client_credentials")]).await;
    // The access token's header relabelled as an ID token's: its claims still say what it is.
    let access_claims = jwt_parts(&tokens.str("access_token")).1;
    let relabelled =
        node.state.keys.load().signer(Algorithm::RS256).expect("a current RS256 key").sign_jwt("JWT", &access_claims);
    for hint in [tokens.str("access_token"), service_token.str("access_token"), relabelled] {
        let query =
            logout_query(&[("id_token_hint", &hint), ("post_logout_redirect_uri", POST_LOGOUT_URI), ("state", "s")]);
        let page = browser.get(&node.url(&format!("/logout?{query}"))).await;
        assert_eq!(page.status, 400, "{}", jwt_parts(&hint).1);
        assert!(page.location.is_none());
        let page = browser.get(&node.url(&format!("/logout?{}", logout_query(&[("id_token_hint", &hint)])))).await;
        assert_eq!(page.status, 400, "without a redirect URI too: {}", jwt_parts(&hint).1);
    }
    must_still_be_signed_in(&node, &browser).await;
    must_be_live(&node, &tokens.str("access_token")).await;
}

/// RP-Initiated Logout 1.0 §2 with SameSite=Lax session cookies: a logout form POSTed from the client's site
/// carries no cookie, so it cannot end the session itself. It answers 303 to `GET /logout` with the same
/// parameters (a top-level GET navigation carries Lax cookies), and that GET ends the session, revokes its refresh
/// tokens and then redirects to the client. A same-site POST, with the cookies, is handled at once.
#[actix_web::test]
async fn cross_site_logout_post_becomes_a_get_that_ends_the_session() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let tokens = must_session_tokens(&node, &browser).await;
    let id_token = tokens.str("id_token");
    let form = [("id_token_hint", id_token.as_str()), ("post_logout_redirect_uri", POST_LOGOUT_URI), ("state", "s 1")];
    let posted = browser.post_cross_site(&node.url("/logout"), &form).await;
    assert_eq!(posted.status, 303);
    let expected = node.url(&format!("/logout?{}", logout_query(&form)));
    assert_eq!(posted.location.as_deref(), Some(expected.as_str()));
    assert!(posted.set_cookies().is_empty(), "nothing is cleared before the session is known");
    must_still_be_signed_in(&node, &browser).await;

    let done = browser.get(&expected).await;
    assert_eq!(done.status, 303);
    assert_eq!(done.location.as_deref(), Some(format!("{POST_LOGOUT_URI}?state=s+1").as_str()));
    assert!(browser.authorize(&node, &AuthParams::demo("code")).await.is_login_form(), "the session ended");
    refresh(&node, &DEMO_AUTH, &tokens.str("refresh_token")).await.must_fail(400, "invalid_grant");
    must_be_dead(&node, &tokens.str("access_token")).await;

    // The same form posted with the browser's cookies (same site) ends the new session at once.
    let tokens = must_session_tokens(&node, &browser).await;
    let id_token = tokens.str("id_token");
    let form = [("id_token_hint", id_token.as_str()), ("post_logout_redirect_uri", POST_LOGOUT_URI)];
    let done = browser.post(&node.url("/logout"), &form).await;
    assert_eq!(done.location.as_deref(), Some(POST_LOGOUT_URI));
    refresh(&node, &DEMO_AUTH, &tokens.str("refresh_token")).await.must_fail(400, "invalid_grant");
}
