//! Python bindings for `crate::msgpack`: the Kyutai frames, a general encoder and a
//! decoder that builds the Python objects directly while the data is read
//! (`super::builder::PyBuilder`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use super::builder::PyBuilder;
use super::codec::bytes_with;
use crate::msgpack::{self, Encoder, MAX_DEPTH};
use crate::Error;

/// The Python object of the one MessagePack value that fills ``data``.
#[pyfunction]
fn msgpack_decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    msgpack::decode(data, &mut PyBuilder { py })
}

fn encode_into(
    enc: &mut Encoder,
    obj: &Bound<'_, PyAny>,
    single_float: bool,
    depth: usize,
) -> PyResult<()> {
    if obj.is_none() {
        enc.nil();
    } else if let Ok(v) = obj.cast::<PyBool>() {
        enc.boolean(v.is_true());
    } else if let Ok(v) = obj.cast::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            enc.int(i);
        } else if let Ok(u) = v.extract::<u64>() {
            enc.uint(u);
        } else {
            return Err(Error::Unencodable(format!(
                "int {} does not fit in 64 bits",
                v.str()?.to_str()?
            ))
            .into());
        }
    } else if let Ok(v) = obj.cast::<PyFloat>() {
        if single_float {
            enc.f32(v.value() as f32);
        } else {
            enc.f64(v.value());
        }
    } else if let Ok(v) = obj.cast::<PyString>() {
        let s = v.to_str().map_err(|_| {
            Error::Unencodable("str with lone surrogates has no UTF-8 form".to_owned())
        })?;
        enc.str(s)?;
    } else if let Ok(v) = obj.cast::<PyBytes>() {
        enc.bin(v.as_bytes())?;
    } else if let Ok(v) = obj.cast::<PyByteArray>() {
        enc.bin(&v.to_vec())?;
    } else if obj.cast::<PyList>().is_ok()
        || obj.cast::<PyTuple>().is_ok()
        || obj.cast::<PyDict>().is_ok()
    {
        if depth > MAX_DEPTH {
            return Err(
                Error::Unencodable(format!("nested deeper than {MAX_DEPTH} lists/dicts")).into(),
            );
        }
        if let Ok(v) = obj.cast::<PyDict>() {
            enc.map_len(v.len())?;
            for (k, item) in v.iter() {
                encode_into(enc, &k, single_float, depth + 1)?;
                encode_into(enc, &item, single_float, depth + 1)?;
            }
        } else if let Ok(v) = obj.cast::<PyList>() {
            enc.array_len(v.len())?;
            for item in v.iter() {
                encode_into(enc, &item, single_float, depth + 1)?;
            }
        } else if let Ok(v) = obj.cast::<PyTuple>() {
            enc.array_len(v.len())?;
            for item in v.iter() {
                encode_into(enc, &item, single_float, depth + 1)?;
            }
        }
    } else {
        return Err(PyTypeError::new_err(format!(
            "cannot encode {} as MessagePack",
            obj.get_type().name()?
        )));
    }
    Ok(())
}

/// MessagePack bytes of ``value`` (None, bool, int, float, str, bytes, list,
/// tuple, dict), floats as float64 unless ``single_float``.
#[pyfunction]
#[pyo3(signature = (value, single_float = false))]
fn msgpack_encode<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    single_float: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut enc = Encoder::new();
    encode_into(&mut enc, value, single_float, 1)?;
    Ok(PyBytes::new(py, enc.as_bytes()))
}

/// ``{"type":"Audio","pcm":[...]}`` of float32 little-endian audio, the samples as
/// MessagePack float32.
#[pyfunction]
fn kyutai_audio_frame<'py>(py: Python<'py>, pcm_f32: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    bytes_with(py, msgpack::kyutai_audio_frame_len(pcm_f32.len())?, |dst| {
        msgpack::kyutai_audio_frame_into(pcm_f32, dst)
    })
}

/// ``{"type":"Marker","id":id}``.
#[pyfunction]
fn kyutai_marker_frame<'py>(py: Python<'py>, id: i64) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &msgpack::kyutai_marker_frame(id))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("KYUTAI_FRAME_SAMPLES", msgpack::KYUTAI_FRAME_SAMPLES)?;
    m.add_function(wrap_pyfunction!(msgpack_decode, m)?)?;
    m.add_function(wrap_pyfunction!(msgpack_encode, m)?)?;
    m.add_function(wrap_pyfunction!(kyutai_audio_frame, m)?)?;
    m.add_function(wrap_pyfunction!(kyutai_marker_frame, m)?)?;
    Ok(())
}
