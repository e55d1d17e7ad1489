//! `ailee_extract_snapshots FILE OUTDIR`: one byte-identical
//! `snapshot_<N>.dat` per complete snapshot (SPEC §2), for the runbook's
//! "find the newest valid snapshot" loops.

use ailee_cli::{lossy, out, Common, ReadArgs, Report, EXIT_CODES_HELP};
use ailee_core::atomic::{parent_dir, temp_name, Batch, Pending};
use ailee_core::snapfile::torn_tail;
use ailee_core::snapfile::SnapshotFile;
use ailee_core::{cancel, Error, ExitStatus};
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Extract every complete snapshot of a snapshot file into OUTDIR/snapshot_<N>.dat.
///
/// N counts complete snapshots from 1 (oldest first, no padding). Each file is a
/// byte-identical copy of its block; corrupt-but-complete snapshots are extracted
/// too (ailee_l2_verify judges them), a torn snapshot left by a crash is not.
/// A new OUTDIR is built beside its final name and renamed into place once
/// complete; with --force over an earlier extraction the new set is built
/// the same way and swapped with the old one in one rename, so OUTDIR never
/// holds a mix of two extractions, even after an interrupted run. Into an
/// existing OUTDIR without snapshot files, each file is written atomically. Existing snapshot_*.dat files are never replaced without
/// --force; --force needs OUTDIR to hold nothing but snapshot_<N>.dat files.
/// FILE may not lie inside OUTDIR.
#[derive(Debug, Parser)]
#[command(name = "ailee_extract_snapshots", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// Snapshot file to read (never modified).
    file: PathBuf,
    /// Directory to write snapshot_<N>.dat files into.
    outdir: PathBuf,
    /// Replace an earlier extraction in OUTDIR (the whole set, atomically).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    read: ReadArgs,
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    ailee_cli::main(run)
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
) -> anyhow::Result<(usize, u64, Vec<ailee_core::snapfile::Note>, Option<Batch>)> {
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

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    let sf = cli.read.open(&cli.file).context("cannot read snapshot file")?;
    let outdir = real(&cli.outdir).unwrap_or_else(|| cli.outdir.clone());
    if let Some(input) = real(&cli.file) {
        if input.starts_with(&outdir) {
            return Err(Error::Usage(format!(
                "{} lies inside OUTDIR {}: extracting there could replace or remove the input; choose another OUTDIR",
                lossy(&cli.file),
                lossy(&cli.outdir)
            ))
            .into());
        }
    }
    let existing = match std::fs::symlink_metadata(&outdir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::Usage(format!("{}: exists and is not a directory", lossy(&cli.outdir))).into())
        }
        Ok(m) => Some((m, contents(&outdir)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&cli.outdir, e).into()),
    };
    let mut replaced = 0usize;
    let (count, bytes, notes) = match &existing {
        // No snapshot files there (an empty directory, or files the operator
        // keeps): add the set file by file, each atomic, nothing to mix
        // with; the directory itself (perhaps a shell's working directory)
        // stays the same directory.
        Some((_, c)) if c.snapshots.is_empty() => {
            let (count, bytes, notes, batch) = write_set(&sf, &outdir, &rep, false)?;
            if let Some(b) = batch.filter(|b| !b.is_empty()) {
                b.commit(&outdir).context("cannot write the extracted snapshots")?;
                cancel::committed();
            }
            (count, bytes, notes)
        }
        Some((_, c)) if !c.snapshots.is_empty() && !cli.force => {
            return Err(Error::Usage(format!(
                "{} already holds {} snapshot file(s) ({}…); refusing to overwrite (use --force)",
                lossy(&cli.outdir),
                c.snapshots.len(),
                c.snapshots[0].1.file_name().unwrap_or_default().to_string_lossy()
            ))
            .into())
        }
        Some((_, c)) if c.other.is_some() => {
            return Err(Error::Usage(format!(
                "{} holds {:?} besides snapshot files; --force replaces the whole set by swapping directories, \
                 so OUTDIR must hold nothing else (move it, or extract into a directory of its own)",
                lossy(&cli.outdir),
                c.other.as_deref().unwrap_or_default()
            ))
            .into())
        }
        _ => {
            // Build the set in a fresh directory beside OUTDIR.
            let parent = parent_dir(&outdir);
            ailee_core::atomic::reap(&parent);
            let name = outdir.file_name().unwrap_or_default().to_os_string();
            let stage = temp_name(&parent, &name);
            cancel::create_registered(&stage, true, || {
                std::fs::create_dir(&stage).map_err(|e| Error::io(&stage, e))
            })
            .context("cannot create a staging directory beside OUTDIR")?;
            let staged = (|| -> anyhow::Result<_> {
                let (count, bytes, notes, _) = write_set(&sf, &stage, &rep, true)?;
                if count == 0 {
                    return Err(anyhow::Error::new(Error::NoSnapshots(cli.file.clone())).context("nothing extracted"));
                }
                if let Some((m, _)) = &existing {
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
                ailee_core::atomic::rename_dir(&stage, &outdir, existing.is_some())
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
                if let Some((_, c)) = &existing {
                    replaced = c.snapshots.len();
                }
                cancel::release(&stage, || std::fs::remove_dir_all(&stage))
                    .map_err(|e| Error::io(&stage, e))
                    .context("the new set is in place, but the earlier one could not be removed")?;
            } else {
                cancel::forget(&stage);
            }
            (count, bytes, notes)
        }
    };
    if count == 0 {
        return Err(anyhow::Error::new(Error::NoSnapshots(cli.file.clone())).context("nothing extracted"));
    }
    for n in &notes {
        rep.warn(n);
    }
    let torn = torn_tail(&notes);
    if replaced > 0 {
        rep.info(format_args!(
            "replaced an earlier extraction of {replaced} snapshot file(s)"
        ));
    }
    if cli.common.json {
        out(json!({
            "file": lossy(&cli.file), "outdir": lossy(&cli.outdir), "snapshots": count, "bytes": bytes,
            "first": "snapshot_1.dat", "last": format!("snapshot_{count}.dat"),
            "torn_tail": torn.map(|(o, l)| json!({"offset": o, "bytes": l})),
            "replaced": replaced,
            "warnings": notes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))?;
    } else {
        let tail = match torn {
            Some((o, l)) => format!("torn tail at byte offset {o} ({l} bytes) not extracted"),
            None => "no torn tail".to_string(),
        };
        let files = if count == 1 {
            "1 snapshot".to_string()
        } else {
            format!("{count} snapshots")
        };
        let names = if count == 1 {
            "snapshot_1.dat".to_string()
        } else {
            format!("snapshot_1.dat … snapshot_{count}.dat")
        };
        out(format_args!(
            "Extracted {files} ({bytes} bytes) to {}: {names}; {tail}",
            lossy(&cli.outdir)
        ))?;
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
