//! `ailee_init_reorg_db --path P`: creates an empty reorg database the node
//! can open, or (`--check`) checks an existing one read-only (SPEC §2).

use ailee_cli::{out, Common, EXIT_CODES_HELP};
use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_core::ExitStatus;
use ailee_db::reorgdb::CheckReport;
use ailee_records::reader::Answer;
use clap::Parser;
use serde_json::json;
use std::path::{Path, PathBuf};
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

/// What the command line asks for.
enum Run {
    Create,
    Check {
        recent: usize,
    },
    Copy {
        dest: PathBuf,
    },
    GetAnchor {
        hash: String,
    },
    /// `--get-anchor -`: the reader behind `ailee_l2_verify --reorg-db`.
    Serve,
}

impl Cli {
    fn mode(&self) -> Run {
        match (&self.get_anchor, &self.copy_to) {
            (Some(h), _) if h == "-" => Run::Serve,
            (Some(h), _) => Run::GetAnchor { hash: h.clone() },
            (None, Some(d)) => Run::Copy { dest: d.clone() },
            (None, None) if self.check => Run::Check { recent: self.recent },
            (None, None) => Run::Create,
        }
    }
}

/// With `--json`, exactly one document on stdout whatever happens: an error
/// becomes `{"path", "healthy": false, "problem", "error", "exit_code"}`
/// (and is also told on stderr).
fn run_json(cli: Cli) -> anyhow::Result<ExitStatus> {
    let (json, path) = (cli.common.json, cli.path.clone());
    match run(cli) {
        Err(e) if json => {
            let status = ailee_cli::status_of(&e);
            let problem = ailee_init_reorg_db::problem_of(&e, &path);
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

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let (path, json) = (cli.path.as_path(), cli.common.json);
    match cli.mode() {
        Run::Serve => {
            ailee_init_reorg_db::serve(path, std::io::stdin().lock(), std::io::stdout().lock())?;
            Ok(ExitStatus::Success)
        }
        Run::GetAnchor { hash } => {
            render_anchor(&ailee_init_reorg_db::get_anchor(path, &hash)?, json)?;
            Ok(ExitStatus::Success)
        }
        Run::Copy { dest } => {
            let n = ailee_init_reorg_db::copy(path, &dest)?;
            if json {
                out(json!({"path": path.to_string_lossy(), "copy": dest.to_string_lossy(), "records": n}))?;
            } else {
                out(format_args!(
                    "Copied {n} records from {} to {} (checked)",
                    path.display(),
                    dest.display()
                ))?;
            }
            Ok(ExitStatus::Success)
        }
        Run::Create => {
            ailee_init_reorg_db::create(path)?;
            if json {
                out(
                    json!({"path": path.to_string_lossy(), "created": true, "column_families": ailee_core::records::COLUMN_FAMILIES}),
                )?;
            } else {
                out(format_args!(
                    "Created reorg database at {} (column families: default, reputation_cf)",
                    path.display()
                ))?;
            }
            Ok(ExitStatus::Success)
        }
        Run::Check { recent } => render_check(path, &ailee_init_reorg_db::check(path, recent)?, json),
    }
}

/// `--get-anchor HASH`: the record as the reader's answer (`--json`) or as
/// lines of text.
fn render_anchor(a: &AnchorRecord, json: bool) -> std::io::Result<()> {
    if json {
        return out(serde_json::to_value(Answer::record(a)).map_err(std::io::Error::other)?);
    }
    out(format_args!(
        "anchor {}\nstatus {}\ntxid {}\nheight {}\nconfirmations {}\nl2StateRoot {}",
        a.anchor_hash,
        a.status.name(),
        a.bitcoin_tx_id,
        a.bitcoin_height,
        a.confirmations,
        a.l2_state_root
    ))
}

/// `--check`: the report (text or JSON), then its problems on stderr.
fn render_check(path: &Path, r: &CheckReport, json: bool) -> anyhow::Result<ExitStatus> {
    let status = if r.healthy() {
        ExitStatus::Success
    } else {
        ExitStatus::Integrity
    };
    if json {
        out(json!({
            "path": path.to_string_lossy(),
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
        render_check_text(path, r)?;
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
    if !json {
        if r.healthy() {
            out("Database OK: every record decoded.")?;
        } else {
            ailee_cli::errln!("Database check FAILED.");
        }
    }
    Ok(status)
}

fn render_check_text(path: &Path, r: &CheckReport) -> std::io::Result<()> {
    let n = |s: AnchorStatus| r.anchors[s as usize];
    out(format_args!("Database: {} (read-only check)", path.display()))?;
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
            "Reorg at height {} (event {id}): {} -> {}, detected {} ms, {}",
            e.reorg_height,
            e.old_block_hash,
            e.new_block_hash,
            e.detected_at,
            ailee_cli::invalidated(&e.invalidated_anchors)
        ))?;
    }
    out(format_args!("reputation_cf: {} entries", r.reputation_entries))
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
