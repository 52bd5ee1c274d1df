//! Auto mode and stored-only redaction, driven through a whole connection
//! with no sockets.

use ouli_core::engine::ReplayIndex;
use ouli_core::matching::JsonPointer;
use ouli_core::proxy::{Connection, Mode, Output, ProxyEvent, ProxySettings};
use ouli_core::store::{Interaction, Recording};
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
struct Collected {
    to_client: Vec<u8>,
    to_upstream: Vec<u8>,
    opened: usize,
    stored: Vec<(String, Interaction)>,
    events: Vec<ProxyEvent>,
}

fn drain(conn: &mut Connection, c: &mut Collected) {
    while let Some(o) = conn.poll_output() {
        match o {
            Output::ToClient(b) => c.to_client.extend_from_slice(&b),
            Output::ToUpstream(b) => c.to_upstream.extend_from_slice(&b),
            Output::OpenUpstream => c.opened += 1,
            Output::Store {
                test_name,
                interaction,
            } => c.stored.push((test_name, *interaction)),
            Output::Event(e) => c.events.push(e),
            // Release, close, and whatever else the connection asks for.
            _ => {}
        }
    }
}

fn settings(mode: Mode) -> Arc<ProxySettings> {
    let mut s = ProxySettings::new(mode, "api.example.com");
    s.policy.redact_response_headers = vec!["Set-Cookie".into()];
    s.policy.redact_json_fields = vec![JsonPointer::parse("/token").unwrap()];
    Arc::new(s)
}

const REQUEST: &[u8] =
    b"POST /login HTTP/1.1\r\nHost: x\r\nX-Ouli-Test-Name: t\r\nContent-Length: 2\r\n\r\n{}";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=SECRET\r\nContent-Length: 19\r\n\r\n{\"token\":\"SECRET1\"}";

/// Sends `REQUEST` and, if the connection opens an upstream, answers `RESPONSE`.
fn exchange(mode: Mode, index: Option<Arc<ReplayIndex>>) -> Collected {
    let t0 = Instant::now();
    let mut conn = Connection::new(settings(mode), index, t0);
    let mut c = Collected::default();
    conn.handle_client_bytes(t0, REQUEST);
    drain(&mut conn, &mut c);
    if c.opened > 0 {
        conn.upstream_connected(t0);
        drain(&mut conn, &mut c);
        conn.handle_upstream_bytes(t0, RESPONSE);
        drain(&mut conn, &mut c);
    }
    c
}

#[test]
fn redaction_applies_to_the_stored_response_only() {
    let c = exchange(Mode::Record, None);
    // The client gets the real answer.
    assert!(c.to_client.ends_with(b"{\"token\":\"SECRET1\"}"));
    assert!(c.to_client.windows(16).any(|w| w == b"Set-Cookie: sid="));
    let (_, stored) = &c.stored[0];
    let json = {
        let mut r = Recording::new("t");
        r.interactions.push(stored.clone());
        r.to_json()
    };
    assert!(!json.contains("SECRET"), "{json}");
    assert!(
        json.contains("\"Content-Length\", \"22\""),
        "length follows the redacted body: {json}"
    );
}

#[test]
fn auto_mode_replays_hits_and_forwards_misses() {
    // Nothing recorded: the request is forwarded exactly like record mode.
    let empty = Arc::new(ReplayIndex::new([]));
    let c = exchange(Mode::Auto, Some(empty));
    assert_eq!(c.opened, 1);
    assert_eq!(
        c.to_upstream,
        b"POST /login HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 2\r\n\r\n{}"
    );
    assert_eq!(c.stored.len(), 1);
    assert!(!c.events.iter().any(|e| matches!(e, ProxyEvent::Missed(_))));

    // Recorded: answered from the recording, no upstream.
    let mut rec = Recording::new("t");
    rec.interactions.push(c.stored[0].1.clone());
    let index = Arc::new(ReplayIndex::new([rec]));
    let c2 = exchange(Mode::Auto, Some(Arc::clone(&index)));
    assert_eq!(c2.opened, 0);
    assert!(c2.stored.is_empty());
    assert!(c2.to_client.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(c2.to_client.ends_with(b"{\"token\":\"[REDACTED]\"}"));
    let usage = index.usage();
    assert_eq!((usage[0].hits, usage[0].misses), (1, 0));
}
