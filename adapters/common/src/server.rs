//! The proxy server, written once over [`Runtime`]: binding, the accept loop
//! with its connection limit, graceful shutdown, and an in-process
//! [`TestProxy`]. Each adapter crate names these types for its runtime, e.g.
//! `ouli_tokio::Proxy = Proxy<Tokio>`.

use crate::buffer_pool::BufferPool;
use crate::config::{Config, EndpointConfig, SourceType};
use crate::driver::{accept, serve};
use crate::endpoint::{load_auto, load_replay_index, proxy_settings};
use crate::recorder::{RecordWriter, Recorder};
use crate::recording_dir::{LoadError, RecordingDir};
use crate::runtime::Runtime;
use crate::stats::{Stats, StatsSnapshot};
use crate::sync::{race, Gauge, Latch};
use crate::tcp::{bind_listener, literal_addr, TcpTuning};
use crate::tls::{ListenerTls, LocalCa, UpstreamTls};
use crate::upstream::{InFlightLimit, UpstreamPool};
use ouli_core::engine::{ReplayIndex, TestUsage};
use ouli_core::proxy::{Mode, ProxySettings};
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The answer to a connection past `max_connections`, written without
/// waiting before the connection is closed. The core writes it: adapters
/// never produce protocol bytes themselves.
pub static LIMIT_RESPONSE: std::sync::LazyLock<bytes::Bytes> = std::sync::LazyLock::new(|| {
    ouli_core::proxy::refusal_response(503, "connection limit reached (max_connections), try again")
});

/// Entry point: `Proxy::builder(config, mode, dir).bind().await?.run(shutdown).await`.
pub struct Proxy<R>(PhantomData<fn() -> R>);

impl<R: Runtime> Proxy<R> {
    /// Starts configuring a proxy for `config`, in `mode`, with recordings under `recording_dir`.
    pub fn builder(
        config: Config,
        mode: Mode,
        recording_dir: impl Into<PathBuf>,
    ) -> ProxyBuilder<R> {
        ProxyBuilder {
            config,
            mode,
            recording_dir: recording_dir.into(),
            runtime: PhantomData,
        }
    }
}

/// A proxy being configured.
pub struct ProxyBuilder<R> {
    config: Config,
    mode: Mode,
    recording_dir: PathBuf,
    runtime: PhantomData<fn() -> R>,
}

/// Why a proxy could not start.
#[derive(Debug)]
pub enum StartError {
    /// The recordings could not be loaded (replay mode).
    Load(LoadError),
    /// A listener could not bind.
    Bind {
        /// The address.
        addr: String,
        /// The reason.
        source: io::Error,
    },
    /// An endpoint's TLS settings could not be used (a certificate, key or
    /// CA file, or the generated certificate).
    Tls {
        /// The endpoint's listening address.
        addr: String,
        /// The reason, naming the file or field.
        message: String,
    },
    /// The recording writer's thread could not be started (record and auto
    /// modes).
    RecordWriter(io::Error),
    /// An endpoint's upstream is its own listening address (record and auto
    /// modes): every forwarded request would come back in and be forwarded
    /// again, until the in-flight limit answered 503.
    ForwardsToItself {
        /// The endpoint's listening address (as bound).
        addr: SocketAddr,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Load(e) => write!(f, "cannot load recordings: {e}"),
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Tls { addr, message } => write!(f, "endpoint {addr}: TLS: {message}"),
            StartError::RecordWriter(e) => {
                write!(f, "cannot start the thread that writes recordings: {e}")
            }
            StartError::ForwardsToItself { addr } => write!(
                f,
                "endpoint {addr} forwards to its own listening address: its target_host and \
                 target_port must name the upstream, not Ouli"
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// State shared by all connections of a proxy.
pub(crate) struct Shared {
    pub(crate) stats: Arc<Stats>,
    pub(crate) recorder: Option<Arc<Recorder>>,
    /// Stores for the connections' tasks, on the recorder's own thread.
    pub(crate) record_writer: Option<RecordWriter>,
    pub(crate) index: Option<Arc<ReplayIndex>>,
    pub(crate) buffers: BufferPool,
    pub(crate) in_flight: InFlightLimit,
    /// Open client connections.
    connections: Arc<Gauge>,
    max_connections: usize,
    /// Recordings being written.
    pub(crate) stores: Arc<Gauge>,
    tuning: TcpTuning,
    /// Set when the shutdown starts: stop accepting, finish what is in flight.
    pub(crate) shutdown: Latch,
    /// Set when the grace period is over: drop every connection.
    force: Latch,
}

/// One endpoint's core settings, its upstream pool, and its listener's
/// TLS configuration (`source_type = "https"`).
pub(crate) struct Endpoint<R: Runtime> {
    pub(crate) settings: Arc<ProxySettings>,
    pub(crate) pool: UpstreamPool<R>,
    pub(crate) listener_tls: Option<ListenerTls>,
}

impl<R: Runtime> Endpoint<R> {
    fn new(
        config: &Config,
        endpoint: &EndpointConfig,
        mode: Mode,
        listener_tls: Option<ListenerTls>,
        upstream_tls: Option<UpstreamTls>,
    ) -> Self {
        Endpoint {
            settings: Arc::new(proxy_settings(config, endpoint, mode)),
            pool: UpstreamPool::new(
                endpoint.target_host.clone(),
                endpoint.target_port,
                config.upstream_connect_timeout,
                config.max_upstream_idle_per_endpoint,
                TcpTuning::from_config(config),
                upstream_tls,
            ),
            listener_tls,
        }
    }
}

/// The TLS configurations of every endpoint, in config order: the listener
/// side and the upstream side. The CA for listeners without certificate
/// files is generated once, written to `tls_dir` (default: the recording
/// dir), and returned.
#[allow(clippy::type_complexity)]
fn tls_settings(
    config: &Config,
    recording_dir: &Path,
) -> Result<
    (
        Vec<(Option<ListenerTls>, Option<UpstreamTls>)>,
        Option<LocalCa>,
    ),
    StartError,
> {
    let mut local_ca: Option<LocalCa> = None;
    let mut out = Vec::with_capacity(config.endpoints.len());
    for endpoint in &config.endpoints {
        let failed = |message: String| StartError::Tls {
            addr: endpoint.source_addr(),
            message,
        };
        let listener = match (
            endpoint.source_type,
            &endpoint.source_cert_file,
            &endpoint.source_key_file,
        ) {
            (SourceType::Http, _, _) => None,
            (SourceType::Https, Some(cert), Some(key)) => {
                Some(ListenerTls::from_pem_files(cert, key).map_err(|e| failed(e.to_string()))?)
            }
            (SourceType::Https, _, _) => {
                let ca = match &mut local_ca {
                    Some(ca) => ca,
                    None => {
                        let mut ca = LocalCa::generate().map_err(|e| failed(e.to_string()))?;
                        let dir = config.tls_dir.as_deref().unwrap_or(recording_dir);
                        let path = ca.write_to(dir).map_err(|e| {
                            failed(format!(
                                "cannot write the generated CA certificate to {}: {e}",
                                dir.join(crate::tls::CA_FILE_NAME).display()
                            ))
                        })?;
                        tracing::info!(
                            "generated a TLS certificate for {}; clients trust it with the CA \
                             certificate written to {}",
                            crate::tls::LOCAL_NAMES.join(", "),
                            path.display()
                        );
                        local_ca.insert(ca)
                    }
                };
                Some(ca.listener().map_err(|e| failed(e.to_string()))?)
            }
        };
        let upstream = UpstreamTls::for_endpoint(endpoint).map_err(|e| failed(e.to_string()))?;
        if upstream.as_ref().is_some_and(UpstreamTls::is_insecure) {
            tracing::warn!(
                "endpoints {} -> {}: insecure_skip_verify_upstream_tls = true: the upstream's \
                 certificate is NOT verified; anyone on the path can read and change the traffic",
                endpoint.source_addr(),
                endpoint.target_addr()
            );
        }
        out.push((listener, upstream));
    }
    Ok((out, local_ca))
}

impl<R: Runtime> ProxyBuilder<R> {
    /// Loads recordings (replay mode) and binds every endpoint's listener.
    pub async fn bind(self) -> Result<BoundProxy<R>, StartError> {
        let config = self.config;
        let (tls, local_ca) = tls_settings(&config, &self.recording_dir)?;
        let dir = RecordingDir::new(self.recording_dir);
        let (index, recorder) = match self.mode {
            Mode::Replay => (
                Some(Arc::new(load_replay_index(&dir).map_err(StartError::Load)?)),
                None,
            ),
            Mode::Record => (None, Some(Arc::new(Recorder::new(dir)))),
            // Replays what is recorded and records what is not.
            Mode::Auto => {
                // New interactions are appended to the tests' recordings.
                let (index, recorder) = load_auto(&dir).map_err(StartError::Load)?;
                (Some(Arc::new(index)), Some(Arc::new(recorder)))
            }
        };
        let record_writer = match &recorder {
            Some(recorder) => {
                Some(RecordWriter::start(Arc::clone(recorder)).map_err(StartError::RecordWriter)?)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            stats: Arc::new(Stats::default()),
            recorder,
            record_writer,
            index,
            buffers: BufferPool::new(),
            in_flight: InFlightLimit::new(
                config.max_upstream_in_flight,
                config.upstream_in_flight_timeout,
            ),
            connections: Gauge::new(),
            max_connections: config.max_connections,
            stores: Gauge::new(),
            tuning: TcpTuning::from_config(&config),
            shutdown: Latch::new(),
            force: Latch::new(),
        });
        let mut listeners = Vec::new();
        for (endpoint, (listener_tls, upstream_tls)) in config.endpoints.iter().zip(tls) {
            let listener = bind_listener(&endpoint.source_host, endpoint.source_port)
                .and_then(R::listener)
                .map_err(|source| StartError::Bind {
                    addr: endpoint.source_addr(),
                    source,
                })?;
            if self.mode != Mode::Replay {
                let bound = R::local_addr(&listener).map_err(|source| StartError::Bind {
                    addr: endpoint.source_addr(),
                    source,
                })?;
                if forwards_to(bound, &endpoint.target_host, endpoint.target_port) {
                    return Err(StartError::ForwardsToItself { addr: bound });
                }
            }
            let endpoint = Arc::new(Endpoint::new(
                &config,
                endpoint,
                self.mode,
                listener_tls,
                upstream_tls,
            ));
            listeners.push((listener, endpoint));
        }
        Ok(BoundProxy {
            listeners,
            shared,
            shutdown_grace: config.shutdown_grace,
            local_ca: local_ca.map(Arc::new),
        })
    }
}

/// Whether `target_host:target_port` names the listener bound at `bound`:
/// the same port, and the same address, or a loopback or unspecified
/// address of the same family when it listens on every address (an
/// unspecified destination means this host). A listener on 127.0.0.1 does
/// not take connections to 127.0.0.2, so other loopback addresses are not
/// a loop. Host names other than `localhost` are not resolved here (that
/// would block), nor are this host's other interface addresses listed.
fn forwards_to(bound: SocketAddr, target_host: &str, target_port: u16) -> bool {
    if bound.port() != target_port {
        return false;
    }
    let target_ips: Vec<IpAddr> = if target_host.eq_ignore_ascii_case("localhost") {
        vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(Ipv6Addr::LOCALHOST),
        ]
    } else {
        match literal_addr(target_host, target_port) {
            Some(addr) => vec![addr.ip()],
            None => return false,
        }
    };
    let listen = bound.ip();
    target_ips.iter().any(|&target| {
        let same_family = listen.is_ipv4() == target.is_ipv4();
        target == listen
            || (same_family
                && listen.is_unspecified()
                && (target.is_loopback() || target.is_unspecified()))
            || (same_family && target.is_unspecified() && listen.is_loopback())
    })
}

/// A proxy whose listeners are bound; [`BoundProxy::run`] serves.
pub struct BoundProxy<R: Runtime> {
    listeners: Vec<(R::Listener, Arc<Endpoint<R>>)>,
    shared: Arc<Shared>,
    shutdown_grace: Duration,
    local_ca: Option<Arc<LocalCa>>,
}

/// What a run did, returned by [`BoundProxy::run`].
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The counters at the end.
    pub stats: StatsSnapshot,
    /// Replay and auto modes: per test, hits, misses and the recorded
    /// interactions never used (see [`crate::report`]).
    pub usage: Vec<TestUsage>,
    /// Connections still open when the shutdown grace period ran out.
    pub forced_connections: usize,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.stats)?;
        crate::report::write_usage(f, &self.usage)?;
        if self.forced_connections > 0 {
            write!(
                f,
                "\n  {} connections cut at the shutdown deadline",
                self.forced_connections
            )?;
        }
        Ok(())
    }
}

impl<R: Runtime> BoundProxy<R> {
    /// The bound address of each endpoint, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| R::local_addr(l).ok())
            .collect()
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// The CA generated for `source_type = "https"` endpoints without
    /// certificate files, with where its certificate was written; `None`
    /// when no endpoint needed one.
    pub fn local_ca(&self) -> Option<&LocalCa> {
        self.local_ca.as_deref()
    }

    /// The pool of read buffers (to see how many are in use).
    pub fn buffers(&self) -> BufferPool {
        self.shared.buffers.clone()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops
    /// accepting (new connections are refused by the kernel), lets exchanges
    /// in flight finish (up to the configured grace period, after which the
    /// remaining connections are closed), and returns once every recording
    /// is written into its file ([`Recorder::finish`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> RunSummary {
        let BoundProxy {
            listeners,
            shared,
            shutdown_grace,
            local_ca: _,
        } = self;
        let accepting = Gauge::new();
        for (listener, endpoint) in listeners {
            let running = accepting.enter();
            let shared = Arc::clone(&shared);
            R::spawn(async move {
                race(
                    accept_loop(&listener, &endpoint, &shared),
                    shared.shutdown.wait(),
                )
                .await;
                // Close the listener before saying so.
                drop(listener);
                drop(running);
            });
        }
        shutdown.await;
        shared.shutdown.set();
        accepting.wait_empty().await;
        let deadline = Instant::now() + shutdown_grace;
        race(shared.connections.wait_empty(), R::sleep_until(deadline)).await;
        let forced = shared.connections.count();
        if forced > 0 {
            shared.force.set();
            tracing::warn!(
                forced,
                "shutdown grace period over; closing remaining connections"
            );
        }
        shared.stores.wait_empty().await;
        if let Some(recorder) = shared.recorder.clone() {
            // The journals into the recording files, so that the files alone
            // hold the run (a failure keeps the journals, which load).
            let _ = R::spawn_blocking(move || recorder.finish()).await;
        }
        RunSummary {
            stats: shared.stats.snapshot(),
            usage: shared.index.as_ref().map(|i| i.usage()).unwrap_or_default(),
            forced_connections: forced,
        }
    }
}

async fn accept_loop<R: Runtime>(
    listener: &R::Listener,
    endpoint: &Arc<Endpoint<R>>,
    shared: &Arc<Shared>,
) {
    loop {
        let socket = match R::accept(listener).await {
            Ok(socket) => socket,
            Err(e) => {
                // Out of file descriptors and similar: back off, never spin.
                tracing::warn!("accept failed: {e}");
                R::sleep_until(Instant::now() + Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = shared.connections.try_enter(shared.max_connections) else {
            shared
                .stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            refuse(R::sock_ref(&socket), endpoint.listener_tls.is_none());
            continue;
        };
        shared
            .stats
            .accepted_connections
            .fetch_add(1, Ordering::Relaxed);
        shared.tuning.apply(R::sock_ref(&socket));
        // Owned by the task and lent to `serve`, so the task holds it once.
        let Some(mut client) = accept(socket, endpoint) else {
            continue;
        };
        let endpoint = Arc::clone(endpoint);
        let shared = Arc::clone(shared);
        R::spawn(async move {
            race(serve(&mut client, &endpoint, &shared), shared.force.wait()).await;
            drop(slot);
        });
    }
}

/// Answers 503 and closes, never waiting: the send and the drain are
/// non-blocking and best effort. A TLS client gets no answer (a plaintext
/// one would be garbage to it), only the close.
fn refuse(socket: socket2::SockRef<'_>, plaintext: bool) {
    if plaintext {
        let _ = socket.send(&LIMIT_RESPONSE);
    }
    let _ = socket.shutdown(Shutdown::Write);
    // Read what the client already sent, so closing sends a FIN, not a reset
    // that could destroy the answer before the client reads it.
    let mut sink = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
    for _ in 0..8 {
        match socket.recv(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// A proxy serving in the background of the current runtime, for tests: it
/// listens on the addresses in its config (use port 0 for an ephemeral port)
/// and shuts down gracefully when stopped or dropped.
///
/// A complete, running example is the repository's `tests/in_process/main.rs`
/// (`cargo test -p ouli --test in_process`): it writes a recording in code
/// with `ouli_core::store` and [`RecordingDir::write_atomic`], starts
/// `ouli_tokio::TestProxy` in replay mode, sends a request, and shows both
/// dropping the proxy and [`TestProxy::stop`], which returns the run's usage
/// per test.
pub struct TestProxy<R: Runtime> {
    addrs: Vec<SocketAddr>,
    local_ca: Option<Arc<LocalCa>>,
    stats: Arc<Stats>,
    buffers: BufferPool,
    stop: Arc<Latch>,
    done: Arc<Finished>,
    runtime: PhantomData<fn() -> R>,
}

#[derive(Default)]
struct Finished {
    summary: Mutex<Option<RunSummary>>,
    latch: Latch,
}

impl<R: Runtime> TestProxy<R> {
    /// Binds and starts serving in a background task.
    pub async fn start(
        config: Config,
        mode: Mode,
        recording_dir: impl Into<PathBuf>,
    ) -> Result<Self, StartError> {
        let bound = Proxy::<R>::builder(config, mode, recording_dir)
            .bind()
            .await?;
        let addrs = bound.local_addrs();
        let local_ca = bound.local_ca.clone();
        let stats = bound.stats();
        let buffers = bound.buffers();
        let stop = Arc::new(Latch::new());
        let done = Arc::new(Finished::default());
        let (stopped, finished) = (Arc::clone(&stop), Arc::clone(&done));
        R::spawn(async move {
            // Says "finished" even if the task panics or its runtime drops it.
            let finished = SetOnDrop(finished);
            let summary = bound.run(stopped.wait()).await;
            *finished.0.summary.lock().unwrap_or_else(|e| e.into_inner()) = Some(summary);
        });
        Ok(TestProxy {
            addrs,
            local_ca,
            stats,
            buffers,
            stop,
            done,
            runtime: PhantomData,
        })
    }

    /// The first endpoint's bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every endpoint's bound address, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The CA generated for `source_type = "https"` endpoints without
    /// certificate files (see [`BoundProxy::local_ca`]).
    pub fn local_ca(&self) -> Option<&LocalCa> {
        self.local_ca.as_deref()
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Read buffers on loan right now (0 when every connection is idle).
    pub fn buffers_in_use(&self) -> usize {
        self.buffers.in_use()
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_stop(&self) {
        self.stop.set();
    }

    /// Shuts down gracefully and returns what the run did.
    pub async fn stop(self) -> RunSummary {
        self.stop.set();
        self.done.latch.wait().await;
        let summary = self
            .done
            .summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        summary.unwrap_or_else(|| panic!("the proxy task ended without finishing its run"))
    }
}

/// Sets the [`Finished`] latch when dropped.
struct SetOnDrop(Arc<Finished>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.latch.set();
    }
}

impl<R: Runtime> Drop for TestProxy<R> {
    fn drop(&mut self) {
        self.stop.set();
    }
}

/// Names the [`server`](crate::server) types for one runtime, in an adapter
/// crate: `Proxy`, `ProxyBuilder`, `BoundProxy`, `TestProxy`, the re-exported
/// `RunSummary` and `StartError`, and `RUNTIME_NAME`.
///
/// ```ignore
/// ouli_adapter_common::adapter_types!(Smol, "smol");
/// ```
#[macro_export]
macro_rules! adapter_types {
    ($runtime:ty, $name:literal) => {
        pub use $crate::server::{RunSummary, StartError};

        #[doc = concat!("Entry point on ", $name, ": `Proxy::builder(config, mode, dir).bind().await?.run(shutdown).await`.")]
        pub type Proxy = $crate::server::Proxy<$runtime>;
        #[doc = concat!("A proxy being configured, on ", $name, "; see [`ProxyBuilder`](", stringify!($crate), "::server::ProxyBuilder).")]
        pub type ProxyBuilder = $crate::server::ProxyBuilder<$runtime>;
        #[doc = concat!("A proxy whose listeners are bound, on ", $name, "; `run(shutdown)` serves.")]
        pub type BoundProxy = $crate::server::BoundProxy<$runtime>;
        #[doc = concat!(
            "A proxy serving in the background on ", $name, ", for tests: `TestProxy::start(config, mode, dir).await`, ",
            "`.addr()`, `.stop().await`; it listens on the addresses in its config (use port 0 for an ",
            "ephemeral port) and shuts down gracefully when stopped or dropped."
        )]
        pub type TestProxy = $crate::server::TestProxy<$runtime>;
        /// The name of this runtime, as the `ouli` binary reports it.
        pub const RUNTIME_NAME: &str = $name;
    };
}

#[cfg(test)]
mod tests {
    use super::forwards_to;

    #[test]
    fn an_upstream_at_the_listening_address_is_a_loop() {
        let at = |s: &str| s.parse().unwrap();
        assert!(forwards_to(at("127.0.0.1:8080"), "127.0.0.1", 8080));
        assert!(forwards_to(at("127.0.0.1:8080"), "localhost", 8080));
        assert!(forwards_to(at("127.0.0.1:8080"), "LOCALHOST", 8080));
        assert!(forwards_to(at("[::1]:8080"), "::1", 8080));
        assert!(forwards_to(at("[::1]:8080"), "[::1]", 8080));
        assert!(forwards_to(at("[::1]:8080"), "localhost", 8080));
        assert!(forwards_to(at("0.0.0.0:8080"), "127.0.0.1", 8080));
        assert!(forwards_to(at("0.0.0.0:8080"), "127.0.0.9", 8080));
        assert!(forwards_to(at("0.0.0.0:8080"), "0.0.0.0", 8080));
        assert!(forwards_to(at("127.0.0.1:8080"), "0.0.0.0", 8080));
        assert!(forwards_to(at("10.1.2.3:8080"), "10.1.2.3", 8080));
        assert!(forwards_to(at("[::]:8080"), "::1", 8080));
    }

    #[test]
    fn other_ports_addresses_and_names_are_not_a_loop() {
        let at = |s: &str| s.parse().unwrap();
        assert!(!forwards_to(at("127.0.0.1:8080"), "127.0.0.1", 8081));
        // A listener on 127.0.0.1 does not take connections to 127.0.0.2.
        assert!(!forwards_to(at("127.0.0.1:8080"), "127.0.0.2", 8080));
        assert!(!forwards_to(at("127.0.0.1:8080"), "::1", 8080));
        assert!(!forwards_to(at("0.0.0.0:8080"), "::1", 8080));
        assert!(!forwards_to(at("10.1.2.3:8080"), "127.0.0.1", 8080));
        assert!(!forwards_to(at("127.0.0.1:443"), "api.example.com", 443));
    }
}
