//! `sft serve`: its options into a `server::Config` (root, state directory,
//! token, certificate), and the first lines it prints.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::cli::{FsyncArg, ServeArgs};
use crate::error::{Error, Result};
use crate::private;
use crate::server::{self, auth::Tokens, state, store::Fsync};
use crate::tls;

/// The token `serve` made in its state directory.
struct Generated {
    file: PathBuf,
    /// The token itself, when it may be printed (just made, on a terminal).
    shown: Option<String>,
    /// Made by this start.
    created: bool,
}

/// Make the storage root if it is missing: only its last component, so a
/// mistyped path fails instead of growing a tree of directories.
fn prepare_root(root: &Path) -> Result<()> {
    let shown = root.display();
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::usage(format!(
                "--root {shown} is a file, not a directory; give the directory to serve (it is created if missing)"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::usage(format!(
                "--root {shown}: part of that path is a file, not a directory; check the path"
            )));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("checking root directory {shown}"), &e));
        }
        Err(_) => {}
    }
    match std::fs::create_dir(root) {
        Ok(()) => {
            tracing::info!(root = %shown, "created the root directory");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = private::parent_dir(root);
            Err(Error::usage(format!(
                "--root {shown}: the directory it would be made in, {}, does not exist; check the path, or create it first (mkdir -p {})",
                parent.display(),
                parent.display()
            )))
        }
        // a dangling symlink, or made by someone else meanwhile
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && root.is_dir() => Ok(()),
        Err(e) => Err(Error::io(format!("creating root directory {shown}"), &e)),
    }
}

/// Which addresses the server answers on, for its first lines: an address
/// like 0.0.0.0 means every address of the machine, not only the one the
/// connect line shows.
fn reachable_line(addr: std::net::SocketAddr) -> String {
    let port = addr.port();
    let ip = addr.ip();
    if ip.is_unspecified() {
        let (family, local) = if addr.is_ipv6() {
            (
                "every IPv6 address (and IPv4, unless the system keeps them apart)",
                format!("[::1]:{port}"),
            )
        } else {
            ("every IPv4 address", format!("127.0.0.1:{port}"))
        };
        format!(
            "reachable on: {family} of this machine, port {port} (from this machine: {local}); --listen {local} keeps it to this machine"
        )
    } else if ip.is_loopback() {
        format!("reachable on: {addr} only (this machine)")
    } else {
        format!("reachable on: {addr} only")
    }
}

/// Run `sft serve` until it is stopped.
pub(super) async fn run(a: ServeArgs) -> Result<()> {
    let state_dir = a.state_dir.clone().unwrap_or_else(state::default_dir);
    prepare_root(&a.root)?;
    let needs_state = a.cert.is_none() || (a.token_file.is_none() && a.users.is_none());
    if needs_state {
        state::ensure_dir(&state_dir)?;
        state::check_separate(&a.root, &state_dir)?;
    }
    let (cert, key) = match (&a.cert, &a.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let (c, k) = (state_dir.join("cert.pem"), state_dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                let pem = crate::certs::self_signed(&crate::certs::default_names())?;
                private::write_private(&k, pem.key.as_bytes())?;
                private::write_private(&c, pem.cert.as_bytes())?;
            }
            (c, k)
        }
    };
    let (tokens, generated) = match &a.token_file {
        None if a.users.is_some() => (Tokens::default(), None),
        Some(f) => {
            let t = Tokens::from_lines(&private::read_private(f)?);
            if t.is_empty() {
                return Err(Error::usage(format!(
                    "{} holds no tokens; put one token per line",
                    f.display()
                )));
            }
            (t, None)
        }
        None => {
            let f = state_dir.join("token");
            let created = !f.exists();
            if created {
                private::write_private(
                    &f,
                    format!("{}\n", crate::private::secret_hex(32)?).as_bytes(),
                )?;
            }
            let text = private::read_private(&f)?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            (
                Tokens::from_lines(&text),
                Some(Generated {
                    file: f,
                    // shown once, when it is made, and only to a person: a
                    // service's stdout goes to a log that others may read
                    shown: (created && std::io::stdout().is_terminal()).then_some(token),
                    created,
                }),
            )
        }
    };
    // share links are kept in the state directory (created with the first)
    // (a server that needs no state directory otherwise still serves files
    // when it has none usable: it then makes no share links, and says why)
    let share_dir = if a.web == crate::cli::OnOff::On {
        match state::ensure_dir(&state_dir)
            .and_then(|()| state::check_separate(&a.root, &state_dir))
        {
            Ok(()) => Some(state_dir.clone()),
            Err(e) if a.state_dir.is_none() && !needs_state => {
                tracing::warn!("share links are off: {e}");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let fingerprint = tls::fingerprint(&tls::load_certs(&cert)?[0]);
    let expiry = crate::certs::expiry_note(&cert);
    if let Some((note, true)) = &expiry {
        tracing::warn!("the server certificate {} {note}", cert.display());
    }
    let root_shown = std::fs::canonicalize(&a.root).unwrap_or_else(|_| a.root.clone());
    let banner = {
        let fp = fingerprint.clone();
        let root = root_shown.display().to_string();
        move |addr: std::net::SocketAddr| {
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            let server = if addr.is_ipv6() && !addr.ip().is_unspecified() {
                format!("[{host}]:{}", addr.port())
            } else {
                format!("{host}:{}", addr.port())
            };
            let mut s = format!(
                "{}\nroot: {root}\ncertificate sha256: {fp}\n",
                reachable_line(addr)
            );
            if let Some((note, _)) = &expiry {
                s.push_str(&format!("certificate {note}\n"));
            }
            match &generated {
                Some(Generated {
                    file,
                    shown: Some(token),
                    ..
                }) => {
                    s.push_str(&format!(
                        "token: {token}  (new: shown only this once; kept in {})\n",
                        file.display()
                    ));
                    s.push_str(&format!("connect with:\n  export SFT_SERVER={server} SFT_PIN={fp} SFT_TOKEN={token}\n  sft put FILE && sft ls\n"));
                }
                Some(Generated { file, created, .. }) => {
                    let f = file.display();
                    if *created {
                        s.push_str(&format!(
                            "token: new, kept in {f} (not printed: the output is not a terminal)\n"
                        ));
                    } else {
                        s.push_str(&format!("token: kept in {f} (printed only when it was made; read it with: cat {f})\n"));
                    }
                    s.push_str(&format!("connect with:\n  export SFT_SERVER={server} SFT_PIN={fp} SFT_TOKEN_FILE={f}\n  sft put FILE && sft ls\n"));
                }
                None => s.push_str(&format!(
                    "connect with:\n  sft --server {server} --pin {fp} --token-file FILE ls\n"
                )),
            }
            s
        }
    };
    let limits = server::Limits {
        max_connections: a.max_connections.max(1),
        max_unauthenticated: a.max_unauthenticated.max(1),
        max_unauthenticated_per_address: a.max_unauthenticated_per_address.max(1),
        handshake: a.handshake_timeout,
        auth: a.auth_timeout,
        idle: a.idle_timeout,
        data: a.data_timeout,
        grace: a.grace,
        keep_partial: a.keep_partial,
        memory_budget: a.memory_budget,
    };
    let object = match &a.store {
        Some(url) => {
            let mut loc = server::object::Location::parse(url)?;
            loc.endpoint = a.s3_endpoint.clone();
            loc.region = a.s3_region.clone();
            loc.allow_http = a.s3_allow_http;
            Some(loc)
        }
        None => None,
    };
    server::run(server::Config {
        object,
        gc_grace: a.s3_gc_grace,
        s3_lease: a.s3_lease,
        root: a.root,
        listen: a.listen,
        fsync: match a.fsync {
            FsyncArg::Always => Fsync::Always,
            FsyncArg::Never => Fsync::Never,
        },
        tokens,
        users: a.users.clone(),
        cert,
        key,
        limits,
        quota: server::quota::Limits {
            quota: a.quota,
            max_files: a.max_files,
            min_free: a.min_free,
        },
        compression: a.compression == crate::cli::OnOff::On,
        web: a.web == crate::cli::OnOff::On,
        state_dir: share_dir,
        max_level: a.max_compress_level,
        banner: Some(Box::new(banner)),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn reachable_line_names_every_address_or_the_one() {
        let any: std::net::SocketAddr = "0.0.0.0:7373".parse().unwrap();
        let line = reachable_line(any);
        assert!(line.contains("every IPv4 address"), "{line}");
        assert!(line.contains("127.0.0.1:7373"), "{line}");
        assert!(line.contains("--listen 127.0.0.1:7373"), "{line}");
        let one: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(
            reachable_line(one),
            "reachable on: 127.0.0.1:9000 only (this machine)"
        );
        let v6: std::net::SocketAddr = "[::]:7373".parse().unwrap();
        assert!(reachable_line(v6).contains("every IPv6 address"));
    }
}
