//! The store's unit tests: uploads, commits, clones, walks and names on a
//! real directory.

use std::io::Write;

use sha2::{Digest, Sha256};

use super::publish::{publish, unpublish};
use super::*;
use crate::protocol::Attrs;

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), Fsync::Never).unwrap();
    (d, s)
}

fn upload(s: &Store, name: &str, data: &[u8], overwrite: bool) -> Result<String> {
    let mut up = s.begin_upload(name)?;
    up.file.write_all(data).unwrap();
    let d: [u8; 32] = Sha256::digest(data).into();
    s.commit(up, &d, overwrite, "", None, &[]).map(|p| p.name)
}

#[test]
fn a_batch_is_committed_together_in_order_with_taken_names_numbered() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), Fsync::Always).unwrap();
    upload(&s, "old", b"old", false).unwrap();
    let mut batch = Vec::new();
    for (name, data, overwrite) in [
        ("a.txt", &b"first"[..], false),
        ("sub/deeper/b", b"second", false),
        ("a.txt", b"third", false),
        ("old", b"new", true),
    ] {
        let mut up = s.begin_upload(name).unwrap();
        up.file.write_all(data).unwrap();
        batch.push(Staged {
            up,
            sha256: Sha256::digest(data).into(),
            overwrite,
            owner: "rita".into(),
            attrs: None,
            holds: Vec::new(),
        });
    }
    let got: Vec<Published> = s
        .commit_all(batch)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "sub/deeper/b", "a (1).txt", "old"]);
    assert_eq!(
        got[3].replaced,
        Some(Existing {
            size: 3,
            owner: String::new()
        }),
        "the replaced file"
    );
    for (name, data) in [
        ("a.txt", &b"first"[..]),
        ("sub/deeper/b", b"second"),
        ("a (1).txt", b"third"),
        ("old", b"new"),
    ] {
        assert_eq!(std::fs::read(d.path().join(name)).unwrap(), data);
        let (_, info) = s.open_read(name).unwrap();
        assert_eq!(info.sha256, Some(Sha256::digest(data).into()), "{name}");
        assert_eq!(s.existing(name).unwrap().unwrap().owner, "rita");
    }
    // nothing left under a reserved name
    assert_eq!(s.sweep().unwrap(), 0);
    // an empty batch is nothing to do
    assert!(s.commit_all(Vec::new()).is_empty());
}

#[test]
fn clones_copy_only_the_owners_verified_content() {
    let (dir, s) = store();
    let data = b"the same bytes twice".as_slice();
    let d: [u8; 32] = Sha256::digest(data).into();
    let mut up = s.begin_upload("a").unwrap();
    up.file.write_all(data).unwrap();
    s.commit(up, &d, false, "rita", None, &[]).unwrap();
    let n = data.len() as u64;
    // nothing is found until the index is filled
    assert_eq!(
        s.clone_from("rita", &d, n, "b").err().unwrap().kind,
        Kind::NotFound
    );
    assert!(s.content.start_building());
    s.index_content();
    // another user, another size or another digest: not found
    for (owner, size, digest) in [("sam", n, d), ("rita", n + 1, d), ("rita", n, [0; 32])] {
        let e = s.clone_from(owner, &digest, size, "b").err().unwrap();
        assert_eq!(e.kind, Kind::NotFound, "{owner} {size}");
    }
    let (up, source) = s.clone_from("rita", &d, n, "b").unwrap();
    assert_eq!(source, "a");
    assert_eq!(
        s.commit(up, &d, false, "rita", None, &[]).unwrap().name,
        "b"
    );
    assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), data);
    // the commit recorded the copy: it is a source too
    let mut c = s.content.candidates(&d, "rita");
    c.sort();
    assert_eq!(c, ["a", "b"]);
    // both changed behind a kept mtime: the copy is checked, not trusted
    for name in ["a", "b"] {
        let p = dir.path().join(name);
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::fs::write(&p, b"other bytes, the same size").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_len(n).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let e = s.clone_from("rita", &d, n, "c").err().unwrap();
    assert_eq!(e.kind, Kind::NotFound);
    assert!(s.content.candidates(&d, "rita").is_empty(), "forgotten");
    assert_eq!(s.sweep().unwrap(), 0, "no copy left behind");
    assert!(!dir.path().join("c").exists());
}

#[test]
fn a_published_upload_can_be_taken_back_restoring_what_it_replaced() {
    let (dir, s) = store();
    upload(&s, "doc", b"old", false).unwrap();
    for (overwrite, visible) in [(true, "doc"), (false, "doc (1)")] {
        let mut up = s.begin_upload("doc").unwrap();
        up.file.write_all(b"new").unwrap();
        let name = publish(&mut up, overwrite).unwrap().name;
        assert_eq!(name, visible);
        assert_eq!(std::fs::read(dir.path().join(visible)).unwrap(), b"new");
        unpublish(&mut up).unwrap();
        drop(up);
        assert_eq!(std::fs::read(dir.path().join("doc")).unwrap(), b"old");
        let listed: Vec<_> = s.list("").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(listed, ["doc"], "overwrite {overwrite}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing left"
        );
    }
    // an overwrite kept removes the old file once the upload is dropped
    let mut up = s.begin_upload("doc").unwrap();
    up.file.write_all(b"newer").unwrap();
    publish(&mut up, true).unwrap();
    drop(up);
    assert_eq!(std::fs::read(dir.path().join("doc")).unwrap(), b"newer");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // overwriting a name that does not exist publishes it
    assert_eq!(upload(&s, "fresh", b"f", true).unwrap(), "fresh");
    assert_eq!(std::fs::read(dir.path().join("fresh")).unwrap(), b"f");
    // a directory is never replaced (nor hidden under a reserved name)
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/inside"), b"kept").unwrap();
    let e = upload(&s, "d", b"file", true).unwrap_err();
    assert!(e.message.contains("is a directory"), "{e}");
    assert_eq!(std::fs::read(dir.path().join("d/inside")).unwrap(), b"kept");
    assert_eq!(s.sweep().unwrap(), 0, "nothing left under a reserved name");
}

#[test]
fn usage_and_sweep_reach_trees_deeper_than_path_max() {
    let (_dir, s) = store();
    // 20 levels of 250-byte names: 5,020 bytes of path, made by hand
    let mut fd = s.open_dir("").unwrap();
    for i in 0..20 {
        let comp = format!("{i:02}{}", "d".repeat(248));
        rustix::fs::mkdirat(&fd, comp.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, comp.as_str(), OFlags::DIRECTORY, Mode::empty()).unwrap();
    }
    for name in ["deep", ".sft-tmp-00"] {
        let f = rustix::fs::openat(&fd, name, OFlags::CREATE | OFlags::WRONLY, Mode::RUSR).unwrap();
        rustix::io::write(&f, b"1234567").unwrap();
    }
    assert_eq!(s.sweep().unwrap(), 1);
    let u = s.usage().unwrap();
    assert_eq!(u.get(""), Some(&(7, 1)));
}

#[test]
fn storage_failures_say_what_happened() {
    let cases = [
        (Errno::ROFS, "read-only filesystem"),
        (Errno::ACCESS, "no permission"),
        (Errno::IO, "Input/output error"),
        (Errno::NOSPC, "storage is full"),
    ];
    for (errno, says) in cases {
        let e = fs_err("storing", "a.txt", errno);
        assert!(e.message.starts_with("storing 'a.txt': "), "{}", e.message);
        assert!(e.message.contains(says), "{errno:?}: {}", e.message);
        assert!(!e.message.contains("os error"), "{}", e.message);
    }
    assert!(
        !fs_err("storing", "a", Errno::ROFS)
            .message
            .contains("permission")
    );
}

#[test]
fn an_upload_is_invisible_until_committed() {
    let (dir, s) = store();
    let mut up = s.begin_upload("a.txt").unwrap();
    up.file.write_all(b"hello").unwrap();
    assert!(s.list("").unwrap().is_empty());
    // on disk only under a reserved name, which clients cannot reach
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with(RESERVED_PREFIX));
    assert!(s.open_read(&names[0]).is_err());
    drop(up);
    assert!(s.list("").unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "removed when dropped"
    );
}

#[test]
fn taken_names_get_numbered_and_overwrite_replaces() {
    let (dir, s) = store();
    assert_eq!(upload(&s, "r.pdf", b"1", false).unwrap(), "r.pdf");
    assert_eq!(upload(&s, "r.pdf", b"2", false).unwrap(), "r (1).pdf");
    assert_eq!(upload(&s, "r.pdf", b"3", false).unwrap(), "r (2).pdf");
    assert_eq!(upload(&s, "r.pdf", b"4", true).unwrap(), "r.pdf");
    assert_eq!(std::fs::read(dir.path().join("r.pdf")).unwrap(), b"4");
    assert_eq!(std::fs::read(dir.path().join("r (1).pdf")).unwrap(), b"2");
    let listed: Vec<_> = s.list("").unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed, ["r (1).pdf", "r (2).pdf", "r.pdf"]);
}

#[test]
fn digests_are_remembered_and_invalidated_by_changes() {
    let (dir, s) = store();
    upload(&s, "f", b"abc", false).unwrap();
    let e = &s.list("").unwrap()[0];
    assert_eq!(
        e.sha256.map(hex::encode).as_deref(),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    std::fs::write(dir.path().join("f"), b"changed by hand").unwrap();
    let e = &s.list("").unwrap()[0];
    assert_eq!(e.sha256, Some(Sha256::digest(b"changed by hand").into()));
}

#[test]
fn attrs_are_stored_before_the_digest_is_recorded() {
    let (_dir, s) = store();
    let mut up = s.begin_upload("run.sh").unwrap();
    up.file.write_all(b"#!/bin/sh\n").unwrap();
    let d: [u8; 32] = Sha256::digest(b"#!/bin/sh\n").into();
    let mtime_ns = 978_307_200_123_456_789; // 2001-01-01, with nanoseconds
    let attrs = Attrs {
        mode: 0o4750, // setuid is dropped
        mtime_ns,
    };
    s.commit(up, &d, false, "u", Some(attrs), &[]).unwrap();
    let e = &s.list("").unwrap()[0];
    assert_eq!(e.mode, Some(0o750));
    assert_eq!(e.mtime_ns, mtime_ns);
    let (_, info) = s.open_read("run.sh").unwrap();
    assert_eq!(
        info.sha256,
        Some(d),
        "the digest is valid for the final mtime"
    );
    // a mode the server could not read is made readable by its owner
    let mut up = s.begin_upload("locked").unwrap();
    up.file.write_all(b"x").unwrap();
    let d: [u8; 32] = Sha256::digest(b"x").into();
    let attrs = Attrs {
        mode: 0,
        mtime_ns: -1_500_000_000,
    };
    s.commit(up, &d, false, "u", Some(attrs), &[]).unwrap();
    let (_, info) = s.open_read("locked").unwrap();
    assert_eq!((info.mode, info.mtime_ns), (0o400, -1_500_000_000));
    assert_eq!(info.sha256, Some(d));
}

#[test]
fn symlinks_never_lead_out_of_the_root() {
    let (dir, s) = store();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("s")).unwrap();
    assert!(s.open_read("link/secret").is_err());
    assert!(s.open_read("s").is_err());
    assert!(s.begin_upload("link/new").is_err());
    assert!(s.list("link").is_err());
    assert!(!outside.path().join("new").exists());
    // links are not listed
    assert!(s.list("").unwrap().is_empty());
}

#[test]
fn uploads_create_directories_and_remove_refuses_them() {
    let (dir, s) = store();
    assert_eq!(upload(&s, "a/b/c.txt", b"x", false).unwrap(), "a/b/c.txt");
    assert!(dir.path().join("a/b/c.txt").is_file());
    assert_eq!(s.remove("a").unwrap_err().kind, Kind::Usage);
    s.remove("a/b/c.txt").unwrap();
    assert_eq!(s.remove("a/b/c.txt").unwrap_err().kind, Kind::NotFound);
}

#[test]
fn reserved_names_are_refused_and_swept() {
    let (dir, s) = store();
    assert_eq!(
        s.begin_upload(".sft-tmp-x").err().unwrap().kind,
        Kind::Usage
    );
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/.sft-tmp-abc"), b"left over").unwrap();
    assert!(s.list("d").unwrap().is_empty());
    assert_eq!(s.sweep().unwrap(), 1);
    assert!(!dir.path().join("d/.sft-tmp-abc").exists());
}
