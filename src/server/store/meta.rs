//! What is recorded about a stored file: its SHA-256 (with the size and
//! mtime it was computed for) and uploader in extended attributes, its mode
//! and mtime.

use std::fs::File;
use std::io::Read;

use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::FileInfo;
use crate::error::{Error, Result};
use crate::protocol::MODE_BITS;

const XATTR: &str = "user.sft.sha256";
/// Who uploaded a file (the user name, UTF-8).
pub(super) const OWNER_XATTR: &str = "user.sft.owner";

pub(super) fn mtime_ns(st: &rustix::fs::Stat) -> i64 {
    st.st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}

/// The mode a file uploaded with ATTRS is stored with: its permission bits
/// only (no setuid, setgid or sticky), always readable by the server.
pub fn stored_mode(mode: u32) -> u32 {
    (mode & MODE_BITS) | 0o400
}

/// Size, mtime and the remembered digest (if still valid) of an open file.
pub(super) fn file_info(file: &File) -> Result<FileInfo> {
    let st = rustix::fs::fstat(file).map_err(|e| Error::from(e).context("reading file status"))?;
    let size = st.st_size as u64;
    let mtime = mtime_ns(&st);
    let mut buf = [0u8; 64];
    let sha256 = match rustix::fs::fgetxattr(file, XATTR, &mut buf[..]) {
        Ok(48) => {
            let rec_size = u64::from_be_bytes(buf[32..40].try_into().unwrap_or_default());
            let rec_mtime = i64::from_be_bytes(buf[40..48].try_into().unwrap_or_default());
            let mut d = [0u8; 32];
            d.copy_from_slice(&buf[..32]);
            (rec_size == size && rec_mtime == mtime).then_some(d)
        }
        _ => None,
    };
    Ok(FileInfo {
        size,
        mtime_ns: mtime,
        mode: st.st_mode & MODE_BITS,
        sha256,
    })
}

/// Whether a SHA-256 was recorded for the file (its size is asked, not read).
pub(super) fn has_digest_xattr(file: &File) -> bool {
    rustix::fs::fgetxattr(file, XATTR, &mut [0u8; 0][..]).is_ok()
}

/// The owner recorded on a file, if any.
pub(super) fn read_owner(file: &File) -> Option<String> {
    let mut buf = [0u8; 256];
    match rustix::fs::fgetxattr(file, OWNER_XATTR, &mut buf[..]) {
        Ok(n) => std::str::from_utf8(&buf[..n]).ok().map(str::to_string),
        Err(_) => None,
    }
}

pub(super) fn set_digest_xattr(
    file: &File,
    size: u64,
    mtime_ns: i64,
    sha256: &[u8; 32],
) -> std::result::Result<(), Errno> {
    let mut v = [0u8; 48];
    v[..32].copy_from_slice(sha256);
    v[32..40].copy_from_slice(&size.to_be_bytes());
    v[40..48].copy_from_slice(&mtime_ns.to_be_bytes());
    rustix::fs::fsetxattr(file, XATTR, &v, rustix::fs::XattrFlags::empty())
}

/// Hash a file that has no remembered digest (placed by hand) and remember it.
pub(super) fn hash_and_remember(file: &File, info: &FileInfo) -> Result<[u8; 32]> {
    let (_, d) = sha256_to_end(file).map_err(|e| Error::io("hashing file", &e))?;
    let _ = set_digest_xattr(file, info.size, info.mtime_ns, &d);
    Ok(d)
}

/// The length and SHA-256 of what `r` holds from where it stands to its end.
pub(super) fn sha256_to_end(mut r: impl Read) -> std::io::Result<(u64, [u8; 32])> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n: u64 = 0;
    loop {
        let got = r.read(&mut buf)?;
        if got == 0 {
            return Ok((n, h.finalize().into()));
        }
        n += got as u64;
        h.update(&buf[..got]);
    }
}
