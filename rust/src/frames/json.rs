//! The strict JSON (RFC 8259) parser of client frames. It builds no tree of its own:
//! it calls a [`Builder`] for every value, so the Python layer builds Python objects
//! directly and tests build plain Rust values; a frame's classification (in the
//! parent module) reads the object's `"type"` on the way.
//!
//! # Decisions
//!
//! * **Whitespace.** JSON whitespace (space, tab, LF, CR) around the value is
//!   allowed, as in `json.loads`: `" {\"type\":\"flush\"}\n"` is a command. Other
//!   white space (no-break space, form feed, ...) is not JSON, so such a frame is
//!   plain text.
//! * **Refused JSON**, a [`Fail::Refused`] with a message that says why, decided
//!   as soon as the parser meets it: nesting deeper than [`MAX_DEPTH`]
//!   arrays/objects, an integer literal of more than [`MAX_INT_DIGITS`] digits,
//!   and a `\u` escape of a lone UTF-16 surrogate (which is no character;
//!   `json.loads` would return a `str` that cannot be encoded).
//! * **Duplicate keys**: the last value wins and the key keeps the position of its
//!   first occurrence (what a Python `dict` and `json.loads` do).
//! * **Numbers**: a literal without fraction or exponent is an integer of any
//!   size up to [`MAX_INT_DIGITS`] digits (`-0` is the integer 0); every other
//!   literal is an `f64`, correctly rounded (the same value as Python's `float`),
//!   overflowing to infinity like `json.loads` does for `1e400`.

use std::borrow::Cow;
use std::convert::Infallible;

use crate::builder::Builder;

/// Deepest nesting of arrays and objects accepted; the top-level object is level 1.
pub const MAX_DEPTH: usize = 64;

/// Longest integer literal accepted, in digits. 640 is the smallest limit CPython
/// lets `sys.set_int_max_str_digits` set, so converting such an integer to a
/// Python `int` can never fail.
pub const MAX_INT_DIGITS: usize = 640;

/// A builder that builds nothing: used to check that text is JSON.
pub(super) struct Validator;

impl Builder for Validator {
    type Value = ();
    type Key = ();
    type Array = ();
    type Map = ();
    type Error = Infallible;

    fn null(&mut self) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn boolean(&mut self, _: bool) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn int(&mut self, _: i64) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn uint(&mut self, _: u64) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn big_int(&mut self, _: &str) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn f64(&mut self, _: f64) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn string(&mut self, _: &str) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn binary(&mut self, _: &[u8]) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn key(&mut self, _: &str) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn value_key(&mut self, _: ()) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn begin_array(&mut self, _: usize) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn push(&mut self, _: &mut (), _: ()) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn end_array(&mut self, _: ()) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn begin_map(&mut self, _: usize) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn insert(&mut self, _: &mut (), _: (), _: ()) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn end_map(&mut self, _: ()) -> std::result::Result<(), Infallible> {
        Ok(())
    }
}

/// Why parsing stopped.
pub(super) enum Fail<E> {
    /// Not JSON.
    Syntax,
    /// JSON (as far as it was read) that is refused; the message says why.
    Refused(String),
    /// The builder failed.
    Build(E),
}

pub(super) type Parsed<T, E> = std::result::Result<T, Fail<E>>;

/// Where a parsed string is: a slice of the frame, or the parser's scratch buffer
/// (when it had escapes).
enum Str<'a> {
    Frame(&'a str),
    Scratch,
}

pub(super) struct Parser<'a, 'b, B: Builder> {
    text: &'a str,
    bytes: &'a [u8],
    pub(super) pos: usize,
    builder: &'b mut B,
    scratch: String,
}

impl<'a, 'b, B: Builder> Parser<'a, 'b, B> {
    pub(super) fn new(text: &'a str, builder: &'b mut B) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            builder,
            scratch: String::new(),
        }
    }

    #[inline]
    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    pub(super) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Only whitespace may follow the value.
    pub(super) fn finish(&mut self) -> Parsed<(), B::Error> {
        self.skip_ws();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(Fail::Syntax)
        }
    }

    /// A value starting at the next non-whitespace byte; `depth` is the number of
    /// arrays/objects it is inside.
    pub(super) fn value(&mut self, depth: usize) -> Parsed<B::Value, B::Error> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => {
                let s = self.string()?;
                let s = match s {
                    Str::Frame(s) => s,
                    Str::Scratch => self.scratch.as_str(),
                };
                self.builder.string(s).map_err(Fail::Build)
            }
            Some(b'{') => self.object(depth + 1, None),
            Some(b'[') => self.array(depth + 1),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => {
                self.literal(b"true")?;
                self.builder.boolean(true).map_err(Fail::Build)
            }
            Some(b'f') => {
                self.literal(b"false")?;
                self.builder.boolean(false).map_err(Fail::Build)
            }
            Some(b'n') => {
                self.literal(b"null")?;
                self.builder.null().map_err(Fail::Build)
            }
            _ => Err(Fail::Syntax),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Parsed<(), B::Error> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Fail::Syntax)
        }
    }

    fn too_deep() -> Fail<B::Error> {
        Fail::Refused(format!(
            "frame nests JSON arrays/objects deeper than {MAX_DEPTH} levels"
        ))
    }

    /// An array; `self.pos` is at its `[`.
    fn array(&mut self, depth: usize) -> Parsed<B::Value, B::Error> {
        if depth > MAX_DEPTH {
            return Err(Self::too_deep());
        }
        self.pos += 1;
        let mut array = self.builder.begin_array(0).map_err(Fail::Build)?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return self.builder.end_array(array).map_err(Fail::Build);
        }
        loop {
            let value = self.value(depth)?;
            self.builder.push(&mut array, value).map_err(Fail::Build)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return self.builder.end_array(array).map_err(Fail::Build);
                }
                _ => return Err(Fail::Syntax),
            }
        }
    }

    /// An object; `self.pos` is at its `{`. With `kind`, the object's `"type"` is
    /// recorded there: the last `"type"`'s string, or `None` if that is no string.
    pub(super) fn object(
        &mut self,
        depth: usize,
        mut kind: Option<&mut Option<Cow<'a, str>>>,
    ) -> Parsed<B::Value, B::Error> {
        if depth > MAX_DEPTH {
            return Err(Self::too_deep());
        }
        self.pos += 1;
        let mut object = self.builder.begin_map(0).map_err(Fail::Build)?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return self.builder.end_map(object).map_err(Fail::Build);
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(Fail::Syntax);
            }
            let key = self.string()?;
            let key = match key {
                Str::Frame(s) => s,
                Str::Scratch => self.scratch.as_str(),
            };
            let is_type = key == "type";
            let key = self.builder.key(key).map_err(Fail::Build)?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(Fail::Syntax);
            }
            self.pos += 1;
            self.skip_ws();
            let value = match kind.as_deref_mut() {
                Some(slot) if is_type => {
                    if self.peek() == Some(b'"') {
                        let (text, value) = match self.string()? {
                            Str::Frame(s) => (Cow::Borrowed(s), self.builder.string(s)),
                            Str::Scratch => (
                                Cow::Owned(self.scratch.clone()),
                                self.builder.string(&self.scratch),
                            ),
                        };
                        *slot = Some(text);
                        value.map_err(Fail::Build)?
                    } else {
                        *slot = None;
                        self.value(depth)?
                    }
                }
                _ => self.value(depth)?,
            };
            self.builder
                .insert(&mut object, key, value)
                .map_err(Fail::Build)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return self.builder.end_map(object).map_err(Fail::Build);
                }
                _ => return Err(Fail::Syntax),
            }
        }
    }

    /// A string; `self.pos` is at its opening quote. Without escapes the result
    /// borrows the frame; with escapes it is unescaped into `self.scratch`.
    fn string(&mut self) -> Parsed<Str<'a>, B::Error> {
        let start = self.pos + 1;
        let end = scan_plain(self.bytes, start);
        match self.bytes.get(end) {
            Some(b'"') => {
                self.pos = end + 1;
                // Both ends are next to ASCII quotes, so on char boundaries.
                Ok(Str::Frame(&self.text[start..end]))
            }
            Some(b'\\') => {
                self.scratch.clear();
                self.scratch.push_str(&self.text[start..end]);
                self.pos = end;
                self.escaped_rest()?;
                Ok(Str::Scratch)
            }
            // A control character (must be escaped in JSON) or the end of the text.
            _ => Err(Fail::Syntax),
        }
    }

    /// The rest of a string from an escape at `self.pos` to the closing quote.
    fn escaped_rest(&mut self) -> Parsed<(), B::Error> {
        loop {
            // self.pos is at a backslash.
            self.pos += 1;
            self.escape()?;
            let end = scan_plain(self.bytes, self.pos);
            self.scratch.push_str(&self.text[self.pos..end]);
            match self.bytes.get(end) {
                Some(b'"') => {
                    self.pos = end + 1;
                    return Ok(());
                }
                Some(b'\\') => self.pos = end,
                _ => return Err(Fail::Syntax),
            }
        }
    }

    /// One escape; `self.pos` is just after its backslash.
    fn escape(&mut self) -> Parsed<(), B::Error> {
        let Some(&c) = self.bytes.get(self.pos) else {
            return Err(Fail::Syntax);
        };
        self.pos += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return Err(lone_surrogate(unit));
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(lone_surrogate(unit));
                        }
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).ok_or(Fail::Syntax)?
                    }
                    0xDC00..=0xDFFF => return Err(lone_surrogate(unit)),
                    _ => char::from_u32(unit).ok_or(Fail::Syntax)?,
                }
            }
            _ => return Err(Fail::Syntax),
        };
        self.scratch.push(ch);
        Ok(())
    }

    fn hex4(&mut self) -> Parsed<u32, B::Error> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(Fail::Syntax)?;
        let mut unit = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Fail::Syntax),
            };
            unit = unit * 16 + u32::from(v);
        }
        self.pos += 4;
        Ok(unit)
    }

    /// A number; `self.pos` is at its `-` or first digit.
    fn number(&mut self) -> Parsed<B::Value, B::Error> {
        let bytes = self.bytes;
        let start = self.pos;
        let mut i = start;
        let negative = bytes[i] == b'-';
        if negative {
            i += 1;
        }
        let int_start = i;
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = skip_digits(bytes, i + 1),
            _ => return Err(Fail::Syntax),
        }
        let int_end = i;
        let mut is_float = false;
        if bytes.get(i) == Some(&b'.') {
            let frac = i + 1;
            i = skip_digits(bytes, frac);
            if i == frac {
                return Err(Fail::Syntax);
            }
            is_float = true;
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            let exp = i;
            i = skip_digits(bytes, exp);
            if i == exp {
                return Err(Fail::Syntax);
            }
            is_float = true;
        }
        self.pos = i;
        let literal = &self.text[start..i];
        if is_float {
            // The grammar above is a subset of what `f64::from_str` accepts; it
            // rounds correctly, like Python's float().
            let value: f64 = literal.parse().map_err(|_| Fail::Syntax)?;
            return self.builder.f64(value).map_err(Fail::Build);
        }
        let digits = int_end - int_start;
        if digits <= 18 {
            let mut value: i64 = 0;
            for &d in &bytes[int_start..int_end] {
                value = value * 10 + i64::from(d - b'0');
            }
            return self
                .builder
                .int(if negative { -value } else { value })
                .map_err(Fail::Build);
        }
        if let Ok(value) = literal.parse::<i64>() {
            return self.builder.int(value).map_err(Fail::Build);
        }
        if !negative {
            if let Ok(value) = literal.parse::<u64>() {
                return self.builder.uint(value).map_err(Fail::Build);
            }
        }
        if digits > MAX_INT_DIGITS {
            return Err(Fail::Refused(format!(
                "frame has an integer of {digits} digits; at most {MAX_INT_DIGITS} are accepted"
            )));
        }
        self.builder.big_int(literal).map_err(Fail::Build)
    }
}

fn lone_surrogate<E>(unit: u32) -> Fail<E> {
    Fail::Refused(format!(
        "frame has a \\u{unit:04x} escape, a lone UTF-16 surrogate that is no character"
    ))
}

#[inline]
fn skip_digits(bytes: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = bytes.get(i) {
        i += 1;
    }
    i
}

/// The index of the first `"`, `\` or control character (< 0x20) at or after `i`,
/// or `bytes.len()`. Looks at sixteen bytes at a time on x86-64, else eight.
#[inline]
fn scan_plain(bytes: &[u8], mut i: usize) -> usize {
    // SSE2 is part of every x86-64 CPU: sixteen bytes at a time.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        // SAFETY: SSE2 is enabled at compile time (cfg above); every load reads
        // 16 bytes inside `bytes` (i + 16 <= len) and needs no alignment.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let below_space = _mm_set1_epi8(0x1f);
            while i + 16 <= bytes.len() {
                let v = _mm_loadu_si128(bytes.as_ptr().add(i).cast::<__m128i>());
                // min(v, 0x1f) == v exactly for the bytes <= 0x1f (unsigned).
                let control = _mm_cmpeq_epi8(_mm_min_epu8(v, below_space), v);
                let special = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                    control,
                );
                let mask = _mm_movemask_epi8(special) as u32;
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    scan_plain_swar(bytes, i)
}

/// [`scan_plain`] eight bytes at a time in a `u64` (and the tail byte by byte).
#[inline]
fn scan_plain_swar(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // Each term flags bytes that are zero (resp. below 0x20); a false flag can
        // only sit above a true one, so the lowest flag is always a real match.
        let found = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        let found = found & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_plain_finds_the_first_special_byte() {
        for len in 0..48 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    // Bytes that are near the special ones must not be found.
                    for (i, b) in bytes.iter_mut().enumerate() {
                        *b = [b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff][i % 8];
                    }
                    if at < len {
                        bytes[at] = special;
                        bytes.iter_mut().skip(at + 1).for_each(|b| *b = b'"');
                    }
                    assert_eq!(
                        scan_plain(&bytes, 0),
                        at,
                        "len {len} at {at} special {special:#x}"
                    );
                    assert_eq!(
                        scan_plain_swar(&bytes, 0),
                        at,
                        "len {len} at {at} special {special:#x}"
                    );
                }
            }
        }
    }
}
