//! Record/replay decisions over protocol-neutral values: which test a request
//! belongs to, its fingerprint, what is redacted before storing, and which
//! recorded interaction answers it in replay.
//!
//! # Policies
//! A [`MatchPolicy`] holds an endpoint's matching and redaction rules, and
//! optional per-path overrides ([`PathPolicy`], built with
//! [`MatchPolicy::add_path`]). Every function here that takes a policy first
//! picks the effective one for the request's path with
//! [`MatchPolicy::for_target`]: the override with the longest `prefix` that
//! the path (the target before `?`) starts with, bytewise; the endpoint's
//! rules when none does.
//!
//! # Redaction
//! [`redact_request`] and [`redact_response`] replace secrets with
//! [`REDACTED_PLACEHOLDER`] in what is stored. On the request: the values of
//! the `redact_request_headers`; the values of the `redact_query_params` in
//! the target (`token=abc` becomes `token=[REDACTED]`); and the values at the
//! `redact_json_fields` pointers when the body is JSON (replaced by the JSON
//! string `"[REDACTED]"` in place, every other byte kept). On the response:
//! the values of the `redact_response_headers` (headers and trailers), and
//! the `redact_json_fields` values when the body is JSON and not
//! content-encoded. A changed body gets its `Content-Length` header updated.
//! Replay redacts the live request the same way before fingerprinting, so
//! a request carrying a different secret matches the recording.
//!
//! # The fingerprint (format `ouli-fp-v1`)
//! A SHA-256 digest, written as 64 lower-case hex digits, computed over the
//! request *after* [`redact_request`], with the effective policy. It covers,
//! in order and each followed by a NUL byte:
//! 1. the tag `ouli-fp-v1`;
//! 2. the method, as sent;
//! 3. the path (the target before `?`), as sent;
//! 4. the query parameters (the `&`-separated pairs after `?`, raw, not
//!    decoded): empty pairs and the pairs whose percent-decoded name is in
//!    `ignore_query_params` dropped, the rest sorted bytewise and joined with
//!    `&`;
//! 5. for every header named in `match_request_headers` and in neither
//!    `redact_request_headers` nor `ignore_request_headers` (names
//!    lower-cased and sorted; values in wire order): `name:value`, one field
//!    per header line;
//!
//! then, with no NUL after it, the body as `match_body` normalizes it
//! ([`normalized_body`]):
//! * `exact` (the default): the body bytes;
//! * `json`: the canonical form of the JSON document (see
//!   [`crate::matching`]: no whitespace, keys sorted, a repeated key keeping
//!   its last value) with the `ignore_json_fields` pointers removed; a body
//!   that is not JSON is used as is;
//! * `form`: the `&`-separated pairs, empty ones dropped, sorted bytewise,
//!   joined with `&`;
//! * `multipart`: the body with every `--BOUNDARY` (the `boundary` of the
//!   request's `Content-Type`, else the body's first line) replaced by
//!   `--ouli-boundary`.
//!
//! Everything else (other headers, the test name header, the protocol
//! version, `on_repeat`) is left out, so the digest is stable across
//! clients. With the default policy the digest is the one earlier versions
//! computed. The `fingerprint_is_stable` and `mode_fingerprints_are_stable`
//! tests pin known digests: changing this layout is a format change and
//! needs a new tag.
//!
//! # Repeated requests
//! Identical requests (same fingerprint) within a test are answered by
//! `on_repeat` ([`OnRepeat`]): `in_order` (the n-th request gets the n-th
//! recorded answer, past the end a miss), `repeat_last`, `cycle` or
//! `first`.

use crate::matching::{
    canonical_json, drop_pairs, json_differences, multipart_boundary, normalize_multipart,
    pair_named, redact_json, redact_pairs, sorted_pairs, JsonPointer,
};
use crate::message::{header_value, is_hop_by_hop, Header, RequestHead};
use crate::store::{Interaction, RecordedRequest, RecordedResponse, Recording};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// The request header that names the test a request belongs to. It picks the
/// recording file and is stripped before forwarding and recording.
pub const TEST_NAME_HEADER: &str = "x-ouli-test-name";
/// Google test-server's test name header, accepted as an alias of
/// [`TEST_NAME_HEADER`] (which wins when both are present); also stripped.
pub const TEST_NAME_ALIAS_HEADER: &str = "test-name";
/// The test name used when a request carries no [`TEST_NAME_HEADER`].
pub const DEFAULT_TEST_NAME: &str = "default";
/// Longest accepted test name, in bytes; longer names are cut to this.
pub const MAX_TEST_NAME_BYTES: usize = 200;
/// What a redacted value is replaced with before storing.
pub const REDACTED_PLACEHOLDER: &str = "[REDACTED]";
/// How many closest recorded requests a miss report lists.
pub const MISS_CANDIDATES: usize = 3;
/// How many differing JSON pointers a miss report lists per candidate.
pub const MISS_JSON_POINTERS: usize = 8;

const FINGERPRINT_TAG: &[u8] = b"ouli-fp-v1";

/// How request bodies are compared (`match_body`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BodyMatch {
    /// `exact`: byte for byte.
    #[default]
    Exact,
    /// `json`: semantically (key order and whitespace do not matter), with
    /// `ignore_json_fields` removed.
    Json,
    /// `form`: `application/x-www-form-urlencoded` pairs in any order.
    Form,
    /// `multipart`: the boundary does not matter.
    Multipart,
}

impl BodyMatch {
    /// The values accepted in the config.
    pub const ALLOWED: &'static [&'static str] = &["exact", "json", "form", "multipart"];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyMatch::Exact => "exact",
            BodyMatch::Json => "json",
            BodyMatch::Form => "form",
            BodyMatch::Multipart => "multipart",
        }
    }

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exact" => Some(BodyMatch::Exact),
            "json" => Some(BodyMatch::Json),
            "form" => Some(BodyMatch::Form),
            "multipart" => Some(BodyMatch::Multipart),
            _ => None,
        }
    }
}

/// Which recorded answer a repeated identical request gets (`on_repeat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnRepeat {
    /// `in_order`: the n-th request gets the n-th answer; past the end, a miss.
    #[default]
    InOrder,
    /// `repeat_last`: in order, then the last answer again and again.
    RepeatLast,
    /// `cycle`: in order, then from the first again.
    Cycle,
    /// `first`: always the first answer.
    First,
}

impl OnRepeat {
    /// The values accepted in the config.
    pub const ALLOWED: &'static [&'static str] = &["in_order", "repeat_last", "cycle", "first"];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnRepeat::InOrder => "in_order",
            OnRepeat::RepeatLast => "repeat_last",
            OnRepeat::Cycle => "cycle",
            OnRepeat::First => "first",
        }
    }

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "in_order" => Some(OnRepeat::InOrder),
            "repeat_last" => Some(OnRepeat::RepeatLast),
            "cycle" => Some(OnRepeat::Cycle),
            "first" => Some(OnRepeat::First),
            _ => None,
        }
    }

    /// Which of `n` recorded answers the request that has been answered
    /// `served` times before gets, if any.
    fn pick(self, served: usize, n: usize) -> Option<usize> {
        if n == 0 {
            return None;
        }
        match self {
            OnRepeat::InOrder => (served < n).then_some(served),
            OnRepeat::RepeatLast => Some(served.min(n - 1)),
            OnRepeat::Cycle => Some(served % n),
            OnRepeat::First => Some(0),
        }
    }
}

/// Per-endpoint rules for what is matched and what is redacted. See the
/// module docs for how each field enters the fingerprint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchPolicy {
    /// Request header names (case-insensitive) whose values never reach disk
    /// and never enter the fingerprint.
    pub redact_request_headers: Vec<String>,
    /// Request header names (case-insensitive) whose values enter the
    /// fingerprint (no header does by default).
    pub match_request_headers: Vec<String>,
    /// Request header names (case-insensitive) taken out of
    /// `match_request_headers` (useful in a path override).
    pub ignore_request_headers: Vec<String>,
    /// Query parameter names (percent-decoded, case-sensitive) left out of
    /// the fingerprint, such as cache busters.
    pub ignore_query_params: Vec<String>,
    /// How bodies are compared.
    pub match_body: BodyMatch,
    /// With [`BodyMatch::Json`]: JSON Pointers of volatile fields left out
    /// of the fingerprint.
    pub ignore_json_fields: Vec<JsonPointer>,
    /// Which answer repeated identical requests get.
    pub on_repeat: OnRepeat,
    /// Response header names (case-insensitive) whose values are replaced
    /// before storing, such as `Set-Cookie`.
    pub redact_response_headers: Vec<String>,
    /// Query parameter names (percent-decoded, case-sensitive) whose values
    /// are replaced before storing and before fingerprinting.
    pub redact_query_params: Vec<String>,
    /// JSON Pointers whose values are replaced in JSON request and response
    /// bodies before storing and before fingerprinting.
    pub redact_json_fields: Vec<JsonPointer>,
    /// Per-path overrides, each a whole policy; see [`MatchPolicy::for_target`].
    pub paths: Vec<PathPolicy>,
}

/// The policy for the requests whose path starts with `prefix`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// The path prefix, compared bytewise (`/v1/chat` also covers
    /// `/v1/chat/completions` and `/v1/chatter`).
    pub prefix: String,
    /// The effective policy for those requests (its own `paths` are unused).
    pub policy: MatchPolicy,
}

/// The fields a path override sets; `None` keeps the endpoint's value.
/// Redaction lists are added to the endpoint's (an override can never
/// un-redact); the other lists replace the endpoint's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOverride {
    /// Added to [`MatchPolicy::redact_request_headers`].
    pub redact_request_headers: Vec<String>,
    /// Replaces [`MatchPolicy::match_request_headers`].
    pub match_request_headers: Option<Vec<String>>,
    /// Replaces [`MatchPolicy::ignore_request_headers`].
    pub ignore_request_headers: Option<Vec<String>>,
    /// Replaces [`MatchPolicy::ignore_query_params`].
    pub ignore_query_params: Option<Vec<String>>,
    /// Replaces [`MatchPolicy::match_body`].
    pub match_body: Option<BodyMatch>,
    /// Replaces [`MatchPolicy::ignore_json_fields`].
    pub ignore_json_fields: Option<Vec<JsonPointer>>,
    /// Replaces [`MatchPolicy::on_repeat`].
    pub on_repeat: Option<OnRepeat>,
    /// Added to [`MatchPolicy::redact_response_headers`].
    pub redact_response_headers: Vec<String>,
    /// Added to [`MatchPolicy::redact_query_params`].
    pub redact_query_params: Vec<String>,
    /// Added to [`MatchPolicy::redact_json_fields`].
    pub redact_json_fields: Vec<JsonPointer>,
}

fn union<T: Clone + PartialEq>(base: &[T], more: &[T]) -> Vec<T> {
    let mut out = base.to_vec();
    for m in more {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

impl MatchPolicy {
    /// Adds a per-path override: the endpoint's rules with `o` applied.
    pub fn add_path(&mut self, prefix: impl Into<String>, o: &PolicyOverride) {
        let base = self;
        let policy = MatchPolicy {
            redact_request_headers: union(&base.redact_request_headers, &o.redact_request_headers),
            match_request_headers: o
                .match_request_headers
                .clone()
                .unwrap_or_else(|| base.match_request_headers.clone()),
            ignore_request_headers: o
                .ignore_request_headers
                .clone()
                .unwrap_or_else(|| base.ignore_request_headers.clone()),
            ignore_query_params: o
                .ignore_query_params
                .clone()
                .unwrap_or_else(|| base.ignore_query_params.clone()),
            match_body: o.match_body.unwrap_or(base.match_body),
            ignore_json_fields: o
                .ignore_json_fields
                .clone()
                .unwrap_or_else(|| base.ignore_json_fields.clone()),
            on_repeat: o.on_repeat.unwrap_or(base.on_repeat),
            redact_response_headers: union(
                &base.redact_response_headers,
                &o.redact_response_headers,
            ),
            redact_query_params: union(&base.redact_query_params, &o.redact_query_params),
            redact_json_fields: union(&base.redact_json_fields, &o.redact_json_fields),
            paths: Vec::new(),
        };
        base.paths.push(PathPolicy {
            prefix: prefix.into(),
            policy,
        });
    }

    /// The effective policy for a request target: the path override with
    /// the longest prefix of the path (the first one on a tie), else `self`.
    pub fn for_target(&self, target: &[u8]) -> &MatchPolicy {
        let (path, _) = split_target(target);
        let mut best: Option<&PathPolicy> = None;
        for p in &self.paths {
            if path.starts_with(p.prefix.as_bytes())
                && best.is_none_or(|b| p.prefix.len() > b.prefix.len())
            {
                best = Some(p);
            }
        }
        best.map_or(self, |p| &p.policy)
    }

    fn is_redacted(&self, header: &Header) -> bool {
        self.redact_request_headers.iter().any(|n| header.is(n))
    }

    fn is_matched(&self, header: &Header) -> bool {
        !self.is_redacted(header)
            && !self.ignore_request_headers.iter().any(|n| header.is(n))
            && self.match_request_headers.iter().any(|n| header.is(n))
    }

    /// The lower-cased, sorted, deduplicated names of the headers that
    /// enter the fingerprint.
    fn matched_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .match_request_headers
            .iter()
            .filter(|n| {
                !self
                    .redact_request_headers
                    .iter()
                    .chain(&self.ignore_request_headers)
                    .any(|r| r.eq_ignore_ascii_case(n))
            })
            .map(|n| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The test a request belongs to: its [`TEST_NAME_HEADER`] value, else its
/// [`TEST_NAME_ALIAS_HEADER`] value (trimmed, cut to
/// [`MAX_TEST_NAME_BYTES`] on a character boundary), or
/// [`DEFAULT_TEST_NAME`] when both are absent or empty.
pub fn test_name(headers: &[Header]) -> String {
    let value = |name: &str| {
        headers.iter().find(|h| h.is(name)).and_then(|h| {
            let text = String::from_utf8_lossy(&h.value);
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        })
    };
    let Some(text) = value(TEST_NAME_HEADER).or_else(|| value(TEST_NAME_ALIAS_HEADER)) else {
        return DEFAULT_TEST_NAME.to_owned();
    };
    let mut end = text.len().min(MAX_TEST_NAME_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A request fingerprint: SHA-256 over the fields described in the module docs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Fingerprint {
    /// Parses the form [`Display`](fmt::Display) writes (64 lower-case hex
    /// digits, as stored in recordings); `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Fingerprint> {
        fn digit(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *byte = digit(*pair.first()?)? << 4 | digit(*pair.get(1)?)?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Computes a fingerprint while the body streams through.
///
/// The body pieces are hashed as given: with a policy whose effective
/// `match_body` is not `exact`, feed [`normalized_body`] of the whole body
/// (what [`fingerprint`] does).
pub struct FingerprintBuilder {
    hasher: Sha256,
}

impl FingerprintBuilder {
    /// Starts a fingerprint over a request's method, target and headers,
    /// with the effective policy for `target`.
    pub fn new(policy: &MatchPolicy, method: &[u8], target: &[u8], headers: &[Header]) -> Self {
        let policy = policy.for_target(target);
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update(bytes);
            hasher.update([0u8]);
        };
        field(FINGERPRINT_TAG);
        field(method);
        let (path, query) = split_target(target);
        field(path);
        field(&matched_query(policy, query));
        let mut matched: Vec<(Vec<u8>, &[u8])> = headers
            .iter()
            .filter(|h| policy.is_matched(h))
            .map(|h| (h.name.to_ascii_lowercase(), &h.value[..]))
            .collect();
        matched.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value) in matched {
            let mut line = name;
            line.push(b':');
            line.extend_from_slice(value);
            field(&line);
        }
        FingerprintBuilder { hasher }
    }

    /// Adds a piece of the body.
    pub fn update(&mut self, body_piece: &[u8]) {
        self.hasher.update(body_piece);
    }

    /// The finished fingerprint.
    pub fn finish(self) -> Fingerprint {
        Fingerprint(self.hasher.finalize().into())
    }
}

/// The fingerprint of a whole request (already redacted with
/// [`redact_request`]), with the effective policy for its target.
pub fn fingerprint(policy: &MatchPolicy, request: &RecordedRequest) -> Fingerprint {
    let mut b = FingerprintBuilder::new(policy, &request.method, &request.target, &request.headers);
    b.update(&normalized_body(policy, request));
    b.finish()
}

/// The body as the effective policy's `match_body` feeds it into the
/// fingerprint (see the module docs).
pub fn normalized_body<'a>(policy: &MatchPolicy, request: &'a RecordedRequest) -> Cow<'a, [u8]> {
    let policy = policy.for_target(&request.target);
    let body = &request.body[..];
    match policy.match_body {
        BodyMatch::Exact => Cow::Borrowed(body),
        BodyMatch::Json => match canonical_json(body, &policy.ignore_json_fields) {
            Some(c) => Cow::Owned(c),
            None => Cow::Borrowed(body),
        },
        BodyMatch::Form => Cow::Owned(sorted_pairs(body)),
        BodyMatch::Multipart => {
            match multipart_boundary(header_value(&request.headers, "content-type"), body) {
                Some(b) => Cow::Owned(normalize_multipart(body, &b)),
                None => Cow::Borrowed(body),
            }
        }
    }
}

fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[]),
    }
}

/// The query as it enters the fingerprint: ignored pairs dropped, sorted.
fn matched_query(policy: &MatchPolicy, query: &[u8]) -> Vec<u8> {
    sorted_pairs(&drop_pairs(query, &policy.ignore_query_params))
}

/// The headers of a request as they are forwarded and stored: hop-by-hop
/// headers, the test name headers ([`TEST_NAME_HEADER`] and
/// [`TEST_NAME_ALIAS_HEADER`]) and `Expect` removed. Redaction is separate
/// ([`redact_request`]): the upstream gets the real values.
pub fn forwardable_request_headers(head: &RequestHead) -> Vec<Header> {
    head.headers
        .iter()
        .filter(|h| {
            !is_hop_by_hop(h, &head.headers)
                && !h.is(TEST_NAME_HEADER)
                && !h.is(TEST_NAME_ALIAS_HEADER)
                && !h.is("expect")
        })
        .cloned()
        .collect()
}

/// Replaces the values of the policy's redacted request headers with
/// [`REDACTED_PLACEHOLDER`] (the policy is used as given, not per path).
pub fn redact_headers(policy: &MatchPolicy, headers: &mut [Header]) {
    for h in headers.iter_mut() {
        if policy.is_redacted(h) {
            h.value = Bytes::from_static(REDACTED_PLACEHOLDER.as_bytes());
        }
    }
}

fn set_content_length(headers: &mut [Header], len: usize) {
    for h in headers.iter_mut().filter(|h| h.is("content-length")) {
        h.value = Bytes::from(len.to_string());
    }
}

/// Redacts a request for storing and matching (see the module docs): the
/// redacted headers, query parameters and JSON body fields of the
/// effective policy for its target.
pub fn redact_request(policy: &MatchPolicy, request: &mut RecordedRequest) {
    let policy = policy.for_target(&request.target);
    redact_headers(policy, &mut request.headers);
    let (path, query) = split_target(&request.target);
    if let Some(q) = redact_pairs(query, &policy.redact_query_params, REDACTED_PLACEHOLDER) {
        let mut t = Vec::with_capacity(path.len() + 1 + q.len());
        t.extend_from_slice(path);
        t.push(b'?');
        t.extend_from_slice(&q);
        request.target = Bytes::from(t);
    }
    if let Some(body) = redact_json(
        &request.body,
        &policy.redact_json_fields,
        REDACTED_PLACEHOLDER,
    ) {
        set_content_length(&mut request.headers, body.len());
        request.body = Bytes::from(body);
    }
}

/// Redacts a response for storing (see the module docs), with the effective
/// policy for the target of the request it answers. A content-encoded body
/// (gzip and the like) is not inspected for JSON fields.
pub fn redact_response(policy: &MatchPolicy, target: &[u8], response: &mut RecordedResponse) {
    let policy = policy.for_target(target);
    let redact = |headers: &mut [Header]| {
        for h in headers.iter_mut() {
            if policy.redact_response_headers.iter().any(|n| h.is(n)) {
                h.value = Bytes::from_static(REDACTED_PLACEHOLDER.as_bytes());
            }
        }
    };
    redact(&mut response.headers);
    redact(&mut response.trailers);
    if policy.redact_json_fields.is_empty() || response.chunks.is_empty() {
        return;
    }
    let encoded = response.headers.iter().any(|h| {
        h.is("content-encoding") && !h.value.trim_ascii().eq_ignore_ascii_case(b"identity")
    });
    if encoded {
        return;
    }
    let body: Cow<[u8]> = match response.chunks.as_slice() {
        [one] => Cow::Borrowed(&one[..]),
        many => Cow::Owned(many.concat()),
    };
    if let Some(new) = redact_json(&body, &policy.redact_json_fields, REDACTED_PLACEHOLDER) {
        set_content_length(&mut response.headers, new.len());
        response.chunks = vec![Bytes::from(new)];
    }
}

/// The in-memory index of loaded recordings that answers replay lookups.
///
/// Lookup is a hash lookup by (test, fingerprint): it does not slow down as
/// recordings grow. Identical requests within a test are answered as the
/// effective policy's `on_repeat` says. The index also counts, per test,
/// hits, misses and which interactions were used, for the end-of-run report
/// ([`ReplayIndex::usage`]).
pub struct ReplayIndex {
    tests: HashMap<String, TestRecordings>,
    /// Misses for test names that have no recording.
    unknown_misses: Mutex<BTreeMap<String, usize>>,
}

struct TestRecordings {
    interactions: Vec<Arc<Interaction>>,
    /// Per interaction: its answer as HTTP/1.1 keep-alive bytes, encoded on
    /// its first replay.
    h1_answers: Vec<OnceLock<Bytes>>,
    /// Each distinct fingerprint's slot in `positions` and `Usage::served`,
    /// keyed by the digest itself so a lookup neither formats nor hashes
    /// the 64-character hex text.
    by_fingerprint: HashMap<Fingerprint, usize, BuildDigestHasher>,
    /// Per slot: the positions of the interactions with that fingerprint,
    /// in recorded order.
    positions: Vec<Vec<usize>>,
    usage: Mutex<Usage>,
}

/// Hashes a [`Fingerprint`] by folding its bytes: the key is already a
/// SHA-256 digest, so running SipHash over it again only costs time (with
/// 10,000 recordings, the replay lookup was 5.6 % of the proxy's CPU). No
/// hash flooding is possible: the map's keys are fixed when the recordings
/// load, and a request can only probe it.
#[derive(Clone, Copy, Debug, Default)]
struct BuildDigestHasher;

impl std::hash::BuildHasher for BuildDigestHasher {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

/// See [`BuildDigestHasher`].
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _length_prefix: usize) {
        // `Hash` for an array writes its length first: always 32 here.
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct Usage {
    /// Per fingerprint slot: how many times it has been answered.
    served: Vec<usize>,
    /// Which interactions answered at least once.
    used: Vec<bool>,
    hits: usize,
    misses: usize,
}

/// The outcome of a replay lookup.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// A recorded interaction answers the request.
    Hit(Arc<Interaction>),
    /// Nothing answers it; the report explains why.
    Miss(MissReport),
}

/// Why a request missed, for the error response and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissReport {
    /// The test the request belongs to.
    pub test_name: String,
    /// The live request's fingerprint.
    pub fingerprint: Fingerprint,
    /// A one-line summary of the request (`METHOD target`).
    pub request_line: String,
    /// Why nothing matched, in one sentence.
    pub reason: String,
    /// The closest recorded requests in the same test, best first, each with
    /// the fields that differ.
    pub candidates: Vec<MissCandidate>,
}

/// A recorded request close to a missed one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissCandidate {
    /// Position of the interaction in its recording.
    pub index: usize,
    /// `METHOD target` of the recorded request.
    pub request_line: String,
    /// Human-readable differences, one per field (`method`, `path`,
    /// `query`, `header NAME`, `body json POINTER`, `body form`, `body`).
    pub differences: Vec<String>,
}

impl MissReport {
    /// The plain-text body of the miss response (also logged).
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "Ouli replay miss: no recorded response for this request.\n\
             test: {}\nrequest: {}\nfingerprint: {}\nreason: {}\n",
            self.test_name, self.request_line, self.fingerprint, self.reason
        );
        if self.candidates.is_empty() {
            s.push_str("closest recorded requests: none\n");
        } else {
            s.push_str("closest recorded requests:\n");
            for c in &self.candidates {
                s.push_str(&format!("  #{} {}\n", c.index, c.request_line));
                for d in &c.differences {
                    s.push_str(&format!("      differs: {d}\n"));
                }
            }
        }
        s
    }
}

/// Per-test usage after a run: what was answered, what missed, and what
/// was never used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestUsage {
    /// The test name.
    pub test_name: String,
    /// Recorded interactions in the test (0 for a test with no recording).
    pub recorded: usize,
    /// Interactions that answered at least one request.
    pub used: usize,
    /// Requests answered from the recording.
    pub hits: usize,
    /// Requests that missed.
    pub misses: usize,
    /// Recorded interactions that answered nothing, in recording order.
    pub unused: Vec<UnusedInteraction>,
}

impl TestUsage {
    /// Whether the test had no miss and used every recorded interaction.
    pub fn is_clean(&self) -> bool {
        self.misses == 0 && self.unused.is_empty()
    }
}

/// A recorded interaction that answered no request in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnusedInteraction {
    /// Position in the recording.
    pub index: usize,
    /// `METHOD target` of the recorded request.
    pub request_line: String,
}

impl ReplayIndex {
    /// Indexes recordings. A test that appears twice keeps the later one.
    pub fn new(recordings: impl IntoIterator<Item = Recording>) -> Self {
        let mut tests = HashMap::new();
        for rec in recordings {
            let mut by_fingerprint: HashMap<Fingerprint, usize, BuildDigestHasher> =
                HashMap::default();
            let mut positions: Vec<Vec<usize>> = Vec::new();
            for (i, it) in rec.interactions.iter().enumerate() {
                // A stored fingerprint that is not the lower-case hex a live
                // request's digest prints as can never match: left out.
                if let Some(fp) = Fingerprint::from_hex(&it.fingerprint) {
                    let slot = *by_fingerprint.entry(fp).or_insert_with(|| {
                        positions.push(Vec::new());
                        positions.len() - 1
                    });
                    positions[slot].push(i);
                }
            }
            let slots = positions.len();
            let n = rec.interactions.len();
            tests.insert(
                rec.test_name,
                TestRecordings {
                    interactions: rec.interactions.into_iter().map(Arc::new).collect(),
                    h1_answers: (0..n).map(|_| OnceLock::new()).collect(),
                    by_fingerprint,
                    positions,
                    usage: Mutex::new(Usage {
                        served: vec![0; slots],
                        used: vec![false; n],
                        ..Usage::default()
                    }),
                },
            );
        }
        ReplayIndex {
            tests,
            unknown_misses: Mutex::new(BTreeMap::new()),
        }
    }

    /// Number of recorded interactions over all tests.
    pub fn len(&self) -> usize {
        self.tests.values().map(|t| t.interactions.len()).sum()
    }

    /// Whether no interaction is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the answer to `request` (already stripped of hop-by-hop and test
    /// name headers, and redacted with [`redact_request`]) in `test_name`,
    /// consuming one use of it. A miss is counted in the test's usage.
    pub fn lookup(
        &self,
        policy: &MatchPolicy,
        test_name: &str,
        request: &RecordedRequest,
        fingerprint: Fingerprint,
    ) -> Lookup {
        self.lookup_with_answer_cache(policy, test_name, request, fingerprint)
            .0
    }

    /// [`ReplayIndex::lookup`], with the hit's cache of its encoded
    /// HTTP/1.1 keep-alive answer (see `proxy::write_recorded_response`):
    /// an interaction replayed again and again is encoded once.
    pub(crate) fn lookup_with_answer_cache(
        &self,
        policy: &MatchPolicy,
        test_name: &str,
        request: &RecordedRequest,
        fingerprint: Fingerprint,
    ) -> (Lookup, Option<&OnceLock<Bytes>>) {
        let Some(test) = self.tests.get(test_name) else {
            *self
                .unknown_misses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(test_name.to_owned())
                .or_insert(0) += 1;
            let mut known: Vec<&str> = self.tests.keys().map(String::as_str).collect();
            known.sort_unstable();
            known.truncate(10);
            return (
                Lookup::Miss(MissReport {
                    test_name: test_name.to_owned(),
                    fingerprint,
                    request_line: request_line_of(request),
                    reason: format!(
                        "no recording for test {test_name:?} (recorded tests: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                    candidates: Vec::new(),
                }),
                None,
            );
        };
        let on_repeat = policy.for_target(&request.target).on_repeat;
        let mut usage = test.usage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&slot) = test.by_fingerprint.get(&fingerprint) {
            let positions = &test.positions[slot];
            let served = usage.served[slot];
            let picked = on_repeat
                .pick(served, positions.len())
                .and_then(|i| positions.get(i).copied())
                .and_then(|pos| Some((pos, test.interactions.get(pos)?)));
            if let Some((pos, interaction)) = picked {
                usage.served[slot] = served.saturating_add(1);
                if let Some(u) = usage.used.get_mut(pos) {
                    *u = true;
                }
                usage.hits += 1;
                return (
                    Lookup::Hit(Arc::clone(interaction)),
                    test.h1_answers.get(pos),
                );
            }
            usage.misses += 1;
            return (
                Lookup::Miss(MissReport {
                    test_name: test_name.to_owned(),
                    fingerprint,
                    request_line: request_line_of(request),
                    reason: format!(
                        "this request was recorded {} time(s) in this test and all were already \
                     replayed (on_repeat = \"{}\")",
                        positions.len(),
                        on_repeat.as_str()
                    ),
                    candidates: Vec::new(),
                }),
                None,
            );
        }
        usage.misses += 1;
        drop(usage);
        let mut scored: Vec<(usize, MissCandidate)> = test
            .interactions
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let differences = differences(policy, &it.request, request);
                (
                    differences.len(),
                    MissCandidate {
                        index: i,
                        request_line: request_line_of(&it.request),
                        differences,
                    },
                )
            })
            .collect();
        scored.sort_by_key(|(n, c)| (*n, c.index));
        scored.dedup_by(|a, b| {
            a.1.request_line == b.1.request_line && a.1.differences == b.1.differences
        });
        (
            Lookup::Miss(MissReport {
                test_name: test_name.to_owned(),
                fingerprint,
                request_line: request_line_of(request),
                reason: format!(
                    "no recorded request in this test has fingerprint {fingerprint} ({} recorded)",
                    test.interactions.len()
                ),
                candidates: scored
                    .into_iter()
                    .take(MISS_CANDIDATES)
                    .map(|(_, c)| c)
                    .collect(),
            }),
            None,
        )
    }

    /// Usage per test, sorted by test name: every recorded test, and every
    /// test name that missed without having a recording.
    pub fn usage(&self) -> Vec<TestUsage> {
        let mut out: Vec<TestUsage> = self
            .tests
            .iter()
            .map(|(name, t)| {
                let usage = t.usage.lock().unwrap_or_else(|e| e.into_inner());
                let unused = usage
                    .used
                    .iter()
                    .enumerate()
                    .filter(|(_, u)| !**u)
                    .filter_map(|(i, _)| {
                        Some(UnusedInteraction {
                            index: i,
                            request_line: request_line_of(&t.interactions.get(i)?.request),
                        })
                    })
                    .collect();
                TestUsage {
                    test_name: name.clone(),
                    recorded: t.interactions.len(),
                    used: usage.used.iter().filter(|u| **u).count(),
                    hits: usage.hits,
                    misses: usage.misses,
                    unused,
                }
            })
            .collect();
        let unknown = self
            .unknown_misses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (name, misses) in unknown.iter() {
            out.push(TestUsage {
                test_name: name.clone(),
                recorded: 0,
                used: 0,
                hits: 0,
                misses: *misses,
                unused: Vec::new(),
            });
        }
        out.sort_by(|a, b| a.test_name.cmp(&b.test_name));
        out
    }
}

fn request_line_of(request: &RecordedRequest) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&request.method),
        String::from_utf8_lossy(&request.target)
    )
}

fn short(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// The non-empty `&`-separated pairs of a query, without the `ignore`d ones.
fn kept_pairs<'a>(query: &'a [u8], ignore: &[String]) -> Vec<&'a [u8]> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty() && !pair_named(p, ignore))
        .collect()
}

fn only_in<'a>(a: &[&'a [u8]], b: &[&'a [u8]]) -> Vec<String> {
    a.iter()
        .filter(|p| !b.contains(p))
        .map(|p| short(p))
        .collect()
}

/// The fields in which a recorded request differs from a live one, as the
/// fingerprint sees them (with the effective policy for the live request).
fn differences(
    policy: &MatchPolicy,
    recorded: &RecordedRequest,
    live: &RecordedRequest,
) -> Vec<String> {
    let policy = policy.for_target(&live.target);
    let mut out = Vec::new();
    if recorded.method != live.method {
        out.push(format!(
            "method: recorded {} vs live {}",
            short(&recorded.method),
            short(&live.method)
        ));
    }
    let (rp, rq) = split_target(&recorded.target);
    let (lp, lq) = split_target(&live.target);
    if rp != lp {
        out.push(format!(
            "path: recorded {} vs live {}",
            short(rp),
            short(lp)
        ));
    }
    if matched_query(policy, rq) != matched_query(policy, lq) {
        let ignore = &policy.ignore_query_params;
        let (rset, lset) = (kept_pairs(rq, ignore), kept_pairs(lq, ignore));
        out.push(format!(
            "query: only recorded [{}], only live [{}]",
            only_in(&rset, &lset).join(", "),
            only_in(&lset, &rset).join(", ")
        ));
    }
    for name in policy.matched_names() {
        let values = |r: &RecordedRequest| -> Vec<Bytes> {
            r.headers
                .iter()
                .filter(|h| h.is(&name))
                .map(|h| h.value.clone())
                .collect()
        };
        let (r, l) = (values(recorded), values(live));
        if r != l {
            let fmt = |v: &[Bytes]| v.iter().map(|x| short(x)).collect::<Vec<_>>().join(", ");
            out.push(format!(
                "header {name}: recorded [{}] vs live [{}]",
                fmt(&r),
                fmt(&l)
            ));
        }
    }
    body_differences(policy, recorded, live, &mut out);
    out
}

fn body_differences(
    policy: &MatchPolicy,
    recorded: &RecordedRequest,
    live: &RecordedRequest,
    out: &mut Vec<String>,
) {
    let rn = normalized_body(policy, recorded);
    let ln = normalized_body(policy, live);
    if rn == ln {
        return;
    }
    match policy.match_body {
        BodyMatch::Json => {
            if let Some(diffs) = json_differences(
                &recorded.body,
                &live.body,
                &policy.ignore_json_fields,
                MISS_JSON_POINTERS,
            ) {
                let absent = |v: &Option<String>| match v {
                    Some(v) => short(v.as_bytes()),
                    None => "(absent)".to_owned(),
                };
                for d in diffs {
                    let at = if d.pointer.is_empty() {
                        "(root)"
                    } else {
                        &d.pointer
                    };
                    out.push(format!(
                        "body json {at}: recorded {} vs live {}",
                        absent(&d.recorded),
                        absent(&d.live)
                    ));
                }
                return;
            }
        }
        BodyMatch::Form => {
            let (r, l) = (kept_pairs(&recorded.body, &[]), kept_pairs(&live.body, &[]));
            out.push(format!(
                "body form: only recorded [{}], only live [{}]",
                only_in(&r, &l).join(", "),
                only_in(&l, &r).join(", ")
            ));
            return;
        }
        BodyMatch::Exact | BodyMatch::Multipart => {}
    }
    let first = rn.iter().zip(ln.iter()).position(|(a, b)| a != b);
    let at = first.unwrap_or(rn.len().min(ln.len()));
    out.push(format!(
        "body: recorded {} bytes vs live {} bytes, first difference at byte {at}",
        recorded.body.len(),
        live.body.len()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Framing;

    fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> RecordedRequest {
        RecordedRequest {
            method: Bytes::copy_from_slice(method.as_bytes()),
            target: Bytes::copy_from_slice(target.as_bytes()),
            headers: headers
                .iter()
                .map(|(n, v)| Header::new(n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn response(body: &str) -> RecordedResponse {
        RecordedResponse {
            status: 200,
            reason: Bytes::from_static(b"OK"),
            headers: vec![],
            framing: Framing::Length,
            chunks: vec![Bytes::copy_from_slice(body.as_bytes())],
            trailers: vec![],
        }
    }

    fn interaction(policy: &MatchPolicy, mut request: RecordedRequest, body: &str) -> Interaction {
        redact_request(policy, &mut request);
        Interaction {
            fingerprint: fingerprint(policy, &request).to_string(),
            request,
            response: response(body),
            websocket: None,
        }
    }

    fn ptrs(list: &[&str]) -> Vec<JsonPointer> {
        list.iter()
            .map(|p| JsonPointer::parse(p).expect("valid pointer"))
            .collect()
    }

    /// Redacts, then fingerprints, as the proxy does with a live request.
    fn live_fp(policy: &MatchPolicy, mut r: RecordedRequest) -> (RecordedRequest, Fingerprint) {
        redact_request(policy, &mut r);
        let fp = fingerprint(policy, &r);
        (r, fp)
    }

    #[test]
    fn fingerprint_is_stable() {
        // Pinned digests: if these change, recordings made by earlier
        // versions stop matching. Bump the tag instead.
        let policy = MatchPolicy {
            redact_request_headers: vec!["authorization".into()],
            match_request_headers: vec!["X-Api-Version".into(), "Authorization".into()],
            ..MatchPolicy::default()
        };
        let a = req(
            "GET",
            "/v1/items?b=2&a=1",
            &[("X-Api-Version", "3"), ("Authorization", "secret")],
            "",
        );
        let b = req("POST", "/v1/items", &[], "{\"x\":1}");
        assert_eq!(
            fingerprint(&policy, &a).to_string(),
            PINNED_A,
            "fingerprint of a GET with sorted query and a matched header changed"
        );
        assert_eq!(
            fingerprint(&policy, &b).to_string(),
            PINNED_B,
            "fingerprint of a POST body changed"
        );
        // Redacting first changes nothing with the default redactions.
        assert_eq!(live_fp(&policy, a).1.to_string(), PINNED_A);
    }

    // Independently computed: sha256(b"ouli-fp-v1\0GET\0/v1/items\0a=1&b=2\0x-api-version:3\0").
    const PINNED_A: &str = "ec7ee253f24a43db96d8da9a9bd9f2a61d330e269249da02f45d622d7726d44f";
    // sha256(b"ouli-fp-v1\0POST\0/v1/items\0\0{\"x\":1}").
    const PINNED_B: &str = "441cc41e618973911100a901eae90e03b7eb9991925170456e571b9d270056b9";

    #[test]
    fn mode_fingerprints_are_stable() {
        // Each digest computed independently (Python hashlib) over the
        // layout in the module docs.
        let json = MatchPolicy {
            match_body: BodyMatch::Json,
            ignore_json_fields: ptrs(&["/ts"]),
            ..MatchPolicy::default()
        };
        // sha256(b"ouli-fp-v1\0POST\0/v1/chat\0\0{\"a\":[true,null],\"b\":1}")
        let r = req(
            "POST",
            "/v1/chat",
            &[],
            "{\"b\": 1, \"a\": [true, null], \"ts\": 123}",
        );
        assert_eq!(
            live_fp(&json, r).1.to_string(),
            "aad545d39f093b5da23b700acf8e8f78ff6e8719bd9d9a605e609a173e2e5de7"
        );
        let form = MatchPolicy {
            match_body: BodyMatch::Form,
            ..MatchPolicy::default()
        };
        // sha256(b"ouli-fp-v1\0POST\0/login\0\0a=1&b=2&c=3")
        let r = req("POST", "/login", &[], "b=2&a=1&&c=3");
        assert_eq!(
            live_fp(&form, r).1.to_string(),
            "c541e8a8b67795700846b1718df3f4e9d90872003ca08e7733a91be1e7b3aa90"
        );
        let multipart = MatchPolicy {
            match_body: BodyMatch::Multipart,
            ..MatchPolicy::default()
        };
        // The boundary replaced by "ouli-boundary" in the body.
        let r = req(
            "POST",
            "/upload",
            &[("Content-Type", "multipart/form-data; boundary=abc123")],
            "--abc123\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--abc123--\r\n",
        );
        assert_eq!(
            live_fp(&multipart, r).1.to_string(),
            "171caf976949151a1b869634978b99d9c3efc8bc0305629340ae6e84f4d40418"
        );
        let query = MatchPolicy {
            ignore_query_params: vec!["_".into()],
            ..MatchPolicy::default()
        };
        // sha256(b"ouli-fp-v1\0GET\0/search\0page=2&q=rust\0")
        let r = req("GET", "/search?q=rust&_=1700000000&page=2", &[], "");
        assert_eq!(
            live_fp(&query, r).1.to_string(),
            "7ca10a1e046e086c98733b6863039a31c60a71e7c59c4000f549d93b49f2754e"
        );
        let headers = MatchPolicy {
            match_request_headers: vec!["Accept".into(), "X-Api-Version".into()],
            ignore_request_headers: vec!["accept".into()],
            ..MatchPolicy::default()
        };
        // sha256(b"ouli-fp-v1\0GET\0/v1/items\0\0x-api-version:3\0")
        let r = req(
            "GET",
            "/v1/items",
            &[("Accept", "application/json"), ("X-Api-Version", "3")],
            "",
        );
        assert_eq!(
            live_fp(&headers, r).1.to_string(),
            "4ba05ce1848db1ba79f0aa580ca8693184b75399c2fc14c43406a7793cf9e752"
        );
        let redact_query = MatchPolicy {
            redact_query_params: vec!["key".into()],
            ..MatchPolicy::default()
        };
        // sha256(b"ouli-fp-v1\0GET\0/data\0key=[REDACTED]&x=1\0")
        let r = req("GET", "/data?x=1&key=SECRET", &[], "");
        assert_eq!(
            live_fp(&redact_query, r).1.to_string(),
            "f616c7b6708b333a9cc4fe7b4354b5a60ea0a92c9a0ead8de01a30c116e5d7e9"
        );
        let redact_json = MatchPolicy {
            redact_json_fields: ptrs(&["/secret"]),
            ..MatchPolicy::default()
        };
        // sha256(b"ouli-fp-v1\0POST\0/token\0\0{\"client\": \"app\", \"secret\": \"[REDACTED]\"}")
        let r = req(
            "POST",
            "/token",
            &[],
            "{\"client\": \"app\", \"secret\": \"s3\"}",
        );
        assert_eq!(
            live_fp(&redact_json, r).1.to_string(),
            "df8d0ee6735faa018f5f471cb1d36a0161220ba266be9a15ad6c90526d88788c"
        );
    }

    #[test]
    fn query_order_and_unmatched_headers_do_not_matter() {
        let p = MatchPolicy::default();
        let a = req("GET", "/x?a=1&b=2", &[("User-Agent", "one")], "");
        let b = req("GET", "/x?b=2&a=1", &[("User-Agent", "two")], "");
        assert_eq!(fingerprint(&p, &a), fingerprint(&p, &b));
        let c = req("GET", "/x?b=2&a=2", &[], "");
        assert_ne!(fingerprint(&p, &a), fingerprint(&p, &c));
    }

    #[test]
    fn redacted_header_never_enters_fingerprint() {
        let p = MatchPolicy {
            redact_request_headers: vec!["Authorization".into()],
            match_request_headers: vec!["authorization".into()],
            ..MatchPolicy::default()
        };
        let a = req("GET", "/", &[("Authorization", "token-1")], "");
        let b = req("GET", "/", &[("Authorization", "token-2")], "");
        assert_eq!(fingerprint(&p, &a), fingerprint(&p, &b));
        let mut h = a.headers.clone();
        redact_headers(&p, &mut h);
        assert_eq!(&h[0].value[..], REDACTED_PLACEHOLDER.as_bytes());
    }

    #[test]
    fn streaming_fingerprint_equals_whole() {
        let p = MatchPolicy::default();
        let r = req("PUT", "/b", &[], "hello world");
        let mut b = FingerprintBuilder::new(&p, &r.method, &r.target, &r.headers);
        b.update(b"hello");
        b.update(b" world");
        assert_eq!(b.finish(), fingerprint(&p, &r));
    }

    #[test]
    fn json_mode_ignores_key_order_whitespace_and_ignored_fields() {
        let p = MatchPolicy {
            match_body: BodyMatch::Json,
            ignore_json_fields: ptrs(&["/request_id", "/meta/sent_at"]),
            ..MatchPolicy::default()
        };
        let a = req(
            "POST",
            "/v1/chat",
            &[],
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"request_id":"1","meta":{"sent_at":1,"v":2}}"#,
        );
        let b = req(
            "POST",
            "/v1/chat",
            &[],
            "{ \"meta\": {\"v\": 2, \"sent_at\": 99},\n  \"request_id\": \"2\",\n  \"messages\": [{\"content\": \"hi\", \"role\": \"user\"}], \"model\": \"m\" }",
        );
        assert_eq!(fingerprint(&p, &a), fingerprint(&p, &b));
        let c = req(
            "POST",
            "/v1/chat",
            &[],
            r#"{"model":"other","messages":[]}"#,
        );
        assert_ne!(fingerprint(&p, &a), fingerprint(&p, &c));
        // Exact mode tells them apart.
        assert_ne!(
            fingerprint(&MatchPolicy::default(), &a),
            fingerprint(&MatchPolicy::default(), &b)
        );
        // Not JSON: the exact bytes.
        let x = req("POST", "/v1/chat", &[], "not json");
        assert_eq!(
            fingerprint(&p, &x),
            fingerprint(&MatchPolicy::default(), &x)
        );
    }

    #[test]
    fn form_and_multipart_modes() {
        let form = MatchPolicy {
            match_body: BodyMatch::Form,
            ..MatchPolicy::default()
        };
        let a = req("POST", "/f", &[], "a=1&b=2");
        let b = req("POST", "/f", &[], "b=2&a=1");
        assert_eq!(fingerprint(&form, &a), fingerprint(&form, &b));
        assert_ne!(
            fingerprint(&form, &a),
            fingerprint(&form, &req("POST", "/f", &[], "a=1&b=3"))
        );
        let mp = MatchPolicy {
            match_body: BodyMatch::Multipart,
            ..MatchPolicy::default()
        };
        let body = |b: &str| {
            format!("--{b}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--{b}--\r\n")
        };
        let ct = |b: &str| format!("multipart/form-data; boundary={b}");
        let one = req("POST", "/u", &[("Content-Type", &ct("AAA"))], &body("AAA"));
        let two = req(
            "POST",
            "/u",
            &[("Content-Type", &ct("BBBB"))],
            &body("BBBB"),
        );
        assert_eq!(fingerprint(&mp, &one), fingerprint(&mp, &two));
        assert_ne!(
            fingerprint(&MatchPolicy::default(), &one),
            fingerprint(&MatchPolicy::default(), &two)
        );
    }

    #[test]
    fn ignored_query_params_and_headers() {
        let p = MatchPolicy {
            ignore_query_params: vec!["_".into(), "ts".into()],
            match_request_headers: vec!["Accept".into(), "X-Request-Id".into()],
            ignore_request_headers: vec!["x-request-id".into()],
            ..MatchPolicy::default()
        };
        let a = req(
            "GET",
            "/s?q=1&_=111&ts=5",
            &[("Accept", "a"), ("X-Request-Id", "1")],
            "",
        );
        let b = req(
            "GET",
            "/s?ts=6&q=1",
            &[("Accept", "a"), ("X-Request-Id", "2")],
            "",
        );
        assert_eq!(fingerprint(&p, &a), fingerprint(&p, &b));
        let c = req("GET", "/s?q=1", &[("Accept", "b")], "");
        assert_ne!(fingerprint(&p, &a), fingerprint(&p, &c));
    }

    #[test]
    fn path_override_picks_longest_prefix_and_unions_redaction() {
        let mut p = MatchPolicy {
            redact_request_headers: vec!["Authorization".into()],
            ..MatchPolicy::default()
        };
        p.add_path(
            "/v1",
            &PolicyOverride {
                on_repeat: Some(OnRepeat::Cycle),
                ..PolicyOverride::default()
            },
        );
        p.add_path(
            "/v1/chat",
            &PolicyOverride {
                match_body: Some(BodyMatch::Json),
                redact_request_headers: vec!["X-Key".into()],
                ..PolicyOverride::default()
            },
        );
        let chat = p.for_target(b"/v1/chat/completions?x=1");
        assert_eq!(chat.match_body, BodyMatch::Json);
        assert_eq!(
            chat.on_repeat,
            OnRepeat::InOrder,
            "overrides start from the endpoint"
        );
        assert_eq!(chat.redact_request_headers, ["Authorization", "X-Key"]);
        assert_eq!(p.for_target(b"/v1/models").on_repeat, OnRepeat::Cycle);
        assert_eq!(p.for_target(b"/v2").match_body, BodyMatch::Exact);
        let a = req("POST", "/v1/chat", &[], r#"{"a":1,"b":2}"#);
        let b = req("POST", "/v1/chat", &[], r#"{"b":2,"a":1}"#);
        assert_eq!(fingerprint(&p, &a), fingerprint(&p, &b));
        let a = req("POST", "/v2/chat", &[], r#"{"a":1,"b":2}"#);
        let b = req("POST", "/v2/chat", &[], r#"{"b":2,"a":1}"#);
        assert_ne!(fingerprint(&p, &a), fingerprint(&p, &b));
    }

    fn body_of(l: Lookup) -> String {
        match l {
            Lookup::Hit(i) => String::from_utf8_lossy(&i.response.chunks[0]).into_owned(),
            Lookup::Miss(m) => format!("MISS: {}", m.reason),
        }
    }

    fn three_answers(p: &MatchPolicy) -> (ReplayIndex, RecordedRequest, Fingerprint) {
        let r = req("GET", "/counter", &[], "");
        let mut rec = Recording::new("t");
        for body in ["one", "two", "three"] {
            rec.interactions.push(interaction(p, r.clone(), body));
        }
        let fp = fingerprint(p, &r);
        (ReplayIndex::new([rec]), r, fp)
    }

    #[test]
    fn identical_requests_replay_in_order_then_miss() {
        let p = MatchPolicy::default();
        let (index, r, fp) = three_answers(&p);
        let got: Vec<String> = (0..4)
            .map(|_| body_of(index.lookup(&p, "t", &r, fp)))
            .collect();
        assert_eq!(&got[..3], ["one", "two", "three"]);
        assert!(got[3].contains("already replayed"), "{}", got[3]);
        let u = &index.usage()[0];
        assert_eq!((u.used, u.hits, u.misses), (3, 3, 1));
    }

    #[test]
    fn on_repeat_modes() {
        for (mode, expected) in [
            (
                OnRepeat::RepeatLast,
                ["one", "two", "three", "three", "three"],
            ),
            (OnRepeat::Cycle, ["one", "two", "three", "one", "two"]),
            (OnRepeat::First, ["one", "one", "one", "one", "one"]),
        ] {
            let p = MatchPolicy {
                on_repeat: mode,
                ..MatchPolicy::default()
            };
            let (index, r, fp) = three_answers(&p);
            let got: Vec<String> = (0..5)
                .map(|_| body_of(index.lookup(&p, "t", &r, fp)))
                .collect();
            assert_eq!(got, expected, "{mode:?}");
            let u = &index.usage()[0];
            assert_eq!(u.misses, 0);
            if mode == OnRepeat::First {
                assert_eq!(u.unused.len(), 2, "first never uses the later answers");
                assert!(!u.is_clean());
            } else {
                assert!(u.is_clean());
            }
        }
    }

    #[test]
    fn interleaved_fingerprints_keep_their_own_replay_order() {
        let p = MatchPolicy::default();
        let mut rec = Recording::new("t");
        for (path, body) in [("/a", "a1"), ("/b", "b1"), ("/a", "a2"), ("/b", "b2")] {
            rec.interactions
                .push(interaction(&p, req("GET", path, &[], ""), body));
        }
        let index = ReplayIndex::new([rec]);
        let a = req("GET", "/a", &[], "");
        let b = req("GET", "/b", &[], "");
        let got: Vec<String> = [&b, &a, &a, &b, &a]
            .into_iter()
            .map(|r| body_of(index.lookup(&p, "t", r, fingerprint(&p, r))))
            .collect();
        assert_eq!(&got[..4], ["b1", "a1", "a2", "b2"]);
        assert!(got[4].contains("already replayed"), "{}", got[4]);
    }

    #[test]
    fn the_digest_hasher_reads_every_byte_of_a_fingerprint() {
        use std::hash::BuildHasher;
        let hash = |fp: Fingerprint| BuildDigestHasher.hash_one(fp);
        let zero = Fingerprint([0; 32]);
        for i in 0..32 {
            let mut bytes = [0; 32];
            bytes[i] = 1;
            assert_ne!(hash(Fingerprint(bytes)), hash(zero), "byte {i}");
        }
    }

    #[test]
    fn usage_reports_hits_misses_and_unused() {
        let p = MatchPolicy::default();
        let mut rec = Recording::new("t");
        rec.interactions
            .push(interaction(&p, req("GET", "/a", &[], ""), "a"));
        rec.interactions
            .push(interaction(&p, req("GET", "/b", &[], ""), "b"));
        let index = ReplayIndex::new([rec]);
        let a = req("GET", "/a", &[], "");
        let z = req("GET", "/z", &[], "");
        assert_eq!(body_of(index.lookup(&p, "t", &a, fingerprint(&p, &a))), "a");
        assert!(body_of(index.lookup(&p, "t", &z, fingerprint(&p, &z))).starts_with("MISS"));
        assert!(body_of(index.lookup(&p, "ghost", &z, fingerprint(&p, &z))).starts_with("MISS"));
        let usage = index.usage();
        assert_eq!(usage.len(), 2);
        assert_eq!(usage[0].test_name, "ghost");
        assert_eq!((usage[0].recorded, usage[0].misses), (0, 1));
        let t = &usage[1];
        assert_eq!((t.recorded, t.used, t.hits, t.misses), (2, 1, 1, 1));
        assert_eq!(
            t.unused,
            [UnusedInteraction {
                index: 1,
                request_line: "GET /b".into()
            }]
        );
    }

    #[test]
    fn miss_names_closest_request_and_differing_fields() {
        let p = MatchPolicy::default();
        let mut rec = Recording::new("t");
        rec.interactions
            .push(interaction(&p, req("GET", "/items?page=1", &[], ""), "a"));
        rec.interactions
            .push(interaction(&p, req("DELETE", "/other", &[], ""), "b"));
        let index = ReplayIndex::new([rec]);
        let live = req("GET", "/items?page=2", &[], "");
        let Lookup::Miss(m) = index.lookup(&p, "t", &live, fingerprint(&p, &live)) else {
            panic!("expected a miss")
        };
        assert_eq!(m.candidates[0].request_line, "GET /items?page=1");
        assert_eq!(m.candidates[0].differences.len(), 1);
        assert!(m.candidates[0].differences[0].contains("page=2"));
        let text = m.to_text();
        assert!(
            text.contains("test: t") && text.contains("GET /items?page=2"),
            "{text}"
        );
        let Lookup::Miss(m) = index.lookup(&p, "nope", &live, fingerprint(&p, &live)) else {
            panic!("expected a miss")
        };
        assert!(m.reason.contains("recorded tests: t"), "{}", m.reason);
    }

    #[test]
    fn miss_names_differing_header_and_json_pointer() {
        let p = MatchPolicy {
            match_request_headers: vec!["X-Api-Version".into()],
            redact_request_headers: vec!["Authorization".into()],
            match_body: BodyMatch::Json,
            ignore_json_fields: ptrs(&["/nonce"]),
            ..MatchPolicy::default()
        };
        let mut rec = Recording::new("t");
        rec.interactions.push(interaction(
            &p,
            req(
                "POST",
                "/v1/chat",
                &[("X-Api-Version", "1"), ("Authorization", "old-secret")],
                r#"{"model":"a","opts":{"temperature":0.5},"nonce":1}"#,
            ),
            "x",
        ));
        let index = ReplayIndex::new([rec]);
        let (live, fp) = live_fp(
            &p,
            req(
                "POST",
                "/v1/chat",
                &[("X-Api-Version", "2"), ("Authorization", "new-secret")],
                r#"{"opts":{"temperature":0.7},"model":"a","nonce":2,"extra":true}"#,
            ),
        );
        let Lookup::Miss(m) = index.lookup(&p, "t", &live, fp) else {
            panic!("expected a miss")
        };
        let d = &m.candidates[0].differences;
        assert!(
            d.iter().any(|x| x.starts_with("header x-api-version:")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|x| x == "body json /opts/temperature: recorded \"0.5\" vs live \"0.7\""),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|x| x.starts_with("body json /extra: recorded (absent)")),
            "{d:?}"
        );
        assert!(!d.iter().any(|x| x.contains("nonce")), "ignored: {d:?}");
        let text = m.to_text();
        assert!(
            !text.contains("secret"),
            "no secret in a miss report: {text}"
        );
    }

    #[test]
    fn redaction_of_every_kind_never_stores_the_secret() {
        const SECRET: &str = "S3CR3T-value-42";
        let p = MatchPolicy {
            redact_request_headers: vec!["Authorization".into()],
            redact_response_headers: vec!["Set-Cookie".into()],
            redact_query_params: vec!["api_key".into()],
            redact_json_fields: ptrs(&["/password", "/session/token"]),
            ..MatchPolicy::default()
        };
        let mut request = req(
            "POST",
            &format!("/login?api_key={SECRET}&x=1"),
            &[
                ("Authorization", &format!("Bearer {SECRET}")),
                ("Content-Length", "0"),
            ],
            &format!("{{\"user\":\"ann\",\"password\":\"{SECRET}\"}}"),
        );
        redact_request(&p, &mut request);
        let mut resp = response(&format!(
            "{{\"session\":{{\"token\":\"{SECRET}\",\"ttl\":60}}}}"
        ));
        resp.headers = vec![
            Header::new("Set-Cookie", format!("sid={SECRET}; HttpOnly")),
            Header::new("Content-Length", "1"),
        ];
        resp.chunks = resp.chunks[0]
            .chunks(7)
            .map(Bytes::copy_from_slice)
            .collect();
        redact_response(&p, &request.target, &mut resp);
        let body_len = request.body.len().to_string();
        assert_eq!(
            header_value(&request.headers, "content-length"),
            Some(body_len.as_bytes())
        );
        assert_eq!(
            header_value(&resp.headers, "content-length"),
            Some(resp.body_len().to_string().as_bytes())
        );
        let mut rec = Recording::new("t");
        rec.interactions.push(Interaction {
            fingerprint: fingerprint(&p, &request).to_string(),
            request,
            response: resp,
            websocket: None,
        });
        let json = rec.to_json();
        assert!(!json.contains(SECRET), "{json}");
        assert!(!json.contains("S3CR3T"), "{json}");
        for kind in [
            "\"Bearer [REDACTED]\"",
            "api_key=[REDACTED]",
            "\\\"password\\\":\\\"[REDACTED]\\\"",
            "\\\"token\\\":\\\"[REDACTED]\\\"",
        ] {
            let kind = kind.replace("Bearer ", "");
            assert!(json.contains(&kind), "{kind} in {json}");
        }
        assert!(json.contains("\"Set-Cookie\", \"[REDACTED]\""), "{json}");
        // A live request with another secret still matches the recording.
        let index = ReplayIndex::new([rec]);
        let (live, fp) = live_fp(
            &p,
            req(
                "POST",
                "/login?x=1&api_key=other",
                &[("Authorization", "Bearer other")],
                "{\"user\":\"ann\",\"password\":\"other\"}",
            ),
        );
        assert!(matches!(index.lookup(&p, "t", &live, fp), Lookup::Hit(_)));
    }

    #[test]
    fn encoded_response_bodies_are_left_alone() {
        let p = MatchPolicy {
            redact_json_fields: ptrs(&["/a"]),
            ..MatchPolicy::default()
        };
        let mut r = response("{\"a\":1}");
        r.headers = vec![Header::new("Content-Encoding", "gzip")];
        let before = r.clone();
        redact_response(&p, b"/", &mut r);
        assert_eq!(r, before);
    }

    #[test]
    fn test_name_header_picks_test() {
        assert_eq!(test_name(&[]), DEFAULT_TEST_NAME);
        assert_eq!(
            test_name(&[Header::new("X-Ouli-Test-Name", " login ")]),
            "login"
        );
        let long = "é".repeat(MAX_TEST_NAME_BYTES);
        let name = test_name(&[Header::new("x-ouli-test-name", long.into_bytes())]);
        assert!(name.len() <= MAX_TEST_NAME_BYTES);
        assert_eq!(test_name(&[Header::new("Test-Name", "ts")]), "ts");
        assert_eq!(
            test_name(&[
                Header::new("Test-Name", "ts"),
                Header::new("X-Ouli-Test-Name", "ouli")
            ]),
            "ouli"
        );
        assert_eq!(
            test_name(&[
                Header::new("X-Ouli-Test-Name", " "),
                Header::new("test-name", "alias")
            ]),
            "alias"
        );
        let head = RequestHead {
            method: Bytes::from_static(b"GET"),
            target: Bytes::from_static(b"/"),
            version: crate::message::Version::Http11,
            headers: vec![
                Header::new("Test-Name", "a"),
                Header::new("X-Ouli-Test-Name", "b"),
                Header::new("Accept", "c"),
            ],
        };
        assert_eq!(
            forwardable_request_headers(&head),
            [Header::new("Accept", "c")]
        );
    }
}

#[cfg(test)]
mod fingerprint_hex_tests {
    use super::Fingerprint;

    #[test]
    fn from_hex_reads_what_display_writes_and_nothing_else() {
        let fp = Fingerprint(std::array::from_fn(|i| (i as u8).wrapping_mul(37)));
        let text = fp.to_string();
        assert_eq!(Fingerprint::from_hex(&text), Some(fp));
        assert_eq!(Fingerprint::from_hex(&text.to_uppercase()), None);
        assert_eq!(Fingerprint::from_hex(&text[..62]), None);
        assert_eq!(Fingerprint::from_hex(&format!("{text}00")), None);
        assert_eq!(Fingerprint::from_hex(&text.replacen('0', "g", 1)), None);
    }
}
