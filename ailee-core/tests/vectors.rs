//! The node's own files (tests/fixtures/vectors): roots, round trips, verdicts.

use ailee_core::format::{parse_block, write_snapshot};
use ailee_core::root::state_root;
use ailee_core::snapfile::{Note, SnapshotFile};
use ailee_core::verify::{check_block, Failure};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vectors")
}

/// Every vector of the directory (`NAME.dat`), by name.
fn names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".dat").map(String::from))
        .collect();
    names.sort();
    names
}

fn blocks(name: &str) -> (Vec<Vec<u8>>, Vec<Note>) {
    let sf = SnapshotFile::open(&dir().join(format!("{name}.dat")))
        .unwrap()
        .with_read_sizes(1000, 1000, 1000, 1000);
    let mut it = sf.blocks();
    let out = it.by_ref().map(|b| b.unwrap().bytes).collect();
    (out, it.notes().to_vec())
}

fn roots(name: &str) -> Vec<(usize, String)> {
    std::fs::read_to_string(dir().join(format!("{name}.roots")))
        .unwrap()
        .lines()
        .map(|l| {
            let (n, r) = l.split_once(' ').unwrap();
            (n.parse().unwrap(), r.to_string())
        })
        .collect()
}

#[test]
fn every_vector_snapshot_has_the_nodes_root() {
    for name in &names() {
        let (bl, _) = blocks(name);
        let expected = roots(name);
        assert_eq!(bl.len(), expected.len(), "{name}: number of complete snapshots");
        for (i, b) in bl.iter().enumerate() {
            let p = parse_block(b).unwrap_or_else(|e| panic!("{name} #{}: {e}", i + 1));
            assert_eq!(expected[i].0, i + 1);
            // The path `--all` takes (one pass, hashed as it is read) gives the node's root too.
            let c = ailee_core::format::check_parse(b, &mut Vec::new()).unwrap();
            assert_eq!(c.root, expected[i].1, "{name} #{} (check_parse)", i + 1);
            assert_eq!(
                state_root(&p.snapshot.state).unwrap(),
                expected[i].1,
                "{name} #{}",
                i + 1
            );
        }
    }
}

#[test]
fn parse_then_write_is_byte_identical_for_every_vector() {
    for name in &names() {
        for b in blocks(name).0 {
            let p = parse_block(&b).unwrap();
            let mut out = Vec::new();
            write_snapshot(&p.snapshot, &mut out).unwrap();
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&b), "{name}");
        }
    }
}

#[test]
fn newest_snapshot_from_the_end_is_the_last_complete_one() {
    for name in &names() {
        let (bl, _) = blocks(name);
        let sf = SnapshotFile::open(&dir().join(format!("{name}.dat"))).unwrap();
        let mut back: Vec<Vec<u8>> = sf.newest_first(None).unwrap().map(|b| b.unwrap().bytes).collect();
        back.reverse();
        assert_eq!(back, bl, "{name}");
    }
}

#[test]
fn torn_vectors_report_their_torn_blocks() {
    let (_, n) = blocks("torn-tail");
    assert!(matches!(n.as_slice(), [Note::Torn { at_eof: true, .. }]), "{n:?}");
    let (b, n) = blocks("torn-then-appended");
    assert_eq!(b.len(), 5);
    assert!(matches!(n.as_slice(), [Note::Torn { at_eof: false, .. }]), "{n:?}");
}

#[test]
fn newest_snapshot_verdicts_match_the_vector_readme() {
    let mut buf = Vec::new();
    for (name, expect) in [
        ("basic", None),
        ("quoting", None),
        ("torn-tail", None),
        ("torn-then-appended", None),
        ("bad-root", Some("root")),
        ("no-anchor", Some("none")),
        ("bad-hash", Some("hash")),
        ("pegout-missing-anchor", Some("pegout")),
    ] {
        let (bl, _) = blocks(name);
        let v = check_block(bl.last().unwrap(), &mut buf);
        let got = v.failure.as_ref().map(|f| match f {
            Failure::RootMismatch { .. } => "root",
            Failure::NoAnchor => "none",
            Failure::HashMismatch { .. } => "hash",
            Failure::PegoutMissingAnchor { .. } => "pegout",
            other => panic!("{name}: unexpected {other}"),
        });
        assert_eq!(got, expect, "{name}");
        // The earlier snapshots of every vector are healthy.
        for b in &bl[..bl.len() - 1] {
            assert!(check_block(b, &mut buf).ok(), "{name}");
        }
    }
}

/// Inputs the fuzzer found (tests/fixtures/fuzz-regressions): none may panic,
/// and any block that parses must write back and parse to the same snapshot.
#[test]
fn fuzz_regressions_hold() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fuzz-regressions");
    let mut n = 0;
    for target in std::fs::read_dir(&dir).unwrap() {
        for f in std::fs::read_dir(target.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            for b in SnapshotFile::open(&path).unwrap().blocks() {
                if let Ok(p) = parse_block(&b.unwrap().bytes) {
                    let mut out = Vec::new();
                    write_snapshot(&p.snapshot, &mut out).unwrap();
                    assert_eq!(parse_block(&out).unwrap().snapshot, p.snapshot);
                }
            }
            let _ = ailee_core::state_json::from_json(&String::from_utf8_lossy(&data));
            // What the node sends (fuzz target node_replies): the raw block
            // parser and the reply validators.
            node_reply(&data);
            n += 1;
        }
    }
    assert!(n >= 1);
}

/// The checks of fuzz target node_replies on one input: none may panic.
fn node_reply(data: &[u8]) {
    use ailee_core::rpc::reply;
    let block = |raw: &[u8]| {
        if let Ok(b) = ailee_core::block::parse(raw) {
            let _ = (b.hash(), b.time());
            b.txs.iter().for_each(|t| assert_eq!(t.txid().len(), 64));
            assert!(ailee_core::block::parse(&[raw, &[0]].concat()).is_err());
        }
    };
    block(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(raw) = ailee_core::block::unhex(text.trim()) {
        block(&raw);
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let mut all = vec![&v];
    match &v {
        serde_json::Value::Array(a) => all.extend(a.iter()),
        serde_json::Value::Object(o) => all.extend(o.values()),
        _ => {}
    }
    for v in all {
        let _ = (
            reply::txid(v),
            reply::block_hash(v),
            reply::height(v),
            reply::confirmations(v),
        );
        let _ = reply::same_hash("hash", Some(v), &"0".repeat(64));
        if let Ok(b) = reply::hex_bytes("raw", v) {
            block(&b);
        }
        let _ = reply::signed_txid(v);
        let _ = reply::signed_op_return_tx(v, b"x");
    }
}

#[test]
fn carriage_return_inside_a_string_is_corruption() {
    for line in ["balance \"a\rb\" 1", "balance \"a\\\rb\" 1"] {
        let block = format!("SNAPSHOT v1\ntimestamp_ms 1\nbalances 1\n{line}\nescrows 0\npegins 0\npegouts 0\ntasks 0\nanchor none\nEND_SNAPSHOT\n");
        let e = parse_block(block.as_bytes()).unwrap_err();
        assert!(e.message.contains("carriage return"), "{e}");
    }
}
