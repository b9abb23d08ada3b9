//! The object-store backend over an in-memory store (which keeps
//! create-if-absent): naming, the ambiguous create, two servers' ledgers on
//! one bucket, the self-check, and a commit's whole path. No network.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use super::manifest::Manifest;
use super::{Bucket, Location, check, layout, ledger, names};
use crate::server::quota::{Limits, Remote};

fn bucket(os: &Arc<dyn ObjectStore>) -> Bucket {
    leased(os, Duration::from_secs(60))
}

fn leased(os: &Arc<dyn ObjectStore>, lease: Duration) -> Bucket {
    let loc = Location::parse("s3://test-bucket/pre").unwrap();
    Bucket::over(loc, os.clone(), lease).unwrap()
}

fn manifest(blob: &str) -> Manifest {
    Manifest {
        blob: blob.into(),
        size: 1,
        sha256: "ab".repeat(32),
        owner: "u".into(),
        mode: 0o644,
        mtime_ns: 0,
        holds: Vec::new(),
    }
}

#[test]
fn names_are_numbered_and_a_lost_answer_to_our_own_create_is_recognised() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let b = bucket(&os);
    assert_eq!(
        names::publish(&b, "d/a.txt", &manifest("1")).unwrap(),
        "d/a.txt"
    );
    assert_eq!(
        names::publish(&b, "d/a.txt", &manifest("2")).unwrap(),
        "d/a (1).txt"
    );
    assert_eq!(
        names::publish(&b, "d/a.txt", &manifest("3")).unwrap(),
        "d/a (2).txt"
    );
    // a retry of blob 2's create (its answer lost): the name it already has
    assert_eq!(
        names::publish(&b, "d/a.txt", &manifest("2")).unwrap(),
        "d/a (1).txt"
    );
    let m = names::read(&b, "d/a (2).txt").unwrap().unwrap();
    assert_eq!(m.blob, "3");
    assert!(names::read(&b, "d/none.txt").unwrap().is_none());
}

#[test]
fn the_self_check_passes_on_a_store_that_keeps_create_if_absent() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    check::create_if_absent(&bucket(&os)).unwrap();
}

#[test]
fn two_servers_on_one_ledger_never_pass_a_shared_limit() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let l1 = ledger::Ledger::open(Arc::new(bucket(&os))).unwrap();
    let l2 = ledger::Ledger::open(Arc::new(bucket(&os))).unwrap();
    let limits = Limits {
        quota: Some(10),
        ..Default::default()
    };
    let q1 = Arc::new(crate::server::quota::Ledger::shared(limits, l1.clone()));
    let q2 = Arc::new(crate::server::quota::Ledger::shared(limits, l2.clone()));
    let req = |bytes| crate::server::quota::Request {
        user: "u".into(),
        user_quota: None,
        user_max_files: None,
        bytes,
        files: 1,
        disk_bytes: bytes,
    };
    // alternating servers, each reading what the other wrote first
    let r1 = q1.reserve(&req(4), None).unwrap();
    let r2 = q2.reserve(&req(4), None).unwrap();
    let refused = q1.reserve(&req(4), None).unwrap_err();
    assert!(
        refused.message.contains("quota exceeded"),
        "{}",
        refused.message
    );
    r1.commit(3, None);
    drop(r2); // released on a thread of its own
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while q1.usage("").reserved_bytes != 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (total, _) = l2.usage();
    assert_eq!((total.bytes, total.files, total.reserved_bytes), (3, 1, 0));
    // 7 left: a stream takes up to what is left
    let s = q2.reserve_up_to(&req(100), None).unwrap();
    assert_eq!(s.held(), 7);
    drop(s);
    q1.removed("u", 3);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while l2.usage().0 != Default::default() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(l2.usage().0, Default::default());
}

#[test]
fn keys_sit_under_the_prefix() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let b = bucket(&os);
    assert_eq!(b.key(&layout::file("x")).as_ref(), "pre/files/x");
}

#[test]
fn a_starting_server_reads_from_the_newest_checkpoint() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let l1 = ledger::Ledger::open(Arc::new(bucket(&os))).unwrap();
    for _ in 0..300 {
        l1.settle(Vec::new(), "u", 2, None);
    }
    let b = bucket(&os);
    let ckpt = b.key(&layout::checkpoint(ledger::CHECKPOINT));
    assert!(
        b.read_small(ckpt).unwrap().is_some(),
        "checkpoint 256 written"
    );
    // a new server: the checkpoint, then the 44 entries after it (the
    // entries before it are removed here, to show they are not read)
    let keys: Vec<_> = (0..ledger::CHECKPOINT)
        .map(|i| b.key(&layout::ledger(i)))
        .collect();
    b.run(|os| async move {
        for k in keys {
            os.delete(&k)
                .await
                .map_err(|e| super::store_err(&e, "removing", &k))?;
        }
        Ok(())
    })
    .unwrap();
    let l2 = ledger::Ledger::open(Arc::new(b)).unwrap();
    let (total, users) = l2.usage();
    assert_eq!((total.bytes, total.files), (600, 300));
    assert_eq!(users["u"].bytes, 600);
}

/// A reservation `user` holds through `l`, for `bytes`.
fn hold(l: &Arc<ledger::Ledger>, user: &str, bytes: u64) -> crate::server::quota::Reservation {
    let q = Arc::new(crate::server::quota::Ledger::shared(
        Limits {
            quota: Some(100),
            ..Default::default()
        },
        l.clone(),
    ));
    let req = crate::server::quota::Request {
        user: user.into(),
        user_quota: None,
        user_max_files: None,
        bytes,
        files: 1,
        disk_bytes: bytes,
    };
    q.reserve(&req, None).unwrap()
}

#[test]
fn a_dead_servers_reservations_count_until_resolved_and_a_stored_file_stays_counted() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let lease = Duration::from_secs(1);
    let dead = ledger::Ledger::open(Arc::new(leased(&os, lease))).unwrap();
    let live = ledger::Ledger::open(Arc::new(leased(&os, lease))).unwrap();
    // the dead server stored one file (its manifest names its reservation)
    // and died before recording it; another upload of it was cut off
    let stored = hold(&dead, "u", 30);
    let cut = hold(&dead, "u", 50);
    let b = leased(&os, lease);
    let mut m = manifest("blob1");
    m.size = 30;
    m.holds = stored.ids().to_vec();
    names::publish(&b, "a.bin", &m).unwrap();
    std::mem::forget(stored); // killed: neither settled nor released
    std::mem::forget(cut);
    drop(dead);
    let (total, _) = live.usage();
    assert_eq!(
        (total.bytes, total.reserved_bytes),
        (0, 80),
        "never exceeded: a dead server's holds count"
    );
    // while its heartbeat is fresh, nothing is resolved
    assert_eq!(live.resolve_dead().unwrap(), 0);
    // the store's clock moves on by the lease: only heartbeats written
    // later show it (the newest heartbeat is "now")
    std::thread::sleep(Duration::from_millis(2100));
    live.beat().unwrap();
    assert_eq!(live.resolve_dead().unwrap(), 2);
    let (total, users) = live.usage();
    assert_eq!(
        (total.bytes, total.files, total.reserved_bytes),
        (30, 1, 0),
        "the stored file counted, the cut upload released"
    );
    assert_eq!(users["u"].bytes, 30);
    // a server starting later reads the same
    let later = ledger::Ledger::open(Arc::new(leased(&os, lease))).unwrap();
    assert_eq!(later.usage().0.bytes, 30);
    assert_eq!(later.resolve_dead().unwrap(), 0, "resolved once");
}

#[test]
fn compaction_removes_what_every_server_read_past_and_a_new_server_still_agrees() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let l1 = ledger::Ledger::open(Arc::new(bucket(&os))).unwrap();
    for _ in 0..(2 * ledger::CHECKPOINT + 10) {
        l1.settle(Vec::new(), "u", 1, None);
    }
    let b = bucket(&os);
    let count = |prefix: &'static str| {
        let key = b.key(prefix);
        b.run(|os| async move {
            use futures_util::TryStreamExt;
            let v: Vec<_> = os.list(Some(&key)).try_collect().await.unwrap();
            Ok(v.len())
        })
        .unwrap()
    };
    assert_eq!(count("ledger"), 2 * ledger::CHECKPOINT as usize + 10);
    assert_eq!(count("ckpt"), 2);
    // nothing is old enough under the real rule
    assert_eq!(l1.compact(ledger::KEEP).unwrap(), 0);
    // with every checkpoint old enough: all below the newest go
    let removed = l1.compact(Duration::ZERO).unwrap();
    assert_eq!(removed, 2 * ledger::CHECKPOINT as usize + 1);
    assert_eq!(count("ledger"), 10);
    assert_eq!(count("ckpt"), 1);
    let l2 = ledger::Ledger::open(Arc::new(bucket(&os))).unwrap();
    assert_eq!(l2.usage().0.bytes, 2 * ledger::CHECKPOINT + 10);
    // and both go on writing where they are
    l2.settle(Vec::new(), "u", 1, None);
    l1.settle(Vec::new(), "u", 1, None);
    assert_eq!(l1.usage().0.bytes, 2 * ledger::CHECKPOINT + 12);
}
