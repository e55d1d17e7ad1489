//! The one writer of Prometheus metrics (SPEC §6): node_exporter's textfile
//! collector reads `DIR/<writer>.prom`, one file per writer (`ailee_backup`,
//! `ailee_monitor`, …).
//!
//! Invariants:
//! - Every metric the tools report is declared once in [`CATALOG`] with its
//!   type, help text and label names; a sample of an undeclared metric, or
//!   with other labels, is refused. Names follow Prometheus conventions
//!   (`_total` counters, units in the name).
//! - The file is replaced atomically ([`crate::atomic::Pending`]): the
//!   collector sees the old file or the new one, never half of one. The
//!   temporary name does not end in `.prom`, so the collector never reads it.
//! - Each run rewrites the whole file, so values a run does not set are
//!   carried over from the previous file ([`MetricsFile::open`] reads it
//!   back): a counter survives runs, a failed backup keeps the time of the
//!   last success. Read-modify-write holds an `flock` on
//!   `DIR/.<writer>.prom.lock`, so two runs of one writer never lose an
//!   increment.
//! - A writer whose file cannot be replaced (a read-only or full directory,
//!   no permission, a directory in its place) never leaves the previous
//!   file looking current where it can help it
//!   ([`MetricsFile::commit_or_withdraw`]): the file is rewritten in place,
//!   else emptied, else removed; only when none of that is possible does
//!   the previous file stay, and the caller says so.
//! - Output is the text exposition format: `# HELP` and `# TYPE` per family,
//!   label values escaped (`\\`, `\"`, `\n`), no sample timestamps (the
//!   collector refuses them), files readable by the collector's user (0644).

use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// A declared metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Label names every sample carries (in this order).
    pub labels: &'static [&'static str],
    /// The writer (file) that reports it.
    pub writer: &'static str,
}

const fn g(writer: &'static str, name: &'static str, labels: &'static [&'static str], help: &'static str) -> Def {
    Def {
        name,
        kind: Kind::Gauge,
        help,
        labels,
        writer,
    }
}

const fn c(writer: &'static str, name: &'static str, labels: &'static [&'static str], help: &'static str) -> Def {
    Def {
        name,
        kind: Kind::Counter,
        help,
        labels,
        writer,
    }
}

pub const BACKUP: &str = "ailee_backup";
pub const RESTORE: &str = "ailee_restore";
pub const MONITOR: &str = "ailee_monitor";
pub const RESYNC: &str = "ailee_resync";
pub const DRILL: &str = "ailee_drill";

/// The label of every `ailee_backup_*` metric: the repository's location
/// without credentials.
pub const BACKUP_LABELS: &[&str] = &["repository"];

/// Every metric the tools and scripts report (the README's table).
pub const CATALOG: &[Def] = &[
    // ailee_backup: one series per repository (`repository` is its location
    // without credentials, restic::Restic::label), so a local success never
    // hides an off-site failure. Unlabelled samples of older versions are
    // dropped when the file is read back (they do not match these labels).
    g(BACKUP, "ailee_backup_last_success_timestamp_seconds", BACKUP_LABELS, "Unix time of the last successful backup to the repository."),
    g(BACKUP, "ailee_backup_last_failure_timestamp_seconds", BACKUP_LABELS, "Unix time of the last failed backup to the repository."),
    c(BACKUP, "ailee_backup_failures_total", BACKUP_LABELS, "Backups to the repository that failed, counted across runs."),
    g(BACKUP, "ailee_backup_duration_seconds", BACKUP_LABELS, "Duration of the last backup run to the repository."),
    g(BACKUP, "ailee_backup_bytes_added", BACKUP_LABELS, "Bytes the last backup added to the repository (after deduplication)."),
    g(BACKUP, "ailee_backup_repository_size_bytes", BACKUP_LABELS, "Size of the repository after the last backup to it."),
    c(BACKUP, "ailee_backup_stale_locks_removed_total", BACKUP_LABELS, "Stale restic locks (of dead processes) that backups removed from the repository, counted across runs."),
    c(BACKUP, "ailee_backup_timeouts_total", BACKUP_LABELS, "Backups to the repository stopped because a restic call exceeded --restic-timeout, counted across runs."),
    // ailee_restore
    g(RESTORE, "ailee_restore_last_timestamp_seconds", &[], "Unix time the last restore attempt finished."),
    g(RESTORE, "ailee_restore_duration_seconds", &[], "Duration of the last restore attempt."),
    g(RESTORE, "ailee_restore_success", &[], "1 if the last restore succeeded, 0 if it failed (and rolled back)."),
    // ailee_monitor
    g(MONITOR, "ailee_monitor_last_run_timestamp_seconds", &[], "Unix time of the last monitor run."),
    g(MONITOR, "ailee_monitor_warnings", &[], "Warnings the last monitor run printed."),
    g(MONITOR, "ailee_snapshot_newest_verified", &[], "1 if the newest complete snapshot verifies, else 0."),
    g(MONITOR, "ailee_snapshot_newest_timestamp_seconds", &[], "timestamp_ms of the newest complete snapshot, in seconds."),
    g(MONITOR, "ailee_snapshot_torn_tail", &[], "1 if l2_snapshots.dat ends in a torn (incomplete) snapshot, else 0."),
    g(MONITOR, "ailee_snapshot_file_size_bytes", &[], "Size of l2_snapshots.dat."),
    g(MONITOR, "ailee_reorg_db_size_bytes", &[], "Size of the reorg_db directory."),
    g(MONITOR, "ailee_reorg_db_corrupt_records", &[], "reorg_db records read by the monitor that do not decode (plus 1 if reorg_counter disagrees with the events)."),
    g(MONITOR, "ailee_reorg_db_anchors", &["status"], "Anchor records in reorg_db by status."),
    c(MONITOR, "ailee_reorg_db_reorg_events_total", &[], "Reorg events recorded in reorg_db."),
    g(MONITOR, "ailee_reorg_db_last_reorg_height", &[], "Fork height of the newest reorg event."),
    g(MONITOR, "ailee_reorg_db_last_reorg_timestamp_seconds", &[], "Unix time the newest reorg event was detected."),
    g(MONITOR, "ailee_reorg_db_last_reorg_depth_blocks", &[], "Blocks of the old chain the newest reorg replaced: stored tip seen by the previous monitor run minus the fork height plus 1."),
    g(MONITOR, "ailee_reorg_db_tip_height", &[], "Highest block height stored in reorg_db."),
    g(MONITOR, "ailee_bitcoin_rpc_up", &[], "1 if the Bitcoin node answered the monitor, else 0 (only with --bitcoin-rpc)."),
    g(MONITOR, "ailee_bitcoin_tip_height", &[], "Block count of the Bitcoin node."),
    g(MONITOR, "ailee_anchor_newest_height", &[], "Bitcoin height of the newest mined anchor."),
    g(MONITOR, "ailee_anchor_divergence_blocks", &[], "Blocks between the Bitcoin node's tip and the newest mined anchor."),
    g(MONITOR, "ailee_bitcoin_fork_depth_blocks", &[], "Stored blocks of reorg_db the Bitcoin node's best chain does not hold (stored tip - fork height + 1; 0 when the stored tip is on it)."),
    // ailee_resync
    g(RESYNC, "ailee_resync_last_run_timestamp_seconds", &[], "Unix time the last ailee_resync_blocks run finished."),
    g(RESYNC, "ailee_resync_last_exit_code", &[], "Exit code of the last run (0 ok, 1 operational, 2 integrity, 3 deep reorg)."),
    c(RESYNC, "ailee_resync_reorgs_found_total", &[], "Reorgs ailee_resync_blocks found, counted across runs."),
    g(RESYNC, "ailee_resync_last_reorg_height", &[], "Fork height of the last reorg ailee_resync_blocks found."),
    g(RESYNC, "ailee_resync_last_reorg_depth_blocks", &[], "Depth of the last reorg ailee_resync_blocks found."),
    g(RESYNC, "ailee_resync_last_reorg_timestamp_seconds", &[], "Unix time ailee_resync_blocks last found a reorg."),
    g(RESYNC, "ailee_resync_refused", &[], "1 if the last run refused the node's chain (another genesis, or a fork deeper than --max-reorg-depth: a deep reorg or the wrong node), else 0."),
    g(RESYNC, "ailee_resync_behind_since_timestamp_seconds", &[], "Unix time since which every run found the node behind the stored blocks (absent once a run is not)."),
    // ailee_drill
    g(DRILL, "ailee_drill_last_run_timestamp_seconds", &[], "Unix time the last recovery drill finished."),
    g(DRILL, "ailee_drill_recovery_seconds", &["mode"], "Measured recovery time of the last drill of each mode."),
    g(DRILL, "ailee_drill_success", &["mode"], "1 if the last drill of the mode passed every step, else 0."),
];

/// The declaration of `name`.
pub fn def(name: &str) -> Option<&'static Def> {
    CATALOG.iter().find(|d| d.name == name)
}

/// Valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    !s.starts_with("__")
        && matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Valid writer (file) name: `[A-Za-z0-9_-]+`, so `DIR/<writer>.prom` stays in DIR.
pub fn valid_writer(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// A label value in the exposition format: `\`, `"` and newline escaped.
pub fn escape_label_value(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format writes it (`NaN`, `+Inf`, `-Inf`, decimals).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        (if v > 0.0 { "+Inf" } else { "-Inf" }).into()
    } else {
        format!("{v}")
    }
}

/// Label values of a sample, in the order of its [`Def::labels`].
pub type Labels = Vec<String>;

/// A parsed sample line: name, (label, value) pairs, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Samples of one writer's file: carried over from the previous run, then
/// changed by this one, committed with [`MetricsFile::commit`].
#[derive(Debug)]
pub struct MetricsFile {
    dir: PathBuf,
    writer: String,
    samples: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    /// Lines of the previous file that could not be read back (ignored).
    pub unreadable: Vec<String>,
    /// `None` for a file read without its lock ([`MetricsFile::open_unlocked`]).
    _lock: Option<std::fs::File>,
}

/// What became of a metrics file that could not be replaced atomically.
#[derive(Debug)]
pub enum Withdrawn {
    /// The previous file was rewritten in place with this run's samples
    /// (not atomically: a scrape at that moment may see part of it).
    Rewritten,
    /// The previous file was emptied: node_exporter serves none of its samples.
    Emptied,
    /// The previous file was removed: node_exporter serves none of its samples.
    Removed,
    /// There was no previous file.
    Absent,
    /// The previous file could be neither rewritten, emptied nor removed: it
    /// still holds what an earlier run saw (the error says why).
    Stale(Error),
}

/// A commit that failed: the error, and what was done about the previous file.
#[derive(Debug)]
pub struct WriteFailure {
    pub error: Error,
    pub previous: Withdrawn,
}

impl MetricsFile {
    /// Locks `DIR/<writer>.prom` against other runs of the same writer and
    /// reads back the previous file's samples of declared metrics (a missing
    /// file is empty). A missing `DIR` is created (as the scripts always did).
    pub fn open(dir: &Path, writer: &str) -> Result<MetricsFile> {
        if !valid_writer(writer) {
            return Err(Error::Usage(format!(
                "metrics writer name {writer:?} must be letters, digits, '_' or '-'"
            )));
        }
        let md = match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?
            }
            r => r.map_err(|e| Error::io(dir, e))?,
        };
        if !md.is_dir() {
            return Err(Error::Usage(format!("{}: not a directory", dir.display())));
        }
        let lock_path = dir.join(format!(".{writer}.prom.lock"));
        let lock = open_regular(
            std::fs::OpenOptions::new().create(true).truncate(false).write(true),
            &lock_path,
        )?
        .ok_or_else(|| Error::io(&lock_path, std::io::ErrorKind::NotFound.into()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(&lock_path, e.into()))?;
        let mut m = MetricsFile::empty(dir, writer, Some(lock));
        if let Some(bytes) = read_regular(&m.path())? {
            m.read_back(&bytes);
        }
        Ok(m)
    }

    /// For a writer that must report even when [`MetricsFile::open`] fails
    /// (the monitor: a directory it cannot lock is no reason to hide what it
    /// found): the previous file's samples as far as they can be read, and
    /// no lock. Only for writers whose samples are set, not accumulated: two
    /// runs without the lock can lose each other's increments.
    pub fn open_unlocked(dir: &Path, writer: &str) -> Result<MetricsFile> {
        if !valid_writer(writer) {
            return Err(Error::Usage(format!(
                "metrics writer name {writer:?} must be letters, digits, '_' or '-'"
            )));
        }
        let mut m = MetricsFile::empty(dir, writer, None);
        if let Ok(Some(bytes)) = read_regular(&m.path()) {
            m.read_back(&bytes);
        }
        Ok(m)
    }

    fn empty(dir: &Path, writer: &str, lock: Option<std::fs::File>) -> MetricsFile {
        MetricsFile {
            dir: dir.to_path_buf(),
            writer: writer.to_string(),
            samples: BTreeMap::new(),
            unreadable: Vec::new(),
            _lock: lock,
        }
    }

    /// Takes the samples of declared metrics of this writer from a previous file.
    fn read_back(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let known = parse_sample(t).and_then(|(name, labels, value)| {
                let d = def(&name).filter(|d| d.writer == self.writer)?;
                Some((d, label_values(d, &labels)?, value))
            });
            match known {
                Some((d, vals, value)) => {
                    self.samples.entry(d.name).or_default().insert(vals, value);
                }
                None => self.unreadable.push(line.to_string()),
            }
        }
    }

    /// `DIR/<writer>.prom`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.prom", self.writer))
    }

    fn check(&self, name: &str, labels: &[&str]) -> Result<&'static Def> {
        let d = def(name).ok_or_else(|| Error::Usage(format!("unknown metric {name}")))?;
        if d.writer != self.writer {
            return Err(Error::Usage(format!(
                "metric {name} belongs to writer {}, not {}",
                d.writer, self.writer
            )));
        }
        if labels.len() != d.labels.len() {
            return Err(Error::Usage(format!(
                "metric {name} takes labels {:?}, got {} value(s)",
                d.labels,
                labels.len()
            )));
        }
        // An empty label value is the same series as no label at all.
        if labels.iter().any(|v| v.is_empty()) {
            return Err(Error::Usage(format!("metric {name}: a label value cannot be empty")));
        }
        Ok(d)
    }

    /// The value this file holds for a sample (the previous run's, until set).
    pub fn get(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let key: Labels = labels.iter().map(|s| s.to_string()).collect();
        self.samples.get(name)?.get(&key).copied()
    }

    /// Sets a sample. A counter must be a finite value ≥ 0.
    pub fn set(&mut self, name: &str, labels: &[&str], value: f64) -> Result<()> {
        let d = self.check(name, labels)?;
        if d.kind == Kind::Counter && !(value.is_finite() && value >= 0.0) {
            return Err(Error::Usage(format!("counter {name} cannot be {value}")));
        }
        let key: Labels = labels.iter().map(|s| s.to_string()).collect();
        self.samples.entry(d.name).or_default().insert(key, value);
        Ok(())
    }

    /// Adds `by` (≥ 0) to a counter, starting from its previous value or 0.
    pub fn inc(&mut self, name: &str, labels: &[&str], by: f64) -> Result<f64> {
        let d = self.check(name, labels)?;
        if d.kind != Kind::Counter {
            return Err(Error::Usage(format!("{name} is a {}, not a counter", d.kind.name())));
        }
        if !(by.is_finite() && by >= 0.0) {
            return Err(Error::Usage(format!("a counter only grows: cannot add {by} to {name}")));
        }
        let v = self
            .get(name, labels)
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(0.0)
            + by;
        self.set(name, labels, v)?;
        Ok(v)
    }

    /// Removes a sample (e.g. a value that is unknown this run).
    pub fn remove(&mut self, name: &str, labels: &[&str]) {
        let key: Labels = labels.iter().map(|s| s.to_string()).collect();
        if let Some(m) = self.samples.get_mut(name) {
            m.remove(&key);
            if m.is_empty() {
                self.samples.remove(name);
            }
        }
    }

    /// The file's text in the exposition format, families in catalog order.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for d in CATALOG.iter().filter(|d| d.writer == self.writer) {
            let Some(samples) = self.samples.get(d.name) else {
                continue;
            };
            let _ = writeln!(o, "# HELP {} {}", d.name, escape_help(d.help));
            let _ = writeln!(o, "# TYPE {} {}", d.name, d.kind.name());
            for (labels, v) in samples {
                o.push_str(d.name);
                if !labels.is_empty() {
                    o.push('{');
                    for (i, (n, val)) in d.labels.iter().zip(labels).enumerate() {
                        if i > 0 {
                            o.push(',');
                        }
                        let _ = write!(o, "{n}=\"{}\"", escape_label_value(val));
                    }
                    o.push('}');
                }
                let _ = writeln!(o, " {}", format_value(*v));
            }
        }
        o
    }

    /// Atomically replaces `DIR/<writer>.prom` (mode 0644) and releases the lock.
    pub fn commit(self) -> Result<PathBuf> {
        self.replace()?;
        Ok(self.path())
    }

    fn replace(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path();
        reap_stale_temps(&self.dir, &self.writer);
        let mut p = crate::atomic::Pending::create(&path, true)?;
        p.file()?
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(&path, e))?;
        p.write_all(self.render().as_bytes())?;
        p.commit()
    }

    /// [`MetricsFile::commit`], and when the file cannot be replaced (a
    /// read-only or full directory, no permission to create a file in it, a
    /// directory in the file's place), never the previous file served as if
    /// it were this run's: it is rewritten in place with this run's samples
    /// (a full disk has room for them once the old bytes are truncated), else
    /// emptied, else removed. The failure says which, or that the previous
    /// file could not be touched at all ([`Withdrawn::Stale`]).
    pub fn commit_or_withdraw(self) -> std::result::Result<PathBuf, WriteFailure> {
        match self.replace() {
            Ok(()) => Ok(self.path()),
            Err(error) => Err(WriteFailure {
                error,
                previous: withdraw(&self.path(), self.render().as_bytes()),
            }),
        }
    }
}

/// The previous file at `path` made to stop saying what an earlier run saw:
/// rewritten with `text`, else emptied, else removed (see
/// [`MetricsFile::commit_or_withdraw`]). Never follows a symlink, never
/// touches anything but a regular file.
fn withdraw(path: &Path, text: &[u8]) -> Withdrawn {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Withdrawn::Absent,
        Err(e) => return Withdrawn::Stale(Error::io(path, e)),
    };
    if !md.is_file() {
        return Withdrawn::Stale(Error::Usage(format!("{}: not a regular file", path.display())));
    }
    let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW;
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(flags.bits() as i32)
        .open(path);
    let why = match opened {
        Ok(mut f) if f.metadata().is_ok_and(|m| m.is_file()) => {
            let rewritten = f.set_len(0).and_then(|_| f.write_all(text)).and_then(|_| f.sync_all());
            match rewritten {
                Ok(()) => return Withdrawn::Rewritten,
                // A prefix of this run's samples could end in a cut number.
                Err(e) => match f.set_len(0).and_then(|_| f.sync_all()) {
                    Ok(()) => return Withdrawn::Emptied,
                    Err(_) => Error::io(path, e),
                },
            }
        }
        Ok(_) => Error::Usage(format!("{}: not a regular file", path.display())),
        Err(e) => Error::io(path, e),
    };
    match std::fs::remove_file(path) {
        Ok(()) => Withdrawn::Removed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Withdrawn::Removed,
        Err(_) => Withdrawn::Stale(why),
    }
}

/// Label values of a parsed sample in the order `d` declares, if the names match.
fn label_values(d: &Def, labels: &[(String, String)]) -> Option<Labels> {
    if labels.len() != d.labels.len() {
        return None;
    }
    d.labels
        .iter()
        .map(|n| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
        .collect()
}

/// Removes `.<writer>.prom.ailee-tmp.<pid>.*` files whose process is gone
/// (left by a run that was killed before its rename).
fn reap_stale_temps(dir: &Path, writer: &str) {
    let prefix = format!(".{writer}.prom.ailee-tmp.");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Parses one sample line: `name{l="v",…} value [timestamp]`.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r.trim_start();
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=')?;
            let lname = r[..eq].trim();
            if !(valid_label_name(lname) || lname.starts_with("__") && valid_label_name(&lname[1..])) {
                return None;
            }
            let mut it = r[eq + 1..].trim_start().strip_prefix('"')?.char_indices();
            let body = r[eq + 1..].trim_start().strip_prefix('"')?;
            let mut val = String::new();
            let end = loop {
                let (i, c) = it.next()?;
                match c {
                    '"' => break i + 1,
                    '\\' => match it.next()?.1 {
                        'n' => val.push('\n'),
                        '\\' => val.push('\\'),
                        '"' => val.push('"'),
                        _ => return None,
                    },
                    c => val.push(c),
                }
            };
            labels.push((lname.to_string(), val));
            r = body[end..].trim_start();
            if let Some(after) = r.strip_prefix(',') {
                r = after.trim_start();
            } else if !r.starts_with('}') {
                return None;
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let v = fields.next()?;
    let value = match v {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => {
            if v.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') {
                return None;
            }
            v.parse().ok()?
        }
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some((name.to_string(), labels, value))
}

/// The samples of a metrics file, read without taking its writer's lock
/// (e.g. the monitor reading the backup's last success). Lines that do not
/// parse are skipped; a missing file is empty.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    Ok(read_regular(path)?
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(parse_sample)
                .collect()
        })
        .unwrap_or_default())
}

/// Opens `path` without blocking (a FIFO planted there would hang a plain
/// open) and refuses anything but a regular file; `None` if it does not exist.
fn open_regular(o: &mut std::fs::OpenOptions, path: &Path) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match o.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let md = f.metadata().map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        return Err(Error::Usage(format!("{}: not a regular file", path.display())));
    }
    Ok(Some(f))
}

/// The bytes of a regular file (at most 16 MiB), `None` if it does not exist.
fn read_regular(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let Some(f) = open_regular(std::fs::OpenOptions::new().read(true), path)? else {
        return Ok(None);
    };
    let mut b = Vec::new();
    f.take(16 << 20).read_to_end(&mut b).map_err(|e| Error::io(path, e))?;
    Ok(Some(b))
}

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Parses a value given on a command line: a finite decimal number, or
/// `now` (Unix seconds). `inf`, `nan`, `2h` and the like are refused.
pub fn parse_value(s: &str) -> Result<f64> {
    if s == "now" {
        return Ok(now_seconds().floor());
    }
    let ok_chars = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
    match s.parse::<f64>() {
        Ok(v) if ok_chars && v.is_finite() => Ok(v),
        _ => Err(Error::Usage(format!("{s:?} is not a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn catalog_names_are_valid_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in CATALOG {
            assert!(valid_metric_name(d.name), "{}", d.name);
            assert!(d.name.starts_with("ailee_"), "{}", d.name);
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            assert_eq!(d.kind == Kind::Counter, d.name.ends_with("_total"), "{}", d.name);
            for l in d.labels {
                assert!(valid_label_name(l));
            }
            assert!(valid_writer(d.writer));
        }
    }

    #[test]
    fn renders_help_type_and_escaped_labels() {
        let d = dir();
        let mut m = MetricsFile::open(d.path(), DRILL).unwrap();
        m.set("ailee_drill_success", &["a\"b\\c\nd"], 1.0).unwrap();
        m.set("ailee_drill_recovery_seconds", &["crash"], 0.25).unwrap();
        let text = m.render();
        assert_eq!(
            text,
            "# HELP ailee_drill_recovery_seconds Measured recovery time of the last drill of each mode.\n\
             # TYPE ailee_drill_recovery_seconds gauge\n\
             ailee_drill_recovery_seconds{mode=\"crash\"} 0.25\n\
             # HELP ailee_drill_success 1 if the last drill of the mode passed every step, else 0.\n\
             # TYPE ailee_drill_success gauge\n\
             ailee_drill_success{mode=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn counter_survives_runs_and_other_values_are_carried_over() {
        let d = dir();
        let mut m = MetricsFile::open(d.path(), BACKUP).unwrap();
        m.set("ailee_backup_last_success_timestamp_seconds", &["/r"], 1700000000.0)
            .unwrap();
        m.commit().unwrap();
        for want in 1..=3 {
            let mut m = MetricsFile::open(d.path(), BACKUP).unwrap();
            assert_eq!(m.inc("ailee_backup_failures_total", &["/r"], 1.0).unwrap(), want as f64);
            m.commit().unwrap();
        }
        let m = MetricsFile::open(d.path(), BACKUP).unwrap();
        assert_eq!(m.get("ailee_backup_failures_total", &["/r"]), Some(3.0));
        assert_eq!(
            m.get("ailee_backup_last_success_timestamp_seconds", &["/r"]),
            Some(1700000000.0)
        );
        assert!(m.unreadable.is_empty());
    }

    #[test]
    fn label_values_round_trip_through_the_file() {
        let d = dir();
        let mut m = MetricsFile::open(d.path(), DRILL).unwrap();
        let odd = "x\"y\\z\nw} ,=";
        m.set("ailee_drill_success", &[odd], 0.0).unwrap();
        m.commit().unwrap();
        let m = MetricsFile::open(d.path(), DRILL).unwrap();
        assert_eq!(m.get("ailee_drill_success", &[odd]), Some(0.0));
    }

    #[test]
    fn file_is_replaced_atomically_and_readable() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir();
        let mut m = MetricsFile::open(d.path(), RESTORE).unwrap();
        m.set("ailee_restore_success", &[], 1.0).unwrap();
        let p = m.commit().unwrap();
        assert_eq!(p, d.path().join("ailee_restore.prom"));
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        // Only the file and the lock remain: no temporary file.
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".ailee_restore.prom.lock", "ailee_restore.prom"]);
    }

    #[test]
    fn a_file_that_cannot_be_replaced_is_rewritten_in_place_or_reported_stale() {
        let d = dir();
        let path = d.path().join("ailee_monitor.prom");
        assert!(matches!(withdraw(&path, b"x 1\n"), Withdrawn::Absent));
        std::fs::write(&path, "ailee_snapshot_newest_verified 1\n").unwrap();
        assert!(matches!(
            withdraw(&path, b"ailee_snapshot_newest_verified 0\n"),
            Withdrawn::Rewritten
        ));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ailee_snapshot_newest_verified 0\n"
        );
        // A symlink is never followed, a directory never removed.
        let target = d.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(withdraw(&path, b"x 1\n"), Withdrawn::Stale(_)));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(withdraw(&path, b"x 1\n"), Withdrawn::Stale(_)));
        assert!(path.is_dir());
        // commit_or_withdraw: a directory in the file's place is a failure that says so.
        let mut m = MetricsFile::open_unlocked(d.path(), MONITOR).unwrap();
        m.set("ailee_snapshot_newest_verified", &[], 0.0).unwrap();
        let f = m.commit_or_withdraw().unwrap_err();
        assert!(matches!(f.previous, Withdrawn::Stale(_)), "{f:?}");
    }

    #[test]
    fn stale_temp_of_a_dead_run_is_reaped() {
        let d = dir();
        // PID 0x7fffffff cannot exist (above pid_max).
        let stale = d.path().join(".ailee_restore.prom.ailee-tmp.2147483647.0");
        std::fs::write(&stale, "half").unwrap();
        let mut m = MetricsFile::open(d.path(), RESTORE).unwrap();
        m.set("ailee_restore_success", &[], 0.0).unwrap();
        m.commit().unwrap();
        assert!(!stale.exists());
    }

    /// A FIFO at `p`, where a regular file is expected.
    fn mkfifo(p: &Path) {
        rustix::fs::mkfifoat(rustix::fs::CWD, p, rustix::fs::Mode::from_raw_mode(0o644)).unwrap();
    }

    #[test]
    fn a_fifo_in_place_of_the_file_or_lock_is_refused_not_waited_on() {
        let d = dir();
        let fifo = d.path().join("ailee_backup.prom");
        mkfifo(&fifo);
        assert!(matches!(MetricsFile::open(d.path(), BACKUP), Err(Error::Usage(_))));
        assert!(matches!(read_samples(&fifo), Err(Error::Usage(_))));
        std::fs::remove_file(&fifo).unwrap();
        let lock = d.path().join(".ailee_backup.prom.lock");
        std::fs::remove_file(&lock).unwrap();
        mkfifo(&lock);
        assert!(MetricsFile::open(d.path(), BACKUP).is_err());
    }

    #[test]
    fn undeclared_metric_wrong_writer_or_labels_are_refused() {
        let d = dir();
        let mut m = MetricsFile::open(d.path(), BACKUP).unwrap();
        assert!(matches!(m.set("ailee_nope", &[], 1.0), Err(Error::Usage(_))));
        let mut drill = MetricsFile::open(d.path(), DRILL).unwrap();
        assert!(matches!(
            drill.set("ailee_drill_success", &[""], 1.0),
            Err(Error::Usage(_))
        ));
        drop(drill);
        assert!(matches!(m.set("ailee_restore_success", &[], 1.0), Err(Error::Usage(_))));
        assert!(matches!(
            m.set("ailee_backup_duration_seconds", &[], 1.0),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            m.set("ailee_backup_duration_seconds", &["x", "y"], 1.0),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            m.inc("ailee_backup_duration_seconds", &["x"], 1.0),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            m.inc("ailee_backup_failures_total", &["x"], -1.0),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            m.set("ailee_backup_failures_total", &["x"], f64::NAN),
            Err(Error::Usage(_))
        ));
        assert!(matches!(MetricsFile::open(d.path(), "../x"), Err(Error::Usage(_))));
        std::fs::write(d.path().join("file"), "").unwrap();
        assert!(matches!(
            MetricsFile::open(&d.path().join("file"), BACKUP),
            Err(Error::Usage(_))
        ));
        // A missing directory is created.
        MetricsFile::open(&d.path().join("new/dir"), BACKUP).unwrap();
        assert!(d.path().join("new/dir").is_dir());
    }

    #[test]
    fn garbage_in_the_previous_file_is_reported_and_dropped() {
        let d = dir();
        std::fs::write(
            d.path().join("ailee_backup.prom"),
            "ailee_backup_failures_total{repository=\"/r\"} 4\nthis is junk\nailee_backup_failures_total{x=\"1\"} 2\nailee_other 1\n",
        )
        .unwrap();
        let mut m = MetricsFile::open(d.path(), BACKUP).unwrap();
        assert_eq!(m.unreadable.len(), 3);
        assert_eq!(m.inc("ailee_backup_failures_total", &["/r"], 1.0).unwrap(), 5.0);
        assert!(!m.render().contains("junk"));
    }

    /// The file of a version before the `repository` label: its unlabelled
    /// backup samples cannot be told apart (local and off-site runs wrote the
    /// same series), so they are dropped, not given to a repository; the
    /// next commit writes only labelled series.
    #[test]
    fn unlabelled_backup_samples_of_an_older_version_are_dropped() {
        let d = dir();
        let old = "# HELP ailee_backup_last_success_timestamp_seconds Unix time of the last successful backup.\n\
                   # TYPE ailee_backup_last_success_timestamp_seconds gauge\n\
                   ailee_backup_last_success_timestamp_seconds 1700000000\n\
                   # HELP ailee_backup_failures_total Backups that failed, counted across runs.\n\
                   # TYPE ailee_backup_failures_total counter\n\
                   ailee_backup_failures_total 7\n";
        std::fs::write(d.path().join("ailee_backup.prom"), old).unwrap();
        let mut m = MetricsFile::open(d.path(), BACKUP).unwrap();
        assert_eq!(m.unreadable.len(), 2);
        assert_eq!(m.get("ailee_backup_failures_total", &["/r"]), None);
        assert_eq!(m.inc("ailee_backup_failures_total", &["/r"], 1.0).unwrap(), 1.0);
        m.commit().unwrap();
        let text = std::fs::read_to_string(d.path().join("ailee_backup.prom")).unwrap();
        assert_eq!(
            text,
            "# HELP ailee_backup_failures_total Backups to the repository that failed, counted across runs.\n\
             # TYPE ailee_backup_failures_total counter\n\
             ailee_backup_failures_total{repository=\"/r\"} 1\n"
        );
        let m = MetricsFile::open(d.path(), BACKUP).unwrap();
        assert!(m.unreadable.is_empty());
    }

    #[test]
    fn sample_parser_reads_the_format() {
        assert_eq!(
            parse_sample(r#"a_b{x="1",y="q\"\\\n"} 2.5 123"#),
            Some((
                "a_b".into(),
                vec![("x".into(), "1".into()), ("y".into(), "q\"\\\n".into())],
                2.5
            ))
        );
        assert_eq!(parse_sample("a +Inf").map(|s| s.2), Some(f64::INFINITY));
        assert!(parse_sample("a NaN").unwrap().2.is_nan());
        assert_eq!(parse_sample("a{} 1e3").map(|s| s.2), Some(1000.0));
        for bad in ["a", "a x", "a{x=1} 1", "a{x=\"1} 1", "1a 1", "a 1 2 3", "a inf"] {
            assert_eq!(parse_sample(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_on_the_command_line_are_numbers_or_now() {
        assert_eq!(parse_value("1.5").unwrap(), 1.5);
        assert_eq!(parse_value("-3").unwrap(), -3.0);
        assert!(parse_value("now").unwrap() > 1.6e9);
        for bad in ["", "2h", "inf", "NaN", "+Inf", "1,5", " 1", "0x10"] {
            assert!(parse_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_render_in_the_format() {
        assert_eq!(format_value(1700000000.0), "1700000000");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }
}
