//! The listing and small commands: ls, rm, df, sums, verify.

use serde_json::json;

use super::{format_time, hex32, join_remote, on_server, parse_sha256, walk_remote};
use crate::app::output::{Output, Tally};
use crate::client::Client;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{Entry, EntryKind, Msg};
use crate::units::human;

pub async fn ls(
    c: &mut Client,
    o: &Output,
    dir: Option<&str>,
    long: bool,
    bytes: bool,
    full_digest: bool,
) -> Result<()> {
    let dir = dir.unwrap_or("").trim_end_matches('/');
    let (entries, parent) = match c.list(dir).await {
        Ok(list) => (list, dir),
        // `ls FILE` lists the file, as ls and sftp do
        Err(e) if !dir.is_empty() && matches!(e.kind, Kind::NotFound | Kind::Usage) => {
            match c.stat(dir).await {
                Ok(mut entry) if entry.kind == EntryKind::File => {
                    let (parent, name) = names::split_parent(dir);
                    entry.name = name.to_string();
                    (vec![entry], parent)
                }
                _ => return Err(on_server(e, dir)),
            }
        }
        Err(e) => return Err(on_server(e, dir)),
    };
    for e in entries {
        names::validate(&e.name)
            .map_err(|err| Error::protocol(format!("the server listed a bad name: {err}")))?;
        o.result(
            || ls_line(&e, long, bytes, full_digest),
            || entry_json(parent, &e),
        )?;
    }
    Ok(())
}

/// Hex digits of the SHA-256 shown by `ls -l` unless asked for all 64.
pub const SHORT_DIGEST: usize = 12;

/// `-rwxr-x---` (`d…` for a directory) for permission bits.
pub fn mode_string(kind: EntryKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(if kind == EntryKind::Dir { 'd' } else { '-' });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// One line of `ls`: the name, or with `long` type and mode (`-rwxr-x---`,
/// when the server sends modes; else only `-` or `d`), size, time (UTC),
/// owner, SHA-256 (short unless `full_digest`), then the name last. Fits 100
/// columns for names up to 27 characters and owners up to 12.
pub fn ls_line(e: &Entry, long: bool, bytes: bool, full_digest: bool) -> String {
    let shown = match e.kind {
        EntryKind::Dir => format!("{}/", names::escape(&e.name)),
        EntryKind::File => names::escape(&e.name),
    };
    if !long {
        return shown;
    }
    let size = match (e.kind, bytes) {
        (EntryKind::Dir, _) => "-".to_string(),
        (_, true) => e.size.to_string(),
        (_, false) => human(e.size),
    };
    let owner = if e.owner.is_empty() {
        "-".to_string()
    } else {
        names::escape(&e.owner)
    };
    let width = if full_digest { 64 } else { SHORT_DIGEST };
    let digest = match e.sha256 {
        Some(d) => hex32(&d)[..width].to_string(),
        None => "-".into(),
    };
    let kind = match e.mode {
        Some(mode) => mode_string(e.kind, mode),
        None if e.kind == EntryKind::Dir => "d".to_string(),
        None => "-".to_string(),
    };
    format!(
        "{kind} {size:>10}  {}  {owner:<12}  {digest:<width$}  {shown}",
        format_time(e.mtime_ns)
    )
}

fn entry_json(dir: &str, e: &Entry) -> serde_json::Value {
    json!({
        "name": join_remote(dir, &e.name),
        "kind": if e.kind == EntryKind::Dir { "dir" } else { "file" },
        "size": e.size,
        "mtime": format_time(e.mtime_ns),
        "sha256": e.sha256.map(|d| hex32(&d)),
        "owner": e.owner,
        "mode": e.mode.map(|m| format!("{:04o}", m & crate::protocol::MODE_BITS)),
    })
}

pub async fn rm(
    c: &mut Client,
    o: &Output,
    names_: &[String],
    recursive: bool,
    yes: bool,
) -> Result<()> {
    let mut tally = Tally::default();
    let single = names_.len() == 1;
    for name in names_ {
        let name = if recursive {
            name.trim_end_matches('/')
        } else {
            name
        };
        let r = remove_one(c, o, name, recursive, yes)
            .await
            .map_err(|e| on_server(e, name));
        match r {
            Ok(()) => tally.ok += 1,
            Err(e) if matches!(e.kind, Kind::Network | Kind::Protocol) || single => return Err(e),
            Err(e) => {
                tally.record(&e);
                o.file_failed("rm", name, &e)?;
            }
        }
    }
    tally.finish("removals")
}

async fn remove_one(
    c: &mut Client,
    o: &Output,
    name: &str,
    recursive: bool,
    yes: bool,
) -> Result<()> {
    let is_dir = recursive && c.stat(name).await.map(|e| e.kind == EntryKind::Dir)?;
    if !is_dir {
        c.remove(name).await?;
        return o.json_only(|| json!({"op": "rm", "name": name, "outcome": "ok"}));
    }
    let (files, dirs) = walk_remote(c, name).await?;
    if !yes {
        use std::io::IsTerminal;
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(Error::usage(format!(
                "sft rm -r {} would remove {} files and {} directories; add --yes to confirm when not on a terminal",
                names::quote(name),
                files.len(),
                dirs.len() + 1
            )));
        }
        if !crate::app::trust::ask(&format!(
            "remove {} and everything in it ({} files, {} directories)",
            names::quote(name),
            files.len(),
            dirs.len() + 1
        )) {
            return Err(Error::usage("nothing removed"));
        }
    }
    // every removal in one burst: files, then directories deepest first
    let mut all: Vec<&String> = dirs.iter().collect();
    all.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    let mut msgs: Vec<Msg> = files
        .iter()
        .map(|(f, _)| Msg::Remove { name: f.clone() })
        .collect();
    msgs.extend(all.iter().map(|d| Msg::Rmdir {
        name: d.to_string(),
    }));
    msgs.push(Msg::Rmdir {
        name: name.to_string(),
    });
    let results = c.simple_many(&msgs, "the reply to a removal").await?;
    let mut first = None;
    for (m, r) in msgs.iter().zip(results) {
        match r {
            // one line per file, and one for the tree (as documented)
            Ok(()) => match m {
                Msg::Remove { name: f } => {
                    o.json_only(|| json!({"op": "rm", "name": f, "outcome": "ok"}))?
                }
                Msg::Rmdir { name: d } if d == name => o.json_only(
                    || json!({"op": "rm", "name": name, "kind": "dir", "outcome": "ok"}),
                )?,
                _ => {}
            },
            // the first failure is the command's; the rest follow from it
            // (a directory that kept a file is not empty)
            Err(e) if first.is_none() => first = Some(e),
            Err(_) => {}
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `sft df`: usage rows (yours, or everyone's for an admin) and the disk.
pub async fn df(c: &mut Client, o: &Output, bytes: bool) -> Result<()> {
    let u = c.usage().await?;
    let none = |n: u64| (n != u64::MAX).then_some(n);
    let size = |n: u64| match none(n) {
        None => "-".to_string(),
        Some(n) if bytes => n.to_string(),
        Some(n) => human(n),
    };
    if !o.json {
        crate::app::out(&format!(
            "{:<24} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
            "NAME", "USED", "RESERVED", "LIMIT", "LEFT", "FILES", "MAX_FILES"
        ))?;
    }
    for r in &u.rows {
        let name = if r.name.is_empty() {
            "(server)".to_string()
        } else {
            names::escape(&r.name)
        };
        let left = none(r.quota).map(|q| q.saturating_sub(r.bytes.saturating_add(r.reserved)));
        o.result(
            || {
                format!(
                    "{name:<24} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
                    size(r.bytes),
                    size(r.reserved),
                    size(r.quota),
                    left.map_or("-".to_string(), &size),
                    r.files,
                    none(r.max_files).map_or("-".to_string(), |n| n.to_string())
                )
            },
            || {
                json!({
                    "name": if r.name.is_empty() { None } else { Some(&r.name) },
                    "used": r.bytes,
                    "reserved": r.reserved,
                    "files": r.files,
                    "quota": none(r.quota),
                    "left": left,
                    "max_files": none(r.max_files),
                })
            },
        )?;
    }
    o.result(
        || {
            format!(
                "disk: {} free on the server, {} kept free (--min-free)",
                size(u.disk_free),
                size(u.min_free)
            )
        },
        || json!({"disk_free": u.disk_free, "min_free": u.min_free}),
    )
}

pub async fn sums(c: &mut Client, o: &Output, dir: Option<&str>) -> Result<()> {
    let dir = dir.unwrap_or("").trim_end_matches('/');
    let (files, _) = walk_remote(c, dir).await?;
    for (name, e) in files {
        let Some(d) = e.sha256 else {
            return Err(Error::other(format!(
                "the server has no SHA-256 for {}; it could not read the file",
                names::quote(&name)
            )));
        };
        o.result(
            || format!("{}  {}", hex32(&d), name),
            || json!({"name": name, "size": e.size, "sha256": hex32(&d)}),
        )?;
    }
    Ok(())
}

pub async fn verify(c: &mut Client, o: &Output, name: &str, want: &str) -> Result<()> {
    let want = parse_sha256(want)?;
    let e = c.stat(name).await?;
    if e.kind == EntryKind::Dir {
        return Err(Error::usage(format!(
            "{} is a directory",
            names::quote(name)
        )));
    }
    let Some(have) = e.sha256 else {
        return Err(Error::other(format!(
            "the server has no SHA-256 for {}",
            names::quote(name)
        )));
    };
    let ok = have == want;
    o.result(
        || {
            format!(
                "{}: {}",
                names::escape(name),
                if ok { "OK" } else { "FAILED" }
            )
        },
        || {
            json!({
                "op": "verify",
                "name": name,
                "size": e.size,
                "sha256": hex32(&have),
                "expected": hex32(&want),
                "outcome": if ok { "ok" } else { "mismatch" },
            })
        },
    )?;
    if ok {
        Ok(())
    } else {
        Err(Error::integrity(format!(
            "SHA-256 mismatch for {}: expected {} but the server holds {}",
            names::quote(name),
            hex32(&want),
            hex32(&have)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(EntryKind::File, 0o750), "-rwxr-x---");
        assert_eq!(mode_string(EntryKind::File, 0o604), "-rw----r--");
        assert_eq!(mode_string(EntryKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0), "----------");
    }
}
