//! Positioned, bounded reads: the only way the parsers touch a file. Tests
//! hand them byte slices; the sensor hands them the opened executable. A
//! [`Budget`] caps the total bytes one identification may read, so a hostile
//! file (a section claiming to be 2^63 bytes, a loop of pointers) costs at
//! most that much I/O and never an allocation of its claimed size.

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Why a read was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("read of {len} bytes at offset {off} is past the end of the file")]
    OutOfBounds { off: u64, len: u64 },
    #[error("read budget of {0} bytes exhausted")]
    Budget(u64),
    #[error("I/O error: {0}")]
    Io(String),
}

/// A source of bytes at offsets, with a known length.
pub trait ReadAt {
    /// Length of the source in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `off`; an error unless every byte was read.
    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> Result<(), ReadError>;
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let oob = || ReadError::OutOfBounds {
            off,
            len: buf.len() as u64,
        };
        let start = usize::try_from(off).map_err(|_| oob())?;
        let end = start.checked_add(buf.len()).ok_or_else(oob)?;
        let src = self.get(start..end).ok_or_else(oob)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.as_slice().read_exact_at(off, buf)
    }
}

/// An opened file and the size `fstat` gave when it was opened: the size is
/// part of the cache key, so reads never go past what was keyed.
pub struct FileAt<'a> {
    pub file: &'a File,
    pub len: u64,
}

impl ReadAt for FileAt<'_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let end = off.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(ReadError::OutOfBounds {
                off,
                len: buf.len() as u64,
            });
        }
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| ReadError::Io(e.to_string()))
    }
}

/// Wraps a source and refuses reads once `limit` bytes were read in total.
pub struct Budget<'a, R: ReadAt + ?Sized> {
    inner: &'a R,
    left: Cell<u64>,
    limit: u64,
}

impl<'a, R: ReadAt + ?Sized> Budget<'a, R> {
    pub fn new(inner: &'a R, limit: u64) -> Self {
        Budget {
            inner,
            left: Cell::new(limit),
            limit,
        }
    }

    pub fn size(&self) -> u64 {
        self.inner.size()
    }

    /// Reads exactly `buf.len()` bytes at `off`, charged to the budget.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let n = buf.len() as u64;
        let left = self.left.get();
        if n > left {
            return Err(ReadError::Budget(self.limit));
        }
        self.left.set(left - n);
        self.inner.read_exact_at(off, buf)
    }

    /// Reads `len` bytes at `off` into a new vector; the length is checked
    /// against the file and the budget before anything is allocated.
    pub fn read_vec(&self, off: u64, len: u64) -> Result<Vec<u8>, ReadError> {
        let oob = ReadError::OutOfBounds { off, len };
        if off.checked_add(len).is_none_or(|e| e > self.size()) {
            return Err(oob);
        }
        if len > self.left.get() {
            return Err(ReadError::Budget(self.limit));
        }
        let mut v = vec![0u8; usize::try_from(len).map_err(|_| oob)?];
        self.read(off, &mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_refuse_reads_past_the_end() {
        let data = [1u8, 2, 3, 4];
        let mut b = [0u8; 2];
        assert!(data[..].read_exact_at(2, &mut b).is_ok());
        assert_eq!(b, [3, 4]);
        assert!(data[..].read_exact_at(3, &mut b).is_err());
        assert!(data[..].read_exact_at(u64::MAX, &mut b).is_err());
    }

    #[test]
    fn budget_caps_total_bytes_and_checks_before_allocating() {
        let data = vec![0u8; 100];
        let r = Budget::new(&data, 10);
        assert!(r.read_vec(0, 8).is_ok());
        assert_eq!(r.read_vec(0, 8), Err(ReadError::Budget(10)));
        assert!(matches!(
            r.read_vec(0, u64::MAX),
            Err(ReadError::OutOfBounds { .. })
        ));
    }
}
