//! `ailee_l2_verify` end to end: the node's vectors, every kind of corruption,
//! operational errors, the runbook's output.

use ailee_recovery::{cmd, exits, roots, vector, verify_file, Expecting};
use predicates::prelude::*;
use predicates::str::contains;
use std::path::{Path, PathBuf};

#[test]
fn healthy_vectors_verify_with_the_nodes_newest_root() {
    for name in ["basic", "quoting", "torn-tail", "torn-then-appended"] {
        let root = roots(name).pop().unwrap();
        verify_file(vector(name))
            .expect(exits(0))
            .stdout(predicate::str::starts_with(format!(
                "Computed L2StateRoot: {root}\nAnchor verified: "
            )))
            .stdout(predicate::str::ends_with("\nVerification OK.\n"));
    }
}

#[test]
fn torn_tail_is_a_warning_on_stderr() {
    verify_file(vector("torn-tail")).expect(exits(0).says("torn snapshot at end of file (byte offset 7659"));
}

#[test]
fn failing_vectors_exit_2_with_the_nodes_messages() {
    for (name, msg) in [
        (
            "bad-root",
            "Anchor verification failed: Anchor state root mismatch. expected=",
        ),
        (
            "bad-hash",
            "Anchor verification failed: Anchor hash mismatch. expected=",
        ),
        ("no-anchor", "No anchor commitment present in snapshot."),
        ("pegout-missing-anchor", "missing anchor commitment hash."),
    ] {
        let root = roots(name).pop().unwrap();
        verify_file(vector(name)).expect(
            exits(2)
                .prints_exactly(format!("Computed L2StateRoot: {root}\n"))
                .says(msg),
        );
    }
}

#[test]
fn bad_root_names_computed_and_anchor_roots() {
    let root = roots("bad-root").pop().unwrap();
    verify_file(vector("bad-root")).expect(exits(2).says(format!("expected={root} anchor=")));
}

#[test]
fn empty_file_has_no_snapshots_exit_1() {
    let p = vector("empty");
    verify_file(&p).expect(exits(1).prints_nothing().says_exactly(format!(
        "Failed to load snapshot: No snapshots found in file: {}\n",
        p.display()
    )));
}

#[test]
fn missing_file_exit_1_with_os_error() {
    verify_file(Path::new("/nonexistent/l2_snapshots.dat"))
        .expect(exits(1).says("Failed to load snapshot: /nonexistent/l2_snapshots.dat: No such file or directory"));
}

#[test]
fn directory_or_bad_path_exit_1() {
    let d = tempfile::tempdir().unwrap();
    verify_file(d.path()).expect(exits(1).says("Failed to load snapshot"));
    let f = d.path().join("f");
    std::fs::write(&f, "x").unwrap();
    verify_file(f.join("child")).expect(exits(1).says("Not a directory"));
}

#[test]
fn argument_errors_exit_1_not_2() {
    cmd("ailee_l2_verify").expect(exits(1).says("--snapshot"));
    for extra in [
        &["--bogus"][..],
        &["--index", "0"],
        &["--index", "nope"],
        &["--all", "--last-valid"],
    ] {
        verify_file("x").args(extra).expect(exits(1));
    }
}

#[test]
fn help_lists_the_exit_codes() {
    cmd("ailee_l2_verify")
        .arg("--help")
        .expect(exits(0).prints("Exit codes:").prints("130"));
}

fn basic_lines() -> Vec<String> {
    std::fs::read_to_string(vector("basic"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// basic.dat with file line `line` (1-based) replaced.
fn with_line(dir: &Path, line: usize, text: &str) -> PathBuf {
    let mut l = basic_lines();
    l[line - 1] = text.to_string();
    let p = dir.join(format!("mut{line}.dat"));
    std::fs::write(&p, l.join("\n") + "\n").unwrap();
    p
}

// Snapshot 5 of basic.dat spans file lines 107..=133; line 110 is its first balance.
const CORRUPTIONS: &[(usize, &str, usize, &str)] = &[
    (110, r#"balance "peerbu11n 14547585979"#, 110, "peerId"),
    (
        110,
        r#"balance "peerbu11n" 14547x85979"#,
        110,
        "not a plain decimal number",
    ),
    (110, r#"balance "peerbu11n" 18446744073709551616"#, 110, "out of range"),
    (110, r#"balance "peerbu11n" -5"#, 110, "not a plain decimal number"),
    (110, r#"balance "peerbu11n" +5"#, 110, "not a plain decimal number"),
    (110, r#"balance "peerbu11n" 007"#, 110, "plain decimal form"),
    (110, r#"balance  "peerbu11n" 5"#, 110, "extra space"),
    (110, r#"balance "peerbu11n" 5 6"#, 110, "trailing data"),
    (110, r#"balance "peerbu11n""#, 110, "missing field balance"),
    (110, r#"bolance "peerbu11n" 5"#, 110, "unknown tag"),
    (109, "balances 9", 118, "count mismatch"),
    (109, "balances 7", 117, "count mismatch"),
    (
        111,
        r#"balance "peerbu11n" 141552638"#,
        111,
        "duplicate key \"peerbu11n\" in balances (also on line 110)",
    ),
    (
        119,
        r#"escrow "peer23jls7hcam" "peer2t89eoahbo13mpk" 74233420805 2 79410585335"#,
        119,
        "expected 0 or 1",
    ),
    (122, "pegouts 2", 122, "out of order"),
    (108, "timestamp_ms", 108, "missing field timestamp_ms"),
    (
        129,
        "task \"x\" 2147483648 0 \"s\" 1 \"p\" \"\"",
        129,
        "out of range for i32",
    ),
    (132, "anchor \"x\" 1", 132, "missing field recoveryMetadata"),
];

#[test]
fn each_kind_of_corruption_exits_2_naming_snapshot_and_line() {
    let d = tempfile::tempdir().unwrap();
    for &(line, text, at, msg) in CORRUPTIONS {
        let p = with_line(d.path(), line, text);
        verify_file(&p).expect(
            exits(2)
                .says(format!("Snapshot 5 is corrupt: line {at}: "))
                .says(msg)
                .says_not("panicked"),
        );
        verify_file(&p).arg("--all").expect(
            exits(2)
                .prints(format!("snapshot 5: FAILED Snapshot 5 is corrupt: line {at}: "))
                .prints("snapshot 4: OK"),
        );
    }
}

#[test]
fn crlf_file_still_verifies_with_one_warning() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("crlf.dat");
    std::fs::write(
        &p,
        std::fs::read_to_string(vector("basic")).unwrap().replace('\n', "\r\n"),
    )
    .unwrap();
    let out = verify_file(&p).expect(exits(0)).get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.matches("\\r\\n").count(), 1, "{err}");
    verify_file(&p).arg("--all").expect(exits(0));
}

#[test]
fn missing_final_newline_is_complete_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nonl.dat");
    let s = std::fs::read_to_string(vector("basic")).unwrap();
    std::fs::write(&p, s.trim_end_matches('\n')).unwrap();
    verify_file(&p).expect(exits(0).says("without a final newline"));
}

#[test]
fn end_marker_glued_to_next_header_completes_the_block() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("glued.dat");
    let s = std::fs::read_to_string(vector("basic")).unwrap();
    // Lose the newline after snapshot 4's END_SNAPSHOT only.
    let at = s.match_indices("END_SNAPSHOT\n").nth(3).unwrap().0 + "END_SNAPSHOT".len();
    std::fs::write(&p, [&s[..at], &s[at + 1..]].concat()).unwrap();
    let root = roots("basic").pop().unwrap();
    verify_file(&p).expect(exits(0).prints(root));
    verify_file(&p).arg("--all").expect(exits(0).prints("snapshot 5: OK"));
}

#[test]
fn index_verifies_that_snapshot_with_the_same_output_lines() {
    let r = roots("bad-root");
    verify_file(vector("bad-root"))
        .args(["--index", "2"])
        .expect(exits(0))
        .stdout(predicate::str::starts_with(format!(
            "Computed L2StateRoot: {}\nAnchor verified: ",
            r[1]
        )));
    verify_file(vector("bad-root")).args(["--index", "3"]).expect(exits(2));
    verify_file(vector("bad-root"))
        .args(["--index", "4"])
        .expect(exits(1).says("has 3 complete snapshots"));
}

#[test]
fn all_prints_one_line_per_snapshot_and_fails_if_any_fails() {
    let out = verify_file(vector("bad-hash")).arg("--all").expect(exits(2));
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("snapshot 1: OK root="));
    assert!(lines[2].starts_with("snapshot 3: FAILED Anchor verification failed: Anchor hash mismatch."));
    let basic = roots("basic");
    let out = verify_file(vector("basic"))
        .args(["--all", "--threads", "1"])
        .expect(exits(0));
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for (i, l) in stdout.lines().enumerate() {
        assert!(
            l.starts_with(&format!("snapshot {}: OK root={} ", i + 1, basic[i])),
            "{l}"
        );
    }
}

#[test]
fn last_valid_prints_the_newest_snapshot_that_verifies() {
    for (name, n) in [
        ("basic", "5"),
        ("bad-root", "2"),
        ("no-anchor", "2"),
        ("torn-tail", "4"),
        ("torn-then-appended", "5"),
    ] {
        verify_file(vector(name))
            .arg("--last-valid")
            .expect(exits(0).prints_exactly(format!("{n}\n")));
    }
    verify_file(vector("empty")).arg("--last-valid").expect(exits(1));
    let d = tempfile::tempdir().unwrap();
    let only5: String = basic_lines()[106..].join("\n") + "\n";
    let q = d.path().join("only5.dat");
    std::fs::write(&q, only5.replace("balance \"peerbu11n\"", "balance \"peerbu11n")).unwrap();
    verify_file(&q).arg("--last-valid").expect(exits(2).prints_nothing());
}

#[test]
fn json_output_is_machine_readable() {
    let out = verify_file(vector("bad-root")).arg("--json").expect(exits(2));
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["root"], roots("bad-root")[2]);
    assert!(v["error"].as_str().unwrap().contains("state root mismatch"));
    let out = verify_file(vector("basic")).args(["--all", "--json"]).expect(exits(0));
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 5);
    assert_eq!(v["snapshots"][4]["root"], roots("basic")[4]);
}

#[test]
fn pegout_naming_an_unknown_anchor_is_a_warning_without_a_database() {
    // An extracted newest snapshot alone: its peg-outs name snapshot 4's anchor.
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("snapshot_5.dat");
    std::fs::write(&q, basic_lines()[106..].join("\n") + "\n").unwrap();
    verify_file(&q).expect(exits(0).says("no earlier snapshot in this file records"));
    // In the full file the anchor is found: no warning.
    verify_file(vector("basic")).expect(exits(0).says_nothing());
}

#[test]
fn a_closed_stdout_pipe_is_not_an_error() {
    ailee_recovery::bash(&format!(
        "ailee_l2_verify --snapshot {} --all | head -n 1 >/dev/null",
        vector("basic").display()
    ))
    .expect(exits(0));
}

/// The catalogue of malformed files (tests/fixtures/malformed, made by its
/// make.py): every rule of SPEC §1.1, each with its exit code and message,
/// in the default mode and with --all.
#[test]
fn malformed_catalogue_gives_the_expected_exit_codes_and_messages() {
    let dir = ailee_recovery::root().join("tests/fixtures/malformed");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let mut n = 0;
    for line in table.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, code, msg, all_msg) = (f[0], f[1].parse::<i32>().unwrap(), f[2], f[3]);
        let file = dir.join(format!("{name}.dat"));
        verify_file(&file)
            .assert()
            .code(code)
            .stderr(contains(msg))
            .stderr(contains("panicked").not());
        let out = verify_file(&file).arg("--all").assert().code(code);
        let o = out.get_output();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains(all_msg), "{name} --all: {text}");
        n += 1;
    }
    assert!(n >= 30, "{n} cases");
}

/// Runs `ailee_l2_verify ARGS` under `/usr/bin/time`: peak resident memory
/// (KiB), exit code, stdout.
fn peak_of(args: &[&std::ffi::OsStr]) -> (u64, Option<i32>, Vec<u8>) {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "maxrss %M KiB"])
        .arg(ailee_recovery::bin("ailee_l2_verify"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let kib = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("maxrss ")?.strip_suffix(" KiB")?.parse().ok())
        .unwrap_or_else(|| panic!("no maxrss line: {err}"));
    (kib, out.status.code(), out.stdout)
}

#[test]
fn print_state_streams_the_block_from_the_file() {
    // Before: the newest block was held while it was printed (a 31 MB block
    // here, up to the 256 MiB block cap). Keys in the node's order (not
    // sorted), so duplicates are checked without the order's help.
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("l2.dat");
    let n = 1_000_000u64;
    let mut block = format!("SNAPSHOT v1\ntimestamp_ms 7\nbalances {n}\n");
    for i in 0..n {
        block.push_str(&format!("balance \"peer{:08}\" {i}\n", i * 7919 % n));
    }
    block.push_str("escrows 0\npegins 0\npegouts 0\ntasks 0\nanchor none\nEND_SNAPSHOT\n");
    std::fs::write(&f, &block).unwrap();
    let (kib, code, out) = peak_of(&["--snapshot".as_ref(), f.as_ref(), "--print-state".as_ref()]);
    assert_eq!(code, Some(0));
    assert!(
        kib < 24 << 10,
        "peak RSS {kib} KiB for a {} MB block",
        block.len() >> 20
    );
    let mut want = Vec::new();
    ailee_core::state_json::write_block_json(block.as_bytes(), &mut want).unwrap();
    want.push(b'\n');
    assert!(out == want, "the streamed JSON differs from the whole block's");
}

#[test]
fn all_over_many_tiny_snapshots_holds_a_bounded_number_of_reports() {
    // Before: one report per block of every 8 MiB chunk in flight, ~87,000
    // reports a chunk for snapshots this small (212 MB for 2,000,000 of them).
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("l2.dat");
    let n = 600_000;
    let one = b"SNAPSHOT v1\ntimestamp_ms 1\nbalances 0\nescrows 0\npegins 0\npegouts 0\ntasks 0\nanchor none\nEND_SNAPSHOT\n";
    std::fs::write(&f, one.repeat(n)).unwrap();
    let (kib, code, out) = peak_of(&["--snapshot".as_ref(), f.as_ref(), "--all".as_ref(), "-q".as_ref()]);
    assert_eq!(code, Some(2));
    assert!(kib < 100 << 10, "peak RSS {kib} KiB");
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), n);
    assert_eq!(
        out.lines().last(),
        Some(format!("snapshot {n}: FAILED No anchor commitment present in snapshot.").as_str())
    );
}
