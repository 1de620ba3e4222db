//! Happy paths through the `openidconnect` relying party: the code flow with PKCE, and ID tokens of every signing
//! algorithm verified against the served JWKS.

use crate::client::*;
use crate::harness::*;
use openidconnect::core::{CoreClient, CoreResponseType, CoreUserInfoClaims};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

/// Discovery, code flow with PKCE, ID token verified against the JWKS, userinfo: all by the reference RP.
#[actix_web::test]
async fn code_flow_with_pkce_through_the_openidconnect_relying_party() {
    let node = TestNode::start().await;
    let metadata = must_discover(&node).await;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("demo".into()),
        Some(ClientSecret::new("demo-secret".into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize_url, csrf_state, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();

    let browser = Browser::new();
    let login = browser.get(authorize_url.as_str()).await;
    assert!(login.is_login_form());
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
    assert!(token_response.refresh_token().is_none(), "no refresh token without offline_access");

    let userinfo: CoreUserInfoClaims = client
        .user_info(token_response.access_token().clone(), None)
        .unwrap()
        .request_async(&rp_http)
        .await
        .expect("userinfo");
    assert_eq!(userinfo.subject().as_str(), "alice");
    assert_eq!(userinfo.email_verified(), Some(true));
}

/// OIDC Core §3.1.3.7 step 6-7 and DESIGN.md key ring: ID tokens signed RS256 (the default), ES256 and EdDSA (per
/// client `id_token_signed_response_alg`) all verify with the relying party against the JWKS, from the token
/// endpoint and from the authorization endpoint (hybrid flow, with `c_hash` and `at_hash` computed with SHA-256 or,
/// for Ed25519, SHA-512).
#[actix_web::test]
async fn id_tokens_of_every_algorithm_verify_with_the_relying_party() {
    let node = TestNode::start_with(|config| {
        let es256 = demo_like_client(config, "demo-es256", "ES256");
        let eddsa = demo_like_client(config, "demo-eddsa", "EdDSA");
        config.clients.extend([es256, eddsa]);
    })
    .await;
    let metadata = must_discover(&node).await;
    let browser = Browser::new();
    for (index, (client_id, alg)) in
        [("demo", "RS256"), ("demo-es256", "ES256"), ("demo-eddsa", "EdDSA")].into_iter().enumerate()
    {
        // Token endpoint: code flow through the RP client, with its verifier restricted to the client's alg.
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(client_id.into()),
            Some(ClientSecret::new(DEMO.1.into())),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, _, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .url();
        let page = browser.get(url.as_str()).await;
        let page = if index == 0 { browser.must_log_in(&node, &page).await } else { page };
        let code = page.must_param("code");
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&rp_http)
            .await
            .unwrap();
        let id_token = tokens.id_token().unwrap();
        let verifier = client.id_token_verifier().set_allowed_algs([core_alg(alg)]);
        let claims = id_token.claims(&verifier, &nonce).unwrap_or_else(|error| panic!("{alg} ID token: {error}"));
        assert_eq!(claims.subject().as_str(), "alice");
        let (header, _) = jwt_parts(&id_token.to_string());
        assert_eq!(header["alg"], alg);
        // The access token is an RFC 9068 JWT signed by the key ring; userinfo accepts it.
        assert_eq!(userinfo(&node, tokens.access_token().secret()).await.status, 200);

        // Authorization endpoint: `code id_token token`, verified with c_hash and at_hash.
        let params = AuthParams::demo("code id_token token").set("client_id", client_id);
        let page = browser.must_authorize_silently(&node, &params).await;
        let with = Companions {
            nonce: Some("nonce-1"),
            code: Some(&page.must_param("code")),
            access_token: Some(&page.must_param("access_token")),
        };
        let claims = must_verify_id_token(&node, &metadata, client_id, alg, &page.must_param("id_token"), &with);
        assert_eq!(claims.audiences().len(), 1);
        assert_eq!(claims.authorized_party().map(|azp| azp.as_str()), Some(client_id));
    }
}
