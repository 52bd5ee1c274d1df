//! The core's per-request cost on the replay path: one keep-alive HTTP/1.1
//! connection answering the same recorded request over and over through
//! `ouli_core::proxy::Connection` (parse, redact, fingerprint, lookup,
//! encode, outputs), with no sockets. Prints nanoseconds and heap
//! allocations per request, beside a baseline measured in the same
//! process: httparse parsing the same request plus encoding the same
//! response into a reused buffer (the least any HTTP server does).
//!
//! `cargo bench -p ouli-benches --bench replay_path`

use bytes::{Bytes, BytesMut};
use ouli_core::engine::{OnRepeat, ReplayIndex};
use ouli_core::message::Header;
use ouli_core::proxy::{Connection, Mode, Output, ProxySettings};
use ouli_core::store::{Framing, Interaction, RecordedRequest, RecordedResponse, Recording};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counts allocations (and reallocations) made by this process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\
Accept: */*\r\n\r\n";
const BODY: &[u8] = b"hello from the ceiling server, 41 bytes!\n";
const ROUNDS: u64 = 200_000;

fn recording() -> Recording {
    let request = RecordedRequest {
        method: Bytes::from_static(b"GET"),
        target: Bytes::from_static(b"/bench"),
        headers: vec![Header::new("host", "127.0.0.1:9000")],
        body: Bytes::new(),
    };
    let policy = ouli_core::engine::MatchPolicy::default();
    let fingerprint = ouli_core::engine::fingerprint(&policy, &request).to_string();
    let mut rec = Recording::new("default");
    rec.interactions.push(Interaction {
        fingerprint,
        request,
        response: RecordedResponse {
            status: 200,
            reason: Bytes::from_static(b"OK"),
            headers: vec![
                Header::new("content-type", "text/plain"),
                Header::new("date", "Wed, 25 Nov 2026 12:00:00 GMT"),
            ],
            framing: Framing::Length,
            chunks: vec![Bytes::from_static(BODY)],
            trailers: vec![],
        },
        websocket: None,
    });
    rec
}

/// (ns per request, allocations per request) through the core.
fn through_the_core() -> (f64, f64) {
    let mut settings = ProxySettings::new(Mode::Replay, "127.0.0.1:9000");
    settings.policy.on_repeat = OnRepeat::RepeatLast;
    let index = Arc::new(ReplayIndex::new([recording()]));
    let t0 = Instant::now();
    let mut conn = Connection::new(Arc::new(settings), Some(index), t0);
    let mut answered = 0usize;
    let mut run = |rounds: u64| {
        for _ in 0..rounds {
            conn.handle_client_bytes(t0, REQUEST);
            while let Some(out) = conn.poll_output() {
                if let Output::ToClient(bytes) = out {
                    answered += black_box(bytes).len();
                }
            }
        }
    };
    run(1_000);
    let allocs = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    run(ROUNDS);
    let ns = start.elapsed().as_nanos() as f64 / ROUNDS as f64;
    let allocs = (ALLOCATIONS.load(Ordering::Relaxed) - allocs) as f64 / ROUNDS as f64;
    assert!(answered > 0);
    (ns, allocs)
}

/// The same through httparse and a hand-written response into a reused buffer.
fn baseline() -> (f64, f64) {
    let mut out = BytesMut::with_capacity(4096);
    let mut run = |rounds: u64| {
        for _ in 0..rounds {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(black_box(REQUEST)).expect("parses");
            assert!(status.is_complete());
            out.clear();
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n");
            out.extend_from_slice(
                b"date: Wed, 25 Nov 2026 12:00:00 GMT\r\ncontent-length: 42\r\n\r\n",
            );
            out.extend_from_slice(BODY);
            black_box(&out);
        }
    };
    run(1_000);
    let allocs = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    run(ROUNDS);
    let ns = start.elapsed().as_nanos() as f64 / ROUNDS as f64;
    let allocs = (ALLOCATIONS.load(Ordering::Relaxed) - allocs) as f64 / ROUNDS as f64;
    (ns, allocs)
}

fn main() {
    let (base_ns, base_allocs) = baseline();
    let (ns, allocs) = through_the_core();
    println!("replay path, {ROUNDS} keep-alive requests in one process:");
    println!("  baseline (httparse + static response): {base_ns:8.0} ns/request, {base_allocs:5.2} allocations/request");
    println!(
        "  ouli_core::proxy::Connection replay:    {ns:8.0} ns/request, {allocs:5.2} allocations/request ({:.1}x the baseline's time)",
        ns / base_ns
    );
}
