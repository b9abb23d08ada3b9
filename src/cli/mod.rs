//! The command line (clap types only). Doc comments are the help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod serve;

pub use serve::*;

/// sft: secure file transfer over TLS 1.3, with SHA-256 verified end to end.
#[derive(Debug, Clone, Parser)]
#[command(name = "sft", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub cmd: Command,
}

/// How the client reaches and trusts a server (may come before or after the subcommand).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection options")]
pub struct ConnArgs {
    /// Server address, HOST:PORT
    #[arg(long, global = true, env = "SFT_SERVER", value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Access token (prefer SFT_TOKEN or --token-file: arguments are visible to other users)
    #[arg(long, global = true, env = "SFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the access token (mode 0600)
    #[arg(long, global = true, env = "SFT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust the server through this CA certificate (or the server's own certificate), PEM
    #[arg(long, global = true, env = "SFT_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Trust the server whose certificate has this SHA-256 fingerprint (printed by `sft serve`)
    #[arg(long, global = true, env = "SFT_PIN", value_name = "SHA256")]
    pub pin: Option<String>,
    /// Deadline for connecting and for each reply [default: 30s]
    #[arg(long, global = true, env = "SFT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// zstd on the wire: auto (adapts; raw for incompressible data), off, or a level 1-19 [default: auto]
    #[arg(
        long,
        global = true,
        env = "SFT_COMPRESS",
        value_name = "auto|off|LEVEL"
    )]
    pub compress: Option<String>,
    /// After each transfer, print file bytes, wire bytes, ratio, time and MB/s on stderr
    #[arg(long, global = true, help_heading = "Output options")]
    pub stats: bool,
    /// Servers trusted earlier, as in OpenSSH's known_hosts (default ~/.config/sft/known_servers)
    #[arg(long, global = true, env = "SFT_KNOWN_SERVERS", value_name = "FILE")]
    pub known_servers: Option<PathBuf>,
    /// Without a terminal, trust and record a server not yet in known_servers (its fingerprint is printed)
    #[arg(long, global = true)]
    pub trust_on_first_use: bool,
    /// Limit the transfer rate, bytes per second (e.g. 10MB, 1.5GiB)
    #[arg(long, global = true, env = "SFT_LIMIT_RATE", value_name = "RATE")]
    pub limit_rate: Option<String>,
    /// After a lost connection, reconnect (with backoff) and resume up to N times; 0 disables [default: 3]
    #[arg(long, global = true, env = "SFT_RETRIES", value_name = "N")]
    pub retries: Option<u32>,
    /// Start interrupted transfers over instead of resuming them
    #[arg(long, global = true)]
    pub no_resume: bool,
    /// Connections for one large file: auto (on long links 4, then 8 while the rate grows), or 1-64 [default: auto]
    #[arg(long, global = true, env = "SFT_STREAMS", value_name = "auto|N")]
    pub streams: Option<String>,
    /// Settings profile from the config file (flags and environment variables override it)
    #[arg(long, global = true, env = "SFT_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Config file [default: ~/.config/sft/config.toml]
    #[arg(long, global = true, env = "SFT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable output: one JSON object per line on stdout, errors as JSON on stderr
    #[arg(long, global = true, help_heading = "Output options")]
    pub json: bool,
    /// No progress bars or notes; only results and errors
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Output options"
    )]
    pub quiet: bool,
    /// More detail: transfer statistics, and -vv for protocol debugging on stderr
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Output options")]
    pub verbose: u8,
    /// The server named by addresses in the arguments (`sft://HOST/PATH`,
    /// `PROFILE:PATH`, `HOST:PATH`), filled in by `config::apply_addresses`.
    #[arg(skip)]
    pub target: Option<crate::config::remote::Target>,
    /// Which of server, token, token_file, pin and ca came from the
    /// environment (filled in by `try_parse`).
    #[arg(skip)]
    pub from_env: Vec<String>,
}

/// The connection options, which mean nothing to these commands: hidden
/// from their help (still accepted, as they may come before the command).
const NOT_CONNECTING: &[&str] = &["serve", "cert", "user", "completions", "man"];
const CONNECTION_ARGS: &[&str] = &[
    "server",
    "token",
    "token_file",
    "ca",
    "pin",
    "timeout",
    "compress",
    "stats",
    "known_servers",
    "trust_on_first_use",
    "limit_rate",
    "retries",
    "no_resume",
    "streams",
    "profile",
    "config",
];
/// Commands that move no file data, and the options only transfers use.
const NO_TRANSFER: &[&str] = &[
    "ls", "rm", "sums", "verify", "mkdir", "df", "trust", "admin",
];
const TRANSFER_ARGS: &[&str] = &[
    "compress",
    "stats",
    "limit_rate",
    "retries",
    "no_resume",
    "streams",
];

/// The command line, with each command's help showing only the options that
/// apply to it. Parse with this rather than `Cli::command()`.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // a command that already has an argument of a global's name does not get
    // the global: give these commands hidden copies, which still parse
    let hidden_copies = |cmd: &clap::Command, ids: &[&str]| -> Vec<clap::Arg> {
        cmd.get_arguments()
            .filter(|a| ids.contains(&a.get_id().as_str()))
            .map(|a| a.clone().global(false).hide(true))
            .collect()
    };
    let groups = [
        (NOT_CONNECTING, hidden_copies(&cmd, CONNECTION_ARGS)),
        (NO_TRANSFER, hidden_copies(&cmd, TRANSFER_ARGS)),
    ];
    for (names, hidden) in groups {
        for name in names {
            cmd = cmd.mut_subcommand(name, |mut sub| {
                for a in &hidden {
                    if !sub.get_arguments().any(|x| x.get_id() == a.get_id()) {
                        sub = sub.arg(a.clone());
                    }
                }
                sub
            });
        }
    }
    cmd
}

/// Parse the process's arguments with [`command`].
pub fn try_parse() -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    let matches = command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    for id in ENV_TRACKED {
        if matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable) {
            cli.conn.from_env.push(id.to_string());
        }
    }
    Ok(cli)
}

/// Settings whose source matters: SFT_PIN, SFT_TOKEN, ... belong to the
/// server of SFT_SERVER, and are not sent to another one named by an address.
const ENV_TRACKED: &[&str] = &["server", "token", "token_file", "pin", "ca"];

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server
    Serve(Box<ServeArgs>),
    /// List a remote directory or file (-l: size, time, owner, SHA-256)
    Ls {
        /// Remote directory or file (default: the root)
        dir: Option<String>,
        /// Long form: mode, size, modification time, owner, SHA-256
        #[arg(short, long)]
        long: bool,
        /// Exact byte counts in the long form
        #[arg(long)]
        bytes: bool,
        /// The whole SHA-256 in the long form (by default its first 12 hex digits; `sums` and --json give it whole)
        #[arg(long)]
        full_digest: bool,
    },
    /// Upload files (or a tree with -r); prints each one's SHA-256 and stored name
    #[command(
        after_help = "Examples:\n  sft put a.txt b.txt\n  sft put -r photos backups/   (stored as backups/photos/...)\n  tar c dir | sft put - --as dir.tar"
    )]
    Put {
        /// Local files ('-' for standard input, with --as); with -r: DIR [REMOTE_DIR]
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Upload a directory tree: sft put -r DIR [REMOTE_DIR]
        #[arg(short, long)]
        recursive: bool,
        /// Remote name (a single file, or '-')
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Remote directory to upload into
        #[arg(long, value_name = "REMOTE_DIR", conflicts_with = "as_name")]
        to: Option<String>,
        /// Replace a remote file of the same name instead of storing "name (1).ext"
        #[arg(long)]
        overwrite: bool,
        /// Do not send the files' permission bits and modification times (the server then uses its default mode and the upload time)
        #[arg(long)]
        no_preserve: bool,
        /// Set for `sft put FILE HOST:NAME`: NAME may be an existing remote
        /// directory, which the file then goes into (as scp does).
        #[arg(skip)]
        dest_may_be_dir: bool,
    },
    /// Download files (or a tree with -r); saved as "name (1).ext" if the target exists
    #[command(
        after_help = "Examples:\n  sft get a.txt b.txt -o downloads/\n  sft get -r photos ./copy    (saved as ./copy/photos/...)\n  sft get --check SHA256SUMS\n  sft get dir.tar -o - | tar x"
    )]
    Get {
        /// Remote files; with -r: REMOTE_DIR [LOCAL_DIR]
        #[arg(value_name = "NAME", required_unless_present = "check")]
        names: Vec<String>,
        /// Local file, directory (DIR/) or '-' for standard output
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Download a directory tree: sft get -r REMOTE_DIR [LOCAL_DIR]
        #[arg(short, long)]
        recursive: bool,
        /// Fail (exit 8) unless the file's SHA-256 is exactly this
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Download every file listed in a sha256sum-style file and verify each
        #[arg(long, value_name = "SHA256SUMS", conflicts_with_all = ["sha256", "recursive"])]
        check: Option<PathBuf>,
        /// Replace existing local files
        #[arg(long)]
        force: bool,
        /// Do not apply the server's permission bits and modification times (files get the umask's mode and the download time)
        #[arg(long)]
        no_preserve: bool,
    },
    /// Remove remote files, or a directory tree with -r (write role: only files you uploaded)
    Rm {
        /// Remote names
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove directories and everything in them
        #[arg(short, long)]
        recursive: bool,
        /// Do not ask for confirmation (needed for -r without a terminal)
        #[arg(short, long)]
        yes: bool,
    },
    /// Print "SHA256  NAME" for every remote file (under DIR), as sha256sum does
    Sums {
        /// Remote directory (default: all files)
        dir: Option<String>,
    },
    /// Check a remote file's SHA-256 without downloading it (exit 8 if it differs)
    Verify {
        /// Remote file name
        name: String,
        /// The expected SHA-256
        #[arg(long, value_name = "HEX")]
        sha256: String,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff)
    Man,
    /// Show the settings in effect (secrets masked)
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Create a remote directory (and its parents)
    Mkdir {
        /// Remote directory name
        name: String,
    },
    /// An interactive session over one connection, like sftp (ls, get, put, cd, lcd, ...)
    Shell {
        /// Remote directory to start in; may name the server: sft://HOST[:PORT]/DIR, PROFILE:DIR or HOST:DIR
        #[arg(value_name = "[SERVER:]DIR")]
        dir: Option<String>,
    },
    /// Storage used, reserved and allowed: yours, or (admin) the server's and every user's
    Df {
        /// Exact byte counts instead of KiB/MiB/GiB
        #[arg(long)]
        bytes: bool,
    },
    /// Share a file or directory with anyone: prints an HTTPS link (and a direct download link)
    #[command(
        after_help = "Examples:\n  sft share report.pdf                       (a link for 24 hours)\n  sft share photos/ --expires 7d --downloads 20\n  sft share --list\n  sft share --revoke ID"
    )]
    Share(ShareArgs),
    /// Trust a server: record its certificate fingerprint in known_servers, list or remove entries
    Trust(TrustArgs),
    /// Make certificates: a CA, server certificates it signs, or a self-signed one
    #[command(subcommand)]
    Cert(CertCmd),
    /// Manage the users file of a server (run where the server's files are)
    #[command(subcommand)]
    User(UserCmd),
    /// Administer a running server (admin role)
    #[command(subcommand)]
    Admin(AdminCmd),
}

#[derive(Debug, Clone, Args)]
pub struct ShareArgs {
    /// Remote file or directory to share
    #[arg(required_unless_present_any = ["list", "revoke"], conflicts_with_all = ["list", "revoke"])]
    pub name: Option<String>,
    /// How long the link works, e.g. 2h, 7d; "never" for no expiry
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub expires: String,
    /// Most downloads the link allows (default: no limit)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub downloads: Option<u64>,
    /// List your share links (an admin: everyone's)
    #[arg(long, conflicts_with = "revoke")]
    pub list: bool,
    /// Revoke a share link by its id (from --list)
    #[arg(long, value_name = "ID")]
    pub revoke: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCmd {
    /// Print the effective settings and where each comes from
    Show,
}

#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// The server, HOST:PORT (default: --server / SFT_SERVER); with --pin, no connection is made
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
    /// List the trusted servers
    #[arg(long, conflicts_with_all = ["host", "remove"])]
    pub list: bool,
    /// Forget a server
    #[arg(long)]
    pub remove: bool,
    /// Replace a different fingerprint already recorded for this server
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CertCmd {
    /// Make a certificate authority: DIR/ca.pem and DIR/ca.key (0600)
    Ca {
        /// Directory to write to
        #[arg(long, default_value = "certs", value_name = "DIR")]
        out: PathBuf,
        /// The CA's common name
        #[arg(long, default_value = "sft CA")]
        cn: String,
        /// How long the CA is valid, in days (1 to 3650)
        #[arg(long, default_value_t = crate::certs::CA_DAYS, value_name = "N")]
        days: u32,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
    /// Make a server certificate signed by a CA: DIR/server.pem and DIR/server.key (0600)
    Server {
        /// Directory holding ca.pem and ca.key
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// DNS name the certificate is for (repeatable)
        #[arg(long = "name", value_name = "DNS")]
        names: Vec<String>,
        /// IP address the certificate is for (repeatable)
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<std::net::IpAddr>,
        /// Directory to write to (default: the CA's directory)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// How long the certificate is valid, in days (1 to 3650)
        #[arg(long, default_value_t = crate::certs::SERVER_DAYS, value_name = "N")]
        days: u32,
        /// Where the CA's revocation list is published (written into the
        /// certificate as its CRL distribution point; see `sft cert crl`)
        #[arg(long, value_name = "URL")]
        crl_url: Option<String>,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
    /// (Re)issue the CA's revocation list, DIR/ca.crl (nothing revoked);
    /// publish it at the --crl-url given to `sft cert server`
    Crl {
        /// Directory holding ca.pem and ca.key
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// How long the list is valid before it must be issued again, in days
        #[arg(long, default_value_t = 30, value_name = "N")]
        days: u32,
    },
    /// Make a self-signed server certificate: DIR/server.pem and DIR/server.key (0600)
    SelfSigned {
        /// DNS name (repeatable; default: localhost and this host's name)
        #[arg(long = "name", value_name = "DNS")]
        names: Vec<String>,
        /// IP address (repeatable; default: 127.0.0.1 and ::1)
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<std::net::IpAddr>,
        /// Directory to write to
        #[arg(long, default_value = "certs", value_name = "DIR")]
        out: PathBuf,
        /// How long the certificate is valid, in days (1 to 3650)
        #[arg(long, default_value_t = crate::certs::SERVER_DAYS, value_name = "N")]
        days: u32,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// ls and get
    Read,
    /// read, plus put, and rm of the files it uploaded
    Write,
    /// everything: rm of any file, shutdown, status
    Admin,
}

#[derive(Debug, Clone, Args)]
pub struct UsersFileArg {
    /// The users file (TOML) that `sft serve --users` reads
    #[arg(long, env = "SFT_USERS", value_name = "FILE")]
    pub users: PathBuf,
}

#[derive(Debug, Clone, Subcommand)]
pub enum UserCmd {
    /// Add a user and print its token (shown once; only its SHA-256 is stored)
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Storage limit, e.g. 10GiB
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
        /// Most files the user may own
        #[arg(long, value_name = "N")]
        max_files: Option<u64>,
        #[command(flatten)]
        file: UsersFileArg,
    },
    /// List users: name, role, limits
    List {
        #[command(flatten)]
        file: UsersFileArg,
    },
    /// Remove a user (its sessions end at their next command)
    Rm {
        name: String,
        #[command(flatten)]
        file: UsersFileArg,
    },
    /// Give a user a new token (the old one stops working) and print it
    Token {
        name: String,
        #[command(flatten)]
        file: UsersFileArg,
    },
    /// Change a user's role (a running server applies it from the user's next command)
    Role {
        name: String,
        #[arg(value_enum)]
        role: RoleArg,
        #[command(flatten)]
        file: UsersFileArg,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminCmd {
    /// Stop the server: no new connections, transfers in flight get the grace period
    Shutdown {
        /// How long transfers in flight may take (default: the server's --grace)
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
    },
    /// Uptime, connections, transfers in flight, bytes in/out, storage used
    Status,
    /// Reload the server's certificate and users file now
    Reload,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
        super::command().debug_assert();
    }
}
