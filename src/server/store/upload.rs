//! An upload in progress (`Upload`), one ready to be made visible
//! (`Staged`), and one made visible (`Published`): what `publish.rs` and
//! `clone.rs` work on.

use std::fs::File;
use std::os::fd::OwnedFd;

use rustix::fs::AtFlags;

use super::{Existing, join};
use crate::protocol::Attrs;

/// A committed upload: the name it was stored under and, for an
/// overwrite, the file it replaced.
#[derive(Debug)]
pub struct Published {
    pub name: String,
    pub replaced: Option<Existing>,
}

/// A complete, verified upload waiting to be made visible.
pub struct Staged {
    pub up: Upload,
    pub sha256: [u8; 32],
    pub overwrite: bool,
    /// Recorded as the file's uploader (empty: none).
    pub owner: String,
    /// Mode and mtime the client sent (ATTRS), given to the file before it
    /// becomes visible; `None`: the defaults (0644 less the umask, now).
    pub attrs: Option<Attrs>,
    /// The quota reservations it was stored under (`Reservation::ids`),
    /// recorded with it on an object store.
    pub holds: Vec<u64>,
}

/// An upload in progress: an unnamed file in its target directory.
pub struct Upload {
    pub file: File,
    pub(super) dir: OwnedFd,
    pub(super) parent: String,
    pub(super) component: String,
    /// The reserved name the data is written under; empty once committed.
    /// After an overwrite it holds the replaced file until the new name is
    /// durable (so the replacement can be undone), then is removed.
    pub(super) tmp: String,
    /// The final component the upload was renamed to, until its directory
    /// is synced (what `unpublish` renames back).
    pub(super) published: Option<String>,
    /// On the object store: the thread sending the parts already written
    /// (`Store::follow_upload`); dropped with the upload, it removes them.
    pub ship: Option<crate::server::object::ship::Shipper>,
    /// On the object store: the blob a CLONE copied, stored already.
    pub cloned: Option<crate::server::object::blob::Copied>,
}

impl Upload {
    /// The name the client asked for.
    pub fn name(&self) -> String {
        join(&self.parent, &self.component)
    }
}

impl Drop for Upload {
    /// An upload that ends any way but committed leaves nothing behind.
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}
