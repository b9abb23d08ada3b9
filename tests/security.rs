//! Trust and confinement: tokens, server identity, names, the root.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Opts, Server, TOKEN};
use sft::protocol::Msg;

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

#[test]
fn a_wrong_token_is_refused_and_logged_without_the_token() {
    let s = Server::start();
    let a = s
        .client()
        .env("SFT_TOKEN", "not-the-token-xyz")
        .arg("ls")
        .assert()
        .code(5);
    let msg = stderr_of(&a);
    assert!(msg.contains("authentication failed"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    s.client()
        .env("SFT_TOKEN", "second-token")
        .arg("ls")
        .assert()
        .success();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = s.log_text();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(
        !log.contains("not-the-token-xyz"),
        "a presented token leaked into the log"
    );
    assert!(!log.contains(TOKEN), "a token leaked into the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_and_oversized_tokens_are_refused() {
    let s = Server::start();
    let mut r = common::Raw::tls(&s.addr, &s.trust()).await;
    r.w.send(&Msg::Hello {
        min_version: 1,
        max_version: 1,
        features: 0,
    })
    .await
    .unwrap();
    r.w.send_now(&Msg::Auth { secret: Vec::new() })
        .await
        .unwrap();
    assert!(matches!(r.next().await, Msg::Welcome { .. }));
    assert!(matches!(r.next().await, Msg::Error { code: 5, .. }));
    let mut r = common::Raw::tls(&s.addr, &s.trust()).await;
    r.w.send(&Msg::Hello {
        min_version: 1,
        max_version: 1,
        features: 0,
    })
    .await
    .unwrap();
    r.w.send_now(&Msg::Auth {
        secret: vec![b'a'; 5000],
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::Welcome { .. }));
    assert!(matches!(r.next().await, Msg::Error { code: 9, .. }));
    // commands before authentication are refused
    let mut r = common::Raw::tls(&s.addr, &s.trust()).await;
    r.w.send(&Msg::Hello {
        min_version: 1,
        max_version: 1,
        features: 0,
    })
    .await
    .unwrap();
    r.w.send_now(&Msg::List {
        path: String::new(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::Welcome { .. }));
    assert!(matches!(r.next().await, Msg::Error { code: 9, .. }));
    assert_eq!(r.next_or_closed().await, None);
}

#[test]
fn a_wrong_pin_is_a_tls_failure_naming_both_fingerprints() {
    let s = Server::start();
    let wrong = "ab".repeat(32);
    let a = s.client().env("SFT_PIN", &wrong).arg("ls").assert().code(4);
    let msg = stderr_of(&a);
    assert!(msg.contains(&wrong) && msg.contains(&s.pin), "{msg}");
    assert!(msg.contains("intercepting"), "{msg}");
    // no token was sent to the impostor: the server logged no authentication
    assert!(!s.log_text().contains("authenticated"));
}

#[test]
fn verification_cannot_be_skipped() {
    let s = Server::start();
    let a = s.client().env_remove("SFT_PIN").arg("ls").assert().code(2);
    assert!(stderr_of(&a).contains("--pin"));
}

#[test]
fn ca_signed_certificates_are_checked_by_name() {
    let ca = sft::certs::ca("test ca").unwrap();
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert).unwrap();
    let good = sft::certs::signed_by(&ca, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    let s = Server::start_with(Opts {
        pem: Some(good),
        ..Default::default()
    });
    s.client()
        .env_remove("SFT_PIN")
        .env("SFT_CA", &ca_file)
        .arg("ls")
        .assert()
        .success();
    // a certificate for another name, from the same CA
    let other = sft::certs::signed_by(&ca, &["files.example.com".into()]).unwrap();
    let s2 = Server::start_with(Opts {
        pem: Some(other),
        ..Default::default()
    });
    let a = s2
        .client()
        .env_remove("SFT_PIN")
        .env("SFT_CA", &ca_file)
        .arg("ls")
        .assert()
        .code(4);
    assert!(stderr_of(&a).contains("not trusted"), "{}", stderr_of(&a));
    // a different CA
    let ca2 = sft::certs::ca("other ca").unwrap();
    let ca2_file = work.path().join("ca2.pem");
    std::fs::write(&ca2_file, &ca2.cert).unwrap();
    s.client()
        .env_remove("SFT_PIN")
        .env("SFT_CA", &ca2_file)
        .arg("ls")
        .assert()
        .code(4);
}

#[test]
fn the_servers_own_certificate_works_as_ca() {
    let s = Server::start();
    s.client()
        .env_remove("SFT_PIN")
        .env("SFT_CA", &s.cert)
        .arg("ls")
        .assert()
        .success();
}

#[test]
fn every_name_rule_is_refused_with_exit_2() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("f");
    std::fs::write(&src, "x").unwrap();
    let long = "x".repeat(256);
    let deep = vec!["d".repeat(250); 17].join("/");
    for bad in [
        "",
        "/abs",
        "a\\b",
        "a\nb",
        "\x1b[31mred",
        "a//b",
        "a/",
        ".",
        "..",
        "../x",
        "a/../../x",
        long.as_str(),
        deep.as_str(),
    ] {
        let a = s
            .client()
            .arg("put")
            .arg(&src)
            .args(["--as", bad])
            .assert()
            .code(2);
        let msg = stderr_of(&a);
        assert!(msg.contains("invalid name"), "{bad:?}: {msg}");
        assert!(!msg.contains('\x1b'), "escape sequences are shown escaped");
        s.client()
            .args(["get", bad])
            .current_dir(work.path())
            .assert()
            .code(2);
        s.client().args(["rm", bad]).assert().code(2);
    }
    assert!(s.files().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_bad_names_itself() {
    let s = Server::start();
    let mut r = s.raw().await;
    for bad in [
        "../escape",
        "/etc/passwd",
        "a/../../x",
        "x\0y",
        ".sft-tmp-1",
        "d/.sft-tmp-2",
    ] {
        r.w.send_now(&Msg::Put {
            size: 1,
            flags: 0,
            name: bad.into(),
        })
        .await
        .unwrap();
        assert!(
            matches!(r.next().await, Msg::Error { code: 2, .. }),
            "{bad:?}"
        );
        r.w.send_now(&Msg::Get {
            offset: 0,
            compress: 0,
            name: bad.into(),
        })
        .await
        .unwrap();
        assert!(
            matches!(r.next().await, Msg::Error { code: 2, .. }),
            "{bad:?}"
        );
    }
    // the session is still usable
    r.w.send_now(&Msg::List {
        path: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(r.next().await, Msg::ListEnd);
    assert!(s.files().is_empty());
    assert!(!s.dir.path().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn symlinks_in_the_root_never_lead_outside() {
    let s = Server::start();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "top secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), s.root.join("door")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), s.root.join("s.txt")).unwrap();
    let work = tempfile::tempdir().unwrap();
    s.client()
        .current_dir(work.path())
        .args(["get", "door/secret"])
        .assert()
        .failure();
    s.client()
        .current_dir(work.path())
        .args(["get", "s.txt"])
        .assert()
        .failure();
    let src = work.path().join("f");
    std::fs::write(&src, "x").unwrap();
    s.client()
        .arg("put")
        .arg(&src)
        .args(["--as", "door/planted"])
        .assert()
        .failure();
    s.client().args(["rm", "door/secret"]).assert().failure();
    assert!(!outside.path().join("planted").exists());
    assert!(outside.path().join("secret").exists());
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        1,
        "nothing was downloaded"
    );
    let ls = s
        .client()
        .arg("ls")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8(ls).unwrap().is_empty(),
        "links are not listed"
    );
}

#[test]
fn a_token_file_readable_by_others_is_refused() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let tf = work.path().join("tok");
    std::fs::write(&tf, TOKEN).unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = s
        .client()
        .env_remove("SFT_TOKEN")
        .env("SFT_TOKEN_FILE", &tf)
        .arg("ls")
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("chmod 600"));
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    s.client()
        .env_remove("SFT_TOKEN")
        .env("SFT_TOKEN_FILE", &tf)
        .arg("ls")
        .assert()
        .success();
}

#[test]
fn zero_config_state_is_private_and_reused() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let start = || {
        let mut c = std::process::Command::new(common::bin());
        c.current_dir(work.path())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--fsync",
                "never",
                "--state-dir",
            ])
            .arg(&state)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let mut text = String::new();
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(out).lines();
        // the banner ends with the example command line
        for _ in 0..16 {
            match lines.next() {
                Some(Ok(l)) => {
                    text.push_str(&format!("{l}\n"));
                    if l.trim_start().starts_with("sft put") {
                        break;
                    }
                }
                _ => break,
            }
        }
        (child, text)
    };
    let (mut child, banner) = start();
    assert!(banner.starts_with("listening on 127.0.0.1:"), "{banner}");
    let fp = banner
        .lines()
        .find_map(|l| l.strip_prefix("certificate sha256: "))
        .unwrap()
        .to_string();
    let export = banner
        .lines()
        .find(|l| l.trim_start().starts_with("export "))
        .unwrap()
        .to_string();
    assert!(export.contains(&format!("SFT_PIN={fp}")));
    for f in ["cert.pem", "key.pem", "token"] {
        let mode = std::fs::metadata(state.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(
        work.path().join("sft-data").is_dir(),
        "serves ./sft-data by default"
    );
    // the printed command connects
    let vars: Vec<(String, String)> = export
        .trim_start()
        .trim_start_matches("export ")
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let mut c = assert_cmd::Command::new(common::bin());
    c.env_clear().envs(vars).arg("ls").assert().success();
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, banner2) = start();
    assert!(banner2.contains(&fp), "the same certificate is reused");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_state_directory_inside_the_root_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let mut c = assert_cmd::Command::new(common::bin());
    let a = c
        .current_dir(work.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            "data",
            "--state-dir",
            "data/.state",
        ])
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("overlap"));
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_to_the_tls_port_gets_nothing_and_the_server_carries_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start();
    let mut tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut buf),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("sft"),
        "nothing is said before TLS"
    );
    s.client().arg("ls").assert().success();
}

#[test]
fn a_client_pointed_at_a_plaintext_server_fails_with_a_tls_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
    let mut c = assert_cmd::Command::new(common::bin());
    c.env("SFT_SERVER", &addr)
        .env("SFT_PIN", "ab".repeat(32))
        .env("SFT_TOKEN", "t")
        .arg("ls")
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(4);
    t.join().unwrap();
}

/// What `openssl req -x509` makes: a self-signed certificate marked CA:TRUE.
fn self_signed_ca_flagged(names: &[&str]) -> sft::certs::Pem {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    sft::certs::Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[test]
fn a_self_signed_certificate_marked_ca_works_as_its_own_ca_for_its_names_only() {
    let s = Server::start_with(Opts {
        pem: Some(self_signed_ca_flagged(&["localhost", "127.0.0.1"])),
        ..Default::default()
    });
    s.client()
        .env_remove("SFT_PIN")
        .env("SFT_CA", &s.cert)
        .arg("ls")
        .assert()
        .success();
    // a certificate that does not cover the address connected to is still refused
    let s2 = Server::start_with(Opts {
        pem: Some(self_signed_ca_flagged(&["files.example.com"])),
        ..Default::default()
    });
    s2.client()
        .env_remove("SFT_PIN")
        .env("SFT_CA", &s2.cert)
        .arg("ls")
        .assert()
        .code(4);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_without_dropping_sessions() {
    let s = Server::start();
    let old_pin = s.pin.clone();
    // a session opened before the reload
    let mut before = s.raw().await;
    let fresh = sft::certs::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(&s.cert, &fresh.cert).unwrap();
    common::write_private(&s.key, fresh.key.as_bytes());
    let new_pin = sft::tls::fingerprint(&sft::tls::load_certs(&s.cert).unwrap()[0]);
    assert_ne!(new_pin, old_pin);
    s.send_signal("HUP");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.log_text().contains("certificate reloaded") && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // new clients see the new certificate; the old pin is now refused
    s.client()
        .env("SFT_PIN", &new_pin)
        .arg("ls")
        .assert()
        .success();
    s.client()
        .env("SFT_PIN", &old_pin)
        .arg("ls")
        .assert()
        .code(4);
    // the earlier session still works
    before
        .w
        .send_now(&Msg::List {
            path: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(before.next().await, Msg::ListEnd);
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_sent_with_a_refused_auth_are_never_run() {
    // a client may pipeline commands right after AUTH (PROTOCOL.md §4.1):
    // with a wrong token the server answers ERROR 5 and closes, and never
    // reads, let alone runs, what followed
    let s = Server::start();
    let mut r = common::Raw::tls(&s.addr, &s.trust()).await;
    r.w.send(&Msg::Hello {
        min_version: 1,
        max_version: 1,
        features: 0,
    })
    .await
    .unwrap();
    r.w.send(&Msg::Auth {
        secret: b"not-the-token".to_vec(),
    })
    .await
    .unwrap();
    r.w.send_now(&Msg::Mkdir {
        name: "made-unauthenticated".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::Welcome { .. }));
    assert!(matches!(r.next().await, Msg::Error { code: 5, .. }));
    assert!(r.next_or_closed().await.is_none(), "the session ends");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!s.root.join("made-unauthenticated").exists());
    // with the right token the same flight is run, its reply after AUTH_OK
    let mut r = common::Raw::tls(&s.addr, &s.trust()).await;
    r.w.send(&Msg::Hello {
        min_version: 1,
        max_version: 1,
        features: 0,
    })
    .await
    .unwrap();
    r.w.send(&Msg::Auth {
        secret: TOKEN.as_bytes().to_vec(),
    })
    .await
    .unwrap();
    r.w.send_now(&Msg::Mkdir {
        name: "made".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::Welcome { .. }));
    assert!(matches!(r.next().await, Msg::AuthOk { .. }));
    assert!(matches!(r.next().await, Msg::Done));
    assert!(s.root.join("made").is_dir());
}

#[test]
fn a_put_with_a_wrong_token_says_so_and_stores_nothing() {
    // `sft put` sends its first questions (LIST, CLONE probe) with AUTH: the
    // error is still the authentication's, in one line
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("big.bin");
    std::fs::write(&f, common::noise(3 << 20, 7)).unwrap();
    let a = s
        .client()
        .env("SFT_TOKEN", "not-the-token-xyz")
        .arg("put")
        .arg(&f)
        .assert()
        .code(5);
    let msg = stderr_of(&a);
    assert!(msg.contains("authentication failed"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    let stored: Vec<_> = std::fs::read_dir(&s.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
}
