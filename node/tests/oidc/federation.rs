//! Federated login brokering, over the real protocol: a second in-process node is the upstream OpenID provider
//! (on `localhost`, so that its cookies and the broker's, on `127.0.0.1`, stay apart as they would for two
//! sites), configured at the broker both as an `oidc` upstream (discovery, ID token) and as an `oauth2` one
//! (token + userinfo, claim mapping). A browser with one cookie jar drives both.

use crate::client::*;
use crate::harness::*;
use idp_node::config::{Config, UpstreamConfig};
use openidconnect::core::CoreClient;
use openidconnect::{AuthorizationCode, ClientId, ClientSecret, Nonce, RedirectUrl, TokenResponse};
use reqwest::StatusCode;
use std::net::TcpListener;
use std::time::Duration;

const BROKER_SECRET: &str = "broker-secret";
/// Upstream ids configured at the broker.
const UPSTREAM_IDS: [&str; 5] = ["up", "up-email", "up-oauth2", "up-form-post", "up-closed"];

/// The broker and its upstream; `slow` is a listener that accepts connections and never answers.
struct Federated {
    upstream: TestNode,
    broker: TestNode,
    _slow: TcpListener,
}

fn upstream_config(id: &str, kind: &str, issuer: &str) -> UpstreamConfig {
    let text = match kind {
        "oidc" => format!(
            "id = \"{id}\"\nkind = \"oidc\"\nname = \"Upstream {id}\"\nissuer = \"{issuer}\"\nclient_id = \"broker\"\n\
             client_secret = \"{BROKER_SECRET}\"\ntimeout = \"2s\""
        ),
        _ => format!(
            "id = \"{id}\"\nkind = \"oauth2\"\nauthorize_url = \"{issuer}/authorize\"\ntoken_url = \"{issuer}/token\"\n\
             userinfo_url = \"{issuer}/userinfo\"\nclient_id = \"broker\"\nclient_secret = \"{BROKER_SECRET}\"\n\
             token_endpoint_auth_method = \"client_secret_post\"\nscopes = [\"openid\", \"profile\"]\n\
             claims = {{ subject = \"sub\", username = \"preferred_username\", name = \"name\" }}"
        ),
    };
    toml::from_str(&text).expect("an upstream config")
}

impl Federated {
    async fn start() -> Self {
        Self::start_with(|_| {}, |_, _| {}).await
    }

    /// `upstream_more` changes the upstream's config, `broker_more` the broker's (given the upstream's issuer).
    async fn start_with(
        upstream_more: impl FnOnce(&mut Config) + 'static,
        broker_more: impl FnOnce(&mut Config, &str) + 'static,
    ) -> Self {
        let broker_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let broker_issuer = format!("http://{}", broker_listener.local_addr().unwrap());
        let upstream_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream_issuer = format!("http://localhost:{}", upstream_listener.local_addr().unwrap().port());
        let slow = TcpListener::bind("127.0.0.1:0").unwrap();
        let slow_issuer = format!("http://{}", slow.local_addr().unwrap());
        // A port nobody listens on any more: connections are refused.
        let down_issuer = format!("http://{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
        let callbacks: Vec<String> = UPSTREAM_IDS
            .iter()
            .chain(["slow", "up-jwt", "slow-token", "up-email2"].iter())
            .map(|id| format!("{broker_issuer}/federation/{id}/callback"))
            .collect();
        let issuer = upstream_issuer.clone();
        let upstream = TestNode::start_on(upstream_listener, move |config: &mut Config| {
            config.issuer = issuer;
            let mut broker = demo_like_client(config, "broker", "RS256");
            broker.client_secret = Some(BROKER_SECRET.into());
            broker.token_endpoint_auth_method = "client_secret_basic".into();
            broker.redirect_uris = callbacks;
            config.clients.push(broker);
            upstream_more(config);
        })
        .await;
        let broker = TestNode::start_on(broker_listener, |config: &mut Config| {
            let mut email = upstream_config("up-email", "oidc", &upstream_issuer);
            email.link_by_email = true;
            let mut oauth2 = upstream_config("up-oauth2", "oauth2", &upstream_issuer);
            oauth2.token_endpoint_auth_method = "client_secret_post".into();
            let mut form_post = upstream_config("up-form-post", "oidc", &upstream_issuer);
            form_post.form_post = true;
            let mut closed = upstream_config("up-closed", "oidc", &upstream_issuer);
            closed.provision = false;
            let mut slow = upstream_config("slow", "oidc", &slow_issuer);
            slow.timeout = Duration::from_millis(300);
            // Answers the browser, then never answers the token request.
            let mut slow_token = upstream_config("slow-token", "oauth2", &upstream_issuer);
            slow_token.token_url = Some(format!("{slow_issuer}/token"));
            slow_token.timeout = Duration::from_millis(300);
            let down = upstream_config("down", "oidc", &down_issuer);
            config.upstreams = vec![
                upstream_config("up", "oidc", &upstream_issuer),
                email,
                oauth2,
                form_post,
                closed,
                slow,
                slow_token,
                down,
            ];
            broker_more(config, &upstream_issuer);
        })
        .await;
        Self { upstream, broker, _slow: slow }
    }

    /// Opens `/authorize` at the broker and follows the button of `upstream` to the upstream's authorization URL.
    async fn must_reach_upstream(&self, browser: &Browser, upstream: &str, params: &AuthParams) -> Page {
        let login = browser.authorize(&self.broker, params).await;
        assert!(login.is_login_form(), "the broker's login page: {}", login.body);
        let href = button_href(&login, upstream);
        let start = browser.get(&self.broker.url(&href)).await;
        assert_eq!(start.status, StatusCode::SEE_OTHER, "the start redirects to the upstream: {}", start.body);
        let location = start.location.clone().unwrap();
        assert!(location.starts_with(&self.upstream.issuer), "{location}");
        start
    }

    /// Logs alice in at the upstream from its authorization URL; the upstream's redirect to the broker's callback.
    async fn must_log_in_upstream(&self, browser: &Browser, to_upstream: &Page) -> Page {
        let login = browser.get(to_upstream.location.as_deref().unwrap()).await;
        if !login.is_login_form() {
            // The upstream's own session answers at once.
            return login;
        }
        browser.must_log_in(&self.upstream, &login).await
    }

    /// From the upstream's answer (a redirect to the callback) to the broker's answer to the relying party.
    async fn must_finish(&self, browser: &Browser, callback: &str) -> Page {
        assert!(callback.starts_with(&self.broker.issuer), "a redirect to the broker's callback: {callback}");
        let page = browser.get(callback).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "the callback {callback} signs in: {}", page.body);
        let page = browser.follow(&self.broker, page).await;
        assert!(page.is_response_to(REDIRECT_URI), "the broker answers the client: {} {}", page.status, page.body);
        page
    }

    /// A whole brokered login through `upstream`, answered to the relying party.
    async fn must_broker(&self, browser: &Browser, upstream: &str, params: &AuthParams) -> Page {
        let to_upstream = self.must_reach_upstream(browser, upstream, params).await;
        let answer = self.must_log_in_upstream(browser, &to_upstream).await;
        let Some(location) = answer.location.as_deref() else {
            panic!("a redirect to the broker: {} {}", answer.status, answer.body)
        };
        self.must_finish(browser, location).await
    }

    /// Redeems the code at the broker with the `openidconnect` RP and verifies the broker's ID token; its `sub`.
    async fn must_redeem(&self, page: &Page, nonce: &str) -> (String, Option<String>) {
        let metadata = must_discover(&self.broker).await;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(DEMO.0.into()),
            Some(ClientSecret::new(DEMO.1.into())),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
        let response = client
            .exchange_code(AuthorizationCode::new(page.must_param("code")))
            .unwrap()
            .request_async(&rp_http)
            .await
            .expect("the broker's code exchange");
        let id_token = response.id_token().expect("an ID token from the broker");
        let claims = id_token.claims(&client.id_token_verifier(), &Nonce::new(nonce.into())).expect("it verifies");
        assert_eq!(claims.issuer().as_str(), self.broker.issuer, "the broker's own token");
        let amr = claims.auth_method_refs().map(|amr| amr.iter().map(|value| value.to_string()).collect::<Vec<_>>());
        assert_eq!(amr, Some(vec!["fed".to_string()]));
        (claims.subject().to_string(), claims.email().map(|email| email.to_string()))
    }
}

/// The `href` of the login page's "Sign in with" button of `upstream`.
fn button_href(login: &Page, upstream: &str) -> String {
    let needle = format!("href=\"&#x2f;federation&#x2f;{upstream}&#x2f;start?");
    let start = login.body.find(&needle).unwrap_or_else(|| panic!("no button for {upstream}: {}", login.body)) + 6;
    let end = login.body[start..].find('"').unwrap() + start;
    unescape(&login.body[start..end])
}

/// A `href` of an `<a id="…">` in a page.
fn link(page: &Page, id: &str) -> String {
    let start =
        page.body.find(&format!("id=\"{id}\" href=\"")).unwrap_or_else(|| panic!("no {id} link: {}", page.body));
    let start = start + id.len() + 12;
    let end = page.body[start..].find('"').unwrap() + start;
    unescape(&page.body[start..end])
}

fn query_param(url: &str, name: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    url.query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned()).unwrap()
}

/// The full brokered login: the broker's login page shows the buttons, the upstream authenticates alice, the
/// broker provisions a local account just in time, and the relying party gets the broker's own ID token, verified
/// by the `openidconnect` RP. The upstream's tokens never reach it. A second login from another browser finds the
/// account by the upstream subject; the same browser then gets SSO without any upstream round trip.
#[actix_web::test]
async fn brokered_login_provisions_links_by_subject_and_reuses_the_session() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code");
    let login = browser.authorize(&federated.broker, &params).await;
    assert!(login.body.contains("Upstream up"), "the configured name: {}", login.body);
    let fields = form_fields(&login.body);
    let pending = &fields.iter().find(|(name, _)| name == "pending").expect("the login form's pending").1;
    let pending: String = url::form_urlencoded::byte_serialize(pending.as_bytes()).collect();
    for id in UPSTREAM_IDS {
        let href = button_href(&login, id);
        let expected = format!("/federation/{id}/start?pending={pending}&csrf=");
        assert!(href.starts_with(&expected), "{id}: {href} should start with {expected}");
    }
    let to_upstream = federated.must_reach_upstream(&browser, "up", &params).await;
    let upstream_url = to_upstream.location.clone().unwrap();
    assert_eq!(query_param(&upstream_url, "code_challenge_method"), "S256");
    assert_eq!(query_param(&upstream_url, "client_id"), "broker");
    assert!(!query_param(&upstream_url, "nonce").is_empty());
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let upstream_code = query_param(answer.location.as_deref().unwrap(), "code");
    let page = federated.must_finish(&browser, answer.location.as_deref().unwrap()).await;
    assert_eq!(page.must_param("state"), params.get("state").unwrap());
    let to_rp = page.location.clone().unwrap();
    assert!(!to_rp.contains(&upstream_code), "the upstream's code stays at the broker: {to_rp}");
    assert_ne!(page.must_param("code"), upstream_code);
    let (subject, email) = federated.must_redeem(&page, "nonce-1").await;
    assert!(subject.starts_with("up-"), "a provisioned account, not the upstream's subject: {subject}");
    assert_eq!(email.as_deref(), Some("alice@example.com"), "claims copied from the upstream");
    assert_ne!(subject, "alice", "email linking is off by default: the local alice is not taken over");

    // SSO: the broker's session answers at once, with no trip to the upstream.
    let silent = browser.must_authorize_silently(&federated.broker, &params).await;
    assert!(silent.param("code").is_some());

    // Another browser: the upstream account is found by its subject, no second account.
    let other = Browser::new();
    let page = federated.must_broker(&other, "up", &params).await;
    assert_eq!(federated.must_redeem(&page, "nonce-1").await.0, subject);
    let directory = federated.broker.state.directory();
    let user = directory.user_by_id(&subject).expect("the provisioned user");
    assert_eq!(user.links.len(), 1);
    assert!(!user.has_password(), "a provisioned user has no password");
    assert!(directory.user_by_link("up", "alice").is_some());
}

/// `link_by_email` on: the upstream's verified alice@example.com signs in as the local alice, who then holds the
/// upstream link beside her password; a second upstream with `link_by_email` adds a second link to the same user.
#[actix_web::test]
async fn email_linking_when_enabled_links_the_local_account() {
    let federated = Federated::start_with(
        |_| {},
        |config, issuer| {
            let mut second = upstream_config("up-email2", "oidc", issuer);
            second.link_by_email = true;
            config.upstreams.push(second);
        },
    )
    .await;
    let params = AuthParams::demo("code");
    let page = federated.must_broker(&Browser::new(), "up-email", &params).await;
    assert_eq!(federated.must_redeem(&page, "nonce-1").await.0, "alice");
    let page = federated.must_broker(&Browser::new(), "up-email2", &params).await;
    assert_eq!(federated.must_redeem(&page, "nonce-1").await.0, "alice");
    let directory = federated.broker.state.directory();
    let alice = directory.user_by_id("alice").unwrap();
    let upstreams: Vec<&str> = alice.links.iter().map(|link| link.upstream.as_str()).collect();
    assert_eq!(upstreams, ["up-email", "up-email2"]);
    assert!(alice.has_password(), "linking keeps the password");
    let mut disabled = alice.to_stored().to_config();
    drop(directory);
    // Disabled by an admin: no upstream signs her in any more, and nothing re-enables or re-links her.
    disabled.disabled = true;
    federated.broker.state.directory_store.update_user(disabled.clone()).await.unwrap();
    federated.broker.state.federation.refresh_directory().await.unwrap();
    let browser = Browser::new();
    let to_upstream = federated.must_reach_upstream(&browser, "up-email", &params).await;
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let refused = browser.get(answer.location.as_deref().unwrap()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let stored = federated.broker.state.directory_store.entries().await.unwrap().1;
    let alice = stored.iter().find(|user| user.id == "alice").unwrap();
    assert!(alice.disabled && alice.links.len() == 2, "unchanged by the refused sign-in");
    disabled.disabled = false;
    federated.broker.state.directory_store.update_user(disabled).await.unwrap();
    federated.broker.state.federation.refresh_directory().await.unwrap();
    // The password still works.
    let browser = Browser::new();
    let page = browser.must_authorize_and_login(&federated.broker, &params).await;
    assert!(page.param("code").is_some());
}

/// The `oauth2` kind: the token endpoint (client_secret_post), then the userinfo endpoint with the access token,
/// and the claim mapping; the login ends with the broker's own tokens.
#[actix_web::test]
async fn an_oauth2_upstream_signs_in_through_its_userinfo_endpoint() {
    let federated = Federated::start().await;
    let params = AuthParams::demo("code");
    let page = federated.must_broker(&Browser::new(), "up-oauth2", &params).await;
    let (subject, _) = federated.must_redeem(&page, "nonce-1").await;
    assert!(subject.starts_with("up-oauth2-"), "{subject}");
    let directory = federated.broker.state.directory();
    let user = directory.user_by_id(&subject).unwrap();
    assert_eq!(user.name.as_deref(), Some("Alice Liddell"), "mapped from userinfo's `name`");
    assert!(directory.user_by_link("up-oauth2", "alice").is_some());
}

/// `idp_hint` skips the login page: `/authorize` sends the browser straight to the upstream.
#[actix_web::test]
async fn idp_hint_goes_straight_to_the_upstream() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code").set("idp_hint", "up");
    let to_upstream = browser.authorize(&federated.broker, &params).await;
    assert_eq!(to_upstream.status, StatusCode::SEE_OTHER, "{}", to_upstream.body);
    assert!(to_upstream.location.as_deref().unwrap().starts_with(&federated.upstream.issuer));
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let page = federated.must_finish(&browser, answer.location.as_deref().unwrap()).await;
    federated.must_redeem(&page, "nonce-1").await;
    // An unknown hint shows the login page.
    let page = Browser::new().authorize(&federated.broker, &AuthParams::demo("code").set("idp_hint", "nope")).await;
    assert!(page.is_login_form());
}

/// Replayed, forged and cross-browser callbacks are refused; the rightful browser still finishes.
#[actix_web::test]
async fn forged_replayed_and_other_browser_callbacks_are_refused() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code");
    let to_upstream = federated.must_reach_upstream(&browser, "up", &params).await;
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let callback = answer.location.clone().unwrap();

    // Another browser presents the callback (login CSRF): refused, and the login is kept for its own browser.
    let attacker = Browser::new();
    let refused = attacker.get(&callback).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    // A forged state: refused.
    // (in one of the broker's shards, so that it decodes and only the record is unknown)
    let shards = federated.broker.state.shard_count();
    let forged = callback.replace(&query_param(&callback, "state"), &idp_proto::Handle::random(shards).encode());
    assert_eq!(browser.get(&forged).await.status, StatusCode::BAD_REQUEST);
    let no_state = format!("{}/federation/up/callback?code=abc", federated.broker.issuer);
    assert_eq!(browser.get(&no_state).await.status, StatusCode::BAD_REQUEST);
    // The state of one upstream at another's callback: refused.
    let mixed = callback.replace("/federation/up/", "/federation/up-email/");
    assert_eq!(browser.get(&mixed).await.status, StatusCode::BAD_REQUEST);

    // RFC 9207 §2.4: the upstream announces `iss` in its responses, so an answer without one is refused.
    let to_upstream = federated.must_reach_upstream(&browser, "up", &params).await;
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let mut stripped = url::Url::parse(answer.location.as_deref().unwrap()).unwrap();
    let pairs: Vec<(String, String)> =
        stripped.query_pairs().filter(|(name, _)| name != "iss").map(|(n, v)| (n.into(), v.into())).collect();
    stripped.query_pairs_mut().clear().extend_pairs(pairs);
    let refused = browser.get(stripped.as_str()).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "an answer without iss: {}", refused.body);

    // Mixing it up spoiled that login; a fresh one completes, and its replay is refused.
    let to_upstream = federated.must_reach_upstream(&browser, "up", &params).await;
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let callback = answer.location.clone().unwrap();
    federated.must_finish(&browser, &callback).await;
    let replayed = browser.get(&callback).await;
    assert_eq!(replayed.status, StatusCode::BAD_REQUEST, "a replayed callback: {}", replayed.body);
}

/// An upstream that accepts connections and never answers: after the timeout, a page with a retry link; its
/// "back to the application" link gives the relying party `temporarily_unavailable`.
#[actix_web::test]
async fn a_silent_upstream_times_out_with_a_retry_page_and_temporarily_unavailable() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code");
    let login = browser.authorize(&federated.broker, &params).await;
    let started = std::time::Instant::now();
    let page = browser.get(&federated.broker.url(&button_href(&login, "slow"))).await;
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by the upstream's timeout");
    assert_eq!(page.status, StatusCode::GATEWAY_TIMEOUT, "{}", page.body);
    assert!(link(&page, "retry").starts_with("/federation/slow/start?"));
    let back = browser.get(&federated.broker.url(&link(&page, "cancel"))).await;
    assert!(back.is_response_to(REDIRECT_URI));
    assert_eq!(back.must_param("error"), "temporarily_unavailable");
    assert_eq!(back.must_param("state"), params.get("state").unwrap());
}

/// The upstream answers with an error (the user refused there: `access_denied`; or `server_error`:
/// `temporarily_unavailable`), or names another issuer (RFC 9207 mix-up): a page with a retry link, and the error
/// for the relying party; retrying afterwards still works.
#[actix_web::test]
async fn upstream_errors_give_access_denied_and_a_working_retry() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code");
    let to_upstream = federated.must_reach_upstream(&browser, "up", &params).await;
    let state = query_param(to_upstream.location.as_deref().unwrap(), "state");
    let callback = format!("{}/federation/up/callback?error=access_denied&state={state}", federated.broker.issuer);
    let page = browser.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(page.body.contains("access_denied"));
    assert!(page.headers.get("retry-after").is_none());

    // The upstream's own "try later" (RFC 6749 §4.1.2.1) is `temporarily_unavailable`, with Retry-After.
    let retry = browser.get(&federated.broker.url(&link(&page, "retry"))).await;
    let state = query_param(retry.location.as_deref().unwrap(), "state");
    let callback = format!("{}/federation/up/callback?error=server_error&state={state}", federated.broker.issuer);
    let page = browser.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(page.body.contains("<code>temporarily_unavailable</code>"), "{}", page.body);
    assert_eq!(page.headers.get("retry-after").unwrap(), "5");

    // Retry: a new trip to the upstream; this time its answer names another issuer.
    let retry = browser.get(&federated.broker.url(&link(&page, "retry"))).await;
    assert_eq!(retry.status, StatusCode::SEE_OTHER);
    let answer = federated.must_log_in_upstream(&browser, &retry).await;
    let mut mixed_up = url::Url::parse(answer.location.as_deref().unwrap()).unwrap();
    let pairs: Vec<(String, String)> = mixed_up
        .query_pairs()
        .map(|(name, value)| {
            (name.to_string(), if name == "iss" { "http://evil.example".into() } else { value.into() })
        })
        .collect();
    assert!(pairs.iter().any(|(name, _)| name == "iss"), "the upstream names itself (RFC 9207)");
    mixed_up.query_pairs_mut().clear().extend_pairs(pairs);
    let mixed_up = mixed_up.to_string();
    let page = browser.get(&mixed_up).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    let back = browser.get(&federated.broker.url(&link(&page, "cancel"))).await;
    assert_eq!(back.must_param("error"), "access_denied");
    // The pending authorization is used up: the cancel link does nothing twice.
    let again = browser.get(&federated.broker.url(&link(&page, "cancel"))).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
}

/// Provisioning off and no linked account: refused with `access_denied`.
#[actix_web::test]
async fn without_provisioning_an_unlinked_user_is_refused() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    let to_upstream = federated.must_reach_upstream(&browser, "up-closed", &AuthParams::demo("code")).await;
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let page = browser.get(answer.location.as_deref().unwrap()).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "the broker refuses, not the upstream: {}", page.body);
    assert!(page.body.contains("no account here"), "{}", page.body);
    assert!(!page.body.contains("id=\"retry\""), "trying again would be refused again: {}", page.body);
    let back = browser.get(&federated.broker.url(&link(&page, "cancel"))).await;
    assert_eq!(back.must_param("error"), "access_denied");
}

/// A relying party's demand for a fresh login goes upstream: `prompt=login` and `max_age` are sent to an `oidc`
/// upstream, which then asks for the password again although its own session would have answered; an `oauth2`
/// upstream cannot be asked, so the demand is refused with `login_required` instead of answered from its session.
#[actix_web::test]
async fn prompt_login_and_max_age_reach_the_upstream_or_are_refused() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    federated.must_broker(&browser, "up", &AuthParams::demo("code")).await;

    let params = AuthParams::demo("code").set("prompt", "login").set("max_age", "600").set("login_hint", "alice");
    let to_upstream = federated.must_reach_upstream(&browser, "up", &params).await;
    let location = to_upstream.location.clone().unwrap();
    assert_eq!(query_param(&location, "prompt"), "login");
    assert_eq!(query_param(&location, "max_age"), "600");
    assert_eq!(query_param(&location, "login_hint"), "alice");
    let upstream_page = browser.get(&location).await;
    assert!(upstream_page.is_login_form(), "the upstream asks again despite its session: {}", upstream_page.body);
    let answer = browser.must_log_in(&federated.upstream, &upstream_page).await;
    let page = federated.must_finish(&browser, answer.location.as_deref().unwrap()).await;
    assert!(page.param("code").is_some());

    let login = browser.authorize(&federated.broker, &params).await;
    let start = browser.get(&federated.broker.url(&button_href(&login, "up-oauth2"))).await;
    assert_eq!(start.status, StatusCode::FORBIDDEN, "{}", start.body);
    assert!(!start.body.contains("id=\"retry\""), "{}", start.body);
    let back = browser.get(&federated.broker.url(&link(&start, "cancel"))).await;
    assert_eq!(back.must_param("error"), "login_required");
}

/// `form_post` from the upstream is a cross-site POST without the broker's SameSite=Lax cookies: the callback
/// answers with a page that posts the same fields again from the broker's origin, with the cookies; a POST that
/// comes without cookies a second time is refused.
#[actix_web::test]
async fn a_form_post_callback_is_relayed_through_the_brokers_own_origin() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    let to_upstream = federated.must_reach_upstream(&browser, "up-form-post", &AuthParams::demo("code")).await;
    assert_eq!(query_param(to_upstream.location.as_deref().unwrap(), "response_mode"), "form_post");
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let action = answer.form_action().expect("the upstream's form_post page");
    assert!(action.starts_with(&federated.broker.issuer), "{action}");
    let fields = answer.response_params();
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let relay = browser.post_cross_site(&action, &pairs).await;
    assert_eq!(relay.status, StatusCode::OK);
    assert_eq!(relay.form_action().as_deref(), Some(action.as_str()), "posts back to the callback");
    let relayed = relay.response_params();
    assert!(relayed.contains(&("relayed".to_string(), "1".to_string())));
    let relayed_pairs: Vec<(&str, &str)> =
        relayed.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    // Without cookies again: refused (and the login is not spent).
    let refused = browser.post_cross_site(&action, &relayed_pairs).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    // Same-origin, with the cookies: signed in.
    let page = browser.post(&action, &relayed_pairs).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = browser.follow(&federated.broker, page).await;
    assert!(page.is_response_to(REDIRECT_URI));
    federated.must_redeem(&page, "nonce-1").await;
}

/// OIDC Core §10.1.1: the upstream rotates its signing key twice (the new signing key was not in the JWKS the
/// broker cached at its first sign-in); the broker fetches the JWKS again on the unknown `kid` and the next
/// sign-in succeeds.
#[actix_web::test]
async fn an_upstream_key_rotation_is_followed_by_refetching_its_jwks() {
    let federated = Federated::start_with(|config| config.keys.publish_ahead = Duration::ZERO, |_, _| {}).await;
    let params = AuthParams::demo("code");
    let first = federated.must_broker(&Browser::new(), "up", &params).await;
    let (subject, _) = federated.must_redeem(&first, "nonce-1").await;
    let ring = federated.upstream.state.key_ring.clone().expect("the embedded node's key ring");
    for _ in 0..2 {
        ring.send(idp_actors::keyring::RotateKeys).await.unwrap().expect("the upstream rotates");
    }
    let second = federated.must_broker(&Browser::new(), "up", &params).await;
    assert_eq!(federated.must_redeem(&second, "nonce-1").await.0, subject);
}

/// `private_key_jwt` toward the upstream (RFC 7523): the broker signs a client assertion with its key file; the
/// upstream verifies it against the registered public key.
#[actix_web::test]
async fn the_broker_authenticates_to_the_upstream_with_private_key_jwt() {
    use idp_actors::jwt::Algorithm;
    use idp_actors::keyring::keys::SigningKey;
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, key.to_pkcs8().unwrap().expose())
    );
    let dir = std::env::temp_dir().join(format!("idp-fed-{}", idp_proto::RecordId::random().to_base64()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_path = dir.join("broker-key.pem");
    std::fs::write(&key_path, pem).unwrap();
    // A generated key's `kid` is its RFC 7638 thumbprint: what the broker puts in the assertion by default.
    let jwk = key.public_jwk();
    let federated = Federated::start_with(
        move |config| {
            let mut client = config.clients.iter().find(|client| client.client_id == "broker").unwrap().clone();
            client.client_id = "broker-jwt".into();
            client.client_secret = None;
            client.token_endpoint_auth_method = "private_key_jwt".into();
            client.jwks = Some(serde_json::json!({ "keys": [jwk] }));
            config.clients.push(client);
        },
        move |config, issuer| {
            let mut upstream = upstream_config("up-jwt", "oidc", issuer);
            upstream.client_id = "broker-jwt".into();
            upstream.client_secret = None;
            upstream.token_endpoint_auth_method = "private_key_jwt".into();
            upstream.private_key_file = Some(key_path);
            config.upstreams.push(upstream);
        },
    )
    .await;
    let page = federated.must_broker(&Browser::new(), "up-jwt", &AuthParams::demo("code")).await;
    let (subject, _) = federated.must_redeem(&page, "nonce-1").await;
    assert!(subject.starts_with("up-jwt-"), "{subject}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Figures for `docs/benchmarks.md` (not a check): brokered logins per second with the upstream on this machine,
/// and the latency a brokered login adds to a direct login at the upstream (each login a new browser: the password
/// form at the upstream, then the broker's callback). Run:
/// `cargo test --release -p idp-node --test oidc federation_figures -- --ignored --nocapture`.
#[actix_web::test]
#[ignore = "prints figures; run by hand"]
async fn federation_figures() {
    let federated = Federated::start().await;
    let params = AuthParams::demo("code");
    let rounds = 200;
    let (mut direct, mut brokered, mut hop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = std::time::Instant::now();
        let upstream_params = AuthParams::demo("code")
            .set("client_id", "broker")
            .set("redirect_uri", &format!("{}/federation/up/callback", federated.broker.issuer));
        let page = Browser::new().must_authorize_and_login(&federated.upstream, &upstream_params).await;
        assert!(page.location.is_some());
        direct.push(started.elapsed());
        // A brokered login, with the time spent at the upstream (its login page and form) apart: the rest is the
        // broker's own share (its login page, the start, the callback with the code exchange, the resume).
        let browser = Browser::new();
        let started = std::time::Instant::now();
        let to_upstream = federated.must_reach_upstream(&browser, "up", &params).await;
        let at_upstream = std::time::Instant::now();
        let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
        let upstream_share = at_upstream.elapsed();
        let page = federated.must_finish(&browser, answer.location.as_deref().unwrap()).await;
        assert!(page.param("code").is_some());
        let total = started.elapsed();
        brokered.push(total);
        hop.push(total - upstream_share);
    }
    let (direct_p50, direct_p99) = percentiles(&mut direct);
    let (brokered_p50, brokered_p99) = percentiles(&mut brokered);
    println!("figure: direct login at the upstream: p50 {direct_p50:?} p99 {direct_p99:?} ({rounds} sequential)");
    println!("figure: brokered login: p50 {brokered_p50:?} p99 {brokered_p99:?} ({rounds} sequential)");
    let (hop_p50, hop_p99) = percentiles(&mut hop);
    println!("figure: the broker's share of a brokered login (all but the upstream's pages): p50 {hop_p50:?} p99 {hop_p99:?}");
    // Throughput of re-authentication through the broker: `prompt=login` makes the broker ask again and is passed
    // on to the upstream, which asks for the password again (argon2 there), so every round is a full trip through
    // the upstream's password form and the callback.
    let again = AuthParams::demo("code").set("prompt", "login");
    for concurrency in [1, 4, 8] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let started = std::time::Instant::now();
        let workers = (0..concurrency).map(|_| async {
            let mut browser = Browser::new();
            federated.must_broker(&browser, "up", &params).await;
            let mut done = 0u32;
            while std::time::Instant::now() < deadline && done < 10_000 {
                // The test clock stands still, so no grant of the upstream session ever expires: a fresh browser
                // before the session holds its maximum of live grants (512).
                if done % 400 == 399 {
                    browser = Browser::new();
                }
                federated.must_broker(&browser, "up", &again).await;
                done += 1;
            }
            done
        });
        let total: u32 = futures::future::join_all(workers).await.into_iter().sum();
        let rate = f64::from(total) / started.elapsed().as_secs_f64();
        println!(
            "figure: {concurrency} concurrent browsers: {rate:.0} brokered logins/s ({total} in 5 s, prompt=login)"
        );
    }
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |fraction: f64| samples[((samples.len() as f64 * fraction) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

/// An upstream that answers the browser but never the token request: the callback gives up after the timeout
/// with a retry page (504), and the relying party gets `temporarily_unavailable`. An upstream that refuses
/// connections: 502, `temporarily_unavailable` too.
#[actix_web::test]
async fn a_stalled_token_endpoint_and_a_refused_connection_are_temporarily_unavailable() {
    let federated = Federated::start().await;
    let browser = Browser::new();
    let params = AuthParams::demo("code");
    let to_upstream = federated.must_reach_upstream(&browser, "slow-token", &params).await;
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let page = browser.get(answer.location.as_deref().unwrap()).await;
    assert_eq!(page.status, StatusCode::GATEWAY_TIMEOUT, "{}", page.body);
    assert_eq!(page.header("retry-after"), Some("5"));
    let back = browser.get(&federated.broker.url(&link(&page, "cancel"))).await;
    assert_eq!(back.must_param("error"), "temporarily_unavailable");

    let login = browser.authorize(&federated.broker, &params).await;
    let page = browser.get(&federated.broker.url(&button_href(&login, "down"))).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    let back = browser.get(&federated.broker.url(&link(&page, "cancel"))).await;
    assert_eq!(back.must_param("error"), "temporarily_unavailable");
}

/// An ID token the upstream signed but that fails validation (here: already expired, the upstream's ID token
/// lifetime being zero) is refused: a page, and `access_denied` for the relying party.
#[actix_web::test]
async fn an_invalid_upstream_id_token_is_refused_with_access_denied() {
    let federated = Federated::start_with(|config| config.tokens.id_token_ttl = Duration::ZERO, |_, _| {}).await;
    let browser = Browser::new();
    let to_upstream = federated.must_reach_upstream(&browser, "up", &AuthParams::demo("code")).await;
    let answer = federated.must_log_in_upstream(&browser, &to_upstream).await;
    let page = browser.get(answer.location.as_deref().unwrap()).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(page.body.contains("gave an invalid answer"), "{}", page.body);
    let back = browser.get(&federated.broker.url(&link(&page, "cancel"))).await;
    assert_eq!(back.must_param("error"), "access_denied");
    assert!(federated.broker.state.directory().user_by_link("up", "alice").is_none(), "nobody was provisioned");
}

/// An upstream that no config file declares, created through the admin API of a running broker: its button
/// appears on the login page at once and a brokered login through it works; deleted, it is offered no more.
#[actix_web::test]
async fn an_upstream_created_through_the_admin_api_signs_users_in() {
    let federated = Federated::start_with(
        |_| {},
        |config, _| {
            config.upstreams.retain(|upstream| upstream.id != "up");
            crate::admin_api::add_machine_clients(config);
        },
    )
    .await;
    let params = AuthParams::demo("code");
    let login = Browser::new().authorize(&federated.broker, &params).await;
    assert!(!login.body.contains("&#x2f;federation&#x2f;up&#x2f;start"), "not configured yet: {}", login.body);

    let (admin_url, handle) = crate::admin_api::serve_admin_api(&federated.broker);
    let (ops, ops_secret) = crate::admin_api::OPS;
    let token = must_token(
        &federated.broker,
        &ClientAuth::Basic(ops, ops_secret),
        &[("grant_type", "client_credentials"), ("scope", "idp:admin")],
    )
    .await
    .str("access_token");
    let body = serde_json::to_value(upstream_config("up", "oidc", &federated.upstream.issuer)).unwrap();
    let created =
        api().post(format!("{admin_url}/admin/upstreams")).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(!created.text().await.unwrap().contains(BROKER_SECRET));

    let browser = Browser::new();
    let page = federated.must_broker(&browser, "up", &params).await;
    let (subject, _) = federated.must_redeem(&page, "nonce-1").await;
    assert!(subject.starts_with("up-"), "a provisioned account: {subject}");
    assert!(federated.broker.state.directory().user_by_link("up", "alice").is_some());

    let deleted = api().delete(format!("{admin_url}/admin/upstreams/up")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let login = Browser::new().authorize(&federated.broker, &params).await;
    assert!(login.is_login_form(), "{}", login.body);
    assert!(!login.body.contains("&#x2f;federation&#x2f;up&#x2f;start"), "deleted: {}", login.body);
    assert!(login.body.contains("&#x2f;federation&#x2f;up-email&#x2f;start"), "the others stay: {}", login.body);
    handle.stop(false).await;
}
