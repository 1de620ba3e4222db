//! Loading: TOML text → table → `IDP_*` overrides → typed [`Config`] → [`Config::validate`]. Serde errors become
//! key-path errors (`config key `http.listn`: unknown key`).

use super::env::{self, Override};
use super::{Config, ConfigError};
use std::path::Path;
use toml::{Table, Value};

/// Keys whose values are secrets: a type error about them says the key, never the value.
const SECRET_KEYS: &[&str] = &["client_secret", "password_hash"];

/// Sections holding secrets: a type error about the whole section does not quote the text it got
/// (`IDP_CLIENTS` with a typo would otherwise be echoed whole, secrets included).
const SECRET_SECTIONS: &[&str] = &["clients", "users"];

impl Config {
    /// Reads the TOML file at `path` (if any), applies the `IDP_*` variables of `env`, deserializes and validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Self::from_toml_text("", "config", env);
        };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml_text(&text, &format!("config file {}", path.display()), env)
    }

    /// [`Config::load`] from text (tests, embedded configurations).
    pub fn from_toml_str(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        Self::from_toml_text(text, "config", env)
    }

    fn from_toml_text(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_table(text, origin)?;
        let overrides = env::apply_overrides(&mut table, env)?;
        let config = deserialize_with_overrides(table, &overrides).map_err(|error| blame(error, &overrides))?;
        config.validate().map_err(|error| blame(error, &overrides))?;
        Ok(config)
    }
}

/// Parses TOML text; a syntax error gives the line and column, not the line itself.
fn parse_table(text: &str, origin: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|error| {
        let (line, column) = error.span().map_or((1, 1), |span| line_and_column(text, span.start));
        ConfigError::Syntax { origin: origin.to_string(), line, column, message: error.message().to_string() }
    })
}

/// One-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// Deserializes; when a variable's value was read as TOML but the key wants text (`IDP_BRANDING__PRODUCT_NAME=2024`),
/// retries once with the variable's text as a string.
fn deserialize_with_overrides(mut table: Table, overrides: &[Override]) -> Result<Config, ConfigError> {
    let mut retried: Vec<&str> = Vec::new();
    loop {
        let error = match deserialize(table.clone()) {
            Ok(config) => return Ok(config),
            Err(error) => error,
        };
        let retry = overrides.iter().find(|candidate| {
            Some(candidate.key_text().as_str()) == error.key_path()
                && !retried.contains(&candidate.variable.as_str())
                && !env::parse_value(&candidate.raw).is_str()
        });
        let Some(retry) = retry else { return Err(error) };
        retried.push(&retry.variable);
        // The key was set once already, so every section above it is a table.
        let _ = env::set_key(&mut table, &retry.key, Value::String(retry.raw.clone()));
    }
}

fn deserialize(table: Table) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(Value::Table(table)).map_err(|error| {
        let segments: Vec<String> = error.path().iter().map(ToString::to_string).collect();
        key_error(segments, error.inner().message())
    })
}

/// Turns a serde message at a path into a key-path error: `missing field` and `unknown field` name the key.
fn key_error(mut segments: Vec<String>, message: &str) -> ConfigError {
    let reason = if let Some(field) = quoted_field(message, "missing field `") {
        segments.push(field.to_string());
        "is required".to_string()
    } else if let Some(field) = quoted_field(message, "unknown field `") {
        if segments.last().map(String::as_str) != Some(field) {
            segments.push(field.to_string());
        }
        "unknown key".to_string()
    } else if segments.last().is_some_and(|last| SECRET_KEYS.contains(&last.as_str())) {
        "invalid value (not shown: it is a secret); expected a string".to_string()
    } else if matches!(&segments[..], [section] if SECRET_SECTIONS.contains(&section.as_str())) {
        without_quoted_text(message)
    } else {
        message.to_string()
    };
    let key = if segments.is_empty() { ".".to_string() } else { join_key(&segments) };
    ConfigError::key(key, reason)
}

/// `invalid type: string "…", expected a sequence` → `invalid type: a string (not shown), expected a sequence`.
fn without_quoted_text(message: &str) -> String {
    for kind in ["invalid type", "invalid value"] {
        if let Some(rest) = message.strip_prefix(kind).and_then(|rest| rest.strip_prefix(": string ")) {
            let expected = rest.rsplit_once(", expected ").map_or("another value", |(_, expected)| expected);
            return format!("{kind}: a string (not shown), expected {expected}");
        }
    }
    message.to_string()
}

fn quoted_field<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// `["clients", "[1]", "redirect_uris", "[0]"]` → `clients[1].redirect_uris[0]`.
fn join_key(segments: &[String]) -> String {
    let mut key = String::new();
    for segment in segments {
        if !key.is_empty() && !segment.starts_with('[') {
            key.push('.');
        }
        key.push_str(segment);
    }
    key
}

/// Names the environment variable that set the failing key, or a section above it.
fn blame(error: ConfigError, overrides: &[Override]) -> ConfigError {
    let ConfigError::Key { key, reason, variable: None } = error else { return error };
    let culprit = overrides.iter().find(|candidate| is_within(&key, &candidate.key_text()));
    ConfigError::Key { key, reason, variable: culprit.map(|culprit| culprit.variable.clone()) }
}

/// Whether `key` is `section` or below it (`http.listen` is within `http`; `http_x` is not).
fn is_within(key: &str, section: &str) -> bool {
    key.strip_prefix(section).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

#[cfg(test)]
mod tests;
