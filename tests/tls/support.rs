//! Helpers for the TLS tests: certificates made at test time with rcgen, a
//! real TLS upstream (hyper serving HTTP/1.1 and HTTP/2 over tokio-rustls,
//! ALPN picking), a blocking HTTP/1.1 client over plain TCP or rustls, and
//! an `h2` crate client over tokio-rustls. The upstream and the h2 client
//! run on a helper Tokio runtime of their own, apart from the runtime under
//! test.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Bound on every single network wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The helper runtime (upstream servers, h2 clients).
pub fn helpers() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("helper runtime")
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop unless the
/// test failed.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("ouli-tls-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A CA made at test time and a server certificate it signed.
pub struct Pki {
    /// The CA certificate, as a PEM file.
    pub ca_file: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Pki {
    /// A CA, written to `dir/<tag>-ca.pem`, and a certificate for `names`;
    /// `expired` makes the server certificate one that ended in 2020.
    pub fn new(dir: &Path, tag: &str, names: &[&str], expired: bool) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, format!("test CA {tag}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        leaf.distinguished_name.push(DnType::CommonName, names[0]);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            leaf.not_before = rcgen::date_time_ymd(2019, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let leaf_cert = leaf.signed_by(&key, &issuer).unwrap();
        let ca_file = dir.join(format!("{tag}-ca.pem"));
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        Pki {
            ca_file,
            chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            key: key.serialize_der(),
        }
    }

    fn server_config(&self, alpn: &[&[u8]]) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

/// A client configuration trusting only the CA in `ca_pem`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS upstream: hyper's auto builder (HTTP/1.1 and HTTP/2) over
/// tokio-rustls. Every answer says what the upstream saw:
/// `GET /path over HTTP/1.1 scheme=None host=... sni=localhost alpn=http/1.1`,
/// except `/echo`, answered with the request body.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    /// Serves with `pki`'s certificate, offering `alpn` (server preference).
    pub fn start(pki: &Pki, alpn: &[&[u8]]) -> TlsUpstream {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(alpn)));
        let listener = helpers()
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        let task = helpers().spawn(async move {
            // Aborting this task drops the set, cutting every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, r) = (acceptor.clone(), Arc::clone(&r));
                c.fetch_add(1, Ordering::SeqCst);
                conns.spawn(async move {
                    // A failed handshake (the proxy refused the certificate)
                    // ends here: nothing is ever served in plaintext.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let session = tls.get_ref().1;
                    let sni = session.server_name().unwrap_or("-").to_owned();
                    let alpn = session
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_else(|| "-".into());
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        r.fetch_add(1, Ordering::SeqCst);
                        let seen = format!(
                            "{} {} over {:?} scheme={:?} host={} sni={sni} alpn={alpn}\n",
                            req.method(),
                            req.uri()
                                .path_and_query()
                                .map(|p| p.as_str())
                                .unwrap_or("/"),
                            req.version(),
                            req.uri().scheme_str(),
                            req.headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .or(req.uri().authority().map(|a| a.as_str()))
                                .unwrap_or("-"),
                        );
                        let echo = req.uri().path() == "/echo";
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let answer = if echo { body } else { Bytes::from(seen) };
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "text/plain")
                                    .body(Full::new(answer))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            connections,
            requests,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops listening and cuts every connection.
    pub fn stop(self) {
        self.task.abort();
        let _ = helpers().block_on(self.task);
    }
}

/// A response as a client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One `GET` over HTTP/1.1 with `Connection: close`, on plain TCP or, with
/// `tls_ca`, over TLS trusting that CA (SNI `localhost`, ALPN `http/1.1`).
/// The answer is read to the end of the stream; over TLS that end must be a
/// `close_notify`.
pub fn http1_get(addr: SocketAddr, path: &str, test: &str, tls_ca: Option<&str>) -> Response {
    http1_request(addr, "GET", path, test, b"", tls_ca)
}

/// [`http1_get`] with any method and a body (sent with a content-length).
pub fn http1_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    test: &str,
    body: &[u8],
    tls_ca: Option<&str>,
) -> Response {
    http1_offering(addr, method, path, test, body, tls_ca, &[b"http/1.1"])
}

/// [`http1_request`] over TLS offering `offer` by ALPN (as curl and
/// browsers offer h2 first); the server must pick `http/1.1`.
pub fn http1_offering(
    addr: SocketAddr,
    method: &str,
    path: &str,
    test: &str,
    body: &[u8],
    tls_ca: Option<&str>,
    offer: &[&[u8]],
) -> Response {
    let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nx-ouli-test-name: {test}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let mut raw = Vec::new();
    match tls_ca {
        None => {
            let mut tcp = tcp;
            tcp.write_all(&request).unwrap();
            tcp.read_to_end(&mut raw).unwrap();
        }
        Some(ca) => {
            let session = rustls::ClientConnection::new(
                client_config(ca, offer),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let mut tls = rustls::StreamOwned::new(session, tcp);
            tls.write_all(&request).unwrap();
            tls.read_to_end(&mut raw)
                .unwrap_or_else(|e| panic!("reading the answer over TLS: {e}"));
            assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        }
    }
    parse_http1(&raw)
}

fn parse_http1(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        let mut body = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n").expect("chunk size line");
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            body.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        body
    } else {
        rest.to_owned()
    };
    Response {
        status,
        head: head.to_owned(),
        body,
    }
}

/// One `GET` over h2 through TLS to `addr` trusting `ca_pem` (ALPN `h2`
/// only, which the listener must accept), with the `h2` crate's client.
pub fn h2_get(addr: SocketAddr, path: &str, test: &str, ca_pem: &str) -> Response {
    h2_request(addr, "GET", path, test, Vec::new(), ca_pem)
}

/// [`h2_get`] with any method and a body.
pub fn h2_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    test: &str,
    body: Vec<u8>,
    ca_pem: &str,
) -> Response {
    let path = path.to_owned();
    let test = test.to_owned();
    let method = method.to_owned();
    let config = client_config(ca_pem, &[b"h2"]);
    helpers().block_on(timeout("h2 GET", async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = h2::client::handshake(tls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = http::Request::builder()
            .method(method.as_str())
            .uri(format!("https://localhost{path}"))
            .header("x-ouli-test-name", test)
            .body(())
            .unwrap();
        let (answer, mut stream) = send.send_request(request, body.is_empty()).unwrap();
        if !body.is_empty() {
            // h2 queues what the window does not take yet.
            stream.send_data(Bytes::from(body), true).unwrap();
        }
        let answer = answer.await.unwrap();
        let status = answer.status().as_u16();
        let head = format!("{:?}", answer.headers());
        let mut body = answer.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        Response {
            status,
            head,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }))
}

async fn timeout<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(IO_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
}
