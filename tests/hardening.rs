//! Defects found by an outside audit (issue 13), each proved through the
//! real binary: certificate lifetimes and extensions, names at the length
//! limit, streams that fit what is left, usage rebuilt with few descriptors,
//! and uploads whose directory sync fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use x509_parser::extensions::ParsedExtension;

const DAY: i64 = 86_400;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What an auditor checks in a certificate.
struct CertFacts {
    days: i64,
    starts_ago: i64,
    ca: bool,
    digital_signature: bool,
    key_cert_sign: bool,
    server_auth: bool,
    ski: Option<Vec<u8>>,
    aki: Option<Vec<u8>>,
}

fn facts(pem_path: &Path) -> CertFacts {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(pem_path).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let v = cert.validity();
    let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
    let mut f = CertFacts {
        days: (na - nb) / DAY,
        starts_ago: now() - nb,
        ca: cert
            .basic_constraints()
            .unwrap()
            .expect("basicConstraints present")
            .value
            .ca,
        digital_signature: false,
        key_cert_sign: false,
        server_auth: false,
        ski: None,
        aki: None,
    };
    let ku = cert.key_usage().unwrap().expect("keyUsage present");
    f.digital_signature = ku.value.digital_signature();
    f.key_cert_sign = ku.value.key_cert_sign();
    if let Some(eku) = cert.extended_key_usage().unwrap() {
        f.server_auth = eku.value.server_auth;
    }
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => f.ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                f.aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    f
}

fn sft(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

#[test]
fn sft_cert_makes_certificates_with_bounded_lifetimes_and_standard_extensions() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let ca_dir = format!("{dir}/ca");
    assert!(sft(&["cert", "ca", "--out", &ca_dir]).status.success());
    let out = sft(&[
        "cert",
        "server",
        "--ca",
        &ca_dir,
        "--name",
        "files.example.com",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ss_dir = format!("{dir}/ss");
    let out = sft(&["cert", "self-signed", "--out", &ss_dir, "--days", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ca = facts(&Path::new(&ca_dir).join("ca.pem"));
    assert_eq!(ca.days, 3650, "a CA lives ten years");
    assert!(ca.ca && ca.key_cert_sign);
    assert!(
        ca.ski.is_some() && ca.aki == ca.ski,
        "a CA names its own key"
    );

    let leaf = facts(&Path::new(&ca_dir).join("server.pem"));
    assert!(
        leaf.days <= 397,
        "server certificate for {} days",
        leaf.days
    );
    assert!(
        leaf.days >= 390,
        "server certificate for {} days",
        leaf.days
    );
    assert!(
        (0..2 * 3600).contains(&leaf.starts_ago),
        "valid from about now"
    );
    assert!(!leaf.ca && leaf.digital_signature && !leaf.key_cert_sign);
    assert!(leaf.server_auth, "extendedKeyUsage serverAuth");
    assert!(leaf.ski.is_some(), "subject key identifier");
    assert_eq!(leaf.aki, ca.ski, "authority key identifier is the CA's key");

    let ss = facts(&Path::new(&ss_dir).join("server.pem"));
    assert_eq!(ss.days, 30, "--days chooses the lifetime");
    assert!(!ss.ca && ss.server_auth && ss.ski.is_some() && ss.aki == ss.ski);

    // out-of-range lifetimes are refused as usage errors, nothing written
    for bad in ["0", "3651"] {
        let out = sft(&[
            "cert",
            "self-signed",
            "--out",
            &format!("{dir}/bad"),
            "--days",
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("from 1 to 3650 days"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!Path::new(&format!("{dir}/bad/server.pem")).exists());
    }
}

#[test]
fn the_first_start_certificate_is_bounded_and_serve_says_when_it_expires() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--fsync", "never"])
        .arg("--root")
        .arg(d.path().join("root"))
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while Instant::now() < until && !lines.iter().any(|l: &String| l.starts_with("connect")) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => lines.push(l),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines[0].starts_with("listening on "), "{lines:?}");
    let f = facts(&state.join("cert.pem"));
    assert!((390..=397).contains(&f.days), "{} days", f.days);
    assert!(!f.ca && f.server_auth && f.ski.is_some() && f.aki == f.ski);
    let expiry = lines
        .iter()
        .find(|l| l.starts_with("certificate expires on "))
        .unwrap_or_else(|| panic!("no expiry line in {lines:?}"));
    assert!(
        expiry.ends_with(&format!("(in {} days)", f.days - 1))
            || expiry.ends_with(&format!("(in {} days)", f.days)),
        "{expiry}"
    );
}

/// The "(server)" row of `sft df --bytes`: (used, reserved, files).
fn server_usage(s: &Server) -> (u64, u64, u64) {
    let out = s.client().args(["df", "--bytes"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("(server)"))
        .unwrap_or_else(|| panic!("no (server) row in {text}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[5].parse().unwrap(),
    )
}

/// `sft put - --as NAME` with `data` on standard input.
fn put_stdin(s: &Server, name: &str, data: &[u8]) -> std::process::Output {
    s.client()
        .args(["put", "-", "--as", name])
        .write_stdin(data.to_vec())
        .output()
        .unwrap()
}

#[test]
fn a_stream_from_stdin_uses_what_is_left_and_is_refused_only_when_its_data_does_not_fit() {
    const MIB: usize = 1 << 20;
    let s = Server::start_args(&["--quota", "1MiB"]);
    let out = put_stdin(&s, "tiny", b"hi\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(s.root.join("tiny")).unwrap(), b"hi\n");
    assert_eq!(server_usage(&s), (3, 0, 1));

    // 2 MiB do not fit: refused once the data passes the quota, nothing kept
    let out = put_stdin(&s, "big", &noise(2 * MIB, 1));
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("quota exceeded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.files(),
        ["tiny"],
        "nothing left behind, not even a temporary file"
    );
    assert_eq!(server_usage(&s), (3, 0, 1), "the ledger is intact");

    // exactly what is left fits
    let rest = noise(MIB - 3, 2);
    let out = put_stdin(&s, "rest", &rest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(s.root.join("rest")).unwrap(), rest);
    assert_eq!(server_usage(&s), (MIB as u64, 0, 2));
    // and now even one byte is refused
    let out = put_stdin(&s, "one", b"x");
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.files(), ["rest", "tiny"]);
    assert_eq!(server_usage(&s), (MIB as u64, 0, 2));
}
