//! The seed corpus, generated: `fuzz/corpus/<target>/seed-*` are these
//! files. `tests/corpus.rs` checks that the committed ones match, and
//! rewrites them with `OULI_WRITE_SEEDS=1 cargo test -p ouli-fuzz-targets
//! --test corpus`.

use crate::connection::{client_dictionary, replay_recording, upstream_dictionary};
use crate::h2diff::input::DiffInput;
use crate::script::{flags, Action, Script};
use bytes::{Bytes, BytesMut};
use ouli_core::h2::frame::{Frame, Setting};
use ouli_core::h2::hpack::Encoder;
use ouli_core::message::Header;
use ouli_core::ws::{encode_close, encode_frame, Opcode};

/// One seed file: target, file name (without the `seed-` prefix), bytes.
pub type Seed = (&'static str, String, Vec<u8>);

fn with_cfg(cfg: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![cfg];
    v.extend_from_slice(body);
    v
}

const REQUESTS: &[(&str, &[u8])] = &[
    ("get", b"GET /v1/items?a=1 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n"),
    (
        "post-length",
        b"POST /v1/completions HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"prompt\":\"hi\"}\n",
    ),
    (
        "put-chunked-trailers",
        b"PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n",
    ),
    (
        "pipelined",
        b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nDELETE /c HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "websocket-upgrade",
        b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ),
    (
        "smuggling-cl-te",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
];

const RESPONSES: &[(&str, u8, &[u8])] = &[
    ("length", 0x17, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"),
    (
        "chunked-trailers",
        0x10,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: 42\r\n\r\n",
    ),
    ("close-delimited", 0x07, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"),
    (
        "continue-then-final",
        0x13,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ),
    ("head-answer", 0x27, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"),
    (
        "switching",
        0x17,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    ),
];

fn client(op: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_frame(op, fin, payload, Some([1, 2, 3, 4]), &mut b);
    b.to_vec()
}

fn server(op: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_frame(op, fin, payload, None, &mut b);
    b.to_vec()
}

fn script(script_flags: u8, actions: Vec<Action>) -> Vec<u8> {
    Script {
        flags: script_flags,
        actions,
    }
    .to_bytes()
}

fn h2_frames(frames: &[Frame]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b.to_vec()
}

fn request_block(enc: &mut Encoder, path: &str) -> Bytes {
    let headers = [
        Header::new(":method", "GET"),
        Header::new(":scheme", "http"),
        Header::new(":authority", "api.example.com"),
        Header::new(":path", path.to_owned()),
        Header::new("accept", "*/*"),
        Header::new("x-ouli-test-name", "h2"),
    ];
    let mut b = BytesMut::new();
    enc.encode(headers.iter(), &mut b);
    b.freeze()
}

/// Every seed.
pub fn seeds() -> Vec<Seed> {
    let mut out: Vec<Seed> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, name.to_owned(), bytes));
    };

    for (name, req) in REQUESTS {
        add("h1_request", &format!("{name}-whole"), with_cfg(0x07, req));
        add(
            "h1_request",
            &format!("{name}-bytewise"),
            with_cfg(0x00, req),
        );
    }
    add("h1_request", "get-tight", with_cfg(0x0b, REQUESTS[0].1));
    for (name, cfg, res) in RESPONSES {
        add("h1_response", name, with_cfg(*cfg, res));
    }
    add(
        "h1_response",
        "chunked-tight-split",
        with_cfg(0x1a, RESPONSES[1].2),
    );

    add(
        "chunked",
        "two-chunks",
        with_cfg(0x07, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    );
    add(
        "chunked",
        "extensions-trailers",
        with_cfg(
            0x02,
            b"A;name=value\r\n0123456789\r\n0;last\r\nX-A: 1\r\nX-B: 2\r\n\r\nNEXT",
        ),
    );
    add(
        "chunked",
        "bytewise",
        with_cfg(0x00, b"1\r\na\r\n0\r\n\r\n"),
    );

    let mut conversation = client(Opcode::Text, false, b"hel");
    conversation.extend(client(Opcode::Ping, true, b"p"));
    conversation.extend(client(Opcode::Continuation, true, b"lo"));
    conversation.extend(client(Opcode::Binary, true, &[0, 159, 255]));
    let mut close = BytesMut::new();
    encode_close(1000, "bye", Some([9, 8, 7, 6]), &mut close);
    conversation.extend_from_slice(&close);
    add(
        "ws_frame",
        "client-conversation",
        with_cfg(0x07, &conversation),
    );
    add(
        "ws_frame",
        "client-conversation-split",
        with_cfg(0x01, &conversation),
    );
    let mut from_server = server(Opcode::Text, true, b"welcome");
    from_server.extend(server(Opcode::Binary, false, &[1; 20]));
    from_server.extend(server(Opcode::Pong, true, b""));
    from_server.extend(server(Opcode::Continuation, true, &[2; 30]));
    add(
        "ws_frame",
        "server-conversation",
        with_cfg(0x17, &from_server),
    );
    add("ws_frame", "server-tight", with_cfg(0x1b, &from_server));

    add("ws_handshake", "valid", with_cfg(0, REQUESTS[4].1));
    add(
        "ws_handshake",
        "wrong-version",
        with_cfg(
            0,
            b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        ),
    );
    add(
        "ws_handshake",
        "short-key",
        with_cfg(
            0,
            b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ),
    );

    add(
        "store_load",
        "example-default",
        include_bytes!("../../../examples/recordings/default.json").to_vec(),
    );
    add(
        "store_load",
        "replay-recording",
        replay_recording().to_json().into_bytes(),
    );

    let c = |i: usize| {
        let dict = client_dictionary();
        assert!(i < dict.len());
        Action::ClientDict(i as u8)
    };
    let u = |i: usize| {
        assert!(i < upstream_dictionary().len());
        Action::UpstreamDict(i as u8)
    };
    use Action::*;
    let replay = [
        ("get", 0, vec![c(0)]),
        ("pipelined", 0, vec![c(0), c(1), c(2), c(3), c(12)]),
        ("websocket", 0, vec![c(4), c(5), c(9), c(7), c(6), c(8)]),
        (
            "websocket-paced",
            flags::PACED,
            vec![
                c(4),
                Tick,
                c(5),
                ToDeadline,
                Advance(400),
                ToDeadline,
                c(6),
                ToDeadline,
            ],
        ),
        (
            "auto-miss-forwarded",
            flags::AUTO,
            vec![c(12), UpstreamConnected, u(0), c(0)],
        ),
        ("expect-continue", 0, vec![c(10), c(11)]),
        (
            "split-head",
            0,
            vec![c(14), Advance(5000), c(15), ToDeadline],
        ),
        ("slow-head-timeout", 0, vec![c(14), ToDeadline, c(15)]),
        ("tight", flags::TIGHT, vec![c(1), c(0)]),
        ("shutdown", 0, vec![c(0), Shutdown, c(0)]),
        ("h2c", 0, vec![c(16), c(17), ToDeadline]),
        (
            "auto-miss-over-h2",
            flags::AUTO | flags::H2_UPSTREAM,
            vec![c(12), UpstreamConnected, u(14), u(15)],
        ),
        (
            "bytes",
            0,
            vec![Client(
                b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\nGET /chat HTTP/1.1\r\n\r\n".to_vec(),
            )],
        ),
    ];
    for (name, f, actions) in replay {
        add("connection_replay", name, script(f, actions));
    }
    let record = [
        (
            "get",
            0,
            vec![
                c(0),
                UpstreamConnected,
                u(0),
                c(3),
                UpstreamConnected,
                u(10),
            ],
        ),
        ("chunked-both-ways", 0, vec![c(2), UpstreamConnected, u(1)]),
        (
            "close-delimited",
            0,
            vec![c(1), UpstreamConnected, u(2), UpstreamEof],
        ),
        (
            "websocket",
            0,
            vec![
                c(4),
                UpstreamConnected,
                u(3),
                u(4),
                c(9),
                u(7),
                c(6),
                u(5),
                c(8),
                u(6),
            ],
        ),
        (
            "websocket-bad-accept",
            0,
            vec![c(4), UpstreamConnected, u(12)],
        ),
        (
            "continue",
            0,
            vec![
                c(10),
                UpstreamConnected,
                u(8),
                u(9),
                c(11),
                UpstreamConnected,
                u(13),
            ],
        ),
        ("refused", 0, vec![c(0), UpstreamFailed(1), c(0)]),
        (
            "upstream-timeout",
            0,
            vec![c(0), UpstreamConnected, ToDeadline],
        ),
        (
            "cut-body",
            0,
            vec![
                c(0),
                UpstreamConnected,
                Upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()),
                UpstreamEof,
            ],
        ),
        ("tight", flags::TIGHT, vec![c(1), UpstreamConnected, u(1)]),
        (
            "shutdown",
            0,
            vec![c(0), Shutdown, UpstreamConnected, u(11)],
        ),
        ("h2c", 0, vec![c(16), UpstreamConnected, u(0), c(17)]),
        // Translation: HTTP/1.1 clients over an HTTP/2 upstream ...
        (
            "h1-over-h2",
            flags::H2_UPSTREAM,
            vec![c(0), UpstreamConnected, u(14), u(15), c(0), u(18)],
        ),
        (
            "h1-over-h2-trailers",
            flags::H2_UPSTREAM,
            vec![c(2), UpstreamConnected, u(14), u(16)],
        ),
        (
            "h1-over-h2-reset",
            flags::H2_UPSTREAM,
            vec![
                c(0),
                UpstreamConnected,
                u(14),
                u(19),
                c(3),
                UpstreamConnected,
                u(17),
            ],
        ),
        // ... and HTTP/2 clients over an HTTP/1.1 upstream.
        (
            "h2-over-h1",
            flags::H1_UPSTREAM,
            vec![c(16), UpstreamConnected, u(0), c(17)],
        ),
        (
            "h2-over-h1-chunked",
            flags::H1_UPSTREAM,
            vec![c(16), UpstreamConnected, u(1), UpstreamEof],
        ),
        (
            "unruly",
            flags::UNRULY,
            vec![
                UpstreamConnected,
                u(0),
                c(0),
                UpstreamFailed(0),
                UpstreamEof,
                u(3),
            ],
        ),
    ];
    for (name, f, actions) in record {
        add("connection_record", name, script(f, actions));
    }

    let mut enc = Encoder::with_dynamic_table(4096);
    let block1 = request_block(&mut enc, "/v1/items");
    let block2 = request_block(&mut enc, "/v1/items?page=2");
    let settings = Frame::Settings {
        ack: false,
        params: vec![
            Setting {
                id: 0x3,
                value: 100,
            },
            Setting {
                id: 0x4,
                value: 1 << 20,
            },
        ],
    };
    let headers = |stream, block: &Bytes, end_stream| Frame::Headers {
        stream,
        priority: None,
        block: block.clone(),
        end_stream,
        end_headers: true,
        padding: None,
    };
    let conversation = h2_frames(&[
        settings.clone(),
        Frame::Settings {
            ack: true,
            params: vec![],
        },
        headers(1, &block1, true),
        headers(3, &block2, false),
        Frame::Data {
            stream: 3,
            data: Bytes::from_static(b"hello"),
            end_stream: true,
            padding: Some(3),
        },
        Frame::WindowUpdate {
            stream: 0,
            increment: 1000,
        },
        Frame::Ping {
            ack: false,
            payload: *b"12345678",
        },
        Frame::RstStream {
            stream: 1,
            code: ouli_core::h2::ErrorCode::CANCEL,
        },
        Frame::GoAway {
            last_stream: 0,
            code: ouli_core::h2::ErrorCode::NO_ERROR,
            debug: Bytes::from_static(b"bye"),
        },
    ]);
    add("h2_frame", "conversation", with_cfg(0x07, &conversation));
    add(
        "h2_frame",
        "conversation-split",
        with_cfg(0x02, &conversation),
    );
    add(
        "h2_connection",
        "two-requests",
        with_cfg(0x07, &conversation),
    );
    add(
        "h2_connection",
        "two-requests-body",
        with_cfg(0x15, &conversation),
    );
    let mut blocks = vec![0u8];
    for b in [&block1, &block2] {
        blocks.push(b.len() as u8);
        blocks.extend_from_slice(b);
    }
    add("hpack_decode", "two-requests", blocks);
    // RFC 7541 C.4.1 (Huffman-coded request).
    let mut c41 = vec![0u8, 17];
    c41.extend_from_slice(&[
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ]);
    add("hpack_decode", "rfc7541-c4-1", c41);

    for (name, input) in differential_seeds(&conversation) {
        add("h2_differential", name, input.to_bytes());
    }
    out
}

/// Client streams for `h2_differential`: a GET, a POST with DATA, several
/// streams (one reset, one with trailers), a block in CONTINUATIONs,
/// padding and priority, a SETTINGS change, HPACK indexing, and the
/// `h2_frame` conversation as raw bytes.
fn differential_seeds(conversation: &[u8]) -> Vec<(&'static str, DiffInput)> {
    use crate::h2diff::input::{req, stream_byte as s, Field, Item, Name, Str};
    let settings = |params: Vec<(u8, u32)>| Item::Settings { flags: 0, params };
    let ack = Item::Settings {
        flags: 1,
        params: vec![],
    };
    let request = |stream, bits, method, fields: Vec<Field>| Item::Request {
        stream: s(stream),
        bits,
        method,
        path: 1,
        fragment: 0,
        fields,
    };
    let data = |stream, end: bool, len, fill| Item::Data {
        stream: s(stream),
        flags: u8::from(end),
        pad: 0,
        len,
        fill,
    };
    let get = [
        settings(vec![]),
        ack.clone(),
        request(
            1,
            req::END_STREAM,
            0,
            vec![
                Field::plain("accept", "*/*"),
                Field::plain("user-agent", "seed"),
            ],
        ),
    ];
    let post = [
        settings(vec![(3, 100)]),
        request(
            1,
            0,
            1,
            vec![
                Field::plain("content-type", "application/json"),
                Field::plain("content-length", "16"),
            ],
        ),
        ack.clone(),
        data(1, false, 10, b'{'),
        data(1, true, 6, b'}'),
    ];
    let trailers = Item::Block {
        continuation: false,
        flags: 0x05,
        stream: s(5),
        pad: 0,
        fields: vec![Field::plain("x-checksum", "42")],
    };
    let streams = [
        settings(vec![]),
        request(1, 0, 1, vec![]),
        request(
            3,
            0,
            4,
            vec![Field::plain("x-a", "1"), Field::plain("x-a", "2")],
        ),
        request(5, 0, 1, vec![Field::plain("te", "trailers")]),
        data(1, false, 100, b'a'),
        data(3, false, 200, b'b'),
        Item::Reset {
            stream: s(3),
            code: 8,
        },
        data(5, false, 7, b'c'),
        trailers,
        data(1, true, 0, 0),
        request(7, req::END_STREAM, 2, vec![]),
    ];
    let long = "v".repeat(40);
    let continuation = [
        settings(vec![]),
        Item::Request {
            stream: s(1),
            bits: req::END_STREAM,
            method: 0,
            path: 2,
            fragment: 16,
            fields: vec![
                Field::plain("x-long", &long),
                Field::plain("cookie", "a=1"),
                Field::plain("cookie", "b=2"),
            ],
        },
    ];
    let padding = [
        settings(vec![]),
        Item::Request {
            stream: s(1),
            bits: req::PADDED | req::PRIORITY,
            method: 1,
            path: 0,
            fragment: 9,
            fields: vec![],
        },
        Item::Data {
            stream: s(1),
            flags: 0x09,
            pad: 20,
            len: 3,
            fill: b'p',
        },
        Item::Priority {
            stream: s(3),
            dependency: s(1),
            weight: 255,
        },
    ];
    let settings_change = [
        settings(vec![
            (1, 0),
            (2, 0),
            (4, 1 << 20),
            (5, 32_768),
            (6, 8192),
            (0x77, 9),
        ]),
        Item::Ping { flags: 0 },
        Item::WindowUpdate {
            stream: 0,
            increment: 1 << 16,
        },
        request(1, 0, 1, vec![]),
        Item::WindowUpdate {
            stream: s(1),
            increment: 100,
        },
        data(1, true, 16_384, b'z'),
        ack,
        Item::GoAway { last: 0, code: 0 },
    ];
    let indexed = |name: u8, value: &str, mode: u8| Field::Literal {
        mode,
        name: Name::Indexed(name),
        value: Str::Raw(value.as_bytes().to_vec()),
        huffman: 2,
    };
    let hpack = [
        settings(vec![]),
        Item::Block {
            continuation: false,
            flags: 0x05,
            stream: s(1),
            pad: 0,
            fields: vec![
                Field::SizeUpdate(1024),
                Field::Indexed(2),
                Field::Indexed(7),
                indexed(1, "example.org", 0),
                indexed(4, "/a", 0),
                Field::Literal {
                    mode: 0,
                    name: Name::Str(Str::Raw(b"x-cached".to_vec())),
                    value: Str::Raw(b"yes".to_vec()),
                    huffman: 3,
                },
            ],
        },
        Item::Block {
            continuation: false,
            flags: 0x05,
            stream: s(3),
            pad: 0,
            fields: vec![
                Field::Indexed(2),
                Field::Indexed(7),
                Field::Indexed(64),
                Field::Indexed(63),
                Field::Indexed(62),
                indexed(58, "seed", 2),
            ],
        },
    ];
    let raw = conversation
        .chunks(100)
        .map(|c| Item::Raw(c.to_vec()))
        .collect();
    let input = |items: &[Item]| DiffInput {
        flags: 0,
        items: items.to_vec(),
    };
    vec![
        ("get", input(&get)),
        ("post-data", input(&post)),
        ("streams", input(&streams)),
        ("continuation", input(&continuation)),
        ("padding", input(&padding)),
        ("settings-change", input(&settings_change)),
        ("hpack-indexing", input(&hpack)),
        (
            "raw-conversation",
            DiffInput {
                flags: 0,
                items: raw,
            },
        ),
    ]
}
