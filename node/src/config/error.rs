//! The one error type of configuration: every message names the file, the key path or the variable, and the
//! reason, and never a secret value.

use std::path::PathBuf;

/// Why a configuration was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML. The message never quotes the offending line (it may hold a secret).
    #[error("{origin}: TOML syntax error at line {line}, column {column}: {message}")]
    Syntax { origin: String, line: usize, column: usize, message: String },
    /// A key is unknown, missing, of the wrong type, or breaks a rule.
    #[error("config key `{key}`{}: {reason}", from_variable(variable.as_deref()))]
    Key {
        /// Path of the key, e.g. `clients[1].redirect_uris[0]`.
        key: String,
        reason: String,
        /// The environment variable that set the key (or a section above it), if one did.
        variable: Option<String>,
    },
    /// An `IDP_*` environment variable cannot be applied.
    #[error("environment variable `{variable}`: {reason}")]
    Environment { variable: String, reason: String },
}

impl ConfigError {
    /// A key that breaks a rule.
    pub(crate) fn key(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Key { key: key.into(), reason: reason.into(), variable: None }
    }

    /// The key path of a [`ConfigError::Key`].
    pub fn key_path(&self) -> Option<&str> {
        match self {
            Self::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn from_variable(variable: Option<&str>) -> String {
    variable.map(|variable| format!(" (from environment variable `{variable}`)")).unwrap_or_default()
}
