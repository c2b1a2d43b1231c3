//! Native hot paths of slng-fast: audio conversion, chunk framing, client frame
//! classification and rate limiting. Everything here is plain Rust over bytes;
//! only `py/` (behind the `python` feature) knows about Python.

pub mod buf;
pub mod builder;
pub mod carry;
pub mod chunker;
pub mod codec;
pub mod error;
pub mod frames;
pub mod msgpack;
#[cfg(target_os = "linux")]
pub mod plane;
pub mod ratelimit;
pub mod relay;
pub mod resample;
pub mod scratch;
pub mod uplink;
pub mod ws;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
