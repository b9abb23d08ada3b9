//! A local file's mode and mtime, as ATTRS carries them, both ways.

use std::fs::File;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol;

/// The mode and mtime of a local file, as ATTRS carries them.
pub fn local_attrs(meta: &std::fs::Metadata) -> protocol::Attrs {
    use std::os::unix::fs::MetadataExt;
    protocol::Attrs {
        mode: meta.mode() & protocol::MODE_BITS,
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
    }
}

/// Give a downloaded file the mode (`& 0o777`: never setuid, setgid or
/// sticky) and mtime the server sent; `shown` names it in errors.
pub fn apply_attrs(file: &File, a: protocol::Attrs, shown: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let nanos = Duration::from_nanos(a.mtime_ns.unsigned_abs());
    let when = if a.mtime_ns >= 0 {
        std::time::UNIX_EPOCH.checked_add(nanos)
    } else {
        std::time::UNIX_EPOCH.checked_sub(nanos)
    };
    if let Some(when) = when {
        file.set_times(std::fs::FileTimes::new().set_modified(when))
            .map_err(|e| Error::io(format!("setting the modification time of {shown}"), &e))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(
        a.mode & protocol::MODE_BITS,
    ))
    .map_err(|e| Error::io(format!("setting the mode of {shown}"), &e))
}
