//! The reorg database: `ailee_init_reorg_db` end to end, and interop with
//! Debian's `ldb` (RocksDB 7.8.3) as the independent peer, both directions.

use ailee_core::records::DbError;
use ailee_core::records::{AnchorRecord, AnchorStatus, ReorgEvent};
use ailee_core::Error;
use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use ailee_recovery::{check_db, cmd, db_tool, entries, exits, init_db, Expecting};
use std::path::Path;
use std::process::{Command, Stdio};

fn ldb(db: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("ldb")
        .arg(format!("--db={}", db.display()))
        .arg("--ignore_unknown_options")
        .args(args)
        .output()
        .expect("ldb (Debian rocksdb-tools) must be installed: scripts/setup.sh installs it");
    assert!(
        out.status.success(),
        "ldb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn hash(c: char) -> String {
    c.to_string().repeat(64)
}

fn anchor(h: &str, status: AnchorStatus) -> AnchorRecord {
    AnchorRecord {
        anchor_hash: h.to_string(),
        bitcoin_tx_id: hash('c'),
        bitcoin_height: 105,
        confirmations: 3,
        broadcast_time: 1_700_000_000_000,
        retry_count: 0,
        status,
        l2_state_root: hash('e'),
    }
}

#[test]
fn init_creates_both_column_families_and_an_empty_healthy_database() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("reorg_db");
    init_db(&p);
    let cfs = String::from_utf8(ldb(&p, &["list_column_families"]).stdout).unwrap();
    assert!(cfs.contains("{default, reputation_cf}"), "{cfs}");
    check_db(&p).expect(
        exits(0)
            .prints("Pending: 0\nConfirmed: 0\nInvalidated: 0\n")
            .prints("Blocks: none stored")
            .prints("Database OK"),
    );
    assert_eq!(entries(d.path()), 1, "no temporary directory left");
}

#[test]
fn init_never_touches_what_is_already_there() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("reorg_db");
    init_db(&p);
    let before: Vec<_> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().file_name()).collect();
    db_tool(&p).expect(exits(1).says("an existing RocksDB database"));
    let after: Vec<_> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after);
    // A file.
    let f = d.path().join("file");
    std::fs::write(&f, "x").unwrap();
    db_tool(&f).expect(exits(1).says("a file, not a directory"));
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
    // A directory that is not a database.
    let nd = d.path().join("stuff");
    std::fs::create_dir(&nd).unwrap();
    std::fs::write(nd.join("notes.txt"), "keep").unwrap();
    db_tool(&nd).expect(exits(1).says("not a RocksDB database"));
    assert_eq!(std::fs::read_dir(&nd).unwrap().count(), 1);
    // Not writable.
    db_tool("/proc/ailee_reorg_db").expect(exits(1));
    db_tool(f.join("db")).expect(exits(1));
    // Check of something that is not a database.
    check_db(&nd).expect(exits(1));
    db_tool(d.path().join("none"))
        .arg("--check")
        .expect(exits(1).says("no database here"));
    assert!(!d.path().join("none").exists());
}

#[test]
fn database_missing_reputation_cf_is_refused_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("db");
    let out = Command::new("ldb")
        .arg(format!("--db={}", p.display()))
        .args(["--create_if_missing", "put", "reorg_counter", "0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    check_db(&p).expect(exits(1).says("\"reputation_cf\" is missing"));
    assert!(matches!(
        ReorgDb::open(&p, Mode::ReadWrite),
        Err(Error::Db(DbError::NotADatabase { .. }))
    ));
    let cfs = String::from_utf8(ldb(&p, &["list_column_families"]).stdout).unwrap();
    assert!(!cfs.contains("reputation_cf"), "{cfs}");
}

#[test]
fn ldb_reads_what_we_write_in_the_nodes_encodings() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("reorg_db");
    init_db(&p);
    {
        let db = ReorgDb::open(&p, Mode::ReadWrite).unwrap();
        let mut b = Batch::default();
        b.put_block(100, &hash('a'));
        b.put_block(101, &hash('b'));
        b.put_anchor(&anchor(&hash('1'), AnchorStatus::Confirmed));
        b.record_reorg(
            0,
            &ReorgEvent {
                reorg_height: 101,
                old_block_hash: hash('b'),
                new_block_hash: hash('d'),
                detected_at: 1_700_000_000_123,
                invalidated_anchors: vec![hash('1')],
            },
        );
        db.write(b).unwrap();
        db.flush().unwrap(); // into SST files, which ldb 7.8.3 must be able to read
    }
    let ssts = std::fs::read_dir(&p)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sst"))
        .count();
    assert!(ssts > 0, "the data must be in SST files for this test to mean anything");
    let scan = String::from_utf8(ldb(&p, &["scan"]).stdout).unwrap();
    let a = hash('a');
    let one = hash('1');
    let expected = format!(
        "anchor:{one} : {one}|{c}|105|3|1700000000000|0|1|{e}\n\
         block:00000000000000000100 : {a}\n\
         block:00000000000000000101 : {b}\n\
         reorg:00000000000000000000 : 101|{b}|{dd}|1700000000123|1|{one}\n\
         reorg_counter : 1\n",
        c = hash('c'),
        e = hash('e'),
        b = hash('b'),
        dd = hash('d')
    );
    assert_eq!(scan, expected);
}

#[test]
fn our_check_decodes_what_ldb_writes_and_flags_what_does_not_decode() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("reorg_db");
    init_db(&p);
    let rec = anchor(&hash('2'), AnchorStatus::Pending).encode();
    let ev = format!("7|{}|{}|1700000000000|1|{}", hash('a'), hash('b'), hash('2'));
    for (k, v) in [
        ("block:00000000000000000007", hash('a')),
        ("block:00000000000000000009", hash('b')),
        (&format!("anchor:{}", hash('2')), rec),
        ("reorg:00000000000000000000", ev),
        ("reorg_counter", "1".to_string()),
    ] {
        ldb(&p, &["put", k, &v]);
    }
    check_db(&p).expect(
        exits(0)
            .prints("Pending: 1\n")
            .prints("Blocks: 2 stored, heights 7..9, 1 heights missing: 8..8")
            .prints("Reorg events: 1 (reorg_counter 1)")
            .prints(format!("Reorg at height 7 (event 0): {} -> {}", hash('a'), hash('b'))),
    );
    let db = ReorgDb::open(&p, Mode::ReadOnly).unwrap();
    assert_eq!(db.anchor(&hash('2')).unwrap().unwrap().status, AnchorStatus::Pending);
    drop(db);
    // A record the node could not decode: exit 2, naming the key.
    ldb(&p, &["put", "block:00000000000000000010", "not-a-hash"]);
    check_db(&p).expect(exits(2).says("block:00000000000000000010"));
    // A counter that disagrees with the events: exit 2.
    ldb(&p, &["delete", "block:00000000000000000010"]);
    ldb(&p, &["put", "reorg_counter", "5"]);
    check_db(&p).expect(exits(2).says("Counter mismatch"));
    let out = db_tool(&p).args(["--check", "--json"]).expect(exits(2));
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["anchors"]["PENDING"], 1);
}

/// Holds the database's LOCK the way RocksDB does (a POSIX fcntl lock) in
/// another process, standing in for the running node.
struct Holder(std::process::Child);

impl Holder {
    fn new(db: &Path) -> Holder {
        let mut c = Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys,time\nf=open(sys.argv[1],'r+')\nfcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\nprint('locked',flush=True)\ntime.sleep(120)",
            ])
            .arg(db.join("LOCK"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.as_mut().unwrap()), &mut line).unwrap();
        assert_eq!(line, "locked\n");
        Holder(c)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn locked_database_is_refused_for_writing_and_checkable_read_only() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("reorg_db");
    init_db(&p);
    let h = Holder::new(&p);
    match ReorgDb::open(&p, Mode::ReadWrite) {
        Err(e @ Error::Db(DbError::Locked { .. })) => {
            let m = e.to_string();
            assert!(
                m.contains("node is probably running") && m.contains("Do not delete LOCK"),
                "{m}"
            );
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("opened a locked database read-write"),
    }
    check_db(&p).expect(exits(0).prints("Database OK"));
    drop(h);
    // The lock died with its holder: no stale LOCK to remove.
    assert!(ReorgDb::open(&p, Mode::ReadWrite).is_ok());
    assert!(p.join("LOCK").exists());
}

#[test]
fn help_lists_exit_codes_and_argument_errors_exit_1() {
    cmd("ailee_init_reorg_db")
        .arg("--help")
        .expect(exits(0).prints("Exit codes:"));
    cmd("ailee_init_reorg_db").expect(exits(1));
    cmd("ailee_init_reorg_db")
        .args(["--path", "x", "--recent", "3"])
        .expect(exits(1));
}
