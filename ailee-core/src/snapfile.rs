//! The one way every tool opens and reads a snapshot file (SPEC §1.1, §2).
//!
//! [`SnapshotFile::open`] refuses anything that is not a regular file before
//! it could block (a FIFO without a writer blocks `open()`) or never end
//! (`/dev/zero`): the file is opened non-blocking and checked with `fstat`.
//! Blocks are handed out with their number, offset and line; a block larger
//! than the cap (default [`BLOCK_CAP`], `--max-block-size`) is reported as
//! junk and never held in memory, and the scanners keep at most [`HOLD`]
//! bytes of a block that is still open, so memory stays bounded whatever the
//! file holds (a torn tail of gigabytes, a line without a newline).
//! Errors carry the path once.
//!
//! Nothing else reads a snapshot file's blocks: callers ask for what they
//! need — [`SnapshotFile::newest`], [`SnapshotFile::nth`],
//! [`SnapshotFile::blocks`] / [`SnapshotFile::forward`] (file order),
//! [`SnapshotFile::newest_first`] (from the end), [`SnapshotFile::count`],
//! [`SnapshotFile::anchors_before`] — and every answer comes from one
//! grammar of block boundaries (`scan`, private to the core). Walks from the
//! end read only what lies after the block they stop at, and skip the holes
//! of a sparse file.

pub use crate::scan::{torn_tail, Note, BLOCK_CAP};
use crate::scan::{Backward, Chunk, Scanner, Span, CHUNK, FIRST_WINDOW, WINDOW};
use crate::verify::{anchor_hash_of, PegoutRef};
use crate::{Error, Result};
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes of a still-open block the forward scanner keeps in memory; a longer
/// block is re-read from the file when it completes.
pub const HOLD: usize = 8 << 20;

/// Cap on a JSON state file (`--l2-state-file`).
pub const STATE_CAP: u64 = 256 << 20;
/// Cap on an RPC cookie file.
pub const COOKIE_CAP: u64 = 4096;

/// What kind of non-regular file `ft` is, for messages.
fn kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading if it is a regular file; anything else is
/// refused at once (never blocking in `open()`), as a usage error.
pub fn open_regular(path: &Path, what: &str) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32 | rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    regular(&f, path, what)?;
    Ok(f)
}

/// The metadata of `f` if it is a regular file; anything else is refused
/// as a usage error.
fn regular(f: &File, path: &Path, what: &str) -> Result<std::fs::Metadata> {
    let md = f.metadata().map_err(|e| Error::io(path, e))?;
    if !md.file_type().is_file() {
        return Err(Error::Usage(format!(
            "{}: is {}, not a regular {what}; refusing to read it",
            path.display(),
            kind(&md.file_type())
        )));
    }
    Ok(md)
}

/// Reads a small input whole: a regular file (or standard input for `-`
/// when `stdin_ok`), at most `cap` bytes — a longer one is an error, read no
/// further than the cap.
pub fn read_capped(path: &Path, cap: u64, what: &str, stdin_ok: bool) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let r = if stdin_ok && path.as_os_str() == "-" {
        std::io::stdin().lock().take(cap + 1).read_to_end(&mut buf)
    } else {
        open_regular(path, what)?.take(cap + 1).read_to_end(&mut buf)
    };
    r.map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > cap {
        let name = if stdin_ok && path.as_os_str() == "-" {
            "standard input".into()
        } else {
            path.display().to_string()
        };
        return Err(Error::Usage(format!(
            "{name}: larger than {cap} bytes, too large for {what}"
        )));
    }
    Ok(buf)
}

/// A complete snapshot and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Number from 1, oldest first (unknown when found from the end).
    pub number: Option<usize>,
    /// Byte offset of the header.
    pub offset: u64,
    /// File line (from 1) of the header (unknown when found from the end).
    pub line: Option<usize>,
    pub bytes: Vec<u8>,
}

/// Where a complete snapshot is, its bytes left in the file (read them with
/// [`SnapshotFile::lines`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpan {
    /// Number from 1, oldest first (unknown when found from the end).
    pub number: Option<usize>,
    /// Byte offset of the header.
    pub offset: u64,
    pub len: u64,
    /// File line (from 1) of the header (unknown when found from the end).
    pub line: Option<usize>,
}

/// The lines of a span of the file, read a window at a time: memory is one
/// window (or the longest line), whatever the span's length.
pub struct SpanLines<'f> {
    sf: &'f SnapshotFile,
    /// File offset of `buf[0]`.
    at: u64,
    end: u64,
    buf: Vec<u8>,
    /// Next unread byte of `buf`.
    next: usize,
}

/// Bytes [`SpanLines`] reads at a time.
const LINE_WINDOW: usize = 1 << 20;

impl SpanLines<'_> {
    /// File offset of the next unread byte.
    pub fn pos(&self) -> u64 {
        self.at + self.next as u64
    }

    /// The next line that is not blank, a `\r` before its `\n` dropped: the
    /// lines as the grammar sees them ([`crate::format`]).
    pub fn next_text(&mut self) -> Result<Option<&[u8]>> {
        loop {
            let Some(len) = self.next_line()?.map(<[u8]>::len) else {
                return Ok(None);
            };
            // next_line() left `next` after the line and its `\n`, if any.
            let start = self.next - len - usize::from(self.buf[..self.next].ends_with(b"\n"));
            let line = &self.buf[start..start + len];
            let n = line.strip_suffix(b"\r").unwrap_or(line).len();
            if n > 0 {
                return Ok(Some(&self.buf[start..start + n]));
            }
        }
    }

    /// The next line, without its `\n` (the last line of the span may have
    /// none); `None` at the end of the span.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>> {
        loop {
            if let Some(n) = memchr::memchr(b'\n', &self.buf[self.next..]) {
                let start = self.next;
                self.next += n + 1;
                return Ok(Some(&self.buf[start..start + n]));
            }
            let read_from = self.at + self.buf.len() as u64;
            if read_from >= self.end {
                if self.next == self.buf.len() {
                    return Ok(None);
                }
                let start = self.next;
                self.next = self.buf.len();
                return Ok(Some(&self.buf[start..]));
            }
            // Keep the unread part; read the next window after it.
            self.buf.drain(..self.next);
            self.at += self.next as u64;
            self.next = 0;
            let want = ((self.end - read_from) as usize).min(LINE_WINDOW.max(self.buf.len()));
            let have = self.buf.len();
            self.buf.resize(have + want, 0);
            self.sf
                .file
                .read_exact_at(&mut self.buf[have..], read_from)
                .map_err(|e| self.sf.io(e))?;
        }
    }
}

/// A complete block during a forward pass (borrowed from the scan buffer).
#[derive(Debug, Clone, Copy)]
pub struct BlockRef<'a> {
    pub number: usize,
    pub offset: u64,
    pub line: usize,
    pub bytes: &'a [u8],
}

/// An open snapshot file.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    file: File,
    len: u64,
    cap: u64,
    sizes: ReadSizes,
    /// Walks stop at a requested cancellation ([`crate::cancel::check`]).
    interruptible: bool,
}

/// Read sizes of the scanners (tests make them tiny, so that every
/// boundary case lands at every position of a read).
#[derive(Debug, Clone, Copy)]
struct ReadSizes {
    chunk: usize,
    hold: usize,
    first_window: u64,
    window: u64,
}

/// Reads `file` from `pos` up to `end` by position (never through the file's
/// shared cursor, so two passes over one [`SnapshotFile`] cannot disturb each
/// other).
struct At<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl crate::scan::Source for At<'_> {
    /// Reads straight into the buffer's spare capacity when the range has
    /// that much left (no zero-fill of the 8 MiB chunk buffers first: the
    /// kernel's copy writes them once).
    fn append(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let spare = buf.capacity() - buf.len();
        let n = if spare > 0 && left >= spare as u64 {
            rustix::io::pread(self.file, rustix::buffer::spare_capacity(buf), self.pos)?
        } else {
            let want = left.min(max as u64) as usize;
            if want == 0 {
                return Ok(0);
            }
            let at = buf.len();
            buf.resize(at + want, 0);
            let n = self.file.read_at(&mut buf[at..], self.pos);
            buf.truncate(at + *n.as_ref().unwrap_or(&0));
            n?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// The forward pass in chunks of whole blocks (the pipeline's input): a
/// block the scanner did not keep comes first, read apart, as a chunk of its
/// own (`pooled` false).
pub(crate) struct Chunks<'f> {
    sf: &'f SnapshotFile,
    sc: Scanner<At<'f>>,
    base: u64,
    stash: Option<Chunk>,
    /// Read a block the scanner did not keep (else hand out its span with
    /// no bytes: `data` empty, the span `0..len`).
    read_large: bool,
}

impl Chunks<'_> {
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if let Some(c) = self.stash.take() {
            return Ok(Some(c));
        }
        self.sf.check_cancel()?;
        let Some(mut c) = self.sc.next_chunk().map_err(|e| self.sf.io(e))? else {
            return Ok(None);
        };
        if self.base > 0 {
            c.offset += self.base;
            for n in &mut c.notes {
                n.shift(self.base);
            }
        }
        if let Some(l) = c.large.take() {
            // The scanner hands out only blocks within the cap.
            let offset = l.offset + self.base;
            let mut data = vec![0u8; l.len as usize];
            self.sf
                .file
                .read_exact_at(&mut data, offset)
                .map_err(|e| self.sf.io(e))?;
            let blocks = vec![Span {
                start: 0,
                end: data.len(),
                line: l.line,
            }];
            self.stash = Some(c);
            return Ok(Some(Chunk {
                data,
                offset,
                blocks,
                large: None,
                notes: Vec::new(),
                pooled: false,
            }));
        }
        Ok(Some(c))
    }

    /// Hands a pooled chunk's buffer back for reuse.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        self.sc.recycle(buf);
    }

    pub(crate) fn has_spare(&self) -> bool {
        self.sc.has_spare()
    }
}

/// Complete blocks in file order, each copied out (see
/// [`SnapshotFile::forward`] for a pass without copies); the notes about
/// what lies outside them are [`Blocks::notes`] once the pass is over.
pub struct Blocks<'f> {
    chunks: Chunks<'f>,
    cur: Option<Chunk>,
    i: usize,
    number: usize,
    notes: Vec<Note>,
}

impl Blocks<'_> {
    /// Torn blocks, junk, oversized blocks met so far.
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }
}

impl Iterator for Blocks<'_> {
    type Item = Result<Block>;

    fn next(&mut self) -> Option<Result<Block>> {
        loop {
            if let Some(c) = &self.cur {
                if let Some(sp) = c.blocks.get(self.i) {
                    self.i += 1;
                    self.number += 1;
                    return Some(Ok(Block {
                        number: Some(self.number),
                        offset: c.offset + sp.start as u64,
                        line: Some(sp.line),
                        bytes: c.data[sp.start..sp.end].to_vec(),
                    }));
                }
            }
            if let Some(c) = self.cur.take() {
                self.notes.extend(c.notes);
                if c.pooled {
                    self.chunks.recycle(c.data);
                }
            }
            match self.chunks.next_chunk() {
                Ok(Some(c)) => {
                    self.cur = Some(c);
                    self.i = 0;
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Complete blocks newest first, read from the end of the file (holes
/// skipped); [`NewestFirst::notes`] says what follows the newest one.
pub struct NewestFirst<'f> {
    sf: &'f SnapshotFile,
    bw: Backward<'f>,
}

impl NewestFirst<'_> {
    /// What the walk noticed: first the bytes after the newest complete
    /// block (a torn tail, a missing final newline), then oversized blocks.
    pub fn notes(&self) -> Vec<Note> {
        self.bw.tail_notes.iter().chain(&self.bw.notes).cloned().collect()
    }
}

impl Iterator for NewestFirst<'_> {
    type Item = Result<Block>;

    fn next(&mut self) -> Option<Result<Block>> {
        if let Err(e) = self.sf.check_cancel() {
            return Some(Err(e));
        }
        match self.bw.next_block() {
            Ok(f) => f.map(|f| {
                Ok(Block {
                    number: None,
                    offset: f.offset,
                    line: None,
                    bytes: f.bytes,
                })
            }),
            Err(e) => Some(Err(self.sf.io(e))),
        }
    }
}

impl SnapshotFile {
    /// Opens a snapshot file; refuses directories, FIFOs, devices, sockets.
    pub fn open(path: &Path) -> Result<SnapshotFile> {
        let file = open_regular(path, "snapshot file")?;
        Self::from_file(file, path)
    }

    /// A snapshot file already open (`path` names it in errors); refused
    /// unless it is a regular file.
    pub fn from_file(file: File, path: &Path) -> Result<SnapshotFile> {
        let md = regular(&file, path, "snapshot file")?;
        Ok(SnapshotFile {
            path: path.to_path_buf(),
            file,
            len: md.len(),
            cap: BLOCK_CAP,
            sizes: ReadSizes {
                chunk: CHUNK,
                hold: HOLD,
                first_window: FIRST_WINDOW,
                window: WINDOW,
            },
            interruptible: true,
        })
    }

    /// Whether walks over the file stop when cancellation is requested
    /// (default yes); a caller that checks between its own steps and wants
    /// each read finished says no.
    pub fn interruptible(mut self, yes: bool) -> Self {
        self.interruptible = yes;
        self
    }

    fn check_cancel(&self) -> Result<()> {
        if self.interruptible {
            crate::cancel::check()?;
        }
        Ok(())
    }

    /// Sets the block cap: larger blocks are reported and skipped.
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap.max(1);
        self
    }

    /// Small reads for tests: the forward pass reads `chunk` bytes at a time
    /// and keeps at most `hold` of an open block; the backward walk reads
    /// `first_window` bytes first, doubling up to `window`. Results never
    /// depend on these; only where boundaries fall within a read does.
    #[doc(hidden)]
    pub fn with_read_sizes(mut self, chunk: usize, hold: usize, first_window: u64, window: u64) -> Self {
        self.sizes = ReadSizes {
            chunk,
            hold,
            first_window,
            window,
        };
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Length when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io(&self.path, e)
    }

    /// Complete blocks newest first that start before `before` (the whole
    /// file for `None`), read only from there backwards.
    pub fn newest_first(&self, before: Option<u64>) -> Result<NewestFirst<'_>> {
        let bw = Backward::before(&self.file, before.unwrap_or(u64::MAX))
            .map_err(|e| self.io(e))?
            .with_cap(self.cap)
            .with_window(self.sizes.first_window, self.sizes.window);
        Ok(NewestFirst { sf: self, bw })
    }

    /// The newest complete snapshot and the notes about what follows it,
    /// read from the end of the file: the bytes after it, the block, and no
    /// more (holes of a sparse file are skipped, never read).
    pub fn newest(&self) -> Result<(Option<Block>, Vec<Note>)> {
        // Found as a span in small windows, then read once: fewer fresh
        // pages than windows grown until they hold the block.
        let (span, notes) = self.newest_span()?;
        let block = match span {
            Some(s) => Some(Block {
                number: None,
                offset: s.offset,
                line: None,
                bytes: self.read_span(s.offset, s.len)?,
            }),
            None => None,
        };
        Ok((block, notes))
    }

    /// Where the newest complete snapshot is (its bytes are not read, so a
    /// caller can stream them), and the notes about what follows it.
    pub fn newest_span(&self) -> Result<(Option<BlockSpan>, Vec<Note>)> {
        self.check_cancel()?;
        let mut bw = Backward::before(&self.file, u64::MAX)
            .map_err(|e| self.io(e))?
            .with_cap(self.cap)
            .with_window(self.sizes.first_window, self.sizes.window)
            .spans_only();
        let found = bw.next_block().map_err(|e| self.io(e))?;
        let it = NewestFirst { sf: self, bw };
        let span = found.map(|f| BlockSpan {
            number: None,
            offset: f.offset,
            len: f.len,
            line: None,
        });
        Ok((span, it.notes()))
    }

    /// Where snapshot `n` (from 1) is, without reading a block the scanner
    /// does not keep; also how many complete snapshots were passed (all of
    /// them when there is no snapshot `n`) and the notes met on the way.
    pub fn nth_span(&self, n: usize) -> Result<(Option<BlockSpan>, usize, Vec<Note>)> {
        let mut chunks = self.chunks();
        chunks.read_large = false;
        let mut notes = Vec::new();
        let mut number = 0usize;
        while let Some(c) = chunks.next_chunk()? {
            for b in &c.blocks {
                number += 1;
                if number == n {
                    notes.extend(c.notes);
                    let span = BlockSpan {
                        number: Some(n),
                        offset: c.offset + b.start as u64,
                        len: (b.end - b.start) as u64,
                        line: Some(b.line),
                    };
                    return Ok((Some(span), number, notes));
                }
            }
            notes.extend(c.notes);
            if c.pooled {
                chunks.recycle(c.data);
            }
        }
        Ok((None, number, notes))
    }

    /// The lines of `len` bytes from `offset` (a block's span), read from
    /// the file a window at a time.
    pub fn lines(&self, offset: u64, len: u64) -> SpanLines<'_> {
        SpanLines {
            sf: self,
            at: offset,
            end: offset.saturating_add(len),
            buf: Vec::new(),
            next: 0,
        }
    }

    /// The bytes of `len` bytes from `offset` (a block's span).
    pub fn read_span(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        self.file.read_exact_at(&mut v, offset).map_err(|e| self.io(e))?;
        Ok(v)
    }

    /// Anchor hashes of the complete snapshots that start before `before`,
    /// read from there backwards until every anchor `refs` names is among
    /// them (or the start of the file is reached): what a snapshot's peg-out
    /// links need, and no more.
    pub fn anchors_before(&self, before: u64, refs: &[PegoutRef]) -> Result<HashSet<String>> {
        let mut set = HashSet::new();
        let mut missing: HashSet<&str> = refs.iter().map(|r| r.hash.as_str()).collect();
        if missing.is_empty() {
            return Ok(set);
        }
        // Where the blocks are is all the walk needs; of each block only
        // its anchor line (its last but one) is read.
        let mut bw = Backward::before(&self.file, before)
            .map_err(|e| self.io(e))?
            .with_cap(self.cap)
            .with_window(self.sizes.first_window, self.sizes.window)
            .spans_only();
        loop {
            self.check_cancel()?;
            let Some(b) = bw.next_block().map_err(|e| self.io(e))? else {
                break;
            };
            if let Some(h) = self.anchor_of(b.offset, b.len)? {
                missing.remove(h.as_str());
                set.insert(h);
            }
            if missing.is_empty() {
                break;
            }
        }
        Ok(set)
    }

    /// [`anchor_hash_of`] the block at `offset`, reading its tail only
    /// when the tail holds its last `anchor` line (the one that function
    /// reads), else the whole block.
    fn anchor_of(&self, offset: u64, len: u64) -> Result<Option<String>> {
        const TAIL: u64 = 4096;
        let t = len.min(TAIL);
        let tail = self.read_span(offset + len - t, t)?;
        if t == len || memchr::memmem::rfind(&tail, b"\nanchor \"").is_some() {
            return Ok(anchor_hash_of(&tail));
        }
        Ok(anchor_hash_of(&self.read_span(offset, len)?))
    }

    fn chunks_in(&self, offset: u64, len: u64) -> Chunks<'_> {
        let at = At {
            file: &self.file,
            pos: offset,
            end: offset.saturating_add(len),
        };
        Chunks {
            sf: self,
            sc: Scanner::with_chunk_size(at, self.sizes.chunk)
                .with_hold(self.sizes.hold)
                .with_cap(self.cap),
            base: offset,
            stash: None,
            read_large: true,
        }
    }

    /// The forward pass in chunks of whole blocks (see [`Chunks`]).
    pub(crate) fn chunks(&self) -> Chunks<'_> {
        self.chunks_in(0, u64::MAX)
    }

    /// Complete blocks in file order, copied out; notes at the end.
    pub fn blocks(&self) -> Blocks<'_> {
        Blocks {
            chunks: self.chunks(),
            cur: None,
            i: 0,
            number: 0,
            notes: Vec::new(),
        }
    }

    /// Visits every complete block in file order until `f` returns false;
    /// returns the notes (torn blocks, junk, oversized blocks).
    pub fn forward(&self, mut f: impl FnMut(BlockRef<'_>) -> Result<bool>) -> Result<Vec<Note>> {
        let mut chunks = self.chunks();
        let mut notes = Vec::new();
        let mut number = 0usize;
        while let Some(c) = chunks.next_chunk()? {
            for b in &c.blocks {
                number += 1;
                let go = f(BlockRef {
                    number,
                    offset: c.offset + b.start as u64,
                    line: b.line,
                    bytes: &c.data[b.start..b.end],
                })?;
                if !go {
                    notes.extend(c.notes);
                    return Ok(notes);
                }
            }
            notes.extend(c.notes);
            if c.pooled {
                chunks.recycle(c.data);
            }
        }
        Ok(notes)
    }

    /// The number of complete snapshots (as the tools number them).
    pub fn count(&self) -> Result<u64> {
        self.count_range(0, u64::MAX)
    }

    /// Complete snapshots in the `len` bytes from `offset` (a block
    /// boundary: the start of the file or the end of a block); no block is
    /// copied or parsed.
    pub fn count_range(&self, offset: u64, len: u64) -> Result<u64> {
        let mut chunks = self.chunks_in(offset, len);
        let mut n = 0u64;
        while let Some(c) = chunks.next_chunk()? {
            n += c.blocks.len() as u64;
            if c.pooled {
                chunks.recycle(c.data);
            }
        }
        Ok(n)
    }

    /// Snapshot `n` (from 1).
    pub fn nth(&self, n: usize) -> Result<Option<Block>> {
        let mut found = None;
        self.forward(|b| {
            if b.number == n {
                found = Some(Block {
                    number: Some(n),
                    offset: b.offset,
                    line: Some(b.line),
                    bytes: b.bytes.to_vec(),
                });
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// Number and line of the block whose header is at `offset`.
    pub fn locate(&self, offset: u64) -> Result<Option<(usize, usize)>> {
        let mut found = None;
        self.forward(|b| {
            if b.offset == offset {
                found = Some((b.number, b.line));
            }
            Ok(b.offset < offset)
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "SNAPSHOT v1\nx\nEND_SNAPSHOT\n";

    #[test]
    fn fifo_and_devices_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        for p in [fifo.as_path(), Path::new("/dev/zero"), d.path()] {
            assert!(matches!(SnapshotFile::open(p), Err(Error::Usage(_))), "{p:?}");
        }
        assert!(matches!(
            read_capped(Path::new("/dev/zero"), 10, "state", true),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn oversized_blocks_and_huge_torn_tails_are_not_held() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let big = format!("SNAPSHOT v1\n{}\nEND_SNAPSHOT\n", "y".repeat(5000));
        let torn = format!("SNAPSHOT v1\n{}", "z".repeat(9000));
        std::fs::write(&p, format!("{B}{big}{B}{torn}")).unwrap();
        let sf = SnapshotFile::open(&p).unwrap().with_cap(1000);
        let (newest, notes) = sf.newest().unwrap();
        assert_eq!(newest.unwrap().bytes, B.as_bytes());
        assert!(matches!(
            notes[0],
            Note::Torn {
                at_eof: true,
                len: 9012,
                ..
            }
        ));
        let mut it = sf.newest_first(None).unwrap();
        let n = it.by_ref().inspect(|b| assert!(b.is_ok())).count();
        assert_eq!(n, 2);
        assert!(matches!(it.notes()[1], Note::Oversized { len: 5026, .. }));
        // Forward with a tiny hold: the big block is re-read (cap allows it) or skipped.
        for (cap, count) in [(10_000, 3), (1000, 2)] {
            let sf = SnapshotFile::open(&p)
                .unwrap()
                .with_cap(cap)
                .with_read_sizes(64, 64, 64, 64);
            let mut chunks = sf.chunks();
            let mut got = 0;
            let mut notes = Vec::new();
            while let Some(c) = chunks.next_chunk().unwrap() {
                got += c.blocks.len();
                assert!(c.data.len() < 1000 || !c.pooled, "{}", c.data.len());
                notes.extend(c.notes);
            }
            assert_eq!(got, count, "cap {cap}");
            assert_eq!(sf.count().unwrap(), count as u64);
            let mut blocks = sf.blocks();
            assert_eq!(blocks.by_ref().count(), count);
            assert_eq!(blocks.notes(), &notes[..]);
            assert!(notes.iter().any(|n| matches!(n, Note::Torn { at_eof: true, .. })));
        }
    }

    /// Two passes over one open file each see every block (the forward
    /// pass once read through the file's shared cursor: a second pass saw
    /// nothing).
    #[test]
    fn passes_over_one_file_do_not_disturb_each_other() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, format!("{B}{B}{B}")).unwrap();
        let sf = SnapshotFile::open(&p).unwrap();
        assert_eq!(sf.nth(3).unwrap().unwrap().offset, 2 * B.len() as u64);
        assert_eq!(sf.nth(1).unwrap().unwrap().offset, 0);
        assert_eq!(sf.count().unwrap(), 3);
        assert_eq!(sf.locate(B.len() as u64).unwrap(), Some((2, 4)));
    }

    /// The anchors before a block, read from block tails, are those of the
    /// whole blocks; a hole in the file is skipped by the walk from the end.
    #[test]
    fn anchors_before_and_holes() {
        let v = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vectors/basic.dat");
        let data = std::fs::read(&v).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        // The vector, a 64 MiB hole, the vector again.
        let f = std::fs::File::create(&p).unwrap();
        f.write_all_at(&data, 0).unwrap();
        f.write_all_at(&data, (64 << 20) + data.len() as u64).unwrap();
        let sf = SnapshotFile::open(&p).unwrap().with_read_sizes(64, 64, 64, 4096);
        let fwd: Vec<Block> = sf.blocks().map(|b| b.unwrap()).collect();
        let mut back: Vec<Block> = sf.newest_first(None).unwrap().map(|b| b.unwrap()).collect();
        back.reverse();
        let once = SnapshotFile::open(&v).unwrap().count().unwrap();
        assert_eq!(fwd.len() as u64, 2 * once);
        assert_eq!(
            fwd.iter().map(|b| (b.offset, &b.bytes)).collect::<Vec<_>>(),
            back.iter().map(|b| (b.offset, &b.bytes)).collect::<Vec<_>>()
        );
        let last = fwd.last().unwrap();
        let all: HashSet<String> = fwd[..fwd.len() - 1]
            .iter()
            .filter_map(|b| anchor_hash_of(&b.bytes))
            .collect();
        let refs: Vec<PegoutRef> = all
            .iter()
            .map(|h| PegoutRef {
                peg_id: "p".into(),
                hash: h.clone(),
            })
            .collect();
        assert!(all.len() > 2);
        assert_eq!(sf.anchors_before(last.offset, &refs).unwrap(), all);
        // A long anchor line: the tail holds no `anchor` line start.
        let long = format!(
            "SNAPSHOT v1\ntimestamp_ms 1\nbalances 0\nescrows 0\npegins 0\npegouts 0\ntasks 0\nanchor \"{}\" 1 \"\" \"\" \"{}\"\nEND_SNAPSHOT\n",
            "a".repeat(64),
            "b".repeat(5000)
        );
        std::fs::write(&p, format!("{long}{B}")).unwrap();
        let sf = SnapshotFile::open(&p).unwrap();
        let want = anchor_hash_of(long.as_bytes()).unwrap();
        let refs = [PegoutRef {
            peg_id: "p".into(),
            hash: want.clone(),
        }];
        assert_eq!(
            sf.anchors_before(long.len() as u64, &refs).unwrap(),
            HashSet::from([want])
        );
    }
}
