//! `sft shell`: driven by a script on stdin, and through a pseudo-terminal
//! (rustyline: editing, history, completion).

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// `sft shell` in the background, all three streams piped.
fn spawn_shell(s: &Server) -> std::process::Child {
    s.process()
        .arg("shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A path as a quoted shell word.
fn q(p: &std::path::Path) -> String {
    format!("\"{}\"", p.display())
}

/// The whole tour in one session: put, mkdir, cd, ls (numbered), get and rm
/// by number, pwd, cd .., df, an unknown command that does not end it, exit.
#[test]
fn a_scripted_session_lists_gets_by_number_puts_and_exits() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let dl = work.path().join("downloads");
    std::fs::create_dir(&dl).unwrap();
    let hello = work.path().join("hello.txt");
    std::fs::write(&hello, b"hello, shell\n").unwrap();
    let notes = work.path().join("my notes.txt");
    let notes_data = noise(300_000, 7);
    std::fs::write(&notes, &notes_data).unwrap();
    let alpha = work.path().join("alpha.bin");
    std::fs::write(&alpha, noise(1000, 8)).unwrap();

    let script = format!(
        "# a comment, then a blank line\n\
         \n\
         put {hello}\n\
         mkdir docs\n\
         cd docs\n\
         put {notes}\n\
         put {alpha}\n\
         ls\n\
         lcd {dl}\n\
         get 2\n\
         rm 1\n\
         pwd\n\
         frobnicate now\n\
         cd ..\n\
         pwd\n\
         ls\n\
         get 2\n\
         get 2\n\
         df\n\
         exit\n\
         mkdir after-exit\n",
        hello = q(&hello),
        notes = q(&notes),
        alpha = q(&alpha),
        dl = q(&dl),
    );
    let a = s.client().arg("shell").write_stdin(script).assert();
    let (out, err) = (stdout_text(&a), stderr_text(&a));
    assert_eq!(a.get_output().status.code(), Some(0), "{out}\n{err}");

    // uploads print the digest and the stored name
    assert!(
        out.contains(&format!("{}  hello.txt\n", sha256_hex(b"hello, shell\n"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}  my notes.txt\n", sha256_hex(&notes_data))),
        "{out}"
    );
    // the listing in docs: numbered, sorted, human sizes
    let listing: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric) && l.contains("  -  "))
        .collect();
    assert!(
        listing
            .iter()
            .any(|l| l.trim_start().starts_with("1  -") && l.ends_with("  alpha.bin")),
        "{out}"
    );
    assert!(
        listing.iter().any(|l| l.trim_start().starts_with("2  -")
            && l.contains("293 KiB")
            && l.ends_with("  my notes.txt")),
        "{out}"
    );
    // the root listing shows the directory first, marked d and with a slash
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("1  d") && l.ends_with("  docs/")),
        "{out}"
    );
    // get by number: the same bytes, into the local directory set by lcd
    assert_eq!(std::fs::read(dl.join("my notes.txt")).unwrap(), notes_data);
    assert_eq!(
        out.matches(&format!("{}  my notes.txt\n", sha256_hex(&notes_data)))
            .count(),
        2,
        "{out}"
    );
    // a second get of the same file never replaces the first
    assert_eq!(
        std::fs::read(dl.join("hello.txt")).unwrap(),
        b"hello, shell\n"
    );
    assert_eq!(
        std::fs::read(dl.join("hello (1).txt")).unwrap(),
        b"hello, shell\n"
    );
    assert!(out.contains("  hello (1).txt\n"), "{out}");
    // pwd in docs, then at the root
    let pwds: Vec<&str> = out.lines().filter(|l| *l == "/docs" || *l == "/").collect();
    assert_eq!(pwds, ["/docs", "/"], "{out}");
    // df
    assert!(out.contains("NAME") && out.contains("disk: "), "{out}");
    // the unknown command was reported and the session went on
    assert!(
        err.contains("error: unknown command \"frobnicate\"; type help"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    // what the server holds: rm 1 removed docs/alpha.bin; nothing after exit ran
    assert_eq!(s.files(), ["docs/my notes.txt", "hello.txt"]);
    assert!(!s.root.join("after-exit").exists());
}

/// Names that would leave the root are refused on the client, before
/// anything is sent; the session goes on, and end of input ends it with 0.
#[test]
fn names_cannot_climb_out_of_the_root_and_eof_ends_the_shell() {
    let s = Server::start();
    let outside = s.root.parent().unwrap().join("outside.txt");
    std::fs::write(&outside, b"not yours").unwrap();
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("x.txt");
    std::fs::write(&local, b"x").unwrap();
    let script = format!(
        "mkdir sub\n\
         cd sub\n\
         cd ../..\n\
         cd /..\n\
         ls ../..\n\
         get ../outside.txt\n\
         get /../outside.txt\n\
         put {local} ../../escaped.txt\n\
         rm ../../outside.txt\n\
         get 4\n\
         cd nowhere\n\
         get \"unclosed\n\
         pwd\n\
         put {local} ../inroot.txt\n",
        local = q(&local)
    );
    let a = s
        .client()
        .arg("shell")
        .current_dir(work.path())
        .write_stdin(script)
        .assert();
    let (out, err) = (stdout_text(&a), stderr_text(&a));
    assert_eq!(a.get_output().status.code(), Some(0), "{out}\n{err}");
    assert_eq!(
        err.matches("'..' would leave the server's root directory")
            .count(),
        6,
        "{err}"
    );
    assert!(err.contains("no numbered listing yet"), "{err}");
    assert!(
        err.contains("'nowhere' does not exist on the server; see what is there with: ls"),
        "{err}"
    );
    assert!(err.contains("double quote is not closed"), "{err}");
    // still in sub; `..` inside the root is fine
    assert!(out.lines().any(|l| l == "/sub"), "{out}");
    assert!(out.contains("  /inroot.txt\n"), "{out}");
    assert_eq!(s.files(), ["inroot.txt"]);
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
    assert!(!s.root.parent().unwrap().join("escaped.txt").exists());
    assert!(!work.path().join("outside.txt").exists());
}

/// A lost session is not an ordinary failed command: the shell ends with
/// the network error's exit code.
#[test]
fn a_lost_session_ends_the_shell_with_its_error() {
    let mut s = Server::start();
    let mut child = spawn_shell(&s);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"pwd\n").unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 2];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"/\n");
    let _ = s.child.kill();
    let _ = s.child.wait();
    stdin.write_all(b"ls\nls\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("sft: error: "), "{err}");
}

/// Output of a process, collected by a thread; answers to what appears.
struct Screen {
    text: Arc<Mutex<Vec<u8>>>,
}

impl Screen {
    fn watch(mut r: impl Read + Send + 'static) -> Screen {
        let text = Arc::new(Mutex::new(Vec::new()));
        let t = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Screen { text }
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// Wait until `what` has appeared `times` times in all.
    fn wait_for(&self, what: &str, times: usize) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.shown().matches(what).count() < times {
            assert!(
                Instant::now() < until,
                "waited for {what:?} x{times}; the screen shows:\n{}",
                self.shown()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Through a pseudo-terminal (`script`), the rustyline path: a prompt with
/// the remote directory, tab completion of a remote name, history (up arrow),
/// and Ctrl-D ending the session with 0.
#[test]
fn on_a_terminal_the_shell_edits_completes_and_remembers() {
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_script {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let s = Server::start();
    std::fs::write(s.root.join("hello.txt"), b"from the server\n").unwrap();
    let work = tempfile::tempdir().unwrap();
    let cmd = format!("'{}' shell", bin().display());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("SFT_SERVER", &s.addr)
        .env("SFT_PIN", &s.pin)
        .env("SFT_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = child.stdin.take().unwrap();
    let screen = Screen::watch(child.stdout.take().unwrap());
    let mut type_keys = |k: &str| {
        keys.write_all(k.as_bytes()).unwrap();
        keys.flush().unwrap();
    };

    // rustyline turns bracketed paste on each time it is ready for a line;
    // keys typed before that would reach a terminal not yet in raw mode
    let ready = |n: usize| screen.wait_for("\x1b[?2004h", n);
    ready(1);
    screen.wait_for("sft:/> ", 1);
    // completion of a remote name: "hel" + Tab is hello.txt
    type_keys("get hel\t");
    screen.wait_for("get hello.txt", 1);
    type_keys("\r");
    screen.wait_for(&sha256_hex(b"from the server\n"), 1);
    ready(2);
    // history: up arrow brings back the last line, which is then edited
    type_keys("mkdir h1\r");
    ready(3);
    type_keys("\x1b[A");
    screen.wait_for("mkdir h1", 2);
    type_keys("2\r");
    ready(4);
    type_keys("cd h12\r");
    screen.wait_for("sft:/h12> ", 1);
    ready(5);
    // Ctrl-D at an empty prompt ends the session
    type_keys("\x04");
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < until,
            "the shell did not end; the screen shows:\n{}",
            screen.shown()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(keys);
    assert_eq!(status.code(), Some(0), "{}", screen.shown());
    assert_eq!(
        std::fs::read(work.path().join("hello.txt")).unwrap(),
        b"from the server\n"
    );
    assert!(s.root.join("h1").is_dir());
    assert!(s.root.join("h12").is_dir(), "{}", screen.shown());
}

/// A session the server closes while the shell sits at its prompt (the idle
/// timeout here) is opened again before the next command, which then runs
/// once, in the same remote directory.
#[test]
fn a_session_closed_while_idle_is_opened_again_for_the_next_command() {
    let s = Server::start_args(&["--idle-timeout", "1s"]);
    std::fs::create_dir(s.root.join("docs")).unwrap();
    std::fs::write(s.root.join("docs/a.txt"), b"a").unwrap();
    let mut child = spawn_shell(&s);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"cd docs\nls\n").unwrap();
    stdin.flush().unwrap();
    // idle for longer than the server allows
    std::thread::sleep(Duration::from_millis(2500));
    stdin.write_all(b"mkdir made-after\nls\nexit\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("session closed after 1s without a command")
            && stderr.contains("connecting again"),
        "{stderr}"
    );
    // the command after the pause ran once, in the directory kept from before
    assert!(s.root.join("docs/made-after").is_dir());
    assert_eq!(stdout.matches("a.txt").count(), 2, "{stdout}");
    assert!(stdout.contains("made-after"), "{stdout}");
}

/// sftp's habits in a script: patterns for get, put and rm, mget/mput,
/// get -r/put -r, ls -l with digests, and a number from an out-of-date
/// listing refused rather than acted on.
#[test]
fn patterns_many_files_trees_and_stale_numbers() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("tree/sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    std::fs::write(src.join("b.txt"), b"bb").unwrap();
    std::fs::write(src.join("c.bin"), b"ccc").unwrap();
    std::fs::write(src.join(".hidden.txt"), b"h").unwrap();
    std::fs::write(src.join("tree/x.log"), b"x").unwrap();
    std::fs::write(src.join("tree/sub/y.log"), b"yy").unwrap();
    let dl = work.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    let script = format!(
        "lcd {src}\n\
         put *.txt\n\
         mput c.bin tree/*.log\n\
         put -r tree\n\
         ls -l\n\
         rm 3\n\
         rm 3\n\
         lcd {dl}\n\
         get *.bin\n\
         mget x.log tree/sub/y.log\n\
         get -r tree copy\n\
         get nothing*\n\
         rm *.log\n\
         ls\n",
        src = q(&src),
        dl = q(&dl),
    );
    let a = s.client().arg("shell").write_stdin(script).assert();
    let (out, err) = (stdout_text(&a), stderr_text(&a));
    assert_eq!(a.get_output().status.code(), Some(0), "{out}\n{err}");

    // put *.txt took a.txt and b.txt, not .hidden.txt; mput took c.bin and
    // x.log; put -r took the tree
    for (name, data) in [("a.txt", &b"a"[..]), ("b.txt", b"bb"), ("c.bin", b"ccc")] {
        assert!(
            out.contains(&format!("{}  {name}\n", sha256_hex(data))),
            "{name}: {out}"
        );
    }
    assert!(!out.contains(".hidden.txt"), "{out}");
    // ls -l: numbered lines with the short digest before the name
    let line3 = out
        .lines()
        .find(|l| l.trim_start().starts_with("3  "))
        .unwrap_or_else(|| panic!("no line 3 in {out}"));
    let removed = line3.rsplit("  ").next().unwrap().to_string();
    let listing_digest = out
        .lines()
        .find(|l| l.ends_with("  c.bin") && l.trim_start().starts_with(char::is_numeric))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        listing_digest.contains(&sha256_hex(b"ccc")[..12]),
        "{listing_digest}"
    );
    // the first rm 3 removed that entry; the second was refused
    assert!(!removed.ends_with('/'), "line 3 is a file: {line3}");
    assert!(
        err.contains("3 is a number from an ls that is out of date"),
        "{err}"
    );
    assert!(!s.root.join(&removed).exists(), "{removed} still there");
    // get *.bin, mget, get -r: into the local directory set by lcd
    if removed != "c.bin" {
        assert_eq!(std::fs::read(dl.join("c.bin")).unwrap(), b"ccc");
    }
    assert_eq!(std::fs::read(dl.join("y.log")).unwrap(), b"yy");
    assert_eq!(std::fs::read(dl.join("copy/tree/x.log")).unwrap(), b"x");
    assert_eq!(
        std::fs::read(dl.join("copy/tree/sub/y.log")).unwrap(),
        b"yy"
    );
    assert!(err.contains("no remote file matches 'nothing*'"), "{err}");
    // rm *.log removed x.log at the root only
    assert!(!s.root.join("x.log").exists());
    assert!(s.root.join("tree/x.log").exists());
    assert!(s.root.join("tree/sub/y.log").exists());
}

/// On a terminal: Tab completes into a subdirectory (`cd doc/s<Tab>`), and
/// a download draws its bar and leaves the summary line.
#[test]
fn on_a_terminal_completion_goes_into_subdirectories_and_transfers_show_progress() {
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_script {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let s = Server::start();
    std::fs::create_dir_all(s.root.join("doc/sub")).unwrap();
    std::fs::write(s.root.join("doc/guide.txt"), noise(200_000, 5)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cmd = format!("'{}' shell", bin().display());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("SFT_SERVER", &s.addr)
        .env("SFT_PIN", &s.pin)
        .env("SFT_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = child.stdin.take().unwrap();
    let screen = Screen::watch(child.stdout.take().unwrap());
    let mut type_keys = |k: &str| {
        keys.write_all(k.as_bytes()).unwrap();
        keys.flush().unwrap();
    };
    let ready = |n: usize| screen.wait_for("\x1b[?2004h", n);
    ready(1);
    screen.wait_for("sft:/> ", 1);
    // "doc/s" + Tab is doc/sub/, one level below the remote directory
    type_keys("cd doc/s\t");
    screen.wait_for("cd doc/sub/", 1);
    type_keys("\r");
    screen.wait_for("sft:/doc/sub> ", 1);
    ready(2);
    // a download on a terminal: its line, and the summary scp would leave
    type_keys("get ../guide.txt\r");
    screen.wait_for("1 file, 195 KiB in ", 1);
    ready(3);
    type_keys("\x04");
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < until,
            "the shell did not end; the screen shows:\n{}",
            screen.shown()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(keys);
    assert_eq!(status.code(), Some(0), "{}", screen.shown());
    assert_eq!(
        std::fs::read(work.path().join("guide.txt")).unwrap(),
        noise(200_000, 5)
    );
}
