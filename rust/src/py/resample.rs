//! Python bindings for `crate::resample`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::UnsupportedRateError;
use crate::resample::{Resampler, SUPPORTED_RATES};

/// Calls estimated above this many multiply-adds (roughly 100 µs) run with the
/// interpreter released; smaller ones are not worth the hand-over.
const DETACH_ABOVE_MACS: u64 = 1_000_000;

/// Streaming polyphase resampler for mono audio.
///
/// Rates are any two of ``SUPPORTED_RATES`` (else ``UnsupportedRateError``);
/// ``in_format``/``out_format`` are ``"pcm16"`` (signed 16-bit little-endian) or
/// ``"f32"`` (float32 little-endian, full scale 1.0). Input may be split anywhere,
/// even inside a sample: the output is the same as for the whole stream. Output
/// sample ``k`` belongs to time ``k / out_rate`` (no group delay); a stream of
/// ``n`` input samples gives ``ceil(n * out_rate / in_rate)`` output samples in
/// all. Same rate in and out passes the audio through (converting the format).
#[pyclass(module = "slng_fast._native", name = "Resampler")]
pub struct PyResampler {
    inner: Resampler,
    /// Output buffer reused across calls.
    out: Vec<u8>,
}

/// A rate argument as `u32`; anything else is an unsupported rate as well.
fn rate_arg(value: i64) -> PyResult<u32> {
    u32::try_from(value).map_err(|_| {
        UnsupportedRateError::new_err(format!(
            "unsupported sample rate {value} Hz; supported rates are {SUPPORTED_RATES:?}"
        ))
    })
}

#[pymethods]
impl PyResampler {
    #[new]
    #[pyo3(signature = (in_rate, out_rate, in_format = "pcm16", out_format = "pcm16"))]
    fn new(
        py: Python<'_>,
        in_rate: i64,
        out_rate: i64,
        in_format: &str,
        out_format: &str,
    ) -> PyResult<Self> {
        let (in_rate, out_rate) = (rate_arg(in_rate)?, rate_arg(out_rate)?);
        // Designing a new pair's filters takes milliseconds: other threads (the event loop,
        // while a worker thread prewarms the pairs) go on meanwhile.
        let inner =
            py.detach(|| Resampler::with_format_names(in_rate, out_rate, in_format, out_format))?;
        Ok(PyResampler {
            inner,
            out: Vec::new(),
        })
    }

    #[getter]
    fn in_rate(&self) -> u32 {
        self.inner.in_rate()
    }

    #[getter]
    fn out_rate(&self) -> u32 {
        self.inner.out_rate()
    }

    /// Input samples held back before the first output (the filter's look-ahead).
    #[getter]
    fn delay_input_samples(&self) -> usize {
        self.inner.delay_input_samples()
    }

    /// Design latency: the look-ahead plus the filters' largest pass-band group delay.
    #[getter]
    fn latency_seconds(&self) -> f64 {
        self.inner.latency_seconds()
    }

    /// Resample ``data`` (any number of bytes); returns the output ready so far.
    fn process<'py>(&mut self, py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
        self.out.clear();
        let (inner, out) = (&mut self.inner, &mut self.out);
        if inner.work_estimate(data.len()) > DETACH_ABOVE_MACS {
            py.detach(|| inner.process(data, out));
        } else {
            inner.process(data, out);
        }
        PyBytes::new(py, &self.out)
    }

    /// Emit what is held back; the stream then starts anew.
    ///
    /// The tail is computed as if the input went on with silence; a trailing
    /// partial sample is dropped.
    fn flush<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.out.clear();
        self.inner.flush(&mut self.out);
        PyBytes::new(py, &self.out)
    }

    /// Forget the stream (history and any partial sample) without output.
    fn reset(&mut self) {
        self.inner.reset();
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyResampler>()?;
    m.add("SUPPORTED_RATES", PyTuple::new(m.py(), SUPPORTED_RATES)?)?;
    Ok(())
}
