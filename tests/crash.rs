//! Crash campaign (issue 8): every writing tool is SIGKILLed at the N-th call
//! of each syscall that writes, syncs or renames (`strace -e inject=…:signal=
//! SIGKILL:when=N`), for N = 1, 2, … until the tool completes. After each kill
//! the invariants are checked: the input is unchanged, nothing half-written
//! stands under a final name, the database opens and checks, and a rerun
//! finishes the job. Each test prints how many kills it survived.

use ailee_recovery::{
    bin, blocks, check_db, cmd, exits, init_db, temp_db, vector, vector_copy, verify_file, Expecting, Node,
};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const SYSCALLS: &[&str] = &[
    "write",
    "pwrite64",
    "fsync",
    "fdatasync",
    "syncfs",
    "rename",
    "renameat2",
    "copy_file_range",
    "openat",
];

/// Runs `tool args` under strace with `inject=SYSCALL:ACTION:when=N`
/// (ACTION: `signal=SIGKILL`, `error=EIO`, …).
fn run_injected(
    tool: &str,
    args: &[&std::ffi::OsStr],
    syscall: &str,
    action: &str,
    n: usize,
) -> std::process::ExitStatus {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:{action}:when={n}"))
        .arg(bin(tool))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("strace (Debian package strace) must be installed: scripts/setup.sh installs it")
        .status
}

/// Kills `tool` at the `n`-th `syscall`; false when it ran to its end instead.
fn run_killed(tool: &str, args: &[std::ffi::OsString], syscall: &str, n: usize) -> bool {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
    let status = run_injected(tool, &args, syscall, "signal=SIGKILL", n);
    status.signal() == Some(9) || status.code() == Some(137)
}

/// Kills the tool at every call of every listed syscall; `check` runs after
/// each kill, `reset` before each run. Returns the number of kills.
fn campaign(
    tool: &str,
    args: &[std::ffi::OsString],
    mut reset: impl FnMut(),
    mut check: impl FnMut(&str, usize),
) -> usize {
    let mut kills = 0;
    for sc in SYSCALLS {
        for n in 1..400 {
            reset();
            if !run_killed(tool, args, sc, n) {
                break;
            }
            kills += 1;
            check(sc, n);
        }
    }
    eprintln!("{tool}: survived {kills} kills");
    kills
}

/// Removes the file or directory `p`, if there.
fn gone(p: &Path) {
    let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
}

fn os(s: &[&str]) -> Vec<std::ffi::OsString> {
    s.iter().map(Into::into).collect()
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map_or(vec![], |d| {
        d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    })
}

#[test]
fn prune_killed_anywhere_leaves_input_intact_and_no_partial_output() {
    let (d, input, before) = vector_copy("torn-tail", "in.dat");
    let out = d.path().join("out.dat");
    let expected = blocks("torn-tail")[1..].concat();
    let mut a = os(&["--file"]);
    a.push(input.clone().into());
    a.extend(os(&["--keep", "3", "--output"]));
    a.push(out.clone().into());
    let kills = campaign(
        "ailee_prune_snapshots",
        &a,
        || gone(&out),
        |sc, n| {
            assert_eq!(std::fs::read(&input).unwrap(), before, "input changed ({sc} #{n})");
            if let Ok(got) = std::fs::read(&out) {
                assert_eq!(got, expected, "partial output under the final name ({sc} #{n})");
            }
            // A rerun finishes the job.
            let _ = std::fs::remove_file(&out);
            cmd("ailee_prune_snapshots").args(&a).expect(exits(0));
            assert_eq!(std::fs::read(&out).unwrap(), expected);
        },
    );
    assert!(kills > 5);
}

#[test]
fn extract_killed_anywhere_leaves_only_complete_files() {
    let d = tempfile::tempdir().unwrap();
    let outdir = d.path().join("x");
    let expected = blocks("basic");
    let a = vec![vector("basic").into_os_string(), outdir.clone().into_os_string()];
    let kills = campaign(
        "ailee_extract_snapshots",
        &a,
        || gone(&outdir),
        |sc, n| {
            for name in names(&outdir) {
                if let Some(i) = name.strip_prefix("snapshot_").and_then(|r| r.strip_suffix(".dat")) {
                    let i: usize = i.parse().unwrap();
                    assert_eq!(
                        std::fs::read(outdir.join(&name)).unwrap(),
                        expected[i - 1],
                        "{name} ({sc} #{n})"
                    );
                }
            }
            cmd("ailee_extract_snapshots").args(&a).arg("--force").expect(exits(0));
            for (i, b) in expected.iter().enumerate() {
                assert_eq!(
                    &std::fs::read(outdir.join(format!("snapshot_{}.dat", i + 1))).unwrap(),
                    b
                );
            }
        },
    );
    assert!(kills > 5);
}

#[test]
fn append_killed_anywhere_keeps_every_complete_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("l2.dat");
    let state = d.path().join("s.json");
    std::fs::write(&state, r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1}]}}"#).unwrap();
    let a = [
        os(&["--l2-state-file"]),
        vec![state.as_os_str().to_owned()],
        os(&["--snapshot-file"]),
        vec![f.as_os_str().to_owned()],
    ]
    .concat();
    let base = std::fs::read(vector("basic")).unwrap();
    let kills = campaign(
        "ailee_create_anchor",
        &a,
        || std::fs::write(&f, &base).unwrap(),
        |sc, n| {
            let now = std::fs::read(&f).unwrap();
            assert!(now.starts_with(&base), "existing snapshots changed ({sc} #{n})");
            // The newest complete snapshot verifies (a torn append is ignored).
            verify_file(&f).expect(exits(0));
            // The next append (the rerun) verifies and every complete snapshot does.
            cmd("ailee_create_anchor").args(&a).expect(exits(0));
            verify_file(&f).arg("--all").expect(exits(0));
        },
    );
    assert!(kills >= 1);
}

#[test]
fn init_killed_anywhere_leaves_no_database_or_a_whole_one() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("reorg_db");
    let a = [os(&["--path"]), vec![p.as_os_str().to_owned()]].concat();
    let kills = campaign(
        "ailee_init_reorg_db",
        &a,
        || gone(&p),
        |sc, n| {
            if p.exists() {
                check_db(&p).expect(exits(0));
            } else {
                cmd("ailee_init_reorg_db").args(&a).expect(exits(0));
            }
            let _ = (sc, n);
        },
    );
    assert!(kills > 5);
}

#[test]
fn resync_killed_anywhere_reruns_to_a_consistent_database() {
    let node = Node::mined(300);
    let (_d, db) = temp_db();
    let url = node.url();
    let a = os(&[
        "--start-height",
        "0",
        "--batch-size",
        "5",
        "--bitcoin-rpc",
        &url,
        "--rpc-user",
        &node.user,
        "--rpc-password",
        &node.password,
        "--db-path",
    ]);
    let a = [a, vec![db.as_os_str().to_owned()]].concat();
    let mut kills = 0;
    let chain: Vec<String> = (0..=300).map(|h| node.hash(h)).collect();
    for sc in ["write", "pwrite64", "fdatasync", "fsync", "rename"] {
        for n in 1..120 {
            // From a fresh database each time, so the n-th call lands at a new point.
            let _ = std::fs::remove_dir_all(&db);
            init_db(&db);
            if !run_killed("ailee_resync_blocks", &a, sc, n) {
                break;
            }
            kills += 1;
            check_db(&db).expect(exits(0));
            // Whatever is stored agrees with the chain.
            let r = ailee_db::reorgdb::ReorgDb::open(&db, ailee_db::reorgdb::Mode::ReadOnly).unwrap();
            for item in r.blocks_from(0) {
                let (h, hash) = item.unwrap();
                assert_eq!(hash, chain[h as usize], "height {h} after a kill at {sc} #{n}");
            }
        }
    }
    eprintln!("ailee_resync_blocks: survived {kills} kills");
    cmd("ailee_resync_blocks").args(&a).expect(exits(0));
    check_db(&db).expect(exits(0).prints("heights 0..300, no gaps"));
    assert!(kills > 3);
}

/// Runs `tool args` with the `n`-th `syscall` failing with `errno`; returns
/// its exit code (0 also when the n-th call never came).
fn run_failing(tool: &str, args: &[&std::ffi::OsStr], syscall: &str, errno: &str, n: usize) -> Option<i32> {
    run_injected(tool, args, syscall, &format!("error={errno}"), n).code()
}

/// EIO and ENOSPC at every write/sync/rename of every writing file tool:
/// exit 1 (never a panic), inputs unchanged, no temporary file left, and
/// under a final name either nothing or a complete output (a failing
/// directory fsync after the rename reports the error over a complete file).
#[test]
fn io_errors_exit_1_and_leave_nothing_half_written() {
    let (d, input, before) = vector_copy("basic", "in.dat");
    let expected_prune = blocks("basic")[3..].concat();
    let out = d.path().join("out.dat");
    let outdir = d.path().join("x");
    let state = d.path().join("s.json");
    std::fs::write(&state, r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1}]}}"#).unwrap();
    let appendee = d.path().join("append.dat");
    let db = d.path().join("db");
    let o = |v: &Path| v.as_os_str().to_owned();
    let jobs: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        (
            "ailee_prune_snapshots",
            [
                os(&["--file"]),
                vec![o(&input)],
                os(&["--keep", "2", "--output"]),
                vec![o(&out)],
            ]
            .concat(),
        ),
        ("ailee_extract_snapshots", vec![o(&input), o(&outdir)]),
        (
            "ailee_create_anchor",
            [
                os(&["--l2-state-file"]),
                vec![o(&state)],
                os(&["--snapshot-file"]),
                vec![o(&appendee)],
            ]
            .concat(),
        ),
        ("ailee_init_reorg_db", [os(&["--path"]), vec![o(&db)]].concat()),
    ];
    let mut faults = 0;
    for (tool, args) in &jobs {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
        for sc in [
            "write",
            "pwrite64",
            "fsync",
            "fdatasync",
            "syncfs",
            "copy_file_range",
            "renameat2",
            "rename",
        ] {
            for errno in ["EIO", "ENOSPC"] {
                for n in 1..60 {
                    let _ = std::fs::remove_file(&out);
                    let _ = std::fs::remove_dir_all(&outdir);
                    let _ = std::fs::remove_dir_all(&db);
                    std::fs::write(&appendee, &before).unwrap();
                    let code = run_failing(tool, &a, sc, errno, n).unwrap_or(-1);
                    if code == 0 {
                        // The n-th call never came, or a fallback absorbed the error.
                        break;
                    }
                    faults += 1;
                    assert_eq!(code, 1, "{tool} {sc}={errno} #{n}: exit {code}");
                    assert_eq!(std::fs::read(&input).unwrap(), before, "input changed");
                    if let Ok(got) = std::fs::read(&out) {
                        assert_eq!(got, expected_prune, "{tool}: partial output ({sc}={errno} #{n})");
                    }
                    // The append either left the file as it was, or completed before a
                    // later failure (e.g. printing to stdout): then exactly one more
                    // complete snapshot that verifies — never a torn tail of its own.
                    let now = std::fs::read(&appendee).unwrap();
                    if now != before {
                        assert!(
                            now.starts_with(&before) && now.ends_with(b"END_SNAPSHOT\n"),
                            "{tool}: failed append left a torn tail ({sc}={errno} #{n})"
                        );
                        verify_file(&appendee).arg("--all").expect(exits(0));
                    }
                    for name in names(d.path()).iter().chain(names(&outdir).iter()) {
                        assert!(
                            !name.contains("ailee-tmp"),
                            "{tool}: temporary file left: {name} ({sc}={errno} #{n})"
                        );
                    }
                    for (i, b) in blocks("basic").iter().enumerate() {
                        if let Ok(got) = std::fs::read(outdir.join(format!("snapshot_{}.dat", i + 1))) {
                            assert_eq!(&got, b, "{tool}: partial snapshot file ({sc}={errno} #{n})");
                        }
                    }
                    if db.exists() {
                        check_db(&db).expect(exits(0));
                    }
                }
            }
        }
    }
    eprintln!("I/O faults injected: {faults}");
    assert!(faults > 20);
}

// The backup and restore campaigns (strace SIGKILL at every write, rename
// and fsync; SIGINT/SIGTERM/SIGHUP) are in tests/backup.rs.
