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

/// A server started here (not through tests/common, whose server runs with
/// `--fsync never` and no wrapper): under `--fsync always`, optionally
/// behind a wrapper command such as `prlimit`, with its generated token.
struct Served {
    child: std::process::Child,
    addr: String,
    pin: String,
    token: String,
    root: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Start `sft serve` on `root` (None: a fresh one) behind `wrapper`;
    /// Err with its log if it did not start.
    fn start(
        wrapper: &[&str],
        root: Option<&Path>,
        extra: &[&str],
    ) -> Result<Served, (Option<i32>, String)> {
        let dir = tempfile::tempdir().unwrap();
        let root = root.map_or_else(|| dir.path().join("root"), Path::to_path_buf);
        let state = dir.path().join("state");
        let log = dir.path().join("server.log");
        let mut cmd = match wrapper.split_first() {
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--fsync", "always"])
            .arg("--root")
            .arg(&root)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .env("SFT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("starting the server");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && !lines.iter().any(|l: &String| l.starts_with("connect")) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => lines.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        return Err((st.code(), std::fs::read_to_string(&log).unwrap()));
                    }
                }
                Err(_) => break,
            }
        }
        let Some(addr) = lines.first().and_then(|l| l.strip_prefix("listening on ")) else {
            // its stdout closed: it is exiting (or stuck: then killed here)
            let until = Instant::now() + Duration::from_secs(10);
            let mut code = None;
            while Instant::now() < until {
                if let Ok(Some(st)) = child.try_wait() {
                    code = st.code();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err((code, std::fs::read_to_string(&log).unwrap()));
        };
        let addr = addr.to_string();
        let pin = sft::tls::fingerprint(&sft::tls::load_certs(&state.join("cert.pem")).unwrap()[0]);
        let token = std::fs::read_to_string(state.join("token"))
            .unwrap()
            .trim()
            .to_string();
        Ok(Served {
            child,
            addr,
            pin,
            token,
            root,
            log,
            _dir: dir,
        })
    }

    fn client(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SFT_SERVER", &self.addr)
            .env("SFT_PIN", &self.pin)
            .env("SFT_TOKEN", &self.token)
            .timeout(Duration::from_secs(120));
        c
    }

    /// (used bytes, files) of the "(server)" row of `sft df --bytes`.
    fn usage(&self) -> (u64, u64) {
        let out = self.client().args(["df", "--bytes"]).output().unwrap();
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
        (f[1].parse().unwrap(), f[5].parse().unwrap())
    }

    /// Every regular file under the root (reserved names included), with
    /// its size.
    fn on_disk(&self) -> Vec<(String, u64)> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    walk(base, &e.path(), out);
                } else if ft.is_file() {
                    let name = e
                        .path()
                        .strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.push((name, e.metadata().unwrap().len()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// strace attached to a running server, failing the given syscalls with EIO
/// (`inject` as strace takes it, e.g. "fsync:error=EIO:when=2+"). Detaches
/// when the server ends. A missing strace fails the test: CI installs it.
struct Faults(std::process::Child);

impl Faults {
    fn inject(pid: u32, injections: &[&str]) -> Faults {
        let mut cmd = Command::new("strace");
        // strace injects only into the calls it traces
        let traced: Vec<&str> = injections
            .iter()
            .map(|i| i.split(':').next().unwrap())
            .collect();
        cmd.args(["-f", "-o", "/dev/null", "-e"])
            .arg(format!("trace={}", traced.join(",")));
        for i in injections {
            cmd.args(["-e", &format!("inject={i}")]);
        }
        let mut child = cmd
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace is needed for fault injection: apt-get install strace");
        // it says "Process N attached with M threads" once it holds them all
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("strace attached to the server");
        assert!(line.contains("attached"), "strace: {line}");
        Faults(child)
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_upload_whose_directory_sync_fails_is_reported_failed_and_is_not_visible_or_counted() {
    let s = Served::start(&[], None, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    let d = tempfile::tempdir().unwrap();
    let kept = d.path().join("kept");
    std::fs::write(&kept, noise(300_000, 9)).unwrap();
    let old = d.path().join("doc");
    std::fs::write(&old, b"the old version").unwrap();
    for f in [&kept, &old] {
        s.client().arg("put").arg(f).assert().success();
    }
    let before = s.on_disk();
    assert_eq!(s.usage(), (300_000 + 15, 2));

    // every directory fsync (one upload) and every syncfs after the first
    // (a batch's names; later batches' data) now fails with EIO
    let _f = Faults::inject(
        s.child.id(),
        &["fsync:error=EIO", "syncfs:error=EIO:when=2+"],
    );
    // one large file
    let big = d.path().join("big");
    std::fs::write(&big, noise(5_000_000, 1)).unwrap();
    let a = s.client().arg("put").arg(&big).assert().failure();
    assert_eq!(s.on_disk(), before, "reported failed, so not visible");
    assert_eq!(s.usage(), (300_000 + 15, 2));
    assert!(
        stderr_text(&a).contains("nothing was stored"),
        "{}",
        stderr_text(&a)
    );
    // a batch of eight small ones, pipelined
    let mut batch = Vec::new();
    for i in 0..8 {
        let p = d.path().join(format!("small{i}"));
        std::fs::write(&p, noise(1000 + i, i as u64)).unwrap();
        batch.push(p);
    }
    let a = s.client().arg("put").args(&batch).assert().failure();
    let err = stderr_text(&a);
    assert!(err.contains("8 of 8 uploads failed"), "{err}");
    // an overwrite: the old version must come back
    let new = d.path().join("new");
    std::fs::write(&new, b"the new version, longer").unwrap();
    let a = s
        .client()
        .args(["put", "--overwrite", "--as", "doc"])
        .arg(&new)
        .assert()
        .failure();
    assert!(
        stderr_text(&a).contains("nothing was stored"),
        "{}",
        stderr_text(&a)
    );

    // the client's answers, what is visible and the ledger agree
    assert_eq!(
        s.on_disk(),
        before,
        "nothing published, nothing left behind"
    );
    assert_eq!(
        std::fs::read(s.root.join("doc")).unwrap(),
        b"the old version"
    );
    assert_eq!(s.usage(), (300_000 + 15, 2));
    let a = s.client().arg("ls").assert().success();
    assert_eq!(stdout_text(&a).lines().count(), 2, "{}", stdout_text(&a));
    let log = s.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("Input/output error")),
        "an I/O error is logged at WARN: {log}"
    );
}

#[test]
fn a_read_only_filesystem_is_reported_as_such_and_logged_at_warn() {
    let s = Served::start(&[], None, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    std::fs::write(&f, b"data").unwrap();
    // creating the upload's file (openat with O_CREAT) fails as on a
    // read-only mount; directories are opened with openat2, unaffected
    let _faults = Faults::inject(s.child.id(), &["openat:error=EROFS"]);
    let a = s.client().arg("put").arg(&f).assert().failure();
    let err = stderr_text(&a);
    assert_eq!(a.get_output().status.code(), Some(1), "{err}");
    assert!(err.contains("read-only filesystem"), "{err}");
    assert!(!err.contains("permission"), "{err}");
    assert!(s.on_disk().is_empty());
    let log = s.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("read-only filesystem")),
        "{log}"
    );
}

/// A root of `dirs` directories, each holding one 1000-byte file placed by
/// hand and a leftover temporary file of a crashed upload.
fn wide_root(dirs: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for i in 0..dirs {
        let sub = d.path().join(format!("d{i:04}"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), noise(1000, i as u64)).unwrap();
        std::fs::write(sub.join(".sft-tmp-0123456789abcdef"), b"left over").unwrap();
    }
    d
}

#[test]
fn usage_is_rebuilt_exactly_with_few_descriptors_and_leftovers_are_all_swept() {
    let root = wide_root(300);
    let s = Served::start(&["prlimit", "--nofile=64:64", "--"], Some(root.path()), &[])
        .unwrap_or_else(|e| panic!("the server did not start under 64 descriptors: {e:?}"));
    assert_eq!(s.usage(), (300 * 1000, 300), "every file counted");
    let left: Vec<_> = s
        .on_disk()
        .into_iter()
        .filter(|(n, _)| n.contains(".sft-tmp-"))
        .collect();
    assert!(left.is_empty(), "{} leftovers not swept", left.len());
    // and it works: a fresh upload is counted on top
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("one");
    std::fs::write(&f, b"12345").unwrap();
    s.client().arg("put").arg(&f).assert().success();
    assert_eq!(s.usage(), (300 * 1000 + 5, 301));
}

#[test]
fn a_server_that_cannot_count_its_usage_refuses_to_start_and_says_why() {
    let root = wide_root(3);
    // every getdents64 fails: the root cannot be read
    let r = Served::start(
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=getdents64",
            "-e",
            "inject=getdents64:error=EIO",
            "--",
        ],
        Some(root.path()),
        &[],
    );
    let Err((code, log)) = r else {
        panic!("the server started with a usage it could not count");
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(
            "sft: error: cannot count storage usage: reading directory the root: Input/output error"
        ),
        "{log}"
    );
}

/// Directories making a remote parent of exactly `len` bytes.
fn parent_of(len: usize) -> String {
    let mut p = String::new();
    let mut i = 0u8;
    while p.len() < len {
        if !p.is_empty() {
            p.push('/');
        }
        let take = (len - p.len()).min(255);
        p.push_str(&((b'a' + i % 26) as char).to_string().repeat(take));
        i += 1;
    }
    p
}

#[test]
fn names_of_4096_bytes_and_their_numbered_copies_stay_reachable() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let last = "report-26.pdf";
    let parent = parent_of(4096 - 1 - last.len());
    let name = format!("{parent}/{last}");
    assert_eq!(name.len(), 4096, "the longest name the rules allow");
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::write(&a, noise(5000, 1)).unwrap();
    std::fs::write(&b, noise(7000, 2)).unwrap();
    for f in [&a, &b] {
        s.client()
            .arg("put")
            .arg(f)
            .args(["--as", &name])
            .assert()
            .success();
    }
    // both stored in the same directory, the copy numbered within 4096 bytes
    let out = s.client().args(["ls", &parent]).assert().success();
    let listed = stdout_text(&out);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // (the root's own path plus 4096 bytes is too long to look at locally)
    let out = s.client().args(["sums", &parent]).assert().success();
    let mut stored: Vec<String> = stdout_text(&out)
        .lines()
        .map(|l| {
            l.split_once("  ")
                .unwrap()
                .1
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    stored.sort();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.contains(&last.to_string()));
    let copy = stored.iter().find(|n| *n != last).unwrap();
    let copy_name = format!("{parent}/{copy}");
    assert!(copy_name.len() <= 4096, "{} bytes", copy_name.len());
    assert!(copy.ends_with(" (1).pdf"), "{copy}");

    // each can be fetched, checked and removed
    for (remote, local) in [(&name, &a), (&copy_name, &b)] {
        let got = d.path().join("got");
        let _ = std::fs::remove_file(&got);
        s.client()
            .args(["get", remote.as_str(), "-o"])
            .arg(&got)
            .assert()
            .success();
        assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(local).unwrap());
    }
    let top = parent.split('/').next().unwrap();
    let out = s.client().args(["sums", top]).assert().success();
    let sums = stdout_text(&out);
    assert_eq!(sums.lines().count(), 2, "{sums}");
    assert!(
        sums.contains(&sha256_hex(&std::fs::read(&a).unwrap())),
        "{sums}"
    );
    assert!(
        sums.contains(&sha256_hex(&std::fs::read(&b).unwrap())),
        "{sums}"
    );
    let into = d.path().join("tree");
    s.client()
        .args(["get", "-r", &parent])
        .arg(&into)
        .assert()
        .success();
    let mut local = Vec::new();
    for e in walkdir_files(&into) {
        local.push(std::fs::read(e).unwrap());
    }
    local.sort();
    let mut want = vec![std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()];
    want.sort();
    assert_eq!(local, want);
    s.client()
        .args(["rm", name.as_str(), copy_name.as_str()])
        .assert()
        .success();
    let out = s.client().arg("sums").assert().success();
    assert_eq!(stdout_text(&out), "", "no file left");
    assert_eq!(server_usage(&s), (0, 0, 0));
}

fn walkdir_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn an_upload_that_cannot_be_taken_back_after_a_failed_sync_is_reported_stored_and_counted() {
    let s = Served::start(&[], None, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big");
    std::fs::write(&big, noise(2_000_000, 3)).unwrap();
    // the directory sync fails, and so does the rename that would take the
    // upload back (the second renameat2; the first published it)
    let _f = Faults::inject(
        s.child.id(),
        &["fsync:error=EIO", "renameat2:error=EIO:when=2"],
    );
    let a = s.client().arg("put").arg(&big).assert().success();
    assert!(stdout_text(&a).contains("big"), "{}", stdout_text(&a));
    // told stored: visible, whole, and counted
    assert_eq!(s.on_disk(), [("big".to_string(), 2_000_000)]);
    assert_eq!(
        std::fs::read(s.root.join("big")).unwrap(),
        std::fs::read(&big).unwrap()
    );
    assert_eq!(s.usage(), (2_000_000, 1));
    let log = s.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("could not be taken back")),
        "{log}"
    );
}

/// `sft cert ca` issues a signed revocation list beside the CA, `sft cert
/// crl` renews it, and `--crl-url` names it in server certificates (auditors
/// such as testssl.sh want revocation information): checked with openssl.
#[test]
fn the_ca_issues_a_revocation_list_and_server_certificates_name_it() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openssl missing"
        );
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let ca_dir = d.path().join("ca");
    let ca_s = ca_dir.to_str().unwrap();
    assert!(sft(&["cert", "ca", "--out", ca_s]).status.success());
    let url = "https://files.example.com:7373/ca.crl";
    let out = sft(&[
        "cert",
        "server",
        "--ca",
        ca_s,
        "--name",
        "files.example.com",
        "--crl-url",
        url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let openssl = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&ca_dir)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let crl = openssl(&[
        "crl", "-in", "ca.crl", "-CAfile", "ca.pem", "-noout", "-text",
    ]);
    assert!(crl.contains("verify OK"), "{crl}");
    assert!(crl.contains("No Revoked Certificates"), "{crl}");
    let leaf = openssl(&[
        "x509",
        "-in",
        "server.pem",
        "-noout",
        "-ext",
        "crlDistributionPoints",
    ]);
    assert!(leaf.contains(url), "{leaf}");
    // renewing the list replaces it with a newer one
    let before = std::fs::read(ca_dir.join("ca.crl")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(
        sft(&["cert", "crl", "--ca", ca_s, "--days", "7"])
            .status
            .success()
    );
    assert_ne!(std::fs::read(ca_dir.join("ca.crl")).unwrap(), before);
    let crl = openssl(&["crl", "-in", "ca.crl", "-CAfile", "ca.pem", "-noout"]);
    assert!(crl.contains("verify OK"), "{crl}");
    // a URL that is not http(s) is a usage error, nothing written
    let bad = sft(&[
        "cert",
        "server",
        "--ca",
        ca_s,
        "--name",
        "x.example",
        "--crl-url",
        "ldap://x",
        "--out",
        d.path().to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(!d.path().join("server.pem").exists());
}
