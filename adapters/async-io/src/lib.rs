//! The async-io backend of Ouli, shared by the smol and async-std adapters.
//!
//! smol and async-std both drive their sockets and timers with `async-io`'s
//! reactor; they differ only in how they spawn tasks and blocking work. So
//! the socket, listener and timer side of [`Runtime`] lives here once, in
//! [`AsyncIo`], generic over a small [`Spawner`] that each adapter supplies.
//! An idle connection waits for readiness and holds no buffer; the read
//! itself is a plain non-blocking `read` into a pooled buffer.
//!
//! On Linux, connected sockets use edge-triggered readiness of our own
//! (`edge.rs`), layered on async-io (which still blocks, keeps the timers and
//! watches the listeners): async-io's one-shot registration costs an
//! `epoll_ctl` per wait, so one per keep-alive request. Elsewhere they are
//! plain async-io sources (`portable.rs`).
#![deny(missing_docs)]

#[cfg(target_os = "linux")]
pub mod edge;
#[cfg(any(not(target_os = "linux"), test))]
pub mod portable;

use async_io::{Async, Timer};
use ouli_adapter_common::runtime::Runtime;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

/// The connected-socket type of this backend.
#[cfg(target_os = "linux")]
pub type Stream = edge::EdgeStream;
/// The connected-socket type of this backend.
#[cfg(not(target_os = "linux"))]
pub type Stream = portable::PortableStream;

/// How an async-io based runtime runs tasks: the one thing smol and
/// async-std do differently here.
pub trait Spawner: Send + Sync + 'static {
    /// Runs `task` in the background, detached.
    fn spawn(task: impl Future<Output = ()> + Send + 'static);

    /// Runs the blocking closure `f` on a thread pool and yields its result.
    fn spawn_blocking<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send;
}

/// The async-io [`Runtime`], spawning with `S`.
pub struct AsyncIo<S>(PhantomData<fn() -> S>);

impl<S: Spawner> Runtime for AsyncIo<S> {
    type Socket = Stream;
    type Listener = Async<TcpListener>;

    fn listener(listener: TcpListener) -> io::Result<Async<TcpListener>> {
        Async::new(listener)
    }

    fn local_addr(listener: &Async<TcpListener>) -> io::Result<SocketAddr> {
        listener.get_ref().local_addr()
    }

    fn accept(listener: &Async<TcpListener>) -> impl Future<Output = io::Result<Stream>> + Send {
        Stream::accept::<S>(listener)
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Stream>> + Send {
        Stream::connect::<S>(addr)
    }

    fn readable(socket: &Stream) -> impl Future<Output = io::Result<()>> + Send + use<'_, S> {
        socket.readable()
    }

    fn try_read(socket: &Stream, buf: &mut [u8]) -> io::Result<usize> {
        socket.try_read(buf)
    }

    fn write_all(socket: &mut Stream, buf: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        socket.write_all(buf)
    }

    fn sock_ref(socket: &Stream) -> socket2::SockRef<'_> {
        socket2::SockRef::from(socket.get_ref())
    }

    async fn sleep_until(deadline: Instant) {
        Timer::at(deadline).await;
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        S::spawn(task)
    }

    fn spawn_blocking<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send {
        S::spawn_blocking(f)
    }
}

#[cfg(test)]
mod stream_tests;
