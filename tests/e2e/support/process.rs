//! Running the real `ouli` binary.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const OULI: &str = env!("CARGO_BIN_EXE_ouli");

/// What a finished process left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running `ouli record|replay`.
pub struct OuliProcess {
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The endpoint address parsed from the listening line.
    pub addr: SocketAddr,
}

fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    stderr
}

fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let pipe = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl OuliProcess {
    /// Starts `ouli <mode> --config CONFIG --recording-dir DIR` and waits for
    /// its listening line. On failure returns what the process left.
    pub async fn spawn(mode: &str, config: &Path, dir: &Path) -> Result<OuliProcess, Finished> {
        let mut child = Command::new(OULI)
            .arg(mode)
            .arg("--config")
            .arg(config)
            .arg("--recording-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ouli");
        let lines = stdout_lines(&mut child);
        let stderr = collect_stderr(&mut child);
        let verb = if mode == "record" {
            "recording"
        } else {
            "replaying"
        };
        let prefix = format!("ouli: {verb} on http://");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stdout = Vec::new();
        loop {
            match lines.try_recv() {
                Ok(line) => {
                    let parsed = line.strip_prefix(&prefix).and_then(|rest| {
                        let addr = rest.split(' ').next()?;
                        addr.parse::<SocketAddr>().ok()
                    });
                    stdout.push(line);
                    if let Some(addr) = parsed {
                        return Ok(OuliProcess {
                            child,
                            lines,
                            stdout,
                            stderr,
                            addr,
                        });
                    }
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    let mut p = OuliProcess {
                        child,
                        lines,
                        stdout,
                        stderr,
                        addr: "0.0.0.0:0".parse().unwrap(),
                    };
                    return Err(p.wait(Duration::from_secs(10)).await);
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ouli {mode} printed no listening line within 10 s; stdout: {stdout:?}, stderr: {}",
                    String::from_utf8_lossy(&stderr.lock().unwrap())
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The stdout lines read so far (the listening lines).
    pub fn stdout_so_far(&self) -> &[String] {
        &self.stdout
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal with `kill -SIG pid`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit (killing it after `timeout`).
    pub async fn wait(&mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "ouli did not exit within {timeout:?}; stderr: {}",
                    String::from_utf8_lossy(&self.stderr.lock().unwrap())
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Give the reader threads a moment to drain the pipes.
        let drain_deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.lines.try_recv() {
                Ok(line) => self.stdout.push(line),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    if Instant::now() > drain_deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Finished {
            status,
            stdout: self.stdout.join("\n"),
            stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
        }
    }

    /// SIGTERM, then wait for the exit.
    pub async fn terminate(mut self) -> Finished {
        self.signal("TERM");
        self.wait(Duration::from_secs(15)).await
    }
}

impl Drop for OuliProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `ouli ARGS` to completion (at most 10 s).
pub async fn run_ouli(args: &[&str]) -> Finished {
    let mut child = Command::new(OULI)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ouli");
    let lines = stdout_lines(&mut child);
    let stderr = collect_stderr(&mut child);
    let mut p = OuliProcess {
        child,
        lines,
        stdout: Vec::new(),
        stderr,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    p.wait(Duration::from_secs(10)).await
}
