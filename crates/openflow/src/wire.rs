//! Byte-level helpers shared by the codecs: a bounds-checked reader and
//! length-patching writers. Nothing here indexes a slice directly.

use crate::{Error, Result};

/// Rounds `len` up to the next multiple of 8.
pub(crate) const fn pad8(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// A cursor over input bytes; every read checks the remaining length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.buf.split_at_checked(n) {
            Some((head, tail)) => {
                self.buf = tail;
                Ok(head)
            }
            None => Err(Error::Truncated { what: self.what, needed: n, available: self.buf.len() }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n).map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// Everything not read yet; the reader is empty afterwards.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Splits off the next `len` bytes as a reader of their own, for a
    /// structure whose length field says how far it reaches.
    pub(crate) fn sub(&mut self, len: usize, what: &'static str) -> Result<Reader<'a>> {
        self.take(len).map(|b| Reader::new(b, what))
    }
}

/// Reserves a 16-bit length field at the end of `out`; returns its position.
pub(crate) fn reserve_u16(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

/// Writes `out.len() - start` into the 16-bit field at `at`.
pub(crate) fn patch_len(out: &mut [u8], at: usize, start: usize, what: &'static str) -> Result<()> {
    let len = out.len().saturating_sub(start);
    patch_u16(out, at, len, what)
}

/// Writes `value` into the 16-bit field at `at`, failing if it does not fit.
pub(crate) fn patch_u16(out: &mut [u8], at: usize, value: usize, what: &'static str) -> Result<()> {
    let v = u16::try_from(value).map_err(|_| Error::TooLong { what, length: value, max: usize::from(u16::MAX) })?;
    match out.get_mut(at..at.saturating_add(2)) {
        Some(field) => {
            field.copy_from_slice(&v.to_be_bytes());
            Ok(())
        }
        None => Err(Error::Truncated { what, needed: at.saturating_add(2), available: out.len() }),
    }
}

/// Appends zeros until `out.len() - start` is a multiple of 8.
pub(crate) fn pad_to_8(out: &mut Vec<u8>, start: usize) {
    let len = out.len().saturating_sub(start);
    out.resize(start + pad8(len), 0);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
