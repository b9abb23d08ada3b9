//! Remote file names: the one validator shared by server and client, the
//! "name (1).ext" numbering used when a name is taken, and escaping of names
//! before they reach a terminal or a log.

use crate::error::{Error, Result};

/// Longest name component in bytes (the common filesystem limit).
pub const MAX_COMPONENT: usize = 255;
/// Longest whole name in bytes.
pub const MAX_PATH: usize = 4096;

/// Check a remote name: a relative path of components separated by `/`.
///
/// Refused, each with a one-line reason: empty names or components, `.` and
/// `..`, absolute paths, backslashes, NUL and other control characters,
/// components over 255 bytes, names over 4096 bytes.
pub fn validate(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::usage(format!("invalid name {}: {why}", quote(name))));
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.len() > MAX_PATH {
        return bad("names are limited to 4096 bytes");
    }
    if name.starts_with('/') {
        return bad("absolute paths are not allowed; use a name relative to the server's root");
    }
    if name.contains('\\') {
        return bad("backslashes are not allowed; separate directories with '/'");
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return if c == '\0' {
            bad("NUL bytes are not allowed")
        } else {
            bad("control characters are not allowed")
        };
    }
    for comp in name.split('/') {
        match comp {
            "" => return bad("empty path components ('//' or a trailing '/') are not allowed"),
            "." | ".." => return bad("'.' and '..' components are not allowed"),
            c if c.len() > MAX_COMPONENT => {
                return bad("each path component is limited to 255 bytes");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Split a validated name into (parent directory or "", last component).
pub fn split_parent(name: &str) -> (&str, &str) {
    match name.rfind('/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    }
}

/// The file-name component with ` (n)` inserted before its extension:
/// `report.pdf` → `report (1).pdf`, `archive.tar.gz` → `archive (1).tar.gz`,
/// `README` → `README (1)`, `.bashrc` → `.bashrc (1)`. The stem is shortened
/// (on a character boundary) so the result still fits in 255 bytes.
pub fn numbered(component: &str, n: u32) -> String {
    // " (4294967295)" is 13 bytes: it always fits in 255 with no stem at all
    numbered_within(component, n, MAX_COMPONENT).unwrap_or_else(|| format!(" ({n})"))
}

/// The name `name` (a path) with its last component numbered as
/// [`numbered`] does, shortened so that the whole name also stays within
/// [`MAX_PATH`]: a renamed name obeys the same limits as any other. `None`
/// if not even the tag fits beside the parent directories.
pub fn numbered_name(name: &str, n: u32) -> Option<String> {
    let (parent, component) = split_parent(name);
    if parent.is_empty() {
        return numbered_within(component, n, MAX_COMPONENT.min(MAX_PATH));
    }
    let room = MAX_PATH.checked_sub(parent.len() + 1)?;
    let comp = numbered_within(component, n, MAX_COMPONENT.min(room))?;
    Some(format!("{parent}/{comp}"))
}

/// `component` numbered in at most `max` bytes: the stem is shortened (on a
/// character boundary); the extension too, as a last resort, if it alone
/// leaves no room.
fn numbered_within(component: &str, n: u32, max: usize) -> Option<String> {
    let tag = format!(" ({n})");
    let (stem, ext) = match split_extension(component) {
        (stem, ext) if tag.len() + ext.len() <= max => (stem, ext),
        _ => (component, ""),
    };
    let room = max.checked_sub(tag.len() + ext.len())?;
    let mut cut = stem.len().min(room);
    while cut > 0 && !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(format!("{}{tag}{ext}", &stem[..cut]))
}

/// Split `name` into stem and extension; the extension includes its dot.
/// A leading dot does not start an extension; `.tar.*` is kept whole.
fn split_extension(name: &str) -> (&str, &str) {
    let body_start = name.len() - name.trim_start_matches('.').len();
    let Some(dot) = name[body_start..].rfind('.').map(|i| i + body_start) else {
        return (name, "");
    };
    if dot == body_start || dot + 1 == name.len() {
        return (name, "");
    }
    let (stem, ext) = name.split_at(dot);
    // Keep compound tar extensions together: x.tar.gz -> x + .tar.gz
    if let Some(s) = stem.strip_suffix(".tar")
        && !s.trim_start_matches('.').is_empty()
    {
        return (s, &name[s.len()..]);
    }
    (stem, ext)
}

/// Escape a name (or any peer-supplied text) for a terminal or a log:
/// control characters, DEL, C1 controls and bidirectional overrides are
/// shown as `\xNN` / `\u{NNNN}`, so nothing a peer sends can
/// move the cursor, change colours or reorder what is shown.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if ('\u{80}'..='\u{9f}').contains(&c)
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
                || c == '\u{200e}'
                || c == '\u{200f}'
                || c == '\u{061c}' =>
            {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A name in quotes, escaped, for messages.
pub fn quote(s: &str) -> String {
    format!("'{}'", escape(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "a",
            "report.pdf",
            "dir/sub/file.txt",
            ".hidden",
            "name with spaces",
            "ünïcode/名前",
            "a..b",
        ] {
            validate(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }

    #[test]
    fn refuses_each_rule_with_its_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("a\\b", "backslash"),
            ("a\0b", "NUL"),
            ("a\nb", "control"),
            ("a\x1b[31m", "control"),
            ("a//b", "empty path components"),
            ("a/", "empty path components"),
            (".", "'.' and '..'"),
            ("..", "'.' and '..'"),
            ("a/../../x", "'.' and '..'"),
            ("./a", "'.' and '..'"),
        ];
        for (n, why) in cases {
            let e = validate(n).expect_err(n);
            assert_eq!(e.kind, crate::error::Kind::Usage);
            assert!(e.message.contains(why), "{n:?}: {}", e.message);
        }
        let long = "x".repeat(256);
        assert!(validate(&long).unwrap_err().message.contains("255 bytes"));
        assert!(validate(&"x".repeat(255)).is_ok());
        let deep = vec!["y".repeat(200); 21].join("/");
        assert!(deep.len() > 4096);
        assert!(validate(&deep).unwrap_err().message.contains("4096"));
    }

    #[test]
    fn numbering_goes_before_the_extension() {
        assert_eq!(numbered("report.pdf", 1), "report (1).pdf");
        assert_eq!(numbered("archive.tar.gz", 1), "archive (1).tar.gz");
        assert_eq!(numbered("README", 2), "README (2)");
        assert_eq!(numbered(".bashrc", 1), ".bashrc (1)");
        assert_eq!(numbered(".config.toml", 1), ".config (1).toml");
        assert_eq!(numbered("a.b.c", 3), "a.b (3).c");
        assert_eq!(numbered("trailing.", 1), "trailing. (1)");
        assert_eq!(numbered(".tar.gz", 1), ".tar (1).gz");
    }

    #[test]
    fn numbering_keeps_names_within_255_bytes() {
        let name = format!("{}.txt", "a".repeat(251));
        assert_eq!(name.len(), 255);
        let n = numbered(&name, 12);
        assert_eq!(n.len(), 255);
        assert!(n.ends_with(" (12).txt"));
        // multi-byte characters are never split
        let name = format!("{}.bin", "é".repeat(125));
        let n = numbered(&name, 1);
        assert!(n.len() <= 255);
        assert!(validate(&n).is_ok());
        // an extension of 250+ bytes leaves no room for the tag beside it
        // (the property of fuzz/fuzz_targets/names.rs; it was 258 bytes)
        let name = format!("a.{}", "x".repeat(253));
        assert_eq!(name.len(), 255);
        let n = numbered(&name, 1);
        assert_eq!(n.len(), 255);
        assert!(n.ends_with(" (1)"));
        assert!(validate(&n).is_ok());
    }

    /// Directories making a parent of exactly `len` bytes.
    fn parent_of(len: usize) -> String {
        let mut p = String::new();
        while p.len() < len {
            if !p.is_empty() {
                p.push('/');
            }
            let take = (len - p.len()).min(MAX_COMPONENT);
            p.push_str(&"p".repeat(take));
        }
        p
    }

    #[test]
    fn numbered_names_stay_within_the_whole_name_limit() {
        let last = "report-2026.pdf";
        let name = format!("{}/{last}", parent_of(MAX_PATH - last.len() - 1));
        assert_eq!(name.len(), MAX_PATH);
        validate(&name).unwrap();
        for n in [1, 2, 10, 12345] {
            let got = numbered_name(&name, n).unwrap();
            assert!(got.len() <= MAX_PATH, "{n}: {} bytes", got.len());
            validate(&got).unwrap();
            assert_ne!(got, name);
            assert!(got.ends_with(&format!(" ({n}).pdf")), "{got}");
            assert_eq!(
                split_parent(&got).0,
                split_parent(&name).0,
                "same directory"
            );
        }
        // with no room for stem and extension, the extension goes too
        let got = numbered_name(&name, u32::MAX).unwrap();
        assert!(
            got.len() <= MAX_PATH && got.ends_with("/re (4294967295)"),
            "{got}"
        );
        let last = "a.verylongextension";
        let name = format!("{}/{last}", parent_of(MAX_PATH - last.len() - 1));
        let got = numbered_name(&name, 7).unwrap();
        assert!(got.len() <= MAX_PATH && got.ends_with(" (7)"), "{got}");
        validate(&got).unwrap();
        // short names are numbered as before
        assert_eq!(numbered_name("dir/r.pdf", 1).unwrap(), "dir/r (1).pdf");
        assert_eq!(numbered_name("r.pdf", 2).unwrap(), "r (2).pdf");
        // multi-byte characters are never split
        let last = "é".repeat(7) + "x";
        let name = format!("{}/{last}", parent_of(MAX_PATH - last.len() - 1));
        assert_eq!(name.len(), MAX_PATH);
        let got = numbered_name(&name, 1).unwrap();
        validate(&got).unwrap();
        assert!(got.len() <= MAX_PATH);
        // no room at all beside the parents
        let name = format!("{}/x", parent_of(MAX_PATH - 2));
        assert_eq!(name.len(), MAX_PATH);
        assert_eq!(numbered_name(&name, 1), None);
    }

    #[test]
    fn escape_neutralises_terminal_sequences() {
        assert_eq!(escape("plain.txt"), "plain.txt");
        assert_eq!(escape("\x1b[2Jx"), "\\x1b[2Jx");
        assert_eq!(escape("a\nb\r"), "a\\x0ab\\x0d");
        assert_eq!(escape("evil\u{202e}fdp.exe"), "evil\\u{202e}fdp.exe");
        assert_eq!(escape("\u{9b}31m"), "\\u{009b}31m");
        assert!(!escape("\x07\x7f").chars().any(|c| c.is_control()));
    }

    #[test]
    fn split_parent_separates_the_last_component() {
        assert_eq!(split_parent("a/b/c.txt"), ("a/b", "c.txt"));
        assert_eq!(split_parent("c.txt"), ("", "c.txt"));
    }
}
