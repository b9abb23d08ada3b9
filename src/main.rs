//! The `sft` binary: parse, run, turn the outcome into an exit code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let mut cli = match sft::cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Err(e) = sft::config::apply_addresses(&mut cli) {
        return report(&e, cli.conn.json);
    }
    let (default_level, json) = match &cli.cmd {
        sft::cli::Command::Serve(a) => ("info", matches!(a.log_format, sft::cli::LogFormat::Json)),
        _ => match cli.conn.verbose {
            0 | 1 => ("warn", false),
            2 => ("info", false),
            _ => ("debug", false),
        },
    };
    let json_errors = cli.conn.json;
    let filter =
        EnvFilter::try_from_env("SFT_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // a log line that cannot be written (stderr on a full disk, EIO, a
        // closed pipe) is lost, not reported with eprintln!, which panics
        // when stderr fails and so took down the task of the connection
        // being logged (benches/faults.sh, case eio-write)
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sft: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(sft::app::run(cli));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // a closed stdout (`sft ls | head -1`) ends any command quietly
        Err(e) if sft::app::stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => report(&e, json_errors),
    }
}

/// Print an error (one line, or JSON with --json) and give its exit code.
fn report(e: &sft::error::Error, json: bool) -> ExitCode {
    if json {
        let v = serde_json::json!({ "error": sft::app::error_value(e) });
        eprintln!("{v}");
    } else {
        eprintln!("sft: error: {e}");
    }
    ExitCode::from(e.kind.exit_code())
}
