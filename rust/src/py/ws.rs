//! Python bindings for `crate::ws`: the sans-I/O `WsConnection` (one call per read
//! returns every complete event, as the classes of `super::ws_events`) and the
//! handshake helpers.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::ws_events;

use crate::ws;
use crate::Error;

/// One WebSocket connection's framing; see `crate::ws::WsConnection` and `_native.pyi`.
#[pyclass(module = "slng_fast._native", name = "WsConnection")]
pub(super) struct WsConnection(pub(super) ws::WsConnection);

#[pymethods]
impl WsConnection {
    #[new]
    #[pyo3(signature = (max_message_bytes = 4194304, *, client = false, lenient_text = false))]
    fn new(max_message_bytes: usize, client: bool, lenient_text: bool) -> Self {
        let mut conn = if client {
            ws::WsConnection::new_client(max_message_bytes)
        } else {
            ws::WsConnection::new(max_message_bytes)
        };
        conn.set_lenient_text(lenient_text);
        WsConnection(conn)
    }

    #[getter]
    fn max_message_bytes(&self) -> usize {
        self.0.max_message_bytes()
    }

    #[getter]
    fn client(&self) -> bool {
        self.0.is_client()
    }

    #[getter]
    fn lenient_text(&self) -> bool {
        self.0.lenient_text()
    }

    #[getter]
    fn close_sent(&self) -> bool {
        self.0.close_sent()
    }

    #[getter]
    fn close_received(&self) -> bool {
        self.0.close_received()
    }

    #[getter]
    fn failed(&self) -> bool {
        self.0.failed()
    }

    #[getter]
    fn buffered(&self) -> usize {
        self.0.buffered()
    }

    fn receive_data<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        self.0.receive_data(data);
        let list = PyList::empty(py);
        while let Some(event) = self.0.next_event() {
            list.append(ws_events::to_python(py, event)?)?;
        }
        Ok(list)
    }

    fn send_text<'py>(&mut self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.send_text(text)?))
    }

    /// A text frame from UTF-8 bytes (the native chunker's JSON, say), so the payload
    /// is not decoded to str only to be encoded again. Invalid UTF-8 is a ValueError.
    fn send_text_utf8<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let text = std::str::from_utf8(data)
            .map_err(|err| pyo3::exceptions::PyValueError::new_err(format!("not UTF-8: {err}")))?;
        Ok(PyBytes::new(py, &self.0.send_text(text)?))
    }

    fn send_binary<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.send_binary(data)?))
    }

    #[pyo3(signature = (payload = b"".as_slice()), text_signature = "(self, /, payload=b'')")]
    fn send_ping<'py>(&mut self, py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.send_ping(payload)?))
    }

    #[pyo3(signature = (payload = b"".as_slice()), text_signature = "(self, /, payload=b'')")]
    fn send_pong<'py>(&mut self, py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.send_pong(payload)?))
    }

    #[pyo3(signature = (code = Some(1000), reason = ""), text_signature = "(self, /, code=1000, reason='')")]
    fn send_close<'py>(
        &mut self,
        py: Python<'py>,
        code: Option<u16>,
        reason: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.send_close(code, reason)?))
    }

    fn __repr__(&self) -> String {
        format!(
            "WsConnection(max_message_bytes={}, client={}, lenient_text={})",
            self.0.max_message_bytes(),
            if self.0.is_client() { "True" } else { "False" },
            if self.0.lenient_text() {
                "True"
            } else {
                "False"
            },
        )
    }
}

/// A parsed HTTP request head; see `crate::ws::Request`.
#[pyclass(frozen, get_all, module = "slng_fast._native", name = "WsRequest")]
struct WsRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    subprotocols: Vec<String>,
    key: Option<String>,
    is_websocket: bool,
    consumed: usize,
}

#[pymethods]
impl WsRequest {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn __repr__(&self) -> String {
        format!(
            "WsRequest(method={:?}, path={:?}, is_websocket={})",
            self.method, self.path, self.is_websocket
        )
    }
}

#[pyfunction]
fn ws_parse_request(data: &[u8]) -> PyResult<Option<WsRequest>> {
    Ok(ws::ServerHandshake::parse(data)?.map(|r| WsRequest {
        method: r.method,
        path: r.path,
        headers: r.headers,
        subprotocols: r.subprotocols,
        key: r.key,
        is_websocket: r.is_websocket,
        consumed: r.consumed,
    }))
}

#[pyfunction]
fn ws_accept_key(key: &str) -> String {
    ws::accept_key(key)
}

#[pyfunction]
#[pyo3(signature = (key, subprotocol = None))]
fn ws_accept_response<'py>(
    py: Python<'py>,
    key: &str,
    subprotocol: Option<&str>,
) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &ws::accept_response(key, subprotocol))
}

#[pyfunction]
#[pyo3(signature = (status, body = b"".as_slice(), headers = Vec::new()), text_signature = "(status, body=b'', headers=...)")]
fn ws_reject_response<'py>(
    py: Python<'py>,
    status: u16,
    body: &[u8],
    headers: Vec<(String, String)>,
) -> PyResult<Bound<'py, PyBytes>> {
    for (name, value) in &headers {
        let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
        if bad(name) || bad(value) || name.is_empty() {
            return Err(
                Error::InvalidArgument(format!("invalid header {name:?}: {value:?}")).into(),
            );
        }
    }
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(PyBytes::new(py, &ws::reject_response(status, &pairs, body)))
}

#[pyfunction]
#[pyo3(signature = (opcode, payload, fin = true, mask = None))]
fn ws_encode_frame<'py>(
    py: Python<'py>,
    opcode: u8,
    payload: &[u8],
    fin: bool,
    mask: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    if opcode > 15 {
        return Err(Error::InvalidArgument(format!("opcode must be 0..15, got {opcode}")).into());
    }
    let mask = match mask {
        None => None,
        Some(m) => Some(<[u8; 4]>::try_from(m).map_err(|_| {
            Error::InvalidArgument(format!("mask must be 4 bytes, got {}", m.len()))
        })?),
    };
    Ok(PyBytes::new(
        py,
        &ws::encode_frame(opcode, payload, fin, mask),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WsConnection>()?;
    m.add_class::<WsRequest>()?;
    m.add_function(wrap_pyfunction!(ws_parse_request, m)?)?;
    m.add_function(wrap_pyfunction!(ws_accept_key, m)?)?;
    m.add_function(wrap_pyfunction!(ws_accept_response, m)?)?;
    m.add_function(wrap_pyfunction!(ws_reject_response, m)?)?;
    m.add_function(wrap_pyfunction!(ws_encode_frame, m)?)?;
    Ok(())
}
