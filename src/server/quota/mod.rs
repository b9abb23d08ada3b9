//! Storage accounting: usage = committed + reserved, for the server and per
//! user. An upload reserves its size before the first data byte is accepted
//! and is refused at once when that does not fit; the reservation is released
//! on every path that ends the upload (it is dropped) or turned into
//! committed usage when the file becomes visible. No check-then-write: the
//! check and the reservation happen under one lock, so concurrent uploads can
//! never together exceed a limit. No I/O here: free disk space is passed in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::store::Existing;
use crate::error::{Error, Kind, Result};
use crate::protocol::{Usage as WireUsage, UsageRow};
use crate::units::human;

/// Server-wide limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Most bytes stored in all.
    pub quota: Option<u64>,
    /// Most files stored in all.
    pub max_files: Option<u64>,
    /// Space an upload must leave free on the filesystem.
    pub min_free: u64,
}

/// Committed and reserved bytes and files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
    pub reserved_bytes: u64,
    pub reserved_files: u64,
}

impl Usage {
    fn used_bytes(&self) -> u64 {
        self.bytes.saturating_add(self.reserved_bytes)
    }
    fn used_files(&self) -> u64 {
        self.files.saturating_add(self.reserved_files)
    }
}

#[derive(Debug, Default)]
struct State {
    total: Usage,
    users: HashMap<String, Usage>,
    /// Bytes reserved on the disk (full upload sizes) for the free-space check.
    disk_reserved: u64,
}

/// What an upload asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub user: String,
    /// The user's own limits (from the users file).
    pub user_quota: Option<u64>,
    pub user_max_files: Option<u64>,
    /// Bytes counted against quotas: the size, or for an overwrite of the
    /// user's own file the growth over the old size.
    pub bytes: u64,
    /// Files counted against file limits: 0 for an overwrite, else 1.
    pub files: u64,
    /// Bytes the disk must hold while the upload runs (the full size).
    pub disk_bytes: u64,
}

/// A book shared by several servers (`server::object::ledger`, on an
/// object store): each reservation is decided against what all of them
/// reserved and stored, and recorded there, so together they never exceed a
/// limit. The local `State` is then unused.
pub trait Remote: Send + Sync {
    /// Ask `decide` (given the total and the user's usage) how many bytes to
    /// hold, and record that; the reservation's id and bytes.
    fn reserve(
        &self,
        user: &str,
        files: u64,
        decide: &dyn Fn(&Usage, &Usage) -> Result<u64>,
    ) -> Result<(u64, u64)>;
    /// Reservations `ids` became a stored file of `bytes` owned by `user`,
    /// replacing `replaced` if any.
    fn settle(&self, ids: Vec<u64>, user: &str, bytes: u64, replaced: Option<&Existing>);
    /// Reservations `ids` ended without a file (may return before it is
    /// recorded: it is called from `Drop`).
    fn release(&self, ids: Vec<u64>);
    fn removed(&self, owner: &str, bytes: u64);
    /// The total and per-user usage now.
    fn usage(&self) -> (Usage, HashMap<String, Usage>);
}

/// The accounting book.
pub struct Ledger {
    limits: Limits,
    state: Mutex<State>,
    remote: Option<Arc<dyn Remote>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("limits", &self.limits)
            .field("shared", &self.remote.is_some())
            .finish()
    }
}

/// Space held for one upload; released when dropped unless committed.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    user: String,
    user_quota: Option<u64>,
    user_max_files: Option<u64>,
    bytes: u64,
    files: u64,
    disk_bytes: u64,
    /// Its entries in a shared book (`Remote`), if any.
    ids: Vec<u64>,
}

fn left(limit: u64, used: u64) -> u64 {
    limit.saturating_sub(used)
}

impl Ledger {
    /// A ledger starting from what is on disk: (owner, bytes, files) per
    /// owner, "" for files nobody uploaded through sft.
    pub fn new(limits: Limits, on_disk: impl IntoIterator<Item = (String, u64, u64)>) -> Ledger {
        let mut st = State::default();
        for (owner, bytes, files) in on_disk {
            st.total.bytes += bytes;
            st.total.files += files;
            let u = st.users.entry(owner).or_default();
            u.bytes += bytes;
            u.files += files;
        }
        Ledger {
            limits,
            state: Mutex::new(st),
            remote: None,
        }
    }

    /// A ledger kept in a book shared with other servers.
    pub fn shared(limits: Limits, remote: Arc<dyn Remote>) -> Ledger {
        Ledger {
            limits,
            state: Mutex::new(State::default()),
            remote: Some(remote),
        }
    }

    /// The state to decide on for a shared book: its usage now.
    fn snapshot(user: &str, total: &Usage, mine: &Usage) -> State {
        State {
            total: *total,
            users: HashMap::from([(user.to_string(), *mine)]),
            disk_reserved: 0,
        }
    }

    /// Reserve in the shared book: `req` as it is (`up_to` false) or up to
    /// what is left.
    fn reserve_remote(
        self: &Arc<Self>,
        remote: &Arc<dyn Remote>,
        req: &Request,
        up_to: bool,
    ) -> Result<Reservation> {
        let decide = |total: &Usage, mine: &Usage| -> Result<u64> {
            let mut st = Self::snapshot(&req.user, total, mine);
            let bytes = if up_to {
                let (left, _) = self.room(&st, &req.user, req.user_quota, None);
                req.bytes.min(left)
            } else {
                req.bytes
            };
            let r = Request {
                bytes,
                disk_bytes: bytes,
                ..req.clone()
            };
            self.check_and_add(&mut st, &r, None)?;
            Ok(bytes)
        };
        let (id, bytes) = remote.reserve(&req.user, req.files, &decide)?;
        let mut held = self.held(&Request {
            bytes,
            disk_bytes: 0,
            ..req.clone()
        });
        held.ids.push(id);
        Ok(held)
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // a panic while holding the lock cannot leave the numbers half-updated
        // (every update is a few additions), so a poisoned lock is still usable
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reservation `req` describes, once it was added under the lock.
    fn held(self: &Arc<Self>, req: &Request) -> Reservation {
        Reservation {
            ledger: self.clone(),
            user: req.user.clone(),
            user_quota: req.user_quota,
            user_max_files: req.user_max_files,
            bytes: req.bytes,
            files: req.files,
            disk_bytes: req.disk_bytes,
            ids: Vec::new(),
        }
    }

    /// Reserve space for an upload, or refuse it (exit 7) saying why.
    /// `disk_free` is the filesystem's free space now, if known.
    pub fn reserve(self: &Arc<Self>, req: &Request, disk_free: Option<u64>) -> Result<Reservation> {
        if let Some(remote) = &self.remote {
            return self.reserve_remote(remote, req, false);
        }
        let mut st = self.lock();
        self.check_and_add(&mut st, req, disk_free)?;
        Ok(self.held(req))
    }

    /// Reserve for an upload of unknown size (a stream): up to `req.bytes`
    /// (its first step), but no more than what is left, so that a stream can
    /// use the last bytes of a quota or of the disk. Refused only when not
    /// even a new file fits (a file limit); a stream then grows its
    /// reservation as data arrives and is stopped when the data itself does
    /// not fit.
    pub fn reserve_up_to(
        self: &Arc<Self>,
        req: &Request,
        disk_free: Option<u64>,
    ) -> Result<Reservation> {
        if let Some(remote) = &self.remote {
            return self.reserve_remote(remote, req, true);
        }
        let mut st = self.lock();
        let (bytes_left, disk_left) = self.room(&st, &req.user, req.user_quota, disk_free);
        // quota and disk are held alike, so that growing checks both
        let first = req.bytes.min(bytes_left).min(disk_left);
        let req = Request {
            bytes: first,
            disk_bytes: first,
            ..req.clone()
        };
        self.check_and_add(&mut st, &req, disk_free)?;
        Ok(self.held(&req))
    }

    /// What `user` may still reserve: (bytes under the quotas, bytes on the
    /// disk above the space that must stay free).
    fn room(
        &self,
        st: &State,
        user: &str,
        user_quota: Option<u64>,
        disk_free: Option<u64>,
    ) -> (u64, u64) {
        let mut bytes = u64::MAX;
        if let Some(q) = self.limits.quota {
            bytes = bytes.min(left(q, st.total.used_bytes()));
        }
        if let Some(q) = user_quota {
            let mine = st.users.get(user).copied().unwrap_or_default();
            bytes = bytes.min(left(q, mine.used_bytes()));
        }
        let disk = disk_free.map_or(u64::MAX, |free| {
            free.saturating_sub(st.disk_reserved)
                .saturating_sub(self.limits.min_free)
        });
        (bytes, disk)
    }

    /// Check a request against every limit and hold it, under the lock.
    fn check_and_add(&self, st: &mut State, req: &Request, disk_free: Option<u64>) -> Result<()> {
        let space = |m: String| Error::new(Kind::Space, m);
        if let Some(q) = self.limits.quota
            && st.total.used_bytes().saturating_add(req.bytes) > q
        {
            return Err(space(format!(
                "quota exceeded: this upload needs {}, {} of {} left (server)",
                human(req.bytes),
                human(left(q, st.total.used_bytes())),
                human(q)
            )));
        }
        if let Some(m) = self.limits.max_files
            && st.total.used_files().saturating_add(req.files) > m
        {
            return Err(space(format!(
                "file limit reached: the server holds {} of its {m} files; remove some first",
                st.total.used_files()
            )));
        }
        let mine = st.users.get(&req.user).copied().unwrap_or_default();
        if let Some(q) = req.user_quota
            && mine.used_bytes().saturating_add(req.bytes) > q
        {
            return Err(space(format!(
                "quota exceeded: this upload needs {}, {} of {} left (user {})",
                human(req.bytes),
                human(left(q, mine.used_bytes())),
                human(q),
                req.user
            )));
        }
        if let Some(m) = req.user_max_files
            && mine.used_files().saturating_add(req.files) > m
        {
            return Err(space(format!(
                "file limit reached: user {} has {} of {m} files; remove some first",
                req.user,
                mine.used_files()
            )));
        }
        if let Some(free) = disk_free {
            let after = free
                .saturating_sub(st.disk_reserved)
                .checked_sub(req.disk_bytes);
            if after.is_none_or(|a| a < self.limits.min_free) {
                return Err(space(format!(
                    "not enough free space on the server: this upload needs {}, {} is free and {} must stay free",
                    human(req.disk_bytes),
                    human(free.saturating_sub(st.disk_reserved)),
                    human(self.limits.min_free)
                )));
            }
        }
        st.total.reserved_bytes += req.bytes;
        st.total.reserved_files += req.files;
        let u = st.users.entry(req.user.clone()).or_default();
        u.reserved_bytes += req.bytes;
        u.reserved_files += req.files;
        st.disk_reserved += req.disk_bytes;
        Ok(())
    }

    /// A file was removed (or replaced): its space is free at once.
    pub fn removed(&self, owner: &str, bytes: u64) {
        if let Some(remote) = &self.remote {
            return remote.removed(owner, bytes);
        }
        let mut st = self.lock();
        st.total.bytes = st.total.bytes.saturating_sub(bytes);
        st.total.files = st.total.files.saturating_sub(1);
        let u = st.users.entry(owner.to_string()).or_default();
        u.bytes = u.bytes.saturating_sub(bytes);
        u.files = u.files.saturating_sub(1);
    }

    /// The usage of one user ("" for the server's total).
    pub fn usage(&self, user: &str) -> Usage {
        if let Some(remote) = &self.remote {
            let (total, users) = remote.usage();
            return if user.is_empty() {
                total
            } else {
                users.get(user).copied().unwrap_or_default()
            };
        }
        let st = self.lock();
        if user.is_empty() {
            st.total
        } else {
            st.users.get(user).copied().unwrap_or_default()
        }
    }

    /// Rows for `sft df`: the total first (name ""), then each user.
    pub fn report(
        &self,
        users: &[(String, Option<u64>, Option<u64>)],
        all: bool,
        disk_free: u64,
    ) -> WireUsage {
        let shared;
        let local;
        let st: &State = match &self.remote {
            Some(remote) => {
                let (total, users) = remote.usage();
                shared = State {
                    total,
                    users,
                    disk_reserved: 0,
                };
                &shared
            }
            None => {
                local = self.lock();
                &local
            }
        };
        let none = u64::MAX;
        let row = |name: &str, u: &Usage, q: Option<u64>, m: Option<u64>| UsageRow {
            name: name.to_string(),
            bytes: u.bytes,
            reserved: u.reserved_bytes,
            files: u.files,
            quota: q.unwrap_or(none),
            max_files: m.unwrap_or(none),
        };
        let mut rows = Vec::new();
        if all {
            rows.push(row("", &st.total, self.limits.quota, self.limits.max_files));
        }
        for (name, q, m) in users {
            let u = st.users.get(name).copied().unwrap_or_default();
            rows.push(row(name, &u, *q, *m));
        }
        if all {
            // owners that are no longer users, and files placed by hand
            let mut others: Vec<_> = st
                .users
                .iter()
                .filter(|(n, u)| !users.iter().any(|(x, ..)| x == *n) && u.used_files() > 0)
                .collect();
            others.sort_by(|a, b| a.0.cmp(b.0));
            for (n, u) in others {
                let shown = if n.is_empty() { "(no owner)" } else { n };
                rows.push(row(shown, u, None, None));
            }
        }
        WireUsage {
            disk_free,
            min_free: self.limits.min_free,
            rows,
        }
    }
}

impl Reservation {
    /// Hold `bytes` more (an upload of unknown size growing past what it
    /// reserved), or refuse like `reserve` does.
    pub fn grow(&mut self, bytes: u64, disk_free: Option<u64>) -> Result<()> {
        let req = Request {
            user: self.user.clone(),
            user_quota: self.user_quota,
            user_max_files: self.user_max_files,
            bytes,
            files: 0,
            disk_bytes: bytes,
        };
        let ledger = self.ledger.clone();
        if let Some(remote) = &ledger.remote {
            let more = ledger.reserve_remote(remote, &req, false)?;
            self.bytes += more.bytes;
            self.ids.extend(more.ids.iter().copied());
            // the entries now belong to this reservation
            let mut more = more;
            more.ids.clear();
            more.bytes = 0;
            more.files = 0;
            return Ok(());
        }
        let mut st = ledger.lock();
        ledger.check_and_add(&mut st, &req, disk_free)?;
        self.bytes += bytes;
        self.disk_bytes += bytes;
        Ok(())
    }

    /// Bytes held so far.
    pub fn held(&self) -> u64 {
        self.bytes
    }

    /// Its entries in a shared book (empty with a local one): recorded with
    /// the file, so that a server which dies before `commit` records it
    /// leaves it counted (`server::object::book::resolve`).
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The upload became a visible file of `size` bytes owned by the
    /// reserving user, replacing `replaced` if it overwrote one.
    pub fn commit(mut self, size: u64, replaced: Option<&Existing>) {
        let ledger = self.ledger.clone();
        if let Some(remote) = &ledger.remote {
            remote.settle(std::mem::take(&mut self.ids), &self.user, size, replaced);
            self.bytes = 0;
            self.files = 0;
            self.disk_bytes = 0;
            return;
        }
        let mut st = ledger.lock();
        self.release(&mut st);
        st.total.bytes += size;
        st.total.files += 1;
        let u = st.users.entry(self.user.clone()).or_default();
        u.bytes += size;
        u.files += 1;
        drop(st);
        if let Some(old) = replaced {
            ledger.removed(&old.owner, old.size);
        }
        // released already: make Drop a no-op
        self.bytes = 0;
        self.files = 0;
        self.disk_bytes = 0;
    }

    fn release(&self, st: &mut State) {
        st.total.reserved_bytes = st.total.reserved_bytes.saturating_sub(self.bytes);
        st.total.reserved_files = st.total.reserved_files.saturating_sub(self.files);
        st.disk_reserved = st.disk_reserved.saturating_sub(self.disk_bytes);
        if let Some(u) = st.users.get_mut(&self.user) {
            u.reserved_bytes = u.reserved_bytes.saturating_sub(self.bytes);
            u.reserved_files = u.reserved_files.saturating_sub(self.files);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.ids.is_empty()
            && let Some(remote) = &self.ledger.remote
        {
            remote.release(std::mem::take(&mut self.ids));
            return;
        }
        if self.bytes == 0 && self.files == 0 && self.disk_bytes == 0 {
            return;
        }
        let ledger = self.ledger.clone();
        let mut st = ledger.lock();
        self.release(&mut st);
    }
}

#[cfg(test)]
mod tests;
