//! The CLI people and CI use every day, through the real binary over TLS on
//! loopback: many files and trees, JSON output, checksums, pipes, profiles,
//! completions, and a hostile server that cannot make the client write
//! outside its target directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// A tree with nested and empty directories, spaces and unicode in names.
fn make_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        ("proj/a.txt", b"alpha\n".to_vec()),
        ("proj/with space/b c.txt", b"bee cee\n".to_vec()),
        ("proj/deep/er/ü-日本.bin", noise(300_000, 7)),
        ("proj/deep/zero", Vec::new()),
    ];
    for (name, data) in &files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    std::fs::create_dir_all(root.join("proj/empty/inner")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("proj/link")).unwrap();
    files.into_iter().map(|(n, d)| (n.to_string(), d)).collect()
}

#[test]
fn a_tree_goes_up_and_comes_back_identical_with_empty_dirs_kept() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files = make_tree(&src);
    let a = s
        .client()
        .current_dir(&src)
        .args(["put", "-r", "proj", "backup"])
        .assert()
        .success();
    assert!(
        stderr_text(&a).contains("skipping symbolic link"),
        "{}",
        stderr_text(&a)
    );
    // every file printed with its digest, as sha256sum would
    let out = stdout_text(&a);
    for (name, data) in &files {
        let want = format!("{}  backup/{name}", sha256_hex(data));
        assert!(out.contains(&want), "{want} in {out}");
    }
    assert!(s.root.join("backup/proj/empty/inner").is_dir());
    assert!(
        !s.root.join("backup/proj/link").exists(),
        "symlinks are not followed"
    );

    let dst = work.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    s.client()
        .args(["get", "-r", "backup/proj"])
        .arg(&dst)
        .assert()
        .success();
    for (name, data) in &files {
        assert_eq!(&std::fs::read(dst.join(name)).unwrap(), data, "{name}");
    }
    assert!(dst.join("proj/empty/inner").is_dir());
    assert!(!dst.join("proj/link").exists());

    // many files, one command, one connection: get x y -o DIR/
    let many = work.path().join("many/");
    s.client()
        .args(["get", "backup/proj/a.txt", "backup/proj/deep/zero", "-o"])
        .arg(&many)
        .assert()
        .success();
    assert_eq!(std::fs::read(many.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(many.join("zero")).unwrap(), b"");
    // several local files at once
    let f1 = work.path().join("one");
    let f2 = work.path().join("two");
    std::fs::write(&f1, "1").unwrap();
    std::fs::write(&f2, "2").unwrap();
    s.client()
        .args(["put", "--to", "flat"])
        .arg(&f1)
        .arg(&f2)
        .assert()
        .success();
    assert!(s.root.join("flat/one").is_file() && s.root.join("flat/two").is_file());

    // a directory needs -r
    let a = s.client().args(["rm", "backup"]).assert().code(2);
    assert!(
        stderr_text(&a).contains("is a directory"),
        "{}",
        stderr_text(&a)
    );
    // rm -r needs --yes without a terminal, then removes the whole tree
    let a = s.client().args(["rm", "-r", "backup"]).assert().code(2);
    assert!(stderr_text(&a).contains("--yes"));
    assert!(s.root.join("backup/proj/a.txt").exists());
    s.client()
        .args(["rm", "-r", "--yes", "backup/"])
        .assert()
        .success();
    assert!(!s.root.join("backup").exists());
}

#[test]
fn sums_output_passes_sha256sum_c_and_check_catches_a_tampered_file() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files = make_tree(&src);
    s.client()
        .current_dir(&src)
        .args(["put", "-r", "proj"])
        .assert()
        .success();
    let sums = stdout_text(&s.client().arg("sums").assert().success());
    assert_eq!(sums.lines().count(), files.len(), "{sums}");
    let sums_file = work.path().join("SHA256SUMS");
    std::fs::write(&sums_file, &sums).unwrap();
    // coreutils agrees, against the local originals
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(&sums_file)
        .current_dir(&src)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // get --check downloads every listed file and verifies each
    let dl = work.path().join("dl");
    s.client()
        .args(["get", "--check"])
        .arg(&sums_file)
        .arg("-o")
        .arg(&dl)
        .assert()
        .success();
    for (name, data) in &files {
        assert_eq!(&std::fs::read(dl.join(name)).unwrap(), data);
    }
    // one tampered file on the server: caught (exit 8), not saved, the rest are
    std::fs::write(s.root.join("proj/a.txt"), b"alphA\n").unwrap();
    let dl2 = work.path().join("dl2");
    let a = s
        .client()
        .args(["--json", "get", "--check"])
        .arg(&sums_file)
        .arg("-o")
        .arg(&dl2)
        .assert()
        .code(8);
    assert!(
        !dl2.join("proj/a.txt").exists(),
        "a bad file is never saved"
    );
    assert!(dl2.join("proj/with space/b c.txt").exists());
    let lines = json_lines(&stdout_text(&a));
    let bad: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "error").collect();
    assert_eq!(bad.len(), 1, "{lines:?}");
    assert_eq!(bad[0]["name"], "proj/a.txt");
    assert_eq!(bad[0]["error"]["kind"], "integrity");
    let err: Value = serde_json::from_str(stderr_text(&a).trim()).unwrap();
    assert_eq!(err["error"]["code"], 8);
    // verify without downloading
    let good = sha256_hex(b"bee cee\n");
    s.client()
        .args(["verify", "proj/with space/b c.txt", "--sha256", &good])
        .assert()
        .success();
    s.client()
        .args(["verify", "proj/a.txt", "--sha256", &sha256_hex(b"alpha\n")])
        .assert()
        .code(8);
}

#[test]
fn json_output_has_the_documented_fields_and_errors_name_their_exit_code() {
    let s = Server::start_args(&["--quota", "1MiB"]);
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f.txt");
    std::fs::write(&f, "json\n").unwrap();
    let put = json_lines(&stdout_text(
        &s.client()
            .args(["--json", "put", "--as", "d/f.txt"])
            .arg(&f)
            .assert()
            .success(),
    ));
    let p = &put[0];
    for k in [
        "op", "name", "remote", "size", "sha256", "wire", "seconds", "outcome",
    ] {
        assert!(!p[k].is_null(), "put lacks {k}: {p}");
    }
    assert_eq!(p["remote"], "d/f.txt");
    assert_eq!(p["size"], 5);
    assert_eq!(p["sha256"], sha256_hex(b"json\n"));
    let get = json_lines(&stdout_text(
        &s.client()
            .current_dir(work.path())
            .args(["--json", "get", "d/f.txt", "-o", "g.txt"])
            .assert()
            .success(),
    ));
    for k in [
        "op", "name", "path", "size", "sha256", "wire", "seconds", "outcome",
    ] {
        assert!(!get[0][k].is_null(), "get lacks {k}: {}", get[0]);
    }
    let ls = json_lines(&stdout_text(
        &s.client().args(["--json", "ls", "d"]).assert().success(),
    ));
    assert_eq!(ls[0]["name"], "d/f.txt");
    assert_eq!(ls[0]["kind"], "file");
    assert_eq!(ls[0]["owner"], "token1");
    assert!(ls[0]["mtime"].as_str().unwrap().ends_with('Z'));
    // errors: JSON on stderr, with the exit code and its name
    let big = work.path().join("big");
    std::fs::write(&big, noise(2 << 20, 1)).unwrap();
    for (args, code, kind) in [
        (
            vec!["put".to_string(), big.display().to_string()],
            7,
            "space",
        ),
        (vec!["get".into(), "nope".into()], 6, "not_found"),
        (vec!["get".into(), "../x".into()], 2, "usage"),
        (
            vec![
                "get".into(),
                "d/f.txt".into(),
                "--sha256".into(),
                "00".repeat(32),
                "-o".into(),
                work.path().join("x").display().to_string(),
            ],
            8,
            "integrity",
        ),
    ] {
        let a = s.client().arg("--json").args(&args).assert().code(code);
        let v: Value = serde_json::from_str(stderr_text(&a).trim()).unwrap();
        assert_eq!(v["error"]["code"], code, "{args:?}");
        assert_eq!(v["error"]["kind"], kind, "{args:?}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10);
    }
    let a = s
        .client()
        .env("SFT_TOKEN", "wrong")
        .args(["--json", "ls"])
        .assert()
        .code(5);
    assert!(stderr_text(&a).contains("\"kind\":\"auth\""));
    let a = s
        .client()
        .env("SFT_PIN", "ab".repeat(32))
        .args(["--json", "ls"])
        .assert()
        .code(4);
    assert!(stderr_text(&a).contains("\"kind\":\"tls\""));
    let a = s
        .client()
        .env("SFT_SERVER", "127.0.0.1:1")
        .args(["--json", "ls"])
        .assert()
        .code(3);
    assert!(stderr_text(&a).contains("\"kind\":\"network\""));
}

#[test]
fn pipes_in_and_out() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src);
    // tar c dir | sft put - --as dir.tar
    let mut tar = Command::new("tar")
        .args(["c", "proj"])
        .current_dir(&src)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let put = s
        .process()
        .args(["put", "-", "--as", "proj.tar"])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let stored = std::fs::read(s.root.join("proj.tar")).unwrap();
    assert!(String::from_utf8_lossy(&put.stdout).starts_with(&sha256_hex(&stored)));
    // sft get dir.tar -o - | tar x
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut get = s
        .process()
        .args(["get", "proj.tar", "-o", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let x = Command::new("tar")
        .args(["x"])
        .current_dir(&out)
        .stdin(get.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(x.success());
    assert!(get.wait().unwrap().success());
    assert_eq!(
        std::fs::read(out.join("proj/with space/b c.txt")).unwrap(),
        b"bee cee\n"
    );
    // - needs a name
    s.client().args(["put", "-"]).assert().code(2);
}

#[test]
fn a_pipe_larger_than_the_quota_is_stopped_and_leaves_nothing() {
    let s = Server::start_args(&["--quota", "100MiB"]);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::write(&data, noise(150 << 20, 3)).unwrap();
    let a = s
        .client()
        .args(["put", "-", "--as", "big.bin"])
        .pipe_stdin(&data)
        .unwrap()
        .assert()
        .code(7);
    assert!(
        stderr_text(&a).contains("quota exceeded"),
        "{}",
        stderr_text(&a)
    );
    assert!(s.files().is_empty());
    let df = stdout_text(&s.client().args(["df", "--bytes"]).assert().success());
    let row = df.lines().find(|l| l.starts_with("(server)")).unwrap();
    let f: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((f[1], f[2]), ("0", "0"), "{df}");
    // a pipe that fits goes through
    std::fs::write(&data, noise(70 << 20, 4)).unwrap();
    s.client()
        .args(["put", "-", "--as", "ok.bin"])
        .pipe_stdin(&data)
        .unwrap()
        .assert()
        .success();
    assert_eq!(
        std::fs::metadata(s.root.join("ok.bin")).unwrap().len(),
        70 << 20
    );
}

#[test]
fn profiles_from_the_config_file_with_flags_and_environment_on_top() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    write_private(&token_file, format!("{TOKEN}\n").as_bytes());
    let cfg = work.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "default_profile = \"dev\"\n\n[profiles.dev]\nserver = \"{}\"\npin = \"{}\"\ntoken_file = \"{}\"\n\n[profiles.broken]\nserver = \"127.0.0.1:1\"\npin = \"{}\"\ntoken = \"x\"\n",
            s.addr,
            s.pin,
            token_file.display(),
            s.pin
        ),
    )
    .unwrap();
    // it holds a token: it must be private
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let bare = || {
        let mut c = assert_cmd::Command::new(bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SFT_CONFIG", &cfg)
            .timeout(std::time::Duration::from_secs(60));
        c
    };
    // the default profile alone is enough
    bare().arg("ls").assert().success();
    bare().args(["--profile", "dev", "ls"]).assert().success();
    // environment over profile, flag over environment
    bare()
        .env("SFT_SERVER", "127.0.0.1:1")
        .arg("ls")
        .assert()
        .code(3);
    bare()
        .env("SFT_SERVER", "127.0.0.1:1")
        .args(["--server", &s.addr, "ls"])
        .assert()
        .success();
    bare()
        .env("SFT_PROFILE", "broken")
        .arg("ls")
        .assert()
        .code(3);
    let a = bare().args(["--profile", "nope", "ls"]).assert().code(2);
    assert!(stderr_text(&a).contains("it has: broken, dev"));
    // config show: effective settings, secrets masked
    let shown = stdout_text(
        &bare()
            .env("SFT_TOKEN", "sft_supersecret_value")
            .args(["config", "show"])
            .assert()
            .success(),
    );
    assert!(
        shown.contains(&s.addr) && shown.contains("(profile)"),
        "{shown}"
    );
    assert!(
        shown.contains("sft_***") && !shown.contains("supersecret"),
        "{shown}"
    );
}

#[test]
fn completions_and_man_page_are_generated() {
    for sh in ["bash", "zsh", "fish"] {
        let out = Command::new(bin())
            .args(["completions", sh])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("sft") && text.contains("put"), "{sh}");
    }
    let man = Command::new(bin()).arg("man").output().unwrap();
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains(".TH sft") && text.contains("secure file transfer"));
}

// ---------------------------------------------------------------- a hostile server

mod hostile {
    use std::sync::Arc;

    use sft::connection::{FrameReader, FrameWriter};
    use sft::protocol::{Entry, EntryKind, Msg, Role};

    /// A TLS server speaking the protocol that lists and serves names no
    /// honest server would: "../evil", an absolute path, terminal escapes.
    pub async fn serve(listener: tokio::net::TcpListener, pem: sft::certs::Pem) {
        let certs = vec![rustls::pki_types::CertificateDer::from(
            rustls::pki_types::pem::PemObject::from_pem_slice(pem.cert.as_bytes())
                .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
                .unwrap(),
        )];
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(pem.key.as_bytes()).unwrap();
        let ck = sft::tls::certified_key(certs, key).unwrap();
        let cfg = sft::tls::server_config(sft::tls::CertSlot::new(ck)).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (rd, wr) = tokio::io::split(tls);
                let mut r = FrameReader::new(rd);
                let mut w = FrameWriter::new(wr);
                let entry = |name: &str, kind| {
                    Msg::Entry(Entry {
                        kind,
                        size: 4,
                        mtime_ns: 0,
                        sha256: None,
                        name: name.into(),
                        owner: "\x1b]0;pwned\x07".into(),
                        mode: None,
                    })
                };
                while let Ok(Some(m)) = r.read_frame().await {
                    let replies: Vec<Msg> = match m {
                        Msg::Hello { .. } => vec![Msg::Welcome {
                            version: 1,
                            features: 0,
                            max_block: 1 << 20,
                        }],
                        Msg::Auth { .. } => vec![Msg::AuthOk {
                            role: Role::Admin,
                            user: "evil".into(),
                        }],
                        Msg::List { .. } => vec![
                            entry("../evil", EntryKind::File),
                            entry("\x1b[31mred", EntryKind::File),
                            Msg::ListEnd,
                        ],
                        Msg::Bye => {
                            let _ = w.send_now(&Msg::Bye).await;
                            return;
                        }
                        _ => vec![Msg::Error {
                            code: 1,
                            message: "\x1b[2Jno".into(),
                        }],
                    };
                    for m in replies {
                        if w.send_now(&m).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }

    pub fn start() -> (String, String, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pem = sft::certs::self_signed(&["127.0.0.1".into()]).unwrap();
        let der: rustls::pki_types::CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(pem.cert.as_bytes()).unwrap();
        let pin = sft::tls::fingerprint(&der);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        rt.spawn(serve(listener, pem));
        let _ = Arc::new(());
        (addr, pin, rt)
    }
}

#[test]
fn a_hostile_server_cannot_make_the_client_write_outside_the_target() {
    let (addr, pin, _rt) = hostile::start();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let client = || {
        let mut c = assert_cmd::Command::new(bin());
        c.env_clear()
            .env("SFT_SERVER", &addr)
            .env("SFT_PIN", &pin)
            .env("SFT_TOKEN", "t")
            .current_dir(&target)
            .timeout(std::time::Duration::from_secs(30));
        c
    };
    // recursive download refuses the listing: nothing written anywhere
    let a = client().args(["get", "-r", "dir", "."]).assert().code(9);
    assert!(stderr_text(&a).contains("bad name"), "{}", stderr_text(&a));
    assert!(!work.path().join("evil").exists());
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // names and errors from the server reach the terminal escaped
    let a = client().args(["ls"]).assert();
    let out = stdout_text(&a) + &stderr_text(&a);
    assert!(
        !out.contains('\x1b'),
        "raw escape sequence printed: {out:?}"
    );
    let a = client().args(["rm", "x"]).assert().code(1);
    assert!(!stderr_text(&a).contains('\x1b'));
}

/// Hundreds of small files (more than the server commits or reads ahead in
/// one batch, and more than the client keeps ahead for downloads), with a
/// file larger than the pipelining limit among them: up with the default
/// `--fsync always` (group commit) and back, byte for byte, in order.
#[test]
fn hundreds_of_small_files_and_a_large_one_go_up_and_come_back_identical() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src/many");
    let mut files = Vec::new();
    for i in 0..700u64 {
        let name = format!("d{}/f{i:03}.bin", i % 7);
        let data = noise((i * 37 % 3000) as usize, i);
        files.push((name, data));
    }
    // sorted between d3/f0… and d3/f1…: sent in the middle of the small ones
    files.push(("d3/f05-large.bin".into(), noise(3 << 20, 9999)));
    for (name, data) in &files {
        let p = src.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    let a = s
        .client()
        .args(["--json", "put", "-r"])
        .arg(&src)
        .assert()
        .success();
    let lines = json_lines(&stdout_text(&a));
    let puts: Vec<&Value> = lines.iter().filter(|v| v["op"] == "put").collect();
    assert_eq!(puts.len(), files.len());
    // one line per file, in the order sent (sorted names), each acknowledged
    // with the digest of what was sent
    let mut sorted = files.clone();
    sorted.sort();
    for (v, (name, data)) in puts.iter().zip(&sorted) {
        assert_eq!(v["remote"], format!("many/{name}"), "{v}");
        assert_eq!(v["sha256"], sha256_hex(data), "{v}");
        assert_eq!(v["outcome"], "ok", "{v}");
    }
    for (name, data) in &files {
        let stored = std::fs::read(s.root.join("many").join(name)).unwrap();
        assert!(stored == *data, "{name} stored intact");
    }
    let status = stdout_text(&s.client().args(["admin", "status"]).assert().success());
    assert!(status.contains("transfers in flight: 0"), "{status}");

    let dst = work.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    s.client()
        .args(["get", "-r", "many"])
        .arg(&dst)
        .assert()
        .success();
    for (name, data) in &files {
        let got = std::fs::read(dst.join("many").join(name)).unwrap();
        assert!(got == *data, "{name} came back intact");
    }
    let left: Vec<_> = std::fs::read_dir(dst.join("many/d3"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "no partial downloads left behind");

    // and removed again, in one burst: a line per file, one for the tree
    let a = s
        .client()
        .args(["--json", "rm", "-r", "--yes", "many"])
        .assert()
        .success();
    let lines = json_lines(&stdout_text(&a));
    assert_eq!(lines.len(), files.len() + 1);
    assert_eq!(lines.last().unwrap()["kind"], "dir");
    assert!(!s.root.join("many").exists());
    assert!(s.files().is_empty());
}

/// The server answers queued uploads in order even when one in the middle
/// is refused: the refusal is the reply to that file, the files before it
/// are stored, and those after it are refused too when nothing fits.
#[test]
fn a_refusal_among_queued_uploads_answers_that_file_and_keeps_the_order() {
    let s = Server::start_args(&["--max-files", "3"]);
    let work = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..6u64 {
        let p = work.path().join(format!("f{i}"));
        std::fs::write(&p, noise(1000 + i as usize, i)).unwrap();
        paths.push(p);
    }
    let a = s
        .client()
        .args(["--json", "put"])
        .args(&paths)
        .assert()
        .code(7);
    let lines = json_lines(&stdout_text(&a));
    assert_eq!(lines.len(), 6, "{lines:?}");
    for (i, v) in lines.iter().enumerate() {
        let name = v["name"].as_str().unwrap_or_default();
        assert!(name.ends_with(&format!("/f{i}")), "{v}");
        if i < 3 {
            assert_eq!(v["remote"], format!("f{i}"), "{v}");
            assert_eq!(v["outcome"], "ok", "{v}");
        } else {
            assert_eq!(v["outcome"], "error", "{v}");
            assert_eq!(v["error"]["kind"], "space", "{v}");
        }
    }
    assert_eq!(s.files(), vec!["f0", "f1", "f2"]);
    for i in 0..3 {
        assert_eq!(
            std::fs::read(s.root.join(format!("f{i}"))).unwrap(),
            noise(1000 + i, i as u64)
        );
    }
}

/// More queued small uploads than the server buffers for a session (16 MiB):
/// the server stops reading until the committer catches up, the client
/// waits, and every file arrives intact.
#[test]
fn small_uploads_beyond_the_servers_buffer_wait_and_all_arrive() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..40u64 {
        let p = work.path().join(format!("f{i:02}"));
        std::fs::write(&p, noise(900 << 10, 100 + i)).unwrap();
        paths.push(p);
    }
    s.client().arg("put").args(&paths).assert().success();
    for i in 0..40u64 {
        let stored = std::fs::read(s.root.join(format!("f{i:02}"))).unwrap();
        assert!(stored == noise(900 << 10, 100 + i), "f{i:02} stored intact");
    }
    let status = stdout_text(&s.client().args(["admin", "status"]).assert().success());
    assert!(status.contains("transfers in flight: 0"), "{status}");
}

/// `get NAME -o PATH` writes PATH, replacing what was there once the
/// download is verified (as curl -o and scp do); without -o an existing
/// file is kept, the download saved beside it, and stderr says so.
#[test]
fn get_o_replaces_the_named_file_and_without_o_the_renaming_is_said() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("report.txt");
    std::fs::write(&src, b"fresh contents\n").unwrap();
    s.client().arg("put").arg(&src).assert().success();
    let out = work.path().join("out.txt");
    std::fs::write(&out, b"stale bytes from yesterday\n").unwrap();
    let a = s
        .client()
        .args(["get", "report.txt", "-o"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(std::fs::read(&out).unwrap(), b"fresh contents\n");
    assert!(common::stdout_text(&a).contains(&out.display().to_string()));
    let names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "no (1) copy, no .part left: {names:?}");
    // without -o, in a directory that has report.txt already
    let here = work.path().join("here");
    std::fs::create_dir(&here).unwrap();
    std::fs::write(here.join("report.txt"), b"mine\n").unwrap();
    let a = s
        .client()
        .current_dir(&here)
        .args(["get", "report.txt"])
        .assert()
        .success();
    assert_eq!(std::fs::read(here.join("report.txt")).unwrap(), b"mine\n");
    assert_eq!(
        std::fs::read(here.join("report (1).txt")).unwrap(),
        b"fresh contents\n"
    );
    let err = common::stderr_text(&a);
    assert!(
        err.contains("exists and was kept") && err.contains("report (1).txt"),
        "{err}"
    );
    assert!(common::stdout_text(&a).contains("report (1).txt"));
}

/// Re-running a put converges: a file whose remote name already holds the
/// same bytes is reported `unchanged` and nothing is sent or stored again;
/// different bytes still get "name (1).ext".
#[test]
fn re_putting_the_same_content_is_unchanged_and_sends_nothing() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("docs");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(tree.join("sub/b.bin"), noise(300_000, 3)).unwrap();
    std::fs::write(tree.join("sub/c.bin"), noise(2 << 20, 4)).unwrap();
    s.client().args(["put", "-r"]).arg(&tree).assert().success();
    let before = s.files();
    assert_eq!(before.len(), 3, "{before:?}");
    // the same tree again: every file unchanged, nothing on the wire
    let a = s
        .client()
        .args(["--json", "put", "-r"])
        .arg(&tree)
        .assert()
        .success();
    let lines: Vec<Value> = stdout_text(&a)
        .lines()
        .filter(|l| l.contains("\"op\":\"put\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["outcome"], "unchanged", "{l}");
        assert_eq!(l["wire"], 0, "{l}");
    }
    assert_eq!(s.files(), before, "no new names");
    // one file again under its own name: unchanged, with its digest
    let a = s
        .client()
        .arg("put")
        .arg(tree.join("a.txt"))
        .args(["--as", "docs/a.txt"])
        .assert()
        .success();
    assert!(stdout_text(&a).starts_with(&sha256_hex(b"alpha\n")));
    assert!(
        stderr_text(&a).contains("nothing sent"),
        "{}",
        stderr_text(&a)
    );
    assert_eq!(s.files(), before);
    // different bytes (same size too): the seed rule, a numbered copy
    std::fs::write(tree.join("a.txt"), b"ALPHA\n").unwrap();
    s.client()
        .arg("put")
        .arg(tree.join("a.txt"))
        .args(["--as", "docs/a.txt"])
        .assert()
        .success();
    assert!(
        s.files().contains(&"docs/a (1).txt".to_string()),
        "{:?}",
        s.files()
    );
}

/// Re-running a get converges too: a local file that already holds the
/// remote bytes is `unchanged` and nothing is downloaded or copied beside it.
#[test]
fn re_getting_the_same_content_is_unchanged_and_makes_no_copies() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("src/docs");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(tree.join("sub/b.bin"), noise(700_000, 8)).unwrap();
    s.client().args(["put", "-r"]).arg(&tree).assert().success();
    let dst = work.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    s.client()
        .args(["get", "-r", "docs"])
        .arg(&dst)
        .assert()
        .success();
    let listing = |d: &Path| {
        let mut v = Vec::new();
        for e in std::fs::read_dir(d.join("docs")).unwrap().flatten() {
            v.push(e.file_name());
        }
        for e in std::fs::read_dir(d.join("docs/sub")).unwrap().flatten() {
            v.push(e.file_name());
        }
        v.sort();
        v
    };
    let first = listing(&dst);
    let a = s
        .client()
        .args(["--json", "get", "-r", "docs"])
        .arg(&dst)
        .assert()
        .success();
    let lines: Vec<Value> = json_lines(&stdout_text(&a))
        .into_iter()
        .filter(|l| l["op"] == "get")
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["outcome"], "unchanged", "{l}");
        assert_eq!(l["wire"], 0, "{l}");
    }
    assert_eq!(listing(&dst), first, "no numbered copies");
    // a local file with other bytes of the same size is not "unchanged"
    std::fs::write(dst.join("docs/a.txt"), b"ALPHA\n").unwrap();
    s.client()
        .args(["get", "docs/a.txt", "-o"])
        .arg(dst.join("docs/a.txt"))
        .assert()
        .success();
    assert_eq!(std::fs::read(dst.join("docs/a.txt")).unwrap(), b"alpha\n");
    // one file again: unchanged, said on stderr
    let a = s
        .client()
        .args(["get", "docs/a.txt", "-o"])
        .arg(dst.join("docs/a.txt"))
        .assert()
        .success();
    assert!(
        stderr_text(&a).contains("nothing downloaded"),
        "{}",
        stderr_text(&a)
    );
}
