//! The operators' runbook (docs/RUNBOOK.md) procedures that go
//! beyond a single tool, run as written with only the paths changed: the
//! scripts (init_node, get_snapshot_block, backup, restore, monitor),
//! Procedures 1, 3 and 4, the troubleshooting sections and the validation.

use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use ailee_recovery::{bash, bin, blocks, exits, root, vector, Expecting, Node};
use predicates::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// bash with the tools and the scripts on PATH, cwd = `dir`.
fn sh(dir: &Path, script: &str) -> assert_cmd::Command {
    let path = format!(
        "{}:{}:{}",
        bin("ailee_l2_verify").parent().unwrap().display(),
        root().join("scripts").display(),
        std::env::var("PATH").unwrap()
    );
    let mut c = bash(&format!("cd {}\n{script}", dir.display()));
    c.env("PATH", path);
    c
}

/// A data directory made by ailee_init_node, holding basic.dat's snapshots.
fn node_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    sh(d.path(), "ailee_init_node --data-dir ./ailee").expect(exits(0).prints("Initialised"));
    std::fs::copy(vector("basic"), d.path().join("ailee/l2_snapshots.dat")).unwrap();
    d
}

#[test]
fn init_node_creates_a_data_dir_and_never_touches_existing_state() {
    let d = node_dir();
    sh(d.path(), "ailee_init_reorg_db --path ./ailee/reorg_db --check").expect(exits(0));
    sh(d.path(), "ailee_init_node --data-dir ./ailee").expect(exits(1).says("already exists"));
    sh(d.path(), "ailee_init_node").expect(exits(1));
}

#[test]
fn procedure_1_restore_from_the_latest_backup() {
    let d = node_dir();
    sh(d.path(), "ailee_backup --data-dir ./ailee -v").expect(exits(0).prints("Backup "));
    // The newest snapshot gets corrupted.
    let f = d.path().join("ailee/l2_snapshots.dat");
    let s = std::fs::read_to_string(&f)
        .unwrap()
        .replace("balance \"peerbu11n\" 14547585979", "balance \"peerbu11n\" 14547585978");
    std::fs::write(&f, s).unwrap();
    sh(
        d.path(),
        r#"
# 2. Verify snapshot file integrity
if ! ailee_l2_verify --snapshot ./ailee/l2_snapshots.dat; then
# 3. If verification fails, restore from backup
cp ./ailee/backups/l2_snapshots_latest.dat.bak \
   ./ailee/l2_snapshots.dat
fi
ailee_l2_verify --snapshot ./ailee/l2_snapshots.dat"#,
    )
    .expect(exits(0).says("state root mismatch"))
    .stdout(predicate::str::ends_with("Verification OK.\n"));
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(vector("basic")).unwrap());
}

#[test]
fn backup_taken_while_the_node_writes_restores_to_a_verifying_state() {
    let d = tempfile::tempdir().unwrap();
    sh(d.path(), "ailee_init_node --data-dir ./ailee >/dev/null").expect(exits(0));
    let data = d.path().join("ailee");
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // The "node": holds reorg_db read-write and writes batches, appends snapshots.
    let writer = {
        let (stop, data, rounds) = (Arc::clone(&stop), data.clone(), Arc::clone(&rounds));
        std::thread::spawn(move || {
            let db = ReorgDb::open(&data.join("reorg_db"), Mode::ReadWrite).unwrap();
            let snaps = blocks("basic");
            let mut h = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut b = Batch::default();
                for _ in 0..50 {
                    b.put_block(h, &format!("{h:064x}"));
                    h += 1;
                }
                db.write(b).unwrap();
                ailee_core::append::append_block(&data.join("l2_snapshots.dat"), &snaps[(h as usize / 50) % 5])
                    .unwrap();
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            h
        })
    };
    // The backups start once the "node" is writing (it has held the database
    // and appended a snapshot), not after a guessed delay.
    let t = std::time::Instant::now();
    while rounds.load(Ordering::SeqCst) == 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "the writer never wrote"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for _ in 0..3 {
        sh(d.path(), "ailee_backup --data-dir ./ailee --no-forget").expect(exits(0));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    // Restore each backup into a fresh directory and check it.
    let out = sh(d.path(), "ailee_backup --data-dir ./ailee --list --json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sets: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sets.len(), 3);
    for (i, s) in sets.iter().enumerate() {
        sh(
            d.path(),
            &format!("mkdir r{i} && ailee_restore --data-dir ./r{i} --repo ./ailee/backups/repo --password-file ./ailee/backups/restic-password --backup {s} -v"),
        )
        .expect(exits(0).prints("Restored backup"));
        sh(d.path(), &format!("ailee_l2_verify --snapshot ./r{i}/l2_snapshots.dat --all >/dev/null && ailee_init_reorg_db --path ./r{i}/reorg_db --check | grep -q 'no gaps'"))
            .expect(exits(0));
    }
}

#[test]
fn monitor_warns_about_sizes_and_backup_age() {
    let d = node_dir();
    sh(d.path(), "ailee_monitor --data-dir ./ailee").expect(exits(1).prints("Warning: no backup"));
    sh(
        d.path(),
        "ailee_backup --data-dir ./ailee >/dev/null && ailee_monitor --data-dir ./ailee --metrics-dir ./m",
    )
    .expect(exits(0).prints("OK: snapshots 0MB"));
    // A 5001 MB snapshot file (sparse zeros, then the snapshots) and an old backup.
    sh(
        d.path(),
        "mv ./ailee/l2_snapshots.dat ./s && truncate -s 5001M ./ailee/l2_snapshots.dat && cat ./s >> ./ailee/l2_snapshots.dat && touch -d '3 hours ago' ./ailee/backups/last_backup && ailee_monitor --data-dir ./ailee",
    )
    .expect(exits(1).prints("Warning: Snapshot file is 5001MB - consider pruning").prints("is 3h old"));
}

#[test]
fn procedure_4_complete_reset_and_reanchor() {
    let d = node_dir();
    let state = d.path().join("current_state.json");
    sh(
        d.path(),
        "ailee_l2_verify --snapshot ./ailee/l2_snapshots.dat --print-state > ./current_state.json",
    )
    .expect(exits(0));
    assert!(state.exists());
    sh(
        d.path(),
        r#"
# 2. Backup current state
ts=$(date +%s)
mkdir -p ./ailee/recovery_$ts
cp -r ./ailee/l2_snapshots.dat \
      ./ailee/reorg_db \
      ./ailee/recovery_$ts/

# 3. Remove corrupted state
rm -f ./ailee/l2_snapshots.dat
rm -rf ./ailee/reorg_db

# 4. Initialize fresh state
ailee_init_node --data-dir ./ailee

# 6. Re-anchor current state
ailee_create_anchor --l2-state-file ./current_state.json --snapshot-file ./ailee/l2_snapshots.dat --db-path ./ailee/reorg_db --allow-unknown-pegout-anchors
ailee_l2_verify --snapshot ./ailee/l2_snapshots.dat
ailee_init_reorg_db --path ./ailee/reorg_db --check"#,
    )
    .expect(exits(0).prints("L2StateRoot: e655e057b347143a7d86ef3d543069df6eaa92a823110a7a9e38bda456381620").prints("Computed L2StateRoot: e655e057b347143a7d86ef3d543069df6eaa92a823110a7a9e38bda456381620").prints("Pending: 1"));
}

#[test]
fn troubleshooting_reorg_database_locked() {
    let d = node_dir();
    // A LOCK left by a process that died is not held: the runbook's `rm` is
    // safe then, and not even needed (RocksDB's lock dies with its holder).
    sh(
        d.path(),
        r#"
python3 -c "import fcntl,sys; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX)" ./ailee/reorg_db/LOCK
ailee_create_anchor --l2-state-file - --db-path ./ailee/reorg_db <<< '{}' >/dev/null
rm ./ailee/reorg_db/LOCK
ailee_init_reorg_db --path ./ailee/reorg_db --check | grep -q 'Pending: 1'"#,
    )
    .expect(exits(0));
}

#[test]
fn procedure_3_and_cross_validation_with_bitcoin() {
    let node = Node::mined(120);
    let d = node_dir();
    let rpc = format!(
        "--bitcoin-rpc {} --rpc-user {} --rpc-password {}",
        node.url(),
        node.user,
        node.password
    );
    let cli = format!(
        "{}/bitcoin-cli -regtest -rpcconnect=127.0.0.1 -rpcport={} -rpcuser={} -rpcpassword={}",
        ailee_recovery::bitcoind().parent().unwrap().display(),
        node.rpc_port,
        node.user,
        node.password
    );
    // The database gets corrupted; Procedure 3 rebuilds it.
    sh(
        d.path(),
        &format!("ailee_resync_blocks --start-height 0 --db-path ./ailee/reorg_db {rpc} >/dev/null"),
    )
    .expect(exits(0));
    sh(
        d.path(),
        "ldb --db=./ailee/reorg_db --ignore_unknown_options put block:00000000000000000007 zz >/dev/null",
    )
    .expect(exits(0));
    sh(
        d.path(),
        &format!(
            r#"
ailee_init_reorg_db --path ./ailee/reorg_db --check >/dev/null 2>&1 && exit 9
# 2. Backup corrupted database
mv ./ailee/reorg_db ./ailee/reorg_db.corrupted

# 3. Create fresh database
ailee_init_reorg_db --path ./ailee/reorg_db

# 4. Resync block hashes from Bitcoin
ailee_resync_blocks --start-height 0 \
                       --db-path ./ailee/reorg_db \
                       {rpc}
ailee_init_reorg_db --path ./ailee/reorg_db --check"#
        ),
    )
    .expect(exits(0).prints("heights 0..120, no gaps"));
    // Cross-validate: anchor the state on chain, confirm it, measure the divergence.
    sh(
        d.path(),
        &format!(
            r#"
ailee_create_anchor --from-snapshot ./ailee/l2_snapshots.dat --snapshot-file ./ailee/l2_snapshots.dat --db-path ./ailee/reorg_db --broadcast {rpc} >/dev/null
{cli} generate 7 >/dev/null
ailee_resync_blocks --start-height 100 --db-path ./ailee/reorg_db {rpc} >/dev/null
# Get latest block from snapshot
SNAPSHOT_BLOCK=$(ailee_get_snapshot_block ./ailee/l2_snapshots.dat)

# Get current Bitcoin block
BITCOIN_BLOCK=$({cli} getblockcount)

# Calculate divergence
DIVERGENCE=$((BITCOIN_BLOCK - SNAPSHOT_BLOCK))

echo "Snapshot is $DIVERGENCE blocks behind Bitcoin""#
        ),
    )
    .expect(exits(0).prints_exactly("Snapshot is 6 blocks behind Bitcoin\n"));
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn anchor_of(heading: &str) -> String {
    let mut s = String::new();
    for c in heading.trim().chars() {
        if c.is_alphanumeric() || c == '-' || c == '_' {
            s.extend(c.to_lowercase());
        } else if c == ' ' {
            s.push('-');
        }
    }
    s
}

/// The headings of a Markdown file (outside fenced code), as anchors.
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut v = Vec::new();
    for l in text.lines() {
        if l.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && l.starts_with('#') {
            v.push(anchor_of(l.trim_start_matches('#')));
        }
    }
    v
}

/// The operators' documents are reachable from the README and from each
/// other: every relative link names a file of the repository, and every
/// `#anchor` a heading in it. The README stays a first page: under 300
/// lines, opening with the two commands (the drill and the test suite).
#[test]
fn the_readme_opens_with_the_two_commands_and_every_document_link_resolves() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.lines().count() < 300,
        "README.md has {} lines",
        readme.lines().count()
    );
    let first_block: Vec<String> = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .collect();
    assert_eq!(first_block, ["scripts/test_recovery.sh --mode all", "scripts/test.sh"]);
    let mut files = vec![
        root().join("README.md"),
        root().join("RELIABILITY.md"),
        root().join("BENCHMARKS.md"),
    ];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        files.push(e.unwrap().path());
    }
    let mut checked = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for part in text.split("](").skip(1) {
            let target = &part[..part.find(')').unwrap()];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if path.is_empty() {
                f.clone()
            } else {
                f.parent().unwrap().join(path)
            };
            assert!(file.exists(), "{}: link to {target}: no such file", f.display());
            if !anchor.is_empty() {
                let heads = anchors(&std::fs::read_to_string(&file).unwrap());
                assert!(
                    heads.iter().any(|h| h == anchor),
                    "{}: link to {target}: no such heading in {}",
                    f.display(),
                    file.display()
                );
            }
            checked += 1;
        }
    }
    // The README links every guide.
    for doc in [
        "docs/RUNBOOK.md",
        "docs/GUIDE.md",
        "docs/BACKUP.md",
        "docs/MONITORING.md",
        "docs/BITCOIN.md",
        "docs/ARCHITECTURE.md",
        "RELIABILITY.md",
    ] {
        assert!(readme.contains(&format!("]({doc})")), "README does not link {doc}");
    }
    assert!(checked > 20, "{checked} links");
}
