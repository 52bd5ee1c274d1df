//! The upstream side, shared by every runtime: the pool of idle keep-alive
//! connections per endpoint, opening new ones (TCP, then TLS on an `https`
//! target) with a timeout, and the limit on upstream requests in flight.

use crate::buffer_pool::BufferPool;
use crate::runtime::Runtime;
use crate::sync::{race, Either, FairPermit, FairSemaphore};
use crate::tcp::{literal_addr, resolve, TcpTuning};
use crate::tls::{check_alpn, describe_error, describe_io_error, UpstreamTls};
use crate::transport::Transport;
use ouli_core::proxy::{UpstreamFailure, UpstreamWire};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle keep-alive connections to one endpoint's upstream.
pub struct UpstreamPool<R: Runtime> {
    host: String,
    port: u16,
    connect_timeout: Duration,
    tuning: TcpTuning,
    tls: Option<UpstreamTls>,
    idle: Mutex<Vec<Transport<R>>>,
    max_idle: usize,
}

impl<R: Runtime> UpstreamPool<R> {
    /// A pool for `host:port` keeping at most `max_idle` idle connections;
    /// with `tls`, every connection is TLS (`target_type = "https"`).
    pub fn new(
        host: String,
        port: u16,
        connect_timeout: Duration,
        max_idle: usize,
        tuning: TcpTuning,
        tls: Option<UpstreamTls>,
    ) -> Self {
        UpstreamPool {
            host,
            port,
            connect_timeout,
            tuning,
            tls,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// An idle pooled connection that is still open, or a new one, to speak
    /// one of `offer` on (in order of preference), with the protocol it
    /// speaks: on TLS the upstream's ALPN pick, in cleartext the first
    /// offered. Only HTTP/1.1 connections are ever pooled (the core never
    /// releases an HTTP/2 one as reusable), and one is taken only when
    /// HTTP/1.1 is the first choice. Connecting and the TLS handshake
    /// together get the connect timeout; a failed handshake is
    /// [`UpstreamFailure::Connect`] with rustls's reason.
    pub(crate) async fn open(
        &self,
        offer: &[UpstreamWire],
        buffers: &BufferPool,
    ) -> Result<(Transport<R>, UpstreamWire), UpstreamFailure> {
        if offer.first() == Some(&UpstreamWire::Http1) {
            while let Some(mut idle) = self.pop_idle() {
                // Closed by the upstream, or unexpected bytes: discard.
                if idle.still_idle(buffers) {
                    return Ok((idle, UpstreamWire::Http1));
                }
            }
        }
        let deadline = Instant::now() + self.connect_timeout;
        match race(self.open_new(offer, buffers), R::sleep_until(deadline)).await {
            Either::Right(()) => Err(UpstreamFailure::ConnectTimeout),
            Either::Left(result) => result,
        }
    }

    async fn open_new(
        &self,
        offer: &[UpstreamWire],
        buffers: &BufferPool,
    ) -> Result<(Transport<R>, UpstreamWire), UpstreamFailure> {
        let failed = |why: String| {
            let why = format!("{}:{}: {why}", self.host, self.port);
            UpstreamFailure::Connect(why)
        };
        let socket = self.connect().await.map_err(|e| failed(e.to_string()))?;
        self.tuning.apply(R::sock_ref(&socket));
        let Some(tls) = &self.tls else {
            let wire = offer.first().copied().unwrap_or(UpstreamWire::Http1);
            return Ok((Transport::plain(socket), wire));
        };
        let session = tls
            .start(offer)
            .map_err(|e| failed(format!("TLS setup failed: {}", describe_error(&e))))?;
        let mut transport = Transport::tls(socket, session);
        if let Err(e) = transport.handshake(buffers).await {
            let why = format!("TLS handshake failed: {}", describe_io_error(&e));
            return Err(failed(why));
        }
        let wire = check_alpn(offer, transport.alpn_protocol()).map_err(failed)?;
        Ok((transport, wire))
    }

    async fn connect(&self) -> io::Result<R::Socket> {
        let addrs = match literal_addr(&self.host, self.port) {
            Some(addr) => vec![addr],
            None => {
                let (host, port) = (self.host.clone(), self.port);
                R::spawn_blocking(move || resolve(&host, port)).await?
            }
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        for addr in addrs {
            match R::connect(addr).await {
                Ok(socket) => return Ok(socket),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Takes back a connection whose exchange ended cleanly; it is closed
    /// instead when the pool is full.
    pub(crate) fn release(&self, connection: Transport<R>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(connection);
        }
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn pop_idle(&self) -> Option<Transport<R>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }
}

/// The limit on upstream requests in flight across all endpoints: a
/// semaphore taken from `OpenUpstream` to `ReleaseUpstream`, waited for at
/// most a timeout. Waiters are served in arrival order ([`FairSemaphore`]),
/// so under overload a request waits for the ones queued before it, not
/// for as long as newcomers keep taking the freed slots.
pub struct InFlightLimit {
    permits: Arc<FairSemaphore>,
    limit: usize,
    timeout: Duration,
}

/// One upstream request in flight; dropping it frees the slot.
pub type InFlightPermit = FairPermit;

impl InFlightLimit {
    /// At most `limit` requests in flight; a request waits at most `timeout`
    /// for a free slot.
    pub fn new(limit: usize, timeout: Duration) -> Self {
        InFlightLimit {
            permits: Arc::new(FairSemaphore::new(limit)),
            limit,
            timeout,
        }
    }

    /// A slot, or [`UpstreamFailure::Overloaded`] (503) with the reason when
    /// none frees up within the timeout.
    pub async fn acquire<R: Runtime>(&self) -> Result<InFlightPermit, UpstreamFailure> {
        if let Some(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        let deadline = Instant::now() + self.timeout;
        match race(self.permits.acquire(), R::sleep_until(deadline)).await {
            Either::Left(permit) => Ok(permit),
            Either::Right(()) => Err(UpstreamFailure::Overloaded(format!(
                "Ouli is overloaded: {} upstream requests are in flight and none finished \
                 within {} ms; try again",
                self.limit,
                self.timeout.as_millis()
            ))),
        }
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}
