//! `ailee_resync_blocks`: brings the reorg database's block hashes in line
//! with the Bitcoin node's best chain, recording reorgs at their fork point
//! and invalidating the anchors they orphaned (SPEC §2).

use ailee_cli::{out, Common, Report, RpcArgs, EXIT_CODES_HELP};
use ailee_core::rpc::Rpc;
use ailee_core::ExitStatus;
use ailee_db::reorgdb::{Mode, ReorgDb};
use ailee_db::resync::{resync, Options, Outcome};
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Resync block hashes from a Bitcoin node into the reorg database.
///
/// Compares the stored hashes from --start-height to the node's tip with the
/// node's best chain (JSON-RPC batches). Where they differ it finds the fork
/// point (walking below the start height if needed), confirms it with fresh
/// reads, records one reorg event, marks anchors at or above the fork
/// INVALIDATED_REORG, writes the new hashes, and refreshes the anchors
/// (PENDING -> CONFIRMED at --confirmations; an INVALIDATED_REORG anchor whose
/// transaction is in a best-chain block again is re-confirmed).
///
/// A reorg is only a hash that differs at a height the node has. A node that
/// is behind (tip below our stored heights, equal hashes up to its tip) or in
/// initial block download is not a reorg: nothing is written, exit 1 ("node
/// is behind"); --wait polls until it has caught up. A node on another chain
/// (other genesis, or a fork deeper than --max-reorg-depth) is refused before
/// anything is written (exit 1). If the chain moves during the run, the
/// comparison starts again (bounded).
///
/// --anchors-from FILE then finds the anchors of the snapshot file on the
/// chain (OP_RETURN outputs of the raw blocks from --start-height) and records
/// each with txid, height, confirmations and status: after runbook Procedure
/// 3 this gives back the anchor records the old database held.
///
/// Needs exclusive access: stop the node first. Every change is a RocksDB
/// write batch; an interrupted run leaves the database consistent and a rerun
/// finishes the job. Exit 3 when the reorg is deeper than --confirmations:
/// the changes are written, then halt the node and re-anchor. Exit 1 also
/// when the blocks were synced but a PENDING anchor's txid is unknown to the
/// node (named on stderr; the other anchors were updated).
#[derive(Debug, Parser)]
#[command(name = "ailee_resync_blocks", version, after_help = EXIT_CODES_HELP, mut_arg("bitcoin_rpc", |a| a.required(true)))]
struct Cli {
    /// First height to resync (the last height you trust, e.g. from --check).
    #[arg(long, value_name = "H")]
    start_height: u64,
    /// Reorg database directory.
    #[arg(long, value_name = "P")]
    db_path: PathBuf,
    #[command(flatten)]
    rpc: RpcArgs,
    /// Heights per JSON-RPC batch request.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    batch_size: u64,
    /// Confirmation threshold: PENDING anchors become CONFIRMED at it; a reorg deeper than it exits 3.
    #[arg(long, value_name = "N", default_value_t = ailee_core::records::DEFAULT_CONFIRMATIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    confirmations: u64,
    /// A fork deeper than this (stored tip - fork + 1) is another chain, refused before any write.
    #[arg(long, value_name = "N", default_value_t = ailee_db::resync::DEFAULT_MAX_REORG_DEPTH,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_reorg_depth: u64,
    /// When the node is behind, in initial block download or not ready (RPC
    /// warm-up, not listening, connection reset, no reply in time, HTTP 503),
    /// poll until it has caught up; no attempt outlasts --wait-timeout.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, value_name = "SECS", default_value_t = 3600, requires = "wait",
          value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    wait_timeout: u64,
    /// Seconds between polls while waiting.
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "wait",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    wait_interval: u64,
    /// Also rebuild anchor records: find the anchors of this snapshot file on the chain from --start-height.
    #[arg(long, value_name = "FILE")]
    anchors_from: Option<PathBuf>,
    /// Raw blocks per JSON-RPC batch for --anchors-from, at most: a batch whose
    /// reply would exceed 16 MiB is split (blocks can be megabytes on mainnet).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    block_batch: u64,
    /// Report what would change without writing (opens the database read-only).
    #[arg(long)]
    dry_run: bool,
    /// Write DIR/ailee_resync.prom for node_exporter's textfile collector (last
    /// run, exit code, reorgs found); not with --dry-run.
    #[arg(long, value_name = "DIR", conflicts_with = "dry_run")]
    metrics_dir: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    ailee_cli::main(|cli: Cli| {
        let dir = cli.metrics_dir.clone();
        let db = cli.db_path.clone();
        let before = dir.as_ref().and_then(|_| metrics::Before::read(&db));
        let started = metrics::now_seconds().floor();
        let mut stop = Stop::default();
        let r = run(cli, &mut stop);
        if let Some(dir) = dir {
            if let Err(e) = metrics::record(&dir, &db, before, &r, stop, started) {
                ailee_cli::errln!("warning: cannot write metrics to {}: {e}", dir.display());
            }
        }
        r
    })
}

/// Why a run stopped without syncing, for `--metrics-dir` (alerts fire on it).
#[derive(Debug, Default, Clone, Copy)]
struct Stop {
    /// The node's chain was refused: another genesis, or a fork deeper than
    /// --max-reorg-depth (a deep reorg or the wrong node).
    refused: bool,
    /// The node was behind (or in initial block download) when the run stopped.
    behind: bool,
}

/// `--metrics-dir`: the outcome of a run as `DIR/ailee_resync.prom`. The
/// reorg a run recorded is read back from the database (events newer than
/// before the run), so `run` itself is untouched but for [`Stop`].
mod metrics {
    pub use ailee_core::metrics::now_seconds;
    use ailee_core::metrics::{MetricsFile, RESYNC};
    use ailee_core::ExitStatus;
    use ailee_db::reorgdb::{Mode, ReorgDb};
    use std::path::Path;

    /// The database before the run: stored tip and highest reorg event id.
    pub struct Before {
        tip: Option<u64>,
        max_event: Option<u64>,
    }

    impl Before {
        pub fn read(db: &Path) -> Option<Before> {
            let d = ReorgDb::open(db, Mode::ReadOnly).ok()?;
            Some(Before {
                tip: d.tip().ok()?,
                max_event: d.reorg_events().ok()?.last().map(|(id, _)| *id),
            })
        }
    }

    pub fn record(
        dir: &Path,
        db: &Path,
        before: Option<Before>,
        r: &anyhow::Result<ExitStatus>,
        stop: super::Stop,
        started: f64,
    ) -> ailee_core::Result<()> {
        let code = match r {
            Ok(s) => *s,
            Err(e) => ailee_cli::status_of(e),
        };
        // The newest event this run recorded; its depth as resync counts it:
        // the stored tip before the run − the fork height + 1.
        let found = before.and_then(|b| {
            let d = ReorgDb::open(db, Mode::ReadOnly).ok()?;
            let (_, e) = d
                .reorg_events()
                .ok()?
                .into_iter()
                .rfind(|(id, _)| b.max_event.is_none_or(|m| *id > m))?;
            let depth = b.tip.map(|t| t.saturating_sub(e.reorg_height) + 1);
            Some((e.reorg_height, depth))
        });
        let mut m = MetricsFile::open(dir, RESYNC)?;
        let now = now_seconds().floor();
        m.set("ailee_resync_last_run_timestamp_seconds", &[], now)?;
        m.set("ailee_resync_last_exit_code", &[], code.code() as f64)?;
        m.inc("ailee_resync_reorgs_found_total", &[], 0.0)?;
        m.set("ailee_resync_refused", &[], if stop.refused { 1.0 } else { 0.0 })?;
        // Behind since the first of consecutive runs that found it behind.
        let since = "ailee_resync_behind_since_timestamp_seconds";
        match (stop.behind, m.get(since, &[])) {
            (true, Some(_)) => {}
            (true, None) => m.set(since, &[], started)?,
            (false, _) => m.remove(since, &[]),
        }
        if let Some((height, depth)) = found {
            m.inc("ailee_resync_reorgs_found_total", &[], 1.0)?;
            m.set("ailee_resync_last_reorg_height", &[], height as f64)?;
            match depth {
                Some(d) => m.set("ailee_resync_last_reorg_depth_blocks", &[], d as f64)?,
                None => m.remove("ailee_resync_last_reorg_depth_blocks", &[]),
            }
            m.set("ailee_resync_last_reorg_timestamp_seconds", &[], now)?;
        }
        m.commit().map(drop)
    }
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

fn run(cli: Cli, stop: &mut Stop) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    let cfg = cli.rpc.config()?;
    let mode = if cli.dry_run { Mode::ReadOnly } else { Mode::ReadWrite };
    let db = ReorgDb::open(&cli.db_path, mode).context("cannot open reorg database")?;
    // The snapshot file and the anchoring identity are read before anything
    // is written: a bad path fails early.
    let identity = cli
        .rpc
        .identity(ailee_core::identity::AnchorIdentity::data_dir_of(&cli.db_path).as_deref())?;
    let file_anchors = match &cli.anchors_from {
        Some(_) if identity.is_none() => {
            return Err(ailee_core::Error::Usage(format!(
                "--anchors-from needs the anchoring identity ({}/{} or --anchor-identity FILE): anyone can put \
                 an anchor's OP_RETURN on Bitcoin, so only transactions spending from the operator's key are \
                 recorded (ailee_init_node --anchor-identity writes it)",
                ailee_core::identity::AnchorIdentity::data_dir_of(&cli.db_path)
                    .map_or_else(|| "DATA_DIR".into(), |d| d.display().to_string()),
                ailee_core::identity::FILE_NAME
            ))
            .into())
        }
        Some(p) => {
            let (anchors, bad, notes) = ailee_core::onchain::anchors_of_file(p).context("--anchors-from")?;
            for n in notes {
                rep.warn(format_args!("{}: {n}", p.display()));
            }
            Some((anchors, bad))
        }
        None => None,
    };
    let rpc = Rpc::connect(&cfg)?;
    let opts = Options {
        start: cli.start_height,
        batch_size: cli.batch_size,
        confirmations: cli.confirmations,
        max_reorg_depth: cli.max_reorg_depth,
        dry_run: cli.dry_run,
        identity: identity.clone(),
    };
    let started = now();
    let pause = |waited: u64| -> anyhow::Result<()> {
        let secs = cli.wait_interval.min(cli.wait_timeout.saturating_sub(waited));
        for _ in 0..secs * 10 {
            ailee_core::cancel::check()?;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    };
    let r = loop {
        // With --wait, no attempt outlasts the time left to wait: a node that
        // accepts and never answers is "not ready", like one not listening.
        if cli.wait {
            let left = std::time::Duration::from_secs(cli.wait_timeout).saturating_sub(started.elapsed());
            rpc.limit_timeout(Some(left.max(std::time::Duration::from_secs(1))));
        }
        let probed = rpc.block_count();
        rpc.limit_timeout(None);
        let tip = match probed {
            Ok(t) => t,
            // A node still starting (RPC warm-up, nothing listening, no reply
            // in time, HTTP 503 from a proxy in front of it) is waited for too.
            Err(e) if cli.wait && ailee_core::rpc::not_ready(&e) => {
                let waited = started.elapsed().as_secs();
                if waited >= cli.wait_timeout {
                    return Err(anyhow::Error::new(e).context(format!(
                        "gave up waiting for the node after {waited} s (--wait-timeout {})",
                        cli.wait_timeout
                    )));
                }
                rep.info(format_args!(
                    "node not ready ({e}); waiting ({waited} s of {} s)",
                    cli.wait_timeout
                ));
                pause(waited)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if cli.start_height > tip && db.tip()?.is_none_or(|t| t <= tip) && !cli.wait {
            return Err(ailee_core::Error::Usage(format!(
                "--start-height {} is above the node's tip {tip} (is the node synced? --wait polls until it is)",
                cli.start_height
            ))
            .into());
        }
        let behind = |tip: u64, stored: Option<u64>, ibd: bool| {
            if ibd {
                format!("node is behind: it is in initial block download (tip {tip})")
            } else {
                match stored {
                    Some(s) => format!("node is behind: tip {tip}, stored up to {s}"),
                    None => format!("node is behind: tip {tip}, below --start-height {}", cli.start_height),
                }
            }
        };
        let outcome = if cli.start_height > tip && db.tip()?.is_none_or(|t| t <= tip) {
            Outcome::Behind {
                tip,
                stored: None,
                ibd: false,
            }
        } else {
            let bar = rep.count_bar(
                tip.saturating_add(1).saturating_sub(cli.start_height),
                "resyncing blocks",
            );
            resync(&db, &rpc, &opts, &bar)?
        };
        match outcome {
            Outcome::Synced(r) => break *r,
            Outcome::Refused(m) => {
                if cli.common.json {
                    out(json!({"refused": m, "node": rpc.url()}))?;
                }
                ailee_cli::errln!("Refused: {m}.");
                stop.refused = true;
                return Ok(ExitStatus::Operational);
            }
            Outcome::Behind { tip, stored, ibd } => {
                let msg = behind(tip, stored, ibd);
                if cli.common.json && (!cli.wait || started.elapsed().as_secs() >= cli.wait_timeout) {
                    out(
                        json!({"behind": {"tip": tip, "stored_tip": stored, "initial_block_download": ibd}, "node": rpc.url()}),
                    )?;
                }
                if !cli.wait {
                    ailee_cli::errln!(
                        "{msg}. Nothing was changed: this is not a reorg. Wait for the node to sync \
                         (or use --wait), then run again."
                    );
                    stop.behind = true;
                    return Ok(ExitStatus::Operational);
                }
                let waited = started.elapsed().as_secs();
                if waited >= cli.wait_timeout {
                    ailee_cli::errln!(
                        "{msg}. Gave up waiting after {waited} s (--wait-timeout {}); nothing was changed.",
                        cli.wait_timeout
                    );
                    stop.behind = true;
                    return Ok(ExitStatus::Operational);
                }
                rep.info(format_args!("{msg}; waiting ({waited} s of {} s)", cli.wait_timeout));
                pause(waited)?;
            }
        }
    };
    let deep = r.deep(cli.confirmations);
    let mut anchors_json = serde_json::Value::Null;
    let mut anchor_lines = Vec::new();
    if let (Some(path), Some((anchors, bad))) = (&cli.anchors_from, &file_anchors) {
        if *bad > 0 {
            rep.warn(format_args!(
                "{}: {bad} snapshot(s) do not parse; their anchors are not searched",
                path.display()
            ));
        }
        // The resync above is committed: a failure from here on says what it wrote.
        let written = || {
            let mut w = if cli.dry_run { Vec::new() } else { r.written() };
            if !cli.dry_run && r.anchors_updated > 0 {
                w.push(format!("{} anchor record(s) updated", r.anchors_updated));
            }
            w
        };
        let bar = rep.count_bar(0, "searching anchors");
        let identity = identity
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no anchoring identity"))?;
        let scan = ailee_core::onchain::find_on_chain(
            &rpc,
            anchors,
            identity,
            cli.start_height,
            cli.batch_size,
            cli.block_batch,
            &bar,
        )
        .map_err(|e| ailee_db::resync::after_writes(e, &written()))?;
        drop(bar);
        let (tip, found) = (scan.tip, scan.found);
        for i in &scan.ignored {
            rep.warn(format_args!(
                "transaction {} at height {} carries anchor {} but is not the operator's: {} — not recorded",
                i.txid, i.height, anchors[i.anchor].hash, i.why
            ));
        }
        let ignored_json: Vec<serde_json::Value> = scan
            .ignored
            .iter()
            .map(|i| json!({"anchor": anchors[i.anchor].hash, "txid": i.txid, "height": i.height, "why": i.why}))
            .collect();
        let rec = ailee_db::onchain::record_found(&db, anchors, &found, tip, cli.confirmations, cli.dry_run)
            .map_err(|e| ailee_db::resync::after_writes(e, &written()))?;
        let found_set: std::collections::HashSet<usize> = found.iter().map(|f| f.anchor).collect();
        let missing: Vec<&ailee_core::onchain::FileAnchor> = anchors
            .iter()
            .enumerate()
            .filter(|(i, _)| !found_set.contains(i))
            .map(|(_, a)| a)
            .collect();
        for (h, old, new) in &rec.conflicts {
            rep.warn(format_args!(
                "anchor {h} is recorded with txid {old}, but the chain carries it in {new}: record left as is"
            ));
        }
        for a in &missing {
            rep.warn(format_args!(
                "anchor {} (snapshot {}) not found on the chain from height {}: left unrecorded",
                a.hash, a.snapshot, cli.start_height
            ));
        }
        let would = if cli.dry_run { "would be " } else { "" };
        anchor_lines.push(format!(
            "Anchors from {}: {} in the file, {} found on the chain, {} {would}recorded, {} already recorded, {} not found",
            path.display(),
            anchors.len(),
            found.len(),
            rec.written.len(),
            rec.unchanged.len(),
            missing.len()
        ));
        anchors_json = json!({
            "file": path, "in_file": anchors.len(),
            "found": found.iter().map(|f| json!({"anchor": anchors[f.anchor].hash, "txid": f.txid, "height": f.height})).collect::<Vec<_>>(),
            "recorded": rec.written, "already_recorded": rec.unchanged,
            "conflicts": rec.conflicts.iter().map(|(h, o, n)| json!({"anchor": h, "recorded_txid": o, "chain_txid": n})).collect::<Vec<_>>(),
            "not_found": missing.iter().map(|a| json!({"anchor": a.hash, "snapshot": a.snapshot})).collect::<Vec<_>>(),
            "not_the_operators": ignored_json,
        });
    }
    let reorg_json = |g: &ailee_db::resync::Reorg| {
        json!({
        "event_id": g.event_id, "fork_height": g.fork_height, "depth": g.depth,
        "old_block_hash": g.old_hash, "new_block_hash": g.new_hash, "invalidated_anchors": g.invalidated})
    };
    let attention = |v: &[ailee_db::resync::Attention]| {
        v.iter()
            .map(|(a, t, why)| json!({"anchor": a, "txid": t, "why": why}))
            .collect::<Vec<_>>()
    };
    for (a, t, why) in &r.unknown_txids {
        ailee_cli::errln!("warning: PENDING anchor {a}: the node does not know its transaction {t} ({why}); skipped — rebroadcast it or mark it FAILED_ORPHANED");
    }
    if identity.is_none() && !(r.anchors_confirmed.is_empty() && r.anchors_reconfirmed.is_empty()) {
        rep.warn(format_args!(
            "{} anchor(s) confirmed without an anchoring identity: who made their transactions is not checked \
             (ailee_init_node --anchor-identity, or --anchor-identity FILE)",
            r.anchors_confirmed.len() + r.anchors_reconfirmed.len()
        ));
    }
    for (a, t, why) in &r.not_operators {
        ailee_cli::errln!(
            "warning: anchor {a}: transaction {t} is not proven the operator's ({why}); left unconfirmed"
        );
    }
    for (a, t, why) in &r.anchors_orphaned {
        ailee_cli::errln!("warning: anchor {a} (txid {t}): {why}: marked INVALIDATED_REORG");
    }
    if cli.common.json {
        out(json!({
            "dry_run": cli.dry_run, "start_height": r.start, "tip": r.tip, "node": rpc.url(),
            "blocks_checked": r.blocks_checked, "blocks_written": r.blocks_written, "blocks_deleted": r.blocks_deleted,
            "reorg": r.reorg.as_ref().map(reorg_json),
            "reorgs": r.reorgs.iter().map(reorg_json).collect::<Vec<_>>(),
            "attempts": r.attempts,
            "deep_reorg": deep,
            "anchors_confirmed": r.anchors_confirmed, "anchors_reconfirmed": r.anchors_reconfirmed,
            "anchors_orphaned": attention(&r.anchors_orphaned), "anchors_updated": r.anchors_updated,
            "unknown_txids": attention(&r.unknown_txids),
            "not_the_operators": attention(&r.not_operators),
            "anchors_from": anchors_json,
        }))?;
    } else {
        let would = if cli.dry_run { "would be " } else { "" };
        out(format_args!(
            "Resync {}..{} from {}: {} heights checked, {} block hashes {would}written, {} {would}deleted{}",
            r.start,
            r.tip,
            rpc.url(),
            r.blocks_checked,
            r.blocks_written,
            r.blocks_deleted,
            if cli.dry_run { " (dry run: nothing written)" } else { "" }
        ))?;
        if r.reorgs.is_empty() {
            out("No reorg.")?;
        }
        for g in &r.reorgs {
            out(format_args!(
                "Reorg at height {} (depth {}): old {} -> new {}; event {}; {} anchor(s) invalidated{}{}",
                g.fork_height,
                g.depth,
                g.old_hash,
                g.new_hash,
                g.event_id,
                g.invalidated.len(),
                if g.invalidated.is_empty() { "" } else { ": " },
                g.invalidated.join(", ")
            ))?;
        }
        if r.attempts > 1 {
            out(format_args!(
                "The chain moved during the run: compared again ({} attempts).",
                r.attempts
            ))?;
        }
        out(format_args!(
            "Anchors: {} confirmed, {} re-confirmed, {} updated{}",
            r.anchors_confirmed.len(),
            r.anchors_reconfirmed.len(),
            r.anchors_updated,
            if r.unknown_txids.is_empty() {
                String::new()
            } else {
                format!(", {} PENDING with a txid the node does not know", r.unknown_txids.len())
            }
        ))?;
        for l in &anchor_lines {
            out(l)?;
        }
    }
    if deep {
        let g = r.reorg.as_ref().map_or(0, |g| g.depth);
        ailee_cli::errln!(
            "DEEP REORG: depth {g} exceeds the confirmation threshold {} — halt the node and re-anchor.",
            cli.confirmations
        );
        return Ok(ExitStatus::DeepReorg);
    }
    if !r.unknown_txids.is_empty() || !r.not_operators.is_empty() {
        return Ok(ExitStatus::Operational);
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
