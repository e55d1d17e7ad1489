//! `ailee_l2_verify --reorg-db` without RocksDB in the verifier (issue 13: the
//! newest-snapshot check must start fast, and RocksDB's C++ runtime cost 2 ms
//! of every start): the tools that never open the database do not link it;
//! `ailee_l2_verify` reads records through `ailee_init_reorg_db --get-anchor -`,
//! which answers one JSON line per hash as it reads them.

use ailee_core::records::{AnchorRecord, AnchorStatus};
use ailee_core::verify::anchor_hash_of;
use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use ailee_recovery::{append_state, bin, blocks, cmd, exits, vector, verify_file, Expecting};
use predicates::str::contains;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn record(hash: &str, status: AnchorStatus) -> AnchorRecord {
    AnchorRecord {
        anchor_hash: hash.to_string(),
        bitcoin_tx_id: "c".repeat(64),
        bitcoin_height: 105,
        confirmations: 3,
        broadcast_time: 1_700_000_000_000,
        retry_count: 2,
        status,
        l2_state_root: "e".repeat(64),
    }
}

/// A database holding `records`.
fn database(dir: &Path, records: &[AnchorRecord]) -> PathBuf {
    let p = dir.join("reorg_db");
    ReorgDb::create(&p).unwrap();
    let db = ReorgDb::open(&p, Mode::ReadWrite).unwrap();
    let mut b = Batch::default();
    for r in records {
        b.put_anchor(r);
    }
    db.write(b).unwrap();
    db.flush().unwrap();
    p
}

/// The anchor hash of the newest snapshot of the `basic` vector.
/// `ailee_l2_verify --snapshot basic.dat --reorg-db DB`.
fn verify_basic(db: &Path) -> assert_cmd::Command {
    let mut c = verify_file(vector("basic"));
    c.arg("--reorg-db").arg(db);
    c
}

fn newest_anchor() -> String {
    anchor_hash_of(blocks("basic").last().unwrap()).expect("basic's newest snapshot is anchored")
}

#[test]
fn tools_that_never_open_the_database_do_not_link_rocksdb() {
    // What RocksDB brings: libstdc++ as a needed library, its C++ symbols.
    let links_rocksdb = |tool: &str| {
        let bytes = std::fs::read(bin(tool)).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        (has(b"libstdc++.so"), has(b"_ZN7rocksdb"))
    };
    // The control: the tool that opens the database does link it (so the
    // check below can tell).
    assert_eq!(links_rocksdb("ailee_init_reorg_db"), (true, true));
    for tool in ["ailee_l2_verify", "ailee_extract_snapshots", "ailee_prune_snapshots"] {
        assert_eq!(links_rocksdb(tool), (false, false), "{tool} links RocksDB");
    }
}

#[test]
fn get_anchor_dash_answers_each_hash_as_it_is_read() {
    let d = tempfile::tempdir().unwrap();
    let a = "a".repeat(64);
    let db = database(d.path(), &[record(&a, AnchorStatus::Confirmed)]);
    // A record that does not decode, written by RocksDB's own tool.
    let bad = "b".repeat(64);
    let out = Command::new("ldb")
        .arg(format!("--db={}", db.display()))
        .arg("--ignore_unknown_options")
        .args(["put", &format!("anchor:{bad}"), "not|a|record"])
        .output()
        .expect("ldb (Debian rocksdb-tools): scripts/setup.sh installs it");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut child = Command::new(bin("ailee_init_reorg_db"))
        .arg("--path")
        .arg(&db)
        .args(["--get-anchor", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    // Each answer arrives before the next question is asked: no buffering
    // until the end of input (a caller waits for each answer).
    let mut ask = |hash: &str| -> serde_json::Value {
        writeln!(input, "{hash}").unwrap();
        input.flush().unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    let found = ask(&a);
    assert_eq!(found["found"], true);
    assert_eq!(found["status"], "CONFIRMED");
    assert_eq!(found["bitcoin_tx_id"], "c".repeat(64));
    assert_eq!(found["bitcoin_height"], 105);
    assert_eq!(found["retry_count"], 2);
    assert_eq!(found["l2_state_root"], "e".repeat(64));
    let absent = ask(&"f".repeat(64));
    assert_eq!(
        absent,
        serde_json::json!({"anchor_hash": "f".repeat(64), "found": false})
    );
    let broken = ask(&bad);
    assert_eq!(broken["exit_code"], 2, "{broken}");
    assert!(broken["error"].as_str().unwrap().contains(&bad), "{broken}");
    // And it goes on answering after a record that does not decode.
    assert_eq!(ask(&a)["status"], "CONFIRMED");
    drop(input);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn verify_reads_the_database_through_the_helper() {
    let d = tempfile::tempdir().unwrap();
    let own = newest_anchor();
    // Recorded CONFIRMED: verifies, no warning.
    let ok = database(&d.path().join("ok"), &[record(&own, AnchorStatus::Confirmed)]);
    verify_basic(&ok).expect(exits(0).says_nothing());
    // INVALIDATED_REORG: the snapshot's own anchor is void.
    let void = database(&d.path().join("void"), &[record(&own, AnchorStatus::InvalidatedReorg)]);
    verify_basic(&void).expect(exits(2).says(format!("the snapshot's own anchor {own} is INVALIDATED_REORG")));
    // Not recorded: a warning, exit 0.
    let empty = database(&d.path().join("empty"), &[]);
    verify_basic(&empty).expect(exits(0).says("is not recorded in the reorg database"));
    // A record that does not decode: exit 2, as when RocksDB was read in
    // process.
    let out = Command::new("ldb")
        .arg(format!("--db={}", empty.display()))
        .arg("--ignore_unknown_options")
        .args(["put", &format!("anchor:{own}"), "garbage"])
        .output()
        .unwrap();
    assert!(out.status.success());
    verify_basic(&empty).expect(exits(2).says(own.as_str()));
    // No database there: exit 1 with the reader's message, once.
    let out = verify_basic(&d.path().join("absent"))
        .expect(exits(1))
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cannot open reorg database").count(), 1, "{err}");
    assert!(err.contains("no database here"), "{err}");
    // --all and --last-valid read it the same way.
    verify_file(vector("basic"))
        .arg("--reorg-db")
        .arg(&void)
        .arg("--last-valid")
        .expect(exits(0).prints_exactly(format!("{}\n", blocks("basic").len() - 1)));
}

#[test]
fn verify_finds_its_reader_or_says_which_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let own = newest_anchor();
    let db = database(d.path(), &[record(&own, AnchorStatus::Confirmed)]);
    // The verifier alone in a directory, the build directory not on PATH.
    let lone = d.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    std::fs::copy(bin("ailee_l2_verify"), lone.join("ailee_l2_verify")).unwrap();
    let run = |env: &[(&str, &Path)]| {
        let mut c = assert_cmd::Command::new(lone.join("ailee_l2_verify"));
        c.env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C");
        for (k, v) in env {
            c.env(k, v);
        }
        c.arg("--snapshot").arg(vector("basic")).arg("--reorg-db").arg(&db);
        c
    };
    run(&[]).expect(exits(1).says("--reorg-db needs ailee_init_reorg_db"));
    // Without --reorg-db it needs nothing else.
    assert_cmd::Command::new(lone.join("ailee_l2_verify"))
        .env_clear()
        .arg("--snapshot")
        .arg(vector("basic"))
        .expect(exits(0));
    let build = bin("ailee_init_reorg_db").parent().unwrap().to_path_buf();
    run(&[("AILEE_BIN", &build)]).expect(exits(0));

    // A reader that ends without answering, answers nonsense or about
    // another hash: exit 1, said; one that stops on an error it reports:
    // that error (found in a second hostile run: the answer about another
    // hash was taken for the hash asked — a false pass —, the error after a
    // first answer was lost, and an exited reader whose child kept its
    // output open cost 120 s).
    let fake = d.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    let helper = fake.join("ailee_init_reorg_db");
    let answer = r#"echo "{\"anchor_hash\": \"$h\", \"found\": false}""#;
    for (script, code, says) in [
        (
            "#!/bin/sh\necho 'reader broke' >&2\nexit 3\n".to_string(),
            1,
            "it ended without answering; it said: reader broke",
        ),
        (
            "#!/bin/sh\nwhile read h; do echo \"{\\\"anchor_hash\\\": \\\"$h\\\", \\\"found\\\": true, \\\"status\\\": \\\"MAYBE\\\"}\"; done\n"
                .to_string(),
            1,
            "answered without a valid \"status\"",
        ),
        (
            "#!/bin/sh\nwhile read h; do echo '{\"anchor_hash\": \"fff\", \"found\": false}'; done\n".to_string(),
            1,
            "an answer about \"fff\" to a question about",
        ),
        (
            format!(
                "#!/bin/sh\nread h\n{answer}\necho '{{\"error\": \"P: damaged\", \"exit_code\": 2, \"healthy\": false}}'\nexit 2\n"
            ),
            2,
            "P: damaged",
        ),
        (
            "#!/bin/sh\nsleep 30 &\necho 'reader broke' >&2\nexit 2\n".to_string(),
            2,
            "it ended without answering; it said: reader broke",
        ),
    ] {
        std::fs::write(&helper, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Bounded: the exited reader must not cost the 120 s answer timeout.
        run(&[("AILEE_BIN", &fake)])
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .code(code)
            .stderr(contains(says));
    }
}

/// Found by trying it as a hostile operator would: a damaged database is
/// exit 2 whenever the reader stops (before or after reading the question);
/// an oversized record or peg-out hash gives a verdict, not a hang or an
/// operational error; a path starting with '-' stays a path; a reader that
/// does not end at the end of its input is stopped.
#[test]
fn hostile_databases_hashes_and_readers() {
    let d = tempfile::tempdir().unwrap();
    let own = newest_anchor();
    let verify = |db: &Path| {
        let mut c = verify_basic(db);
        c.timeout(std::time::Duration::from_secs(120));
        c
    };
    // A garbage CURRENT: damaged, exit 2 (the reader stops on open).
    let damaged = database(&d.path().join("damaged"), &[]);
    std::fs::write(damaged.join("CURRENT"), "garbage\n").unwrap();
    verify(&damaged).expect(exits(2).says("damaged"));
    // A reader that closes its input, prints its error and exits before the
    // question is written: still its error, still exit 2.
    let fake = d.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    let helper = fake.join("ailee_init_reorg_db");
    let install = |script: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&helper, script).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    install("#!/bin/sh\nexec 0<&-\necho '{\"error\": \"P: the database is damaged\", \"exit_code\": 2, \"healthy\": false}'\nexit 2\n");
    for _ in 0..5 {
        verify(&damaged)
            .env("AILEE_BIN", &fake)
            .expect(exits(2).says("P: the database is damaged"));
    }
    // A reader that answers but does not end at the end of its input: the
    // verdict stands, the reader is stopped (within its 5 s grace).
    install(
        "#!/bin/sh\nwhile :; do if read h; then echo \"{\\\"anchor_hash\\\": \\\"$h\\\", \\\"found\\\": false}\"; \
         else exec sleep 60; fi; done\n",
    );
    verify(&damaged)
        .env("AILEE_BIN", &fake)
        .expect(exits(0).says("is not recorded in the reorg database"));

    // A 2 MB record for the snapshot's own anchor: an integrity failure, said.
    let huge = database(&d.path().join("huge"), &[]);
    let line = format!(
        "anchor:{own} ==> {own}|{}|1|1|1|0|1|{}\n",
        "c".repeat(64),
        "f".repeat(2_000_000)
    );
    let mut load = Command::new("ldb")
        .arg(format!("--db={}", huge.display()))
        .args(["--ignore_unknown_options", "load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    load.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
    assert!(load.wait().unwrap().success());
    assert!(std::fs::read_dir(&huge).unwrap().count() > 0);
    verify(&huge).expect(exits(2).says("longer than 1 MiB"));

    // A path that starts with '-'.
    let dash = database(&d.path().join("sub"), &[record(&own, AnchorStatus::Confirmed)]);
    std::fs::rename(&dash, d.path().join("-db")).unwrap();
    cmd("ailee_l2_verify")
        .current_dir(d.path())
        .arg("--snapshot")
        .arg(vector("basic"))
        .arg("--reorg-db=-db")
        .expect(exits(0).says_nothing());

    // A peg-out naming a 70,000-character anchor: no key the node writes, so
    // unknown to the database — that snapshot fails (exit 2), the others stand.
    let f = d.path().join("l2.dat");
    std::fs::copy(vector("basic"), &f).unwrap();
    let state = format!(
        r#"{{"bridge": {{"pegouts": [{{"pegId": "o", "aileeSource": "a", "btcDest": "b", "aileeBurnAmount": 1,
        "btcReleaseAmount": 1, "initiatedTime": 0, "completedTime": 0, "status": 0, "anchorCommitmentHash": "{}"}}]}}}}"#,
        "a".repeat(70_000)
    );
    append_state(&f, state);
    let n = blocks("basic").len();
    let empty = database(&d.path().join("empty"), &[]);
    let all = |extra: &[&str]| {
        let mut c = cmd("ailee_l2_verify");
        c.arg("--snapshot").arg(&f).arg("--reorg-db").arg(&empty).args(extra);
        c
    };
    all(&["--all"]).expect(
        exits(2)
            .prints(format!("snapshot {}: FAILED", n + 1))
            .prints(format!("snapshot {n}: OK")),
    );
    all(&["--last-valid"]).expect(exits(0).prints_exactly(format!("{n}\n")));
    all(&[]).expect(exits(2));
}

/// Issue 22: the database reader runs under the one child supervisor — it
/// never outlives the verifier. `kill -9` of `ailee_l2_verify` while its
/// reader is busy: the kernel sends the reader SIGTERM (the parent-death
/// signal). Before, the reader ran on as an orphan (here: its 600 s sleep).
#[test]
fn the_reader_never_outlives_a_killed_verifier() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let db = database(&d.path().join("db"), &[]);
    let fake = d.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    let pid_file = d.path().join("reader.pid");
    let helper = fake.join("ailee_init_reorg_db");
    // Answers nothing: the verifier waits for it (up to its answer timeout).
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\necho $$ > {}.tmp\nmv {0}.tmp {0}\nexec sleep 600\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Orphans come to this process, which reaps them as init would.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    // Signals at their defaults (ignored ones would stay ignored in the reader).
    let mut v = Command::new("env")
        .arg("--default-signal=INT,TERM,HUP")
        .arg(bin("ailee_l2_verify"))
        .arg("--snapshot")
        .arg(vector("basic"))
        .arg("--reorg-db")
        .arg(&db)
        .env("AILEE_BIN", &fake)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !pid_file.exists() {
        assert!(
            v.try_wait().unwrap().is_none(),
            "the verifier ended before its reader started"
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let reader: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    v.kill().unwrap();
    v.wait().unwrap();
    let pid = rustix::process::Pid::from_raw(reader).unwrap();
    let t = std::time::Instant::now();
    let st = loop {
        if let Some((_, st)) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG).unwrap() {
            break st;
        }
        if t.elapsed() > std::time::Duration::from_secs(60) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("the reader outlived the killed verifier by 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(st.terminating_signal(), Some(15), "{st:?}");
}
