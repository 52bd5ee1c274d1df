//! The test bodies, generic over the runtime ([`Harness`]).

use crate::support::*;
use crate::{Harness, Proxy};
use ouli_adapter_common::config::Config;
use ouli_adapter_common::recording_dir::RecordingDir;
use ouli_adapter_common::server::RunSummary;
use ouli_core::proxy::Mode;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::thread;

/// Tests that hold thousands of sockets run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn start<H: Harness>(config: Config, mode: Mode, dir: &Path) -> Proxy<H> {
    H::block_on(Proxy::<H>::start(config, mode, dir.to_path_buf())).expect("start the proxy")
}

fn stop<H: Harness>(proxy: Proxy<H>) -> RunSummary {
    H::block_on(proxy.stop())
}

fn interactions(dir: &Path, test: &str) -> usize {
    RecordingDir::new(dir)
        .load_all()
        .expect("recordings load")
        .into_iter()
        .find(|(_, r)| r.test_name == test)
        .map_or(0, |(_, r)| r.interactions.len())
}

/// Record through a live upstream, then replay the same requests from disk.
pub fn record_then_replay<H: Harness>() {
    let dir = TempDir::new("record-replay");
    let upstream = Upstream::start(Behavior::Echo);
    let proxy = start::<H>(config("", &[upstream.port()]), Mode::Record, dir.path());
    let mut kept = connect(proxy.addr());
    let a = exchange(&mut kept, &get("/a", "rr"));
    let b = exchange(&mut kept, &get("/b", "rr"));
    let c = exchange(&mut connect(proxy.addr()), &get("/c", "rr"));
    drop(kept);
    assert_eq!((a.status, b.status, c.status), (200, 200, 200));
    assert_eq!(a.body_text(), "hello /a");
    let summary = stop::<H>(proxy);
    assert_eq!(summary.stats.recorded, 3, "{summary}");
    assert_eq!(upstream.arrived.load(Ordering::SeqCst), 3);
    assert_eq!(interactions(dir.path(), "rr"), 3);

    let proxy = start::<H>(config("", &[upstream.port()]), Mode::Replay, dir.path());
    let mut kept = connect(proxy.addr());
    for (path, want) in [("/a", &a), ("/b", &b), ("/c", &c)] {
        let got = exchange(&mut kept, &get(path, "rr"));
        assert_eq!((got.status, &got.body), (want.status, &want.body), "{path}");
    }
    drop(kept);
    let summary = stop::<H>(proxy);
    assert_eq!(summary.stats.replayed, 3, "{summary}");
    assert_eq!(
        upstream.arrived.load(Ordering::SeqCst),
        3,
        "replay never forwards"
    );
}

/// Protocol violations get their status and a close; the proxy serves on.
pub fn hostile_inputs_then_serving<H: Harness>() {
    let dir = TempDir::new("hostile");
    let proxy = start::<H>(config("", &[9]), Mode::Replay, dir.path());
    let smuggle = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(status_of(&send_raw(proxy.addr(), smuggle)), 400);
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    assert_eq!(
        status_of(&send_raw(proxy.addr(), long_line.as_bytes())),
        414
    );
    assert_eq!(
        status_of(&send_raw(proxy.addr(), b"\x00\x01\x02 NOT HTTP\r\n\r\n")),
        400
    );
    // Still serving: an ordinary request gets an ordinary (miss) answer.
    let r = exchange(&mut connect(proxy.addr()), &get("/after", "hostile"));
    assert_eq!(r.status, ouli_core::proxy::MISS_STATUS);
    let summary = stop::<H>(proxy);
    assert_eq!(summary.stats.client_errors, 3, "{summary}");
    assert_eq!(summary.stats.missed, 1, "{summary}");
}

fn raise_fd_limit(needed: u64) {
    let (soft, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    if soft < needed {
        rlimit::Resource::NOFILE
            .set(needed.min(hard), hard)
            .expect("raise the open-file limit");
    }
    let (soft, _) = rlimit::Resource::NOFILE.get().unwrap();
    assert!(
        soft >= needed,
        "need {needed} open files, the limit is {soft}"
    );
}

/// 4,096 connections open at once, every one answered, none refused, and
/// idle connections hold no read buffer.
pub fn many_connections_held_open<H: Harness>() {
    const N: usize = 4096;
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    // Both ends of every connection live in this process.
    raise_fd_limit(2 * N as u64 + 1024);
    let dir = TempDir::new("many");
    let proxy = start::<H>(config("", &[9]), Mode::Replay, dir.path());
    let mut clients: Vec<TcpStream> = (0..N).map(|_| connect(proxy.addr())).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(&get(&format!("/conn/{i}"), "many"))
            .expect("send");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let r = read_response(client).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(r.status, ouli_core::proxy::MISS_STATUS, "connection {i}");
    }
    // All still open and idle: no buffer is on loan.
    wait_until("idle connections to give their buffers back", || {
        proxy.buffers_in_use() == 0
    });
    let stats = proxy.stats().snapshot();
    assert_eq!(stats.accepted_connections, N as u64);
    assert_eq!(stats.refused_connections, 0);
    assert_eq!(stats.missed, N as u64);
    // And they still work.
    for client in clients.iter_mut().step_by(512) {
        let r = exchange(client, &get("/again", "many"));
        assert_eq!(r.status, ouli_core::proxy::MISS_STATUS);
    }
    drop(clients);
    let summary = stop::<H>(proxy);
    assert_eq!(summary.forced_connections, 0, "{summary}");
}

/// Past `max_connections`, a connection gets 503 and a close, is counted,
/// and the accept loop carries on.
pub fn connection_limit<H: Harness>() {
    let dir = TempDir::new("limit");
    let proxy = start::<H>(
        config("max_connections = 8", &[9]),
        Mode::Replay,
        dir.path(),
    );
    let mut open: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut c = connect(proxy.addr());
            let r = exchange(&mut c, &get(&format!("/{i}"), "limit"));
            assert_eq!(r.status, ouli_core::proxy::MISS_STATUS);
            c
        })
        .collect();
    let mut ninth = connect(proxy.addr());
    let answer = read_to_close(&mut ninth);
    assert_eq!(status_of(&answer), 503);
    assert!(String::from_utf8_lossy(&answer).contains("connection limit"));
    assert_eq!(proxy.stats().snapshot().refused_connections, 1);
    // A freed slot is served again.
    drop(open.pop());
    wait_until("a freed slot to be served", || {
        let mut c = connect(proxy.addr());
        c.write_all(&get("/again", "limit")).is_ok()
            && read_response(&mut c).is_ok_and(|r| r.status == ouli_core::proxy::MISS_STATUS)
    });
    drop(open);
    let summary = stop::<H>(proxy);
    assert!(summary.stats.refused_connections >= 1, "{summary}");
}

/// With one upstream request allowed in flight, a second one waits out the
/// timeout and gets 503 with the reason; the first completes.
pub fn in_flight_limit<H: Harness>() {
    let dir = TempDir::new("in-flight");
    let upstream = Upstream::start(Behavior::Gated);
    let top = "max_upstream_in_flight = 1\nupstream_in_flight_timeout_ms = 50";
    let proxy = start::<H>(config(top, &[upstream.port()]), Mode::Record, dir.path());
    let addr = proxy.addr();
    let first = thread::spawn(move || exchange(&mut connect(addr), &get("/first", "flight")));
    wait_until("the first request to reach the upstream", || {
        upstream.arrived.load(Ordering::SeqCst) == 1
    });
    let second = exchange(&mut connect(addr), &get("/second", "flight"));
    assert_eq!(second.status, 503);
    assert!(second.body_text().contains("in flight"), "{second:?}");
    upstream.gate.open();
    let first = first.join().unwrap();
    assert_eq!(
        (first.status, first.body_text().as_str()),
        (200, "hello /first")
    );
    // The slot is free again.
    let third = exchange(&mut connect(addr), &get("/third", "flight"));
    assert_eq!(third.status, 200);
    let summary = stop::<H>(proxy);
    assert_eq!(summary.stats.upstream_errors, 1, "{summary}");
    assert_eq!(summary.stats.recorded, 2, "{summary}");
}

/// Header read → 408, idle keep-alive → close, upstream connect → 504,
/// upstream response → 504.
pub fn timeouts<H: Harness>() {
    let dir = TempDir::new("timeouts");
    let silent = Upstream::start(Behavior::Gated);
    let black_hole = BlackHole::start();
    let top = "header_read_timeout_ms = 200\nidle_timeout_ms = 200\n\
               upstream_connect_timeout_ms = 200\nupstream_response_timeout_ms = 200";
    let proxy = start::<H>(
        config(top, &[silent.port(), black_hole.addr.port()]),
        Mode::Record,
        dir.path(),
    );
    let (to_silent, to_black_hole) = (proxy.addrs()[0], proxy.addrs()[1]);

    let slow_head = send_raw(to_silent, b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(status_of(&slow_head), 408);

    let idle = read_to_close(&mut connect(to_silent));
    assert!(
        idle.is_empty(),
        "an idle connection closes without an answer"
    );

    let response = exchange(&mut connect(to_silent), &get("/slow", "timeouts"));
    assert_eq!(response.status, 504, "{response:?}");
    assert!(
        response.body_text().contains("did not answer"),
        "{response:?}"
    );

    let connecting = exchange(&mut connect(to_black_hole), &get("/nowhere", "timeouts"));
    assert_eq!(connecting.status, 504, "{connecting:?}");
    assert!(
        connecting.body_text().contains("connecting"),
        "{connecting:?}"
    );
    silent.gate.open();
    let summary = stop::<H>(proxy);
    assert_eq!(summary.stats.client_errors, 1, "{summary}");
    assert_eq!(summary.stats.upstream_errors, 2, "{summary}");
}

/// A client that does not read makes Ouli stop reading from the upstream:
/// the upstream cannot push the whole body until the client drains it.
pub fn slow_client_backpressure<H: Harness>() {
    const BODY: usize = 32 * 1024 * 1024;
    let dir = TempDir::new("slow-client");
    let upstream = Upstream::start(Behavior::Big(BODY));
    let top = "max_recorded_body_bytes = 1024\n\
               tcp_send_buffer_bytes = 65536\ntcp_recv_buffer_bytes = 65536";
    let proxy = start::<H>(config(top, &[upstream.port()]), Mode::Record, dir.path());
    let mut client = connect(proxy.addr());
    client.write_all(&get("/big", "slow")).unwrap();
    // Wait until the upstream is stuck (its count stops moving).
    let mut last = usize::MAX;
    let mut still = 0;
    wait_until("the upstream to stall", || {
        let now = upstream.written.load(Ordering::SeqCst);
        still = if now == last && now > 0 { still + 1 } else { 0 };
        last = now;
        still >= 20 || now == BODY
    });
    let stalled_at = upstream.written.load(Ordering::SeqCst);
    assert!(
        stalled_at < BODY / 2,
        "the upstream pushed {stalled_at} of {BODY} bytes to a client that reads nothing"
    );
    let r = read_response(&mut client).expect("the whole response");
    assert_eq!((r.status, r.body.len()), (200, BODY));
    drop(client);
    let summary = stop::<H>(proxy);
    assert_eq!(
        summary.stats.not_recorded, 1,
        "over the recording limit: {summary}"
    );
}

/// Shutdown with 100 slow exchanges in flight: new connections are refused,
/// all 100 complete with 200, and all 100 are on disk afterwards.
pub fn shutdown_with_requests_in_flight<H: Harness>() {
    const N: usize = 100;
    let dir = TempDir::new("shutdown");
    let upstream = Upstream::start(Behavior::Gated);
    let proxy = start::<H>(
        config("shutdown_grace_ms = 60000", &[upstream.port()]),
        Mode::Record,
        dir.path(),
    );
    let addr = proxy.addr();
    let clients: Vec<_> = (0..N)
        .map(|i| {
            thread::spawn(move || {
                exchange(&mut connect(addr), &get(&format!("/slow/{i}"), "shutdown"))
            })
        })
        .collect();
    wait_until("all requests to reach the upstream", || {
        upstream.arrived.load(Ordering::SeqCst) == N
    });
    proxy.begin_stop();
    wait_until(
        "new connections to be refused",
        || match TcpStream::connect(addr) {
            Err(e) => e.kind() == ErrorKind::ConnectionRefused,
            Ok(_) => false,
        },
    );
    upstream.gate.open();
    for (i, client) in clients.into_iter().enumerate() {
        let r = client.join().unwrap();
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.body_text(), format!("hello /slow/{i}"));
    }
    let summary = stop::<H>(proxy);
    assert_eq!(summary.stats.recorded, N as u64, "{summary}");
    assert_eq!(summary.forced_connections, 0, "{summary}");
    assert_eq!(interactions(dir.path(), "shutdown"), N);
}
