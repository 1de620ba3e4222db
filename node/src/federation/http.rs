//! The HTTP client toward upstream providers: reqwest 0.13 on rustls with aws-lc-rs (one TLS stack, no ring),
//! handed to the `openidconnect` crate through its `AsyncHttpClient` trait. Every request has the upstream's
//! timeout; redirects are not followed (an OAuth endpoint that redirects is misconfigured, and following could
//! leak a code or a token to another host).

use futures::future::BoxFuture;
use std::time::Duration;

/// Why a request to an upstream failed before it gave an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("malformed upstream request: {0}")]
    Request(String),
}

/// A client for one upstream: the shared connection pool and that upstream's timeout.
#[derive(Clone)]
pub struct UpstreamHttp {
    client: reqwest::Client,
    timeout: Duration,
}

impl UpstreamHttp {
    /// A pooled client; `timeout` bounds each whole request (connect, send, read the body).
    pub fn new(client: reqwest::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    /// The shared pool of every upstream: no redirects, TLS through rustls with aws-lc-rs.
    pub fn pool() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("idp/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request built from the shared pool, with the timeout; the answer's status and body.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), TransportError> {
        let timeout = self.timeout;
        let exchange = async {
            let response = request.timeout(timeout).send().await.map_err(|error| classify(error, timeout))?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(|error| classify(error, timeout))?;
            Ok((status, body.to_vec()))
        };
        // reqwest's own timeout covers the body too; this outer bound also covers a stalled connect.
        match tokio::time::timeout(timeout + Duration::from_millis(50), exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    async fn call(&self, request: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, TransportError> {
        let (parts, body) = request.into_parts();
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
            .map_err(|error| TransportError::Request(error.to_string()))?;
        let mut builder = self.client.request(method, parts.uri.to_string()).body(body);
        for (name, value) in &parts.headers {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
        let timeout = self.timeout;
        let exchange = async {
            let response = builder.timeout(timeout).send().await.map_err(|error| classify(error, timeout))?;
            let mut answer = openidconnect::http::Response::builder().status(response.status().as_u16());
            for (name, value) in response.headers() {
                answer = answer.header(name.as_str(), value.as_bytes());
            }
            let body = response.bytes().await.map_err(|error| classify(error, timeout))?;
            answer.body(body.to_vec()).map_err(|error| TransportError::Request(error.to_string()))
        };
        match tokio::time::timeout(timeout + Duration::from_millis(50), exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }
}

fn classify(error: reqwest::Error, timeout: Duration) -> TransportError {
    if error.is_timeout() {
        TransportError::Timeout(timeout)
    } else if error.is_builder() {
        TransportError::Request(error.to_string())
    } else {
        TransportError::Unreachable(error.to_string())
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for UpstreamHttp {
    type Error = TransportError;
    type Future = BoxFuture<'c, Result<openidconnect::HttpResponse, TransportError>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(UpstreamHttp::call(self, request))
    }
}
