//! The wire format: frames and messages, encoded and decoded without I/O.
//! PROTOCOL.md documents every byte; the golden-bytes test below keeps the two
//! in agreement.
//!
//! A frame is `type: u8 | length: u32 BE | body[length]`. Every type has a hard
//! maximum body length, checked before anything is allocated.

use bytes::{Buf, Bytes};

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
/// field, its wire encoding (a codec below). The type codes (`ty::*`), the
/// catalogue, `type_code`, `name`, `encode` and `decode` are all derived
/// from this table; the compiler checks that it covers every variant of
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
    0x30 GET Get { offset: U64, compress: U8, name: Str };
    0x31 GET_OK GetOk { size: U64, mtime_ns: I64, sha256: MaybeDigest };
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

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A string or byte string: u16 length then the bytes (truncated to fit).
    fn str(&mut self, v: &[u8]) {
        let n = v.len().min(u16::MAX as usize);
        self.bytes(&(n as u16).to_be_bytes());
        self.bytes(&v[..n]);
    }
}

/// How one field travels: written into a body, read back from one.
trait Codec {
    type T;
    fn put(v: &Self::T, w: &mut Writer);
    fn get(r: &mut Reader) -> Result<Self::T>;
}

macro_rules! int_codec {
    ($($c:ident $t:ty),*) => {$(
        struct $c;
        impl Codec for $c {
            type T = $t;
            fn put(v: &$t, w: &mut Writer) {
                w.bytes(&v.to_be_bytes());
            }
            fn get(r: &mut Reader) -> Result<$t> {
                Ok(<$t>::from_be_bytes(r.array()?))
            }
        }
    )*};
}
int_codec!(U8 u8, U16 u16, U32 u32, U64 u64, I64 i64);

/// u16 length, then UTF-8.
struct Str;
impl Codec for Str {
    type T = String;
    fn put(v: &String, w: &mut Writer) {
        w.str(v.as_bytes());
    }
    fn get(r: &mut Reader) -> Result<String> {
        r.string()
    }
}

/// An ERROR's text: like `Str`, kept well inside a control frame on the
/// way out, and read leniently (a message is for people).
struct Message;
impl Codec for Message {
    type T = String;
    fn put(v: &String, w: &mut Writer) {
        w.str(truncate_utf8(v, 4096).as_bytes());
    }
    fn get(r: &mut Reader) -> Result<String> {
        Ok(String::from_utf8_lossy(&r.bytes_u16()?).into_owned())
    }
}

/// 32 bytes.
struct Digest;
impl Codec for Digest {
    type T = [u8; 32];
    fn put(v: &[u8; 32], w: &mut Writer) {
        w.bytes(v);
    }
    fn get(r: &mut Reader) -> Result<[u8; 32]> {
        r.array()
    }
}

/// A flag byte (0 absent, 1 present), then 32 bytes (zeros when absent).
struct MaybeDigest;
impl Codec for MaybeDigest {
    type T = Option<[u8; 32]>;
    fn put(v: &Option<[u8; 32]>, w: &mut Writer) {
        match v {
            Some(d) => {
                w.bytes(&[1]);
                w.bytes(d);
            }
            None => {
                w.bytes(&[0]);
                w.bytes(&[0; 32]);
            }
        }
    }
    fn get(r: &mut Reader) -> Result<Option<[u8; 32]>> {
        r.digest()
    }
}

/// The rest of the body.
struct Rest;
impl Codec for Rest {
    type T = Bytes;
    fn put(v: &Bytes, w: &mut Writer) {
        w.bytes(v);
    }
    fn get(r: &mut Reader) -> Result<Bytes> {
        Ok(r.rest())
    }
}

/// HELLO's leading `SFT1`.
struct Magic;
impl Codec for Magic {
    type T = ();
    fn put(_: &(), w: &mut Writer) {
        w.bytes(&MAGIC);
    }
    fn get(r: &mut Reader) -> Result<()> {
        if r.array::<4>()? != MAGIC {
            return Err(Error::protocol(
                "HELLO does not start with the sft magic bytes; is this an sft client?",
            ));
        }
        Ok(())
    }
}

/// AUTH's method byte: 1 = token, the only one.
struct TokenMethod;
impl Codec for TokenMethod {
    type T = ();
    fn put(_: &(), w: &mut Writer) {
        w.bytes(&[1]);
    }
    fn get(r: &mut Reader) -> Result<()> {
        match r.u8()? {
            1 => Ok(()),
            other => Err(Error::protocol(format!(
                "unknown authentication method {other}"
            ))),
        }
    }
}

/// u16 length, then at most MAX_SECRET bytes.
struct Secret;
impl Codec for Secret {
    type T = Vec<u8>;
    fn put(v: &Vec<u8>, w: &mut Writer) {
        w.str(v);
    }
    fn get(r: &mut Reader) -> Result<Vec<u8>> {
        let secret = r.bytes_u16()?;
        if secret.len() > MAX_SECRET {
            return Err(Error::protocol(format!(
                "token longer than {MAX_SECRET} bytes"
            )));
        }
        Ok(secret.to_vec())
    }
}

struct RoleByte;
impl Codec for RoleByte {
    type T = Role;
    fn put(v: &Role, w: &mut Writer) {
        w.bytes(&[*v as u8]);
    }
    fn get(r: &mut Reader) -> Result<Role> {
        match r.u8()? {
            0 => Ok(Role::Read),
            1 => Ok(Role::Write),
            2 => Ok(Role::Admin),
            other => Err(Error::protocol(format!("unknown role {other}"))),
        }
    }
}

/// DATA's encoding byte (its length rules are checked after decoding).
struct EncodingByte;
impl Codec for EncodingByte {
    type T = Encoding;
    fn put(v: &Encoding, w: &mut Writer) {
        w.bytes(&[*v as u8]);
    }
    fn get(r: &mut Reader) -> Result<Encoding> {
        match r.u8()? {
            0 => Ok(Encoding::Raw),
            1 => Ok(Encoding::Zstd),
            other => Err(Error::protocol(format!("unknown DATA encoding {other}"))),
        }
    }
}

/// kind, size, mtime, digest, name, owner, and (FEATURE_META) mode: the
/// mode is there exactly when 4 bytes follow the owner.
struct EntryBody;
impl Codec for EntryBody {
    type T = Entry;
    fn put(e: &Entry, w: &mut Writer) {
        w.bytes(&[e.kind as u8]);
        U64::put(&e.size, w);
        I64::put(&e.mtime_ns, w);
        MaybeDigest::put(&e.sha256, w);
        Str::put(&e.name, w);
        Str::put(&e.owner, w);
        if let Some(mode) = e.mode {
            U32::put(&mode, w);
        }
    }
    fn get(r: &mut Reader) -> Result<Entry> {
        let kind = match r.u8()? {
            1 => EntryKind::File,
            2 => EntryKind::Dir,
            other => return Err(Error::protocol(format!("unknown entry kind {other}"))),
        };
        Ok(Entry {
            kind,
            size: U64::get(r)?,
            mtime_ns: I64::get(r)?,
            sha256: MaybeDigest::get(r)?,
            name: Str::get(r)?,
            owner: Str::get(r)?,
            // any other count of trailing bytes is refused by `finish`
            mode: if r.remaining() == 4 {
                Some(U32::get(r)?)
            } else {
                None
            },
        })
    }
}

/// id, token, kind, size, digest, expires, downloads left, name, user.
struct ShareBody;
impl Codec for ShareBody {
    type T = ShareInfo;
    fn put(v: &ShareInfo, w: &mut Writer) {
        Str::put(&v.id, w);
        Str::put(&v.token, w);
        w.bytes(&[v.kind as u8]);
        U64::put(&v.size, w);
        MaybeDigest::put(&v.sha256, w);
        U64::put(&v.expires, w);
        U64::put(&v.downloads_left, w);
        Str::put(&v.name, w);
        Str::put(&v.user, w);
    }
    fn get(r: &mut Reader) -> Result<ShareInfo> {
        let id = Str::get(r)?;
        let token = Str::get(r)?;
        let kind = match r.u8()? {
            1 => EntryKind::File,
            2 => EntryKind::Dir,
            other => return Err(Error::protocol(format!("unknown entry kind {other}"))),
        };
        Ok(ShareInfo {
            id,
            token,
            kind,
            size: U64::get(r)?,
            sha256: MaybeDigest::get(r)?,
            expires: U64::get(r)?,
            downloads_left: U64::get(r)?,
            name: Str::get(r)?,
            user: Str::get(r)?,
        })
    }
}

struct StatusBody;
impl Codec for StatusBody {
    type T = Status;
    fn put(st: &Status, w: &mut Writer) {
        U64::put(&st.uptime_s, w);
        U32::put(&st.connections, w);
        U32::put(&st.transfers, w);
        U64::put(&st.bytes_in, w);
        U64::put(&st.bytes_out, w);
        U64::put(&st.storage_bytes, w);
        U64::put(&st.files, w);
    }
    fn get(r: &mut Reader) -> Result<Status> {
        Ok(Status {
            uptime_s: U64::get(r)?,
            connections: U32::get(r)?,
            transfers: U32::get(r)?,
            bytes_in: U64::get(r)?,
            bytes_out: U64::get(r)?,
            storage_bytes: U64::get(r)?,
            files: U64::get(r)?,
        })
    }
}

/// disk_free, min_free, a u16 row count (at most MAX_USAGE_ROWS), rows.
struct UsageBody;
impl Codec for UsageBody {
    type T = Usage;
    fn put(u: &Usage, w: &mut Writer) {
        U64::put(&u.disk_free, w);
        U64::put(&u.min_free, w);
        let rows = &u.rows[..u.rows.len().min(MAX_USAGE_ROWS)];
        U16::put(&(rows.len() as u16), w);
        for row in rows {
            w.str(truncate_utf8(&row.name, 64).as_bytes());
            U64::put(&row.bytes, w);
            U64::put(&row.reserved, w);
            U64::put(&row.files, w);
            U64::put(&row.quota, w);
            U64::put(&row.max_files, w);
        }
    }
    fn get(r: &mut Reader) -> Result<Usage> {
        let disk_free = U64::get(r)?;
        let min_free = U64::get(r)?;
        let n = r.u16()? as usize;
        if n > MAX_USAGE_ROWS {
            return Err(Error::protocol(format!(
                "USAGE_OK with {n} rows, more than the limit of {MAX_USAGE_ROWS}"
            )));
        }
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            rows.push(UsageRow {
                name: Str::get(r)?,
                bytes: U64::get(r)?,
                reserved: U64::get(r)?,
                files: U64::get(r)?,
                quota: U64::get(r)?,
                max_files: U64::get(r)?,
            });
        }
        Ok(Usage {
            disk_free,
            min_free,
            rows,
        })
    }
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

/// Cut `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

struct Reader {
    b: Bytes,
    ty: u8,
}

impl Reader {
    fn need(&self, n: usize) -> Result<()> {
        if self.b.remaining() < n {
            return Err(Error::protocol(format!(
                "frame type 0x{:02x} is truncated",
                self.ty
            )));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.b.get_u8())
    }
    fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.b.get_u16())
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.need(N)?;
        let mut a = [0u8; N];
        self.b.copy_to_slice(&mut a);
        Ok(a)
    }
    fn bytes_u16(&mut self) -> Result<Bytes> {
        let n = self.u16()? as usize;
        self.need(n)?;
        Ok(self.b.split_to(n))
    }
    fn string(&mut self) -> Result<String> {
        let b = self.bytes_u16()?;
        String::from_utf8(b.to_vec()).map_err(|_| {
            Error::protocol(format!(
                "frame type 0x{:02x} carries a string that is not UTF-8",
                self.ty
            ))
        })
    }
    fn digest(&mut self) -> Result<Option<[u8; 32]>> {
        let present = self.u8()?;
        let d = self.array::<32>()?;
        match present {
            0 => Ok(None),
            1 => Ok(Some(d)),
            other => Err(Error::protocol(format!("bad digest flag {other}"))),
        }
    }
    fn remaining(&self) -> usize {
        self.b.remaining()
    }
    fn rest(&mut self) -> Bytes {
        self.b.split_off(0)
    }
    fn finish(&self) -> Result<()> {
        if self.b.has_remaining() {
            return Err(Error::protocol(format!(
                "frame type 0x{:02x} has {} unexpected trailing bytes",
                self.ty,
                self.b.remaining()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        let doc = include_str!("../PROTOCOL.md");
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

    /// PROTOCOL.md §3 lists exactly the messages of the table above, with
    /// their codes, names and (where fixed) body lengths.
    #[test]
    fn catalogue_matches_protocol_md() {
        let doc = include_str!("../PROTOCOL.md");
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
}
