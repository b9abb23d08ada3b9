//! The ledger's unit tests: reservations, limits, reports.
use super::*;

fn req(user: &str, bytes: u64) -> Request {
    Request {
        user: user.into(),
        user_quota: None,
        user_max_files: None,
        bytes,
        files: 1,
        disk_bytes: bytes,
    }
}

#[test]
fn reservations_count_until_released_or_committed() {
    let l = Arc::new(Ledger::new(
        Limits {
            quota: Some(100),
            ..Default::default()
        },
        [("".to_string(), 30, 1)],
    ));
    let a = l.reserve(&req("ann", 50), None).unwrap();
    let e = l.reserve(&req("bob", 21), None).unwrap_err();
    assert_eq!(e.kind, Kind::Space);
    assert_eq!(
        e.message,
        "quota exceeded: this upload needs 21 B, 20 B of 100 B left (server)"
    );
    let b = l.reserve(&req("bob", 20), None).unwrap();
    drop(b); // failed upload: released
    assert_eq!(l.usage("").reserved_bytes, 50);
    a.commit(50, None);
    assert_eq!(
        l.usage(""),
        Usage {
            bytes: 80,
            files: 2,
            reserved_bytes: 0,
            reserved_files: 0
        }
    );
    assert_eq!(l.usage("ann").bytes, 50);
    l.removed("ann", 50);
    assert_eq!(l.usage("").bytes, 30);
    assert_eq!(l.usage("ann").files, 0);
}

#[test]
fn user_limits_apply_before_the_server_fills() {
    let l = Arc::new(Ledger::new(Limits::default(), []));
    let mut r = req("ci", 2 << 20);
    r.user_quota = Some(3 << 20);
    let _held = l.reserve(&r, None).unwrap();
    let e = l.reserve(&r, None).unwrap_err();
    assert!(
        e.message.ends_with("1.0 MiB of 3.0 MiB left (user ci)"),
        "{e}"
    );
    let mut f = req("ci", 0);
    f.user_max_files = Some(1);
    assert!(
        l.reserve(&f, None)
            .unwrap_err()
            .message
            .contains("file limit")
    );
}

#[test]
fn free_space_keeps_the_reserve_and_counts_uploads_in_flight() {
    let l = Arc::new(Ledger::new(
        Limits {
            min_free: 100,
            ..Default::default()
        },
        [],
    ));
    let _a = l.reserve(&req("a", 400), Some(1000)).unwrap();
    // 1000 free, 400 promised, 100 must stay: 500 fit, 501 do not
    assert!(l.reserve(&req("b", 501), Some(1000)).is_err());
    let e = l.reserve(&req("b", 2000), Some(1000)).unwrap_err();
    assert!(e.message.contains("must stay free"), "{e}");
    l.reserve(&req("b", 500), Some(1000)).unwrap();
}

#[test]
fn uploads_of_unknown_size_grow_in_steps_until_they_do_not_fit() {
    let l = Arc::new(Ledger::new(
        Limits {
            quota: Some(100),
            ..Default::default()
        },
        [],
    ));
    let mut r = l.reserve(&req("s", 40), None).unwrap();
    r.grow(40, None).unwrap();
    assert_eq!(r.held(), 80);
    let e = r.grow(40, None).unwrap_err();
    assert!(e.message.contains("20 B of 100 B left"), "{e}");
    r.commit(70, None);
    assert_eq!(l.usage("").bytes, 70);
    assert_eq!(l.usage("").reserved_bytes, 0);
}

#[test]
fn a_stream_starts_with_what_is_left_and_grows_until_its_data_does_not_fit() {
    let l = Arc::new(Ledger::new(
        Limits {
            quota: Some(1000),
            min_free: 100,
            ..Default::default()
        },
        [("".to_string(), 400, 1)],
    ));
    // a first step of 64 MiB is cut to the 600 bytes the quota leaves
    let mut r = l.reserve_up_to(&req("s", 64 << 20), Some(10_000)).unwrap();
    assert_eq!(r.held(), 600);
    assert_eq!(l.usage("").reserved_bytes, 600);
    assert!(r.grow(1, Some(10_000)).is_err(), "nothing more fits");
    r.commit(3, None);
    assert_eq!(l.usage("").bytes, 403);
    assert_eq!(l.usage("").reserved_bytes, 0);
    // the disk leaves less than the quota: 250 free, 100 must stay
    let r = l.reserve_up_to(&req("s", 64 << 20), Some(250)).unwrap();
    assert_eq!(r.held(), 150, "what the disk can spare");
    drop(r);
    // a user's own quota cuts it too
    let mut u = req("u", 64 << 20);
    u.user_quota = Some(10);
    assert_eq!(l.reserve_up_to(&u, None).unwrap().held(), 10);
    // nothing left: a stream may still start (and store nothing), but a
    // file limit is a limit
    let full = Arc::new(Ledger::new(
        Limits {
            quota: Some(400),
            max_files: Some(1),
            ..Default::default()
        },
        [("".to_string(), 400, 1)],
    ));
    let e = full.reserve_up_to(&req("s", 64 << 20), None).unwrap_err();
    assert!(e.message.contains("file limit"), "{e}");
    assert_eq!(
        full.usage(""),
        Usage {
            bytes: 400,
            files: 1,
            ..Default::default()
        }
    );
}

#[test]
fn overwrite_counts_the_difference() {
    let l = Arc::new(Ledger::new(
        Limits {
            quota: Some(100),
            ..Default::default()
        },
        [("ann".to_string(), 80, 1)],
    ));
    // replacing her 80-byte file with 95 bytes needs 15 more, no new file
    let r = Request {
        bytes: 15,
        files: 0,
        ..req("ann", 95)
    };
    l.reserve(&r, None).unwrap().commit(
        95,
        Some(&Existing {
            size: 80,
            owner: "ann".into(),
        }),
    );
    assert_eq!(l.usage("").bytes, 95);
    assert_eq!(l.usage("").files, 1);
    assert_eq!(l.usage("ann").files, 1);
}
