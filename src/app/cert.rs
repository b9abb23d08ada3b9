//! `sft cert`: a CA, server certificates it signs, and self-signed ones,
//! made with rcgen. Keys are written 0600 and never printed.

use std::path::{Path, PathBuf};

use crate::certs::{self, Pem};
use crate::cli::CertCmd;
use crate::error::{Error, Result};
use crate::tls;

/// Write a file with `mode`; an existing one is replaced only with `force`
/// (atomically, through a temporary file).
fn write_file(path: &Path, contents: &str, mode: u32, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::usage(format!(
            "{} already exists; use --force to replace it",
            path.display()
        )));
    }
    crate::private::write_atomic(path, contents.as_bytes(), mode)
}

fn make_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), &e))
}

/// Write NAME.pem and NAME.key into `dir`; both are checked before either is written.
fn write_pair(dir: &Path, stem: &str, pem: &Pem, force: bool) -> Result<(PathBuf, PathBuf)> {
    make_dir(dir)?;
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    for p in [&cert, &key] {
        if p.exists() && !force {
            return Err(Error::usage(format!(
                "{} already exists; use --force to replace it",
                p.display()
            )));
        }
    }
    write_file(&key, &pem.key, 0o600, force)?;
    write_file(&cert, &pem.cert, 0o644, force)?;
    Ok((cert, key))
}

fn fingerprint(pem: &Pem) -> Result<String> {
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.cert.as_bytes())
        .map_err(|e| Error::other(format!("reading the new certificate: {e}")))?;
    Ok(tls::fingerprint(&der))
}

use rustls::pki_types::pem::PemObject;

/// The CA's certificate and key: `--ca` names the directory holding
/// ca.pem and ca.key, or the ca.pem file itself (its key beside it, .key).
fn load_ca(ca: &Path) -> Result<(Pem, PathBuf)> {
    let (cert, key) = if ca.is_dir() {
        (ca.join("ca.pem"), ca.join("ca.key"))
    } else {
        (ca.to_path_buf(), ca.with_extension("key"))
    };
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            Error::io(format!("reading {}", p.display()), &e)
                .context("make a CA first with: sft cert ca --out DIR")
        })
    };
    let cert_text = read(&cert)?;
    crate::private::check_private(&key)?;
    let key_text = read(&key)?;
    let dir = cert
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((
        Pem {
            cert: cert_text,
            key: key_text,
        },
        dir,
    ))
}

fn san_list(names: &[String], ips: &[std::net::IpAddr]) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for n in names {
        let n = n.trim();
        if n.is_empty()
            || n.parse::<std::net::IpAddr>().is_ok()
            || rustls::pki_types::DnsName::try_from(n).is_err()
        {
            return Err(Error::usage(format!(
                "invalid --name {:?}: give a DNS name such as files.example.com (IP addresses go in --ip)",
                crate::names::escape(n)
            )));
        }
        v.push(n.to_ascii_lowercase());
    }
    v.extend(ips.iter().map(|ip| ip.to_string()));
    Ok(v)
}

fn report(what: &str, cert: &Path, key: &Path, fp: &str) -> Result<()> {
    super::out(&format!(
        "{what}: {}\nprivate key (0600, keep secret): {}\ncertificate sha256: {fp}",
        cert.display(),
        key.display()
    ))
}

pub fn command(cmd: CertCmd) -> Result<()> {
    match cmd {
        CertCmd::Ca {
            out,
            cn,
            days,
            force,
        } => {
            let pem = certs::ca_for(&cn, certs::check_days(days)?)?;
            let (cert, key) = write_pair(&out, "ca", &pem, force)?;
            report("CA certificate", &cert, &key, &fingerprint(&pem)?)?;
            let crl = out.join("ca.crl");
            write_file(&crl, &certs::crl(&pem, 30)?, 0o644, force)?;
            super::out(&format!(
                "revocation list: {} (valid 30 days; renew with sft cert crl --ca {})",
                crl.display(),
                out.display()
            ))?;
            super::out(&format!(
                "next: sft cert server --ca {} --name HOST [--ip ADDR]; clients trust it with --ca {}",
                out.display(),
                cert.display()
            ))
        }
        CertCmd::Server {
            ca,
            names,
            ips,
            out,
            days,
            crl_url,
            force,
        } => {
            let days = certs::check_days(days)?;
            let sans = san_list(&names, &ips)?;
            if sans.is_empty() {
                return Err(Error::usage(
                    "name the server: --name DNS and/or --ip ADDR (what clients will connect to)",
                ));
            }
            let bad_url = |u: &str| {
                !(u.starts_with("http://") || u.starts_with("https://"))
                    || u.chars().any(|c| c.is_whitespace() || c.is_control())
            };
            if crl_url.as_deref().is_some_and(bad_url) {
                return Err(Error::usage(
                    "--crl-url takes an http:// or https:// URL where ca.crl is published",
                ));
            }
            let (ca_pem, ca_dir) = load_ca(&ca)?;
            let pem = certs::signed_by_with(&ca_pem, &sans, days, crl_url.as_deref())?;
            let out = out.unwrap_or(ca_dir);
            let (cert, key) = write_pair(&out, "server", &pem, force)?;
            report("server certificate", &cert, &key, &fingerprint(&pem)?)?;
            super::out(&format!(
                "serve with: sft serve --cert {} --key {}",
                cert.display(),
                key.display()
            ))
        }
        CertCmd::Crl { ca, days } => {
            let (ca_pem, ca_dir) = load_ca(&ca)?;
            let crl = ca_dir.join("ca.crl");
            write_file(&crl, &certs::crl(&ca_pem, days)?, 0o644, true)?;
            super::out(&format!(
                "revocation list: {} (nothing revoked; valid {days} days)",
                crl.display()
            ))
        }
        CertCmd::SelfSigned {
            names,
            ips,
            out,
            days,
            force,
        } => {
            let days = certs::check_days(days)?;
            let mut sans = san_list(&names, &ips)?;
            if sans.is_empty() {
                sans = certs::default_names();
            }
            let pem = certs::self_signed_for(&sans, days)?;
            let (cert, key) = write_pair(&out, "server", &pem, force)?;
            let fp = fingerprint(&pem)?;
            report("self-signed certificate", &cert, &key, &fp)?;
            super::out(&format!(
                "serve with: sft serve --cert {} --key {}\nclients: --pin {fp}",
                cert.display(),
                key.display()
            ))
        }
    }
}
