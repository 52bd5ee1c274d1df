//! `ouli-bench pace`: a fixed-rate (open-loop) HTTP/1.1 load generator on
//! one thread, for the load bench's latency floors.
//!
//! Why not only oha: at 50,000 req/s oha itself takes about a core of this
//! 2-core machine (its tokio + hyper client, and its result vector), so a
//! server's tail there mostly measures the fight for the second core; a
//! plain hyper server misses p99 < 10 ms that way. The issue's own
//! baseline (hyper's p99 1.5 ms at 50k) needs a lighter client. This one
//! keeps every connection open from before the first request, sends with
//! one `write` and reads with level-triggered epoll (no per-request
//! `epoll_ctl`), and paces with a 0.1 ms periodic timerfd instead of a 1 ms
//! timer wheel.
//!
//! Latency is measured the way `wrk2` and `oha --latency-correction` do:
//! from the moment a request was *scheduled* (start + k / rate), not from
//! when it went out. A request that waits for a free connection because the
//! server is slow is charged that wait (no coordinated omission).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

/// The epoll token of the pacing timer (connections use their index).
const TIMER_TOKEN: u64 = u64::MAX;
/// How much of an answer one connection buffers: the bench's answers are a
/// few hundred bytes; a larger one is an error, not a reason to grow.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;
/// Response headers parsed per answer.
const MAX_ANSWER_HEADERS: usize = 32;
/// The pacing timer's period. Requests go out when due at the first wake
/// after their scheduled time: a tick, or an answer arriving. Latency is
/// still counted from the scheduled time, so this adds at most a tick (on
/// average half of one, 0.05 ms) to the figures: it can only make a server
/// look slower.
const PACING_TICK: Duration = Duration::from_micros(100);
/// How long answers still out after the schedule ends are waited for.
pub const DRAIN: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Clone, Debug)]
pub struct PaceOptions {
    /// The server.
    pub addr: SocketAddr,
    /// The request target (`GET {path} HTTP/1.1`).
    pub path: String,
    /// Keep-alive connections, all opened before the first request.
    pub conns: usize,
    /// Requests scheduled per second, evenly spaced.
    pub rate: u32,
    /// How long requests are scheduled for.
    pub duration: Duration,
    /// Requests scheduled in this first part of the run are answered and
    /// counted but left out of the steady percentiles.
    pub warmup: Duration,
    /// After the last scheduled request, how long to wait for the answers
    /// still out before they count as failed.
    pub drain: Duration,
}

/// What a run measured. Latencies are from each request's scheduled time.
#[derive(Clone, Debug, Default)]
pub struct PaceReport {
    /// Requests scheduled (rate x duration).
    pub scheduled: u64,
    /// Answers with a 2xx status.
    pub answered_2xx: u64,
    /// Answers with another status.
    pub other_status: u64,
    /// Requests that got no complete answer (connection closed or broken,
    /// an unparsable or oversized answer, or still out after the drain).
    pub failed: u64,
    /// Connections opened again after the server closed or broke one.
    pub reconnects: u64,
    /// From the first scheduled request to the last answer.
    pub elapsed: Duration,
    /// Latencies (ns) of the requests scheduled after the warm-up.
    pub steady_ns: Vec<u64>,
    /// Latencies (ns) of every answered request.
    pub all_ns: Vec<u64>,
    /// How late requests went out after their scheduled time (ns), p99:
    /// the pacing tick and the loop's own work, plus any wait for a free
    /// connection (so it only isolates the generator when the server keeps
    /// up).
    pub send_lag_p99_ns: u64,
    /// Seconds of CPU (user + system) this process used during the run.
    pub cpu_seconds: f64,
    /// The first failure seen, to explain `failed`.
    pub first_failure: Option<String>,
}

impl PaceReport {
    /// Answers per second over the run.
    pub fn achieved_rate(&self) -> f64 {
        (self.answered_2xx + self.other_status) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as one JSON object (what `ouli-bench pace` prints and
    /// the run module reads): counts, rates, and latencies in ms.
    pub fn into_json(mut self) -> serde_json::Value {
        let answered = self.answered_2xx + self.other_status;
        serde_json::json!({
            "scheduled": self.scheduled,
            "answered_2xx": self.answered_2xx,
            "other_status": self.other_status,
            "failed": self.failed,
            "reconnects": self.reconnects,
            "first_failure": self.first_failure,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "achieved_rps": self.achieved_rate(),
            "p50_ms": quantile_ms(&mut self.steady_ns, 0.50),
            "p99_ms": quantile_ms(&mut self.steady_ns, 0.99),
            "max_ms": quantile_ms(&mut self.steady_ns, 1.0),
            "p99_whole_ms": quantile_ms(&mut self.all_ns, 0.99),
            "send_lag_p99_ms": self.send_lag_p99_ns as f64 / 1e6,
            "generator_cpu_us_per_request": self.cpu_seconds * 1e6 / answered.max(1) as f64,
        })
    }
}

/// The `q` quantile of `ns` (sorted in place), in milliseconds; NaN when
/// empty. Nearest-rank, as `percentile_ms` in the run module.
pub fn quantile_ms(ns: &mut [u64], q: f64) -> f64 {
    if ns.is_empty() {
        return f64::NAN;
    }
    ns.sort_unstable();
    let rank = ((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len());
    ns[rank - 1] as f64 / 1e6
}

/// One keep-alive connection and the request it has out, if any.
struct Conn {
    stream: TcpStream,
    /// When the request now out was scheduled.
    out: Option<Instant>,
    /// Request bytes not yet written (a short write; rare).
    unsent: usize,
    answer: Vec<u8>,
}

/// How a read on a connection ended.
enum Answer {
    /// More bytes are needed.
    Partial,
    /// A whole answer with this status.
    Complete(u16),
}

/// Parses what `buf` holds of one answer. Only `Content-Length` framing is
/// supported: the bench's servers all use it.
fn parse_answer(buf: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Answer::Partial),
        Err(e) => return Err(format!("unparsable answer: {e}")),
    };
    let mut body_len = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a chunked answer (only Content-Length is supported)".into());
        }
    }
    let body_len = body_len.ok_or("an answer without Content-Length")?;
    let status = response.code.unwrap_or(0);
    match buf.len().cmp(&(head_len + body_len)) {
        std::cmp::Ordering::Less => Ok(Answer::Partial),
        std::cmp::Ordering::Equal => Ok(Answer::Complete(status)),
        std::cmp::Ordering::Greater => Err("bytes after the answer (none were asked for)".into()),
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Runs the schedule against `opts.addr` and returns what it measured.
/// Errors only when it cannot start (connect, epoll, timerfd); failures of
/// single requests are counted in the report.
pub fn run(opts: &PaceOptions) -> io::Result<PaceReport> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ouli-bench-pace\r\n\r\n",
        opts.path, opts.addr
    )
    .into_bytes();
    let poll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    epoll::add(
        &poll,
        &timer,
        epoll::EventData::new_u64(TIMER_TOKEN),
        epoll::EventFlags::IN,
    )?;
    let mut conns = Vec::with_capacity(opts.conns);
    for i in 0..opts.conns {
        let stream = connect(opts.addr)?;
        epoll::add(
            &poll,
            stream.as_fd(),
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )?;
        conns.push(Conn {
            stream,
            out: None,
            unsent: 0,
            answer: Vec::with_capacity(1024),
        });
    }
    // Free connections, used last-in first-out (warm caches, as a
    // client's pool would).
    let mut idle: Vec<usize> = (0..opts.conns).rev().collect();

    let rate = u64::from(opts.rate.max(1));
    let total = rate * opts.duration.as_nanos() as u64 / 1_000_000_000;
    let mut report = PaceReport {
        scheduled: total,
        all_ns: Vec::with_capacity(total as usize),
        steady_ns: Vec::with_capacity(total as usize),
        ..PaceReport::default()
    };
    let mut lags: Vec<u64> = Vec::with_capacity(total as usize);
    // One periodic tick paces every send (see PACING_TICK): arming a
    // one-shot timer per request costs a hardware-timer reprogramming each,
    // a VM exit on this machine (43 % of the generator's CPU when tried).
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: PACING_TICK.as_nanos() as i64,
    };
    timerfd_settime(
        &timer,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: tick,
            it_value: tick,
        },
    )?;
    let cpu_before = super::run::cpu_seconds(std::process::id());
    // The connections settle (the server accepts them) before the first
    // request is scheduled.
    let start = Instant::now() + Duration::from_millis(100);
    let steady_from = start + opts.warmup;
    let give_up = start + opts.duration + opts.drain;
    let scheduled_at = |k: u64| start + Duration::from_nanos(k * 1_000_000_000 / rate);
    let mut next: u64 = 0;
    let mut out = 0usize;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS_PER_WAIT);
    let mut last_answer = start;

    loop {
        let now = Instant::now();
        // Everything due goes out now, each on a free connection.
        while next < total {
            let due = scheduled_at(next);
            if due > now {
                break;
            }
            let Some(i) = idle.pop() else { break };
            lags.push((now - due).as_nanos() as u64);
            next += 1;
            let c = &mut conns[i];
            c.out = Some(due);
            c.answer.clear();
            match (&c.stream).write(&request) {
                Ok(n) if n == request.len() => {}
                Ok(n) => {
                    c.unsent = request.len() - n;
                    watch(&poll, c, i, true)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.unsent = request.len();
                    watch(&poll, c, i, true)?;
                }
                Err(e) => {
                    // The server broke it while it was idle: this request
                    // is lost, and a new connection takes its place.
                    c.out = None;
                    fail(&mut report, format!("send: {e}"));
                    report.reconnects += 1;
                    reopen(&poll, &mut conns, i, opts.addr)?;
                    idle.push(i);
                    continue;
                }
            }
            out += 1;
        }
        if next >= total && out == 0 {
            break;
        }
        if now >= give_up {
            // Requests scheduled but never sent waited for a connection
            // that never came free: the server fell behind the rate.
            let unsent = total - next;
            for _ in 0..out + unsent as usize {
                fail(
                    &mut report,
                    format!(
                        "no answer within {:?} after the schedule ended ({unsent} never \
                         went out: every connection was waiting for an answer)",
                        opts.drain
                    ),
                );
            }
            break;
        }
        events.clear();
        match epoll::wait(&poll, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        for event in events.iter() {
            // Copied out: the event struct is packed on x86-64.
            let (token, flags) = (event.data.u64(), { event.flags });
            if token == TIMER_TOKEN {
                let mut expirations = [0u8; 8];
                let _ = rustix::io::read(&timer, &mut expirations);
                continue;
            }
            let i = token as usize;
            let c = &mut conns[i];
            if c.unsent > 0 && flags.contains(epoll::EventFlags::OUT) {
                match (&c.stream).write(&request[request.len() - c.unsent..]) {
                    Ok(n) => c.unsent -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        out -= 1;
                        c.out = None;
                        fail(&mut report, format!("send: {e}"));
                        report.reconnects += 1;
                        reopen(&poll, &mut conns, i, opts.addr)?;
                        idle.push(i);
                        continue;
                    }
                }
                if c.unsent == 0 {
                    watch(&poll, c, i, false)?;
                }
            }
            if !flags
                .intersects(epoll::EventFlags::IN | epoll::EventFlags::ERR | epoll::EventFlags::HUP)
            {
                continue;
            }
            match read_answer(c) {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let done = Instant::now();
                    let due = c.out.take().expect("an answer to a request that is out");
                    let ns = (done - due).as_nanos() as u64;
                    report.all_ns.push(ns);
                    if due >= steady_from {
                        report.steady_ns.push(ns);
                    }
                    if (200..300).contains(&status) {
                        report.answered_2xx += 1;
                    } else {
                        report.other_status += 1;
                    }
                    last_answer = done;
                    out -= 1;
                    idle.push(i);
                }
                Err(why) => {
                    // An idle connection is in `idle` already; one with a
                    // request out goes back once it is replaced.
                    let was_out = c.out.take().is_some();
                    if was_out {
                        out -= 1;
                        fail(&mut report, why);
                    }
                    report.reconnects += 1;
                    reopen(&poll, &mut conns, i, opts.addr)?;
                    if was_out {
                        idle.push(i);
                    }
                }
            }
        }
    }
    report.elapsed = last_answer.saturating_duration_since(start);
    report.cpu_seconds = match (cpu_before, super::run::cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    lags.sort_unstable();
    report.send_lag_p99_ns = lags
        .get(((lags.len() as f64 * 0.99) as usize).min(lags.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    Ok(report)
}

/// Sets what epoll reports for connection `i`: always its answers, and
/// room to write while part of a request is still unsent.
fn watch(poll: &impl AsFd, c: &Conn, i: usize, unsent: bool) -> io::Result<()> {
    let mut flags = epoll::EventFlags::IN;
    if unsent {
        flags |= epoll::EventFlags::OUT;
    }
    epoll::modify(
        poll,
        c.stream.as_fd(),
        epoll::EventData::new_u64(i as u64),
        flags,
    )?;
    Ok(())
}

/// Counts one request that got no answer, keeping the first reason.
fn fail(report: &mut PaceReport, why: String) {
    report.failed += 1;
    report.first_failure.get_or_insert(why);
}

/// Reads what connection `c` has; `Ok(Some(status))` once its answer is
/// whole. An end of stream, a read error, or an answer that breaks the
/// rules is an `Err` explaining it.
fn read_answer(c: &mut Conn) -> Result<Option<u16>, String> {
    let mut chunk = [0u8; 4096];
    loop {
        match (&c.stream).read(&mut chunk) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => {
                if c.out.is_none() {
                    return Err("bytes from the server with no request out".into());
                }
                if c.answer.len() + n > MAX_ANSWER_BYTES {
                    return Err(format!("an answer over {MAX_ANSWER_BYTES} bytes"));
                }
                c.answer.extend_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    match parse_answer(&c.answer)? {
        Answer::Partial => Ok(None),
        Answer::Complete(status) => Ok(Some(status)),
    }
}

/// Replaces connection `i` with a new one (the server closed or broke it).
fn reopen(poll: &impl AsFd, conns: &mut [Conn], i: usize, addr: SocketAddr) -> io::Result<()> {
    let stream = connect(addr)?;
    epoll::add(
        poll,
        stream.as_fd(),
        epoll::EventData::new_u64(i as u64),
        epoll::EventFlags::IN,
    )?;
    // Dropping the old stream closes it, which also takes it out of epoll.
    conns[i] = Conn {
        stream,
        out: None,
        unsent: 0,
        answer: Vec::with_capacity(1024),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_whole_only_with_its_whole_body() {
        let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..whole.len() {
            assert!(matches!(parse_answer(&whole[..cut]), Ok(Answer::Partial)));
        }
        assert!(matches!(parse_answer(whole), Ok(Answer::Complete(200))));
        let mut more = whole.to_vec();
        more.push(b'x');
        assert!(parse_answer(&more).is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }

    /// A local server: each connection gets a thread that answers every
    /// request head it reads, and closes after `answers_per_conn` answers.
    fn serve(answers_per_conn: usize) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    let mut answered = 0;
                    while answered < answers_per_conn {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).is_err() {
                                return;
                            }
                            answered += 1;
                        }
                    }
                });
            }
        });
        addr
    }

    fn options(addr: SocketAddr) -> PaceOptions {
        PaceOptions {
            addr,
            path: "/bench".into(),
            conns: 4,
            rate: 2000,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
            drain: Duration::from_secs(5),
        }
    }

    #[test]
    fn every_scheduled_request_is_answered_and_timed() {
        let report = run(&options(serve(usize::MAX))).expect("run");
        assert_eq!(report.scheduled, 1000);
        assert_eq!(report.answered_2xx, 1000, "{report:?}");
        assert_eq!((report.failed, report.other_status), (0, 0));
        assert_eq!(report.all_ns.len(), 1000);
        // Scheduled after the 0.1 s warm-up: 800 of them.
        assert_eq!(report.steady_ns.len(), 800);
        let json = report.into_json();
        assert_eq!(json["answered_2xx"], 1000);
        assert!(json["p99_ms"].as_f64().is_some());
    }

    #[test]
    fn a_server_that_closes_connections_costs_requests_not_the_run() {
        // Each connection answers 10 requests and then closes: pace opens
        // new ones and counts a request lost only when it was out.
        let report = run(&options(serve(10))).expect("run");
        assert_eq!(
            report.answered_2xx + report.failed,
            report.scheduled,
            "{report:?}"
        );
        assert!(report.answered_2xx >= 10, "{report:?}");
        // No connection answered more than 10 (4 were opened up front).
        assert!(
            report.reconnects + 4 >= report.answered_2xx / 10,
            "{report:?}"
        );
    }

    #[test]
    fn an_answer_over_the_limit_is_an_error_not_a_bigger_buffer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {MAX_ANSWER_BYTES}\r\n\r\n");
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&vec![b'x'; MAX_ANSWER_BYTES]);
            s
        });
        let mut c = Conn {
            stream: connect(addr).expect("connect"),
            out: Some(Instant::now()),
            unsent: 0,
            answer: Vec::new(),
        };
        let _keep_open = server.join().expect("server");
        let why = loop {
            match read_answer(&mut c) {
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Ok(Some(status)) => panic!("a whole answer ({status}) over the limit"),
                Err(why) => break why,
            }
        };
        assert!(why.contains("an answer over"), "{why}");
        assert!(c.answer.len() <= MAX_ANSWER_BYTES);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut ns: Vec<u64> = (1..=100).rev().map(|v| v * 1_000_000).collect();
        assert_eq!(quantile_ms(&mut ns, 0.5), 50.0);
        assert_eq!(quantile_ms(&mut ns, 0.99), 99.0);
        assert!(quantile_ms(&mut [], 0.5).is_nan());
    }
}
