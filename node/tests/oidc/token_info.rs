//! Introspection (RFC 7662), revocation (RFC 7009) and userinfo (OIDC Core §5.3, RFC 6750).

use crate::client::*;
use crate::harness::*;
use idp_actors::jwt::Algorithm;
use idp_actors::keyring::keys::SigningKey;
use serde_json::json;

const OFFLINE: &str = "openid profile email offline_access";

fn other_app(config: &mut idp_node::config::Config) {
    let other = demo_like_client(config, "other-app", "RS256");
    config.clients.push(other);
}

/// RFC 7662 §2.1 and §4: the introspection endpoint requires client authentication (token scanning otherwise);
/// unauthenticated, public-client and wrong-secret callers get 401 `invalid_client`.
#[actix_web::test]
async fn introspection_requires_client_authentication() {
    let node = TestNode::start().await;
    let tokens = must_login_tokens(&node, "openid").await;
    let form = [("token", tokens.str("access_token"))];
    let form: Vec<(&str, &str)> = form.iter().map(|(name, value)| (*name, value.as_str())).collect();
    for auth in [ClientAuth::Nothing, ClientAuth::Public("demo-public"), ClientAuth::Basic("demo", "wrong")] {
        let reply = post_form(&node, "/introspect", &auth, &form).await;
        reply.must_fail(401, "invalid_client");
        assert!(reply.json.get("active").is_none(), "nothing about the token leaks");
    }
}

/// RFC 7662 §2.2: an active token is described (scope, client_id, sub, exp, iat, iss, token_type); anything else
/// is only `{"active": false}`; responses are not cached.
#[actix_web::test]
async fn introspection_describes_active_tokens_and_nothing_else() {
    let node = TestNode::start().await;
    let tokens = must_login_tokens(&node, OFFLINE).await;
    let access = introspect(&node, &tokens.str("access_token")).await;
    assert_eq!(access.json["active"], true);
    assert_eq!(access.json["token_type"], "Bearer");
    assert_eq!(access.json["client_id"], "demo");
    assert_eq!(access.json["sub"], "alice");
    assert_eq!(access.json["iss"], node.issuer.as_str());
    assert_eq!(access.json["scope"], OFFLINE);
    assert!(access.json["exp"].as_u64().unwrap() > node.now_secs());
    let refresh = introspect(&node, &tokens.str("refresh_token")).await;
    assert_eq!(refresh.json["active"], true);
    assert_eq!(refresh.json["token_type"], "refresh_token");
    assert_eq!(refresh.json["client_id"], "demo");
    let unknown = idp_proto::Handle::random(node.state.shard_count()).encode();
    for token in [unknown.as_str(), "garbage", "a.b.c", &tokens.str("id_token")] {
        assert_eq!(introspect(&node, token).await.json, json!({"active": false}), "{token}");
    }
    // An access token past its lifetime is inactive (RFC 7662 §2.2 `exp`).
    node.advance_secs(601);
    assert_eq!(introspect(&node, &tokens.str("access_token")).await.json, json!({"active": false}));
}

/// RFC 7009 §2.2: the endpoint answers 200 for tokens it does not know (invalid tokens cause no error), but still
/// authenticates the client (§2.1).
#[actix_web::test]
async fn revocation_answers_200_for_unknown_tokens_and_needs_a_client() {
    let node = TestNode::start().await;
    let unknown = idp_proto::Handle::random(node.state.shard_count()).encode();
    for token in [unknown.as_str(), "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let reply = post_form(&node, "/revoke", &DEMO_AUTH, &[("token", token)]).await;
        assert_eq!(reply.status, 200, "{token}: {}", reply.text);
    }
    post_form(&node, "/revoke", &ClientAuth::Nothing, &[("token", "garbage")]).await.must_fail(401, "invalid_client");
    post_form(&node, "/revoke", &DEMO_AUTH, &[]).await.must_fail(400, "invalid_request");
}

/// RFC 7009 §2.1: revoking a refresh token revokes the grant behind it, so its access tokens die with it at
/// `/userinfo` and `/introspect` at once, and it no longer refreshes.
#[actix_web::test]
async fn revoking_a_refresh_token_revokes_its_grant() {
    let node = TestNode::start().await;
    let tokens = must_login_tokens(&node, OFFLINE).await;
    let reply = post_form(
        &node,
        "/revoke",
        &DEMO_AUTH,
        &[("token", &tokens.str("refresh_token")), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(reply.status, 200);
    must_be_dead(&node, &tokens.str("access_token")).await;
    refresh(&node, &DEMO_AUTH, &tokens.str("refresh_token")).await.must_fail(400, "invalid_grant");
    assert!(!is_active(&node, &tokens.str("refresh_token")).await);
}

/// RFC 7009 §2: an access token can be revoked too: a user grant's token (through its grant) and a
/// `client_credentials` token (by its `jti`).
#[actix_web::test]
async fn revoking_access_tokens_kills_them_at_once() {
    let node = TestNode::start().await;
    let tokens = must_login_tokens(&node, "openid").await;
    post_form(&node, "/revoke", &DEMO_AUTH, &[("token", &tokens.str("access_token"))]).await;
    must_be_dead(&node, &tokens.str("access_token")).await;
    let machine = must_token(&node, &DEMO_AUTH, &[("grant_type", "client_credentials")]).await.str("access_token");
    assert!(is_active(&node, &machine).await);
    post_form(&node, "/revoke", &ClientAuth::Post(DEMO.0, DEMO.1), &[("token", &machine)]).await;
    assert!(!is_active(&node, &machine).await);
}

/// RFC 7009 §2.1: the server checks the token was issued to the revoking client; another client cannot revoke
/// (deny service to) someone else's tokens.
#[actix_web::test]
async fn another_client_cannot_revoke_a_token() {
    let node = TestNode::start_with(other_app).await;
    let tokens = must_login_tokens(&node, OFFLINE).await;
    let other = ClientAuth::Basic("other-app", "demo-secret");
    for token in [tokens.str("access_token"), tokens.str("refresh_token")] {
        let reply = post_form(&node, "/revoke", &other, &[("token", &token)]).await;
        assert!(reply.status.is_success() || reply.status.is_client_error(), "{}", reply.text);
    }
    must_be_live(&node, &tokens.str("access_token")).await;
    assert!(is_active(&node, &tokens.str("refresh_token")).await);
}

/// OIDC Core §5.3.1 and RFC 6750 §2.1-§2.2: userinfo answers GET and POST, with the Bearer token in the header or
/// in a form body; the claims follow the granted scopes (§5.4).
#[actix_web::test]
async fn userinfo_answers_get_and_post_with_header_or_body_token() {
    let node = TestNode::start().await;
    let access_token = must_login_tokens(&node, "openid email").await.str("access_token");
    let get = userinfo(&node, &access_token).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.json["sub"], "alice");
    assert_eq!(get.json["email"], "alice@example.com");
    assert!(get.json.get("name").is_none(), "no profile claims without the profile scope");
    let post_header = api().post(node.url("/userinfo")).bearer_auth(&access_token).send().await.unwrap();
    assert_eq!(post_header.status(), 200);
    let post_body = api().post(node.url("/userinfo")).form(&[("access_token", &access_token)]).send().await.unwrap();
    assert_eq!(post_body.status(), 200);
    let body: serde_json::Value = post_body.json().await.unwrap();
    assert_eq!(body, get.json);
}

/// RFC 6750 §2: a client must not send the token by more than one method; header and body together is
/// `invalid_request`. The URI query method (§2.3) is not offered (tokens in URLs leak), so it counts as no token.
#[actix_web::test]
async fn userinfo_refuses_two_token_methods_and_query_tokens() {
    let node = TestNode::start().await;
    let access_token = must_login_tokens(&node, "openid").await.str("access_token");
    let both = api()
        .post(node.url("/userinfo"))
        .bearer_auth(&access_token)
        .form(&[("access_token", &access_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    let in_query = api().get(node.url(&format!("/userinfo?access_token={access_token}"))).send().await.unwrap();
    assert_eq!(in_query.status(), 401);
    assert!(in_query.headers().get("www-authenticate").is_some());
}

/// OIDC Core §5.3.3 and RFC 6750 §3.1: a valid token without the `openid` scope (a `client_credentials` token)
/// gets 403 `insufficient_scope`, with the challenge naming it.
#[actix_web::test]
async fn userinfo_refuses_a_token_without_openid_with_insufficient_scope() {
    let node = TestNode::start().await;
    let machine = must_token(&node, &DEMO_AUTH, &[("grant_type", "client_credentials")]).await.str("access_token");
    let reply = userinfo(&node, &machine).await;
    reply.must_fail(403, "insufficient_scope");
    assert!(reply.header("www-authenticate").unwrap().contains("insufficient_scope"));
}

/// RFC 6750 §3.1 and RFC 9068 §4: missing, malformed, forged (`alg: none`, unknown key), expired tokens and ID
/// tokens presented as access tokens (token confusion: `typ` is not `at+jwt`) all get 401 with a Bearer challenge.
#[actix_web::test]
async fn userinfo_refuses_bad_tokens_with_a_bearer_challenge() {
    let node = TestNode::start().await;
    let tokens = must_login_tokens(&node, "openid").await;
    let (header, claims) = jwt_parts(&tokens.str("access_token"));
    let mut none_header = header.clone();
    none_header["alg"] = json!("none");
    let forged_none = unsigned_jwt(&none_header, &claims);
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    let forged_key = stranger.sign_jwt("at+jwt", &claims);
    let no_token = api().get(node.url("/userinfo")).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    assert!(no_token.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    for bad in ["garbage", "a.b.c", "....", forged_none.as_str(), forged_key.as_str(), &tokens.str("id_token")] {
        let reply = userinfo(&node, bad).await;
        reply.must_fail(401, "invalid_token");
        assert!(reply.header("www-authenticate").unwrap().contains("invalid_token"), "{bad}");
    }
    let basic = api().get(node.url("/userinfo")).basic_auth("demo", Some("demo-secret")).send().await.unwrap();
    assert_eq!(basic.status(), 401);
    node.advance_secs(601);
    userinfo(&node, &tokens.str("access_token")).await.must_fail(401, "invalid_token");
}

/// RFC 7662 §4 (token scanning) and the issue: a refresh token is described only to the client it was issued to;
/// another authenticated client learns only `active: false`.
#[actix_web::test]
async fn refresh_tokens_are_introspected_only_by_their_client() {
    let node = TestNode::start_with(other_app).await;
    let tokens = must_login_tokens(&node, OFFLINE).await;
    let reply = post_form(
        &node,
        "/introspect",
        &ClientAuth::Basic("other-app", "demo-secret"),
        &[("token", &tokens.str("refresh_token"))],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json, json!({"active": false}));
    assert!(is_active(&node, &tokens.str("refresh_token")).await);
}

/// RFC 9110 §11.1 (auth schemes are case-insensitive) with RFC 6750 §2.1: `BEARER` and `bearer` work as `Bearer`.
#[actix_web::test]
async fn bearer_scheme_is_case_insensitive() {
    let node = TestNode::start().await;
    let access_token = must_login_tokens(&node, "openid").await.str("access_token");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = api()
            .get(node.url("/userinfo"))
            .header("authorization", format!("{scheme} {access_token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
}
