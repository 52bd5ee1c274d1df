//! Idle-connection memory: KB of RSS per idle keep-alive connection at 4,096
//! connections, for the runtime the `ouli` binary was built with.
//!
//! ```text
//! cargo bench -p ouli --bench idle_memory                                        # tokio
//! cargo bench -p ouli --bench idle_memory --no-default-features --features smol
//! cargo bench -p ouli --bench idle_memory --no-default-features --features async-std
//! ```
//!
//! It starts the release `ouli replay` binary (the same build's), warms it up
//! with a few exchanges, reads its VmRSS, opens 4,096 connections that each
//! make one request and then stay open and idle, reads VmRSS again, and
//! prints (after − before) / 4,096. The design note's floor is 32 KB per
//! connection; Ouli's target is 4 KB.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const CONNECTIONS: usize = 4096;
const WARM_UP: usize = 64;

fn vm_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// One GET, its whole answer read; the connection stays open.
fn exchange(stream: &mut TcpStream, i: usize) {
    write!(
        stream,
        "GET /idle/{i} HTTP/1.1\r\nHost: ouli\r\nX-Ouli-Test-Name: idle\r\n\r\n"
    )
    .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read"), 1, "closed early");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
}

fn main() {
    let (soft, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    let wanted = (2 * CONNECTIONS as u64 + 1024).min(hard);
    if soft < wanted {
        rlimit::Resource::NOFILE
            .set(wanted, hard)
            .expect("raise the open-file limit");
    }
    let dir = std::env::temp_dir().join(format!("ouli-idle-memory-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("recordings")).unwrap();
    let config = dir.join("ouli.toml");
    std::fs::write(
        &config,
        "max_connections = 8192\n[[endpoints]]\nsource_port = 0\ntarget_host = \"127.0.0.1\"\ntarget_port = 9\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ouli"))
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg("--recording-dir")
        .arg(dir.join("recordings"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ouli");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = lines
        .by_ref()
        .find_map(|l| {
            let l = l.ok()?;
            let rest = l.strip_prefix("ouli: replaying on http://")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .expect("the listening line");

    for i in 0..WARM_UP {
        exchange(&mut TcpStream::connect(addr).expect("connect"), i);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = vm_rss_kb(pid);
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(addr).expect("connect");
        exchange(&mut stream, i);
        idle.push(stream);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let after = vm_rss_kb(pid);
    let per_connection = (after.saturating_sub(before)) as f64 / CONNECTIONS as f64;
    println!(
        "idle_memory: runtime {}: VmRSS {before} kB -> {after} kB with {CONNECTIONS} idle \
         keep-alive connections = {per_connection:.2} KB per connection (target <= 4 KB)",
        ouli::RUNTIME_NAME
    );
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
