//! Verifying every snapshot of a file on all cores (`ailee_l2_verify --all`).
//!
//! One thread streams the file through the [`Scanner`]; worker threads parse
//! and hash whole chunks; the caller's thread receives the results in file
//! order. Channels are bounded, so memory stays at a few chunks whatever the
//! file size.

use crate::progress::Progress;
use crate::scan::{Chunk, Note, Span};
use crate::snapfile::SnapshotFile;
use crate::verify::{check_block, Verdict};
use crate::{cancel, Error, Result};
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

/// One complete snapshot and what its block says about itself.
#[derive(Debug)]
pub struct BlockReport {
    /// Number of the snapshot (from 1, oldest first).
    pub number: usize,
    /// Byte offset of its header.
    pub offset: u64,
    /// File line of its header.
    pub line: usize,
    pub verdict: Verdict,
}

struct Done {
    offset: u64,
    len: usize,
    data: Vec<u8>,
    /// The buffer belongs to the scanner's pool (not a large block read apart).
    pooled: bool,
    results: Vec<(Span, Verdict)>,
    notes: Vec<Note>,
}

/// Checks every complete block of `sf`, calling `on_block` in file order.
/// Returns the scanner's notes (torn blocks, junk, missing final newline).
pub fn check_all(
    sf: &SnapshotFile,
    threads: usize,
    progress: &dyn Progress,
    mut on_block: impl FnMut(BlockReport) -> Result<()>,
) -> Result<Vec<Note>> {
    let threads = threads.max(1);
    // Every queue is short: at most ~3 chunks per thread exist at any time,
    // whatever the file size.
    let path = sf.path();
    let (work_tx, work_rx) = sync_channel::<(u64, Chunk, bool)>(threads);
    let work_rx: Arc<Mutex<Receiver<_>>> = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<(u64, Done)>(threads);
    // A fixed pool of chunk buffers: processed ones travel back to the reader,
    // which waits for one rather than allocating when the pool is in use. No
    // buffer is ever freed mid-run, so the allocator cannot fragment and
    // memory stays flat whatever the file size.
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let pool = threads * 2 + 2;
    let mut notes = Vec::new();
    std::thread::scope(|s| -> Result<Vec<Note>> {
        let reader_thread = s.spawn(move || -> Result<()> {
            let mut sc = sf.scanner();
            let mut seq = 0u64;
            let mut allocated = 1; // the scanner's first buffer
            loop {
                while let Ok(b) = spare_rx.try_recv() {
                    sc.recycle(b);
                }
                if !sc.has_spare() {
                    if allocated < pool {
                        allocated += 1;
                    } else {
                        match spare_rx.recv() {
                            Ok(b) => sc.recycle(b),
                            Err(_) => break, // the consumer stopped
                        }
                    }
                }
                let Some(mut chunk) = sc.next_chunk().map_err(|e| Error::io(path, e))? else {
                    break;
                };
                cancel::check()?;
                // A block too long for the scanner's buffer goes first, on its own.
                if let Some(l) = chunk.large.take() {
                    let mut notes = Vec::new();
                    let data = sf.read_large(&l, &mut notes)?;
                    let blocks = match &data {
                        Some(d) => vec![Span {
                            start: 0,
                            end: d.len(),
                            line: l.line,
                        }],
                        None => Vec::new(),
                    };
                    let large = Chunk {
                        data: data.unwrap_or_default(),
                        offset: l.offset,
                        blocks,
                        large: None,
                        notes,
                    };
                    if work_tx.send((seq, large, false)).is_err() {
                        break;
                    }
                    seq += 1;
                }
                if work_tx.send((seq, chunk, true)).is_err() {
                    break; // the consumer stopped
                }
                seq += 1;
            }
            Ok(())
        });
        for _ in 0..threads {
            let rx = Arc::clone(&work_rx);
            let tx = done_tx.clone();
            s.spawn(move || {
                let mut buf = Vec::new();
                loop {
                    let next = rx.lock().map(|r| r.recv());
                    let Ok(Ok((seq, chunk, pooled))) = next else { break };
                    let results = chunk
                        .blocks
                        .iter()
                        .map(|sp| (*sp, check_block(&chunk.data[sp.start..sp.end], &mut buf)))
                        .collect();
                    let done = Done {
                        offset: chunk.offset,
                        len: chunk.data.len(),
                        results,
                        notes: chunk.notes,
                        data: chunk.data,
                        pooled,
                    };
                    if tx.send((seq, done)).is_err() {
                        break;
                    }
                }
            });
        }
        // Only the workers hold the work queue: if they stop, the reader stops.
        drop(work_rx);
        drop(done_tx);
        let mut pending = BTreeMap::new();
        let mut next_seq = 0u64;
        let mut number = 0usize;
        let mut covered = 0u64;
        let mut outcome = Ok(());
        'recv: for (seq, done) in done_rx.iter() {
            pending.insert(seq, done);
            while let Some(done) = pending.remove(&next_seq) {
                next_seq += 1;
                let end = done.offset + done.len as u64;
                progress.advance(end.saturating_sub(covered));
                covered = covered.max(end);
                notes.extend(done.notes);
                if done.pooled {
                    let _ = spare_tx.send(done.data);
                }
                for (sp, verdict) in done.results {
                    number += 1;
                    let r = BlockReport {
                        number,
                        offset: done.offset + sp.start as u64,
                        line: sp.line,
                        verdict,
                    };
                    if let Err(e) = on_block(r).and_then(|_| cancel::check()) {
                        outcome = Err(e);
                        break 'recv;
                    }
                }
            }
        }
        drop(done_rx);
        drop(spare_tx);
        let read = reader_thread
            .join()
            .unwrap_or_else(|_| Err(Error::io(path, std::io::Error::other("reader thread panicked (a bug)"))));
        outcome?;
        read?;
        progress.finish();
        Ok(std::mem::take(&mut notes))
    })
}
