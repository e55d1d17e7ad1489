//! `ailee_prune_snapshots --file F --keep N --output O`: the last N complete
//! snapshots of F, byte-identical and in order, written atomically to O.
//! Finds them from the end of F and copies them in the kernel, so neither
//! reading nor copying depends on how much older history is dropped.

use ailee_cli::{lossy, out, Common, ReadArgs, Report, EXIT_CODES_HELP};
use ailee_core::atomic::{parent_dir, Pending};
use ailee_core::snapfile::torn_tail;
use ailee_core::{cancel, Error, ExitStatus};
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Keep only the last N complete snapshots of a snapshot file, in a new file.
///
/// F is never modified. O is written atomically (temporary file, fsync, rename)
/// and never replaces an existing file without --force; O may not be F. A torn
/// snapshot at the end of F is dropped and reported. With fewer than N complete
/// snapshots, all are kept.
#[derive(Debug, Parser)]
#[command(name = "ailee_prune_snapshots", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// Snapshot file to prune (read only).
    #[arg(long, value_name = "F")]
    file: PathBuf,
    /// Number of newest complete snapshots to keep (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    keep: u64,
    /// Output file.
    #[arg(long, value_name = "O")]
    output: PathBuf,
    /// Replace O if it exists.
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

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    let sf = cli.read.open(&cli.file).context("cannot read snapshot file")?;
    let md = sf.file().metadata().map_err(|e| Error::io(&cli.file, e))?;
    if same_file(&md, &cli.file, &cli.output) {
        return Err(Error::Usage(format!(
            "--output {} is the input file; write elsewhere, verify, then replace (see the runbook)",
            lossy(&cli.output)
        ))
        .into());
    }
    let mut pending = Pending::create(&cli.output, cli.force).context("cannot create output")?;

    let mut walk = sf.newest_first(None)?;
    let mut kept = Vec::new();
    while (kept.len() as u64) < cli.keep {
        match walk.next().transpose()? {
            Some(b) => kept.push((b.offset, b.bytes.len() as u64)),
            None => break,
        }
    }
    let older = if kept.len() as u64 == cli.keep {
        walk.next().transpose()?.is_some()
    } else {
        false
    };
    for n in walk.notes() {
        rep.warn(n);
    }
    if kept.is_empty() {
        return Err(anyhow::Error::new(Error::NoSnapshots(cli.file.clone())).context("nothing to keep"));
    }
    kept.reverse();
    let kept_bytes: u64 = kept.iter().map(|k| k.1).sum();
    let bar = rep.bar(kept_bytes, "copying");
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

    let torn = torn_tail(&walk.notes());
    let k = kept.len();
    if cli.common.json {
        out(json!({
            "file": lossy(&cli.file), "output": lossy(&cli.output), "kept": k, "older_dropped": older,
            "bytes_before": md.len(), "bytes_after": kept_bytes,
            "torn_tail": torn.map(|(o, l)| json!({"offset": o, "bytes": l})),
        }))?;
    } else {
        let what = if older {
            format!("Kept the last {k} snapshots; older snapshots dropped")
        } else {
            format!("Kept all {k} snapshots")
        };
        let tail = match torn {
            Some((o, l)) => format!("; torn tail at byte offset {o} ({l} bytes) dropped"),
            None => String::new(),
        };
        out(format_args!(
            "{what}: {kept_bytes} of {} bytes written to {}{tail}",
            md.len(),
            lossy(&cli.output)
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
