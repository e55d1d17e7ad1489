//! Appending a snapshot to `l2_snapshots.dat` the way the node does (a plain
//! `O_APPEND` write), but durably and checked: start on a fresh line when the
//! file ends torn, fsync, then read the block back *at the offset its own
//! write landed at* (another writer may append meanwhile, so "the newest
//! block" proves nothing) and compare.
//!
//! A failed append never truncates: the node may have appended after us, and
//! cutting the file back to the length we saw would erase its block. What a
//! failed write leaves is a torn tail, which every reader ignores (§1.1).

use crate::{Error, Result};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Byte offset of the new block's header.
    pub offset: u64,
    /// A newline was written first because the file ended mid-line (torn).
    pub fresh_line: bool,
}

/// Appends one block (as produced by [`crate::format::write_snapshot`]) in a
/// single write and checks that it reads back, byte for byte, where it landed.
/// Runs as a [`crate::cancel::critical`] section.
pub fn append_block(path: &Path, block: &[u8]) -> Result<Appended> {
    crate::cancel::check()?;
    crate::cancel::critical(|| append_inner(path, block))
}

fn append_inner(path: &Path, block: &[u8]) -> Result<Appended> {
    let existed = path.exists();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let md = f.metadata().map_err(|e| Error::io(path, e))?;
    if !md.file_type().is_file() {
        return Err(Error::Usage(format!(
            "{}: not a regular file; refusing to append to it",
            path.display()
        )));
    }
    let len = md.len();
    let mut fresh_line = false;
    if len > 0 {
        let mut last = [0u8; 1];
        f.read_exact_at(&mut last, len - 1).map_err(|e| Error::io(path, e))?;
        fresh_line = last[0] != b'\n';
    }
    let mut data = Vec::with_capacity(block.len() + 1);
    if fresh_line {
        data.push(b'\n');
    }
    data.extend_from_slice(block);
    let torn = |e: std::io::Error| {
        Error::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!(
                    "{e}; the append stopped part-way: the file now ends in a torn snapshot, which every \
                     reader ignores (nothing was truncated: another writer's snapshots stay); fix the cause and run again"
                ),
            ),
        )
    };
    // One write: with O_APPEND the kernel places it at the end as a whole,
    // and the file position afterwards tells where it landed.
    let n = f.write(&data).map_err(torn)?;
    if n < data.len() {
        // A short write (file-size limit, disk full): the rest could land
        // after another writer's data; stop here with a torn tail.
        let e = f
            .write_all(&data[n..])
            .err()
            .unwrap_or_else(|| std::io::Error::other("short write"));
        return Err(torn(e));
    }
    let end = f.stream_position().map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(torn)?;
    if !existed {
        crate::atomic::sync_dir(&crate::atomic::parent_dir(path))?;
    }
    let offset = end - block.len() as u64;
    let _ = f.seek(SeekFrom::End(0));
    let mut back = vec![0u8; block.len()];
    f.read_exact_at(&mut back, offset).map_err(|e| Error::io(path, e))?;
    if back != block {
        return Err(Error::Integrity(format!(
            "{}: the appended snapshot does not read back as written at byte offset {offset}",
            path.display()
        )));
    }
    Ok(Appended { offset, fresh_line })
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &[u8] = b"SNAPSHOT v1\nx\nEND_SNAPSHOT\n";

    #[test]
    fn appends_on_a_fresh_line_after_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"SNAPSHOT v1\nbal").unwrap();
        let a = append_block(&p, B).unwrap();
        assert!(a.fresh_line);
        assert_eq!(std::fs::read(&p).unwrap(), [&b"SNAPSHOT v1\nbal\n"[..], B].concat());
        let a = append_block(&p, B).unwrap();
        assert!(!a.fresh_line);
    }

    #[test]
    fn reads_back_at_its_own_offset_while_another_writer_appends() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, B).unwrap();
        let other = b"SNAPSHOT v1\nother\nEND_SNAPSHOT\n";
        std::thread::scope(|s| {
            let w = s.spawn(|| {
                for _ in 0..200 {
                    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                    f.write_all(other).unwrap();
                }
            });
            for _ in 0..200 {
                let a = append_block(&p, B).unwrap();
                let data = std::fs::read(&p).unwrap();
                assert_eq!(&data[a.offset as usize..a.offset as usize + B.len()], B);
            }
            w.join().unwrap();
        });
    }

    #[test]
    fn creates_a_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("new.dat");
        assert_eq!(
            append_block(&p, B).unwrap(),
            Appended {
                offset: 0,
                fresh_line: false
            }
        );
    }
}
