//! WebSocket framing of an established connection: masking, reassembly of
//! fragmented messages, UTF-8 checks, limits and the close handshake.
//!
//! Rules enforced on what the peer sends, each ending the connection with a
//! [`Event::ProtocolError`] carrying the close code to send:
//! - 1002: reserved bits set (no extension is ever negotiated), a reserved opcode,
//!   an unmasked frame from a client (or a masked one from a server), a fragmented
//!   or over-125-byte control frame, a continuation without a message or a new
//!   message inside a fragmented one, a close payload of one byte or a close code
//!   that may not be sent;
//! - 1007: a text message (checked as each fragment arrives) or a close reason that
//!   is not UTF-8, unless `lenient_text` is set, where a complete text message
//!   that is not UTF-8 is handed on as [`Event::InvalidText`] with its bytes;
//! - 1009: a message longer than `max_message_bytes`, refused as soon as a frame
//!   header says so (nothing of it is buffered).

use std::collections::VecDeque;
use std::io::Cursor;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::{Error, Result};

/// The longest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// XOR `buf` with the 4-byte `mask`, starting at mask byte 0.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so mask byte 0 again.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// One frame: header (tungstenite's format) then the payload, masked with `mask`
/// if given. Any opcode 0..=15 and flags are allowed: tests build bad frames too.
pub fn encode_frame(opcode: u8, payload: &[u8], fin: bool, mask: Option<[u8; 4]>) -> Vec<u8> {
    encode_frame_rsv(opcode, payload, fin, mask, false)
}

fn encode_frame_rsv(
    opcode: u8,
    payload: &[u8],
    fin: bool,
    mask: Option<[u8; 4]>,
    rsv1: bool,
) -> Vec<u8> {
    let header = FrameHeader {
        is_final: fin,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::from(opcode & 0x0F),
        mask,
    };
    let len = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + payload.len());
    header
        .format(len, &mut out)
        .expect("writing to a Vec cannot fail");
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask);
    }
    out
}

/// What the peer sent, one complete thing at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    /// A complete text message that is not UTF-8 (only with `lenient_text`).
    InvalidText(Vec<u8>),
    /// Answer with [`WsConnection::send_pong`] of the same payload.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer's close frame; `code` 1005 if it had no code. Nothing the peer
    /// sends after it is read. Answer with [`WsConnection::send_close`] (which
    /// returns nothing if the close frame was already sent), then close the stream.
    Close {
        code: u16,
        reason: String,
    },
    /// The peer broke the protocol: send a close frame with `close_code`, then close
    /// the stream. Nothing more is read.
    ProtocolError {
        close_code: u16,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Open,
    /// The peer's close frame was read.
    CloseReceived,
    /// A protocol error was reported.
    Failed,
}

#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
    /// `data[..checked]` is known to be UTF-8 up to a character boundary.
    checked: usize,
}

/// Input buffer capacity that may stay reserved for the end of a frame still to come
/// (`WsConnection::wait_for_more`).
pub const KEEP_CAPACITY: usize = 16 * 1024;

/// One WebSocket connection, server side (or client side with [`WsConnection::new_client`]).
#[derive(Debug)]
pub struct WsConnection {
    client: bool,
    lenient_text: bool,
    max_message: usize,
    buf: Vec<u8>,
    start: usize,
    message: Option<Partial>,
    state: ReadState,
    close_sent: bool,
    pending: VecDeque<Event>,
}

impl WsConnection {
    /// A server's connection: client frames must be masked; ours are not.
    pub fn new(max_message_bytes: usize) -> Self {
        WsConnection {
            client: false,
            lenient_text: false,
            max_message: max_message_bytes,
            buf: Vec::new(),
            start: 0,
            message: None,
            state: ReadState::Open,
            close_sent: false,
            pending: VecDeque::new(),
        }
    }

    /// A client's connection: our frames are masked with random masks; the
    /// server's must not be.
    pub fn new_client(max_message_bytes: usize) -> Self {
        WsConnection {
            client: true,
            ..Self::new(max_message_bytes)
        }
    }

    /// Hand invalid UTF-8 text messages on as [`Event::InvalidText`] instead of
    /// failing with 1007.
    pub fn set_lenient_text(&mut self, lenient: bool) {
        self.lenient_text = lenient;
    }

    pub fn is_client(&self) -> bool {
        self.client
    }

    pub fn lenient_text(&self) -> bool {
        self.lenient_text
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message
    }

    /// Our close frame has been produced by `send_close`.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// The peer's close frame has been read.
    pub fn close_received(&self) -> bool {
        self.state == ReadState::CloseReceived
    }

    /// A protocol error was reported.
    pub fn failed(&self) -> bool {
        self.state == ReadState::Failed
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Take bytes read from the peer. Once the peer's close frame was read, or a
    /// protocol error reported, input is ignored.
    pub fn receive_data(&mut self, data: &[u8]) {
        if self.state != ReadState::Open || data.is_empty() {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete event, or `None` until more data is received.
    pub fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        while self.state == ReadState::Open {
            let avail = &self.buf[self.start..];
            let available = avail.len();
            if available < 2 {
                return self.wait_for_more();
            }
            let mut cursor = Cursor::new(avail);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return self.wait_for_more(),
                Err(err) => return Some(self.fail(1002, format!("{err}"))),
            };
            let header_len = cursor.position() as usize;
            if let Some(event) = self.check_header(&header, len) {
                return Some(event);
            }
            let len = len as usize; // checked: at most max_message or 125
            if available - header_len < len {
                return self.wait_for_more();
            }
            let from = self.start + header_len;
            let mut payload = self.buf[from..from + len].to_vec();
            self.start = from + len;
            if let Some(mask) = header.mask {
                apply_mask(&mut payload, mask);
            }
            if let Some(event) = self.on_frame(header.opcode, header.is_final, payload) {
                return Some(event);
            }
        }
        None
    }

    /// Every complete frame is taken: what the buffer still holds is the start of the
    /// next. A connection waits between reads for most of its life, so it keeps no
    /// read's worth of memory then (issue 12 point 3): an emptied buffer is freed (the
    /// next read allocates one, as large as it is), a large one holding a little is
    /// cut down to that.
    fn wait_for_more(&mut self) -> Option<Event> {
        let held = self.buf.len() - self.start;
        if held == 0 {
            if self.buf.capacity() > 0 {
                self.buf = Vec::new();
                self.start = 0;
            }
        } else if self.buf.capacity() > KEEP_CAPACITY && held * 4 < self.buf.capacity() {
            self.buf.drain(..self.start);
            self.buf.shrink_to_fit();
            self.start = 0;
        }
        None
    }

    /// Put `event` back in front of the events still to come: a reader that took
    /// it (`crate::relay`) leaves it, in order, for the next `next_event`.
    pub fn put_back(&mut self, event: Event) {
        self.pending.push_front(event);
    }

    /// Every event that the data received so far completes.
    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.next_event()).collect()
    }

    fn fail(&mut self, close_code: u16, reason: impl Into<String>) -> Event {
        self.state = ReadState::Failed;
        self.message = None;
        self.buf = Vec::new();
        self.start = 0;
        Event::ProtocolError {
            close_code,
            reason: reason.into(),
        }
    }

    /// What can be refused from the header alone, before the payload arrives.
    fn check_header(&mut self, header: &FrameHeader, len: u64) -> Option<Event> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Some(self.fail(1002, "reserved bits set without a negotiated extension"));
        }
        match (self.client, header.mask.is_some()) {
            (false, false) => return Some(self.fail(1002, "client frames must be masked")),
            (true, true) => return Some(self.fail(1002, "server frames must not be masked")),
            _ => {}
        }
        match header.opcode {
            OpCode::Control(_) => {
                if !header.is_final {
                    return Some(self.fail(1002, "fragmented control frame"));
                }
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Some(self.fail(1002, "control frame payload longer than 125 bytes"));
                }
            }
            OpCode::Data(Data::Continue) => {
                let Some(partial) = &self.message else {
                    return Some(
                        self.fail(1002, "continuation frame without a message to continue"),
                    );
                };
                if len > (self.max_message - partial.data.len()) as u64 {
                    let max = self.max_message;
                    return Some(self.fail(1009, format!("message longer than {max} bytes")));
                }
            }
            OpCode::Data(_) => {
                if self.message.is_some() {
                    return Some(self.fail(1002, "new data frame inside a fragmented message"));
                }
                if len > self.max_message as u64 {
                    let max = self.max_message;
                    return Some(self.fail(1009, format!("message longer than {max} bytes")));
                }
            }
        }
        None
    }

    fn on_frame(&mut self, opcode: OpCode, fin: bool, payload: Vec<u8>) -> Option<Event> {
        match opcode {
            OpCode::Control(Control::Ping) => Some(Event::Ping(payload)),
            OpCode::Control(Control::Pong) => Some(Event::Pong(payload)),
            OpCode::Control(Control::Close) => Some(self.on_close(payload)),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Some(self.fail(1002, "reserved opcode"))
            }
            OpCode::Data(Data::Continue) => {
                let lenient = self.lenient_text;
                let partial = self.message.as_mut().expect("checked in check_header");
                partial.data.extend_from_slice(&payload);
                if partial.text && !lenient && !check_utf8_prefix(partial, fin) {
                    return Some(self.fail(1007, "text message is not valid UTF-8"));
                }
                if fin {
                    let partial = self.message.take().expect("present");
                    self.finish(partial.text, partial.data)
                } else {
                    None
                }
            }
            OpCode::Data(data) => {
                let text = data == Data::Text;
                if fin {
                    return self.finish(text, payload);
                }
                let mut partial = Partial {
                    text,
                    data: payload,
                    checked: 0,
                };
                if text && !self.lenient_text && !check_utf8_prefix(&mut partial, false) {
                    return Some(self.fail(1007, "text message is not valid UTF-8"));
                }
                self.message = Some(partial);
                None
            }
        }
    }

    fn finish(&mut self, text: bool, data: Vec<u8>) -> Option<Event> {
        if !text {
            return Some(Event::Binary(data));
        }
        match String::from_utf8(data) {
            Ok(s) => Some(Event::Text(s)),
            Err(err) if self.lenient_text => Some(Event::InvalidText(err.into_bytes())),
            Err(_) => Some(self.fail(1007, "text message is not valid UTF-8")),
        }
    }

    fn on_close(&mut self, payload: Vec<u8>) -> Event {
        let (code, reason) = match payload.len() {
            0 => (1005, String::new()),
            1 => return self.fail(1002, "close frame payload of one byte"),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !CloseCode::from(code).is_allowed() {
                    return self.fail(1002, format!("close code {code} may not be sent"));
                }
                match std::str::from_utf8(&payload[2..]) {
                    Ok(reason) => (code, reason.to_owned()),
                    Err(_) => return self.fail(1007, "close reason is not valid UTF-8"),
                }
            }
        };
        self.state = ReadState::CloseReceived;
        self.message = None;
        self.buf = Vec::new();
        self.start = 0;
        Event::Close { code, reason }
    }

    // ---- sending ----

    fn frame(&self, opcode: u8, payload: &[u8]) -> Result<Vec<u8>> {
        if self.close_sent {
            return Err(Error::CloseSent);
        }
        let mask = if self.client {
            Some(rand::random::<[u8; 4]>())
        } else {
            None
        };
        Ok(encode_frame(opcode, payload, true, mask))
    }

    pub fn send_text(&mut self, text: &str) -> Result<Vec<u8>> {
        self.frame(0x1, text.as_bytes())
    }

    /// A text frame from bytes the caller knows to be UTF-8 (our own JSON), unchecked.
    pub(crate) fn send_text_trusted(&mut self, utf8: &[u8]) -> Result<Vec<u8>> {
        self.frame(0x1, utf8)
    }

    pub fn send_binary(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.frame(0x2, data)
    }

    pub fn send_ping(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::ControlTooLong { len: payload.len() });
        }
        self.frame(0x9, payload)
    }

    pub fn send_pong(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::ControlTooLong { len: payload.len() });
        }
        self.frame(0xA, payload)
    }

    /// Our close frame: `code` `None` (or 1005) for one without a code (and reason).
    /// The reason is cut to fit 123 bytes at a character boundary. Once the close
    /// frame was produced, this returns an empty `Vec` (the handshake sends one
    /// close frame per side); nothing else may be sent after it.
    pub fn send_close(&mut self, code: Option<u16>, reason: &str) -> Result<Vec<u8>> {
        if self.close_sent {
            return Ok(Vec::new());
        }
        let payload = match code {
            None | Some(1005) => Vec::new(),
            Some(code) => {
                if !CloseCode::from(code).is_allowed() {
                    return Err(Error::BadCloseCode { code });
                }
                let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                let mut payload = Vec::with_capacity(2 + cut);
                payload.extend_from_slice(&code.to_be_bytes());
                payload.extend_from_slice(&reason.as_bytes()[..cut]);
                payload
            }
        };
        let bytes = self.frame(0x8, &payload)?;
        self.close_sent = true;
        Ok(bytes)
    }
}

/// Check the unchecked tail of a fragmented text message; an incomplete character
/// at the end is fine unless this is the last fragment.
fn check_utf8_prefix(partial: &mut Partial, fin: bool) -> bool {
    match std::str::from_utf8(&partial.data[partial.checked..]) {
        Ok(_) => {
            partial.checked = partial.data.len();
            true
        }
        Err(err) if err.error_len().is_none() && !fin => {
            partial.checked += err.valid_up_to();
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::ServerHandshake;
    use proptest::prelude::*;

    const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    fn server() -> WsConnection {
        WsConnection::new(1 << 20)
    }

    fn feed(conn: &mut WsConnection, data: &[u8]) -> Vec<Event> {
        conn.receive_data(data);
        conn.events()
    }

    fn error_code(events: &[Event]) -> Option<u16> {
        events.iter().find_map(|e| match e {
            Event::ProtocolError { close_code, .. } => Some(*close_code),
            _ => None,
        })
    }

    #[test]
    fn masking_round_trips() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut masked = data.clone();
            apply_mask(&mut masked, [1, 2, 3, 4]);
            for (i, (&m, &d)) in masked.iter().zip(&data).enumerate() {
                assert_eq!(m, d ^ [1, 2, 3, 4][i % 4]);
            }
            apply_mask(&mut masked, [1, 2, 3, 4]);
            assert_eq!(masked, data);
        }
    }

    #[test]
    fn a_large_read_is_not_kept_reserved() {
        let mut conn = server();
        let big = encode_frame(2, &vec![7; 70000], true, MASK);
        assert_eq!(feed(&mut conn, &big), [Event::Binary(vec![7; 70000])]);
        assert_eq!(conn.buf.capacity(), 0);
        let small = encode_frame(2, &[1, 2, 3], true, MASK);
        assert_eq!(feed(&mut conn, &small), [Event::Binary(vec![1, 2, 3])]);
        assert_eq!(feed(&mut conn, &small), [Event::Binary(vec![1, 2, 3])]);
    }

    #[test]
    fn between_reads_only_a_frame_still_to_come_is_held() {
        let mut conn = server();
        let mut data = encode_frame(2, &vec![7; 70000], true, MASK);
        let next = encode_frame(2, &[1, 2, 3, 4, 5], true, MASK);
        data.extend_from_slice(&next[..4]);
        assert_eq!(feed(&mut conn, &data), [Event::Binary(vec![7; 70000])]);
        assert!(conn.buf.capacity() <= KEEP_CAPACITY);
        assert_eq!(conn.buffered(), 4);
        assert_eq!(
            feed(&mut conn, &next[4..]),
            [Event::Binary(vec![1, 2, 3, 4, 5])]
        );
        assert_eq!(conn.buf.capacity(), 0);
    }

    #[test]
    fn text_binary_ping_pong() {
        let mut conn = server();
        let mut data = encode_frame(1, "héllo".as_bytes(), true, MASK);
        data.extend(encode_frame(2, &[0, 1, 2], true, MASK));
        data.extend(encode_frame(9, b"p", true, MASK));
        data.extend(encode_frame(10, b"q", true, MASK));
        data.extend(encode_frame(2, &vec![7; 70000], true, MASK));
        assert_eq!(
            feed(&mut conn, &data),
            [
                Event::Text("héllo".into()),
                Event::Binary(vec![0, 1, 2]),
                Event::Ping(b"p".to_vec()),
                Event::Pong(b"q".to_vec()),
                Event::Binary(vec![7; 70000]),
            ]
        );
        assert_eq!(conn.buffered(), 0);
    }

    #[test]
    fn fragments_with_interleaved_control_frames() {
        let mut conn = server();
        let text = "zürich €";
        let bytes = text.as_bytes();
        let mut data = encode_frame(1, &bytes[..2], false, MASK); // cuts inside "ü"
        data.extend(encode_frame(9, b"1", true, MASK));
        data.extend(encode_frame(0, &bytes[2..9], false, MASK)); // cuts inside "€"
        data.extend(encode_frame(10, b"", true, MASK));
        data.extend(encode_frame(0, &bytes[9..], true, MASK));
        assert_eq!(
            feed(&mut conn, &data),
            [
                Event::Ping(b"1".to_vec()),
                Event::Pong(vec![]),
                Event::Text(text.into())
            ]
        );
    }

    #[test]
    fn unmasked_client_frame_is_1002() {
        let mut conn = server();
        assert_eq!(
            error_code(&feed(&mut conn, &encode_frame(1, b"x", true, None))),
            Some(1002)
        );
        assert!(conn.failed());
        assert_eq!(feed(&mut conn, &encode_frame(1, b"x", true, MASK)), []);
    }

    #[test]
    fn protocol_errors() {
        let cases: Vec<Vec<u8>> = vec![
            encode_frame(3, b"", true, MASK),       // reserved data opcode
            encode_frame(11, b"", true, MASK),      // reserved control opcode
            encode_frame(0, b"x", true, MASK),      // continuation first
            encode_frame(9, b"x", false, MASK),     // fragmented ping
            encode_frame(9, &[0; 126], true, MASK), // long ping
            encode_frame(8, &[3], true, MASK),      // 1-byte close
            encode_frame(8, &1005u16.to_be_bytes(), true, MASK), // forbidden code
            encode_frame(8, &999u16.to_be_bytes(), true, MASK),
            encode_frame(8, &1016u16.to_be_bytes(), true, MASK),
            encode_frame_rsv(1, b"x", true, MASK, true), // rsv1
            [
                encode_frame(1, b"a", false, MASK),
                encode_frame(1, b"b", true, MASK),
            ]
            .concat(),
        ];
        for case in cases {
            let mut conn = server();
            assert_eq!(error_code(&feed(&mut conn, &case)), Some(1002), "{case:?}");
        }
    }

    #[test]
    fn invalid_utf8() {
        let mut conn = server();
        assert_eq!(
            error_code(&feed(&mut conn, &encode_frame(1, b"a\xff", true, MASK))),
            Some(1007)
        );
        // A fragment that can never become UTF-8 fails before the message ends.
        let mut conn = server();
        assert_eq!(
            error_code(&feed(&mut conn, &encode_frame(1, b"\xc3\x28", false, MASK))),
            Some(1007)
        );
        // A character cut at the end of the last fragment.
        let mut conn = server();
        let data = [
            encode_frame(1, b"a", false, MASK),
            encode_frame(0, b"\xe2\x82", true, MASK),
        ]
        .concat();
        assert_eq!(error_code(&feed(&mut conn, &data)), Some(1007));
        // Close reason.
        let mut conn = server();
        assert_eq!(
            error_code(&feed(
                &mut conn,
                &encode_frame(8, b"\x03\xe8\xff", true, MASK)
            )),
            Some(1007)
        );
        // Lenient: the bytes are handed on, and the connection goes on.
        let mut conn = server();
        conn.set_lenient_text(true);
        let data = [
            encode_frame(1, b"a\xc3", false, MASK),
            encode_frame(0, b"\x28", true, MASK),
            encode_frame(1, b"ok", true, MASK),
        ]
        .concat();
        assert_eq!(
            feed(&mut conn, &data),
            [
                Event::InvalidText(b"a\xc3\x28".to_vec()),
                Event::Text("ok".into())
            ]
        );
    }

    #[test]
    fn size_limit_is_1009_before_the_payload() {
        let mut conn = WsConnection::new(10);
        let frame = encode_frame(2, &[0; 11], true, MASK);
        assert_eq!(error_code(&feed(&mut conn, &frame[..8])), Some(1009));
        let mut conn = WsConnection::new(10);
        let data = [
            encode_frame(2, &[0; 6], false, MASK),
            encode_frame(0, &[0; 5], true, MASK),
        ]
        .concat();
        assert_eq!(error_code(&feed(&mut conn, &data)), Some(1009));
        let mut conn = WsConnection::new(10);
        let data = [
            encode_frame(2, &[0; 6], false, MASK),
            encode_frame(0, &[0; 4], true, MASK),
        ]
        .concat();
        assert_eq!(feed(&mut conn, &data), [Event::Binary(vec![0; 10])]);
        // A 64-bit length with the top bit set.
        let mut conn = WsConnection::new(10);
        let mut frame = vec![0x82, 0xff];
        frame.extend_from_slice(&u64::MAX.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(error_code(&feed(&mut conn, &frame)), Some(1009));
    }

    #[test]
    fn close_handshake_peer_first() {
        let mut conn = server();
        let mut close = vec![0x03, 0xe8];
        close.extend_from_slice(b"bye");
        let data = [
            encode_frame(8, &close, true, MASK),
            encode_frame(1, b"late", true, MASK),
        ]
        .concat();
        assert_eq!(
            feed(&mut conn, &data),
            [Event::Close {
                code: 1000,
                reason: "bye".into()
            }]
        );
        assert!(conn.close_received());
        assert_eq!(feed(&mut conn, &encode_frame(1, b"x", true, MASK)), []);
        let reply = conn.send_close(Some(1000), "bye").unwrap();
        assert_eq!(reply, encode_frame(8, &close, true, None));
        assert_eq!(conn.send_close(Some(1000), "").unwrap(), Vec::<u8>::new());
        assert_eq!(conn.send_text("x"), Err(Error::CloseSent));
        // A close without a code is reported as 1005 and answered without one.
        let mut conn = server();
        assert_eq!(
            feed(&mut conn, &encode_frame(8, b"", true, MASK)),
            [Event::Close {
                code: 1005,
                reason: "".into()
            }]
        );
        assert_eq!(conn.send_close(Some(1005), "").unwrap(), [0x88, 0x00]);
    }

    #[test]
    fn close_handshake_we_first() {
        let mut conn = server();
        let ours = conn.send_close(Some(4001), &"é".repeat(100)).unwrap();
        assert_eq!(ours.len(), 2 + 2 + 122); // 123 bytes would cut an "é"
        assert_eq!(conn.send_ping(b""), Err(Error::CloseSent));
        // The peer's messages before its close frame are still read.
        let data = [
            encode_frame(2, b"x", true, MASK),
            encode_frame(8, &4001u16.to_be_bytes(), true, MASK),
        ]
        .concat();
        assert_eq!(
            feed(&mut conn, &data),
            [
                Event::Binary(b"x".to_vec()),
                Event::Close {
                    code: 4001,
                    reason: "".into()
                }
            ]
        );
        assert!(server().send_close(Some(1006), "").is_err());
        assert_eq!(
            server().send_ping(&[0; 126]),
            Err(Error::ControlTooLong { len: 126 })
        );
    }

    #[test]
    fn server_frames_are_unmasked_client_frames_masked() {
        let mut conn = server();
        assert_eq!(conn.send_text("hi").unwrap(), b"\x81\x02hi");
        assert_eq!(
            conn.send_binary(&[0; 200]).unwrap()[..4],
            [0x82, 126, 0, 200]
        );
        let mut client = WsConnection::new_client(100);
        let frame = client.send_text("hello").unwrap();
        assert_eq!(frame[1], 0x80 | 5);
        let mut srv = server();
        assert_eq!(feed(&mut srv, &frame), [Event::Text("hello".into())]);
        // A client refuses masked frames and reads unmasked ones.
        assert_eq!(feed(&mut client, b"\x81\x02hi"), [Event::Text("hi".into())]);
        assert_eq!(
            error_code(&feed(&mut client, &encode_frame(1, b"x", true, MASK))),
            Some(1002)
        );
    }

    #[derive(Debug, Clone)]
    enum Msg {
        Text(String, Vec<usize>),
        Binary(Vec<u8>, Vec<usize>),
        Ping(Vec<u8>),
    }

    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            (any::<String>(), prop::collection::vec(0usize..64, 0..4))
                .prop_map(|(s, c)| Msg::Text(s, c)),
            (
                prop::collection::vec(any::<u8>(), 0..300),
                prop::collection::vec(0usize..300, 0..4)
            )
                .prop_map(|(b, c)| Msg::Binary(b, c)),
            prop::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
        ]
    }

    /// The frames of `msg` (fragmented at `cuts`, a ping after each fragment) and
    /// the events they must give.
    fn encode(msg: &Msg, mask: [u8; 4], out: &mut Vec<u8>, expected: &mut Vec<Event>) {
        let (opcode, data, cuts) = match msg {
            Msg::Ping(p) => {
                out.extend(encode_frame(9, p, true, Some(mask)));
                expected.push(Event::Ping(p.clone()));
                return;
            }
            Msg::Text(s, cuts) => (1, s.as_bytes(), cuts),
            Msg::Binary(b, cuts) => (2, b.as_slice(), cuts),
        };
        let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
        points.sort_unstable();
        points.push(data.len());
        let mut from = 0;
        for (i, &to) in points.iter().enumerate() {
            let last = i + 1 == points.len();
            out.extend(encode_frame(
                if i == 0 { opcode } else { 0 },
                &data[from..to],
                last,
                Some(mask),
            ));
            if !last {
                out.extend(encode_frame(10, &[i as u8], true, Some(mask)));
                expected.push(Event::Pong(vec![i as u8]));
            }
            from = to;
        }
        expected.push(match msg {
            Msg::Text(s, _) => Event::Text(s.clone()),
            Msg::Binary(b, _) => Event::Binary(b.clone()),
            Msg::Ping(_) => unreachable!(),
        });
    }

    fn feed_in_chunks(conn: &mut WsConnection, data: &[u8], sizes: &[usize]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut rest = data;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            conn.receive_data(&rest[..n]);
            events.extend(conn.events());
            rest = &rest[n..];
        }
        events
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            msgs in prop::collection::vec(msg(), 0..8),
            mask in any::<[u8; 4]>(),
            sizes in prop::collection::vec(1usize..200, 1..10),
        ) {
            let mut data = Vec::new();
            let mut expected = Vec::new();
            for m in &msgs {
                encode(m, mask, &mut data, &mut expected);
            }
            let mut whole = server();
            prop_assert_eq!(&feed(&mut whole, &data), &expected);
            let mut split = server();
            prop_assert_eq!(&feed_in_chunks(&mut split, &data, &sizes), &expected);
            prop_assert_eq!(split.buffered(), 0);
        }

        #[test]
        fn garbage_never_panics_and_splits_agree(
            data in prop::collection::vec(any::<u8>(), 0..600),
            sizes in prop::collection::vec(1usize..50, 1..10),
            lenient in any::<bool>(),
            client in any::<bool>(),
        ) {
            let make = || {
                let mut c = if client { WsConnection::new_client(256) } else { WsConnection::new(256) };
                c.set_lenient_text(lenient);
                c
            };
            let mut whole = make();
            let mut split = make();
            prop_assert_eq!(feed(&mut whole, &data), feed_in_chunks(&mut split, &data, &sizes));
            let _ = ServerHandshake::parse(&data);
        }
    }
}
