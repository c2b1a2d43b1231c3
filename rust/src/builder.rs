//! The one interface through which the native parsers hand over what they read:
//! the JSON parser of `crate::frames` and the MessagePack decoder of
//! `crate::msgpack` call a [`Builder`] for every value, innermost first, and build
//! no tree of their own. The Python layer builds Python objects directly (one
//! builder for both formats); Rust tests build plain values.
//!
//! A few methods belong to one format only: [`Builder::big_int`] and
//! [`Builder::key`] are called by the JSON parser, [`Builder::binary`],
//! [`Builder::f32`] and [`Builder::value_key`] by the MessagePack decoder.

/// Receives the values of a document as a parser meets them, innermost first.
/// Errors stop the parse and come back to the caller as they are.
pub trait Builder {
    type Value;
    /// A map key. JSON makes it from the key text before the value is parsed (so
    /// the parser can reuse its buffer for unescaping); MessagePack from a value.
    type Key;
    type Array;
    type Map;
    type Error;

    fn null(&mut self) -> Result<Self::Value, Self::Error>;
    fn boolean(&mut self, value: bool) -> Result<Self::Value, Self::Error>;
    fn int(&mut self, value: i64) -> Result<Self::Value, Self::Error>;
    /// Only for integers above `i64::MAX` that fit a `u64` (MessagePack also
    /// sends its unsigned encodings of smaller numbers here).
    fn uint(&mut self, value: u64) -> Result<Self::Value, Self::Error>;
    /// JSON only: an integer beyond `i64`/`u64`, as its literal: an optional `-`
    /// then at most `frames::MAX_INT_DIGITS` decimal digits without leading zeros.
    fn big_int(&mut self, literal: &str) -> Result<Self::Value, Self::Error>;
    /// MessagePack only: a float32; widened to [`Builder::f64`] unless the builder
    /// keeps the width.
    fn f32(&mut self, value: f32) -> Result<Self::Value, Self::Error> {
        self.f64(value as f64)
    }
    fn f64(&mut self, value: f64) -> Result<Self::Value, Self::Error>;
    fn string(&mut self, value: &str) -> Result<Self::Value, Self::Error>;
    /// MessagePack only: a bin value.
    fn binary(&mut self, value: &[u8]) -> Result<Self::Value, Self::Error>;
    /// JSON only: an object key.
    fn key(&mut self, key: &str) -> Result<Self::Key, Self::Error>;
    /// MessagePack only: a map key, which may be any scalar value.
    fn value_key(&mut self, key: Self::Value) -> Result<Self::Key, Self::Error>;
    /// `len` is MessagePack's announced length, already checked against the bytes
    /// left; JSON does not know it and says 0.
    fn begin_array(&mut self, len: usize) -> Result<Self::Array, Self::Error>;
    fn push(&mut self, array: &mut Self::Array, value: Self::Value) -> Result<(), Self::Error>;
    fn end_array(&mut self, array: Self::Array) -> Result<Self::Value, Self::Error>;
    /// `len` as for [`Builder::begin_array`].
    fn begin_map(&mut self, len: usize) -> Result<Self::Map, Self::Error>;
    /// Insert or replace: for a duplicate key the builder decides, and a Python
    /// `dict` keeps the last value (as `json.loads` and `msgpack.unpackb` do).
    fn insert(
        &mut self,
        map: &mut Self::Map,
        key: Self::Key,
        value: Self::Value,
    ) -> Result<(), Self::Error>;
    fn end_map(&mut self, map: Self::Map) -> Result<Self::Value, Self::Error>;
}
