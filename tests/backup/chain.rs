//! Issue 22, item 10: a restore Bitcoin agrees with.
//!
//! Measured: a forged but self-consistent backup — a state whose anchor was
//! never put on chain, with a record in its own `reorg_db` pointing at some
//! transaction, backed up into the repository by anyone holding its password
//! (or a foreign repository at the default path) — passed `--verify`,
//! `--verify --read-data` and `ailee_restore` (exit 0), and the live state
//! was replaced by a state Bitcoin never saw. Root, hash and segments can all
//! be made consistent; only Bitcoin tells the two apart. With `--bitcoin-rpc`
//! the backup's newest anchor must be on the best chain with the anchor's
//! `OP_RETURN` and `--confirmations`, checked on the restored copy before
//! anything live changes; `--anchored` picks the newest backup that is.
//!
//! Against the real regtest node (`ailee_recovery::Node`); the anchored
//! states are made with `ailee_create_anchor --broadcast` and recorded by
//! `ailee_resync_blocks`, as a node's are.

use super::*;
use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_recovery::Node;

/// Appends a one-balance state with its anchor to `data/l2_snapshots.dat`;
/// with `node`, records it in `data/reorg_db` and broadcasts it. Returns
/// (anchor hash, txid, payload).
fn anchor(data: &Path, balance: u64, node: Option<&Node>) -> (String, String, String) {
    let mut c = ailee_recovery::cmd("ailee_create_anchor");
    c.args(["--l2-state-file", "-", "--json", "--snapshot-file"])
        .arg(data.join("l2_snapshots.dat"))
        .write_stdin(format!(
            r#"{{"ledger": {{"balances": [{{"peerId": "p1", "balance": {balance}}}]}}}}"#
        ));
    if let Some(n) = node {
        // The operator's anchors spend from the data directory's anchoring identity.
        n.give_identity(data);
        c.arg("--db-path")
            .arg(data.join("reorg_db"))
            .arg("--broadcast")
            .args(n.rpc_args());
    }
    let v: serde_json::Value = serde_json::from_slice(&c.expect(exits(0)).get_output().stdout).unwrap();
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    (s("hash"), s("txid"), s("payload"))
}

fn resync(n: &Node, data: &Path) {
    ailee_recovery::resync_cmd(data.join("reorg_db"))
        .args(n.rpc_args())
        .expect(exits(0));
}

/// A node's data directory whose newest snapshot is anchored on `n`'s chain
/// (mined at height 102) with `conf` confirmations, its record brought up to
/// date by resync. Returns the fixture, the anchor hash, txid and payload.
fn anchored(n: &Node, conf: u64) -> (Fixture, String, String, String) {
    n.generate(101);
    let f = Fixture {
        tmp: tempfile::tempdir().unwrap(),
    };
    let d = f.data();
    std::fs::create_dir(&d).unwrap();
    ailee_recovery::db_tool(d.join("reorg_db")).expect(exits(0));
    let (hash, txid, payload) = anchor(&d, 10, Some(n));
    n.generate(conf);
    resync(n, &d);
    (f, hash, txid, payload)
}

/// The attacker: a data directory beside the victim's with its node id and
/// its snapshots plus a forged state, anchored but never put on chain; with
/// `points_at` (txid, height) its own `reorg_db` records the forged anchor
/// CONFIRMED in that transaction (written with `ldb`, the node's RocksDB
/// tool). Backed up into the victim's repository with its password. Returns
/// the forged anchor hash.
fn forge_backup(f: &Fixture, name: &str, balance: u64, points_at: Option<(&str, u64)>) -> String {
    let x = f.dir().join(name);
    std::fs::create_dir(&x).unwrap();
    std::fs::copy(f.data().join("node_id"), x.join("node_id")).unwrap();
    std::fs::copy(f.data().join("l2_snapshots.dat"), x.join("l2_snapshots.dat")).unwrap();
    ailee_recovery::db_tool(x.join("reorg_db")).expect(exits(0));
    let (hash, _, _) = anchor(&x, balance, None);
    if let Some((txid, height)) = points_at {
        let rec = AnchorRecord {
            anchor_hash: hash.clone(),
            bitcoin_tx_id: txid.to_string(),
            bitcoin_height: height,
            confirmations: 6,
            broadcast_time: 1_700_000_000_000,
            retry_count: 0,
            status: AnchorStatus::Confirmed,
            l2_state_root: String::new(),
        };
        let o = Command::new("ldb")
            .arg(format!("--db={}", x.join("reorg_db").display()))
            .args([
                "--ignore_unknown_options",
                "put",
                &format!("anchor:{hash}"),
                &rec.encode(),
            ])
            .output()
            .expect("ldb (Debian rocksdb-tools)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let b = f.data().join("backups");
    f.cmd_in("ailee_backup", &x)
        .arg("--repo")
        .arg(b.join("repo"))
        .arg("--password-file")
        .arg(b.join("restic-password"))
        .arg("--no-forget")
        .expect(exits(0));
    hash
}

/// The tags of the repository's backups, oldest first.
fn tags(f: &Fixture) -> Vec<Vec<String>> {
    let o = f.restic(&["snapshots", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    v.iter()
        .map(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// A genuine anchored backup is proven on Bitcoin: `--verify --bitcoin-rpc`
/// names its transaction, a restore with `--bitcoin-rpc` goes through. The
/// backup records what `--anchored` needs: `txid=` and `payload=`.
#[test]
fn genuine_anchored_backup_is_proven_on_bitcoin_and_restored() {
    let n = Node::start();
    let (f, _hash, txid, payload) = anchored(&n, 6);
    f.backup(&["--no-forget"]).code(0).stdout("").stderr("");
    let t = tags(&f);
    assert!(t[0].contains(&format!("txid={txid}")), "{t:?}");
    let hex = ailee_core::root::hex(payload.as_bytes());
    assert!(t[0].contains(&format!("payload={hex}")), "{t:?}");
    assert!(t[0].contains(&"height=102".to_string()), "{t:?}");
    let rpc = n.rpc_args();
    let rpc: Vec<&str> = rpc.iter().map(String::as_str).collect();
    f.backup(&[&["--verify"], &rpc[..]].concat())
        .code(0)
        .stdout(contains(format!(
            "anchor on Bitcoin: transaction {txid} at height 102 (6 confirmations)"
        )));
    // The live file moves on; the restore brings the proven backup back.
    let backed = std::fs::read(f.data().join("l2_snapshots.dat")).unwrap();
    anchor(&f.data(), 11, None);
    f.restore(&[&["-v"], &rpc[..]].concat())
        .code(0)
        .stdout(contains(format!(
            "Anchor on Bitcoin: transaction {txid} at height 102 (6 confirmations)"
        )))
        .stdout(contains("Restored backup"));
    assert_eq!(std::fs::read(f.data().join("l2_snapshots.dat")).unwrap(), backed);
    assert_eq!(recovery_dirs(&f.data()).len(), 1);
    assert!(hidden_leftovers(&f.data()).is_empty());
}

/// A forged but self-consistent backup written into the repository with its
/// password: its root, hash and segments all agree, so without
/// `--bitcoin-rpc` it is verified and restored (exit 0) — the live state is
/// replaced by a state Bitcoin never saw. That is why the flag exists: with
/// it, a forged anchor that no database records, and one whose record points
/// at a real transaction that does not carry it, are integrity failures
/// (exit 2) and nothing live changes.
#[test]
fn forged_backup_is_refused_with_bitcoin_rpc_and_accepted_without() {
    let n = Node::start();
    let (f, _hash, txid, _) = anchored(&n, 6);
    f.backup(&["--no-forget"]).code(0);
    let rpc = n.rpc_args();
    let rpc: Vec<&str> = rpc.iter().map(String::as_str).collect();
    let before = f.state();
    let unchanged = |what: &str| {
        assert_eq!(f.state(), before, "{what}: the live state changed");
        assert!(recovery_dirs(&f.data()).is_empty(), "{what}");
        assert!(hidden_leftovers(&f.data()).is_empty(), "{what}");
    };
    // No record anywhere (not in the backup's database, not in the live one).
    let forged = forge_backup(&f, "forged1", 1_000_000, None);
    f.backup(&[&["--verify"], &rpc[..]].concat())
        .code(2)
        .stdout("")
        .stderr(contains(format!("anchor {forged} is not recorded")));
    f.restore(&rpc).code(2).stdout("").stderr(contains("is not recorded"));
    unchanged("unrecorded forged anchor");
    // A record pointing at the genuine anchor's transaction (real, mined).
    let forged = forge_backup(&f, "forged2", 2_000_000, Some((&txid, 102)));
    f.backup(&[&["--verify"], &rpc[..]].concat())
        .code(2)
        .stdout("")
        .stderr(contains(format!(
            "transaction {txid} (height 102) does not carry anchor {forged}"
        )));
    f.backup(&[&["--verify", "latest", "--read-data"], &rpc[..]].concat())
        .code(2);
    f.restore(&rpc)
        .code(2)
        .stdout("")
        .stderr(contains("does not carry anchor"));
    unchanged("forged anchor recorded in a real transaction");
    // Without the flag: accepted, and the forged state goes live.
    f.backup(&["--verify"]).code(0);
    f.backup(&["--verify", "latest", "--read-data"]).code(0);
    f.restore(&[]).code(0);
    let live = std::fs::read_to_string(f.data().join("l2_snapshots.dat")).unwrap();
    assert!(live.contains("2000000"), "the forged state was not restored");
}

/// An anchor mined with fewer confirmations than asked is not provable yet:
/// exit 1 for `--verify` and the restore, and nothing live changes; with
/// `--confirmations 1` the same backup is proven.
#[test]
fn too_few_confirmations_is_not_yet_and_changes_nothing() {
    let n = Node::start();
    let (f, _hash, txid, _) = anchored(&n, 1);
    f.backup(&["--no-forget"]).code(0);
    anchor(&f.data(), 11, None);
    let before = f.state();
    let rpc = n.rpc_args();
    let rpc: Vec<&str> = rpc.iter().map(String::as_str).collect();
    f.backup(&[&["--verify"], &rpc[..]].concat())
        .code(1)
        .stdout("")
        .stderr(contains("1 confirmation(s), fewer than 6"));
    f.restore(&rpc).code(1).stdout("").stderr(contains("fewer than 6"));
    assert_eq!(f.state(), before);
    assert!(recovery_dirs(&f.data()).is_empty());
    assert!(hidden_leftovers(&f.data()).is_empty());
    f.backup(&[&["--verify", "--confirmations", "1"], &rpc[..]].concat())
        .code(0)
        .stdout(contains(format!("transaction {txid} at height 102 (1 confirmations)")));
    f.backup(&["--verify", "--confirmations", "0"]).code(1);
}

/// `--anchored` restores the newest backup whose anchor is confirmed, judged
/// from its tags: newer ones that are untagged (made before the tags),
/// forged (contradicted) or unconfirmed are skipped, and -v says why.
#[test]
fn anchored_skips_newer_forged_and_unconfirmed_backups() {
    let n = Node::start();
    let (f, hash, txid, _) = anchored(&n, 6);
    f.backup(&["--no-forget"]).code(0);
    let confirmed = std::fs::read(f.data().join("l2_snapshots.dat")).unwrap();
    // Newer: a genuine anchor broadcast but not mined yet.
    let (_, pending_tx, _) = anchor(&f.data(), 20, Some(&n));
    f.backup(&["--no-forget"]).code(0);
    // Newer still: a forged one pointing at the confirmed transaction.
    forge_backup(&f, "forged", 3_000_000, Some((&txid, 102)));
    // Newest: one made before backups carried txid=/payload= tags.
    f.backup(&["--no-forget"]).code(0);
    let newest = tags(&f).pop().unwrap();
    let strip: Vec<&str> = newest
        .iter()
        .filter(|t| t.starts_with("txid=") || t.starts_with("payload="))
        .map(String::as_str)
        .collect();
    assert_eq!(strip.len(), 2, "{newest:?}");
    let o = f.restic(&["tag", "--remove", &strip.join(","), "latest"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids: Vec<String> = f
        .list()
        .iter()
        .map(|s| s["short_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4);
    let rpc = n.rpc_args();
    let rpc: Vec<&str> = rpc.iter().map(String::as_str).collect();
    let before = f.state();
    ailee_recovery::cmd("ailee_restore")
        .arg("--data-dir")
        .arg(f.data())
        .arg("--anchored")
        .expect(exits(1).says("--bitcoin-rpc"));
    // None confirmed with that many confirmations: exit 1, how many were looked at.
    f.restore(&[&["--anchored", "--confirmations", "1000"], &rpc[..]].concat())
        .code(1)
        .stderr(contains("4 looked at, 1 of them without txid/payload tags"));
    assert_eq!(f.state(), before);
    let out = f
        .restore(&[&["--anchored", "-v"], &rpc[..]].concat())
        .code(0)
        .stdout(contains(format!(
            "Anchor on Bitcoin: transaction {txid} at height 102 (6 confirmations)"
        )))
        .stdout(contains(format!("Restored backup {}", ids[0])));
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    for (id, why) in [
        (&ids[3], "no txid/payload tags"),
        (&ids[2], "contradicted by the chain"),
        (&ids[1], &format!("transaction {pending_tx} is not mined yet")[..]),
        (&ids[0], &format!("anchor {hash} confirmed")[..]),
    ] {
        let line = format!("backup {id}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&line) && l.contains(why)),
            "{id} {why}:\n{err}"
        );
    }
    assert_eq!(std::fs::read(f.data().join("l2_snapshots.dat")).unwrap(), confirmed);
    assert_eq!(recovery_dirs(&f.data()).len(), 1);
}
