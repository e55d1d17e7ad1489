//! `ailee_create_anchor` and the anchor lifecycle end to end: JSON round
//! trips against the node's roots, byte-identical appends, bad input, and
//! broadcast → confirm → reorg → invalidate on the real regtest node.

use ailee_core::records::AnchorStatus;
use ailee_db::reorgdb::{Mode, ReorgDb};
use ailee_recovery::{
    anchor_from, append_state, check_db, cmd, data_dir, exits, init_db, roots, vector, vector_copy, vector_names,
    verify_file, Expecting, Node,
};
use std::path::Path;

fn state_of(file: &Path, index: usize) -> Vec<u8> {
    let out = verify_file(file)
        .args(["--index", &index.to_string(), "--print-state"])
        .expect(exits(0));
    out.get_output().stdout.clone()
}

fn json(out: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// (timestampMs, recoveryMetadata) of a vector snapshot's anchor.
fn anchor_params(file: &Path, index: usize) -> (String, String) {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .filter(|l| l.starts_with("anchor \""))
        .nth(index - 1)
        .unwrap();
    let mut it = line.split(' ');
    it.next();
    it.next();
    let ts = it.next().unwrap().to_string();
    let rest = line.splitn(4, ' ').nth(3).unwrap();
    // recoveryMetadata is the first quoted string after the timestamp.
    let mut meta = String::new();
    let mut chars = rest[1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => meta.push(chars.next().unwrap()),
            '"' => break,
            c => meta.push(c),
        }
    }
    (ts, meta)
}

#[test]
fn every_vector_snapshot_converted_to_json_and_anchored_gives_the_nodes_root() {
    for name in &vector_names() {
        for (i, root) in roots(name).iter().enumerate() {
            let state = state_of(&vector(name), i + 1);
            let out = cmd("ailee_create_anchor")
                .args(["--l2-state-file", "-", "--json", "--timestamp-ms", "5"])
                .arg("--allow-ambiguous-root") // quoting.dat's ids hold ':'
                .write_stdin(state)
                .expect(exits(0));
            assert_eq!(json(&out)["l2_state_root"], *root, "{name} #{}", i + 1);
        }
    }
    // --from-snapshot takes the newest complete snapshot.
    let out = anchor_from(vector("torn-tail")).arg("--json").expect(exits(0));
    assert_eq!(json(&out)["l2_state_root"], roots("torn-tail")[3]);
}

#[test]
fn appended_snapshots_are_byte_identical_to_the_nodes_writer() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("l2_snapshots.dat");
    let src = vector("basic");
    for i in 1..=5 {
        let (ts, meta) = anchor_params(&src, i);
        cmd("ailee_create_anchor")
            .args([
                "--l2-state-file",
                "-",
                "--timestamp-ms",
                &ts,
                "--recovery-metadata",
                &meta,
                "--snapshot-file",
            ])
            .arg(&f)
            .write_stdin(state_of(&src, i))
            .expect(exits(0).prints("read back and verified"));
    }
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn output_lines_and_op_return_script() {
    let out = cmd("ailee_create_anchor")
        .args([
            "--l2-state-file",
            "-",
            "--timestamp-ms",
            "1700000000000",
            "--recovery-metadata",
            "m",
        ])
        .write_stdin(r#"{"ledger": {"balances": [{"peerId": "p1", "balance": 5}]}}"#)
        .expect(exits(0));
    let s = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let l: Vec<&str> = s.lines().collect();
    let root = l[0].strip_prefix("L2StateRoot: ").unwrap();
    assert_eq!(l[1], format!("Payload: {root}:1700000000000:m"));
    let hash = l[2].strip_prefix("Anchor hash: ").unwrap();
    assert_eq!(
        hash,
        ailee_core::root::sha256_hex(format!("{root}:1700000000000:m").as_bytes())
    );
    // 80-byte payloads or shorter go as is; this one is 80 bytes.
    assert_eq!(l[1].len() - "Payload: ".len(), 80);
    let payload_hex = ailee_core::root::hex(format!("{root}:1700000000000:m").as_bytes());
    assert_eq!(l[3], format!("OP_RETURN script: 6a4c50{payload_hex}"));
}

#[test]
fn pegouts_naming_unknown_anchors_are_refused_unless_allowed() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("l2.dat");
    let state = r#"{"bridge": {"pegouts": [{"pegId": "o", "aileeSource": "a", "btcDest": "b", "aileeBurnAmount": 1,
        "btcReleaseAmount": 1, "initiatedTime": 0, "completedTime": 0, "status": 0, "anchorCommitmentHash": "abcd"}]}}"#;
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--snapshot-file"])
        .arg(&f)
        .write_stdin(state)
        .expect(exits(1).says("Refusing"));
    assert!(!f.exists());
    cmd("ailee_create_anchor")
        .args([
            "--l2-state-file",
            "-",
            "--allow-unknown-pegout-anchors",
            "--snapshot-file",
        ])
        .arg(&f)
        .write_stdin(state)
        .expect(exits(0).says("allowed by --allow-unknown-pegout-anchors"));
    // An anchor recorded in the snapshot file is known.
    std::fs::copy(vector("basic"), &f).unwrap();
    let out = verify_file(&f).args(["--index", "4", "--json"]).expect(exits(0));
    let h = json(&out)["anchor_hash"].as_str().unwrap().to_string();
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--snapshot-file"])
        .arg(&f)
        .write_stdin(state.replace("abcd", &h))
        .expect(exits(0));
}

#[test]
fn bad_input_exits_1_and_changes_nothing() {
    let (d, f, before) = vector_copy("basic", "l2.dat");
    let db = d.path().join("reorg_db");
    init_db(&db);
    for (input, msg) in [
        ("{", "invalid state JSON"),
        (
            r#"{"ledger": {"balances": [{"peerId": 1, "balance": 1}]}}"#,
            "ledger.balances[0].peerId",
        ),
        (r#"{"ledger": {"balances": [], "extra": 1}}"#, "unknown field `extra`"),
        (
            r#"{"ledger": {"balances": [{"peerId": "p", "balance": 18446744073709551616}]}}"#,
            "ledger.balances[0].balance",
        ),
        (
            r#"{"ledger": {"balances": [{"peerId": "p\n", "balance": 1}]}}"#,
            "line break",
        ),
    ] {
        cmd("ailee_create_anchor")
            .args(["--l2-state-file", "-", "--snapshot-file"])
            .arg(&f)
            .arg("--db-path")
            .arg(&db)
            .write_stdin(input)
            .expect(exits(1).says(msg));
    }
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "/nonexistent.json"])
        .expect(exits(1).says("No such file"));
    let ok = r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1}]}}"#;
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--snapshot-file", "/proc/ailee.dat"])
        .write_stdin(ok)
        .expect(exits(1));
    // Database locked by another process: nothing appended.
    {
        let _held = ReorgDb::open(&db, Mode::ReadWrite).unwrap();
        cmd("ailee_create_anchor")
            .args(["--l2-state-file", "-", "--snapshot-file"])
            .arg(&f)
            .arg("--db-path")
            .arg(&db)
            .write_stdin(ok)
            .expect(exits(1).says("probably running"));
    }
    assert_eq!(std::fs::read(&f).unwrap(), before);
    check_db(&db).expect(exits(0).prints("Pending: 0"));
    cmd("ailee_create_anchor").expect(exits(1));
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "x", "--broadcast"])
        .expect(exits(1).says("--bitcoin-rpc"));
}

#[test]
fn wallet_without_funds_exits_1_with_nothing_appended_or_recorded() {
    let node = Node::start(); // no blocks mined: an empty wallet
    let (_d, f, db) = data_dir("l2.dat");
    node.broadcast_anchor(&f, &db).write_stdin("{}").expect(
        exits(1)
            .says("cannot create the anchor transaction")
            .says_not(&node.password),
    );
    assert!(!f.exists());
    check_db(&db).expect(exits(0).prints("Pending: 0"));
}

#[test]
fn broadcast_confirm_reorg_invalidate_end_to_end() {
    let node = Node::mined(101);
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    let resync = |start: u64| {
        let mut c = cmd("ailee_resync_blocks");
        c.args(["--start-height", &start.to_string(), "--db-path"])
            .arg(&db)
            .args(node.rpc_args());
        c
    };
    resync(0).expect(exits(0));
    let out = cmd("ailee_create_anchor")
        .args([
            "--l2-state-file",
            "-",
            "--broadcast",
            "--json",
            "--recovery-metadata",
            "drill",
            "--snapshot-file",
        ])
        .arg(&f)
        .arg("--db-path")
        .arg(&db)
        .args(node.rpc_args())
        .write_stdin(r#"{"ledger": {"balances": [{"peerId": "p1", "balance": 5}]}}"#)
        .expect(exits(0));
    let v = json(&out);
    let hash = v["hash"].as_str().unwrap().to_string();
    let txid = v["txid"].as_str().unwrap().to_string();
    let payload = v["payload"].as_str().unwrap().to_string();
    {
        let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
        let a = r.anchor(&hash).unwrap().unwrap();
        assert_eq!(
            (a.status, a.bitcoin_tx_id.as_str(), a.bitcoin_height),
            (AnchorStatus::Pending, txid.as_str(), 0)
        );
    }
    node.generate(1);
    let mined_at = node.count();
    node.generate(6);
    resync(90).expect(exits(0).prints("1 confirmed"));
    {
        let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
        let a = r.anchor(&hash).unwrap().unwrap();
        assert_eq!(
            (a.status, a.bitcoin_height, a.confirmations),
            (AnchorStatus::Confirmed, mined_at, 7)
        );
    }
    // The mined OP_RETURN pushes exactly the commitment bytes.
    let tx: serde_json::Value = serde_json::from_str(&node.cli(&["getrawtransaction", &txid, "1"])).unwrap();
    let want = ailee_core::root::hex(&ailee_core::anchor::op_return_data(payload.as_bytes()));
    let scripts: Vec<String> = tx["vout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["scriptPubKey"]["hex"].as_str().unwrap().to_string())
        .collect();
    let pushed = scripts.iter().find_map(|s| {
        let s = s.strip_prefix("00").unwrap_or(s); // the SV node writes OP_FALSE OP_RETURN
        let s = s.strip_prefix("6a")?;
        let s = s.strip_prefix("4c").unwrap_or(s);
        Some(s[2..].to_string())
    });
    assert_eq!(pushed.as_deref(), Some(want.as_str()), "{scripts:?}");
    // get_snapshot_block finds the height through the database.
    ailee_recovery::bash(&format!("ailee_get_snapshot_block {}", f.display()))
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                ailee_recovery::bin("ailee_l2_verify").parent().unwrap().display(),
                ailee_recovery::root().join("scripts").display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .expect(exits(0).prints_exactly(format!("{mined_at}\n")));
    // A reorg below the anchor's block invalidates it.
    node.fork(mined_at - 1, 10);
    resync(90).expect(exits(3).prints(format!("anchor(s) invalidated: {hash}")));
    {
        let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
        assert_eq!(r.anchor(&hash).unwrap().unwrap().status, AnchorStatus::InvalidatedReorg);
    }
    // A snapshot whose peg-outs name that anchor fails verification with the database.
    let state = format!(
        r#"{{"bridge": {{"pegouts": [{{"pegId": "o", "aileeSource": "a", "btcDest": "b", "aileeBurnAmount": 1,
        "btcReleaseAmount": 1, "initiatedTime": 0, "completedTime": 0, "status": 0, "anchorCommitmentHash": "{hash}"}}]}}}}"#
    );
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--snapshot-file"])
        .arg(&f)
        .arg("--db-path")
        .arg(&db)
        .write_stdin(state.clone())
        .expect(exits(1).says("INVALIDATED_REORG"));
    append_state(&f, state);
    verify_file(&f).expect(exits(0));
    verify_file(&f).arg("--reorg-db").arg(&db).expect(exits(2).says(format!(
        "names anchor {hash}, which the reorg database marks INVALIDATED_REORG"
    )));
}
