//! The restic command line (Debian's restic 0.14) behind one type: every call
//! is a child process whose stdout/stderr are captured, polled so that a
//! SIGINT/SIGTERM to us stops it at once, and whose `--json` output is parsed
//! here (not with `grep` in a script).

use crate::{Error, Result};
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
];

/// True when restic's stderr reports damaged repository data.
pub fn looks_corrupt(stderr: &str) -> bool {
    INTEGRITY_MARKERS.iter().any(|m| stderr.contains(m))
}

impl Restic {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--repo").arg(&self.repo);
        if let Some(p) = &self.password_file {
            c.arg("--password-file").arg(p);
        }
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        c.args(args);
        // Our own password handling wins over a stray RESTIC_REPOSITORY.
        c.env_remove("RESTIC_REPOSITORY").env_remove("RESTIC_REPOSITORY_FILE");
        if self.password_file.is_some() {
            c.env_remove("RESTIC_PASSWORD").env_remove("RESTIC_PASSWORD_COMMAND");
        }
        c
    }

    /// Runs restic with `args` (in `cwd`), stopping it when a termination
    /// signal arrives ([`Error::Interrupted`]).
    pub fn run_in(&self, cwd: Option<&Path>, args: &[&str]) -> Result<Output> {
        let mut c = self.command(args);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| {
            Error::Usage(format!(
                "cannot run restic ({}): {e} — install it (Debian: apt-get install restic) or pass --restic PATH",
                self.bin.display()
            ))
        })?;
        let mut so = child.stdout.take();
        let mut se = child.stderr.take();
        let t_out = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(s) = so.as_mut() {
                let _ = s.read_to_end(&mut v);
            }
            v
        });
        let t_err = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(s) = se.as_mut() {
                let _ = s.read_to_end(&mut v);
            }
            v
        });
        let status = loop {
            if crate::cancel::requested() {
                let _ = child.kill();
                let _ = child.wait();
                let _ = t_out.join();
                let _ = t_err.join();
                return Err(Error::Interrupted);
            }
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => return Err(Error::io(&self.bin, e)),
            }
        };
        let stdout = t_out.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
        Ok(Output {
            code: status.code(),
            stdout,
            stderr,
        })
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
            self.repo,
            o.code.map_or("signal".to_string(), |c| c.to_string()),
            o.stderr.trim()
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

    /// The snapshot named by `which` (`latest`, a full or short id).
    pub fn find(&self, which: &str) -> Result<Snapshot> {
        check_which(which)?;
        let all = self.snapshots()?;
        let found = if which == "latest" {
            all.last().cloned()
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
                format!("no backup in repository {}", self.repo)
            } else {
                format!("no backup {which} in repository {}", self.repo)
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
pub fn repo_missing(stderr: &str) -> bool {
    let e = stderr.to_ascii_lowercase();
    e.contains("is there a repository at the following location")
        || e.contains("unable to open config file")
        || e.contains("repository does not exist")
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
