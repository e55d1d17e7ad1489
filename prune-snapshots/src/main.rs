//! `ailee_prune_snapshots --file F --keep N --output O`: the last N complete
//! snapshots of F, byte-identical and in order, written atomically to O.
//! Finds them from the end of F and copies them in the kernel, so neither
//! reading nor copying depends on how much older history is dropped.

use ailee_cli::{lossy, out, Common, ReadArgs, EXIT_CODES_HELP};
use ailee_core::ExitStatus;
use ailee_prune_snapshots::Options;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
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

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = cli.common.report();
    let o = Options {
        file: cli.file,
        keep: cli.keep,
        output: cli.output,
        force: cli.force,
        read: cli.read,
    };
    let p = ailee_prune_snapshots::prune(&o, &rep)?;
    let (k, older, kept_bytes, torn) = (p.kept, p.older_dropped, p.bytes_after, p.torn_tail);
    if cli.common.json {
        out(json!({
            "file": lossy(&o.file), "output": lossy(&o.output), "kept": k, "older_dropped": older,
            "bytes_before": p.bytes_before, "bytes_after": kept_bytes,
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
            p.bytes_before,
            lossy(&o.output)
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
