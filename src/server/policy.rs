//! Who may do what: the role each command needs. Pure, tested without
//! sockets; the session asks before it does anything else with a command.
//! (Ownership — a writer may replace or remove only what it uploaded — is
//! decided where the file's owner is known: `commit::check_owner`.)

use crate::protocol::{Msg, Role};

/// The least role a command needs, and how a refusal names the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub role: Role,
    pub op: &'static str,
}

/// `None`: any authenticated user may (LIST, STAT, GET, USAGE, BYE, …).
pub fn required(msg: &Msg) -> Option<Need> {
    let (role, op) = match msg {
        // storing from content already held is an upload like any other
        Msg::Put { .. } | Msg::Clone { .. } => (Role::Write, "put"),
        Msg::Remove { .. } => (Role::Write, "rm"),
        Msg::Mkdir { .. } => (Role::Write, "mkdir"),
        Msg::Rmdir { .. } => (Role::Write, "rmdir"),
        Msg::Shutdown { .. } => (Role::Admin, "shut the server down"),
        Msg::StatusReq => (Role::Admin, "see the server status"),
        Msg::Reload => (Role::Admin, "reload the server"),
        _ => return None,
    };
    Some(Need { role, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_table_is_as_documented() {
        let name = || "x".to_string();
        let read_only = [
            Msg::List { path: name() },
            Msg::Stat { name: name() },
            Msg::Get {
                offset: 0,
                compress: 0,
                name: name(),
            },
            Msg::UsageReq,
            Msg::Bye,
        ];
        for m in &read_only {
            assert_eq!(required(m), None, "{}", m.name());
        }
        let write = [
            Msg::Put {
                size: 1,
                flags: 0,
                name: name(),
            },
            Msg::Clone {
                size: 1,
                flags: 0,
                sha256: [0; 32],
                name: name(),
            },
            Msg::Remove { name: name() },
            Msg::Mkdir { name: name() },
            Msg::Rmdir { name: name() },
        ];
        for m in &write {
            assert_eq!(
                required(m).map(|n| n.role),
                Some(Role::Write),
                "{}",
                m.name()
            );
        }
        for m in [Msg::Shutdown { grace_ms: 0 }, Msg::StatusReq, Msg::Reload] {
            assert_eq!(
                required(&m).map(|n| n.role),
                Some(Role::Admin),
                "{}",
                m.name()
            );
        }
    }
}
