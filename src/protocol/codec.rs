//! How each kind of field travels: written into a body, read back from one,
//! every length checked before anything is allocated.

use bytes::{Buf, Bytes};

use super::{
    Encoding, Entry, EntryKind, MAGIC, MAX_SECRET, MAX_USAGE_ROWS, Role, ShareInfo, Status, Usage,
    UsageRow,
};
use crate::error::{Error, Result};

pub(super) struct Writer<'a>(pub(super) &'a mut Vec<u8>);

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
pub(super) trait Codec {
    type T;
    fn put(v: &Self::T, w: &mut Writer);
    fn get(r: &mut Reader) -> Result<Self::T>;
}

macro_rules! int_codec {
    ($($c:ident $t:ty),*) => {$(
        pub(super) struct $c;
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
pub(super) struct Str;
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
pub(super) struct Message;
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
pub(super) struct Digest;
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
pub(super) struct MaybeDigest;
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
pub(super) struct Rest;
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
pub(super) struct Magic;
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
pub(super) struct TokenMethod;
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
pub(super) struct Secret;
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

pub(super) struct RoleByte;
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
pub(super) struct EncodingByte;
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
pub(super) struct EntryBody;
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
pub(super) struct ShareBody;
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

pub(super) struct StatusBody;
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
pub(super) struct UsageBody;
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

pub(super) struct Reader {
    pub(super) b: Bytes,
    pub(super) ty: u8,
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
    pub(super) fn finish(&self) -> Result<()> {
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
