//! Python bindings for `crate::plane`: `DataPlane`. It keeps which stream is lent
//! (its sockets, its state, its two framings) and converts the core's outcomes;
//! the reading, converting and writing are the core's. A stream is either direction:
//! a TTS relay (`AudioRelay`: upstream in, client out) or an STT uplink
//! (`AudioUplink`: client in, upstream out).

use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use rustc_hash::FxHashMap;

use super::relay::{AudioRelay, RelayReport};
use super::uplink::AudioUplink;
use super::ws::WsConnection;
use crate::carry::Carry;
use crate::plane::{Carried, Plane, Source};
use crate::relay::Report;

/// The lent stream's own state: which direction it carries.
enum State {
    Relay(Py<AudioRelay>),
    Uplink(Py<AudioUplink>),
}

/// A lent state, borrowed for one call of `serve`.
enum Borrowed<'py> {
    Relay(PyRefMut<'py, AudioRelay>),
    Uplink(PyRefMut<'py, AudioUplink>),
}

impl State {
    fn borrow_mut<'py>(&self, py: Python<'py>) -> Option<Borrowed<'py>> {
        match self {
            State::Relay(r) => r.bind(py).try_borrow_mut().ok().map(Borrowed::Relay),
            State::Uplink(u) => u.bind(py).try_borrow_mut().ok().map(Borrowed::Uplink),
        }
    }
}

impl Borrowed<'_> {
    fn carrier(&mut self) -> &mut dyn Carry {
        match self {
            Borrowed::Relay(r) => &mut r.0,
            Borrowed::Uplink(u) => &mut u.0,
        }
    }
}

struct Lent {
    source_fd: RawFd,
    source: Py<WsConnection>,
    state: State,
    sink_fd: RawFd,
    sink: Py<WsConnection>,
}

/// One worker's data plane; see `crate::plane`.
#[pyclass(module = "slng_fast._native", name = "DataPlane")]
struct DataPlane {
    plane: Plane,
    lent: FxHashMap<u64, Lent>,
    next_key: u64,
    keys: Vec<u64>,
}

impl DataPlane {
    fn forget(&mut self, key: u64) -> bool {
        match self.lent.remove(&key) {
            Some(lent) => {
                self.plane.unwatch(lent.source_fd);
                true
            }
            None => false,
        }
    }
}

/// ``(handed_back, unwritten, sink_error, ended, error)`` for a stream leaving the plane.
fn outcome<'py>(py: Python<'py>, carried: Carried) -> PyResult<Bound<'py, PyTuple>> {
    let ended = match carried.source {
        Source::Open => None,
        Source::Ended => Some(String::new()),
        Source::Failed(e) => Some(e.to_string()),
    };
    let error = carried.error.map(|e| PyErr::from(e).into_value(py));
    (
        carried.fed.handed_back,
        PyBytes::new(py, &carried.unwritten),
        carried.sink_error.map(|e| e.to_string()),
        ended,
        error,
    )
        .into_pyobject(py)
}

#[pymethods]
impl DataPlane {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(DataPlane {
            plane: Plane::new()?,
            lent: FxHashMap::default(),
            next_key: 0,
            keys: Vec::new(),
        })
    }

    /// The epoll descriptor: readable while a lent stream has input.
    fn fileno(&self) -> RawFd {
        self.plane.fd()
    }

    fn __len__(&self) -> usize {
        self.lent.len()
    }

    /// Lend a stream: its key. ``state`` is an `AudioRelay` or an `AudioUplink`.
    fn lend(
        &mut self,
        source_fd: RawFd,
        source: Py<WsConnection>,
        state: &Bound<'_, PyAny>,
        sink_fd: RawFd,
        sink: Py<WsConnection>,
    ) -> PyResult<u64> {
        let state = if let Ok(relay) = state.cast::<AudioRelay>() {
            State::Relay(relay.clone().unbind())
        } else {
            State::Uplink(state.cast::<AudioUplink>()?.clone().unbind())
        };
        let key = self.next_key;
        self.plane.watch(source_fd, key)?;
        self.next_key += 1;
        self.lent.insert(
            key,
            Lent {
                source_fd,
                source,
                state,
                sink_fd,
                sink,
            },
        );
        Ok(key)
    }

    /// Take a stream back; False if it had already left the plane.
    fn take_back(&mut self, key: u64) -> bool {
        self.forget(key)
    }

    /// Serve every ready stream once. A list of ``(key, report,
    /// seconds, outcome)``: ``seconds`` from the read to the frames written (None if
    /// nothing was written), ``outcome`` None while the stream stays on the plane,
    /// else ``(handed_back, unwritten, sink_error, ended, error)`` and the stream is
    /// no longer lent.
    fn serve<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.keys.clear();
        self.plane.ready(&mut self.keys)?;
        let mut borrowed = Vec::with_capacity(self.keys.len());
        let mut busy = Vec::new();
        for &key in &self.keys {
            let Some(lent) = self.lent.get(&key) else {
                continue; // taken back after the kernel had it ready
            };
            match (
                lent.source.bind(py).try_borrow_mut(),
                lent.state.borrow_mut(py),
                lent.sink.bind(py).try_borrow_mut(),
            ) {
                (Ok(source), Some(state), Ok(sink)) => {
                    borrowed.push((key, lent.source_fd, source, state, lent.sink_fd, sink))
                }
                _ => busy.push(key),
            }
        }
        let plane = &mut self.plane;
        let mut work: Vec<_> = borrowed
            .iter_mut()
            .map(|(key, source_fd, source, state, sink_fd, sink)| {
                (
                    *key,
                    *source_fd,
                    &mut source.0,
                    state.carrier(),
                    *sink_fd,
                    &mut sink.0,
                )
            })
            .collect();
        // With the GIL held: a call serves many streams in microseconds each, and a
        // release would let any other Python thread (the store's writes) take the GIL
        // for up to the switch interval (5 ms) before this one gets it back.
        let results: Vec<(u64, Carried)> = work
            .iter_mut()
            .map(|(key, source_fd, source, carrier, sink_fd, sink)| {
                (
                    *key,
                    plane.carry(*source_fd, source, *carrier, *sink_fd, sink),
                )
            })
            .collect();
        drop(work);
        drop(borrowed);
        let out = PyList::empty(py);
        for (key, carried) in results {
            let steady = carried.steady();
            if steady && carried.fed.report.messages == 0 {
                continue; // nothing whole arrived yet
            }
            let report = Py::new(py, RelayReport::from(carried.fed.report))?;
            let seconds = (carried.unwritten.is_empty()
                && carried.sink_error.is_none()
                && carried.fed.report.chunks > 0)
                .then_some(carried.elapsed.as_secs_f64());
            let outcome = if steady {
                None
            } else {
                self.forget(key);
                Some(outcome(py, carried)?)
            };
            out.append((key, report, seconds, outcome))?;
        }
        for key in busy {
            // Its state is borrowed elsewhere at this instant (two streams lent with
            // one sink): back to the control plane, which carries it on the slow path.
            self.forget(key);
            let report = Py::new(py, RelayReport::from(Report::default()))?;
            let nothing = None::<String>;
            let outcome = (
                false,
                PyBytes::new(py, b""),
                nothing.clone(),
                nothing,
                None::<Py<PyAny>>,
            );
            out.append((key, report, None::<f64>, outcome))?;
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "DataPlane(fd={}, lent={})",
            self.plane.fd(),
            self.lent.len()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DataPlane>()?;
    Ok(())
}
