//! Several `sft serve` on one S3-compatible object store (issue 15), through
//! the real binaries: moto (`python3 -m moto.server`, 0.4 s to start) for the quick
//! cases, Ceph RGW 16.2 (`tests/s3/ceph.sh`) for the races between servers,
//! and a deliberately broken store that ignores `If-None-Match` for the
//! start-up self-check.
//!
//! `.ci/run` installs moto and starts Ceph (setting `SFT_CEPH_ENDPOINT`).
//! Under CI=true a missing engine fails the tests, never skips them;
//! elsewhere a test whose engine is missing says SKIPPED and how to get it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn here(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// An engine to test against: its endpoint and credentials.
#[derive(Clone)]
struct Engine {
    endpoint: String,
    key: String,
    secret: String,
}

impl Engine {
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
        ]
    }

    /// Run tests/s3/s3util.py against this engine.
    fn util(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(here("tests/s3/s3util.py"))
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "s3util {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new bucket for one test.
    fn bucket(&self, name: &str) -> String {
        let b = format!("{name}-{}", std::process::id());
        self.util(&["mkbucket", &b]);
        b
    }

    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.util(&["keys", bucket, prefix])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// An `sft serve` on `bucket`, with more options.
    fn server(&self, bucket: &str, extra: &[&str]) -> Server {
        let url = format!("s3://{bucket}");
        let mut args = vec![
            "--store",
            url.as_str(),
            "--s3-endpoint",
            self.endpoint.as_str(),
            "--s3-allow-http",
        ];
        args.extend_from_slice(extra);
        let env = self.env();
        Server::start_with(Opts {
            extra: &args,
            env: &env,
            ..Default::default()
        })
    }
}

/// A moto server of our own, ended when dropped.
struct Moto {
    child: Child,
    engine: Engine,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether an engine is here; under CI it must be, elsewhere a test without
/// it is skipped, loudly.
fn available(ok: bool, what: &str, how: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {what} is missing: .ci/run must provide it ({how})"
        );
        eprintln!("SKIPPED: {what} is missing ({how})");
    }
    ok
}

/// moto, if installed (`pip install 'moto[server]'`).
fn moto() -> Option<Moto> {
    let installed = Command::new("python3")
        .args(["-c", "import moto.server"])
        .output()
        .is_ok_and(|o| o.status.success());
    available(installed, "moto", "pip install 'moto[server]'").then(start_moto)
}

fn start_moto() -> Moto {
    let port = free_port();
    // (the module, not the moto_server script: found wherever pip put it)
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    assert!(
        wait_port(port, Duration::from_secs(20)),
        "moto did not start"
    );
    Moto {
        child,
        engine: Engine {
            endpoint: format!("http://127.0.0.1:{port}"),
            key: "test".into(),
            secret: "test".into(),
        },
    }
}

/// Ceph RGW: the one `.ci/run` started (`SFT_CEPH_ENDPOINT`). Elsewhere,
/// start one with `tests/s3/ceph.sh install DIR && tests/s3/ceph.sh start
/// DIR 7480` and set `SFT_CEPH_ENDPOINT=http://127.0.0.1:7480`.
fn ceph() -> Option<Engine> {
    let endpoint = std::env::var("SFT_CEPH_ENDPOINT").ok();
    // the tests' helper script talks to it with boto3 (which moto brings)
    let boto3 = Command::new("python3")
        .args(["-c", "import boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    let how = "tests/s3/ceph.sh install DIR && tests/s3/ceph.sh start DIR 7480, then SFT_CEPH_ENDPOINT=http://127.0.0.1:7480";
    if !available(
        endpoint.is_some() && boto3,
        "Ceph RGW (SFT_CEPH_ENDPOINT) or boto3",
        how,
    ) {
        return None;
    }
    Some(Engine {
        endpoint: endpoint?,
        key: std::env::var("S3_ACCESS_KEY").unwrap_or_else(|_| "sftkey".into()),
        secret: std::env::var("S3_SECRET_KEY").unwrap_or_else(|_| "sftsecret".into()),
    })
}

fn file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// `sft put` through `s`; the name it was stored under.
fn put(s: &Server, path: &Path, as_name: &str) -> std::process::Output {
    s.process()
        .args(["--json", "put", "--as", as_name])
        .arg(path)
        .output()
        .unwrap()
}

fn stored_name(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["op"] == "put")
        .unwrap_or_else(|| panic!("no put line in {text}"));
    v["remote"].as_str().unwrap().to_string()
}

fn get(s: &Server, name: &str, out: &Path) -> Vec<u8> {
    s.client()
        .args(["get", name, "-o"])
        .arg(out)
        .assert()
        .success();
    std::fs::read(out).unwrap()
}

fn ls(s: &Server, dir: &str) -> Vec<String> {
    let mut c = s.client();
    c.args(["ls"]);
    if !dir.is_empty() {
        c.arg(dir);
    }
    stdout_text(&c.assert().success())
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// The "(server)" row of `sft df --bytes`: (used, reserved, files).
fn usage(s: &Server) -> (u64, u64, u64) {
    let text = stdout_text(&s.client().args(["df", "--bytes"]).assert().success());
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("(server)"))
        .unwrap_or_else(|| panic!("no (server) row in {text}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[5].parse().unwrap(),
    )
}

#[test]
fn a_file_put_through_one_server_is_listed_fetched_and_removed_through_another() {
    let Some(m) = moto() else { return };
    let e = &m.engine;
    let bucket = e.bucket("share");
    let a = e.server(&bucket, &[]);
    let b = e.server(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    // one small file and one of several 8 MiB parts (a multipart blob)
    let small = file(work.path(), "small.txt", b"hello from A\n");
    let big_data = noise(20 << 20, 7);
    let big = file(work.path(), "big.bin", &big_data);
    assert!(put(&a, &small, "dir/small.txt").status.success());
    let out = put(&a, &big, "big.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let top = ls(&b, "");
    assert!(top.iter().any(|l| l.starts_with("big.bin")), "{top:?}");
    assert!(top.iter().any(|l| l.starts_with("dir/")), "{top:?}");
    assert_eq!(
        get(&b, "big.bin", &work.path().join("big.copy")),
        big_data,
        "byte-exact through the other server"
    );
    assert_eq!(
        get(&b, "dir/small.txt", &work.path().join("small.copy")),
        b"hello from A\n"
    );
    // sums and verify read the recorded digests through the other server
    let sums = stdout_text(&b.client().args(["sums"]).assert().success());
    assert!(
        sums.contains(&format!("{}  big.bin", sha256_hex(&big_data))),
        "{sums}"
    );
    b.client()
        .args([
            "verify",
            "dir/small.txt",
            "--sha256",
            &sha256_hex(b"hello from A\n"),
        ])
        .assert()
        .success();
    b.client()
        .args(["verify", "big.bin", "--sha256", &"0".repeat(64)])
        .assert()
        .code(8);
    // pipelined small files (put -r) and compression, through A, back through B
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..30 {
        file(
            &tree,
            &format!("t{i}.txt"),
            format!("small {i}\n").repeat(100).as_bytes(),
        );
    }
    a.client()
        .args(["put", "-r", "--compress", "3"])
        .arg(&tree)
        .assert()
        .success();
    let back = work.path().join("back");
    std::fs::create_dir(&back).unwrap();
    b.client()
        .args(["get", "-r", "tree"])
        .arg(&back)
        .assert()
        .success();
    for i in 0..30 {
        let got = std::fs::read(back.join(format!("tree/t{i}.txt"))).unwrap();
        assert_eq!(got, format!("small {i}\n").repeat(100).as_bytes());
    }
    b.client()
        .args(["rm", "-r", "-y", "tree"])
        .assert()
        .success();
    b.client().args(["rm", "big.bin"]).assert().success();
    let after = ls(&a, "");
    assert!(!after.iter().any(|l| l.starts_with("big.bin")), "{after:?}");
    // the manifest first, then the blob: nothing of it is left
    assert_eq!(e.keys(&bucket, "blobs/").len(), 1, "only small.txt's blob");
    // directories: made empty, refused while not empty, removed
    a.client().args(["mkdir", "empty"]).assert().success();
    assert!(ls(&b, "").iter().any(|l| l.starts_with("empty")));
    let err = stderr_text(&b.client().args(["rm", "dir"]).assert().failure());
    assert!(err.contains("is a directory"), "{err}");
    b.client()
        .args(["rm", "-r", "-y", "empty"])
        .assert()
        .success();
    assert!(!ls(&a, "").iter().any(|l| l.starts_with("empty")));
    // usage is shared: what A stored counts through B
    let (used, reserved, files) = usage(&b);
    assert_eq!((used, reserved, files), (13, 0, 1));
    // an overwrite through B replaces A's upload; the usage follows
    let newer = file(work.path(), "newer.txt", b"newer text, from B\n");
    b.client()
        .args(["put", "--overwrite", "--as", "dir/small.txt"])
        .arg(&newer)
        .assert()
        .success();
    assert_eq!(
        get(&a, "dir/small.txt", &work.path().join("newer.copy")),
        b"newer text, from B\n"
    );
    assert_eq!(usage(&a), (19, 0, 1));
    assert_eq!(e.keys(&bucket, "blobs/").len(), 1, "the old blob is gone");
    // admin shutdown drains and exits 0; B serves on
    let mut a = a;
    a.client().args(["admin", "shutdown"]).assert().success();
    assert_eq!(a.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(
        get(&b, "dir/small.txt", &work.path().join("again")),
        b"newer text, from B\n"
    );
}

#[test]
fn the_self_check_refuses_a_store_that_ignores_conditional_writes() {
    let mut fake = Command::new("python3")
        .arg(here("tests/s3/ignoring.py"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(fake.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    write_private(&tokens, b"some-token-0123456789\n");
    let out = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "s3://ignored",
        ])
        .args([
            "--s3-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--s3-allow-http",
        ])
        .arg("--root")
        .arg(dir.path().join("scratch"))
        .arg("--token-file")
        .arg(&tokens)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .output()
        .unwrap();
    let _ = fake.kill();
    let _ = fake.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a broken store: {err}");
    assert!(err.contains("ignores conditional writes"), "{err}");
    assert!(!err.contains("http://"), "one line, no URL dump: {err}");
}

#[test]
fn garbage_collection_removes_orphan_part_sets_and_keeps_named_ones() {
    let Some(m) = moto() else { return };
    let e = &m.engine;
    let bucket = e.bucket("gc");
    let work = tempfile::tempdir().unwrap();
    {
        let a = e.server(&bucket, &[]);
        assert!(
            put(&a, &file(work.path(), "kept.txt", b"kept\n"), "kept.txt")
                .status
                .success()
        );
    }
    // an orphan part set, as a server killed between its last part and its
    // manifest leaves (or an upload cut off and not kept)
    let orphan = file(work.path(), "orphan", b"nobody names me");
    for part in ["000000", "000001", "000002"] {
        let key = format!("blobs/00orphan/{part}");
        e.util(&["put", &bucket, &key, orphan.to_str().unwrap()]);
    }
    assert_eq!(e.keys(&bucket, "blobs/").len(), 4);
    // any server collects at start (grace 0 here: every orphan is old enough)
    let b = e.server(&bucket, &["--s3-gc-grace", "0s"]);
    let until = Instant::now() + Duration::from_secs(20);
    while e.keys(&bucket, "blobs/").len() > 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = e.keys(&bucket, "blobs/");
    assert_eq!(left.len(), 1, "the orphan set is gone: {left:?}");
    assert!(!left[0].contains("00orphan"));
    assert_eq!(get(&b, "kept.txt", &work.path().join("k")), b"kept\n");
}

#[test]
fn ceph_twenty_uploads_of_one_name_through_two_servers_get_twenty_names() {
    let Some(e) = ceph() else { return };
    let bucket = e.bucket("race");
    let a = e.server(&bucket, &[]);
    let b = e.server(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    let mut kids = Vec::new();
    for i in 0..20 {
        let data = format!("upload number {i}\n");
        let f = file(work.path(), &format!("f{i}"), data.as_bytes());
        let s = if i % 2 == 0 { &a } else { &b };
        let child = s
            .process()
            .args(["--json", "put", "--as", "same.txt"])
            .arg(&f)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        kids.push((data, child));
    }
    let mut names = std::collections::BTreeMap::new();
    for (data, child) in kids {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        names.insert(stored_name(&out), data);
    }
    assert_eq!(names.len(), 20, "20 distinct names: {:?}", names.keys());
    for (i, (name, data)) in names.iter().enumerate() {
        // through either server, byte-exact
        let s = if i % 2 == 0 { &a } else { &b };
        let got = get(s, name, &work.path().join("copy"));
        assert_eq!(got, data.as_bytes(), "{name} kept its own content");
    }
}

#[test]
fn ceph_a_shared_quota_is_never_exceeded_by_racing_servers() {
    let Some(e) = ceph() else { return };
    let bucket = e.bucket("quota");
    // 10 MB for all, through both servers; 8 uploads of 3 MB race for it
    let a = e.server(&bucket, &["--quota", "10MB"]);
    let b = e.server(&bucket, &["--quota", "10MB"]);
    let work = tempfile::tempdir().unwrap();
    let mut kids = Vec::new();
    for i in 0..8 {
        let f = file(work.path(), &format!("q{i}"), &noise(3_000_000, i));
        let s = if i % 2 == 0 { &a } else { &b };
        kids.push(
            s.process()
                .args(["put", "--as", &format!("q{i}.bin")])
                .arg(&f)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut ok = 0u64;
    for k in kids {
        let out = k.wait_with_output().unwrap();
        if out.status.success() {
            ok += 1;
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("quota exceeded"), "{err}");
        }
    }
    assert_eq!(ok, 3, "exactly what fits: 3 × 3 MB ≤ 10 MB");
    let (used, reserved, files) = usage(&b);
    assert_eq!((used, reserved, files), (9_000_000, 0, 3));
    // usage equals what is stored
    assert_eq!(e.keys(&bucket, "blobs/").len(), 3);
    assert_eq!(e.keys(&bucket, "files/").len(), 3);
}

#[test]
fn ceph_a_server_killed_mid_upload_leaves_nothing_visible_and_its_reservation_expires() {
    let Some(e) = ceph() else { return };
    let bucket = e.bucket("crash");
    let mut a = e.server(&bucket, &["--quota", "1GB", "--s3-lease", "4s"]);
    let b = e.server(&bucket, &["--quota", "1GB", "--s3-lease", "4s"]);
    let work = tempfile::tempdir().unwrap();
    let big = file(work.path(), "big.bin", &noise(300 << 20, 3));
    let mut up = a
        .process()
        .args(["put", "--as", "big.bin", "--limit-rate", "20MB"])
        .arg(&big)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // the reservation is there, through the other server
    let until = Instant::now() + Duration::from_secs(20);
    while usage(&b).1 == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(usage(&b).1, 300 << 20, "reserved before data is accepted");
    std::thread::sleep(Duration::from_millis(500));
    let _ = a.child.kill(); // SIGKILL
    let _ = a.child.wait();
    let _ = up.kill();
    let _ = up.wait();
    assert!(!ls(&b, "").iter().any(|l| l.starts_with("big.bin")));
    // what the crash left, for the record (cargo test -- --nocapture)
    let left = e.keys(&bucket, "");
    eprintln!(
        "after SIGKILL mid-upload: {} objects: {} blobs, {} manifests, {} ledger entries, {} heartbeats, {} multipart uploads; the scratch file: {:?}",
        left.len(),
        left.iter().filter(|k| k.starts_with("blobs/")).count(),
        left.iter().filter(|k| k.starts_with("files/")).count(),
        left.iter().filter(|k| k.starts_with("ledger/")).count(),
        left.iter().filter(|k| k.starts_with("servers/")).count(),
        e.util(&["uploads", &bucket]).lines().count(),
        std::fs::read_dir(&a.root).map(|d| d.count()).unwrap_or(0),
    );
    // the lease runs out: nothing stays reserved
    let until = Instant::now() + Duration::from_secs(30);
    while usage(&b).1 != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        usage(&b),
        (0, 0, 0),
        "the dead server's reservation expired"
    );
    // and no part of it stays once collected (by a server kept running
    // meanwhile: the collection starts with it, and removes a part set)
    let _collector = e.server(&bucket, &["--s3-gc-grace", "0s"]);
    assert!(e.keys(&bucket, "files/").is_empty());
    let until = Instant::now() + Duration::from_secs(20);
    while !e.keys(&bucket, "blobs/").is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(e.keys(&bucket, "blobs/").is_empty());
}

#[test]
fn ceph_a_server_killed_between_a_file_and_its_ledger_entry_leaves_the_file_counted() {
    let Some(e) = ceph() else { return };
    let bucket = e.bucket("between");
    // server A reaches the store through a proxy that goes silent right
    // after A's first manifest is created, before A can record it
    let mut proxy = Command::new("python3")
        .arg(here("tests/s3/freeze.py"))
        .arg(e.endpoint.trim_start_matches("http://"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(proxy.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let via = Engine {
        endpoint: format!("http://127.0.0.1:{}", line.trim()),
        ..e.clone()
    };
    let mut a = via.server(&bucket, &["--quota", "1GB", "--s3-lease", "4s"]);
    let b = e.server(&bucket, &["--quota", "1GB", "--s3-lease", "4s"]);
    let work = tempfile::tempdir().unwrap();
    let data = noise(3_000_000, 11);
    let f = file(work.path(), "x.bin", &data);
    let mut up = a
        .process()
        .args(["put", "--as", "x.bin"])
        .arg(&f)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !ls(&b, "").iter().any(|l| l.contains("x.bin")) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ls(&b, "").iter().any(|l| l.contains("x.bin")),
        "the file became visible through B"
    );
    let _ = a.child.kill(); // SIGKILL: its ledger entry never written
    let _ = a.child.wait();
    let _ = up.kill();
    let _ = up.wait();
    let _ = proxy.kill();
    let _ = proxy.wait();
    // until A's lease runs out its reservation holds the space; then B
    // finds the manifest naming it and counts the file
    let until = Instant::now() + Duration::from_secs(40);
    while usage(&b).1 != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        usage(&b),
        (3_000_000, 0, 1),
        "the stored file is counted once, nothing stays reserved"
    );
    let out = work.path().join("back.bin");
    assert_eq!(get(&b, "x.bin", &out), data);
}

#[test]
fn a_second_upload_of_a_taken_name_reserves_its_whole_size() {
    let Some(m) = moto() else { return };
    let e = &m.engine;
    let bucket = e.bucket("taken");
    let a = e.server(&bucket, &["--quota", "100B"]);
    let work = tempfile::tempdir().unwrap();
    let first = file(work.path(), "one", &[b'1'; 60]);
    let second = file(work.path(), "two", &[b'2'; 60]);
    assert!(put(&a, &first, "q.txt").status.success());
    // not an overwrite: it would be stored as "q (1).txt", 120 bytes in all
    let out = put(&a, &second, "q.txt");
    assert!(!out.status.success(), "stored past the quota");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quota exceeded"), "{err}");
    assert_eq!(usage(&a), (60, 0, 1));
}

/// Peak resident memory of a process, in MiB.
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

#[test]
fn ceph_a_large_file_moves_through_two_servers_in_bounded_memory() {
    let Some(e) = ceph() else { return };
    let bucket = e.bucket("large");
    let a = e.server(&bucket, &[]);
    let b = e.server(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    let data = noise(512 << 20, 11);
    let digest = sha256_hex(&data);
    let big = file(work.path(), "big.bin", &data);
    drop(data);
    a.client()
        .args(["put", "--compress", "off", "--as", "big.bin"])
        .arg(&big)
        .assert()
        .success();
    let copy = work.path().join("copy.bin");
    b.client()
        .args(["get", "--compress", "off", "big.bin", "-o"])
        .arg(&copy)
        .assert()
        .success();
    let back = std::fs::read(&copy).unwrap();
    assert_eq!(
        sha256_hex(&back),
        digest,
        "byte-exact through the other server"
    );
    let (up, down) = (peak_mib(a.child.id()), peak_mib(b.child.id()));
    eprintln!(
        "512 MiB: peak RSS of the server it went up through {up} MiB, down through {down} MiB"
    );
    assert!(
        up < 200 && down < 200,
        "memory grew with the file: {up} / {down} MiB"
    );
}

/// Bytes on disk of the files under `root` the server `pid` holds open
/// (named uploads and unlinked scratch copies alike).
fn scratch_bytes(pid: u32, root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    fds.filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.starts_with(&root) && !target.is_dir())
        })
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .filter(|m| m.is_file())
        // one file may be open several times
        .map(|m| ((m.dev(), m.ino()), m.blocks() * 512))
        .collect::<std::collections::HashMap<_, _>>()
        .values()
        .sum()
}

/// Run `c` to its end while sampling the scratch disk `s` uses; the most seen.
fn most_scratch_while(s: &Server, mut c: Command) -> (std::process::ExitStatus, u64) {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut most = 0;
    loop {
        most = most.max(scratch_bytes(s.child.id(), &s.root));
        if let Some(status) = child.try_wait().unwrap() {
            return (status, most);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ceph_a_large_upload_and_download_stream_through_a_small_scratch_disk() {
    let Some(e) = ceph() else { return };
    let bucket = e.bucket("scratch");
    let a = e.server(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    let data = noise(256 << 20, 21);
    let digest = sha256_hex(&data);
    let big = file(work.path(), "big.bin", &data);
    drop(data);
    let mut up = a.process();
    up.args(["put", "--compress", "off", "--as", "big.bin"])
        .arg(&big);
    let (status, most_up) = most_scratch_while(&a, up);
    assert!(status.success());
    // parts go to the bucket as they arrive and leave the scratch disk
    assert!(
        most_up < 64 << 20,
        "a 256 MiB upload held {} MiB of scratch disk",
        most_up >> 20
    );
    let parts = e.keys(&bucket, "blobs/");
    assert_eq!(parts.len(), 32, "8 MiB parts: {parts:?}");
    let copy = work.path().join("copy.bin");
    let mut down = a.process();
    down.args(["get", "--compress", "off", "big.bin", "-o"])
        .arg(&copy);
    let (status, most_down) = most_scratch_while(&a, down);
    assert!(status.success());
    assert_eq!(most_down, 0, "a download is streamed, not copied to disk");
    let back = std::fs::read(&copy).unwrap();
    assert_eq!(sha256_hex(&back), digest, "byte-exact");
    eprintln!(
        "256 MiB: most scratch disk during the put {} KiB, during the get {} KiB",
        most_up >> 10,
        most_down >> 10
    );
    // (Ceph's memstore is bounded: give the room back)
    a.client().args(["rm", "big.bin"]).assert().success();
    assert!(e.keys(&bucket, "blobs/").is_empty());
}

#[test]
fn ceph_an_upload_cut_midway_resumes_from_its_parts_in_the_bucket() {
    let Some(e) = ceph() else { return };
    cut_then_resume(&e, "resume", &[]);
}

#[test]
fn ceph_an_upload_cut_midway_resumes_over_several_streams_from_its_parts_in_the_bucket() {
    // the parts sent were punched out of the scratch file: the resumed
    // prefix's SHA-256 must come from what was sent, not from that file
    let Some(e) = ceph() else { return };
    cut_then_resume(&e, "resume-streams", &["--streams", "3"]);
}

/// Cut an upload through one connection once two parts are in the bucket,
/// then put it again with `retry` options: resumed, byte-exact.
fn cut_then_resume(e: &Engine, name: &str, retry: &[&str]) {
    let bucket = e.bucket(name);
    let a = e.server(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    let size = 48usize << 20;
    let data = noise(size, 31);
    let f = file(work.path(), "big.bin", &data);
    let mut up = a
        .process()
        .args([
            "--limit-rate",
            "8MB",
            "--retries",
            "0",
            "put",
            "--compress",
            "off",
        ])
        .arg(&f)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // cut (SIGKILL) once two parts are in the bucket
    let until = Instant::now() + Duration::from_secs(30);
    while e.keys(&bucket, "blobs/").len() < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    up.kill().unwrap();
    up.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !a.log_text().contains("outcome=\"kept\"") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        a.log_text().contains("outcome=\"kept\""),
        "kept for resuming"
    );
    let held = e.keys(&bucket, "held/");
    assert_eq!(held.len(), 1, "marked as kept: {held:?}");
    let sent = e.keys(&bucket, "blobs/").len();
    assert!(sent >= 2, "{sent} parts");
    // another server's collector, even with no grace at all, leaves them
    let _b = e.server(&bucket, &["--s3-gc-grace", "0s"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        e.keys(&bucket, "blobs/").len() >= sent,
        "collected a kept upload"
    );
    // the same user, name and size again: resumed after what is held
    let out = a
        .client()
        .args(["--json", "put", "--compress", "off"])
        .args(retry)
        .arg(&f)
        .assert()
        .success();
    let text = stdout_text(&out);
    let v: serde_json::Value = text
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no json in {text}"));
    assert_eq!(v["remote"], "big.bin", "{v}");
    let resumed = v["resumed"].as_u64().unwrap_or(0);
    assert!(
        resumed >= 2 * (8 << 20) && resumed < size as u64,
        "resumed after {resumed} bytes: {v}"
    );
    let back = get(&a, "big.bin", &work.path().join("copy.bin"));
    assert_eq!(sha256_hex(&back), sha256_hex(&data), "byte-exact");
    assert_eq!(e.keys(&bucket, "blobs/").len(), 6, "one set of 8 MiB parts");
    assert!(e.keys(&bucket, "held/").is_empty(), "the marker went");
    assert_eq!(usage(&a), (size as u64, 0, 1));
    a.client().args(["rm", "big.bin"]).assert().success();
}

/// The `--json` line of a put.
fn put_line(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["op"] == "put")
        .unwrap_or_else(|| panic!("no put line in {text}"))
}

#[test]
fn content_already_in_the_bucket_is_cloned_by_a_copy_in_the_store() {
    let Some(m) = moto() else { return };
    clone_in_the_store(&m.engine);
}

#[test]
fn ceph_content_already_in_the_bucket_is_cloned_by_a_copy_in_the_store() {
    let Some(e) = ceph() else { return };
    clone_in_the_store(&e);
}

fn clone_in_the_store(e: &Engine) {
    let bucket = e.bucket("clone");
    let a = e.server(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    let data = noise(20 << 20, 41);
    let one = file(work.path(), "a.bin", &data);
    let out = put(&a, &one, "a.bin");
    assert!(out.status.success());
    assert_eq!(put_line(&out)["outcome"], "ok");
    // the same content under another name: no data sent
    let two = file(work.path(), "b.bin", &data);
    let out = put(&a, &two, "b.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = put_line(&out);
    assert_eq!(v["outcome"], "cloned", "{v}");
    assert_eq!(v["wire"], 0, "{v}");
    assert_eq!(v["remote"], "b.bin");
    // a blob of its own: removing the source leaves the copy whole
    assert_eq!(e.keys(&bucket, "blobs/").len(), 6, "two sets of 3 parts");
    a.client().args(["rm", "a.bin"]).assert().success();
    assert_eq!(e.keys(&bucket, "blobs/").len(), 3);
    let back = get(&a, "b.bin", &work.path().join("copy.bin"));
    assert_eq!(sha256_hex(&back), sha256_hex(&data), "byte-exact");
    assert_eq!(usage(&a), (20 << 20, 0, 1));
}

#[test]
fn a_damaged_part_cuts_a_streamed_download_and_is_logged_as_an_integrity_error() {
    let Some(m) = moto() else { return };
    let e = &m.engine;
    let bucket = e.bucket("damaged");
    let a = e.server(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    // larger than a small file (those are checked whole before a byte goes)
    let data = noise(3 << 20, 51);
    assert!(
        put(&a, &file(work.path(), "f.bin", &data), "f.bin")
            .status
            .success()
    );
    let parts = e.keys(&bucket, "blobs/");
    assert_eq!(parts.len(), 1, "{parts:?}");
    // the same size, other bytes: only the SHA-256 can tell
    let mut bad = data.clone();
    bad[1 << 20] ^= 1;
    let bad = file(work.path(), "bad", &bad);
    e.util(&["put", &bucket, &parts[0], bad.to_str().unwrap()]);
    let out = a
        .process()
        .args(["get", "f.bin", "-o"])
        .arg(work.path().join("copy.bin"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a damaged file was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupted"), "{err}");
    assert!(!work.path().join("copy.bin").exists(), "nothing kept");
    let log = a.log_text();
    assert!(
        log.contains("outcome=\"integrity\"") || log.contains("outcome=integrity"),
        "{log}"
    );
}

#[test]
fn several_streams_put_and_get_through_the_bucket_byte_exact() {
    let Some(m) = moto() else { return };
    let e = &m.engine;
    let bucket = e.bucket("streams");
    let a = e.server(&bucket, &[]);
    let work = tempfile::tempdir().unwrap();
    // ranges arrive out of order: the parts are sent at commit
    let data = noise(20 << 20, 61);
    let src = file(work.path(), "src.bin", &data);
    a.client()
        .env("SFT_RANGE_SIZE", "1MiB")
        .args([
            "put",
            "--streams",
            "3",
            "--compress",
            "off",
            "--as",
            "s.bin",
        ])
        .arg(&src)
        .assert()
        .success();
    assert_eq!(e.keys(&bucket, "blobs/").len(), 3, "8 MiB parts");
    let back = work.path().join("back.bin");
    a.client()
        .env("SFT_RANGE_SIZE", "1MiB")
        .args(["get", "--streams", "3", "s.bin", "-o"])
        .arg(&back)
        .assert()
        .success();
    assert_eq!(
        sha256_hex(&std::fs::read(&back).unwrap()),
        sha256_hex(&data)
    );
    // both ways went over joined connections
    let joins = a.log_text().matches("event=\"join\"").count();
    assert!(joins >= 4, "{joins} joined connections");
}
