//! `ailee_init_reorg_db --path P`: creates an empty reorg database the node
//! can open, or (`--check`) checks an existing one read-only (SPEC §2).

use ailee_cli::{out, Common, EXIT_CODES_HELP};
use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_core::{Error, ExitStatus};
use ailee_db::reorgdb::{Mode, ReorgDb};
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Create an empty AILEE reorg database, or check an existing one.
///
/// Without --check: creates a RocksDB database at PATH with the column families
/// `default` and `reputation_cf` (SST format_version 5, readable by the node's
/// RocksDB). An existing database, file or non-empty directory is never touched.
///
/// With --check: opens PATH read-only — safe while the node runs — decodes every
/// record and prints anchor counts per status, the block height range and gaps,
/// the most recent reorg events and whether reorg_counter matches them. Every
/// block is read with its checksum verified. Exit 2 if any record does not
/// decode, the counter disagrees, or RocksDB finds the database damaged (a
/// checksum or file-size mismatch, a missing SST, a bad CURRENT or MANIFEST);
/// exit 1 if it is absent or unreadable. With --json exactly one document is
/// printed, errors included ("problem", "error", "exit_code").
#[derive(Debug, Parser)]
#[command(name = "ailee_init_reorg_db", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// Database directory (e.g. /var/lib/ailee/reorg_db).
    #[arg(long, value_name = "P")]
    path: PathBuf,
    /// Check an existing database read-only instead of creating one.
    #[arg(long)]
    check: bool,
    /// Print one anchor record (read-only), e.g. to find the Bitcoin height of
    /// an anchor; exit 1 if there is none. With `-`: read hashes from stdin,
    /// one per line, and answer each with one JSON line as soon as it is read
    /// (`"found": false` for an absent one; a record that does not decode is
    /// `{"anchor_hash", "error", "exit_code": 2}`), then exit 0 at the end of
    /// input. `ailee_l2_verify --reorg-db` reads the database this way.
    #[arg(long, value_name = "HASH", conflicts_with_all = ["check", "copy_to"])]
    get_anchor: Option<String>,
    /// Write a consistent copy of the database to a new directory (read-only on
    /// PATH, safe while the node runs); used by the hourly backup.
    #[arg(long, value_name = "DEST", conflicts_with = "check")]
    copy_to: Option<PathBuf>,
    /// Number of recent reorg events to list with --check.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "check")]
    recent: usize,
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    ailee_cli::main(run_json)
}

/// With `--json`, exactly one document on stdout whatever happens: an error
/// becomes `{"path", "healthy": false, "problem", "error", "exit_code"}`
/// (and is also told on stderr).
fn run_json(cli: Cli) -> anyhow::Result<ExitStatus> {
    let (json, path) = (cli.common.json, cli.path.clone());
    match run(cli) {
        Err(e) if json => {
            let core = e.chain().find_map(|c| c.downcast_ref::<Error>());
            let status = ailee_cli::status_of(&e);
            let problem = match core {
                Some(Error::DbCorrupt { .. } | Error::Decode(_) | Error::Integrity(_)) => "corrupt",
                Some(Error::Locked { .. }) => "locked",
                Some(Error::NotADatabase { .. })
                    if std::fs::read_dir(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied) =>
                {
                    "unreadable"
                }
                Some(Error::NotADatabase { .. }) if std::fs::symlink_metadata(&path).is_err() => "absent",
                Some(Error::NotADatabase { .. }) => "not_a_database",
                Some(Error::Io { .. } | Error::Db { .. }) => "unreadable",
                Some(Error::Interrupted) => "interrupted",
                _ => "error",
            };
            out(
                json!({"path": path.to_string_lossy(), "healthy": false, "problem": problem,
                       "error": format!("{e:#}"), "exit_code": status.code()}),
            )?;
            ailee_cli::errln!("{e:#}");
            Ok(status)
        }
        r => r,
    }
}

fn record_json(a: &AnchorRecord) -> serde_json::Value {
    json!({"anchor_hash": a.anchor_hash, "found": true, "bitcoin_tx_id": a.bitcoin_tx_id,
        "bitcoin_height": a.bitcoin_height, "confirmations": a.confirmations,
        "broadcast_time": a.broadcast_time, "retry_count": a.retry_count,
        "status": a.status.name(), "l2_state_root": a.l2_state_root})
}

/// `--get-anchor -`: one JSON line per hash read from stdin, flushed at once
/// (a caller may wait for each answer before asking the next).
fn serve_anchors(db: &ReorgDb) -> anyhow::Result<ExitStatus> {
    use std::io::{BufRead, Read, Write};
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut o = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        // Lines are capped like any other input: a hash is 64 characters.
        const CAP: usize = 64 * 1024;
        let n = (&mut input).take(CAP as u64 + 2).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(ExitStatus::Success);
        }
        let raw = line.strip_suffix(b"\n").unwrap_or(&line);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > CAP {
            return Err(Error::Usage("--get-anchor -: an input line is longer than 64 KiB".into()).into());
        }
        let text = String::from_utf8_lossy(raw);
        let hash = text.as_ref();
        // `block:<height>`: the stored best-chain hash there (the verifier's
        // check that a Bitcoin node follows the database's chain).
        if let Some(height) = hash
            .strip_prefix(ailee_cli::dbquery::BLOCK_QUESTION)
            .and_then(|h| h.parse::<u64>().ok())
        {
            let answer = match db.block_hash(height) {
                Ok(Some(b)) => json!({"anchor_hash": hash, "found": true, "block_hash": b}),
                Ok(None) => json!({"anchor_hash": hash, "found": false}),
                Err(e) => json!({"anchor_hash": hash, "error": e.to_string(), "exit_code": e.exit_status().code()}),
            };
            writeln!(o, "{answer}")?;
            o.flush()?;
            continue;
        }
        let answer = match db.anchor(hash) {
            Ok(Some(a)) => record_json(&a),
            Ok(None) => json!({"anchor_hash": hash, "found": false}),
            Err(e) => json!({"anchor_hash": hash, "error": e.to_string(), "exit_code": e.exit_status().code()}),
        };
        writeln!(o, "{answer}")?;
        o.flush()?;
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    if let Some(hash) = &cli.get_anchor {
        let db = ReorgDb::open(&cli.path, Mode::ReadOnly).context("cannot open reorg database")?;
        if hash == "-" {
            return serve_anchors(&db);
        }
        let Some(a) = db.anchor(hash)? else {
            return Err(Error::Usage(format!("No anchor {hash} in {}", cli.path.display())).into());
        };
        if cli.common.json {
            out(record_json(&a))?;
        } else {
            out(format_args!(
                "anchor {}\nstatus {}\ntxid {}\nheight {}\nconfirmations {}\nl2StateRoot {}",
                a.anchor_hash,
                a.status.name(),
                a.bitcoin_tx_id,
                a.bitcoin_height,
                a.confirmations,
                a.l2_state_root
            ))?;
        }
        return Ok(ExitStatus::Success);
    }
    if let Some(dest) = &cli.copy_to {
        let db = ReorgDb::open(&cli.path, Mode::ReadOnly).context("cannot open reorg database")?;
        let n = db.copy_to(dest).context("cannot copy the reorg database")?;
        drop(db);
        let copy = ReorgDb::open(dest, Mode::ReadOnly)?;
        let r = copy.check(0)?;
        if !r.healthy() {
            let why = r.errors.first().cloned().or(r.counter_mismatch).unwrap_or_default();
            return Err(Error::Integrity(format!("The copy does not check: {why}")).into());
        }
        if cli.common.json {
            out(json!({"path": cli.path.to_string_lossy(), "copy": dest.to_string_lossy(), "records": n}))?;
        } else {
            out(format_args!(
                "Copied {n} records from {} to {} (checked)",
                cli.path.display(),
                dest.display()
            ))?;
        }
        return Ok(ExitStatus::Success);
    }
    if !cli.check {
        ReorgDb::create(&cli.path).context("cannot create reorg database")?;
        if cli.common.json {
            out(
                json!({"path": cli.path.to_string_lossy(), "created": true, "column_families": ailee_core::records::COLUMN_FAMILIES}),
            )?;
        } else {
            out(format_args!(
                "Created reorg database at {} (column families: default, reputation_cf)",
                cli.path.display()
            ))?;
        }
        return Ok(ExitStatus::Success);
    }
    let db = ReorgDb::open(&cli.path, Mode::ReadOnly).context("cannot open reorg database")?;
    let r = db.check(cli.recent)?;
    let status = if r.healthy() {
        ExitStatus::Success
    } else {
        ExitStatus::Integrity
    };
    if cli.common.json {
        out(json!({
            "path": cli.path.to_string_lossy(),
            "healthy": r.healthy(),
            "anchors": AnchorStatus::ALL.iter().map(|s| (s.name().to_string(), json!(r.anchors[*s as usize]))).collect::<serde_json::Map<_, _>>(),
            "blocks": {"count": r.blocks, "min_height": r.min_height, "max_height": r.max_height,
                       "missing_heights": r.missing_heights, "gaps": r.gaps},
            "reorg_events": r.reorg_events,
            "reorg_counter": r.counter,
            "counter_mismatch": r.counter_mismatch,
            "recent_reorgs": r.recent_events.iter().map(|(id, e)| json!({
                "id": id, "height": e.reorg_height, "old_block_hash": e.old_block_hash,
                "new_block_hash": e.new_block_hash, "detected_at_ms": e.detected_at,
                "invalidated_anchors": e.invalidated_anchors})).collect::<Vec<_>>(),
            "reputation_entries": r.reputation_entries,
            "undecodable_records": r.undecodable,
            "errors": r.errors,
            "warnings": r.warnings,
        }))?;
    } else {
        let n = |s: AnchorStatus| r.anchors[s as usize];
        out(format_args!("Database: {} (read-only check)", cli.path.display()))?;
        out(format_args!("Pending: {}", n(AnchorStatus::Pending)))?;
        out(format_args!("Confirmed: {}", n(AnchorStatus::Confirmed)))?;
        out(format_args!("Invalidated: {}", n(AnchorStatus::InvalidatedReorg)))?;
        out(format_args!("Failed (orphaned): {}", n(AnchorStatus::FailedOrphaned)))?;
        match (r.min_height, r.max_height) {
            (Some(lo), Some(hi)) => {
                let gaps = if r.missing_heights == 0 {
                    "no gaps".to_string()
                } else {
                    let list: Vec<String> = r.gaps.iter().map(|(a, b)| format!("{a}..{b}")).collect();
                    format!("{} heights missing: {}", r.missing_heights, list.join(", "))
                };
                out(format_args!("Blocks: {} stored, heights {lo}..{hi}, {gaps}", r.blocks))?
            }
            _ => out("Blocks: none stored")?,
        }
        out(format_args!(
            "Reorg events: {} (reorg_counter {})",
            r.reorg_events,
            r.counter.map_or("absent".into(), |c| c.to_string())
        ))?;
        for (id, e) in &r.recent_events {
            out(format_args!(
                "Reorg at height {} (event {id}): {} -> {}, detected {} ms, {} anchor(s) invalidated{}{}",
                e.reorg_height,
                e.old_block_hash,
                e.new_block_hash,
                e.detected_at,
                e.invalidated_anchors.len(),
                if e.invalidated_anchors.is_empty() { "" } else { ": " },
                e.invalidated_anchors.join(", ")
            ))?;
        }
        out(format_args!("reputation_cf: {} entries", r.reputation_entries))?;
    }
    for w in &r.warnings {
        ailee_cli::errln!("warning: {w}");
    }
    if let Some(m) = &r.counter_mismatch {
        ailee_cli::errln!("Counter mismatch: {m}");
    }
    for e in &r.errors {
        ailee_cli::errln!("Corrupt record: {e}");
    }
    if r.undecodable > r.errors.len() as u64 {
        ailee_cli::errln!("… {} undecodable records in all", r.undecodable);
    }
    if !cli.common.json {
        if r.healthy() {
            out("Database OK: every record decoded.")?;
        } else {
            ailee_cli::errln!("Database check FAILED.");
        }
    }
    Ok(status)
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
