//! The login form: CSRF bound to the browser, generic failures (no user enumeration), throttling per username,
//! and a successful POST accepted once.

use crate::client::*;
use crate::harness::*;
use std::time::Duration;

/// A node whose throttling delays are a millisecond, so ten failures take no time.
async fn fast_throttle_node() -> TestNode {
    TestNode::start_with(|config| config.login.delay_step = Duration::from_millis(1)).await
}

/// The alert paragraph of a login page, if any.
fn alert(page: &Page) -> Option<String> {
    let start = page.body.find("role=\"alert\"")?;
    let text = &page.body[start..];
    let end = text.find("</p>")?;
    Some(text[text.find('>')? + 1..end].trim().to_string())
}

/// The login page: a form posting to `/login` with inputs `username` and `password`, and hidden `csrf`
/// and `pending`; the page sets the browser-binding cookie its CSRF token is tied to.
#[actix_web::test]
async fn login_page_has_the_credential_inputs_and_hidden_csrf_and_pending() {
    let node = TestNode::start().await;
    let page = Browser::new().authorize(&node, &AuthParams::demo("code").set("login_hint", "alice")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.form_action().as_deref(), Some("/login"));
    assert!(page.body.contains("name=\"username\"") && page.body.contains("name=\"password\""));
    assert!(page.body.contains("type=\"password\""));
    for hidden in ["csrf", "pending"] {
        assert!(page.body.contains(&format!("type=\"hidden\" name=\"{hidden}\"")), "{hidden}");
        assert!(!page.must_input(hidden).is_empty());
    }
    assert_eq!(page.input("username").as_deref(), Some("alice"), "login_hint prefills the username");
    assert!(page.set_cookies().iter().any(|cookie| cookie.starts_with("idp_browser=")));
}

/// Login CSRF (RFC 6749 §10.12, RFC 9700 §4.4.1.8): a login POST without the browser cookie the CSRF token is
/// bound to is refused with 403, even with a genuine token and pending handle.
#[actix_web::test]
async fn login_post_without_the_browser_cookie_is_forbidden() {
    let node = TestNode::start().await;
    let page = Browser::new().authorize(&node, &AuthParams::demo("code")).await;
    let form = [
        ("username", ALICE.0),
        ("password", ALICE.1),
        ("csrf", &page.must_input("csrf")),
        ("pending", &page.must_input("pending")),
    ];
    let response = api().post(node.url("/login")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("location").is_none());
}

/// Login CSRF: another browser's CSRF token (or another browser's whole form) is refused with 403: a token is
/// valid only with the cookie of the browser it was issued to, and only for its pending authorization.
#[actix_web::test]
async fn login_post_with_another_browsers_csrf_token_is_forbidden() {
    let node = TestNode::start().await;
    let (victim, attacker) = (Browser::new(), Browser::new());
    let victim_page = victim.authorize(&node, &AuthParams::demo("code")).await;
    let attacker_page = attacker.authorize(&node, &AuthParams::demo("code")).await;
    let mixed = [
        ("username", ALICE.0),
        ("password", ALICE.1),
        ("csrf", &attacker_page.must_input("csrf")),
        ("pending", &victim_page.must_input("pending")),
    ];
    assert_eq!(victim.post(&node.url("/login"), &mixed).await.status, 403);
    let foreign = victim.submit_login(&node, &attacker_page, ALICE.0, ALICE.1).await;
    assert_eq!(foreign.status, 403);
    // The same browser's token for another pending authorization does not fit either.
    let second_page = victim.authorize(&node, &AuthParams::demo("code")).await;
    let crossed = [
        ("username", ALICE.0),
        ("password", ALICE.1),
        ("csrf", &second_page.must_input("csrf")),
        ("pending", &victim_page.must_input("pending")),
    ];
    assert_eq!(victim.post(&node.url("/login"), &crossed).await.status, 403);
    // The genuine form still works.
    assert_eq!(victim.submit_login(&node, &victim_page, ALICE.0, ALICE.1).await.status, 303);
}

/// OWASP authentication guidance / no user enumeration: a wrong password and an unknown user re-show the form
/// with the same generic message and status; the form can then be used to log in.
#[actix_web::test]
async fn wrong_password_and_unknown_user_get_the_same_generic_message() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("code")).await;
    let wrong_password = browser.submit_login(&node, &page, "alice", "not-her-password").await;
    let unknown_user = browser.submit_login(&node, &wrong_password, "mallory", "not-her-password").await;
    let missing = browser.submit_login(&node, &unknown_user, "alice", "").await;
    for failed in [&wrong_password, &unknown_user, &missing] {
        assert_eq!(failed.status, 200);
        assert!(failed.is_login_form());
        assert_eq!(alert(failed).as_deref(), Some("Incorrect username or password."));
    }
    assert_eq!(
        wrong_password.body.replace("alice", "mallory").replace(&wrong_password.must_input("csrf"), "-"),
        unknown_user.body.replace(&unknown_user.must_input("csrf"), "-")
    );
    let page = browser.must_log_in(&node, &missing).await;
    assert!(page.param("code").is_some());
}

/// Online password guessing (RFC 6749 §10.10, OWASP): after `max_failures` (10) failures for a username, existing
/// or not, further attempts are refused with 429 and "try again later", even with the right password; the lockout
/// ends after its time.
#[actix_web::test]
async fn throttling_locks_a_username_after_ten_failures() {
    let node = fast_throttle_node().await;
    let browser = Browser::new();
    for username in ["alice", "nobody-at-all"] {
        let mut page = browser.authorize(&node, &AuthParams::demo("code")).await;
        for attempt in 1..=10 {
            page = browser.submit_login(&node, &page, username, "wrong-password").await;
            assert_eq!(page.status, 200, "{username} attempt {attempt}");
        }
        // Case does not dodge the counter.
        let locked = browser.submit_login(&node, &page, &username.to_uppercase(), "alice-password").await;
        assert_eq!(locked.status, 429, "{username}");
        let message = alert(&locked).unwrap_or_default().to_lowercase();
        assert_eq!(message, "too many attempts, try again later.", "{message}");
        let retry_after: u64 = locked.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=15 * 60).contains(&retry_after), "Retry-After within the lockout: {retry_after}");
        assert!(locked.location.is_none(), "no code while locked");
    }
    // Another username is not affected.
    let other = Browser::new();
    let page = other.authorize(&node, &AuthParams::demo("code")).await;
    assert_eq!(other.submit_login(&node, &page, "carol", "x").await.status, 200);
    node.advance_secs(15 * 60 + 1);
    let page = browser.authorize(&node, &AuthParams::demo("code")).await;
    assert!(browser.must_log_in(&node, &page).await.param("code").is_some(), "the lockout ends");
}

/// The throttling rule: a success resets the failure counter, so 9 failures, a success, then 9 more
/// failures do not lock the account.
#[actix_web::test]
async fn successful_login_resets_the_failure_counter() {
    let node = fast_throttle_node().await;
    for _ in 0..2 {
        let browser = Browser::new();
        let mut page = browser.authorize(&node, &AuthParams::demo("code")).await;
        for _ in 0..9 {
            page = browser.submit_login(&node, &page, "alice", "wrong-password").await;
            assert_eq!(page.status, 200);
        }
        assert!(browser.must_log_in(&node, &page).await.param("code").is_some());
    }
}

/// The issue: a replayed successful login POST yields no second code (the pending authorization moves past the
/// login stage once), before or after the first one was finished.
#[actix_web::test]
async fn replayed_successful_login_post_yields_no_second_code() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("code")).await;
    let first = browser.submit_login(&node, &page, ALICE.0, ALICE.1).await;
    assert_eq!(first.status, 303);
    let replay_before = browser.submit_login(&node, &page, ALICE.0, ALICE.1).await;
    assert_eq!(replay_before.status, 400, "{}", replay_before.body);
    let resume_location = first.location.clone().unwrap();
    let callback = browser.follow(&node, first).await;
    assert!(callback.param("code").is_some());
    let replay_after = browser.submit_login(&node, &page, ALICE.0, ALICE.1).await;
    assert_eq!(replay_after.status, 400);
    assert!(replay_after.location.is_none());
    // Resuming the finished authorization again gives nothing either.
    let resume = browser.get(&resume_location).await;
    assert!(resume.status.is_client_error() && resume.location.is_none(), "{}", resume.status);
}

/// Session fixation / login CSRF (RFC 9700 §4.4.1.8): the resume address after a login only works in the browser
/// whose session authenticated; anyone else who learns it is refused (403) and gets no code.
#[actix_web::test]
async fn resume_address_in_another_browser_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("code")).await;
    let posted = browser.submit_login(&node, &page, ALICE.0, ALICE.1).await;
    let location = posted.location.clone().unwrap();
    let stolen = Browser::new().get(&location).await;
    assert_eq!(stolen.status, 403);
    assert!(stolen.param("code").is_none());
    assert!(browser.follow(&node, posted).await.param("code").is_some());
}

/// A pending authorization expires (`tokens.pending_ttl`, 15 min): a login after that is refused with a page
/// telling the user to start again, not a code.
#[actix_web::test]
async fn login_after_the_pending_authorization_expired_is_refused() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("code")).await;
    node.advance_secs(16 * 60);
    let posted = browser.submit_login(&node, &page, ALICE.0, ALICE.1).await;
    assert_eq!(posted.status, 400);
    assert!(posted.location.is_none());
}

/// OWASP XSS: a hostile `login_hint` is escaped in the login form, never executed.
#[actix_web::test]
async fn hostile_login_hint_is_escaped() {
    let node = TestNode::start().await;
    let hostile = "\"><script>alert(1)</script>";
    let page = Browser::new().authorize(&node, &AuthParams::demo("code").set("login_hint", hostile)).await;
    assert!(page.is_login_form());
    assert!(!page.body.contains("<script>alert"));
    assert_eq!(page.input("username").as_deref(), Some(hostile));
}

/// Consent CSRF (RFC 6749 §10.12): the consent POST needs the CSRF token of this browser and the session the
/// pending authorization was authenticated in; otherwise 403 and no code.
#[actix_web::test]
async fn consent_post_needs_this_browsers_csrf_token_and_session() {
    let node = TestNode::start().await;
    let (victim, attacker) = (Browser::new(), Browser::new());
    let (_, challenge) = pkce_pair();
    let login = victim.authorize(&node, &AuthParams::public(&challenge)).await;
    let consent = victim.must_log_in(&node, &login).await;
    assert!(consent.is_consent_form());
    // The attacker's browser has no cookie of the victim: refused even with the genuine form.
    let stolen = attacker.submit_consent(&node, &consent, "allow").await;
    assert_eq!(stolen.status, 403);
    assert!(stolen.location.is_none());
    // The attacker logs in too and posts the victim's pending handle with the attacker's own token.
    let attacker_login = attacker.authorize(&node, &AuthParams::public(&challenge)).await;
    let attacker_consent = attacker.must_log_in(&node, &attacker_login).await;
    let mixed = [
        ("decision", "allow"),
        ("csrf", &attacker_consent.must_input("csrf")),
        ("pending", &consent.must_input("pending")),
    ];
    assert_eq!(attacker.post(&node.url("/consent"), &mixed).await.status, 403);
    // A missing decision is not an allow.
    let undecided = [("csrf", consent.must_input("csrf")), ("pending", consent.must_input("pending"))];
    let undecided: Vec<(&str, &str)> = undecided.iter().map(|(name, value)| (*name, value.as_str())).collect();
    assert_eq!(victim.post(&node.url("/consent"), &undecided).await.status, 400);
    let allowed = victim.submit_consent(&node, &consent, "allow").await;
    assert!(allowed.param("code").is_some());
}

/// The throttling: after `delay_after` (3) consecutive failures, each further attempt is delayed by at
/// least `delay_step` before its answer (a lower bound only: the server's own delay, no test sleep).
#[actix_web::test]
async fn attempts_after_a_few_failures_are_delayed() {
    let step = Duration::from_millis(300);
    let node = TestNode::start_with(|config| config.login.delay_step = step).await;
    let browser = Browser::new();
    let mut page = browser.authorize(&node, &AuthParams::demo("code")).await;
    for _ in 0..3 {
        page = browser.submit_login(&node, &page, "alice", "wrong").await;
    }
    let started = std::time::Instant::now();
    let fourth = browser.submit_login(&node, &page, "alice", "wrong").await;
    assert_eq!(fourth.status, 200);
    assert!(started.elapsed() >= step, "the fourth attempt took {:?}", started.elapsed());
}

/// The single-use login: the same successful form posted twice at once (a double submit, or an attacker
/// racing the user) binds the pending authorization once; only one of the two answers moves on.
#[actix_web::test]
async fn concurrent_successful_login_posts_move_on_once() {
    let node = TestNode::start().await;
    let browser = Browser::new();
    let page = browser.authorize(&node, &AuthParams::demo("code")).await;
    let (one, two) = futures::join!(
        browser.submit_login(&node, &page, ALICE.0, ALICE.1),
        browser.submit_login(&node, &page, ALICE.0, ALICE.1)
    );
    let mut statuses = [one.status.as_u16(), two.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [303, 400]);
}
