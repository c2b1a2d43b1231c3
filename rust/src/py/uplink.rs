//! Python bindings for `crate::uplink`: `AudioUplink`. No logic of its own: arguments
//! in, the core's answer out (its report is the relay's `RelayReport`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::relay::RelayReport;
use super::ws::WsConnection;
use crate::carry::Carry;
use crate::relay::Codec;
use crate::resample::SampleFormat;
use crate::uplink::{Uplink, UplinkFraming, UplinkSpec};

/// One STT stream's input state (decoder, resampler, provider framing); see
/// `crate::uplink`.
#[pyclass(module = "slng_fast._native", name = "AudioUplink")]
pub(super) struct AudioUplink(pub(super) Uplink);

#[pymethods]
impl AudioUplink {
    #[new]
    #[pyo3(signature = (*, codec, sample_rate, model_rate, model_format = "pcm16",
                        framing = "binary", max_message_bytes = 4194304))]
    fn new(
        py: Python<'_>,
        codec: &str,
        sample_rate: u32,
        model_rate: u32,
        model_format: &str,
        framing: &str,
        max_message_bytes: usize,
    ) -> PyResult<Self> {
        let spec = UplinkSpec {
            framing: UplinkFraming::parse(framing)?,
            codec: Codec::parse(codec)?,
            in_rate: sample_rate,
            out_rate: model_rate,
            out_format: SampleFormat::parse(model_format)?,
            max_message_bytes,
        };
        // A new rate pair designs its filters (milliseconds): let other threads run.
        Ok(AudioUplink(py.detach(|| Uplink::new(spec))?))
    }

    #[getter]
    fn framing(&self) -> &'static str {
        self.0.framing().name()
    }

    #[getter]
    fn sample_rate(&self) -> u32 {
        self.0.in_rate()
    }

    #[getter]
    fn model_rate(&self) -> u32 {
        self.0.out_rate()
    }

    #[getter]
    fn max_message_bytes(&self) -> usize {
        self.0.max_message_bytes()
    }

    /// The model's audio for one client audio message.
    fn push<'py>(&mut self, py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
        let mut out = Vec::new();
        self.0.push(data, &mut out);
        PyBytes::new(py, &out)
    }

    /// What the resampler holds back.
    fn flush<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut out = Vec::new();
        self.0.flush(&mut out);
        PyBytes::new(py, &out)
    }

    /// Converted audio the framing holds back.
    #[getter]
    fn held<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.0.held())
    }

    fn set_held(&mut self, held: &[u8]) -> PyResult<()> {
        self.0.set_held(held.to_vec())?;
        Ok(())
    }

    fn take_held<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.take_held())
    }

    /// ``(wire bytes for upstream, report, handed_back)``; runs without the GIL.
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        mut client: PyRefMut<'py, WsConnection>,
        data: &[u8],
        mut upstream: PyRefMut<'py, WsConnection>,
    ) -> PyResult<(Bound<'py, PyBytes>, RelayReport, bool)> {
        let mut wire = Vec::new();
        let (uplink, down, up) = (&mut self.0, &mut client.0, &mut upstream.0);
        let fed = py.detach(|| uplink.feed(down, data, up, &mut wire))?;
        Ok((PyBytes::new(py, &wire), fed.report.into(), fed.handed_back))
    }

    fn __repr__(&self) -> String {
        format!(
            "AudioUplink(framing={:?}, codec={:?}, sample_rate={}, model_rate={})",
            self.0.framing().name(),
            self.0.codec(),
            self.0.in_rate(),
            self.0.out_rate()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AudioUplink>()?;
    Ok(())
}
