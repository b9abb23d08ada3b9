//! `sft put`: local trees planned into upload jobs, uploads pipelined over
//! one session (with CLONE for content the server holds), standard input.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::flight::{Answered, FirstFlight};
use super::unchanged::{Moving, split_unchanged};
use super::{hex32, join_remote};
use crate::app::output::{Output, Tally};
use crate::client::Client;
use crate::client::pipeline::PutJob;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::{EntryKind, Msg};

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
    first: Option<FirstFlight>,
) -> Result<()> {
    let mut tally = Tally::default();
    // the replies to what was sent with AUTH come first (before MKDIR's)
    let answered = match first {
        Some(f) => {
            let (listings, answers) = c.early_replies(f.lists, f.sizes.len()).await?;
            // (a refused probe means "upload it", as in `split_cloned`)
            let held = f
                .sizes
                .iter()
                .zip(&answers)
                .map(|(s, a)| (*s, a.is_ok()))
                .collect();
            Some(Answered { listings, held })
        }
        None => None,
    };
    let (listed, held) = match answered {
        Some(a) => (Some(a.listings), Some(a.held)),
        None => (None, None),
    };
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
        split_unchanged(c, jobs, listed).await?
    } else {
        (jobs.into_iter().map(|j| (j, None)).collect(), Vec::new())
    };
    for u in &unchanged {
        tally.ok += 1;
        if !super::super::output::first_report(&format!("put\0{}", u.job.local.display())) {
            continue; // a retry: reported by the attempt that sent it
        }
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
        split_cloned(c, jobs, overwrite, held.as_ref()).await?
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
                        crate::app::stats_line(&up.name, up.size, up.wire, up.seconds)
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
    // one large file may go over several connections (--streams)
    let ranged = match &jobs[..] {
        [job] if single => c.put_streams(&job.local, &job.remote, overwrite).await,
        _ => None,
    };
    let mut report = |i: usize, r: Result<crate::client::Uploaded>| {
        let job = &jobs[i];
        match r {
            Ok(up) => {
                tally.ok += 1;
                if stats || o.verbose > 0 {
                    progress.println(&crate::app::stats_line(
                        &up.name, up.size, up.wire, up.seconds,
                    ));
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
    };
    let r = match ranged {
        Some(res) => report(0, res),
        None => c.put_many(&jobs, overwrite, &progress, &mut report).await,
    };
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
///
/// `held`: the probes' answers by size, when already read (sent right
/// after AUTH); a size not in it is probed here.
async fn split_cloned(
    c: &mut Client,
    jobs: Vec<Moving<PutJob>>,
    overwrite: bool,
    held: Option<&std::collections::HashMap<u64, bool>>,
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
    // (unreadable: 0, which nothing large has; its upload reports it)
    let sizes: Vec<u64> = hash
        .iter()
        .map(|(_, job, _)| std::fs::metadata(&job.local).map_or(0, |m| m.len()))
        .collect();
    // what the probes sent with AUTH already answered, per file
    let answered: Vec<Option<bool>> = sizes
        .iter()
        .map(|s| held.and_then(|h| h.get(s).copied()))
        .collect();
    let probes: Vec<Msg> = hash
        .iter()
        .zip(sizes.iter().zip(&answered))
        .filter(|((_, _, known), (_, a))| known.is_none() && a.is_none())
        .map(|((_, job, _), (size, _))| Msg::Clone {
            size: *size,
            flags: crate::protocol::CLONE_PROBE,
            sha256: [0; 32],
            name: job.remote.clone(),
        })
        .collect();
    let mut asked_now = c
        .simple_many(&probes, "the reply to a CLONE probe")
        .await?
        .into_iter();
    let mut worth = Vec::new();
    for ((i, job, known), a) in hash.into_iter().zip(answered) {
        let worth_hashing = known.is_some()
            || match a {
                Some(h) => h,
                None => asked_now.next().is_some_and(|r| r.is_ok()),
            };
        if worth_hashing {
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
            crate::app::stats_line(&up.name, up.size, up.wire, up.seconds)
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
    super::super::output::first_report(&format!("put\0{local}"));
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
