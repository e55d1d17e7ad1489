//! Bitcoin as the source of truth, against the real regtest node: a node that
//! lags is not a reorg, another chain is refused before any write, the chain
//! moving in the middle of a resync, anchors re-confirmed and rebuilt from
//! the chain (`--anchors-from`, runbook Procedure 3), and a snapshot's own
//! anchor proven on Bitcoin (`ailee_l2_verify --bitcoin-rpc`).

use ailee_core::records::{AnchorRecord, AnchorStatus, ReorgEvent};
use ailee_core::rpc::{Auth, Rpc, RpcConfig};
use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use ailee_recovery::{
    bin, cmd, data_dir, exits, init_db, proxy, proxy_on, rpc_result, serve, temp_db, verify_file, Expecting, Node,
    Proxy,
};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

fn verify(node: &Node, file: &Path, db: &Path) -> assert_cmd::Command {
    let mut c = cmd("ailee_l2_verify");
    c.arg("--snapshot")
        .arg(file)
        .arg("--reorg-db")
        .arg(db)
        .args(node.rpc_args());
    c
}

fn rpc(node: &Node) -> Rpc {
    Rpc::connect(&RpcConfig {
        url: node.url(),
        auth: Auth::UserPass {
            user: node.user.clone(),
            password: node.password.clone(),
        },
        timeout: Duration::from_secs(60),
    })
    .unwrap()
}

/// `ldb scan` of the default column family: the database's content as the
/// node's own RocksDB tools see it.
fn ldb_scan(db: &Path) -> String {
    let out = Command::new("ldb")
        .arg(format!("--db={}", db.display()))
        .args(["--ignore_unknown_options", "scan"])
        .output()
        .expect("ldb (Debian rocksdb-tools)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn ldb_put(db: &Path, k: &str, v: &str) {
    let out = Command::new("ldb")
        .arg(format!("--db={}", db.display()))
        .args(["--ignore_unknown_options", "put", k, v])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Gives `to` the blocks `lo..=hi` of `from` (raw, `submitblock`): the same chain.
fn feed(from: &Node, to: &Node, lo: u64, hi: u64) {
    let (a, b) = (rpc(from), rpc(to));
    let hashes = a.block_hashes(lo..=hi).unwrap();
    for raw in a.raw_blocks(&hashes).unwrap() {
        b.call("submitblock", &[ailee_core::root::hex(&raw).into()]).unwrap();
    }
    assert_eq!(to.count(), hi);
    assert_eq!(to.hash(hi), from.hash(hi));
}

/// Anchors a one-balance state: appended to `file`, recorded in `db`,
/// broadcast unless `broadcast` is false. Returns (anchor hash, txid).
fn anchor(node: &Node, file: &Path, db: &Path, balance: u64, meta: &str, broadcast: bool) -> (String, String) {
    let mut c = cmd("ailee_create_anchor");
    c.args([
        "--l2-state-file",
        "-",
        "--json",
        "--recovery-metadata",
        meta,
        "--snapshot-file",
    ])
    .arg(file)
    .arg("--db-path")
    .arg(db)
    .write_stdin(format!(
        r#"{{"ledger": {{"balances": [{{"peerId": "p1", "balance": {balance}}}]}}}}"#
    ));
    if broadcast {
        // The operator's anchors spend from the anchoring identity in the data directory.
        node.give_identity(db.parent().expect("data directory"));
        c.arg("--broadcast").args(node.rpc_args());
    }
    let out = c.expect(exits(0));
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    (
        v["hash"].as_str().unwrap().to_string(),
        v["txid"].as_str().unwrap_or_default().to_string(),
    )
}

fn record(db: &Path, hash: &str) -> Option<AnchorRecord> {
    ReorgDb::open(db, Mode::ReadOnly).unwrap().anchor(hash).unwrap()
}

fn put(db: &Path, f: impl FnOnce(&mut Batch)) {
    let d = ReorgDb::open(db, Mode::ReadWrite).unwrap();
    let mut b = Batch::default();
    f(&mut b);
    d.write(b).unwrap();
}

fn stored(db: &Path) -> Vec<(u64, String)> {
    let d = ReorgDb::open(db, Mode::ReadOnly).unwrap();
    d.blocks_from(0).map(Result::unwrap).collect()
}

fn assert_matches_node(node: &Node, db: &Path) {
    let s = stored(db);
    assert_eq!(s.last().map(|x| x.0), Some(node.count()));
    let hashes = rpc(node).block_hashes(0..=node.count()).unwrap();
    for (h, hash) in &s {
        assert_eq!(
            *hash, hashes[*h as usize],
            "stored hash at height {h} differs from the node's"
        );
    }
}

/// The block holding `txid` on the node's best chain, by height: checks
/// that `height` is where the node has it.
fn assert_mined_at(node: &Node, txid: &str, height: u64) {
    let tx: serde_json::Value = serde_json::from_str(&node.cli(&["getrawtransaction", txid, "1"])).unwrap();
    assert_eq!(tx["blockhash"].as_str(), Some(node.hash(height).as_str()), "{txid}");
}

/// `ailee_resync_blocks --wait` (every second, up to 600 s) into `db`, with
/// `rpc`, spawned; its stderr lines come on the receiver.
fn resync_waiting(db: &Path, rpc: Vec<String>) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(bin("ailee_resync_blocks"))
        .args(["--start-height", "0", "--db-path"])
        .arg(db)
        .args(["--wait", "--wait-interval", "1", "--wait-timeout", "600"])
        .args(rpc)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// The exit status and stdout of a child (bounded: 600 s).
fn finish(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    let status = wait_exit(child, Duration::from_secs(600));
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (status, out)
}

/// Waits for a child to exit, bounded (the bound is a hang detector, not a timing assumption).
fn wait_exit(child: &mut std::process::Child, bound: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t0.elapsed() < bound, "process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lagging_node_is_not_a_reorg_nothing_changes_and_wait_returns_once_it_caught_up() {
    let n1 = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let (hash, _) = anchor(&n1, &f, &db, 5, "lag", true);
    n1.generate(127); // tip 228, the anchor at 102
    n1.resync(&db, 0).expect(exits(0).prints("1 confirmed"));
    let confirmed = record(&db, &hash).unwrap();
    assert_eq!(
        (confirmed.status, confirmed.bitcoin_height),
        (AnchorStatus::Confirmed, 102)
    );
    // The second node has the first 150 blocks of the same chain: it is behind.
    let n2 = Node::start();
    feed(&n1, &n2, 1, 150);
    let before = ldb_scan(&db);
    for start in [0, 200] {
        n2.resync(&db, start).expect(
            exits(1)
                .prints_nothing()
                .says("node is behind: tip 150, stored up to 228")
                .says("not a reorg"),
        );
        assert_eq!(ldb_scan(&db), before, "start {start}: the database must be unchanged");
    }
    // --json says it in one document on stdout.
    n2.resync(&db, 0)
        .arg("--json")
        .expect(exits(1).prints(r#""behind":{"initial_block_download":false,"stored_tip":228,"tip":150}"#));
    assert_eq!(ldb_scan(&db), before);
    // --wait polls until the node has caught up, then resyncs.
    let (mut child, rx) = resync_waiting(&db, n2.rpc_args());
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("resync --wait reports that it waits");
    assert!(
        line.contains("node is behind: tip 150, stored up to 228") && line.contains("waiting"),
        "{line}"
    );
    assert!(child.try_wait().unwrap().is_none(), "still waiting");
    assert_eq!(ldb_scan(&db), before);
    feed(&n1, &n2, 151, 228);
    let (status, out) = finish(&mut child);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("No reorg."), "{out}");
    assert_eq!(record(&db, &hash), Some(confirmed));
    assert_matches_node(&n2, &db);
    // A timeout that runs out exits 1, still with nothing changed.
    let n3 = Node::start();
    feed(&n1, &n3, 1, 20);
    let before = ldb_scan(&db);
    n3.resync(&db, 0)
        .args(["--wait", "--wait-interval", "1", "--wait-timeout", "1"])
        .expect(exits(1).says("Gave up waiting"));
    assert_eq!(ldb_scan(&db), before);
}

#[test]
fn node_on_another_chain_is_refused_before_any_write() {
    let n1 = Node::mined(228);
    let (_d, db) = n1.synced_db();
    // A node that mined its own 150 blocks: the fork is at height 1, 228 deep.
    let n2 = Node::mined(150);
    let before = ldb_scan(&db);
    for start in [0, 140, 200] {
        n2.resync(&db, start).expect(
            exits(1)
                .prints_nothing()
                .says("Refused")
                .says("--max-reorg-depth 100")
                .says("Nothing was written"),
        );
        assert_eq!(ldb_scan(&db), before, "start {start}");
    }
    // The same node above the tip of a database it shares nothing with.
    let n3 = Node::mined(240);
    n3.resync(&db, 0).expect(exits(1).says("Refused"));
    assert_eq!(ldb_scan(&db), before);
    // A genesis block that is not the node's: refused however shallow.
    put(&db, |b| b.put_block(0, &"ab".repeat(32)));
    let before = ldb_scan(&db);
    n1.resync(&db, 100)
        .expect(exits(1).says("genesis").says("another chain"));
    assert_eq!(ldb_scan(&db), before);
}

#[test]
fn reorg_undone_by_reconsiderblock_reconfirms_the_invalidated_anchor() {
    let n = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let (hash, txid) = anchor(&n, &f, &db, 7, "undo", true);
    n.generate(10); // anchor at 102, tip 111
    n.resync(&db, 0).expect(exits(0));
    assert_eq!(record(&db, &hash).unwrap().status, AnchorStatus::Confirmed);
    let old102 = n.hash(102);
    n.cli(&["invalidateblock", &old102]);
    n.generate(3);
    n.resync(&db, 90).expect(
        exits(3)
            .prints("Reorg at height 102 (depth 10)")
            .prints(format!("1 anchor(s) invalidated: {hash}")),
    );
    assert_eq!(record(&db, &hash).unwrap().status, AnchorStatus::InvalidatedReorg);
    // The old branch is longer: the node switches back to it.
    n.cli(&["reconsiderblock", &old102]);
    assert_eq!(n.hash(102), old102);
    n.resync(&db, 90).expect(
        exits(0)
            .prints("Reorg at height 102 (depth 3)")
            .prints("1 re-confirmed"),
    );
    let a = record(&db, &hash).unwrap();
    assert_eq!(
        (a.status, a.bitcoin_height, a.confirmations, a.bitcoin_tx_id.as_str()),
        (AnchorStatus::Confirmed, 102, 10, txid.as_str())
    );
    assert_mined_at(&n, &txid, 102);
    assert_matches_node(&n, &db);
}

#[test]
fn upper_case_stored_hashes_are_the_same_blocks_not_a_reorg() {
    let n = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let (hash, _) = anchor(&n, &f, &db, 3, "case", true);
    n.generate(20);
    n.resync(&db, 0).expect(exits(0));
    let upper: Vec<(u64, String)> = stored(&db)
        .into_iter()
        .map(|(h, s)| (h, s.to_ascii_uppercase()))
        .collect();
    put(&db, |b| upper.iter().for_each(|(h, s)| b.put_block(*h, s)));
    n.resync(&db, 0)
        .expect(exits(0).prints("No reorg.").prints("122 block hashes written"));
    let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
    assert!(r.reorg_events().unwrap().is_empty());
    assert_eq!(r.anchor(&hash).unwrap().unwrap().status, AnchorStatus::Confirmed);
    drop(r);
    // Written back in the node's case.
    assert_matches_node(&n, &db);
}

#[test]
fn pending_anchor_the_node_does_not_know_is_named_and_the_others_still_confirm() {
    let n = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let (good, _) = anchor(&n, &f, &db, 1, "known", true);
    let lost = AnchorRecord {
        anchor_hash: "ab".repeat(32),
        bitcoin_tx_id: "cd".repeat(32),
        bitcoin_height: 0,
        confirmations: 0,
        broadcast_time: 1,
        retry_count: 0,
        status: AnchorStatus::Pending,
        l2_state_root: "ef".repeat(32),
    };
    put(&db, |b| b.put_anchor(&lost));
    n.generate(7);
    n.resync(&db, 0).expect(
        exits(1)
            .prints("1 confirmed")
            .prints("1 PENDING with a txid the node does not know")
            .says(format!("PENDING anchor {}", lost.anchor_hash))
            .says(&lost.bitcoin_tx_id),
    );
    assert_eq!(record(&db, &good).unwrap().status, AnchorStatus::Confirmed);
    assert_eq!(record(&db, &lost.anchor_hash), Some(lost));
    assert_matches_node(&n, &db);
}

fn event(h: u64) -> ReorgEvent {
    ReorgEvent {
        reorg_height: h,
        old_block_hash: "aa".repeat(32),
        new_block_hash: "bb".repeat(32),
        detected_at: 1,
        invalidated_anchors: vec![],
    }
}

#[test]
fn new_reorg_events_go_past_existing_ones_and_the_counter_never_wraps() {
    let n = Node::mined(30);
    let (_d, db) = n.synced_db();
    // reorg:0 exists but the counter says 0: event 0 must not be overwritten.
    put(&db, |b| b.record_reorg(0, &event(5)));
    ldb_put(&db, "reorg_counter", "0");
    let reorg = |at: u64| {
        n.fork(at, 2);
    };
    reorg(29);
    n.resync(&db, 20).expect(exits(0).prints("event 1;"));
    {
        let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
        let ev = r.reorg_events().unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0], (0, event(5)));
        assert_eq!(ev[1].1.reorg_height, 29);
        assert_eq!(r.counter().unwrap(), Some(2));
    }
    // A counter one below the top: the last id there is.
    ldb_put(&db, "reorg_counter", &(u64::MAX - 1).to_string());
    reorg(30);
    n.resync(&db, 20)
        .expect(exits(0).prints(format!("event {};", u64::MAX - 1)));
    assert_eq!(
        ReorgDb::open(&db, Mode::ReadOnly).unwrap().counter().unwrap(),
        Some(u64::MAX)
    );
    // Exhausted: refused, nothing written (never a wrap to 0).
    reorg(31);
    let before = ldb_scan(&db);
    n.resync(&db, 20).expect(exits(2).says("exhausted"));
    assert_eq!(ldb_scan(&db), before);
}

/// Runs a resync through `px`; while the proxy holds a batch, `reorganize`
/// changes the chain; returns (exit code, stdout).
fn resync_while_chain_moves(n: &Node, db: &Path, px: Proxy, reorganize: impl FnOnce()) -> (Option<i32>, String) {
    let mut child = Command::new(bin("ailee_resync_blocks"))
        .args(["--start-height", "0", "--batch-size", "10", "--db-path"])
        .arg(db)
        .args(n.rpc_args_at(&px.url()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    px.held
        .recv_timeout(Duration::from_secs(300))
        .expect("the proxy holds a batch");
    reorganize();
    px.release.send(()).unwrap();
    let (status, out) = finish(&mut child);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    eprintln!("{out}{err}");
    (status.code(), out)
}

#[test]
fn chain_moving_between_batches_is_compared_again_and_no_orphaned_anchor_stays_confirmed() {
    let n = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let (hash, txid) = anchor(&n, &f, &db, 9, "moving", true);
    n.generate(28); // anchor at 102, tip 129
    n.resync(&db, 0).expect(exits(0));
    assert_eq!(record(&db, &hash).unwrap().status, AnchorStatus::Confirmed);
    n.generate(30); // the database is behind: 129 stored, tip 159
                    // Requests calling getblockhash: 1 genesis check, 2 heights 0..9, 3 heights 10..19 (held).
    let px = proxy(n.rpc_port, 3);
    let (code, out) = resync_while_chain_moves(&n, &db, px, || {
        n.fork(100, 70); // fork at 100, new tip 169
    });
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Reorg at height 100 (depth 30)"), "{out}");
    assert!(out.contains("compared again"), "{out}");
    assert_matches_node(&n, &db);
    // The anchor's block (102 of the old branch) is orphaned: not CONFIRMED.
    assert_eq!(record(&db, &hash).unwrap().status, AnchorStatus::InvalidatedReorg);
    // Its transaction spent a coinbase that is immature below height 101, so
    // the new branch did not mine it: a rerun leaves it invalidated.
    assert!(!matches!(
        rpc(&n).tx_places(std::slice::from_ref(&txid)).unwrap()[0],
        ailee_core::rpc::TxPlace::InBlock { .. }
    ));
    n.resync(&db, 0)
        .expect(exits(0).prints("No reorg.").prints("0 re-confirmed"));
    assert_eq!(record(&db, &hash).unwrap().status, AnchorStatus::InvalidatedReorg);
}

#[test]
fn chain_moving_during_a_fresh_resync_leaves_no_hash_of_the_old_branch() {
    let n = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let (hash, txid) = anchor(&n, &f, &db, 4, "fresh", true);
    n.generate(58); // anchor at 102, tip 159
                    // Empty database: batches of 10, written 40 heights at a time; request 6 is heights 50..59.
    let px = proxy(n.rpc_port, 6);
    let (code, out) = resync_while_chain_moves(&n, &db, px, || {
        n.fork(30, 140); // fork at 30, new tip 169
    });
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Reorg at height 30 (depth 10)"), "{out}");
    assert_matches_node(&n, &db);
    // The anchor is wherever the node has it now, never on the old branch.
    let a = record(&db, &hash).unwrap();
    if a.status == AnchorStatus::Confirmed || a.bitcoin_height > 0 {
        assert_mined_at(&n, &txid, a.bitcoin_height);
    }
}

#[test]
fn procedure_3_with_anchors_from_gives_back_every_anchor_record() {
    let n = Node::mined(101);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (db, f) = (dir.join("reorg_db"), dir.join("l2_snapshots.dat"));
    init_db(&db);
    // Inline payloads (79 and 80 bytes) and a hashed one (AILEE + sha256).
    let (a1, _) = anchor(&n, &f, &db, 1, "", true);
    n.generate(2); // a1 at 102
    let (a2, _) = anchor(&n, &f, &db, 2, "procedure-3", true);
    n.generate(4); // a2 at 104
    let (a3, _) = anchor(&n, &f, &db, 3, "x", true);
    n.generate(3); // a3 at 108, tip 110: 3 confirmations, PENDING
    let (a4, _) = anchor(&n, &f, &db, 4, "never-broadcast", false);
    n.resync(&db, 0).expect(exits(0));
    let old = ReorgDb::open(&db, Mode::ReadOnly).unwrap().anchors().unwrap();
    assert_eq!(old.len(), 4);
    let rpc = n.rpc_args().join(" ");
    ailee_recovery::bash(&format!(
        r#"cd {dir}
# 2. Backup corrupted database
mv reorg_db reorg_db.corrupted
# 3. Create fresh database
ailee_init_reorg_db --path reorg_db
# 4. Resync block hashes and anchors from Bitcoin
ailee_resync_blocks --start-height 0 --db-path reorg_db {rpc} --anchors-from l2_snapshots.dat
"#,
        dir = dir.display()
    ))
    .expect(
        exits(0)
            .prints("4 in the file, 3 found on the chain, 3 recorded, 0 already recorded, 1 not found")
            .says(format!("anchor {a4} (snapshot 4) not found")),
    );
    let new = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
    for o in &old {
        let got = new.anchor(&o.anchor_hash).unwrap();
        if o.bitcoin_tx_id.is_empty() {
            assert_eq!(got, None, "never broadcast: stays unrecorded");
            continue;
        }
        let got = got.unwrap();
        assert_eq!(
            (
                &got.bitcoin_tx_id,
                got.bitcoin_height,
                got.status,
                got.confirmations,
                &got.l2_state_root
            ),
            (
                &o.bitcoin_tx_id,
                o.bitcoin_height,
                o.status,
                o.confirmations,
                &o.l2_state_root
            ),
            "{}",
            o.anchor_hash
        );
    }
    for h in [&a1, &a2] {
        assert_eq!(new.anchor(h).unwrap().unwrap().status, AnchorStatus::Confirmed);
    }
    assert_eq!(new.anchor(&a3).unwrap().unwrap().status, AnchorStatus::Pending);
    drop(new);
    // Run again: nothing new to record.
    n.resync(&db, 0)
        .arg("--anchors-from")
        .arg(&f)
        .expect(exits(0).prints("0 recorded, 3 already recorded, 1 not found"));
    // A record whose txid the chain does not hold is invalidated by the
    // resync, then given back the transaction that carries the anchor.
    let a2_old = old.iter().find(|o| o.anchor_hash == a2).unwrap().clone();
    put(&db, |b| {
        b.put_anchor(&AnchorRecord {
            bitcoin_tx_id: "ee".repeat(32),
            ..a2_old.clone()
        })
    });
    n.resync(&db, 0).arg("--anchors-from").arg(&f).expect(
        exits(0)
            .says(format!("anchor {a2} (txid {})", "ee".repeat(32)))
            .prints("1 recorded, 2 already recorded, 1 not found"),
    );
    let back = record(&db, &a2).unwrap();
    assert_eq!(
        (&back.bitcoin_tx_id, back.bitcoin_height, back.status),
        (&a2_old.bitcoin_tx_id, a2_old.bitcoin_height, a2_old.status)
    );
    // Anchors mined below --start-height are not searched: listed as not found.
    n.resync(&db, 104)
        .arg("--anchors-from")
        .arg(&f)
        .arg("--json")
        .expect(exits(0).prints(format!(r#""not_found":[{{"anchor":"{a1}","snapshot":1}}"#)));
    // A missing snapshot file fails before anything is written.
    let before = ldb_scan(&db);
    n.resync(&db, 0)
        .arg("--anchors-from")
        .arg(dir.join("nope.dat"))
        .expect(exits(1).says("nope.dat"));
    assert_eq!(ldb_scan(&db), before);
}

#[test]
fn own_anchor_is_proven_on_bitcoin_and_a_forged_state_is_not() {
    let n = Node::mined(101);
    let (d, f, db) = data_dir("l2_snapshots.dat");
    let (h1, t1) = anchor(&n, &f, &db, 10, "onchain-proof", true);
    // Recorded and broadcast, not mined: not provable yet (exit 1).
    verify(&n, &f, &db).expect(exits(1).prints_not("Verification OK.").says("not mined yet"));
    n.generate(6);
    n.resync(&db, 0).expect(exits(0));
    verify(&n, &f, &db).expect(
        exits(0)
            .prints(format!("Anchor verified: {h1}"))
            .prints(format!(
                "Anchor on Bitcoin: transaction {t1} at height 102 (6 confirmations)"
            ))
            .prints("Verification OK."),
    );
    // Fewer confirmations than asked: exit 1.
    verify(&n, &f, &db)
        .args(["--confirmations", "7"])
        .expect(exits(1).says("fewer than 7"));
    // The record's txid swapped for another transaction's (block 102's coinbase).
    let coinbase = ailee_core::block::parse(&rpc(&n).raw_blocks(&[n.hash(102)]).unwrap()[0])
        .unwrap()
        .txs[0]
        .txid();
    let swapped = d.path().join("swapped_db");
    ReorgDb::open(&db, Mode::ReadOnly).unwrap().copy_to(&swapped).unwrap();
    let mut rec = record(&db, &h1).unwrap();
    rec.bitcoin_tx_id = coinbase.clone();
    put(&swapped, |b| b.put_anchor(&rec));
    verify(&n, &f, &swapped).expect(exits(2).says(format!(
        "transaction {coinbase} (height 102) does not carry anchor {h1}"
    )));
    // A void record fails even without the node.
    let void = d.path().join("void_db");
    ReorgDb::open(&db, Mode::ReadOnly).unwrap().copy_to(&void).unwrap();
    let mut rec = record(&db, &h1).unwrap();
    rec.status = AnchorStatus::InvalidatedReorg;
    put(&void, |b| b.put_anchor(&rec));
    verify_file(&f)
        .arg("--reorg-db")
        .arg(&void)
        .expect(exits(2).says(format!("own anchor {h1} is INVALIDATED_REORG")));
    for mode in ["--all", "--last-valid"] {
        verify_file(&f)
            .arg("--reorg-db")
            .arg(&void)
            .arg(mode)
            .expect(exits(2).prints_not("OK"));
    }
    // A node whose chain forks below the anchor's block (another node, or a
    // reorg resync has not seen yet): its word is no verdict on the snapshot
    // — exit 1, "not the node's chain", as resync refuses another chain.
    let n2 = Node::start();
    feed(&n, &n2, 1, 101);
    n2.generate(10);
    verify(&n2, &f, &db).expect(
        exits(1)
            .says("not the node's chain")
            .says(format!("at height 102, the node has {}", n2.hash(102))),
    );
    // Without the stored block there (a database that never saw height 102),
    // the chain itself decides: the transaction is in no best-chain block.
    let blockless = d.path().join("blockless_db");
    ReorgDb::open(&db, Mode::ReadOnly).unwrap().copy_to(&blockless).unwrap();
    put(&blockless, |b| b.delete_blocks_from(1));
    verify(&n2, &f, &blockless).expect(exits(2).says("holds no such transaction"));
    // A node that is behind (still syncing, below the anchor's block) proves
    // nothing either way: exit 1, not a contradiction.
    let n3 = Node::start();
    feed(&n, &n3, 1, 101);
    verify(&n3, &f, &db).expect(exits(1).says("the node is behind (tip 101; anchor"));
    // A tampered backup: a forged state, re-anchored but never broadcast. With
    // the real database the anchor is unknown: exit 2 with --bitcoin-rpc ...
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--snapshot-file"])
        .arg(&f)
        .write_stdin(r#"{"ledger": {"balances": [{"peerId": "p1", "balance": 1000000}]}}"#)
        .expect(exits(0));
    verify(&n, &f, &db).expect(
        exits(2)
            .says("is not recorded in the reorg database")
            .says("--anchors-from"),
    );
    // ... and a warning, stated in the JSON too, with the database alone.
    verify_file(&f)
        .arg("--reorg-db")
        .arg(&db)
        .arg("--json")
        .expect(exits(0).prints("is not recorded in the reorg database"));
    // --bitcoin-rpc needs the database that gives the txid.
    verify_file(&f).args(n.rpc_args()).expect(exits(1));
}

/// A node in initial block download (Bitcoin Core says so in
/// `getblockchaininfo`; the SV test node has no such field, hence a raw TCP
/// fake): behind, whatever its tip — nothing written, exit 1.
#[test]
fn node_in_initial_block_download_is_behind_and_nothing_is_written() {
    let port = serve(|body| {
        let result = if body.contains("getblockcount") {
            serde_json::json!(500)
        } else {
            serde_json::json!({"blocks": 500, "headers": 900000, "initialblockdownload": true,
                               "bestblockhash": "ab".repeat(32)})
        };
        rpc_result(body, result)
    });
    let (_d, db) = temp_db();
    let before = ldb_scan(&db);
    cmd("ailee_resync_blocks")
        .args([
            "--start-height",
            "0",
            "--rpc-user",
            "u",
            "--rpc-password",
            "p",
            "--db-path",
        ])
        .arg(&db)
        .args(["--bitcoin-rpc", &format!("http://127.0.0.1:{port}")])
        .expect(exits(1).says("node is behind: it is in initial block download (tip 500)"));
    assert_eq!(ldb_scan(&db), before);
}

#[test]
fn wait_rides_out_a_node_that_is_not_listening_yet() {
    let n = Node::mined(20);
    let (_d, db) = temp_db();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    // Without --wait, nothing listening is an error at once.
    n.resync_at(&url, &db, 0).expect(exits(1).says("Connection refused"));
    let (mut child, rx) = resync_waiting(&db, n.rpc_args_at(&url));
    let line = rx.recv_timeout(Duration::from_secs(120)).expect("it says it waits");
    assert!(
        line.contains("node not ready") && line.contains("Connection refused"),
        "{line}"
    );
    assert!(stored(&db).is_empty());
    // The node starts listening there (a plain forwarder to the real node).
    let _px = proxy_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), n.rpc_port, 0, false);
    let (status, out) = finish(&mut child);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("21 block hashes written"), "{out}");
    assert_matches_node(&n, &db);
}

#[test]
fn node_without_a_transaction_index_still_follows_and_proves_anchors() {
    let n1 = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let (hash, txid) = anchor(&n1, &f, &db, 8, "no-txindex", true);
    // The transaction whose output the anchor spends keeps no unspent output
    // (this SV node finds a transaction without -txindex while one is left).
    let t: serde_json::Value = serde_json::from_str(&n1.cli(&["getrawtransaction", &txid, "1"])).unwrap();
    let prev = t["vin"][0]["txid"].as_str().unwrap().to_string();
    for vout in 0..4 {
        let out = n1.cli(&["gettxout", &prev, &vout.to_string()]);
        if out.is_empty() {
            continue;
        }
        let o: serde_json::Value = serde_json::from_str(&out).unwrap();
        let to = n1.cli(&["getnewaddress"]);
        let raw = n1.cli(&[
            "createrawtransaction",
            &format!(r#"[{{"txid":"{prev}","vout":{vout}}}]"#),
            &format!(r#"{{"{to}":{:.8}}}"#, o["value"].as_f64().unwrap() - 0.001),
        ]);
        let signed: serde_json::Value = serde_json::from_str(&n1.cli(&["signrawtransaction", &raw])).unwrap();
        n1.cli(&["sendrawtransaction", signed["hex"].as_str().unwrap()]);
    }
    n1.generate(7);
    n1.resync(&db, 0).expect(exits(0).prints("1 confirmed"));
    // The same chain on a node without -txindex whose wallet never saw the
    // transaction (this SV node still finds it through the unspent change
    // output, as Bitcoin Core did before 0.15; newer Core answers -5 and the
    // recorded block is searched instead).
    let n2 = Node::start_with(&["-txindex=0"]);
    feed(&n1, &n2, 1, 108);
    n1.generate(2);
    feed(&n1, &n2, 109, 110);
    n2.resync(&db, 0).expect(exits(0).prints("No reorg."));
    let a = record(&db, &hash).unwrap();
    assert_eq!(
        (a.status, a.bitcoin_height, a.confirmations),
        (AnchorStatus::Confirmed, 102, 9)
    );
    // Who made the transaction is told by the outputs it spends: a node
    // with neither an index nor the identity's wallet cannot show them, so
    // the anchor is on chain but its author unproven (exit 1, never 0) ...
    verify(&n2, &f, &db).expect(
        exits(1)
            .prints_not("Verification OK.")
            .says(format!("transaction {txid} at height 102, 9 confirmation(s)"))
            .says("author is unproven")
            .says("-txindex=1"),
    );
    // ... while the operator's node (its wallet holds the identity) proves it.
    verify(&n1, &f, &db).expect(exits(0).prints(format!("transaction {txid} at height 102 (9 confirmations)")));
}

#[test]
fn a_chain_that_keeps_moving_is_given_up_on_after_bounded_attempts() {
    let n = Node::mined(60);
    let (_d, db) = temp_db();
    // Every batch of hashes is held while the tip is replaced.
    let px = proxy_on(TcpListener::bind("127.0.0.1:0").unwrap(), n.rpc_port, 1, true);
    let mut child = Command::new(bin("ailee_resync_blocks"))
        .args(["--start-height", "0", "--batch-size", "10", "--db-path"])
        .arg(&db)
        .args(n.rpc_args_at(&px.url()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reorgs = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if px.held.recv_timeout(Duration::from_millis(200)).is_ok() {
            n.fork(n.count(), 2);
            reorgs += 1;
            px.release.send(()).unwrap();
        }
        assert!(reorgs < 50, "the resync must give up");
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("kept changing during the resync (5 attempts)"), "{err}");
    assert_eq!(reorgs, 5);
    // Nothing it read while the chain moved was written.
    assert!(stored(&db).is_empty());
}

#[test]
fn confirmed_anchor_whose_block_left_the_chain_unseen_is_not_left_confirmed() {
    // The database never stored the heights of the reorg (here: deleted), so
    // no stored hash differs; the anchor's transaction is still in no
    // best-chain block, and the anchor must not stay CONFIRMED.
    let n = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let (hash, txid) = anchor(&n, &f, &db, 6, "unseen", true);
    n.generate(9); // anchor at 102, tip 110
    n.resync(&db, 0).expect(exits(0));
    assert_eq!(record(&db, &hash).unwrap().status, AnchorStatus::Confirmed);
    put(&db, |b| b.delete_blocks_from(100));
    n.fork(100, 20); // the transaction's coinbase input is immature below 101: not mined again
    assert!(!matches!(
        rpc(&n).tx_places(std::slice::from_ref(&txid)).unwrap()[0],
        ailee_core::rpc::TxPlace::InBlock { .. }
    ));
    n.resync(&db, 0).expect(exits(0).prints("No reorg.").says(format!(
        "anchor {hash} (txid {txid}): its transaction is in no best-chain block"
    )));
    let a = record(&db, &hash).unwrap();
    assert_eq!((a.status, a.confirmations), (AnchorStatus::InvalidatedReorg, 0));
    assert_matches_node(&n, &db);
}

/// The attack of issue 25: a copy of the data directory gets a forged state
/// (`mallory` with 10^15), anchored locally; its `OP_RETURN` is put on chain
/// by anyone (plain `bitcoin-cli`, no node key) and in a miner's coinbase.
/// Only the operator's anchor transaction — one that spends from the
/// anchoring identity — counts: `--anchors-from` does not record the others,
/// the on-chain check calls them what they are (exit 2), and without an
/// identity nothing is proven (exit 1, never 0).
#[test]
fn an_anchor_anyone_can_put_on_chain_proves_nothing_only_the_operators_counts() {
    let n = Node::mined(101);
    let (d, f, db) = data_dir("l2_snapshots.dat");
    let (honest, _) = anchor(&n, &f, &db, 10, "honest", true);
    // Mallory's copy of the data directory, identity file included.
    let m = tempfile::tempdir().unwrap();
    let (mf, mdb) = (m.path().join("l2_snapshots.dat"), m.path().join("reorg_db"));
    std::fs::copy(&f, &mf).unwrap();
    std::fs::copy(d.path().join("anchor_identity"), m.path().join("anchor_identity")).unwrap();
    ReorgDb::open(&db, Mode::ReadOnly).unwrap().copy_to(&mdb).unwrap();
    let out = cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--json", "--snapshot-file"])
        .arg(&mf)
        .arg("--db-path")
        .arg(&mdb)
        .write_stdin(r#"{"ledger": {"balances": [{"peerId": "mallory", "balance": 1000000000000000}]}}"#)
        .expect(exits(0));
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let forged = v["hash"].as_str().unwrap().to_string();
    let script = ailee_core::block::unhex(v["op_return_script"].as_str().unwrap()).unwrap();
    let data = &script[2..]; // 6a 4c <len>: a payload longer than 75 bytes
    assert_eq!(script[1], 0x4c);
    let by_anyone = n.op_return_by_anyone(&ailee_core::root::hex(&data[1..]));
    let coinbase = n.mine_coinbase_with(&script);
    n.generate(6);
    let height_of = |txid: &str| -> u64 {
        let t: serde_json::Value = serde_json::from_str(&n.cli(&["getrawtransaction", txid, "1"])).unwrap();
        let h: serde_json::Value =
            serde_json::from_str(&n.cli(&["getblockheader", t["blockhash"].as_str().unwrap()])).unwrap();
        h["height"].as_u64().unwrap()
    };
    let (h_anyone, h_coinbase) = (height_of(&by_anyone), height_of(&coinbase));

    // Procedure 3 on Mallory's copy: the database recreated, anchors rebuilt
    // from the chain. The honest anchor is found; the forged one is on chain
    // twice, neither the operator's: not recorded.
    std::fs::rename(&mdb, m.path().join("reorg_db.old")).unwrap();
    init_db(&mdb);
    n.resync(&mdb, 0)
        .arg("--anchors-from")
        .arg(&mf)
        .expect(exits(0).prints("2 in the file, 1 found on the chain, 1 recorded").says(format!("transaction {by_anyone} at height {h_anyone} carries anchor {forged} but is not the operator's")).says(format!("transaction {coinbase} at height {h_coinbase} carries anchor {forged} but is not the operator's: it is a coinbase")));
    assert!(record(&mdb, &honest).is_some());
    assert_eq!(record(&mdb, &forged), None);
    verify(&n, &mf, &mdb).expect(
        exits(2)
            .prints_not("Verification OK.")
            .says(format!("anchor {forged} is not recorded")),
    );
    // Records naming those transactions (as --anchors-from wrote them before
    // the identity was checked): the chain check says whose they are.
    for (txid, height, why) in [
        (&by_anyone, h_anyone, "is not in the anchoring identity"),
        (&coinbase, h_coinbase, "it is a coinbase"),
    ] {
        let named = m.path().join(format!("named_{height}"));
        ReorgDb::open(&mdb, Mode::ReadOnly).unwrap().copy_to(&named).unwrap();
        put(&named, |b| {
            b.put_anchor(&AnchorRecord {
                anchor_hash: forged.clone(),
                bitcoin_tx_id: txid.clone(),
                bitcoin_height: height,
                confirmations: 6,
                broadcast_time: 0,
                retry_count: 0,
                status: AnchorStatus::Confirmed,
                l2_state_root: v["l2_state_root"].as_str().unwrap().to_string(),
            })
        });
        verify(&n, &mf, &named).expect(
            exits(2)
                .prints_not("Verification OK.")
                .says(format!(
                    "transaction {txid} (height {height}) carries anchor {forged} but is not the operator's"
                ))
                .says(why),
        );
    }
    // A PENDING record naming someone else's transaction is never confirmed
    // by resync: it stays PENDING, named, exit 1.
    let pending = m.path().join("pending_db");
    ReorgDb::open(&mdb, Mode::ReadOnly).unwrap().copy_to(&pending).unwrap();
    put(&pending, |b| {
        b.put_anchor(&AnchorRecord {
            anchor_hash: forged.clone(),
            bitcoin_tx_id: by_anyone.clone(),
            bitcoin_height: 0,
            confirmations: 0,
            broadcast_time: 0,
            retry_count: 0,
            status: AnchorStatus::Pending,
            l2_state_root: v["l2_state_root"].as_str().unwrap().to_string(),
        })
    });
    n.resync(&pending, 0).expect(exits(1).says(format!(
        "anchor {forged}: transaction {by_anyone} is not proven the operator's"
    )));
    assert_eq!(record(&pending, &forged).unwrap().status, AnchorStatus::Pending);
    // Without an anchoring identity nothing is proven: exit 1, never 0 ...
    std::fs::remove_file(m.path().join("anchor_identity")).unwrap();
    let named = m.path().join(format!("named_{h_anyone}"));
    verify(&n, &mf, &named).expect(
        exits(1)
            .prints_not("Verification OK.")
            .says("author is unproven")
            .says("no anchoring identity is configured"),
    );
    // ... and --anchors-from refuses before it writes anything.
    let before = ldb_scan(&named);
    n.resync(&named, 0)
        .arg("--anchors-from")
        .arg(&mf)
        .expect(exits(1).says("--anchors-from needs the anchoring identity"));
    assert_eq!(ldb_scan(&named), before);
    // The operator's own anchor is proven on the operator's data directory.
    n.resync(&db, 0).expect(exits(0));
    verify(&n, &f, &db).expect(
        exits(0)
            .prints(format!("Anchor verified: {honest}"))
            .prints("Verification OK."),
    );
}
