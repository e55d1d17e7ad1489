//! The state root's canonical text joins fields with `:` unescaped (the
//! node's encoding, which must not change): ids holding `:` let two different
//! states share a root. `ailee_l2_verify` warns (stderr and `--json`);
//! `ailee_create_anchor` refuses such a state (exit 1, nothing written)
//! unless `--allow-ambiguous-root`. Every reference vector still gives the
//! node's roots.

use ailee_recovery::{anchor_from, check_db, cmd, data_dir, exits, roots, vector, vectors, verify_file, Expecting};
use serde_json::Value;

/// The example: escrows `t:c`/`x` and `t`/`c:x`.
fn escrow_state(task: &str, client: &str) -> String {
    serde_json::json!({"ledger": {"escrows": [
        {"taskId": task, "clientPeerId": client, "amount": 5, "locked": true, "createdAt": 7}
    ]}})
    .to_string()
}

fn json_out(a: &assert_cmd::assert::Assert) -> Value {
    serde_json::from_slice(&a.get_output().stdout).unwrap()
}

#[test]
fn every_vector_still_gives_the_nodes_roots() {
    for e in std::fs::read_dir(vectors()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "dat") {
            continue;
        }
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let expected = roots(&name);
        if expected.is_empty() {
            continue;
        }
        let out = verify_file(&p).args(["--all", "--json"]).assert();
        let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        let got: Vec<&str> = v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["root"].as_str().unwrap())
            .collect();
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn verify_warns_when_ids_hold_colons_and_says_so_in_json() {
    let q = vector("quoting");
    let newest = roots("quoting").last().unwrap().clone();
    verify_file(&q).expect(
        exits(0)
            .prints(format!("Computed L2StateRoot: {newest}"))
            .prints("Verification OK.")
            .says("warning: ambiguous state root")
            .says("colon:inside")
            .says("does not pin this state down"),
    );
    let a = verify_file(&q).arg("--json").expect(exits(0));
    let v = json_out(&a);
    assert_eq!(v["ambiguous_root"], true);
    assert_eq!(v["root"], newest.as_str());
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("ambiguous")));
    let a = verify_file(&q).args(["--all", "--json"]).expect(exits(0));
    let v = json_out(&a);
    for s in v["snapshots"].as_array().unwrap() {
        assert_eq!(s["ambiguous_root"], true, "{s}");
    }
    let a = verify_file(&q).args(["--last-valid", "--json"]).expect(exits(0));
    assert_eq!(json_out(&a)["ambiguous_root"], true);
}

#[test]
fn verify_says_nothing_about_a_state_without_colons() {
    verify_file(vector("basic")).expect(exits(0).says_not("ambiguous"));
    let a = verify_file(vector("basic")).arg("--json").expect(exits(0));
    assert_eq!(json_out(&a)["ambiguous_root"], false);
}

#[test]
fn create_anchor_refuses_an_ambiguous_state_and_writes_nothing() {
    let (_d, f, db) = data_dir("l2_snapshots.dat");
    for (task, client) in [("t:c", "x"), ("t", "c:x")] {
        cmd("ailee_create_anchor")
            .args(["--l2-state-file", "-", "--snapshot-file"])
            .arg(&f)
            .arg("--db-path")
            .arg(&db)
            .write_stdin(escrow_state(task, client))
            .expect(
                exits(1)
                    .says("ambiguous state root")
                    .says("--allow-ambiguous-root")
                    .prints_nothing(),
            );
        // Even printing an anchor for it is refused.
        cmd("ailee_create_anchor")
            .args(["--l2-state-file", "-"])
            .write_stdin(escrow_state(task, client))
            .expect(exits(1).prints_nothing());
    }
    assert!(!f.exists(), "nothing appended");
    check_db(&db).expect(exits(0).prints("Pending: 0"));
}

#[test]
fn allowed_ambiguous_states_share_a_root_and_the_json_says_so() {
    let run = |task: &str, client: &str| {
        let a = cmd("ailee_create_anchor")
            .args(["--l2-state-file", "-", "--allow-ambiguous-root", "--json"])
            .args(["--timestamp-ms", "1700000000000"])
            .write_stdin(escrow_state(task, client))
            .expect(
                exits(0)
                    .says("warning: ambiguous state root")
                    .says("allowed by --allow-ambiguous-root"),
            );
        json_out(&a)
    };
    let a = run("t:c", "x");
    let b = run("t", "c:x");
    assert_eq!(a["ambiguous_root"], true);
    assert_eq!(b["ambiguous_root"], true);
    assert_eq!(a["l2_state_root"], b["l2_state_root"], "two states, one root");
    // Without a colon the state is its own and nothing is said.
    let c = cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--json"])
        .write_stdin(escrow_state("t", "x"))
        .expect(exits(0).says_not("ambiguous"));
    assert_eq!(json_out(&c)["ambiguous_root"], false);
}

#[test]
fn create_anchor_from_the_quoting_vector_needs_the_override_and_keeps_the_nodes_root() {
    let q = vector("quoting");
    anchor_from(&q).expect(exits(1).says("colon:inside"));
    anchor_from(&q)
        .arg("--allow-ambiguous-root")
        .expect(exits(0).prints(format!("L2StateRoot: {}", roots("quoting").last().unwrap())));
}
