//! The workflow of `ailee_prune_snapshots`: the last N complete snapshots
//! of a file, found from its end and copied in the kernel into a new file
//! written atomically. [`prune`] returns what it kept; the binary prints it.

use ailee_cli::{lossy, ReadArgs, Report};
use ailee_core::atomic::{parent_dir, Pending};
use ailee_core::snapfile::torn_tail;
use ailee_core::{cancel, Error};
use anyhow::Context;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What to prune into where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The snapshot file (read only).
    pub file: PathBuf,
    /// Newest complete snapshots to keep (at least 1).
    pub keep: u64,
    pub output: PathBuf,
    /// Replace `output` if it exists.
    pub force: bool,
    pub read: ReadArgs,
}

/// What a prune wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Snapshots kept.
    pub kept: usize,
    /// Older snapshots were dropped (else all were kept).
    pub older_dropped: bool,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The torn tail dropped: (offset, bytes).
    pub torn_tail: Option<(u64, u64)>,
}

/// Is `out` (which may not exist yet) the same file as `input`?
fn same_file(input: &std::fs::Metadata, input_path: &Path, out: &Path) -> bool {
    if let Ok(m) = std::fs::metadata(out) {
        return m.dev() == input.dev() && m.ino() == input.ino();
    }
    let dir = std::fs::canonicalize(parent_dir(out)).ok();
    match (dir, out.file_name(), std::fs::canonicalize(input_path).ok()) {
        (Some(d), Some(n), Some(i)) => d.join(n) == i,
        _ => false,
    }
}

/// Writes the last `o.keep` complete snapshots of `o.file` to `o.output`.
/// What the reader notes (junk, a torn tail) goes to `rep` as warnings.
pub fn prune(o: &Options, rep: &Report) -> anyhow::Result<Pruned> {
    let sf = o.read.open(&o.file).context("cannot read snapshot file")?;
    let md = sf.file().metadata().map_err(|e| Error::io(&o.file, e))?;
    if same_file(&md, &o.file, &o.output) {
        return Err(Error::Usage(format!(
            "--output {} is the input file; write elsewhere, verify, then replace (see the runbook)",
            lossy(&o.output)
        ))
        .into());
    }
    let mut pending = Pending::create(&o.output, o.force).context("cannot create output")?;

    let mut walk = sf.newest_first(None)?;
    let mut kept = Vec::new();
    while (kept.len() as u64) < o.keep {
        match walk.next().transpose()? {
            Some(b) => kept.push((b.offset, b.bytes.len() as u64)),
            None => break,
        }
    }
    let older_dropped = if kept.len() as u64 == o.keep {
        walk.next().transpose()?.is_some()
    } else {
        false
    };
    for n in walk.notes() {
        rep.warn(n);
    }
    if kept.is_empty() {
        return Err(anyhow::Error::new(Error::NoSnapshots(o.file.clone())).context("nothing to keep"));
    }
    kept.reverse();
    let bytes_after: u64 = kept.iter().map(|k| k.1).sum();
    let bar = rep.bar(bytes_after, "copying");
    for &(offset, len) in &kept {
        pending.copy_range(sf.file(), offset, len)?;
        bar.0.inc(len);
    }
    drop(bar);
    cancel::check()?;
    cancel::critical(|| -> anyhow::Result<()> {
        pending.commit().context("cannot write output")?;
        // From here on the job is done: a signal no longer interrupts it.
        cancel::committed();
        Ok(())
    })?;
    Ok(Pruned {
        kept: kept.len(),
        older_dropped,
        bytes_before: md.len(),
        bytes_after,
        torn_tail: torn_tail(&walk.notes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ailee_recovery::vector;

    fn options(file: PathBuf, output: PathBuf, keep: u64) -> Options {
        Options {
            file,
            keep,
            output,
            force: false,
            read: ReadArgs { max_block_size: None },
        }
    }

    #[test]
    fn keeps_the_last_n_and_drops_the_torn_tail() {
        let t = tempfile::tempdir().unwrap();
        let rep = Report { quiet: true };
        let out = t.path().join("one");
        let p = prune(&options(vector("torn-tail"), out.clone(), 1), &rep).unwrap();
        assert_eq!(p.kept, 1);
        assert!(p.older_dropped);
        assert_eq!(p.torn_tail, Some((7659, 967)));
        assert_eq!(std::fs::metadata(&out).unwrap().len(), p.bytes_after);
        let all = prune(&options(vector("torn-tail"), t.path().join("all"), 1000), &rep).unwrap();
        assert!(!all.older_dropped);
        assert_eq!(all.bytes_after + 967, all.bytes_before);
    }

    #[test]
    fn the_input_is_never_the_output() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f.dat");
        std::fs::copy(vector("basic"), &f).unwrap();
        let e = prune(&options(f.clone(), f, 1), &Report { quiet: true }).unwrap_err();
        assert!(e.to_string().contains("is the input file"), "{e}");
    }
}
