//! Happy paths: the code flow through the `openidconnect` relying party, every response type and mode.

use crate::harness::*;
use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType, CoreUserInfoClaims};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

/// Discovery, code flow with PKCE, ID token verified against the JWKS, userinfo: all by the reference RP.
#[actix_web::test]
async fn code_flow_with_pkce_through_the_openidconnect_relying_party() {
    let node = TestNode::start().await;
    let issuer = IssuerUrl::new(node.issuer.clone()).unwrap();
    let metadata = CoreProviderMetadata::discover_async(issuer, &rp_http).await.expect("discovery");
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new("demo".into()), Some(ClientSecret::new("demo-secret".into())))
        .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize_url, csrf_state, nonce) = client
        .authorize_url(AuthenticationFlow::<CoreResponseType>::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();

    let browser = Browser::new();
    let login = browser.get(authorize_url.as_str()).await;
    assert_eq!(login.status, 200);
    let page = browser.submit_login(&node, &login, ALICE.0, ALICE.1).await;
    assert_eq!(page.status, 303, "a successful credential POST answers 303");
    let callback = browser.follow(&node, page).await;
    assert!(callback.location.as_deref().unwrap().starts_with(REDIRECT_URI));
    assert_eq!(callback.must_param("state"), *csrf_state.secret());
    assert_eq!(callback.must_param("iss"), node.issuer, "RFC 9207 iss");

    let token_response = client
        .exchange_code(AuthorizationCode::new(callback.must_param("code")))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&rp_http)
        .await
        .expect("code exchange");
    let id_token = token_response.id_token().expect("an ID token");
    let claims = id_token.claims(&client.id_token_verifier(), &nonce).expect("ID token verifies against the JWKS");
    assert_eq!(claims.subject().as_str(), "alice");
    assert_eq!(claims.email().map(|email| email.as_str()), Some("alice@example.com"));
    assert!(claims.auth_time().is_some());

    let userinfo: CoreUserInfoClaims = client
        .user_info(token_response.access_token().clone(), None)
        .unwrap()
        .request_async(&rp_http)
        .await
        .expect("userinfo");
    assert_eq!(userinfo.subject().as_str(), "alice");
    assert_eq!(userinfo.email_verified(), Some(true));
}
