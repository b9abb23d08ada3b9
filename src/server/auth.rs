//! Who may use the server: the accepted tokens, checked in constant time.
//! (Users with roles come later; a token then maps to a user.)

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::protocol::Role;

/// A user the server knows.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub role: Role,
}

/// The accepted tokens, kept only as SHA-256 digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Identity)>,
}

impl Tokens {
    /// Accept each token in `tokens` (empty lines and `#` comments skipped).
    pub fn from_lines(text: &str) -> Tokens {
        let mut t = Tokens::default();
        for (i, line) in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
        {
            t.add(
                line,
                Identity {
                    user: format!("token{}", i + 1),
                    role: Role::Admin,
                },
            );
        }
        t
    }

    pub fn add(&mut self, token: &str, who: Identity) {
        self.entries
            .push((Sha256::digest(token.as_bytes()).into(), who));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identity for a presented secret. Every entry is compared, in
    /// constant time, so timing says nothing about which token came close.
    pub fn check(&self, secret: &[u8]) -> Option<Identity> {
        let h: [u8; 32] = Sha256::digest(secret).into();
        let mut found = None;
        for (d, who) in &self.entries {
            if bool::from(d.ct_eq(&h)) && found.is_none() {
                found = Some(who.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_tokens_are_accepted() {
        let t = Tokens::from_lines("# comment\nalpha\n\n  beta  \n");
        assert_eq!(t.check(b"alpha").map(|i| i.user), Some("token1".into()));
        assert_eq!(t.check(b"beta").map(|i| i.user), Some("token2".into()));
        assert!(t.check(b"alph").is_none());
        assert!(t.check(b"").is_none());
        assert!(t.check(&[b'x'; 1024]).is_none());
        assert!(Tokens::from_lines("\n# only comments\n").is_empty());
    }
}
