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
    let loc = Location::parse("s3://test-bucket/pre").unwrap();
    Bucket::over(loc, os.clone()).unwrap()
}

fn manifest(blob: &str) -> Manifest {
    Manifest {
        blob: blob.into(),
        size: 1,
        sha256: "ab".repeat(32),
        owner: "u".into(),
        mode: 0o644,
        mtime_ns: 0,
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
    let l1 = ledger::Ledger::open(Arc::new(bucket(&os)), Duration::from_secs(60)).unwrap();
    let l2 = ledger::Ledger::open(Arc::new(bucket(&os)), Duration::from_secs(60)).unwrap();
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
    let l1 = ledger::Ledger::open(Arc::new(bucket(&os)), Duration::from_secs(60)).unwrap();
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
    let l2 = ledger::Ledger::open(Arc::new(b), Duration::from_secs(60)).unwrap();
    let (total, users) = l2.usage();
    assert_eq!((total.bytes, total.files), (600, 300));
    assert_eq!(users["u"].bytes, 600);
}
