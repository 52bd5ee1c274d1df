//! Criterion benches of Ouli's sans-IO core: the codecs and the replay
//! engine, each reporting throughput.
//!
//! ```text
//! cargo bench -p ouli-benches --bench core                 # all, ~2 s each
//! cargo bench -p ouli-benches --bench core -- h1/          # a group
//! ```
//!
//! Warm-up (1 s) and measurement (2 s) times are set in code so the whole
//! suite stays quick; pass `--warm-up-time`/`--measurement-time` to override.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ouli_core::engine::{fingerprint, Lookup, MatchPolicy, OnRepeat, ReplayIndex};
use ouli_core::h1::{
    encode_chunk, encode_last_chunk, encode_response_head, BodyFraming, ChunkEvent, ChunkedDecoder,
    H1Limits, RequestDecoder, RequestEvent,
};
use ouli_core::h2::frame::{Frame, FrameDecoder};
use ouli_core::h2::hpack::{Decoder as HpackDecoder, Encoder as HpackEncoder};
use ouli_core::message::{Header, ResponseHead, Version};
use ouli_core::store::{Framing, Interaction, Peer, RecordedRequest, RecordedResponse, Recording};
use ouli_core::ws::{self, Opcode, WsLimits};
use std::hint::black_box;
use std::time::Duration;

const SMALL_REQUEST: &[u8] = b"GET /v1/items?id=42 HTTP/1.1\r\nHost: api.example.com\r\n\
User-Agent: ouli-bench/1.0\r\nAccept: */*\r\n\r\n";

/// A browser-sized request: 40 header fields, about 2 KB.
fn request_with_40_headers() -> Vec<u8> {
    let mut r = b"GET /v1/items?id=42&page=3 HTTP/1.1\r\nHost: api.example.com\r\n".to_vec();
    let fixed: [(&str, &str); 8] = [
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.9,fr;q=0.8"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Cookie", "session=4f1c2a9e8b7d6c5e4f3a2b1c0d9e8f7a; theme=dark; consent=yes"),
        ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl"),
        ("Cache-Control", "no-cache"),
        ("Referer", "https://app.example.com/dashboard/items"),
    ];
    for (n, v) in fixed {
        r.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    // 1 (Host) + 8 + 31 = 40 fields.
    for i in 0..31 {
        r.extend_from_slice(
            format!("X-Custom-Header-{i:02}: value-{i:04}-abcdefghij\r\n").as_bytes(),
        );
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// Decodes one whole request from `wire` with a keep-alive decoder.
fn parse_request(decoder: &mut RequestDecoder, buf: &mut BytesMut, wire: &[u8]) -> usize {
    buf.extend_from_slice(wire);
    let mut fields = 0;
    loop {
        match decoder.decode(buf) {
            Ok(Some(RequestEvent::Head(head, _))) => fields = head.headers.len(),
            Ok(Some(RequestEvent::End)) => return fields,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the bench request must parse"),
        }
    }
}

fn h1(c: &mut Criterion) {
    let mut g = c.benchmark_group("h1");
    let big = request_with_40_headers();
    for (name, wire) in [
        ("parse_request_small", SMALL_REQUEST.to_vec()),
        ("parse_request_40_headers", big),
    ] {
        g.throughput(Throughput::Bytes(wire.len() as u64));
        let mut decoder = RequestDecoder::new(H1Limits::default());
        let mut buf = BytesMut::with_capacity(4096);
        g.bench_function(name, |b| {
            b.iter(|| black_box(parse_request(&mut decoder, &mut buf, black_box(&wire))))
        });
    }

    let head = ResponseHead {
        status: 200,
        reason: Bytes::from_static(b"OK"),
        version: Version::Http11,
        headers: vec![
            Header::new("Content-Type", "application/json; charset=utf-8"),
            Header::new("Date", "Thu, 01 Jan 2026 00:00:00 GMT"),
            Header::new("Server", "api.example.com"),
            Header::new("Cache-Control", "private, max-age=0"),
            Header::new("X-Request-Id", "5b0c6a6e-1f0e-4c3b-9d61-7c1b3a0f2e11"),
            Header::new("Vary", "Accept-Encoding"),
        ],
    };
    let body = Bytes::from(vec![b'x'; 512]);
    let mut out = BytesMut::with_capacity(4096);
    encode_response_head(&head, BodyFraming::Length(body.len() as u64), &mut out);
    out.extend_from_slice(&body);
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("serialize_response_512b", |b| {
        b.iter(|| {
            out.clear();
            encode_response_head(
                black_box(&head),
                BodyFraming::Length(body.len() as u64),
                &mut out,
            );
            out.extend_from_slice(black_box(&body));
            black_box(out.len())
        })
    });

    // 64 chunks of 1 KiB, then the last chunk with one trailer.
    let mut chunked = BytesMut::new();
    let piece = vec![b'c'; 1024];
    for _ in 0..64 {
        encode_chunk(&piece, &mut chunked);
    }
    encode_last_chunk(&[Header::new("X-Checksum", "abc123")], &mut chunked);
    let chunked = chunked.freeze();
    g.throughput(Throughput::Bytes(chunked.len() as u64));
    g.bench_function("chunked_decode_64x1k", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&chunked[..]),
            |buf| {
                let mut d = ChunkedDecoder::new(H1Limits::default());
                let mut data = 0usize;
                loop {
                    match d.decode(buf) {
                        Ok(Some(ChunkEvent::Data(bytes))) => data += bytes.len(),
                        Ok(Some(ChunkEvent::End)) => return data,
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => panic!("the bench body must decode"),
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn item_request(i: usize) -> RecordedRequest {
    RecordedRequest {
        method: Bytes::from_static(b"GET"),
        target: Bytes::from(format!("/v1/items/{i}?fields=name,price")),
        headers: vec![
            Header::new("Host", "api.example.com"),
            Header::new("Accept", "application/json"),
        ],
        body: Bytes::new(),
    }
}

fn engine(c: &mut Criterion) {
    const RECORDINGS: usize = 10_000;
    let policy = MatchPolicy {
        on_repeat: OnRepeat::RepeatLast,
        ..MatchPolicy::default()
    };
    let mut recording = Recording::new("default");
    for i in 0..RECORDINGS {
        let request = item_request(i);
        recording.interactions.push(Interaction {
            fingerprint: fingerprint(&policy, &request).to_string(),
            request,
            response: RecordedResponse {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                headers: vec![Header::new("Content-Type", "application/json")],
                framing: Framing::Length,
                chunks: vec![Bytes::from(format!("{{\"id\":{i}}}"))],
                trailers: vec![],
            },
            websocket: None,
        });
    }
    let index = ReplayIndex::new([recording]);
    let requests: Vec<RecordedRequest> = (0..RECORDINGS).map(item_request).collect();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("fingerprint_and_lookup_10k_recordings", |b| {
        b.iter(|| {
            i = (i + 7919) % RECORDINGS;
            let request = &requests[i];
            let fp = fingerprint(&policy, request);
            match index.lookup(&policy, "default", request, fp) {
                Lookup::Hit(interaction) => black_box(interaction),
                Lookup::Miss(_) => panic!("every bench request is recorded"),
            }
        })
    });
    g.finish();
}

/// A request header list as an HTTP/2 client sends it; `i` varies the
/// path and request id so the dynamic table keeps changing.
fn h2_request_headers(i: usize) -> Vec<Header> {
    vec![
        Header::new(":method", "GET"),
        Header::new(":scheme", "http"),
        Header::new(":path", format!("/v1/items/{i}?fields=name,price")),
        Header::new(":authority", "api.example.com"),
        Header::new("user-agent", "ouli-bench/1.0"),
        Header::new("accept", "application/json"),
        Header::new("accept-encoding", "gzip, deflate, br"),
        Header::new("x-request-id", format!("req-{i:08}")),
    ]
}

const H2_BLOCKS: usize = 100;

/// 100 HEADERS frames (streams 1, 3, ...) each with a 1 KiB DATA frame
/// after it, HPACK-coded with a 4 KiB dynamic table.
fn h2_wire(with_data: bool) -> (Bytes, Vec<Bytes>) {
    let mut encoder = HpackEncoder::with_dynamic_table(4096);
    let mut wire = BytesMut::new();
    let mut blocks = Vec::new();
    for i in 0..H2_BLOCKS {
        let stream = 2 * i as u32 + 1;
        let mut block = BytesMut::new();
        encoder.encode(&h2_request_headers(i), &mut block);
        let block = block.freeze();
        blocks.push(block.clone());
        Frame::Headers {
            stream,
            priority: None,
            block,
            end_stream: !with_data,
            end_headers: true,
            padding: None,
        }
        .encode(&mut wire);
        if with_data {
            Frame::Data {
                stream,
                data: Bytes::from(vec![b'd'; 1024]),
                end_stream: true,
                padding: None,
            }
            .encode(&mut wire);
        }
    }
    (wire.freeze(), blocks)
}

/// In-memory I/O for the `h2` crate's codec: reads `wire`, discards writes.
struct Mem(std::io::Cursor<Bytes>);

impl tokio::io::AsyncRead for Mem {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Mem {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The `h2` crate's frame codec (its `unstable` API) reading HEADERS frames,
/// HPACK included, from memory: the baseline for ours. (Its HPACK decoder
/// alone is not public, even with `unstable`.)
fn h2_crate_decode(wire: &Bytes) -> usize {
    use futures_util::StreamExt;
    let mut codec: h2::Codec<Mem, Bytes> = h2::Codec::new(Mem(std::io::Cursor::new(wire.clone())));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut n = 0;
    loop {
        match codec.poll_next_unpin(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                n += 1;
                black_box(frame);
            }
            std::task::Poll::Ready(None) => return n,
            other => panic!("h2 codec: {other:?}"),
        }
    }
}

fn h2(c: &mut Criterion) {
    let mut g = c.benchmark_group("h2");
    let (wire, blocks) = h2_wire(true);
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("frame_decode_100_headers_and_data", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| {
                let mut d = FrameDecoder::new();
                let mut n = 0;
                while let Ok(Some(frame)) = d.decode(buf) {
                    black_box(frame);
                    n += 1;
                }
                assert_eq!(n, 2 * H2_BLOCKS);
            },
            BatchSize::SmallInput,
        )
    });

    g.throughput(Throughput::Elements(H2_BLOCKS as u64));
    g.bench_function("hpack_decode_100_request_blocks", |b| {
        b.iter(|| {
            let mut d = HpackDecoder::new(4096);
            for block in &blocks {
                black_box(d.decode(block).expect("our own encoding decodes"));
            }
        })
    });

    // Frame + HPACK together, ours and the h2 crate's, on the same bytes.
    let (headers_only, _) = h2_wire(false);
    g.throughput(Throughput::Elements(H2_BLOCKS as u64));
    g.bench_function("frame_and_hpack_decode_100_requests/ouli", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&headers_only[..]),
            |buf| {
                let mut frames = FrameDecoder::new();
                let mut hpack = HpackDecoder::new(4096);
                while let Ok(Some(frame)) = frames.decode(buf) {
                    if let Frame::Headers { block, .. } = frame {
                        black_box(hpack.decode(&block).expect("decodes"));
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(h2_crate_decode(&headers_only), H2_BLOCKS);
    g.bench_function("frame_and_hpack_decode_100_requests/h2_crate", |b| {
        b.iter(|| black_box(h2_crate_decode(&headers_only)))
    });
    g.finish();
}

fn websocket(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws");
    for size in [125usize, 16 * 1024] {
        let payload = vec![b'w'; size];
        let mut out = BytesMut::with_capacity(size + 16);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("encode_masked_{size}b"), |b| {
            b.iter(|| {
                out.clear();
                ws::encode_frame(
                    Opcode::Binary,
                    true,
                    black_box(&payload),
                    Some([1, 2, 3, 4]),
                    &mut out,
                );
                black_box(out.len())
            })
        });
        g.bench_function(format!("encode_unmasked_{size}b"), |b| {
            b.iter(|| {
                out.clear();
                ws::encode_frame(Opcode::Binary, true, black_box(&payload), None, &mut out);
                black_box(out.len())
            })
        });

        for (from, mask, label) in [
            (Peer::Client, Some([9u8, 8, 7, 6]), "client_masked"),
            (Peer::Server, None, "server_unmasked"),
        ] {
            let mut wire = BytesMut::new();
            for _ in 0..64 {
                ws::encode_frame(Opcode::Binary, true, &payload, mask, &mut wire);
            }
            let wire = wire.freeze();
            g.throughput(Throughput::Bytes(wire.len() as u64));
            g.bench_function(format!("decode_{label}_64x{size}b"), |b| {
                b.iter_batched_ref(
                    || BytesMut::from(&wire[..]),
                    |buf| {
                        let mut d = ws::FrameDecoder::new(from, WsLimits::default());
                        let mut n = 0;
                        while let Ok(Some(frame)) = d.decode(buf) {
                            black_box(frame);
                            n += 1;
                        }
                        assert_eq!(n, 64);
                    },
                    BatchSize::SmallInput,
                )
            });
            g.throughput(Throughput::Bytes(size as u64));
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = h1, engine, h2, websocket
}
criterion_main!(benches);
