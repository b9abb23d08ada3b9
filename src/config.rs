//! The client's config file (~/.config/sft/config.toml): named profiles of
//! connection settings. Precedence: command-line flags > environment
//! variables > the chosen profile > built-in defaults.
//!
//! ```toml
//! default_profile = "prod"
//!
//! [profiles.prod]
//! server = "files.example.com:7373"
//! token_file = "/home/me/.config/sft/prod.token"
//! ca = "/home/me/.config/sft/prod-ca.pem"   # or: pin = "ab12..."
//! compress = "auto"
//! ```

pub mod remote;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{Cli, Command, ConnArgs};
use crate::error::{Error, Result};
use remote::Target;

/// One profile: every field optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub server: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub pin: Option<String>,
    pub ca: Option<PathBuf>,
    pub known_servers: Option<PathBuf>,
    pub compress: Option<String>,
    pub timeout: Option<String>,
    pub limit_rate: Option<String>,
}

/// The file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// $XDG_CONFIG_HOME/sft/config.toml or ~/.config/sft/config.toml.
pub fn default_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("sft/config.toml"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".config/sft/config.toml"))
}

impl ConfigFile {
    pub fn parse(text: &str, shown: &str) -> Result<ConfigFile> {
        toml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            Error::usage(format!(
                "{shown} is not a valid sft config file: {}",
                msg.lines().next().unwrap_or("parse error")
            ))
        })
    }

    /// Read the file; a missing default file is empty, a missing file named
    /// explicitly is an error. A file holding a token must be private.
    pub fn load(path: &Path, explicit: bool) -> Result<ConfigFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(ConfigFile::default());
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), &e)),
        };
        let cfg = ConfigFile::parse(&text, &path.display().to_string())?;
        if cfg.profiles.values().any(|p| p.token.is_some()) {
            crate::private::check_private(path)?;
        }
        Ok(cfg)
    }

    /// The profile asked for (or the default one); `None` when none applies.
    pub fn select(&self, name: Option<&str>) -> Result<Option<(String, Profile)>> {
        let Some(name) = name.or(self.default_profile.as_deref()) else {
            return Ok(None);
        };
        match self.profiles.get(name) {
            Some(p) => Ok(Some((name.to_string(), p.clone()))),
            None => {
                let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
                Err(Error::usage(format!(
                    "no profile {name:?} in the config file{}",
                    if known.is_empty() {
                        " (it has none)".to_string()
                    } else {
                        format!("; it has: {}", known.join(", "))
                    }
                )))
            }
        }
    }
}

impl ConfigFile {
    /// The profile for a server named by an address: the one asked for
    /// (which must be for that host), else the default profile if it is for
    /// that host, else the first other one that is; `None` if no profile is
    /// for it. Never a profile for a different server: its pin and token
    /// belong to that one.
    pub fn for_host(
        &self,
        host: &str,
        port: Option<u16>,
        asked: Option<&str>,
    ) -> Result<Option<(String, Profile)>> {
        let is_for = |p: &Profile| {
            p.server
                .as_deref()
                .and_then(|s| crate::client::split_host_port(s).ok())
                .is_some_and(|(h, pp)| h.eq_ignore_ascii_case(host) && port.is_none_or(|x| x == pp))
        };
        let shown = Target::Host {
            host: host.to_string(),
            port,
        }
        .shown();
        if let Some(name) = asked {
            let Some((n, p)) = self.select(Some(name))? else {
                return Ok(None);
            };
            if is_for(&p) {
                return Ok(Some((n, p)));
            }
            return Err(Error::usage(format!(
                "profile {n} (from --profile or SFT_PROFILE) is for server {}, not {shown}; drop the profile, or write {n}:PATH to use its server",
                p.server.as_deref().unwrap_or("127.0.0.1")
            )));
        }
        let order = self
            .default_profile
            .iter()
            .chain(self.profiles.keys())
            .map(String::as_str);
        for name in order {
            if let Some(p) = self.profiles.get(name)
                && is_for(p)
            {
                return Ok(Some((name.to_string(), p.clone())));
            }
        }
        Ok(None)
    }
}

fn config_path(c: &ConnArgs) -> (Option<PathBuf>, bool) {
    match &c.config {
        Some(p) => (Some(p.clone()), true),
        None => (default_path(), false),
    }
}

/// Turn addresses in a client command's arguments (`sft://HOST/PATH`,
/// `PROFILE:PATH`, `HOST:PATH`; see [`remote`]) into plain remote names,
/// recording the one server they name in `conn.target`. Put's last word may
/// be the destination: `HOST:DIR/` (or `HOST:` for the root, or any path when
/// several files or -r go there) is a directory; `HOST:NAME` names the one
/// file, unless NAME is an existing remote directory (as in scp). Get's last plain word after addresses is the local destination, as
/// in scp.
pub fn apply_addresses(cli: &mut Cli) -> Result<()> {
    let client_cmd = matches!(
        cli.cmd,
        Command::Ls { .. }
            | Command::Put { .. }
            | Command::Get { .. }
            | Command::Rm { .. }
            | Command::Sums { .. }
            | Command::Verify { .. }
            | Command::Mkdir { .. }
            | Command::Shell { .. }
    );
    if !client_cmd {
        return Ok(());
    }
    let profiles: Vec<String> = match config_path(&cli.conn) {
        (Some(p), explicit) => ConfigFile::load(&p, explicit)?
            .profiles
            .into_keys()
            .collect(),
        (None, _) => Vec::new(),
    };
    let is_profile = |n: &str| profiles.iter().any(|p| p == n);
    let mut col = remote::Collect::default();
    match &mut cli.cmd {
        Command::Ls { dir, .. } | Command::Sums { dir } | Command::Shell { dir } => {
            if let Some(d) = dir.as_mut() {
                let path = col.remote(d, &is_profile)?;
                *dir = (!path.trim_matches('/').is_empty()).then_some(path);
            }
        }
        Command::Verify { name, .. } | Command::Mkdir { name } => {
            *name = col.remote(name, &is_profile)?;
        }
        Command::Rm { names, .. } => {
            for n in names.iter_mut() {
                *n = col.remote(n, &is_profile)?;
            }
        }
        Command::Get {
            names,
            output,
            recursive,
            check,
            ..
        } => {
            if !*recursive && output.is_none() && check.is_none() && names.len() >= 2 {
                let first = remote::parse(&names[0], &is_profile)?;
                let last = remote::parse(&names[names.len() - 1], &is_profile)?;
                if first.is_some() && last.is_none() {
                    *output = names.pop().map(PathBuf::from);
                }
            }
            // with -r only the first word is remote: REMOTE_DIR [LOCAL_DIR]
            let remote_words = if *recursive { 1 } else { names.len() };
            for n in names.iter_mut().take(remote_words) {
                *n = col.remote(n, &is_profile)?;
            }
        }
        Command::Put {
            paths,
            recursive,
            as_name,
            to,
            dest_may_be_dir,
            ..
        } if paths.len() >= 2 => {
            let last = paths.last().and_then(|p| p.to_str()).map(str::to_string);
            if let Some(last) = last
                && let Some(a) = remote::parse(&last, &is_profile)?
            {
                if to.is_some() || as_name.is_some() {
                    return Err(Error::usage(format!(
                        "{} already says where the upload goes; drop --to / --as",
                        crate::names::quote(&last)
                    )));
                }
                col.add(a.target)?;
                paths.pop();
                let dir = a.path.trim_end_matches('/');
                if *recursive {
                    if !dir.is_empty() {
                        paths.push(PathBuf::from(dir));
                    }
                } else if a.path.is_empty() || a.path.ends_with('/') || paths.len() > 1 {
                    *to = (!dir.is_empty()).then(|| dir.to_string());
                } else {
                    // a name, or an existing directory (checked once connected)
                    *as_name = Some(a.path);
                    *dest_may_be_dir = true;
                }
            }
        }
        _ => {}
    }
    cli.conn.target = col.target;
    Ok(())
}

/// Where a setting came from, for `sft config show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    FlagOrEnv,
    Address,
    Profile,
    Default,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::FlagOrEnv => "flag or environment",
            Source::Address => "address on the command line",
            Source::Profile => "profile",
            Source::Default => "default",
        }
    }
}

/// The settings in effect, each with its source.
#[derive(Debug, Clone)]
pub struct Effective {
    pub profile: Option<String>,
    pub config_file: Option<PathBuf>,
    pub server: (Option<String>, Source),
    pub token: (Option<String>, Source),
    pub token_file: (Option<PathBuf>, Source),
    pub pin: (Option<String>, Source),
    pub ca: (Option<PathBuf>, Source),
    pub known_servers: (Option<PathBuf>, Source),
    pub compress: (String, Source),
    pub timeout: (std::time::Duration, Source),
    pub limit_rate: (Option<String>, Source),
}

fn pick<T: Clone>(flag: &Option<T>, prof: Option<&T>) -> (Option<T>, Source) {
    match (flag, prof) {
        (Some(v), _) => (Some(v.clone()), Source::FlagOrEnv),
        (None, Some(v)) => (Some(v.clone()), Source::Profile),
        (None, None) => (None, Source::Default),
    }
}

/// Merge flags and environment (already in `c`, by clap) over the profile.
pub fn effective(c: &ConnArgs) -> Result<Effective> {
    let (path, explicit) = config_path(c);
    let file = match &path {
        Some(p) => ConfigFile::load(p, explicit)?,
        None => ConfigFile::default(),
    };
    let selected = match &c.target {
        None => file.select(c.profile.as_deref())?,
        Some(Target::Profile(n)) => {
            if let Some(asked) = &c.profile
                && asked != n
            {
                return Err(Error::usage(format!(
                    "the address names profile {n} but --profile or SFT_PROFILE says {asked}; give one of them"
                )));
            }
            file.select(Some(n))?
        }
        Some(Target::Host { host, port }) => file.for_host(host, *port, c.profile.as_deref())?,
    };
    let p = selected
        .as_ref()
        .map(|(_, p)| p.clone())
        .unwrap_or_default();
    let server = match &c.target {
        None => pick(&c.server, p.server.as_ref()),
        Some(Target::Host { host, port }) => {
            let port = port
                .or_else(|| {
                    p.server
                        .as_deref()
                        .and_then(|s| crate::client::split_host_port(s).ok())
                        .map(|(_, port)| port)
                })
                .unwrap_or(crate::client::DEFAULT_PORT);
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            (Some(format!("{host}:{port}")), Source::Address)
        }
        // the profile's own server: its pin and token are for that one
        Some(Target::Profile(n)) => match &p.server {
            Some(s) => (Some(s.clone()), Source::Profile),
            None => {
                return Err(Error::usage(format!(
                    "profile {n} names no server; add server = \"HOST:PORT\" to it in the config file"
                )));
            }
        },
    };
    // SFT_PIN, SFT_CA, SFT_TOKEN and SFT_TOKEN_FILE go with SFT_SERVER: when
    // an address names another server, they are not used for it
    let key = |s: &str| crate::client::known::key_for(s).ok();
    let env_for_other = c.target.is_some()
        && c.from_env.iter().any(|x| x == "server")
        && c.server.as_deref().and_then(key) != server.0.as_deref().and_then(key);
    let own = |id: &str, v: &Option<String>| {
        if env_for_other && c.from_env.iter().any(|x| x == id) {
            None
        } else {
            v.clone()
        }
    };
    let own_path = |id: &str, v: &Option<PathBuf>| {
        if env_for_other && c.from_env.iter().any(|x| x == id) {
            None
        } else {
            v.clone()
        }
    };
    let (c_pin, c_ca) = (own("pin", &c.pin), own_path("ca", &c.ca));
    let (c_token, c_token_file) = (
        own("token", &c.token),
        own_path("token_file", &c.token_file),
    );
    // a flag-level trust choice replaces the profile's whole trust choice
    let trust_from_flags = c_pin.is_some() || c_ca.is_some();
    let (pin, ca) = if trust_from_flags {
        (pick(&c_pin, None), pick(&c_ca, None))
    } else {
        (pick(&None, p.pin.as_ref()), pick(&None, p.ca.as_ref()))
    };
    let token_from_flags = c_token.is_some() || c_token_file.is_some();
    let (token, token_file) = if token_from_flags {
        (pick(&c_token, None), pick(&c_token_file, None))
    } else {
        (
            pick(&None, p.token.as_ref()),
            pick(&None, p.token_file.as_ref()),
        )
    };
    if token.0.is_none()
        && token_file.0.is_none()
        && env_for_other
        && c.from_env.iter().any(|x| x == "token" || x == "token_file")
    {
        return Err(Error::usage(format!(
            "no access token for {}: SFT_TOKEN / SFT_TOKEN_FILE belong to SFT_SERVER ({}) and are not sent to another server; pass --token-file FILE, or add a profile for it to the config file",
            server.0.as_deref().unwrap_or("the server"),
            c.server.as_deref().unwrap_or("")
        )));
    }
    let compress = match pick(&c.compress, p.compress.as_ref()) {
        (Some(v), s) => (v, s),
        (None, _) => ("auto".to_string(), Source::Default),
    };
    let timeout = match (&c.timeout, &p.timeout) {
        (Some(t), _) => (*t, Source::FlagOrEnv),
        (None, Some(t)) => (
            humantime::parse_duration(t).map_err(|e| {
                Error::usage(format!("profile timeout {t:?}: {e}; write e.g. \"30s\""))
            })?,
            Source::Profile,
        ),
        (None, None) => (std::time::Duration::from_secs(30), Source::Default),
    };
    Ok(Effective {
        profile: selected.map(|(n, _)| n),
        config_file: path,
        server,
        token,
        token_file,
        pin,
        ca,
        known_servers: pick(&c.known_servers, p.known_servers.as_ref()),
        compress,
        timeout,
        limit_rate: pick(&c.limit_rate, p.limit_rate.as_ref()),
    })
}

/// A secret shown only by its shape.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    let head: String = secret.chars().take(4).collect();
    if n <= 8 {
        format!("*** ({n} characters)")
    } else {
        format!("{head}*** ({n} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_select() {
        let t = r#"
default_profile = "a"
[profiles.a]
server = "a:1"
pin = "ab"
[profiles.b]
server = "b:2"
"#;
        let f = ConfigFile::parse(t, "t").unwrap();
        assert_eq!(
            f.select(None).unwrap().unwrap().1.server.as_deref(),
            Some("a:1")
        );
        assert_eq!(f.select(Some("b")).unwrap().unwrap().0, "b");
        let e = f.select(Some("c")).unwrap_err();
        assert!(e.message.contains("it has: a, b"), "{e}");
        assert!(ConfigFile::parse("[profiles.x]\nsrever = 1", "t").is_err());
        assert!(ConfigFile::default().select(None).unwrap().is_none());
    }

    #[test]
    fn an_address_uses_only_a_profile_for_its_own_server() {
        let t = r#"
default_profile = "a"
[profiles.a]
server = "a.example:1"
token = "ta"
[profiles.b]
server = "B.example:2"
[profiles.c]
server = "b.example:3"
"#;
        let f = ConfigFile::parse(t, "t").unwrap();
        // the default profile is for another host: not used
        assert_eq!(
            f.for_host("b.example", Some(2), None).unwrap().unwrap().0,
            "b"
        );
        assert_eq!(
            f.for_host("b.example", Some(3), None).unwrap().unwrap().0,
            "c"
        );
        assert!(f.for_host("b.example", Some(4), None).unwrap().is_none());
        assert!(f.for_host("elsewhere", None, None).unwrap().is_none());
        // no port in the address: the first profile for that host
        assert_eq!(f.for_host("b.example", None, None).unwrap().unwrap().0, "b");
        assert_eq!(f.for_host("a.example", None, None).unwrap().unwrap().0, "a");
        // a profile asked for must be for that server
        let e = f.for_host("b.example", Some(2), Some("a")).unwrap_err();
        assert!(
            e.message
                .contains("is for server a.example:1, not b.example:2"),
            "{e}"
        );
        assert_eq!(
            f.for_host("b.example", None, Some("c")).unwrap().unwrap().0,
            "c"
        );
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(mask("sft_0123456789"), "sft_*** (14 characters)");
        assert_eq!(mask("short"), "*** (5 characters)");
    }
}
