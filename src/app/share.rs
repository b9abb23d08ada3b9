//! `sft share`: make, list and revoke share links. The link's URL is built
//! from the server address the client used; the token is printed once and
//! never stored on this side.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::Output;
use crate::cli::ShareArgs;
use crate::client::{self, Client};
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::{EntryKind, ShareInfo};

/// `--expires`: a duration, or "never".
pub fn parse_expires(s: &str) -> Result<Option<Duration>> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        Error::usage(format!(
            "--expires {}: expected a duration such as 30m, 24h or 7d, or never",
            names::escape(s)
        ))
    })?;
    if d < Duration::from_secs(1) {
        return Err(Error::usage("--expires must be at least 1s"));
    }
    Ok(Some(d))
}

/// Check the arguments before connecting.
pub fn check(a: &ShareArgs) -> Result<()> {
    parse_expires(&a.expires)?;
    if let Some(n) = &a.name {
        let n = n.trim_end_matches('/');
        names::validate(n)?;
    }
    Ok(())
}

/// `https://HOST:PORT` of the server the client talks to.
fn origin(server: &str) -> Result<String> {
    let (host, port) = client::split_host_port(server)?;
    Ok(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    })
}

/// An expiry the server sent; None for never (or a time beyond the calendar).
fn when(unix: u64) -> Option<String> {
    // humantime cannot print years past 9999 (its Display fails)
    if unix >= 253_402_300_800 {
        return None;
    }
    let t = UNIX_EPOCH.checked_add(Duration::from_secs(unix))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

fn left(n: u64) -> Option<u64> {
    (n != u64::MAX).then_some(n)
}

pub async fn run(c: &mut Client, opts: &client::Options, o: &Output, a: ShareArgs) -> Result<()> {
    if a.list {
        let all = c.share_list().await?;
        if all.is_empty() && !o.json {
            o.note("no share links");
        }
        for s in all {
            o.result(|| list_line(&s), || info_json(&s, None))?;
        }
        return Ok(());
    }
    if let Some(id) = a.revoke {
        c.share_revoke(&id).await?;
        o.note(&format!("share link {} revoked", names::escape(&id)));
        return o.json_only(|| json!({"op": "share-revoke", "id": id, "outcome": "ok"}));
    }
    let name = a.name.unwrap_or_default();
    let s = c
        .share(&name, parse_expires(&a.expires)?, a.downloads)
        .await?;
    let base = origin(&opts.server)?;
    let url = format!("{base}/s/{}", s.token);
    let download = match s.kind {
        EntryKind::File => format!(
            "{url}/{}",
            crate::server::web::percent_encode(names::split_parent(&s.name).1)
        ),
        EntryKind::Dir => format!("{url}/"),
    };
    o.result(
        || format!("{url}\n{download}"),
        || info_json(&s, Some((&url, &download))),
    )?;
    o.note(&format!(
        "share link {}: {}; {}; revoke with: sft share --revoke {}",
        s.id,
        match when(s.expires) {
            Some(t) => format!("expires {t}"),
            None => "no expiry".into(),
        },
        match left(s.downloads_left) {
            Some(n) => format!("{n} download(s)"),
            None => "any number of downloads".into(),
        },
        s.id
    ));
    Ok(())
}

fn list_line(s: &ShareInfo) -> String {
    format!(
        "{}  {}{}  {}  {}",
        s.id,
        names::escape(&s.name),
        if s.kind == EntryKind::Dir { "/" } else { "" },
        when(s.expires).map_or("no expiry".into(), |t| format!("expires {t}")),
        left(s.downloads_left).map_or("unlimited".into(), |n| format!("{n} left")),
    )
}

fn info_json(s: &ShareInfo, urls: Option<(&str, &str)>) -> serde_json::Value {
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "kind": if s.kind == EntryKind::Dir { "dir" } else { "file" },
        "size": s.size,
        "sha256": s.sha256.map(hex::encode),
        "expires": when(s.expires),
        "downloads_left": left(s.downloads_left),
        "user": s.user,
    });
    if let Some((url, download)) = urls {
        v["url"] = json!(url);
        v["download_url"] = json!(download);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_origin_are_parsed() {
        assert_eq!(
            parse_expires("2h").unwrap(),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(parse_expires("never").unwrap(), None);
        assert!(parse_expires("soon").is_err());
        assert_eq!(origin("127.0.0.1:7373").unwrap(), "https://127.0.0.1:7373");
        assert_eq!(origin("[::1]:9").unwrap(), "https://[::1]:9");
        // a hostile server's absurd expiry does not panic the client
        assert_eq!(when(u64::MAX - 1), None);
        assert_eq!(when(0).as_deref(), Some("1970-01-01T00:00:00Z"));
    }
}
