//! `ailee_metrics`: the monitor (`monitor`) and the metrics writer for
//! scripts (`write`), both through `ailee_core::metrics` (SPEC §6).

use ailee_cli::{out, RpcArgs, EXIT_CODES_HELP};
use ailee_core::metrics::{self, MetricsFile, MONITOR};
use ailee_core::records::AnchorStatus;
use ailee_core::{Error, ExitStatus};
use ailee_db::monitor::{db_status, disk_usage, fork_with, snapshot_status};
use ailee_db::reorgdb::{Mode, ReorgDb};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
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

/// `NAME` or `NAME{k=v,...}` → (name, label values in the declared order).
fn parse_sample_arg(s: &str) -> anyhow::Result<(String, Vec<String>)> {
    let bad = || Error::Usage(format!("bad sample {s:?}: expected NAME or NAME{{label=value,...}}"));
    let (name, labels) = match s.split_once('{') {
        None => (s, None),
        Some((n, rest)) => (n, Some(rest.strip_suffix('}').ok_or_else(bad)?)),
    };
    let d = metrics::def(name).ok_or_else(|| Error::Usage(format!("unknown metric {name}")))?;
    let mut given = Vec::new();
    for kv in labels
        .into_iter()
        .flat_map(|l| l.split(','))
        .filter(|kv| !kv.is_empty())
    {
        let (k, v) = kv.split_once('=').ok_or_else(bad)?;
        if v.contains(['{', '}', '"', '\n']) {
            return Err(bad().into());
        }
        given.push((k.to_string(), v.to_string()));
    }
    if given.len() != d.labels.len() {
        return Err(Error::Usage(format!("metric {name} takes labels {:?}", d.labels)).into());
    }
    let vals = d
        .labels
        .iter()
        .map(|l| given.iter().find(|(k, _)| k == l).map(|(_, v)| v.clone()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::Usage(format!("metric {name} takes labels {:?}", d.labels)))?;
    Ok((name.to_string(), vals))
}

fn write(a: WriteArgs) -> anyhow::Result<ExitStatus> {
    if a.set.is_empty() && a.inc.is_empty() && a.remove.is_empty() {
        return Err(Error::Usage("nothing to write: give --set, --inc or --remove".into()).into());
    }
    // Parse everything before touching the file.
    let mut sets = Vec::new();
    for s in &a.set {
        let (sample, value) = s
            .rsplit_once('=')
            .filter(|(l, _)| !l.is_empty())
            .ok_or_else(|| Error::Usage(format!("--set {s:?}: expected SAMPLE=VALUE")))?;
        let value = metrics::parse_value(value).map_err(|e| Error::Usage(format!("--set {s:?}: {e}")))?;
        sets.push((parse_sample_arg(sample)?, value));
    }
    let mut incs = Vec::new();
    for s in &a.inc {
        let (sample, by) = match s.rsplit_once('=') {
            Some((l, r)) if !l.ends_with(['{', ',']) && !r.contains('}') => (
                l,
                metrics::parse_value(r).map_err(|e| Error::Usage(format!("--inc {s:?}: {e}")))?,
            ),
            _ => (s.as_str(), 1.0),
        };
        incs.push((parse_sample_arg(sample)?, by));
    }
    let removes = a
        .remove
        .iter()
        .map(|s| parse_sample_arg(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut m = MetricsFile::open(&a.metrics_dir, &a.writer)?;
    for l in &m.unreadable {
        ailee_cli::errln!("warning: dropping unreadable line of the previous file: {l}");
    }
    for ((name, labels), v) in &sets {
        m.set(name, &refs(labels), *v)?;
    }
    for ((name, labels), by) in &incs {
        m.inc(name, &refs(labels), *by)?;
    }
    for (name, labels) in &removes {
        m.remove(name, &refs(labels));
    }
    m.commit()?;
    Ok(ExitStatus::Success)
}

/// Seconds as hours with one decimal, without a trailing `.0` ("3", "2.5").
fn hours(secs: f64) -> String {
    let h = format!("{:.1}", secs / 3600.0);
    h.strip_suffix(".0").map(str::to_string).unwrap_or(h)
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What the monitor found, worst first.
struct Findings {
    status: ExitStatus,
    warnings: u64,
}

impl Findings {
    fn warn(&mut self, msg: impl std::fmt::Display) -> anyhow::Result<()> {
        out(format_args!("Warning: {msg}"))?;
        self.warnings += 1;
        if self.status == ExitStatus::Success {
            self.status = ExitStatus::Operational;
        }
        Ok(())
    }

    fn integrity(&mut self, msg: impl std::fmt::Display) -> anyhow::Result<()> {
        self.warn(msg)?;
        self.status = ExitStatus::Integrity;
        Ok(())
    }
}

const MB: u64 = 1024 * 1024;

fn mtime_seconds(p: &Path) -> Option<f64> {
    let t = std::fs::metadata(p).ok()?.modified().ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

/// Unix time of the last successful backup of each repository, oldest
/// first, and where it was read. From the backup's metrics file when it has
/// backup series: one entry per `repository` label (`None` for a repository
/// whose backups have only failed so far; the unlabelled series of a version
/// before the label count as one repository). Every repository must be
/// within the limit: a recent local backup does not excuse an off-site copy
/// that stopped. Else the newest marker in the backup directory
/// (`last_backup`, which ailee_backup rewrites after each success, or the
/// older scheme's `manifest_*.txt`), else its `l2_snapshots_latest.dat.bak`.
fn last_backups(metrics_dir: Option<&Path>, backup_dir: &Path) -> Vec<(Option<f64>, String)> {
    if let Some(dir) = metrics_dir {
        let p = dir.join(format!("{}.prom", metrics::BACKUP));
        if let Ok(samples) = metrics::read_samples(&p) {
            let mut repos: std::collections::BTreeMap<Option<&str>, Option<f64>> = Default::default();
            for (name, labels, v) in &samples {
                let success = name == "ailee_backup_last_success_timestamp_seconds";
                if !(success || name == "ailee_backup_last_failure_timestamp_seconds") || v.is_nan() {
                    continue;
                }
                let repo = labels.iter().find(|(k, _)| k == "repository").map(|(_, r)| r.as_str());
                let last = repos.entry(repo).or_default();
                if success {
                    *last = Some(last.map_or(*v, |t| t.max(*v)));
                }
            }
            if !repos.is_empty() {
                let mut found: Vec<(Option<f64>, String)> = repos
                    .into_iter()
                    .map(|(r, t)| match r {
                        Some(r) => (t, format!("{}, repository {r}", p.display())),
                        None => (t, p.display().to_string()),
                    })
                    .collect();
                found.sort_by(|a, b| a.0.unwrap_or(f64::MIN).total_cmp(&b.0.unwrap_or(f64::MIN)));
                return found;
            }
        }
    }
    let mut best: Option<(f64, String)> = None;
    if let Ok(rd) = std::fs::read_dir(backup_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name == "last_backup" || name.starts_with("manifest_") && name.ends_with(".txt")) {
                continue;
            }
            if let Some(t) = mtime_seconds(&e.path()) {
                if best.as_ref().is_none_or(|(b, _)| t > *b) {
                    best = Some((t, e.path().display().to_string()));
                }
            }
        }
    }
    best.or_else(|| {
        let p = backup_dir.join("l2_snapshots_latest.dat.bak");
        mtime_seconds(&p).map(|t| (t, p.display().to_string()))
    })
    .map(|(t, from)| (Some(t), from))
    .into_iter()
    .collect()
}

fn monitor(a: MonitorArgs) -> anyhow::Result<ExitStatus> {
    let md = std::fs::metadata(&a.data_dir).map_err(|e| Error::io(&a.data_dir, e))?;
    if !md.is_dir() {
        return Err(Error::Usage(format!("{}: not a directory", a.data_dir.display())).into());
    }
    let rpc_cfg = match a.rpc.bitcoin_rpc {
        Some(_) => Some(a.rpc.config()?),
        None => None,
    };
    // Lock and read the previous file first: the reorg depth needs the tip
    // it saw. A directory that cannot be locked (read-only, not ours, not a
    // directory) hides nothing: the checks run and print, the previous file
    // is read without the lock, and the failure is reported after them.
    let (mut m, lock_error) = match &a.metrics_dir {
        Some(d) => match MetricsFile::open(d, MONITOR) {
            Ok(m) => (Some(m), None),
            Err(e) => (Some(MetricsFile::open_unlocked(d, MONITOR)?), Some(e)),
        },
        None => (None, None),
    };
    let now = metrics::now_seconds();
    let mut f = Findings {
        status: ExitStatus::Success,
        warnings: 0,
    };
    let mut set: Vec<(&str, Vec<String>, Option<f64>)> = Vec::new();
    let mut put = |name: &'static str, v: Option<f64>| set.push((name, Vec::new(), v));

    // reorg_db
    let db_path = a.data_dir.join("reorg_db");
    let db = match ReorgDb::open(&db_path, Mode::ReadOnly) {
        Ok(db) => Some(db),
        Err(e) => {
            f.warn(format_args!("cannot open reorg database: {e}"))?;
            None
        }
    };
    let db_size = disk_usage(&db_path).ok();
    put("ailee_reorg_db_size_bytes", db_size.map(|v| v as f64));
    if let Some(s) = db_size {
        // Whole MB rounded up, as the runbook's `du -sm` counts.
        let mb = s.div_ceil(MB);
        if mb > a.max_reorg_db_mb {
            f.warn(format_args!("Reorg DB is {mb}MB - consider pruning"))?;
        }
    }
    let dbs = match &db {
        Some(db) => match db_status(db) {
            Ok(s) => Some(s),
            Err(e) => {
                f.warn(format_args!("cannot read reorg database: {e}"))?;
                None
            }
        },
        None => None,
    };
    let prev = |name: &str| m.as_ref().and_then(|m| m.get(name, &[]));
    let prev_events = prev("ailee_reorg_db_reorg_events_total");
    let prev_tip = prev("ailee_reorg_db_tip_height");
    let prev_depth = prev("ailee_reorg_db_last_reorg_depth_blocks");
    let prev_last = (
        prev("ailee_reorg_db_last_reorg_height"),
        prev("ailee_reorg_db_last_reorg_timestamp_seconds"),
    );
    let mut anchors: Vec<(String, f64)> = Vec::new();
    if let Some(s) = &dbs {
        if s.corrupt > 0 {
            f.integrity(format_args!(
                "reorg_db has {} corrupt record(s): {} - run ailee_init_reorg_db --check, then runbook Procedure 3",
                s.corrupt,
                s.errors.join("; ")
            ))?;
        }
        for st in AnchorStatus::ALL {
            anchors.push((st.name().to_ascii_lowercase(), s.anchors[st as usize] as f64));
        }
        put("ailee_reorg_db_corrupt_records", Some(s.corrupt as f64));
        put("ailee_reorg_db_reorg_events_total", Some(s.reorg_events as f64));
        put("ailee_reorg_db_tip_height", s.tip.map(|t| t as f64));
        let last = s.last_event.as_ref().map(|(_, e)| e);
        put("ailee_reorg_db_last_reorg_height", last.map(|e| e.reorg_height as f64));
        put(
            "ailee_reorg_db_last_reorg_timestamp_seconds",
            last.map(|e| e.detected_at as f64 / 1000.0),
        );
        // A new event: the newest one is not the one the previous run saw
        // (by height and detection time, so a database rebuilt by Procedure 3
        // whose first event reuses an old id still counts). Only once the
        // monitor has run before: the first run has nothing to compare with.
        let key = last.map(|e| (Some(e.reorg_height as f64), Some(e.detected_at as f64 / 1000.0)));
        let new_event = prev_events.is_some() && key.is_some_and(|k| k != prev_last);
        // Its depth: the stored tip the previous run saw, minus the fork, plus
        // 1 (the event does not record one); kept until the next event.
        let depth = match (last, new_event, prev_tip) {
            (Some(e), true, Some(pt)) => Some((pt - e.reorg_height as f64 + 1.0).max(0.0)),
            (Some(_), false, _) => prev_depth,
            _ => None,
        };
        put("ailee_reorg_db_last_reorg_depth_blocks", depth);
        if let (Some(e), true) = (last, new_event) {
            f.warn(format_args!(
                "new reorg recorded at height {}{}: {} anchor(s) invalidated - check with ailee_init_reorg_db --check{}",
                e.reorg_height,
                depth.map(|d| format!(" (depth {d})")).unwrap_or_default(),
                e.invalidated_anchors.len(),
                if e.invalidated_anchors.is_empty() { "" } else { ", then re-anchor (ailee_create_anchor)" }
            ))?;
        }
    } else {
        for n in [
            "ailee_reorg_db_corrupt_records",
            "ailee_reorg_db_reorg_events_total",
            "ailee_reorg_db_tip_height",
            "ailee_reorg_db_last_reorg_height",
            "ailee_reorg_db_last_reorg_timestamp_seconds",
            "ailee_reorg_db_last_reorg_depth_blocks",
        ] {
            put(n, None);
        }
    }

    // The newest snapshot.
    let file = a.data_dir.join("l2_snapshots.dat");
    let mut anchor_height = None;
    match snapshot_status(&file, db.as_ref()) {
        Ok(s) => {
            put("ailee_snapshot_file_size_bytes", Some(s.size_bytes as f64));
            put(
                "ailee_snapshot_torn_tail",
                Some(if s.torn_tail.is_some() { 1.0 } else { 0.0 }),
            );
            put(
                "ailee_snapshot_newest_verified",
                Some(if s.verified() { 1.0 } else { 0.0 }),
            );
            if s.size_bytes / MB > a.max_snapshot_mb {
                f.warn(format_args!(
                    "Snapshot file is {}MB - consider pruning",
                    s.size_bytes / MB
                ))?;
            }
            if let (Some((off, len)), false) = (s.torn_tail, a.quiet) {
                ailee_cli::errln!("note: the file ends in a torn snapshot at byte offset {off} ({len} bytes): ignored (a crash, or an append in progress)");
            }
            match &s.newest {
                None => {
                    put("ailee_snapshot_newest_timestamp_seconds", None);
                    f.integrity(format_args!(
                        "no complete snapshot in {} - runbook Procedure 1 (restore from backup)",
                        file.display()
                    ))?;
                }
                Some(n) => {
                    put(
                        "ailee_snapshot_newest_timestamp_seconds",
                        n.timestamp_ms.map(|t| t as f64 / 1000.0),
                    );
                    for w in n.warnings.iter().filter(|_| !a.quiet) {
                        ailee_cli::errln!("note: newest snapshot: {w}");
                    }
                    if let Some(why) = &n.failure {
                        f.integrity(format_args!(
                            "the newest snapshot does not verify: {why} - run ailee_l2_verify, then runbook Procedure 1 or 2"
                        ))?;
                    }
                    if let (Some(max), Some(t)) = (a.max_snapshot_age_hours, n.timestamp_ms) {
                        let age = now - t as f64 / 1000.0;
                        if age > max * 3600.0 {
                            f.warn(format_args!(
                                "the newest snapshot is {}h old (limit {max}h): is the node anchoring?",
                                hours(age)
                            ))?;
                        }
                    }
                    if let (Some(db), Some(h)) = (&db, &n.anchor_hash) {
                        if let Ok(Some(r)) = db.anchor(h) {
                            if r.bitcoin_height > 0 && !r.status.is_void() {
                                anchor_height = Some(r.bitcoin_height);
                            }
                        }
                    }
                }
            }
        }
        Err(e) => {
            f.warn(format_args!("cannot read the snapshot file: {e}"))?;
            put("ailee_snapshot_file_size_bytes", None);
            put("ailee_snapshot_torn_tail", None);
            put("ailee_snapshot_newest_verified", Some(0.0));
            put("ailee_snapshot_newest_timestamp_seconds", None);
        }
    }
    let anchor_height = anchor_height.or(dbs.as_ref().and_then(|s| s.newest_mined_anchor_height));

    // Backups.
    let bdir = a.backup_dir.clone().unwrap_or_else(|| a.data_dir.join("backups"));
    let backups = last_backups(a.metrics_dir.as_deref(), &bdir);
    if backups.is_empty() {
        f.warn(format_args!(
            "no backup found (no ailee_backup.prom in the metrics directory, no backup in {})",
            bdir.display()
        ))?;
    }
    for (t, from) in backups {
        match t {
            None => f.warn(format_args!("no successful backup yet, only failed ones (from {from})"))?,
            Some(t) if now - t > a.max_backup_age_hours * 3600.0 => f.warn(format_args!(
                "the last successful backup is {}h old (limit {}h, from {from})",
                hours(now - t),
                a.max_backup_age_hours
            ))?,
            Some(_) => {}
        }
    }

    // Bitcoin.
    if let Some(cfg) = &rpc_cfg {
        let connected = ailee_core::rpc::Rpc::connect(cfg).and_then(|r| Ok((r.block_count()?, r)));
        match connected {
            Ok((tip, rpc)) => {
                let rpc = &rpc;
                match db.as_ref().map(|db| fork_with(db, tip, |h| rpc.block_hash_at(h))) {
                    None => put("ailee_bitcoin_fork_depth_blocks", None),
                    Some(Ok(None)) => put("ailee_bitcoin_fork_depth_blocks", Some(0.0)),
                    Some(Ok(Some(fork))) => {
                        put("ailee_bitcoin_fork_depth_blocks", Some(fork.depth as f64));
                        report_fork(&mut f, rpc, &fork, tip, anchor_height, &a)?;
                    }
                    Some(Err(e)) => {
                        put("ailee_bitcoin_fork_depth_blocks", None);
                        f.warn(format_args!(
                            "cannot compare reorg_db's blocks with the Bitcoin node's chain: {e}"
                        ))?;
                    }
                }
                put("ailee_bitcoin_rpc_up", Some(1.0));
                put("ailee_bitcoin_tip_height", Some(tip as f64));
                put("ailee_anchor_newest_height", anchor_height.map(|h| h as f64));
                let div = anchor_height.map(|h| tip.saturating_sub(h));
                put("ailee_anchor_divergence_blocks", div.map(|d| d as f64));
                match div {
                    None => f.warn("no mined anchor in the reorg database: divergence unknown")?,
                    Some(d) if d > a.max_divergence => f.warn(format_args!(
                        "Large divergence detected: the newest anchor is {d} blocks behind Bitcoin (limit {}) - may need to re-anchor",
                        a.max_divergence
                    ))?,
                    Some(_) => {}
                }
            }
            Err(e) => {
                f.warn(format_args!("cannot reach the Bitcoin node: {e}"))?;
                put("ailee_bitcoin_rpc_up", Some(0.0));
                put("ailee_bitcoin_tip_height", None);
                put("ailee_anchor_newest_height", anchor_height.map(|h| h as f64));
                put("ailee_anchor_divergence_blocks", None);
                put("ailee_bitcoin_fork_depth_blocks", None);
            }
        }
    } else {
        for n in [
            "ailee_bitcoin_rpc_up",
            "ailee_bitcoin_tip_height",
            "ailee_anchor_newest_height",
            "ailee_anchor_divergence_blocks",
            "ailee_bitcoin_fork_depth_blocks",
        ] {
            put(n, None);
        }
    }
    put("ailee_monitor_last_run_timestamp_seconds", Some(now.floor()));
    put("ailee_monitor_warnings", Some(f.warnings as f64));
    if f.warnings == 0 && !a.quiet {
        out(format_args!(
            "OK: snapshots {}MB, reorg_db {}MB, newest snapshot verified",
            std::fs::metadata(&file).map_or(0, |m| m.len() / MB),
            db_size.unwrap_or(0).div_ceil(MB)
        ))?;
    }

    if let Some(m) = m.as_mut() {
        for l in &m.unreadable {
            ailee_cli::errln!("warning: dropping unreadable line of the previous ailee_monitor.prom: {l}");
        }
        for (name, labels, v) in &set {
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            match v {
                Some(v) => m.set(name, &l, *v)?,
                None => m.remove(name, &l),
            }
        }
        for st in AnchorStatus::ALL {
            let label = st.name().to_ascii_lowercase();
            match anchors.iter().find(|(n, _)| *n == label) {
                Some((_, v)) => m.set("ailee_reorg_db_anchors", &[label.as_str()], *v)?,
                None => m.remove("ailee_reorg_db_anchors", &[label.as_str()]),
            }
        }
    }
    if let Some(m) = m {
        if !write_metrics(m, lock_error) && f.status == ExitStatus::Success {
            f.status = ExitStatus::Operational;
        }
    }
    Ok(f.status)
}

/// Commits the monitor's file; on failure says on stderr what went wrong
/// and what became of the previous file. `false` when anything failed
/// (the lock included): an error of its own, whatever the checks found.
fn write_metrics(m: MetricsFile, lock_error: Option<Error>) -> bool {
    use metrics::Withdrawn;
    let path = m.path();
    if let Some(e) = &lock_error {
        ailee_cli::errln!("error: cannot open (lock and read back) the metrics file: {e}");
    }
    let Err(fail) = m.commit_or_withdraw() else {
        return lock_error.is_none();
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
        path.display(),
        fail.error
    );
    false
}

/// Whether the node knows `hash` off its best chain (`getblockheader`
/// confirmations -1): `Some(true)` a stale branch it saw, `Some(false)` a
/// block it has never seen, `None` on its best chain or no clear answer.
fn node_knows_stale(rpc: &ailee_core::rpc::Rpc, hash: &str) -> Option<bool> {
    match rpc
        .batch_mixed(&[("getblockheader", serde_json::json!([hash]))])
        .ok()?
        .pop()?
    {
        Ok(v) => (v.get("confirmations").and_then(serde_json::Value::as_i64) == Some(-1)).then_some(true),
        // RPC_INVALID_ADDRESS_OR_KEY: "Block not found".
        Err((-5, _)) => Some(false),
        Err(_) => None,
    }
}

/// What [`node_knows_stale`] tells about a fork.
fn whose_fork(knows: Option<bool>) -> &'static str {
    match knows {
        Some(true) => "the node knows reorg_db's tip block as a stale branch: a real reorg",
        Some(false) => {
            "the node has never seen reorg_db's tip block: the wrong node (port, network) or one that never saw the old branch"
        }
        None => "the node did not say whether it knows reorg_db's tip block",
    }
}

fn fork(a: ForkArgs) -> anyhow::Result<ExitStatus> {
    if a.rpc.bitcoin_rpc.is_none() {
        return Err(Error::Usage("--bitcoin-rpc is required".into()).into());
    }
    let cfg = a.rpc.config()?;
    let db = ReorgDb::open(&a.db_path, Mode::ReadOnly)?;
    let rpc = ailee_core::rpc::Rpc::connect(&cfg)?;
    let tip = rpc.block_count()?;
    let stored_tip = db.tip()?;
    let found = fork_with(&db, tip, |h| rpc.block_hash_at(h))?;
    let knows = found.as_ref().and_then(|f| node_knows_stale(&rpc, &f.stored_tip_hash));
    // Height H is on the node's best chain: the node has it and it is below any fork.
    let on_chain = a
        .height
        .map(|h| h <= tip && found.as_ref().is_none_or(|f| h < f.height));
    if a.json {
        out(serde_json::json!({
            "node": rpc.url(), "node_tip": tip, "stored_tip": stored_tip,
            "fork_height": found.as_ref().map(|f| f.height), "depth": found.as_ref().map(|f| f.depth),
            "node_knows_stored_tip": knows,
            "height": a.height, "on_best_chain": on_chain,
        }))?;
    } else {
        match &found {
            None => out(format_args!(
                "reorg_db's stored blocks (tip {}) are on the node's best chain (tip {tip}){}",
                stored_tip.map_or("none".to_string(), |t| t.to_string()),
                if stored_tip.is_some_and(|t| t > tip) {
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
                whose_fork(knows)
            ))?,
        }
        if let (Some(h), Some(on)) = (a.height, on_chain) {
            out(format_args!(
                "Height {h}: {}",
                if on {
                    "on the node's best chain"
                } else {
                    "not on the node's best chain"
                }
            ))?;
        }
    }
    Ok(if found.is_none() && on_chain != Some(false) {
        ExitStatus::Success
    } else {
        ExitStatus::Operational
    })
}

/// The warning for a fork between reorg_db and the node's best chain:
/// whether resync can follow it, whether the node knows reorg_db's tip block
/// (a real reorg) or not (the wrong node, or one that never saw it), and
/// whether the newest anchor is above the fork. A fork of at most 6 blocks
/// (the confirmation threshold) is a note: the node follows such reorgs itself.
fn report_fork(
    f: &mut Findings,
    rpc: &ailee_core::rpc::Rpc,
    fork: &ailee_db::monitor::Fork,
    node_tip: u64,
    anchor_height: Option<u64>,
    a: &MonitorArgs,
) -> anyhow::Result<()> {
    let shallow = fork.depth <= ailee_core::records::DEFAULT_CONFIRMATIONS;
    let whose = whose_fork(node_knows_stale(rpc, &fork.stored_tip_hash));
    let anchor = match anchor_height {
        Some(h) if h >= fork.height => {
            format!("; the newest anchor's recorded block (height {h}) is above the fork: no longer on the node's best chain")
        }
        _ => String::new(),
    };
    let msg = format!(
        "the Bitcoin node's best chain (tip {node_tip}) forks from reorg_db at height {}: {} stored block(s) up to {} are not on it ({whose}){anchor}",
        fork.height, fork.depth, fork.stored_tip
    );
    if shallow {
        if !a.quiet {
            ailee_cli::errln!("note: {msg}; ailee_resync_blocks (or the node) records it");
        }
        return Ok(());
    }
    if fork.depth > a.max_reorg_depth {
        f.warn(format_args!(
            "{msg} - deeper than --max-reorg-depth {}: ailee_resync_blocks refuses it; see docs/MONITORING.md (deep reorg)",
            a.max_reorg_depth
        ))
    } else {
        f.warn(format_args!(
            "{msg} - halt the node and run ailee_resync_blocks (runbook Procedure 3, step 4), then re-anchor"
        ))
    }
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

    #[test]
    fn sample_arguments_parse() {
        assert_eq!(
            parse_sample_arg("ailee_drill_success{mode=crash}").unwrap(),
            ("ailee_drill_success".to_string(), vec!["crash".to_string()])
        );
        assert!(parse_sample_arg("ailee_drill_success").is_err());
        assert!(parse_sample_arg("ailee_drill_success{other=x}").is_err());
        assert!(parse_sample_arg("ailee_nope").is_err());
        assert!(parse_sample_arg("ailee_drill_success{mode=cr\"ash}").is_err());
    }
}
