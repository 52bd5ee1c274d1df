//! The few things the shared proxy code needs from an async runtime.
//!
//! [`crate::server`] and the private `driver` module hold the accept loop, the
//! per-connection driver, the upstream pool and the shutdown logic once, for
//! every runtime. An adapter crate (Tokio, smol, async-std) implements
//! [`Runtime`] for a marker type: its socket and listener types, a timer,
//! `spawn` and `spawn_blocking`. Nothing here parses protocol bytes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// An async runtime as the shared proxy code uses it. Implemented by each
/// adapter for a zero-sized marker type; every method is an associated
/// function, so the runtime is global to the process (as Tokio's current
/// runtime, smol's executor and async-std's are).
pub trait Runtime: Send + Sync + Sized + 'static {
    /// A connected, non-blocking TCP socket registered with the runtime.
    type Socket: Send + Sync + 'static;
    /// A listening socket registered with the runtime.
    type Listener: Send + Sync + 'static;

    /// Registers a bound, listening, non-blocking std listener.
    fn listener(listener: std::net::TcpListener) -> io::Result<Self::Listener>;

    /// The address `listener` is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Waits for the next incoming connection.
    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<Self::Socket>> + Send;

    /// Connects to `addr` (no timeout: the caller races it with a timer).
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Socket>> + Send;

    /// Completes when `socket` may have bytes (or an end of stream) to read.
    /// It holds no buffer while it waits; spurious wake-ups are allowed.
    fn readable(socket: &Self::Socket) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads what is available without waiting: `Ok(0)` at the end of the
    /// stream, `ErrorKind::WouldBlock` when nothing is there yet.
    fn try_read(socket: &Self::Socket, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes all of `buf`, waiting for the peer to drain its side as needed.
    fn write_all(
        socket: &mut Self::Socket,
        buf: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// A `socket2` view of `socket`, for options (TCP_NODELAY, buffer sizes)
    /// and `shutdown`.
    fn sock_ref(socket: &Self::Socket) -> socket2::SockRef<'_>;

    /// Completes at `deadline` (at once when it has passed).
    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send;

    /// Runs `task` in the background, detached.
    fn spawn(task: impl Future<Output = ()> + Send + 'static);

    /// Runs the blocking closure `f` off the async threads and yields its
    /// result. A panic in `f` is resumed in the caller.
    fn spawn_blocking<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send;
}
