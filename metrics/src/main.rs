//! `ailee_metrics`: the monitor (`monitor`) and the metrics writer for
//! scripts (`write`), both through `ailee_core::metrics` (SPEC §6).

use ailee_cli::{out, RpcArgs, EXIT_CODES_HELP};
use ailee_core::metrics;
use ailee_core::{Error, ExitStatus};
use ailee_metrics::{Line, MonitorOptions, NotWritten, WriteOptions};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Metrics for node_exporter's textfile collector, and the AILEE monitor.
///
/// `monitor` checks a node's data directory cheaply (the newest snapshot,
/// read from the end of the file and verified; sizes; the reorg database's
/// anchors, reorg events and tip; with --bitcoin-rpc the distance to the
/// newest anchor), prints the runbook's warnings and writes
/// DIR/ailee_monitor.prom. `write` lets scripts report their metrics through
/// the same writer (one file per writer, replaced atomically; values not
/// given are kept from the previous file, so counters survive runs).
#[derive(Debug, Parser)]
#[command(name = "ailee_metrics", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    Monitor(MonitorArgs),
    Write(WriteArgs),
    Fork(ForkArgs),
}

/// Compare reorg_db's stored blocks with the Bitcoin node's best chain.
///
/// Finds the lowest stored height whose hash the node's best chain does not
/// hold (a few dozen lookups whatever the depth) and whether the node knows
/// reorg_db's tip block at all: a node that knows it as a stale branch saw a
/// real reorg; one that has never seen it is the wrong node (port, network)
/// or one synced after the reorg. Read-only: safe while the node runs.
/// With --height H, also whether the stored block at H is on the node's
/// best chain (ailee_get_snapshot_block --bitcoin-rpc asks this).
/// Exit 0 when the stored blocks (and H) are on the node's best chain, 1 when
/// they are not (the fork is printed) or the node or database cannot be read.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
struct ForkArgs {
    /// Reorg database directory.
    #[arg(long, value_name = "P")]
    db_path: PathBuf,
    /// Also say whether height H of the stored chain is on the node's best chain.
    #[arg(long, value_name = "H")]
    height: Option<u64>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    rpc: RpcArgs,
}

/// Check a data directory, print warnings, write DIR/ailee_monitor.prom.
///
/// Warnings (printed on stdout, like the runbook's cron job): snapshot file
/// above --max-snapshot-mb, reorg_db above --max-reorg-db-mb, no successful
/// backup within --max-backup-age-hours, newest snapshot older than
/// --max-snapshot-age-hours, more than --max-divergence blocks between the
/// Bitcoin node's tip and the newest mined anchor, Bitcoin node unreachable,
/// the node's best chain forked from reorg_db's stored blocks more than 6
/// blocks deep (a deep reorg not resynced, or the wrong node).
///
/// The checks always run and print first; the metrics file is written
/// after. Exit 0 when all is well, 1 when it warned (or could not read
/// something, or could not write DIR/ailee_monitor.prom), 2 when the newest
/// snapshot does not verify or a reorg_db record is corrupt: the worse of
/// the checks and the metrics write. A metrics file that cannot be replaced
/// is rewritten in place, else emptied, else removed, so node_exporter never
/// serves an earlier run's "verified 1" as this run's; stderr says which.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
struct MonitorArgs {
    /// The node's data directory (l2_snapshots.dat, reorg_db/, backups/).
    #[arg(long, value_name = "D")]
    data_dir: PathBuf,
    /// Where to write ailee_monitor.prom (node_exporter's textfile directory);
    /// also where the backup's ailee_backup.prom is looked for.
    #[arg(long, value_name = "DIR")]
    metrics_dir: Option<PathBuf>,
    /// Backup directory, for the age of the newest backup when no
    /// ailee_backup.prom is in --metrics-dir [default: D/backups].
    #[arg(long, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
    /// Warn when the last successful backup is older (hours, decimals allowed);
    /// with ailee_backup.prom, for each repository in it (local, off-site).
    #[arg(long, value_name = "H", default_value = "2", value_parser = positive_hours)]
    max_backup_age_hours: f64,
    /// Warn when the newest snapshot's timestamp is older (hours; off by default).
    #[arg(long, value_name = "H", value_parser = positive_hours)]
    max_snapshot_age_hours: Option<f64>,
    /// Warn when l2_snapshots.dat is larger (MB, runbook: 5000).
    #[arg(long, value_name = "MB", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    max_snapshot_mb: u64,
    /// Warn when reorg_db is larger (MB, runbook: 1000).
    #[arg(long, value_name = "MB", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    max_reorg_db_mb: u64,
    /// Warn when the Bitcoin node's tip is more blocks ahead of the newest mined anchor (runbook: 100).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    max_divergence: u64,
    /// ailee_resync_blocks' --max-reorg-depth: a fork of the node's chain from
    /// reorg_db deeper than this is one resync refuses (the warning says so).
    #[arg(long, value_name = "N", default_value_t = ailee_db::resync::DEFAULT_MAX_REORG_DEPTH,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_reorg_depth: u64,
    /// Print nothing when all is well (for cron, which mails any output); notes off too.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    rpc: RpcArgs,
}

/// Write metrics through the shared writer (for scripts).
///
/// Updates DIR/WRITER.prom atomically: samples given with --set/--inc change,
/// every other sample of the previous file is kept. SAMPLE is NAME or
/// NAME{label=value,...}; NAME must be one of the declared metrics of WRITER
/// (see the README's metric table). VALUE is a decimal number or `now`
/// (Unix seconds).
///
/// Example, a failed backup: `ailee_metrics write --metrics-dir
/// /var/lib/node_exporter/textfile --writer ailee_backup --set
/// 'ailee_backup_last_failure_timestamp_seconds{repository=/srv/backup}=now'
/// --inc 'ailee_backup_failures_total{repository=/srv/backup}'`
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
struct WriteArgs {
    /// node_exporter's textfile directory (created if missing).
    #[arg(long, value_name = "DIR")]
    metrics_dir: PathBuf,
    /// The writer: the file is DIR/WRITER.prom (ailee_backup, ailee_restore, ailee_drill, …).
    #[arg(long, value_name = "WRITER")]
    writer: String,
    /// Set a sample: SAMPLE=VALUE.
    #[arg(long, value_name = "SAMPLE=VALUE")]
    set: Vec<String>,
    /// Add to a counter: SAMPLE or SAMPLE=BY (default 1); starts from the previous file's value.
    #[arg(long, value_name = "SAMPLE[=BY]")]
    inc: Vec<String>,
    /// Remove a sample (a value that is no longer known).
    #[arg(long, value_name = "SAMPLE")]
    remove: Vec<String>,
}

fn positive_hours(s: &str) -> Result<f64, String> {
    match metrics::parse_value(s) {
        Ok(v) if v > 0.0 && v <= 24.0 * 366.0 * 100.0 => Ok(v),
        Ok(_) => Err(format!("{s} is out of range (more than 0 hours, at most 100 years)")),
        Err(_) => Err(format!("{s:?} is not a number of hours (e.g. 2 or 1.5)")),
    }
}

fn main() -> ExitCode {
    ailee_cli::main(|cli: Cli| match cli.cmd {
        Cmd::Monitor(a) => monitor(a),
        Cmd::Write(a) => write(a),
        Cmd::Fork(a) => fork(a),
    })
}

fn write(a: WriteArgs) -> anyhow::Result<ExitStatus> {
    let o = WriteOptions {
        metrics_dir: a.metrics_dir,
        writer: a.writer,
        set: a.set,
        inc: a.inc,
        remove: a.remove,
    };
    ailee_metrics::write(&o, |l| {
        ailee_cli::errln!("warning: dropping unreadable line of the previous file: {l}")
    })?;
    Ok(ExitStatus::Success)
}

/// Prints the checks' findings (warnings on stdout, notes on stderr), then
/// writes the metrics file; the status is the worse of the two.
fn monitor(a: MonitorArgs) -> anyhow::Result<ExitStatus> {
    let rpc = match a.rpc.bitcoin_rpc {
        Some(_) => Some(a.rpc.config()?),
        None => None,
    };
    let o = MonitorOptions {
        data_dir: a.data_dir,
        metrics_dir: a.metrics_dir,
        backup_dir: a.backup_dir,
        max_backup_age_hours: a.max_backup_age_hours,
        max_snapshot_age_hours: a.max_snapshot_age_hours,
        max_snapshot_mb: a.max_snapshot_mb,
        max_reorg_db_mb: a.max_reorg_db_mb,
        max_divergence: a.max_divergence,
        max_reorg_depth: a.max_reorg_depth,
        quiet: a.quiet,
        rpc,
    };
    let run = ailee_metrics::monitor(&o)?;
    for l in &run.findings.lines {
        match l {
            Line::Warning(w) => out(format_args!("Warning: {w}"))?,
            Line::Note(n) => ailee_cli::errln!("note: {n}"),
        }
    }
    if let Some(ok) = &run.ok {
        out(ok)?;
    }
    let mut status = run.findings.status;
    if let Some(mut m) = run.file {
        for l in &m.unreadable {
            ailee_cli::errln!("warning: dropping unreadable line of the previous ailee_monitor.prom: {l}");
        }
        ailee_metrics::apply_samples(&mut m, &run.samples)?;
        if let Err(e) = ailee_metrics::write_monitor(m, run.lock_error) {
            say_not_written(*e);
            if status == ExitStatus::Success {
                status = ExitStatus::Operational;
            }
        }
    }
    Ok(status)
}

/// Says on stderr what went wrong writing the monitor's file and what became
/// of the previous file.
fn say_not_written(e: NotWritten) {
    use ailee_core::metrics::Withdrawn;
    if let Some(e) = &e.lock_error {
        ailee_cli::errln!("error: cannot open (lock and read back) the metrics file: {e}");
    }
    let Some(fail) = e.commit else {
        return;
    };
    let what = match &fail.previous {
        Withdrawn::Rewritten => "rewrote it in place with this run's values instead (not atomically)".to_string(),
        Withdrawn::Emptied => "emptied it instead: node_exporter serves none of the monitor's values \
             (AileeMonitorMetricsMissing fires)"
            .to_string(),
        Withdrawn::Removed => "removed the previous file instead: node_exporter serves none of the monitor's \
             values (AileeMonitorMetricsMissing fires)"
            .to_string(),
        Withdrawn::Absent => "node_exporter serves none of the monitor's values".to_string(),
        Withdrawn::Stale(e) => format!(
            "the previous file cannot be changed either ({e}): node_exporter keeps serving what an earlier \
             run saw until AileeMonitorNotRunning fires (30 min after the last run written)"
        ),
    };
    ailee_cli::errln!(
        "error: cannot write the metrics file {}: {}; {what}",
        e.path.display(),
        fail.error
    );
}

fn fork(a: ForkArgs) -> anyhow::Result<ExitStatus> {
    if a.rpc.bitcoin_rpc.is_none() {
        return Err(Error::Usage("--bitcoin-rpc is required".into()).into());
    }
    let cfg = a.rpc.config()?;
    let c = ailee_metrics::fork(&a.db_path, &cfg, a.height)?;
    if a.json {
        out(serde_json::json!({
            "node": c.node, "node_tip": c.node_tip, "stored_tip": c.stored_tip,
            "fork_height": c.fork.as_ref().map(|f| f.height), "depth": c.fork.as_ref().map(|f| f.depth),
            "node_knows_stored_tip": c.knows,
            "height": c.height, "on_best_chain": c.on_best_chain,
        }))?;
        return Ok(c.status());
    }
    let tip = c.node_tip;
    match &c.fork {
        None => out(format_args!(
            "reorg_db's stored blocks (tip {}) are on the node's best chain (tip {tip}){}",
            c.stored_tip.map_or("none".to_string(), |t| t.to_string()),
            if c.stored_tip.is_some_and(|t| t > tip) {
                ": the node is behind"
            } else {
                ""
            }
        ))?,
        Some(f) => out(format_args!(
            "Fork at height {}: {} stored block(s) up to {} are not on the node's best chain (tip {tip}); {}",
            f.height,
            f.depth,
            f.stored_tip,
            ailee_metrics::whose_fork(c.knows)
        ))?,
    }
    if let (Some(h), Some(on)) = (c.height, c.on_best_chain) {
        out(format_args!(
            "Height {h}: {}",
            if on {
                "on the node's best chain"
            } else {
                "not on the node's best chain"
            }
        ))?;
    }
    Ok(c.status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hours_are_positive_decimals() {
        assert_eq!(positive_hours("1.5"), Ok(1.5));
        assert_eq!(positive_hours("2"), Ok(2.0));
        for bad in ["2h", "0", "-1", "inf", "nan", "", "1e10"] {
            assert!(positive_hours(bad).is_err(), "{bad}");
        }
    }
}
