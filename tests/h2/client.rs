//! The `h2` crate's client over a real TCP connection, and a response as
//! the test compares it.

use crate::support::{io_timeout, io_timeout_for};
use bytes::Bytes;
use h2::client::SendRequest;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// A response as an HTTP/2 client saw it. Header lists are sorted: the h2
/// crate hands them over as a map without wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Option<Vec<(String, String)>>,
    /// The HEADERS frame carried END_STREAM: no DATA, no trailers.
    pub ended_with_headers: bool,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn sorted(map: &http::HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = map
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

/// Opens an h2c connection with prior knowledge; the connection task runs
/// in the background until the returned handle and its clones are dropped.
pub async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = io_timeout("connect", TcpStream::connect(addr))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = io_timeout("h2 handshake", h2::client::handshake(tcp))
        .await
        .unwrap_or_else(|e| panic!("h2 handshake with {addr} failed: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// One request on an open connection, the whole response read (and its
/// window released as it is read).
pub async fn request(
    send: &SendRequest<Bytes>,
    test: &str,
    method: &str,
    path: &str,
    body: Bytes,
) -> H2Response {
    request_with(send, test, method, path, &[], body).await
}

/// [`request`] with extra request headers.
pub async fn request_with(
    send: &SendRequest<Bytes>,
    test: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> H2Response {
    let what = format!("{method} {path} over h2");
    io_timeout_for(Duration::from_secs(30), &what, async {
        let mut send = send
            .clone()
            .ready()
            .await
            .unwrap_or_else(|e| panic!("{what}: connection not ready: {e}"));
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://ouli.test{path}"))
            .header("x-ouli-test-name", test);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let end = body.is_empty();
        let (resp, mut stream) = send
            .send_request(req.body(()).unwrap(), end)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if !end {
            // h2 queues what the window does not take and sends it as the
            // proxy opens the window.
            stream.send_data(body, true).unwrap();
        }
        let resp = resp.await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let (parts, mut body) = resp.into_parts();
        let ended_with_headers = body.is_end_stream();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("{what}: body: {e}"));
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .unwrap_or_else(|e| panic!("{what}: trailers: {e}"));
        H2Response {
            status: parts.status.as_u16(),
            headers: sorted(&parts.headers),
            body: data,
            trailers: trailers.as_ref().map(sorted),
            ended_with_headers,
        }
    })
    .await
}
