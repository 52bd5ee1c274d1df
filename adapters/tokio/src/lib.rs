//! The Tokio adapter: Tokio's sockets, timers and blocking pool under the
//! shared connection layer of [`ouli_adapter_common::server`].
//!
//! Everything that is not Tokio-specific (the accept loop and its connection
//! limit, the per-connection driver around `ouli_core::proxy::Connection`,
//! the upstream pool, the in-flight limit, graceful shutdown) lives in
//! `ouli-adapter-common` and is shared with the smol and async-std adapters.
//! This crate implements [`Runtime`] for [`Tokio`] and names the server types
//! for it. It never looks at a header or a frame byte.
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

use ouli_adapter_common::runtime::Runtime;
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

/// Tokio as a [`Runtime`]: the proxy runs on the current Tokio runtime
/// (call `bind` and [`TestProxy::start`] from inside it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

ouli_adapter_common::adapter_types!(Tokio, "tokio");

/// Runs `future` to completion on a new multi-threaded Tokio runtime (one
/// worker per core), the way the `ouli` binary runs the proxy.
pub fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

impl Runtime for Tokio {
    type Socket = TcpStream;
    type Listener = TcpListener;

    fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::from_std(listener)
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
        listener.accept().await.map(|(socket, _peer)| socket)
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }

    fn readable(socket: &TcpStream) -> impl Future<Output = io::Result<()>> + Send + use<'_> {
        socket.readable()
    }

    fn try_read(socket: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        // A short read means the socket's receive queue was empty when the
        // read returned, so readiness is cleared now, as Tokio's own
        // `poll_read` does. `TcpStream::try_read` clears it only on
        // `WouldBlock`, which cost a second `recv` (and a turn of the
        // connection's driver) per request: the next `readable()` would
        // answer at once and that `recv` would find nothing.
        // `try_io` clears readiness when its closure says `WouldBlock`, and
        // only if no new readiness arrived meanwhile (it compares ticks), so
        // bytes that arrive after this read still wake the connection.
        let mut short = None;
        let len = buf.len();
        let read = socket.try_io(Interest::READABLE, || {
            let n = (&*socket2::SockRef::from(socket)).read(&mut *buf)?;
            if 0 < n && n < len {
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match short {
            Some(n) => Ok(n),
            None => read,
        }
    }

    async fn write_all(socket: &mut TcpStream, buf: &[u8]) -> io::Result<()> {
        socket.write_all(buf).await
    }

    fn sock_ref(socket: &TcpStream) -> socket2::SockRef<'_> {
        socket2::SockRef::from(socket)
    }

    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline.into())
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    fn spawn_blocking<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send {
        let task = tokio::task::spawn_blocking(f);
        async move {
            match task.await {
                Ok(value) => value,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("blocking task did not run: {e}"),
            }
        }
    }
}
