//! Storage quotas through the real binary: reservations before data,
//! concurrency, every way an upload can end, restarts and crashes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

fn file(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, noise(len as usize, seed)).unwrap();
    p
}

/// The "(server)" row of `sft df --bytes`: (used, reserved, files).
fn server_usage(s: &Server) -> (u64, u64, u64) {
    row(s, TOKEN, "(server)")
}

fn row(s: &Server, token: &str, name: &str) -> (u64, u64, u64) {
    let out = s
        .client()
        .env("SFT_TOKEN", token)
        .args(["df", "--bytes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} row in {text}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[5].parse().unwrap(),
    )
}

fn bytes_in(s: &Server) -> u64 {
    let out = s.client().args(["admin", "status"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("bytes in:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn disk_bytes(root: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            total += disk_bytes(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}

#[test]
fn an_upload_that_does_not_fit_is_refused_before_any_data_is_sent() {
    let s = Server::start_args(&["--quota", "1MiB"]);
    let work = tempfile::tempdir().unwrap();
    let big = file(work.path(), "big.bin", 2 * MIB, 1);
    let a = s.client().arg("put").arg(&big).assert().code(7);
    assert_eq!(
        stderr_text(&a).trim(),
        "sft: error: quota exceeded: this upload needs 2.0 MiB, 1.0 MiB of 1.0 MiB left (server)"
    );
    assert_eq!(bytes_in(&s), 0, "not a single data byte was accepted");
    assert!(s.files().is_empty());
    // what fits still goes through, and is counted
    let small = file(work.path(), "small.bin", MIB / 2, 2);
    s.client().arg("put").arg(&small).assert().success();
    assert_eq!(server_usage(&s), (MIB / 2, 0, 1));
}

#[test]
fn min_free_keeps_a_reserve_on_the_filesystem() {
    // more than any test machine has free: every upload would eat the reserve
    let s = Server::start_args(&["--min-free", "1000TiB"]);
    let work = tempfile::tempdir().unwrap();
    let f = file(work.path(), "f.bin", 1000, 1);
    let a = s.client().arg("put").arg(&f).assert().code(7);
    assert!(
        stderr_text(&a).contains("must stay free"),
        "{}",
        stderr_text(&a)
    );
    assert_eq!(bytes_in(&s), 0);
    assert!(s.files().is_empty());
    let df = stdout_text(&s.client().args(["df", "--bytes"]).assert().success());
    assert!(df.contains(&format!("{} kept free", 1000u64 << 40)), "{df}");
}

#[test]
fn twenty_concurrent_uploads_worth_twice_the_space_fill_it_exactly() {
    let s = Server::start_args(&["--quota", "10MiB"]);
    let work = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..20)
        .map(|i| file(work.path(), &format!("f{i:02}.bin"), MIB, 100 + i))
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            s.process()
                .args(["--compress", "off", "put"])
                .arg(f)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => ok += 1,
            Some(7) => {
                assert!(String::from_utf8_lossy(&out.stderr).contains("quota exceeded"));
                refused += 1;
            }
            other => panic!(
                "unexpected exit {other:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    assert_eq!((ok, refused), (10, 10));
    assert_eq!(disk_bytes(&s.root), 10 * MIB);
    assert_eq!(s.files().len(), 10);
    // the refused ones were refused up front: only the stored bytes arrived
    assert_eq!(bytes_in(&s), 10 * MIB);
    assert_eq!(server_usage(&s), (10 * MIB, 0, 10));
}

fn spawn_slow_put(s: &Server, path: &Path) -> std::process::Child {
    s.process()
        .args(["--compress", "off", "--limit-rate", "2MB", "put"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for_reservation(s: &Server) {
    let until = Instant::now() + Duration::from_secs(30);
    while server_usage(s).1 == 0 {
        assert!(Instant::now() < until, "no upload in flight");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_way_an_upload_ends_releases_its_reservation() {
    // (a killed client's upload is kept for resuming, its space held, until
    // --keep-partial: 1 s here, so that way ends too)
    let s = Server::start_args(&["--quota", "20MiB", "--keep-partial", "1s"]);
    let work = tempfile::tempdir().unwrap();
    let kept = file(work.path(), "kept.bin", MIB, 1);
    s.client().arg("put").arg(&kept).assert().success();
    let before = server_usage(&s);
    assert_eq!(before, (MIB, 0, 1));

    // the client killed mid-upload
    let slow = file(work.path(), "slow.bin", 8 * MIB, 2);
    let mut child = spawn_slow_put(&s, &slow);
    wait_for_reservation(&s);
    assert_eq!(server_usage(&s).1, 8 * MIB, "reserved while in flight");
    child.kill().unwrap();
    child.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while server_usage(&s) != before {
        assert!(
            Instant::now() < until,
            "reservation leaked: {:?}",
            server_usage(&s)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.files(), vec!["kept.bin".to_string()]);

    // a digest mismatch, a short upload, and a cancel
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sft::protocol::Msg;
        for ending in ["bad digest", "short", "cancel"] {
            let mut r = s.raw().await;
            r.w.send_now(&Msg::Put {
                size: 4096,
                flags: 0,
                name: "x.bin".into(),
            })
            .await
            .unwrap();
            assert!(matches!(r.next().await, Msg::PutReady { .. }));
            match ending {
                "bad digest" => {
                    r.data(&[1u8; 4096]).await;
                    r.w.send_now(&Msg::End { sha256: [0; 32] }).await.unwrap();
                }
                "short" => {
                    r.data(&[1u8; 100]).await;
                    r.w.send_now(&Msg::End { sha256: [0; 32] }).await.unwrap();
                }
                _ => {
                    r.data(&[1u8; 100]).await;
                    r.w.send_now(&Msg::Cancel).await.unwrap();
                }
            }
            assert!(matches!(r.next().await, Msg::Error { .. }), "{ending}");
        }
    });
    assert_eq!(server_usage(&s), before);

    // shutdown with a grace period shorter than the upload
    let mut s = s;
    let mut child = spawn_slow_put(&s, &slow);
    wait_for_reservation(&s);
    s.client()
        .args(["admin", "shutdown", "--grace", "200ms"])
        .assert()
        .success();
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
    let _ = child.wait();
    s.crash_and_restart(&["--quota", "20MiB"]);
    assert_eq!(server_usage(&s), before);
}

#[test]
fn usage_is_rebuilt_from_disk_after_a_server_crash() {
    let mut s = Server::start_args(&["--quota", "20MiB"]);
    // a file placed by hand counts too
    std::fs::write(s.root.join("by-hand.txt"), vec![b'h'; 1000]).unwrap();
    s.crash_and_restart(&["--quota", "20MiB"]);
    assert_eq!(server_usage(&s), (1000, 0, 1));
    let work = tempfile::tempdir().unwrap();
    let a = file(work.path(), "a.bin", 3 * MIB, 1);
    s.client().arg("put").arg(&a).assert().success();
    let slow = file(work.path(), "slow.bin", 8 * MIB, 2);
    let mut child = spawn_slow_put(&s, &slow);
    wait_for_reservation(&s);
    // SIGKILL: no cleanup of any kind
    s.crash_and_restart(&["--quota", "20MiB"]);
    let _ = child.wait();
    assert_eq!(server_usage(&s), (3 * MIB + 1000, 0, 2));
    assert_eq!(disk_bytes(&s.root), 3 * MIB + 1000);
    assert_eq!(
        s.files(),
        vec!["a.bin".to_string(), "by-hand.txt".to_string()]
    );
    // and the limit holds against what is really there
    let big = file(work.path(), "big.bin", 17 * MIB, 3);
    s.client().arg("put").arg(&big).assert().code(7);
}

#[test]
fn overwrite_counts_only_the_difference_and_rm_frees_space_at_once() {
    let s = Server::start_args(&["--quota", "3MiB"]);
    let work = tempfile::tempdir().unwrap();
    let a = file(work.path(), "a.bin", 2 * MIB, 1);
    s.client().arg("put").arg(&a).assert().success();
    // 2.5 MiB replacing 2 MiB needs 0.5 MiB: fits in the 1 MiB left
    let a2 = file(work.path(), "a2.bin", 5 * MIB / 2, 2);
    s.client()
        .args(["put", "--overwrite", "--as", "a.bin"])
        .arg(&a2)
        .assert()
        .success();
    assert_eq!(server_usage(&s), (5 * MIB / 2, 0, 1));
    let b = file(work.path(), "b.bin", MIB, 3);
    let refused = s.client().arg("put").arg(&b).assert().code(7);
    assert!(
        stderr_text(&refused).contains("512 KiB of 3.0 MiB left"),
        "{}",
        stderr_text(&refused)
    );
    s.client().args(["rm", "a.bin"]).assert().success();
    assert_eq!(server_usage(&s), (0, 0, 0));
    s.client().arg("put").arg(&b).assert().success();
}

#[test]
fn a_per_user_limit_lower_than_the_servers_applies_first() {
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users.toml");
    let out = Command::new(bin())
        .args([
            "user",
            "add",
            "ci",
            "--role",
            "write",
            "--quota",
            "1MiB",
            "--max-files",
            "2",
            "--users",
        ])
        .arg(&users)
        .output()
        .unwrap();
    assert!(out.status.success());
    let ci = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let s = Server::start_args(&["--quota", "100MiB", "--users", users.to_str().unwrap()]);
    let work = tempfile::tempdir().unwrap();
    let big = file(work.path(), "big.bin", 2 * MIB, 1);
    let a = s
        .client()
        .env("SFT_TOKEN", &ci)
        .arg("put")
        .arg(&big)
        .assert()
        .code(7);
    assert!(
        stderr_text(&a).contains("1.0 MiB of 1.0 MiB left (user ci)"),
        "{}",
        stderr_text(&a)
    );
    // the admin (a token-file user without a limit) is not bound by it
    s.client().arg("put").arg(&big).assert().success();
    // the file limit
    for i in 0..2 {
        // different bytes each time (the same bytes again would be `unchanged`)
        let tiny = file(work.path(), "t.txt", 10, 100 + i);
        s.client()
            .env("SFT_TOKEN", &ci)
            .arg("put")
            .arg(&tiny)
            .assert()
            .success();
    }
    let tiny = file(work.path(), "t.txt", 10, 200);
    let a = s
        .client()
        .env("SFT_TOKEN", &ci)
        .arg("put")
        .arg(&tiny)
        .assert()
        .code(7);
    assert!(stderr_text(&a).contains("file limit reached: user ci has 2 of 2 files"));
    // df: a user sees its own row; an admin sees the server and everyone
    let mine = s
        .client()
        .env("SFT_TOKEN", &ci)
        .args(["df"])
        .assert()
        .success();
    let text = stdout_text(&mine);
    assert!(text.contains("ci") && !text.contains("(server)"), "{text}");
    assert_eq!(row(&s, &ci, "ci"), (20, 0, 2));
    assert_eq!(row(&s, TOKEN, "ci"), (20, 0, 2));
    assert_eq!(server_usage(&s), (2 * MIB + 20, 0, 3));
}
