//! Python bindings for `crate::frames`: `classify_frame`, whose fields are built as
//! Python objects while the frame is parsed (`super::builder::PyBuilder`).

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use super::builder::PyBuilder;
use crate::frames::{
    classify_bytes, classify_str, refused_command as scan_refused_command, Command, Endpoint,
    Frame, InvalidCode,
};
use crate::Error;

fn command_name<'py>(py: Python<'py>, command: Command) -> &'py Bound<'py, PyString> {
    match command {
        Command::Init => intern!(py, "init"),
        Command::InputText => intern!(py, "input_text"),
        Command::Flush => intern!(py, "flush"),
        Command::Stop => intern!(py, "stop"),
        Command::Clear => intern!(py, "clear"),
        Command::Configure => intern!(py, "configure"),
        Command::Ping => intern!(py, "ping"),
        Command::Start => intern!(py, "start"),
        Command::Finalize => intern!(py, "finalize"),
    }
}

fn invalid_code<'py>(py: Python<'py>, code: InvalidCode) -> &'py Bound<'py, PyString> {
    match code {
        InvalidCode::InvalidUtf8 => intern!(py, "invalid_utf8"),
        InvalidCode::MessageTooLarge => intern!(py, "message_too_large"),
        InvalidCode::InvalidMessage => intern!(py, "invalid_message"),
    }
}

/// Say what a client text frame is, parsing it once. See `crate::frames` and
/// `_native.pyi` for the answers and the decisions behind them.
#[pyfunction]
#[pyo3(signature = (frame, max_bytes, endpoint = "tts"))]
fn classify_frame<'py>(
    frame: &Bound<'py, PyAny>,
    max_bytes: i64,
    endpoint: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let py = frame.py();
    let endpoint = Endpoint::from_name(endpoint)?;
    if max_bytes <= 0 {
        return Err(Error::NotPositive {
            name: "max_bytes",
            value: max_bytes as f64,
        }
        .into());
    }
    let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let mut builder = PyBuilder { py };
    let classified = if let Ok(text) = frame.cast::<PyString>() {
        match text.to_str() {
            Ok(text) => classify_str(text, max_bytes, endpoint, &mut builder)?,
            // Only a str holding lone surrogates has no UTF-8 form.
            Err(_) => Frame::Invalid {
                code: InvalidCode::InvalidUtf8,
                message: "frame is a str with lone surrogates, which have no UTF-8 form".to_owned(),
            },
        }
    } else if let Ok(bytes) = frame.cast::<PyBytes>() {
        classify_bytes(bytes.as_bytes(), max_bytes, endpoint, &mut builder)?
    } else {
        return Err(PyTypeError::new_err(format!(
            "frame must be str or bytes, not {}",
            frame.get_type().name()?
        )));
    };
    let none = || py.None().into_bound(py);
    let items: [Bound<'py, PyAny>; 3] = match classified {
        Frame::Command { command, fields } => [
            intern!(py, "command").clone().into_any(),
            command_name(py, command).clone().into_any(),
            fields,
        ],
        Frame::Native { kind, fields } => {
            // The very string object held under "type" (the last one wins).
            let kind = match kind {
                Some(_) => fields
                    .cast::<PyDict>()?
                    .get_item(intern!(py, "type"))?
                    .unwrap_or_else(none),
                None => none(),
            };
            [intern!(py, "native").clone().into_any(), kind, fields]
        }
        Frame::Text => [intern!(py, "native").clone().into_any(), none(), none()],
        Frame::Invalid { code, message } => [
            intern!(py, "invalid").clone().into_any(),
            invalid_code(py, code).clone().into_any(),
            PyString::new(py, &message).into_any(),
        ],
    };
    PyTuple::new(py, items)
}

/// The unified command named by the top-level `"type"` of a frame that
/// `classify_frame` refused as `invalid_message`, or None. See `crate::frames`.
#[pyfunction]
#[pyo3(signature = (frame, endpoint = "tts"))]
fn refused_command<'py>(
    frame: &Bound<'py, PyAny>,
    endpoint: &str,
) -> PyResult<Option<&'static str>> {
    let endpoint = Endpoint::from_name(endpoint)?;
    let command = if let Ok(text) = frame.cast::<PyString>() {
        text.to_str()
            .ok()
            .and_then(|t| scan_refused_command(t, endpoint))
    } else if let Ok(bytes) = frame.cast::<PyBytes>() {
        std::str::from_utf8(bytes.as_bytes())
            .ok()
            .and_then(|t| scan_refused_command(t, endpoint))
    } else {
        return Err(PyTypeError::new_err(format!(
            "frame must be str or bytes, not {}",
            frame.get_type().name()?
        )));
    };
    Ok(command.map(Command::name))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(classify_frame, m)?)?;
    m.add_function(wrap_pyfunction!(refused_command, m)?)?;
    Ok(())
}
