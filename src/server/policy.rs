//! Who may do what, and what an upload asks of the quotas. Pure, tested
//! without sockets: the role each command needs (the session asks before it
//! does anything else with a command), ownership (a writer may replace or
//! remove only what it uploaded), and an upload's quota request.

use super::auth::Identity;
use super::quota::Request;
use super::store::Existing;
use crate::error::{Error, Kind, Result};
use crate::names;
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

/// A non-admin may remove or replace only the files it uploaded. `owner`:
/// the file's uploader (`""` if not uploaded through sft), `None` if there
/// is no such file (the operation reports that itself).
pub fn check_owner(who: &Identity, owner: Option<String>, name: &str, op: &str) -> Result<()> {
    match owner {
        None => Ok(()),
        Some(o) if o == who.user => Ok(()),
        Some(o) => {
            let by = if o.is_empty() {
                "it was not uploaded through sft".to_string()
            } else {
                format!("it was uploaded by {o}")
            };
            Err(Error::new(
                Kind::Auth,
                format!(
                    "permission denied: user {} (role {}) cannot {op} {}: {by}; only its owner or an admin can",
                    who.user,
                    who.role.name(),
                    names::quote(name)
                ),
            ))
        }
    }
}

/// What an upload of `size` bytes by `who` asks of the quotas, given the
/// file it would replace (`old`, for an overwrite). A non-admin may replace
/// only its own file. Replacing one's own file counts only the growth and
/// no new file; a stream (size unknown) asks for a first step and grows.
pub fn upload_request(
    who: &Identity,
    name: &str,
    size: u64,
    old: Option<&Existing>,
    stream: bool,
) -> Result<Request> {
    if let Some(old) = old
        && who.role < Role::Admin
    {
        // replacing another user's file would be removing it
        check_owner(who, Some(old.owner.clone()), name, "overwrite")?;
    }
    let first = if stream {
        crate::protocol::STREAM_STEP
    } else {
        size
    };
    Ok(Request {
        user: who.user.clone(),
        user_quota: who.quota,
        user_max_files: who.max_files,
        bytes: match old {
            Some(old) if old.owner == who.user && !stream => size.saturating_sub(old.size),
            _ => first,
        },
        files: u64::from(old.is_none()),
        disk_bytes: first,
    })
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
