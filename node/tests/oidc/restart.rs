//! State lives in the replica, not in the shard actors' memory (the "State" section, DESIGN.md invariants
//! I1, I2, I3 and I5): every shard actor is restarted at every step of a login, and the flow completes from the
//! replica alone; single-use rules still hold across restarts.

use crate::client::*;
use crate::harness::*;
use std::time::Duration;

/// I1/I5: restart every shard actor after `/authorize` (pending stored), after the login POST (session bound),
/// after the consent page, after the code is issued, after the token exchange and after each refresh: the login,
/// the consent, the code, the SSO session and the refresh family all come back from the replica.
#[actix_web::test]
async fn login_completes_from_the_replica_with_restarts_at_every_step() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let params = AuthParams::public(&challenge).set("scope", "openid email offline_access");
    let login = browser.authorize(&node, &params).await;
    assert!(login.is_login_form());
    node.restart_shard_actors().await;
    let posted = browser.submit_login(&node, &login, ALICE.0, ALICE.1).await;
    assert_eq!(posted.status, 303, "{}", posted.body);
    node.restart_shard_actors().await;
    let consent = browser.follow(&node, posted).await;
    assert!(consent.is_consent_form(), "{}", consent.body);
    node.restart_shard_actors().await;
    let callback = browser.follow(&node, browser.submit_consent(&node, &consent, "allow").await).await;
    let code = callback.must_param("code");
    node.restart_shard_actors().await;

    let form = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", &verifier),
    ];
    let public = ClientAuth::Public("demo-public");
    let tokens = must_token(&node, &public, &form).await;
    node.restart_shard_actors().await;
    must_be_live(&node, &tokens.str("access_token")).await;
    let mut refresh_token = tokens.str("refresh_token");
    for _ in 0..2 {
        let refreshed = refresh(&node, &public, &refresh_token).await;
        assert_eq!(refreshed.status, 200, "{}", refreshed.text);
        refresh_token = refreshed.str("refresh_token");
        node.restart_shard_actors().await;
        must_be_live(&node, &refreshed.str("access_token")).await;
    }
    // The SSO session and the consent were reloaded too: a new authorization is answered silently.
    browser.must_authorize_silently(&node, &params).await;
}

/// I2 and I3 across restarts: a code redeemed before a restart is refused after it (and the replay revokes its
/// tokens), a rotated refresh token reused after a restart revokes its family, and a consumed login form stays
/// consumed.
#[actix_web::test]
async fn single_use_rules_hold_across_restarts() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let (code, verifier) = must_code(&node, &browser, "openid offline_access").await;
    let tokens = must_redeem(&node, &code, Some(&verifier)).await;
    node.restart_shard_actors().await;
    redeem(&node, &code, Some(&verifier)).await.must_fail(400, "invalid_grant");
    node.restart_shard_actors().await;
    must_be_dead(&node, &tokens.str("access_token")).await;
    refresh(&node, &DEMO_AUTH, &tokens.str("refresh_token")).await.must_fail(400, "invalid_grant");

    let (code, verifier) = must_code(&node, &browser, "openid offline_access").await;
    let first = must_redeem(&node, &code, Some(&verifier)).await;
    let second = refresh(&node, &DEMO_AUTH, &first.str("refresh_token")).await;
    node.restart_shard_actors().await;
    refresh(&node, &DEMO_AUTH, &first.str("refresh_token")).await.must_fail(400, "invalid_grant");
    node.restart_shard_actors().await;
    refresh(&node, &DEMO_AUTH, &second.str("refresh_token")).await.must_fail(400, "invalid_grant");
    must_be_dead(&node, &second.str("access_token")).await;

    let other = Browser::new();
    let page = other.authorize(&node, &AuthParams::demo("code")).await;
    assert_eq!(other.submit_login(&node, &page, ALICE.0, ALICE.1).await.status, 303);
    node.restart_shard_actors().await;
    assert_eq!(other.submit_login(&node, &page, ALICE.0, ALICE.1).await.status, 400, "a replayed login POST");
}

/// DESIGN.md: failed-login counters live in a shard like any record, so a lockout survives a restart.
#[actix_web::test]
async fn login_lockout_survives_restarts() {
    let node = TestNode::start_with(|config| config.login.delay_step = Duration::from_millis(1)).await;
    let browser = Browser::new();
    let mut page = browser.authorize(&node, &AuthParams::demo("code")).await;
    for attempt in 0..10 {
        if attempt % 3 == 0 {
            node.restart_shard_actors().await;
        }
        page = browser.submit_login(&node, &page, "alice", "wrong").await;
        assert_eq!(page.status, 200);
    }
    node.restart_shard_actors().await;
    assert_eq!(browser.submit_login(&node, &page, ALICE.0, ALICE.1).await.status, 429);
}
