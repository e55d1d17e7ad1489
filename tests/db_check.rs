//! `ailee_init_reorg_db --check` on physically damaged databases: what RocksDB
//! reports as corrupt (a flipped byte in an SST, an SST of the wrong size, a
//! missing SST, a truncated MANIFEST, a garbage CURRENT) exits 2; absent or
//! unreadable exits 1; a database held by a running node still checks (the
//! check is read-only). With `--json` stdout is exactly one JSON document in
//! every case.

use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use ailee_recovery::{bin, check_db, cmd, db_tool, exits, init_db, Expecting};
use std::path::{Path, PathBuf};

/// A database with a few thousand records, flushed to SST files, closed.
fn populated(dir: &Path) -> PathBuf {
    let p = dir.join("reorg_db");
    init_db(&p);
    let db = ReorgDb::open(&p, Mode::ReadWrite).unwrap();
    let mut b = Batch::default();
    for h in 0..3000u64 {
        b.put_block(h, &format!("{h:064x}"));
    }
    b.put_anchor(&AnchorRecord {
        anchor_hash: "a".repeat(64),
        bitcoin_tx_id: "c".repeat(64),
        bitcoin_height: 105,
        confirmations: 3,
        broadcast_time: 1_700_000_000_000,
        retry_count: 0,
        status: AnchorStatus::Confirmed,
        l2_state_root: "e".repeat(64),
    });
    db.write(b).unwrap();
    db.flush().unwrap();
    drop(db);
    p
}

/// [`populated`] in a new temporary directory: (directory, database).
fn populated_temp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let db = populated(d.path());
    (d, db)
}

fn files(db: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The biggest SST: the one holding the block records.
fn biggest_sst(db: &Path) -> PathBuf {
    files(db, "sst")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("an SST file")
}

fn manifest(db: &Path) -> PathBuf {
    db.join(std::fs::read_to_string(db.join("CURRENT")).unwrap().trim())
}

/// Truncates the file `p` to `to(its length)`.
fn shorten(p: &Path, to: impl FnOnce(u64) -> u64) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(to(len)).unwrap();
}

/// `--check` finds the database corrupt (exit 2).
fn corrupt(db: &Path) {
    let v = check(db, 2);
    assert_eq!(v["problem"], "corrupt", "{v}");
}

/// Runs `--check` twice: text (exit code, stderr) and `--json` (same exit
/// code, exactly one JSON document on stdout). Returns the document.
fn check(db: &Path, code: i32) -> serde_json::Value {
    let text = check_db(db).assert().code(code);
    let err = String::from_utf8_lossy(&text.get_output().stderr).into_owned();
    let v = the_document(db_tool(db).args(["--check", "--json"]).assert().code(code));
    assert_eq!(v["healthy"], (code == 0), "{v}");
    if code != 0 {
        assert_eq!(v["exit_code"], code, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert!(!err.is_empty(), "the text run says why on stderr");
    }
    v
}

#[test]
fn healthy_database_checks_ok_in_text_and_json() {
    let (_d, db) = populated_temp();
    let v = check(&db, 0);
    assert_eq!(v["blocks"]["count"], 3000);
}

#[test]
fn flipped_byte_in_an_sst_exits_2() {
    let (_d, db) = populated_temp();
    let sst = biggest_sst(&db);
    let mut bytes = std::fs::read(&sst).unwrap();
    // Early in the file: inside the first data block, which only a full,
    // checksum-verifying read of the data reaches (the open does not).
    bytes[100] ^= 0x01;
    std::fs::write(&sst, bytes).unwrap();
    let v = check(&db, 2);
    assert_eq!(v["problem"], "corrupt", "{v}");
    assert!(v["error"].as_str().unwrap().contains("Corruption"), "{v}");
}

/// The bytes of an SST's 53-byte footer (format_version 5) that RocksDB never
/// reads: the zero padding after the two block handles. Flipping one of them
/// changes nothing RocksDB (or the node) reads — the data is intact — so
/// nothing can or need detect it; every other byte must be detected.
fn footer_padding(sst: &[u8]) -> std::ops::Range<usize> {
    let mut p = sst.len() - 52;
    for _ in 0..4 {
        while sst[p] & 0x80 != 0 {
            p += 1;
        }
        p += 1;
    }
    p..sst.len() - 12
}

#[test]
fn flipped_byte_anywhere_read_in_an_sst_exits_2() {
    // Data blocks (sampled), index, properties and metaindex blocks, the
    // footer's handles, format version and magic.
    let (d, clean) = populated_temp();
    let sst_name = biggest_sst(&clean).file_name().unwrap().to_owned();
    let original = std::fs::read(clean.join(&sst_name)).unwrap();
    let len = original.len();
    let padding = footer_padding(&original);
    let mut offsets: Vec<usize> = (0..len).step_by(2500).collect();
    offsets.extend((len - 400..len).step_by(7));
    offsets.extend(len - 53..len);
    offsets.retain(|o| !padding.contains(o));
    offsets.sort();
    offsets.dedup();
    let copy = d.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(&clean).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    for at in offsets {
        let mut bytes = original.clone();
        bytes[at] ^= 0x40;
        std::fs::write(copy.join(&sst_name), bytes).unwrap();
        let a = db_tool(&copy).args(["--check", "--json"]).assert();
        let o = a.get_output();
        assert_eq!(
            o.status.code(),
            Some(2),
            "byte {at} of {len}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn sst_of_the_wrong_size_exits_2() {
    let (_d, db) = populated_temp();
    let sst = biggest_sst(&db);
    shorten(&sst, |len| len - 7);
    corrupt(&db);
}

#[test]
fn missing_sst_exits_2() {
    let (_d, db) = populated_temp();
    std::fs::remove_file(biggest_sst(&db)).unwrap();
    corrupt(&db);
}

#[test]
fn truncated_manifest_exits_2() {
    let (_d, db) = populated_temp();
    let m = manifest(&db);
    shorten(&m, |len| len / 2);
    corrupt(&db);
}

#[test]
fn empty_manifest_exits_2() {
    let (_d, db) = populated_temp();
    std::fs::File::create(manifest(&db)).unwrap();
    check(&db, 2);
}

#[test]
fn garbage_current_exits_2() {
    let d = tempfile::tempdir().unwrap();
    for (i, garbage) in ["garbage\n", "\u{0}\u{1}\u{2}", "MANIFEST-999999\n", ""]
        .iter()
        .enumerate()
    {
        let db = populated(&d.path().join(i.to_string()));
        std::fs::write(db.join("CURRENT"), garbage).unwrap();
        let v = check(&db, 2);
        assert_eq!(v["problem"], "corrupt", "CURRENT {garbage:?}: {v}");
    }
}

#[test]
fn absent_database_exits_1_with_one_json_document() {
    let d = tempfile::tempdir().unwrap();
    let v = check(&d.path().join("nothing-here"), 1);
    assert_eq!(v["problem"], "absent", "{v}");
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let v = check(&empty, 1);
    assert_eq!(v["problem"], "not_a_database", "{v}");
}

#[test]
fn unreadable_database_exits_1_not_2() {
    // Permissions do not stop root: run the check as `nobody` (setpriv).
    let (d, db) = populated_temp();
    let run_as_nobody = |json: bool| {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin("ailee_init_reorg_db"))
            .arg("--path")
            .arg(&db)
            .arg("--check");
        if json {
            c.arg("--json");
        }
        c.env_clear().env("LC_ALL", "C");
        c.output().expect("setpriv (util-linux)")
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The directory is listable, but no file in it can be read.
    for f in std::fs::read_dir(&db).unwrap() {
        let f = f.unwrap().path();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let o = run_as_nobody(false);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
    let o = run_as_nobody(true);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["problem"], "unreadable", "{v}");
    // A directory that cannot even be listed.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = run_as_nobody(true);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["problem"], "unreadable", "{v}");
}

#[test]
fn a_database_locked_by_the_node_still_checks_read_only_and_a_writer_exits_1() {
    let (_d, db) = populated_temp();
    // The node holds RocksDB's LOCK with an fcntl lock, as Python's lockf does.
    let holder = Held::lock(&db);
    let v = check(&db, 0);
    assert_eq!(v["blocks"]["count"], 3000);
    // Anything that needs the database exclusively is refused: exit 1, not 2.
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--db-path"])
        .arg(&db)
        .write_stdin(r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1}]}}"#)
        .expect(exits(1).says("locked"));
    drop(holder);
}

/// Holds the database's LOCK as the running node would (an fcntl lock from
/// another process); released when dropped.
struct Held(std::process::Child);

impl Held {
    fn lock(db: &Path) -> Held {
        let mut c = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB); \
                 print('locked', flush=True); sys.stdin.read()",
            ])
            .arg(db.join("LOCK"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.as_mut().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "locked");
        Held(c)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn an_sst_the_manifest_does_not_list_is_only_a_warning() {
    // What an interrupted flush or compaction leaves behind (the MANIFEST is
    // intact): reported, not a failure.
    let (_d, db) = populated_temp();
    std::fs::copy(biggest_sst(&db), db.join("999999.sst")).unwrap();
    let v = check(&db, 0);
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{v}");
    assert!(w[0].as_str().unwrap().contains("999999.sst"), "{v}");
    assert_eq!(v["blocks"]["count"], 3000);
}

/// An offset inside the MANIFEST's biggest record (the edit that adds the
/// SST of the block records): a cut there loses that edit and all later ones.
fn inside_the_biggest_record(m: &[u8]) -> usize {
    assert!(m.len() < 32768, "one log block");
    let (mut p, mut best) = (0, (0, 0));
    while p + 7 <= m.len() {
        let len = u16::from_le_bytes([m[p + 4], m[p + 5]]) as usize;
        if len > best.1 {
            best = (p, len);
        }
        p += 7 + len;
    }
    best.0 + 7 + best.1 / 2
}

#[test]
fn a_torn_manifest_with_unlisted_ssts_is_only_a_warning_while_the_node_holds_the_lock() {
    // The node may be mid-flush: SST written, MANIFEST record being appended.
    let (_d, db) = populated_temp();
    let m = manifest(&db);
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&m, &bytes[..inside_the_biggest_record(&bytes)]).unwrap();
    {
        let _node = Held::lock(&db);
        let v = check(&db, 0);
        assert!(v["warnings"][0].as_str().unwrap().contains("in use"), "{v}");
    }
    let v = check(&db, 2);
    assert!(v["error"].as_str().unwrap().contains("torn record"), "{v}");
}

#[test]
fn a_manifest_cut_at_any_byte_never_checks_healthy_with_data_gone() {
    let (d, clean) = populated_temp();
    let name = manifest(&clean).file_name().unwrap().to_owned();
    let original = std::fs::read(clean.join(&name)).unwrap();
    let copy = d.path().join("copy");
    for cut in 1..original.len() {
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir(&copy).unwrap();
        for f in std::fs::read_dir(&clean).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
        }
        std::fs::write(copy.join(&name), &original[..cut]).unwrap();
        let o = db_tool(&copy).args(["--check", "--json"]).assert().get_output().clone();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        // Either the cut loses nothing RocksDB needs (a torn tail after the
        // last edit that matters is ignored and every SST is still listed),
        // or it is reported as corrupt, or — a cut exactly at a record
        // boundary, indistinguishable from a crash between writing an SST
        // and recording it — the unlisted SST is named in a warning. Never
        // silently "healthy" with data gone.
        match o.status.code() {
            Some(0) if v["blocks"]["count"] == 3000 => {}
            Some(0) => {
                let w = v["warnings"].to_string();
                assert!(w.contains(".sst") && w.contains("not listed"), "cut at {cut}: {v}");
            }
            Some(2) => assert_eq!(v["problem"], "corrupt", "cut at {cut}: {v}"),
            c => panic!("cut at {cut}: exit {c:?}: {v}"),
        }
    }
}

/// Runs `ailee_init_reorg_db ARGS --json`: exit `code`, exactly one document.
fn one_json_doc(args: &[&std::ffi::OsStr], code: i32) -> serde_json::Value {
    the_document(cmd("ailee_init_reorg_db").args(args).arg("--json").assert().code(code))
}

/// The standard output of a run: exactly one JSON document.
fn the_document(a: assert_cmd::assert::Assert) -> serde_json::Value {
    let out = String::from_utf8(a.get_output().stdout.clone()).unwrap();
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"));
    assert_eq!(docs.len(), 1, "exactly one document: {out:?}");
    docs.into_iter().next().unwrap()
}

#[test]
fn every_mode_prints_one_json_document_on_errors_too() {
    let (d, db) = populated_temp();
    let p = |x: &Path| x.as_os_str().to_owned();
    // Create over an existing database: refused, exit 1.
    let v = one_json_doc(&[p(Path::new("--path")).as_os_str(), p(&db).as_os_str()], 1);
    assert!(v["error"].as_str().unwrap().contains("refusing"), "{v}");
    // An anchor that is not there.
    let v = one_json_doc(
        &[
            "--path".as_ref(),
            db.as_os_str(),
            "--get-anchor".as_ref(),
            "f".repeat(64).as_ref(),
        ],
        1,
    );
    assert!(v["error"].as_str().unwrap().contains("No anchor"), "{v}");
    // A copy of a damaged database: exit 2, nothing left at the destination.
    std::fs::remove_file(biggest_sst(&db)).unwrap();
    let dest = d.path().join("copy");
    let v = one_json_doc(
        &[
            "--path".as_ref(),
            db.as_os_str(),
            "--copy-to".as_ref(),
            dest.as_os_str(),
        ],
        2,
    );
    assert_eq!(v["problem"], "corrupt", "{v}");
    assert!(!dest.exists());
}

#[test]
fn a_writer_that_meets_a_damaged_database_exits_2_and_changes_nothing() {
    let (_d, db) = populated_temp();
    std::fs::remove_file(biggest_sst(&db)).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = {
        let mut v: Vec<_> = std::fs::read_dir(&db)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("LOG"))
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        v.sort();
        v
    };
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--db-path"])
        .arg(&db)
        .write_stdin(r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1}]}}"#)
        .expect(exits(2).says("damaged"));
    for (p, b) in before {
        assert_eq!(std::fs::read(&p).unwrap(), b, "{} changed", p.display());
    }
}

#[test]
fn a_path_that_is_not_utf8_prints_lossily_in_json_never_panics() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(std::ffi::OsStr::from_bytes(b"reorg_\xff"));
    let v = one_json_doc(&["--path".as_ref(), p.as_os_str(), "--check".as_ref()], 1);
    assert!(v["path"].as_str().unwrap().ends_with("reorg_\u{fffd}"), "{v}");
    let v = one_json_doc(&["--path".as_ref(), p.as_os_str()], 0);
    assert_eq!(v["created"], true);
    let v = one_json_doc(&["--path".as_ref(), p.as_os_str(), "--check".as_ref()], 0);
    assert_eq!(v["healthy"], true);
    let dest = d.path().join(std::ffi::OsStr::from_bytes(b"copy_\xfe"));
    let v = one_json_doc(
        &["--path".as_ref(), p.as_os_str(), "--copy-to".as_ref(), dest.as_os_str()],
        0,
    );
    assert!(v["copy"].as_str().unwrap().ends_with("copy_\u{fffd}"), "{v}");
}

#[test]
fn a_database_reached_through_a_symlink_checks() {
    let (d, db) = populated_temp();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let v = check(&link, 0);
    assert_eq!(v["blocks"]["count"], 3000);
}

/// Readers beside a writer (issue 25, "damaged means damaged"): a read-only
/// view races a writer that renames or deletes WAL and MANIFEST files between
/// RocksDB's listing and its read. What such a race shows is never reported as
/// damage (exit 2) nor as an error at all: the database is healthy throughout.
/// The bounded sample of `scripts/campaign_reader.sh`.
mod beside_a_writer {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

    /// Read-only opens and checks in this process, as every reading tool does them.
    const IN_PROCESS_READS: u64 = 3000;
    /// Runs of the tool itself (`--check`, `--get-anchor`).
    const TOOL_RUNS: u64 = 100;
    /// Records the writer writes (and flushes) between its opens.
    const WRITES_PER_OPEN: u64 = 8;

    /// The `i`th record; its key is scattered (an odd multiplier is a
    /// bijection), as the node's anchor hashes are.
    fn anchor(i: u64) -> AnchorRecord {
        AnchorRecord {
            anchor_hash: format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            bitcoin_tx_id: String::new(),
            bitcoin_height: 0,
            confirmations: 0,
            broadcast_time: 0,
            retry_count: 0,
            status: AnchorStatus::Pending,
            l2_state_root: "e".repeat(64),
        }
    }

    #[test]
    fn readers_beside_a_writer_never_call_the_healthy_database_damaged() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("reorg_db");
        ReorgDb::create(&db).unwrap();
        let stop = AtomicBool::new(false);
        let rounds = AtomicU64::new(0);
        let mut alarms: Vec<String> = Vec::new();
        std::thread::scope(|s| {
            // The writer, as the node and `ailee_create_anchor --db-path` do
            // it: open read-write (the WAL recovered and flushed, a new
            // MANIFEST, the old one deleted), records each flushed (a new SST
            // and WAL, the old WAL deleted, compactions deleting SSTs), close;
            // again.
            let writer = s.spawn(|| {
                let mut i = 0;
                while !stop.load(SeqCst) {
                    let w = ReorgDb::open(&db, Mode::ReadWrite).unwrap();
                    for _ in 0..WRITES_PER_OPEN {
                        // Two records far apart: each flushed file overlaps
                        // the others, so compactions merge and delete them.
                        let mut b = Batch::default();
                        b.put_anchor(&anchor(i));
                        b.put_block(i, &anchor(i).anchor_hash);
                        w.write(b).unwrap();
                        w.flush().unwrap();
                        i += 1;
                        rounds.store(i, SeqCst);
                    }
                    drop(w);
                }
            });
            // The readers start once the writer has written (a count, not a delay).
            while rounds.load(SeqCst) == 0 {
                assert!(!writer.is_finished(), "the writer stopped");
                std::thread::yield_now();
            }
            for n in 0..IN_PROCESS_READS {
                let r = ReorgDb::open(&db, Mode::ReadOnly).and_then(|r| r.check(0));
                match r {
                    Ok(r) if r.healthy() => {}
                    Ok(r) => alarms.push(format!(
                        "read {n}: not healthy: {:?} {:?}",
                        r.errors, r.counter_mismatch
                    )),
                    Err(e) => alarms.push(format!("read {n}: exit {:?}: {e}", e.exit_status().code())),
                }
            }
            for n in 0..TOOL_RUNS {
                let mut c = cmd("ailee_init_reorg_db");
                c.arg("--path").arg(&db);
                if n % 2 == 0 {
                    c.arg("--check");
                } else {
                    c.args(["--get-anchor", &anchor(0).anchor_hash]);
                }
                let o = c.output().unwrap();
                if !o.status.success() {
                    alarms.push(format!(
                        "tool run {n}: exit {:?}: {}",
                        o.status.code(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ));
                }
            }
            stop.store(true, SeqCst);
            writer.join().unwrap();
        });
        assert!(
            alarms.is_empty(),
            "{} false alarm(s) in {IN_PROCESS_READS} reads and {TOOL_RUNS} tool runs beside a writer:\n{}",
            alarms.len(),
            alarms.join("\n")
        );
        // The database was healthy throughout: it checks once the writer is gone.
        let v = check(&db, 0);
        assert_eq!(v["healthy"], true, "{v}");
        assert_eq!(v["anchors"]["PENDING"], rounds.load(SeqCst), "{v}");
    }
}
