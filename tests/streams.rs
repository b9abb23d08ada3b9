//! Several connections for one transfer (`--streams`, PROTOCOL.md §4.10),
//! through the real binary: both ways, byte-exact with many small ranges
//! arriving out of order, a stream killed in the middle, join tickets
//! that are forged or used twice, and transfers cut off whole (every
//! connection, or the client killed) that resume over several streams
//! again, sending only what is missing (§4.9).

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sft::protocol::{FEATURE_STREAMS, Msg};

/// Upload then download `data` with `streams` connections and ranges of
/// `range` bytes; both ends must hold exactly `data`.
fn round_trip(s: &Server, data: &[u8], streams: &str, range: &str, name: &str) {
    round_trip_z(s, data, streams, range, name, "auto")
}

fn round_trip_z(s: &Server, data: &[u8], streams: &str, range: &str, name: &str, z: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    std::fs::write(&src, data).unwrap();
    s.client()
        .env("SFT_RANGE_SIZE", range)
        .env("SFT_COMPRESS", z)
        .args(["put", "--streams", streams, "--as", name])
        .arg(&src)
        .assert()
        .success();
    let stored = std::fs::read(s.root.join(name)).unwrap();
    assert_eq!(sha256_hex(&stored), sha256_hex(data), "upload byte-exact");
    let back = dir.path().join("back.bin");
    s.client()
        .env("SFT_RANGE_SIZE", range)
        .env("SFT_COMPRESS", z)
        .args(["get", "--streams", streams, name, "-o"])
        .arg(&back)
        .assert()
        .success();
    let got = std::fs::read(&back).unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(data), "download byte-exact");
    // nothing left behind: no .part beside the download
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("part"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn several_streams_both_ways_byte_exact_with_small_reordered_ranges() {
    let s = Server::start();
    // 8 streams, 64 KiB ranges: ranges finish out of order all the time
    let data = noise(5 * 1024 * 1024 + 12345, 7);
    round_trip(&s, &data, "8", "64KiB", "eight.bin");
    // compressible data goes compressed through the same ranges
    let text: Vec<u8> = b"several streams, one file\n"
        .iter()
        .copied()
        .cycle()
        .take(3 * 1024 * 1024 + 5)
        .collect();
    round_trip_z(&s, &text, "3", "100KiB", "text.txt", "3");
    // and it was compressed on the wire
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("t.txt");
    std::fs::write(&src, &text).unwrap();
    let a = s
        .client()
        .env("SFT_RANGE_SIZE", "100KiB")
        .env("SFT_COMPRESS", "3")
        .args(["--stats", "put", "--streams", "3", "--as", "t2.txt"])
        .arg(&src)
        .assert()
        .success();
    let err = stderr_text(&a);
    let wire: u64 = err
        .split("wire ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(wire < text.len() as u64 / 10, "{err}");
    let log = s.log_text();
    assert!(log.contains("joined a session with a ticket"), "{log}");
}

#[test]
fn a_forged_or_reused_ticket_is_refused_and_the_server_goes_on() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // forged: 32 random bytes
        let mut r = Raw::tls(&s.addr, &s.trust()).await;
        r.w.send(&Msg::Hello {
            min_version: 1,
            max_version: 1,
            features: FEATURE_STREAMS,
        })
        .await
        .unwrap();
        r.w.send_now(&Msg::Join { ticket: [0x5a; 32] })
            .await
            .unwrap();
        assert!(matches!(r.next().await, Msg::Welcome { .. }));
        match r.next_or_closed().await {
            Some(Msg::Error { code, message }) => {
                assert_eq!(code, 5, "{message}");
                assert!(message.contains("ticket"), "{message}");
            }
            other => panic!("expected ERROR 5, got {other:?}"),
        }
        // a real ticket works once
        let mut main = Raw::tls(&s.addr, &s.trust()).await;
        main.w
            .send(&Msg::Hello {
                min_version: 1,
                max_version: 1,
                features: FEATURE_STREAMS,
            })
            .await
            .unwrap();
        main.w
            .send_now(&Msg::Auth {
                secret: TOKEN.as_bytes().to_vec(),
            })
            .await
            .unwrap();
        assert!(matches!(main.next().await, Msg::Welcome { .. }));
        assert!(matches!(main.next().await, Msg::AuthOk { .. }));
        main.w.send_now(&Msg::TicketReq).await.unwrap();
        let Msg::Ticket { ticket } = main.next().await else {
            panic!("no ticket")
        };
        for attempt in 0..2 {
            let mut j = Raw::tls(&s.addr, &s.trust()).await;
            j.w.send(&Msg::Hello {
                min_version: 1,
                max_version: 1,
                features: FEATURE_STREAMS,
            })
            .await
            .unwrap();
            j.w.send_now(&Msg::Join { ticket }).await.unwrap();
            assert!(matches!(j.next().await, Msg::Welcome { .. }));
            let reply = j.next_or_closed().await;
            match attempt {
                0 => assert!(matches!(reply, Some(Msg::AuthOk { .. })), "{reply:?}"),
                _ => assert!(
                    matches!(reply, Some(Msg::Error { code: 5, .. })),
                    "a used ticket: {reply:?}"
                ),
            }
        }
        // a joined download stream may not do anything else
        main.w.send_now(&Msg::Bye).await.unwrap();
    });
    // the server still serves, and said so once in its log
    s.client().args(["ls"]).assert().success();
    let log = s.log_text();
    assert!(log.contains("refused a JOIN"), "{log}");
}

/// A TCP proxy in front of the server that cuts the `victim`th connection
/// (counting from 1) after it carried `after` bytes from the client.
fn cutting_proxy(to: String, victim: usize, after: usize) -> (String, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let Ok(up) = std::net::TcpStream::connect(&to) else {
                continue;
            };
            let (c2, up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            let limit = if n == victim { after } else { usize::MAX };
            std::thread::spawn(move || pump(c, up, limit));
            std::thread::spawn(move || pump(up2, c2, usize::MAX));
        }
    });
    (addr, seen)
}

fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, limit: usize) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if moved + n > limit {
            // cut: both directions, at once
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        moved += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn a_stream_killed_mid_transfer_has_its_ranges_sent_again() {
    let s = Server::start();
    let data = noise(6 * 1024 * 1024 + 777, 11);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    // connection 1 is the session, 2.. the joined streams: cut the second
    // after 1.5 MB of its upload
    let (addr, seen) = cutting_proxy(s.addr.clone(), 2, 1_500_000);
    s.client()
        .env("SFT_SERVER", &addr)
        .env("SFT_RANGE_SIZE", "256KiB")
        .args(["put", "--streams", "3", "--as", "cut.bin"])
        .arg(&src)
        .assert()
        .success();
    assert!(seen.load(Ordering::SeqCst) >= 4, "a stream was replaced");
    let stored = std::fs::read(s.root.join("cut.bin")).unwrap();
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    // and a download whose second connection is cut after its requests
    let (addr, seen) = cutting_proxy(s.addr.clone(), 2, 1200);
    let back = dir.path().join("back.bin");
    s.client()
        .env("SFT_SERVER", &addr)
        .env("SFT_RANGE_SIZE", "256KiB")
        .args(["get", "--streams", "3", "cut.bin", "-o"])
        .arg(&back)
        .assert()
        .success();
    assert_eq!(
        sha256_hex(&std::fs::read(&back).unwrap()),
        sha256_hex(&data)
    );
    assert!(seen.load(Ordering::SeqCst) >= 4, "a stream was replaced");
}

#[test]
fn one_stream_changes_nothing_and_small_files_are_never_split() {
    let s = Server::start();
    let data = noise(3 * 1024 * 1024, 3);
    round_trip(&s, &data, "1", "64KiB", "one.bin");
    round_trip(&s, &data, "auto", "64KiB", "auto.bin");
    assert!(!s.log_text().contains("joined a session"));
}

/// A TCP proxy in front of the server that cuts every connection it
/// carries, at once, when the bytes going `up` (client to server; else
/// down) through all of them pass `after` — once: connections made after
/// that are carried to the end. Counts the connections made after the cut.
fn cut_all_proxy(to: String, up: bool, after: usize) -> (String, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let later = Arc::new(AtomicUsize::new(0));
    let count = later.clone();
    let fired = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let live: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for c in l.incoming().take(200) {
            let Ok(c) = c else { continue };
            if fired.load(Ordering::SeqCst) {
                count.fetch_add(1, Ordering::SeqCst);
            }
            let Ok(upstream) = std::net::TcpStream::connect(&to) else {
                continue;
            };
            live.lock().unwrap().push(c.try_clone().unwrap());
            live.lock().unwrap().push(upstream.try_clone().unwrap());
            let (c2, up2) = (c.try_clone().unwrap(), upstream.try_clone().unwrap());
            let cut = Cut {
                fired: fired.clone(),
                total: total.clone(),
                live: live.clone(),
                after,
            };
            let (a, b) = if up {
                (Some(cut), None)
            } else {
                (None, Some(cut))
            };
            std::thread::spawn(move || pump_until(c, upstream, a));
            std::thread::spawn(move || pump_until(up2, c2, b));
        }
    });
    (addr, later)
}

/// When a `cut_all_proxy` cuts.
struct Cut {
    fired: Arc<AtomicBool>,
    total: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<std::net::TcpStream>>>,
    after: usize,
}

fn pump_until(mut from: std::net::TcpStream, mut to: std::net::TcpStream, cut: Option<Cut>) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(c) = &cut
            && !c.fired.load(Ordering::SeqCst)
            && c.total.fetch_add(n, Ordering::SeqCst) + n > c.after
            && !c.fired.swap(true, Ordering::SeqCst)
        {
            for s in c.live.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn json_line(a: &assert_cmd::assert::Assert) -> serde_json::Value {
    let out = stdout_text(a);
    let line = out.lines().next().unwrap_or_else(|| panic!("no output"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// 24 MiB: cut off after 10 MB, resumed.
const BIG: usize = 24 << 20;

#[test]
fn an_upload_cut_off_whole_resumes_over_several_streams_sending_only_the_rest() {
    let s = Server::start();
    let data = noise(BIG, 21);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &data).unwrap();
    // every connection (the session and its 4 streams) cut after 10 MB up
    let (addr, later) = cut_all_proxy(s.addr.clone(), true, 10_000_000);
    let a = s
        .client()
        .env("SFT_SERVER", &addr)
        .env("SFT_RANGE_SIZE", "256KiB")
        .args(["--json", "--retries", "2", "put", "--streams", "4"])
        .arg(&src)
        .assert()
        .success();
    let v = json_line(&a);
    let log = s.log_text();
    assert!(
        log.contains("outcome=\"kept\""),
        "the cut upload was kept: {log}"
    );
    assert!(log.contains("resuming after"), "{log}");
    let (resumed, wire) = (u(&v, "resumed"), u(&v, "wire"));
    assert!(resumed > 0 && resumed < BIG as u64, "{v}");
    // only what was missing crossed the wire again (plus frame headers)
    assert!(wire < BIG as u64 - resumed + (64 << 10), "{v}");
    // and it went over several streams again: the session and its joins
    assert!(later.load(Ordering::SeqCst) >= 3, "{v}");
    assert_eq!(
        sha256_hex(&std::fs::read(s.root.join("big.bin")).unwrap()),
        sha256_hex(&data)
    );
    assert_eq!(s.files(), ["big.bin"], "no numbered copy, no leftover");
}

#[test]
fn a_download_cut_off_whole_resumes_into_its_part_file_over_several_streams() {
    let s = Server::start();
    let data = noise(BIG, 22);
    std::fs::write(s.root.join("big.bin"), &data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    let (addr, later) = cut_all_proxy(s.addr.clone(), false, 10_000_000);
    let a = s
        .client()
        .env("SFT_SERVER", &addr)
        .env("SFT_RANGE_SIZE", "256KiB")
        .args([
            "--json",
            "--retries",
            "2",
            "get",
            "--streams",
            "4",
            "big.bin",
            "-o",
        ])
        .arg(&dest)
        .assert()
        .success();
    let v = json_line(&a);
    let (resumed, wire) = (u(&v, "resumed"), u(&v, "wire"));
    assert!(resumed > 0 && resumed < BIG as u64, "{v}");
    assert!(wire < BIG as u64 - resumed + (64 << 10), "{v}");
    assert!(later.load(Ordering::SeqCst) >= 3, "{v}");
    assert_eq!(
        sha256_hex(&std::fs::read(&dest).unwrap()),
        sha256_hex(&data)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "big.bin")
        .collect();
    assert!(
        left.is_empty(),
        "the part and its record are gone: {left:?}"
    );
}

/// The prefix a ranged download's record says is written, if any.
fn held_prefix(part: &std::path::Path) -> u64 {
    let mut p = part.as_os_str().to_owned();
    p.push(".held");
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| t.split(' ').nth(4).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn a_killed_download_over_several_streams_keeps_its_prefix_for_the_next_run() {
    let s = Server::start();
    let data = noise(BIG, 23);
    std::fs::write(s.root.join("big.bin"), &data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    let part = dir.path().join(".big.bin.sft-part");
    let mut child = s
        .process()
        .env("SFT_RANGE_SIZE", "256KiB")
        .args(["--limit-rate", "4MB", "--retries", "0"])
        .args(["get", "--streams", "4", "big.bin", "-o"])
        .arg(&dest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while held_prefix(&part) < 4 << 20 {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let seen = held_prefix(&part);
    assert!(!dest.exists(), "nothing unverified is visible");

    let a = s
        .client()
        .env("SFT_RANGE_SIZE", "256KiB")
        .args(["--json", "get", "--streams", "4", "big.bin", "-o"])
        .arg(&dest)
        .assert()
        .success();
    let v = json_line(&a);
    assert_eq!(u(&v, "resumed"), seen, "{v}");
    assert!(u(&v, "wire") < BIG as u64 - seen + (64 << 10), "{v}");
    assert_eq!(
        sha256_hex(&std::fs::read(&dest).unwrap()),
        sha256_hex(&data)
    );
    assert!(!part.exists());

    // a record of another file (here: the remote file changed) is not
    // resumed: the download starts over and is still exact
    let other = noise(BIG, 24);
    std::fs::write(part.as_path(), &data[..8 << 20]).unwrap();
    let mut rec = part.as_os_str().to_owned();
    rec.push(".held");
    let fake = format!(
        "sft-held 1 {BIG} {} {} {}\n",
        sha256_hex(&data),
        8 << 20,
        sha256_hex(&data[..8 << 20])
    );
    std::fs::write(&rec, fake).unwrap();
    std::fs::write(s.root.join("big.bin"), &other).unwrap();
    let a = s
        .client()
        .env("SFT_RANGE_SIZE", "256KiB")
        .args(["--json", "get", "--streams", "4", "big.bin", "-o"])
        .arg(&dest)
        .assert()
        .success();
    let v = json_line(&a);
    assert_eq!(u(&v, "resumed"), 0, "{v}");
    assert_eq!(
        sha256_hex(&std::fs::read(&dest).unwrap()),
        sha256_hex(&other)
    );
}

#[test]
fn what_a_ranged_transfer_left_is_resumed_by_one_connection_too() {
    let s = Server::start();
    let data = noise(BIG, 25);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("x.bin");
    std::fs::write(&src, &data).unwrap();
    // an upload over 4 streams cut off, not retried
    let (addr, _) = cut_all_proxy(s.addr.clone(), true, 10_000_000);
    s.client()
        .env("SFT_SERVER", &addr)
        .env("SFT_RANGE_SIZE", "256KiB")
        .args(["--retries", "0", "put", "--streams", "4"])
        .arg(&src)
        .assert()
        .failure();
    let start = Instant::now();
    while !s.log_text().contains("outcome=\"kept\"") {
        assert!(start.elapsed() < Duration::from_secs(30), "kept");
        std::thread::sleep(Duration::from_millis(20));
    }
    // then sent again over one connection: only the rest goes
    let a = s
        .client()
        .args(["--json", "put", "--streams", "1"])
        .arg(&src)
        .assert()
        .success();
    let v = json_line(&a);
    let resumed = u(&v, "resumed");
    assert!(resumed > 0, "{v}");
    assert!(u(&v, "wire") < BIG as u64 - resumed + (64 << 10), "{v}");
    assert_eq!(std::fs::read(s.root.join("x.bin")).unwrap(), data);

    // a download over 4 streams cut off, then fetched over one connection
    let dest = dir.path().join("back.bin");
    let (addr, _) = cut_all_proxy(s.addr.clone(), false, 10_000_000);
    s.client()
        .env("SFT_SERVER", &addr)
        .env("SFT_RANGE_SIZE", "256KiB")
        .args(["--retries", "0", "get", "--streams", "4", "x.bin", "-o"])
        .arg(&dest)
        .assert()
        .failure();
    let a = s
        .client()
        .args(["--json", "get", "--streams", "1", "x.bin", "-o"])
        .arg(&dest)
        .assert()
        .success();
    let v = json_line(&a);
    let resumed = u(&v, "resumed");
    assert!(resumed > 0, "{v}");
    assert!(u(&v, "wire") < BIG as u64 - resumed + (64 << 10), "{v}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
