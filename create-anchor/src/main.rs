//! `ailee_create_anchor`: commits to an L2 state (SPEC §1.3, §2, §3) — root,
//! payload, hash and OP_RETURN script — and optionally appends it as a new
//! snapshot, records it PENDING in the reorg database and broadcasts it.

use ailee_cli::{lossy, out, Common, ReadArgs, Report, RpcArgs, EXIT_CODES_HELP};
use ailee_core::anchor;
use ailee_core::format::{parse_block, write_snapshot};
use ailee_core::model::Snapshot;
use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_core::root::state_root;
use ailee_core::rpc::Rpc;
use ailee_core::snapfile::{read_capped, STATE_CAP};
use ailee_core::verify::{anchor_hash_of, check_block, check_links, AnchorSource, PegoutRef};
use ailee_core::{cancel, Error, ExitStatus};
use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn load(cli: &Cli) -> anyhow::Result<(Option<u64>, Snapshot<'static>)> {
    if let Some(p) = &cli.from_snapshot {
        let sf = cli.read.open(p).context("cannot read snapshot file")?;
        let b = sf.newest()?.0.ok_or_else(|| Error::NoSnapshots(p.clone()))?;
        let parsed = parse_block(&b.bytes)
            .map_err(|e| Error::Integrity(format!("{}: newest snapshot is corrupt: {e}", lossy(p))))?;
        let snap = parsed.snapshot.into_owned();
        return Ok((Some(snap.timestamp_ms), snap));
    }
    let p = cli
        .l2_state_file
        .as_ref()
        .ok_or_else(|| Error::Usage("--l2-state-file is required".into()))?;
    let bytes = read_capped(p, STATE_CAP, "JSON state", true).context("cannot read state file")?;
    let text = String::from_utf8(bytes).map_err(|_| Error::Usage(format!("{}: not UTF-8 text", lossy(p))))?;
    let j = ailee_core::state_json::from_json(&text).with_context(|| lossy(p))?;
    Ok((
        j.timestamp_ms,
        Snapshot {
            timestamp_ms: 0,
            state: j.state,
            anchor: None,
        },
    ))
}

/// The newest complete snapshot of the file to append to (offset, bytes), if any.
fn newest_of(cli: &Cli, p: &Path) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let sf = cli.read.open(p).context("cannot read the snapshot file to append to")?;
    Ok(sf.newest()?.0.map(|b| (b.offset, b.bytes)))
}

/// Anchor hashes of the snapshots of `p`, read from the end until every
/// anchor `refs` names is found.
fn anchors_in(cli: &Cli, p: &Path, refs: &[PegoutRef]) -> anyhow::Result<HashSet<String>> {
    let mut set = HashSet::new();
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(set);
    }
    let sf = cli.read.open(p)?;
    let mut missing: HashSet<&str> = refs.iter().map(|r| r.hash.as_str()).collect();
    let mut bw = sf.backward(None)?;
    while !missing.is_empty() {
        let Some(b) = sf.next_back(&mut bw)? else { break };
        if let Some(h) = anchor_hash_of(&b.bytes) {
            missing.remove(h.as_str());
            set.insert(h);
        }
    }
    Ok(set)
}

/// The anchor timestamp of the file's newest snapshot when it holds this
/// very state and metadata under an anchor that is not void: a rerun without
/// --timestamp-ms reuses it instead of anchoring the same state twice.
fn reusable_timestamp(
    newest: Option<&(u64, Vec<u8>)>,
    root: &str,
    metadata: &[u8],
    db: Option<&ReorgDb>,
) -> anyhow::Result<Option<u64>> {
    let Some((_, bytes)) = newest else { return Ok(None) };
    let Ok(parsed) = parse_block(bytes) else {
        return Ok(None);
    };
    let Some(a) = &parsed.snapshot.anchor else {
        return Ok(None);
    };
    if *a.l2_state_root != *root.as_bytes() || *a.recovery_metadata != *metadata {
        return Ok(None);
    }
    if let Some(db) = db {
        let h = String::from_utf8_lossy(&a.hash).to_ascii_lowercase();
        if db.anchor(&h)?.is_some_and(|r| r.status.is_void()) {
            return Ok(None);
        }
    }
    Ok(Some(a.timestamp_ms))
}

/// What a step did: done now, found already done, or not asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Done,
    Already,
    Skipped,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Done => "done",
            Step::Already => "already_done",
            Step::Skipped => "not_requested",
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    if cli.broadcast && cli.db_path.is_none() {
        rep.warn("--broadcast without --db-path: the txid is printed but not recorded anywhere, and a rerun broadcasts again");
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

    // Open what will be written first, so a lock or a bad path fails before anything changes.
    let db = match &cli.db_path {
        Some(p) => Some(ReorgDb::open(p, Mode::ReadWrite).context("cannot open reorg database")?),
        None => None,
    };
    let newest = match &cli.snapshot_file {
        Some(p) => newest_of(&cli, p)?,
        None => None,
    };
    let reuse = match cli.timestamp_ms {
        Some(_) => None,
        None => reusable_timestamp(newest.as_ref(), &root, cli.recovery_metadata.as_bytes(), db.as_ref())?,
    };
    let build = |snap: &mut Snapshot<'static>, ts: u64| -> anyhow::Result<Vec<u8>> {
        snap.timestamp_ms = state_ts.unwrap_or(ts);
        snap.anchor = Some(anchor::build(&root, ts, cli.recovery_metadata.as_bytes()));
        let mut block = Vec::new();
        write_snapshot(snap, &mut block).map_err(|e| Error::Usage(e.to_string()))?;
        Ok(block)
    };
    let mut ts = cli.timestamp_ms.or(reuse).unwrap_or_else(now_ms);
    let mut block = build(&mut snap, ts)?;
    let mut already_appended = newest.as_ref().filter(|(_, b)| *b == block).map(|(o, _)| *o);
    if reuse.is_some() {
        if already_appended.is_some() {
            rep.info(format_args!(
                "the newest snapshot already holds this state with an anchor of timestamp {ts}: \
                 reusing that anchor (pass --timestamp-ms to anchor anew)"
            ));
        } else {
            // Same state and anchor, but not this command's block (e.g. another
            // snapshot timestamp): anchor anew.
            ts = now_ms();
            block = build(&mut snap, ts)?;
            already_appended = None;
        }
    }
    let a = snap
        .anchor
        .as_ref()
        .ok_or_else(|| Error::Usage("no anchor built".into()))?;
    let payload = String::from_utf8_lossy(&a.payload).into_owned();
    let hash = String::from_utf8_lossy(&a.hash).into_owned();
    let data = anchor::op_return_data(&a.payload);
    let script = anchor::op_return_script_hex(&a.payload);
    let existing = match &db {
        Some(d) => d.anchor(&hash)?,
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
            Some(p) => anchors_in(&cli, p, &refs)?,
            None => Default::default(),
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
    let known_txid = existing
        .as_ref()
        .map(|r| r.bitcoin_tx_id.clone())
        .filter(|t| !t.is_empty());
    let rpc = if cli.broadcast && known_txid.is_none() {
        Some(Rpc::connect(&cli.rpc.config()?)?)
    } else {
        None
    };
    // Build and sign before anything is appended: a wallet without funds changes nothing.
    let signed = match &rpc {
        Some(r) => {
            let data_dir = cli
                .db_path
                .as_deref()
                .and_then(ailee_core::identity::AnchorIdentity::data_dir_of);
            let identity = cli.rpc.identity(data_dir.as_deref())?;
            if identity.is_none() {
                rep.warn(
                    "no anchoring identity (DATA_DIR/anchor_identity or --anchor-identity FILE): the wallet funds \
                     the anchor from any of its outputs, and its author cannot be proven on chain",
                );
            }
            Some(
                r.build_op_return_tx(&data, identity.as_ref())
                    .context("cannot create the anchor transaction")?,
            )
        }
        None => None,
    };

    // Step 1: append.
    let (append, offset) = match (&cli.snapshot_file, already_appended) {
        (None, _) => (Step::Skipped, None),
        (Some(_), Some(o)) => (Step::Already, Some(o)),
        (Some(p), None) => {
            let v = check_block(&block, &mut Vec::new());
            if let Some(f) = v.failure {
                ailee_cli::errln!("The snapshot to append does not verify: {f}");
                return Ok(ExitStatus::Integrity);
            }
            let a = ailee_core::append::append_block(p, &block).context("cannot append the snapshot")?;
            if a.fresh_line {
                rep.warn(format_args!(
                    "{} ended mid-line (torn); the new snapshot starts on a fresh line",
                    lossy(p)
                ));
            }
            (Step::Done, Some(a.offset))
        }
    };
    // Step 2: record PENDING (an existing record is never touched here).
    // With --broadcast the record is written with its txid once the node has
    // accepted the transaction, so a refused broadcast stores nothing; the
    // rerun finds the snapshot already appended and finishes from there.
    let new_record = |txid: &str| AnchorRecord {
        anchor_hash: hash.clone(),
        bitcoin_tx_id: txid.to_string(),
        bitcoin_height: 0,
        confirmations: 0,
        broadcast_time: if txid.is_empty() { 0 } else { now_ms() },
        retry_count: 0,
        status: AnchorStatus::Pending,
        l2_state_root: root.clone(),
    };
    let mut record = match (&db, &existing) {
        (None, _) => Step::Skipped,
        (Some(_), Some(_)) => Step::Already,
        (Some(_), None) if signed.is_some() => Step::Skipped, // written with the txid below
        (Some(db), None) => {
            cancel::check()?;
            cancel::critical(|| -> anyhow::Result<()> {
                let mut b = Batch::default();
                b.put_anchor(&new_record(""));
                db.write(b)?;
                db.flush()?;
                Ok(())
            })?;
            Step::Done
        }
    };
    // Step 3: broadcast, and record the txid in the same breath.
    let (broadcast, txid) = match (&rpc, &signed, known_txid) {
        (_, _, Some(t)) if cli.broadcast => (Step::Already, Some(t)),
        (Some(r), Some(hex), _) => {
            cancel::check()?;
            let (t, created) = cancel::critical(|| -> anyhow::Result<(String, bool)> {
                let t = r.send_raw(hex)?;
                let mut created = false;
                if let Some(db) = &db {
                    // A new record, or a PENDING record without a txid gains
                    // one; nothing else of a record is ever changed here.
                    let rec = match db.anchor(&hash)? {
                        None => {
                            created = true;
                            Some(new_record(&t))
                        }
                        Some(mut rec) if rec.bitcoin_tx_id.is_empty() && rec.status == AnchorStatus::Pending => {
                            rec.bitcoin_tx_id = t.clone();
                            rec.broadcast_time = now_ms();
                            Some(rec)
                        }
                        Some(_) => None,
                    };
                    if let Some(rec) = rec {
                        let mut b = Batch::default();
                        b.put_anchor(&rec);
                        db.write(b)?;
                        db.flush()?;
                    }
                }
                Ok((t, created))
            })?;
            if created {
                record = Step::Done;
            }
            (Step::Done, Some(t))
        }
        _ => (Step::Skipped, None),
    };
    cancel::committed();
    let status_now = match &db {
        Some(d) => d.anchor(&hash)?.map(|r| r.status.name()),
        None => None,
    };
    if cli.common.json {
        out(json!({
            "l2_state_root": root, "timestamp_ms": ts, "recovery_metadata": cli.recovery_metadata,
            "payload": payload, "hash": hash, "op_return_script": script,
            "appended_at_offset": offset, "recorded_in": cli.db_path.as_deref().map(lossy), "txid": txid,
            "record_status": status_now,
            "steps": {"append": append.name(), "record": record.name(), "broadcast": broadcast.name()},
            "ambiguous_root": ambiguous.is_some(),
        }))?;
    } else {
        out(format_args!("L2StateRoot: {root}"))?;
        out(format_args!("Payload: {payload}"))?;
        out(format_args!("Anchor hash: {hash}"))?;
        out(format_args!("OP_RETURN script: {script}"))?;
        if let (Some(p), Some(o)) = (&cli.snapshot_file, offset) {
            match append {
                Step::Done => out(format_args!(
                    "Appended to {} at byte offset {o}; read back and verified",
                    lossy(p)
                ))?,
                _ => out(format_args!(
                    "Already appended: the newest snapshot of {} (byte offset {o}) is this state with this anchor; not appended again",
                    lossy(p)
                ))?,
            }
        }
        if let Some(p) = &cli.db_path {
            match record {
                Step::Done => out(format_args!("Recorded as PENDING in {}", lossy(p)))?,
                _ => out(format_args!(
                    "Already recorded in {} (status {}); record left unchanged",
                    lossy(p),
                    status_now.unwrap_or("?")
                ))?,
            }
        }
        if let Some(t) = &txid {
            match broadcast {
                Step::Done => out(format_args!("Broadcast txid: {t}"))?,
                _ => out(format_args!("Already broadcast: txid {t}; not broadcast again"))?,
            }
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
