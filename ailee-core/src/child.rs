//! The one way the tools run another program (restic, the reorg database
//! reader): a child is *stopped*, never just killed, and never outlives us.
//!
//! - It runs in a process group of its own: a terminal's Ctrl-C, or a signal
//!   to our process group (`kill -- -PGID`, `timeout`), reaches us only, and
//!   we stop the child the way it asked for ([`Spec::stop_signal`]: SIGINT
//!   for restic, which then removes its repository lock). Only if it has not
//!   exited [`Spec::grace`] later is its group killed (SIGKILL).
//! - The kernel sends it [`Spec::stop_signal`] when we die without stopping it
//!   (`kill -9` of the tool, a crash): the parent-death signal, set between
//!   fork and exec. It is tied to the thread that started the child, so a
//!   child is started by the thread that waits for it.
//! - [`Supervised::wait`] returns when the child exits, or stops it when a
//!   termination signal reached us ([`crate::cancel`]) or when its time bound
//!   expired, and says which.
//!
//! Dropping a [`Supervised`] that has not been waited for stops it too.

use rustix::process::Pid;
pub use rustix::process::Signal;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How often a wait looks at the child, the cancel flag and the clock.
const POLL: Duration = Duration::from_millis(10);

/// How a child is stopped.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The signal that asks it to stop (and that it gets if we die).
    pub stop_signal: Signal,
    /// How long it may take to stop before its process group is killed.
    pub grace: Duration,
}

impl Spec {
    /// restic: SIGINT (restic 0.14 cleans up — removes its lock — on SIGINT
    /// only), 15 s to do so (a remote repository's lock is a request away).
    pub const RESTIC: Spec = Spec {
        stop_signal: Signal::INT,
        grace: Duration::from_secs(15),
    };
}

/// A running child under supervision.
pub struct Supervised {
    child: Child,
    spec: Spec,
    done: Option<ExitStatus>,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The child exited by itself, so.
    Exited(ExitStatus),
    /// A termination signal reached us: the child was stopped.
    Interrupted,
    /// The time bound expired: the child was stopped.
    TimedOut,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited within the grace (on the stop signal, or by itself).
    Exited(ExitStatus),
    /// It had to be killed.
    Killed,
}

/// Starts `cmd` under supervision (see the module doc).
pub fn spawn(cmd: &mut Command, spec: Spec) -> std::io::Result<Supervised> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    set_parent_death_signal(cmd, spec.stop_signal);
    let child = cmd.spawn()?;
    Ok(Supervised {
        child,
        spec,
        done: None,
    })
}

/// Has the kernel send `sig` to the child when the thread that started it
/// ends (we died); a child whose parent is already gone exits at once.
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command, signal: Signal) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes two system calls (prctl, getppid): async-signal-safe, no
    // allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(signal))?;
            // The parent died between fork and prctl: nothing will signal us.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("the parent exited"));
            }
            Ok(())
        });
    }
}

impl Supervised {
    /// The child, for its pipes and id.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited (reaping it).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.done.is_none() {
            self.done = self.child.try_wait()?;
        }
        Ok(self.done)
    }

    /// Waits until it exits; stops it when a termination signal reaches us
    /// or once `deadline` has passed.
    pub fn wait(&mut self, deadline: Option<Instant>) -> std::io::Result<Waited> {
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Waited::Exited(s));
            }
            if crate::cancel::requested() {
                self.stop();
                return Ok(Waited::Interrupted);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.stop();
                return Ok(Waited::TimedOut);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `grace` for it to exit by itself (its input was closed),
    /// then stops it.
    pub fn finish(&mut self, grace: Duration) -> Stopped {
        let t = Instant::now();
        while t.elapsed() < grace {
            match self.try_wait() {
                Ok(Some(s)) => return Stopped::Exited(s),
                Ok(None) => std::thread::sleep(POLL.min(grace)),
                Err(_) => break,
            }
        }
        self.stop()
    }

    /// Asks it to stop ([`Spec::stop_signal`]), waits up to [`Spec::grace`],
    /// then kills its process group.
    pub fn stop(&mut self) -> Stopped {
        if let Ok(Some(s)) = self.try_wait() {
            return Stopped::Exited(s);
        }
        let _ = rustix::process::kill_process(Pid::from_child(&self.child), self.spec.stop_signal);
        let t = Instant::now();
        while t.elapsed() < self.spec.grace {
            match self.try_wait() {
                Ok(Some(s)) => return Stopped::Exited(s),
                Ok(None) => std::thread::sleep(POLL),
                Err(_) => break,
            }
        }
        self.kill()
    }

    /// Kills its process group at once (for a child that is of no more use
    /// and may be wedged), and reaps it.
    pub fn kill(&mut self) -> Stopped {
        if let Ok(Some(s)) = self.try_wait() {
            return Stopped::Exited(s);
        }
        let _ = rustix::process::kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.done = Some(s);
        }
        Stopped::Killed
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.done.is_none() {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    /// `sh -c script` with SIGINT and SIGTERM at their defaults: a shell
    /// cannot trap a signal it was started with ignored (a test run as a
    /// background job of a script has SIGINT ignored).
    fn sh(script: &str) -> Command {
        let mut c = Command::new("env");
        c.args(["--default-signal=INT,TERM", "sh", "-c", script])
            .stdin(Stdio::null());
        c
    }

    /// Spawns [`sh`] of `script`, stopped by SIGINT within `grace`, with
    /// READY in it replaced by the path of a file the script touches once
    /// its traps are set, and returns then.
    fn spawn_ready(script: &str, grace: Duration) -> Supervised {
        let spec = Spec {
            stop_signal: Signal::INT,
            grace,
        };
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let s = spawn(&mut sh(&script.replace("READY", &ready.display().to_string())), spec).unwrap();
        while !ready.exists() {
            std::thread::sleep(POLL);
        }
        s
    }

    #[test]
    fn a_child_that_handles_the_stop_signal_exits_by_itself() {
        let mut s = spawn_ready(
            "trap 'exit 7' INT; touch READY; while :; do sleep 0.01; done",
            Duration::from_secs(30),
        );
        match s.stop() {
            Stopped::Exited(st) => assert_eq!(st.code(), Some(7)),
            Stopped::Killed => panic!("killed, not stopped"),
        }
    }

    #[test]
    fn a_child_that_ignores_it_is_killed_after_the_grace() {
        let mut s = spawn_ready("trap '' INT; touch READY; exec sleep 600", Duration::from_millis(200));
        assert_eq!(s.stop(), Stopped::Killed);
        assert_eq!(s.try_wait().unwrap().and_then(|s| s.signal()), Some(9));
    }

    /// The parent-death signal: the thread that started the child ends (as
    /// it does when the tool is killed), the kernel sends the stop signal.
    #[test]
    fn the_child_is_signalled_when_its_parent_thread_ends() {
        let mut s = std::thread::spawn(|| {
            spawn_ready(
                "trap 'exit 9' INT; touch READY; while :; do sleep 0.01; done",
                Spec::RESTIC.grace,
            )
        })
        .join()
        .unwrap();
        match s.wait(None).unwrap() {
            Waited::Exited(st) => assert_eq!(st.code(), Some(9), "{st:?}"),
            w => panic!("{w:?}"),
        }
    }

    #[test]
    fn a_deadline_stops_the_child() {
        let mut c = sh("exec sleep 600");
        let mut s = spawn(&mut c, Spec::RESTIC).unwrap();
        let w = s.wait(Some(Instant::now() + Duration::from_millis(50))).unwrap();
        assert_eq!(w, Waited::TimedOut);
    }

    #[test]
    fn an_exit_is_reported() {
        let mut s = spawn(&mut sh("exit 3"), Spec::RESTIC).unwrap();
        match s.wait(None).unwrap() {
            Waited::Exited(st) => assert_eq!(st.code(), Some(3)),
            w => panic!("{w:?}"),
        }
    }
}
