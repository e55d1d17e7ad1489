//! Bringing `block:*` in line with the node's best chain (SPEC §2,
//! `ailee_resync_blocks`), detecting reorgs at their true fork point.
//!
//! Crash safety comes from the order of the batches:
//! 1. heights are compared chunk by chunk, ascending; hashes that agree with
//!    the node are written as they come (they are right whatever follows);
//! 2. at the first disagreement (after walking below the start height if the
//!    start itself disagrees), ONE batch records the reorg event and counter,
//!    invalidates the anchors at or above the fork, and deletes every stored
//!    height from the fork up — before any new hash above the fork is written;
//! 3. new hashes are written chunk by chunk; anchors are refreshed last.
//!
//! A kill between any two batches leaves stored heights that all agree with
//! the node's chain, so a rerun finds no disagreement and finishes the job.

use crate::progress::Progress;
use crate::records::{AnchorRecord, AnchorStatus, ReorgEvent};
use crate::reorgdb::{Batch, ReorgDb};
use crate::rpc::Rpc;
use crate::{cancel, Result};
use std::collections::BTreeMap;

/// Options of a resync.
#[derive(Debug, Clone)]
pub struct Options {
    pub start: u64,
    /// Heights per JSON-RPC batch request.
    pub batch_size: u64,
    /// Confirmations after which a PENDING anchor becomes CONFIRMED, and the
    /// depth beyond which a reorg is "deep".
    pub confirmations: u64,
    pub dry_run: bool,
}

/// The reorg a resync found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorg {
    pub event_id: u64,
    pub fork_height: u64,
    /// Blocks of the old chain replaced or removed (old tip − fork + 1).
    pub depth: u64,
    pub old_hash: String,
    /// Empty when the node's chain ends below the fork.
    pub new_hash: String,
    pub invalidated: Vec<String>,
}

/// What a resync did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub start: u64,
    pub tip: u64,
    pub blocks_checked: u64,
    pub blocks_written: u64,
    pub blocks_deleted: u64,
    pub reorg: Option<Reorg>,
    pub anchors_confirmed: Vec<String>,
    pub anchors_updated: u64,
}

impl Report {
    /// A reorg deeper than the confirmation threshold: halt and re-anchor.
    pub fn deep(&self, threshold: u64) -> bool {
        self.reorg.as_ref().is_some_and(|r| r.depth > threshold)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Run<'a> {
    db: &'a ReorgDb,
    rpc: &'a Rpc,
    o: &'a Options,
    report: Report,
    /// Stored heights at or above this were deleted by the reorg batch.
    deleted_from: Option<u64>,
}

impl Run<'_> {
    fn commit(&self, b: Batch) -> Result<()> {
        if self.o.dry_run || b.is_empty() {
            return Ok(());
        }
        self.db.write(b)
    }

    fn stored(&self, lo: u64, hi: u64) -> Result<BTreeMap<u64, String>> {
        let mut m = BTreeMap::new();
        for r in self.db.blocks_from(lo) {
            let (h, hash) = r?;
            if h > hi {
                break;
            }
            if self.deleted_from.is_none_or(|d| h < d) {
                m.insert(h, hash);
            }
        }
        Ok(m)
    }

    fn node_hashes(&self, lo: u64, hi: u64) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity((hi - lo + 1) as usize);
        let mut h = lo;
        while h <= hi {
            cancel::check()?;
            let end = hi.min(h + self.o.batch_size - 1);
            out.extend(self.rpc.block_hashes(h..=end)?);
            h = end + 1;
        }
        Ok(out)
    }

    /// The start height disagrees: walk down to the lowest disagreeing height.
    fn fork_below(&self, start: u64) -> Result<u64> {
        let mut fork = start;
        let mut step = 16u64;
        while fork > 0 {
            let lo = fork.saturating_sub(step);
            let stored = self.stored(lo, fork - 1)?;
            let node = self.node_hashes(lo, fork - 1)?;
            for h in (lo..fork).rev() {
                match stored.get(&h) {
                    Some(s) if *s != node[(h - lo) as usize] => fork = h,
                    // Agreement, or nothing stored to compare: the fork is above.
                    _ => return Ok(fork),
                }
            }
            step = (step * 2).min(self.o.batch_size.max(16) * 8);
        }
        Ok(fork)
    }

    fn handle_reorg(&mut self, fork: u64, new_hash: String) -> Result<()> {
        let old_hash = self.db.block_hash(fork)?.unwrap_or_default();
        let old_tip = self.db.tip()?.unwrap_or(fork);
        let event_id = self.db.counter()?.unwrap_or(0);
        let mut b = Batch::default();
        let mut invalidated = Vec::new();
        for a in self.db.anchors()? {
            if !a.status.is_void() && a.bitcoin_height > 0 && a.bitcoin_height >= fork {
                b.put_anchor(&AnchorRecord {
                    status: AnchorStatus::InvalidatedReorg,
                    confirmations: 0,
                    ..a.clone()
                });
                invalidated.push(a.anchor_hash);
            }
        }
        let ev = ReorgEvent {
            reorg_height: fork,
            old_block_hash: old_hash.clone(),
            new_block_hash: new_hash.clone(),
            detected_at: now_ms(),
            invalidated_anchors: invalidated.clone(),
        };
        b.record_reorg(event_id, &ev);
        let deleted = self.db.blocks_from(fork).count() as u64;
        b.delete_blocks_from(fork);
        self.commit(b)?;
        self.report.blocks_deleted += deleted;
        self.deleted_from = Some(fork);
        self.report.reorg = Some(Reorg {
            event_id,
            fork_height: fork,
            depth: old_tip.saturating_sub(fork) + 1,
            old_hash,
            new_hash,
            invalidated,
        });
        Ok(())
    }

    fn refresh_anchors(&mut self) -> Result<()> {
        let tip = self.report.tip;
        let mut b = Batch::default();
        for a in self.db.anchors()? {
            cancel::check()?;
            if a.status.is_void()
                || self
                    .report
                    .reorg
                    .as_ref()
                    .is_some_and(|r| r.invalidated.contains(&a.anchor_hash))
            {
                continue;
            }
            let mut n = a.clone();
            if n.bitcoin_height == 0 && !n.bitcoin_tx_id.is_empty() {
                if let Some((block, _)) = self.rpc.tx_block(&n.bitcoin_tx_id)? {
                    n.bitcoin_height = self.rpc.block_height(&block)?;
                }
            }
            if n.bitcoin_height > 0 && n.bitcoin_height <= tip {
                n.confirmations = tip - n.bitcoin_height + 1;
                if n.status == AnchorStatus::Pending && n.confirmations >= self.o.confirmations {
                    n.status = AnchorStatus::Confirmed;
                    self.report.anchors_confirmed.push(n.anchor_hash.clone());
                }
            }
            if n != a {
                self.report.anchors_updated += 1;
                b.put_anchor(&n);
            }
        }
        self.commit(b)
    }
}

/// Runs a resync; see the module documentation for the order of writes.
pub fn resync(db: &ReorgDb, rpc: &Rpc, o: &Options, progress: &dyn Progress) -> Result<Report> {
    let tip = rpc.block_count()?;
    let mut run = Run {
        db,
        rpc,
        o,
        report: Report {
            start: o.start,
            tip,
            ..Report::default()
        },
        deleted_from: None,
    };
    let chunk = (o.batch_size * 4).max(1);
    progress.set_total(tip.saturating_add(1).saturating_sub(o.start));
    let mut h = o.start;
    while h <= tip {
        cancel::check()?;
        let end = tip.min(h + chunk - 1);
        let node = run.node_hashes(h, end)?;
        let mut stored = run.stored(h, end)?;
        if run.report.reorg.is_none() {
            let first = stored
                .iter()
                .find(|(sh, s)| **s != node[(**sh - h) as usize])
                .map(|(sh, _)| *sh);
            if let Some(m) = first {
                // Hashes below the disagreement agree: keep them before anything else.
                let mut b = Batch::default();
                for x in h..m {
                    if !stored.contains_key(&x) {
                        b.put_block(x, &node[(x - h) as usize]);
                        run.report.blocks_written += 1;
                    }
                }
                run.commit(b)?;
                let fork = if m == o.start { run.fork_below(m)? } else { m };
                let new_hash = if fork >= h {
                    node[(fork - h) as usize].clone()
                } else {
                    rpc.block_hashes(fork..=fork)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| crate::Error::Rpc {
                            url: rpc.url().to_string(),
                            message: format!("getblockhash: no reply for height {fork}"),
                        })?
                };
                run.handle_reorg(fork, new_hash)?;
                if fork < h {
                    // The fork lies below the start: rewrite from the fork up.
                    let below = run.node_hashes(fork, h - 1)?;
                    let mut b = Batch::default();
                    for (i, hash) in below.iter().enumerate() {
                        b.put_block(fork + i as u64, hash);
                        run.report.blocks_written += 1;
                    }
                    run.commit(b)?;
                }
                stored = run.stored(h, end)?;
            }
        }
        let mut b = Batch::default();
        for (i, hash) in node.iter().enumerate() {
            let x = h + i as u64;
            if stored.get(&x) != Some(hash) {
                b.put_block(x, hash);
                run.report.blocks_written += 1;
            }
        }
        run.commit(b)?;
        run.report.blocks_checked += end - h + 1;
        progress.advance(end - h + 1);
        h = end + 1;
    }
    // Stored heights above a shorter tip, all below agreeing: the chain shrank.
    if run.report.reorg.is_none() && db.tip()?.is_some_and(|t| t > tip) {
        run.handle_reorg(tip + 1, String::new())?;
    }
    run.refresh_anchors()?;
    if !o.dry_run {
        db.flush()?;
    }
    progress.finish();
    Ok(run.report)
}
