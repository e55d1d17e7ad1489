//! `ailee_l2_verify`: verifies the snapshots of an `l2_snapshots.dat` file
//! (SPEC §2). The default checks only the newest complete snapshot and reads
//! the file from the end; `--all` streams the whole file on all cores.

use ailee_cli::dbquery::RemoteDb;
use ailee_cli::{lossy, out, Common, ReadArgs, Report, RpcArgs, EXIT_CODES_HELP};
use ailee_core::format::ParseError;
use ailee_core::records::AnchorLookup;
use ailee_core::snapfile::SnapshotFile;
use ailee_core::verifier::{BitcoinCheck, BlockVerdict, Earlier, Verifier};
use ailee_core::verify::{anchor_hash_of, Failure};
use ailee_core::{Error, ExitStatus};
use anyhow::Context;
use clap::Parser;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Verify AILEE L2 state snapshots: state root, anchor commitment, peg-out anchors.
///
/// By default verifies the newest complete snapshot of FILE (a torn snapshot at
/// the end, left by a crash, is ignored with a warning). Prints the computed
/// state root and the verified anchor on stdout; failures go to stderr.
///
/// With --reorg-db the snapshot's own anchor is looked up too: INVALIDATED_REORG
/// or FAILED_ORPHANED fails, absent or PENDING is a warning. With --bitcoin-rpc
/// (and --reorg-db, whose record gives the txid) it is proven on Bitcoin: the
/// transaction must be in the node's best chain with at least --confirmations
/// and carry exactly the anchor's OP_RETURN script. A contradiction, or an
/// anchor the database does not record, exits 2; an anchor not provable yet
/// (not mined, too few confirmations, node behind) exits 1.
#[derive(Debug, Parser)]
#[command(name = "ailee_l2_verify", version, after_help = EXIT_CODES_HELP, mut_arg("bitcoin_rpc", |a| a.requires("reorg_db").conflicts_with_all(["all", "last_valid", "print_state"])))]
struct Cli {
    /// Snapshot file: l2_snapshots.dat, a pruned copy or an extracted snapshot_N.dat.
    #[arg(long, value_name = "FILE")]
    snapshot: PathBuf,
    /// Verify snapshot N instead of the newest (numbered from 1, oldest first).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          conflicts_with_all = ["all", "last_valid"])]
    index: Option<u64>,
    /// Verify every complete snapshot, one result line each; exit 2 if any fails.
    #[arg(long, conflicts_with = "last_valid")]
    all: bool,
    /// Print the number of the newest snapshot that verifies (exit 2 if none does).
    #[arg(long)]
    last_valid: bool,
    /// Also check peg-out anchors against this reorg database, opened read-only
    /// (works while the node runs): an anchor it marks INVALIDATED_REORG or
    /// FAILED_ORPHANED, or that no source records, fails the snapshot.
    #[arg(long, value_name = "PATH")]
    reorg_db: Option<PathBuf>,
    /// The Bitcoin node for the on-chain check of the own anchor (see above).
    #[command(flatten)]
    rpc: RpcArgs,
    /// Confirmations the anchor's transaction needs for --bitcoin-rpc.
    #[arg(long, value_name = "N", default_value_t = ailee_core::records::DEFAULT_CONFIRMATIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    confirmations: u64,
    /// Print the snapshot's state as the JSON of SPEC §3 (for ailee_create_anchor
    /// --l2-state-file) instead of verifying it.
    #[arg(long, conflicts_with_all = ["all", "last_valid"])]
    print_state: bool,
    /// Worker threads for --all (default: number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..256))]
    threads: Option<u64>,
    #[command(flatten)]
    read: ReadArgs,
    #[command(flatten)]
    common: Common,
}

/// What one run does (argv parsed into one value; one function per mode,
/// given what it needs of it). `None`: the newest snapshot; `Some(n)`: the
/// `--index`.
#[derive(Debug, Clone, Copy)]
enum Run {
    One(Option<usize>),
    All,
    LastValid,
    Print(Option<usize>),
}

impl Cli {
    fn mode(&self) -> Run {
        let index = self.index.map(|n| n as usize);
        match (self.all, self.last_valid, self.print_state) {
            (true, _, _) => Run::All,
            (_, true, _) => Run::LastValid,
            (_, _, false) => Run::One(index),
            (_, _, true) => Run::Print(index),
        }
    }
}

fn main() -> ExitCode {
    ailee_cli::main(run)
}

/// Where a block sits in the file (number and line are found lazily).
#[derive(Clone, Copy)]
struct Place {
    number: Option<usize>,
    offset: u64,
    line: Option<usize>,
}

fn corrupt_message(place: &Place, e: &ParseError) -> String {
    let (line, related) = match place.line {
        Some(l) => (format!("line {}", l + e.line - 1), e.related.map(|r| l + r - 1)),
        None => (format!("line {} of the snapshot", e.line), e.related),
    };
    let also = related.map(|r| format!(" (also on line {r})")).unwrap_or_default();
    match place.number {
        Some(n) => format!("Snapshot {n} is corrupt: {line}: {}{also}", e.message),
        None => format!("Snapshot is corrupt: {line}: {}{also}", e.message),
    }
}

fn failure_message(place: &Place, f: &Failure) -> String {
    match f {
        Failure::Corrupt(e) => corrupt_message(place, e),
        other => other.to_string(),
    }
}

fn note_warnings<T: std::fmt::Display>(rep: &Report, notes: &[T], warnings: &mut Vec<String>) {
    for n in notes {
        rep.warn(n);
        warnings.push(n.to_string());
    }
}

fn no_snapshots(path: &Path) -> anyhow::Error {
    anyhow::Error::new(Error::NoSnapshots(path.to_path_buf())).context("Failed to load snapshot")
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let rep = Report {
        quiet: cli.common.quiet,
    };
    let sf = cli.read.open(&cli.snapshot).context("Failed to load snapshot")?;
    // Read through ailee_init_reorg_db: this binary does not link RocksDB
    // (its start would cost most of a newest-snapshot check; ailee_cli::dbquery).
    let db = match &cli.reorg_db {
        Some(p) => Some(RemoteDb::open(p)?),
        None => None,
    };
    let verifier = Verifier::new(db.as_ref().map(|d| d as &dyn AnchorLookup)).with_chain(chain_check(&cli));
    match cli.mode() {
        Run::All => verify_all(&cli, &rep, &sf, &verifier),
        Run::LastValid => last_valid(&cli, &rep, &sf, &verifier),
        Run::Print(index) => print_one(index, &rep, &sf),
        Run::One(index) => verify_one(index, &cli, &rep, &sf, &verifier),
    }
}

/// `--bitcoin-rpc`: the node, connected when a snapshot's own anchor is
/// judged, with the anchoring identity of the database's data directory.
fn chain_check(cli: &Cli) -> Option<BitcoinCheck<'_>> {
    cli.rpc.bitcoin_rpc.as_ref()?;
    Some(BitcoinCheck::lazy(cli.confirmations, move || {
        let rpc = ailee_core::rpc::Rpc::connect(&cli.rpc.config()?)?;
        let data_dir = cli
            .reorg_db
            .as_deref()
            .and_then(ailee_core::identity::AnchorIdentity::data_dir_of);
        Ok((rpc, cli.rpc.identity(data_dir.as_deref())?))
    }))
}

fn verify_one(
    index: Option<usize>,
    cli: &Cli,
    rep: &Report,
    sf: &SnapshotFile,
    verifier: &Verifier,
) -> anyhow::Result<ExitStatus> {
    let mut warnings = Vec::new();
    let (place, block, earlier) = match index {
        Some(n) => {
            let (place, bytes, anchors) = find_index(sf, n, rep, &mut warnings)?;
            (place, bytes, Some(anchors))
        }
        None => {
            let (found, notes) = sf.newest()?;
            note_warnings(rep, &notes, &mut warnings);
            let found = found.ok_or_else(|| no_snapshots(sf.path()))?;
            (
                Place {
                    number: None,
                    offset: found.offset,
                    line: None,
                },
                found.bytes,
                None,
            )
        }
    };
    // What the block alone says is said before any lookup.
    let mut verdict = verifier.check(&block);
    drop(block);
    let mut place = place;
    if verdict.crlf {
        rep.warn("lines end in \\r\\n (tolerated)");
        warnings.push("lines end in \\r\\n (tolerated)".into());
    }
    note_ambiguity(rep, &verdict, "", &mut warnings);
    if matches!(verdict.failure, Some(Failure::Corrupt(_))) && place.number.is_none() {
        place = locate(sf, place.offset)?;
    }
    let earlier = match &earlier {
        Some(set) => Earlier::Known(set),
        None => Earlier::Before(sf, place.offset),
    };
    verifier.finish(&mut verdict, earlier)?;
    note_warnings(rep, &verdict.link_warnings, &mut warnings);
    if let Some(w) = verdict.own_warning() {
        note_warnings(rep, &[w], &mut warnings);
    }
    report_one(cli, &place, &verdict, warnings)
}

/// `--print-state`: the snapshot's state as JSON, streamed from the file
/// (issue 25: memory flat in the state's size).
fn print_one(index: Option<usize>, rep: &Report, sf: &SnapshotFile) -> anyhow::Result<ExitStatus> {
    let mut warnings = Vec::new();
    let span = match index {
        Some(n) => {
            let (span, number, notes) = sf.nth_span(n)?;
            note_warnings(rep, &notes, &mut warnings);
            span.ok_or_else(|| no_index(sf, n, number))?
        }
        None => {
            let (span, notes) = sf.newest_span()?;
            note_warnings(rep, &notes, &mut warnings);
            span.ok_or_else(|| no_snapshots(sf.path()))?
        }
    };
    let place = Place {
        number: span.number,
        offset: span.offset,
        line: span.line,
    };
    let located = || -> anyhow::Result<Place> {
        Ok(if place.number.is_none() {
            locate(sf, place.offset)?
        } else {
            place
        })
    };
    // Streamed (issue 25): the block is checked first (nothing is printed
    // unless it parses and every string is UTF-8), then written section by
    // section without building the state or its JSON in memory; the block
    // itself is read a window at a time. A block the streaming reader does
    // not take (not the node's layout, or faulty) is read whole, and the
    // whole-block writer says what is wrong.
    use ailee_core::state_json::{write_block_json, write_span_json, BlockJsonError, Streamed};
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = match write_span_json(sf, span.offset, span.len, &mut w) {
        Ok(Streamed::Written) => Ok(()),
        Ok(Streamed::NotStreamable) => write_block_json(&sf.read_span(span.offset, span.len)?, &mut w),
        Err(e) => Err(e),
    }
    .and_then(|()| {
        w.write_all(b"\n")?;
        w.flush().map_err(BlockJsonError::Io)
    });
    match written {
        Ok(()) => {
            ailee_cli::printed();
            Ok(ExitStatus::Success)
        }
        Err(BlockJsonError::Io(e)) => {
            ailee_cli::printed();
            Err(anyhow::Error::new(Error::io("stdout", e)))
        }
        Err(BlockJsonError::Read(e)) => Err(anyhow::Error::new(e)),
        Err(BlockJsonError::NotUtf8(e)) => {
            // The snapshot is sound (it may verify); JSON just cannot
            // carry a string that is not UTF-8: an operational limit.
            let place = located()?;
            let which = match (place.number, place.line) {
                (Some(n), Some(l)) => format!("snapshot {n} (line {l})"),
                _ => format!("the snapshot at byte offset {}", place.offset),
            };
            ailee_cli::errln!("cannot print {which} of {} as JSON: {e}", lossy(sf.path()));
            Ok(ExitStatus::Operational)
        }
        Err(BlockJsonError::Corrupt(e)) => {
            let place = located()?;
            ailee_cli::errln!("{}", corrupt_message(&place, &e));
            Ok(ExitStatus::Integrity)
        }
    }
}

fn report_one(cli: &Cli, place: &Place, v: &BlockVerdict, warnings: Vec<String>) -> anyhow::Result<ExitStatus> {
    let proven = v.proof();
    let status = match &v.failure {
        None => ExitStatus::Success,
        Some(Failure::NotYetProvable(_)) => ExitStatus::Operational,
        Some(_) => ExitStatus::Integrity,
    };
    let error = v.failure.as_ref().map(|f| failure_message(place, f));
    if cli.common.json {
        out(json!({
            "file": lossy(&cli.snapshot),
            "snapshot": place.number,
            "offset": place.offset,
            "line": place.line,
            "ok": v.ok(),
            "root": v.root,
            "anchor_hash": v.anchor_hash,
            "error": error,
            "ambiguous_root": v.ambiguous_root.is_some(),
            "warnings": warnings,
            "on_chain": proven.as_ref().map(|(t, h, c)| json!({"txid": t, "height": h, "confirmations": c})),
        }))?;
        if let Some(e) = &error {
            ailee_cli::errln!("{e}");
        }
        return Ok(status);
    }
    if let Some(root) = &v.root {
        out(format_args!("Computed L2StateRoot: {root}"))?;
    }
    match &error {
        None => {
            out(format_args!(
                "Anchor verified: {}",
                v.anchor_hash.as_deref().unwrap_or_default()
            ))?;
            if let Some((t, h, c)) = &proven {
                out(format_args!(
                    "Anchor on Bitcoin: transaction {t} at height {h} ({c} confirmations)"
                ))?;
            }
            out("Verification OK.")?;
        }
        Some(e) => ailee_cli::errln!("{e}"),
    }
    Ok(status)
}

/// Number and line of the block at `offset` (one forward pass; failure paths only).
fn locate(sf: &SnapshotFile, offset: u64) -> anyhow::Result<Place> {
    let found = sf.locate(offset)?;
    Ok(Place {
        number: found.map(|f| f.0),
        offset,
        line: found.map(|f| f.1),
    })
}

/// Snapshot `n` and the anchors of the snapshots before it.
fn find_index(
    sf: &SnapshotFile,
    n: usize,
    rep: &Report,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Place, Vec<u8>, HashSet<String>)> {
    let mut anchors = HashSet::new();
    let mut found = None;
    let mut number = 0;
    let notes = sf.forward(|b| {
        number = b.number;
        if b.number == n {
            let place = Place {
                number: Some(n),
                offset: b.offset,
                line: Some(b.line),
            };
            found = Some((place, b.bytes.to_vec()));
            return Ok(false);
        }
        if let Some(h) = anchor_hash_of(b.bytes) {
            anchors.insert(h);
        }
        Ok(true)
    })?;
    note_warnings(rep, &notes, warnings);
    if let Some((place, bytes)) = found {
        return Ok((place, bytes, anchors));
    }
    Err(no_index(sf, n, number))
}

/// There is no snapshot `n`: the file holds `number` complete snapshots.
fn no_index(sf: &SnapshotFile, n: usize, number: usize) -> anyhow::Error {
    if number == 0 {
        return no_snapshots(sf.path());
    }
    Error::Usage(format!(
        "{}: has {number} complete snapshots, no snapshot {n}",
        sf.path().display()
    ))
    .into()
}

fn threads(cli: &Cli) -> usize {
    cli.threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Snapshots whose database lookups are asked for in one batch by `--all`
/// (the database is read through a pipe, ailee_cli::dbquery).
const LOOKUP_BATCH: usize = 256;

/// `--all`: every complete snapshot, in file order, checked on all cores
/// and finished (links, own anchor) in order as the results come.
fn verify_all(cli: &Cli, rep: &Report, sf: &SnapshotFile, verifier: &Verifier) -> anyhow::Result<ExitStatus> {
    let bar = rep.bar(sf.len(), "verifying");
    // --json: results and warnings go to unnamed temporary files as they
    // come (memory flat in the number of snapshots) and the document, whose
    // "ok" comes before them, is written from those at the end.
    let mut all = All {
        rep,
        bar: &bar,
        verifier,
        anchors: HashSet::new(),
        count: 0,
        failed: 0,
        crlf: false,
        warnings: Vec::new(),
        spill: if cli.common.json { Some(Spill::new()?) } else { None },
    };
    // With a database, reports wait in batches so that their lookups go in
    // one round trip; without one, each is handled as it comes.
    let mut waiting = Vec::new();
    let batch = if verifier.db.is_some() { LOOKUP_BATCH } else { 1 };
    let notes = ailee_core::pipeline::check_all(sf, threads(cli), &bar, |r| {
        let place = Place {
            number: Some(r.number),
            offset: r.offset,
            line: Some(r.line),
        };
        waiting.push((place, BlockVerdict::from(r.verdict)));
        if waiting.len() >= batch {
            all.flush(&mut waiting)?;
        }
        Ok(())
    })?;
    all.flush(&mut waiting)?;
    let All {
        mut warnings,
        crlf,
        count,
        failed,
        spill,
        ..
    } = all;
    drop(bar);
    note_warnings(rep, &notes, &mut warnings);
    if crlf {
        rep.warn("lines end in \\r\\n (tolerated)");
        warnings.push("lines end in \\r\\n (tolerated)".into());
    }
    if count == 0 {
        return Err(no_snapshots(&cli.snapshot));
    }
    if let Some(mut sp) = spill {
        sp.warnings(&mut warnings)?;
        sp.print(&lossy(&cli.snapshot), failed == 0)?;
    }
    rep.info(format_args!(
        "{count} snapshots verified: {} OK, {failed} failed",
        count - failed
    ));
    Ok(if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Integrity
    })
}

/// What `--all` keeps while it goes through the file.
struct All<'a> {
    rep: &'a Report,
    bar: &'a ailee_cli::Bar,
    verifier: &'a Verifier<'a>,
    /// The anchors of the snapshots so far, for the next ones' peg-outs.
    anchors: HashSet<String>,
    count: usize,
    failed: usize,
    crlf: bool,
    warnings: Vec<String>,
    spill: Option<Spill>,
}

impl All<'_> {
    /// Finishes the waiting snapshots in order, their lookups asked first in one batch.
    fn flush(&mut self, waiting: &mut Vec<(Place, BlockVerdict)>) -> ailee_core::Result<()> {
        self.verifier.prefetch(waiting.iter().map(|(_, v)| v))?;
        waiting.drain(..).try_for_each(|(place, v)| self.one(place, v))
    }

    /// Finishes one snapshot and says its result.
    fn one(&mut self, place: Place, mut v: BlockVerdict) -> ailee_core::Result<()> {
        let number = place.number.unwrap_or_default();
        self.crlf |= v.crlf;
        self.verifier.finish(&mut v, Earlier::Known(&self.anchors))?;
        for w in &v.link_warnings {
            let w = format!("snapshot {number}: {w}");
            self.bar.0.suspend(|| self.rep.warn(&w));
            self.warnings.push(w);
        }
        if let Some(h) = &v.anchor_hash {
            self.anchors.insert(h.clone());
        }
        let prefix = format!("snapshot {number}: ");
        self.bar
            .0
            .suspend(|| note_ambiguity(self.rep, &v, &prefix, &mut self.warnings));
        self.count += 1;
        let error = v.failure.as_ref().map(|f| listed_failure(&place, f));
        self.failed += error.is_some() as usize;
        if let Some(sp) = self.spill.as_mut() {
            sp.snapshot(&json!({
                "snapshot": number, "offset": place.offset, "line": place.line, "ok": v.ok(),
                "root": v.root, "anchor_hash": v.anchor_hash, "error": error,
                "ambiguous_root": v.ambiguous_root.is_some(),
            }))?;
            return sp.warnings(&mut self.warnings);
        }
        let line = match &error {
            None => format!(
                "snapshot {number}: OK root={} anchor={}",
                v.root.as_deref().unwrap_or_default(),
                v.anchor_hash.as_deref().unwrap_or_default()
            ),
            Some(e) => format!("snapshot {number}: FAILED {e}"),
        };
        self.bar.0.suspend(|| out(line)).map_err(|e| Error::io("stdout", e))
    }
}

/// A failure as `--all` and `--last-valid` word it (a void own anchor in
/// the words of a void peg-out anchor).
fn listed_failure(place: &Place, f: &Failure) -> String {
    match f {
        Failure::OwnVoid { hash, status } => format!(
            "Anchor verification failed: the snapshot's own anchor {hash}: the reorg database marks {}.",
            status.name()
        ),
        f => failure_message(place, f),
    }
}

/// The `--all --json` document kept on disk while it is made: its
/// snapshots and warnings, each a comma-separated run of JSON values in an
/// unnamed temporary file (gone with the process, however it ends).
struct Spill {
    snapshots: std::io::BufWriter<std::fs::File>,
    warnings: std::io::BufWriter<std::fs::File>,
    counts: [usize; 2],
}

impl Spill {
    fn new() -> ailee_core::Result<Spill> {
        let tmp = || tempfile::tempfile().map_err(|e| Error::io(std::env::temp_dir(), e));
        Ok(Spill {
            snapshots: std::io::BufWriter::new(tmp()?),
            warnings: std::io::BufWriter::new(tmp()?),
            counts: [0, 0],
        })
    }

    fn push(
        w: &mut std::io::BufWriter<std::fs::File>,
        n: &mut usize,
        v: &impl serde::Serialize,
    ) -> ailee_core::Result<()> {
        use std::io::Write;
        let io = |e| Error::io(std::env::temp_dir(), e);
        if *n > 0 {
            w.write_all(b",").map_err(io)?;
        }
        serde_json::to_writer(&mut *w, v).map_err(|e| io(e.into()))?;
        *n += 1;
        Ok(())
    }

    fn snapshot(&mut self, v: &Value) -> ailee_core::Result<()> {
        Self::push(&mut self.snapshots, &mut self.counts[0], v)
    }

    /// Moves the warnings gathered so far to the file.
    fn warnings(&mut self, ws: &mut Vec<String>) -> ailee_core::Result<()> {
        for w in ws.drain(..) {
            Self::push(&mut self.warnings, &mut self.counts[1], &w)?;
        }
        Ok(())
    }

    /// Writes the document, byte for byte what `json!({"file", "ok",
    /// "snapshots", "warnings"})` printed on one line.
    fn print(self, file: &str, ok: bool) -> anyhow::Result<()> {
        use std::io::{Seek, Write};
        let tmp_err = |e| Error::io(std::env::temp_dir(), e);
        let mut files = Vec::new();
        for w in [self.snapshots, self.warnings] {
            let mut f = w.into_inner().map_err(|e| tmp_err(e.into_error()))?;
            f.rewind().map_err(tmp_err)?;
            files.push(f);
        }
        ailee_cli::printed();
        let stdout = std::io::stdout();
        let mut o = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        write!(o, "{{\"file\":{},\"ok\":{ok},\"snapshots\":[", Value::from(file))?;
        std::io::copy(&mut files[0], &mut o)?;
        o.write_all(b"],\"warnings\":[")?;
        std::io::copy(&mut files[1], &mut o)?;
        o.write_all(b"]}\n")?;
        o.flush()?;
        Ok(())
    }
}

fn last_valid(cli: &Cli, rep: &Report, sf: &SnapshotFile, verifier: &Verifier) -> anyhow::Result<ExitStatus> {
    let path = &lossy(sf.path());
    // Numbers need the count of complete snapshots: one pass that only finds boundaries.
    let mut total = 0usize;
    let mut warnings = Vec::new();
    let notes = sf.forward(|_| {
        total += 1;
        Ok(true)
    })?;
    note_warnings(rep, &notes, &mut warnings);
    if total == 0 {
        return Err(no_snapshots(sf.path()));
    }
    let mut number = total + 1;
    for b in sf.newest_first(None)? {
        let b = b?;
        number = number.saturating_sub(1);
        let v = verifier.verify(&b.bytes, Earlier::Before(sf, b.offset))?;
        note_warnings(rep, &v.link_warnings, &mut warnings);
        match &v.failure {
            None => {
                let ambiguous = note_ambiguity(rep, &v, "", &mut warnings);
                if cli.common.json {
                    out(
                        json!({"file": path, "last_valid": number, "root": v.root, "anchor_hash": v.anchor_hash,
                               "total": total, "ambiguous_root": ambiguous, "warnings": warnings}),
                    )?;
                } else {
                    out(number)?;
                }
                return Ok(ExitStatus::Success);
            }
            Some(f) => {
                let place = Place {
                    number: Some(number),
                    offset: b.offset,
                    line: None,
                };
                let msg = format!("snapshot {number}: {}", listed_failure(&place, f));
                rep.warn(&msg);
                warnings.push(msg);
            }
        }
    }
    if cli.common.json {
        out(json!({"file": path, "last_valid": null, "total": total, "warnings": warnings}))?;
    }
    ailee_cli::errln!("No snapshot in {path} verifies.");
    Ok(ExitStatus::Integrity)
}

/// Warns when the snapshot's root is ambiguous (an id holds `:`); true if so.
fn note_ambiguity(rep: &Report, v: &BlockVerdict, prefix: &str, warnings: &mut Vec<String>) -> bool {
    let Some(w) = &v.ambiguous_root else { return false };
    let w = format!("{prefix}{w}");
    rep.warn(&w);
    warnings.push(w);
    true
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
