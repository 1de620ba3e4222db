//! `IDP_*` environment overrides: `IDP_HTTP__LISTEN=0.0.0.0:443` sets `http.listen`. A double underscore separates
//! sections, the rest is lowercased. The value is read as a TOML value when it is one (`8`, `true`,
//! `["RS256","ES256"]`, `"quoted"`), else taken as a string. A variable that names no key fails at start (when
//! the result is deserialized), except the few non-configuration variables listed here.

use super::ConfigError;
use toml::{Table, Value};

/// `IDP_*` variables that are not configuration keys: the key-encryption key and the log filter.
pub const NON_CONFIG_VARIABLES: &[&str] = &[
    "IDP_KEK",
    "IDP_LOG",
    // `idp admin` and `idp probe` read these; a node sharing their environment must not take them for keys.
    "IDP_ADMIN_URL",
    "IDP_ADMIN_TOKEN",
    "IDP_ADMIN_CLIENT_ID",
    "IDP_ADMIN_CLIENT_SECRET",
    "IDP_ADMIN_ISSUER",
    "IDP_ADMIN_CERT",
    "IDP_ADMIN_KEY",
    "IDP_ADMIN_CA",
    "IDP_PROBE_CLIENT_SECRET",
    "IDP_PROBE_PASSWORD",
];

const PREFIX: &str = "IDP_";
const SECTION_SEPARATOR: &str = "__";

/// One applied variable: the key path it set, and its text (kept to retry as a plain string).
#[derive(Debug)]
pub(super) struct Override {
    pub key: Vec<String>,
    pub variable: String,
    pub raw: String,
}

impl Override {
    pub fn key_text(&self) -> String {
        self.key.join(".")
    }
}

/// Applies every `IDP_*` variable of `env` to `table`, in name order; returns what was applied.
pub(super) fn apply_overrides(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut variables: Vec<(String, String)> = env.into_iter().filter(|(name, _)| is_config_variable(name)).collect();
    variables.sort();
    let mut overrides: Vec<Override> = Vec::with_capacity(variables.len());
    for (variable, raw) in variables {
        let key = key_of(&variable)?;
        if let Some(earlier) = overrides.iter().find(|earlier| earlier.key == key) {
            let reason = format!("sets the same key as `{}`", earlier.variable);
            return Err(ConfigError::Environment { variable, reason });
        }
        set_key(table, &key, parse_value(&raw))
            .map_err(|reason| ConfigError::Environment { variable: variable.clone(), reason })?;
        overrides.push(Override { key, variable, raw });
    }
    Ok(overrides)
}

fn is_config_variable(name: &str) -> bool {
    name.starts_with(PREFIX) && !NON_CONFIG_VARIABLES.contains(&name)
}

/// `IDP_LOGOUT__KEEP_OFFLINE_TOKENS` → `["logout", "keep_offline_tokens"]`.
fn key_of(variable: &str) -> Result<Vec<String>, ConfigError> {
    let rest = &variable[PREFIX.len()..];
    let key: Vec<String> = rest.split(SECTION_SEPARATOR).map(str::to_ascii_lowercase).collect();
    if key.iter().any(|segment| segment.is_empty()) {
        let reason = "names no config key (expected IDP_KEY or IDP_SECTION__KEY)".to_string();
        return Err(ConfigError::Environment { variable: variable.to_string(), reason });
    }
    Ok(key)
}

/// The value as TOML when it parses as one (a date-time stays text), else the text itself.
pub(super) fn parse_value(raw: &str) -> Value {
    let parsed = toml::from_str::<Table>(&format!("value = {raw}")).ok().and_then(|mut table| table.remove("value"));
    match parsed {
        Some(Value::Datetime(_)) | None => Value::String(raw.to_string()),
        Some(value) => value,
    }
}

/// Sets `key` in `table`, making the sections above it as needed.
pub(super) fn set_key(table: &mut Table, key: &[String], value: Value) -> Result<(), String> {
    let (last, sections) = key.split_last().ok_or("names no config key")?;
    let mut current = table;
    for (depth, section) in sections.iter().enumerate() {
        let entry = current.entry(section.clone()).or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(inner) => inner,
            _ => return Err(format!("config key `{}` is not a section", key[..=depth].join("."))),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn double_underscore_separates_sections_and_the_rest_is_lowercased() {
        assert_eq!(key_of("IDP_ISSUER").unwrap(), ["issuer"]);
        assert_eq!(key_of("IDP_HTTP__LISTEN").unwrap(), ["http", "listen"]);
        assert_eq!(key_of("IDP_LOGOUT__KEEP_OFFLINE_TOKENS").unwrap(), ["logout", "keep_offline_tokens"]);
    }

    #[test]
    fn empty_segments_name_no_key() {
        let error = key_of("IDP_HTTP____LISTEN").unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable `IDP_HTTP____LISTEN`: names no config key (expected IDP_KEY or IDP_SECTION__KEY)"
        );
        assert!(key_of("IDP_").is_err());
    }

    #[test]
    fn values_are_toml_when_they_parse_else_text() {
        assert_eq!(parse_value("64"), Value::Integer(64));
        assert_eq!(parse_value("true"), Value::Boolean(true));
        assert_eq!(parse_value(r#"["RS256","ES256"]"#), Value::Array(vec!["RS256".into(), "ES256".into()]));
        assert_eq!(parse_value(r#""quoted""#), Value::String("quoted".into()));
        assert_eq!(parse_value("0.0.0.0:8443"), Value::String("0.0.0.0:8443".into()));
        assert_eq!(parse_value("https://idp.example.com"), Value::String("https://idp.example.com".into()));
        assert_eq!(parse_value("1979-05-27"), Value::String("1979-05-27".into()));
        assert_eq!(parse_value(""), Value::String(String::new()));
    }

    #[test]
    fn overrides_replace_file_values_and_make_sections() {
        let mut table: Table =
            toml::from_str("issuer = \"https://a.example\"\n[http]\nlisten = \"127.0.0.1:1\"").unwrap();
        let variables = env(&[("IDP_HTTP__LISTEN", "0.0.0.0:2"), ("IDP_LOGOUT__KEEP_OFFLINE_TOKENS", "true")]);
        let overrides = apply_overrides(&mut table, variables).unwrap();
        assert_eq!(overrides.len(), 2);
        assert_eq!(table["http"]["listen"].as_str(), Some("0.0.0.0:2"));
        assert_eq!(table["logout"]["keep_offline_tokens"].as_bool(), Some(true));
    }

    #[test]
    fn non_config_and_foreign_variables_are_ignored() {
        let mut table = Table::new();
        let variables = env(&[("IDP_KEK", "c2VjcmV0"), ("IDP_LOG", "debug"), ("PATH", "/bin"), ("idp_issuer", "x")]);
        assert!(apply_overrides(&mut table, variables).unwrap().is_empty());
        assert!(table.is_empty());
    }

    #[test]
    fn a_value_cannot_be_entered_as_a_section() {
        let mut table: Table = toml::from_str("issuer = \"https://a.example\"").unwrap();
        let error = apply_overrides(&mut table, env(&[("IDP_ISSUER__HOST", "x")])).unwrap_err();
        assert_eq!(error.to_string(), "environment variable `IDP_ISSUER__HOST`: config key `issuer` is not a section");
    }

    #[test]
    fn two_variables_may_not_set_one_key() {
        let mut table = Table::new();
        let error = apply_overrides(&mut table, env(&[("IDP_ISSUER", "a"), ("IDP_issuer", "b")])).unwrap_err();
        assert_eq!(error.to_string(), "environment variable `IDP_issuer`: sets the same key as `IDP_ISSUER`");
    }
}
