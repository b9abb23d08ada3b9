//! Everyday output and errors: `ls -l` lines that fit 100 columns, `ls
//! FILE`, messages that say which side a missing file is on and what to do,
//! and on a terminal the progress bars and the summary line a transfer leaves.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn ls_long_lines_fit_100_columns_with_the_name_last() {
    let s = Server::start();
    let data = noise(5000, 3);
    std::fs::create_dir(s.root.join("photos")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("quarterly-report-2026.pdf");
    std::fs::write(&f, &data).unwrap();
    s.client().arg("put").arg(&f).assert().success();
    let a = s.client().args(["ls", "-l"]).assert().success();
    let out = stdout_text(&a);
    let digest = sha256_hex(&data);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert!(
            l.chars().count() <= 100,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    assert!(
        lines[0].starts_with('d') && lines[0].ends_with("  photos/"),
        "{out}"
    );
    assert!(
        lines[1].ends_with(&format!("  {}  quarterly-report-2026.pdf", &digest[..12])),
        "{out}"
    );
    assert!(
        !out.contains(&digest),
        "the full digest is not in the default lines"
    );
    // the whole digest on request, in sums and in --json
    let a = s
        .client()
        .args(["ls", "-l", "--full-digest"])
        .assert()
        .success();
    assert!(
        stdout_text(&a).contains(&format!("{digest}  quarterly-report-2026.pdf")),
        "{}",
        stdout_text(&a)
    );
    let a = s.client().arg("sums").assert().success();
    assert_eq!(
        stdout_text(&a),
        format!("{digest}  quarterly-report-2026.pdf\n")
    );
    let a = s.client().args(["--json", "ls", "-l"]).assert().success();
    assert!(stdout_text(&a).contains(&format!("\"sha256\":\"{digest}\"")));
}

#[test]
fn ls_of_a_file_lists_that_file() {
    let s = Server::start();
    std::fs::create_dir(s.root.join("d")).unwrap();
    std::fs::write(s.root.join("d/one.txt"), b"1").unwrap();
    std::fs::write(s.root.join("d/two.txt"), b"22").unwrap();
    let a = s.client().args(["ls", "d/two.txt"]).assert().success();
    assert_eq!(stdout_text(&a), "two.txt\n");
    let a = s
        .client()
        .args(["ls", "-l", "d/two.txt"])
        .assert()
        .success();
    let out = stdout_text(&a);
    assert!(
        // the mode (`-rw-r--r--`, as the server has it), then the size
        out.split(' ')
            .next()
            .is_some_and(|m| m.len() == 10 && m.starts_with('-'))
            && out.contains(" 2 B ")
            && out.ends_with("  two.txt\n"),
        "{out}"
    );
    let a = s
        .client()
        .args(["--json", "ls", "d/two.txt"])
        .assert()
        .success();
    assert!(
        stdout_text(&a).contains("\"name\":\"d/two.txt\""),
        "{}",
        stdout_text(&a)
    );
}

/// Each message names the side the problem is on and what to do; pinned
/// word for word, one line each.
#[test]
fn errors_say_which_side_and_what_to_do() {
    let s = Server::start();
    std::fs::create_dir(s.root.join("dir")).unwrap();
    std::fs::write(s.root.join("dir/a.txt"), b"a").unwrap();
    let work = tempfile::tempdir().unwrap();
    let cases: [(&[&str], i32, &str); 7] = [
        (
            &["get", "missing.txt"],
            6,
            "'missing.txt' does not exist on the server; see what is there with: sft ls",
        ),
        (
            &["get", "dir/missing.txt"],
            6,
            "'dir/missing.txt' does not exist on the server; see what is there with: sft ls dir",
        ),
        (
            &["ls", "nodir"],
            6,
            "'nodir' does not exist on the server; see what is there with: sft ls",
        ),
        (
            &["get", "dir"],
            2,
            "'dir' is a directory on the server; to download it and everything in it, use -r: sft get -r dir",
        ),
        (
            &["rm", "dir"],
            2,
            "'dir' is a directory on the server; to remove it and everything in it, use -r: sft rm -r dir",
        ),
        (
            &["put", "missing.txt"],
            6,
            "local file 'missing.txt' does not exist (put uploads files from this machine; nothing was sent)",
        ),
        (
            &["rm", "gone.txt"],
            6,
            "'gone.txt' does not exist on the server; see what is there with: sft ls",
        ),
    ];
    for (args, code, want) in cases {
        let a = s
            .client()
            .args(args)
            .current_dir(work.path())
            .assert()
            .code(code);
        assert_eq!(stderr_text(&a), format!("sft: error: {want}\n"), "{args:?}");
    }
    assert!(s.root.join("dir/a.txt").exists());
}

/// Run `sft ARGS` under a pseudo-terminal (`script`); what the terminal
/// showed. None if `script` is not installed.
fn on_a_terminal(s: &Server, dir: &std::path::Path, args: &str) -> Option<(i32, String)> {
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_script {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return None;
    }
    let cmd = format!("'{}' {args}", bin().display());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("COLUMNS", "120")
        .env("SFT_SERVER", &s.addr)
        .env("SFT_PIN", &s.pin)
        .env("SFT_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("sft {args} did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let _ = status;
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn on_a_terminal_a_transfer_shows_bars_and_leaves_one_summary_line() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    for i in 0..3 {
        std::fs::write(work.path().join(format!("f{i}.bin")), noise(300_000, i)).unwrap();
    }
    // about a second at 1 MB/s: the bars are drawn several times
    let Some((code, screen)) =
        on_a_terminal(&s, work.path(), "put --limit-rate 1MB f0.bin f1.bin f2.bin")
    else {
        return;
    };
    assert_eq!(code, 0, "{screen}");
    // the overall bar counts files and says so; bytes have their own rate
    assert!(screen.contains("total "), "{screen}");
    assert!(screen.contains("files/s"), "{screen}");
    assert!(
        screen.contains("KiB/s") || screen.contains("MiB/s"),
        "{screen}"
    );
    // one summary line, as scp leaves
    let summary: Vec<&str> = screen
        .lines()
        .map(|l| {
            let l = l.trim_end_matches('\r');
            let l = l.rsplit("\x1b[2K").next().unwrap_or(l);
            l.rsplit('\r').next().unwrap_or(l)
        })
        .filter(|l| l.starts_with("3 files, 879 KiB in "))
        .collect();
    assert_eq!(summary.len(), 1, "{screen}");
    assert!(summary[0].trim_end().ends_with("/s"), "{summary:?}");
    assert_eq!(s.files(), ["f0.bin", "f1.bin", "f2.bin"]);

    // not on a terminal: no bars, no summary
    let a = s
        .client()
        .args(["get", "f0.bin", "-o"])
        .arg(work.path().join("copy.bin"))
        .assert()
        .success();
    assert!(!stderr_text(&a).contains(" in "), "{}", stderr_text(&a));
    // a download on a terminal leaves its line too
    let Some((code, screen)) = on_a_terminal(&s, work.path(), "get f1.bin -o back.bin") else {
        return;
    };
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("1 file, 293 KiB in "), "{screen}");
}

/// A --ca whose certificate is for other names: a plain sentence naming
/// both, no Rust Debug text.
#[test]
fn a_certificate_for_another_name_is_refused_in_plain_words() {
    let pem = sft::certs::self_signed(&["files.example.com".into()]).unwrap();
    let s = Server::start_with(Opts {
        pem: Some(pem),
        ..Default::default()
    });
    let mut c = s.client();
    c.env_remove("SFT_PIN").arg("--ca").arg(&s.cert).arg("ls");
    let a = c.assert().code(4);
    let err = stderr_text(&a);
    assert_eq!(
        err,
        format!(
            "sft: error: the certificate of {} is not trusted by --ca {}: the certificate is for files.example.com, not for 127.0.0.1; check the CA file and that the certificate covers the name you connect to\n",
            s.addr,
            s.cert.display()
        )
    );
}

/// A client that vanishes without closing TLS: the server's log line says
/// so in words, with no documentation URL.
#[test]
fn a_client_gone_without_close_notify_is_logged_plainly() {
    let s = Server::start();
    let mut child = s
        .process()
        .arg("shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"pwd\n").unwrap();
    let mut first = [0u8; 2];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"/\n");
    child.kill().unwrap();
    child.wait().unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !s.log_text().contains("connection ended") {
        assert!(std::time::Instant::now() < until, "{}", s.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = s.log_text();
    assert!(!log.contains("http"), "{log}");
    assert!(
        log.contains("the peer closed the connection without ending TLS (no close_notify)"),
        "{log}"
    );
}
