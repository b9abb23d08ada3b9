//! Test support: a PKI made with rcgen at test time, a real `sft serve` on
//! 127.0.0.1:0 (its address read from its first line), the real client
//! binary, and a raw protocol client for hostile-peer cases.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sft::connection::{FrameReader, FrameWriter};
use sft::protocol::Msg;
use sha2::{Digest, Sha256};

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sft"))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Write a private (0600) file.
pub fn write_private(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pin: String,
    pub log: PathBuf,
    /// Environment for the server process (e.g. object-store credentials).
    pub env: Vec<(String, String)>,
}

#[derive(Default)]
pub struct Opts<'a> {
    pub extra: &'a [&'a str],
    /// certificate names (default localhost + 127.0.0.1)
    pub pem: Option<sft::certs::Pem>,
    /// storage root (default: a fresh directory)
    pub root: Option<PathBuf>,
    /// SFT_LOG for the server (default "info")
    pub log_level: Option<&'a str>,
    /// Environment variables for the server.
    pub env: &'a [(&'a str, &'a str)],
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(Opts::default())
    }

    pub fn start_args(extra: &[&str]) -> Server {
        Self::start_with(Opts {
            extra,
            ..Default::default()
        })
    }

    pub fn start_with(o: Opts) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = o.root.clone().unwrap_or_else(|| dir.path().join("root"));
        std::fs::create_dir_all(&root).unwrap();
        let pem = o.pem.unwrap_or_else(|| {
            sft::certs::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap()
        });
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &pem.cert).unwrap();
        write_private(&key, pem.key.as_bytes());
        let tokens = dir.path().join("tokens");
        write_private(&tokens, format!("{TOKEN}\nsecond-token\n").as_bytes());
        let pin = sft::tls::fingerprint(&sft::tls::load_certs(&cert).unwrap()[0]);
        let log = dir.path().join("server.log");
        let mut s = Server {
            child: spawn_placeholder(),
            addr: String::new(),
            dir,
            root,
            cert,
            key,
            pin,
            log,
            env: o
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.launch(
            &tokens,
            o.extra,
            o.log_level.unwrap_or("info"),
            "127.0.0.1:0",
        );
        s
    }

    fn launch(&mut self, tokens: &Path, extra: &[&str], log_level: &str, listen: &str) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", listen, "--fsync", "never"])
            .arg("--root")
            .arg(&self.root)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .arg("--token-file")
            .arg(tokens)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SFT_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf));
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {} // keep draining
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            });
        self.addr = first
            .strip_prefix("listening on ")
            .expect("first line names the address")
            .to_string();
        let old = std::mem::replace(&mut self.child, child);
        drop(old);
    }

    /// Kill the server with SIGKILL (no cleanup at all) and start it again
    /// on the same root, certificate and tokens (a new port).
    pub fn crash_and_restart(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let tokens = self.dir.path().join("tokens");
        self.launch(&tokens, extra, "info", "127.0.0.1:0");
    }

    /// Kill the server with SIGKILL, and after `pause` start it again on the
    /// same port (clients that retry find it there).
    pub fn crash_and_restart_same_port(&mut self, pause: Duration, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(pause);
        let tokens = self.dir.path().join("tokens");
        let addr = self.addr.clone();
        self.launch(&tokens, extra, "info", &addr);
    }

    /// The client binary with server, pin and token set through a clean
    /// environment, for running in the background (spawn, pipes).
    pub fn process(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SFT_SERVER", &self.addr)
            .env("SFT_PIN", &self.pin)
            .env("SFT_TOKEN", TOKEN);
        c
    }

    /// The same, as an assert_cmd command (with a deadline).
    pub fn client(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::from_std(self.process());
        c.timeout(Duration::from_secs(120));
        c
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Names of the regular files under the root (recursively), sorted.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }

    pub fn send_signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the server to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn trust(&self) -> sft::tls::Trust {
        sft::tls::Trust::Pin(sft::tls::parse_pin(&self.pin).unwrap())
    }

    /// A raw protocol session (TLS, HELLO, AUTH done).
    pub async fn raw(&self) -> Raw {
        let mut r = Raw::tls(&self.addr, &self.trust()).await;
        r.w.send(&Msg::Hello {
            min_version: 1,
            max_version: 1,
            features: 0,
        })
        .await
        .unwrap();
        r.w.send_now(&Msg::Auth {
            secret: TOKEN.as_bytes().to_vec(),
        })
        .await
        .unwrap();
        assert!(matches!(r.next().await, Msg::Welcome { .. }));
        assert!(matches!(r.next().await, Msg::AuthOk { .. }));
        r
    }
}

fn spawn_placeholder() -> Child {
    Command::new("true").spawn().unwrap()
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(base, &p, out);
        } else if ft.is_file() {
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A raw protocol client, for sending what a well-behaved client never would.
pub struct Raw {
    pub r: FrameReader<tokio::io::ReadHalf<Tls>>,
    pub w: FrameWriter<tokio::io::WriteHalf<Tls>>,
}

impl Raw {
    pub async fn tls(addr: &str, trust: &sft::tls::Trust) -> Raw {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (cfg, _) = sft::tls::client_config(trust).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .unwrap();
        let (rd, wr) = tokio::io::split(tls);
        Raw {
            r: FrameReader::new(rd),
            w: FrameWriter::new(wr),
        }
    }

    pub async fn next(&mut self) -> Msg {
        tokio::time::timeout(Duration::from_secs(30), self.r.read_frame())
            .await
            .expect("reply in time")
            .expect("a frame")
            .expect("not closed")
    }

    /// The next frame, or None if the server closed the connection.
    pub async fn next_or_closed(&mut self) -> Option<Msg> {
        tokio::time::timeout(Duration::from_secs(30), self.r.read_frame())
            .await
            .expect("reply in time")
            .unwrap_or_default()
    }

    /// Send bytes as DATA frames of at most 1 MiB.
    pub async fn data_chunks(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(sft::protocol::MAX_BLOCK) {
            self.data(c).await;
        }
    }

    pub async fn data(&mut self, bytes: &[u8]) {
        let mut f = sft::protocol::data_header(
            sft::protocol::Encoding::Raw,
            bytes.len() as u32,
            bytes.len(),
        )
        .to_vec();
        f.extend_from_slice(bytes);
        self.w.write_raw(&f).await.unwrap();
    }
}

/// Add a user to a users file through `sft user add`; its token.
pub fn add_user(users: &Path, name: &str, role: &str) -> String {
    let out = Command::new(bin())
        .args(["user", "add", name, "--role", role, "--users"])
        .arg(users)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sft user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("sft_") && token.len() == 68, "{token}");
    token
}

/// stderr of a finished assert_cmd run, as text.
pub fn stderr_text(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// stdout of a finished assert_cmd run, as text.
pub fn stdout_text(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}
