//! Issue 22: the restic child and the repository shared by runs and nodes.
//!
//! To catch restic *while it holds its repository lock*, without timing, an
//! index file of the repository is replaced by a FIFO ([`IndexTrap`]):
//! every restic command opens the index after taking its lock, and blocks in
//! that `open()` until the trap is released. The tests wait for the lock
//! file to exist, then act.

use super::*;
use std::process::Child;
use std::time::{Duration, Instant};

/// One index file of a local repository replaced by a FIFO, in the
/// repository and in restic's cache under `home` (restic reads a cached
/// index from there).
struct IndexTrap {
    /// (FIFO, where the real file waits).
    fifos: Vec<(PathBuf, PathBuf)>,
    /// Our end of the FIFO restic opened.
    writer: Option<std::fs::File>,
}

/// A fixture backed up once, an index file of its repository trapped.
fn trapped() -> (Fixture, IndexTrap) {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    let trap = IndexTrap::set(&f.repo(), f.dir());
    (f, trap)
}

impl IndexTrap {
    fn set(repo: &Path, home: &Path) -> IndexTrap {
        let index = repo.join("index");
        let name = std::fs::read_dir(&index)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .next()
            .expect("an index file");
        let mut places = vec![index.join(&name)];
        // $HOME/.cache/restic/<repository id>/index/<2 hex>/<name>
        let cache = home.join(".cache/restic");
        for e in std::fs::read_dir(&cache).into_iter().flatten() {
            let p = e
                .unwrap()
                .path()
                .join("index")
                .join(&name.to_string_lossy()[..2])
                .join(&name);
            if p.exists() {
                places.push(p);
            }
        }
        let fifos = places
            .into_iter()
            .enumerate()
            .map(|(k, fifo)| {
                let kept = home.join(format!("index-kept-{k}-{}", name.to_string_lossy()));
                std::fs::rename(&fifo, &kept).unwrap();
                let ok = Command::new("mkfifo").arg(&fifo).status().unwrap().success();
                assert!(ok, "mkfifo");
                (fifo, kept)
            })
            .collect();
        IndexTrap { fifos, writer: None }
    }

    /// Waits until a restic of `child` (or `child` itself) is reading the
    /// index: it has taken its lock and set up its cleanup (restic loads
    /// the index after both). Our end is opened without blocking — it
    /// succeeds only once a reader is there — and kept open, so the reader
    /// waits in `read()` for data that never comes.
    /// Spawns `c` (a restic reading the repository of `f`, its cache under
    /// `f`'s home) and waits until the trap holds it.
    fn catch(&mut self, c: &mut Command, f: &Fixture) -> Child {
        let mut child = c
            .env("HOME", f.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.wait_for_reader(&mut child);
        child
    }

    fn wait_for_reader(&mut self, child: &mut Child) {
        use std::os::unix::fs::OpenOptionsExt;
        let t = Instant::now();
        loop {
            for (fifo, _) in &self.fifos {
                match std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                    .open(fifo)
                {
                    Ok(w) => {
                        self.writer = Some(w);
                        return;
                    }
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {}
                    Err(e) => panic!("{}: {e}", fifo.display()),
                }
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "the run ended before restic read the index: {st:?} {}",
                    stderr_of(child)
                );
            }
            assert!(t.elapsed() < Duration::from_secs(120), "restic never read the index");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Puts the real index back (restic may have dropped the cache's FIFO
    /// as an unreadable cache entry: the cache is restic's to refill).
    fn release(mut self) {
        drop(self.writer.take());
        for (k, (fifo, kept)) in self.fifos.iter().enumerate() {
            match std::fs::remove_file(fifo) {
                Ok(()) => std::fs::rename(kept, fifo).unwrap(),
                Err(e) if k > 0 && e.kind() == std::io::ErrorKind::NotFound => std::fs::remove_file(kept).unwrap(),
                Err(e) => panic!("{}: {e}", fifo.display()),
            }
        }
    }
}

fn locks(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("locks")).map_or(0, |d| d.count())
}

/// A tool started by a test, killed if the test ends first (a failed
/// assertion must not leave it and its restic running).
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `tool` with SIGINT, SIGTERM and SIGHUP at their defaults: a tool
/// keeps a signal it was started with ignored (`nohup`, a background job of
/// a script), and these tests send exactly those.
fn spawn(f: &Fixture, tool: &str, args: &[&str]) -> Running {
    Running(
        Command::new("env")
            .arg("--default-signal=INT,TERM,HUP")
            .arg(bin(tool))
            .arg("--data-dir")
            .arg(f.data())
            .args(args)
            .env_clear()
            .env("HOME", f.dir())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

fn stderr_of(child: &mut Child) -> String {
    let mut e = String::new();
    if let Some(mut s) = child.stderr.take() {
        std::io::Read::read_to_string(&mut s, &mut e).unwrap();
    }
    e
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                // pid (comm) state ppid …: comm may hold spaces, so after the last ')'.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// Everything works afterwards with no manual step, and the repository checks.
fn all_work(f: &Fixture, what: &str) {
    f.backup(&[]).code(0);
    f.cmd("ailee_backup").args(["--list"]).expect(exits(0));
    f.backup(&["--verify"]).code(0);
    f.restore(&[]).code(0);
    let o = f.restic(&["check"]);
    assert!(
        o.status.success(),
        "{what}: restic check: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(locks(&f.repo()), 0, "{what}: a lock is left");
}

/// SIGINT/SIGTERM to the tool while restic holds its lock (check, backup,
/// restore): restic is stopped with SIGINT, removes its lock, the tool dies
/// by the signal; every later run works. (Before: restic was SIGKILLed and
/// its lock refused every later backup, list, verify and restore.)
#[test]
fn a_signal_while_restic_holds_its_lock_leaves_no_lock() {
    let cases: &[(&str, &[&str], &str, i32)] = &[
        ("ailee_backup", &["--verify", "latest", "--read-data"], "INT", 2),
        ("ailee_backup", &["--verify"], "TERM", 15),
        ("ailee_backup", &[], "TERM", 15),
        ("ailee_backup", &[], "HUP", 1),
        ("ailee_restore", &[], "TERM", 15),
    ];
    for (tool, args, sig, n) in cases {
        let what = format!("{tool} {args:?} SIG{sig}");
        let (f, mut trap) = trapped();
        let mut child = spawn(&f, tool, args);
        trap.wait_for_reader(&mut child);
        // A restore lists the snapshots beside restic restore: let that
        // listing end first. restic 0.14 leaves its lock when SIGINT comes
        // between taking it and arming its cleanup (a gap of its own, which
        // the next run's stale-lock removal covers); the restic blocked on
        // the index is past that gap.
        let t = Instant::now();
        while children_of(child.id()).len() > 1 {
            assert!(t.elapsed() < Duration::from_secs(60), "{what}: the listing never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(&child, sig);
        let st = child.wait().unwrap();
        assert_eq!(st.signal(), Some(*n), "{what}: {st:?} {}", stderr_of(&mut child));
        assert_eq!(locks(&f.repo()), 0, "{what}: restic's lock was left behind");
        trap.release();
        all_work(&f, &what);
    }
}

/// SIGKILL of the tool alone: restic gets the parent-death signal (it does
/// not run on as an orphan), and whatever lock it leaves is stale — the next
/// runs remove it (restic's own rule) and succeed, retention included.
#[test]
fn sigkill_of_the_tool_alone_then_the_next_runs_succeed() {
    for args in [&["--verify"][..], &[][..]] {
        let (f, mut trap) = trapped();
        let mut child = spawn(&f, "ailee_backup", args);
        trap.wait_for_reader(&mut child);
        let kids = children_of(child.id());
        assert_eq!(kids.len(), 1, "one restic child: {kids:?}");
        // Orphans come to this process, which reaps them as init would (the
        // init of some sandboxes does not, and a zombie's lock looks live).
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
        signal(&child, "KILL");
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        // The restic child does not outlive it (before: it ran on as an
        // orphan, until a write to its closed pipes killed it).
        let r = rustix::process::Pid::from_raw(kids[0] as i32).unwrap();
        let t = Instant::now();
        while rustix::process::waitpid(Some(r), rustix::process::WaitOptions::NOHANG)
            .unwrap()
            .is_none()
        {
            if t.elapsed() > Duration::from_secs(60) {
                let _ = rustix::process::kill_process(r, rustix::process::Signal::KILL);
                panic!("restic {r:?} outlived the killed ailee_backup by 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        trap.release();
        all_work(&f, &format!("SIGKILL {args:?}"));
    }
}

/// A restic killed with SIGKILL (not by us) leaves an exclusive lock: the
/// next backup, list, verify and restore remove it and work, and say so.
#[test]
fn a_stale_lock_of_this_host_is_removed_and_said() {
    let (f, mut trap) = trapped();
    let d = f.data().join("backups");
    let mut restic = Command::new("restic");
    restic.arg("--repo").arg(f.repo()).arg("--password-file");
    let mut r = trap.catch(restic.arg(d.join("restic-password")).arg("check"), &f);
    r.kill().unwrap();
    r.wait().unwrap();
    trap.release();
    assert_eq!(locks(&f.repo()), 1, "restic's lock should be left");
    // Before: exit 1 "repository is already locked exclusively", every run.
    f.cmd("ailee_backup")
        .args(["--list", "-v"])
        .expect(exits(0).says("removed 1 stale restic lock").says("is gone"));
    assert_eq!(locks(&f.repo()), 0);
    all_work(&f, "stale lock");
}

/// A live lock of another host is never removed: the run exits 1 and the
/// lock stays. (The other host: restic in a UTS namespace with another name.)
/// A guard on the stale-lock removal above, not a regression test: the tools
/// before it removed no lock at all; one that removed too much fails here.
#[test]
fn a_live_lock_of_another_host_is_never_removed() {
    let (f, mut trap) = trapped();
    let d = f.data().join("backups");
    let script = format!(
        "hostname other-host && exec restic --repo {} --password-file {} check",
        f.repo().display(),
        d.join("restic-password").display()
    );
    let mut other = trap.catch(Command::new("unshare").args(["--uts", "sh", "-c", &script]), &f);
    f.backup(&[]).code(1).stderr(contains("locked"));
    f.cmd("ailee_backup").args(["--verify"]).expect(exits(1));
    assert_eq!(locks(&f.repo()), 1, "the other host's live lock was removed");
    signal(&other, "INT");
    other.wait().unwrap();
    trap.release();
    all_work(&f, "other host");
}

/// `--restic-timeout`: a restic call that does not finish in time is
/// stopped (its lock removed) and the run exits 1, said, counted.
#[test]
fn a_restic_call_over_its_time_bound_is_stopped() {
    let (f, trap) = trapped();
    let (m, _) = f.metrics_dir();
    let t = Instant::now();
    f.backup(&["--restic-timeout", "2", "--metrics-dir", m.to_str().unwrap()])
        .code(1)
        .stderr(contains("did not finish within 2 s"));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert_eq!(locks(&f.repo()), 0);
    let prom = std::fs::read_to_string(m.join("ailee_backup.prom")).unwrap();
    assert!(prom.contains("ailee_backup_failures_total"), "{prom}");
    trap.release();
    all_work(&f, "timeout");
}

/// A run to one repository stuck (an off-site link gone silent) does not
/// stop the hourly run to another: each repository has its own stage and
/// lock; the data directory's lock is held only while a stage is prepared.
#[test]
fn a_stuck_offsite_run_never_blocks_the_local_one() {
    let f = Fixture::basic();
    let off = f.dir().join("offsite");
    let pw = f.dir().join("offsite-password");
    std::fs::write(&pw, "offsite secret\n").unwrap();
    let off_args = ["--repo", off.to_str().unwrap(), "--password-file", pw.to_str().unwrap()];
    // Two backups within an hour: keep both (retention would keep the newest).
    let off_args = [&off_args[..], &["--no-forget"]].concat();
    f.backup(&off_args).code(0);
    f.backup(&["--no-forget"]).code(0);
    let mut trap = IndexTrap::set(&off, f.dir());
    let mut stuck = spawn(&f, "ailee_backup", &off_args);
    trap.wait_for_reader(&mut stuck);
    f.put_blocks(3, 2);
    f.backup(&["-v", "--no-forget"]).code(0);
    // A second run to the stuck repository is refused, naming it.
    f.backup(&off_args)
        .code(1)
        .stderr(contains("another ailee_backup is using repository"));
    signal(&stuck, "TERM");
    assert_eq!(stuck.wait().unwrap().signal(), Some(15));
    trap.release();
    f.backup(&off_args).code(0);
    // Each repository's history: two backups each, the same node.
    assert_eq!(f.list().len(), 2);
    assert_eq!(f.list_with(&off_args).len(), 2);
}

/// Two nodes backing up into one repository: each sees, verifies, thins and
/// restores its own history; `--list --any-node` shows both, by node.
#[test]
fn two_nodes_in_one_repository_keep_their_own_histories() {
    let a = Fixture::basic();
    let b = Fixture::new(&std::fs::read(vector("torn-tail")).unwrap());
    let shared = a.dir().join("shared-repo");
    let pw = a.dir().join("shared-password");
    std::fs::write(&pw, "shared secret\n").unwrap();
    let args = [
        "--repo",
        shared.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ];
    a.backup(&args).code(0);
    b.backup(&[&args[..], &["--no-forget"]].concat()).code(0);
    b.backup(&[&args[..], &["--no-forget"]].concat()).code(0);
    let id = |f: &Fixture| {
        std::fs::read_to_string(f.data().join("node_id"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_ne!(id(&a), id(&b));
    let list = |f: &Fixture, extra: &[&str]| f.list_with(&[&args[..], extra].concat());
    let la = list(&a, &[]);
    assert_eq!(la.len(), 1);
    assert_eq!(la[0]["node"], id(&a).as_str());
    assert_eq!(list(&b, &[]).len(), 2);
    assert_eq!(list(&a, &["--any-node"]).len(), 3);
    assert_eq!(list(&a, &["--node", &id(&b)]).len(), 2);
    // Restore into A brings back A's state, not B's newer backup.
    let a_state = a.state();
    std::fs::write(a.data().join("l2_snapshots.dat"), b"junk").unwrap();
    a.restore(&args).code(0);
    assert_eq!(a.state().l2, a_state.l2);
    // Retention of B (keep 1) never removes A's backup.
    b.backup(&[&args[..], &KEEP_LAST_ONLY].concat()).code(0);
    assert_eq!(list(&a, &[]).len(), 1);
    assert_eq!(list(&b, &[]).len(), 1);
    // A new machine without node_id, repository shared by two nodes: told to choose.
    let fresh = Fixture::basic();
    std::fs::remove_file(fresh.data().join("l2_snapshots.dat")).unwrap();
    fresh.restore(&args).code(1).stderr(contains("--node"));
    fresh.restore(&[&args[..], &["--node", &id(&b)]].concat()).code(0);
    assert_eq!(id(&fresh), id(&b), "the restored node's id is kept");
}

/// A repository on a read-only mount: list, verify and restore read it
/// without a lock (restic --no-lock), at once. (Before: 43 s of retries,
/// then exit 1.) The mount is made in a private mount namespace.
#[test]
fn a_read_only_repository_is_read_without_locks() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    let r = f.repo();
    let tool = |t: &str, args: &str| {
        let script = format!(
            "mount --bind {r} {r} && mount -o remount,bind,ro {r} && exec {} --data-dir {} {args}",
            bin(t).display(),
            f.data().display(),
            r = r.display()
        );
        let mut c = assert_cmd::Command::new("unshare");
        c.args(["--mount", "sh", "-c", &script])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", f.dir());
        c
    };
    let t = Instant::now();
    tool("ailee_backup", "--list -v").expect(exits(0).says("without a lock"));
    tool("ailee_backup", "--verify").expect(exits(0));
    std::fs::write(f.data().join("l2_snapshots.dat"), b"junk").unwrap();
    tool("ailee_restore", "").expect(exits(0));
    assert!(t.elapsed() < Duration::from_secs(40), "{:?}", t.elapsed());
    assert_eq!(f.state().l2.unwrap(), std::fs::read(vector("basic")).unwrap());
}

/// Closed pipes are success in every mode (`| head -1`, `| true`), and a
/// closed stderr is no panic.
#[test]
fn closed_pipes_are_success() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    let sh = |script: &str| {
        let o = Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {script}")])
            .env("HOME", f.dir())
            .env("D", f.data())
            .env("B", bin("ailee_backup"))
            .env("R", bin("ailee_restore"))
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    for script in [
        "$B --data-dir $D --list | true",
        "$B --data-dir $D --list --json | true",
        "$B --data-dir $D -v | true",
        "$B --data-dir $D -v 2>&1 | true",
        "$R --data-dir $D -v | true",
        "$R --data-dir $D -v 2>&1 | true",
    ] {
        let (code, err) = sh(script);
        assert_eq!(code, Some(0), "{script}: {err}");
        assert!(!err.contains("panicked"), "{script}: {err}");
    }
}

/// Committed work reports success: a backup whose retention step fails
/// (here: interrupted by SIGTERM, with the snapshot already written) exits
/// 0 with a warning, and the backup is listed.
#[test]
fn a_signal_during_retention_after_the_snapshot_is_success() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    f.put_blocks(3, 1);
    f.backup(&[]).code(0);
    // forget is the only restic call after the snapshot that loads the
    // index and locks: trap it there by arming the FIFO once the snapshot exists.
    let before: Vec<serde_json::Value> = f.list().iter().map(|s| s["id"].clone()).collect();
    let trap_dir = f.repo();
    let mut child = spawn(&f, "ailee_backup", &KEEP_LAST_ONLY);
    // Wait until the new snapshot is in the repository, then trap the index.
    let snaps = trap_dir.join("snapshots");
    let t = Instant::now();
    while std::fs::read_dir(&snaps).unwrap().count() <= before.len() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended early: {}",
            stderr_of(&mut child)
        );
        assert!(t.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(5));
    }
    // forget removes two backups, then prune takes its exclusive lock and
    // reads the index: stopped there.
    let mut trap = IndexTrap::set(&trap_dir, f.dir());
    trap.wait_for_reader(&mut child);
    signal(&child, "TERM");
    let st = child.wait().unwrap();
    let err = stderr_of(&mut child);
    trap.release();
    assert_eq!(st.code(), Some(0), "{st:?}: {err}");
    assert!(err.contains("retention"), "{err}");
    let after = f.list();
    assert!(
        after.iter().any(|s| !before.contains(&s["id"])),
        "the backup was made: {after:?}"
    );
    assert_eq!(locks(&trap_dir), 0);
    all_work(&f, "retention interrupted");
}

/// Every index file deleted: one damage, one verdict — `--verify` and
/// `ailee_restore` both exit 2 (before: 2 and 1), and the restore changes nothing.
#[test]
fn every_index_deleted_is_an_integrity_failure_for_verify_and_restore() {
    let f = Fixture::basic();
    f.backup(&[]).code(0);
    for e in std::fs::read_dir(f.repo().join("index")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    // restic's cache would still hold the index.
    let _ = std::fs::remove_dir_all(f.dir().join(".cache/restic"));
    f.backup(&["--verify"]).code(2);
    let old = f.state();
    f.restore(&[]).code(2).stderr(contains("not found in repository"));
    assert_eq!(f.state(), old);
}

/// One changed byte in the spare copy with its mtime kept (bit rot, or a
/// write that restores the mtime): the next backup notices it, makes a full
/// copy with a warning, and publishes a runbook copy equal to the live file.
/// (Before: exit 0, a `.bak` that differed from the live file, the bad byte
/// in restic, and a restore that installed it.)
#[test]
fn a_changed_byte_in_the_spare_is_never_published() {
    let bl = blocks("basic");
    let f = Fixture::new(&bl[..3].concat());
    f.backup(&["--no-forget"]).code(0);
    std::fs::write(f.data().join("l2_snapshots.dat"), bl[..4].concat()).unwrap();
    f.backup(&["--no-forget"]).code(0);
    let b = f.data().join("backups");
    let spare = b.join(".l2_snapshots_spare.dat");
    let mut bytes = std::fs::read(&spare).unwrap();
    assert!(bytes.len() > 100, "the spare holds the previous copy");
    bytes[50] ^= 0x20;
    let mtime = std::fs::metadata(&spare).unwrap().modified().unwrap();
    std::fs::write(&spare, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&spare)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::write(f.data().join("l2_snapshots.dat"), bl.concat()).unwrap();
    f.backup(&["--no-forget"]).code(0).stderr(contains("spare"));
    assert_eq!(
        std::fs::read(b.join("l2_snapshots_latest.dat.bak")).unwrap(),
        bl.concat()
    );
    f.backup(&["--verify", "latest", "--read-data"]).code(0);
    std::fs::write(f.data().join("l2_snapshots.dat"), b"junk").unwrap();
    f.restore(&[]).code(0);
    assert_eq!(f.state().l2.unwrap(), bl.concat());
    ailee_recovery::verify_file(f.data().join("l2_snapshots.dat"))
        .arg("--all")
        .expect(exits(0));
}

/// A restore SIGKILLed after its first exchange leaves a mixed state and its
/// journal; the hourly backup then refuses (exit 1, naming the journal and
/// the command that settles it) instead of recording a file/database pair
/// that never existed. After `ailee_restore` settles it, backups resume.
#[test]
fn a_backup_refuses_while_a_restore_journal_exists() {
    let (f, old, backup) = attack_fixture();
    let pristine = pristine_copy(&f);
    let journal = f.data().join(".ailee_restore.journal");
    // The n-th renameat2 that leaves a journal and a mixed state: the first
    // exchange done, the second not.
    let mut found = false;
    for n in 1..40 {
        reset(&f, &pristine);
        let st = restore_injected(&f, "renameat2", "signal=SIGKILL", n);
        if st.signal() != Some(9) {
            break;
        }
        let now = f.state();
        if journal.exists() && now.l2 == backup.l2 && now.db == old.db {
            found = true;
            break;
        }
    }
    assert!(found, "no kill point left a mixed state");
    let before = f.list().len();
    f.backup(&[])
        .code(1)
        .stderr(contains(".ailee_restore.journal"))
        .stderr(contains("ailee_restore --data-dir"));
    assert_eq!(f.list().len(), before, "a backup was recorded");
    f.restore(&[]).code(0);
    assert!(!journal.exists());
    f.backup(&[]).code(0);
}
