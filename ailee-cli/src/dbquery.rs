//! Anchor records of the reorg database for a tool that does not link RocksDB.
//!
//! `ailee_l2_verify` is the tool operators run most (in loops, from cron, by
//! hand); RocksDB's C++ runtime would cost it about 2 ms at every start, most
//! of a newest-snapshot check. So it does not link RocksDB: with `--reorg-db`
//! it starts `ailee_init_reorg_db --path P --get-anchor - --json` once and asks
//! it for each record, one hash per line, one JSON line back. The database is
//! opened read-only there, exactly as it was here (safe while the node runs).
//!
//! The helper is looked for in `$AILEE_BIN`, then next to the running binary
//! (the build directory, an install prefix's `bin`, a moved tree), then on
//! `PATH` — as the scripts find their tools.

use ailee_core::records::{AnchorLookup, AnchorRecord, AnchorStatus};
use ailee_core::{Error, ExitStatus, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

/// The helper that reads the database.
pub const HELPER: &str = "ailee_init_reorg_db";

/// Longest answer line accepted from the helper (a record is a few hundred bytes).
const LINE_CAP: u64 = 1 << 20;

/// Where a sibling tool is: `$AILEE_BIN`, next to this binary, then `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let bin = std::env::var_os("AILEE_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from);
    let here = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let path = std::env::var_os("PATH").unwrap_or_default();
    bin.into_iter()
        .chain(here)
        .chain(std::env::split_paths(&path).filter(|d| !d.as_os_str().is_empty()))
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: ChildStderr,
}

/// The reorg database at `path`, read through [`HELPER`].
pub struct RemoteDb {
    path: PathBuf,
    tool: PathBuf,
    state: Mutex<State>,
}

struct State {
    helper: Option<Helper>,
    /// Answers already had (absent ones too); cleared when full, so memory
    /// stays bounded whatever the file or the database holds.
    cache: HashMap<String, Option<AnchorRecord>>,
}

/// Entries the answer cache holds at most (a few hundred bytes each).
const CACHE_MAX: usize = 1 << 16;

/// Bytes of questions sent before the answers are read: well under a pipe's
/// buffer (64 KiB), so neither side can block writing while the other does.
const BATCH_BYTES: usize = 16 << 10;

fn failed(message: String, status: ExitStatus) -> Error {
    Error::Reported { message, status }
}

impl RemoteDb {
    /// Starts the helper on `path` and makes sure the database opened: an
    /// absent, damaged or unreadable database fails here, as an in-process
    /// open would (same message, same exit code).
    pub fn open(path: &Path) -> Result<RemoteDb> {
        let tool = find_tool(HELPER).ok_or_else(|| {
            failed(
                format!(
                    "--reorg-db needs {HELPER} (it reads the database for this tool): not found in $AILEE_BIN, \
                     next to this program or on PATH"
                ),
                ExitStatus::Operational,
            )
        })?;
        let mut child = Command::new(&tool)
            .arg("--path")
            .arg(path)
            .args(["--get-anchor", "-", "--json", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(&tool, e))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failed(format!("{}: no pipes", tool.display()), ExitStatus::Operational));
        };
        let db = RemoteDb {
            path: path.to_path_buf(),
            tool,
            state: Mutex::new(State {
                helper: Some(Helper {
                    child,
                    stdin,
                    stdout: BufReader::new(stdout),
                    stderr,
                }),
                cache: HashMap::new(),
            }),
        };
        // Any hash will do: the answer says whether the database opened.
        db.anchor(&"0".repeat(64))?;
        Ok(db)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Questions (one hash each, none holding a line break, at most
    /// [`BATCH_BYTES`] in all), then as many answer lines (parsed), in order.
    /// If the helper ends instead, its one error document (an open error) is
    /// the answer, or the error says how it ended.
    fn exchange(&self, state: &mut State, hashes: &[&str]) -> Result<Vec<Value>> {
        let Some(mut h) = state.helper.take() else {
            return Err(failed(
                format!("{}: the reorg database reader has stopped", self.path.display()),
                ExitStatus::Operational,
            ));
        };
        let mut question = String::new();
        for hash in hashes {
            question.push_str(hash);
            question.push('\n');
        }
        let mut answers = Vec::with_capacity(hashes.len());
        let mut line = Vec::new();
        let mut io = h.stdin.write_all(question.as_bytes()).and_then(|_| h.stdin.flush());
        while io.is_ok() && answers.len() < hashes.len() {
            line.clear();
            io = (&mut h.stdout).take(LINE_CAP).read_until(b'\n', &mut line).map(|_| ());
            match serde_json::from_slice::<Value>(&line) {
                Ok(v) if line.ends_with(b"\n") => answers.push(v),
                _ => break,
            }
        }
        if answers.len() == hashes.len() {
            state.helper = Some(h);
            return Ok(answers);
        }
        drop(h.stdin);
        let mut err = String::new();
        let _ = (&mut h.stderr).take(64 * 1024).read_to_string(&mut err);
        let status = h.child.wait().map_err(|e| Error::io(&self.tool, e))?;
        if let Some(v) = answers
            .into_iter()
            .chain(serde_json::from_slice::<Value>(&line).ok())
            .find(|v| v.get("error").is_some())
        {
            return Ok(vec![v]);
        }
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        Err(failed(
            format!(
                "{}: {} ended ({status}) without a valid answer: {last}",
                self.path.display(),
                self.tool.display()
            ),
            ExitStatus::Operational,
        ))
    }
}

fn remember(cache: &mut HashMap<String, Option<AnchorRecord>>, hash: &str, r: Option<AnchorRecord>) {
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(hash.to_string(), r);
}

fn text(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad(key))
}

fn number(v: &Value, key: &str) -> Result<u64> {
    v.get(key).and_then(Value::as_u64).ok_or_else(|| bad(key))
}

fn bad(key: &str) -> Error {
    failed(
        format!("{HELPER} answered without a valid {key:?}"),
        ExitStatus::Operational,
    )
}

/// An answer line as a record (`None`: not recorded), or the error it reports.
fn record(v: &Value) -> Result<Option<AnchorRecord>> {
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        let status = match v.get("exit_code").and_then(Value::as_u64) {
            Some(2) => ExitStatus::Integrity,
            _ => ExitStatus::Operational,
        };
        return Err(failed(e.to_string(), status));
    }
    match v.get("found").and_then(Value::as_bool) {
        Some(false) => return Ok(None),
        Some(true) => {}
        None => return Err(bad("found")),
    }
    let name = text(v, "status")?;
    let status = AnchorStatus::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| bad("status"))?;
    Ok(Some(AnchorRecord {
        anchor_hash: text(v, "anchor_hash")?,
        bitcoin_tx_id: text(v, "bitcoin_tx_id")?,
        bitcoin_height: number(v, "bitcoin_height")?,
        confirmations: number(v, "confirmations")?,
        broadcast_time: number(v, "broadcast_time")?,
        retry_count: number(v, "retry_count")?,
        status,
        l2_state_root: text(v, "l2_state_root")?,
    }))
}

impl AnchorLookup for RemoteDb {
    fn anchor(&self, hash: &str) -> Result<Option<AnchorRecord>> {
        // The protocol is line based; no key the node writes holds a line break.
        if hash.contains(['\n', '\r']) {
            return Ok(None);
        }
        let mut state = self.state();
        if let Some(r) = state.cache.get(hash) {
            return Ok(r.clone());
        }
        let answers = self.exchange(&mut state, &[hash])?;
        let r = answers.first().map_or(Ok(None), record)?;
        remember(&mut state.cache, hash, r.clone());
        Ok(r)
    }

    /// Asks for every hash not known yet (as written and lower-cased), in
    /// batches of one round trip each. A record that does not decode is not
    /// remembered: its lookup asks again and reports the error then.
    fn prefetch(&self, hashes: &[&str]) -> Result<()> {
        let mut state = self.state();
        let mut wanted: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for h in hashes {
            for h in [h.to_string(), h.to_ascii_lowercase()] {
                if !h.contains(['\n', '\r']) && !state.cache.contains_key(&h) && seen.insert(h.clone()) {
                    wanted.push(h);
                }
            }
        }
        let mut rest = &wanted[..];
        while !rest.is_empty() {
            let (mut n, mut bytes) = (0, 0);
            while n < rest.len() && (n == 0 || bytes + rest[n].len() < BATCH_BYTES) {
                bytes += rest[n].len() + 1;
                n += 1;
            }
            let (batch, more) = rest.split_at(n);
            let asked: Vec<&str> = batch.iter().map(String::as_str).collect();
            let answers = self.exchange(&mut state, &asked)?;
            if answers.len() != batch.len() {
                // The reader ended with an error document: report it.
                return answers.first().map_or(Ok(()), |a| record(a).map(|_| ()));
            }
            for (h, a) in batch.iter().zip(&answers) {
                if let Ok(r) = record(a) {
                    remember(&mut state.cache, h, r);
                }
            }
            rest = more;
        }
        Ok(())
    }
}

impl Drop for RemoteDb {
    fn drop(&mut self) {
        let helper = match self.state.get_mut() {
            Ok(s) => s.helper.take(),
            Err(p) => p.into_inner().helper.take(),
        };
        if let Some(h) = helper {
            // End of input ends it; reap it so no zombie is left.
            drop(h.stdin);
            let mut child = h.child;
            let _ = child.wait();
        }
    }
}
