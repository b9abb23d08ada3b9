//! Users, roles, admin commands, graceful shutdown and the audit log,
//! through the real binary over TLS on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Team {
    s: Server,
    _users_dir: tempfile::TempDir,
    users: PathBuf,
    reader: String,
    writer: String,
    writer2: String,
    admin: String,
}

fn team_with(extra: &[&str], log_level: Option<&str>) -> Team {
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users.toml");
    let reader = add_user(&users, "rita", "read");
    let writer = add_user(&users, "walt", "write");
    let writer2 = add_user(&users, "wendy", "write");
    let admin = add_user(&users, "ada", "admin");
    let mut args = vec!["--users", users.to_str().unwrap()];
    args.extend_from_slice(extra);
    let s = Server::start_with(Opts {
        extra: &args,
        log_level,
        ..Default::default()
    });
    Team {
        s,
        _users_dir: users_dir,
        users,
        reader,
        writer,
        writer2,
        admin,
    }
}

fn team() -> Team {
    team_with(&[], None)
}

impl Team {
    fn as_user(&self, token: &str) -> assert_cmd::Command {
        let mut c = self.s.client();
        c.env("SFT_TOKEN", token);
        c
    }
}

fn file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn each_role_is_allowed_and_denied_exactly_as_documented() {
    let t = team();
    let work = tempfile::tempdir().unwrap();
    let a = file(work.path(), "a.txt", b"alpha\n");

    // write: put, and the owner is recorded and shown by ls
    t.as_user(&t.writer).arg("put").arg(&a).assert().success();
    let ls = t.as_user(&t.reader).args(["ls", "-l"]).assert().success();
    let line = stdout_text(&ls);
    assert!(
        line.contains(" walt ") && line.trim_end().ends_with("a.txt"),
        "{line}"
    );

    // read: ls and get, nothing else
    let out = work.path().join("got.txt");
    t.as_user(&t.reader)
        .args(["get", "a.txt", "-o"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(std::fs::read(&out).unwrap(), b"alpha\n");
    let denied = t.as_user(&t.reader).arg("put").arg(&a).assert().code(5);
    assert_eq!(
        stderr_text(&denied).trim(),
        "sft: error: permission denied: user rita (role read) cannot put"
    );
    let denied = t.as_user(&t.reader).args(["rm", "a.txt"]).assert().code(5);
    assert!(stderr_text(&denied).contains("user rita (role read) cannot rm"));

    // write: not another user's file, neither rm nor overwrite
    let denied = t.as_user(&t.writer2).args(["rm", "a.txt"]).assert().code(5);
    assert!(
        stderr_text(&denied).contains("uploaded by walt"),
        "{}",
        stderr_text(&denied)
    );
    let denied = t
        .as_user(&t.writer2)
        .args(["put", "--overwrite"])
        .arg(&a)
        .assert()
        .code(5);
    assert!(stderr_text(&denied).contains("cannot overwrite"));
    // a new name for the same file is fine
    let put = t.as_user(&t.writer2).arg("put").arg(&a).assert().success();
    assert!(stdout_text(&put).contains("a (1).txt"));
    // the owner may replace and remove its own file
    t.as_user(&t.writer)
        .args(["put", "--overwrite"])
        .arg(&a)
        .assert()
        .success();
    t.as_user(&t.writer)
        .args(["rm", "a.txt"])
        .assert()
        .success();
    assert_eq!(t.s.files(), vec!["a (1).txt".to_string()]);

    // admin commands are for admins only, and the server carries on
    for user in [&t.reader, &t.writer] {
        let d = t.as_user(user).args(["admin", "shutdown"]).assert().code(5);
        assert!(stderr_text(&d).contains("cannot shut the server down"));
        t.as_user(user).args(["admin", "status"]).assert().code(5);
        t.as_user(user).args(["admin", "reload"]).assert().code(5);
    }
    t.as_user(&t.reader).arg("ls").assert().success();

    // admin: rm of anyone's file, status, reload
    t.as_user(&t.admin)
        .args(["rm", "a (1).txt"])
        .assert()
        .success();
    assert!(t.s.files().is_empty());
    t.as_user(&t.admin)
        .args(["admin", "reload"])
        .assert()
        .success();
    let st = t
        .as_user(&t.admin)
        .args(["admin", "status"])
        .assert()
        .success();
    let text = stdout_text(&st);
    for field in [
        "uptime:",
        "connections:",
        "transfers in flight: 0",
        "bytes in:",
        "bytes out:",
        "storage used: 0 bytes in 0 files",
    ] {
        assert!(text.contains(field), "{field} missing in {text}");
    }
    // the denials are in the audit log
    let log = t.s.log_text();
    assert!(
        log.contains("event=\"denied\"") || log.contains("event=denied"),
        "{log}"
    );
}

#[test]
fn user_changes_take_effect_without_a_restart() {
    let t = team();
    // a user added while the server runs can connect at once
    let late = add_user(&t.users, "late", "read");
    t.as_user(&late).arg("ls").assert().success();
    // a rotated token: the old one stops working, the new one works
    let out = Command::new(bin())
        .args(["user", "token", "late", "--users"])
        .arg(&t.users)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rotated = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let a = t.as_user(&late).arg("ls").assert().code(5);
    assert!(stderr_text(&a).contains("authentication failed"));
    t.as_user(&rotated).arg("ls").assert().success();
    // list shows users and roles, never tokens
    let list = Command::new(bin())
        .args(["user", "list", "--users"])
        .arg(&t.users)
        .output()
        .unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(text.contains("late") && text.contains("read") && text.contains("ada"));
    assert!(!text.contains(&rotated) && !text.contains(&t.admin));
    // the file holds digests only
    let stored = std::fs::read_to_string(&t.users).unwrap();
    assert!(!stored.contains(&rotated) && stored.contains("token_sha256"));
    // a removed user is refused
    let rm = Command::new(bin())
        .args(["user", "rm", "late", "--users"])
        .arg(&t.users)
        .status()
        .unwrap();
    assert!(rm.success());
    t.as_user(&rotated).arg("ls").assert().code(5);
    // mistakes get one clear line and a usage exit code
    let dup = Command::new(bin())
        .args(["user", "add", "ada", "--role", "read", "--users"])
        .arg(&t.users)
        .output()
        .unwrap();
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let gone = Command::new(bin())
        .args(["user", "rm", "nobody", "--users"])
        .arg(&t.users)
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(6));
}

/// Poll `sft admin status` until a transfer is in flight.
fn wait_for_transfer(t: &Team) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let out = t
            .as_user(&t.admin)
            .args(["admin", "status"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("transfers in flight: 1") {
            return;
        }
        assert!(Instant::now() < until, "no transfer started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn_put(t: &Team, token: &str, path: &Path, rate: &str) -> std::process::Child {
    t.s.process()
        .env("SFT_TOKEN", token)
        .args(["--compress", "off", "--limit-rate", rate, "put"])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn big_file(dir: &Path, mib: usize) -> (PathBuf, String) {
    use sha2::Digest;
    let p = dir.join("big.bin");
    let mut f = std::fs::File::create(&p).unwrap();
    let mut h = sha2::Sha256::new();
    for i in 0..mib {
        let chunk = noise(1 << 20, i as u64 + 1);
        h.update(&chunk);
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    (p, hex::encode(h.finalize()))
}

#[test]
fn admin_shutdown_lets_a_500_mib_upload_finish_and_refuses_new_connections() {
    let mut t = team();
    let work = tempfile::tempdir().unwrap();
    let (big, sum) = big_file(work.path(), 500);
    // ~4 s at 120 MB/s: long enough to shut down in the middle
    let put = spawn_put(&t, &t.writer, &big, "120MB");
    wait_for_transfer(&t);
    let a = t
        .as_user(&t.admin)
        .args(["admin", "shutdown", "--grace", "60s"])
        .assert()
        .success();
    assert!(stderr_text(&a).contains("shutting down"));
    // no new connections from now on
    let refused = t.as_user(&t.reader).arg("ls").assert().code(3);
    assert!(stderr_text(&refused).contains("cannot connect"));
    // the transfer in flight completes
    let out = put.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "upload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&sum));
    assert_eq!(t.s.wait_exit(Duration::from_secs(30)), Some(0));
    let stored = std::fs::read(t.s.root.join("big.bin")).unwrap();
    assert_eq!(sha256_hex(&stored), sum);
    let log = t.s.log_text();
    assert!(
        log.contains("shutdown requested by an admin") && log.contains("ada"),
        "{log}"
    );
}

#[test]
fn grace_shorter_than_the_transfer_aborts_it_cleanly_and_leaves_nothing() {
    let mut t = team();
    let work = tempfile::tempdir().unwrap();
    let (big, _) = big_file(work.path(), 48);
    // ~6 s at 8 MB/s, but only 1 s of grace
    let put = spawn_put(&t, &t.writer, &big, "8MB");
    wait_for_transfer(&t);
    t.as_user(&t.admin)
        .args(["admin", "shutdown", "--grace", "1s"])
        .assert()
        .success();
    let out = put.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("server is shutting down") && err.contains("nothing was stored"),
        "{err}"
    );
    assert_eq!(t.s.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(t.s.files().is_empty(), "{:?}", t.s.files());
    // and nothing half-visible anywhere under the root
    assert_eq!(std::fs::read_dir(&t.s.root).unwrap().count(), 0);
}

#[test]
fn sigterm_drains_like_admin_shutdown() {
    let mut t = team_with(&["--grace", "60s"], None);
    let work = tempfile::tempdir().unwrap();
    let (big, sum) = big_file(work.path(), 64);
    let put = spawn_put(&t, &t.writer, &big, "40MB");
    wait_for_transfer(&t);
    t.s.send_signal("TERM");
    let out = put.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.s.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(
        sha256_hex(&std::fs::read(t.s.root.join("big.bin")).unwrap()),
        sum
    );
}

#[test]
fn the_audit_log_has_one_line_per_event_and_never_a_token() {
    let mut t = team_with(&["--log-format", "json"], Some("debug"));
    let work = tempfile::tempdir().unwrap();
    let a = file(work.path(), "a.txt", b"audit me\n");
    t.as_user(&t.writer).arg("put").arg(&a).assert().success();
    t.as_user(&t.reader)
        .args(["get", "a.txt", "-o"])
        .arg(work.path().join("b.txt"))
        .assert()
        .success();
    t.as_user(&t.writer)
        .args(["rm", "a.txt"])
        .assert()
        .success();
    let wrong = "sft_not-a-real-token-but-secret-looking";
    t.as_user(wrong).arg("ls").assert().code(5);
    t.as_user(&t.admin)
        .args(["admin", "shutdown"])
        .assert()
        .success();
    assert_eq!(t.s.wait_exit(Duration::from_secs(30)), Some(0));
    let log = t.s.log_text();
    for secret in [TOKEN, &t.reader, &t.writer, &t.writer2, &t.admin, wrong] {
        assert!(!log.contains(secret), "a token leaked into the log");
    }
    let lines: Vec<&str> = log.lines().collect();
    let find = |event: &str, extra: &[&str]| {
        lines.iter().any(|l| {
            l.contains(&format!("\"event\":\"{event}\"")) && extra.iter().all(|x| l.contains(x))
        })
    };
    let sum = sha256_hex(b"audit me\n");
    assert!(find("connection", &["\"peer\":\"127.0.0.1:"]), "{log}");
    assert!(
        find("auth", &["\"user\":\"walt\"", "\"outcome\":\"ok\""]),
        "{log}"
    );
    assert!(find("auth", &["\"outcome\":\"denied\""]), "{log}");
    assert!(
        find(
            "put",
            &[
                "\"user\":\"walt\"",
                "\"name\":\"a.txt\"",
                "\"size\":9",
                &sum,
                "\"outcome\":\"ok\""
            ]
        ),
        "{log}"
    );
    assert!(
        find("get", &["\"user\":\"rita\"", &sum, "\"outcome\":\"sent\""]),
        "{log}"
    );
    assert!(
        find("rm", &["\"user\":\"walt\"", "\"outcome\":\"ok\""]),
        "{log}"
    );
    assert!(find("shutdown", &["\"by\":\"ada\""]), "{log}");
}

/// `rm -r` of a shared tree by a writer: its own files go, another user's
/// stays (and so does the directory holding it), and the command exits
/// with the refusal.
#[test]
fn rm_r_removes_what_the_user_may_and_reports_the_refusal() {
    let t = team();
    let work = tempfile::tempdir().unwrap();
    let mine = file(work.path(), "mine.txt", b"walt's");
    let theirs = file(work.path(), "theirs.txt", b"wendy's");
    t.as_user(&t.writer)
        .args(["put", "--to", "shared/a"])
        .arg(&mine)
        .assert()
        .success();
    t.as_user(&t.writer)
        .args(["put", "--to", "shared/b"])
        .arg(&mine)
        .assert()
        .success();
    t.as_user(&t.writer2)
        .args(["put", "--to", "shared/b"])
        .arg(&theirs)
        .assert()
        .success();
    let a = t
        .as_user(&t.writer)
        .args(["rm", "-r", "--yes", "shared"])
        .assert()
        .code(5);
    assert!(
        stderr_text(&a).contains("user walt (role write) cannot rm 'shared/b/theirs.txt'"),
        "{}",
        stderr_text(&a)
    );
    assert_eq!(t.s.files(), vec!["shared/b/theirs.txt"]);
    assert!(
        !t.s.root.join("shared/a").exists(),
        "an emptied directory goes"
    );
}
