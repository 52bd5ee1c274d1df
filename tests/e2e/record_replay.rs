//! Record against a live upstream, stop it, replay: the answers are the same.

use crate::support::client::{
    assert_same_response, one_shot, request, test_request, Client, Response,
};
use crate::support::upstream::{pattern, Reply, Upstream, BIG_CHUNK_SIZES, CHUNK_SIZES};
use crate::support::{
    config_toml, find, read_recording, recorded_bytes, recording_file_name, start_proxy,
    start_proxy_with, stop_proxy, TempDir,
};
use ouli_core::proxy::Mode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

type Step = Vec<u8>;

/// Sends each request on one keep-alive connection and collects the answers.
async fn run_all(addr: std::net::SocketAddr, steps: &[Step]) -> Vec<Response> {
    // Big bodies are slow in a debug build: each store rewrites the whole
    // test file before the next request on the connection is read.
    let mut c = Client::connect(addr)
        .await
        .with_timeout(Duration::from_secs(30));
    let mut out = Vec::new();
    for s in steps {
        out.push(c.request(s).await);
    }
    out
}

/// Records `steps` against `upstream`, stops it, replays them; returns the
/// recorded and replayed answers after checking they are the same.
async fn record_then_replay(
    steps: &[Step],
    upstream: Upstream,
    dir: &std::path::Path,
) -> (Vec<Response>, Vec<Response>) {
    let port = upstream.port();
    let proxy = start_proxy(Mode::Record, dir, port).await;
    let recorded = run_all(proxy.addr(), steps).await;
    let summary = stop_proxy(proxy).await;
    assert_eq!(
        summary.stats.recorded,
        steps.len() as u64,
        "recorded count: {summary}"
    );
    upstream.stop().await;

    let proxy = start_proxy(Mode::Replay, dir, port).await;
    let replayed = run_all(proxy.addr(), steps).await;
    let summary = stop_proxy(proxy).await;
    assert_eq!(
        summary.stats.replayed,
        steps.len() as u64,
        "replayed count: {summary}"
    );
    assert_eq!(summary.stats.missed, 0, "{summary}");
    for (r, p) in recorded.iter().zip(&replayed) {
        assert_same_response(r, p);
    }
    (recorded, replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_queries_and_binary_bodies_replay_identically() {
    let tmp = TempDir::new("methods");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let binary_in: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    let steps = vec![
        request(
            "GET",
            "/echo/items?b=2&a=1&empty=",
            &[("Accept", "text/plain")],
            b"",
        ),
        request(
            "POST",
            "/echo/items",
            &[("Content-Type", "application/json")],
            br#"{"name":"widget","qty":3}"#,
        ),
        request(
            "PUT",
            "/echo/items/7",
            &[("Content-Type", "application/octet-stream")],
            &binary_in,
        ),
        request("DELETE", "/echo/items/7", &[], b""),
        request("GET", "/binary", &[], b""),
    ];
    let (recorded, replayed) = record_then_replay(&steps, upstream, &dir).await;

    // The recorded answers are the upstream's, byte for byte (header case and order kept).
    let names: Vec<String> = recorded[0]
        .end_to_end_headers()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "Content-Type",
            "X-Echo-Method",
            "X-Echo-Target",
            "x-lower-case",
            "X-UPPER-CASE",
            "Set-Cookie",
            "Set-Cookie",
            "Content-Length"
        ],
        "{}",
        recorded[0].describe()
    );
    assert_eq!(recorded[0].header("X-UPPER-CASE"), Some(&b"Kept Too"[..]));
    assert_eq!(
        recorded[0].header_all("set-cookie"),
        [&b"a=1"[..], &b"b=2"[..]]
    );
    for (i, (method, target, body)) in [
        ("GET", "/echo/items?b=2&a=1&empty=", &b""[..]),
        ("POST", "/echo/items", &br#"{"name":"widget","qty":3}"#[..]),
        ("PUT", "/echo/items/7", &binary_in[..]),
        ("DELETE", "/echo/items/7", &b""[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut expected = format!("{method} {target}\n").into_bytes();
        expected.extend_from_slice(body);
        assert_eq!(replayed[i].status, 200);
        assert_eq!(replayed[i].reason, "OK");
        assert_eq!(replayed[i].body, expected, "answer {i}");
        assert_eq!(replayed[i].header("X-Echo-Method"), Some(method.as_bytes()));
    }
    let all_bytes: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    assert_eq!(replayed[4].body, all_bytes);

    // Binary bodies are stored as {"base64": ..}, text bodies as strings.
    let rec = read_recording(&dir, "default");
    assert_eq!(rec["format"], "ouli-recording");
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["test_name"], "default");
    let its = rec["interactions"].as_array().expect("interactions array");
    assert_eq!(its.len(), 5);
    assert_eq!(its[1]["request"]["body"], r#"{"name":"widget","qty":3}"#);
    assert!(
        its[2]["request"]["body"].get("base64").is_some(),
        "{}",
        its[2]["request"]["body"]
    );
    assert_eq!(recorded_bytes(&its[2]["request"]["body"]), binary_in);
    assert_eq!(its[2]["request"]["method"], "PUT");
    assert_eq!(its[2]["request"]["target"], "/echo/items/7");
    assert_eq!(its[4]["response"]["status"], 200);
    assert_eq!(its[4]["response"]["reason"], "OK");
    assert_eq!(its[4]["response"]["framing"], "length");
    let fp = its[0]["fingerprint"].as_str().unwrap();
    assert!(
        fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
        "{fp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_bodies_both_ways() {
    let tmp = TempDir::new("big");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let big_in = pattern(10 << 20, 3);
    let steps = vec![
        test_request(
            "big",
            "POST",
            "/echo/upload",
            &[("Content-Type", "application/octet-stream")],
            &big_in,
        ),
        test_request("big", "GET", "/big", &[], b""),
    ];
    let (_, replayed) = record_then_replay(&steps, upstream, &dir).await;
    let mut expected = b"POST /echo/upload\n".to_vec();
    expected.extend_from_slice(&big_in);
    assert!(replayed[0].body == expected, "echoed 10 MiB body differs");
    assert!(
        replayed[1].body == pattern(10 << 20, 7),
        "10 MiB response differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_replays_same_chunks_and_trailers() {
    let tmp = TempDir::new("chunked");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let steps = vec![test_request("chunks", "GET", "/chunked", &[], b"")];
    let (recorded, replayed) = record_then_replay(&steps, upstream, &dir).await;
    for (what, r) in [("recorded", &recorded[0]), ("replayed", &replayed[0])] {
        assert_eq!(
            r.chunk_sizes.as_deref(),
            Some(&CHUNK_SIZES[..]),
            "{what}: {}",
            r.describe()
        );
        assert_eq!(
            r.trailers,
            [("X-Checksum".to_string(), b"abc123".to_vec())],
            "{what}"
        );
        assert!(
            r.header("trailer").is_none(),
            "{what}: Trailer is hop-by-hop: {}",
            r.describe()
        );
        assert_eq!(r.header("X-After"), Some(&b"1"[..]));
    }
    // The exact bytes of the replayed body section.
    let mut body_section = Vec::new();
    for (i, size) in CHUNK_SIZES.iter().enumerate() {
        body_section.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        body_section.extend((0..*size).map(|j| b'a' + ((i + j) % 26) as u8));
        body_section.extend_from_slice(b"\r\n");
    }
    body_section.extend_from_slice(b"0\r\nX-Checksum: abc123\r\n\r\n");
    let raw = &replayed[0].raw;
    let head_end = find(raw, b"\r\n\r\n").unwrap() + 4;
    assert!(
        raw[head_end..] == body_section[..],
        "replayed body bytes: {:?}",
        String::from_utf8_lossy(&raw[head_end..])
    );

    let rec = read_recording(&dir, "chunks");
    let resp = &rec["interactions"][0]["response"];
    assert_eq!(resp["framing"], "chunked");
    let chunks: Vec<usize> = resp["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| recorded_bytes(c).len())
        .collect();
    assert_eq!(chunks, CHUNK_SIZES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunks_keep_their_boundaries_on_replay() {
    let tmp = TempDir::new("bigchunks");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let req = test_request("bigchunks", "GET", "/chunked-big", &[], b"");
    let expected_body: Vec<u8> = BIG_CHUNK_SIZES
        .iter()
        .enumerate()
        .flat_map(|(i, size)| pattern(*size, i as u8))
        .collect();

    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let recorded = one_shot(proxy.addr(), &req).await;
    // Recorded twice: once for the HTTP/1.1 replay, once for the HTTP/1.0 one.
    assert!(one_shot(proxy.addr(), &req).await.body == expected_body);
    stop_proxy(proxy).await;
    upstream.stop().await;
    // Live, the chunks may be cut differently; the body is the same.
    assert!(recorded.body == expected_body, "recorded body differs");

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    let replayed = one_shot(proxy.addr(), &req).await;
    assert_eq!(
        replayed.chunk_sizes.as_deref(),
        Some(&BIG_CHUNK_SIZES[..]),
        "replayed chunk sizes"
    );
    assert!(replayed.body == expected_body, "replayed body differs");
    assert_eq!(replayed.status, 200);

    // An HTTP/1.0 client cannot take chunks: the same body, close-delimited.
    let mut c = Client::connect(proxy.addr()).await;
    c.send(b"GET /chunked-big HTTP/1.0\r\nX-Ouli-Test-Name: bigchunks\r\n\r\n")
        .await;
    let raw = c.read_to_close().await;
    let head_end = find(&raw, b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(
        raw[head_end..] == expected_body[..],
        "HTTP/1.0 body differs ({} bytes)",
        raw.len() - head_end
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_with_the_upstream_down_answers_502() {
    let tmp = TempDir::new("down");
    let dir = tmp.recordings();
    let closed = crate::support::closed_port();
    let proxy = start_proxy(Mode::Record, &dir, closed.port).await;
    let mut c = Client::connect(proxy.addr()).await;
    let r = c
        .request(&test_request("down", "GET", "/x", &[], b""))
        .await;
    assert_eq!(r.status, 502, "{}", r.describe());
    assert!(r.header("x-ouli-error").is_some(), "{}", r.describe());
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.recorded, 0, "{summary}");
    assert!(
        crate::support::files_under(&dir).is_empty(),
        "nothing is recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_response_replays() {
    let tmp = TempDir::new("close");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let req = test_request("close", "GET", "/close-delimited", &[], b"");

    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let recorded = one_shot(proxy.addr(), &req).await;
    stop_proxy(proxy).await;
    upstream.stop().await;
    assert_eq!(recorded.status, 200);
    assert_eq!(recorded.body, b"this body ends when the connection closes");

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    let mut c = Client::connect(proxy.addr()).await;
    let replayed = c.request(&req).await;
    assert_same_response(&recorded, &replayed);
    c.expect_closed().await;
    assert_eq!(
        read_recording(&dir, "close")["interactions"][0]["response"]["framing"],
        "close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let tmp = TempDir::new("nobody");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let steps = vec![
        test_request("nobody", "HEAD", "/head", &[], b""),
        test_request("nobody", "DELETE", "/no-content", &[], b""),
        test_request(
            "nobody",
            "GET",
            "/not-modified",
            &[("If-None-Match", "\"v1\"")],
            b"",
        ),
        // Proves no stray body bytes were sent before it on the same connection.
        test_request("nobody", "GET", "/echo/after", &[], b""),
    ];
    let (_, replayed) = record_then_replay(&steps, upstream, &dir).await;
    assert_eq!(replayed[0].status, 200);
    assert_eq!(replayed[0].header("Content-Length"), Some(&b"1234"[..]));
    assert_eq!(replayed[0].header("X-Head"), Some(&b"yes"[..]));
    assert_eq!(replayed[1].status, 204);
    assert_eq!(replayed[1].reason, "No Content");
    assert_eq!(replayed[1].header("X-Deleted"), Some(&b"1"[..]));
    assert_eq!(replayed[2].status, 304);
    assert_eq!(replayed[2].header("ETag"), Some(&b"\"v1\""[..]));
    assert_eq!(replayed[3].body, b"GET /echo/after\n");
    for r in &replayed[..3] {
        assert!(r.header("transfer-encoding").is_none(), "{}", r.describe());
    }
    assert!(
        replayed[1].header("content-length").is_none(),
        "204 with a Content-Length: {}",
        replayed[1].describe()
    );
}

async fn expect_continue_exchange(addr: std::net::SocketAddr) -> Response {
    let mut c = Client::connect(addr).await;
    c.send(b"POST /echo/continue HTTP/1.1\r\nHost: x\r\nX-Ouli-Test-Name: continue\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n").await;
    let interim = c.read_head().await;
    assert_eq!(
        (interim.status, interim.reason.as_str()),
        (100, "Continue"),
        "{}",
        interim.describe()
    );
    assert_eq!(interim.raw, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"hello world").await;
    c.read_response().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_by_ouli() {
    let tmp = TempDir::new("continue");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();

    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let recorded = expect_continue_exchange(proxy.addr()).await;
    stop_proxy(proxy).await;
    assert_eq!(recorded.status, 200, "{}", recorded.describe());
    assert_eq!(recorded.body, b"POST /echo/continue\nhello world");
    let seen = upstream.last_request();
    assert!(
        seen.header("expect").is_none(),
        "Expect was forwarded: {:?}",
        String::from_utf8_lossy(&seen.raw_head)
    );
    upstream.stop().await;

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    let replayed = expect_continue_exchange(proxy.addr()).await;
    assert_same_response(&recorded, &replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let tmp = TempDir::new("pipeline");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let mut batch = test_request("pipe", "GET", "/echo?n=1", &[], b"");
    batch.extend(test_request(
        "pipe",
        "POST",
        "/echo?n=2",
        &[],
        b"second body",
    ));
    batch.extend(test_request("pipe", "GET", "/chunked", &[], b""));
    batch.extend(test_request("pipe", "GET", "/echo?n=3", &[], b""));

    async fn run(addr: std::net::SocketAddr, batch: &[u8]) -> Vec<Response> {
        let mut c = Client::connect(addr).await;
        c.send(batch).await;
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(c.read_response().await);
        }
        c.expect_open_and_quiet(100).await;
        out
    }
    let check = |rs: &[Response]| {
        assert_eq!(rs[0].body, b"GET /echo?n=1\n", "{}", rs[0].describe());
        assert_eq!(
            rs[1].body,
            b"POST /echo?n=2\nsecond body",
            "{}",
            rs[1].describe()
        );
        assert_eq!(
            rs[2].chunk_sizes.as_ref().map(|s| s.iter().sum::<usize>()),
            Some(CHUNK_SIZES.iter().sum())
        );
        assert_eq!(rs[3].body, b"GET /echo?n=3\n", "{}", rs[3].describe());
    };

    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let recorded = run(proxy.addr(), &batch).await;
    check(&recorded);
    stop_proxy(proxy).await;
    upstream.stop().await;

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    let replayed = run(proxy.addr(), &batch).await;
    check(&replayed);
    for (r, p) in recorded.iter().zip(&replayed) {
        assert_same_response(r, p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_reused() {
    let tmp = TempDir::new("keepalive");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let steps: Vec<Step> = (0..6)
        .map(|i| test_request("ka", "GET", &format!("/echo?i={i}"), &[], b""))
        .collect();

    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let mut c = Client::connect(proxy.addr()).await;
    let mut recorded = Vec::new();
    for s in &steps {
        let r = c.request(s).await;
        assert!(
            r.header("connection").is_none(),
            "keep-alive answer says {:?}",
            r.header_str("connection")
        );
        recorded.push(r);
    }
    assert_eq!(upstream.request_count(), 6);
    assert!(
        upstream.connections() < 6,
        "the upstream saw {} connections for 6 keep-alive requests",
        upstream.connections()
    );
    stop_proxy(proxy).await;
    upstream.stop().await;

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    let mut c = Client::connect(proxy.addr()).await;
    for (s, r) in steps.iter().zip(&recorded) {
        let p = c.request(s).await;
        assert_same_response(r, &p);
    }
    // `Connection: close` from the client ends the connection after the answer.
    let last = c
        .request(&test_request(
            "ka",
            "GET",
            "/echo?i=0",
            &[("Connection", "close")],
            b"",
        ))
        .await;
    assert_eq!(
        last.status,
        599,
        "the only recording for /echo?i=0 was used: {}",
        last.describe()
    );
    assert_eq!(last.header("connection"), Some(&b"close"[..]));
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_request_in_two_tests_gets_each_tests_answer() {
    let tmp = TempDir::new("twotests");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let a = test_request("test-a", "GET", "/counter", &[], b"");
    let b = test_request("test-b", "GET", "/counter", &[], b"");

    let proxy = start_proxy(Mode::Record, &dir, port).await;
    assert_eq!(one_shot(proxy.addr(), &a).await.body, b"count=1");
    assert_eq!(one_shot(proxy.addr(), &b).await.body, b"count=2");
    stop_proxy(proxy).await;
    // The test name header never reaches the upstream.
    for r in upstream.requests() {
        assert!(
            r.header("x-ouli-test-name").is_none(),
            "{:?}",
            String::from_utf8_lossy(&r.raw_head)
        );
    }
    upstream.stop().await;
    assert!(dir.join("test-a.json").is_file() && dir.join("test-b.json").is_file());

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    assert_eq!(one_shot(proxy.addr(), &b).await.body, b"count=2");
    assert_eq!(one_shot(proxy.addr(), &a).await.body, b"count=1");
    // No header means the test `default`, which was never recorded.
    let none = one_shot(proxy.addr(), &request("GET", "/counter", &[], b"")).await;
    assert_eq!(none.status, 599, "{}", none.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_requests_replay_in_order_then_miss() {
    let tmp = TempDir::new("repeat");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let req = test_request("repeat", "GET", "/counter", &[], b"");

    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let mut c = Client::connect(proxy.addr()).await;
    for n in 1..=3 {
        assert_eq!(c.request(&req).await.body, format!("count={n}").as_bytes());
    }
    drop(c);
    stop_proxy(proxy).await;
    upstream.stop().await;

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    let mut c = Client::connect(proxy.addr()).await;
    for n in 1..=3 {
        let r = c.request(&req).await;
        assert_eq!(
            (r.status, r.body_str()),
            (200, format!("count={n}")),
            "{}",
            r.describe()
        );
    }
    let past_end = c.request(&req).await;
    assert_eq!(past_end.status, 599, "{}", past_end.describe());
    assert_eq!(past_end.reason, "Ouli Replay Miss");
    assert_eq!(past_end.header("x-ouli-miss"), Some(&b"true"[..]));
    drop(c);
    let summary = stop_proxy(proxy).await;
    assert_eq!(
        (summary.stats.replayed, summary.stats.missed),
        (3, 1),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_forwarded_byte_for_byte_without_hop_by_hop() {
    let tmp = TempDir::new("forward");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let raw = b"GET /echo/fwd?q=1&r=%20x HTTP/1.1\r\n\
        Host: client.example\r\n\
        X-First: 1\r\n\
        X-Ouli-Test-Name: forward\r\n\
        Connection: keep-alive, X-Drop-Me\r\n\
        x-second: two  words\r\n\
        X-Drop-Me: gone\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Proxy-Authorization: Basic abc\r\n\
        Proxy-Connection: keep-alive\r\n\
        X-THIRD: 3\r\n\
        \r\n";
    let r = one_shot(proxy.addr(), raw).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let seen = upstream.last_request();
    let expected_head = format!(
        "GET /echo/fwd?q=1&r=%20x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-First: 1\r\nx-second: two  words\r\nX-THIRD: 3\r\n\r\n"
    );
    assert_eq!(String::from_utf8_lossy(&seen.raw_head), expected_head);
    stop_proxy(proxy).await;
    let rec = read_recording(&dir, "forward");
    let headers = &rec["interactions"][0]["request"]["headers"];
    let names: Vec<String> = headers
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["Host", "X-First", "x-second", "X-THIRD"],
        "{headers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_hop_by_hop_headers_are_not_passed_or_recorded() {
    let tmp = TempDir::new("hop");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let steps = vec![test_request("hop", "GET", "/hop", &[], b"")];
    let (recorded, replayed) = record_then_replay(&steps, upstream, &dir).await;
    for r in [&recorded[0], &replayed[0]] {
        assert_eq!(
            r.end_to_end_headers(),
            [
                ("X-Visible".to_string(), b"yes".to_vec()),
                ("Content-Length".to_string(), b"2".to_vec())
            ],
            "{}",
            r.describe()
        );
        assert!(r.header("connection").is_none(), "{}", r.describe());
        assert_eq!(r.body, b"ok");
    }
    let rec = read_recording(&dir, "hop");
    let text = rec.to_string();
    assert!(
        !text.contains("X-Internal") && !text.contains("Keep-Alive") && !text.contains("Upgrade"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_is_forwarded_and_matched() {
    let tmp = TempDir::new("chunkedreq");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let chunked = b"POST /echo/chunked-upload HTTP/1.1\r\nHost: x\r\nX-Ouli-Test-Name: chunked-req\r\nTransfer-Encoding: chunked\r\n\r\n\
        3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let recorded = one_shot(proxy.addr(), chunked).await;
    stop_proxy(proxy).await;
    assert_eq!(
        recorded.body,
        b"POST /echo/chunked-upload\nabc0123456789abcdef",
        "{}",
        recorded.describe()
    );
    assert_eq!(upstream.last_request().body, b"abc0123456789abcdef");
    upstream.stop().await;

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    // Same body, other chunk sizes: the same request.
    let rechunked = b"POST /echo/chunked-upload HTTP/1.1\r\nHost: x\r\nX-Ouli-Test-Name: chunked-req\r\nTransfer-Encoding: chunked\r\n\r\n\
        13\r\nabc0123456789abcdef\r\n0\r\n\r\n";
    let replayed = one_shot(proxy.addr(), rechunked).await;
    assert_same_response(&recorded, &replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_never_connects_to_the_upstream() {
    let tmp = TempDir::new("offline");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let steps: Vec<Step> = vec![
        test_request("offline", "GET", "/echo/1", &[], b""),
        test_request("offline", "POST", "/echo/2", &[], b"body"),
    ];
    let proxy = start_proxy(Mode::Record, &dir, port).await;
    run_all(proxy.addr(), &steps).await;
    stop_proxy(proxy).await;
    let before = upstream.connections();
    assert!(before >= 1);

    // The upstream keeps running and counting.
    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    let answers = run_all(proxy.addr(), &steps).await;
    assert!(answers.iter().all(|r| r.status == 200));
    let miss = one_shot(
        proxy.addr(),
        &test_request("offline", "GET", "/echo/unrecorded", &[], b""),
    )
    .await;
    assert_eq!(miss.status, 599);
    let other = one_shot(
        proxy.addr(),
        &test_request("never-recorded", "GET", "/echo/1", &[], b""),
    )
    .await;
    assert_eq!(other.status, 599);
    stop_proxy(proxy).await;
    assert_eq!(
        upstream.connections(),
        before,
        "replay connected to the upstream"
    );
    assert_eq!(upstream.heads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_names_map_to_percent_encoded_files() {
    let tmp = TempDir::new("names");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let name = "suite/case one:ü";
    let proxy = start_proxy(Mode::Record, &dir, upstream.port()).await;
    let r = one_shot(
        proxy.addr(),
        &test_request(name, "GET", "/echo/name", &[], b""),
    )
    .await;
    assert_eq!(r.status, 200);
    stop_proxy(proxy).await;
    let files: Vec<String> = crate::support::files_under(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected = recording_file_name(name);
    assert_eq!(expected, "suite%2Fcase%20one%3A%C3%BC.json");
    assert!(
        files.iter().any(|f| f.eq_ignore_ascii_case(&expected)),
        "expected {expected} in {files:?}"
    );
    let path = dir.join(
        files
            .iter()
            .find(|f| f.eq_ignore_ascii_case(&expected))
            .unwrap(),
    );
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(rec["test_name"], name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerecording_a_test_replaces_it_and_keeps_other_tests() {
    let tmp = TempDir::new("rerecord");
    let dir = tmp.recordings();
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&count);
    let upstream = Upstream::start(move |_| {
        Reply::text(&format!("v{}", c2.fetch_add(1, Ordering::SeqCst) + 1))
    })
    .await;
    let port = upstream.port();
    let toml = config_toml(port, "", "");

    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    one_shot(proxy.addr(), &test_request("keep", "GET", "/x", &[], b"")).await;
    one_shot(proxy.addr(), &test_request("redo", "GET", "/x", &[], b"")).await;
    stop_proxy(proxy).await;
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    one_shot(proxy.addr(), &test_request("redo", "GET", "/x", &[], b"")).await;
    stop_proxy(proxy).await;
    upstream.stop().await;

    assert_eq!(
        read_recording(&dir, "redo")["interactions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    assert_eq!(
        one_shot(proxy.addr(), &test_request("keep", "GET", "/x", &[], b""))
            .await
            .body,
        b"v1"
    );
    assert_eq!(
        one_shot(proxy.addr(), &test_request("redo", "GET", "/x", &[], b""))
            .await
            .body,
        b"v3"
    );
}

/// Stopping right after an answer: what the summary counts as recorded is on
/// disk when the stop returns, even with a tiny grace period (the exchange is
/// over; only its write remains).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_after_answered_exchanges_are_on_disk() {
    let tmp = TempDir::new("stopwrite");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let toml = config_toml(upstream.port(), "shutdown_grace_ms = 1", "");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let big = pattern(8 << 20, 1);
    let mut c = Client::connect(proxy.addr()).await;
    let r = c
        .request(&test_request("stopwrite", "POST", "/echo/x", &[], &big))
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .request(&test_request("stopwrite", "POST", "/echo/y", &[], &big))
        .await;
    assert_eq!(r.status, 200);
    let summary = stop_proxy(proxy).await;
    drop(c);
    let on_disk = match std::fs::read_to_string(dir.join("stopwrite.json")) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text).unwrap()["interactions"]
            .as_array()
            .unwrap()
            .len(),
        Err(_) => 0,
    };
    assert_eq!(
        on_disk as u64, summary.stats.recorded,
        "the summary counts {} recorded but {on_disk} are on disk when stop returns: {summary}",
        summary.stats.recorded
    );
    assert_eq!(on_disk, 2, "{summary}");
}
