//! The Tokio adapter: sockets, timers and files around [`ouli_core`].
//!
//! It owns an accept loop per endpoint and one task per connection, and only
//! moves bytes: it reads into pooled buffers, hands them to
//! [`ouli_core::proxy::Connection`], and carries out the outputs (write to the
//! client, open or reuse an upstream connection, store an interaction, close).
//! It never looks at a header or a frame byte.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ouli_adapter_common::config::Config;
//! use ouli_core::proxy::Mode;
//! let config = Config::load("ouli.toml".as_ref())?;
//! let proxy = ouli_tokio::Proxy::builder(config, Mode::Replay, "recordings").bind().await?;
//! println!("listening on {:?}", proxy.local_addrs());
//! let summary = proxy.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! println!("{summary}");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use ouli_adapter_common::buffer_pool::BufferPool;
use ouli_adapter_common::config::{Config, EndpointConfig};
use ouli_adapter_common::endpoint::{load_replay_index, proxy_settings};
use ouli_adapter_common::recorder::Recorder;
use ouli_adapter_common::recording_dir::{LoadError, RecordingDir};
use ouli_adapter_common::stats::{Stats, StatsSnapshot};
use ouli_core::engine::{ReplayIndex, TestUsage};
use ouli_core::proxy::{Connection, Mode, Output, ProxySettings, UpstreamFailure};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Entry point: `Proxy::builder(config, mode, dir).bind().await?.run(shutdown).await`.
pub struct Proxy;

impl Proxy {
    /// Starts configuring a proxy for `config`, in `mode`, with recordings under `recording_dir`.
    pub fn builder(config: Config, mode: Mode, recording_dir: impl Into<PathBuf>) -> ProxyBuilder {
        ProxyBuilder {
            config,
            mode,
            recording_dir: recording_dir.into(),
        }
    }
}

/// A proxy being configured.
pub struct ProxyBuilder {
    config: Config,
    mode: Mode,
    recording_dir: PathBuf,
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
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Load(e) => write!(f, "cannot load recordings: {e}"),
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
        }
    }
}

impl std::error::Error for StartError {}

impl ProxyBuilder {
    /// Loads recordings (replay mode) and binds every endpoint's listener.
    pub async fn bind(self) -> Result<BoundProxy, StartError> {
        let dir = RecordingDir::new(self.recording_dir.clone());
        let (index, recorder) = match self.mode {
            Mode::Replay => (
                Some(Arc::new(load_replay_index(&dir).map_err(StartError::Load)?)),
                None,
            ),
            Mode::Record => (None, Some(Arc::new(Recorder::new(dir)))),
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (force_tx, force_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            stats: Arc::new(Stats::default()),
            recorder,
            index,
            buffers: BufferPool::new(),
            active: AtomicUsize::new(0),
            max_connections: self.config.max_connections,
            all_closed: Notify::new(),
            shutdown_rx,
            force_rx,
        });
        let mut listeners = Vec::new();
        for endpoint in &self.config.endpoints {
            let addr = format!("{}:{}", endpoint.source_host, endpoint.source_port);
            let listener = TcpListener::bind(&addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
            let ctx = Arc::new(EndpointCtx::new(&self.config, endpoint, self.mode));
            listeners.push((listener, ctx));
        }
        Ok(BoundProxy {
            listeners,
            shared,
            shutdown_tx,
            force_tx,
            shutdown_grace: self.config.shutdown_grace,
        })
    }
}

struct Shared {
    stats: Arc<Stats>,
    recorder: Option<Arc<Recorder>>,
    index: Option<Arc<ReplayIndex>>,
    buffers: BufferPool,
    active: AtomicUsize,
    max_connections: usize,
    all_closed: Notify,
    shutdown_rx: watch::Receiver<bool>,
    force_rx: watch::Receiver<bool>,
}

/// One endpoint's settings and its pool of idle upstream connections.
struct EndpointCtx {
    settings: Arc<ProxySettings>,
    target: (String, u16),
    connect_timeout: Duration,
    idle_upstreams: Mutex<Vec<TcpStream>>,
    max_idle_upstreams: usize,
}

impl EndpointCtx {
    fn new(config: &Config, endpoint: &EndpointConfig, mode: Mode) -> Self {
        EndpointCtx {
            settings: Arc::new(proxy_settings(config, endpoint, mode)),
            target: (endpoint.target_host.clone(), endpoint.target_port),
            connect_timeout: config.upstream_connect_timeout,
            idle_upstreams: Mutex::new(Vec::new()),
            max_idle_upstreams: config.max_upstream_idle_per_endpoint,
        }
    }

    /// An idle pooled connection that is still open, or a new one.
    async fn open_upstream(&self) -> Result<TcpStream, UpstreamFailure> {
        loop {
            let pooled = self
                .idle_upstreams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let Some(stream) = pooled else { break };
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                // Nothing to read and not closed: still usable.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(stream),
                // Closed by the upstream, or unexpected bytes: discard.
                _ => continue,
            }
        }
        let connect = TcpStream::connect((self.target.0.as_str(), self.target.1));
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => Err(UpstreamFailure::ConnectTimeout),
            Ok(Err(e)) => Err(UpstreamFailure::Connect(format!(
                "{}:{}: {e}",
                self.target.0, self.target.1
            ))),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
        }
    }

    fn release(&self, stream: TcpStream) {
        let mut idle = self
            .idle_upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle_upstreams {
            idle.push(stream);
        }
    }
}

/// A proxy whose listeners are bound; [`BoundProxy::run`] serves.
pub struct BoundProxy {
    listeners: Vec<(TcpListener, Arc<EndpointCtx>)>,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    force_tx: watch::Sender<bool>,
    shutdown_grace: Duration,
}

/// What a run did, returned by [`BoundProxy::run`].
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The counters at the end.
    pub stats: StatsSnapshot,
    /// Replay mode: per test, recorded and used interactions.
    pub usage: Vec<TestUsage>,
    /// Connections still open when the shutdown grace period ran out.
    pub forced_connections: usize,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.stats)?;
        for u in &self.usage {
            write!(
                f,
                "\n  test {:?}: {} of {} recorded interactions used",
                u.test_name, u.used, u.recorded
            )?;
        }
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

impl BoundProxy {
    /// The bound address of each endpoint, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops
    /// accepting, lets exchanges in flight finish (up to the configured
    /// grace period), and returns once every recording is written.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> RunSummary {
        let BoundProxy {
            listeners,
            shared,
            shutdown_tx,
            force_tx,
            shutdown_grace,
        } = self;
        let mut accept_tasks = Vec::new();
        for (listener, ctx) in listeners {
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                ctx,
                Arc::clone(&shared),
            )));
        }
        shutdown.await;
        let _ = shutdown_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        let deadline = tokio::time::Instant::now() + shutdown_grace;
        loop {
            let notified = shared.all_closed.notified();
            if shared.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let forced = shared.active.load(Ordering::SeqCst);
        if forced > 0 {
            let _ = force_tx.send(true);
            tracing::warn!(
                forced,
                "shutdown grace period over; closing remaining connections"
            );
        }
        RunSummary {
            stats: shared.stats.snapshot(),
            usage: shared.index.as_ref().map(|i| i.usage()).unwrap_or_default(),
            forced_connections: forced,
        }
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<EndpointCtx>, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_rx.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off, never spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.active.load(Ordering::SeqCst) >= shared.max_connections {
            shared
                .stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            // Best effort, never blocking the accept loop.
            let _ = stream.try_write(LIMIT_RESPONSE);
            continue;
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        shared
            .stats
            .accepted_connections
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut force = shared.force_rx.clone();
            tokio::select! {
                _ = serve(stream, &ctx, &shared) => {}
                _ = force.wait_for(|f| *f) => {}
            }
            if shared.active.fetch_sub(1, Ordering::SeqCst) == 1 {
                shared.all_closed.notify_waiters();
            }
        });
    }
}

const LIMIT_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 41\r\n\r\nOuli: connection limit reached, try again\n";

async fn readable(stream: &Option<TcpStream>) -> io::Result<()> {
    match stream {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// Drives one client connection through the core until it closes.
async fn serve(mut client: TcpStream, ctx: &EndpointCtx, shared: &Shared) {
    let mut conn = Connection::new(
        Arc::clone(&ctx.settings),
        shared.index.clone(),
        Instant::now(),
    );
    let mut upstream: Option<TcpStream> = None;
    let mut shutdown = shared.shutdown_rx.clone();
    let mut shutdown_seen = false;
    loop {
        while let Some(output) = conn.poll_output() {
            match output {
                Output::ToClient(bytes) => {
                    if client.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Output::OpenUpstream => {
                    upstream = None;
                    match ctx.open_upstream().await {
                        Ok(s) => {
                            upstream = Some(s);
                            conn.upstream_connected(Instant::now());
                        }
                        Err(failure) => conn.upstream_failed(Instant::now(), failure),
                    }
                }
                Output::ToUpstream(bytes) => {
                    let written = match upstream.as_mut() {
                        Some(u) => u.write_all(&bytes).await.is_ok(),
                        None => false,
                    };
                    if !written {
                        upstream = None;
                        conn.handle_upstream_eof(Instant::now());
                    }
                }
                Output::ReleaseUpstream { reusable } => {
                    if let Some(u) = upstream.take() {
                        if reusable {
                            ctx.release(u);
                        }
                    }
                }
                Output::Store {
                    test_name,
                    interaction,
                } => store(shared, test_name, *interaction).await,
                Output::Event(event) => shared.stats.observe(&event),
                Output::CloseClient => {
                    let _ = client.shutdown().await;
                    return;
                }
            }
        }
        if conn.is_closed() {
            return;
        }
        let deadline = conn.poll_timeout();
        let want_client = conn.wants_client_read();
        let want_upstream = conn.wants_upstream_read() && upstream.is_some();
        tokio::select! {
            r = client.readable(), if want_client => {
                if r.is_err() { return; }
                // A buffer is attached only for the read itself.
                let mut buf = shared.buffers.take();
                match client.try_read(&mut buf) {
                    Ok(0) => conn.handle_client_eof(Instant::now()),
                    Ok(n) => conn.handle_client_bytes(Instant::now(), &buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            r = readable(&upstream), if want_upstream => {
                let mut buf = shared.buffers.take();
                let read = match (r, upstream.as_ref()) {
                    (Ok(()), Some(u)) => u.try_read(&mut buf),
                    (Err(e), _) => Err(e),
                    (_, None) => Ok(0),
                };
                match read {
                    Ok(0) => { upstream = None; conn.handle_upstream_eof(Instant::now()) }
                    Ok(n) => conn.handle_upstream_bytes(Instant::now(), &buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => { upstream = None; conn.handle_upstream_eof(Instant::now()) }
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => conn.handle_timeout(Instant::now()),
            _ = shutdown.wait_for(|s| *s), if !shutdown_seen => {
                shutdown_seen = true;
                conn.begin_shutdown(Instant::now());
            }
            else => return,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

async fn store(shared: &Shared, test_name: String, interaction: ouli_core::store::Interaction) {
    let Some(recorder) = shared.recorder.clone() else {
        return;
    };
    let name = test_name.clone();
    let result = tokio::task::spawn_blocking(move || recorder.store(&name, interaction)).await;
    match result {
        Ok(Ok(path)) => {
            tracing::debug!(test = %test_name, path = %path.display(), "recording written")
        }
        Ok(Err(e)) => {
            shared.stats.not_recorded.fetch_add(1, Ordering::Relaxed);
            tracing::error!(test = %test_name, "cannot write recording: {e}");
        }
        Err(e) => {
            shared.stats.not_recorded.fetch_add(1, Ordering::Relaxed);
            tracing::error!(test = %test_name, "recording task failed: {e}");
        }
    }
}

/// A proxy running inside the current Tokio runtime, for tests: it listens on
/// the addresses in its config (use port 0 for an ephemeral port) and shuts
/// down gracefully when dropped.
///
/// ```no_run
/// # async fn t() {
/// use ouli_adapter_common::config::Config;
/// let config = Config::from_toml_str(r#"
/// [[endpoints]]
/// source_port = 0
/// target_host = "127.0.0.1"
/// target_port = 9
/// "#, "inline").unwrap();
/// let proxy = ouli_tokio::TestProxy::start(config, ouli_core::proxy::Mode::Replay, "recordings").await.unwrap();
/// let url = format!("http://{}/", proxy.addr());
/// # }
/// ```
pub struct TestProxy {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<RunSummary>>,
}

impl TestProxy {
    /// Binds and starts serving in a background task.
    pub async fn start(
        config: Config,
        mode: Mode,
        recording_dir: impl Into<PathBuf>,
    ) -> Result<Self, StartError> {
        let bound = Proxy::builder(config, mode, recording_dir).bind().await?;
        let addrs = bound.local_addrs();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.run(async {
            let _ = stopped.await;
        }));
        Ok(TestProxy {
            addrs,
            stop: Some(stop),
            task: Some(task),
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

    /// Shuts down gracefully and returns what the run did.
    pub async fn stop(mut self) -> RunSummary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| panic!("proxy task failed: {e}")),
            None => unreachable!("stop is only called once"),
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
