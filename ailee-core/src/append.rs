//! Appending a snapshot to `l2_snapshots.dat` the way the node does (a plain
//! append), but durably and checked: start on a fresh line when the file ends
//! torn, fsync, then read the newest complete snapshot back and compare.

use crate::scan::Backward;
use crate::{Error, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Byte offset of the new block's header.
    pub offset: u64,
    /// A newline was written first because the file ended mid-line (torn).
    pub fresh_line: bool,
}

/// Appends one block (as produced by [`crate::format::write_snapshot`]) and
/// checks that it reads back as the newest complete snapshot, byte for byte.
pub fn append_block(path: &Path, block: &[u8]) -> Result<Appended> {
    let existed = path.exists();
    let mut f = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
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
    if let Err(e) = f.write_all(&data).and_then(|_| f.sync_all()) {
        // Take back what was written (a torn tail of our own making); the
        // snapshots that were there stay as they were.
        let _ = f.set_len(len).and_then(|_| f.sync_all());
        return Err(Error::io(path, e));
    }
    if !existed {
        crate::atomic::sync_dir(&crate::atomic::parent_dir(path))?;
    }
    let offset = len + fresh_line as u64;
    let mut bw = Backward::new(&f).map_err(|e| Error::io(path, e))?;
    match bw.next_block().map_err(|e| Error::io(path, e))? {
        Some(b) if b.offset == offset && b.bytes == block => Ok(Appended { offset, fresh_line }),
        _ => Err(Error::Integrity(format!(
            "{}: the appended snapshot does not read back as the newest complete snapshot (concurrent writer?)",
            path.display()
        ))),
    }
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
