//! `sft get`: where downloads land, sums files, downloads pipelined over one
//! session.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::unchanged::{Unchanged, split_unchanged_downloads};
use super::{base, hex32, on_server, parse_sha256, walk_remote};
use crate::app::output::{Output, Tally};
use crate::client::Client;
use crate::client::pipeline::{Dest, GetJob};
use crate::error::{Error, Result};
use crate::names;
use crate::progress::Progress;

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
        if !super::super::output::first_report(&format!("get\0{}", path.display())) {
            continue; // a retry: reported by the attempt that fetched it
        }
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
    // one large file may go over several connections (--streams)
    let ranged = match &jobs[..] {
        [job] if single => match &job.dest {
            Dest::Path(p) => c.get_streams(&job.remote, p, force, job.expect).await,
            Dest::Stdout => None,
        },
        _ => None,
    };
    let mut report = |i: usize, r: Result<crate::client::Downloaded>| {
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
                    progress.println(&crate::app::stats_line(
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
                if let Dest::Path(p) = &job.dest {
                    super::super::output::first_report(&format!("get\0{}", p.display()));
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
    };
    let r = match ranged {
        Some(res) => report(0, res),
        None => c.get_many(&jobs, force, &progress, &mut report).await,
    };
    progress.finish();
    r?;
    if let Some(e) = single_err {
        return Err(e);
    }
    tally.finish("downloads")
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
