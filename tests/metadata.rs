//! Metadata kept (issue 12, item 6): `put` and `get` carry each file's
//! permission bits and modification time (ATTRS, FEATURE_META), the server
//! stores them and `ls -l` shows them; `--no-preserve` turns it off. Real
//! binary, real TLS, loopback; and raw frames for what a client must not do.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use sft::protocol::{self, Entry, EntryKind, Msg};

/// 2001-09-09T01:46:40.123456789Z
const T2001: i64 = 1_000_000_000_123_456_789;
/// 2020-09-13T12:26:40.987654321Z
const T2020: i64 = 1_600_000_000_987_654_321;
/// 2010-01-01T00:00:00.000000001Z
const T2010: i64 = 1_262_304_000_000_000_001;

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

fn mtime_of(p: &Path) -> i64 {
    let m = std::fs::metadata(p).unwrap();
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// A file with these bytes, mode and mtime (nanoseconds since the epoch).
fn make(p: &Path, data: &[u8], mode: u32, mtime_ns: i64) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
    let f = std::fs::File::options().write(true).open(p).unwrap();
    let when = UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64);
    f.set_times(std::fs::FileTimes::new().set_modified(when))
        .unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .unwrap();
    drop(f);
    assert_eq!(
        (mode_of(p), mtime_of(p)),
        (mode, mtime_ns),
        "{}",
        p.display()
    );
}

/// Within the last few minutes (the time of the transfer, not the source's).
fn recent(ns: i64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    (now - ns).abs() < 300 * 1_000_000_000
}

/// (relative path, size, mode, mtime) of the tree used below: a script, a
/// group-readable file, an other-readable one, a nested one, and a large one
/// (streamed after PUT_READY, not pipelined).
fn tree_spec() -> Vec<(&'static str, usize, u32, i64)> {
    vec![
        ("run.sh", 40, 0o750, T2001),
        ("notes.txt", 3000, 0o640, T2020),
        ("odd.txt", 10, 0o604, T2010),
        ("sub/deep.txt", 700, 0o600, T2020 + 1),
        ("sub/big.bin", 5 << 20, 0o755, T2001 + 7),
    ]
}

#[test]
fn mode_and_mtime_survive_a_round_trip_of_a_tree() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    for (i, (rel, size, mode, mtime)) in tree_spec().into_iter().enumerate() {
        make(&src.join(rel), &noise(size, i as u64 + 1), mode, mtime);
    }
    s.client().args(["put", "-r"]).arg(&src).assert().success();

    // the server stores them (before publishing: the digest stays valid)
    for (rel, _, mode, mtime) in tree_spec() {
        let p = s.root.join("tree").join(rel);
        assert_eq!(mode_of(&p), mode, "{rel} on the server");
        assert_eq!(mtime_of(&p), mtime, "{rel} on the server");
    }
    // ls -l shows them, and --json gives the mode in octal
    let a = s.client().args(["ls", "-l", "tree"]).assert().success();
    let out = stdout_text(&a);
    for (name, shown) in [
        ("run.sh", "-rwxr-x--- "),
        ("notes.txt", "-rw-r----- "),
        ("odd.txt", "-rw----r-- "),
        ("sub/", "drwx"),
    ] {
        let line = out
            .lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        assert!(line.starts_with(shown), "{name}: {line}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("-rwxr-x--- ") && l.contains("2001-09-09T01:46:40Z")),
        "{out}"
    );
    let a = s
        .client()
        .args(["--json", "ls", "tree/sub"])
        .assert()
        .success();
    let json = stdout_text(&a);
    assert!(
        json.contains(r#""mode":"0755""#) && json.contains(r#""mode":"0600""#),
        "{json}"
    );
    // the sums are still the recorded ones (nothing was re-hashed)
    s.client().args(["sums", "tree"]).assert().success();

    // and get -r gives them back, to the nanosecond
    let back = tempfile::tempdir().unwrap();
    s.client()
        .args(["get", "-r", "tree"])
        .arg(back.path())
        .assert()
        .success();
    for (i, (rel, size, mode, mtime)) in tree_spec().into_iter().enumerate() {
        let p = back.path().join("tree").join(rel);
        assert_eq!(
            std::fs::read(&p).unwrap(),
            noise(size, i as u64 + 1),
            "{rel}"
        );
        assert_eq!(mode_of(&p), mode, "{rel} downloaded");
        assert_eq!(mtime_of(&p), mtime, "{rel} downloaded");
    }
}

#[test]
fn single_files_keep_metadata_and_special_bits_are_dropped() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    // setuid (and sticky) never reach the server
    let suid = work.path().join("tool");
    make(&suid, b"#!/bin/sh\necho hi\n", 0o4755, T2001);
    let sticky = work.path().join("shared.txt");
    make(&sticky, b"s", 0o1666, T2010);
    s.client()
        .arg("put")
        .arg(&suid)
        .arg(&sticky)
        .assert()
        .success();
    assert_eq!(mode_of(&s.root.join("tool")), 0o755);
    assert_eq!(mtime_of(&s.root.join("tool")), T2001);
    assert_eq!(mode_of(&s.root.join("shared.txt")), 0o666);
    // a single large file
    let big = work.path().join("big.bin");
    make(&big, &noise(3 << 20, 9), 0o700, T2020);
    s.client().arg("put").arg(&big).assert().success();
    assert_eq!(mode_of(&s.root.join("big.bin")), 0o700);
    assert_eq!(mtime_of(&s.root.join("big.bin")), T2020);

    // get -o, small and large
    let out = work.path().join("tool.copy");
    s.client()
        .args(["get", "tool", "-o"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!((mode_of(&out), mtime_of(&out)), (0o755, T2001));
    let out = work.path().join("big.copy");
    s.client()
        .args(["get", "big.bin", "-o"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!((mode_of(&out), mtime_of(&out)), (0o700, T2020));
    // a file placed on the server with special bits is served without them
    make(&s.root.join("placed"), b"p", 0o2750, T2010);
    let out = work.path().join("placed.copy");
    s.client()
        .args(["get", "placed", "-o"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!((mode_of(&out), mtime_of(&out)), (0o750, T2010));
}

#[test]
fn no_preserve_leaves_modes_and_times_to_the_receiving_side() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("script.sh");
    make(&f, b"#!/bin/sh\n", 0o750, T2001);
    s.client()
        .args(["put", "--no-preserve"])
        .arg(&f)
        .assert()
        .success();
    let stored = s.root.join("script.sh");
    assert_ne!(mode_of(&stored), 0o750, "the server's default mode");
    assert_eq!(mode_of(&stored) & 0o7000, 0);
    assert!(recent(mtime_of(&stored)), "the upload time");

    // with metadata on the server, get --no-preserve ignores it
    let g = work.path().join("g");
    make(&g, &noise(2 << 20, 4), 0o750, T2001);
    let small = work.path().join("small");
    make(&small, b"tiny", 0o750, T2001);
    s.client().arg("put").arg(&g).arg(&small).assert().success();
    assert_eq!(mode_of(&s.root.join("g")), 0o750);
    let out = tempfile::tempdir().unwrap();
    s.client()
        .args(["get", "--no-preserve", "g", "small", "-o"])
        .arg(out.path())
        .assert()
        .success();
    for name in ["g", "small"] {
        let p = out.path().join(name);
        assert_ne!(mode_of(&p), 0o750, "{name}: the umask's mode");
        assert!(recent(mtime_of(&p)), "{name}: the download time");
    }
}

/// A raw session that offers `features` in HELLO; the WELCOME's features.
async fn raw_with(s: &Server, features: u32) -> (Raw, u32) {
    let mut r = Raw::tls(&s.addr, &s.trust()).await;
    r.w.send(&Msg::Hello {
        min_version: 1,
        max_version: 1,
        features,
    })
    .await
    .unwrap();
    r.w.send_now(&Msg::Auth {
        secret: TOKEN.as_bytes().to_vec(),
    })
    .await
    .unwrap();
    let agreed = match r.next().await {
        Msg::Welcome { features, .. } => features,
        other => panic!("{other:?}"),
    };
    assert!(matches!(r.next().await, Msg::AuthOk { .. }));
    (r, agreed)
}

/// PUT `name` with `data` (after PUT_READY); the reply to it.
async fn put_raw(r: &mut Raw, name: &str, data: &[u8]) -> Msg {
    use sha2::Digest;
    r.w.send_now(&Msg::Put {
        size: data.len() as u64,
        flags: 0,
        name: name.into(),
    })
    .await
    .unwrap();
    assert_eq!(r.next().await, Msg::PutReady { offset: 0 });
    r.data(data).await;
    r.w.send_now(&Msg::End {
        sha256: sha2::Sha256::digest(data).into(),
    })
    .await
    .unwrap();
    r.next().await
}

fn expect_violation(m: Option<Msg>, what: &str) {
    match m {
        Some(Msg::Error { code: 9, message }) => assert!(message.contains(what), "{message}"),
        other => panic!("expected ERROR 9 ({what}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attrs_needs_feature_meta_and_a_put_right_after_it() {
    let s = Server::start();
    std::fs::write(s.root.join("f"), b"abc").unwrap();

    // without FEATURE_META: nothing changes on the wire, and ATTRS is refused
    let (mut r, agreed) = raw_with(&s, protocol::FEATURE_ZSTD).await;
    assert_eq!(agreed & protocol::FEATURE_META, 0);
    r.w.send_now(&Msg::List { path: "".into() }).await.unwrap();
    match r.next().await {
        Msg::Entry(Entry { mode: None, .. }) => {}
        other => panic!("an ENTRY without mode: {other:?}"),
    }
    assert_eq!(r.next().await, Msg::ListEnd);
    r.w.send_now(&Msg::Get {
        offset: 0,
        compress: 0,
        name: "f".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::GetOk { size: 3, .. }));
    r.next().await; // DATA
    assert!(matches!(r.next().await, Msg::End { .. }));
    r.w.send_now(&Msg::Attrs {
        mode: 0o644,
        mtime_ns: 0,
    })
    .await
    .unwrap();
    expect_violation(r.next_or_closed().await, "not negotiated");
    assert_eq!(r.next_or_closed().await, None, "the connection is closed");

    // with it: ATTRS followed by anything but PUT is refused
    let (mut r, agreed) = raw_with(&s, protocol::FEATURE_META).await;
    assert_eq!(agreed, protocol::FEATURE_META);
    r.w.send(&Msg::Attrs {
        mode: 0o644,
        mtime_ns: 0,
    })
    .await
    .unwrap();
    r.w.send_now(&Msg::List { path: "".into() }).await.unwrap();
    expect_violation(r.next_or_closed().await, "followed by PUT");
    assert_eq!(r.next_or_closed().await, None, "the connection is closed");

    let (mut r, _) = raw_with(&s, protocol::FEATURE_META).await;
    for _ in 0..2 {
        r.w.send(&Msg::Attrs {
            mode: 0o600,
            mtime_ns: T2001,
        })
        .await
        .unwrap();
    }
    r.w.flush().await.unwrap();
    expect_violation(r.next_or_closed().await, "another ATTRS");

    // and a mode the server could not read is stored readable by its owner
    let (mut r, _) = raw_with(&s, protocol::FEATURE_META).await;
    r.w.send(&Msg::Attrs {
        mode: 0o000,
        mtime_ns: T2010,
    })
    .await
    .unwrap();
    assert!(matches!(
        put_raw(&mut r, "locked", b"xyz").await,
        Msg::PutOk { size: 3, .. }
    ));
    assert_eq!(mode_of(&s.root.join("locked")), 0o400);
    assert_eq!(mtime_of(&s.root.join("locked")), T2010);
    // a PUT without ATTRS: the defaults, as before
    assert!(matches!(
        put_raw(&mut r, "plain", b"p").await,
        Msg::PutOk { .. }
    ));
    assert!(recent(mtime_of(&s.root.join("plain"))));
    // GET_OK comes right after the file's ATTRS; STAT and LIST carry the mode
    r.w.send_now(&Msg::Get {
        offset: 0,
        compress: 0,
        name: "locked".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        r.next().await,
        Msg::Attrs {
            mode: 0o400,
            mtime_ns: T2010
        }
    );
    assert!(matches!(
        r.next().await,
        Msg::GetOk {
            size: 3,
            mtime_ns: T2010,
            sha256: Some(_)
        }
    ));
    r.next().await; // DATA
    assert!(matches!(r.next().await, Msg::End { .. }));
    r.w.send_now(&Msg::Stat {
        name: "locked".into(),
    })
    .await
    .unwrap();
    match r.next().await {
        Msg::Entry(e) => assert_eq!((e.kind, e.mode), (EntryKind::File, Some(0o400))),
        other => panic!("{other:?}"),
    }
    r.w.send_now(&Msg::Bye).await.unwrap();
    assert_eq!(r.next().await, Msg::Bye);
}
