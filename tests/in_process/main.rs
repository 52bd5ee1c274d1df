//! How to run Ouli inside a Rust test: write a recording in code, start
//! `ouli_tokio::TestProxy` in replay mode on an ephemeral port, point the
//! code under test at `proxy.addr()`, and drop the proxy when done.

use bytes::Bytes;
use ouli_adapter_common::config::Config;
use ouli_adapter_common::recording_dir::RecordingDir;
use ouli_core::engine::{fingerprint, MatchPolicy};
use ouli_core::message::Header;
use ouli_core::proxy::Mode;
use ouli_core::store::{Framing, Interaction, RecordedRequest, RecordedResponse, Recording};
use ouli_tokio::TestProxy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ouli-in-process-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the recording for test `greetings`: `GET /greeting?lang=en` answered
/// with `200 hello`. `ouli record` writes the same files; writing them in
/// code keeps a test self-contained.
fn write_recording(dir: &RecordingDir) {
    let policy = MatchPolicy::default(); // what the config's endpoint uses
    let request = RecordedRequest {
        method: Bytes::from("GET"),
        target: Bytes::from("/greeting?lang=en"),
        headers: vec![Header::new("Host", "api.example.com")],
        body: Bytes::new(),
    };
    let mut recording = Recording::new("greetings");
    recording.interactions.push(Interaction {
        fingerprint: fingerprint(&policy, &request).to_string(),
        request,
        response: RecordedResponse {
            status: 200,
            reason: Bytes::from("OK"),
            headers: vec![Header::new("Content-Type", "text/plain")],
            framing: Framing::Length,
            chunks: vec![Bytes::from("hello")],
            trailers: vec![],
        },
        websocket: None,
    });
    dir.write_atomic(&recording).expect("write the recording");
}

/// One endpoint on an ephemeral port; the target is never contacted in replay.
fn config() -> Config {
    Config::from_toml_str(
        r#"
        [[endpoints]]
        source_port = 0
        target_host = "api.example.com"
        target_port = 80
        "#,
        "inline",
    )
    .expect("valid config")
}

/// Sends one request that asks to close, and reads the whole answer.
async fn get(addr: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nX-Ouli-Test-Name: greetings\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn replays_a_recording_written_in_code() {
    let dir = TempDir::new("replay");
    write_recording(&RecordingDir::new(&dir.0));

    let proxy = TestProxy::start(config(), Mode::Replay, &dir.0)
        .await
        .expect("proxy starts");
    let answer = get(proxy.addr(), "/greeting?lang=en").await;
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello"
    );
    // Dropping the proxy shuts it down; the port is released.
    let addr = proxy.addr();
    drop(proxy);
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes after the drop");
}

#[tokio::test]
async fn stop_reports_which_recordings_were_used() {
    let dir = TempDir::new("stop");
    write_recording(&RecordingDir::new(&dir.0));
    let proxy = TestProxy::start(config(), Mode::Replay, &dir.0)
        .await
        .unwrap();

    let miss = get(proxy.addr(), "/greeting?lang=fr").await;
    assert!(miss.starts_with("HTTP/1.1 599 "), "{miss}");
    assert!(get(proxy.addr(), "/greeting?lang=en")
        .await
        .ends_with("hello"));

    // `stop` is the graceful alternative to dropping: it waits for the
    // shutdown and returns what the run did.
    let summary = proxy.stop().await;
    assert_eq!(summary.usage.len(), 1);
    assert_eq!(summary.usage[0].test_name, "greetings");
    assert_eq!((summary.usage[0].used, summary.usage[0].recorded), (1, 1));
}
