//! `ailee_resync_blocks` against the real regtest node: fresh resync, reorgs
//! at their exact fork point, deep reorgs, kills and reruns, faults.

use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use ailee_recovery::{check_db, cmd, exits, init_db, proxy, resync_cmd, temp_db, Expecting, Node};
use predicates::prelude::*;
use predicates::str::contains;
use std::path::Path;

fn stored(db: &Path) -> Vec<(u64, String)> {
    let d = ReorgDb::open(db, Mode::ReadOnly).unwrap();
    d.blocks_from(0).map(Result::unwrap).collect()
}

fn anchor_at(hash: char, height: u64, status: AnchorStatus) -> AnchorRecord {
    AnchorRecord {
        anchor_hash: hash.to_string().repeat(64),
        bitcoin_tx_id: "f".repeat(64),
        bitcoin_height: height,
        confirmations: 1,
        broadcast_time: 1,
        retry_count: 0,
        status,
        l2_state_root: "e".repeat(64),
    }
}

fn put_anchors(db: &Path, anchors: &[AnchorRecord]) {
    let d = ReorgDb::open(db, Mode::ReadWrite).unwrap();
    let mut b = Batch::default();
    for a in anchors {
        b.put_anchor(a);
    }
    d.write(b).unwrap();
}

fn assert_matches_node(node: &Node, db: &Path) {
    let s = stored(db);
    let tip = node.count();
    assert_eq!(s.last().map(|x| x.0), Some(tip));
    for (h, hash) in &s {
        assert_eq!(*hash, node.hash(*h), "height {h}");
    }
}

#[test]
fn fresh_resync_matches_getblockhash_at_every_height() {
    let node = Node::mined(250);
    let (_d, db) = temp_db();
    node.resync(&db, 0).args(["--batch-size", "64"]).expect(
        exits(0)
            .prints("Resync 0..250")
            .prints("251 heights checked, 251 block hashes written")
            .prints("No reorg.")
            .prints_not(&node.password)
            .says_not(&node.password),
    );
    let s = stored(&db);
    assert_eq!(s.len(), 251);
    assert_matches_node(&node, &db);
    // A second run changes nothing.
    node.resync(&db, 0).expect(exits(0).prints("0 block hashes written"));
    check_db(&db).expect(exits(0).prints("heights 0..250, no gaps"));
}

#[test]
fn reorg_is_recorded_at_the_exact_fork_and_invalidates_anchors_at_or_above_it() {
    let node = Node::mined(120);
    let (_d, db) = node.synced_db();
    put_anchors(
        &db,
        &[
            anchor_at('1', 100, AnchorStatus::Confirmed),
            anchor_at('2', 117, AnchorStatus::Pending),
            anchor_at('3', 118, AnchorStatus::Confirmed),
            anchor_at('4', 110, AnchorStatus::Pending),
        ],
    );
    let old117 = node.hash(117);
    node.cli(&["invalidateblock", &old117]);
    node.generate(5); // new tip 121, fork at 117, old tip 120: depth 4
    let new117 = node.hash(117);
    assert_ne!(old117, new117);
    // Start above the fork: the tool must walk down to it.
    node.resync(&db, 119).expect(exits(0).prints(format!(
        "Reorg at height 117 (depth 4): old {old117} -> new {new117}; event 0; 2 anchor(s) invalidated"
    )));
    assert_matches_node(&node, &db);
    let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
    let ev = r.reorg_events().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1.reorg_height, 117);
    assert_eq!(ev[0].1.old_block_hash, old117);
    assert_eq!(ev[0].1.new_block_hash, new117);
    assert_eq!(ev[0].1.invalidated_anchors, vec!["2".repeat(64), "3".repeat(64)]);
    assert_eq!(r.counter().unwrap(), Some(1));
    let a = |c: char| r.anchor(&c.to_string().repeat(64)).unwrap().unwrap();
    assert_eq!(
        (a('2').status, a('2').confirmations),
        (AnchorStatus::InvalidatedReorg, 0)
    );
    assert_eq!(
        (a('3').status, a('3').confirmations),
        (AnchorStatus::InvalidatedReorg, 0)
    );
    // Below the fork: kept, confirmations refreshed (tip 121), PENDING promoted at 6.
    assert_eq!((a('1').status, a('1').confirmations), (AnchorStatus::Confirmed, 22));
    assert_eq!((a('4').status, a('4').confirmations), (AnchorStatus::Confirmed, 12));
    drop(r);
    check_db(&db).expect(exits(0).prints("Invalidated: 2"));
}

#[test]
fn reorg_deeper_than_the_threshold_exits_3_after_recording_it() {
    let node = Node::mined(60);
    let (_d, db) = node.synced_db();
    node.fork(50, 12);
    node.resync(&db, 40)
        .expect(exits(3).prints("Reorg at height 50 (depth 11)").says("DEEP REORG"));
    assert_matches_node(&node, &db);
    // The same reorg within a larger threshold is not deep.
    let d2 = tempfile::tempdir().unwrap();
    let db2 = d2.path().join("reorg_db");
    init_db(&db2);
    node.resync(&db2, 0).expect(exits(0));
    node.fork(55, 3);
    node.resync(&db2, 0)
        .args(["--confirmations", "20"])
        .expect(exits(0).prints("Reorg at height 55"));
}

#[test]
fn shorter_chain_with_equal_hashes_is_behind_not_a_reorg() {
    // A chain that ends below our stored heights, with the same hashes up to
    // its tip, is a node that is behind: nothing deleted (issue 15).
    let node = Node::mined(30);
    let (_d, db) = node.synced_db();
    let before = stored(&db);
    node.cli(&["invalidateblock", &node.hash(28)]);
    node.resync(&db, 20)
        .expect(exits(1).says("node is behind: tip 27, stored up to 30"));
    assert_eq!(stored(&db), before);
    // Once the node's chain has a hash that differs at a height it has, it is a reorg.
    node.generate(4);
    node.resync(&db, 20)
        .expect(exits(0).prints("Reorg at height 28 (depth 3)").prints("3 deleted"));
    assert_matches_node(&node, &db);
}

#[test]
fn dry_run_reports_and_writes_nothing() {
    let node = Node::mined(20);
    let (_d, db) = temp_db();
    node.resync(&db, 0)
        .arg("--dry-run")
        .expect(exits(0).prints("21 block hashes would be written"));
    assert!(stored(&db).is_empty());
}

#[test]
fn killed_resync_reruns_to_a_consistent_complete_database() {
    let node = Node::mined(1500);
    let (_d, db) = node.synced_db();
    // A reorg to detect, then kill the resync at several points.
    // Fork at 1420: 81 deep, within --max-reorg-depth (a deeper one is refused).
    node.fork(1420, 110);
    // Killed while it waits for the node's reply to its 1st, 20th and 120th
    // batch of block hashes (held by a proxy in front of the real node: the
    // point is chosen, not guessed with a sleep). Kills inside the writes
    // themselves, at every syscall, are tests/crash.rs's.
    for nth in [1usize, 20, 120] {
        let px = proxy(node.rpc_port, nth);
        let mut c = std::process::Command::new(ailee_recovery::bin("ailee_resync_blocks"));
        c.args(["--start-height", "0", "--batch-size", "10", "--db-path"])
            .arg(&db)
            .args(node.rpc_args_at(&px.url()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        px.held
            .recv_timeout(std::time::Duration::from_secs(300))
            .expect("the proxy holds the batch");
        child.kill().unwrap();
        child.wait().unwrap();
        drop(px.release);
        // After every kill the database opens and every record decodes.
        check_db(&db).expect(exits(0));
        // Stored hashes never disagree with the chain below a gap-free prefix.
        let s = stored(&db);
        let sample: Vec<_> = s.iter().filter(|(h, _)| h % 97 == 0).collect();
        for (h, hash) in sample {
            if *h < 1420 {
                assert_eq!(*hash, node.hash(*h));
            }
        }
    }
    // The killed runs were all still reading (nothing is written before the
    // comparison is done): the first full rerun finds the reorg (81 deep:
    // exit 3); the next one has nothing left to do.
    node.resync(&db, 0).expect(exits(3));
    node.resync(&db, 0).expect(exits(0).prints("No reorg."));
    assert_matches_node(&node, &db);
    let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
    let ev = r.reorg_events().unwrap();
    assert_eq!(ev.len(), 1, "one event for the one fork, whatever the kills: {ev:?}");
    assert_eq!(ev[0].1.reorg_height, 1420);
}

#[test]
fn faults_exit_1_with_a_clear_message_and_no_secret() {
    let mut node = Node::mined(10);
    let (d, db) = temp_db();
    // Wrong password.
    resync_cmd(&db)
        .args([
            "--bitcoin-rpc",
            &node.url(),
            "--rpc-user",
            "ailee",
            "--rpc-password",
            "wrong-pw-123",
        ])
        .expect(exits(1).says("authentication refused").says_not("wrong-pw-123"));
    // Credentials in the URL are accepted and never shown.
    let url = format!("http://{}:{}@127.0.0.1:{}", node.user, node.password, node.rpc_port);
    resync_cmd(&db)
        .args(["--bitcoin-rpc", &url])
        .expect(exits(0).prints_not(&node.password));
    // Credentials from the environment.
    resync_cmd(&db)
        .args(["--bitcoin-rpc", &node.url()])
        .env("AILEE_RPC_USER", &node.user)
        .env("AILEE_RPC_PASSWORD", &node.password)
        .expect(exits(0));
    let before = stored(&db);
    // Wrong port / node not running.
    node.stop();
    node.resync(&db, 0)
        .expect(exits(1).says("Connection refused").says_not(&node.password));
    assert_eq!(stored(&db), before);
    // Not a database.
    node.resync(&d.path().join("nope"), 0)
        .expect(exits(1).says("no database here"));
    // Argument errors.
    cmd("ailee_resync_blocks")
        .args(["--start-height", "x"])
        .expect(exits(1));
    cmd("ailee_resync_blocks")
        .arg("--help")
        .expect(exits(0).prints("Exit codes:").prints("deep reorg"));
}

#[test]
fn database_held_by_the_node_is_refused() {
    let node = Node::mined(5);
    let (_d, db) = temp_db();
    let _held = ReorgDb::open(&db, Mode::ReadWrite).unwrap(); // stands in for the running node
    node.resync(&db, 0)
        .expect(exits(1).says("the AILEE node is probably running"));
}

#[test]
fn node_stopping_mid_run_exits_1_and_the_database_stays_consistent() {
    let mut node = Node::mined(1500);
    let px = proxy(node.rpc_port, 30);
    let (_d, db) = temp_db();
    let mut c = std::process::Command::new(ailee_recovery::bin("ailee_resync_blocks"));
    c.args([
        "--start-height",
        "0",
        "--batch-size",
        "5",
        "--rpc-timeout",
        "5",
        "--db-path",
    ])
    .arg(&db)
    .args(node.rpc_args_at(&px.url()))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    // Stopped while the resync waits for its 30th batch (held by a proxy in
    // front of the node, then let through to a node that is gone).
    px.held
        .recv_timeout(std::time::Duration::from_secs(300))
        .expect("the proxy holds the batch");
    node.stop();
    px.release.send(()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Bitcoin RPC"), "{err}");
    assert!(!err.contains(&node.password));
    // What was written is a gap-free prefix of the chain.
    check_db(&db)
        .expect(exits(0))
        .stdout(contains("no gaps").or(contains("none stored")));
}
