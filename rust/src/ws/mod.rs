//! A sans-I/O WebSocket endpoint (RFC 6455): bytes in, events out; messages in,
//! bytes out. Nothing here reads or writes a socket: the caller (the trio transport
//! in `python/slng_fast/gateway/native_transport.py`) parses the opening request
//! with [`handshake`] and answers it, then feeds what it reads to
//! [`WsConnection::receive_data`] ([`framing`]), takes the events with
//! [`WsConnection::next_event`] and writes the bytes that the `send_*` methods
//! return.
//!
//! The frame header codec and the opcode/close-code tables are tungstenite's
//! (`FrameHeader::parse`/`format`, `OpCode`, `CloseCode`); the handshake request is
//! parsed by httparse. Everything else (masking, reassembly, UTF-8, limits and the
//! close handshake) is here.

pub mod framing;
pub mod handshake;

pub use framing::{apply_mask, encode_frame, Event, WsConnection, MAX_CONTROL_PAYLOAD};
pub use handshake::{
    accept_key, accept_response, reason_phrase, reject_response, Request, ServerHandshake,
    MAX_HANDSHAKE_BYTES, MAX_HEADERS, WS_GUID,
};
