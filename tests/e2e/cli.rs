//! The `ouli` binary: help, startup errors, listening line, SIGTERM summary.

use crate::support::client::{assert_same_response, test_request, Client, Response};
use crate::support::process::{run_ouli, OuliProcess};
use crate::support::upstream::Upstream;
use crate::support::{config_toml, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_mentions_the_options() {
    for args in [
        &["--help"][..],
        &["record", "--help"],
        &["replay", "--help"],
    ] {
        let out = run_ouli(args).await;
        assert_eq!(out.status.code(), Some(0), "ouli {args:?}: {out:?}");
        for word in ["--config", "--recording-dir"] {
            assert!(
                out.stdout.contains(word),
                "`ouli {}` does not mention {word}:\n{}",
                args.join(" "),
                out.stdout
            );
        }
    }
    let out = run_ouli(&["--help"]).await;
    assert!(
        out.stdout.contains("record") && out.stdout.contains("replay"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_arguments_is_a_usage_error() {
    let out = run_ouli(&[]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run_ouli(&["record", "--recording-dir", "x"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--config"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_typo_exits_2_naming_file_and_line() {
    let tmp = TempDir::new("typo");
    let config = tmp.join("ouli-typo.toml");
    // Line 7: a misspelled field.
    let text = config_toml(9, "", "").replace("target_port = 9", "target_prot = 9");
    let line = text
        .lines()
        .position(|l| l.starts_with("target_prot"))
        .unwrap()
        + 1;
    std::fs::write(&config, &text).unwrap();
    let dir = tmp.recordings();
    let out = match OuliProcess::spawn("record", &config, &dir).await {
        Ok(p) => panic!(
            "ouli started with a typo in its config (listening on {})",
            p.addr
        ),
        Err(out) => out,
    };
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let shown = config.display().to_string();
    assert!(
        out.stderr.contains(&shown),
        "stderr does not name {shown}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{shown}:{line}:"))
            || out.stderr.contains(&format!("line {line}")),
        "stderr does not name line {line}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("target_prot"),
        "stderr does not name the field: {}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_forwarding_to_itself_exits_2_naming_it() {
    /// Attempts before giving up: the port is free when picked, but another
    /// test may bind it before ouli does ("cannot listen"), and then the
    /// attempt says nothing about the loop check.
    const ATTEMPTS: usize = 5;
    let tmp = TempDir::new("selfloop");
    let config = tmp.join("ouli-loop.toml");
    let says_in_use =
        |out: &crate::support::process::Finished| out.stderr.contains("cannot listen");
    'attempt: for _ in 0..ATTEMPTS {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text =
            config_toml(port, "", "").replace("source_port = 0", &format!("source_port = {port}"));
        std::fs::write(&config, &text).unwrap();
        for mode in ["record", "auto"] {
            let out = match OuliProcess::spawn(mode, &config, &tmp.recordings()).await {
                Ok(p) => panic!("ouli {mode} started forwarding to itself (on {})", p.addr),
                Err(out) if says_in_use(&out) => continue 'attempt,
                Err(out) => out,
            };
            assert_eq!(out.status.code(), Some(2), "{out:?}");
            assert!(
                out.stderr.contains(&format!(
                    "endpoint 127.0.0.1:{port} forwards to its own listening address"
                )),
                "{}",
                out.stderr
            );
        }
        // Replay never connects upstream: the same config serves.
        match OuliProcess::spawn("replay", &config, &tmp.recordings()).await {
            Ok(p) => {
                drop(p);
                return;
            }
            Err(out) if says_in_use(&out) => continue 'attempt,
            Err(out) => panic!("replay refused the config: {}", out.stderr),
        }
    }
    panic!("no free port stayed free for {ATTEMPTS} attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_file_exits_2_naming_it() {
    let tmp = TempDir::new("noconfig");
    let config = tmp.join("does-not-exist.toml");
    let out = OuliProcess::spawn("replay", &config, &tmp.recordings())
        .await
        .err()
        .expect("must not start");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("does-not-exist.toml"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_recording_makes_replay_exit_2_naming_the_file() {
    let tmp = TempDir::new("corrupt");
    let config = tmp.join("ouli.toml");
    std::fs::write(&config, config_toml(9, "", "")).unwrap();
    let dir = tmp.recordings();
    std::fs::write(
        dir.join("good.json"),
        r#"{"format":"ouli-recording","version":1,"test_name":"good","interactions":[]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("broken-test.json"),
        r#"{"format":"ouli-recording","version":1,"test_name":"broken-te"#,
    )
    .unwrap();
    let out = OuliProcess::spawn("replay", &config, &dir)
        .await
        .err()
        .expect("must not start");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("broken-test.json"),
        "stderr does not name the file: {}",
        out.stderr
    );

    // A file of the wrong format is an error too.
    std::fs::write(
        dir.join("broken-test.json"),
        r#"{"format":"something-else","version":1,"test_name":"x","interactions":[]}"#,
    )
    .unwrap();
    let out = OuliProcess::spawn("replay", &config, &dir)
        .await
        .err()
        .expect("must not start");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("broken-test.json"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_ignores_temp_files() {
    let tmp = TempDir::new("tmpfiles");
    let config = tmp.join("ouli.toml");
    std::fs::write(&config, config_toml(9, "", "")).unwrap();
    let dir = tmp.recordings();
    std::fs::write(dir.join(".ouli-tmp-123-half"), b"{\"format\":\"ouli-rec").unwrap();
    let p = OuliProcess::spawn("replay", &config, &dir)
        .await
        .unwrap_or_else(|out| panic!("{out:?}"));
    let out = p.terminate().await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

async fn run_steps(addr: std::net::SocketAddr, steps: &[Vec<u8>]) -> Vec<Response> {
    let mut c = Client::connect(addr).await;
    let mut out = Vec::new();
    for s in steps {
        out.push(c.request(s).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_record_then_replay_with_sigterm_summaries() {
    let tmp = TempDir::new("binary");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let config = tmp.join("ouli.toml");
    std::fs::write(&config, config_toml(port, "", "")).unwrap();
    let steps = vec![
        test_request("cli", "GET", "/echo/a?x=1", &[], b""),
        test_request("cli", "POST", "/echo/b", &[], b"\x00\xff binary"),
        test_request("cli", "GET", "/chunked", &[], b""),
    ];

    let p = OuliProcess::spawn("record", &config, &dir)
        .await
        .unwrap_or_else(|out| panic!("{out:?}"));
    assert_eq!(
        p.stdout_so_far(),
        [format!(
            "ouli: recording on http://{} -> 127.0.0.1:{port} (recording dir {})",
            p.addr,
            dir.display()
        )]
    );
    assert!(p.addr.ip().is_loopback() && p.addr.port() != 0);
    let recorded = run_steps(p.addr, &steps).await;
    let out = p.terminate().await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("ouli: interactions recorded: 3, replayed: 0, missed: 0"),
        "record summary: {}",
        out.stdout
    );
    upstream.stop().await;

    let p = OuliProcess::spawn("replay", &config, &dir)
        .await
        .unwrap_or_else(|out| panic!("{out:?}"));
    assert_eq!(
        p.stdout_so_far(),
        [format!(
            "ouli: replaying on http://{} -> 127.0.0.1:{port} (recording dir {})",
            p.addr,
            dir.display()
        )]
    );
    let replayed = run_steps(p.addr, &steps).await;
    for (r, q) in recorded.iter().zip(&replayed) {
        assert_same_response(r, q);
    }
    let miss = run_steps(
        p.addr,
        &[test_request("cli", "GET", "/echo/unknown", &[], b"")],
    )
    .await;
    assert_eq!(miss[0].status, 599);
    // An idle keep-alive connection does not hold up the shutdown.
    let idle = Client::connect(p.addr).await;
    let started = std::time::Instant::now();
    let out = p.terminate().await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        out.stdout
            .contains("ouli: interactions recorded: 0, replayed: 3, missed: 1"),
        "replay summary: {}",
        out.stdout
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_also_shuts_down_gracefully() {
    let tmp = TempDir::new("sigint");
    let dir = tmp.recordings();
    let config = tmp.join("ouli.toml");
    std::fs::write(&config, config_toml(9, "", "")).unwrap();
    let p = OuliProcess::spawn("replay", &config, &dir)
        .await
        .unwrap_or_else(|out| panic!("{out:?}"));
    let r = run_steps(p.addr, &[test_request("x", "GET", "/", &[], b"")]).await;
    assert_eq!(r[0].status, 599);
    let mut p = p;
    p.signal("INT");
    let out = p.wait(std::time::Duration::from_secs(15)).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("replayed: 0, missed: 1"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_exchange_in_flight_finish() {
    let tmp = TempDir::new("inflight");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let config = tmp.join("ouli.toml");
    std::fs::write(&config, config_toml(upstream.port(), "", "")).unwrap();
    let mut p = OuliProcess::spawn("record", &config, &dir)
        .await
        .unwrap_or_else(|out| panic!("{out:?}"));
    let mut c = Client::connect(p.addr).await;
    c.send(b"POST /echo/slow HTTP/1.1\r\nHost: x\r\nX-Ouli-Test-Name: inflight\r\nContent-Length: 5\r\n\r\nhe")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    p.signal("TERM");
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    c.send(b"llo").await;
    let r = c.read_response().await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.body, b"POST /echo/slow\nhello");
    assert_eq!(
        r.header("connection"),
        Some(&b"close"[..]),
        "shutting down: {}",
        r.describe()
    );
    c.expect_closed().await;
    let out = p.wait(std::time::Duration::from_secs(15)).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("interactions recorded: 1,"),
        "{}",
        out.stdout
    );
    let rec = crate::support::read_recording(&dir, "inflight");
    assert_eq!(rec["interactions"][0]["request"]["body"], "hello");
}

/// The README's first command: replaying the recording shipped in
/// examples/ (here on an ephemeral port instead of 8080), with the curl lines
/// it suggests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_example_replays_as_the_readme_says() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join("examples/ouli.toml")).unwrap();
    assert!(example.contains("source_port = 8080"), "{example}");
    let tmp = TempDir::new("example");
    let config = tmp.join("ouli.toml");
    std::fs::write(
        &config,
        example.replace("source_port = 8080", "source_port = 0"),
    )
    .unwrap();
    let mut ouli = OuliProcess::spawn("replay", &config, &root.join("examples/recordings"))
        .await
        .unwrap_or_else(|out| panic!("the example does not start: {out:?}"));
    let addr = ouli.addr;
    for _ in 0..2 {
        let r = Client::connect(addr)
            .await
            .request(
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer anything\r\n\r\n",
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.describe());
        assert!(r.body_str().contains("tiny-1"), "{}", r.describe());
    }
    let body = br#"{"model":"tiny-1","prompt":"Ouli"}"#;
    let post = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let r = Client::connect(addr)
        .await
        .request(&[post.as_bytes(), body].concat())
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.body_str().contains("Hello, Ouli"), "{}", r.describe());
    let r = Client::connect(addr)
        .await
        .request(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.body_str().contains("[DONE]"), "{}", r.describe());
    let r = Client::connect(addr)
        .await
        .request(b"GET /v1/models?page=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(r.status, 599, "{}", r.describe());
    assert!(r.body_str().contains("GET /v1/models"), "{}", r.describe());
    ouli.signal("TERM");
    let out = ouli.wait(std::time::Duration::from_secs(10)).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("replayed: 4, missed: 1"),
        "{}",
        out.stdout
    );
}
