//! Verifying every snapshot of a file on all cores (`ailee_l2_verify --all`).
//!
//! One thread streams the file in chunks of whole blocks
//! ([`SnapshotFile`]); worker threads parse and hash them, up to [`BATCH`]
//! blocks at a time; the caller's thread receives the results in file
//! order. Channels are bounded, so memory stays at a few chunks and a bounded
//! number of reports whatever the file holds.

use crate::progress::Progress;
use crate::scan::{Chunk, Note, Span};
use crate::snapfile::SnapshotFile;
use crate::verify::{check_block, Verdict};
use crate::{cancel, Error, Result};
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
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

/// Blocks one work item holds at most: with snapshots of 100 bytes an 8 MiB
/// chunk holds ~87,000 of them, and a report for every block of every chunk
/// in flight was 212 MB (issue 25). Items are handed out in order and at
/// most [`ITEMS`] are in flight, so the reports held are bounded by
/// `BATCH × ITEMS` whatever the file holds.
const BATCH: usize = 2048;
/// Work items in flight (queued, being checked, or waiting to be reported).
const ITEMS: usize = 16;

/// A chunk's bytes, shared by its work items; the last item to be reported
/// hands the buffer back to the reader.
struct Shared {
    data: Vec<u8>,
    offset: u64,
    len: usize,
    pooled: bool,
}

/// Up to [`BATCH`] blocks of one chunk; `last` for the chunk's last item,
/// which carries its notes.
struct Item {
    chunk: Arc<Shared>,
    blocks: Vec<Span>,
    notes: Vec<Note>,
    last: bool,
}

struct Done {
    chunk: Arc<Shared>,
    results: Vec<(Span, Verdict)>,
    notes: Vec<Note>,
    last: bool,
}

/// Splits a chunk into work items (at least one, for its notes).
fn items(c: Chunk) -> Vec<Item> {
    let n = c.blocks.len().div_ceil(BATCH).max(1);
    let shared = Arc::new(Shared {
        len: c.data.len(),
        data: c.data,
        offset: c.offset,
        pooled: c.pooled,
    });
    let mut notes = Some(c.notes);
    let mut blocks = c.blocks.into_iter();
    (0..n)
        .map(|i| {
            let last = i + 1 == n;
            Item {
                chunk: Arc::clone(&shared),
                blocks: blocks.by_ref().take(BATCH).collect(),
                notes: if last {
                    notes.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                last,
            }
        })
        .collect()
}

/// The reader thread: chunks of the file, split into work items, each sent
/// once a credit allows; chunk buffers come back through `spare_rx`.
fn read_items(
    sf: &SnapshotFile,
    pool: usize,
    spare_rx: Receiver<Vec<u8>>,
    credit_rx: Receiver<()>,
    work_tx: SyncSender<(u64, Item)>,
) -> Result<()> {
    let mut chunks = sf.chunks();
    let mut seq = 0u64;
    let mut allocated = 1; // the scanner's first buffer
    loop {
        while let Ok(b) = spare_rx.try_recv() {
            chunks.recycle(b);
        }
        if !chunks.has_spare() {
            if allocated < pool {
                allocated += 1;
            } else {
                match spare_rx.recv() {
                    Ok(b) => chunks.recycle(b),
                    Err(_) => return Ok(()), // the consumer stopped
                }
            }
        }
        let Some(chunk) = chunks.next_chunk()? else {
            return Ok(());
        };
        for item in items(chunk) {
            if credit_rx.recv().is_err() || work_tx.send((seq, item)).is_err() {
                return Ok(()); // the consumer stopped
            }
            seq += 1;
        }
    }
}

/// A worker thread: checks the blocks of work items until the queue closes.
fn check_items(rx: &Mutex<Receiver<(u64, Item)>>, tx: SyncSender<(u64, Done)>) {
    let mut buf = Vec::new();
    loop {
        let next = rx.lock().map(|r| r.recv());
        let Ok(Ok((seq, item))) = next else { break };
        let data = &item.chunk.data;
        let results = item
            .blocks
            .iter()
            .map(|sp| (*sp, check_block(&data[sp.start..sp.end], &mut buf)))
            .collect();
        let done = Done {
            chunk: item.chunk,
            results,
            notes: item.notes,
            last: item.last,
        };
        if tx.send((seq, done)).is_err() {
            break;
        }
    }
}

/// The caller's side: results in file order to `on_block`, each item's
/// credit given back, each chunk's buffer handed back to the reader.
struct Reporter<'p> {
    progress: &'p dyn Progress,
    spare_tx: Sender<Vec<u8>>,
    credit_tx: SyncSender<()>,
    number: usize,
    covered: u64,
    notes: Vec<Note>,
}

impl Reporter<'_> {
    fn report(&mut self, done: Done, on_block: &mut impl FnMut(BlockReport) -> Result<()>) -> Result<()> {
        self.notes.extend(done.notes);
        let offset = done.chunk.offset;
        for (sp, verdict) in done.results {
            self.number += 1;
            let r = BlockReport {
                number: self.number,
                offset: offset + sp.start as u64,
                line: sp.line,
                verdict,
            };
            on_block(r).and_then(|_| cancel::check())?;
        }
        if done.last {
            let end = offset + done.chunk.len as u64;
            self.progress.advance(end.saturating_sub(self.covered));
            self.covered = self.covered.max(end);
            let pooled = done.chunk.pooled;
            // The last item of a chunk holds its only reference (earlier
            // items were reported and dropped).
            match Arc::try_unwrap(done.chunk) {
                Ok(sh) if pooled => drop(self.spare_tx.send(sh.data)),
                Err(_) if pooled => drop(self.spare_tx.send(Vec::new())),
                _ => {}
            }
        }
        let _ = self.credit_tx.send(());
        Ok(())
    }
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
    // Every queue is short: at most a few chunks and ITEMS work items exist
    // at any time, whatever the file size.
    let path = sf.path();
    let (work_tx, work_rx) = sync_channel::<(u64, Item)>(threads);
    let work_rx: Arc<Mutex<Receiver<_>>> = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<(u64, Done)>(threads);
    // Credits for work items: the reader takes one per item, the consumer
    // gives it back once the item is reported.
    let (credit_tx, credit_rx) = sync_channel::<()>(ITEMS);
    for _ in 0..ITEMS {
        let _ = credit_tx.send(());
    }
    // A fixed pool of chunk buffers: processed ones travel back to the reader,
    // which waits for one rather than allocating when the pool is in use. No
    // buffer is ever freed mid-run, so the allocator cannot fragment and
    // memory stays flat whatever the file size.
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let pool = threads * 2 + 2;
    std::thread::scope(|s| -> Result<Vec<Note>> {
        let reader_thread = s.spawn(move || read_items(sf, pool, spare_rx, credit_rx, work_tx));
        for _ in 0..threads {
            let rx = Arc::clone(&work_rx);
            let tx = done_tx.clone();
            s.spawn(move || check_items(&rx, tx));
        }
        // Only the workers hold the work queue: if they stop, the reader stops.
        drop(work_rx);
        drop(done_tx);
        let mut rep = Reporter {
            progress,
            spare_tx,
            credit_tx,
            number: 0,
            covered: 0,
            notes: Vec::new(),
        };
        let mut pending = BTreeMap::new();
        let mut next_seq = 0u64;
        let mut outcome = Ok(());
        'recv: for (seq, done) in done_rx.iter() {
            pending.insert(seq, done);
            while let Some(done) = pending.remove(&next_seq) {
                next_seq += 1;
                if let Err(e) = rep.report(done, &mut on_block) {
                    outcome = Err(e);
                    break 'recv;
                }
            }
        }
        drop(done_rx);
        let notes = std::mem::take(&mut rep.notes);
        drop(rep); // the reader sees the consumer gone (spare and credit queues)
        let read = reader_thread
            .join()
            .unwrap_or_else(|_| Err(Error::io(path, std::io::Error::other("reader thread panicked (a bug)"))));
        outcome?;
        read?;
        progress.finish();
        Ok(notes)
    })
}
