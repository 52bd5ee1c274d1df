//! The replay miss answer.

use crate::support::client::{one_shot, test_request, Client};
use crate::support::upstream::Upstream;
use crate::support::{read_recording, start_proxy, stop_proxy, TempDir};
use ouli_core::proxy::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_names_test_request_and_closest_recording() {
    let tmp = TempDir::new("miss");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let proxy = start_proxy(Mode::Record, &dir, port).await;
    let mut c = Client::connect(proxy.addr()).await;
    for req in [
        test_request("miss-test", "GET", "/echo/items?page=1&size=10", &[], b""),
        test_request("miss-test", "POST", "/echo/other", &[], b"x"),
        // The exact request that will miss, recorded in another test: its fingerprint.
        test_request("other-test", "GET", "/echo/items?page=2&size=10", &[], b""),
    ] {
        assert_eq!(c.request(&req).await.status, 200);
    }
    drop(c);
    stop_proxy(proxy).await;
    upstream.stop().await;
    let expected_fp = read_recording(&dir, "other-test")["interactions"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    let proxy = start_proxy(Mode::Replay, &dir, port).await;
    let r = one_shot(
        proxy.addr(),
        &test_request("miss-test", "GET", "/echo/items?page=2&size=10", &[], b""),
    )
    .await;
    assert_eq!(r.status, 599, "{}", r.describe());
    assert_eq!(r.reason, "Ouli Replay Miss");
    assert_eq!(r.header("x-ouli-miss"), Some(&b"true"[..]));
    let fp = r
        .header_str("x-ouli-fingerprint")
        .expect("x-ouli-fingerprint");
    assert!(
        fp.len() == 64
            && fp
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{fp}"
    );
    assert_eq!(
        fp, expected_fp,
        "the miss fingerprint is the request's fingerprint"
    );
    let body = r.body_str();
    assert!(body.contains("miss-test"), "names the test: {body}");
    assert!(
        body.contains("GET /echo/items?page=2&size=10"),
        "names the request: {body}"
    );
    assert!(
        body.contains("GET /echo/items?page=1&size=10"),
        "lists the closest recording: {body}"
    );
    let closest = body.find("GET /echo/items?page=1&size=10").unwrap();
    let differs: Vec<&str> = body[closest..]
        .lines()
        .skip(1)
        .take_while(|l| l.contains("differs:"))
        .collect();
    assert!(
        !differs.is_empty(),
        "differs: lines after the closest request: {body}"
    );
    assert!(
        differs
            .iter()
            .any(|l| l.contains("page=1") && l.contains("page=2")),
        "the differing query param is named: {body}"
    );
    assert!(
        !differs.iter().any(|l| l.contains("size=10")),
        "the shared param is not a difference: {body}"
    );
    // The closest recording comes before the less similar one.
    if let Some(other) = body.find("POST /echo/other") {
        assert!(closest < other, "{body}");
    }

    // An unknown test: still 599, naming it.
    let r = one_shot(
        proxy.addr(),
        &test_request("no-such-test", "GET", "/echo/x", &[], b""),
    )
    .await;
    assert_eq!(r.status, 599);
    assert!(r.body_str().contains("no-such-test"), "{}", r.body_str());
    assert!(r.body_str().contains("GET /echo/x"), "{}", r.body_str());

    // A miss does not close a keep-alive connection.
    let mut c = Client::connect(proxy.addr()).await;
    let miss = c
        .request(&test_request("miss-test", "GET", "/echo/nope", &[], b""))
        .await;
    assert_eq!(miss.status, 599);
    let hit = c
        .request(&test_request(
            "miss-test",
            "GET",
            "/echo/items?size=10&page=1",
            &[],
            b"",
        ))
        .await;
    assert_eq!(
        hit.status,
        200,
        "query order does not matter: {}",
        hit.describe()
    );
    drop(c);
    let summary = stop_proxy(proxy).await;
    assert_eq!(
        (summary.stats.replayed, summary.stats.missed),
        (1, 3),
        "{summary}"
    );
}
