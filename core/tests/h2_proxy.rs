//! HTTP/2 client connections through the proxy state machine, with no
//! sockets and simulated time.

use ouli_core::engine::ReplayIndex;
use ouli_core::h2::conn::{Connection as H2, H2Event, RequestPseudo};
use ouli_core::proxy::{Connection, Mode, Output, ProxyEvent, ProxySettings};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request body that stops arriving is answered 408 once `idle_timeout`
/// passes without DATA (each DATA restarts the wait); the connection and
/// its other streams go on, and later DATA on the answered stream is
/// ignored.
#[test]
fn a_request_body_that_stops_arriving_is_a_408() {
    let t0 = Instant::now();
    let mut settings = ProxySettings::new(Mode::Replay, "api.example.com");
    settings.idle_timeout = Duration::from_secs(5);
    let index = Arc::new(ReplayIndex::new([]));
    let mut conn = Connection::new(Arc::new(settings), Some(index), t0);
    let mut client = H2::client(t0);
    let pseudo = RequestPseudo::new("POST", "http", "x", "/upload");
    let slow = client.send_request(&pseudo, &[], false).unwrap();
    client.send_data(slow, b"first part", false).unwrap();
    let mut events = Vec::new();

    let exchange =
        |conn: &mut Connection, client: &mut H2, now: Instant, events: &mut Vec<ProxyEvent>| {
            while let Some(b) = client.poll_transmit() {
                conn.handle_client_bytes(now, &b);
            }
            let mut statuses = Vec::new();
            while let Some(o) = conn.poll_output() {
                match o {
                    Output::ToClient(b) => client.handle_bytes(now, &b),
                    Output::Event(e) => events.push(e),
                    Output::CloseClient => panic!("the connection must stay open"),
                    _ => {}
                }
            }
            while let Some(ev) = client.poll_event() {
                if let H2Event::ResponseHeaders { stream, status, .. } = ev {
                    statuses.push((stream, status));
                }
            }
            statuses
        };
    assert!(exchange(&mut conn, &mut client, t0, &mut events).is_empty());
    let deadline = conn.poll_timeout().expect("a body deadline");
    assert_eq!(deadline, t0 + Duration::from_secs(5));

    // More DATA restarts the wait.
    let t1 = t0 + Duration::from_secs(4);
    conn.handle_timeout(t1);
    client.send_data(slow, b"second part", false).unwrap();
    assert!(exchange(&mut conn, &mut client, t1, &mut events).is_empty());
    assert_eq!(conn.poll_timeout(), Some(t1 + Duration::from_secs(5)));

    let t2 = t1 + Duration::from_secs(5);
    conn.handle_timeout(t2);
    assert_eq!(
        exchange(&mut conn, &mut client, t2, &mut events),
        vec![(slow, 408)]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        ProxyEvent::ClientError { status: 408, reason } if reason.contains("request body")
    )));

    // The rest of the slow body changes nothing; a new stream is answered.
    let _ = client.send_data(slow, b"late", true);
    let pseudo = RequestPseudo::new("GET", "http", "x", "/next");
    let next = client.send_request(&pseudo, &[], true).unwrap();
    let statuses = exchange(&mut conn, &mut client, t2, &mut events);
    assert_eq!(statuses, vec![(next, ouli_core::proxy::MISS_STATUS)]);
}
