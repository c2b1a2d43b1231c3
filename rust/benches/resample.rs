//! Our polyphase resampler against rubato, streaming mono f32 in 20 ms chunks.
//!
//!     cargo bench --bench resample
//!
//! Prints, per conversion and resampler: microseconds per second of audio (best
//! and median of several runs), the ratio to ours, the delay (ms of audio the
//! resampler holds back), and two quality figures measured on the output: the
//! gain at 0.9 of the lower Nyquist frequency (the edge of our pass band) and
//! the level left of a tone just above the output Nyquist frequency (its alias)
//! or, when upsampling, of the image of a tone at 0.9 of the input Nyquist
//! frequency. This documents the choice of our own filter over the crate.

use std::f64::consts::PI;
use std::hint::black_box;
use std::time::Instant;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};
use slng_fast::resample::{Resampler, SampleFormat};

const CHUNK_SECONDS: f64 = 0.02;
const SECONDS: usize = 10;
const REPEATS: usize = 7;

/// One streaming resampler under test: feed one chunk, get its output.
trait Stream {
    fn name(&self) -> String;
    fn push(&mut self, chunk: &[f32], out: &mut Vec<f32>);
    /// Output samples of delay (rubato's `output_delay`; 0 for ours, which is time aligned).
    fn delay_out(&self) -> usize;
}

struct Ours {
    r: Resampler,
    bytes_in: Vec<u8>,
    bytes_out: Vec<u8>,
}

impl Ours {
    fn new(i: u32, o: u32) -> Self {
        Ours {
            r: Resampler::new(i, o, SampleFormat::F32, SampleFormat::F32).unwrap(),
            bytes_in: Vec::new(),
            bytes_out: Vec::new(),
        }
    }
}

impl Stream for Ours {
    fn name(&self) -> String {
        "ours (polyphase)".into()
    }
    fn push(&mut self, chunk: &[f32], out: &mut Vec<f32>) {
        self.bytes_in.clear();
        for v in chunk {
            self.bytes_in.extend_from_slice(&v.to_le_bytes());
        }
        self.bytes_out.clear();
        self.r.process(&self.bytes_in, &mut self.bytes_out);
        out.extend(
            self.bytes_out
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    fn delay_out(&self) -> usize {
        0
    }
}

struct Rubato {
    name: String,
    r: Box<dyn rubato::Resampler<f32>>,
    buf: Vec<f32>,
}

impl Rubato {
    /// `sub_chunks` FFT blocks per chunk: more of them, less delay (and a lower cut-off).
    fn fft(i: u32, o: u32, chunk: usize, sub_chunks: usize) -> Self {
        let window = WindowFunction::BlackmanHarris2;
        let r = Fft::<f32>::new_custom(
            i as usize,
            o as usize,
            chunk,
            sub_chunks,
            1,
            window,
            FixedSync::Input,
        )
        .unwrap();
        Self::wrap(
            format!("rubato Fft, {sub_chunks} block(s)/chunk"),
            Box::new(r),
        )
    }

    fn sinc(
        i: u32,
        o: u32,
        chunk: usize,
        len: usize,
        interp: SincInterpolationType,
        over: usize,
    ) -> Self {
        let params = SincInterpolationParameters::new(len, WindowFunction::BlackmanHarris2)
            .oversampling_factor(over)
            .interpolation(interp);
        let r = Async::<f32>::new_sinc(
            f64::from(o) / f64::from(i),
            1.0,
            &params,
            chunk,
            1,
            FixedAsync::Input,
        )
        .unwrap();
        Self::wrap(format!("rubato sinc {len} {interp:?} x{over}"), Box::new(r))
    }

    fn wrap(name: String, r: Box<dyn rubato::Resampler<f32>>) -> Self {
        let buf = vec![0.0; r.output_frames_max()];
        Rubato { name, r, buf }
    }
}

impl Stream for Rubato {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn push(&mut self, chunk: &[f32], out: &mut Vec<f32>) {
        assert_eq!(chunk.len(), self.r.input_frames_next());
        let input = InterleavedSlice::new(chunk, 1, chunk.len()).unwrap();
        let cap = self.buf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.buf, 1, cap).unwrap();
        let (_, n) = self
            .r
            .process_into_buffer(&input, &mut output, None)
            .unwrap();
        out.extend_from_slice(&self.buf[..n]);
    }
    fn delay_out(&self) -> usize {
        self.r.output_delay()
    }
}

fn make(kind: usize, i: u32, o: u32, chunk: usize) -> Box<dyn Stream> {
    match kind {
        0 => Box::new(Ours::new(i, o)),
        1 => Box::new(Rubato::fft(i, o, chunk, 1)),
        2 => Box::new(Rubato::fft(i, o, chunk, 4)),
        3 => Box::new(Rubato::sinc(
            i,
            o,
            chunk,
            128,
            SincInterpolationType::Linear,
            256,
        )),
        _ => Box::new(Rubato::sinc(
            i,
            o,
            chunk,
            256,
            SincInterpolationType::Cubic,
            128,
        )),
    }
}
const KINDS: usize = 5;

fn tone(rate: u32, n: usize, f: f64, amp: f64) -> Vec<f32> {
    (0..n)
        .map(|k| (amp * (2.0 * PI * f * k as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

/// Run `x` through a fresh stream in chunks (padding the last chunk with zeros).
fn stream_all(kind: usize, i: u32, o: u32, chunk: usize, x: &[f32]) -> (Vec<f32>, usize) {
    let mut s = make(kind, i, o, chunk);
    let mut out = Vec::new();
    let mut buf = vec![0.0f32; chunk];
    for c in x.chunks(chunk) {
        buf.fill(0.0);
        buf[..c.len()].copy_from_slice(c);
        s.push(&buf, &mut out);
    }
    (out, s.delay_out())
}

/// Amplitude of the component at `f` in `y` (rate `rate`), by correlation over
/// the middle half with a Hann window (so other tones leak little).
fn amplitude(y: &[f32], rate: u32, f: f64) -> f64 {
    let (a, b) = (y.len() / 4, 3 * y.len() / 4);
    let n = (b - a) as f64;
    let (mut s, mut c, mut wsum) = (0.0, 0.0, 0.0);
    for (k, &v) in y[a..b].iter().enumerate() {
        let w = 0.5 - 0.5 * (2.0 * PI * k as f64 / n).cos();
        let ph = 2.0 * PI * f * (a + k) as f64 / f64::from(rate);
        s += w * f64::from(v) * ph.sin();
        c += w * f64::from(v) * ph.cos();
        wsum += w;
    }
    2.0 * (s * s + c * c).sqrt() / wsum
}

fn db(x: f64) -> f64 {
    20.0 * x.max(1e-15).log10()
}

/// (gain at 0.9 of the lower Nyquist, worst alias/image level), both in dB.
fn quality(kind: usize, i: u32, o: u32, chunk: usize) -> (f64, f64) {
    let n = i as usize * 2;
    let low = f64::from(i.min(o)) / 2.0;
    let f = 0.9 * low;
    let (y, _) = stream_all(kind, i, o, chunk, &tone(i, n, f, 0.5));
    let gain = db(amplitude(&y, o, f) / 0.5);
    let fold = |g: f64| (g - f64::from(o) * (g / f64::from(o)).round()).abs();
    let spur = if o < i {
        let f = 1.02 * f64::from(o) / 2.0;
        let (y, _) = stream_all(kind, i, o, chunk, &tone(i, n, f, 0.5));
        db(amplitude(&y, o, fold(f)) / 0.5)
    } else {
        // The image of the 0.9-Nyquist tone, folded into the output band.
        db(amplitude(&y, o, fold(f64::from(i) - f)) / 0.5)
    };
    (gain, spur)
}

fn time(kind: usize, i: u32, o: u32, chunk: usize, chunks: &[Vec<f32>]) -> f64 {
    let mut s = make(kind, i, o, chunk);
    let mut out = Vec::with_capacity(chunk * 8);
    let start = Instant::now();
    for c in chunks {
        out.clear();
        s.push(black_box(c), &mut out);
        black_box(&out);
    }
    start.elapsed().as_secs_f64() / SECONDS as f64 * 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!(
        "mono f32, {} ms chunks, {SECONDS} s of audio per run, best/median of {REPEATS} runs",
        CHUNK_SECONDS * 1e3
    );
    for (i, o) in [
        (24000u32, 16000u32),
        (16000, 24000),
        (22050, 24000),
        (24000, 8000),
    ] {
        let chunk = (f64::from(i) * CHUNK_SECONDS) as usize;
        let x: Vec<f32> = (0..i as usize * SECONDS)
            .map(|k| {
                let t = k as f64 / f64::from(i);
                (0.3 * (2.0 * PI * 440.0 * t).sin() + 0.2 * (2.0 * PI * 2500.0 * t).sin()) as f32
            })
            .collect();
        let chunks: Vec<Vec<f32>> = x.chunks_exact(chunk).map(<[f32]>::to_vec).collect();
        println!("\n{i} -> {o}");
        println!(
            "  {:<30}{:>16}{:>10}{:>11}{:>13}{:>15}",
            "resampler", "us/s best/med", "vs ours", "delay ms", "gain@0.9 dB", "alias/img dB"
        );
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); KINDS];
        for _ in 0..REPEATS {
            for (kind, t) in times.iter_mut().enumerate() {
                t.push(time(kind, i, o, chunk, &chunks));
            }
        }
        let ours_best = times[0].iter().copied().fold(f64::INFINITY, f64::min);
        for (kind, t) in times.iter_mut().enumerate() {
            let best = t.iter().copied().fold(f64::INFINITY, f64::min);
            let med = median(t);
            let s = make(kind, i, o, chunk);
            // Delay: rubato's reported output delay; ours its design latency
            // (look-ahead plus the pass band's largest group delay).
            let delay_ms = if kind == 0 {
                let r = Resampler::new(i, o, SampleFormat::F32, SampleFormat::F32).unwrap();
                r.latency_seconds() * 1e3
            } else {
                s.delay_out() as f64 / f64::from(o) * 1e3
            };
            let (gain, spur) = quality(kind, i, o, chunk);
            println!(
                "  {:<30}{:>8.0}/{:<7.0}{:>10.2}{:>11.1}{:>13.3}{:>15.1}",
                s.name(),
                best,
                med,
                best / ours_best,
                delay_ms,
                gain,
                spur
            );
        }
    }
}
