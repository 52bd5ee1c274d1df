//! The async-io backend of Ouli, shared by the smol and async-std adapters.
//!
//! smol and async-std both drive their sockets and timers with `async-io`'s
//! reactor; they differ only in how they spawn tasks and blocking work. So
//! the socket, listener and timer side of [`Runtime`] lives here once, in
//! [`AsyncIo`], generic over a small [`Spawner`] that each adapter supplies.
//! An idle connection waits with `Async::readable()` and holds no buffer;
//! the read itself is a plain non-blocking `read` into a pooled buffer.
#![deny(missing_docs)]

use async_io::{Async, Timer};
use ouli_adapter_common::runtime::Runtime;
use std::future::Future;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

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
    type Socket = Async<TcpStream>;
    type Listener = Async<TcpListener>;

    fn listener(listener: TcpListener) -> io::Result<Async<TcpListener>> {
        Async::new(listener)
    }

    fn local_addr(listener: &Async<TcpListener>) -> io::Result<SocketAddr> {
        listener.get_ref().local_addr()
    }

    async fn accept(listener: &Async<TcpListener>) -> io::Result<Async<TcpStream>> {
        listener.accept().await.map(|(socket, _peer)| socket)
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Async<TcpStream>>> + Send {
        Async::<TcpStream>::connect(addr)
    }

    fn readable(
        socket: &Async<TcpStream>,
    ) -> impl Future<Output = io::Result<()>> + Send + use<'_, S> {
        socket.readable()
    }

    fn try_read(socket: &Async<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
        let mut stream: &TcpStream = socket.get_ref();
        stream.read(buf)
    }

    async fn write_all(socket: &mut Async<TcpStream>, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            let n = socket
                .write_with(|mut stream: &TcpStream| stream.write(rest))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    fn sock_ref(socket: &Async<TcpStream>) -> socket2::SockRef<'_> {
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
