//! Request and response decoders: head scanning and message framing.
//!
//! A head (start line, header fields, blank line) is located by our own
//! incremental scanner, which enforces the size and count limits, strict
//! CRLF line endings and the obs-fold rejection while bytes trickle in, and
//! only hands a complete head to httparse for tokenizing. Framing (RFC 9112
//! §6) is decided here from the parsed fields.

use super::chunked::{ChunkEvent, ChunkedDecoder};
use super::{BodyKind, H1Error, H1Limits, RequestEvent, ResponseEvent};
use crate::message::{trim_ascii, Header, RequestHead, ResponseHead, Version};
use bytes::{Buf, Bytes, BytesMut};

/// How many empty lines (CRLF) before a request line are skipped
/// (RFC 9112 §2.2). More is treated as a malformed request line.
const MAX_LEADING_EMPTY_LINES: usize = 16;

/// Which kind of header section a [`HeadScanner`] is looking at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Request line, header fields, blank line.
    Request,
    /// Status line, header fields, blank line.
    Response,
    /// Trailer fields after the last chunk, blank line; no start line.
    Trailer,
}

impl Role {
    fn start_line_name(self) -> &'static str {
        match self {
            Role::Response => "status line",
            Role::Request | Role::Trailer => "request line",
        }
    }
}

/// Finds the end of a header section incrementally, without consuming.
///
/// Each call scans only the bytes appended since the previous call, so a
/// head that trickles in byte by byte costs linear time.
#[derive(Clone, Debug)]
pub(super) struct HeadScanner {
    role: Role,
    /// Next buffer offset to examine.
    pos: usize,
    /// Offset where the current line starts.
    line_start: usize,
    /// Whether the start line has been seen (always true for trailers).
    start_line_done: bool,
    /// Header field lines seen so far.
    fields: usize,
}

impl HeadScanner {
    pub(super) fn new(role: Role) -> Self {
        HeadScanner {
            role,
            pos: 0,
            line_start: 0,
            start_line_done: role == Role::Trailer,
            fields: 0,
        }
    }

    /// Forgets everything scanned, for the next head.
    pub(super) fn reset(&mut self) {
        *self = HeadScanner::new(self.role);
    }

    /// Whether no byte of a head has been examined yet.
    fn is_fresh(&self) -> bool {
        self.pos == 0
    }

    /// Number of header field lines in the completed section.
    pub(super) fn fields(&self) -> usize {
        self.fields
    }

    /// Scans `buf` (which starts at the head) and returns the length of the
    /// whole section, blank line included, once it is complete.
    pub(super) fn scan(&mut self, buf: &[u8], limits: &H1Limits) -> Result<Option<usize>, H1Error> {
        loop {
            let rest = buf.get(self.pos..).unwrap_or_default();
            let Some(rel) = rest.iter().position(|&b| b == b'\n') else {
                self.pos = buf.len();
                break;
            };
            let lf = self.pos.saturating_add(rel);
            let line_end = lf.saturating_add(1);
            self.pos = line_end;
            let line = buf.get(self.line_start..lf).unwrap_or_default();
            // What an incomplete line is checked for comes first, so that
            // the error does not depend on how the input was split.
            if let Some(e) = self.early_error(buf, lf, limits) {
                return Err(e);
            }
            let Some(content) = line.strip_suffix(b"\r") else {
                return Err(self.bare_lf_error(line));
            };
            if !self.start_line_done {
                if content.is_empty() {
                    return Err(H1Error::MalformedStartLine(self.role.start_line_name()));
                }
                validate_start_line(self.role, line_end, buf)?;
                self.start_line_done = true;
            } else if content.is_empty() {
                return Ok(Some(line_end));
            } else {
                self.fields = self.fields.saturating_add(1);
                if self.fields > limits.max_header_count {
                    return Err(H1Error::TooManyHeaders {
                        limit: limits.max_header_count,
                    });
                }
            }
            self.line_start = line_end;
        }
        // Incomplete: refuse to buffer more than the limits allow (a
        // section already this long cannot end within them), and refuse a
        // folded line as soon as it starts.
        match self.early_error(buf, buf.len(), limits) {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// The error the current line (from `line_start`) shows within the
    /// first `upto` bytes of `buf` without its end being needed: the start
    /// line reaching the request-line limit, the section reaching its
    /// limit, or a field line starting with whitespace (obs-fold). `upto`
    /// is the buffer length for an incomplete line, the LF's offset for a
    /// complete one.
    ///
    /// When several apply, the one a byte-by-byte feed would meet first
    /// wins (ties in that order), so that the error is the same however
    /// the input was split.
    fn early_error(&self, buf: &[u8], upto: usize, limits: &H1Limits) -> Option<H1Error> {
        let start = self.line_start;
        let line_limit = (!self.start_line_done && self.role == Role::Request)
            .then_some(limits.max_request_line_bytes.max(start));
        let section_limit = limits.max_header_section_bytes.max(start);
        let fold = (self.start_line_done && matches!(buf.get(start), Some(b' ' | b'\t')))
            .then_some(start.saturating_add(1));
        let candidates = [
            line_limit.map(|at| {
                (
                    at,
                    H1Error::RequestLineTooLong {
                        limit: limits.max_request_line_bytes,
                    },
                )
            }),
            Some((
                section_limit,
                H1Error::HeaderSectionTooLarge {
                    limit: limits.max_header_section_bytes,
                },
            )),
            fold.map(|at| (at, H1Error::ObsFold)),
        ];
        candidates
            .into_iter()
            .flatten()
            .filter(|(at, _)| *at <= upto)
            .min_by_key(|(at, _)| *at)
            .map(|(_, e)| e)
    }

    /// The error for a line ended by LF alone (we require CRLF).
    fn bare_lf_error(&self, line: &[u8]) -> H1Error {
        if !self.start_line_done {
            H1Error::MalformedStartLine(self.role.start_line_name())
        } else if line.contains(&b':') {
            // The LF is a control character inside a field value.
            H1Error::InvalidHeaderValue
        } else {
            H1Error::InvalidHeaderName
        }
    }
}

/// Tokenizes a complete start line early so a malformed one is rejected
/// before the rest of the head arrives.
fn validate_start_line(role: Role, line_end: usize, buf: &[u8]) -> Result<(), H1Error> {
    let line = buf.get(..line_end).unwrap_or_default();
    let mut no_headers: [httparse::Header<'_>; 0] = [];
    let result = match role {
        Role::Request => httparse::Request::new(&mut no_headers).parse(line),
        Role::Response => httparse::Response::new(&mut no_headers).parse(line),
        Role::Trailer => return Ok(()),
    };
    match result {
        Ok(_) => Ok(()),
        Err(httparse::Error::Version) if names_http_version(role, line) => {
            Err(H1Error::UnsupportedVersion)
        }
        Err(_) => Err(H1Error::MalformedStartLine(role.start_line_name())),
    }
}

/// Whether the version slot of a start line httparse rejected holds an
/// `HTTP/<digit>...` token (an HTTP version we do not speak) rather than
/// something that is not a version at all.
fn names_http_version(role: Role, line: &[u8]) -> bool {
    let line = start_line(line);
    let token = match role {
        Role::Request => line.splitn(3, |&b| b == b' ').nth(2),
        Role::Response => line.split(|&b| b == b' ').next(),
        Role::Trailer => None,
    };
    matches!(token, Some([b'H', b'T', b'T', b'P', b'/', d, ..]) if d.is_ascii_digit())
}

/// Maps an httparse error from the header fields of a section whose start
/// line was already validated.
pub(super) fn map_header_error(role: Role, e: httparse::Error, limits: &H1Limits) -> H1Error {
    match e {
        httparse::Error::HeaderName | httparse::Error::NewLine => H1Error::InvalidHeaderName,
        httparse::Error::HeaderValue => H1Error::InvalidHeaderValue,
        httparse::Error::TooManyHeaders => H1Error::TooManyHeaders {
            limit: limits.max_header_count,
        },
        httparse::Error::Version => H1Error::UnsupportedVersion,
        _ => H1Error::MalformedStartLine(role.start_line_name()),
    }
}

/// `part` as a zero-copy slice of `whole`, which it must lie within.
pub(super) fn sub_bytes(whole: &Bytes, part: &[u8]) -> Option<Bytes> {
    if part.is_empty() {
        return Some(Bytes::new());
    }
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    if end > whole.len() {
        return None;
    }
    Some(whole.slice(start..end))
}

/// Converts httparse fields into owned [`Header`]s sliced from `section`.
pub(super) fn build_headers(
    role: Role,
    section: &Bytes,
    parsed: &[httparse::Header<'_>],
) -> Result<Vec<Header>, H1Error> {
    let internal = || H1Error::MalformedStartLine(role.start_line_name());
    parsed
        .iter()
        .map(|h| {
            Ok(Header {
                name: sub_bytes(section, h.name.as_bytes()).ok_or_else(internal)?,
                value: sub_bytes(section, h.value).ok_or_else(internal)?,
            })
        })
        .collect()
}

fn version_of(minor: Option<u8>) -> Result<Version, H1Error> {
    match minor {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(H1Error::UnsupportedVersion),
    }
}

/// The start line of `head` without its CRLF.
fn start_line(head: &[u8]) -> &[u8] {
    let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head.get(..end).unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_request_head(
    head: &Bytes,
    fields: usize,
    limits: &H1Limits,
) -> Result<RequestHead, H1Error> {
    let malformed = H1Error::MalformedStartLine("request line");
    let mut slots = vec![httparse::EMPTY_HEADER; fields];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(malformed),
        Err(e) => return Err(map_header_error(Role::Request, e, limits)),
    }
    let version = version_of(req.version)?;
    let line = start_line(head);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    if method.is_empty() || target.is_empty() {
        return Err(malformed);
    }
    Ok(RequestHead {
        method: sub_bytes(head, method).ok_or(malformed.clone())?,
        target: sub_bytes(head, target).ok_or(malformed.clone())?,
        version,
        headers: build_headers(Role::Request, head, req.headers)?,
    })
}

fn parse_response_head(
    head: &Bytes,
    fields: usize,
    limits: &H1Limits,
) -> Result<ResponseHead, H1Error> {
    let malformed = H1Error::MalformedStartLine("status line");
    let mut slots = vec![httparse::EMPTY_HEADER; fields];
    let mut res = httparse::Response::new(&mut slots);
    match res.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(malformed),
        Err(e) => return Err(map_header_error(Role::Response, e, limits)),
    }
    let version = version_of(res.version)?;
    let status = res.code.ok_or(malformed.clone())?;
    if !(100..=999).contains(&status) {
        return Err(malformed);
    }
    // "HTTP/1.x NNN" is 12 bytes; the reason, raw, follows a space.
    let reason = start_line(head).get(13..).unwrap_or_default();
    Ok(ResponseHead {
        status,
        reason: sub_bytes(head, reason).ok_or(malformed)?,
        version,
        headers: build_headers(Role::Response, head, res.headers)?,
    })
}

/// The Content-Length of a message, if it has any, after checking that
/// every value (across fields and list elements) is the same decimal number.
fn content_length(headers: &[Header]) -> Result<Option<u64>, H1Error> {
    let mut found: Option<u64> = None;
    for h in headers.iter().filter(|h| h.is("content-length")) {
        for element in h.value.split(|&b| b == b',') {
            let n = parse_decimal(trim_ascii(element))?;
            match found {
                Some(prev) if prev != n => return Err(H1Error::ConflictingContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Result<u64, H1Error> {
    if digits.is_empty() {
        return Err(H1Error::InvalidContentLength);
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b)
            .to_digit(10)
            .ok_or(H1Error::InvalidContentLength)?;
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(H1Error::InvalidContentLength)
    })
}

/// The transfer codings named by all Transfer-Encoding fields, in order,
/// or `None` when there is no such field. Empty list elements are skipped.
fn transfer_codings(headers: &[Header]) -> Option<Vec<&[u8]>> {
    let mut fields = headers
        .iter()
        .filter(|h| h.is("transfer-encoding"))
        .peekable();
    fields.peek()?;
    Some(
        fields
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(trim_ascii)
            .filter(|c| !c.is_empty())
            .collect(),
    )
}

fn is_chunked(coding: &[u8]) -> bool {
    coding.eq_ignore_ascii_case(b"chunked")
}

/// Framing of a request (RFC 9112 §6.3), with the Host checks of §3.2.
fn request_body_kind(head: &RequestHead) -> Result<BodyKind, H1Error> {
    let hosts = head.headers.iter().filter(|h| h.is("host")).count();
    if hosts > 1 {
        return Err(H1Error::DuplicateHost);
    }
    if hosts == 0 && head.version == Version::Http11 {
        return Err(H1Error::MissingHost);
    }
    let codings = transfer_codings(&head.headers);
    let has_cl = head.headers.iter().any(|h| h.is("content-length"));
    match codings {
        Some(_) if has_cl => Err(H1Error::ContentLengthWithTransferEncoding),
        Some(codings) => {
            let chunked = codings.iter().filter(|c| is_chunked(c)).count();
            match codings.last() {
                Some(last) if is_chunked(last) && chunked == 1 => {
                    if codings.len() == 1 {
                        Ok(BodyKind::Chunked)
                    } else {
                        Err(H1Error::UnsupportedTransferCoding)
                    }
                }
                _ => Err(H1Error::TransferEncodingNotChunked),
            }
        }
        None => Ok(content_length(&head.headers)?.map_or(BodyKind::Empty, BodyKind::Length)),
    }
}

/// Framing of a response (RFC 9112 §6.3) to a request that was or was not HEAD.
fn response_body_kind(head: &ResponseHead, request_was_head: bool) -> Result<BodyKind, H1Error> {
    if request_was_head || (100..=199).contains(&head.status) || matches!(head.status, 204 | 304) {
        return Ok(BodyKind::Empty);
    }
    let codings = transfer_codings(&head.headers);
    let has_cl = head.headers.iter().any(|h| h.is("content-length"));
    match codings {
        Some(_) if has_cl => Err(H1Error::ContentLengthWithTransferEncoding),
        Some(codings) => Ok(match codings.last() {
            Some(last) if is_chunked(last) => BodyKind::Chunked,
            _ => BodyKind::CloseDelimited,
        }),
        None => {
            Ok(content_length(&head.headers)?.map_or(BodyKind::CloseDelimited, BodyKind::Length))
        }
    }
}

/// Where a decoder is inside the current message's body.
#[derive(Clone, Debug)]
enum BodyState {
    /// Waiting for (or scanning) a head.
    Head,
    /// The head said there is no more body: emit `End` next.
    PendingEnd,
    /// Content-Length body with this many bytes still to come.
    Length(u64),
    /// Chunked body.
    Chunked(ChunkedDecoder),
    /// Response body running until the upstream closes.
    Close,
}

/// The next body event common to both roles, or `None` if more bytes are needed.
enum BodyStep {
    Data(Bytes),
    ChunkEnd,
    Trailers(Vec<Header>),
    End,
}

/// Advances a body state by one event. On `End` the state goes back to `Head`.
fn body_step(state: &mut BodyState, buf: &mut BytesMut) -> Result<Option<BodyStep>, H1Error> {
    match state {
        BodyState::Head => Ok(None),
        BodyState::PendingEnd => {
            *state = BodyState::Head;
            Ok(Some(BodyStep::End))
        }
        BodyState::Length(remaining) => {
            if *remaining == 0 {
                *state = BodyState::Head;
                return Ok(Some(BodyStep::End));
            }
            if buf.is_empty() {
                return Ok(None);
            }
            let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
            let data = buf.split_to(n).freeze();
            // n <= remaining, so this never saturates.
            *remaining = remaining.saturating_sub(n as u64);
            if *remaining == 0 {
                *state = BodyState::PendingEnd;
            }
            Ok(Some(BodyStep::Data(data)))
        }
        BodyState::Chunked(decoder) => Ok(match decoder.decode(buf)? {
            None => None,
            Some(ChunkEvent::Data(d)) => Some(BodyStep::Data(d)),
            Some(ChunkEvent::ChunkEnd) => Some(BodyStep::ChunkEnd),
            Some(ChunkEvent::Trailers(t)) => Some(BodyStep::Trailers(t)),
            Some(ChunkEvent::End) => {
                *state = BodyState::Head;
                Some(BodyStep::End)
            }
        }),
        BodyState::Close => {
            if buf.is_empty() {
                Ok(None)
            } else {
                let n = buf.len();
                Ok(Some(BodyStep::Data(buf.split_to(n).freeze())))
            }
        }
    }
}

fn state_for(kind: BodyKind, limits: H1Limits) -> BodyState {
    match kind {
        BodyKind::Empty | BodyKind::Length(0) => BodyState::PendingEnd,
        BodyKind::Length(n) => BodyState::Length(n),
        BodyKind::Chunked => BodyState::Chunked(ChunkedDecoder::new(limits)),
        BodyKind::CloseDelimited => BodyState::Close,
    }
}

/// Decodes a stream of (possibly pipelined) HTTP/1.0 and HTTP/1.1 requests.
///
/// Emits, per request, [`RequestEvent::Head`], body events, then
/// [`RequestEvent::End`]. After an error the decoder is poisoned and
/// returns that error from every later call.
#[derive(Clone, Debug)]
pub struct RequestDecoder {
    limits: H1Limits,
    state: BodyState,
    scanner: HeadScanner,
    leading_empty_lines: usize,
    error: Option<H1Error>,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`, waiting for the first request.
    pub fn new(limits: H1Limits) -> Self {
        RequestDecoder {
            limits,
            state: BodyState::Head,
            scanner: HeadScanner::new(Role::Request),
            leading_empty_lines: 0,
            error: None,
        }
    }

    /// Consumes bytes from the front of `buf` and returns the next event,
    /// or `Ok(None)` when more bytes are needed. After `End`, the next call
    /// starts on the next (pipelined) request.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RequestEvent>, H1Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.decode_inner(buf);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// The peer closed its write side: returns the events still complete in
    /// `buf`, then `Ok(None)` if that leaves the decoder between requests,
    /// or `Err(UnexpectedEof)` if a request was cut short.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<RequestEvent>, H1Error> {
        if let Some(ev) = self.decode(buf)? {
            return Ok(Some(ev));
        }
        if matches!(self.state, BodyState::Head) && buf.is_empty() {
            Ok(None)
        } else {
            self.error = Some(H1Error::UnexpectedEof);
            Err(H1Error::UnexpectedEof)
        }
    }

    /// True when no request is in progress: the previous one (if any) has
    /// ended and `decode` has seen no byte of the next one (empty lines
    /// skipped between requests do not count).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, BodyState::Head) && self.scanner.is_fresh() && self.error.is_none()
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<RequestEvent>, H1Error> {
        if !matches!(self.state, BodyState::Head) {
            return Ok(body_step(&mut self.state, buf)?.map(|step| match step {
                BodyStep::Data(d) => RequestEvent::Data(d),
                BodyStep::ChunkEnd => RequestEvent::ChunkEnd,
                BodyStep::Trailers(t) => RequestEvent::Trailers(t),
                BodyStep::End => RequestEvent::End,
            }));
        }
        if self.scanner.is_fresh() {
            // RFC 9112 §2.2: ignore empty lines before the request line.
            while let Some(b'\r') = buf.first() {
                match buf.get(1) {
                    None => return Ok(None),
                    Some(b'\n') => {
                        self.leading_empty_lines = self.leading_empty_lines.saturating_add(1);
                        if self.leading_empty_lines > MAX_LEADING_EMPTY_LINES {
                            return Err(H1Error::MalformedStartLine("request line"));
                        }
                        buf.advance(2);
                    }
                    Some(_) => break,
                }
            }
        }
        let Some(end) = self.scanner.scan(buf, &self.limits)? else {
            return Ok(None);
        };
        let fields = self.scanner.fields();
        self.scanner.reset();
        self.leading_empty_lines = 0;
        let bytes = buf.split_to(end).freeze();
        let head = parse_request_head(&bytes, fields, &self.limits)?;
        let kind = request_body_kind(&head)?;
        self.state = state_for(kind, self.limits);
        Ok(Some(RequestEvent::Head(head, kind)))
    }
}

/// Decodes the responses of an upstream connection, one per request.
///
/// Call [`ResponseDecoder::begin_response`] before each response so the
/// decoder knows whether it answers a HEAD request. Emits any number of
/// [`ResponseEvent::Informational`], then [`ResponseEvent::Head`], body
/// events and [`ResponseEvent::End`]. After an error the decoder is
/// poisoned and returns that error from every later call.
#[derive(Clone, Debug)]
pub struct ResponseDecoder {
    limits: H1Limits,
    state: BodyState,
    scanner: HeadScanner,
    request_was_head: bool,
    /// A response is expected or under way (set by `begin_response` or by
    /// bytes arriving, cleared by `End`).
    expecting: bool,
    error: Option<H1Error>,
}

impl ResponseDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: H1Limits) -> Self {
        ResponseDecoder {
            limits,
            state: BodyState::Head,
            scanner: HeadScanner::new(Role::Response),
            request_was_head: false,
            expecting: false,
            error: None,
        }
    }

    /// Announces the next response; `request_was_head` tells whether the
    /// request was HEAD, whose response has no body whatever its headers say.
    pub fn begin_response(&mut self, request_was_head: bool) {
        self.request_was_head = request_was_head;
        self.expecting = true;
    }

    /// Consumes bytes from the front of `buf` and returns the next event,
    /// or `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseEvent>, H1Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.decode_inner(buf);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// The upstream closed. A close-delimited body gets its remaining
    /// `Data` (if any) and then `End`; complete events still in `buf` are
    /// returned first. Closing in the middle of a response, or after
    /// [`ResponseDecoder::begin_response`] but before any byte of the
    /// response, is `Err(UnexpectedEof)`. `Ok(None)` once nothing is pending.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseEvent>, H1Error> {
        if let Some(ev) = self.decode(buf)? {
            return Ok(Some(ev));
        }
        match self.state {
            BodyState::Close => {
                self.finish();
                Ok(Some(ResponseEvent::End))
            }
            BodyState::Head if !self.expecting && buf.is_empty() => Ok(None),
            _ => {
                self.error = Some(H1Error::UnexpectedEof);
                Err(H1Error::UnexpectedEof)
            }
        }
    }

    fn finish(&mut self) {
        self.state = BodyState::Head;
        self.expecting = false;
        self.request_was_head = false;
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseEvent>, H1Error> {
        if !matches!(self.state, BodyState::Head) {
            let Some(step) = body_step(&mut self.state, buf)? else {
                return Ok(None);
            };
            return Ok(Some(match step {
                BodyStep::Data(d) => ResponseEvent::Data(d),
                BodyStep::ChunkEnd => ResponseEvent::ChunkEnd,
                BodyStep::Trailers(t) => ResponseEvent::Trailers(t),
                BodyStep::End => {
                    self.finish();
                    ResponseEvent::End
                }
            }));
        }
        if !buf.is_empty() {
            self.expecting = true;
        }
        let Some(end) = self.scanner.scan(buf, &self.limits)? else {
            return Ok(None);
        };
        let fields = self.scanner.fields();
        self.scanner.reset();
        let bytes = buf.split_to(end).freeze();
        let head = parse_response_head(&bytes, fields, &self.limits)?;
        if (100..=199).contains(&head.status) && head.status != 101 {
            return Ok(Some(ResponseEvent::Informational(head)));
        }
        let kind = response_body_kind(&head, self.request_was_head)?;
        self.state = state_for(kind, self.limits);
        Ok(Some(ResponseEvent::Head(head, kind)))
    }
}
