//! Interrupted transfers (issue 12): resumed after a verified prefix in both
//! directions, retried after a lost connection, interrupted cleanly by
//! SIGINT, and kept on the server no longer than --keep-partial. Real
//! binary, real TLS, loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// 24 MiB of noise: large enough to be cut off at 4 MB/s.
const SIZE: usize = 24 << 20;

fn json_line(a: &assert_cmd::assert::Assert) -> serde_json::Value {
    let out = stdout_text(a);
    let line = out.lines().next().unwrap_or_else(|| panic!("no output"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// A transfer started in the background at a limited rate.
fn spawn(s: &Server, args: &[&str]) -> Child {
    s.process()
        .args(["--limit-rate", "4MB", "--retries", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until `cond` holds (at most 30 s).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes of the upload temporaries under the server's root.
fn kept_on_server(root: &Path) -> u64 {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sft-tmp-"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn part_of(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap().to_string_lossy().into_owned();
    dest.with_file_name(format!(".{name}.sft-part"))
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A pseudo-random point in [lo, hi) bytes, different on every run.
fn cut_point(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    lo + nanos % (hi - lo)
}

/// Kill `child` with SIGKILL once `progress()` passes a random point.
fn kill_midway(mut child: Child, progress: impl Fn() -> u64) {
    let at = cut_point(SIZE as u64 / 8, SIZE as u64 / 2);
    wait_for("the transfer to get going", || progress() >= at);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_upload_resumes_with_fewer_bytes_on_the_wire() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let data = noise(SIZE, 1);
    let f = work.path().join("big.bin");
    std::fs::write(&f, &data).unwrap();
    let child = spawn(&s, &["put", f.to_str().unwrap()]);
    kill_midway(child, || kept_on_server(&s.root));
    wait_for("the server to keep the partial upload", || {
        s.log_text().contains("outcome=\"kept\"")
    });
    let held = kept_on_server(&s.root);
    assert!(held > 0 && held < SIZE as u64, "{held}");

    let a = s
        .client()
        .args(["--json", "put", f.to_str().unwrap()])
        .assert()
        .success();
    let v = json_line(&a);
    assert_eq!(v["remote"], "big.bin", "{v}");
    assert_eq!(u(&v, "resumed"), held, "{v}");
    // only the rest crossed the wire (counted in DATA frames)
    assert!(u(&v, "wire") < SIZE as u64 - held / 2, "{v}");
    assert_eq!(std::fs::read(s.root.join("big.bin")).unwrap(), data);
    assert_eq!(s.files(), ["big.bin"], "no numbered copy, no leftover");
    assert_eq!(kept_on_server(&s.root), 0);
}

#[test]
fn a_killed_download_resumes_from_its_part_file() {
    let s = Server::start();
    let data = noise(SIZE, 2);
    std::fs::write(s.root.join("big.bin"), &data).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let child = spawn(&s, &["get", "big.bin", "-o", dest.to_str().unwrap()]);
    let part = part_of(&dest);
    kill_midway(child, || len(&part));
    let held = len(&part);
    assert!(held > 0 && held < SIZE as u64, "{held}");
    assert!(!dest.exists(), "nothing unverified is visible");

    let a = s
        .client()
        .args(["--json", "get", "big.bin", "-o", dest.to_str().unwrap()])
        .assert()
        .success();
    let v = json_line(&a);
    assert_eq!(u(&v, "resumed"), held, "{v}");
    assert!(u(&v, "wire") < SIZE as u64 - held / 2, "{v}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(!part.exists(), "the part file became the download");
}

#[test]
fn a_changed_prefix_is_detected_and_the_transfer_starts_over() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    // upload: the local file's first bytes change between the two runs
    let mut data = noise(SIZE, 3);
    let f = work.path().join("up.bin");
    std::fs::write(&f, &data).unwrap();
    kill_midway(spawn(&s, &["put", f.to_str().unwrap()]), || {
        kept_on_server(&s.root)
    });
    wait_for("the partial upload to be kept", || {
        s.log_text().contains("outcome=\"kept\"")
    });
    data[..4096].fill(0xAB);
    std::fs::write(&f, &data).unwrap();
    let v = json_line(
        &s.client()
            .args(["--json", "put", f.to_str().unwrap()])
            .assert()
            .success(),
    );
    assert_eq!(
        u(&v, "resumed"),
        0,
        "a different prefix is not resumed: {v}"
    );
    assert_eq!(std::fs::read(s.root.join("up.bin")).unwrap(), data);

    // download: the local part changed
    let other = noise(SIZE, 4);
    std::fs::write(s.root.join("down.bin"), &other).unwrap();
    let dest = work.path().join("down.bin");
    let part = part_of(&dest);
    kill_midway(
        spawn(&s, &["get", "down.bin", "-o", dest.to_str().unwrap()]),
        || len(&part),
    );
    let mut bad = std::fs::read(&part).unwrap();
    bad[10] ^= 1;
    std::fs::write(&part, &bad).unwrap();
    let v = json_line(
        &s.client()
            .args(["--json", "get", "down.bin", "-o", dest.to_str().unwrap()])
            .assert()
            .success(),
    );
    assert_eq!(u(&v, "resumed"), 0, "{v}");
    assert_eq!(std::fs::read(&dest).unwrap(), other);

    // download: the file on the server changed (replaced) since the cut
    std::fs::remove_file(&dest).unwrap();
    kill_midway(
        spawn(&s, &["get", "down.bin", "-o", dest.to_str().unwrap()]),
        || len(&part),
    );
    let newer = noise(SIZE, 5);
    std::fs::write(s.root.join("down.bin"), &newer).unwrap();
    let v = json_line(
        &s.client()
            .args(["--json", "get", "down.bin", "-o", dest.to_str().unwrap()])
            .assert()
            .success(),
    );
    assert_eq!(u(&v, "resumed"), 0, "{v}");
    assert_eq!(std::fs::read(&dest).unwrap(), newer);
}

#[test]
fn no_resume_starts_over() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let data = noise(SIZE, 6);
    let f = work.path().join("big.bin");
    std::fs::write(&f, &data).unwrap();
    kill_midway(spawn(&s, &["put", f.to_str().unwrap()]), || {
        kept_on_server(&s.root)
    });
    wait_for("the partial upload to be kept", || {
        s.log_text().contains("outcome=\"kept\"")
    });
    let v = json_line(
        &s.client()
            .args(["--json", "--no-resume", "put", f.to_str().unwrap()])
            .assert()
            .success(),
    );
    assert_eq!(u(&v, "resumed"), 0, "{v}");
    assert!(u(&v, "wire") >= SIZE as u64, "{v}");
    assert_eq!(std::fs::read(s.root.join("big.bin")).unwrap(), data);
}

#[test]
fn a_server_killed_and_restarted_is_waited_for_by_retries() {
    let mut s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let data = noise(SIZE, 7);
    std::fs::write(s.root.join("big.bin"), &data).unwrap();
    let dest = work.path().join("big.bin");
    let part = part_of(&dest);
    // download
    let child = s
        .process()
        .args([
            "--json",
            "--limit-rate",
            "4MB",
            "--retries",
            "5",
            "get",
            "big.bin",
        ])
        .args(["-o", dest.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the download to get going", || len(&part) > 2 << 20);
    s.crash_and_restart_same_port(Duration::from_millis(1500), &[]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(u(&v, "resumed") > 0, "the retry resumed: {v}");

    // upload (the server's partials do not survive its restart: the retry
    // starts the file over, and the result is still exact)
    let up = noise(SIZE, 8);
    let f = work.path().join("up.bin");
    std::fs::write(&f, &up).unwrap();
    let child = s
        .process()
        .args([
            "--limit-rate",
            "4MB",
            "--retries",
            "5",
            "put",
            f.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the upload to get going", || {
        kept_on_server(&s.root) > 2 << 20
    });
    s.crash_and_restart_same_port(Duration::from_millis(1500), &[]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert_eq!(std::fs::read(s.root.join("up.bin")).unwrap(), up);
}

#[test]
fn errors_that_are_not_the_network_are_never_retried() {
    let s = Server::start();
    let a = s
        .client()
        .env("SFT_TOKEN", "wrong-token-0123456789")
        .args(["--retries", "3", "get", "nothing"])
        .assert()
        .code(5);
    assert!(!stderr_text(&a).contains("retrying"), "{}", stderr_text(&a));
    let a = s
        .client()
        .args(["--retries", "3", "get", "nothing"])
        .assert()
        .code(6);
    assert!(!stderr_text(&a).contains("retrying"), "{}", stderr_text(&a));
    // a server that cannot be reached at all is reported at once
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let started = Instant::now();
    let a = s
        .client()
        .env("SFT_SERVER", &addr)
        .args(["--retries", "3", "get", "nothing"])
        .assert()
        .code(3);
    assert!(!stderr_text(&a).contains("retrying"), "{}", stderr_text(&a));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Send SIGINT to a child process.
fn interrupt(child: &Child) {
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn ctrl_c_leaves_the_documented_partial_state_and_exits_130() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let data = noise(SIZE, 9);
    let f = work.path().join("big.bin");
    std::fs::write(&f, &data).unwrap();
    // upload: the server keeps what it received, the client says so
    let child = spawn(&s, &["put", f.to_str().unwrap()]);
    wait_for("the upload to get going", || {
        kept_on_server(&s.root) > 1 << 20
    });
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("the server keeps what it received of 'big.bin'")
            && stderr.contains("run the same command again"),
        "{stderr}"
    );
    wait_for("the server to keep it", || {
        s.log_text().contains("outcome=\"kept\"")
    });
    let visible: Vec<String> = s
        .files()
        .into_iter()
        .filter(|f| !f.contains(".sft-tmp-"))
        .collect();
    assert!(visible.is_empty(), "nothing visible: {visible:?}");

    // download: the part file stays, named in the message
    std::fs::write(s.root.join("d.bin"), &data).unwrap();
    let dest = work.path().join("d.bin");
    let part = part_of(&dest);
    let child = spawn(&s, &["get", "d.bin", "-o", dest.to_str().unwrap()]);
    wait_for("the download to get going", || len(&part) > 1 << 20);
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&part.display().to_string()) && stderr.contains("delete that file"),
        "{stderr}"
    );
    assert!(part.exists() && !dest.exists());
}

#[test]
fn a_partial_past_keep_partial_is_swept_and_its_reservation_released() {
    let s = Server::start_args(&["--keep-partial", "3s", "--quota", "100MB"]);
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("big.bin");
    std::fs::write(&f, noise(SIZE, 10)).unwrap();
    kill_midway(spawn(&s, &["put", f.to_str().unwrap()]), || {
        kept_on_server(&s.root)
    });
    wait_for("the partial upload to be kept", || {
        s.log_text().contains("outcome=\"kept\"")
    });
    let reserved = || {
        let a = s.client().args(["--json", "df"]).assert().success();
        let out = stdout_text(&a);
        // the server's row (name null): the whole server's reservations
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|row| row.get("reserved").is_some() && row["name"].is_null())
            .map(|row| u(&row, "reserved"))
            .unwrap_or_else(|| panic!("no server row in {out}"))
    };
    assert_eq!(reserved(), SIZE as u64, "the whole file stays reserved");
    assert!(kept_on_server(&s.root) > 0);
    wait_for("the partial to expire", || kept_on_server(&s.root) == 0);
    wait_for("its reservation to go", || reserved() == 0);
    assert!(s.log_text().contains("kept longer than --keep-partial"));
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_resume_answers_are_checked() {
    use sft::protocol::Msg;
    let s = Server::start();
    std::fs::write(s.root.join("f.bin"), b"0123456789").unwrap();
    let mut r = s.raw().await;
    // GET beyond the end: PARTIAL offers the whole file
    r.w.send_now(&Msg::Get {
        offset: 99,
        compress: 0,
        name: "f.bin".into(),
    })
    .await
    .unwrap();
    use sha2::Digest;
    let whole: [u8; 32] = sha2::Sha256::digest(b"0123456789").into();
    match r.next().await {
        Msg::Partial { offset, sha256 } => assert_eq!((offset, sha256), (10, whole)),
        other => panic!("{other:?}"),
    }
    r.w.send_now(&Msg::Resume { offset: 10 }).await.unwrap();
    // the mode and the size of the whole file, then nothing more but END
    let mut m = r.next().await;
    if let Msg::Attrs { .. } = m {
        m = r.next().await;
    }
    assert!(matches!(m, Msg::GetOk { size: 10, .. }), "{m:?}");
    assert!(matches!(r.next().await, Msg::End { sha256 } if sha256 == whole));
    // a RESUME at another offset than offered breaks the session
    r.w.send_now(&Msg::Get {
        offset: 4,
        compress: 0,
        name: "f.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::Partial { offset: 4, .. }));
    r.w.send_now(&Msg::Resume { offset: 3 }).await.unwrap();
    assert!(matches!(
        r.next_or_closed().await,
        Some(Msg::Error { code: 9, .. }) | None
    ));
    // RESUME with PIPELINED is refused
    let mut r = s.raw().await;
    r.w.send_now(&Msg::Put {
        size: 5 << 20,
        flags: sft::protocol::PUT_RESUME | sft::protocol::PUT_PIPELINED,
        name: "x.bin".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::Error { code: 9, .. }));
}

#[test]
fn a_directory_holding_only_kept_partials_can_be_removed() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("big.bin");
    std::fs::write(&f, noise(SIZE, 11)).unwrap();
    kill_midway(
        spawn(&s, &["put", f.to_str().unwrap(), "--to", "d"]),
        || {
            let d = s.root.join("d");
            if d.is_dir() { kept_on_server(&d) } else { 0 }
        },
    );
    wait_for("the partial upload to be kept", || {
        s.log_text().contains("outcome=\"kept\"")
    });
    // it lists as empty, and removing it removes the kept data too
    let a = s.client().args(["ls", "d"]).assert().success();
    assert_eq!(stdout_text(&a).trim(), "");
    s.client().args(["rm", "-r", "-y", "d"]).assert().success();
    assert!(!s.root.join("d").exists());
}

#[test]
fn ctrl_c_in_the_shell_stops_the_transfer_and_returns_to_the_prompt() {
    use std::io::Write;
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("big.bin");
    std::fs::write(&f, noise(SIZE, 12)).unwrap();
    let mut sh = s
        .process()
        .args(["--limit-rate", "4MB", "shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sh.stdin.take().unwrap();
    writeln!(stdin, "put {}", f.display()).unwrap();
    stdin.flush().unwrap();
    wait_for("the upload to get going", || {
        kept_on_server(&s.root) > 1 << 20
    });
    interrupt(&sh);
    wait_for("the server to keep the cut upload", || {
        s.log_text().contains("outcome=\"kept\"")
    });
    // the shell goes on, on a new session
    writeln!(stdin, "mkdir after-ctrl-c").unwrap();
    writeln!(stdin, "exit").unwrap();
    drop(stdin);
    let out = sh.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(s.root.join("after-ctrl-c").is_dir(), "{stderr}");
    assert!(!s.root.join("big.bin").exists());
}

#[test]
fn a_file_that_changed_size_drops_its_stale_partial() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("big.bin");
    std::fs::write(&f, noise(SIZE, 13)).unwrap();
    kill_midway(spawn(&s, &["put", f.to_str().unwrap()]), || {
        kept_on_server(&s.root)
    });
    wait_for("the partial upload to be kept", || {
        s.log_text().contains("outcome=\"kept\"")
    });
    let smaller = noise(SIZE - 12345, 14);
    std::fs::write(&f, &smaller).unwrap();
    let v = json_line(
        &s.client()
            .args(["--json", "put", f.to_str().unwrap()])
            .assert()
            .success(),
    );
    assert_eq!(u(&v, "resumed"), 0, "{v}");
    assert_eq!(std::fs::read(s.root.join("big.bin")).unwrap(), smaller);
    // nothing of the old attempt is left, nor its reservation
    assert_eq!(kept_on_server(&s.root), 0);
    let a = s.client().args(["--json", "df"]).assert().success();
    assert!(
        stdout_text(&a)
            .lines()
            .all(|l| !l.contains("\"reserved\"") || l.contains("\"reserved\":0")),
        "{}",
        stdout_text(&a)
    );
}

#[test]
fn a_retried_tree_upload_reports_each_file_once() {
    let mut s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..3 {
        std::fs::write(tree.join(format!("f{i}.bin")), noise(6 << 20, 20 + i)).unwrap();
    }
    let child = s
        .process()
        .args([
            "--json",
            "--limit-rate",
            "6MB",
            "--retries",
            "5",
            "put",
            "-r",
        ])
        .arg(&tree)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the first file is stored, the second in flight: the server goes away
    wait_for("the first file", || s.root.join("t/f0.bin").exists());
    wait_for("the second in flight", || {
        let d = s.root.join("t");
        kept_on_server(&d) > 1 << 20
    });
    s.crash_and_restart_same_port(Duration::from_millis(1000), &[]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("retrying in"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["remote"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["t/f0.bin", "t/f1.bin", "t/f2.bin"], "{stdout}");
    for i in 0..3 {
        assert_eq!(
            std::fs::read(s.root.join(format!("t/f{i}.bin"))).unwrap(),
            noise(6 << 20, 20 + i)
        );
    }
}

#[test]
fn keep_partial_zero_keeps_nothing_and_frees_the_space() {
    let s = Server::start_args(&["--keep-partial", "0", "--quota", "100MB"]);
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("big.bin");
    std::fs::write(&f, noise(SIZE, 15)).unwrap();
    kill_midway(spawn(&s, &["put", f.to_str().unwrap()]), || {
        kept_on_server(&s.root)
    });
    wait_for("the cut upload to be removed", || {
        kept_on_server(&s.root) == 0
    });
    assert!(!s.log_text().contains("outcome=\"kept\""));
    // the reservation goes with the session's end, a moment after the file
    wait_for("the reservation to be released", || {
        let a = s.client().args(["--json", "df"]).assert().success();
        stdout_text(&a)
            .lines()
            .all(|l| !l.contains("\"reserved\"") || l.contains("\"reserved\":0"))
    });
    // and the same command starts over
    let v = json_line(
        &s.client()
            .args(["--json", "put", f.to_str().unwrap()])
            .assert()
            .success(),
    );
    assert_eq!(u(&v, "resumed"), 0, "{v}");
}
