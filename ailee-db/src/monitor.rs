//! What the monitor looks at (SPEC §6), cheaply enough to run every few
//! minutes while the node runs: the newest complete snapshot (read from the
//! end of the file, verified), whether the file ends torn, file sizes, and
//! the reorg database's anchors, reorg events, counter and tip.
//!
//! Invariants:
//! - Nothing here scans the whole snapshot file or every `block:` record: the
//!   newest snapshot is found from the end ([`ailee_core::snapfile::SnapshotFile::newest`]); earlier
//!   snapshots are read only to resolve a peg-out's anchor the database does
//!   not know; the database is read through the `anchor:` and `reorg:`
//!   prefixes, the counter and the highest `block:` key.
//! - The database is opened read-only by the caller (safe while the node
//!   holds it). A record that does not decode is counted, never fatal.

use crate::reorgdb::ReorgDb;
use ailee_core::onchain::OwnRecord;
use ailee_core::records::{AnchorLookup, AnchorRecord, Key, ReorgEvent, ANCHOR_PREFIX, REORG_PREFIX};
use ailee_core::verifier::{BlockVerdict, Earlier, Verifier};
use ailee_core::verify::Failure;
use ailee_core::{Error, Result};
use std::path::Path;

/// The newest complete snapshot of the file.
#[derive(Debug, Clone, Default)]
pub struct Newest {
    /// Byte offset of its header.
    pub offset: u64,
    /// Its `timestamp_ms`, when the block parses.
    pub timestamp_ms: Option<u64>,
    pub anchor_hash: Option<String>,
    /// Why it does not verify (`None`: it verifies).
    pub failure: Option<String>,
    /// Things worth saying that are not failures.
    pub warnings: Vec<String>,
}

/// The snapshot file.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStatus {
    pub size_bytes: u64,
    /// The file ends in a torn (incomplete) block: (offset, length).
    pub torn_tail: Option<(u64, u64)>,
    /// `None` when the file holds no complete snapshot.
    pub newest: Option<Newest>,
}

impl SnapshotStatus {
    pub fn verified(&self) -> bool {
        self.newest.as_ref().is_some_and(|n| n.failure.is_none())
    }
}

/// Reads the newest complete snapshot of `path` from the end and verifies
/// it as `ailee_l2_verify` does (the one [`Verifier`]), with `db` (when
/// given) deciding peg-out anchors and judging the snapshot's own anchor
/// (void: a failure); the verdict is worded for the monitor's findings.
pub fn snapshot_status(path: &Path, db: Option<&ReorgDb>) -> Result<SnapshotStatus> {
    // Before open(): opening a FIFO would block the monitor forever.
    let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        return Err(Error::Usage(format!("{}: not a regular file", path.display())));
    }
    let sf = ailee_core::snapfile::SnapshotFile::open(path)?;
    let mut st = SnapshotStatus {
        size_bytes: sf.len(),
        ..SnapshotStatus::default()
    };
    // From the end, holes skipped: the newest block and what follows it.
    let (found, notes) = sf.newest()?;
    st.torn_tail = ailee_core::snapfile::torn_tail(&notes);
    let Some(found) = found else {
        return Ok(st);
    };
    let verifier = Verifier::new(db.map(|d| d as &dyn AnchorLookup));
    let mut v = verifier.check(&found.bytes);
    let timestamp_ms = ailee_core::format::parse_block(&found.bytes)
        .ok()
        .map(|p| p.snapshot.timestamp_ms);
    drop(found.bytes);
    verifier.finish(&mut v, Earlier::Before(&sf, found.offset))?;
    st.newest = Some(newest_of(found.offset, timestamp_ms, v));
    Ok(st)
}

/// The verdict on the newest snapshot in the monitor's words.
fn newest_of(offset: u64, timestamp_ms: Option<u64>, v: BlockVerdict) -> Newest {
    let failure = v.failure.as_ref().map(|f| match f {
        Failure::OwnVoid { hash, status } => {
            format!("its own anchor {hash} is {} in the reorg database", status.name())
        }
        f => f.to_string(),
    });
    let mut warnings = v.link_warnings;
    if let (Some(own), Some(h)) = (&v.own, &v.anchor_hash) {
        match own {
            OwnRecord::Pending(_) => warnings.push(format!("its anchor {h} is still PENDING in the reorg database")),
            OwnRecord::Absent => warnings.push(format!("its anchor {h} is not recorded in the reorg database")),
            OwnRecord::Confirmed(_) | OwnRecord::Void(_) => {}
        }
    }
    Newest {
        offset,
        timestamp_ms,
        anchor_hash: v.anchor_hash,
        failure,
        warnings,
    }
}

/// The reorg database, read cheaply.
#[derive(Debug, Clone, Default)]
pub struct DbStatus {
    /// Anchor records per status code.
    pub anchors: [u64; 4],
    pub reorg_events: u64,
    /// The newest event (highest id).
    pub last_event: Option<(u64, ReorgEvent)>,
    pub counter: Option<u64>,
    pub tip: Option<u64>,
    /// Highest Bitcoin height of a mined anchor that is not void.
    pub newest_mined_anchor_height: Option<u64>,
    /// Records read that do not decode, plus 1 if the counter disagrees.
    pub corrupt: u64,
    /// The first problems, each naming its key.
    pub errors: Vec<String>,
}

impl DbStatus {
    fn problem(&mut self, e: impl std::fmt::Display) {
        self.corrupt += 1;
        if self.errors.len() < 10 {
            self.errors.push(e.to_string());
        }
    }
}

/// Reads every anchor and reorg event, the counter and the tip.
pub fn db_status(db: &ReorgDb) -> Result<DbStatus> {
    let mut st = DbStatus::default();
    for r in db.scan(ANCHOR_PREFIX, ANCHOR_PREFIX) {
        ailee_core::cancel::check()?;
        let (k, v) = r?;
        match AnchorRecord::decode(&k, &v) {
            Ok(a) => {
                st.anchors[a.status as usize] += 1;
                if !a.status.is_void() && a.bitcoin_height > 0 {
                    st.newest_mined_anchor_height = st.newest_mined_anchor_height.max(Some(a.bitcoin_height));
                }
            }
            Err(e) => st.problem(e),
        }
    }
    let mut max_id = None;
    for r in db.scan(REORG_PREFIX, REORG_PREFIX) {
        ailee_core::cancel::check()?;
        let (k, v) = r?;
        let decoded = Key::decode(k.as_bytes())
            .map_err(Error::from)
            .and_then(|key| match key {
                Key::Reorg(id) => Ok((id, ReorgEvent::decode(&k, &v)?)),
                _ => Err(Error::Integrity(format!("{k}: not a reorg key"))),
            });
        match decoded {
            Ok((id, e)) => {
                st.reorg_events += 1;
                max_id = max_id.max(Some(id));
                if st.last_event.as_ref().is_none_or(|(i, _)| id > *i) {
                    st.last_event = Some((id, e));
                }
            }
            Err(e) => st.problem(e),
        }
    }
    match db.counter() {
        Ok(c) => st.counter = c,
        Err(e) => st.problem(e),
    }
    let counter = st.counter.unwrap_or(0);
    if counter != st.reorg_events || max_id.is_some_and(|m| m >= counter) {
        st.problem(format!(
            "reorg_counter is {} but {} reorg event(s) are present",
            st.counter.map_or("absent".to_string(), |c| c.to_string()),
            st.reorg_events
        ));
    }
    match db.tip() {
        Ok(t) => {
            st.tip = t;
            if let Some(t) = t {
                if let Err(e) = db.block_hash(t) {
                    st.problem(e);
                }
            }
        }
        Err(e) => st.problem(e),
    }
    Ok(st)
}

/// Where reorg_db's stored chain leaves the Bitcoin node's best chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// The lowest stored height whose hash the node's best chain does not hold.
    pub height: u64,
    /// Stored blocks the node's chain does not hold: stored tip − fork + 1
    /// (as `ailee_resync_blocks` counts a reorg's depth).
    pub depth: u64,
    pub stored_tip: u64,
    /// The stored hash at the stored tip.
    pub stored_tip_hash: String,
}

/// Compares the stored block hashes with the node's best chain, whose tip is
/// `node_tip` and whose hash at a height `node_hash` gives (`None` above its
/// tip). `None`: the stored chain is on the node's (up to the node's tip when
/// the node is behind), or nothing is stored. A stored hash the node's chain
/// holds means every stored hash below it is held too, so the fork is found
/// by an exponential then a binary search from the top: a few dozen lookups
/// whatever the depth, over the stored heights only (gaps are skipped).
pub fn fork_with(
    db: &ReorgDb,
    node_tip: u64,
    mut node_hash: impl FnMut(u64) -> Result<Option<String>>,
) -> Result<Option<Fork>> {
    let Some(stored_tip) = db.tip()? else {
        return Ok(None);
    };
    let Some(stored_tip_hash) = db.block_hash(stored_tip)? else {
        return Ok(None);
    };
    // Does the node hold the highest stored block at or below `h`? `None`:
    // nothing is stored at or below `h`.
    let mut held = |h: u64| -> Result<Option<(u64, bool)>> {
        ailee_core::cancel::check()?;
        match db.block_at_or_below(h)? {
            None => Ok(None),
            Some((sh, hash)) => Ok(Some((sh, node_hash(sh)?.is_some_and(|n| n == hash)))),
        }
    };
    let mut bad = match held(stored_tip.min(node_tip))? {
        None | Some((_, true)) => return Ok(None),
        Some((h, false)) => h,
    };
    // Every stored height at or below `lo` is held (-1: none known to be).
    let mut lo: i128 = -1;
    let mut step = 1u64;
    while bad > 0 {
        let probe = bad.saturating_sub(step);
        match held(probe)? {
            None | Some((_, true)) => {
                lo = probe as i128;
                break;
            }
            Some((h, false)) => bad = h,
        }
        if probe == 0 {
            break;
        }
        step = step.saturating_mul(2);
    }
    while (bad as i128) - lo > 1 {
        let mid = (lo + (bad as i128 - lo) / 2) as u64;
        match held(mid)? {
            Some((h, false)) if (h as i128) > lo => bad = h,
            _ => lo = mid as i128,
        }
    }
    Ok(Some(Fork {
        height: bad,
        depth: stored_tip - bad + 1,
        stored_tip,
        stored_tip_hash,
    }))
}

/// Disk usage of a file or directory tree, as `du` counts it (allocated
/// blocks). A symlink given as `path` (a `reorg_db` moved to another disk
/// and linked back) is followed; links inside the tree are not.
pub fn disk_usage(path: &Path) -> Result<u64> {
    let path = &std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    fn walk(p: &Path) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::symlink_metadata(p)?;
        let mut total = md.blocks() * 512;
        if md.is_dir() {
            for e in std::fs::read_dir(p)? {
                match walk(&e?.path()) {
                    Ok(n) => total += n,
                    // A file RocksDB removed meanwhile (compaction) is not an error.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(total)
    }
    walk(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reorgdb::{Batch, Mode};
    use ailee_core::records::AnchorStatus;

    fn status_of(data: &[u8]) -> SnapshotStatus {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, data).unwrap();
        snapshot_status(&p, None).unwrap()
    }

    const BLOCK: &[u8] = b"SNAPSHOT v1\ntimestamp_ms 1700000000000\nbalances 0\nescrows 0\npegins 0\npegouts 0\ntasks 0\nanchor none\nEND_SNAPSHOT\n";

    #[test]
    fn newest_block_and_torn_tail_are_found_from_the_end() {
        let s = status_of(BLOCK);
        assert_eq!(s.torn_tail, None);
        let n = s.newest.unwrap();
        assert_eq!((n.offset, n.timestamp_ms), (0, Some(1_700_000_000_000)));
        // "anchor none" does not verify.
        assert!(n.failure.unwrap().contains("No anchor"));
        let torn: &[u8] = b"SNAPSHOT v1\ntimestamp_ms 5\nbalances 1\nbalance \"pe";
        let s = status_of(&[BLOCK, BLOCK, torn].concat());
        assert_eq!(s.torn_tail, Some((2 * BLOCK.len() as u64, torn.len() as u64)));
        assert_eq!(s.newest.unwrap().offset, BLOCK.len() as u64);
        // Glued: the newline after END_SNAPSHOT was lost.
        let glued = [&BLOCK[..BLOCK.len() - 1], b"SNAPSHOT v1\ntimestamp_ms 5\n"].concat();
        let s = status_of(&glued);
        assert_eq!(s.torn_tail.map(|t| t.0), Some(BLOCK.len() as u64 - 1));
        assert_eq!(s.newest.unwrap().offset, 0);
        // No final newline.
        let s = status_of(&BLOCK[..BLOCK.len() - 1]);
        assert_eq!(s.newest.unwrap().offset, 0);
        // A string value holding the marker is not a block end.
        let fake: &[u8] = b"SNAPSHOT v1\ntimestamp_ms 1\nbalances 1\nbalance \"xEND_SNAPSHOT\" 5\n";
        let s = status_of(fake);
        assert!(s.newest.is_none());
        assert_eq!(s.torn_tail, Some((0, fake.len() as u64)));
        assert!(status_of(b"").newest.is_none());
    }

    /// The first window the walk from the end reads (64 KiB, then doubled).
    const CHUNK: u64 = 64 << 10;

    #[test]
    fn a_long_junk_tail_does_not_hide_the_newest_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, BLOCK).unwrap();
        let f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.set_len(BLOCK.len() as u64 + 50 * CHUNK + 7).unwrap(); // sparse zeros
        let s = snapshot_status(&p, None).unwrap();
        assert_eq!(s.newest.unwrap().offset, 0);
        assert_eq!(s.torn_tail, None);
        // Zeros before the blocks do not matter either.
        let q = d.path().join("g");
        let g = std::fs::File::create(&q).unwrap();
        g.set_len(CHUNK * 3 + 5).unwrap();
        drop(g);
        let mut g = std::fs::OpenOptions::new().append(true).open(&q).unwrap();
        std::io::Write::write_all(&mut g, BLOCK).unwrap();
        let s = snapshot_status(&q, None).unwrap();
        assert_eq!(s.newest.unwrap().offset, CHUNK * 3 + 5);
    }

    #[test]
    fn markers_across_chunk_boundaries_are_found() {
        // The first chunk read (the last CHUNK bytes) starts at every offset
        // from before END_SNAPSHOT to after the torn header that follows it.
        let torn: &[u8] = b"SNAPSHOT v1\ntimestamp_ms 3\n";
        let (b, t) = (BLOCK.len() as u64, torn.len() as u64);
        for boundary in b - 20..b + t + 5 {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("f");
            let mut data = [BLOCK, torn].concat();
            data.extend(std::iter::repeat_n(b'\n', (CHUNK + boundary - b - t) as usize));
            assert_eq!(data.len() as u64 - CHUNK, boundary);
            std::fs::write(&p, &data).unwrap();
            let s = snapshot_status(&p, None).unwrap();
            assert_eq!(s.newest.unwrap().offset, 0, "boundary {boundary}");
            assert_eq!(s.torn_tail.map(|t| t.0), Some(b), "boundary {boundary}");
        }
    }

    #[test]
    fn fork_is_found_at_every_depth_with_gaps_in_the_stored_heights() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("db");
        ReorgDb::create(&p).unwrap();
        let db = ReorgDb::open(&p, Mode::ReadWrite).unwrap();
        let mut b = Batch::default();
        // Stored: 10..=200 except 50..60 (a gap).
        let stored: Vec<u64> = (10..=200).filter(|h| !(50..60).contains(h)).collect();
        for h in &stored {
            b.put_block(*h, &format!("{h:064x}"));
        }
        db.write(b).unwrap();
        let node = |fork: u64, tip: u64| {
            move |h: u64| -> Result<Option<String>> {
                Ok((h <= tip).then(|| {
                    if h >= fork {
                        format!("{:064x}", h + 1_000_000)
                    } else {
                        format!("{h:064x}")
                    }
                }))
            }
        };
        assert_eq!(fork_with(&db, 200, node(u64::MAX, 200)).unwrap(), None);
        // A node behind, holding the stored hashes up to its tip.
        assert_eq!(fork_with(&db, 150, node(u64::MAX, 150)).unwrap(), None);
        for fork in [200, 199, 150, 81, 60, 55, 50, 49, 11, 10, 3, 0] {
            let lookups = std::cell::Cell::new(0);
            let n = node(fork, 300);
            let f = fork_with(&db, 300, |h| {
                lookups.set(lookups.get() + 1);
                n(h)
            })
            .unwrap()
            .unwrap();
            // The fork is the lowest stored height at or above the node's fork.
            let want = *stored.iter().find(|h| **h >= fork).unwrap();
            assert_eq!(
                (f.height, f.depth, f.stored_tip),
                (want, 200 - want + 1, 200),
                "fork {fork}"
            );
            assert!(lookups.get() <= 20, "fork {fork}: {} lookups", lookups.get());
        }
        // The node behind and forked below its tip.
        let f = fork_with(&db, 120, node(100, 120)).unwrap().unwrap();
        assert_eq!((f.height, f.depth), (100, 101));
    }

    #[test]
    fn disk_usage_follows_a_symlinked_root() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("f"), vec![1u8; 100_000]).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(disk_usage(&link).unwrap(), disk_usage(&real).unwrap());
        assert!(disk_usage(&link).unwrap() >= 100_000);
    }

    #[test]
    fn empty_database_is_healthy() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("db");
        ReorgDb::create(&p).unwrap();
        let db = ReorgDb::open(&p, Mode::ReadOnly).unwrap();
        let st = db_status(&db).unwrap();
        assert_eq!(st.corrupt, 0, "{:?}", st.errors);
        assert_eq!(st.tip, None);
        assert!(disk_usage(&p).unwrap() > 0);
    }

    #[test]
    fn counts_anchors_events_and_corrupt_records() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("db");
        ReorgDb::create(&p).unwrap();
        {
            let db = ReorgDb::open(&p, Mode::ReadWrite).unwrap();
            let mut b = Batch::default();
            b.put_block(7, &"ab".repeat(32));
            for (i, s) in [AnchorStatus::Confirmed, AnchorStatus::InvalidatedReorg]
                .into_iter()
                .enumerate()
            {
                b.put_anchor(&AnchorRecord {
                    anchor_hash: format!("{i:064x}"),
                    bitcoin_tx_id: "cd".repeat(32),
                    bitcoin_height: 5 + i as u64,
                    confirmations: 1,
                    broadcast_time: 0,
                    retry_count: 0,
                    status: s,
                    l2_state_root: "ef".repeat(32),
                });
            }
            b.record_reorg(
                0,
                &ReorgEvent {
                    reorg_height: 6,
                    old_block_hash: "aa".repeat(32),
                    new_block_hash: "bb".repeat(32),
                    detected_at: 1_700_000_000_000,
                    invalidated_anchors: vec![format!("{:064x}", 1)],
                },
            );
            db.write(b).unwrap();
        }
        let db = ReorgDb::open(&p, Mode::ReadOnly).unwrap();
        let st = db_status(&db).unwrap();
        assert_eq!(st.corrupt, 0, "{:?}", st.errors);
        assert_eq!(st.anchors, [0, 1, 1, 0]);
        assert_eq!(st.reorg_events, 1);
        assert_eq!(st.last_event.as_ref().map(|e| e.1.reorg_height), Some(6));
        assert_eq!(st.tip, Some(7));
        // the invalidated anchor's height does not count
        assert_eq!(st.newest_mined_anchor_height, Some(5));
    }
}
