//! The wire format: frames and messages, encoded and decoded without I/O.
//! PROTOCOL.md documents every byte; the golden-bytes test (`tests.rs`) keeps
//! the two in agreement.
//!
//! A frame is `type: u8 | length: u32 BE | body[length]`. Every type has a hard
//! maximum body length, checked before anything is allocated.
//!
//! This file holds the constants, the message types and the one message
//! table; `codec.rs` how each kind of field is written and read.

mod codec;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use self::codec::{
    Codec, Digest, EncodingByte, EntryBody, I64, Magic, MaybeDigest, Message, Reader, Rest,
    RoleByte, Secret, ShareBody, StatusBody, Str, TokenMethod, U8, U16, U32, U64, UsageBody,
    Writer,
};

pub use self::codec::truncate_utf8;
use crate::error::{Error, Result};

/// Magic bytes at the start of HELLO.
pub const MAGIC: [u8; 4] = *b"SFT1";
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// ALPN protocol id negotiated in the TLS handshake.
pub const ALPN: &[u8] = b"sft/1";
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;
/// Bytes in a DATA body before the payload (encoding + raw length).
pub const DATA_PREFIX_LEN: usize = 5;
/// Largest body of any control (non-DATA) frame.
pub const MAX_CONTROL_BODY: usize = 64 * 1024;
/// Largest raw (uncompressed) block a DATA frame may carry.
pub const MAX_BLOCK: usize = 1 << 20;
/// Largest DATA body: prefix plus a block, plus slack for a compressed block
/// that came out larger than its input.
pub const MAX_DATA_BODY: usize = DATA_PREFIX_LEN + MAX_BLOCK + 1024;
/// Longest authentication secret.
pub const MAX_SECRET: usize = 1024;
/// Largest body of any frame a peer may send before it authenticated
/// (HELLO is 12 bytes, AUTH at most 3 + MAX_SECRET): anything larger closes
/// the connection from its header.
pub const MAX_PREAUTH_BODY: usize = 2048;

/// Feature bit: zstd-compressed DATA blocks (encoding 1).
pub const FEATURE_ZSTD: u32 = 1;
/// Feature bit: file metadata (mode bits and mtime) travels with uploads and
/// downloads (ATTRS) and listings (ENTRY's trailing `mode`).
pub const FEATURE_META: u32 = 2;
/// Feature bit: several TLS connections for one transfer (PROTOCOL.md §4.10):
/// TICKET_REQ/TICKET, JOIN, RANGE, GET_RANGE and the RANGES flag of PUT.
pub const FEATURE_STREAMS: u32 = 4;
/// The permission bits ATTRS and ENTRY carry (rwx for user, group, other;
/// never setuid, setgid or sticky).
pub const MODE_BITS: u32 = 0o777;
/// PUT and CLONE flag: replace an existing file instead of choosing "name (n)".
pub const PUT_OVERWRITE: u32 = 1;
/// PUT flag: the client sends DATA and END right after PUT without waiting
/// for PUT_READY (which the server then does not send); a refused upload's
/// data is read and discarded up to its END or CANCEL.
pub const PUT_PIPELINED: u32 = 2;
/// PUT flag: the size is not known in advance (a pipe); `size` must be 0, the
/// upload ends at END, and the server reserves space in steps as data comes.
pub const PUT_STREAM: u32 = 4;
/// PUT flag: resume an interrupted upload of the same name and size by this
/// user if the server kept its data: the server answers PARTIAL instead of
/// PUT_READY when it holds some. Not with PIPELINED or STREAM.
pub const PUT_RESUME: u32 = 8;
/// PUT flag (FEATURE_STREAMS): a ranged upload; its data arrives as RANGE
/// blocks on connections that JOIN the session, and END on this one carries
/// the whole file's SHA-256. Only OVERWRITE and RESUME besides (a ranged
/// upload cut off keeps its contiguous prefix, PROTOCOL.md §4.10).
pub const PUT_RANGES: u32 = 16;
/// CLONE flag: only ask whether the server holds any file of this user with
/// this size (DONE) or none (ERROR 6); the digest is not looked at and
/// nothing is stored. A client hashes a file only when the answer is DONE.
pub const CLONE_PROBE: u32 = 2;
/// How much an upload of unknown size reserves at a time.
pub const STREAM_STEP: u64 = 64 << 20;

/// How a DATA block's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Raw = 0,
    Zstd = 1,
}

/// A user's role, sent in AUTH_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read = 0,
    Write = 1,
    Admin = 2,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File = 1,
    Dir = 2,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (UTC).
    pub mtime_ns: i64,
    pub sha256: Option<[u8; 32]>,
    pub name: String,
    /// Who uploaded the file ("" when unknown, e.g. placed by hand).
    pub owner: String,
    /// Permission bits (`& 0o777`); sent only when FEATURE_META was
    /// negotiated, `None` otherwise.
    pub mode: Option<u32>,
}

/// A file's metadata as ATTRS carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits; receivers keep only `& 0o777`.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch (UTC).
    pub mtime_ns: i64,
}

/// Most rows in one USAGE_OK (keeps it well inside a control frame).
pub const MAX_USAGE_ROWS: usize = 400;

/// Storage accounting of one user, or of the whole server (`name` empty).
/// Limits of `u64::MAX` mean "none".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageRow {
    pub name: String,
    pub bytes: u64,
    pub reserved: u64,
    pub files: u64,
    pub quota: u64,
    pub max_files: u64,
}

/// What `sft df` shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    /// Free space on the server's filesystem (statvfs, for unprivileged users).
    pub disk_free: u64,
    /// Space uploads must leave free (`--min-free`).
    pub min_free: u64,
    pub rows: Vec<UsageRow>,
}

/// What `sft admin status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub uptime_s: u64,
    pub connections: u32,
    pub transfers: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub storage_bytes: u64,
    pub files: u64,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Hello {
        min_version: u16,
        max_version: u16,
        features: u32,
    },
    Welcome {
        version: u16,
        features: u32,
        max_block: u32,
    },
    Auth {
        secret: Vec<u8>,
    },
    /// Instead of AUTH: attach this connection to a session that handed out
    /// `ticket` (one use, short-lived; PROTOCOL.md §4.10).
    Join {
        ticket: [u8; 32],
    },
    AuthOk {
        role: Role,
        user: String,
    },
    List {
        path: String,
    },
    Entry(Entry),
    ListEnd,
    Put {
        size: u64,
        flags: u32,
        name: String,
    },
    PutReady {
        offset: u64,
    },
    Data {
        encoding: Encoding,
        raw_len: u32,
        payload: Bytes,
    },
    End {
        sha256: [u8; 32],
    },
    PutOk {
        size: u64,
        sha256: [u8; 32],
        name: String,
    },
    Cancel,
    /// Resume offer: the first `offset` bytes are already held by the other
    /// side, and hash to `sha256` (PROTOCOL.md §4.9).
    Partial {
        offset: u64,
        sha256: [u8; 32],
    },
    /// The answer to PARTIAL: continue from `offset` (the one offered) or 0.
    Resume {
        offset: u64,
    },
    /// Store `name` from content the server already holds for this user
    /// (same size and SHA-256), without its data being sent; answered by
    /// PUT_OK, or ERROR 6 when the server holds no such content.
    Clone {
        size: u64,
        /// Only `PUT_OVERWRITE`.
        flags: u32,
        sha256: [u8; 32],
        name: String,
    },
    /// Ask for a ticket another connection may JOIN with.
    TicketReq,
    /// A one-time ticket, the answer to TICKET_REQ.
    Ticket {
        ticket: [u8; 32],
    },
    /// On a joined connection of a ranged upload: `length` bytes at
    /// `offset` follow in DATA frames.
    Range {
        offset: u64,
        length: u64,
    },
    /// The metadata of the file of the next PUT (C→S), or of the file whose
    /// GET_OK follows (S→C); only with FEATURE_META.
    Attrs {
        mode: u32,
        mtime_ns: i64,
    },
    Get {
        offset: u64,
        /// Compression the receiver asks for: 0 off, 1..=19 a zstd level, 255 auto.
        compress: u8,
        name: String,
    },
    /// A download of `length` bytes from `offset` (FEATURE_STREAMS);
    /// answered like GET, END carrying the SHA-256 of those bytes.
    GetRange {
        offset: u64,
        length: u64,
        compress: u8,
        name: String,
    },
    GetOk {
        size: u64,
        mtime_ns: i64,
        sha256: Option<[u8; 32]>,
    },
    Remove {
        name: String,
    },
    Done,
    Mkdir {
        name: String,
    },
    Rmdir {
        name: String,
    },
    Stat {
        name: String,
    },
    Shutdown {
        /// Milliseconds transfers in flight may take; `u64::MAX` for the server's default.
        grace_ms: u64,
    },
    StatusReq,
    StatusOk(Status),
    Reload,
    UsageReq,
    UsageOk(Usage),
    /// Make a share link for a file or directory.
    Share {
        /// Seconds the link lives; `u64::MAX` for no expiry.
        expires_s: u64,
        /// Downloads the link allows; `u64::MAX` for no limit.
        downloads: u64,
        name: String,
    },
    /// The link just made (its token is only ever sent here).
    ShareOk(ShareInfo),
    /// List the caller's share links (an admin's: everyone's).
    ShareList,
    /// One link of a listing (token empty), ended by LIST_END.
    ShareEntry(ShareInfo),
    /// Revoke a link by its id.
    ShareRevoke {
        id: String,
    },
    Error {
        code: u16,
        message: String,
    },
    Bye,
}

/// A share link as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareInfo {
    /// Public identifier (for `--list` and `--revoke`); not a secret.
    pub id: String,
    /// The secret part of the URL; empty except in SHARE_OK.
    pub token: String,
    pub kind: EntryKind,
    /// Size of the file at the time of sharing (0 for a directory).
    pub size: u64,
    /// The file's SHA-256 (none for a directory).
    pub sha256: Option<[u8; 32]>,
    /// Unix time (seconds) the link stops working; `u64::MAX` for never.
    pub expires: u64,
    /// Downloads left; `u64::MAX` for no limit.
    pub downloads_left: u64,
    /// The shared path.
    pub name: String,
    /// Who made the link.
    pub user: String,
}

/// Every message, declared once: type code, name, variant and, field by
/// field, its wire encoding (a codec of `codec.rs`). The type codes
/// (`ty::*`), the catalogue, `type_code`, `name`, `encode` and `decode` are
/// all derived from this table; the compiler checks that it covers every variant of
/// [`Msg`], and `catalogue_matches_protocol_md` checks it against
/// PROTOCOL.md §3. Fields are encoded in the order written.
macro_rules! messages {
    ($( $code:literal $name:ident $([$pre:ty])? $variant:ident $shape:tt ;)*) => {
        /// Frame type codes.
        pub mod ty {
            $( pub const $name: u8 = $code; )*
        }

        /// (type code, name) of every message, in code order.
        pub const CATALOGUE: &[(u8, &str)] = &[ $( ($code, stringify!($name)) ),* ];

        impl Msg {
            pub fn type_code(&self) -> u8 {
                match self { $( messages!(@pat $variant $shape) => $code, )* }
            }

            /// A short name for messages and logs.
            pub fn name(&self) -> &'static str {
                match self { $( messages!(@pat $variant $shape) => stringify!($name), )* }
            }

            /// Append the whole frame (header and body) to `out`.
            pub fn encode(&self, out: &mut Vec<u8>) {
                let start = out.len();
                out.extend_from_slice(&[self.type_code(), 0, 0, 0, 0]);
                let w = &mut Writer(out);
                match self {
                    $( messages!(@bind x $variant $shape) => {
                        $( <$pre as Codec>::put(&(), w); )?
                        messages!(@put w x $shape);
                    } )*
                }
                let body = (out.len() - start - HEADER_LEN) as u32;
                out[start + 1..start + 5].copy_from_slice(&body.to_be_bytes());
            }

            /// Decode the body of a frame of type `ty` (its length already checked).
            pub fn decode(ty: u8, body: Bytes) -> Result<Msg> {
                let r = &mut Reader { b: body, ty };
                let msg = match ty {
                    $( $code => {
                        $( <$pre as Codec>::get(r)?; )?
                        messages!(@get r $variant $shape)
                    } )*
                    other => return Err(Error::protocol(format!("unknown frame type 0x{other:02x}"))),
                };
                r.finish()?;
                if let Msg::Data { encoding, raw_len, payload } = &msg {
                    check_data_prefix(*encoding as u8, *raw_len, payload.len())?;
                }
                Ok(msg)
            }
        }
    };
    (@pat $v:ident unit) => { Msg::$v };
    (@pat $v:ident ($c:ty)) => { Msg::$v(_) };
    (@pat $v:ident { $($f:ident : $c:ty),* }) => { Msg::$v { .. } };
    (@bind $x:ident $v:ident unit) => { Msg::$v };
    (@bind $x:ident $v:ident ($c:ty)) => { Msg::$v($x) };
    (@bind $x:ident $v:ident { $($f:ident : $c:ty),* }) => { Msg::$v { $($f),* } };
    (@put $w:ident $x:ident unit) => { let _ = $w; };
    (@put $w:ident $x:ident ($c:ty)) => { <$c as Codec>::put($x, $w) };
    (@put $w:ident $x:ident { $($f:ident : $c:ty),* }) => { $( <$c as Codec>::put($f, $w); )* };
    (@get $r:ident $v:ident unit) => { Msg::$v };
    (@get $r:ident $v:ident ($c:ty)) => { Msg::$v(<$c as Codec>::get($r)?) };
    (@get $r:ident $v:ident { $($f:ident : $c:ty),* }) => { Msg::$v { $( $f: <$c as Codec>::get($r)? ),* } };
}

messages! {
    0x01 HELLO [Magic] Hello { min_version: U16, max_version: U16, features: U32 };
    0x02 WELCOME Welcome { version: U16, features: U32, max_block: U32 };
    0x03 AUTH [TokenMethod] Auth { secret: Secret };
    0x04 AUTH_OK AuthOk { role: RoleByte, user: Str };
    0x05 JOIN Join { ticket: Digest };
    0x10 LIST List { path: Str };
    0x11 ENTRY Entry (EntryBody);
    0x12 LIST_END ListEnd unit;
    0x20 PUT Put { size: U64, flags: U32, name: Str };
    0x21 PUT_READY PutReady { offset: U64 };
    0x22 DATA Data { encoding: EncodingByte, raw_len: U32, payload: Rest };
    0x23 END End { sha256: Digest };
    0x24 PUT_OK PutOk { size: U64, sha256: Digest, name: Str };
    0x25 CANCEL Cancel unit;
    0x26 PARTIAL Partial { offset: U64, sha256: Digest };
    0x27 RESUME Resume { offset: U64 };
    0x28 ATTRS Attrs { mode: U32, mtime_ns: I64 };
    0x29 CLONE Clone { size: U64, flags: U32, sha256: Digest, name: Str };
    0x2A TICKET_REQ TicketReq unit;
    0x2B TICKET Ticket { ticket: Digest };
    0x2C RANGE Range { offset: U64, length: U64 };
    0x30 GET Get { offset: U64, compress: U8, name: Str };
    0x31 GET_OK GetOk { size: U64, mtime_ns: I64, sha256: MaybeDigest };
    0x32 GET_RANGE GetRange { offset: U64, length: U64, compress: U8, name: Str };
    0x40 REMOVE Remove { name: Str };
    0x41 DONE Done unit;
    0x42 MKDIR Mkdir { name: Str };
    0x43 RMDIR Rmdir { name: Str };
    0x44 STAT Stat { name: Str };
    0x50 SHUTDOWN Shutdown { grace_ms: U64 };
    0x51 STATUS StatusReq unit;
    0x52 STATUS_OK StatusOk (StatusBody);
    0x53 RELOAD Reload unit;
    0x54 USAGE UsageReq unit;
    0x55 USAGE_OK UsageOk (UsageBody);
    0x60 SHARE Share { expires_s: U64, downloads: U64, name: Str };
    0x61 SHARE_OK ShareOk (ShareBody);
    0x62 SHARE_LIST ShareList unit;
    0x63 SHARE_ENTRY ShareEntry (ShareBody);
    0x64 SHARE_REVOKE ShareRevoke { id: Str };
    0x7E ERROR Error { code: U16, message: Message };
    0x7F BYE Bye unit;
}

/// The largest body allowed for a frame type; unknown types are refused.
pub fn max_body(ty: u8) -> Result<usize> {
    if ty == ty::DATA {
        Ok(MAX_DATA_BODY)
    } else if CATALOGUE.iter().any(|(code, _)| *code == ty) {
        Ok(MAX_CONTROL_BODY)
    } else {
        Err(Error::protocol(format!("unknown frame type 0x{ty:02x}")))
    }
}

/// Parse a frame header; `Ok(None)` if fewer than 5 bytes are available.
/// An unknown type or an oversized length is an error before any allocation.
pub fn parse_header(buf: &[u8]) -> Result<Option<(u8, usize)>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let ty = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    let max = max_body(ty)?;
    if len > max {
        return Err(Error::protocol(format!(
            "frame type 0x{ty:02x} declares {len} bytes, more than the limit of {max}"
        )));
    }
    Ok(Some((ty, len)))
}

/// The 10 bytes that precede a DATA payload of `payload_len` bytes.
pub fn data_header(
    encoding: Encoding,
    raw_len: u32,
    payload_len: usize,
) -> [u8; HEADER_LEN + DATA_PREFIX_LEN] {
    let body = (DATA_PREFIX_LEN + payload_len) as u32;
    let mut h = [0u8; HEADER_LEN + DATA_PREFIX_LEN];
    h[0] = ty::DATA;
    h[1..5].copy_from_slice(&body.to_be_bytes());
    h[5] = encoding as u8;
    h[6..10].copy_from_slice(&raw_len.to_be_bytes());
    h
}

/// Validate a DATA body's prefix (encoding byte, raw length) against the
/// payload length that follows it.
pub fn check_data_prefix(encoding: u8, raw_len: u32, payload_len: usize) -> Result<Encoding> {
    let encoding = match encoding {
        0 => Encoding::Raw,
        1 => Encoding::Zstd,
        other => return Err(Error::protocol(format!("unknown DATA encoding {other}"))),
    };
    if raw_len as usize > MAX_BLOCK {
        return Err(Error::protocol(format!(
            "DATA block declares {raw_len} raw bytes, more than the limit of {MAX_BLOCK}"
        )));
    }
    if encoding == Encoding::Raw && payload_len != raw_len as usize {
        return Err(Error::protocol(
            "raw DATA block length does not match its payload",
        ));
    }
    Ok(encoding)
}
