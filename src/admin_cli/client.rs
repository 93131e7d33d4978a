//! The admin API over HTTP: one request, its JSON answer, or a [`CliError`] saying whether the
//! server refused (its `error` and `message`) or could not be reached.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, Url};
use serde_json::Value;

use super::credential::Credential;
use super::CliError;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one admin listener, holding one credential.
#[derive(Debug)]
pub struct AdminClient {
    base: Url,
    authorization: HeaderValue,
    http: reqwest::Client,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    /// The JSON body (`null` when empty).
    pub body: Value,
    /// The response headers (`ETag`).
    pub headers: HeaderMap,
}

/// One request: the path segments under `/admin`, query pairs (absent values left out), an
/// optional JSON body and extra headers.
#[derive(Debug)]
pub struct Request<'a> {
    method: Method,
    segments: Vec<&'a str>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    headers: Vec<(HeaderName, String)>,
}

impl<'a> Request<'a> {
    /// `GET /admin/<segments…>`.
    pub fn get(segments: &[&'a str]) -> Self {
        Self::new(Method::GET, segments)
    }

    /// `POST /admin/<segments…>`.
    pub fn post(segments: &[&'a str]) -> Self {
        Self::new(Method::POST, segments)
    }

    /// `PUT /admin/<segments…>`.
    pub fn put(segments: &[&'a str]) -> Self {
        Self::new(Method::PUT, segments)
    }

    /// `PATCH /admin/<segments…>`.
    pub fn patch(segments: &[&'a str]) -> Self {
        Self::new(Method::PATCH, segments)
    }

    /// `DELETE /admin/<segments…>`.
    pub fn delete(segments: &[&'a str]) -> Self {
        Self::new(Method::DELETE, segments)
    }

    fn new(method: Method, segments: &[&'a str]) -> Self {
        Self {
            method,
            segments: segments.to_vec(),
            query: Vec::new(),
            body: None,
            headers: Vec::new(),
        }
    }

    /// Adds `name=value` to the query when `value` is present.
    pub fn query(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    /// Sends `body` as JSON.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl AdminClient {
    /// A client of the admin listener at `base` (e.g. `http://127.0.0.1:8081`).
    pub fn new(base: &str, credential: &Credential) -> Result<Self, CliError> {
        let base = Url::parse(base)
            .map_err(|e| CliError::Usage(format!("--url {base:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::Usage(format!(
                "--url must be an http:// or https:// URL, not {base}"
            )));
        }
        if base.scheme() == "http" && !is_loopback(&base) {
            eprintln!(
                "warning: {base} is plain http on a non-loopback host: the admin credential \
                 crosses the network unencrypted"
            );
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", credential.expose()))
            .map_err(|_| {
            CliError::NoCredential(
                "the admin credential holds characters that cannot be sent in a header".into(),
            )
        })?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could carry the credential somewhere else: the admin API never sends
            // one.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CliError::Unreachable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base,
            authorization,
            http,
        })
    }

    fn url(&self, request: &Request<'_>) -> Result<Url, CliError> {
        // The URL rules resolve `.` and `..` segments, so `chains show ..` would read
        // `/admin/chains` and `revoke hop ..` post to `/admin/revoke`: no id is either.
        if let Some(id) = request
            .segments
            .iter()
            .find(|s| matches!(**s, "" | "." | ".."))
        {
            return Err(CliError::Usage(format!("{id:?} is not an id")));
        }
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Each id is one percent-encoded segment, whatever it holds (`corp|alice`, `a/b`).
            path.pop_if_empty().push("admin").extend(&request.segments);
        }
        if !request.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(request.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// Sends `request` and hands back the response as it starts to arrive, when its status is
    /// 2xx, for a body too long to hold (an export), read within `timeout`.
    pub async fn open(
        &self,
        request: Request<'_>,
        timeout: Duration,
    ) -> Result<reqwest::Response, CliError> {
        let url = self.url(&request)?;
        let response = self
            .http
            .request(request.method.clone(), url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                CliError::Unreachable(format!(
                    "cannot reach the admin API at {}: {}",
                    self.base,
                    causes(&e)
                ))
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        Err(refusal(status, body.as_ref()))
    }

    /// Sends `request`; the answer when the status is 2xx.
    pub async fn send(&self, request: Request<'_>) -> Result<Answer, CliError> {
        let url = self.url(&request)?;
        let mut builder = self
            .http
            .request(request.method.clone(), url.clone())
            .header(AUTHORIZATION, self.authorization.clone());
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder.send().await.map_err(|e| {
            CliError::Unreachable(format!(
                "cannot reach the admin API at {}: {}",
                self.base,
                causes(&e)
            ))
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| {
            CliError::Unreachable(format!("reading the answer of {url}: {}", causes(&e)))
        })?;
        let body: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
            Some(Value::Null)
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        if status.is_success() {
            let body = body.ok_or_else(|| {
                CliError::Unreachable(format!(
                    "{url} answered {status} with something that is not JSON: is --url the \
                     admin listener?"
                ))
            })?;
            return Ok(Answer { body, headers });
        }
        Err(refusal(status, body.as_ref()))
    }
}

/// A non-2xx answer as [`CliError::Refused`], with the API's `error` and `message`.
fn refusal(status: reqwest::StatusCode, body: Option<&Value>) -> CliError {
    let field = |name: &str| {
        body.and_then(|b| b.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    CliError::Refused {
        status: status.as_u16(),
        error: field("error").unwrap_or_else(|| "http_error".into()),
        message: field("message").unwrap_or_else(|| {
            format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
        }),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// An error with its causes, `a: b: c` (reqwest's own message alone says little).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn client(base: &str) -> AdminClient {
        let credential = Credential::for_tests("s3cret");
        AdminClient::new(base, &credential).unwrap()
    }

    #[test]
    fn ids_stay_one_segment_whatever_they_hold() {
        let admin = client("http://127.0.0.1:8081");
        for (id, path) in [
            ("corp|alice", "/admin/subjects/corp|alice/revoke"),
            ("../agents", "/admin/subjects/..%2Fagents/revoke"),
            ("a/b?c#d", "/admin/subjects/a%2Fb%3Fc%23d/revoke"),
        ] {
            let url = admin
                .url(&Request::post(&["subjects", id, "revoke"]))
                .unwrap();
            assert_eq!(url.path(), path, "{id}");
            assert_eq!(url.query(), None);
        }
        for id in ["..", ".", ""] {
            assert!(
                matches!(
                    admin.url(&Request::post(&["hops", id, "revoke"])),
                    Err(CliError::Usage(_))
                ),
                "{id:?}"
            );
        }
        // Dots inside an id are just characters.
        let url = admin.url(&Request::get(&["chains", "..x"])).unwrap();
        assert_eq!(url.path(), "/admin/chains/..x");
    }

    #[test]
    fn a_base_path_is_kept_and_queries_are_encoded() {
        let admin = client("https://admin.example.com/mandate/");
        let url = admin
            .url(
                &Request::get(&["chains"])
                    .query("subject", Some("corp|alice&x=1"))
                    .query("agent", None::<String>),
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://admin.example.com/mandate/admin/chains?subject=corp%7Calice%26x%3D1"
        );
    }

    #[test]
    fn only_http_urls_are_accepted_and_the_header_is_sensitive() {
        let credential = Credential::for_tests("s3cret");
        for base in ["ftp://x", "not a url", "mailto:x@example.com"] {
            assert!(
                matches!(AdminClient::new(base, &credential), Err(CliError::Usage(_))),
                "{base}"
            );
        }
        let admin = client("http://localhost:8081");
        assert!(admin.authorization.is_sensitive());
        assert!(!format!("{admin:?}").contains("s3cret"));
        let bad = Credential::for_tests("line\nbreak");
        assert!(matches!(
            AdminClient::new("http://127.0.0.1:1", &bad),
            Err(CliError::NoCredential(_))
        ));
    }
}
