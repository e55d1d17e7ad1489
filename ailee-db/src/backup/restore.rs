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
//!    the old or wholly the restored version — never a partial file.
//! 4. Marks the journal committed, moves the old items into a new, unique
//!    `D/recovery_<epoch>.<n>/`, removes the journal.
//!
//! Any error or SIGINT/SIGTERM/SIGHUP before the commit rolls the swap back.
//! After a SIGKILL the journal says what was done: the next run rolls an
//! uncommitted swap back (or finishes a committed one) before it starts.

use super::restic::Restic;
use super::{check_data_dir, restore_to, sync_tree};
use crate::{Error, Result};
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
            Err(Error::Locked { path: db.to_path_buf() })
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

/// The journal of a swap in progress.
#[derive(Debug, Clone, PartialEq)]
struct Journal {
    committed: bool,
    stage: String,
    recovery: String,
    /// (dev, inode) of each staged item, by [`ITEMS`] order.
    new: [Option<(u64, u64)>; 2],
}

impl Journal {
    fn text(&self) -> String {
        let id = |x: Option<(u64, u64)>| x.map_or("-".to_string(), |(d, i)| format!("{d}:{i}"));
        format!(
            "ailee_restore journal v1\nphase {}\nstage {}\nrecovery {}\nnew {} {}\n",
            if self.committed { "committed" } else { "swap" },
            self.stage,
            self.recovery,
            id(self.new[0]),
            id(self.new[1])
        )
    }

    fn parse(s: &str) -> Option<Journal> {
        let mut l = s.lines();
        if l.next()? != "ailee_restore journal v1" {
            return None;
        }
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
        // Names only, inside the data directory.
        let plain = |n: &str| !n.is_empty() && !n.contains('/') && n != "." && n != "..";
        (plain(&stage) && plain(&recovery)).then_some(Journal {
            committed,
            stage,
            recovery,
            new,
        })
    }

    fn write(&self, d: &Path) -> Result<()> {
        let mut p = crate::atomic::Pending::create(&d.join(JOURNAL), true)?;
        p.write_all(self.text().as_bytes())?;
        p.commit()
    }
}

fn exchange(a: &Path, b: &Path) -> Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| Error::io(b, e.into()))
}

fn rename_noreplace(a: &Path, b: &Path) -> Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(|e| Error::io(b, e.into()))
}

/// Undoes an uncommitted swap: every live item that is a staged one goes
/// back into the stage (the old one comes back by the same exchange).
fn roll_back(d: &Path, j: &Journal) -> Result<()> {
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
    crate::atomic::sync_dir(d)?;
    if exists(&stage) {
        crate::atomic::sync_dir(&stage)?;
    }
    finish(d, j)
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
        crate::atomic::sync_dir(&rec)?;
    }
    finish(d, j)
}

/// Removes the stage, an empty recovery directory and the journal.
fn finish(d: &Path, j: &Journal) -> Result<()> {
    let stage = d.join(&j.stage);
    if exists(&stage) {
        io(&stage, std::fs::remove_dir_all(&stage))?;
    }
    let rec = d.join(&j.recovery);
    if std::fs::read_dir(&rec).is_ok_and(|mut r| r.next().is_none()) {
        let _ = std::fs::remove_dir(&rec);
    }
    crate::atomic::sync_dir(d)?;
    let jp = d.join(JOURNAL);
    if exists(&jp) {
        io(&jp, std::fs::remove_file(&jp))?;
    }
    crate::atomic::sync_dir(d)
}

/// Settles the journal of a run that was killed; returns what was done.
pub fn settle(d: &Path) -> Result<Option<String>> {
    let jp = d.join(JOURNAL);
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
    if j.committed {
        roll_forward(d, &j)?;
        Ok(Some(format!(
            "finished an interrupted restore: its previous state is in {}",
            d.join(&j.recovery).display()
        )))
    } else {
        roll_back(d, &j)?;
        Ok(Some(
            "rolled back an interrupted restore: the state it found is back in place".into(),
        ))
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

/// Restores the backup `which` (`latest` or an id) into `d` (the caller
/// holds the data directory's lock and has settled any journal with [`settle`]).
pub fn restore(r: &Restic, d: &Path, which: &str) -> Result<RestoreReport> {
    check_data_dir(d)?;
    super::restic::check_which(which)?;
    let mut report = RestoreReport::default();
    // 1. Refuse while the database is in use; hold its lock to the end.
    let _old_lock = lock_db(&d.join("reorg_db"))?;
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
    // 2. Stage and verify.
    let stage_name = format!("{STAGE_PREFIX}{}", std::process::id());
    let stage = d.join(&stage_name);
    io(&stage, std::fs::create_dir(&stage))?;
    let staged = (|| {
        let snap = restore_to(r, which, &stage)?;
        report.snapshot = snap.id.clone();
        report.root = snap.tag("root").unwrap_or_default().to_string();
        crate::cancel::check()?;
        keep_ownership(d, &stage)?;
        sync_tree(&stage)?;
        crate::atomic::sync_dir(d)?;
        crate::cancel::check()?;
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
    };
    let swapped = (|| {
        j.write(d)?;
        for item in ITEMS {
            crate::cancel::check()?;
            let (live, staged) = (d.join(item), stage.join(item));
            if exists(&live) {
                exchange(&staged, &live)?;
            } else {
                rename_noreplace(&staged, &live)?;
            }
        }
        crate::atomic::sync_dir(&stage)?;
        crate::atomic::sync_dir(d)?;
        crate::cancel::check()
    })();
    if let Err(e) = swapped {
        return Err(match roll_back(d, &j) {
            Ok(()) => e,
            Err(r) => Error::Usage(format!(
                "{e}; rolling back failed too: {r} — the journal {} says what is where",
                d.join(JOURNAL).display()
            )),
        });
    }
    // 4. Commit: once the journal says so, the restore is done whatever comes.
    let mut c = j.clone();
    c.committed = true;
    if let Err(e) = c.write(d) {
        // Whether the committed journal landed is unknown: say "swap" again
        // before undoing it, so a kill during the rollback is settled the same way.
        let _ = j.write(d);
        return Err(match roll_back(d, &j) {
            Ok(()) => e,
            Err(r) => Error::Usage(format!(
                "{e}; rolling back failed too: {r} — the journal {} says what is where",
                d.join(JOURNAL).display()
            )),
        });
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
        let j = Journal {
            committed: false,
            stage: ".ailee-restore.42".into(),
            recovery: "recovery_1700000000.2".into(),
            new: [Some((2049, 77)), None],
        };
        assert_eq!(Journal::parse(&j.text()), Some(j.clone()));
        let c = Journal { committed: true, ..j };
        assert_eq!(Journal::parse(&c.text()), Some(c.clone()));
        for bad in [
            c.text().replace(".ailee-restore.42", "../etc"),
            c.text().replace("recovery_1700000000.2", "a/b"),
            c.text().replace("phase committed", "phase maybe"),
            c.text().replace("2049:77", "x:y"),
            String::new(),
        ] {
            assert_eq!(Journal::parse(&bad), None, "{bad}");
        }
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
