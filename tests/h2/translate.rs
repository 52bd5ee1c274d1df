//! Version translation toward the upstream (`target_protocol`): an HTTP/2
//! client recorded over HTTP/1.1, and an HTTP/1.1 client recorded over
//! h2c, each replayed with the upstream stopped. The recording is the same
//! whichever protocol carried it.

use super::client::{connect, request};
use super::support::client::{test_request, Client};
use super::support::{config_toml, read_recording, start_proxy_with, stop_proxy, TempDir};
use super::upstream::{big_body, Upstream};
use super::{check_h2_scenario, echo_body, h2_scenario};
use bytes::Bytes;
use ouli_core::proxy::Mode;
use std::sync::atomic::Ordering;

/// `target_protocol = "http1"`: an HTTP/2 client's streams (trailers,
/// ends of stream without DATA, 24 concurrent streams, a body larger than
/// a window) go over HTTP/1.1, one at a time, and replay over HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_records_over_http1_then_replays() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h2-over-h1");
    let dir = tmp.recordings();
    let toml = config_toml(up.port(), "", "target_protocol = \"http1\"");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let recorded = h2_scenario(proxy.addr(), "h2-over-h1").await;
    check_h2_scenario(&recorded);
    for (name, resp) in &recorded {
        assert_eq!(
            resp.header("x-upstream-version"),
            Some("HTTP/1.1"),
            "{name} must reach the upstream over HTTP/1.1"
        );
    }
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.recorded, recorded.len() as u64);
    // One keep-alive HTTP/1.1 connection carried the streams in turn.
    assert_eq!(up.counters.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(up.counters.connections.load(Ordering::SeqCst), 1);
    up.stop().await;

    let file = read_recording(&dir, "h2-over-h1");
    let trailers = file["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["request"]["target"] == "/trailers")
        .expect("the /trailers interaction");
    assert_eq!(trailers["response"]["framing"], "chunked", "{trailers}");

    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    let replayed = h2_scenario(proxy.addr(), "h2-over-h1").await;
    check_h2_scenario(&replayed);
    for (name, rec) in &recorded {
        let rep = &replayed[name];
        assert_eq!((rep.status, &rep.body), (rec.status, &rec.body), "{name}");
        assert_eq!(rep.trailers, rec.trailers, "{name}");
    }
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.missed, 0);
}

/// `target_protocol = "h2c"`: HTTP/1.1 clients go over HTTP/2; one
/// keep-alive client connection keeps one upstream connection; trailers
/// come back as chunked trailers; replay gives the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_records_over_h2c_then_replays() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("h1-over-h2");
    let dir = tmp.recordings();
    let toml = config_toml(up.port(), "", "target_protocol = \"h2c\"");
    let test = "h1-over-h2";
    let scenario = |addr| async move {
        let mut client = Client::connect(addr).await;
        let mut out = Vec::new();
        for path in ["/hello", "/trailers", "/empty", "/only-trailers", "/big"] {
            let bytes = test_request(test, "GET", path, &[("TE", "trailers")], b"");
            out.push((path.to_owned(), client.request(&bytes).await));
        }
        let bytes = test_request(test, "POST", "/echo", &[], &echo_body());
        out.push(("/echo".to_owned(), client.request(&bytes).await));
        let bytes = test_request(test, "HEAD", "/hello", &[], b"");
        client.send(&bytes).await;
        out.push((
            "HEAD /hello".to_owned(),
            client.read_response_to(true).await,
        ));
        out
    };
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let recorded = scenario(proxy.addr()).await;
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.recorded, recorded.len() as u64);
    assert_eq!(up.counters.connections.load(Ordering::SeqCst), 1);
    up.stop().await;
    let get = |name: &str| &recorded.iter().find(|(p, _)| p == name).unwrap().1;
    for (name, resp) in &recorded {
        assert_eq!(
            resp.header_str("x-upstream-version").as_deref(),
            Some("HTTP/2.0"),
            "{name}: {}",
            resp.describe()
        );
    }
    assert_eq!(get("/hello").body_str(), "hello over the wire\n");
    let trailers = get("/trailers");
    assert_eq!(trailers.body_str(), "part one\npart two\n");
    assert!(
        trailers
            .trailers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("grpc-status") && v == b"0"),
        "{}",
        trailers.describe()
    );
    assert_eq!(get("/empty").header_str("x-empty").as_deref(), Some("yes"));
    assert!(get("/empty").body.is_empty());
    assert_eq!(get("/big").body, big_body());
    assert_eq!(get("/echo").body, echo_body().to_vec());
    assert_eq!(
        get("/echo").header_str("x-request-bytes").as_deref(),
        Some("200000")
    );
    assert!(get("HEAD /hello").body.is_empty());

    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    let replayed = scenario(proxy.addr()).await;
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.missed, 0);
    for ((name, rec), (_, rep)) in recorded.iter().zip(&replayed) {
        assert_eq!(rec.status, rep.status, "{name}");
        assert_eq!(rec.body, rep.body, "{name}");
        assert_eq!(rec.trailers, rep.trailers, "{name}");
    }
}

/// The same request recorded by each protocol, over each upstream
/// protocol, gets the same fingerprint and the same stored request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_do_not_depend_on_the_upstream_protocol() {
    let up = Upstream::start().await;
    let tmp = TempDir::new("xlate-fp");
    let dir = tmp.recordings();
    let mut stored = Vec::new();
    for protocol in ["http1", "h2c"] {
        let toml = config_toml(up.port(), "", &format!("target_protocol = \"{protocol}\""));
        let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
        let h1 = format!("fp-h1-{protocol}");
        let mut client = Client::connect(proxy.addr()).await;
        let resp = client
            .request(&test_request(&h1, "POST", "/echo?q=1", &[], b"payload"))
            .await;
        assert_eq!(resp.body_str(), "payload");
        let h2 = format!("fp-h2-{protocol}");
        let send = connect(proxy.addr()).await;
        let resp = request(
            &send,
            &h2,
            "POST",
            "/echo?q=1",
            Bytes::from_static(b"payload"),
        )
        .await;
        assert_eq!(resp.body_str(), "payload");
        drop(send);
        stop_proxy(proxy).await;
        stored.push(read_recording(&dir, &h1));
        stored.push(read_recording(&dir, &h2));
    }
    let fp = |r: &serde_json::Value| r["interactions"][0]["fingerprint"].clone();
    let body = |r: &serde_json::Value| r["interactions"][0]["request"]["body"].clone();
    for r in &stored[1..] {
        assert_eq!(fp(r), fp(&stored[0]));
        assert_eq!(body(r), body(&stored[0]));
    }
    up.stop().await;
}
