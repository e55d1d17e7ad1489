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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub use ailee_core::exit::EXIT_CODES_HELP;

/// Writes a line to stderr; a closed or full stderr is not an error and
/// never a panic (`eprintln!` panics when the write fails: `2>&1 | true`).
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => {{
        $crate::err_line(format_args!($($t)*));
    }};
}

/// `--json` was given (set by [`parse`] from clap's own matches).
static JSON: AtomicBool = AtomicBool::new(false);
/// Something was written to stdout through [`out`] (the tool's document).
static PRINTED: AtomicBool = AtomicBool::new(false);
/// The last error line told on stderr (for the `--json` error document of a
/// tool that reported its failure itself and returned a status).
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// What [`errln!`] does: one line to stderr (a closed stderr is no error),
/// remembered as the run's error unless it is a warning.
#[doc(hidden)]
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let line = args.to_string();
    let _ = writeln!(io::stderr(), "{line}");
    if !line.starts_with("warning:") {
        if let Ok(mut g) = LAST_ERROR.lock() {
            *g = Some(line);
        }
    }
}

/// Declares whether this run gives machine output (`--json`); [`parse`]
/// does it for every tool from clap's matches.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// The document printed on stdout with `--json` when a run fails before the
/// tool printed its own: `{"ok": false, "exit_code": N, "error": "..."}`.
pub fn error_document(status: ExitStatus, error: &str) -> serde_json::Value {
    serde_json::json!({"ok": false, "exit_code": status.code(), "error": error})
}

/// `--json`: every exit prints exactly one document. A run that ends with a
/// failure and printed nothing on stdout gets the error document.
fn json_error_document(status: ExitStatus, error: Option<String>) {
    if !JSON.load(Ordering::Relaxed) || PRINTED.load(Ordering::Relaxed) || status == ExitStatus::Success {
        return;
    }
    let error = error
        .or_else(|| LAST_ERROR.lock().ok().and_then(|g| g.clone()))
        .unwrap_or_else(|| format!("failed (exit status {})", status.code()));
    let _ = out(error_document(status, &error));
}

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

impl Common {
    /// Stderr reporting as `--quiet` asks.
    pub fn report(&self) -> Report {
        Report { quiet: self.quiet }
    }
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
                errln!("--generate: unknown kind {kind:?} (one of: {GENERATE_KINDS})");
                ExitCode::from(ExitStatus::Operational.code())
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                errln!("--generate: {e}");
                ExitCode::from(ExitStatus::Operational.code())
            }
        });
    }
    let parsed = T::command()
        .try_get_matches()
        .and_then(|m| T::from_arg_matches(&m).map(|t| (t, json_given(&m))));
    match parsed {
        Ok((t, json)) => {
            set_json(json);
            Ok(t)
        }
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return Err(ExitCode::SUCCESS);
            }
            // Not parsed, so clap cannot say whether --json was meant: the
            // flag among the arguments (before any `--`) is taken as asked.
            if std::env::args_os()
                .skip(1)
                .take_while(|a| a != "--")
                .any(|a| a == "--json")
            {
                set_json(true);
                let r = e.render().to_string();
                let head = r.split("Usage:").next().unwrap_or_default();
                let msg = head.split_whitespace().collect::<Vec<_>>().join(" ");
                let msg = msg.trim_start_matches("error: ");
                json_error_document(ExitStatus::Operational, Some(format!("invalid arguments: {msg}")));
            }
            Err(ExitCode::from(ExitStatus::Operational.code()))
        }
    }
}

/// Whether `--json` was given (to the command or, as a global flag, to one
/// of its subcommands).
fn json_given(m: &clap::ArgMatches) -> bool {
    m.try_get_one::<bool>("json").ok().flatten().copied().unwrap_or(false)
        || m.subcommand().is_some_and(|(_, s)| json_given(s))
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<Error>(), Some(Error::Io { error, .. }) if error.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The one mapping of a tool's error to its exit status: a closed pipe is
/// success (the reader had what it wanted), a core error carries its own
/// status, anything else is operational.
pub fn status_of(e: &anyhow::Error) -> ExitStatus {
    if is_broken_pipe(e) {
        return ExitStatus::Success;
    }
    e.chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .map_or(ExitStatus::Operational, Error::exit_status)
}

/// How a tool takes SIGINT, SIGTERM and SIGHUP ([`ailee_core::cancel`]).
#[derive(Debug, Clone, Copy)]
pub enum Signals {
    /// The signal thread removes the temporary files and ends the process
    /// by the signal at once (after a critical section in progress).
    Immediate,
    /// The signal is only recorded: the work notices it, rolls back or
    /// finishes its step, and the process then dies by it. `interrupted`
    /// is what is said then.
    Deferred { interrupted: &'static str },
}

/// Runs a tool: parses argv, then [`run_with`] with immediate signals.
pub fn main<T: Parser>(run: impl FnOnce(T) -> anyhow::Result<ExitStatus>) -> ExitCode {
    match parse::<T>() {
        Ok(args) => run_with(args, Signals::Immediate, run),
        Err(code) => code,
    }
}

/// The one front door of every tool once argv is parsed: installs the
/// signal handling, runs, reports an error (on stderr, which may be
/// closed), and ends the process — by the signal that stopped it when the
/// work was not committed ([`ailee_core::cancel::die`], the one place that
/// does), else with the status's exit code.
pub fn run_with<T>(args: T, signals: Signals, run: impl FnOnce(T) -> anyhow::Result<ExitStatus>) -> ExitCode {
    let (installed, interrupted) = match signals {
        Signals::Immediate => (ailee_core::cancel::install(), "interrupted"),
        Signals::Deferred { interrupted } => (ailee_core::cancel::install_deferred(), interrupted),
    };
    if let Err(e) = installed {
        errln!("warning: cannot install signal handlers: {e}");
    }
    let (status, error) = match run(args) {
        Ok(s) => (s, None),
        Err(e) => {
            let status = status_of(&e);
            match status {
                ExitStatus::Success => {}
                ExitStatus::Interrupted => errln!("{interrupted}"),
                _ => errln!("{e:#}"),
            }
            (status, Some(format!("{e:#}")))
        }
    };
    json_error_document(status, error);
    // Interrupted before the work was committed: die by the signal (in
    // immediate mode the signal thread may be doing so already; exiting here
    // first would report a plain exit code). Returns if it was committed.
    if status != ExitStatus::Success && ailee_core::cancel::requested() {
        ailee_core::cancel::die();
    }
    ExitCode::from(status.code())
}

/// A path for messages and JSON: lossy where it is not UTF-8 (never a panic).
pub fn lossy(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// "N anchor(s) invalidated", then ": " and the anchors when there are any
/// (how a reorg's invalidated anchors are said in text).
pub fn invalidated(anchors: &[String]) -> String {
    let list = if anchors.is_empty() {
        String::new()
    } else {
        format!(": {}", anchors.join(", "))
    };
    format!("{} anchor(s) invalidated{list}", anchors.len())
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
    PRINTED.store(true, Ordering::Relaxed);
    let mut o = io::stdout().lock();
    writeln!(o, "{line}")
}

/// Marks stdout as written by a tool that writes it directly (not through
/// [`out`]), so that `--json` adds no error document after its output.
pub fn printed() {
    PRINTED.store(true, Ordering::Relaxed);
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
    /// The anchoring identity: a file of the output scripts or public keys
    /// (hex, one per line) the node's anchor transactions spend from
    /// [default: DATA_DIR/anchor_identity, written by ailee_init_node]. An
    /// anchor on Bitcoin counts only if its transaction spends from it.
    #[arg(long, value_name = "FILE")]
    pub anchor_identity: Option<std::path::PathBuf>,
}

impl RpcArgs {
    /// The anchoring identity: `--anchor-identity FILE` (which must be
    /// there), else `DATA_DIR/anchor_identity` where `data_dir` is known and
    /// the file exists, else none.
    pub fn identity(
        &self,
        data_dir: Option<&std::path::Path>,
    ) -> ailee_core::Result<Option<ailee_core::identity::AnchorIdentity>> {
        ailee_core::identity::AnchorIdentity::resolve(self.anchor_identity.as_deref(), data_dir)
    }

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
            errln!("warning: {msg}");
        }
    }

    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            let _ = writeln!(io::stderr(), "{msg}");
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
