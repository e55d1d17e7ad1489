//! `ailee_extract_snapshots FILE OUTDIR`: one byte-identical
//! `snapshot_<N>.dat` per complete snapshot (SPEC §2), for the runbook's
//! "find the newest valid snapshot" loops.

use ailee_cli::{out, Common, Report, EXIT_CODES_HELP};
use ailee_core::atomic::{Batch, Pending};
use ailee_core::scan::{open_snapshot_file, torn_tail, Note, Scanner};
use ailee_core::{cancel, Error, ExitStatus};
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Extract every complete snapshot of a snapshot file into OUTDIR/snapshot_<N>.dat.
///
/// N counts complete snapshots from 1 (oldest first, no padding). Each file is a
/// byte-identical copy of its block; corrupt-but-complete snapshots are extracted
/// too (ailee_l2_verify judges them), a torn snapshot left by a crash is not.
/// OUTDIR is created if needed. Existing snapshot_*.dat files are never replaced
/// without --force; with --force, stale snapshot_<M>.dat files beyond the new
/// count are removed so a `seq 10 -1 1` loop cannot pick up an old one.
#[derive(Debug, Parser)]
#[command(name = "ailee_extract_snapshots", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// Snapshot file to read (never modified).
    file: PathBuf,
    /// Directory to write snapshot_<N>.dat files into.
    outdir: PathBuf,
    /// Replace existing snapshot_*.dat files in OUTDIR.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    ailee_cli::main(run)
}

/// `snapshot_<N>.dat` names already in `dir`, with their N.
fn existing(dir: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix("snapshot_").and_then(|r| r.strip_suffix(".dat")) {
            if let Ok(n) = n.parse::<usize>() {
                found.push((n, e.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    let (file, md) = open_snapshot_file(&cli.file).context("cannot read snapshot file")?;
    match std::fs::metadata(&cli.outdir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::Usage(format!("{}: exists and is not a directory", cli.outdir.display())).into())
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(&cli.outdir)
            .map_err(|e| Error::io(&cli.outdir, e))
            .context("cannot create output directory")?,
    }
    let before = existing(&cli.outdir)?;
    if !before.is_empty() && !cli.force {
        return Err(Error::Usage(format!(
            "{} already holds {} snapshot file(s) ({}…); refusing to overwrite (use --force)",
            cli.outdir.display(),
            before.len(),
            before[0].1.file_name().unwrap_or_default().to_string_lossy()
        ))
        .into());
    }

    let bar = rep.bar(md.len(), "extracting");
    let mut sc = Scanner::new(&file);
    let mut batch = Batch::default();
    let mut notes: Vec<Note> = Vec::new();
    let mut bytes = 0u64;
    while let Some(c) = sc.next_chunk().map_err(|e| Error::io(&cli.file, e))? {
        cancel::check()?;
        for b in &c.blocks {
            let n = batch.len() + 1;
            // OUTDIR was checked once above; NOREPLACE at the rename still guards.
            let mut p = Pending::create_unchecked(&cli.outdir.join(format!("snapshot_{n}.dat")), cli.force)?;
            p.write_all(&c.data[b.start..b.end])?;
            batch.push(p)?;
            bytes += (b.end - b.start) as u64;
        }
        bar.0.set_position(c.offset + c.data.len() as u64);
        notes.extend(c.notes);
        sc.recycle(c.data); // reuse: freeing large buffers fragments the heap
    }
    drop(bar);
    if batch.is_empty() {
        return Err(anyhow::Error::new(Error::NoSnapshots(cli.file.clone())).context("nothing extracted"));
    }
    let count = batch.len();
    batch
        .commit(&cli.outdir)
        .context("cannot write the extracted snapshots")?;
    let mut removed = Vec::new();
    for (n, p) in before.into_iter().filter(|(n, _)| *n > count) {
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        removed.push(n);
    }
    for n in &notes {
        rep.warn(n);
    }
    let torn = torn_tail(&notes);
    if !removed.is_empty() {
        rep.warn(format_args!(
            "removed {} stale snapshot file(s) numbered above {count}",
            removed.len()
        ));
    }
    if cli.common.json {
        out(json!({
            "file": cli.file, "outdir": cli.outdir, "snapshots": count, "bytes": bytes,
            "first": "snapshot_1.dat", "last": format!("snapshot_{count}.dat"),
            "torn_tail": torn.map(|(o, l)| json!({"offset": o, "bytes": l})),
            "removed_stale": removed,
            "warnings": notes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))?;
    } else {
        let tail = match torn {
            Some((o, l)) => format!("torn tail at byte offset {o} ({l} bytes) not extracted"),
            None => "no torn tail".to_string(),
        };
        out(format_args!(
            "Extracted {count} snapshots ({bytes} bytes) to {}: snapshot_1.dat … snapshot_{count}.dat; {tail}",
            cli.outdir.display()
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
