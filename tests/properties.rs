//! Properties checked over generated inputs (proptest, 256 cases each by
//! default; `PROPTEST_CASES=100000 cargo test --test properties` for a long
//! run): names that pass the validator never leave the root, "name (n).ext"
//! numbering never yields a taken or over-long name (per component and as a
//! whole name), and every message of
//! the protocol survives encode → decode, alone and as a stream of frames
//! through the frame reader.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use sft::connection::FrameReader;
use sft::names::{self, MAX_COMPONENT, MAX_PATH};
use sft::protocol::{
    self, Encoding, Entry, EntryKind, HEADER_LEN, MAX_BLOCK, MAX_SECRET, MAX_USAGE_ROWS, Msg, Role,
    Status, Usage, UsageRow,
};

fn config() -> ProptestConfig {
    // PROPTEST_CASES in the environment overrides this (proptest reads it)
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- names

/// Pieces names are made of: the hostile ones (traversal, separators,
/// controls, NUL, bidi overrides) among ordinary and multi-byte text.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 ._-]{1,12}",
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just(String::new()),
        1 => Just("/".to_string()),
        1 => Just("\\".to_string()),
        1 => Just("\0".to_string()),
        1 => Just("\x1b[2J".to_string()),
        1 => Just("\u{202e}".to_string()),
        1 => Just("C:".to_string()),
        1 => "[é日😀]{1,90}",
        1 => "a{200,300}",
    ]
}

/// A name as a hostile peer might send it: pieces joined by '/' or not.
fn any_name() -> impl Strategy<Value = String> {
    prop::collection::vec((piece(), prop::bool::ANY), 1..8).prop_map(|parts| {
        let mut s = String::new();
        for (p, slash) in parts {
            s.push_str(&p);
            if slash {
                s.push('/');
            }
        }
        s
    })
}

/// Ordinary component text, valid by construction.
fn plain_component() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_-][a-zA-Z0-9 ._-]{0,40}",
        "[a-z]{1,8}\\.[a-z]{1,4}",
        "\\.[a-z]{1,8}",
        "[é日😀a]{1,63}",
        "[a-z]{1,300}\\.tar\\.gz",
        "[a-z]\\.[a-z]{200,260}",
    ]
    .prop_filter("within one component", |c| {
        c.len() <= MAX_COMPONENT && c != "." && c != ".."
    })
}

/// `root` joined with `name`, normalised lexically ("a/../b" → "b").
fn normalised(root: &Path, name: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in root.join(name).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn validated_names_never_escape_the_root(name in any_name()) {
        let root = Path::new("/srv/sft-root");
        if names::validate(&name).is_ok() {
            prop_assert!(!name.starts_with('/'));
            prop_assert!(!name.contains('\0'));
            prop_assert!(!name.contains('\\'));
            prop_assert!(!name.chars().any(|c| c.is_control()));
            prop_assert!(name.len() <= MAX_PATH);
            for c in Path::new(&name).components() {
                prop_assert!(matches!(c, Component::Normal(_)), "component {c:?} in {name:?}");
            }
            let full = normalised(root, &name);
            prop_assert!(full.starts_with(root) && full != root, "{name:?} -> {full:?}");
            prop_assert_eq!(full, root.join(&name));
        }
    }

    #[test]
    fn names_made_of_plain_components_are_accepted(
        comps in prop::collection::vec(plain_component(), 1..6)
    ) {
        let name = comps.join("/");
        prop_assume!(name.len() <= MAX_PATH);
        prop_assert!(names::validate(&name).is_ok(), "{name:?} refused");
        let (parent, last) = names::split_parent(&name);
        prop_assert_eq!(last, comps[comps.len() - 1].as_str());
        prop_assert_eq!(parent, comps[..comps.len() - 1].join("/"));
    }

    /// What the store does when a name is taken: try the name, then
    /// "name (1).ext", "name (2).ext", ... until one is free. Whatever is
    /// already there, the name chosen is free, valid and within 255 bytes,
    /// and the numbered names tried are all different.
    #[test]
    fn numbering_never_yields_a_taken_or_overlong_name(
        component in plain_component(),
        taken_numbers in prop::collection::btree_set(1u32..40, 0..20),
        others in prop::collection::vec(plain_component(), 0..5),
    ) {
        let mut existing: BTreeSet<String> = others.into_iter().collect();
        existing.insert(component.clone());
        for n in &taken_numbers {
            existing.insert(names::numbered(&component, *n));
        }
        let mut tried = BTreeSet::new();
        let mut chosen = None;
        for n in 1..=10_000u32 {
            let candidate = names::numbered(&component, n);
            prop_assert!(
                candidate.len() <= MAX_COMPONENT,
                "{} bytes: {candidate:?}", candidate.len()
            );
            prop_assert!(names::validate(&candidate).is_ok(), "{candidate:?} invalid");
            // equal only for a name already carrying this very tag at the
            // limit (see the test below); it is taken, so the loop moves on
            let tag = format!(" ({n})");
            prop_assert!(candidate != component || component.contains(&tag));
            prop_assert!(tried.insert(candidate.clone()), "{candidate:?} tried twice");
            if !existing.contains(&candidate) {
                chosen = Some(candidate);
                break;
            }
        }
        let chosen = chosen.expect("a free name within 10,000 tries");
        prop_assert!(!existing.contains(&chosen));
    }

    /// The same with the whole name: a numbered name stays in its
    /// directory, within 4096 bytes and valid, whatever the parents' length;
    /// `None` only when not even " (n)" fits beside the parents.
    #[test]
    fn numbered_whole_names_stay_within_the_total_limit(
        depth_len in 0usize..=MAX_PATH,
        component in plain_component(),
        n in 1u32..=10_000,
    ) {
        let mut parent = String::new();
        while parent.len() < depth_len.saturating_sub(component.len() + 1) {
            if !parent.is_empty() {
                parent.push('/');
            }
            let take = (depth_len - component.len() - 1 - parent.len()).clamp(1, MAX_COMPONENT);
            parent.push_str(&"d".repeat(take));
        }
        let name = if parent.is_empty() { component.clone() } else { format!("{parent}/{component}") };
        prop_assume!(names::validate(&name).is_ok());
        match names::numbered_name(&name, n) {
            Some(got) => {
                prop_assert!(got.len() <= MAX_PATH, "{} bytes", got.len());
                prop_assert!(names::validate(&got).is_ok(), "{got:?} invalid");
                prop_assert_ne!(&got, &name);
                prop_assert_eq!(names::split_parent(&got).0, parent.as_str());
                prop_assert!(names::split_parent(&got).1.len() <= MAX_COMPONENT);
                let tag = format!(" ({n})");
                prop_assert!(got.contains(&tag), "{got:?} lacks {tag:?}");
            }
            None => {
                let tag = format!(" ({n})");
                prop_assert!(
                    parent.len() + 1 + tag.len() > MAX_PATH,
                    "no numbered name for {} bytes of parents",
                    parent.len()
                );
            }
        }
    }

    #[test]
    fn numbered_names_keep_the_extension_when_it_fits(
        stem in "[a-z]{1,300}", ext in "[a-z]{1,10}", n in 1u32..100_000,
    ) {
        let component = format!("{stem}.{ext}");
        prop_assume!(component.len() <= MAX_COMPONENT);
        let out = names::numbered(&component, n);
        let tag = format!(" ({n}).{ext}");
        prop_assert!(out.ends_with(&tag), "{out:?}");
        prop_assert!(out.len() <= MAX_COMPONENT);
        prop_assert!(stem.starts_with(&out[..out.len() - tag.len()]));
    }
}

// ---------------------------------------------------------------- messages

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect())
}

fn digest() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Read), Just(Role::Write), Just(Role::Admin)]
}

fn usage_row() -> impl Strategy<Value = UsageRow> {
    (
        text(16),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(name, bytes, reserved, files, quota, max_files)| UsageRow {
                name,
                bytes,
                reserved,
                files,
                quota,
                max_files,
            },
        )
}

fn data() -> impl Strategy<Value = Msg> {
    prop_oneof![
        // raw: the payload is the block
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 16 * 1024..40 * 1024),
        ]
        .prop_map(|p| Msg::Data {
            encoding: Encoding::Raw,
            raw_len: p.len() as u32,
            payload: Bytes::from(p),
        }),
        // zstd: the frame carries any payload and a declared size up to a block
        (
            0..=MAX_BLOCK as u32,
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(raw_len, p)| Msg::Data {
                encoding: Encoding::Zstd,
                raw_len,
                payload: Bytes::from(p),
            }),
    ]
}

/// Every variant of `Msg`, with fields anywhere in the ranges the decoder
/// accepts.
fn any_msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<u32>()).prop_map(|(a, b, f)| Msg::Hello {
            min_version: a,
            max_version: b,
            features: f,
        }),
        (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(v, f, m)| Msg::Welcome {
            version: v,
            features: f,
            max_block: m,
        }),
        prop::collection::vec(any::<u8>(), 0..=MAX_SECRET).prop_map(|secret| Msg::Auth { secret }),
        (role(), text(40)).prop_map(|(role, user)| Msg::AuthOk { role, user }),
        text(300).prop_map(|path| Msg::List { path }),
        (
            prop_oneof![Just(EntryKind::File), Just(EntryKind::Dir)],
            any::<u64>(),
            any::<i64>(),
            prop::option::of(digest()),
            text(300),
            text(40),
            prop::option::of(any::<u32>()),
        )
            .prop_map(
                |(kind, size, mtime_ns, sha256, name, owner, mode)| Msg::Entry(Entry {
                    kind,
                    size,
                    mtime_ns,
                    sha256,
                    name,
                    owner,
                    mode,
                })
            ),
        Just(Msg::ListEnd),
        (any::<u64>(), any::<u32>(), text(300)).prop_map(|(size, flags, name)| Msg::Put {
            size,
            flags,
            name
        }),
        any::<u64>().prop_map(|offset| Msg::PutReady { offset }),
        data(),
        digest().prop_map(|sha256| Msg::End { sha256 }),
        (any::<u64>(), digest(), text(300)).prop_map(|(size, sha256, name)| Msg::PutOk {
            size,
            sha256,
            name
        }),
        Just(Msg::Cancel),
        (any::<u32>(), any::<i64>()).prop_map(|(mode, mtime_ns)| Msg::Attrs { mode, mtime_ns }),
        (any::<u64>(), any::<u8>(), text(300)).prop_map(|(offset, compress, name)| Msg::Get {
            offset,
            compress,
            name
        }),
        (any::<u64>(), any::<i64>(), prop::option::of(digest())).prop_map(
            |(size, mtime_ns, sha256)| Msg::GetOk {
                size,
                mtime_ns,
                sha256
            }
        ),
        text(300).prop_map(|name| Msg::Remove { name }),
        Just(Msg::Done),
        text(300).prop_map(|name| Msg::Mkdir { name }),
        text(300).prop_map(|name| Msg::Rmdir { name }),
        text(300).prop_map(|name| Msg::Stat { name }),
        any::<u64>().prop_map(|grace_ms| Msg::Shutdown { grace_ms }),
        Just(Msg::StatusReq),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(uptime_s, connections, transfers, bytes_in, bytes_out, storage_bytes, files)| {
                    Msg::StatusOk(Status {
                        uptime_s,
                        connections,
                        transfers,
                        bytes_in,
                        bytes_out,
                        storage_bytes,
                        files,
                    })
                }
            ),
        Just(Msg::Reload),
        Just(Msg::UsageReq),
        (
            any::<u64>(),
            any::<u64>(),
            prop_oneof![
                prop::collection::vec(usage_row(), 0..8),
                prop::collection::vec(usage_row(), MAX_USAGE_ROWS..=MAX_USAGE_ROWS)
            ]
        )
            .prop_map(|(disk_free, min_free, rows)| Msg::UsageOk(Usage {
                disk_free,
                min_free,
                rows
            })),
        (any::<u16>(), text(1000)).prop_map(|(code, message)| Msg::Error { code, message }),
        Just(Msg::Bye),
    ]
}

fn encode(m: &Msg) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_message_round_trips(m in any_msg()) {
        let frame = encode(&m);
        let (ty, len) = protocol::parse_header(&frame)
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", m.name())))?
            .expect("a whole header");
        prop_assert_eq!(ty, m.type_code());
        prop_assert_eq!(HEADER_LEN + len, frame.len());
        prop_assert!(len <= protocol::max_body(ty).expect("a known type"));
        let back = Msg::decode(ty, Bytes::copy_from_slice(&frame[HEADER_LEN..]))
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", m.name())))?;
        prop_assert_eq!(back, m);
    }

    /// A run of messages written back to back and read by the frame reader
    /// (the path every session takes, large DATA payloads included) comes
    /// out whole, in order, and then the stream ends cleanly.
    #[test]
    fn a_stream_of_messages_reads_back_in_order(
        msgs in prop::collection::vec(any_msg(), 1..12),
        split in 1usize..5000,
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            m.encode(&mut stream);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        let read = rt.block_on(async {
            // two pieces, so frames are cut at an arbitrary point
            let cut = split.min(stream.len());
            let (a, b) = stream.split_at(cut);
            let mut rd = FrameReader::new(tokio::io::AsyncReadExt::chain(a, b));
            let mut got = Vec::new();
            loop {
                match rd.read_frame().await {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => return Ok(got),
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        let read = read.map_err(TestCaseError::fail)?;
        prop_assert_eq!(read, msgs);
    }
}

/// Found by fuzz/fuzz_targets/names.rs: a 255-byte name that already ends
/// in " (n)" before its extension numbers to itself with that n (the stem is
/// cut back to exactly where the tag was). The store's loop then finds the
/// name taken (RENAME_NOREPLACE) and the next number gives a new name.
#[test]
fn a_name_carrying_its_own_tag_at_the_limit_numbers_to_itself_then_moves_on() {
    let name = format!(
        ".{}.{} (53584).{}",
        "S".repeat(101),
        "S".repeat(41),
        "S".repeat(102)
    );
    assert_eq!(name.len(), MAX_COMPONENT);
    names::validate(&name).unwrap();
    assert_eq!(names::numbered(&name, 53584), name);
    let next = names::numbered(&name, 53585);
    assert_ne!(next, name);
    assert!(next.len() <= MAX_COMPONENT && next.contains(" (53585)."));
    names::validate(&next).unwrap();
}

/// A truncated body never decodes, and neither does one with a byte to spare.
#[test]
fn truncated_bodies_are_refused() {
    let m = Msg::PutOk {
        size: 5,
        sha256: [7; 32],
        name: "a/b.txt".into(),
    };
    let frame = encode(&m);
    for cut in HEADER_LEN..frame.len() {
        let r = Msg::decode(
            m.type_code(),
            Bytes::copy_from_slice(&frame[HEADER_LEN..cut]),
        );
        assert!(r.is_err(), "a body cut at {cut} decoded: {r:?}");
    }
    // one byte too many is refused as well
    let mut long = frame[HEADER_LEN..].to_vec();
    long.push(0);
    assert!(Msg::decode(m.type_code(), Bytes::from(long)).is_err());
}
