//! Words into names: remote names against the working directory, numbers
//! of the last listing, shell patterns on both sides.

use std::path::{Path, PathBuf};

use super::Shell;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::EntryKind;

impl Shell {
    /// A typed remote name made absolute (from the root) against `cwd`; ""
    /// is the root. `..` may go up, but never above the root.
    pub(super) fn resolve(&self, arg: &str) -> Result<String> {
        let mut parts: Vec<&str> = if arg.starts_with('/') {
            Vec::new()
        } else {
            self.cwd.split('/').filter(|p| !p.is_empty()).collect()
        };
        for comp in arg.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(Error::usage(format!(
                            "{}: '..' would leave the server's root directory",
                            names::quote(arg)
                        )));
                    }
                }
                c => parts.push(c),
            }
        }
        let name = parts.join("/");
        if !name.is_empty() {
            names::validate(&name)?;
        }
        Ok(name)
    }

    /// A name or a number from the last listing; a numbered entry must be a `want`.
    pub(super) fn target(&self, arg: &str, want: EntryKind) -> Result<String> {
        if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
            return needs_name(self.resolve(arg)?);
        }
        let entry = arg
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.listed.get(i))
            .filter(|_| self.fresh);
        match entry {
            Some((name, kind)) if *kind == want => Ok(name.clone()),
            Some((name, EntryKind::Dir)) => Err(Error::usage(format!(
                "{} is a directory",
                names::quote(name)
            ))),
            Some((name, EntryKind::File)) => Err(Error::usage(format!(
                "{} is not a directory",
                names::quote(name)
            ))),
            _ if self.listed.is_empty() => Err(Error::usage(format!(
                "no numbered listing yet: run ls first (or write ./{arg} for a name)"
            ))),
            _ if !self.fresh => Err(Error::usage(format!(
                "{arg} is a number from an ls that is out of date (the directory or its contents changed since); run ls again, or write ./{arg} for a name"
            ))),
            None => Err(Error::usage(format!(
                "the last listing has no entry {arg} (it has 1-{}); write ./{arg} for a name",
                self.listed.len()
            ))),
        }
    }

    /// A full remote name as shown to the user: relative to `cwd` when inside it.
    pub(super) fn shown(&self, name: &str) -> String {
        let rel = if self.cwd.is_empty() {
            Some(name)
        } else {
            name.strip_prefix(self.cwd.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        match rel {
            Some(r) => names::escape(r),
            None => format!("/{}", names::escape(name)),
        }
    }

    /// The remote directory's contents changed (or may have): numbers from
    /// the last listing no longer count, completion is fetched again.
    pub(super) fn changed(&mut self) {
        self.fresh = false;
        self.complete = None;
    }

    /// The remote files a word names: a number of the last listing, a
    /// pattern (`*.gz`, matched against its directory's files), or a name.
    pub(super) async fn remote_files(&self, c: &mut Client, arg: &str) -> Result<Vec<String>> {
        if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(vec![self.target(arg, EntryKind::File)?]);
        }
        if !is_pattern(arg) {
            return Ok(vec![needs_name(self.resolve(arg)?)?]);
        }
        let full = self.resolve(arg)?;
        let (dir, pattern) = names::split_parent(&full);
        if is_pattern(dir) {
            return Err(Error::usage(format!(
                "{}: patterns work in the last part of a name only",
                names::quote(arg)
            )));
        }
        let mut found: Vec<String> = c
            .list(dir)
            .await?
            .into_iter()
            .filter(|e| {
                e.kind == EntryKind::File
                    && !e.name.contains('/')
                    && names::validate(&e.name).is_ok()
                    && glob_match(pattern, &e.name)
            })
            .map(|e| join(dir, &e.name))
            .collect();
        if found.is_empty() {
            return Err(Error::not_found(format!(
                "no remote file matches {}",
                names::quote(arg)
            )));
        }
        found.sort();
        Ok(found)
    }
}
/// Whether a word holds pattern characters (`*`, `?`, `[`).
pub(super) fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style matching of one name component: `*` any run, `?` one
/// character, `[abc]`, `[a-z]`, `[!x]` a set. A leading `.` is matched only
/// by a pattern that starts with one, as in sh.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // iterative matching with one backtrack point for the last '*'
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class(&p[pi..], n[ni]) {
                Some((true, len)) => Some(pi + len),
                Some((false, _)) => None,
                // no closing ']': a literal '['
                None => (n[ni] == '[').then_some(pi + 1),
            },
            Some(c) => (*c == n[ni]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A `[...]` set at the start of `p`: whether `c` is in it, and the set's
/// length; None when it has no closing `]`.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while let Some(&x) = p.get(i) {
        if x == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-')
            && let Some(&hi) = p.get(i + 2)
            && hi != ']'
        {
            hit |= x <= c && c <= hi;
            i += 3;
        } else {
            hit |= x == c;
            i += 1;
        }
    }
    None
}

/// The local files a word names: a pattern (matched against its directory's
/// regular files, sorted) or a path.
pub(super) fn local_files(arg: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(arg);
    let pattern = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !is_pattern(pattern) {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let what = |e: std::io::Error| Error::io(format!("listing {}", shown(dir)), &e);
    let mut found = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(what)? {
        let ent = ent.map_err(what)?;
        let is_file = ent.file_type().map(|t| t.is_file()).unwrap_or(false);
        if let Some(name) = ent.file_name().to_str()
            && is_file
            && glob_match(pattern, name)
        {
            found.push(
                if dir == Path::new(".") && path.parent() != Some(Path::new(".")) {
                    PathBuf::from(name)
                } else {
                    dir.join(name)
                },
            );
        }
    }
    if found.is_empty() {
        return Err(Error::not_found(format!(
            "no local file matches {}",
            names::quote(arg)
        )));
    }
    found.sort();
    Ok(found)
}

pub(super) fn needs_name(name: String) -> Result<String> {
    if name.is_empty() {
        return Err(Error::usage("that is the root directory; give a name"));
    }
    Ok(name)
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A local path for the terminal.
pub(super) fn shown(p: &Path) -> String {
    names::escape(&p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::shell::commands::flag;

    #[test]
    fn names_resolve_against_the_remote_directory() {
        let sh = Shell {
            cwd: "a/b".into(),
            ..Default::default()
        };
        assert_eq!(sh.resolve("x").unwrap(), "a/b/x");
        assert_eq!(sh.resolve("../x").unwrap(), "a/x");
        assert_eq!(sh.resolve("./x/").unwrap(), "a/b/x");
        assert_eq!(sh.resolve("/x").unwrap(), "x");
        assert_eq!(sh.resolve("../..").unwrap(), "");
        assert_eq!(sh.resolve("/").unwrap(), "");
        let e = sh.resolve("../../..").unwrap_err();
        assert!(e.message.contains("root"), "{e}");
        assert!(sh.resolve("/../x").is_err());
        assert!(sh.resolve("x\u{1b}[2J").is_err());
        assert_eq!(sh.shown("a/b/c/d"), "c/d");
        assert_eq!(sh.shown("a/bc"), "/a/bc");
    }

    #[test]
    fn numbers_refer_to_the_last_listing() {
        let mut sh = Shell::default();
        assert!(
            sh.target("1", EntryKind::File)
                .unwrap_err()
                .message
                .contains("run ls")
        );
        sh.listed = vec![
            ("d".into(), EntryKind::Dir),
            ("d/f".into(), EntryKind::File),
        ];
        sh.fresh = true;
        assert_eq!(sh.target("2", EntryKind::File).unwrap(), "d/f");
        assert_eq!(sh.target("1", EntryKind::Dir).unwrap(), "d");
        assert!(sh.target("1", EntryKind::File).is_err());
        assert!(sh.target("0", EntryKind::File).is_err());
        assert!(
            sh.target("3", EntryKind::File)
                .unwrap_err()
                .message
                .contains("1-2")
        );
        assert_eq!(sh.target("./2", EntryKind::File).unwrap(), "2");
        assert!(sh.target("/", EntryKind::File).is_err());
        // after a change (rm, put, cd, ...) a number is refused, not guessed
        sh.changed();
        let e = sh.target("2", EntryKind::File).unwrap_err();
        assert!(e.message.contains("out of date"), "{e}");
        assert_eq!(sh.target("./2", EntryKind::File).unwrap(), "2");
    }

    #[test]
    fn patterns_match_like_sh() {
        for (p, n) in [
            ("*.gz", "a.tar.gz"),
            ("*", "x"),
            ("a?c", "abc"),
            ("[abc]*", "b1"),
            ("[a-c]x", "bx"),
            ("[!a]x", "bx"),
            ("*a*b*", "xxaxxbxx"),
            (".*", ".hidden"),
            ("[", "["),
            ("r[]]", "r]"),
        ] {
            assert!(glob_match(p, n), "{p} should match {n}");
        }
        for (p, n) in [
            ("*.gz", "a.tgz"),
            ("a?c", "ac"),
            ("[!a]x", "ax"),
            ("*", ".hidden"),
            ("[a-c]x", "dx"),
            ("*a", "ab"),
        ] {
            assert!(!glob_match(p, n), "{p} should not match {n}");
        }
        assert!(is_pattern("*.txt") && is_pattern("a[1]") && !is_pattern("a.txt"));
        assert_eq!(
            flag(&["-r".into(), "d".into()], "-r"),
            (true, vec!["d".to_string()])
        );
    }
}
