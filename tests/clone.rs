//! Instant re-upload by content (CLONE, PROTOCOL.md §4.4c), through the
//! real binary over TLS on loopback: a file the server already holds for the
//! same user under another name is stored without its data being sent (the
//! bytes are counted on the wire by a TCP relay between client and server),
//! the two names stay independent, other users send everything, quotas
//! apply, and a stale record is never a source.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use sft::protocol::Msg;

const MIB: usize = 1 << 20;

/// A TCP relay in front of the server that counts the bytes the client
/// sends (TLS records and all: what really crosses the wire).
struct Relay {
    addr: String,
    up: Arc<AtomicU64>,
}

impl Relay {
    fn start(target: &str) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicU64::new(0));
        let (target, counted) = (target.to_string(), up.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let n = counted.clone();
                std::thread::spawn(move || pump(client, server, Some(n)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Relay { addr, up }
    }

    /// Bytes sent by clients since the last call.
    fn take(&self) -> u64 {
        self.up.swap(0, Ordering::SeqCst)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(c) = &count {
                    c.fetch_add(n as u64, Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// `sft --json put …` through the relay as `token`: its one JSON line.
fn put_json(s: &Server, relay: &Relay, token: &str, args: &[&str]) -> serde_json::Value {
    let a = s
        .client()
        .env("SFT_SERVER", &relay.addr)
        .env("SFT_TOKEN", token)
        .args(["--json", "put"])
        .args(args)
        .assert()
        .success();
    let out = stdout_text(&a);
    let mut lines = out.lines();
    let v: serde_json::Value = serde_json::from_str(lines.next().expect("a line")).unwrap();
    assert_eq!(lines.next(), None, "{out}");
    v
}

/// The content of a remote file, fetched with `sft get`.
fn fetch(s: &Server, token: &str, name: &str) -> Vec<u8> {
    let a = s
        .client()
        .env("SFT_TOKEN", token)
        .args(["get", name, "-o", "-"])
        .assert()
        .success();
    a.get_output().stdout.clone()
}

fn bytes_in(s: &Server) -> u64 {
    let out = s.client().args(["admin", "status"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("bytes in:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// A users file with `names` as writers (with a quota if given); tokens.
fn writers(users: &Path, names: &[&str], quota: Option<&str>) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            let mut c = std::process::Command::new(bin());
            c.args(["user", "add", n, "--role", "write", "--users"])
                .arg(users);
            if let Some(q) = quota {
                c.args(["--quota", q]);
            }
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .collect()
}

/// Far less than any file of these tests: a TLS handshake, HELLO, AUTH, a
/// listing and a CLONE are a few kilobytes.
const ALMOST_NOTHING: u64 = 64 * 1024;

#[test]
fn instant_re_upload_sends_almost_no_bytes_and_the_names_stay_independent() {
    let s = Server::start();
    let relay = Relay::start(&s.addr);
    let work = tempfile::tempdir().unwrap();
    let old = noise(20 * MIB, 1);
    let a = file(work.path(), "a.bin", &old);
    let v = put_json(&s, &relay, TOKEN, &[a.to_str().unwrap()]);
    assert_eq!(v["outcome"], "ok");
    let first = relay.take();
    assert!(
        first >= old.len() as u64,
        "the first upload sent {first} bytes"
    );

    // the same content under another name: stored by the server, not sent
    let received = bytes_in(&s);
    let b = file(work.path(), "b.bin", &old);
    let v = put_json(&s, &relay, TOKEN, &[b.to_str().unwrap()]);
    let second = relay.take();
    eprintln!("first upload: {first} bytes from the client; re-upload by content: {second} bytes");
    assert_eq!(v["outcome"], "cloned", "{v}");
    assert_eq!(v["remote"], "b.bin");
    assert_eq!(v["wire"], 0);
    assert_eq!(v["size"], old.len());
    assert_eq!(v["sha256"], sha256_hex(&old));
    assert!(
        second < ALMOST_NOTHING,
        "the re-upload sent {second} bytes for a {} byte file",
        old.len()
    );
    assert_eq!(bytes_in(&s), received, "no file data reached the server");
    assert!(fetch(&s, TOKEN, "b.bin") == old, "b.bin is byte-exact");
    // a copy of its own, with owner and digest like any upload
    let ls = s.client().args(["--json", "ls"]).assert().success();
    for line in stdout_text(&ls).lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["sha256"], sha256_hex(&old), "{e}");
        assert_eq!(e["owner"], "token1", "{e}");
    }
    use std::os::unix::fs::MetadataExt;
    let (ma, mb) = (
        std::fs::metadata(s.root.join("a.bin")).unwrap(),
        std::fs::metadata(s.root.join("b.bin")).unwrap(),
    );
    assert_ne!(ma.ino(), mb.ino(), "never a shared inode");
    assert_eq!(mb.nlink(), 1);

    // overwriting one name never changes the other
    let new = noise(20 * MIB, 2);
    let a2 = file(work.path(), "a2.bin", &new);
    let v = put_json(
        &s,
        &relay,
        TOKEN,
        &[a2.to_str().unwrap(), "--as", "a.bin", "--overwrite"],
    );
    assert_eq!(v["outcome"], "ok");
    assert_eq!(v["remote"], "a.bin");
    assert_eq!(sha256_hex(&fetch(&s, TOKEN, "a.bin")), sha256_hex(&new));
    assert_eq!(sha256_hex(&fetch(&s, TOKEN, "b.bin")), sha256_hex(&old));
    // and the other way round
    let newer = noise(3 * MIB, 3);
    let b2 = file(work.path(), "b2.bin", &newer);
    put_json(
        &s,
        &relay,
        TOKEN,
        &[b2.to_str().unwrap(), "--as", "b.bin", "--overwrite"],
    );
    assert_eq!(sha256_hex(&fetch(&s, TOKEN, "b.bin")), sha256_hex(&newer));
    assert_eq!(sha256_hex(&fetch(&s, TOKEN, "a.bin")), sha256_hex(&new));
    assert_eq!(std::fs::read(s.root.join("a.bin")).unwrap(), new);

    // the old content is gone from the server: a third name sends it all
    relay.take();
    let c = file(work.path(), "c.bin", &old);
    let v = put_json(&s, &relay, TOKEN, &[c.to_str().unwrap()]);
    assert_eq!(v["outcome"], "ok");
    assert!(relay.take() >= old.len() as u64);
    // with --overwrite over an existing name of its own, a clone replaces it
    let v = put_json(
        &s,
        &relay,
        TOKEN,
        &[a2.to_str().unwrap(), "--as", "c.bin", "--overwrite"],
    );
    assert_eq!(v["outcome"], "cloned", "{v}");
    assert_eq!(v["remote"], "c.bin");
    assert!(relay.take() < ALMOST_NOTHING);
    assert_eq!(std::fs::read(s.root.join("c.bin")).unwrap(), new);
    // and a name taken by other content is numbered, as for any upload
    let v = put_json(&s, &relay, TOKEN, &[a2.to_str().unwrap(), "--as", "b.bin"]);
    assert_eq!(v["outcome"], "cloned", "{v}");
    assert_eq!(v["remote"], "b (1).bin");
    assert_eq!(sha256_hex(&fetch(&s, TOKEN, "b.bin")), sha256_hex(&newer));
    assert_eq!(
        s.files(),
        ["a.bin", "b (1).bin", "b.bin", "c.bin"],
        "nothing else left behind"
    );
    // people are told what happened
    let d = file(work.path(), "d.bin", &new);
    let out = s.client().arg("put").arg(&d).assert().success();
    assert_eq!(stdout_text(&out), format!("{}  d.bin\n", sha256_hex(&new)));
    assert!(
        stderr_text(&out).contains("1 file stored from content already on the server"),
        "{}",
        stderr_text(&out)
    );
    let log = s.log_text();
    assert!(
        log.contains("outcome=\"cloned\"") || log.contains("outcome=cloned"),
        "{log}"
    );
}

#[test]
fn a_tree_re_uploaded_elsewhere_sends_only_its_small_files() {
    let s = Server::start();
    let relay = Relay::start(&s.addr);
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let (big1, big2, small) = (noise(3 * MIB, 11), noise(2 * MIB, 12), noise(1000, 13));
    std::fs::write(tree.join("one.bin"), &big1).unwrap();
    std::fs::write(tree.join("sub/two.bin"), &big2).unwrap();
    std::fs::write(tree.join("sub/same-as-one.bin"), &big1).unwrap();
    std::fs::write(tree.join("small.txt"), &small).unwrap();
    let put_r = |to: &str| -> Vec<serde_json::Value> {
        let a = s
            .client()
            .env("SFT_SERVER", &relay.addr)
            .args(["--json", "put", "-r"])
            .arg(&tree)
            .arg(to)
            .assert()
            .success();
        stdout_text(&a)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // the first time nothing is on the server yet: everything is sent
    // (the two copies of one.bin are both new when asked about)
    let first = put_r("x");
    assert!(first.iter().all(|v| v["outcome"] == "ok"), "{first:?}");
    assert!(relay.take() >= (2 * big1.len() + big2.len()) as u64);
    // elsewhere: the large files are stored from what the server holds
    let second = put_r("y");
    let outcome = |name: &str| {
        second
            .iter()
            .find(|v| v["remote"] == name)
            .map(|v| v["outcome"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(outcome("y/tree/one.bin"), "cloned", "{second:?}");
    assert_eq!(outcome("y/tree/sub/two.bin"), "cloned");
    assert_eq!(outcome("y/tree/sub/same-as-one.bin"), "cloned");
    assert_eq!(
        outcome("y/tree/small.txt"),
        "ok",
        "small files are just sent"
    );
    let sent = relay.take();
    assert!(sent < ALMOST_NOTHING, "{sent} bytes");
    for (name, data) in [
        ("y/tree/one.bin", &big1),
        ("y/tree/sub/two.bin", &big2),
        ("y/tree/sub/same-as-one.bin", &big1),
        ("y/tree/small.txt", &small),
    ] {
        assert!(std::fs::read(s.root.join(name)).unwrap() == *data, "{name}");
    }
    // and re-running it changes nothing at all
    let third = put_r("y");
    assert!(
        third.iter().all(|v| v["outcome"] == "unchanged"),
        "{third:?}"
    );
}

#[test]
fn another_user_sends_the_whole_file() {
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users.toml");
    let tokens = writers(&users, &["alice", "bob"], None);
    let s = Server::start_args(&["--users", users.to_str().unwrap()]);
    let relay = Relay::start(&s.addr);
    let work = tempfile::tempdir().unwrap();
    let data = noise(4 * MIB, 21);
    let f = file(work.path(), "f.bin", &data);
    let f = f.to_str().unwrap();
    let v = put_json(&s, &relay, &tokens[0], &[f, "--as", "alice.bin"]);
    assert_eq!(v["outcome"], "ok");
    relay.take();
    // bob: the same content, but alice's file is never a source for him
    let v = put_json(&s, &relay, &tokens[1], &[f, "--as", "bob.bin"]);
    assert_eq!(v["outcome"], "ok", "{v}");
    assert_eq!(v["sha256"], sha256_hex(&data));
    let sent = relay.take();
    assert!(sent >= data.len() as u64, "bob sent {sent} bytes");
    assert!(fetch(&s, &tokens[1], "bob.bin") == data);
    // his own copy is one from now on; alice's still works for her
    let v = put_json(&s, &relay, &tokens[1], &[f, "--as", "bob2.bin"]);
    assert_eq!(v["outcome"], "cloned");
    let v = put_json(&s, &relay, &tokens[0], &[f, "--as", "alice2.bin"]);
    assert_eq!(v["outcome"], "cloned");
    assert!(relay.take() < 2 * ALMOST_NOTHING);
    let owners = s.client().args(["--json", "ls"]).assert().success();
    for line in stdout_text(&owners).lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = e["name"].as_str().unwrap();
        let who = if name.starts_with("alice") {
            "alice"
        } else {
            "bob"
        };
        assert_eq!(e["owner"], who, "{e}");
    }
}

#[test]
fn a_clone_counts_against_the_quota_like_any_upload() {
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users.toml");
    let tokens = writers(&users, &["ci"], Some("5MiB"));
    let s = Server::start_args(&["--users", users.to_str().unwrap()]);
    let relay = Relay::start(&s.addr);
    let work = tempfile::tempdir().unwrap();
    let data = noise(2 * MIB, 31);
    let f = file(work.path(), "f.bin", &data);
    let f = f.to_str().unwrap();
    put_json(&s, &relay, &tokens[0], &[f, "--as", "a.bin"]);
    let v = put_json(&s, &relay, &tokens[0], &[f, "--as", "b.bin"]);
    assert_eq!(v["outcome"], "cloned");
    relay.take();
    // 4 MiB used of 5: a third copy does not fit, and is refused as a PUT is
    let a = s
        .client()
        .env("SFT_SERVER", &relay.addr)
        .env("SFT_TOKEN", &tokens[0])
        .args(["put", f, "--as", "c.bin"])
        .assert()
        .code(7);
    assert_eq!(
        stderr_text(&a).trim(),
        "sft: error: quota exceeded: this upload needs 2.0 MiB, 1.0 MiB of 5.0 MiB left (user ci)"
    );
    assert!(relay.take() < ALMOST_NOTHING, "no data was sent");
    assert_eq!(
        s.files(),
        ["a.bin", "b.bin"],
        "nothing visible, nothing left"
    );
    let df = s
        .client()
        .env("SFT_TOKEN", &tokens[0])
        .args(["--json", "df"])
        .assert()
        .success();
    let row: serde_json::Value =
        serde_json::from_str(stdout_text(&df).lines().next().unwrap()).unwrap();
    assert_eq!(row["used"], 4 * MIB, "{row}");
    assert_eq!(row["reserved"], 0, "{row}");
    assert_eq!(row["files"], 2, "{row}");
}

#[test]
fn a_stale_record_is_never_a_source() {
    let s = Server::start();
    let relay = Relay::start(&s.addr);
    let work = tempfile::tempdir().unwrap();
    let (x, z, e) = (noise(2 * MIB, 41), noise(2 * MIB, 42), noise(2 * MIB, 43));
    for (name, data) in [("a.bin", &x), ("c.bin", &z), ("e.bin", &e)] {
        let f = file(work.path(), name, data);
        put_json(&s, &relay, TOKEN, &[f.to_str().unwrap()]);
    }
    // a first clone: the server has looked at what it holds
    let f = file(work.path(), "f.bin", &e);
    let v = put_json(&s, &relay, TOKEN, &[f.to_str().unwrap()]);
    assert_eq!(v["outcome"], "cloned");
    // a.bin changed by hand: its recorded digest is no longer valid (mtime)
    let y = noise(2 * MIB, 44);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(s.root.join("a.bin"), &y).unwrap();
    // c.bin changed by hand behind a restored mtime: its record looks valid,
    // only its bytes say otherwise
    let c_path = s.root.join("c.bin");
    let mtime = std::fs::metadata(&c_path).unwrap().modified().unwrap();
    let w = noise(2 * MIB, 45);
    std::fs::write(&c_path, &w).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&c_path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        std::fs::metadata(&c_path).unwrap().modified().unwrap(),
        mtime
    );
    relay.take();
    for (name, data) in [("b.bin", &x), ("d.bin", &z)] {
        let f = file(work.path(), name, data);
        let v = put_json(&s, &relay, TOKEN, &[f.to_str().unwrap()]);
        assert_eq!(v["outcome"], "ok", "{name}: {v}");
        let sent = relay.take();
        assert!(sent >= data.len() as u64, "{name}: {sent} bytes sent");
        assert!(std::fs::read(s.root.join(name)).unwrap() == *data, "{name}");
    }
    assert!(
        s.log_text()
            .contains("no longer holds the content its recorded SHA-256 says"),
        "{}",
        s.log_text()
    );
    // after a restart the index is built from the disk: still no stale source
    let mut s = s;
    s.crash_and_restart(&[]);
    let relay = Relay::start(&s.addr);
    let f = file(work.path(), "g.bin", &y);
    let v = put_json(&s, &relay, TOKEN, &[f.to_str().unwrap()]);
    // a.bin (hashed again since) does hold y now: a valid source
    assert!(v["outcome"] == "cloned" || v["outcome"] == "ok", "{v}");
    assert!(std::fs::read(s.root.join("g.bin")).unwrap() == y);
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_clone_requests_get_the_documented_answers() {
    let s = Server::start();
    let mut r = s.raw().await;
    use sha2::Digest;
    let hello: [u8; 32] = sha2::Sha256::digest(b"hello").into();
    let clone = |flags: u32, name: &str| Msg::Clone {
        size: 5,
        flags,
        sha256: hello,
        name: name.into(),
    };
    // unknown flag bits: ERROR 9, and the session goes on
    for flags in [0x4, 0x8, 0x8000_0000] {
        r.w.send_now(&clone(flags, "b.txt")).await.unwrap();
        match r.next().await {
            Msg::Error { code: 9, message } => assert!(message.contains("flags"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
    // content the server does not hold: ERROR 6
    r.w.send_now(&clone(0, "b.txt")).await.unwrap();
    assert!(matches!(r.next().await, Msg::Error { code: 6, .. }));
    // a bad name: ERROR 2, as for PUT
    r.w.send_now(&clone(0, "../x")).await.unwrap();
    assert!(matches!(r.next().await, Msg::Error { code: 2, .. }));
    // upload hello, then the CLONEs of it, pipelined: answered in order
    r.w.send_now(&Msg::Put {
        size: 5,
        flags: 0,
        name: "a.txt".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { offset: 0 }));
    r.data(b"hello").await;
    r.w.send_now(&Msg::End { sha256: hello }).await.unwrap();
    assert!(matches!(r.next().await, Msg::PutOk { .. }));
    r.w.send(&clone(0, "b.txt")).await.unwrap();
    r.w.send(&clone(0, "b.txt")).await.unwrap();
    r.w.send(&clone(sft::protocol::PUT_OVERWRITE, "b.txt"))
        .await
        .unwrap();
    let mut wrong = clone(0, "c.txt");
    if let Msg::Clone { size, .. } = &mut wrong {
        *size = 6; // the right digest with the wrong size is other content
    }
    r.w.send_now(&wrong).await.unwrap();
    for want in ["b.txt", "b (1).txt", "b.txt"] {
        match r.next().await {
            Msg::PutOk { size, sha256, name } => {
                assert_eq!((size, sha256, name.as_str()), (5, hello, want));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(r.next().await, Msg::Error { code: 6, .. }));
    // PROBE: is there content of this size for this user? (nothing stored)
    let probe = sft::protocol::CLONE_PROBE;
    r.w.send_now(&clone(probe, "p.txt")).await.unwrap();
    assert!(matches!(r.next().await, Msg::Done));
    let mut other_size = clone(probe, "p.txt");
    if let Msg::Clone { size, .. } = &mut other_size {
        *size = 7;
    }
    r.w.send_now(&other_size).await.unwrap();
    assert!(matches!(r.next().await, Msg::Error { code: 6, .. }));
    assert!(!s.root.join("p.txt").exists(), "a probe stores nothing");
    for name in ["b.txt", "b (1).txt"] {
        assert_eq!(std::fs::read(s.root.join(name)).unwrap(), b"hello");
    }
    // files of that size removed behind the server's back: no longer held,
    // so the client is not sent to hash its file for nothing
    for name in ["a.txt", "b.txt", "b (1).txt"] {
        std::fs::remove_file(s.root.join(name)).unwrap();
    }
    r.w.send_now(&clone(probe, "p.txt")).await.unwrap();
    assert!(matches!(r.next().await, Msg::Error { code: 6, .. }));
    r.w.send_now(&Msg::Bye).await.unwrap();
    assert!(matches!(r.next().await, Msg::Bye));
}
