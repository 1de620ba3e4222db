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
    /// The answer is longer than [`MAX_ANSWER_BYTES`] (announced, or as read): not read further.
    #[error("the upstream's answer is longer than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// Largest answer read from an upstream (discovery, JWKS, token, userinfo, emails).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Reads a body up to [`MAX_ANSWER_BYTES`]: refused at once when its `Content-Length` says more, else read in
/// chunks and abandoned as soon as it grows past the limit (nothing larger is ever buffered).
async fn read_limited(mut response: reqwest::Response, timeout: Duration) -> Result<Vec<u8>, TransportError> {
    if response.content_length().is_some_and(|length| length > MAX_ANSWER_BYTES as u64) {
        return Err(TransportError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| classify(error, timeout))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(TransportError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
            let body = read_limited(response, timeout).await?;
            Ok((status, body))
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
            let body = read_limited(response, timeout).await?;
            answer.body(body).map_err(|error| TransportError::Request(error.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `answers` (raw HTTP/1.1 responses, one connection each) on loopback; its base URL.
    async fn serve(answers: Vec<Vec<u8>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for answer in answers {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                // The client may hang up early (that is the point): write errors are expected.
                let _ = socket.write_all(&answer).await;
                let _ = socket.shutdown().await;
            }
        });
        url
    }

    #[tokio::test]
    async fn answers_past_the_limit_are_refused_announced_or_not() {
        let big = vec![b'x'; MAX_ANSWER_BYTES + 1];
        let mut announced = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 64 << 20).into_bytes();
        announced.extend_from_slice(b"{}");
        let mut unannounced = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
        unannounced.extend_from_slice(&big);
        let mut small = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n".to_vec();
        small.extend_from_slice(b"{}");
        let url = serve(vec![announced, unannounced, small]).await;
        let http = UpstreamHttp::new(UpstreamHttp::pool().unwrap(), Duration::from_secs(5));
        for _ in 0..2 {
            let answer = http.send(http.client().get(&url)).await;
            assert!(matches!(answer, Err(TransportError::TooLarge)), "{answer:?}");
        }
        assert_eq!(http.send(http.client().get(&url)).await.unwrap(), (200, b"{}".to_vec()));
    }
}
