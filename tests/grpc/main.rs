//! gRPC through the proxy: a real tonic server and a real tonic client,
//! a unary call, a server-streaming call and a failing call (trailers-only
//! response), recorded over h2c (and with `auto`), then replayed with the
//! server stopped: the same messages, the same grpc-status.
//!
//! No protoc: the prost messages are written out by hand, and the service
//! is served with `tonic::server::Grpc` on hyper (what tonic's generated
//! code does), called with `tonic::client::Grpc` over a tonic `Channel`.

#[path = "../e2e/support/mod.rs"]
mod support;

use futures_util::Stream;
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ouli_core::proxy::Mode;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{config_toml, io_timeout, read_recording, start_proxy_with, stop_proxy, TempDir};
use tokio::net::TcpListener;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(uint32, tag = "2")]
    pub index: u32,
}

const SAY_HELLO: &str = "/ouli.test.Greeter/SayHello";
const STREAM_HELLOS: &str = "/ouli.test.Greeter/StreamHellos";
const FAIL: &str = "/ouli.test.Greeter/Fail";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

struct SayHello;

impl UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFuture<Result<tonic::Response<HelloReply>, Status>>;

    fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
        Box::pin(async move {
            let mut resp = tonic::Response::new(HelloReply {
                message: format!("hello, {}", req.into_inner().name),
                index: 0,
            });
            resp.metadata_mut()
                .insert("x-greeter", "tonic".parse().unwrap());
            Ok(resp)
        })
    }
}

struct Fail;

impl UnaryService<HelloRequest> for Fail {
    type Response = HelloReply;
    type Future = BoxFuture<Result<tonic::Response<HelloReply>, Status>>;

    fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
        let name = req.into_inner().name;
        Box::pin(async move { Err(Status::not_found(format!("no greeting for {name}"))) })
    }
}

struct StreamHellos;

impl ServerStreamingService<HelloRequest> for StreamHellos {
    type Response = HelloReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Result<tonic::Response<ReplyStream>, Status>>;

    fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
        let req = req.into_inner();
        Box::pin(async move {
            // One message at a time, a little apart: separate DATA frames.
            let stream = futures_util::stream::unfold(0u32, move |i| {
                let name = req.name.clone();
                async move {
                    if i >= req.count {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let reply = HelloReply {
                        message: format!("hello #{i}, {name}"),
                        index: i,
                    };
                    Some((Ok(reply), i + 1))
                }
            });
            Ok(tonic::Response::new(Box::pin(stream) as ReplyStream))
        })
    }
}

/// The tonic server on hyper (HTTP/2 only), until the handle is aborted.
async fn start_server(calls: Arc<AtomicUsize>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let calls = Arc::clone(&calls);
            conns.spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let codec = ProstCodec::<HelloReply, HelloRequest>::default();
                            let mut grpc = tonic::server::Grpc::new(codec);
                            let resp = match req.uri().path() {
                                SAY_HELLO => grpc.unary(SayHello, req).await,
                                FAIL => grpc.unary(Fail, req).await,
                                STREAM_HELLOS => grpc.server_streaming(StreamHellos, req).await,
                                _ => Status::unimplemented("no such method").into_http(),
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Everything the client saw of the three calls.
#[derive(Debug, PartialEq)]
struct Calls {
    unary: HelloReply,
    unary_headers: Vec<(String, String)>,
    streamed: Vec<HelloReply>,
    stream_trailers: Vec<(String, String)>,
    failure: (Code, String),
}

fn sorted(map: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = map
        .clone()
        .into_headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn named<T>(msg: T, test: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("x-ouli-test-name", test.parse().unwrap());
    req
}

async fn call_all(addr: SocketAddr, test: &str) -> Calls {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let mut grpc = tonic::client::Grpc::new(channel);

    grpc.ready().await.unwrap();
    let req = named(
        HelloRequest {
            name: "ouli".into(),
            count: 0,
        },
        test,
    );
    let resp = grpc
        .unary(
            req,
            PathAndQuery::from_static(SAY_HELLO),
            ProstCodec::default(),
        )
        .await
        .unwrap_or_else(|s| panic!("unary call failed: {s:?}"));
    let unary_headers = sorted(resp.metadata());
    let unary: HelloReply = resp.into_inner();

    grpc.ready().await.unwrap();
    let req = named(
        HelloRequest {
            name: "stream".into(),
            count: 5,
        },
        test,
    );
    let resp = grpc
        .server_streaming(
            req,
            PathAndQuery::from_static(STREAM_HELLOS),
            ProstCodec::default(),
        )
        .await
        .unwrap_or_else(|s| panic!("streaming call failed: {s:?}"));
    let mut stream = resp.into_inner();
    let mut streamed = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        streamed.push(reply);
    }
    let stream_trailers = stream
        .trailers()
        .await
        .unwrap()
        .map(|t| sorted(&t))
        .unwrap_or_default();

    grpc.ready().await.unwrap();
    let req = named(
        HelloRequest {
            name: "nobody".into(),
            count: 0,
        },
        test,
    );
    let status = grpc
        .unary::<_, HelloReply, _>(req, PathAndQuery::from_static(FAIL), ProstCodec::default())
        .await
        .expect_err("Fail must fail");
    Calls {
        unary,
        unary_headers,
        streamed,
        stream_trailers,
        failure: (status.code(), status.message().to_owned()),
    }
}

async fn record_then_replay(target_protocol: &str) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (server, task) = start_server(Arc::clone(&calls)).await;
    let tmp = TempDir::new("grpc");
    let dir = tmp.recordings();
    let toml = config_toml(
        server.port(),
        "",
        &format!("target_protocol = \"{target_protocol}\""),
    );
    let test = "greeter";

    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let recorded = io_timeout("record the calls", call_all(proxy.addr(), test)).await;
    let summary = stop_proxy(proxy).await;
    assert_eq!(summary.stats.recorded, 3, "{summary}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    task.abort();
    let _ = task.await;

    assert_eq!(recorded.unary.message, "hello, ouli");
    assert!(recorded
        .unary_headers
        .contains(&("x-greeter".into(), "tonic".into())));
    let messages: Vec<String> = recorded
        .streamed
        .iter()
        .map(|r| r.message.clone())
        .collect();
    assert_eq!(
        messages,
        (0..5)
            .map(|i| format!("hello #{i}, stream"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        recorded.failure,
        (Code::NotFound, "no greeting for nobody".to_owned())
    );

    // The recording holds the grpc-status trailers and the frames.
    let rec = read_recording(&dir, test);
    let interactions = rec["interactions"].as_array().unwrap();
    assert_eq!(interactions.len(), 3);
    let by_target = |t: &str| {
        &interactions
            .iter()
            .find(|i| i["request"]["target"] == t)
            .unwrap_or_else(|| panic!("{t} not recorded: {rec}"))["response"]
    };
    let unary = by_target(SAY_HELLO);
    assert!(
        unary["trailers"].to_string().contains("grpc-status"),
        "{unary}"
    );
    let streaming = by_target(STREAM_HELLOS);
    assert!(
        streaming["chunks"].as_array().unwrap().len() >= 5,
        "{streaming}"
    );
    let fail = by_target(FAIL);
    assert!(
        fail["headers"].to_string().contains("grpc-status"),
        "a trailers-only failure carries grpc-status in its only header block: {fail}"
    );

    // The server is gone: replay answers alone.
    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    let replayed = io_timeout("replay the calls", call_all(proxy.addr(), test)).await;
    let summary = stop_proxy(proxy).await;
    assert_eq!(recorded, replayed);
    assert_eq!(
        (summary.stats.replayed, summary.stats.missed),
        (3, 0),
        "{summary}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_server_streaming_record_over_h2c_and_replay() {
    record_then_replay("h2c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_records_with_auto_target_protocol() {
    record_then_replay("auto").await;
}
