//! Signals (SPEC §2): on SIGINT, SIGTERM or SIGHUP a tool removes its
//! temporary files and then dies *by that signal*, so an enclosing shell loop
//! stops and the shell reports 128 + the signal; a tool whose work was already
//! committed reports success instead.
//!
//! One signal is always enough: the signal is taken by a dedicated thread
//! (never by the thread doing the work, which may be blocked in `open()` on a
//! FIFO or in an RPC read), so nothing the work thread does can delay it. That
//! thread sets the flag long loops poll ([`check`]), then takes the registry
//! lock: work that must not be cut in half (an output's rename, an append, a
//! database batch) runs inside [`critical`], which holds that lock, so the
//! signal waits for it to finish. Then, unless the work was marked committed
//! ([`committed`]), the thread removes every registered temporary path and
//! re-raises the signal with its default action.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Set by [`install_deferred`]: the signal thread only records the signal.
static DEFERRED: AtomicBool = AtomicBool::new(false);

/// Temporary paths to remove if the process dies by a signal.
#[derive(Default)]
struct Registry {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    committed: bool,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn lock() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock is a bug; the registry is still usable.
    registry().lock().unwrap_or_else(|p| p.into_inner())
}

/// Held by critical sections and by the signal thread before it acts.
fn gate() -> MutexGuard<'static, ()> {
    static G: Mutex<()> = Mutex::new(());
    G.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Installs the signal thread for SIGINT, SIGTERM and SIGHUP.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // A file-size limit (`ulimit -f`) must surface as an EFBIG write error that
    // is reported, not as a SIGXFSZ that kills the process mid-write.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(AtomicBool::new(false)),
    )?;
    // A signal the tool was started with ignored stays ignored (`nohup`, a
    // background job of a script), as a shell's builtins do.
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&s| !ignored(s)).collect();
    let mut signals = signal_hook::iterator::Signals::new(wanted)?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Some(sig) = signals.forever().next() {
            if DEFERRED.load(Ordering::SeqCst) {
                SIGNAL.store(sig, Ordering::SeqCst);
                REQUESTED.store(true, Ordering::SeqCst);
            } else {
                on_signal(sig);
            }
        }
    })?;
    Ok(())
}

/// Like [`install`], for work that must undo itself before the process may
/// die (a restore rolling back a half-done swap): the signal thread only
/// records the signal; the work thread notices it ([`check`]), rolls back,
/// and then dies by it ([`die`]). The tool must poll often and never block
/// without a bound.
pub fn install_deferred() -> std::io::Result<()> {
    DEFERRED.store(true, Ordering::SeqCst);
    install()
}

/// Whether `sig` is ignored (`SIG_IGN`) in this process, from the kernel's
/// `SigIgn` mask in `/proc/self/status` (no `unsafe` needed).
fn ignored(sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&sig) && mask & (1u64 << (sig - 1)) != 0)
}

fn on_signal(sig: i32) {
    SIGNAL.store(sig, Ordering::SeqCst);
    REQUESTED.store(true, Ordering::SeqCst);
    // Waits for a critical section in progress; both locks are then kept
    // until the process dies, so no new temporary file appears after the
    // cleanup.
    let g = gate();
    let reg = lock();
    if reg.committed {
        // The work is done; the tool finishes and reports its success. Later
        // signals of these kinds are ignored (this thread no longer listens).
        return;
    }
    for f in &reg.files {
        let _ = std::fs::remove_file(f);
    }
    for d in &reg.dirs {
        remove_dir_while_written(d);
    }
    let _ = signal_hook::low_level::emulate_default_handler(sig);
    // Not reached for the termination signals; stay locked regardless.
    std::mem::forget(reg);
    std::mem::forget(g);
}

/// Ends the process the way the signal that arrived would (after removing
/// the registered temporary paths), unless the work was committed, in which
/// case it returns. Used by the main thread when it noticed the signal first.
pub fn die() {
    if let Some(sig) = signal() {
        on_signal(sig);
    }
}

/// Removes a temporary directory the work thread may still be filling (it
/// runs on until the process dies): first renamed away, so new files can no
/// longer land in it by its name, then removed, retried while a file created
/// just before the rename makes it non-empty.
fn remove_dir_while_written(d: &Path) {
    let mut away = d.as_os_str().to_owned();
    away.push(".gone");
    let away = PathBuf::from(away);
    let target = if std::fs::rename(d, &away).is_ok() {
        away
    } else {
        d.to_path_buf()
    };
    for _ in 0..1000 {
        if std::fs::remove_dir_all(&target).is_ok() || std::fs::symlink_metadata(&target).is_err() {
            return;
        }
    }
}

/// True once a termination signal arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// The signal that arrived, if any.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// `Err(Error::Interrupted)` once a termination signal arrived.
pub fn check() -> Result<(), crate::Error> {
    if requested() {
        Err(crate::Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Runs `f` so that a signal arriving meanwhile takes effect only after it.
/// Keep RPC calls and other waits without a bound out of it.
pub fn critical<T>(f: impl FnOnce() -> T) -> T {
    let outer = DEPTH.with(|d| d.get()) == 0;
    let g = outer.then(gate);
    DEPTH.with(|d| d.set(d.get() + 1));
    let t = f();
    DEPTH.with(|d| d.set(d.get() - 1));
    drop(g);
    t
}

/// Marks the tool's work as committed: a signal from now on is not an
/// interruption, and the tool finishes and reports success.
pub fn committed() {
    lock().committed = true;
}

/// Runs `create` (which creates `path`) and registers `path` for removal on a
/// signal, atomically with respect to the signal thread. Fails with
/// `Interrupted` instead of creating anything once a signal arrived.
pub fn create_registered<T>(path: &Path, dir: bool, create: impl FnOnce() -> crate::Result<T>) -> crate::Result<T> {
    let mut reg = lock();
    check()?;
    let t = create()?;
    if dir {
        reg.dirs.push(path.to_path_buf());
    } else {
        reg.files.push(path.to_path_buf());
    }
    Ok(t)
}

/// Runs `f` (which renames or removes `path`) and forgets `path`, atomically
/// with respect to the signal thread.
pub fn release<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    let mut reg = lock();
    let t = f();
    reg.files.retain(|p| p != path);
    reg.dirs.retain(|p| p != path);
    t
}

/// Forgets `path` without touching it (it was moved or is now final).
pub fn forget(path: &Path) {
    release(path, || ());
}
