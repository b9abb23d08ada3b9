//! The shell's uploads and downloads: files, patterns, trees.

use std::path::{Path, PathBuf};

use super::Shell;
use super::commands::on_server;
use super::resolve::{join, needs_name, shown};
use crate::app::out;
use crate::app::output::Tally;
use crate::client::Client;
use crate::client::pipeline::{Dest, GetJob, PutJob};
use crate::error::{Error, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::EntryKind;

impl Shell {
    /// Download `names` (full remote names): one file to LOCAL (a file or a
    /// directory), several into LOCAL or the local directory; a bar on a
    /// terminal; each failure reported, the rest go on.
    pub(super) async fn get_files(
        &mut self,
        c: &mut Client,
        names_: Vec<String>,
        local: Option<&str>,
    ) -> Result<()> {
        let single = names_.len() == 1;
        if !single
            && let Some(l) = local
            && !Path::new(l).is_dir()
        {
            return Err(Error::usage(format!(
                "several files go into a local directory, and {} is not one",
                names::quote(l)
            )));
        }
        let mut jobs = Vec::with_capacity(names_.len());
        for name in names_ {
            let (_, base) = names::split_parent(&name);
            let dest = match local {
                Some(p) if p.ends_with('/') || Path::new(p).is_dir() => Path::new(p).join(base),
                Some(p) => PathBuf::from(p),
                None => PathBuf::from(base),
            };
            // checked before asking: once the server starts sending, a local
            // failure would leave the rest of the file on the wire
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(Error::usage(format!(
                    "{} is not a local directory",
                    shown(parent)
                )));
            }
            jobs.push(GetJob {
                remote: name,
                dest: Dest::Path(dest),
                expect: None,
            });
        }
        let progress = Progress::new(true, jobs.len());
        let mut tally = Tally::default();
        let r = c
            .get_many(&jobs, false, &progress, |i, r| {
                match r {
                    Ok(got) => {
                        tally.ok += 1;
                        out(&format!(
                            "{}  {}",
                            hex::encode(got.sha256),
                            shown(&got.path)
                        ))?;
                    }
                    Err(e) => {
                        let e = on_server(e, &self.shown(&jobs[i].remote));
                        if !single {
                            progress.println(&format!("error: {e}"));
                        }
                        tally.record(&e);
                    }
                }
                Ok(())
            })
            .await;
        progress.finish();
        r?;
        tally.finish("downloads")
    }

    /// Upload local `paths`: one file as NAME (or NAME/ for a directory),
    /// several into REMOTE_DIR or the remote directory.
    pub(super) async fn put_files(
        &mut self,
        c: &mut Client,
        paths: Vec<PathBuf>,
        remote: Option<&str>,
    ) -> Result<()> {
        let single = paths.len() == 1;
        let mut jobs = Vec::with_capacity(paths.len());
        for local in paths {
            if local.is_dir() {
                return Err(Error::usage(format!(
                    "{} is a directory; use put -r to upload a tree",
                    shown(&local)
                )));
            }
            let file_name = || -> Result<String> {
                local
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::usage(format!(
                            "{} has no usable file name; give one: put PATH NAME",
                            shown(&local)
                        ))
                    })
            };
            let name = match remote {
                // NAME/ (or any NAME for several files) is a directory
                Some(r) if r.ends_with('/') || !single => join(&self.resolve(r)?, &file_name()?),
                Some(r) => self.resolve(r)?,
                None => join(&self.cwd, &file_name()?),
            };
            let name = needs_name(name)?;
            names::validate(&name)?;
            jobs.push(PutJob {
                local,
                remote: name,
            });
        }
        self.changed();
        let progress = Progress::new(true, jobs.len());
        let mut tally = Tally::default();
        let r = c
            .put_many(&jobs, false, &progress, |i, r| {
                match r {
                    Ok(up) => {
                        tally.ok += 1;
                        out(&format!(
                            "{}  {}",
                            hex::encode(up.sha256),
                            self.shown(&up.name)
                        ))?;
                    }
                    Err(e) => {
                        if !single {
                            progress.println(&format!("error: {}: {e}", shown(&jobs[i].local)));
                        }
                        tally.record(&e);
                    }
                }
                Ok(())
            })
            .await;
        progress.finish();
        r?;
        tally.finish("uploads")
    }

    /// `get -r DIR [LOCAL_DIR]`: the tree as LOCAL_DIR/DIR/...
    pub(super) async fn get_tree(
        &mut self,
        c: &mut Client,
        arg: &str,
        local: Option<&str>,
    ) -> Result<()> {
        let dir = if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
            self.target(arg, EntryKind::Dir)?
        } else {
            self.resolve(arg)?
        };
        let names_ = [dir];
        let a = crate::app::files::GetArgs {
            names: &names_,
            output: Some(Path::new(local.unwrap_or("."))),
            recursive: true,
            sha256: None,
            check: None,
            force: false,
            stats: false,
        };
        crate::app::files::check_get(&a)?;
        crate::app::files::get(c, &crate::app::Output::default(), &a).await
    }

    /// `put -r DIR [REMOTE_DIR]`: the tree as REMOTE_DIR/DIR/... (REMOTE_DIR
    /// is relative to the remote directory).
    pub(super) async fn put_tree(
        &mut self,
        c: &mut Client,
        dir: &str,
        remote: Option<&str>,
    ) -> Result<()> {
        let to = match remote {
            Some(r) => self.resolve(r)?,
            None => self.cwd.clone(),
        };
        let paths = [PathBuf::from(dir)];
        let o = crate::app::Output::default();
        let (jobs, empty) = crate::app::files::plan_put(
            &crate::app::files::PutArgs {
                paths: &paths,
                recursive: true,
                as_name: None,
                to: (!to.is_empty()).then_some(to.as_str()),
            },
            &o,
        )?;
        self.changed();
        crate::app::files::put(c, &o, jobs, empty, false, false, None).await
    }
}
