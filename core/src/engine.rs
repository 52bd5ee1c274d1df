//! Record/replay decisions over protocol-neutral values: which test a request
//! belongs to, its fingerprint, what is redacted before storing, and which
//! recorded interaction answers it in replay.
//!
//! # The fingerprint (format `ouli-fp-v1`)
//! A SHA-256 digest, written as 64 lower-case hex digits, over, in order and
//! each followed by a NUL byte:
//! 1. the tag `ouli-fp-v1`;
//! 2. the method, as sent;
//! 3. the path (the target before `?`), as sent;
//! 4. the query parameters (the `&`-separated pairs after `?`, raw, not
//!    decoded), sorted bytewise and joined with `&`;
//! 5. for every header named in [`MatchPolicy::match_request_headers`] (names
//!    lower-cased and sorted; values in wire order) that is not also redacted:
//!    `name:value`, one per field;
//! 6. then the body bytes, streamed in.
//!
//! Everything else (other headers, the test name header, the protocol
//! version) is left out, so the digest is stable across clients. The
//! `fingerprint_is_stable` test pins known digests: changing this layout is a
//! format change and needs a new tag.

use crate::message::{is_hop_by_hop, Header, RequestHead};
use crate::store::{Interaction, RecordedRequest, Recording};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The request header that names the test a request belongs to. It picks the
/// recording file and is stripped before forwarding and recording.
pub const TEST_NAME_HEADER: &str = "x-ouli-test-name";
/// The test name used when a request carries no [`TEST_NAME_HEADER`].
pub const DEFAULT_TEST_NAME: &str = "default";
/// Longest accepted test name, in bytes; longer names are cut to this.
pub const MAX_TEST_NAME_BYTES: usize = 200;
/// What a redacted header value is replaced with before storing.
pub const REDACTED_PLACEHOLDER: &str = "[REDACTED]";
/// How many closest recorded requests a miss report lists.
pub const MISS_CANDIDATES: usize = 3;

const FINGERPRINT_TAG: &[u8] = b"ouli-fp-v1";

/// Per-endpoint rules for what is matched and what is redacted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchPolicy {
    /// Header names (case-insensitive) whose values never reach disk and never
    /// enter the fingerprint.
    pub redact_request_headers: Vec<String>,
    /// Header names (case-insensitive) whose values enter the fingerprint.
    pub match_request_headers: Vec<String>,
}

impl MatchPolicy {
    fn is_redacted(&self, header: &Header) -> bool {
        self.redact_request_headers.iter().any(|n| header.is(n))
    }

    fn is_matched(&self, header: &Header) -> bool {
        !self.is_redacted(header) && self.match_request_headers.iter().any(|n| header.is(n))
    }
}

/// The test a request belongs to: its [`TEST_NAME_HEADER`] value (trimmed,
/// cut to [`MAX_TEST_NAME_BYTES`] on a character boundary), or
/// [`DEFAULT_TEST_NAME`] when absent or empty.
pub fn test_name(headers: &[Header]) -> String {
    let Some(h) = headers.iter().find(|h| h.is(TEST_NAME_HEADER)) else {
        return DEFAULT_TEST_NAME.to_owned();
    };
    let text = String::from_utf8_lossy(&h.value);
    let text = text.trim();
    if text.is_empty() {
        return DEFAULT_TEST_NAME.to_owned();
    }
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

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Computes a fingerprint while the body streams through, so a body is never
/// buffered just to hash it.
pub struct FingerprintBuilder {
    hasher: Sha256,
}

impl FingerprintBuilder {
    /// Starts a fingerprint over a request's method, target and headers.
    pub fn new(policy: &MatchPolicy, method: &[u8], target: &[u8], headers: &[Header]) -> Self {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update(bytes);
            hasher.update([0u8]);
        };
        field(FINGERPRINT_TAG);
        field(method);
        let (path, query) = split_target(target);
        field(path);
        field(&sorted_query(query));
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

/// The fingerprint of a whole request at once.
pub fn fingerprint(policy: &MatchPolicy, request: &RecordedRequest) -> Fingerprint {
    let mut b = FingerprintBuilder::new(policy, &request.method, &request.target, &request.headers);
    b.update(&request.body);
    b.finish()
}

fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[]),
    }
}

fn sorted_query(query: &[u8]) -> Vec<u8> {
    let mut pairs: Vec<&[u8]> = query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .collect();
    pairs.sort();
    pairs.join(&b'&')
}

/// The headers of a request as they are forwarded and stored: hop-by-hop
/// headers, the test name header and `Expect` removed. Redaction is a
/// separate step ([`redact_headers`]), applied only to what is stored.
pub(crate) fn forwardable_request_headers(head: &RequestHead) -> Vec<Header> {
    head.headers
        .iter()
        .filter(|h| !is_hop_by_hop(h, &head.headers) && !h.is(TEST_NAME_HEADER) && !h.is("expect"))
        .cloned()
        .collect()
}

/// Replaces the values of the policy's redacted headers with
/// [`REDACTED_PLACEHOLDER`].
pub fn redact_headers(policy: &MatchPolicy, headers: &mut [Header]) {
    for h in headers.iter_mut() {
        if policy.is_redacted(h) {
            h.value = Bytes::from_static(REDACTED_PLACEHOLDER.as_bytes());
        }
    }
}

/// The in-memory index of loaded recordings that answers replay lookups.
///
/// Lookup is a hash lookup by (test, fingerprint): it does not slow down as
/// recordings grow. Identical requests within a test are answered in
/// recorded order: the n-th identical request gets the n-th recorded answer,
/// and past the end it is a miss.
pub struct ReplayIndex {
    tests: HashMap<String, TestRecordings>,
}

struct TestRecordings {
    interactions: Vec<Arc<Interaction>>,
    by_fingerprint: HashMap<String, Vec<usize>>,
    /// How many times each fingerprint has been answered, and which
    /// interactions have been used at least once.
    usage: Mutex<Usage>,
}

#[derive(Default)]
struct Usage {
    served: HashMap<String, usize>,
    used: Vec<bool>,
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
    /// Human-readable differences, one per field.
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

/// Per-test usage after a run: what was answered and what was never used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestUsage {
    /// The test name.
    pub test_name: String,
    /// Recorded interactions in the test.
    pub recorded: usize,
    /// Interactions that answered at least one request.
    pub used: usize,
}

impl ReplayIndex {
    /// Indexes recordings. A test that appears twice keeps the later one.
    pub fn new(recordings: impl IntoIterator<Item = Recording>) -> Self {
        let mut tests = HashMap::new();
        for rec in recordings {
            let mut by_fingerprint: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, it) in rec.interactions.iter().enumerate() {
                by_fingerprint
                    .entry(it.fingerprint.clone())
                    .or_default()
                    .push(i);
            }
            let n = rec.interactions.len();
            tests.insert(
                rec.test_name,
                TestRecordings {
                    interactions: rec.interactions.into_iter().map(Arc::new).collect(),
                    by_fingerprint,
                    usage: Mutex::new(Usage {
                        served: HashMap::new(),
                        used: vec![false; n],
                    }),
                },
            );
        }
        ReplayIndex { tests }
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
    /// name headers) in `test_name`, consuming one use of it.
    pub fn lookup(
        &self,
        policy: &MatchPolicy,
        test_name: &str,
        request: &RecordedRequest,
        fingerprint: Fingerprint,
    ) -> Lookup {
        let request_line = request_line(request);
        let Some(test) = self.tests.get(test_name) else {
            let mut known: Vec<&str> = self.tests.keys().map(String::as_str).collect();
            known.sort_unstable();
            known.truncate(10);
            return Lookup::Miss(MissReport {
                test_name: test_name.to_owned(),
                fingerprint,
                request_line,
                reason: format!(
                    "no recording for test {test_name:?} (recorded tests: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
                candidates: Vec::new(),
            });
        };
        let key = fingerprint.to_string();
        if let Some(positions) = test.by_fingerprint.get(&key) {
            let mut usage = test.usage.lock().unwrap_or_else(|e| e.into_inner());
            let served = usage.served.entry(key).or_insert(0);
            if let Some(&pos) = positions.get(*served) {
                *served += 1;
                if let Some(u) = usage.used.get_mut(pos) {
                    *u = true;
                }
                return Lookup::Hit(Arc::clone(&test.interactions[pos]));
            }
            return Lookup::Miss(MissReport {
                test_name: test_name.to_owned(),
                fingerprint,
                request_line,
                reason: format!(
                    "this request was recorded {} time(s) in this test and all were already replayed",
                    positions.len()
                ),
                candidates: Vec::new(),
            });
        }
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
        Lookup::Miss(MissReport {
            test_name: test_name.to_owned(),
            fingerprint,
            request_line,
            reason: format!(
                "no recorded request in this test has fingerprint {fingerprint} ({} recorded)",
                test.interactions.len()
            ),
            candidates: scored
                .into_iter()
                .take(MISS_CANDIDATES)
                .map(|(_, c)| c)
                .collect(),
        })
    }

    /// Usage per test, sorted by test name.
    pub fn usage(&self) -> Vec<TestUsage> {
        let mut out: Vec<TestUsage> = self
            .tests
            .iter()
            .map(|(name, t)| {
                let usage = t.usage.lock().unwrap_or_else(|e| e.into_inner());
                TestUsage {
                    test_name: name.clone(),
                    recorded: t.interactions.len(),
                    used: usage.used.iter().filter(|u| **u).count(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.test_name.cmp(&b.test_name));
        out
    }
}

fn request_line(request: &RecordedRequest) -> String {
    request_line_of(request)
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

/// The fields in which a recorded request differs from a live one, as the
/// fingerprint sees them.
fn differences(
    policy: &MatchPolicy,
    recorded: &RecordedRequest,
    live: &RecordedRequest,
) -> Vec<String> {
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
    if sorted_query(rq) != sorted_query(lq) {
        let rset: Vec<&[u8]> = rq.split(|&b| b == b'&').filter(|p| !p.is_empty()).collect();
        let lset: Vec<&[u8]> = lq.split(|&b| b == b'&').filter(|p| !p.is_empty()).collect();
        let only_r: Vec<String> = rset
            .iter()
            .filter(|p| !lset.contains(p))
            .map(|p| short(p))
            .collect();
        let only_l: Vec<String> = lset
            .iter()
            .filter(|p| !rset.contains(p))
            .map(|p| short(p))
            .collect();
        out.push(format!(
            "query: only recorded [{}], only live [{}]",
            only_r.join(", "),
            only_l.join(", ")
        ));
    }
    let mut names: Vec<String> = policy
        .match_request_headers
        .iter()
        .filter(|n| {
            !policy
                .redact_request_headers
                .iter()
                .any(|r| r.eq_ignore_ascii_case(n))
        })
        .map(|n| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let r: Vec<&[u8]> = recorded
            .headers
            .iter()
            .filter(|h| h.is(&name))
            .map(|h| &h.value[..])
            .collect();
        let l: Vec<&[u8]> = live
            .headers
            .iter()
            .filter(|h| h.is(&name))
            .map(|h| &h.value[..])
            .collect();
        if r != l {
            let fmt = |v: &[&[u8]]| v.iter().map(|x| short(x)).collect::<Vec<_>>().join(", ");
            out.push(format!(
                "header {name}: recorded [{}] vs live [{}]",
                fmt(&r),
                fmt(&l)
            ));
        }
    }
    if recorded.body != live.body {
        let first = recorded
            .body
            .iter()
            .zip(live.body.iter())
            .position(|(a, b)| a != b);
        let at = first.unwrap_or(recorded.body.len().min(live.body.len()));
        out.push(format!(
            "body: recorded {} bytes vs live {} bytes, first difference at byte {at}",
            recorded.body.len(),
            live.body.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Framing, RecordedResponse};

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

    fn interaction(policy: &MatchPolicy, request: RecordedRequest, body: &str) -> Interaction {
        Interaction {
            fingerprint: fingerprint(policy, &request).to_string(),
            request,
            response: RecordedResponse {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                headers: vec![],
                framing: Framing::Length,
                chunks: vec![Bytes::copy_from_slice(body.as_bytes())],
                trailers: vec![],
            },
            websocket: None,
        }
    }

    #[test]
    fn fingerprint_is_stable() {
        // Pinned digests: if these change, recordings made by earlier
        // versions stop matching. Bump the tag instead.
        let policy = MatchPolicy {
            redact_request_headers: vec!["authorization".into()],
            match_request_headers: vec!["X-Api-Version".into(), "Authorization".into()],
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
    }

    // Independently computed: sha256(b"ouli-fp-v1\0GET\0/v1/items\0a=1&b=2\0x-api-version:3\0").
    const PINNED_A: &str = "ec7ee253f24a43db96d8da9a9bd9f2a61d330e269249da02f45d622d7726d44f";
    // sha256(b"ouli-fp-v1\0POST\0/v1/items\0\0{\"x\":1}").
    const PINNED_B: &str = "441cc41e618973911100a901eae90e03b7eb9991925170456e571b9d270056b9";

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
    fn identical_requests_replay_in_order_then_miss() {
        let p = MatchPolicy::default();
        let r = req("GET", "/counter", &[], "");
        let mut rec = Recording::new("t");
        rec.interactions.push(interaction(&p, r.clone(), "one"));
        rec.interactions.push(interaction(&p, r.clone(), "two"));
        let index = ReplayIndex::new([rec]);
        let fp = fingerprint(&p, &r);
        let body = |l: Lookup| match l {
            Lookup::Hit(i) => i.response.chunks[0].clone(),
            Lookup::Miss(m) => panic!("unexpected miss: {}", m.to_text()),
        };
        assert_eq!(&body(index.lookup(&p, "t", &r, fp))[..], b"one");
        assert_eq!(&body(index.lookup(&p, "t", &r, fp))[..], b"two");
        match index.lookup(&p, "t", &r, fp) {
            Lookup::Miss(m) => assert!(m.reason.contains("already replayed"), "{}", m.reason),
            Lookup::Hit(_) => panic!("third identical request must miss"),
        }
        assert_eq!(index.usage()[0].used, 2);
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
    fn test_name_header_picks_test() {
        assert_eq!(test_name(&[]), DEFAULT_TEST_NAME);
        assert_eq!(
            test_name(&[Header::new("X-Ouli-Test-Name", " login ")]),
            "login"
        );
        let long = "é".repeat(MAX_TEST_NAME_BYTES);
        let name = test_name(&[Header::new("x-ouli-test-name", long.into_bytes())]);
        assert!(name.len() <= MAX_TEST_NAME_BYTES);
    }
}
