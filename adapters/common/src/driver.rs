//! The per-connection driver, written once for every runtime: it moves bytes
//! between the sockets and a [`Connection`], and carries out the outputs.
//! It never looks at a header or a frame byte. On a TLS endpoint either
//! socket is a [`Transport`] carrying its rustls session, so TLS is the same
//! code on every runtime.
//!
//! Memory per connection stays bounded: an idle connection waits for
//! readability with no buffer attached and takes a pooled buffer only for the
//! read itself; the core holds at most
//! [`MAX_CLIENT_BUFFER_BYTES`](ouli_core::proxy::MAX_CLIENT_BUFFER_BYTES) of
//! unparsed input; and every write to the client is awaited before anything
//! more is read from the upstream, so a slow client slows the upstream down
//! instead of making Ouli buffer the response.

use crate::runtime::Runtime;
use crate::server::{Endpoint, Shared};
use crate::tls::describe_io_error;
use crate::transport::{Read, Transport};
use crate::upstream::InFlightPermit;
use ouli_core::proxy::{Connection, Output, UpstreamFailure, UpstreamWire};
use ouli_core::store::Interaction;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The upstream connection of the exchange in flight, with its in-flight slot.
struct Upstream<R: Runtime> {
    transport: Transport<R>,
    _permit: InFlightPermit,
}

/// What woke the connection up.
enum Wake {
    Client(io::Result<()>),
    Upstream(io::Result<()>),
    Timer,
    Shutdown,
}

fn poll_option<F: Future>(f: Pin<&mut Option<F>>, cx: &mut Context<'_>) -> Poll<F::Output> {
    match f.as_pin_mut() {
        Some(f) => f.poll(cx),
        None => Poll::Pending,
    }
}

/// The client side of an accepted connection: its socket, with a TLS
/// session on an `https` endpoint (the handshake happens as [`serve`]
/// drives it). `None` when rustls cannot start a session.
pub(crate) fn accept<R: Runtime>(
    socket: R::Socket,
    endpoint: &Endpoint<R>,
) -> Option<Transport<R>> {
    match &endpoint.listener_tls {
        None => Some(Transport::plain(socket)),
        Some(tls) => match tls.accept() {
            Ok(session) => Some(Transport::tls(socket, session)),
            Err(e) => {
                tracing::warn!("cannot start a TLS session: {e}");
                None
            }
        },
    }
}

/// Drives one accepted client connection through the core until it closes.
/// It borrows the client [`Transport`], so the task holds it only once.
pub(crate) async fn serve<R: Runtime>(
    client: &mut Transport<R>,
    endpoint: &Endpoint<R>,
    shared: &Shared,
) {
    let mut conn = Connection::new(
        Arc::clone(&endpoint.settings),
        shared.index.clone(),
        Instant::now(),
    );
    conn.set_mask_seed(mask_seed());
    let mut upstream: Option<Upstream<R>> = None;
    // The timer and the shutdown waiter live across loop turns and are
    // armed only when the connection has to wait. Made anew each turn, they
    // would register and drop a runtime timer and a listener on the
    // proxy-wide shutdown event for every request (on Tokio a fresh timer
    // can also wake a parked worker through the I/O driver). The armed
    // timer is never later than the core's deadline: when the deadline moves
    // later (every request pushes the idle deadline) the timer is kept,
    // fires early, `handle_timeout` ignores the early call, and it is armed
    // again for the deadline of then.
    let mut timer = pin!(None);
    let mut armed: Option<Instant> = None;
    let mut shutdown = pin!(Some(shared.shutdown.wait()));
    loop {
        while let Some(output) = conn.poll_output() {
            match output {
                Output::ToClient(bytes) => {
                    if client.write_all(&bytes, &shared.buffers).await.is_err() {
                        return;
                    }
                }
                Output::OpenUpstream => {
                    upstream = None;
                    let offer = conn.upstream_offer();
                    // Boxed: the connect future is large and rare, and would
                    // otherwise make every idle connection's task that big.
                    match Box::pin(open_upstream(endpoint, shared, offer)).await {
                        Ok((u, wire)) => {
                            upstream = Some(u);
                            conn.upstream_connected_as(Instant::now(), wire);
                        }
                        Err(failure) => conn.upstream_failed(Instant::now(), failure),
                    }
                }
                Output::ToUpstream(bytes) => {
                    let written = match upstream.as_mut() {
                        Some(u) => u.transport.write_all(&bytes, &shared.buffers).await.is_ok(),
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
                            endpoint.pool.release(u.transport);
                        }
                    }
                }
                Output::Store {
                    test_name,
                    interaction,
                } => Box::pin(store(shared, test_name, *interaction)).await,
                Output::Event(event) => shared.stats.observe(&event),
                Output::CloseClient => {
                    if client.is_tls() {
                        Box::pin(client.close(&shared.buffers)).await;
                    } else {
                        client.shutdown_write();
                    }
                    // What the core queued after the close still counts
                    // (e.g. the event explaining a 408 or a 504).
                    while let Some(output) = conn.poll_output() {
                        match output {
                            Output::Event(event) => shared.stats.observe(&event),
                            Output::Store {
                                test_name,
                                interaction,
                            } => Box::pin(store(shared, test_name, *interaction)).await,
                            _ => {}
                        }
                    }
                    return;
                }
            }
        }
        if conn.is_closed() {
            return;
        }
        let deadline = conn.poll_timeout();
        let want_client = conn.wants_client_read();
        let want_upstream = conn.wants_upstream_read();
        let wake = if want_upstream
            && upstream
                .as_ref()
                .is_some_and(|u| u.transport.has_buffered_input())
        {
            // Data came with the end of the upstream's TLS handshake.
            Wake::Upstream(Ok(()))
        } else {
            let mut client_ready = pin!(want_client.then(|| R::readable(client.socket())));
            let mut upstream_ready = pin!(upstream
                .as_ref()
                .filter(|_| want_upstream)
                .map(|u| R::readable(u.transport.socket())));
            if client_ready.is_none()
                && upstream_ready.is_none()
                && deadline.is_none()
                && shutdown.is_none()
            {
                // Nothing can ever happen on this connection again.
                return;
            }
            // The deadline, unless the armed timer fires at or before it.
            let unarmed = deadline.filter(|d| armed.is_none_or(|a| *d < a));
            poll_fn(|cx| {
                if poll_option(timer.as_mut(), cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                // A shutdown begun or a deadline passed wins over I/O (cheap
                // checks: nothing is registered for them yet).
                if shutdown.is_some() && shared.shutdown.is_set() {
                    return Poll::Ready(Wake::Shutdown);
                }
                if unarmed.is_some_and(|d| d <= Instant::now()) {
                    return Poll::Ready(Wake::Timer);
                }
                if let Poll::Ready(r) = poll_option(upstream_ready.as_mut(), cx) {
                    return Poll::Ready(Wake::Upstream(r));
                }
                if let Poll::Ready(r) = poll_option(client_ready.as_mut(), cx) {
                    return Poll::Ready(Wake::Client(r));
                }
                // Nothing ready: now arm the timer and register for the
                // shutdown, so bytes that are already there cost neither.
                if let Some(d) = unarmed.filter(|d| armed.is_none_or(|a| *d < a)) {
                    timer.set(Some(R::sleep_until(d)));
                    armed = Some(d);
                    if poll_option(timer.as_mut(), cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                }
                if poll_option(shutdown.as_mut(), cx).is_ready() {
                    return Poll::Ready(Wake::Shutdown);
                }
                Poll::Pending
            })
            .await
        };
        match wake {
            Wake::Timer => {
                timer.set(None);
                armed = None;
                conn.handle_timeout(Instant::now());
            }
            Wake::Shutdown => {
                shutdown.set(None);
                conn.begin_shutdown(Instant::now());
            }
            Wake::Client(ready) => {
                if ready.is_err() {
                    return;
                }
                // A buffer is attached only for the read itself (the block
                // ends its storage before any await).
                let failed = {
                    let mut buf = shared.buffers.take();
                    let now = Instant::now();
                    match client.read(&mut buf, |data| conn.handle_client_bytes(now, data)) {
                        Ok(Read::Eof) => {
                            conn.handle_client_eof(now);
                            false
                        }
                        Ok(Read::Data | Read::Nothing) => false,
                        Err(e) => {
                            if e.kind() == io::ErrorKind::InvalidData {
                                let e = describe_io_error(&e);
                                tracing::info!("TLS client connection failed: {e}");
                            }
                            true
                        }
                    }
                };
                // TLS only: handshake messages, or the alert telling the
                // client why its connection failed. Boxed, like every TLS
                // path, so plaintext connections carry no TLS state.
                if client.wants_write() {
                    let flushed = Box::pin(client.flush(&shared.buffers)).await;
                    if flushed.is_err() {
                        return;
                    }
                }
                if failed {
                    return;
                }
            }
            Wake::Upstream(ready) => {
                let mut gone = {
                    let mut buf = shared.buffers.take();
                    let now = Instant::now();
                    let read = match (ready, upstream.as_mut()) {
                        (Ok(()), Some(u)) => u
                            .transport
                            .read(&mut buf, |data| conn.handle_upstream_bytes(now, data)),
                        (Err(e), _) => Err(e),
                        (Ok(()), None) => Ok(Read::Eof),
                    };
                    match read {
                        Ok(Read::Eof) => true,
                        Ok(Read::Data | Read::Nothing) => false,
                        Err(e) => {
                            if e.kind() == io::ErrorKind::InvalidData {
                                let e = describe_io_error(&e);
                                tracing::warn!("upstream TLS failed: {e}");
                            }
                            true
                        }
                    }
                };
                if let Some(u) = upstream.as_mut().filter(|u| u.transport.wants_write()) {
                    gone |= Box::pin(u.transport.flush(&shared.buffers)).await.is_err();
                }
                if gone {
                    upstream = None;
                    conn.handle_upstream_eof(Instant::now());
                }
            }
        }
    }
}

/// A slot under the in-flight limit, then a pooled or new upstream connection.
async fn open_upstream<R: Runtime>(
    endpoint: &Endpoint<R>,
    shared: &Shared,
    offer: &[UpstreamWire],
) -> Result<(Upstream<R>, UpstreamWire), UpstreamFailure> {
    let permit = shared.in_flight.acquire::<R>().await?;
    let (transport, wire) = endpoint.pool.open(offer, &shared.buffers).await?;
    Ok((
        Upstream {
            transport,
            _permit: permit,
        },
        wire,
    ))
}

/// Writes one interaction on the recorder's thread; the connection waits
/// for it, so the file is on disk before the next request on it is read.
async fn store(shared: &Shared, test_name: String, interaction: Interaction) {
    let Some(writer) = &shared.record_writer else {
        return;
    };
    // Counted until written, so a shutdown waits for the file.
    let writing = shared.stores.enter();
    let result = writer.store(test_name.clone(), interaction, writing).await;
    match result {
        Ok(path) => {
            tracing::debug!(test = %test_name, path = %path.display(), "recording written")
        }
        Err(e) => {
            shared
                .stats
                .not_recorded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(test = %test_name, "cannot write recording: {e}");
        }
    }
}

/// A fresh seed per connection for the WebSocket masks Ouli sends upstream:
/// the standard library's per-process random hash keys, mixed with a counter.
fn mask_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}
