//! The command line as people use it: key formats, option placement, exit codes.

mod common;

use std::process::Command;

use common::{Opts, Server};

fn openssl(args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// RSA, ECDSA P-256/P-384 and Ed25519 keys in PKCS#8, PKCS#1 and SEC1 files,
/// made by openssl as people make them (skipped if openssl is missing).
#[test]
fn serve_accepts_the_key_forms_people_have() {
    if !openssl(&["version"]) {
        eprintln!("skipped: openssl not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let d = |n: &str| work.path().join(n).to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<Vec<String>>)> = vec![
        (
            "rsa-pkcs8",
            vec![vec![
                "genpkey".into(),
                "-algorithm".into(),
                "RSA".into(),
                "-pkeyopt".into(),
                "rsa_keygen_bits:2048".into(),
                "-out".into(),
                d("rsa-pkcs8"),
            ]],
        ),
        (
            "rsa-pkcs1",
            vec![vec![
                "genrsa".into(),
                "-traditional".into(),
                "-out".into(),
                d("rsa-pkcs1"),
                "2048".into(),
            ]],
        ),
        (
            "p256-sec1",
            vec![vec![
                "ecparam".into(),
                "-genkey".into(),
                "-name".into(),
                "prime256v1".into(),
                "-noout".into(),
                "-out".into(),
                d("p256-sec1"),
            ]],
        ),
        (
            "p384-sec1",
            vec![vec![
                "ecparam".into(),
                "-genkey".into(),
                "-name".into(),
                "secp384r1".into(),
                "-noout".into(),
                "-out".into(),
                d("p384-sec1"),
            ]],
        ),
        (
            "p256-pkcs8",
            vec![vec![
                "genpkey".into(),
                "-algorithm".into(),
                "EC".into(),
                "-pkeyopt".into(),
                "ec_paramgen_curve:P-256".into(),
                "-out".into(),
                d("p256-pkcs8"),
            ]],
        ),
        (
            "ed25519",
            vec![vec![
                "genpkey".into(),
                "-algorithm".into(),
                "ED25519".into(),
                "-out".into(),
                d("ed25519"),
            ]],
        ),
    ];
    for (name, steps) in cases {
        for s in steps {
            let a: Vec<&str> = s.iter().map(String::as_str).collect();
            assert!(openssl(&a), "openssl {a:?}");
        }
        let key = std::fs::read_to_string(d(name)).unwrap();
        let marker = key.lines().next().unwrap().to_string();
        let cert_path = d(&format!("{name}.crt"));
        assert!(openssl(&[
            "req",
            "-x509",
            "-key",
            &d(name),
            "-out",
            &cert_path,
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ]));
        let pem = sft::certs::Pem {
            cert: std::fs::read_to_string(&cert_path).unwrap(),
            key,
        };
        let s = Server::start_with(Opts {
            pem: Some(pem),
            ..Default::default()
        });
        s.client().arg("ls").assert().success();
        s.client()
            .env_remove("SFT_PIN")
            .env("SFT_CA", &s.cert)
            .arg("ls")
            .assert()
            .success();
        eprintln!("{name} ({marker}) ok");
    }
}

#[test]
fn a_certificate_chain_file_is_served_whole() {
    let ca = sft::certs::ca("chain test ca").unwrap();
    let leaf = sft::certs::signed_by(&ca, &["127.0.0.1".into()]).unwrap();
    let chain = format!("{}{}", leaf.cert, ca.cert);
    let s = Server::start_with(Opts {
        pem: Some(sft::certs::Pem {
            cert: chain,
            key: leaf.key,
        }),
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert).unwrap();
    s.client()
        .env_remove("SFT_PIN")
        .env("SFT_CA", &ca_file)
        .arg("ls")
        .assert()
        .success();
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_at_start() {
    let work = tempfile::tempdir().unwrap();
    let a = sft::certs::self_signed(&["localhost".into()]).unwrap();
    let b = sft::certs::self_signed(&["localhost".into()]).unwrap();
    std::fs::write(work.path().join("c.pem"), &a.cert).unwrap();
    common::write_private(&work.path().join("k.pem"), b.key.as_bytes());
    common::write_private(&work.path().join("t"), b"tok");
    let mut c = assert_cmd::Command::new(common::bin());
    let out = c
        .current_dir(work.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--token-file",
            "t",
            "--root",
            "r",
        ])
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(2);
    let msg = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(msg.contains("does not belong to the certificate"), "{msg}");
    // a file that is not PEM at all
    std::fs::write(work.path().join("c.pem"), "hello").unwrap();
    let mut c = assert_cmd::Command::new(common::bin());
    let out = c
        .current_dir(work.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--token-file",
            "t",
            "--root",
            "r",
        ])
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("c.pem"));
}

#[test]
fn global_options_work_before_and_after_the_subcommand() {
    let s = Server::start();
    let mut c = assert_cmd::Command::new(common::bin());
    c.args([
        "--server",
        &s.addr,
        "--pin",
        &s.pin,
        "ls",
        "--token",
        common::TOKEN,
    ])
    .assert()
    .success();
    let mut c = assert_cmd::Command::new(common::bin());
    c.args(["ls", "--server", &s.addr, "--pin", &s.pin])
        .env("SFT_TOKEN", common::TOKEN)
        .assert()
        .success();
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_cmd::Command::new(common::bin())
        .args(["put"])
        .assert()
        .code(2);
    assert_cmd::Command::new(common::bin())
        .args(["frobnicate"])
        .assert()
        .code(2);
    assert_cmd::Command::new(common::bin())
        .args(["--help"])
        .assert()
        .code(0);
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let out = s
        .client()
        .arg("put")
        .arg(&a)
        .arg(&b)
        .args(["--as", "x"])
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("--as"));
    s.client()
        .args(["get", "x", "--sha256", "nothex"])
        .assert()
        .code(2);
    s.client().arg("put").arg(work.path()).assert().code(2);
}
