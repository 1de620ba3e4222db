//! Client metadata of a registration request (RFC 7591 §2, OpenID Connect Dynamic Client Registration 1.0 §2) to
//! a client of the directory, and back. Pure: the handlers call these, the store applies the config file's rules
//! after them.

use crate::config::ClientConfig;
use crate::directory::StoredClient;
use crate::oauth::SUPPORTED_SCOPES;
use serde_json::{json, Map, Value};

/// RFC 7591 §3.2.2 error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    InvalidRedirectUri(String),
    InvalidClientMetadata(String),
}

impl MetadataError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRedirectUri(_) => "invalid_redirect_uri",
            Self::InvalidClientMetadata(_) => "invalid_client_metadata",
        }
    }

    pub fn description(&self) -> &str {
        match self {
            Self::InvalidRedirectUri(text) | Self::InvalidClientMetadata(text) => text,
        }
    }

    /// The error for a config-rule failure on `field` (redirect URIs get their own code).
    pub fn for_field(field: &str, reason: &str) -> Self {
        let text = if field.is_empty() { reason.to_string() } else { format!("{field}: {reason}") };
        if field.starts_with("redirect_uris") || field.starts_with("post_logout_redirect_uris") {
            Self::InvalidRedirectUri(text)
        } else {
            Self::InvalidClientMetadata(text)
        }
    }
}

fn metadata_error(text: impl Into<String>) -> MetadataError {
    MetadataError::InvalidClientMetadata(text.into())
}

/// A list of strings, or `default` when absent.
fn strings(metadata: &Map<String, Value>, name: &str, default: &[&str]) -> Result<Vec<String>, MetadataError> {
    match metadata.get(name) {
        None | Some(Value::Null) => Ok(default.iter().map(|text| text.to_string()).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| MetadataError::for_field(name, "must be an array of strings")),
        Some(_) => Err(MetadataError::for_field(name, "must be an array of strings")),
    }
}

fn string(metadata: &Map<String, Value>, name: &str) -> Result<Option<String>, MetadataError> {
    match metadata.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(metadata_error(format!("{name}: must be a string"))),
    }
}

/// The grants a response type needs (RFC 7591 §2.1: `code` ↔ `authorization_code`, `token` ↔ `implicit`; an
/// `id_token` is returned from the authorization endpoint too, so it needs `implicit` as well).
fn needs_implicit(response_type: &str) -> bool {
    response_type.split(' ').any(|part| part == "token" || part == "id_token")
}

/// The client a registration request describes, with the given id and secret (a secret-based method only).
/// Checks what the config file's rules do not: grant and response type consistency, `application_type` rules for
/// redirect URIs, the standard scopes only, no `jwks_uri`.
pub fn client_from_metadata(
    metadata: &Map<String, Value>,
    client_id: String,
    secret: Option<String>,
) -> Result<ClientConfig, MetadataError> {
    if metadata.contains_key("jwks_uri") {
        return Err(metadata_error("jwks_uri is not supported: register the keys by value in jwks"));
    }
    let redirect_uris = strings(metadata, "redirect_uris", &[])?;
    let post_logout_redirect_uris = strings(metadata, "post_logout_redirect_uris", &[])?;
    let mut grant_types = strings(metadata, "grant_types", &["authorization_code"])?;
    let response_types = strings(metadata, "response_types", &["code"])?;
    let has_grant = |grant: &str| grant_types.iter().any(|granted| granted == grant);
    for response_type in &response_types {
        if response_type.split(' ').any(|part| part == "code") && !has_grant("authorization_code") {
            return Err(metadata_error(format!("response type `{response_type}` needs the authorization_code grant")));
        }
        if needs_implicit(response_type) && !has_grant("implicit") {
            return Err(metadata_error(format!("response type `{response_type}` needs the implicit grant")));
        }
    }
    if has_grant("implicit") && !response_types.iter().any(|response_type| needs_implicit(response_type)) {
        return Err(metadata_error("the implicit grant needs a response type with token or id_token"));
    }
    let implicit = has_grant("implicit");
    grant_types.retain(|grant| grant != "implicit");
    let application_type = string(metadata, "application_type")?.unwrap_or_else(|| "web".into());
    check_application_type(&application_type, &redirect_uris, implicit)?;
    let scopes: Vec<String> = match string(metadata, "scope")? {
        Some(scope) => scope.split(' ').filter(|scope| !scope.is_empty()).map(str::to_string).collect(),
        None => Vec::new(),
    };
    if let Some(refused) = scopes.iter().find(|scope| !SUPPORTED_SCOPES.contains(&scope.as_str())) {
        return Err(metadata_error(format!("scope `{refused}` may not be registered")));
    }
    let token_endpoint_auth_method =
        string(metadata, "token_endpoint_auth_method")?.unwrap_or_else(|| "client_secret_basic".into());
    let jwks = match metadata.get("jwks") {
        None | Some(Value::Null) => None,
        Some(jwks @ Value::Object(_)) => Some(jwks.clone()),
        Some(_) => return Err(metadata_error("jwks: must be a JWK Set object")),
    };
    Ok(ClientConfig {
        client_id,
        name: string(metadata, "client_name")?,
        client_secret: secret,
        redirect_uris,
        post_logout_redirect_uris,
        grant_types,
        response_types,
        token_endpoint_auth_method,
        id_token_signed_response_alg: string(metadata, "id_token_signed_response_alg")?
            .unwrap_or_else(|| "RS256".into()),
        // A client anyone with a registration token made is never trusted to skip consent.
        first_party: false,
        jwks,
        scopes,
        default_audience: None,
        audiences: Vec::new(),
    })
}

/// OIDC Registration §2 `application_type`: a `web` client using the implicit grant registers https URIs not on
/// localhost; a `native` client registers custom schemes, loopback http, or https (RFC 8252 §7).
fn check_application_type(
    application_type: &str,
    redirect_uris: &[String],
    implicit: bool,
) -> Result<(), MetadataError> {
    if !matches!(application_type, "web" | "native") {
        return Err(metadata_error("application_type: must be `web` or `native`"));
    }
    for (index, uri) in redirect_uris.iter().enumerate() {
        let Ok(url) = url::Url::parse(uri) else {
            return Err(MetadataError::for_field(&format!("redirect_uris[{index}]"), "must be an absolute URI"));
        };
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        let refused = match application_type {
            "web" => implicit && (url.scheme() != "https" || loopback),
            _ => url.scheme() == "http" && !loopback,
        };
        if refused {
            let reason = match application_type {
                "web" => "a web client using the implicit grant must use https and not localhost",
                _ => "a native client uses a custom scheme, loopback http, or https",
            };
            return Err(MetadataError::for_field(&format!("redirect_uris[{index}]"), reason));
        }
    }
    Ok(())
}

/// The registered metadata of a client (RFC 7591 §3.2.1), without secrets or the registration access token.
pub fn metadata_of(client: &StoredClient) -> Value {
    let mut grant_types = client.grant_types.clone();
    if client.response_types.iter().any(|response_type| needs_implicit(response_type)) {
        grant_types.push("implicit".into());
    }
    let mut metadata = json!({
        "client_id": client.client_id,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "grant_types": grant_types,
        "response_types": client.response_types,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
    });
    if let Some(name) = &client.name {
        metadata["client_name"] = name.as_str().into();
    }
    if !client.scopes.is_empty() {
        metadata["scope"] = client.scopes.join(" ").into();
    }
    if let Some(jwks) = &client.jwks {
        metadata["jwks"] = jwks.clone();
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<ClientConfig, MetadataError> {
        client_from_metadata(value.as_object().unwrap(), "c1".into(), Some("s".into()))
    }

    #[test]
    fn defaults_follow_rfc_7591() {
        let client = parse(json!({"redirect_uris": ["https://app.example/cb"]})).unwrap();
        assert_eq!(client.grant_types, ["authorization_code"]);
        assert_eq!(client.response_types, ["code"]);
        assert_eq!(client.token_endpoint_auth_method, "client_secret_basic");
        assert!(!client.first_party);
    }

    #[test]
    fn grant_and_response_types_must_agree() {
        let cases = [
            json!({"grant_types": ["client_credentials"], "response_types": ["code"]}),
            json!({"response_types": ["code id_token"]}),
            json!({"grant_types": ["authorization_code", "implicit"], "response_types": ["code"]}),
        ];
        for case in cases {
            assert_eq!(parse(case.clone()).unwrap_err().code(), "invalid_client_metadata", "{case}");
        }
        let hybrid = json!({"redirect_uris": ["https://app.example/cb"], "grant_types": ["authorization_code", "implicit"],
            "response_types": ["code id_token"]});
        let client = parse(hybrid).unwrap();
        assert_eq!(client.grant_types, ["authorization_code"], "implicit is implied by the response types");
        assert_eq!(metadata_of(&stored(&client))["grant_types"], json!(["authorization_code", "implicit"]));
    }

    #[test]
    fn redirect_uri_rules_per_application_type() {
        let web_implicit =
            |uri: &str| json!({"redirect_uris": [uri], "grant_types": ["implicit"], "response_types": ["id_token"]});
        assert_eq!(parse(web_implicit("http://localhost/cb")).unwrap_err().code(), "invalid_redirect_uri");
        assert_eq!(parse(web_implicit("https://localhost/cb")).unwrap_err().code(), "invalid_redirect_uri");
        assert!(parse(web_implicit("https://app.example/cb")).is_ok());
        let native = |uri: &str| json!({"application_type": "native", "redirect_uris": [uri]});
        assert!(parse(native("com.example.app:/cb")).is_ok());
        assert!(parse(native("http://127.0.0.1:7000/cb")).is_ok());
        assert_eq!(parse(native("http://app.example/cb")).unwrap_err().code(), "invalid_redirect_uri");
        assert_eq!(parse(json!({"redirect_uris": ["not a uri"]})).unwrap_err().code(), "invalid_redirect_uri");
        assert_eq!(parse(json!({"redirect_uris": "https://a/cb"})).unwrap_err().code(), "invalid_redirect_uri");
        assert_eq!(parse(json!({"application_type": "desktop"})).unwrap_err().code(), "invalid_client_metadata");
    }

    #[test]
    fn only_standard_scopes_and_jwks_by_value() {
        assert_eq!(parse(json!({"scope": "openid idp:admin"})).unwrap_err().code(), "invalid_client_metadata");
        assert_eq!(parse(json!({"scope": "openid email"})).unwrap().scopes, ["openid", "email"]);
        assert_eq!(parse(json!({"jwks_uri": "https://a/jwks"})).unwrap_err().code(), "invalid_client_metadata");
        assert_eq!(parse(json!({"jwks": [1]})).unwrap_err().code(), "invalid_client_metadata");
    }

    fn stored(client: &ClientConfig) -> StoredClient {
        StoredClient::from_config(client, &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[0; 32]))
    }
}
