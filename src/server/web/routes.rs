//! What the web side answers: `/s/TOKEN` (a page), `/s/TOKEN/NAME` (a
//! download, or beneath a shared directory a file or `DIR/` listing), the
//! style sheet, and 404 for everything else. A dead or unknown token is 404
//! too, whatever the reason. Paths are decoded segment by segment and `.`,
//! `..`, empty segments and encoded slashes are refused before the store
//! (which resolves beneath the root without following symbolic links) sees
//! them.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::page;
use super::{Body, Conn};
use crate::error::{Error, Kind};
use crate::names;
use crate::protocol::{Entry, EntryKind};
use crate::server::share::Share;

/// Bytes read from disk at a time for a download.
const CHUNK: usize = 128 * 1024;

pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub async fn handle(c: &Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    if !c.admit() {
        let max = c.shared.limits.max_connections;
        if let Some(held) = c.shared.busy_log.ready() {
            warn!(event = "refused", peer = %c.peer, held_back = held, "refused HTTP: server busy ({max} sessions)");
        }
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy; try again later\n",
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    }
    if req.uri().path().starts_with("/browse") {
        let head = req.method() == Method::HEAD;
        let mut resp = super::browse::handle(c, req).await;
        if head {
            *resp.body_mut() = Body::empty();
        }
        return resp;
    }
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let path = req.uri().path().to_string();
    let mut resp = route(c, &path, req.headers(), head).await;
    if head {
        *resp.body_mut() = Body::empty();
    }
    resp
}

async fn route(c: &Arc<Conn>, path: &str, h: &HeaderMap, head: bool) -> Response<Body> {
    if path == "/.sft/style.css" {
        let mut r = Response::new(Body::full(page::CSS));
        set(&mut r, header::CONTENT_TYPE, "text/css; charset=utf-8");
        set(&mut r, header::CACHE_CONTROL, "public, max-age=3600");
        set(&mut r, header::CONTENT_LENGTH, &page::CSS.len().to_string());
        common(&mut r);
        return r;
    }
    let Some(rest) = path.strip_prefix("/s/") else {
        return not_found();
    };
    let (token, sub) = match rest.split_once('/') {
        Some((t, s)) => (t, Some(s)),
        None => (rest, None),
    };
    let shared = &c.shared;
    let Some(share) = shared.shares.find(token) else {
        return not_found();
    };
    // a link dies with the account of its maker
    if shared.accounts.current(&share.user).is_none() {
        return not_found();
    }
    let Some(segs) = sub.map(decode_path).unwrap_or(Some(Vec::new())) else {
        return not_found();
    };
    let listing = sub.is_none_or(|s| s.is_empty() || s.ends_with('/'));
    if !share.dir {
        let base = names::split_parent(&share.path).1;
        return match (sub, segs.as_slice()) {
            (None, _) | (Some(""), _) => file_page(c, &share, token).await,
            (Some(_), [one]) if one == base => {
                download(c, &share, share.path.clone(), h, head).await
            }
            _ => not_found(),
        };
    }
    let rel = if segs.is_empty() {
        share.path.clone()
    } else {
        format!("{}/{}", share.path, segs.join("/"))
    };
    if listing {
        dir_page(c, &share, token, segs, rel).await
    } else {
        download(c, &share, rel, h, head).await
    }
}

/// Percent-decode a path below a token into its segments (a trailing `/`
/// ends the last one); None for anything that could name another place.
pub fn decode_path(s: &str) -> Option<Vec<String>> {
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for raw in s.split('/') {
        let bytes = percent_decode(raw)?;
        let seg = String::from_utf8(bytes).ok()?;
        if seg.is_empty()
            || seg == "."
            || seg == ".."
            || seg.contains(['/', '\\', '\0'])
            || names::validate(&seg).is_err()
        {
            return None;
        }
        out.push(seg);
    }
    Some(out)
}

pub(super) fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A byte range asked for, resolved against the file's size.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    Full,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// Parse a `Range` header (one range; several are answered with the whole
/// file, as RFC 9110 allows; anything unparsable is unsatisfiable).
pub fn parse_range(h: Option<&str>, size: u64) -> Range {
    let Some(h) = h else {
        return Range::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Range::Unsatisfiable;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Unsatisfiable;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), num(a), num(b)) {
        (true, _, Some(n)) if n > 0 && size > 0 => Range::Part(size.saturating_sub(n), size - 1),
        (false, Some(start), None) if b.is_empty() && start < size => Range::Part(start, size - 1),
        (false, Some(start), Some(end)) if start <= end && start < size => {
            Range::Part(start, end.min(size - 1))
        }
        _ => Range::Unsatisfiable,
    }
}

/// `attachment` with an ASCII fallback and the real name (RFC 6266/8187).
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encode(name)
    )
}

/// A file's entry and digest (computed if none is recorded).
async fn file_facts(c: &Arc<Conn>, rel: String) -> crate::error::Result<(Entry, [u8; 32])> {
    let shared = c.shared.clone();
    tokio::task::spawn_blocking(move || {
        let e = shared.store.stat(&rel)?;
        if e.kind != EntryKind::File {
            return Err(Error::not_found("not a file"));
        }
        let d = match e.sha256 {
            Some(d) => d,
            None => super::digest_of(&shared.store, &rel)?.1,
        };
        Ok((e, d))
    })
    .await
    .map_err(|e| Error::other(format!("internal error: {e}")))?
}

fn quiet_refusal(c: &Conn, share: &Share, rel: &str, e: &Error) {
    if e.kind == Kind::NotFound {
        info!(event = "share", action = "use", peer = %c.peer, id = %share.id, name = %names::escape(rel), outcome = "not_found", "{e}");
    } else {
        warn!(event = "share", action = "use", peer = %c.peer, id = %share.id, name = %names::escape(rel), outcome = e.kind.name(), "{e}");
    }
}

/// A file share's digest must still be the file's.
fn still_same(share: &Share, d: &[u8; 32]) -> bool {
    share.dir || share.sha256.as_deref() == Some(hex::encode(d).as_str())
}

async fn file_page(c: &Arc<Conn>, share: &Share, token: &str) -> Response<Body> {
    let (e, d) = match file_facts(c, share.path.clone()).await {
        Ok(v) => v,
        Err(e) => {
            quiet_refusal(c, share, &share.path, &e);
            return not_found();
        }
    };
    if !still_same(share, &d) {
        info!(event = "share", action = "use", peer = %c.peer, id = %share.id, outcome = "changed", "the shared file changed since it was shared; the link is dead");
        return not_found();
    }
    html(page::file(share, token, &e, &d))
}

async fn dir_page(
    c: &Arc<Conn>,
    share: &Share,
    token: &str,
    segs: Vec<String>,
    rel: String,
) -> Response<Body> {
    let shared = c.shared.clone();
    let r = rel.clone();
    let listed = tokio::task::spawn_blocking(move || shared.store.list(&r))
        .await
        .map_err(|e| Error::other(format!("internal error: {e}")))
        .and_then(|r| r);
    match listed {
        Ok(entries) => html(page::dir(share, token, &segs, &entries)),
        Err(e) => {
            quiet_refusal(c, share, &rel, &e);
            not_found()
        }
    }
}

async fn download(
    c: &Arc<Conn>,
    share: &Share,
    rel: String,
    h: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let shared = c.shared.clone();
    let r = rel.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let (f, info) = shared.store.open_read(&r)?;
        let d = match info.sha256 {
            Some(d) => d,
            None => super::digest_of(&shared.store, &r)?.1,
        };
        Ok::<_, Error>((f, info, d))
    })
    .await
    .map_err(|e| Error::other(format!("internal error: {e}")))
    .and_then(|r| r);
    let (file, info, digest) = match opened {
        Ok(v) => v,
        Err(e) => {
            quiet_refusal(c, share, &rel, &e);
            return not_found();
        }
    };
    if !still_same(share, &digest) {
        info!(event = "share", action = "use", peer = %c.peer, id = %share.id, outcome = "changed", "the shared file changed since it was shared; the link is dead");
        return not_found();
    }
    let size = info.size;
    let etag = format!("\"{}\"", hex::encode(digest));
    let if_range_ok = h
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range_h = h.get(header::RANGE).map(|v| v.to_str().unwrap_or("?"));
    let range = if if_range_ok {
        parse_range(range_h, size)
    } else {
        Range::Full
    };
    let (status, start, end) = match range {
        Range::Full => (StatusCode::OK, 0, size),
        Range::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        Range::Unsatisfiable => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            set(&mut r, header::CONTENT_RANGE, &format!("bytes */{size}"));
            return r;
        }
    };
    if !head {
        match c.shared.shares.take_download(&share.id) {
            Ok(true) => {}
            Ok(false) => return not_found(),
            Err(e) => {
                warn!(event = "share", action = "use", peer = %c.peer, id = %share.id, "could not count a download: {e}");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "server error\n");
            }
        }
        info!(event = "share", action = "use", peer = %c.peer, user = %share.user, id = %share.id,
            name = %names::escape(&rel), start, end, size, outcome = "ok", "share link download");
    }
    let len = end - start;
    let body = if head || len == 0 {
        Body::empty()
    } else {
        let (tx, rx) = mpsc::channel(2);
        let whole = start == 0 && end == size;
        tokio::spawn(read_out(
            c.shared.clone(),
            file,
            start,
            end,
            whole.then_some(digest),
            tx,
        ));
        Body::Stream { rx, left: len }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let name = names::split_parent(&rel).1;
    set(&mut r, header::CONTENT_TYPE, "application/octet-stream");
    set(&mut r, header::CONTENT_LENGTH, &len.to_string());
    set(&mut r, header::ACCEPT_RANGES, "bytes");
    set(&mut r, header::ETAG, &etag);
    set(
        &mut r,
        "repr-digest",
        &format!("sha-256=:{}:", super::base64(&digest, false)),
    );
    set(
        &mut r,
        header::CONTENT_DISPOSITION,
        &content_disposition(name),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut r,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    common(&mut r);
    r
}

/// Read `start..end` of a file on the blocking pool, chunk by chunk, into
/// the response; a whole-file read is checked against its digest, and a
/// mismatch cuts the response off before its last chunk.
async fn read_out(
    shared: Arc<crate::server::Shared>,
    file: std::fs::File,
    start: u64,
    end: u64,
    check: Option<[u8; 32]>,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    let file = Arc::new(file);
    let mut pos = start;
    let mut hasher = check.map(|_| Sha256::new());
    while pos < end {
        let n = (end - pos).min(CHUNK as u64) as usize;
        let f = file.clone();
        let h = hasher.take();
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            let mut got = 0;
            while got < n {
                match f.read_at(&mut buf[got..], pos + got as u64) {
                    Ok(0) => return Err(std::io::Error::other("the file shrank while being sent")),
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let h = h.map(|mut h| {
                h.update(&buf);
                h
            });
            Ok((Bytes::from(buf), h))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let chunk = match read {
            Ok((chunk, h)) => {
                hasher = h;
                chunk
            }
            Err(e) => {
                warn!("share download cut off: {}", crate::error::describe_io(&e));
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        pos += chunk.len() as u64;
        if pos == end
            && let (Some(h), Some(want)) = (hasher.take(), check)
        {
            let got: [u8; 32] = h.finalize().into();
            if got != want {
                warn!(
                    event = "integrity",
                    "a shared file's content does not match its recorded SHA-256; the download was cut off"
                );
                let _ = tx.send(Err(std::io::Error::other("digest mismatch"))).await;
                return;
            }
        }
        shared
            .stats
            .bytes_out
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if tx.send(Ok(chunk)).await.is_err() {
            return; // the client went away
        }
    }
}

pub(super) fn set(r: &mut Response<Body>, k: impl header::IntoHeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        r.headers_mut().insert(k, v);
    }
}

/// Headers every answer carries.
pub(super) fn common(r: &mut Response<Body>) {
    set(r, header::CONTENT_SECURITY_POLICY, CSP);
    set(r, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(r, header::REFERRER_POLICY, "no-referrer");
    set(r, header::X_FRAME_OPTIONS, "DENY");
    if !r.headers().contains_key(header::CACHE_CONTROL) {
        set(r, header::CACHE_CONTROL, "no-store");
    }
}

pub(super) fn html_status(status: StatusCode, body: String) -> Response<Body> {
    let mut r = html(body);
    *r.status_mut() = status;
    r
}

pub(super) fn html(body: String) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Body::full(body));
    set(&mut r, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(&mut r, header::CONTENT_LENGTH, &len.to_string());
    common(&mut r);
    r
}

pub(super) fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::full(msg));
    *r.status_mut() = status;
    set(&mut r, header::CONTENT_TYPE, "text/plain; charset=utf-8");
    set(&mut r, header::CONTENT_LENGTH, &msg.len().to_string());
    common(&mut r);
    r
}

/// The one answer for anything that is not there, whatever the reason.
pub(super) fn not_found() -> Response<Body> {
    let body = page::not_found();
    let len = body.len();
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = StatusCode::NOT_FOUND;
    set(&mut r, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(&mut r, header::CONTENT_LENGTH, &len.to_string());
    common(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_resolved_against_the_size_and_bad_ones_are_unsatisfiable() {
        assert_eq!(parse_range(None, 10), Range::Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Range::Part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Range::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Range::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Range::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Range::Part(8, 9));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Range::Full);
        for bad in [
            "bytes=10-",
            "bytes=5-4",
            "bytes=-0",
            "bytes=x-1",
            "bytes=1",
            "items=0-1",
            "bytes=+1-2",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(parse_range(Some(bad), 10), Range::Unsatisfiable, "{bad}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Range::Unsatisfiable);
    }

    #[test]
    fn paths_below_a_token_cannot_climb_or_hide_a_slash() {
        assert_eq!(
            decode_path("a/b%20c.txt"),
            Some(vec!["a".into(), "b c.txt".into()])
        );
        assert_eq!(decode_path("sub/"), Some(vec!["sub".into()]));
        assert_eq!(decode_path(""), Some(vec![]));
        for bad in [
            "..", "a/../b", "%2e%2e", "%2E%2E/x", "a%2fb", "a%5cb", "a//b", ".", "%00", "%zz",
            "%e2%28",
        ] {
            assert_eq!(decode_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_disposition_carries_the_utf8_name_and_a_safe_fallback() {
        assert_eq!(
            content_disposition("r\u{e9}sum\u{e9} \"1\".pdf"),
            "attachment; filename=\"r_sum_ _1_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
        );
    }
}
