//! `--metrics-dir`: the outcome of a run as `DIR/ailee_resync.prom`. The
//! reorg a run recorded is read back from the database (events newer than
//! before the run), so the run itself is untouched.

pub use ailee_core::metrics::now_seconds;
use ailee_core::metrics::{MetricsFile, RESYNC};
use ailee_core::ExitStatus;
use ailee_db::reorgdb::{Mode, ReorgDb};
use std::path::Path;

/// Why a run stopped without syncing, for `--metrics-dir` (alerts fire on it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stop {
    /// The node's chain was refused: another genesis, or a fork deeper than
    /// --max-reorg-depth (a deep reorg or the wrong node).
    pub refused: bool,
    /// The node was behind (or in initial block download) when the run stopped.
    pub behind: bool,
}

impl Stop {
    /// The stop a run's result stands for.
    pub fn of(r: &super::Run) -> Stop {
        Stop {
            refused: matches!(r, super::Run::Refused { .. }),
            behind: matches!(r, super::Run::Behind { .. }),
        }
    }
}

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
    stop: Stop,
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
