//! `ailee_backup`: hourly backups of an AILEE data directory into a restic
//! repository (SPEC §5); `--list` and `--verify` read them back.

use ailee_cli::{errln, out, RpcArgs, Signals, EXIT_CODES_HELP};
use ailee_core::metrics::{MetricsFile, BACKUP};
use ailee_core::ExitStatus;
use ailee_db::backup::{self, restic::Snapshot, BackupOptions, Retention};
use anyhow::Context;
use backup_cli::{now, ListOptions, NodeChoice, RepoArgs, VerifyOptions};
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
///
/// --verify --bitcoin-rpc URL also checks the backup's newest anchor on
/// Bitcoin: its transaction (from the backup's reorg_db, else the live one)
/// must be in the node's best chain with at least --confirmations and carry
/// exactly the anchor's OP_RETURN. Contradicted or unrecorded: exit 2; not
/// mined, too few confirmations, node behind: exit 1. Without it a forged
/// but self-consistent backup written with the repository password passes.
#[derive(Debug, Parser)]
#[command(name = "ailee_backup", version, after_help = EXIT_CODES_HELP,
          mut_arg("bitcoin_rpc", |a| a.requires("verify")))]
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
    /// With --verify: the Bitcoin node for the on-chain check of the backup's
    /// newest anchor (see above).
    #[command(flatten)]
    rpc: RpcArgs,
    /// Confirmations the anchor's transaction needs for --bitcoin-rpc.
    #[arg(long, value_name = "N", default_value_t = ailee_core::records::DEFAULT_CONFIRMATIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    confirmations: u64,
    /// With --list or --verify: the backups of node ID (see --list --any-node)
    /// instead of this data directory's node (DATA_DIR/node_id).
    #[arg(long, value_name = "ID", conflicts_with = "any_node")]
    node: Option<String>,
    /// With --list or --verify: the backups of every node in the repository
    /// (and those made before node ids).
    #[arg(long)]
    any_node: bool,
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
        Err(code) => {
            // An hourly job with a wrong argument is failing too.
            if code != ExitCode::SUCCESS {
                if let Some(m) = backup_cli::metrics_dir_in_argv() {
                    // Counted for the repository the line names, if it can be read.
                    let repo = match (backup_cli::arg_in_argv("--repo"), backup_cli::arg_in_argv("--data-dir")) {
                        (Some(None), _) => None,
                        (repo, dir) => {
                            let dir = dir.flatten().map(PathBuf::from);
                            repo_label(repo.flatten().as_deref(), dir.as_deref())
                        }
                    };
                    let bad = Err(ailee_core::Error::Usage("bad arguments".into()));
                    let _ = metrics(&m, now(), &bad, None, repo);
                }
            }
            return code;
        }
    };
    ailee_cli::run_with(
        cli,
        Signals::Deferred {
            interrupted: "interrupted: no backup was made (the runbook copy is complete, the previous or the new one)",
        },
        run,
    )
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// `--list [--json]`.
    List { json: bool },
    /// `--verify [ID|latest]`.
    Verify { which: String },
    /// A backup (the default).
    Backup,
}

impl Cli {
    fn mode(&self) -> Mode {
        match (&self.verify, self.list) {
            (Some(which), _) => Mode::Verify { which: which.clone() },
            (None, true) => Mode::List { json: self.json },
            (None, false) => Mode::Backup,
        }
    }

    fn nodes(&self) -> NodeChoice {
        NodeChoice {
            node: self.node.clone(),
            any_node: self.any_node,
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    if let Some(m) = &cli.metrics_dir {
        if !m.is_dir() {
            anyhow::bail!(ailee_core::Error::Usage(format!(
                "--metrics-dir {}: not an existing directory",
                m.display()
            )));
        }
    }
    let mode = cli.mode();
    if (cli.node.is_some() || cli.any_node) && mode == Mode::Backup {
        anyhow::bail!(ailee_core::Error::Usage(
            "--node and --any-node are for --list and --verify (a backup is recorded for DATA_DIR/node_id)".into()
        ));
    }
    match mode {
        Mode::List { json } => {
            let l = backup_cli::list(&ListOptions {
                data_dir: cli.data_dir.clone(),
                repo: cli.repo.clone(),
                nodes: cli.nodes(),
            })?;
            let shown = list(&l.backups, json);
            if cli.verbose {
                for n in l.notes {
                    errln!("{n}");
                }
            }
            shown
        }
        Mode::Verify { which } => verify(&cli, which),
        Mode::Backup => backup_run(&cli),
    }
}

fn verify(cli: &Cli, which: String) -> anyhow::Result<ExitStatus> {
    let (v, notes) = backup_cli::verify(&VerifyOptions {
        data_dir: cli.data_dir.clone(),
        repo: cli.repo.clone(),
        nodes: cli.nodes(),
        which,
        read_data: cli.read_data,
        rpc: cli.rpc.clone(),
        confirmations: cli.confirmations,
    });
    if cli.verbose {
        for n in notes {
            errln!("{n}");
        }
    }
    let v = v?;
    for (n, why) in &v.failing {
        errln!("warning: snapshot {n} in the backup does not verify (so it was in the live file): {why}");
    }
    out(format!(
        "Backup {} verified: {} snapshots, newest root {}{}",
        &v.snapshot[..v.snapshot.len().min(8)],
        v.snapshots,
        v.root,
        v.on_chain
            .map(|p| format!("; anchor on Bitcoin: {p}"))
            .unwrap_or_default()
    ))?;
    Ok(ExitStatus::Success)
}

/// A backup (the default mode).
fn backup_run(cli: &Cli) -> anyhow::Result<ExitStatus> {
    let d = &cli.data_dir;
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
    let mut restic = None;
    let result = (|| {
        backup::check_data_dir(d)?;
        let r = cli.repo.resolve(d, true)?;
        restic = Some(r.clone());
        backup::backup(&BackupOptions {
            data_dir: d.clone(),
            restic: r,
            retention,
            time: cli.time.clone(),
            no_forget: cli.no_forget,
            measure_repo: cli.metrics_dir.is_some(),
            node: None,
        })
    })();
    let interrupted_before_commit = matches!(&result, Err(ailee_core::Error::Interrupted));
    if let Some(m) = &cli.metrics_dir {
        if !interrupted_before_commit {
            let repo = repo_label(cli.repo.repo.as_deref(), Some(d));
            if let Err(e) = metrics(m, t0, &result, restic.as_ref(), repo) {
                errln!("warning: cannot write metrics: {e}");
            }
        }
    }
    let notes = restic.as_ref().map(|r| r.notes()).unwrap_or_default();
    let rep = result.context("backup failed")?;
    for w in &rep.warnings {
        errln!("warning: {w}");
    }
    if cli.verbose {
        for n in &notes.messages {
            errln!("{n}");
        }
        if rep.created_node_id {
            errln!(
                "created node id {} in {} (every backup of this node carries it)",
                rep.node,
                d.join(backup::NODE_ID).display()
            );
        }
        if rep.created_repo {
            errln!("created restic repository (format 2, compressed)");
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

/// Writes DIR/ailee_backup.prom through the one metrics writer: the series
/// of this run's repository (label `repository`, its location without
/// credentials: `Restic::label`), so the local and the off-site cron lines
/// sharing one directory each have their own last success, last failure and
/// counters, and a local success never clears an off-site failure. Values
/// this run does not set (the last success after a failure) and the other
/// repositories' series are carried over; the counters survive runs.
///
/// `restic` is the run's repository. Without it (the run failed before the
/// repository was resolved: bad arguments, a missing data directory or
/// password file) `repository` is the label it would have had
/// ([`repo_label`]), so the failure lands on the series the next success
/// clears. When that is unknown too (a command line with neither --repo nor
/// --data-dir, and no $RESTIC_REPOSITORY) nothing is written: an empty label
/// value would be the unlabelled series of older versions, and an invented
/// one a failure no success could ever clear (cron mails the error).
fn metrics(
    dir: &std::path::Path,
    t0: f64,
    r: &ailee_core::Result<backup::BackupReport>,
    restic: Option<&ailee_db::backup::restic::Restic>,
    repository: Option<String>,
) -> ailee_core::Result<()> {
    let Some(repo) = restic.map(|r| r.label()).or(repository) else {
        return Err(ailee_core::Error::Usage(
            "the repository is not known (no --repo, --data-dir or RESTIC_REPOSITORY): failure not recorded".into(),
        ));
    };
    let l: &[&str] = &[&repo];
    let notes = restic.map(|r| r.notes()).unwrap_or_default();
    let mut m = MetricsFile::open(dir, BACKUP)?;
    let t = now();
    m.set("ailee_backup_duration_seconds", l, ((t - t0) * 1000.0).round() / 1000.0)?;
    match r {
        Ok(rep) => {
            m.set("ailee_backup_last_success_timestamp_seconds", l, t.floor())?;
            m.set("ailee_backup_bytes_added", l, rep.data_added as f64)?;
            if let Some(size) = rep.repo_size {
                m.set("ailee_backup_repository_size_bytes", l, size as f64)?;
            }
            // Present from the first run on, so rate() and alerts see a series.
            m.inc("ailee_backup_failures_total", l, 0.0)?;
        }
        Err(_) => {
            m.set("ailee_backup_last_failure_timestamp_seconds", l, t.floor())?;
            m.inc("ailee_backup_failures_total", l, 1.0)?;
        }
    }
    // Present from the first run on too (a run that never reached restic adds 0).
    let stale = notes.stale_locks_removed as f64;
    let timeouts = if notes.timed_out { 1.0 } else { 0.0 };
    m.inc("ailee_backup_stale_locks_removed_total", l, stale)?;
    m.inc("ailee_backup_timeouts_total", l, timeouts)?;
    m.commit().map(|_| ())
}

/// The `repository` label of a run whose repository was not resolved: the
/// location `RepoArgs::resolve` would have used (REPO, else
/// $RESTIC_REPOSITORY, else DATA_DIR/backups/repo; a local path made
/// absolute), shown as `Restic::label` shows it. `None` if it is not known.
fn repo_label(repo: Option<&str>, data_dir: Option<&std::path::Path>) -> Option<String> {
    let (location, default) = backup_cli::repo_location(repo, data_dir.unwrap_or(std::path::Path::new(""))).ok()?;
    // The default lives in the data directory: unknown without one.
    (!default || data_dir.is_some()).then(|| ailee_db::backup::restic::redact(&location))
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
                    "node": s.tag("node"),
                    "host": s.hostname,
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
        "{:<20} {:<8} {:<16} {:<16} {:<16} {:>8} {:>9} {:>14}",
        "TIME", "ID", "NODE", "ROOT", "ANCHOR", "HEIGHT", "SNAPSHOTS", "BYTES"
    ))?;
    for s in snaps {
        let short = |x: Option<&str>| x.map_or("-".to_string(), |v| v[..v.len().min(16)].to_string());
        let num = |x: Option<u64>| x.map_or("-".to_string(), |v| v.to_string());
        out(format!(
            "{:<20} {:<8} {:<16} {:<16} {:<16} {:>8} {:>9} {:>14}",
            s.time.get(..19).unwrap_or(&s.time).replace('T', " "),
            s.short(),
            short(s.tag("node")),
            short(s.tag("root")),
            short(s.tag("anchor")),
            num(s.tag_u64("height")),
            num(s.tag_u64("snapshots")),
            num(s.tag_u64("bytes")),
        ))?;
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_command_line_names_one_mode() {
        let mode = |args: &[&str]| {
            let mut v = vec!["ailee_backup", "--data-dir", "d"];
            v.extend(args);
            Cli::try_parse_from(v).unwrap().mode()
        };
        assert_eq!(mode(&[]), Mode::Backup);
        assert_eq!(mode(&["--list", "--json"]), Mode::List { json: true });
        assert_eq!(mode(&["--verify"]), Mode::Verify { which: "latest".into() });
        assert_eq!(
            mode(&["--verify", "abcd1234"]),
            Mode::Verify {
                which: "abcd1234".into()
            }
        );
    }
}
