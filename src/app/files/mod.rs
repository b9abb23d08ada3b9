//! The file commands over one session: ls, put, get, rm, mkdir, sums,
//! verify, df. Many files go over one connection, pipelined.
//!
//! This file holds what they share (digests, times, remote names, the
//! recursive listing); `list.rs` ls, rm, df, sums and verify, `put.rs` and
//! `get.rs` the transfers, `unchanged.rs` the skipping of files the other
//! side already holds.

mod flight;
mod get;
mod list;
mod put;
mod unchanged;

pub use flight::FirstFlight;
pub use get::{GetArgs, check_get, get};
pub use list::{SHORT_DIGEST, df, ls, rm, sums, verify};
pub use put::{PutArgs, into_existing_dir, plan_put, put, put_stdin};

use crate::client::Client;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{Entry, EntryKind};

fn hex32(d: &[u8; 32]) -> String {
    hex::encode(d)
}

/// Parse a SHA-256 given on the command line.
pub fn parse_sha256(h: &str) -> Result<[u8; 32]> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(h.trim().to_ascii_lowercase(), &mut d).map_err(|_| {
        Error::usage(format!(
            "invalid SHA-256 {:?}: expected 64 hex digits as printed by sha256sum",
            names::escape(h)
        ))
    })?;
    Ok(d)
}

/// UTC time, to the second, RFC 3339.
pub fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    match u64::try_from(secs) {
        Ok(s) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        Err(_) => "1970-01-01T00:00:00Z".to_string(),
    }
}

fn join_remote(dir: &str, name: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of a remote name.
fn base(remote: &str) -> &str {
    names::split_parent(remote.trim_end_matches('/')).1
}

/// A server's refusal about a remote name, said so that it cannot be taken
/// for a local one, with what to do next.
pub fn on_server(e: Error, name: &str) -> Error {
    let q = names::quote(name);
    let parent = names::split_parent(name.trim_end_matches('/')).0;
    let look = if parent.is_empty() {
        "sft ls".to_string()
    } else {
        format!("sft ls {parent}")
    };
    let m = &e.message;
    if e.kind == Kind::NotFound && m.contains("a parent is not a directory") {
        Error::not_found(format!(
            "{q} does not exist on the server (a part of its path is a file); see what is there with: {look}"
        ))
    } else if e.kind == Kind::NotFound {
        Error::not_found(format!(
            "{q} does not exist on the server; see what is there with: {look}"
        ))
    } else if m.ends_with("is not a regular file") {
        Error::new(
            e.kind,
            format!(
                "{q} is a directory on the server; to download it and everything in it, use -r: sft get -r {name}"
            ),
        )
    } else if m.contains("is a directory; sft rm removes files") {
        Error::new(
            e.kind,
            format!(
                "{q} is a directory on the server; to remove it and everything in it, use -r: sft rm -r {name}"
            ),
        )
    } else {
        e
    }
}

/// Every file (name, entry) and directory under `dir`, recursively; names
/// the server sends are checked with the same rules as ours.
pub async fn walk_remote(c: &mut Client, dir: &str) -> Result<(Vec<(String, Entry)>, Vec<String>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    // one level at a time, each level's listings requested together
    let mut level = vec![dir.trim_end_matches('/').to_string()];
    while !level.is_empty() {
        let listings = c.list_many(&level).await?;
        let mut next = Vec::new();
        for (d, listing) in level.iter().zip(listings) {
            for e in listing? {
                let full = join_remote(d, &e.name);
                names::validate(&full).map_err(|err| {
                    Error::protocol(format!("the server listed a bad name, refusing it: {err}"))
                })?;
                if e.name.contains('/') {
                    return Err(Error::protocol("the server listed a name with '/' in it"));
                }
                match e.kind {
                    EntryKind::Dir => {
                        dirs.push(full.clone());
                        next.push(full);
                    }
                    EntryKind::File => files.push((full, e)),
                }
            }
        }
        level = next;
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    dirs.sort();
    Ok((files, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(format_time(-5), "1970-01-01T00:00:00Z");
    }
}
