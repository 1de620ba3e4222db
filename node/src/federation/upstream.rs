//! One upstream provider at run time: its endpoints (by discovery for `oidc`, cached, JWKS refreshed on an unknown
//! `kid`), the authorization URL the browser is sent to, and the callback's exchange of the code for the user's
//! claims: the ID token verified (issuer, audience, expiry, nonce, signature) and its claims merged with the
//! userinfo endpoint's for `oidc`, the userinfo endpoint (and the email list) for `oauth2`. The upstream's tokens end here: nothing of them reaches a relying party.

use super::http::{TransportError, UpstreamHttp};
use crate::config::UpstreamConfig;
use arc_swap::ArcSwapOption;
use idp_actors::jwt::Algorithm;
use idp_actors::keyring::keys::SigningKey;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreGrantType, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The JWKS is fetched again for an unknown `kid` at most this often (a flood of tokens naming random `kid`s
/// costs the upstream one request per interval).
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Discovery is fetched again after this long.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// Why a sign-in through an upstream failed; the `reason` label of the failure metric, and what the user and the
/// relying party are told.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Unreachable, or slower than the timeout: retry later (`temporarily_unavailable`).
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error("upstream timed out")]
    Timeout,
    /// The upstream answered with an OAuth error (at the callback or the token endpoint).
    #[error("upstream error: {0}")]
    ErrorResponse(String),
    /// The upstream's answer broke the protocol: an ID token that fails validation, a malformed answer.
    #[error("invalid upstream answer: {0}")]
    Invalid(String),
    /// The broker's own configuration cannot be used (a private key that does not load).
    #[error("upstream misconfigured: {0}")]
    Config(String),
    /// The relying party asked for a fresh login (`prompt=login`, `max_age`) that this upstream cannot vouch for:
    /// an `oauth2` upstream (no `prompt`, no `auth_time`), or an `auth_time` absent or too old
    /// (`login_required`).
    #[error("no fresh login: {0}")]
    NotFresh(String),
}

impl UpstreamError {
    /// The `reason` label of `idp_federation_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout => "timeout",
            Self::ErrorResponse(_) => "error_response",
            Self::Invalid(_) => "invalid_token",
            Self::Config(_) => "misconfigured",
            Self::NotFresh(_) => "not_fresh",
        }
    }

    /// Whether retrying later may help (the relying party is told `temporarily_unavailable`, else `access_denied`).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout)
    }
}

impl From<TransportError> for UpstreamError {
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::Timeout(_) => Self::Timeout,
            TransportError::TooLarge => Self::Invalid(error.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// What the browser is sent to the upstream with, and what the callback checks its answer against.
pub struct LoginSecrets<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
}

/// What the relying party asked of the login, passed on to an `oidc` upstream (OIDC Core §3.1.2.1).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoginDemand<'a> {
    /// `prompt=login` (or `max_age=0`).
    pub force_login: bool,
    pub max_age: Option<u64>,
    pub login_hint: Option<&'a str>,
}

impl LoginDemand<'_> {
    /// Whether the relying party wants an authentication of bounded age (which needs the upstream's `auth_time`).
    pub fn wants_fresh(&self) -> bool {
        self.force_login || self.max_age.is_some()
    }
}

/// Tolerated clock difference with an upstream when its `auth_time` is checked.
const AUTH_TIME_SKEW_SECS: u64 = 60;

/// The `auth_time` of a brokered login (seconds): the upstream's (OIDC Core §2), checked against what the relying
/// party asked: with `force_login`, no older than the moment the browser was sent upstream (`sent_at_secs`); with
/// `max_age`, no older than that many seconds; either demand without an `auth_time` fails. Without a demand and
/// without `auth_time` (an `oauth2` upstream, or one that omits it), the callback's time.
pub fn checked_auth_time(
    upstream_auth_time: Option<u64>,
    force_login: bool,
    max_age: Option<u64>,
    sent_at_secs: u64,
    now_secs: u64,
) -> Result<u64, UpstreamError> {
    let Some(auth_time) = upstream_auth_time else {
        if force_login || max_age.is_some() {
            return Err(UpstreamError::NotFresh("the upstream did not say when the user authenticated".into()));
        }
        return Ok(now_secs);
    };
    if auth_time > now_secs + AUTH_TIME_SKEW_SECS {
        return Err(UpstreamError::Invalid("the upstream's auth_time is in the future".into()));
    }
    if force_login && auth_time + AUTH_TIME_SKEW_SECS < sent_at_secs {
        return Err(UpstreamError::NotFresh("the upstream did not authenticate the user again".into()));
    }
    if max_age.is_some_and(|max_age| now_secs.saturating_sub(auth_time) > max_age + AUTH_TIME_SKEW_SECS) {
        return Err(UpstreamError::NotFresh("the upstream's authentication is older than max_age".into()));
    }
    Ok(auth_time.min(now_secs))
}

/// Discovery metadata beyond the core set that the broker reads.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct ExtraMetadata {
    /// RFC 9207 §3: the upstream puts `iss` in every authorization response, which must then be required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

impl openidconnect::AdditionalProviderMetadata for ExtraMetadata {}

/// The upstream's discovery document: the core metadata plus [`ExtraMetadata`].
pub type ProviderMetadata = openidconnect::ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

struct Discovered {
    metadata: ProviderMetadata,
    fetched_at: Instant,
    /// When the JWKS was last fetched again for an unknown `kid` (none yet: the first one is fetched at once).
    jwks_refreshed_at: Option<Instant>,
}

/// An upstream provider and its cached discovery.
pub struct Upstream {
    pub config: UpstreamConfig,
    http: UpstreamHttp,
    /// `oidc`: the provider metadata and JWKS.
    discovered: ArcSwapOption<Discovered>,
    refreshing: tokio::sync::Mutex<()>,
    /// `private_key_jwt`: the key, parsed once.
    assertion_key: Option<SigningKey>,
}

impl Upstream {
    /// Loads the private key of `private_key_jwt` now, so a bad file fails the start, not a sign-in.
    pub fn new(config: UpstreamConfig, pool: reqwest::Client) -> Result<Self, UpstreamError> {
        let assertion_key = match (&config.token_endpoint_auth_method[..], &config.private_key_file) {
            ("private_key_jwt", Some(path)) => Some(load_assertion_key(path, config.private_key_id.clone())?),
            _ => None,
        };
        Ok(Self {
            http: UpstreamHttp::new(pool, config.timeout),
            config,
            discovered: ArcSwapOption::empty(),
            refreshing: tokio::sync::Mutex::new(()),
            assertion_key,
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// RFC 9207 §2.4: whether an authorization response without `iss` must be refused (the upstream announces
    /// `authorization_response_iss_parameter_supported`; known from its discovery, which the start fetched).
    pub async fn requires_iss(&self) -> Result<bool, UpstreamError> {
        if !self.config.is_oidc() {
            return Ok(false);
        }
        let discovered = self.discovered().await?;
        Ok(discovered.metadata.additional_metadata().authorization_response_iss_parameter_supported == Some(true))
    }

    /// The URL the browser is sent to (OIDC Core §3.1.2.1 / RFC 6749 §4.1.1, with PKCE S256, RFC 7636 §4.3).
    /// `demand` goes along (`prompt=login`, `max_age`, `login_hint`) to an `oidc` upstream; an `oauth2` one cannot
    /// be asked for a fresh login, so a demand for one fails with [`UpstreamError::NotFresh`].
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        secrets: &LoginSecrets<'_>,
        demand: &LoginDemand<'_>,
    ) -> Result<String, UpstreamError> {
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(secrets.pkce_verifier.to_string()));
        if !self.config.is_oidc() {
            if demand.wants_fresh() {
                return Err(UpstreamError::NotFresh("this provider cannot be asked for a fresh sign-in".into()));
            }
            let mut url = url::Url::parse(self.config.authorize_url.as_deref().unwrap_or_default())
                .map_err(|error| UpstreamError::Config(error.to_string()))?;
            url.query_pairs_mut()
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("state", secrets.state)
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", "S256");
            let scopes = self.config.effective_scopes();
            if !scopes.is_empty() {
                url.query_pairs_mut().append_pair("scope", &scopes.join(" "));
            }
            if self.config.form_post {
                url.query_pairs_mut().append_pair("response_mode", "form_post");
            }
            return Ok(url.into());
        }
        let discovered = self.discovered().await?;
        let client = self.oidc_client(&discovered.metadata, redirect_uri)?;
        let (state, nonce) = (secrets.state.to_string(), secrets.nonce.to_string());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for scope in self.config.effective_scopes().into_iter().filter(|scope| scope != "openid") {
            request = request.add_scope(Scope::new(scope));
        }
        if self.config.form_post {
            request = request.add_extra_param("response_mode", "form_post");
        }
        if demand.force_login {
            request = request.add_prompt(openidconnect::core::CoreAuthPrompt::Login);
        }
        if let Some(max_age) = demand.max_age {
            request = request.set_max_age(Duration::from_secs(max_age));
        }
        if let Some(hint) = demand.login_hint {
            request = request.set_login_hint(openidconnect::LoginHint::new(hint.to_string()));
        }
        Ok(request.url().0.into())
    }

    /// Exchanges the code and returns the user's claims (a JSON object), validated.
    pub async fn claims(
        &self,
        code: &str,
        redirect_uri: &str,
        secrets: &LoginSecrets<'_>,
    ) -> Result<Value, UpstreamError> {
        if self.config.is_oidc() {
            self.oidc_claims(code, redirect_uri, secrets).await
        } else {
            self.oauth2_claims(code, redirect_uri, secrets).await
        }
    }

    /// The cached discovery, fetched when absent or stale.
    async fn discovered(&self) -> Result<Arc<Discovered>, UpstreamError> {
        if let Some(found) = self.discovered.load_full().filter(|found| found.fetched_at.elapsed() < DISCOVERY_TTL) {
            return Ok(found);
        }
        let _refreshing = self.refreshing.lock().await;
        if let Some(found) = self.discovered.load_full().filter(|found| found.fetched_at.elapsed() < DISCOVERY_TTL) {
            return Ok(found);
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone().unwrap_or_default())
            .map_err(|error| UpstreamError::Config(error.to_string()))?;
        let started = Instant::now();
        let metadata = ProviderMetadata::discover_async(issuer, &self.http).await;
        super::metrics::upstream_call(self.id(), "discovery", started.elapsed());
        let metadata = metadata.map_err(discovery_error)?;
        let found = Arc::new(Discovered { metadata, fetched_at: Instant::now(), jwks_refreshed_at: None });
        self.discovered.store(Some(found.clone()));
        Ok(found)
    }

    /// Fetches the JWKS again (an ID token named a `kid` it does not hold), at most once per interval.
    async fn refresh_jwks(&self, seen: &Arc<Discovered>) -> Result<Option<Arc<Discovered>>, UpstreamError> {
        let _refreshing = self.refreshing.lock().await;
        let current = self.discovered.load_full().unwrap_or_else(|| seen.clone());
        if !Arc::ptr_eq(&current, seen) {
            return Ok(Some(current));
        }
        if current.jwks_refreshed_at.is_some_and(|at| at.elapsed() < JWKS_REFRESH_INTERVAL) {
            return Ok(None);
        }
        let started = Instant::now();
        let jwks = CoreJsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &self.http).await;
        super::metrics::upstream_call(self.id(), "jwks", started.elapsed());
        let jwks = jwks.map_err(discovery_error)?;
        let metadata = current.metadata.clone().set_jwks(jwks);
        let refreshed =
            Arc::new(Discovered { metadata, fetched_at: current.fetched_at, jwks_refreshed_at: Some(Instant::now()) });
        self.discovered.store(Some(refreshed.clone()));
        Ok(Some(refreshed))
    }

    fn oidc_client(
        &self,
        metadata: &ProviderMetadata,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        UpstreamError,
    > {
        let secret = self.config.client_secret.clone().map(ClientSecret::new);
        let auth_type = match self.config.token_endpoint_auth_method.as_str() {
            "client_secret_basic" => AuthType::BasicAuth,
            _ => AuthType::RequestBody,
        };
        let redirect =
            RedirectUrl::new(redirect_uri.to_string()).map_err(|error| UpstreamError::Config(error.to_string()))?;
        Ok(CoreClient::from_provider_metadata(metadata.clone(), ClientId::new(self.config.client_id.clone()), secret)
            .set_auth_type(auth_type)
            .set_redirect_uri(redirect))
    }

    /// OIDC Core §3.1.3: the token request with the PKCE verifier, then the ID token's validation (§3.1.3.7).
    async fn oidc_claims(
        &self,
        code: &str,
        redirect_uri: &str,
        secrets: &LoginSecrets<'_>,
    ) -> Result<Value, UpstreamError> {
        let discovered = self.discovered().await?;
        let client = self.oidc_client(&discovered.metadata, redirect_uri)?;
        let mut request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|error| UpstreamError::Config(error.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(secrets.pkce_verifier.to_string()));
        let token_url = discovered.metadata.token_endpoint().map(|url| url.to_string()).unwrap_or_default();
        if let Some(assertion) = self.client_assertion(&token_url)? {
            request = request
                .add_extra_param("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                .add_extra_param("client_assertion", assertion);
        }
        let started = Instant::now();
        let response = request.request_async(&self.http).await;
        super::metrics::upstream_call(self.id(), "token", started.elapsed());
        let response = response.map_err(token_error)?;
        let Some(id_token) = openidconnect::TokenResponse::id_token(&response) else {
            return Err(UpstreamError::Invalid("the token response has no ID token".into()));
        };
        let nonce = Nonce::new(secrets.nonce.to_string());
        let mut discovered = discovered;
        for attempt in 0..2 {
            let client = self.oidc_client(&discovered.metadata, redirect_uri)?;
            let verifier = client_verifier(&client, &discovered.metadata);
            match id_token.claims(&verifier, &nonce) {
                Ok(_) => {
                    // Verified: its payload, with every claim (the typed claims keep only the standard ones).
                    let claims = jwt_payload(&id_token.to_string())?;
                    let access_token = openidconnect::OAuth2TokenResponse::access_token(&response).secret().clone();
                    return self.with_userinfo(&discovered.metadata, claims, &access_token).await;
                }
                // OIDC Core §10.1.1: a new signing key is announced in the JWKS; fetch it again once.
                Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
                    if attempt == 0 =>
                {
                    match self.refresh_jwks(&discovered).await? {
                        Some(refreshed) => discovered = refreshed,
                        None => break,
                    }
                }
                Err(error) => return Err(UpstreamError::Invalid(error.to_string())),
            }
        }
        Err(UpstreamError::Invalid("the ID token is signed with a key the upstream does not publish".into()))
    }

    /// OIDC Core §5.3: the userinfo endpoint, when the upstream has one, for the claims it returns only there
    /// (many return email and profile only from userinfo); its `sub` must be the ID token's (§5.3.4).
    async fn with_userinfo(
        &self,
        metadata: &ProviderMetadata,
        claims: Value,
        access_token: &str,
    ) -> Result<Value, UpstreamError> {
        let Some(url) = metadata.userinfo_endpoint() else { return Ok(claims) };
        let userinfo = self.get_json(url.as_str(), access_token, "userinfo").await?;
        merge_userinfo(claims, userinfo)
    }

    /// RFC 6749 §4.1.3 by hand (OAuth2-only providers answer JSON only when asked), then the userinfo endpoint
    /// and, when it gives no email, the email list.
    async fn oauth2_claims(
        &self,
        code: &str,
        redirect_uri: &str,
        secrets: &LoginSecrets<'_>,
    ) -> Result<Value, UpstreamError> {
        let token_url = self.config.token_url.clone().unwrap_or_default();
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", secrets.pkce_verifier.to_string()),
        ];
        let mut request = self.http.client().post(&token_url).header("accept", "application/json");
        match (self.config.token_endpoint_auth_method.as_str(), &self.config.client_secret) {
            ("client_secret_basic", Some(secret)) => {
                let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
                request = request.basic_auth(encode(&self.config.client_id), Some(encode(secret)));
            }
            (_, secret) => {
                form.push(("client_id", self.config.client_id.clone()));
                form.extend(secret.clone().map(|secret| ("client_secret", secret)));
            }
        }
        if let Some(assertion) = self.client_assertion(&token_url)? {
            form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
            form.push(("client_assertion", assertion));
        }
        let started = Instant::now();
        let answer = self.http.send(request.form(&form)).await;
        super::metrics::upstream_call(self.id(), "token", started.elapsed());
        let token = json_answer(answer?)?;
        if let Some(error) = token.get("error").and_then(Value::as_str) {
            return Err(UpstreamError::ErrorResponse(error.chars().take(64).collect()));
        }
        let Some(access_token) = token.get("access_token").and_then(Value::as_str) else {
            return Err(UpstreamError::Invalid("the token response has no access_token".into()));
        };
        let mut claims =
            self.get_json(self.config.userinfo_url.as_deref().unwrap_or_default(), access_token, "userinfo").await?;
        if !claims.is_object() {
            return Err(UpstreamError::Invalid("the userinfo answer is not a JSON object".into()));
        }
        if let Some(emails_url) = self.config.emails_url.clone() {
            // Always asked when configured: a public profile address is verified only if the list says so.
            let list = self.get_json(&emails_url, access_token, "emails").await?;
            let email_claim = self.config.claims.email.clone();
            let claimed = claims.get(&email_claim).and_then(Value::as_str).map(str::to_string);
            if let Some((email, verified)) = super::account::email_with_list(claimed.as_deref(), &list) {
                claims[email_claim] = Value::String(email);
                claims[self.config.claims.email_verified.clone()] = Value::Bool(verified);
            }
        }
        Ok(claims)
    }

    async fn get_json(&self, url: &str, access_token: &str, step: &'static str) -> Result<Value, UpstreamError> {
        let request = self.http.client().get(url).bearer_auth(access_token).header("accept", "application/json");
        let started = Instant::now();
        let answer = self.http.send(request).await;
        super::metrics::upstream_call(self.id(), step, started.elapsed());
        let (status, body) = answer?;
        if status >= 500 {
            return Err(UpstreamError::Unavailable(format!("{step} answered HTTP {status}")));
        }
        if status != 200 {
            return Err(UpstreamError::ErrorResponse(format!("{step} answered HTTP {status}")));
        }
        json_answer((status, body))
    }

    /// RFC 7523 §2.2 client assertion for `private_key_jwt`: signed by the configured key, one minute long.
    fn client_assertion(&self, audience: &str) -> Result<Option<String>, UpstreamError> {
        let Some(key) = &self.assertion_key else { return Ok(None) };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let jti = idp_proto::RecordId::random().to_base64();
        let claims = serde_json::json!({
            "iss": self.config.client_id, "sub": self.config.client_id, "aud": audience,
            "jti": jti, "iat": now, "exp": now + 60,
        });
        key.try_sign_jwt("JWT", &claims).map(Some).map_err(|error| UpstreamError::Config(error.to_string()))
    }
}

/// The ID token verifier of the client: issuer, audience, expiry and signature with the upstream's JWKS; the
/// algorithms the upstream announces (never `none`, never an HMAC keyed with the client secret).
fn client_verifier<'a, C>(
    client: &'a CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    metadata: &C,
) -> openidconnect::core::CoreIdTokenVerifier<'a>
where
    C: std::borrow::Borrow<ProviderMetadata>,
{
    let announced = metadata.borrow().id_token_signing_alg_values_supported().clone();
    let allowed: Vec<CoreJwsSigningAlgorithm> = announced
        .into_iter()
        .filter(|alg| {
            !matches!(
                alg,
                CoreJwsSigningAlgorithm::None
                    | CoreJwsSigningAlgorithm::HmacSha256
                    | CoreJwsSigningAlgorithm::HmacSha384
                    | CoreJwsSigningAlgorithm::HmacSha512
            )
        })
        .collect();
    client.id_token_verifier().set_allowed_algs(allowed)
}

/// The JSON payload of a compact JWS (already verified by the caller).
fn jwt_payload(token: &str) -> Result<Value, UpstreamError> {
    use base64::Engine;
    let invalid = || UpstreamError::Invalid("the ID token's payload is not a JSON object".into());
    let payload = token.split('.').nth(1).ok_or_else(invalid)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    value.is_object().then_some(value).ok_or_else(invalid)
}

/// The ID token's claims plus the userinfo answer's (the ID token's win where both have one); a userinfo answer
/// about another `sub`, or that is no JSON object, is refused.
fn merge_userinfo(mut claims: Value, userinfo: Value) -> Result<Value, UpstreamError> {
    let Value::Object(userinfo) = userinfo else {
        return Err(UpstreamError::Invalid("the userinfo answer is not a JSON object".into()));
    };
    if userinfo.get("sub") != claims.get("sub") || claims.get("sub").is_none() {
        return Err(UpstreamError::Invalid("the userinfo answer is about another subject".into()));
    }
    let Some(object) = claims.as_object_mut() else { return Err(UpstreamError::Invalid("no claims".into())) };
    for (name, value) in userinfo {
        object.entry(name).or_insert(value);
    }
    Ok(claims)
}

fn json_answer((status, body): (u16, Vec<u8>)) -> Result<Value, UpstreamError> {
    if status >= 500 {
        return Err(UpstreamError::Unavailable(format!("upstream answered HTTP {status}")));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| UpstreamError::Invalid(format!("the upstream answered HTTP {status} without JSON")))?;
    if status != 200 && value.get("error").is_none() {
        return Err(UpstreamError::ErrorResponse(format!("upstream answered HTTP {status}")));
    }
    Ok(value)
}

fn discovery_error(error: openidconnect::DiscoveryError<TransportError>) -> UpstreamError {
    match error {
        openidconnect::DiscoveryError::Request(transport) => transport.into(),
        openidconnect::DiscoveryError::Response(status, _, _) if status.as_u16() >= 500 => {
            UpstreamError::Unavailable(format!("discovery answered HTTP {status}"))
        }
        other => UpstreamError::Invalid(format!("discovery: {other}")),
    }
}

fn token_error(
    error: RequestTokenError<
        TransportError,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> UpstreamError {
    match error {
        RequestTokenError::Request(transport) => transport.into(),
        RequestTokenError::ServerResponse(response) => {
            UpstreamError::ErrorResponse(response.error().as_ref().chars().take(64).collect())
        }
        RequestTokenError::Parse(_, body) if body.is_empty() => {
            UpstreamError::Unavailable("the token endpoint answered without a body".into())
        }
        other => UpstreamError::Invalid(format!("token response: {other}")),
    }
}

/// A PEM private key (PKCS#8 RSA for RS256, P-256 for ES256, or Ed25519) for `private_key_jwt`.
fn load_assertion_key(path: &std::path::Path, kid: Option<String>) -> Result<SigningKey, UpstreamError> {
    let key = crate::tls::read_private_key(path).map_err(|error| UpstreamError::Config(error.to_string()))?;
    let rustls_pki_types::PrivateKeyDer::Pkcs8(der) = key else {
        return Err(UpstreamError::Config(format!("{}: private_key_file must be PKCS#8", path.display())));
    };
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let Ok(key) = SigningKey::from_pkcs8(kid.clone().unwrap_or_default(), alg, der.secret_pkcs8_der()) else {
            continue;
        };
        if kid.is_some() {
            return Ok(key);
        }
        // No `private_key_id`: the key's RFC 7638 thumbprint, the usual `kid` of a key registered as a JWK.
        let thumbprint = idp_actors::keyring::keys::thumbprint(&key.public_jwk()).unwrap_or_default();
        return SigningKey::from_pkcs8(thumbprint, alg, der.secret_pkcs8_der())
            .map_err(|error| UpstreamError::Config(error.to_string()));
    }
    Err(UpstreamError::Config(format!("{}: not an RSA, P-256 or Ed25519 private key", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT: u64 = 1_000_000;
    const NOW: u64 = SENT + 30;

    #[test]
    fn every_claim_of_the_id_token_is_kept_and_userinfo_adds_its_own() {
        use base64::Engine;
        let payload = serde_json::json!({"sub": "u-1", "oid": "0000-1", "email_verified": "true"});
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
        let claims = jwt_payload(&format!("eyJhbGciOiJSUzI1NiJ9.{encoded}.c2ln")).unwrap();
        assert_eq!(claims["oid"], "0000-1", "a non-standard claim survives");
        assert!(jwt_payload("not-a-jwt").is_err());
        let userinfo = serde_json::json!({"sub": "u-1", "email": "a@x.example", "oid": "other"});
        let merged = merge_userinfo(claims.clone(), userinfo).unwrap();
        assert_eq!((merged["email"].as_str(), merged["oid"].as_str()), (Some("a@x.example"), Some("0000-1")));
        let other = serde_json::json!({"sub": "u-2", "email": "evil@x.example"});
        assert!(matches!(merge_userinfo(claims.clone(), other), Err(UpstreamError::Invalid(_))));
        assert!(merge_userinfo(claims, serde_json::json!(["sub"])).is_err());
    }

    #[test]
    fn the_upstreams_auth_time_is_ours_and_must_honour_the_demand() {
        assert_eq!(checked_auth_time(Some(SENT - 5000), false, None, SENT, NOW).unwrap(), SENT - 5000);
        assert_eq!(checked_auth_time(None, false, None, SENT, NOW).unwrap(), NOW, "no demand, no auth_time");
        assert_eq!(checked_auth_time(Some(SENT + 10), true, None, SENT, NOW).unwrap(), SENT + 10);
        assert_eq!(checked_auth_time(Some(NOW - 100), false, Some(300), SENT, NOW).unwrap(), NOW - 100);
        let not_fresh = |result: Result<u64, UpstreamError>| matches!(result, Err(UpstreamError::NotFresh(_)));
        assert!(not_fresh(checked_auth_time(None, true, None, SENT, NOW)), "prompt=login needs auth_time");
        assert!(not_fresh(checked_auth_time(None, false, Some(300), SENT, NOW)), "max_age needs auth_time");
        assert!(not_fresh(checked_auth_time(Some(SENT - 5000), true, None, SENT, NOW)), "an SSO answer");
        assert!(not_fresh(checked_auth_time(Some(NOW - 1000), false, Some(300), SENT, NOW)), "older than max_age");
        assert!(matches!(checked_auth_time(Some(NOW + 3600), false, None, SENT, NOW), Err(UpstreamError::Invalid(_))));
    }
}
