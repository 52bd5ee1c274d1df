//! The upstream side, shared by every runtime: the pool of idle keep-alive
//! connections per endpoint, opening new ones with a timeout, and the limit
//! on upstream requests in flight.

use crate::runtime::Runtime;
use crate::sync::{race, Either};
use crate::tcp::{literal_addr, resolve, TcpTuning};
use async_lock::{Semaphore, SemaphoreGuardArc};
use ouli_core::proxy::UpstreamFailure;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle keep-alive connections to one endpoint's upstream.
pub struct UpstreamPool<R: Runtime> {
    host: String,
    port: u16,
    connect_timeout: Duration,
    tuning: TcpTuning,
    idle: Mutex<Vec<R::Socket>>,
    max_idle: usize,
}

impl<R: Runtime> UpstreamPool<R> {
    /// A pool for `host:port` keeping at most `max_idle` idle connections.
    pub fn new(
        host: String,
        port: u16,
        connect_timeout: Duration,
        max_idle: usize,
        tuning: TcpTuning,
    ) -> Self {
        UpstreamPool {
            host,
            port,
            connect_timeout,
            tuning,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// An idle pooled connection that is still open, or a new one.
    pub async fn open(&self) -> Result<R::Socket, UpstreamFailure> {
        while let Some(socket) = self.pop_idle() {
            let mut probe = [0u8; 1];
            match R::try_read(&socket, &mut probe) {
                // Nothing to read and not closed: still usable.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(socket),
                // Closed by the upstream, or unexpected bytes: discard.
                _ => continue,
            }
        }
        let deadline = Instant::now() + self.connect_timeout;
        match race(self.connect(), R::sleep_until(deadline)).await {
            Either::Right(()) => Err(UpstreamFailure::ConnectTimeout),
            Either::Left(Err(e)) => Err(UpstreamFailure::Connect(format!(
                "{}:{}: {e}",
                self.host, self.port
            ))),
            Either::Left(Ok(socket)) => {
                self.tuning.apply(R::sock_ref(&socket));
                Ok(socket)
            }
        }
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
    pub fn release(&self, socket: R::Socket) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(socket);
        }
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn pop_idle(&self) -> Option<R::Socket> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }
}

/// The limit on upstream requests in flight across all endpoints: a
/// semaphore taken from `OpenUpstream` to `ReleaseUpstream`, waited for at
/// most a timeout.
pub struct InFlightLimit {
    permits: Arc<Semaphore>,
    limit: usize,
    timeout: Duration,
}

/// One upstream request in flight; dropping it frees the slot.
pub type InFlightPermit = SemaphoreGuardArc;

impl InFlightLimit {
    /// At most `limit` requests in flight; a request waits at most `timeout`
    /// for a free slot.
    pub fn new(limit: usize, timeout: Duration) -> Self {
        InFlightLimit {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            timeout,
        }
    }

    /// A slot, or [`UpstreamFailure::Overloaded`] (503) with the reason when
    /// none frees up within the timeout.
    pub async fn acquire<R: Runtime>(&self) -> Result<InFlightPermit, UpstreamFailure> {
        if let Some(permit) = self.permits.try_acquire_arc() {
            return Ok(permit);
        }
        let deadline = Instant::now() + self.timeout;
        match race(self.permits.acquire_arc(), R::sleep_until(deadline)).await {
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
