//! Authorization codes at the token endpoint (RFC 6749 §4.1.3, RFC 7636, RFC 9700 §2.1.1 and §4.5): single use
//! (invariant I2), short-lived, bound to the client, the redirect URI and the PKCE challenge.

use crate::client::*;
use crate::harness::*;

const OFFLINE: &str = "openid profile offline_access";

/// Invariant I2 and RFC 6749 §4.1.2 / §10.5: a code is redeemed at most once; a replay (an attacker who stole the
/// code from the front channel) gets `invalid_grant` and revokes every token issued from it, at once.
#[actix_web::test]
async fn replayed_code_is_refused_and_revokes_its_tokens() {
    let node = TestNode::start().await;
    let (code, verifier) = must_code(&node, &Browser::new(), OFFLINE).await;
    let tokens = must_redeem(&node, &code, Some(&verifier)).await;
    let (access_token, refresh_token) = (tokens.str("access_token"), tokens.str("refresh_token"));
    must_be_live(&node, &access_token).await;

    redeem(&node, &code, Some(&verifier)).await.must_fail(400, "invalid_grant");

    must_be_dead(&node, &access_token).await;
    refresh(&node, &DEMO_AUTH, &refresh_token).await.must_fail(400, "invalid_grant");
    assert!(!is_active(&node, &refresh_token).await);
}

/// RFC 6749 §4.1.2 and the 60 s bound: a code older than its lifetime is refused.
#[actix_web::test]
async fn expired_code_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (fresh_code, fresh_verifier) = must_code(&node, &browser, "openid").await;
    let (stale_code, stale_verifier) = must_code(&node, &browser, "openid").await;
    node.advance_secs(59);
    must_redeem(&node, &fresh_code, Some(&fresh_verifier)).await;
    node.advance_secs(2);
    redeem(&node, &stale_code, Some(&stale_verifier)).await.must_fail(400, "invalid_grant");
}

/// RFC 7636 §4.6: the verifier must hash to the challenge (an attacker with a stolen code lacks it); a missing
/// verifier when a challenge was sent is refused too.
#[actix_web::test]
async fn pkce_verifier_mismatch_or_absence_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (code, _) = must_code(&node, &browser, "openid").await;
    let (other_verifier, _) = pkce_pair();
    redeem(&node, &code, Some(&other_verifier)).await.must_fail(400, "invalid_grant");
    let (code, _) = must_code(&node, &browser, "openid").await;
    redeem(&node, &code, None).await.must_fail(400, "invalid_grant");
    let (code, _) = must_code(&node, &browser, "openid").await;
    redeem(&node, &code, Some("too-short")).await.must_fail(400, "invalid_grant");
}

/// RFC 9700 §2.1.1 (PKCE downgrade): a `code_verifier` for a code issued without a challenge is refused, so an
/// attacker cannot strip the challenge from the authorization request and still pass the token request.
#[actix_web::test]
async fn verifier_sent_without_a_challenge_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.must_authorize_and_login(&node, &AuthParams::demo("code")).await;
    let (verifier, _) = pkce_pair();
    redeem(&node, &page.must_param("code"), Some(&verifier)).await.must_fail(400, "invalid_grant");
}

/// RFC 6749 §4.1.3: `redirect_uri` at the token endpoint must be identical to the one of the authorization
/// request (code injection through another registered URI), and present when it was.
#[actix_web::test]
async fn redirect_uri_mismatch_at_the_token_endpoint_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (code, verifier) = must_code(&node, &browser, "openid").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", OTHER_REDIRECT_URI),
        ("code_verifier", &verifier),
    ];
    token(&node, &DEMO_AUTH, &form).await.must_fail(400, "invalid_grant");
    let (code, verifier) = must_code(&node, &browser, "openid").await;
    let form = [("grant_type", "authorization_code"), ("code", &code), ("code_verifier", &verifier)];
    token(&node, &DEMO_AUTH, &form).await.must_fail(400, "invalid_grant");
    let trailing_slash = format!("{REDIRECT_URI}/");
    let (code, verifier) = must_code(&node, &browser, "openid").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &trailing_slash),
        ("code_verifier", &verifier),
    ];
    token(&node, &DEMO_AUTH, &form).await.must_fail(400, "invalid_grant");
}

/// RFC 6749 §4.1.3 and §10.6: a code is bound to the client it was issued to; another client (confidential or
/// public) redeeming it gets `invalid_grant`.
#[actix_web::test]
async fn code_of_one_client_redeemed_by_another_is_refused() {
    let node = TestNode::start_with(|config| {
        let other = demo_like_client(config, "other-app", "RS256");
        config.clients.push(other);
    })
    .await;
    let browser = Browser::new();
    let (code, verifier) = must_code(&node, &browser, "openid").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", &verifier),
    ];
    token(&node, &ClientAuth::Basic("other-app", "demo-secret"), &form).await.must_fail(400, "invalid_grant");
    token(&node, &ClientAuth::Public("demo-public"), &form).await.must_fail(400, "invalid_grant");
}

/// RFC 6749 §5.2: unknown and malformed codes are `invalid_grant`; a missing code is `invalid_request`.
#[actix_web::test]
async fn unknown_or_malformed_codes_are_invalid_grants() {
    let node = TestNode::start().await;
    let unknown = idp_proto::Handle::random(node.state.shard_count()).encode();
    for code in [unknown.as_str(), "x", "%%%", "A".repeat(400).as_str(), "a.b.c"] {
        redeem(&node, code, None).await.must_fail(400, "invalid_grant");
    }
    token(&node, &DEMO_AUTH, &[("grant_type", "authorization_code"), ("redirect_uri", REDIRECT_URI)])
        .await
        .must_fail(400, "invalid_request");
}

/// RFC 7636 §4.4.1 and OAuth 2.1: a public client must use PKCE; without a challenge `demo-public` is refused at
/// `/authorize` (back to the client, never a code), and its code cannot be redeemed without the verifier.
#[actix_web::test]
async fn public_client_needs_pkce_at_authorize_and_token() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code").set("client_id", "demo-public");
    let page = browser.authorize(&node, &params).await;
    assert_eq!(page.param("error").as_deref(), Some("invalid_request"));
    assert_eq!(page.param("code"), None);

    let (verifier, challenge) = pkce_pair();
    let page = browser
        .must_authorize_and_login(&node, &AuthParams::public(&challenge).set("scope", "openid offline_access"))
        .await;
    let code = page.must_param("code");
    let without = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT_URI)];
    token(&node, &ClientAuth::Public("demo-public"), &without).await.must_fail(400, "invalid_grant");
    // The rightful redemption: public client, PKCE verifier, refresh token for offline_access after consent.
    let with = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", &verifier),
    ];
    let tokens = must_token(&node, &ClientAuth::Public("demo-public"), &with).await;
    let refreshed = refresh(&node, &ClientAuth::Public("demo-public"), &tokens.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
}

/// RFC 7636 §4.2 and RFC 9700 §2.1.1: the `plain` method (and a challenge without a method, which defaults to
/// `plain`) is refused; only S256 is offered, and a malformed challenge is refused too.
#[actix_web::test]
async fn plain_or_malformed_pkce_challenges_are_refused_at_authorize() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (_, challenge) = pkce_pair();
    let cases = [
        AuthParams::public(&challenge).set("code_challenge_method", "plain"),
        AuthParams::public(&challenge).without("code_challenge_method"),
        AuthParams::public(&challenge).set("code_challenge_method", "S512"),
        AuthParams::public("short").set("code_challenge_method", "S256"),
        AuthParams::public(&challenge).without("code_challenge"),
    ];
    for params in cases {
        let page = browser.authorize(&node, &params).await;
        assert!(page.is_response_to(REDIRECT_URI), "{params:?}");
        assert_eq!(page.param("error").as_deref(), Some("invalid_request"), "{params:?}");
        assert_eq!(page.param("state").as_deref(), Some("state-Ω &=?"));
        assert_eq!(page.param("code"), None);
    }
}

/// Invariant I2 under a race: two redemptions of one code sent at once (an attacker racing the client) succeed at
/// most once, and the loser's replay revokes what the winner got.
#[actix_web::test]
async fn concurrent_redemptions_of_one_code_succeed_at_most_once() {
    let node = TestNode::start().await;
    let (code, verifier) = must_code(&node, &Browser::new(), "openid").await;
    let (first, second) = futures::join!(redeem(&node, &code, Some(&verifier)), redeem(&node, &code, Some(&verifier)));
    let statuses = [first.status.as_u16(), second.status.as_u16()];
    assert!(statuses.contains(&400) && statuses.iter().all(|status| *status == 200 || *status == 400), "{statuses:?}");
    let winner = if first.status == 200 { first } else { second };
    must_be_dead(&node, &winner.str("access_token")).await;
}

/// RFC 6749 §4.1.2 with OAuth 2.0 Multiple Response Types: a code replay revokes every token issued from it,
/// including the access token that came through the front channel beside the code (`code token`).
#[actix_web::test]
async fn code_replay_revokes_the_front_channel_access_token_too() {
    let node = TestNode::start().await;
    let page = Browser::new().must_authorize_and_login(&node, &AuthParams::demo("code token")).await;
    let front_channel_token = page.must_param("access_token");
    must_be_live(&node, &front_channel_token).await;
    must_redeem(&node, &page.must_param("code"), None).await;
    redeem(&node, &page.must_param("code"), None).await.must_fail(400, "invalid_grant");
    must_be_dead(&node, &front_channel_token).await;
}

/// RFC 8707 §2: a `resource` registered for the client and named in the authorization request becomes the audience
/// of the access tokens of the grant; without it the audience is the issuer (RFC 9068 §4: never the client id).
#[actix_web::test]
async fn resource_at_authorize_becomes_the_access_token_audience() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code").set("resource", "https://api.example.com");
    let page = browser.must_authorize_and_login(&node, &params).await;
    let tokens = must_redeem(&node, &page.must_param("code"), None).await;
    assert_eq!(jwt_parts(&tokens.str("access_token")).1["aud"], "https://api.example.com");
    let page =
        browser.must_authorize_silently(&node, &AuthParams::demo("code").set("redirect_uri", OTHER_REDIRECT_URI)).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &page.must_param("code")),
        ("redirect_uri", OTHER_REDIRECT_URI),
    ];
    let tokens = must_token(&node, &DEMO_AUTH, &form).await;
    assert_eq!(jwt_parts(&tokens.str("access_token")).1["aud"], node.issuer.as_str());
}
