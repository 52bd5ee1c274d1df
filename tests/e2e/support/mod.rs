//! Shared harness: temp dirs, configs, in-process and binary proxies, a raw
//! client and a scripted upstream.
#![allow(dead_code)]

pub mod client;
pub mod process;
pub mod upstream;

use ouli_adapter_common::config::Config;
use ouli_core::proxy::Mode;
use ouli_tokio::{RunSummary, TestProxy};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Bound on every single network wait.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `fut`, panicking with `what` after [`TIMEOUT`].
pub async fn io_timeout<T>(what: &str, fut: impl Future<Output = T>) -> T {
    io_timeout_for(TIMEOUT, what, fut).await
}

/// Awaits `fut`, panicking with `what` after `limit`.
pub async fn io_timeout_for<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop unless the
/// test failed (then it is kept for inspection).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("ouli-e2e-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A recording dir inside this temp dir (created).
    pub fn recordings(&self) -> PathBuf {
        let p = self.path.join("recordings");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A config with one endpoint to `127.0.0.1:upstream_port`; `top` goes
/// before the endpoint table, `endpoint` inside it.
pub fn config_toml(upstream_port: u16, top: &str, endpoint: &str) -> String {
    format!(
        "{top}\n\n[[endpoints]]\nsource_port = 0\nsource_type = \"http\"\n\
         target_host = \"127.0.0.1\"\ntarget_port = {upstream_port}\ntarget_type = \"http\"\n{endpoint}\n"
    )
}

/// Starts an in-process proxy from config text.
pub async fn start_proxy_with(mode: Mode, dir: &Path, toml: &str) -> TestProxy {
    let config = Config::from_toml_str(toml, "e2e.toml")
        .unwrap_or_else(|e| panic!("config rejected: {e}\n{toml}"));
    io_timeout(
        "start the proxy",
        TestProxy::start(config, mode, dir.to_path_buf()),
    )
    .await
    .unwrap_or_else(|e| panic!("proxy did not start: {e}"))
}

/// Starts an in-process proxy with the default config.
pub async fn start_proxy(mode: Mode, dir: &Path, upstream_port: u16) -> TestProxy {
    start_proxy_with(mode, dir, &config_toml(upstream_port, "", "")).await
}

/// Stops a proxy gracefully (the default grace period is 10 s, and the
/// last recordings may still be written).
pub async fn stop_proxy(proxy: TestProxy) -> RunSummary {
    io_timeout_for(Duration::from_secs(20), "stop the proxy", proxy.stop()).await
}

/// A port where connections are refused, held for as long as the value
/// lives: a socket bound to it that never listens. (A port bound and then
/// released can be handed out again at once, even as the proxy's own
/// listening port: the proxy then forwarded to itself until its in-flight
/// limit answered 503.)
pub struct ClosedPort {
    _socket: socket2::Socket,
    /// The port.
    pub port: u16,
}

/// See [`ClosedPort`].
pub fn closed_port() -> ClosedPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any_port.into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    ClosedPort {
        _socket: socket,
        port,
    }
}

/// Every regular file under `dir`, recursively.
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

/// The recording file name for a test: non `[A-Za-z0-9._-]` bytes (and a
/// leading `.`) percent-encoded as `%XX`, plus `.json`.
pub fn recording_file_name(test: &str) -> String {
    let mut s = String::new();
    for (i, b) in test.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b"_-".contains(&b) || (b == b'.' && i > 0) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.push_str(".json");
    s
}

/// Reads and parses a test's recording file.
pub fn read_recording(dir: &Path, test: &str) -> serde_json::Value {
    let path = dir.join(recording_file_name(test));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; files: {:?}",
            path.display(),
            files_under(dir)
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Decodes a recorded byte field: a string, or `{"base64": ..}`.
pub fn recorded_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        serde_json::Value::Object(o) => {
            let b64 = o
                .get("base64")
                .and_then(|b| b.as_str())
                .expect("{\"base64\": ..}");
            base64_decode(b64)
        }
        other => panic!("not a byte field: {other}"),
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for group in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in group.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&bytes[..group.len().saturating_sub(1)]);
    }
    out
}
