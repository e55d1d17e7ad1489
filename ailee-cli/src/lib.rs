//! The binaries' shared front end: argv parsing with the project's exit codes,
//! the mapping of errors to exit codes, stderr reporting and progress bars.
//!
//! `ailee-core` never prints; this crate is where printing conventions live,
//! so the six tools behave alike: results on stdout, everything else on
//! stderr, progress only on a terminal, a closed stdout pipe is not an error.

use ailee_core::{Error, ExitStatus};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

pub use ailee_core::exit::EXIT_CODES_HELP;

pub mod dbquery;

/// Flags every tool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print no warnings or progress on stderr (errors still go there).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// What `--generate KIND` writes on stdout (used by `scripts/install.sh`).
const GENERATE_KINDS: &str = "man, complete-bash, complete-zsh, complete-fish";

/// `TOOL --generate KIND` (the first argument, as ripgrep's): prints the tool's
/// man page or a shell completion script generated from its clap definition.
fn generate(mut cmd: clap::Command, kind: &str) -> io::Result<bool> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_string();
    let mut out = io::stdout().lock();
    let shell = match kind {
        "man" => {
            clap_mangen::Man::new(cmd).render(&mut out)?;
            return Ok(true);
        }
        "complete-bash" => Shell::Bash,
        "complete-zsh" => Shell::Zsh,
        "complete-fish" => Shell::Fish,
        _ => return Ok(false),
    };
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out.flush()?;
    Ok(true)
}

/// Parses argv; help and version exit 0, any argument error exits 1 (clap's
/// default of 2 would read as "corrupt data").
pub fn parse<T: Parser>() -> Result<T, ExitCode> {
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == "--generate") {
        let kind = argv
            .next()
            .map(|k| k.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(match generate(T::command(), &kind) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("--generate: unknown kind {kind:?} (one of: {GENERATE_KINDS})");
                ExitCode::from(ExitStatus::Operational.code())
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("--generate: {e}");
                ExitCode::from(ExitStatus::Operational.code())
            }
        });
    }
    match T::try_parse() {
        Ok(t) => Ok(t),
        Err(e) => {
            let _ = e.print();
            Err(if e.use_stderr() {
                ExitCode::from(ExitStatus::Operational.code())
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<Error>(), Some(Error::Io { error, .. }) if error.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Runs a tool: installs signal handling, maps the outcome to an exit code.
pub fn main<T: Parser>(run: impl FnOnce(T) -> anyhow::Result<ExitStatus>) -> ExitCode {
    let args = match parse::<T>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Err(e) = ailee_core::cancel::install() {
        eprintln!("warning: cannot install signal handlers: {e}");
    }
    let status = run_and_report(args, run);
    // Interrupted before the work was committed: the signal thread is
    // removing the temporary files and will end the process by the signal;
    // exiting here first would report a plain exit code instead.
    if status == ExitStatus::Interrupted || (ailee_core::cancel::requested() && status != ExitStatus::Success) {
        ailee_core::cancel::die();
    }
    ExitCode::from(status.code())
}

fn run_and_report<T>(args: T, run: impl FnOnce(T) -> anyhow::Result<ExitStatus>) -> ExitStatus {
    match run(args) {
        Ok(s) => s,
        Err(e) if is_broken_pipe(&e) => ExitStatus::Success,
        Err(e) => {
            let status = e
                .chain()
                .find_map(|c| c.downcast_ref::<Error>())
                .map_or(ExitStatus::Operational, Error::exit_status);
            if status == ExitStatus::Interrupted {
                eprintln!("interrupted");
            } else {
                eprintln!("{e:#}");
            }
            status
        }
    }
}

/// A path for messages and JSON: lossy where it is not UTF-8 (never a panic).
pub fn lossy(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// How snapshot files are read (the tools that read them flatten this in).
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// Largest block accepted, in bytes: a longer one is reported as junk (a
    /// torn region) and never held in memory [default: 268435456 = 256 MiB].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(64..=(1u64 << 40)))]
    pub max_block_size: Option<u64>,
}

impl ReadArgs {
    /// Opens a snapshot file with the cap set.
    pub fn open(&self, path: &std::path::Path) -> ailee_core::Result<ailee_core::snapfile::SnapshotFile> {
        Ok(ailee_core::snapfile::SnapshotFile::open(path)?
            .with_cap(self.max_block_size.unwrap_or(ailee_core::snapfile::BLOCK_CAP)))
    }
}

/// Writes one line to stdout (a closed pipe surfaces as `BrokenPipe`).
pub fn out(line: impl std::fmt::Display) -> io::Result<()> {
    let mut o = io::stdout().lock();
    writeln!(o, "{line}")
}

/// Connection to the Bitcoin node's RPC, shared by the tools that need it.
#[derive(Debug, Clone, clap::Args)]
pub struct RpcArgs {
    /// Bitcoin node RPC URL, e.g. http://localhost:8332 (userinfo
    /// http://user:pass@host:port is accepted but shows in `ps`; prefer a cookie
    /// or AILEE_RPC_USER / AILEE_RPC_PASSWORD / AILEE_RPC_COOKIE in the environment).
    #[arg(long, value_name = "URL")]
    pub bitcoin_rpc: Option<String>,
    /// RPC user name.
    #[arg(long, value_name = "USER")]
    pub rpc_user: Option<String>,
    /// RPC password (visible in `ps`; prefer AILEE_RPC_PASSWORD).
    #[arg(long, value_name = "PASSWORD", requires = "rpc_user")]
    pub rpc_password: Option<String>,
    /// RPC cookie file (the node's .cookie, user:password).
    #[arg(long, value_name = "FILE", conflicts_with = "rpc_user")]
    pub rpc_cookie: Option<std::path::PathBuf>,
    /// Seconds to wait for each RPC reply, 1 to 86400 [default: 30].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub rpc_timeout: Option<u64>,
}

impl RpcArgs {
    /// The connection settings, with credentials resolved (options, URL, environment).
    pub fn config(&self) -> ailee_core::Result<ailee_core::rpc::RpcConfig> {
        let url = self
            .bitcoin_rpc
            .as_deref()
            .ok_or_else(|| ailee_core::Error::Usage("--bitcoin-rpc URL is required".into()))?;
        ailee_core::rpc::RpcConfig::resolve(
            url,
            self.rpc_user.clone(),
            self.rpc_password.clone(),
            self.rpc_cookie.clone(),
            |k| std::env::var(k).ok(),
            std::time::Duration::from_secs(self.rpc_timeout.unwrap_or(30)),
        )
    }
}

/// Stderr reporting that respects `--quiet`.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub quiet: bool,
}

impl Report {
    pub fn warn(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("warning: {msg}");
        }
    }

    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// A byte-counting progress bar, drawn only when stderr is a terminal.
    pub fn bar(&self, total: u64, what: &str) -> Bar {
        self.styled(
            total,
            what,
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
    }

    /// An item-counting progress bar (blocks), drawn only on a terminal.
    pub fn count_bar(&self, total: u64, what: &str) -> Bar {
        self.styled(total, what, "{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
    }

    fn styled(&self, total: u64, what: &str, template: &str) -> Bar {
        let pb = if self.quiet || !io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(template)
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_message(what.to_string());
            pb
        };
        Bar(pb)
    }
}

/// A progress bar for core loops.
pub struct Bar(pub ProgressBar);

impl ailee_core::progress::Progress for Bar {
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
