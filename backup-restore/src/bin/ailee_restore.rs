//! `ailee_restore`: puts a backup made by `ailee_backup` back into a data
//! directory without ever losing the state it replaces (SPEC §5).

use ailee_cli::{errln, out, RpcArgs, Signals, EXIT_CODES_HELP};
use ailee_core::metrics::{MetricsFile, RESTORE};
use ailee_core::ExitStatus;
use ailee_db::backup;
use anyhow::Context;
use backup_cli::{now, NodeChoice, RepoArgs, RestoreOptions};
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
///
/// With --bitcoin-rpc URL the restored state must be one Bitcoin saw: the
/// backup's newest anchor transaction (from the backup's reorg_db, else the
/// live one) must be in the node's best chain with at least --confirmations
/// and carry exactly the anchor's OP_RETURN, checked on the staged copy
/// before anything live changes. Contradicted or unrecorded: exit 2; not
/// mined, too few confirmations, node behind: exit 1; either way nothing
/// changes. Without it a forged but self-consistent backup written with the
/// repository password is restored.
#[derive(Debug, Parser)]
#[command(name = "ailee_restore", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// The node's data directory (must exist; never created).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The backup to restore: an id from `ailee_backup --list`, or latest.
    #[arg(long, value_name = "ID|latest", default_value = "latest")]
    backup: String,
    /// Restore node ID's newest backup (see `ailee_backup --list --any-node`)
    /// instead of this data directory's node (DATA_DIR/node_id; on a new
    /// machine without one, the repository's only node).
    #[arg(long, value_name = "ID", conflicts_with = "any_node")]
    node: Option<String>,
    /// Take the newest backup of any node in the repository.
    #[arg(long)]
    any_node: bool,
    /// Restore the newest backup whose anchor is confirmed on Bitcoin with
    /// --confirmations (judged from the txid/payload tags ailee_backup
    /// records; older backups without them are skipped), instead of latest.
    #[arg(long, requires = "bitcoin_rpc", conflicts_with = "backup")]
    anchored: bool,
    /// The Bitcoin node for the on-chain check (see above).
    #[command(flatten)]
    rpc: RpcArgs,
    /// Confirmations the anchor's transaction needs for --bitcoin-rpc.
    #[arg(long, value_name = "N", default_value_t = ailee_core::records::DEFAULT_CONFIRMATIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    confirmations: u64,
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
    match ailee_cli::parse::<Cli>() {
        Ok(cli) => ailee_cli::run_with(
            cli,
            Signals::Deferred {
                interrupted: "interrupted: rolled back, the data directory is as it was",
            },
            run,
        ),
        Err(code) => code,
    }
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
    let done = backup_cli::restore(&RestoreOptions {
        data_dir: d.clone(),
        repo: cli.repo.clone(),
        nodes: NodeChoice {
            node: cli.node.clone(),
            any_node: cli.any_node,
        },
        backup: cli.backup.clone(),
        anchored: cli.anchored,
        rpc: cli.rpc.clone(),
        confirmations: cli.confirmations,
    });
    if let Some(s) = &done.settled {
        errln!("{s}");
    }
    if cli.verbose {
        for n in &done.picks {
            errln!("{n}");
        }
    }
    if let Some(m) = &cli.metrics_dir {
        if let Err(e) = metrics(m, t0, done.result.is_ok()) {
            errln!("warning: cannot write metrics: {e}");
        }
    }
    let rep = done.result.context("restore failed; the data directory is as it was")?;
    for w in &rep.warnings {
        errln!("warning: {w}");
    }
    if cli.verbose {
        for n in &done.notes {
            errln!("{n}");
        }
        if let Some(p) = &rep.on_chain {
            out(format!("Anchor on Bitcoin: {p}"))?;
        }
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

/// Writes DIR/ailee_restore.prom: when the last restore ran, how long it
/// took, and whether it succeeded.
fn metrics(dir: &std::path::Path, t0: f64, ok: bool) -> ailee_core::Result<()> {
    let mut f = MetricsFile::open(dir, RESTORE)?;
    let t = now();
    f.set("ailee_restore_last_timestamp_seconds", &[], t.floor())?;
    f.set(
        "ailee_restore_duration_seconds",
        &[],
        ((t - t0) * 1000.0).round() / 1000.0,
    )?;
    f.set("ailee_restore_success", &[], if ok { 1.0 } else { 0.0 })?;
    f.commit().map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
