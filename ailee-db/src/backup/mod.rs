//! Backups of a node's data directory (SPEC §5) and restores that cannot lose
//! the operator's state ([`restore`]).
//!
//! Consistency is ours, history is restic's:
//! - only complete snapshots are backed up: the byte prefix of
//!   `l2_snapshots.dat` up to the end of its newest complete block (a torn
//!   tail is never copied), and a consistent copy of `reorg_db` made through a
//!   read-only open ([`crate::reorgdb::ReorgDb::copy_to`]) while the node runs;
//! - `backups/l2_snapshots_latest.dat.bak` is a complete, verifying copy,
//!   replaced by rename (never appended to in place, so a kill leaves the
//!   previous complete copy under its name). It is brought up to date from a
//!   spare copy (the previous `.bak`) by appending only the new bytes; before
//!   it is published, the region it extends, the bytes appended and a moving
//!   window of its older regions are compared with the live file
//!   ([`spare_holds`]: every byte again within a bounded number of runs, at a
//!   cost per run that does not grow with the file); when the live file is
//!   no longer an extension of the copy (pruned, restored, rewritten) a full
//!   copy is made, with a warning;
//! - the restic snapshot holds the file cut into fixed-size segments
//!   (`l2_snapshots.parts/000000`, …) kept in `backups/.stage/`: segments
//!   that did not change are skipped by restic's change detection, so the
//!   work per backup grows with the bytes appended, not with the file;
//! - retention calls restic only when its policy would remove a backup
//!   ([`retention`]).

pub mod restic;
pub mod restore;
pub mod retention;

use crate::reorgdb::{Mode, ReorgDb};
use ailee_core::records::AnchorLookup as _;
use ailee_core::verifier::{BitcoinCheck, Verifier};
use ailee_core::{Error, Result};
use restic::Restic;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the runbook's copy in `backups/`.
pub const BAK_NAME: &str = "l2_snapshots_latest.dat.bak";
/// The spare copy the next `.bak` is built from.
const SPARE_NAME: &str = ".l2_snapshots_spare.dat";
/// Identity of the spare as last published (see [`update_bak`]).
const SPARE_ID: &str = ".l2_snapshots_spare.id";
/// Segment directory inside the stage and the restic snapshot.
pub const PARTS: &str = "l2_snapshots.parts";
/// Segment size of the staged snapshot file.
pub const SEGMENT: u64 = 16 << 20;
/// Status file rewritten after every successful backup.
pub const LAST_NAME: &str = "last_backup";
/// The lock file that keeps backups and restores of one data directory apart.
pub const LOCK_NAME: &str = ".ailee_backup.lock";

/// Retention tiers (restic's `forget` policy).
#[derive(Debug, Clone)]
pub struct Retention {
    pub last: Option<u32>,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            last: None,
            hourly: 24,
            daily: 7,
            weekly: 4,
            monthly: 6,
            yearly: 0,
        }
    }
}

impl Retention {
    fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut put = |k: &str, n: u32| {
            if n > 0 {
                v.push(format!("--keep-{k}"));
                v.push(n.to_string());
            }
        };
        if let Some(n) = self.last {
            put("last", n);
        }
        put("hourly", self.hourly);
        put("daily", self.daily);
        put("weekly", self.weekly);
        put("monthly", self.monthly);
        put("yearly", self.yearly);
        v
    }

    /// True when nothing is to be kept (restic would refuse; so do we).
    pub fn is_empty(&self) -> bool {
        self.args().is_empty()
    }
}

/// What a backup run is asked to do.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub data_dir: PathBuf,
    pub restic: Restic,
    pub retention: Retention,
    /// Backup time passed to restic (`restic backup --time`), e.g. for imports.
    pub time: Option<String>,
    /// Skip `forget` (retention) after the backup.
    pub no_forget: bool,
    /// Also measure the repository size (`restic stats`).
    pub measure_repo: bool,
    /// The node whose backup this is (see [`node_id`]); `None`: the data
    /// directory's, created on first use.
    pub node: Option<String>,
}

/// What a backup did.
#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    pub snapshot_id: String,
    pub root: String,
    pub anchor: String,
    pub height: Option<u64>,
    /// The anchor's transaction, from its record in `reorg_db` (tag `txid=`).
    pub txid: Option<String>,
    /// Hex of the newest snapshot's anchor payload (tag `payload=`): with
    /// `txid` what [`pick_anchored`] checks on chain without a restore.
    pub payload: Option<String>,
    pub snapshots: u64,
    pub bytes: u64,
    /// Bytes appended to the runbook copy this run.
    pub appended: u64,
    /// Data restic added to the repository.
    pub data_added: u64,
    pub repo_size: Option<u64>,
    pub forgotten: u64,
    pub created_repo: bool,
    /// The node the backup was recorded for.
    pub node: String,
    /// Created this run (`DATA_DIR/node_id` did not exist).
    pub created_node_id: bool,
    pub warnings: Vec<String>,
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(path, e))
}

/// A data directory must exist; it is never created (a typo must not make one).
pub fn check_data_dir(d: &Path) -> Result<()> {
    match std::fs::metadata(d) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Usage(format!("{}: not a directory", d.display()))),
        Err(e) => Err(Error::Usage(format!(
            "data directory {}: {e} (it is never created; check the path)",
            d.display()
        ))),
    }
}

/// Takes the data directory's backup/restore lock (non-blocking).
pub fn lock(data_dir: &Path) -> Result<File> {
    let p = data_dir.join(LOCK_NAME);
    flock_now(&p, || {
        format!(
            "another ailee_backup or ailee_restore is running on {} (lock {})",
            data_dir.display(),
            p.display()
        )
    })
}

/// Takes the lock of one repository's stage (`backups/<stage>.lock`,
/// non-blocking): runs to different repositories (the local one hourly, an
/// off-site one) hold the data directory's lock only while they prepare
/// their stage, so a slow or dead link delays its own repository only.
pub fn lock_repo(data_dir: &Path, r: &Restic) -> Result<File> {
    let bdir = data_dir.join("backups");
    io(&bdir, std::fs::create_dir_all(&bdir))?;
    let p = bdir.join(format!("{}.lock", stage_name(data_dir, r)));
    flock_now(&p, || {
        format!(
            "another ailee_backup is using repository {} from {} (lock {})",
            r.label(),
            data_dir.display(),
            p.display()
        )
    })
}

/// An exclusive `flock` on the file `p` (created 0600), or at once the
/// error `busy` says when another process holds it.
fn flock_now(p: &Path, busy: impl FnOnce() -> String) -> Result<File> {
    let f = io(
        p,
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(p),
    )?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(Error::Usage(busy())),
        Err(e) => Err(Error::io(p, e.into())),
    }
}

/// The stage directory (in `backups/`) of the repository `r`: `.stage` for
/// the default local repository (`backups/repo`), `.stage-<hash>` for any
/// other, so that runs to two repositories never share one.
pub fn stage_name(data_dir: &Path, r: &Restic) -> String {
    let default = std::path::absolute(data_dir.join("backups").join("repo"))
        .is_ok_and(|p| p.as_os_str() == std::ffi::OsStr::new(&r.repo));
    if default {
        ".stage".into()
    } else {
        use sha2::Digest;
        let h = sha2::Sha256::digest(r.label().as_bytes());
        format!(".stage-{}", ailee_core::root::hex(&h[..6]))
    }
}

/// The file in the data directory that names the node (`node=` tag of its backups).
pub const NODE_ID: &str = "node_id";

/// Whether `id` can name a node: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn check_node_id(id: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "node id {id:?}: expected 1 to 64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// The node id kept in `DATA_DIR/node_id`, if there is one.
pub fn node_id(data_dir: &Path) -> Result<Option<String>> {
    let p = data_dir.join(NODE_ID);
    match std::fs::read_to_string(&p) {
        Ok(s) => {
            let id = s.trim();
            check_node_id(id).map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?;
            Ok(Some(id.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// Writes `id` as the data directory's node id (atomically, never over one).
pub fn write_node_id(data_dir: &Path, id: &str) -> Result<()> {
    check_node_id(id)?;
    let p = data_dir.join(NODE_ID);
    let mut f = ailee_core::atomic::Pending::create(&p, false)?;
    f.write_all(format!("{id}\n").as_bytes())?;
    f.commit()
}

/// The data directory's node id, created (random, 32 hex digits) when it
/// has none. Returns it and whether it was created.
pub fn ensure_node_id(data_dir: &Path) -> Result<(String, bool)> {
    if let Some(id) = node_id(data_dir)? {
        return Ok((id, false));
    }
    let mut b = [0u8; 16];
    io(
        Path::new("/dev/urandom"),
        File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)),
    )?;
    let id = ailee_core::root::hex(&b);
    write_node_id(data_dir, &id)?;
    Ok((id, true))
}

/// Whose backups a command sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// Those tagged `node=ID`.
    One(String),
    /// All of them (`--any-node`), those without a node id too.
    Any,
}

impl Nodes {
    /// restic's `--tag` filter for these backups.
    pub fn tag_filter(&self) -> String {
        match self {
            Nodes::One(id) => format!("{},node={id}", restic::TAG),
            Nodes::Any => restic::TAG.to_string(),
        }
    }

    /// Whether snapshot `s` is one of these.
    pub fn has(&self, s: &restic::Snapshot) -> bool {
        match self {
            Nodes::One(id) => s.tag("node") == Some(id.as_str()),
            Nodes::Any => true,
        }
    }
}

/// Which node's backups `--list`, `--verify` and `ailee_restore` see: the
/// one named (`--node`), every one (`--any-node`), else the data
/// directory's (`DATA_DIR/node_id`). A data directory without one (a new
/// machine) sees the only node in the repository; with several there, it
/// must be told which.
pub fn choose_nodes(r: &Restic, data_dir: &Path, named: Option<&str>, any: bool) -> Result<Nodes> {
    if any {
        return Ok(Nodes::Any);
    }
    if let Some(id) = named {
        check_node_id(id)?;
        return Ok(Nodes::One(id.to_string()));
    }
    if let Some(id) = node_id(data_dir)? {
        return Ok(Nodes::One(id));
    }
    let all = r.snapshots()?;
    let mut ids: Vec<&str> = all.iter().filter_map(|s| s.tag("node")).collect();
    ids.sort_unstable();
    ids.dedup();
    match ids[..] {
        // Backups made before node ids: all of them.
        [] => Ok(Nodes::Any),
        [id] => Ok(Nodes::One(id.to_string())),
        _ => Err(Error::Usage(format!(
            "{} has no {NODE_ID} and repository {} holds backups of {} nodes ({}): pass --node ID \
             (the ID column of --list --any-node) or --any-node",
            data_dir.display(),
            r.label(),
            ids.len(),
            ids.join(", ")
        ))),
    }
}

/// The newest complete block of a snapshot file: its end offset (the length
/// of the complete prefix) and its bytes. `None` when there is none.
pub fn newest_block(f: &File) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    // The callers name the file: hand back the OS error alone.
    let sf = ailee_core::snapfile::SnapshotFile::from_file(f.try_clone()?, Path::new(""));
    match sf.and_then(|sf| sf.interruptible(false).newest()) {
        Ok((found, _)) => Ok(found.map(|x| (x.offset + x.bytes.len() as u64, x.bytes))),
        Err(Error::Io { error, .. }) => Err(error),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// Root and anchor hash of a block that verifies; the failure otherwise.
pub fn verify_newest(block: &[u8]) -> Result<(String, String)> {
    let v = Verifier::default().check(block);
    match (&v.failure, v.root, v.anchor_hash) {
        (None, Some(r), Some(a)) => Ok((r, a)),
        (Some(f), _, _) => Err(Error::Integrity(format!("the newest snapshot does not verify: {f}"))),
        _ => Err(Error::Integrity("the newest snapshot does not verify".into())),
    }
}

/// Complete blocks in `len` bytes of `f` from `offset` (a block boundary),
/// counted as the other tools number them.
pub fn count_blocks(f: &File, offset: u64, len: u64) -> std::io::Result<u64> {
    // The readers' bounds: an open block is held up to 8 MiB (then only its
    // offset), a complete block over the cap is not a snapshot.
    // The callers name the file: hand back the OS error alone.
    let sf = ailee_core::snapfile::SnapshotFile::from_file(f.try_clone()?, Path::new(""));
    match sf.and_then(|sf| sf.interruptible(false).count_range(offset, len)) {
        Ok(n) => Ok(n),
        Err(Error::Io { error, .. }) => Err(error),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// Snapshots of the file at `path` that do not verify (number from 1,
/// message), at most `max`; read as every tool reads it
/// ([`ailee_core::snapfile::SnapshotFile`]: bounded memory, a snapshot over 8 MiB
/// read again).
pub fn failing_snapshots(path: &Path, max: usize) -> Result<(u64, Vec<(u64, String)>)> {
    let sf = ailee_core::snapfile::SnapshotFile::open(path)?;
    let (mut n, mut bad) = (0u64, Vec::new());
    let verifier = Verifier::default();
    sf.forward(|b| {
        n = b.number as u64;
        if let Some(f) = verifier.check(b.bytes).failure {
            if bad.len() < max {
                bad.push((n, f.to_string()));
            }
        }
        Ok(true)
    })?;
    Ok((n, bad))
}

/// Copies `len` bytes of `src` from `offset` to the current position of
/// `dst` with large reads and writes: on ext4 without reflinks this is
/// several times faster than `copy_file_range` (measured: 0.3 s against 4.9 s
/// per GB), and the copy is interruptible between blocks.
fn copy_rw(src: &File, mut offset: u64, mut len: u64, dst: &mut File) -> Result<()> {
    use std::io::Write;
    const BUF: usize = 4 << 20;
    let mut buf = vec![0u8; BUF.min(len as usize)];
    while len > 0 {
        ailee_core::cancel::check()?;
        let n = BUF.min(len as usize);
        src.read_exact_at(&mut buf[..n], offset)
            .map_err(|e| Error::io("backup source", e))?;
        dst.write_all(&buf[..n]).map_err(|e| Error::io("backup copy", e))?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

fn fsync_path(p: &Path) -> Result<()> {
    io(p, File::open(p).and_then(|f| f.sync_all()))
}

/// The result of bringing the runbook copy up to date.
#[derive(Debug)]
struct BakUpdate {
    len: u64,
    appended: u64,
    /// The previous copy was not a prefix of the live file (or there was none).
    full_copy: bool,
}

/// Said when the spare copy is not what was written (see [`update_bak`]).
const SPARE_CHANGED: &str = "the spare backup copy differs from the live file in bytes it already held \
     (changed on disk since it was written?): making a full copy";

/// Bytes of the spare's older regions compared with the live file per run
/// (a window that moves on each run, see [`spare_holds`]).
const SCRUB: u64 = 4 * SEGMENT;
/// Where the window starts next (a region number; missing: 0).
const SCRUB_NAME: &str = ".l2_snapshots_scrub";

/// Brings `backups/l2_snapshots_latest.dat.bak` to the live prefix `[0, len)`.
fn update_bak(bdir: &Path, live: &File, len: u64, warnings: &mut Vec<String>) -> Result<BakUpdate> {
    let bak = bdir.join(BAK_NAME);
    let spare = bdir.join(SPARE_NAME);
    let mut full_copy = !previous_extends(&bak, live, len, warnings)?;
    ailee_core::cancel::check()?;
    // Bring the spare (the copy before the previous one) up to date.
    let mut f = io(
        &spare,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&spare),
    )?;
    let mut have = io(&spare, f.metadata())?.len();
    let _ = std::fs::remove_file(bdir.join(SPARE_ID));
    if full_copy {
        have = 0;
    } else if have > len || !io(&spare, spare_holds(bdir, &f, live, have, SEGMENT, SCRUB / SEGMENT))? {
        if have > 0 {
            warnings.push(SPARE_CHANGED.into());
        }
        full_copy = true;
        have = 0;
    }
    let mut appended = len - have;
    for attempt in 0..2 {
        io(&spare, f.set_len(have))?;
        io(&spare, f.seek(SeekFrom::Start(have)))?;
        copy_rw(live, have, len - have, &mut f)?;
        ailee_core::cancel::check()?;
        // The bytes written must be the live ones (read back from the copy).
        if io(&spare, same_range(&f, live, have, len))? {
            break;
        }
        full_copy = true;
        if attempt == 1 || have == 0 {
            return Err(Error::Usage(
                "the backup copy does not match the live file after copying (the file changed under us?); \
                 nothing was published, run the backup again"
                    .into(),
            ));
        }
        warnings.push(SPARE_CHANGED.into());
        have = 0;
        appended = len;
    }
    io(&spare, f.sync_all())?;
    drop(f);
    ailee_core::cancel::check()?;
    publish(&spare, &bak, bdir)?;
    Ok(BakUpdate {
        len,
        appended,
        full_copy,
    })
}

/// Whether the previous runbook copy `bak` may be a prefix of the live
/// file's `[0, len)`: its length and last 64 KiB agree (a pruned, restored
/// or rewritten live file fails this). A symlink left by the old scripts is
/// removed. False (and a warning when there was a copy): a full copy.
fn previous_extends(bak: &Path, live: &File, len: u64, warnings: &mut Vec<String>) -> Result<bool> {
    if let Ok(m) = std::fs::symlink_metadata(bak) {
        if !m.file_type().is_file() {
            // The old scripts made it a symlink to the newest dated copy.
            io(bak, std::fs::remove_file(bak))?;
        }
    }
    let Ok(old) = File::open(bak) else {
        return Ok(false);
    };
    let n = io(bak, old.metadata())?.len();
    let ok = n <= len && io(bak, same_tail(&old, live, n))?;
    if !ok {
        warnings.push(format!(
            "the live snapshot file is no longer an extension of the previous backup copy \
             (pruned, restored or rewritten?): making a full copy of {len} bytes"
        ));
    }
    Ok(ok)
}

/// Whether the spare's `have` bytes are still the live file's, checked
/// without reading all of them: no byte is trusted on its metadata (a
/// changed byte with its mtime kept, bit rot), so the bytes compared with
/// the live file are its last 64 KiB, the whole region (of `region` bytes)
/// it ends in — the one the append extends — and a window of `window`
/// older regions ([`SCRUB`] bytes) that moves on with each run (its start kept
/// in `bdir/`[`SCRUB_NAME`]), so that every byte of both copies is compared
/// again within a bounded number of runs: for the default 16 MiB regions,
/// every file size / 32 MiB runs (32 hours for 1 GB). Each region
/// was compared with the live file when it was written.
fn spare_holds(bdir: &Path, spare: &File, live: &File, have: u64, region: u64, window: u64) -> std::io::Result<bool> {
    if have == 0 {
        return Ok(true);
    }
    let done = have / region;
    if !same_tail(spare, live, have)? || !same_range(spare, live, done * region, have)? {
        return Ok(false);
    }
    if done == 0 {
        return Ok(true);
    }
    let cursor_path = bdir.join(SCRUB_NAME);
    let cursor = std::fs::read_to_string(&cursor_path)
        .ok()
        .and_then(|c| c.trim().parse::<u64>().ok())
        .unwrap_or(0)
        % done;
    let window = window.max(1);
    for k in 0..window.min(done) {
        let i = (cursor + k) % done;
        if !same_range(spare, live, i * region, (i + 1) * region)? {
            return Ok(false);
        }
    }
    // The two copies take turns as the spare: move half a window per run,
    // so that each of them sees every region.
    let next = (cursor + window.div_ceil(2)) % done;
    let _ = ailee_core::atomic::Pending::create(&cursor_path, true).and_then(|mut p| {
        p.write_all(format!("{next}\n").as_bytes())?;
        p.commit()
    });
    Ok(true)
}

/// Publishes the brought-up-to-date `spare` as `bak`: an exchange (the old
/// copy becomes the next spare), or a plain rename for the first copy.
fn publish(spare: &Path, bak: &Path, bdir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(bak).is_ok() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            spare,
            rustix::fs::CWD,
            bak,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| Error::io(bak, e.into()))?;
    } else {
        io(bak, std::fs::rename(spare, bak))?;
    }
    ailee_core::atomic::sync_dir(bdir)
}

/// True when bytes `[start, end)` of `a` and `b` are equal.
fn same_range(a: &File, b: &File, start: u64, end: u64) -> std::io::Result<bool> {
    const BUF: usize = 1 << 20;
    let (mut x, mut y) = (vec![0u8; BUF], vec![0u8; BUF]);
    let mut off = start;
    while off < end {
        let n = BUF.min((end - off) as usize);
        a.read_exact_at(&mut x[..n], off)?;
        b.read_exact_at(&mut y[..n], off)?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

/// Cheap early check that the first `n` bytes of `a` may be a prefix of
/// `b`: the last 64 KiB before `n` agree (the full comparison comes later).
fn same_tail(a: &File, b: &File, n: u64) -> std::io::Result<bool> {
    let k = n.min(64 << 10);
    let (mut x, mut y) = (vec![0u8; k as usize], vec![0u8; k as usize]);
    a.read_exact_at(&mut x, n - k)?;
    if b.read_exact_at(&mut y, n - k).is_err() {
        return Ok(false);
    }
    Ok(x == y)
}

/// The number a segment file of `l2_snapshots.parts/` is named by
/// (`000042`: 42), or `None` for a name that is not a number.
fn segment_index(e: &std::fs::DirEntry) -> Option<u64> {
    e.file_name().to_str().and_then(|n| n.parse::<u64>().ok())
}

/// Brings the staged segments in `stage/l2_snapshots.parts/` to equal the
/// copy `bak` of `len` bytes; unchanged segments keep their inode and times.
fn update_stage(stage: &Path, bak: &File, len: u64, thorough: bool) -> Result<()> {
    let parts = stage.join(PARTS);
    io(&parts, std::fs::create_dir_all(&parts))?;
    let nseg = len.div_ceil(SEGMENT);
    // Remove segments past the end (the file got shorter: a restore or prune).
    for e in io(&parts, std::fs::read_dir(&parts))? {
        let e = io(&parts, e)?;
        let keep = segment_index(&e).is_some_and(|i| i < nseg);
        if !keep {
            let p = e.path();
            io(&p, std::fs::remove_file(&p))?;
        }
    }
    for i in 0..nseg {
        ailee_core::cancel::check()?;
        let p = parts.join(format!("{i:06}"));
        let start = i * SEGMENT;
        let want = SEGMENT.min(len - start);
        let have = std::fs::symlink_metadata(&p).map(|m| m.len()).ok();
        match have {
            Some(h) if h == want => {
                // Unchanged lengths: a segment that was complete before is
                // unchanged (the copy only grew); the last one is checked.
                if (thorough || i + 1 == nseg) && !io(&p, seg_matches(&p, bak, start, want))? {
                    rewrite_segment(&p, bak, start, want, 0)?;
                }
            }
            Some(h) if h < want && io(&p, seg_matches(&p, bak, start, h))? => rewrite_segment(&p, bak, start, want, h)?,
            _ => rewrite_segment(&p, bak, start, want, 0)?,
        }
    }
    Ok(())
}

fn seg_matches(p: &Path, bak: &File, start: u64, n: u64) -> std::io::Result<bool> {
    let f = File::open(p)?;
    let mut x = vec![0u8; n as usize];
    let mut y = vec![0u8; n as usize];
    f.read_exact_at(&mut x, 0)?;
    bak.read_exact_at(&mut y, start)?;
    Ok(x == y)
}

/// Writes `[start + from, start + want)` of `bak` into segment `p` from `from`.
fn rewrite_segment(p: &Path, bak: &File, start: u64, want: u64, from: u64) -> Result<()> {
    let mut f = io(p, OpenOptions::new().write(true).create(true).truncate(false).open(p))?;
    io(p, f.set_len(from))?;
    io(p, f.seek(SeekFrom::Start(from)))?;
    copy_rw(bak, start + from, want - from, &mut f)
}

/// Makes one backup of `opts.data_dir` into `opts.restic`'s repository.
///
/// Takes the repository's stage lock ([`lock_repo`]) for the whole run and
/// the data directory's lock ([`lock`]) only while it reads the live files
/// and prepares the stage; restic then works on the stage alone. Refused
/// while a restore's journal says a swap was interrupted (the live files
/// may be half old, half restored).
pub fn backup(opts: &BackupOptions) -> Result<BackupReport> {
    let d = &opts.data_dir;
    check_data_dir(d)?;
    let _repo_lock = lock_repo(d, &opts.restic)?;
    let (stage, mut rep) = {
        let _lock = lock(d)?;
        if let Some(j) = restore::pending_journal(d) {
            return Err(Error::Usage(format!(
                "{} exists: a restore was interrupted and the data directory may hold half old, half \
                 restored state; nothing was backed up. Settle it first: ailee_restore --data-dir {} \
                 (with the node stopped)",
                j.display(),
                d.display()
            )));
        }
        prepare(opts)?
    };
    ailee_core::cancel::check()?;

    // The restic snapshot (the repository is created on first use).
    let tags = tags(&rep);
    let mut args = vec!["backup", "--json", "--tag", &tags];
    if let Some(t) = &opts.time {
        args.push("--time");
        args.push(t);
    }
    args.extend([PARTS, "reorg_db"]);
    let mut o = opts.restic.run_in(Some(&stage), &args)?;
    if !o.ok() && restic::repo_missing(&o.stderr) {
        opts.restic.init()?;
        rep.created_repo = true;
        o = opts.restic.run_in(Some(&stage), &args)?;
    }
    if !o.ok() {
        return Err(opts.restic.failure("backup", &o));
    }
    let s = restic::backup_summary(&o.stdout)
        .ok_or_else(|| Error::Usage("restic backup printed no summary (unexpected restic version?)".into()))?;
    rep.snapshot_id = s.snapshot_id;
    rep.data_added = s.data_added;
    // The backup is in the repository: from here on the run reports success,
    // with a warning for a later step that did not finish.
    let bdir = d.join("backups");
    let status = ailee_core::atomic::Pending::create(&bdir.join(LAST_NAME), true).and_then(|mut st| {
        // A status file whose mtime is the time of the last successful
        // backup (ailee_monitor reads it; no restic call needed).
        st.write_all(
            format!(
                "id {}\nroot {}\nanchor {}\nsnapshots {}\nbytes {}\nnode {}\nrepository {}\n",
                rep.snapshot_id,
                rep.root,
                rep.anchor,
                rep.snapshots,
                rep.bytes,
                rep.node,
                opts.restic.label()
            )
            .as_bytes(),
        )?;
        st.commit()
    });
    if let Err(e) = status {
        rep.warnings
            .push(format!("cannot write {}: {e}", bdir.join(LAST_NAME).display()));
    }

    // Retention, then the repository size.
    {
        match apply_retention(opts, &rep) {
            Ok(n) => rep.forgotten = n,
            Err(Error::Interrupted) => rep
                .warnings
                .push("interrupted during retention: the backup is made; retention runs with the next one".into()),
            Err(e) => rep.warnings.push(format!(
                "the backup is made, but retention failed (it runs again with the next backup): {e}"
            )),
        }
    }
    if opts.measure_repo && !ailee_core::cancel::requested() {
        rep.repo_size = repo_size(&opts.restic).ok();
    }
    Ok(rep)
}

/// The tags of the backup `rep` records: node, root, anchor, snapshots,
/// bytes, and when known height, txid and payload.
fn tags(rep: &BackupReport) -> String {
    let mut tags = format!(
        "{},node={},root={},anchor={},snapshots={},bytes={}",
        restic::TAG,
        rep.node,
        rep.root,
        rep.anchor,
        rep.snapshots,
        rep.bytes
    );
    if let Some(h) = rep.height {
        tags.push_str(&format!(",height={h}"));
    }
    if let Some(t) = &rep.txid {
        tags.push_str(&format!(",txid={t}"));
    }
    if let Some(p) = &rep.payload {
        tags.push_str(&format!(",payload={p}"));
    }
    tags
}

/// Under the data directory's lock: the newest snapshot verified, the
/// runbook copy brought up to date, the repository's stage built from it
/// and a consistent copy of `reorg_db`. Returns the stage and the report so far.
fn prepare(opts: &BackupOptions) -> Result<(PathBuf, BackupReport)> {
    let d = &opts.data_dir;
    let mut rep = BackupReport::default();
    let live_path = d.join("l2_snapshots.dat");
    // Refuse a FIFO, device or socket at once (opening a FIFO would block).
    match std::fs::metadata(&live_path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(Error::Usage(format!("{}: not a regular file", live_path.display()))),
        Err(e) => return Err(Error::io(&live_path, e)),
    }
    let live = ailee_core::snapfile::open_regular(&live_path, "snapshot file")?;
    let db_path = d.join("reorg_db");
    // Open the database first: a missing one fails before anything is written.
    let db = ReorgDb::open(&db_path, Mode::ReadOnly)?;
    match &opts.node {
        Some(id) => {
            check_node_id(id)?;
            rep.node = id.clone();
        }
        None => (rep.node, rep.created_node_id) = ensure_node_id(d)?,
    }

    // 1. The complete prefix and its newest snapshot, which must verify.
    let (len, newest) = io(&live_path, newest_block(&live))?.ok_or_else(|| Error::NoSnapshots(live_path.clone()))?;
    let (root, anchor) = verify_newest(&newest)?;

    // 2. The runbook copy.
    let bdir = d.join("backups");
    io(&bdir, std::fs::create_dir_all(&bdir))?;
    let sname = stage_name(d, &opts.restic);
    let stage = bdir.join(&sname);
    // Temporary files of killed runs (we hold the locks: none is in use).
    reap_tmp(&bdir);
    reap_tmp(&stage);
    let old_len = std::fs::metadata(bdir.join(BAK_NAME)).map(|m| m.len()).ok();
    let u = update_bak(&bdir, &live, len, &mut rep.warnings)?;
    let bak = io(&bdir, File::open(bdir.join(BAK_NAME)))?;
    // Snapshot count: from the stage's previous count plus the appended blocks.
    let count_path = bdir.join(format!("{sname}.count"));
    let prev = std::fs::read_to_string(&count_path).ok().and_then(|s| {
        let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
        Some((it.next()??, it.next()??))
    });
    // The stage mirrors the previous copy when its record says so (a stage
    // another repository's runs left behind is checked whole).
    let synced = !u.full_copy && prev.is_some_and(|(l, _)| Some(l) == old_len);
    rep.snapshots = match (prev, old_len) {
        (Some((l, n)), Some(ol)) if synced && l == ol => n + io(&bdir, count_blocks(&bak, l, u.len - l))?,
        _ => io(&bdir, count_blocks(&bak, 0, u.len))?,
    };
    ailee_core::cancel::check()?;

    // 3. The stage: segments of the copy, and a consistent copy of reorg_db.
    io(&stage, std::fs::create_dir_all(&stage))?;
    let _ = std::fs::remove_file(&count_path);
    update_stage(&stage, &bak, u.len, !synced)?;
    ailee_core::atomic::Pending::create(&count_path, true).and_then(|mut p| {
        p.write_all(format!("{} {}\n", u.len, rep.snapshots).as_bytes())?;
        p.commit()
    })?;
    let sdb = stage.join("reorg_db");
    if std::fs::symlink_metadata(&sdb).is_ok() {
        io(&sdb, std::fs::remove_dir_all(&sdb))?;
    }
    db.copy_to(&sdb)?;
    let rec = db.anchor_any_case(&anchor).ok().flatten();
    rep.height = rec.as_ref().map(|a| a.bitcoin_height).filter(|h| *h > 0);
    rep.txid = rec
        .map(|a| a.bitcoin_tx_id.to_ascii_lowercase())
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()));
    rep.payload = ailee_core::onchain::anchor_payload(&newest).map(|p| ailee_core::root::hex(&p));
    drop(db);
    let check = ReorgDb::open(&sdb, Mode::ReadOnly)?.check(0)?;
    if !check.healthy() {
        return Err(Error::Integrity(format!(
            "the reorg database does not check: {}",
            check.errors.first().cloned().unwrap_or_default()
        )));
    }
    rep.root = root;
    rep.anchor = anchor;
    rep.bytes = u.len;
    rep.appended = u.appended;
    Ok((stage, rep))
}

/// Applies the retention policy; prunes unreferenced data when snapshots
/// were removed. Returns the number of snapshots removed.
///
/// Only `nodes`' backups are considered, as one group (`--group-by ''`): a
/// node's history is kept by its tiers whatever host or path it was made
/// from, and never thins another node's.
pub fn forget(r: &Restic, keep: &Retention, nodes: &Nodes) -> Result<u64> {
    forget_keeping(r, keep, nodes).map(|(n, _)| n)
}

/// [`forget`], also returning the backups restic kept (their times, for
/// [`retention`]'s list).
fn forget_keeping(r: &Restic, keep: &Retention, nodes: &Nodes) -> Result<(u64, Vec<retention::Stamp>)> {
    let policy = keep.args();
    let filter = nodes.tag_filter();
    let mut args: Vec<&str> = vec!["forget", "--json", "--tag", &filter, "--group-by", ""];
    args.extend(policy.iter().map(String::as_str));
    let o = r.run_ok(None, &args, "forget")?;
    #[derive(serde::Deserialize)]
    struct Kept {
        id: String,
        time: String,
    }
    #[derive(serde::Deserialize)]
    struct Group {
        #[serde(default)]
        keep: Option<Vec<Kept>>,
        #[serde(default)]
        remove: Option<Vec<serde_json::Value>>,
    }
    let groups: Vec<Group> = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let removed: u64 = groups
        .iter()
        .map(|g| g.remove.as_ref().map_or(0, |v| v.len() as u64))
        .sum();
    let kept = groups
        .iter()
        .flat_map(|g| g.keep.iter().flatten())
        .filter_map(|k| retention::Stamp::parse(&k.id, &k.time))
        .collect();
    if removed > 0 {
        r.run_ok(None, &["prune"], "prune")?;
    }
    Ok((removed, kept))
}

/// Retention after the backup `rep` (made at `time`, else now): restic's
/// `forget` only when [`retention`]'s list says the policy removes a backup
/// (or the list is missing or stale); else the list gains the new backup.
/// Returns the number of backups removed.
fn apply_retention(opts: &BackupOptions, rep: &BackupReport) -> Result<u64> {
    let d = &opts.data_dir;
    let path = d
        .join("backups")
        .join(format!("{}.retention", stage_name(d, &opts.restic)));
    let kept = retention::load(&path, &rep.node);
    // The new backup's zone: the one restic recorded for the newest (a
    // wrong guess near a clock change only moves a removal to a later run).
    let offset = kept
        .as_ref()
        .and_then(|(_, l)| l.iter().max_by_key(|s| s.unix))
        .map_or(0, |s| s.offset);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() as i64);
    let new = match &opts.time {
        Some(t) => retention::Stamp::from_wall_clock(&rep.snapshot_id, t, offset),
        None => None,
    }
    .unwrap_or(retention::Stamp {
        id: rep.snapshot_id.clone(),
        unix: now,
        offset,
    });
    if opts.no_forget || !retention::must_ask(kept.as_ref(), &new, &opts.retention) {
        if let Some((asked, mut list)) = kept {
            list.push(new);
            let _ = retention::store(&path, &rep.node, asked, &list);
        }
        return Ok(0);
    }
    let _ = std::fs::remove_file(&path);
    let (removed, list) = forget_keeping(&opts.restic, &opts.retention, &Nodes::One(rep.node.clone()))?;
    let _ = retention::store(&path, &rep.node, new.unix, &list);
    Ok(removed)
}

/// The repository's stored size (`restic stats --mode raw-data`).
pub fn repo_size(r: &Restic) -> Result<u64> {
    let o = r.run_ok(None, &["stats", "--json", "--mode", "raw-data", "--no-lock"], "stats")?;
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).map_err(|e| Error::Usage(format!("restic stats: {e}")))?;
    v.get("total_size")
        .and_then(|x| x.as_u64())
        .ok_or_else(|| Error::Usage("restic stats: no total_size".into()))
}

/// What `--verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub snapshot: String,
    pub root: String,
    pub snapshots: u64,
    /// Older snapshots that do not verify (they were so in the live file).
    pub failing: Vec<(u64, String)>,
    /// With a [`ChainCheck`]: the newest anchor proven on Bitcoin.
    pub on_chain: Option<ChainProof>,
}

/// Restores the backup `which` (`latest` or an id) into `target` (a new
/// directory) and reassembles it: `target/l2_snapshots.dat`,
/// `target/reorg_db`. Checks it against the snapshot's tags (bytes, newest
/// root) and the database check. The listing that gives the tags runs
/// beside the restore (each restic call pays a key derivation).
pub fn restore_to(r: &Restic, which: &str, nodes: &Nodes, target: &Path) -> Result<restic::Snapshot> {
    restic::check_which(which)?;
    let raw = target.join("r");
    let t = raw.to_string_lossy().into_owned();
    let lister = {
        let (r, w, n) = (r.clone(), which.to_string(), nodes.clone());
        std::thread::spawn(move || r.find(&w, &n))
    };
    let filter = nodes.tag_filter();
    let args: Vec<&str> = if which == "latest" {
        vec!["restore", "--target", &t, "--tag", &filter, "latest"]
    } else {
        vec!["restore", "--target", &t, which]
    };
    let o = r.run(&args);
    let snap = lister
        .join()
        .map_err(|_| Error::Usage("restic snapshots: listing thread failed".into()))??;
    let o = o?;
    if !o.ok() {
        return Err(r.failure("restore", &o));
    }
    if !o.stderr.trim().is_empty() && restic::looks_corrupt(&o.stderr) {
        return Err(r.failure("restore", &o));
    }
    // The snapshot restic restored must be the one listed (a backup made
    // in between would make "latest" differ).
    let out = String::from_utf8_lossy(&o.stdout);
    let restored = out
        .split("<Snapshot ")
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .unwrap_or_default();
    if restored.is_empty() || !snap.id.starts_with(restored) {
        return Err(Error::Usage(format!(
            "restic restored snapshot {restored:?}, expected {} (a backup ran meanwhile?); run the command again",
            snap.short()
        )));
    }
    // Reassemble the snapshot file from its segments.
    let parts = raw.join(PARTS);
    let mut names: Vec<(u64, PathBuf)> = Vec::new();
    for e in io(&parts, std::fs::read_dir(&parts))? {
        let e = io(&parts, e)?;
        let i = segment_index(&e)
            .ok_or_else(|| Error::Integrity(format!("unexpected file {:?} in the backup", e.file_name())))?;
        names.push((i, e.path()));
    }
    names.sort();
    if names.iter().enumerate().any(|(k, (i, _))| k as u64 != *i) {
        return Err(Error::Integrity(format!(
            "backup {}: the snapshot file's segments are not contiguous",
            snap.short()
        )));
    }
    let out = target.join("l2_snapshots.dat");
    let mut f = io(
        &out,
        OpenOptions::new().write(true).create_new(true).mode(0o644).open(&out),
    )?;
    for (_, p) in &names {
        ailee_core::cancel::check()?;
        let src = io(p, File::open(p))?;
        let n = io(p, src.metadata())?.len();
        copy_rw(&src, 0, n, &mut f)?;
        // Free the space as we go.
        io(p, std::fs::remove_file(p))?;
    }
    io(&out, f.sync_all())?;
    drop(f);
    io(&raw, std::fs::rename(raw.join("reorg_db"), target.join("reorg_db")))?;
    io(&raw, std::fs::remove_dir_all(&raw))?;
    check_restored(&snap, target)?;
    Ok(snap)
}

/// Checks a reassembled backup in `dir` against the snapshot's tags.
pub fn check_restored(snap: &restic::Snapshot, dir: &Path) -> Result<()> {
    let id = snap.short();
    let p = dir.join("l2_snapshots.dat");
    let f = io(&p, File::open(&p))?;
    let len = io(&p, f.metadata())?.len();
    if let Some(b) = snap.tag_u64("bytes") {
        if b != len {
            return Err(Error::Integrity(format!(
                "backup {id}: the snapshot file has {len} bytes, the backup recorded {b}"
            )));
        }
    }
    let (end, newest) = io(&p, newest_block(&f))?
        .ok_or_else(|| Error::Integrity(format!("backup {id}: no complete snapshot in the snapshot file")))?;
    if end != len {
        return Err(Error::Integrity(format!(
            "backup {id}: the snapshot file does not end with a complete snapshot"
        )));
    }
    let (root, _) = verify_newest(&newest).map_err(|e| Error::Integrity(format!("backup {id}: {e}")))?;
    match snap.tag("root") {
        Some(r) if r == root => {}
        Some(r) => {
            return Err(Error::Integrity(format!(
                "backup {id}: the restored newest snapshot has root {root}, the backup recorded {r}"
            )))
        }
        None => {
            return Err(Error::Integrity(format!(
                "backup {id}: no recorded root (not made by ailee_backup?)"
            )))
        }
    }
    let db = dir.join("reorg_db");
    let c = ReorgDb::open(&db, Mode::ReadOnly)
        .map_err(|e| Error::Integrity(format!("backup {id}: the reorg database does not open: {e}")))?
        .check(0)?;
    if !c.healthy() {
        return Err(Error::Integrity(format!(
            "backup {id}: the reorg database does not check: {}",
            c.errors.first().cloned().unwrap_or_default()
        )));
    }
    Ok(())
}

/// The on-chain check of a backup (`--bitcoin-rpc`, SPEC §1.3, §2): the
/// Bitcoin node, the confirmations asked for and the node's live
/// `reorg_db`, consulted (read-only) for an anchor the backup's own
/// database does not record.
pub struct ChainCheck {
    pub rpc: ailee_core::rpc::Rpc,
    pub confirmations: u64,
    /// `DATA_DIR/reorg_db`; absent or unreadable: no records.
    pub live_db: Option<PathBuf>,
    /// The anchoring identity (the live data directory's, never a backup's:
    /// a tampered backup cannot name its own author). None: nothing is proven.
    pub identity: Option<ailee_core::identity::AnchorIdentity>,
}

/// A backup's newest anchor proven on the best chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProof {
    pub anchor: String,
    pub txid: String,
    pub height: u64,
    pub confirmations: u64,
}

impl std::fmt::Display for ChainProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "transaction {} at height {} ({} confirmations)",
            self.txid, self.height, self.confirmations
        )
    }
}

/// An anchor lookup that knows one record (or none).
struct One(Option<ailee_core::records::AnchorRecord>);

impl ailee_core::records::AnchorLookup for One {
    fn anchor(&self, _hash: &str) -> Result<Option<ailee_core::records::AnchorRecord>> {
        Ok(self.0.clone())
    }
}

/// The verdict of [`ailee_core::onchain::verify_on_chain`] as a result:
/// proven, or an error with its exit status — contradicted (or no record)
/// is an integrity failure (2), not provable yet is operational (1).
fn proof_of(v: ailee_core::onchain::OnChain, anchor: &str) -> Result<ChainProof> {
    use ailee_core::onchain::OnChain;
    match v {
        OnChain::Proven {
            txid,
            height,
            confirmations,
        } => Ok(ChainProof {
            anchor: anchor.to_string(),
            txid,
            height,
            confirmations,
        }),
        OnChain::Contradicted(m) => Err(Error::Integrity(format!(
            "the backup's newest anchor fails the on-chain check: {m}"
        ))),
        OnChain::NotYet(m) => Err(Error::Reported {
            message: format!("the backup's newest anchor is not provable on Bitcoin yet: {m}"),
            status: ailee_core::ExitStatus::Operational,
        }),
    }
}

/// Checks the newest anchor of the backup restored in `dir`
/// (`dir/l2_snapshots.dat`, `dir/reorg_db`) on the best chain, through
/// [`ailee_core::onchain::verify_on_chain`]: its hash and payload come from
/// the newest snapshot, its record (the txid) from `dir/reorg_db`, else from
/// the node's live database (`c.live_db`). Proven: the proof. Contradicted,
/// or no record anywhere: [`Error::Integrity`] (exit 2). Not mined, too few
/// confirmations, node behind, or no anchoring identity to prove its author:
/// exit 1. Proves that the anchor transaction is in the best chain with that
/// `OP_RETURN` and spends from the operator's identity.
pub fn check_on_chain(dir: &Path, c: &ChainCheck) -> Result<ChainProof> {
    use ailee_core::records::AnchorLookup;
    let p = dir.join("l2_snapshots.dat");
    let f = io(&p, File::open(&p))?;
    let (_, newest) = io(&p, newest_block(&f))?.ok_or_else(|| Error::NoSnapshots(p.clone()))?;
    let (_, anchor) = verify_newest(&newest)?;
    let payload = ailee_core::onchain::anchor_payload(&newest)
        .ok_or_else(|| Error::Integrity("the newest snapshot has no anchor".into()))?;
    drop(newest);
    let mut rec = ReorgDb::open(&dir.join("reorg_db"), Mode::ReadOnly)?.anchor_any_case(&anchor)?;
    if rec.is_none() {
        // The live database, read-only: absent or unreadable means no records.
        rec = c
            .live_db
            .as_deref()
            .filter(|l| l.is_dir())
            .and_then(|l| ReorgDb::open(l, Mode::ReadOnly).ok())
            .and_then(|db| db.anchor_any_case(&anchor).ok().flatten());
    }
    // The record alone counts: `One` holds no stored block hashes, so the
    // node's chain is not compared with a database's.
    let one = One(rec);
    let verifier =
        Verifier::new(Some(&one)).with_chain(Some(BitcoinCheck::new(&c.rpc, c.identity.as_ref(), c.confirmations)));
    match verifier.on_chain(&anchor, &payload)? {
        Some(v) => proof_of(v, &anchor),
        None => Err(Error::Integrity(
            "the backup's newest anchor was not checked on Bitcoin".into(),
        )),
    }
}

/// `ailee_restore --anchored`: the newest of `nodes`' backups whose anchor
/// is confirmed on the best chain with `c.confirmations`, judged from its
/// tags (`txid=`, `payload=`, `anchor=`, `height=`) without restoring it.
/// Backups without these tags (made before they were recorded) and those
/// whose tags disagree with each other are skipped; `note` is told why each
/// newer one was passed over. None confirmed: exit 1, naming how many were
/// looked at. The pick is only a candidate: the restore checks the restored
/// data again ([`check_on_chain`]).
pub fn pick_anchored(
    r: &Restic,
    nodes: &Nodes,
    c: &ChainCheck,
    note: &mut dyn FnMut(String),
) -> Result<restic::Snapshot> {
    use ailee_core::onchain::{verify_on_chain, OnChain};
    use ailee_core::records::{AnchorRecord, AnchorStatus};
    use sha2::Digest;
    let all = r.snapshots()?;
    let mine: Vec<&restic::Snapshot> = all.iter().rev().filter(|s| nodes.has(s)).collect();
    let (mut untagged, mut seen) = (0usize, std::collections::HashMap::new());
    for s in &mine {
        ailee_core::cancel::check()?;
        let id = s.short();
        let (Some(txid), Some(payload), Some(anchor)) = (s.tag("txid"), s.tag("payload"), s.tag("anchor")) else {
            untagged += 1;
            note(format!(
                "backup {id}: skipped, no txid/payload tags (made before ailee_backup recorded them, or its anchor \
                 had no transaction)"
            ));
            continue;
        };
        let bytes = ailee_core::block::unhex(payload).unwrap_or_default();
        let consistent = !bytes.is_empty()
            && ailee_core::root::hex(&sha2::Sha256::digest(&bytes)).eq_ignore_ascii_case(anchor)
            && s.tag("root")
                .is_some_and(|root| bytes.starts_with(format!("{root}:").as_bytes()));
        if !consistent {
            note(format!(
                "backup {id}: skipped, its tags disagree (payload, anchor and root do not match: tampered?)"
            ));
            continue;
        }
        let key = (txid.to_ascii_lowercase(), payload.to_ascii_lowercase());
        if !seen.contains_key(&key) {
            let rec = AnchorRecord {
                anchor_hash: anchor.to_string(),
                bitcoin_tx_id: txid.to_string(),
                bitcoin_height: s.tag_u64("height").unwrap_or(0),
                confirmations: 0,
                broadcast_time: 0,
                retry_count: 0,
                status: AnchorStatus::Pending,
                l2_state_root: s.tag("root").unwrap_or_default().to_string(),
            };
            let v = verify_on_chain(
                &One(Some(rec)),
                &c.rpc,
                anchor,
                &bytes,
                c.confirmations,
                c.identity.as_ref(),
            )?;
            seen.insert(key.clone(), v);
        }
        match &seen[&key] {
            OnChain::Proven {
                txid,
                height,
                confirmations,
            } => {
                note(format!(
                    "backup {id}: anchor {anchor} confirmed (transaction {txid} at height {height}, \
                     {confirmations} confirmations): restoring it"
                ));
                return Ok((*s).clone());
            }
            OnChain::NotYet(m) => note(format!("backup {id}: skipped, not confirmed: {m}")),
            OnChain::Contradicted(m) => note(format!("backup {id}: skipped, contradicted by the chain: {m}")),
        }
    }
    let whose = match nodes {
        Nodes::One(id) => format!(" of node {id}"),
        Nodes::Any => String::new(),
    };
    Err(Error::Reported {
        message: format!(
            "no backup{whose} in repository {} has its anchor confirmed on Bitcoin with at least {} \
             confirmation(s): {} looked at, {untagged} of them without txid/payload tags (-v says why each \
             was skipped)",
            r.label(),
            c.confirmations,
            mine.len(),
        ),
        status: ailee_core::ExitStatus::Operational,
    })
}

/// `--verify`: restic's check (all data with `read_data`), then a restore to a
/// scratch directory inside `scratch_parent` and our own checks; with
/// `chain`, the newest anchor checked on Bitcoin ([`check_on_chain`]).
/// The scratch directory is `scratch_parent/<prefix><pid>`.
pub fn verify(
    r: &Restic,
    which: &str,
    nodes: &Nodes,
    read_data: bool,
    scratch_parent: &Path,
    prefix: &str,
    chain: Option<&ChainCheck>,
) -> Result<VerifyReport> {
    restic::check_which(which)?;
    let mut args = vec!["check"];
    if read_data {
        args.push("--read-data");
    }
    let o = r.run(&args)?;
    if !o.ok() {
        let msg = format!("{}\n{}", String::from_utf8_lossy(&o.stdout), o.stderr);
        return Err(if restic::looks_corrupt(&msg) {
            Error::Integrity(format!("restic check: the repository is damaged: {}", msg.trim()))
        } else {
            r.failure("check", &o)
        });
    }
    let dir = scratch_parent.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    io(&dir, std::fs::create_dir_all(&dir))?;
    let res = (|| {
        let snap = restore_to(r, which, nodes, &dir)?;
        let (n, failing) = failing_snapshots(&dir.join("l2_snapshots.dat"), 20)?;
        if let Some(c) = snap.tag_u64("snapshots") {
            if c != n {
                return Err(Error::Integrity(format!(
                    "backup {}: {n} complete snapshots restored, the backup recorded {c}",
                    snap.short()
                )));
            }
        }
        let on_chain = chain.map(|c| check_on_chain(&dir, c)).transpose()?;
        Ok(VerifyReport {
            snapshot: snap.id.clone(),
            root: snap.tag("root").unwrap_or_default().to_string(),
            snapshots: n,
            failing,
            on_chain,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Removes scratch directories left by killed runs (the caller holds the lock).
pub fn reap(dir: &Path, prefix: &str) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Removes `.NAME.ailee-tmp.*` files and directories left in `dir` by killed
/// runs (the caller holds the lock, so none belongs to a live run of ours).
pub fn reap_tmp(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with('.') && n.contains(".ailee-tmp.") {
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
}

/// fsyncs every file and directory below `p` (and `p`).
pub fn sync_tree(p: &Path) -> Result<()> {
    let m = io(p, std::fs::symlink_metadata(p))?;
    if m.is_dir() {
        for e in io(p, std::fs::read_dir(p))? {
            sync_tree(&io(p, e)?.path())?;
        }
    }
    if m.is_dir() || m.is_file() {
        fsync_path(p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Region size of the tests: over the 64 KiB tail every check reads.
    const R: u64 = 128 << 10;

    /// A live file of 10 regions and a spare holding its first 8½.
    fn copies(dir: &Path) -> (File, File, u64) {
        let live: Vec<u8> = (0..10 * R).map(|i| (i * 7 % 251) as u8).collect();
        let have = (8 * R + R / 2) as usize;
        std::fs::write(dir.join("live"), &live).unwrap();
        std::fs::write(dir.join("spare"), &live[..have]).unwrap();
        let open = |n: &str| File::options().read(true).write(true).open(dir.join(n)).unwrap();
        (open("live"), open("spare"), have as u64)
    }

    #[test]
    fn a_changed_byte_in_the_region_being_extended_is_found_at_once() {
        let d = tempfile::tempdir().unwrap();
        let (live, spare, have) = copies(d.path());
        assert!(spare_holds(d.path(), &spare, &live, have, R, 2).unwrap());
        // Before the last 64 KiB, in the region the append extends.
        spare.write_all_at(&[0xff], 8 * R + 3).unwrap();
        assert!(!spare_holds(d.path(), &spare, &live, have, R, 2).unwrap());
    }

    /// An older region is compared again within a bounded number of runs:
    /// the window (2 regions here) moves by half its size per run, and the
    /// spare and the runbook copy take turns, so each copy sees every region.
    #[test]
    fn a_changed_byte_in_an_older_region_is_found_by_the_moving_window() {
        let d = tempfile::tempdir().unwrap();
        let (live, spare, have) = copies(d.path());
        spare.write_all_at(&[0xff], 5 * R + 9).unwrap();
        let runs = (0..8)
            .take_while(|_| spare_holds(d.path(), &spare, &live, have, R, 2).unwrap())
            .count();
        // Windows [0,1], [1,2], [2,3], [3,4], [4,5]: the fifth run finds it.
        assert_eq!(runs, 4);
        // Every region is covered within done / (window / 2) runs.
        let (live, spare, have) = copies(d.path());
        std::fs::remove_file(d.path().join(SCRUB_NAME)).unwrap();
        for bad in 0..8u64 {
            spare.write_all_at(&[0xee], bad * R).unwrap();
            let found = (0..8).any(|_| !spare_holds(d.path(), &spare, &live, have, R, 2).unwrap());
            assert!(found, "region {bad}");
            spare.write_all_at(&[live_byte(&live, bad * R)], bad * R).unwrap();
        }
    }

    fn live_byte(f: &File, at: u64) -> u8 {
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        b[0]
    }
}
