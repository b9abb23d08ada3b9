//! `sft user`: edit the users file a server reads (`sft serve --users`).
//! Tokens are printed once and stored only as SHA-256 digests.

use crate::cli::{RoleArg, UserCmd};
use crate::error::{Error, Result};
use crate::server::users::{self, UserEntry};

fn role_name(r: RoleArg) -> &'static str {
    match r {
        RoleArg::Read => "read",
        RoleArg::Write => "write",
        RoleArg::Admin => "admin",
    }
}

fn no_such_user(name: &str, file: &std::path::Path) -> Error {
    Error::not_found(format!(
        "no user {name} in {}; see sft user list --users {}",
        file.display(),
        file.display()
    ))
}

pub fn command(cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Add {
            name,
            role,
            quota,
            max_files,
            file,
        } => {
            users::validate_name(&name)?;
            if let Some(q) = &quota {
                crate::units::parse_size(q)?;
            }
            let token = users::new_token()?;
            let digest = hex::encode(users::token_digest(&token));
            users::edit(&file.users, true, |f| {
                if f.users.contains_key(&name) {
                    return Err(Error::usage(format!(
                        "user {name} already exists; give it a new token with: sft user token {name} --users {}",
                        file.users.display()
                    )));
                }
                f.users.insert(
                    name.clone(),
                    UserEntry {
                        role: role_name(role).to_string(),
                        token_sha256: digest,
                        quota,
                        max_files,
                    },
                );
                Ok(())
            })?;
            eprintln!(
                "sft: user {name} (role {}) added to {}; its token follows, shown only this once",
                role_name(role),
                file.users.display()
            );
            super::out(&token)
        }
        UserCmd::List { file } => {
            let f = users::UsersFile::load(&file.users)?;
            super::out(&format!(
                "{:<24} {:<6} {:>12} {:>10}",
                "USER", "ROLE", "QUOTA", "MAX_FILES"
            ))?;
            for (name, u) in &f.users {
                super::out(&format!(
                    "{:<24} {:<6} {:>12} {:>10}",
                    name,
                    u.role,
                    u.quota.as_deref().unwrap_or("-"),
                    u.max_files.map_or("-".to_string(), |n| n.to_string())
                ))?;
            }
            Ok(())
        }
        UserCmd::Rm { name, file } => {
            users::edit(&file.users, false, |f| {
                f.users
                    .remove(&name)
                    .map(|_| ())
                    .ok_or_else(|| no_such_user(&name, &file.users))
            })?;
            eprintln!(
                "sft: user {name} removed from {}; its sessions end at their next command",
                file.users.display()
            );
            Ok(())
        }
        UserCmd::Role { name, role, file } => {
            let new = role_name(role);
            let old = users::edit(&file.users, false, |f| {
                f.set_role(&name, new).map_err(|e| {
                    if e.kind == crate::error::Kind::NotFound {
                        no_such_user(&name, &file.users)
                    } else {
                        e
                    }
                })
            })?;
            if old == new {
                eprintln!("sft: user {name} already has role {new}");
            } else {
                eprintln!(
                    "sft: user {name} now has role {new} (was {old}) in {}; a running server applies it from the user's next command",
                    file.users.display()
                );
            }
            Ok(())
        }
        UserCmd::Token { name, file } => {
            let token = users::new_token()?;
            let digest = hex::encode(users::token_digest(&token));
            users::edit(&file.users, false, |f| match f.users.get_mut(&name) {
                Some(u) => {
                    u.token_sha256 = digest;
                    Ok(())
                }
                None => Err(no_such_user(&name, &file.users)),
            })?;
            eprintln!(
                "sft: new token for {name} (the old one no longer works); shown only this once"
            );
            super::out(&token)
        }
    }
}
