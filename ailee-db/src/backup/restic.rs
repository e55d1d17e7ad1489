//! The restic command line (Debian's restic 0.14) behind one type: every call
//! is a child process run under [`ailee_core::child`] (stopped with SIGINT
//! — restic then removes its lock — when a signal reaches us or its time
//! bound expires; never outliving us), its stdout/stderr captured, its
//! `--json` output parsed here (not with `grep` in a script).
//!
//! restic's locks: a run killed with SIGKILL (or whose tool was) leaves its
//! lock in the repository, and restic refuses every later exclusive
//! operation (and, for an exclusive lock, every operation). A call refused
//! so is retried once after [`Restic::clear_stale_locks`] removed the stale
//! ones — by restic's own rule, and only when no lock may be live. Nothing
//! is spent on this when the repository is not locked.

use ailee_core::child::Waited;
use ailee_core::{Error, Result};
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the repository is and how to open it.
#[derive(Debug, Clone)]
pub struct Restic {
    /// The restic executable.
    pub bin: PathBuf,
    /// Repository location (a path or any restic backend URL: `sftp:`, `s3:`, …).
    pub repo: String,
    /// Password file; `None` leaves it to restic's environment
    /// (`RESTIC_PASSWORD_FILE`, `RESTIC_PASSWORD`, `RESTIC_PASSWORD_COMMAND`).
    pub password_file: Option<PathBuf>,
    /// Extended options (`-o key=value`), e.g. `sftp.command=…`.
    pub options: Vec<String>,
    /// The bound of every restic call (then it is stopped: exit 1).
    pub timeout: Duration,
    /// Read without locks (`--no-lock`; see [`Restic::for_reading`]).
    pub no_lock: bool,
    notes: Arc<Mutex<Notes>>,
}

/// The default bound of one restic call: an hourly job that has not
/// finished in 6 hours is stuck (a silent link), not slow.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What happened around restic calls (see [`Restic::notes`]).
#[derive(Debug, Clone, Default)]
pub struct Notes {
    pub stale_locks_removed: u64,
    pub timed_out: bool,
    pub messages: Vec<String>,
}

/// restic backends named by a prefix (anything else is a local path).
pub const BACKENDS: &[&str] = &[
    "local:", "sftp:", "rest:", "s3:", "b2:", "azure:", "gs:", "swift:", "rclone:",
];

/// A repository location without a URL's password (`rest:http://u:***@h/`).
pub fn redact(repo: &str) -> String {
    let Some(scheme) = repo.find("://") else {
        return repo.to_string();
    };
    let rest = &repo[scheme + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{}{masked}{}", &repo[..scheme + 3], &rest[at..])
        }
        None => repo.to_string(),
    }
}

/// A lock as `restic cat lock` prints it.
#[derive(Debug, Deserialize)]
struct LockInfo {
    time: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    pid: i64,
}

impl LockInfo {
    /// Why the lock is stale, or `None` when it may be live.
    fn stale(&self, host: &str, now: std::time::SystemTime) -> Option<String> {
        let age = parse_time(&self.time).and_then(|t| now.duration_since(t).ok());
        let mins = |m: u64| age.is_some_and(|a| a >= Duration::from_secs(m * 60));
        if self.hostname == host {
            let gone = i32::try_from(self.pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH));
            if gone {
                return Some(format!("process {} of this host is gone", self.pid));
            }
            if mins(30) {
                return Some(format!("taken at {}, not refreshed for 30 minutes", self.time));
            }
            None
        } else if mins(60) {
            Some(format!(
                "of host {}, taken at {}, not refreshed for an hour",
                self.hostname, self.time
            ))
        } else {
            None
        }
    }
}

/// An RFC 3339 time as restic writes it (`2026-12-03T14:00:00.123+01:00`).
fn parse_time(t: &str) -> Option<std::time::SystemTime> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = t.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (hh, mm, ss) = (num(rest.get(0..2)?)?, num(rest.get(3..5)?)?, num(rest.get(6..8)?)?);
    let tail = &rest[8..];
    let tz = tail.find(['Z', '+', '-']).map_or("Z", |i| &tail[i..]);
    let offset = match tz {
        "Z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (num(z.get(1..3)?)? * 3600 + num(z.get(4..6)?)? * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
}

/// This host's name, as restic records it in its locks.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// True when restic refused because the repository is locked.
pub fn locked(stderr: &str) -> bool {
    stderr.contains("repository is already locked") || stderr.contains("unable to create lock")
}

/// restic's stderr for a message: its retry lines dropped ("… returned
/// error, retrying after …": dozens on a failing link), at most its first 3
/// and last 8 other lines, where the cause ("Fatal: …") is.
pub fn gist(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !l.contains("retrying after"))
        .collect();
    if lines.len() <= 11 {
        return lines.join("\n");
    }
    format!(
        "{}\n[… {} lines …]\n{}",
        lines[..3].join("\n"),
        lines.len() - 11,
        lines[lines.len() - 8..].join("\n")
    )
}

fn last_line(s: &str) -> Option<&str> {
    s.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// What a restic run printed.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// A snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    pub id: String,
    #[serde(default)]
    pub short_id: String,
    pub time: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub hostname: String,
}

impl Snapshot {
    /// The value of tag `key=value`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .as_deref()?
            .iter()
            .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    pub fn tag_u64(&self, key: &str) -> Option<u64> {
        self.tag(key)?.parse().ok()
    }

    pub fn short(&self) -> &str {
        if self.short_id.is_empty() {
            &self.id[..self.id.len().min(8)]
        } else {
            &self.short_id
        }
    }
}

/// Messages in restic's output that mean "the data was read and is wrong".
const INTEGRITY_MARKERS: &[&str] = &[
    "ciphertext verification failed",
    "repository contains errors",
    "hash mismatch",
    "Pack ID does not match",
    "does not match",
    "invalid data returned",
    "Load(<data/",
    "unexpected EOF",
    "wrong length",
    "decrypting blob",
    // A blob or tree the snapshot needs is in no index or pack (index files
    // deleted, packs lost): `restore` says this where `check` says "repository
    // contains errors" — one damage, one verdict.
    "not found in repository",
];

/// True when restic's stderr reports damaged repository data.
pub fn looks_corrupt(stderr: &str) -> bool {
    INTEGRITY_MARKERS.iter().any(|m| stderr.contains(m))
}

impl Restic {
    /// A repository at `repo`, with nothing else set.
    pub fn new(bin: PathBuf, repo: String, password_file: Option<PathBuf>, options: Vec<String>) -> Restic {
        Restic {
            bin,
            repo,
            password_file,
            options,
            timeout: DEFAULT_TIMEOUT,
            no_lock: false,
            notes: Default::default(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--repo").arg(&self.repo);
        if let Some(p) = &self.password_file {
            c.arg("--password-file").arg(p);
        }
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        if self.no_lock {
            c.arg("--no-lock");
        }
        c.args(args);
        // Our own password handling wins over a stray RESTIC_REPOSITORY.
        c.env_remove("RESTIC_REPOSITORY").env_remove("RESTIC_REPOSITORY_FILE");
        if self.password_file.is_some() {
            c.env_remove("RESTIC_PASSWORD").env_remove("RESTIC_PASSWORD_COMMAND");
        }
        c
    }

    /// The repository as it may be shown (a URL's password replaced by `***`).
    pub fn label(&self) -> String {
        redact(&self.repo)
    }

    /// What happened around the calls (stale locks removed, a read-only
    /// repository read without a lock), for `-v` and the metrics.
    pub fn notes(&self) -> Notes {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn note(&self, f: impl FnOnce(&mut Notes)) {
        f(&mut self.notes.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Runs restic with `args` (in `cwd`) under [`crate::child`]: stopped
    /// (SIGINT, so that it removes its lock) when a termination signal
    /// reaches us ([`Error::Interrupted`]) or when [`Restic::timeout`]
    /// expires (exit 1). A run refused because of a lock is retried once
    /// after restic's stale locks were removed ([`Restic::clear_stale_locks`]).
    pub fn run_in(&self, cwd: Option<&Path>, args: &[&str]) -> Result<Output> {
        let o = self.run_once(cwd, args)?;
        if !o.ok() && locked(&o.stderr) && !self.no_lock && self.clear_stale_locks()? > 0 {
            return self.run_once(cwd, args);
        }
        Ok(o)
    }

    fn run_once(&self, cwd: Option<&Path>, args: &[&str]) -> Result<Output> {
        let mut c = self.command(args);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ailee_core::child::spawn(&mut c, ailee_core::child::Spec::RESTIC).map_err(|e| {
            Error::Usage(format!(
                "cannot run restic ({}): {e} — install it (Debian: apt-get install restic) or pass --restic PATH",
                self.bin.display()
            ))
        })?;
        let drain = |s: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut s) = s {
                    let _ = s.read_to_end(&mut v);
                }
                v
            })
        };
        let t_out = drain(child.child().stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let t_err = drain(child.child().stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let deadline = Instant::now() + self.timeout;
        let waited = child.wait(Some(deadline)).map_err(|e| Error::io(&self.bin, e))?;
        let stdout = t_out.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
        let status = match waited {
            Waited::Exited(s) => s,
            Waited::Interrupted => return Err(Error::Interrupted),
            Waited::TimedOut => {
                self.note(|n| n.timed_out = true);
                return Err(Error::Usage(format!(
                    "restic {} did not finish within {} s (repository {}): stopped; is the repository \
                     reachable? (--restic-timeout sets the bound){}",
                    args.first().copied().unwrap_or_default(),
                    self.timeout.as_secs(),
                    self.label(),
                    last_line(&stderr)
                        .map(|l| format!("; it said: {l}"))
                        .unwrap_or_default()
                )));
            }
        };
        Ok(Output {
            code: status.code(),
            stdout,
            stderr,
        })
    }

    /// Removes restic's stale locks, by restic's own rule (`restic unlock`,
    /// never `--remove-all`), once every lock in the repository has been
    /// read and found stale by a stricter one:
    /// - a lock of this host (same host name) whose process is gone;
    /// - a lock of this host older than 30 minutes (restic refreshes a live
    ///   lock every 5 minutes);
    /// - a lock of another host older than 60 minutes: restic's 30 plus 30
    ///   for clocks that disagree. A lock dated in the future is never stale.
    ///
    /// If any lock is live, nothing is removed (restic's refusal stands and
    /// names it). Returns how many locks were removed.
    pub fn clear_stale_locks(&self) -> Result<u64> {
        let ids = self.run_once(None, &["list", "locks", "--no-lock"])?;
        if !ids.ok() {
            return Ok(0);
        }
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let host = hostname();
        let now = std::time::SystemTime::now();
        let mut stale = Vec::new();
        for id in &ids {
            let o = self.run_once(None, &["cat", "lock", id, "--no-lock"])?;
            let Ok(lock) = serde_json::from_slice::<LockInfo>(&o.stdout) else {
                // Removed meanwhile (its run ended), or unreadable: not ours to judge.
                if o.ok() {
                    return Ok(0);
                }
                continue;
            };
            match lock.stale(&host, now) {
                Some(why) => stale.push(format!("{} ({why})", &id[..8])),
                None => return Ok(0),
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        let o = self.run_once(None, &["unlock"])?;
        if !o.ok() {
            return Ok(0);
        }
        let n = stale.len() as u64;
        self.note(|x| {
            x.stale_locks_removed += n;
            x.messages.push(format!(
                "removed {n} stale restic lock(s) in {}: {}",
                self.label(),
                stale.join(", ")
            ));
        });
        Ok(n)
    }

    /// Reads the repository without locks when it cannot be written (a
    /// local repository on a read-only mount, or one we may not write):
    /// restic's `--no-lock`. For reading only (list, verify, restore).
    pub fn for_reading(mut self) -> Restic {
        let local = self.repo.strip_prefix("local:").unwrap_or(&self.repo);
        let remote = BACKENDS.iter().any(|b| *b != "local:" && self.repo.starts_with(b));
        if !remote {
            let locks = Path::new(local).join("locks");
            if std::fs::metadata(&locks).is_ok() && rustix::fs::access(&locks, rustix::fs::Access::WRITE_OK).is_err() {
                self.no_lock = true;
                let label = self.label();
                self.note(|n| {
                    n.messages.push(format!(
                        "repository {label} cannot be written (read-only?): reading it without a lock (restic --no-lock)"
                    ))
                });
            }
        }
        self
    }

    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.run_in(None, args)
    }

    /// Runs restic and turns a failure into an error naming `what`.
    pub fn run_ok(&self, cwd: Option<&Path>, args: &[&str], what: &str) -> Result<Output> {
        let o = self.run_in(cwd, args)?;
        if o.ok() {
            Ok(o)
        } else {
            Err(self.failure(what, &o))
        }
    }

    /// The error for a failed run: integrity when restic reports damaged data.
    pub fn failure(&self, what: &str, o: &Output) -> Error {
        let msg = format!(
            "restic {what} failed (repository {}, exit {}): {}",
            self.label(),
            o.code.map_or("signal".to_string(), |c| c.to_string()),
            gist(&o.stderr)
        );
        if looks_corrupt(&o.stderr) {
            Error::Integrity(msg)
        } else {
            Error::Usage(msg)
        }
    }

    /// Creates the repository (format 2: compressed).
    pub fn init(&self) -> Result<()> {
        self.run_ok(None, &["init", "--repository-version", "2"], "init")
            .map(|_| ())
    }

    /// Our snapshots (tag `ailee`), oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let o = self.run_ok(None, &["snapshots", "--json", "--tag", TAG], "snapshots")?;
        let mut v: Vec<Snapshot> = serde_json::from_slice(&o.stdout)
            .map_err(|e| Error::Usage(format!("restic snapshots: unexpected JSON: {e}")))?;
        v.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(v)
    }

    /// The snapshot named by `which`: `latest` of `nodes`, or a full or
    /// short id (any node's: an id is explicit).
    pub fn find(&self, which: &str, nodes: &crate::backup::Nodes) -> Result<Snapshot> {
        check_which(which)?;
        let all = self.snapshots()?;
        let found = if which == "latest" {
            all.iter().rev().find(|s| nodes.has(s)).cloned()
        } else {
            let m: Vec<_> = all.iter().filter(|s| s.id.starts_with(which)).collect();
            if m.len() > 1 {
                return Err(Error::Usage(format!(
                    "backup id {which} is ambiguous ({} match)",
                    m.len()
                )));
            }
            m.first().map(|s| (*s).clone())
        };
        found.ok_or_else(|| {
            Error::Usage(if which == "latest" {
                let others = all.iter().filter(|s| !nodes.has(s)).count();
                let node = match nodes {
                    crate::backup::Nodes::One(id) => format!(" of node {id}"),
                    crate::backup::Nodes::Any => String::new(),
                };
                let hint = if others > 0 {
                    format!(
                        " ({others} backup(s) of other nodes, or made before node ids, are there: \
                         see --list --any-node; pass --node ID or --any-node to use them)"
                    )
                } else {
                    String::new()
                };
                format!("no backup{node} in repository {}{hint}", self.label())
            } else {
                format!("no backup {which} in repository {}", self.label())
            })
        })
    }
}

/// `latest` or a snapshot id (1 to 64 hex digits).
pub fn check_which(which: &str) -> Result<()> {
    if which == "latest" || (!which.is_empty() && which.len() <= 64 && which.bytes().all(|b| b.is_ascii_hexdigit())) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "backup {which:?}: expected `latest` or a backup id (hex, from --list)"
        )))
    }
}

/// True when restic says there is no repository at the location.
///
/// Only a config file that does not exist counts: restic says "unable to
/// open config file … Is there a repository" for a refused login (HTTP 401)
/// or a server error too, and creating a repository then would be wrong
/// (a misleading "init failed", or a new empty repository beside the real one).
pub fn repo_missing(stderr: &str) -> bool {
    let e = stderr.to_ascii_lowercase();
    // HTTP statuses as restic writes them ("unexpected HTTP response (401):
    // 401 Unauthorized"), never bare numbers: a port or a path may hold "403".
    let refused = [
        "response (4",
        "response (5",
        "unauthorized",
        "forbidden",
        "permission denied",
        "service unavailable",
        "internal server error",
    ]
    .iter()
    .any(|m| e.contains(m));
    let absent = e.contains("no such file") || e.contains("does not exist") || e.contains("404");
    e.contains("repository does not exist") || (e.contains("unable to open config file") && absent && !refused)
}

/// The tag every backup made by these tools carries.
pub const TAG: &str = "ailee";

/// The `summary` message of `restic backup --json`.
#[derive(Debug, Default, Deserialize)]
pub struct BackupSummary {
    #[serde(default)]
    pub snapshot_id: String,
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
}

/// Finds the summary line in `restic backup --json` output.
pub fn backup_summary(stdout: &[u8]) -> Option<BackupSummary> {
    stdout
        .split(|&b| b == b'\n')
        .filter(|l| l.windows(9).any(|w| w == b"\"summary\""))
        .filter_map(|l| serde_json::from_slice(l).ok())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_config_is_a_missing_repository() {
        assert!(repo_missing(
            "Fatal: unable to open config file: stat /r/config: no such file or directory\nIs there a repository at the following location?\n/r"
        ));
        assert!(repo_missing("Fatal: unable to open config file: <config/> does not exist\nIs there a repository at the following location?"));
        // A refused login or a server error is not an absent repository.
        assert!(!repo_missing(
            "Fatal: unable to open config file: unexpected HTTP response (401): 401 Unauthorized\nIs there a repository at the following location?"
        ));
        assert!(!repo_missing(
            "Fatal: unable to open config file: Stat: 503 Service Unavailable"
        ));
        assert!(!repo_missing("Fatal: wrong password or no key found"));
        // A port or a path that holds "403" or "401" is no HTTP status.
        assert!(repo_missing(
            "Fatal: unable to open config file: <config/> does not exist\nIs there a repository at the following location?\nrest:http://u:***@127.0.0.1:40335/"
        ));
        assert!(!repo_missing(
            "Fatal: unable to open config file: unexpected HTTP response (403): 403 Forbidden"
        ));
    }

    #[test]
    fn the_gist_keeps_the_cause_and_drops_retries() {
        let mut e = String::from("open repository\n");
        for i in 0..70 {
            e.push_str(&format!(
                "Save(<data/{i}>) returned error, retrying after 1s: connection refused\n"
            ));
        }
        e.push_str("Fatal: unable to save snapshot: connection refused\n");
        let g = gist(&e);
        assert!(g.contains("Fatal: unable to save snapshot"), "{g}");
        assert!(!g.contains("retrying after"), "{g}");
        let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let g = gist(&long);
        assert!(
            g.contains("line 0") && g.contains("line 39") && g.contains("[… 29 lines …]"),
            "{g}"
        );
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(redact("rest:http://u:secret@h:8000/r"), "rest:http://u:***@h:8000/r");
        assert_eq!(redact("rest:http://h:8000/"), "rest:http://h:8000/");
        assert_eq!(redact("s3:https://k@s3.example/b"), "s3:https://k@s3.example/b");
        assert_eq!(redact("/srv/repo"), "/srv/repo");
    }

    #[test]
    fn lock_times_and_staleness() {
        let t = parse_time("2026-12-03T14:00:00.123456789+01:00").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_796_302_800
        );
        let now = t + Duration::from_secs(40 * 60);
        let lock = |host: &str, pid: i64, time: &str| LockInfo {
            time: time.into(),
            hostname: host.into(),
            pid,
        };
        let at = "2026-12-03T14:00:00.123456789+01:00";
        // Another host: stale only after an hour.
        assert!(lock("other", 1, at).stale("me", now).is_none());
        assert!(lock("other", 1, at)
            .stale("me", t + Duration::from_secs(61 * 60))
            .is_some());
        // This host, a live process (ours): not stale within 30 minutes.
        let me = std::process::id() as i64;
        assert!(lock("me", me, at).stale("me", t + Duration::from_secs(60)).is_none());
        assert!(lock("me", me, at).stale("me", now).is_some());
        // This host, a process that cannot exist (above Linux's pid_max).
        assert!(lock("me", 4_194_305, at)
            .stale("me", t + Duration::from_secs(60))
            .is_some());
        // A lock dated in the future is never stale by age.
        assert!(lock("other", 1, at)
            .stale("me", t - Duration::from_secs(3600))
            .is_none());
    }
}
