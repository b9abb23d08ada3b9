//! Operating a server: what `sft serve` says when it starts, how it treats
//! its root, changing a user's role, `sft admin status`, and backups that
//! keep (or lose) the owner and digest of every file.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Opts, Server, add_user, bin};

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

/// `sft serve` with its defaults (generated certificate and token) in `work`,
/// on 127.0.0.1:0; returns the child and its stdout up to the `sft put` hint.
fn serve_zero_config(work: &Path, state: &Path, root: &str) -> (Child, String) {
    let mut child = Command::new(bin())
        .current_dir(work)
        .args(["serve", "--listen", "127.0.0.1:0", "--fsync", "never"])
        .args(["--root", root, "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let text = read_banner(child.stdout.take().unwrap());
    (child, text)
}

/// Lines up to and including the "sft put" hint (at most 12, within 30 s).
fn read_banner(out: impl std::io::Read + Send + 'static) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().take(12) {
            let Ok(l) = line else { break };
            let last = l.contains("sft put");
            if tx.send(l).is_err() || last {
                break;
            }
        }
    });
    let mut text = String::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(30)) {
        text.push_str(&l);
        text.push('\n');
    }
    text
}

fn export_vars(banner: &str) -> Vec<(String, String)> {
    banner
        .lines()
        .find(|l| l.trim_start().starts_with("export "))
        .unwrap_or_else(|| panic!("no export line in:\n{banner}"))
        .trim_start()
        .trim_start_matches("export ")
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn serve_names_its_addresses_and_never_prints_the_token_into_a_log() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    for start in 0..2 {
        let (child, banner) = serve_zero_config(work.path(), &state, "sft-data");
        let token = std::fs::read_to_string(state.join("token")).unwrap();
        let token = token.trim();
        let mut lines = banner.lines();
        assert!(
            lines.next().unwrap().starts_with("listening on 127.0.0.1:"),
            "{banner}"
        );
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("reachable on: 127.0.0.1:"),
            "{banner}"
        );
        // stdout is a pipe here, as under systemd: the token stays in its file
        assert!(!banner.contains(token), "token printed:\n{banner}");
        let token_line = banner.lines().find(|l| l.starts_with("token: ")).unwrap();
        assert!(
            token_line.contains(&state.join("token").display().to_string()),
            "{token_line}"
        );
        if start == 0 {
            assert!(token_line.contains("new"), "{token_line}");
        } else {
            assert!(token_line.contains("printed only when it was made"));
        }
        // the printed line connects without the secret in it
        let vars = export_vars(&banner);
        assert!(vars.iter().any(|(k, _)| k == "SFT_TOKEN_FILE"), "{vars:?}");
        assert_cmd::Command::new(bin())
            .env_clear()
            .envs(vars)
            .arg("ls")
            .timeout(Duration::from_secs(60))
            .assert()
            .success();
        stop(child);
    }
}

#[test]
fn serve_on_a_terminal_prints_a_new_token_once() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1) is not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let run = |label: &str| -> String {
        // script(1) gives sft serve a pseudo-terminal as stdout
        let cmd = format!(
            "exec {} serve --listen 127.0.0.1:0 --fsync never --root data --state-dir {}",
            bin().display(),
            state.display()
        );
        let mut script = Command::new("script")
            .current_dir(work.path())
            .args(["-qfec", &cmd, "/dev/null"])
            .env("SFT_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let banner = read_banner(script.stdout.take().unwrap()).replace('\r', "");
        // end the server (script's child, which we started through it) with
        // SIGTERM, then script itself
        let children = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            script.id(),
            script.id()
        ))
        .unwrap_or_default();
        for pid in children.split_whitespace() {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
        }
        let _ = script.wait();
        assert!(banner.starts_with("listening on "), "{label}: {banner}");
        banner
    };
    let first = run("first start");
    let token = std::fs::read_to_string(state.join("token")).unwrap();
    let token = token.trim();
    assert!(
        first.contains(&format!("token: {token}  (new: shown only this once")),
        "{first}"
    );
    assert!(first.contains(&format!("SFT_TOKEN={token}")), "{first}");
    let second = run("second start");
    assert!(!second.contains(token), "printed again:\n{second}");
    assert!(second.contains("SFT_TOKEN_FILE="), "{second}");
}

#[test]
fn serve_refuses_a_root_that_is_a_file_and_says_so() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("notes.txt"), b"x").unwrap();
    let a = assert_cmd::Command::new(bin())
        .current_dir(work.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--root", "notes.txt"])
        .args(["--state-dir", "state"])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(2);
    let err = stderr_of(&a);
    assert!(
        err.contains("--root notes.txt is a file, not a directory"),
        "{err}"
    );
    assert!(
        !err.contains("File exists") && !err.contains("os error"),
        "{err}"
    );
}

#[test]
fn serve_creates_only_the_last_component_of_its_root() {
    let work = tempfile::tempdir().unwrap();
    let a = assert_cmd::Command::new(bin())
        .current_dir(work.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--root", "srv/sft/data"])
        .args(["--state-dir", "state"])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(2);
    let err = stderr_of(&a);
    assert!(
        err.contains(
            "--root srv/sft/data: the directory it would be made in, srv/sft, does not exist"
        ),
        "{err}"
    );
    assert!(err.contains("mkdir -p srv/sft"), "{err}");
    assert!(!work.path().join("srv").exists(), "a parent was created");

    // with the parent in place, the last component is made and served
    std::fs::create_dir_all(work.path().join("srv/sft")).unwrap();
    let (child, banner) =
        serve_zero_config(work.path(), &work.path().join("state"), "srv/sft/data");
    assert!(banner.starts_with("listening on "), "{banner}");
    assert!(work.path().join("srv/sft/data").is_dir());
    stop(child);
}

#[test]
fn user_role_changes_what_a_user_may_do_on_a_running_server() {
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users.toml");
    let bob = add_user(&users, "bob", "read");
    let s = Server::start_args(&["--users", users.to_str().unwrap()]);
    let src = users_dir.path().join("a.txt");
    std::fs::write(&src, b"role test\n").unwrap();
    let put = |expect: i32| {
        let mut c = s.client();
        c.env("SFT_TOKEN", &bob).arg("put").arg(&src);
        let a = c.assert().code(expect);
        stderr_of(&a)
    };
    let err = put(5);
    assert!(err.contains("user bob (role read) cannot put"), "{err}");

    let a = assert_cmd::Command::new(bin())
        .args(["user", "role", "bob", "write", "--users"])
        .arg(&users)
        .assert()
        .success();
    assert!(
        stderr_of(&a).contains("user bob now has role write (was read)"),
        "{}",
        stderr_of(&a)
    );
    let listed = assert_cmd::Command::new(bin())
        .args(["user", "list", "--users"])
        .arg(&users)
        .assert()
        .success();
    assert!(
        stdout_of(&listed)
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["bob", "write"])),
        "{}",
        stdout_of(&listed)
    );
    // the server re-reads the file; the same token now may upload
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = s.client();
        c.env("SFT_TOKEN", &bob).arg("put").arg(&src);
        if c.output().unwrap().status.success() {
            break;
        }
        assert!(std::time::Instant::now() < until, "role change not applied");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(s.files(), vec!["a.txt".to_string()]);

    // unknown users and roles are refused, the file unchanged
    let before = std::fs::read_to_string(&users).unwrap();
    let a = assert_cmd::Command::new(bin())
        .args(["user", "role", "nobody", "admin", "--users"])
        .arg(&users)
        .assert()
        .failure();
    assert!(
        stderr_of(&a).contains("no user nobody in"),
        "{}",
        stderr_of(&a)
    );
    assert_cmd::Command::new(bin())
        .args(["user", "role", "bob", "root", "--users"])
        .arg(&users)
        .assert()
        .code(2);
    assert_eq!(std::fs::read_to_string(&users).unwrap(), before);
}

#[test]
fn admin_status_counts_this_connection_and_files_in_english() {
    let s = Server::start();
    let a = s.client().args(["admin", "status"]).assert().success();
    let out = stdout_of(&a);
    assert!(out.contains("connections: 1 (this one)\n"), "{out}");
    assert!(out.contains(" in 0 files ("), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("one.txt");
    std::fs::write(&f, b"one\n").unwrap();
    s.client().arg("put").arg(&f).assert().success();
    // a second, idle connection
    let mut shell = s
        .process()
        .arg("shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let out = loop {
        let a = s.client().args(["admin", "status"]).assert().success();
        let out = stdout_of(&a);
        if out.contains("connections: 2") || std::time::Instant::now() > until {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = shell.kill();
    let _ = shell.wait();
    assert!(
        out.contains("connections: 2 (this one and 1 other)\n"),
        "{out}"
    );
    assert!(out.contains("storage used: 4 bytes in 1 file ("), "{out}");
}

/// A server with a write user "alice" whose upload `report.txt` it holds.
struct Owned {
    s: Server,
    users: PathBuf,
    alice: String,
    _dir: tempfile::TempDir,
}

fn server_with_alices_file() -> Owned {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let alice = add_user(&users, "alice", "write");
    let s = Server::start_args(&["--users", users.to_str().unwrap()]);
    let f = dir.path().join("report.txt");
    std::fs::write(&f, b"quarterly numbers\n").unwrap();
    s.client()
        .env("SFT_TOKEN", &alice)
        .arg("put")
        .arg(&f)
        .assert()
        .success();
    Owned {
        s,
        users,
        alice,
        _dir: dir,
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 512];
    let n = rustix::fs::getxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Start a server on `root`, check its start-up note, and see whether
/// alice may still remove her file.
fn serve_restored(o: &Owned, root: &Path, kept: bool) {
    let s = Server::start_with(Opts {
        root: Some(root.to_path_buf()),
        extra: &["--users", o.users.to_str().unwrap()],
        ..Default::default()
    });
    let log = s.log_text();
    let mut c = s.client();
    c.env("SFT_TOKEN", &o.alice).args(["rm", "report.txt"]);
    if kept {
        assert!(
            log.contains("files under the root: 1, each with a recorded owner and SHA-256"),
            "{log}"
        );
        c.assert().success();
        assert!(s.files().is_empty());
    } else {
        assert!(
            log.contains("files without a recorded owner: 1")
                && log.contains("without a recorded SHA-256: 1"),
            "{log}"
        );
        let a = c.assert().code(5);
        assert!(
            stderr_of(&a).contains("permission denied"),
            "{}",
            stderr_of(&a)
        );
    }
}

#[test]
fn a_root_restored_with_tar_xattrs_or_cp_a_keeps_owners_and_digests() {
    let o = server_with_alices_file();
    let file = o.s.root.join("report.txt");
    let owner = xattr(&file, "user.sft.owner").expect("owner recorded");
    let digest = xattr(&file, "user.sft.sha256").expect("digest recorded");
    assert_eq!(owner, b"alice");
    let backups = tempfile::tempdir().unwrap();
    let run = |cmd: &mut Command| {
        let st = cmd.status().unwrap();
        assert!(st.success(), "{cmd:?}");
    };

    // tar --xattrs: back up, restore elsewhere
    let archive = backups.path().join("root.tar");
    run(Command::new("tar")
        .arg("--xattrs")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&o.s.root)
        .arg("."));
    let from_tar = backups.path().join("from-tar");
    std::fs::create_dir(&from_tar).unwrap();
    run(Command::new("tar")
        .arg("--xattrs")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&from_tar));
    let restored = from_tar.join("report.txt");
    assert_eq!(xattr(&restored, "user.sft.owner").as_ref(), Some(&owner));
    assert_eq!(xattr(&restored, "user.sft.sha256").as_ref(), Some(&digest));

    // cp -a
    let from_cp = backups.path().join("from-cp-a");
    run(Command::new("cp").arg("-a").arg(&o.s.root).arg(&from_cp));
    assert_eq!(
        xattr(&from_cp.join("report.txt"), "user.sft.sha256").as_ref(),
        Some(&digest)
    );

    serve_restored(&o, &from_tar, true);
    serve_restored(&o, &from_cp, true);
}

#[test]
fn a_root_copied_with_cp_r_loses_owners_and_the_server_says_so() {
    let o = server_with_alices_file();
    let backups = tempfile::tempdir().unwrap();
    let copy = backups.path().join("cp-r");
    let st = Command::new("cp")
        .arg("-r")
        .arg(&o.s.root)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(xattr(&copy.join("report.txt"), "user.sft.owner"), None);
    serve_restored(&o, &copy, false);
}
