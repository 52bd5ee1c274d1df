//! Real HTTP/2 command-line clients through the proxy: `curl
//! --http2-prior-knowledge`, `nghttp` and `h2load` (Debian's
//! nghttp2-client, installed by tests/run.sh).

use crate::support::{config_toml, start_proxy_with, stop_proxy, TempDir};
use crate::upstream::Upstream;
use ouli_core::proxy::Mode;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Set by tests/run.sh to the tools it installed or found (space-separated,
/// or `all`): a listed tool that is missing is a failure, not a skip.
const REQUIRE: &str = "OULI_REQUIRE_H2_TOOLS";

/// `name` on `PATH` or in `$CARGO_HOME/bin`; `None` means: skip (loudly).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(home) = cargo_home {
        dirs.push(home.join("bin"));
    }
    let found = dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var(REQUIRE).unwrap_or_default();
        if required == "all" || required.split_whitespace().any(|t| t == name) {
            panic!("{name} is required ({REQUIRE}={required:?}) but is not on PATH nor in $CARGO_HOME/bin");
        }
        // Straight to stderr, past the test harness's capture: a skip is loud.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED: `{name}` is not installed; tests/run.sh installs it.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
    }
    found
}

/// Runs a command to completion on a blocking thread (at most `limit`);
/// returns (success, stdout, stderr).
pub async fn run(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    let what = format!("{cmd:?}");
    let out = tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || cmd.output().expect("spawn")),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What curl reports for one request: `-w` fields, the header dump and the body.
#[derive(Debug, PartialEq, Eq)]
struct Curl {
    version_and_status: String,
    headers: String,
    body: Vec<u8>,
}

async fn curl(curl: &Path, dir: &Path, url: &str, post: Option<&Path>) -> Curl {
    let headers = dir.join("curl-headers");
    let body = dir.join("curl-body");
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--http2-prior-knowledge", "--max-time", "20"])
        .args(["-H", "x-ouli-test-name: curl", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_version} %{http_code}"]);
    if let Some(file) = post {
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    cmd.arg(url);
    let (ok, stdout, stderr) = run(cmd, Duration::from_secs(30)).await;
    assert!(ok, "curl {url} failed: {stderr}");
    Curl {
        version_and_status: stdout,
        headers: std::fs::read_to_string(&headers).unwrap(),
        body: std::fs::read(&body).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_prior_knowledge_records_then_replays() {
    let Some(curl_bin) = find_tool("curl") else {
        return;
    };
    let up = Upstream::start().await;
    let tmp = TempDir::new("curl");
    let dir = tmp.recordings();
    let upload = tmp.join("upload.bin");
    std::fs::write(&upload, crate::echo_body()).unwrap();
    let toml = config_toml(up.port(), "", "target_protocol = \"h2c\"");
    let cases: [(&str, Option<&Path>); 5] = [
        ("/hello", None),
        ("/trailers", None),
        ("/empty", None),
        ("/big", None),
        ("/echo", Some(&upload)),
    ];

    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let mut recorded = Vec::new();
    for (path, post) in cases {
        let url = format!("http://{}{path}", proxy.addr());
        recorded.push(curl(&curl_bin, tmp.path(), &url, post).await);
    }
    stop_proxy(proxy).await;
    up.stop().await;
    assert_eq!(recorded[0].version_and_status, "2 200");
    assert_eq!(recorded[0].body, b"hello over the wire\n");
    assert!(recorded[0].headers.contains("x-upstream-version: HTTP/2.0"));
    assert_eq!(recorded[1].body, b"part one\npart two\n");
    assert!(recorded[2].body.is_empty());
    assert_eq!(recorded[3].body, crate::upstream::big_body());
    assert!(recorded[4].body == crate::echo_body());

    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    for (i, (path, post)) in cases.into_iter().enumerate() {
        let url = format!("http://{}{path}", proxy.addr());
        let replayed = curl(&curl_bin, tmp.path(), &url, post).await;
        assert_eq!(recorded[i], replayed, "{path}");
    }
    let url = format!("http://{}/never-recorded", proxy.addr());
    let miss = curl(&curl_bin, tmp.path(), &url, None).await;
    assert_eq!(miss.version_and_status, "2 599");
    let summary = stop_proxy(proxy).await;
    assert_eq!((summary.stats.replayed, summary.stats.missed), (5, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_records_then_replays_and_h2load_hammers_the_replay() {
    let (Some(nghttp), Some(h2load)) = (find_tool("nghttp"), find_tool("h2load")) else {
        return;
    };
    let up = Upstream::start().await;
    let tmp = TempDir::new("nghttp");
    let dir = tmp.recordings();
    let toml = config_toml(
        up.port(),
        "",
        "target_protocol = \"h2c\"\non_repeat = \"repeat_last\"",
    );
    let nghttp_get = |addr: std::net::SocketAddr, path: &str| {
        let mut cmd = Command::new(&nghttp);
        cmd.args(["-v", "-t", "20", "-H", "x-ouli-test-name: nghttp"])
            .arg(format!("http://{addr}{path}"));
        cmd
    };
    // nghttp -v prints every frame: keep the lines that do not depend on
    // timing or on the connection (a received header, DATA, END_STREAM).
    let frames = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest.to_owned()))
            .filter(|l| l.starts_with("recv (stream_id=13)") || l.starts_with("recv DATA"))
            .collect()
    };

    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let mut recorded = Vec::new();
    for path in ["/trailers", "/hello", "/empty"] {
        let (ok, out, err) = run(nghttp_get(proxy.addr(), path), Duration::from_secs(30)).await;
        assert!(ok, "nghttp {path}: {err}\n{out}");
        recorded.push((out.clone(), frames(&out)));
    }
    stop_proxy(proxy).await;
    up.stop().await;
    let (trailers_out, trailers_frames) = &recorded[0];
    assert!(
        trailers_out.contains("part one\n") && trailers_out.contains("part two\n"),
        "{trailers_out}"
    );
    assert!(
        trailers_frames
            .iter()
            .any(|l| l == "recv (stream_id=13) x-checksum: 1234"),
        "{trailers_out}"
    );
    assert!(recorded[2].1.iter().all(|l| !l.starts_with("recv DATA")));

    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    for (i, path) in ["/trailers", "/hello", "/empty"].into_iter().enumerate() {
        let (ok, out, err) = run(nghttp_get(proxy.addr(), path), Duration::from_secs(30)).await;
        assert!(ok, "nghttp {path}: {err}\n{out}");
        assert_eq!(recorded[i].1, frames(&out), "{path}: frames differ\n{out}");
    }
    // h2load: many connections and concurrent streams, every request a hit.
    let mut cmd = Command::new(&h2load);
    cmd.args(["-n", "2000", "-c", "8", "-m", "10"])
        .args(["-H", "x-ouli-test-name: nghttp"])
        .arg(format!("http://{}/hello", proxy.addr()));
    let (ok, out, err) = run(cmd, Duration::from_secs(60)).await;
    assert!(ok, "h2load failed: {err}\n{out}");
    assert!(
        out.contains("2000 succeeded, 0 failed, 0 errored"),
        "h2load: {out}"
    );
    assert!(out.contains("status codes: 2000 2xx"), "h2load: {out}");
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.replayed, 2003, "{summary}");
    assert_eq!(summary.stats.missed, 0, "{summary}");
}

/// `Expect: 100-continue` over HTTP/2: Ouli asks for the body itself, so
/// curl does not sit out its expect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_expect_100_continue_is_answered() {
    let Some(curl_bin) = find_tool("curl") else {
        return;
    };
    let up = Upstream::start().await;
    let tmp = TempDir::new("curl-expect");
    let dir = tmp.recordings();
    let upload = tmp.join("upload.bin");
    std::fs::write(&upload, crate::echo_body()).unwrap();
    let toml = config_toml(up.port(), "", "target_protocol = \"h2c\"");
    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let mut cmd = Command::new(&curl_bin);
    cmd.args([
        "-sS",
        "--http2-prior-knowledge",
        "--expect100-timeout",
        "15",
    ])
    .args(["-H", "Expect: 100-continue", "-o", "/dev/null"])
    .args(["-w", "%{http_code}", "--data-binary"])
    .arg(format!("@{}", upload.display()))
    .arg(format!("http://{}/echo", proxy.addr()));
    let started = std::time::Instant::now();
    let (ok, out, err) = run(cmd, Duration::from_secs(30)).await;
    assert!(ok && out == "200", "{out} {err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "curl waited out its expect timeout: {:?}",
        started.elapsed()
    );
    stop_proxy(proxy).await;
    up.stop().await;
}
