//! The workflow of `ailee_resync_blocks`: wait for the node, resync the
//! database's block hashes ([`ailee_db::resync`]), then optionally find the
//! anchors of a snapshot file on the chain. Returns what happened as a typed
//! [`Run`]; the binary renders it (text or JSON) and maps it to an exit code.
//!
//! Progress and the warnings that must appear while the run goes on (a
//! waiting node, an unparsable snapshot) go to the [`Report`] handed in.

use ailee_cli::Report;
use ailee_core::identity::AnchorIdentity;
use ailee_core::onchain::FileAnchor;
use ailee_core::rpc::Rpc;
use ailee_db::reorgdb::ReorgDb;
use ailee_db::resync::{resync, Outcome};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod metrics;

/// `--wait`: poll a node that is behind or not ready.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Give up after this many seconds.
    pub timeout: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// What a run does, besides the resync's own options.
#[derive(Debug, Clone)]
pub struct Options {
    pub resync: ailee_db::resync::Options,
    pub wait: Option<Wait>,
    /// `--anchors-from`: raw blocks per batch.
    pub block_batch: u64,
}

/// The anchors of `--anchors-from FILE`, read before anything is written.
pub struct FileAnchors {
    pub path: PathBuf,
    pub anchors: Vec<FileAnchor>,
    /// Snapshots that do not parse (their anchors are not searched).
    pub bad: usize,
}

/// Reads `--anchors-from FILE` (after checking the identity it needs):
/// a bad path fails before anything is written. Notes of the file go to `rep`.
pub fn file_anchors(
    path: &Path,
    identity: Option<&AnchorIdentity>,
    db_path: &Path,
    rep: &Report,
) -> anyhow::Result<FileAnchors> {
    use anyhow::Context;
    if identity.is_none() {
        return Err(ailee_core::Error::Usage(format!(
            "--anchors-from needs the anchoring identity ({}/{} or --anchor-identity FILE): anyone can put \
             an anchor's OP_RETURN on Bitcoin, so only transactions spending from the operator's key are \
             recorded (ailee_init_node --anchor-identity writes it)",
            AnchorIdentity::data_dir_of(db_path).map_or_else(|| "DATA_DIR".into(), |d| d.display().to_string()),
            ailee_core::identity::FILE_NAME
        ))
        .into());
    }
    let (anchors, bad, notes) = ailee_core::onchain::anchors_of_file(path).context("--anchors-from")?;
    for n in notes {
        rep.warn(format_args!("{}: {n}", path.display()));
    }
    Ok(FileAnchors {
        path: path.to_path_buf(),
        anchors,
        bad,
    })
}

/// How a run ended.
pub enum Run {
    /// The node is on another chain: nothing was written.
    Refused { message: String },
    /// The node is behind (or in initial block download): nothing was
    /// written. `gave_up_after` is the seconds waited when `--wait` ran out.
    Behind {
        tip: u64,
        stored: Option<u64>,
        ibd: bool,
        gave_up_after: Option<u64>,
    },
    /// The database follows the node's best chain.
    Synced(Box<Synced>),
}

/// A completed resync, and the anchors found for `--anchors-from`.
pub struct Synced {
    pub report: ailee_db::resync::Report,
    /// The reorg is deeper than the confirmation threshold (exit 3).
    pub deep: bool,
    pub anchors: Option<AnchorsFound>,
}

/// `--anchors-from`: what the chain holds of the file's anchors.
pub struct AnchorsFound {
    pub file: FileAnchors,
    pub found: Vec<ailee_core::onchain::Found>,
    pub ignored: Vec<ailee_core::onchain::Ignored>,
    pub recorded: ailee_db::onchain::Recorded,
    /// Indexes into `file.anchors` of the anchors not found.
    pub missing: Vec<usize>,
}

/// One run: waits for the node as `--wait` says, resyncs, then finds the
/// file's anchors on the chain.
pub fn run(db: &ReorgDb, rpc: &Rpc, o: &Options, file: Option<FileAnchors>, rep: &Report) -> anyhow::Result<Run> {
    let (outcome, gave_up_after) = sync_when_ready(db, rpc, o, rep)?;
    let report = match outcome {
        Outcome::Synced(r) => *r,
        Outcome::Refused(message) => return Ok(Run::Refused { message }),
        Outcome::Behind { tip, stored, ibd } => {
            return Ok(Run::Behind {
                tip,
                stored,
                ibd,
                gave_up_after,
            });
        }
    };
    let deep = report.deep(o.resync.confirmations);
    let anchors = match file {
        Some(f) => Some(anchors_on_chain(db, rpc, o, f, &report, rep)?),
        None => None,
    };
    Ok(Run::Synced(Box::new(Synced { report, deep, anchors })))
}

/// What "node is behind" says.
pub fn behind_message(tip: u64, stored: Option<u64>, ibd: bool, start: u64) -> String {
    if ibd {
        format!("node is behind: it is in initial block download (tip {tip})")
    } else {
        match stored {
            Some(s) => format!("node is behind: tip {tip}, stored up to {s}"),
            None => format!("node is behind: tip {tip}, below --start-height {start}"),
        }
    }
}

/// Sleeps until the next poll, in steps that notice an interrupt.
fn pause(w: Wait, waited: u64) -> ailee_core::Result<()> {
    let secs = w.interval.min(w.timeout.saturating_sub(waited));
    for _ in 0..secs * 10 {
        ailee_core::cancel::check()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The node's tip; with `--wait`, waits while the node is not ready (RPC
/// warm-up, nothing listening, no reply in time, HTTP 503).
fn tip_when_ready(rpc: &Rpc, wait: Option<Wait>, started: Instant, rep: &Report) -> anyhow::Result<u64> {
    loop {
        // With --wait, no attempt outlasts the time left to wait: a node that
        // accepts and never answers is "not ready", like one not listening.
        if let Some(w) = wait {
            let left = Duration::from_secs(w.timeout).saturating_sub(started.elapsed());
            rpc.limit_timeout(Some(left.max(Duration::from_secs(1))));
        }
        let probed = rpc.block_count();
        rpc.limit_timeout(None);
        match (probed, wait) {
            (Ok(t), _) => return Ok(t),
            (Err(e), Some(w)) if ailee_core::rpc::not_ready(&e) => {
                let waited = started.elapsed().as_secs();
                if waited >= w.timeout {
                    return Err(anyhow::Error::new(e).context(format!(
                        "gave up waiting for the node after {waited} s (--wait-timeout {})",
                        w.timeout
                    )));
                }
                rep.info(format_args!(
                    "node not ready ({e}); waiting ({waited} s of {} s)",
                    w.timeout
                ));
                pause(w, waited)?;
            }
            (Err(e), _) => return Err(e.into()),
        }
    }
}

/// The resync, repeated while the node is behind and `--wait` lasts. A
/// `Behind` outcome is returned only when there is no more waiting, with the
/// seconds waited when `--wait` ran out.
fn sync_when_ready(db: &ReorgDb, rpc: &Rpc, o: &Options, rep: &Report) -> anyhow::Result<(Outcome, Option<u64>)> {
    let started = Instant::now();
    let start = o.resync.start;
    loop {
        let tip = tip_when_ready(rpc, o.wait, started, rep)?;
        let below = start > tip && db.tip()?.is_none_or(|t| t <= tip);
        if below && o.wait.is_none() {
            return Err(ailee_core::Error::Usage(format!(
                "--start-height {start} is above the node's tip {tip} (is the node synced? --wait polls until it is)"
            ))
            .into());
        }
        let outcome = if below {
            Outcome::Behind {
                tip,
                stored: None,
                ibd: false,
            }
        } else {
            let bar = rep.count_bar(tip.saturating_add(1).saturating_sub(start), "resyncing blocks");
            resync(db, rpc, &o.resync, &bar)?
        };
        let (Outcome::Behind { tip, stored, ibd }, Some(w)) = (&outcome, o.wait) else {
            return Ok((outcome, None));
        };
        let waited = started.elapsed().as_secs();
        if waited >= w.timeout {
            return Ok((outcome, Some(waited)));
        }
        let msg = behind_message(*tip, *stored, *ibd, start);
        rep.info(format_args!("{msg}; waiting ({waited} s of {} s)", w.timeout));
        pause(w, waited)?;
    }
}

/// `--anchors-from`: finds the file's anchors on the chain from the start
/// height and records them. The resync before is committed: an error from
/// here says what it wrote.
fn anchors_on_chain(
    db: &ReorgDb,
    rpc: &Rpc,
    o: &Options,
    file: FileAnchors,
    r: &ailee_db::resync::Report,
    rep: &Report,
) -> anyhow::Result<AnchorsFound> {
    let dry_run = o.resync.dry_run;
    if file.bad > 0 {
        rep.warn(format_args!(
            "{}: {} snapshot(s) do not parse; their anchors are not searched",
            file.path.display(),
            file.bad
        ));
    }
    let written = || {
        let mut w = if dry_run { Vec::new() } else { r.written() };
        if !dry_run && r.anchors_updated > 0 {
            w.push(format!("{} anchor record(s) updated", r.anchors_updated));
        }
        w
    };
    let bar = rep.count_bar(0, "searching anchors");
    let identity = o
        .resync
        .identity
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no anchoring identity"))?;
    let anchors = &file.anchors;
    let scan = ailee_core::onchain::find_on_chain(
        rpc,
        anchors,
        identity,
        o.resync.start,
        o.resync.batch_size,
        o.block_batch,
        &bar,
    )
    .map_err(|e| ailee_db::resync::after_writes(e, &written()))?;
    drop(bar);
    for i in &scan.ignored {
        rep.warn(format_args!(
            "transaction {} at height {} carries anchor {} but is not the operator's: {} — not recorded",
            i.txid, i.height, anchors[i.anchor].hash, i.why
        ));
    }
    let recorded = ailee_db::onchain::record_found(db, anchors, &scan.found, scan.tip, o.resync.confirmations, dry_run)
        .map_err(|e| ailee_db::resync::after_writes(e, &written()))?;
    let found_set: std::collections::HashSet<usize> = scan.found.iter().map(|f| f.anchor).collect();
    let missing: Vec<usize> = (0..anchors.len()).filter(|i| !found_set.contains(i)).collect();
    for (h, old, new) in &recorded.conflicts {
        rep.warn(format_args!(
            "anchor {h} is recorded with txid {old}, but the chain carries it in {new}: record left as is"
        ));
    }
    for a in missing.iter().map(|&i| &anchors[i]) {
        rep.warn(format_args!(
            "anchor {} (snapshot {}) not found on the chain from height {}: left unrecorded",
            a.hash, a.snapshot, o.resync.start
        ));
    }
    Ok(AnchorsFound {
        file,
        found: scan.found,
        ignored: scan.ignored,
        recorded,
        missing,
    })
}
