//! Anchors on Bitcoin: rebuilding anchor records from the chain
//! (`ailee_resync_blocks --anchors-from`) and proving a snapshot's own anchor
//! on the chain ([`verify_on_chain`], SPEC §2), the last step of the one
//! verifier (`crate::verifier`, `ailee_l2_verify --reorg-db P --bitcoin-rpc
//! URL`) and of the backup's on-chain check.
//!
//! An anchor is found by its `OP_RETURN` script (SPEC §1.3), which depends
//! only on the anchor's payload: the snapshot file says what to look for, the
//! raw blocks say where it is. Nothing here trusts the database over the
//! chain: a record is a pointer (txid, height) that the chain must confirm.

use crate::anchor::{op_return_data, op_return_script};
use crate::identity::AnchorIdentity;
use crate::progress::Progress;
use crate::records::{AnchorLookup, AnchorRecord, AnchorStatus};
use crate::rpc::{Rpc, TxPlace};
use crate::snapfile::Note;
use crate::snapfile::SnapshotFile;
use crate::{cancel, Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// An anchor of the snapshot file, with the script that carries it on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAnchor {
    /// Lower-case anchor hash.
    pub hash: String,
    pub root: String,
    /// Snapshot number (1 = oldest) of its first occurrence.
    pub snapshot: usize,
    pub script: Vec<u8>,
}

/// The anchors of every complete snapshot of `path` that parses, first
/// occurrence of each hash; returns them, the number of snapshots that did
/// not parse (skipped) and the reader's notes (torn tail, oversized blocks).
/// Read like every other tool reads the file ([`SnapshotFile`]): memory stays
/// bounded whatever a damaged file holds, and a snapshot too big to hold
/// while scanning is read again, counted and searched like the others.
pub fn anchors_of_file(path: &Path) -> Result<(Vec<FileAnchor>, usize, Vec<Note>)> {
    let sf = SnapshotFile::open(path)?;
    let mut out: Vec<FileAnchor> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut number, mut bad) = (0usize, 0usize);
    let notes = sf.forward(|b| {
        number = b.number;
        match crate::format::parse_block(b.bytes) {
            Ok(p) => {
                if let Some(a) = &p.snapshot.anchor {
                    let hash = String::from_utf8_lossy(&a.hash).to_ascii_lowercase();
                    if seen.insert(hash.clone()) {
                        out.push(FileAnchor {
                            hash,
                            root: String::from_utf8_lossy(&a.l2_state_root).into_owned(),
                            snapshot: b.number,
                            script: op_return_script(&op_return_data(&a.payload)),
                        });
                    }
                }
            }
            Err(_) => bad += 1,
        }
        Ok(true)
    })?;
    if number == 0 {
        return Err(Error::NoSnapshots(path.to_path_buf()));
    }
    Ok((out, bad, notes))
}

/// Where an anchor was found on the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub anchor: usize,
    pub txid: String,
    pub height: u64,
    /// Header time of its block, Unix milliseconds.
    pub block_time_ms: u64,
}

/// Scans the best chain from `start` to its tip (raw blocks, `block_batch`
/// per JSON-RPC batch; hashes `hash_batch` per batch, pinned to the tip) for
/// the anchors' `OP_RETURN` scripts; the lowest occurrence of each that the
/// operator put on chain (it spends from `identity`, see [`author_of`]) wins.
/// Transactions carrying an anchor's bytes that are not the operator's (a
/// coinbase, anyone else's) are passed over and listed.
pub fn find_on_chain(
    rpc: &Rpc,
    anchors: &[FileAnchor],
    identity: &AnchorIdentity,
    start: u64,
    hash_batch: u64,
    block_batch: u64,
    progress: &dyn Progress,
) -> Result<OnChainScan> {
    let info = rpc.chain_info()?;
    let tip = info.blocks;
    let moved = || Error::Rpc {
        url: rpc.url().to_string(),
        message: "the node's best chain changed during the scan; run it again".into(),
    };
    let mut by_script: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, a) in anchors.iter().enumerate() {
        by_script.entry(a.script.as_slice()).or_default().push(i);
    }
    let mut found: Vec<Option<Found>> = vec![None; anchors.len()];
    let mut ignored: Vec<Ignored> = Vec::new();
    progress.set_total(tip.saturating_add(1).saturating_sub(start));
    let block_batch = block_batch.max(1);
    let step = hash_batch.max(block_batch);
    let mut h = start;
    while h <= tip && !by_script.is_empty() {
        cancel::check()?;
        let end = tip.min(h.saturating_add(step - 1));
        let hashes = rpc.block_hashes_pinned(h..=end, (tip, &info.best))?.ok_or_else(moved)?;
        for (k, part) in hashes
            .chunks(usize::try_from(block_batch).unwrap_or(1).max(1))
            .enumerate()
        {
            cancel::check()?;
            let base = h + (k as u64).saturating_mul(block_batch);
            // Validated by the RPC layer (parsed whole, the hash asked for);
            // fetched in batches bounded by bytes as they are consumed.
            for (i, raw) in rpc.blocks(part).enumerate() {
                let height = base + i as u64;
                let raw = raw?;
                let block = raw.block()?;
                for tx in &block.txs {
                    for s in &tx.output_scripts {
                        let Some(s) = op_return_of(s) else {
                            continue;
                        };
                        if !by_script.contains_key(s) {
                            continue;
                        }
                        let txid = tx.txid();
                        match author_of(rpc, tx, Some(identity))? {
                            Author::Operator => {}
                            Author::NotOperator(why) | Author::Unproven(why) => {
                                for &a in &by_script[s] {
                                    ignored.push(Ignored {
                                        anchor: a,
                                        txid: txid.clone(),
                                        height,
                                        why: why.clone(),
                                    });
                                }
                                continue;
                            }
                        }
                        if let Some(idx) = by_script.remove(s) {
                            for a in idx {
                                found[a] = Some(Found {
                                    anchor: a,
                                    txid: txid.clone(),
                                    height,
                                    block_time_ms: block.time().saturating_mul(1000),
                                });
                            }
                        }
                    }
                }
            }
        }
        progress.advance(end - h + 1);
        if end == u64::MAX {
            break;
        }
        h = end + 1;
    }
    if rpc.block_hash_at(tip)?.as_deref() != Some(info.best.as_str()) {
        return Err(moved());
    }
    progress.finish();
    Ok(OnChainScan {
        tip,
        found: found.into_iter().flatten().collect(),
        ignored,
    })
}

/// What [`find_on_chain`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnChainScan {
    /// The tip scanned to.
    pub tip: u64,
    /// The operator's anchor transactions, lowest first.
    pub found: Vec<Found>,
    /// Transactions carrying an anchor's bytes that are not the operator's.
    pub ignored: Vec<Ignored>,
}

/// A transaction that carries an anchor's `OP_RETURN` but does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub anchor: usize,
    pub txid: String,
    pub height: u64,
    /// Why it is not the operator's.
    pub why: String,
}

/// Who put a transaction on chain, as far as the anchoring identity tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// Every input spends an output of the anchoring identity.
    Operator,
    /// A coinbase, or an input spends someone else's output: why.
    NotOperator(String),
    /// Cannot tell (no identity configured, a spent transaction the node
    /// cannot show): why.
    Unproven(String),
}

/// Checks that `tx` spends only from `identity`, on the outputs it spends
/// (fetched from the node, each checked against its id). A coinbase spends
/// nothing and never counts; without an identity nothing is proven.
pub fn author_of(rpc: &Rpc, tx: &crate::block::Tx<'_>, identity: Option<&AnchorIdentity>) -> Result<Author> {
    if tx.is_coinbase() {
        return Ok(Author::NotOperator(
            "it is a coinbase (a miner's output, which no key signed)".into(),
        ));
    }
    let Some(id) = identity else {
        return Ok(Author::Unproven(format!(
            "no anchoring identity is configured (DATA_DIR/{} or --anchor-identity FILE): anyone can put an \
             OP_RETURN on Bitcoin, only a transaction that spends from the operator's key proves who anchored",
            crate::identity::FILE_NAME
        )));
    };
    if tx.inputs.is_empty() {
        return Ok(Author::NotOperator("it spends nothing".into()));
    }
    let mut prev: Vec<String> = tx.inputs.iter().map(|i| i.txid.clone()).collect();
    prev.sort();
    prev.dedup();
    let raws = rpc.raw_txs(&prev)?;
    for (n, input) in tx.inputs.iter().enumerate() {
        let at = prev
            .binary_search(&input.txid)
            .map_err(|_| Error::Integrity("input list changed".into()))?;
        let Some(raw) = &raws[at] else {
            return Ok(Author::Unproven(format!(
                "the node cannot show transaction {} whose output input {n} spends (run bitcoind with \
                 -txindex=1, or check through the node whose wallet holds the anchoring key)",
                input.txid
            )));
        };
        let spent = crate::block::parse_tx_bytes(raw).map_err(|e| Error::Rpc {
            url: rpc.url().to_string(),
            message: format!("transaction {}: {e}", input.txid),
        })?;
        let script = usize::try_from(input.vout)
            .ok()
            .and_then(|v| spent.output_scripts.get(v));
        match script {
            Some(s) if id.owns(s) => {}
            Some(s) => {
                return Ok(Author::NotOperator(format!(
                    "input {n} spends output {} of {}, whose script {} is not in the anchoring identity ({})",
                    input.vout,
                    input.txid,
                    crate::root::hex(s),
                    id.source.display()
                )))
            }
            None => {
                return Ok(Author::NotOperator(format!(
                    "input {n} spends output {} of {}, which has no such output",
                    input.vout, input.txid
                )))
            }
        }
    }
    Ok(Author::Operator)
}

/// The `OP_RETURN` script of an output: as is, or after the `OP_FALSE` that
/// Bitcoin SV nodes put in front of it (`00 6a …`, the same data output).
fn op_return_of(script: &[u8]) -> Option<&[u8]> {
    match script {
        [0x6a, ..] => Some(script),
        [0x00, 0x6a, ..] => Some(&script[1..]),
        _ => None,
    }
}

/// The snapshot's own anchor in the reorg database (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnRecord {
    /// CONFIRMED.
    Confirmed(AnchorRecord),
    /// PENDING: a warning.
    Pending(AnchorRecord),
    /// Not recorded: a warning (an integrity failure with `--bitcoin-rpc`).
    Absent,
    /// INVALIDATED_REORG or FAILED_ORPHANED: the snapshot fails.
    Void(AnchorRecord),
}

/// Looks up `hash` (as written, then lower-cased).
pub fn own_record(db: &dyn AnchorLookup, hash: &str) -> Result<OwnRecord> {
    Ok(match db.anchor_any_case(hash)? {
        None => OwnRecord::Absent,
        Some(r) if r.status.is_void() => OwnRecord::Void(r),
        Some(r) if r.status == AnchorStatus::Pending => OwnRecord::Pending(r),
        Some(r) => OwnRecord::Confirmed(r),
    })
}

/// The on-chain verdict on a snapshot's own anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnChain {
    /// In the best chain with enough confirmations, carrying exactly the script.
    Proven {
        txid: String,
        height: u64,
        confirmations: u64,
    },
    /// Recorded, but not (yet) provable: not mined, or too few confirmations. Exit 1.
    NotYet(String),
    /// The chain contradicts the record, or there is no record. Exit 2.
    Contradicted(String),
}

/// Checks the snapshot's own anchor (`hash`, whose `OP_RETURN` carries
/// `payload`) on the node's best chain, through the record in `db`.
pub fn verify_on_chain(
    db: &dyn AnchorLookup,
    rpc: &Rpc,
    hash: &str,
    payload: &[u8],
    min_conf: u64,
    identity: Option<&AnchorIdentity>,
) -> Result<OnChain> {
    let rec = match broadcast_record(db, hash)? {
        Ok(r) => r,
        Err(verdict) => return Ok(verdict),
    };
    let txid = rec.bitcoin_tx_id.to_ascii_lowercase();
    let info = rpc.chain_info()?;
    let tip = info.blocks;
    same_chain(db, rpc, tip, rec.bitcoin_height)?;
    // A node that is behind proves nothing either way (as for resync: lag is not a contradiction).
    if info.ibd || rec.bitcoin_height > tip {
        return Ok(OnChain::NotYet(format!(
            "the node is behind (tip {tip}{}; anchor {hash} is recorded at height {}): not provable yet — \
             let it sync and verify again",
            if info.ibd { ", initial block download" } else { "" },
            rec.bitcoin_height
        )));
    }
    let (block, height) = match locate(rpc, &rec, hash, &txid, tip)? {
        Ok(place) => place,
        Err(verdict) => return Ok(verdict),
    };
    let anchor = Anchored {
        hash,
        txid: &txid,
        script: op_return_script(&op_return_data(payload)),
        recorded_height: rec.bitcoin_height,
        block: &block,
        height,
        confirmations: tip.saturating_sub(height).saturating_add(1),
    };
    anchor.judge(rpc, min_conf, identity)
}

/// The database's record of the anchor `hash`, when it names a broadcast
/// transaction; otherwise the verdict (absent or void: contradicted; no
/// txid: not yet).
fn broadcast_record(db: &dyn AnchorLookup, hash: &str) -> Result<std::result::Result<AnchorRecord, OnChain>> {
    let rec = match own_record(db, hash)? {
        OwnRecord::Absent => {
            return Ok(Err(OnChain::Contradicted(format!(
                "anchor {hash} is not recorded in the reorg database: the node never anchored this state. \
                 If the database was rebuilt (runbook Procedure 3), restore the anchor records with \
                 ailee_resync_blocks --anchors-from <snapshot file>, then verify again"
            ))))
        }
        OwnRecord::Void(r) => {
            return Ok(Err(OnChain::Contradicted(format!(
                "anchor {hash} is {} in the reorg database",
                r.status.name()
            ))))
        }
        OwnRecord::Pending(r) | OwnRecord::Confirmed(r) => r,
    };
    if rec.bitcoin_tx_id.is_empty() {
        return Ok(Err(OnChain::NotYet(format!(
            "anchor {hash} is recorded {} but was never broadcast (no txid): not provable yet",
            rec.status.name()
        ))));
    }
    Ok(Ok(rec))
}

/// The best-chain block that holds the recorded transaction `txid`, and its
/// height: through the node's transaction index, or else the recorded
/// block. Otherwise the verdict (unmined, or no such transaction).
fn locate(
    rpc: &Rpc,
    rec: &AnchorRecord,
    hash: &str,
    txid: &str,
    tip: u64,
) -> Result<std::result::Result<(String, u64), OnChain>> {
    match rpc.tx_places(&[txid.to_string()])?.pop() {
        Some(TxPlace::InBlock { block, confirmations }) => {
            let h = tip.saturating_add(1).saturating_sub(confirmations);
            if rpc.block_hash_at(h)?.as_deref() != Some(block.as_str()) {
                return Err(Error::Rpc {
                    url: rpc.url().to_string(),
                    message: "the node's best chain changed during the check; run it again".into(),
                });
            }
            Ok(Ok((block, h)))
        }
        Some(TxPlace::Unmined) => Ok(Err(if rec.status == AnchorStatus::Confirmed {
            OnChain::Contradicted(format!(
                "anchor {hash} is recorded CONFIRMED (txid {txid}, height {}), but its transaction is in no \
                 best-chain block",
                rec.bitcoin_height
            ))
        } else {
            OnChain::NotYet(format!("anchor {hash}: transaction {txid} is not mined yet"))
        })),
        Some(TxPlace::Unknown(_)) | None => {
            // No transaction index: the recorded block is the place to look.
            let at = if rec.bitcoin_height > 0 && rec.bitcoin_height <= tip {
                rpc.block_hash_at(rec.bitcoin_height)?
            } else {
                None
            };
            Ok(match at {
                Some(b) => Ok((b, rec.bitcoin_height)),
                None if rec.status == AnchorStatus::Confirmed || rec.bitcoin_height > 0 => {
                    Err(OnChain::Contradicted(format!(
                        "anchor {hash} is recorded {} with txid {txid} at height {}, but the node's best chain \
                         holds no such transaction",
                        rec.status.name(),
                        rec.bitcoin_height
                    )))
                }
                None => Err(OnChain::NotYet(format!(
                    "anchor {hash}: the node does not know transaction {txid} (not mined, not in its mempool): \
                     not provable yet — rebroadcast it"
                ))),
            })
        }
    }
}

/// A recorded anchor transaction and the best-chain block that should hold it.
struct Anchored<'a> {
    hash: &'a str,
    txid: &'a str,
    /// The `OP_RETURN` script it must carry.
    script: Vec<u8>,
    recorded_height: u64,
    block: &'a str,
    height: u64,
    confirmations: u64,
}

impl Anchored<'_> {
    /// The verdict on the block's transaction: present, carrying the
    /// script, the operator's, and deep enough.
    fn judge(&self, rpc: &Rpc, min_conf: u64, identity: Option<&AnchorIdentity>) -> Result<OnChain> {
        let Anchored {
            hash,
            txid,
            height,
            confirmations,
            block,
            ..
        } = *self;
        // Validated by the RPC layer: the block asked for, parsed whole.
        let raw = rpc.raw_block(block)?;
        let parsed = raw.block()?;
        let Some(tx) = parsed.txs.iter().find(|t| t.txid() == txid) else {
            return Ok(OnChain::Contradicted(format!(
                "anchor {hash} is recorded with txid {txid} at height {}, but the best chain holds no such \
                 transaction (block {block} at height {height} does not contain it)",
                self.recorded_height
            )));
        };
        if !tx
            .output_scripts
            .iter()
            .any(|s| op_return_of(s) == Some(self.script.as_slice()))
        {
            return Ok(OnChain::Contradicted(format!(
                "transaction {txid} (height {height}) does not carry anchor {hash}: none of its outputs is the \
                 OP_RETURN script {}",
                crate::root::hex(&self.script)
            )));
        }
        match author_of(rpc, tx, identity)? {
            Author::Operator => {}
            Author::NotOperator(why) => {
                return Ok(OnChain::Contradicted(format!(
                    "transaction {txid} (height {height}) carries anchor {hash} but is not the operator's: {why}. \
                     Anyone can put an OP_RETURN on Bitcoin; only a transaction spending from the anchoring \
                     identity proves the node anchored this state"
                )))
            }
            Author::Unproven(why) => {
                return Ok(OnChain::NotYet(format!(
                    "anchor {hash} is on chain (transaction {txid} at height {height}, {confirmations} \
                     confirmation(s)) but its author is unproven: {why}"
                )))
            }
        }
        if confirmations < min_conf {
            return Ok(OnChain::NotYet(format!(
                "anchor {hash}: transaction {txid} is at height {height} with {confirmations} confirmation(s), \
                 fewer than {min_conf}: not provable yet"
            )));
        }
        Ok(OnChain::Proven {
            txid: txid.to_string(),
            height,
            confirmations,
        })
    }
}

/// Is `rpc` the node whose chain the database follows? Its genesis and its
/// hash at `height` (the record's) must be the stored ones where the
/// database has them; otherwise nothing the node says about the anchor is a
/// verdict on the snapshot (exit 1, as resync refuses another chain).
fn same_chain(db: &dyn AnchorLookup, rpc: &Rpc, tip: u64, height: u64) -> Result<()> {
    let mut heights = vec![0];
    if height > 0 && height <= tip {
        heights.push(height);
    }
    for h in heights {
        let Some(stored) = db.block_hash(h)? else {
            continue;
        };
        let node = rpc.block_hash_at(h)?;
        if node.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&stored)) {
            continue;
        }
        return Err(Error::Rpc {
            url: rpc.url().to_string(),
            message: format!(
                "not the node's chain: the reorg database holds block {stored} at height {h}, the node {} — \
                 is --bitcoin-rpc the right node? (after a reorg, run ailee_resync_blocks first)",
                node.map_or_else(|| "has no such height".to_string(), |n| format!("has {n}"))
            ),
        });
    }
    Ok(())
}

/// Payload of the anchor of a snapshot block (for [`verify_on_chain`]).
pub fn anchor_payload(block: &[u8]) -> Option<Vec<u8>> {
    let p = crate::format::parse_block(block).ok()?;
    p.snapshot.anchor.map(|a| a.payload.into_owned())
}
