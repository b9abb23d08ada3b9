//! The wire format's tests: PROTOCOL.md's catalogue and golden bytes, round
//! trips, and hostile input.

use super::*;

fn round_trip(m: Msg) {
    let mut buf = Vec::new();
    m.encode(&mut buf);
    let (ty, len) = parse_header(&buf).unwrap().unwrap();
    assert_eq!(len, buf.len() - HEADER_LEN);
    let back = Msg::decode(ty, Bytes::copy_from_slice(&buf[HEADER_LEN..])).unwrap();
    assert_eq!(back, m);
}

/// One message of every type (and both shapes of the optional fields).
fn samples() -> Vec<Msg> {
    let d = Some([7u8; 32]);
    vec![
        Msg::Join { ticket: [3; 32] },
        Msg::TicketReq,
        Msg::Ticket { ticket: [4; 32] },
        Msg::Range {
            offset: 1,
            length: 2,
        },
        Msg::GetRange {
            offset: 1,
            length: 2,
            compress: 255,
            name: "x".into(),
        },
        Msg::Hello {
            min_version: 1,
            max_version: 1,
            features: FEATURE_ZSTD,
        },
        Msg::Welcome {
            version: 1,
            features: 0,
            max_block: MAX_BLOCK as u32,
        },
        Msg::Auth {
            secret: b"tok".to_vec(),
        },
        Msg::AuthOk {
            role: Role::Admin,
            user: "alice".into(),
        },
        Msg::List { path: "".into() },
        Msg::Entry(Entry {
            kind: EntryKind::File,
            size: 5,
            mtime_ns: -3,
            sha256: d,
            name: "a b.txt".into(),
            owner: "alice".into(),
            mode: None,
        }),
        Msg::Entry(Entry {
            kind: EntryKind::File,
            size: 5,
            mtime_ns: 1_000_000_000_123_456_789,
            sha256: d,
            name: "run.sh".into(),
            owner: "alice".into(),
            mode: Some(0o750),
        }),
        Msg::Entry(Entry {
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: 0,
            sha256: None,
            name: "dir".into(),
            owner: String::new(),
            mode: None,
        }),
        Msg::ListEnd,
        Msg::Put {
            size: u64::MAX,
            flags: PUT_OVERWRITE,
            name: "x".into(),
        },
        Msg::PutReady { offset: 0 },
        Msg::Data {
            encoding: Encoding::Raw,
            raw_len: 3,
            payload: Bytes::from_static(b"abc"),
        },
        Msg::Data {
            encoding: Encoding::Zstd,
            raw_len: 100,
            payload: Bytes::from_static(b"zz"),
        },
        Msg::End { sha256: [1; 32] },
        Msg::PutOk {
            size: 3,
            sha256: [2; 32],
            name: "x (1)".into(),
        },
        Msg::Cancel,
        Msg::Partial {
            offset: 9,
            sha256: [3; 32],
        },
        Msg::Resume { offset: 9 },
        Msg::Clone {
            size: 20 << 20,
            flags: PUT_OVERWRITE,
            sha256: [3; 32],
            name: "b.bin".into(),
        },
        Msg::Attrs {
            mode: 0o640,
            mtime_ns: -1,
        },
        Msg::Share {
            expires_s: 86_400,
            downloads: u64::MAX,
            name: "a.txt".into(),
        },
        Msg::ShareOk(ShareInfo {
            id: "0a1b2c3d".into(),
            token: "tok".into(),
            kind: EntryKind::File,
            size: 5,
            sha256: d,
            expires: 1_800_000_000,
            downloads_left: 3,
            name: "a.txt".into(),
            user: "alice".into(),
        }),
        Msg::ShareList,
        Msg::ShareEntry(ShareInfo {
            id: "0a1b2c3d".into(),
            token: String::new(),
            kind: EntryKind::Dir,
            size: 0,
            sha256: None,
            expires: u64::MAX,
            downloads_left: u64::MAX,
            name: "d".into(),
            user: "alice".into(),
        }),
        Msg::ShareRevoke {
            id: "0a1b2c3d".into(),
        },
        Msg::Get {
            offset: 0,
            compress: 255,
            name: "x".into(),
        },
        Msg::GetOk {
            size: 9,
            mtime_ns: 1_700_000_000_000_000_000,
            sha256: None,
        },
        Msg::Remove { name: "x".into() },
        Msg::Done,
        Msg::Mkdir { name: "d/e".into() },
        Msg::Rmdir { name: "d".into() },
        Msg::Stat { name: "d/x".into() },
        Msg::Shutdown { grace_ms: u64::MAX },
        Msg::StatusReq,
        Msg::StatusOk(Status {
            uptime_s: 1,
            connections: 2,
            transfers: 3,
            bytes_in: 4,
            bytes_out: 5,
            storage_bytes: 6,
            files: 7,
        }),
        Msg::Reload,
        Msg::UsageReq,
        Msg::UsageOk(Usage {
            disk_free: 1 << 40,
            min_free: 1 << 30,
            rows: vec![
                UsageRow {
                    name: String::new(),
                    bytes: 10,
                    reserved: 5,
                    files: 2,
                    quota: u64::MAX,
                    max_files: 100,
                },
                UsageRow {
                    name: "ci".into(),
                    bytes: 10,
                    reserved: 0,
                    files: 2,
                    quota: 50 << 30,
                    max_files: u64::MAX,
                },
            ],
        }),
        Msg::Error {
            code: 6,
            message: "not found: 'x'".into(),
        },
        Msg::Bye,
    ]
}

#[test]
fn every_message_round_trips() {
    let all = samples();
    for (code, name) in CATALOGUE {
        assert!(
            all.iter()
                .any(|m| m.type_code() == *code && m.name() == *name),
            "no sample of {name}"
        );
    }
    for m in all {
        round_trip(m);
    }
}

/// SHA-256 of `hello`, the file of the §9 examples.
fn hello_sha256() -> [u8; 32] {
    let mut d = [0u8; 32];
    hex::decode_to_slice(
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        &mut d,
    )
    .expect("hex");
    d
}

/// The hex blocks of PROTOCOL.md §9, in order.
fn examples_in_protocol_md() -> Vec<Vec<u8>> {
    let doc = include_str!("../../PROTOCOL.md");
    let start = doc.find("## 9. Worked example in hex").expect("§9 exists");
    let s9 = &doc[start..];
    let s9 = &s9[..s9.find("\n## 10").expect("§10 follows")];
    s9.split("```")
        .skip(1)
        .step_by(2)
        .map(|block| {
            let hex: String = block.chars().filter(|c| !c.is_whitespace()).collect();
            hex::decode(&hex).unwrap_or_else(|e| panic!("bad hex {hex:?} in §9: {e}"))
        })
        .collect()
}

/// PROTOCOL.md §9 is read as it stands: its bytes are what this code
/// writes, and its full frames decode to the messages it describes.
#[test]
fn golden_bytes_match_protocol_md() {
    let frame = |m: &Msg| {
        let mut b = Vec::new();
        m.encode(&mut b);
        b
    };
    let expected = [
        Some(Msg::Hello {
            min_version: 1,
            max_version: 1,
            features: FEATURE_ZSTD,
        }),
        Some(Msg::Put {
            size: 5,
            flags: 0,
            name: "a.txt".into(),
        }),
        Some(Msg::Error {
            code: 6,
            message: "nope".into(),
        }),
        None,
        None,
        Some(Msg::Get {
            offset: 0,
            compress: 255,
            name: "a.txt".into(),
        }),
        Some(Msg::Clone {
            size: 5,
            flags: 0,
            sha256: hello_sha256(),
            name: "b.txt".into(),
        }),
        Some(Msg::Attrs {
            mode: 0o750,
            mtime_ns: 1_700_000_000_123_456_789,
        }),
        Some(Msg::Entry(Entry {
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: 0,
            sha256: None,
            name: "d".into(),
            owner: String::new(),
            mode: Some(0o755),
        })),
        Some(Msg::Partial {
            offset: 1 << 20,
            sha256: [0x11; 32],
        }),
        Some(Msg::Resume { offset: 1 << 20 }),
        Some(Msg::Put {
            size: 256 << 20,
            flags: PUT_RANGES,
            name: "a.txt".into(),
        }),
        Some(Msg::Put {
            size: 256 << 20,
            flags: PUT_RANGES | PUT_RESUME,
            name: "a.txt".into(),
        }),
        Some(Msg::TicketReq),
        Some(Msg::Ticket { ticket: [0xab; 32] }),
        Some(Msg::Join { ticket: [0xab; 32] }),
        Some(Msg::Range {
            offset: 8 << 20,
            length: 8 << 20,
        }),
        Some(Msg::GetRange {
            offset: 8 << 20,
            length: 8 << 20,
            compress: 0,
            name: "a.txt".into(),
        }),
    ];
    let headers = [
        data_header(Encoding::Raw, 3, 3).to_vec(),
        data_header(Encoding::Zstd, 1 << 20, 1234).to_vec(),
    ];
    let doc = examples_in_protocol_md();
    assert_eq!(doc.len(), expected.len(), "examples in §9");
    let mut h = headers.iter();
    for (bytes, want) in doc.iter().zip(expected) {
        match want {
            Some(m) => {
                assert_eq!(hex::encode(bytes), hex::encode(frame(&m)), "{}", m.name());
                let (ty, len) = parse_header(bytes).unwrap().unwrap();
                assert_eq!(len, bytes.len() - HEADER_LEN);
                let back = Msg::decode(ty, Bytes::copy_from_slice(&bytes[HEADER_LEN..]));
                assert_eq!(back.unwrap(), m);
            }
            None => assert_eq!(Some(bytes), h.next(), "DATA header"),
        }
    }
}

/// PROTOCOL.md §3 lists exactly the messages of the table in `mod.rs`, with
/// their codes, names and (where fixed) body lengths.
#[test]
fn catalogue_matches_protocol_md() {
    let doc = include_str!("../../PROTOCOL.md");
    let start = doc.find("## 3. Message catalogue").expect("§3 exists");
    let mut listed = Vec::new();
    for line in doc[start..].lines().skip(1) {
        if line.starts_with("## ") {
            break;
        }
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 6 || !cols[1].starts_with("`0x") {
            continue;
        }
        let hex = cols[1].trim_matches('`').trim_start_matches("0x");
        let code = u8::from_str_radix(hex, 16).expect("hex code");
        listed.push((code, cols[2].to_string(), cols[4].to_string()));
    }
    let ours: Vec<(u8, String)> = CATALOGUE.iter().map(|(c, n)| (*c, n.to_string())).collect();
    let theirs: Vec<(u8, String)> = listed.iter().map(|(c, n, _)| (*c, n.clone())).collect();
    assert_eq!(ours, theirs, "codes and names in §3");
    for m in samples() {
        let mut b = Vec::new();
        m.encode(&mut b);
        let body = b.len() - HEADER_LEN;
        let Some((_, _, len)) = listed.iter().find(|(c, _, _)| *c == m.type_code()) else {
            continue;
        };
        let fixed: String = len.chars().take_while(|c| c.is_ascii_digit()).collect();
        let fixed: usize = fixed.parse().expect("a length");
        if len.chars().all(|c| c.is_ascii_digit()) {
            assert_eq!(body, fixed, "{}: body length in §3", m.name());
        } else {
            assert!(body >= fixed, "{}: at least {fixed} bytes in §3", m.name());
        }
    }
}

#[test]
fn oversized_and_unknown_frames_are_refused_before_allocation() {
    let mut h = vec![ty::DATA];
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(
        parse_header(&h)
            .unwrap_err()
            .message
            .contains("more than the limit")
    );
    let mut h = vec![ty::LIST];
    h.extend_from_slice(&((MAX_CONTROL_BODY as u32) + 1).to_be_bytes());
    assert!(parse_header(&h).is_err());
    let h = [0x99, 0, 0, 0, 0];
    assert!(
        parse_header(&h)
            .unwrap_err()
            .message
            .contains("unknown frame type")
    );
    assert_eq!(parse_header(&[ty::BYE, 0, 0]).unwrap(), None);
}

#[test]
fn truncated_trailing_and_lying_bodies_are_errors() {
    assert!(Msg::decode(ty::PUT, Bytes::from_static(&[0, 0, 0])).is_err());
    assert!(
        Msg::decode(ty::BYE, Bytes::from_static(&[1]))
            .unwrap_err()
            .message
            .contains("trailing")
    );
    // string length pointing past the end
    assert!(Msg::decode(ty::LIST, Bytes::from_static(&[0xff, 0xff, b'a'])).is_err());
    // raw block whose declared length lies
    assert!(Msg::decode(ty::DATA, Bytes::from_static(&[0, 0, 0, 0, 9, b'a'])).is_err());
    // raw_len over the cap
    let mut body = vec![1u8];
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(
        Msg::decode(ty::DATA, Bytes::from(body))
            .unwrap_err()
            .message
            .contains("limit")
    );
    // invalid UTF-8 name
    assert!(Msg::decode(ty::REMOVE, Bytes::from_static(&[0, 2, 0xff, 0xfe])).is_err());
    // wrong magic
    assert!(Msg::decode(ty::HELLO, Bytes::from_static(b"HTTP/1.1 ...")).is_err());
    // ENTRY's mode is there with exactly 4 bytes after the owner: any
    // other count of trailing bytes is refused
    let mut e = Vec::new();
    Msg::Entry(Entry {
        kind: EntryKind::File,
        size: 1,
        mtime_ns: 2,
        sha256: None,
        name: "f".into(),
        owner: String::new(),
        mode: None,
    })
    .encode(&mut e);
    let body = &e[HEADER_LEN..];
    for extra in [1usize, 2, 3, 5, 8] {
        let mut b = body.to_vec();
        b.extend(std::iter::repeat_n(0u8, extra));
        assert!(Msg::decode(ty::ENTRY, Bytes::from(b)).is_err(), "{extra}");
    }
    let mut b = body.to_vec();
    b.extend_from_slice(&0o640u32.to_be_bytes());
    match Msg::decode(ty::ENTRY, Bytes::from(b)).unwrap() {
        Msg::Entry(e) => assert_eq!(e.mode, Some(0o640)),
        other => panic!("{other:?}"),
    }
    // ATTRS is exactly 12 bytes
    assert!(Msg::decode(ty::ATTRS, Bytes::from_static(&[0; 11])).is_err());
    assert!(Msg::decode(ty::ATTRS, Bytes::from_static(&[0; 13])).is_err());
}

#[test]
fn decoding_arbitrary_bytes_never_panics() {
    // a cheap deterministic fuzz over every type code
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for t in 0..=255u8 {
        for len in 0..64usize {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = Msg::decode(t, Bytes::from(body));
        }
    }
}
