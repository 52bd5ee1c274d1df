//! Measurements the external load generators do not make: one raw
//! exchange (to check answers), connection setup time, memory per idle
//! connection, and the WebSocket echo client.

use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// One answer read off a socket: the head as text, and the body.
pub struct Answer {
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn status_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }
}

/// Sends one GET for `path` on `stream` and reads the whole answer
/// (Content-Length framed, as both servers answer here).
pub fn exchange(stream: &mut TcpStream, path: &str, extra: &str) -> std::io::Result<Answer> {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n"
    )?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Answer {
        head,
        body: buf[head_end..head_end + length].to_vec(),
    })
}

/// One GET on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    exchange(&mut stream, path, "")
}

/// Percentile `p` (0..=100) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What [`setup_times`] measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Setup {
    /// `connect()` to the end of the first answer on a new connection.
    pub first_p50: Duration,
    pub first_p99: Duration,
    /// The second exchange on the same connection (warm).
    pub warm_p50: Duration,
    /// `connect()` alone (the kernel's handshake; the server has not run).
    pub connect_p50: Duration,
}

impl Setup {
    /// What a new connection adds to an exchange: p50 of the first exchange
    /// minus p50 of a warm one (accept, task start, first read).
    pub fn overhead(&self) -> Duration {
        self.first_p50.saturating_sub(self.warm_p50)
    }
}

/// Connection setup: `n` sequential new connections, each timed from
/// `connect()` to the end of the first answer, then a second exchange on
/// the same connection timed alone.
pub fn setup_times(addr: SocketAddr, path: &str, n: usize) -> Setup {
    let mut first = Vec::with_capacity(n);
    let mut warm = Vec::with_capacity(n);
    let mut connect = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let Ok(mut stream) = TcpStream::connect(addr) else {
            continue;
        };
        let t1 = Instant::now();
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if exchange(&mut stream, path, "").is_err() {
            continue;
        }
        let t2 = Instant::now();
        if exchange(&mut stream, path, "").is_err() {
            continue;
        }
        first.push(t2 - t0);
        connect.push(t1 - t0);
        warm.push(t2.elapsed());
    }
    first.sort();
    warm.sort();
    connect.sort();
    Setup {
        first_p50: percentile(&first, 50.0),
        first_p99: percentile(&first, 99.0),
        warm_p50: percentile(&warm, 50.0),
        connect_p50: percentile(&connect, 50.0),
    }
}

/// VmRSS of `pid`, in kB.
pub fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// KB of RSS per idle keep-alive connection: warm up with 64 exchanges,
/// read VmRSS, open `conns` connections that each make one exchange and
/// stay open, read VmRSS again: (after - before) / conns. The method of
/// `benches/idle_memory.rs`, applied to any server process.
pub fn idle_kb(addr: SocketAddr, pid: u32, path: &str, conns: usize) -> Result<f64, String> {
    for _ in 0..64 {
        get(addr, path).map_err(|e| format!("warm-up: {e}"))?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = vm_rss_kb(pid);
    let mut idle = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut stream =
            TcpStream::connect(addr).map_err(|e| format!("connection {i}: connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        exchange(&mut stream, path, "").map_err(|e| format!("connection {i}: {e}"))?;
        idle.push(stream);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let after = vm_rss_kb(pid);
    drop(idle);
    Ok(after.saturating_sub(before) as f64 / conns as f64)
}

/// What a WebSocket run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct WsResult {
    /// Client messages echoed back (one round trip each).
    pub round_trips: u64,
    /// Conversations (connections) completed with a close.
    pub conversations: u64,
    /// Conversations that failed (refused upgrade, wrong echo, timeout).
    pub errors: u64,
    pub elapsed: Duration,
}

/// The message the client sends `i`-th in each conversation.
fn ws_message(i: usize) -> String {
    format!("{{\"seq\":{i},\"op\":\"echo\",\"payload\":\"abcdefghijklmnop\"}}")
}

async fn ws_conversation(
    addr: SocketAddr,
    messages: usize,
    deadline: Option<Instant>,
    done: &mut u64,
) -> Result<(), String> {
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request
        .headers_mut()
        .insert("x-ouli-test-name", "ws".parse().expect("header value"));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let wait = Duration::from_secs(5);
    for i in 0..messages {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        let text = ws_message(i);
        ws.send(Message::text(text.clone()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text => *done += 1,
            other => return Err(format!("message {i}: expected the echo, got {other:?}")),
        }
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(wait, ws.next()).await {}
    Ok(())
}

/// `conns` connections, each running echo conversations of `messages`
/// messages back to back until `duration` is over (or one conversation
/// each when `duration` is `None`).
pub fn ws_run(
    addr: SocketAddr,
    conns: usize,
    messages: usize,
    duration: Option<Duration>,
) -> WsResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let start = Instant::now();
        let deadline = duration.map(|d| start + d);
        let mut tasks = Vec::new();
        for _ in 0..conns {
            tasks.push(tokio::spawn(async move {
                let mut r = WsResult::default();
                loop {
                    match ws_conversation(addr, messages, deadline, &mut r.round_trips).await {
                        Ok(()) => r.conversations += 1,
                        Err(e) => {
                            if r.errors == 0 {
                                eprintln!("ws client: {e}");
                            }
                            r.errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    if deadline.is_none_or(|d| Instant::now() >= d) {
                        return r;
                    }
                }
            }));
        }
        let mut total = WsResult::default();
        for t in tasks {
            if let Ok(r) = t.await {
                total.round_trips += r.round_trips;
                total.conversations += r.conversations;
                total.errors += r.errors;
            }
        }
        total.elapsed = start.elapsed();
        total
    })
}
