//! Share links over HTTPS on the sft port, through the real binary, real TLS
//! and outside tools: curl (HTTP/2 and HTTP/1.1, ranges, resume, HEAD) and
//! headless Chromium (the page). Tools that are missing make these tests
//! fail under CI=true and skip (loudly) elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Opts, Server, sha256_hex};
use serde_json::Value;

/// Is `tool` here? Under CI it must be.
fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing; .ci/run installs it"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}

/// A server with share links on, its state directory apart from its root.
fn server(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let sd = state.path().to_str().unwrap().to_string();
    let mut args = vec!["--state-dir", sd.as_str()];
    args.extend_from_slice(extra);
    let s = Server::start_with(Opts {
        extra: &args,
        ..Default::default()
    });
    (s, state)
}

/// `sft share ARGS --json`, its one JSON line.
fn share(s: &Server, args: &[&str]) -> Value {
    let out = s
        .client()
        .arg("share")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sft share {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn curl(s: &Server, args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "60", "--cacert"])
        .arg(&s.cert)
        .args(args)
        .output()
        .unwrap()
}

/// HTTP status of a GET (`extra` before the URL).
fn status(s: &Server, extra: &[&str], url: &str) -> String {
    let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    a.extend_from_slice(extra);
    a.push(url);
    String::from_utf8(curl(s, &a).stdout).unwrap()
}

/// Response headers (lower-cased names) of a request.
fn headers(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn put_file(s: &Server, name: &str, data: &[u8]) -> PathBuf {
    let path = s.root.join(name);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(&path, data).unwrap();
    path
}

fn b64(d: &[u8]) -> String {
    sft::server::web::base64(d, false)
}

#[test]
fn curl_downloads_a_shared_file_byte_exact_over_h2_and_http1_with_its_digest_headers() {
    if !have("curl") {
        return;
    }
    let (s, _state) = server(&[]);
    let data = common::noise(3 << 20, 16);
    put_file(&s, "report été.bin", &data);
    let j = share(&s, &["report été.bin"]);
    let sum = sha256_hex(&data);
    assert_eq!(j["sha256"], sum.as_str());
    assert!(j["id"].as_str().is_some_and(|i| !i.is_empty()));
    assert!(j["expires"].is_string(), "24h by default");
    assert!(j["downloads_left"].is_null());
    let url = j["download_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("https://{}/s/", s.addr)), "{url}");
    let dir = tempfile::tempdir().unwrap();
    for (flag, version) in [("--http2", "HTTP/2"), ("--http1.1", "HTTP/1.1")] {
        let out = dir.path().join(format!("got{flag}"));
        let r = curl(&s, &[flag, "-D", "-", "-o", out.to_str().unwrap(), url]);
        assert!(r.status.success(), "{flag}: {r:?}");
        let text = String::from_utf8_lossy(&r.stdout);
        assert!(text.starts_with(&format!("{version} 200")), "{text}");
        let h = headers(&text);
        assert_eq!(std::fs::read(&out).unwrap(), data, "{flag}: byte-exact");
        assert_eq!(header(&h, "etag"), Some(format!("\"{sum}\"").as_str()));
        let raw = hex::decode(&sum).unwrap();
        assert_eq!(
            header(&h, "repr-digest"),
            Some(format!("sha-256=:{}:", b64(&raw)).as_str())
        );
        assert_eq!(header(&h, "content-length"), Some("3145728"));
        assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
        assert_eq!(
            header(&h, "content-disposition"),
            Some(
                "attachment; filename=\"report _t_.bin\"; filename*=UTF-8''report%20%C3%A9t%C3%A9.bin"
            )
        );
        assert!(
            header(&h, "content-security-policy")
                .is_some_and(|v| v.starts_with("default-src 'none'"))
        );
    }
    // HEAD: the headers, no body, no download counted
    let r = curl(&s, &["-I", url]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert_eq!(header(&headers(&text), "content-length"), Some("3145728"));
    // the page itself
    let page = curl(&s, &[j["url"].as_str().unwrap()]);
    let html = String::from_utf8_lossy(&page.stdout);
    assert!(
        html.contains(&sum) && html.contains("report été.bin"),
        "{html}"
    );
    assert!(html.contains("sha256sum -c"));
}

#[test]
fn ranges_give_206_a_bad_range_416_and_curl_resumes_to_the_exact_file() {
    if !have("curl") {
        return;
    }
    let (s, _state) = server(&[]);
    let data = common::noise(2 << 20, 7);
    put_file(&s, "big.bin", &data);
    let j = share(&s, &["big.bin"]);
    let url = j["download_url"].as_str().unwrap();
    let r = curl(&s, &["-D", "/dev/stderr", "-r", "100-199", url]);
    assert_eq!(r.stdout, &data[100..200]);
    let h = headers(&String::from_utf8_lossy(&r.stderr));
    assert_eq!(header(&h, "content-range"), Some("bytes 100-199/2097152"));
    assert!(String::from_utf8_lossy(&r.stderr).starts_with("HTTP/2 206"));
    let r = curl(&s, &["-r", "-10", url]);
    assert_eq!(r.stdout, &data[data.len() - 10..]);
    for bad in ["bytes=zz", "bytes=5000000-", "bytes=9-3"] {
        assert_eq!(
            status(&s, &["-H", &format!("Range: {bad}")], url),
            "416",
            "{bad}"
        );
    }
    // a download cut in the middle, resumed with curl -C -
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.bin");
    std::fs::write(&out, &data[..777_777]).unwrap();
    let r = curl(&s, &["-C", "-", "-o", out.to_str().unwrap(), url]);
    assert!(r.status.success(), "{r:?}");
    assert_eq!(sha256_hex(&std::fs::read(&out).unwrap()), sha256_hex(&data));
}

#[test]
fn a_link_dies_after_its_downloads_after_expiry_and_when_revoked_all_as_404() {
    if !have("curl") {
        return;
    }
    let (s, state) = server(&[]);
    put_file(&s, "a.txt", b"hello\n");
    let counted = share(&s, &["a.txt", "--downloads", "2"]);
    assert_eq!(counted["downloads_left"], 2);
    let url = counted["download_url"].as_str().unwrap();
    assert_eq!(status(&s, &["-I"], url), "200", "HEAD does not count");
    assert_eq!(status(&s, &[], url), "200");
    assert_eq!(status(&s, &[], url), "200");
    assert_eq!(status(&s, &[], url), "404", "used up");
    assert_eq!(status(&s, &[], counted["url"].as_str().unwrap()), "404");

    let short = share(&s, &["a.txt", "--expires", "2s"]);
    let surl = short["download_url"].as_str().unwrap();
    assert_eq!(status(&s, &[], surl), "200");
    let revoked = share(&s, &["a.txt"]);
    let rurl = revoked["download_url"].as_str().unwrap().to_string();
    assert_eq!(status(&s, &[], &rurl), "200");
    let listed = s.client().args(["share", "--list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(revoked["id"].as_str().unwrap()), "{listed}");
    s.client()
        .args(["share", "--revoke", revoked["id"].as_str().unwrap()])
        .assert()
        .success();
    assert_eq!(status(&s, &[], &rurl), "404", "revoked");
    s.client()
        .args(["share", "--revoke", "nosuchid"])
        .assert()
        .failure();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(status(&s, &[], surl), "404", "expired");
    // an unknown token, and the same 404 page whatever the reason
    let base = format!("https://{}", s.addr);
    assert_eq!(
        status(&s, &[], &format!("{base}/s/AAAAAAAAAAAAAAAAAAAAAAAA/a.txt")),
        "404"
    );
    let dead = curl(&s, &[surl]).stdout;
    let unknown = curl(&s, &[&format!("{base}/s/AAAAAAAAAAAAAAAAAAAAAAAA")]).stdout;
    assert_eq!(dead, unknown);
    // the tokens never reach the log or the shares file
    let log = s.log_text();
    let kept = std::fs::read_to_string(state.path().join("shares.json")).unwrap();
    for j in [&counted, &short, &revoked] {
        let url = j["url"].as_str().unwrap();
        let token = url.rsplit('/').next().unwrap();
        assert!(
            !log.contains(token) && !kept.contains(token),
            "token leaked"
        );
    }
    assert!(
        log.contains("action=\"create\"")
            && log.contains("action=\"revoke\"")
            && log.contains("action=\"use\"")
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.path().join("shares.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_link_reaches_nothing_outside_what_it_shares() {
    if !have("curl") {
        return;
    }
    let (s, _state) = server(&[]);
    put_file(&s, "public/a.txt", b"public\n");
    put_file(&s, "public/sub/b.txt", b"beneath\n");
    put_file(&s, "secret.txt", b"secret\n");
    std::os::unix::fs::symlink(s.root.join("secret.txt"), s.root.join("public/link.txt")).unwrap();
    std::os::unix::fs::symlink(s.root.join("secret.txt"), s.root.join("public/sub/up")).unwrap();
    let file = share(&s, &["public/a.txt"]);
    let furl = file["url"].as_str().unwrap();
    let dir = share(&s, &["public/"]);
    let durl = dir["url"].as_str().unwrap();
    assert_eq!(dir["kind"], "dir");
    // what the links grant
    assert_eq!(curl(&s, &[&format!("{furl}/a.txt")]).stdout, b"public\n");
    assert_eq!(
        curl(&s, &[&format!("{durl}/sub/b.txt")]).stdout,
        b"beneath\n"
    );
    let listing = String::from_utf8(curl(&s, &[&format!("{durl}/")]).stdout).unwrap();
    assert!(
        listing.contains("a.txt") && listing.contains("sub/"),
        "{listing}"
    );
    assert!(!listing.contains("link.txt"), "symlinks are not listed");
    // and nothing else
    for (base, rest) in [
        (furl, "secret.txt"),
        (furl, "../secret.txt"),
        (furl, "..%2fsecret.txt"),
        (furl, "%2e%2e/secret.txt"),
        (furl, "%2e%2e%2f%2e%2e%2fsecret.txt"),
        (furl, "a.txt/../../secret.txt"),
        (durl, "../secret.txt"),
        (durl, "%2e%2e/secret.txt"),
        (durl, "sub%2f..%2f..%2fsecret.txt"),
        (durl, "sub/../../secret.txt"),
        (durl, "link.txt"),
        (durl, "sub/up"),
        (durl, "%2fetc%2fpasswd"),
        (durl, "sub//b.txt"),
        (durl, ".%2fa.txt"),
    ] {
        let url = format!("{base}/{rest}");
        let r = curl(&s, &["--path-as-is", "-w", "\n%{http_code}", &url]);
        let text = String::from_utf8_lossy(&r.stdout);
        assert!(text.ends_with("404"), "{rest}: {text}");
        assert!(!text.contains("secret"), "{rest}: {text}");
    }
    for other in ["/", "/s/", "/etc/passwd", "/s/../secret.txt"] {
        let url = format!("https://{}{other}", s.addr);
        assert_eq!(status(&s, &["--path-as-is"], &url), "404", "{other}");
    }
    assert_eq!(
        status(&s, &["-X", "DELETE"], &format!("{furl}/a.txt")),
        "405"
    );
}

#[test]
fn sft_clients_keep_working_on_the_same_port_during_http_downloads() {
    if !have("curl") {
        return;
    }
    let (s, _state) = server(&[]);
    let data = common::noise(4 << 20, 3);
    put_file(&s, "load.bin", &data);
    let j = share(&s, &["load.bin"]);
    let url = j["download_url"].as_str().unwrap().to_string();
    let sum = sha256_hex(&data);
    let cert = s.cert.clone();
    // bounded: 8 workers x 5 downloads, each checked
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (url, cert, sum) = (url.clone(), cert.clone(), sum.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let flag = if i % 2 == 0 { "--http2" } else { "--http1.1" };
                    let o = Command::new("curl")
                        .args(["-s", "--max-time", "60", flag, "--cacert"])
                        .arg(&cert)
                        .arg(&url)
                        .output()
                        .unwrap();
                    assert_eq!(sha256_hex(&o.stdout), sum);
                }
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    for k in 0..5u64 {
        let src = dir.path().join(format!("up{k}.bin"));
        let small = common::noise(200_000 + k as usize, 100 + k);
        std::fs::write(&src, &small).unwrap();
        s.client().arg("put").arg(&src).assert().success();
        let back = dir.path().join(format!("back{k}.bin"));
        s.client()
            .args(["get", &format!("up{k}.bin"), "-o"])
            .arg(&back)
            .assert()
            .success();
        assert_eq!(std::fs::read(&back).unwrap(), small);
    }
    assert!(start.elapsed() < Duration::from_secs(120));
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn web_off_serves_no_https_and_makes_no_links() {
    if !have("curl") {
        return;
    }
    let (s, _state) = server(&["--web", "off"]);
    put_file(&s, "a.txt", b"x");
    let out = s.client().args(["share", "a.txt"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--web off"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = curl(&s, &[&format!("https://{}/", s.addr)]);
    assert!(!r.status.success(), "no HTTPS with --web off");
    s.client().arg("ls").assert().success();
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Run headless Chromium on a URL with `what` (e.g. --dump-dom); stdout.
/// Downloads land in PROFILE/home/Downloads.
fn headless(bin: &str, what: &[&str], url: &str, profile: &Path) -> String {
    headless_within(90, bin, what, url, profile)
}

fn headless_within(secs: u32, bin: &str, what: &[&str], url: &str, profile: &Path) -> String {
    let out = Command::new("timeout")
        .env("HOME", profile.join("home"))
        .arg(secs.to_string())
        .arg(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            // the test's self-signed certificate; only in this test
            "--ignore-certificate-errors",
            "--window-size=900,640",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(what)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn headless_chromium_shows_the_share_page_with_the_name_and_digest() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is missing; .ci/run installs it"
        );
        eprintln!("SKIPPED: chromium is not installed");
        return;
    };
    let (s, _state) = server(&[]);
    let data = b"quarterly numbers, final\n".repeat(40_000);
    put_file(&s, "report-2026.csv", &data);
    put_file(
        &s,
        "photos/<img src=x onerror=alert(1)>.jpg",
        b"not really a jpeg",
    );
    let j = share(
        &s,
        &["report-2026.csv", "--expires", "7d", "--downloads", "10"],
    );
    let url = j["url"].as_str().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(bin, &["--dump-dom"], url, profile.path());
    assert!(dom.contains("report-2026.csv"), "{dom}");
    assert!(dom.contains(&sha256_hex(&data)), "{dom}");
    assert!(dom.contains("Download"), "{dom}");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-share.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        bin,
        &[&format!("--screenshot={}", shot.display())],
        url,
        profile.path(),
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "a real screenshot"
    );
    // a directory link: the listing escapes the names it shows
    let d = share(&s, &["photos"]);
    let dom = headless(
        bin,
        &["--dump-dom"],
        d["url"].as_str().unwrap(),
        profile.path(),
    );
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;.jpg"),
        "{dom}"
    );
    assert!(!dom.contains("<img src=x"), "{dom}");
    // the download button's target, fetched by the browser itself (a
    // download page never finishes loading: the browser is stopped after 10 s)
    let dl = j["download_url"].as_str().unwrap();
    headless_within(10, bin, &["--dump-dom"], dl, profile.path());
    let saved = profile.path().join("home/Downloads/report-2026.csv");
    let until = Instant::now() + Duration::from_secs(10);
    while !saved.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read(&saved).expect("chromium saved the download"),
        data
    );
    // the browse page asks for a token first
    let dom = headless(
        bin,
        &["--dump-dom"],
        &format!("https://{}/browse/", s.addr),
        profile.path(),
    );
    assert!(
        dom.contains("action=\"/browse/login\"") && dom.contains("type=\"password\""),
        "{dom}"
    );
}

#[test]
fn the_browse_page_signs_in_with_a_token_once_and_makes_links_behind_csrf() {
    if !have("curl") {
        return;
    }
    let (s, _state) = server(&[]);
    put_file(&s, "docs/plan.txt", b"the plan\n");
    let base = format!("https://{}", s.addr);
    let jar = tempfile::tempdir().unwrap();
    let cookies = jar.path().join("cookies");
    let c = cookies.to_str().unwrap();
    let page = curl(&s, &[&format!("{base}/browse/")]);
    assert!(String::from_utf8_lossy(&page.stdout).contains("action=\"/browse/login\""));
    // a wrong token: 403, no cookie
    assert_eq!(
        status(
            &s,
            &["-d", "token=wrong", "-c", c],
            &format!("{base}/browse/login")
        ),
        "403"
    );
    // the right one: a session cookie that is not the token
    let r = curl(
        &s,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-c",
            c,
            "-d",
            &format!("token={}", common::TOKEN),
            &format!("{base}/browse/login"),
        ],
    );
    let text = String::from_utf8_lossy(&r.stdout);
    let h = headers(&text);
    let set = header(&h, "set-cookie").expect("a session cookie");
    assert!(
        set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(common::TOKEN));
    let list =
        String::from_utf8(curl(&s, &["-b", c, &format!("{base}/browse/docs/")]).stdout).unwrap();
    assert!(list.contains("plan.txt"), "{list}");
    let csrf = list
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    // a form without the CSRF token (as a cross-site form would be) is refused
    assert_eq!(
        status(
            &s,
            &["-b", c, "-d", "path=docs/plan.txt"],
            &format!("{base}/browse/share")
        ),
        "403"
    );
    // without the cookie, no share either
    let r = curl(
        &s,
        &[
            "-d",
            &format!("csrf={csrf}&path=docs/plan.txt"),
            &format!("{base}/browse/share"),
        ],
    );
    assert!(!String::from_utf8_lossy(&r.stdout).contains("/s/"));
    let made = String::from_utf8(
        curl(
            &s,
            &[
                "-b",
                c,
                "-d",
                &format!("csrf={csrf}&path=docs%2Fplan.txt&expires=1h"),
                &format!("{base}/browse/share"),
            ],
        )
        .stdout,
    )
    .unwrap();
    let url = made
        .split("<pre id=\"url\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("the link is shown")
        .to_string();
    assert!(url.starts_with(&format!("{base}/s/")), "{url}");
    assert_eq!(
        curl(&s, &[&format!("{url}/plan.txt")]).stdout,
        b"the plan\n"
    );
    // signing out ends the session
    curl(
        &s,
        &[
            "-b",
            c,
            "-c",
            c,
            "-d",
            &format!("csrf={csrf}"),
            &format!("{base}/browse/logout"),
        ],
    );
    let after =
        String::from_utf8(curl(&s, &["-b", c, &format!("{base}/browse/docs/")]).stdout).unwrap();
    assert!(after.contains("action=\"/browse/login\"") && !after.contains("plan.txt"));
    assert!(!s.log_text().contains(common::TOKEN));
}

/// A TLS connection to the server offering only `alpn`.
async fn tls_with_alpn(
    s: &Server,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let (cfg, _) = sft::tls::client_config(&s.trust()).unwrap();
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_peers_are_held_to_the_deadlines_and_the_session_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !have("curl") {
        return;
    }
    let (s, _state) = server(&["--handshake-timeout", "1s", "--max-connections", "1"]);
    put_file(&s, "a.txt", b"hello\n");
    // headers that never end: closed at the deadline
    let mut slow = tls_with_alpn(&s, b"http/1.1").await;
    slow.write_all(b"GET /s/x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // a connection that sends nothing at all: the same
    let mut idle = tls_with_alpn(&s, b"h2").await;
    let start = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(start.elapsed() < Duration::from_secs(5));
    // a browser that made a request holds the one session slot...
    let mut held = tls_with_alpn(&s, b"http/1.1").await;
    held.write_all(b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    held.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 404");
    // ...so the next one is told the server is busy, and an sft client too
    let base = format!("https://{}/s/x", s.addr);
    let cert = s.cert.clone();
    let code = tokio::task::spawn_blocking(move || {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&cert)
            .arg(&base)
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(code, "503");
    drop(held);
    // once it leaves, the slot is free again
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = false;
    for _ in 0..20 {
        let o = s.client().arg("ls").output().unwrap();
        if o.status.success() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the slot came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_rapid_reset_flood_is_cut_off_and_the_server_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (s, _state) = server(&[]);
    let mut t = tls_with_alpn(&s, b"h2").await;
    let frame = |ty: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(&[ty, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[])); // SETTINGS
    // GET https / (static table: :method GET, :scheme https, :path /), :authority "a"
    let headers = [0x82, 0x87, 0x84, 0x41, 0x01, b'a'];
    for i in 0..5_000u32 {
        let id = 2 * i + 1;
        out.extend(frame(1, 0x5, id, &headers)); // HEADERS, END_STREAM|END_HEADERS
        out.extend(frame(3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    // the server may close while we are still writing
    let _ = t.write_all(&out).await;
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), t.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the flooding connection is closed");
    // a GOAWAY (type 7) was sent before the close
    let mut pos = 0;
    let mut goaway = false;
    while pos + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[pos], got[pos + 1], got[pos + 2]]) as usize;
        goaway |= got[pos + 3] == 7;
        pos += 9 + len;
    }
    assert!(goaway, "GOAWAY before the close");
    s.client().arg("ls").assert().success();
}

#[test]
fn a_download_in_flight_finishes_when_the_server_is_told_to_stop() {
    if !have("curl") {
        return;
    }
    let (mut s, _state) = server(&["--grace", "20s"]);
    let data = common::noise(6 << 20, 44);
    put_file(&s, "slow.bin", &data);
    let j = share(&s, &["slow.bin"]);
    let url = j["download_url"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("slow.bin");
    // about 3 s at 2 MB/s
    let mut dl = Command::new("curl")
        .args(["-s", "--max-time", "60", "--limit-rate", "2M", "--cacert"])
        .arg(&s.cert)
        .arg("-o")
        .arg(&out)
        .arg(&url)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    s.send_signal("TERM");
    // new connections are refused at once...
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(status(&s, &["--max-time", "5"], &url), "200");
    // ...while the download in flight completes, byte-exact
    assert!(dl.wait().unwrap().success());
    assert_eq!(sha256_hex(&std::fs::read(&out).unwrap()), sha256_hex(&data));
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn a_byte_flipped_at_rest_cuts_the_download_off_before_its_end() {
    if !have("curl") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let (s, _state) = server(&[]);
    let data = common::noise(1 << 20, 9);
    let path = put_file(&s, "rot.bin", &data);
    let j = share(&s, &["rot.bin"]);
    let url = j["download_url"].as_str().unwrap();
    // bit rot: one byte changes, size and modification time stay
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    f.write_at(&[data[500_000] ^ 0x40], 500_000).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    for flag in ["--http2", "--http1.1"] {
        let r = curl(&s, &[flag, url]);
        assert!(
            !r.status.success(),
            "{flag}: curl sees an incomplete download"
        );
        assert!(r.stdout.len() < data.len(), "{flag}: never the whole file");
    }
    assert!(s.log_text().contains("does not match its recorded SHA-256"));
}

#[test]
fn sighup_gives_https_the_new_certificate_too() {
    if !have("curl") {
        return;
    }
    let (s, _state) = server(&[]);
    put_file(&s, "a.txt", b"hello\n");
    let j = share(&s, &["a.txt"]);
    let url = j["download_url"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.pem");
    std::fs::copy(&s.cert, &old).unwrap();
    let fresh = sft::certs::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(&s.cert, &fresh.cert).unwrap();
    common::write_private(&s.key, fresh.key.as_bytes());
    s.send_signal("HUP");
    let until = Instant::now() + Duration::from_secs(10);
    while !s.log_text().contains("certificate and users reloaded") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    // curl trusts the new certificate, no longer the old one
    assert_eq!(status(&s, &[], url), "200");
    let r = Command::new("curl")
        .args(["-s", "--max-time", "20", "--cacert"])
        .arg(&old)
        .arg(url)
        .output()
        .unwrap();
    assert!(!r.status.success(), "the old certificate is gone");
}

#[test]
fn a_reader_may_share_what_it_reads_and_its_links_are_its_own() {
    if !have("curl") {
        return;
    }
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users.toml");
    let reader = common::add_user(&users, "rita", "read");
    let writer = common::add_user(&users, "walt", "write");
    let (s, _state) = server(&["--users", users.to_str().unwrap()]);
    put_file(&s, "a.txt", b"for everyone\n");
    let as_user = |token: &str, args: &[&str]| {
        s.client()
            .env("SFT_TOKEN", token)
            .arg("share")
            .args(args)
            .arg("--json")
            .output()
            .unwrap()
    };
    let made = as_user(&reader, &["a.txt"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let j: Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(j["user"], "rita");
    let id = j["id"].as_str().unwrap();
    assert_eq!(status(&s, &[], j["download_url"].as_str().unwrap()), "200");
    // another user neither sees nor revokes it; an admin sees it
    let theirs = as_user(&writer, &["--list"]);
    assert!(!String::from_utf8_lossy(&theirs.stdout).contains(id));
    assert!(!as_user(&writer, &["--revoke", id]).status.success());
    let all = as_user(common::TOKEN, &["--list"]);
    assert!(String::from_utf8_lossy(&all.stdout).contains(id));
    // a link dies with its maker's account
    let rm = Command::new(common::bin())
        .args(["user", "rm", "rita", "--users"])
        .arg(&users)
        .output()
        .unwrap();
    assert!(rm.status.success());
    let until = Instant::now() + Duration::from_secs(10);
    let url = j["download_url"].as_str().unwrap();
    while status(&s, &[], url) != "404" && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status(&s, &[], url), "404");
}

/// wget 1.21 sends no ALPN; the download URL still works with it as is.
#[test]
fn wget_downloads_a_shared_file_as_is() {
    if !have("wget") {
        return;
    }
    let (s, _state) = server(&[]);
    let data = common::noise(1 << 20, 61);
    put_file(&s, "w.bin", &data);
    let j = share(&s, &["w.bin"]);
    let url = j["download_url"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.bin");
    let r = Command::new("wget")
        .args(["-q", "--timeout=30", "--tries=1"])
        .arg(format!("--ca-certificate={}", s.cert.display()))
        .arg("-O")
        .arg(&out)
        .arg(url)
        .output()
        .unwrap();
    assert!(r.status.success(), "wget: {r:?}");
    assert_eq!(std::fs::read(&out).unwrap(), data);
}
