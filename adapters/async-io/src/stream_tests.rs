//! The same checks for every connected-socket type of this crate (`edge.rs`
//! on Linux, `portable.rs` everywhere), driven by a spawner that gives each
//! task a thread of its own.

use super::Spawner;
use async_io::{Async, Timer};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

struct ThreadSpawner;

impl Spawner for ThreadSpawner {
    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        std::thread::spawn(move || async_io::block_on(task));
    }

    async fn spawn_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        f()
    }
}

fn listener() -> Async<TcpListener> {
    Async::new(TcpListener::bind("127.0.0.1:0").unwrap()).unwrap()
}

/// A client of `addr` that first sends `request` and shuts down its
/// sending side (if given), then waits 100 ms, so a writer on the other end
/// meets a full buffer, and then reads to the end.
fn slow_reader(
    addr: std::net::SocketAddr,
    request: Option<&'static [u8]>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        if let Some(request) = request {
            c.write_all(request).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        all
    })
}

/// Reads with `readable` + `try_read` until the end of the stream, the
/// way the proxy's driver does.
macro_rules! read_to_end {
    ($stream:expr) => {
        async {
            let mut all = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                $stream.readable().await?;
                match $stream.try_read(&mut buf) {
                    Ok(0) => return io::Result::Ok(all),
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    };
}

macro_rules! stream_tests {
    ($module:ident, $stream:ty) => {
        mod $module {
            use super::*;
            type Stream = $stream;

            /// Bytes that come in pieces, with pauses, then a FIN right
            /// behind the last piece: every byte and the end arrive (a
            /// short read that also saw the FIN must not end the waits).
            #[test]
            fn pieces_then_end_of_stream_all_arrive() {
                let listener = listener();
                let addr = listener.get_ref().local_addr().unwrap();
                let client = std::thread::spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    for piece in 0..20u8 {
                        c.write_all(&[piece; 100]).unwrap();
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    c.write_all(b"last").unwrap();
                    c.shutdown(Shutdown::Write).unwrap();
                    c
                });
                let got = async_io::block_on(async {
                    let s = Stream::accept::<ThreadSpawner>(&listener).await.unwrap();
                    read_to_end!(s).await.unwrap()
                });
                drop(client.join().unwrap());
                let mut want: Vec<u8> = (0..20u8).flat_map(|p| [p; 100]).collect();
                want.extend_from_slice(b"last");
                assert_eq!(got, want);
            }

            /// Bytes and the FIN already queued when the socket is
            /// accepted: the last read is short and the FIN's edge came
            /// before it, so only the sticky hang-up ends the wait.
            #[test]
            fn an_end_queued_before_the_accept_is_seen() {
                let listener = listener();
                let addr = listener.get_ref().local_addr().unwrap();
                let mut c = TcpStream::connect(addr).unwrap();
                let sent: Vec<u8> = (0..2004).map(|i| (i % 7) as u8).collect();
                c.write_all(&sent).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                let got = async_io::block_on(async {
                    let s = Stream::accept::<ThreadSpawner>(&listener).await.unwrap();
                    // Time for the readiness edges to land before the
                    // first read.
                    Timer::after(Duration::from_millis(20)).await;
                    let deadline = async {
                        Timer::after(Duration::from_secs(10)).await;
                    };
                    futures_lite_or(read_to_end!(s), deadline).await
                });
                let got = got.expect("the end of the stream was never seen").unwrap();
                assert_eq!(got, sent);
            }

            /// A write far larger than the socket buffers waits for
            /// the peer to drain and then finishes, with every byte.
            #[test]
            fn a_write_larger_than_the_buffers_waits_for_room() {
                const BYTES: usize = 8 << 20;
                let listener = listener();
                let addr = listener.get_ref().local_addr().unwrap();
                let reader = slow_reader(addr, None);
                let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
                async_io::block_on(async {
                    let mut s = Stream::accept::<ThreadSpawner>(&listener).await.unwrap();
                    s.write_all(&data).await.unwrap();
                    s.get_ref().shutdown(Shutdown::Write).unwrap();
                });
                assert_eq!(reader.join().unwrap(), data);
            }

            /// A peer that shut down its sending side still reads: a
            /// large answer waits for room and arrives whole.
            #[test]
            fn a_half_closed_peer_still_gets_a_large_answer() {
                const BYTES: usize = 4 << 20;
                let listener = listener();
                let addr = listener.get_ref().local_addr().unwrap();
                let reader = slow_reader(addr, Some(b"request"));
                let data: Vec<u8> = (0..BYTES).map(|i| (i % 13) as u8).collect();
                async_io::block_on(async {
                    let mut s = Stream::accept::<ThreadSpawner>(&listener).await.unwrap();
                    assert_eq!(read_to_end!(s).await.unwrap(), b"request");
                    s.write_all(&data).await.unwrap();
                    s.get_ref().shutdown(Shutdown::Write).unwrap();
                });
                assert_eq!(reader.join().unwrap(), data);
            }

            /// Request and answer on many connections at once, more
            /// than one batch of events; then each peer hangs up.
            #[test]
            fn many_connections_each_get_their_answers() {
                const CONNECTIONS: usize = 300;
                const ROUNDS: usize = 5;
                let listener = listener();
                let addr = listener.get_ref().local_addr().unwrap();
                let client = std::thread::spawn(move || {
                    let mut conns: Vec<TcpStream> = (0..CONNECTIONS)
                        .map(|_| TcpStream::connect(addr).unwrap())
                        .collect();
                    for round in 0..ROUNDS {
                        for c in &mut conns {
                            c.write_all(&[round as u8; 10]).unwrap();
                        }
                        for c in &mut conns {
                            let mut answer = [0u8; 10];
                            c.read_exact(&mut answer).unwrap();
                            assert_eq!(answer, [round as u8 + 1; 10]);
                        }
                    }
                });
                async_io::block_on(async {
                    let mut streams = Vec::new();
                    for _ in 0..CONNECTIONS {
                        streams.push(Stream::accept::<ThreadSpawner>(&listener).await.unwrap());
                    }
                    let (done, finished) = std::sync::mpsc::channel();
                    for mut s in streams {
                        let done = done.clone();
                        ThreadSpawner::spawn(async move {
                            let mut buf = [0u8; 10];
                            let mut have = 0;
                            loop {
                                s.readable().await.unwrap();
                                match s.try_read(&mut buf[have..]) {
                                    Ok(0) => break,
                                    Ok(n) => have += n,
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                    Err(e) => panic!("{e}"),
                                }
                                if have == buf.len() {
                                    let answer = [buf[0] + 1; 10];
                                    s.write_all(&answer).await.unwrap();
                                    have = 0;
                                }
                            }
                            done.send(()).unwrap();
                        });
                    }
                    client.join().unwrap();
                    for _ in 0..CONNECTIONS {
                        finished.recv_timeout(Duration::from_secs(30)).unwrap();
                    }
                });
            }

            /// A connection to a closed port fails; one to a listener
            /// carries bytes both ways.
            #[test]
            fn connect_fails_cleanly_or_carries_bytes() {
                // Bound, never listening: connections are refused, and
                // no other test can be handed the port meanwhile.
                let closed =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .unwrap();
                let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
                closed.bind(&any_port.into()).unwrap();
                let closed_addr = closed.local_addr().unwrap().as_socket().unwrap();
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let server = std::thread::spawn(move || {
                    let (mut c, _) = listener.accept().unwrap();
                    c.write_all(b"hello").unwrap();
                });
                async_io::block_on(async {
                    assert!(Stream::connect::<ThreadSpawner>(closed_addr).await.is_err());
                    let s = Stream::connect::<ThreadSpawner>(addr).await.unwrap();
                    assert_eq!(read_to_end!(s).await.unwrap(), b"hello");
                });
                server.join().unwrap();
            }

            /// A wait on a silent socket stays pending (no busy loop on a
            /// stale edge) until bytes come.
            #[test]
            fn a_drained_socket_waits_for_new_bytes() {
                let listener = listener();
                let addr = listener.get_ref().local_addr().unwrap();
                let mut c = TcpStream::connect(addr).unwrap();
                async_io::block_on(async {
                    let s = Stream::accept::<ThreadSpawner>(&listener).await.unwrap();
                    c.write_all(b"one").unwrap();
                    let mut buf = [0u8; 16];
                    s.readable().await.unwrap();
                    let mut n = loop {
                        match s.try_read(&mut buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                s.readable().await.unwrap()
                            }
                            r => break r.unwrap(),
                        }
                    };
                    while n < 3 {
                        s.readable().await.unwrap();
                        n += s.try_read(&mut buf[n..]).unwrap_or(0);
                    }
                    assert_eq!(&buf[..3], b"one");
                    let waited = futures_lite_or(s.readable(), async {
                        Timer::after(Duration::from_millis(50)).await;
                    })
                    .await;
                    assert!(waited.is_none(), "readable with nothing to read");
                    c.write_all(b"two").unwrap();
                    s.readable().await.unwrap();
                });
            }
        }
    };
}

/// `Some(a)` if `a` finishes first, `None` if `b` does.
async fn futures_lite_or<A: Future>(a: A, b: impl Future<Output = ()>) -> Option<A::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(v));
        }
        b.as_mut().poll(cx).map(|()| None)
    })
    .await
}

#[cfg(target_os = "linux")]
stream_tests!(edge, crate::edge::EdgeStream);
stream_tests!(portable, crate::portable::PortableStream);
