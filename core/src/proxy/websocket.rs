//! The WebSocket part of a connection, after the 101 answer: a recording
//! session that forwards every frame unchanged and writes the conversation
//! down, and a replay session that plays a recorded conversation back.

use super::Output;
use crate::engine::{Fingerprint, MissReport};
use crate::store::{Conversation, Interaction, MessageKind, Peer, WsClose, WsMessage};
use crate::ws::{
    close_code, close_of, describe, encode_close, encode_frame, FrameDecoder, MaskSource,
    MessageAssembler, Opcode, WsError, WsLimits,
};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How recorded server messages are paced in replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplayTiming {
    /// Send each server message as soon as it is due by order alone.
    #[default]
    AsFastAsPossible,
    /// Keep the recorded delays between a client message (or the open) and
    /// the server messages that followed it.
    Recorded,
}

fn millis_since(start: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Bytes {
    let mut b = BytesMut::new();
    encode_close(code, reason, mask, &mut b);
    b.freeze()
}

/// What a session asks of its connection after a step.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing more can happen until more input arrives.
    Wait,
    /// The session is over; the connection closes (outputs already queued).
    Done,
}

/// Record mode: frames pass through unchanged in both directions while the
/// messages and the close are written down.
pub(super) struct RecordSession {
    pub(super) test_name: String,
    interaction: Option<Interaction>,
    started: Instant,
    from_client: FrameDecoder,
    from_server: FrameDecoder,
    client_messages: MessageAssembler,
    server_messages: MessageAssembler,
    conversation: Conversation,
    client_closed: bool,
    server_closed: bool,
    masks: MaskSource,
}

impl RecordSession {
    /// Starts recording after the 101 went to the client. `interaction`
    /// holds the handshake request and response.
    pub(super) fn new(
        test_name: String,
        interaction: Interaction,
        limits: WsLimits,
        masks: MaskSource,
        now: Instant,
    ) -> Self {
        RecordSession {
            test_name,
            interaction: Some(interaction),
            started: now,
            from_client: FrameDecoder::new(Peer::Client, limits),
            from_server: FrameDecoder::new(Peer::Server, limits),
            client_messages: MessageAssembler::new(limits.max_message_bytes),
            server_messages: MessageAssembler::new(limits.max_message_bytes),
            conversation: Conversation::default(),
            client_closed: false,
            server_closed: false,
            masks,
        }
    }

    /// Forwards and records every whole frame buffered from either side.
    pub(super) fn step(
        &mut self,
        now: Instant,
        client_in: &mut BytesMut,
        upstream_in: &mut BytesMut,
        out: &mut VecDeque<Output>,
    ) -> Step {
        loop {
            let mut progressed = false;
            match self.from_server.decode(upstream_in) {
                Ok(Some(frame)) => {
                    progressed = true;
                    out.push_back(Output::ToClient(frame.raw.clone()));
                    if let Err(e) = self.observe(Peer::Server, &frame, now) {
                        return self.broken(Peer::Server, &e, out);
                    }
                }
                Ok(None) => {}
                Err(e) => return self.broken(Peer::Server, &e, out),
            }
            match self.from_client.decode(client_in) {
                Ok(Some(frame)) => {
                    progressed = true;
                    out.push_back(Output::ToUpstream(frame.raw.clone()));
                    if let Err(e) = self.observe(Peer::Client, &frame, now) {
                        return self.broken(Peer::Client, &e, out);
                    }
                }
                Ok(None) => {}
                Err(e) => return self.broken(Peer::Client, &e, out),
            }
            if self.client_closed && self.server_closed {
                // Both close frames have crossed: the conversation is complete.
                self.finish(out);
                return Step::Done;
            }
            if !progressed {
                return Step::Wait;
            }
        }
    }

    fn observe(
        &mut self,
        from: Peer,
        frame: &crate::ws::Frame,
        now: Instant,
    ) -> Result<(), WsError> {
        let at_ms = millis_since(self.started, now);
        match frame.opcode {
            Opcode::Close => {
                if self.conversation.close.is_none() {
                    let (code, reason) = close_of(frame);
                    self.conversation.close = Some(WsClose {
                        from,
                        code,
                        reason,
                        at_ms,
                    });
                }
                match from {
                    Peer::Client => self.client_closed = true,
                    Peer::Server => self.server_closed = true,
                }
            }
            Opcode::Ping | Opcode::Pong => {}
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                let assembler = match from {
                    Peer::Client => &mut self.client_messages,
                    Peer::Server => &mut self.server_messages,
                };
                if let Some((kind, payload)) = assembler.push(frame)? {
                    self.conversation.messages.push(WsMessage {
                        from,
                        kind,
                        payload,
                        at_ms,
                    });
                }
            }
        }
        Ok(())
    }

    /// One side broke a rule: the client gets a close with the rule's code,
    /// the upstream a going-away close, and what was recorded is kept.
    fn broken(&mut self, by: Peer, e: &WsError, out: &mut VecDeque<Output>) -> Step {
        let reason = match by {
            Peer::Client => e.to_string(),
            Peer::Server => format!("upstream: {e}"),
        };
        out.push_back(Output::ToClient(close_frame(e.close_code(), &reason, None)));
        let mask = self.masks.next_mask();
        out.push_back(Output::ToUpstream(close_frame(
            close_code::GOING_AWAY,
            "ouli: the other side broke the protocol",
            Some(mask),
        )));
        out.push_back(Output::Event(super::ProxyEvent::ClientError {
            status: 0,
            reason: format!("websocket closed with {}: {reason}", e.close_code()),
        }));
        self.finish(out);
        Step::Done
    }

    /// Either side went away: store what was recorded.
    pub(super) fn finish(&mut self, out: &mut VecDeque<Output>) {
        let Some(mut interaction) = self.interaction.take() else {
            return;
        };
        interaction.websocket = Some(std::mem::take(&mut self.conversation));
        out.push_back(Output::ReleaseUpstream { reusable: false });
        out.push_back(Output::Event(super::ProxyEvent::Recorded {
            test_name: self.test_name.clone(),
            request_line: format!(
                "{} {} (websocket, {} messages)",
                String::from_utf8_lossy(&interaction.request.method),
                String::from_utf8_lossy(&interaction.request.target),
                interaction
                    .websocket
                    .as_ref()
                    .map_or(0, |c| c.messages.len())
            ),
            status: interaction.response.status,
        }));
        out.push_back(Output::Store {
            test_name: self.test_name.clone(),
            interaction: Box::new(interaction),
        });
    }
}

/// Replay mode: the recorded conversation is played back; each client
/// message must match the next recorded client message.
pub(super) struct ReplaySession {
    test_name: String,
    request_line: String,
    fingerprint: Fingerprint,
    interaction: Arc<Interaction>,
    next: usize,
    /// The moment and recorded time the pacing of server messages counts from.
    anchor: (Instant, u64),
    timing: ReplayTiming,
    from_client: FrameDecoder,
    client_messages: MessageAssembler,
    close_sent: bool,
}

impl ReplaySession {
    /// Starts playing `interaction` (which has a conversation) at `now`.
    pub(super) fn new(
        test_name: String,
        request_line: String,
        fingerprint: Fingerprint,
        interaction: Arc<Interaction>,
        limits: WsLimits,
        timing: ReplayTiming,
        now: Instant,
    ) -> Self {
        ReplaySession {
            test_name,
            request_line,
            fingerprint,
            interaction,
            next: 0,
            anchor: (now, 0),
            timing,
            from_client: FrameDecoder::new(Peer::Client, limits),
            client_messages: MessageAssembler::new(limits.max_message_bytes),
            close_sent: false,
        }
    }

    fn conversation(&self) -> &Conversation {
        static EMPTY: Conversation = Conversation {
            messages: Vec::new(),
            close: None,
        };
        self.interaction.websocket.as_ref().unwrap_or(&EMPTY)
    }

    /// Sends the server messages that are due; returns when the next one is
    /// due if it is not yet.
    fn release(
        &mut self,
        now: Instant,
        force: bool,
        out: &mut VecDeque<Output>,
    ) -> Option<Instant> {
        let interaction = Arc::clone(&self.interaction);
        let conversation = interaction.websocket.as_ref()?;
        while let Some(msg) = conversation.messages.get(self.next) {
            if msg.from != Peer::Server {
                return None;
            }
            if let Some(due) = self.due(msg.at_ms) {
                if due > now && !force {
                    return Some(due);
                }
            }
            let opcode = match msg.kind {
                MessageKind::Text => Opcode::Text,
                MessageKind::Binary => Opcode::Binary,
            };
            let mut b = BytesMut::with_capacity(msg.payload.len() + 10);
            encode_frame(opcode, true, &msg.payload, None, &mut b);
            out.push_back(Output::ToClient(b.freeze()));
            self.next += 1;
        }
        // The script is played out: a server-initiated close follows.
        if let Some(close) = &conversation.close {
            if close.from == Peer::Server && !self.close_sent {
                if let Some(due) = self.due(close.at_ms) {
                    if due > now && !force {
                        return Some(due);
                    }
                }
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                let payload = match close.code {
                    Some(code) => close_frame(code, &reason, None),
                    None => {
                        let mut b = BytesMut::new();
                        encode_frame(Opcode::Close, true, &[], None, &mut b);
                        b.freeze()
                    }
                };
                out.push_back(Output::ToClient(payload));
                self.close_sent = true;
            }
        }
        None
    }

    fn due(&self, at_ms: u64) -> Option<Instant> {
        match self.timing {
            ReplayTiming::AsFastAsPossible => None,
            ReplayTiming::Recorded => {
                Some(self.anchor.0 + Duration::from_millis(at_ms.saturating_sub(self.anchor.1)))
            }
        }
    }

    /// Plays what is due and handles buffered client frames. Returns the
    /// step and the next pacing deadline, if any.
    pub(super) fn step(
        &mut self,
        now: Instant,
        client_in: &mut BytesMut,
        out: &mut VecDeque<Output>,
    ) -> (Step, Option<Instant>) {
        let mut deadline = self.release(now, false, out);
        loop {
            let frame = match self.from_client.decode(client_in) {
                Ok(Some(f)) => f,
                Ok(None) => return (Step::Wait, deadline),
                Err(e) => {
                    out.push_back(Output::ToClient(close_frame(
                        e.close_code(),
                        &e.to_string(),
                        None,
                    )));
                    out.push_back(Output::Event(super::ProxyEvent::ClientError {
                        status: 0,
                        reason: format!("websocket closed with {}: {e}", e.close_code()),
                    }));
                    return (Step::Done, None);
                }
            };
            match frame.opcode {
                Opcode::Ping => {
                    let mut b = BytesMut::new();
                    encode_frame(Opcode::Pong, true, &frame.payload, None, &mut b);
                    out.push_back(Output::ToClient(b.freeze()));
                }
                Opcode::Pong => {}
                Opcode::Close => {
                    if !self.close_sent {
                        // Echo the client's close (RFC 6455 §5.5.1).
                        let (code, reason) = close_of(&frame);
                        let echo = match code {
                            Some(c) => close_frame(c, &String::from_utf8_lossy(&reason), None),
                            None => close_frame(close_code::NORMAL, "", None),
                        };
                        out.push_back(Output::ToClient(echo));
                    }
                    return (Step::Done, None);
                }
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    match self.client_messages.push(&frame) {
                        Err(e) => {
                            out.push_back(Output::ToClient(close_frame(
                                e.close_code(),
                                &e.to_string(),
                                None,
                            )));
                            return (Step::Done, None);
                        }
                        Ok(None) => {}
                        Ok(Some((kind, payload))) => {
                            // Server messages still waiting on their recorded delay go first:
                            // the client has moved on.
                            self.release(now, true, out);
                            if let Some(step) = self.match_client_message(now, kind, &payload, out)
                            {
                                return (step, None);
                            }
                            deadline = self.release(now, false, out);
                        }
                    }
                }
            }
        }
    }

    /// Checks a client message against the script. `Some(Done)` on a mismatch.
    fn match_client_message(
        &mut self,
        now: Instant,
        kind: MessageKind,
        payload: &Bytes,
        out: &mut VecDeque<Output>,
    ) -> Option<Step> {
        let expected = self.conversation().messages.get(self.next).cloned();
        match expected {
            Some(m) if m.from == Peer::Client && m.kind == kind && m.payload == *payload => {
                self.next += 1;
                self.anchor = (now, m.at_ms);
                None
            }
            other => {
                let expected_text = match &other {
                    Some(m) => describe(m.kind, &m.payload, 40),
                    None => "no more client messages".to_owned(),
                };
                let reason = format!(
                    "expected {expected_text}, got {}",
                    describe(kind, payload, 40)
                );
                out.push_back(Output::ToClient(close_frame(
                    close_code::POLICY_VIOLATION,
                    &reason,
                    None,
                )));
                out.push_back(Output::Event(super::ProxyEvent::Missed(Box::new(
                    MissReport {
                        test_name: self.test_name.clone(),
                        fingerprint: self.fingerprint,
                        request_line: format!(
                            "{} (websocket message {})",
                            self.request_line, self.next
                        ),
                        reason: format!("websocket message does not match the recording: {reason}"),
                        candidates: Vec::new(),
                    },
                ))));
                self.close_sent = true;
                Some(Step::Done)
            }
        }
    }
}
