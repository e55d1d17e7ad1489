//! `ailee_restore`: puts a backup made by `ailee_backup` back into a data
//! directory without ever losing the state it replaces (SPEC §5).

use ailee_cli::{out, EXIT_CODES_HELP};
use ailee_core::metrics::{MetricsFile, RESTORE};
use ailee_core::ExitStatus;
use ailee_db::backup::{self, restore};
use anyhow::Context;
use backup_cli::{finish, install_signals, now, RepoArgs};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Restore l2_snapshots.dat and reorg_db of an AILEE data directory from a
/// backup made by ailee_backup.
///
/// Stop the node first: the restore is refused while any process holds
/// reorg_db/LOCK. The backup is restored beside the live files, verified
/// (recorded root and size, database check), given the owner, group and mode
/// of the files it replaces, then swapped in by atomic renames. The previous
/// state is kept in a new DATA_DIR/recovery_<time>.<n>/. Any failure or
/// SIGINT/SIGTERM/SIGHUP before the swap completes rolls it back; after a
/// SIGKILL the next run settles the interrupted restore first. Quiet on
/// success unless -v.
#[derive(Debug, Parser)]
#[command(name = "ailee_restore", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// The node's data directory (must exist; never created).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The backup to restore: an id from `ailee_backup --list`, or latest.
    #[arg(long, value_name = "ID|latest", default_value = "latest")]
    backup: String,
    #[command(flatten)]
    repo: RepoArgs,
    /// Write ailee_restore.prom here for node_exporter's textfile collector.
    #[arg(long, value_name = "DIR")]
    metrics_dir: Option<PathBuf>,
    /// Say what was done (by default a successful run prints nothing).
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = match ailee_cli::parse::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    install_signals();
    finish(run(cli), "interrupted: rolled back, the data directory is as it was")
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let d = &cli.data_dir;
    backup::check_data_dir(d)?;
    if let Some(m) = &cli.metrics_dir {
        if !m.is_dir() {
            anyhow::bail!(ailee_core::Error::Usage(format!(
                "--metrics-dir {}: not an existing directory",
                m.display()
            )));
        }
    }
    if cli.backup.len() > 64 {
        anyhow::bail!(ailee_core::Error::Usage(
            "--backup: an id has at most 64 hex digits".into()
        ));
    }
    let t0 = now();
    let mut settled = None;
    let result = (|| {
        let r = cli.repo.resolve(d, false)?;
        let _lock = backup::lock(d)?;
        settled = restore::settle(d)?;
        restore::restore(&r, d, &cli.backup)
    })();
    if let Some(s) = &settled {
        eprintln!("{s}");
    }
    if let Some(m) = &cli.metrics_dir {
        let write = || -> ailee_core::Result<()> {
            let mut f = MetricsFile::open(m, RESTORE)?;
            let t = now();
            f.set("ailee_restore_last_timestamp_seconds", &[], t.floor())?;
            f.set(
                "ailee_restore_duration_seconds",
                &[],
                ((t - t0) * 1000.0).round() / 1000.0,
            )?;
            f.set("ailee_restore_success", &[], if result.is_ok() { 1.0 } else { 0.0 })?;
            f.commit().map(|_| ())
        };
        if let Err(e) = write() {
            eprintln!("warning: cannot write metrics: {e}");
        }
    }
    let rep = result.context("restore failed; the data directory is as it was")?;
    for w in &rep.warnings {
        eprintln!("warning: {w}");
    }
    if cli.verbose {
        out(format!(
            "Restored backup {} (root {}) into {}; {}",
            &rep.snapshot[..rep.snapshot.len().min(8)],
            rep.root,
            d.display(),
            rep.recovery
                .map_or("there was no previous state".to_string(), |p| format!(
                    "previous state kept in {}",
                    p.display()
                ))
        ))?;
    }
    Ok(ExitStatus::Success)
}
