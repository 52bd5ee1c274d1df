//! HTTP/2 through the real proxy with real peers: h2c with prior knowledge
//! on the proxy's usual port, recorded against a real upstream (hyper 1,
//! HTTP/1.1 and h2c on one port), then replayed with the upstream stopped.
//!
//! * this file: the `h2` crate's client (GET, a POST over one window in
//!   both directions, trailers, ends of stream without DATA, concurrent
//!   streams on one connection, a miss) and recordings that cross protocol
//!   versions (HTTP/1.1 recorded, HTTP/2 replayed, and the other way);
//! * `translate.rs`: HTTP/2 clients recorded over HTTP/1.1 and HTTP/1.1
//!   clients over h2c (`target_protocol`);
//! * `tools.rs`: `curl --http2-prior-knowledge`, `nghttp` and `h2load`;
//! * `conformance.rs`: the httpwg suite against `ouli replay`.
//!
//! External tools are installed by tests/run.sh, which lists the ones it
//! has in `OULI_REQUIRE_H2_TOOLS`: a listed tool that is missing fails its
//! test; any other missing tool skips its test with a loud message.

#[path = "../e2e/support/mod.rs"]
mod support;

mod client;
mod conformance;
mod tools;
mod translate;
mod upstream;

use bytes::Bytes;
use client::{connect, request, H2Response};
use ouli_core::proxy::Mode;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use support::client::{one_shot, test_request, Response as H1Response};
use support::{config_toml, read_recording, start_proxy_with, stop_proxy, TempDir};
use upstream::Upstream;

/// The request body of `POST /echo`: 200 KB, three times the default
/// window, so both legs of the proxy must follow flow control.
fn echo_body() -> Bytes {
    Bytes::from(
        (0..200_000u32)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The h2 client scenario, on ONE connection. Returns every response by name.
async fn h2_scenario(addr: std::net::SocketAddr, test: &str) -> BTreeMap<String, H2Response> {
    let send = connect(addr).await;
    let mut out = BTreeMap::new();
    for path in ["/hello", "/trailers", "/empty", "/only-trailers", "/big"] {
        let resp = request(&send, test, "GET", path, Bytes::new()).await;
        out.insert(format!("GET {path}"), resp);
    }
    let echo = request(&send, test, "POST", "/echo", echo_body()).await;
    out.insert("POST /echo".into(), echo);
    // Concurrent streams on the same connection.
    let items = (0..24).map(|i| {
        let send = send.clone();
        let test = test.to_owned();
        async move {
            let path = format!("/item/{i}");
            let resp = request(&send, &test, "GET", &path, Bytes::new()).await;
            (format!("GET {path}"), resp)
        }
    });
    out.extend(futures_util::future::join_all(items).await);
    out
}

/// What the scenario must show, recorded or replayed.
fn check_h2_scenario(r: &BTreeMap<String, H2Response>) {
    let hello = &r["GET /hello"];
    assert_eq!(
        (hello.status, hello.body_str().as_str()),
        (200, "hello over the wire\n")
    );
    let trailers = &r["GET /trailers"];
    assert_eq!(trailers.body_str(), "part one\npart two\n");
    assert_eq!(trailers.trailer("x-checksum"), Some("1234"), "{trailers:?}");
    assert_eq!(trailers.trailer("grpc-status"), Some("0"), "{trailers:?}");
    let empty = &r["GET /empty"];
    assert_eq!(empty.status, 200);
    assert!(
        empty.ended_with_headers && empty.body.is_empty() && empty.trailers.is_none(),
        "an end of stream without DATA must stay one: {empty:?}"
    );
    assert_eq!(empty.header("x-empty"), Some("yes"));
    let only = &r["GET /only-trailers"];
    assert!(!only.ended_with_headers && only.body.is_empty(), "{only:?}");
    assert_eq!(only.trailer("grpc-status"), Some("5"), "{only:?}");
    assert_eq!(only.trailer("grpc-message"), Some("not found"), "{only:?}");
    assert_eq!(r["GET /big"].body, upstream::big_body());
    let echo = &r["POST /echo"];
    assert_eq!(echo.header("x-request-bytes"), Some("200000"));
    assert!(echo.body == echo_body(), "echoed body differs");
    for i in 0..24 {
        let item = &r[&format!("GET /item/{i}")];
        assert_eq!((item.status, item.body_str()), (200, format!("item {i}\n")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_records_over_h2c_then_replays_with_the_upstream_stopped() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h2-client");
    let dir = tmp.recordings();
    let toml = config_toml(up.port(), "", "target_protocol = \"h2c\"");

    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let recorded = h2_scenario(proxy.addr(), "h2-client").await;
    let summary = stop_proxy(proxy).await;
    check_h2_scenario(&recorded);
    assert_eq!(
        recorded["GET /hello"].header("x-upstream-version"),
        Some("HTTP/2.0"),
        "target_protocol = h2c must reach the upstream over HTTP/2"
    );
    assert_eq!(summary.stats.recorded, 30, "{summary}");
    assert_eq!(
        up.counters.connections.load(Ordering::SeqCst),
        1,
        "one client connection is forwarded over one upstream connection"
    );
    assert!(
        up.counters.max_in_flight.load(Ordering::SeqCst) > 1,
        "concurrent client streams must be concurrent upstream streams"
    );

    // The recording is protocol-independent: `:authority` is stored as
    // `host`, DATA frames as chunks, trailers as trailers.
    let rec = read_recording(&dir, "h2-client");
    let interactions = rec["interactions"].as_array().unwrap();
    assert_eq!(interactions.len(), 30);
    let find = |target: &str| {
        interactions
            .iter()
            .find(|i| i["request"]["target"] == target)
            .unwrap_or_else(|| panic!("no interaction for {target}"))
    };
    let hello = find("/hello");
    assert_eq!(
        hello["request"]["headers"][0],
        serde_json::json!(["host", format!("127.0.0.1:{}", up.port())])
    );
    let tr = &find("/trailers")["response"];
    assert_eq!(
        tr["chunks"],
        serde_json::json!(["part one\n", "part two\n"])
    );
    let trailers = tr["trailers"].to_string();
    assert!(trailers.contains("x-checksum") && trailers.contains("1234"));
    let empty = &find("/empty")["response"];
    assert!(empty["chunks"].as_array().is_none_or(|c| c.is_empty()));

    let requests_before = up.requests();
    up.stop().await;

    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    let replayed = h2_scenario(proxy.addr(), "h2-client").await;
    assert_eq!(recorded, replayed, "replay differs from the recording");

    // A miss: 599 with the report, on a stream of the same kind of connection.
    let send = connect(proxy.addr()).await;
    let miss = request(&send, "h2-client", "GET", "/never-recorded", Bytes::new()).await;
    assert_eq!(miss.status, 599, "{miss:?}");
    assert_eq!(miss.header("x-ouli-miss"), Some("true"));
    assert!(miss.body_str().contains("no recorded response"), "{miss:?}");
    drop(send);
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.replayed, 30, "{summary}");
    assert_eq!(summary.stats.missed, 1, "{summary}");
    assert_eq!(requests_before, 30);
}

/// `auto` follows the client: an HTTP/2 client is forwarded over h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_forwards_h2_clients_over_h2c() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h2-auto");
    let dir = tmp.recordings();
    let toml = config_toml(up.port(), "", "target_protocol = \"auto\"");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let send = connect(proxy.addr()).await;
    let resp = request(&send, "auto", "GET", "/hello", Bytes::new()).await;
    assert_eq!(resp.header("x-upstream-version"), Some("HTTP/2.0"));
    drop(send);
    let h1 = one_shot(
        proxy.addr(),
        &test_request("auto", "GET", "/hello", &[], b""),
    )
    .await;
    assert_eq!(
        h1.header_str("x-upstream-version").as_deref(),
        Some("HTTP/1.1")
    );
    stop_proxy(proxy).await;
    up.stop().await;
}

/// A recording made by an HTTP/1.1 client replays to an HTTP/2 client:
/// `Host` and `:authority` are the same thing, even when matched on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_recording_replays_to_an_h2_client() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h1-to-h2");
    let dir = tmp.recordings();
    let toml = config_toml(
        up.port(),
        "",
        "target_protocol = \"auto\"\nmatch_request_headers = [\"Host\"]",
    );
    let test = "cross-h1";
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let mut h1 = BTreeMap::new();
    for path in ["/hello", "/trailers", "/empty", "/big"] {
        let resp = one_shot(proxy.addr(), &test_request(test, "GET", path, &[], b"")).await;
        h1.insert(path, resp);
    }
    let echo = one_shot(
        proxy.addr(),
        &test_request(test, "POST", "/echo", &[], &echo_body()),
    )
    .await;
    stop_proxy(proxy).await;
    assert_eq!(
        h1["/hello"].header_str("x-upstream-version").as_deref(),
        Some("HTTP/1.1")
    );
    up.stop().await;

    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    let send = connect(proxy.addr()).await;
    for (path, rec) in &h1 {
        let resp = request(&send, test, "GET", path, Bytes::new()).await;
        same_across_protocols(rec, &resp, path);
    }
    let resp = request(&send, test, "POST", "/echo", echo_body()).await;
    same_across_protocols(&echo, &resp, "/echo");
    drop(send);
    let summary = stop_proxy(proxy).await;
    assert_eq!((summary.stats.replayed, summary.stats.missed), (5, 0));
}

/// A recording made by an HTTP/2 client replays to an HTTP/1.1 client,
/// trailers and ends of stream without DATA included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_recording_replays_to_an_http1_client() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h2-to-h1");
    let dir = tmp.recordings();
    let toml = config_toml(
        up.port(),
        "",
        "target_protocol = \"auto\"\nmatch_request_headers = [\"Host\"]",
    );
    let test = "cross-h2";
    let toml = format!("{toml}on_repeat = \"repeat_last\"\n");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let send = connect(proxy.addr()).await;
    let mut h2 = BTreeMap::new();
    for path in ["/hello", "/trailers", "/empty", "/only-trailers", "/big"] {
        h2.insert(path, request(&send, test, "GET", path, Bytes::new()).await);
    }
    let echo = request(&send, test, "POST", "/echo", echo_body()).await;
    drop(send);
    stop_proxy(proxy).await;
    up.stop().await;

    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    for (path, rec) in &h2 {
        // TE: trailers asks for the trailers on HTTP/1.1.
        let bytes = test_request(test, "GET", path, &[("TE", "trailers")], b"");
        let resp = one_shot(proxy.addr(), &bytes).await;
        same_across_protocols(&resp, rec, path);
    }
    let trailers = one_shot(
        proxy.addr(),
        &test_request(test, "GET", "/trailers", &[], b""),
    )
    .await;
    assert!(
        trailers
            .trailers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("x-checksum") && v == b"1234"),
        "HTTP/2 trailers replay as HTTP/1.1 chunked trailers: {}",
        trailers.describe()
    );
    let resp = one_shot(
        proxy.addr(),
        &test_request(test, "POST", "/echo", &[], &echo_body()),
    )
    .await;
    same_across_protocols(&resp, &echo, "/echo");
    let summary = stop_proxy(proxy).await;
    assert_eq!((summary.stats.replayed, summary.stats.missed), (7, 0));

    // Both protocols give the same fingerprint for the same request.
    let up2 = Upstream::start().await;
    let toml2 = config_toml(
        up2.port(),
        "",
        "target_protocol = \"auto\"\nmatch_request_headers = [\"Host\"]",
    );
    let tmp2 = TempDir::new("h2-h1-fp");
    let dir2 = tmp2.recordings();
    let proxy = start_proxy_with(Mode::Record, &dir2, &toml2).await;
    one_shot(
        proxy.addr(),
        &test_request("fp-h1", "GET", "/hello?x=1", &[], b""),
    )
    .await;
    let send = connect(proxy.addr()).await;
    request(&send, "fp-h2", "GET", "/hello?x=1", Bytes::new()).await;
    drop(send);
    stop_proxy(proxy).await;
    up2.stop().await;
    let a = read_recording(&dir2, "fp-h1");
    let b = read_recording(&dir2, "fp-h2");
    assert_eq!(
        a["interactions"][0]["fingerprint"],
        b["interactions"][0]["fingerprint"]
    );
    let host = |r: &serde_json::Value| {
        r["interactions"][0]["request"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("host"))
            .map(|h| h[1].clone())
    };
    assert_eq!(host(&a), host(&b));
    assert!(host(&a).is_some());
}

/// Status, body and end-to-end headers agree between an HTTP/1.1 and an
/// HTTP/2 view of the same recorded response.
#[track_caller]
fn same_across_protocols(h1: &H1Response, h2: &H2Response, path: &str) {
    assert_eq!(h1.status, h2.status, "{path}: status");
    assert!(
        h1.body == h2.body,
        "{path}: bodies differ ({} vs {} bytes)",
        h1.body.len(),
        h2.body.len()
    );
    for name in [
        "content-type",
        "x-upstream-version",
        "x-request-bytes",
        "x-empty",
    ] {
        assert_eq!(
            h1.header_str(name).as_deref(),
            h2.header(name),
            "{path}: header {name}\nHTTP/1.1: {}\nHTTP/2: {h2:?}",
            h1.describe()
        );
    }
}

/// In `auto` mode one run serves both kinds of clients: an HTTP/1.1
/// keep-alive connection left in the upstream pool must not be handed to an
/// HTTP/2 session (it would send its preface on an HTTP/1.1 connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_keeps_pooled_http1_connections_away_from_h2() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h2-pool");
    let dir = tmp.recordings();
    let toml = config_toml(up.port(), "", "target_protocol = \"auto\"");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let h1 = one_shot(
        proxy.addr(),
        &test_request("pool", "GET", "/hello", &[], b""),
    )
    .await;
    assert_eq!(h1.status, 200);
    let send = connect(proxy.addr()).await;
    let resp = request(&send, "pool", "GET", "/trailers", Bytes::new()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-upstream-version"), Some("HTTP/2.0"));
    drop(send);
    let h1 = one_shot(
        proxy.addr(),
        &test_request("pool", "GET", "/hello", &[], b""),
    )
    .await;
    assert_eq!(h1.status, 200);
    stop_proxy(proxy).await;
    up.stop().await;
}

/// An upstream's SETTINGS_MAX_CONCURRENT_STREAMS is respected: client
/// streams beyond it wait for room instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stream_limit_queues_client_streams() {
    let up = Upstream::start_with(Some(2)).await;
    let tmp = TempDir::new("h2-limit");
    let dir = tmp.recordings();
    let toml = config_toml(up.port(), "", "target_protocol = \"h2c\"");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let recorded = h2_scenario(proxy.addr(), "limit").await;
    let summary = stop_proxy(proxy).await;
    check_h2_scenario(&recorded);
    assert_eq!(summary.stats.recorded, 30, "{summary}");
    assert!(up.counters.max_in_flight.load(Ordering::SeqCst) <= 2);
    up.stop().await;
}

/// An upstream (the h2 crate's server) that answers the first request of
/// each connection, then sends GOAWAY, refuses any other stream with
/// REFUSED_STREAM, and closes.
async fn start_one_request_per_connection_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&conns);
    let task = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tasks.spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let Some(Ok((req, mut respond))) = conn.accept().await else {
                    return;
                };
                let resp = http::Response::builder()
                    .status(200)
                    .header("x-connection", n.to_string())
                    .body(())
                    .unwrap();
                let mut send = respond.send_response(resp, false).unwrap();
                let body = format!("{} on connection {n}\n", req.uri().path());
                send.send_data(Bytes::from(body), true).unwrap();
                conn.graceful_shutdown();
                while let Some(next) = conn.accept().await {
                    if let Ok((_, mut respond)) = next {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    }
                }
            });
        }
    });
    (addr, conns, task)
}

/// An upstream that sends GOAWAY, refuses streams and closes: refused
/// requests are sent again, and new requests go on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_goaway_and_refused_streams_move_to_a_new_connection() {
    let (addr, conns, task) = start_one_request_per_connection_upstream().await;
    let tmp = TempDir::new("h2-goaway");
    let dir = tmp.recordings();
    let toml = config_toml(addr.port(), "", "target_protocol = \"h2c\"");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let send = connect(proxy.addr()).await;
    // One after the other: each needs a new upstream connection.
    for i in 0..3 {
        let path = format!("/seq/{i}");
        let resp = request(&send, "goaway", "GET", &path, Bytes::new()).await;
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        assert!(resp
            .body_str()
            .starts_with(&format!("{path} on connection")));
    }
    // Three at once: two are refused on the first connection and retried.
    let at_once = (0..3).map(|i| {
        let send = send.clone();
        async move {
            let path = format!("/together/{i}");
            request(&send, "goaway", "GET", &path, Bytes::new()).await
        }
    });
    for resp in futures_util::future::join_all(at_once).await {
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    drop(send);
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.recorded, 6, "{summary}");
    assert_eq!(conns.load(Ordering::SeqCst), 6);
    task.abort();
}

/// An upstream that stops answering: 504 within `upstream_response_timeout`
/// (a reset once the answer had started), and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_streams_time_out_and_the_connection_goes_on() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h2-timeout");
    let dir = tmp.recordings();
    let toml = config_toml(
        up.port(),
        "upstream_response_timeout_ms = 300",
        "target_protocol = \"h2c\"",
    );
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let send = connect(proxy.addr()).await;
    let started = std::time::Instant::now();
    let hang = request(&send, "timeout", "GET", "/hang", Bytes::new()).await;
    assert_eq!(hang.status, 504, "{hang:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // The answer started, then stalled: the client stream is reset.
    let mut ready = send.clone().ready().await.unwrap();
    let req = http::Request::get("http://ouli.test/stall")
        .header("x-ouli-test-name", "timeout")
        .body(())
        .unwrap();
    let (resp, _stream) = ready.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.data().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first part\n");
    let end = support::io_timeout("the stalled stream's end", body.data()).await;
    let err = end.expect("an error, not a clean end").unwrap_err();
    assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err}");

    let hello = request(&send, "timeout", "GET", "/hello", Bytes::new()).await;
    assert_eq!(hello.status, 200);
    drop(send);
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.recorded, 1, "{summary}");
    assert_eq!(summary.stats.upstream_errors, 2, "{summary}");
    up.stop().await;
}

/// A client that resets its stream in the middle of a recorded answer: the
/// upstream stream is cancelled, nothing is stored for it, and the
/// connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_mid_answer_cancels_upstream_and_the_connection_goes_on() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h2-client-reset");
    let dir = tmp.recordings();
    let toml = config_toml(up.port(), "", "target_protocol = \"h2c\"");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let send = connect(proxy.addr()).await;
    {
        let mut ready = send.clone().ready().await.unwrap();
        let req = http::Request::get("http://ouli.test/stall")
            .header("x-ouli-test-name", "reset")
            .body(())
            .unwrap();
        let (resp, mut stream) = ready.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        let mut body = resp.into_body();
        assert_eq!(&body.data().await.unwrap().unwrap()[..], b"first part\n");
        stream.send_reset(h2::Reason::CANCEL);
    }
    for _ in 0..3 {
        let hello = request(&send, "reset", "GET", "/hello", Bytes::new()).await;
        assert_eq!(hello.status, 200);
    }
    drop(send);
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.recorded, 3, "{summary}");
    let rec = read_recording(&dir, "reset");
    assert!(rec["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["request"]["target"] == "/hello"));
    up.stop().await;
}
