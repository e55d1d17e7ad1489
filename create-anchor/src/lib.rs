//! The workflow of `ailee_create_anchor`, step by step: load the state and
//! build its commitment ([`commitment`]), check its peg-outs
//! ([`check_pegouts`]), sign the transaction ([`sign`]), then append,
//! record and broadcast, each skipped when a previous run already did it.
//! [`run`] composes them and returns an [`Outcome`] the binary renders.

use ailee_cli::{lossy, ReadArgs, Report, RpcArgs};
use ailee_core::anchor;
use ailee_core::format::{parse_block, write_snapshot};
use ailee_core::model::Snapshot;
use ailee_core::records::AnchorLookup;
use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_core::root::state_root;
use ailee_core::rpc::Rpc;
use ailee_core::snapfile::{read_capped, STATE_CAP};
use ailee_core::verifier::Verifier;
use ailee_core::verify::PegoutRef;
use ailee_core::{cancel, Error};
use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use anyhow::Context;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What to anchor and which steps to take.
#[derive(Debug, Clone)]
pub struct Options {
    /// The state as JSON (`-`: standard input) …
    pub l2_state_file: Option<PathBuf>,
    /// … or the newest complete snapshot of this file.
    pub from_snapshot: Option<PathBuf>,
    pub recovery_metadata: String,
    /// Anchor timestamp (default: now, or the one a rerun reuses).
    pub timestamp_ms: Option<u64>,
    /// Step 1: append the state with its anchor to this file.
    pub snapshot_file: Option<PathBuf>,
    /// Step 2: record the anchor PENDING in this database.
    pub db_path: Option<PathBuf>,
    /// Step 3: broadcast through the node's wallet.
    pub broadcast: bool,
    pub allow_unknown_pegout_anchors: bool,
    pub allow_ambiguous_root: bool,
    pub read: ReadArgs,
    pub rpc: RpcArgs,
}

/// What a step did: done now, found already done, or not asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Done,
    Already,
    Skipped,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Done => "done",
            Step::Already => "already_done",
            Step::Skipped => "not_requested",
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The snapshot to append does not verify (exit 2): nothing changed.
    DoesNotVerify(String),
    Anchored(Box<Anchored>),
}

/// The commitment and what each step did.
#[derive(Debug, Clone)]
pub struct Anchored {
    pub root: String,
    pub timestamp_ms: u64,
    pub payload: String,
    pub hash: String,
    pub op_return_script: String,
    pub ambiguous_root: bool,
    /// Where the snapshot is in `--snapshot-file` (appended now or before).
    pub offset: Option<u64>,
    pub txid: Option<String>,
    /// The record's status after the run (`--db-path`).
    pub record_status: Option<&'static str>,
    pub append: Step,
    pub record: Step,
    pub broadcast: Step,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The state to anchor, and the snapshot timestamp it carries (if any).
fn load(o: &Options) -> anyhow::Result<(Option<u64>, Snapshot<'static>)> {
    if let Some(p) = &o.from_snapshot {
        let sf = o.read.open(p).context("cannot read snapshot file")?;
        let b = sf.newest()?.0.ok_or_else(|| Error::NoSnapshots(p.clone()))?;
        let parsed = parse_block(&b.bytes)
            .map_err(|e| Error::Integrity(format!("{}: newest snapshot is corrupt: {e}", lossy(p))))?;
        let snap = parsed.snapshot.into_owned();
        return Ok((Some(snap.timestamp_ms), snap));
    }
    let p = o
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
fn newest_of(read: &ReadArgs, p: &Path) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let sf = read.open(p).context("cannot read the snapshot file to append to")?;
    Ok(sf.newest()?.0.map(|b| (b.offset, b.bytes)))
}

/// Anchor hashes of the snapshots of `p` (none when it does not exist yet)
/// that the peg-outs may name.
fn anchors_in(read: &ReadArgs, p: &Path, refs: &[PegoutRef]) -> anyhow::Result<HashSet<String>> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(HashSet::new());
    }
    let sf = read.open(p)?;
    Ok(sf.anchors_before(sf.len(), refs)?)
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

/// The state and its anchor, built; the database opened.
pub struct Commitment {
    pub snap: Snapshot<'static>,
    pub root: String,
    /// The ambiguity warning of the root, if any (allowed by the options).
    pub ambiguous: Option<String>,
    pub timestamp_ms: u64,
    /// The snapshot block to append.
    pub block: Vec<u8>,
    /// Offset of the file's newest snapshot when it is this very block.
    pub already_appended: Option<u64>,
    pub db: Option<ReorgDb>,
}

/// Step 0: loads the state, computes its root and anchor, and opens what
/// will be written first, so a lock or a bad path fails before anything
/// changes. A rerun reuses the newest snapshot's anchor when it holds the
/// same state.
pub fn commitment(o: &Options, rep: &Report) -> anyhow::Result<Commitment> {
    let (state_ts, mut snap) = load(o)?;
    let root = state_root(&snap.state).map_err(|d| Error::Usage(format!("duplicate key in {}", d.section.name())))?;
    let ambiguous = ailee_core::root::ambiguity_warning(&ailee_core::root::ambiguous_fields(&snap.state));
    if let Some(w) = &ambiguous {
        if !o.allow_ambiguous_root {
            let e = format!("{w}. Refusing to anchor this state (--allow-ambiguous-root overrides)");
            return Err(Error::Usage(e).into());
        }
        rep.warn(format_args!("{w} (allowed by --allow-ambiguous-root)"));
    }
    let db = match &o.db_path {
        Some(p) => Some(ReorgDb::open(p, Mode::ReadWrite).context("cannot open reorg database")?),
        None => None,
    };
    let newest = match &o.snapshot_file {
        Some(p) => newest_of(&o.read, p)?,
        None => None,
    };
    let reuse = match o.timestamp_ms {
        Some(_) => None,
        None => reusable_timestamp(newest.as_ref(), &root, o.recovery_metadata.as_bytes(), db.as_ref())?,
    };
    let build = |snap: &mut Snapshot<'static>, ts: u64| -> anyhow::Result<Vec<u8>> {
        snap.timestamp_ms = state_ts.unwrap_or(ts);
        snap.anchor = Some(anchor::build(&root, ts, o.recovery_metadata.as_bytes()));
        let mut block = Vec::new();
        write_snapshot(snap, &mut block).map_err(|e| Error::Usage(e.to_string()))?;
        Ok(block)
    };
    let mut ts = o.timestamp_ms.or(reuse).unwrap_or_else(now_ms);
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
    Ok(Commitment {
        snap,
        root,
        ambiguous,
        timestamp_ms: ts,
        block,
        already_appended,
        db,
    })
}

/// Peg-outs must name a known anchor (SPEC §1.3). Only a commitment that is
/// written somewhere needs known anchors; computing and printing it is
/// harmless, so then problems are warnings.
pub fn check_pegouts(o: &Options, c: &Commitment, rep: &Report) -> anyhow::Result<()> {
    let refs: Vec<PegoutRef> = c
        .snap
        .state
        .pegouts
        .iter()
        .map(|p| PegoutRef {
            peg_id: String::from_utf8_lossy(&p.peg_id).into_owned(),
            hash: String::from_utf8_lossy(&p.anchor_commitment_hash).to_ascii_lowercase(),
        })
        .collect();
    let writes = o.snapshot_file.is_some() || o.db_path.is_some() || o.broadcast;
    if let Some(r) = refs.iter().find(|r| r.hash.is_empty()) {
        let msg = format!("peg-out {} has no anchor commitment hash", r.peg_id);
        if writes {
            return Err(Error::Usage(format!("{msg}: such a snapshot could never verify")).into());
        }
        rep.warn(format_args!("{msg} (nothing is written, so this is only a warning)"));
        return Ok(());
    }
    if refs.is_empty() {
        return Ok(());
    }
    let earlier = match &o.snapshot_file {
        Some(p) => anchors_in(&o.read, p, &refs)?,
        None => Default::default(),
    };
    // Unknown anchors fail with or without a database: the file alone is no
    // authority for a state that is about to be anchored.
    let verifier = Verifier::new(c.db.as_ref().map(|d| d as &dyn AnchorLookup)).failing_unknown_links(true);
    let Some(f) = verifier.links(&refs, &earlier)?.failure else {
        return Ok(());
    };
    if !writes {
        rep.warn(format_args!("{f} (nothing is written, so this is only a warning)"));
    } else if o.allow_unknown_pegout_anchors {
        rep.warn(format_args!("{f} (allowed by --allow-unknown-pegout-anchors)"));
    } else {
        return Err(Error::Usage(format!(
            "{f} Refusing to anchor a state whose peg-outs name an unknown or void anchor \
             (--allow-unknown-pegout-anchors overrides)"
        ))
        .into());
    }
    Ok(())
}

/// Connects and builds and signs the anchor transaction, before anything
/// is appended (a wallet without funds changes nothing). `None` unless
/// --broadcast and the anchor has no txid yet.
pub fn sign(o: &Options, data: &[u8], known_txid: bool, rep: &Report) -> anyhow::Result<Option<(Rpc, String)>> {
    if !o.broadcast || known_txid {
        return Ok(None);
    }
    let rpc = Rpc::connect(&o.rpc.config()?)?;
    let data_dir = o
        .db_path
        .as_deref()
        .and_then(ailee_core::identity::AnchorIdentity::data_dir_of);
    let identity = o.rpc.identity(data_dir.as_deref())?;
    if identity.is_none() {
        rep.warn(
            "no anchoring identity (DATA_DIR/anchor_identity or --anchor-identity FILE): the wallet funds \
             the anchor from any of its outputs, and its author cannot be proven on chain",
        );
    }
    let signed = rpc
        .build_op_return_tx(data, identity.as_ref())
        .context("cannot create the anchor transaction")?;
    Ok(Some((rpc, signed)))
}

/// Step 1: appends the block (checked first) unless it is already there.
/// `Err(why)` inside: the block does not verify, nothing was appended.
pub fn append(o: &Options, c: &Commitment, rep: &Report) -> anyhow::Result<Result<(Step, Option<u64>), String>> {
    Ok(Ok(match (&o.snapshot_file, c.already_appended) {
        (None, _) => (Step::Skipped, None),
        (Some(_), Some(off)) => (Step::Already, Some(off)),
        (Some(p), None) => {
            if let Some(f) = Verifier::default().check(&c.block).failure {
                return Ok(Err(f.to_string()));
            }
            let a = ailee_core::append::append_block(p, &c.block).context("cannot append the snapshot")?;
            if a.fresh_line {
                rep.warn(format_args!(
                    "{} ended mid-line (torn); the new snapshot starts on a fresh line",
                    lossy(p)
                ));
            }
            (Step::Done, Some(a.offset))
        }
    }))
}

/// A new PENDING record of `hash` (with `txid` once broadcast).
fn new_record(hash: &str, root: &str, txid: &str) -> AnchorRecord {
    AnchorRecord {
        anchor_hash: hash.to_string(),
        bitcoin_tx_id: txid.to_string(),
        bitcoin_height: 0,
        confirmations: 0,
        broadcast_time: if txid.is_empty() { 0 } else { now_ms() },
        retry_count: 0,
        status: AnchorStatus::Pending,
        l2_state_root: root.to_string(),
    }
}

fn put(db: &ReorgDb, rec: &AnchorRecord) -> anyhow::Result<()> {
    let mut b = Batch::default();
    b.put_anchor(rec);
    db.write(b)?;
    db.flush()?;
    Ok(())
}

/// Step 2: records the anchor PENDING (an existing record is never touched
/// here). With a signed transaction the record is written with its txid once
/// the node has accepted it ([`broadcast`]), so a refused broadcast stores
/// nothing; the rerun finds the snapshot already appended and finishes.
pub fn record(c: &Commitment, hash: &str, existing: bool, signed: bool) -> anyhow::Result<Step> {
    Ok(match (&c.db, existing) {
        (None, _) => Step::Skipped,
        (Some(_), true) => Step::Already,
        (Some(_), false) if signed => Step::Skipped, // written with the txid below
        (Some(db), false) => {
            cancel::check()?;
            cancel::critical(|| put(db, &new_record(hash, &c.root, "")))?;
            Step::Done
        }
    })
}

/// Step 3: broadcasts, and records the txid in the same breath: a new
/// record, or a PENDING record without a txid gains one; nothing else of a
/// record is ever changed here. Returns the txid and whether a record was
/// created.
pub fn broadcast(c: &Commitment, hash: &str, rpc: &Rpc, hex: &str) -> anyhow::Result<(String, bool)> {
    cancel::check()?;
    cancel::critical(|| -> anyhow::Result<(String, bool)> {
        let t = rpc.send_raw(hex)?;
        let mut created = false;
        if let Some(db) = &c.db {
            let rec = match db.anchor(hash)? {
                None => {
                    created = true;
                    Some(new_record(hash, &c.root, &t))
                }
                Some(mut rec) if rec.bitcoin_tx_id.is_empty() && rec.status == AnchorStatus::Pending => {
                    rec.bitcoin_tx_id = t.clone();
                    rec.broadcast_time = now_ms();
                    Some(rec)
                }
                Some(_) => None,
            };
            if let Some(rec) = rec {
                put(db, &rec)?;
            }
        }
        Ok((t, created))
    })
}

/// The whole run: commitment, peg-out check, signing, then append, record
/// and broadcast.
pub fn run(o: &Options, rep: &Report) -> anyhow::Result<Outcome> {
    if o.broadcast && o.db_path.is_none() {
        rep.warn("--broadcast without --db-path: the txid is printed but not recorded anywhere, and a rerun broadcasts again");
    }
    let c = commitment(o, rep)?;
    let a = c
        .snap
        .anchor
        .as_ref()
        .ok_or_else(|| Error::Usage("no anchor built".into()))?;
    let payload = String::from_utf8_lossy(&a.payload).into_owned();
    let hash = String::from_utf8_lossy(&a.hash).into_owned();
    let data = anchor::op_return_data(&a.payload);
    let script = anchor::op_return_script_hex(&a.payload);
    let existing = match &c.db {
        Some(d) => d.anchor(&hash)?,
        None => None,
    };
    check_pegouts(o, &c, rep)?;
    let known_txid = existing
        .as_ref()
        .map(|r| r.bitcoin_tx_id.clone())
        .filter(|t| !t.is_empty());
    let signed = sign(o, &data, known_txid.is_some(), rep)?;
    let (append, offset) = match append(o, &c, rep)? {
        Ok(a) => a,
        Err(why) => return Ok(Outcome::DoesNotVerify(why)),
    };
    let mut record = record(&c, &hash, existing.is_some(), signed.is_some())?;
    let (broadcast, txid) = match (&signed, known_txid) {
        (_, Some(t)) if o.broadcast => (Step::Already, Some(t)),
        (Some((rpc, hex)), _) => {
            let (t, created) = broadcast(&c, &hash, rpc, hex)?;
            if created {
                record = Step::Done;
            }
            (Step::Done, Some(t))
        }
        _ => (Step::Skipped, None),
    };
    cancel::committed();
    let record_status = match &c.db {
        Some(d) => d.anchor(&hash)?.map(|r| r.status.name()),
        None => None,
    };
    Ok(Outcome::Anchored(Box::new(Anchored {
        root: c.root.clone(),
        timestamp_ms: c.timestamp_ms,
        payload,
        hash,
        op_return_script: script,
        ambiguous_root: c.ambiguous.is_some(),
        offset,
        txid,
        record_status,
        append,
        record,
        broadcast,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RPC flags as an empty command line gives them.
    fn no_rpc() -> RpcArgs {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            rpc: RpcArgs,
        }
        <Flags as clap::Parser>::parse_from(["test"]).rpc
    }

    fn options(dir: &Path) -> Options {
        let state = dir.join("state.json");
        std::fs::write(&state, r#"{"ledger": {"balances": [{"peerId": "p1", "balance": 5}]}}"#).unwrap();
        Options {
            l2_state_file: Some(state),
            from_snapshot: None,
            recovery_metadata: "m".into(),
            timestamp_ms: None,
            snapshot_file: Some(dir.join("l2_snapshots.dat")),
            db_path: Some(dir.join("reorg_db")),
            broadcast: false,
            allow_unknown_pegout_anchors: false,
            allow_ambiguous_root: false,
            read: ReadArgs { max_block_size: None },
            rpc: no_rpc(),
        }
    }

    fn anchored(o: &Options) -> Anchored {
        match run(o, &Report { quiet: true }).unwrap() {
            Outcome::Anchored(a) => *a,
            Outcome::DoesNotVerify(f) => panic!("{f}"),
        }
    }

    #[test]
    fn a_rerun_finishes_the_job_instead_of_repeating_it() {
        let t = tempfile::tempdir().unwrap();
        ReorgDb::create(&t.path().join("reorg_db")).unwrap();
        let o = options(t.path());
        let first = anchored(&o);
        assert_eq!(
            (first.append, first.record, first.broadcast),
            (Step::Done, Step::Done, Step::Skipped)
        );
        assert_eq!(first.offset, Some(0));
        assert_eq!(first.record_status, Some("PENDING"));
        let again = anchored(&o);
        assert_eq!((again.append, again.record), (Step::Already, Step::Already));
        assert_eq!((&again.hash, again.timestamp_ms), (&first.hash, first.timestamp_ms));
        let len = std::fs::metadata(t.path().join("l2_snapshots.dat")).unwrap().len();
        let sf = ailee_core::snapfile::SnapshotFile::open(&t.path().join("l2_snapshots.dat")).unwrap();
        let wanted = [PegoutRef {
            peg_id: "p".into(),
            hash: first.hash.clone(),
        }];
        assert_eq!(sf.anchors_before(sf.len(), &wanted).unwrap().len(), 1);
        assert_eq!(sf.len(), len);
    }
}
