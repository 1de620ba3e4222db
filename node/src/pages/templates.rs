//! The template environments: the built-in templates, compiled into the binary, and the operator's overrides
//! (`branding.templates_dir`), loaded and parsed once at start.
//!
//! Every page extends [`BASE`], the shared document. Templates are resolved within one environment, so a page of the
//! override environment, built-in or not, extends the operator's `base.html` when there is one.

use super::PagesError;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::path::Path;

/// The document every page extends (`{% extends "base.html" %}`).
pub(super) const BASE: &str = "base.html";
pub(super) const LOGIN: &str = "login.html";
pub(super) const CONSENT: &str = "consent.html";
pub(super) const ERROR: &str = "error.html";
pub(super) const FORM_POST: &str = "form_post.html";
pub(super) const LOGOUT_CONFIRM: &str = "logout_confirm.html";
pub(super) const LOGGED_OUT: &str = "logged_out.html";

/// Every built-in template, by name.
pub(super) const BUILTIN_TEMPLATES: [(&str, &str); 7] = [
    (BASE, include_str!("../../templates/base.html")),
    (LOGIN, include_str!("../../templates/login.html")),
    (CONSENT, include_str!("../../templates/consent.html")),
    (ERROR, include_str!("../../templates/error.html")),
    (FORM_POST, include_str!("../../templates/form_post.html")),
    (LOGOUT_CONFIRM, include_str!("../../templates/logout_confirm.html")),
    (LOGGED_OUT, include_str!("../../templates/logged_out.html")),
];

/// Blocks of [`BASE`] that the built-in pages fill and an override of it must keep: `head` (the script of the
/// `form_post` page) and `main` (every page's content).
pub(super) const BASE_REQUIRED_BLOCKS: [&str; 2] = ["head", "main"];

/// Shown when even the built-in template fails to render, which the tests rule out; rendering never panics.
pub(super) const LAST_RESORT_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Error</title></head>\
    <body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n";

/// An environment holding the built-in templates.
pub(super) fn builtin_environment() -> Result<Environment<'static>, PagesError> {
    let mut environment = Environment::new();
    // HTML escaping for every `.html` template, whatever its origin.
    environment.set_auto_escape_callback(
        |name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        },
    );
    // Printing an undefined variable is an error, so a typo in an override fails at start, not silently.
    environment.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    environment.set_trim_blocks(true);
    environment.set_lstrip_blocks(true);
    for (name, source) in BUILTIN_TEMPLATES {
        environment.add_template(name, source).map_err(|error| template_error(name, &error))?;
    }
    Ok(environment)
}

/// The built-in environment with every `*.html` file of `dir` added over it (same name replaces the built-in).
pub(super) fn environment_with_overrides(
    builtin: &Environment<'static>,
    dir: &Path,
) -> Result<Environment<'static>, PagesError> {
    let mut environment = builtin.clone();
    for (name, source) in read_overrides(dir)? {
        environment.add_template_owned(name.clone(), source).map_err(|error| template_error(&name, &error))?;
        tracing::info!(template = %name, dir = %dir.display(), "template override loaded");
    }
    Ok(environment)
}

/// Reads the `*.html` files of `dir` (not its subfolders), sorted by name.
fn read_overrides(dir: &Path) -> Result<Vec<(String, String)>, PagesError> {
    let dir_error = |reason: String| PagesError::TemplatesDir { path: dir.to_path_buf(), reason };
    let mut overrides = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|error| dir_error(error.to_string()))? {
        let path = entry.map_err(|error| dir_error(error.to_string()))?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if !name.ends_with(".html") || !path.is_file() {
            continue;
        }
        let source = std::fs::read_to_string(&path)
            .map_err(|error| PagesError::Template { name: name.to_owned(), reason: error.to_string() })?;
        overrides.push((name.to_owned(), source));
    }
    overrides.sort();
    Ok(overrides)
}

/// A template error naming the template at fault.
pub(super) fn template_error(name: &str, error: &minijinja::Error) -> PagesError {
    PagesError::Template { name: error.name().unwrap_or(name).to_owned(), reason: error.to_string() }
}
