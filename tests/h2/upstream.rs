//! A real upstream for the HTTP/2 tests: hyper 1 serving HTTP/1.1 and h2c
//! with prior knowledge on one port (`hyper_util`'s auto builder). It counts
//! connections, requests and the most requests in flight at once, and tells
//! in `x-upstream-version` which protocol a request came over.
//!
//! Routes:
//! * `GET /` and `POST /`: `hello from the upstream` (for httpwg);
//! * `GET /hello`: a short text body;
//! * `POST /echo`: the request body back, `x-request-bytes` its length;
//! * `GET /trailers`: two DATA chunks, then trailers (`x-checksum`, `grpc-status`);
//! * `GET /empty`: 200 whose HEADERS end the stream (no DATA at all);
//! * `GET /only-trailers`: HEADERS, then a trailer section, no DATA;
//! * `GET /item/N`: `item N` after a few milliseconds (for concurrency);
//! * `GET /big`: 300 KiB in three chunks, more than one client window;
//! * `GET /hang`: never answers; `GET /stall`: one DATA chunk, then nothing;
//! * anything else: 404.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
pub struct Counters {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_with(None).await
    }

    /// An upstream advertising SETTINGS_MAX_CONCURRENT_STREAMS = `max_streams` on h2.
    pub async fn start_with(max_streams: Option<u32>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let task = tokio::spawn(async move {
            // Aborting the accept task drops this set, which aborts every
            // connection: stopping the upstream really stops it.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let c = Arc::clone(&c);
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, Arc::clone(&c)));
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(max_streams);
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Upstream {
            addr,
            counters,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Stops listening and cuts every connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn frames(frames: Vec<Frame<Bytes>>) -> Body {
    StreamBody::new(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, Infallible>),
    ))
    .boxed()
}

fn trailers(fields: &[(&'static str, &'static str)]) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    for (n, v) in fields {
        map.append(*n, HeaderValue::from_static(v));
    }
    Frame::trailers(map)
}

/// The 300 KiB body of `GET /big`: a position-dependent pattern.
pub fn big_body() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i % 251) as u8).collect()
}

async fn handle(req: Request<Incoming>, c: Arc<Counters>) -> Result<Response<Body>, Infallible> {
    c.requests.fetch_add(1, Ordering::SeqCst);
    let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    c.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let resp = route(req).await;
    c.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(resp)
}

async fn route(req: Request<Incoming>) -> Response<Body> {
    let version = format!("{:?}", req.version());
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let builder = Response::builder()
        .header("x-upstream-version", version)
        .header("content-type", "text/plain");
    let builder = match path.as_str() {
        "/trailers" => builder.header("trailer", "x-checksum, grpc-status"),
        "/only-trailers" => builder.header("trailer", "grpc-status, grpc-message"),
        _ => builder,
    };
    let (status, body) = match (method.as_str(), path.as_str()) {
        ("GET" | "POST", "/") => {
            let _ = req.into_body().collect().await;
            (200, full("hello from the upstream\n"))
        }
        ("GET", "/hello") => (200, full("hello over the wire\n")),
        ("POST", "/echo") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let builder = builder.header("x-request-bytes", body.len().to_string());
            return builder.status(200).body(full(body)).unwrap();
        }
        // `Trailer` declares the fields: hyper sends HTTP/1.1 trailers only
        // when they are declared and the request says `TE: trailers`.
        ("GET", "/trailers") => (
            200,
            frames(vec![
                Frame::data(Bytes::from_static(b"part one\n")),
                Frame::data(Bytes::from_static(b"part two\n")),
                trailers(&[("x-checksum", "1234"), ("grpc-status", "0")]),
            ]),
        ),
        ("GET", "/empty") => {
            let builder = builder.header("x-empty", "yes");
            return builder.status(200).body(Empty::new().boxed()).unwrap();
        }
        ("GET", "/only-trailers") => (
            200,
            frames(vec![trailers(&[
                ("grpc-status", "5"),
                ("grpc-message", "not found"),
            ])]),
        ),
        ("GET", "/big") => {
            let big = Bytes::from(big_body());
            let third = big.len() / 3;
            (
                200,
                frames(vec![
                    Frame::data(big.slice(..third)),
                    Frame::data(big.slice(third..2 * third)),
                    Frame::data(big.slice(2 * third..)),
                ]),
            )
        }
        ("GET", "/hang") => std::future::pending().await,
        ("GET", "/stall") => {
            let first = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
                Bytes::from_static(b"first part\n"),
            ))]);
            let body = futures_util::StreamExt::chain(first, futures_util::stream::pending());
            (200, BodyExt::boxed(StreamBody::new(body)))
        }
        ("GET", p) if p.starts_with("/item/") => {
            let n: u64 = p["/item/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(20 + n % 5)).await;
            (200, full(format!("item {n}\n")))
        }
        _ => (404, full("no such path\n")),
    };
    builder
        .status(StatusCode::from_u16(status).unwrap())
        .body(body)
        .unwrap()
}
