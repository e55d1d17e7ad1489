//! What `ailee_backup` and `ailee_restore` share: the repository options.
//! They start through the one front door (`ailee_cli::run_with`, deferred
//! signals: the work rolls back, then the process dies by the signal); their
//! metrics go through the one textfile writer, `ailee_core::metrics`.
//!
//! These two are binaries rather than bash scripts because their guarantees
//! need things bash does not give reliably: a rollback that runs on SIGINT,
//! SIGTERM and SIGHUP at any point (bash traps do not interrupt a running
//! `cp`, and `set -e` is off inside functions called from `if`), parsing of
//! restic's JSON, RocksDB's POSIX lock on `reorg_db/LOCK`, `renameat2`
//! exchanges, and exact 64-bit option ranges (bash arithmetic wraps).

use ailee_core::Error;
use ailee_db::backup::restic::{Restic, BACKENDS};
use std::path::{Path, PathBuf};

/// Repository options of both tools.
#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// restic repository: a path or any restic backend (sftp:user@host:/path,
    /// s3:…, rest:…, rclone:…) [default: $RESTIC_REPOSITORY, else DATA_DIR/backups/repo].
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// File holding the repository password [default: $RESTIC_PASSWORD_FILE; for
    /// the default local repository DATA_DIR/backups/restic-password, created 0600 on first use].
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Extended restic option passed as `-o KEY=VALUE` (repeatable), e.g.
    /// sftp.command='ssh -p 2222 -i KEY backup@host -s sftp'.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// The restic executable [default: $AILEE_RESTIC, else restic on PATH].
    #[arg(long, value_name = "PATH")]
    pub restic: Option<PathBuf>,
    /// Longest time one restic call may take, in seconds (1 to 604800); then
    /// it is stopped (SIGINT, so it removes its lock) and the run exits 1 —
    /// a silent link to an off-site repository ends, it does not hang.
    #[arg(long, value_name = "SECS", default_value = "21600",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub restic_timeout: u64,
}

fn absolute(p: &Path) -> ailee_core::Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

/// Name of the default password file in `DATA_DIR/backups/`.
pub const KEY_NAME: &str = "restic-password";

impl RepoArgs {
    /// Resolves the repository; `create_key` creates the default key file
    /// (only for the default local repository, only when it does not exist).
    pub fn resolve(&self, data_dir: &Path, create_key: bool) -> ailee_core::Result<Restic> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let bin = self
            .restic
            .clone()
            .or_else(|| env("AILEE_RESTIC").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("restic"));
        for o in &self.options {
            if !o.contains('=') || o.starts_with('=') {
                return Err(Error::Usage(format!("-o {o:?}: expected KEY=VALUE")));
            }
        }
        let default_repo = data_dir.join("backups").join("repo");
        let (repo, is_default) = repo_location(self.repo.as_deref(), data_dir)?;
        let password_file = match (&self.password_file, env("RESTIC_PASSWORD_FILE")) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(p)) => Some(PathBuf::from(p)),
            (None, None) if env("RESTIC_PASSWORD").is_some() || env("RESTIC_PASSWORD_COMMAND").is_some() => None,
            (None, None) if is_default => {
                let k = data_dir.join("backups").join(KEY_NAME);
                if !k.exists() {
                    if !create_key || default_repo.exists() {
                        return Err(Error::Usage(format!(
                            "no repository password: {} does not exist (pass --password-file or set RESTIC_PASSWORD_FILE)",
                            k.display()
                        )));
                    }
                    create_key_file(&k)?;
                }
                Some(k)
            }
            (None, None) => {
                return Err(Error::Usage(format!(
                    "repository {repo}: no password given (--password-file FILE or RESTIC_PASSWORD_FILE)"
                )))
            }
        };
        if let Some(p) = &password_file {
            match std::fs::metadata(p) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return Err(Error::Usage(format!("{}: not a regular file", p.display()))),
                Err(e) => return Err(Error::io(p, e)),
            }
        }
        let password_file = password_file.map(|p| absolute(&p)).transpose()?;
        let bin = if bin.components().count() > 1 {
            absolute(&bin)?
        } else {
            bin
        };
        let mut r = Restic::new(bin, repo, password_file, self.options.clone());
        r.timeout = std::time::Duration::from_secs(self.restic_timeout);
        Ok(r)
    }
}

/// Where the repository is: `repo` (`--repo`), else `$RESTIC_REPOSITORY`,
/// else `DATA_DIR/backups/repo` (then `true`: the default). A local path is
/// made absolute (restic runs in the stage directory). The one rule, for
/// the run and for the metrics of a run that failed before it.
pub fn repo_location(repo: Option<&str>, data_dir: &Path) -> ailee_core::Result<(String, bool)> {
    let repo = repo.map(str::to_string).or_else(|| {
        std::env::var_os("RESTIC_REPOSITORY")
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string_lossy().into_owned())
    });
    let is_default = repo.is_none();
    let repo = repo.unwrap_or_else(|| data_dir.join("backups").join("repo").to_string_lossy().into_owned());
    if repo.is_empty() {
        return Err(Error::Usage("--repo: empty".into()));
    }
    let repo = if BACKENDS.iter().any(|b| repo.starts_with(b)) {
        repo
    } else {
        absolute(Path::new(&repo))?.to_string_lossy().into_owned()
    };
    Ok((repo, is_default))
}

/// The value of `NAME V` or `NAME=V` (the last one) in a command line that
/// did not parse: `None` if absent, `Some(None)` if given without a value.
pub fn arg_in_argv(name: &str) -> Option<Option<String>> {
    let mut args = std::env::args_os().skip(1);
    let mut found = None;
    while let Some(a) = args.next() {
        if a == name {
            found = Some(args.next().map(|v| v.to_string_lossy().into_owned()));
        } else if let Some(v) = a.to_str().and_then(|a| a.strip_prefix(name)?.strip_prefix('=')) {
            found = Some(Some(v.to_string()));
        }
    }
    found
}

/// A random password in a new file, mode 0600.
fn create_key_file(k: &Path) -> ailee_core::Result<()> {
    use std::io::Read;
    let dir = ailee_core::atomic::parent_dir(k);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("/dev/urandom", e))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let mut p = ailee_core::atomic::Pending::create(k, false)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let f = p.file()?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(k, e))?;
    }
    p.write_all(format!("{hex}\n").as_bytes())?;
    p.commit()
}

/// The `--metrics-dir` of a command line that did not parse (so that an
/// argument error still counts as a failure of the hourly job).
pub fn metrics_dir_in_argv() -> Option<PathBuf> {
    arg_in_argv("--metrics-dir")
        .flatten()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
}

/// The on-chain check of `--bitcoin-rpc` (both tools): `None` without it.
/// The live database consulted for a record the backup lacks is
/// `DATA_DIR/reorg_db`.
pub fn chain_check(
    rpc: &ailee_cli::RpcArgs,
    confirmations: u64,
    data_dir: &Path,
) -> ailee_core::Result<Option<ailee_db::backup::ChainCheck>> {
    if rpc.bitcoin_rpc.is_none() {
        return Ok(None);
    }
    Ok(Some(ailee_db::backup::ChainCheck {
        rpc: ailee_core::rpc::Rpc::connect(&rpc.config()?)?,
        confirmations,
        live_db: Some(data_dir.join("reorg_db")),
        identity: rpc.identity(Some(data_dir))?,
    }))
}

/// Seconds since the epoch, as a float.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
