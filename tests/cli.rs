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

/// Run the binary with a stdout whose reader is already gone, so every
/// write fails with EPIPE; returns (exit code, stderr).
fn with_closed_stdout(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
        &["--help"],
    ] {
        let mut c = Command::new(common::bin());
        c.args(args);
        let (code, err) = with_closed_stdout(c);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
    let s = Server::start();
    std::fs::write(s.root.join("a.txt"), b"alpha").unwrap();
    std::fs::write(s.root.join("b.txt"), vec![7u8; 300_000]).unwrap();
    for args in [
        &["ls"][..],
        &["ls", "-l"],
        &["sums"],
        &["get", "b.txt", "-o", "-"],
    ] {
        let mut c = s.process();
        c.args(args);
        let (code, err) = with_closed_stdout(c);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
    // the work goes on without a reader: every download lands
    let dl = tempfile::tempdir().unwrap();
    let mut c = s.process();
    c.args(["get", "a.txt", "b.txt", "-o"]).arg(dl.path());
    let (code, err) = with_closed_stdout(c);
    assert_eq!((code, err.as_str()), (Some(0), ""));
    assert_eq!(std::fs::read(dl.path().join("a.txt")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(dl.path().join("b.txt")).unwrap().len(),
        300_000
    );
    // and a real failure keeps its exit code
    let mut c = s.process();
    c.args(["get", "a.txt", "missing.txt", "-o"]).arg(dl.path());
    let (code, err) = with_closed_stdout(c);
    assert_eq!(code, Some(6), "{err}");
    assert!(
        err.contains("'missing.txt' does not exist on the server"),
        "{err}"
    );
}

#[test]
fn each_command_shows_its_own_options_first_and_only_those_that_apply() {
    let help = |args: &[&str]| {
        let out = Command::new(common::bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let put = help(&["put", "--help"]);
    let own = put.find("--recursive").unwrap();
    let conn = put.find("Connection options:").unwrap();
    assert!(own < conn, "{put}");
    assert!(put.find("--server").unwrap() > conn, "{put}");
    assert!(put.contains("Output options:"), "{put}");
    for cmd in ["serve", "cert", "user", "man"] {
        let h = help(&[cmd, "--help"]);
        for client_only in [
            "--server",
            "--pin",
            "--token-file <FILE>  File holding",
            "--limit-rate",
            "--known-servers",
            "Connection options",
        ] {
            assert!(
                !h.contains(client_only),
                "{cmd} --help shows {client_only}:\n{h}"
            );
        }
    }
    // transfer options only where files move
    let ls = help(&["ls", "--help"]);
    assert!(
        ls.contains("--server") && ls.contains("--full-digest"),
        "{ls}"
    );
    for transfer_only in ["--compress", "--limit-rate", "--stats"] {
        assert!(
            !ls.contains(transfer_only),
            "ls --help shows {transfer_only}"
        );
        assert!(
            put.contains(transfer_only),
            "put --help lacks {transfer_only}"
        );
    }
    // serve keeps its own --token-file
    assert!(help(&["serve", "--help"]).contains("--token-file"));
    // hidden is not refused: options may come before the command
    let out = Command::new(common::bin())
        .args(["--server", "x:1", "cert", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn the_manual_page_has_the_sections_people_look_for() {
    let out = Command::new(common::bin()).arg("man").output().unwrap();
    assert!(out.status.success());
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(
        man.contains(".SH NAME\nsft \\- secure file transfer"),
        "{}",
        &man[..300.min(man.len())]
    );
    assert!(!man.contains("sft \\- sft:"));
    // no references to per-command pages that do not exist
    assert!(!man.contains("sft-put"), "refers to sft-put(1)");
    for section in [
        ".SH SYNOPSIS",
        ".SH COMMANDS",
        ".SH EXIT STATUS",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH EXAMPLES",
        ".SH ADDRESSES",
    ] {
        assert!(man.contains(section), "missing {section}");
    }
    // each command with its own options
    assert!(man.contains(".SS \"sft put\""));
    assert!(man.contains("\\-\\-overwrite"));
    assert!(man.contains(".SS \"sft user add\""));
    // the exit codes agree with the README's table
    assert!(man.contains(".B 8\nintegrity: SHA\\-256 mismatch"));
    // man(1) itself renders it without complaint, if installed
    if let Ok(o) = Command::new("man")
        .args(["--warnings", "-l", "-"])
        .env("MANWIDTH", "100")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut i) = child.stdin.take() {
                i.write_all(man.as_bytes())?;
            }
            child.wait_with_output()
        })
    {
        let warnings = String::from_utf8_lossy(&o.stderr);
        assert!(!warnings.contains("warning"), "{warnings}");
    }
}
