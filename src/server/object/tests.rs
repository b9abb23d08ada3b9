//! The object-store backend over an in-memory store (which keeps
//! create-if-absent): naming, the ambiguous create, two servers' ledgers on
//! one bucket, the self-check, blobs as part sets (sent while a file grows,
//! read back in order, collected when orphaned). No network.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use super::manifest::Manifest;
use super::{Bucket, Location, blob, check, gc, layout, ledger, names, ship};
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
        part: blob::PART,
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

/// `n` bytes that differ from part to part.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// The keys below `rel`, sorted.
fn keys(b: &Bucket, rel: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let prefix = b.key(rel);
    let mut all: Vec<String> = b
        .run(|os| async move {
            let l: Vec<_> = os.list(Some(&prefix)).try_collect().await.unwrap();
            Ok(l.into_iter().map(|m| m.location.to_string()).collect())
        })
        .unwrap();
    all.sort();
    all
}

fn read_all(mut f: std::fs::File) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn a_blob_is_a_set_of_parts_read_back_in_order_and_removed_whole() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let b = Arc::new(bucket(&os));
    let part = blob::PART as usize;
    let data = noise(2 * part + 12345);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("up");
    std::fs::write(&path, &data).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let sent = ship::Outgoing::new(f, "up")
        .finish(&b, data.len() as u64)
        .unwrap();
    assert_eq!(sent.sha256, sha(&data));
    assert_eq!((sent.size, sent.part), (data.len() as u64, blob::PART));
    assert_eq!(
        keys(&b, "blobs"),
        (0..3)
            .map(|i| format!("pre/blobs/{}/{i:06}", sent.id))
            .collect::<Vec<_>>()
    );
    // read back: into a scratch file, and streamed through a pipe
    let out = tempfile::tempfile().unwrap();
    let got = blob::fetch(&b, &sent.id, sent.size, sent.part, &out, "up").unwrap();
    assert_eq!(got, sha(&data));
    let piped = blob::stream(&b, &sent.id, sent.size, sent.part, "up").unwrap();
    assert_eq!(read_all(piped), data);
    // an empty file is no part at all
    let empty = ship::Outgoing::new(tempfile::tempfile().unwrap(), "e")
        .finish(&b, 0)
        .unwrap();
    assert_eq!(empty.sha256, sha(b""));
    assert!(keys(&b, &layout::blob(&empty.id)).is_empty());
    blob::remove(&b, &sent.id).unwrap();
    assert!(keys(&b, "blobs").is_empty());
}

#[test]
fn a_part_of_the_wrong_size_is_refused_and_a_damaged_one_cuts_the_stream() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let b = Arc::new(bucket(&os));
    let data = noise(3000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), &data).unwrap();
    let f = std::fs::File::open(dir.path().join("f")).unwrap();
    let sent = ship::Outgoing::new(f, "f").finish(&b, 3000).unwrap();
    let out = tempfile::tempfile().unwrap();
    // a manifest claiming more bytes than the part holds
    let e = blob::fetch(&b, &sent.id, 3001, sent.part, &out, "f").unwrap_err();
    assert!(e.message.contains("wrong size"), "{}", e.message);
    // a short stream: the reader finds fewer bytes than the size
    let piped = blob::stream(&b, &sent.id, 3001, sent.part, "f").unwrap();
    assert!(read_all(piped).is_empty());
}

#[test]
fn a_shipper_sends_parts_as_the_file_grows_and_frees_the_scratch_disk() {
    use std::io::Write;
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let b = Arc::new(bucket(&os));
    let part = blob::PART as usize;
    let data = noise(3 * part + 777);
    // a directory on the disk (tmpfs or ext4: both punch holes)
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("up");
    let mut w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let shipper = ship::Shipper::follow(&b, &w, "up").unwrap();
    let pace = shipper.pace();
    let mut written = 0;
    let mut most = 0;
    for chunk in data.chunks(1 << 20) {
        w.write_all(chunk).unwrap();
        written += chunk.len() as u64;
        pace(written);
        use std::os::unix::fs::MetadataExt;
        most = most.max(w.metadata().unwrap().blocks() * 512);
    }
    // the writer was held while too much was not stored yet
    assert!(
        most <= ship::AHEAD + (2 << 20),
        "{most} bytes on the scratch disk at once"
    );
    // the three whole parts go out without any commit
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while keys(&b, "blobs").len() < 3 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(keys(&b, "blobs").len(), 3);
    let out = shipper.finish().unwrap();
    assert_eq!(out.sent_bytes(), 3 * blob::PART);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), data.len() as u64, "the size is kept");
    assert!(
        meta.blocks() * 512 < 2 * blob::PART,
        "sent parts are punched out: {} bytes still on disk",
        meta.blocks() * 512
    );
    let sent = out.finish(&b, data.len() as u64).unwrap();
    assert_eq!(sent.sha256, sha(&data));
    let piped = blob::stream(&b, &sent.id, sent.size, sent.part, "up").unwrap();
    assert_eq!(read_all(piped), data);
}

#[test]
fn a_dropped_shipper_removes_the_parts_it_sent() {
    use std::io::Write;
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let b = Arc::new(bucket(&os));
    let mut w = tempfile::tempfile().unwrap();
    let shipper = ship::Shipper::follow(&b, &w, "up").unwrap();
    w.write_all(&noise(blob::PART as usize + 1)).unwrap();
    shipper.pace()(blob::PART + 1);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while keys(&b, "blobs").is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(keys(&b, "blobs").len(), 1);
    drop(shipper);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !keys(&b, "blobs").is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(keys(&b, "blobs").is_empty());
}

/// Put an empty object at `rel`.
fn touch(b: &Bucket, rel: &str) {
    let key = b.key(rel);
    b.run(|os| async move {
        os.put(&key, object_store::PutPayload::from_static(b""))
            .await
            .map(|_| ())
            .map_err(|e| super::store_err(&e, "storing", &key))
    })
    .unwrap();
}

#[test]
fn the_collector_removes_orphan_part_sets_and_keeps_named_and_held_ones() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let b = Arc::new(bucket(&os));
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for name in ["kept", "orphan", "held", "ghost"] {
        let data = noise(blob::PART as usize + 10);
        std::fs::write(dir.path().join(name), &data).unwrap();
        let f = std::fs::File::open(dir.path().join(name)).unwrap();
        ids.push(
            ship::Outgoing::new(f, name)
                .finish(&b, data.len() as u64)
                .unwrap(),
        );
    }
    let m = super::manifest::Manifest {
        blob: ids[0].id.clone(),
        size: ids[0].size,
        part: ids[0].part,
        sha256: hex::encode(ids[0].sha256),
        owner: String::new(),
        mode: 0o644,
        mtime_ns: 0,
        holds: Vec::new(),
    };
    names::publish(&b, "kept.bin", &m).unwrap();
    // kept for resuming by a live server (its heartbeat is fresh), and by
    // one whose heartbeat is gone
    touch(&b, &layout::server(&b.server));
    touch(&b, &layout::held(&b.server, &ids[2].id));
    touch(&b, &layout::held("ghost", &ids[3].id));
    let lease = Duration::from_secs(60);
    // within the grace period nothing goes
    assert_eq!(
        gc::collect(&b, Duration::from_secs(3600), lease).unwrap(),
        0
    );
    assert_eq!(keys(&b, "blobs").len(), 8);
    assert_eq!(gc::collect(&b, Duration::ZERO, lease).unwrap(), 2);
    let left = keys(&b, "blobs");
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(
        left.iter()
            .all(|k| k.contains(&ids[0].id) || k.contains(&ids[2].id)),
        "{left:?}"
    );
    assert_eq!(keys(&b, "held").len(), 1, "the dead server's marker went");
}

#[test]
fn a_set_is_an_orphan_only_when_its_newest_part_is_older_than_the_grace() {
    let meta = |key: &str, secs: i64| (object_store::path::Path::from(key), secs);
    let listed = vec![
        meta("p/blobs/old/000000", 0),
        meta("p/blobs/old/000001", 10),
        meta("p/blobs/busy/000000", 0),
        meta("p/blobs/busy/000001", 95),
        meta("p/blobs/named/000000", 0),
        meta("p/blobs/single", 0),
    ];
    let keep: std::collections::HashSet<String> = ["named".to_string()].into();
    let out = gc::orphans(listed, &keep, "p", 100, 60);
    let ids: Vec<_> = out.iter().map(|(id, k)| (id.as_str(), k.len())).collect();
    assert_eq!(ids, vec![("old", 2), ("single", 1)]);
}

#[test]
fn a_kept_upload_resumes_with_the_hash_of_what_it_holds_and_goes_on_sending() {
    use std::io::Write;
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let b = Arc::new(bucket(&os));
    let part = blob::PART as usize;
    let data = noise(3 * part + 4321);
    let cut = 2 * part + 1234; // not on a part boundary
    let mut w = tempfile::tempfile().unwrap();
    let shipper = ship::Shipper::follow(&b, &w, "up").unwrap();
    w.write_all(&data[..cut]).unwrap();
    shipper.pace()(cut as u64);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while keys(&b, "blobs").len() < 2 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    // resumed: the prefix is the hash of the first `cut` bytes, the parts
    // sent are not read back (their range of the scratch file is a hole)
    let mut out = shipper.finish().unwrap();
    let prefix = out.prefix(cut as u64).unwrap();
    assert_eq!(prefix.len, cut as u64);
    assert_eq!(prefix.digest(), sha(&data[..cut]));
    let shipper = ship::Shipper::resume(&b, out, cut as u64).unwrap();
    // the writer goes on at the file's position
    w.write_all(&data[cut..]).unwrap();
    shipper.pace()(data.len() as u64);
    let sent = shipper
        .finish()
        .unwrap()
        .finish(&b, data.len() as u64)
        .unwrap();
    assert_eq!(sent.sha256, sha(&data));
    assert_eq!(keys(&b, &layout::blob(&sent.id)).len(), 4);
    let piped = blob::stream(&b, &sent.id, sent.size, sent.part, "up").unwrap();
    assert_eq!(read_all(piped), data);
}
