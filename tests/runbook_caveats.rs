//! The runbook caveats of docs/GUIDE.md and docs/RUNBOOK.md: the hazard each
//! describes is real, and the safe command given for it works as written.

use ailee_recovery::{bash, bin, exits, root, vector, Expecting};
use std::path::{Path, PathBuf};

/// A snapshot file of 15 anchored states (basic.dat's first state, anchored
/// at timestamps 1..=15) whose newest, #15, is corrupt.
fn fifteen_with_the_newest_corrupt(dir: &Path) -> std::path::PathBuf {
    let f = dir.join("l2_snapshots.dat");
    let state = dir.join("state.json");
    bash(&format!(
        "ailee_l2_verify --snapshot {} --index 1 --print-state > {}",
        vector("basic").display(),
        state.display()
    ))
    .expect(exits(0));
    for ts in 1..=15 {
        bash(&format!(
            "ailee_create_anchor --l2-state-file {} --timestamp-ms {ts} --snapshot-file {} > /dev/null",
            state.display(),
            f.display()
        ))
        .expect(exits(0));
    }
    // Corrupt a balance of #15 only (the last occurrence in the file).
    let mut data = std::fs::read(&f).unwrap();
    let pos = data.windows(8).rposition(|w| w == b"balance ").unwrap();
    let digit = pos + data[pos..].iter().position(|&b| b == b'\n').unwrap() - 1;
    data[digit] = if data[digit] == b'9' { b'8' } else { data[digit] + 1 };
    std::fs::write(&f, data).unwrap();
    bash(&format!("ailee_l2_verify --snapshot {}", f.display())).expect(exits(2));
    f
}

#[test]
fn seq_10_loses_four_good_states_and_last_valid_does_not() {
    let _ = bin("ailee_l2_verify");
    let d = tempfile::tempdir().unwrap();
    let f = fifteen_with_the_newest_corrupt(d.path());
    let snaps = d.path().join("snapshots");
    let live = d.path().join("live.dat");

    // The runbook's loop, as written: it restores #10, not #14.
    bash(&format!(
        r#"ailee_extract_snapshots {f} {snaps}/ > /dev/null
for i in $(seq 10 -1 1); do
    snapshot="{snaps}/snapshot_${{i}}.dat"
    if ailee_l2_verify --snapshot "$snapshot" > /dev/null 2>&1; then
        echo "Found valid snapshot: $snapshot"
        cp "$snapshot" {live}
        break
    fi
done"#,
        f = f.display(),
        snaps = snaps.display(),
        live = live.display()
    ))
    .expect(exits(0).prints("snapshot_10.dat"));

    // The safe command (docs/RUNBOOK.md): the newest snapshot that verifies.
    bash(&format!(
        r#"n=$(ailee_l2_verify --snapshot {f} --last-valid) || exit 1
ailee_extract_snapshots --force {f} {snaps}/ || exit 1
cp "{snaps}/snapshot_${{n}}.dat" {live}
echo "restored $n""#,
        f = f.display(),
        snaps = snaps.display(),
        live = live.display()
    ))
    .expect(exits(0).prints("restored 14"));
    assert_eq!(
        std::fs::read(&live).unwrap(),
        std::fs::read(snaps.join("snapshot_14.dat")).unwrap()
    );
    bash(&format!("ailee_l2_verify --snapshot {} --all", live.display())).expect(exits(0));
}

#[test]
fn a_stale_extraction_is_refused_and_the_checked_procedure_stops() {
    let _ = bin("ailee_l2_verify");
    let d = tempfile::tempdir().unwrap();
    let snaps = d.path().join("snapshots");
    let live = d.path().join("live.dat");
    // Someone extracted another file there earlier.
    bash(&format!(
        "ailee_extract_snapshots {} {}/ > /dev/null",
        vector("torn-then-appended").display(),
        snaps.display()
    ))
    .expect(exits(0));
    bash(&format!(
        r#"ailee_extract_snapshots {f} {snaps}/ || exit 1
cp {snaps}/snapshot_3.dat {live}"#,
        f = vector("bad-root").display(),
        snaps = snaps.display(),
        live = live.display()
    ))
    .expect(exits(1).says("refusing to overwrite"));
    assert!(!live.exists(), "the procedure went on with stale files");
}

#[test]
fn no_valid_snapshot_makes_last_valid_fail_with_nothing_on_stdout() {
    bash(&format!(
        "n=$(ailee_l2_verify --snapshot {} --last-valid) || {{ echo \"none ($?) '$n'\"; exit 0; }}; echo \"got $n\"",
        root().join("tests/fixtures/malformed/root-mismatch.dat").display()
    ))
    .expect(exits(0).prints_exactly("none (2) ''\n"));
}

// ------------------------------------------------ the drill's --data-dir (issue 25)

/// `scripts/test_recovery.sh ARGS` with the tools' target directory.
fn drill(args: &str) -> std::process::Output {
    let target = bin("ailee_l2_verify")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    bash(&format!("{} {args}", root().join("scripts/test_recovery.sh").display()))
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap()
}

/// Makes the directory `parent/name` holding `files` (name, content).
fn dir_with(parent: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    for (f, content) in files {
        std::fs::write(dir.join(f), content).unwrap();
    }
    dir
}

#[test]
fn the_drill_never_deletes_a_directory_it_did_not_create() {
    // Before: `rm -rf D/crash` (and D/reorg, D/corruption) whatever they held.
    let d = tempfile::tempdir().unwrap();
    let crash = dir_with(d.path(), "crash", &[("incident-notes.txt", "03:12 node restarted\n")]);
    let out = drill(&format!("--mode crash --data-dir {}", d.path().display()));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was not created by the drill"), "{err}");
    assert_eq!(
        std::fs::read_to_string(crash.join("incident-notes.txt")).unwrap(),
        "03:12 node restarted\n"
    );
    // --mode all checks every mode's directory before anything runs: a
    // drill-made D/crash is not touched either when D/reorg is refused.
    std::fs::remove_file(crash.join("incident-notes.txt")).unwrap();
    std::fs::write(crash.join(".ailee-drill"), "").unwrap();
    std::fs::write(crash.join("l2_snapshots.dat"), "kept\n").unwrap();
    let reorg = dir_with(d.path(), "reorg", &[("notes", "mine\n")]);
    let out = drill(&format!("--mode all --data-dir {}", d.path().display()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}", reorg.display())));
    assert_eq!(std::fs::read_to_string(reorg.join("notes")).unwrap(), "mine\n");
    assert_eq!(
        std::fs::read_to_string(crash.join("l2_snapshots.dat")).unwrap(),
        "kept\n"
    );
    // A symlink is never followed into.
    std::fs::remove_dir_all(&reorg).unwrap();
    std::os::unix::fs::symlink(&crash, &reorg).unwrap();
    let out = drill(&format!("--mode reorg --data-dir {}", d.path().display()));
    assert_eq!(out.status.code(), Some(1));
    assert!(crash.join("l2_snapshots.dat").exists());
}

#[test]
fn the_drill_recreates_its_own_directory_and_marks_it() {
    // A directory the drill made earlier (marker) is replaced; the new one
    // carries the marker so that the next run may replace it too.
    let d = tempfile::tempdir().unwrap();
    let crash = dir_with(d.path(), "crash", &[(".ailee-drill", ""), ("stale-from-last-run", "x")]);
    let out = drill(&format!("--mode crash --data-dir {}", d.path().display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("SUMMARY: ") && stdout.contains(", 0 failed"),
        "{stdout}"
    );
    assert!(!crash.join("stale-from-last-run").exists());
    assert!(crash.join(".ailee-drill").is_file());
    assert!(crash.join("l2_snapshots.dat").is_file());
}

/// A step of the drill counts every command it runs, not only its last: a
/// step ran `( set -e; eval "…" )` as an `if` condition, where bash ignores
/// errexit, so "restore, verify, check, ls" passed on the `ls` alone. The
/// drill's own `now_ms` and `step`, taken from the script, run a step whose
/// first command fails.
#[test]
fn a_drill_step_fails_when_any_of_its_commands_fails() {
    let drill = std::fs::read_to_string(root().join("scripts/test_recovery.sh")).unwrap();
    let now_ms = drill.lines().find(|l| l.starts_with("now_ms() {")).unwrap();
    let start = drill.find("\nstep() {").expect("the drill's step function");
    let step = &drill[start..start + drill[start..].find("\n}\n").unwrap() + 3];
    bash(&format!(
        "set +e -uo pipefail\nscratch=$(mktemp -d)\npass=0 fail=0\n{now_ms}\n{step}\n\
         first_fails() {{ false; true; }}\n\
         step 'the first command fails' first_fails\nstep 'all pass' true\n\
         rm -rf \"$scratch\"\necho \"pass=$pass fail=$fail\""
    ))
    .expect(
        exits(0)
            .prints("FAIL  the first command fails")
            .prints("PASS  all pass")
            .prints("pass=1 fail=1"),
    );
}
