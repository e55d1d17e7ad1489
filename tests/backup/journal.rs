//! Issue 22, item 6: the journal is settled only under the lock.
//!
//! A restore SIGKILLed (power cut) inside its swap window, after one or both
//! `renameat2` exchanges; then the node starts (systemd at boot): RocksDB
//! takes `reorg_db/LOCK` and writes, and the node appends a snapshot to
//! `l2_snapshots.dat`; later `ailee_restore` is run again. The rerun used to
//! settle the old journal before taking the lock: it acted under the running
//! node, and the appended snapshot was deleted with the stage.

use super::*;

const JOURNAL: &str = ".ailee_restore.journal";

/// Where to SIGKILL a restore inside its swap window, found by tracing one
/// full run of it (strace without `-f`, as [`restore_injected`] counts):
/// (the `renameat2` ordinal of the second exchange — killed on entering it,
/// only the first exchange is done — and the ordinal of the first `fsync`
/// after the second exchange, where both are done and nothing is committed).
fn swap_points(f: &Fixture, pristine: &Path) -> (usize, usize) {
    let trace = f.dir().join("swap.trace");
    let st = f
        .strace(
            &["-qq", "-e", "trace=renameat2,fsync", "-o", trace.to_str().unwrap()],
            "ailee_restore",
        )
        .status()
        .expect("strace (Debian package strace)");
    assert_eq!(st.code(), Some(0), "the traced restore: {st:?}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let (mut renames, mut fsyncs, mut exchanges) = (0, 0, 0);
    let mut second = None;
    for line in text.lines() {
        if line.starts_with("renameat2(") {
            renames += 1;
            if line.contains("RENAME_EXCHANGE") {
                exchanges += 1;
                if exchanges == 2 {
                    second = Some(renames);
                }
            }
        } else if line.starts_with("fsync(") {
            fsyncs += 1;
            if let Some(s) = second {
                reset(f, pristine);
                return (s, fsyncs);
            }
        }
    }
    panic!("no two exchanges followed by an fsync in the trace:\n{text}");
}

/// The data directory as a restore run or a settle could change it.
#[derive(Debug, PartialEq)]
struct Everything {
    names: Vec<String>,
    live: State,
    stage: Option<State>,
    journal: Option<String>,
}

fn everything(d: &Path) -> Everything {
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let stage = names.iter().find(|n| n.starts_with(".ailee-restore."));
    Everything {
        live: state_of(d),
        stage: stage.map(|s| state_of(&d.join(s))),
        journal: std::fs::read_to_string(d.join(JOURNAL)).ok(),
        names,
    }
}

/// The path after "kept in " in the note of `stderr` about `item`.
fn kept_path(stderr: &str, item: &str) -> Option<PathBuf> {
    let note = &stderr[stderr.find(&format!("the restored {item} "))?..];
    let path = note[note.find("kept in ")? + "kept in ".len()..]
        .split([';', '\n'])
        .next()?;
    Some(PathBuf::from(path.trim()))
}

fn backup_ids(f: &Fixture) -> Vec<String> {
    f.list().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// The hash the "node" writes at this height into the live database.
const NODE_HEIGHT: u64 = 1000;

fn node_block(db: &Path) -> Option<String> {
    ReorgDb::open(db, Mode::ReadOnly)
        .unwrap()
        .block_hash(NODE_HEIGHT)
        .unwrap()
}

/// A restore killed after `exchanges` exchanges (1 or 2); the node starts,
/// writes and appends; the rerun is refused while it runs; after it stops,
/// the rerun rolls back without deleting what the node wrote.
fn node_writes_after_a_killed_swap(exchanges: usize) {
    let (f, old, backup) = attack_fixture();
    let ids = backup_ids(&f);
    let pristine = pristine_copy(&f);
    let (second_exchange, fsync_after) = swap_points(&f, &pristine);
    let st = if exchanges == 1 {
        restore_injected(&f, "renameat2", "signal=SIGKILL", second_exchange)
    } else {
        restore_injected(&f, "fsync", "signal=SIGKILL", fsync_after)
    };
    assert_eq!(st.signal(), Some(9), "{st:?}");
    eprintln!("killed after {exchanges} exchange(s): renameat2 #{second_exchange} / fsync #{fsync_after}");
    let d = f.data();
    // Killed exactly there: the journal says "swap", the first item (or
    // both) is the restored one.
    let killed = f.state();
    assert_eq!(killed.l2, backup.l2, "l2_snapshots.dat is the restored one");
    let want_db = if exchanges == 2 { &backup.db } else { &old.db };
    assert_eq!(&killed.db, want_db, "after {exchanges} exchange(s)");
    assert!(std::fs::read_to_string(d.join(JOURNAL))
        .unwrap()
        .contains("\nphase swap\n"));

    // The node starts at boot: RocksDB takes reorg_db/LOCK and writes; the
    // node appends its next snapshot to l2_snapshots.dat.
    let bl = blocks("basic");
    let node = ReorgDb::open(&d.join("reorg_db"), Mode::ReadWrite).unwrap();
    let mut b = Batch::default();
    b.put_block(NODE_HEIGHT, &"ab".repeat(32));
    node.write(b).unwrap();
    node.flush().unwrap();
    let appended = bl[3].clone();
    let mut l2 = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("l2_snapshots.dat"))
        .unwrap();
    std::io::Write::write_all(&mut l2, &appended).unwrap();
    l2.sync_all().unwrap();
    drop(l2);
    let node_l2 = [backup.l2.clone().unwrap(), appended].concat();

    // While it runs, the rerun is refused as a fresh restore is, and touches
    // nothing: the journal and the stage stay.
    let before = everything(&d);
    assert!(before.stage.is_some() && before.journal.is_some(), "{:?}", before.names);
    let lock_msg = format!(
        "{}: the database is locked by another process",
        d.join("reorg_db").display()
    );
    f.restore(&[]).code(1).stdout("").stderr(contains(lock_msg.as_str()));
    assert_eq!(everything(&d), before, "the refused rerun changed the data directory");
    assert!(recovery_dirs(&d).is_empty());
    assert_eq!(std::fs::read(d.join("l2_snapshots.dat")).unwrap(), node_l2);

    // The node stops; the rerun settles, then restores.
    drop(node);
    let out = f.cmd("ailee_restore").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    eprintln!("the rerun after the node stopped: exit 0, stderr:\n{stderr}");
    assert!(stderr.contains("rolled back an interrupted restore"), "{stderr}");
    // The appended snapshot is in the file the message names.
    let kept = kept_path(&stderr, "l2_snapshots.dat").unwrap_or_else(|| panic!("no kept file named: {stderr}"));
    assert!(kept.starts_with(&d), "{}", kept.display());
    assert_eq!(std::fs::read(&kept).unwrap(), node_l2, "{}", kept.display());
    // What the node wrote into reorg_db is kept too.
    match kept_path(&stderr, "reorg_db") {
        Some(db) => {
            assert_eq!(exchanges, 2, "the restored reorg_db was never live: {stderr}");
            assert!(db.starts_with(&d), "{}", db.display());
            assert_eq!(node_block(&db), Some("ab".repeat(32)), "{}", db.display());
        }
        None => {
            // The node wrote into the old database, still live: it is the
            // previous state the restore kept.
            assert_eq!(exchanges, 1, "the node's reorg_db is not named: {stderr}");
            let rec = recovery_dirs(&d);
            assert!(
                rec.iter()
                    .filter(|r| r.join("reorg_db").is_dir())
                    .any(|r| node_block(&r.join("reorg_db")).is_some()),
                "the node's writes to reorg_db are lost: {rec:?}"
            );
        }
    }
    // The backup is restored; the state the killed restore found is kept.
    assert_eq!(f.state(), backup);
    assert!(
        recovery_dirs(&d).iter().any(|r| state_of(r).l2 == old.l2),
        "the old l2_snapshots.dat was lost"
    );
    assert!(hidden_leftovers(&d).is_empty(), "{:?}", hidden_leftovers(&d));
    // The restic history is intact.
    assert_eq!(backup_ids(&f), ids);
    let o = f.restic(&["check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Nothing left to settle.
    f.restore(&[]).code(0).stdout("").stderr("");
}

/// Killed after the first exchange (the restored l2_snapshots.dat is live,
/// the old reorg_db too); the node appends to the restored file. (Used to:
/// the refused rerun, exit 1, had already deleted the appended snapshot.)
#[test]
fn killed_after_the_first_exchange_the_node_appends_and_nothing_is_lost() {
    node_writes_after_a_killed_swap(1);
}

/// Killed after both exchanges, uncommitted; the node opens the restored
/// reorg_db and appends. (Used to: exit 0 under the running node, its LOCK
/// in the deleted stage, the appended snapshot gone.)
#[test]
fn killed_after_both_exchanges_the_node_writes_and_nothing_is_lost() {
    node_writes_after_a_killed_swap(2);
}

/// A journal of the previous format (v1, no fingerprints) is still settled,
/// and its staged items, which may have changed, are kept, never deleted.
#[test]
fn a_v1_journal_keeps_its_staged_items() {
    let (f, old, backup) = attack_fixture();
    let pristine = pristine_copy(&f);
    let (_, fsync_after) = swap_points(&f, &pristine);
    let st = restore_injected(&f, "fsync", "signal=SIGKILL", fsync_after);
    assert_eq!(st.signal(), Some(9), "{st:?}");
    let d = f.data();
    let j = std::fs::read_to_string(d.join(JOURNAL)).unwrap();
    let v1: String = j
        .replace("journal v2", "journal v1")
        .lines()
        .filter(|l| !l.starts_with("seen "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(v1.starts_with("ailee_restore journal v1\nphase swap\n"), "{v1}");
    std::fs::write(d.join(JOURNAL), v1).unwrap();
    let out = f.cmd("ailee_restore").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("predates fingerprints"), "{stderr}");
    let l2 = kept_path(&stderr, "l2_snapshots.dat").expect(&stderr);
    assert_eq!(std::fs::read(&l2).ok(), backup.l2);
    let db = kept_path(&stderr, "reorg_db").expect(&stderr);
    assert_eq!(tree(&db), backup.db);
    assert_eq!(f.state(), backup);
    assert!(recovery_dirs(&d).iter().any(|r| state_of(r) == old));
    assert!(hidden_leftovers(&d).is_empty());
}
