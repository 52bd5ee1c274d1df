//! The recording file format: one JSON document per test name.
//!
//! This module only converts between [`Recording`] values and JSON text; it
//! never touches the file system (the adapters own file I/O).
//!
//! # Shape
//! ```json
//! {
//!   "format": "ouli-recording",
//!   "version": 1,
//!   "test_name": "default",
//!   "interactions": [
//!     {
//!       "fingerprint": "<64 hex digits>",
//!       "request": {
//!         "method": "POST",
//!         "target": "/v1/items?b=2&a=1",
//!         "headers": [
//!           ["Host", "api.example.com"],
//!           ["Content-Type", "application/json"]
//!         ],
//!         "body": "{\"x\":1}"
//!       },
//!       "response": {
//!         "status": 200,
//!         "reason": "OK",
//!         "headers": [
//!           ["Content-Type", "text/plain"]
//!         ],
//!         "framing": "chunked",
//!         "chunks": [
//!           "hello ",
//!           "world"
//!         ],
//!         "trailers": [
//!           ["X-Checksum", "abc"]
//!         ]
//!       }
//!     }
//!   ]
//! }
//! ```
//!
//! * Every byte field (method, target, reason, header names and values, the
//!   request body, each response chunk) is a JSON string when its bytes are
//!   valid UTF-8, otherwise an object `{"base64": "..."}` holding standard
//!   padded base64.
//! * `chunks` keeps the upstream's chunk boundaries; an empty list means no
//!   body. `trailers` is left out when empty.
//! * `framing` is one of `none`, `length`, `chunked`, `close`.
//! * Readers ignore fields they do not know (forward compatibility within a
//!   version) but refuse other `format`s and newer `version`s.
//!
//! [`Recording::to_json`] writes one element per line and a header pair per
//! line, 2-space indented, with a trailing newline, so recordings diff well.
//! [`Interaction::to_json_line`] writes one interaction object on one line,
//! for append-only journals.

use crate::message::Header;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// The value of the `format` field of every recording file.
pub const FORMAT_NAME: &str = "ouli-recording";

/// The newest recording format version this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// All interactions recorded for one test name (one file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    /// The test name the interactions belong to.
    pub test_name: String,
    /// The recorded exchanges, in recording order.
    pub interactions: Vec<Interaction>,
}

/// One recorded request and the response that answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interaction {
    /// The request fingerprint (lower-case hex SHA-256), see [`crate::engine`].
    pub fingerprint: String,
    /// The request as stored (after redaction).
    pub request: RecordedRequest,
    /// The upstream's response (for a WebSocket, the 101 handshake answer).
    pub response: RecordedResponse,
    /// The WebSocket conversation that followed a 101 answer, if any.
    pub websocket: Option<Conversation>,
}

/// Which side of a WebSocket sent a message or a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The application under test.
    Client,
    /// The upstream (the real API).
    Server,
}

impl Peer {
    /// `"client"` or `"server"`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Client => "client",
            Peer::Server => "server",
        }
    }
}

/// The kind of a WebSocket data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Opcode 0x1: UTF-8 text.
    Text,
    /// Opcode 0x2: bytes.
    Binary,
}

impl MessageKind {
    /// `"text"` or `"binary"`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Binary => "binary",
        }
    }
}

/// One WebSocket data message (fragments joined), in conversation order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsMessage {
    /// Who sent it.
    pub from: Peer,
    /// Text or binary.
    pub kind: MessageKind,
    /// The unmasked payload.
    pub payload: Bytes,
    /// Milliseconds since the connection was upgraded.
    pub at_ms: u64,
}

/// How a WebSocket conversation was closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsClose {
    /// Who sent the first close frame.
    pub from: Peer,
    /// The status code, if the close frame carried one.
    pub code: Option<u16>,
    /// The close reason (UTF-8 per RFC 6455, kept as bytes).
    pub reason: Bytes,
    /// Milliseconds since the connection was upgraded.
    pub at_ms: u64,
}

/// A recorded WebSocket conversation: every data message in order, and the close.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// Data messages in the order Ouli saw them.
    pub messages: Vec<WsMessage>,
    /// The close handshake, if the conversation ended with one.
    pub close: Option<WsClose>,
}

/// A recorded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method token, for example `GET`.
    pub method: Bytes,
    /// The request target as sent, for example `/v1/items?a=1`.
    pub target: Bytes,
    /// Header fields in wire order.
    pub headers: Vec<Header>,
    /// The whole request body (empty when there was none).
    pub body: Bytes,
}

/// A recorded response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedResponse {
    /// The status code, 100 to 999.
    pub status: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: Bytes,
    /// Header fields in wire order.
    pub headers: Vec<Header>,
    /// How the upstream delimited the body.
    pub framing: Framing,
    /// The body pieces, with the upstream's chunk boundaries; empty for no body.
    pub chunks: Vec<Bytes>,
    /// Trailer fields of a chunked body, in wire order.
    pub trailers: Vec<Header>,
}

impl RecordedResponse {
    /// The body length: the sum of the chunk lengths.
    pub fn body_len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// How a recorded response body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (`HEAD`, 1xx, 204, 304).
    None,
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by the upstream closing the connection.
    Close,
}

impl Framing {
    /// The name used in the JSON file.
    pub fn as_str(self) -> &'static str {
        match self {
            Framing::None => "none",
            Framing::Length => "length",
            Framing::Chunked => "chunked",
            Framing::Close => "close",
        }
    }
}

/// Why a recording file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// JSON syntax or shape error, with a 1-based line and column.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong, naming the field where known.
        message: String,
    },
    /// The document is JSON but its `format` is not [`FORMAT_NAME`].
    #[error("not an Ouli recording (format is {found:?})")]
    WrongFormat {
        /// The `format` value found (a string's contents, other values as
        /// JSON text); empty when the field is missing.
        found: String,
    },
    /// The recording was written by a newer Ouli.
    #[error("recording version {found} is newer than this Ouli supports ({supported})")]
    UnsupportedVersion {
        /// The file's version (saturated to `u32::MAX`).
        found: u32,
        /// [`FORMAT_VERSION`].
        supported: u32,
    },
    /// An interaction is well-formed JSON but holds an impossible value.
    #[error("interaction {index}: {message}")]
    Invalid {
        /// 0-based index of the interaction in `interactions`.
        index: usize,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to Display; keep only the
        // message since the position is carried separately.
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        StoreError::Syntax {
            line: e.line(),
            column: e.column().max(1),
            message,
        }
    }
}

impl Recording {
    /// An empty recording for `test_name`.
    pub fn new(test_name: impl Into<String>) -> Self {
        Recording {
            test_name: test_name.into(),
            interactions: Vec::new(),
        }
    }

    /// The file text: pretty-printed JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut w = JsonWriter::default();
        w.out.push_str("{\n");
        w.key(1, "format");
        w.string(FORMAT_NAME);
        w.out.push_str(",\n");
        w.key(1, "version");
        w.out.push_str(&FORMAT_VERSION.to_string());
        w.out.push_str(",\n");
        w.key(1, "test_name");
        w.string(&self.test_name);
        w.out.push_str(",\n");
        w.key(1, "interactions");
        w.list(1, &self.interactions, |w, level, i| w.interaction(level, i));
        w.out.push_str("\n}\n");
        w.out
    }

    /// Parses a recording file's text.
    ///
    /// Checks `format` and `version` first, so a file from another tool or a
    /// newer Ouli gets [`StoreError::WrongFormat`] or
    /// [`StoreError::UnsupportedVersion`] rather than a shape error.
    pub fn from_json(text: &str) -> Result<Recording, StoreError> {
        let probe: Probe = serde_json::from_str(text)?;
        if !probe.format_ok {
            let found = match probe.format {
                None => String::new(),
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
            };
            return Err(StoreError::WrongFormat { found });
        }
        if let Some(v) = probe.version {
            if v > u64::from(FORMAT_VERSION) {
                return Err(StoreError::UnsupportedVersion {
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: FORMAT_VERSION,
                });
            }
        }
        let raw: RawRecording = serde_json::from_str(text)?;
        let interactions = raw
            .interactions
            .into_iter()
            .enumerate()
            .map(|(index, i)| i.into_interaction(index))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Recording {
            test_name: raw.test_name,
            interactions,
        })
    }
}

impl Interaction {
    /// One interaction alone, as the object it is in a recording file's
    /// `interactions` list, on a single line without a line break (the
    /// adapters' append-only journals hold one per line). String contents
    /// never hold a raw line break: JSON escapes them.
    pub fn to_json_line(&self) -> String {
        let mut w = JsonWriter {
            out: String::new(),
            compact: true,
        };
        w.interaction(0, self);
        w.out
    }

    /// Parses what [`Interaction::to_json_line`] writes (or any one
    /// interaction object of a recording file). Errors are positioned in
    /// `text`; [`StoreError::Invalid`] has index 0.
    pub fn from_json_line(text: &str) -> Result<Interaction, StoreError> {
        let raw: RawInteraction = serde_json::from_str(text)?;
        raw.into_interaction(0)
    }
}

// ---------------------------------------------------------------------------
// Writing

#[derive(Default)]
struct JsonWriter {
    out: String,
    /// One line: no line breaks, no indentation (journal lines).
    compact: bool,
}

impl JsonWriter {
    fn indent(&mut self, level: usize) {
        if self.compact {
            return;
        }
        for _ in 0..level {
            self.out.push_str("  ");
        }
    }

    /// A line break between elements (nothing when compact).
    fn newline(&mut self) {
        if !self.compact {
            self.out.push('\n');
        }
    }

    /// `"name": ` at `level`.
    fn key(&mut self, level: usize, name: &str) {
        self.indent(level);
        self.string(name);
        self.out.push_str(": ");
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{08}' => self.out.push_str("\\b"),
                '\u{0c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    self.out.push_str(&format!("\\u{:04x}", c as u32));
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn bytes(&mut self, b: &[u8]) {
        match std::str::from_utf8(b) {
            Ok(s) => self.string(s),
            Err(_) => {
                self.out.push_str("{\"base64\": ");
                self.string(&BASE64.encode(b));
                self.out.push('}');
            }
        }
    }

    /// A list whose opening bracket follows a key at `level`: `[]` when
    /// empty, else one item per line at `level + 1`.
    fn list<T>(&mut self, level: usize, items: &[T], mut item: impl FnMut(&mut Self, usize, &T)) {
        if items.is_empty() {
            self.out.push_str("[]");
            return;
        }
        self.out.push('[');
        self.newline();
        for (n, it) in items.iter().enumerate() {
            if n > 0 {
                self.out.push(',');
                self.newline();
            }
            self.indent(level + 1);
            item(self, level + 1, it);
        }
        self.newline();
        self.indent(level);
        self.out.push(']');
    }

    fn headers(&mut self, level: usize, headers: &[Header]) {
        self.list(level, headers, |w, _, h| {
            w.out.push('[');
            w.bytes(&h.name);
            w.out.push_str(", ");
            w.bytes(&h.value);
            w.out.push(']');
        });
    }

    fn interaction(&mut self, level: usize, i: &Interaction) {
        let l1 = level + 1;
        let l2 = level + 2;
        self.out.push('{');
        self.newline();
        self.key(l1, "fingerprint");
        self.string(&i.fingerprint);
        self.out.push(',');
        self.newline();

        let rq = &i.request;
        self.key(l1, "request");
        self.out.push('{');
        self.newline();
        self.key(l2, "method");
        self.bytes(&rq.method);
        self.out.push(',');
        self.newline();
        self.key(l2, "target");
        self.bytes(&rq.target);
        self.out.push(',');
        self.newline();
        self.key(l2, "headers");
        self.headers(l2, &rq.headers);
        self.out.push(',');
        self.newline();
        self.key(l2, "body");
        self.bytes(&rq.body);
        self.newline();
        self.indent(l1);
        self.out.push_str("},");
        self.newline();

        let rs = &i.response;
        self.key(l1, "response");
        self.out.push('{');
        self.newline();
        self.key(l2, "status");
        self.out.push_str(&rs.status.to_string());
        self.out.push(',');
        self.newline();
        self.key(l2, "reason");
        self.bytes(&rs.reason);
        self.out.push(',');
        self.newline();
        self.key(l2, "headers");
        self.headers(l2, &rs.headers);
        self.out.push(',');
        self.newline();
        self.key(l2, "framing");
        self.string(rs.framing.as_str());
        self.out.push(',');
        self.newline();
        self.key(l2, "chunks");
        self.list(l2, &rs.chunks, |w, _, c| w.bytes(c));
        if !rs.trailers.is_empty() {
            self.out.push(',');
            self.newline();
            self.key(l2, "trailers");
            self.headers(l2, &rs.trailers);
        }
        self.newline();
        self.indent(l1);
        self.out.push('}');
        if let Some(ws) = &i.websocket {
            self.out.push(',');
            self.newline();
            self.key(l1, "websocket");
            self.conversation(l1, ws);
        }
        self.newline();
        self.indent(level);
        self.out.push('}');
    }

    fn conversation(&mut self, level: usize, ws: &Conversation) {
        let l1 = level + 1;
        self.out.push('{');
        self.newline();
        self.key(l1, "messages");
        self.list(l1, &ws.messages, |w, _, m| {
            w.out.push_str("{\"from\": ");
            w.string(m.from.as_str());
            w.out.push_str(", \"kind\": ");
            w.string(m.kind.as_str());
            w.out
                .push_str(&format!(", \"at_ms\": {}, \"payload\": ", m.at_ms));
            w.bytes(&m.payload);
            w.out.push('}');
        });
        if let Some(c) = &ws.close {
            self.out.push(',');
            self.newline();
            self.key(l1, "close");
            self.out.push_str("{\"from\": ");
            self.string(c.from.as_str());
            match c.code {
                Some(code) => self.out.push_str(&format!(", \"code\": {code}")),
                None => self.out.push_str(", \"code\": null"),
            }
            self.out.push_str(", \"reason\": ");
            self.bytes(&c.reason);
            self.out.push_str(&format!(", \"at_ms\": {}}}", c.at_ms));
        }
        self.newline();
        self.indent(level);
        self.out.push('}');
    }
}

// ---------------------------------------------------------------------------
// Reading

/// First pass: only `format` and `version`, everything else skipped.
struct Probe {
    format: Option<serde_json::Value>,
    format_ok: bool,
    version: Option<u64>,
}

fn positive_int(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().filter(|&n| n > 0)
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ProbeVisitor;
        impl<'de> Visitor<'de> for ProbeVisitor {
            type Value = Probe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an Ouli recording (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
                let mut format: Option<serde_json::Value> = None;
                let mut version: Option<serde_json::Value> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "format" => {
                            if format.is_some() {
                                return Err(de::Error::duplicate_field("format"));
                            }
                            format = Some(map.next_value()?);
                        }
                        "version" => {
                            if version.is_some() {
                                return Err(de::Error::duplicate_field("version"));
                            }
                            let v: serde_json::Value = map.next_value()?;
                            let format_ok =
                                format.as_ref().and_then(|f| f.as_str()) == Some(FORMAT_NAME);
                            // Report a bad version where it is, if this is
                            // known to be an Ouli recording already.
                            if format_ok && positive_int(&v).is_none() {
                                return Err(bad_version(&v));
                            }
                            version = Some(v);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let format_ok = format.as_ref().and_then(|f| f.as_str()) == Some(FORMAT_NAME);
                if !format_ok {
                    return Ok(Probe {
                        format,
                        format_ok,
                        version: None,
                    });
                }
                let version = match &version {
                    None => return Err(de::Error::missing_field("version")),
                    Some(v) => positive_int(v).ok_or_else(|| bad_version(v))?,
                };
                Ok(Probe {
                    format,
                    format_ok,
                    version: Some(version),
                })
            }
        }
        d.deserialize_map(ProbeVisitor)
    }
}

fn bad_version<E: de::Error>(v: &serde_json::Value) -> E {
    E::custom(format_args!(
        "`version` must be a positive integer, found {v}"
    ))
}

#[derive(Deserialize)]
struct RawRecording {
    test_name: String,
    interactions: Vec<RawInteraction>,
}

#[derive(Deserialize)]
struct RawInteraction {
    fingerprint: String,
    request: RawRequest,
    response: RawResponse,
    #[serde(default)]
    websocket: Option<RawConversation>,
}

#[derive(Deserialize)]
struct RawConversation {
    messages: Vec<RawWsMessage>,
    #[serde(default)]
    close: Option<RawWsClose>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawPeer {
    Client,
    Server,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Text,
    Binary,
}

#[derive(Deserialize)]
struct RawWsMessage {
    from: RawPeer,
    kind: RawKind,
    at_ms: u64,
    payload: WireBytes,
}

#[derive(Deserialize)]
struct RawWsClose {
    from: RawPeer,
    code: Option<u16>,
    reason: WireBytes,
    at_ms: u64,
}

impl From<RawPeer> for Peer {
    fn from(p: RawPeer) -> Peer {
        match p {
            RawPeer::Client => Peer::Client,
            RawPeer::Server => Peer::Server,
        }
    }
}

impl RawConversation {
    fn into_conversation(self, index: usize) -> Result<Conversation, StoreError> {
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(n, m)| {
                let payload = m
                    .payload
                    .decode(index, || format!("websocket.messages[{n}].payload"))?;
                let kind = match m.kind {
                    RawKind::Text => MessageKind::Text,
                    RawKind::Binary => MessageKind::Binary,
                };
                if kind == MessageKind::Text && std::str::from_utf8(&payload).is_err() {
                    return Err(StoreError::Invalid {
                        index,
                        message: format!("websocket.messages[{n}]: text payload is not UTF-8"),
                    });
                }
                Ok(WsMessage {
                    from: m.from.into(),
                    kind,
                    payload,
                    at_ms: m.at_ms,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let close = match self.close {
            None => None,
            Some(c) => Some(WsClose {
                from: c.from.into(),
                code: c.code,
                reason: c.reason.decode(index, || "websocket.close.reason".into())?,
                at_ms: c.at_ms,
            }),
        };
        Ok(Conversation { messages, close })
    }
}

#[derive(Deserialize)]
struct RawRequest {
    method: WireBytes,
    target: WireBytes,
    headers: Vec<(WireBytes, WireBytes)>,
    body: WireBytes,
}

#[derive(Deserialize)]
struct RawResponse {
    status: u64,
    reason: WireBytes,
    headers: Vec<(WireBytes, WireBytes)>,
    framing: RawFraming,
    chunks: Vec<WireBytes>,
    #[serde(default)]
    trailers: Vec<(WireBytes, WireBytes)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawFraming {
    None,
    Length,
    Chunked,
    Close,
}

/// A byte field as written: text, or base64 still to be decoded (decoding
/// happens after parsing so a bad value is reported with its interaction).
enum WireBytes {
    Text(String),
    Base64(String),
}

impl<'de> Deserialize<'de> for WireBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WireVisitor;
        impl<'de> Visitor<'de> for WireVisitor {
            type Value = WireBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an object {\"base64\": \"...\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireBytes, E> {
                Ok(WireBytes::Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<WireBytes, E> {
                Ok(WireBytes::Text(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireBytes, A::Error> {
                let mut b64: Option<String> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "base64" {
                        return Err(de::Error::unknown_field(&key, &["base64"]));
                    }
                    if b64.is_some() {
                        return Err(de::Error::duplicate_field("base64"));
                    }
                    b64 = Some(map.next_value()?);
                }
                b64.map(WireBytes::Base64)
                    .ok_or_else(|| de::Error::missing_field("base64"))
            }
        }
        d.deserialize_any(WireVisitor)
    }
}

impl WireBytes {
    fn decode(self, index: usize, field: impl FnOnce() -> String) -> Result<Bytes, StoreError> {
        match self {
            WireBytes::Text(s) => Ok(Bytes::from(s.into_bytes())),
            WireBytes::Base64(s) => {
                BASE64
                    .decode(s.as_bytes())
                    .map(Bytes::from)
                    .map_err(|e| StoreError::Invalid {
                        index,
                        message: format!("{}: invalid base64: {e}", field()),
                    })
            }
        }
    }
}

fn decode_headers(
    raw: Vec<(WireBytes, WireBytes)>,
    index: usize,
    field: &str,
) -> Result<Vec<Header>, StoreError> {
    raw.into_iter()
        .enumerate()
        .map(|(n, (name, value))| {
            Ok(Header {
                name: name.decode(index, || format!("{field}[{n}] name"))?,
                value: value.decode(index, || format!("{field}[{n}] value"))?,
            })
        })
        .collect()
}

impl RawInteraction {
    fn into_interaction(self, index: usize) -> Result<Interaction, StoreError> {
        let RawInteraction {
            fingerprint,
            request: rq,
            response: rs,
            websocket,
        } = self;
        let request = RecordedRequest {
            method: rq.method.decode(index, || "request.method".into())?,
            target: rq.target.decode(index, || "request.target".into())?,
            headers: decode_headers(rq.headers, index, "request.headers")?,
            body: rq.body.decode(index, || "request.body".into())?,
        };
        let status = match u16::try_from(rs.status) {
            Ok(s) if (100..=999).contains(&s) => s,
            _ => {
                return Err(StoreError::Invalid {
                    index,
                    message: format!("response.status {} is outside 100..=999", rs.status),
                })
            }
        };
        let chunks = rs
            .chunks
            .into_iter()
            .enumerate()
            .map(|(n, c)| c.decode(index, || format!("response.chunks[{n}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let response = RecordedResponse {
            status,
            reason: rs.reason.decode(index, || "response.reason".into())?,
            headers: decode_headers(rs.headers, index, "response.headers")?,
            framing: match rs.framing {
                RawFraming::None => Framing::None,
                RawFraming::Length => Framing::Length,
                RawFraming::Chunked => Framing::Chunked,
                RawFraming::Close => Framing::Close,
            },
            chunks,
            trailers: decode_headers(rs.trailers, index, "response.trailers")?,
        };
        let websocket = match websocket {
            None => None,
            Some(ws) => Some(ws.into_conversation(index)?),
        };
        Ok(Interaction {
            fingerprint,
            request,
            response,
            websocket,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(name: &'static [u8], value: &'static [u8]) -> Header {
        Header::new(Bytes::from_static(name), Bytes::from_static(value))
    }

    fn sample() -> Recording {
        Recording {
            test_name: "default".into(),
            interactions: vec![Interaction {
                fingerprint: "ab12".into(),
                request: RecordedRequest {
                    method: Bytes::from_static(b"POST"),
                    target: Bytes::from_static(b"/v1/items?b=2&a=1"),
                    headers: vec![
                        h(b"Host", b"api.example.com"),
                        h(b"Content-Type", b"application/json"),
                    ],
                    body: Bytes::from_static(b"{\"x\":1}"),
                },
                response: RecordedResponse {
                    status: 200,
                    reason: Bytes::from_static(b"OK"),
                    headers: vec![h(b"Content-Type", b"text/plain")],
                    framing: Framing::Chunked,
                    chunks: vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")],
                    trailers: vec![h(b"X-Checksum", b"abc")],
                },
                websocket: None,
            }],
        }
    }

    const GOLDEN: &str = r#"{
  "format": "ouli-recording",
  "version": 1,
  "test_name": "default",
  "interactions": [
    {
      "fingerprint": "ab12",
      "request": {
        "method": "POST",
        "target": "/v1/items?b=2&a=1",
        "headers": [
          ["Host", "api.example.com"],
          ["Content-Type", "application/json"]
        ],
        "body": "{\"x\":1}"
      },
      "response": {
        "status": 200,
        "reason": "OK",
        "headers": [
          ["Content-Type", "text/plain"]
        ],
        "framing": "chunked",
        "chunks": [
          "hello ",
          "world"
        ],
        "trailers": [
          ["X-Checksum", "abc"]
        ]
      }
    }
  ]
}
"#;

    #[test]
    fn websocket_conversation_round_trips() {
        let mut rec = sample();
        rec.interactions[0].websocket = Some(Conversation {
            messages: vec![
                WsMessage {
                    from: Peer::Server,
                    kind: MessageKind::Text,
                    payload: Bytes::from_static(b"welcome"),
                    at_ms: 0,
                },
                WsMessage {
                    from: Peer::Client,
                    kind: MessageKind::Binary,
                    payload: Bytes::from_static(&[0xff, 0x00, 0x80]),
                    at_ms: 12,
                },
            ],
            close: Some(WsClose {
                from: Peer::Client,
                code: Some(1000),
                reason: Bytes::from_static(b"bye"),
                at_ms: 40,
            }),
        });
        let text = rec.to_json();
        assert!(
            text.contains(
                r#"{"from": "server", "kind": "text", "at_ms": 0, "payload": "welcome"}"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#""close": {"from": "client", "code": 1000, "reason": "bye", "at_ms": 40}"#
            ),
            "{text}"
        );
        assert_eq!(Recording::from_json(&text), Ok(rec.clone()));
        let bad = text.replace(r#""kind": "binary""#, r#""kind": "text""#);
        assert!(
            matches!(Recording::from_json(&bad), Err(StoreError::Invalid { .. })),
            "a text message must be UTF-8"
        );
    }

    #[test]
    fn interaction_line_is_one_compact_line() {
        let i = &sample().interactions[0];
        let line = i.to_json_line();
        assert_eq!(
            line,
            r#"{"fingerprint": "ab12","request": {"method": "POST","target": "/v1/items?b=2&a=1","headers": [["Host", "api.example.com"],["Content-Type", "application/json"]],"body": "{\"x\":1}"},"response": {"status": 200,"reason": "OK","headers": [["Content-Type", "text/plain"]],"framing": "chunked","chunks": ["hello ","world"],"trailers": [["X-Checksum", "abc"]]}}"#
        );
        assert_eq!(Interaction::from_json_line(&line).as_ref(), Ok(i));
        // The same object as in the file.
        let v: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
        let w: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["interactions"][0], w);
        let mut ws = sample();
        ws.interactions[0].websocket = Some(Conversation {
            messages: vec![WsMessage {
                from: Peer::Client,
                kind: MessageKind::Text,
                payload: Bytes::from_static(b"line\nbreak"),
                at_ms: 3,
            }],
            close: None,
        });
        let line = ws.interactions[0].to_json_line();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            Interaction::from_json_line(&line).as_ref(),
            Ok(&ws.interactions[0])
        );
        assert!(matches!(
            Interaction::from_json_line(&line[..line.len() - 1]),
            Err(StoreError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn golden_text_is_pinned() {
        assert_eq!(sample().to_json(), GOLDEN);
        assert_eq!(Recording::from_json(GOLDEN), Ok(sample()));
    }

    #[test]
    fn golden_empty_recording() {
        let text = Recording::new("t").to_json();
        assert_eq!(
            text,
            "{\n  \"format\": \"ouli-recording\",\n  \"version\": 1,\n  \"test_name\": \"t\",\n  \"interactions\": []\n}\n"
        );
        assert_eq!(Recording::from_json(&text), Ok(Recording::new("t")));
    }

    #[test]
    fn output_is_valid_pretty_json() {
        let text = sample().to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["interactions"][0]["response"]["chunks"][1], "world");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn round_trip_binary_and_odd_bytes() {
        let mut r = sample();
        let i = &mut r.interactions[0];
        i.request.body = Bytes::from_static(b"\x00\xff\xfe binary");
        i.request.headers.push(h(b"X-Bin", b"caf\xe9"));
        i.request.target = Bytes::from_static(b"/\"quoted\"\\\t\x01\x7f");
        i.response.reason = Bytes::new();
        i.response.framing = Framing::Length;
        i.response.chunks = vec![
            Bytes::from_static(b"a"),
            Bytes::new(),
            Bytes::from_static(b"\x80\x81"),
            Bytes::from_static("ünïcødé ✓".as_bytes()),
        ];
        i.response.trailers.clear();
        let text = r.to_json();
        assert!(
            text.contains(r#"["X-Bin", {"base64": "Y2Fm6Q=="}]"#),
            "{text}"
        );
        assert!(
            text.contains(r#""body": {"base64": "AP/+IGJpbmFyeQ=="}"#),
            "{text}"
        );
        assert!(!text.contains("trailers"));
        assert!(text.contains("ünïcødé ✓"));
        let back = Recording::from_json(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.interactions[0].response.chunks.len(), 4);
        assert_eq!(back.interactions[0].response.body_len(), 1 + 2 + 15);
    }

    #[test]
    fn accepts_missing_trailers_and_unknown_fields() {
        let text = r#"{"format":"ouli-recording","version":1,"test_name":"x","future":[1,{"a":2}],
          "interactions":[{"fingerprint":"f","extra":true,
            "request":{"method":"GET","target":"/","headers":[],"body":"","new":1},
            "response":{"status":204,"reason":"No Content","headers":[],"framing":"none","chunks":[]}}]}"#;
        let r = Recording::from_json(text).unwrap();
        assert_eq!(r.test_name, "x");
        assert_eq!(r.interactions[0].response.trailers, vec![]);
        assert_eq!(r.interactions[0].response.framing, Framing::None);
        assert_eq!(r.interactions[0].response.body_len(), 0);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let text = "{\n  \"format\": \"ouli-recording\",\n  \"version\": 1,\n  \"test_name\": x\n}";
        match Recording::from_json(text) {
            Err(StoreError::Syntax { line, column, .. }) => {
                assert_eq!(line, 4);
                assert_eq!(column, 16);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shape_error_names_field() {
        let text = GOLDEN.replace("\"fingerprint\": \"ab12\",", "");
        let err = Recording::from_json(&text).unwrap_err();
        let StoreError::Syntax { line, message, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("missing field `fingerprint`"), "{message}");
        assert!(*line > 5);
        assert!(err
            .to_string()
            .starts_with(&format!("line {line}, column ")));

        let text = GOLDEN.replace("\"chunked\"", "\"gzip\"");
        let err = Recording::from_json(&text).unwrap_err();
        assert!(err.to_string().contains("unknown variant `gzip`"), "{err}");
        assert!(err.to_string().starts_with("line 23, column 25: "), "{err}");
    }

    #[test]
    fn not_an_object_is_syntax() {
        assert!(matches!(
            Recording::from_json("[1, 2]"),
            Err(StoreError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            Recording::from_json(""),
            Err(StoreError::Syntax { .. })
        ));
    }

    #[test]
    fn wrong_format() {
        assert_eq!(
            Recording::from_json(r#"{"name": "package", "version": "1.0"}"#),
            Err(StoreError::WrongFormat {
                found: String::new()
            })
        );
        let err = Recording::from_json(r#"{"format": "har", "version": 1}"#).unwrap_err();
        assert_eq!(
            err,
            StoreError::WrongFormat {
                found: "har".into()
            }
        );
        assert_eq!(err.to_string(), "not an Ouli recording (format is \"har\")");
        assert_eq!(
            Recording::from_json(r#"{"format": 7}"#),
            Err(StoreError::WrongFormat { found: "7".into() })
        );
    }

    #[test]
    fn unsupported_version() {
        let text = GOLDEN.replace("\"version\": 1", "\"version\": 2");
        let err = Recording::from_json(&text).unwrap_err();
        assert_eq!(
            err,
            StoreError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "recording version 2 is newer than this Ouli supports (1)"
        );
        // A newer version may have a different shape: still reported as a version problem.
        assert!(matches!(
            Recording::from_json(r#"{"format":"ouli-recording","version":99999999999,"x":1}"#),
            Err(StoreError::UnsupportedVersion {
                found: u32::MAX,
                ..
            })
        ));
    }

    #[test]
    fn bad_or_missing_version_is_syntax() {
        for (text, line) in [
            ("{\"format\": \"ouli-recording\",\n\"version\": \"1\"}", 2),
            ("{\"format\": \"ouli-recording\",\n\"version\": 0}", 2),
            ("{\"version\": -1, \"format\": \"ouli-recording\"}", 1),
            (
                "{\"format\": \"ouli-recording\",\n\n\"test_name\": \"x\"}",
                3,
            ),
        ] {
            match Recording::from_json(text) {
                Err(StoreError::Syntax {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, line, "{text}");
                    assert!(message.contains("version"), "{message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_status() {
        for status in ["99", "1000", "70000"] {
            let text = GOLDEN.replace("\"status\": 200", &format!("\"status\": {status}"));
            let err = Recording::from_json(&text).unwrap_err();
            assert_eq!(
                err,
                StoreError::Invalid {
                    index: 0,
                    message: format!("response.status {status} is outside 100..=999")
                }
            );
        }
    }

    #[test]
    fn invalid_base64_names_interaction_and_field() {
        let mut r = sample();
        r.interactions.push(r.interactions[0].clone());
        let text = r.to_json();
        // Break the second interaction's second chunk.
        let pos = text.rfind("\"world\"").unwrap();
        let text = format!(
            "{}{{\"base64\": \"not base64!\"}}{}",
            &text[..pos],
            &text[pos + "\"world\"".len()..]
        );
        let err = Recording::from_json(&text).unwrap_err();
        let StoreError::Invalid { index, message } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*index, 1);
        assert!(
            message.starts_with("response.chunks[1]: invalid base64"),
            "{message}"
        );
        assert!(err.to_string().starts_with("interaction 1: "));

        let text = GOLDEN.replace(
            "[\"Host\", \"api.example.com\"]",
            "[\"Host\", {\"base64\": \"YQ\"}]",
        );
        let err = Recording::from_json(&text).unwrap_err();
        assert!(
            err.to_string()
                .contains("request.headers[0] value: invalid base64"),
            "{err}"
        );
    }

    #[test]
    fn base64_object_must_be_exact() {
        let text = GOLDEN.replace("\"body\": \"{\\\"x\\\":1}\"", "\"body\": {\"b64\": \"\"}");
        let err = Recording::from_json(&text).unwrap_err();
        assert!(err.to_string().contains("unknown field `b64`"), "{err}");
        let text = GOLDEN.replace("\"body\": \"{\\\"x\\\":1}\"", "\"body\": 5");
        let err = Recording::from_json(&text).unwrap_err();
        assert!(
            err.to_string().contains("expected a string or an object"),
            "{err}"
        );
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            "[ -~]{0,16}".prop_map(String::into_bytes),
            any::<String>().prop_map(String::into_bytes),
        ]
        .prop_map(Bytes::from)
    }

    fn arb_headers() -> impl Strategy<Value = Vec<Header>> {
        prop::collection::vec(
            (arb_bytes(), arb_bytes()).prop_map(|(name, value)| Header { name, value }),
            0..4,
        )
    }

    fn arb_framing() -> impl Strategy<Value = Framing> {
        prop_oneof![
            Just(Framing::None),
            Just(Framing::Length),
            Just(Framing::Chunked),
            Just(Framing::Close),
        ]
    }

    fn arb_interaction() -> impl Strategy<Value = Interaction> {
        (
            any::<String>(),
            (arb_bytes(), arb_bytes(), arb_headers(), arb_bytes()),
            (
                100u16..=999,
                arb_bytes(),
                arb_headers(),
                arb_framing(),
                prop::collection::vec(arb_bytes(), 0..5),
                arb_headers(),
            ),
        )
            .prop_map(
                |(
                    fingerprint,
                    (method, target, headers, body),
                    (status, reason, rh, framing, chunks, trailers),
                )| {
                    Interaction {
                        fingerprint,
                        request: RecordedRequest {
                            method,
                            target,
                            headers,
                            body,
                        },
                        response: RecordedResponse {
                            status,
                            reason,
                            headers: rh,
                            framing,
                            chunks,
                            trailers,
                        },
                        websocket: None,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(
            test_name in any::<String>(),
            interactions in prop::collection::vec(arb_interaction(), 0..4),
        ) {
            let r = Recording { test_name, interactions };
            let text = r.to_json();
            prop_assert_eq!(Recording::from_json(&text), Ok(r));
        }

        #[test]
        fn prop_interaction_line_round_trips(interaction in arb_interaction()) {
            let line = interaction.to_json_line();
            prop_assert!(!line.contains('\n') && !line.contains('\r'), "{}", line);
            prop_assert_eq!(Interaction::from_json_line(&line), Ok(interaction));
        }

        #[test]
        fn prop_from_json_never_panics(text in any::<String>()) {
            let _ = Recording::from_json(&text);
        }
    }
}
