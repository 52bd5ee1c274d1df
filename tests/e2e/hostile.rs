//! Hostile client input: an error status with `x-ouli-error`, `connection:
//! close`, the connection closed; nothing reaches the upstream; the proxy
//! keeps serving other connections.

use crate::support::client::{test_request, Client};
use crate::support::upstream::Upstream;
use crate::support::{config_toml, start_proxy_with, stop_proxy, TempDir};
use ouli_core::proxy::Mode;
use std::time::Duration;

/// Where the input breaks a rule: in the head or in the body. Either way not
/// a byte of the request may reach the upstream: Ouli reads the whole request
/// before forwarding it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    Head,
    Body,
}

const LIMIT: usize = 1 << 20;

async fn check_case(mode: Mode, input: Vec<u8>, status: u16, level: Level) {
    let tmp = TempDir::new("hostile");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let toml = config_toml(
        upstream.port(),
        &format!("max_recorded_body_bytes = {LIMIT}"),
        "",
    );
    let proxy = start_proxy_with(mode, &dir, &toml).await;

    let normal = test_request("hostile-ok", "GET", "/echo/ok", &[], b"");
    let check_normal = |r: crate::support::client::Response| match mode {
        Mode::Record => assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"GET /echo/ok\n"[..]),
            "{}",
            r.describe()
        ),
        _ => {
            assert_eq!(r.status, 599, "{}", r.describe());
            assert_eq!(r.header("x-ouli-miss"), Some(&b"true"[..]));
        }
    };
    // Served before.
    check_normal(Client::connect(proxy.addr()).await.request(&normal).await);
    let heads_before = upstream.heads();
    let requests_before = upstream.request_count();

    // The hostile input, alone on its connection.
    let mut c = Client::connect(proxy.addr()).await;
    c.send_lossy(&input).await;
    let r = c.read_response().await;
    assert_eq!(r.status, status, "{}", r.describe());
    let reason = r
        .header_str("x-ouli-error")
        .unwrap_or_else(|| panic!("no x-ouli-error header: {}", r.describe()));
    assert!(!reason.trim().is_empty(), "empty x-ouli-error");
    assert_eq!(
        r.header("connection"),
        Some(&b"close"[..]),
        "{}",
        r.describe()
    );
    assert!(r.header("content-length").is_some(), "{}", r.describe());
    assert_eq!(
        r.body.iter().filter(|&&b| b == b'\n').count(),
        1,
        "body is one line: {:?}",
        r.body_str()
    );
    assert!(
        r.body.ends_with(b"\n"),
        "body is one line: {:?}",
        r.body_str()
    );
    assert!(
        r.body_str().starts_with(&status.to_string()),
        "body: {:?}",
        r.body_str()
    );
    c.expect_closed().await;

    // Anything forwarded would have arrived by now.
    tokio::time::sleep(Duration::from_millis(50)).await;
    if mode == Mode::Record {
        assert_eq!(
            upstream.request_count(),
            requests_before,
            "a hostile request reached the upstream"
        );
        assert_eq!(
            upstream.heads(),
            heads_before,
            "a hostile request's head reached the upstream ({level:?})"
        );
    }

    // Still serving, on new connections.
    for _ in 0..2 {
        check_normal(Client::connect(proxy.addr()).await.request(&normal).await);
    }
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.client_errors, 1, "{summary}");
    if mode == Mode::Record {
        assert_eq!(upstream.request_count(), 3);
        assert!(upstream.requests().iter().all(|r| r.target == "/echo/ok"));
        // Only the normal requests were recorded.
        let rec = crate::support::read_recording(&dir, "hostile-ok");
        assert_eq!(rec["interactions"].as_array().unwrap().len(), 3);
        assert_eq!(
            crate::support::files_under(&dir).len(),
            1,
            "{:?}",
            crate::support::files_under(&dir)
        );
    } else {
        assert_eq!(upstream.connections(), 0);
    }
}

macro_rules! hostile {
    ($name:ident, $input:expr, $status:expr, $level:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn record() {
                check_case(Mode::Record, $input, $status, $level).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replay() {
                check_case(Mode::Replay, $input, $status, $level).await;
            }
        }
    };
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

hostile!(
    content_length_and_transfer_encoding,
    bytes("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    400,
    Level::Head
);
hostile!(
    differing_content_lengths,
    bytes("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    400,
    Level::Head
);
hostile!(
    differing_content_lengths_in_one_field,
    bytes("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    400,
    Level::Head
);
hostile!(
    transfer_encoding_not_ending_in_chunked,
    bytes("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
    400,
    Level::Head
);
hostile!(
    transfer_encoding_chunked_then_gzip,
    bytes("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    400,
    Level::Head
);
hostile!(
    bad_chunk_size,
    bytes("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    400,
    Level::Body
);
hostile!(
    overflowing_chunk_size,
    bytes("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    400,
    Level::Body
);
hostile!(
    obs_fold,
    bytes("GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n"),
    400,
    Level::Head
);
hostile!(
    control_char_in_header_value,
    bytes("GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n"),
    400,
    Level::Head
);
hostile!(
    request_line_over_8_kib,
    format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000)).into_bytes(),
    414,
    Level::Head
);
hostile!(
    header_section_over_64_kib,
    {
        let mut s = String::from("GET /echo HTTP/1.1\r\nHost: x\r\n");
        for i in 0..70 {
            s.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(1000)));
        }
        s.push_str("\r\n");
        s.into_bytes()
    },
    431,
    Level::Head
);
hostile!(
    more_than_128_headers,
    {
        let mut s = String::from("GET /echo HTTP/1.1\r\nHost: x\r\n");
        for i in 0..130 {
            s.push_str(&format!("X-H-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    },
    431,
    Level::Head
);
hostile!(
    content_length_over_max_recorded_body_bytes,
    format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        LIMIT + 1
    )
    .into_bytes(),
    413,
    Level::Head
);
hostile!(
    chunked_body_over_max_recorded_body_bytes,
    {
        let size = LIMIT + 4096;
        let mut v = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{size:x}\r\n"
        )
        .into_bytes();
        v.extend(std::iter::repeat_n(b'b', size));
        v.extend_from_slice(b"\r\n0\r\n\r\n");
        v
    },
    413,
    Level::Body
);

/// A request head that never completes gets 408 after header_read_timeout_ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_gets_408() {
    let tmp = TempDir::new("slowhead");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let toml = config_toml(upstream.port(), "header_read_timeout_ms = 300", "");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let mut c = Client::connect(proxy.addr()).await;
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        .await;
    let started = std::time::Instant::now();
    let r = c.read_response().await;
    assert_eq!(r.status, 408, "{}", r.describe());
    assert!(r.header("x-ouli-error").is_some());
    assert!(started.elapsed() < Duration::from_secs(5));
    c.expect_closed().await;
    assert_eq!(upstream.heads(), 0);
    let ok = Client::connect(proxy.addr())
        .await
        .request(&test_request("t", "GET", "/echo/ok", &[], b""))
        .await;
    assert_eq!(ok.status, 200);
}

/// A hostile request after a good one on the same keep-alive connection:
/// the good one is answered, then the error, then the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_request_after_a_good_one_on_the_same_connection() {
    let tmp = TempDir::new("hostile-ka");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let proxy = start_proxy_with(Mode::Record, &dir, &config_toml(upstream.port(), "", "")).await;
    let mut c = Client::connect(proxy.addr()).await;
    let good = c
        .request(&test_request("ka", "GET", "/echo/good", &[], b""))
        .await;
    assert_eq!(good.status, 200);
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n")
        .await;
    let bad = c.read_response().await;
    assert_eq!(bad.status, 400, "{}", bad.describe());
    assert!(bad.header("x-ouli-error").is_some());
    c.expect_closed().await;
    assert_eq!(upstream.request_count(), 1);
}
