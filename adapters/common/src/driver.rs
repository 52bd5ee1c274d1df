//! The per-connection driver, written once for every runtime: it moves bytes
//! between the sockets and a [`Connection`], and carries out the outputs.
//! It never looks at a header or a frame byte.
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
use crate::upstream::InFlightPermit;
use ouli_core::proxy::{Connection, Output, UpstreamFailure};
use ouli_core::store::Interaction;
use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The upstream connection of the exchange in flight, with its in-flight slot.
struct Upstream<R: Runtime> {
    socket: R::Socket,
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

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Drives one accepted client connection through the core until it closes.
pub(crate) async fn serve<R: Runtime>(
    mut client: R::Socket,
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
    let mut shutdown_seen = false;
    loop {
        while let Some(output) = conn.poll_output() {
            match output {
                Output::ToClient(bytes) => {
                    if R::write_all(&mut client, &bytes).await.is_err() {
                        return;
                    }
                }
                Output::OpenUpstream => {
                    upstream = None;
                    // Boxed: the connect future is large and rare, and would
                    // otherwise make every idle connection's task that big.
                    match Box::pin(open_upstream(endpoint, shared)).await {
                        Ok(u) => {
                            upstream = Some(u);
                            conn.upstream_connected(Instant::now());
                        }
                        Err(failure) => conn.upstream_failed(Instant::now(), failure),
                    }
                }
                Output::ToUpstream(bytes) => {
                    let written = match upstream.as_mut() {
                        Some(u) => R::write_all(&mut u.socket, &bytes).await.is_ok(),
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
                            endpoint.pool.release(u.socket);
                        }
                    }
                }
                Output::Store {
                    test_name,
                    interaction,
                } => Box::pin(store::<R>(shared, test_name, *interaction)).await,
                Output::Event(event) => shared.stats.observe(&event),
                Output::CloseClient => {
                    let _ = R::sock_ref(&client).shutdown(Shutdown::Write);
                    // What the core queued after the close still counts
                    // (e.g. the event explaining a 408 or a 504).
                    while let Some(output) = conn.poll_output() {
                        match output {
                            Output::Event(event) => shared.stats.observe(&event),
                            Output::Store {
                                test_name,
                                interaction,
                            } => Box::pin(store::<R>(shared, test_name, *interaction)).await,
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
        let wake = {
            let mut client_ready = pin!(want_client.then(|| R::readable(&client)));
            let mut upstream_ready = pin!(upstream
                .as_ref()
                .filter(|_| want_upstream)
                .map(|u| R::readable(&u.socket)));
            let mut timer = pin!(deadline.map(R::sleep_until));
            let mut shutdown = pin!((!shutdown_seen).then(|| shared.shutdown.wait()));
            if client_ready.is_none()
                && upstream_ready.is_none()
                && timer.is_none()
                && shutdown.is_none()
            {
                // Nothing can ever happen on this connection again.
                return;
            }
            poll_fn(|cx| {
                if poll_option(timer.as_mut(), cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                if poll_option(shutdown.as_mut(), cx).is_ready() {
                    return Poll::Ready(Wake::Shutdown);
                }
                if let Poll::Ready(r) = poll_option(upstream_ready.as_mut(), cx) {
                    return Poll::Ready(Wake::Upstream(r));
                }
                if let Poll::Ready(r) = poll_option(client_ready.as_mut(), cx) {
                    return Poll::Ready(Wake::Client(r));
                }
                Poll::Pending
            })
            .await
        };
        match wake {
            Wake::Timer => conn.handle_timeout(Instant::now()),
            Wake::Shutdown => {
                shutdown_seen = true;
                conn.begin_shutdown(Instant::now());
            }
            Wake::Client(ready) => {
                if ready.is_err() {
                    return;
                }
                // A buffer is attached only for the read itself.
                let mut buf = shared.buffers.take();
                match R::try_read(&client, &mut buf) {
                    Ok(0) => conn.handle_client_eof(Instant::now()),
                    Ok(n) => conn.handle_client_bytes(Instant::now(), &buf[..n]),
                    Err(e) if is_retry(&e) => {}
                    Err(_) => return,
                }
            }
            Wake::Upstream(ready) => {
                let mut buf = shared.buffers.take();
                let read = match (ready, upstream.as_ref()) {
                    (Ok(()), Some(u)) => R::try_read(&u.socket, &mut buf),
                    (Err(e), _) => Err(e),
                    (Ok(()), None) => Ok(0),
                };
                match read {
                    Ok(0) => {
                        upstream = None;
                        conn.handle_upstream_eof(Instant::now())
                    }
                    Ok(n) => conn.handle_upstream_bytes(Instant::now(), &buf[..n]),
                    Err(e) if is_retry(&e) => {}
                    Err(_) => {
                        upstream = None;
                        conn.handle_upstream_eof(Instant::now())
                    }
                }
            }
        }
    }
}

/// A slot under the in-flight limit, then a pooled or new upstream connection.
async fn open_upstream<R: Runtime>(
    endpoint: &Endpoint<R>,
    shared: &Shared,
) -> Result<Upstream<R>, UpstreamFailure> {
    let permit = shared.in_flight.acquire::<R>().await?;
    let socket = endpoint.pool.open().await?;
    Ok(Upstream {
        socket,
        _permit: permit,
    })
}

/// Writes one interaction on a blocking thread; the connection waits for it,
/// so the file is on disk before the next request on it is read.
async fn store<R: Runtime>(shared: &Shared, test_name: String, interaction: Interaction) {
    let Some(recorder) = shared.recorder.clone() else {
        return;
    };
    let name = test_name.clone();
    // Counted until written, so a shutdown waits for the file.
    let writing = shared.stores.enter();
    let result = R::spawn_blocking(move || {
        let result = recorder.store(&name, interaction);
        drop(writing);
        result
    })
    .await;
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
