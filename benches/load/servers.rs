//! The two upstreams of the load bench: the minimal hyper server (the
//! ceiling: answering from memory with nothing else to do) and a WebSocket
//! echo server. Each prints `listening on ADDR` on its first stdout line.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// The body every answer carries, hyper's and the recordings'.
pub const BODY: &[u8] = b"Hello from the Ouli load bench upstream!\n";
/// Its content type.
pub const CONTENT_TYPE: &str = "text/plain";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn bind(addr: &str) -> TcpListener {
    let listener = TcpListener::bind(addr).await.expect("bind");
    println!(
        "listening on {}",
        listener.local_addr().expect("local addr")
    );
    std::io::stdout().flush().ok();
    listener
}

/// HTTP/1.1 and h2c (prior knowledge) on one port, like Ouli: 200,
/// `content-type`, `content-length` and hyper's own `date`.
pub fn hyper_server(addr: &str) {
    runtime().block_on(async {
        let listener = bind(addr).await;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors: let connections drain.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", CONTENT_TYPE)
                            .body(Full::new(Bytes::from_static(BODY)))
                            .expect("response"),
                    )
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Echoes every data message back; answers a close with a close.
pub fn ws_echo_server(addr: &str) {
    runtime().block_on(async {
        let listener = bind(addr).await;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(_) | Message::Binary(_) => {
                            let echoed = ws.send(msg).await;
                            if echoed.is_err() {
                                return;
                            }
                        }
                        Message::Close(_) => {
                            // tungstenite answers the close itself; drain to the end.
                            let _ = ws.close(None).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    })
}
