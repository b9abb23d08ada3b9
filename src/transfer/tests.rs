use super::*;

/// Push `data` through reader and writer threads; (frames, wire bytes).
async fn pipeline(data: &[u8], mode: crate::compress::Mode) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, data).unwrap();
    let pool = Pool::new();
    let size = data.len() as u64;
    let policy = Policy::new(mode, crate::compress::MAX_LEVEL);
    let mut rx = spawn_reader(
        File::open(&src).unwrap(),
        size,
        "src".into(),
        pool.clone(),
        policy,
        Prefix::none(),
    );
    let dst = File::create(dir.path().join("dst")).unwrap();
    let (tx, h) = spawn_writer(dst, "dst".into(), true, pool.clone(), Prefix::none());
    let (mut frames, mut wire) = (0, 0);
    let sent = loop {
        match rx.recv().await.unwrap() {
            Outgoing::Frame(f) => {
                frames += 1;
                wire += f.len();
                let (ty, len) = protocol::parse_header(&f).unwrap().unwrap();
                let body = Bytes::copy_from_slice(&f[HEADER_LEN..HEADER_LEN + len]);
                let protocol::Msg::Data {
                    encoding,
                    raw_len,
                    payload,
                } = protocol::Msg::decode(ty, body).unwrap()
                else {
                    panic!("not data")
                };
                tx.send(Block {
                    encoding,
                    raw_len,
                    payload,
                })
                .await
                .unwrap();
            }
            Outgoing::Done { size, sha256 } => break (size, sha256),
            Outgoing::Failed(e) => panic!("{e}"),
        }
    };
    drop(tx);
    let (n, digest, _) = h.await.unwrap().unwrap();
    assert_eq!(n, size);
    assert_eq!(sent, (n, digest));
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(data)));
    assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), data);
    (frames, wire)
}

fn text(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let mut i = 0u64;
    while v.len() < n {
        v.extend_from_slice(format!("line {} of some source text {}\n", i, i % 97).as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

#[tokio::test]
async fn raw_transfers_are_bit_exact() {
    use crate::compress::Mode;
    let data: Vec<u8> = (0..(CHUNK * 3 + 17))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let (frames, wire) = pipeline(&data, Mode::Off).await;
    assert_eq!(frames, 4);
    assert_eq!(wire, data.len() + 4 * (HEADER_LEN + DATA_PREFIX_LEN));
    assert_eq!(pipeline(&[], Mode::Auto).await, (0, 0));
}

#[tokio::test]
async fn compressed_transfers_are_bit_exact_and_smaller() {
    use crate::compress::Mode;
    let data = text(5 << 20);
    let (_, wire) = pipeline(&data, Mode::Level(3)).await;
    assert!(wire < data.len() / 4, "{wire}");
    let (_, wire) = pipeline(&data, Mode::Auto).await;
    assert!(wire < data.len() / 2, "{wire}");
}

#[tokio::test]
async fn auto_sends_random_data_raw() {
    use crate::compress::Mode;
    let mut x: u64 = 1;
    let data: Vec<u8> = (0..(8 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let (_, wire) = pipeline(&data, Mode::Auto).await;
    assert!(
        wire >= data.len() && wire < data.len() + data.len() / 100,
        "{wire}"
    );
}

#[tokio::test]
async fn loans_are_capped_repaid_and_resized() {
    let b = Budget::new(1 << 20);
    assert_eq!(b.total(), Some(1 << 20));
    // a loan never asks for more than the whole budget
    let all = b.borrow(5 << 20).await;
    assert_eq!(all.bytes(), 1 << 20);
    assert_eq!(b.available(), Some(0));
    assert!(b.try_borrow(1).is_none());
    drop(all);
    assert_eq!(b.available(), Some(1 << 20));
    // resizing repays the excess, and borrows more when it is free
    let mut l = b.borrow(CHUNK).await;
    l.resize(&b, 10_000).await;
    assert_eq!(l.bytes(), 10 * 1024);
    assert_eq!(b.available(), Some((1 << 20) - 10 * 1024));
    l.resize(&b, 512 << 10).await;
    assert_eq!(l.bytes(), 512 << 10);
    // more than is free: everything is repaid and borrowed anew, waiting
    // for the other holder, never holding one loan while waiting
    let other = b.borrow(256 << 10).await;
    let waiter = tokio::spawn(async move {
        l.resize(&b, 900 << 10).await;
        (l, b)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "it must wait for the other loan");
    drop(other);
    let (l, b) = waiter.await.unwrap();
    assert_eq!(l.bytes(), 900 << 10);
    assert_eq!(b.available(), Some(124 << 10));
    drop(l);
    assert_eq!(b.available(), Some(1 << 20));
    // unlimited: nothing is counted, nothing waits
    let u = Budget::unlimited();
    assert_eq!(u.borrow(1 << 30).await.bytes(), 0);
    assert!(u.try_borrow(1 << 30).is_some());
    assert_eq!(u.available(), None);
}

/// Push `data` through budgeted reader and writer threads, as a server
/// does: a download's frames are borrowed from `out` by the reading
/// thread and repaid once "sent"; an upload borrows from `into` before
/// each frame is "read" and repays once it is written. (A task that
/// borrowed while it held frames only it can repay would wait forever:
/// the server never does that, so neither does this.)
async fn pipeline_within(data: &[u8], mode: crate::compress::Mode, (out, into): (Budget, Budget)) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, data).unwrap();
    let pool = Pool::new();
    pool.set_keep(2, 1 << 20);
    let policy = Policy::new(mode, crate::compress::MAX_LEVEL);
    let mut rx = spawn_reader_within(
        File::open(&src).unwrap(),
        data.len() as u64,
        "src".into(),
        pool.clone(),
        policy,
        Prefix::none(),
        out.clone(),
    );
    let dst = File::create(dir.path().join("dst")).unwrap();
    let (tx, h) = spawn_writer_within(dst, "dst".into(), false, pool.clone(), Prefix::none());
    let total = out.total().unwrap();
    let mut frames = Vec::new();
    loop {
        match rx.recv().await.unwrap() {
            (Outgoing::Frame(f), loan) => {
                assert!(loan.bytes() > 0 && loan.bytes() <= total);
                drop(loan); // sent
                frames.push(f);
            }
            (Outgoing::Done { .. }, _) => break,
            (Outgoing::Failed(e), _) => panic!("{e}"),
        }
    }
    // and received, frame by frame
    for f in frames {
        let (ty, len) = protocol::parse_header(&f).unwrap().unwrap();
        let body = Bytes::copy_from_slice(&f[HEADER_LEN..HEADER_LEN + len]);
        let protocol::Msg::Data {
            encoding,
            raw_len,
            payload,
        } = protocol::Msg::decode(ty, body).unwrap()
        else {
            panic!("not data")
        };
        let block = Block {
            encoding,
            raw_len,
            payload,
        };
        let mut loan = into.borrow(CHUNK).await;
        loan.resize(&into, block.cost()).await;
        tx.send((block, loan)).await.unwrap();
    }
    drop(tx);
    let (n, _, _) = h.await.unwrap().unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_slows_transfers_down_and_never_stops_them() {
    use crate::compress::Mode;
    let data: Vec<u8> = (0..(CHUNK * 9 + 5)).map(|i| (i * 7 % 253) as u8).collect();
    let small = (Budget::new(300 << 10), Budget::new(300 << 10));
    pipeline_within(&data, Mode::Off, small.clone()).await;
    assert_eq!(small.0.available(), small.0.total());
    assert_eq!(small.1.available(), small.1.total());
    // compressed blocks (1 MiB) are larger than the whole budget
    let data = text(6 << 20);
    pipeline_within(&data, Mode::Level(3), small.clone()).await;
    assert_eq!(small.0.available(), small.0.total());
    assert_eq!(small.1.available(), small.1.total());
    // several at once, sharing budgets of about a block
    let shared = (
        Budget::new(CHUNK as u64 + 8192),
        Budget::new(CHUNK as u64 + 8192),
    );
    let mut all = Vec::new();
    for i in 0..4u8 {
        let data: Vec<u8> = (0..(CHUNK * 5 + i as usize))
            .map(|j| (j as u8) ^ i)
            .collect();
        let b = shared.clone();
        all.push(tokio::spawn(async move {
            pipeline_within(&data, Mode::Off, b).await
        }));
    }
    for t in all {
        t.await.unwrap();
    }
    assert_eq!(shared.0.available(), shared.0.total());
    assert_eq!(shared.1.available(), shared.1.total());
}

#[tokio::test]
async fn a_file_shorter_than_declared_fails() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"short").unwrap();
    let mut rx = spawn_reader(
        File::open(&src).unwrap(),
        100,
        "src".into(),
        Pool::new(),
        Policy::new(crate::compress::Mode::Off, 0),
        Prefix::none(),
    );
    match rx.recv().await.unwrap() {
        Outgoing::Failed(e) => assert!(e.message.contains("shorter")),
        _ => panic!("expected failure"),
    }
}
