//! Addressing a server the way users write it: `sft://HOST:PORT/PATH`,
//! `PROFILE:PATH`, scp's `HOST:PATH`, with local names holding ':' still
//! reachable and trust taken only from what belongs to that server.

mod common;

use std::path::Path;

use common::{Server, TOKEN, stderr_text, stdout_text};

/// A client with no server, pin or profile from the environment: only the
/// token, a private config file and a known-servers file in `work`.
fn bare(work: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("sft").unwrap();
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", work)
        .env("SFT_TOKEN", TOKEN)
        .env("SFT_CONFIG", work.join("config.toml"))
        .env("SFT_KNOWN_SERVERS", work.join("known_servers"))
        .current_dir(work)
        .timeout(std::time::Duration::from_secs(60));
    c
}

fn port(s: &Server) -> &str {
    s.addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("")
}

fn write_config(work: &Path, text: &str) {
    common::write_private(&work.join("config.toml"), text.as_bytes());
}

#[test]
fn sft_urls_work_wherever_a_remote_name_goes() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_config(w, "");
    std::fs::write(w.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(w.join("b.txt"), b"beta\n").unwrap();
    let url = format!("sft://{}", s.addr);
    bare(w)
        .args(["trust", &s.addr, "--pin", &s.pin])
        .assert()
        .success();

    // put into a directory, then a single file under another name
    let a = bare(w)
        .args(["put", "a.txt", "b.txt", &format!("{url}/docs/")])
        .assert()
        .success();
    assert!(
        stdout_text(&a).contains("docs/a.txt"),
        "{}",
        stdout_text(&a)
    );
    bare(w)
        .args(["put", "a.txt", &format!("{url}/docs/renamed.txt")])
        .assert()
        .success();
    assert_eq!(
        s.files(),
        vec!["docs/a.txt", "docs/b.txt", "docs/renamed.txt"]
    );
    assert_eq!(
        std::fs::read(s.root.join("docs/renamed.txt")).unwrap(),
        b"alpha\n"
    );
    // HOST:NAME where NAME is an existing directory: into it, as scp does
    std::fs::create_dir(s.root.join("inbox")).unwrap();
    bare(w)
        .args(["put", "b.txt", &format!("{url}/inbox")])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(s.root.join("inbox/b.txt")).unwrap(),
        b"beta\n"
    );
    std::fs::remove_file(s.root.join("inbox/b.txt")).unwrap();
    std::fs::remove_dir(s.root.join("inbox")).unwrap();

    // ls of a directory (trailing slash or not) and of the root
    let a = bare(w)
        .args(["ls", &format!("{url}/docs")])
        .assert()
        .success();
    assert_eq!(stdout_text(&a), "a.txt\nb.txt\nrenamed.txt\n");
    let a = bare(w).args(["ls", &format!("{url}/")]).assert().success();
    assert_eq!(stdout_text(&a), "docs/\n");
    let a = bare(w).args(["ls", &url]).assert().success();
    assert_eq!(stdout_text(&a), "docs/\n");

    // the shell starts in the directory the address names
    let a = bare(w)
        .args(["shell", &format!("{url}/docs")])
        .write_stdin("pwd\n")
        .assert()
        .success();
    assert_eq!(stdout_text(&a), "/docs\n");
    let a = bare(w)
        .args(["shell", &format!("{url}/nowhere")])
        .write_stdin("pwd\n")
        .assert()
        .code(6);
    assert!(stderr_text(&a).contains("nowhere"), "{}", stderr_text(&a));

    // get to a local destination, as scp: sft get URL LOCAL
    bare(w)
        .args(["get", &format!("{url}/docs/b.txt"), "copy.txt"])
        .assert()
        .success();
    assert_eq!(std::fs::read(w.join("copy.txt")).unwrap(), b"beta\n");

    // sums, verify, rm and mkdir take addresses too
    let a = bare(w)
        .args(["sums", &format!("{url}/docs")])
        .assert()
        .success();
    assert!(
        stdout_text(&a).contains(&common::sha256_hex(b"beta\n")),
        "{}",
        stdout_text(&a)
    );
    bare(w)
        .args([
            "verify",
            &format!("{url}/docs/a.txt"),
            "--sha256",
            &common::sha256_hex(b"alpha\n"),
        ])
        .assert()
        .success();
    bare(w)
        .args(["rm", &format!("{url}/docs/renamed.txt")])
        .assert()
        .success();
    bare(w)
        .args(["mkdir", &format!("{url}/empty")])
        .assert()
        .success();
    assert!(s.root.join("empty").is_dir());
    assert_eq!(s.files(), vec!["docs/a.txt", "docs/b.txt"]);
}

#[test]
fn profile_and_scp_addresses_use_that_servers_settings() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // the default profile is for another server, with a wrong pin and a
    // wrong token: it must never be used for this one
    write_config(
        w,
        &format!(
            "default_profile = \"other\"\n\n[profiles.other]\nserver = \"127.0.0.1:1\"\npin = \"{}\"\ntoken = \"wrong\"\n\n[profiles.box]\nserver = \"localhost:{}\"\npin = \"{}\"\n",
            "ab".repeat(32),
            port(&s),
            s.pin
        ),
    );
    std::fs::write(w.join("a.txt"), b"alpha\n").unwrap();

    // PROFILE:PATH takes the server and pin from that profile
    bare(w).args(["put", "a.txt", "box:in/"]).assert().success();
    let a = bare(w).args(["ls", "box:in"]).assert().success();
    assert_eq!(stdout_text(&a), "a.txt\n");

    // HOST:PATH: the profile for host "localhost" gives the port and pin
    bare(w)
        .args(["put", "a.txt", "localhost:in/b.txt"])
        .assert()
        .success();
    let a = bare(w).args(["ls", "localhost:in/"]).assert().success();
    assert_eq!(stdout_text(&a), "a.txt\nb.txt\n");

    // sft://127.0.0.1:PORT has no profile: the default one (for another
    // server) is not used; the known-servers file is, and without an entry
    // the client refuses before sending anything
    let url = format!("sft://{}/in", s.addr);
    let a = bare(w).args(["ls", &url]).assert().code(4);
    let err = stderr_text(&a);
    assert!(
        err.contains(&format!("sft trust {}", s.addr)),
        "expected the trust command, got: {err}"
    );
    bare(w)
        .args(["trust", &s.addr, "--pin", &s.pin])
        .assert()
        .success();
    let a = bare(w).args(["ls", &url]).assert().success();
    assert_eq!(stdout_text(&a), "a.txt\nb.txt\n");

    // an explicit profile for another server is an error, not a silent mix
    let a = bare(w)
        .args(["--profile", "other", "ls", &url])
        .assert()
        .code(2);
    assert!(
        stderr_text(&a)
            .contains("profile other (from --profile or SFT_PROFILE) is for server 127.0.0.1:1"),
        "{}",
        stderr_text(&a)
    );
    // one command, one server
    let a = bare(w)
        .args(["get", "box:in/a.txt", &format!("{url}/b.txt"), "-o", "x/"])
        .assert()
        .code(2);
    assert!(
        stderr_text(&a).contains("one command talks to one server"),
        "{}",
        stderr_text(&a)
    );
}

#[test]
fn local_names_with_a_colon_stay_reachable() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_config(w, "");
    std::fs::write(w.join("a:b.txt"), b"colon\n").unwrap();
    std::fs::create_dir(w.join("sub")).unwrap();
    std::fs::write(w.join("sub/c:d"), b"deeper\n").unwrap();
    let env = |c: &mut assert_cmd::Command| {
        c.env("SFT_SERVER", &s.addr).env("SFT_PIN", &s.pin);
    };
    // a single source is always local; './' or a '/' before the ':' as a
    // destination is local too
    let mut c = bare(w);
    env(&mut c);
    c.args(["put", "a:b.txt"]).assert().success();
    let mut c = bare(w);
    env(&mut c);
    c.args(["put", "sub/c:d", "./a:b.txt", "--to", "t"])
        .assert()
        .success();
    assert_eq!(s.files(), vec!["a:b.txt", "t/a:b.txt", "t/c:d"]);
    // a remote name with a colon: ./NAME
    let mut c = bare(w);
    env(&mut c);
    let a = c.args(["get", "./a:b.txt", "-o", "-"]).assert().success();
    assert_eq!(stdout_text(&a), "colon\n");
}

#[test]
fn malformed_addresses_say_what_is_wrong() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_config(w, "");
    for (arg, want) in [
        (
            "sft://me@host/x",
            "invalid address 'sft://me@host/x': sft has no user@ part in addresses",
        ),
        (
            "sft://host:99999/x",
            "invalid address 'sft://host:99999/x': the port must be a number from 1 to 65535",
        ),
        (
            "https://host/x",
            "invalid address 'https://host/x': sft addresses start with sft://",
        ),
    ] {
        let a = bare(w).args(["ls", arg]).assert().code(2);
        let err = stderr_text(&a);
        assert!(
            err.starts_with(&format!("sft: error: {want}")),
            "{arg}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// Settings exported for one server (`export SFT_SERVER=... SFT_PIN=...
/// SFT_TOKEN=...`, as `sft serve` suggests) are not used for another server
/// named by an address: that one gets its own profile's, or none.
#[test]
fn the_environment_of_one_server_is_not_used_for_another() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let token_file = w.join("box.token");
    common::write_private(&token_file, format!("{TOKEN}\n").as_bytes());
    write_config(
        w,
        &format!(
            "[profiles.box]\nserver = \"localhost:{}\"\npin = \"{}\"\ntoken_file = \"{}\"\n",
            port(&s),
            s.pin,
            token_file.display()
        ),
    );
    std::fs::write(s.root.join("a.txt"), b"a").unwrap();
    let other = |c: &mut assert_cmd::Command| {
        c.env("SFT_SERVER", "127.0.0.1:1")
            .env("SFT_PIN", "ab".repeat(32))
            .env("SFT_TOKEN", "token-of-the-other-server");
    };
    // the profile's pin and token, not the environment's
    let mut c = bare(w);
    other(&mut c);
    let a = c.args(["ls", "box:"]).assert().success();
    assert_eq!(stdout_text(&a), "a.txt\n");
    // a URL with no profile: the environment's token is not sent; the
    // message says why and what to do
    bare(w)
        .args(["trust", &s.addr, "--pin", &s.pin])
        .assert()
        .success();
    let mut c = bare(w);
    other(&mut c);
    let a = c
        .args(["ls", &format!("sft://{}/", s.addr)])
        .assert()
        .code(2);
    assert!(
        stderr_text(&a).contains(&format!(
            "no access token for {}: SFT_TOKEN / SFT_TOKEN_FILE belong to SFT_SERVER (127.0.0.1:1)",
            s.addr
        )),
        "{}",
        stderr_text(&a)
    );
    // with a token given on the command line it works
    let mut c = bare(w);
    other(&mut c);
    c.args(["--token-file"])
        .arg(&token_file)
        .args(["ls", &format!("sft://{}/", s.addr)])
        .assert()
        .success();
    // the same server in SFT_SERVER and the address: the environment applies
    let mut c = bare(w);
    c.env("SFT_SERVER", &s.addr).env("SFT_PIN", &s.pin);
    let a = c
        .args(["ls", &format!("sft://{}/", s.addr)])
        .assert()
        .success();
    assert_eq!(stdout_text(&a), "a.txt\n");
}
