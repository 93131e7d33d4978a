//! Fetching what an issuer publishes (its JWKS, its RFC 8414 metadata) under one policy, shared
//! by the server (trusted issuers' `jwks_uri`) and the verifier SDK (mandate's own keys).
//!
//! Fetching a URL is an SSRF and denial-of-service surface (PROTOCOLS.md sections 6.1 and 6.2,
//! RFC 8725 §3.10), so: only URLs from configuration or an issuer's own metadata are fetched
//! (never a `jku`/`x5u` from a token header, which callers never pass here); https only, http on
//! loopback for tests and development; no credentials or fragment in the URL; no redirects
//! (a redirect could lead anywhere, internal addresses included); a timeout on the whole
//! exchange; a body cap enforced while reading, whatever `Content-Length` says.

use std::time::Duration;

use url::Url;

/// Why a fetch did not deliver a body. The variants say where it failed, so that an operator
/// can tell a misconfiguration (`NotAllowed`, `Http`) from an unreachable issuer (`Timeout`,
/// `Network`) or a hostile or broken response (`TooLarge`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL breaks the policy; nothing was sent.
    #[error("URL refused: {0}")]
    NotAllowed(&'static str),
    /// The server did not answer in full within the timeout.
    #[error("timed out")]
    Timeout,
    /// The body was larger than the cap; reading stopped there.
    #[error("the response exceeds {0} bytes")]
    TooLarge(usize),
    /// The server answered with a status other than 2xx (redirects are not followed).
    #[error("HTTP {0}")]
    Http(u16),
    /// Connection, TLS or protocol failure, with its causes.
    #[error("{0}")]
    Network(String),
}

/// Bounds on one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchBounds {
    /// Limit on the whole fetch: connecting, TLS, headers and body.
    pub timeout: Duration,
    /// Largest body accepted, counted while reading.
    pub max_bytes: usize,
}

impl Default for FetchBounds {
    /// 5 s and 256 KiB: a JWKS or a metadata document is a few KiB.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
        }
    }
}

/// The URL if the policy allows fetching it: absolute, `https` (or `http` on a loopback host),
/// with a host, and without credentials or a fragment.
pub fn checked_url(uri: &str) -> Result<Url, FetchError> {
    let url = Url::parse(uri).map_err(|_| FetchError::NotAllowed("not an absolute URL"))?;
    let scheme_ok =
        url.scheme() == "https" || (url.scheme() == "http" && mandate_model::is_loopback_url(&url));
    if !scheme_ok {
        return Err(FetchError::NotAllowed(
            "https is required (http only on loopback)",
        ));
    }
    if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::NotAllowed(
            "the URL needs a host and must not carry credentials",
        ));
    }
    if url.fragment().is_some() {
        return Err(FetchError::NotAllowed("the URL must not have a fragment"));
    }
    Ok(url)
}

/// The HTTP client of the policy: no redirects, the timeout on connecting and on the whole
/// request, https only when `https_only` (a client made for one https URL), the given user agent.
pub fn http_client(
    bounds: FetchBounds,
    https_only: bool,
    user_agent: &'static str,
) -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(https_only)
        .timeout(bounds.timeout)
        .connect_timeout(bounds.timeout)
        .user_agent(user_agent)
        .build()
        .map_err(|e| FetchError::Network(error_chain(&e)))
}

/// GETs `url` with `accept`, bounded in time as a whole (beyond reqwest's own timeout, so a
/// server trickling bytes cannot stretch it) and in size while reading.
pub async fn fetch(
    client: &reqwest::Client,
    url: &Url,
    accept: &str,
    bounds: FetchBounds,
) -> Result<Vec<u8>, FetchError> {
    tokio::time::timeout(
        bounds.timeout,
        download(client, url, accept, bounds.max_bytes),
    )
    .await
    .map_err(|_| FetchError::Timeout)?
}

/// POSTs `body` as JSON to `url` with `Authorization: Bearer <token>`, under the same bounds
/// (an RFC 8936 poll, for one).
pub async fn post_json(
    client: &reqwest::Client,
    url: &Url,
    bearer: &str,
    body: &serde_json::Value,
    bounds: FetchBounds,
) -> Result<Vec<u8>, FetchError> {
    let request = client
        .post(url.clone())
        .bearer_auth(bearer)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(body);
    tokio::time::timeout(bounds.timeout, read(request, bounds.max_bytes))
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// POSTs one Security Event Token to a push receiver (RFC 8935 §2): `Content-Type:
/// application/secevent+jwt`, the stream's `Authorization` header when it has one; answers the
/// receiver's status (202 is acceptance), bounded in time as a whole.
pub async fn post_set(
    client: &reqwest::Client,
    url: &Url,
    authorization: Option<&str>,
    set: &str,
    bounds: FetchBounds,
) -> Result<u16, FetchError> {
    let mut request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/secevent+jwt")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(set.to_owned());
    if let Some(authorization) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    let response = tokio::time::timeout(bounds.timeout, request.send())
        .await
        .map_err(|_| FetchError::Timeout)?
        .map_err(|e| FetchError::Network(error_chain(&e)))?;
    Ok(response.status().as_u16())
}

async fn download(
    client: &reqwest::Client,
    url: &Url,
    accept: &str,
    max: usize,
) -> Result<Vec<u8>, FetchError> {
    read(
        client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, accept),
        max,
    )
    .await
}

async fn read(request: reqwest::RequestBuilder, max: usize) -> Result<Vec<u8>, FetchError> {
    let mut response = request.send().await.map_err(request_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Http(status.as_u16()));
    }
    // An honest Content-Length lets us refuse before reading; a lying or absent one is caught by
    // the count below.
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(FetchError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if chunk.len() > max.saturating_sub(body.len()) {
            return Err(FetchError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn request_error(error: reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else {
        FetchError::Network(error_chain(&error))
    }
}

/// The error and its causes on one line ("connection refused" sits a few sources down), without
/// any body content.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_without_credentials_or_fragment() {
        for good in [
            "https://idp.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9/jwks",
        ] {
            assert!(checked_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://127.0.0.1/jwks",
            "file:///etc/passwd",
            "https://user:pw@idp.example.com/jwks",
            "https://idp.example.com/jwks#keys",
            "/jwks",
            "not a url",
        ] {
            assert!(
                matches!(checked_url(bad), Err(FetchError::NotAllowed(_))),
                "{bad}"
            );
        }
    }
}
