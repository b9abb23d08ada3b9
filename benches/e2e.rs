//! End-to-end loopback benchmark (not part of the test suite):
//! `cargo bench --bench e2e`. Moves a file of random bytes (1 GiB by default)
//! up and down through the release binary over TLS on 127.0.0.1, reports MB/s
//! (median of interleaved repetitions), the server's peak RSS, and durable
//! uploads (`--fsync always`) next to `dd conv=fdatasync` on the same disk.
//!
//! Knobs: SFT_BENCH_MB (1024), SFT_BENCH_REPS (5), SFT_BENCH_DIR (target/sft-bench).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const TOKEN: &str = "bench-token-0123456789";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let mb = env_num("SFT_BENCH_MB", 1024);
    let reps = env_num("SFT_BENCH_REPS", 5) as usize;
    let dir = std::env::var_os("SFT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sft-bench"));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sft"));
    for sub in ["data", "srv", "cli", "conf"] {
        std::fs::create_dir_all(dir.join(sub)).expect("bench directory");
    }
    let data = dir.join("data/random.bin");
    let size = mb << 20;
    make_random(&data, size);
    let conf = dir.join("conf");
    let pem = sft::certs::self_signed(&["127.0.0.1".into()]).expect("certificate");
    std::fs::write(conf.join("cert.pem"), &pem.cert).expect("cert");
    write_private(&conf.join("key.pem"), pem.key.as_bytes());
    write_private(&conf.join("tokens"), TOKEN.as_bytes());
    let pin =
        sft::tls::fingerprint(&sft::tls::load_certs(&conf.join("cert.pem")).expect("cert")[0]);
    println!(
        "sft end-to-end bench: {mb} MiB of random data, {reps} repetitions, loopback, TLS 1.3, release build"
    );
    let _ = Command::new("cat")
        .arg(&data)
        .stdout(Stdio::null())
        .status(); // into the page cache

    // page-cache uploads and downloads
    let (mut server, addr) = start(&bin, &dir, &conf, "never");
    let mut put = Vec::new();
    let mut get = Vec::new();
    for _ in 0..reps {
        sync();
        put.push(mb_per_s(
            size,
            time(client(&bin, &addr, &pin).arg("put").arg(&data).args([
                "--as",
                "bench.bin",
                "--overwrite",
            ])),
        ));
        let out = dir.join("cli/bench.out");
        let _ = std::fs::remove_file(&out);
        sync();
        get.push(mb_per_s(
            size,
            time(
                client(&bin, &addr, &pin)
                    .args(["get", "bench.bin", "-o"])
                    .arg(&out),
            ),
        ));
        let _ = std::fs::remove_file(&out);
    }
    let rss = peak_rss_kib(server.id());
    stop(&mut server);

    // durable uploads against dd conv=fdatasync to the same disk
    let (mut server, addr) = start(&bin, &dir, &conf, "always");
    let mut durable = Vec::new();
    let mut dd = Vec::new();
    for _ in 0..reps {
        sync();
        let target = dir.join("srv/dd.bin");
        let t = time(
            Command::new("dd")
                .arg(format!("if={}", data.display()))
                .arg(format!("of={}", target.display()))
                .args(["bs=1M", "conv=fdatasync", "status=none"]),
        );
        dd.push(mb_per_s(size, t));
        let _ = std::fs::remove_file(&target);
        sync();
        durable.push(mb_per_s(
            size,
            time(client(&bin, &addr, &pin).arg("put").arg(&data).args([
                "--as",
                "durable.bin",
                "--overwrite",
            ])),
        ));
    }
    stop(&mut server);
    let _ = std::fs::remove_file(dir.join("srv/bench.bin"));
    let _ = std::fs::remove_file(dir.join("srv/durable.bin"));

    report("put into the page cache (--fsync never)", &put);
    report("get", &get);
    report("put, acknowledged durable (--fsync always)", &durable);
    report("dd conv=fdatasync, same disk", &dd);
    println!(
        "durable put / dd (median ratio): {:.2}",
        median(&durable) / median(&dd)
    );
    println!("server peak RSS: {:.1} MiB", rss as f64 / 1024.0);
}

fn make_random(path: &Path, size: u64) {
    if std::fs::metadata(path)
        .map(|m| m.len() == size)
        .unwrap_or(false)
    {
        return;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("data file"));
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).expect("write data");
    }
    f.flush().expect("write data");
}

fn write_private(p: &Path, data: &[u8]) {
    std::fs::write(p, data).expect("write");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn start(bin: &Path, dir: &Path, conf: &Path, fsync: &str) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--fsync", fsync])
        .arg("--root")
        .arg(dir.join("srv"))
        .arg("--cert")
        .arg(conf.join("cert.pem"))
        .arg("--key")
        .arg(conf.join("key.pem"))
        .arg("--token-file")
        .arg(conf.join("tokens"))
        .env("SFT_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    BufReader::new(out)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    (child, addr)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn client(bin: &Path, addr: &str, pin: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("SFT_SERVER", addr)
        .env("SFT_PIN", pin)
        .env("SFT_TOKEN", TOKEN)
        .stdout(Stdio::null());
    c
}

fn time(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let st = cmd.status().expect("run");
    assert!(st.success(), "{cmd:?} failed");
    t.elapsed().as_secs_f64()
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn report(what: &str, v: &[f64]) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    println!(
        "{what:<45} median {:7.1} MB/s  [{min:.1}-{max:.1}] n={}",
        median(v),
        v.len()
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
