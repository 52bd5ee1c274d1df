//! Scripts of adapter actions for the connection targets.
//!
//! A [`Script`] is read from any bytes with [`arbitrary::Unstructured`] (so
//! `fuzz_target!(|s: Script| ...)` works too) in a simple, stable format,
//! which keeps the committed seed scripts meaningful whatever version of
//! `arbitrary` is in use, and lets [`Script::to_bytes`] write them:
//!
//! * byte 0: flags (see [`flags`]);
//! * then actions, each a tag byte, `tag % 12` choosing the action:
//!
//! | tag % 12 | action | operand bytes |
//! |---|---|---|
//! | 0 | client bytes | length `n`, then `n` bytes (fewer if the input ends) |
//! | 1 | upstream bytes | same |
//! | 2 | client bytes from the dictionary | index |
//! | 3 | upstream bytes from the dictionary | index |
//! | 4 | `upstream_connected` | |
//! | 5 | `upstream_failed` | kind (`% 3`: timeout, refused, overloaded) |
//! | 6 | `handle_client_eof` | |
//! | 7 | `handle_upstream_eof` | |
//! | 8 | advance the clock, then `handle_timeout` | milliseconds, u16 little-endian |
//! | 9 | advance the clock to `poll_timeout()`, then `handle_timeout` | |
//! | 10 | `begin_shutdown` | |
//! | 11 | advance the clock 1 ms, then `handle_timeout` | |
//!
//! The dictionaries ([`crate::connection`]) hold whole valid messages and
//! frames that match the replay recording, so that a mutated script reaches
//! deep states (a WebSocket session in replay, a chunked response in record)
//! without having to spell them out byte by byte.

use arbitrary::{Arbitrary, Unstructured};

/// Bits of the flags byte.
pub mod flags {
    /// Replay target: auto mode (a miss is forwarded and recorded) instead of replay.
    pub const AUTO: u8 = 0x01;
    /// Tight limits: small heads, bodies, WebSocket frames and messages.
    pub const TIGHT: u8 = 0x02;
    /// Replay WebSocket server messages with their recorded pacing.
    pub const PACED: u8 = 0x04;
    /// `target_protocol = "h2c"`: HTTP/1.1 clients are forwarded over
    /// HTTP/2 (the translation path).
    pub const H2_UPSTREAM: u8 = 0x08;
    /// `target_protocol = "http1"`: HTTP/2 clients are forwarded over
    /// HTTP/1.1 (the other translation path).
    pub const H1_UPSTREAM: u8 = 0x10;
    /// An unruly adapter: calls `upstream_connected`, `upstream_failed`,
    /// and feeds upstream bytes and EOF whenever the script says, not only
    /// when they make sense. Only the invariants that hold for any caller
    /// are checked then.
    pub const UNRULY: u8 = 0x80;
}

/// One thing that happens to a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Bytes from the client.
    Client(Vec<u8>),
    /// Bytes from the upstream.
    Upstream(Vec<u8>),
    /// Client bytes: dictionary entry `index % len`.
    ClientDict(u8),
    /// Upstream bytes: dictionary entry `index % len`.
    UpstreamDict(u8),
    /// The upstream connection is ready.
    UpstreamConnected,
    /// The upstream connection failed (`kind % 3`).
    UpstreamFailed(u8),
    /// The client closed.
    ClientEof,
    /// The upstream closed.
    UpstreamEof,
    /// Time passes (milliseconds), then `handle_timeout`.
    Advance(u16),
    /// Time jumps to the connection's deadline, then `handle_timeout`.
    ToDeadline,
    /// The proxy shuts down.
    Shutdown,
    /// One millisecond passes, then `handle_timeout`.
    Tick,
}

/// Flags and actions, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    /// See [`flags`].
    pub flags: u8,
    /// What happens, in order.
    pub actions: Vec<Action>,
}

fn byte(u: &mut Unstructured<'_>) -> u8 {
    u.bytes(1).map(|b| b[0]).unwrap_or(0)
}

fn payload(u: &mut Unstructured<'_>) -> Vec<u8> {
    let n = usize::from(byte(u)).min(u.len());
    u.bytes(n).map(<[u8]>::to_vec).unwrap_or_default()
}

impl Script {
    /// Reads a script from all of `u` (any bytes are a valid script).
    pub fn read(u: &mut Unstructured<'_>) -> Script {
        let flags = byte(u);
        let mut actions = Vec::new();
        while !u.is_empty() {
            let action = match byte(u) % 12 {
                0 => Action::Client(payload(u)),
                1 => Action::Upstream(payload(u)),
                2 => Action::ClientDict(byte(u)),
                3 => Action::UpstreamDict(byte(u)),
                4 => Action::UpstreamConnected,
                5 => Action::UpstreamFailed(byte(u)),
                6 => Action::ClientEof,
                7 => Action::UpstreamEof,
                8 => Action::Advance(u16::from_le_bytes([byte(u), byte(u)])),
                9 => Action::ToDeadline,
                10 => Action::Shutdown,
                _ => Action::Tick,
            };
            actions.push(action);
        }
        Script { flags, actions }
    }

    /// Reads a script from `data`.
    pub fn from_bytes(data: &[u8]) -> Script {
        Script::read(&mut Unstructured::new(data))
    }

    /// The bytes [`Script::from_bytes`] reads back as this script. Byte
    /// payloads longer than 255 become several actions.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        for action in &self.actions {
            match action {
                Action::Client(b) | Action::Upstream(b) => {
                    let tag = if matches!(action, Action::Client(_)) {
                        0
                    } else {
                        1
                    };
                    if b.is_empty() {
                        out.extend([tag, 0]);
                    }
                    for piece in b.chunks(255) {
                        out.push(tag);
                        out.push(piece.len() as u8);
                        out.extend_from_slice(piece);
                    }
                }
                Action::ClientDict(i) => out.extend([2, *i]),
                Action::UpstreamDict(i) => out.extend([3, *i]),
                Action::UpstreamConnected => out.push(4),
                Action::UpstreamFailed(k) => out.extend([5, *k]),
                Action::ClientEof => out.push(6),
                Action::UpstreamEof => out.push(7),
                Action::Advance(ms) => {
                    out.push(8);
                    out.extend(ms.to_le_bytes());
                }
                Action::ToDeadline => out.push(9),
                Action::Shutdown => out.push(10),
                Action::Tick => out.push(11),
            }
        }
        out
    }
}

impl<'a> Arbitrary<'a> for Script {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Script::read(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_bytes_reads_back() {
        let script = Script {
            flags: flags::AUTO | flags::PACED,
            actions: vec![
                Action::Client(b"GET / HTTP/1.1\r\n".to_vec()),
                Action::Upstream(vec![7; 600]),
                Action::ClientDict(3),
                Action::UpstreamDict(200),
                Action::UpstreamConnected,
                Action::UpstreamFailed(2),
                Action::ClientEof,
                Action::UpstreamEof,
                Action::Advance(65_000),
                Action::ToDeadline,
                Action::Shutdown,
                Action::Tick,
            ],
        };
        let back = Script::from_bytes(&script.to_bytes());
        assert_eq!(back.flags, script.flags);
        // The 600-byte payload comes back as 255 + 255 + 90.
        let joined: Vec<Action> =
            back.actions
                .iter()
                .fold(Vec::new(), |mut acc: Vec<Action>, a| {
                    match (acc.last_mut(), a) {
                        (Some(Action::Upstream(prev)), Action::Upstream(more)) => {
                            prev.extend_from_slice(more)
                        }
                        _ => acc.push(a.clone()),
                    }
                    acc
                });
        assert_eq!(joined, script.actions);
    }

    #[test]
    fn any_bytes_are_a_script() {
        for data in [&[][..], &[0], &[0, 0, 200], &[1, 8, 1], &[0xff; 9]] {
            let _ = Script::from_bytes(data);
        }
    }
}
