//! HAR 1.2 (HTTP Archive) export and import: browsers, mitmproxy and
//! Polly.js read and write it.
//!
//! **Export** writes one entry per recorded interaction, tests in name
//! order and interactions in recording order. URLs are `http://` plus the
//! recorded `Host` header and target; `startedDateTime` is the Unix epoch
//! and all timings are 0 (Ouli records no clock). A body that is not UTF-8
//! is written in base64 (`content.encoding = "base64"`; `postData` gets the
//! custom `_encoding = "base64"`). Each entry carries an `_ouli` object
//! (`testName`, `fingerprint`, `framing`, `chunks` as chunk sizes,
//! `trailers`, and the WebSocket close) and WebSocket messages as Chrome's
//! `_webSocketMessages`, so that importing an export gives back the same
//! recordings.
//!
//! **Import** groups entries into tests by `_ouli.testName`, else puts them
//! all in the test named by the caller. For entries that did not come from
//! Ouli, HTTP/2 pseudo-headers and hop-by-hop headers are dropped and, since
//! HAR bodies are stored decoded, so are `Content-Encoding` and
//! `Content-Length`. The fingerprint is computed with the given policy
//! (after its redaction, which also applies to what is stored); without
//! one, `_ouli.fingerprint` is kept, or the default policy's is computed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use ouli_core::engine::{fingerprint, redact_request, redact_response, MatchPolicy};
use ouli_core::matching::percent_decode;
use ouli_core::message::{header_value, Header, HOP_BY_HOP_HEADERS};
use ouli_core::store::{
    Conversation, Framing, Interaction, MessageKind, Peer, RecordedRequest, RecordedResponse,
    Recording, WsClose, WsMessage,
};
use serde_json::{json, Value};

/// The `creator.name` of exported archives.
pub const CREATOR: &str = "ouli";

/// Why a HAR file could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HarError(pub String);

fn text_or_base64(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => (BASE64.encode(bytes), true),
    }
}

fn headers_json(headers: &[Header]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|h| {
                json!({
                    "name": String::from_utf8_lossy(&h.name),
                    "value": String::from_utf8_lossy(&h.value),
                })
            })
            .collect(),
    )
}

fn query_json(target: &[u8]) -> Value {
    let query = match target.iter().position(|&b| b == b'?') {
        Some(i) => &target[i + 1..],
        None => return Value::Array(Vec::new()),
    };
    Value::Array(
        query
            .split(|&b| b == b'&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (n, v) = match p.iter().position(|&b| b == b'=') {
                    Some(i) => (&p[..i], &p[i + 1..]),
                    None => (p, &[][..]),
                };
                json!({
                    "name": String::from_utf8_lossy(&percent_decode(n)),
                    "value": String::from_utf8_lossy(&percent_decode(v)),
                })
            })
            .collect(),
    )
}

fn mime(headers: &[Header]) -> String {
    header_value(headers, "content-type")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn entry(test_name: &str, i: &Interaction) -> Value {
    let req = &i.request;
    let host = header_value(&req.headers, "host")
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_else(|| "localhost".to_owned());
    let target = String::from_utf8_lossy(&req.target);
    let mut request = json!({
        "method": String::from_utf8_lossy(&req.method),
        "url": format!("http://{host}{target}"),
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": headers_json(&req.headers),
        "queryString": query_json(&req.target),
        "headersSize": -1,
        "bodySize": req.body.len(),
    });
    if !req.body.is_empty() {
        let (text, b64) = text_or_base64(&req.body);
        let mut post = json!({ "mimeType": mime(&req.headers), "text": text });
        if b64 {
            post["_encoding"] = json!("base64");
        }
        request["postData"] = post;
    }
    let resp = &i.response;
    let body: Vec<u8> = resp.chunks.concat();
    let (text, b64) = text_or_base64(&body);
    let mut content = json!({
        "size": body.len(),
        "mimeType": mime(&resp.headers),
        "text": text,
    });
    if b64 {
        content["encoding"] = json!("base64");
    }
    let redirect = header_value(&resp.headers, "location")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let mut ouli = json!({
        "testName": test_name,
        "fingerprint": i.fingerprint,
        "framing": resp.framing.as_str(),
        "chunks": resp.chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
        "trailers": headers_json(&resp.trailers),
    });
    let mut e = json!({
        "startedDateTime": "1970-01-01T00:00:00.000Z",
        "time": 0,
        "request": request,
        "response": {
            "status": resp.status,
            "statusText": String::from_utf8_lossy(&resp.reason),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": headers_json(&resp.headers),
            "content": content,
            "redirectURL": redirect,
            "headersSize": -1,
            "bodySize": body.len(),
        },
        "cache": {},
        "timings": { "send": 0, "wait": 0, "receive": 0 },
    });
    if let Some(ws) = &i.websocket {
        let messages: Vec<Value> = ws
            .messages
            .iter()
            .map(|m| {
                let data = match m.kind {
                    MessageKind::Text => String::from_utf8_lossy(&m.payload).into_owned(),
                    MessageKind::Binary => BASE64.encode(&m.payload),
                };
                json!({
                    "type": if m.from == Peer::Client { "send" } else { "receive" },
                    "time": m.at_ms as f64 / 1000.0,
                    "opcode": if m.kind == MessageKind::Text { 1 } else { 2 },
                    "data": data,
                })
            })
            .collect();
        e["_webSocketMessages"] = Value::Array(messages);
        if let Some(c) = &ws.close {
            ouli["websocketClose"] = json!({
                "from": c.from.as_str(),
                "code": c.code,
                "reason": String::from_utf8_lossy(&c.reason),
                "atMs": c.at_ms,
            });
        }
    }
    e["_ouli"] = ouli;
    e
}

/// The HAR 1.2 document for `recordings` (see the module docs).
pub fn export_har(recordings: &[Recording]) -> Value {
    let mut sorted: Vec<&Recording> = recordings.iter().collect();
    sorted.sort_by(|a, b| a.test_name.cmp(&b.test_name));
    let entries: Vec<Value> = sorted
        .iter()
        .flat_map(|r| r.interactions.iter().map(|i| entry(&r.test_name, i)))
        .collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": CREATOR, "version": env!("CARGO_PKG_VERSION") },
            "entries": entries,
        }
    })
}

// ---------------------------------------------------------------------------
// Import

fn field<'a>(v: &'a Value, at: &str, name: &str) -> Result<&'a Value, HarError> {
    v.get(name)
        .ok_or_else(|| HarError(format!("{at}.{name}: missing")))
}

fn str_field<'a>(v: &'a Value, at: &str, name: &str) -> Result<&'a str, HarError> {
    field(v, at, name)?
        .as_str()
        .ok_or_else(|| HarError(format!("{at}.{name}: not a string")))
}

fn headers_from(v: Option<&Value>, at: &str, from_ouli: bool) -> Result<Vec<Header>, HarError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or_else(|| HarError(format!("{at}: not a list")))?;
    let mut out = Vec::with_capacity(list.len());
    for (n, h) in list.iter().enumerate() {
        let at = format!("{at}[{n}]");
        let name = str_field(h, &at, "name")?;
        let value = str_field(h, &at, "value")?;
        if !from_ouli
            && (name.starts_with(':')
                || HOP_BY_HOP_HEADERS
                    .iter()
                    .any(|x| name.eq_ignore_ascii_case(x)))
        {
            continue;
        }
        out.push(Header::new(name.to_owned(), value.to_owned()));
    }
    Ok(out)
}

fn decode_text(text: &str, base64: bool, at: &str) -> Result<Bytes, HarError> {
    if base64 {
        BASE64
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(|e| HarError(format!("{at}: invalid base64: {e}")))
    } else {
        Ok(Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// `(authority, target)` of an absolute URL; a relative one is its own target.
fn split_url(url: &str) -> (Option<&str>, String) {
    let Some((_, rest)) = url.split_once("://") else {
        return (
            None,
            if url.is_empty() {
                "/".into()
            } else {
                url.to_owned()
            },
        );
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let mut target = rest[end..].to_owned();
    if let Some(i) = target.find('#') {
        target.truncate(i);
    }
    if !target.starts_with('/') {
        target.insert(0, '/');
    }
    (Some(authority), target)
}

fn framing_named(s: &str) -> Option<Framing> {
    match s {
        "none" => Some(Framing::None),
        "length" => Some(Framing::Length),
        "chunked" => Some(Framing::Chunked),
        "close" => Some(Framing::Close),
        _ => None,
    }
}

fn peer_named(s: &str) -> Peer {
    if s == "client" {
        Peer::Client
    } else {
        Peer::Server
    }
}

fn import_entry(
    e: &Value,
    at: &str,
    policy: Option<&MatchPolicy>,
) -> Result<(Option<String>, Interaction), HarError> {
    let ouli = e.get("_ouli").filter(|o| o.is_object());
    let from_ouli = ouli.is_some();
    let req = field(e, at, "request")?;
    let rat = format!("{at}.request");
    let method = str_field(req, &rat, "method")?;
    let (authority, target) = split_url(str_field(req, &rat, "url")?);
    let mut headers = headers_from(req.get("headers"), &format!("{rat}.headers"), from_ouli)?;
    if !headers.iter().any(|h| h.is("host")) {
        if let Some(a) = authority {
            headers.insert(0, Header::new("Host", a.to_owned()));
        }
    }
    let body = match req.get("postData") {
        Some(p) => {
            let text = p.get("text").and_then(Value::as_str).unwrap_or_default();
            let b64 = p.get("_encoding").and_then(Value::as_str) == Some("base64")
                || p.get("encoding").and_then(Value::as_str) == Some("base64");
            decode_text(text, b64, &format!("{rat}.postData.text"))?
        }
        None => Bytes::new(),
    };
    let mut request = RecordedRequest {
        method: Bytes::copy_from_slice(method.as_bytes()),
        target: Bytes::from(target),
        headers,
        body,
    };

    let resp = field(e, at, "response")?;
    let sat = format!("{at}.response");
    let status = field(resp, &sat, "status")?
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| HarError(format!("{sat}.status: not a status code")))?;
    let reason = resp
        .get("statusText")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut resp_headers = headers_from(resp.get("headers"), &format!("{sat}.headers"), from_ouli)?;
    if !from_ouli {
        // HAR content is stored decoded: the original encoding and length no longer apply.
        resp_headers.retain(|h| !h.is("content-encoding") && !h.is("content-length"));
    }
    let body = match resp.get("content") {
        Some(c) => {
            let text = c.get("text").and_then(Value::as_str).unwrap_or_default();
            let b64 = c.get("encoding").and_then(Value::as_str) == Some("base64");
            decode_text(text, b64, &format!("{sat}.content.text"))?
        }
        None => Bytes::new(),
    };
    let framing = ouli
        .and_then(|o| o.get("framing"))
        .and_then(Value::as_str)
        .and_then(framing_named)
        .unwrap_or(
            if body.is_empty()
                && (status < 200 || status == 204 || status == 304 || method == "HEAD")
            {
                Framing::None
            } else {
                Framing::Length
            },
        );
    let sizes: Option<Vec<usize>> = ouli
        .and_then(|o| o.get("chunks"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect()
        });
    let chunks = match sizes {
        Some(sizes) if sizes.iter().sum::<usize>() == body.len() && !sizes.contains(&0) => {
            let mut at = 0;
            sizes
                .iter()
                .map(|n| {
                    let c = body.slice(at..at + n);
                    at += n;
                    c
                })
                .collect()
        }
        _ if body.is_empty() => Vec::new(),
        _ => vec![body],
    };
    let trailers = headers_from(
        ouli.and_then(|o| o.get("trailers")),
        &format!("{at}._ouli.trailers"),
        true,
    )?;
    let mut response = RecordedResponse {
        status,
        reason: Bytes::copy_from_slice(reason.as_bytes()),
        headers: resp_headers,
        framing,
        chunks,
        trailers,
    };

    let websocket = match e.get("_webSocketMessages").and_then(Value::as_array) {
        None => None,
        Some(list) => {
            let mut messages = Vec::with_capacity(list.len());
            for (n, m) in list.iter().enumerate() {
                let mat = format!("{at}._webSocketMessages[{n}]");
                let from = match str_field(m, &mat, "type")? {
                    "send" => Peer::Client,
                    _ => Peer::Server,
                };
                let binary = m.get("opcode").and_then(Value::as_u64) == Some(2);
                let data = str_field(m, &mat, "data")?;
                let time = m.get("time").and_then(Value::as_f64).unwrap_or(0.0);
                messages.push(WsMessage {
                    from,
                    kind: if binary {
                        MessageKind::Binary
                    } else {
                        MessageKind::Text
                    },
                    payload: decode_text(data, binary, &mat)?,
                    at_ms: (time * 1000.0).round().max(0.0) as u64,
                });
            }
            let close = ouli.and_then(|o| o.get("websocketClose")).map(|c| WsClose {
                from: peer_named(c.get("from").and_then(Value::as_str).unwrap_or("server")),
                code: c
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|x| u16::try_from(x).ok()),
                reason: Bytes::copy_from_slice(
                    c.get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .as_bytes(),
                ),
                at_ms: c.get("atMs").and_then(Value::as_u64).unwrap_or(0),
            });
            Some(Conversation { messages, close })
        }
    };

    let fp = match (
        policy,
        ouli.and_then(|o| o.get("fingerprint"))
            .and_then(Value::as_str),
    ) {
        (Some(p), _) => {
            redact_request(p, &mut request);
            redact_response(p, &request.target, &mut response);
            fingerprint(p, &request).to_string()
        }
        (None, Some(fp)) if !fp.is_empty() => fp.to_owned(),
        (None, _) => fingerprint(&MatchPolicy::default(), &request).to_string(),
    };
    let test = ouli
        .and_then(|o| o.get("testName"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((
        test,
        Interaction {
            fingerprint: fp,
            request,
            response,
            websocket,
        },
    ))
}

/// Reads a HAR document into recordings, in order of first appearance of
/// each test (see the module docs). Entries without `_ouli.testName` go to
/// `default_test_name`.
pub fn import_har(
    text: &str,
    default_test_name: &str,
    policy: Option<&MatchPolicy>,
) -> Result<Vec<Recording>, HarError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| HarError(format!("not JSON: {e}")))?;
    let entries = doc
        .get("log")
        .and_then(|l| l.get("entries"))
        .and_then(Value::as_array)
        .ok_or_else(|| HarError("log.entries: missing; not a HAR file".into()))?;
    let mut out: Vec<Recording> = Vec::new();
    for (n, e) in entries.iter().enumerate() {
        let (test, interaction) = import_entry(e, &format!("log.entries[{n}]"), policy)?;
        let test = test.unwrap_or_else(|| default_test_name.to_owned());
        match out.iter_mut().find(|r| r.test_name == test) {
            Some(r) => r.interactions.push(interaction),
            None => {
                let mut r = Recording::new(test);
                r.interactions.push(interaction);
                out.push(r);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Recording> {
        let policy = MatchPolicy::default();
        let mut a = Recording::new("b-test");
        let request = RecordedRequest {
            method: Bytes::from_static(b"POST"),
            target: Bytes::from_static(b"/v1/items?q=a%20b&x"),
            headers: vec![
                Header::new("Host", "api.example.com"),
                Header::new("Content-Type", "application/json"),
            ],
            body: Bytes::from_static(b"{\"x\":1}"),
        };
        a.interactions.push(Interaction {
            fingerprint: fingerprint(&policy, &request).to_string(),
            request,
            response: RecordedResponse {
                status: 201,
                reason: Bytes::from_static(b"Created"),
                headers: vec![Header::new("Content-Type", "text/plain")],
                framing: Framing::Chunked,
                chunks: vec![Bytes::from_static(b"hel"), Bytes::from_static(b"lo")],
                trailers: vec![Header::new("X-Sum", "1")],
            },
            websocket: None,
        });
        let request = RecordedRequest {
            method: Bytes::from_static(b"PUT"),
            target: Bytes::from_static(b"/bin"),
            headers: vec![Header::new("Host", "api.example.com")],
            body: Bytes::from_static(&[0xff, 0x00, 0x10]),
        };
        a.interactions.push(Interaction {
            fingerprint: fingerprint(&policy, &request).to_string(),
            request,
            response: RecordedResponse {
                status: 204,
                reason: Bytes::from_static(b"No Content"),
                headers: vec![],
                framing: Framing::None,
                chunks: vec![],
                trailers: vec![],
            },
            websocket: None,
        });
        let mut b = Recording::new("a-test");
        let request = RecordedRequest {
            method: Bytes::from_static(b"GET"),
            target: Bytes::from_static(b"/ws"),
            headers: vec![Header::new("Host", "api.example.com")],
            body: Bytes::new(),
        };
        b.interactions.push(Interaction {
            fingerprint: fingerprint(&policy, &request).to_string(),
            request,
            response: RecordedResponse {
                status: 101,
                reason: Bytes::from_static(b"Switching Protocols"),
                headers: vec![Header::new("Sec-WebSocket-Accept", "x")],
                framing: Framing::None,
                chunks: vec![],
                trailers: vec![],
            },
            websocket: Some(Conversation {
                messages: vec![
                    WsMessage {
                        from: Peer::Client,
                        kind: MessageKind::Text,
                        payload: Bytes::from_static(b"hi"),
                        at_ms: 5,
                    },
                    WsMessage {
                        from: Peer::Server,
                        kind: MessageKind::Binary,
                        payload: Bytes::from_static(&[1, 2, 255]),
                        at_ms: 1250,
                    },
                ],
                close: Some(WsClose {
                    from: Peer::Client,
                    code: Some(1000),
                    reason: Bytes::from_static(b"bye"),
                    at_ms: 2000,
                }),
            }),
        });
        vec![a, b]
    }

    #[test]
    fn export_then_import_round_trips() {
        let recs = sample();
        let har = export_har(&recs);
        assert_eq!(har["log"]["version"], "1.2");
        let entries = har["log"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0]["_ouli"]["testName"], "a-test",
            "tests in name order"
        );
        let e = &entries[1];
        assert_eq!(
            e["request"]["url"],
            "http://api.example.com/v1/items?q=a%20b&x"
        );
        assert_eq!(e["request"]["queryString"][0]["value"], "a b");
        assert_eq!(e["request"]["postData"]["mimeType"], "application/json");
        assert_eq!(e["response"]["content"]["text"], "hello");
        assert_eq!(entries[2]["request"]["postData"]["_encoding"], "base64");
        let text = serde_json::to_string_pretty(&har).unwrap();
        let back = import_har(&text, "unused", None).unwrap();
        let mut expected = recs.clone();
        expected.sort_by(|a, b| a.test_name.cmp(&b.test_name));
        assert_eq!(back, expected);
    }

    #[test]
    fn imports_a_browser_har() {
        let har = r#"{"log":{"version":"1.2","creator":{"name":"x","version":"1"},"entries":[
          {"startedDateTime":"2024-01-01T00:00:00Z","time":1,
           "request":{"method":"GET","url":"https://api.example.com/items?a=1#frag","httpVersion":"h2",
             "headers":[{"name":":authority","value":"api.example.com"},{"name":"accept","value":"*/*"},
                        {"name":"connection","value":"keep-alive"}],"queryString":[],"cookies":[],"headersSize":-1,"bodySize":0},
           "response":{"status":200,"statusText":"","httpVersion":"h2","cookies":[],"redirectURL":"","headersSize":-1,"bodySize":-1,
             "headers":[{"name":"content-encoding","value":"gzip"},{"name":"content-length","value":"10"},
                        {"name":"content-type","value":"application/json"}],
             "content":{"size":2,"mimeType":"application/json","text":"[]"}},
           "cache":{},"timings":{"send":0,"wait":0,"receive":0}}]}}"#;
        let recs = import_har(har, "browser", None).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].test_name, "browser");
        let i = &recs[0].interactions[0];
        assert_eq!(&i.request.target[..], b"/items?a=1");
        assert_eq!(
            i.request.headers,
            [
                Header::new("Host", "api.example.com"),
                Header::new("accept", "*/*")
            ]
        );
        assert_eq!(
            i.response.headers,
            [Header::new("content-type", "application/json")]
        );
        assert_eq!(i.response.chunks, [Bytes::from_static(b"[]")]);
        assert_eq!(
            i.fingerprint,
            fingerprint(&MatchPolicy::default(), &i.request).to_string()
        );
        let e = import_har("{\"log\":{\"entries\":[{\"request\":{}}]}}", "t", None).unwrap_err();
        assert_eq!(e.0, "log.entries[0].request.method: missing");
        assert!(import_har("[]", "t", None).is_err());
    }
}
