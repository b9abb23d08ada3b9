//! zstd on the wire: files arrive exactly as sent, compression pays on text,
//! costs nothing on random data, and crafted blocks cannot become bombs.

mod common;

use common::{Server, noise, sha256_hex};
use sft::protocol::{self, Msg};

fn text(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let mut i = 0u64;
    while v.len() < n {
        v.extend_from_slice(
            format!(
                "fn item_{i}() -> u64 {{ {} }} // some source text\n",
                i * 7 % 1000
            )
            .as_bytes(),
        );
        i += 1;
    }
    v.truncate(n);
    v
}

/// (file bytes, wire bytes) from a `--stats` line.
fn stats(stderr: &[u8]) -> (u64, u64) {
    let s = String::from_utf8_lossy(stderr);
    let line = s
        .lines()
        .find(|l| l.starts_with("stats: "))
        .unwrap_or_else(|| panic!("no stats in {s:?}"));
    let num = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap() + key.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (num("file "), num("wire "))
}

#[test]
fn every_mode_moves_files_bit_for_bit() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    for (kind, data) in [("text", text(3 << 20)), ("random", noise(3 << 20, 1))] {
        for mode in ["off", "auto", "1", "3", "19"] {
            let src = work.path().join(format!("{kind}-{mode}"));
            std::fs::write(&src, &data).unwrap();
            s.client()
                .args(["--compress", mode])
                .arg("put")
                .arg(&src)
                .assert()
                .success();
            assert_eq!(
                sha256_hex(&std::fs::read(s.root.join(src.file_name().unwrap())).unwrap()),
                sha256_hex(&data)
            );
            let dst = work.path().join(format!("back-{kind}-{mode}"));
            let name = src.file_name().unwrap().to_str().unwrap().to_string();
            s.client()
                .args(["--compress", mode, "get", &name, "-o"])
                .arg(&dst)
                .assert()
                .success();
            assert_eq!(std::fs::read(&dst).unwrap(), data, "{kind} {mode}");
        }
    }
}

#[test]
fn text_shrinks_on_the_wire_both_ways_and_random_data_does_not_grow() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("t.txt");
    std::fs::write(&src, text(8 << 20)).unwrap();
    let a = s
        .client()
        .args(["--stats", "--compress", "3", "put"])
        .arg(&src)
        .assert()
        .success();
    let (file, wire) = stats(&a.get_output().stderr);
    assert_eq!(file, 8 << 20);
    assert!(wire * 4 < file, "upload: {wire} of {file}");
    let dst = work.path().join("t.back");
    let a = s
        .client()
        .args(["--stats", "--compress", "3", "get", "t.txt", "-o"])
        .arg(&dst)
        .assert()
        .success();
    let (file, wire) = stats(&a.get_output().stderr);
    assert!(wire * 4 < file, "download: {wire} of {file}");
    let a = s
        .client()
        .args(["--stats", "--compress", "off", "get", "t.txt", "-o"])
        .arg(work.path().join("t.raw"))
        .assert()
        .success();
    let (file, wire) = stats(&a.get_output().stderr);
    assert!(wire >= file, "off means raw: {wire} of {file}");
    let rnd = work.path().join("r.bin");
    std::fs::write(&rnd, noise(8 << 20, 2)).unwrap();
    let a = s
        .client()
        .args(["--stats", "put"])
        .arg(&rnd)
        .assert()
        .success();
    let (file, wire) = stats(&a.get_output().stderr);
    assert!(
        wire >= file && wire < file + file / 100,
        "random, auto: {wire} of {file}"
    );
}

#[test]
fn a_server_with_compression_off_negotiates_it_away() {
    let s = Server::start_args(&["--compression", "off"]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("t.txt");
    std::fs::write(&src, text(2 << 20)).unwrap();
    let a = s
        .client()
        .args(["--stats", "--compress", "3", "put"])
        .arg(&src)
        .assert()
        .success();
    let (file, wire) = stats(&a.get_output().stderr);
    assert!(wire >= file);
}

#[test]
fn bad_compress_values_are_usage_errors() {
    let s = Server::start();
    let a = s
        .client()
        .args(["--compress", "fast", "ls"])
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("auto, off"));
}

/// A session that negotiated zstd, with one upload started.
async fn upload_session(s: &Server, size: u64, name: &str) -> common::Raw {
    let mut r = common::Raw::tls(&s.addr, &s.trust()).await;
    r.w.send(&Msg::Hello {
        min_version: 1,
        max_version: 1,
        features: protocol::FEATURE_ZSTD,
    })
    .await
    .unwrap();
    r.w.send_now(&Msg::Auth {
        secret: common::TOKEN.as_bytes().to_vec(),
    })
    .await
    .unwrap();
    match r.next().await {
        Msg::Welcome { features, .. } => {
            assert_eq!(features & protocol::FEATURE_ZSTD, protocol::FEATURE_ZSTD)
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(r.next().await, Msg::AuthOk { .. }));
    r.w.send_now(&Msg::Put {
        size,
        flags: 0,
        name: name.into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    r
}

async fn send_zstd(r: &mut common::Raw, raw_len: u32, payload: &[u8]) {
    let mut f = protocol::data_header(protocol::Encoding::Zstd, raw_len, payload.len()).to_vec();
    f.extend_from_slice(payload);
    r.w.write_raw(&f).await.unwrap();
    r.w.flush().await.unwrap();
}

/// After a refused block: code 9, nothing stored, and the server carries on.
async fn refused_cleanly(s: &Server, mut r: common::Raw, end: bool) {
    if end {
        r.w.send_now(&Msg::End { sha256: [0; 32] }).await.unwrap();
    }
    match r.next_or_closed().await {
        Some(Msg::Error { code, message }) => assert_eq!(code, 9, "{message}"),
        other => panic!("expected ERROR 9, got {other:?}"),
    }
    assert!(s.files().is_empty(), "{:?}", s.files());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("ok.txt");
    std::fs::write(&src, text(100_000)).unwrap();
    s.client().arg("put").arg(&src).assert().success();
    s.client().args(["rm", "ok.txt"]).assert().success();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_inflating_to_100x_its_declared_size_is_refused() {
    let s = Server::start();
    let bomb = zstd::bulk::compress(&vec![0u8; 100_000], 3).unwrap();
    let mut r = upload_session(&s, 1000, "bomb.bin").await;
    send_zstd(&mut r, 1000, &bomb).await;
    refused_cleanly(&s, r, true).await;
    // and without a content size in the frame header
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
        .unwrap();
    let bomb = c.compress(&vec![7u8; 100_000]).unwrap();
    let mut r = upload_session(&s, 1000, "bomb2.bin").await;
    send_zstd(&mut r, 1000, &bomb).await;
    refused_cleanly(&s, r, true).await;
    assert!(s.log_text().contains("exceeds the declared size"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_claiming_a_huge_raw_length_is_refused() {
    let s = Server::start();
    let payload = zstd::bulk::compress(b"small", 3).unwrap();
    let mut r = upload_session(&s, 8 << 20, "huge.bin").await;
    send_zstd(&mut r, u32::MAX, &payload).await;
    refused_cleanly(&s, r, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_and_garbage_blocks_are_refused() {
    let s = Server::start();
    let data = text(200_000);
    let full = zstd::bulk::compress(&data, 3).unwrap();
    let mut r = upload_session(&s, data.len() as u64, "trunc.bin").await;
    send_zstd(&mut r, data.len() as u32, &full[..full.len() / 2]).await;
    refused_cleanly(&s, r, true).await;
    let mut r = upload_session(&s, 1000, "garbage.bin").await;
    send_zstd(&mut r, 1000, b"this is not zstd at all, just bytes").await;
    refused_cleanly(&s, r, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_blocks_without_negotiation_are_refused() {
    let s = Server::start();
    let mut r = s.raw().await; // HELLO without the zstd feature
    r.w.send_now(&Msg::Put {
        size: 1000,
        flags: 0,
        name: "x".into(),
    })
    .await
    .unwrap();
    assert!(matches!(r.next().await, Msg::PutReady { .. }));
    send_zstd(
        &mut r,
        1000,
        &zstd::bulk::compress(&[1u8; 1000], 3).unwrap(),
    )
    .await;
    refused_cleanly(&s, r, false).await;
}
