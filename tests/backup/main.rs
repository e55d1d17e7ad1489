//! `ailee_backup` and `ailee_restore` with the real restic (Debian's 0.14): a
//! local repository and an off-site `sftp:` one served by a real sshd on
//! 127.0.0.1; retention tiers; `--verify` on damaged backups; restores under
//! attack (a held LOCK, SIGKILL at every write/rename/fsync, SIGINT/SIGTERM);
//! ownership; and one regression test per case the issue measured.

use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
use ailee_recovery::{bin, blocks, exits, free_port, many_balances, root, succeeds, vector, Expecting};
use predicates::str::contains;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// Cases of issue 22, one module each (they share the fixture below).
mod campaign;
mod chain;
mod child;
mod journal;
mod metrics_repo;
mod rest;

/// A data directory holding `snaps` and a reorg_db with a few blocks, in a
/// temporary directory that also serves as HOME (restic's cache).
struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new(snaps: &[u8]) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let f = Fixture { tmp };
        let d = f.data();
        std::fs::create_dir(&d).unwrap();
        ReorgDb::create(&d.join("reorg_db")).unwrap();
        f.put_blocks(0, 3);
        std::fs::write(d.join("l2_snapshots.dat"), snaps).unwrap();
        f
    }

    fn basic() -> Fixture {
        Fixture::new(&std::fs::read(vector("basic")).unwrap())
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("ailee")
    }

    fn put_blocks(&self, from: u64, n: u64) {
        let db = ReorgDb::open(&self.data().join("reorg_db"), Mode::ReadWrite).unwrap();
        let mut b = Batch::default();
        for h in from..from + n {
            b.put_block(h, &format!("{h:064x}"));
        }
        db.write(b).unwrap();
        db.flush().unwrap();
    }

    fn cmd(&self, tool: &str) -> assert_cmd::Command {
        self.cmd_in(tool, &self.data())
    }

    /// `tool --data-dir DATA` with the fixture's scrubbed environment.
    fn cmd_in(&self, tool: &str, data: &Path) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(bin(tool));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir())
            .env("LC_ALL", "C")
            .arg("--data-dir")
            .arg(data);
        c
    }

    /// `ailee_restore --data-dir NEW` with `args` (the off-site repository):
    /// exit 0, and the fixture's snapshot file and its database (heights
    /// 0..4) come back in NEW.
    fn restore_into(&self, new: &Path, args: &[impl AsRef<std::ffi::OsStr>]) {
        self.cmd_in("ailee_restore", new).args(args).expect(exits(0));
        assert_eq!(state_of(new).l2, self.state().l2);
        ailee_recovery::check_db(new.join("reorg_db")).expect(exits(0).prints("heights 0..4, no gaps"));
    }

    fn backup(&self, extra: &[&str]) -> assert_cmd::assert::Assert {
        self.cmd("ailee_backup").args(extra).assert()
    }

    fn restore(&self, extra: &[&str]) -> assert_cmd::assert::Assert {
        self.cmd("ailee_restore").args(extra).assert()
    }

    fn list(&self) -> Vec<serde_json::Value> {
        self.list_with(&[] as &[&str])
    }

    /// `ailee_backup --list --json` with `extra` options (another
    /// repository, another node); must succeed.
    fn list_with(&self, extra: &[impl AsRef<std::ffi::OsStr>]) -> Vec<serde_json::Value> {
        let o = self
            .cmd("ailee_backup")
            .args(["--list", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `strace STRACE_ARGS tool --data-dir DATA` with the fixture's
    /// environment (a tool run under fault injection).
    fn strace(&self, strace_args: &[&str], tool: &str) -> Command {
        let mut c = Command::new("strace");
        c.args(strace_args)
            .arg(bin(tool))
            .arg("--data-dir")
            .arg(self.data())
            .env_clear()
            .env("HOME", self.dir())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        c
    }

    /// A metrics directory in the fixture: (its path, the path as text).
    fn metrics_dir(&self) -> (PathBuf, String) {
        let m = self.dir().join("metrics");
        std::fs::create_dir(&m).unwrap();
        let ms = m.to_str().unwrap().to_string();
        (m, ms)
    }

    /// The metrics directory (made), as a string too, and `ailee_backup`'s file in it.
    fn backup_prom(&self) -> (PathBuf, String, PathBuf) {
        let (m, ms) = self.metrics_dir();
        let prom = m.join("ailee_backup.prom");
        (m, ms, prom)
    }

    /// The local repository.
    fn repo(&self) -> PathBuf {
        self.data().join("backups/repo")
    }

    fn restic(&self, args: &[&str]) -> std::process::Output {
        let d = self.data().join("backups");
        Command::new("restic")
            .arg("--repo")
            .arg(d.join("repo"))
            .arg("--password-file")
            .arg(d.join("restic-password"))
            .args(args)
            .env("HOME", self.dir())
            .output()
            .unwrap()
    }

    /// The state a restore replaces: the snapshot file and the database files.
    fn state(&self) -> State {
        state_of(&self.data())
    }
}

/// Retention that keeps only the newest backup (forget and prune then run).
const KEEP_LAST_ONLY: [&str; 10] = [
    "--keep",
    "1",
    "--keep-hourly",
    "0",
    "--keep-daily",
    "0",
    "--keep-weekly",
    "0",
    "--keep-monthly",
    "0",
];

/// Changes one digit of a block's first balance: the block still parses,
/// its root is wrong.
fn spoil_first_balance(block: &mut [u8]) {
    let i = block.windows(9).position(|w| w == b"balance \"").unwrap();
    let j = i + block[i..].iter().position(|c| c.is_ascii_digit()).unwrap();
    block[j] = if block[j] == b'1' { b'2' } else { b'1' };
}

/// A fixture of `bl` (its second snapshot does not verify), backed up: every
/// snapshot is counted and `--verify` names the second, exit 0.
fn backed_up_with_a_bad_second(bl: &[Vec<u8>]) -> Fixture {
    let f = Fixture::new(&bl.concat());
    f.backup(&[]).code(0).stdout("").stderr("");
    assert_eq!(f.list()[0]["snapshots"], bl.len() as u64);
    f.backup(&["--verify"])
        .code(0)
        .stderr(contains("snapshot 2 in the backup does not verify"));
    f
}

/// The first line a child writes on its (piped) stdout, trimmed: it says it
/// holds its lock.
fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    line.trim().to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    l2: Option<Vec<u8>>,
    db: BTreeMap<String, Vec<u8>>,
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let e = e.unwrap();
            // Never open LOCK: closing any descriptor of a file drops this
            // process's POSIX locks on it (a writer in the test would lose its lock).
            if e.file_name() == "LOCK" {
                continue;
            }
            m.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    m
}

fn state_of(d: &Path) -> State {
    State {
        l2: std::fs::read(d.join("l2_snapshots.dat")).ok(),
        db: tree(&d.join("reorg_db")),
    }
}

fn recovery_dirs(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("recovery_"))
        .collect();
    v.sort();
    v
}

fn hidden_leftovers(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ailee-restore") || n.starts_with(".ailee_restore"))
        .collect()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn no_plaintext(repo: &Path) {
    let n = files(repo).len();
    assert!(n > 5, "repository {} looks empty", repo.display());
    for f in files(repo) {
        let b = std::fs::read(&f).unwrap();
        assert!(
            !b.windows(11).any(|w| w == b"SNAPSHOT v1"),
            "plaintext snapshot bytes in {}",
            f.display()
        );
    }
}

#[test]
fn help_version_and_argument_errors() {
    for t in ["ailee_backup", "ailee_restore"] {
        ailee_recovery::cmd(t)
            .arg("--help")
            .expect(exits(0).prints("--data-dir"));
        ailee_recovery::cmd(t).arg("--version").expect(exits(0).prints("0.1.0"));
        ailee_recovery::cmd(t).expect(exits(1));
        ailee_recovery::cmd(t)
            .args(["--data-dir", "/tmp", "--bogus"])
            .expect(exits(1));
    }
}

/// Regression: `ailee_backup --data-dir /typo` created `/typo/backups`.
#[test]
fn a_missing_data_dir_is_an_error_and_is_never_created() {
    let d = tempfile::tempdir().unwrap();
    let typo = d.path().join("typo");
    for t in ["ailee_backup", "ailee_restore"] {
        ailee_recovery::cmd(t)
            .arg("--data-dir")
            .arg(&typo)
            .expect(exits(1).says("never created"));
        assert!(!typo.exists(), "{t} created the data directory");
    }
}

/// Backup, list, verify and restore on a local repository: quiet on success,
/// encrypted (no plaintext snapshot bytes), tagged, the runbook copy complete.
#[test]
fn local_backup_list_verify_restore() {
    let f = Fixture::new(&std::fs::read(vector("torn-tail")).unwrap());
    f.backup(&[]).code(0).stdout("").stderr("");
    let b = f.data().join("backups");
    let key = std::fs::metadata(b.join("restic-password")).unwrap();
    assert_eq!(key.mode() & 0o777, 0o600);
    // The runbook copy: complete snapshots only (no torn tail), the one .bak.
    let complete = blocks("torn-tail").concat();
    assert_eq!(std::fs::read(b.join("l2_snapshots_latest.dat.bak")).unwrap(), complete);
    let l = f.list();
    assert_eq!(l.len(), 1);
    let roots = ailee_recovery::roots("torn-tail");
    assert_eq!(l[0]["root"], roots[roots.len() - 1].as_str());
    assert_eq!(l[0]["snapshots"], blocks("torn-tail").len() as u64);
    assert_eq!(l[0]["bytes"], complete.len() as u64);
    no_plaintext(&b.join("repo"));
    f.cmd("ailee_backup")
        .arg("--list")
        .expect(exits(0).prints(&roots[roots.len() - 1][..16]));
    f.backup(&["--verify"]).code(0).stdout(contains("verified"));
    f.backup(&["--verify", "latest", "--read-data"]).code(0);
    // The live file gets damaged; the restore brings back the backup.
    let old = f.state();
    std::fs::write(f.data().join("l2_snapshots.dat"), b"junk").unwrap();
    f.restore(&[]).code(0).stdout("").stderr("");
    let now = f.state();
    assert_eq!(now.l2.as_deref(), Some(&complete[..]));
    let rec = recovery_dirs(&f.data());
    assert_eq!(rec.len(), 1);
    assert_eq!(std::fs::read(rec[0].join("l2_snapshots.dat")).unwrap(), b"junk");
    assert_eq!(tree(&rec[0].join("reorg_db")), old.db);
    assert!(hidden_leftovers(&f.data()).is_empty());
    ailee_recovery::db_tool(f.data().join("reorg_db"))
        .arg("--check")
        .expect(exits(0).prints("heights 0..2, no gaps"));
    f.restore(&["-v", "--backup", l[0]["short_id"].as_str().unwrap()])
        .code(0)
        .stdout(contains("previous state kept in"));
    f.restore(&["--backup", "ffffffff"])
        .code(1)
        .stderr(contains("no backup ffffffff"));
    f.restore(&["--backup", "../x"]).code(1);
}

/// The runbook copy grows by appending; a rewritten live file gets a full copy
/// with a warning. Regression: the runbook's `cp backups/l2_snapshots_*.dat.bak`
/// failed because the glob matched two files.
#[test]
fn runbook_copy_is_appended_to_and_the_glob_names_one_file() {
    let bl = blocks("basic");
    let f = Fixture::new(&bl[..2].concat());
    f.backup(&[]).code(0).stdout("");
    let live = f.data().join("l2_snapshots.dat");
    for k in 3..=bl.len() {
        // The node appends a snapshot and starts the next one (torn tail).
        std::fs::write(
            &live,
            [bl[..k].concat(), b"SNAPSHOT v1\ntimestamp_ms 1".to_vec()].concat(),
        )
        .unwrap();
        // --no-forget: the default hourly tier keeps one backup per hour.
        f.backup(&["-v", "--no-forget"])
            .code(0)
            .stdout(contains(format!("{k} snapshots")));
        assert_eq!(
            std::fs::read(f.data().join("backups/l2_snapshots_latest.dat.bak")).unwrap(),
            bl[..k].concat()
        );
    }
    assert_eq!(f.list().len(), bl.len() - 1);
    // Pruned by the operator: no longer an extension of the copy.
    std::fs::write(&live, bl[3..].concat()).unwrap();
    f.backup(&[]).code(0).stderr(contains("full copy"));
    assert_eq!(
        std::fs::read(f.data().join("backups/l2_snapshots_latest.dat.bak")).unwrap(),
        bl[3..].concat()
    );
    // "Node won't start": the runbook's glob names exactly one file.
    std::fs::write(&live, b"garbage").unwrap();
    ailee_recovery::bash(&format!(
        "cd {} && cp backups/l2_snapshots_*.dat.bak l2_snapshots.dat && ailee_l2_verify --snapshot l2_snapshots.dat",
        f.data().display()
    ))
    .expect(exits(0).prints("Verification OK."));
    f.backup(&["--list"]).code(0);
}

/// Regression: `count=$(… --all | wc -l)` under pipefail made the backup die
/// silently with exit 2 when an older snapshot was corrupt.
#[test]
fn a_corrupt_older_snapshot_does_not_stop_the_backup() {
    let mut bl = blocks("basic");
    // Change one digit of the first balance: the block parses, its root is wrong.
    spoil_first_balance(&mut bl[1]);
    let f = backed_up_with_a_bad_second(&bl);
    // A corrupt *newest* snapshot is an integrity failure: nothing is published.
    let mut bad = bl.clone();
    bad.push(bl[1].clone());
    std::fs::write(f.data().join("l2_snapshots.dat"), bad.concat()).unwrap();
    f.backup(&[])
        .code(2)
        .stderr(contains("newest snapshot does not verify"));
    assert_eq!(f.list().len(), 1);
}

/// A snapshot too big to hold while scanning (over 8 MiB: the scanner keeps
/// its offset and it is read again) is counted in the backup's tag and
/// checked by `--verify` like any other. (The count and the check used to
/// hold every open block whole: 2.9 GB for a 1.5 GB torn region,
/// BENCHMARKS.md.)
#[test]
fn a_snapshot_over_8_mib_is_counted_and_checked() {
    let d = tempfile::tempdir().unwrap();
    let big_file = d.path().join("big.dat");
    assert_cmd::Command::new(bin("ailee_create_anchor"))
        .args(["--l2-state-file", "-", "--snapshot-file"])
        .arg(&big_file)
        .write_stdin(many_balances(400_000))
        .expect(exits(0));
    let mut big = std::fs::read(&big_file).unwrap();
    assert!(big.len() > 8 << 20);
    // Its root made wrong: one digit of the first balance.
    spoil_first_balance(&mut big);
    let mut bl = blocks("basic");
    bl.insert(1, big);
    let _f = backed_up_with_a_bad_second(&bl);
}

/// Regression: `--keep 18446744073709551617` wrapped in bash arithmetic and
/// deleted all but one backup; `--keep 9223372036854775807` failed after
/// publishing. Out-of-range values are refused before anything is done.
#[test]
fn keep_values_are_range_checked_before_anything_is_done() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    for bad in [
        vec!["--keep", "18446744073709551617"],
        vec!["--keep", "9223372036854775807"],
        vec!["--keep", "0"],
        vec!["--keep", "-1"],
        vec!["--keep-hourly", "1000001"],
        vec!["--keep-daily", "x"],
    ] {
        f.backup(&bad).code(1);
    }
    f.backup(&KEEP_LAST_ONLY[2..])
        .code(1)
        .stderr(contains("delete every backup"));
    assert_eq!(f.list().len(), 1, "a refused run must not change the repository");
    f.backup(&["--keep", "1000000"]).code(0);
    assert_eq!(f.list().len(), 2);
}

/// restic's retention tiers on backups made with faked times.
#[test]
fn retention_tiers_apply_to_backups_with_faked_times() {
    let f = Fixture::basic();
    // Hourly for 5 hours on 2026-03-02, one a day before that for 4 days,
    // and two in earlier weeks.
    let mut times = vec!["2026-02-10 12:00:00".to_string(), "2026-02-17 12:00:00".to_string()];
    times.extend((0..4).map(|d| format!("2026-02-{:02} 12:00:00", 25 + d)));
    times.extend((0..5).map(|h| format!("2026-03-02 {:02}:30:00", 10 + h)));
    for t in &times {
        f.backup(&["--time", t, "--no-forget"]).code(0);
    }
    assert_eq!(f.list().len(), times.len());
    // keep 3 hourly, 2 daily, 2 weekly: restic keeps the newest of each bucket.
    f.backup(&[
        "--time",
        "2026-03-02 15:30:00",
        "--keep-hourly",
        "3",
        "--keep-daily",
        "2",
        "--keep-weekly",
        "2",
        "--keep-monthly",
        "0",
    ])
    .code(0);
    let kept: Vec<String> = f
        .list()
        .iter()
        .map(|s| s["time"].as_str().unwrap()[..16].replace('T', " "))
        .collect();
    // Hourly: 15:30, 14:30, 13:30. Daily: 03-02 (15:30), 02-28.
    // Weekly: the week of 03-02 (15:30), the week of 02-23 (02-28).
    assert_eq!(
        kept,
        vec![
            "2026-02-28 12:00",
            "2026-03-02 13:30",
            "2026-03-02 14:30",
            "2026-03-02 15:30"
        ],
        "{kept:?}"
    );
}

/// Hourly backups that remove nothing make one restic call each (every
/// call pays restic's key derivation); a backup that falls out of a tier (a
/// second one in an hour) still has restic's forget and prune remove it.
/// (Before: `restic forget` after every backup.)
#[test]
fn retention_asks_restic_only_when_a_backup_falls_out_of_a_tier() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::basic();
    let log = f.dir().join("restic.log");
    let wrapper = f.dir().join("restic-logged");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a; do case $a in backup|forget|prune) echo $a >> '{}';; esac; done\nexec restic \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let w = wrapper.to_str().unwrap();
    let run = |t: &str| f.backup(&["--restic", w, "--time", t]).code(0).stdout("").stderr("");
    run("2026-03-02 10:00:00");
    std::fs::remove_file(&log).unwrap();
    run("2026-03-02 11:00:00");
    run("2026-03-02 12:00:00");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "backup\nbackup\n");
    run("2026-03-02 12:30:00");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "backup\nbackup\nbackup\nforget\nprune\n"
    );
    let kept: Vec<String> = f
        .list()
        .iter()
        .map(|s| s["time"].as_str().unwrap()[11..16].to_string())
        .collect();
    assert_eq!(kept, ["10:00", "11:00", "12:30"]);
}

/// `--verify` and restore exit 2 on a data pack with one flipped byte.
#[test]
fn verify_exits_2_on_a_flipped_byte_in_a_pack() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    let packs: Vec<PathBuf> = files(&f.data().join("backups/repo/data"));
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let n = b.len() / 2;
        b[n] ^= 0x01;
        let mut perm = std::fs::metadata(p).unwrap().permissions();
        perm.set_mode(0o644);
        std::fs::set_permissions(p, perm).unwrap();
        std::fs::write(p, b).unwrap();
    }
    f.backup(&["--verify", "--read-data"]).code(2);
    f.backup(&["--verify"]).code(2);
    let before = f.state();
    f.restore(&[]).code(2);
    assert_eq!(f.state(), before, "a failed restore changed the data directory");
    assert!(recovery_dirs(&f.data()).is_empty());
    assert!(hidden_leftovers(&f.data()).is_empty());
}

/// `--verify` and restore exit 2 on a backup whose recorded root differs from
/// its content; the restore changes nothing.
#[test]
fn verify_exits_2_when_the_recorded_root_differs() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    let l = f.list();
    let root = l[0]["root"].as_str().unwrap().to_string();
    let id = l[0]["id"].as_str().unwrap().to_string();
    let forged = format!("root={}", "0".repeat(64));
    let o = f.restic(&["tag", "--remove", &format!("root={root}"), "--add", &forged, &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    f.backup(&["--verify"]).code(2).stderr(contains("the backup recorded"));
    std::fs::write(f.data().join("l2_snapshots.dat"), b"junk").unwrap();
    let before = f.state();
    f.restore(&[]).code(2).stderr(contains("the backup recorded"));
    assert_eq!(f.state(), before);
    assert!(hidden_leftovers(&f.data()).is_empty());
}

/// Regression: a restore while a process held reorg_db read-write moved the
/// stores out from under it. Refused (exit 1), nothing changed — with a
/// python fcntl lock and with a real RocksDB writer.
#[test]
fn restore_is_refused_while_the_database_lock_is_held() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    std::fs::write(f.data().join("l2_snapshots.dat"), b"changed").unwrap();
    let before = f.state();
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
        ])
        .arg(f.data().join("reorg_db/LOCK"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut py), "locked");
    f.restore(&[]).code(1).stderr(contains("locked"));
    assert_eq!(f.state(), before);
    drop(py.stdin.take());
    py.wait().unwrap();
    // A writer holding the database (like the node or ailee_resync_blocks).
    let db = ReorgDb::open(&f.data().join("reorg_db"), Mode::ReadWrite).unwrap();
    let before = f.state();
    f.restore(&[]).code(1).stderr(contains("locked"));
    assert_eq!(f.state(), before);
    assert!(recovery_dirs(&f.data()).is_empty());
    drop(db);
    f.restore(&[]).code(0);
}

/// Regression: two restores within one second shared one `recovery_<epoch>`.
#[test]
fn two_restores_back_to_back_keep_both_previous_states() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    std::fs::write(f.data().join("l2_snapshots.dat"), b"first").unwrap();
    f.restore(&[]).code(0);
    std::fs::write(f.data().join("l2_snapshots.dat"), b"second").unwrap();
    f.restore(&[]).code(0);
    let rec = recovery_dirs(&f.data());
    assert_eq!(rec.len(), 2, "{rec:?}");
    let mut got: Vec<Vec<u8>> = rec
        .iter()
        .map(|r| std::fs::read(r.join("l2_snapshots.dat")).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, vec![b"first".to_vec(), b"second".to_vec()]);
    for r in &rec {
        assert!(r.join("reorg_db/CURRENT").exists());
        assert!(!r.join("reorg_db/reorg_db").exists());
    }
}

/// Regression: a `nobody:0600` file came back `root:0644`.
#[test]
fn owner_group_and_mode_survive_a_restore() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    let (uid, gid) = (65534u32, 65534u32);
    let d = f.data();
    let chown = |p: &Path| {
        assert!(Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(p)
            .status()
            .unwrap()
            .success())
    };
    chown(&d.join("l2_snapshots.dat"));
    chown(&d.join("reorg_db"));
    std::fs::set_permissions(d.join("l2_snapshots.dat"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(d.join("reorg_db"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(d.join("reorg_db/CURRENT"), std::fs::Permissions::from_mode(0o600)).unwrap();
    f.restore(&[]).code(0);
    let m = std::fs::metadata(d.join("l2_snapshots.dat")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (uid, gid, 0o600));
    let m = std::fs::metadata(d.join("reorg_db")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (uid, gid, 0o700));
    for p in files(&d.join("reorg_db")) {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (uid, gid, 0o600),
            "{}",
            p.display()
        );
    }
}

/// Overlapping runs are refused (the data directory's lock).
#[test]
fn overlapping_runs_are_refused() {
    let f = Fixture::basic();
    let lock = f.data().join(".ailee_backup.lock");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "echo held; read x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut holder), "held");
    f.backup(&[])
        .code(1)
        .stderr(contains("another ailee_backup or ailee_restore is running"));
    f.restore(&[])
        .code(1)
        .stderr(contains("another ailee_backup or ailee_restore is running"));
    drop(holder.stdin.take());
    holder.wait().unwrap();
    f.backup(&[]).code(0);
}

/// Prometheus textfiles: names the alert rules use; the failure counter
/// survives runs.
#[test]
fn metrics_textfiles() {
    let f = Fixture::basic();
    let (m, ms) = f.metrics_dir();
    let ms = ms.as_str();
    f.backup(&["--metrics-dir", ms]).code(0);
    std::fs::write(f.data().join("l2_snapshots.dat"), b"no snapshots").unwrap();
    f.backup(&["--metrics-dir", ms]).code(1);
    f.backup(&["--metrics-dir", ms]).code(1);
    let p = std::fs::read_to_string(m.join("ailee_backup.prom")).unwrap();
    let l = format!("{{repository=\"{}\"}}", f.data().join("backups/repo").display());
    for name in [
        "ailee_backup_last_success_timestamp_seconds",
        "ailee_backup_last_failure_timestamp_seconds",
        "ailee_backup_duration_seconds",
        "ailee_backup_bytes_added",
        "ailee_backup_repository_size_bytes",
    ] {
        assert!(p.contains(&format!("\n{name}{l} ")), "{name} missing:\n{p}");
    }
    assert!(p.contains(&format!("\nailee_backup_failures_total{l} 2\n")), "{p}");
    assert!(
        !p.contains(&format!("ailee_backup_last_success_timestamp_seconds{l} 0\n")),
        "{p}"
    );
    f.restore(&["--metrics-dir", ms]).code(0);
    let r = std::fs::read_to_string(m.join("ailee_restore.prom")).unwrap();
    assert!(r.contains("\nailee_restore_success 1\n"), "{r}");
    assert!(r.contains("\nailee_restore_duration_seconds "), "{r}");
    assert!(r.contains("\nailee_restore_last_timestamp_seconds "), "{r}");
    if Command::new("promtool").arg("--version").output().is_ok() {
        for file in ["ailee_backup.prom", "ailee_restore.prom"] {
            let o = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(std::fs::File::open(m.join(file)).unwrap())
                .output()
                .unwrap();
            assert!(o.status.success(), "{file}: {}", String::from_utf8_lossy(&o.stdout));
        }
    }
}

/// Debian's sshd on 127.0.0.1 with its own config, host key and user key.
struct Sshd {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        let keygen = |name: &str| {
            assert!(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(name))
                .status()
                .expect("ssh-keygen (openssh-client)")
                .success());
        };
        keygen("host_key");
        keygen("user_key");
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PidFile {d}/sshd.pid\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nPermitRootLogin prohibit-password\nAllowUsers {user}\nSubsystem sftp internal-sftp\n",
                d = dir.display(),
                user = user.trim()
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut it = host_pub.split_whitespace();
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {} {}\n", it.next().unwrap(), it.next().unwrap()),
        )
        .unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (openssh-server)");
        let s = Sshd {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
    }

    fn sftp_command(&self) -> String {
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        format!(
            "sftp.command=ssh -p {} -i {d}/user_key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={d}/known_hosts {}@127.0.0.1 -s sftp",
            self.port,
            user.trim(),
            d = self.dir.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An off-site repository over sftp: backup, list, verify, restore into a new
/// data directory; the remote files hold no plaintext snapshot bytes.
#[test]
fn offsite_repository_over_sftp() {
    let f = Fixture::basic();
    let ssh = Sshd::start(f.dir());
    let remote = f.dir().join("offsite/repo");
    std::fs::create_dir_all(remote.parent().unwrap()).unwrap();
    let pw = f.dir().join("offsite.pw");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    let repo = format!("sftp:127.0.0.1:{}", remote.display());
    let opt = ssh.sftp_command();
    let args = ["--repo", &repo, "--password-file", pw.to_str().unwrap(), "-o", &opt];
    f.backup(&args).code(0).stdout("").stderr("");
    f.put_blocks(3, 2);
    f.backup(&[&args[..], &["--no-forget"]].concat()).code(0);
    assert!(remote.join("config").exists(), "the repository is on the sftp side");
    no_plaintext(&remote);
    assert_eq!(f.list_with(&args).len(), 2);
    f.backup(&[&args[..], &["--verify"]].concat()).code(0);
    // Disaster: a new machine, an empty data directory, the off-site copy.
    let new = f.dir().join("new");
    std::fs::create_dir(&new).unwrap();
    // The database comes back as the consistent copy the backup made.
    f.restore_into(&new, &args);
    // A wrong password is an operational error, not "corrupt".
    std::fs::write(&pw, "wrong\n").unwrap();
    f.backup(&[&args[..], &["--list"]].concat()).code(1);
}

/// A second data directory whose backup differs from its live state, for the
/// attack tests: returns (fixture, old state, backup state).
fn attack_fixture() -> (Fixture, State, State) {
    let bl = blocks("basic");
    let f = Fixture::new(&bl[..3].concat());
    f.backup(&[]).code(0);
    // The live state moves on after the backup.
    std::fs::write(f.data().join("l2_snapshots.dat"), bl.concat()).unwrap();
    f.put_blocks(3, 4);
    let old = f.state();
    // What the backup restores to, captured by restoring into a scratch dir.
    let scratch = f.dir().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut c = assert_cmd::Command::new(bin("ailee_restore"));
    c.env_clear()
        .env("HOME", f.dir())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--data-dir")
        .arg(&scratch)
        .arg("--repo")
        .arg(f.data().join("backups/repo"))
        .arg("--password-file")
        .arg(f.data().join("backups/restic-password"))
        .expect(exits(0));
    let backup = state_of(&scratch);
    assert_ne!(old, backup);
    (f, old, backup)
}

fn pristine_copy(f: &Fixture) -> PathBuf {
    let p = f.dir().join("pristine");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(f.data())
        .arg(&p)
        .status()
        .unwrap()
        .success());
    p
}

fn reset(f: &Fixture, pristine: &Path) {
    std::fs::remove_dir_all(f.data()).unwrap();
    assert!(Command::new("cp")
        .arg("-a")
        .arg(pristine)
        .arg(f.data())
        .status()
        .unwrap()
        .success());
}

/// Runs ailee_restore under strace, injecting `action` at the n-th `syscall`.
fn restore_injected(f: &Fixture, syscall: &str, action: &str, n: usize) -> std::process::ExitStatus {
    let (trace, inject) = (
        format!("trace={syscall}"),
        format!("inject={syscall}:{action}:when={n}"),
    );
    f.strace(
        &["-qq", "-o", "/dev/null", "-e", &trace, "-e", &inject],
        "ailee_restore",
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .expect("strace (Debian package strace)")
}

/// After an attack: each store is wholly the old state or wholly the backup;
/// the old state is never lost (live or in a recovery directory).
fn check_after_attack(f: &Fixture, old: &State, backup: &State, what: &str) {
    let now = f.state();
    assert!(
        now.l2 == old.l2 || now.l2 == backup.l2,
        "{what}: l2_snapshots.dat is neither the old state nor the backup"
    );
    assert!(
        now.db == old.db || now.db == backup.db,
        "{what}: reorg_db is neither the old state nor the backup: {:?}",
        now.db.keys().collect::<Vec<_>>()
    );
}

fn check_rerun(f: &Fixture, old: &State, backup: &State, what: &str) {
    f.restore(&[]).code(0);
    assert_eq!(&f.state(), backup, "{what}: the rerun did not restore the backup");
    assert!(
        hidden_leftovers(&f.data()).is_empty(),
        "{what}: leftovers {:?}",
        hidden_leftovers(&f.data())
    );
    let kept = recovery_dirs(&f.data()).iter().any(|r| &state_of(r) == old);
    assert!(kept, "{what}: the old state was lost");
}

/// The syscalls a restore is killed at, with how many of each to try
/// (`AILEE_KILL_ALL=1`: every one, as scripts/crash_backup.sh runs it).
fn kill_points() -> Vec<(&'static str, usize)> {
    if std::env::var("AILEE_KILL_ALL").is_ok_and(|v| v == "1") {
        [
            "renameat2",
            "rename",
            "fsync",
            "fdatasync",
            "write",
            "pwrite64",
            "unlink",
            "unlinkat",
            "rmdir",
            "mkdir",
            "mkdirat",
            "openat",
            "ftruncate",
            "fchown",
            "chown",
            "fchmodat",
            "chmod",
            "flock",
            "fcntl",
        ]
        .into_iter()
        .map(|s| (s, 10_000))
        .collect()
    } else {
        // Every rename and write, the first 40 fsyncs.
        vec![("renameat2", 100), ("rename", 100), ("write", 100), ("fsync", 40)]
    }
}

/// SIGKILL at every write/rename/fsync/… of the restore (bounded per syscall
/// in `cargo test`; all of them with AILEE_KILL_ALL=1): afterwards each
/// store is the old state or the backup, and a rerun completes.
#[test]
fn restore_killed_at_every_write_rename_fsync() {
    let (f, old, backup) = attack_fixture();
    let pristine = pristine_copy(&f);
    let mut kills = 0;
    for (sc, cap) in kill_points() {
        for n in 1..=cap {
            reset(&f, &pristine);
            let st = restore_injected(&f, sc, "signal=SIGKILL", n);
            if st.signal() != Some(9) {
                assert_eq!(st.code(), Some(0), "{sc} #{n}: {st:?}");
                break;
            }
            kills += 1;
            let what = format!("SIGKILL at {sc} #{n}");
            check_after_attack(&f, &old, &backup, &what);
            check_rerun(&f, &old, &backup, &what);
        }
    }
    eprintln!("ailee_restore: survived {kills} kills");
    assert!(kills > 10);
}

/// SIGINT and SIGTERM delivered at syscalls of the restore (deterministic
/// points): the restore cleans up and dies by the signal, leaving the old
/// state, or reports success when the swap had already committed.
#[test]
fn restore_interrupted_by_signals_rolls_back_and_dies_by_the_signal() {
    let (f, old, backup) = attack_fixture();
    let pristine = pristine_copy(&f);
    let mut died = 0;
    let all = std::env::var("AILEE_KILL_ALL").is_ok_and(|v| v == "1");
    let points: Vec<(&str, Vec<usize>)> = if all {
        // Past the last call of a syscall the signal never comes and the run
        // simply completes: these bounds are a little above the counts.
        vec![
            ("renameat2", (1..=12).collect()),
            ("fsync", (1..=30).collect()),
            ("write", (1..=8).collect()),
            ("unlink", (1..=8).collect()),
            ("mkdir", (1..=4).collect()),
        ]
    } else {
        // Every rename (staging, journal, the two exchanges, the moves into
        // the recovery directory) and a spread of the fsyncs.
        vec![("renameat2", (1..=8).collect()), ("fsync", vec![1, 4, 12])]
    };
    for sig in ["SIGINT", "SIGTERM", "SIGHUP"] {
        for (sc, ns) in &points {
            for &n in ns {
                reset(&f, &pristine);
                let st = restore_injected(&f, sc, &format!("signal={sig}"), n);
                let what = format!("{sig} at {sc} #{n}");
                match st.signal() {
                    Some(s) => {
                        let want = match sig {
                            "SIGINT" => 2,
                            "SIGTERM" => 15,
                            _ => 1,
                        };
                        assert_eq!(s, want, "{what}: died by the wrong signal");
                        assert_eq!(f.state(), old, "{what}: not rolled back");
                        assert!(hidden_leftovers(&f.data()).is_empty(), "{what}");
                        assert!(recovery_dirs(&f.data()).is_empty(), "{what}");
                        died += 1;
                    }
                    None => {
                        assert_eq!(st.code(), Some(0), "{what}");
                        assert_eq!(f.state(), backup, "{what}");
                    }
                }
                check_rerun(&f, &old, &backup, &what);
            }
        }
    }
    assert!(died > 5, "the signals should interrupt some runs ({died})");
}

/// SIGTERM while restic restores (the point is reached by waiting for the
/// restic child to exist, not by a delay): rollback, death by SIGTERM.
#[test]
fn restore_sigterm_while_restic_runs() {
    let (f, old, backup) = attack_fixture();
    let mut child = Command::new(bin("ailee_restore"))
        .arg("--data-dir")
        .arg(f.data())
        .env_clear()
        .env("HOME", f.dir())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AILEE_RESTIC", root().join("tests/fixtures/slow-restic"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The wrapper writes a marker when restic's restore starts and then waits.
    let marker = f.dir().join("restic-restore-started");
    let mut seen = false;
    for _ in 0..3000 {
        if marker.exists() {
            seen = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(seen, "restic restore never started");
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(15), "{st:?}");
    assert_eq!(f.state(), old);
    assert!(hidden_leftovers(&f.data()).is_empty());
    check_rerun(&f, &old, &backup, "SIGTERM during restic restore");
}

/// The backup killed at every write/rename/fsync: the runbook copy is always a
/// complete copy (the previous one or the new one), the live data untouched,
/// and the next run succeeds.
#[test]
fn backup_killed_anywhere_leaves_a_complete_runbook_copy() {
    let bl = blocks("basic");
    let f = Fixture::new(&bl[..3].concat());
    f.backup(&[]).code(0);
    std::fs::write(f.data().join("l2_snapshots.dat"), bl.concat()).unwrap();
    let live = f.state();
    let bak = f.data().join("backups/l2_snapshots_latest.dat.bak");
    let (a, b) = (bl[..3].concat(), bl.concat());
    let mut kills = 0;
    for (sc, cap) in kill_points() {
        for n in 1..=cap {
            let (trace, inject) = (format!("trace={sc}"), format!("inject={sc}:signal=SIGKILL:when={n}"));
            let st = f
                .strace(&["-qq", "-o", "/dev/null", "-e", &trace, "-e", &inject], "ailee_backup")
                .status()
                .unwrap();
            if st.signal() != Some(9) {
                assert_eq!(st.code(), Some(0), "{sc} #{n}");
                break;
            }
            kills += 1;
            let got = std::fs::read(&bak).unwrap();
            assert!(got == a || got == b, "{sc} #{n}: the runbook copy is not complete");
            assert_eq!(f.state().l2, live.l2, "{sc} #{n}: live file changed");
        }
    }
    eprintln!("ailee_backup: survived {kills} kills");
    f.backup(&[]).code(0);
    assert_eq!(std::fs::read(&bak).unwrap(), b);
    f.backup(&["--verify"]).code(0);
    assert!(kills > 5);
}

/// Regression: `ailee_monitor --max-backup-age-hours 1.5` (or `2h`) with a
/// 30 hours old backup said "OK" (a bash arithmetic error inside an `if`).
#[test]
fn monitor_backup_age_limit_in_hours_is_exact() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    let last = f.data().join("backups/last_backup");
    assert!(Command::new("touch")
        .args(["-d", "30 hours ago"])
        .arg(&last)
        .status()
        .unwrap()
        .success());
    let monitor = |limit: &str| {
        let mut c = assert_cmd::Command::new(root().join("scripts/ailee_monitor"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AILEE_BIN", bin("ailee_l2_verify").parent().unwrap())
            .arg("--data-dir")
            .arg(f.data())
            .args(["--max-backup-age-hours", limit]);
        c.assert()
    };
    monitor("1.5")
        .code(1)
        .stdout(contains("the last successful backup is 30h old"));
    monitor("2h").code(1);
    monitor("48").code(0);
}
