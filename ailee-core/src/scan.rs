//! Finding block boundaries in a snapshot file (SPEC §1.1 rules 1–3).
//!
//! Only two kinds of line matter for boundaries: a line that *ends* in
//! `SNAPSHOT v1` opens a block (whatever torn bytes were glued before it), and
//! a line that *is* `END_SNAPSHOT` (or `END_SNAPSHOTSNAPSHOT v1`) completes
//! the open one. Both contain `SNAPSHOT`, so a single SIMD substring search
//! finds every candidate and a few bytes of context decide. A quoted string
//! never ends a line, so ids like `"SNAPSHOT v1"` are never mistaken.
//!
//! [`Scanner`] streams the file forward in chunks whose memory is bounded by
//! one chunk plus one block; [`Backward`] walks complete blocks from the end
//! of the file without reading what lies before them (nor the holes of a
//! sparse file). Private to the core: the tools read a snapshot file through
//! [`crate::snapfile::SnapshotFile`], its one door.

use memchr::memmem;
use std::fs::File;
use std::io;
#[cfg(test)]
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

const HEADER: &[u8] = b"SNAPSHOT v1";
/// Bytes of context a candidate needs after its start to be decided.
const LOOKAHEAD: usize = 24;

fn finder() -> &'static memmem::Finder<'static> {
    static F: OnceLock<memmem::Finder<'static>> = OnceLock::new();
    F.get_or_init(|| memmem::Finder::new(b"SNAPSHOT"))
}

/// A boundary line, by position in the scanned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A block starts at this position (the `S` of `SNAPSHOT v1`).
    Header(usize),
    /// An `END_SNAPSHOT` line; the block ends at `end` (after its newline,
    /// or right after the marker when glued to a header or at EOF).
    End { end: usize, newline: bool },
}

/// Is `SNAPSHOT v1` at `i` the end of its line?
fn header_at(d: &[u8], i: usize, eof: bool) -> bool {
    if !d[i..].starts_with(HEADER) {
        return false;
    }
    match &d[i + HEADER.len()..] {
        [] | [b'\r'] => eof,
        [b'\n', ..] | [b'\r', b'\n', ..] => true,
        _ => false,
    }
}

/// Boundary events whose candidate starts in `from..limit`. `prev` is the byte
/// before `d[0]` (`None` at the start of the file); `eof` says `d` ends the file.
fn events(d: &[u8], prev: Option<u8>, eof: bool, from: usize, limit: usize, out: &mut Vec<Event>) {
    for i in finder().find_iter(&d[from..]) {
        let i = from + i;
        if i >= limit {
            break;
        }
        if header_at(d, i, eof) {
            out.push(Event::Header(i));
            continue;
        }
        // `END_SNAPSHOT` must start its line.
        if i < 4 || &d[i - 4..i] != b"END_" {
            continue;
        }
        let before = if i == 4 { prev } else { Some(d[i - 5]) };
        if !matches!(before, None | Some(b'\n')) {
            continue;
        }
        let j = i + 8;
        let ev = match &d[j..] {
            [] | [b'\r'] if eof => Event::End {
                end: d.len(),
                newline: false,
            },
            [b'\n', ..] => Event::End {
                end: j + 1,
                newline: true,
            },
            [b'\r', b'\n', ..] => Event::End {
                end: j + 2,
                newline: true,
            },
            _ if header_at(d, j, eof) => Event::End { end: j, newline: true },
            _ => continue,
        };
        out.push(ev);
    }
}

/// Something the scan noticed outside the complete blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An incomplete block, ignored; `at_eof` for the torn tail.
    Torn { offset: u64, len: u64, at_eof: bool },
    /// The file ends in `END_SNAPSHOT` without a final newline.
    MissingFinalNewline,
    /// Non-blank bytes outside any block.
    Junk { offset: u64, len: u64 },
    /// A complete block larger than the block cap: junk, not read.
    Oversized { offset: u64, len: u64 },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::Torn {
                offset,
                len,
                at_eof: true,
            } => {
                write!(
                    f,
                    "torn snapshot at end of file (byte offset {offset}, {len} bytes) ignored"
                )
            }
            Note::Torn { offset, len, .. } => write!(
                f,
                "torn snapshot at byte offset {offset} ({len} bytes), cut off by a later append, ignored"
            ),
            Note::MissingFinalNewline => write!(f, "file ends without a final newline after END_SNAPSHOT"),
            Note::Junk { offset, len } => write!(f, "{len} bytes outside any snapshot at byte offset {offset} ignored"),
            Note::Oversized { offset, len } => write!(
                f,
                "a block of {len} bytes at byte offset {offset} is larger than the block cap (--max-block-size) and is ignored"
            ),
        }
    }
}

impl Note {
    /// Moves the note's offset by `by` (a scan that started at `by`).
    pub fn shift(&mut self, by: u64) {
        match self {
            Note::Torn { offset, .. } | Note::Junk { offset, .. } | Note::Oversized { offset, .. } => *offset += by,
            Note::MissingFinalNewline => {}
        }
    }
}

/// The torn tail among `notes`, as (byte offset, length).
pub fn torn_tail(notes: &[Note]) -> Option<(u64, u64)> {
    notes.iter().find_map(|n| match n {
        Note::Torn {
            offset,
            len,
            at_eof: true,
        } => Some((*offset, *len)),
        _ => None,
    })
}

/// A chunk of the file holding whole complete blocks.
#[derive(Debug)]
pub struct Chunk {
    /// Bytes of the file from `offset`.
    pub data: Vec<u8>,
    pub offset: u64,
    /// Complete blocks as ranges into `data`, in file order.
    pub blocks: Vec<Span>,
    /// A complete block too long to keep in memory while it was scanned,
    /// which ends in this chunk before all of `blocks`: read it from the file
    /// (if it is within the block cap).
    pub large: Option<Large>,
    pub notes: Vec<Note>,
    /// `data` is one of the scanner's buffers (hand it back with
    /// [`Scanner::recycle`]), not a large block read apart.
    pub pooled: bool,
}

/// A complete block that the scanner did not keep in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Large {
    pub offset: u64,
    pub len: u64,
    /// File line (from 1) of the block's header.
    pub line: usize,
}

/// A complete block inside a [`Chunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    /// File line (from 1) of the block's header.
    pub line: usize,
}

/// What a [`Scanner`] reads: bytes appended to its buffer.
pub trait Source {
    /// Appends the next bytes to `buf`: at least one unless at the end, at
    /// most `max` or `buf`'s spare capacity (whichever is larger). 0 at
    /// the end.
    fn append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;
}

// The tests' sources (a slice, a file through its cursor); the tools read
// by position through `snapfile`'s own source.

/// [`Source::append`] through [`Read`] (zero-fills what it reads into).
#[cfg(test)]
fn append_read(r: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    r.take(max as u64).read_to_end(buf)
}

#[cfg(test)]
impl Source for &[u8] {
    fn append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        append_read(self, buf, max)
    }
}

#[cfg(test)]
impl Source for File {
    fn append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        append_read(self, buf, max)
    }
}

/// Forward, streaming block scanner.
pub struct Scanner<R> {
    reader: R,
    chunk_size: usize,
    /// Unconsumed bytes, starting at file offset `offset`.
    buf: Vec<u8>,
    offset: u64,
    prev: Option<u8>,
    /// Candidates starting before this index of `buf` were already decided.
    scanned: usize,
    open: Option<usize>,
    /// Start of the bytes after the last complete block (for junk reports).
    gap: Option<usize>,
    /// File offset of the first byte of the gap that is not a line break,
    /// once that byte has left the buffer (a gap longer than a chunk).
    gap_junk: Option<u64>,
    eof: bool,
    done: bool,
    events: Vec<Event>,
    /// `\n` bytes in the file before `buf[nl_pos]`.
    nl_count: usize,
    nl_pos: usize,
    /// Buffers handed back by consumers, reused to avoid page faults.
    spare: Vec<Vec<u8>>,
    /// An open block longer than this is no longer kept in memory.
    hold: usize,
    /// The open block that outgrew `hold`: file offset and line of its header.
    spill: Option<(u64, usize)>,
    /// A complete block longer than this is reported, not handed out.
    cap: u64,
}

/// Default read size of the forward scanner.
pub const CHUNK: usize = 8 << 20;

impl<R: Source> Scanner<R> {
    pub fn with_chunk_size(reader: R, chunk_size: usize) -> Self {
        Scanner {
            reader,
            chunk_size: chunk_size.max(64),
            buf: Vec::new(),
            offset: 0,
            prev: None,
            scanned: 0,
            open: None,
            gap: Some(0),
            gap_junk: None,
            eof: false,
            done: false,
            events: Vec::new(),
            nl_count: 0,
            nl_pos: 0,
            spare: Vec::new(),
            hold: usize::MAX,
            spill: None,
            cap: u64::MAX,
        }
    }

    /// Reports complete blocks longer than `cap` as [`Note::Oversized`]
    /// instead of handing them out.
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap;
        self
    }

    /// Keeps at most `hold` bytes of an open block in memory; a longer block
    /// is handed out as [`Chunk::large`] (offset and length only) when it
    /// completes, and a longer torn region is never held.
    pub fn with_hold(mut self, hold: usize) -> Self {
        self.hold = hold.max(self.chunk_size);
        self
    }

    fn fill(&mut self) -> io::Result<()> {
        let want = self.buf.len() + self.chunk_size;
        self.buf.reserve(self.chunk_size);
        while self.buf.len() < want {
            let max = want - self.buf.len();
            let n = self.reader.append(&mut self.buf, max);
            match n {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Hands back a chunk's buffer for reuse by the next chunk.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.spare.push(buf);
    }

    /// Whether a recycled buffer is ready (otherwise the next chunk allocates).
    pub fn has_spare(&self) -> bool {
        !self.spare.is_empty()
    }

    /// The next chunk, or `None` after the end of the file.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        self.fill()?;
        let d = &self.buf;
        let limit = if self.eof {
            d.len()
        } else {
            d.len().saturating_sub(LOOKAHEAD)
        };
        self.events.clear();
        events(d, self.prev, self.eof, self.scanned, limit, &mut self.events);
        let mut blocks = Vec::new();
        let mut large = None;
        let mut notes = Vec::new();
        let off = self.offset;
        for ev in &self.events {
            match *ev {
                Event::Header(at) => {
                    if let Some((s, _)) = self.spill.take() {
                        notes.push(Note::Torn {
                            offset: s,
                            len: off + at as u64 - s,
                            at_eof: false,
                        });
                        self.open = Some(at);
                    } else if let Some(s) = self.open.replace(at) {
                        notes.push(Note::Torn {
                            offset: off + s as u64,
                            len: (at - s) as u64,
                            at_eof: false,
                        });
                    } else if let Some(g) = self.gap.take() {
                        junk(d, g, at, off, self.gap_junk.take(), &mut notes);
                    }
                }
                Event::End { end, newline } => {
                    if let Some((s, line)) = self.spill.take() {
                        let len = off + end as u64 - s;
                        if len > self.cap {
                            notes.push(Note::Oversized { offset: s, len });
                        } else {
                            large = Some(Large { offset: s, len, line });
                        }
                        self.gap = Some(end);
                        self.gap_junk = None;
                        if !newline {
                            notes.push(Note::MissingFinalNewline);
                        }
                    } else if let Some(s) = self.open.take() {
                        self.nl_count += count_newlines(&d[self.nl_pos..s]);
                        self.nl_pos = s;
                        if (end - s) as u64 > self.cap {
                            notes.push(Note::Oversized {
                                offset: off + s as u64,
                                len: (end - s) as u64,
                            });
                        } else {
                            blocks.push(Span {
                                start: s,
                                end,
                                line: self.nl_count + 1,
                            });
                        }
                        self.gap = Some(end);
                        self.gap_junk = None;
                        if !newline {
                            notes.push(Note::MissingFinalNewline);
                        }
                    }
                }
            }
        }
        let data = if self.eof {
            self.done = true;
            self.notes_at_eof(off, &mut notes);
            std::mem::take(&mut self.buf)
        } else {
            self.carry(limit, off)
        };
        Ok(Some(Chunk {
            data,
            offset: off,
            blocks,
            large,
            notes,
            pooled: true,
        }))
    }

    /// What the end of the file leaves: a torn block (spilled or held), or
    /// junk after the last complete block.
    fn notes_at_eof(&mut self, off: u64, notes: &mut Vec<Note>) {
        let d = &self.buf;
        if let Some((s, _)) = self.spill.take() {
            notes.push(Note::Torn {
                offset: s,
                len: off + d.len() as u64 - s,
                at_eof: true,
            });
        }
        match self.open {
            Some(s) => notes.push(Note::Torn {
                offset: off + s as u64,
                len: (d.len() - s) as u64,
                at_eof: true,
            }),
            None => {
                if let Some(g) = self.gap {
                    junk(d, g, d.len(), off, self.gap_junk, notes);
                }
            }
        }
    }

    /// Ends a round that is not the last: the open block (or the undecided
    /// tail) moves to a new buffer for the next round; returns the bytes of
    /// this round's chunk.
    fn carry(&mut self, limit: usize, off: u64) -> Vec<u8> {
        let d = &self.buf;
        // An open block that outgrew `hold` is dropped from memory; only
        // where it started is remembered.
        if let Some(s) = self.open {
            if d.len() - s > self.hold {
                self.nl_count += count_newlines(&d[self.nl_pos..s]);
                self.nl_pos = s;
                self.spill = Some((off + s as u64, self.nl_count + 1));
                self.open = None;
            }
        }
        // Keep the open block (or the undecided tail) for the next round.
        let mut keep = self.open.unwrap_or(limit).min(limit);
        if self.spill.is_some() {
            // An `END_SNAPSHOT` candidate is decided by the 5 bytes before its
            // `SNAPSHOT` (`\nEND_`): keep them with the undecided tail.
            keep = keep.saturating_sub(5);
        }
        // A gap that reaches past this chunk: remember where its junk
        // starts, since those bytes leave the buffer.
        if let (Some(g), None) = (self.gap, self.gap_junk) {
            let gap = &d[g.min(keep)..keep];
            if let Some(first) = gap.iter().position(|&b| b != b'\n' && b != b'\r') {
                self.gap_junk = Some(off + (g + first) as u64);
            }
        }
        if self.nl_pos < keep {
            self.nl_count += count_newlines(&d[self.nl_pos..keep]);
            self.nl_pos = keep;
        }
        self.nl_pos -= keep;
        let mut next = self.spare.pop().unwrap_or_default();
        next.reserve(d.len() - keep + self.chunk_size);
        next.extend_from_slice(&d[keep..]);
        self.prev = if keep > 0 { Some(d[keep - 1]) } else { self.prev };
        self.scanned = limit - keep;
        self.open = self.open.map(|s| s - keep);
        self.gap = self.gap.map(|g| g.saturating_sub(keep));
        self.offset += keep as u64;
        std::mem::replace(&mut self.buf, next)
    }
}

/// Reports the gap `d[from..to]` as junk from its first byte that is not a
/// line break — or from `carried`, where an earlier chunk saw it start.
fn junk(d: &[u8], from: usize, to: usize, off: u64, carried: Option<u64>, notes: &mut Vec<Note>) {
    let gap = &d[from.min(to)..to];
    let start = carried.or_else(|| {
        gap.iter()
            .position(|&b| b != b'\n' && b != b'\r')
            .map(|first| off + (from + first) as u64)
    });
    if let Some(start) = start {
        notes.push(Note::Junk {
            offset: start,
            len: off + to as u64 - start,
        });
    }
}

/// A complete block found from the end of the file.
#[derive(Debug, Clone)]
pub struct Found {
    pub offset: u64,
    pub len: u64,
    /// The block's bytes (empty when the walk hands out spans only).
    pub bytes: Vec<u8>,
}

/// Default cap on one block (SPEC §2): a "block" larger than this is junk or
/// a torn region, reported without being held in memory.
pub const BLOCK_CAP: u64 = 256 << 20;

/// The first window [`Backward`] reads (it doubles up to [`WINDOW`]).
pub const FIRST_WINDOW: u64 = 64 << 10;
/// The largest window [`Backward`] reads at once: its memory bound.
pub const WINDOW: u64 = 1 << 20;

/// Complete blocks from the newest to the oldest, reading only from the end.
///
/// Boundaries are found in fixed windows walked backwards, so memory is one
/// window plus the block handed out, whatever lies between the blocks (a
/// torn tail of any size, a line without a newline); a block over the cap is
/// reported as [`Note::Oversized`] and skipped, never read.
pub struct Backward<'f> {
    file: &'f File,
    /// Candidates starting before this offset are still to be examined.
    end: u64,
    len: u64,
    /// Blocks must start before this offset.
    limit: u64,
    /// Largest window read at once ([`WINDOW`]): the memory bound.
    window: u64,
    /// The next window: 64 KiB first, doubled while no block is found, up to
    /// `window`. Most newest snapshots end well inside the first; a smaller
    /// read is fewer page faults, which are most of a newest-snapshot check.
    next: u64,
    cap: u64,
    /// End of the nearest `END_SNAPSHOT` after the position reached, with no
    /// header in between (the end of the block whose header comes next).
    cand_end: Option<(u64, bool)>,
    events: Vec<Event>,
    /// Notes about the bytes after the newest complete block.
    pub tail_notes: Vec<Note>,
    /// Other notes (oversized blocks).
    pub notes: Vec<Note>,
    first: bool,
    /// The file's data regions, oldest first (holes hold only zeros: no
    /// boundary there, so the walk jumps over them).
    regions: Vec<(u64, u64)>,
    /// Hand out where blocks are, not their bytes.
    spans_only: bool,
    /// The window buffer, kept between windows.
    buf: Vec<u8>,
}

/// The data regions `(start, end)` of `file` from `SEEK_DATA`/`SEEK_HOLE`
/// (the whole file when the filesystem cannot tell or the map is long).
fn data_regions(file: &File, len: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let whole = vec![(0, len)];
    let mut v = Vec::new();
    let mut off = 0;
    while off < len {
        let d = match seek(file, SeekFrom::Data(off)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return whole,
        };
        let h = match seek(file, SeekFrom::Hole(d)) {
            Ok(h) => h.min(len),
            Err(_) => return whole,
        };
        if h <= d || v.len() >= 4096 {
            return whole;
        }
        v.push((d, h));
        off = h;
    }
    v
}

impl<'f> Backward<'f> {
    /// Complete blocks that start before `offset`, newest first.
    pub fn before(file: &'f File, offset: u64) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let end = offset.min(len);
        Ok(Backward {
            file,
            end,
            len,
            limit: end,
            window: WINDOW,
            next: FIRST_WINDOW,
            cap: BLOCK_CAP,
            cand_end: None,
            events: Vec::new(),
            tail_notes: Vec::new(),
            notes: Vec::new(),
            first: end == len,
            regions: data_regions(file, len),
            spans_only: false,
            buf: Vec::new(),
        })
    }

    /// Hands out each block's offset and length only (its bytes stay in
    /// the file: a caller that streams it holds none of it).
    pub fn spans_only(mut self) -> Self {
        self.spans_only = true;
        self
    }

    /// Reads `first` bytes first, doubling up to `max` (tests: tiny windows).
    pub fn with_window(mut self, first: u64, max: u64) -> Self {
        self.next = first;
        self.window = max;
        self
    }

    /// Sets the block cap (default [`BLOCK_CAP`]).
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap;
        self
    }

    fn read_at(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        read_exact_into(self.file, &mut v, (end - start) as usize, start)?;
        Ok(v)
    }

    /// The bytes of block `h..e`, found in the window `d` read from `s`:
    /// none for a walk for spans; else kept from the window rather than
    /// read again (the window is then taken), or its head read apart.
    fn block_bytes(&self, d: &mut Vec<u8>, s: u64, h: u64, e: u64) -> io::Result<Vec<u8>> {
        if self.spans_only {
            return Ok(Vec::new());
        }
        if h >= s && e - s <= d.len() as u64 {
            d.truncate((e - s) as usize);
            d.drain(..(h - s) as usize);
            return Ok(std::mem::take(d));
        }
        if e - s <= d.len() as u64 {
            // It starts before the window: read only its head.
            let mut v = vec![0u8; (e - h) as usize];
            let head = (s - h) as usize;
            self.file.read_exact_at(&mut v[..head], h)?;
            v[head..].copy_from_slice(&d[..(e - s) as usize]);
            return Ok(v);
        }
        if d.capacity() as u64 >= e - h {
            // The window's memory is already paged in: the block goes there
            // rather than into fresh pages (a page fault each).
            read_exact_into(self.file, d, (e - h) as usize, h)?;
            return Ok(std::mem::take(d));
        }
        self.read_at(h, e)
    }

    /// The next older complete block.
    pub fn next_block(&mut self) -> io::Result<Option<Found>> {
        while self.end > 0 {
            // A hole: continue from the end of the data before it.
            match self.regions.iter().rev().find(|(start, _)| *start < self.end) {
                Some(&(_, end)) => self.end = self.end.min(end),
                None => break,
            }
            let size = self.next.min(self.window).max(64);
            // Growing windows save re-reading a block handed out with its
            // bytes; a walk for spans only keeps one small window (fewer
            // fresh pages to fault in).
            if !self.spans_only {
                self.next = size.saturating_mul(2);
            }
            let start = self.end.saturating_sub(size);
            // Read a few bytes before the window too: an `END_SNAPSHOT` whose
            // `SNAPSHOT` starts in the window is decided by the `\nEND_` before.
            let s = start.saturating_sub(8);
            let read_end = (self.end + LOOKAHEAD as u64).min(self.len);
            // One buffer serves every window (fresh memory costs a page
            // fault per page, most of a newest-snapshot check).
            // The byte before `s` (which decides a header at `s`) comes in
            // the same read: `d` starts at `s0`.
            let s0 = s.saturating_sub(1);
            let mut d = std::mem::take(&mut self.buf);
            read_exact_into(self.file, &mut d, (read_end - s0) as usize, s0)?;
            let (prev, win) = if s > 0 { (Some(d[0]), &d[1..]) } else { (None, &d[..]) };
            self.events.clear();
            let (from, limit) = ((start - s) as usize, (self.end - s) as usize);
            events(win, prev, read_end == self.len, from, limit, &mut self.events);
            // Examine the candidates from the last one backwards; stop at the
            // first block found, to resume below it on the next call.
            while let Some(ev) = self.events.pop() {
                match ev {
                    Event::End { end, newline } => {
                        let e = s + end as u64;
                        // An End completes a block only if it ends before the limit.
                        if e <= self.limit || self.limit == self.len {
                            self.cand_end = Some((e, newline));
                        }
                    }
                    Event::Header(h) => {
                        let h = s + h as u64;
                        let Some((e, newline)) = self.cand_end.take() else {
                            if self.first {
                                self.first = false;
                                if self.limit == self.len {
                                    self.tail_notes.push(Note::Torn {
                                        offset: h,
                                        len: self.len - h,
                                        at_eof: true,
                                    });
                                }
                            }
                            continue;
                        };
                        if self.first {
                            self.first = false;
                            if !newline && e == self.len {
                                self.tail_notes.push(Note::MissingFinalNewline);
                            }
                        }
                        if e - h > self.cap {
                            self.notes.push(Note::Oversized { offset: h, len: e - h });
                            continue;
                        }
                        self.end = h;
                        // The block is usually in the window read: keep
                        // those bytes rather than read it again.
                        let bytes = self.block_bytes(&mut d, s0, h, e)?;
                        self.buf = d;
                        // Candidates already examined below h are re-read
                        // next time: drop them.
                        self.events.clear();
                        return Ok(Some(Found {
                            offset: h,
                            len: e - h,
                            bytes,
                        }));
                    }
                }
            }
            self.buf = d;
            self.end = start;
        }
        Ok(None)
    }
}

/// Replaces the contents of `buf` with the `n` bytes of `file` at `offset`.
/// Fresh memory is not zero-filled first (the kernel writes it once): a
/// buffer of exactly `n` bytes' capacity is read into directly, any other
/// one is reused, zeroed, when it is large enough, else replaced.
pub(crate) fn read_exact_into(file: &File, buf: &mut Vec<u8>, n: usize, offset: u64) -> io::Result<()> {
    buf.clear();
    if buf.capacity() < n {
        *buf = Vec::with_capacity(n);
    }
    if buf.capacity() != n {
        buf.resize(n, 0);
        return file.read_exact_at(buf, offset);
    }
    while buf.len() < n {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(buf), at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "failed to fill whole buffer",
                ))
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Counts `\n` bytes. Byte-wide counters per lane, flushed every 255 rounds,
/// so the compiler turns the inner loop into wide vector compares.
pub fn count_newlines(d: &[u8]) -> usize {
    const LANES: usize = 64;
    let mut total = 0usize;
    let mut rest = d;
    while rest.len() >= LANES {
        let rounds = (rest.len() / LANES).min(255);
        let (head, tail) = rest.split_at(rounds * LANES);
        let mut acc = [0u8; LANES];
        for block in head.chunks_exact(LANES) {
            for (a, &b) in acc.iter_mut().zip(block) {
                *a += (b == b'\n') as u8;
            }
        }
        total += acc.iter().map(|&a| a as usize).sum::<usize>();
        rest = tail;
    }
    total + rest.iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks_of(data: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Vec<Note>) {
        let mut sc = Scanner::with_chunk_size(data, chunk);
        let mut out = Vec::new();
        let mut notes = Vec::new();
        while let Some(c) = sc.next_chunk().unwrap() {
            for b in c.blocks {
                out.push(c.data[b.start..b.end].to_vec());
            }
            notes.extend(c.notes);
        }
        (out, notes)
    }

    const B: &str = "SNAPSHOT v1\nx\nEND_SNAPSHOT\n";

    #[test]
    fn finds_blocks_at_every_chunk_size() {
        let file = format!("{B}{B}\n{B}");
        for chunk in [64, 65, 70, 100, 1000] {
            let (b, n) = blocks_of(file.as_bytes(), chunk);
            assert_eq!(b.len(), 3, "chunk {chunk}");
            assert!(n.is_empty(), "{n:?}");
        }
    }

    #[test]
    fn glued_header_tears_the_open_block() {
        let file = "SNAPSHOT v1\nbalance \"peSNAPSHOT v1\nx\nEND_SNAPSHOT\n";
        let (b, n) = blocks_of(file.as_bytes(), 64);
        assert_eq!(b, vec![b"SNAPSHOT v1\nx\nEND_SNAPSHOT\n".to_vec()]);
        assert!(matches!(
            n[0],
            Note::Torn {
                offset: 0,
                at_eof: false,
                ..
            }
        ));
    }

    #[test]
    fn end_glued_to_header_completes_the_block() {
        let file = "SNAPSHOT v1\nx\nEND_SNAPSHOTSNAPSHOT v1\ny\nEND_SNAPSHOT";
        let (b, n) = blocks_of(file.as_bytes(), 64);
        assert_eq!(b[0], b"SNAPSHOT v1\nx\nEND_SNAPSHOT");
        assert_eq!(b[1], b"SNAPSHOT v1\ny\nEND_SNAPSHOT");
        assert_eq!(n, vec![Note::MissingFinalNewline]);
    }

    #[test]
    fn quoted_marker_words_are_not_boundaries() {
        let file = "SNAPSHOT v1\nbalance \"SNAPSHOT v1\" 1\nbalance \"END_SNAPSHOT\" 2\nEND_SNAPSHOT\n";
        let (b, _) = blocks_of(file.as_bytes(), 64);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0], file.as_bytes());
    }

    #[test]
    fn torn_tail_is_reported_not_returned() {
        let file = format!("{B}SNAPSHOT v1\nbal");
        let (b, n) = blocks_of(file.as_bytes(), 64);
        assert_eq!(b.len(), 1);
        assert_eq!(
            n,
            vec![Note::Torn {
                offset: B.len() as u64,
                len: 15,
                at_eof: true
            }]
        );
    }

    #[test]
    fn junk_longer_than_a_chunk_is_reported_whole() {
        // Found in a hostile run: 10 MB of junk at offset 9593 was reported
        // as 2 MB at offset 8388584 (only the part in the last chunk).
        let junk = "\n\njunk line of text\n".repeat(40);
        for (file, at_eof) in [(format!("{B}{junk}{B}"), false), (format!("{B}{junk}"), true)] {
            for chunk in [64, 65, 100, 333, 5000] {
                let mut sc = Scanner::with_chunk_size(file.as_bytes(), chunk);
                let mut notes = Vec::new();
                while let Some(c) = sc.next_chunk().unwrap() {
                    notes.extend(c.notes);
                }
                assert_eq!(
                    notes,
                    vec![Note::Junk {
                        offset: B.len() as u64 + 2,
                        len: junk.len() as u64 - 2
                    }],
                    "chunk {chunk}, at end {at_eof}"
                );
            }
        }
    }

    #[test]
    fn blocks_carry_their_file_line() {
        let file = format!("\n{B}junk\n{B}");
        for chunk in [64, 1000] {
            let mut sc = Scanner::with_chunk_size(file.as_bytes(), chunk);
            let mut lines = Vec::new();
            while let Some(c) = sc.next_chunk().unwrap() {
                lines.extend(c.blocks.iter().map(|b| b.line));
            }
            assert_eq!(lines, vec![2, 6], "chunk {chunk}");
        }
    }

    #[test]
    fn newline_count_matches_the_naive_one() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| if i % 7 == 0 || i % 13 == 0 { b'\n' } else { b'x' })
            .collect();
        for len in [0, 1, 63, 64, 65, 16_320, 16_321, 100_000] {
            let d = &data[..len];
            assert_eq!(count_newlines(d), d.iter().filter(|&&b| b == b'\n').count(), "{len}");
        }
    }

    #[test]
    fn crlf_markers_are_recognised() {
        let file = "SNAPSHOT v1\r\nx\r\nEND_SNAPSHOT\r\n";
        let (b, _) = blocks_of(file.as_bytes(), 64);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn backward_agrees_with_forward() {
        let mut file = String::new();
        for i in 0..50 {
            file.push_str(&format!("SNAPSHOT v1\n{}\nEND_SNAPSHOT\n", "y".repeat(i * 37)));
            if i % 7 == 3 {
                file.push_str("SNAPSHOT v1\ntorn");
            }
            if i % 5 == 1 {
                // Junk without markers: window starts land anywhere in it.
                file.push_str(&"junk line\n".repeat(i));
            }
        }
        file.push_str("SNAPSHOT v1\nbal");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, &file).unwrap();
        let (fwd, _) = blocks_of(file.as_bytes(), 100);
        let f = File::open(&p).unwrap();
        // Forward with a small hold: long blocks are re-read from the file.
        for chunk in [64, 100, 333] {
            let mut sc = Scanner::with_chunk_size(File::open(&p).unwrap(), chunk).with_hold(chunk);
            let mut held = Vec::new();
            while let Some(c) = sc.next_chunk().unwrap() {
                if let Some(l) = c.large {
                    let mut v = vec![0u8; l.len as usize];
                    f.read_exact_at(&mut v, l.offset).unwrap();
                    held.push(v);
                }
                held.extend(c.blocks.iter().map(|b| c.data[b.start..b.end].to_vec()));
            }
            assert_eq!(fwd, held, "chunk {chunk}");
        }
        // Every window size, so that markers straddle window starts; fixed,
        // and growing from 64 bytes (doubling) up to the size.
        for window in 64..400 {
            for first in [window, 64] {
                let mut bw = Backward::before(&f, u64::MAX).unwrap().with_window(first, window);
                let mut back = Vec::new();
                while let Some(b) = bw.next_block().unwrap() {
                    back.push(b.bytes);
                }
                back.reverse();
                assert_eq!(fwd, back, "window {window}, first {first}");
                assert!(matches!(bw.tail_notes[0], Note::Torn { at_eof: true, .. }));
            }
        }
    }

    #[test]
    fn read_exact_into_reads_the_same_bytes_whatever_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        // An empty buffer, one of the exact size (read into its spare
        // capacity), a larger one (reused), a smaller one (replaced).
        let mut buf = Vec::new();
        for (n, off) in [(100, 0), (100, 50), (60, 9_000), (4_000, 6_000), (0, 10_000)] {
            read_exact_into(&f, &mut buf, n, off).unwrap();
            assert_eq!(buf, &data[off as usize..off as usize + n], "{n} at {off}");
        }
        for mut short in [buf, Vec::new()] {
            let e = read_exact_into(&f, &mut short, 100, 9_950).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
