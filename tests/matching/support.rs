//! A tiny local upstream that counts its connections, a raw HTTP/1.1 client,
//! temporary directories and config helpers.

use ouli_adapter_common::config::Config;
use ouli_core::proxy::Mode;
use ouli_tokio::TestProxy;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ouli-matching-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 that counts accepted connections.
///
/// Every answer is `200` with a JSON body
/// `{"seq":N,"method":M,"target":T,"body":B,"token":X}` where `N` counts
/// requests from 1, and `X` is the request's `X-Token-Out` header. When the
/// request has an `X-Cookie-Out` header, the answer carries
/// `Set-Cookie: sid=<it>`.
pub struct Upstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicUsize::new(0));
        let (c, s) = (Arc::clone(&connections), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (s, counter) = (Arc::clone(&s), Arc::clone(&counter));
                tokio::spawn(serve(stream, s, counter));
            }
        });
        Upstream {
            addr,
            connections,
            seen,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_headers(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (first, headers)
}

fn content_length(headers: &[(String, String)]) -> usize {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, counter: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let (line, headers) = parse_headers(&head);
        let len = content_length(&headers);
        while buf.len() < end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[end..end + len].to_vec();
        buf.drain(..end + len);
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let req = Seen {
            method,
            target,
            headers,
            body,
        };
        let seq = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = serde_json::json!({
            "seq": seq,
            "method": req.method,
            "target": req.target,
            "body": String::from_utf8_lossy(&req.body),
            "token": req.header("x-token-out").unwrap_or(""),
        })
        .to_string();
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            answer.len()
        );
        if let Some(cookie) = req.header("x-cookie-out") {
            response.push_str(&format!("set-cookie: sid={cookie}; HttpOnly\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&answer);
        seen.lock().unwrap().push(req);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive client connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Sends a request with `Content-Length` and reads its answer.
    pub async fn send(
        &mut self,
        test: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
        if !test.is_empty() {
            req.push_str(&format!("X-Ouli-Test-Name: {test}\r\n"));
        }
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await.unwrap();
        let end = tokio::time::timeout(
            Duration::from_secs(20),
            read_head(&mut self.stream, &mut self.buf),
        )
        .await
        .expect("an answer in time")
        .expect("an answer head");
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let (line, headers) = parse_headers(&head);
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let len = content_length(&headers);
        while self.buf.len() < end + len {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Response {
            status,
            headers,
            body,
        }
    }
}

/// One request on its own connection.
pub async fn one(
    addr: SocketAddr,
    test: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    Client::connect(addr)
        .await
        .send(test, method, target, headers, body)
        .await
}

/// A config with one endpoint on an ephemeral port proxying `port`, plus
/// `extra` TOML lines for the endpoint.
pub fn config(port: u16, extra: &str) -> Config {
    Config::from_toml_str(
        &format!(
            "shutdown_grace_ms = 2000\n[[endpoints]]\nsource_port = 0\ntarget_host = \"127.0.0.1\"\ntarget_port = {port}\n{extra}\n"
        ),
        "matching.toml",
    )
    .unwrap_or_else(|e| panic!("config: {e}"))
}

pub async fn start(config: Config, mode: Mode, dir: &Path) -> TestProxy {
    TestProxy::start(config, mode, dir)
        .await
        .unwrap_or_else(|e| panic!("proxy starts: {e}"))
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Asserts that `needle` occurs in no file under `dir` (and that there are files).
pub fn assert_nowhere(dir: &Path, needle: &str) {
    let files = files_under(dir);
    assert!(!files.is_empty(), "no files under {}", dir.display());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle:?} found in {}:\n{}",
            f.display(),
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// The parsed recording of `test` under `dir`.
pub fn recording(dir: &Path, test: &str) -> ouli_core::store::Recording {
    let path = ouli_adapter_common::recording_dir::RecordingDir::new(dir).file_for(test);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ouli_core::store::Recording::from_json(&text).unwrap()
}

/// The targets of a test's recorded requests, in order.
pub fn targets(dir: &Path, test: &str) -> Vec<String> {
    recording(dir, test)
        .interactions
        .iter()
        .map(|i| String::from_utf8_lossy(&i.request.target).into_owned())
        .collect()
}
