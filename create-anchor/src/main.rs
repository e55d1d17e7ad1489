//! `ailee_create_anchor`: commits to an L2 state (SPEC §1.3, §2, §3) — root,
//! payload, hash and OP_RETURN script — and optionally appends it as a new
//! snapshot, records it PENDING in the reorg database and broadcasts it.

use ailee_cli::{lossy, out, Common, ReadArgs, Report, RpcArgs, EXIT_CODES_HELP};
use ailee_core::ExitStatus;
use ailee_create_anchor::{Anchored, Options, Outcome, Step};
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Create the anchor commitment of an L2 state (runbook Procedure 4, step 6).
///
/// Reads the state (JSON of SPEC §3, or the newest snapshot of a snapshot file),
/// computes its state root and the anchor (payload root:timestampMs:metadata,
/// hash sha256(payload)), and prints root, payload, hash and the OP_RETURN
/// script hex. Optionally: append the state with its anchor to a snapshot file
/// (fsync, read back and verified: exit 2 if it does not verify), record the
/// anchor PENDING in the reorg database, and broadcast the OP_RETURN through
/// the node's wallet (the txid is recorded; ailee_resync_blocks then fills in
/// its height and confirmations). Peg-outs must name an anchor the snapshot
/// file or the database records, unless --allow-unknown-pegout-anchors.
///
/// Run again after a partial failure, the same command finishes the job
/// instead of repeating it: a state that is already the file's newest snapshot
/// (with the same metadata, and the same --timestamp-ms if given) is not
/// appended again and its anchor is reused; a recorded anchor is never
/// recorded again (an existing record is left unchanged, never downgraded);
/// an anchor with a txid is not broadcast again. The output says which steps
/// were done now and which already were.
#[derive(Debug, Parser)]
#[command(name = "ailee_create_anchor", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// The state as JSON (SPEC §3); `-` reads standard input.
    #[arg(
        long,
        value_name = "STATE.json",
        required_unless_present = "from_snapshot",
        conflicts_with = "from_snapshot"
    )]
    l2_state_file: Option<PathBuf>,
    /// Take the state of the newest complete snapshot of this file instead.
    #[arg(long, value_name = "FILE")]
    from_snapshot: Option<PathBuf>,
    /// Recovery metadata committed in the payload.
    #[arg(long, value_name = "TEXT", default_value = "")]
    recovery_metadata: String,
    /// Anchor timestamp in Unix milliseconds (default: now).
    #[arg(long, value_name = "MS")]
    timestamp_ms: Option<u64>,
    /// Append the state with its anchor as a new snapshot to this file.
    #[arg(long, value_name = "FILE")]
    snapshot_file: Option<PathBuf>,
    /// Record the anchor as PENDING in this reorg database (needs exclusive access).
    #[arg(long, value_name = "P")]
    db_path: Option<PathBuf>,
    /// Broadcast the OP_RETURN through the node's wallet (needs --bitcoin-rpc).
    #[arg(long, requires = "bitcoin_rpc")]
    broadcast: bool,
    #[command(flatten)]
    rpc: RpcArgs,
    /// Accept peg-outs whose anchor no available source records.
    #[arg(long)]
    allow_unknown_pegout_anchors: bool,
    /// Anchor a state whose ids hold ':' although its root then does not pin it down.
    #[arg(long)]
    allow_ambiguous_root: bool,
    #[command(flatten)]
    read: ReadArgs,
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    ailee_cli::main(run)
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    let o = Options {
        l2_state_file: cli.l2_state_file,
        from_snapshot: cli.from_snapshot,
        recovery_metadata: cli.recovery_metadata,
        timestamp_ms: cli.timestamp_ms,
        snapshot_file: cli.snapshot_file,
        db_path: cli.db_path,
        broadcast: cli.broadcast,
        allow_unknown_pegout_anchors: cli.allow_unknown_pegout_anchors,
        allow_ambiguous_root: cli.allow_ambiguous_root,
        read: cli.read,
        rpc: cli.rpc,
    };
    let a = match ailee_create_anchor::run(&o, &rep)? {
        Outcome::DoesNotVerify(f) => {
            ailee_cli::errln!("The snapshot to append does not verify: {f}");
            return Ok(ExitStatus::Integrity);
        }
        Outcome::Anchored(a) => a,
    };
    if cli.common.json {
        out(json!({
            "l2_state_root": a.root, "timestamp_ms": a.timestamp_ms, "recovery_metadata": o.recovery_metadata,
            "payload": a.payload, "hash": a.hash, "op_return_script": a.op_return_script,
            "appended_at_offset": a.offset, "recorded_in": o.db_path.as_deref().map(lossy), "txid": a.txid,
            "record_status": a.record_status,
            "steps": {"append": a.append.name(), "record": a.record.name(), "broadcast": a.broadcast.name()},
            "ambiguous_root": a.ambiguous_root,
        }))?;
    } else {
        render_text(&o, &a)?;
    }
    Ok(ExitStatus::Success)
}

/// The commitment and which steps were done now or already.
fn render_text(o: &Options, a: &Anchored) -> std::io::Result<()> {
    out(format_args!("L2StateRoot: {}", a.root))?;
    out(format_args!("Payload: {}", a.payload))?;
    out(format_args!("Anchor hash: {}", a.hash))?;
    out(format_args!("OP_RETURN script: {}", a.op_return_script))?;
    if let (Some(p), Some(off)) = (&o.snapshot_file, a.offset) {
        match a.append {
            Step::Done => out(format_args!(
                "Appended to {} at byte offset {off}; read back and verified",
                lossy(p)
            ))?,
            _ => out(format_args!(
                "Already appended: the newest snapshot of {} (byte offset {off}) is this state with this anchor; not appended again",
                lossy(p)
            ))?,
        }
    }
    if let Some(p) = &o.db_path {
        match a.record {
            Step::Done => out(format_args!("Recorded as PENDING in {}", lossy(p)))?,
            _ => out(format_args!(
                "Already recorded in {} (status {}); record left unchanged",
                lossy(p),
                a.record_status.unwrap_or("?")
            ))?,
        }
    }
    if let Some(t) = &a.txid {
        match a.broadcast {
            Step::Done => out(format_args!("Broadcast txid: {t}"))?,
            _ => out(format_args!("Already broadcast: txid {t}; not broadcast again"))?,
        }
    }
    Ok(())
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
