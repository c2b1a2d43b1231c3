//! The server side of the WebSocket opening handshake: parse the HTTP request head
//! (httparse), decide whether it is an acceptable upgrade, and write the 101 answer
//! or the refusal.

use sha1::{Digest, Sha1};

use crate::{Error, Result};

/// The GUID of RFC 6455 section 1.3, appended to the key for Sec-WebSocket-Accept.
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A request head longer than this is refused (431) instead of waited for.
pub const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
/// At most this many header lines in a request head.
pub const MAX_HEADERS: usize = 100;

/// An HTTP request head, WebSocket upgrade or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target, query string included.
    pub path: String,
    /// Every header line in order, names as sent, bytes read as Latin-1.
    pub headers: Vec<(String, String)>,
    /// Sec-WebSocket-Protocol values offered, in order.
    pub subprotocols: Vec<String>,
    /// Sec-WebSocket-Key (only set for a valid upgrade request).
    pub key: Option<String>,
    /// A valid WebSocket upgrade: GET, HTTP/1.1, `Upgrade: websocket`,
    /// `Connection: upgrade`, version 13 and a 16-byte key. A plain HTTP request
    /// (no `Upgrade: websocket`) has `false`; it is for the caller to answer.
    pub is_websocket: bool,
    /// Length of the request head; the bytes after it are already WebSocket frames.
    pub consumed: usize,
}

impl Request {
    /// The first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn invalid(status: u16, reason: impl Into<String>) -> Error {
    Error::BadHandshake {
        status,
        reason: reason.into(),
    }
}

/// Server side of the opening handshake.
pub struct ServerHandshake;

impl ServerHandshake {
    /// Parse the request head at the start of `data` (everything read so far):
    /// `None` while the head has not fully arrived (read more and parse again),
    /// [`Error::BadHandshake`] for a request to refuse.
    pub fn parse(data: &[u8]) -> Result<Option<Request>> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let consumed = match req.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if data.len() > MAX_HANDSHAKE_BYTES {
                    Err(invalid(431, "request head too large"))
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(invalid(431, "too many headers")),
            Err(err) => return Err(invalid(400, format!("malformed HTTP request: {err}"))),
        };
        if consumed > MAX_HANDSHAKE_BYTES {
            return Err(invalid(431, "request head too large"));
        }
        let method = req.method.unwrap_or_default().to_owned();
        let path = req.path.unwrap_or_default().to_owned();
        let version = req.version.unwrap_or(0);
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), latin1(h.value)))
            .collect();
        let mut request = Request {
            method,
            path,
            headers,
            subprotocols: Vec::new(),
            key: None,
            is_websocket: false,
            consumed,
        };
        for (name, value) in &request.headers {
            if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                request
                    .subprotocols
                    .extend(tokens(value).map(str::to_owned));
            }
        }
        let wants_upgrade = request
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("upgrade") && has_token(v, "websocket"));
        if !wants_upgrade {
            return Ok(Some(request));
        }
        if request.method != "GET" {
            return Err(invalid(405, "a WebSocket handshake must be a GET"));
        }
        if version != 1 {
            return Err(invalid(400, "a WebSocket handshake needs HTTP/1.1"));
        }
        let connection_upgrade = request
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && has_token(v, "upgrade"));
        if !connection_upgrade {
            return Err(invalid(400, "missing Connection: upgrade"));
        }
        if request.header("sec-websocket-version").map(str::trim) != Some("13") {
            return Err(invalid(
                426,
                "unsupported Sec-WebSocket-Version (13 is supported)",
            ));
        }
        let key = request
            .header("sec-websocket-key")
            .map(str::trim)
            .unwrap_or_default();
        match base64_simd::STANDARD.decode_to_vec(key) {
            Ok(raw) if raw.len() == 16 => {}
            _ => return Err(invalid(400, "missing or malformed Sec-WebSocket-Key")),
        }
        request.key = Some(key.to_owned());
        request.is_websocket = true;
        Ok(Some(request))
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn has_token(value: &str, token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(WS_GUID.as_bytes());
    base64_simd::STANDARD.encode_to_string(sha.finalize())
}

/// The 101 response accepting a handshake with key `key`, choosing `subprotocol`.
pub fn accept_response(key: &str, subprotocol: Option<&str>) -> Vec<u8> {
    let mut out = String::with_capacity(160);
    out.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.push_str("Sec-WebSocket-Accept: ");
    out.push_str(&accept_key(key));
    out.push_str("\r\n");
    if let Some(proto) = subprotocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(proto);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A complete HTTP/1.1 response with `body`, `Content-Length` and
/// `Connection: close`, plus `headers` (e.g. Content-Type). A 426 also says
/// `Sec-WebSocket-Version: 13`.
pub fn reject_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if status == 426
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-version"))
    {
        head.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The standard reason phrase of an HTTP status ("" for one not listed).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    const UPGRADE: &[u8] = b"GET /v1/tts?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Protocol: c\r\n\r\n";

    #[test]
    fn parses_an_upgrade_request() {
        let mut data = UPGRADE.to_vec();
        data.extend_from_slice(b"\x81");
        let req = ServerHandshake::parse(&data).unwrap().unwrap();
        assert!(req.is_websocket);
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/v1/tts?x=1");
        assert_eq!(req.subprotocols, ["a", "b", "c"]);
        assert_eq!(req.key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(req.consumed, UPGRADE.len());
        assert_eq!(req.header("HOST"), Some("a"));
        for cut in 0..UPGRADE.len() {
            assert_eq!(ServerHandshake::parse(&UPGRADE[..cut]), Ok(None));
        }
    }

    #[test]
    fn plain_http_is_not_websocket() {
        let req = ServerHandshake::parse(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!req.is_websocket);
        assert_eq!(req.path, "/healthz");
        let req = ServerHandshake::parse(b"POST /x HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(req.method, "POST");
        assert!(!req.is_websocket);
    }

    #[test]
    fn bad_handshakes() {
        let status = |data: &[u8]| match ServerHandshake::parse(data) {
            Err(Error::BadHandshake { status, .. }) => status,
            other => panic!("{other:?}"),
        };
        let text = std::str::from_utf8(UPGRADE).unwrap();
        assert_eq!(
            status(text.replace("Version: 13", "Version: 8").as_bytes()),
            426
        );
        assert_eq!(
            status(text.replace("dGhlIHNhbXBsZSBub25jZQ==", "abc").as_bytes()),
            400
        );
        assert_eq!(
            status(text.replace("keep-alive, Upgrade", "close").as_bytes()),
            400
        );
        assert_eq!(status(text.replace("GET", "POST").as_bytes()), 405);
        assert_eq!(status(b"\x00\x01 garbage\r\n\r\n"), 400);
        assert_eq!(status(&vec![b'a'; MAX_HANDSHAKE_BYTES + 1]), 431);
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HANDSHAKE_BYTES));
        assert_eq!(status(&long), 431);
    }

    #[test]
    fn responses() {
        let ok = String::from_utf8(accept_response("dGhlIHNhbXBsZSBub25jZQ==", Some("b"))).unwrap();
        assert!(ok.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(ok.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(ok.contains("Sec-WebSocket-Protocol: b\r\n"));
        assert!(ok.ends_with("\r\n\r\n"));
        let no = reject_response(426, &[("Content-Type", "application/json")], b"{}");
        let no = String::from_utf8(no).unwrap();
        assert!(no.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(no.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(no.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n{}"));
    }
}
