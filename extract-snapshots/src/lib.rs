//! The workflow of `ailee_extract_snapshots`: every complete snapshot of a
//! snapshot file as `OUTDIR/snapshot_<N>.dat`, the set built beside OUTDIR
//! and renamed (or swapped) into place, or added file by file into a
//! directory without snapshot files. [`extract`] returns what it wrote; the
//! binary prints it.

use ailee_cli::{lossy, ReadArgs, Report};
use ailee_core::atomic::{parent_dir, temp_name, Batch, Pending};
use ailee_core::snapfile::SnapshotFile;
use ailee_core::snapfile::{torn_tail, Note};
use ailee_core::{cancel, Error};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to extract where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The snapshot file (never modified).
    pub file: PathBuf,
    pub outdir: PathBuf,
    /// Replace an earlier extraction (the whole set, atomically).
    pub force: bool,
    pub read: ReadArgs,
}

/// What an extraction wrote.
#[derive(Debug)]
pub struct Extracted {
    /// Snapshot files written: snapshot_1.dat … snapshot_<count>.dat.
    pub count: usize,
    pub bytes: u64,
    /// What the reader noted (junk, a torn tail), in file order.
    pub notes: Vec<Note>,
    /// The torn tail not extracted: (offset, bytes).
    pub torn_tail: Option<(u64, u64)>,
    /// Snapshot files of an earlier extraction replaced (--force).
    pub replaced: usize,
}

/// What OUTDIR holds: `snapshot_<N>.dat` files, and whether anything else.
struct Contents {
    snapshots: Vec<(usize, PathBuf)>,
    other: Option<String>,
}

fn contents(dir: &Path) -> anyhow::Result<Contents> {
    let mut snapshots = Vec::new();
    let mut other = None;
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let n = name
            .strip_prefix("snapshot_")
            .and_then(|r| r.strip_suffix(".dat"))
            .and_then(|n| n.parse::<usize>().ok());
        match n {
            Some(n) => snapshots.push((n, e.path())),
            // Temporary files of an earlier run are ours too.
            None if name.starts_with(".snapshot_") && name.contains(".ailee-tmp.") => {}
            None => other = other.or(Some(name.into_owned())),
        }
    }
    snapshots.sort();
    Ok(Contents { snapshots, other })
}

/// Writes every complete snapshot of `sf` into `dir` (which is new and
/// empty, or has no snapshot files); returns (count, bytes, notes).
fn write_set(
    sf: &SnapshotFile,
    dir: &Path,
    rep: &Report,
    fresh: bool,
) -> anyhow::Result<(usize, u64, Vec<Note>, Option<Batch>)> {
    let bar = rep.bar(sf.len(), "extracting");
    let mut bytes = 0u64;
    let mut count = 0usize;
    let mut batch = (!fresh).then(Batch::default);
    let notes = sf.forward(|b| {
        let target = dir.join(format!("snapshot_{}.dat", b.number));
        match &mut batch {
            // A fresh directory is removed whole on failure or signal.
            None => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| Error::io(&target, e))?;
                f.write_all(b.bytes).map_err(|e| Error::io(&target, e))?;
            }
            Some(batch) => {
                let mut p = Pending::create_unchecked(&target, false)?;
                p.write_all(b.bytes)?;
                batch.push(p)?;
            }
        }
        count = b.number;
        bytes += b.bytes.len() as u64;
        bar.0.set_position(b.offset + b.bytes.len() as u64);
        Ok(true)
    })?;
    Ok((count, bytes, notes, batch))
}

/// The real path of `p` (its parent resolved when `p` does not exist).
fn real(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p)
        .ok()
        .or_else(|| Some(std::fs::canonicalize(parent_dir(p)).ok()?.join(p.file_name()?)))
}

/// The checks before anything is written: FILE not inside OUTDIR, OUTDIR a
/// directory or absent; returns the real OUTDIR and what it holds.
fn check_outdir(o: &Options) -> anyhow::Result<(PathBuf, Option<(std::fs::Metadata, Contents)>)> {
    let outdir = real(&o.outdir).unwrap_or_else(|| o.outdir.clone());
    if let Some(input) = real(&o.file) {
        if input.starts_with(&outdir) {
            return Err(Error::Usage(format!(
                "{} lies inside OUTDIR {}: extracting there could replace or remove the input; choose another OUTDIR",
                lossy(&o.file),
                lossy(&o.outdir)
            ))
            .into());
        }
    }
    let existing = match std::fs::symlink_metadata(&outdir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::Usage(format!("{}: exists and is not a directory", lossy(&o.outdir))).into())
        }
        Ok(m) => Some((m, contents(&outdir)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&o.outdir, e).into()),
    };
    Ok((outdir, existing))
}

/// Extracts every complete snapshot of `o.file` into `o.outdir`.
pub fn extract(o: &Options, rep: &Report) -> anyhow::Result<Extracted> {
    let sf = o.read.open(&o.file).context("cannot read snapshot file")?;
    let (outdir, existing) = check_outdir(o)?;
    let mut replaced = 0usize;
    let (count, bytes, notes) = match &existing {
        // No snapshot files there (an empty directory, or files the operator
        // keeps): add the set file by file, each atomic, nothing to mix
        // with; the directory itself (perhaps a shell's working directory)
        // stays the same directory.
        Some((_, c)) if c.snapshots.is_empty() => {
            let (count, bytes, notes, batch) = write_set(&sf, &outdir, rep, false)?;
            if let Some(b) = batch.filter(|b| !b.is_empty()) {
                b.commit(&outdir).context("cannot write the extracted snapshots")?;
                cancel::committed();
            }
            (count, bytes, notes)
        }
        Some((_, c)) if !c.snapshots.is_empty() && !o.force => {
            return Err(Error::Usage(format!(
                "{} already holds {} snapshot file(s) ({}…); refusing to overwrite (use --force)",
                lossy(&o.outdir),
                c.snapshots.len(),
                c.snapshots[0].1.file_name().unwrap_or_default().to_string_lossy()
            ))
            .into())
        }
        Some((_, c)) if c.other.is_some() => {
            return Err(Error::Usage(format!(
                "{} holds {:?} besides snapshot files; --force replaces the whole set by swapping directories, \
                 so OUTDIR must hold nothing else (move it, or extract into a directory of its own)",
                lossy(&o.outdir),
                c.other.as_deref().unwrap_or_default()
            ))
            .into())
        }
        _ => {
            let (count, bytes, notes, swapped) = build_beside(o, &sf, &outdir, existing.as_ref().map(|(m, _)| m), rep)?;
            if swapped {
                // The earlier set was replaced.
                if let Some((_, c)) = &existing {
                    replaced = c.snapshots.len();
                }
            }
            (count, bytes, notes)
        }
    };
    if count == 0 {
        return Err(anyhow::Error::new(Error::NoSnapshots(o.file.clone())).context("nothing extracted"));
    }
    let torn_tail = torn_tail(&notes);
    Ok(Extracted {
        count,
        bytes,
        notes,
        torn_tail,
        replaced,
    })
}

/// Builds the set in a fresh directory beside OUTDIR, then renames it into
/// place (or swaps it with the earlier set, which is then removed). Returns
/// (count, bytes, notes, whether an earlier set was swapped out).
fn build_beside(
    o: &Options,
    sf: &SnapshotFile,
    outdir: &Path,
    existing: Option<&std::fs::Metadata>,
    rep: &Report,
) -> anyhow::Result<(usize, u64, Vec<Note>, bool)> {
    let parent = parent_dir(outdir);
    ailee_core::atomic::reap(&parent);
    let name = outdir.file_name().unwrap_or_default().to_os_string();
    let stage = temp_name(&parent, &name);
    cancel::create_registered(&stage, true, || {
        std::fs::create_dir(&stage).map_err(|e| Error::io(&stage, e))
    })
    .context("cannot create a staging directory beside OUTDIR")?;
    let staged = (|| -> anyhow::Result<_> {
        let (count, bytes, notes, _) = write_set(sf, &stage, rep, true)?;
        if count == 0 {
            return Err(anyhow::Error::new(Error::NoSnapshots(o.file.clone())).context("nothing extracted"));
        }
        if let Some(m) = existing {
            std::fs::set_permissions(&stage, m.permissions()).map_err(|e| Error::io(&stage, e))?;
        }
        ailee_core::atomic::sync_fs(&stage)?;
        Ok((count, bytes, notes))
    })();
    let (count, bytes, notes) = match staged {
        Ok(x) => x,
        Err(e) => {
            cancel::release(&stage, || std::fs::remove_dir_all(&stage).ok());
            return Err(e);
        }
    };
    cancel::check()?;
    let swapped = cancel::critical(|| -> anyhow::Result<bool> {
        ailee_core::atomic::rename_dir(&stage, outdir, existing.is_some())
            .context("cannot move the extracted set into place")?;
        ailee_core::atomic::sync_dir(&parent)?;
        cancel::committed();
        Ok(existing.is_some())
    });
    let swapped = match swapped {
        Ok(s) => s,
        Err(e) => {
            cancel::release(&stage, || std::fs::remove_dir_all(&stage).ok());
            return Err(e);
        }
    };
    if swapped {
        // The earlier set now sits under the staging name.
        cancel::release(&stage, || std::fs::remove_dir_all(&stage))
            .map_err(|e| Error::io(&stage, e))
            .context("the new set is in place, but the earlier one could not be removed")?;
    } else {
        cancel::forget(&stage);
    }
    Ok((count, bytes, notes, swapped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ailee_recovery::vector;

    /// Extracts the test vector `name` into `outdir`, quietly.
    fn extract_vector(name: &str, outdir: &Path, force: bool) -> anyhow::Result<Extracted> {
        let o = Options {
            file: vector(name),
            outdir: outdir.to_path_buf(),
            force,
            read: ReadArgs { max_block_size: None },
        };
        extract(&o, &Report { quiet: true })
    }

    #[test]
    fn extracts_the_complete_snapshots_and_reports_the_torn_tail() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let x = extract_vector("torn-tail", &out, false).unwrap();
        assert_eq!(x.torn_tail, Some((7659, 967)));
        assert_eq!(x.replaced, 0);
        let sum: u64 = (1..=x.count)
            .map(|n| std::fs::metadata(out.join(format!("snapshot_{n}.dat"))).unwrap().len())
            .sum();
        assert_eq!(sum, x.bytes);
        assert!(!out.join(format!("snapshot_{}.dat", x.count + 1)).exists());
    }

    #[test]
    fn an_earlier_set_is_replaced_only_with_force() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let first = extract_vector("torn-tail", &out, false).unwrap();
        let e = extract_vector("basic", &out, false).unwrap_err();
        assert!(e.to_string().contains("refusing to overwrite (use --force)"), "{e}");
        let again = extract_vector("basic", &out, true).unwrap();
        assert_eq!(again.replaced, first.count);
        assert_eq!(again.torn_tail, None);
    }
}
