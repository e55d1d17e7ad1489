//! The HTTP transport under the JSON-RPC client: one POST to the configured
//! URL and nothing else.
//!
//! Invariants:
//! - Redirects are never followed. A `3xx` is an error naming the status and
//!   the location (userinfo stripped); the request — and the `Authorization`
//!   header with the node's password or cookie — is never re-sent anywhere.
//!   (`minreq`, which the crate's own transport drives, follows them by
//!   default and re-sends every header to the new host.)
//! - No proxy from the environment: `minreq` is built without its `proxy`
//!   feature, so the request goes to the URL's host only.
//! - Memory is bounded: the status line and headers are capped, and a body
//!   longer than the reply limit ([`MAX_REPLY_BYTES`], or less for one call:
//!   [`Limits`]) is refused, by `Content-Length` before reading or by
//!   counting while reading (chunked or until-close bodies).
//! - Failures are classified where they happen, not by their text: a node
//!   that is not there or not answering ([`TransportError::Unreachable`],
//!   [`TransportError::Timeout`], HTTP 503) is told apart from one that
//!   answered wrong.
//! - A reply must carry its request's id.
//! - Errors never quote more than a short, escaped excerpt of what the server
//!   sent.

use jsonrpc::{Request, Response};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest reply body accepted (bytes). Far above any reply the tools ask for
/// (a batch of block hashes, a header, a transaction); a server sending more
/// is refused before it can exhaust memory.
pub const MAX_REPLY_BYTES: u64 = 256 << 20;
const MAX_HEADERS_BYTES: usize = 64 << 10;
const MAX_STATUS_LINE: usize = 8 << 10;

/// Why a request failed below JSON-RPC.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "the server answered HTTP {status} redirecting to {location}; redirects are never followed \
         (the request and its credentials were not sent there): point --bitcoin-rpc at the node itself"
    )]
    Redirect { status: i32, location: String },
    #[error("HTTP {status} {reason}: {body}")]
    Http { status: i32, reason: String, body: String },
    #[error("reply larger than {limit} bytes refused")]
    TooLarge { limit: u64 },
    /// Nothing listening, or the connection was reset or closed under the request.
    #[error("{0}")]
    Unreachable(String),
    /// No (complete) reply within the request's timeout.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Connection(String),
    #[error("the reply's id {got} is not the request's id {sent}")]
    WrongId { got: String, sent: String },
    #[error("malformed JSON reply ({error}): {body}")]
    Json { error: String, body: String },
}

impl TransportError {
    /// An I/O failure talking to the server, classified by its kind.
    fn io(what: &str, e: &std::io::Error) -> TransportError {
        use std::io::ErrorKind as K;
        let text = format!("{what}{e}");
        match e.kind() {
            K::TimedOut | K::WouldBlock => TransportError::Timeout(text),
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof => TransportError::Unreachable(text),
            _ => TransportError::Connection(text),
        }
    }

    /// A node that is not ready to answer (not listening, restarting behind
    /// a proxy, not answering in time), rather than one that answered wrong.
    pub fn not_ready(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable(_) | TransportError::Timeout(_) | TransportError::Http { status: 503, .. }
        )
    }
}

fn minreq_error(e: minreq::Error) -> TransportError {
    match e {
        minreq::Error::IoError(io) => TransportError::io("", &io),
        other => TransportError::Connection(other.to_string()),
    }
}

/// Settings of the transport that its owner may change between calls: the
/// request timeout and the largest reply accepted.
#[derive(Debug)]
pub struct Limits {
    timeout_ms: AtomicU64,
    max_reply: AtomicU64,
}

impl Limits {
    pub fn new(timeout: Duration) -> Arc<Limits> {
        Arc::new(Limits {
            timeout_ms: AtomicU64::new(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            max_reply: AtomicU64::new(MAX_REPLY_BYTES),
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_timeout(&self, t: Duration) {
        self.timeout_ms
            .store(u64::try_from(t.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn max_reply(&self) -> u64 {
        self.max_reply.load(Ordering::Relaxed)
    }

    /// Replies longer than `n` bytes (at most [`MAX_REPLY_BYTES`]) are refused.
    pub fn set_max_reply(&self, n: u64) {
        self.max_reply.store(n.min(MAX_REPLY_BYTES), Ordering::Relaxed);
    }
}

/// A short printable excerpt of untrusted text: escaped, at most `max` chars.
pub fn excerpt(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(max.saturating_mul(4))]);
    let mut out: String = s.chars().take(max).flat_map(char::escape_debug).collect();
    if s.chars().count() > max || b.len() > max.saturating_mul(4) {
        out.push('…');
    }
    out
}

/// Error text that may hold what a server sent: control characters escaped
/// (no forged log lines), at most `max` characters.
pub fn clip(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Base64 (standard alphabet, padded) for the Basic authorization header.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// HTTP POST transport with the invariants of this module.
pub struct Http {
    url: String,
    authorization: Option<String>,
    limits: Arc<Limits>,
}

impl Http {
    /// `url` must carry no userinfo (see [`super::split_userinfo`]).
    pub fn new(url: &str, basic_auth: Option<(&str, &str)>, limits: Arc<Limits>) -> Http {
        Http {
            url: url.to_string(),
            authorization: basic_auth.map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
            limits,
        }
    }

    fn post<R: serde::de::DeserializeOwned>(&self, body: &impl serde::Serialize) -> Result<R, TransportError> {
        let body = serde_json::to_vec(body).map_err(|e| TransportError::Connection(e.to_string()))?;
        // minreq counts whole seconds; round up so a sub-second remainder is not lost.
        let timeout = self.limits.timeout();
        let limit = self.limits.max_reply();
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let mut req = minreq::post(&self.url)
            .with_header("Content-Type", "application/json")
            .with_body(body)
            .with_timeout(secs.max(1))
            .with_follow_redirects(false)
            .with_max_headers_size(MAX_HEADERS_BYTES)
            .with_max_status_line_length(MAX_STATUS_LINE);
        if let Some(a) = &self.authorization {
            req = req.with_header("Authorization", a);
        }
        let mut resp = req.send_lazy().map_err(minreq_error)?;
        let status = resp.status_code;
        if (300..400).contains(&status) {
            let location = resp.headers.get("location").map_or_else(
                || "(no Location header)".to_string(),
                |l| excerpt(super::split_userinfo(l).0.as_bytes(), 200),
            );
            return Err(TransportError::Redirect { status, location });
        }
        let declared = resp
            .headers
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(TransportError::TooLarge { limit });
        }
        let mut buf = Vec::with_capacity(declared.map_or(0, |n| n.min(1 << 20) as usize));
        Read::take(&mut resp, limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| TransportError::io("reading the reply: ", &e))?;
        if buf.len() as u64 > limit {
            return Err(TransportError::TooLarge { limit });
        }
        if declared.is_some_and(|n| n != buf.len() as u64) {
            return Err(TransportError::Connection(format!(
                "reply cut off: {} of {} bytes",
                buf.len(),
                declared.unwrap_or_default()
            )));
        }
        // The node answers RPC errors with HTTP 500/404 and a JSON body: use
        // the body when it parses, the HTTP status otherwise.
        match serde_json::from_slice::<R>(&buf) {
            Ok(r) => Ok(r),
            Err(_) if status != 200 => Err(TransportError::Http {
                status,
                reason: excerpt(resp.reason_phrase.as_bytes(), 60),
                body: excerpt(&buf, 200),
            }),
            Err(e) => Err(TransportError::Json {
                error: e.to_string(),
                body: excerpt(&buf, 200),
            }),
        }
    }
}

impl jsonrpc::Transport for Http {
    fn send_request(&self, req: Request) -> Result<Response, jsonrpc::Error> {
        let resp: Response = self.post(&req).map_err(|e| jsonrpc::Error::Transport(Box::new(e)))?;
        // bitcoincore-rpc's `call` does not compare ids: a reply to another
        // request (or a server answering everyone alike) is refused here.
        if resp.id != req.id {
            return Err(jsonrpc::Error::Transport(Box::new(TransportError::WrongId {
                got: excerpt(resp.id.to_string().as_bytes(), 40),
                sent: req.id.to_string(),
            })));
        }
        Ok(resp)
    }

    fn send_batch(&self, reqs: &[Request]) -> Result<Vec<Response>, jsonrpc::Error> {
        self.post(&reqs).map_err(|e| jsonrpc::Error::Transport(Box::new(e)))
    }

    fn fmt_target(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn clip_keeps_one_bounded_line() {
        assert_eq!(clip("a \"b\"\nfake: line", 100), "a \"b\"\\nfake: line");
        assert_eq!(clip(&"x".repeat(5000), 3), "xxx…");
    }

    #[test]
    fn excerpt_is_short_and_escaped() {
        assert_eq!(excerpt(b"a|b\ncd", 10), "a|b\\ncd");
        assert_eq!(excerpt(&[b'x'; 1000], 5), "xxxxx…");
    }
}
