//! Body and query normalization for matching, and the byte-level redaction
//! helpers behind [`crate::engine`]'s policies.
//!
//! Everything here is a pure function of its input bytes: no allocation
//! depends on anything but the input, and nothing panics on malformed input
//! (a body that is not what the mode expects falls back to its exact bytes).
//!
//! # JSON
//! JSON bodies are read by a small strict parser ([RFC 8259]) that keeps each
//! value's byte span, so that redaction can replace a value in place and
//! leave every other byte of the body as it was. Nesting deeper than
//! [`MAX_JSON_DEPTH`] is treated as "not JSON".
//!
//! The *canonical form* used by `match_body = "json"` is: no insignificant
//! whitespace; object members sorted bytewise by their (unescaped, UTF-8)
//! key, a repeated key keeping its last value; strings written with only
//! `"` `\` and the control characters escaped (`\b \f \n \r \t`, others as
//! `\u00xx` with lower-case hex), everything else literal UTF-8; numbers,
//! `true`, `false` and `null` exactly as written.
//!
//! [RFC 8259]: https://www.rfc-editor.org/rfc/rfc8259

use std::fmt;

/// Deepest JSON nesting (arrays and objects) the parser accepts.
pub const MAX_JSON_DEPTH: usize = 128;

/// The token that replaces a multipart boundary in the fingerprint.
pub const MULTIPART_BOUNDARY_TOKEN: &[u8] = b"ouli-boundary";

/// A JSON Pointer ([RFC 6901]): `""` is the whole document, `/a/0/b~1c`
/// is member `a`, element 0, member `b/c`.
///
/// [RFC 6901]: https://www.rfc-editor.org/rfc/rfc6901
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<String>,
}

impl JsonPointer {
    /// Parses a pointer; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<JsonPointer, String> {
        if text.is_empty() {
            return Ok(JsonPointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "JSON pointer {text:?} must be empty or start with '/'"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => {
                            return Err(format!(
                                "JSON pointer {text:?}: '~' must be followed by 0 or 1"
                            ))
                        }
                    }
                } else {
                    token.push(c);
                }
            }
            tokens.push(token);
        }
        Ok(JsonPointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Escapes one reference token for a pointer (`~` to `~0`, `/` to `~1`).
pub fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

// ---------------------------------------------------------------------------
// JSON parsing with spans

/// A parsed JSON value with the byte range it occupies in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonNode {
    /// Start of the value in the input.
    pub start: usize,
    /// End (exclusive) of the value in the input.
    pub end: usize,
    /// The value.
    pub value: JsonValue,
}

/// The value of a [`JsonNode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonValue {
    /// An object's members in input order (repeated keys kept).
    Object(Vec<(String, JsonNode)>),
    /// An array's elements.
    Array(Vec<JsonNode>),
    /// A string, unescaped.
    String(String),
    /// A number, `true`, `false` or `null`, as written.
    Literal(String),
}

/// Parses `input` as one JSON document (surrounding whitespace allowed);
/// `None` when it is not valid JSON or nests deeper than [`MAX_JSON_DEPTH`].
pub fn parse_json(input: &[u8]) -> Option<JsonNode> {
    let mut p = Parser { s: input, i: 0 };
    p.ws();
    let node = p.value(0)?;
    p.ws();
    (p.i == input.len()).then_some(node)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.i += 1)
    }

    fn value(&mut self, depth: usize) -> Option<JsonNode> {
        let start = self.i;
        let value = match self.peek()? {
            b'{' => {
                if depth >= MAX_JSON_DEPTH {
                    return None;
                }
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.eat(b'}').is_none() {
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                        let v = self.value(depth + 1)?;
                        members.push((key, v));
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b'}' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                JsonValue::Object(members)
            }
            b'[' => {
                if depth >= MAX_JSON_DEPTH {
                    return None;
                }
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b']').is_none() {
                    loop {
                        self.ws();
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b']' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                JsonValue::Array(items)
            }
            b'"' => JsonValue::String(self.string()?),
            b't' => self.word(b"true")?,
            b'f' => self.word(b"false")?,
            b'n' => self.word(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        };
        Some(JsonNode {
            start,
            end: self.i,
            value,
        })
    }

    fn word(&mut self, w: &[u8]) -> Option<JsonValue> {
        if self.s.get(self.i..self.i + w.len())? == w {
            self.i += w.len();
            Some(JsonValue::Literal(String::from_utf8_lossy(w).into_owned()))
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - from
    }

    fn number(&mut self) -> Option<JsonValue> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        Some(JsonValue::Literal(text.to_owned()))
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let text = std::str::from_utf8(h).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(text, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xd800..0xdc00).contains(&hi) {
                                // A high surrogate must be followed by a low one.
                                self.eat(b'\\')?;
                                self.eat(b'u')?;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return None;
                                }
                                char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?
                            } else {
                                char::from_u32(hi)?
                            };
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => out.push(b),
            }
        }
        String::from_utf8(out).ok()
    }
}

impl JsonNode {
    /// The node a pointer refers to, if it exists. In an object with a
    /// repeated key, the last member with that key is the one referred to.
    pub fn resolve(&self, pointer: &JsonPointer) -> Option<&JsonNode> {
        let mut node = self;
        for token in pointer.tokens() {
            node = node.child(token)?;
        }
        Some(node)
    }

    fn child(&self, token: &str) -> Option<&JsonNode> {
        match &self.value {
            JsonValue::Object(members) => members
                .iter()
                .rev()
                .find(|(k, _)| k == token)
                .map(|(_, v)| v),
            JsonValue::Array(items) => items.get(array_index(token)?),
            _ => None,
        }
    }

    /// Every node a pointer refers to, including every member with a
    /// repeated key, so that redaction misses none of them.
    fn resolve_all<'a>(&'a self, tokens: &[String], out: &mut Vec<&'a JsonNode>) {
        let Some((first, rest)) = tokens.split_first() else {
            out.push(self);
            return;
        };
        match &self.value {
            JsonValue::Object(members) => {
                for (k, v) in members {
                    if k == first {
                        v.resolve_all(rest, out);
                    }
                }
            }
            JsonValue::Array(items) => {
                if let Some(v) = array_index(first).and_then(|i| items.get(i)) {
                    v.resolve_all(rest, out);
                }
            }
            _ => {}
        }
    }

    /// Removes what `pointer` refers to: an object member (every member
    /// with that key) or an array element. Removing the root makes the
    /// document `null`.
    fn remove(&mut self, tokens: &[String]) {
        let Some((first, rest)) = tokens.split_first() else {
            self.value = JsonValue::Literal("null".into());
            return;
        };
        match &mut self.value {
            JsonValue::Object(members) => {
                if rest.is_empty() {
                    members.retain(|(k, _)| k != first);
                } else {
                    for (k, v) in members.iter_mut() {
                        if k == first {
                            v.remove(rest);
                        }
                    }
                }
            }
            JsonValue::Array(items) => {
                if let Some(i) = array_index(first) {
                    if rest.is_empty() {
                        if i < items.len() {
                            items.remove(i);
                        }
                    } else if let Some(v) = items.get_mut(i) {
                        v.remove(rest);
                    }
                }
            }
            _ => {}
        }
    }

    /// Writes the canonical form (see the module docs).
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match &self.value {
            JsonValue::Object(members) => {
                // Last value of a repeated key wins; then sort by key bytes.
                let mut sorted: Vec<(&String, &JsonNode)> = Vec::with_capacity(members.len());
                for (k, v) in members {
                    match sorted.iter_mut().find(|(sk, _)| *sk == k) {
                        Some(slot) => slot.1 = v,
                        None => sorted.push((k, v)),
                    }
                }
                sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push(b'{');
                for (n, (k, v)) in sorted.into_iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    write_json_string(k, out);
                    out.push(b':');
                    v.write_canonical(out);
                }
                out.push(b'}');
            }
            JsonValue::Array(items) => {
                out.push(b'[');
                for (n, v) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    v.write_canonical(out);
                }
                out.push(b']');
            }
            JsonValue::String(s) => write_json_string(s, out),
            JsonValue::Literal(l) => out.extend_from_slice(l.as_bytes()),
        }
    }

    /// The canonical form as a string.
    pub fn canonical(&self) -> String {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// An array index token: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    token.parse().ok()
}

fn write_json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The canonical form of a JSON body with the `ignore`d pointers removed,
/// or `None` when the body is not JSON.
pub fn canonical_json(body: &[u8], ignore: &[JsonPointer]) -> Option<Vec<u8>> {
    let mut node = parse_json(body)?;
    for p in ignore {
        node.remove(p.tokens());
    }
    let mut out = Vec::with_capacity(body.len());
    node.write_canonical(&mut out);
    Some(out)
}

/// Replaces the values at `pointers` with the JSON string `placeholder`,
/// keeping every other byte. `None` when the body is not JSON or no pointer
/// refers to anything (nothing to change).
pub fn redact_json(body: &[u8], pointers: &[JsonPointer], placeholder: &str) -> Option<Vec<u8>> {
    if pointers.is_empty() {
        return None;
    }
    let root = parse_json(body)?;
    let mut found: Vec<&JsonNode> = Vec::new();
    for p in pointers {
        root.resolve_all(p.tokens(), &mut found);
    }
    if found.is_empty() {
        return None;
    }
    let mut spans: Vec<(usize, usize)> = found.iter().map(|n| (n.start, n.end)).collect();
    // Outermost first; drop spans nested in one already kept.
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut kept: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for s in spans {
        match kept.last() {
            Some(last) if s.0 < last.1 => {}
            _ => kept.push(s),
        }
    }
    let mut replacement = Vec::new();
    write_json_string(placeholder, &mut replacement);
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for (start, end) in kept {
        out.extend_from_slice(body.get(at..start)?);
        out.extend_from_slice(&replacement);
        at = end;
    }
    out.extend_from_slice(body.get(at..)?);
    Some(out)
}

/// Pointers at which two JSON documents differ, after removing `ignore`d
/// pointers: a member or element present on one side only, or a value
/// that differs (compared in canonical form). At most `limit` are listed,
/// each as `(pointer, recorded, live)` with the canonical values (`None`
/// for absent). `None` when either body is not JSON.
pub fn json_differences(
    recorded: &[u8],
    live: &[u8],
    ignore: &[JsonPointer],
    limit: usize,
) -> Option<Vec<JsonDifference>> {
    let mut a = parse_json(recorded)?;
    let mut b = parse_json(live)?;
    for p in ignore {
        a.remove(p.tokens());
        b.remove(p.tokens());
    }
    let mut out = Vec::new();
    diff_nodes(&a, &b, &mut String::new(), &mut out, limit);
    Some(out)
}

/// One difference found by [`json_differences`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonDifference {
    /// The JSON Pointer of the differing value.
    pub pointer: String,
    /// The recorded value in canonical form, `None` when absent.
    pub recorded: Option<String>,
    /// The live value in canonical form, `None` when absent.
    pub live: Option<String>,
}

fn last_members(members: &[(String, JsonNode)]) -> Vec<(&String, &JsonNode)> {
    let mut out: Vec<(&String, &JsonNode)> = Vec::with_capacity(members.len());
    for (k, v) in members {
        match out.iter_mut().find(|(sk, _)| *sk == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out
}

fn diff_nodes(
    a: &JsonNode,
    b: &JsonNode,
    path: &mut String,
    out: &mut Vec<JsonDifference>,
    limit: usize,
) {
    if out.len() >= limit {
        return;
    }
    match (&a.value, &b.value) {
        (JsonValue::Object(am), JsonValue::Object(bm)) => {
            let am = last_members(am);
            let bm = last_members(bm);
            let mut keys: Vec<&String> = am.iter().map(|(k, _)| *k).collect();
            for (k, _) in &bm {
                if !keys.contains(k) {
                    keys.push(k);
                }
            }
            keys.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
            for k in keys {
                let len = path.len();
                path.push('/');
                path.push_str(&escape_pointer_token(k));
                let av = am.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
                let bv = bm.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
                match (av, bv) {
                    (Some(av), Some(bv)) => diff_nodes(av, bv, path, out, limit),
                    (av, bv) => {
                        if out.len() < limit {
                            out.push(JsonDifference {
                                pointer: path.clone(),
                                recorded: av.map(JsonNode::canonical),
                                live: bv.map(JsonNode::canonical),
                            });
                        }
                    }
                }
                path.truncate(len);
            }
        }
        (JsonValue::Array(ai), JsonValue::Array(bi)) => {
            for i in 0..ai.len().max(bi.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                match (ai.get(i), bi.get(i)) {
                    (Some(av), Some(bv)) => diff_nodes(av, bv, path, out, limit),
                    (av, bv) => {
                        if out.len() < limit {
                            out.push(JsonDifference {
                                pointer: path.clone(),
                                recorded: av.map(JsonNode::canonical),
                                live: bv.map(JsonNode::canonical),
                            });
                        }
                    }
                }
                path.truncate(len);
            }
        }
        _ => {
            let (ac, bc) = (a.canonical(), b.canonical());
            if ac != bc && out.len() < limit {
                out.push(JsonDifference {
                    pointer: path.clone(),
                    recorded: Some(ac),
                    live: Some(bc),
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Forms, multipart, queries

/// `&`-separated pairs, empty ones dropped, sorted bytewise, joined with
/// `&` (the form body normalization, also used for queries).
pub fn sorted_pairs(text: &[u8]) -> Vec<u8> {
    let mut pairs: Vec<&[u8]> = text
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .collect();
    pairs.sort();
    pairs.join(&b'&')
}

/// The name of a `name=value` pair, percent-decoded (`+` is a space);
/// invalid escapes are kept as written.
pub fn pair_name(pair: &[u8]) -> Vec<u8> {
    let raw = match pair.iter().position(|&b| b == b'=') {
        Some(i) => &pair[..i],
        None => pair,
    };
    percent_decode(raw)
}

/// Percent-decodes `raw` (`+` as a space), keeping invalid escapes as written.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Whether a pair's decoded name is one of `names` (exact, case-sensitive).
pub fn pair_named(pair: &[u8], names: &[String]) -> bool {
    if names.is_empty() {
        return false;
    }
    let name = pair_name(pair);
    names.iter().any(|n| n.as_bytes() == name.as_slice())
}

/// A query with the pairs named in `ignore` removed (order kept).
pub fn drop_pairs(query: &[u8], ignore: &[String]) -> Vec<u8> {
    if ignore.is_empty() {
        return query.to_vec();
    }
    let kept: Vec<&[u8]> = query
        .split(|&b| b == b'&')
        .filter(|p| !pair_named(p, ignore))
        .collect();
    kept.join(&b'&')
}

/// A query with the values of the pairs named in `names` replaced by
/// `placeholder` (order and every other byte kept). `None` if nothing changed.
pub fn redact_pairs(query: &[u8], names: &[String], placeholder: &str) -> Option<Vec<u8>> {
    if names.is_empty() {
        return None;
    }
    let mut changed = false;
    let parts: Vec<Vec<u8>> = query
        .split(|&b| b == b'&')
        .map(|p| {
            if !pair_named(p, names) {
                return p.to_vec();
            }
            let Some(eq) = p.iter().position(|&b| b == b'=') else {
                return p.to_vec();
            };
            if &p[eq + 1..] == placeholder.as_bytes() {
                return p.to_vec();
            }
            changed = true;
            let mut v = p[..=eq].to_vec();
            v.extend_from_slice(placeholder.as_bytes());
            v
        })
        .collect();
    changed.then(|| parts.join(&b'&'))
}

/// The multipart boundary: the `boundary` parameter of `content_type`
/// (quotes removed), else the first line of the body when it starts with
/// `--`.
pub fn multipart_boundary(content_type: Option<&[u8]>, body: &[u8]) -> Option<Vec<u8>> {
    if let Some(ct) = content_type {
        for param in ct.split(|&b| b == b';').skip(1) {
            let param = trim(param);
            let Some(eq) = param.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&param[..eq]).eq_ignore_ascii_case(b"boundary") {
                let mut v = trim(&param[eq + 1..]);
                if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                    v = &v[1..v.len() - 1];
                }
                if !v.is_empty() {
                    return Some(v.to_vec());
                }
            }
        }
    }
    let line_end = body
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(body.len());
    let first = body.get(..line_end)?;
    let b = first.strip_prefix(b"--")?;
    (!b.is_empty() && b.len() <= 200).then(|| b.to_vec())
}

/// The body with every `--boundary` delimiter replaced by
/// `--`[`MULTIPART_BOUNDARY_TOKEN`].
pub fn normalize_multipart(body: &[u8], boundary: &[u8]) -> Vec<u8> {
    let mut needle = b"--".to_vec();
    needle.extend_from_slice(boundary);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(&needle) {
            out.extend_from_slice(b"--");
            out.extend_from_slice(MULTIPART_BOUNDARY_TOKEN);
            i += needle.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptr(s: &str) -> JsonPointer {
        JsonPointer::parse(s).unwrap()
    }

    #[test]
    fn pointers_parse_per_rfc_6901() {
        assert!(ptr("").tokens().is_empty());
        assert_eq!(ptr("/a~1b/~0c/0").tokens(), ["a/b", "~c", "0"]);
        assert_eq!(ptr("/").tokens(), [""]);
        assert!(JsonPointer::parse("a").is_err());
        assert!(JsonPointer::parse("/a~2").is_err());
        assert!(JsonPointer::parse("/a~").is_err());
        let doc = parse_json(br#"{"a/b":{"~c":[7,8]},"":1}"#).unwrap();
        assert_eq!(doc.resolve(&ptr("/a~1b/~0c/1")).unwrap().canonical(), "8");
        assert_eq!(doc.resolve(&ptr("/")).unwrap().canonical(), "1");
        assert!(doc.resolve(&ptr("/a~1b/~0c/01")).is_none());
        assert!(doc.resolve(&ptr("/a~1b/~0c/-")).is_none());
    }

    #[test]
    fn parser_is_strict() {
        for bad in [
            &b""[..],
            b"{",
            b"[1,]",
            b"{\"a\":1,}",
            b"01",
            b"1.",
            b"-",
            b"\"\x01\"",
            b"\"\\ud800\"",
            b"tru",
            b"{} x",
            b"{'a':1}",
        ] {
            assert!(
                parse_json(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b" {} "[..],
            b"[]",
            b"-0.5e+3",
            b"\"\\ud83d\\ude00\"",
            b"null",
        ] {
            assert!(
                parse_json(good).is_some(),
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert!(parse_json(deep.as_bytes()).is_none());
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(parse_json(ok.as_bytes()).is_some());
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let a = canonical_json(
            b"{ \"b\" : [1, {\"y\":2,\"x\":\"\\u0041\\n\"}], \"a\": null }",
            &[],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(a).unwrap(),
            r#"{"a":null,"b":[1,{"x":"A\n","y":2}]}"#
        );
        let dup = canonical_json(br#"{"a":1,"a":2}"#, &[]).unwrap();
        assert_eq!(dup, br#"{"a":2}"#);
        let ignored = canonical_json(
            br#"{"id":"u-1","ts":5,"items":[{"n":1,"at":9},{"n":2}]}"#,
            &[ptr("/id"), ptr("/items/0/at"), ptr("/missing/x")],
        )
        .unwrap();
        assert_eq!(ignored, br#"{"items":[{"n":1},{"n":2}],"ts":5}"#);
        assert!(canonical_json(b"not json", &[]).is_none());
    }

    #[test]
    fn redaction_replaces_values_in_place() {
        let body = br#"{"user": "ann", "auth": {"token": "s3cr3t", "n": [1, "s3cr3t"]}, "auth": {"token": "x"}}"#;
        let out = redact_json(body, &[ptr("/auth/token"), ptr("/auth/n/1")], "[REDACTED]").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"user": "ann", "auth": {"token": "[REDACTED]", "n": [1, "[REDACTED]"]}, "auth": {"token": "[REDACTED]"}}"#
        );
        let nested = redact_json(body, &[ptr("/auth/n/1"), ptr("/auth")], "[REDACTED]").unwrap();
        assert!(!nested.windows(6).any(|w| w == b"s3cr3t"));
        assert!(redact_json(body, &[ptr("/nope")], "[REDACTED]").is_none());
        assert!(redact_json(b"{bad", &[ptr("/a")], "[REDACTED]").is_none());
        assert_eq!(redact_json(b"[1]", &[ptr("")], "R").unwrap(), b"\"R\"");
    }

    #[test]
    fn json_differences_name_pointers() {
        let d = json_differences(
            br#"{"a":1,"b":{"c":[1,2]},"gone":true,"t":1}"#,
            br#"{"b":{"c":[1,3]},"a":1,"new":0,"t":2}"#,
            &[ptr("/t")],
            10,
        )
        .unwrap();
        let pointers: Vec<&str> = d.iter().map(|x| x.pointer.as_str()).collect();
        assert_eq!(pointers, ["/b/c/1", "/gone", "/new"]);
        assert_eq!(d[0].recorded.as_deref(), Some("2"));
        assert_eq!(d[0].live.as_deref(), Some("3"));
        assert_eq!(d[1].live, None);
    }

    #[test]
    fn queries_and_forms() {
        assert_eq!(sorted_pairs(b"b=2&&a=1"), b"a=1&b=2");
        assert_eq!(drop_pairs(b"a=1&_t=9&b=2&_t", &["_t".into()]), b"a=1&b=2");
        assert_eq!(
            redact_pairs(
                b"k=abc&x=1&k%65y=zz",
                &["k".into(), "key".into()],
                "[REDACTED]"
            )
            .unwrap(),
            b"k=[REDACTED]&x=1&k%65y=[REDACTED]"
        );
        assert!(redact_pairs(b"x=1", &["k".into()], "R").is_none());
        assert_eq!(pair_name(b"a+b%2x=1"), b"a b%2x");
    }

    #[test]
    fn multipart_boundary_is_normalized() {
        let body = b"--XyZ\r\ncontent-disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ--\r\n";
        let b = multipart_boundary(Some(b"multipart/form-data; boundary=\"XyZ\""), body).unwrap();
        assert_eq!(b, b"XyZ");
        assert_eq!(multipart_boundary(None, body).unwrap(), b"XyZ");
        let n = normalize_multipart(body, &b);
        assert_eq!(
            n,
            b"--ouli-boundary\r\ncontent-disposition: form-data; name=\"a\"\r\n\r\n1\r\n--ouli-boundary--\r\n"
        );
    }
}
