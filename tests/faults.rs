//! Bad peers and faults: nothing half-written becomes visible, and the server
//! keeps serving everyone else.

mod common;

use std::time::{Duration, Instant};

use common::{Server, noise, sha256_hex};
use sft::protocol::Msg;

fn digest(data: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    hex::decode_to_slice(sha256_hex(data), &mut d).unwrap();
    d
}

/// After any fault: a fresh client can put, get and verify a file.
fn still_serves(s: &Server) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("probe.bin");
    let data = noise(300_000, 77);
    std::fs::write(&src, &data).unwrap();
    let out = s
        .client()
        .arg("put")
        .arg(&src)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let name = String::from_utf8(out)
        .unwrap()
        .trim_end()
        .split_once("  ")
        .unwrap()
        .1
        .to_string();
    let dst = work.path().join("back");
    s.client()
        .args(["get", &name, "-o"])
        .arg(&dst)
        .assert()
        .success();
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    s.client().args(["rm", &name]).assert().success();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_off_halfway_leaves_no_file() {
    let s = Server::start();
    let mut r = s.raw().await;
    r.w.send_now(&Msg::Put {
        size: 4 << 20,
        flags: 0,
        name: "half.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    r.data(&noise(1 << 20, 1)).await;
    r.data(&noise(1 << 20, 2)).await;
    r.w.flush().await.unwrap();
    drop(r);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.files().is_empty());
    still_serves(&s);
    assert_eq!(s.files(), Vec::<String>::new());
}

#[test]
fn a_client_killed_mid_upload_leaves_no_file() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big.bin");
    std::fs::write(&src, noise(400 << 20, 3)).unwrap();
    let mut child = s
        .process()
        .arg("put")
        .arg(&src)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait until the server has started receiving, then kill the client
    let until = Instant::now() + Duration::from_secs(20);
    while !s.log_text().contains("authenticated") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(30));
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // nothing visible; what arrived may be kept, under a reserved name, for
    // the same upload to resume (tests/resume.rs)
    let files = s.files();
    assert!(
        files.iter().all(|f| f
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(".sft-tmp-"))),
        "{files:?}"
    );
    still_serves(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_digest_stores_nothing_and_the_session_goes_on() {
    let s = Server::start();
    let mut r = s.raw().await;
    let data = noise(100_000, 5);
    r.w.send_now(&Msg::Put {
        size: data.len() as u64,
        flags: 0,
        name: "bad.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    r.data(&data).await;
    let mut wrong = digest(&data);
    wrong[0] ^= 1;
    r.w.send_now(&Msg::End { sha256: wrong }).await.unwrap();
    match r.next().await {
        Msg::Error { code, message } => {
            assert_eq!(code, 8);
            assert!(message.contains("SHA-256 mismatch"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.files().is_empty());
    r.w.send_now(&Msg::List {
        path: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(r.next().await, Msg::ListEnd);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_or_cancelled_upload_stores_nothing() {
    let s = Server::start();
    let mut r = s.raw().await;
    let data = noise(1000, 6);
    r.w.send_now(&Msg::Put {
        size: 2000,
        flags: 0,
        name: "short.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    r.data(&data).await;
    r.w.send_now(&Msg::End {
        sha256: digest(&data),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::Error { code: 9, .. }));
    r.w.send_now(&Msg::Put {
        size: 2000,
        flags: 0,
        name: "cancel.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    r.data(&data).await;
    r.w.send_now(&Msg::Cancel).await.unwrap();
    assert!(matches!(r.next().await, Msg::Error { code: 1, .. }));
    assert!(s.files().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn more_data_than_declared_closes_that_connection_only() {
    let s = Server::start();
    let mut r = s.raw().await;
    r.w.send_now(&Msg::Put {
        size: 10,
        flags: 0,
        name: "over.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    r.data(&[0u8; 11]).await;
    r.w.flush().await.unwrap();
    assert!(matches!(r.next().await, Msg::Error { code: 9, .. }));
    assert_eq!(r.next_or_closed().await, None);
    assert!(s.files().is_empty());
    still_serves(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_frames_are_refused_without_harm() {
    let s = Server::start();
    let frames: Vec<Vec<u8>> = vec![
        vec![0x99, 0, 0, 0, 0],                            // unknown type
        vec![0x22, 0xff, 0xff, 0xff, 0xff],                // DATA claiming 4 GiB
        vec![0x10, 0x00, 0x10, 0x00, 0x01],                // LIST over the control limit
        vec![0x20, 0, 0, 0, 3, 1, 2, 3],                   // truncated PUT
        vec![0x40, 0, 0, 0, 4, 0, 2, 0xff, 0xfe],          // REMOVE with invalid UTF-8
        vec![0x7f, 0, 0, 0, 1, 0],                         // BYE with trailing bytes
        vec![0x22, 0, 0, 0, 5, 1, 0xff, 0xff, 0xff, 0xff], // zstd block, not negotiated, absurd raw length
    ];
    for f in frames {
        let mut r = s.raw().await;
        r.w.write_raw(&f).await.unwrap();
        r.w.flush().await.unwrap();
        match r.next_or_closed().await {
            Some(Msg::Error { code: 9, .. }) => {}
            other => panic!("{f:02x?}: {other:?}"),
        }
        assert_eq!(
            r.next_or_closed().await,
            None,
            "{f:02x?}: connection closed"
        );
    }
    // garbage before HELLO
    let mut r = common::Raw::tls(&s.addr, &s.trust()).await;
    r.w.write_raw(b"\x01\x00\x00\x00\x0cNOTSFT123456")
        .await
        .unwrap();
    r.w.flush().await.unwrap();
    assert!(matches!(
        r.next_or_closed().await,
        Some(Msg::Error { code: 9, .. })
    ));
    assert!(s.log_text().lines().all(|l| !l.contains("panicked")));
    still_serves(&s);
}

#[test]
fn a_bit_flipped_at_rest_is_caught_on_download() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("rot.bin");
    std::fs::write(&src, noise(500_000, 8)).unwrap();
    s.client().arg("put").arg(&src).assert().success();
    // flip one bit without changing size or mtime (as bit rot would)
    let stored = s.root.join("rot.bin");
    let mtime = std::fs::metadata(&stored).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[123_456] ^= 0x10;
    std::fs::write(&stored, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stored)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let dst = work.path().join("out");
    let a = s
        .client()
        .args(["get", "rot.bin", "-o"])
        .arg(&dst)
        .assert()
        .code(8);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("corrupted"));
    assert!(!dst.exists());
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        1,
        "no partial download left"
    );
}

#[test]
fn a_busy_server_says_so_with_exit_3() {
    let s = Server::start_args(&["--max-connections", "1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held = rt.block_on(s.raw());
    let a = s.client().arg("ls").assert().code(3);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("busy"));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    s.client().arg("ls").assert().success();
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_peers_are_timed_out_at_each_phase() {
    use tokio::io::AsyncReadExt;
    let s = Server::start_args(&[
        "--handshake-timeout",
        "1s",
        "--auth-timeout",
        "1s",
        "--idle-timeout",
        "1s",
    ]);
    // TCP connection that never starts TLS
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(8));
    // TLS but no HELLO
    let mut r = common::Raw::tls(&s.addr, &s.trust()).await;
    assert!(matches!(
        r.next_or_closed().await,
        Some(Msg::Error { code: 3, .. }) | None
    ));
    // authenticated but idle
    let mut r = s.raw().await;
    match r.next().await {
        Msg::Error { code: 3, message } => {
            assert!(message.contains("without a command"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    still_serves(&s);
}

#[test]
fn cannot_connect_is_exit_3() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let mut c = assert_cmd::Command::new(common::bin());
    let a = c
        .env("SFT_SERVER", &addr)
        .env("SFT_PIN", "ab".repeat(32))
        .env("SFT_TOKEN", "t")
        .arg("ls")
        .timeout(Duration::from_secs(20))
        .assert()
        .code(3);
    let msg = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(
        msg.starts_with("sft: error: cannot connect") && msg.lines().count() == 1,
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_upload_in_flight_finish_then_exits_0() {
    let mut s = Server::start();
    let mut r = s.raw().await;
    let data = noise(3 << 20, 11);
    r.w.send_now(&Msg::Put {
        size: data.len() as u64,
        flags: 0,
        name: "inflight.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    r.data(&data[..1 << 20]).await;
    r.w.flush().await.unwrap();
    s.send_signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // new connections are refused at once
    assert!(tokio::net::TcpStream::connect(&s.addr).await.is_err());
    r.data_chunks(&data[1 << 20..]).await;
    r.w.send_now(&Msg::End {
        sha256: digest(&data),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutOk { .. }));
    // then it is told the server is going away
    assert!(matches!(r.next().await, Msg::Error { code: 3, .. }));
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(std::fs::read(s.root.join("inflight.bin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grace_period_shorter_than_the_transfer_leaves_no_partial_file() {
    let mut s = Server::start_args(&["--grace", "1s"]);
    let mut r = s.raw().await;
    r.w.send_now(&Msg::Put {
        size: 10 << 20,
        flags: 0,
        name: "slow.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    r.data(&noise(1 << 20, 12)).await;
    r.w.flush().await.unwrap();
    s.send_signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(s.files().is_empty());
    let _ = r.w.shutdown().await;
}

/// A real full filesystem: a 4 MiB tmpfs (needs root; skipped otherwise).
#[test]
fn a_full_disk_is_reported_as_exit_7_and_leaves_nothing() {
    let mnt = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mnt.path())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.path().to_path_buf());
    let root = mnt.path().join("root");
    let s = Server::start_with(common::Opts {
        root: Some(root.clone()),
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    // larger than the filesystem: refused up front, before any data
    let src = work.path().join("huge.bin");
    std::fs::write(&src, noise(16 << 20, 13)).unwrap();
    let a = s.client().arg("put").arg(&src).assert().code(7);
    assert!(
        String::from_utf8_lossy(&a.get_output().stderr).contains("not enough free space"),
        "{}",
        String::from_utf8_lossy(&a.get_output().stderr)
    );
    // fits when it starts, but the disk fills up under it (ENOSPC mid-write)
    let mid = work.path().join("mid.bin");
    std::fs::write(&mid, noise(3 << 20, 15)).unwrap();
    let put = s
        .process()
        .args(["--compress", "off", "--limit-rate", "1MB", "put"])
        .arg(&mid)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let filler = mnt.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
    }
    let out = put.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("full"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_file(&filler).unwrap();
    // space is back: a small file still goes through
    let small = work.path().join("small.bin");
    std::fs::write(&small, noise(100_000, 14)).unwrap();
    s.client().arg("put").arg(&small).assert().success();
}

/// An outside auditor: openssl s_client (skipped when openssl is missing).
#[test]
fn only_tls_1_3_is_spoken() {
    let s = Server::start();
    let probe = |flag: &str| {
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &s.addr, flag, "-alpn", "sft/1"])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let Ok(v13) = probe("-tls1_3") else {
        eprintln!("skipped: openssl not installed");
        return;
    };
    let text = String::from_utf8_lossy(&v13.stdout);
    assert!(text.contains("TLSv1.3"), "{text}");
    let v12 = probe("-tls1_2").unwrap();
    assert!(!v12.status.success(), "TLS 1.2 must be refused");
    assert!(
        !String::from_utf8_lossy(&v12.stdout).contains("Cipher is ECDHE"),
        "no TLS 1.2 session"
    );
    still_serves(&s);
}
