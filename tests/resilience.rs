//! The server keeps serving when its surroundings fail: here, a log that
//! cannot be written (stderr a pipe nobody reads any more: a logger that
//! died). Found by benches/faults.sh (EIO injected on write): the logging
//! library reported its own write error with eprintln!, which panics when
//! stderr fails, and every connection being logged died with it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TOKEN, bin, write_private};

#[test]
fn a_server_whose_log_cannot_be_written_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let pem = sft::certs::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &pem.cert).unwrap();
    write_private(&key, pem.key.as_bytes());
    let tokens = dir.path().join("tokens");
    write_private(&tokens, format!("{TOKEN}\n").as_bytes());
    let pin = sft::tls::fingerprint(&sft::tls::load_certs(&cert).unwrap()[0]);

    let mut server = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--fsync", "never"])
        .arg("--root")
        .arg(&root)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--token-file")
        .arg(&tokens)
        .env("SFT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // nobody reads the log any more: every write to it fails (EPIPE)
    drop(server.stderr.take());
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening on ").unwrap().to_string();
    std::thread::spawn(move || for _ in lines {});

    let data = common::noise(200_000, 7);
    let local = dir.path().join("up.bin");
    std::fs::write(&local, &data).unwrap();
    let client = |args: &[&str]| {
        let mut c = assert_cmd::Command::new(bin());
        c.env_clear()
            .env("SFT_SERVER", &addr)
            .env("SFT_PIN", &pin)
            .env("SFT_TOKEN", TOKEN)
            .args(args)
            .timeout(Duration::from_secs(60));
        c
    };
    // several sessions, each logged at connection, auth and transfer
    for i in 0..3 {
        let name = format!("up-{i}.bin");
        client(&["put", local.to_str().unwrap(), "--as", &name])
            .assert()
            .success();
        let back = dir.path().join(format!("back-{i}.bin"));
        client(&["get", &name, "-o", back.to_str().unwrap()])
            .assert()
            .success();
        assert_eq!(std::fs::read(&back).unwrap(), data);
    }
    assert!(
        server.try_wait().unwrap().is_none(),
        "the server exited when its log could not be written"
    );
    let _ = server.kill();
    let _ = server.wait();
}
