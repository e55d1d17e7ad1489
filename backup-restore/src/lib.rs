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

use ailee_core::records::DbError;
use ailee_core::Error;
use ailee_db::backup::restic::{Restic, Snapshot, BACKENDS};
use ailee_db::backup::{restore, restore::RestoreReport, Nodes, VerifyReport};
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

/// Whose backups a listing, a verify or a restore sees: `--node ID`,
/// `--any-node`, else the data directory's node
/// ([`ailee_db::backup::choose_nodes`]).
#[derive(Debug, Clone, Default)]
pub struct NodeChoice {
    pub node: Option<String>,
    pub any_node: bool,
}

impl NodeChoice {
    fn resolve(&self, r: &Restic, data_dir: &Path) -> ailee_core::Result<Nodes> {
        ailee_db::backup::choose_nodes(r, data_dir, self.node.as_deref(), self.any_node)
    }
}

/// `ailee_backup --list`: what to list.
#[derive(Debug, Clone)]
pub struct ListOptions {
    pub data_dir: PathBuf,
    pub repo: RepoArgs,
    pub nodes: NodeChoice,
}

/// What a listing found, oldest first, and what happened around restic.
#[derive(Debug, Clone)]
pub struct Listing {
    pub backups: Vec<Snapshot>,
    pub notes: Vec<String>,
}

/// `ailee_backup --list`: the backups of the chosen node(s).
pub fn list(opts: &ListOptions) -> ailee_core::Result<Listing> {
    ailee_db::backup::check_data_dir(&opts.data_dir)?;
    let r = opts.repo.resolve(&opts.data_dir, false)?.for_reading();
    let nodes = opts.nodes.resolve(&r, &opts.data_dir)?;
    let backups = r.snapshots()?.into_iter().filter(|s| nodes.has(s)).collect();
    Ok(Listing {
        backups,
        notes: r.notes().messages,
    })
}

/// `ailee_backup --verify`: which backup, how deep, and the on-chain check.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub data_dir: PathBuf,
    pub repo: RepoArgs,
    pub nodes: NodeChoice,
    /// `latest` or a backup id.
    pub which: String,
    /// restic reads and checks all repository data.
    pub read_data: bool,
    /// `--bitcoin-rpc` and its connection (none: no on-chain check).
    pub rpc: ailee_cli::RpcArgs,
    pub confirmations: u64,
}

/// `ailee_backup --verify`: restic's check, a restore to a scratch
/// directory in `DATA_DIR/backups` and our own checks
/// ([`ailee_db::backup::verify`]), under the repository's lock. The
/// verdict and the notes of the restic calls (for `-v`); a corrupt backup
/// is [`Error::Integrity`].
pub fn verify(opts: &VerifyOptions) -> (ailee_core::Result<VerifyReport>, Vec<String>) {
    let d = &opts.data_dir;
    let mut restic = None;
    let res = (|| {
        ailee_db::backup::check_data_dir(d)?;
        let r = opts.repo.resolve(d, false)?.for_reading();
        restic = Some(r.clone());
        let nodes = opts.nodes.resolve(&r, d)?;
        // One verify per repository at a time (its scratch directories are
        // reaped); a local backup runs beside it.
        let _lock = ailee_db::backup::lock_repo(d, &r)?;
        let scratch = d.join("backups");
        let parent = if scratch.is_dir() { scratch } else { d.clone() };
        let prefix = format!(
            ".ailee-verify{}.",
            ailee_db::backup::stage_name(d, &r).trim_start_matches(".stage")
        );
        ailee_db::backup::reap(&parent, &prefix);
        let chain = chain_check(&opts.rpc, opts.confirmations, d)?;
        ailee_db::backup::verify(
            &r,
            &opts.which,
            &nodes,
            opts.read_data,
            &parent,
            &prefix,
            chain.as_ref(),
        )
    })();
    (res, restic.map(|r| r.notes().messages).unwrap_or_default())
}

/// `ailee_restore`: which backup goes into which data directory.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub data_dir: PathBuf,
    pub repo: RepoArgs,
    pub nodes: NodeChoice,
    /// `latest` or a backup id (unless `anchored`).
    pub backup: String,
    /// The newest backup whose anchor is confirmed on Bitcoin (needs `rpc`).
    pub anchored: bool,
    pub rpc: ailee_cli::RpcArgs,
    pub confirmations: u64,
}

/// What `ailee_restore` did: the settling of an interrupted earlier
/// restore (said even when this one fails), why each newer backup was
/// passed over by `--anchored`, the result, and the notes of the restic
/// calls (the last two for `-v`).
#[derive(Debug)]
pub struct Restored {
    pub settled: Option<String>,
    pub picks: Vec<String>,
    pub result: ailee_core::Result<RestoreReport>,
    pub notes: Vec<String>,
}

/// `ailee_restore`: under the data directory's lock, settles an interrupted
/// restore, chooses the backup (`--anchored`: the newest confirmed one) and
/// restores it ([`ailee_db::backup::restore::restore`]); a new machine
/// takes the node id of the history it restored.
pub fn restore(opts: &RestoreOptions) -> Restored {
    let d = &opts.data_dir;
    let (mut settled, mut picks, mut restic) = (None, Vec::new(), None);
    let result = (|| {
        ailee_db::backup::check_data_dir(d)?;
        let r = opts.repo.resolve(d, false)?.for_reading();
        restic = Some(r.clone());
        let _lock = ailee_db::backup::lock(d)?;
        settled = settle(d)?;
        let nodes = opts.nodes.resolve(&r, d)?;
        let chain = chain_check(&opts.rpc, opts.confirmations, d)?;
        let which = match (&chain, opts.anchored) {
            (Some(c), true) => ailee_db::backup::pick_anchored(&r, &nodes, c, &mut |n| picks.push(n))?.id,
            _ => opts.backup.clone(),
        };
        let mut rep = restore::restore(&r, d, &which, &nodes, chain.as_ref())?;
        // A new machine takes the node id of the history it restored.
        if let (Nodes::One(id), Ok(None)) = (&nodes, ailee_db::backup::node_id(d)) {
            if let Err(e) = ailee_db::backup::write_node_id(d, id) {
                rep.warnings
                    .push(format!("cannot keep node id {id} in {}: {e}", d.display()));
            }
        }
        Ok(rep)
    })();
    Restored {
        settled,
        picks,
        result,
        notes: restic.map(|r| r.notes().messages).unwrap_or_default(),
    }
}

/// Settles an interrupted restore ([`restore::settle`]); a journal that
/// waits while the node holds the database lock is named.
fn settle(d: &Path) -> ailee_core::Result<Option<String>> {
    restore::settle(d).map_err(|e| match (&e, restore::pending_journal(d)) {
        (Error::Db(DbError::Locked { .. }), Some(j)) => Error::Usage(format!(
            "{e}; an interrupted restore (journal {}) waits to be settled: stop the process that holds \
             the lock (the node) and run ailee_restore again — nothing was changed",
            j.display()
        )),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The tools' shared flags, as a command line gives them.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        rpc: ailee_cli::RpcArgs,
    }

    fn flags() -> Flags {
        Flags::parse_from(["t"])
    }

    /// A scratch directory, removed when dropped (no tempfile dependency).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("backup_cli-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A data directory with the `basic` vector and an empty reorg_db.
    fn data_dir(parent: &Path, name: &str, with_state: bool) -> PathBuf {
        let d = parent.join(name);
        std::fs::create_dir(&d).unwrap();
        if with_state {
            ailee_db::reorgdb::ReorgDb::create(&d.join("reorg_db")).unwrap();
            let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vectors/basic.dat");
            std::fs::copy(v, d.join("l2_snapshots.dat")).unwrap();
        }
        d
    }

    #[test]
    fn a_missing_data_dir_is_a_usage_error_in_every_mode() {
        let t = Scratch::new("absent");
        let d = t.path().join("absent");
        let f = flags();
        let nodes = NodeChoice::default();
        let listed = list(&ListOptions {
            data_dir: d.clone(),
            repo: f.repo.clone(),
            nodes: nodes.clone(),
        });
        assert!(matches!(listed, Err(Error::Usage(_))), "{listed:?}");
        let restored = restore(&RestoreOptions {
            data_dir: d.clone(),
            repo: f.repo.clone(),
            nodes,
            backup: "latest".into(),
            anchored: false,
            rpc: f.rpc.clone(),
            confirmations: 6,
        });
        assert!(matches!(restored.result, Err(Error::Usage(_))));
        assert!(restored.settled.is_none());
        assert!(!d.exists(), "never created");
    }

    /// Backup, list, verify and restore called as library functions, with
    /// the real restic: the restored data directory holds the backed-up file.
    #[test]
    fn backup_list_verify_restore_without_a_process() {
        let t = Scratch::new("roundtrip");
        let src = data_dir(t.path(), "src", true);
        let f = flags();
        let r = f.repo.resolve(&src, true).unwrap();
        let rep = ailee_db::backup::backup(&ailee_db::backup::BackupOptions {
            data_dir: src.clone(),
            restic: r,
            retention: Default::default(),
            time: None,
            no_forget: false,
            measure_repo: false,
            node: None,
        })
        .unwrap();
        assert!(rep.created_repo && rep.snapshots > 0);
        let nodes = NodeChoice::default();
        let l = list(&ListOptions {
            data_dir: src.clone(),
            repo: f.repo.clone(),
            nodes: nodes.clone(),
        })
        .unwrap();
        assert_eq!(l.backups.len(), 1);
        assert_eq!(l.backups[0].tag("root"), Some(rep.root.as_str()));
        let (v, _) = verify(&VerifyOptions {
            data_dir: src.clone(),
            repo: f.repo.clone(),
            nodes: nodes.clone(),
            which: "latest".into(),
            read_data: false,
            rpc: f.rpc.clone(),
            confirmations: 6,
        });
        let v = v.unwrap();
        assert_eq!((v.root.as_str(), v.snapshots), (rep.root.as_str(), rep.snapshots));
        // A new machine: another data directory, the same repository.
        let dst = data_dir(t.path(), "dst", false);
        let key = src.join("backups").join(KEY_NAME);
        let repo = RepoArgs {
            repo: Some(src.join("backups/repo").to_string_lossy().into_owned()),
            password_file: Some(key),
            ..f.repo.clone()
        };
        let done = restore(&RestoreOptions {
            data_dir: dst.clone(),
            repo,
            nodes,
            backup: "latest".into(),
            anchored: false,
            rpc: f.rpc.clone(),
            confirmations: 6,
        });
        let restored = done.result.unwrap();
        assert_eq!(restored.root, rep.root);
        assert_eq!(
            std::fs::read(dst.join("l2_snapshots.dat")).unwrap(),
            std::fs::read(src.join("l2_snapshots.dat")).unwrap()
        );
        assert_eq!(ailee_db::backup::node_id(&dst).unwrap(), Some(rep.node));
    }
}
