//! The HTML pages of the provider: login, consent, error, the `form_post` auto-submit page (OAuth 2.0 Form Post
//! Response Mode), the logout confirmation (OIDC RP-Initiated Logout 1.0 §2) and the logged-out page.
//!
//! Templates are minijinja, HTML-escaped, built into the binary (`node/templates/`). Every page extends
//! `base.html`, the shared document: doctype and `<html lang>`, the head (viewport, title, `/static/style.css` and
//! `/static/brand.css`) and the branded header with the optional logo. Its blocks: `title` (the page's part of the
//! title, followed by the product name), `head` (more of the head: the `form_post` script), `header` and `main` (the
//! page's content).
//!
//! The operator can replace templates one by one (`branding.templates_dir`, same file name): an override of
//! `base.html` rebrands every page (it must keep the `head` and `main` blocks), an override of a page replaces that
//! page alone, and may extend `base.html` (the operator's, if any) or be a whole document. Overrides are parsed and
//! every page is rendered once with sample values at start, so a broken one stops the node with its name (that of
//! `base.html` when the error is there) and the reason. The environments are built once; rendering never panics (a
//! failing override falls back to the built-in templates, base included, with a warning).
//!
//! Pages allow no inline script or style and load nothing from another origin; colours reach them through
//! `/static/brand.css`. Every page is served with [`html_response`].
//!
//! Variables of the templates, for operators writing overrides (printing an undefined one is an error):
//! - every page, and `base.html`: `lang`, `product_name`, `has_logo`;
//! - `login.html`: `client_name`, `pending`, `csrf`, `username` (or none), `error` (or none), `locked`, `upstreams`
//!   (a list of `name`, `icon_url` (or none), `href`);
//! - `consent.html`: `client_name`, `username`, `scopes` (a list of `name`, `description` (or none)), `pending`,
//!   `csrf`;
//! - `error.html`: `title`, `message`, `error_code` (or none);
//! - `form_post.html`: `action`, `fields` (a list of `[name, value]` pairs);
//! - `logout_confirm.html`: `csrf`, `client_name` (or none), `fields`;
//! - `logged_out.html`: `return_url` (or none).

mod branding;
mod http;
mod templates;
#[cfg(test)]
mod tests;

pub use branding::DEFAULT_PRODUCT_NAME;
pub use http::{content_security_policy, form_action_source, html_response, CONTENT_SECURITY_POLICY};

use crate::config::BrandingConfig;
use branding::Brand;
use minijinja::{context, Environment, Value};
use serde::Serialize;
use std::path::PathBuf;
use templates::{BASE, BASE_REQUIRED_BLOCKS, CONSENT, ERROR, FORM_POST, LOGGED_OUT, LOGIN, LOGOUT_CONFIRM};

/// The message of a failed login: the same whether the user exists or not.
pub const LOGIN_FAILED_MESSAGE: &str = "Incorrect username or password.";

/// Languages the pages are written in.
const SUPPORTED_LANGS: [&str; 1] = ["en"];

/// Why the pages could not be set up; found at start.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    #[error("template {name}: {reason}")]
    Template { name: String, reason: String },
    #[error("branding.templates_dir {}: {reason}", path.display())]
    TemplatesDir { path: PathBuf, reason: String },
    #[error("branding.{key}: {reason}")]
    Branding { key: &'static str, reason: String },
}

/// The page renderer, built once at start and shared by the HTTP workers (it is `Send + Sync`).
pub struct Pages {
    builtin: Environment<'static>,
    /// The built-in templates with the operator's overrides over them.
    overrides_opt: Option<Environment<'static>>,
    brand: Brand,
}

/// The login form. `error` is shown as is: give it [`LOGIN_FAILED_MESSAGE`], never a hint that the user exists.
pub struct LoginView<'a> {
    pub lang: &'a str,
    pub client_name: &'a str,
    /// Handle of the pending authorization.
    pub pending: &'a str,
    pub csrf: &'a str,
    /// Prefilled username (e.g. from `login_hint`, or after a failed attempt).
    pub username: Option<&'a str>,
    pub error: Option<&'a str>,
    /// Too many failed attempts: ask to try again later.
    pub locked: bool,
    /// "Sign in with X" buttons; possibly empty.
    pub upstreams: &'a [UpstreamButton],
}

/// A "Sign in with X" button of the login page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamButton {
    pub name: String,
    /// Same-origin URL of an icon (the page's policy blocks images from other origins).
    pub icon_url: Option<String>,
    pub href: String,
}

/// The consent form.
pub struct ConsentView<'a> {
    pub lang: &'a str,
    pub client_name: &'a str,
    pub username: &'a str,
    pub scopes: &'a [String],
    pub pending: &'a str,
    pub csrf: &'a str,
}

/// An error page; the caller sends it with a 4xx status. Never put a secret in it.
#[derive(Clone, Copy, Debug)]
pub struct ErrorView<'a> {
    pub lang: &'a str,
    pub title: &'a str,
    pub message: &'a str,
    /// OAuth `error` code, e.g. `invalid_request`.
    pub error_code: Option<&'a str>,
}

/// The `form_post` response (OAuth 2.0 Form Post Response Mode §2): `fields` posted to the client's `action`.
pub struct FormPostView<'a> {
    /// The client's redirect URI.
    pub action: &'a str,
    /// Response parameters: `code`, `state`, `id_token`, `iss`, `error`…
    pub fields: &'a [(String, String)],
}

impl FormPostView<'_> {
    /// The source to give [`html_response`] so that the page may post to the client.
    pub fn form_action_source(&self) -> Option<String> {
        form_action_source(self.action)
    }
}

/// The confirmation of an RP-initiated logout without a valid `id_token_hint`.
pub struct LogoutConfirmView<'a> {
    pub lang: &'a str,
    pub csrf: &'a str,
    pub client_name: Option<&'a str>,
    /// Logout parameters passed through as hidden fields: `post_logout_redirect_uri`, `state`, `client_id`,
    /// `id_token_hint`…
    pub fields: &'a [(String, String)],
}

/// The page shown after a logout without a redirect.
#[derive(Clone, Copy, Debug)]
pub struct LoggedOutView<'a> {
    pub lang: &'a str,
    /// A link back to the application, if any.
    pub return_url: Option<&'a str>,
}

/// A scope of the consent page, with its description for people when it is a known one.
#[derive(Serialize)]
struct ScopeItem<'a> {
    name: &'a str,
    description: Option<&'static str>,
}

impl Pages {
    /// Validates the branding, loads the logo and the template overrides, and renders every page once.
    pub fn new(branding: &BrandingConfig) -> Result<Self, PagesError> {
        let brand = Brand::from_config(branding)?;
        let builtin = templates::builtin_environment()?;
        let overrides_opt = match &branding.templates_dir {
            Some(dir) => Some(templates::environment_with_overrides(&builtin, dir)?),
            None => None,
        };
        let pages = Self { builtin, overrides_opt, brand };
        pages.check_templates()?;
        Ok(pages)
    }

    /// The product name shown on the pages.
    pub fn product_name(&self) -> &str {
        &self.brand.product_name
    }

    pub fn login(&self, view: &LoginView) -> String {
        self.render(LOGIN, self.login_context(view))
    }

    pub fn consent(&self, view: &ConsentView) -> String {
        self.render(CONSENT, self.consent_context(view))
    }

    pub fn error(&self, view: &ErrorView) -> String {
        self.render(ERROR, self.error_context(view))
    }

    pub fn form_post(&self, view: &FormPostView) -> String {
        self.render(FORM_POST, self.form_post_context(view))
    }

    pub fn logout_confirm(&self, view: &LogoutConfirmView) -> String {
        self.render(LOGOUT_CONFIRM, self.logout_confirm_context(view))
    }

    pub fn logged_out(&self, view: &LoggedOutView) -> String {
        self.render(LOGGED_OUT, self.logged_out_context(view))
    }

    fn render(&self, name: &'static str, context: Value) -> String {
        if let Some(overrides) = &self.overrides_opt {
            match render_in(overrides, name, &context) {
                Ok(html) => return html,
                Err(error) => {
                    tracing::warn!(template = name, %error, "override template failed, using the built-in one");
                }
            }
        }
        render_in(&self.builtin, name, &context).unwrap_or_else(|error| {
            tracing::error!(template = name, %error, "built-in template failed");
            templates::LAST_RESORT_PAGE.to_owned()
        })
    }

    /// Variables of every page.
    fn common_context(&self, lang: &str) -> Value {
        context! {
            lang => page_lang(lang),
            product_name => &self.brand.product_name,
            has_logo => self.brand.logo_opt.is_some(),
        }
    }

    fn login_context(&self, view: &LoginView) -> Value {
        context! {
            client_name => view.client_name,
            pending => view.pending,
            csrf => view.csrf,
            username => view.username,
            error => view.error,
            locked => view.locked,
            upstreams => view.upstreams,
            ..self.common_context(view.lang)
        }
    }

    fn consent_context(&self, view: &ConsentView) -> Value {
        let scopes: Vec<ScopeItem> =
            view.scopes.iter().map(|scope| ScopeItem { name: scope, description: scope_description(scope) }).collect();
        context! {
            client_name => view.client_name,
            username => view.username,
            scopes => scopes,
            pending => view.pending,
            csrf => view.csrf,
            ..self.common_context(view.lang)
        }
    }

    fn error_context(&self, view: &ErrorView) -> Value {
        context! {
            title => view.title,
            message => view.message,
            error_code => view.error_code,
            ..self.common_context(view.lang)
        }
    }

    fn form_post_context(&self, view: &FormPostView) -> Value {
        context! { action => view.action, fields => view.fields, ..self.common_context("") }
    }

    fn logout_confirm_context(&self, view: &LogoutConfirmView) -> Value {
        context! {
            csrf => view.csrf,
            client_name => view.client_name,
            fields => view.fields,
            ..self.common_context(view.lang)
        }
    }

    fn logged_out_context(&self, view: &LoggedOutView) -> Value {
        context! { return_url => view.return_url, ..self.common_context(view.lang) }
    }

    /// Renders every page with sample values, optional parts present and absent, in both environments: a template
    /// that fails here (an undefined variable, an unknown filter) would fail on every request. An error of
    /// `base.html` is reported under its own name, whichever page rendered it.
    fn check_templates(&self) -> Result<(), PagesError> {
        let environments = || std::iter::once(&self.builtin).chain(&self.overrides_opt);
        for (name, context) in self.sample_contexts() {
            for environment in environments() {
                render_in(environment, name, &context).map_err(|error| templates::template_error(name, &error))?;
            }
        }
        environments().try_for_each(|environment| self.check_base_blocks(environment))
    }

    /// Checks that `base.html` renders the blocks the pages fill ([`BASE_REQUIRED_BLOCKS`]): an override without
    /// them would render every page without its content (the forms) or, for `head`, the `form_post` script.
    fn check_base_blocks(&self, environment: &Environment<'static>) -> Result<(), PagesError> {
        let marker = |block: &str| format!("idp-block-check-{block}");
        let blocks =
            BASE_REQUIRED_BLOCKS.map(|block| format!("{{% block {block} %}}{}{{% endblock %}}", marker(block)));
        let source = format!("{{% extends \"{BASE}\" %}}{}", blocks.concat());
        let base_error = |reason: String| PagesError::Template { name: BASE.to_owned(), reason };
        let html =
            environment.render_str(&source, self.common_context("")).map_err(|error| base_error(error.to_string()))?;
        let missing: Vec<&str> =
            BASE_REQUIRED_BLOCKS.into_iter().filter(|block| !html.contains(&marker(block))).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(base_error(format!("does not render the block(s) {}, which the pages fill", missing.join(", "))))
        }
    }

    fn sample_contexts(&self) -> Vec<(&'static str, Value)> {
        let upstreams =
            [UpstreamButton { name: "Example".into(), icon_url: Some("/icon".into()), href: "/upstream".into() }];
        let scopes = ["openid".to_owned(), "sample".to_owned()];
        let fields = [("state".to_owned(), "sample".to_owned())];
        let (lang, text) = ("en", "sample");
        let login = |full: bool| LoginView {
            lang,
            client_name: text,
            pending: text,
            csrf: text,
            username: full.then_some(text),
            error: full.then_some(text),
            locked: !full,
            upstreams: if full { &upstreams } else { &[] },
        };
        let consent =
            |scopes| ConsentView { lang, client_name: text, username: text, scopes, pending: text, csrf: text };
        let error = |error_code| ErrorView { lang, title: text, message: text, error_code };
        let logout = |client_name, fields| LogoutConfirmView { lang, csrf: text, client_name, fields };
        vec![
            (LOGIN, self.login_context(&login(true))),
            (LOGIN, self.login_context(&login(false))),
            (CONSENT, self.consent_context(&consent(&scopes))),
            (CONSENT, self.consent_context(&consent(&[]))),
            (ERROR, self.error_context(&error(Some(text)))),
            (ERROR, self.error_context(&error(None))),
            (FORM_POST, self.form_post_context(&FormPostView { action: "https://rp.example/cb", fields: &fields })),
            (LOGOUT_CONFIRM, self.logout_confirm_context(&logout(Some(text), &fields))),
            (LOGOUT_CONFIRM, self.logout_confirm_context(&logout(None, &[]))),
            (LOGGED_OUT, self.logged_out_context(&LoggedOutView { lang, return_url: Some("https://rp.example/") })),
            (LOGGED_OUT, self.logged_out_context(&LoggedOutView { lang, return_url: None })),
        ]
    }
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Pages")
            .field("product_name", &self.brand.product_name)
            .field("has_logo", &self.brand.logo_opt.is_some())
            .field("has_overrides", &self.overrides_opt.is_some())
            .finish_non_exhaustive()
    }
}

fn render_in(environment: &Environment<'static>, name: &str, context: &Value) -> Result<String, minijinja::Error> {
    environment.get_template(name)?.render(context)
}

/// The description of a scope for the consent page; `None` for a scope we do not know (shown by name).
pub fn scope_description(scope: &str) -> Option<&'static str> {
    match scope {
        "openid" => Some("Sign you in"),
        "profile" => Some("Your name"),
        "email" => Some("Your email address"),
        "offline_access" => Some("Stay signed in (access while you are away)"),
        _ => None,
    }
}

/// The language of a page: the first tag of `requested` (a language tag, or an OIDC `ui_locales` list of them in
/// order of preference, OIDC Core §3.1.2.1) whose language the pages are written in; English otherwise. The page's
/// `lang` attribute must name the language of its text, so an unsupported request never reaches it.
pub fn page_lang(requested: &str) -> &'static str {
    requested
        .split_whitespace()
        .filter_map(|tag| {
            let language = tag.split(['-', '_']).next()?;
            SUPPORTED_LANGS.into_iter().find(|supported| supported.eq_ignore_ascii_case(language))
        })
        .next()
        .unwrap_or(SUPPORTED_LANGS[0])
}
