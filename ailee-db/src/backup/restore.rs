//! A restore that cannot lose the operator's state (SPEC §5).
//!
//! 1. Refuses while any process holds `reorg_db/LOCK` (the node, a resync):
//!    we take the same POSIX lock RocksDB takes and hold it to the end.
//! 2. Restores the backup into a staging directory beside the live files
//!    (`D/.ailee-restore.<pid>`), reassembles and verifies it there, gives it
//!    the owner, group and mode of the files it replaces, fsyncs it.
//! 3. Writes a journal (`D/.ailee_restore.journal`), then swaps each live
//!    item with its staged one by `renameat2(RENAME_EXCHANGE)`: at every
//!    instant both `l2_snapshots.dat` and `reorg_db` exist and each is wholly
//!    the old or wholly the restored version — never a partial file. The
//!    journal records, for each staged item, what identifies its content at
//!    swap time: dev and inode, and for the file its size and mtime (in
//!    nanoseconds), for the database a SHA-256 of its entries (names, types,
//!    sizes, mtimes, inodes).
//! 4. Marks the journal committed, moves the old items into a new, unique
//!    `D/recovery_<epoch>.<n>/`, removes the journal.
//!
//! Any error or SIGINT/SIGTERM/SIGHUP before the commit rolls the swap back.
//! After a SIGKILL the journal says what was done, and [`settle`] (the next
//! run, before anything else) settles it:
//!
//! - only under `reorg_db/LOCK` of the live path (after an exchange that is
//!   the staged database): while any process holds it (the node, started at
//!   boot after the kill) nothing is touched, the journal stays and settling
//!   is refused with [`DbError::Locked`], as a fresh restore is;
//! - a committed swap is finished (the old items go to the recovery
//!   directory); an uncommitted one is rolled back;
//! - a rollback deletes a staged item only when it is exactly as the journal
//!   recorded it. One that changed since it was swapped in (the node appended
//!   to the restored `l2_snapshots.dat` or wrote into the restored `reorg_db`)
//!   goes to `D/<the journal's recovery_<epoch>.<n>>/after-restore/ITEM`, and
//!   the returned message names that path; anything unsure counts as changed
//!   (a v1 journal, which has no fingerprints, keeps every staged item). A
//!   stage item that is not the staged one (the live one was replaced after
//!   the exchange) is the previous state: it goes to that directory as ITEM.
//!   The stage is renamed to `….remove` before it is deleted, so a kill while
//!   deleting it never makes a half-deleted staged item look "changed".
//!
//! [`pending_journal`] says whether a journal waits to be settled (a backup
//! of a data directory in that state would save a half-swapped state).

use super::restic::Restic;
use super::{check_data_dir, restore_to, sync_tree};
use ailee_core::records::DbError;
use ailee_core::{Error, Result};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The items a restore replaces.
pub const ITEMS: [&str; 2] = ["l2_snapshots.dat", "reorg_db"];
const JOURNAL: &str = ".ailee_restore.journal";
const STAGE_PREFIX: &str = ".ailee-restore.";

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub snapshot: String,
    pub root: String,
    /// Where the previous state went (None when there was none).
    pub recovery: Option<PathBuf>,
    /// Problems after the restore was committed (it stands).
    pub warnings: Vec<String>,
    /// With `--bitcoin-rpc`: the restored newest anchor, proven on Bitcoin.
    pub on_chain: Option<super::ChainProof>,
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(path, e))
}

/// Takes RocksDB's lock on `db/LOCK` (a POSIX record lock, as RocksDB and
/// `fcntl.lockf` take it). `None` when there is no database there.
pub fn lock_db(db: &Path) -> Result<Option<File>> {
    let p = db.join("LOCK");
    // No database (or not a directory: a damaged one being replaced): no lock.
    if !std::fs::symlink_metadata(db).is_ok_and(|m| m.is_dir()) {
        return Ok(None);
    }
    if !std::fs::symlink_metadata(&p).map_or(true, |m| m.is_file()) {
        return Err(Error::Usage(format!("{}: not a regular file", p.display())));
    }
    let f = match std::fs::OpenOptions::new().read(true).write(true).open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    match rustix::fs::fcntl_lock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {
            Err(Error::Db(DbError::Locked { path: db.to_path_buf() }))
        }
        Err(e) => Err(Error::io(&p, e.into())),
    }
}

fn ino(p: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Where a rollback keeps a staged item that changed after it was swapped in
/// (inside the journal's recovery directory).
const AFTER: &str = "after-restore";

/// What identifies a staged item's content at swap time (its dev and inode
/// are in [`Journal::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A file: its size and mtime (seconds, nanoseconds).
    File { size: u64, sec: i64, nsec: i64 },
    /// A directory: SHA-256 (hex) of its entries, recursively: relative
    /// name, type, size, mtime and inode of each.
    Tree(String),
}

impl Seen {
    fn text(&self) -> String {
        match self {
            Seen::File { size, sec, nsec } => format!("file:{size}:{sec}.{nsec:09}"),
            Seen::Tree(h) => format!("tree:{h}"),
        }
    }

    fn parse(s: &str) -> Option<Seen> {
        if let Some(h) = s.strip_prefix("tree:") {
            let hex = h.len() == 64 && h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            return hex.then(|| Seen::Tree(h.to_string()));
        }
        let (size, t) = s.strip_prefix("file:")?.split_once(':')?;
        let (sec, nsec) = t.split_once('.')?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
        let nsec_ok = nsec.len() == 9 && digits(nsec);
        let sec_ok = digits(sec.strip_prefix('-').unwrap_or(sec));
        if !(digits(size) && sec_ok && nsec_ok) {
            return None;
        }
        Some(Seen::File {
            size: size.parse().ok()?,
            sec: sec.parse().ok()?,
            nsec: nsec.parse().ok()?,
        })
    }

    /// The fingerprint of `p` now; `None` when it cannot be taken (which
    /// a rollback treats as "changed").
    fn of(p: &Path) -> Option<Seen> {
        let m = std::fs::symlink_metadata(p).ok()?;
        if m.is_file() {
            return Some(Seen::File {
                size: m.size(),
                sec: m.mtime(),
                nsec: m.mtime_nsec(),
            });
        }
        if !m.is_dir() {
            return None;
        }
        use sha2::{Digest, Sha256};
        // Metadata only: opening reorg_db/LOCK and closing it would drop our
        // own POSIX lock on it.
        fn walk(dir: &Path, rel: &str, h: &mut Sha256) -> Option<()> {
            let mut es: Vec<(String, std::fs::Metadata)> = Vec::new();
            for e in std::fs::read_dir(dir).ok()? {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                es.push((name, e.metadata().ok()?));
            }
            es.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, m) in es {
                let path = format!("{rel}/{name}");
                let kind = if m.is_dir() {
                    'd'
                } else if m.is_file() {
                    'f'
                } else {
                    'o'
                };
                h.update(
                    format!(
                        "{kind} {} {} {}.{:09} {}\n",
                        path.len(),
                        m.size(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.ino()
                    )
                    .as_bytes(),
                );
                h.update(path.as_bytes());
                if m.is_dir() {
                    walk(&dir.join(&name), &path, h)?;
                }
            }
            Some(())
        }
        let mut h = Sha256::new();
        walk(p, "", &mut h)?;
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Some(Seen::Tree(hex))
    }
}

/// The journal of a swap in progress.
#[derive(Debug, Clone, PartialEq)]
struct Journal {
    committed: bool,
    stage: String,
    recovery: String,
    /// (dev, inode) of each staged item, by [`ITEMS`] order.
    new: [Option<(u64, u64)>; 2],
    /// Each staged item's content at swap time, by [`ITEMS`] order; `None`
    /// when not recorded (a v1 journal, or it could not be taken): changed.
    seen: [Option<Seen>; 2],
    /// Read from a v1 journal (no fingerprints).
    v1: bool,
}

impl Journal {
    fn text(&self) -> String {
        let id = |x: Option<(u64, u64)>| x.map_or("-".to_string(), |(d, i)| format!("{d}:{i}"));
        let seen = |x: &Option<Seen>| x.as_ref().map_or("-".to_string(), Seen::text);
        format!(
            "ailee_restore journal v2\nphase {}\nstage {}\nrecovery {}\nnew {} {}\nseen {} {}\n",
            if self.committed { "committed" } else { "swap" },
            self.stage,
            self.recovery,
            id(self.new[0]),
            id(self.new[1]),
            seen(&self.seen[0]),
            seen(&self.seen[1])
        )
    }

    /// Reads a v2 journal, or a v1 one (without the `seen` line).
    fn parse(s: &str) -> Option<Journal> {
        let mut l = s.lines();
        let v1 = match l.next()? {
            "ailee_restore journal v1" => true,
            "ailee_restore journal v2" => false,
            _ => return None,
        };
        let committed = match l.next()?.strip_prefix("phase ")? {
            "committed" => true,
            "swap" => false,
            _ => return None,
        };
        let stage = l.next()?.strip_prefix("stage ")?.to_string();
        let recovery = l.next()?.strip_prefix("recovery ")?.to_string();
        let mut ids = l.next()?.strip_prefix("new ")?.split(' ').map(|x| {
            if x == "-" {
                Some(None)
            } else {
                let (d, i) = x.split_once(':')?;
                Some(Some((d.parse().ok()?, i.parse().ok()?)))
            }
        });
        let new = [ids.next()??, ids.next()??];
        if ids.next().is_some() {
            return None;
        }
        let seen = if v1 {
            [None, None]
        } else {
            let mut fs = l.next()?.strip_prefix("seen ")?.split(' ').map(|x| {
                if x == "-" {
                    Some(None)
                } else {
                    Seen::parse(x).map(Some)
                }
            });
            let seen = [fs.next()??, fs.next()??];
            if fs.next().is_some() {
                return None;
            }
            seen
        };
        if l.next().is_some() {
            return None;
        }
        // Names only, inside the data directory.
        let plain = |n: &str| !n.is_empty() && !n.contains('/') && n != "." && n != "..";
        (plain(&stage) && plain(&recovery)).then_some(Journal {
            committed,
            stage,
            recovery,
            new,
            seen,
            v1,
        })
    }

    fn write(&self, d: &Path) -> Result<()> {
        let mut p = ailee_core::atomic::Pending::create(&d.join(JOURNAL), true)?;
        p.write_all(self.text().as_bytes())?;
        p.commit()
    }

    /// Whether `p` is the staged item `k` exactly as it was at swap time.
    fn unchanged(&self, k: usize, p: &Path) -> bool {
        self.new[k].is_some() && ino(p) == self.new[k] && self.seen[k].is_some() && Seen::of(p) == self.seen[k]
    }

    /// Where a rollback keeps the staged item `k` that changed after the
    /// swap, and where it keeps the previous item `k` when the live one was
    /// replaced after the exchange.
    fn kept(&self, d: &Path, k: usize) -> (PathBuf, PathBuf) {
        let rec = d.join(&self.recovery);
        (rec.join(AFTER).join(ITEMS[k]), rec.join(ITEMS[k]))
    }
}

/// Swaps `a` and `b` (files or directories) in one step.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    ailee_core::atomic::rename_dir(a, b, true)
}

/// Renames `a` to `b`, which must not exist.
fn rename_noreplace(a: &Path, b: &Path) -> Result<()> {
    ailee_core::atomic::rename_dir(a, b, false)
}

fn create_dir_if_missing(p: &Path) -> Result<()> {
    match std::fs::create_dir(p) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::io(p, e)),
        _ => Ok(()),
    }
}

/// Undoes an uncommitted swap: every live item that is a staged one goes
/// back into the stage (the old one comes back by the same exchange). A
/// staged item that changed since the swap, and an item of the stage that
/// is not the staged one, are moved into the recovery directory instead of
/// being deleted with the stage. Returns what was kept, and where.
fn roll_back(d: &Path, j: &Journal) -> Result<Vec<String>> {
    let stage = d.join(&j.stage);
    for (k, item) in ITEMS.iter().enumerate() {
        let (live, staged) = (d.join(item), stage.join(item));
        if j.new[k].is_some() && ino(&live) == j.new[k] {
            if exists(&staged) {
                exchange(&staged, &live)?;
            } else {
                rename_noreplace(&live, &staged)?;
            }
        }
    }
    ailee_core::atomic::sync_dir(d)?;
    if exists(&stage) {
        ailee_core::atomic::sync_dir(&stage)?;
        let rec = d.join(&j.recovery);
        let mut moved = false;
        for (k, item) in ITEMS.iter().enumerate() {
            let staged = stage.join(item);
            if !exists(&staged) || j.unchanged(k, &staged) {
                continue;
            }
            let (after, previous) = j.kept(d, k);
            let to = if j.new[k].is_some() && ino(&staged) == j.new[k] {
                after
            } else {
                previous
            };
            create_dir_if_missing(&rec)?;
            if let Some(parent) = to.parent().filter(|p| *p != rec) {
                create_dir_if_missing(parent)?;
                ailee_core::atomic::sync_dir(&rec)?;
            }
            rename_noreplace(&staged, &to)?;
            moved = true;
        }
        if moved {
            ailee_core::atomic::sync_dir(&stage)?;
            if exists(&rec.join(AFTER)) {
                ailee_core::atomic::sync_dir(&rec.join(AFTER))?;
            }
            ailee_core::atomic::sync_dir(&rec)?;
            ailee_core::atomic::sync_dir(d)?;
        }
    }
    finish(d, j)?;
    // From what is there (a settle killed after moving still reports it).
    let mut notes = Vec::new();
    for (k, item) in ITEMS.iter().enumerate() {
        let (after, previous) = j.kept(d, k);
        if exists(&after) {
            notes.push(if j.v1 {
                format!(
                    "the restored {item} may have been written to after the interrupted restore \
                     (its journal predates fingerprints); kept in {}",
                    after.display()
                )
            } else {
                format!(
                    "the node wrote to the restored {item} after the interrupted restore; kept in {}",
                    after.display()
                )
            });
        }
        if exists(&previous) {
            notes.push(format!(
                "{item} was replaced after the interrupted restore (the replacement is left in place); \
                 the {item} from before that restore is kept in {}",
                previous.display()
            ));
        }
    }
    Ok(notes)
}

/// Completes a committed swap: the old items go into the recovery directory.
fn roll_forward(d: &Path, j: &Journal) -> Result<()> {
    let (stage, rec) = (d.join(&j.stage), d.join(&j.recovery));
    for item in ITEMS {
        let old = stage.join(item);
        if exists(&old) {
            if !exists(&rec) {
                io(&rec, std::fs::create_dir(&rec))?;
            }
            rename_noreplace(&old, &rec.join(item))?;
        }
    }
    if exists(&rec) {
        ailee_core::atomic::sync_dir(&rec)?;
    }
    finish(d, j)
}

/// Removes the stage (what is left in it is to be deleted), an empty
/// recovery directory and the journal. The stage is first renamed to
/// `STAGE.remove`, so a kill while deleting never leaves a half-deleted
/// staged item under the name the journal gives.
fn finish(d: &Path, j: &Journal) -> Result<()> {
    let stage = d.join(&j.stage);
    let trash = d.join(format!("{}.remove", j.stage));
    if exists(&stage) {
        if exists(&trash) {
            io(&trash, std::fs::remove_dir_all(&trash))?;
        }
        rename_noreplace(&stage, &trash)?;
        ailee_core::atomic::sync_dir(d)?;
    }
    if exists(&trash) {
        io(&trash, std::fs::remove_dir_all(&trash))?;
    }
    let rec = d.join(&j.recovery);
    if std::fs::read_dir(&rec).is_ok_and(|mut r| r.next().is_none()) {
        let _ = std::fs::remove_dir(&rec);
    }
    ailee_core::atomic::sync_dir(d)?;
    let jp = d.join(JOURNAL);
    if exists(&jp) {
        io(&jp, std::fs::remove_file(&jp))?;
    }
    ailee_core::atomic::sync_dir(d)
}

/// The restore journal of `d` when there is one: a restore was interrupted
/// and [`settle`] has not settled it yet.
pub fn pending_journal(d: &Path) -> Option<PathBuf> {
    let p = d.join(JOURNAL);
    exists(&p).then_some(p)
}

/// Settles the journal of a run that was killed; returns what was done.
///
/// Takes `reorg_db/LOCK` of the live database first and holds it until
/// settled: while any process holds it, nothing is touched and the result
/// is [`DbError::Locked`]. The caller holds the data directory's lock.
pub fn settle(d: &Path) -> Result<Option<String>> {
    let Some(jp) = pending_journal(d) else {
        return Ok(None);
    };
    // The live path: after an exchange it is the staged database, which
    // the node may have opened since.
    let _live = lock_db(&d.join("reorg_db"))?;
    let s = match std::fs::read_to_string(&jp) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&jp, e)),
    };
    let Some(j) = Journal::parse(&s) else {
        // A journal is written atomically: an unreadable one is not ours to guess.
        return Err(Error::Integrity(format!(
            "{}: unreadable restore journal; inspect {} and the .ailee-restore.* directories by hand",
            jp.display(),
            d.display()
        )));
    };
    // And the stage's: nothing may hold the database that is there either.
    let _staged = lock_db(&d.join(&j.stage).join("reorg_db"))?;
    if j.committed {
        roll_forward(d, &j)?;
        Ok(Some(format!(
            "finished an interrupted restore: its previous state is in {}",
            d.join(&j.recovery).display()
        )))
    } else {
        let notes = roll_back(d, &j)?;
        let mut m = "rolled back an interrupted restore: the state it found is back in place".to_string();
        for n in notes {
            m.push('\n');
            m.push_str(&n);
        }
        Ok(Some(m))
    }
}

/// A new, unique recovery directory name (created later, under the journal).
fn recovery_name(d: &Path) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |x| x.as_secs());
    let mut n = 1u64;
    loop {
        let name = format!("recovery_{t}.{n}");
        if !exists(&d.join(&name)) {
            return name;
        }
        n += 1;
    }
}

/// Gives `path` (recursively for a directory) the owner, group and mode of
/// `like`; files inside a directory get the owner of `like` and the mode of
/// `like_file` when given.
fn adopt(path: &Path, uid: u32, gid: u32, mode: u32, file_mode: Option<u32>) -> Result<()> {
    let set = |p: &Path, mode: u32| -> Result<()> {
        rustix::fs::chown(
            p,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| Error::io(p, e.into()))?;
        io(
            p,
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777)),
        )
    };
    set(path, mode)?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for e in io(path, std::fs::read_dir(path))? {
            let e = io(path, e)?;
            let m = io(&e.path(), e.metadata())?;
            if m.is_file() {
                set(&e.path(), file_mode.unwrap_or(m.mode()))?;
            }
        }
    }
    Ok(())
}

/// Gives the staged items the owner, group and mode of the live ones (or of
/// the data directory when there is no live one).
fn keep_ownership(d: &Path, stage: &Path) -> Result<()> {
    let dm = io(d, std::fs::metadata(d))?;
    for item in ITEMS {
        let (live, staged) = (d.join(item), stage.join(item));
        let lm = std::fs::symlink_metadata(&live).ok();
        let sm = io(&staged, std::fs::symlink_metadata(&staged))?;
        let (uid, gid) = lm.as_ref().map_or((dm.uid(), dm.gid()), |m| (m.uid(), m.gid()));
        let mode = lm.as_ref().map_or(sm.mode(), |m| m.mode());
        let file_mode = if sm.is_dir() {
            std::fs::metadata(live.join("CURRENT")).ok().map(|m| m.mode())
        } else {
            None
        };
        adopt(&staged, uid, gid, mode, file_mode)?;
    }
    Ok(())
}

/// Refuses a snapshot file that is not a regular file; removes the stages
/// and journal drafts of killed runs (the caller holds the locks).
fn clear_the_way(d: &Path) -> Result<()> {
    if exists(&d.join("l2_snapshots.dat"))
        && !std::fs::symlink_metadata(d.join("l2_snapshots.dat")).is_ok_and(|m| m.is_file())
    {
        return Err(Error::Usage(format!(
            "{}: not a regular file; refusing to replace it",
            d.join("l2_snapshots.dat").display()
        )));
    }
    super::reap(d, STAGE_PREFIX);
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".{JOURNAL}.ailee-tmp."))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Exchanges the staged items with the live ones under the journal `j`;
/// on any failure rolls back (see [`failed_swap`]).
fn swap_in(d: &Path, stage: &Path, j: &Journal) -> Result<()> {
    let swapped = (|| {
        j.write(d)?;
        for item in ITEMS {
            ailee_core::cancel::check()?;
            let (live, staged) = (d.join(item), stage.join(item));
            ailee_core::atomic::rename_dir(&staged, &live, exists(&live))?;
        }
        ailee_core::atomic::sync_dir(stage)?;
        ailee_core::atomic::sync_dir(d)?;
        ailee_core::cancel::check()
    })();
    // We hold both locks: nothing changed the staged items, so nothing
    // is kept aside here (and if something were, it is kept, not lost).
    swapped.map_err(|e| failed_swap(d, j, e))
}

/// The error `e` of a swap, after rolling it back by the journal `j`.
fn failed_swap(d: &Path, j: &Journal, e: Error) -> Error {
    match roll_back(d, j) {
        Ok(_) => e,
        Err(r) => Error::Usage(format!(
            "{e}; rolling back failed too: {r} — the journal {} says what is where",
            d.join(JOURNAL).display()
        )),
    }
}

/// Restores the backup `which` (`latest` or an id) into `d` (the caller
/// holds the data directory's lock and has settled any journal with [`settle`]).
/// With `chain`, the staged backup's newest anchor must be proven on Bitcoin
/// ([`super::check_on_chain`]) before anything live changes.
pub fn restore(
    r: &Restic,
    d: &Path,
    which: &str,
    nodes: &super::Nodes,
    chain: Option<&super::ChainCheck>,
) -> Result<RestoreReport> {
    check_data_dir(d)?;
    super::restic::check_which(which)?;
    let mut report = RestoreReport::default();
    // 1. Refuse while the database is in use; hold its lock to the end.
    let _old_lock = lock_db(&d.join("reorg_db"))?;
    clear_the_way(d)?;
    // 2. Stage and verify.
    let stage_name = format!("{STAGE_PREFIX}{}", std::process::id());
    let stage = d.join(&stage_name);
    io(&stage, std::fs::create_dir(&stage))?;
    let staged = (|| {
        let snap = restore_to(r, which, nodes, &stage)?;
        report.snapshot = snap.id.clone();
        report.root = snap.tag("root").unwrap_or_default().to_string();
        report.on_chain = chain.map(|c| super::check_on_chain(&stage, c)).transpose()?;
        ailee_core::cancel::check()?;
        keep_ownership(d, &stage)?;
        sync_tree(&stage)?;
        ailee_core::atomic::sync_dir(d)?;
        ailee_core::cancel::check()?;
        lock_db(&stage.join("reorg_db"))
    })();
    let _new_lock = match staged {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
    };
    // 3. Swap under the journal.
    let j = Journal {
        committed: false,
        stage: stage_name,
        recovery: recovery_name(d),
        new: [ino(&stage.join(ITEMS[0])), ino(&stage.join(ITEMS[1]))],
        // What a rollback after a kill checks before it deletes a staged
        // item: nothing writes to them between here and the exchanges.
        seen: [Seen::of(&stage.join(ITEMS[0])), Seen::of(&stage.join(ITEMS[1]))],
        v1: false,
    };
    swap_in(d, &stage, &j)?;
    // 4. Commit: once the journal says so, the restore is done whatever comes.
    let mut c = j.clone();
    c.committed = true;
    if let Err(e) = c.write(d) {
        // Whether the committed journal landed is unknown: say "swap" again
        // before undoing it, so a kill during the rollback is settled the same way.
        let _ = j.write(d);
        return Err(failed_swap(d, &j, e));
    }
    let had_old = ITEMS.iter().any(|i| exists(&stage.join(i)));
    if had_old {
        report.recovery = Some(d.join(&c.recovery));
    }
    if let Err(e) = roll_forward(d, &c) {
        report.warnings.push(format!(
            "the backup is restored, but moving the previous state into {} did not finish ({e}); \
             the next ailee_restore finishes it (the journal {} says what is where)",
            d.join(&c.recovery).display(),
            d.join(JOURNAL).display()
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_refuses_paths() {
        let tree = Seen::Tree("0123456789abcdef".repeat(4));
        let file = Seen::File {
            size: 1234,
            sec: 1_700_000_000,
            nsec: 5,
        };
        let j = Journal {
            committed: false,
            stage: ".ailee-restore.42".into(),
            recovery: "recovery_1700000000.2".into(),
            new: [Some((2049, 77)), Some((2049, 78))],
            seen: [Some(file.clone()), Some(tree.clone())],
            v1: false,
        };
        assert!(j.text().contains("seen file:1234:1700000000.000000005 tree:0123"));
        assert_eq!(Journal::parse(&j.text()), Some(j.clone()));
        let c = Journal {
            committed: true,
            ..j.clone()
        };
        assert_eq!(Journal::parse(&c.text()), Some(c.clone()));
        let none = Journal {
            new: [Some((2049, 77)), None],
            seen: [Some(file), None],
            ..j.clone()
        };
        assert_eq!(Journal::parse(&none.text()), Some(none.clone()));
        // A v1 journal (before fingerprints) is still read: nothing seen.
        let v1 = "ailee_restore journal v1\nphase swap\nstage .ailee-restore.42\n\
                  recovery recovery_1700000000.2\nnew 2049:77 2049:78\n";
        let old = Journal::parse(v1).unwrap();
        assert!(old.v1 && old.seen == [None, None] && old.new == j.new, "{old:?}");
        for bad in [
            c.text().replace(".ailee-restore.42", "../etc"),
            c.text().replace(".ailee-restore.42", "/tmp/x"),
            c.text().replace("recovery_1700000000.2", "a/b"),
            c.text().replace("recovery_1700000000.2", ".."),
            c.text().replace("phase committed", "phase maybe"),
            c.text().replace("2049:77", "x:y"),
            c.text().replace("journal v2", "journal v3"),
            c.text().replace("2049:78", "2049:78 1:2"),
            c.text().replace("tree:0123", "tree:/123"),
            c.text().replace("tree:0123", "tree:0A23"),
            c.text().replace("tree:0123", "tree:01234"),
            c.text().replace("tree:0123", "dir:0123"),
            c.text().replace(".000000005", ".5"),
            c.text().replace(":1234:", ":-1234:"),
            c.text().replace("file:1234", "file:../1234"),
            c.text().replace("seen ", "seen - - "),
            c.text() + "extra\n",
            // v2 without its fingerprints, v1 with them.
            c.text().lines().take(5).map(|l| format!("{l}\n")).collect(),
            c.text().replace("journal v2", "journal v1"),
            String::new(),
        ] {
            assert_eq!(Journal::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn fingerprints_see_writes_but_not_renames() {
        let t = tempfile::tempdir().unwrap();
        let (f, db) = (t.path().join("f"), t.path().join("db"));
        std::fs::write(&f, b"snapshot").unwrap();
        std::fs::create_dir_all(db.join("sub")).unwrap();
        std::fs::write(db.join("CURRENT"), b"MANIFEST-1\n").unwrap();
        std::fs::write(db.join("LOCK"), b"").unwrap();
        let (sf, sd) = (Seen::of(&f).unwrap(), Seen::of(&db).unwrap());
        assert!(matches!(sf, Seen::File { size: 8, .. }) && matches!(sd, Seen::Tree(_)));
        assert_eq!(Seen::parse(&sf.text()), Some(sf.clone()));
        assert_eq!(Seen::parse(&sd.text()), Some(sd.clone()));
        // Moved (as the swap moves them): the same.
        let (f2, db2) = (t.path().join("f2"), t.path().join("db2"));
        std::fs::rename(&f, &f2).unwrap();
        std::fs::rename(&db, &db2).unwrap();
        assert_eq!(Seen::of(&f2), Some(sf.clone()));
        assert_eq!(Seen::of(&db2), Some(sd.clone()));
        // Appended to, an entry added (also in a subdirectory), removed: changed.
        let mut a = std::fs::OpenOptions::new().append(true).open(&f2).unwrap();
        std::io::Write::write_all(&mut a, b"+").unwrap();
        assert_ne!(Seen::of(&f2), Some(sf));
        let changes: [fn(&Path); 3] = [
            |d: &Path| std::fs::write(d.join("000004.log"), b"x").unwrap(),
            |d: &Path| std::fs::write(d.join("sub/x"), b"").unwrap(),
            |d: &Path| std::fs::remove_file(d.join("CURRENT")).unwrap(),
        ];
        for change in changes {
            change(&db2);
            let now = Seen::of(&db2);
            assert_ne!(now, Some(sd.clone()));
        }
        assert_eq!(Seen::of(&t.path().join("missing")), None);
    }

    #[test]
    fn backup_names_are_latest_or_hex() {
        use crate::backup::restic::check_which;
        for ok in ["latest", "ab12", &"f".repeat(64)] {
            assert!(check_which(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "LATEST x", "-r", &"f".repeat(65), "12 34"] {
            assert!(check_which(bad).is_err(), "{bad}");
        }
    }
}
