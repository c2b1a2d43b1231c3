//! MessagePack for the Kyutai STT dialect (moshi-server's `asr-streaming`): the
//! frames the gateway sends (`Audio`, `Marker`) encoded straight from the bytes it
//! has, a small general encoder, and a strict decoder that calls a [`Builder`] for
//! every value (the Python layer builds Python objects directly, tests build
//! [`Value`]s), like `crate::frames` does for JSON.
//!
//! Encoding uses the `rmp` crate's writers (the smallest encoding of each value, as
//! every MessagePack library writes it). Decoding is done here, over a byte slice,
//! so that each error can say where it happened.
//!
//! # Decisions
//!
//! * **`Audio` frames** are `{"type":"Audio","pcm":[...]}`: a map of two entries
//!   (in that order), the samples as an array of float32 (marker `0xca`), which is
//!   what moshi-server's own clients send (`use_single_float=True`). The input is
//!   float32 little-endian bytes; its bit patterns are kept (NaN included).
//! * **`Marker` frames** are `{"type":"Marker","id":n}`, `n` in the smallest integer
//!   encoding.
//! * **The decoder** accepts exactly one value filling the whole input: trailing
//!   bytes are an error, and so is input that ends inside a value. Strings must be
//!   UTF-8. Map keys must be scalars (nil, bool, int, float, str, bin): an array or
//!   map as key has no Python `dict` form. Extension types (`fixext*`, `ext*`,
//!   timestamps included) are refused: moshi-server never sends them. The reserved
//!   byte `0xc1` is refused. Nesting deeper than [`MAX_DEPTH`] arrays/maps is
//!   refused (the top-level value is level 1). A length that cannot fit in the
//!   bytes left is reported at once, before anything is allocated for it.
//! * **Duplicate map keys**: the builder decides (a Python `dict` keeps the last
//!   value, as `msgpack.unpackb` does).

use std::mem::MaybeUninit;

use crate::buf::{assume_init, vec_with};
use crate::builder::Builder;
use crate::{Error, Result};
use rmp::Marker;

/// Deepest nesting of arrays and maps accepted; the top-level value is level 1.
pub const MAX_DEPTH: usize = 64;

/// Samples per 80 ms frame at 24 kHz: what moshi-server's model takes per step.
pub const KYUTAI_FRAME_SAMPLES: usize = 1920;

// ---- encoding ------------------------------------------------------------------------

/// A MessagePack writer over a `Vec<u8>`, each value in its smallest encoding.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

fn u32_len(what: &'static str, len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::TooLong { what, len })
}

// Writing into a Vec<u8> cannot fail (it only grows), so the writers' errors are
// impossible here; `expect` documents that.
const VEC_WRITE: &str = "writing MessagePack into a Vec cannot fail";

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn nil(&mut self) {
        rmp::encode::write_nil(&mut self.buf).expect(VEC_WRITE);
    }

    pub fn boolean(&mut self, value: bool) {
        rmp::encode::write_bool(&mut self.buf, value).expect(VEC_WRITE);
    }

    pub fn int(&mut self, value: i64) {
        if value >= 0 {
            self.uint(value as u64);
        } else {
            rmp::encode::write_sint(&mut self.buf, value).expect(VEC_WRITE);
        }
    }

    pub fn uint(&mut self, value: u64) {
        rmp::encode::write_uint(&mut self.buf, value).expect(VEC_WRITE);
    }

    pub fn f32(&mut self, value: f32) {
        rmp::encode::write_f32(&mut self.buf, value).expect(VEC_WRITE);
    }

    pub fn f64(&mut self, value: f64) {
        rmp::encode::write_f64(&mut self.buf, value).expect(VEC_WRITE);
    }

    pub fn str(&mut self, value: &str) -> Result<()> {
        let len = u32_len("string", value.len())?;
        rmp::encode::write_str_len(&mut self.buf, len).expect(VEC_WRITE);
        self.buf.extend_from_slice(value.as_bytes());
        Ok(())
    }

    pub fn bin(&mut self, value: &[u8]) -> Result<()> {
        let len = u32_len("bytes", value.len())?;
        rmp::encode::write_bin_len(&mut self.buf, len).expect(VEC_WRITE);
        self.buf.extend_from_slice(value);
        Ok(())
    }

    pub fn array_len(&mut self, len: usize) -> Result<()> {
        let len = u32_len("array", len)?;
        rmp::encode::write_array_len(&mut self.buf, len).expect(VEC_WRITE);
        Ok(())
    }

    pub fn map_len(&mut self, len: usize) -> Result<()> {
        let len = u32_len("map", len)?;
        rmp::encode::write_map_len(&mut self.buf, len).expect(VEC_WRITE);
        Ok(())
    }
}

/// The bytes of `{"type":"Audio","pcm":` and the array header for `samples` items.
fn audio_header(samples: usize) -> Result<Vec<u8>> {
    let mut enc = Encoder::with_capacity(24);
    enc.map_len(2)?;
    enc.str("type")?;
    enc.str("Audio")?;
    enc.str("pcm")?;
    enc.array_len(samples)?;
    Ok(enc.into_bytes())
}

/// Length of the `Audio` frame for `len` bytes of float32 audio, or
/// `Error::PartialSample` unless `len` is a multiple of 4.
pub fn kyutai_audio_frame_len(len: usize) -> Result<usize> {
    if len % 4 != 0 {
        return Err(Error::PartialSample {
            len,
            sample_width: 4,
        });
    }
    let samples = len / 4;
    let header = audio_header(samples).map_err(|_| Error::PartialSample {
        len,
        sample_width: 4,
    })?;
    Ok(header.len() + samples * 5)
}

/// Write the `Audio` frame of float32 little-endian `pcm` into `dst`, which must be
/// exactly [`kyutai_audio_frame_len`] bytes long; returns it initialised.
pub fn kyutai_audio_frame_into<'o>(
    pcm: &[u8],
    dst: &'o mut [MaybeUninit<u8>],
) -> Result<&'o mut [u8]> {
    let total = kyutai_audio_frame_len(pcm.len())?;
    assert_eq!(
        dst.len(),
        total,
        "destination must be exactly the frame length"
    );
    let header = audio_header(pcm.len() / 4).expect("length checked by kyutai_audio_frame_len");
    let (head, body) = dst.split_at_mut(header.len());
    for (out, &b) in head.iter_mut().zip(&header) {
        out.write(b);
    }
    for (out, sample) in body.chunks_exact_mut(5).zip(pcm.chunks_exact(4)) {
        // float32 little-endian in, 0xca + float32 big-endian out: same bits.
        out[0].write(0xca);
        out[1].write(sample[3]);
        out[2].write(sample[2]);
        out[3].write(sample[1]);
        out[4].write(sample[0]);
    }
    // SAFETY: the header loop wrote all of `head` (same length as `header`) and the
    // sample loop all of `body` (exactly 5 bytes per 4-byte sample).
    Ok(unsafe { assume_init(dst) })
}

/// The `Audio` frame of float32 little-endian `pcm`, as a `Vec`.
pub fn kyutai_audio_frame(pcm: &[u8]) -> Result<Vec<u8>> {
    vec_with(kyutai_audio_frame_len(pcm.len())?, |dst| {
        kyutai_audio_frame_into(pcm, dst)
    })
}

/// `{"type":"Marker","id":id}`.
pub fn kyutai_marker_frame(id: i64) -> Vec<u8> {
    let mut enc = Encoder::with_capacity(24);
    enc.map_len(2).expect("2 fits");
    enc.str("type").expect("short");
    enc.str("Marker").expect("short");
    enc.str("id").expect("short");
    enc.int(id);
    enc.into_bytes()
}

// ---- decoding ------------------------------------------------------------------------

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(Error::Truncated {
                offset: self.pos,
                needed: n - left,
            });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len8(&mut self) -> Result<usize> {
        Ok(self.be::<1>()?[0] as usize)
    }

    fn len16(&mut self) -> Result<usize> {
        Ok(u16::from_be_bytes(self.be()?) as usize)
    }

    fn len32(&mut self) -> Result<usize> {
        Ok(u32::from_be_bytes(self.be()?) as usize)
    }

    /// Refuse a container of `len` items, each at least one byte, that cannot fit.
    fn check_items(&self, len: usize) -> Result<()> {
        let left = self.data.len() - self.pos;
        if len > left {
            return Err(Error::Truncated {
                offset: self.pos,
                needed: len - left,
            });
        }
        Ok(())
    }
}

/// Decode the single MessagePack value that fills `data`.
pub fn decode<B: Builder>(data: &[u8], builder: &mut B) -> std::result::Result<B::Value, B::Error>
where
    B::Error: From<Error>,
{
    if data.is_empty() {
        return Err(Error::Empty.into());
    }
    let mut reader = Reader { data, pos: 0 };
    let value = decode_value(&mut reader, builder, 1, false)?;
    if reader.pos != data.len() {
        return Err(Error::TrailingBytes {
            offset: reader.pos,
            extra: data.len() - reader.pos,
        }
        .into());
    }
    Ok(value)
}

fn decode_value<B: Builder>(
    r: &mut Reader<'_>,
    b: &mut B,
    depth: usize,
    as_key: bool,
) -> std::result::Result<B::Value, B::Error>
where
    B::Error: From<Error>,
{
    let offset = r.pos;
    let marker = Marker::from_u8(r.be::<1>()?[0]);
    let container = || -> Result<()> {
        if as_key {
            return Err(Error::UnhashableKey { offset });
        }
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep {
                offset,
                max: MAX_DEPTH,
            });
        }
        Ok(())
    };
    match marker {
        Marker::Null => b.null(),
        Marker::True => b.boolean(true),
        Marker::False => b.boolean(false),
        Marker::FixPos(v) => b.uint(v as u64),
        Marker::FixNeg(v) => b.int(v as i64),
        Marker::U8 => b.uint(r.be::<1>()?[0] as u64),
        Marker::U16 => b.uint(u16::from_be_bytes(r.be()?) as u64),
        Marker::U32 => b.uint(u32::from_be_bytes(r.be()?) as u64),
        Marker::U64 => b.uint(u64::from_be_bytes(r.be()?)),
        Marker::I8 => b.int(i8::from_be_bytes(r.be()?) as i64),
        Marker::I16 => b.int(i16::from_be_bytes(r.be()?) as i64),
        Marker::I32 => b.int(i32::from_be_bytes(r.be()?) as i64),
        Marker::I64 => b.int(i64::from_be_bytes(r.be()?)),
        Marker::F32 => b.f32(f32::from_be_bytes(r.be()?)),
        Marker::F64 => b.f64(f64::from_be_bytes(r.be()?)),
        Marker::FixStr(n) => string(r, b, n as usize),
        Marker::Str8 => {
            let n = r.len8()?;
            string(r, b, n)
        }
        Marker::Str16 => {
            let n = r.len16()?;
            string(r, b, n)
        }
        Marker::Str32 => {
            let n = r.len32()?;
            string(r, b, n)
        }
        Marker::Bin8 => {
            let n = r.len8()?;
            b.binary(r.take(n)?)
        }
        Marker::Bin16 => {
            let n = r.len16()?;
            b.binary(r.take(n)?)
        }
        Marker::Bin32 => {
            let n = r.len32()?;
            b.binary(r.take(n)?)
        }
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            container()?;
            let len = match marker {
                Marker::FixArray(n) => n as usize,
                Marker::Array16 => r.len16()?,
                _ => r.len32()?,
            };
            r.check_items(len)?;
            let mut array = b.begin_array(len)?;
            for _ in 0..len {
                let item = decode_value(r, b, depth + 1, false)?;
                b.push(&mut array, item)?;
            }
            b.end_array(array)
        }
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
            container()?;
            let len = match marker {
                Marker::FixMap(n) => n as usize,
                Marker::Map16 => r.len16()?,
                _ => r.len32()?,
            };
            r.check_items(len.saturating_mul(2))?;
            let mut map = b.begin_map(len)?;
            for _ in 0..len {
                let key = decode_value(r, b, depth + 1, true)?;
                let key = b.value_key(key)?;
                let value = decode_value(r, b, depth + 1, false)?;
                b.insert(&mut map, key, value)?;
            }
            b.end_map(map)
        }
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16 => {
            let ext_type = i8::from_be_bytes(r.be()?);
            Err(Error::UnsupportedExtension { offset, ext_type }.into())
        }
        Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => {
            match marker {
                Marker::Ext8 => r.len8()?,
                Marker::Ext16 => r.len16()?,
                _ => r.len32()?,
            };
            let ext_type = i8::from_be_bytes(r.be()?);
            Err(Error::UnsupportedExtension { offset, ext_type }.into())
        }
        Marker::Reserved => Err(Error::ReservedMarker { offset }.into()),
    }
}

fn string<B: Builder>(
    r: &mut Reader<'_>,
    b: &mut B,
    len: usize,
) -> std::result::Result<B::Value, B::Error>
where
    B::Error: From<Error>,
{
    let offset = r.pos;
    let bytes = r.take(len)?;
    match std::str::from_utf8(bytes) {
        Ok(s) => b.string(s),
        Err(_) => Err(Error::InvalidUtf8 { offset }.into()),
    }
}

// ---- plain Rust values ------------------------------------------------------------

/// A decoded value, for Rust callers and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F32(f32),
    F64(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The value of `key` in a map (the last one for duplicate keys).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(items) => items
                .iter()
                .rev()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Encode this value (floats keep their width).
    pub fn encode(&self, enc: &mut Encoder) -> Result<()> {
        match self {
            Value::Nil => enc.nil(),
            Value::Bool(v) => enc.boolean(*v),
            Value::Int(v) => enc.int(*v),
            Value::UInt(v) => enc.uint(*v),
            Value::F32(v) => enc.f32(*v),
            Value::F64(v) => enc.f64(*v),
            Value::Str(v) => enc.str(v)?,
            Value::Bin(v) => enc.bin(v)?,
            Value::Array(items) => {
                enc.array_len(items.len())?;
                for item in items {
                    item.encode(enc)?;
                }
            }
            Value::Map(items) => {
                enc.map_len(items.len())?;
                for (k, v) in items {
                    k.encode(enc)?;
                    v.encode(enc)?;
                }
            }
        }
        Ok(())
    }
}

/// Builds [`Value`]s.
pub struct ValueBuilder;

impl Builder for ValueBuilder {
    type Value = Value;
    type Key = Value;
    type Array = Vec<Value>;
    type Map = Vec<(Value, Value)>;
    type Error = Error;

    fn null(&mut self) -> Result<Value> {
        Ok(Value::Nil)
    }
    fn boolean(&mut self, value: bool) -> Result<Value> {
        Ok(Value::Bool(value))
    }
    fn int(&mut self, value: i64) -> Result<Value> {
        Ok(if value >= 0 {
            Value::UInt(value as u64)
        } else {
            Value::Int(value)
        })
    }
    fn uint(&mut self, value: u64) -> Result<Value> {
        Ok(Value::UInt(value))
    }
    fn big_int(&mut self, _: &str) -> Result<Value> {
        unreachable!("MessagePack has no integers beyond 64 bits")
    }
    fn f32(&mut self, value: f32) -> Result<Value> {
        Ok(Value::F32(value))
    }
    fn f64(&mut self, value: f64) -> Result<Value> {
        Ok(Value::F64(value))
    }
    fn string(&mut self, value: &str) -> Result<Value> {
        Ok(Value::Str(value.to_owned()))
    }
    fn binary(&mut self, value: &[u8]) -> Result<Value> {
        Ok(Value::Bin(value.to_vec()))
    }
    fn key(&mut self, key: &str) -> Result<Value> {
        Ok(Value::Str(key.to_owned()))
    }
    fn value_key(&mut self, key: Value) -> Result<Value> {
        Ok(key)
    }
    fn begin_array(&mut self, len: usize) -> Result<Vec<Value>> {
        Ok(Vec::with_capacity(len))
    }
    fn push(&mut self, array: &mut Vec<Value>, value: Value) -> Result<()> {
        array.push(value);
        Ok(())
    }
    fn end_array(&mut self, array: Vec<Value>) -> Result<Value> {
        Ok(Value::Array(array))
    }
    fn begin_map(&mut self, len: usize) -> Result<Vec<(Value, Value)>> {
        Ok(Vec::with_capacity(len))
    }
    fn insert(&mut self, map: &mut Vec<(Value, Value)>, key: Value, value: Value) -> Result<()> {
        map.push((key, value));
        Ok(())
    }
    fn end_map(&mut self, map: Vec<(Value, Value)>) -> Result<Value> {
        Ok(Value::Map(map))
    }
}

/// Decode `data` into a [`Value`].
pub fn decode_value_of(data: &[u8]) -> Result<Value> {
    decode(data, &mut ValueBuilder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32le(samples: &[f32]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn s(v: &str) -> Value {
        Value::Str(v.to_owned())
    }

    #[test]
    fn audio_frame_is_a_map_with_a_float32_array() {
        let frame = kyutai_audio_frame(&f32le(&[0.5, -1.0, 0.0])).unwrap();
        // fixmap(2) "type" "Audio" "pcm" fixarray(3) then 3 x (0xca + BE f32)
        let mut expected = vec![0x82, 0xa4];
        expected.extend_from_slice(b"type");
        expected.push(0xa5);
        expected.extend_from_slice(b"Audio");
        expected.push(0xa3);
        expected.extend_from_slice(b"pcm");
        expected.push(0x93);
        for v in [0.5f32, -1.0, 0.0] {
            expected.push(0xca);
            expected.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(frame, expected);
        let value = decode_value_of(&frame).unwrap();
        assert_eq!(value.get("type"), Some(&s("Audio")));
        assert_eq!(
            value.get("pcm"),
            Some(&Value::Array(vec![
                Value::F32(0.5),
                Value::F32(-1.0),
                Value::F32(0.0)
            ]))
        );
    }

    #[test]
    fn audio_frame_of_1920_samples_uses_array16_and_has_the_announced_length() {
        let pcm = f32le(&vec![0.25; KYUTAI_FRAME_SAMPLES]);
        let frame = kyutai_audio_frame(&pcm).unwrap();
        assert_eq!(frame.len(), kyutai_audio_frame_len(pcm.len()).unwrap());
        assert_eq!(frame.len(), 1 + 5 + 6 + 4 + 3 + 5 * KYUTAI_FRAME_SAMPLES);
        let Value::Array(items) = decode_value_of(&frame).unwrap().get("pcm").unwrap().clone()
        else {
            panic!("pcm is not an array")
        };
        assert_eq!(items.len(), KYUTAI_FRAME_SAMPLES);
        assert!(items.iter().all(|v| *v == Value::F32(0.25)));
    }

    #[test]
    fn empty_audio_frame_and_nan_bits_are_kept() {
        let frame = kyutai_audio_frame(&[]).unwrap();
        assert_eq!(
            decode_value_of(&frame).unwrap().get("pcm"),
            Some(&Value::Array(vec![]))
        );
        let nan = f32::from_bits(0x7fc0_0001);
        let frame = kyutai_audio_frame(&nan.to_le_bytes()).unwrap();
        assert_eq!(&frame[frame.len() - 4..], &0x7fc0_0001u32.to_be_bytes());
    }

    #[test]
    fn audio_frame_needs_whole_samples() {
        assert_eq!(
            kyutai_audio_frame(&[0, 0, 0]),
            Err(Error::PartialSample {
                len: 3,
                sample_width: 4
            })
        );
    }

    #[test]
    fn marker_frame() {
        let frame = kyutai_marker_frame(7);
        let value = decode_value_of(&frame).unwrap();
        assert_eq!(
            value,
            Value::Map(vec![(s("type"), s("Marker")), (s("id"), Value::UInt(7))])
        );
        let value = decode_value_of(&kyutai_marker_frame(-300)).unwrap();
        assert_eq!(value.get("id"), Some(&Value::Int(-300)));
        let value = decode_value_of(&kyutai_marker_frame(i64::MAX)).unwrap();
        assert_eq!(value.get("id"), Some(&Value::UInt(i64::MAX as u64)));
    }

    #[test]
    fn round_trip_of_every_kind() {
        let value = Value::Map(vec![
            (s("nil"), Value::Nil),
            (Value::Bool(true), Value::Bool(false)),
            (Value::UInt(u64::MAX), Value::Int(i64::MIN)),
            (Value::Int(-1), Value::UInt(128)),
            (
                s("f"),
                Value::Array(vec![Value::F32(1.5), Value::F64(-2.25)]),
            ),
            (Value::Bin(vec![1, 2, 3]), Value::Str("é".repeat(40))),
            (
                s("big"),
                Value::Array((0..70_000).map(Value::UInt).collect()),
            ),
            (s("bin"), Value::Bin(vec![7; 300])),
            (s("str"), Value::Str("x".repeat(70_000))),
        ]);
        let mut enc = Encoder::new();
        value.encode(&mut enc).unwrap();
        assert_eq!(decode_value_of(enc.as_bytes()).unwrap(), value);
    }

    #[test]
    fn smallest_int_encodings() {
        for (v, len) in [
            (0i64, 1),
            (127, 1),
            (128, 2),
            (255, 2),
            (256, 3),
            (65536, 5),
            (1 << 32, 9),
            (-1, 1),
            (-32, 1),
            (-33, 2),
            (-129, 3),
            (-32769, 5),
            (-(1 << 31) - 1, 9),
        ] {
            let mut enc = Encoder::new();
            enc.int(v);
            assert_eq!(enc.as_bytes().len(), len, "{v}");
            let back = decode_value_of(enc.as_bytes()).unwrap();
            let got = match back {
                Value::Int(i) => i,
                Value::UInt(u) => u as i64,
                other => panic!("{other:?}"),
            };
            assert_eq!(got, v);
        }
    }

    #[test]
    fn malformed_input_is_refused_with_its_offset() {
        assert_eq!(decode_value_of(b""), Err(Error::Empty));
        assert_eq!(
            decode_value_of(&[0xc1]),
            Err(Error::ReservedMarker { offset: 0 })
        );
        assert_eq!(
            decode_value_of(&[0x91, 0xc1]),
            Err(Error::ReservedMarker { offset: 1 })
        );
        assert_eq!(
            decode_value_of(&[0xc0, 0xc0]),
            Err(Error::TrailingBytes {
                offset: 1,
                extra: 1
            })
        );
        assert_eq!(
            decode_value_of(&[0xa3, b'a']),
            Err(Error::Truncated {
                offset: 1,
                needed: 2
            })
        );
        assert_eq!(
            decode_value_of(&[0xcb, 0, 0]),
            Err(Error::Truncated {
                offset: 1,
                needed: 6
            })
        );
        assert_eq!(
            decode_value_of(&[0xa2, 0xff, 0xfe]),
            Err(Error::InvalidUtf8 { offset: 1 })
        );
        assert_eq!(
            decode_value_of(&[0x81, 0x90, 0xc0]),
            Err(Error::UnhashableKey { offset: 1 })
        );
        assert_eq!(
            decode_value_of(&[0xd4, 0x05, 0x00]),
            Err(Error::UnsupportedExtension {
                offset: 0,
                ext_type: 5
            })
        );
        assert_eq!(
            decode_value_of(&[0xc7, 0x01, 0xff, 0x00]),
            Err(Error::UnsupportedExtension {
                offset: 0,
                ext_type: -1
            })
        );
        // an array announcing 2**32 - 1 items in 5 bytes: refused before allocating
        assert_eq!(
            decode_value_of(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(Error::Truncated {
                offset: 5,
                needed: 0xffff_ffff
            })
        );
        assert!(matches!(
            decode_value_of(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn nesting_is_limited() {
        let ok = [vec![0x91; MAX_DEPTH - 1], vec![0xc0]].concat();
        assert!(decode_value_of(&ok).is_ok());
        let ok = [vec![0x91; MAX_DEPTH], vec![0xc0]].concat();
        assert!(decode_value_of(&ok).is_ok());
        let deep = [vec![0x91; MAX_DEPTH + 1], vec![0xc0]].concat();
        assert_eq!(
            decode_value_of(&deep),
            Err(Error::TooDeep {
                offset: MAX_DEPTH,
                max: MAX_DEPTH
            })
        );
    }

    #[test]
    fn error_messages_are_readable() {
        let msg = Error::Truncated {
            offset: 3,
            needed: 2,
        }
        .to_string();
        assert!(
            msg.contains("offset 3") && msg.contains("2 more bytes"),
            "{msg}"
        );
    }
}
