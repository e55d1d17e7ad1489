//! `ailee_create_anchor`: commits to an L2 state (SPEC §1.3, §2, §3) — root,
//! payload, hash and OP_RETURN script — and optionally appends it as a new
//! snapshot, records it PENDING in the reorg database and broadcasts it.

use ailee_cli::{out, Common, Report, RpcArgs, EXIT_CODES_HELP};
use ailee_core::anchor;
use ailee_core::format::{parse_block, write_snapshot};
use ailee_core::model::Snapshot;
use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_core::reorgdb::{Batch, Mode, ReorgDb};
use ailee_core::root::state_root;
use ailee_core::rpc::Rpc;
use ailee_core::scan::Backward;
use ailee_core::verify::{anchors_before, check_block, check_links, AnchorSource, PegoutRef};
use ailee_core::{Error, ExitStatus};
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::fs::File;
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
    common: Common,
}

fn main() -> ExitCode {
    ailee_cli::main(run)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn load(cli: &Cli) -> anyhow::Result<(Option<u64>, Snapshot<'static>)> {
    if let Some(p) = &cli.from_snapshot {
        let f = File::open(p)
            .map_err(|e| Error::io(p, e))
            .context("cannot read snapshot file")?;
        let mut bw = Backward::new(&f).map_err(|e| Error::io(p, e))?;
        let b = bw
            .next_block()
            .map_err(|e| Error::io(p, e))?
            .ok_or_else(|| Error::NoSnapshots(p.clone()))?;
        let parsed = parse_block(&b.bytes)
            .map_err(|e| Error::Integrity(format!("{}: newest snapshot is corrupt: {e}", p.display())))?;
        let snap = parsed.snapshot.into_owned();
        return Ok((Some(snap.timestamp_ms), snap));
    }
    let p = cli
        .l2_state_file
        .as_ref()
        .ok_or_else(|| Error::Usage("--l2-state-file is required".into()))?;
    let text = if p.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| Error::io("stdin", e))?
    } else {
        std::fs::read_to_string(p)
            .map_err(|e| Error::io(p, e))
            .context("cannot read state file")?
    };
    let j = ailee_core::state_json::from_json(&text).with_context(|| format!("{}", p.display()))?;
    Ok((
        j.timestamp_ms,
        Snapshot {
            timestamp_ms: 0,
            state: j.state,
            anchor: None,
        },
    ))
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    if cli.broadcast && cli.db_path.is_none() {
        rep.warn("--broadcast without --db-path: the txid is printed but not recorded anywhere");
    }
    let (state_ts, mut snap) = load(&cli)?;
    let root = state_root(&snap.state).map_err(|d| Error::Usage(format!("duplicate key in {}", d.section.name())))?;
    let ambiguous = ailee_core::root::ambiguity_warning(&ailee_core::root::ambiguous_fields(&snap.state));
    if let Some(w) = &ambiguous {
        if !cli.allow_ambiguous_root {
            let e = format!("{w}. Refusing to anchor this state (--allow-ambiguous-root overrides)");
            return Err(Error::Usage(e).into());
        }
        rep.warn(format_args!("{w} (allowed by --allow-ambiguous-root)"));
    }
    let ts = cli.timestamp_ms.unwrap_or_else(now_ms);
    snap.timestamp_ms = state_ts.unwrap_or(ts);
    let a = anchor::build(&root, ts, cli.recovery_metadata.as_bytes());
    let payload = String::from_utf8_lossy(&a.payload).into_owned();
    let hash = String::from_utf8_lossy(&a.hash).into_owned();
    let data = anchor::op_return_data(&a.payload);
    let script = anchor::op_return_script_hex(&a.payload);
    snap.anchor = Some(a);
    let mut block = Vec::new();
    write_snapshot(&snap, &mut block).map_err(|e| Error::Usage(e.to_string()))?;

    // Open what will be written first, so a lock or a bad path fails before anything changes.
    let db = match &cli.db_path {
        Some(p) => Some(ReorgDb::open(p, Mode::ReadWrite).context("cannot open reorg database")?),
        None => None,
    };
    // Peg-outs must name a known anchor (SPEC §1.3).
    let refs: Vec<PegoutRef> = snap
        .state
        .pegouts
        .iter()
        .map(|p| PegoutRef {
            peg_id: String::from_utf8_lossy(&p.peg_id).into_owned(),
            hash: String::from_utf8_lossy(&p.anchor_commitment_hash).to_ascii_lowercase(),
        })
        .collect();
    // Only a commitment that is written somewhere needs known anchors;
    // computing and printing it is harmless, so then problems are warnings.
    let writes = cli.snapshot_file.is_some() || cli.db_path.is_some() || cli.broadcast;
    if let Some(r) = refs.iter().find(|r| r.hash.is_empty()) {
        let msg = format!("peg-out {} has no anchor commitment hash", r.peg_id);
        if writes {
            return Err(Error::Usage(format!("{msg}: such a snapshot could never verify")).into());
        }
        rep.warn(format_args!("{msg} (nothing is written, so this is only a warning)"));
    } else if !refs.is_empty() {
        let earlier = match &cli.snapshot_file {
            Some(p) if p.exists() => {
                let f = File::open(p).map_err(|e| Error::io(p, e))?;
                let len = f.metadata().map_err(|e| Error::io(p, e))?.len();
                anchors_before(p, &f, len, &refs)?
            }
            _ => Default::default(),
        };
        let db_source: &dyn AnchorSource = match &db {
            Some(d) => d,
            None => &NoDb,
        };
        let links = check_links(&refs, &earlier, Some(db_source))?;
        if let Some(f) = links.failure {
            if !writes {
                rep.warn(format_args!("{f} (nothing is written, so this is only a warning)"));
            } else if cli.allow_unknown_pegout_anchors {
                rep.warn(format_args!("{f} (allowed by --allow-unknown-pegout-anchors)"));
            } else {
                return Err(Error::Usage(format!(
                    "{f} Refusing to anchor a state whose peg-outs name an unknown or void anchor \
                     (--allow-unknown-pegout-anchors overrides)"
                ))
                .into());
            }
        }
    }
    let rpc = if cli.broadcast {
        Some(Rpc::connect(&cli.rpc.config()?)?)
    } else {
        None
    };
    // Build and sign before anything is appended: a wallet without funds changes nothing.
    let signed = match &rpc {
        Some(r) => Some(
            r.build_op_return_tx(&data)
                .context("cannot create the anchor transaction")?,
        ),
        None => None,
    };

    let mut appended = None;
    if let Some(p) = &cli.snapshot_file {
        let a = ailee_core::append::append_block(p, &block).context("cannot append the snapshot")?;
        if a.fresh_line {
            rep.warn(format_args!(
                "{} ended mid-line (torn); the new snapshot starts on a fresh line",
                p.display()
            ));
        }
        let v = check_block(&block, &mut Vec::new());
        if let Some(f) = v.failure {
            eprintln!("The appended snapshot does not verify: {f}");
            return Ok(ExitStatus::Integrity);
        }
        appended = Some(a.offset);
    }
    let txid = match (&rpc, &signed) {
        (Some(r), Some(hex)) => Some(r.send_raw(hex)?),
        _ => None,
    };
    if let Some(db) = &db {
        let mut b = Batch::default();
        b.put_anchor(&AnchorRecord {
            anchor_hash: hash.clone(),
            bitcoin_tx_id: txid.clone().unwrap_or_default(),
            bitcoin_height: 0,
            confirmations: 0,
            broadcast_time: if txid.is_some() { now_ms() } else { 0 },
            retry_count: 0,
            status: AnchorStatus::Pending,
            l2_state_root: root.clone(),
        });
        db.write(b)?;
        db.flush()?;
    }
    if cli.common.json {
        out(json!({
            "l2_state_root": root, "timestamp_ms": ts, "recovery_metadata": cli.recovery_metadata,
            "payload": payload, "hash": hash, "op_return_script": script,
            "appended_at_offset": appended, "recorded_in": cli.db_path, "txid": txid,
            "ambiguous_root": ambiguous.is_some(),
        }))?;
    } else {
        out(format_args!("L2StateRoot: {root}"))?;
        out(format_args!("Payload: {payload}"))?;
        out(format_args!("Anchor hash: {hash}"))?;
        out(format_args!("OP_RETURN script: {script}"))?;
        if let (Some(p), Some(o)) = (&cli.snapshot_file, appended) {
            out(format_args!(
                "Appended to {} at byte offset {o}; read back and verified",
                p.display()
            ))?;
        }
        if let Some(p) = &cli.db_path {
            out(format_args!("Recorded as PENDING in {}", p.display()))?;
        }
        if let Some(t) = &txid {
            out(format_args!("Broadcast txid: {t}"))?;
        }
    }
    Ok(ExitStatus::Success)
}

/// No database: every anchor is unknown to it.
struct NoDb;

impl AnchorSource for NoDb {
    fn status(&self, _: &str) -> ailee_core::Result<ailee_core::verify::LinkStatus> {
        Ok(ailee_core::verify::LinkStatus::Unknown)
    }
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
