//! One error type for the whole native core. Each variant carries the numbers a
//! caller needs to fix the call; `py.rs` maps them once to Python exceptions.

use thiserror::Error;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum Error {
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
}
