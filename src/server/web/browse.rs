//! The browse page for users: sign in once with a token (a POST form), then
//! list what you may read and make share links. The cookie holds a random
//! session id (never the token), `Secure; HttpOnly; SameSite=Strict`, and
//! every form carries the session's CSRF token, checked in constant time.
//! Sessions live in memory (a restart signs everyone out).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::page;
use super::routes::{self, decode_path, percent_encode};
use super::{Body, Conn};
use crate::error::Error;
use crate::protocol::{EntryKind, Role};
use crate::server::auth::Identity;

const COOKIE: &str = "sft_session";
/// How long a browser stays signed in.
const LIFE: Duration = Duration::from_secs(12 * 3600);
/// Most signed-in browsers at once (the oldest is signed out beyond).
const MAX_SESSIONS: usize = 4096;
/// Largest form body.
const MAX_FORM: usize = 8 * 1024;

struct WebSession {
    user: String,
    csrf: String,
    until: Instant,
}

/// Signed-in browsers, keyed by the SHA-256 of their session id.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, WebSession>>);

fn random_hex(n: usize) -> Option<String> {
    crate::private::secret_hex(n).ok()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WebSession>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `user`: (cookie id, csrf token).
    fn open(&self, user: &str) -> Option<(String, String)> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        let mut m = self.lock();
        let now = Instant::now();
        m.retain(|_, s| s.until > now);
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            crate::server::share::token_digest(&id),
            WebSession {
                user: user.to_string(),
                csrf: csrf.clone(),
                until: now + LIFE,
            },
        );
        Some((id, csrf))
    }

    /// (user, csrf) of a live session.
    fn get(&self, id: &str) -> Option<(String, String)> {
        let m = self.lock();
        let s = m.get(&crate::server::share::token_digest(id))?;
        (s.until > Instant::now()).then(|| (s.user.clone(), s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.lock().remove(&crate::server::share::token_digest(id));
    }
}

fn cookie_id(h: &HeaderMap) -> Option<String> {
    for v in h.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == COOKIE
                && val.len() == 64
                && val.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Some(val.to_string());
            }
        }
    }
    None
}

/// Read a form body (bounded in size and time) into its fields.
async fn form(c: &Conn, body: Incoming) -> Option<HashMap<String, String>> {
    let mut body = body;
    let mut buf = Vec::new();
    let read = async {
        loop {
            let frame =
                std::future::poll_fn(|cx| hyper::body::Body::poll_frame(Pin::new(&mut body), cx))
                    .await;
            match frame {
                None => return Some(()),
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        if buf.len() + d.len() > MAX_FORM {
                            return None;
                        }
                        buf.extend_from_slice(d);
                    }
                }
                Some(Err(_)) => return None,
            }
        }
    };
    tokio::time::timeout(c.shared.limits.auth, read)
        .await
        .ok()??;
    let text = std::str::from_utf8(&buf).ok()?;
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            routes::percent_decode(&s.replace('+', " ")).and_then(|b| String::from_utf8(b).ok())
        };
        out.insert(dec(k)?, dec(v)?);
    }
    Some(out)
}

/// The signed-in user, still known to the server (roles follow the users file).
fn signed_in(c: &Conn, h: &HeaderMap) -> Option<(String, Identity, String)> {
    let id = cookie_id(h)?;
    let (user, csrf) = c.shared.web_sessions.get(&id)?;
    let who = c.shared.accounts.current(&user)?;
    Some((id, who, csrf))
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    routes::set(&mut r, header::LOCATION, to);
    routes::set(&mut r, header::CONTENT_LENGTH, "0");
    routes::common(&mut r);
    r
}

/// `/browse...`: GET pages, POST forms.
pub(crate) async fn handle(c: &Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    match (&method, path.as_str()) {
        (&Method::POST, "/browse/login") => {
            let Some(f) = form(c, body).await else {
                return routes::text(StatusCode::BAD_REQUEST, "bad form\n");
            };
            let token = f.get("token").map(|t| t.trim()).unwrap_or("");
            let Some(who) = c.shared.accounts.check(token.as_bytes()) else {
                warn!(event = "auth", peer = %c.peer, outcome = "denied", via = "web", "authentication failed: token not accepted");
                return routes::html_status(
                    StatusCode::FORBIDDEN,
                    page::login(Some("That token was not accepted.")),
                );
            };
            let Some((id, _)) = c.shared.web_sessions.open(&who.user) else {
                return routes::text(StatusCode::INTERNAL_SERVER_ERROR, "server error\n");
            };
            info!(event = "auth", peer = %c.peer, user = %who.user, role = who.role.name(), outcome = "ok", via = "web", "signed in to the browse page");
            let mut r = redirect("/browse/");
            routes::set(
                &mut r,
                header::SET_COOKIE,
                &format!(
                    "{COOKIE}={id}; Path=/browse; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
                    LIFE.as_secs()
                ),
            );
            r
        }
        (&Method::POST, "/browse/logout") => {
            if let Some((id, _, csrf)) = signed_in(c, h)
                && form(c, body)
                    .await
                    .and_then(|f| f.get("csrf").cloned())
                    .is_some_and(|t| bool::from(t.as_bytes().ct_eq(csrf.as_bytes())))
            {
                c.shared.web_sessions.close(&id);
            }
            let mut r = redirect("/browse/");
            routes::set(
                &mut r,
                header::SET_COOKIE,
                &format!("{COOKIE}=; Path=/browse; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
            );
            r
        }
        (&Method::POST, "/browse/share") => {
            let Some((_, who, csrf)) = signed_in(c, h) else {
                return redirect("/browse/");
            };
            let Some(f) = form(c, body).await else {
                return routes::text(StatusCode::BAD_REQUEST, "bad form\n");
            };
            let ok = f
                .get("csrf")
                .is_some_and(|t| bool::from(t.as_bytes().ct_eq(csrf.as_bytes())));
            if !ok {
                warn!(event = "share", action = "create", peer = %c.peer, user = %who.user, via = "web", "refused: the form's CSRF token is wrong");
                return routes::text(StatusCode::FORBIDDEN, "stale form; reload the page\n");
            }
            let name = f.get("path").cloned().unwrap_or_default();
            let expires_s = match f.get("expires").map(String::as_str) {
                Some("1h") => 3600,
                Some("7d") => 7 * 86_400,
                Some("30d") => 30 * 86_400,
                _ => 86_400,
            };
            let (shared, peer, w) = (c.shared.clone(), c.peer, who.clone());
            let made = tokio::task::spawn_blocking(move || {
                crate::server::share::make(&shared, &w, peer, &name, expires_s, u64::MAX)
            })
            .await
            .map_err(|e| Error::other(format!("internal error: {e}")))
            .and_then(|r| r);
            match made {
                Ok((share, token)) => {
                    let url = format!("https://{host}/s/{token}");
                    routes::html(page::made(&who, &csrf, &share, &url))
                }
                Err(e) => routes::html_status(
                    StatusCode::BAD_REQUEST,
                    page::browse_error(&who, &csrf, &e.message),
                ),
            }
        }
        (&Method::GET | &Method::HEAD, p) => {
            let Some(rest) = p.strip_prefix("/browse/") else {
                return redirect("/browse/");
            };
            let Some((_, who, csrf)) = signed_in(c, h) else {
                return routes::html(page::login(None));
            };
            if who.role < Role::Read {
                return routes::not_found();
            }
            let Some(segs) = decode_path(rest) else {
                return routes::not_found();
            };
            let rel = segs.join("/");
            let (shared, r) = (c.shared.clone(), rel.clone());
            let listed = tokio::task::spawn_blocking(move || shared.store.list(&r))
                .await
                .map_err(|e| Error::other(format!("internal error: {e}")))
                .and_then(|r| r);
            match listed {
                Ok(entries) => routes::html(page::browse(&who, &csrf, &segs, &entries)),
                Err(_) => routes::not_found(),
            }
        }
        _ => routes::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    }
}

/// The link a directory entry gets on the browse page.
pub fn entry_href(segs: &[String], name: &str, kind: EntryKind) -> String {
    let mut s = String::from("/browse/");
    for seg in segs {
        s.push_str(&percent_encode(seg));
        s.push('/');
    }
    s.push_str(&percent_encode(name));
    if kind == EntryKind::Dir {
        s.push('/');
    }
    s
}
