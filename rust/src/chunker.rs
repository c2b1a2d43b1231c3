//! Cutting provider audio into chunks of whole samples, and the unified
//! `audio_chunk` frame that carries one chunk to the client.
//!
//! [`Chunker`] accepts audio pieces of any size (even ones that end inside a
//! sample) and hands out, at once, every whole sample it has, in chunks of at
//! most `max_chunk_bytes` (rounded down to whole samples). Nothing is lost or
//! duplicated: the chunks of all pushes plus the final [`Chunker::flush`] are
//! the input stream, byte for byte.
//!
//! [`AudioChunkFrame`] writes the complete frame
//! `{"type":"audio_chunk","data":"<base64>","sequence":N,"duration_ms":D,"context_id":"..."}`
//! in one pass into a buffer of exactly [`AudioChunkFrame::len`] bytes, with
//! SIMD base64 (`base64-simd`, CPU features detected at run time).
//!
//! `duration_ms` is `samples * 1000 / sample_rate`, written as an integer when
//! that is exact and otherwise rounded to three decimals (ties to even, on the
//! exact rational value) with trailing zeros dropped: `100`, `20.5`, `0.045`.

use std::convert::Infallible;
use std::mem::MaybeUninit;

use base64_simd::{Out, STANDARD};

use crate::buf::{assume_init, vec_with};
use crate::{Error, Result};

/// Check a sample width: 1 (G.711), 2 (PCM16) or 4 (f32).
pub fn check_sample_width(sample_width: usize) -> Result<()> {
    match sample_width {
        1 | 2 | 4 => Ok(()),
        _ => Err(Error::BadSampleWidth { sample_width }),
    }
}

fn check_sample_rate(sample_rate: u32) -> Result<()> {
    if sample_rate == 0 {
        Err(Error::NotPositive {
            name: "sample_rate",
            value: 0.0,
        })
    } else {
        Ok(())
    }
}

// ---- chunker ----------------------------------------------------------------

/// Streaming cutter of audio into chunks of whole samples.
#[derive(Debug, Clone)]
pub struct Chunker {
    max_chunk: usize,
    sample_width: usize,
    sample_rate: u32,
    partial: [u8; 4],
    partial_len: usize,
    next_sequence: u64,
    context_id: String,
    context_escaped_len: usize,
}

impl Chunker {
    /// A chunker for chunks of at most `max_chunk_bytes` (rounded down to whole
    /// samples).
    ///
    /// Errors: BadSampleWidth unless the width is 1, 2 or 4; ChunkTooSmall when
    /// `max_chunk_bytes` holds no whole sample; NotPositive for a zero rate.
    pub fn new(
        max_chunk_bytes: usize,
        sample_width: usize,
        sample_rate: u32,
        context_id: String,
    ) -> Result<Self> {
        check_sample_width(sample_width)?;
        check_sample_rate(sample_rate)?;
        let max_chunk = max_chunk_bytes - max_chunk_bytes % sample_width;
        if max_chunk == 0 {
            return Err(Error::ChunkTooSmall {
                max_bytes: max_chunk_bytes,
                sample_width,
            });
        }
        let context_escaped_len = json_escaped_len(&context_id);
        Ok(Self {
            max_chunk,
            sample_width,
            sample_rate,
            partial: [0; 4],
            partial_len: 0,
            next_sequence: 0,
            context_id,
            context_escaped_len,
        })
    }

    /// The largest chunk, in bytes (a whole number of samples).
    pub fn max_chunk_bytes(&self) -> usize {
        self.max_chunk
    }

    pub fn sample_width(&self) -> usize {
        self.sample_width
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Bytes held back because they do not yet make a whole sample.
    pub fn pending(&self) -> usize {
        self.partial_len
    }

    /// The sequence number the next frame will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    pub fn set_next_sequence(&mut self, value: u64) {
        self.next_sequence = value;
    }

    pub fn context_id(&self) -> &str {
        &self.context_id
    }

    pub fn set_context_id(&mut self, context_id: String) {
        self.context_escaped_len = json_escaped_len(&context_id);
        self.context_id = context_id;
    }

    /// Take `data` and return the chunks of every whole sample now available.
    /// The chunker's state is updated at once; the returned [`Chunks`] only
    /// borrows `data`.
    pub fn push<'a>(&mut self, data: &'a [u8]) -> Chunks<'a> {
        let held = self.partial_len;
        let available = held + data.len();
        let whole = available - available % self.sample_width;
        let mut chunks = Chunks {
            head: [0; 4],
            head_len: 0,
            data,
            pos: 0,
            end: 0,
            max: self.max_chunk,
        };
        if whole == 0 {
            // Still no whole sample: keep everything.
            self.partial[held..available].copy_from_slice(data);
            self.partial_len = available;
            return chunks;
        }
        // The chunks cover stream bytes [0, whole) where the stream is
        // `partial ++ data`; the tail of `data` becomes the new partial sample.
        chunks.head = self.partial;
        chunks.head_len = held;
        chunks.end = whole;
        let rest = &data[whole - held..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
        chunks
    }

    /// Return and drop the bytes held back that make no whole sample.
    pub fn flush(&mut self) -> Vec<u8> {
        let rest = self.partial[..self.partial_len].to_vec();
        self.partial_len = 0;
        rest
    }

    /// The frame for `chunk`, taking the next sequence number.
    pub fn frame<'a>(&'a mut self, chunk: &'a Chunk<'a>) -> AudioChunkFrame<'a> {
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        AudioChunkFrame::from_parts(
            chunk.head(),
            chunk.body,
            sequence,
            Duration::of(chunk.len() / self.sample_width, self.sample_rate),
            &self.context_id,
            self.context_escaped_len,
        )
    }
}

/// The chunks produced by one [`Chunker::push`].
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    head: [u8; 4],
    head_len: usize,
    data: &'a [u8],
    /// Next stream offset (the stream is `head ++ data`).
    pos: usize,
    /// Stream offset where the whole samples end.
    end: usize,
    max: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        if self.pos >= self.end {
            return None;
        }
        let stop = self.end.min(self.pos + self.max);
        let chunk = if self.pos < self.head_len {
            // Only the first chunk can start inside the held bytes; a chunk is
            // at least one sample, so it always takes all of them.
            Chunk {
                head: self.head,
                head_len: self.head_len,
                body: &self.data[..stop - self.head_len],
            }
        } else {
            Chunk {
                head: [0; 4],
                head_len: 0,
                body: &self.data[self.pos - self.head_len..stop - self.head_len],
            }
        };
        self.pos = stop;
        Some(chunk)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.end - self.pos.min(self.end)).div_ceil(self.max);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Chunks<'_> {}

/// One chunk: up to three bytes held from earlier pushes followed by a slice
/// of the pushed data.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    head: [u8; 4],
    head_len: usize,
    body: &'a [u8],
}

impl<'a> Chunk<'a> {
    /// Bytes completed from earlier pushes (empty except maybe for the first chunk).
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }

    /// The part that is a slice of the pushed data.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    pub fn len(&self) -> usize {
        self.head_len + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the chunk into `dst` (exactly `len()` bytes).
    pub fn write_into<'o>(&self, dst: &'o mut [MaybeUninit<u8>]) -> &'o mut [u8] {
        let mut w = Writer::new(dst);
        w.put(self.head());
        w.put(self.body);
        w.finish()
    }

    pub fn to_vec(&self) -> Vec<u8> {
        [self.head(), self.body].concat()
    }
}

// ---- audio_chunk frame ------------------------------------------------------

/// `duration_ms` of a chunk: whole milliseconds plus thousandths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    pub whole_ms: u64,
    /// Thousandths of a millisecond, 0..=999, after rounding.
    pub frac: u16,
}

impl Duration {
    /// `samples * 1000 / sample_rate` ms, rounded to 3 decimals, ties to even.
    /// `sample_rate` must not be zero.
    pub fn of(samples: usize, sample_rate: u32) -> Self {
        let rate = sample_rate as u64;
        let (mut whole, rem) = match (samples as u64).checked_mul(1000) {
            Some(num) => (num / rate, num % rate),
            None => {
                // Beyond any real chunk; exact in u128, saturated to u64.
                let num = samples as u128 * 1000;
                (
                    u64::try_from(num / rate as u128).unwrap_or(u64::MAX),
                    (num % rate as u128) as u64,
                )
            }
        };
        let mut frac = 0;
        if rem != 0 {
            // rem < rate <= 2^32, so none of this overflows.
            let scaled = rem * 1000;
            frac = scaled / rate;
            let r = scaled % rate;
            if 2 * r > rate || (2 * r == rate && frac % 2 == 1) {
                frac += 1;
            }
            if frac == 1000 {
                whole = whole.saturating_add(1);
                frac = 0;
            }
        }
        Self {
            whole_ms: whole,
            frac: frac as u16,
        }
    }

    /// The JSON text length of the value.
    fn text_len(&self) -> usize {
        decimal_len(self.whole_ms)
            + if self.frac == 0 {
                0
            } else {
                1 + frac_digits(self.frac).1
            }
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.put_u64(self.whole_ms);
        if self.frac != 0 {
            let (digits, n) = frac_digits(self.frac);
            w.put(b".");
            w.put(&digits[..n]);
        }
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [MaybeUninit::uninit(); 32];
        let mut w = Writer::new(&mut buf[..self.text_len()]);
        self.write(&mut w);
        f.write_str(std::str::from_utf8(w.finish()).expect("ASCII"))
    }
}

/// The three decimals of `frac` (1..=999) without trailing zeros.
fn frac_digits(frac: u16) -> ([u8; 3], usize) {
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let n = if frac % 100 == 0 {
        1
    } else if frac % 10 == 0 {
        2
    } else {
        3
    };
    (digits, n)
}

fn decimal_len(v: u64) -> usize {
    v.checked_ilog10().unwrap_or(0) as usize + 1
}

/// Whether `b` must be escaped inside a JSON string.
#[inline(always)]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `s` needs escaping. Blocks of 16 bytes are checked
/// without branches (one SSE2 compare sequence), so the common case of an id
/// with nothing to escape costs a few instructions per block.
fn any_needs_escape(s: &[u8]) -> bool {
    let mut blocks = s.chunks_exact(16);
    for block in &mut blocks {
        let mut hit = 0u8;
        for &b in block {
            hit |= needs_escape(b) as u8;
        }
        if hit != 0 {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| needs_escape(b))
}

/// Length of `s` escaped as the inside of a JSON string.
pub fn json_escaped_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    if !any_needs_escape(bytes) {
        return bytes.len();
    }
    bytes.len()
        + bytes
            .iter()
            .map(|&b| match b {
                b'"' | b'\\' | 0x08 | 0x0C | b'\n' | b'\r' | b'\t' => 1,
                0..=0x1F => 5,
                _ => 0,
            })
            .sum::<usize>()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Write `s` escaped as the inside of a JSON string (`json_escaped_len(s)` bytes):
/// `"` and `\\` and the control characters below U+0020 are escaped (short forms
/// where JSON has them, else `\\u00XX`); everything else, non-ASCII included,
/// is copied as UTF-8.
fn write_json_escaped(s: &str, escaped_len: usize, w: &mut Writer<'_>) {
    let bytes = s.as_bytes();
    if escaped_len == bytes.len() {
        w.put(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0C => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            _ => 0,
        };
        w.put(&bytes[start..i]);
        if short != 0 {
            w.put(&[b'\\', short]);
        } else {
            w.put(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xF) as usize],
            ]);
        }
        start = i + 1;
    }
    w.put(&bytes[start..]);
}

const P_DATA: &[u8] = br#"{"type":"audio_chunk","data":""#;
const P_SEQUENCE: &[u8] = br#"","sequence":"#;
const P_DURATION: &[u8] = br#","duration_ms":"#;
const P_CONTEXT: &[u8] = br#","context_id":""#;
const P_END: &[u8] = br#""}"#;
const FIXED_LEN: usize =
    P_DATA.len() + P_SEQUENCE.len() + P_DURATION.len() + P_CONTEXT.len() + P_END.len();

/// One `audio_chunk` frame, ready to be written; [`len`](Self::len) is exact.
#[derive(Debug, Clone)]
pub struct AudioChunkFrame<'a> {
    head: &'a [u8],
    body: &'a [u8],
    sequence: u64,
    duration: Duration,
    context_id: &'a str,
    context_escaped_len: usize,
    len: usize,
}

impl<'a> AudioChunkFrame<'a> {
    /// The frame for `data`, a whole number of `sample_width`-byte samples at
    /// `sample_rate` Hz.
    ///
    /// Errors: BadSampleWidth, NotPositive (zero rate), PartialSample when
    /// `data` ends inside a sample.
    pub fn new(
        data: &'a [u8],
        sequence: u64,
        context_id: &'a str,
        sample_rate: u32,
        sample_width: usize,
    ) -> Result<Self> {
        check_sample_width(sample_width)?;
        check_sample_rate(sample_rate)?;
        if data.len() % sample_width != 0 {
            return Err(Error::PartialSample {
                len: data.len(),
                sample_width,
            });
        }
        let duration = Duration::of(data.len() / sample_width, sample_rate);
        Ok(Self::from_parts(
            &[],
            data,
            sequence,
            duration,
            context_id,
            json_escaped_len(context_id),
        ))
    }

    /// A frame whose data is `head ++ body`; `context_escaped_len` must be
    /// `json_escaped_len(context_id)`.
    fn from_parts(
        head: &'a [u8],
        body: &'a [u8],
        sequence: u64,
        duration: Duration,
        context_id: &'a str,
        context_escaped_len: usize,
    ) -> Self {
        debug_assert_eq!(context_escaped_len, json_escaped_len(context_id));
        let len = FIXED_LEN
            + STANDARD.encoded_length(head.len() + body.len())
            + decimal_len(sequence)
            + duration.text_len()
            + context_escaped_len;
        Self {
            head,
            body,
            sequence,
            duration,
            context_id,
            context_escaped_len,
            len,
        }
    }

    /// Exact length of the frame in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Write the frame into `dst`, which must be exactly [`len`](Self::len)
    /// bytes (panics otherwise); returns `dst`, now initialised.
    pub fn write_into<'o>(&self, dst: &'o mut [MaybeUninit<u8>]) -> &'o mut [u8] {
        assert_eq!(dst.len(), self.len, "frame buffer has the wrong length");
        let mut w = Writer::new(dst);
        w.put(P_DATA);
        w.put_base64(self.head, self.body);
        w.put(P_SEQUENCE);
        w.put_u64(self.sequence);
        w.put(P_DURATION);
        self.duration.write(&mut w);
        w.put(P_CONTEXT);
        write_json_escaped(self.context_id, self.context_escaped_len, &mut w);
        w.put(P_END);
        w.finish()
    }

    pub fn to_vec(&self) -> Vec<u8> {
        vec_with(self.len, |dst| Ok::<_, Infallible>(self.write_into(dst)))
            .unwrap_or_else(|never| match never {})
    }
}

/// The complete `audio_chunk` frame for one chunk, as UTF-8 JSON bytes.
pub fn audio_chunk_frame(
    data: &[u8],
    sequence: u64,
    context_id: &str,
    sample_rate: u32,
    sample_width: usize,
) -> Result<Vec<u8>> {
    Ok(AudioChunkFrame::new(data, sequence, context_id, sample_rate, sample_width)?.to_vec())
}

// ---- writer -------------------------------------------------------------------

/// Sequential writer into a possibly uninitialised buffer. `finish` checks that
/// the buffer was filled exactly, so no uninitialised byte is ever exposed.
struct Writer<'o> {
    buf: &'o mut [MaybeUninit<u8>],
    pos: usize,
}

impl<'o> Writer<'o> {
    fn new(buf: &'o mut [MaybeUninit<u8>]) -> Self {
        Self { buf, pos: 0 }
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        assert!(end <= self.buf.len(), "writer overflow");
        // SAFETY: bounds checked above; `MaybeUninit<u8>` has the layout of `u8`
        // and the regions cannot overlap (`bytes` is not borrowed from `buf`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.buf.as_mut_ptr().add(self.pos).cast::<u8>(),
                bytes.len(),
            );
        }
        self.pos = end;
    }

    fn put_u64(&mut self, mut v: u64) {
        // Two digits at a time from the end, as in most integer printers.
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
                                    2021222324252627282930313233343536373839\
                                    4041424344454647484950515253545556575859\
                                    6061626364656667686970717273747576777879\
                                    8081828384858687888990919293949596979899";
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        while v >= 100 {
            let pair = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        if v >= 10 {
            let pair = v as usize * 2;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        } else {
            i -= 1;
            digits[i] = b'0' + v as u8;
        }
        self.put(&digits[i..]);
    }

    /// Standard base64 with padding of `head ++ body`.
    fn put_base64(&mut self, head: &[u8], body: &[u8]) {
        let mut body = body;
        if !head.is_empty() {
            // base64(a ++ b) == base64(a) ++ base64(b) when len(a) % 3 == 0:
            // complete the head to a multiple of 3 bytes from the body.
            let take = ((3 - head.len() % 3) % 3).min(body.len());
            let mut first = [0u8; 6];
            first[..head.len()].copy_from_slice(head);
            first[head.len()..head.len() + take].copy_from_slice(&body[..take]);
            body = &body[take..];
            self.put_base64_contiguous(&first[..head.len() + take]);
        }
        self.put_base64_contiguous(body);
    }

    fn put_base64_contiguous(&mut self, src: &[u8]) {
        let n = STANDARD.encoded_length(src.len());
        let end = self.pos + n;
        assert!(end <= self.buf.len(), "writer overflow");
        let out = Out::from_uninit_slice(&mut self.buf[self.pos..end]);
        let written = STANDARD.encode(src, out).len();
        debug_assert_eq!(written, n);
        self.pos = end;
    }

    fn finish(self) -> &'o mut [u8] {
        assert_eq!(self.pos, self.buf.len(), "writer left bytes unwritten");
        // SAFETY: every byte of `buf` was written (pos == len and writes are sequential).
        unsafe { assume_init(self.buf) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks_of(c: &mut Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        c.push(data).map(|ch| ch.to_vec()).collect()
    }

    #[test]
    fn chunker_validates_arguments() {
        assert_eq!(
            Chunker::new(10, 3, 8000, String::new()).unwrap_err(),
            Error::BadSampleWidth { sample_width: 3 }
        );
        assert_eq!(
            Chunker::new(3, 4, 8000, String::new()).unwrap_err(),
            Error::ChunkTooSmall {
                max_bytes: 3,
                sample_width: 4
            }
        );
        assert_eq!(
            Chunker::new(0, 1, 8000, String::new()).unwrap_err(),
            Error::ChunkTooSmall {
                max_bytes: 0,
                sample_width: 1
            }
        );
        assert!(matches!(
            Chunker::new(10, 2, 0, String::new()),
            Err(Error::NotPositive { .. })
        ));
        assert_eq!(
            Chunker::new(7, 2, 8000, String::new())
                .unwrap()
                .max_chunk_bytes(),
            6
        );
    }

    #[test]
    fn chunker_emits_whole_samples_at_once() {
        let mut c = Chunker::new(4, 2, 8000, String::new()).unwrap();
        assert_eq!(chunks_of(&mut c, &[1]), Vec::<Vec<u8>>::new());
        assert_eq!(c.pending(), 1);
        assert_eq!(chunks_of(&mut c, &[2, 3]), vec![vec![1, 2]]);
        assert_eq!(c.pending(), 1);
        assert_eq!(
            chunks_of(&mut c, &[4, 5, 6, 7, 8, 9, 10, 11]),
            vec![vec![3, 4, 5, 6], vec![7, 8, 9, 10]]
        );
        assert_eq!(c.pending(), 1);
        assert_eq!(c.flush(), vec![11]);
        assert_eq!(c.pending(), 0);
        assert_eq!(c.flush(), Vec::<u8>::new());
        assert_eq!(chunks_of(&mut c, &[]), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn chunker_holds_partial_samples_of_width_four() {
        let mut c = Chunker::new(8, 4, 8000, String::new()).unwrap();
        assert!(chunks_of(&mut c, &[1]).is_empty());
        assert!(chunks_of(&mut c, &[2]).is_empty());
        assert!(chunks_of(&mut c, &[3]).is_empty());
        assert_eq!(c.pending(), 3);
        assert_eq!(
            chunks_of(&mut c, &[4, 5, 6, 7, 8, 9]),
            vec![vec![1, 2, 3, 4, 5, 6, 7, 8]]
        );
        assert_eq!(c.pending(), 1);
        assert_eq!(
            chunks_of(&mut c, &[10, 11, 12, 13, 14]),
            vec![vec![9, 10, 11, 12]]
        );
        assert_eq!(c.flush(), vec![13, 14]);
    }

    /// Deterministic pseudo-random numbers for the split property test.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n
        }
    }

    #[test]
    fn chunker_loses_and_duplicates_nothing() {
        let mut rng = Lcg(7);
        for round in 0..500 {
            let width = [1, 2, 4][round % 3];
            let max = 1 + rng.next(40);
            let Ok(mut c) = Chunker::new(max, width, 16000, String::new()) else {
                assert!(max < width);
                continue;
            };
            let stream: Vec<u8> = (0..rng.next(300)).map(|_| rng.next(256) as u8).collect();
            let mut joined = Vec::new();
            let mut pos = 0;
            while pos < stream.len() {
                let piece = &stream[pos..(pos + rng.next(60)).min(stream.len())];
                pos += piece.len();
                let chunks = c.push(piece);
                let expected = chunks.len();
                let mut count = 0;
                for chunk in chunks {
                    count += 1;
                    assert!(chunk.len() <= max && chunk.len() % width == 0 && !chunk.is_empty());
                    joined.extend_from_slice(&chunk.to_vec());
                }
                assert_eq!(count, expected);
                // Low latency: everything but a partial sample was handed out.
                assert_eq!(joined.len() + c.pending(), pos);
                assert!(c.pending() < width);
            }
            joined.extend(c.flush());
            assert_eq!(joined, stream);
        }
    }

    #[test]
    fn durations_are_exact_or_rounded_to_three_decimals() {
        let cases: &[(usize, u32, &str)] = &[
            (2400, 24000, "100"),
            (480, 24000, "20"),
            (0, 24000, "0"),
            (1, 24000, "0.042"), // 0.041666...
            (1, 22050, "0.045"), // 0.045351...
            (441, 22050, "20"),
            (451, 22000, "20.5"),
            (1, 16000, "0.062"), // 0.0625, tie -> even
            (3, 16000, "0.188"), // 0.1875, tie -> even
            (1, 8000, "0.125"),
            (1, 1, "1000"),
            (1, 3, "333.333"),
            (2, 3, "666.667"),
            (1, 3_000_000, "0"),            // 0.000333 rounds to 0
            (1, 2_000_000, "0"),            // 0.0005, tie -> even (0)
            (3, 2_000_000, "0.002"),        // 0.0015, tie -> even (0.002)
            (2_000_001, 2_000_000, "1000"), // 1000.0005 -> 1000
            (1999999, 2000, "999999.5"),
            (18_446_744_073_709_551, 1, "18446744073709551000"),
        ];
        for &(samples, rate, expected) in cases {
            assert_eq!(
                Duration::of(samples, rate).to_string(),
                expected,
                "{samples} samples at {rate} Hz"
            );
        }
        assert_eq!(
            Duration::of(1999, 1_000_000),
            Duration {
                whole_ms: 1,
                frac: 999
            }
        );
        assert_eq!(
            Duration::of(19_999_999, 10_000_000),
            Duration {
                whole_ms: 2000,
                frac: 0
            }
        );
        // Past u64 range the whole part saturates instead of wrapping.
        assert_eq!(Duration::of(usize::MAX, 1).whole_ms, u64::MAX);
        assert_eq!(
            Duration::of(usize::MAX, 1000),
            Duration {
                whole_ms: usize::MAX as u64,
                frac: 0
            }
        );
    }

    #[test]
    fn integers_are_written_in_decimal() {
        let mut values = vec![
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            12345,
            u64::MAX,
            u64::MAX - 1,
        ];
        values.extend((0..20).map(|p| 10u64.pow(p)));
        values.extend((1..20).map(|p| 10u64.pow(p) - 1));
        for v in values {
            assert_eq!(decimal_len(v), v.to_string().len(), "{v}");
            let mut buf = vec![MaybeUninit::uninit(); decimal_len(v)];
            let mut w = Writer::new(&mut buf);
            w.put_u64(v);
            assert_eq!(std::str::from_utf8(w.finish()).unwrap(), v.to_string());
        }
    }

    #[test]
    fn json_escaping() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("abc-123", "abc-123"),
            ("a\"b\\c", "a\\\"b\\\\c"),
            ("\n\r\t\u{8}\u{c}", "\\n\\r\\t\\b\\f"),
            ("\u{0}\u{1f}\u{1}", "\\u0000\\u001f\\u0001"),
            ("\u{7f}é€😀/", "\u{7f}é€😀/"),
        ];
        for &(raw, escaped) in cases {
            let mut buf = vec![MaybeUninit::uninit(); json_escaped_len(raw)];
            let mut w = Writer::new(&mut buf);
            write_json_escaped(raw, json_escaped_len(raw), &mut w);
            assert_eq!(std::str::from_utf8(w.finish()).unwrap(), escaped, "{raw:?}");
        }
    }

    #[test]
    fn frame_has_the_exact_expected_text() {
        let frame = audio_chunk_frame(&[1, 2, 3, 4], 7, "ctx\"1", 24000, 2).unwrap();
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            r#"{"type":"audio_chunk","data":"AQIDBA==","sequence":7,"duration_ms":0.083,"context_id":"ctx\"1"}"#
        );
        let frame = audio_chunk_frame(&[0; 4800], u64::MAX, "", 24000, 2).unwrap();
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(text
            .ends_with(r#"","sequence":18446744073709551615,"duration_ms":100,"context_id":""}"#));
        assert_eq!(
            frame.len(),
            AudioChunkFrame::new(&[0; 4800], u64::MAX, "", 24000, 2)
                .unwrap()
                .len()
        );
        let empty = audio_chunk_frame(&[], 0, "", 8000, 1).unwrap();
        assert_eq!(
            std::str::from_utf8(&empty).unwrap(),
            r#"{"type":"audio_chunk","data":"","sequence":0,"duration_ms":0,"context_id":""}"#
        );
    }

    #[test]
    fn frame_matches_serde_json_for_many_inputs() {
        let mut rng = Lcg(11);
        let contexts = [
            "",
            "plain",
            "quote\"back\\slash",
            "ctl\u{0}\u{1b}\n",
            "ünï€😀",
            "\u{2028}\u{7f}",
        ];
        for round in 0..300 {
            let width = [1, 2, 4][round % 3];
            let len = rng.next(200) * width;
            let data: Vec<u8> = (0..len).map(|_| rng.next(256) as u8).collect();
            let ctx = contexts[round % contexts.len()];
            let rate = [8000, 16000, 22050, 24000, 44100, 48000, 7][rng.next(7)];
            let seq = rng.next(1_000_000) as u64;
            let frame = audio_chunk_frame(&data, seq, ctx, rate, width).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
            let obj = v.as_object().unwrap();
            assert_eq!(
                obj.keys().collect::<Vec<_>>(),
                ["type", "data", "sequence", "duration_ms", "context_id"]
            );
            assert_eq!(obj["type"], "audio_chunk");
            assert_eq!(
                base64_simd::STANDARD
                    .decode_to_vec(obj["data"].as_str().unwrap())
                    .unwrap(),
                data
            );
            assert_eq!(obj["sequence"].as_u64(), Some(seq));
            assert_eq!(obj["context_id"].as_str(), Some(ctx));
            let ms = obj["duration_ms"].as_f64().unwrap();
            let exact = (len / width) as f64 * 1000.0 / rate as f64;
            assert!((ms - exact).abs() <= 0.0005 + 1e-9, "{ms} vs {exact}");
        }
    }

    #[test]
    fn frame_validates_arguments() {
        assert_eq!(
            audio_chunk_frame(&[0; 3], 0, "", 8000, 2),
            Err(Error::PartialSample {
                len: 3,
                sample_width: 2
            })
        );
        assert_eq!(
            audio_chunk_frame(&[0; 3], 0, "", 8000, 3),
            Err(Error::BadSampleWidth { sample_width: 3 })
        );
        assert!(matches!(
            audio_chunk_frame(&[0; 2], 0, "", 0, 2),
            Err(Error::NotPositive { .. })
        ));
    }

    #[test]
    fn chunker_frames_carry_consecutive_sequences_and_all_data() {
        let mut c = Chunker::new(6, 2, 8000, "c1".to_owned()).unwrap();
        c.set_next_sequence(41);
        let stream: Vec<u8> = (0..=100).collect();
        let mut decoded = Vec::new();
        let mut sequences = Vec::new();
        for piece in stream.chunks(7) {
            let chunks: Vec<Chunk<'_>> = c.push(piece).collect();
            for chunk in &chunks {
                let frame = c.frame(chunk).to_vec();
                let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
                decoded.extend(
                    base64_simd::STANDARD
                        .decode_to_vec(v["data"].as_str().unwrap())
                        .unwrap(),
                );
                sequences.push(v["sequence"].as_u64().unwrap());
                assert_eq!(v["context_id"], "c1");
                let samples = chunk.len() / 2;
                assert_eq!(v["duration_ms"].as_f64().unwrap(), samples as f64 / 8.0);
            }
        }
        decoded.extend(c.flush());
        assert_eq!(decoded, stream);
        assert_eq!(
            sequences,
            (41..41 + sequences.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(c.next_sequence(), 41 + sequences.len() as u64);
        c.set_context_id("new\"id".to_owned());
        let chunk = c.push(&[0, 0]).next().unwrap();
        let frame = c.frame(&chunk).to_vec();
        assert!(std::str::from_utf8(&frame)
            .unwrap()
            .ends_with(r#""context_id":"new\"id"}"#));
    }
}
