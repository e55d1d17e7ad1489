//! `ailee_extract_snapshots` and `ailee_prune_snapshots` end to end, and the
//! runbook procedures that use them, run as written (paths aside).

use ailee_core::format::parse_block;
use ailee_core::root::state_root;
use ailee_core::snapfile::{Note, SnapshotFile};
use ailee_recovery::{
    bash, entries, exits, extract_cmd, prune_cmd, roots, vector, vector_copy, vector_names, Expecting,
};
use predicates::prelude::*;
use predicates::str::contains;
use std::path::Path;

/// The input with every torn piece cut out: what the complete snapshots are.
fn complete_part(name: &str) -> Vec<u8> {
    let data = std::fs::read(vector(name)).unwrap();
    let sf = SnapshotFile::open(&vector(name)).unwrap();
    let mut blocks = sf.blocks();
    blocks.by_ref().for_each(|b| drop(b.unwrap()));
    let mut cut: Vec<(usize, usize)> = Vec::new();
    for n in blocks.notes() {
        if let Note::Torn { offset, len, .. } = *n {
            cut.push((offset as usize, (offset + len) as usize));
        }
    }
    let mut out = Vec::new();
    let mut at = 0;
    for (s, e) in cut {
        out.extend_from_slice(&data[at..s]);
        at = e;
    }
    out.extend_from_slice(&data[at..]);
    out
}

fn extract(name: &str, dir: &Path) -> Vec<Vec<u8>> {
    extract_cmd(vector(name), dir).expect(exits(0));
    let n = roots(name).len();
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        n,
        "{name}: only snapshot files"
    );
    (1..=n)
        .map(|i| std::fs::read(dir.join(format!("snapshot_{i}.dat"))).unwrap())
        .collect()
}

#[test]
fn extracted_files_concatenated_equal_the_complete_part_of_every_vector() {
    for name in &vector_names() {
        let d = tempfile::tempdir().unwrap();
        let files = extract(name, &d.path().join("out"));
        assert_eq!(files.concat(), complete_part(name), "{name}");
        for (i, f) in files.iter().enumerate() {
            let p = parse_block(f).unwrap();
            assert_eq!(
                state_root(&p.snapshot.state).unwrap(),
                roots(name)[i],
                "{name} #{}",
                i + 1
            );
        }
    }
}

#[test]
fn extract_summary_reports_count_and_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    extract_cmd(vector("torn-tail"), d.path().join("o")).expect(
        exits(0)
            .prints("Extracted 4 snapshots")
            .prints("torn tail at byte offset 7659 (967 bytes) not extracted")
            .says("torn snapshot at end of file"),
    );
    let out = extract_cmd(vector("basic"), d.path().join("j"))
        .arg("--json")
        .expect(exits(0));
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["snapshots"], 5);
    assert_eq!(v["torn_tail"], serde_json::Value::Null);
}

#[test]
fn extract_refuses_to_overwrite_without_force_and_removes_stale_with_it() {
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("o");
    extract_cmd(vector("basic"), &o).expect(exits(0));
    let before = std::fs::read(o.join("snapshot_5.dat")).unwrap();
    extract_cmd(vector("bad-root"), &o).expect(exits(1).says("--force"));
    assert_eq!(std::fs::read(o.join("snapshot_5.dat")).unwrap(), before);
    extract_cmd(vector("bad-root"), &o).arg("--force").expect(exits(0));
    assert_eq!(std::fs::read_dir(&o).unwrap().count(), 3);
}

#[test]
fn prune_output_equals_the_last_n_extracted_files() {
    for name in &vector_names() {
        let d = tempfile::tempdir().unwrap();
        let files = extract(name, &d.path().join("x"));
        for keep in 1..=files.len() + 1 {
            let o = d.path().join(format!("p{keep}"));
            prune_cmd(vector(name))
                .args(["--keep", &keep.to_string()])
                .arg("--output")
                .arg(&o)
                .expect(exits(0));
            let from = files.len().saturating_sub(keep);
            assert_eq!(std::fs::read(&o).unwrap(), files[from..].concat(), "{name} keep {keep}");
        }
    }
}

#[test]
fn prune_reports_kept_and_dropped_and_leaves_input_alone() {
    let (d, f, before) = vector_copy("torn-tail", "in.dat");
    prune_cmd(&f)
        .args(["--keep", "2", "--output"])
        .arg(d.path().join("o"))
        .expect(
            exits(0)
                .prints("Kept the last 2 snapshots; older snapshots dropped")
                .prints("torn tail at byte offset 7659 (967 bytes) dropped"),
        );
    prune_cmd(&f)
        .args(["--keep", "10", "--output"])
        .arg(d.path().join("o2"))
        .expect(exits(0).prints("Kept all 4 snapshots"));
    assert_eq!(std::fs::read(&f).unwrap(), before);
}

#[test]
fn prune_refuses_output_equal_to_input_existing_output_and_keep_0() {
    let (d, f, before) = vector_copy("basic", "in.dat");
    let same = d.path().join(".").join("in.dat");
    for out in [&f, &same] {
        prune_cmd(&f)
            .args(["--keep", "1", "--output"])
            .arg(out)
            .arg("--force")
            .expect(exits(1).says("is the input file"));
    }
    prune_cmd(&f)
        .args(["--keep", "0", "--output"])
        .arg(d.path().join("o"))
        .expect(exits(1));
    let o = d.path().join("o");
    std::fs::write(&o, "keep me").unwrap();
    prune_cmd(&f)
        .args(["--keep", "1", "--output"])
        .arg(&o)
        .expect(exits(1).says("--force"));
    assert_eq!(std::fs::read(&o).unwrap(), b"keep me");
    prune_cmd(&f)
        .args(["--keep", "1", "--output"])
        .arg(&o)
        .arg("--force")
        .expect(exits(0));
    assert_eq!(std::fs::read(&f).unwrap(), before);
    assert_eq!(entries(d.path()), 2, "no temporary files left");
}

#[test]
fn bad_input_exits_1_and_leaves_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    // Missing input.
    extract_cmd(d.path().join("nope"), d.path().join("o")).expect(exits(1).says("No such file"));
    assert!(!d.path().join("o").exists());
    prune_cmd(d.path().join("nope"))
        .args(["--keep", "1", "--output"])
        .arg(d.path().join("o"))
        .expect(exits(1));
    // OUTDIR is a file.
    let f = d.path().join("file");
    std::fs::write(&f, "x").unwrap();
    extract_cmd(vector("basic"), &f).expect(exits(1).says("not a directory"));
    // Unwritable output locations.
    extract_cmd(vector("basic"), "/proc/ailee-snapshots").expect(exits(1));
    prune_cmd(vector("basic"))
        .args(["--keep", "1", "--output", "/proc/ailee.dat"])
        .expect(exits(1));
    prune_cmd(vector("basic"))
        .args(["--keep", "1", "--output"])
        .arg(f.join("x"))
        .expect(exits(1));
    // No complete snapshot.
    extract_cmd(vector("empty"), d.path().join("e")).expect(exits(1).says("No snapshots found"));
    // The set is built beside OUTDIR and moved in only when complete.
    assert!(!d.path().join("e").exists());
    prune_cmd(vector("empty"))
        .args(["--keep", "1", "--output"])
        .arg(d.path().join("p"))
        .expect(exits(1));
    assert!(!d.path().join("p").exists());
    assert_eq!(entries(d.path()), 1, "only 'file'");
}

#[test]
fn disk_full_exits_1_with_no_partial_output() {
    // A 1 KiB file-size limit (each snapshot is larger) stands in for a full
    // disk: writes fail with EFBIG.
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    bash(&format!(
        "ulimit -f 1; ailee_extract_snapshots {v} {dir}/x 2>{dir}/err1 && exit 9; echo $? > {dir}/rc1
         ailee_prune_snapshots --file {v} --keep 5 --output {dir}/p.dat 2>{dir}/err2 && exit 9; echo $? > {dir}/rc2",
        v = vector("basic").display()
    ))
    .expect(exits(0));
    assert_eq!(std::fs::read_to_string(d.path().join("rc1")).unwrap().trim(), "1");
    assert_eq!(std::fs::read_to_string(d.path().join("rc2")).unwrap().trim(), "1");
    assert!(std::fs::read_to_string(d.path().join("err1"))
        .unwrap()
        .contains("File too large"));
    assert!(
        !d.path().join("x").exists(),
        "no OUTDIR: the set is moved in only when complete"
    );
    assert!(!d.path().join("p.dat").exists());
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().contains("ailee-tmp")),
        "{left:?}"
    );
}

/// A scratch data directory holding `name` as l2_snapshots.dat.
fn data_dir(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(vector(name), d.path().join("l2_snapshots.dat")).unwrap();
    d
}

#[test]
fn runbook_procedure_2_restore_from_earlier_snapshot() {
    // Newest snapshot (#3) is corrupt; the operator restores #2.
    let d = data_dir("bad-root");
    let root2 = &roots("bad-root")[1];
    bash(&format!(
        r#"cd {dir}
# Extract all snapshots
ailee_extract_snapshots ./l2_snapshots.dat ./snapshots/

# List available snapshots
ls -lh ./snapshots/

# Verify each snapshot
for file in ./snapshots/snapshot_*.dat; do
    echo "Verifying $file..."
    ailee_l2_verify --snapshot "$file" || true
done

# Use the latest valid snapshot
cp ./snapshots/snapshot_2.dat ./l2_snapshots.dat
ailee_l2_verify --snapshot ./l2_snapshots.dat"#,
        dir = d.path().display()
    ))
    .expect(exits(0).prints("Verifying ./snapshots/snapshot_3.dat..."))
    .stdout(contains(format!("Computed L2StateRoot: {root2}\nAnchor verified:")).count(2))
    .stdout(predicate::str::ends_with("Verification OK.\n"));
}

#[test]
fn runbook_state_root_mismatch_loop_finds_the_last_valid_snapshot() {
    for (name, expect) in [
        ("bad-root", 2),
        ("no-anchor", 2),
        ("bad-hash", 2),
        ("basic", 5),
        ("torn-tail", 4),
    ] {
        let d = data_dir(name);
        bash(&format!(
            r#"cd {dir}
# Try previous snapshot
ailee_extract_snapshots ./l2_snapshots.dat ./snapshots/

# Find last valid snapshot
for i in $(seq 10 -1 1); do
    snapshot="./snapshots/snapshot_${{i}}.dat"
    if ailee_l2_verify --snapshot "$snapshot" > /dev/null 2>&1; then
        echo "Found valid snapshot: $snapshot"
        cp "$snapshot" ./l2_snapshots.dat
        break
    fi
done
ailee_l2_verify --snapshot ./l2_snapshots.dat"#,
            dir = d.path().display()
        ))
        .expect(
            exits(0)
                .prints(format!("Found valid snapshot: ./snapshots/snapshot_{expect}.dat"))
                .prints(format!("Computed L2StateRoot: {}", roots(name)[expect - 1])),
        );
    }
}

#[test]
fn runbook_prune_verify_replace() {
    let d = data_dir("torn-tail");
    let newest = roots("torn-tail").pop().unwrap();
    bash(&format!(
        r#"cd {dir}
# Prune old snapshots (keep last N)
ailee_prune_snapshots --file ./l2_snapshots.dat \
                        --keep 2 \
                        --output ./l2_snapshots_pruned.dat

# Verify pruned file
ailee_l2_verify --snapshot ./l2_snapshots_pruned.dat

# Replace if valid
mv ./l2_snapshots.dat ./l2_snapshots_old.dat
mv ./l2_snapshots_pruned.dat ./l2_snapshots.dat
ailee_l2_verify --snapshot ./l2_snapshots.dat --all"#,
        dir = d.path().display()
    ))
    .expect(
        exits(0)
            .prints(format!("Computed L2StateRoot: {newest}"))
            .prints("snapshot 2: OK")
            .prints_not("snapshot 3:"),
    );
}
