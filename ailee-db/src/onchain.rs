//! Recording anchors found on Bitcoin in the reorg database
//! (`ailee_resync_blocks --anchors-from`); finding them is
//! [`ailee_core::onchain`]'s.

use crate::reorgdb::{Batch, ReorgDb};
use ailee_core::onchain::{FileAnchor, Found};
use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_core::Result;

/// What recording found anchors did.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// New records or records completed (hash).
    pub written: Vec<String>,
    /// Already recorded with the same txid and height.
    pub unchanged: Vec<String>,
    /// Recorded with another txid: left alone (hash, recorded txid, chain txid).
    pub conflicts: Vec<(String, String, String)>,
}

/// Records found anchors: txid, height, confirmations against `tip`, and
/// CONFIRMED at `threshold` confirmations (else PENDING). An existing record
/// is completed (missing txid or height) or, when INVALIDATED_REORG, replaced
/// by what the chain holds; a live record is never given another txid.
pub fn record_found(
    db: &ReorgDb,
    anchors: &[FileAnchor],
    found: &[Found],
    tip: u64,
    threshold: u64,
    dry_run: bool,
) -> Result<Recorded> {
    let mut r = Recorded::default();
    let mut b = Batch::default();
    for f in found {
        let a = &anchors[f.anchor];
        let conf = tip.saturating_sub(f.height).saturating_add(1);
        let status = if conf >= threshold {
            AnchorStatus::Confirmed
        } else {
            AnchorStatus::Pending
        };
        let new = AnchorRecord {
            anchor_hash: a.hash.clone(),
            bitcoin_tx_id: f.txid.clone(),
            bitcoin_height: f.height,
            confirmations: conf,
            broadcast_time: f.block_time_ms,
            retry_count: 0,
            status,
            l2_state_root: a.root.clone(),
        };
        let rec = match db.anchor(&a.hash)? {
            None => new,
            // Another txid stands unless the record is INVALIDATED_REORG (its
            // transaction left the chain; this one carries the anchor now).
            Some(old)
                if !old.bitcoin_tx_id.is_empty()
                    && !old.bitcoin_tx_id.eq_ignore_ascii_case(&f.txid)
                    && old.status != AnchorStatus::InvalidatedReorg =>
            {
                r.conflicts.push((a.hash.clone(), old.bitcoin_tx_id, f.txid.clone()));
                continue;
            }
            Some(old)
                if old.bitcoin_height == f.height
                    && old.status != AnchorStatus::InvalidatedReorg
                    && !old.bitcoin_tx_id.is_empty() =>
            {
                r.unchanged.push(a.hash.clone());
                continue;
            }
            Some(old) if old.status == AnchorStatus::FailedOrphaned => {
                r.conflicts
                    .push((a.hash.clone(), "(FAILED_ORPHANED)".into(), f.txid.clone()));
                continue;
            }
            Some(old) => AnchorRecord {
                broadcast_time: if old.broadcast_time > 0 {
                    old.broadcast_time
                } else {
                    new.broadcast_time
                },
                retry_count: old.retry_count,
                ..new
            },
        };
        b.put_anchor(&rec);
        r.written.push(a.hash.clone());
    }
    if !dry_run && !b.is_empty() {
        db.write(b)?;
        db.flush()?;
    }
    Ok(r)
}
