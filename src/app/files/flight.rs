//! What `sft put` asks before it uploads, sent in the flight of AUTH
//! instead of a round trip each after AUTH_OK (PROTOCOL.md §4.1).

use crate::client::pipeline::PutJob;
use crate::error::Result;
use crate::protocol::Msg;

use super::unchanged::remote_dirs;

/// What `put` asks before it uploads, sent in the flight of AUTH
/// ([`Client::connect_with`]) instead of a round trip each after AUTH_OK:
/// the listings of the remote directories (the `unchanged` check) and a
/// CLONE probe for each size of a file of at least `CLONE_FROM` bytes.
/// Both are only questions; their replies are read by [`put`].
pub struct FirstFlight {
    pub(super) lists: usize,
    /// The sizes probed, in order.
    pub(super) sizes: Vec<u64>,
    msgs: Vec<Msg>,
}

/// Most bytes of commands sent ahead of AUTH_OK: the client writes them
/// all before it reads any reply, so they must fit the socket's buffers.
const FIRST_FLIGHT_MAX: usize = 16 << 10;

impl FirstFlight {
    /// The commands for `jobs`, or `None` when there are too many to send
    /// before reading (a large tree asks as before, after AUTH_OK).
    pub fn of(jobs: &[PutJob]) -> Option<FirstFlight> {
        let dirs = remote_dirs(jobs);
        let mut msgs: Vec<Msg> = dirs.into_iter().map(|path| Msg::List { path }).collect();
        let lists = msgs.len();
        let mut sizes = Vec::new();
        for j in jobs {
            let Ok(m) = std::fs::metadata(&j.local) else {
                continue;
            };
            let size = m.len();
            if size >= crate::client::pipeline::CLONE_FROM && !sizes.contains(&size) {
                sizes.push(size);
                msgs.push(Msg::Clone {
                    size,
                    flags: crate::protocol::CLONE_PROBE,
                    sha256: [0; 32],
                    name: j.remote.clone(),
                });
            }
        }
        let mut bytes = Vec::new();
        for m in &msgs {
            m.encode(&mut bytes);
            if bytes.len() > FIRST_FLIGHT_MAX {
                return None;
            }
        }
        Some(FirstFlight { lists, sizes, msgs })
    }

    pub fn msgs(&self) -> &[Msg] {
        &self.msgs
    }
}

/// The answers to a [`FirstFlight`]: the listings, and which probed sizes
/// the server may hold.
pub(super) struct Answered {
    pub(super) listings: Vec<Result<Vec<crate::protocol::Entry>>>,
    pub(super) held: std::collections::HashMap<u64, bool>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn job(dir: &Path, name: &str, len: usize, remote: &str) -> PutJob {
        let local = dir.join(name);
        std::fs::write(&local, vec![0u8; len]).unwrap();
        PutJob {
            local,
            remote: remote.into(),
        }
    }

    #[test]
    fn the_first_flight_lists_each_directory_once_and_probes_each_large_size_once() {
        let d = tempfile::tempdir().unwrap();
        let big = crate::client::pipeline::CLONE_FROM as usize;
        let jobs = vec![
            job(d.path(), "a", big, "x/a"),
            job(d.path(), "b", big, "x/b"),
            job(d.path(), "c", 10, "y/c"),
            job(d.path(), "e", big + 1, "e"),
        ];
        let f = FirstFlight::of(&jobs).unwrap();
        assert_eq!(f.lists, 3, "\"\", x, y");
        assert_eq!(f.sizes, vec![big as u64, big as u64 + 1]);
        assert_eq!(f.msgs().len(), 5);
        assert!(matches!(&f.msgs()[0], Msg::List { path } if path.is_empty()));
        assert!(matches!(
            &f.msgs()[3],
            Msg::Clone { flags, .. } if *flags == crate::protocol::CLONE_PROBE
        ));
    }

    #[test]
    fn a_first_flight_too_large_to_send_before_reading_is_not_made() {
        let d = tempfile::tempdir().unwrap();
        let local = d.path().join("f");
        std::fs::write(&local, b"x").unwrap();
        // 1000 directories of 20-byte names: over 16 KiB of LISTs
        let jobs: Vec<PutJob> = (0..1000)
            .map(|i| PutJob {
                local: local.clone(),
                remote: format!("directory-number-{i:04}/f"),
            })
            .collect();
        assert!(FirstFlight::of(&jobs).is_none());
    }
}
