//! The manifest: the small object that makes a name visible. It is created
//! only if absent and never changed; it names the immutable blob holding the
//! bytes and everything LIST shows. Pure: encoded and parsed here, stored by
//! `names.rs`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::{Entry, EntryKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The blob's id (its parts are `blobs/ID/NNNNNN`), unique per upload:
    /// reading a manifest back tells whether it is ours (an ambiguous
    /// create resolved).
    pub blob: String,
    pub size: u64,
    /// Bytes per part (the last may be shorter); `size / part` rounded up
    /// parts, none for an empty file.
    pub part: u64,
    /// Hex SHA-256 of the blob's bytes, checked before the manifest was made.
    pub sha256: String,
    /// Uploader ("" if none).
    pub owner: String,
    /// Permission bits.
    pub mode: u32,
    pub mtime_ns: i64,
    /// The quota reservations (ledger slots) the file was stored under: if
    /// its server died before recording it, a live server finds it by them
    /// (`book::resolve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<u64>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        // a struct of plain fields always serialises
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8], name: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|_| {
            Error::other(format!(
                "the manifest of {} in the object store is damaged; an admin can remove it with sft rm",
                crate::names::quote(name)
            ))
        })?;
        if m.part == 0
            || m.part > super::blob::MAX_PART
            || m.blob.is_empty()
            || m.blob.contains('/')
        {
            return Err(Error::other(format!(
                "the manifest of {} in the object store names no valid blob; an admin can remove it with sft rm",
                crate::names::quote(name)
            )));
        }
        if m.digest().is_none() {
            return Err(Error::other(format!(
                "the manifest of {} in the object store has no valid SHA-256",
                crate::names::quote(name)
            )));
        }
        Ok(m)
    }

    pub fn digest(&self) -> Option<[u8; 32]> {
        let v = hex::decode(&self.sha256).ok()?;
        v.try_into().ok()
    }

    /// The listing entry for the file's last component `component`.
    pub fn entry(&self, component: &str) -> Entry {
        Entry {
            kind: EntryKind::File,
            size: self.size,
            mtime_ns: self.mtime_ns,
            sha256: self.digest(),
            name: component.to_string(),
            owner: self.owner.clone(),
            mode: Some(self.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let m = Manifest {
            blob: "ab12".into(),
            size: 5,
            part: 8 << 20,
            sha256: "00".repeat(32),
            owner: "alice".into(),
            mode: 0o644,
            mtime_ns: 1,
            holds: vec![3, 4],
        };
        let back = Manifest::decode(&m.encode(), "x").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.entry("x").size, 5);
        assert!(Manifest::decode(b"{", "x").is_err());
        let bad = Manifest {
            sha256: "zz".into(),
            ..m.clone()
        };
        assert!(Manifest::decode(&bad.encode(), "x").is_err());
        // the old single-object form (no part size) is refused, as is an
        // unknown field or a part size no download could buffer
        let old = br#"{"blob":"ab","size":5,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","owner":"","mode":420,"mtime_ns":1}"#;
        assert!(Manifest::decode(old, "x").is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&m.encode()).unwrap();
        v["extra"] = 1.into();
        assert!(Manifest::decode(v.to_string().as_bytes(), "x").is_err());
        for part in [0, super::super::blob::MAX_PART + 1] {
            let odd = Manifest { part, ..m.clone() };
            assert!(Manifest::decode(&odd.encode(), "x").is_err(), "{part}");
        }
        let escape = Manifest {
            blob: "../x".into(),
            ..m.clone()
        };
        assert!(Manifest::decode(&escape.encode(), "x").is_err());
    }
}
