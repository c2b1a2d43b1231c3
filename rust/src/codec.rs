//! Sample-format conversions: G.711 mu-law and A-law, and PCM16 <-> float32.
//!
//! Every function takes bytes and writes bytes. PCM16 is signed 16-bit
//! little-endian, f32 is IEEE-754 binary32 little-endian, G.711 is one byte per
//! sample.
//!
//! G.711 follows ITU-T G.711 as implemented by the classic Sun reference code
//! (and therefore by CPython's `audioop`): mu-law encodes the top 14 bits of a
//! PCM16 sample, A-law the top 13 bits, so each encoder is one lookup into a
//! table built at compile time (16 Ki entries for mu-law, 8 Ki for A-law; both
//! fit in the L1 cache). Decoders are 256-entry tables.
//!
//! PCM16 <-> f32 uses the scale 32768: `f = s / 32768`, so PCM16 maps onto
//! `[-1.0, 32767/32768]` exactly. Back to PCM16 the value is clipped to
//! `[-1.0, 1.0]`, multiplied by 32768, rounded to nearest (ties to even) and
//! saturated to `[-32768, 32767]`; NaN becomes 0. The round trip
//! PCM16 -> f32 -> PCM16 is the identity.
//!
//! Each conversion comes in two forms: `*_into(src, dst)` writes into a
//! caller-provided (possibly uninitialised) buffer of exactly
//! `*_len(src.len())` bytes, and a `Vec`-returning convenience wrapper.

use std::convert::Infallible;
use std::mem::MaybeUninit;

use crate::buf::{assume_init, vec_with};
use crate::{Error, Result};

// ---- G.711 reference algorithms (used only to build the tables) ------------

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;
const ULAW_SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Index of the first segment whose end is >= `value` (8 if none).
const fn segment(value: i32, ends: &[i32; 8]) -> i32 {
    let mut seg = 0;
    while seg < 8 {
        if value <= ends[seg] {
            return seg as i32;
        }
        seg += 1;
    }
    8
}

/// Mu-law code of a 14-bit signed linear value (-8192..=8191).
const fn ulaw_encode14(value: i32) -> u8 {
    let (mut mag, mask) = if value < 0 {
        (-value, 0x7F)
    } else {
        (value, 0xFF)
    };
    if mag > ULAW_CLIP {
        mag = ULAW_CLIP;
    }
    mag += ULAW_BIAS >> 2;
    let seg = segment(mag, &ULAW_SEG_END);
    let code = if seg >= 8 {
        0x7F
    } else {
        (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    };
    (code ^ mask) as u8
}

/// A-law code of a 13-bit signed linear value (-4096..=4095).
const fn alaw_encode13(value: i32) -> u8 {
    let (mag, mask) = if value >= 0 {
        (value, 0xD5)
    } else {
        (-value - 1, 0x55)
    };
    let seg = segment(mag, &ALAW_SEG_END);
    let code = if seg >= 8 {
        0x7F
    } else if seg < 2 {
        (seg << 4) | ((mag >> 1) & 0xF)
    } else {
        (seg << 4) | ((mag >> seg) & 0xF)
    };
    (code ^ mask) as u8
}

/// PCM16 value of a mu-law code.
const fn ulaw_decode(code: u8) -> i16 {
    let u = !code as i32;
    let t = (((u & 0xF) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

/// PCM16 value of an A-law code.
const fn alaw_decode(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mut t = (a & 0xF) << 4;
    let seg = (a & 0x70) >> 4;
    t = match seg {
        0 => t + 8,
        1 => t + 0x108,
        _ => (t + 0x108) << (seg - 1),
    };
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

// ---- tables -----------------------------------------------------------------

/// Mu-law code indexed by the top 14 bits of a PCM16 sample (as unsigned).
static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut table = [0u8; 1 << 14];
    let mut i = 0;
    while i < table.len() {
        // Sign-extend the 14-bit index back to a signed value.
        let value = ((i as i32) << 18) >> 18;
        table[i] = ulaw_encode14(value);
        i += 1;
    }
    table
};

/// A-law code indexed by the top 13 bits of a PCM16 sample (as unsigned).
static ALAW_ENCODE: [u8; 1 << 13] = {
    let mut table = [0u8; 1 << 13];
    let mut i = 0;
    while i < table.len() {
        let value = ((i as i32) << 19) >> 19;
        table[i] = alaw_encode13(value);
        i += 1;
    }
    table
};

static ULAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_decode(i as u8);
        i += 1;
    }
    table
};

static ALAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_decode(i as u8);
        i += 1;
    }
    table
};

// ---- single-sample API ------------------------------------------------------

/// Mu-law code of one PCM16 sample (bit-exact with `audioop.lin2ulaw`).
#[inline]
pub fn mulaw_encode(sample: i16) -> u8 {
    ULAW_ENCODE[((sample >> 2) as u16 & 0x3FFF) as usize]
}

/// PCM16 value of one mu-law code (bit-exact with `audioop.ulaw2lin`).
#[inline]
pub fn mulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// A-law code of one PCM16 sample (bit-exact with `audioop.lin2alaw`).
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE[((sample >> 3) as u16 & 0x1FFF) as usize]
}

/// PCM16 value of one A-law code (bit-exact with `audioop.alaw2lin`).
#[inline]
pub fn alaw_decode_sample(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// The scale between PCM16 and float32: `f32 = pcm16 / PCM16_SCALE`.
pub const PCM16_SCALE: f32 = 32768.0;

/// One PCM16 sample as float32 (`s / 32768`; exact).
#[inline]
pub fn sample_to_f32(sample: i16) -> f32 {
    sample as f32 * (1.0 / PCM16_SCALE)
}

/// One float32 sample as PCM16: clip to [-1, 1], scale by 32768, round to
/// nearest (ties to even), saturate to i16; NaN gives 0.
#[inline]
pub fn sample_from_f32(value: f32) -> i16 {
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer (ties to
    // even) for |x| < 2^22. Unlike `f32::round_ties_even` this vectorizes on
    // baseline x86-64 (SSE2). Scaling by 32768 is exact, so clamping after it is
    // the same as clipping to [-1, 1] before it.
    const MAGIC: f32 = 12_582_912.0;
    let value = if value.is_nan() { 0.0 } else { value };
    let scaled = (value * PCM16_SCALE).clamp(-32768.0, 32767.0);
    let rounded = (scaled + MAGIC) - MAGIC;
    // SAFETY: `rounded` is a whole number in [-32768, 32767] (not NaN, not
    // infinite), so the conversion is exact.
    unsafe { rounded.to_int_unchecked::<i32>() as i16 }
}

// ---- buffer API ---------------------------------------------------------------

fn check_whole(len: usize, sample_width: usize) -> Result<()> {
    if len % sample_width == 0 {
        Ok(())
    } else {
        Err(Error::PartialSample { len, sample_width })
    }
}

fn check_dst(dst_len: usize, expected: usize) {
    assert_eq!(dst_len, expected, "output buffer has the wrong length");
}

/// Output length of a PCM16 -> G.711 conversion, or PartialSample for an odd length.
pub fn pcm16_to_g711_len(len: usize) -> Result<usize> {
    check_whole(len, 2)?;
    Ok(len / 2)
}

/// Output length of a G.711 -> PCM16 conversion.
pub fn g711_to_pcm16_len(len: usize) -> usize {
    len * 2
}

/// Output length of PCM16 -> f32, or PartialSample for an odd length.
pub fn pcm16_to_f32_len(len: usize) -> Result<usize> {
    check_whole(len, 2)?;
    Ok(len * 2)
}

/// Output length of f32 -> PCM16, or PartialSample unless a multiple of 4.
pub fn f32_to_pcm16_len(len: usize) -> Result<usize> {
    check_whole(len, 4)?;
    Ok(len / 2)
}

#[inline(always)]
fn encode_into<'o>(
    pcm: &[u8],
    dst: &'o mut [MaybeUninit<u8>],
    table: &[u8],
    shift: u32,
) -> Result<&'o mut [u8]> {
    check_dst(dst.len(), pcm16_to_g711_len(pcm.len())?);
    let mask = (table.len() - 1) as u16;
    for (out, s) in dst.iter_mut().zip(pcm.chunks_exact(2)) {
        let sample = i16::from_le_bytes([s[0], s[1]]);
        out.write(table[((sample >> shift) as u16 & mask) as usize]);
    }
    // SAFETY: the zip covered all of `dst` (it has exactly pcm.len()/2 elements).
    Ok(unsafe { assume_init(dst) })
}

#[inline(always)]
fn decode_into<'o>(
    codes: &[u8],
    dst: &'o mut [MaybeUninit<u8>],
    table: &[i16; 256],
) -> &'o mut [u8] {
    check_dst(dst.len(), g711_to_pcm16_len(codes.len()));
    for (out, &code) in dst.chunks_exact_mut(2).zip(codes) {
        let [lo, hi] = table[code as usize].to_le_bytes();
        out[0].write(lo);
        out[1].write(hi);
    }
    // SAFETY: `dst` has exactly two bytes per code and all were written.
    unsafe { assume_init(dst) }
}

/// PCM16 -> mu-law into `dst` (length `pcm.len() / 2`).
///
/// Errors: PartialSample for an odd `pcm.len()`. Panics if `dst` has the wrong length.
pub fn pcm16_to_mulaw_into<'o>(pcm: &[u8], dst: &'o mut [MaybeUninit<u8>]) -> Result<&'o mut [u8]> {
    encode_into(pcm, dst, &ULAW_ENCODE, 2)
}

/// PCM16 -> A-law into `dst` (length `pcm.len() / 2`).
pub fn pcm16_to_alaw_into<'o>(pcm: &[u8], dst: &'o mut [MaybeUninit<u8>]) -> Result<&'o mut [u8]> {
    encode_into(pcm, dst, &ALAW_ENCODE, 3)
}

/// Mu-law -> PCM16 into `dst` (length `codes.len() * 2`).
pub fn mulaw_to_pcm16_into<'o>(codes: &[u8], dst: &'o mut [MaybeUninit<u8>]) -> &'o mut [u8] {
    decode_into(codes, dst, &ULAW_DECODE)
}

/// A-law -> PCM16 into `dst` (length `codes.len() * 2`).
pub fn alaw_to_pcm16_into<'o>(codes: &[u8], dst: &'o mut [MaybeUninit<u8>]) -> &'o mut [u8] {
    decode_into(codes, dst, &ALAW_DECODE)
}

/// PCM16 -> f32 into `dst` (length `pcm.len() * 2`).
pub fn pcm16_to_f32_into<'o>(pcm: &[u8], dst: &'o mut [MaybeUninit<u8>]) -> Result<&'o mut [u8]> {
    check_dst(dst.len(), pcm16_to_f32_len(pcm.len())?);
    for (out, s) in dst.chunks_exact_mut(4).zip(pcm.chunks_exact(2)) {
        let bytes = sample_to_f32(i16::from_le_bytes([s[0], s[1]])).to_le_bytes();
        for (o, b) in out.iter_mut().zip(bytes) {
            o.write(b);
        }
    }
    // SAFETY: four bytes were written for each of the pcm.len()/2 samples.
    Ok(unsafe { assume_init(dst) })
}

/// f32 -> PCM16 into `dst` (length `data.len() / 2`).
///
/// Errors: PartialSample unless `data.len()` is a multiple of 4.
pub fn f32_to_pcm16_into<'o>(data: &[u8], dst: &'o mut [MaybeUninit<u8>]) -> Result<&'o mut [u8]> {
    check_dst(dst.len(), f32_to_pcm16_len(data.len())?);
    for (out, s) in dst.chunks_exact_mut(2).zip(data.chunks_exact(4)) {
        let [lo, hi] = sample_from_f32(f32::from_le_bytes([s[0], s[1], s[2], s[3]])).to_le_bytes();
        out[0].write(lo);
        out[1].write(hi);
    }
    // SAFETY: two bytes were written for each of the data.len()/4 samples.
    Ok(unsafe { assume_init(dst) })
}

/// PCM16 -> mu-law.
pub fn pcm16_to_mulaw(pcm: &[u8]) -> Result<Vec<u8>> {
    vec_with(pcm16_to_g711_len(pcm.len())?, |d| {
        pcm16_to_mulaw_into(pcm, d)
    })
}

/// Mu-law -> PCM16.
pub fn mulaw_to_pcm16(codes: &[u8]) -> Vec<u8> {
    vec_with(g711_to_pcm16_len(codes.len()), |d| {
        Ok::<_, Infallible>(mulaw_to_pcm16_into(codes, d))
    })
    .unwrap_or_else(|never| match never {})
}

/// PCM16 -> A-law.
pub fn pcm16_to_alaw(pcm: &[u8]) -> Result<Vec<u8>> {
    vec_with(pcm16_to_g711_len(pcm.len())?, |d| {
        pcm16_to_alaw_into(pcm, d)
    })
}

/// A-law -> PCM16.
pub fn alaw_to_pcm16(codes: &[u8]) -> Vec<u8> {
    vec_with(g711_to_pcm16_len(codes.len()), |d| {
        Ok::<_, Infallible>(alaw_to_pcm16_into(codes, d))
    })
    .unwrap_or_else(|never| match never {})
}

/// PCM16 -> f32.
pub fn pcm16_to_f32(pcm: &[u8]) -> Result<Vec<u8>> {
    vec_with(pcm16_to_f32_len(pcm.len())?, |d| pcm16_to_f32_into(pcm, d))
}

/// f32 -> PCM16.
pub fn f32_to_pcm16(data: &[u8]) -> Result<Vec<u8>> {
    vec_with(f32_to_pcm16_len(data.len())?, |d| {
        f32_to_pcm16_into(data, d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcm(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn samples(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    fn all_pcm16() -> Vec<i16> {
        (i16::MIN..=i16::MAX).collect()
    }

    #[test]
    fn mulaw_decode_reference_points() {
        // Values of the ITU/Sun table (as returned by audioop.ulaw2lin).
        assert_eq!(mulaw_decode(0x00), -32124);
        assert_eq!(mulaw_decode(0x80), 32124);
        assert_eq!(mulaw_decode(0x7F), 0);
        assert_eq!(mulaw_decode(0xFF), 0);
        assert_eq!(mulaw_decode(0x7E), -8);
        assert_eq!(mulaw_decode(0xFE), 8);
        assert_eq!(mulaw_decode(0x0F), -16764);
        assert_eq!(mulaw_decode(0x70), -120);
    }

    #[test]
    fn alaw_decode_reference_points() {
        assert_eq!(alaw_decode_sample(0xD5), 8);
        assert_eq!(alaw_decode_sample(0x55), -8);
        assert_eq!(alaw_decode_sample(0xAA), 32256);
        assert_eq!(alaw_decode_sample(0x2A), -32256);
        assert_eq!(alaw_decode_sample(0x80), 5504);
        assert_eq!(alaw_decode_sample(0x00), -5504);
    }

    #[test]
    fn mulaw_encode_reference_points() {
        assert_eq!(mulaw_encode(0), 0xFF);
        assert_eq!(mulaw_encode(-1), 0x7E); // -1 >> 2 is -1, not 0
        assert_eq!(mulaw_encode(i16::MAX), 0x80);
        assert_eq!(mulaw_encode(i16::MIN), 0x00);
        assert_eq!(mulaw_encode(32124), 0x80);
        assert_eq!(mulaw_encode(-32124), 0x00);
    }

    #[test]
    fn alaw_encode_reference_points() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn g711_codes_are_canonical_after_one_round() {
        for code in 0..=255u8 {
            let mu = mulaw_decode(code);
            // 0x7F ("negative zero") decodes to 0, which encodes as 0xFF.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(mulaw_encode(mu), expected, "mu-law code {code:#04x}");
            assert_eq!(
                alaw_encode(alaw_decode_sample(code)),
                code,
                "A-law code {code:#04x}"
            );
        }
    }

    #[test]
    fn g711_encoders_are_monotonic() {
        // Decoding the code of each sample never goes down as the sample grows.
        let mut last_mu = i16::MIN;
        let mut last_a = i16::MIN;
        for s in all_pcm16() {
            let mu = mulaw_decode(mulaw_encode(s));
            let a = alaw_decode_sample(alaw_encode(s));
            assert!(mu >= last_mu && a >= last_a, "not monotonic at {s}");
            last_mu = mu;
            last_a = a;
        }
    }

    #[test]
    fn g711_quantisation_error_is_bounded() {
        // G.711 keeps about 4 significant bits of the magnitude.
        for s in all_pcm16() {
            let mu = mulaw_decode(mulaw_encode(s)) as i32;
            let a = alaw_decode_sample(alaw_encode(s)) as i32;
            let bound = (s as i32).abs() / 16 + 140;
            assert!(
                (mu - s as i32).abs() <= bound.max(1100),
                "mu-law {s} -> {mu}"
            );
            assert!((a - s as i32).abs() <= bound.max(1100), "A-law {s} -> {a}");
        }
    }

    #[test]
    fn buffer_functions_match_single_sample_functions() {
        let all = all_pcm16();
        let bytes = pcm(&all);
        let mu = pcm16_to_mulaw(&bytes).unwrap();
        let a = pcm16_to_alaw(&bytes).unwrap();
        assert_eq!(mu.len(), all.len());
        for (i, &s) in all.iter().enumerate() {
            assert_eq!(mu[i], mulaw_encode(s));
            assert_eq!(a[i], alaw_encode(s));
        }
        let codes: Vec<u8> = (0..=255).collect();
        let mu_pcm = samples(&mulaw_to_pcm16(&codes));
        let a_pcm = samples(&alaw_to_pcm16(&codes));
        for code in 0..=255u8 {
            assert_eq!(mu_pcm[code as usize], mulaw_decode(code));
            assert_eq!(a_pcm[code as usize], alaw_decode_sample(code));
        }
    }

    #[test]
    fn odd_pcm16_input_is_a_partial_sample() {
        let err = Error::PartialSample {
            len: 3,
            sample_width: 2,
        };
        assert_eq!(pcm16_to_mulaw(&[0; 3]), Err(err.clone()));
        assert_eq!(pcm16_to_alaw(&[0; 3]), Err(err.clone()));
        assert_eq!(pcm16_to_f32(&[0; 3]), Err(err));
        assert_eq!(
            f32_to_pcm16(&[0; 6]),
            Err(Error::PartialSample {
                len: 6,
                sample_width: 4
            })
        );
        assert!(Error::PartialSample {
            len: 3,
            sample_width: 2
        }
        .to_string()
        .contains('3'));
    }

    #[test]
    fn empty_input_gives_empty_output() {
        assert!(pcm16_to_mulaw(&[]).unwrap().is_empty());
        assert!(pcm16_to_alaw(&[]).unwrap().is_empty());
        assert!(mulaw_to_pcm16(&[]).is_empty());
        assert!(alaw_to_pcm16(&[]).is_empty());
        assert!(pcm16_to_f32(&[]).unwrap().is_empty());
        assert!(f32_to_pcm16(&[]).unwrap().is_empty());
    }

    #[test]
    fn pcm16_f32_round_trip_is_identity() {
        let bytes = pcm(&all_pcm16());
        let f = pcm16_to_f32(&bytes).unwrap();
        assert_eq!(f.len(), bytes.len() * 2);
        let floats: Vec<f32> = f
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats[0], -1.0);
        assert_eq!(floats[32768], 0.0);
        assert_eq!(*floats.last().unwrap(), 32767.0 / 32768.0);
        assert_eq!(f32_to_pcm16(&f).unwrap(), bytes);
    }

    #[test]
    fn f32_to_pcm16_clips_rounds_and_handles_nan() {
        let cases: &[(f32, i16)] = &[
            (0.0, 0),
            (-0.0, 0),
            (1.0, 32767),
            (-1.0, -32768),
            (2.5, 32767),
            (-7.0, -32768),
            (f32::INFINITY, 32767),
            (f32::NEG_INFINITY, -32768),
            (f32::NAN, 0),
            (f32::MAX, 32767),
            (f32::MIN, -32768),
            (0.5, 16384),
            (1.4 / 32768.0, 1),
            (1.6 / 32768.0, 2),
            (-1.6 / 32768.0, -2),
            (0.5 / 32768.0, 0),   // tie -> even
            (1.5 / 32768.0, 2),   // tie -> even
            (2.5 / 32768.0, 2),   // tie -> even
            (-2.5 / 32768.0, -2), // tie -> even
            (32766.5 / 32768.0, 32766),
            (32767.5 / 32768.0, 32767),
            (1e-30, 0),
        ];
        let bytes: Vec<u8> = cases.iter().flat_map(|(f, _)| f.to_le_bytes()).collect();
        let out = samples(&f32_to_pcm16(&bytes).unwrap());
        for (i, &(f, expected)) in cases.iter().enumerate() {
            assert_eq!(out[i], expected, "f32 {f:e}");
            assert_eq!(sample_from_f32(f), expected, "f32 {f:e}");
        }
    }

    #[test]
    #[should_panic(expected = "wrong length")]
    fn into_functions_check_the_output_length() {
        let mut dst = [MaybeUninit::uninit(); 3];
        let _ = pcm16_to_mulaw_into(&[0; 4], &mut dst);
    }
}
