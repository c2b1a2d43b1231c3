//! The Python face of the native core: the only code that knows PyO3.
//! One submodule per concern; each exposes `register(m)`.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::Error;

mod builder;
mod chunker;
mod codec;
mod frames;
mod msgpack;
#[cfg(target_os = "linux")]
mod plane;
mod ratelimit;
mod relay;
mod resample;
mod uplink;
mod ws;
mod ws_events;

create_exception!(
    slng_fast._native,
    NativeError,
    PyValueError,
    "Base of every error raised by the native core."
);
create_exception!(slng_fast._native, UnsupportedRateError, NativeError);
create_exception!(slng_fast._native, UnsupportedFormatError, NativeError);
create_exception!(slng_fast._native, PartialSampleError, NativeError);
create_exception!(slng_fast._native, InvalidArgumentError, NativeError);
create_exception!(
    slng_fast._native,
    MsgpackError,
    NativeError,
    "MessagePack that cannot be decoded (or a value that cannot be encoded)."
);
create_exception!(
    slng_fast._native,
    WsHandshakeError,
    NativeError,
    "An HTTP request that is not an acceptable WebSocket handshake; args are (status, reason)."
);
create_exception!(
    slng_fast._native,
    WsClosedError,
    NativeError,
    "A frame was to be sent after our close frame."
);

/// The one place where Rust errors become Python exceptions.
impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::UnsupportedRate { .. } => UnsupportedRateError::new_err(err.to_string()),
            Error::UnsupportedFormat { .. } => UnsupportedFormatError::new_err(err.to_string()),
            Error::PartialSample { .. } => PartialSampleError::new_err(err.to_string()),
            // Its args are (status, reason), for the answer to send.
            Error::BadHandshake { status, reason } => WsHandshakeError::new_err((status, reason)),
            Error::CloseSent => WsClosedError::new_err(err.to_string()),
            Error::ChunkTooSmall { .. }
            | Error::BadSampleWidth { .. }
            | Error::NotPositive { .. }
            | Error::NotFinite { .. }
            | Error::UnknownEndpoint { .. }
            | Error::InvalidArgument(_)
            | Error::ControlTooLong { .. }
            | Error::BadCloseCode { .. } => InvalidArgumentError::new_err(err.to_string()),
            Error::Truncated { .. }
            | Error::TrailingBytes { .. }
            | Error::ReservedMarker { .. }
            | Error::UnsupportedExtension { .. }
            | Error::InvalidUtf8 { .. }
            | Error::UnhashableKey { .. }
            | Error::TooDeep { .. }
            | Error::Empty
            | Error::TooLong { .. }
            | Error::Unencodable(_) => MsgpackError::new_err(err.to_string()),
        }
    }
}

/// For the tests only: panics with `message`, as a bug in the native core would. The
/// panic unwinds (the release profile does not abort) and reaches Python as
/// `PanicException`, which the gateway turns into the end of one session, not the
/// worker. Nothing outside the tests calls it.
#[pyfunction]
#[pyo3(name = "_panic_for_tests")]
fn panic_for_tests(message: &str) {
    panic!("{message}");
}

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // What a panic in any native call raises (a BaseException, like SystemExit).
    m.add(
        "PanicException",
        py.get_type::<pyo3::panic::PanicException>(),
    )?;
    m.add_function(wrap_pyfunction!(panic_for_tests, m)?)?;
    m.add("NativeError", py.get_type::<NativeError>())?;
    m.add(
        "UnsupportedRateError",
        py.get_type::<UnsupportedRateError>(),
    )?;
    m.add(
        "UnsupportedFormatError",
        py.get_type::<UnsupportedFormatError>(),
    )?;
    m.add("PartialSampleError", py.get_type::<PartialSampleError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("MsgpackError", py.get_type::<MsgpackError>())?;
    m.add("WsHandshakeError", py.get_type::<WsHandshakeError>())?;
    m.add("WsClosedError", py.get_type::<WsClosedError>())?;
    chunker::register(m)?;
    codec::register(m)?;
    frames::register(m)?;
    msgpack::register(m)?;
    #[cfg(target_os = "linux")]
    plane::register(m)?;
    ratelimit::register(m)?;
    relay::register(m)?;
    resample::register(m)?;
    uplink::register(m)?;
    ws::register(m)?;
    ws_events::register(m)?;
    Ok(())
}
