//! Blocking helpers for the runtime suite: temp dirs, configs, a raw HTTP
//! client on `std::net`, and a scripted upstream on threads. Nothing here
//! depends on an async runtime, so every runtime is tested the same way.

use ouli_adapter_common::config::Config;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Bound on every single network wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `done` every 10 ms, up to 2,000 times (20 s), panicking with `what`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("gave up waiting: {what}");
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop unless the
/// test failed.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("ouli-runtimes-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A config with `top` settings and one endpoint per upstream port.
pub fn config(top: &str, upstream_ports: &[u16]) -> Config {
    let mut text = format!("{top}\n");
    for port in upstream_ports {
        text.push_str(&format!(
            "[[endpoints]]\nsource_port = 0\ntarget_host = \"127.0.0.1\"\ntarget_port = {port}\n"
        ));
    }
    Config::from_toml_str(&text, "runtimes-test.toml").expect("test config")
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects with the suite's read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// A GET for `path` in test `test`, keep-alive.
pub fn get(path: &str, test: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: ouli\r\nX-Ouli-Test-Name: {test}\r\n\r\n").into_bytes()
}

/// Sends `request` and reads one response (head and content-length body).
pub fn exchange(stream: &mut TcpStream, request: &[u8]) -> Response {
    stream.write_all(request).expect("send request");
    read_response(stream).expect("read response")
}

/// Reads one response: the head, then a `content-length` body.
pub fn read_response(stream: &mut TcpStream) -> io::Result<Response> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "closed after {:?}",
                    String::from_utf8_lossy(&head).into_owned()
                ),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length = header(&head, "content-length")
        .map(|v| v.parse::<usize>().expect("content-length"))
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Response { status, body })
}

/// The value of header `name` in a head (case-insensitive).
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Sends `request` on a fresh connection and reads until the proxy closes.
pub fn send_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request).expect("send");
    read_to_close(&mut stream)
}

/// Everything until the peer closes (a reset after some bytes counts as a close).
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("reading until close: {e} (after {} bytes)", out.len()),
        }
    }
}

/// The status of a raw response.
pub fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// A gate: requests wait at it while it is closed.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }

    fn pass(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }
}

/// What the scripted upstream does with a request.
#[derive(Clone, Copy)]
pub enum Behavior {
    /// Answers `200` with body `hello <path>` at once.
    Echo,
    /// Answers like `Echo` once the gate opens.
    Gated,
    /// Answers `200` with this many body bytes, counting what it has written.
    Big(usize),
}

/// A blocking HTTP/1.1 upstream on 127.0.0.1, a thread per connection.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests received (counted before answering).
    pub arrived: Arc<AtomicUsize>,
    /// Body bytes written (for [`Behavior::Big`]).
    pub written: Arc<AtomicUsize>,
    pub gate: Arc<Gate>,
}

impl Upstream {
    pub fn start(behavior: Behavior) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Gate::default());
        let (a, w, g) = (arrived.clone(), written.clone(), gate.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (a, w, g) = (a.clone(), w.clone(), g.clone());
                thread::spawn(move || {
                    let _ = serve_upstream(stream, behavior, &a, &w, &g);
                });
            }
        });
        Upstream {
            addr,
            arrived,
            written,
            gate,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn serve_upstream(
    mut stream: TcpStream,
    behavior: Behavior,
    arrived: &AtomicUsize,
    written: &AtomicUsize,
    gate: &Gate,
) -> io::Result<()> {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte)? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let length: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body)?;
        arrived.fetch_add(1, Ordering::SeqCst);
        let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
        match behavior {
            Behavior::Echo | Behavior::Gated => {
                if let Behavior::Gated = behavior {
                    gate.pass();
                }
                let body = format!("hello {path}");
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )?;
            }
            Behavior::Big(total) => {
                write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n")?;
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = total;
                while left > 0 {
                    let n = left.min(chunk.len());
                    stream.write_all(&chunk[..n])?;
                    written.fetch_add(n, Ordering::SeqCst);
                    left -= n;
                }
            }
        }
    }
}

/// A listener whose accept queue is full and never drained: a connection
/// attempt to it hangs (the kernel drops the SYN), as to an unreachable host.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        // Fill the queue until an attempt hangs.
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => queued.push(s),
                Err(_) => break,
            }
        }
        BlackHole {
            addr,
            _listener: socket,
            _queued: queued,
        }
    }
}
