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

/// Feature bit: zstd-compressed DATA blocks (encoding 1).
pub const FEATURE_ZSTD: u32 = 1;
/// PUT flag: replace an existing file instead of choosing "name (n)".
pub const PUT_OVERWRITE: u32 = 1;
/// PUT flag: the client sends DATA and END right after PUT without waiting
/// for PUT_READY (which the server then does not send); a refused upload's
/// data is read and discarded up to its END or CANCEL.
pub const PUT_PIPELINED: u32 = 2;
/// PUT flag: the size is not known in advance (a pipe); `size` must be 0, the
/// upload ends at END, and the server reserves space in steps as data comes.
pub const PUT_STREAM: u32 = 4;
/// How much an upload of unknown size reserves at a time.
pub const STREAM_STEP: u64 = 64 << 20;

/// Frame type codes.
pub mod ty {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const AUTH: u8 = 0x03;
    pub const AUTH_OK: u8 = 0x04;
    pub const LIST: u8 = 0x10;
    pub const ENTRY: u8 = 0x11;
    pub const LIST_END: u8 = 0x12;
    pub const PUT: u8 = 0x20;
    pub const PUT_READY: u8 = 0x21;
    pub const DATA: u8 = 0x22;
    pub const END: u8 = 0x23;
    pub const PUT_OK: u8 = 0x24;
    pub const CANCEL: u8 = 0x25;
    pub const GET: u8 = 0x30;
    pub const GET_OK: u8 = 0x31;
    pub const REMOVE: u8 = 0x40;
    pub const DONE: u8 = 0x41;
    pub const MKDIR: u8 = 0x42;
    pub const RMDIR: u8 = 0x43;
    pub const STAT: u8 = 0x44;
    pub const SHUTDOWN: u8 = 0x50;
    pub const STATUS: u8 = 0x51;
    pub const STATUS_OK: u8 = 0x52;
    pub const RELOAD: u8 = 0x53;
    pub const USAGE: u8 = 0x54;
    pub const USAGE_OK: u8 = 0x55;
    pub const ERROR: u8 = 0x7E;
    pub const BYE: u8 = 0x7F;
}

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
    Error {
        code: u16,
        message: String,
    },
    Bye,
}

/// The largest body allowed for a frame type; unknown types are refused.
pub fn max_body(ty: u8) -> Result<usize> {
    match ty {
        ty::DATA => Ok(MAX_DATA_BODY),
        ty::HELLO
        | ty::WELCOME
        | ty::AUTH
        | ty::AUTH_OK
        | ty::LIST
        | ty::ENTRY
        | ty::LIST_END
        | ty::PUT
        | ty::PUT_READY
        | ty::END
        | ty::PUT_OK
        | ty::CANCEL
        | ty::GET
        | ty::GET_OK
        | ty::REMOVE
        | ty::DONE
        | ty::MKDIR
        | ty::RMDIR
        | ty::STAT
        | ty::SHUTDOWN
        | ty::STATUS
        | ty::STATUS_OK
        | ty::RELOAD
        | ty::USAGE
        | ty::USAGE_OK
        | ty::ERROR
        | ty::BYE => Ok(MAX_CONTROL_BODY),
        other => Err(Error::protocol(format!("unknown frame type 0x{other:02x}"))),
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
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A string or byte string: u16 length then the bytes (truncated to fit).
    fn str(&mut self, v: &[u8]) {
        let n = v.len().min(u16::MAX as usize);
        self.u16(n as u16);
        self.bytes(&v[..n]);
    }
    fn digest(&mut self, d: &Option<[u8; 32]>) {
        match d {
            Some(d) => {
                self.u8(1);
                self.bytes(d);
            }
            None => {
                self.u8(0);
                self.bytes(&[0; 32]);
            }
        }
    }
}

impl Msg {
    pub fn type_code(&self) -> u8 {
        match self {
            Msg::Hello { .. } => ty::HELLO,
            Msg::Welcome { .. } => ty::WELCOME,
            Msg::Auth { .. } => ty::AUTH,
            Msg::AuthOk { .. } => ty::AUTH_OK,
            Msg::List { .. } => ty::LIST,
            Msg::Entry(_) => ty::ENTRY,
            Msg::ListEnd => ty::LIST_END,
            Msg::Put { .. } => ty::PUT,
            Msg::PutReady { .. } => ty::PUT_READY,
            Msg::Data { .. } => ty::DATA,
            Msg::End { .. } => ty::END,
            Msg::PutOk { .. } => ty::PUT_OK,
            Msg::Cancel => ty::CANCEL,
            Msg::Get { .. } => ty::GET,
            Msg::GetOk { .. } => ty::GET_OK,
            Msg::Remove { .. } => ty::REMOVE,
            Msg::Done => ty::DONE,
            Msg::Mkdir { .. } => ty::MKDIR,
            Msg::Rmdir { .. } => ty::RMDIR,
            Msg::Stat { .. } => ty::STAT,
            Msg::Shutdown { .. } => ty::SHUTDOWN,
            Msg::StatusReq => ty::STATUS,
            Msg::StatusOk(_) => ty::STATUS_OK,
            Msg::Reload => ty::RELOAD,
            Msg::UsageReq => ty::USAGE,
            Msg::UsageOk(_) => ty::USAGE_OK,
            Msg::Error { .. } => ty::ERROR,
            Msg::Bye => ty::BYE,
        }
    }

    /// A short name for messages and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "HELLO",
            Msg::Welcome { .. } => "WELCOME",
            Msg::Auth { .. } => "AUTH",
            Msg::AuthOk { .. } => "AUTH_OK",
            Msg::List { .. } => "LIST",
            Msg::Entry(_) => "ENTRY",
            Msg::ListEnd => "LIST_END",
            Msg::Put { .. } => "PUT",
            Msg::PutReady { .. } => "PUT_READY",
            Msg::Data { .. } => "DATA",
            Msg::End { .. } => "END",
            Msg::PutOk { .. } => "PUT_OK",
            Msg::Cancel => "CANCEL",
            Msg::Get { .. } => "GET",
            Msg::GetOk { .. } => "GET_OK",
            Msg::Remove { .. } => "REMOVE",
            Msg::Done => "DONE",
            Msg::Mkdir { .. } => "MKDIR",
            Msg::Rmdir { .. } => "RMDIR",
            Msg::Stat { .. } => "STAT",
            Msg::Shutdown { .. } => "SHUTDOWN",
            Msg::StatusReq => "STATUS",
            Msg::StatusOk(_) => "STATUS_OK",
            Msg::Reload => "RELOAD",
            Msg::UsageReq => "USAGE",
            Msg::UsageOk(_) => "USAGE_OK",
            Msg::Error { .. } => "ERROR",
            Msg::Bye => "BYE",
        }
    }

    /// Append the whole frame (header and body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[self.type_code(), 0, 0, 0, 0]);
        let mut w = Writer(out);
        match self {
            Msg::Hello {
                min_version,
                max_version,
                features,
            } => {
                w.bytes(&MAGIC);
                w.u16(*min_version);
                w.u16(*max_version);
                w.u32(*features);
            }
            Msg::Welcome {
                version,
                features,
                max_block,
            } => {
                w.u16(*version);
                w.u32(*features);
                w.u32(*max_block);
            }
            Msg::Auth { secret } => {
                w.u8(1);
                w.str(secret);
            }
            Msg::AuthOk { role, user } => {
                w.u8(*role as u8);
                w.str(user.as_bytes());
            }
            Msg::List { path } => w.str(path.as_bytes()),
            Msg::Entry(e) => {
                w.u8(e.kind as u8);
                w.u64(e.size);
                w.i64(e.mtime_ns);
                w.digest(&e.sha256);
                w.str(e.name.as_bytes());
                w.str(e.owner.as_bytes());
            }
            Msg::ListEnd
            | Msg::Cancel
            | Msg::Done
            | Msg::Bye
            | Msg::StatusReq
            | Msg::Reload
            | Msg::UsageReq => {}
            Msg::UsageOk(u) => {
                w.u64(u.disk_free);
                w.u64(u.min_free);
                let rows = &u.rows[..u.rows.len().min(MAX_USAGE_ROWS)];
                w.u16(rows.len() as u16);
                for r in rows {
                    w.str(truncate_utf8(&r.name, 64).as_bytes());
                    w.u64(r.bytes);
                    w.u64(r.reserved);
                    w.u64(r.files);
                    w.u64(r.quota);
                    w.u64(r.max_files);
                }
            }
            Msg::Shutdown { grace_ms } => w.u64(*grace_ms),
            Msg::StatusOk(st) => {
                w.u64(st.uptime_s);
                w.u32(st.connections);
                w.u32(st.transfers);
                w.u64(st.bytes_in);
                w.u64(st.bytes_out);
                w.u64(st.storage_bytes);
                w.u64(st.files);
            }
            Msg::Put { size, flags, name } => {
                w.u64(*size);
                w.u32(*flags);
                w.str(name.as_bytes());
            }
            Msg::PutReady { offset } => w.u64(*offset),
            Msg::Data {
                encoding,
                raw_len,
                payload,
            } => {
                w.u8(*encoding as u8);
                w.u32(*raw_len);
                w.bytes(payload);
            }
            Msg::End { sha256 } => w.bytes(sha256),
            Msg::PutOk { size, sha256, name } => {
                w.u64(*size);
                w.bytes(sha256);
                w.str(name.as_bytes());
            }
            Msg::Get {
                offset,
                compress,
                name,
            } => {
                w.u64(*offset);
                w.u8(*compress);
                w.str(name.as_bytes());
            }
            Msg::GetOk {
                size,
                mtime_ns,
                sha256,
            } => {
                w.u64(*size);
                w.i64(*mtime_ns);
                w.digest(sha256);
            }
            Msg::Remove { name }
            | Msg::Mkdir { name }
            | Msg::Rmdir { name }
            | Msg::Stat { name } => w.str(name.as_bytes()),
            Msg::Error { code, message } => {
                w.u16(*code);
                // keep error text well inside the control-frame limit
                let m = truncate_utf8(message, 4096);
                w.str(m.as_bytes());
            }
        }
        let body = (out.len() - start - HEADER_LEN) as u32;
        out[start + 1..start + 5].copy_from_slice(&body.to_be_bytes());
    }

    /// Decode the body of a frame of type `ty` (its length already checked).
    pub fn decode(ty: u8, body: Bytes) -> Result<Msg> {
        let mut r = Reader { b: body, ty };
        let msg = match ty {
            ty::HELLO => {
                let magic = r.array::<4>()?;
                if magic != MAGIC {
                    return Err(Error::protocol(
                        "HELLO does not start with the sft magic bytes; is this an sft client?",
                    ));
                }
                Msg::Hello {
                    min_version: r.u16()?,
                    max_version: r.u16()?,
                    features: r.u32()?,
                }
            }
            ty::WELCOME => Msg::Welcome {
                version: r.u16()?,
                features: r.u32()?,
                max_block: r.u32()?,
            },
            ty::AUTH => {
                let method = r.u8()?;
                if method != 1 {
                    return Err(Error::protocol(format!(
                        "unknown authentication method {method}"
                    )));
                }
                let secret = r.bytes_u16()?;
                if secret.len() > MAX_SECRET {
                    return Err(Error::protocol(format!(
                        "token longer than {MAX_SECRET} bytes"
                    )));
                }
                Msg::Auth {
                    secret: secret.to_vec(),
                }
            }
            ty::AUTH_OK => {
                let role = match r.u8()? {
                    0 => Role::Read,
                    1 => Role::Write,
                    2 => Role::Admin,
                    other => return Err(Error::protocol(format!("unknown role {other}"))),
                };
                Msg::AuthOk {
                    role,
                    user: r.string()?,
                }
            }
            ty::LIST => Msg::List { path: r.string()? },
            ty::ENTRY => {
                let kind = match r.u8()? {
                    1 => EntryKind::File,
                    2 => EntryKind::Dir,
                    other => return Err(Error::protocol(format!("unknown entry kind {other}"))),
                };
                Msg::Entry(Entry {
                    kind,
                    size: r.u64()?,
                    mtime_ns: r.i64()?,
                    sha256: r.digest()?,
                    name: r.string()?,
                    owner: r.string()?,
                })
            }
            ty::LIST_END => Msg::ListEnd,
            ty::PUT => Msg::Put {
                size: r.u64()?,
                flags: r.u32()?,
                name: r.string()?,
            },
            ty::PUT_READY => Msg::PutReady { offset: r.u64()? },
            ty::DATA => {
                let encoding = match r.u8()? {
                    0 => Encoding::Raw,
                    1 => Encoding::Zstd,
                    other => return Err(Error::protocol(format!("unknown DATA encoding {other}"))),
                };
                let raw_len = r.u32()?;
                if raw_len as usize > MAX_BLOCK {
                    return Err(Error::protocol(format!(
                        "DATA block declares {raw_len} raw bytes, more than the limit of {MAX_BLOCK}"
                    )));
                }
                let payload = r.rest();
                if encoding == Encoding::Raw && payload.len() != raw_len as usize {
                    return Err(Error::protocol(
                        "raw DATA block length does not match its payload",
                    ));
                }
                return Ok(Msg::Data {
                    encoding,
                    raw_len,
                    payload,
                });
            }
            ty::END => Msg::End {
                sha256: r.array::<32>()?,
            },
            ty::PUT_OK => Msg::PutOk {
                size: r.u64()?,
                sha256: r.array::<32>()?,
                name: r.string()?,
            },
            ty::CANCEL => Msg::Cancel,
            ty::GET => Msg::Get {
                offset: r.u64()?,
                compress: r.u8()?,
                name: r.string()?,
            },
            ty::GET_OK => Msg::GetOk {
                size: r.u64()?,
                mtime_ns: r.i64()?,
                sha256: r.digest()?,
            },
            ty::REMOVE => Msg::Remove { name: r.string()? },
            ty::DONE => Msg::Done,
            ty::MKDIR => Msg::Mkdir { name: r.string()? },
            ty::RMDIR => Msg::Rmdir { name: r.string()? },
            ty::STAT => Msg::Stat { name: r.string()? },
            ty::SHUTDOWN => Msg::Shutdown { grace_ms: r.u64()? },
            ty::STATUS => Msg::StatusReq,
            ty::STATUS_OK => Msg::StatusOk(Status {
                uptime_s: r.u64()?,
                connections: r.u32()?,
                transfers: r.u32()?,
                bytes_in: r.u64()?,
                bytes_out: r.u64()?,
                storage_bytes: r.u64()?,
                files: r.u64()?,
            }),
            ty::RELOAD => Msg::Reload,
            ty::USAGE => Msg::UsageReq,
            ty::USAGE_OK => {
                let disk_free = r.u64()?;
                let min_free = r.u64()?;
                let n = r.u16()? as usize;
                if n > MAX_USAGE_ROWS {
                    return Err(Error::protocol(format!(
                        "USAGE_OK with {n} rows, more than the limit of {MAX_USAGE_ROWS}"
                    )));
                }
                let mut rows = Vec::with_capacity(n);
                for _ in 0..n {
                    rows.push(UsageRow {
                        name: r.string()?,
                        bytes: r.u64()?,
                        reserved: r.u64()?,
                        files: r.u64()?,
                        quota: r.u64()?,
                        max_files: r.u64()?,
                    });
                }
                Msg::UsageOk(Usage {
                    disk_free,
                    min_free,
                    rows,
                })
            }
            ty::ERROR => Msg::Error {
                code: r.u16()?,
                message: String::from_utf8_lossy(&r.bytes_u16()?).into_owned(),
            },
            ty::BYE => Msg::Bye,
            other => return Err(Error::protocol(format!("unknown frame type 0x{other:02x}"))),
        };
        r.finish()?;
        Ok(msg)
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
    fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.b.get_u32())
    }
    fn u64(&mut self) -> Result<u64> {
        self.need(8)?;
        Ok(self.b.get_u64())
    }
    fn i64(&mut self) -> Result<i64> {
        self.need(8)?;
        Ok(self.b.get_i64())
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

    #[test]
    fn every_message_round_trips() {
        let d = Some([7u8; 32]);
        for m in [
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
            }),
            Msg::Entry(Entry {
                kind: EntryKind::Dir,
                size: 0,
                mtime_ns: 0,
                sha256: None,
                name: "dir".into(),
                owner: String::new(),
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
        ] {
            round_trip(m);
        }
    }

    /// These bytes are the examples in PROTOCOL.md; change both together.
    #[test]
    fn golden_bytes_match_protocol_md() {
        let mut b = Vec::new();
        Msg::Hello {
            min_version: 1,
            max_version: 1,
            features: 1,
        }
        .encode(&mut b);
        assert_eq!(
            hex::encode(&b),
            "010000000c5346543100010001 00000001".replace(' ', "")
        );
        b.clear();
        Msg::Put {
            size: 5,
            flags: 0,
            name: "a.txt".into(),
        }
        .encode(&mut b);
        assert_eq!(
            hex::encode(&b),
            "2000000013000000000000000500000000000561 2e747874".replace(' ', "")
        );
        b.clear();
        Msg::Error {
            code: 6,
            message: "nope".into(),
        }
        .encode(&mut b);
        assert_eq!(
            hex::encode(&b),
            "7e000000080006 00046e6f7065".replace(' ', "")
        );
        assert_eq!(
            hex::encode(data_header(Encoding::Raw, 3, 3)),
            "22000000080000000003"
        );
        assert_eq!(
            hex::encode(data_header(Encoding::Zstd, 1 << 20, 1234)),
            "22000004d70100100000"
        );
        b.clear();
        Msg::Get {
            offset: 0,
            compress: 255,
            name: "a.txt".into(),
        }
        .encode(&mut b);
        assert_eq!(
            hex::encode(&b),
            "300000001000000000000000 00ff0005612e747874".replace(' ', "")
        );
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
