//! Heap held by an idle HTTP/2 connection, measured with a counting
//! allocator (this test binary only): no preallocated frame buffers.

use ouli_core::h2::conn::{Connection, H2Event};
use ouli_core::h2::frame::{Frame, Setting};
use ouli_core::h2::hpack::Encoder;
use ouli_core::h2::PREFACE;
use ouli_core::message::Header;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Limit on the heap an idle server connection may hold after an exchange.
const IDLE_HEAP_LIMIT: isize = 4 * 1024;

#[test]
fn idle_server_connection_holds_little_heap() {
    let now = Instant::now();
    // Everything the peer sends, prepared before measuring.
    let mut input = bytes::BytesMut::from(&PREFACE[..]);
    Frame::Settings {
        ack: false,
        params: vec![Setting {
            id: 4,
            value: 1 << 20,
        }],
    }
    .encode(&mut input);
    Frame::Settings {
        ack: true,
        params: vec![],
    }
    .encode(&mut input);
    let mut block = bytes::BytesMut::new();
    Encoder::with_dynamic_table(4096).encode(
        &[
            Header::new(":method", "POST"),
            Header::new(":scheme", "http"),
            Header::new(":authority", "example.com"),
            Header::new(":path", "/a/fairly/long/path?with=query"),
            Header::new("user-agent", "memory-test/1.0"),
        ],
        &mut block,
    );
    Frame::Headers {
        stream: 1,
        priority: None,
        block: block.freeze(),
        end_stream: false,
        end_headers: true,
        padding: None,
    }
    .encode(&mut input);
    Frame::Data {
        stream: 1,
        data: bytes::Bytes::from(vec![b'x'; 16_000]),
        end_stream: true,
        padding: None,
    }
    .encode(&mut input);
    let input = input.freeze();

    let before = LIVE.load(Ordering::SeqCst);
    let mut conn = Connection::server(now);
    let fresh = LIVE.load(Ordering::SeqCst) - before;
    conn.handle_bytes(now, &input);
    while let Some(event) = conn.poll_event() {
        if let H2Event::Data { stream, data, .. } = event {
            conn.release_capacity(stream, data.len());
        }
    }
    conn.send_response(1, 200, &[Header::new("content-type", "text/plain")], false)
        .unwrap();
    conn.send_data(1, b"done", true).unwrap();
    while conn.poll_transmit().is_some() {}
    let idle = LIVE.load(Ordering::SeqCst) - before;
    println!("fresh connection: {fresh} heap bytes; idle after one exchange: {idle}");
    assert_eq!(conn.active_streams(), 0);
    assert!(
        fresh <= 256,
        "a new connection allocates only its SETTINGS bytes ({fresh})"
    );
    assert!(
        idle <= IDLE_HEAP_LIMIT,
        "idle connection holds {idle} heap bytes"
    );
    drop(conn);
}
