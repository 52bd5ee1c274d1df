//! `ouli import --test-server DIR`: converting Google test-server's
//! recordings into Ouli's format.
//!
//! test-server writes, per test, a JSON file (under sub-directories when the
//! test name has `/`):
//!
//! ```json
//! {
//!   "recordID": "models/sample-test",
//!   "interactions": [
//!     {
//!       "request": {
//!         "method": "POST", "url": "/v1/items?x=1",
//!         "headers": { "Content-Type": "application/json", "Test-Name": "models/sample-test" },
//!         "bodySegments": [ { "name": "x" } ],
//!         "previousRequest": "<sha256 of the previous request, a chain>",
//!         "serverAddress": "api.example.com", "port": 443, "protocol": "https"
//!       },
//!       "shaSum": "<sha256>",
//!       "response": { "statusCode": 200, "headers": { "Content-Type": "application/json" },
//!                     "bodySegments": [ { "ok": true } ] }
//!     }
//!   ]
//! }
//! ```
//!
//! and, for a WebSocket, a `.websocket` log with one line per message,
//! `[WS_MSG][C2S]payload` (client to server) or `[WS_MSG][S2C]payload`
//! (the shorter `[C2S]` and `[S2C]` are accepted too).
//!
//! The conversion, per test (the test name is `recordID`, else the file's
//! path under DIR without its extension):
//! * interactions keep their order (test-server's `previousRequest` chain is
//!   that order);
//! * a body segment that is `null` is no bytes, a string is its text, any
//!   other JSON value is its compact JSON text; the request body is the
//!   segments joined, a response with several segments becomes a chunked
//!   response with one chunk per segment;
//! * request headers lose the test name headers and hop-by-hop fields, get
//!   a `Host` from `serverAddress` (and `port` unless 80 or 443) when they
//!   have none, and a `Content-Length` matching the converted body;
//!   response headers lose `Content-Encoding` and `Content-Length` (test-server
//!   stores bodies decoded) and hop-by-hop fields;
//! * a `.websocket` log becomes the conversation of the test's interaction
//!   whose request asked to upgrade (answered `101`), or of a new
//!   `GET /` upgrade interaction when there is none (the log does not hold
//!   the path: the report says so). Messages have no timing (`at_ms` 0) and
//!   no close.
//!
//! Fingerprints are computed with the given policy after its redaction
//! (which also applies to what is stored), or the default policy.

use crate::recording_dir::RecordingDir;
use bytes::Bytes;
use ouli_core::engine::{fingerprint, redact_request, redact_response, MatchPolicy};
use ouli_core::message::{Header, HOP_BY_HOP_HEADERS};
use ouli_core::store::{
    Conversation, Framing, Interaction, MessageKind, Peer, RecordedRequest, RecordedResponse,
    Recording, WsMessage,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Tests written: name, interactions, file.
    pub written: Vec<(String, usize, PathBuf)>,
    /// Files not converted, with the reason.
    pub skipped: Vec<String>,
    /// Things worth knowing about what was converted.
    pub notes: Vec<String>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "imported {} test(s)", self.written.len())?;
        for (name, n, path) in &self.written {
            writeln!(
                f,
                "  test {name:?}: {n} interaction(s) -> {}",
                path.display()
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "  skipped: {s}")?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The path under `root` without its extension, with `/` separators.
fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path).with_extension("");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn segment_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => Some(other.to_string().into_bytes()),
    }
}

fn segments(v: Option<&Value>) -> Vec<Vec<u8>> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(segment_bytes).collect(),
        Some(Value::String(s)) => vec![s.as_bytes().to_vec()],
        _ => Vec::new(),
    }
}

fn headers_of(v: Option<&Value>) -> Vec<Header> {
    let mut out = Vec::new();
    if let Some(Value::Object(map)) = v {
        for (name, value) in map {
            match value {
                Value::String(s) => out.push(Header::new(name.clone(), s.clone())),
                Value::Array(items) => {
                    for s in items.iter().filter_map(Value::as_str) {
                        out.push(Header::new(name.clone(), s.to_owned()));
                    }
                }
                Value::Number(n) => out.push(Header::new(name.clone(), n.to_string())),
                _ => {}
            }
        }
    }
    out
}

fn is_hop(h: &Header) -> bool {
    HOP_BY_HOP_HEADERS.iter().any(|n| h.is(n))
}

fn asks_upgrade(headers: &[Header]) -> bool {
    headers
        .iter()
        .any(|h| h.is("upgrade") && h.value.eq_ignore_ascii_case(b"websocket"))
}

/// Converts one test-server interaction; `at` names it in errors.
fn interaction(v: &Value, at: &str) -> Result<(Interaction, bool), String> {
    let req = v.get("request").ok_or(format!("{at}.request: missing"))?;
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .ok_or(format!("{at}.request.method: missing"))?;
    let url = req.get("url").and_then(Value::as_str).unwrap_or("/");
    let target = match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_owned(),
            None => "/".to_owned(),
        },
        None if url.starts_with('/') => url.to_owned(),
        None => format!("/{url}"),
    };
    let raw_headers = headers_of(req.get("headers"));
    let upgrade = asks_upgrade(&raw_headers);
    let body: Vec<u8> = segments(req.get("bodySegments")).concat();
    let mut headers: Vec<Header> = raw_headers
        .into_iter()
        .filter(|h| {
            !is_hop(h) && !h.is("test-name") && !h.is("x-ouli-test-name") && !h.is("content-length")
        })
        .collect();
    if !headers.iter().any(|h| h.is("host")) {
        if let Some(host) = req.get("serverAddress").and_then(Value::as_str) {
            let port = req.get("port").and_then(Value::as_u64).unwrap_or(443);
            let value = if port == 80 || port == 443 {
                host.to_owned()
            } else {
                format!("{host}:{port}")
            };
            headers.insert(0, Header::new("Host", value));
        }
    }
    if !body.is_empty() {
        headers.push(Header::new("Content-Length", body.len().to_string()));
    }
    if upgrade {
        headers.push(Header::new("Upgrade", "websocket"));
        headers.push(Header::new("Connection", "Upgrade"));
    }
    let resp = v.get("response").ok_or(format!("{at}.response: missing"))?;
    let status = resp
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=999).contains(s))
        .ok_or(format!("{at}.response.statusCode: missing or invalid"))?;
    let chunks: Vec<Bytes> = segments(resp.get("bodySegments").or_else(|| resp.get("body")))
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(Bytes::from)
        .collect();
    let resp_headers: Vec<Header> = headers_of(resp.get("headers"))
        .into_iter()
        .filter(|h| !is_hop(h) && !h.is("content-encoding") && !h.is("content-length"))
        .collect();
    let framing = if chunks.len() > 1 {
        Framing::Chunked
    } else if chunks.is_empty() && (status < 200 || status == 204 || status == 304) {
        Framing::None
    } else {
        Framing::Length
    };
    Ok((
        Interaction {
            fingerprint: String::new(),
            request: RecordedRequest {
                method: Bytes::copy_from_slice(method.as_bytes()),
                target: Bytes::from(target),
                headers,
                body: Bytes::from(body),
            },
            response: RecordedResponse {
                status,
                reason: Bytes::new(),
                headers: resp_headers,
                framing,
                chunks,
                trailers: Vec::new(),
            },
            websocket: None,
        },
        upgrade,
    ))
}

/// Parses a `.websocket` log into messages; lines before the first marker
/// are reported.
pub fn parse_websocket_log(bytes: &[u8]) -> (Vec<WsMessage>, usize) {
    const MARKERS: [(&[u8], Peer); 4] = [
        (b"[WS_MSG][C2S]", Peer::Client),
        (b"[WS_MSG][S2C]", Peer::Server),
        (b"[C2S]", Peer::Client),
        (b"[S2C]", Peer::Server),
    ];
    let mut messages: Vec<(Peer, Vec<u8>)> = Vec::new();
    let mut stray = 0;
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for line in lines {
        let marked = MARKERS
            .iter()
            .find_map(|(m, peer)| line.strip_prefix(*m).map(|rest| (*peer, rest)));
        match (marked, messages.last_mut()) {
            (Some((peer, rest)), _) => messages.push((peer, rest.to_vec())),
            (None, Some((_, payload))) => {
                payload.push(b'\n');
                payload.extend_from_slice(line);
            }
            (None, None) => stray += 1,
        }
    }
    let messages = messages
        .into_iter()
        .map(|(from, payload)| WsMessage {
            from,
            kind: if std::str::from_utf8(&payload).is_ok() {
                MessageKind::Text
            } else {
                MessageKind::Binary
            },
            payload: Bytes::from(payload),
            at_ms: 0,
        })
        .collect();
    (messages, stray)
}

/// Converts every test-server recording under `src` (recursively) and
/// writes Ouli recordings into `dest` (a test already there is replaced).
pub fn import_test_server(
    src: &Path,
    dest: &RecordingDir,
    policy: Option<&MatchPolicy>,
) -> io::Result<ImportReport> {
    let mut files = Vec::new();
    files_under(src, &mut files)?;
    files.sort();
    let mut report = ImportReport::default();
    // Test name -> (recording, whether each interaction asked to upgrade).
    let mut tests: BTreeMap<String, (Recording, Vec<bool>)> = BTreeMap::new();
    let mut logs: Vec<(String, PathBuf)> = Vec::new();
    for path in &files {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "json" => {}
            "websocket" => {
                logs.push((relative_name(src, path), path.clone()));
                continue;
            }
            "req" | "resp" => {
                report.skipped.push(format!(
                    "{}: test-server's older .req/.resp format is not supported",
                    path.display()
                ));
                continue;
            }
            _ => {
                report
                    .skipped
                    .push(format!("{}: not a test-server recording", path.display()));
                continue;
            }
        }
        let text = fs::read_to_string(path)?;
        let doc: Value = match serde_json::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                report
                    .skipped
                    .push(format!("{}: not JSON: {e}", path.display()));
                continue;
            }
        };
        let Some(list) = doc.get("interactions").and_then(Value::as_array) else {
            report.skipped.push(format!(
                "{}: no \"interactions\" list; not a test-server recording",
                path.display()
            ));
            continue;
        };
        let name = doc
            .get("recordID")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| relative_name(src, path));
        let mut converted = Vec::with_capacity(list.len());
        let mut failed = None;
        for (n, v) in list.iter().enumerate() {
            match interaction(v, &format!("interactions[{n}]")) {
                Ok(c) => converted.push(c),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            report.skipped.push(format!("{}: {e}", path.display()));
            continue;
        }
        let entry = tests
            .entry(name.clone())
            .or_insert_with(|| (Recording::new(name), Vec::new()));
        for (i, upgrade) in converted {
            entry.0.interactions.push(i);
            entry.1.push(upgrade);
        }
    }
    for (name, path) in logs {
        let bytes = fs::read(&path)?;
        let (messages, stray) = parse_websocket_log(&bytes);
        if stray > 0 {
            report.notes.push(format!(
                "{}: {stray} line(s) before the first [C2S]/[S2C] marker were ignored",
                path.display()
            ));
        }
        let entry = tests
            .entry(name.clone())
            .or_insert_with(|| (Recording::new(name.clone()), Vec::new()));
        let slot = entry
            .1
            .iter()
            .zip(&entry.0.interactions)
            .position(|(up, i)| *up && i.websocket.is_none());
        let conversation = Conversation {
            messages,
            close: None,
        };
        match slot {
            Some(at) => {
                let i = &mut entry.0.interactions[at];
                i.response.status = 101;
                i.response.framing = Framing::None;
                i.response.chunks.clear();
                if !i
                    .response
                    .headers
                    .iter()
                    .any(|h| h.is("sec-websocket-accept"))
                {
                    // Replay answers with the client's own accept key here.
                    i.response
                        .headers
                        .push(Header::new("Sec-WebSocket-Accept", "recomputed-on-replay"));
                }
                i.websocket = Some(conversation);
            }
            None => {
                report.notes.push(format!(
                    "{}: the upgrade request is not in the log; recorded as GET / (edit the \
                     target in the recording if the client connects to another path)",
                    path.display()
                ));
                entry.0.interactions.push(Interaction {
                    fingerprint: String::new(),
                    request: RecordedRequest {
                        method: Bytes::from_static(b"GET"),
                        target: Bytes::from_static(b"/"),
                        headers: vec![
                            Header::new("Upgrade", "websocket"),
                            Header::new("Connection", "Upgrade"),
                        ],
                        body: Bytes::new(),
                    },
                    response: RecordedResponse {
                        status: 101,
                        reason: Bytes::from_static(b"Switching Protocols"),
                        headers: vec![Header::new("Sec-WebSocket-Accept", "recomputed-on-replay")],
                        framing: Framing::None,
                        chunks: Vec::new(),
                        trailers: Vec::new(),
                    },
                    websocket: Some(conversation),
                });
                entry.1.push(true);
            }
        }
    }
    let default_policy = MatchPolicy::default();
    for (_, (mut recording, _)) in tests {
        for i in &mut recording.interactions {
            let p = policy.unwrap_or(&default_policy);
            redact_request(p, &mut i.request);
            redact_response(p, &i.request.target, &mut i.response);
            i.fingerprint = fingerprint(p, &i.request).to_string();
        }
        if recording.test_name.is_empty() {
            report
                .skipped
                .push("a recording with an empty test name".to_owned());
            continue;
        }
        let path = dest.write_atomic(&recording)?;
        report.written.push((
            recording.test_name.clone(),
            recording.interactions.len(),
            path,
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_log_lines() {
        let (m, stray) = parse_websocket_log(
            b"junk\n[WS_MSG][C2S]hello\n[WS_MSG][S2C]line1\nline2\n[C2S]\xff\n",
        );
        assert_eq!(stray, 1);
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].from, &m[0].payload[..]),
            (Peer::Client, &b"hello"[..])
        );
        assert_eq!(
            (m[1].from, &m[1].payload[..]),
            (Peer::Server, &b"line1\nline2"[..])
        );
        assert_eq!(m[2].kind, MessageKind::Binary);
    }

    #[test]
    fn interaction_conversion() {
        let v: Value = serde_json::from_str(
            r#"{"request":{"method":"POST","url":"/v1/x?a=1","headers":{"Test-Name":"t","Connection":"keep-alive",
                "Content-Length":"99","Accept":["a","b"]},"bodySegments":[{"b":1,"a":"x"}],
                "previousRequest":"h","serverAddress":"api.example.com","port":8443,"protocol":"https"},
               "shaSum":"s","response":{"statusCode":200,"headers":{"Content-Encoding":"gzip","X":"y"},
                "bodySegments":[{"ok":true},"tail"]}}"#,
        )
        .unwrap();
        let (i, upgrade) = interaction(&v, "i").unwrap();
        assert!(!upgrade);
        assert_eq!(&i.request.target[..], b"/v1/x?a=1");
        assert_eq!(&i.request.body[..], br#"{"a":"x","b":1}"#);
        assert_eq!(
            i.request.headers,
            [
                Header::new("Host", "api.example.com:8443"),
                Header::new("Accept", "a"),
                Header::new("Accept", "b"),
                Header::new("Content-Length", "15"),
            ]
        );
        assert_eq!(i.response.headers, [Header::new("X", "y")]);
        assert_eq!(i.response.framing, Framing::Chunked);
        assert_eq!(i.response.chunks.len(), 2);
        assert!(interaction(&serde_json::json!({"request":{}}), "i").is_err());
    }
}
