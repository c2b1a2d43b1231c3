//! Limits per key: token buckets (messages per minute) and connection counters.
//!
//! Both are safe to share between threads: the state sits behind one
//! `parking_lot::Mutex`, held only for a hash lookup and a few float operations.
//! Time is always passed in (monotonic seconds, e.g. `time.monotonic()` or
//! `trio.current_time()`), never read, so the callers and the tests decide it.
//!
//! # Token bucket decisions
//!
//! * A bucket holds up to `capacity` tokens and gains `refill_per_second` tokens
//!   per second, continuously. A new key starts full.
//! * [`TokenBuckets::try_acquire`] returns `0.0` when `cost` tokens were taken,
//!   otherwise the seconds from `now` until `cost` tokens will be there (always
//!   `> 0`); nothing is taken then. A caller that waits exactly that long is
//!   allowed, because a request is also allowed when it is short of `cost` by at
//!   most [`TOKEN_EPSILON`] tokens (float rounding would otherwise deny it and ask
//!   for a wait of a few nanoseconds).
//! * `cost > capacity` can never be allowed: the answer is `f64::INFINITY` (no
//!   finite `retry_after_ms` exists; the gateway should send `rate_limited`
//!   without one, or treat it as a configuration error). A capacity-sized wait
//!   would be wrong: a full bucket would then answer `0.0`, which means allowed.
//! * Time going backwards (a `now` below the bucket's last time, e.g. two threads
//!   racing between reading the clock and taking the lock) adds no tokens: the
//!   bucket keeps its last time, and a wait is measured from the caller's `now`.
//! * [`TokenBuckets::set_limits`] gives one key its own capacity and refill rate.
//!   Tokens above the new capacity are dropped; the time since the bucket's last
//!   use refills at the new rate. A key with its own limits is never evicted (its
//!   limits would be lost); [`TokenBuckets::remove`] forgets it.
//! * Eviction: a bucket untouched for `idle_seconds` that would be full again is
//!   the same as a new key, so dropping it changes no answer. Buckets are swept
//!   lazily inside `try_acquire`, once every `max(SWEEP_MIN_CALLS, len)` calls, so
//!   the cost is amortized O(1) per call and the map is at most about twice the
//!   size of the set of recently used keys. (Eviction relies on a monotonic
//!   clock: were time to go back by more than `idle_seconds` after a key was
//!   evicted, the key would start full again.)
//!
//! # Connection counter decisions
//!
//! * [`ConnectionCounter::acquire`] increments and returns `true` when the key is
//!   below `limit`, else returns `false`. A lowered limit takes effect as the
//!   count drops.
//! * [`ConnectionCounter::release`] of a key at zero (never acquired, or already
//!   released) is a no-op that returns `false`: releasing happens in cleanup code
//!   where raising would hide the original error. Keys at zero take no memory.

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::{Error, Result};

/// A request short of its cost by at most this many tokens is still allowed.
pub const TOKEN_EPSILON: f64 = 1e-9;

/// Idle buckets are swept once every `max(SWEEP_MIN_CALLS, number of keys)` calls.
pub const SWEEP_MIN_CALLS: usize = 1024;

/// A bucket's capacity and refill rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub capacity: f64,
    pub refill_per_second: f64,
}

impl Limits {
    /// Both numbers must be finite and greater than zero.
    pub fn new(capacity: f64, refill_per_second: f64) -> Result<Self> {
        Ok(Limits {
            capacity: positive("capacity", capacity)?,
            refill_per_second: positive("refill_per_second", refill_per_second)?,
        })
    }
}

fn positive(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::NotPositive { name, value })
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    /// The time `tokens` was computed for; never decreases. `-inf` for a bucket
    /// made by `set_limits` and not used yet (it is full whatever `now` is).
    last: f64,
    limits: Limits,
    /// Has its own limits (set_limits): never evicted.
    pinned: bool,
}

impl Bucket {
    fn full(limits: Limits, last: f64, pinned: bool) -> Self {
        Bucket {
            tokens: limits.capacity,
            last,
            limits,
            pinned,
        }
    }

    #[inline]
    fn acquire(&mut self, now: f64, cost: f64) -> f64 {
        let t = if now > self.last { now } else { self.last };
        let elapsed = t - self.last;
        if elapsed > 0.0 {
            self.tokens =
                (self.tokens + elapsed * self.limits.refill_per_second).min(self.limits.capacity);
            self.last = t;
        }
        if self.tokens >= cost - TOKEN_EPSILON {
            self.tokens = (self.tokens - cost).max(0.0);
            return 0.0;
        }
        if cost - TOKEN_EPSILON > self.limits.capacity {
            return f64::INFINITY;
        }
        let wait = (cost - self.tokens) / self.limits.refill_per_second + (t - now);
        wait.max(f64::MIN_POSITIVE)
    }

    /// Untouched for `idle_seconds` and full again: the same as a new key.
    #[inline]
    fn is_idle(&self, now: f64, idle_seconds: f64) -> bool {
        let elapsed = now - self.last;
        !self.pinned
            && elapsed >= idle_seconds
            && self.tokens + elapsed * self.limits.refill_per_second >= self.limits.capacity
    }
}

struct BucketState {
    buckets: FxHashMap<String, Bucket>,
    calls: usize,
    sweep_after: usize,
}

impl BucketState {
    fn sweep(&mut self, now: f64, idle_seconds: f64) -> usize {
        let before = self.buckets.len();
        self.buckets.retain(|_, b| !b.is_idle(now, idle_seconds));
        let len = self.buckets.len();
        if self.buckets.capacity() > 64 && len * 4 < self.buckets.capacity() {
            self.buckets.shrink_to(len * 2);
        }
        self.calls = 0;
        self.sweep_after = SWEEP_MIN_CALLS.max(len);
        before - len
    }
}

/// Token buckets by key, all with the same default limits unless a key has its own.
pub struct TokenBuckets {
    defaults: Limits,
    idle_seconds: f64,
    state: Mutex<BucketState>,
}

impl TokenBuckets {
    /// `capacity`, `refill_per_second` and `idle_seconds` must be finite and > 0.
    pub fn new(capacity: f64, refill_per_second: f64, idle_seconds: f64) -> Result<Self> {
        Ok(TokenBuckets {
            defaults: Limits::new(capacity, refill_per_second)?,
            idle_seconds: positive("idle_seconds", idle_seconds)?,
            state: Mutex::new(BucketState {
                buckets: FxHashMap::default(),
                calls: 0,
                sweep_after: SWEEP_MIN_CALLS,
            }),
        })
    }

    pub fn defaults(&self) -> Limits {
        self.defaults
    }

    pub fn idle_seconds(&self) -> f64 {
        self.idle_seconds
    }

    /// Take `cost` tokens from `key`'s bucket at time `now`: `0.0` if taken, else
    /// the seconds to wait (`> 0`, or infinite when `cost` exceeds the capacity)
    /// and nothing is taken. `now` must be finite, `cost` finite and `> 0`.
    pub fn try_acquire(&self, key: &str, now: f64, cost: f64) -> Result<f64> {
        if !now.is_finite() {
            return Err(Error::NotFinite {
                name: "now",
                value: now,
            });
        }
        let cost = positive("cost", cost)?;
        let mut state = self.state.lock();
        state.calls += 1;
        if state.calls >= state.sweep_after {
            state.sweep(now, self.idle_seconds);
        }
        if let Some(bucket) = state.buckets.get_mut(key) {
            return Ok(bucket.acquire(now, cost));
        }
        let mut bucket = Bucket::full(self.defaults, now, false);
        let wait = bucket.acquire(now, cost);
        if wait == 0.0 {
            // A denied new key would still be full: nothing to remember.
            state.buckets.insert(key.to_owned(), bucket);
        }
        Ok(wait)
    }

    /// Give `key` its own limits (see the module docs); creates the key, full, if
    /// it is not tracked.
    pub fn set_limits(&self, key: &str, capacity: f64, refill_per_second: f64) -> Result<()> {
        let limits = Limits::new(capacity, refill_per_second)?;
        let mut state = self.state.lock();
        match state.buckets.get_mut(key) {
            Some(bucket) => {
                bucket.limits = limits;
                bucket.tokens = bucket.tokens.min(limits.capacity);
                bucket.pinned = true;
            }
            None => {
                state.buckets.insert(
                    key.to_owned(),
                    Bucket::full(limits, f64::NEG_INFINITY, true),
                );
            }
        }
        Ok(())
    }

    /// The limits that apply to `key`.
    pub fn limits(&self, key: &str) -> Limits {
        self.state
            .lock()
            .buckets
            .get(key)
            .map_or(self.defaults, |b| b.limits)
    }

    /// Forget `key` (its tokens and its own limits); `true` if it was tracked.
    pub fn remove(&self, key: &str) -> bool {
        self.state.lock().buckets.remove(key).is_some()
    }

    /// Evict the idle buckets now; returns how many. `try_acquire` does this by
    /// itself from time to time.
    pub fn evict_idle(&self, now: f64) -> Result<usize> {
        if !now.is_finite() {
            return Err(Error::NotFinite {
                name: "now",
                value: now,
            });
        }
        Ok(self.state.lock().sweep(now, self.idle_seconds))
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.state.lock().buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Concurrent connections by key.
#[derive(Default)]
pub struct ConnectionCounter {
    counts: Mutex<FxHashMap<String, u64>>,
}

impl ConnectionCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one more connection for `key` if it has fewer than `limit` (> 0).
    pub fn acquire(&self, key: &str, limit: i64) -> Result<bool> {
        if limit <= 0 {
            return Err(Error::NotPositive {
                name: "limit",
                value: limit as f64,
            });
        }
        let limit = limit as u64;
        let mut counts = self.counts.lock();
        match counts.get_mut(key) {
            Some(count) if *count >= limit => Ok(false),
            Some(count) => {
                *count += 1;
                Ok(true)
            }
            None => {
                counts.insert(key.to_owned(), 1);
                Ok(true)
            }
        }
    }

    /// Count one connection less; `false` (and nothing changes) if `key` had none.
    pub fn release(&self, key: &str) -> bool {
        let mut counts = self.counts.lock();
        match counts.get_mut(key) {
            Some(count) if *count > 1 => {
                *count -= 1;
                true
            }
            Some(_) => {
                counts.remove(key);
                true
            }
            None => false,
        }
    }

    pub fn count(&self, key: &str) -> u64 {
        self.counts.lock().get(key).copied().unwrap_or(0)
    }

    /// Number of keys with at least one connection.
    pub fn len(&self) -> usize {
        self.counts.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn new_key_starts_full_then_waits() {
        let tb = TokenBuckets::new(3.0, 0.5, 600.0).unwrap();
        for _ in 0..3 {
            assert_eq!(tb.try_acquire("k", 10.0, 1.0).unwrap(), 0.0);
        }
        // Empty: one token comes in 2 s.
        assert!(close(tb.try_acquire("k", 10.0, 1.0).unwrap(), 2.0));
        assert!(close(tb.try_acquire("k", 11.0, 1.0).unwrap(), 1.0));
        assert_eq!(tb.try_acquire("k", 12.0, 1.0).unwrap(), 0.0);
        // Another key is independent.
        assert_eq!(tb.try_acquire("other", 12.0, 3.0).unwrap(), 0.0);
        assert_eq!(tb.len(), 2);
    }

    #[test]
    fn refill_is_continuous_and_capped() {
        let tb = TokenBuckets::new(10.0, 2.0, 600.0).unwrap();
        assert_eq!(tb.try_acquire("k", 0.0, 10.0).unwrap(), 0.0);
        // 1.25 s later: 2.5 tokens.
        assert_eq!(tb.try_acquire("k", 1.25, 2.5).unwrap(), 0.0);
        assert!(close(tb.try_acquire("k", 1.25, 0.5).unwrap(), 0.25));
        // Long after: capped at 10, not 2000.
        assert_eq!(tb.try_acquire("k", 1000.0, 10.0).unwrap(), 0.0);
        assert!(close(tb.try_acquire("k", 1000.0, 1.0).unwrap(), 0.5));
    }

    #[test]
    fn waiting_the_answer_is_enough() {
        // Rates whose waits do not come out exact in binary.
        for (cap, rate) in [
            (20.0, 20.0 / 60.0),
            (60.0, 1.0),
            (120.0, 2.0),
            (7.0, 0.1),
            (1.0, 1.0 / 3.0),
        ] {
            let tb = TokenBuckets::new(cap, rate, 600.0).unwrap();
            let mut now = 12345.678;
            assert_eq!(tb.try_acquire("k", now, cap).unwrap(), 0.0);
            for _ in 0..200 {
                let wait = tb.try_acquire("k", now, 1.0).unwrap();
                assert!(wait > 0.0);
                now += wait;
                assert_eq!(
                    tb.try_acquire("k", now, 1.0).unwrap(),
                    0.0,
                    "cap {cap} rate {rate}"
                );
            }
        }
    }

    #[test]
    fn denied_takes_nothing() {
        let tb = TokenBuckets::new(5.0, 1.0, 600.0).unwrap();
        assert_eq!(tb.try_acquire("k", 0.0, 4.0).unwrap(), 0.0);
        assert!(close(tb.try_acquire("k", 0.0, 3.0).unwrap(), 2.0));
        assert!(close(tb.try_acquire("k", 0.0, 3.0).unwrap(), 2.0));
        assert_eq!(tb.try_acquire("k", 0.0, 1.0).unwrap(), 0.0);
    }

    #[test]
    fn cost_above_capacity_is_never() {
        let tb = TokenBuckets::new(5.0, 1.0, 600.0).unwrap();
        assert_eq!(tb.try_acquire("k", 0.0, 5.5).unwrap(), f64::INFINITY);
        // A denied new key is not tracked.
        assert_eq!(tb.len(), 0);
        assert_eq!(tb.try_acquire("k", 0.0, 5.0).unwrap(), 0.0);
        assert_eq!(tb.try_acquire("k", 100.0, 6.0).unwrap(), f64::INFINITY);
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let tb = TokenBuckets::new(2.0, 1.0, 600.0).unwrap();
        assert_eq!(tb.try_acquire("k", 100.0, 2.0).unwrap(), 0.0);
        // Back to 50: no tokens; the wait counts from the caller's now.
        assert!(close(tb.try_acquire("k", 50.0, 1.0).unwrap(), 51.0));
        assert!(close(tb.try_acquire("k", 99.5, 1.0).unwrap(), 1.5));
        // Going back did not move the bucket's time: at 100.5 there is half a token.
        assert!(close(tb.try_acquire("k", 100.5, 1.0).unwrap(), 0.5));
        assert_eq!(tb.try_acquire("k", 101.0, 1.0).unwrap(), 0.0);
        // Far back, huge and tiny values: no panic, no tokens.
        assert!(tb.try_acquire("k", -1e300, 1.0).unwrap() > 0.0);
        assert!(tb.try_acquire("k", f64::MIN, 1.0).unwrap() > 1e300);
    }

    #[test]
    fn invalid_numbers() {
        assert!(matches!(
            TokenBuckets::new(0.0, 1.0, 1.0),
            Err(Error::NotPositive {
                name: "capacity",
                ..
            })
        ));
        assert!(matches!(
            TokenBuckets::new(-1.0, 1.0, 1.0),
            Err(Error::NotPositive {
                name: "capacity",
                ..
            })
        ));
        assert!(matches!(
            TokenBuckets::new(f64::NAN, 1.0, 1.0),
            Err(Error::NotPositive { .. })
        ));
        assert!(matches!(
            TokenBuckets::new(f64::INFINITY, 1.0, 1.0),
            Err(Error::NotPositive { .. })
        ));
        assert!(matches!(
            TokenBuckets::new(1.0, 0.0, 1.0),
            Err(Error::NotPositive {
                name: "refill_per_second",
                ..
            })
        ));
        assert!(matches!(
            TokenBuckets::new(1.0, 1.0, 0.0),
            Err(Error::NotPositive {
                name: "idle_seconds",
                ..
            })
        ));
        let tb = TokenBuckets::new(1.0, 1.0, 1.0).unwrap();
        assert!(matches!(
            tb.try_acquire("k", f64::NAN, 1.0),
            Err(Error::NotFinite { name: "now", .. })
        ));
        assert!(matches!(
            tb.try_acquire("k", f64::INFINITY, 1.0),
            Err(Error::NotFinite { .. })
        ));
        assert!(matches!(
            tb.try_acquire("k", 0.0, 0.0),
            Err(Error::NotPositive { name: "cost", .. })
        ));
        assert!(matches!(
            tb.try_acquire("k", 0.0, f64::NAN),
            Err(Error::NotPositive { name: "cost", .. })
        ));
        assert!(matches!(
            tb.set_limits("k", 1.0, -2.0),
            Err(Error::NotPositive { .. })
        ));
        assert!(tb.is_empty());
        let err = TokenBuckets::new(-1.0, 1.0, 1.0).err().unwrap();
        assert_eq!(
            err.to_string(),
            "capacity must be a finite number greater than zero, got -1"
        );
    }

    #[test]
    fn set_limits_overrides_one_key() {
        let tb = TokenBuckets::new(10.0, 1.0, 600.0).unwrap();
        assert_eq!(tb.try_acquire("k", 0.0, 2.0).unwrap(), 0.0); // 8 left
        tb.set_limits("k", 5.0, 10.0).unwrap(); // clamped to 5
        assert_eq!(
            tb.limits("k"),
            Limits {
                capacity: 5.0,
                refill_per_second: 10.0
            }
        );
        assert_eq!(tb.try_acquire("k", 0.0, 5.0).unwrap(), 0.0);
        assert!(close(tb.try_acquire("k", 0.0, 1.0).unwrap(), 0.1));
        assert_eq!(tb.try_acquire("k", 0.0, 6.0).unwrap(), f64::INFINITY);
        // Raising the capacity keeps the tokens.
        tb.set_limits("k", 100.0, 10.0).unwrap();
        assert!(close(tb.try_acquire("k", 0.0, 1.0).unwrap(), 0.1));
        // A key set before any use starts full.
        tb.set_limits("new", 3.0, 1.0).unwrap();
        assert_eq!(tb.try_acquire("new", 5.0, 3.0).unwrap(), 0.0);
        assert!(close(tb.try_acquire("new", 5.0, 1.0).unwrap(), 1.0));
        // Others keep the defaults.
        assert_eq!(tb.limits("other"), tb.defaults());
        assert_eq!(tb.try_acquire("other", 0.0, 10.0).unwrap(), 0.0);
        assert!(tb.remove("k"));
        assert!(!tb.remove("k"));
        assert_eq!(tb.limits("k"), tb.defaults());
    }

    #[test]
    fn eviction_of_idle_full_buckets() {
        let tb = TokenBuckets::new(10.0, 1.0, 60.0).unwrap();
        assert_eq!(tb.try_acquire("a", 0.0, 1.0).unwrap(), 0.0); // full again at 1
        assert_eq!(tb.try_acquire("b", 0.0, 10.0).unwrap(), 0.0); // full again at 10
        assert_eq!(tb.try_acquire("c", 30.0, 10.0).unwrap(), 0.0); // idle from 90
        tb.set_limits("pinned", 1.0, 1.0).unwrap();
        assert_eq!(tb.evict_idle(59.0).unwrap(), 0);
        assert_eq!(tb.evict_idle(60.0).unwrap(), 2);
        assert_eq!(tb.len(), 2);
        assert_eq!(tb.evict_idle(89.0).unwrap(), 0);
        assert_eq!(tb.evict_idle(1e9).unwrap(), 1);
        assert_eq!(tb.len(), 1, "a key with its own limits stays");

        // Idle long enough but not full again: kept.
        let slow = TokenBuckets::new(100.0, 0.1, 60.0).unwrap();
        assert_eq!(slow.try_acquire("k", 0.0, 100.0).unwrap(), 0.0);
        assert_eq!(slow.evict_idle(999.0).unwrap(), 0);
        assert_eq!(slow.evict_idle(1000.0).unwrap(), 1);
    }

    #[test]
    fn eviction_is_lazy_and_amortized() {
        let tb = TokenBuckets::new(1.0, 1.0, 10.0).unwrap();
        let keys: Vec<String> = (0..5000).map(|i| format!("key-{i}")).collect();
        // 5000 keys used once at t=0 (sweeps then find nothing idle).
        for k in &keys {
            assert_eq!(tb.try_acquire(k, 0.0, 1.0).unwrap(), 0.0);
        }
        assert_eq!(tb.len(), 5000);
        // Much later one hot key: the old keys go within at most max(1024, len) calls.
        let mut t = 100.0;
        for _ in 0..5000 {
            t += 1.0;
            tb.try_acquire("hot", t, 1.0).unwrap();
        }
        assert_eq!(tb.len(), 1);
        // Evicted keys answer as new ones.
        assert_eq!(tb.try_acquire(&keys[0], t, 1.0).unwrap(), 0.0);
    }

    #[test]
    fn buckets_from_many_threads() {
        let tb = Arc::new(TokenBuckets::new(1000.0, 1e-6, 600.0).unwrap());
        let allowed = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let tb = Arc::clone(&tb);
                let allowed = Arc::clone(&allowed);
                std::thread::spawn(move || {
                    for n in 0..2000 {
                        // Slightly different clocks per thread, some going back.
                        let now = 1.0 + ((n + i) % 3) as f64 * 1e-9;
                        if tb.try_acquire("shared", now, 1.0).unwrap() == 0.0 {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                        tb.try_acquire(&format!("own-{i}"), now, 1.0).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 1000);
        assert_eq!(tb.len(), 5);
    }

    #[test]
    fn connection_counter() {
        let cc = ConnectionCounter::new();
        assert!(cc.acquire("k", 2).unwrap());
        assert!(cc.acquire("k", 2).unwrap());
        assert!(!cc.acquire("k", 2).unwrap());
        assert!(cc.acquire("k", 3).unwrap());
        assert!(!cc.acquire("k", 1).unwrap(), "a lowered limit holds");
        assert_eq!(cc.count("k"), 3);
        assert_eq!(cc.len(), 1);
        assert!(cc.release("k"));
        assert!(cc.release("k"));
        assert!(cc.release("k"));
        assert_eq!(cc.count("k"), 0);
        assert!(cc.is_empty(), "a key at zero is removed");
        assert!(!cc.release("k"));
        assert!(!cc.release("never"));
        assert!(cc.is_empty());
        assert!(matches!(
            cc.acquire("k", 0),
            Err(Error::NotPositive { name: "limit", .. })
        ));
        assert!(matches!(
            cc.acquire("k", -5),
            Err(Error::NotPositive { .. })
        ));
    }

    #[test]
    fn connection_counter_from_many_threads() {
        let cc = Arc::new(ConnectionCounter::new());
        let held = Arc::new(AtomicU64::new(0));
        let max_held = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (cc, held, max_held) =
                    (Arc::clone(&cc), Arc::clone(&held), Arc::clone(&max_held));
                std::thread::spawn(move || {
                    for _ in 0..5000 {
                        if cc.acquire("k", 3).unwrap() {
                            let now_held = held.fetch_add(1, Ordering::SeqCst) + 1;
                            max_held.fetch_max(now_held, Ordering::SeqCst);
                            assert!(cc.count("k") <= 3);
                            held.fetch_sub(1, Ordering::SeqCst);
                            assert!(cc.release("k"));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(max_held.load(Ordering::SeqCst) <= 3);
        assert_eq!(cc.count("k"), 0);
        assert!(cc.is_empty());
    }
}
