//! One error type for the whole crate: a kind (which maps to a wire code and
//! an exit code) and a one-line message a person can act on.

use std::fmt;

/// What went wrong, coarsely. Each kind has one exit code and one wire code;
/// the numbers are the same on purpose (see README.md and PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Anything else (local I/O, internal errors). Exit 1.
    Other,
    /// Bad arguments or a name that breaks the rules. Exit 2.
    Usage,
    /// Cannot connect, connection lost, timeout, server busy or shutting down. Exit 3.
    Network,
    /// TLS failure or server identity not trusted. Exit 4.
    Tls,
    /// Authentication failed or permission denied. Exit 5.
    Auth,
    /// No such file. Exit 6.
    NotFound,
    /// Quota exceeded or storage full. Exit 7.
    Space,
    /// SHA-256 mismatch. Exit 8.
    Integrity,
    /// The peer broke the protocol. Exit 9.
    Protocol,
    /// Interrupted by Ctrl-C or SIGTERM (client only; never on the wire). Exit 130.
    Interrupted,
}

impl Kind {
    /// The process exit code for this kind (the contract in README.md).
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::Network => 3,
            Kind::Tls => 4,
            Kind::Auth => 5,
            Kind::NotFound => 6,
            Kind::Space => 7,
            Kind::Integrity => 8,
            Kind::Protocol => 9,
            Kind::Interrupted => 130,
        }
    }

    /// The code carried in an ERROR frame (PROTOCOL.md, "Error codes").
    pub fn wire_code(self) -> u16 {
        u16::from(self.exit_code())
    }

    /// The kind for a wire code; unknown codes are treated as `Other`.
    pub fn from_wire(code: u16) -> Kind {
        match code {
            2 => Kind::Usage,
            3 => Kind::Network,
            4 => Kind::Tls,
            5 => Kind::Auth,
            6 => Kind::NotFound,
            7 => Kind::Space,
            8 => Kind::Integrity,
            9 => Kind::Protocol,
            _ => Kind::Other,
        }
    }

    /// A stable lower-case name for the kind (used in logs).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Other => "error",
            Kind::Usage => "usage",
            Kind::Network => "network",
            Kind::Tls => "tls",
            Kind::Auth => "auth",
            Kind::NotFound => "not_found",
            Kind::Space => "space",
            Kind::Integrity => "integrity",
            Kind::Protocol => "protocol",
            Kind::Interrupted => "interrupted",
        }
    }
}

/// An error with its kind and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn other(m: impl Into<String>) -> Self {
        Self::new(Kind::Other, m)
    }
    pub fn usage(m: impl Into<String>) -> Self {
        Self::new(Kind::Usage, m)
    }
    pub fn network(m: impl Into<String>) -> Self {
        Self::new(Kind::Network, m)
    }
    pub fn protocol(m: impl Into<String>) -> Self {
        Self::new(Kind::Protocol, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, m)
    }
    pub fn integrity(m: impl Into<String>) -> Self {
        Self::new(Kind::Integrity, m)
    }

    /// Prefix the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Classify a local I/O error (disk full is a space error, not "other").
    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> Self {
        let kind = match e.raw_os_error() {
            Some(c) if c == rustix::io::Errno::NOSPC.raw_os_error() => Kind::Space,
            Some(c) if c == rustix::io::Errno::DQUOT.raw_os_error() => Kind::Space,
            _ => match e.kind() {
                std::io::ErrorKind::NotFound => Kind::NotFound,
                std::io::ErrorKind::PermissionDenied => Kind::Other,
                _ => Kind::Other,
            },
        };
        if kind == Kind::Space {
            return Error::new(
                kind,
                format!(
                    "{what}: the storage is full (no space left on the device); nothing was stored"
                ),
            );
        }
        Error::new(kind, format!("{what}: {}", describe_io(e)))
    }
}

/// A short description of an I/O error without Rust's "(os error N)" noise.
pub fn describe_io(e: &std::io::Error) -> String {
    // TLS errors: plain words, no Debug text or documentation URL
    if let Some(plain) = crate::tls::describe_io(e) {
        return plain;
    }
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        let io: std::io::Error = e.into();
        Error::io("filesystem", &io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip_and_match_exit_codes() {
        for k in [
            Kind::Other,
            Kind::Usage,
            Kind::Network,
            Kind::Tls,
            Kind::Auth,
            Kind::NotFound,
            Kind::Space,
            Kind::Integrity,
            Kind::Protocol,
        ] {
            assert_eq!(Kind::from_wire(k.wire_code()), k);
            assert_eq!(u16::from(k.exit_code()), k.wire_code());
        }
        assert_eq!(Kind::from_wire(999), Kind::Other);
    }

    #[test]
    fn disk_full_is_a_space_error() {
        let e = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let err = Error::io("writing x", &e);
        assert_eq!(err.kind, Kind::Space);
        assert!(err.message.starts_with("writing x: "), "{}", err.message);
        assert!(!err.message.contains("os error"));
    }
}
