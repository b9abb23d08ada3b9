//! The free list of chunk buffers transfers reuse.

use super::*;

/// A small free list of chunk buffers shared by the network task and a disk
/// thread, so steady-state transfers allocate (and page-fault) nothing. It
/// keeps at most `DEPTH + 4` free buffers unless told otherwise (`set_keep`:
/// a server shares one pool among all its transfers, sized in bytes).
#[derive(Clone)]
pub struct Pool(std::sync::Arc<std::sync::Mutex<Free>>);

struct Free {
    bufs: Vec<Vec<u8>>,
    /// Their capacities added up.
    bytes: usize,
    /// Most buffers, and most bytes, kept.
    keep: usize,
    keep_bytes: usize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool(std::sync::Arc::new(std::sync::Mutex::new(Free {
            bufs: Vec::new(),
            bytes: 0,
            keep: DEPTH + 4,
            keep_bytes: usize::MAX,
        })))
    }
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Keep at most `n` free buffers of at most `bytes` in all from now on
    /// (for every clone).
    pub fn set_keep(&self, n: usize, bytes: usize) {
        if let Ok(mut f) = self.0.lock() {
            f.keep = n;
            f.keep_bytes = bytes;
            while f.bufs.len() > n || f.bytes > bytes {
                if let Some(v) = f.bufs.pop() {
                    f.bytes -= v.capacity();
                }
            }
        }
    }

    /// Free every buffer kept (the limits stay).
    pub fn trim(&self) {
        if let Ok(mut f) = self.0.lock() {
            f.bufs = Vec::new();
            f.bytes = 0;
        }
    }

    /// Bytes held in free buffers.
    pub fn kept(&self) -> usize {
        self.0.lock().map_or(0, |f| f.bytes)
    }

    fn pop(&self) -> Vec<u8> {
        let Ok(mut f) = self.0.lock() else {
            return Vec::new();
        };
        match f.bufs.pop() {
            Some(v) => {
                f.bytes -= v.capacity();
                v
            }
            None => Vec::new(),
        }
    }

    /// An empty buffer with room for `cap` bytes.
    pub fn take(&self, cap: usize) -> Vec<u8> {
        let mut v = self.pop();
        v.clear();
        if v.capacity() < cap {
            v.reserve_exact(slab(cap));
        }
        v
    }

    /// A buffer of exactly `len` bytes whose contents are unspecified (a
    /// recycled buffer is reused as it is: no zero-filling per chunk).
    pub fn take_len(&self, len: usize) -> Vec<u8> {
        let mut v = self.pop();
        if v.capacity() < len {
            v.reserve_exact(slab(len) - v.len());
        }
        v.resize(len, 0);
        v
    }

    /// Give a buffer back (kept only while the pool is small).
    pub fn give(&self, v: Vec<u8>) {
        if let Ok(mut f) = self.0.lock()
            && f.bufs.len() < f.keep
            && f.bytes.saturating_add(v.capacity()) <= f.keep_bytes
        {
            f.bytes += v.capacity();
            f.bufs.push(v);
        }
    }

    /// Give back the buffer behind a payload, if nobody else holds it.
    pub fn recycle(&self, b: Bytes) {
        if let Ok(m) = b.try_into_mut() {
            self.give(Vec::from(m));
        }
    }
}

/// The capacity to allocate for a buffer of `n` bytes: chunk-sized ones
/// (a raw DATA payload, a raw DATA frame with its header) get one size, so
/// any of them can be reused for any other without growing (an exact fit
/// a few bytes short would be reallocated, or doubled).
fn slab(n: usize) -> usize {
    if (CHUNK / 2..=CHUNK + 4096).contains(&n) {
        CHUNK + 4096
    } else {
        n
    }
}
