//! Server identity as SSH users expect it (known_servers, first use, changed
//! certificates) and certificates made with `sft cert`, through the real
//! binary over TLS on loopback.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// A client that verifies through a known-servers file only (no pin, no CA).
fn via_known(s: &Server, known: &Path) -> assert_cmd::Command {
    let mut c = s.client();
    c.env_remove("SFT_PIN").env("SFT_KNOWN_SERVERS", known);
    c
}

#[test]
fn an_unknown_server_without_a_terminal_fails_with_the_command_to_trust_it() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let known = d.path().join("known_servers");
    let a = via_known(&s, &known).arg("ls").assert().code(4);
    let msg = stderr_text(&a);
    assert_eq!(msg.lines().count(), 1, "{msg}");
    let want = format!("sft trust {} --pin {}", s.addr, s.pin);
    assert!(msg.contains(&want), "{msg}");
    assert!(msg.contains("--trust-on-first-use"), "{msg}");
    assert!(!known.exists(), "nothing recorded without consent");
    // the token never went to the unverified server
    assert!(!s.log_text().contains("authenticated"));

    // following the instruction works
    let mut trust = s.client();
    trust
        .env_remove("SFT_PIN")
        .env("SFT_KNOWN_SERVERS", &known)
        .args(["trust", &s.addr, "--pin", &s.pin])
        .assert()
        .success();
    via_known(&s, &known).arg("ls").assert().success();
}

#[test]
fn trust_on_first_use_records_the_server_for_next_time() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let known = d.path().join("cfg/sft/known_servers");
    let a = via_known(&s, &known)
        .args(["--trust-on-first-use", "ls"])
        .assert()
        .success();
    assert!(stderr_text(&a).contains(&s.pin));
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(
        text.contains(&format!("{} sha256:{}", s.addr, s.pin)),
        "{text}"
    );
    let mode = std::fs::metadata(&known).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // next time, no flag needed
    via_known(&s, &known).arg("ls").assert().success();
    // the default file lives under the user's config directory
    let home = tempfile::tempdir().unwrap();
    let mut c = s.client();
    c.env_remove("SFT_PIN")
        .env("HOME", home.path())
        .args(["--trust-on-first-use", "ls"])
        .assert()
        .success();
    assert!(home.path().join(".config/sft/known_servers").exists());
}

#[test]
fn a_changed_certificate_is_a_hard_failure() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let known = d.path().join("known_servers");
    let old = "ab".repeat(32);
    let mut c = s.client();
    c.env("SFT_KNOWN_SERVERS", &known)
        .args(["trust", &s.addr, "--pin", &old])
        .assert()
        .success();
    // even with --trust-on-first-use: the server is known, and it changed
    let a = via_known(&s, &known)
        .args(["--trust-on-first-use", "ls"])
        .assert()
        .code(4);
    let msg = stderr_text(&a);
    assert!(msg.contains("SERVER IDENTITY HAS CHANGED"), "{msg}");
    assert!(msg.contains(&old) && msg.contains(&s.pin), "{msg}");
    assert!(msg.contains("--replace"), "{msg}");
    assert!(!s.log_text().contains("authenticated"));
    // the file is not touched
    assert!(std::fs::read_to_string(&known).unwrap().contains(&old));
    // `sft trust` refuses to overwrite silently, accepts --replace
    let mut c = s.client();
    c.env("SFT_KNOWN_SERVERS", &known)
        .args(["trust", &s.addr, "--pin", &s.pin])
        .assert()
        .code(2);
    let mut c = s.client();
    c.env("SFT_KNOWN_SERVERS", &known)
        .args(["trust", &s.addr, "--pin", &s.pin, "--replace"])
        .assert()
        .success();
    via_known(&s, &known).arg("ls").assert().success();
}

#[test]
fn sft_trust_lists_removes_and_shows_the_fingerprint() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let known = d.path().join("known_servers");
    let run = |args: &[&str]| {
        let mut c = s.client();
        c.env_remove("SFT_PIN")
            .env("SFT_KNOWN_SERVERS", &known)
            .args(args);
        c.assert()
    };
    // without --pin and without a terminal: the fingerprint and the command
    let a = run(&["trust", &s.addr]).code(2);
    assert!(
        stderr_text(&a).contains(&format!("sft trust {} --pin {}", s.addr, s.pin)),
        "{}",
        stderr_text(&a)
    );
    run(&["trust", &s.addr, "--pin", &s.pin]).success();
    run(&["trust", "files.example.com:7373", "--pin", &"cd".repeat(32)]).success();
    let list = stdout_text(&run(&["trust", "--list"]).success());
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(&s.pin) && list.contains("files.example.com:7373"));
    run(&["trust", "--remove", "FILES.example.com:7373"]).success();
    run(&["trust", "--remove", "files.example.com:7373"]).code(6);
    let list = stdout_text(&run(&["trust", "--list"]).success());
    assert_eq!(list.lines().count(), 1, "{list}");
    run(&["trust", &s.addr, "--pin", "nothex"]).code(2);
}

fn sft(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap()
}

fn read_pem(dir: &Path, stem: &str) -> sft::certs::Pem {
    sft::certs::Pem {
        cert: std::fs::read_to_string(dir.join(format!("{stem}.pem"))).unwrap(),
        key: std::fs::read_to_string(dir.join(format!("{stem}.key"))).unwrap(),
    }
}

#[test]
fn sft_cert_makes_a_ca_and_server_certificates_that_clients_verify_by_name() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    let c = certs.to_str().unwrap();
    let out = sft(&["cert", "ca", "--out", c]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sft(&[
        "cert",
        "server",
        "--ca",
        c,
        "--name",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(certs.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    // keys are never printed
    let server = read_pem(&certs, "server");
    let key_body = server.key.lines().nth(1).unwrap();
    assert!(!printed.contains(key_body));
    // nothing is overwritten without --force
    let again = sft(&["cert", "ca", "--out", c]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let s = Server::start_with(Opts {
        pem: Some(server),
        ..Default::default()
    });
    let port = s.addr.rsplit_once(':').unwrap().1.to_string();
    let ca_pem = certs.join("ca.pem");
    // by IP and by DNS name, both in the certificate
    for server in [s.addr.clone(), format!("localhost:{port}")] {
        let mut cl = s.client();
        cl.env_remove("SFT_PIN")
            .env("SFT_SERVER", &server)
            .arg("--ca")
            .arg(&ca_pem)
            .arg("ls")
            .assert()
            .success();
    }
    // a certificate for another name is refused
    let out = sft(&[
        "cert",
        "server",
        "--ca",
        c,
        "--name",
        "files.example.com",
        "--out",
        d.path().join("other").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let s2 = Server::start_with(Opts {
        pem: Some(read_pem(&d.path().join("other"), "server")),
        ..Default::default()
    });
    let mut cl = s2.client();
    let a = cl
        .env_remove("SFT_PIN")
        .arg("--ca")
        .arg(&ca_pem)
        .arg("ls")
        .assert()
        .code(4);
    assert!(
        stderr_text(&a).contains("not trusted"),
        "{}",
        stderr_text(&a)
    );
    // and a CA that did not sign it is refused too
    let other_ca = d.path().join("ca2");
    assert!(
        sft(&["cert", "ca", "--out", other_ca.to_str().unwrap()])
            .status
            .success()
    );
    let mut cl = s.client();
    cl.env_remove("SFT_PIN")
        .arg("--ca")
        .arg(other_ca.join("ca.pem"))
        .arg("ls")
        .assert()
        .code(4);
    // bad input: one line, usage exit code
    let bad = sft(&["cert", "server", "--ca", c, "--name", "bad name!"]);
    assert_eq!(bad.status.code(), Some(2));
    let none = sft(&["cert", "server", "--ca", c]);
    assert_eq!(none.status.code(), Some(2));
}

#[test]
fn a_self_signed_certificate_prints_the_pin_clients_use() {
    let d = tempfile::tempdir().unwrap();
    let out = sft(&[
        "cert",
        "self-signed",
        "--out",
        d.path().to_str().unwrap(),
        "--ip",
        "127.0.0.1",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let s = Server::start_with(Opts {
        pem: Some(read_pem(d.path(), "server")),
        ..Default::default()
    });
    assert!(text.contains(&format!("--pin {}", s.pin)), "{text}");
    s.client().arg("ls").assert().success();
}
