//! Crash safety: `kill -9` in the middle of recording leaves only whole,
//! parseable recordings, the journals of the tests being recorded (whose
//! torn last line, if any, is ignored) and ignorable temp files; replay
//! loads them all.

use crate::support::client::{test_request, Client};
use crate::support::process::OuliProcess;
use crate::support::upstream::{pattern, Upstream};
use crate::support::{config_toml, files_under, TempDir};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_recording_leaves_parseable_files() {
    let tmp = TempDir::new("crash");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let config = tmp.join("ouli.toml");
    std::fs::write(&config, config_toml(upstream.port(), "", "")).unwrap();
    let mut p = OuliProcess::spawn("record", &config, &dir)
        .await
        .unwrap_or_else(|out| panic!("{out:?}"));
    let addr = p.addr;

    // Two requests on one connection: the first is on disk once the second
    // is answered, so at least one recording exists before the kill.
    let mut warm = Client::connect(addr).await;
    for _ in 0..2 {
        assert_eq!(
            warm.request(&test_request("crash-warm", "GET", "/echo/warm", &[], b""))
                .await
                .status,
            200
        );
    }
    drop(warm);

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..4usize {
        let stop = Arc::clone(&stop);
        let answered = Arc::clone(&answered);
        tasks.push(tokio::spawn(async move {
            let big = pattern(1 << 20, worker as u8);
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let test = format!("crash-{}", (worker + i) % 3);
                let req = if i % 4 == 3 {
                    test_request(&test, "POST", &format!("/echo/big/{worker}/{i}"), &[], &big)
                } else {
                    test_request(&test, "GET", &format!("/echo/small/{worker}/{i}"), &[], b"")
                };
                i += 1;
                // Raw I/O with error handling: the proxy dies under us.
                let Ok(Ok(mut s)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                else {
                    break;
                };
                if s.write_all(&req).await.is_err() {
                    break;
                }
                let mut buf = Vec::new();
                let _ = s.shutdown().await;
                match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await {
                    Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 200 ") => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.signal("KILL");
    let out = p.wait(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("client task finishes");
    }
    assert!(!out.status.success(), "killed: {out:?}");

    let files = files_under(&dir);
    let (mut recordings, mut journals) = (0, 0);
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            f.parent().unwrap(),
            dir,
            "unexpected subdirectory file {}",
            f.display()
        );
        if name.starts_with(".ouli-tmp") {
            continue;
        }
        if name.ends_with(".json.journal") {
            // Appended line by line: a header, then whole interactions,
            // maybe a torn last line (checked by loading, below).
            let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
            let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap())
                .unwrap_or_else(|e| panic!("{name}: no whole header line: {e}"));
            assert_eq!(header["format"], "ouli-journal", "{name}");
            journals += 1;
            continue;
        }
        assert!(name.ends_with(".json"), "stray file {name}");
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{name}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name} is not whole JSON ({} bytes): {e}", text.len()));
        assert_eq!(v["format"], "ouli-recording", "{name}");
        assert_eq!(v["version"], 1, "{name}");
        let its = v["interactions"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no interactions array"));
        assert!(!its.is_empty(), "{name}: empty recording");
        for it in its {
            assert_eq!(it["response"]["status"], 200, "{name}");
        }
        recordings += 1;
    }
    // What replay loads: files and journals applied.
    let loaded = ouli_adapter_common::recording_dir::RecordingDir::new(&dir)
        .load_all()
        .unwrap_or_else(|e| panic!("the directory does not load after a crash: {e}"));
    let warm = loaded
        .iter()
        .find(|(_, r)| r.test_name == "crash-warm")
        .map_or(0, |(_, r)| r.interactions.len());
    assert!(
        warm >= 1,
        "the first warm-up exchange was stored before the second was answered"
    );
    let interactions: usize = loaded.iter().map(|(_, r)| r.interactions.len()).sum();
    for (path, r) in &loaded {
        for i in &r.interactions {
            assert_eq!(i.response.status, 200, "{}", path.display());
        }
    }
    eprintln!(
        "crash test: {} answers before the kill, {recordings} recording files, {journals} \
         journals, {} temp files; {} tests, {interactions} interactions load",
        answered.load(Ordering::SeqCst),
        files.len() - recordings - journals,
        loaded.len()
    );

    // Replay loads the directory (journals applied, temp files ignored),
    // starts, and answers what the killed run stored.
    let p = OuliProcess::spawn("replay", &config, &dir)
        .await
        .unwrap_or_else(|out| panic!("replay did not start after a crash: {out:?}"));
    let mut c = Client::connect(p.addr).await;
    let r = c
        .request(&test_request("crash-warm", "GET", "/echo/warm", &[], b""))
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = c
        .request(&test_request("crash-0", "GET", "/never", &[], b""))
        .await;
    assert_eq!(r.status, 599);
    drop(c);
    let out = p.terminate().await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
