//! How the client decides to trust a server (--pin, --ca, or known_servers
//! with a first-use decision), and `sft trust`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{ConnArgs, TrustArgs};
use crate::client::{self, known};
use crate::error::{Error, Kind, Result};
use crate::tls::{self, Trust};

/// The known-servers file in effect.
pub fn known_file(explicit: Option<PathBuf>) -> Result<PathBuf> {
    explicit.or_else(known::default_path).ok_or_else(|| {
        Error::usage(
            "no way to verify the server: pass --pin SHA256 (printed by 'sft serve') or --ca FILE, set SFT_PIN / SFT_CA, or give a known-servers file with --known-servers",
        )
    })
}

/// The trust for connecting to `server`.
pub fn resolve(
    pin: Option<&str>,
    ca: Option<&Path>,
    known_servers: Option<PathBuf>,
    tofu: bool,
    server: &str,
) -> Result<Trust> {
    match (pin, ca) {
        (Some(_), Some(_)) => Err(Error::usage("give either --pin or --ca, not both")),
        (Some(p), None) => Ok(Trust::Pin(tls::parse_pin(p)?)),
        (None, Some(ca)) => Ok(Trust::Ca(ca.to_path_buf())),
        (None, None) => {
            let file = known_file(known_servers)?;
            let key = known::key_for(server)?;
            match known::lookup(&file, &key)? {
                Some(pin) => Ok(Trust::Known { pin, file }),
                None => Ok(Trust::FirstUse(Arc::new(move |fp: &str| {
                    first_use(&file, &key, fp, tofu)
                }))),
            }
        }
    }
}

fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Ask on the terminal; true for yes.
pub(crate) fn ask(question: &str) -> bool {
    eprint!("{question} (yes/no)? ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "yes" | "y")
}

/// A server not in known_servers: record it (--trust-on-first-use or a yes
/// on the terminal) or fail with the command that trusts it.
fn first_use(file: &Path, key: &str, fp: &str, tofu: bool) -> Result<()> {
    let pin = tls::parse_pin(fp)?;
    if tofu {
        known::add(file, key, pin, false)?;
        eprintln!(
            "sft: trusting {key} on first use: certificate sha256:{fp} (recorded in {})",
            file.display()
        );
        return Ok(());
    }
    if interactive() {
        eprintln!(
            "The authenticity of server {key} can't be established.\nIts certificate SHA-256 fingerprint is {fp}.\nCompare it with the fingerprint 'sft serve' printed."
        );
        if ask("Trust this server and continue") {
            known::add(file, key, pin, false)?;
            eprintln!("sft: {key} added to {}", file.display());
            return Ok(());
        }
        return Err(Error::new(
            Kind::Tls,
            format!("server {key} not trusted; nothing was sent"),
        ));
    }
    Err(Error::new(
        Kind::Tls,
        format!(
            "server {key} is not known (not in {}); its certificate SHA-256 is {fp}. If that matches the fingerprint 'sft serve' printed, trust it with: sft trust {key} --pin {fp}  (or pass --trust-on-first-use)",
            file.display()
        ),
    ))
}

/// `sft trust`.
pub async fn command(c: &ConnArgs, a: TrustArgs) -> Result<()> {
    let file = known_file(c.known_servers.clone())?;
    if a.list {
        for k in known::load(&file)? {
            super::out(&format!("{} sha256:{}", k.key, hex::encode(k.pin)))?;
        }
        return Ok(());
    }
    let server = a.host.clone().or_else(|| c.server.clone()).ok_or_else(|| {
        Error::usage("which server? give HOST:PORT (or set --server / SFT_SERVER)")
    })?;
    let key = known::key_for(&server)?;
    if a.remove {
        return if known::remove(&file, &key)? {
            eprintln!("sft: {key} removed from {}", file.display());
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "{key} is not in {}; see sft trust --list",
                file.display()
            )))
        };
    }
    let pin = match &c.pin {
        Some(p) => tls::parse_pin(p)?,
        None => {
            let fp = client::fingerprint_of(
                &server,
                c.timeout.unwrap_or(std::time::Duration::from_secs(30)),
            )
            .await?;
            if !interactive() {
                return Err(Error::usage(format!(
                    "{key} presents certificate SHA-256 {fp}; to trust it without a terminal, confirm that fingerprint out of band and run: sft trust {key} --pin {fp}"
                )));
            }
            eprintln!("Server {key} presents certificate SHA-256 {fp}.");
            if !ask("Trust it") {
                return Err(Error::new(Kind::Tls, format!("{key} not trusted")));
            }
            tls::parse_pin(&fp)?
        }
    };
    match known::add(&file, &key, pin, a.replace)? {
        known::Added::New => eprintln!("sft: {key} trusted (recorded in {})", file.display()),
        known::Added::Unchanged => {
            eprintln!("sft: {key} was already trusted with this fingerprint")
        }
        known::Added::Replaced(old) => eprintln!(
            "sft: {key}: fingerprint sha256:{} replaced by sha256:{}",
            hex::encode(old),
            hex::encode(pin)
        ),
    }
    Ok(())
}
