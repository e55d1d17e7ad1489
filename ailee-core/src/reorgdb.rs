//! The reorg database (SPEC §1.4) through the `rocksdb` crate: open modes,
//! typed reads, write batches, and the read-only consistency check.
//!
//! Invariants:
//! - Both column families are always opened with descriptors carrying our
//!   options, so every SST file is written in `format_version` 5, readable by
//!   the node's older RocksDB (Debian's 7.8.3 included).
//! - Writes go through [`Batch`] with `sync`; a reorg event and the counter
//!   are one batch ([`Batch::record_reorg`]).
//! - A database held by another process is [`Error::Locked`]; the tools never
//!   delete `LOCK` (it is an flock, released when its holder exits).

use crate::records::*;
use crate::{Error, Result};
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

fn db_error(path: &Path, e: rocksdb::Error) -> Error {
    let m = e.to_string();
    if m.contains("lock") && (m.contains("Resource temporarily unavailable") || m.contains("LOCK")) {
        Error::Locked {
            path: path.to_path_buf(),
        }
    } else {
        Error::Db {
            path: path.to_path_buf(),
            message: m,
        }
    }
}

/// What is at `path`, for messages about refusing to touch it.
pub fn describe(path: &Path) -> Option<String> {
    let md = std::fs::symlink_metadata(path).ok()?;
    Some(if md.is_dir() {
        if path.join("CURRENT").exists() {
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

/// How to open an existing database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exclusive read-write; fails with [`Error::Locked`] while the node runs.
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
                return Err(Error::NotADatabase {
                    path: path.to_path_buf(),
                    why: format!("refusing to create a database here: {d} is already there (nothing was changed)"),
                })
            }
        }
        let parent = crate::atomic::parent_dir(path);
        let name = path
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a directory name", path.display())))?;
        let tmp = parent.join(format!(".{}.ailee-tmp.{}", name.to_string_lossy(), std::process::id()));
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
            crate::atomic::sync_dir(&tmp)?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
            crate::atomic::sync_dir(&parent)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Opens an existing database; never creates anything.
    pub fn open(path: &Path, mode: Mode) -> Result<ReorgDb> {
        match describe(path) {
            Some(d) if d == "an existing RocksDB database" => {}
            Some(d) => {
                return Err(Error::NotADatabase {
                    path: path.to_path_buf(),
                    why: format!("not a reorg database: {d}"),
                })
            }
            None => {
                return Err(Error::NotADatabase {
                    path: path.to_path_buf(),
                    why: "no database here (create one with ailee_init_reorg_db --path)".into(),
                })
            }
        }
        let cfs = DB::list_cf(&Options::default(), path).map_err(|e| db_error(path, e))?;
        for want in COLUMN_FAMILIES {
            if !cfs.iter().any(|c| c == want) {
                return Err(Error::NotADatabase {
                    path: path.to_path_buf(),
                    why: format!(
                        "column family {want:?} is missing (has {cfs:?}); the node cannot open this database. \
                         Rebuild it (runbook Procedure 3) rather than altering it"
                    ),
                });
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
                    return Err(Error::NotADatabase {
                        path: self.path.clone(),
                        why: format!("no column family {name}"),
                    });
                };
                let mut b = rocksdb::WriteBatch::default();
                for item in self.db.iterator_cf(&from, IteratorMode::Start) {
                    crate::cancel::check()?;
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

    /// Decodes every record and summarises the database (read-only).
    pub fn check(&self, recent: usize) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        let mut prev_height: Option<u64> = None;
        let mut events: BTreeMap<u64, ReorgEvent> = BTreeMap::new();
        for item in self.db.iterator(IteratorMode::Start) {
            crate::cancel::check()?;
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
        self.0.put(REORG_COUNTER, (id + 1).to_string());
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl crate::verify::AnchorSource for ReorgDb {
    fn status(&self, hash: &str) -> Result<crate::verify::LinkStatus> {
        // The node writes lowercase hex; look up as written, then lowercased.
        let rec = match self.anchor(hash)? {
            Some(r) => Some(r),
            None => self.anchor(&hash.to_ascii_lowercase())?,
        };
        Ok(match rec {
            None => crate::verify::LinkStatus::Unknown,
            Some(r) if r.status.is_void() => {
                crate::verify::LinkStatus::Void(format!("the reorg database marks {}", r.status.name()))
            }
            Some(_) => crate::verify::LinkStatus::Valid,
        })
    }
}
