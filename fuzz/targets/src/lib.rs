//! Ouli's fuzz targets, as plain functions.
//!
//! Each `pub fn <target>(data: &[u8])` takes any bytes, drives one part of
//! `ouli-core` with them, and panics only if an invariant breaks (the core
//! itself must never panic). The same functions are called by:
//!
//! * the libFuzzer binaries in `fuzz/fuzz_targets/` (`fuzz/run.sh`, on
//!   nightly or on stable with `-s none`);
//! * `tests/corpus.rs`, which runs every committed file of
//!   `fuzz/corpus/<target>/` through its target on stable, so every plain
//!   `cargo test --workspace` exercises them.
//!
//! | target | drives |
//! |---|---|
//! | [`h1_request`] | `RequestDecoder`: heads, bodies, `decode_eof`, split invariance |
//! | [`h1_response`] | `ResponseDecoder` with or without `begin_response`, `decode_eof` |
//! | [`chunked`] | `ChunkedDecoder` |
//! | [`ws_frame`] | WebSocket `FrameDecoder` (either peer) and `MessageAssembler` |
//! | [`ws_handshake`] | requests parsed by `RequestDecoder`, then `validate_handshake` |
//! | [`store_load`] | `Recording::from_json`, the `to_json` round trip, `ReplayIndex` |
//! | [`connection_replay`] | the whole `proxy::Connection` in replay (and auto) mode, scripted |
//! | [`connection_record`] | the whole `proxy::Connection` in record mode, scripted |
//! | [`h2_frame`] | HTTP/2 `FrameDecoder`, re-encoding round trip |
//! | [`hpack_decode`] | HPACK `Decoder` over several blocks sharing one table |
//! | [`h2_connection`] | an HTTP/2 server connection fed arbitrary bytes after the preface |
//! | [`h2_differential`] | our HTTP/2 server and the `h2` crate's, fed the same client stream, must agree |
//!
//! The connection targets read their input as a [`script::Script`] of
//! adapter actions; see that module for the byte format.

#![forbid(unsafe_code)]

pub mod connection;
mod h1;
mod h2;
pub mod h2diff;
pub mod script;
pub mod seeds;
mod store;
mod ws;

pub use connection::{connection_record, connection_replay};
pub use h1::{chunked, h1_request, h1_response};
pub use h2::{h2_connection, h2_frame, hpack_decode};
pub use h2diff::h2_differential;
pub use store::store_load;
pub use ws::{ws_frame, ws_handshake};

/// A target function.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus test and the seed writer.
pub const TARGETS: &[(&str, Target)] = &[
    ("h1_request", h1_request),
    ("h1_response", h1_response),
    ("chunked", chunked),
    ("ws_frame", ws_frame),
    ("ws_handshake", ws_handshake),
    ("store_load", store_load),
    ("connection_replay", connection_replay),
    ("connection_record", connection_record),
    ("h2_frame", h2_frame),
    ("hpack_decode", hpack_decode),
    ("h2_connection", h2_connection),
    ("h2_differential", h2_differential),
];

/// How the first byte of a codec target's input cuts the rest into pieces
/// fed one at a time: sizes 1, 2, 3, 7, 16, 64, 512 or all at once.
pub(crate) fn piece_size(cfg: u8) -> usize {
    [1, 2, 3, 7, 16, 64, 512, usize::MAX][usize::from(cfg & 7)]
}

/// `data` as its first byte (0 if empty) and the rest.
pub(crate) fn split_cfg(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&cfg, rest)) => (cfg, rest),
        None => (0, &[]),
    }
}
