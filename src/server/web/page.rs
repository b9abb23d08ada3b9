//! The HTML of the share pages: no script, no external resource, one style
//! sheet served by the server itself; every name is escaped.

use std::time::{Duration, UNIX_EPOCH};

use super::routes::percent_encode;
use crate::protocol::{Entry, EntryKind};
use crate::server::auth::Identity;
use crate::server::share::Share;

pub const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1d2330;background:#f6f7f9}
h1{font-size:1.3rem;word-break:break-all}
.card{background:#fff;border:1px solid #d9dde3;border-radius:8px;padding:1.2rem 1.4rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem;margin:0 0 1.2rem}
dt{color:#5b6475}dd{margin:0;word-break:break-all}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#eef0f4;padding:.6rem .8rem;border-radius:6px;white-space:pre-wrap;word-break:break-all;user-select:all}
a.button{display:inline-block;background:#2456c9;color:#fff;padding:.6rem 1.2rem;border-radius:6px;text-decoration:none;font-weight:600}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e4e7ec}
td.n{text-align:right;white-space:nowrap}
nav{display:flex;justify-content:space-between;align-items:center;margin-bottom:1rem}form.inline{display:inline;margin:0}.err{color:#b3261e}
button{font:inherit;padding:.3rem .8rem}input,select{font:inherit}footer{margin-top:1.5rem;color:#7a8294;font-size:.8rem}
";

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Quote a name for a POSIX shell (single quotes).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// "2026-12-06 20:38:13 UTC".
fn utc(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn when(mtime_ns: i64) -> String {
    utc(UNIX_EPOCH + Duration::from_nanos(mtime_ns.max(0) as u64))
}

fn expiry(share: &Share) -> String {
    let mut s = match share.expires {
        // humantime cannot print years past 9999
        Some(e) if e < 253_402_300_800 => {
            format!("until {}", utc(UNIX_EPOCH + Duration::from_secs(e)))
        }
        Some(_) => "no expiry".to_string(),
        None => "no expiry".to_string(),
    };
    if let Some(n) = share.downloads_left {
        s.push_str(&format!(
            ", {n} download{} left",
            if n == 1 { "" } else { "s" }
        ));
    }
    s
}

fn wrap(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><link rel=\"stylesheet\" href=\"/.sft/style.css\"></head>\n<body>{body}<footer>Shared with sft. Check the SHA-256 after downloading.</footer></body></html>\n",
        esc(title)
    )
}

/// The page of a link to one file.
pub fn file(share: &Share, token: &str, e: &Entry, digest: &[u8; 32]) -> String {
    let name = crate::names::split_parent(&share.path).1;
    let hexd = hex::encode(digest);
    let href = format!("/s/{}/{}", percent_encode(token), percent_encode(name));
    let body = format!(
        "<main class=\"card\"><h1>{n}</h1><dl><dt>Size</dt><dd>{h} ({b} bytes)</dd><dt>Modified</dt><dd>{m}</dd><dt>SHA-256</dt><dd><code id=\"sha256\">{hexd}</code></dd><dt>Link</dt><dd>{x}</dd></dl>\
<p><a class=\"button\" href=\"{href}\" download=\"{n}\">Download</a></p>\
<p>To check the file after downloading, run this where it was saved:</p><pre>echo {chk} | sha256sum -c</pre></main>",
        n = esc(name),
        h = crate::units::human(e.size),
        b = e.size,
        m = when(e.mtime_ns),
        x = esc(&expiry(share)),
        chk = esc(&shell_quote(&format!("{hexd}  {name}"))),
    );
    wrap(name, &body)
}

/// The listing of a shared directory (or a directory beneath it).
pub fn dir(share: &Share, token: &str, segs: &[String], entries: &[Entry]) -> String {
    let mut base = format!("/s/{}/", percent_encode(token));
    for s in segs {
        base.push_str(&percent_encode(s));
        base.push('/');
    }
    let shown = {
        let root = crate::names::split_parent(&share.path).1;
        let mut s = root.to_string();
        for seg in segs {
            s.push('/');
            s.push_str(seg);
        }
        s
    };
    let mut rows = String::new();
    if !segs.is_empty() {
        rows.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td><td></td></tr>");
    }
    for e in entries {
        let (href, label, size) = match e.kind {
            EntryKind::Dir => (
                format!("{base}{}/", percent_encode(&e.name)),
                format!("{}/", e.name),
                String::new(),
            ),
            EntryKind::File => (
                format!("{base}{}", percent_encode(&e.name)),
                e.name.clone(),
                crate::units::human(e.size),
            ),
        };
        let sum = e.sha256.map(hex::encode).unwrap_or_default();
        rows.push_str(&format!(
            "<tr><td><a href=\"{}\">{}</a></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td><code title=\"{s}\">{}</code></td></tr>",
            esc(&href),
            esc(&label),
            esc(&size),
            when(e.mtime_ns),
            esc(sum.get(..16).unwrap_or("")),
            s = esc(&sum),
        ));
    }
    let body = format!(
        "<main class=\"card\"><h1>{}/</h1><p>{}</p><table><thead><tr><th>Name</th><th>Size</th><th>Modified</th><th>SHA-256</th></tr></thead><tbody>{rows}</tbody></table></main>",
        esc(&shown),
        esc(&expiry(share)),
    );
    wrap(&shown, &body)
}

/// The sign-in form of the browse page.
pub fn login(problem: Option<&str>) -> String {
    let p = problem
        .map(|m| format!("<p class=\"err\">{}</p>", esc(m)))
        .unwrap_or_default();
    wrap(
        "Sign in",
        &format!(
            "<main class=\"card\"><h1>Sign in</h1>{p}<form method=\"post\" action=\"/browse/login\"><p><label for=\"token\">Access token</label></p><p><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required size=\"48\"></p><p><button type=\"submit\">Sign in</button></p></form><p>The token is sent once; the browser keeps only a session cookie.</p></main>"
        ),
    )
}

fn signed_bar(who: &Identity, csrf: &str) -> String {
    format!(
        "<nav><span>Signed in as <b>{}</b> ({})</span><form class=\"inline\" method=\"post\" action=\"/browse/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form></nav>",
        esc(&who.user),
        who.role.name(),
        esc(csrf)
    )
}

/// What a signed-in user may read, with a share form per entry.
pub fn browse(who: &Identity, csrf: &str, segs: &[String], entries: &[Entry]) -> String {
    let here = segs.join("/");
    let mut rows = String::new();
    if !segs.is_empty() {
        rows.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td><td></td></tr>");
    }
    for e in entries {
        let path = if here.is_empty() {
            e.name.clone()
        } else {
            format!("{here}/{}", e.name)
        };
        let label = if e.kind == EntryKind::Dir {
            format!("{}/", e.name)
        } else {
            e.name.clone()
        };
        let size = if e.kind == EntryKind::Dir {
            String::new()
        } else {
            crate::units::human(e.size)
        };
        rows.push_str(&format!(
            "<tr><td><a href=\"{}\">{}</a></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td><form class=\"inline\" method=\"post\" action=\"/browse/share\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"path\" value=\"{}\"><select name=\"expires\"><option value=\"1h\">1 hour</option><option value=\"24h\" selected>1 day</option><option value=\"7d\">7 days</option><option value=\"30d\">30 days</option></select> <button type=\"submit\">Share</button></form></td></tr>",
            esc(&super::browse::entry_href(segs, &e.name, e.kind)),
            esc(&label),
            esc(&size),
            when(e.mtime_ns),
            esc(csrf),
            esc(&path),
        ));
    }
    let title = format!("/{here}");
    let body = format!(
        "{}<main class=\"card\"><h1>{}</h1><table><thead><tr><th>Name</th><th>Size</th><th>Modified</th><th>Share link</th></tr></thead><tbody>{rows}</tbody></table></main>",
        signed_bar(who, csrf),
        esc(&title)
    );
    wrap(&title, &body)
}

/// The link just made from the browse page.
pub fn made(who: &Identity, csrf: &str, share: &Share, url: &str) -> String {
    let download = if share.dir {
        format!("{url}/")
    } else {
        format!(
            "{url}/{}",
            percent_encode(crate::names::split_parent(&share.path).1)
        )
    };
    let body = format!(
        "{}<main class=\"card\"><h1>Link made for {}</h1><p>{}. Anyone with the link can download; revoke it with <code>sft share --revoke {}</code>.</p><dl><dt>Page</dt><dd><pre id=\"url\">{}</pre></dd><dt>Download</dt><dd><pre>{}</pre></dd></dl><p><a href=\"/browse/\">Back</a></p></main>",
        signed_bar(who, csrf),
        esc(&share.path),
        esc(&expiry(share)),
        esc(&share.id),
        esc(url),
        esc(&download),
    );
    wrap("Link made", &body)
}

pub fn browse_error(who: &Identity, csrf: &str, msg: &str) -> String {
    wrap(
        "Not shared",
        &format!(
            "{}<main class=\"card\"><h1>Not shared</h1><p class=\"err\">{}</p><p><a href=\"/browse/\">Back</a></p></main>",
            signed_bar(who, csrf),
            esc(msg)
        ),
    )
}

pub fn not_found() -> String {
    wrap(
        "Not found",
        "<main class=\"card\"><h1>Not found</h1><p>This link does not exist, has expired, or has been used up or revoked.</p></main>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_in_html() {
        assert_eq!(
            esc("<img src=x onerror=\"a\">&'"),
            "&lt;img src=x onerror=&quot;a&quot;&gt;&amp;&#39;"
        );
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
