//! Refresh tokens (RFC 6749 §6, RFC 9700 §4.14.2, OIDC Core §11-§12): issued only with `offline_access`, rotated
//! on every use, a reuse revokes the whole family (invariant I3), no grace window, scope narrowing only.

use crate::client::*;
use crate::harness::*;

const OFFLINE: &str = "openid profile email offline_access";

/// OIDC Core §11: a refresh token (offline access) is issued only when `offline_access` was asked and granted;
/// the first-party `demo` client gets it without a consent page.
#[actix_web::test]
async fn refresh_token_is_issued_only_with_offline_access() {
    let node = TestNode::start().await;
    let online = must_login_tokens(&node, "openid profile").await;
    assert!(online.json.get("refresh_token").is_none(), "no refresh token without offline_access");
    let offline = must_login_tokens(&node, OFFLINE).await;
    let refresh_token = offline.str("refresh_token");
    assert!(offline.str("scope").split(' ').any(|scope| scope == "offline_access"));
    must_token(&node, &DEMO_AUTH, &[("grant_type", "refresh_token"), ("refresh_token", &refresh_token)]).await;
}

/// RFC 9700 §4.14.2 (refresh token rotation): every use returns a new refresh token and a new access token; the
/// refreshed ID token keeps the original `sub` and `auth_time` (OIDC Core §12.2).
#[actix_web::test]
async fn refresh_token_rotates_on_every_use() {
    let node = TestNode::start().await;
    let metadata = must_discover(&node).await;
    let first = must_login_tokens(&node, OFFLINE).await;
    let original_auth_time = jwt_parts(&first.str("id_token")).1["auth_time"].clone();
    let mut refresh_token = first.str("refresh_token");
    let mut seen = vec![refresh_token.clone()];
    for _ in 0..3 {
        node.advance_secs(5);
        let reply = refresh(&node, &DEMO_AUTH, &refresh_token).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        refresh_token = reply.str("refresh_token");
        assert!(!seen.contains(&refresh_token), "a new refresh token on every use");
        seen.push(refresh_token.clone());
        must_be_live(&node, &reply.str("access_token")).await;
        let with = Companions { access_token: Some(&reply.str("access_token")), ..Companions::default() };
        let claims = must_verify_id_token(&node, &metadata, "demo", "RS256", &reply.str("id_token"), &with);
        assert_eq!(claims.subject().as_str(), "alice");
        assert_eq!(jwt_parts(&reply.str("id_token")).1["auth_time"], original_auth_time);
    }
}

/// Invariant I3, RFC 9700 §4.14.2 and RFC 6749 §10.4: a rotated refresh token presented again (stolen and raced)
/// is refused with `invalid_grant` at once, with no grace window (no clock movement here), and the whole family
/// is revoked: the newest refresh token is refused too, and every access token of the family fails at `/userinfo`
/// (401) and `/introspect` (`active: false`) immediately.
#[actix_web::test]
async fn reused_refresh_token_revokes_the_whole_family_at_once() {
    let node = TestNode::start().await;
    let first = must_login_tokens(&node, OFFLINE).await;
    let (old_refresh, first_access) = (first.str("refresh_token"), first.str("access_token"));
    let second = refresh(&node, &DEMO_AUTH, &old_refresh).await;
    let (new_refresh, second_access) = (second.str("refresh_token"), second.str("access_token"));
    must_be_live(&node, &second_access).await;
    assert!(is_active(&node, &new_refresh).await);

    refresh(&node, &DEMO_AUTH, &old_refresh).await.must_fail(400, "invalid_grant");

    refresh(&node, &DEMO_AUTH, &new_refresh).await.must_fail(400, "invalid_grant");
    must_be_dead(&node, &first_access).await;
    must_be_dead(&node, &second_access).await;
    assert!(!is_active(&node, &new_refresh).await);
    assert!(!is_active(&node, &old_refresh).await);
}

/// RFC 6749 §6: the scope of a refresh request may narrow the grant but never widen it (`invalid_scope`); the
/// grant itself keeps its scope for later refreshes.
#[actix_web::test]
async fn refresh_may_narrow_the_scope_but_never_widen_it() {
    let node = TestNode::start().await;
    let first = must_login_tokens(&node, OFFLINE).await;
    let narrow_form =
        [("grant_type", "refresh_token"), ("refresh_token", &first.str("refresh_token")), ("scope", "openid")];
    let narrow = must_token(&node, &DEMO_AUTH, &narrow_form).await;
    assert_eq!(narrow.str("scope"), "openid");
    assert_eq!(jwt_parts(&narrow.str("access_token")).1["scope"], "openid");
    let claims = userinfo(&node, &narrow.str("access_token")).await;
    assert_eq!(claims.status, 200);
    assert!(claims.json.get("email").is_none(), "no email claim without the email scope");

    let widen_form =
        [("grant_type", "refresh_token"), ("refresh_token", &narrow.str("refresh_token")), ("scope", "openid admin")];
    token(&node, &DEMO_AUTH, &widen_form).await.must_fail(400, "invalid_scope");
    // A refused widening does not use the token up; without a scope the grant's full scope comes back.
    let full = must_token(
        &node,
        &DEMO_AUTH,
        &[("grant_type", "refresh_token"), ("refresh_token", &narrow.str("refresh_token"))],
    )
    .await;
    assert_eq!(full.str("scope"), "openid profile email offline_access");
}

/// RFC 6749 §6 and §10.4: a refresh token is bound to the client it was issued to; another client presenting it
/// (even an authenticated one) gets `invalid_grant`.
#[actix_web::test]
async fn refresh_token_of_one_client_is_refused_to_another() {
    let node = TestNode::start_with(|config| {
        let other = demo_like_client(config, "other-app", "RS256");
        config.clients.push(other);
    })
    .await;
    let first = must_login_tokens(&node, OFFLINE).await;
    let stolen = first.str("refresh_token");
    refresh(&node, &ClientAuth::Basic("other-app", "demo-secret"), &stolen).await.must_fail(400, "invalid_grant");
    refresh(&node, &ClientAuth::Public("demo-public"), &stolen).await.must_fail(400, "invalid_grant");
    // The rightful client still refreshes.
    assert_eq!(refresh(&node, &DEMO_AUTH, &stolen).await.status, 200);
}

/// RFC 6749 §5.2: an unknown, malformed or expired refresh token is `invalid_grant`.
#[actix_web::test]
async fn unknown_malformed_or_expired_refresh_tokens_are_invalid_grants() {
    let node = TestNode::start().await;
    let unknown = idp_proto::Handle::random(node.state.shard_count()).encode();
    for garbage in [unknown.as_str(), "not-a-handle", "AAAA", "a.b.c"] {
        refresh(&node, &DEMO_AUTH, garbage).await.must_fail(400, "invalid_grant");
    }
    token(&node, &DEMO_AUTH, &[("grant_type", "refresh_token")]).await.must_fail(400, "invalid_request");
    let first = must_login_tokens(&node, OFFLINE).await;
    node.advance_secs(31 * 86_400);
    refresh(&node, &DEMO_AUTH, &first.str("refresh_token")).await.must_fail(400, "invalid_grant");
}

/// Invariant I3 under a race: one refresh token presented twice at once yields at most one new token; the loser
/// counts as a reuse and revokes the family, so the winner's new refresh token is refused too.
#[actix_web::test]
async fn concurrent_uses_of_one_refresh_token_succeed_at_most_once() {
    let node = TestNode::start().await;
    let first = must_login_tokens(&node, OFFLINE).await;
    let refresh_token = first.str("refresh_token");
    let (one, two) =
        futures::join!(refresh(&node, &DEMO_AUTH, &refresh_token), refresh(&node, &DEMO_AUTH, &refresh_token));
    let statuses = [one.status.as_u16(), two.status.as_u16()];
    assert!(statuses.contains(&400) && statuses.iter().all(|status| *status == 200 || *status == 400), "{statuses:?}");
    let winner = if one.status == 200 { one } else { two };
    refresh(&node, &DEMO_AUTH, &winner.str("refresh_token")).await.must_fail(400, "invalid_grant");
}

/// An access token dies with its grant, so it is never issued to outlive it: refreshed one minute before the
/// family expires, the new access token (10 min by default) expires with the family, and `expires_in` says so.
#[actix_web::test]
async fn refreshed_access_tokens_never_outlive_their_grant() {
    let node =
        TestNode::start_with(|config| config.tokens.refresh_token_ttl = std::time::Duration::from_secs(3600)).await;
    let first = must_login_tokens(&node, OFFLINE).await;
    let issued_at = jwt_parts(&first.str("access_token")).1["iat"].as_u64().unwrap();
    node.advance_secs(3600 - 60);
    let reply = refresh(&node, &DEMO_AUTH, &first.str("refresh_token")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let expires_in = reply.json["expires_in"].as_u64().unwrap();
    assert!(expires_in <= 60, "expires_in {expires_in} passes the grant's expiry");
    let exp = jwt_parts(&reply.str("access_token")).1["exp"].as_u64().unwrap();
    assert!(exp <= issued_at + 3600 + 1, "exp {exp} passes the grant's expiry {}", issued_at + 3600);
    must_be_live(&node, &reply.str("access_token")).await;
}
