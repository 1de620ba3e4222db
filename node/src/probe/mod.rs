//! `idp probe`: a synthetic monitor that runs a full login against a deployment as a browser and a relying party
//! would: discovery, JWKS, authorization request, login form, consent (when asked), code exchange with PKCE,
//! ID token verification against the JWKS, userinfo, and optionally a refresh. It prints each step's latency and
//! fails with the step that failed (exit code 1), so it can run from cron, a Kubernetes CronJob or a blackbox
//! exporter's script prober.
//!
//! It needs a client registered for it (with `--redirect-uri` among its redirect URIs; the redirect is never
//! followed, so nothing needs to listen there) and a test user.

pub mod html;

use anyhow::{anyhow, bail, ensure, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Args;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The issuer to probe (its discovery document is read from ISSUER/.well-known/openid-configuration).
    #[arg(long)]
    pub issuer: String,
    /// The probe's client.
    #[arg(long)]
    pub client_id: String,
    /// The client's secret (client_secret_basic); absent for a public client.
    #[arg(long, env = "IDP_PROBE_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// A redirect URI registered for the client (never followed).
    #[arg(long)]
    pub redirect_uri: String,
    /// The test user's username.
    #[arg(long)]
    pub username: String,
    /// The test user's password.
    #[arg(long, env = "IDP_PROBE_PASSWORD", hide_env_values = true)]
    pub password: String,
    #[arg(long, default_value = "openid profile")]
    pub scope: String,
    /// Also redeem the refresh token (asks `offline_access`).
    #[arg(long)]
    pub refresh: bool,
    /// Longest time for each HTTP request.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub timeout: Duration,
    /// PEM CA certificate(s) of the deployment's TLS certificate (else the system's roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text).map_err(|error| error.to_string())
}

/// One step's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ms: f64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The report of one probe run: the steps run, in order; the last failed if any did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    pub fn failed_step(&self) -> Option<&Step> {
        self.steps.iter().find(|step| !step.ok)
    }

    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let status =
                if step.ok { "ok".to_string() } else { format!("FAILED: {}", step.error.as_deref().unwrap_or("")) };
            out.push_str(&format!("{:<10} {:>9.1} ms  {status}\n", step.name, step.ms));
        }
        let total: f64 = self.steps.iter().map(|step| step.ms).sum();
        let verdict = match self.failed_step() {
            Some(step) => format!("probe failed at step {}", step.name),
            None => "probe succeeded".into(),
        };
        out.push_str(&format!("{:<10} {total:>9.1} ms  {verdict}\n", "total"));
        out
    }
}

/// Runs the steps in order, stopping at the first failure.
pub async fn run(args: &ProbeArgs) -> Report {
    let mut probe = match Probe::new(args) {
        Ok(probe) => probe,
        Err(error) => {
            return Report {
                steps: vec![Step { name: "setup", ms: 0.0, ok: false, error: Some(format!("{error:#}")) }],
            };
        }
    };
    let mut report = Report::default();
    let steps: [&'static str; 9] =
        ["discovery", "jwks", "authorize", "login", "token", "id_token", "userinfo", "refresh", "done"];
    for name in steps {
        if name == "done" || (name == "refresh" && !args.refresh) {
            continue;
        }
        let started = Instant::now();
        let result = probe.step(name).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let failed = result.is_err();
        report.steps.push(Step { name, ms, ok: !failed, error: result.err().map(|error| format!("{error:#}")) });
        if failed {
            break;
        }
    }
    report
}

/// The probe's state between steps.
struct Probe<'a> {
    args: &'a ProbeArgs,
    http: reqwest::Client,
    metadata: Value,
    keys: Vec<idp_actors::jwt::VerifyingKey>,
    page: Option<(String, String)>,
    state: String,
    nonce: String,
    verifier: String,
    code: Option<String>,
    tokens: Value,
    subject: Option<String>,
}

impl<'a> Probe<'a> {
    fn new(args: &'a ProbeArgs) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(args.timeout);
        if let Some(ca) = &args.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem).context("--ca: PEM certificates")? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let random = || URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        Ok(Self {
            args,
            http: builder.build()?,
            metadata: Value::Null,
            keys: Vec::new(),
            page: None,
            state: random(),
            nonce: random(),
            verifier: random(),
            code: None,
            tokens: Value::Null,
            subject: None,
        })
    }

    async fn step(&mut self, name: &str) -> anyhow::Result<()> {
        match name {
            "discovery" => self.discovery().await,
            "jwks" => self.jwks().await,
            "authorize" => self.authorize().await,
            "login" => self.login().await,
            "token" => self.token().await,
            "id_token" => self.id_token(),
            "userinfo" => self.userinfo().await,
            "refresh" => self.refresh().await,
            other => bail!("unknown step {other}"),
        }
    }

    fn endpoint(&self, name: &str) -> anyhow::Result<String> {
        self.metadata[name].as_str().map(str::to_string).ok_or_else(|| anyhow!("discovery names no {name}"))
    }

    async fn discovery(&mut self) -> anyhow::Result<()> {
        let issuer = self.args.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let response = self.http.get(&url).send().await?;
        ensure!(response.status().is_success(), "GET {url}: {}", response.status());
        self.metadata = response.json().await.context("discovery is not JSON")?;
        ensure!(
            self.metadata["issuer"] == issuer,
            "discovery names issuer {} (OIDC Discovery §4.3)",
            self.metadata["issuer"]
        );
        Ok(())
    }

    async fn jwks(&mut self) -> anyhow::Result<()> {
        let url = self.endpoint("jwks_uri")?;
        let response = self.http.get(&url).send().await?;
        ensure!(response.status().is_success(), "GET {url}: {}", response.status());
        let jwks: Value = response.json().await.context("the JWKS is not JSON")?;
        self.keys = idp_actors::jwt::verifying_keys_from_jwks(&jwks).map_err(|error| anyhow!("JWKS: {error}"))?;
        ensure!(!self.keys.is_empty(), "the JWKS has no usable signing key");
        Ok(())
    }

    async fn authorize(&mut self) -> anyhow::Result<()> {
        let challenge = URL_SAFE_NO_PAD
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.verifier.as_bytes()).as_ref());
        let scope =
            if self.args.refresh { format!("{} offline_access", self.args.scope) } else { self.args.scope.clone() };
        let mut url = url::Url::parse(&self.endpoint("authorization_endpoint")?)?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.args.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.args.redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", &self.state)
            .append_pair("nonce", &self.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", "login");
        let response = self.http.get(url.clone()).send().await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status.is_success(), "GET /authorize: {status}: {}", html::summary(&body));
        ensure!(html::input_value(&body, "pending").is_some(), "no login form in the answer: {}", html::summary(&body));
        self.page = Some((url.to_string(), body));
        Ok(())
    }

    /// Submits the login form (and the consent form if asked) until the redirect to the client.
    async fn login(&mut self) -> anyhow::Result<()> {
        let (base, body) = self.page.take().context("no login form")?;
        let mut form = html::form(&base, &body).context("no form on the login page")?;
        form.fields.retain(|(name, _)| name != "username" && name != "password");
        form.fields.push(("username".into(), self.args.username.clone()));
        form.fields.push(("password".into(), self.args.password.clone()));
        let mut response = self.http.post(&form.action).form(&form.fields).send().await?;
        for _ in 0..6 {
            let status = response.status();
            if let Some(location) = response.headers().get("location").and_then(|value| value.to_str().ok()) {
                let location = url::Url::parse(&base)?.join(location)?;
                if location.as_str().starts_with(&self.args.redirect_uri) {
                    return self.take_code(&location);
                }
                response = self.http.get(location).send().await?;
                continue;
            }
            let page = response.text().await?;
            if html::input_value(&page, "password").is_some() || page.contains("name=\"password\"") {
                bail!("the login was refused ({status}): {}", html::summary(&page));
            }
            // A consent page: allow.
            let mut consent = html::form(&base, &page)
                .with_context(|| format!("unexpected page ({status}): {}", html::summary(&page)))?;
            consent.fields.push(("decision".into(), "allow".into()));
            response = self.http.post(&consent.action).form(&consent.fields).send().await?;
        }
        bail!("too many redirects before the answer to the client")
    }

    fn take_code(&mut self, location: &url::Url) -> anyhow::Result<()> {
        let param =
            |name: &str| location.query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned());
        if let Some(error) = param("error") {
            bail!("the authorization answered error {error}: {}", param("error_description").unwrap_or_default());
        }
        ensure!(param("state").as_deref() == Some(self.state.as_str()), "state does not round-trip");
        if let Some(iss) = param("iss") {
            ensure!(iss == self.args.issuer.trim_end_matches('/'), "iss {iss} is not the issuer (RFC 9207)");
        }
        self.code = Some(param("code").context("no code in the answer")?);
        Ok(())
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> anyhow::Result<Value> {
        let mut fields = form.to_vec();
        let mut request = self.http.post(self.endpoint("token_endpoint")?);
        match &self.args.client_secret {
            Some(secret) => request = request.basic_auth(&self.args.client_id, Some(secret)),
            None => fields.push(("client_id", &self.args.client_id)),
        }
        let response = request.form(&fields).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "token endpoint: {status}: {}", body["error"]);
        Ok(body)
    }

    async fn token(&mut self) -> anyhow::Result<()> {
        let code = self.code.clone().context("no code")?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", self.args.redirect_uri.as_str()),
            ("code_verifier", self.verifier.as_str()),
        ];
        self.tokens = self.token_request(&form).await?;
        ensure!(self.tokens["access_token"].is_string(), "no access token");
        Ok(())
    }

    /// OIDC Core §3.1.3.7: signature against the JWKS, issuer, audience, expiry, nonce.
    fn id_token(&mut self) -> anyhow::Result<()> {
        let token = self.tokens["id_token"].as_str().context("no ID token (is openid in --scope?)")?;
        let (_, claims) = idp_actors::jwt::verify(token, &self.keys).map_err(|error| anyhow!("signature: {error}"))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        ensure!(claims.get("iss").and_then(Value::as_str) == Some(self.args.issuer.trim_end_matches('/')), "wrong iss");
        let audience_ok = match claims.get("aud") {
            Some(Value::String(audience)) => audience == &self.args.client_id,
            Some(Value::Array(audiences)) => audiences.iter().any(|audience| audience == self.args.client_id.as_str()),
            _ => false,
        };
        ensure!(audience_ok, "the ID token is not for this client");
        ensure!(claims.get("exp").and_then(Value::as_u64).is_some_and(|exp| exp > now), "the ID token is expired");
        ensure!(claims.get("nonce").and_then(Value::as_str) == Some(self.nonce.as_str()), "nonce mismatch");
        self.subject = claims.get("sub").and_then(Value::as_str).map(str::to_string);
        Ok(())
    }

    async fn userinfo(&mut self) -> anyhow::Result<()> {
        let access_token = self.tokens["access_token"].as_str().context("no access token")?;
        let response = self.http.get(self.endpoint("userinfo_endpoint")?).bearer_auth(access_token).send().await?;
        let status = response.status();
        ensure!(status.is_success(), "userinfo: {status}");
        let claims: Value = response.json().await?;
        ensure!(claims["sub"].as_str() == self.subject.as_deref(), "userinfo sub differs from the ID token's");
        Ok(())
    }

    async fn refresh(&mut self) -> anyhow::Result<()> {
        let refresh_token = self.tokens["refresh_token"].as_str().context("no refresh token issued")?.to_string();
        let body = self.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &refresh_token)]).await?;
        ensure!(body["access_token"].is_string(), "no access token from the refresh");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_failed_step() {
        let report = Report {
            steps: vec![
                Step { name: "discovery", ms: 1.5, ok: true, error: None },
                Step { name: "jwks", ms: 2.0, ok: false, error: Some("GET /jwks: 503".into()) },
            ],
        };
        assert_eq!(report.failed_step().unwrap().name, "jwks");
        let text = report.render_text();
        assert!(text.contains("discovery        1.5 ms  ok"), "{text}");
        assert!(text.contains("jwks             2.0 ms  FAILED: GET /jwks: 503"), "{text}");
        assert!(text.ends_with("total            3.5 ms  probe failed at step jwks\n"), "{text}");
    }
}
