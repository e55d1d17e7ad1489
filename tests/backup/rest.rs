//! Issue 22, item 11: an off-site repository over restic's REST protocol,
//! served by the real `rclone serve restic` (Debian's rclone) on 127.0.0.1
//! with HTTP basic auth: the round trip (backup, list, verify, restore beside
//! the local backups), wrong credentials, the server killed mid-upload (the
//! next run needs no manual step), and a link that goes silent mid-upload
//! (the run ends at `--restic-timeout`; the local hourly backup still runs).

use super::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

const USER: &str = "ailee-offsite";
const PASS: &str = "rest-secret-7c1d0f";
const WRONG_PASS: &str = "wrong-secret-9e4b2a";

/// Debian's `rclone serve restic` over `dir` on 127.0.0.1:`port`, with basic
/// auth ([`USER`]/[`PASS`]) and no user configuration; killed on drop.
struct Rclone {
    child: Option<std::process::Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Rclone {
    /// A server over a new directory `rest-server` in `tmp`, on a free port.
    fn start(tmp: &Path) -> Rclone {
        let dir = tmp.join("rest-server");
        std::fs::create_dir(&dir).unwrap();
        Rclone::start_on(&dir, free_port())
    }

    /// A server over `dir` on `port` (a restart after [`Rclone::kill`]).
    fn start_on(dir: &Path, port: u16) -> Rclone {
        let log = dir.with_extension("log");
        let child = Command::new("rclone")
            .args(["serve", "restic", "--config", "/dev/null"])
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--user", USER, "--pass", PASS])
            .arg(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.parent().unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("rclone (Debian: apt-get install rclone; scripts/setup.sh)");
        let mut s = Rclone {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            log,
        };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s;
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rclone exited ({st}): {}", s.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("rclone did not listen on 127.0.0.1:{port}: {}", s.log_text());
    }

    /// The repository URL with `pass` for the password.
    fn url_with(&self, port: u16, pass: &str) -> String {
        format!("rest:http://{USER}:{pass}@127.0.0.1:{port}/")
    }

    fn url(&self) -> String {
        self.url_with(self.port, PASS)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server dies (SIGKILL): no goodbye to its clients.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rclone {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pack files of a repository (`data/XX/ID`).
/// A fixture backed up once to a REST server through a relay: (fixture,
/// server, relay, password file, the repository options via the relay).
fn relayed() -> (Fixture, Rclone, Relay, PathBuf, Vec<String>) {
    let f = Fixture::basic();
    let srv = Rclone::start(f.dir());
    let relay = Relay::start(srv.port);
    let pw = password_file(&f);
    let a = repo_args(&srv.url_with(relay.port, PASS), &pw);
    f.backup(&a.iter().map(String::as_str).collect::<Vec<_>>()).code(0);
    (f, srv, relay, pw, a)
}

fn packs(repo: &Path) -> BTreeSet<PathBuf> {
    let d = repo.join("data");
    if d.is_dir() {
        files(&d).into_iter().collect()
    } else {
        BTreeSet::new()
    }
}

/// `--repo URL --password-file PW`.
fn repo_args(url: &str, pw: &Path) -> Vec<String> {
    vec![
        "--repo".into(),
        url.into(),
        "--password-file".into(),
        pw.to_str().unwrap().into(),
    ]
}

/// The repository password file (not the HTTP password).
fn password_file(f: &Fixture) -> PathBuf {
    let pw = f.dir().join("offsite.pw");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    pw
}

/// One valid snapshot block of about 48 MiB whose bytes compress poorly
/// (long pseudo-random peer ids), so that restic's upload takes several
/// packs and can be caught in the middle. Made once per test process.
fn big_block() -> &'static [u8] {
    static BIG: OnceLock<Vec<u8>> = OnceLock::new();
    BIG.get_or_init(|| {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut json = String::from(r#"{"ledger": {"balances": ["#);
        for i in 0..48_000 {
            if i > 0 {
                json.push(',');
            }
            json.push_str(r#"{"peerId": ""#);
            for _ in 0..1000 / 10 {
                let mut r = next();
                for _ in 0..10 {
                    json.push(CHARS[(r & 63) as usize] as char);
                    r >>= 6;
                }
            }
            json.push_str(&format!(r#"", "balance": {}}}"#, next() % 100_000_000_000));
        }
        json.push_str("]}}");
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("big.dat");
        assert_cmd::Command::new(bin("ailee_create_anchor"))
            .args(["--l2-state-file", "-", "--snapshot-file"])
            .arg(&file)
            .write_stdin(json)
            .expect(exits(0));
        let b = std::fs::read(&file).unwrap();
        assert!(b.len() > 40 << 20, "{} bytes", b.len());
        b
    })
}

/// The fixture's snapshot file with [`big_block`] appended (a new newest
/// snapshot); returns the number of snapshots.
fn append_big_block(f: &Fixture) -> u64 {
    let mut bl = blocks("basic");
    bl.push(big_block().to_vec());
    std::fs::write(f.data().join("l2_snapshots.dat"), bl.concat()).unwrap();
    bl.len() as u64
}

/// A running `ailee_backup` (environment as [`Fixture::cmd`]; stderr to a
/// file): on drop it gets SIGTERM (it stops its restic child), then SIGKILL.
struct Running {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Running {
    fn backup(f: &Fixture, args: &[String], name: &str) -> Running {
        let stderr = f.dir().join(format!("{name}.stderr"));
        let child = Command::new(bin("ailee_backup"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", f.dir())
            .env("LC_ALL", "C")
            .arg("--data-dir")
            .arg(f.data())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Running { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its exit status once it has ended, waiting up to `limit`.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if t.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 120 s) until the repository at `repo` holds a pack file
    /// not in `before`: the upload is under way.
    /// An off-site backup over `relay` with `--restic-timeout SECS`, once it
    /// has uploaded a new pack to `srv`: then the relay goes silent.
    fn stalled_mid_upload(f: &Fixture, srv: &Rclone, relay: &Relay, a: &[String], secs: &str, name: &str) -> Running {
        let before = packs(&srv.dir);
        let mut run = Running::backup(f, &[a, &["--restic-timeout".into(), secs.into()]].concat(), name);
        run.wait_for_new_pack(&srv.dir, &before);
        relay.stall();
        run
    }

    fn wait_for_new_pack(&mut self, repo: &Path, before: &BTreeSet<PathBuf>) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            if packs(repo).difference(before).next().is_some() {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "ailee_backup ended ({st}) before its upload was caught:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no new pack file within 120 s:\n{}", self.stderr());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if self.wait(Duration::from_secs(30)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A TCP relay 127.0.0.1:port → 127.0.0.1:upstream that can be made silent:
/// after [`Relay::stall`] nothing more is forwarded in either direction and
/// new connections are accepted but never answered (a dead link, not a
/// refused one). Everything is closed on drop.
struct Relay {
    port: u16,
    shared: Arc<(Mutex<RelayState>, Condvar)>,
}

#[derive(Default)]
struct RelayState {
    stalled: bool,
    closed: bool,
    sockets: Vec<TcpStream>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let shared = Arc::new((Mutex::new(RelayState::default()), Condvar::new()));
        let sh = shared.clone();
        std::thread::spawn(move || {
            for client in l.incoming() {
                if sh.0.lock().unwrap().closed {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                {
                    let mut st = sh.0.lock().unwrap();
                    st.sockets.push(client.try_clone().unwrap());
                    st.sockets.push(up.try_clone().unwrap());
                }
                for (from, to) in [(client.try_clone().unwrap(), up.try_clone().unwrap()), (up, client)] {
                    let sh = sh.clone();
                    std::thread::spawn(move || pump(from, to, &sh));
                }
            }
        });
        Relay { port, shared }
    }

    /// From now on nothing is forwarded.
    fn stall(&self) {
        self.shared.0.lock().unwrap().stalled = true;
    }
}

/// Copies `from` to `to` while the relay is not stalled, until either end
/// closes or the relay is dropped.
fn pump(mut from: TcpStream, mut to: TcpStream, sh: &(Mutex<RelayState>, Condvar)) {
    let open = || {
        let mut st = sh.0.lock().unwrap();
        while st.stalled && !st.closed {
            st = sh.1.wait(st).unwrap();
        }
        !st.closed
    };
    let mut buf = vec![0; 64 << 10];
    loop {
        if !open() {
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just before a stall are held, not delivered.
        if !open() || to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let mut st = self.shared.0.lock().unwrap();
        st.closed = true;
        for s in st.sockets.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.shared.1.notify_all();
        drop(st);
        // Wakes the accept loop, which sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Off-site over REST beside the local repository: backup, `--list --json`,
/// `--verify`, and a restore into an empty data directory from the off-site
/// copy; the server's files hold no plaintext; the local backups of the same
/// data directory keep working and stay apart.
#[test]
fn offsite_rest_backup_list_verify_restore() {
    let f = Fixture::basic();
    let srv = Rclone::start(f.dir());
    let pw = password_file(&f);
    let a = repo_args(&srv.url(), &pw);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    f.backup(&[]).code(0).stdout("").stderr("");
    f.backup(&a).code(0).stdout("").stderr("");
    assert!(srv.dir.join("config").exists(), "the repository is on the REST server");
    f.put_blocks(3, 2);
    f.backup(&[&a[..], &["--no-forget"]].concat())
        .code(0)
        .stdout("")
        .stderr("");
    no_plaintext(&srv.dir);
    let remote = f.list_with(&a);
    assert_eq!(remote.len(), 2, "{remote:?}");
    assert_eq!(remote[1]["snapshots"], blocks("basic").len() as u64, "{remote:?}");
    assert_eq!(remote[1]["bytes"], f.state().l2.unwrap().len() as u64, "{remote:?}");
    f.backup(&[&a[..], &["--verify"]].concat())
        .code(0)
        .stdout(contains("verified"));
    // The local repository beside it: its own history, still backed up.
    f.backup(&["--no-forget"]).code(0).stdout("").stderr("");
    let local = f.list();
    assert_eq!(local.len(), 2, "{local:?}");
    let ids = |v: &[serde_json::Value]| v.iter().map(|s| s["id"].to_string()).collect::<BTreeSet<_>>();
    assert!(ids(&local).is_disjoint(&ids(&remote)), "{local:?} {remote:?}");
    assert!(f.data().join("backups/repo/config").exists());
    f.backup(&["--verify"]).code(0);
    // Disaster: a new machine, an empty data directory, the off-site copy.
    let new = f.dir().join("new");
    std::fs::create_dir(&new).unwrap();
    f.restore_into(&new, &a);
}

/// Wrong HTTP credentials in the URL (the server answers 401): every tool
/// exits 1 with a message naming the repository, and the URL's password is
/// never printed; nothing is created on the server.
#[test]
fn offsite_rest_wrong_credentials_exit_1_without_printing_the_password() {
    let f = Fixture::basic();
    let srv = Rclone::start(f.dir());
    let pw = password_file(&f);
    let bad = repo_args(&srv.url_with(srv.port, WRONG_PASS), &pw);
    let check = |o: std::process::Output, what: &str| {
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {e}");
        assert!(
            e.contains("rest:http://") && e.contains(&format!("127.0.0.1:{}", srv.port)),
            "{what}: the message does not name the repository: {e}"
        );
        assert!(!e.contains(WRONG_PASS), "{what}: the URL's password is printed: {e}");
        assert!(
            !e.contains("correct horse"),
            "{what}: the repository password is printed: {e}"
        );
    };
    // No repository yet: none is created with the wrong credentials.
    check(
        f.cmd("ailee_backup").args(&bad).output().unwrap(),
        "backup (no repository)",
    );
    assert!(!srv.dir.join("config").exists());
    // An existing repository.
    let good = repo_args(&srv.url(), &pw);
    f.backup(&good.iter().map(String::as_str).collect::<Vec<_>>()).code(0);
    check(f.cmd("ailee_backup").args(&bad).output().unwrap(), "backup");
    check(
        f.cmd("ailee_backup").args(&bad).arg("--list").output().unwrap(),
        "--list",
    );
    check(
        f.cmd("ailee_backup").args(&bad).arg("--verify").output().unwrap(),
        "--verify",
    );
    let before = f.state();
    check(f.cmd("ailee_restore").args(&bad).output().unwrap(), "restore");
    assert_eq!(f.state(), before, "a failed restore changed the data directory");
}

/// The REST server killed (SIGKILL) while a large backup uploads: the run
/// exits 1; with the server back on the same directory and port, the next
/// backup exits 0 with no manual step (the dead run's restic lock does not
/// block it) and `restic check` passes.
#[test]
fn offsite_rest_server_killed_mid_upload_then_next_backup_succeeds() {
    let f = Fixture::basic();
    let mut srv = Rclone::start(f.dir());
    let pw = password_file(&f);
    let a = repo_args(&srv.url(), &pw);
    let a_ref: Vec<&str> = a.iter().map(String::as_str).collect();
    f.backup(&a_ref).code(0);
    let n = append_big_block(&f);
    let before = packs(&srv.dir);
    let mut run = Running::backup(&f, &a, "killed");
    run.wait_for_new_pack(&srv.dir, &before);
    srv.kill();
    // restic retries its uploads and its lock removal before giving up.
    let st = run
        .wait(Duration::from_secs(600))
        .expect("ailee_backup still running 600 s after the server died");
    let e = run.stderr();
    assert_eq!(st.code(), Some(1), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{}", srv.port)), "{e}");
    eprintln!("the run whose server died: {}", e.lines().next().unwrap_or_default());
    let (dir, port) = (srv.dir.clone(), srv.port);
    drop(srv);
    let srv = Rclone::start_on(&dir, port);
    f.backup(&a_ref).code(0).stdout("").stderr("");
    // Without a lock: the killed run's lock stays in the repository (its
    // removal failed with the server gone), and with pid_max 32768 its PID
    // can belong to another live process by now, which makes restic take the
    // lock for a live one and refuse an exclusive lock; the next backup above
    // is not blocked by it (a backup's lock is not exclusive).
    let check = [
        "--repo",
        &srv.url(),
        "--password-file",
        pw.to_str().unwrap(),
        "--no-lock",
        "check",
    ];
    succeeds(Command::new("restic").args(check).env("HOME", f.dir()), "restic check");
    let l = f.list_with(&a);
    assert_eq!(l.last().unwrap()["snapshots"], n, "{l:?}");
}

/// A link that goes silent mid-upload (a relay that stops forwarding, the
/// connections left open): with `--restic-timeout 5` the run ends, exit 1,
/// with a message about the time limit, well within 120 s; the next run over
/// a working link exits 0.
#[test]
fn offsite_rest_silent_link_ends_at_the_restic_timeout() {
    let (f, srv, relay, pw, a) = relayed();
    append_big_block(&f);
    let mut run = Running::stalled_mid_upload(&f, &srv, &relay, &a, "5", "silent");
    let t = Instant::now();
    let st = run.wait(Duration::from_secs(120));
    let e = run.stderr();
    let st = st.unwrap_or_else(|| panic!("ailee_backup still running 120 s after the link went silent: {e}"));
    eprintln!("ended {:.1} s after the link went silent", t.elapsed().as_secs_f64());
    assert_eq!(st.code(), Some(1), "{e}");
    assert!(e.contains("did not finish within"), "{e}");
    // The link back: the next run needs no manual step (the stopped
    // restic's lock does not block it).
    let direct = repo_args(&srv.url(), &pw);
    f.backup(&direct.iter().map(String::as_str).collect::<Vec<_>>())
        .code(0)
        .stdout("")
        .stderr("");
}

/// While an off-site run hangs on a silent link (its `--restic-timeout` far
/// away), the local hourly backup of the same data directory runs and
/// exits 0: a dead off-site link never stops the local backup.
#[test]
fn offsite_rest_stalled_run_does_not_stop_the_local_backup() {
    let (f, srv, relay, _pw, a) = relayed();
    f.backup(&[]).code(0);
    let n = append_big_block(&f);
    let mut run = Running::stalled_mid_upload(&f, &srv, &relay, &a, "600", "stalled");
    // The local backup beside a stalled off-site run.
    f.cmd("ailee_backup")
        .arg("--no-forget")
        .timeout(Duration::from_secs(300))
        .expect(exits(0));
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "the off-site run ended while stalled: {}",
        run.stderr()
    );
    let local = f.list();
    assert_eq!(local.len(), 2, "{local:?}");
    assert_eq!(local[1]["snapshots"], n, "{local:?}");
    f.backup(&["--verify"]).code(0);
    // `run` is stopped (SIGTERM) on drop, before the relay and the server.
}
