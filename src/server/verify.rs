//! Every digest check the server makes, in one place: an upload against
//! what its client announced, a stored file against the digest recorded
//! when it was stored. Pure.

use crate::error::{Error, Result};
use crate::names;
use crate::transfer::same_digest;

/// What arrived is what was announced: `n` bytes (when the size was
/// declared) hashing to the digest the client sent in END.
pub fn check_upload(
    name: &str,
    declared: Option<u64>,
    n: u64,
    digest: &[u8; 32],
    claimed: &[u8; 32],
) -> Result<()> {
    if let Some(size) = declared
        && n != size
    {
        return Err(Error::protocol(format!(
            "upload ended after {n} of its declared {size} bytes; nothing was stored"
        )));
    }
    if !same_digest(digest, claimed) {
        return Err(Error::integrity(format!(
            "SHA-256 mismatch for {}: the client sent {} but the data received hashes to {}; nothing was stored",
            names::quote(name),
            hex::encode(claimed),
            hex::encode(digest)
        )));
    }
    Ok(())
}

/// A stored file read whole hashes to `read`: it must match the digest
/// recorded when it was stored, if one was.
pub fn check_stored(name: &str, recorded: Option<&[u8; 32]>, read: &[u8; 32]) -> Result<()> {
    match recorded {
        Some(stored) if !same_digest(stored, read) => Err(Error::integrity(format!(
            "{} is corrupted on the server: its SHA-256 no longer matches the one recorded when it was stored; restore it from a backup",
            names::quote(name)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn an_upload_must_be_what_was_announced() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(check_upload("f", Some(3), 3, &a, &a).is_ok());
        assert!(check_upload("f", None, 9, &a, &a).is_ok());
        let short = check_upload("f", Some(4), 3, &a, &a).unwrap_err();
        assert_eq!(short.kind, Kind::Protocol);
        let bad = check_upload("f", Some(3), 3, &a, &b).unwrap_err();
        assert_eq!(bad.kind, Kind::Integrity);
        assert!(
            bad.message.contains("nothing was stored"),
            "{}",
            bad.message
        );
    }

    #[test]
    fn a_stored_file_must_match_its_recorded_digest() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(check_stored("f", None, &a).is_ok());
        assert!(check_stored("f", Some(&a), &a).is_ok());
        let e = check_stored("f", Some(&a), &b).unwrap_err();
        assert_eq!(e.kind, Kind::Integrity);
        assert!(
            e.message.contains("corrupted on the server"),
            "{}",
            e.message
        );
    }
}
