//! Matching, redaction, modes, the end-of-run report and the offline tools,
//! through the real proxy (`ouli_tokio::TestProxy`) and the real `ouli`
//! binary, against a tiny local upstream that counts its connections.

mod support;
mod tools;

use ouli_core::proxy::Mode;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redaction_kind_stays_off_disk_and_replay_still_matches() {
    let tmp = TempDir::new("redact");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let extra = r#"
# X-Token-Out and X-Cookie-Out tell the test upstream what to answer with.
redact_request_headers = ["Authorization", "X-Token-Out", "X-Cookie-Out"]
redact_response_headers = ["Set-Cookie"]
redact_query_params = ["api_key"]
# The upstream echoes the target and body in its JSON answer: redact those
# response fields too, or the query and body secrets would come back that way.
redact_json_fields = ["/password", "/token", "/target", "/body"]
"#;
    // One distinct secret per kind, so each is checked on its own.
    const HEADER_SECRET: &str = "hdr-SECRET-1111";
    const QUERY_SECRET: &str = "qry-SECRET-2222";
    const REQ_JSON_SECRET: &str = "reqjson-SECRET-3333";
    const COOKIE_SECRET: &str = "cookie-SECRET-4444";
    const RESP_JSON_SECRET: &str = "respjson-SECRET-5555";

    let proxy = start(config(upstream.port(), extra), Mode::Record, &dir).await;
    let body = format!("{{\"user\": \"ann\", \"password\": \"{REQ_JSON_SECRET}\"}}");
    let auth = format!("Bearer {HEADER_SECRET}");
    let r = one(
        proxy.addr(),
        "login",
        "POST",
        &format!("/login?api_key={QUERY_SECRET}&v=1"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("X-Token-Out", RESP_JSON_SECRET),
            ("X-Cookie-Out", COOKIE_SECRET),
        ],
        body.as_bytes(),
    )
    .await;
    // The client gets the real answer; the upstream got the real request.
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token"], RESP_JSON_SECRET);
    assert_eq!(
        r.header("set-cookie"),
        Some(&*format!("sid={COOKIE_SECRET}; HttpOnly"))
    );
    let seen = &upstream.seen()[0];
    assert_eq!(seen.header("authorization"), Some(&*auth));
    assert!(seen.target.contains(QUERY_SECRET));
    assert_eq!(seen.body, body.as_bytes());
    proxy.stop().await;

    for secret in [
        HEADER_SECRET,
        QUERY_SECRET,
        REQ_JSON_SECRET,
        COOKIE_SECRET,
        RESP_JSON_SECRET,
    ] {
        assert_nowhere(&dir, secret);
    }
    assert_nowhere(&dir, "SECRET");
    let rec = recording(&dir, "login");
    let text = rec.to_json();
    for placeholder in [
        "\"Authorization\", \"[REDACTED]\"",
        "api_key=[REDACTED]&v=1",
        "\\\"password\\\": \\\"[REDACTED]\\\"",
        "\"set-cookie\", \"[REDACTED]\"",
        "\\\"token\\\":\\\"[REDACTED]\\\"",
    ] {
        assert!(text.contains(placeholder), "{placeholder} in {text}");
    }

    // Replay: different secrets everywhere, still the recorded answer.
    let proxy = start(config(upstream.port(), extra), Mode::Replay, &dir).await;
    let r = one(
        proxy.addr(),
        "login",
        "POST",
        "/login?v=1&api_key=another-key",
        &[
            ("Authorization", "Bearer another-token"),
            ("Content-Type", "application/json"),
        ],
        br#"{"user": "ann", "password": "another-password"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token"], "[REDACTED]");
    assert_eq!(r.header("set-cookie"), Some("[REDACTED]"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_never_opens_an_upstream_socket() {
    let tmp = TempDir::new("no-network");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let proxy = start(config(upstream.port(), ""), Mode::Record, &dir).await;
    one(proxy.addr(), "t", "GET", "/recorded", &[], b"").await;
    proxy.stop().await;
    let before = upstream.connections();
    assert!(before >= 1);

    let proxy = start(config(upstream.port(), ""), Mode::Replay, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    assert_eq!(c.send("t", "GET", "/recorded", &[], b"").await.status, 200);
    // A miss, an unknown test, and a body: still no upstream socket.
    assert_eq!(
        c.send("t", "GET", "/not-recorded", &[], b"").await.status,
        599
    );
    assert_eq!(
        c.send("other", "POST", "/x", &[], b"data").await.status,
        599
    );
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.stop().await;
    assert_eq!(upstream.connections(), before, "replay connected upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_replays_hits_and_appends_misses() {
    let tmp = TempDir::new("auto");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let proxy = start(config(upstream.port(), ""), Mode::Record, &dir).await;
    let first = one(proxy.addr(), "t", "GET", "/one", &[], b"").await;
    proxy.stop().await;
    assert_eq!(first.json()["seq"], 1);

    let proxy = start(config(upstream.port(), ""), Mode::Auto, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    let hit = c.send("t", "GET", "/one", &[], b"").await;
    assert_eq!(hit.json()["seq"], 1, "answered from the recording");
    assert_eq!(upstream.seen().len(), 1, "a hit is not forwarded");
    let miss = c.send("t", "POST", "/two", &[], b"payload").await;
    assert_eq!(miss.status, 200, "{}", miss.text());
    assert_eq!(miss.json()["seq"], 2, "a miss is forwarded");
    assert_eq!(miss.json()["body"], "payload");
    let new_test = c.send("fresh", "GET", "/three", &[], b"").await;
    assert_eq!(new_test.json()["seq"], 3);
    drop(c);
    let summary = proxy.stop().await;
    assert_eq!(upstream.seen().len(), 3);
    assert_eq!(
        targets(&dir, "t"),
        ["/one", "/two"],
        "appended to the existing recording"
    );
    assert_eq!(targets(&dir, "fresh"), ["/three"]);
    let t = summary.usage.iter().find(|u| u.test_name == "t").unwrap();
    assert_eq!((t.hits, t.misses), (1, 1));

    // Everything replays now.
    let proxy = start(config(upstream.port(), ""), Mode::Replay, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    assert_eq!(c.send("t", "GET", "/one", &[], b"").await.json()["seq"], 1);
    assert_eq!(
        c.send("t", "POST", "/two", &[], b"payload").await.json()["seq"],
        2
    );
    assert_eq!(
        c.send("fresh", "GET", "/three", &[], b"").await.json()["seq"],
        3
    );
    drop(c);
    let summary = proxy.stop().await;
    assert!(
        ouli_adapter_common::report::is_clean(&summary.usage),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_rerecords_seen_tests_and_leaves_others_untouched() {
    let tmp = TempDir::new("rerecord");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let proxy = start(config(upstream.port(), ""), Mode::Record, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    c.send("a", "GET", "/a1", &[], b"").await;
    c.send("a", "GET", "/a2", &[], b"").await;
    c.send("b", "GET", "/b1", &[], b"").await;
    drop(c);
    proxy.stop().await;
    let b_file = ouli_adapter_common::recording_dir::RecordingDir::new(&dir).file_for("b");
    let b_before = std::fs::read(&b_file).unwrap();

    let proxy = start(config(upstream.port(), ""), Mode::Record, &dir).await;
    one(proxy.addr(), "a", "GET", "/a3", &[], b"").await;
    proxy.stop().await;
    assert_eq!(targets(&dir, "a"), ["/a3"], "a is recorded afresh");
    assert_eq!(std::fs::read(&b_file).unwrap(), b_before, "b is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_modes_ignored_fields_and_path_overrides_match_through_the_proxy() {
    let tmp = TempDir::new("modes");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let extra = r#"
ignore_query_params = ["_"]

[[endpoints.paths]]
prefix = "/v1/chat"
match_body = "json"
ignore_json_fields = ["/request_id", "/meta/sent_at"]

[[endpoints.paths]]
prefix = "/form"
match_body = "form"

[[endpoints.paths]]
prefix = "/upload"
match_body = "multipart"
"#;
    let multipart = |b: &str| {
        format!("--{b}\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nvalue\r\n--{b}--\r\n")
    };
    let ct = |b: &str| format!("multipart/form-data; boundary={b}");
    let proxy = start(config(upstream.port(), extra), Mode::Record, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    c.send(
        "m",
        "POST",
        "/v1/chat",
        &[],
        br#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"request_id":"r-1","meta":{"sent_at":1,"v":2}}"#,
    )
    .await;
    c.send("m", "POST", "/form", &[], b"a=1&b=2").await;
    c.send(
        "m",
        "POST",
        "/upload",
        &[("Content-Type", &ct("AaB03x"))],
        multipart("AaB03x").as_bytes(),
    )
    .await;
    c.send("m", "GET", "/search?q=rust&_=1700000000", &[], b"")
        .await;
    drop(c);
    proxy.stop().await;

    let proxy = start(config(upstream.port(), extra), Mode::Replay, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    let r = c
        .send(
            "m",
            "POST",
            "/v1/chat",
            &[],
            b"{ \"meta\": {\"v\": 2, \"sent_at\": 99},\n \"request_id\": \"r-2\", \"model\": \"m1\",\n \"messages\": [{\"content\": \"hi\", \"role\": \"user\"}] }",
        )
        .await;
    assert_eq!(r.status, 200, "json: {}", r.text());
    assert_eq!(r.json()["seq"], 1);
    let r = c.send("m", "POST", "/form", &[], b"b=2&a=1").await;
    assert_eq!(r.json()["seq"], 2, "form: {}", r.text());
    let r = c
        .send(
            "m",
            "POST",
            "/upload",
            &[("Content-Type", &ct("other-boundary-77"))],
            multipart("other-boundary-77").as_bytes(),
        )
        .await;
    assert_eq!(r.json()["seq"], 3, "multipart: {}", r.text());
    let r = c
        .send("m", "GET", "/search?_=1800000000&q=rust", &[], b"")
        .await;
    assert_eq!(r.json()["seq"], 4, "ignored query param: {}", r.text());
    // Outside the /v1/chat override, JSON bodies match exactly.
    let r = c.send("m", "POST", "/form", &[], b"a=1&b=3").await;
    assert_eq!(r.status, 599);
    drop(c);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_repeat_modes_through_the_proxy() {
    let tmp = TempDir::new("repeat");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let extra = r#"
[[endpoints.paths]]
prefix = "/cycle"
on_repeat = "cycle"

[[endpoints.paths]]
prefix = "/last"
on_repeat = "repeat_last"

[[endpoints.paths]]
prefix = "/first"
on_repeat = "first"
"#;
    let paths = ["/in-order", "/cycle", "/last", "/first"];
    let proxy = start(config(upstream.port(), extra), Mode::Record, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    for p in paths {
        c.send("r", "GET", p, &[], b"").await;
        c.send("r", "GET", p, &[], b"").await;
    }
    drop(c);
    proxy.stop().await;
    let proxy = start(config(upstream.port(), extra), Mode::Replay, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    let mut got = Vec::new();
    for p in paths {
        let mut answers = Vec::new();
        for _ in 0..4 {
            let r = c.send("r", "GET", p, &[], b"").await;
            answers.push(if r.status == 200 {
                r.json()["seq"].as_u64().unwrap_or(0)
            } else {
                0
            });
        }
        got.push(answers);
    }
    drop(c);
    proxy.stop().await;
    assert_eq!(
        got,
        [
            vec![1, 2, 0, 0], // in_order: past the end, a miss (599)
            vec![3, 4, 3, 4], // cycle
            vec![5, 6, 6, 6], // repeat_last
            vec![7, 7, 7, 7], // first
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_names_the_differing_header_and_json_pointer_and_the_report_counts() {
    let tmp = TempDir::new("miss");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let extra = r#"
match_request_headers = ["X-Api-Version"]
match_body = "json"
"#;
    let proxy = start(config(upstream.port(), extra), Mode::Record, &dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    c.send(
        "chat",
        "POST",
        "/v1/chat",
        &[("X-Api-Version", "1")],
        br#"{"model":"a","opts":{"temperature":0.5}}"#,
    )
    .await;
    c.send("chat", "GET", "/v1/models", &[], b"").await;
    drop(c);
    proxy.stop().await;

    let proxy = start(config(upstream.port(), extra), Mode::Replay, &dir).await;
    let r = one(
        proxy.addr(),
        "chat",
        "POST",
        "/v1/chat",
        &[("X-Api-Version", "2")],
        br#"{"opts":{"temperature":0.7},"model":"a"}"#,
    )
    .await;
    assert_eq!(r.status, 599);
    let text = r.text();
    assert!(
        text.contains("differs: header x-api-version: recorded [\"1\"] vs live [\"2\"]"),
        "{text}"
    );
    assert!(
        text.contains("differs: body json /opts/temperature: recorded \"0.5\" vs live \"0.7\""),
        "{text}"
    );
    let summary = proxy.stop().await;
    let shown = summary.to_string();
    assert!(
        shown.contains("test \"chat\": 0 hits, 1 miss, 2 of 2 recorded interactions never used"),
        "{shown}"
    );
    assert!(shown.contains("never used: #1 GET /v1/models"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_server_test_name_header_is_an_alias() {
    let tmp = TempDir::new("alias");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let proxy = start(config(upstream.port(), ""), Mode::Record, &dir).await;
    one(
        proxy.addr(),
        "",
        "GET",
        "/x",
        &[("Test-Name", "from-test-server")],
        b"",
    )
    .await;
    proxy.stop().await;
    assert_eq!(targets(&dir, "from-test-server"), ["/x"]);
    assert_eq!(upstream.seen()[0].header("test-name"), None, "stripped");
    let proxy = start(config(upstream.port(), ""), Mode::Replay, &dir).await;
    let r = one(
        proxy.addr(),
        "",
        "GET",
        "/x",
        &[("Test-Name", "from-test-server")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_parallel_tests_record_in_order_then_replay_in_parallel() {
    const CLIENTS: usize = 32;
    const REQUESTS: usize = 6;
    let tmp = TempDir::new("parallel");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let proxy = start(config(upstream.port(), ""), Mode::Record, &dir).await;
    let addr = proxy.addr();
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let test = format!("parallel-{n:02}");
            let mut c = Client::connect(addr).await;
            for i in 0..REQUESTS {
                let body = format!("{{\"client\":{n},\"step\":{i}}}");
                let r = c
                    .send(&test, "POST", &format!("/step/{i}"), &[], body.as_bytes())
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    proxy.stop().await;
    for n in 0..CLIENTS {
        let expected: Vec<String> = (0..REQUESTS).map(|i| format!("/step/{i}")).collect();
        assert_eq!(targets(&dir, &format!("parallel-{n:02}")), expected);
    }
    assert_eq!(
        support::files_under(&dir).len(),
        CLIENTS,
        "one file per test, no temporary files left"
    );

    let proxy = start(config(upstream.port(), ""), Mode::Replay, &dir).await;
    let addr = proxy.addr();
    let before = upstream.connections();
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let test = format!("parallel-{n:02}");
            let mut c = Client::connect(addr).await;
            for i in 0..REQUESTS {
                let body = format!("{{\"client\":{n},\"step\":{i}}}");
                let r = c
                    .send(&test, "POST", &format!("/step/{i}"), &[], body.as_bytes())
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(r.json()["body"], body);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let summary = proxy.stop().await;
    assert_eq!(upstream.connections(), before);
    assert_eq!(summary.usage.len(), CLIENTS);
    assert!(
        ouli_adapter_common::report::is_clean(&summary.usage),
        "{summary}"
    );
}
