//! The one [`Builder`] of the Python layer: it makes the Python objects directly
//! while JSON (`classify_frame`) or MessagePack (`msgpack_decode`) is parsed, with
//! no intermediate tree. Keys the protocol uses often are interned Python strings.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::builder::Builder;

pub(super) struct PyBuilder<'py> {
    pub(super) py: Python<'py>,
}

/// `key` as a Python string; an interned one for the keys of the protocol.
macro_rules! interned_or_new {
    ($py:expr, $key:expr, [$($name:literal),* $(,)?]) => {
        match $key {
            $($name => intern!($py, $name).clone(),)*
            other => PyString::new($py, other),
        }
    };
}

impl<'py> Builder for PyBuilder<'py> {
    type Value = Bound<'py, PyAny>;
    type Key = Bound<'py, PyAny>;
    type Array = Vec<Bound<'py, PyAny>>;
    type Map = Bound<'py, PyDict>;
    type Error = PyErr;

    #[inline]
    fn null(&mut self) -> PyResult<Self::Value> {
        Ok(self.py.None().into_bound(self.py))
    }

    #[inline]
    fn boolean(&mut self, value: bool) -> PyResult<Self::Value> {
        Ok(PyBool::new(self.py, value).to_owned().into_any())
    }

    #[inline]
    fn int(&mut self, value: i64) -> PyResult<Self::Value> {
        Ok(value.into_pyobject(self.py)?.into_any())
    }

    #[inline]
    fn uint(&mut self, value: u64) -> PyResult<Self::Value> {
        Ok(value.into_pyobject(self.py)?.into_any())
    }

    fn big_int(&mut self, literal: &str) -> PyResult<Self::Value> {
        // At most MAX_INT_DIGITS (640) digits: int() accepts that whatever
        // sys.set_int_max_str_digits says.
        self.py.get_type::<PyInt>().call1((literal,))
    }

    #[inline]
    fn f64(&mut self, value: f64) -> PyResult<Self::Value> {
        Ok(PyFloat::new(self.py, value).into_any())
    }

    #[inline]
    fn string(&mut self, value: &str) -> PyResult<Self::Value> {
        Ok(PyString::new(self.py, value).into_any())
    }

    #[inline]
    fn binary(&mut self, value: &[u8]) -> PyResult<Self::Value> {
        Ok(PyBytes::new(self.py, value).into_any())
    }

    #[inline]
    fn key(&mut self, key: &str) -> PyResult<Self::Key> {
        let py = self.py;
        Ok(interned_or_new!(
            py,
            key,
            [
                "type",
                "text",
                "voice_id",
                "voice",
                "context_id",
                "codec",
                "encoding",
                "sample_rate_hz",
                "sample_rate",
                "language",
                "style",
                "voice_settings",
                "model_id",
                "word_timestamps",
            ]
        )
        .into_any())
    }

    #[inline]
    fn value_key(&mut self, key: Self::Value) -> PyResult<Self::Key> {
        Ok(key)
    }

    #[inline]
    fn begin_array(&mut self, len: usize) -> PyResult<Self::Array> {
        Ok(Vec::with_capacity(len))
    }

    #[inline]
    fn push(&mut self, array: &mut Self::Array, value: Self::Value) -> PyResult<()> {
        array.push(value);
        Ok(())
    }

    #[inline]
    fn end_array(&mut self, array: Self::Array) -> PyResult<Self::Value> {
        Ok(PyList::new(self.py, array)?.into_any())
    }

    #[inline]
    fn begin_map(&mut self, _len: usize) -> PyResult<Self::Map> {
        Ok(PyDict::new(self.py))
    }

    #[inline]
    fn insert(&mut self, map: &mut Self::Map, key: Self::Key, value: Self::Value) -> PyResult<()> {
        map.set_item(key, value)
    }

    #[inline]
    fn end_map(&mut self, map: Self::Map) -> PyResult<Self::Value> {
        Ok(map.into_any())
    }
}
