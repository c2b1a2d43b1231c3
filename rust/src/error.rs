//! One error type for the whole native core. Each variant carries the numbers a
//! caller needs to fix the call; `py/mod.rs` maps them, in one place, to Python
//! exceptions.

use thiserror::Error;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum Error {
    // ---- arguments -----------------------------------------------------------------
    #[error("unsupported sample rate {rate} Hz; supported rates are {supported:?}")]
    UnsupportedRate {
        rate: u32,
        supported: &'static [u32],
    },

    #[error("unsupported sample format {name:?}; expected one of {expected:?}")]
    UnsupportedFormat {
        name: String,
        expected: &'static [&'static str],
    },

    #[error("audio of {len} bytes is not a whole number of {sample_width}-byte samples")]
    PartialSample { len: usize, sample_width: usize },

    #[error("max chunk of {max_bytes} bytes holds no whole {sample_width}-byte sample")]
    ChunkTooSmall {
        max_bytes: usize,
        sample_width: usize,
    },

    #[error("sample width must be 1, 2 or 4 bytes, got {sample_width}")]
    BadSampleWidth { sample_width: usize },

    #[error("{name} must be a finite number greater than zero, got {value}")]
    NotPositive { name: &'static str, value: f64 },

    #[error("{name} must be a finite number, got {value}")]
    NotFinite { name: &'static str, value: f64 },

    #[error("unknown endpoint {name:?}; expected one of {expected:?}")]
    UnknownEndpoint {
        name: String,
        expected: &'static [&'static str],
    },

    /// An argument refused by the binding layer; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),

    // ---- MessagePack (`crate::msgpack`); offsets are byte offsets into the input ----
    #[error("MessagePack data ends inside a value: {needed} more bytes needed at offset {offset}")]
    Truncated { offset: usize, needed: usize },

    #[error("{extra} bytes after the MessagePack value, from offset {offset}")]
    TrailingBytes { offset: usize, extra: usize },

    #[error("byte 0xc1 at offset {offset} is reserved in MessagePack and never valid")]
    ReservedMarker { offset: usize },

    #[error("MessagePack extension type {ext_type} at offset {offset} is not supported")]
    UnsupportedExtension { offset: usize, ext_type: i8 },

    #[error("MessagePack string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: usize },

    #[error("map key at offset {offset} is an array or a map; keys must be scalars")]
    UnhashableKey { offset: usize },

    #[error("MessagePack nested deeper than {max} arrays/maps at offset {offset}")]
    TooDeep { offset: usize, max: usize },

    #[error("empty input: no MessagePack value")]
    Empty,

    #[error("{what} of length {len} is too long for MessagePack (at most 2**32 - 1)")]
    TooLong { what: &'static str, len: usize },

    #[error("{0}")]
    Unencodable(String),

    // ---- WebSocket (`crate::ws`) ---------------------------------------------------
    /// Not an acceptable handshake request; answer with `status`
    /// (see `ws::reject_response`).
    #[error("bad request ({status}): {reason}")]
    BadHandshake { status: u16, reason: String },

    #[error("the close frame was already sent; nothing may follow it")]
    CloseSent,

    #[error("a control frame payload is at most 125 bytes, got {len}")]
    ControlTooLong { len: usize },

    #[error("close code {code} may not be sent")]
    BadCloseCode { code: u16 },
}
