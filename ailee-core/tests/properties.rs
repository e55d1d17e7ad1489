//! Properties of the format: what the writer writes, the reader reads back
//! (same state, same root); every truncation of a valid file yields exactly
//! the snapshots complete before the cut, read forward or from the end.

use ailee_core::format::{check_parse, parse_block, strict_check, write_snapshot};
use ailee_core::model::*;
use ailee_core::root::state_root;
use ailee_core::snapfile::SnapshotFile;
use proptest::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Strings with the bytes that stress quoting and marker detection, never a line break.
fn text() -> impl Strategy<Value = Vec<u8>> {
    let bytes = prop::collection::vec(
        prop_oneof![
            Just(b'"'),
            Just(b'\\'),
            Just(b' '),
            Just(b':'),
            Just(b'\t'),
            Just(b'S'),
            Just(b'N'),
            Just(0xC3),
            Just(0xA9),
            (b'a'..=b'z')
        ],
        0..12,
    );
    prop_oneof![8 => bytes, 1 => Just(b"SNAPSHOT v1".to_vec()), 1 => Just(b"END_SNAPSHOT".to_vec())]
}

fn keys(n: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::btree_set(text(), 0..n).prop_map(|s: BTreeSet<Vec<u8>>| s.into_iter().collect())
}

fn b(v: Vec<u8>) -> Bytes<'static> {
    Cow::Owned(v)
}

/// One record per key, made by `f` from the key as its id.
fn each<T>(keys: Vec<Vec<u8>>, f: impl FnMut(Bytes<'static>) -> T) -> Vec<T> {
    keys.into_iter().map(b).map(f).collect()
}

fn state() -> impl Strategy<Value = L2State<'static>> {
    state_of(keys(6), keys(4), keys(3), keys(3), keys(3), text())
}

/// Strings as the node's ids are: no byte that needs escaping, no `:`.
fn plain_text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b' '),
            Just(b'\t'),
            Just(0xC3),
            Just(0xA9),
            (b'0'..=b'9'),
            (b'a'..=b'f')
        ],
        0..10,
    )
}

/// Distinct plain keys in an arbitrary order (sorted or not, as the node's files).
fn plain_keys(n: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::btree_set(plain_text(), 0..n)
        .prop_map(|s: BTreeSet<Vec<u8>>| s.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

fn plain_state() -> impl Strategy<Value = L2State<'static>> {
    state_of(
        plain_keys(40),
        plain_keys(6),
        plain_keys(4),
        plain_keys(4),
        plain_keys(6),
        plain_text(),
    )
}

fn state_of(
    bk: impl Strategy<Value = Vec<Vec<u8>>>,
    ek: impl Strategy<Value = Vec<Vec<u8>>>,
    ik: impl Strategy<Value = Vec<Vec<u8>>>,
    ok: impl Strategy<Value = Vec<Vec<u8>>>,
    tk: impl Strategy<Value = Vec<Vec<u8>>>,
    t: impl Strategy<Value = Vec<u8>>,
) -> impl Strategy<Value = L2State<'static>> {
    (bk, ek, ik, ok, tk, any::<u64>(), any::<i32>(), t).prop_map(|(bk, ek, ik, ok, tk, n, i, t)| L2State {
        balances: each(bk, |peer_id| Balance { peer_id, balance: n }),
        escrows: each(ek, |task_id| Escrow {
            task_id,
            client_peer_id: b(t.clone()),
            amount: n / 3,
            locked: n % 2 == 0,
            created_at: 7,
        }),
        pegins: each(ik, |peg_id| PegIn {
            peg_id,
            btc_tx_id: b(t.clone()),
            vout: n as u32,
            btc_amount: n,
            btc_source: b(vec![]),
            ailee_dest: b(t.clone()),
            status: i,
            confirmations: 0,
            initiated_time: u64::MAX,
            completed_time: 1,
        }),
        pegouts: each(ok, |peg_id| PegOut {
            peg_id,
            ailee_source: b(t.clone()),
            btc_dest: b(vec![b'x']),
            ailee_burn_amount: n,
            btc_release_amount: 0,
            status: i.wrapping_neg(),
            anchor_commitment_hash: b(t.clone()),
            initiated_time: 2,
            completed_time: 3,
        }),
        tasks: each(tk, |task_id| Task {
            task_id,
            task_type: i,
            priority: -1,
            submitter_id: b(t.clone()),
            submitted_at_ms: n,
            payload_hash: b(vec![]),
            anchor_commitment_hash: b(t.clone()),
        }),
    })
}

fn snapshot(s: L2State<'static>, ts: u64, with_anchor: bool) -> Snapshot<'static> {
    let anchor = with_anchor.then(|| ailee_core::anchor::build(&state_root(&s).unwrap(), ts, b"m \"x\""));
    Snapshot {
        timestamp_ms: ts,
        state: s,
        anchor,
    }
}

/// One edit of a block's bytes: the byte at `at` (a fraction of the length)
/// replaced, removed, or a copy of its line inserted after it.
#[derive(Debug, Clone)]
enum Edit {
    Set(f64, u8),
    Remove(f64),
    DuplicateLine(f64),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        Just(b'"'),
        Just(b'\\'),
        Just(b' '),
        Just(b'\n'),
        Just(b'\r'),
        Just(b':'),
        Just(b'0'),
        Just(b'9'),
        Just(b'-'),
        Just(b'x'),
        Just(0x80),
    ];
    prop_oneof![
        (0.0f64..1.0, byte).prop_map(|(a, b)| Edit::Set(a, b)),
        (0.0f64..1.0).prop_map(Edit::Remove),
        (0.0f64..1.0).prop_map(Edit::DuplicateLine),
    ]
}

fn apply(block: &mut Vec<u8>, e: &Edit) {
    let at = |f: f64, len: usize| ((len as f64) * f) as usize % len.max(1);
    match *e {
        Edit::Set(f, b) if !block.is_empty() => {
            let i = at(f, block.len());
            block[i] = b;
        }
        Edit::Remove(f) if !block.is_empty() => {
            block.remove(at(f, block.len()));
        }
        Edit::DuplicateLine(f) => {
            let i = at(f, block.len());
            let start = block[..i].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
            let end = block[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(block.len(), |p| i + p + 1);
            let line = block[start..end].to_vec();
            block.splice(end..end, line);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The one-pass path of `--all` (`check_parse`) agrees with the strict
    /// parser on every block: the same root, anchor and peg-outs, or the
    /// same error (same wording, same line), whatever the edits.
    #[test]
    fn the_fast_path_agrees_with_the_strict_parser(
        s in plain_state(),
        ts in any::<u64>(),
        a in any::<bool>(),
        edits in prop::collection::vec(edit(), 0..3),
    ) {
        let mut block = Vec::new();
        write_snapshot(&snapshot(s, ts, a), &mut block).unwrap();
        for e in &edits {
            apply(&mut block, e);
        }
        let (mut b1, mut b2) = (Vec::new(), Vec::new());
        let fast = check_parse(&block, &mut b1);
        let strict = strict_check(&block, &mut b2);
        prop_assert_eq!(&fast, &strict, "{}", String::from_utf8_lossy(&block));
        if edits.is_empty() {
            prop_assert_eq!(fast.unwrap().root, state_root(&parse_block(&block).unwrap().snapshot.state).unwrap());
        }
    }

    #[test]
    fn writer_then_reader_gives_back_the_state(s in state(), ts in any::<u64>(), a in any::<bool>()) {
        let snap = snapshot(s, ts, a);
        let mut out = Vec::new();
        write_snapshot(&snap, &mut out).unwrap();
        let p = parse_block(&out).unwrap();
        prop_assert_eq!(&p.snapshot, &snap);
        prop_assert_eq!(state_root(&p.snapshot.state).unwrap(), state_root(&snap.state).unwrap());
        let mut again = Vec::new();
        write_snapshot(&p.snapshot, &mut again).unwrap();
        prop_assert_eq!(again, out);
    }

    #[test]
    fn every_truncation_yields_exactly_the_complete_snapshots(
        states in prop::collection::vec(state(), 1..4),
        cut_frac in 0.0f64..1.0,
    ) {
        let mut file = Vec::new();
        let mut ends = Vec::new();
        for (i, s) in states.into_iter().enumerate() {
            write_snapshot(&snapshot(s, i as u64, true), &mut file).unwrap();
            ends.push(file.len());
        }
        let cut = ((file.len() as f64) * cut_frac) as usize;
        let data = &file[..cut];
        // Complete: the block ends before the cut, or only its final newline is cut off.
        let want = ends.iter().filter(|&&e| e <= cut || e == cut + 1).count();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, data).unwrap();
        // Forward in reads of 64 bytes (blocks over 64 bytes are not kept
        // while open, and are re-read from the file when they complete).
        let sf = SnapshotFile::open(&p).unwrap().with_read_sizes(64, 64, 64, 64);
        let fwd: Vec<Vec<u8>> = sf.blocks().map(|b| b.unwrap().bytes).collect();
        prop_assert_eq!(fwd.len(), want);
        // From the end, in windows of 64 bytes and in the tools' windows.
        let mut back: Vec<Vec<u8>> = sf.newest_first(None).unwrap().map(|b| b.unwrap().bytes).collect();
        back.reverse();
        prop_assert_eq!(&back, &fwd);
        for blk in &fwd {
            prop_assert!(parse_block(blk).is_ok());
        }
        // The tools' read sizes hand out the same blocks.
        let sf = SnapshotFile::open(&p).unwrap();
        let held: Vec<Vec<u8>> = sf.blocks().map(|b| b.unwrap().bytes).collect();
        prop_assert_eq!(&held, &fwd);
        let mut back: Vec<Vec<u8>> = sf.newest_first(None).unwrap().map(|b| b.unwrap().bytes).collect();
        back.reverse();
        prop_assert_eq!(&back, &fwd);
        prop_assert_eq!(sf.count().unwrap(), want as u64);
        prop_assert_eq!(&held, &fwd);
    }
}

#[test]
fn every_cut_of_a_vector_file_yields_its_complete_snapshots() {
    // Exhaustive over every byte position of basic.dat (9.5 KB).
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/vectors/basic.dat"
    ))
    .unwrap();
    let ends: Vec<usize> = file
        .windows(13)
        .enumerate()
        .filter(|(_, w)| *w == b"END_SNAPSHOT\n")
        .map(|(i, _)| i + 13)
        .collect();
    // Each cut read as a file of that length: the count of the first `cut`
    // bytes, in reads of 256 bytes.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, &file).unwrap();
    let sf = SnapshotFile::open(&p).unwrap().with_read_sizes(256, 256, 256, 256);
    for cut in 0..=file.len() {
        let want = ends.iter().filter(|&&e| e <= cut || e == cut + 1).count();
        assert_eq!(sf.count_range(0, cut as u64).unwrap(), want as u64, "cut at {cut}");
    }
}

#[test]
fn the_fast_path_agrees_with_the_strict_parser_on_every_fixture() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let mut n = 0;
    for sub in ["vectors", "malformed"] {
        for f in std::fs::read_dir(format!("{root}/{sub}")).unwrap() {
            let sf = SnapshotFile::open(&f.unwrap().path())
                .unwrap()
                .with_read_sizes(4096, 4096, 4096, 4096);
            sf.forward(|b| {
                let (mut b1, mut b2) = (Vec::new(), Vec::new());
                assert_eq!(check_parse(b.bytes, &mut b1), strict_check(b.bytes, &mut b2));
                n += 1;
                Ok(true)
            })
            .unwrap();
        }
    }
    assert!(n > 40, "{n} blocks");
}
