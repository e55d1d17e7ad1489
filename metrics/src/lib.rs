//! The workflows of `ailee_metrics`: the monitor ([`monitor`]), the writer
//! for scripts ([`write`]) and the fork check ([`fork`]). Each takes an
//! options struct and returns what it found; the binary prints it.
//!
//! The monitor's checks read the data directory through `ailee_db::monitor`
//! (the snapshot file's tail, the database's counts, the fork search); this
//! module composes them into the runbook's warnings and the samples of
//! `ailee_monitor.prom`.

use ailee_core::metrics::{self, MetricsFile, MONITOR};
use ailee_core::records::AnchorStatus;
use ailee_core::rpc::{Rpc, RpcConfig};
use ailee_core::{Error, ExitStatus};
use ailee_db::monitor::{db_status, disk_usage, fork_with, snapshot_status, DbStatus, Fork};
use ailee_db::reorgdb::{Mode, ReorgDb};
use std::path::{Path, PathBuf};

/// What `ailee_metrics write` changes in `DIR/WRITER.prom`.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub metrics_dir: PathBuf,
    pub writer: String,
    /// `SAMPLE=VALUE`
    pub set: Vec<String>,
    /// `SAMPLE` or `SAMPLE=BY`
    pub inc: Vec<String>,
    /// `SAMPLE`
    pub remove: Vec<String>,
}

/// `NAME` or `NAME{k=v,...}` → (name, label values in the declared order).
pub fn parse_sample_arg(s: &str) -> anyhow::Result<(String, Vec<String>)> {
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

/// `ailee_metrics write`: parses everything, then updates the file
/// atomically. Lines of the previous file that do not parse are dropped;
/// `unreadable` hears of each before the file is written.
pub fn write(a: &WriteOptions, unreadable: impl Fn(&str)) -> anyhow::Result<()> {
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
        unreadable(l);
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
    Ok(())
}

/// Seconds as hours with one decimal, without a trailing `.0` ("3", "2.5").
fn hours(secs: f64) -> String {
    let h = format!("{:.1}", secs / 3600.0);
    h.strip_suffix(".0").map(str::to_string).unwrap_or(h)
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A line of the monitor's report, in the order found.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// On stdout as `Warning: …` (cron mails it).
    Warning(String),
    /// On stderr as `note: …` (not with --quiet).
    Note(String),
}

/// What the monitor found, worst first.
#[derive(Debug)]
pub struct Findings {
    pub status: ExitStatus,
    pub warnings: u64,
    pub lines: Vec<Line>,
}

impl Findings {
    fn warn(&mut self, msg: impl std::fmt::Display) {
        self.lines.push(Line::Warning(msg.to_string()));
        self.warnings += 1;
        if self.status == ExitStatus::Success {
            self.status = ExitStatus::Operational;
        }
    }

    fn integrity(&mut self, msg: impl std::fmt::Display) {
        self.warn(msg);
        self.status = ExitStatus::Integrity;
    }

    fn note(&mut self, quiet: bool, msg: impl std::fmt::Display) {
        if !quiet {
            self.lines.push(Line::Note(msg.to_string()));
        }
    }
}

/// The monitor's options (`ailee_metrics monitor`).
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub data_dir: PathBuf,
    pub metrics_dir: Option<PathBuf>,
    /// Default: DATA_DIR/backups.
    pub backup_dir: Option<PathBuf>,
    pub max_backup_age_hours: f64,
    pub max_snapshot_age_hours: Option<f64>,
    pub max_snapshot_mb: u64,
    pub max_reorg_db_mb: u64,
    pub max_divergence: u64,
    pub max_reorg_depth: u64,
    pub quiet: bool,
    /// The Bitcoin node to compare with, if any.
    pub rpc: Option<RpcConfig>,
}

/// A sample of `ailee_monitor.prom`: name, label values, value (`None`:
/// removed, not known this run).
pub type Sample = (&'static str, Vec<String>, Option<f64>);

/// A monitor run, checked but not yet written.
pub struct Monitored {
    pub findings: Findings,
    /// Every sample this run sets or removes.
    pub samples: Vec<Sample>,
    /// "OK: …" when nothing warned (and not --quiet).
    pub ok: Option<String>,
    /// The metrics file, locked (or read without the lock: `lock_error`).
    pub file: Option<MetricsFile>,
    pub lock_error: Option<Error>,
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

/// The samples of a run, collected in order.
#[derive(Default)]
struct Samples(Vec<Sample>);

impl Samples {
    fn put(&mut self, name: &'static str, v: Option<f64>) {
        self.0.push((name, Vec::new(), v));
    }
}

/// The previous run's values the database check compares with.
struct Previous {
    events: Option<f64>,
    tip: Option<f64>,
    depth: Option<f64>,
    last: (Option<f64>, Option<f64>),
}

impl Previous {
    fn of(m: Option<&MetricsFile>) -> Previous {
        let prev = |name: &str| m.and_then(|m| m.get(name, &[]));
        Previous {
            events: prev("ailee_reorg_db_reorg_events_total"),
            tip: prev("ailee_reorg_db_tip_height"),
            depth: prev("ailee_reorg_db_last_reorg_depth_blocks"),
            last: (
                prev("ailee_reorg_db_last_reorg_height"),
                prev("ailee_reorg_db_last_reorg_timestamp_seconds"),
            ),
        }
    }
}

/// `ailee_metrics monitor`: runs every check (database, newest snapshot,
/// backups, Bitcoin) and collects the warnings and samples; the caller
/// prints them, then [`write_monitor`] writes the file.
pub fn monitor(a: &MonitorOptions) -> anyhow::Result<Monitored> {
    let md = std::fs::metadata(&a.data_dir).map_err(|e| Error::io(&a.data_dir, e))?;
    if !md.is_dir() {
        return Err(Error::Usage(format!("{}: not a directory", a.data_dir.display())).into());
    }
    // Lock and read the previous file first: the reorg depth needs the tip
    // it saw. A directory that cannot be locked (read-only, not ours, not a
    // directory) hides nothing: the checks run and print, the previous file
    // is read without the lock, and the failure is reported after them.
    let (file, lock_error) = match &a.metrics_dir {
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
        lines: Vec::new(),
    };
    let mut s = Samples::default();
    let db_path = a.data_dir.join("reorg_db");
    let db = match ReorgDb::open(&db_path, Mode::ReadOnly) {
        Ok(db) => Some(db),
        Err(e) => {
            f.warn(format_args!("cannot open reorg database: {e}"));
            None
        }
    };
    let db_size = disk_usage(&db_path).ok();
    s.put("ailee_reorg_db_size_bytes", db_size.map(|v| v as f64));
    if let Some(size) = db_size {
        // Whole MB rounded up, as the runbook's `du -sm` counts.
        let mb = size.div_ceil(MB);
        if mb > a.max_reorg_db_mb {
            f.warn(format_args!("Reorg DB is {mb}MB - consider pruning"));
        }
    }
    let dbs = check_db(db.as_ref(), &Previous::of(file.as_ref()), &mut f, &mut s);
    let file_path = a.data_dir.join("l2_snapshots.dat");
    let anchor_height = check_snapshot(a, &file_path, db.as_ref(), now, &mut f, &mut s)
        .or(dbs.as_ref().and_then(|d| d.newest_mined_anchor_height));
    check_backups(a, now, &mut f);
    if let Some(cfg) = &a.rpc {
        check_bitcoin(a, cfg, db.as_ref(), anchor_height, &mut f, &mut s);
    } else {
        for n in [
            "ailee_bitcoin_rpc_up",
            "ailee_bitcoin_tip_height",
            "ailee_anchor_newest_height",
            "ailee_anchor_divergence_blocks",
            "ailee_bitcoin_fork_depth_blocks",
        ] {
            s.put(n, None);
        }
    }
    s.put("ailee_monitor_last_run_timestamp_seconds", Some(now.floor()));
    s.put("ailee_monitor_warnings", Some(f.warnings as f64));
    anchor_samples(dbs.as_ref(), &mut s);
    let ok = (f.warnings == 0 && !a.quiet).then(|| {
        format!(
            "OK: snapshots {}MB, reorg_db {}MB, newest snapshot verified",
            std::fs::metadata(&file_path).map_or(0, |m| m.len() / MB),
            db_size.unwrap_or(0).div_ceil(MB)
        )
    });
    Ok(Monitored {
        findings: f,
        samples: s.0,
        ok,
        file,
        lock_error,
    })
}

/// `ailee_reorg_db_anchors{status}`: one sample per status, removed when
/// the database could not be read.
fn anchor_samples(dbs: Option<&DbStatus>, s: &mut Samples) {
    for st in AnchorStatus::ALL {
        let label = st.name().to_ascii_lowercase();
        let v = dbs.map(|d| d.anchors[st as usize] as f64);
        s.0.push(("ailee_reorg_db_anchors", vec![label], v));
    }
}

/// The reorg database: corrupt records, counts, the newest reorg event and
/// whether it is new since the previous run.
fn check_db(db: Option<&ReorgDb>, prev: &Previous, f: &mut Findings, s: &mut Samples) -> Option<DbStatus> {
    let dbs = match db.map(db_status) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            f.warn(format_args!("cannot read reorg database: {e}"));
            None
        }
        None => None,
    };
    let Some(d) = &dbs else {
        for n in [
            "ailee_reorg_db_corrupt_records",
            "ailee_reorg_db_reorg_events_total",
            "ailee_reorg_db_tip_height",
            "ailee_reorg_db_last_reorg_height",
            "ailee_reorg_db_last_reorg_timestamp_seconds",
            "ailee_reorg_db_last_reorg_depth_blocks",
        ] {
            s.put(n, None);
        }
        return None;
    };
    if d.corrupt > 0 {
        f.integrity(format_args!(
            "reorg_db has {} corrupt record(s): {} - run ailee_init_reorg_db --check, then runbook Procedure 3",
            d.corrupt,
            d.errors.join("; ")
        ));
    }
    s.put("ailee_reorg_db_corrupt_records", Some(d.corrupt as f64));
    s.put("ailee_reorg_db_reorg_events_total", Some(d.reorg_events as f64));
    s.put("ailee_reorg_db_tip_height", d.tip.map(|t| t as f64));
    let last = d.last_event.as_ref().map(|(_, e)| e);
    s.put("ailee_reorg_db_last_reorg_height", last.map(|e| e.reorg_height as f64));
    s.put(
        "ailee_reorg_db_last_reorg_timestamp_seconds",
        last.map(|e| e.detected_at as f64 / 1000.0),
    );
    // A new event: the newest one is not the one the previous run saw
    // (by height and detection time, so a database rebuilt by Procedure 3
    // whose first event reuses an old id still counts). Only once the
    // monitor has run before: the first run has nothing to compare with.
    let key = last.map(|e| (Some(e.reorg_height as f64), Some(e.detected_at as f64 / 1000.0)));
    let new_event = prev.events.is_some() && key.is_some_and(|k| k != prev.last);
    // Its depth: the stored tip the previous run saw, minus the fork, plus
    // 1 (the event does not record one); kept until the next event.
    let depth = match (last, new_event, prev.tip) {
        (Some(e), true, Some(pt)) => Some((pt - e.reorg_height as f64 + 1.0).max(0.0)),
        (Some(_), false, _) => prev.depth,
        _ => None,
    };
    s.put("ailee_reorg_db_last_reorg_depth_blocks", depth);
    if let (Some(e), true) = (last, new_event) {
        f.warn(format_args!(
            "new reorg recorded at height {}{}: {} anchor(s) invalidated - check with ailee_init_reorg_db --check{}",
            e.reorg_height,
            depth.map(|d| format!(" (depth {d})")).unwrap_or_default(),
            e.invalidated_anchors.len(),
            if e.invalidated_anchors.is_empty() {
                ""
            } else {
                ", then re-anchor (ailee_create_anchor)"
            }
        ));
    }
    dbs
}

/// The newest snapshot: size, torn tail, verification, age. Returns the
/// Bitcoin height of its anchor when the database records it mined.
fn check_snapshot(
    a: &MonitorOptions,
    file: &Path,
    db: Option<&ReorgDb>,
    now: f64,
    f: &mut Findings,
    s: &mut Samples,
) -> Option<u64> {
    let st = match snapshot_status(file, db) {
        Ok(st) => st,
        Err(e) => {
            f.warn(format_args!("cannot read the snapshot file: {e}"));
            s.put("ailee_snapshot_file_size_bytes", None);
            s.put("ailee_snapshot_torn_tail", None);
            s.put("ailee_snapshot_newest_verified", Some(0.0));
            s.put("ailee_snapshot_newest_timestamp_seconds", None);
            return None;
        }
    };
    s.put("ailee_snapshot_file_size_bytes", Some(st.size_bytes as f64));
    s.put(
        "ailee_snapshot_torn_tail",
        Some(if st.torn_tail.is_some() { 1.0 } else { 0.0 }),
    );
    s.put(
        "ailee_snapshot_newest_verified",
        Some(if st.verified() { 1.0 } else { 0.0 }),
    );
    if st.size_bytes / MB > a.max_snapshot_mb {
        f.warn(format_args!(
            "Snapshot file is {}MB - consider pruning",
            st.size_bytes / MB
        ));
    }
    if let Some((off, len)) = st.torn_tail {
        f.note(a.quiet, format_args!("the file ends in a torn snapshot at byte offset {off} ({len} bytes): ignored (a crash, or an append in progress)"));
    }
    let Some(n) = &st.newest else {
        s.put("ailee_snapshot_newest_timestamp_seconds", None);
        f.integrity(format_args!(
            "no complete snapshot in {} - runbook Procedure 1 (restore from backup)",
            file.display()
        ));
        return None;
    };
    s.put(
        "ailee_snapshot_newest_timestamp_seconds",
        n.timestamp_ms.map(|t| t as f64 / 1000.0),
    );
    for w in &n.warnings {
        f.note(a.quiet, format_args!("newest snapshot: {w}"));
    }
    if let Some(why) = &n.failure {
        f.integrity(format_args!(
            "the newest snapshot does not verify: {why} - run ailee_l2_verify, then runbook Procedure 1 or 2"
        ));
    }
    if let (Some(max), Some(t)) = (a.max_snapshot_age_hours, n.timestamp_ms) {
        let age = now - t as f64 / 1000.0;
        if age > max * 3600.0 {
            f.warn(format_args!(
                "the newest snapshot is {}h old (limit {max}h): is the node anchoring?",
                hours(age)
            ));
        }
    }
    let r = db?.anchor(n.anchor_hash.as_ref()?).ok()??;
    (r.bitcoin_height > 0 && !r.status.is_void()).then_some(r.bitcoin_height)
}

/// The age of the last successful backup of each repository.
fn check_backups(a: &MonitorOptions, now: f64, f: &mut Findings) {
    let bdir = a.backup_dir.clone().unwrap_or_else(|| a.data_dir.join("backups"));
    let backups = last_backups(a.metrics_dir.as_deref(), &bdir);
    if backups.is_empty() {
        f.warn(format_args!(
            "no backup found (no ailee_backup.prom in the metrics directory, no backup in {})",
            bdir.display()
        ));
    }
    for (t, from) in backups {
        match t {
            None => f.warn(format_args!("no successful backup yet, only failed ones (from {from})")),
            Some(t) if now - t > a.max_backup_age_hours * 3600.0 => f.warn(format_args!(
                "the last successful backup is {}h old (limit {}h, from {from})",
                hours(now - t),
                a.max_backup_age_hours
            )),
            Some(_) => {}
        }
    }
}

/// The Bitcoin node: reachable, its tip, the fork from the stored blocks,
/// the distance to the newest mined anchor.
fn check_bitcoin(
    a: &MonitorOptions,
    cfg: &RpcConfig,
    db: Option<&ReorgDb>,
    anchor_height: Option<u64>,
    f: &mut Findings,
    s: &mut Samples,
) {
    let (tip, rpc) = match Rpc::connect(cfg).and_then(|r| Ok((r.block_count()?, r))) {
        Ok(c) => c,
        Err(e) => {
            f.warn(format_args!("cannot reach the Bitcoin node: {e}"));
            s.put("ailee_bitcoin_rpc_up", Some(0.0));
            s.put("ailee_bitcoin_tip_height", None);
            s.put("ailee_anchor_newest_height", anchor_height.map(|h| h as f64));
            s.put("ailee_anchor_divergence_blocks", None);
            s.put("ailee_bitcoin_fork_depth_blocks", None);
            return;
        }
    };
    let rpc = &rpc;
    match db.map(|db| fork_with(db, tip, |h| rpc.block_hash_at(h))) {
        None => s.put("ailee_bitcoin_fork_depth_blocks", None),
        Some(Ok(None)) => s.put("ailee_bitcoin_fork_depth_blocks", Some(0.0)),
        Some(Ok(Some(fork))) => {
            s.put("ailee_bitcoin_fork_depth_blocks", Some(fork.depth as f64));
            report_fork(f, rpc, &fork, tip, anchor_height, a);
        }
        Some(Err(e)) => {
            s.put("ailee_bitcoin_fork_depth_blocks", None);
            f.warn(format_args!(
                "cannot compare reorg_db's blocks with the Bitcoin node's chain: {e}"
            ));
        }
    }
    s.put("ailee_bitcoin_rpc_up", Some(1.0));
    s.put("ailee_bitcoin_tip_height", Some(tip as f64));
    s.put("ailee_anchor_newest_height", anchor_height.map(|h| h as f64));
    let div = anchor_height.map(|h| tip.saturating_sub(h));
    s.put("ailee_anchor_divergence_blocks", div.map(|d| d as f64));
    match div {
        None => f.warn("no mined anchor in the reorg database: divergence unknown"),
        Some(d) if d > a.max_divergence => f.warn(format_args!(
            "Large divergence detected: the newest anchor is {d} blocks behind Bitcoin (limit {}) - may need to re-anchor",
            a.max_divergence
        )),
        Some(_) => {}
    }
}

/// Sets a monitor run's samples in its file (not yet written).
pub fn apply_samples(m: &mut MetricsFile, samples: &[Sample]) -> ailee_core::Result<()> {
    for (name, labels, v) in samples {
        let l = refs(labels);
        match v {
            Some(v) => m.set(name, &l, *v)?,
            None => m.remove(name, &l),
        }
    }
    Ok(())
}

/// How writing `ailee_monitor.prom` went wrong (stderr says it).
pub struct NotWritten {
    pub path: PathBuf,
    /// The file could not be locked (the checks ran anyway).
    pub lock_error: Option<Error>,
    /// The commit failed, and what became of the previous file.
    pub commit: Option<metrics::WriteFailure>,
}

/// Writes the monitor's file; on failure the previous file is withdrawn
/// (rewritten, emptied or removed) so node_exporter never serves an earlier
/// run's values as this run's. `Ok` when all went well, the lock included.
pub fn write_monitor(m: MetricsFile, lock_error: Option<Error>) -> Result<(), Box<NotWritten>> {
    let path = m.path();
    let commit = m.commit_or_withdraw().err();
    if lock_error.is_none() && commit.is_none() {
        return Ok(());
    }
    Err(Box::new(NotWritten {
        path,
        lock_error,
        commit,
    }))
}

/// What `ailee_metrics fork` found.
pub struct ForkCheck {
    pub node: String,
    pub node_tip: u64,
    pub stored_tip: Option<u64>,
    /// The lowest stored height not on the node's best chain, if any.
    pub fork: Option<Fork>,
    /// Whether the node knows the stored tip as a stale branch.
    pub knows: Option<bool>,
    /// `--height H`: whether H is on the node's best chain.
    pub height: Option<u64>,
    pub on_best_chain: Option<bool>,
}

impl ForkCheck {
    /// Exit 0 when the stored blocks (and H) are on the node's best chain.
    pub fn status(&self) -> ExitStatus {
        if self.fork.is_none() && self.on_best_chain != Some(false) {
            ExitStatus::Success
        } else {
            ExitStatus::Operational
        }
    }
}

/// `ailee_metrics fork`: compares the stored blocks with the node's best
/// chain (read-only).
pub fn fork(db_path: &Path, cfg: &RpcConfig, height: Option<u64>) -> anyhow::Result<ForkCheck> {
    let db = ReorgDb::open(db_path, Mode::ReadOnly)?;
    let rpc = Rpc::connect(cfg)?;
    let tip = rpc.block_count()?;
    let stored_tip = db.tip()?;
    let found = fork_with(&db, tip, |h| rpc.block_hash_at(h))?;
    let knows = found.as_ref().and_then(|f| node_knows_stale(&rpc, &f.stored_tip_hash));
    // Height H is on the node's best chain: the node has it and it is below any fork.
    let on_best_chain = height.map(|h| h <= tip && found.as_ref().is_none_or(|f| h < f.height));
    Ok(ForkCheck {
        node: rpc.url().to_string(),
        node_tip: tip,
        stored_tip,
        fork: found,
        knows,
        height,
        on_best_chain,
    })
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
pub fn whose_fork(knows: Option<bool>) -> &'static str {
    match knows {
        Some(true) => "the node knows reorg_db's tip block as a stale branch: a real reorg",
        Some(false) => {
            "the node has never seen reorg_db's tip block: the wrong node (port, network) or one that never saw the old branch"
        }
        None => "the node did not say whether it knows reorg_db's tip block",
    }
}

/// The warning for a fork between reorg_db and the node's best chain:
/// whether resync can follow it, whether the node knows reorg_db's tip block
/// (a real reorg) or not (the wrong node, or one that never saw it), and
/// whether the newest anchor is above the fork. A fork of at most 6 blocks
/// (the confirmation threshold) is a note: the node follows such reorgs itself.
fn report_fork(
    f: &mut Findings,
    rpc: &ailee_core::rpc::Rpc,
    fork: &Fork,
    node_tip: u64,
    anchor_height: Option<u64>,
    a: &MonitorOptions,
) {
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
        f.note(
            a.quiet,
            format_args!("{msg}; ailee_resync_blocks (or the node) records it"),
        );
        return;
    }
    if fork.depth > a.max_reorg_depth {
        f.warn(format_args!(
            "{msg} - deeper than --max-reorg-depth {}: ailee_resync_blocks refuses it; see docs/MONITORING.md (deep reorg)",
            a.max_reorg_depth
        ));
    } else {
        f.warn(format_args!(
            "{msg} - halt the node and run ailee_resync_blocks (runbook Procedure 3, step 4), then re-anchor"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn write_keeps_what_it_is_not_told_and_counts_on() {
        let t = tempfile::tempdir().unwrap();
        let o = |set: &[&str], inc: &[&str]| WriteOptions {
            metrics_dir: t.path().to_path_buf(),
            writer: metrics::DRILL.to_string(),
            set: set.iter().map(|s| s.to_string()).collect(),
            inc: inc.iter().map(|s| s.to_string()).collect(),
            remove: Vec::new(),
        };
        write(&o(&["ailee_drill_success{mode=crash}=1"], &[]), |_| {}).unwrap();
        write(&o(&["ailee_drill_recovery_seconds{mode=crash}=2.5"], &[]), |_| {}).unwrap();
        let m = MetricsFile::open(t.path(), metrics::DRILL).unwrap();
        assert_eq!(m.get("ailee_drill_success", &["crash"]), Some(1.0));
        assert_eq!(m.get("ailee_drill_recovery_seconds", &["crash"]), Some(2.5));
        drop(m);
        let e = write(&o(&[], &[]), |_| {}).unwrap_err();
        assert!(e.to_string().contains("nothing to write"), "{e}");
    }

    #[test]
    fn monitor_of_an_empty_data_dir_warns_of_each_missing_part() {
        let t = tempfile::tempdir().unwrap();
        let o = MonitorOptions {
            data_dir: t.path().to_path_buf(),
            metrics_dir: None,
            backup_dir: None,
            max_backup_age_hours: 2.0,
            max_snapshot_age_hours: None,
            max_snapshot_mb: 5000,
            max_reorg_db_mb: 1000,
            max_divergence: 100,
            max_reorg_depth: 100,
            quiet: false,
            rpc: None,
        };
        let run = monitor(&o).unwrap();
        assert_eq!(run.findings.status, ExitStatus::Operational);
        let warned = |what: &str| {
            run.findings
                .lines
                .iter()
                .any(|l| matches!(l, Line::Warning(w) if w.starts_with(what)))
        };
        assert!(warned("cannot open reorg database"), "{:?}", run.findings.lines);
        assert!(warned("cannot read the snapshot file"), "{:?}", run.findings.lines);
        assert!(warned("no backup found"), "{:?}", run.findings.lines);
        assert_eq!(run.findings.warnings, 3);
        assert!(run.ok.is_none());
        let sample = |n: &str| run.samples.iter().find(|s| s.0 == n).map(|s| s.2);
        assert_eq!(sample("ailee_snapshot_newest_verified"), Some(Some(0.0)));
        assert_eq!(sample("ailee_monitor_warnings"), Some(Some(3.0)));
        assert_eq!(sample("ailee_bitcoin_rpc_up"), Some(None));
        let e = monitor(&MonitorOptions {
            data_dir: t.path().join("absent"),
            ..o
        });
        assert!(e.is_err());
    }
}
