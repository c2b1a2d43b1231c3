//! The events `WsConnection.receive_data` (and `ws_relay_audio`) hand to Python: one
//! frozen class per kind of `crate::ws::Event`, so the transport matches on
//! classes (`case Ping(payload):`) instead of string tags. Each holds the
//! Python objects it was made with (built once, from the bytes read), compares by
//! value and has a repr that shows them.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::ws::Event;

/// A field of an event: compared and shown the way Python would.
trait Field {
    fn same(&self, other: &Self, py: Python<'_>) -> PyResult<bool>;
    fn show(&self, py: Python<'_>) -> PyResult<String>;
}

impl<T> Field for Py<T> {
    fn same(&self, other: &Self, py: Python<'_>) -> PyResult<bool> {
        self.bind(py).as_any().eq(other.bind(py).as_any())
    }
    fn show(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.bind(py).as_any().repr()?.to_string())
    }
}

impl Field for u16 {
    fn same(&self, other: &Self, _: Python<'_>) -> PyResult<bool> {
        Ok(self == other)
    }
    fn show(&self, _: Python<'_>) -> PyResult<String> {
        Ok(self.to_string())
    }
}

macro_rules! event_class {
    ($(#[doc = $doc:literal])* $name:ident { $($field:ident: $ty:ty),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[pyclass(frozen, module = "slng_fast._native")]
        pub(super) struct $name {
            $(#[pyo3(get)] $field: $ty,)+
        }

        #[pymethods]
        impl $name {
            #[new]
            fn new($($field: $ty),+) -> Self {
                Self { $($field),+ }
            }

            #[classattr]
            fn __match_args__(py: Python<'_>) -> PyResult<Py<PyTuple>> {
                Ok(PyTuple::new(py, [$(stringify!($field)),+])?.unbind())
            }

            fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
                let py = other.py();
                let Ok(other) = other.cast::<Self>() else {
                    return Ok(false);
                };
                let other = other.get();
                Ok(true $(&& self.$field.same(&other.$field, py)?)+)
            }

            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                let fields: Vec<String> = vec![
                    $(format!("{}={}", stringify!($field), self.$field.show(py)?)),+
                ];
                Ok(format!("{}({})", stringify!($name), fields.join(", ")))
            }
        }
    };
}

event_class! {
    /// A complete text message (``data`` is a str, as in wsproto).
    TextMessage { data: Py<PyString> }
}

event_class! {
    /// A complete binary message.
    BinaryMessage { data: Py<PyBytes> }
}

event_class! {
    /// A complete text message that is not UTF-8 (only with ``lenient_text``).
    InvalidTextMessage { data: Py<PyBytes> }
}

event_class! {
    /// A ping; answer with ``send_pong(payload)``.
    Ping { payload: Py<PyBytes> }
}

event_class! {
    /// A pong.
    Pong { payload: Py<PyBytes> }
}

event_class! {
    /// The peer's close frame (code 1005 when it had none): answer with
    /// ``send_close``, then close the stream. Nothing after it is read.
    Close { code: u16, reason: Py<PyString> }
}

event_class! {
    /// The peer broke the protocol: send ``send_close(close_code, reason)``, then
    /// close the stream. Nothing after it is read.
    ProtocolViolation { close_code: u16, reason: Py<PyString> }
}

/// The Python event of `event`.
pub(super) fn to_python(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyAny>> {
    Ok(match event {
        Event::Text(text) => Bound::new(
            py,
            TextMessage {
                data: PyString::new(py, &text).unbind(),
            },
        )?
        .into_any(),
        Event::Binary(data) => Bound::new(
            py,
            BinaryMessage {
                data: PyBytes::new(py, &data).unbind(),
            },
        )?
        .into_any(),
        Event::InvalidText(data) => Bound::new(
            py,
            InvalidTextMessage {
                data: PyBytes::new(py, &data).unbind(),
            },
        )?
        .into_any(),
        Event::Ping(payload) => Bound::new(
            py,
            Ping {
                payload: PyBytes::new(py, &payload).unbind(),
            },
        )?
        .into_any(),
        Event::Pong(payload) => Bound::new(
            py,
            Pong {
                payload: PyBytes::new(py, &payload).unbind(),
            },
        )?
        .into_any(),
        Event::Close { code, reason } => Bound::new(
            py,
            Close {
                code,
                reason: PyString::new(py, &reason).unbind(),
            },
        )?
        .into_any(),
        Event::ProtocolError { close_code, reason } => Bound::new(
            py,
            ProtocolViolation {
                close_code,
                reason: PyString::new(py, &reason).unbind(),
            },
        )?
        .into_any(),
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TextMessage>()?;
    m.add_class::<BinaryMessage>()?;
    m.add_class::<InvalidTextMessage>()?;
    m.add_class::<Ping>()?;
    m.add_class::<Pong>()?;
    m.add_class::<Close>()?;
    m.add_class::<ProtocolViolation>()?;
    Ok(())
}
