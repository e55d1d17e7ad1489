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

pub use crate::scan::BLOCK_CAP;
use crate::scan::{Backward, Found, Note, Scanner};
use crate::{Error, Result};
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
    let md = f.metadata().map_err(|e| Error::io(path, e))?;
    if !md.file_type().is_file() {
        return Err(Error::Usage(format!(
            "{}: is {}, not a regular {what}; refusing to read it",
            path.display(),
            kind(&md.file_type())
        )));
    }
    Ok(f)
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
}

impl SnapshotFile {
    /// Opens a snapshot file; refuses directories, FIFOs, devices, sockets.
    pub fn open(path: &Path) -> Result<SnapshotFile> {
        let file = open_regular(path, "snapshot file")?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(SnapshotFile {
            path: path.to_path_buf(),
            file,
            len,
            cap: BLOCK_CAP,
        })
    }

    /// Sets the block cap: larger blocks are reported and skipped.
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap.max(1);
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

    /// Complete blocks newest first, starting before `offset` (the whole
    /// file for `None`).
    pub fn backward(&self, offset: Option<u64>) -> Result<Backward<'_>> {
        let bw = match offset {
            None => Backward::new(&self.file),
            Some(o) => Backward::before(&self.file, o),
        };
        Ok(bw.map_err(|e| self.io(e))?.with_cap(self.cap))
    }

    /// The next block of a [`Backward`] walk, with the path on errors.
    pub fn next_back(&self, bw: &mut Backward<'_>) -> Result<Option<Found>> {
        crate::cancel::check()?;
        bw.next_block().map_err(|e| self.io(e))
    }

    /// The newest complete snapshot and the notes about what follows it.
    pub fn newest(&self) -> Result<(Option<Block>, Vec<Note>)> {
        let mut bw = self.backward(None)?;
        let found = self.next_back(&mut bw)?;
        let mut notes = std::mem::take(&mut bw.tail_notes);
        notes.append(&mut bw.notes);
        Ok((
            found.map(|f| Block {
                number: None,
                offset: f.offset,
                line: None,
                bytes: f.bytes,
            }),
            notes,
        ))
    }

    /// A forward scanner over the file with the memory bounds set.
    pub fn scanner(&self) -> Scanner<&File> {
        Scanner::new(&self.file).with_hold(HOLD).with_cap(self.cap)
    }

    /// Reads a block the scanner did not keep; `None` (with a note) when it
    /// is over the cap.
    pub fn read_large(&self, l: &crate::scan::Large, notes: &mut Vec<Note>) -> Result<Option<Vec<u8>>> {
        if l.len > self.cap {
            notes.push(Note::Oversized {
                offset: l.offset,
                len: l.len,
            });
            return Ok(None);
        }
        let mut v = vec![0u8; l.len as usize];
        self.file.read_exact_at(&mut v, l.offset).map_err(|e| self.io(e))?;
        Ok(Some(v))
    }

    /// Visits every complete block in file order until `f` returns false;
    /// returns the notes (torn blocks, junk, oversized blocks).
    pub fn forward(&self, mut f: impl FnMut(BlockRef<'_>) -> Result<bool>) -> Result<Vec<Note>> {
        let mut sc = self.scanner();
        let mut notes = Vec::new();
        let mut number = 0usize;
        while let Some(c) = sc.next_chunk().map_err(|e| self.io(e))? {
            crate::cancel::check()?;
            if let Some(l) = &c.large {
                if let Some(bytes) = self.read_large(l, &mut notes)? {
                    number += 1;
                    let go = f(BlockRef {
                        number,
                        offset: l.offset,
                        line: l.line,
                        bytes: &bytes,
                    })?;
                    if !go {
                        return Ok(notes);
                    }
                }
            }
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
            sc.recycle(c.data);
        }
        Ok(notes)
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
        let mut bw = sf.backward(None).unwrap();
        let mut n = 0;
        while sf.next_back(&mut bw).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 2);
        assert!(matches!(bw.notes[0], Note::Oversized { len: 5026, .. }));
        // Forward with a tiny hold: the big block is re-read (cap allows it) or skipped.
        for (cap, count) in [(10_000, 3), (1000, 2)] {
            let sf = SnapshotFile::open(&p).unwrap().with_cap(cap);
            let mut sc = Scanner::with_chunk_size(sf.file(), 64).with_hold(64);
            let mut got = 0;
            let mut notes = Vec::new();
            while let Some(c) = sc.next_chunk().unwrap() {
                if let Some(l) = &c.large {
                    got += sf.read_large(l, &mut notes).unwrap().is_some() as usize;
                }
                got += c.blocks.len();
                assert!(c.data.len() < 1000, "{}", c.data.len());
                notes.extend(c.notes);
            }
            assert_eq!(got, count, "cap {cap}");
            assert!(notes.iter().any(|n| matches!(n, Note::Torn { at_eof: true, .. })));
        }
    }
}
