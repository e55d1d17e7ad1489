//! Generates a reorg database for benchmarks (scripts/bench_monitor.sh):
//! `gen_reorg_db PATH BLOCKS ANCHORS EVENTS` creates PATH with BLOCKS block
//! hashes (heights 0..BLOCKS), ANCHORS anchor records (mostly CONFIRMED, mined
//! at increasing heights) and EVENTS reorg events with the counter, in
//! batches, as the node would have written them over time.

use ailee_core::records::{AnchorRecord, AnchorStatus, ReorgEvent};
use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use std::path::Path;

fn hex(n: u64, salt: u64) -> String {
    format!("{:016x}{:016x}{:016x}{:016x}", n, salt, n ^ salt, n.wrapping_mul(31))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        return Err("usage: gen_reorg_db PATH BLOCKS ANCHORS EVENTS".into());
    }
    let path = Path::new(&a[1]);
    let (blocks, anchors, events): (u64, u64, u64) = (a[2].parse()?, a[3].parse()?, a[4].parse()?);
    ReorgDb::create(path)?;
    let db = ReorgDb::open(path, Mode::ReadWrite)?;
    let mut b = Batch::default();
    for h in 0..blocks {
        b.put_block(h, &hex(h, 1));
        if b.len() >= 100_000 {
            db.write(std::mem::take(&mut b))?;
        }
    }
    for i in 0..anchors {
        let status = match i % 50 {
            0 => AnchorStatus::InvalidatedReorg,
            1 => AnchorStatus::Pending,
            _ => AnchorStatus::Confirmed,
        };
        b.put_anchor(&AnchorRecord {
            anchor_hash: hex(i, 2),
            bitcoin_tx_id: hex(i, 3),
            bitcoin_height: blocks.saturating_sub(anchors) + i,
            confirmations: 6,
            broadcast_time: 1_700_000_000_000 + i,
            retry_count: 0,
            status,
            l2_state_root: hex(i, 4),
        });
        if b.len() >= 100_000 {
            db.write(std::mem::take(&mut b))?;
        }
    }
    db.write(b)?;
    for id in 0..events {
        let mut b = Batch::default();
        b.record_reorg(
            id,
            &ReorgEvent {
                reorg_height: blocks.saturating_sub(100 * (events - id)),
                old_block_hash: hex(id, 5),
                new_block_hash: hex(id, 6),
                detected_at: 1_700_000_000_000 + id,
                invalidated_anchors: vec![hex(id * 50, 2)],
            },
        );
        db.write(b)?;
    }
    db.flush()?;
    Ok(())
}
