//! One-time tickets with which further connections join a session for one
//! transfer (PROTOCOL.md §4.10): 32 random bytes, valid for [`TTL`], used
//! once, bound to the identity of the session that asked and, for a ranged
//! upload, to that upload. Only their SHA-256 is kept, so looking one up
//! tells nothing through timing about the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::auth::Identity;
use crate::error::{Error, Result};
use crate::transfer::Assembly;

/// How long a ticket may wait for its connection.
pub const TTL: Duration = Duration::from_secs(30);
/// Most tickets outstanding on the server; beyond it TICKET_REQ is refused.
const MAX_OUTSTANDING: usize = 4096;

/// What a joined connection may do.
#[derive(Clone)]
pub enum Bound {
    /// Send RANGE blocks of this upload.
    Upload(Arc<Assembly>),
    /// Send GET_RANGE requests (downloads, as the user may).
    Download,
}

/// What a ticket grants.
#[derive(Clone)]
pub struct Grant {
    pub who: Identity,
    pub bound: Bound,
}

#[derive(Default)]
pub struct Tickets {
    map: Mutex<HashMap<[u8; 32], (Instant, Grant)>>,
}

impl Tickets {
    /// A new ticket for `grant`.
    pub fn issue(&self, grant: Grant) -> Result<[u8; 32]> {
        let mut t = [0u8; 32];
        getrandom::fill(&mut t).map_err(|e| {
            Error::other(format!(
                "the operating system's random number generator failed ({e}); no ticket was made"
            ))
        })?;
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        m.retain(|_, (at, _)| now.duration_since(*at) < TTL);
        if m.len() >= MAX_OUTSTANDING {
            return Err(Error::network(
                "too many join tickets outstanding on the server; try again later",
            ));
        }
        m.insert(Sha256::digest(t).into(), (now, grant));
        Ok(t)
    }

    /// The grant of `ticket`, consumed; `None` if it is unknown, used or
    /// expired.
    pub fn redeem(&self, ticket: &[u8; 32]) -> Option<Grant> {
        let key: [u8; 32] = Sha256::digest(ticket).into();
        let (at, grant) = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)?;
        (at.elapsed() < TTL).then_some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;

    #[test]
    fn a_ticket_works_once_and_a_forged_one_never() {
        let t = Tickets::default();
        let g = Grant {
            who: Identity::new("u", Role::Read),
            bound: Bound::Download,
        };
        let k = t.issue(g).unwrap();
        assert!(t.redeem(&[0u8; 32]).is_none());
        assert!(t.redeem(&k).is_some());
        assert!(t.redeem(&k).is_none(), "used");
    }
}
