//! `ailee_resync_blocks`: brings the reorg database's block hashes in line
//! with the Bitcoin node's best chain, recording reorgs at their fork point
//! and invalidating the anchors they orphaned (SPEC §2).

use ailee_cli::{out, Common, Report, RpcArgs, EXIT_CODES_HELP};
use ailee_core::rpc::Rpc;
use ailee_core::ExitStatus;
use ailee_db::reorgdb::{Mode, ReorgDb};
use ailee_db::resync::{Attention, Reorg};
use ailee_resync_blocks::metrics::{self, Stop};
use ailee_resync_blocks::{AnchorsFound, Options, Run, Synced, Wait};
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

/// Opens what the run needs (in this order: RPC settings, database,
/// identity, the snapshot file, the connection), runs it and renders it.
fn run(cli: Cli, stop: &mut Stop) -> anyhow::Result<ExitStatus> {
    let rep = cli.common.report();
    let cfg = cli.rpc.config()?;
    let mode = if cli.dry_run { Mode::ReadOnly } else { Mode::ReadWrite };
    let db = ReorgDb::open(&cli.db_path, mode).context("cannot open reorg database")?;
    // The snapshot file and the anchoring identity are read before anything
    // is written: a bad path fails early.
    let identity = cli
        .rpc
        .identity(ailee_core::identity::AnchorIdentity::data_dir_of(&cli.db_path).as_deref())?;
    let file = match &cli.anchors_from {
        Some(p) => Some(ailee_resync_blocks::file_anchors(
            p,
            identity.as_ref(),
            &cli.db_path,
            &rep,
        )?),
        None => None,
    };
    let rpc = Rpc::connect(&cfg)?;
    let opts = Options {
        resync: ailee_db::resync::Options {
            start: cli.start_height,
            batch_size: cli.batch_size,
            confirmations: cli.confirmations,
            max_reorg_depth: cli.max_reorg_depth,
            dry_run: cli.dry_run,
            identity,
        },
        wait: cli.wait.then_some(Wait {
            timeout: cli.wait_timeout,
            interval: cli.wait_interval,
        }),
        block_batch: cli.block_batch,
    };
    let r = ailee_resync_blocks::run(&db, &rpc, &opts, file, &rep)?;
    *stop = Stop::of(&r);
    let json = cli.common.json;
    match r {
        Run::Refused { message } => {
            if json {
                out(json!({"refused": message, "node": rpc.url()}))?;
            }
            ailee_cli::errln!("Refused: {message}.");
            Ok(ExitStatus::Operational)
        }
        Run::Behind {
            tip,
            stored,
            ibd,
            gave_up_after,
        } => {
            if json {
                out(
                    json!({"behind": {"tip": tip, "stored_tip": stored, "initial_block_download": ibd}, "node": rpc.url()}),
                )?;
            }
            let msg = ailee_resync_blocks::behind_message(tip, stored, ibd, cli.start_height);
            match gave_up_after {
                None => ailee_cli::errln!(
                    "{msg}. Nothing was changed: this is not a reorg. Wait for the node to sync \
                     (or use --wait), then run again."
                ),
                Some(waited) => ailee_cli::errln!(
                    "{msg}. Gave up waiting after {waited} s (--wait-timeout {}); nothing was changed.",
                    cli.wait_timeout
                ),
            }
            Ok(ExitStatus::Operational)
        }
        Run::Synced(s) => render_synced(&s, &cli, &opts, rpc.url(), &rep),
    }
}

fn reorg_json(g: &Reorg) -> serde_json::Value {
    json!({
    "event_id": g.event_id, "fork_height": g.fork_height, "depth": g.depth,
    "old_block_hash": g.old_hash, "new_block_hash": g.new_hash, "invalidated_anchors": g.invalidated})
}

fn attention_json(v: &[Attention]) -> Vec<serde_json::Value> {
    v.iter()
        .map(|(a, t, why)| json!({"anchor": a, "txid": t, "why": why}))
        .collect()
}

/// `--anchors-from` in the JSON document.
fn anchors_json(a: &AnchorsFound) -> serde_json::Value {
    let anchors = &a.file.anchors;
    json!({
        "file": a.file.path, "in_file": anchors.len(),
        "found": a.found.iter().map(|f| json!({"anchor": anchors[f.anchor].hash, "txid": f.txid, "height": f.height})).collect::<Vec<_>>(),
        "recorded": a.recorded.written, "already_recorded": a.recorded.unchanged,
        "conflicts": a.recorded.conflicts.iter().map(|(h, o, n)| json!({"anchor": h, "recorded_txid": o, "chain_txid": n})).collect::<Vec<_>>(),
        "not_found": a.missing.iter().map(|&i| json!({"anchor": anchors[i].hash, "snapshot": anchors[i].snapshot})).collect::<Vec<_>>(),
        "not_the_operators": a.ignored.iter()
            .map(|i| json!({"anchor": anchors[i.anchor].hash, "txid": i.txid, "height": i.height, "why": i.why}))
            .collect::<Vec<_>>(),
    })
}

/// `--anchors-from` in the text report.
fn anchors_line(a: &AnchorsFound, dry_run: bool) -> String {
    let would = if dry_run { "would be " } else { "" };
    format!(
        "Anchors from {}: {} in the file, {} found on the chain, {} {would}recorded, {} already recorded, {} not found",
        a.file.path.display(),
        a.file.anchors.len(),
        a.found.len(),
        a.recorded.written.len(),
        a.recorded.unchanged.len(),
        a.missing.len()
    )
}

/// The warnings of a completed resync, its report and its exit status.
fn render_synced(s: &Synced, cli: &Cli, opts: &Options, node: &str, rep: &Report) -> anyhow::Result<ExitStatus> {
    let r = &s.report;
    for (a, t, why) in &r.unknown_txids {
        ailee_cli::errln!("warning: PENDING anchor {a}: the node does not know its transaction {t} ({why}); skipped — rebroadcast it or mark it FAILED_ORPHANED");
    }
    if opts.resync.identity.is_none() && !(r.anchors_confirmed.is_empty() && r.anchors_reconfirmed.is_empty()) {
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
            "dry_run": cli.dry_run, "start_height": r.start, "tip": r.tip, "node": node,
            "blocks_checked": r.blocks_checked, "blocks_written": r.blocks_written, "blocks_deleted": r.blocks_deleted,
            "reorg": r.reorg.as_ref().map(reorg_json),
            "reorgs": r.reorgs.iter().map(reorg_json).collect::<Vec<_>>(),
            "attempts": r.attempts,
            "deep_reorg": s.deep,
            "anchors_confirmed": r.anchors_confirmed, "anchors_reconfirmed": r.anchors_reconfirmed,
            "anchors_orphaned": attention_json(&r.anchors_orphaned), "anchors_updated": r.anchors_updated,
            "unknown_txids": attention_json(&r.unknown_txids),
            "not_the_operators": attention_json(&r.not_operators),
            "anchors_from": s.anchors.as_ref().map_or(serde_json::Value::Null, anchors_json),
        }))?;
    } else {
        render_text(s, cli.dry_run, node)?;
    }
    if s.deep {
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

/// The text report of a completed resync.
fn render_text(s: &Synced, dry_run: bool, node: &str) -> std::io::Result<()> {
    let r = &s.report;
    let would = if dry_run { "would be " } else { "" };
    out(format_args!(
        "Resync {}..{} from {}: {} heights checked, {} block hashes {would}written, {} {would}deleted{}",
        r.start,
        r.tip,
        node,
        r.blocks_checked,
        r.blocks_written,
        r.blocks_deleted,
        if dry_run { " (dry run: nothing written)" } else { "" }
    ))?;
    if r.reorgs.is_empty() {
        out("No reorg.")?;
    }
    for g in &r.reorgs {
        out(format_args!(
            "Reorg at height {} (depth {}): old {} -> new {}; event {}; {}",
            g.fork_height,
            g.depth,
            g.old_hash,
            g.new_hash,
            g.event_id,
            ailee_cli::invalidated(&g.invalidated)
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
    if let Some(a) = &s.anchors {
        out(anchors_line(a, dry_run))?;
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
