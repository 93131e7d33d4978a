//! The measured requests' HTTP/1.1 client: a request written whole to a keep-alive connection,
//! the answer read by its `Content-Length`.
//!
//! The load runs on the same cores as the server. A general-purpose client (reqwest over
//! hyper's pool, on a multi-threaded runtime) spent about 90 µs of CPU per request here, a
//! quarter of the server's cost for an exchange, and that CPU was taken from the server being
//! measured. This client does only what the benchmark needs, like `wrk`: no redirects, no
//! pool bookkeeping, no chunked answers (mandate sends a length with every answer on these
//! endpoints; anything else is reported as a failed request).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headers read from an answer; mandate sends fewer than ten.
const MAX_HEADERS: usize = 32;
/// An answer larger than this is refused (tokens are capped at 16 KiB).
const MAX_ANSWER: usize = 256 * 1024;
/// A pooled connection idle longer than this is dropped rather than reused: the server closes
/// keep-alive connections after 5 s without a request.
const MAX_IDLE: Duration = Duration::from_secs(2);

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// An answer's status and body.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The status code.
    pub status: u16,
    /// The body (exactly `Content-Length` bytes).
    pub body: &'a [u8],
}

impl Connection {
    /// Opens a connection to `address` (Nagle off: a request is one write).
    pub async fn open(address: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(8192),
        })
    }

    /// Writes `request` and reads its answer. After an error the connection is unusable.
    pub async fn round_trip(&mut self, request: &[u8]) -> io::Result<Answer<'_>> {
        self.stream.write_all(request).await?;
        self.buffer.clear();
        let (status, head, length) = loop {
            if let Some(parsed) = parse_head(&self.buffer)? {
                break parsed;
            }
            self.fill().await?;
        };
        let end = head + length;
        if end > MAX_ANSWER {
            return Err(invalid("answer too large"));
        }
        while self.buffer.len() < end {
            self.fill().await?;
        }
        if self.buffer.len() > end {
            // One request at a time: nothing may follow the answer.
            return Err(invalid("bytes after the answer"));
        }
        Ok(Answer {
            status,
            body: &self.buffer[head..end],
        })
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.buffer.len() >= MAX_ANSWER {
            return Err(invalid("answer too large"));
        }
        self.buffer.reserve(8192);
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// `(status, head length, body length)` once the head is complete.
fn parse_head(buffer: &[u8]) -> io::Result<Option<(u16, usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buffer) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(invalid(&error.to_string())),
    };
    let status = response.code.ok_or_else(|| invalid("no status"))?;
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| invalid("an answer without Content-Length"))?;
    Ok(Some((status, head, length)))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// A `POST` of a form, as bytes.
pub fn form_post(host: &str, path: &str, authorization: Option<&str>, body: &str) -> Vec<u8> {
    let authorization = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n{authorization}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A `GET` without a body, as bytes.
pub fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// Idle connections to one address, for requests that do not own one (the open loop).
///
/// Connections are taken oldest first, so requests rotate over every connection the pool holds
/// (as they would from as many independent clients, and as `wrk2` spreads its rate over its
/// connections). Taking the most recent one instead keeps the load on the few connections
/// returned last, which the server may have accepted on one of its workers: at half load that
/// worker saturates while the other idles.
#[derive(Debug)]
pub struct Pool {
    address: SocketAddr,
    idle: Mutex<VecDeque<(Connection, Instant)>>,
}

impl Pool {
    /// An empty pool.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Opens connections until `count` are idle.
    pub async fn fill(&self, count: usize) -> io::Result<()> {
        loop {
            let idle = self.idle.lock().map(|idle| idle.len()).unwrap_or(count);
            if idle >= count {
                return Ok(());
            }
            let connection = Connection::open(self.address).await?;
            self.put(connection);
        }
    }

    /// The idle connection that has waited longest, or a new one.
    pub async fn take(&self) -> io::Result<Connection> {
        let oldest = self.idle.lock().ok().and_then(|mut idle| {
            // Anything idle too long may have been closed by the server: dropped.
            idle.retain(|(_, since)| since.elapsed() < MAX_IDLE);
            idle.pop_front()
        });
        match oldest {
            Some((connection, _)) => Ok(connection),
            None => Connection::open(self.address).await,
        }
    }

    /// Returns a connection that is still usable.
    pub fn put(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push_back((connection, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_parsed_once_complete() {
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}";
        assert_eq!(parse_head(&answer[..20]).unwrap(), None);
        assert_eq!(
            parse_head(answer).unwrap(),
            Some((200, answer.len() - 2, 2))
        );
    }

    #[test]
    fn an_answer_without_a_length_is_refused() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
    }

    #[test]
    fn a_get_has_no_body() {
        assert_eq!(get("h:1", "/x"), b"GET /x HTTP/1.1\r\nHost: h:1\r\n\r\n");
    }

    #[test]
    fn a_form_post_carries_its_length_and_credentials() {
        let request = form_post("h:1", "/token", Some("Basic eA=="), "a=b");
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("POST /token HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(text.contains("Authorization: Basic eA==\r\n"));
        assert!(text.ends_with("Content-Length: 3\r\n\r\na=b"));
    }
}
