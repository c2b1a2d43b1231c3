//! Python bindings for `crate::ratelimit`: `TokenBuckets` and `ConnectionCounter`.
//! Both are frozen classes (no borrow flag) over the thread-safe Rust types.

use pyo3::prelude::*;

use crate::ratelimit;

/// Keyed token buckets; see `crate::ratelimit` and `_native.pyi`.
#[pyclass(frozen, name = "TokenBuckets", module = "slng_fast._native")]
struct TokenBuckets(ratelimit::TokenBuckets);

#[pymethods]
impl TokenBuckets {
    #[new]
    #[pyo3(signature = (capacity, refill_per_second, idle_seconds = 600.0))]
    fn new(capacity: f64, refill_per_second: f64, idle_seconds: f64) -> PyResult<Self> {
        Ok(TokenBuckets(ratelimit::TokenBuckets::new(
            capacity,
            refill_per_second,
            idle_seconds,
        )?))
    }

    #[getter]
    fn capacity(&self) -> f64 {
        self.0.defaults().capacity
    }

    #[getter]
    fn refill_per_second(&self) -> f64 {
        self.0.defaults().refill_per_second
    }

    #[getter]
    fn idle_seconds(&self) -> f64 {
        self.0.idle_seconds()
    }

    #[pyo3(signature = (key, now, cost = 1.0))]
    fn try_acquire(&self, key: &str, now: f64, cost: f64) -> PyResult<f64> {
        Ok(self.0.try_acquire(key, now, cost)?)
    }

    fn set_limits(&self, key: &str, capacity: f64, refill_per_second: f64) -> PyResult<()> {
        Ok(self.0.set_limits(key, capacity, refill_per_second)?)
    }

    fn limits(&self, key: &str) -> (f64, f64) {
        let limits = self.0.limits(key);
        (limits.capacity, limits.refill_per_second)
    }

    fn remove(&self, key: &str) -> bool {
        self.0.remove(key)
    }

    fn evict_idle(&self, now: f64) -> PyResult<usize> {
        Ok(self.0.evict_idle(now)?)
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    fn __repr__(&self) -> String {
        let d = self.0.defaults();
        format!(
            "TokenBuckets(capacity={:?}, refill_per_second={:?}, idle_seconds={:?})",
            d.capacity,
            d.refill_per_second,
            self.0.idle_seconds()
        )
    }
}

/// Concurrent connections by key; see `crate::ratelimit` and `_native.pyi`.
#[pyclass(frozen, name = "ConnectionCounter", module = "slng_fast._native")]
struct ConnectionCounter(ratelimit::ConnectionCounter);

#[pymethods]
impl ConnectionCounter {
    #[new]
    fn new() -> Self {
        ConnectionCounter(ratelimit::ConnectionCounter::new())
    }

    fn acquire(&self, key: &str, limit: i64) -> PyResult<bool> {
        Ok(self.0.acquire(key, limit)?)
    }

    fn release(&self, key: &str) -> bool {
        self.0.release(key)
    }

    fn count(&self, key: &str) -> u64 {
        self.0.count(key)
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TokenBuckets>()?;
    m.add_class::<ConnectionCounter>()?;
    Ok(())
}
