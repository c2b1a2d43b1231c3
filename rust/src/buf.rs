//! Writing output straight into memory that is not initialised yet, in one place.
//!
//! The `*_into` writers of the core (`codec`, `msgpack`, `chunker`) take a
//! `&mut [MaybeUninit<u8>]` of exactly the output length and return it as
//! `&mut [u8]` once every byte is written, so the output is written once and
//! never zeroed first. [`assume_init`] is the one cast they use for that, and
//! [`fill`] is the one check that a writer covered its whole buffer: the only
//! ways to hand such bytes on (`extend_with` here, `bytes_with` in the Python
//! layer) go through it, so no uninitialised byte can be exposed.

use std::mem::MaybeUninit;

/// `dst` as bytes, once every one of them has been written.
///
/// # Safety
/// Every element of `dst` must have been written.
#[inline(always)]
pub unsafe fn assume_init(dst: &mut [MaybeUninit<u8>]) -> &mut [u8] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the caller promises
    // that every element is initialised.
    unsafe { &mut *(dst as *mut [MaybeUninit<u8>] as *mut [u8]) }
}

/// Let `write` fill all of `dst`: it must return `dst` itself, initialised (what
/// the `*_into` writers return). Panics if it returns anything else, a bug in the
/// writer; an error from `write` is passed on.
#[inline(always)]
pub fn fill<E, W>(dst: &mut [MaybeUninit<u8>], write: W) -> Result<(), E>
where
    W: for<'o> FnOnce(&'o mut [MaybeUninit<u8>]) -> Result<&'o mut [u8], E>,
{
    let (start, len) = (dst.as_ptr().cast::<u8>(), dst.len());
    let written = write(dst)?;
    assert!(
        written.len() == len && std::ptr::eq(written.as_ptr(), start),
        "native writer did not fill its whole buffer"
    );
    Ok(())
}

/// Append `len` bytes to `out`, written in place by `write` (see [`fill`]).
#[inline]
pub fn extend_with<E, W>(out: &mut Vec<u8>, len: usize, write: W) -> Result<(), E>
where
    W: for<'o> FnOnce(&'o mut [MaybeUninit<u8>]) -> Result<&'o mut [u8], E>,
{
    out.reserve(len);
    fill(&mut out.spare_capacity_mut()[..len], write)?;
    // SAFETY: `fill` checked that `write` initialised the `len` bytes after the
    // current length (it returned them as initialised bytes).
    unsafe { out.set_len(out.len() + len) };
    Ok(())
}

/// A new `Vec` of `len` bytes written in place by `write` (see [`fill`]).
#[inline]
pub fn vec_with<E, W>(len: usize, write: W) -> Result<Vec<u8>, E>
where
    W: for<'o> FnOnce(&'o mut [MaybeUninit<u8>]) -> Result<&'o mut [u8], E>,
{
    let mut out = Vec::new();
    extend_with(&mut out, len, write)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(dst: &mut [MaybeUninit<u8>]) -> Result<&mut [u8], ()> {
        for (i, b) in dst.iter_mut().enumerate() {
            b.write(i as u8);
        }
        // SAFETY: every byte was written just above.
        Ok(unsafe { assume_init(dst) })
    }

    #[test]
    fn fills_and_appends() {
        let mut out = b"ab".to_vec();
        extend_with(&mut out, 3, write_all).unwrap();
        assert_eq!(out, b"ab\x00\x01\x02");
        assert_eq!(vec_with(0, write_all).unwrap(), b"");
    }

    #[test]
    fn an_error_leaves_the_vec_as_it_was() {
        let mut out = b"ab".to_vec();
        assert_eq!(extend_with(&mut out, 3, |_| Err("no")), Err("no"));
        assert_eq!(out, b"ab");
    }

    #[test]
    #[should_panic(expected = "did not fill its whole buffer")]
    fn a_writer_that_stops_short_panics() {
        let _ = vec_with(4, |dst| write_all(&mut dst[..2]));
    }
}
