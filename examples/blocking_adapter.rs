//! A fourth Ouli adapter, on `std::net` and threads: no async runtime.
//!
//! Written only against the `ouli-core` crate docs, it is the proof that the
//! core needs nothing but bytes and a clock reading. It serves replay and
//! record for the endpoints of an `ouli.toml`:
//!
//! ```text
//! cargo run -p ouli --example blocking_adapter -- replay --config ouli.toml --recording-dir recordings
//! cargo run -p ouli --example blocking_adapter -- record --config ouli.toml --recording-dir recordings
//! ```
//!
//! The design: one thread per client connection runs the core's drain loop.
//! Reading is done by one small reader thread per socket (the client's, and
//! the upstream's while there is one), which sends what it read over a
//! channel and then waits for a grant before reading again. The connection
//! thread waits on that channel with `recv_timeout` until the core's next
//! deadline, feeds whatever arrived, and grants the next read only while the
//! core says it wants one (`wants_client_read` / `wants_upstream_read`): that
//! is the backpressure, and it bounds each socket to one buffer in flight.
//!
//! Upstream connections are not pooled (a `ReleaseUpstream` closes the
//! socket); that is where a pool would go. WebSocket needs no code of its
//! own here: after an upgrade, the frames flow through this same byte-moving
//! loop (as the core's WebSocket support lands, nothing here changes).

use ouli_adapter_common::config::{Config, EndpointConfig};
use ouli_adapter_common::endpoint::{load_auto, load_replay_index, proxy_settings};
use ouli_adapter_common::recorder::Recorder;
use ouli_adapter_common::recording_dir::RecordingDir;
use ouli_core::engine::ReplayIndex;
use ouli_core::proxy::{Connection, Mode, Output, ProxyEvent, ProxySettings, UpstreamFailure};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How often idle threads look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Size of one read.
const READ_BYTES: usize = 16 * 1024;
/// A peer that takes no bytes for this long is given up on, so a stuck
/// writer cannot hold up the shutdown forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one endpoint serves: the core's settings and where its upstream is.
pub struct Endpoint {
    /// The core's settings for every connection of this endpoint.
    pub settings: Arc<ProxySettings>,
    /// `host:port` to connect to in record mode.
    pub target: String,
    /// How long connecting to the upstream may take.
    pub connect_timeout: Duration,
}

impl Endpoint {
    /// The endpoint described by one `[[endpoints]]` table of the config.
    pub fn from_config(config: &Config, endpoint: &EndpointConfig, mode: Mode) -> Self {
        Endpoint {
            settings: Arc::new(proxy_settings(config, endpoint, mode)),
            target: endpoint.target_addr(),
            connect_timeout: config.upstream_connect_timeout,
        }
    }
}

/// Accepts connections on `listener` and serves each on its own thread until
/// `stop` is set; then every connection finishes the exchange in flight
/// (the core's `begin_shutdown`), and `serve` returns once all are closed.
/// Replay mode needs `index`; record mode stores through `recorder`; auto
/// mode needs both.
pub fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    index: Option<Arc<ReplayIndex>>,
    recorder: Option<Arc<Recorder>>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    // Non-blocking accept, so the loop can see the stop flag.
    listener.set_nonblocking(true)?;
    let mut workers: Vec<thread::JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _peer)) => {
                client.set_nonblocking(false)?;
                let _ = client.set_nodelay(true);
                let _ = client.set_write_timeout(Some(WRITE_TIMEOUT));
                let (endpoint, index, recorder, stop) = (
                    Arc::clone(&endpoint),
                    index.clone(),
                    recorder.clone(),
                    Arc::clone(&stop),
                );
                workers.push(thread::spawn(move || {
                    if let Err(e) = serve_connection(client, &endpoint, index, recorder, &stop) {
                        eprintln!("blocking_adapter: connection ended: {e}");
                    }
                }));
                workers.retain(|w| !w.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(STOP_POLL),
            // Out of file descriptors and similar: back off, never spin.
            Err(e) => {
                eprintln!("blocking_adapter: accept failed: {e}");
                thread::sleep(STOP_POLL);
            }
        }
    }
    drop(listener);
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// What the reader threads report. Upstream reports carry the generation of
/// the upstream socket they read, so reports from a released one are ignored.
enum Input {
    Client(Option<Vec<u8>>),
    Upstream(u64, Option<Vec<u8>>),
}

/// Reads `stream` on its own thread: sends each read (`None` for the end or
/// an error), then waits for a grant before the next one. Ends when the
/// stream ends, or when the grant or input channel is dropped.
fn spawn_reader(
    mut stream: TcpStream,
    inputs: SyncSender<Input>,
    wrap: impl Fn(Option<Vec<u8>>) -> Input + Send + 'static,
) -> SyncSender<()> {
    let (grant, granted): (SyncSender<()>, Receiver<()>) = mpsc::sync_channel(1);
    thread::spawn(move || {
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            let data = match stream.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => Some(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => None,
            };
            let end = data.is_none();
            if inputs.send(wrap(data)).is_err() || end || granted.recv().is_err() {
                return;
            }
        }
    });
    grant
}

/// The upstream connection of the exchange in progress, if any.
struct Upstream {
    generation: u64,
    stream: TcpStream,
    grant: SyncSender<()>,
    /// Whether the reader waits for a grant (it sent a read we consumed).
    wants_grant: bool,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Unblocks its reader thread, which then ends.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn connect(endpoint: &Endpoint) -> Result<TcpStream, UpstreamFailure> {
    let fail = |e: io::Error| UpstreamFailure::Connect(format!("{}: {e}", endpoint.target));
    let mut last = None;
    for addr in endpoint.target.to_socket_addrs().map_err(fail)? {
        match TcpStream::connect_timeout(&addr, endpoint.connect_timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = Some(UpstreamFailure::ConnectTimeout)
            }
            Err(e) => last = Some(fail(e)),
        }
    }
    Err(last.unwrap_or_else(|| fail(io::Error::other("no address"))))
}

/// Drives one client connection through the core until it closes.
fn serve_connection(
    mut client: TcpStream,
    endpoint: &Endpoint,
    index: Option<Arc<ReplayIndex>>,
    recorder: Option<Arc<Recorder>>,
    stop: &AtomicBool,
) -> io::Result<()> {
    let (inputs, arrived) = mpsc::sync_channel::<Input>(2);
    let client_grant = spawn_reader(client.try_clone()?, inputs.clone(), Input::Client);
    let mut client_wants_grant = false;
    let mut upstream: Option<Upstream> = None;
    let mut generation = 0u64;
    let mut shutdown_begun = false;
    let mut conn = Connection::new(Arc::clone(&endpoint.settings), index, Instant::now());
    conn.set_mask_seed(random_seed());
    let result = loop {
        // 1. Carry out everything the core asked for, in order.
        while let Some(output) = conn.poll_output() {
            match output {
                Output::ToClient(bytes) => client.write_all(&bytes)?,
                Output::OpenUpstream => {
                    upstream = None;
                    match connect(endpoint).and_then(|s| {
                        let reader = s.try_clone().map_err(|e| {
                            UpstreamFailure::Connect(format!("{}: {e}", endpoint.target))
                        })?;
                        Ok((s, reader))
                    }) {
                        Ok((stream, reader)) => {
                            generation += 1;
                            let g = generation;
                            let grant = spawn_reader(reader, inputs.clone(), move |d| {
                                Input::Upstream(g, d)
                            });
                            upstream = Some(Upstream {
                                generation,
                                stream,
                                grant,
                                wants_grant: false,
                            });
                            conn.upstream_connected(Instant::now());
                        }
                        Err(failure) => conn.upstream_failed(Instant::now(), failure),
                    }
                }
                Output::ToUpstream(bytes) => {
                    let written = upstream
                        .as_mut()
                        .is_some_and(|u| u.stream.write_all(&bytes).is_ok());
                    if !written {
                        upstream = None;
                        conn.handle_upstream_eof(Instant::now());
                    }
                }
                // No pool in this adapter: a released upstream is closed.
                Output::ReleaseUpstream { reusable: _ } => upstream = None,
                Output::Store {
                    test_name,
                    interaction,
                } => {
                    // On disk before the next input is fed.
                    if let Some(r) = &recorder {
                        if let Err(e) = r.store(&test_name, *interaction) {
                            eprintln!(
                                "blocking_adapter: cannot write recording {test_name:?}: {e}"
                            );
                        }
                    }
                }
                Output::Event(event) => log(&event),
                // Everything before it is written; the loop ends below once
                // the rest of the outputs (events) are drained.
                Output::CloseClient => {}
            }
        }
        if conn.is_closed() {
            break Ok(());
        }
        if stop.load(Ordering::SeqCst) && !shutdown_begun {
            shutdown_begun = true;
            conn.begin_shutdown(Instant::now());
            continue;
        }
        // 2. Grant the next reads the core wants (backpressure).
        if client_wants_grant && conn.wants_client_read() {
            client_wants_grant = false;
            let _ = client_grant.send(());
        }
        if let Some(u) = upstream.as_mut().filter(|_| conn.wants_upstream_read()) {
            if u.wants_grant {
                u.wants_grant = false;
                let _ = u.grant.send(());
            }
        }
        // 3. Wait for input or the deadline, whichever comes first.
        let now = Instant::now();
        let wait = conn
            .poll_timeout()
            .map_or(STOP_POLL, |at| at.saturating_duration_since(now))
            .min(STOP_POLL);
        match arrived.recv_timeout(wait) {
            Ok(Input::Client(Some(data))) => {
                client_wants_grant = true;
                conn.handle_client_bytes(Instant::now(), &data);
            }
            Ok(Input::Client(None)) => conn.handle_client_eof(Instant::now()),
            Ok(Input::Upstream(g, data)) => match upstream.as_mut() {
                Some(u) if u.generation == g => match data {
                    Some(data) => {
                        u.wants_grant = true;
                        conn.handle_upstream_bytes(Instant::now(), &data);
                    }
                    None => {
                        upstream = None;
                        conn.handle_upstream_eof(Instant::now());
                    }
                },
                _ => {} // from a released upstream
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        }
        // 4. Time passes for the core only through this call.
        conn.handle_timeout(Instant::now());
    };
    // Ends the client reader (blocked in read, or waiting for a grant).
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// A per-connection random seed from std alone: `RandomState` is randomly
/// keyed per process, and each instance differs.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now())
}

fn log(event: &ProxyEvent) {
    match event {
        ProxyEvent::Missed(report) => eprintln!("blocking_adapter: {}", report.to_text()),
        ProxyEvent::ClientError { status, reason }
        | ProxyEvent::UpstreamError { status, reason } => {
            eprintln!("blocking_adapter: {status}: {reason}")
        }
        ProxyEvent::NotRecorded { test_name, reason } => {
            eprintln!("blocking_adapter: not recorded ({test_name}): {reason}")
        }
        _ => {} // replayed, recorded, and anything newer: counters, not logs
    }
}

/// `blocking_adapter replay|record|auto --config FILE --recording-dir DIR`.
/// Runs until killed: every recording is written atomically as soon as its
/// exchange ends, so killing it loses nothing.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str =
        "usage: blocking_adapter replay|record|auto --config FILE --recording-dir DIR";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some("replay") => Mode::Replay,
        Some("record") => Mode::Record,
        Some("auto") => Mode::Auto,
        _ => return Err(USAGE.into()),
    };
    let (mut config_path, mut dir) = (None, None);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next()) {
            ("--config", Some(v)) => config_path = Some(v.clone()),
            ("--recording-dir", Some(v)) => dir = Some(v.clone()),
            _ => return Err(USAGE.into()),
        }
    }
    let (Some(config_path), Some(dir)) = (config_path, dir) else {
        return Err(USAGE.into());
    };
    let config = Config::load(config_path.as_ref())?;
    let dir = RecordingDir::new(dir);
    let (index, recorder) = match mode {
        Mode::Replay => (Some(Arc::new(load_replay_index(&dir)?)), None),
        Mode::Record => (None, Some(Arc::new(Recorder::new(dir)))),
        Mode::Auto => {
            let (index, recorder) = load_auto(&dir)?;
            (Some(Arc::new(index)), Some(Arc::new(recorder)))
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for ep in &config.endpoints {
        let listener = TcpListener::bind(ep.source_addr())?;
        eprintln!(
            "blocking_adapter: {mode:?} on {} for {}",
            listener.local_addr()?,
            ep.target_addr()
        );
        let endpoint = Arc::new(Endpoint::from_config(&config, ep, mode));
        let (index, recorder, stop) = (index.clone(), recorder.clone(), Arc::clone(&stop));
        servers.push(thread::spawn(move || {
            serve(listener, endpoint, index, recorder, stop)
        }));
    }
    for s in servers {
        s.join().map_err(|_| "server thread panicked")??;
    }
    // Stores go to journals next to the recording files; this writes them
    // into the files (dropping the recorder would too, without the error).
    if let Some(recorder) = recorder {
        recorder.finish()?;
    }
    Ok(())
}
