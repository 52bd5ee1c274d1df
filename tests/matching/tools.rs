//! The `ouli` binary: `replay --strict`, `inspect`, `export --har`,
//! `import --har`, `import --test-server`, and YAML configs.

use crate::support::*;
use ouli_adapter_common::config::Config;
use ouli_core::proxy::Mode;
use ouli_core::store::{MessageKind, Peer};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn ouli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ouli"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ouli")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_config(path: &Path, upstream_port: u16) {
    std::fs::write(
        path,
        format!(
            "shutdown_grace_ms = 2000\n[[endpoints]]\nsource_port = 0\ntarget_host = \"127.0.0.1\"\ntarget_port = {upstream_port}\n"
        ),
    )
    .unwrap();
}

/// Starts `ouli replay` and returns the child and the address it listens on.
async fn spawn_replay(
    config: &Path,
    dir: &Path,
    strict: bool,
) -> (Child, SocketAddr, BufReader<std::process::ChildStdout>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ouli"));
    cmd.arg("replay")
        .arg("--config")
        .arg(config)
        .arg("--recording-dir")
        .arg(dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if strict {
        cmd.arg("--strict");
    }
    let mut child = cmd.spawn().expect("spawn ouli replay");
    let stdout = child.stdout.take().unwrap();
    let (reader, addr) = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .unwrap();
        (reader, addr)
    })
    .await
    .unwrap();
    (child, addr, reader)
}

/// SIGTERM, then the exit code and the rest of stdout.
async fn stop_child(
    child: Child,
    mut reader: BufReader<std::process::ChildStdout>,
) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = child;
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        let code = child.wait().unwrap().code().unwrap_or(-1);
        (code, rest)
    })
    .await
    .unwrap()
}

async fn record_two(dir: &Path, upstream: &Upstream) {
    let proxy = start(config(upstream.port(), ""), Mode::Record, dir).await;
    let mut c = Client::connect(proxy.addr()).await;
    c.send("ci", "GET", "/a", &[], b"").await;
    c.send(
        "ci",
        "POST",
        "/b",
        &[("Content-Type", "application/json")],
        b"{\"n\":1}",
    )
    .await;
    drop(c);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_strict_exits_3_on_misses_or_unused_recordings() {
    let tmp = TempDir::new("strict");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    record_two(&dir, &upstream).await;
    let cfg = tmp.join("ouli.toml");
    write_config(&cfg, upstream.port());

    // Everything used, nothing missed: 0.
    let (child, addr, reader) = spawn_replay(&cfg, &dir, true).await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.send("ci", "GET", "/a", &[], b"").await.status, 200);
    assert_eq!(
        c.send("ci", "POST", "/b", &[], b"{\"n\":1}").await.status,
        200
    );
    drop(c);
    let (code, out) = stop_child(child, reader).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("test \"ci\": 2 hits, 0 misses, 0 of 2"),
        "{out}"
    );

    // A recording never used: 3.
    let (child, addr, reader) = spawn_replay(&cfg, &dir, true).await;
    assert_eq!(one(addr, "ci", "GET", "/a", &[], b"").await.status, 200);
    let (code, out) = stop_child(child, reader).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("never used: #1 POST /b"), "{out}");

    // A miss: 3; without --strict the same run exits 0.
    for (strict, expected) in [(true, 3), (false, 0)] {
        let (child, addr, reader) = spawn_replay(&cfg, &dir, strict).await;
        let mut c = Client::connect(addr).await;
        assert_eq!(c.send("ci", "GET", "/a", &[], b"").await.status, 200);
        assert_eq!(
            c.send("ci", "POST", "/b", &[], b"{\"n\":1}").await.status,
            200
        );
        assert_eq!(c.send("ci", "GET", "/nope", &[], b"").await.status, 599);
        drop(c);
        let (code, out) = stop_child(child, reader).await;
        assert_eq!(code, expected, "strict={strict}: {out}");
        assert!(out.contains("1 miss"), "{out}");
    }
    assert_eq!(
        upstream.seen().len(),
        2,
        "replay never reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_lists_interactions_and_problems() {
    let tmp = TempDir::new("inspect");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    record_two(&dir, &upstream).await;
    let d = dir.to_str().unwrap();
    let out = ouli(&["inspect", d]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("1 test(s), 2 interaction(s)"), "{text}");
    assert!(
        text.contains("test \"ci\" (ci.json): 2 interaction(s)"),
        "{text}"
    );
    assert!(
        text.contains("#0   GET     /a  -> 200  (request 0 B, response"),
        "{text}"
    );
    assert!(
        text.contains("#1   POST    /b  -> 200  (request 7 B"),
        "{text}"
    );
    assert!(text.contains("no problems found"), "{text}");

    std::fs::write(dir.join("broken.json"), "{ not json").unwrap();
    std::fs::copy(dir.join("ci.json"), dir.join("ci-copy.json")).unwrap();
    let out = ouli(&["inspect", d]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("broken.json: not a valid recording"),
        "{text}"
    );
    assert!(text.contains("duplicate test name \"ci\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn har_export_then_import_round_trips() {
    let tmp = TempDir::new("har");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    record_two(&dir, &upstream).await;
    let proxy = start(config(upstream.port(), ""), Mode::Record, &dir).await;
    one(
        proxy.addr(),
        "other",
        "PUT",
        "/c?x=1&y=%20",
        &[],
        &[0xff, 0x00, 0x7f],
    )
    .await;
    proxy.stop().await;

    let har = tmp.join("out.har");
    let out = ouli(&[
        "export",
        "--har",
        "--recording-dir",
        dir.to_str().unwrap(),
        "--output",
        har.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    assert_eq!(doc["log"]["version"], "1.2");
    assert_eq!(doc["log"]["entries"].as_array().unwrap().len(), 3);
    assert_eq!(doc["log"]["entries"][1]["request"]["method"], "POST");

    let back = tmp.join("back");
    let out = ouli(&[
        "import",
        "--har",
        har.to_str().unwrap(),
        "--recording-dir",
        back.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = |d: &Path| -> Vec<String> {
        files_under(d)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&dir), names(&back));
    for name in names(&dir) {
        assert_eq!(
            std::fs::read_to_string(dir.join(&name)).unwrap(),
            std::fs::read_to_string(back.join(&name)).unwrap(),
            "{name} differs after the round trip"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_server_recordings_import_and_replay() {
    let tmp = TempDir::new("test-server");
    let src = tmp.join("ts");
    std::fs::create_dir_all(src.join("models")).unwrap();
    // The shapes test-server writes: one JSON file per test (sub-directories
    // for names with '/'), and a .websocket log per WebSocket test.
    std::fs::write(
        src.join("models/sample.json"),
        r#"{
  "recordID": "models/sample",
  "interactions": [
    {
      "request": {
        "method": "GET", "url": "/v1/models?page=1", "request": "GET /v1/models?page=1 HTTP/1.1",
        "headers": { "Accept": "*/*", "Connection": "keep-alive", "Test-Name": "models/sample" },
        "bodySegments": [ null ],
        "previousRequest": "b4d6e60a9b97e7b98c63df9308728c5c88c0b40c398046772c63447b94608b4d",
        "serverAddress": "api.example.com", "port": 443, "protocol": "https"
      },
      "shaSum": "1111",
      "response": { "statusCode": 200, "headers": { "Content-Type": "application/json", "Content-Encoding": "gzip" },
                    "bodySegments": [ { "models": ["a", "b"] } ] }
    },
    {
      "request": {
        "method": "POST", "url": "/v1/generate", "request": "POST /v1/generate HTTP/1.1",
        "headers": { "Content-Type": "application/json", "Content-Length": "57", "Test-Name": "models/sample" },
        "bodySegments": [ { "prompt": "hi" } ],
        "previousRequest": "1111", "serverAddress": "api.example.com", "port": 443, "protocol": "https"
      },
      "shaSum": "2222",
      "response": { "statusCode": 201, "headers": { "Content-Type": "text/plain" }, "bodySegments": [ "created" ] }
    }
  ]
}"#,
    )
    .unwrap();
    std::fs::write(
        src.join("chat.json"),
        r#"{"recordID": "chat", "interactions": [{
      "request": { "method": "GET", "url": "/live", "headers": { "Upgrade": "websocket", "Connection": "Upgrade",
                   "Sec-Websocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-Websocket-Version": "13" },
                   "bodySegments": [null], "previousRequest": "x", "serverAddress": "api.example.com", "port": 443, "protocol": "https" },
      "shaSum": "3333", "response": { "statusCode": 101, "headers": {} } }]}"#,
    )
    .unwrap();
    std::fs::write(
        src.join("chat.websocket"),
        "[WS_MSG][C2S]{\"setup\":{}}\n[WS_MSG][S2C]{\"ready\":true}\n[WS_MSG][C2S]hello\n[WS_MSG][S2C]line one\nline two\n",
    )
    .unwrap();
    std::fs::write(src.join("solo.websocket"), "[C2S]ping\n[S2C]pong\n").unwrap();

    let dest = tmp.join("rec");
    let out = ouli(&[
        "import",
        "--test-server",
        src.to_str().unwrap(),
        "--recording-dir",
        dest.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("imported 3 test(s)"), "{text}");
    assert!(
        text.contains("test \"models/sample\": 2 interaction(s)"),
        "{text}"
    );
    assert!(
        text.contains("solo.websocket: the upgrade request is not in the log"),
        "{text}"
    );

    let chat = recording(&dest, "chat");
    let ws = chat.interactions[0]
        .websocket
        .as_ref()
        .expect("a conversation");
    let got: Vec<(Peer, String)> = ws
        .messages
        .iter()
        .map(|m| (m.from, String::from_utf8_lossy(&m.payload).into_owned()))
        .collect();
    assert_eq!(
        got,
        [
            (Peer::Client, "{\"setup\":{}}".to_owned()),
            (Peer::Server, "{\"ready\":true}".to_owned()),
            (Peer::Client, "hello".to_owned()),
            (Peer::Server, "line one\nline two".to_owned()),
        ]
    );
    assert!(ws.messages.iter().all(|m| m.kind == MessageKind::Text));
    assert_eq!(chat.interactions[0].response.status, 101);
    let solo = recording(&dest, "solo");
    assert_eq!(&solo.interactions[0].request.target[..], b"/");

    // The HTTP interactions replay, selected by test-server's Test-Name header.
    let proxy = start(config(9, ""), Mode::Replay, &dest).await;
    let mut c = Client::connect(proxy.addr()).await;
    let r = c
        .send(
            "",
            "GET",
            "/v1/models?page=1",
            &[("Test-Name", "models/sample")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"models":["a","b"]}"#);
    assert_eq!(r.header("content-encoding"), None);
    let r = c
        .send(
            "",
            "POST",
            "/v1/generate",
            &[
                ("Test-Name", "models/sample"),
                ("Content-Type", "application/json"),
            ],
            br#"{"prompt":"hi"}"#,
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (201, "created"));
    drop(c);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_server_yaml_config_runs_as_it_is() {
    let tmp = TempDir::new("yaml");
    let dir = tmp.join("rec");
    let upstream = Upstream::start().await;
    let yml = tmp.join("test-server-config.yml");
    std::fs::write(
        &yml,
        format!(
            "endpoints:\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: {}\n    source_type: http\n    source_port: 0\n    health: /healthz\n    redact_request_headers:\n      - X-Goog-Api-Key\n",
            upstream.port()
        ),
    )
    .unwrap();
    let config = Config::load(&yml).unwrap();
    let proxy = start(config, Mode::Record, &dir).await;
    let r = one(
        proxy.addr(),
        "",
        "GET",
        "/v1/models",
        &[("Test-Name", "yaml"), ("X-Goog-Api-Key", "goog-SECRET-key")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    proxy.stop().await;
    assert_nowhere(&dir, "goog-SECRET-key");
    assert_eq!(targets(&dir, "yaml"), ["/v1/models"]);
}
