//! One side of a connection as the driver sees it: a socket, and on a TLS
//! endpoint the rustls session over it, written once for every runtime.
//!
//! The session is rustls's buffered `Connection`, driven on in-memory
//! buffers: the bytes a non-blocking read returned go in with `read_tls` and
//! `process_new_packets`, plaintext comes out of `reader()` straight into
//! the core, plaintext from the core goes in with `writer()`, and records
//! come out with `write_tls` into a pooled buffer that is then written with
//! [`Runtime::write_all`]. No runtime-specific I/O trait is involved, so the
//! same code serves Tokio, smol and async-std.
//!
//! A plaintext side is the socket and an empty `Option`: no TLS state, no
//! extra memory. A TLS side drains every byte it decrypts into the core on
//! each read (as a plaintext read hands over everything it read), so nothing
//! waits inside rustls unseen by the readiness wait; the one exception,
//! data that arrives with the end of an upstream handshake, is flagged and
//! read without waiting.

use crate::buffer_pool::BufferPool;
use crate::runtime::Runtime;
use rustls::Connection as Session;
use std::future::Future;
use std::io::{self, BufRead, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The plaintext or the TLS future of an operation, as one future.
    #[project = OneOfProj]
    enum OneOf<P, T> {
        Plain { #[pin] future: P },
        Tls { #[pin] future: T },
    }
}

impl<P: Future, T: Future<Output = P::Output>> Future for OneOf<P, T> {
    type Output = P::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<P::Output> {
        match self.project() {
            OneOfProj::Plain { future } => future.poll(cx),
            OneOfProj::Tls { future } => future.poll(cx),
        }
    }
}

/// What a read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes arrived (plaintext, or on TLS possibly only protocol records).
    Data,
    /// The peer closed its side (after any data handed over in the same read).
    Eof,
    /// Nothing to read yet.
    Nothing,
}

/// A connected socket, with its TLS session on a TLS endpoint.
pub(crate) struct Transport<R: Runtime> {
    socket: R::Socket,
    tls: Option<Box<Tls>>,
}

struct Tls {
    session: Session,
    /// Input waits in `session` (plaintext, or the peer's close): the next
    /// read takes it without waiting for the socket.
    buffered: bool,
}

pub(crate) fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<R: Runtime> Transport<R> {
    /// A plaintext side.
    pub(crate) fn plain(socket: R::Socket) -> Self {
        Transport { socket, tls: None }
    }

    /// A TLS side; the handshake happens as the session is driven.
    pub(crate) fn tls(socket: R::Socket, session: impl Into<Session>) -> Self {
        Transport {
            socket,
            tls: Some(Box::new(Tls {
                session: session.into(),
                buffered: false,
            })),
        }
    }

    /// The socket.
    pub(crate) fn socket(&self) -> &R::Socket {
        &self.socket
    }

    /// Whether this side is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether input waits in the TLS session (data that came with the end
    /// of the handshake): read without waiting for the socket.
    pub(crate) fn has_buffered_input(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.buffered)
    }

    /// The protocol the TLS peer agreed to by ALPN, if any.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.as_ref().and_then(|t| t.session.alpn_protocol())
    }

    /// Reads what is available without waiting, into `buf`, and hands every
    /// plaintext byte to `deliver` (in order, possibly in several pieces).
    /// A TLS protocol error is an `InvalidData` error carrying the
    /// `rustls::Error`; call [`Transport::flush`] to send the alert rustls
    /// queued for the peer.
    pub(crate) fn read(
        &mut self,
        buf: &mut [u8],
        mut deliver: impl FnMut(&[u8]),
    ) -> io::Result<Read> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return match R::try_read(&self.socket, buf) {
                Ok(0) => Ok(Read::Eof),
                Ok(n) => {
                    deliver(&buf[..n]);
                    Ok(Read::Data)
                }
                Err(e) if is_retry(&e) => Ok(Read::Nothing),
                Err(e) => Err(e),
            };
        };
        let mut found = Read::Nothing;
        if std::mem::take(&mut tls.buffered) {
            if drain(&mut tls.session, &mut deliver)? {
                return Ok(Read::Eof);
            }
            found = Read::Data;
        }
        match R::try_read(&self.socket, buf) {
            Ok(0) => {
                // The TCP stream ended: what rustls still holds, then the end.
                tls.session.read_tls(&mut io::empty())?;
                tls.session.process_new_packets().map_err(tls_error)?;
                drain(&mut tls.session, &mut deliver)?;
                Ok(Read::Eof)
            }
            Ok(n) => {
                if feed(&mut tls.session, &buf[..n], &mut deliver)? {
                    Ok(Read::Eof)
                } else {
                    Ok(Read::Data)
                }
            }
            Err(e) if is_retry(&e) => Ok(found),
            Err(e) => Err(e),
        }
    }

    /// Whether the TLS session has records to send (handshake messages,
    /// alerts, key updates) that [`Transport::flush`] would write.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.session.wants_write())
    }

    /// Writes the records the TLS session has queued.
    pub(crate) async fn flush(&mut self, buffers: &BufferPool) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            Some(tls) => flush::<R>(&mut self.socket, &mut tls.session, buffers).await,
            None => Ok(()),
        }
    }

    /// Writes all of `data` (encrypted on a TLS side), waiting for the peer
    /// to drain its side as needed. On a plaintext side this is the
    /// runtime's own write future; the TLS path is boxed, so only TLS
    /// connections carry its larger state.
    pub(crate) fn write_all<'a>(
        &'a mut self,
        data: &'a [u8],
        buffers: &'a BufferPool,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        match self.tls {
            None => OneOf::Plain {
                future: R::write_all(&mut self.socket, data),
            },
            Some(_) => OneOf::Tls {
                future: Box::pin(self.write_all_tls(data, buffers)),
            },
        }
    }

    async fn write_all_tls(&mut self, data: &[u8], buffers: &BufferPool) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return R::write_all(&mut self.socket, data).await;
        };
        let mut rest = data;
        while !rest.is_empty() {
            // rustls takes what fits under its buffer limit.
            let n = tls.session.writer().write(rest)?;
            rest = &rest[n..];
            if !rest.is_empty() {
                if n == 0 && !tls.session.wants_write() {
                    return Err(io::Error::other("the TLS session takes no more data"));
                }
                flush::<R>(&mut self.socket, &mut tls.session, buffers).await?;
            }
        }
        flush::<R>(&mut self.socket, &mut tls.session, buffers).await
    }

    /// Ends the writing side: TLS `close_notify` (best effort), then a
    /// TCP half-close.
    pub(crate) async fn close(&mut self, buffers: &BufferPool) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.session.send_close_notify();
            let _ = flush::<R>(&mut self.socket, &mut tls.session, buffers).await;
        }
        self.shutdown_write();
    }

    /// A TCP half-close, without waiting (no `close_notify`).
    pub(crate) fn shutdown_write(&self) {
        let _ = R::sock_ref(&self.socket).shutdown(Shutdown::Write);
    }

    /// Completes the TLS handshake of a client-side session (an upstream
    /// connection); at once on a plaintext side. The caller bounds the
    /// time. A failure is the rustls error (see [`crate::tls::describe_io_error`]),
    /// after the alert is sent to the peer.
    pub(crate) async fn handshake(&mut self, buffers: &BufferPool) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        loop {
            flush::<R>(&mut self.socket, &mut tls.session, buffers).await?;
            if !tls.session.is_handshaking() {
                return Ok(());
            }
            R::readable(&self.socket).await?;
            let mut buf = buffers.take();
            let fed = match R::try_read(&self.socket, &mut buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection during the TLS handshake",
                    ))
                }
                Ok(n) => feed_handshake(&mut tls.session, &buf[..n]),
                Err(e) if is_retry(&e) => continue,
                Err(e) => return Err(e),
            };
            drop(buf);
            match fed {
                Ok(buffered) => tls.buffered = buffered,
                Err(e) => {
                    // Tell the server why, then report.
                    let _ = flush::<R>(&mut self.socket, &mut tls.session, buffers).await;
                    return Err(e);
                }
            }
        }
    }

    /// Whether an idle pooled connection is still usable: not closed, and
    /// nothing but TLS protocol records (session tickets) received.
    pub(crate) fn still_idle(&mut self, buffers: &BufferPool) -> bool {
        let mut buf = buffers.take();
        loop {
            let mut got_data = false;
            match self.read(&mut buf, |_| got_data = true) {
                Ok(Read::Nothing) => return true,
                Ok(Read::Data) if !got_data => continue,
                _ => return false,
            }
        }
    }
}

/// Hands `input` to `session`, and each plaintext byte it decrypts to
/// `deliver`; returns whether the peer closed the TLS stream.
fn feed(
    session: &mut Session,
    mut input: &[u8],
    deliver: &mut impl FnMut(&[u8]),
) -> io::Result<bool> {
    while !input.is_empty() {
        let taken = session.read_tls(&mut input)?;
        session.process_new_packets().map_err(tls_error)?;
        if drain(session, deliver)? {
            return Ok(true);
        }
        if taken == 0 {
            break;
        }
    }
    Ok(false)
}

/// [`feed`] during the handshake, when there is nowhere to deliver yet:
/// plaintext the server sends with the end of its handshake (an HTTP/2
/// SETTINGS frame) stays in the session. Returns whether input waits there.
fn feed_handshake(session: &mut Session, mut input: &[u8]) -> io::Result<bool> {
    let mut waiting = false;
    while !input.is_empty() {
        let taken = session.read_tls(&mut input)?;
        let state = session.process_new_packets().map_err(tls_error)?;
        waiting = state.plaintext_bytes_to_read() > 0 || state.peer_has_closed();
        if taken == 0 {
            break;
        }
    }
    Ok(waiting)
}

/// Hands every decrypted byte to `deliver`; returns whether the stream is
/// over (`close_notify`, or a TCP end without it).
fn drain(session: &mut Session, deliver: &mut impl FnMut(&[u8])) -> io::Result<bool> {
    let mut reader = session.reader();
    loop {
        match reader.fill_buf() {
            Ok([]) => return Ok(true),
            Ok(chunk) => {
                let n = chunk.len();
                deliver(chunk);
                reader.consume(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Writes the records `session` has queued, through one pooled buffer.
async fn flush<R: Runtime>(
    socket: &mut R::Socket,
    session: &mut Session,
    buffers: &BufferPool,
) -> io::Result<()> {
    if !session.wants_write() {
        return Ok(());
    }
    let mut buf = buffers.take();
    while session.wants_write() {
        let mut out: &mut [u8] = &mut buf;
        let n = session.write_tls(&mut out)?;
        if n == 0 {
            break;
        }
        R::write_all(socket, &buf[..n]).await?;
    }
    Ok(())
}
