//! Runs `examples/blocking_adapter.rs` (std::net and threads, no async
//! runtime anywhere in this test) against a tiny std::net upstream: record
//! through it, stop the upstream, then replay from the same directory and get
//! the same bytes back.

#[path = "../../examples/blocking_adapter.rs"]
#[allow(dead_code)] // its `main` and config helpers are not used here
mod adapter;

use ouli_adapter_common::endpoint::load_replay_index;
use ouli_adapter_common::recorder::Recorder;
use ouli_adapter_common::recording_dir::RecordingDir;
use ouli_core::proxy::{Mode, ProxySettings, MISS_FINGERPRINT_HEADER, MISS_STATUS};
use ouli_core::store::Recording;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ouli-blocking-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tiny HTTP/1.1 upstream on std::net: answers by target, keeps
/// connections alive, counts requests. Stopping it closes its port.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (Arc::clone(&hits), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let h = Arc::clone(&h);
                        thread::spawn(move || upstream_connection(stream, &h));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Upstream {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn upstream_connection(mut stream: TcpStream, hits: &AtomicUsize) {
    let mut buf = Vec::new();
    let more = |stream: &mut TcpStream, buf: &mut Vec<u8>| {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    };
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !more(&mut stream, &mut buf) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
        while buf.len() < head_end + length {
            if !more(&mut stream, &mut buf) {
                return;
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        buf.drain(..head_end + length);
        hits.fetch_add(1, Ordering::SeqCst);
        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
        let answer = match target.as_str() {
            "/search?q=ouli&page=2" => {
                let body = "results for q=ouli&page=2";
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: std\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            "/items" => {
                let body = format!("created: {body}");
                format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            "/stream" => {
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
                          5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: 42\r\n\r\n"
                    .to_owned()
            }
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
        };
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The blocking adapter serving on an ephemeral port in its own thread.
struct Adapter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<io::Result<()>>,
}

impl Adapter {
    fn start(mode: Mode, upstream: SocketAddr, dir: &Path) -> Adapter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = Arc::new(adapter::Endpoint {
            settings: Arc::new(ProxySettings::new(mode, upstream.to_string())),
            target: upstream.to_string(),
            connect_timeout: Duration::from_secs(2),
        });
        let dir = RecordingDir::new(dir);
        let (index, recorder) = match mode {
            Mode::Replay => (Some(Arc::new(load_replay_index(&dir).unwrap())), None),
            Mode::Record => (None, Some(Arc::new(Recorder::new(dir)))),
            Mode::Auto => unimplemented!("these tests record, then replay"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let s = Arc::clone(&stop);
        thread::spawn(move || {
            let _ = tx.send(adapter::serve(listener, endpoint, index, recorder, s));
        });
        Adapter { addr, stop, done }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.done
            .recv_timeout(PATIENCE)
            .expect("the adapter stops within the patience")
            .expect("serve returns Ok");
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Sends `request` on a new connection and reads until the proxy closes it.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .expect("the proxy closes the connection");
    answer
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A GET with a query and a POST with a body, pipelined on one keep-alive
/// connection; the POST asks to close.
fn session_get_then_post() -> Vec<u8> {
    let body = r#"{"name":"ada"}"#;
    format!(
        "GET /search?q=ouli&page=2 HTTP/1.1\r\nHost: localhost\r\nX-Ouli-Test-Name: blocking\r\n\r\n\
         POST /items HTTP/1.1\r\nHost: localhost\r\nX-Ouli-Test-Name: blocking\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const SESSION_STREAM: &[u8] =
    b"GET /stream HTTP/1.1\r\nHost: localhost\r\nX-Ouli-Test-Name: blocking\r\nConnection: close\r\n\r\n";

#[test]
fn records_through_upstream_then_replays_identical_bytes_without_it() {
    let dir = TempDir::new("record-replay");
    let upstream = Upstream::start();
    let upstream_addr = upstream.addr;

    // Record.
    let recording = Adapter::start(Mode::Record, upstream_addr, &dir.0);
    let recorded_1 = exchange(recording.addr, &session_get_then_post());
    let recorded_2 = exchange(recording.addr, SESSION_STREAM);
    recording.stop();
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 3);
    upstream.stop();

    let t1 = text(&recorded_1);
    let first = t1.find("HTTP/1.1 200 OK\r\n").expect("GET answered first");
    let second = t1.find("HTTP/1.1 201 Created\r\n").expect("POST answered");
    assert!(first < second, "answers in request order: {t1}");
    assert!(t1.contains("X-Upstream: std\r\n"), "{t1}");
    assert!(t1.contains("results for q=ouli&page=2"), "{t1}");
    assert!(t1.ends_with(r#"created: {"name":"ada"}"#), "{t1}");
    let t2 = text(&recorded_2);
    assert!(t2.starts_with("HTTP/1.1 200 OK\r\n"), "{t2}");
    assert!(
        t2.ends_with("\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: 42\r\n\r\n"),
        "chunk boundaries and trailers kept: {t2}"
    );

    // On disk: one file for the test, three interactions in order.
    let file = RecordingDir::new(&dir.0).file_for("blocking");
    let saved = Recording::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let targets: Vec<String> = saved
        .interactions
        .iter()
        .map(|i| text(&i.request.target))
        .collect();
    assert_eq!(targets, ["/search?q=ouli&page=2", "/items", "/stream"]);

    // The upstream is gone: replay must not need it.
    assert!(
        TcpStream::connect(upstream_addr).is_err(),
        "upstream closed"
    );
    let replaying = Adapter::start(Mode::Replay, upstream_addr, &dir.0);
    assert_eq!(
        text(&exchange(replaying.addr, &session_get_then_post())),
        t1
    );
    assert_eq!(text(&exchange(replaying.addr, SESSION_STREAM)), t2);

    // Each recorded exchange answers once; a fourth identical request misses.
    let miss = text(&exchange(replaying.addr, SESSION_STREAM));
    assert!(
        miss.starts_with(&format!("HTTP/1.1 {MISS_STATUS} ")),
        "{miss}"
    );
    assert!(miss.contains("already replayed"), "{miss}");
    replaying.stop();
}

#[test]
fn unrecorded_request_gets_599_with_its_fingerprint() {
    let dir = TempDir::new("miss");
    // Nothing listens on this address, and replay never connects anyway.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let replaying = Adapter::start(Mode::Replay, nowhere, &dir.0);
    let answer = text(&exchange(
        replaying.addr,
        b"GET /never-recorded?x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ));
    replaying.stop();
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {MISS_STATUS} ")),
        "{answer}"
    );
    assert!(
        answer.contains(&format!("{MISS_FINGERPRINT_HEADER}: ")),
        "{answer}"
    );
    assert!(answer.contains("GET /never-recorded?x=1"), "{answer}");
}

#[test]
fn stop_closes_idle_keep_alive_connections() {
    let dir = TempDir::new("stop");
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let replaying = Adapter::start(Mode::Replay, nowhere, &dir.0);
    let mut client = connect(replaying.addr);
    // A keep-alive request: the connection stays open after the answer.
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    client.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 599");
    // Stopping returns promptly and the idle connection is closed.
    replaying.stop();
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("closed, not timed out");
    assert!(!text(&rest).contains("HTTP/1.1"), "no second answer");
}
