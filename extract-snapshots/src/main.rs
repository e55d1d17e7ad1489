//! `ailee_extract_snapshots FILE OUTDIR`: one byte-identical
//! `snapshot_<N>.dat` per complete snapshot (SPEC §2), for the runbook's
//! "find the newest valid snapshot" loops.

use ailee_cli::{lossy, out, Common, ReadArgs, EXIT_CODES_HELP};
use ailee_core::ExitStatus;
use ailee_extract_snapshots::Options;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
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

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = cli.common.report();
    let o = Options {
        file: cli.file,
        outdir: cli.outdir,
        force: cli.force,
        read: cli.read,
    };
    let x = ailee_extract_snapshots::extract(&o, &rep)?;
    let (count, bytes, notes, torn, replaced) = (x.count, x.bytes, &x.notes, x.torn_tail, x.replaced);
    for n in notes {
        rep.warn(n);
    }
    if replaced > 0 {
        rep.info(format_args!(
            "replaced an earlier extraction of {replaced} snapshot file(s)"
        ));
    }
    if cli.common.json {
        out(json!({
            "file": lossy(&o.file), "outdir": lossy(&o.outdir), "snapshots": count, "bytes": bytes,
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
            lossy(&o.outdir)
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
