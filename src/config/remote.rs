//! Remote addresses as people write them, and the one rule that tells them
//! from plain names:
//!
//! - `sft://HOST[:PORT]/PATH` (IPv6 as `sft://[::1]:7373/PATH`);
//! - `NAME:PATH` where NAME is a profile of the config file (rclone's
//!   `remote:path`);
//! - otherwise scp's `HOST:PATH` (`[V6ADDR]:PATH`; the port is the profile's
//!   for that host, or 7373; use `sft://` for another port).
//!
//! A word is an address only if it has a `:` with no `/` before it, as in
//! scp, and what comes before is a profile name or could be a host name
//! (letters, digits, `.`, `-`, `_`, or a bracketed IPv6 address): `./a:b`,
//! `dir/a:b` and `notes 10:30.txt` are plain names. A leading `./` on a
//! remote name is dropped, so a remote file named `a:b` is `./a:b`.

use crate::error::{Error, Result};

/// Which server an address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A profile of the config file, by name: its server, trust and token.
    Profile(String),
    /// A host, with the port if the address gave one.
    Host { host: String, port: Option<u16> },
}

impl Target {
    /// As a person would write it back (for messages).
    pub fn shown(&self) -> String {
        match self {
            Target::Profile(p) => format!("profile {p}"),
            Target::Host { host, port } => {
                let h = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match port {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                }
            }
        }
    }

    /// Two addresses name the same server.
    fn same(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Profile(a), Target::Profile(b)) => a == b,
            (Target::Host { host: a, port: p }, Target::Host { host: b, port: q }) => {
                a.eq_ignore_ascii_case(b)
                    && p.unwrap_or(crate::client::DEFAULT_PORT)
                        == q.unwrap_or(crate::client::DEFAULT_PORT)
            }
            _ => false,
        }
    }
}

/// A parsed address: the server and the path on it ("" for the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub target: Target,
    pub path: String,
}

fn bad(arg: &str, why: &str) -> Error {
    Error::usage(format!(
        "invalid address {}: {why}",
        crate::names::quote(arg)
    ))
}

fn check_host(arg: &str, host: &str) -> Result<()> {
    if host.is_empty() {
        return Err(bad(arg, "no host; write sft://HOST[:PORT]/PATH"));
    }
    if host
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '@' | '/' | '\\'))
    {
        return Err(bad(
            arg,
            "the host may hold no spaces, '@', '/' or '\\' (sft has no user@ part: the token says who you are)",
        ));
    }
    Ok(())
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT` of a `sft://` address.
fn parse_authority(arg: &str, auth: &str) -> Result<Target> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(arg, "the port must be a number from 1 to 65535"))
    };
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(arg, "an IPv6 address needs its closing ']'"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(port(p)?)),
            None if after.is_empty() => (h, None),
            None => return Err(bad(arg, "expected ':PORT' after ']'")),
        }
    } else {
        match auth.split_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (auth, None),
        }
    };
    check_host(arg, host)?;
    Ok(Target::Host {
        host: host.to_string(),
        port,
    })
}

/// Parse one word. `Ok(None)`: a plain name (local, or on the server the
/// command talks to anyway). `is_profile` says whether a name is a profile
/// of the config file.
pub fn parse(arg: &str, is_profile: &dyn Fn(&str) -> bool) -> Result<Option<Address>> {
    if let Some(rest) = arg.strip_prefix("sft://") {
        let (auth, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        if auth.contains('@') {
            return Err(bad(
                arg,
                "sft has no user@ part in addresses: the token says who you are",
            ));
        }
        return Ok(Some(Address {
            target: parse_authority(arg, auth)?,
            path: path.to_string(),
        }));
    }
    if let Some((scheme, _)) = arg.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err(bad(
            arg,
            "sft addresses start with sft:// (or write HOST:PATH or PROFILE:PATH)",
        ));
    }
    // scp's bracketed IPv6 form: [::1]:PATH
    if let Some(rest) = arg.strip_prefix('[')
        && let Some((h, after)) = rest.split_once(']')
        && let Some(path) = after.strip_prefix(':')
        && !h.contains('/')
    {
        check_host(arg, h)?;
        return Ok(Some(Address {
            target: Target::Host {
                host: h.to_string(),
                port: None,
            },
            path: path.to_string(),
        }));
    }
    let Some((before, path)) = arg.split_once(':') else {
        return Ok(None);
    };
    if before.is_empty() || before.contains('/') {
        return Ok(None);
    }
    let target = if is_profile(before) {
        Target::Profile(before.to_string())
    } else if before
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        Target::Host {
            host: before.to_string(),
            port: None,
        }
    } else {
        // "notes 10:30.txt" is a name, not a host
        return Ok(None);
    };
    Ok(Some(Address {
        target,
        path: path.to_string(),
    }))
}

/// A plain remote name with any leading `./` dropped (`./a:b` is the remote
/// file `a:b`).
pub fn plain(name: &str) -> &str {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("./") {
        n = rest.trim_start_matches('/');
    }
    n
}

/// The server of a whole command: every address in it must name the same one.
#[derive(Debug, Default)]
pub struct Collect {
    pub target: Option<Target>,
}

impl Collect {
    pub fn add(&mut self, t: Target) -> Result<()> {
        match &self.target {
            None => {
                self.target = Some(t);
                Ok(())
            }
            Some(old) if old.same(&t) => Ok(()),
            Some(old) => Err(Error::usage(format!(
                "one command talks to one server, but this one names {} and {}; run one command for each",
                old.shown(),
                t.shown()
            ))),
        }
    }

    /// A remote-name word: the path it names, its server recorded.
    pub fn remote(&mut self, word: &str, is_profile: &dyn Fn(&str) -> bool) -> Result<String> {
        match parse(word, is_profile)? {
            Some(a) => {
                self.add(a.target)?;
                Ok(a.path)
            }
            None => Ok(plain(word).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prof(n: &str) -> bool {
        n == "prod"
    }

    fn p(s: &str) -> Option<Address> {
        parse(s, &prof).unwrap()
    }

    fn host(h: &str, port: Option<u16>, path: &str) -> Option<Address> {
        Some(Address {
            target: Target::Host {
                host: h.into(),
                port,
            },
            path: path.into(),
        })
    }

    #[test]
    fn sft_urls_give_host_port_and_path() {
        assert_eq!(p("sft://h/dir/a.txt"), host("h", None, "dir/a.txt"));
        assert_eq!(p("sft://h:9000/dir/"), host("h", Some(9000), "dir/"));
        assert_eq!(p("sft://h"), host("h", None, ""));
        assert_eq!(p("sft://h/"), host("h", None, ""));
        assert_eq!(p("sft://[::1]:7000/x"), host("::1", Some(7000), "x"));
        assert_eq!(p("sft://[::1]/x"), host("::1", None, "x"));
        // a profile name in a URL is a host, not a profile
        assert_eq!(p("sft://prod/x"), host("prod", None, "x"));
    }

    #[test]
    fn bad_urls_say_why() {
        for (s, why) in [
            ("sft://", "no host"),
            ("sft://h:x/a", "port"),
            ("sft://h:0/a", "port"),
            ("sft://h:70000/a", "port"),
            ("sft://me@h/a", "user@"),
            ("sft://[::1/a", "']'"),
            ("https://h/a", "sft://"),
        ] {
            let e = parse(s, &prof).unwrap_err();
            assert!(e.message.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn profile_and_scp_forms() {
        assert_eq!(
            p("prod:dir/a"),
            Some(Address {
                target: Target::Profile("prod".into()),
                path: "dir/a".into()
            })
        );
        assert_eq!(
            p("files.example.com:dir/"),
            host("files.example.com", None, "dir/")
        );
        assert_eq!(p("host:"), host("host", None, ""));
        assert_eq!(p("[::1]:a.txt"), host("::1", None, "a.txt"));
        // the path keeps any further colons
        assert_eq!(p("host:a:b"), host("host", None, "a:b"));
    }

    #[test]
    fn local_looking_words_are_plain_names() {
        for s in [
            "a.txt",
            "./a:b",
            "dir/a:b",
            "/tmp/a:b",
            ":a",
            "-",
            "dir/x",
            "notes 10:30.txt",
            "a*b:c",
        ] {
            assert_eq!(p(s), None, "{s}");
        }
        assert_eq!(plain("./a:b"), "a:b");
        assert_eq!(plain(".//./x"), "x");
        assert_eq!(plain("a/b"), "a/b");
    }

    #[test]
    fn one_command_one_server() {
        let mut c = Collect::default();
        assert_eq!(c.remote("h:a", &prof).unwrap(), "a");
        assert_eq!(c.remote("sft://H:7373/b", &prof).unwrap(), "b");
        assert_eq!(c.remote("./c:d", &prof).unwrap(), "c:d");
        let e = c.remote("other:x", &prof).unwrap_err();
        assert!(e.message.contains("one server"), "{e}");
        let e = c.remote("prod:x", &prof).unwrap_err();
        assert!(e.message.contains("profile prod"), "{e}");
        assert_eq!(
            c.target,
            Some(Target::Host {
                host: "h".into(),
                port: None
            })
        );
    }
}
