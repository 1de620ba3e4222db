use super::branding::{brand_css, Rgb};
use super::*;
use actix_web::http::{header, StatusCode};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const HOSTILE: &str = "<script>alert(1)</script>";
const ESCAPED_HOSTILE: &str = "&lt;script&gt;alert(1)&lt;&#x2f;script&gt;";

fn must_build(branding: &BrandingConfig) -> Pages {
    Pages::new(branding).expect("pages")
}

fn default_pages() -> Pages {
    must_build(&BrandingConfig::default())
}

/// A folder under the system temporary folder, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("idp-pages-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_templates_dir(dir: &Path) -> BrandingConfig {
    BrandingConfig { templates_dir: Some(dir.to_path_buf()), ..BrandingConfig::default() }
}

fn login_view(upstreams: &[UpstreamButton]) -> LoginView<'_> {
    LoginView {
        lang: "en",
        client_name: "Demo App",
        pending: "pending-handle",
        csrf: "csrf-token",
        username: None,
        error: None,
        locked: false,
        upstreams,
    }
}

/// Every page, rendered with `hostile` in each text the caller passes.
fn every_page(pages: &Pages, hostile: &str) -> Vec<(&'static str, String)> {
    let scopes = ["openid".to_owned(), hostile.to_owned()];
    let fields = [("state".to_owned(), hostile.to_owned()), (hostile.to_owned(), "value".to_owned())];
    let upstreams = [UpstreamButton { name: hostile.into(), icon_url: Some(hostile.into()), href: hostile.into() }];
    let login = LoginView {
        client_name: hostile,
        username: Some(hostile),
        error: Some(hostile),
        pending: hostile,
        csrf: hostile,
        ..login_view(&upstreams)
    };
    let consent = ConsentView {
        lang: hostile,
        client_name: hostile,
        username: hostile,
        scopes: &scopes,
        pending: hostile,
        csrf: hostile,
    };
    let error = ErrorView { lang: "en", title: hostile, message: hostile, error_code: Some(hostile) };
    let logout = LogoutConfirmView { lang: "en", csrf: hostile, client_name: Some(hostile), fields: &fields };
    vec![
        ("login", pages.login(&login)),
        ("consent", pages.consent(&consent)),
        ("error", pages.error(&error)),
        ("form_post", pages.form_post(&FormPostView { action: hostile, fields: &fields })),
        ("logout_confirm", pages.logout_confirm(&logout)),
        ("logged_out", pages.logged_out(&LoggedOutView { lang: "en", return_url: Some(hostile) })),
    ]
}

#[test]
fn hostile_input_is_escaped_on_every_page() {
    let pages = default_pages();
    for (page, html) in every_page(&pages, HOSTILE) {
        assert!(!html.contains(HOSTILE), "{page} printed raw input: {html}");
        assert!(html.contains(ESCAPED_HOSTILE), "{page} lost the input: {html}");
    }
    let quoted = every_page(&pages, "\" onfocus=\"alert(1)");
    for (page, html) in quoted {
        assert!(!html.contains("\" onfocus"), "{page} let a quote out of an attribute: {html}");
    }
}

#[test]
fn no_page_has_inline_style_or_script() {
    let pages = default_pages();
    for (page, html) in every_page(&pages, "plain") {
        assert!(!html.contains("style="), "{page} has a style attribute");
        assert!(!html.contains("<style"), "{page} has a style element");
        for (index, _) in html.match_indices("<script") {
            let tag = &html[index..index + html[index..].find('>').expect("end of tag")];
            assert!(tag.contains(" src=\"/static/"), "{page} has an inline script: {tag}");
        }
        assert!(!html.contains("http://") && !html.contains("https://"), "{page} refers to another origin");
        assert!(html.starts_with("<!doctype html>\n<html lang=\"en\">"), "{page} has no lang: {html}");
        assert!(html.contains("name=\"viewport\""), "{page} has no viewport");
    }
}

#[test]
fn login_form_has_the_exact_inputs() {
    let upstreams = [UpstreamButton { name: "Acme".into(), icon_url: None, href: "/upstream/acme".into() }];
    let html = default_pages().login(&LoginView { username: Some("alice"), ..login_view(&upstreams) });
    for expected in [
        "<form method=\"post\" action=\"/login\"",
        "<label for=\"username\">",
        "<input id=\"username\" name=\"username\" type=\"text\" value=\"alice\" autocomplete=\"username\"",
        "<label for=\"password\">",
        "<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\"",
        "<input type=\"hidden\" name=\"csrf\" value=\"csrf-token\">",
        "<input type=\"hidden\" name=\"pending\" value=\"pending-handle\">",
        "<strong>Demo App</strong>",
        "href=\"&#x2f;upstream&#x2f;acme\"",
        "Sign in with Acme",
    ] {
        assert!(html.contains(expected), "missing {expected:?} in {html}");
    }
    assert!(!html.contains("role=\"alert\""));
}

#[test]
fn login_shows_an_error_or_the_lockout_as_an_alert() {
    let pages = default_pages();
    let failed = pages.login(&LoginView { error: Some(LOGIN_FAILED_MESSAGE), ..login_view(&[]) });
    assert!(failed.contains(&format!("<p class=\"alert\" role=\"alert\">{LOGIN_FAILED_MESSAGE}</p>")), "{failed}");
    let locked = pages.login(&LoginView { locked: true, error: Some(LOGIN_FAILED_MESSAGE), ..login_view(&[]) });
    assert!(locked.contains("role=\"alert\">Too many attempts, try again later."), "{locked}");
    assert!(!locked.contains(LOGIN_FAILED_MESSAGE));
}

#[test]
fn consent_has_both_decisions_and_describes_the_scopes() {
    let scopes = ["openid", "profile", "email", "offline_access", "calendar.read"].map(String::from);
    let view = ConsentView {
        lang: "en",
        client_name: "Demo App",
        username: "alice",
        scopes: &scopes,
        pending: "pending-handle",
        csrf: "csrf-token",
    };
    let html = default_pages().consent(&view);
    for expected in [
        "<form method=\"post\" action=\"/consent\"",
        "<input type=\"hidden\" name=\"csrf\" value=\"csrf-token\">",
        "<input type=\"hidden\" name=\"pending\" value=\"pending-handle\">",
        "<button type=\"submit\" name=\"decision\" value=\"allow\"",
        "<button type=\"submit\" name=\"decision\" value=\"deny\"",
        "<li>Sign you in</li>",
        "<li>Your name</li>",
        "<li>Your email address</li>",
        "<li>Stay signed in (access while you are away)</li>",
        "<li><code>calendar.read</code></li>",
        "<strong>alice</strong>",
    ] {
        assert!(html.contains(expected), "missing {expected:?} in {html}");
    }
}

#[test]
fn error_page_shows_the_code() {
    let view = ErrorView {
        lang: "en",
        title: "Bad request",
        message: "The request is invalid.",
        error_code: Some("invalid_request"),
    };
    let html = default_pages().error(&view);
    assert!(html.contains("<title>Bad request – idp</title>"), "{html}");
    assert!(html.contains("<p class=\"alert\" role=\"alert\">The request is invalid.</p>"));
    assert!(html.contains("<code>invalid_request</code>"));
    let without_code = default_pages().error(&ErrorView { error_code: None, ..view });
    assert!(!without_code.contains("Error code"));
}

#[test]
fn form_post_carries_every_field_and_may_post_to_the_client() {
    let fields: Vec<(String, String)> =
        ["code", "state", "id_token", "access_token", "token_type", "expires_in", "iss", "error", "error_description"]
            .iter()
            .map(|name| (name.to_string(), format!("{name}-value")))
            .collect();
    let view = FormPostView { action: "https://rp.example:8443/callback?x=1", fields: &fields };
    let html = default_pages().form_post(&view);
    assert!(html.contains(
        "<form id=\"form-post\" method=\"post\" action=\"https:&#x2f;&#x2f;rp.example:8443&#x2f;callback?x=1\">"
    ));
    for (name, value) in &fields {
        assert!(html.contains(&format!("<input type=\"hidden\" name=\"{name}\" value=\"{value}\">")), "{name}: {html}");
    }
    assert!(html.contains("<script src=\"/static/form-post.js\" defer></script>"));
    assert!(html.contains("<noscript>") && html.contains("<button type=\"submit\""));

    let response = html_response(StatusCode::OK, html, view.form_action_source().as_deref());
    let policy = response.headers().get(header::CONTENT_SECURITY_POLICY).expect("csp").to_str().expect("ascii");
    assert!(policy.ends_with("form-action * https://rp.example:8443"), "{policy}");
}

#[test]
fn form_action_sources() {
    assert_eq!(form_action_source("https://rp.example/cb").as_deref(), Some("https://rp.example"));
    assert_eq!(form_action_source("http://127.0.0.1:8080/cb").as_deref(), Some("http://127.0.0.1:8080"));
    assert_eq!(form_action_source("http://[::1]:9000/cb").as_deref(), Some("http://[::1]:9000"));
    assert_eq!(form_action_source("com.example.app:/oauth").as_deref(), Some("com.example.app:"));
    assert_eq!(form_action_source("/relative"), None);
    assert_eq!(content_security_policy(None), CONTENT_SECURITY_POLICY);
    assert_eq!(content_security_policy(Some("https://a.example; script-src *")), CONTENT_SECURITY_POLICY);
    assert_eq!(content_security_policy(Some("'unsafe-inline'")), CONTENT_SECURITY_POLICY);
}

#[test]
fn html_response_carries_the_security_headers() {
    let response = html_response(StatusCode::BAD_REQUEST, "<p>x</p>".into(), None);
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let headers = response.headers();
    let expected = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'; form-action *"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ];
    for (name, value) in expected {
        assert_eq!(headers.get(&name).map(|value| value.to_str().unwrap()), Some(value), "{name}");
    }
}

#[test]
fn logout_confirmation_passes_the_parameters_through() {
    let fields = [
        ("post_logout_redirect_uri".to_owned(), "https://rp.example/bye".to_owned()),
        ("state".to_owned(), "xyz".to_owned()),
        ("client_id".to_owned(), "demo".to_owned()),
    ];
    let view = LogoutConfirmView { lang: "en", csrf: "csrf-token", client_name: Some("Demo App"), fields: &fields };
    let html = default_pages().logout_confirm(&view);
    for expected in [
        "<form method=\"post\" action=\"/logout\"",
        "<input type=\"hidden\" name=\"csrf\" value=\"csrf-token\">",
        "<input type=\"hidden\" name=\"post_logout_redirect_uri\" value=\"https:&#x2f;&#x2f;rp.example&#x2f;bye\">",
        "<input type=\"hidden\" name=\"state\" value=\"xyz\">",
        "<input type=\"hidden\" name=\"client_id\" value=\"demo\">",
        "<button type=\"submit\" name=\"decision\" value=\"logout\"",
        "<button type=\"submit\" name=\"decision\" value=\"cancel\"",
        "<strong>Demo App</strong>",
    ] {
        assert!(html.contains(expected), "missing {expected:?} in {html}");
    }
}

#[test]
fn logged_out_links_back_only_when_asked() {
    let pages = default_pages();
    let with_link = pages.logged_out(&LoggedOutView { lang: "en", return_url: Some("https://rp.example/") });
    assert!(with_link.contains("href=\"https:&#x2f;&#x2f;rp.example&#x2f;\""), "{with_link}");
    let without = pages.logged_out(&LoggedOutView { lang: "en", return_url: None });
    assert!(!without.contains("<a "));
}

#[test]
fn lang_is_a_supported_language() {
    assert_eq!(page_lang(""), "en");
    assert_eq!(page_lang("en-GB"), "en");
    assert_eq!(page_lang("fr-CA EN"), "en");
    assert_eq!(page_lang("de"), "en");
    let html = default_pages().error(&ErrorView { lang: "fr\"><script>", title: "t", message: "m", error_code: None });
    assert!(html.contains("<html lang=\"en\">"));
}

#[test]
fn colours_are_parsed_strictly() {
    assert_eq!(Rgb::parse("#abc"), Some(Rgb::parse("#aabbcc").unwrap()));
    assert_eq!(Rgb::parse("#1D4ED8").map(|rgb| rgb.to_string()).as_deref(), Some("#1d4ed8"));
    for bad in
        ["red", "abc", "#12", "#1234", "#12345", "#1234567", "#ggg", " #123", "#123 ", "#123;}", "#１２３", "#+12"]
    {
        assert_eq!(Rgb::parse(bad), None, "{bad}");
        let branding = BrandingConfig { primary_color: Some(bad.into()), ..BrandingConfig::default() };
        let error = Pages::new(&branding).expect_err(bad);
        assert!(error.to_string().starts_with("branding.primary_color: invalid colour"), "{error}");
        let branding = BrandingConfig { background_color: Some(bad.into()), ..BrandingConfig::default() };
        assert!(matches!(Pages::new(&branding), Err(PagesError::Branding { key: "background_color", .. })));
    }
}

#[test]
fn brand_css_keeps_text_readable() {
    let dark = brand_css(Rgb::parse("#123456").unwrap(), Rgb::parse("#fff").unwrap());
    assert!(dark.contains("--brand-primary: #123456;") && dark.contains("--brand-on-primary: #ffffff;"), "{dark}");
    assert!(dark.contains("--brand-link: #123456;") && dark.contains("--brand-background: #ffffff;"), "{dark}");
    let light = brand_css(Rgb::parse("#ff0").unwrap(), Rgb::parse("#000").unwrap());
    assert!(light.contains("--brand-primary: #ffff00;") && light.contains("--brand-on-primary: #111827;"), "{light}");
    assert!(light.contains("--brand-link: #111827;") && light.contains("--brand-on-background: #ffffff;"), "{light}");
}

#[test]
fn product_name_defaults_and_must_not_be_empty() {
    let html = default_pages().logged_out(&LoggedOutView { lang: "en", return_url: None });
    assert!(html.contains("<span class=\"brand-name\">idp</span>"));
    let named = must_build(&BrandingConfig { product_name: Some("Acme <ID>".into()), ..BrandingConfig::default() });
    assert!(named.logged_out(&LoggedOutView { lang: "en", return_url: None }).contains("Acme &lt;ID&gt;"));
    let empty = BrandingConfig { product_name: Some("  ".into()), ..BrandingConfig::default() };
    assert!(matches!(Pages::new(&empty), Err(PagesError::Branding { key: "product_name", .. })));
}

#[test]
fn override_replaces_the_builtin_template() {
    let dir = TempDir::new();
    dir.write("login.html", "<!doctype html>\n<html lang=\"{{ lang }}\"><p>Custom {{ client_name }}</p></html>");
    dir.write("notes.txt", "{% broken");
    let pages = must_build(&with_templates_dir(&dir.0));
    let login = pages.login(&LoginView { client_name: HOSTILE, ..login_view(&[]) });
    assert!(login.contains(&format!("<p>Custom {ESCAPED_HOSTILE}</p>")), "{login}");
    let error = pages.error(&ErrorView { lang: "en", title: "t", message: "m", error_code: None });
    assert!(error.contains("role=\"alert\">m</p>"), "other pages stay built in: {error}");
}

#[test]
fn broken_override_fails_at_start_with_its_name() {
    let cases = [
        ("consent.html", "{% if %}", "syntax error"),
        ("error.html", "<p>{{ no_such_variable }}</p>", "undefined value"),
        ("logged_out.html", "{{ product_name|no_such_filter }}", "unknown filter"),
    ];
    for (name, source, reason) in cases {
        let dir = TempDir::new();
        dir.write(name, source);
        match Pages::new(&with_templates_dir(&dir.0)) {
            Err(PagesError::Template { name: failing, reason: text }) => {
                assert_eq!(failing, name);
                assert!(text.contains(reason), "{name}: {text}");
            }
            other => panic!("{name}: expected a template error, got {other:?}"),
        }
    }
    let missing =
        BrandingConfig { templates_dir: Some("/nonexistent/idp-templates".into()), ..BrandingConfig::default() };
    assert!(matches!(Pages::new(&missing), Err(PagesError::TemplatesDir { .. })));
}

/// A `base.html` override: another header, a footer, the blocks of the built-in one.
const CUSTOM_BASE: &str = "<!doctype html>\n<html lang=\"{{ lang }}\">\n<head>\n<meta name=\"viewport\" \
    content=\"width=device-width\">\n<title>{% block title %}{% endblock %} | {{ product_name }}</title>\n\
    <link rel=\"stylesheet\" href=\"/static/brand.css\">\n{% block head %}{% endblock %}\n</head>\n<body>\n\
    <p class=\"custom-header\">Acme {{ product_name }}</p>\n<main>\n{% block main %}{% endblock %}\n</main>\n\
    <footer class=\"custom-footer\">Acme Corp</footer>\n</body>\n</html>\n";

#[test]
fn base_override_rebrands_every_page() {
    let dir = TempDir::new();
    dir.write("base.html", CUSTOM_BASE);
    let pages = must_build(&with_templates_dir(&dir.0));
    for (page, html) in every_page(&pages, HOSTILE) {
        assert!(html.starts_with("<!doctype html>\n<html lang=\"en\">"), "{page}: {html}");
        assert!(html.contains("<p class=\"custom-header\">Acme idp</p>"), "{page} kept the built-in header: {html}");
        assert!(html.contains("<footer class=\"custom-footer\">Acme Corp</footer>"), "{page} has no footer: {html}");
        assert!(!html.contains("class=\"brand-name\""), "{page} kept the built-in header: {html}");
        assert!(html.contains(" | idp</title>"), "{page}: {html}");
        assert!(!html.contains(HOSTILE) && html.contains(ESCAPED_HOSTILE), "{page} lost its escaped content: {html}");
    }
    let login = pages.login(&LoginView { locked: true, ..login_view(&[]) });
    for expected in [
        "<title>Sign in | idp</title>",
        "<form method=\"post\" action=\"/login\"",
        "<input id=\"username\" name=\"username\"",
        "<input id=\"password\" name=\"password\"",
        "<input type=\"hidden\" name=\"csrf\" value=\"csrf-token\">",
        "<p class=\"alert\" role=\"alert\">Too many attempts, try again later.</p>",
    ] {
        assert!(login.contains(expected), "missing {expected:?} in {login}");
    }
    let form_post = pages.form_post(&FormPostView { action: "/cb", fields: &[] });
    assert!(form_post.contains("<script src=\"/static/form-post.js\" defer></script>\n</head>"), "{form_post}");
    // The built-in environment is untouched: it is the fallback of a failing override.
    let builtin = render_in(
        &pages.builtin,
        templates::LOGGED_OUT,
        &pages.logged_out_context(&LoggedOutView { lang: "en", return_url: None }),
    )
    .expect("built-in");
    assert!(builtin.contains("<span class=\"brand-name\">idp</span>") && !builtin.contains("custom-footer"));
}

#[test]
fn page_override_works_beside_a_base_override() {
    let dir = TempDir::new();
    dir.write("base.html", CUSTOM_BASE);
    dir.write("error.html", "<!doctype html>\n<html lang=\"{{ lang }}\"><p>Standalone {{ message }}</p></html>");
    dir.write(
        "logged_out.html",
        "{% extends \"base.html\" %}{% block main %}<p>Bye from {{ product_name }}</p>{% endblock %}",
    );
    let pages = must_build(&with_templates_dir(&dir.0));
    let error = pages.error(&ErrorView { lang: "en", title: "t", message: "m", error_code: None });
    assert_eq!(error, "<!doctype html>\n<html lang=\"en\"><p>Standalone m</p></html>");
    let logged_out = pages.logged_out(&LoggedOutView { lang: "en", return_url: None });
    assert!(logged_out.contains("<main>\n<p>Bye from idp</p></main>"), "{logged_out}");
    assert!(logged_out.contains("custom-footer"), "{logged_out}");
    assert!(pages
        .consent(&ConsentView { lang: "en", client_name: "c", username: "u", scopes: &[], pending: "p", csrf: "x" })
        .contains("custom-footer"));
}

#[test]
fn broken_base_override_fails_at_start_with_its_name() {
    let cases = [
        ("{% block main %}", "syntax error"),
        (
            "<title>{{ client_name }}</title>{% block head %}{% endblock %}{% block main %}{% endblock %}",
            "undefined value",
        ),
        (
            "{{ product_name|no_such_filter }}{% block head %}{% endblock %}{% block main %}{% endblock %}",
            "unknown filter",
        ),
        ("<html>{% block head %}{% endblock %}<main></main></html>", "does not render the block(s) main"),
        ("<html>{% block main %}{% endblock %}</html>", "does not render the block(s) head"),
        (
            "<html>{% if false %}{% block head %}{% endblock %}{% block main %}{% endblock %}{% endif %}</html>",
            "head, main",
        ),
    ];
    for (source, reason) in cases {
        let dir = TempDir::new();
        dir.write("base.html", source);
        match Pages::new(&with_templates_dir(&dir.0)) {
            Err(PagesError::Template { name, reason: text }) => {
                assert_eq!(name, "base.html", "{source}: {text}");
                assert!(text.contains(reason), "{source}: {text}");
            }
            other => panic!("{source}: expected a template error, got {other:?}"),
        }
    }
    // A page override extending a base that is not there names the page.
    let dir = TempDir::new();
    dir.write("consent.html", "{% extends \"no_such_base.html\" %}");
    let error = Pages::new(&with_templates_dir(&dir.0)).expect_err("missing base");
    assert!(error.to_string().starts_with("template consent.html:"), "{error}");
}

#[test]
fn builtin_pages_share_the_base() {
    let pages = default_pages();
    for (page, html) in every_page(&pages, "plain") {
        assert!(html.contains("<link rel=\"stylesheet\" href=\"/static/style.css\">"), "{page}: {html}");
        assert!(html.contains("<link rel=\"stylesheet\" href=\"/static/brand.css\">"), "{page}: {html}");
        assert!(html.contains("<main class=\"card\">\n  <header class=\"brand\">"), "{page}: {html}");
        assert!(html.contains(" – idp</title>") && html.ends_with("</main>\n</body>\n</html>"), "{page}: {html}");
        assert_eq!(html.matches("<!doctype html>").count(), 1, "{page}: {html}");
    }
    assert!(templates::BUILTIN_TEMPLATES
        .iter()
        .all(|(name, source)| { *name == templates::BASE || source.starts_with("{% extends \"base.html\" %}\n") }));
}

#[test]
fn failing_override_falls_back_to_the_builtin_at_render() {
    let dir = TempDir::new();
    dir.write("error.html", "{% if title == \"boom\" %}{{ missing_only_here }}{% endif %}custom");
    let pages = must_build(&with_templates_dir(&dir.0));
    let view = ErrorView { lang: "en", title: "fine", message: "m", error_code: None };
    assert_eq!(pages.error(&view), "custom");
    let fallback = pages.error(&ErrorView { title: "boom", ..view });
    assert!(fallback.contains("<h1>boom</h1>"), "{fallback}");
}

#[test]
fn logo_must_be_a_known_image_type() {
    let dir = TempDir::new();
    let gif = dir.write("logo.gif", "GIF89a");
    let branding = BrandingConfig { logo: Some(gif), ..BrandingConfig::default() };
    assert!(matches!(Pages::new(&branding), Err(PagesError::Branding { key: "logo", .. })));
    let missing = BrandingConfig { logo: Some(dir.0.join("absent.png")), ..BrandingConfig::default() };
    assert!(matches!(Pages::new(&missing), Err(PagesError::Branding { key: "logo", .. })));
}

#[test]
fn pages_are_shared_between_workers() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Pages>();
}

/// GET `path` from an app holding the static routes of `pages`: status, headers and body.
async fn get(pages: &Arc<Pages>, path: &str) -> (StatusCode, Vec<(String, String)>, String) {
    let app = actix_web::App::new().configure(|config| pages.configure_static(config));
    let app = actix_web::test::init_service(app).await;
    let response =
        actix_web::test::call_service(&app, actix_web::test::TestRequest::get().uri(path).to_request()).await;
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = actix_web::test::read_body(response).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
}

#[actix_web::test]
async fn static_files_are_served_with_their_types() {
    let dir = TempDir::new();
    let logo = dir.write("logo.SVG", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    let branding = BrandingConfig { logo: Some(logo), primary_color: Some("#0a0".into()), ..BrandingConfig::default() };
    let pages = Arc::new(must_build(&branding));
    let expected = [
        ("/static/style.css", "text/css; charset=utf-8", ".card"),
        ("/static/brand.css", "text/css; charset=utf-8", "--brand-primary: #00aa00;"),
        ("/static/form-post.js", "text/javascript; charset=utf-8", "form.submit()"),
        ("/static/logo", "image/svg+xml", "<svg"),
    ];
    for (path, content_type, body_part) in expected {
        let (status, headers, body) = get(&pages, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(header_of(&headers, "content-type"), Some(content_type), "{path}");
        assert_eq!(header_of(&headers, "cache-control"), Some("public, max-age=3600"), "{path}");
        assert_eq!(header_of(&headers, "x-content-type-options"), Some("nosniff"), "{path}");
        assert!(body.contains(body_part), "{path}: {body}");
    }
    let (_, logo_headers, _) = get(&pages, "/static/logo").await;
    assert!(header_of(&logo_headers, "content-security-policy").is_some_and(|policy| policy.contains("sandbox")));
    let html = pages.login(&login_view(&[]));
    assert!(html.contains("<img class=\"brand-logo\" src=\"/static/logo\" alt=\"\""), "{html}");
}

#[actix_web::test]
async fn logo_is_not_found_without_one() {
    let pages = Arc::new(default_pages());
    let (status, _, _) = get(&pages, "/static/logo").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!pages.login(&login_view(&[])).contains("<img"));
}
