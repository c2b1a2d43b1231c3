//! Buffers a call needs only while it runs, pooled per thread.
//!
//! A stream spends nearly all its life waiting between reads; buffers it kept for its
//! next call (resampled PCM, a JSON frame, the resampler's float samples) were a few
//! KiB per live stream, times thousands of streams (issue 12 point 3). From the pool,
//! the waiting stream holds none, and a call still allocates nothing in the steady
//! state: it takes a buffer that the previous call, of any stream, gave back.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// Buffers kept per thread and element type: enough for the most one call nests.
const POOLED: usize = 4;
/// A buffer larger than this (a burst's worth) goes back to the allocator.
const MAX_POOLED_BYTES: usize = 256 * 1024;

pub struct Pool<T: 'static>(RefCell<Vec<Vec<T>>>);

impl<T> Pool<T> {
    const fn new() -> Self {
        Pool(RefCell::new(Vec::new()))
    }
}

thread_local! {
    static BYTES: Pool<u8> = const { Pool::new() };
    static FLOATS: Pool<f32> = const { Pool::new() };
}

/// An empty buffer from this thread's pool; it goes back when dropped.
pub struct Scratch<T: 'static> {
    vec: Vec<T>,
    pool: &'static LocalKey<Pool<T>>,
}

fn take<T>(pool: &'static LocalKey<Pool<T>>) -> Scratch<T> {
    let vec = pool
        .try_with(|p| p.0.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default();
    Scratch { vec, pool }
}

/// A byte buffer for the length of a call.
pub fn bytes() -> Scratch<u8> {
    take(&BYTES)
}

/// A float buffer for the length of a call.
pub fn floats() -> Scratch<f32> {
    take(&FLOATS)
}

impl<T> Drop for Scratch<T> {
    fn drop(&mut self) {
        let mut vec = std::mem::take(&mut self.vec);
        if vec.capacity() * std::mem::size_of::<T>() > MAX_POOLED_BYTES {
            return;
        }
        vec.clear();
        // (During the thread's teardown the pool may be gone: the buffer is freed.)
        let _ = self.pool.try_with(|p| {
            let mut pooled = p.0.borrow_mut();
            if pooled.len() < POOLED {
                pooled.push(vec);
            }
        });
    }
}

impl<T> Deref for Scratch<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.vec
    }
}

impl<T> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.vec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty() {
        let mut first = bytes();
        first.extend_from_slice(&[1; 1000]);
        let capacity = first.capacity();
        drop(first);
        let again = bytes();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
    }

    #[test]
    fn nested_calls_get_distinct_buffers() {
        let mut a = floats();
        let mut b = floats();
        a.push(1.0);
        b.push(2.0);
        assert_eq!((a[0], b[0]), (1.0, 2.0));
    }

    #[test]
    fn a_burst_sized_buffer_is_not_pooled() {
        let mut big = bytes();
        big.resize(MAX_POOLED_BYTES + 1, 0);
        drop(big);
        assert!(bytes().capacity() <= MAX_POOLED_BYTES);
    }

    #[test]
    fn the_pool_keeps_a_few_buffers_only() {
        let held: Vec<_> = (0..POOLED + 3)
            .map(|_| {
                let mut s = bytes();
                s.push(0);
                s
            })
            .collect();
        drop(held);
        BYTES.with(|p| assert_eq!(p.0.borrow().len(), POOLED));
    }
}
