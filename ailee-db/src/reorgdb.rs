//! The reorg database (SPEC §1.4) through the `rocksdb` crate: open modes,
//! typed reads, write batches, and the read-only consistency check.
//!
//! Invariants:
//! - Both column families are always opened with descriptors carrying our
//!   options, so every SST file is written in `format_version` 5, readable by
//!   the node's older RocksDB (Debian's 7.8.3 included).
//! - Writes go through [`Batch`] with `sync`; a reorg event and the counter
//!   are one batch ([`Batch::record_reorg`]).
//! - A database held by another process is [`DbError::Locked`]; the tools never
//!   delete `LOCK` (it is an flock, released when its holder exits).

use ailee_core::{Error, Result};
use ailee_records::*;
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteOptions, DB};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// SST format every column family is written in (readable since RocksDB 6.6).
pub const SST_FORMAT_VERSION: i32 = 5;

fn cf_options() -> Options {
    let mut o = Options::default();
    let mut t = BlockBasedOptions::default();
    t.set_format_version(SST_FORMAT_VERSION);
    o.set_block_based_table_factory(&t);
    o
}

fn descriptors() -> Vec<ColumnFamilyDescriptor> {
    COLUMN_FAMILIES
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(*n, cf_options()))
        .collect()
}

/// Maps a RocksDB error to ours by its kind: `Corruption` (a checksum
/// mismatch, an SST whose size differs from the MANIFEST's, a bad CURRENT or
/// MANIFEST, a missing file the MANIFEST names) is [`DbError::Corrupt`], an
/// integrity failure; everything else (locked, I/O, permission) is
/// operational. Two cases have no kind of their own: the lock (an `IOError`
/// on `LOCK`), and a file the database names that is gone, which RocksDB
/// reports as an `IOError` "No such file or directory" while the database's
/// CURRENT is there — the database is damaged, not absent. A read-only view
/// can meet the same error because a writer renamed or deleted the file
/// meanwhile: read-only verdicts are confirmed on a stable view first
/// ([`on_a_stable_view`]).
fn db_error(path: &Path, e: rocksdb::Error) -> Error {
    let m = e.to_string();
    if m.contains("lock") && (m.contains("Resource temporarily unavailable") || m.contains("LOCK")) {
        return Error::Db(DbError::Locked {
            path: path.to_path_buf(),
        });
    }
    let corrupt = match e.kind() {
        rocksdb::ErrorKind::Corruption => true,
        rocksdb::ErrorKind::IOError | rocksdb::ErrorKind::NotFound => {
            m.contains("No such file or directory") && path.join("CURRENT").is_file()
        }
        _ => false,
    };
    if corrupt {
        Error::Db(DbError::Corrupt {
            path: path.to_path_buf(),
            message: m,
        })
    } else {
        Error::Db(DbError::Engine {
            path: path.to_path_buf(),
            message: m,
        })
    }
}

/// What is at `path`, for messages about refusing to touch it.
pub fn describe(path: &Path) -> Option<String> {
    let md = std::fs::symlink_metadata(path).ok()?;
    Some(if md.is_dir() {
        if let Some(odd) = non_regular_entry(path) {
            // Hostile input (SPEC §2): RocksDB would block opening a FIFO.
            format!("a directory whose {odd} is not a regular file")
        } else if path.join("CURRENT").exists() {
            "an existing RocksDB database".to_string()
        } else {
            match std::fs::read_dir(path).map(|d| d.count()) {
                Ok(0) => "an empty directory".to_string(),
                Ok(n) => format!("a directory with {n} entries that is not a RocksDB database"),
                Err(e) => format!("a directory that cannot be read ({e})"),
            }
        }
    } else {
        "a file, not a directory".to_string()
    })
}

/// The name of an entry of `dir` that is neither a regular file nor a
/// directory (after symlinks): a FIFO, device or socket.
fn non_regular_entry(dir: &Path) -> Option<String> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let ft = std::fs::metadata(e.path()).ok()?.file_type();
        (!ft.is_file() && !ft.is_dir()).then(|| e.file_name().to_string_lossy().into_owned())
    })
}

/// The MANIFEST that `CURRENT` names, if `CURRENT` reads as one.
fn current_manifest(path: &Path) -> Option<PathBuf> {
    let c = std::fs::read_to_string(path.join("CURRENT")).ok()?;
    let name = c.strip_suffix('\n')?;
    (name.starts_with("MANIFEST-") && !name.contains('/')).then(|| path.join(name))
}

/// How the MANIFEST is damaged, if it visibly is (empty or ends torn).
fn manifest_damage(path: &Path) -> Option<String> {
    let m = current_manifest(path)?;
    let bytes = std::fs::read(&m).ok()?;
    if bytes.is_empty() {
        Some(format!("{} is empty", m.display()))
    } else if log_tail_torn(&bytes) {
        Some(format!("{} ends in a torn record", m.display()))
    } else {
        None
    }
}

/// RocksDB writes an `OPTIONS-<n>` file naming every column family; the
/// newest one naming `cf` while the MANIFEST lacks it means MANIFEST edits
/// were lost (a database created without `cf` never names it).
fn options_name_cf(path: &Path, cf: &str) -> Option<String> {
    let newest = std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let num: u64 = n.strip_prefix("OPTIONS-")?.parse().ok()?;
            Some((num, e.path()))
        })
        .max()?;
    let text = std::fs::read_to_string(&newest.1).ok()?;
    text.contains(&format!("[CFOptions \"{cf}\"]")).then(|| {
        format!(
            "{} names it: the MANIFEST lost the edits that created it",
            newest.1.display()
        )
    })
}

fn manifest_torn(path: &Path) -> bool {
    manifest_damage(path).is_some()
}

/// Whether a RocksDB log file (the MANIFEST's format: 32 KiB blocks of
/// records with a 7-byte header — 11 for the recyclable types — and a
/// zero-filled block trailer) ends inside a record or a fragmented record.
pub fn log_tail_torn(b: &[u8]) -> bool {
    const BLOCK: usize = 32768;
    let mut pos = 0;
    let mut open_fragment = false;
    while pos < b.len() {
        let left = BLOCK - pos % BLOCK;
        if left < 7 {
            pos += left;
            continue;
        }
        if b.len() - pos < 7 {
            return true;
        }
        let len = u16::from_le_bytes([b[pos + 4], b[pos + 5]]) as usize;
        let kind = b[pos + 6];
        if kind == 0 && len == 0 {
            // Zero fill (preallocated space): the log ends here.
            return open_fragment;
        }
        let header = if matches!(kind, 5..=8 | 11 | 131) { 11 } else { 7 };
        if header + len > left || pos + header + len > b.len() {
            return true;
        }
        match kind {
            2 | 6 => open_fragment = true,
            4 | 8 => open_fragment = false,
            _ => {}
        }
        pos += header + len;
    }
    open_fragment
}

/// Whether some process holds RocksDB's `LOCK` on the database at `path`
/// (POSIX locks, read from `/proc/locks`; false where that is unavailable).
pub fn lock_held(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(path.join("LOCK")) else {
        return false;
    };
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(md.dev()),
        rustix::fs::minor(md.dev()),
        md.ino()
    );
    std::fs::read_to_string("/proc/locks").is_ok_and(|l| l.lines().any(|line| line.split_whitespace().any(|f| f == id)))
}

/// What a writer changes in the database directory when it could make a
/// read-only view fail: the entries' names (a new WAL, MANIFEST or SST; one
/// deleted after a flush or compaction), `CURRENT`'s content and the size of
/// every MANIFEST. Left out: the info logs (`LOG`, `LOG.old.*`, which
/// read-only opens rotate too) and the WALs' sizes (a running node appends
/// to its WAL all the time; an append never makes a read fail: RocksDB reads
/// a log's unfinished last record as its end).
#[derive(Debug, PartialEq, Eq)]
struct DirView {
    entries: Vec<(String, Option<u64>)>,
    current: Option<Vec<u8>>,
}

fn dir_view(path: &Path) -> Option<DirView> {
    let mut entries: Vec<(String, Option<u64>)> = std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "LOG" || name.starts_with("LOG.old.") {
                return None;
            }
            let size = name
                .starts_with("MANIFEST-")
                .then(|| e.metadata().ok().map(|m| m.len()))
                .flatten();
            Some((name, size))
        })
        .collect();
    entries.sort();
    Some(DirView {
        entries,
        current: read_small_regular(&path.join("CURRENT")),
    })
}

/// The content of a small regular file, without ever blocking: a FIFO (or
/// device) in its place is opened non-blocking and not read (hostile input,
/// SPEC §2: RocksDB's open refuses it, the view must not hang on it).
fn read_small_regular(p: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(p)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut b = Vec::new();
    f.take(1 << 16).read_to_end(&mut b).ok()?;
    Some(b)
}

/// Read-only attempts before giving up on a view that keeps changing.
const STABLE_VIEW_ATTEMPTS: u32 = 40;

/// Runs a read-only `attempt` on the database at `path` until its outcome
/// can be trusted. An outcome `doubt` names (a failure: an error, a damaged
/// report) is returned only when two attempts in a row give the same one
/// with the directory unchanged before, between and after them
/// ([`DirView`]): a read-only view races a writer that renames or deletes
/// files between RocksDB's listing and its read, and what such a race
/// shows is not seen again on a stable view. A success is returned at once.
/// When the directory changes under every attempt (a writer that never
/// pauses), no verdict is given: an operational error, never "damaged".
fn on_a_stable_view<T>(
    path: &Path,
    mut attempt: impl FnMut() -> Result<T>,
    doubt: impl Fn(&Result<T>) -> Option<String>,
) -> Result<T> {
    let mut seen: Option<(Option<DirView>, String)> = None;
    let mut last = String::new();
    for n in 0..STABLE_VIEW_ATTEMPTS {
        let before = dir_view(path);
        let outcome = attempt();
        let Some(what) = doubt(&outcome) else {
            return outcome;
        };
        let after = dir_view(path);
        if before == after {
            if seen.as_ref().is_some_and(|(v, w)| *v == after && *w == what) {
                return outcome;
            }
            seen = Some((after, what.clone()));
        } else {
            seen = None;
        }
        last = what;
        ailee_core::cancel::check()?;
        // Give the writer time to finish what it was doing: 2 ms doubling to 64 ms.
        std::thread::sleep(std::time::Duration::from_millis(2 << n.min(5)));
    }
    Err(Error::Db(DbError::Engine {
        path: path.to_path_buf(),
        message: format!(
            "the database changed under each of {STABLE_VIEW_ATTEMPTS} read-only views (another process is \
             writing it), so no verdict could be reached; try again. The last view said: {last}"
        ),
    }))
}

/// Whether a failed read-only attempt could be a race with a writer (and so
/// needs confirming): every failure but a signal, a usage error or the lock.
fn doubt_error<T>(r: &Result<T>) -> Option<String> {
    match r {
        Err(Error::Interrupted | Error::Usage(_) | Error::Db(DbError::Locked { .. })) | Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// How to open an existing database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exclusive read-write; fails with [`DbError::Locked`] while the node runs.
    ReadWrite,
    /// Read-only snapshot of the current state; works while the node runs.
    ReadOnly,
}

/// An open reorg database.
pub struct ReorgDb {
    db: DB,
    path: PathBuf,
    mode: Mode,
}

impl ReorgDb {
    /// Creates a new, empty database (both column families) at `path`, which
    /// must not exist or be an empty directory. The database is built under a
    /// temporary name and renamed into place, so an interrupted run leaves
    /// nothing at `path`.
    pub fn create(path: &Path) -> Result<()> {
        Self::create_with(path, |_| Ok(()))
    }

    /// Like [`ReorgDb::create`], filling the new database with `fill` before
    /// it is renamed into place.
    fn create_with(path: &Path, fill: impl FnOnce(&DB) -> Result<()>) -> Result<()> {
        match describe(path) {
            None => {}
            Some(d) if d == "an empty directory" => {}
            Some(d) => {
                return Err(Error::Db(DbError::NotADatabase {
                    path: path.to_path_buf(),
                    why: format!("refusing to create a database here: {d} is already there (nothing was changed)"),
                }))
            }
        }
        let parent = ailee_core::atomic::parent_dir(path);
        let name = path
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a directory name", path.display())))?;
        let tmp = parent.join(format!(".{}.ailee-tmp.{}", name.to_string_lossy(), std::process::id()));
        // A signal removes the half-built database before the process dies.
        ailee_core::cancel::create_registered(&tmp, true, || Ok(()))?;
        let result = (|| {
            let mut o = cf_options();
            o.create_if_missing(true);
            o.create_missing_column_families(true);
            let db = DB::open_cf_descriptors(&o, &tmp, descriptors()).map_err(|e| db_error(&tmp, e))?;
            fill(&db)?;
            for name in COLUMN_FAMILIES {
                if let Some(cf) = db.cf_handle(name) {
                    db.flush_cf(&cf).map_err(|e| db_error(&tmp, e))?;
                }
            }
            db.flush_wal(true).map_err(|e| db_error(&tmp, e))?;
            drop(db);
            for e in std::fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
                let p = e.map_err(|e| Error::io(&tmp, e))?.path();
                std::fs::File::open(&p)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io(&p, e))?;
            }
            ailee_core::atomic::sync_dir(&tmp)?;
            ailee_core::cancel::critical(|| {
                ailee_core::cancel::release(&tmp, || std::fs::rename(&tmp, path)).map_err(|e| Error::io(path, e))?;
                ailee_core::atomic::sync_dir(&parent)
            })
        })();
        if result.is_err() {
            ailee_core::cancel::release(&tmp, || std::fs::remove_dir_all(&tmp).ok());
        }
        result
    }

    /// Opens an existing database; never creates anything. A read-only open
    /// that fails is retried until the same failure is seen on a stable
    /// view ([`on_a_stable_view`]): beside a writer it never reports damage
    /// that a race made up.
    pub fn open(path: &Path, mode: Mode) -> Result<ReorgDb> {
        match mode {
            Mode::ReadWrite => Self::open_once(path, mode),
            Mode::ReadOnly => on_a_stable_view(path, || Self::open_once(path, mode), doubt_error),
        }
    }

    fn open_once(path: &Path, mode: Mode) -> Result<ReorgDb> {
        // A symlink to the database (e.g. /var/lib/ailee/reorg_db -> /data/…) is followed.
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        match describe(&real) {
            Some(d) if d == "an existing RocksDB database" => {}
            Some(d) => {
                return Err(Error::Db(DbError::NotADatabase {
                    path: path.to_path_buf(),
                    why: format!("not a reorg database: {d}"),
                }))
            }
            None => {
                return Err(Error::Db(DbError::NotADatabase {
                    path: path.to_path_buf(),
                    why: "no database here (create one with ailee_init_reorg_db --path)".into(),
                }))
            }
        }
        let cfs = DB::list_cf(&Options::default(), path).map_err(|e| db_error(path, e))?;
        for want in COLUMN_FAMILIES {
            if !cfs.iter().any(|c| c == want) {
                if let Some(why) = manifest_damage(path).or_else(|| options_name_cf(path, want)) {
                    return Err(Error::Db(DbError::Corrupt {
                        path: path.to_path_buf(),
                        message: format!("column family {want:?} is missing and {why}"),
                    }));
                }
                return Err(Error::Db(DbError::NotADatabase {
                    path: path.to_path_buf(),
                    why: format!(
                        "column family {want:?} is missing (has {cfs:?}); the node cannot open this database. \
                         Rebuild it (runbook Procedure 3) rather than altering it"
                    ),
                }));
            }
        }
        let o = cf_options();
        let db = match mode {
            Mode::ReadWrite => DB::open_cf_descriptors(&o, path, descriptors()),
            Mode::ReadOnly => DB::open_cf_descriptors_read_only(&o, path, descriptors(), false),
        }
        .map_err(|e| db_error(path, e))?;
        Ok(ReorgDb {
            db,
            path: path.to_path_buf(),
            mode,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.db.get(key.as_bytes()).map_err(|e| db_error(&self.path, e))
    }

    /// Key/value pairs whose key starts with `prefix`, from `start` on, in key order.
    pub fn scan<'a>(&'a self, prefix: &'a str, start: &str) -> impl Iterator<Item = Result<(String, Box<[u8]>)>> + 'a {
        self.db
            .iterator(IteratorMode::From(start.as_bytes(), Direction::Forward))
            .map(|r| r.map_err(|e| db_error(&self.path, e)))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix.as_bytes())))
            .map(|r| r.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)))
    }

    pub fn block_hash(&self, height: u64) -> Result<Option<String>> {
        let k = block_key(height);
        match self.get(&k)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_block_hash(&k, &v)?)),
        }
    }

    /// Stored block hashes from `height` up, in height order.
    pub fn blocks_from(&self, height: u64) -> impl Iterator<Item = Result<(u64, String)>> + '_ {
        self.scan(BLOCK_PREFIX, &block_key(height)).map(|r| {
            let (k, v) = r?;
            let Key::Block(h) = Key::decode(k.as_bytes())? else {
                return Err(Error::Integrity(format!("{k}: not a block key")));
            };
            Ok((h, decode_block_hash(&k, &v)?))
        })
    }

    /// The highest stored block height.
    pub fn tip(&self) -> Result<Option<u64>> {
        let mut it = self.db.iterator(IteratorMode::From(b"block:\xff", Direction::Reverse));
        match it.next() {
            Some(Ok((k, _))) if k.starts_with(BLOCK_PREFIX.as_bytes()) => match Key::decode(&k)? {
                Key::Block(h) => Ok(Some(h)),
                _ => Ok(None),
            },
            Some(Err(e)) => Err(db_error(&self.path, e)),
            _ => Ok(None),
        }
    }

    pub fn anchor(&self, hash: &str) -> Result<Option<AnchorRecord>> {
        let k = anchor_key(hash);
        match self.get(&k)? {
            None => Ok(None),
            Some(v) => Ok(Some(AnchorRecord::decode(&k, &v)?)),
        }
    }

    /// Every anchor record, in key order.
    pub fn anchors(&self) -> Result<Vec<AnchorRecord>> {
        self.scan(ANCHOR_PREFIX, ANCHOR_PREFIX)
            .map(|r| r.and_then(|(k, v)| Ok(AnchorRecord::decode(&k, &v)?)))
            .collect()
    }

    /// The id for a new reorg event: past both the counter and the highest
    /// existing event (a counter behind its events must not overwrite one).
    /// Never u64::MAX, so the counter after it (id + 1) cannot wrap.
    pub fn next_event_id(&self) -> Result<u64> {
        let counter = self.counter()?.unwrap_or(0);
        let mut it = self.db.iterator(IteratorMode::From(b"reorg:\xff", Direction::Reverse));
        let past_highest = match it.next() {
            Some(Ok((k, _))) if k.starts_with(REORG_PREFIX.as_bytes()) => match Key::decode(&k)? {
                Key::Reorg(id) => Some(id.checked_add(1)),
                _ => None,
            },
            Some(Err(e)) => return Err(db_error(&self.path, e)),
            _ => None,
        };
        let id = match past_highest {
            None => Some(counter),
            Some(None) => None,
            Some(Some(p)) => Some(p.max(counter)),
        };
        id.filter(|i| *i < u64::MAX).ok_or_else(|| {
            Error::Integrity(format!(
                "{}: reorg event ids are exhausted (counter {counter}); no event can be recorded without wrapping",
                self.path.display()
            ))
        })
    }

    /// The highest stored block at or below `height`.
    pub fn block_at_or_below(&self, height: u64) -> Result<Option<(u64, String)>> {
        let start = block_key(height);
        let mut it = self
            .db
            .iterator(IteratorMode::From(start.as_bytes(), Direction::Reverse));
        match it.next() {
            Some(Ok((k, v))) if k.starts_with(BLOCK_PREFIX.as_bytes()) => {
                let key = String::from_utf8_lossy(&k).into_owned();
                match Key::decode(&k)? {
                    Key::Block(h) => Ok(Some((h, decode_block_hash(&key, &v)?))),
                    _ => Ok(None),
                }
            }
            Some(Err(e)) => Err(db_error(&self.path, e)),
            _ => Ok(None),
        }
    }

    pub fn counter(&self) -> Result<Option<u64>> {
        match self.get(REORG_COUNTER)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_counter(REORG_COUNTER, &v)?)),
        }
    }

    /// Every reorg event with its id, in id order.
    pub fn reorg_events(&self) -> Result<Vec<(u64, ReorgEvent)>> {
        self.scan(REORG_PREFIX, REORG_PREFIX)
            .map(|r| {
                let (k, v) = r?;
                let Key::Reorg(id) = Key::decode(k.as_bytes())? else {
                    return Err(Error::Integrity(format!("{k}: not a reorg key")));
                };
                Ok((id, ReorgEvent::decode(&k, &v)?))
            })
            .collect()
    }

    /// Applies a batch atomically and durably (WAL fsync).
    pub fn write(&self, batch: Batch) -> Result<()> {
        if self.mode == Mode::ReadOnly {
            return Err(Error::Usage(format!("{}: opened read-only", self.path.display())));
        }
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch.0, &w).map_err(|e| db_error(&self.path, e))
    }

    /// Flushes memtables to SST files (written in format_version 5).
    pub fn flush(&self) -> Result<()> {
        for name in COLUMN_FAMILIES {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db.flush_cf(&cf).map_err(|e| db_error(&self.path, e))?;
            }
        }
        Ok(())
    }

    /// A consistent point-in-time copy in `dest` (a RocksDB checkpoint:
    /// hard links where possible). Needs a read-write handle.
    pub fn checkpoint(&self, dest: &Path) -> Result<()> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| db_error(&self.path, e))?;
        cp.create_checkpoint(dest).map_err(|e| db_error(dest, e))
    }

    /// Copies every record of both column families into a new database at
    /// `dest` (which must not exist), built under a temporary name and renamed
    /// into place. Works on a read-only handle, so it can run while the node
    /// holds the database: the copy is the state the read-only open saw — a
    /// consistent point in time, unlike a `tar` of the live directory.
    pub fn copy_to(&self, dest: &Path) -> Result<u64> {
        let mut copied = 0u64;
        Self::create_with(dest, |new| {
            for name in COLUMN_FAMILIES {
                let (Some(from), Some(to)) = (self.db.cf_handle(name), new.cf_handle(name)) else {
                    return Err(Error::Db(DbError::NotADatabase {
                        path: self.path.clone(),
                        why: format!("no column family {name}"),
                    }));
                };
                let mut b = rocksdb::WriteBatch::default();
                for item in self.db.iterator_cf(&from, IteratorMode::Start) {
                    ailee_core::cancel::check()?;
                    let (k, v) = item.map_err(|e| db_error(&self.path, e))?;
                    b.put_cf(&to, k, v);
                    copied += 1;
                    if b.len() >= 10_000 {
                        new.write(std::mem::take(&mut b)).map_err(|e| db_error(dest, e))?;
                    }
                }
                new.write(b).map_err(|e| db_error(dest, e))?;
            }
            Ok(())
        })?;
        Ok(copied)
    }

    /// Entries in `reputation_cf` (the node's; counted, never decoded).
    pub fn reputation_entries(&self) -> Result<u64> {
        let Some(cf) = self.db.cf_handle(CF_REPUTATION) else {
            return Ok(0);
        };
        let mut n = 0;
        for r in self.db.iterator_cf(&cf, IteratorMode::Start) {
            r.map_err(|e| db_error(&self.path, e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Reads every entry of both column families with checksums verified
    /// and the block cache bypassed: a flipped byte in any data block surfaces as
    /// [`DbError::Corrupt`]. Index, filter and properties blocks were
    /// already verified when the open loaded every table. Returns the
    /// number of entries read.
    pub fn verify_blocks(&self) -> Result<u64> {
        let mut n = 0u64;
        for name in COLUMN_FAMILIES {
            let Some(cf) = self.db.cf_handle(name) else {
                continue;
            };
            let mut o = rocksdb::ReadOptions::default();
            o.set_verify_checksums(true);
            o.fill_cache(false);
            o.set_readahead_size(2 << 20);
            for item in self.db.iterator_cf_opt(&cf, o, IteratorMode::Start) {
                ailee_core::cancel::check()?;
                item.map_err(|e| db_error(&self.path, e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// SST files in the directory that the MANIFEST does not list. RocksDB
    /// ignores a torn last MANIFEST record (a crash mid-append) and deletes
    /// unlisted SSTs on its next read-write open; both together mean edits
    /// that referenced those files were lost (a truncated MANIFEST): data the
    /// open no longer shows, which the node's next start would delete. That
    /// is corruption — unless a process holds the database (the node is
    /// running and may be mid-flush), when it is only reported. Unlisted
    /// files alone (left by an interrupted flush or compaction, which the
    /// WAL or the live files still cover) are a warning.
    fn audit_files(&self, r: &mut CheckReport) -> Result<()> {
        let live: std::collections::HashSet<String> = self
            .db
            .live_files()
            .map_err(|e| db_error(&self.path, e))?
            .into_iter()
            .map(|f| f.name.trim_start_matches('/').to_string())
            .collect();
        let mut unlisted: Vec<String> = std::fs::read_dir(&self.path)
            .map_err(|e| Error::io(&self.path, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sst") && !live.contains(n))
            .collect();
        unlisted.sort();
        if unlisted.is_empty() {
            return Ok(());
        }
        let list = unlisted.join(", ");
        let held = lock_held(&self.path);
        if !held && manifest_torn(&self.path) {
            return Err(Error::Db(DbError::Corrupt {
                path: self.path.clone(),
                message: format!(
                    "the MANIFEST ends in a torn record and {} SST file(s) it does not list are present ({list}): \
                     edits were lost, the data in those files is no longer visible, and the node's next start \
                     would delete them",
                    unlisted.len()
                ),
            }));
        }
        r.warnings.push(format!(
            "{} SST file(s) not listed in the MANIFEST ({list}){}",
            unlisted.len(),
            if held {
                ": the database is in use, a flush or compaction may be under way"
            } else {
                ": left by an interrupted flush or compaction (removed on the next open)"
            }
        ));
        Ok(())
    }

    /// Decodes every record and summarises the database (read-only); every
    /// block is read with its checksum verified first ([`Self::verify_blocks`]).
    /// On a read-only handle a failure (an error, a report that is not
    /// healthy) is a verdict only once fresh read-only views give the same
    /// one on a stable directory ([`on_a_stable_view`]): the view this
    /// handle was opened on may have raced a writer.
    pub fn check(&self, recent: usize) -> Result<CheckReport> {
        let first = self.check_once(recent);
        if self.mode == Mode::ReadWrite || doubt_report(&first).is_none() {
            return first;
        }
        on_a_stable_view(
            &self.path,
            || Self::open_once(&self.path, Mode::ReadOnly)?.check_once(recent),
            doubt_report,
        )
    }

    fn check_once(&self, recent: usize) -> Result<CheckReport> {
        self.verify_blocks()?;
        let mut r = CheckReport::default();
        self.audit_files(&mut r)?;
        let mut prev_height: Option<u64> = None;
        let mut events: BTreeMap<u64, ReorgEvent> = BTreeMap::new();
        for item in self.db.iterator(IteratorMode::Start) {
            ailee_core::cancel::check()?;
            let (k, v) = item.map_err(|e| db_error(&self.path, e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let decoded = Key::decode(&k).and_then(|kind| match kind {
                Key::Block(h) => {
                    decode_block_hash(&key, &v)?;
                    r.blocks += 1;
                    r.min_height = Some(r.min_height.map_or(h, |m| m.min(h)));
                    r.max_height = Some(h);
                    if let Some(p) = prev_height {
                        if h > p + 1 {
                            r.missing_heights += h - p - 1;
                            if r.gaps.len() < 10 {
                                r.gaps.push((p + 1, h - 1));
                            }
                        }
                    }
                    prev_height = Some(h);
                    Ok(())
                }
                Key::Anchor(_) => {
                    let a = AnchorRecord::decode(&key, &v)?;
                    r.anchors[a.status as usize] += 1;
                    Ok(())
                }
                Key::Reorg(id) => {
                    let e = ReorgEvent::decode(&key, &v)?;
                    r.reorg_events += 1;
                    r.max_event_id = Some(r.max_event_id.map_or(id, |m: u64| m.max(id)));
                    events.insert(id, e);
                    while events.len() > recent {
                        events.pop_first();
                    }
                    Ok(())
                }
                Key::Counter => {
                    r.counter = Some(decode_counter(&key, &v)?);
                    Ok(())
                }
            });
            if let Err(e) = decoded {
                r.undecodable += 1;
                if r.errors.len() < 20 {
                    r.errors.push(e.to_string());
                }
            }
        }
        r.recent_events = events.into_iter().rev().collect();
        r.reputation_entries = self.reputation_entries()?;
        let counter = r.counter.unwrap_or(0);
        if counter != r.reorg_events || r.max_event_id.is_some_and(|m| m >= counter) {
            r.counter_mismatch = Some(format!(
                "reorg_counter is {} but {} reorg event(s) are present{}",
                r.counter.map_or("absent".to_string(), |c| c.to_string()),
                r.reorg_events,
                r.max_event_id.map(|m| format!(" (highest id {m})")).unwrap_or_default()
            ));
        }
        Ok(r)
    }
}

/// Summary of a database by [`ReorgDb::check`].
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Anchor records per status (indexed by the status code).
    pub anchors: [u64; 4],
    pub blocks: u64,
    pub min_height: Option<u64>,
    pub max_height: Option<u64>,
    /// Heights missing between the lowest and highest stored block.
    pub missing_heights: u64,
    /// The first gaps, as inclusive ranges.
    pub gaps: Vec<(u64, u64)>,
    pub reorg_events: u64,
    pub max_event_id: Option<u64>,
    /// The most recent events, newest first.
    pub recent_events: Vec<(u64, ReorgEvent)>,
    pub counter: Option<u64>,
    pub counter_mismatch: Option<String>,
    pub reputation_entries: u64,
    pub undecodable: u64,
    /// The first decode errors, each naming its key.
    pub errors: Vec<String>,
    /// Findings that are not failures (e.g. SST files the MANIFEST does not list).
    pub warnings: Vec<String>,
}

/// A check's outcome that needs confirming: a failure, or a report that is
/// not healthy (what it found, as the key two views must agree on).
fn doubt_report(r: &Result<CheckReport>) -> Option<String> {
    match r {
        Ok(r) if r.healthy() => None,
        Ok(r) => {
            let found: Vec<&str> = r.errors.iter().chain(&r.counter_mismatch).map(|s| s.as_str()).collect();
            Some(format!("{} undecodable record(s); {}", r.undecodable, found.join("; ")))
        }
        Err(_) => doubt_error(r),
    }
}

impl CheckReport {
    /// True when every record decoded and the counter agrees with the events.
    pub fn healthy(&self) -> bool {
        self.undecodable == 0 && self.counter_mismatch.is_none()
    }
}

/// A write batch with the schema's typed operations.
#[derive(Default)]
pub struct Batch(rocksdb::WriteBatch);

impl Batch {
    pub fn put_block(&mut self, height: u64, hash: &str) {
        self.0.put(block_key(height), hash);
    }

    pub fn delete_block(&mut self, height: u64) {
        self.0.delete(block_key(height));
    }

    /// Deletes every stored block at or above `height` (one range tombstone;
    /// `block;` sorts right after every `block:` key).
    pub fn delete_blocks_from(&mut self, height: u64) {
        self.0.delete_range(block_key(height).into_bytes(), b"block;".to_vec());
    }

    pub fn put_anchor(&mut self, a: &AnchorRecord) {
        self.0.put(anchor_key(&a.anchor_hash), a.encode());
    }

    /// The event and the counter move together (SPEC §1.4).
    pub fn record_reorg(&mut self, id: u64, e: &ReorgEvent) {
        self.0.put(reorg_key(id), e.encode());
        // Callers allocate ids with [`ReorgDb::next_event_id`], which never
        // returns u64::MAX; saturating keeps even a misuse from wrapping to 0.
        self.0.put(REORG_COUNTER, id.saturating_add(1).to_string());
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ailee_core::records::AnchorLookup for ReorgDb {
    fn anchor(&self, hash: &str) -> Result<Option<AnchorRecord>> {
        ReorgDb::anchor(self, hash)
    }

    fn block_hash(&self, height: u64) -> Result<Option<String>> {
        ReorgDb::block_hash(self, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn damaged(dir: &Path) -> Result<()> {
        Err(Error::Db(DbError::Corrupt {
            path: dir.to_path_buf(),
            message: "IO error: No such file or directory: 000007.log".into(),
        }))
    }

    #[test]
    fn damage_seen_twice_on_an_unchanged_directory_is_the_verdict() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("CURRENT"), "MANIFEST-000005\n").unwrap();
        let n = Cell::new(0);
        let r = on_a_stable_view(d.path(), || (n.set(n.get() + 1), damaged(d.path())).1, doubt_error);
        assert!(matches!(r, Err(Error::Db(DbError::Corrupt { .. }))));
        assert_eq!(n.get(), 2);
    }

    #[test]
    fn a_failure_while_files_change_is_tried_again_and_a_success_is_taken() {
        let d = tempfile::tempdir().unwrap();
        let n = Cell::new(0);
        // The first attempt races a writer that deletes a WAL; the second succeeds.
        std::fs::write(d.path().join("000007.log"), "").unwrap();
        let r = on_a_stable_view(
            d.path(),
            || {
                n.set(n.get() + 1);
                if n.get() == 1 {
                    std::fs::remove_file(d.path().join("000007.log")).unwrap();
                    return damaged(d.path());
                }
                Ok(())
            },
            doubt_error,
        );
        assert!(r.is_ok());
        assert_eq!(n.get(), 2);
    }

    #[test]
    fn damage_on_a_directory_that_never_holds_still_is_no_verdict_exit_1() {
        let d = tempfile::tempdir().unwrap();
        let n = Cell::new(0u32);
        let r = on_a_stable_view(
            d.path(),
            || {
                n.set(n.get() + 1);
                std::fs::write(d.path().join(format!("{:06}.log", n.get())), "").unwrap();
                damaged(d.path())
            },
            doubt_error,
        );
        assert_eq!(n.get(), STABLE_VIEW_ATTEMPTS);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Db(DbError::Engine { .. })), "{e}");
        assert_eq!(e.exit_status(), ailee_core::ExitStatus::Operational);
        assert!(e.to_string().contains("no verdict"), "{e}");
    }

    #[test]
    fn a_growing_wal_or_an_info_log_does_not_unsettle_the_view() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("000007.log"), "a").unwrap();
        let before = dir_view(d.path());
        std::fs::write(d.path().join("000007.log"), "ab").unwrap();
        std::fs::write(d.path().join("LOG"), "x").unwrap();
        std::fs::write(d.path().join("LOG.old.1"), "x").unwrap();
        assert_eq!(before, dir_view(d.path()));
        std::fs::write(d.path().join("MANIFEST-000005"), "m").unwrap();
        assert_ne!(before, dir_view(d.path()));
        let with_manifest = dir_view(d.path());
        std::fs::write(d.path().join("MANIFEST-000005"), "mm").unwrap();
        assert_ne!(with_manifest, dir_view(d.path()));
    }
}
