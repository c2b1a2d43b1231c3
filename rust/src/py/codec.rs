//! Python bindings for `crate::codec`: bytes in, bytes out, written straight
//! into the new `bytes` object.

use std::mem::MaybeUninit;

use pyo3::exceptions::PyOverflowError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::codec;

/// A new `bytes` object of exactly `len` bytes, filled in place by `fill`.
///
/// `fill` gets the object's uninitialised buffer and must return it fully
/// initialised (the `*_into` writers of the core return exactly that);
/// `crate::buf::fill` checks that it did, so no uninitialised byte can reach
/// Python. Unlike `PyBytes::new_with`, the buffer is not zeroed first.
pub(super) fn bytes_with<'py, F>(
    py: Python<'py>,
    len: usize,
    fill: F,
) -> PyResult<Bound<'py, PyBytes>>
where
    F: for<'o> FnOnce(&'o mut [MaybeUninit<u8>]) -> crate::Result<&'o mut [u8]>,
{
    let size =
        ffi::Py_ssize_t::try_from(len).map_err(|_| PyOverflowError::new_err("output too large"))?;
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new bytes object (or
    // NULL with an exception set) whose n-byte buffer we may write until it is
    // shared; it is not shared before we return it.
    unsafe {
        let obj = Bound::from_owned_ptr_or_err(
            py,
            ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
        )?
        .cast_into_unchecked::<PyBytes>();
        let buf = ffi::PyBytes_AsString(obj.as_ptr()).cast::<MaybeUninit<u8>>();
        let dst = std::slice::from_raw_parts_mut(buf, len);
        crate::buf::fill(dst, fill)?;
        Ok(obj)
    }
}

/// Mu-law bytes of PCM16 little-endian audio (bit-exact with ``audioop.lin2ulaw``).
#[pyfunction]
fn pcm16_to_mulaw<'py>(py: Python<'py>, pcm: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    bytes_with(py, codec::pcm16_to_g711_len(pcm.len())?, |dst| {
        codec::pcm16_to_mulaw_into(pcm, dst)
    })
}

/// PCM16 little-endian audio of mu-law bytes (bit-exact with ``audioop.ulaw2lin``).
#[pyfunction]
fn mulaw_to_pcm16<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    bytes_with(py, codec::g711_to_pcm16_len(data.len()), |dst| {
        Ok(codec::mulaw_to_pcm16_into(data, dst))
    })
}

/// A-law bytes of PCM16 little-endian audio (bit-exact with ``audioop.lin2alaw``).
#[pyfunction]
fn pcm16_to_alaw<'py>(py: Python<'py>, pcm: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    bytes_with(py, codec::pcm16_to_g711_len(pcm.len())?, |dst| {
        codec::pcm16_to_alaw_into(pcm, dst)
    })
}

/// PCM16 little-endian audio of A-law bytes (bit-exact with ``audioop.alaw2lin``).
#[pyfunction]
fn alaw_to_pcm16<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    bytes_with(py, codec::g711_to_pcm16_len(data.len()), |dst| {
        Ok(codec::alaw_to_pcm16_into(data, dst))
    })
}

/// Float32 little-endian audio (``s / 32768``) of PCM16 little-endian audio.
#[pyfunction]
fn pcm16_to_f32<'py>(py: Python<'py>, pcm: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    bytes_with(py, codec::pcm16_to_f32_len(pcm.len())?, |dst| {
        codec::pcm16_to_f32_into(pcm, dst)
    })
}

/// PCM16 little-endian audio of float32 little-endian audio: clipped to
/// [-1, 1], scaled by 32768, rounded to nearest (ties to even), saturated; NaN -> 0.
#[pyfunction]
fn f32_to_pcm16<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    bytes_with(py, codec::f32_to_pcm16_len(data.len())?, |dst| {
        codec::f32_to_pcm16_into(data, dst)
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pcm16_to_mulaw, m)?)?;
    m.add_function(wrap_pyfunction!(mulaw_to_pcm16, m)?)?;
    m.add_function(wrap_pyfunction!(pcm16_to_alaw, m)?)?;
    m.add_function(wrap_pyfunction!(alaw_to_pcm16, m)?)?;
    m.add_function(wrap_pyfunction!(pcm16_to_f32, m)?)?;
    m.add_function(wrap_pyfunction!(f32_to_pcm16, m)?)?;
    Ok(())
}
