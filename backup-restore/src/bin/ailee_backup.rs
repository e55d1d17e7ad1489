//! `ailee_backup`: hourly backups of an AILEE data directory into a restic
//! repository (SPEC §5); `--list` and `--verify` read them back.

use ailee_cli::{out, EXIT_CODES_HELP};
use ailee_core::metrics::{MetricsFile, BACKUP};
use ailee_core::ExitStatus;
use ailee_db::backup::{self, restic::Snapshot, BackupOptions, Retention};
use anyhow::Context;
use backup_cli::{finish, install_signals, now, RepoArgs};
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

const KEEP_MAX: u32 = 1_000_000;

fn keep(s: &str) -> Result<u32, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number from 0 to {KEEP_MAX}"))?;
    if n > KEEP_MAX as u64 {
        return Err(format!("{n} is out of range 0..={KEEP_MAX}"));
    }
    Ok(n as u32)
}

fn keep_last(s: &str) -> Result<u32, String> {
    match keep(s)? {
        0 => Err("0 would keep nothing; use at least 1".into()),
        n => Ok(n),
    }
}

/// Back up an AILEE data directory (l2_snapshots.dat and reorg_db) into a
/// restic repository: encrypted, deduplicated, tagged with the newest state
/// root, anchor hash, snapshot count and Bitcoin height.
///
/// Only complete snapshots are backed up (a torn tail is never copied), and
/// reorg_db is copied consistently through a read-only open while the node
/// runs. DATA_DIR/backups/l2_snapshots_latest.dat.bak is kept as a complete,
/// verifying copy for the runbook's `cp`. Retention follows restic's policy
/// (default: 24 hourly, 7 daily, 4 weekly, 6 monthly). Quiet on success
/// unless -v (cron mails any output). Overlapping runs are refused.
#[derive(Debug, Parser)]
#[command(name = "ailee_backup", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// The node's data directory (must exist; never created).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    repo: RepoArgs,
    /// List the backups (time, id, root, anchor, height, snapshots, size) instead of backing up.
    #[arg(long, conflicts_with = "verify")]
    list: bool,
    /// With --list: one JSON array on stdout.
    #[arg(long, requires = "list")]
    json: bool,
    /// Check a backup instead of backing up: restic's check of the repository,
    /// then a restore to a scratch directory and our own verification (the
    /// recorded root, every snapshot, the database check). Exit 2 when corrupt.
    #[arg(long, value_name = "ID|latest", num_args = 0..=1, default_missing_value = "latest")]
    verify: Option<String>,
    /// With --verify: have restic read and check all repository data.
    #[arg(long, requires = "verify")]
    read_data: bool,
    /// Hourly backups to keep.
    #[arg(long, value_name = "N", default_value = "24", value_parser = keep)]
    keep_hourly: u32,
    /// Daily backups to keep.
    #[arg(long, value_name = "N", default_value = "7", value_parser = keep)]
    keep_daily: u32,
    /// Weekly backups to keep.
    #[arg(long, value_name = "N", default_value = "4", value_parser = keep)]
    keep_weekly: u32,
    /// Monthly backups to keep.
    #[arg(long, value_name = "N", default_value = "6", value_parser = keep)]
    keep_monthly: u32,
    /// Yearly backups to keep.
    #[arg(long, value_name = "N", default_value = "0", value_parser = keep)]
    keep_yearly: u32,
    /// Also keep the last N backups whatever their age (1..=1000000).
    #[arg(long, value_name = "N", value_parser = keep_last)]
    keep: Option<u32>,
    /// Do not apply the retention policy after this backup.
    #[arg(long)]
    no_forget: bool,
    /// Record this time for the backup (restic backup --time, e.g. '2026-01-02 03:00:00').
    #[arg(long, value_name = "TIME", hide = true)]
    time: Option<String>,
    /// Write ailee_backup.prom here for node_exporter's textfile collector.
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
    finish(
        run(cli),
        "interrupted: no backup was made (the runbook copy is complete, the previous or the new one)",
    )
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
    if cli.list {
        let r = cli.repo.resolve(d, false)?;
        return list(&r.snapshots()?, cli.json);
    }
    if let Some(which) = &cli.verify {
        let r = cli.repo.resolve(d, false)?;
        let _lock = backup::lock(d)?;
        let scratch = d.join("backups");
        let parent = if scratch.is_dir() { scratch } else { d.clone() };
        backup::reap(&parent, ".ailee-verify.");
        let v = backup::verify(&r, which, cli.read_data, &parent)?;
        for (n, why) in &v.failing {
            eprintln!("warning: snapshot {n} in the backup does not verify (so it was in the live file): {why}");
        }
        out(format!(
            "Backup {} verified: {} snapshots, newest root {}",
            &v.snapshot[..v.snapshot.len().min(8)],
            v.snapshots,
            v.root
        ))?;
        return Ok(ExitStatus::Success);
    }
    let retention = Retention {
        last: cli.keep,
        hourly: cli.keep_hourly,
        daily: cli.keep_daily,
        weekly: cli.keep_weekly,
        monthly: cli.keep_monthly,
        yearly: cli.keep_yearly,
    };
    if retention.is_empty() && !cli.no_forget {
        anyhow::bail!(ailee_core::Error::Usage(
            "every --keep-* is 0: that would delete every backup (use --no-forget to keep all)".into()
        ));
    }
    let t0 = now();
    let result = (|| {
        let restic = cli.repo.resolve(d, true)?;
        let _lock = backup::lock(d)?;
        backup::backup(&BackupOptions {
            data_dir: d.clone(),
            restic,
            retention,
            time: cli.time.clone(),
            no_forget: cli.no_forget,
            measure_repo: cli.metrics_dir.is_some(),
        })
    })();
    let interrupted_before_commit = matches!(&result, Err(ailee_core::Error::Interrupted));
    if let Some(m) = &cli.metrics_dir {
        if !interrupted_before_commit {
            if let Err(e) = metrics(m, t0, &result) {
                eprintln!("warning: cannot write metrics: {e}");
            }
        }
    }
    let rep = result.context("backup failed")?;
    for w in &rep.warnings {
        eprintln!("warning: {w}");
    }
    if cli.verbose {
        if rep.created_repo {
            eprintln!("created restic repository (format 2, compressed)");
        }
        out(format!(
            "Backup {}: {} snapshots ({} bytes, {} appended, {} added to the repository), root {}, anchor {}{}{}",
            &rep.snapshot_id,
            rep.snapshots,
            rep.bytes,
            rep.appended,
            rep.data_added,
            rep.root,
            rep.anchor,
            rep.height.map(|h| format!(", height {h}")).unwrap_or_default(),
            if rep.forgotten > 0 {
                format!("; {} old backups removed by the retention policy", rep.forgotten)
            } else {
                String::new()
            }
        ))?;
    }
    Ok(ExitStatus::Success)
}

/// Writes DIR/ailee_backup.prom through the one metrics writer: values this
/// run does not set (the last success after a failure) are carried over, the
/// failure counter survives runs.
fn metrics(dir: &std::path::Path, t0: f64, r: &ailee_core::Result<backup::BackupReport>) -> ailee_core::Result<()> {
    let mut m = MetricsFile::open(dir, BACKUP)?;
    let t = now();
    m.set(
        "ailee_backup_duration_seconds",
        &[],
        ((t - t0) * 1000.0).round() / 1000.0,
    )?;
    match r {
        Ok(rep) => {
            m.set("ailee_backup_last_success_timestamp_seconds", &[], t.floor())?;
            m.set("ailee_backup_bytes_added", &[], rep.data_added as f64)?;
            if let Some(size) = rep.repo_size {
                m.set("ailee_backup_repository_size_bytes", &[], size as f64)?;
            }
            // Present from the first run on, so rate() and alerts see a series.
            m.inc("ailee_backup_failures_total", &[], 0.0)?;
        }
        Err(_) => {
            m.set("ailee_backup_last_failure_timestamp_seconds", &[], t.floor())?;
            m.inc("ailee_backup_failures_total", &[], 1.0)?;
        }
    }
    m.commit().map(|_| ())
}

fn list(snaps: &[Snapshot], as_json: bool) -> anyhow::Result<ExitStatus> {
    if as_json {
        let v: Vec<_> = snaps
            .iter()
            .map(|s| {
                json!({
                    "time": s.time,
                    "id": s.id,
                    "short_id": s.short(),
                    "root": s.tag("root"),
                    "anchor": s.tag("anchor"),
                    "height": s.tag_u64("height"),
                    "snapshots": s.tag_u64("snapshots"),
                    "bytes": s.tag_u64("bytes"),
                })
            })
            .collect();
        out(serde_json::Value::Array(v))?;
        return Ok(ExitStatus::Success);
    }
    out(format!(
        "{:<20} {:<8} {:<16} {:<16} {:>8} {:>9} {:>14}",
        "TIME", "ID", "ROOT", "ANCHOR", "HEIGHT", "SNAPSHOTS", "BYTES"
    ))?;
    for s in snaps {
        let short = |x: Option<&str>| x.map_or("-".to_string(), |v| v[..v.len().min(16)].to_string());
        let num = |x: Option<u64>| x.map_or("-".to_string(), |v| v.to_string());
        out(format!(
            "{:<20} {:<8} {:<16} {:<16} {:>8} {:>9} {:>14}",
            s.time.get(..19).unwrap_or(&s.time).replace('T', " "),
            s.short(),
            short(s.tag("root")),
            short(s.tag("anchor")),
            num(s.tag_u64("height")),
            num(s.tag_u64("snapshots")),
            num(s.tag_u64("bytes")),
        ))?;
    }
    Ok(ExitStatus::Success)
}
