//! The orchestrator: starts the hyper ceiling, the WebSocket echo server
//! and Ouli (replay and record, every runtime), drives the external load
//! generators (wrk, oha, h2load) and the in-process probes, prints the
//! table and writes BENCHMARKS.md.
//!
//! Measurements are interleaved: for each figure, every server is measured
//! back to back, so a ratio compares runs taken seconds apart on a machine
//! whose load changes (the cores are shared).

use crate::gen;
use crate::probes;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The recordings in the large set.
const LARGE_SET: usize = 10_000;
/// Messages per recorded WebSocket conversation.
const WS_MESSAGES: usize = 100;
/// Connections of the WebSocket echo run.
const WS_CONNS: usize = 64;
/// Idle connections of the memory probe.
const IDLE_CONNS: usize = 4096;
/// The fixed offered rate of the latency runs, and their connections.
const FIXED_RATE: u32 = 50_000;
const FIXED_CONNS: u32 = 4096;
/// The connections of a second run at [`FIXED_RATE`]: the same offered
/// load over few connections.
const FIXED_FEW_CONNS: u32 = 64;
/// Requests scheduled in the first second of a fixed-rate run are left out
/// of its steady-state percentiles (the whole-run p99 is reported beside
/// them). With oha that second also opens the 4,096 connections, and its
/// tail is the connect burst (SYN queueing, a 1 s SYN retransmit on a
/// server with a short accept backlog), not serving; `ouli-bench pace`
/// opens its connections before it starts the clock, and the cut keeps the
/// two generators' figures comparable.
/// (A run of under 4 s, a smoke run, leaves out its first quarter.)
const FIXED_WARMUP_SECS: f64 = 1.0;

#[derive(clap::Args)]
pub struct RunArgs {
    /// `RUNTIME=PATH`: an `ouli` binary built with that runtime (repeat
    /// for each runtime, in the order the table shows them).
    #[arg(long = "ouli", value_parser = parse_binary, required = true)]
    ouli: Vec<(String, PathBuf)>,
    /// About 1 s per figure: checks that everything works.
    #[arg(long)]
    smoke: bool,
    /// Seconds per load run (default 8, or 1 with --smoke).
    #[arg(long)]
    seconds: Option<u64>,
    /// Skip Ouli in record mode.
    #[arg(long)]
    no_record: bool,
    /// Rounds of every load figure (default 2, or 1 with --smoke): each
    /// round measures every server back to back, and the table keeps each
    /// server's best round. Interference from other work on shared cores
    /// only ever slows a run down, so the best of a few rounds is the
    /// figure least bent by it; every server gets the same rounds, and a
    /// round with errors marks the figure. The idle-memory figure, taken
    /// on fresh processes, has one round.
    #[arg(long)]
    rounds: Option<u32>,
    /// The oha binary (fixed-rate latency).
    #[arg(long, default_value = "oha")]
    oha: String,
    /// Write the results into this Markdown file, between the
    /// `<!-- results -->` markers (the rest of the file is kept).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A title for this run in the output (for example "run 2").
    #[arg(long, default_value = "")]
    label: String,
    /// Only the figures whose key contains one of these (comma-separated;
    /// keys: idle, h1-64, h1-1024, h1-4096, h1-10k, fixed-50k, fixed-50k-oha, fixed-50k-64,
    /// h2, h2-10k,
    /// newconn, setup, ws).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn parse_binary(s: &str) -> Result<(String, PathBuf), String> {
    let (rt, path) = s.split_once('=').ok_or("expected RUNTIME=PATH")?;
    Ok((rt.to_owned(), PathBuf::from(path)))
}

/// Raises the open-file limit to the hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Figures

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Metric {
    H1Rps64,
    H1Rps1024,
    H1Rps4096,
    H1Rps10k,
    FixedRps,
    FixedP50,
    FixedP99,
    FixedP99Whole,
    FixedCpu,
    FixedOhaRps,
    FixedOhaP50,
    FixedOhaP99,
    FixedOhaP99Whole,
    FixedOhaCpu,
    FixedFewRps,
    FixedFewP50,
    FixedFewP99,
    FixedFewP99Whole,
    FixedFewCpu,
    H2Rps,
    H2P50,
    H2P99,
    H2Rps10k,
    NewConns,
    SetupP50,
    SetupFirstP50,
    SetupP99,
    SetupWarmP50,
    IdleKb,
    WsRoundTrips,
}

impl Metric {
    const ALL: [Metric; 30] = [
        Metric::H1Rps64,
        Metric::H1Rps1024,
        Metric::H1Rps4096,
        Metric::H1Rps10k,
        Metric::FixedRps,
        Metric::FixedP50,
        Metric::FixedP99,
        Metric::FixedP99Whole,
        Metric::FixedCpu,
        Metric::FixedOhaRps,
        Metric::FixedOhaP50,
        Metric::FixedOhaP99,
        Metric::FixedOhaP99Whole,
        Metric::FixedOhaCpu,
        Metric::FixedFewRps,
        Metric::FixedFewP50,
        Metric::FixedFewP99,
        Metric::FixedFewP99Whole,
        Metric::FixedFewCpu,
        Metric::H2Rps,
        Metric::H2P50,
        Metric::H2P99,
        Metric::H2Rps10k,
        Metric::NewConns,
        Metric::SetupP50,
        Metric::SetupFirstP50,
        Metric::SetupP99,
        Metric::SetupWarmP50,
        Metric::IdleKb,
        Metric::WsRoundTrips,
    ];

    fn label(self) -> &'static str {
        match self {
            Metric::H1Rps64 => "HTTP/1.1 keep-alive req/s, 64 conns",
            Metric::H1Rps1024 => "HTTP/1.1 keep-alive req/s, 1,024 conns",
            Metric::H1Rps4096 => "HTTP/1.1 keep-alive req/s, 4,096 conns",
            Metric::H1Rps10k => "HTTP/1.1 req/s, 64 conns, 10,000 recordings",
            Metric::FixedRps => "offered 50k req/s, 4,096 conns (pace): achieved req/s",
            Metric::FixedP50 => "  latency p50 (ms), 50k, after 1 s",
            Metric::FixedP99 => "  latency p99 (ms), 50k, after 1 s",
            Metric::FixedP99Whole => "  latency p99 (ms), 50k, whole run",
            Metric::FixedCpu => "  server CPU per request (us), 50k",
            Metric::FixedOhaRps => "offered 50k req/s, 4,096 conns (oha): achieved req/s",
            Metric::FixedOhaP50 => "  oha: latency p50 (ms), 50k, after 1 s",
            Metric::FixedOhaP99 => "  oha: latency p99 (ms), 50k, after 1 s",
            Metric::FixedOhaP99Whole => "  oha: latency p99 (ms), 50k, whole run with the connects",
            Metric::FixedOhaCpu => "  oha: server CPU per request (us), 50k",
            Metric::FixedFewRps => "offered 50k req/s, 64 conns (pace): achieved req/s",
            Metric::FixedFewP50 => "  latency p50 (ms), 50k over 64, after 1 s",
            Metric::FixedFewP99 => "  latency p99 (ms), 50k over 64, after 1 s",
            Metric::FixedFewP99Whole => "  latency p99 (ms), 50k over 64, whole run",
            Metric::FixedFewCpu => "  server CPU per request (us), 50k over 64",
            Metric::H2Rps => "HTTP/2 req/s (h2load -c64 -m10)",
            Metric::H2P50 => "  HTTP/2 latency p50 (ms)",
            Metric::H2P99 => "  HTTP/2 latency p99 (ms)",
            Metric::H2Rps10k => "HTTP/2 req/s, 10,000 recordings",
            Metric::NewConns => "new connections/s (Connection: close, 64)",
            Metric::SetupP50 => "connection setup (us): first - warm exchange, p50",
            Metric::SetupFirstP50 => "  first exchange on a new connection p50 (us)",
            Metric::SetupP99 => "  first exchange on a new connection p99 (us)",
            Metric::SetupWarmP50 => "  exchange on a warm connection p50 (us)",
            Metric::IdleKb => "KB per idle connection (4,096)",
            Metric::WsRoundTrips => "WebSocket echo msgs/s, 64 conns",
        }
    }

    /// Latencies, times, CPU and memory: smaller is better.
    fn lower_is_better(self) -> bool {
        matches!(
            self,
            Metric::FixedP50
                | Metric::FixedP99
                | Metric::FixedP99Whole
                | Metric::FixedCpu
                | Metric::FixedOhaP50
                | Metric::FixedOhaP99
                | Metric::FixedOhaP99Whole
                | Metric::FixedOhaCpu
                | Metric::FixedFewP50
                | Metric::FixedFewP99
                | Metric::FixedFewP99Whole
                | Metric::FixedFewCpu
                | Metric::H2P50
                | Metric::H2P99
                | Metric::SetupP50
                | Metric::SetupFirstP50
                | Metric::SetupP99
                | Metric::SetupWarmP50
                | Metric::IdleKb
        )
    }

    fn format(self, v: f64) -> String {
        match self {
            Metric::FixedP50
            | Metric::FixedP99
            | Metric::FixedP99Whole
            | Metric::FixedOhaP50
            | Metric::FixedOhaP99
            | Metric::FixedOhaP99Whole
            | Metric::FixedCpu
            | Metric::FixedOhaCpu
            | Metric::FixedFewP50
            | Metric::FixedFewP99
            | Metric::FixedFewP99Whole
            | Metric::FixedFewCpu
            | Metric::H2P50
            | Metric::H2P99 => {
                format!("{v:.2}")
            }
            Metric::SetupP50 | Metric::SetupFirstP50 | Metric::SetupP99 | Metric::SetupWarmP50 => {
                format!("{v:.0}")
            }
            Metric::IdleKb => format!("{v:.2}"),
            _ => thousands(v),
        }
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One figure: its value and what went wrong while taking it, if anything.
#[derive(Clone, Debug)]
struct Cell {
    value: f64,
    note: Option<String>,
}

impl Cell {
    /// `N` figures that could not be taken, each saying why.
    fn failed<const N: usize>(why: String) -> [Cell; N] {
        std::array::from_fn(|_| Cell {
            value: f64::NAN,
            note: Some(why.clone()),
        })
    }

    /// The better of two rounds' figures; a note from either stays, so a
    /// figure with errors in any round never passes a check.
    fn best_with(self, other: Cell, lower_is_better: bool) -> Cell {
        let other_wins = match (self.value.is_nan(), other.value.is_nan()) {
            (true, _) => true,
            (false, true) => false,
            (false, false) if lower_is_better => other.value < self.value,
            (false, false) => other.value > self.value,
        };
        let note = match (self.note, other.note) {
            (Some(a), Some(b)) if a != b => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let value = if other_wins { other.value } else { self.value };
        Cell { value, note }
    }
}

/// A column of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    Hyper,
    Replay(String),
    Record(String),
}

impl Subject {
    fn title(&self) -> String {
        match self {
            Subject::Hyper => "hyper".into(),
            Subject::Replay(rt) => format!("replay {rt}"),
            Subject::Record(rt) => format!("record {rt}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Child processes

/// A server process we started, with the address it printed.
struct Proc {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd` and waits for the line naming its address.
    fn start(cmd: &mut Command, stderr_to: &Path) -> Result<Proc, String> {
        let stderr = std::fs::File::create(stderr_to).map_err(|e| e.to_string())?;
        cmd.stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = address_in(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                keep.lock().expect("lines").push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Ok(Proc {
                child,
                addr,
                lines,
                reader: Some(reader),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{cmd:?} printed no address; see {}",
                    stderr_to.display()
                ))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT (Ouli finishes and prints its summary), then SIGKILL after
    /// `wait`. Returns what it printed.
    fn stop(mut self, wait: Duration) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.lines.lock().expect("lines"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `listening on ADDR` (our servers) or `ouli: ... on http://ADDR ...`.
fn address_in(line: &str) -> Option<SocketAddr> {
    if let Some(rest) = line.strip_prefix("listening on ") {
        return rest.trim().parse().ok();
    }
    let rest = line.split_once(" on http://")?.1;
    rest.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// External tools

struct Bench {
    args: RunArgs,
    seconds: u64,
    /// Rounds of each load figure (see `RunArgs::rounds`).
    rounds: u32,
    work: PathBuf,
    me: PathBuf,
    /// Every command run, with addresses replaced by `$ADDR`.
    commands: Vec<String>,
    warnings: Vec<String>,
    hyper: Option<Proc>,
    echo: Option<Proc>,
    results: Vec<(Subject, HashMap<Metric, Cell>)>,
    serial: usize,
}

fn addr_free(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..i]);
        out.push_str("$ADDR");
        rest = rest[i + "127.0.0.1:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

impl Bench {
    fn log_command(&mut self, program: &str, args: &[String]) {
        let quoted: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect();
        let line = addr_free(&format!("{program} {}", quoted.join(" ")));
        let line = line.replace(&self.work.display().to_string(), "$WORK");
        // Scratch names carry a serial number (record-7, h2load-12.log).
        let mut line = line;
        for prefix in ["/record-", "/h2load-", "/oha-"] {
            let mut out = String::new();
            let mut rest = line.as_str();
            while let Some(i) = rest.find(prefix) {
                out.push_str(&rest[..i + prefix.len()]);
                rest = rest[i + prefix.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
                out.push('N');
            }
            out.push_str(rest);
            line = out;
        }
        if !self.commands.contains(&line) {
            self.commands.push(line);
        }
    }

    /// Runs a tool to completion; its stdout and stderr, or why it failed.
    fn tool(&mut self, program: &str, args: Vec<String>) -> Result<String, String> {
        self.log_command(program, &args);
        let out = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!(
                "{program} failed ({}): {}",
                out.status,
                text.trim()
            ));
        }
        Ok(text)
    }

    fn warn(&mut self, w: String) {
        eprintln!("  warning: {w}");
        self.warnings.push(w);
    }

    fn wrk(&mut self, addr: SocketAddr, conns: u32, path: &str, extra: &[&str]) -> Cell {
        let mut args = vec![
            "-t2".to_owned(),
            format!("-c{conns}"),
            format!("-d{}s", self.seconds),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("http://{addr}{path}"));
        match self.tool("wrk", args) {
            Ok(out) => parse_wrk(&out),
            Err(e) => Cell {
                value: f64::NAN,
                note: Some(e),
            },
        }
    }

    /// `ouli-bench pace` (our open-loop generator, see `pace.rs`) at a fixed
    /// offered rate over `conns` keep-alive connections: the achieved rate,
    /// p50 and p99 of the requests scheduled after [`FIXED_WARMUP_SECS`],
    /// the whole run's p99 (latency from each request's scheduled time),
    /// and the CPU time the server process `pid` spent per answer.
    fn pace(&mut self, addr: SocketAddr, pid: u32, rate: u32, conns: u32) -> [Cell; 5] {
        let me = self.me.display().to_string();
        let warmup = FIXED_WARMUP_SECS.min(self.seconds as f64 / 4.0);
        let args = vec![
            "pace".to_owned(),
            "--addr".to_owned(),
            addr.to_string(),
            format!("--conns={conns}"),
            format!("--rate={rate}"),
            format!("--seconds={}", self.seconds),
            format!("--warmup={warmup}"),
        ];
        let cpu_before = cpu_seconds(pid);
        let result = self.tool(&me, args).and_then(|out| parse_pace(&out));
        let cpu_after = cpu_seconds(pid);
        match result {
            Ok((cells, answered, generator_us)) => {
                eprintln!("  (pace's own CPU per request: {generator_us:.2} us)");
                let cpu = cpu_per_answer(pid, cpu_before, cpu_after, answered, &cells[0]);
                let [rps, p50, p99, whole] = cells;
                [rps, p50, p99, whole, cpu]
            }
            Err(e) => Cell::failed(e),
        }
    }

    /// oha at a fixed offered rate (`oha -q RATE --latency-correction`, the
    /// command the issue names), shown beside `pace` and not judged: oha
    /// 1.16 paces with one `tokio::time::sleep_until` per request on a 1 ms
    /// timer wheel, so at 50k req/s its requests leave in bursts of about
    /// 50 each millisecond, and latency correction starts each clock when
    /// the burst is released (`work_until_with_qps_latency_correction` in
    /// its `src/client.rs`): the p50 measures how long a server takes to
    /// clear a burst. Figures as for `pace`; the percentiles come from
    /// oha's per-request database (`--db-url`).
    fn oha(&mut self, addr: SocketAddr, pid: u32, rate: u32, conns: u32) -> [Cell; 5] {
        let oha = self.args.oha.clone();
        self.serial += 1;
        let db = self.work.join(format!("oha-{}.db", self.serial));
        let _ = std::fs::remove_file(&db);
        let args = vec![
            "-z".to_owned(),
            format!("{}s", self.seconds),
            "-c".to_owned(),
            conns.to_string(),
            "-q".to_owned(),
            rate.to_string(),
            "--latency-correction".to_owned(),
            "--no-tui".to_owned(),
            "--output-format".to_owned(),
            "json".to_owned(),
            "--db-url".to_owned(),
            db.display().to_string(),
            format!("http://{addr}/bench"),
        ];
        let cpu_before = cpu_seconds(pid);
        let warmup = FIXED_WARMUP_SECS.min(self.seconds as f64 / 4.0);
        let result = self
            .tool(&oha, args)
            .map(|out| parse_oha(&out, &db, warmup));
        let cpu_after = cpu_seconds(pid);
        let _ = std::fs::remove_file(&db);
        match result {
            Ok(([rps, p50, p99, whole], answered)) => {
                let cpu = cpu_per_answer(pid, cpu_before, cpu_after, answered as u64, &rps);
                [rps, p50, p99, whole, cpu]
            }
            Err(e) => Cell::failed(e),
        }
    }

    fn h2load(&mut self, addr: SocketAddr, uris: Option<&Path>) -> [Cell; 3] {
        self.serial += 1;
        let log = self.work.join(format!("h2load-{}.log", self.serial));
        let mut args = vec![
            "-c64".to_owned(),
            "-m10".to_owned(),
            "-D".to_owned(),
            self.seconds.to_string(),
            format!("--log-file={}", log.display()),
        ];
        match uris {
            Some(file) => {
                args.push("-i".to_owned());
                args.push(file.display().to_string());
                args.push(format!("--base-uri=http://{addr}"));
            }
            None => args.push(format!("http://{addr}/bench")),
        }
        let result = self
            .tool("h2load", args)
            .map(|out| parse_h2load(&out, &log));
        let _ = std::fs::remove_file(&log);
        match result {
            Ok(cells) => cells,
            Err(e) => Cell::failed(e),
        }
    }
}

fn parse_wrk(out: &str) -> Cell {
    let mut value = f64::NAN;
    let mut problems = Vec::new();
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            value = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            problems.push(format!("{} non-2xx", v.trim()));
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            problems.push(format!("socket errors:{v}"));
        }
    }
    if value.is_nan() {
        problems.push(format!("no Requests/sec in wrk output: {}", out.trim()));
    }
    Cell {
        value,
        note: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

fn parse_oha(out: &str, db: &Path, warmup: f64) -> ([Cell; 4], usize) {
    let fail = |why: String| (Cell::failed(why), 0);
    let start = out.find('{').unwrap_or(0);
    // oha's JSON report, followed (with `--db-url`) by a line on stderr.
    let first = serde_json::Deserializer::from_str(&out[start..])
        .into_iter::<serde_json::Value>()
        .next();
    let json = match first {
        Some(Ok(v)) => v,
        Some(Err(e)) => return fail(format!("oha output is not JSON ({e}): {}", out.trim())),
        None => return fail(format!("no JSON in oha's output: {}", out.trim())),
    };
    let rps = json["summary"]["requestsPerSec"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let mut problems = Vec::new();
    if let Some(codes) = json["statusCodeDistribution"].as_object() {
        let bad: Vec<String> = codes
            .iter()
            .filter(|(k, _)| !k.starts_with('2'))
            .map(|(k, v)| format!("{v} x {k}"))
            .collect();
        if !bad.is_empty() {
            problems.push(format!("status {}", bad.join(", ")));
        }
    }
    if let Some(errors) = json["errorDistribution"].as_object() {
        // Requests still in flight when `-z` ends are counted as "aborted
        // due to deadline": not a failure of the server.
        let e: Vec<String> = errors
            .iter()
            .filter(|(k, _)| !k.contains("aborted due to deadline"))
            .map(|(k, v)| format!("{v} x {k}"))
            .collect();
        if !e.is_empty() {
            problems.push(format!("errors {}", e.join(", ")));
        }
    }
    let latencies = match oha_latencies(db) {
        Ok(l) => l,
        Err(e) => return fail(format!("reading oha's database {}: {e}", db.display())),
    };
    let steady: Vec<f64> = latencies
        .iter()
        .filter(|(scheduled, _)| *scheduled >= warmup)
        .map(|(_, latency)| *latency)
        .collect();
    let whole: Vec<f64> = latencies.iter().map(|(_, latency)| *latency).collect();
    let answered = whole.len();
    if steady.is_empty() {
        problems.push(format!(
            "no request was scheduled after the first {warmup} s"
        ));
    }
    let note = (!problems.is_empty()).then(|| problems.join("; "));
    let cell = |value: f64| Cell {
        value,
        note: note.clone(),
    };
    (
        [
            cell(rps),
            cell(percentile_ms(steady.clone(), 0.50)),
            cell(percentile_ms(steady, 0.99)),
            cell(percentile_ms(whole, 0.99)),
        ],
        answered,
    )
}

/// The server's CPU time per answered request (us) from two readings of
/// [`cpu_seconds`]; it carries the rate cell's note (errors in the run).
fn cpu_per_answer(
    pid: u32,
    before: Option<f64>,
    after: Option<f64>,
    answered: u64,
    rate: &Cell,
) -> Cell {
    match (before, after) {
        (Some(a), Some(b)) if answered > 0 => Cell {
            value: (b - a) / answered as f64 * 1e6,
            note: rate.note.clone(),
        },
        _ => Cell {
            value: f64::NAN,
            note: Some(format!("no CPU time for pid {pid} in /proc")),
        },
    }
}

/// `ouli-bench pace`'s JSON line: [achieved rate, p50, p99, whole-run
/// p99] (a note on each when requests failed or were not 2xx), the answers
/// counted, and the generator's own CPU per request (us).
fn parse_pace(out: &str) -> Result<([Cell; 4], u64, f64), String> {
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("no JSON in pace's output: {}", out.trim()))?;
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("pace output is not JSON ({e}): {line}"))?;
    let number = |key: &str| json[key].as_f64().unwrap_or(f64::NAN);
    let count = |key: &str| json[key].as_u64().unwrap_or(0);
    let mut problems = Vec::new();
    if count("failed") > 0 {
        problems.push(format!(
            "{} of {} requests failed (first: {})",
            count("failed"),
            count("scheduled"),
            json["first_failure"].as_str().unwrap_or("?")
        ));
    }
    if count("other_status") > 0 {
        problems.push(format!("{} non-2xx", count("other_status")));
    }
    let note = (!problems.is_empty()).then(|| problems.join("; "));
    let cell = |value: f64| Cell {
        value,
        note: note.clone(),
    };
    Ok((
        [
            cell(number("achieved_rps")),
            cell(number("p50_ms")),
            cell(number("p99_ms")),
            cell(number("p99_whole_ms")),
        ],
        count("answered_2xx") + count("other_status"),
        number("generator_cpu_us_per_request"),
    ))
}

/// The CPU time, user plus system, that process `pid` has used so far, in
/// seconds (`/proc/PID/stat`, in clock ticks of `getconf CLK_TCK`).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS_PER_SECOND.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// Every successful request in oha's database: (when it was scheduled,
/// seconds from the first schedule; its latency from that schedule, s).
fn oha_latencies(db: &Path) -> Result<Vec<(f64, f64)>, String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?;
    let mut statement = conn
        .prepare("SELECT COALESCE(start_latency_correction, start), end FROM oha")
        .map_err(|e| e.to_string())?;
    let rows = statement
        .query_map([], |row| Ok((row.get::<_, f64>(0)?, row.get::<_, f64>(1)?)))
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let origin = rows.iter().map(|(s, _)| *s).fold(f64::INFINITY, f64::min);
    Ok(rows
        .into_iter()
        .map(|(scheduled, end)| (scheduled - origin, end - scheduled))
        .collect())
}

/// The `q` quantile of `seconds`, in milliseconds (NaN when empty).
fn percentile_ms(mut seconds: Vec<f64>, q: f64) -> f64 {
    if seconds.is_empty() {
        return f64::NAN;
    }
    seconds.sort_by(f64::total_cmp);
    let rank = ((seconds.len() as f64 * q).ceil() as usize).clamp(1, seconds.len());
    seconds[rank - 1] * 1e3
}

fn parse_h2load(out: &str, log: &Path) -> [Cell; 3] {
    let mut rps = f64::NAN;
    let mut problems = Vec::new();
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            rps = rest
                .split(", ")
                .nth(1)
                .and_then(|s| s.strip_suffix(" req/s"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(", ") {
                let mut it = part.split_whitespace();
                let (Some(n), Some(what)) = (it.next(), it.next()) else {
                    continue;
                };
                if matches!(what, "failed" | "errored" | "timeout") && n != "0" {
                    problems.push(format!("{n} {what}"));
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            for part in rest.split(", ").skip(1) {
                if !part.starts_with("0 ") {
                    problems.push(part.to_owned());
                }
            }
        }
    }
    if rps.is_nan() {
        problems.push(format!("no req/s in h2load output: {}", out.trim()));
    }
    // Per-request log: start (us since epoch), status, duration (us).
    let mut durations: Vec<Duration> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<u64>().ok())
        .map(Duration::from_micros)
        .collect();
    durations.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let note = (!problems.is_empty()).then(|| problems.join("; "));
    [
        Cell {
            value: rps,
            note: note.clone(),
        },
        Cell {
            value: ms(probes::percentile(&durations, 50.0)),
            note: note.clone(),
        },
        Cell {
            value: ms(probes::percentile(&durations, 99.0)),
            note,
        },
    ]
}

// ---------------------------------------------------------------------------
// The run

fn write_config(path: &Path, target: SocketAddr) {
    let text = format!(
        "# The load bench's Ouli config (written by ouli-bench).\n\
         max_connections = 16384\n\
         shutdown_grace_ms = 1000\n\
         [[endpoints]]\n\
         source_port = 0\n\
         target_host = \"127.0.0.1\"\n\
         target_port = {}\n\
         on_repeat = \"repeat_last\"\n",
        target.port()
    );
    std::fs::write(path, text).expect("write config");
}

/// The procedures, in the order they run; each fills one or more metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proc2 {
    Idle,
    H1(u32),
    H1Large,
    Fixed,
    FixedOha,
    FixedFew,
    H2,
    H2Large,
    NewConn,
    Setup,
    Ws,
}

impl Proc2 {
    fn key(self) -> String {
        match self {
            Proc2::Idle => "idle".into(),
            Proc2::H1(c) => format!("h1-{c}"),
            Proc2::H1Large => "h1-10k".into(),
            Proc2::Fixed => "fixed-50k".into(),
            Proc2::FixedOha => "fixed-50k-oha".into(),
            Proc2::FixedFew => "fixed-50k-64".into(),
            Proc2::H2 => "h2".into(),
            Proc2::H2Large => "h2-10k".into(),
            Proc2::NewConn => "newconn".into(),
            Proc2::Setup => "setup".into(),
            Proc2::Ws => "ws".into(),
        }
    }

    /// A fixed-rate procedure's offered rate, its connections, and the
    /// figures it fills: achieved rate, p50 and p99 after the warm-up, the
    /// whole run's p99, and server CPU per request (what `Bench::pace` and
    /// `Bench::oha` return, in that order).
    fn fixed_rate(self) -> (u32, u32, [Metric; 5]) {
        match self {
            Proc2::FixedOha => (
                FIXED_RATE,
                FIXED_CONNS,
                [
                    Metric::FixedOhaRps,
                    Metric::FixedOhaP50,
                    Metric::FixedOhaP99,
                    Metric::FixedOhaP99Whole,
                    Metric::FixedOhaCpu,
                ],
            ),
            Proc2::FixedFew => (
                FIXED_RATE,
                FIXED_FEW_CONNS,
                [
                    Metric::FixedFewRps,
                    Metric::FixedFewP50,
                    Metric::FixedFewP99,
                    Metric::FixedFewP99Whole,
                    Metric::FixedFewCpu,
                ],
            ),
            _ => (
                FIXED_RATE,
                FIXED_CONNS,
                [
                    Metric::FixedRps,
                    Metric::FixedP50,
                    Metric::FixedP99,
                    Metric::FixedP99Whole,
                    Metric::FixedCpu,
                ],
            ),
        }
    }

    /// Record mode serves about 20k req/s (each request waits for its
    /// interaction to reach disk), so of the 50k fixed-rate runs it gets
    /// only the oha one (as in earlier tables): paced runs would only count
    /// the requests a saturated proxy never took.
    fn applies_to_record(self) -> bool {
        !matches!(
            self,
            Proc2::H1Large | Proc2::H2Large | Proc2::Ws | Proc2::Fixed | Proc2::FixedFew
        )
    }
}

/// Where a subject is served for one procedure.
struct Served {
    addr: SocketAddr,
    pid: u32,
}

pub fn run(args: RunArgs) {
    let nofile = raise_nofile();
    let seconds = args.seconds.unwrap_or(if args.smoke { 1 } else { 8 });
    let rounds = args.rounds.unwrap_or(if args.smoke { 1 } else { 2 }).max(1);
    let work = std::env::temp_dir().join(format!("ouli-load-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let me = std::env::current_exe().expect("own path");
    let mut b = Bench {
        args,
        seconds,
        rounds,
        work: work.clone(),
        me,
        commands: Vec::new(),
        warnings: Vec::new(),
        hyper: None,
        echo: None,
        results: Vec::new(),
        serial: 0,
    };
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "ouli-bench: {} s per load run, open-file limit {nofile}, work dir {}",
        seconds,
        work.display()
    );
    if nofile < 2 * IDLE_CONNS as u64 + 512 {
        b.warn(format!(
            "open-file limit {nofile} is too low for 4,096 connections"
        ));
    }

    // Upstreams.
    b.log_command(&b.me.display().to_string(), &["hyper".into()]);
    let hyper = Proc::start(Command::new(&b.me).arg("hyper"), &work.join("hyper.stderr"))
        .expect("start the hyper server");
    let echo = Proc::start(
        Command::new(&b.me).arg("ws-echo"),
        &work.join("ws-echo.stderr"),
    )
    .expect("start the WebSocket echo server");
    let hyper_addr = hyper.addr;
    let echo_addr = echo.addr;
    b.hyper = Some(hyper);
    b.echo = Some(echo);

    // Recording sets: generated HTTP recordings, plus one WebSocket echo
    // conversation recorded through `ouli record` (first runtime).
    let small = work.join("recordings-1");
    let large = work.join("recordings-10000");
    gen::write_set(&small, 1).expect("write the 1-recording set");
    gen::write_set(&large, LARGE_SET).expect("write the 10,000-recording set");
    let uris = work.join("uris-10000.txt");
    let mut text = String::new();
    for i in 0..LARGE_SET {
        let _ = writeln!(text, "{}", gen::item_path(i));
    }
    std::fs::write(&uris, text).expect("write the URI list");
    let lua = work.join("rotate-10000.lua");
    std::fs::write(
        &lua,
        format!(
            "-- Each request asks for the next of the {LARGE_SET} recorded paths.\n\
             local n = {LARGE_SET}\nlocal reqs = {{}}\nlocal i = 0\n\
             init = function(args)\n  for k = 0, n - 1 do reqs[k] = wrk.format(\"GET\", \"/item/\" .. k) end\n  \
             i = math.random(0, n - 1)\nend\n\
             request = function()\n  i = (i + 1) % n\n  return reqs[i]\nend\n"
        ),
    )
    .expect("write the wrk script");
    let ws_config = work.join("ws-record.toml");
    write_config(&ws_config, echo_addr);
    let (first_rt, first_bin) = b.args.ouli[0].clone();
    {
        let dir = work.join("ws-recording");
        let ouli = start_ouli(&mut b, &first_bin, "record", &ws_config, &dir, "ws-record")
            .expect("start ouli record for the WebSocket conversation");
        let r = probes::ws_run(ouli.addr, 1, WS_MESSAGES, None);
        let summary = ouli.stop(Duration::from_secs(30));
        let file = dir.join("ws.json");
        if r.errors > 0 || !file.exists() {
            panic!(
                "recording the WebSocket conversation through ouli ({first_rt}) failed: {r:?}, \
                 summary {summary:?}"
            );
        }
        std::fs::copy(&file, small.join("ws.json")).expect("copy ws.json");
        std::fs::copy(&file, large.join("ws.json")).expect("copy ws.json");
    }
    let record_config = work.join("record.toml");
    write_config(&record_config, hyper_addr);
    let replay_config = work.join("replay.toml");
    write_config(&replay_config, hyper_addr);

    // Replay servers stay up for the whole run (idle ones cost no CPU);
    // record servers are started fresh for each figure (their recording
    // file grows with every request).
    let runtimes = b.args.ouli.clone();
    let mut replay_small: Vec<Proc> = Vec::new();
    let mut replay_large: Vec<Proc> = Vec::new();
    for (rt, bin) in &runtimes {
        replay_small.push(
            start_ouli(
                &mut b,
                bin,
                "replay",
                &replay_config,
                &small,
                &format!("replay-1-{rt}"),
            )
            .expect("start ouli replay"),
        );
        replay_large.push(
            start_ouli(
                &mut b,
                bin,
                "replay",
                &replay_config,
                &large,
                &format!("replay-10k-{rt}"),
            )
            .expect("start ouli replay (10,000 recordings)"),
        );
    }
    let mut subjects = vec![Subject::Hyper];
    subjects.extend(runtimes.iter().map(|(rt, _)| Subject::Replay(rt.clone())));
    if !b.args.no_record {
        subjects.extend(runtimes.iter().map(|(rt, _)| Subject::Record(rt.clone())));
    }
    b.results = subjects
        .iter()
        .map(|s| (s.clone(), HashMap::new()))
        .collect();

    // Every replay server answers like hyper (status, length, body).
    let reference = probes::get(hyper_addr, gen::SINGLE_PATH).expect("hyper answers");
    for (i, (rt, _)) in runtimes.iter().enumerate() {
        for (proc_, path) in [
            (&replay_small[i], gen::SINGLE_PATH.to_owned()),
            (&replay_large[i], gen::item_path(4321)),
        ] {
            match probes::get(proc_.addr, &path) {
                Ok(a)
                    if a.status_line() == reference.status_line()
                        && a.body == reference.body
                        && a.head.len() == reference.head.len() => {}
                Ok(a) => b.warn(format!(
                    "replay {rt} answers {path} differently from hyper: {:?} vs {:?}",
                    a.head, reference.head
                )),
                Err(e) => b.warn(format!("replay {rt}: GET {path}: {e}")),
            }
        }
    }

    let procedures = [
        Proc2::Idle,
        Proc2::H1(64),
        Proc2::H1(1024),
        Proc2::H1(4096),
        Proc2::H1Large,
        Proc2::Fixed,
        Proc2::FixedOha,
        Proc2::FixedFew,
        Proc2::H2,
        Proc2::H2Large,
        Proc2::NewConn,
        Proc2::Setup,
        Proc2::Ws,
    ];
    let setup_n = if b.args.smoke { 300 } else { 2000 };
    let rounds = b.rounds;
    let runs = procedures.iter().flat_map(|p| {
        let n = if *p == Proc2::Idle { 1 } else { rounds };
        (0..n).map(move |round| (*p, round))
    });
    for (procedure, round) in runs {
        let key = procedure.key();
        if !b.args.only.is_empty() && !b.args.only.iter().any(|o| key.contains(o.as_str())) {
            continue;
        }
        if rounds > 1 {
            eprintln!("ouli-bench: {key}, round {} of {rounds}", round + 1);
        }
        for (si, subject) in subjects.iter().enumerate() {
            let mut record_proc = None;
            let served = match subject {
                Subject::Hyper => match procedure {
                    Proc2::Ws => Served {
                        addr: echo_addr,
                        pid: b.echo.as_ref().map_or(0, Proc::pid),
                    },
                    _ => Served {
                        addr: hyper_addr,
                        pid: b.hyper.as_ref().map_or(0, Proc::pid),
                    },
                },
                Subject::Replay(rt) => {
                    let i = runtimes.iter().position(|(r, _)| r == rt).expect("runtime");
                    let p = match procedure {
                        Proc2::H1Large | Proc2::H2Large => &replay_large[i],
                        _ => &replay_small[i],
                    };
                    Served {
                        addr: p.addr,
                        pid: p.pid(),
                    }
                }
                Subject::Record(rt) => {
                    if !procedure.applies_to_record() {
                        continue;
                    }
                    let bin = runtimes
                        .iter()
                        .find(|(r, _)| r == rt)
                        .map(|(_, b)| b.clone())
                        .expect("runtime");
                    b.serial += 1;
                    let dir = work.join(format!("record-{}", b.serial));
                    let p = match start_ouli(
                        &mut b,
                        &bin,
                        "record",
                        &record_config,
                        &dir,
                        &format!("record-{rt}-{key}"),
                    ) {
                        Ok(p) => p,
                        Err(e) => {
                            b.warn(format!("record {rt}: {e}"));
                            continue;
                        }
                    };
                    let s = Served {
                        addr: p.addr,
                        pid: p.pid(),
                    };
                    record_proc = Some((p, dir));
                    s
                }
            };
            eprintln!("ouli-bench: {key} / {}", subject.title());
            let cells: Vec<(Metric, Cell)> = match procedure {
                Proc2::Idle => {
                    let path = gen::SINGLE_PATH;
                    let cell = match probes::idle_kb(served.addr, served.pid, path, IDLE_CONNS) {
                        Ok(kb) => Cell {
                            value: kb,
                            note: None,
                        },
                        Err(e) => Cell {
                            value: f64::NAN,
                            note: Some(e),
                        },
                    };
                    vec![(Metric::IdleKb, cell)]
                }
                Proc2::H1(c) => {
                    let metric = match c {
                        64 => Metric::H1Rps64,
                        1024 => Metric::H1Rps1024,
                        _ => Metric::H1Rps4096,
                    };
                    vec![(metric, b.wrk(served.addr, c, gen::SINGLE_PATH, &[]))]
                }
                Proc2::H1Large => {
                    let script = lua.display().to_string();
                    vec![(
                        Metric::H1Rps10k,
                        b.wrk(served.addr, 64, "/", &["-s", &script]),
                    )]
                }
                Proc2::Fixed | Proc2::FixedOha | Proc2::FixedFew => {
                    let (rate, conns, metrics) = procedure.fixed_rate();
                    let cells = if procedure == Proc2::FixedOha {
                        b.oha(served.addr, served.pid, rate, conns)
                    } else {
                        b.pace(served.addr, served.pid, rate, conns)
                    };
                    metrics.into_iter().zip(cells).collect()
                }
                Proc2::H2 => {
                    let [rps, p50, p99] = b.h2load(served.addr, None);
                    vec![
                        (Metric::H2Rps, rps),
                        (Metric::H2P50, p50),
                        (Metric::H2P99, p99),
                    ]
                }
                Proc2::H2Large => {
                    let [rps, _, _] = b.h2load(served.addr, Some(&uris));
                    vec![(Metric::H2Rps10k, rps)]
                }
                Proc2::NewConn => vec![(
                    Metric::NewConns,
                    b.wrk(
                        served.addr,
                        64,
                        gen::SINGLE_PATH,
                        &["-H", "Connection: close"],
                    ),
                )],
                Proc2::Setup => {
                    b.log_command(
                        &b.me.display().to_string(),
                        &[
                            "setup".into(),
                            "--addr".into(),
                            served.addr.to_string(),
                            "--n".into(),
                            setup_n.to_string(),
                        ],
                    );
                    let setup = probes::setup_times(served.addr, gen::SINGLE_PATH, setup_n);
                    let us = |d: Duration| Cell {
                        value: d.as_secs_f64() * 1e6,
                        note: None,
                    };
                    let mut cells = vec![
                        (Metric::SetupFirstP50, us(setup.first_p50)),
                        (Metric::SetupP99, us(setup.first_p99)),
                        (Metric::SetupWarmP50, us(setup.warm_p50)),
                    ];
                    // In record mode a connection reads its second request
                    // only once the first exchange is on disk, so the warm
                    // exchange carries a store and "first - warm" says
                    // nothing about setup: left out (it showed 0).
                    if !matches!(subject, Subject::Record(_)) {
                        cells.insert(0, (Metric::SetupP50, us(setup.overhead())));
                    }
                    cells
                }
                Proc2::Ws => {
                    b.log_command(
                        &b.me.display().to_string(),
                        &[
                            "ws-client".into(),
                            "--addr".into(),
                            served.addr.to_string(),
                            format!("--conns={WS_CONNS}"),
                            format!("--messages={WS_MESSAGES}"),
                            format!("--seconds={seconds}"),
                        ],
                    );
                    let r = probes::ws_run(
                        served.addr,
                        WS_CONNS,
                        WS_MESSAGES,
                        Some(Duration::from_secs(seconds)),
                    );
                    vec![(
                        Metric::WsRoundTrips,
                        Cell {
                            value: r.round_trips as f64 / r.elapsed.as_secs_f64(),
                            note: (r.errors > 0)
                                .then(|| format!("{} failed conversations", r.errors)),
                        },
                    )]
                }
            };
            for (metric, cell) in cells {
                eprintln!(
                    "  {:<48} {}{}",
                    metric.label(),
                    metric.format(cell.value),
                    cell.note
                        .as_ref()
                        .map(|n| format!("  ({n})"))
                        .unwrap_or_default()
                );
                if let Some(n) = &cell.note {
                    b.warnings.push(format!(
                        "{} / {}: {n}",
                        subject.title(),
                        metric.label().trim()
                    ));
                }
                let kept = match b.results[si].1.remove(&metric) {
                    Some(earlier) => earlier.best_with(cell, metric.lower_is_better()),
                    None => cell,
                };
                b.results[si].1.insert(metric, kept);
            }
            if let Some((p, dir)) = record_proc {
                // Record mode finishes writing what it recorded before it
                // exits; a smoke run does not wait for that.
                let wait = Duration::from_secs(if b.args.smoke { 2 } else { 60 });
                let summary = p.stop(wait);
                check_summary(&mut b, subject, &key, &summary);
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    for (i, (rt, _)) in runtimes.iter().enumerate() {
        let s = replay_small.remove(0);
        let l = replay_large.remove(0);
        let _ = i;
        let subject = Subject::Replay(rt.clone());
        let summary = s.stop(Duration::from_secs(10));
        check_summary(&mut b, &subject, "1 recording", &summary);
        let summary = l.stop(Duration::from_secs(10));
        check_summary(&mut b, &subject, "10,000 recordings", &summary);
    }
    if let Some(h) = b.hyper.take() {
        h.stop(Duration::from_secs(2));
    }
    if let Some(e) = b.echo.take() {
        e.stop(Duration::from_secs(2));
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = report(&b, started.elapsed(), &load_before, &load_after);
    println!("{report}");
    if let Some(out) = &b.args.out {
        write_results(out, &report);
        eprintln!("ouli-bench: wrote {}", out.display());
    }
    let _ = std::fs::remove_dir_all(&work);
    if b.args.smoke {
        let problems = smoke_problems(&b);
        if !problems.is_empty() {
            eprintln!("ouli-bench: the smoke run FAILED:");
            for p in &problems {
                eprintln!("  - {p}");
            }
            std::process::exit(1);
        }
        eprintln!("ouli-bench: the smoke run took every figure, with no miss or error");
    }
}

/// What makes a smoke run fail: a figure that could not be taken, and any
/// error, miss or crash of hyper or a replay server. Record mode in front
/// of hyper must produce its figures, but a 1 s run at 4,096 connections
/// may time out a few of its requests, so its notes are reported only.
fn smoke_problems(b: &Bench) -> Vec<String> {
    let mut problems = Vec::new();
    for (subject, cells) in &b.results {
        for (metric, cell) in cells {
            if !cell.value.is_finite() {
                problems.push(format!(
                    "{} / {}: no figure ({})",
                    subject.title(),
                    metric.label().trim(),
                    cell.note.as_deref().unwrap_or("no reason given")
                ));
            }
        }
    }
    let record_titles: Vec<String> = b
        .results
        .iter()
        .filter(|(s, _)| matches!(s, Subject::Record(_)))
        .map(|(s, _)| format!("{} ", s.title()))
        .collect();
    for w in &b.warnings {
        if !record_titles.iter().any(|t| w.starts_with(t.as_str())) {
            problems.push(w.clone());
        }
    }
    problems
}

fn start_ouli(
    b: &mut Bench,
    bin: &Path,
    mode: &str,
    config: &Path,
    dir: &Path,
    tag: &str,
) -> Result<Proc, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let args = vec![
        mode.to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
        "--recording-dir".to_owned(),
        dir.display().to_string(),
    ];
    b.log_command("ouli", &args);
    let mut cmd = Command::new(bin);
    cmd.args(&args);
    Proc::start(&mut cmd, &b.work.join(format!("{tag}.stderr")))
}

/// Ouli's end-of-run summary: every replayed request must have hit.
fn check_summary(b: &mut Bench, subject: &Subject, what: &str, lines: &[String]) {
    let Some(stats) = lines.iter().find(|l| l.contains("interactions recorded:")) else {
        if b.args.smoke && matches!(subject, Subject::Record(_)) {
            // Stopped before it finished writing its recordings.
            return;
        }
        b.warn(format!(
            "{} ({what}): no end-of-run summary (did it crash?)",
            subject.title()
        ));
        return;
    };
    let count = |name: &str| -> u64 {
        stats
            .split_once(&format!("{name}: "))
            .and_then(|(_, rest)| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    for bad in [
        "missed",
        "not recorded",
        "rejected requests",
        "upstream errors",
        "refused",
    ] {
        let n = count(bad);
        if n > 0 {
            b.warn(format!(
                "{} ({what}): {bad}: {n} ({stats})",
                subject.title()
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// Output

fn value<'a>(b: &'a Bench, subject: &Subject, metric: Metric) -> Option<&'a Cell> {
    b.results
        .iter()
        .find(|(s, _)| s == subject)
        .and_then(|(_, m)| m.get(&metric))
}

fn report(b: &Bench, elapsed: Duration, load_before: &str, load_after: &str) -> String {
    let mut s = String::new();
    let title = if b.args.label.is_empty() {
        String::new()
    } else {
        format!(" ({})", b.args.label)
    };
    let _ = writeln!(
        s,
        "### Results{title}\n\n{} s per load run, best of {} round(s) per server{}; run took {:.0} s; \
         load average before: {}, after: {}.\n",
        b.seconds,
        b.rounds,
        if b.args.smoke { " (--smoke: checks that it works, figures are not meaningful)" } else { "" },
        elapsed.as_secs_f64(),
        load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        load_after.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    let subjects: Vec<Subject> = b.results.iter().map(|(s, _)| s.clone()).collect();
    let _ = write!(s, "| figure |");
    for subject in &subjects {
        let _ = write!(s, " {} |", subject.title());
    }
    let _ = write!(s, "\n|---|");
    for _ in &subjects {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    for metric in Metric::ALL {
        if subjects.iter().all(|sub| value(b, sub, metric).is_none()) {
            continue;
        }
        let base = value(b, &Subject::Hyper, metric).map(|c| c.value);
        let _ = write!(s, "| {} |", metric.label());
        for subject in &subjects {
            match value(b, subject, metric) {
                None => {
                    let _ = write!(s, " — |");
                }
                Some(c) => {
                    let mark = if c.note.is_some() { "!" } else { "" };
                    let ratio = match (subject, base) {
                        (Subject::Hyper, _) | (_, None) => String::new(),
                        (_, Some(base)) if base > 0.0 && c.value.is_finite() => {
                            format!(" ({:.2}×)", c.value / base)
                        }
                        _ => String::new(),
                    };
                    let _ = write!(s, " {}{mark}{ratio} |", metric.format(c.value));
                }
            }
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\nRatios are to the hyper column measured in the same run (for the WebSocket row, to the \
         tokio-tungstenite echo server: Ouli replays what that server answered). For latencies \
         and KB lower is better. `!`: the load generator reported errors or non-2xx answers \
         (see the notes).\n"
    );

    // Floors and targets, with hyper judged the same way beside them.
    let judged: Vec<&Subject> = subjects
        .iter()
        .filter(|s| matches!(s, Subject::Hyper | Subject::Replay(_)))
        .collect();
    if judged.len() > 1 {
        let _ = write!(s, "| floor / target |");
        for r in &judged {
            let _ = write!(s, " {} |", r.title());
        }
        let _ = write!(s, "\n|---|");
        for _ in &judged {
            let _ = write!(s, "---|");
        }
        s.push('\n');
        /// Whether a figure passes, given hyper's figure beside it.
        type Judge = fn(f64, f64) -> bool;
        type Check = (String, Metric, Judge);
        let mut checks: Vec<Check> = vec![(
            "floor: 10,000 new connections/s".into(),
            Metric::NewConns,
            |v, _| v >= 10_000.0,
        )];
        // The latency floors, for each fixed-rate run (steady state).
        // The oha run is shown beside them, not judged: its 1 ms pacing
        // sends 50 requests at once each millisecond (see `Bench::oha`).
        for (procedure, what) in [
            (Proc2::Fixed, "50k req/s"),
            (Proc2::FixedFew, "50k req/s over 64 conns"),
        ] {
            let [_, p50, p99, _, _] = procedure.fixed_rate().2;
            checks.push((
                format!("floor: p50 < 1 ms at {what} (after 1 s)"),
                p50,
                |v, _| v < 1.0,
            ));
            checks.push((
                format!("floor: p99 < 10 ms at {what} (after 1 s)"),
                p99,
                |v, _| v < 10.0,
            ));
        }
        let others: [(&str, Metric, Judge); 11] = [
            ("floor: < 32 KB per connection", Metric::IdleKb, |v, _| {
                v < 32.0
            }),
            (
                "floor: connection setup < 100 us",
                Metric::SetupP50,
                |v, _| v < 100.0,
            ),
            (
                "floor: 4,096 concurrent connections",
                Metric::H1Rps4096,
                |v, _| v > 0.0,
            ),
            (
                "target: HTTP/1.1 req/s >= 0.8x hyper (64)",
                Metric::H1Rps64,
                |v, h| v >= 0.8 * h,
            ),
            (
                "target: HTTP/1.1 req/s >= 0.8x hyper (1,024)",
                Metric::H1Rps1024,
                |v, h| v >= 0.8 * h,
            ),
            (
                "target: HTTP/1.1 req/s >= 0.8x hyper (4,096)",
                Metric::H1Rps4096,
                |v, h| v >= 0.8 * h,
            ),
            (
                "target: HTTP/1.1 req/s >= 0.8x hyper (10,000 recordings)",
                Metric::H1Rps10k,
                |v, h| v >= 0.8 * h,
            ),
            (
                "target: HTTP/2 req/s >= 0.8x hyper",
                Metric::H2Rps,
                |v, h| v >= 0.8 * h,
            ),
            (
                "target: HTTP/2 req/s >= 0.8x hyper (10,000 recordings)",
                Metric::H2Rps10k,
                |v, h| v >= 0.8 * h,
            ),
            (
                "target: new conn/s >= 0.8x hyper",
                Metric::NewConns,
                |v, h| v >= 0.8 * h,
            ),
            (
                "target: <= 4 KB per idle connection",
                Metric::IdleKb,
                |v, _| v <= 4.0,
            ),
        ];
        checks.extend(
            others
                .into_iter()
                .map(|(name, m, ok)| (name.to_owned(), m, ok)),
        );
        for (name, metric, ok) in checks {
            if judged.iter().all(|r| value(b, r, metric).is_none()) {
                continue;
            }
            let base = value(b, &Subject::Hyper, metric).map_or(f64::NAN, |c| c.value);
            let _ = write!(s, "| {name} |");
            for r in &judged {
                match value(b, r, metric) {
                    Some(c) if c.value.is_finite() => {
                        // A figure taken with errors does not pass.
                        let pass = ok(c.value, base) && c.note.is_none();
                        let _ = write!(s, " {} |", if pass { "pass" } else { "**MISS**" });
                    }
                    _ => {
                        let _ = write!(s, " — |");
                    }
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    if !b.warnings.is_empty() {
        let _ = writeln!(s, "Notes from this run:\n");
        let unique: BTreeSet<&String> = b.warnings.iter().collect();
        for w in unique {
            let w: String = w.chars().take(400).collect();
            let _ = writeln!(s, "- {}", w.replace('\n', " "));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "Commands (`$ADDR` is the server under test):\n\n```text");
    for c in &b.commands {
        let _ = writeln!(s, "{c}");
    }
    let _ = writeln!(s, "```");
    s
}

/// Replaces what lies between `<!-- results:start -->` and
/// `<!-- results:end -->` in `path` (creating the file if needed), so the
/// hand-written analysis around it survives a re-run.
fn write_results(path: &Path, report: &str) {
    const START: &str = "<!-- results:start -->";
    const END: &str = "<!-- results:end -->";
    let machine = machine_info();
    let block = format!("{START}\n{machine}\n{report}{END}");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(z)) if a < z => format!("{}{block}{}", &old[..a], &old[z + END.len()..]),
        _ => format!("# Ouli benchmarks\n\n{block}\n"),
    };
    std::fs::write(path, new).expect("write the results file");
}

fn machine_info() -> String {
    let sh = |cmd: &str| -> String {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
            .unwrap_or_default()
    };
    format!(
        "Machine: `nproc` = {}; {}; kernel {}; {}; wrk {}, h2load {}, oha {}.\n\n```text\n$ free -g\n{}\n```\n",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'"),
        sh("uname -r"),
        sh("date -u +'%Y-%m-%d %H:%M UTC'"),
        sh("wrk -v 2>&1 | head -1 | cut -d' ' -f2"),
        sh("h2load --version 2>&1 | head -1 | awk '{print $NF}'"),
        sh("oha --version 2>&1 | head -1 | awk '{print $NF}'"),
        sh("free -g"),
    )
}
