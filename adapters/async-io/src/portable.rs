//! Sockets on async-io's own (one-shot) readiness: the backend where the
//! edge-triggered one (`edge.rs`, Linux) is not built. Compiled in
//! tests on Linux too, so it cannot rot unseen.

use crate::Spawner;
use async_io::Async;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// A connected, non-blocking TCP socket on async-io's reactor.
#[derive(Debug)]
pub struct PortableStream(Async<TcpStream>);

impl PortableStream {
    /// Accepts the next connection of `listener`.
    pub async fn accept<S: Spawner>(listener: &Async<TcpListener>) -> io::Result<Self> {
        listener.accept().await.map(|(socket, _peer)| Self(socket))
    }

    /// Connects to `addr`.
    pub async fn connect<S: Spawner>(addr: SocketAddr) -> io::Result<Self> {
        Async::<TcpStream>::connect(addr).await.map(Self)
    }

    /// The std socket, for options.
    pub fn get_ref(&self) -> &TcpStream {
        self.0.get_ref()
    }

    /// Completes when the socket may have something to read.
    pub fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.0.readable()
    }

    /// Reads without waiting.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut stream: &TcpStream = self.0.get_ref();
        stream.read(buf)
    }

    /// Writes all of `buf`, waiting for room as needed.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            let n = self
                .0
                .write_with(|mut stream: &TcpStream| stream.write(rest))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
        }
        Ok(())
    }
}
