//! A scripted upstream HTTP/1.1 server on 127.0.0.1:0. It parses requests
//! itself (Content-Length and chunked bodies, keep-alive), counts connections
//! and requests, and answers with whatever bytes the test's handler returns.

use super::find;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub struct UpRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    /// In wire order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The request line and header section exactly as received.
    pub raw_head: Vec<u8>,
    pub chunked: bool,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// 0-based index of the connection it came on.
    pub connection: usize,
}

impl UpRequest {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What the upstream writes back.
pub struct Reply {
    pub bytes: Vec<u8>,
    /// Close the connection after writing.
    pub close: bool,
}

impl Reply {
    /// A response with the given headers (in order), `Content-Length` and body.
    pub fn new(status: u16, reason: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Reply {
        let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
        for (n, v) in headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        Reply {
            bytes: out,
            close: false,
        }
    }

    /// `200 OK` with a text body.
    pub fn text(body: &str) -> Reply {
        Reply::new(
            200,
            "OK",
            &[("Content-Type", b"text/plain")],
            body.as_bytes(),
        )
    }

    /// Exactly these bytes; the connection stays open.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: false,
        }
    }

    /// Exactly these bytes, then close.
    pub fn raw_then_close(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: true,
        }
    }
}

pub type Handler = Arc<dyn Fn(&UpRequest) -> Reply + Send + Sync>;

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    heads: AtomicUsize,
    requests: Mutex<Vec<UpRequest>>,
}

/// A running upstream. Dropping it (or [`Upstream::stop`]) closes the
/// listener and every connection.
pub struct Upstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Upstream {
    pub async fn start(handler: impl Fn(&UpRequest) -> Reply + Send + Sync + 'static) -> Upstream {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let counters = Arc::clone(&counters);
            let conns = Arc::clone(&conns);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let index = counters.connections.fetch_add(1, Ordering::SeqCst);
                    let task = tokio::spawn(serve(
                        stream,
                        Arc::clone(&counters),
                        Arc::clone(&handler),
                        index,
                    ));
                    conns.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        Upstream {
            addr,
            counters,
            accept,
            conns,
        }
    }

    /// The standard test upstream, see [`standard_handler`].
    pub async fn standard() -> Upstream {
        let counter = Arc::new(AtomicUsize::new(0));
        Upstream::start(move |req| standard_handler(req, &counter)).await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Request heads seen so far (complete or not).
    pub fn heads(&self) -> usize {
        self.counters.heads.load(Ordering::SeqCst)
    }

    /// Complete requests answered so far.
    pub fn request_count(&self) -> usize {
        self.counters.requests.lock().unwrap().len()
    }

    /// Every complete request so far, in arrival order.
    pub fn requests(&self) -> Vec<UpRequest> {
        self.counters.requests.lock().unwrap().clone()
    }

    /// The last complete request.
    pub fn last_request(&self) -> UpRequest {
        self.requests()
            .pop()
            .expect("the upstream received no request")
    }

    /// Closes the listener and every connection; the port refuses connections afterwards.
    pub async fn stop(self) {
        self.shutdown().await;
    }

    async fn shutdown(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
        // Wait until the port is really closed.
        for _ in 0..200 {
            if TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "upstream {} still accepts connections after stop",
            self.addr
        );
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.reserve(64 * 1024);
    matches!(s.read_buf(buf).await, Ok(n) if n > 0)
}

async fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(i) = find(buf, b"\r\n") {
            let line: Vec<u8> = buf.drain(..i + 2).collect();
            return Some(line[..i].to_vec());
        }
        if !fill(s, buf).await {
            return None;
        }
    }
}

fn parse_fields(lines: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
    lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let colon = l
                .iter()
                .position(|&b| b == b':')
                .expect("header line with a colon");
            let name = String::from_utf8_lossy(&l[..colon]).into_owned();
            let mut v = &l[colon + 1..];
            while let [b' ' | b'\t', rest @ ..] = v {
                v = rest;
            }
            while let [rest @ .., b' ' | b'\t'] = v {
                v = rest;
            }
            (name, v.to_vec())
        })
        .collect()
}

async fn serve(mut s: TcpStream, counters: Arc<Counters>, handler: Handler, connection: usize) {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !fill(&mut s, &mut buf).await {
                return;
            }
        };
        counters.heads.fetch_add(1, Ordering::SeqCst);
        let raw_head: Vec<u8> = buf.drain(..head_end).collect();
        let lines: Vec<&[u8]> = raw_head[..head_end - 4]
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .collect();
        let request_line = String::from_utf8_lossy(lines[0]).into_owned();
        let mut parts = request_line.splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("").to_string();
        let headers = parse_fields(&lines[1..]);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        if chunked {
            loop {
                let Some(line) = read_line(&mut s, &mut buf).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&line).into_owned();
                let Ok(size) = usize::from_str_radix(text.split(';').next().unwrap().trim(), 16)
                else {
                    return;
                };
                if size == 0 {
                    let mut lines = Vec::new();
                    loop {
                        let Some(line) = read_line(&mut s, &mut buf).await else {
                            return;
                        };
                        if line.is_empty() {
                            break;
                        }
                        lines.push(line);
                    }
                    let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_slice()).collect();
                    trailers = parse_fields(&refs);
                    break;
                }
                while buf.len() < size + 2 {
                    if !fill(&mut s, &mut buf).await {
                        return;
                    }
                }
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
            }
        } else if let Some(len) = get("content-length") {
            let Ok(len) = len.trim().parse::<usize>() else {
                return;
            };
            while buf.len() < len {
                if !fill(&mut s, &mut buf).await {
                    return;
                }
            }
            body = buf.drain(..len).collect();
        }
        let close_requested = get("connection").is_some_and(|v| v.contains("close"));
        let req = UpRequest {
            method,
            target,
            version,
            headers,
            body,
            raw_head,
            chunked,
            trailers,
            connection,
        };
        let reply = handler(&req);
        counters.requests.lock().unwrap().push(req);
        if s.write_all(&reply.bytes).await.is_err() {
            return;
        }
        if reply.close || close_requested {
            let _ = s.shutdown().await;
            // Let the peer read everything before the socket is dropped.
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            return;
        }
    }
}

/// Byte `i` of the deterministic binary pattern used for big bodies.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed as usize) % 251) as u8)
        .collect()
}

/// The chunk sizes `/chunked` sends.
pub const CHUNK_SIZES: [usize; 4] = [5, 1, 3000, 17];

/// The chunk sizes `/chunked-big` sends (bigger than any read buffer).
pub const BIG_CHUNK_SIZES: [usize; 5] = [1, 70_000, 300_000, 5, 65_536];

/// The standard upstream's answers, by path:
/// - `/echo...`: 200, `X-Echo-Method`, `X-Echo-Target`, mixed-case headers;
///   body `"<METHOD> <target>\n"` followed by the request body.
/// - `/binary`: 200 with all 256 byte values, twice.
/// - `/big`: 200 with a 10 MiB binary body.
/// - `/chunked`: chunked with [`CHUNK_SIZES`] and a trailer `X-Checksum: abc123`.
/// - `/chunked-big`: chunked with [`BIG_CHUNK_SIZES`], binary data.
/// - `/close-delimited`: a body ended by closing the connection.
/// - `/head`: headers only with `Content-Length: 1234` (for HEAD).
/// - `/no-content`: 204. `/not-modified`: 304.
/// - `/counter`: body `count=N`, N counting calls from 1.
/// - `/hop`: response with hop-by-hop headers that must not pass.
pub fn standard_handler(req: &UpRequest, counter: &AtomicUsize) -> Reply {
    match req.path() {
        p if p.starts_with("/echo") => {
            let mut body = format!("{} {}\n", req.method, req.target).into_bytes();
            body.extend_from_slice(&req.body);
            Reply::new(
                200,
                "OK",
                &[
                    ("Content-Type", b"application/octet-stream"),
                    ("X-Echo-Method", req.method.as_bytes()),
                    ("X-Echo-Target", req.target.as_bytes()),
                    ("x-lower-case", b"kept"),
                    ("X-UPPER-CASE", b"Kept Too"),
                    ("Set-Cookie", b"a=1"),
                    ("Set-Cookie", b"b=2"),
                ],
                &body,
            )
        }
        "/binary" => {
            let body: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
            Reply::new(200, "OK", &[("Content-Type", b"application/octet-stream")], &body)
        }
        "/big" => Reply::new(200, "OK", &[("Content-Type", b"application/octet-stream")], &pattern(10 << 20, 7)),
        "/chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-After: 1\r\n\r\n".to_vec();
            for (i, size) in CHUNK_SIZES.iter().enumerate() {
                out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                out.extend((0..*size).map(|j| b'a' + ((i + j) % 26) as u8));
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nX-Checksum: abc123\r\n\r\n");
            Reply::raw(out)
        }
        "/chunked-big" => {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for (i, size) in BIG_CHUNK_SIZES.iter().enumerate() {
                out.extend_from_slice(format!("{size:X}\r\n").as_bytes());
                out.extend_from_slice(&pattern(*size, i as u8));
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            Reply::raw(out)
        }
        "/close-delimited" => Reply::raw_then_close(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nthis body ends when the connection closes".to_vec(),
        ),
        "/head" => Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1234\r\nX-Head: yes\r\n\r\n".to_vec()),
        "/no-content" => Reply::raw(b"HTTP/1.1 204 No Content\r\nX-Deleted: 1\r\n\r\n".to_vec()),
        "/not-modified" => Reply::raw(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n".to_vec()),
        "/counter" => {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::text(&format!("count={n}"))
        }
        "/hop" => Reply::raw(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: X-Internal\r\nX-Internal: secret\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nX-Visible: yes\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
        _ => Reply::new(404, "Not Found", &[], b"no such path"),
    }
}
