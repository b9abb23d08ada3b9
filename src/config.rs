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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::ConnArgs;
use crate::error::{Error, Result};

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
            crate::server::state::check_private(path)?;
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

/// Where a setting came from, for `sft config show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    FlagOrEnv,
    Profile,
    Default,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::FlagOrEnv => "flag or environment",
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
    let (path, explicit) = match &c.config {
        Some(p) => (Some(p.clone()), true),
        None => (default_path(), false),
    };
    let file = match &path {
        Some(p) => ConfigFile::load(p, explicit)?,
        None => ConfigFile::default(),
    };
    let selected = file.select(c.profile.as_deref())?;
    let p = selected
        .as_ref()
        .map(|(_, p)| p.clone())
        .unwrap_or_default();
    // a flag-level trust choice replaces the profile's whole trust choice
    let trust_from_flags = c.pin.is_some() || c.ca.is_some();
    let (pin, ca) = if trust_from_flags {
        (pick(&c.pin, None), pick(&c.ca, None))
    } else {
        (pick(&None, p.pin.as_ref()), pick(&None, p.ca.as_ref()))
    };
    let token_from_flags = c.token.is_some() || c.token_file.is_some();
    let (token, token_file) = if token_from_flags {
        (pick(&c.token, None), pick(&c.token_file, None))
    } else {
        (
            pick(&None, p.token.as_ref()),
            pick(&None, p.token_file.as_ref()),
        )
    };
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
        server: pick(&c.server, p.server.as_ref()),
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
    fn secrets_are_masked() {
        assert_eq!(mask("sft_0123456789"), "sft_*** (14 characters)");
        assert_eq!(mask("short"), "*** (5 characters)");
    }
}
