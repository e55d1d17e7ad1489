//! Bringing `block:*` in line with the node's best chain (SPEC §2,
//! `ailee_resync_blocks`), detecting reorgs at their true fork point — and
//! only real ones: a reorg is a hash that differs at a height the node has.
//!
//! One attempt is two phases:
//! 1. **Read only.** The node's tip and best hash are read in one call and
//!    *pinned*: every batch of hashes ends with `getblockhash(pinned tip)`,
//!    and a batch whose pin no longer matches was read while the chain moved
//!    (it may mix two chains) — the attempt starts again from scratch, up to
//!    [`MAX_ATTEMPTS`] times. In this phase a node in initial block download,
//!    or behind our stored heights with equal hashes up to its tip, is
//!    [`Outcome::Behind`]; a genesis that differs from `block:0`, or a fork
//!    deeper than `max_reorg_depth`, is [`Outcome::Refused`]. A fork is
//!    confirmed with fresh reads of the heights around it before phase 2.
//!    Nothing has been written when either outcome is returned.
//! 2. **Writes, in crash-safe order.** ONE batch records the reorg event and
//!    counter, invalidates the anchors at or above the fork and deletes every
//!    stored height from the fork up; then new hashes are written chunk by
//!    chunk (only where nothing, or the same hash in another case, is stored);
//!    anchors are refreshed last.
//!
//! A kill between any two batches leaves stored heights that all agree with
//! the chain the node had when they were read, so a rerun finds either no
//! disagreement or a real reorg, and finishes the job. If the chain moved
//! after some hashes were written, the next attempt sees those heights differ
//! and records the reorg that really happened.
//!
//! Hashes are compared case-insensitively and written in lower case: a
//! stored hash in upper case is the same block, not a reorg.
//!
//! Anchors: every anchor with a txid whose height is unknown, lies in the
//! range this run examined, or is INVALIDATED_REORG is looked up on the node
//! (batched). One in a best-chain block gets that height (an invalidated one
//! is re-confirmed); one whose transaction is in no best-chain block is never
//! left CONFIRMED; a PENDING one whose txid the node does not know is listed
//! in [`Report::unknown_txids`] and skipped, while the others progress.

use crate::reorgdb::{Batch, ReorgDb};
use ailee_core::progress::Progress;
use ailee_core::rpc::{Rpc, TxPlace};
use ailee_core::{cancel, Error, Result};
use ailee_records::{AnchorRecord, AnchorStatus, ReorgEvent};
use std::collections::BTreeMap;

/// Attempts before giving up on a chain that keeps moving under the run.
pub const MAX_ATTEMPTS: u32 = 5;

/// Default of `--max-reorg-depth`: a fork deeper than this is another chain.
pub const DEFAULT_MAX_REORG_DEPTH: u64 = 100;

/// Options of a resync.
#[derive(Debug, Clone)]
pub struct Options {
    pub start: u64,
    /// Heights per JSON-RPC batch request.
    pub batch_size: u64,
    /// Confirmations after which a PENDING anchor becomes CONFIRMED, and the
    /// depth beyond which a reorg is "deep".
    pub confirmations: u64,
    /// A fork deeper than this (stored tip − fork + 1) is refused as another chain.
    pub max_reorg_depth: u64,
    pub dry_run: bool,
    /// The anchoring identity: with it, an anchor becomes CONFIRMED only if
    /// its transaction spends from it (SPEC §2); without it, confirmations
    /// count whatever transaction the record names (said by the tool).
    pub identity: Option<ailee_core::identity::AnchorIdentity>,
}

/// The reorg a resync found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorg {
    pub event_id: u64,
    pub fork_height: u64,
    /// Blocks of the old chain replaced (stored tip − fork + 1).
    pub depth: u64,
    pub old_hash: String,
    pub new_hash: String,
    pub invalidated: Vec<String>,
}

/// An anchor that needs the operator: `(anchor hash, txid, why)`.
pub type Attention = (String, String, String);

/// What a resync did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub start: u64,
    pub tip: u64,
    pub blocks_checked: u64,
    pub blocks_written: u64,
    /// Lowest and highest height written (when `blocks_written` > 0).
    pub written_heights: Option<(u64, u64)>,
    pub blocks_deleted: u64,
    /// The deepest reorg recorded (set at the end of the run).
    pub reorg: Option<Reorg>,
    /// Reorgs recorded, in order (more than one only if the chain moved during the run).
    pub reorgs: Vec<Reorg>,
    pub anchors_confirmed: Vec<String>,
    /// INVALIDATED_REORG anchors whose transaction is in a best-chain block again.
    pub anchors_reconfirmed: Vec<String>,
    /// Anchors whose transaction is in no best-chain block any more (marked INVALIDATED_REORG).
    pub anchors_orphaned: Vec<Attention>,
    pub anchors_updated: u64,
    /// PENDING anchors whose txid the node does not know (skipped).
    pub unknown_txids: Vec<Attention>,
    /// Anchors left unconfirmed because their transaction is not proven the
    /// operator's (it does not spend from the anchoring identity, or cannot be told).
    pub not_operators: Vec<Attention>,
    /// Attempts made (more than 1 when the chain moved during the run).
    pub attempts: u32,
}

impl Report {
    /// A reorg deeper than the confirmation threshold: halt and re-anchor.
    pub fn deep(&self, threshold: u64) -> bool {
        self.reorgs.iter().any(|r| r.depth > threshold)
    }

    /// What this run committed to the database, for a run that then fails:
    /// "31 block hashes written (heights 101 to 131), …"; empty when nothing
    /// (block hashes, deletions, reorg events) was.
    pub fn written(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.blocks_written > 0 {
            let heights = self
                .written_heights
                .map(|(a, b)| {
                    if a == b {
                        format!(" (height {a})")
                    } else {
                        format!(" (heights {a} to {b})")
                    }
                })
                .unwrap_or_default();
            w.push(format!(
                "{} block hash{} written{heights}",
                self.blocks_written,
                if self.blocks_written == 1 { "" } else { "es" }
            ));
        }
        if self.blocks_deleted > 0 {
            w.push(format!("{} deleted", self.blocks_deleted));
        }
        for r in &self.reorgs {
            w.push(format!(
                "reorg event {} recorded (fork at height {})",
                r.event_id, r.fork_height
            ));
        }
        w
    }
}

/// `e`, and what was written before it ([`Report::written`]): a run that
/// fails after writing says so. What was written agreed with the node's
/// chain when read, so a rerun finishes the job.
pub fn after_writes(e: Error, written: &[String]) -> Error {
    if written.is_empty() || matches!(e, Error::Interrupted) {
        return e;
    }
    Error::AfterWrites {
        error: Box::new(e),
        written: format!(
            "{} before the error (it agrees with the node's chain as read); a rerun finishes the job",
            written.join(", ")
        ),
    }
}

/// How a resync ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The database follows the node's best chain up to `report.tip`.
    Synced(Box<Report>),
    /// The node is behind our stored heights (hashes equal up to its tip) or in
    /// initial block download: nothing was written.
    Behind { tip: u64, stored: Option<u64>, ibd: bool },
    /// The node is on another chain: nothing was written.
    Refused(String),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The chain moved under an attempt (internal: restarts the attempt).
enum Stop {
    Moved,
    Behind { tip: u64, stored: Option<u64>, ibd: bool },
    Refused(String),
    Err(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Err(e)
    }
}

impl From<ailee_records::DecodeError> for Stop {
    fn from(e: ailee_records::DecodeError) -> Stop {
        Stop::Err(e.into())
    }
}

type Step<T> = std::result::Result<T, Stop>;

struct Run<'a> {
    db: &'a ReorgDb,
    rpc: &'a Rpc,
    o: &'a Options,
    report: Report,
    /// The pinned tip: (height, hash).
    pin: (u64, String),
    /// Stored heights at or above this were deleted by the reorg batch (dry run).
    deleted_from: Option<u64>,
    /// Lowest height this attempt compared or wrote.
    examined_from: u64,
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Run<'_> {
    /// Whether an attempt has written anything (never in a dry run).
    fn wrote(&self) -> bool {
        !self.o.dry_run
            && (self.report.blocks_written > 0 || self.report.blocks_deleted > 0 || !self.report.reorgs.is_empty())
    }

    fn commit(&self, b: Batch) -> Result<()> {
        if self.o.dry_run || b.is_empty() {
            return Ok(());
        }
        self.db.write(b)
    }

    fn stored(&self, lo: u64, hi: u64) -> Result<BTreeMap<u64, String>> {
        let mut m = BTreeMap::new();
        if lo > hi {
            return Ok(m);
        }
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

    /// The node's hashes for `lo..=hi`, pinned (batch by batch).
    fn node_hashes(&self, lo: u64, hi: u64) -> Step<Vec<String>> {
        let mut out = Vec::with_capacity(usize::try_from(hi.saturating_sub(lo).saturating_add(1)).unwrap_or(0));
        let mut h = lo;
        while h <= hi {
            cancel::check()?;
            let end = hi.min(h.saturating_add(self.o.batch_size.max(1) - 1));
            match self.rpc.block_hashes_pinned(h..=end, (self.pin.0, &self.pin.1))? {
                Some(v) => out.extend(v),
                None => return Err(Stop::Moved),
            }
            if end == u64::MAX {
                break;
            }
            h = end + 1;
        }
        Ok(out)
    }

    fn node_hash(&self, h: u64) -> Step<String> {
        self.node_hashes(h, h)?
            .pop()
            .ok_or_else(|| Stop::Err(Error::Integrity(format!("no hash for height {h}"))))
    }

    fn refuse_depth(&self, fork_at_most: u64, stored_tip: u64) -> Stop {
        Stop::Refused(format!(
            "the node's chain differs from the stored one at height {fork_at_most} and below: a fork deeper than \
             --max-reorg-depth {} (stored tip {stored_tip}). Real reorgs are not that deep: is --bitcoin-rpc the \
             right node (port, network)? Nothing was written",
            self.o.max_reorg_depth
        ))
    }

    /// `x` disagrees: walk down to the lowest disagreeing height (the fork),
    /// refusing once the fork would be deeper than `max_reorg_depth`.
    fn walk_down(&self, x: u64, stored_tip: u64) -> Step<u64> {
        let mut fork = x;
        let mut step = 16u64;
        let too_deep = |f: u64| stored_tip.saturating_sub(f).saturating_add(1) > self.o.max_reorg_depth;
        loop {
            if too_deep(fork) {
                return Err(self.refuse_depth(fork, stored_tip));
            }
            if fork == 0 {
                return Ok(0);
            }
            let lo = fork.saturating_sub(step);
            let stored = self.stored(lo, fork - 1)?;
            let node = self.node_hashes(lo, fork - 1)?;
            for h in (lo..fork).rev() {
                match stored.get(&h) {
                    Some(s) if !same(s, &node[(h - lo) as usize]) => {
                        fork = h;
                        if too_deep(fork) {
                            return Err(self.refuse_depth(fork, stored_tip));
                        }
                    }
                    // Agreement, or nothing stored to compare: the fork is above.
                    _ => return Ok(fork),
                }
            }
            step = step.saturating_mul(2).min(self.o.batch_size.max(16).saturating_mul(8));
        }
    }

    /// Phase 1: where the stored chain leaves the node's (None: it does not).
    fn find_fork(&mut self) -> Step<Option<(u64, String)>> {
        let (tip, best) = self.pin.clone();
        let stored_tip = self.db.tip()?;
        if let Some(g) = self.db.block_hash(0)? {
            let node0 = self.node_hash(0)?;
            if !same(&g, &node0) {
                return Err(Stop::Refused(format!(
                    "the node's genesis block {node0} is not the stored block:0 {g}: it is on another chain \
                     (network or port?). Nothing was written"
                )));
            }
        }
        let mut first_bad = None;
        if let Some(s) = stored_tip.filter(|s| *s > tip) {
            // Our stored heights go beyond the node's tip: behind, unless the
            // highest height both have differs.
            match self.db.block_at_or_below(tip)? {
                None => {
                    return Err(Stop::Behind {
                        tip,
                        stored: Some(s),
                        ibd: false,
                    })
                }
                Some((h, hash)) => {
                    let node = if h == tip { best } else { self.node_hash(h)? };
                    if same(&hash, &node) {
                        return Err(Stop::Behind {
                            tip,
                            stored: Some(s),
                            ibd: false,
                        });
                    }
                    first_bad = Some(h);
                }
            }
        }
        // Compare every stored height from the start up to both tips.
        let top = stored_tip.map_or(0, |s| s.min(tip));
        let chunk = self.o.batch_size.saturating_mul(4).max(1);
        let mut h = self.o.start;
        if stored_tip.is_some() && first_bad.is_none() {
            while h <= top {
                cancel::check()?;
                let end = top.min(h.saturating_add(chunk - 1));
                let stored = self.stored(h, end)?;
                if let (Some((&lo, _)), Some((&hi, _))) = (stored.first_key_value(), stored.last_key_value()) {
                    let node = self.node_hashes(lo, hi)?;
                    if let Some((&m, _)) = stored.iter().find(|(sh, s)| !same(s, &node[(**sh - lo) as usize])) {
                        first_bad = Some(m);
                        break;
                    }
                }
                if end == u64::MAX {
                    break;
                }
                h = end + 1;
            }
        }
        let Some(m) = first_bad else {
            return Ok(None);
        };
        let s = stored_tip.unwrap_or(m);
        let fork = self.walk_down(m, s)?;
        if fork == 0 {
            return Err(Stop::Refused(
                "the node's chain differs from the stored one from its genesis block: another chain. Nothing was written"
                    .into(),
            ));
        }
        // Confirm with fresh reads: fork differs, the height below agrees (or is not stored).
        let fresh = self.node_hashes(fork - 1, fork)?;
        let below = self.db.block_hash(fork - 1)?;
        let at = self.db.block_hash(fork)?.unwrap_or_default();
        if same(&at, &fresh[1]) || below.is_some_and(|b| !same(&b, &fresh[0])) {
            return Err(Stop::Moved);
        }
        Ok(Some((fork, fresh[1].clone())))
    }

    fn handle_reorg(&mut self, fork: u64, new_hash: String) -> Step<()> {
        let old_hash = self.db.block_hash(fork)?.unwrap_or_default().to_ascii_lowercase();
        let old_tip = self.db.tip()?.unwrap_or(fork);
        let event_id = self.db.next_event_id()?;
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
        self.report.reorgs.push(Reorg {
            event_id,
            fork_height: fork,
            depth: old_tip.saturating_sub(fork) + 1,
            old_hash,
            new_hash,
            invalidated,
        });
        Ok(())
    }

    /// Phase 2b: writes the node's hashes where nothing (or another case) is stored.
    fn write_hashes(&mut self, from: u64, progress: &dyn Progress) -> Step<()> {
        let tip = self.pin.0;
        let chunk = self.o.batch_size.saturating_mul(4).max(1);
        let mut h = from;
        while h <= tip {
            cancel::check()?;
            let end = tip.min(h.saturating_add(chunk - 1));
            let stored = self.stored(h, end)?;
            let needs = (h..=end).any(|x| stored.get(&x).is_none_or(|s| s.bytes().any(|c| c.is_ascii_uppercase())));
            if needs {
                let node = self.node_hashes(h, end)?;
                let mut b = Batch::default();
                let mut written = 0;
                let mut heights: Option<(u64, u64)> = None;
                for (i, hash) in node.iter().enumerate() {
                    let x = h + i as u64;
                    if stored.get(&x) != Some(hash) {
                        b.put_block(x, hash);
                        written += 1;
                        heights = Some(heights.map_or((x, x), |(a, _)| (a, x)));
                    }
                }
                self.commit(b)?;
                self.report.blocks_written += written;
                if let Some((a, z)) = heights {
                    self.report.written_heights = Some(
                        self.report
                            .written_heights
                            .map_or((a, z), |(lo, hi)| (lo.min(a), hi.max(z))),
                    );
                }
            }
            self.report.blocks_checked += end - h + 1;
            progress.advance(end - h + 1);
            if end == u64::MAX {
                break;
            }
            h = end + 1;
        }
        Ok(())
    }

    /// Height of `block` on our (just synced) chain, for a transaction with
    /// `conf` confirmations; `None` when it lies above the pinned tip.
    fn height_of(&self, block: &str, conf: u64) -> Step<Option<u64>> {
        let tip = self.pin.0;
        let guess = tip.checked_sub(conf - 1);
        if let Some(g) = guess {
            if self.stored(g, g)?.get(&g).is_some_and(|s| same(s, block)) {
                return Ok(Some(g));
            }
        }
        // The node's tip grew since the pin (more confirmations), or moved.
        if self.rpc.block_hash_at(tip)?.as_deref() != Some(self.pin.1.as_str()) {
            return Err(Stop::Moved);
        }
        for r in self.db.blocks_from(guess.unwrap_or(0)) {
            let (h, s) = r?;
            if h > tip {
                break;
            }
            if same(&s, block) {
                return Ok(Some(h));
            }
        }
        Ok(None)
    }

    /// Is `txid` in the block stored at `height`? (For nodes without a
    /// transaction index: the raw block is read and searched.)
    fn tx_in_block_at(&self, txid: &str, height: u64) -> Step<bool> {
        let Some(hash) = self.stored(height, height)?.remove(&height) else {
            return Ok(false);
        };
        // Validated by the RPC layer: the block asked for, parsed whole.
        let raw = self.rpc.raw_block(&hash)?;
        let b: ailee_core::block::Block<'_> = raw.block()?;
        Ok(b.txs.iter().any(|t| same(&t.txid(), txid)))
    }

    /// Why the transaction `txid` is not proven the operator's (with an
    /// anchoring identity configured), or `None` when it is — or when no
    /// identity is configured (confirmations then count any transaction).
    fn not_the_operators(&self, txid: &str) -> Step<Option<String>> {
        use ailee_core::onchain::{author_of, Author};
        let Some(id) = &self.o.identity else {
            return Ok(None);
        };
        let Some(raw) = self.rpc.raw_txs(&[txid.to_ascii_lowercase()])?.pop().flatten() else {
            return Ok(Some(format!("the node cannot show transaction {txid}")));
        };
        let tx = ailee_core::block::parse_tx_bytes(&raw).map_err(|e| Error::Rpc {
            url: self.rpc.url().to_string(),
            message: format!("transaction {txid}: {e}"),
        })?;
        Ok(match author_of(self.rpc, &tx, Some(id))? {
            Author::Operator => None,
            Author::NotOperator(why) | Author::Unproven(why) => Some(why),
        })
    }

    /// Where the node has the transactions of the anchors that may have
    /// moved (by anchor hash): those with a txid, not failed, not invalidated
    /// by this run's reorg, unmined, examined by this run or invalidated.
    fn anchor_places<'a>(&self, anchors: &'a [AnchorRecord]) -> Step<BTreeMap<&'a str, TxPlace>> {
        let just_invalidated: Vec<&str> = self
            .report
            .reorgs
            .iter()
            .flat_map(|r| r.invalidated.iter().map(String::as_str))
            .collect();
        let lookup: Vec<&AnchorRecord> = anchors
            .iter()
            .filter(|a| {
                // Invalidated by this run's reorg: reported as such; a later run
                // re-confirms it if its transaction is mined again.
                !just_invalidated.contains(&a.anchor_hash.as_str())
                    && a.status != AnchorStatus::FailedOrphaned
                    && !a.bitcoin_tx_id.is_empty()
                    && (a.bitcoin_height == 0
                        || a.bitcoin_height >= self.examined_from
                        || a.status == AnchorStatus::InvalidatedReorg)
            })
            .collect();
        let mut places: BTreeMap<&str, TxPlace> = BTreeMap::new();
        for part in lookup.chunks(usize::try_from(self.o.batch_size).unwrap_or(500).max(1)) {
            cancel::check()?;
            let txids: Vec<String> = part.iter().map(|a| a.bitcoin_tx_id.to_ascii_lowercase()).collect();
            for (a, p) in part.iter().zip(self.rpc.tx_places(&txids)?) {
                places.insert(a.anchor_hash.as_str(), p);
            }
        }
        Ok(places)
    }

    /// An anchor whose transaction is at height `h` of the best chain: its
    /// height, confirmations and status follow (CONFIRMED only when deep
    /// enough and proven the operator's), and the report says what changed.
    fn place(&mut self, a: &AnchorRecord, n: &mut AnchorRecord, h: u64) -> Step<()> {
        let tip = self.pin.0;
        n.bitcoin_height = h;
        n.confirmations = tip - h + 1;
        let moved = a.bitcoin_height != h;
        let deep = n.confirmations >= self.o.confirmations;
        n.status = match a.status {
            AnchorStatus::Confirmed if !moved => AnchorStatus::Confirmed,
            _ if deep => AnchorStatus::Confirmed,
            _ => AnchorStatus::Pending,
        };
        if n.status == AnchorStatus::Confirmed && (a.status != AnchorStatus::Confirmed || moved) {
            if let Some(why) = self.not_the_operators(&a.bitcoin_tx_id)? {
                // Not proven the operator's: never CONFIRMED by us.
                n.status = AnchorStatus::Pending;
                self.report
                    .not_operators
                    .push((a.anchor_hash.clone(), a.bitcoin_tx_id.clone(), why));
            }
        }
        if n.status == AnchorStatus::Confirmed && a.status != AnchorStatus::Confirmed {
            if a.status == AnchorStatus::InvalidatedReorg {
                self.report.anchors_reconfirmed.push(n.anchor_hash.clone());
            } else {
                self.report.anchors_confirmed.push(n.anchor_hash.clone());
            }
        } else if a.status == AnchorStatus::InvalidatedReorg {
            // Mined again, not yet deep enough: PENDING with its new height.
            self.report.anchors_reconfirmed.push(n.anchor_hash.clone());
        }
        Ok(())
    }

    /// Phase 2c: anchors follow the chain.
    fn refresh_anchors(&mut self) -> Step<()> {
        let tip = self.pin.0;
        let anchors = self.db.anchors()?;
        let places = self.anchor_places(&anchors)?;
        let mut b = Batch::default();
        for a in &anchors {
            cancel::check()?;
            let mut n = a.clone();
            let name = || (a.anchor_hash.clone(), a.bitcoin_tx_id.clone());
            let mut placed: Option<u64> = None;
            let mut orphaned = false;
            match places.get(a.anchor_hash.as_str()) {
                None => {
                    if a.status.is_void() {
                        continue;
                    }
                    if a.bitcoin_height > 0 && a.bitcoin_height <= tip {
                        placed = Some(a.bitcoin_height);
                    }
                }
                Some(TxPlace::InBlock { block, confirmations }) => match self.height_of(block, *confirmations)? {
                    Some(h) => placed = Some(h),
                    None => continue, // mined above the pinned tip: next run
                },
                Some(TxPlace::Unmined) => orphaned = a.bitcoin_height > 0 || a.status == AnchorStatus::Confirmed,
                Some(TxPlace::Unknown(m)) => {
                    if a.bitcoin_height > 0 && a.bitcoin_height <= tip {
                        if self.tx_in_block_at(&a.bitcoin_tx_id, a.bitcoin_height)? {
                            placed = Some(a.bitcoin_height);
                        } else {
                            orphaned = true;
                        }
                    } else if a.status == AnchorStatus::Pending {
                        let (h, t) = name();
                        self.report.unknown_txids.push((h, t, m.clone()));
                        continue;
                    } else {
                        orphaned = a.status == AnchorStatus::Confirmed;
                    }
                }
            }
            if orphaned {
                if a.status.is_void() {
                    continue;
                }
                n.status = AnchorStatus::InvalidatedReorg;
                n.confirmations = 0;
                let (h, t) = name();
                self.report.anchors_orphaned.push((
                    h,
                    t,
                    format!(
                        "its transaction is in no best-chain block (recorded height {})",
                        a.bitcoin_height
                    ),
                ));
            } else if let Some(h) = placed {
                self.place(a, &mut n, h)?;
            }
            if n != *a {
                self.report.anchors_updated += 1;
                b.put_anchor(&n);
            }
        }
        self.commit(b)?;
        Ok(())
    }

    fn attempt(&mut self, progress: &dyn Progress) -> Step<()> {
        let info = self.rpc.chain_info()?;
        self.pin = (info.blocks, info.best.clone());
        self.report.tip = info.blocks;
        self.deleted_from = None;
        if info.ibd {
            return Err(Stop::Behind {
                tip: info.blocks,
                stored: self.db.tip()?,
                ibd: true,
            });
        }
        self.examined_from = self.o.start;
        let fork = self.find_fork()?;
        progress.set_total(info.blocks.saturating_add(1).saturating_sub(self.o.start));
        let mut from = self.o.start;
        if let Some((f, new_hash)) = fork {
            self.handle_reorg(f, new_hash)?;
            from = from.min(f);
            self.examined_from = from;
        }
        self.write_hashes(from, progress)?;
        self.refresh_anchors()
    }
}

/// Runs a resync; see the module documentation for the phases and the order of writes.
pub fn resync(db: &ReorgDb, rpc: &Rpc, o: &Options, progress: &dyn Progress) -> Result<Outcome> {
    let mut run = Run {
        db,
        rpc,
        o,
        report: Report {
            start: o.start,
            ..Report::default()
        },
        pin: (0, String::new()),
        deleted_from: None,
        examined_from: o.start,
    };
    loop {
        run.report.attempts += 1;
        let saved = run.report.clone();
        match run.attempt(progress) {
            Ok(()) => break,
            Err(Stop::Moved) if run.report.attempts < MAX_ATTEMPTS => {
                // What was written stays (it was right when read); counts restart.
                let attempts = run.report.attempts;
                run.report = Report {
                    blocks_written: run.report.blocks_written,
                    written_heights: run.report.written_heights,
                    blocks_deleted: run.report.blocks_deleted,
                    reorgs: run.report.reorgs.clone(),
                    attempts,
                    ..saved
                };
            }
            Err(Stop::Moved) => {
                let written = if run.wrote() { run.report.written() } else { Vec::new() };
                return Err(after_writes(
                    Error::Rpc {
                        url: rpc.url().to_string(),
                        message: format!(
                    "the node's best chain kept changing during the resync ({} attempts); try again when it settles",
                    run.report.attempts
                ),
                    },
                    &written,
                ));
            }
            // Both outcomes promise that nothing was written; after an earlier
            // attempt wrote (the chain then moved to this), say what happened instead.
            Err(Stop::Behind { .. } | Stop::Refused(_)) if run.wrote() => {
                return Err(after_writes(
                    Error::Rpc {
                        url: rpc.url().to_string(),
                        message: "the node's chain changed during the run to one that is behind or unrelated; what \
                                  was written agreed with its chain when read. Run again once the node is settled"
                            .into(),
                    },
                    &run.report.written(),
                ))
            }
            Err(Stop::Behind { tip, stored, ibd }) => return Ok(Outcome::Behind { tip, stored, ibd }),
            Err(Stop::Refused(m)) => return Ok(Outcome::Refused(m)),
            Err(Stop::Err(e)) if run.wrote() => return Err(after_writes(e, &run.report.written())),
            Err(Stop::Err(e)) => return Err(e),
        }
    }
    if !o.dry_run {
        db.flush()?;
    }
    progress.finish();
    run.report.reorg = run.report.reorgs.iter().max_by_key(|r| r.depth).cloned();
    Ok(Outcome::Synced(Box::new(run.report)))
}
