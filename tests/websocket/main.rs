//! WebSocket record and replay through the real proxy with real peers:
//! tokio-tungstenite clients against tokio-tungstenite upstreams (an echo
//! server and a server that pushes unprompted), recorded, then replayed with
//! the upstream stopped.

use futures_util::{SinkExt, StreamExt};
use ouli_adapter_common::config::Config;
use ouli_core::proxy::Mode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const STEP: Duration = Duration::from_secs(10);

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ouli-ws-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A WebSocket upstream: `/echo` echoes, `/push` sends three messages at
/// once then echoes, `/bye` closes with 4002 after the first message.
async fn start_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut path = String::new();
                // The error type is tungstenite's (`ErrorResponse`), not ours to shrink.
                #[allow(clippy::result_large_err)]
                let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                                mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                    path = req.uri().path().to_owned();
                    if req.headers().get("sec-websocket-protocol").is_some() {
                        resp.headers_mut().insert("sec-websocket-protocol", "chat".parse().unwrap());
                    }
                    Ok(resp)
                };
                let mut config =
                    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
                config.max_message_size = Some(64 << 20);
                config.max_frame_size = Some(32 << 20);
                let Ok(mut ws) =
                    tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
                        .await
                else {
                    return;
                };
                if path == "/push" {
                    for i in 1..=3 {
                        let _ = ws.send(Message::text(format!("push {i}"))).await;
                    }
                }
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(_) | Message::Binary(_) if path == "/bye" => {
                            let _ = ws
                                .close(Some(CloseFrame {
                                    code: CloseCode::Library(4002),
                                    reason: "server-bye".into(),
                                }))
                                .await;
                        }
                        Message::Text(t) => {
                            let _ = ws
                                .send(Message::text(format!("echo: {}", t.as_str())))
                                .await;
                        }
                        Message::Binary(b) => {
                            let _ = ws.send(Message::Binary(b)).await;
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, task)
}

fn config(target: SocketAddr) -> Config {
    Config::from_toml_str(
        &format!(
            "[[endpoints]]\nsource_port = 0\ntarget_host = \"127.0.0.1\"\ntarget_port = {}\n\
             redact_request_headers = [\"Authorization\"]\n",
            target.port()
        ),
        "websocket-test.toml",
    )
    .unwrap()
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(proxy: SocketAddr, path: &str, test: &str) -> Client {
    let mut req = format!("ws://{proxy}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("x-ouli-test-name", test.parse().unwrap());
    req.headers_mut()
        .insert("sec-websocket-protocol", "chat".parse().unwrap());
    req.headers_mut()
        .insert("authorization", "Bearer WS-SECRET-42".parse().unwrap());
    // Like a browser: offer permessage-deflate. Ouli strips the offer so
    // both legs stay uncompressed.
    req.headers_mut().insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(64 << 20);
    config.max_frame_size = Some(32 << 20);
    let (ws, resp) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async_with_config(req, Some(config), false),
    )
    .await
    .expect("handshake in time")
    .expect("handshake succeeds");
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "chat"
    );
    assert!(resp.headers().get("sec-websocket-extensions").is_none());
    ws
}

async fn next(ws: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("message in time")
            .expect("stream open")
            .expect("valid message");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The conversation every scenario runs, identical in record and replay.
async fn run_scenarios(proxy: SocketAddr) -> Vec<String> {
    let mut log = Vec::new();
    // Text, binary, a 16 MiB message, and a fragmented message with a ping inside.
    let mut ws = connect(proxy, "/echo?room=7", "echo").await;
    ws.send(Message::text("hello")).await.unwrap();
    log.push(format!("{:?}", next(&mut ws).await));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    log.push(format!("{:?}", next(&mut ws).await));
    let big: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next(&mut ws).await {
        Message::Binary(b) => {
            assert!(b[..] == big[..], "16 MiB echo intact");
            log.push(format!("big binary {} bytes", b.len()));
        }
        other => panic!("expected the big echo, got {other:?}"),
    }
    ws.send(Message::Frame(Frame::message(
        &b"frag"[..],
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Ping("inside".into())).await.unwrap();
    ws.send(Message::Frame(Frame::message(
        &b"mented"[..],
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    log.push(format!("{:?}", next(&mut ws).await));
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "client-bye".into(),
    }))
    .await
    .unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}

    // Server-initiated messages before the client says anything.
    let mut ws = connect(proxy, "/push", "push").await;
    for _ in 0..3 {
        log.push(format!("{:?}", next(&mut ws).await));
    }
    ws.send(Message::text("ack")).await.unwrap();
    log.push(format!("{:?}", next(&mut ws).await));
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}

    // The server closes with its own code.
    let mut ws = connect(proxy, "/bye", "bye").await;
    ws.send(Message::text("please close")).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => log.push(format!(
            "server close {} {}",
            u16::from(frame.code),
            frame.reason
        )),
        other => panic!("expected the server's close, got {other:?}"),
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_conversations_record_then_replay_without_the_upstream() {
    let dir = temp_dir();
    let (upstream, upstream_task) = start_upstream().await;
    let recorder = ouli_tokio::TestProxy::start(config(upstream), Mode::Record, &dir)
        .await
        .unwrap();
    let recorded = run_scenarios(recorder.addr()).await;
    let summary = recorder.stop().await;
    assert_eq!(summary.stats.recorded, 3, "{summary}");
    upstream_task.abort();
    let _ = upstream_task.await;

    // The secret in the handshake never reaches disk; the conversation does.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("WS-SECRET-42"), "secret leaked: {text:.400}");
    }
    let echo = std::fs::read_to_string(dir.join("echo.json")).unwrap();
    assert!(
        echo.contains(r#"{"from": "client", "kind": "text""#),
        "{echo:.2000}"
    );
    assert!(
        echo.contains(r#""payload": "fragmented"}"#),
        "fragments are joined: {echo:.3000}"
    );
    assert!(echo.contains(r#""close": {"from": "client", "code": 4001, "reason": "client-bye""#));
    let bye = std::fs::read_to_string(dir.join("bye.json")).unwrap();
    assert!(
        bye.contains(r#""close": {"from": "server", "code": 4002, "reason": "server-bye""#),
        "{bye}"
    );

    // Replay with the upstream gone: the same conversation, byte for byte.
    let replayer = ouli_tokio::TestProxy::start(config(upstream), Mode::Replay, &dir)
        .await
        .unwrap();
    let replayed = run_scenarios(replayer.addr()).await;
    assert_eq!(replayed, recorded);
    let summary = replayer.stop().await;
    assert_eq!(summary.stats.missed, 0, "{summary}");
    assert_eq!(summary.stats.replayed, 3, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatching_and_hostile_client_frames_are_closed_with_their_codes() {
    let dir = temp_dir();
    let (upstream, upstream_task) = start_upstream().await;
    let recorder = ouli_tokio::TestProxy::start(config(upstream), Mode::Record, &dir)
        .await
        .unwrap();
    // One recorded conversation per connection below: identical requests
    // replay in order, so each later connection needs its own recording.
    for test in ["short", "raw0", "raw1", "raw2", "raw3", "raw4", "raw5"] {
        let mut ws = connect(recorder.addr(), "/echo", test).await;
        ws.send(Message::text("expected")).await.unwrap();
        next(&mut ws).await;
        ws.close(None).await.unwrap();
        while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    }
    recorder.stop().await;
    upstream_task.abort();

    let replayer = ouli_tokio::TestProxy::start(config(upstream), Mode::Replay, &dir)
        .await
        .unwrap();
    let mut ws = connect(replayer.addr(), "/echo", "short").await;
    ws.send(Message::text("something else")).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert!(
                frame.reason.contains("expected text \"expected\""),
                "{}",
                frame.reason
            );
            assert!(
                frame.reason.contains("got text \"something else\""),
                "{}",
                frame.reason
            );
        }
        other => panic!("expected a 1008 close, got {other:?}"),
    }

    // Raw frames a library client would refuse to send.
    let cases: [(&[u8], u16, &str); 6] = [
        (b"\x81\x02hi", 1002, "unmasked client frame"),
        (
            b"\xc1\x82\x00\x00\x00\x00hi",
            1002,
            "RSV1 with no extension",
        ),
        (
            b"\x89\xfe\x00\x7e\x00\x00\x00\x00",
            1002,
            "ping over 125 bytes",
        ),
        (
            b"\x81\x82\x00\x00\x00\x00\xff\xfe",
            1007,
            "invalid UTF-8 text",
        ),
        (
            b"\x09\x81\x00\x00\x00\x00p",
            1002,
            "fragmented control frame",
        ),
        (b"\x83\x81\x00\x00\x00\x00x", 1002, "reserved opcode 0x3"),
    ];
    for (n, (frame, code, what)) in cases.into_iter().enumerate() {
        let mut raw = TcpStream::connect(replayer.addr()).await.unwrap();
        let handshake = format!(
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             X-Ouli-Test-Name: raw{n}\r\n\r\n"
        );
        raw.write_all(handshake.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tokio::time::timeout(STEP, raw.read_exact(&mut b))
                .await
                .unwrap()
                .unwrap();
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "), "{what}");
        raw.write_all(frame).await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(STEP, raw.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest[0], 0x88, "{what}: a close frame, got {rest:?}");
        assert_eq!(&rest[2..4], &code.to_be_bytes(), "{what}");
    }
    replayer.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_configured_limit_is_closed_with_1009_while_recording() {
    let dir = temp_dir();
    let (upstream, upstream_task) = start_upstream().await;
    let config = Config::from_toml_str(
        &format!(
            "ws_max_frame_bytes = 1024\n[[endpoints]]\nsource_port = 0\ntarget_host = \"127.0.0.1\"\ntarget_port = {}\n",
            upstream.port()
        ),
        "limit.toml",
    )
    .unwrap();
    let recorder = ouli_tokio::TestProxy::start(config, Mode::Record, &dir)
        .await
        .unwrap();
    let mut ws = connect(recorder.addr(), "/echo", "limit").await;
    ws.send(Message::binary(vec![7u8; 1024])).await.unwrap();
    assert!(
        matches!(next(&mut ws).await, Message::Binary(b) if b.len() == 1024),
        "at the limit passes"
    );
    ws.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009, "{}", frame.reason),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    let summary = recorder.stop().await;
    assert_eq!(
        summary.stats.recorded, 1,
        "what came before is kept: {summary}"
    );
    upstream_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
