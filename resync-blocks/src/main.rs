//! `ailee_resync_blocks`: brings the reorg database's block hashes in line
//! with the Bitcoin node's best chain, recording reorgs at their fork point
//! and invalidating the anchors they orphaned (SPEC §2).

use ailee_cli::{out, Common, Report, RpcArgs, EXIT_CODES_HELP};
use ailee_core::reorgdb::{Mode, ReorgDb};
use ailee_core::resync::{resync, Options};
use ailee_core::rpc::Rpc;
use ailee_core::ExitStatus;
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Resync block hashes from a Bitcoin node into the reorg database.
///
/// Compares the stored hashes from --start-height to the node's tip with the
/// node's best chain (JSON-RPC batches). Where they differ it finds the fork
/// point (walking below the start height if needed), records one reorg event,
/// marks anchors at or above the fork INVALIDATED_REORG, deletes stored heights
/// above a shorter tip, writes the new hashes, and refreshes the confirmations
/// of the other anchors (PENDING -> CONFIRMED at --confirmations).
///
/// Needs exclusive access: stop the node first. Every change is a RocksDB
/// write batch; an interrupted run leaves the database consistent and a rerun
/// finishes the job. Exit 3 when the reorg is deeper than --confirmations:
/// the changes are written, then halt the node and re-anchor.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_CODES_HELP, mut_arg("bitcoin_rpc", |a| a.required(true)))]
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
        let r = run(cli);
        if let Some(dir) = dir {
            if let Err(e) = metrics::record(&dir, &db, before, &r) {
                eprintln!("warning: cannot write metrics to {}: {e}", dir.display());
            }
        }
        r
    })
}

/// `--metrics-dir`: the outcome of a run as `DIR/ailee_resync.prom`. The
/// reorg a run recorded is read back from the database (events newer than
/// before the run), so `run` itself is untouched.
mod metrics {
    use ailee_core::metrics::{now_seconds, MetricsFile, RESYNC};
    use ailee_core::reorgdb::{Mode, ReorgDb};
    use ailee_core::{Error, ExitStatus};
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
    ) -> ailee_core::Result<()> {
        let code = match r {
            Ok(s) => *s,
            Err(e) => e
                .chain()
                .find_map(|c| c.downcast_ref::<Error>())
                .map_or(ExitStatus::Operational, Error::exit_status),
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

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    let cfg = cli.rpc.config()?;
    let mode = if cli.dry_run { Mode::ReadOnly } else { Mode::ReadWrite };
    let db = ReorgDb::open(&cli.db_path, mode).context("cannot open reorg database")?;
    let rpc = Rpc::connect(&cfg)?;
    let tip = rpc.block_count()?;
    if cli.start_height > tip && db.tip()?.is_none_or(|t| t <= tip) {
        return Err(ailee_core::Error::Usage(format!(
            "--start-height {} is above the node's tip {tip} (is the node synced?)",
            cli.start_height
        ))
        .into());
    }
    let opts = Options {
        start: cli.start_height,
        batch_size: cli.batch_size,
        confirmations: cli.confirmations,
        dry_run: cli.dry_run,
    };
    let bar = rep.count_bar(
        tip.saturating_add(1).saturating_sub(cli.start_height),
        "resyncing blocks",
    );
    let r = resync(&db, &rpc, &opts, &bar)?;
    drop(bar);
    let deep = r.deep(cli.confirmations);
    if cli.common.json {
        out(json!({
            "dry_run": cli.dry_run, "start_height": r.start, "tip": r.tip, "node": rpc.url(),
            "blocks_checked": r.blocks_checked, "blocks_written": r.blocks_written, "blocks_deleted": r.blocks_deleted,
            "reorg": r.reorg.as_ref().map(|g| json!({
                "event_id": g.event_id, "fork_height": g.fork_height, "depth": g.depth,
                "old_block_hash": g.old_hash, "new_block_hash": g.new_hash, "invalidated_anchors": g.invalidated})),
            "deep_reorg": deep,
            "anchors_confirmed": r.anchors_confirmed, "anchors_updated": r.anchors_updated,
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
        match &r.reorg {
            None => out("No reorg.")?,
            Some(g) => out(format_args!(
                "Reorg at height {} (depth {}): old {} -> new {}; event {}; {} anchor(s) invalidated{}{}",
                g.fork_height,
                g.depth,
                g.old_hash,
                if g.new_hash.is_empty() {
                    "(none: chain is shorter)"
                } else {
                    &g.new_hash
                },
                g.event_id,
                g.invalidated.len(),
                if g.invalidated.is_empty() { "" } else { ": " },
                g.invalidated.join(", ")
            ))?,
        }
        out(format_args!(
            "Anchors: {} confirmed, {} updated",
            r.anchors_confirmed.len(),
            r.anchors_updated
        ))?;
    }
    if deep {
        let g = r.reorg.as_ref().map_or(0, |g| g.depth);
        eprintln!(
            "DEEP REORG: depth {g} exceeds the confirmation threshold {} — halt the node and re-anchor.",
            cli.confirmations
        );
        return Ok(ExitStatus::DeepReorg);
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
