//! A raw HTTP/1.1 client over a `TcpStream`: every byte on the wire is under
//! the test's control, and every response is parsed strictly, keeping its
//! raw bytes and chunk boundaries.

use super::{find, io_timeout_for, TIMEOUT};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed response with its raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In wire order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// `Some(sizes)` when the body was chunked: the size of every chunk (the
    /// last, zero-size chunk excluded).
    pub chunk_sizes: Option<Vec<usize>>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// The exact bytes of this response (head and body).
    pub raw: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name` as text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The headers without the per-connection ones (`Connection`,
    /// `Keep-Alive`), which may legitimately differ between two hops.
    pub fn end_to_end_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.headers
            .iter()
            .filter(|(n, _)| {
                !n.eq_ignore_ascii_case("connection") && !n.eq_ignore_ascii_case("keep-alive")
            })
            .cloned()
            .collect()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A short description for assertion messages.
    pub fn describe(&self) -> String {
        let head_end = find(&self.raw, b"\r\n\r\n")
            .map(|i| i + 4)
            .unwrap_or(self.raw.len());
        let body_preview: String =
            String::from_utf8_lossy(&self.body[..self.body.len().min(600)]).into_owned();
        format!(
            "{}[body {} bytes: {:?}]",
            String::from_utf8_lossy(&self.raw[..head_end]),
            self.body.len(),
            body_preview
        )
    }
}

/// Asserts that a replayed response equals the recorded one: status, reason,
/// headers (in order, with name case; `Connection`/`Keep-Alive` aside), body
/// bytes, chunk boundaries and trailers.
#[track_caller]
pub fn assert_same_response(recorded: &Response, replayed: &Response) {
    assert_eq!(
        (recorded.status, &recorded.reason),
        (replayed.status, &replayed.reason),
        "status line differs\nrecorded: {}\nreplayed: {}",
        recorded.describe(),
        replayed.describe()
    );
    assert_eq!(
        recorded.end_to_end_headers(),
        replayed.end_to_end_headers(),
        "headers differ\nrecorded: {}\nreplayed: {}",
        recorded.describe(),
        replayed.describe()
    );
    assert!(
        recorded.body == replayed.body,
        "bodies differ: recorded {} bytes, replayed {} bytes, first difference at {:?}",
        recorded.body.len(),
        replayed.body.len(),
        recorded
            .body
            .iter()
            .zip(&replayed.body)
            .position(|(a, b)| a != b)
    );
    assert_eq!(
        recorded.chunk_sizes, replayed.chunk_sizes,
        "chunk boundaries differ"
    );
    assert_eq!(recorded.trailers, replayed.trailers, "trailers differ");
}

/// One client connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Bound on every single read or write.
    timeout: Duration,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = io_timeout_for(TIMEOUT, "connect to the proxy", TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            timeout: TIMEOUT,
        }
    }

    /// Changes the bound on every single read or write (for big bodies).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Writes all of `bytes`; panics on error.
    pub async fn send(&mut self, bytes: &[u8]) {
        io_timeout_for(
            self.timeout,
            "write to the proxy",
            self.stream.write_all(bytes),
        )
        .await
        .unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// Writes `bytes`, ignoring errors (for hostile input the proxy may stop
    /// reading and close while we still write).
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await;
    }

    /// Reads more bytes into the buffer; returns how many (0 at EOF).
    async fn fill(&mut self) -> usize {
        self.buf.reserve(64 * 1024);
        match io_timeout_for(
            self.timeout,
            "read from the proxy",
            self.stream.read_buf(&mut self.buf),
        )
        .await
        {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    async fn fill_to(&mut self, n: usize, what: &str) {
        while self.buf.len() < n {
            if self.fill().await == 0 {
                panic!(
                    "connection closed while reading {what}: have {} of {n} bytes: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
                );
            }
        }
    }

    async fn read_line(&mut self, raw: &mut Vec<u8>) -> Vec<u8> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                raw.extend_from_slice(&line);
                return line[..i].to_vec();
            }
            if self.fill().await == 0 {
                panic!(
                    "connection closed in the middle of a line: {:?} (response so far: {:?})",
                    String::from_utf8_lossy(&self.buf),
                    String::from_utf8_lossy(raw)
                );
            }
        }
    }

    /// Reads one response head (status line and fields, up to the blank line).
    pub async fn read_head(&mut self) -> Response {
        let mut raw = Vec::new();
        let status_line = self.read_line(&mut raw).await;
        let text = String::from_utf8_lossy(&status_line).into_owned();
        assert!(text.starts_with("HTTP/1.1 "), "bad status line {text:?}");
        let status: u16 = text[9..12]
            .parse()
            .unwrap_or_else(|_| panic!("bad status line {text:?}"));
        assert_eq!(
            text.as_bytes().get(12),
            Some(&b' '),
            "bad status line {text:?}"
        );
        let reason = text[13..].to_string();
        let headers = self.read_fields(&mut raw).await;
        Response {
            status,
            reason,
            headers,
            body: Vec::new(),
            chunk_sizes: None,
            trailers: Vec::new(),
            raw,
        }
    }

    async fn read_fields(&mut self, raw: &mut Vec<u8>) -> Vec<(String, Vec<u8>)> {
        let mut fields = Vec::new();
        loop {
            let line = self.read_line(raw).await;
            if line.is_empty() {
                return fields;
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .unwrap_or_else(|| panic!("bad header line {:?}", String::from_utf8_lossy(&line)));
            let name = String::from_utf8(line[..colon].to_vec()).expect("header name is ASCII");
            assert!(
                !name.is_empty() && !name.contains(' '),
                "bad header name {name:?}"
            );
            let value = trim(&line[colon + 1..]).to_vec();
            fields.push((name, value));
        }
    }

    /// Reads one response to a request that was not HEAD.
    pub async fn read_response(&mut self) -> Response {
        self.read_response_to(false).await
    }

    /// Reads one response; `head_request` means the request was HEAD (no body).
    pub async fn read_response_to(&mut self, head_request: bool) -> Response {
        let mut resp = self.read_head().await;
        let status = resp.status;
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return resp;
        }
        let chunked = resp.header_all("transfer-encoding").iter().any(|v| {
            String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .contains("chunked")
        });
        if chunked {
            let mut sizes = Vec::new();
            loop {
                let line = self.read_line(&mut resp.raw).await;
                let text = String::from_utf8_lossy(&line).into_owned();
                let hex = text.split(';').next().unwrap().trim();
                let size = usize::from_str_radix(hex, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {text:?}"));
                if size == 0 {
                    resp.trailers = self.read_fields(&mut resp.raw).await;
                    break;
                }
                self.fill_to(size + 2, "a chunk").await;
                let data: Vec<u8> = self.buf.drain(..size + 2).collect();
                assert_eq!(&data[size..], b"\r\n", "chunk not followed by CRLF");
                resp.raw.extend_from_slice(&data);
                resp.body.extend_from_slice(&data[..size]);
                sizes.push(size);
            }
            resp.chunk_sizes = Some(sizes);
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = String::from_utf8_lossy(len)
                .trim()
                .parse()
                .expect("numeric content-length");
            self.fill_to(len, "a body").await;
            let data: Vec<u8> = self.buf.drain(..len).collect();
            resp.raw.extend_from_slice(&data);
            resp.body = data;
        } else {
            // Close-delimited.
            while self.fill().await > 0 {}
            let data = std::mem::take(&mut self.buf);
            resp.raw.extend_from_slice(&data);
            resp.body = data;
        }
        resp
    }

    /// Sends a request and reads its response.
    pub async fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes).await;
        let head = bytes.starts_with(b"HEAD ");
        self.read_response_to(head).await
    }

    /// Asserts the proxy closes the connection now: nothing more arrives and
    /// the read returns end of file (or a reset).
    pub async fn expect_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut extra = [0u8; 512];
        match io_timeout_for(
            self.timeout,
            "wait for the proxy to close",
            self.stream.read(&mut extra),
        )
        .await
        {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!(
                "expected a close, got more bytes: {:?}",
                String::from_utf8_lossy(&extra[..n])
            ),
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Asserts the connection stays open for `ms` milliseconds with nothing to read.
    pub async fn expect_open_and_quiet(&mut self, ms: u64) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut extra = [0u8; 64];
        if let Ok(r) = tokio::time::timeout(
            std::time::Duration::from_millis(ms),
            self.stream.read(&mut extra),
        )
        .await
        {
            panic!("expected an open, quiet connection; read gave {r:?}");
        }
    }

    /// Everything until the proxy closes the connection.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A request with the given headers (in order) and body; adds
/// `Content-Length` when the body is not empty or the method usually has one.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: ouli.test\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// `request` with an `X-Ouli-Test-Name` header first.
pub fn test_request(
    test: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut all = vec![("X-Ouli-Test-Name", test)];
    all.extend_from_slice(headers);
    request(method, target, &all, body)
}

/// Opens a connection, sends one request and reads its response.
pub async fn one_shot(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut c = Client::connect(addr).await;
    c.request(bytes).await
}
