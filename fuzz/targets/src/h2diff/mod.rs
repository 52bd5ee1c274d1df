//! The differential HTTP/2 target: the same client bytes go to our server
//! (`ouli_core::h2::conn::Connection::server`) and to the `h2` crate's
//! server (`h2::server`, over an in-memory transport, polled by hand with
//! `Waker::noop()`), and the two must agree.
//!
//! # How
//!
//! The client stream ([`input::DiffInput`]) is cut into the preface and
//! then whole frames, as their headers delimit them, and both servers are
//! fed one piece at a time, in lockstep. After each piece, what each
//! server did (`sides::Step`) is compared:
//!
//! 1. **The connection**: both still open, or both ended it with an error
//!    (GOAWAY). Error codes are not compared: RFC 9113 names the code for
//!    most errors but lets an endpoint pick a stricter reaction, and h2
//!    answers every HPACK failure with PROTOCOL_ERROR rather than §4.3's
//!    COMPRESSION_ERROR.
//! 2. **The requests**: the streams each accepted, with method, scheme,
//!    authority, path, `:protocol`, the regular fields (lower-case names,
//!    values, order) and END_STREAM.
//! 3. **Stream rejections**: the streams each reset (RST_STREAM).
//! 4. **Bodies**: for the stream the piece was on, the DATA bytes, the end
//!    of the stream and the trailers each delivered so far.
//!
//! Comparing after every frame, rather than once at the end, pins every
//! difference on the frame that caused it, which is what lets the
//! legitimate differences below be excused precisely.
//!
//! # What differs legitimately, and is excused
//!
//! Each excuse names the frame and the condition, checked on the decoded
//! field block (a third HPACK decoder, `Shadow`, follows the client's
//! blocks), on the request the other side delivered, or on the GOAWAY
//! debug data that names a limit. Anything else fails the target. After
//! an excused difference in the connection outcome, the rest of the
//! input is not compared (one side is gone); after one on a stream, that
//! stream is left out from then on (`diverged`).
//!
//! Where h2 is the one at fault (it misses an RFC rule), the excuse says
//! so ("h2 misses"); the others are choices RFC 9113 leaves open.
//!
//! Connection outcome:
//!
//! * **Stream errors escalated** (§5.4.1: "an endpoint MAY choose to
//!   treat a stream error as a connection error"): one side ends the
//!   connection on a frame for which the other resets the frame's stream
//!   (h2 does so for DATA on a half-closed stream, a zero WINDOW_UPDATE,
//!   an unknown pseudo-header field, ...).
//! * **h2 validates fields while decoding HPACK** and ends the connection
//!   on a name that is not a lower-case token, a value with a control
//!   character, a method that is not a token, or a non UTF-8
//!   `:authority`/`:scheme`/`:path`/`:protocol` (`h2_refuses_field`).
//!   §8.2.1 forbids less (NUL, CR, LF, upper case, and SP or non-ASCII in
//!   names) and RFC 9110 §5.5 lets a recipient keep other control
//!   characters in values.
//! * **When a header block is decoded**: h2 decodes each fragment as it
//!   arrives, we at END_HEADERS (§4.3 requires the error, not its
//!   timing). When h2 ends the connection, or resets the stream, inside a
//!   block, ours is fed the rest of the block alone and must have done
//!   the same by its end. Likewise h2 rejects a PUSH_PROMISE (§8.4) only
//!   once its block is complete, we at once.
//! * **h2 checks a frame's length** from its first 3 bytes, we from the
//!   whole 9-byte header (§4.2): at the incomplete end of the input.
//! * **h2 misses §3.4** (the preface "MUST be followed by a SETTINGS
//!   frame"): we end the connection on another first frame.
//! * **h2 is stricter than RFC 9113 on three frames**, each without an
//!   error the RFC names: a SETTINGS ACK with none due (§6.5.3), a GOAWAY
//!   raising the last stream id of an earlier one (§6.8 forbids sending
//!   it), and SETTINGS_ENABLE_CONNECT_PROTOCOL other than 0 or 1 (RFC 8441,
//!   which we do not implement: an unknown setting, ignored, §6.5.2).
//! * **h2 misses RFC 7541 §4.2**: it accepts a table size update at the
//!   start of any fragment, not only of the block; we end the connection.
//! * **h2 forgets a block it reset**: it returns the stream error of a
//!   fragment that decodes to a malformed field before keeping the rest
//!   of the block, so a frame interrupting that block (§6.10: a
//!   connection error, ours) is not inside a block to h2.
//! * **h2 skips decoding a self-dependent HEADERS** (it returns the
//!   stream error first, §5.3.1), so it misses an HPACK error in that
//!   block and its HPACK table is no longer the client's (§4.3): nothing
//!   from such a frame on is compared.
//! * **Frames on a stream we reset**: we ignore them (§5.1, "MUST
//!   ignore"); h2 may call one an error (§5.1 lets it limit that period).
//! * **Limits**, each an endpoint's own (§10.5; §6.5.2 makes
//!   SETTINGS_MAX_HEADER_LIST_SIZE advisory), excused only when the
//!   limit's condition holds: h2's CONTINUATION count (5 with our header
//!   list and frame sizes), h2's empty or small DATA frame budget, our
//!   header-list, header-block, CONTINUATION, reset and control-frame
//!   limits.
//! * **The client's GOAWAY**: h2 ends the connection at once on one with
//!   an error code, and when idle after one with NO_ERROR; we keep
//!   reading until the client closes (§6.8 lets the receiver do either).
//! * **A frame on a stream already excused** (`diverged`).
//!
//! Requests:
//!
//! * **h2 builds an `http::Uri`** and resets a request whose
//!   `:authority`, `:scheme` or `:path` it cannot parse, or that makes no
//!   URI (§8.3.1 leaves URI syntax to the application; we pass the bytes
//!   on): excused when http's parsers refuse the value we delivered
//!   (`h2_refuses_request`). h2 also refuses a header list of exactly
//!   SETTINGS_MAX_HEADER_LIST_SIZE bytes, we only above it.
//! * **http drops a fragment** from `:path` (not part of the target URI,
//!   RFC 9110 §7.1) and keeps `:scheme` only with an `:authority`: paths
//!   are compared up to `#` (an empty rest as "/", how http writes it),
//!   schemes only with an authority.
//! * **Field order**: h2 hands fields over as an `http::HeaderMap`, all
//!   values of a name together in the order of the name's first
//!   appearance; RFC 9110 §5.3 makes only the order of lines with the
//!   same name significant, so ours are grouped the same way.
//! * **h2 misses**: a request without `:path` (§8.3.1; http fills in
//!   "/"), a CONNECT without `:authority` (§8.5), an empty
//!   content-length (its parser reads "" as 0; RFC 9110 §8.6), a value
//!   with leading or trailing whitespace (§8.2.1), a `host` differing
//!   from `:authority` (§8.3.1, a SHOULD), a malformed field (repeated or
//!   late pseudo-header, connection-specific field, §8.2.2, §8.3) decoded
//!   from a fragment that ends inside the next field (h2 reports the
//!   decoder's "need more" and drops its own verdict), a field with an
//!   empty name in a block that came in fragments (h2 takes it for "need
//!   more" and loses it), and, in trailers,
//!   pseudo-header fields (§8.1; h2 drops them) and edge whitespace.
//! * **Stream resets on a stream the other side had reset already**: no
//!   second RST_STREAM is owed (§5.1), whether one is sent is not
//!   compared.

pub mod input;
mod sides;

use input::DiffInput;
use ouli_core::h2::frame::{flags, kind, FrameHeader, FRAME_HEADER_LEN};
use ouli_core::h2::hpack::{entry_size, Decoder};
use ouli_core::h2::{
    ErrorCode, MAX_CONTINUATION_FRAMES, MAX_CONTROL_FRAMES_PER_WINDOW, MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_LIST_BYTES, MAX_RESETS_PER_WINDOW, PREFACE,
};
use ouli_core::message::Header;
use sides::{Close, Fields, Ours, Req, Step, Theirs};
use std::collections::BTreeSet;

/// h2's CONTINUATION limit with our settings: frames needed for a full
/// header list (64 KiB / 16 KiB), plus a quarter, at least 5
/// (`calc_max_continuation_frames` in h2's `codec/framed_read.rs`).
const H2_MAX_CONTINUATIONS: usize = 5;
/// h2's limit on empty DATA frames per connection (`MAX_RECV_EMPTY_DATA_FRAMES`).
const H2_MAX_EMPTY_DATA_FRAMES: usize = 100;
/// h2's DATA frame overhead budget: frames under 256 bytes cost
/// `256 - len` of 25 600 (`DEFAULT_DATA_FRAME_BUDGET`), so at least this
/// many small frames are needed to exhaust it.
const H2_MIN_SMALL_DATA_FRAMES: usize = 100;

/// The differential target. See the [module docs](self).
pub fn h2_differential(data: &[u8]) {
    let input = DiffInput::from_bytes(data);
    let bytes = input.client_bytes();
    Diff::default().run(&bytes, Theirs::new());
}

/// How much a run compared: pieces fed to both, requests found equal on
/// both sides, body comparisons with at least one byte, end or trailers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compared {
    pub pieces: usize,
    pub requests: usize,
    pub bodies: usize,
}

/// One piece of the client stream: the preface, or one frame (its header
/// parsed), or the incomplete rest.
struct Piece<'a> {
    bytes: &'a [u8],
    header: Option<FrameHeader>,
}

fn pieces(bytes: &[u8]) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let (preface, mut rest) = bytes.split_at(bytes.len().min(PREFACE.len()));
    out.push(Piece {
        bytes: preface,
        header: None,
    });
    while !rest.is_empty() {
        let header = FrameHeader::parse(rest);
        let len = header.map_or(rest.len(), |h| FRAME_HEADER_LEN + h.length as usize);
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        out.push(Piece {
            bytes: piece,
            header: header.filter(|_| piece.len() == len),
        });
        rest = tail;
    }
    out
}

/// What the client's header blocks decode to, followed independently of
/// both servers with our HPACK decoder (both servers decode every block
/// they receive, in order, whatever they then do with the stream).
#[derive(Default)]
struct Shadow {
    dec: Option<Decoder>,
    /// The block being assembled: stream, bytes, CONTINUATION frames.
    block: Option<(u32, Vec<u8>, usize)>,
    /// A block failed to decode: the table is unknown from then on.
    broken: bool,
}

/// What the shadow knows about the piece just fed.
#[derive(Default)]
struct PieceInfo {
    header: Option<FrameHeader>,
    /// The piece is the first frame after the preface.
    first_frame: bool,
    /// A block is still open after this piece.
    in_block: bool,
    /// CONTINUATION frames so far in the open (or just ended) block, and
    /// its size.
    continuations: usize,
    block_bytes: usize,
    /// The piece ended a block: its stream and what it decoded to
    /// (`None`: unknown or undecodable).
    block: Option<(u32, Option<Vec<Header>>)>,
    /// The piece is a HEADERS whose priority names its own stream.
    self_dependent: bool,
}

impl Shadow {
    fn on_frame(&mut self, h: FrameHeader, payload: &[u8]) -> PieceInfo {
        let mut info = PieceInfo {
            header: Some(h),
            ..PieceInfo::default()
        };
        let end = h.flags & flags::END_HEADERS != 0;
        match h.kind {
            kind::HEADERS => {
                self.block = None;
                if h.flags & flags::PRIORITY != 0 {
                    let skip = usize::from(h.flags & flags::PADDED != 0);
                    if let Some(dep) = payload.get(skip..skip + 4) {
                        let dep = u32::from_be_bytes([dep[0], dep[1], dep[2], dep[3]]);
                        info.self_dependent = dep & 0x7fff_ffff == h.stream;
                    }
                }
                if let Some(fragment) = headers_fragment(h.flags, payload) {
                    self.block = Some((h.stream, fragment.to_vec(), 0));
                }
            }
            // A server rejects any PUSH_PROMISE; h2 only once its block
            // is complete. Followed as a block (never decoded) for that.
            kind::PUSH_PROMISE => {
                self.block = None;
                if end {
                    self.broken = true;
                } else {
                    self.block = Some((h.stream, Vec::new(), 0));
                    self.broken = true;
                }
            }
            kind::CONTINUATION => match &mut self.block {
                Some((s, b, n)) if *s == h.stream => {
                    b.extend_from_slice(payload);
                    *n += 1;
                }
                _ => self.block = None,
            },
            _ => self.block = None,
        }
        if let Some((stream, block, n)) = &self.block {
            info.continuations = *n;
            info.block_bytes = block.len();
            if end {
                let (stream, block) = (*stream, block.clone());
                self.block = None;
                info.block = Some((stream, self.decode(block)));
            }
        }
        info.in_block = self.block.is_some();
        info
    }

    fn decode(&mut self, block: Vec<u8>) -> Option<Vec<Header>> {
        if self.broken {
            return None;
        }
        let dec = self.dec.get_or_insert_with(|| {
            let mut d = Decoder::new(ouli_core::h2::HEADER_TABLE_SIZE as usize);
            // Large enough for anything an input can spell; what the
            // servers' limits make of the list is judged separately.
            d.set_max_header_list_bytes(16 * MAX_HEADER_LIST_BYTES);
            d
        });
        match dec.decode(&block) {
            Ok(fields) => Some(fields),
            Err(_) => {
                self.broken = true;
                None
            }
        }
    }
}

/// The field block fragment of a HEADERS payload, without padding and
/// priority; `None` if they do not fit (both servers reject that frame).
fn headers_fragment(fl: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0;
    if fl & flags::PADDED != 0 {
        let (&n, rest) = p.split_first()?;
        pad = usize::from(n);
        p = rest;
    }
    if fl & flags::PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// Bookkeeping of the client stream, for the excuses.
#[derive(Default)]
struct Diff {
    shadow: Shadow,
    /// Streams whose states legitimately differ: no longer compared.
    diverged: BTreeSet<u32>,
    frames: usize,
    client_goaway: bool,
    empty_data_frames: usize,
    small_data_frames: usize,
    client_resets: usize,
    control_frames: usize,
    our_resets: usize,
    log: Vec<String>,
    compared: Compared,
    /// The last stream of the client's last GOAWAY, and whether the
    /// latest one raised it.
    goaway_last: Option<u32>,
    goaway_raised: bool,
    /// Streams each server has sent RST_STREAM on, before this piece.
    ours_reset: BTreeSet<u32>,
    h2_reset: BTreeSet<u32>,
    /// The stream of the header block open before this piece.
    open_block: Option<u32>,
    /// SETTINGS frames with ACK so far.
    settings_acks: usize,
    /// The parameters of the last SETTINGS frame.
    last_settings: Vec<(u16, u32)>,
}

enum Flow {
    Continue,
    Stop,
    /// h2 ended the connection inside a header block: feed ours alone
    /// until the block ends.
    LagOurs,
    /// Ours ended the connection inside a header block: feed h2 alone
    /// until the block ends.
    LagH2,
}

/// Which server is fed alone to the end of a header block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lag {
    Ours,
    H2,
}

impl Diff {
    fn run(mut self, bytes: &[u8], mut theirs: Theirs) -> Compared {
        let mut ours = Ours::new();
        let mut lagging = None;
        for piece in pieces(bytes) {
            let info = match piece.header {
                Some(h) => {
                    self.count(h, &piece.bytes[FRAME_HEADER_LEN..]);
                    let mut info = self.shadow.on_frame(h, &piece.bytes[FRAME_HEADER_LEN..]);
                    info.first_frame = self.frames == 1;
                    info
                }
                None => PieceInfo::default(),
            };
            self.log.push(match info.header {
                Some(h) => format!(
                    "frame type {:#x} flags {:#x} stream {} length {}{}{}",
                    h.kind,
                    h.flags,
                    h.stream,
                    h.length,
                    if h.length <= 64 {
                        format!(" payload {:?}", Bstr(&piece.bytes[FRAME_HEADER_LEN..]))
                    } else {
                        String::new()
                    },
                    match &info.block {
                        Some((_, Some(fields))) => format!(
                            "\n      block: {}",
                            fields
                                .iter()
                                .map(|f| format!(
                                    "{}: {}",
                                    f.name.escape_ascii(),
                                    f.value.escape_ascii()
                                ))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        Some((_, None)) => "\n      block: (does not decode)".to_owned(),
                        None => String::new(),
                    }
                ),
                None => format!("bytes {:?}", Bstr(piece.bytes)),
            });
            match lagging {
                Some(Lag::Ours) => {
                    let o = ours.feed(piece.bytes);
                    if self.lag_done(&info, &o, "ours") {
                        break;
                    }
                    continue;
                }
                Some(Lag::H2) => {
                    let t = theirs.feed(piece.bytes);
                    if self.lag_done(&info, &t, "h2") {
                        break;
                    }
                    continue;
                }
                None => {}
            }
            let o = ours.feed(piece.bytes);
            let t = theirs.feed(piece.bytes);
            self.compared.pieces += 1;
            let flow = self.compare(&info, &o, &t, &ours, &theirs);
            self.ours_reset.extend(&o.resets);
            self.h2_reset.extend(&t.resets);
            self.open_block = info.header.filter(|_| info.in_block).map(|h| h.stream);
            match flow {
                Flow::Continue => {}
                Flow::Stop => break,
                Flow::LagOurs => lagging = Some(Lag::Ours),
                Flow::LagH2 => lagging = Some(Lag::H2),
            }
            // h2 returns the stream error for a self-dependent HEADERS
            // before it decodes the block (h2's `codec/framed_read.rs`), so
            // its HPACK table is no longer the client's (RFC 9113 §4.3
            // requires the block to be decoded all the same): nothing
            // after it can be compared.
            if info.self_dependent {
                break;
            }
        }
        self.compared
    }

    fn count(&mut self, h: FrameHeader, payload: &[u8]) {
        self.frames += 1;
        if h.kind == kind::SETTINGS && h.flags & flags::ACK != 0 {
            self.settings_acks += 1;
        }
        if h.kind == kind::SETTINGS {
            self.last_settings = payload
                .chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
        }
        match h.kind {
            kind::GOAWAY => {
                self.client_goaway = true;
                let last = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
                self.goaway_raised =
                    matches!((self.goaway_last, last), (Some(a), Some(b)) if b > a);
                if last.is_some() {
                    self.goaway_last = last;
                }
            }
            kind::RST_STREAM => self.client_resets += 1,
            kind::PING | kind::SETTINGS if h.flags & flags::ACK == 0 => self.control_frames += 1,
            kind::DATA if h.flags & flags::END_STREAM == 0 => {
                let pad = if h.flags & flags::PADDED != 0 {
                    payload.first().map_or(0, |&p| usize::from(p) + 1)
                } else {
                    0
                };
                let len = payload.len().saturating_sub(pad);
                if len == 0 {
                    self.empty_data_frames += 1;
                } else if len < 256 {
                    self.small_data_frames += 1;
                }
            }
            _ => {}
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "h2_differential: {what}\nclient stream, piece by piece:\n  {}",
            self.log.join("\n  ")
        );
    }

    /// One server fed alone after the other ended the connection inside
    /// a block: done (`true`) once it rejected the block (or the input
    /// ended), or the block ended with a field h2 refuses while decoding.
    fn lag_done(&self, info: &PieceInfo, step: &Step, who: &str) -> bool {
        if step.closed.is_some() {
            return true;
        }
        let Some(h) = info.header else {
            // The incomplete end of the input: nothing more to judge.
            return true;
        };
        if step.resets.contains(&h.stream) {
            return true;
        }
        if info.in_block {
            return false;
        }
        match &info.block {
            Some((_, Some(fields)))
                if who == "ours" && fields.iter().any(|f| h2_refuses_field(f).is_some()) =>
            {
                true
            }
            _ => self.fail(format!(
                "the other server ended the connection inside a header block; {who} accepted \
                 the whole block"
            )),
        }
    }

    fn compare(
        &mut self,
        info: &PieceInfo,
        o: &Step,
        t: &Step,
        ours: &Ours,
        theirs: &Theirs,
    ) -> Flow {
        match (&o.closed, &t.closed) {
            (Some(_), Some(_)) => return Flow::Stop,
            (None, Some(tc)) => return self.h2_closed_alone(info, o, tc),
            (Some(oc), None) => return self.ours_closed_alone(info, t, oc),
            (None, None) => {}
        }
        let piece_stream = info.header.map(|h| h.stream);
        let mut newly_diverged = BTreeSet::new();
        let ids: BTreeSet<u32> = o
            .requests
            .iter()
            .chain(&t.requests)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let a = o.requests.iter().find(|(i, _)| *i == id).map(|(_, r)| r);
            let b = t.requests.iter().find(|(i, _)| *i == id).map(|(_, r)| r);
            match (a, b) {
                (Some(a), Some(b)) => {
                    let (na, nb) = (normalise_ours(a), normalise_h2(b));
                    if na != nb {
                        self.fail(format!(
                            "stream {id}: the requests differ\n  ours: {}\n  h2:   {}",
                            show_req(&na),
                            show_req(&nb)
                        ));
                    }
                    self.compared.requests += 1;
                }
                (Some(a), None) => {
                    let refused = t.resets.contains(&id);
                    let list = info
                        .block
                        .as_ref()
                        .and_then(|(_, f)| f.as_ref())
                        .map(|f| f.iter().map(entry_size).sum::<usize>());
                    match h2_refuses_request(a, list) {
                        Some(_) if refused => {
                            newly_diverged.insert(id);
                        }
                        _ => self.fail(format!(
                            "stream {id}: ours accepted a request h2 did not (h2 reset it: \
                             {refused})\n  ours: {}",
                            show_req(&normalise_ours(a))
                        )),
                    }
                }
                (None, Some(b)) => {
                    match ours_refuses_request(b, block_fields(info), info.continuations) {
                        Some(_) if o.resets.contains(&id) => {
                            newly_diverged.insert(id);
                        }
                        _ => self.fail(format!(
                        "stream {id}: h2 accepted a request ours did not (ours reset it: {})\n  \
                         h2: {}",
                        o.resets.contains(&id),
                        show_req(&normalise_h2(b))
                    )),
                    }
                }
                (None, None) => unreachable!(),
            }
        }
        self.diverged.extend(&newly_diverged);
        self.our_resets += o.resets.len();
        let mut lag = false;
        for &id in o.resets.symmetric_difference(&t.resets) {
            if self.diverged.contains(&id) {
                continue;
            }
            let on_piece = piece_stream == Some(id);
            let fields = block_fields(info);
            let has_pseudo =
                fields.is_some_and(|f| f.iter().any(|f| f.name.first() == Some(&b':')));
            if o.resets.contains(&id) {
                // Trailers with a pseudo-header field are malformed
                // (§8.1); h2 drops the pseudo-header fields and keeps the
                // rest. A value with leading or trailing whitespace is
                // malformed (§8.2.1); h2 does not check.
                let ws_value = fields.is_some_and(|f| f.iter().any(|f| edge_ws(&f.value)));
                if on_piece && (has_pseudo || ws_value) && ours.bodies.contains_key(&id) {
                    self.diverged.insert(id);
                    continue;
                }
            } else if on_piece && info.in_block {
                // h2 resets a stream as soon as a fragment decodes to a
                // malformed field (a stream error, §8.1.1, at a time of
                // its choosing), then drops the rest of the block: ours
                // must reject it by the block's end too.
                lag = true;
                continue;
            }
            // A stream the other side reset before: frames on it are to be
            // ignored (§5.1, "closed"), and whether a malformed one gets
            // another RST_STREAM is not compared.
            let before = if o.resets.contains(&id) {
                &self.h2_reset
            } else {
                &self.ours_reset
            };
            if before.contains(&id) {
                continue;
            }
            let who = if o.resets.contains(&id) { "ours" } else { "h2" };
            self.fail(format!(
                "stream {id}: only {who} reset it (ours reset {:?}, h2 reset {:?})",
                o.resets, t.resets
            ));
        }
        if lag {
            return Flow::LagOurs;
        }
        if let Some(id) = piece_stream.filter(|id| !self.diverged.contains(id)) {
            let a = ours.bodies.get(&id);
            let b = theirs.bodies.get(&id);
            if let (Some(a), Some(b)) = (a, b) {
                let na = sides::Body {
                    trailers: a.trailers.as_ref().map(grouped),
                    ..a.clone()
                };
                if na != sides::Body::default() {
                    self.compared.bodies += 1;
                }
                if &na != b {
                    self.fail(format!(
                        "stream {id}: the bodies differ\n  ours: {} bytes, ended {}, trailers \
                         {:?}\n  h2:   {} bytes, ended {}, trailers {:?}",
                        na.data.len(),
                        na.ended,
                        na.trailers.as_ref().map(show_fields),
                        b.data.len(),
                        b.ended,
                        b.trailers.as_ref().map(show_fields),
                    ));
                }
            }
        }
        Flow::Continue
    }

    /// Whether the piece is on a stream whose state already (legitimately)
    /// differs between the two: what either does with it is not compared.
    fn on_diverged(&self, info: &PieceInfo) -> bool {
        info.header
            .is_some_and(|h| h.stream != 0 && self.diverged.contains(&h.stream))
    }

    /// h2 ended the connection, ours did not.
    fn h2_closed_alone(&self, info: &PieceInfo, o: &Step, tc: &Close) -> Flow {
        let debug = tc.debug.as_slice();
        let h = info.header;
        if self.on_diverged(info) {
            return Flow::Stop;
        }
        let kind_is = |k: u8| h.is_some_and(|h| h.kind == k);
        // The client's GOAWAY (§6.8).
        if tc.by_client && self.client_goaway {
            return Flow::Stop;
        }
        // h2's limits (§10.5).
        if debug == b"too_many_continuations"
            && kind_is(kind::CONTINUATION)
            && info.continuations > H2_MAX_CONTINUATIONS
        {
            return Flow::Stop;
        }
        if debug == b"too_many_data_frames"
            && kind_is(kind::DATA)
            && (self.empty_data_frames > H2_MAX_EMPTY_DATA_FRAMES
                || self.small_data_frames >= H2_MIN_SMALL_DATA_FRAMES)
        {
            return Flow::Stop;
        }
        // A GOAWAY whose last stream is above an earlier one's: §6.8
        // forbids sending it, names no error for receiving it; h2 calls
        // it PROTOCOL_ERROR, we take the lower one.
        if kind_is(kind::GOAWAY) && self.goaway_raised {
            return Flow::Stop;
        }
        // A SETTINGS ACK when none is due: RFC 9113 §6.5.3 defines no
        // error for it (we ignore it); h2 calls it PROTOCOL_ERROR. Each
        // server sent one SETTINGS, so only the first ACK is due.
        if kind_is(kind::SETTINGS)
            && h.is_some_and(|h| h.flags & flags::ACK != 0)
            && self.settings_acks > 1
        {
            return Flow::Stop;
        }
        // RFC 8441 §3's SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8), which h2
        // requires to be 0 or 1: we do not implement RFC 8441, and ignore
        // it as an unknown setting (§6.5.2).
        if kind_is(kind::SETTINGS) && self.last_settings.iter().any(|&(id, v)| id == 8 && v > 1) {
            return Flow::Stop;
        }
        // A stream error of ours, escalated by h2 (§5.4.1).
        if let Some(h) = h {
            if o.resets.contains(&h.stream) {
                return Flow::Stop;
            }
        }
        // A frame on a stream we reset before, which we ignore (§5.1:
        // "MUST ignore frames that it receives on closed streams after it
        // has sent a RST_STREAM frame"); h2 may call it an error (§5.1
        // lets it limit that period; §5.4.1 escalation). Not a block that
        // fails to decode: that ends both connections.
        let undecodable = matches!(info.block, Some((_, None)));
        if h.is_some_and(|h| self.ours_reset.contains(&h.stream)) && !undecodable {
            return Flow::Stop;
        }
        // A field h2 refuses while decoding (§8.2.1, RFC 9110 §5.5).
        if let Some((_, Some(fields))) = &info.block {
            if fields.iter().any(|f| h2_refuses_field(f).is_some()) {
                return Flow::Stop;
            }
        }
        // Inside a block: h2 decodes fragments as they come (§4.3).
        if info.in_block {
            return Flow::LagOurs;
        }
        // The incomplete end of the input: h2 checks a frame's length as
        // soon as its 3 length bytes are in (§4.2), ours with the whole
        // 9-byte header.
        if h.is_none() && tc.code == ErrorCode::FRAME_SIZE_ERROR.0 {
            return Flow::Stop;
        }
        self.fail(format!(
            "h2 ended the connection ({}), ours did not",
            show_close(tc)
        ))
    }

    /// Ours ended the connection, h2 did not.
    fn ours_closed_alone(&self, info: &PieceInfo, t: &Step, oc: &Close) -> Flow {
        let rule = String::from_utf8_lossy(&oc.debug);
        let h = info.header;
        if self.on_diverged(info) {
            return Flow::Stop;
        }
        // §3.4, which h2 does not check.
        if info.first_frame && rule.contains("first frame from the peer is not SETTINGS") {
            return Flow::Stop;
        }
        // Our limits (§10.5, §6.5.2).
        let list = info
            .block
            .as_ref()
            .and_then(|(_, f)| f.as_ref())
            .map(|f| f.iter().map(entry_size).sum::<usize>());
        let limit_hit = if rule.contains("HPACK bomb") {
            list.is_some_and(|l| l > MAX_HEADER_LIST_BYTES)
        } else if rule.contains("CONTINUATION flood") {
            info.block_bytes > MAX_HEADER_BLOCK_BYTES
                || info.continuations > MAX_CONTINUATION_FRAMES
        } else if rule.contains("rapid reset") {
            self.client_resets + self.our_resets > MAX_RESETS_PER_WINDOW as usize
        } else if rule.contains("PING flood") || rule.contains("SETTINGS flood") {
            self.control_frames > MAX_CONTROL_FRAMES_PER_WINDOW as usize
        } else {
            false
        };
        if limit_hit {
            return Flow::Stop;
        }
        // h2 allows a dynamic table size update at the start of every
        // fragment it decodes, not only of the block (RFC 7541 §4.2).
        if rule.contains("table size update not at the start") && info.continuations > 0 {
            return Flow::Stop;
        }
        // A self-dependent HEADERS: h2 resets the stream without decoding
        // the block (§5.3.1 first), so it never sees an HPACK error in it.
        if info.self_dependent {
            return Flow::Stop;
        }
        // A frame that interrupts a header block h2 has let go of: h2
        // returns the stream error of a fragment that decodes to a
        // malformed field at once (codec/framed_read.rs) and forgets the
        // block, so a later frame is not inside one to h2. Only for a
        // block on a stream h2 reset (silently, when it had reset it
        // already).
        if rule.contains("inside a header block")
            && self.open_block.is_some_and(|s| self.h2_reset.contains(&s))
        {
            return Flow::Stop;
        }
        // A stream error of h2's, escalated by us (§5.4.1).
        if let Some(h) = h {
            if t.resets.contains(&h.stream) {
                return Flow::Stop;
            }
        }
        // Inside a block: we reject a PUSH_PROMISE (§8.4) at once, h2 once
        // its block is complete.
        if info.in_block && h.is_some_and(|h| h.kind == kind::PUSH_PROMISE) {
            return Flow::LagH2;
        }
        self.fail(format!(
            "ours ended the connection ({}), h2 did not",
            show_close(oc)
        ))
    }
}

/// What h2's `HeaderBlock::load` calls malformed: a pseudo-header field
/// repeated or after a regular one, a connection-specific field, a TE
/// other than "trailers".
fn h2_load_malformed(fields: &[Header]) -> bool {
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut regular = false;
    for f in fields {
        let name = &f.name[..];
        if name.first() == Some(&b':') {
            if regular || seen.contains(&name) {
                return true;
            }
            seen.push(name);
        } else {
            regular = true;
            let connection_specific = [
                &b"connection"[..],
                b"transfer-encoding",
                b"upgrade",
                b"keep-alive",
                b"proxy-connection",
            ];
            if connection_specific.contains(&name) || (name == b"te" && &f.value[..] != b"trailers")
            {
                return true;
            }
        }
    }
    false
}

/// The fields of the block the piece ended, if it decoded.
fn block_fields(info: &PieceInfo) -> Option<&[Header]> {
    info.block.as_ref().and_then(|(_, f)| f.as_deref())
}

/// Why h2's HPACK layer refuses a decoded field (a connection error in
/// h2), if it does: `hpack::Header::new` in h2 turns it into http types.
fn h2_refuses_field(f: &Header) -> Option<&'static str> {
    let (name, value) = (&f.name[..], &f.value[..]);
    match name {
        b":method" => http::Method::from_bytes(value)
            .err()
            .map(|_| "method not a token"),
        b":authority" | b":scheme" | b":path" | b":protocol" => std::str::from_utf8(value)
            .err()
            .map(|_| "pseudo-header value not UTF-8"),
        b":status" => http::StatusCode::from_bytes(value)
            .err()
            .map(|_| "invalid :status"),
        _ if name.first() == Some(&b':') => Some("unknown pseudo-header"),
        _ => {
            if http::HeaderName::from_lowercase(name).is_err() {
                Some("name not a lower-case token")
            } else if http::HeaderValue::from_bytes(value).is_err() {
                Some("control character in a value")
            } else {
                None
            }
        }
    }
}

/// Why h2 resets a request we accepted, if it does (RFC 9113 §8.3.1 leaves
/// URI syntax to the application; h2 needs an `http::Uri`). `list`: the
/// decoded header-list size.
fn h2_refuses_request(r: &Req, list: Option<usize>) -> Option<&'static str> {
    use http::uri::{Authority, PathAndQuery, Scheme};
    if list.is_some_and(|l| l >= MAX_HEADER_LIST_BYTES) {
        return Some("header list at h2's (inclusive) limit");
    }
    let mut parts = http::uri::Parts::default();
    if let Some(a) = &r.authority {
        match Authority::try_from(a.as_slice()) {
            Ok(a) => parts.authority = Some(a),
            Err(_) => return Some("authority http cannot parse"),
        }
    }
    if let Some(s) = &r.scheme {
        match Scheme::try_from(s.as_slice()) {
            Ok(s) if parts.authority.is_some() => parts.scheme = Some(s),
            Ok(_) => {}
            Err(_) => return Some("scheme http cannot parse"),
        }
    }
    if let Some(p) = &r.path {
        match PathAndQuery::try_from(p.as_slice()) {
            Ok(p) => parts.path_and_query = Some(p),
            Err(_) => return Some("path http cannot parse"),
        }
    }
    if http::Uri::from_parts(parts).is_err() {
        return Some("no http::Uri from these parts");
    }
    None
}

/// Why we reset a request h2 accepted, if it is one of the checks h2
/// misses (RFC 9113 §8.2.1, §8.3.1).
fn ours_refuses_request(
    r: &Req,
    block: Option<&[Header]>,
    continuations: usize,
) -> Option<&'static str> {
    let has = |name: &str| block.is_some_and(|b| b.iter().any(|f| f.is(name)));
    if continuations > 0 && block.is_some_and(|b| b.iter().any(|f| f.name.is_empty())) {
        // h2 reads an empty field name as "need more" (hpack/header.rs),
        // which a fragment that is not the last tolerates: the field is
        // lost instead of making the request malformed (§8.2.1).
        return Some("empty field name in a fragmented block");
    }
    if continuations > 0 && block.is_some_and(h2_load_malformed) {
        // h2's HeaderBlock::load returns the decoder's NeedMore before
        // its "malformed" verdict: a fragment that ends inside a field
        // forgets the malformed field it decoded (§8.1.1, §8.2.2, §8.3).
        return Some("malformed field in a fragment h2 forgets");
    }
    if block.is_some() && r.method != b"CONNECT" && !has(":path") {
        // h2 lets http::Uri fill in "/" (§8.3.1: ":path" MUST be there).
        return Some("request without :path (§8.3.1)");
    }
    if block.is_some() && r.method == b"CONNECT" && !has(":authority") && !has(":protocol") {
        return Some("CONNECT without :authority (§8.5)");
    }
    let ws = edge_ws;
    if r.headers
        .iter()
        .any(|(n, v)| n == b"content-length" && v.is_empty())
    {
        // h2's parse_u64 reads "" as 0; RFC 9110 §8.6 wants 1*DIGIT.
        return Some("empty content-length (§8.1.1, RFC 9110 §8.6)");
    }
    if r.headers.iter().any(|(_, v)| ws(v)) {
        return Some("value with leading or trailing whitespace (§8.2.1)");
    }
    if let Some(authority) = &r.authority {
        let scheme = r.scheme.as_deref().unwrap_or_default();
        let differs = r
            .headers
            .iter()
            .filter(|(n, _)| n == b"host")
            .any(|(_, v)| !same_authority(scheme, authority, v));
        if differs {
            return Some("host differs from :authority (§8.3.1)");
        }
    }
    None
}

/// Whether a value starts or ends with SP or HTAB.
fn edge_ws(v: &[u8]) -> bool {
    matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t'))
}

/// RFC 3986 §6.2.3 comparison, as ours does it: case-insensitive, the
/// scheme's default port dropped.
fn same_authority(scheme: &[u8], a: &[u8], b: &[u8]) -> bool {
    let default: &[u8] = match scheme {
        b"http" => b":80",
        b"https" => b":443",
        _ => b"",
    };
    let normal = |v: &[u8]| -> Vec<u8> {
        let v = if default.is_empty() {
            v
        } else {
            v.strip_suffix(default).unwrap_or(v)
        };
        v.to_ascii_lowercase()
    };
    normal(a) == normal(b)
}

/// Values of a name together, names in order of first appearance (how an
/// `http::HeaderMap` iterates).
fn grouped(fields: &Fields) -> Fields {
    let mut names: Vec<&[u8]> = Vec::new();
    for (n, _) in fields {
        if !names.contains(&n.as_slice()) {
            names.push(n);
        }
    }
    names
        .iter()
        .flat_map(|name| fields.iter().filter(move |(n, _)| n == name).cloned())
        .collect()
}

fn normalise_ours(r: &Req) -> Req {
    let mut r = r.clone();
    r.headers = grouped(&r.headers);
    if let Some(p) = &mut r.path {
        if let Some(i) = p.iter().position(|&b| b == b'#') {
            p.truncate(i);
            // What is left of a :path that was only a fragment: http
            // writes an empty path-and-query as "/".
            if p.is_empty() {
                p.push(b'/');
            }
        }
    }
    if r.authority.is_none() {
        r.scheme = None;
    }
    r
}

fn normalise_h2(r: &Req) -> Req {
    let mut r = r.clone();
    if r.authority.is_none() {
        r.scheme = None;
    }
    r
}

struct Bstr<'a>(&'a [u8]);

impl std::fmt::Debug for Bstr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

fn show_fields(f: &Fields) -> String {
    f.iter()
        .map(|(n, v)| format!("{}: {}", n.escape_ascii(), v.escape_ascii()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_req(r: &Req) -> String {
    let s = |v: &Option<Vec<u8>>| v.as_ref().map(|v| v.escape_ascii().to_string());
    format!(
        "{} scheme {:?} authority {:?} path {:?} protocol {:?} end_stream {} [{}]",
        r.method.escape_ascii(),
        s(&r.scheme),
        s(&r.authority),
        s(&r.path),
        s(&r.protocol),
        r.end_stream,
        show_fields(&r.headers)
    )
}

fn show_close(c: &Close) -> String {
    format!(
        "code {:?}, debug {:?}, by client {}",
        ouli_core::h2::ErrorCode(c.code),
        Bstr(&c.debug),
        c.by_client
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds::seeds;

    fn seed(name: &str) -> Vec<u8> {
        let (_, _, bytes) = seeds()
            .into_iter()
            .find(|(t, n, _)| *t == "h2_differential" && n == name)
            .expect("seed");
        DiffInput::from_bytes(&bytes).client_bytes()
    }

    /// The seeds get compared all the way: every request, and the bodies.
    #[test]
    fn seeds_are_compared_to_the_end() {
        for (name, requests, bodies) in [
            ("get", 1, 1),
            ("post-data", 1, 2),
            ("streams", 4, 7),
            ("continuation", 1, 1),
            ("padding", 1, 1),
            ("settings-change", 1, 1),
            ("hpack-indexing", 2, 2),
        ] {
            let bytes = seed(name);
            let n = pieces(&bytes).len();
            let c = Diff::default().run(&bytes, Theirs::new());
            assert_eq!(c.pieces, n, "{name}: stopped early");
            assert_eq!((c.requests, c.bodies), (requests, bodies), "{name}");
        }
    }

    /// A server that disagrees is caught: h2 allowed one stream at a time.
    #[test]
    #[should_panic(expected = "ours accepted a request h2 did not")]
    fn a_difference_fails_the_target() {
        let bytes = seed("streams");
        Diff::default().run(
            &bytes,
            Theirs::with(|b| {
                b.max_concurrent_streams(1);
            }),
        );
    }

    /// h2 refusing a field we accept is excused only with the field.
    #[test]
    #[should_panic(expected = "h2 ended the connection")]
    fn h2_closing_without_cause_fails_the_target() {
        let bytes = seed("get");
        Diff::default().run(
            &bytes,
            Theirs::with(|b| {
                b.max_header_list_size(16);
            }),
        );
    }

    #[test]
    fn grouping_keeps_same_name_order() {
        let f = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        let fields = vec![f("a", "1"), f("b", "2"), f("a", "3"), f("c", "4")];
        assert_eq!(
            grouped(&fields),
            vec![f("a", "1"), f("a", "3"), f("b", "2"), f("c", "4")]
        );
    }

    #[test]
    fn pieces_are_the_preface_then_frames() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
        bytes.extend([0, 0, 2, 0, 0, 0, 0, 0, 1, 9]);
        let p = pieces(&bytes);
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].header.map(|h| h.kind), Some(kind::SETTINGS));
        assert_eq!(p[2].header, None, "incomplete frame");
    }

    #[test]
    fn headers_fragment_strips_padding_and_priority() {
        let fl = flags::PADDED | flags::PRIORITY;
        assert_eq!(
            headers_fragment(fl, &[2, 0, 0, 0, 0, 9, 7, 7, 0, 0]),
            Some(&[7, 7][..])
        );
        assert_eq!(headers_fragment(flags::PADDED, &[5, 1]), None);
    }
}
