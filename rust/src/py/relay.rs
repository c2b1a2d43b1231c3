//! Python bindings for `crate::relay`: `AudioRelay` and its `RelayReport`. No logic
//! of its own: arguments in, the core's answer out.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::chunker::context_id_str;
use super::ws::WsConnection;
use crate::carry::{Carry, Report};
use crate::relay::{Codec, Framing, Relay, RelaySpec};
use crate::resample::SampleFormat;

/// What one `AudioRelay.feed` or `AudioUplink.feed` carried; see `crate::carry::Report`.
#[pyclass(frozen, get_all, module = "slng_fast._native", name = "RelayReport")]
pub(super) struct RelayReport {
    messages: usize,
    in_bytes: usize,
    out_bytes: usize,
    chunks: usize,
    next_sequence: u64,
}

impl From<Report> for RelayReport {
    fn from(r: Report) -> Self {
        RelayReport {
            messages: r.messages,
            in_bytes: r.in_bytes,
            out_bytes: r.out_bytes,
            chunks: r.chunks,
            next_sequence: r.next_sequence,
        }
    }
}

#[pymethods]
impl RelayReport {
    fn __repr__(&self) -> String {
        format!(
            "RelayReport(messages={}, in_bytes={}, out_bytes={}, chunks={}, next_sequence={})",
            self.messages, self.in_bytes, self.out_bytes, self.chunks, self.next_sequence
        )
    }
}

/// One TTS stream's output state (resampler, codec, chunker); see `crate::relay`.
#[pyclass(module = "slng_fast._native", name = "AudioRelay")]
pub(super) struct AudioRelay(pub(super) Relay);

fn frames_list<'py>(py: Python<'py>, frames: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, frames.iter().map(|f| PyBytes::new(py, f)))
}

#[pymethods]
impl AudioRelay {
    #[new]
    #[pyo3(signature = (*, codec, sample_rate, max_chunk_bytes, context_id, in_rate,
                        in_format = "pcm16", framing = "binary", framing_context = None,
                        next_sequence = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        codec: &str,
        sample_rate: u32,
        max_chunk_bytes: usize,
        #[pyo3(from_py_with = context_id_str)] context_id: &str,
        in_rate: u32,
        in_format: &str,
        framing: &str,
        framing_context: Option<&str>,
        next_sequence: u64,
    ) -> PyResult<Self> {
        let spec = RelaySpec {
            framing: Framing::parse(framing, framing_context)?,
            in_rate,
            in_format: SampleFormat::parse(in_format)?,
            codec: Codec::parse(codec)?,
            out_rate: sample_rate,
            max_chunk_bytes,
            context_id: context_id.to_owned(),
            next_sequence,
        };
        // A new rate pair designs its filters (milliseconds): let other threads run.
        Ok(AudioRelay(py.detach(|| Relay::new(spec))?))
    }

    /// Which upstream messages `feed` owns.
    #[getter]
    fn framing(&self) -> &'static str {
        self.0.framing().name()
    }

    /// Own other messages from now on; the conversion state stays as it is.
    #[pyo3(signature = (framing, context_id = None))]
    fn set_framing(&mut self, framing: &str, context_id: Option<&str>) -> PyResult<()> {
        self.0.set_framing(Framing::parse(framing, context_id)?)?;
        Ok(())
    }

    #[getter]
    fn in_rate(&self) -> u32 {
        self.0.in_rate()
    }

    #[getter]
    fn in_format(&self) -> &'static str {
        match self.0.in_format() {
            SampleFormat::Pcm16 => "pcm16",
            SampleFormat::F32 => "f32",
        }
    }

    #[getter]
    fn next_sequence(&self) -> u64 {
        self.0.next_sequence()
    }

    /// ``(frames, client audio bytes)`` for one piece of provider audio.
    fn push<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<(Bound<'py, PyList>, usize)> {
        let mut frames = Vec::new();
        let made = self.0.push_audio(data, |f| {
            frames.push(f.to_vec());
            Ok(())
        })?;
        Ok((frames_list(py, frames)?, made))
    }

    /// ``(frames, client audio bytes)`` of what the resampler holds back.
    fn end_utterance<'py>(&mut self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, usize)> {
        let mut frames = Vec::new();
        let made = self.0.end_utterance(|f| {
            frames.push(f.to_vec());
            Ok(())
        })?;
        Ok((frames_list(py, frames)?, made))
    }

    /// Forget the audio in flight.
    fn drop_audio(&mut self) {
        self.0.drop_audio();
    }

    /// ``(wire bytes for client, report, handed_back)``; runs without the GIL.
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        mut upstream: PyRefMut<'py, WsConnection>,
        data: &[u8],
        mut client: PyRefMut<'py, WsConnection>,
    ) -> PyResult<(Bound<'py, PyBytes>, RelayReport, bool)> {
        let mut wire = Vec::new();
        let (relay, up, down) = (&mut self.0, &mut upstream.0, &mut client.0);
        let fed = py.detach(|| relay.feed(up, data, down, &mut wire))?;
        Ok((PyBytes::new(py, &wire), fed.report.into(), fed.handed_back))
    }

    fn __repr__(&self) -> String {
        format!(
            "AudioRelay(framing={:?}, in_rate={}, codec={:?}, next_sequence={})",
            self.0.framing().name(),
            self.0.in_rate(),
            self.0.codec(),
            self.0.next_sequence()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AudioRelay>()?;
    m.add_class::<RelayReport>()?;
    Ok(())
}
