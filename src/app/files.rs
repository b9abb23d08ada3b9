//! The file commands over one session: ls, put, get, rm, mkdir, sums,
//! verify, df. Many files go over one connection, pipelined.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::output::{Output, Tally};
use crate::client::Client;
use crate::client::pipeline::{Dest, GetJob, PutJob};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::{Entry, EntryKind, Msg};
use crate::units::human;

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

// ---------------------------------------------------------------- ls

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

// ---------------------------------------------------------------- put

/// A local tree: files (path, remote name) and directories without files
/// beneath them (kept as empty remote directories). Symlinks and special
/// files are skipped with a note; nothing outside the tree is followed.
fn walk_local(root: &Path, remote_base: &str, o: &Output) -> Result<(Vec<PutJob>, Vec<String>)> {
    let mut jobs = Vec::new();
    let mut empty = Vec::new();
    let mut stack = vec![(root.to_path_buf(), remote_base.to_string())];
    while let Some((dir, remote)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), &e))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io(format!("reading {}", dir.display()), &e))?;
        entries.sort_by_key(|e| e.file_name());
        if entries.is_empty() && !remote.is_empty() {
            empty.push(remote.clone());
        }
        for ent in entries {
            let path = ent.path();
            let name = ent.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::usage(format!(
                    "{} is not valid UTF-8; rename it first",
                    path.display()
                )));
            };
            let child = join_remote(&remote, name);
            names::validate(&child).map_err(|e| e.context(path.display()))?;
            let ft = ent
                .file_type()
                .map_err(|e| Error::io(format!("reading {}", path.display()), &e))?;
            if ft.is_symlink() {
                o.note(&format!("skipping symbolic link {}", path.display()));
            } else if ft.is_dir() {
                stack.push((path, child));
            } else if ft.is_file() {
                jobs.push(PutJob {
                    local: path,
                    remote: child,
                });
            } else {
                o.note(&format!("skipping special file {}", path.display()));
            }
        }
    }
    jobs.sort_by(|a, b| a.remote.cmp(&b.remote));
    empty.sort();
    Ok((jobs, empty))
}

/// The remote name for a local file: its file name.
fn default_remote_name(p: &Path) -> Result<String> {
    let name = p
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} has no file name; use --as NAME", p.display())))?
        .to_str()
        .ok_or_else(|| {
            Error::usage(format!("{} is not valid UTF-8; use --as NAME", p.display()))
        })?;
    names::validate(name)?;
    Ok(name.to_string())
}

pub struct PutArgs<'a> {
    pub paths: &'a [PathBuf],
    pub recursive: bool,
    pub as_name: Option<&'a str>,
    pub to: Option<&'a str>,
}

/// Check arguments before connecting; the jobs and empty directories.
pub fn plan_put(a: &PutArgs, o: &Output) -> Result<(Vec<PutJob>, Vec<String>)> {
    if let Some(n) = a.as_name {
        names::validate(n)?;
        if a.paths.len() > 1 || a.recursive {
            return Err(Error::usage(
                "--as names a single upload; give one file, or drop --as",
            ));
        }
    }
    if let Some(t) = a.to {
        names::validate(t.trim_end_matches('/'))?;
    }
    if a.recursive {
        let (dir, remote_dir) = match a.paths {
            [d] => (d, a.to.unwrap_or("").to_string()),
            [d, r] if a.to.is_none() => (d, r.to_string_lossy().into_owned()),
            _ => {
                return Err(Error::usage(
                    "put -r takes one local directory and optionally a remote directory: sft put -r DIR [REMOTE_DIR]",
                ));
            }
        };
        let remote_dir = remote_dir.trim_end_matches('/').to_string();
        if !remote_dir.is_empty() {
            names::validate(&remote_dir)?;
        }
        let meta = std::fs::metadata(dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), &e))?;
        if !meta.is_dir() {
            return Err(Error::usage(format!(
                "{} is not a directory; drop -r to upload a file",
                dir.display()
            )));
        }
        let top = match std::fs::canonicalize(dir)
            .ok()
            .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        {
            Some(n) => n,
            None => {
                return Err(Error::usage(format!(
                    "{} has no usable name; give a directory with a UTF-8 name",
                    dir.display()
                )));
            }
        };
        let base = join_remote(&remote_dir, &top);
        names::validate(&base)?;
        let (jobs, mut empty) = walk_local(dir, &base, o)?;
        if jobs.is_empty() && !empty.contains(&base) {
            empty.insert(0, base);
        }
        return Ok((jobs, empty));
    }
    let mut jobs = Vec::new();
    for p in a.paths {
        if p.as_os_str() == "-" {
            return Err(Error::usage(
                "uploading standard input needs --as NAME: tar c dir | sft put - --as dir.tar",
            ));
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                return Err(Error::usage(format!(
                    "{} is a directory; use sft put -r to upload a tree",
                    p.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "local file {} does not exist (put uploads files from this machine; nothing was sent)",
                    names::quote(&p.display().to_string())
                )));
            }
            // unreadable files are reported with the upload they belong to
            Err(_) => {}
        }
        let name = match a.as_name {
            Some(n) => n.to_string(),
            None => join_remote(a.to.unwrap_or(""), &default_remote_name(p)?),
        };
        jobs.push(PutJob {
            local: p.clone(),
            remote: name,
        });
    }
    Ok((jobs, Vec::new()))
}

pub async fn put(
    c: &mut Client,
    o: &Output,
    jobs: Vec<PutJob>,
    empty_dirs: Vec<String>,
    overwrite: bool,
    stats: bool,
) -> Result<()> {
    let mut tally = Tally::default();
    for d in &empty_dirs {
        match c.mkdir(d).await {
            Ok(()) => o.json_only(|| json!({"op": "mkdir", "name": d, "outcome": "ok"}))?,
            Err(e) if matches!(e.kind, Kind::Network | Kind::Protocol) => return Err(e),
            Err(e) => {
                o.file_failed("mkdir", d, &e)?;
                tally.record(&e);
            }
        }
    }
    let given = jobs.len();
    // (a user who may not write is refused by the server, as before)
    let (jobs, unchanged) = if c.role >= crate::protocol::Role::Write {
        split_unchanged(c, jobs).await?
    } else {
        (jobs.into_iter().map(|j| (j, None)).collect(), Vec::new())
    };
    for u in &unchanged {
        tally.ok += 1;
        let up = crate::client::Uploaded {
            wire: 0,
            name: u.job.remote.clone(),
            size: u.size,
            sha256: u.sha256,
            resumed: 0,
            seconds: 0.0,
        };
        print_put_outcome(o, &u.job.local.display().to_string(), &up, "unchanged")?;
    }
    if !unchanged.is_empty() && unchanged.len() == given {
        o.note(&format!(
            "{} already on the server with the same content; nothing sent",
            if given == 1 {
                "the file is"
            } else {
                "every file is"
            }
        ));
    }
    // files the server already holds (yours, under another name) are
    // stored from that content: their data is not sent
    let (jobs, cloned) = if c.role >= crate::protocol::Role::Write {
        split_cloned(c, jobs, overwrite).await?
    } else {
        (jobs.into_iter().map(|(j, _)| j).collect(), Vec::new())
    };
    let mut copies = 0;
    for (job, r) in cloned {
        let local = job.local.display().to_string();
        match r {
            Ok(up) => {
                tally.ok += 1;
                copies += 1;
                if stats || o.verbose > 0 {
                    eprintln!(
                        "{}",
                        super::stats_line(&up.name, up.size, up.wire, up.seconds)
                    );
                }
                print_put_outcome(o, &local, &up, "cloned")?;
            }
            Err(e) if given == 1 && empty_dirs.is_empty() => return Err(e),
            Err(e) => {
                tally.record(&e);
                o.file_failed("put", &local, &e)?;
            }
        }
    }
    if copies > 0 {
        o.note(&format!(
            "{copies} file{} stored from content already on the server (yours, under another name); {} not sent again",
            if copies == 1 { "" } else { "s" },
            if copies == 1 { "its data was" } else { "their data was" }
        ));
    }
    let progress = Progress::new(!o.quiet && !o.json, jobs.len());
    let single = given == 1 && jobs.len() == 1 && empty_dirs.is_empty();
    let mut single_err = None;
    let r = c
        .put_many(&jobs, overwrite, &progress, |i, r| {
            let job = &jobs[i];
            match r {
                Ok(up) => {
                    tally.ok += 1;
                    if stats || o.verbose > 0 {
                        progress
                            .println(&super::stats_line(&up.name, up.size, up.wire, up.seconds));
                    }
                    print_put(o, &job.local.display().to_string(), &up)
                }
                Err(e) if single => {
                    single_err = Some(e);
                    Ok(())
                }
                Err(e) => {
                    tally.record(&e);
                    o.file_failed("put", &job.local.display().to_string(), &e)
                }
            }
        })
        .await;
    progress.finish();
    r?;
    if let Some(e) = single_err {
        return Err(e);
    }
    tally.finish("uploads")
}

/// Offer the files of at least `CLONE_FROM` bytes to the server by content
/// (CLONE, all at once): each is hashed, unless the `unchanged` pre-pass
/// already did. Returns the uploads still to make, in order, and the files
/// the server answered for: stored from content it holds, or refused (as
/// their PUT would have been). A file that cannot be read here is left to
/// its upload, which reports it.
async fn split_cloned(
    c: &mut Client,
    jobs: Vec<Moving<PutJob>>,
    overwrite: bool,
) -> Result<(Vec<PutJob>, Vec<(PutJob, Result<crate::client::Uploaded>)>)> {
    let from = crate::client::pipeline::CLONE_FROM;
    let mut send = Vec::new();
    let mut hash = Vec::new();
    for (i, (job, known)) in jobs.into_iter().enumerate() {
        let size = std::fs::metadata(&job.local).map(|m| m.len()).ok();
        match (known, size) {
            (Some(k), _) if k.0 >= from => hash.push((i, job, Some(k))),
            (None, Some(n)) if n >= from => hash.push((i, job, None)),
            _ => send.push((i, job)),
        }
    }
    // hashing a file costs a read of it: first ask (one round trip for all)
    // whether the server holds anything of this user with that size
    let probes: Vec<Msg> = hash
        .iter()
        .filter(|(_, _, known)| known.is_none())
        .map(|(_, job, _)| Msg::Clone {
            // (unreadable: 0, which nothing large has; its upload reports it)
            size: std::fs::metadata(&job.local).map_or(0, |m| m.len()),
            flags: crate::protocol::CLONE_PROBE,
            sha256: [0; 32],
            name: job.remote.clone(),
        })
        .collect();
    let mut held = c
        .simple_many(&probes, "the reply to a CLONE probe")
        .await?
        .into_iter();
    let mut worth = Vec::new();
    for (i, job, known) in hash {
        if known.is_some() || held.next().is_some_and(|r| r.is_ok()) {
            worth.push((i, job, known));
        } else {
            send.push((i, job));
        }
    }
    let hash = worth;
    if hash.is_empty() {
        send.sort_by_key(|(i, _)| *i);
        return Ok((send.into_iter().map(|(_, j)| j).collect(), Vec::new()));
    }
    let hashed = tokio::task::spawn_blocking(move || {
        hash.into_iter()
            .map(|(i, job, known)| {
                let d = known.or_else(|| crate::transfer::sha256_len_file(&job.local).ok());
                (i, job, d)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::other(format!("internal error: {e}")))?;
    let mut asked = Vec::new();
    let mut items = Vec::new();
    for (i, job, d) in hashed {
        match d {
            Some((size, sha256)) => {
                items.push(crate::client::pipeline::CloneJob {
                    remote: job.remote.clone(),
                    size,
                    sha256,
                    attrs: std::fs::metadata(&job.local)
                        .ok()
                        .map(|m| crate::client::local_attrs(&m)),
                });
                asked.push((i, job));
            }
            None => send.push((i, job)),
        }
    }
    let answers = c.clone_many(&items, overwrite).await?;
    let mut cloned = Vec::new();
    for ((i, job), answer) in asked.into_iter().zip(answers) {
        match answer {
            Ok(Some(up)) => cloned.push((job, Ok(up))),
            Ok(None) => send.push((i, job)),
            Err(e) => cloned.push((job, Err(e))),
        }
    }
    send.sort_by_key(|(i, _)| *i);
    Ok((send.into_iter().map(|(_, j)| j).collect(), cloned))
}

/// `sft put FILE HOST:NAME` where NAME is an existing remote directory: the
/// file goes into it, as with scp. Anything else keeps its name.
pub async fn into_existing_dir(
    c: &mut Client,
    mut jobs: Vec<PutJob>,
    may_be_dir: bool,
) -> Result<Vec<PutJob>> {
    if !may_be_dir || jobs.len() != 1 {
        return Ok(jobs);
    }
    let is_dir = match c.stat(&jobs[0].remote).await {
        Ok(e) => e.kind == EntryKind::Dir,
        Err(e) if matches!(e.kind, Kind::Network | Kind::Protocol) => return Err(e),
        Err(_) => false,
    };
    if is_dir {
        let base = default_remote_name(&jobs[0].local)?;
        jobs[0].remote = join_remote(&jobs[0].remote, &base);
    }
    Ok(jobs)
}

/// `sft put - --as NAME`: standard input, size unknown.
pub async fn put_stdin(
    c: &mut Client,
    o: &Output,
    name: &str,
    overwrite: bool,
    stats: bool,
) -> Result<()> {
    let progress = Progress::new(!o.quiet && !o.json, 1);
    let r = c
        .put_stream(std::io::stdin(), name, overwrite, &progress)
        .await;
    progress.finish();
    let up = r?;
    if stats || o.verbose > 0 {
        eprintln!(
            "{}",
            super::stats_line(&up.name, up.size, up.wire, up.seconds)
        );
    }
    print_put(o, "-", &up)
}

/// One uploaded file: `SHA256  REMOTE_NAME`, or its JSON line.
fn print_put(o: &Output, local: &str, up: &crate::client::Uploaded) -> Result<()> {
    print_put_outcome(o, local, up, "ok")
}

fn print_put_outcome(
    o: &Output,
    local: &str,
    up: &crate::client::Uploaded,
    outcome: &str,
) -> Result<()> {
    if up.resumed > 0 {
        o.note(&format!(
            "resumed {} after the {} the server already held (checked by SHA-256)",
            names::escape(&up.name),
            crate::units::human(up.resumed)
        ));
    }
    o.result(
        || format!("{}  {}", hex32(&up.sha256), names::escape(&up.name)),
        || {
            json!({
                "op": "put",
                "name": local,
                "remote": up.name,
                "size": up.size,
                "sha256": hex32(&up.sha256),
                "wire": up.wire,
                "resumed": up.resumed,
                "seconds": up.seconds,
                "outcome": outcome,
            })
        },
    )
}

/// A transfer whose other side already holds exactly its content.
struct Unchanged<J> {
    job: J,
    size: u64,
    sha256: [u8; 32],
}

/// A transfer whose sizes match on both sides: its local file is hashed to
/// decide (the `i`-th transfer given).
struct Candidate<J> {
    i: usize,
    job: J,
    local: PathBuf,
    size: u64,
    sha256: [u8; 32],
}

/// A transfer to make, with its local file's size and SHA-256 when a
/// pre-pass already hashed it.
type Moving<J> = (J, Option<(u64, [u8; 32])>);

/// Hash the candidates' local files (off the async threads) and split them:
/// the same digest is `unchanged`, anything else joins `moving` (with the
/// digest computed); the transfers to make come back in the order they were
/// given.
async fn keep_changed<J: Send + 'static>(
    moving: Vec<(usize, J)>,
    candidates: Vec<Candidate<J>>,
) -> Result<(Vec<Moving<J>>, Vec<Unchanged<J>>)> {
    let mut unchanged = Vec::new();
    let mut moving: Vec<(usize, Moving<J>)> =
        moving.into_iter().map(|(i, j)| (i, (j, None))).collect();
    if !candidates.is_empty() {
        let hashed = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .map(|c| {
                    let local = crate::transfer::sha256_file(&c.local).ok();
                    (c, local)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::other(format!("internal error: {e}")))?;
        for (c, local) in hashed {
            if local == Some(c.sha256) {
                unchanged.push(Unchanged {
                    job: c.job,
                    size: c.size,
                    sha256: c.sha256,
                });
            } else {
                moving.push((c.i, (c.job, local.map(|d| (c.size, d)))));
            }
        }
        moving.sort_by_key(|(i, _)| *i);
    }
    Ok((moving.into_iter().map(|(_, j)| j).collect(), unchanged))
}

/// Split off the files whose remote name already holds exactly their
/// content, uploaded by this same user, so re-running a put sends and
/// stores nothing again. Cheap
/// first: one listing per remote directory (requested together) gives
/// sizes and recorded digests; only files whose size matches are hashed.
async fn split_unchanged(
    c: &mut Client,
    jobs: Vec<PutJob>,
) -> Result<(Vec<Moving<PutJob>>, Vec<Unchanged<PutJob>>)> {
    let mut dirs: Vec<String> = jobs
        .iter()
        .map(|j| names::split_parent(&j.remote).0.to_string())
        .collect();
    dirs.sort();
    dirs.dedup();
    let listings = c.list_many(&dirs).await?;
    let me = c.user.clone();
    let mut remote = std::collections::HashMap::new();
    for (dir, listing) in dirs.iter().zip(listings) {
        let entries = match listing {
            Ok(entries) => entries,
            // a directory that does not exist yet holds nothing
            Err(e) if matches!(e.kind, Kind::Network | Kind::Protocol) => return Err(e),
            Err(_) => continue,
        };
        for e in entries {
            // only this user's own files: another user's file under the name
            // keeps the usual rules (a numbered copy, or a refused overwrite)
            if let (EntryKind::File, Some(digest), true) = (e.kind, e.sha256, e.owner == me) {
                remote.insert(join_remote(dir, &e.name), (e.size, digest));
            }
        }
    }
    let mut send = Vec::new();
    let mut candidates = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let local_size = std::fs::metadata(&job.local).map(|m| m.len()).ok();
        match remote.get(&job.remote) {
            Some(&(size, digest)) if local_size == Some(size) => {
                let local = job.local.clone();
                candidates.push(Candidate {
                    i,
                    job,
                    local,
                    size,
                    sha256: digest,
                })
            }
            _ => send.push((i, job)),
        }
    }
    keep_changed(send, candidates).await
}

// ---------------------------------------------------------------- get

/// Split off downloads whose local file already holds exactly the remote
/// bytes, so re-running a get changes nothing and makes no numbered copies.
/// Cheap first: only existing local files are considered; their size is
/// compared with the remote one (from the listing of `get -r`, else a STAT),
/// and only equal sizes are hashed and compared with the recorded digest
/// (and `--sha256`/`--check`, when given).
async fn split_unchanged_downloads(
    c: &mut Client,
    jobs: Vec<GetJob>,
    mut known: std::collections::HashMap<String, (u64, [u8; 32])>,
) -> Result<(Vec<GetJob>, Vec<Unchanged<GetJob>>)> {
    let mut fetch = Vec::new();
    let mut candidates = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let local = match &job.dest {
            Dest::Path(p) => std::fs::symlink_metadata(p).ok().filter(|m| m.is_file()),
            Dest::Stdout => None,
        };
        let Some(local) = local else {
            fetch.push((i, job));
            continue;
        };
        if !known.contains_key(&job.remote) {
            match c.stat(&job.remote).await {
                Ok(e) if e.kind == EntryKind::File => {
                    if let Some(d) = e.sha256 {
                        known.insert(job.remote.clone(), (e.size, d));
                    }
                }
                Err(e) if matches!(e.kind, Kind::Network | Kind::Protocol) => return Err(e),
                // missing, a directory, …: the download reports it as usual
                _ => {}
            }
        }
        match (known.get(&job.remote), &job.dest) {
            (Some(&(size, digest)), Dest::Path(path))
                if size == local.len() && job.expect.is_none_or(|x| x == digest) =>
            {
                let local = path.clone();
                candidates.push(Candidate {
                    i,
                    job,
                    local,
                    size,
                    sha256: digest,
                })
            }
            _ => fetch.push((i, job)),
        }
    }
    let (fetch, unchanged) = keep_changed(fetch, candidates).await?;
    Ok((fetch.into_iter().map(|(j, _)| j).collect(), unchanged))
}

/// Where a download of `remote` goes: `-o PATH`, inside `-o DIR/`, or ./NAME.
pub fn local_destination(remote: &str, output: Option<&Path>) -> PathBuf {
    let (_, base) = names::split_parent(remote);
    match output {
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => p.join(base),
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(base),
    }
}

/// Lines of a sha256sum file: (digest, name). `HASH  NAME` or `HASH *NAME`.
pub fn parse_sums(text: &str, shown: &str) -> Result<Vec<([u8; 32], String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            Error::usage(format!(
                "{shown} line {}: expected \"SHA256  NAME\" as sha256sum prints it",
                i + 1
            ))
        };
        let (hash, rest) = line.split_once(' ').ok_or_else(bad)?;
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(bad)?;
        let digest = parse_sha256(hash).map_err(|_| bad())?;
        let name = name.strip_prefix("./").unwrap_or(name);
        names::validate(name).map_err(|e| e.context(format!("{shown} line {}", i + 1)))?;
        out.push((digest, name.to_string()));
    }
    if out.is_empty() {
        return Err(Error::usage(format!("{shown} lists no files")));
    }
    Ok(out)
}

pub struct GetArgs<'a> {
    pub names: &'a [String],
    pub output: Option<&'a Path>,
    pub recursive: bool,
    pub sha256: Option<&'a str>,
    pub check: Option<&'a Path>,
    pub force: bool,
    pub stats: bool,
}

/// Check arguments before connecting.
pub fn check_get(a: &GetArgs) -> Result<()> {
    if a.recursive {
        // REMOTE_DIR, then an optional local directory
        if let Some(d) = a.names.first() {
            let d = d.trim_end_matches('/');
            if !d.is_empty() {
                names::validate(d)?;
            }
        }
    } else {
        for n in a.names {
            names::validate(n)?;
        }
    }
    if let Some(h) = a.sha256 {
        parse_sha256(h)?;
        if a.names.len() != 1 {
            return Err(Error::usage(
                "--sha256 checks a single file; for many, use --check SHA256SUMS",
            ));
        }
    }
    let to_stdout = a.output.is_some_and(|p| p.as_os_str() == "-");
    if to_stdout && (a.names.len() != 1 || a.recursive || a.check.is_some()) {
        return Err(Error::usage("-o - writes a single file to standard output"));
    }
    if a.recursive && a.names.len() > 2 {
        return Err(Error::usage(
            "get -r takes one remote directory and optionally a local directory: sft get -r REMOTE_DIR [LOCAL_DIR]",
        ));
    }
    if !a.recursive
        && a.check.is_none()
        && a.names.len() > 1
        && let Some(o) = a.output
        && !o.is_dir()
        && !o.as_os_str().to_string_lossy().ends_with('/')
    {
        return Err(Error::usage(format!(
            "several files go into a directory: -o {}/ (it is created if needed)",
            o.display()
        )));
    }
    Ok(())
}

/// A local directory for downloads, created if needed.
fn ensure_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), &e))
}

/// A remote name as a path under `dir`, component by component (names are
/// validated, so no component is "..", absolute, or has a separator).
fn local_path(dir: &Path, remote: &str) -> Result<PathBuf> {
    names::validate(remote)
        .map_err(|e| Error::protocol(format!("refusing a name from the server: {e}")))?;
    let mut p = dir.to_path_buf();
    for comp in remote.split('/') {
        p.push(comp);
    }
    Ok(p)
}

pub async fn get(c: &mut Client, o: &Output, a: &GetArgs<'_>) -> Result<()> {
    let mut jobs = Vec::new();
    let mut stdout = false;
    // remote (size, recorded SHA-256) where a listing already told us
    let mut known = std::collections::HashMap::new();
    if let Some(sums) = a.check {
        let text = std::fs::read_to_string(sums)
            .map_err(|e| Error::io(format!("reading {}", sums.display()), &e))?;
        let dir = a
            .output
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        for (digest, name) in parse_sums(&text, &sums.display().to_string())? {
            let dest = local_path(&dir, &name)?;
            if let Some(parent) = dest.parent() {
                ensure_dir(parent)?;
            }
            jobs.push(GetJob {
                remote: name,
                dest: Dest::Path(dest),
                expect: Some(digest),
            });
        }
    } else if a.recursive {
        let remote_dir = a.names[0].trim_end_matches('/').to_string();
        let local_dir = a
            .names
            .get(1)
            .map(PathBuf::from)
            .or_else(|| a.output.map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        let (files, dirs) = walk_remote(c, &remote_dir).await?;
        // REMOTE_DIR "a/b" lands as LOCAL_DIR/b/...; the root as LOCAL_DIR/...
        let strip = names::split_parent(&remote_dir).0.len();
        let rel = |full: &str| -> String {
            if strip == 0 {
                full.to_string()
            } else {
                full[strip + 1..].to_string()
            }
        };
        if !remote_dir.is_empty() {
            ensure_dir(&local_path(&local_dir, base(&remote_dir))?)?;
        } else {
            ensure_dir(&local_dir)?;
        }
        for d in &dirs {
            ensure_dir(&local_path(&local_dir, &rel(d))?)?;
        }
        for (full, entry) in files {
            let dest = local_path(&local_dir, &rel(&full))?;
            if let Some(d) = entry.sha256 {
                known.insert(full.clone(), (entry.size, d));
            }
            jobs.push(GetJob {
                remote: full,
                dest: Dest::Path(dest),
                expect: None,
            });
        }
    } else {
        let expect = a.sha256.map(parse_sha256).transpose()?;
        let many = a.names.len() > 1;
        if many && let Some(d) = a.output {
            ensure_dir(d)?;
        }
        for n in a.names {
            let dest = match a.output {
                Some(p) if p.as_os_str() == "-" => {
                    stdout = true;
                    Dest::Stdout
                }
                out => Dest::Path(local_destination(n, out)),
            };
            jobs.push(GetJob {
                remote: n.clone(),
                dest,
                expect,
            });
        }
    }
    let given = jobs.len();
    let (jobs, unchanged) = if stdout {
        (jobs, Vec::new())
    } else {
        split_unchanged_downloads(c, jobs, known).await?
    };
    let mut tally = Tally::default();
    for Unchanged { job, size, sha256 } in &unchanged {
        tally.ok += 1;
        let Dest::Path(path) = &job.dest else {
            continue;
        };
        o.result(
            || format!("{}  {}", hex32(sha256), path.display()),
            || {
                json!({
                    "op": "get",
                    "name": job.remote,
                    "path": path.display().to_string(),
                    "size": size,
                    "sha256": hex32(sha256),
                    "wire": 0,
                    "seconds": 0.0,
                    "outcome": "unchanged",
                })
            },
        )?;
    }
    if !unchanged.is_empty() && unchanged.len() == given {
        o.note(&format!(
            "{} already here with the same content; nothing downloaded",
            if given == 1 {
                "the file is"
            } else {
                "every file is"
            }
        ));
    }
    let progress = Progress::new(!o.quiet && !o.json && !stdout, jobs.len());
    let single = given == 1 && jobs.len() == 1;
    let mut single_err = None;
    // `-o FILE` names the file to write, as curl -o and scp do: it is
    // replaced (atomically, once the download is verified); without -o an
    // existing file is kept and the download saved as "name (1).ext", said
    // on stderr (and in --json as `path`)
    let named_file = single
        && !a.recursive
        && a.check.is_none()
        && matches!(&jobs[0].dest, Dest::Path(p) if a.output == Some(p.as_path()));
    let force = a.force || named_file;
    let r = c
        .get_many(&jobs, force, &progress, |i, r| {
            let job = &jobs[i];
            match r {
                Ok(got) => {
                    tally.ok += 1;
                    if let Dest::Path(wanted) = &job.dest
                        && *wanted != got.path
                        && !o.json
                        && !o.quiet
                    {
                        progress.println(&format!(
                            "sft: {} exists and was kept; saved as {} (use --force to replace it, or -o to name the file)",
                            wanted.display(),
                            got.path.display()
                        ));
                    }
                    if a.stats || o.verbose > 0 {
                        progress.println(&super::stats_line(
                            &job.remote,
                            got.size,
                            got.wire,
                            got.seconds,
                        ));
                    }
                    if got.resumed > 0 {
                        o.note(&format!(
                            "resumed {} after the {} already in {} (checked by SHA-256)",
                            names::escape(&job.remote),
                            crate::units::human(got.resumed),
                            got.path.display()
                        ));
                    }
                    if stdout {
                        return Ok(()); // stdout carries the data
                    }
                    o.result(
                        || format!("{}  {}", hex32(&got.sha256), got.path.display()),
                        || {
                            json!({
                                "op": "get",
                                "name": job.remote,
                                "path": got.path.display().to_string(),
                                "size": got.size,
                                "sha256": hex32(&got.sha256),
                                "wire": got.wire,
                                "resumed": got.resumed,
                                "seconds": got.seconds,
                                "outcome": "ok",
                            })
                        },
                    )
                }
                Err(e) if single => {
                    single_err = Some(on_server(e, &job.remote));
                    Ok(())
                }
                Err(e) => {
                    let e = on_server(e, &job.remote);
                    tally.record(&e);
                    o.file_failed("get", &job.remote, &e)
                }
            }
        })
        .await;
    progress.finish();
    r?;
    if let Some(e) = single_err {
        return Err(e);
    }
    tally.finish("downloads")
}

// ---------------------------------------------------------------- rm

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
        if !super::trust::ask(&format!(
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

// ---------------------------------------------------------------- df

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
        super::out(&format!(
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

// ---------------------------------------------------------------- sums, verify

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
    fn downloads_land_where_asked() {
        assert_eq!(local_destination("a/b.txt", None), PathBuf::from("b.txt"));
        assert_eq!(
            local_destination("b.txt", Some(Path::new("out.bin"))),
            PathBuf::from("out.bin")
        );
        assert_eq!(
            local_destination("d/b.txt", Some(Path::new("x/"))),
            PathBuf::from("x/b.txt")
        );
    }

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(EntryKind::File, 0o750), "-rwxr-x---");
        assert_eq!(mode_string(EntryKind::File, 0o604), "-rw----r--");
        assert_eq!(mode_string(EntryKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0), "----------");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(format_time(-5), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn sums_files_parse_like_sha256sum_writes_them() {
        let h = "ab".repeat(32);
        let text = format!("# c\n{h}  a b.txt\n{h} *bin/x\n{h}  ./c\n");
        let v = parse_sums(&text, "S").unwrap();
        assert_eq!(
            v.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
            ["a b.txt", "bin/x", "c"]
        );
        assert!(parse_sums(&format!("{h}  ../etc/passwd\n"), "S").is_err());
        assert!(parse_sums("nothex  a\n", "S").is_err());
        assert!(parse_sums("\n", "S").is_err());
    }

    #[test]
    fn local_paths_stay_inside_the_target() {
        let d = Path::new("/t");
        assert_eq!(local_path(d, "a/b").unwrap(), PathBuf::from("/t/a/b"));
        for bad in ["../x", "/etc/passwd", "a/../../x", "a\\b"] {
            assert!(local_path(d, bad).is_err(), "{bad}");
        }
    }
}
