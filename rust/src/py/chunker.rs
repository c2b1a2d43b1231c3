//! Python bindings for `crate::chunker`: `AudioChunker` and `audio_chunk_frame`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use super::codec::bytes_with;
use super::InvalidArgumentError;
use crate::chunker::{AudioChunkFrame, Chunk, Chunker};

/// The UTF-8 text of a `context_id` argument, borrowed from the str object.
///
/// A str holding a lone surrogate has no UTF-8 form and cannot be written as
/// JSON text; that is an InvalidArgumentError naming the argument (with the
/// UnicodeEncodeError as its cause) rather than a bare codec error.
pub(super) fn context_id_str<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    let text = obj.cast::<PyString>()?;
    text.to_str().map_err(|cause| {
        let err = InvalidArgumentError::new_err(
            "context_id is not valid Unicode: it contains a lone surrogate (U+D800..U+DFFF), \
             which has no UTF-8 form and cannot be sent in a JSON frame",
        );
        err.set_cause(obj.py(), Some(cause));
        err
    })
}

/// The complete ``audio_chunk`` JSON text frame (UTF-8 bytes) for one chunk.
#[pyfunction]
#[pyo3(signature = (data, sequence, context_id, sample_rate, sample_width = 2))]
fn audio_chunk_frame<'py>(
    py: Python<'py>,
    data: &[u8],
    sequence: u64,
    #[pyo3(from_py_with = context_id_str)] context_id: &str,
    sample_rate: u32,
    sample_width: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let frame = AudioChunkFrame::new(data, sequence, context_id, sample_rate, sample_width)?;
    bytes_with(py, frame.len(), |dst| Ok(frame.write_into(dst)))
}

/// Cuts a stream of audio pieces into chunks of whole samples, each at most
/// ``max_chunk_bytes``; optionally wraps them as ``audio_chunk`` JSON frames.
#[pyclass(module = "slng_fast._native", name = "AudioChunker")]
pub struct AudioChunker {
    inner: Chunker,
}

fn chunk_bytes<'py>(py: Python<'py>, chunk: &Chunk<'_>) -> PyResult<Bound<'py, PyBytes>> {
    if chunk.head().is_empty() {
        Ok(PyBytes::new(py, chunk.body()))
    } else {
        bytes_with(py, chunk.len(), |dst| Ok(chunk.write_into(dst)))
    }
}

#[pymethods]
impl AudioChunker {
    #[new]
    #[pyo3(signature = (max_chunk_bytes, sample_width = 2, sample_rate = 24000, context_id = ""))]
    fn new(
        max_chunk_bytes: usize,
        sample_width: usize,
        sample_rate: u32,
        #[pyo3(from_py_with = context_id_str)] context_id: &str,
    ) -> PyResult<Self> {
        Ok(Self {
            inner: Chunker::new(
                max_chunk_bytes,
                sample_width,
                sample_rate,
                context_id.to_owned(),
            )?,
        })
    }

    /// Largest chunk in bytes: ``max_chunk_bytes`` rounded down to whole samples.
    #[getter]
    fn max_chunk_bytes(&self) -> usize {
        self.inner.max_chunk_bytes()
    }

    #[getter]
    fn sample_width(&self) -> usize {
        self.inner.sample_width()
    }

    #[getter]
    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    /// Bytes held back because they do not yet make a whole sample.
    #[getter]
    fn pending(&self) -> usize {
        self.inner.pending()
    }

    #[getter]
    fn get_next_sequence(&self) -> u64 {
        self.inner.next_sequence()
    }

    #[setter]
    fn set_next_sequence(&mut self, value: u64) {
        self.inner.set_next_sequence(value);
    }

    #[getter]
    fn get_context_id(&self) -> &str {
        self.inner.context_id()
    }

    #[setter]
    fn set_context_id(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.set_context_id(context_id_str(value)?.to_owned());
        Ok(())
    }

    /// Raw chunks of whole samples available so far.
    fn push<'py>(&mut self, data: &Bound<'py, PyBytes>) -> PyResult<Bound<'py, PyList>> {
        let py = data.py();
        let bytes = data.as_bytes();
        let mut chunks = self.inner.push(bytes);
        if chunks.len() == 1 {
            let chunk = chunks.next().expect("one chunk");
            // The common case of a piece that is exactly one chunk: hand back
            // the same (immutable) bytes object instead of a copy.
            let item = if chunk.head().is_empty()
                && chunk.len() == bytes.len()
                && data.is_exact_instance_of::<PyBytes>()
            {
                data.clone()
            } else {
                chunk_bytes(py, &chunk)?
            };
            return PyList::new(py, [item]);
        }
        let mut items = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            items.push(chunk_bytes(py, &chunk)?);
        }
        PyList::new(py, items)
    }

    /// Like ``push`` but each chunk as a complete ``audio_chunk`` frame (UTF-8 JSON).
    fn push_frames<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let chunks = self.inner.push(data);
        let mut items = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let frame = self.inner.frame(&chunk);
            items.push(bytes_with(
                py,
                frame.len(),
                |dst| Ok(frame.write_into(dst)),
            )?);
        }
        PyList::new(py, items)
    }

    /// Return and drop the trailing bytes that make no whole sample.
    fn flush<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.flush())
    }

    fn __repr__(&self) -> String {
        format!(
            "AudioChunker(max_chunk_bytes={}, sample_width={}, sample_rate={}, context_id={:?}, next_sequence={}, pending={})",
            self.inner.max_chunk_bytes(),
            self.inner.sample_width(),
            self.inner.sample_rate(),
            self.inner.context_id(),
            self.inner.next_sequence(),
            self.inner.pending(),
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AudioChunker>()?;
    m.add_function(wrap_pyfunction!(audio_chunk_frame, m)?)?;
    Ok(())
}
