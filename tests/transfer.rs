//! Files go up and come back bit for bit, through the real binary over TLS.

mod common;

use common::{Server, noise, sha256_hex};

fn put_get_round_trip(s: &Server, name: &str, data: &[u8]) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join(name);
    std::fs::write(&src, data).unwrap();
    let want = sha256_hex(data);
    let out = s
        .client()
        .arg("put")
        .arg(&src)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(String::from_utf8(out).unwrap(), format!("{want}  {name}\n"));
    // stored bytes on the server are exactly the file
    assert_eq!(std::fs::read(s.root.join(name)).unwrap(), data);
    let dst = work.path().join("back");
    s.client()
        .args(["get", name, "-o"])
        .arg(&dst)
        .arg("--sha256")
        .arg(&want)
        .assert()
        .success();
    assert_eq!(sha256_hex(&std::fs::read(&dst).unwrap()), want, "{name}");
    // no temporary files left beside the download
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn round_trips_of_edge_sizes_keep_every_byte() {
    let s = Server::start();
    for (i, len) in [
        0usize,
        1,
        65535,
        65536,
        65537,
        256 * 1024 + 1,
        3 * 1024 * 1024 + 7,
    ]
    .into_iter()
    .enumerate()
    {
        put_get_round_trip(&s, &format!("f{i}.bin"), &noise(len, i as u64));
    }
    let text = "line of text ünïcode\r\n".repeat(10_000);
    put_get_round_trip(&s, "text.txt", text.as_bytes());
}

#[test]
fn a_100_mib_file_round_trips() {
    let s = Server::start();
    put_get_round_trip(&s, "big.bin", &noise(100 << 20, 42));
}

#[test]
fn digest_matches_sha256sum() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("x.dat");
    std::fs::write(&src, noise(1_000_003, 9)).unwrap();
    let sum = std::process::Command::new("sha256sum")
        .arg(&src)
        .output()
        .unwrap();
    let sum = String::from_utf8(sum.stdout).unwrap();
    let sum = sum.split_whitespace().next().unwrap().to_string();
    let out = s
        .client()
        .arg("put")
        .arg(&src)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(out).unwrap().starts_with(&sum));
    let ls = s
        .client()
        .args(["ls", "-l", "--bytes", "--full-digest"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let ls = String::from_utf8(ls).unwrap();
    assert!(ls.contains(&sum), "ls -l shows the digest: {ls}");
    assert!(ls.contains("1000003"), "ls shows the size: {ls}");
    assert!(ls.trim_end().ends_with("x.dat"));
}

#[test]
fn taken_names_are_numbered_and_overwrite_is_explicit() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("report.pdf");
    for (i, expect) in ["report.pdf", "report (1).pdf", "report (2).pdf"]
        .iter()
        .enumerate()
    {
        std::fs::write(&src, format!("v{i}")).unwrap();
        let out = s
            .client()
            .arg("put")
            .arg(&src)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        assert!(String::from_utf8(out).unwrap().trim_end().ends_with(expect));
    }
    let tgz = work.path().join("a.tar.gz");
    std::fs::write(&tgz, "t").unwrap();
    s.client().arg("put").arg(&tgz).assert().success();
    // other bytes under the taken name (the same bytes would be `unchanged`)
    std::fs::write(&tgz, "u").unwrap();
    let out = s
        .client()
        .arg("put")
        .arg(&tgz)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .trim_end()
            .ends_with("a (1).tar.gz")
    );
    std::fs::write(&src, "replaced").unwrap();
    s.client()
        .arg("put")
        .arg(&src)
        .arg("--overwrite")
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(s.root.join("report.pdf")).unwrap(),
        "replaced"
    );
    assert_eq!(
        std::fs::read_to_string(s.root.join("report (1).pdf")).unwrap(),
        "v1"
    );
    assert_eq!(s.files().len(), 5);
}

#[test]
fn twenty_concurrent_uploads_of_one_name_make_twenty_files() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    let mut digests = Vec::new();
    for i in 0..20 {
        let p = work.path().join(format!("src{i}"));
        let data = noise(200_000 + i * 1000, i as u64);
        digests.push(sha256_hex(&data));
        std::fs::write(&p, &data).unwrap();
        let mut c = s.process();
        c.arg("put").arg(&p).args(["--as", "same.txt"]);
        c.stdout(std::process::Stdio::piped());
        children.push(c.spawn().unwrap());
    }
    let mut reported = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        reported.push(String::from_utf8(out.stdout).unwrap());
    }
    let mut expected: Vec<String> = (1..20).map(|n| format!("same ({n}).txt")).collect();
    expected.push("same.txt".into());
    expected.sort();
    assert_eq!(s.files(), expected);
    // every upload is there, intact, under the name it was told
    let mut on_disk: Vec<String> = s
        .files()
        .iter()
        .map(|f| sha256_hex(&std::fs::read(s.root.join(f)).unwrap()))
        .collect();
    on_disk.sort();
    digests.sort();
    assert_eq!(on_disk, digests);
    for line in reported {
        let (digest, name) = line.trim_end().split_once("  ").unwrap();
        assert_eq!(
            sha256_hex(&std::fs::read(s.root.join(name)).unwrap()),
            digest
        );
    }
}

#[test]
fn get_never_clobbers_a_local_file_unless_forced() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("up.txt");
    std::fs::write(&src, "remote").unwrap();
    s.client()
        .arg("put")
        .arg(&src)
        .args(["--as", "doc.txt"])
        .assert()
        .success();
    let local = work.path().join("doc.txt");
    std::fs::write(&local, "precious").unwrap();
    let out = s
        .client()
        .current_dir(work.path())
        .args(["get", "doc.txt"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .trim_end()
            .ends_with("doc (1).txt")
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "precious");
    assert_eq!(
        std::fs::read_to_string(work.path().join("doc (1).txt")).unwrap(),
        "remote"
    );
    s.client()
        .current_dir(work.path())
        .args(["get", "doc.txt", "--force"])
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "remote");
    // into a directory
    let sub = work.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    s.client()
        .args(["get", "doc.txt", "-o"])
        .arg(&sub)
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(sub.join("doc.txt")).unwrap(),
        "remote"
    );
}

#[test]
fn rm_removes_and_reports_missing_files() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("gone.txt");
    std::fs::write(&src, "x").unwrap();
    s.client().arg("put").arg(&src).assert().success();
    s.client().args(["rm", "gone.txt"]).assert().success();
    assert!(s.files().is_empty());
    s.client().args(["rm", "gone.txt"]).assert().code(6);
    s.client()
        .args(["get", "gone.txt"])
        .current_dir(work.path())
        .assert()
        .code(6);
}

#[test]
fn subdirectories_are_created_and_listed() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("n.txt");
    std::fs::write(&src, "nested").unwrap();
    s.client()
        .arg("put")
        .arg(&src)
        .args(["--as", "a/b/n.txt"])
        .assert()
        .success();
    assert_eq!(s.files(), ["a/b/n.txt"]);
    let ls = s
        .client()
        .arg("ls")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(ls).unwrap().trim_end().ends_with("a/"));
    let ls = s
        .client()
        .args(["ls", "a/b"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(ls).unwrap().trim_end().ends_with("n.txt"));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_session_carries_many_commands_then_ends_cleanly() {
    use sft::protocol::Msg;
    let s = Server::start();
    let mut r = s.raw().await;
    for i in 0..5u8 {
        let data = vec![i; 1000];
        r.w.send_now(&Msg::Put {
            size: 1000,
            flags: 0,
            name: format!("s{i}"),
        })
        .await
        .unwrap();
        assert!(matches!(r.next().await, Msg::PutReady { offset: 0 }));
        r.data(&data).await;
        let digest: [u8; 32] =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&data)).into();
        r.w.send_now(&Msg::End { sha256: digest }).await.unwrap();
        assert!(matches!(r.next().await, Msg::PutOk { size: 1000, .. }));
    }
    r.w.send_now(&Msg::List {
        path: String::new(),
    })
    .await
    .unwrap();
    let mut n = 0;
    while let Msg::Entry(_) = r.next().await {
        n += 1;
    }
    assert_eq!(n, 5);
    r.w.send_now(&Msg::Bye).await.unwrap();
    assert_eq!(r.next().await, Msg::Bye);
    assert_eq!(r.next_or_closed().await, None, "server closes after BYE");
}

/// One burst of pipelined commands of every kind, sent without waiting:
/// the replies come back in the order of the commands, each exactly as if
/// it had been sent alone. A GET of a file whose upload is still being
/// committed sees the committed file.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_mixed_commands_is_answered_in_order() {
    use sft::protocol::{Encoding, Msg, PUT_PIPELINED};
    use sha2::Digest;
    let s = Server::start();
    let mut r = s.raw().await;
    let (a, b) = (noise(5000, 1), noise(300, 2));
    let put = |name: &str, data: &[u8]| {
        vec![
            Msg::Put {
                size: data.len() as u64,
                flags: PUT_PIPELINED,
                name: name.into(),
            },
            Msg::Data {
                encoding: Encoding::Raw,
                raw_len: data.len() as u32,
                payload: data.to_vec().into(),
            },
            Msg::End {
                sha256: sha2::Sha256::digest(data).into(),
            },
        ]
    };
    let get = |offset: u64, name: &str| Msg::Get {
        offset,
        compress: 0,
        name: name.into(),
    };
    let mut burst = put("a", &a);
    burst.push(get(0, "a"));
    burst.push(Msg::List { path: "".into() });
    // (a GET with an offset asks to resume: it waits for PARTIAL, so it is
    // never part of a burst; an invalid name is the refusal here)
    burst.push(get(0, "../a"));
    burst.push(get(0, "missing"));
    burst.extend(put("b", &b));
    burst.push(Msg::Stat { name: "b".into() });
    burst.push(Msg::Bye);
    for m in &burst {
        r.w.send(m).await.unwrap();
    }
    r.w.flush().await.unwrap();

    let digest_a: [u8; 32] = sha2::Sha256::digest(&a).into();
    assert!(matches!(r.next().await, Msg::PutOk { ref name, .. } if name == "a"));
    match r.next().await {
        Msg::GetOk { size, sha256, .. } => {
            assert_eq!(size, a.len() as u64);
            assert_eq!(sha256, Some(digest_a), "the digest recorded at commit");
        }
        other => panic!("expected GET_OK, got {other:?}"),
    }
    let mut got = Vec::new();
    loop {
        match r.next().await {
            Msg::Data { payload, .. } => got.extend_from_slice(&payload),
            Msg::End { sha256 } => {
                assert_eq!(sha256, digest_a);
                break;
            }
            other => panic!("expected DATA or END, got {other:?}"),
        }
    }
    assert_eq!(got, a);
    assert!(matches!(r.next().await, Msg::Entry(ref e) if e.name == "a"));
    assert!(matches!(r.next().await, Msg::ListEnd));
    assert!(
        matches!(r.next().await, Msg::Error { code: 2, .. }),
        "invalid name"
    );
    assert!(
        matches!(r.next().await, Msg::Error { code: 6, .. }),
        "not found"
    );
    assert!(matches!(r.next().await, Msg::PutOk { ref name, .. } if name == "b"));
    assert!(matches!(r.next().await, Msg::Entry(ref e) if e.name == "b" && e.size == 300));
    assert!(matches!(r.next().await, Msg::Bye));
}
