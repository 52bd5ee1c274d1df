//! Ouli's sans-IO core: everything a record/replay HTTP proxy decides, with
//! none of the I/O.
//!
//! Ouli stands between an application under test and the HTTP API it calls.
//! In **record** mode it forwards each request to the real upstream, passes
//! the answer back, and hands every exchange over to be stored (secrets
//! redacted). In **replay** mode it answers from those recordings only and
//! never opens a socket to the upstream; a request with no recording gets a
//! [`599`](proxy::MISS_STATUS) answer that names the closest recorded
//! requests.
//!
//! This crate is the part of Ouli that knows HTTP and the recording rules. It
//! owns no socket, file, clock, thread or async runtime: an *adapter* moves
//! bytes between the network and a [`proxy::Connection`] and carries out what
//! the connection asks for. Ouli ships async adapters (`ouli-tokio`,
//! `ouli-smol`, `ouli-async-std`, sharing `ouli-adapter-common`); the
//! repository's `examples/blocking_adapter.rs` is a complete adapter on
//! `std::net` and threads in a few hundred lines, written against this page.
//!
//! | module | what it holds |
//! |---|---|
//! | [`proxy`] | [`Connection`](proxy::Connection): one client connection's state machine, and its inputs and outputs |
//! | [`engine`] | fingerprints, redaction, and the [`ReplayIndex`](engine::ReplayIndex) that answers replay lookups |
//! | [`store`] | the recording file format ([`Recording`](store::Recording) to and from JSON text; no file access) |
//! | [`matching`] | body and query normalization and byte-level redaction behind the engine's policies |
//! | [`h1`] | the HTTP/1.1 codec (RFC 9112) the connection is built on |
//! | [`h2`] | HTTP/2 (RFC 9113): HPACK, frames and its own connection state machine |
//! | [`ws`] | WebSocket (RFC 6455) handshake and frames, for upgraded connections |
//! | [`message`] | header and head types shared by all of the above |
//!
//! # Driving a connection
//!
//! Build one [`ProxySettings`](proxy::ProxySettings) per listening endpoint
//! (shared in an [`Arc`](std::sync::Arc)), load the recordings into one
//! [`ReplayIndex`](engine::ReplayIndex) in replay mode (also shared), and
//! create a [`Connection`](proxy::Connection) for every accepted client
//! connection, then give it a fresh random seed with
//! [`set_mask_seed`](proxy::Connection::set_mask_seed) (it masks the
//! WebSocket frames Ouli itself sends upstream; the core has no randomness of
//! its own). A connection is a plain value: it is `Send`, it can live in a
//! task, a thread or an event loop's slab, and it never calls back.
//!
//! ## Inputs: what happened
//!
//! Every input takes `now`, the caller's current time, as an argument.
//!
//! | event | call |
//! |---|---|
//! | bytes arrived from the client | [`handle_client_bytes(now, &[u8])`](proxy::Connection::handle_client_bytes) |
//! | the client closed its sending side (read returned 0) | [`handle_client_eof(now)`](proxy::Connection::handle_client_eof) |
//! | bytes arrived from the upstream | [`handle_upstream_bytes(now, &[u8])`](proxy::Connection::handle_upstream_bytes) |
//! | the upstream closed, or reading or writing it failed | [`handle_upstream_eof(now)`](proxy::Connection::handle_upstream_eof) |
//! | the upstream connection asked for is ready | [`upstream_connected(now)`](proxy::Connection::upstream_connected), or [`upstream_connected_as(now, UpstreamWire)`](proxy::Connection::upstream_connected_as) with the protocol TLS ALPN picked from [`upstream_offer()`](proxy::Connection::upstream_offer) |
//! | it could not be made | [`upstream_failed(now, UpstreamFailure)`](proxy::Connection::upstream_failed) |
//! | time passed the deadline from `poll_timeout` | [`handle_timeout(now)`](proxy::Connection::handle_timeout) |
//! | the proxy is shutting down | [`begin_shutdown(now)`](proxy::Connection::begin_shutdown) |
//!
//! Storing an interaction has no result input: the connection's part ends
//! when it hands the interaction over. An adapter that promises "on disk
//! before the next request is read" finishes [`Output::Store`](proxy::Output::Store)
//! before it feeds more client bytes, which carrying out the outputs in order
//! gives for free.
//!
//! ## Outputs: what to do
//!
//! After every input, drain [`poll_output`](proxy::Connection::poll_output)
//! until it returns `None` and carry out each [`Output`](proxy::Output) in
//! the order given:
//!
//! | output | what the adapter does |
//! |---|---|
//! | [`ToClient(Bytes)`](proxy::Output::ToClient) | write all of it to the client |
//! | [`OpenUpstream`](proxy::Output::OpenUpstream) | connect to the endpoint's upstream (or take a pooled idle connection), then call `upstream_connected` or `upstream_failed` |
//! | [`ToUpstream(Bytes)`](proxy::Output::ToUpstream) | write all of it to the upstream connection |
//! | [`ReleaseUpstream { reusable }`](proxy::Output::ReleaseUpstream) | pool the upstream connection when `reusable`, close it otherwise |
//! | [`Store { test_name, interaction }`](proxy::Output::Store) | record mode: append the interaction to the test's recording |
//! | [`Event(ProxyEvent)`](proxy::Output::Event) | log or count it; nothing to carry out |
//! | [`CloseClient`](proxy::Output::CloseClient) | close the client connection (everything before it is already written) |
//!
//! Three more questions are asked, not drained, after the outputs:
//!
//! * [`poll_timeout`](proxy::Connection::poll_timeout) is the one deadline
//!   the connection needs (idle, request read, or upstream answer). Wait
//!   until then at most, and call `handle_timeout` when it is reached.
//!   Calling `handle_timeout` early, or more than once, is harmless. The
//!   deadline can change after any input, so ask again each time.
//! * [`wants_client_read`](proxy::Connection::wants_client_read) and
//!   [`wants_upstream_read`](proxy::Connection::wants_upstream_read) are the
//!   backpressure: read from a socket only while they are `true`. Bytes fed
//!   anyway are kept, not lost, but a well-behaved adapter stops reading so
//!   that a fast peer cannot grow the buffers without bound.
//! * [`is_closed`](proxy::Connection::is_closed) turns `true` once
//!   `CloseClient` has been handed out; the connection then ignores input
//!   and can be dropped.
//!
//! The loop, in the shape every adapter has:
//!
//! ```text
//! conn = Connection::new(settings, index, now)
//! loop {
//!     while let Some(output) = conn.poll_output() { carry it out }   // may call upstream_connected / _failed
//!     if conn.is_closed() { break }
//!     wait for: client readable   (if conn.wants_client_read())
//!               upstream readable (if conn.wants_upstream_read())
//!               the deadline      (conn.poll_timeout())
//!     feed what happened: handle_client_bytes / _eof, handle_upstream_bytes / _eof, handle_timeout
//! }
//! ```
//!
//! Every protocol the core speaks moves through these same calls: after a
//! WebSocket upgrade, for example, the bytes mean frames instead of HTTP
//! messages, but the adapter moves them exactly as before. An adapter has no
//! protocol-specific code.
//!
//! # Who owns which buffer
//!
//! * Input slices are borrowed for the duration of the call only: the
//!   connection copies what it needs into its own [`bytes::BytesMut`], so the
//!   caller may reuse its read buffer right away (the Tokio adapter reads into
//!   a pooled buffer and puts it back after each call).
//! * Outputs carry [`bytes::Bytes`]: cheaply clonable, reference-counted, and
//!   owned by the caller once handed out. Keep them across an `await`, send
//!   them to another thread, or write them in several pieces.
//! * An idle keep-alive connection holds no buffer: its input buffers are
//!   released when empty. Request bodies are kept (up to
//!   [`ProxySettings::max_body_bytes`](proxy::ProxySettings::max_body_bytes))
//!   because they are fingerprinted and recorded; response bodies stream
//!   through in record mode, copied only into the interaction being recorded.
//! * A [`ReplayIndex`](engine::ReplayIndex) is read-only apart from a small
//!   internal usage counter under a mutex, so one `Arc<ReplayIndex>` serves
//!   every connection on every thread.
//!
//! # How errors surface
//!
//! No input returns an error and nothing panics on any input, however
//! malformed (property tests feed the codec and the connection arbitrary
//! bytes). Every failure
//! becomes what a proxy should do about it plus an event saying why:
//!
//! * The client broke a protocol rule (see [`h1::H1Error`]): it gets the
//!   matching answer (400, 408, 413, 414, 431 or 501) with an `x-ouli-error`
//!   header and a one-line text body, the connection closes, and a
//!   [`ProxyEvent::ClientError`](proxy::ProxyEvent::ClientError) says which
//!   rule.
//! * The upstream failed (connect error, timeout, invalid response, early
//!   close): the client gets 502, 503 or 504 and a
//!   [`ProxyEvent::UpstreamError`](proxy::ProxyEvent::UpstreamError); if the
//!   answer had already started, the client connection is cut instead, so a
//!   truncated body is never mistaken for a whole one.
//! * A replay miss is an answer, not an error: status
//!   [`MISS_STATUS`](proxy::MISS_STATUS) (599) with a plain-text report and a
//!   [`ProxyEvent::Missed`](proxy::ProxyEvent::Missed).
//! * The adapter's own failures are reported back as inputs: a refused
//!   connect is [`upstream_failed`](proxy::Connection::upstream_failed), a
//!   failed upstream read or write is
//!   [`handle_upstream_eof`](proxy::Connection::handle_upstream_eof). When
//!   writing to the client fails there is nobody left to answer: drop the
//!   connection.
//!
//! Recording files that do not parse are a [`store::StoreError`] naming the
//! line, column and field.
//!
//! # Determinism
//!
//! The core reads no clock (time is the `now` argument), does no I/O, starts
//! no thread and uses no randomness (the one random value it needs, the
//! WebSocket mask seed, is an input). The same inputs at the same `now` values
//! give the same outputs, byte for byte, so a whole exchange can be tested in
//! memory with simulated time, as below.
//!
//! # Example: replay, with no sockets
//!
//! ```
//! use bytes::Bytes;
//! use ouli_core::engine::{fingerprint, MatchPolicy, ReplayIndex};
//! use ouli_core::message::Header;
//! use ouli_core::proxy::{Connection, Mode, Output, ProxySettings};
//! use ouli_core::store::{Framing, Interaction, RecordedRequest, RecordedResponse, Recording};
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! // A recording, built in code here; adapters parse it with `Recording::from_json`.
//! let policy = MatchPolicy::default();
//! let request = RecordedRequest {
//!     method: Bytes::from("GET"),
//!     target: Bytes::from("/greeting?lang=en"),
//!     headers: vec![Header::new("Host", "api.example.com")],
//!     body: Bytes::new(),
//! };
//! let mut recording = Recording::new("default");
//! recording.interactions.push(Interaction {
//!     fingerprint: fingerprint(&policy, &request).to_string(),
//!     request,
//!     response: RecordedResponse {
//!         status: 200,
//!         reason: Bytes::from("OK"),
//!         headers: vec![Header::new("Content-Type", "text/plain")],
//!         framing: Framing::Length,
//!         chunks: vec![Bytes::from("hello")],
//!         trailers: vec![],
//!     },
//!     websocket: None,
//! });
//! let index = Arc::new(ReplayIndex::new([recording]));
//! let settings = Arc::new(ProxySettings::new(Mode::Replay, "api.example.com"));
//!
//! // One client connection, accepted at t0 (simulated time).
//! let t0 = Instant::now();
//! let mut conn = Connection::new(settings.clone(), Some(index), t0);
//! // A request may arrive in any number of pieces.
//! conn.handle_client_bytes(t0, b"GET /greeting?lang=en HTTP/1.1\r\nHo");
//! assert_eq!(conn.poll_output(), None, "nothing to do until the head is complete");
//! conn.handle_client_bytes(t0, b"st: localhost:8080\r\n\r\n");
//!
//! let mut to_client = Vec::new();
//! while let Some(output) = conn.poll_output() {
//!     match output {
//!         Output::ToClient(bytes) => to_client.extend_from_slice(&bytes),
//!         Output::Event(event) => println!("{event:?}"), // ProxyEvent::Replayed
//!         other => panic!("replay never asks for {other:?}"),
//!     }
//! }
//! assert_eq!(
//!     to_client,
//!     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
//! );
//!
//! // Keep-alive: the connection now waits for the next request, until the
//! // idle deadline. Time is an argument, so the test does not sleep.
//! let deadline = conn.poll_timeout().expect("an idle deadline");
//! assert_eq!(deadline, t0 + settings.idle_timeout);
//! conn.handle_timeout(deadline - Duration::from_millis(1)); // early: ignored
//! assert_eq!(conn.poll_output(), None);
//! conn.handle_timeout(deadline);
//! assert_eq!(conn.poll_output(), Some(Output::CloseClient));
//! assert!(conn.is_closed());
//! ```
//!
//! A request with no recording gets the 599 miss answer instead:
//!
//! ```
//! # use ouli_core::engine::ReplayIndex;
//! # use ouli_core::proxy::{Connection, Mode, Output, ProxyEvent, ProxySettings, MISS_STATUS};
//! # use std::sync::Arc;
//! # use std::time::Instant;
//! let settings = Arc::new(ProxySettings::new(Mode::Replay, "api.example.com"));
//! let index = Arc::new(ReplayIndex::new([]));
//! let now = Instant::now();
//! let mut conn = Connection::new(settings, Some(index), now);
//! conn.handle_client_bytes(now, b"GET /unknown HTTP/1.1\r\nHost: x\r\n\r\n");
//! let Some(Output::ToClient(answer)) = conn.poll_output() else { panic!() };
//! assert!(answer.starts_with(format!("HTTP/1.1 {MISS_STATUS} ").as_bytes()));
//! assert!(matches!(conn.poll_output(), Some(Output::Event(ProxyEvent::Missed(_)))));
//! ```
//!
//! # Example: record, with a scripted upstream
//!
//! ```
//! use ouli_core::proxy::{Connection, Mode, Output, ProxySettings};
//! use std::sync::Arc;
//! use std::time::Instant;
//!
//! let mut settings = ProxySettings::new(Mode::Record, "api.example.com");
//! settings.policy.redact_request_headers = vec!["Authorization".into()];
//! let now = Instant::now();
//! let mut conn = Connection::new(Arc::new(settings), None, now);
//!
//! conn.handle_client_bytes(
//!     now,
//!     b"POST /items HTTP/1.1\r\nHost: localhost:8080\r\nX-Ouli-Test-Name: create-item\r\n\
//!       Authorization: Bearer SECRET\r\nContent-Length: 5\r\n\r\nhello",
//! );
//! // The connection asks for an upstream before it forwards anything.
//! assert_eq!(conn.poll_output(), Some(Output::OpenUpstream));
//! assert_eq!(conn.poll_output(), None);
//!
//! // The adapter connected (or took a pooled connection): now the request flows.
//! conn.upstream_connected(now);
//! let mut to_upstream = Vec::new();
//! while let Some(output) = conn.poll_output() {
//!     match output {
//!         Output::ToUpstream(bytes) => to_upstream.extend_from_slice(&bytes),
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! // Host rewritten, the test name header stripped; the secret still goes upstream.
//! assert_eq!(
//!     to_upstream,
//!     b"POST /items HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer SECRET\r\n\
//!       Content-Length: 5\r\n\r\nhello"
//! );
//!
//! // The upstream answers, here in two reads.
//! conn.handle_upstream_bytes(now, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n");
//! conn.handle_upstream_bytes(now, b"ok");
//! let (mut to_client, mut stored, mut released) = (Vec::new(), None, None);
//! while let Some(output) = conn.poll_output() {
//!     match output {
//!         Output::ToClient(bytes) => to_client.extend_from_slice(&bytes),
//!         Output::ReleaseUpstream { reusable } => released = Some(reusable),
//!         Output::Store { test_name, interaction } => stored = Some((test_name, interaction)),
//!         Output::Event(_) => {}
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! assert_eq!(to_client, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
//! assert_eq!(released, Some(true), "a keep-alive upstream can go back to the pool");
//!
//! // What to store: the adapter appends it to the test's recording file.
//! let (test_name, interaction) = stored.expect("record mode stores the exchange");
//! assert_eq!(test_name, "create-item");
//! assert_eq!(&interaction.request.body[..], b"hello");
//! let auth = interaction.request.headers.iter().find(|h| h.is("authorization")).unwrap();
//! assert_eq!(&auth.value[..], b"[REDACTED]", "secrets never reach the recording");
//! assert_eq!(interaction.response.status, 201);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod engine;
pub mod h1;
pub mod h2;
pub mod matching;
pub mod message;
pub mod proxy;
pub mod store;
pub mod ws;

#[cfg(test)]
mod tests {
    /// Adapters move connections between threads and share the index.
    #[test]
    fn boundary_types_are_send_and_sync() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<crate::proxy::Connection>();
        send_sync::<crate::proxy::Output>();
        send_sync::<crate::proxy::ProxySettings>();
        send_sync::<crate::engine::ReplayIndex>();
    }
}
